//! The ABI's wire codecs: every byte string either parses or is refused,
//! and whatever parses encodes back to the same bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pktaccel_abi::{
    DEVICE_CONFIG_SIZE, DeviceConfig, REQUEST_HEADER_SIZE, RequestHeader, STATUS_RECORD_SIZE,
    StatusRecord, op_name, status_name,
};

fuzz_target!(|data: &[u8]| {
    match DeviceConfig::from_le_bytes(data) {
        Some(c) => assert_eq!(c.to_le_bytes()[..], data[..DEVICE_CONFIG_SIZE]),
        None => assert!(data.len() < DEVICE_CONFIG_SIZE),
    }
    if let Some(h) = RequestHeader::from_le_bytes(data) {
        assert_eq!(h.to_le_bytes()[..], data[..REQUEST_HEADER_SIZE]);
        assert_eq!(RequestHeader::from_le_bytes(&h.to_le_bytes()), Some(h));
        let _ = op_name(h.op);
    }
    if let Some(s) = StatusRecord::from_le_bytes(data) {
        assert_eq!(s.to_le_bytes()[..], data[..STATUS_RECORD_SIZE]);
        let _ = status_name(s.status);
    }
});
