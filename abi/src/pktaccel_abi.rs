// The pktaccel device and driver ABI, version 1.
//
// This file is the ONE definition shared by the emulated device
// (qemu-device/), the kernel module (kmod/, which includes it with
// `#[path = ...] mod abi;` because out-of-tree kernel crates cannot use
// cargo dependencies) and the user library (userlib/). It must therefore
// stay dependency-free, `no_std`, free of inner attributes, and valid in
// both the 2021 (kernel) and 2024 (workspace) editions.
//
// All multi-byte fields are little-endian on the wire. Every struct is
// `#[repr(C)]` with explicit padding so that its layout is identical on the
// guest and the host; `size_of` is pinned by tests in `abi/src/lib.rs`.
// The prose datasheet is docs/datasheet.md.

/// Value of [`DeviceConfig::magic`]: ASCII "PKAC" read as a little-endian u32.
/// The driver binds only when it sees this, because the PCI ID (virtio-id 21)
/// is borrowed and another device could carry it.
pub const MAGIC: u32 = 0x4341_4b50;

/// ABI version this file describes. Bumped on any incompatible change.
pub const ABI_VERSION: u32 = 1;

/// virtio device ID the device registers as. 21 is the spec's "signal
/// distribution module": QEMU knows its name (a must for
/// vhost-user-test-device) and Linux has no driver that would claim it.
pub const VIRTIO_ID: u32 = 21;
/// The PCI device ID that virtio-id 21 yields on the modern transport.
pub const PCI_VENDOR_ID: u16 = 0x1af4;
/// 0x1040 + virtio-id.
pub const PCI_DEVICE_ID: u16 = 0x1040 + VIRTIO_ID as u16;

// ---------------------------------------------------------------------------
// Feature bits
// ---------------------------------------------------------------------------

/// Device feature bit `op` (0..16) set means the device implements that op.
/// The same information is in [`DeviceConfig::ops`]; the feature bits let a
/// driver refuse a device before reading config space.
pub const fn op_feature(op: u16) -> u64 {
    1u64 << op
}
/// Mask of the device-specific feature bits.
pub const OP_FEATURES_MASK: u64 = 0xffff;
/// virtio 1.x: indirect descriptors.
pub const VIRTIO_F_INDIRECT_DESC: u32 = 28;
/// virtio 1.x: used_event / avail_event interrupt suppression.
pub const VIRTIO_F_EVENT_IDX: u32 = 29;
/// virtio 1.x: the modern interface. Required: the device refuses legacy.
pub const VIRTIO_F_VERSION_1: u32 = 32;

// ---------------------------------------------------------------------------
// Device configuration space (read-only)
// ---------------------------------------------------------------------------

/// The device-specific configuration space. QEMU fetches it from the backend
/// on every guest read, so drivers read it once at probe.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DeviceConfig {
    /// [`MAGIC`].
    pub magic: u32,
    /// [`ABI_VERSION`].
    pub abi_version: u32,
    /// Number of request queues (virtqueues 0..num_queues).
    pub num_queues: u32,
    /// Maximum data segments (input + output) in one request.
    pub max_segments: u32,
    /// Maximum total bytes over all input segments, and separately over all
    /// output segments, of one request.
    pub max_request_bytes: u32,
    /// Bitmap: bit `op` set when the op is implemented and advertised.
    pub ops: u32,
    /// Number of AES key slots (0..key_slots).
    pub key_slots: u32,
    /// Always zero in v1.
    pub reserved: u32,
}

/// Size in bytes of [`DeviceConfig`].
pub const DEVICE_CONFIG_SIZE: usize = 32;

impl DeviceConfig {
    /// The little-endian wire image of this config space.
    pub fn to_le_bytes(&self) -> [u8; DEVICE_CONFIG_SIZE] {
        let words = [
            self.magic,
            self.abi_version,
            self.num_queues,
            self.max_segments,
            self.max_request_bytes,
            self.ops,
            self.key_slots,
            self.reserved,
        ];
        let mut out = [0u8; DEVICE_CONFIG_SIZE];
        let mut i = 0;
        while i < words.len() {
            let b = words[i].to_le_bytes();
            out[i * 4] = b[0];
            out[i * 4 + 1] = b[1];
            out[i * 4 + 2] = b[2];
            out[i * 4 + 3] = b[3];
            i += 1;
        }
        out
    }

