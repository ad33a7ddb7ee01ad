//! Host backend: anonymous memory, locked when a physical address is first
//! asked for, with physical addresses from /proc/self/pagemap when the
//! kernel shows them (root), else synthetic.
//!
//! Host pages are not physically contiguous; the physical addresses are
//! reported page by page so v2p tells the truth about contiguity. The
//! synthetic addresses are consistent (the same page always has the same
//! address) and contiguous in 16 KiB chunks with gaps between, so code that
//! splits at discontinuities is exercised on any host.

use core::sync::atomic::{AtomicU64, Ordering};

use super::{BackendError, BackendMode, SlabPhys, reserve_fixed};
use crate::class::{PAGE_SHIFT, PAGE_SIZE, PAGES_PER_SLAB, SLAB_SIZE};
use crate::v2p::PHYS_LAZY;

/// Base of the synthetic physical address space (1 TiB: far from RAM).
pub const SYNTHETIC_BASE: u64 = 1 << 40;
/// Pages per synthetic contiguous chunk.
pub const SYNTHETIC_CHUNK_PAGES: usize = 4;

/// Anonymous-memory slab source.
pub struct HostBackend {
    /// /proc/self/pagemap of one process: [`Pagemap::pack`] of the pid
    /// that probed it and a descriptor or [`NO_PAGEMAP`]; [`UNPROBED`]
    /// until a physical address or the mode is first asked for.
    pagemap: AtomicU64,
    /// Synthetic addresses were asked for: pagemap is never read.
    synthetic_only: bool,
    max_pinned: u64,
    pinned: AtomicU64,
    dontfork: bool,
}

/// `pagemap` before the first probe (no process has pid 0).
const UNPROBED: u64 = 0;
/// The descriptor part when PFNs are hidden (not root) or synthetic mode
/// was asked for.
const NO_PAGEMAP: i32 = -1;

/// The `pagemap` word: which process's pagemap, and its descriptor.
/// One word so a probe installs both at once.
struct Pagemap;

impl Pagemap {
    const fn pack(pid: i32, fd: i32) -> u64 {
        ((pid as u32 as u64) << 32) | fd as u32 as u64
    }
    const fn pid(v: u64) -> i32 {
        (v >> 32) as u32 as i32
    }
    const fn fd(v: u64) -> i32 {
        v as u32 as i32
    }
}
/// Slabs at least this long are populated when mapped (see map_slab).
const POPULATE_FROM: usize = 256 * 1024;
/// madvise(2) advice (Linux 5.14): populate writable, as if written.
const MADV_POPULATE_WRITE: i32 = 23;

const PFN_MASK: u64 = (1 << 55) - 1;
const PRESENT: u64 = 1 << 63;

/// Synthetic physical address of page `page` of arena slot `slot`.
pub const fn synthetic_phys(slot: usize, page: usize) -> u64 {
    let chunk = page / SYNTHETIC_CHUNK_PAGES;
    let within = page % SYNTHETIC_CHUNK_PAGES;
    SYNTHETIC_BASE
        + (slot as u64) * 2 * SLAB_SIZE as u64
        + (chunk as u64) * 2 * (SYNTHETIC_CHUNK_PAGES * PAGE_SIZE) as u64
        + (within * PAGE_SIZE) as u64
}

/// Reads the physical address of the page at `addr` from pagemap; 0 when
/// the kernel hides PFNs or the page is absent.
fn pagemap_phys(fd: i32, addr: usize) -> u64 {
    let mut e = 0u64;
    // SAFETY: reads 8 bytes into a local u64.
    let n = unsafe {
        libc::pread(
            fd,
            (&raw mut e).cast(),
            8,
            ((addr >> PAGE_SHIFT) * 8) as libc::off_t,
        )
    };
    if n == 8 && e & PRESENT != 0 {
        (e & PFN_MASK) << PAGE_SHIFT
    } else {
        0
    }
}

