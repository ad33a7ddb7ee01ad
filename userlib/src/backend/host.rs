//! Host backend: anonymous memory, locked, with physical addresses from
//! /proc/self/pagemap when the kernel shows them (root), else synthetic.
//!
//! Host pages are not physically contiguous; the physical addresses are
//! reported page by page so v2p tells the truth about contiguity. The
//! synthetic addresses are consistent (the same page always has the same
//! address) and contiguous in 16 KiB chunks with gaps between, so code that
//! splits at discontinuities is exercised on any host.

use core::sync::atomic::{AtomicU64, Ordering};

use super::{BackendError, BackendMode, SlabPhys, errno, reserve_fixed};
use crate::class::{PAGE_SHIFT, PAGE_SIZE, PAGES_PER_SLAB, SLAB_SIZE};

/// Base of the synthetic physical address space (1 TiB: far from RAM).
pub const SYNTHETIC_BASE: u64 = 1 << 40;
/// Pages per synthetic contiguous chunk.
pub const SYNTHETIC_CHUNK_PAGES: usize = 4;

/// Anonymous-memory slab source.
pub struct HostBackend {
    pagemap_fd: i32,
    max_pinned: u64,
    pinned: AtomicU64,
    dontfork: bool,
}

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

impl HostBackend {
    /// Opens /proc/self/pagemap and checks that it shows real PFNs (it
    /// shows zeros without CAP_SYS_ADMIN); otherwise synthetic mode.
    pub fn new(max_pinned: u64, force_synthetic: bool, dontfork: bool) -> Self {
        let mut fd = -1;
        if !force_synthetic {
            // SAFETY: a constant NUL-terminated path.
            fd = unsafe {
                libc::open(
                    c"/proc/self/pagemap".as_ptr(),
                    libc::O_RDONLY | libc::O_CLOEXEC,
                )
            };
            if fd >= 0 {
                // Probe with a page of our own stack, which is present.
                let probe = 0u64;
                let addr = core::hint::black_box(&raw const probe) as usize;
                if pagemap_phys(fd, addr) == 0 {
                    // SAFETY: fd was opened above and is not shared.
                    unsafe { libc::close(fd) };
                    fd = -1;
                }
            }
        }
        Self {
            pagemap_fd: fd,
            max_pinned,
            pinned: AtomicU64::new(0),
            dontfork,
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
        if self.pagemap_fd >= 0 {
            BackendMode::HostPagemap
        } else {
            BackendMode::HostSynthetic
        }
    }

    /// Bytes pinned now.
    pub fn pinned(&self) -> u64 {
        self.pinned.load(Ordering::Relaxed)
    }

    /// See [`super::Backend::map_slab`].
    ///
    /// # Safety
    /// As there.
    pub unsafe fn map_slab(
        &self,
        addr: usize,
        slot: usize,
        len: usize,
        phys: &mut SlabPhys,
    ) -> Result<(), BackendError> {
        let size = len as u64;
        let before = self.pinned.fetch_add(size, Ordering::Relaxed);
        if before.saturating_add(size) > self.max_pinned {
            self.pinned.fetch_sub(size, Ordering::Relaxed);
            return Err(BackendError::OutOfPinned);
        }
        // One call maps, populates and locks (pinned: physical addresses
        // must not change under the device). Without the privilege
        // (RLIMIT_MEMLOCK) the lock fails; the pages then stay populated
        // but unlocked, which a test rig on the host can live with.
        let mut p = libc::MAP_FAILED;
        for lock in [libc::MAP_LOCKED, 0] {
            // SAFETY: MAP_FIXED over the caller's reservation range.
            p = unsafe {
                libc::mmap(
                    addr as *mut libc::c_void,
                    len,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_PRIVATE
                        | libc::MAP_ANONYMOUS
                        | libc::MAP_FIXED
                        | libc::MAP_POPULATE
                        | lock,
                    -1,
                    0,
                )
            };
            if p != libc::MAP_FAILED || !matches!(errno(), libc::EAGAIN | libc::EPERM) {
                break;
            }
        }
        if p == libc::MAP_FAILED {
            let e = errno();
            self.pinned.fetch_sub(size, Ordering::Relaxed);
            return Err(if e == libc::ENOMEM {
                BackendError::OutOfPinned
            } else {
                BackendError::Os(e)
            });
        }
        if self.dontfork {
            // SAFETY: advice on the range just mapped.
            unsafe { libc::madvise(addr as *mut libc::c_void, len, libc::MADV_DONTFORK) };
        }
        let pages = len / PAGE_SIZE;
        if self.pagemap_fd >= 0 {
            let mut raw = [0u64; PAGES_PER_SLAB];
            // SAFETY: reads `pages` (<= PAGES_PER_SLAB) u64 entries into `raw`.
            let n = unsafe {
                libc::pread(
                    self.pagemap_fd,
                    raw.as_mut_ptr().cast(),
                    pages * 8,
                    ((addr >> PAGE_SHIFT) * 8) as libc::off_t,
                )
            };
            let full = n == (pages * 8) as isize;
            for (i, out) in phys.iter_mut().take(pages).enumerate() {
                let e = raw[i];
                *out = if full && e & PRESENT != 0 && e & PFN_MASK != 0 {
                    (e & PFN_MASK) << PAGE_SHIFT
                } else {
                    // A page the kernel did not show: fall back to the
                    // synthetic address so the entry is still consistent.
                    synthetic_phys(slot, i)
                };
            }
        } else {
            for (i, out) in phys.iter_mut().take(pages).enumerate() {
                *out = synthetic_phys(slot, i);
            }
        }
        Ok(())
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
        if self.pagemap_fd >= 0 {
            // SAFETY: we own the descriptor.
            unsafe { libc::close(self.pagemap_fd) };
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