    /// Parses the wire image; `None` when `bytes` is shorter than the struct.
    pub fn from_le_bytes(bytes: &[u8]) -> Option<Self> {
        if bytes.len() < DEVICE_CONFIG_SIZE {
            return None;
        }
        let w = |i: usize| {
            u32::from_le_bytes([bytes[i * 4], bytes[i * 4 + 1], bytes[i * 4 + 2], bytes[i * 4 + 3]])
        };
        Some(Self {
            magic: w(0),
            abi_version: w(1),
            num_queues: w(2),
            max_segments: w(3),
            max_request_bytes: w(4),
            ops: w(5),
            key_slots: w(6),
            reserved: w(7),
        })
    }
}

// ---------------------------------------------------------------------------
// Ops and status codes
// ---------------------------------------------------------------------------

/// Latency probe: no inputs or outputs needed; result 0.
pub const OP_NOP: u16 = 0;
/// RFC 1071 Internet checksum over the concatenated inputs. `result` is the
/// 16-bit one's-complement of the one's-complement sum (the value to store
/// in a header), folded from the 32-bit seed in `aux` (normally 0).
/// The data is summed as big-endian 16-bit words (an odd total is padded
/// with a zero byte), so store `result` big-endian: `htons(result)`.
pub const OP_CSUM: u16 = 1;
/// CRC-32C (Castagnoli, iSCSI/SCTP). `aux` is the initial CRC (0 to start);
/// `result` is the finished CRC, so chained requests pass the previous result.
pub const OP_CRC32C: u16 = 2;
/// CRC-32 (IEEE 802.3 / zlib polynomial). Seed and result as for CRC32C.
pub const OP_CRC32: u16 = 3;
/// Toeplitz RSS hash of the inputs (e.g. src ip, dst ip, src port, dst port)
/// with the 40-byte key in [`RequestHeader::params`]. `result` is the hash.
pub const OP_RSS: u16 = 4;
/// AES-256-GCM seal. `key_slot` selects the key, `params[0..12]` is the IV,
/// the first `aux` input bytes are AAD and the rest plaintext. Outputs get
/// ciphertext followed by the 16-byte tag.
pub const OP_AES_GCM_SEAL: u16 = 5;
/// AES-256-GCM open. Inputs: AAD (`aux` bytes), ciphertext, 16-byte tag.
/// Outputs get the plaintext only if the tag verifies; otherwise
/// [`STATUS_AUTH_FAILED`] and the outputs are zeroed.
pub const OP_AES_GCM_OPEN: u16 = 6;
/// DMA memcpy: inputs are copied, in order, to the outputs.
pub const OP_COPY: u16 = 7;
/// Control: install the 32-byte AES-256 key held in the inputs into
/// `key_slot`.
pub const OP_KEY_SET: u16 = 8;
/// Control: erase `key_slot`.
pub const OP_KEY_CLEAR: u16 = 9;
/// One past the highest op code.
pub const OP_COUNT: u16 = 10;

/// Human-readable op name, used by logs, stats and tools.
pub const fn op_name(op: u16) -> &'static str {
    match op {
        OP_NOP => "nop",
        OP_CSUM => "csum",
        OP_CRC32C => "crc32c",
        OP_CRC32 => "crc32",
        OP_RSS => "rss",
        OP_AES_GCM_SEAL => "aes-gcm-seal",
        OP_AES_GCM_OPEN => "aes-gcm-open",
        OP_COPY => "copy",
        OP_KEY_SET => "key-set",
        OP_KEY_CLEAR => "key-clear",
        _ => "unknown",
    }
}

/// The request was carried out.
pub const STATUS_OK: u32 = 0;
/// Unknown op code, or an op this device does not advertise.
pub const STATUS_UNSUPPORTED: u32 = 1;
/// Malformed chain: short header, bad ordering, zero-length or too many
/// segments, wrong input size for the op, non-zero reserved fields.
pub const STATUS_BAD_REQUEST: u32 = 2;
/// A segment's guest-physical range is outside guest memory or wraps.
pub const STATUS_BAD_ADDRESS: u32 = 3;
/// Total input or output bytes exceed `max_request_bytes`.
pub const STATUS_TOO_BIG: u32 = 4;
/// AES-GCM open: the tag did not verify. No plaintext is released.
pub const STATUS_AUTH_FAILED: u32 = 5;
/// The key slot is out of range or holds no key.
pub const STATUS_NO_KEY: u32 = 6;
/// The outputs are shorter than the op needs.
pub const STATUS_SHORT_OUTPUT: u32 = 7;
/// The device went away before completing (reported by the driver only).
pub const STATUS_DEVICE_ERROR: u32 = 8;
/// One past the highest status code.
pub const STATUS_COUNT: u32 = 9;