/// Opens this process's /proc/self/pagemap if it shows real PFNs (not
/// without CAP_SYS_ADMIN); [`NO_PAGEMAP`] otherwise.
fn probe_pagemap() -> i32 {
    // SAFETY: a constant NUL-terminated path.
    let fd = unsafe {
        libc::open(
            c"/proc/self/pagemap".as_ptr(),
            libc::O_RDONLY | libc::O_CLOEXEC,
        )
    };
    // Probe with a page of our own stack, which is present.
    let probe = 0u64;
    let addr = core::hint::black_box(&raw const probe) as usize;
    if fd >= 0 && pagemap_phys(fd, addr) == 0 {
        // SAFETY: fd was opened above and is not shared.
        unsafe { libc::close(fd) };
        return NO_PAGEMAP;
    }
    fd.max(NO_PAGEMAP)
}

impl HostBackend {
    /// A host backend; /proc/self/pagemap is opened on first need (see
    /// [`HostBackend::pagemap_fd`]), not here: a short-lived program that
    /// never asks for a physical address never pays for it.
    pub fn new(max_pinned: u64, force_synthetic: bool, dontfork: bool) -> Self {
        Self {
            pagemap: AtomicU64::new(UNPROBED),
            synthetic_only: force_synthetic,
            max_pinned,
            pinned: AtomicU64::new(0),
            dontfork,
        }
    }

    /// The pagemap descriptor, or [`NO_PAGEMAP`]: opens /proc/self/pagemap
    /// on first use and checks that it shows real PFNs (it shows zeros
    /// without CAP_SYS_ADMIN); otherwise synthetic mode.
    ///
    /// The descriptor belongs to the process that opened it: a forked
    /// child inherits its parent's, which reads the parent's page table
    /// (the parent's frames for pages the child has since written, copy on
    /// write), so a process that did not probe itself probes again.
    fn pagemap_fd(&self) -> i32 {
        if self.synthetic_only {
            return NO_PAGEMAP;
        }
        // SAFETY: getpid has no preconditions.
        let pid = unsafe { libc::getpid() };
        let cur = self.pagemap.load(Ordering::Acquire);
        if cur != UNPROBED && Pagemap::pid(cur) == pid {
            return Pagemap::fd(cur);
        }
        let fd = probe_pagemap();
        match self.pagemap.compare_exchange(
            cur,
            Pagemap::pack(pid, fd),
            Ordering::AcqRel,
            Ordering::Acquire,
        ) {
            Ok(_) => {
                if cur != UNPROBED && Pagemap::fd(cur) >= 0 {
                    // SAFETY: our copy of the parent's descriptor, which
                    // nothing uses any more (the word names ours now);
                    // the parent's own copy stays open.
                    unsafe { libc::close(Pagemap::fd(cur)) };
                }
                fd
            }
            Err(theirs) => {
                if fd >= 0 {
                    // SAFETY: another thread's probe won; ours is unused.
                    unsafe { libc::close(fd) };
                }
                Pagemap::fd(theirs)
            }
        }
    }

    /// Whether slabs are MADV_DONTFORK (like the device's).
    pub fn dontfork(&self) -> bool {
        self.dontfork
    }

