// SPDX-License-Identifier: GPL-2.0
//! Pinned slabs: physically contiguous, zeroed, unmovable pages with a
//! chosen cache mode.
//!
//! A slab is one high-order page allocation split into order-0 pages
//! (`split_page`), so that each page has its own reference count: `mmap`
//! inserts the pages with `vm_insert_page`, which takes a reference per
//! mapped page, so a page can never return to the allocator while a user
//! mapping still points at it, whatever order free, munmap and exit happen
//! in. Pages from the buddy allocator without `__GFP_MOVABLE` are never
//! migrated or swapped.
//!
//! Uncached and write-combining slabs also get that attribute on the
//! kernel's direct map (`set_memory_uc/wc`), so the user mapping and the
//! kernel alias agree as x86 PAT requires; the attribute is restored to
//! write-back before the pages are freed.

use core::ptr::NonNull;
use kernel::{
    bindings, ffi,
    mm::virt::VmaNew,
    page::{BorrowedPage, PAGE_SIZE},
    prelude::*,
    sync::atomic::{Atomic, Relaxed},
};

use crate::abi;

/// Bytes pinned in slabs, over all files and devices.
pub(crate) static PINNED_TOTAL: Atomic<u64> = Atomic::new(0);
/// Slabs allocated, over all files and devices.
pub(crate) static SLABS_TOTAL: Atomic<u64> = Atomic::new(0);
/// Bytes given up for good because a device did not acknowledge its reset
/// while it might still write to them (slabs and bounce buffers).
pub(crate) static QUARANTINED_TOTAL: Atomic<u64> = Atomic::new(0);

/// Frees a slab of a file whose slabs pin `pinned` bytes, and takes it off
/// that count and the module-wide ones.
pub(crate) fn free_slab(pinned: &mut u64, s: Slab) {
    *pinned -= s.size;
    PINNED_TOTAL.fetch_sub(s.size, Relaxed);
    SLABS_TOTAL.fetch_sub(1, Relaxed);
    drop(s);
}

/// Like `free_slab`, but keeps the pages for good (quarantine).
pub(crate) fn quarantine_slab(pinned: &mut u64, s: Slab) {
    *pinned -= s.size;
    PINNED_TOTAL.fetch_sub(s.size, Relaxed);
    SLABS_TOTAL.fetch_sub(1, Relaxed);
    s.quarantine();
}

// The C helpers in pktaccel_helpers.c: one-line forwarders to macros and
// static inlines bindgen cannot export, and to exported symbols missing
// from the generated bindings. The kernel structs are passed by pointer
// only, so their (opaque to Rust) layout does not matter.
#[allow(improper_ctypes)]
unsafe extern "C" {
    fn pktaccel_page_to_phys(page: *mut bindings::page) -> bindings::phys_addr_t;
    fn pktaccel_page_address(page: *mut bindings::page) -> *mut ffi::c_void;
    fn pktaccel_page_count(page: *mut bindings::page) -> ffi::c_int;
    fn pktaccel_set_memory(
        addr: *mut ffi::c_void,
        numpages: ffi::c_int,
        mode: ffi::c_int,
    ) -> ffi::c_int;
    fn pktaccel_vma_set_cache_mode(vma: *mut bindings::vm_area_struct, mode: ffi::c_int);
    fn pktaccel_reject_ratelimit() -> ffi::c_int;
    fn pktaccel_current_tgid() -> ffi::c_int;
    fn pktaccel_current_mm() -> ffi::c_ulong;
}

/// Whether a rejected-request log line may be printed now (the driver
/// prints at most 10 per 5 s; the kernel reports the suppressed count).
pub(crate) fn reject_log_allowed() -> bool {
    // SAFETY: `__ratelimit` on a static state; callable from any context.
    unsafe { pktaccel_reject_ratelimit() != 0 }
}

/// The calling process: thread group id and address-space identity (the
/// `mm_struct` address, compared only, never dereferenced). Read by C
/// helpers because `kernel::task::Task`'s field reads were wrong on the
/// rig's kernel (see pktaccel_helpers.c).
pub(crate) fn current_owner() -> (i32, usize) {
    // SAFETY: both helpers only read `current`'s own fields.
    unsafe { (pktaccel_current_tgid(), pktaccel_current_mm() as usize) }
}

/// Kernel (direct-map) address of a page.
pub(crate) fn page_kaddr(p: NonNull<bindings::page>) -> *mut u8 {
    // SAFETY: callers pass pages they own; x86-64 has no highmem, so
    // every page has a direct-map address.
    unsafe { pktaccel_page_address(p.as_ptr()) }.cast()
}

/// Physical address of a page.
pub(crate) fn page_phys(p: NonNull<bindings::page>) -> u64 {
    // SAFETY: callers pass pages they own; this only computes an address.
    unsafe { pktaccel_page_to_phys(p.as_ptr()) }
}

/// Cache-mode name for logs and debugfs.
pub(crate) fn caching_name(c: u32) -> &'static str {
    match c {
        abi::CACHE_UNCACHED => "uncached",
        abi::CACHE_WRITE_COMBINING => "write-combining",
        abi::CACHE_WRITE_BACK => "write-back",
        _ => "?",
    }
}

/// One pinned slab.
///
/// # Invariants
///
/// `first` is the first of `npages` order-0 pages (split from one
/// allocation of order `log2(npages)`) owned by this slab, physically
/// contiguous from `phys`, with direct-map attribute `caching`.
pub(crate) struct Slab {
    pub(crate) id: u32,
    pub(crate) size: u64,
    pub(crate) phys: u64,
    pub(crate) caching: u32,
    pub(crate) mmap_offset: u64,
    first: NonNull<bindings::page>,
    npages: usize,
}