/// Human-readable status name.
pub const fn status_name(status: u32) -> &'static str {
    match status {
        STATUS_OK => "ok",
        STATUS_UNSUPPORTED => "unsupported",
        STATUS_BAD_REQUEST => "bad-request",
        STATUS_BAD_ADDRESS => "bad-address",
        STATUS_TOO_BIG => "too-big",
        STATUS_AUTH_FAILED => "auth-failed",
        STATUS_NO_KEY => "no-key",
        STATUS_SHORT_OUTPUT => "short-output",
        STATUS_DEVICE_ERROR => "device-error",
        _ => "unknown",
    }
}

// ---------------------------------------------------------------------------
// Requests on the virtqueue
// ---------------------------------------------------------------------------
//
// A request is one descriptor chain:
//   [RequestHeader, device-readable, exactly REQUEST_HEADER_SIZE bytes]
//   [input segments, device-readable] ...
//   [output segments, device-writable] ...
//   [StatusRecord, device-writable, exactly STATUS_RECORD_SIZE bytes]

/// AES-GCM IV length carried in `params[0..12]`.
pub const GCM_IV_LEN: usize = 12;
/// AES-GCM tag length.
pub const GCM_TAG_LEN: usize = 16;
/// AES-256 key length.
pub const AES256_KEY_LEN: usize = 32;
/// Toeplitz key length carried in `params`.
pub const RSS_KEY_LEN: usize = 40;

/// First descriptor of every request.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RequestHeader {
    /// One of the `OP_*` codes.
    pub op: u16,
    /// Always zero in v1.
    pub flags: u16,
    /// AES key slot (GCM and key ops); zero otherwise.
    pub key_slot: u32,
    /// Opaque to the device; echoed nowhere, kept for the driver's tracing.
    pub cookie: u64,
    /// Op argument: CRC seed, checksum seed, or AAD length for GCM.
    pub aux: u32,
    /// Always zero in v1.
    pub reserved: u32,
    /// Op parameters: RSS key (40 bytes) or GCM IV (first 12 bytes).
    pub params: [u8; 40],
}

/// Size in bytes of [`RequestHeader`].
pub const REQUEST_HEADER_SIZE: usize = 64;

impl Default for RequestHeader {
    fn default() -> Self {
        Self { op: 0, flags: 0, key_slot: 0, cookie: 0, aux: 0, reserved: 0, params: [0; 40] }
    }
}

impl RequestHeader {
    /// Little-endian wire image.
    #[inline]
    pub fn to_le_bytes(&self) -> [u8; REQUEST_HEADER_SIZE] {
        let mut o = [0u8; REQUEST_HEADER_SIZE];
        o[0..2].copy_from_slice(&self.op.to_le_bytes());
        o[2..4].copy_from_slice(&self.flags.to_le_bytes());
        o[4..8].copy_from_slice(&self.key_slot.to_le_bytes());
        o[8..16].copy_from_slice(&self.cookie.to_le_bytes());
        o[16..20].copy_from_slice(&self.aux.to_le_bytes());
        o[20..24].copy_from_slice(&self.reserved.to_le_bytes());
        o[24..64].copy_from_slice(&self.params);
        o
    }

    /// Parses the wire image; `None` when `b` is shorter than the header.
    #[inline]
    pub fn from_le_bytes(b: &[u8]) -> Option<Self> {
        if b.len() < REQUEST_HEADER_SIZE {
            return None;
        }
        let mut params = [0u8; 40];
        params.copy_from_slice(&b[24..64]);
        Some(Self {
            op: u16::from_le_bytes([b[0], b[1]]),
            flags: u16::from_le_bytes([b[2], b[3]]),
            key_slot: u32::from_le_bytes([b[4], b[5], b[6], b[7]]),
            cookie: u64::from_le_bytes([b[8], b[9], b[10], b[11], b[12], b[13], b[14], b[15]]),
            aux: u32::from_le_bytes([b[16], b[17], b[18], b[19]]),
            reserved: u32::from_le_bytes([b[20], b[21], b[22], b[23]]),
            params,
        })
    }
}

/// Last descriptor of every request, written by the device.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StatusRecord {
    /// One of the `STATUS_*` codes.
    pub status: u32,
    /// Bytes written to the output segments.
    pub len: u32,
    /// Op result: checksum, CRC or hash; zero for other ops.
    pub result: u64,
}

/// Size in bytes of [`StatusRecord`].
pub const STATUS_RECORD_SIZE: usize = 16;