    /// Stops counting `len` bytes (see [`super::Backend::forget`]).
    pub fn forget(&self, len: usize) {
        let _ = self
            .pinned
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| {
                Some(v.saturating_sub(len as u64))
            });
    }

    /// Which kind of physical addresses this backend reports.
    pub fn mode(&self) -> BackendMode {
        if self.pagemap_fd() >= 0 {
            BackendMode::HostPagemap
        } else {
            BackendMode::HostSynthetic
        }
    }

    /// Bytes pinned now.
    pub fn pinned(&self) -> u64 {
        self.pinned.load(Ordering::Relaxed)
    }

    /// See [`super::Backend::map_slab`]. The memory is mapped, not yet
    /// populated or locked: a physical address means something only once
    /// somebody asks for it, so every page entry says [`PHYS_LAZY`] and
    /// [`HostBackend::resolve`] pins the slab on the first v2p. A program
    /// that never asks pays one mmap per slab, like glibc's heap growth,
    /// and only the pages it touches; none for a small slab in `premapped`
    /// memory (already read-write and untouched).
    ///
    /// # Safety
    /// As there.
    pub unsafe fn map_slab(
        &self,
        addr: usize,
        len: usize,
        phys: &mut SlabPhys,
        premapped: bool,
    ) -> Result<(), BackendError> {
        let size = len as u64;
        let before = self.pinned.fetch_add(size, Ordering::Relaxed);
        if before.saturating_add(size) > self.max_pinned {
            self.pinned.fetch_sub(size, Ordering::Relaxed);
            return Err(BackendError::OutOfPinned);
        }
        // A class's third slab on (256 KiB and up) or a large run is busy
        // memory: populate it in one go, as cheaper than a fault per page.
        // A class's first, small slabs stay lazy: a short program touches
        // a page or two of each.
        let populate = if len >= POPULATE_FROM {
            libc::MAP_POPULATE
        } else {
            0
        };
        // Premapped memory is already read-write and zero; a slab to
        // populate is mapped anew with MAP_POPULATE all the same.
        let need_map = populate != 0 || !premapped;
        if need_map
            // SAFETY: the caller's contract: a dead part of the reservation.
            && let Err(e) = unsafe { super::map_anonymous(addr, len, populate) }
        {
            self.pinned.fetch_sub(size, Ordering::Relaxed);
            return Err(match e {
                BackendError::Os(libc::ENOMEM) => BackendError::OutOfPinned,
                e => e,
            });
        }
        if self.dontfork {
            // SAFETY: advice on the range just mapped.
            unsafe { libc::madvise(addr as *mut libc::c_void, len, libc::MADV_DONTFORK) };
        }
        phys.iter_mut()
            .take(len / PAGE_SIZE)
            .for_each(|e| *e = PHYS_LAZY);
        Ok(())
    }

    /// Pins the slab at `addr` (arena slot `slot`, `len` bytes, mapped by
    /// [`HostBackend::map_slab`]) and fills `phys` with its pages' physical
    /// addresses: mlock() populates and locks, so the addresses stay put
    /// while a device may use them. Without the privilege (RLIMIT_MEMLOCK)
    /// the pages are populated for writing but stay unlocked, which a test
    /// rig on the host can live with.
    pub fn resolve(&self, addr: usize, slot: usize, len: usize, phys: &mut SlabPhys) {
        // SAFETY: mlock and madvise on a range of our own mapping; neither
        // changes its contents.
        unsafe {
            if libc::mlock(addr as *const libc::c_void, len) != 0 {
                libc::madvise(addr as *mut libc::c_void, len, MADV_POPULATE_WRITE);
            }
        }
        let pages = len / PAGE_SIZE;
        let fd = self.pagemap_fd();
        let mut raw = [0u64; PAGES_PER_SLAB];
        let full = fd >= 0 && {
            // SAFETY: reads `pages` (<= PAGES_PER_SLAB) u64 entries into `raw`.
            let n = unsafe {
                libc::pread(
                    fd,
                    raw.as_mut_ptr().cast(),
                    pages * 8,
                    ((addr >> PAGE_SHIFT) * 8) as libc::off_t,
                )
            };
            n == (pages * 8) as isize
        };
        for (i, out) in phys.iter_mut().take(pages).enumerate() {
            let e = raw[i];
            *out = if full && e & PRESENT != 0 && e & PFN_MASK != 0 {
                (e & PFN_MASK) << PAGE_SHIFT
            } else {
                // Synthetic mode, or a page the kernel did not show: the
                // synthetic address keeps the entry consistent.
                synthetic_phys(slot, i)
            };
        }
    }

    /// See [`super::Backend::unmap_slab`].
    ///
    /// # Safety
    /// As there.
    pub unsafe fn unmap_slab(&self, addr: usize, len: usize) {
        // SAFETY: forwarded caller contract.
        unsafe { reserve_fixed(addr, len) };
        self.forget(len);
    }
}

impl Drop for HostBackend {
    fn drop(&mut self) {
        let fd = Pagemap::fd(*self.pagemap.get_mut());
        if *self.pagemap.get_mut() != UNPROBED && fd >= 0 {
            // SAFETY: we own the descriptor.
            unsafe { libc::close(fd) };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn synthetic_addresses_are_consistent_and_chunked() {
        assert_eq!(synthetic_phys(3, 5), synthetic_phys(3, 5));
        assert_eq!(
            synthetic_phys(0, 1),
            synthetic_phys(0, 0) + PAGE_SIZE as u64
        );
        assert_ne!(
            synthetic_phys(0, 4),
            synthetic_phys(0, 3) + PAGE_SIZE as u64
        );
        assert!(synthetic_phys(1, 0) > synthetic_phys(0, PAGES_PER_SLAB - 1));
    }
}
