//! Where slabs come from: the `/dev/pktaccel` driver or host memory.
//!
//! A backend maps one slab at a fixed, slab-aligned address inside the
//! arena and reports the physical address of every page in it. It never
//! allocates from the heap, because it runs inside malloc().

pub mod device;
pub mod host;

use crate::class::{PAGE_SIZE, PAGES_PER_SLAB, SLAB_SIZE};
use crate::config::{BackendChoice, Config};

/// How physical addresses are obtained; reported by stats and the API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum BackendMode {
    /// `/dev/pktaccel` slabs: pinned, physically contiguous.
    Device = 1,
    /// Host memory, physical addresses read from /proc/self/pagemap.
    HostPagemap = 2,
    /// Host memory, synthetic but consistent physical addresses (pagemap
    /// not readable).
    HostSynthetic = 3,
    /// No slab source: only fallback (unpinned) memory, if enabled.
    Missing = 4,
}

impl BackendMode {
    /// Short name for messages.
    pub const fn name(self) -> &'static str {
        match self {
            BackendMode::Device => "device (/dev/pktaccel, contiguous slabs)",
            BackendMode::HostPagemap => "host (physical addresses from /proc/self/pagemap)",
            BackendMode::HostSynthetic => "host (synthetic physical addresses)",
            BackendMode::Missing => "missing (no pinned memory)",
        }
    }
}

/// Why a slab could not be had.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BackendError {
    /// The pinned-memory cap was reached (driver ENOMEM or host cap).
    #[error("out of pinned memory")]
    OutOfPinned,
    /// There is no backend (device node missing).
    #[error("no slab backend")]
    Unavailable,
    /// A system call failed.
    #[error("system call failed: errno {0}")]
    Os(i32),
}

/// A slab source.
pub enum Backend {
    /// The kernel module.
    Device(device::DeviceBackend),
    /// Host memory.
    Host(host::HostBackend),
    /// Nothing: every map fails with [`BackendError::Unavailable`].
    Missing,
}

/// Physical addresses of a slab's pages, filled by the backend.
pub type SlabPhys = [u64; PAGES_PER_SLAB];

impl Backend {
    /// Opens the backend `cfg` asks for. A missing device becomes
    /// [`Backend::Missing`] plus the error number, for the caller's message.
    pub fn open(cfg: &Config) -> (Self, Option<i32>) {
        let dev_exists = || {
            // SAFETY: device_path is NUL-terminated; access only inspects it.
            unsafe { libc::access(cfg.device_path.as_ptr(), libc::F_OK) == 0 }
        };
        let want_device = match cfg.backend {
            BackendChoice::Device => true,
            BackendChoice::Host => false,
            BackendChoice::Auto => dev_exists(),
        };
        if want_device {
            match device::DeviceBackend::open(cfg.device_path, cfg.caching) {
                Ok(d) => (Backend::Device(d), None),
                Err(e) => (Backend::Missing, Some(e)),
            }
        } else {
            (
                Backend::Host(host::HostBackend::new(
                    cfg.max_pinned,
                    cfg.force_synthetic,
                    cfg.host_dontfork,
                )),
                None,
            )
        }
    }

    /// The mode, for reports.
    pub fn mode(&self) -> BackendMode {
        match self {
            Backend::Device(_) => BackendMode::Device,
            Backend::Host(h) => h.mode(),
            Backend::Missing => BackendMode::Missing,
        }
    }

    /// The length a slab of at least `len` bytes really takes: the driver
    /// hands out powers of two from 64 KiB, host memory comes in pages.
    pub fn granule(&self, len: usize) -> usize {
        match self {
            Backend::Device(_) => len.next_power_of_two().max(device::MIN_SLAB),
            _ => len.next_multiple_of(PAGE_SIZE),
        }
        .min(SLAB_SIZE)
    }

    /// Whether slabs are ordinary anonymous memory the arena may map
    /// read-write ahead of time ([`crate::arena::PREMAP_SLOTS`]): host
    /// memory, unless slabs must not be inherited by fork() (those are
    /// marked one by one).
    pub fn premaps_slabs(&self) -> bool {
        matches!(self, Backend::Host(h) if !h.dontfork())
    }

    /// Maps one pinned slab of `len` bytes ([`Backend::granule`]) at `addr`
    /// (slab-aligned, inside the arena's PROT_NONE reservation) and fills
    /// the first `len / PAGE_SIZE` entries of `phys`. Returns the device
    /// slab id (or `u32::MAX` for host memory). `premapped`: the range is
    /// already mapped read-write and was never touched (zeroes), so host
    /// memory needs no mmap().
    ///
    /// # Safety
    /// `addr..addr+len` must be a part of the arena reservation that
    /// holds nothing live; it is replaced.
    pub unsafe fn map_slab(
        &self,
        addr: usize,
        len: usize,
        phys: &mut SlabPhys,
        premapped: bool,
    ) -> Result<u32, BackendError> {
        match self {
            // SAFETY: forwarded caller contract.
            Backend::Device(d) => unsafe { d.map_slab(addr, &mut phys[..len / PAGE_SIZE]) },
            Backend::Host(h) => {
                // SAFETY: forwarded caller contract.
                unsafe { h.map_slab(addr, len, phys, premapped) }.map(|()| u32::MAX)
            }
            Backend::Missing => Err(BackendError::Unavailable),
        }
    }