impl StatusRecord {
    /// Little-endian wire image.
    #[inline]
    pub fn to_le_bytes(&self) -> [u8; STATUS_RECORD_SIZE] {
        let mut o = [0u8; STATUS_RECORD_SIZE];
        o[0..4].copy_from_slice(&self.status.to_le_bytes());
        o[4..8].copy_from_slice(&self.len.to_le_bytes());
        o[8..16].copy_from_slice(&self.result.to_le_bytes());
        o
    }

    /// Parses the wire image; `None` when `b` is too short.
    #[inline]
    pub fn from_le_bytes(b: &[u8]) -> Option<Self> {
        if b.len() < STATUS_RECORD_SIZE {
            return None;
        }
        Some(Self {
            status: u32::from_le_bytes([b[0], b[1], b[2], b[3]]),
            len: u32::from_le_bytes([b[4], b[5], b[6], b[7]]),
            result: u64::from_le_bytes([b[8], b[9], b[10], b[11], b[12], b[13], b[14], b[15]]),
        })
    }
}

// ---------------------------------------------------------------------------
// /dev/pktaccel ioctl ABI (kernel module <-> user space)
// ---------------------------------------------------------------------------

/// Slab size limits: any power of two in this range; 2 MiB by default.
pub const SLAB_MIN_SIZE: u64 = 64 * 1024;
/// Largest slab the driver hands out.
pub const SLAB_MAX_SIZE: u64 = 4 * 1024 * 1024;
/// Default slab size.
pub const SLAB_DEFAULT_SIZE: u64 = 2 * 1024 * 1024;

/// Slab caching: uncached (UC-), the original design's default.
pub const CACHE_UNCACHED: u32 = 0;
/// Slab caching: write-combining.
pub const CACHE_WRITE_COMBINING: u32 = 1;
/// Slab caching: normal write-back memory.
pub const CACHE_WRITE_BACK: u32 = 2;

/// Segment direction: the device reads it.
pub const SEG_IN: u32 = 0;
/// Segment direction: the device writes it.
pub const SEG_OUT: u32 = 1;

/// Submit flag: return EAGAIN instead of waiting when the ring is full.
pub const SUBMIT_NONBLOCK: u32 = 1 << 0;
/// Submit flag: segment addresses are user virtual addresses of ordinary
/// memory; the driver bounces them through its own DMA buffers (the copy
/// baseline the design exists to avoid).
pub const SUBMIT_COPY: u32 = 1 << 1;

/// Most requests in one submit or reap call.
pub const MAX_BATCH: u32 = 256;

/// `PKTACCEL_IOC_INFO` result.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IocInfo {
    /// The device's config space as read at probe.
    pub config: DeviceConfig,
    /// Ring size of each request queue.
    pub queue_size: u32,
    /// Must be zero.
    pub reserved: u32,
    /// Pinned-memory cap per open file, bytes.
    pub max_pinned_per_file: u64,
    /// Pinned-memory cap over all files, bytes.
    pub max_pinned_total: u64,
    /// Bytes this file has pinned now.
    pub pinned_by_file: u64,
    /// Bytes all files have pinned now.
    pub pinned_total: u64,
}

/// `PKTACCEL_IOC_SLAB_ALLOC` argument: in `size`, `caching`; out the rest.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IocSlabAlloc {
    /// Power of two in [`SLAB_MIN_SIZE`, `SLAB_MAX_SIZE`]; 0 = default.
    pub size: u64,
    /// One of the `CACHE_*` modes.
    pub caching: u32,
    /// Out: slab id, unique within the file.
    pub id: u32,
    /// Out: physical (DMA) base address; the slab is contiguous.
    pub phys: u64,
    /// Out: pass to mmap() as the offset to map exactly this slab.
    pub mmap_offset: u64,
}

/// `PKTACCEL_IOC_SLAB_FREE` argument.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IocSlabFree {
    /// Id from slab alloc.
    pub id: u32,
    /// Must be zero.
    pub reserved: u32,
}

/// One data segment of a user request.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IocSegment {
    /// Physical address inside one of this file's slabs (zero-copy), or a
    /// user virtual address with [`SUBMIT_COPY`].
    pub addr: u64,
    /// Length in bytes, non-zero.
    pub len: u32,
    /// [`SEG_IN`] or [`SEG_OUT`]; all inputs precede all outputs.
    pub dir: u32,
}

/// One user request.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IocRequest {
    /// Becomes the device header (cookie echoed in the completion).
    pub header: RequestHeader,
    /// User pointer to `nsegs` [`IocSegment`]s.
    pub segs: u64,
    /// Number of segments.
    pub nsegs: u32,
    /// Request queue to use; `u32::MAX` lets the driver choose.
    pub queue: u32,
}

