//! `struct pktslab_iov` and `struct pktslab_op` of `include/pktslab.h`,
//! in Rust. The one definition: libpktslab's C API uses it, and libpktcrc
//! and the OpenSSL provider, which reach libpktslab through `dlsym` and so
//! cannot link it, include this file by path. No `use` of this crate here.

use core::ffi::c_void;

/// C: one buffer.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct CIov {
    /// First byte.
    pub base: *const c_void,
    /// Length.
    pub len: usize,
}

/// C: one request of a batch.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct COp {
    /// `PKTACCEL_OP_*`.
    pub op: u16,
    /// Zero.
    pub flags: u16,
    /// AES key slot.
    pub key_slot: u32,
    /// Op argument.
    pub aux: u32,
    /// Zero.
    pub reserved: u32,
    /// Op parameters.
    pub params: [u8; 40],
    /// Inputs.
    pub inputs: *const CIov,
    /// Number of inputs.
    pub n_in: u32,
    /// Number of outputs.
    pub n_out: u32,
    /// Outputs.
    pub outputs: *const CIov,
    /// Out: the cookie the completion will carry.
    pub cookie: u64,
}

/// C: `struct pktslab_limits`, the driver's limits.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct CLimits {
    /// AES key slots of each open file.
    pub key_slots: u32,
    /// Segments per request.
    pub max_segments: u32,
    /// Bytes per request (inputs or outputs).
    pub max_request_bytes: u32,
    /// Request queues.
    pub queues: u32,
}

// The layout `pktslab.h`'s static asserts check on the C side, checked
// here too, in every crate that includes this file.
const _: () = assert!(core::mem::size_of::<CIov>() == 16);
const _: () = assert!(core::mem::size_of::<COp>() == 88);
const _: () = assert!(core::mem::offset_of!(COp, inputs) == 56);
const _: () = assert!(core::mem::offset_of!(COp, outputs) == 72);
const _: () = assert!(core::mem::offset_of!(COp, cookie) == 80);
const _: () = assert!(core::mem::size_of::<CLimits>() == 16);
