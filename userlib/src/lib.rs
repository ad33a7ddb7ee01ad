//! pktslab: a power-of-two slab allocator over pinned memory.
//!
//! The pktaccel driver hands out pinned, physically contiguous slabs; this
//! library maps them into one reserved arena, carves each slab into pieces
//! of a single power-of-two size, and can replace malloc() in unmodified
//! programs (`LD_PRELOAD=libpktslab.so`, built with `--features preload`).
//! Because every buffer then lives in a known slab, [`v2p()`] turns a
//! pointer into a physical address with a table lookup, and the
//! [`client`] hands those addresses to the device: zero copies.
//!
//! Layout: [`class`] (size classes), [`arena`] (reservation, slot and page
//! tables), [`backend`] (device and host slab sources), [`slab`] (carving,
//! shared lists), [`tcache`] (thread caches), [`heap`] (malloc semantics),
//! [`grow`] (room for realloc() growth), [`global`] (the process heap: init, fork, RTLD_NEXT), `preload`
//! (the libc ABI, with `--features preload`), [`capi`] (the explicit C API), [`pool`] (safe Rust API),
//! [`client`] (requests), [`stats`], [`mod@v2p`].

pub mod arena;
pub mod backend;
pub mod capi;
pub mod class;
pub mod client;
pub mod config;
pub mod fault;
pub mod global;
pub mod grow;
pub mod heap;
pub mod lock;
pub mod pool;
#[cfg(feature = "preload")]
pub mod preload;
pub mod slab;
pub mod stats;
pub mod tcache;
pub mod v2p;

pub use backend::BackendMode;
pub use client::{Client, ClientError, CopyMode, DeviceTransport, Request, Transport};
pub use config::{BackendChoice, Config};
pub use pool::{PinnedBox, PinnedBuf, PktslabAlloc, Pool};
pub use stats::Stats;
pub use v2p::{Phys, V2pError};

/// Setup failures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The arena's address-space reservation failed.
    #[error("cannot reserve the arena: errno {0}")]
    Reserve(i32),
    /// The process heap could not be set up.
    #[error("the pktslab heap is unavailable")]
    Unavailable,
    /// No memory for a request of this many bytes.
    #[error("out of memory allocating {0} bytes")]
    OutOfMemory(usize),
}

/// Physical address of `p` in the process heap, and how many bytes are
/// physically contiguous from it. O(1), no syscall, no lock, for pinned
/// arena memory; ordinary memory malloc() handed out above
/// PKTSLAB_PIN_MAX is looked up (under a lock) to answer
/// [`V2pError::NotPinned`], and on the host test backend the first v2p in
/// a slab run pins it (lock, `mlock`, pagemap read). Not async-signal-safe.
#[inline(always)]
pub fn v2p(p: *const u8) -> Result<Phys, V2pError> {
    global::v2p(p)
}
