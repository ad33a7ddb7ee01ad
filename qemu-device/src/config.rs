//! Device options (from the command line) and what they turn into: the
//! config-space image the guest reads and the virtio feature bits.

use pktaccel_abi::{
    ABI_VERSION, DeviceConfig, MAGIC, OP_COUNT, VIRTIO_F_EVENT_IDX, VIRTIO_F_INDIRECT_DESC,
    VIRTIO_F_VERSION_1, op_feature, op_name,
};
use vhost::vhost_user::message::VhostUserVirtioFeatures;

use crate::spin::PollMode;

/// Maximum data segments (inputs + outputs) in one request. Generous for
/// scatter-gather packets, small enough to bound per-request work.
pub const MAX_SEGMENTS: u32 = 64;
/// Maximum bytes over the inputs, and separately over the outputs, of one
/// request: a 64 KiB TSO frame fits with room to spare.
pub const MAX_REQUEST_BYTES: u32 = 1 << 20;
/// Number of AES key slots.
pub const KEY_SLOTS: u32 = 16;
/// Largest virtqueue the split-ring layout allows.
pub const MAX_QUEUE_SIZE: u16 = 32768;

/// A bad option value; the binary prints it as one line.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    /// `--queues` out of range.
    #[error("--queues must be between 1 and 64 (got {0})")]
    Queues(u32),
    /// `--queue-size` not a power of two in range.
    #[error("--queue-size must be a power of two between 1 and {MAX_QUEUE_SIZE} (got {0})")]
    QueueSize(u32),
    /// Unknown name in `--ops`.
    #[error("unknown op {0:?} in --ops (known: all, {known})", known = known_ops())]
    UnknownOp(String),
}

fn known_ops() -> String {
    (0..OP_COUNT).map(op_name).collect::<Vec<_>>().join(", ")
}

/// Bitmap of every op this device implements.
pub const ALL_OPS: u32 = (1 << OP_COUNT) - 1;

/// Parses a comma-separated op list (`csum,crc32c` or `all`) into a bitmap.
/// NOP is always included: drivers use it to probe the device.
pub fn parse_ops(list: &str) -> Result<u32, ConfigError> {
    let mut mask = 1u32 << pktaccel_abi::OP_NOP;
    for name in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        if name.eq_ignore_ascii_case("all") {
            mask |= ALL_OPS;
            continue;
        }
        let op = (0..OP_COUNT)
            .find(|&op| op_name(op).eq_ignore_ascii_case(name))
            .ok_or_else(|| ConfigError::UnknownOp(name.to_string()))?;
        mask |= 1 << op;
    }
    Ok(mask)
}

/// Everything that shapes the device as the guest sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceOptions {
    /// Number of request queues (one worker thread each).
    pub num_queues: u32,
    /// Maximum virtqueue size.
    pub queue_size: u16,
    /// Bitmap of advertised ops.
    pub ops: u32,
    /// See [`MAX_SEGMENTS`].
    pub max_segments: u32,
    /// See [`MAX_REQUEST_BYTES`].
    pub max_request_bytes: u32,
    /// See [`KEY_SLOTS`].
    pub key_slots: u32,
    /// Whether and how long a queue worker spins on an empty ring before
    /// it sleeps until the next kick. Fixed spinning saves the wake-up when
    /// requests come back to back but steals the guest's CPU on a busy host
    /// (measured: 2-6x slower on a contended 2-core host); the adaptive
    /// default spins at most about one wake's cost and stops when it
    /// competes with other tasks (see [`crate::spin`]).
    pub poll: PollMode,
}

impl Default for DeviceOptions {
    fn default() -> Self {
        Self {
            num_queues: 1,
            queue_size: 256,
            ops: ALL_OPS,
            max_segments: MAX_SEGMENTS,
            max_request_bytes: MAX_REQUEST_BYTES,
            key_slots: KEY_SLOTS,
            poll: PollMode::Adaptive,
        }
    }
}

