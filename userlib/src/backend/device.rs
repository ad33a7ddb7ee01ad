//! Device backend: pinned, physically contiguous slabs from the pktaccel
//! kernel module through `/dev/pktaccel`.
//!
//! `PKTACCEL_IOC_SLAB_ALLOC` allocates one slab and returns its physical
//! base and an mmap offset; mmap() of that offset maps exactly the slab,
//! which we place at the arena slot with MAP_FIXED.

use core::ffi::CStr;
use core::sync::atomic::{AtomicU64, Ordering};

use pktaccel_abi::IocInfo;

use super::{BackendError, errno, reserve_fixed};
use crate::class::PAGE_SIZE;
use crate::client::ioctl;

/// The smallest slab the driver hands out.
pub const MIN_SLAB: usize = pktaccel_abi::SLAB_MIN_SIZE as usize;

/// An open `/dev/pktaccel`.
pub struct DeviceBackend {
    fd: i32,
    path: &'static CStr,
    caching: u32,
    pinned: AtomicU64,
}

impl DeviceBackend {
    /// Opens the device node; the error is an errno.
    pub fn open(path: &'static CStr, caching: u32) -> Result<Self, i32> {
        // SAFETY: path is NUL-terminated.
        let fd = unsafe { libc::open(path.as_ptr(), libc::O_RDWR | libc::O_CLOEXEC) };
        if fd < 0 {
            return Err(errno());
        }
        Ok(Self {
            fd,
            path,
            caching,
            pinned: AtomicU64::new(0),
        })
    }

    /// The descriptor: submits must use the file that owns the slabs.
    pub fn fd(&self) -> i32 {
        self.fd
    }

    /// In a forked child: the descriptor still names the parent's open
    /// file, whose slabs the parent owns. Open the device afresh under the
    /// same descriptor number so the child's slabs are its own, and forget
    /// the parent's (the arena has already copied them to private memory).
    pub fn reopen_in_child(&self) {
        // SAFETY: path is NUL-terminated; dup2 onto our own descriptor
        // number atomically replaces the inherited open file in this process.
        unsafe {
            let fd = libc::open(self.path.as_ptr(), libc::O_RDWR | libc::O_CLOEXEC);
            if fd >= 0 {
                libc::dup3(fd, self.fd, libc::O_CLOEXEC);
                libc::close(fd);
            }
        }
        // The new file holds nothing yet.
        self.pinned.store(0, Ordering::Relaxed);
    }

    /// Stops counting `len` bytes (see [`super::Backend::forget`]).
    pub fn forget(&self, len: usize) {
        let _ = self
            .pinned
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| {
                Some(v.saturating_sub(len as u64))
            });
    }

    /// Bytes pinned through this file.
    pub fn pinned(&self) -> u64 {
        self.pinned.load(Ordering::Relaxed)
    }

    /// The driver's info block.
    pub fn info(&self) -> Result<IocInfo, i32> {
        ioctl::info(self.fd)
    }

    /// See [`super::Backend::map_slab`]: one driver slab of
    /// `pages.len()` pages at `addr`; `pages` gets their physical addresses.
    ///
    /// # Safety
    /// As there.
    pub unsafe fn map_slab(&self, addr: usize, pages: &mut [u64]) -> Result<u32, BackendError> {
        let len = pages.len() * PAGE_SIZE;
        let req = ioctl::slab_alloc(self.fd, len as u64, self.caching).map_err(|e| match e {
            libc::ENOMEM | libc::ENOSPC | libc::EDQUOT => BackendError::OutOfPinned,
            _ => BackendError::Os(e),
        })?;
        // SAFETY: MAP_FIXED over the caller's reservation; the driver maps
        // exactly this slab at mmap_offset.
        let p = unsafe {
            libc::mmap(
                addr as *mut libc::c_void,
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_FIXED,
                self.fd,
                req.mmap_offset as libc::off_t,
            )
        };
        if p == libc::MAP_FAILED {
            let e = errno();
            // Returns the slab we just got; a failure leaves it to close().
            let _ = ioctl::slab_free(self.fd, req.id);
            // SAFETY: the failed MAP_FIXED may have removed the reservation; restore it.
            unsafe { reserve_fixed(addr, len) };
            return Err(BackendError::Os(e));
        }
        for (i, out) in pages.iter_mut().enumerate() {
            *out = req.phys + (i * PAGE_SIZE) as u64;
        }
        self.pinned.fetch_add(len as u64, Ordering::Relaxed);
        Ok(req.id)
    }

    /// See [`super::Backend::unmap_slab`].
    ///
    /// # Safety
    /// As there.
    pub unsafe fn unmap_slab(&self, addr: usize, id: u32, len: usize) {
        // SAFETY: the caller guarantees the slab is dead; this drops our mapping.
        unsafe { reserve_fixed(addr, len) };
        // A failure leaves the slab to close(), which frees them all.
        let _ = ioctl::slab_free(self.fd, id);
        self.forget(len);
    }
}

impl Drop for DeviceBackend {
    fn drop(&mut self) {
        // Closing the file releases every slab it still holds.
        // SAFETY: we own the descriptor.
        unsafe { libc::close(self.fd) };
    }
}