    /// Physical addresses for a slab whose entries [`Backend::map_slab`]
    /// left [`crate::v2p::PHYS_LAZY`] (host memory, pinned on first v2p):
    /// see [`host::HostBackend::resolve`].
    pub fn resolve(&self, addr: usize, slot: usize, len: usize, phys: &mut SlabPhys) {
        if let Backend::Host(h) = self {
            h.resolve(addr, slot, len, phys);
        }
    }

    /// Returns a slab mapped by [`Backend::map_slab`] and puts the
    /// reservation back in its place.
    ///
    /// # Safety
    /// Nothing may use the slab's memory any more.
    pub unsafe fn unmap_slab(&self, addr: usize, id: u32, len: usize) {
        match self {
            // SAFETY: forwarded caller contract.
            Backend::Device(d) => unsafe { d.unmap_slab(addr, id, len) },
            // SAFETY: forwarded caller contract.
            Backend::Host(h) => unsafe { h.unmap_slab(addr, len) },
            // SAFETY: forwarded caller contract.
            Backend::Missing => unsafe { reserve_fixed(addr, len) },
        }
    }

    /// Whether slabs are shared mappings of the device, which a forked
    /// child would otherwise share with its parent.
    pub fn is_device(&self) -> bool {
        matches!(self, Backend::Device(_))
    }

    /// Whether a forked child inherits no slab mappings (the device's are
    /// `VM_DONTCOPY`; host slabs with `PKTSLAB_HOST_DONTFORK=1`), so the
    /// fork handlers must copy the heap for it.
    pub fn slabs_not_inherited(&self) -> bool {
        match self {
            Backend::Device(_) => true,
            Backend::Host(h) => h.dontfork(),
            Backend::Missing => false,
        }
    }

    /// Stops counting `len` pinned bytes that became ordinary memory (a
    /// forked child's copy of its parent's slab).
    pub fn forget(&self, len: usize) {
        match self {
            Backend::Device(d) => d.forget(len),
            Backend::Host(h) => h.forget(len),
            Backend::Missing => {}
        }
    }

    /// Fork-child fix-up of the backend (see [`device::DeviceBackend::reopen_in_child`]).
    pub fn reopen_in_child(&self) {
        if let Backend::Device(d) = self {
            d.reopen_in_child();
        }
    }

    /// The device file descriptor, for the accelerator client.
    pub fn device_fd(&self) -> Option<i32> {
        match self {
            Backend::Device(d) => Some(d.fd()),
            _ => None,
        }
    }

    /// Bytes of pinned memory the backend holds now.
    pub fn pinned_bytes(&self) -> u64 {
        match self {
            Backend::Device(d) => d.pinned(),
            Backend::Host(h) => h.pinned(),
            Backend::Missing => 0,
        }
    }
}

/// Maps ordinary (unpinned) anonymous memory at `addr`: the fallback.
///
/// # Safety
/// As [`Backend::map_slab`].
pub unsafe fn map_unpinned(addr: usize, len: usize) -> Result<(), BackendError> {
    // SAFETY: forwarded caller contract.
    unsafe { map_anonymous(addr, len, 0) }
}

/// [`map_unpinned`] with extra mmap flags (`MAP_POPULATE`).
///
/// # Safety
/// As [`Backend::map_slab`].
pub unsafe fn map_anonymous(addr: usize, len: usize, flags: i32) -> Result<(), BackendError> {
    // SAFETY: MAP_FIXED replaces only the caller's reservation range.
    let p = unsafe {
        libc::mmap(
            addr as *mut libc::c_void,
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED | flags,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        Err(BackendError::Os(errno()))
    } else {
        Ok(())
    }
}

/// Puts a PROT_NONE, MAP_NORESERVE reservation back over `addr..addr+len`
/// (which unmaps whatever was there).
///
/// # Safety
/// Nothing may use that memory any more.
pub unsafe fn reserve_fixed(addr: usize, len: usize) {
    // SAFETY: MAP_FIXED over the arena's own range; the caller guarantees it is dead.
    unsafe {
        libc::mmap(
            addr as *mut libc::c_void,
            len,
            libc::PROT_NONE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED | libc::MAP_NORESERVE,
            -1,
            0,
        );
    }
}

/// The errno helpers live with the ioctls, in one place.
pub use crate::client::ioctl::{errno, set_errno};
