//! Virtual-to-physical translation in O(1), without a syscall or a lock.
//!
//! The arena keeps one [`PageEntry`] per 4 KiB page of its reservation
//! (reserved with MAP_NORESERVE, so only entries of mapped slabs cost
//! memory). A lookup is `entries[(p - base) >> 12]` plus the offset. Device
//! slabs are physically contiguous, host pages usually are not; each entry
//! records how many bytes are physically contiguous from the start of its
//! page to the end of the run, so the lookup ([`Arena::v2p`]) also answers "how far can the
//! device go from here" — which the client needs to split segments.
//!
//! [`Arena::v2p`]: crate::arena::Arena::v2p

use core::sync::atomic::AtomicU64;

/// Physical address value marking memory that is mapped but not pinned
/// (fallback allocations).
pub const PHYS_NOT_PINNED: u64 = u64::MAX;

/// Physical address value of host memory not yet pinned: the first v2p
/// pins its slab and reads the real addresses (see
/// [`crate::backend::host::HostBackend::resolve`]). Values at or above it
/// are never physical addresses.
pub const PHYS_LAZY: u64 = u64::MAX - 1;

/// One page's translation.
#[repr(C)]
pub struct PageEntry {
    /// Physical address of the page, or [`PHYS_NOT_PINNED`].
    pub phys: AtomicU64,
    /// Bytes physically contiguous from the page start to the end of the
    /// allocation run; 0 = no slab mapped here.
    pub contig: AtomicU64,
}

/// Why a pointer has no physical address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum V2pError {
    /// The pointer is not inside the pktslab arena at all.
    #[error("pointer is outside the pktslab arena")]
    OutsideArena,
    /// Ordinary memory: inside the arena because pinned memory ran out (or
    /// a forked child's copy of its parent's heap), or a malloc() above
    /// PKTSLAB_PIN_MAX. Copy it or compute in software.
    #[error("memory is not pinned (fallback allocation)")]
    NotPinned,
    /// Inside the arena, but no slab is mapped there.
    #[error("no slab is mapped at this address")]
    NotMapped,
}

impl V2pError {
    /// The value the C API returns for this error (all above any real
    /// physical address).
    pub const fn c_value(self) -> u64 {
        match self {
            V2pError::OutsideArena => u64::MAX,
            V2pError::NotPinned => u64::MAX - 1,
            V2pError::NotMapped => u64::MAX - 2,
        }
    }
}

/// A physical address and the bytes physically contiguous from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Phys {
    /// Physical (DMA) address.
    pub addr: u64,
    /// Bytes from `addr` that are physically contiguous (to the end of the
    /// allocation's slab run at most).
    pub contig: usize,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The C API tells errors from addresses by value: each error needs its
    /// own value, and all must lie above any physical address (x86-64 and
    /// arm64 physical addresses have at most 52 bits).
    #[test]
    fn c_values_are_distinct_and_above_physical_addresses() {
        let all = [
            V2pError::OutsideArena,
            V2pError::NotPinned,
            V2pError::NotMapped,
        ];
        for (i, a) in all.iter().enumerate() {
            assert!(a.c_value() >= 1 << 52, "{a:?} could be a physical address");
            for b in &all[i + 1..] {
                assert_ne!(a.c_value(), b.c_value(), "{a:?} and {b:?} share a C value");
            }
        }
    }
}