/// `PKTACCEL_IOC_SUBMIT` argument.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IocSubmit {
    /// User pointer to `count` [`IocRequest`]s.
    pub reqs: u64,
    /// Requests in the batch, 1..=[`MAX_BATCH`].
    pub count: u32,
    /// `SUBMIT_*` flags.
    pub flags: u32,
    /// Out: how many were queued (all or, on EAGAIN/error, a prefix).
    pub submitted: u32,
    /// Must be zero.
    pub reserved: u32,
}

/// One completion.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IocCompletion {
    /// The request's cookie.
    pub cookie: u64,
    /// `STATUS_*` from the device, or [`STATUS_DEVICE_ERROR`].
    pub status: u32,
    /// Bytes written to outputs.
    pub len: u32,
    /// Op result.
    pub result: u64,
}

/// `PKTACCEL_IOC_REAP` argument.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IocReap {
    /// User pointer to room for `max` [`IocCompletion`]s.
    pub comps: u64,
    /// Room, 1..=[`MAX_BATCH`].
    pub max: u32,
    /// Milliseconds to wait for the first completion; 0 = don't wait,
    /// negative = wait forever.
    pub timeout_ms: i32,
    /// Out: completions written.
    pub count: u32,
    /// Must be zero.
    pub reserved: u32,
}

/// `PKTACCEL_IOC_STATS` result: this file's counters.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IocStats {
    /// Requests completed per op.
    pub requests: [u64; 16],
    /// Requests completed with a non-OK status.
    pub errors: u64,
    /// Requests rejected by the driver before reaching the device.
    pub rejected: u64,
    /// Bytes bounced through driver buffers (copy mode); zero-copy adds 0.
    pub bytes_copied: u64,
    /// Bytes the device processed by physical address.
    pub bytes_zero_copy: u64,
    /// Times a submit found the ring full.
    pub ring_full: u64,
    /// Slabs held now.
    pub slabs: u64,
    /// Bytes pinned now.
    pub pinned: u64,
}

const IOC_NRBITS: u32 = 8;
const IOC_TYPEBITS: u32 = 8;
const IOC_SIZEBITS: u32 = 14;
const IOC_NRSHIFT: u32 = 0;
const IOC_TYPESHIFT: u32 = IOC_NRSHIFT + IOC_NRBITS;
const IOC_SIZESHIFT: u32 = IOC_TYPESHIFT + IOC_TYPEBITS;
const IOC_DIRSHIFT: u32 = IOC_SIZESHIFT + IOC_SIZEBITS;
const IOC_WRITE: u32 = 1;
const IOC_READ: u32 = 2;

/// Linux `_IOC` for x86_64.
pub const fn ioc(dir: u32, ty: u8, nr: u8, size: usize) -> u32 {
    (dir << IOC_DIRSHIFT)
        | ((ty as u32) << IOC_TYPESHIFT)
        | ((nr as u32) << IOC_NRSHIFT)
        | ((size as u32) << IOC_SIZESHIFT)
}

/// ioctl type byte of /dev/pktaccel.
pub const IOC_TYPE: u8 = b'P';

/// Read device info and caps.
pub const PKTACCEL_IOC_INFO: u32 = ioc(IOC_READ, IOC_TYPE, 0x40, core::mem::size_of::<IocInfo>());
/// Allocate one pinned slab.
pub const PKTACCEL_IOC_SLAB_ALLOC: u32 =
    ioc(IOC_READ | IOC_WRITE, IOC_TYPE, 0x41, core::mem::size_of::<IocSlabAlloc>());
/// Free a slab by id.
pub const PKTACCEL_IOC_SLAB_FREE: u32 =
    ioc(IOC_WRITE, IOC_TYPE, 0x42, core::mem::size_of::<IocSlabFree>());
/// Submit a batch of requests.
pub const PKTACCEL_IOC_SUBMIT: u32 =
    ioc(IOC_READ | IOC_WRITE, IOC_TYPE, 0x43, core::mem::size_of::<IocSubmit>());
/// Reap a batch of completions.
pub const PKTACCEL_IOC_REAP: u32 =
    ioc(IOC_READ | IOC_WRITE, IOC_TYPE, 0x44, core::mem::size_of::<IocReap>());
/// Read this file's counters.
pub const PKTACCEL_IOC_STATS: u32 = ioc(IOC_READ, IOC_TYPE, 0x45, core::mem::size_of::<IocStats>());