impl DeviceOptions {
    /// Builds options from the command-line values, checking their ranges.
    pub fn new(num_queues: u32, queue_size: u32, ops: &str) -> Result<Self, ConfigError> {
        if !(1..=64).contains(&num_queues) {
            return Err(ConfigError::Queues(num_queues));
        }
        if queue_size == 0
            || queue_size > u32::from(MAX_QUEUE_SIZE)
            || !queue_size.is_power_of_two()
        {
            return Err(ConfigError::QueueSize(queue_size));
        }
        Ok(Self {
            num_queues,
            queue_size: queue_size as u16,
            ops: parse_ops(ops)?,
            ..Self::default()
        })
    }

    /// The config-space image served through GET_CONFIG.
    pub fn device_config(&self) -> DeviceConfig {
        DeviceConfig {
            magic: MAGIC,
            abi_version: ABI_VERSION,
            num_queues: self.num_queues,
            max_segments: self.max_segments,
            max_request_bytes: self.max_request_bytes,
            ops: self.ops,
            key_slots: self.key_slots,
            reserved: 0,
        }
    }

    /// Virtio feature bits offered: VERSION_1, EVENT_IDX, INDIRECT_DESC, one
    /// bit per advertised op, and vhost-user's PROTOCOL_FEATURES (which QEMU
    /// needs for GET_CONFIG and MQ; it is not shown to the guest).
    pub fn features(&self) -> u64 {
        let ops = (0..OP_COUNT)
            .filter(|&op| self.ops & (1 << op) != 0)
            .fold(0u64, |f, op| f | op_feature(op));
        (1u64 << VIRTIO_F_VERSION_1)
            | (1u64 << VIRTIO_F_EVENT_IDX)
            | (1u64 << VIRTIO_F_INDIRECT_DESC)
            | VhostUserVirtioFeatures::PROTOCOL_FEATURES.bits()
            | ops
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pktaccel_abi::{OP_COPY, OP_CRC32C, OP_CSUM, OP_NOP};

    #[test]
    fn op_list_parses_and_always_has_nop() {
        assert_eq!(parse_ops("all"), Ok(ALL_OPS));
        assert_eq!(
            parse_ops("csum, CRC32C"),
            Ok((1 << OP_NOP) | (1 << OP_CSUM) | (1 << OP_CRC32C))
        );
        assert_eq!(parse_ops(""), Ok(1 << OP_NOP));
        assert_eq!(parse_ops("copy"), Ok((1 << OP_NOP) | (1 << OP_COPY)));
        assert_eq!(
            parse_ops("csum,md5"),
            Err(ConfigError::UnknownOp("md5".into()))
        );
    }

    #[test]
    fn ranges_are_checked() {
        assert_eq!(
            DeviceOptions::new(0, 256, "all"),
            Err(ConfigError::Queues(0))
        );
        assert_eq!(
            DeviceOptions::new(65, 256, "all"),
            Err(ConfigError::Queues(65))
        );
        assert_eq!(
            DeviceOptions::new(1, 100, "all"),
            Err(ConfigError::QueueSize(100))
        );
        assert_eq!(
            DeviceOptions::new(1, 65536, "all"),
            Err(ConfigError::QueueSize(65536))
        );
        assert!(DeviceOptions::new(4, 1024, "all").is_ok());
    }

    #[test]
    fn config_and_features_reflect_options() {
        let o = DeviceOptions::new(3, 256, "csum").unwrap();
        let c = o.device_config();
        assert_eq!(&c.to_le_bytes()[..4], b"PKAC");
        assert_eq!((c.abi_version, c.num_queues, c.ops), (1, 3, 0b11));
        let f = o.features();
        assert_eq!(f & 0xffff, 0b11);
        assert_ne!(f & (1 << 32), 0);
        assert_ne!(f & (1 << 29), 0);
        assert_ne!(f & (1 << 28), 0);
        assert_ne!(f & (1 << 30), 0);
    }
}
