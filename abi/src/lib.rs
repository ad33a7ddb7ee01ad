//! The pktaccel device ABI, shared by the device, the kernel module and the
//! user library. The definitions live in `pktaccel_abi.rs` so that the kernel
//! module can include the very same file with `#[path]`; see
//! `docs/datasheet.md` for the prose datasheet.
#![no_std]

include!("pktaccel_abi.rs");

pub mod console;

#[cfg(test)]
mod tests {
    use super::*;
    use core::mem::size_of;

    #[test]
    fn layouts_are_pinned() {
        assert_eq!(size_of::<DeviceConfig>(), DEVICE_CONFIG_SIZE);
        assert_eq!(size_of::<RequestHeader>(), REQUEST_HEADER_SIZE);
        assert_eq!(size_of::<StatusRecord>(), STATUS_RECORD_SIZE);
        assert_eq!(size_of::<IocInfo>(), 72);
        assert_eq!(size_of::<IocSlabAlloc>(), 32);
        assert_eq!(size_of::<IocSegment>(), 16);
        assert_eq!(size_of::<IocRequest>(), 80);
        assert_eq!(size_of::<IocSubmit>(), 24);
        assert_eq!(size_of::<IocCompletion>(), 24);
        assert_eq!(size_of::<IocReap>(), 24);
    }

    #[test]
    fn config_round_trips_and_magic_spells_pkac() {
        let c = DeviceConfig {
            magic: MAGIC,
            abi_version: ABI_VERSION,
            num_queues: 3,
            ops: 0x7f,
            ..Default::default()
        };
        let b = c.to_le_bytes();
        assert_eq!(&b[0..4], b"PKAC");
        assert_eq!(DeviceConfig::from_le_bytes(&b), Some(c));
        assert_eq!(DeviceConfig::from_le_bytes(&b[..31]), None);
    }

    #[test]
    fn header_and_status_round_trip() {
        let mut h = RequestHeader {
            op: OP_RSS,
            key_slot: 7,
            cookie: 0x1122_3344_5566_7788,
            aux: 9,
            ..Default::default()
        };
        h.params[39] = 0xab;
        assert_eq!(RequestHeader::from_le_bytes(&h.to_le_bytes()), Some(h));
        assert_eq!(RequestHeader::from_le_bytes(&[0u8; 63]), None);
        let s = StatusRecord {
            status: STATUS_AUTH_FAILED,
            len: 5,
            result: u64::MAX,
        };
        assert_eq!(StatusRecord::from_le_bytes(&s.to_le_bytes()), Some(s));
    }

    #[test]
    fn ioctl_numbers_match_linux_encoding() {
        // _IOR('P', 0x40, 72) computed by hand: dir=2<<30, size=72<<16, type='P'<<8.
        assert_eq!(
            PKTACCEL_IOC_INFO,
            (2 << 30) | (72 << 16) | (0x50 << 8) | 0x40
        );
        assert_eq!(PCI_DEVICE_ID, 0x1055);
        for op in 0..OP_COUNT {
            assert_ne!(op_name(op), "unknown");
        }
        for s in 0..STATUS_COUNT {
            assert_ne!(status_name(s), "unknown");
        }
    }
}