// SAFETY: a slab owns plain pages; nothing ties them to a thread.
unsafe impl Send for Slab {}
// SAFETY: `&Slab` exposes only plain data and page lookups.
unsafe impl Sync for Slab {}

impl Slab {
    /// Allocates a zeroed slab of `size` bytes (a power of two, checked by
    /// the caller) with cache mode `caching`.
    pub(crate) fn new(id: u32, size: u64, caching: u32) -> Result<Self> {
        let npages = (size as usize) / PAGE_SIZE;
        let order = npages.trailing_zeros();
        let gfp = bindings::GFP_KERNEL | bindings::__GFP_ZERO | bindings::__GFP_NOWARN;
        // SAFETY: process context, valid flags; a failure returns null.
        let page = unsafe { bindings::alloc_pages(gfp, order) };
        let first = NonNull::new(page).ok_or(ENOMEM)?;
        // SAFETY: `first` is a fresh non-compound allocation of `order`;
        // splitting gives `npages` order-0 pages we own, each with a
        // reference count of one.
        unsafe { bindings::split_page(first.as_ptr(), order) };
        // SAFETY: `first` is a valid page.
        let phys = unsafe { pktaccel_page_to_phys(first.as_ptr()) };
        let mut slab = Slab {
            id,
            size,
            phys,
            caching: abi::CACHE_WRITE_BACK,
            mmap_offset: u64::from(id) * abi::SLAB_MAX_SIZE,
            first,
            npages,
        };
        if caching != abi::CACHE_WRITE_BACK {
            // SAFETY: the direct-map range of pages we own and have not
            // mapped anywhere else yet.
            let ret = unsafe { pktaccel_set_memory(slab.kaddr(), npages as i32, caching as i32) };
            if ret != 0 {
                pr_err!(
                    "cannot make a {} slab {}: error {}\n",
                    size,
                    caching_name(caching),
                    ret
                );
                // `slab.caching` is still write-back: drop just frees.
                return Err(Error::from_errno(ret));
            }
            slab.caching = caching;
        }
        Ok(slab)
    }

    fn kaddr(&self) -> *mut ffi::c_void {
        // SAFETY: `first` is a valid lowmem page (x86-64 has no highmem).
        unsafe { pktaccel_page_address(self.first.as_ptr()) }
    }

    /// The `i`th page; `i < npages`.
    fn page(&self, i: usize) -> NonNull<bindings::page> {
        assert!(i < self.npages);
        // SAFETY: the pages of one buddy allocation have consecutive
        // `struct page`s (a max-order block never spans memory sections),
        // so `first + i` is in bounds for `i < npages`.
        unsafe { self.first.add(i) }
    }

    /// Whether `[addr, addr + len)` lies inside this slab. No overflow:
    /// callers reject ranges that wrap.
    pub(crate) fn contains(&self, addr: u64, len: u64) -> bool {
        addr >= self.phys && addr + len <= self.phys + self.size
    }

    /// Whether any page is still referenced by someone else (a user
    /// mapping, or a GUP pin through one).
    pub(crate) fn busy(&self) -> bool {
        (0..self.npages).any(|i| {
            // SAFETY: valid page we own.
            let count = unsafe { pktaccel_page_count(self.page(i).as_ptr()) };
            count > 1
        })
    }

    /// Maps the first `len` bytes of the slab into `vma` with the slab's
    /// cache mode.
    pub(crate) fn map(&self, vma: &VmaNew, len: usize) -> Result {
        if len == 0 || len as u64 > self.size || len % PAGE_SIZE != 0 {
            return Err(EINVAL);
        }
        vma.set_dontcopy();
        vma.set_dontexpand();
        // SAFETY: `vma` is being set up in `f_ops->mmap` (mmap lock held for
        // writing): its `vm_page_prot` may be changed before pages are
        // inserted.
        unsafe { pktaccel_vma_set_cache_mode(vma.as_ptr(), self.caching as i32) };
        let mm = vma.set_mixedmap();
        let start = vma.start();
        for i in 0..len / PAGE_SIZE {
            // SAFETY: the page is owned by `self`, which outlives this call.
            let page = unsafe { BorrowedPage::from_raw(self.page(i)) };
            mm.vm_insert_page(start + i * PAGE_SIZE, &page)?;
        }
        Ok(())
    }
}

impl Slab {
    /// Gives the slab up without freeing its pages: the device did not
    /// acknowledge a reset and may still write to them.
    pub(crate) fn quarantine(self) {
        QUARANTINED_TOTAL.fetch_add(self.size, Relaxed);
        core::mem::forget(self);
    }
}

impl Drop for Slab {
    fn drop(&mut self) {
        if self.caching != abi::CACHE_WRITE_BACK {
            // SAFETY: the direct-map range of our own pages.
            let ret = unsafe {
                pktaccel_set_memory(
                    self.kaddr(),
                    self.npages as i32,
                    abi::CACHE_WRITE_BACK as i32,
                )
            };
            if ret != 0 {
                // Freeing pages whose attribute is not write-back would
                // hand a UC/WC page to the next user: leak them instead.
                pr_err!(
                    "cannot restore write-back on slab {:#x} (error {}): leaking {} bytes\n",
                    self.phys,
                    ret,
                    self.size
                );
                return;
            }
        }
        for i in 0..self.npages {
            // SAFETY: we own one reference to each order-0 page; pages
            // still mapped by a user keep the mapping's references and are
            // freed on munmap.
            unsafe { bindings::__free_pages(self.page(i).as_ptr(), 0) };
        }
    }
}
