//! pktbench's pcap reader: any byte string is a capture or one error, never
//! a panic, a hang or an allocation the size of a lie in a record header.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pktaccel_tools::pcap;

fuzz_target!(|data: &[u8]| {
    match pcap::parse(data, "fuzz.pcap") {
        Ok(cap) => {
            assert!(!cap.frames.is_empty(), "Ok with no frames");
            assert!(cap.frames.iter().all(|f| f.len() <= data.len()));
        }
        Err(e) => {
            let msg = e.to_string();
            assert!(msg.contains("fuzz.pcap") && !msg.contains('\n'), "{msg}");
        }
    }
});
