//! The safe Rust API: pools, pinned buffers and boxes, and a `GlobalAlloc`.

use core::alloc::{GlobalAlloc, Layout};
use core::ops::{Deref, DerefMut};
use core::ptr::NonNull;

use crate::Error;
use crate::backend::BackendMode;
use crate::class::MIN_ALIGN;
use crate::config::Config;
use crate::global;
use crate::heap::Heap;
use crate::stats::Stats;
use crate::v2p::{Phys, V2pError};

enum Source {
    Global(&'static Heap),
    Own(Box<Heap>),
}

/// A source of pinned memory: the process heap (shared with malloc under
/// LD_PRELOAD) or a private heap with its own arena and configuration.
pub struct Pool {
    src: Source,
}

impl Pool {
    /// The process-wide heap (configured from the environment).
    pub fn global() -> Result<Self, Error> {
        global::heap()
            .map(|h| Self {
                src: Source::Global(h),
            })
            .ok_or(Error::Unavailable)
    }

    /// A private heap with its own arena: lets tests and tools use a
    /// different backend or limits than the process heap.
    pub fn new(cfg: Config) -> Result<Self, Error> {
        Ok(Self {
            src: Source::Own(Box::new(Heap::new(cfg)?)),
        })
    }

    /// The heap behind the pool.
    pub fn heap(&self) -> &Heap {
        match &self.src {
            Source::Global(h) => h,
            Source::Own(h) => h,
        }
    }

    /// Where physical addresses come from.
    pub fn mode(&self) -> BackendMode {
        self.heap().mode()
    }

    /// The device file descriptor (device backend only): requests must be
    /// submitted on the file that owns the slabs.
    pub fn device_fd(&self) -> Option<i32> {
        self.heap().arena().backend().device_fd()
    }

    /// Statistics of this pool.
    pub fn stats(&self) -> Stats {
        match &self.src {
            Source::Global(h) => global::stats().unwrap_or_else(|| h.stats()),
            Source::Own(h) => h.stats(),
        }
    }

    /// O(1) physical translation of any address.
    #[inline(always)]
    pub fn v2p(&self, p: *const u8) -> Result<Phys, V2pError> {
        match &self.src {
            Source::Global(_) => global::v2p(p),
            Source::Own(h) => h.arena().v2p(p as usize),
        }
    }

    /// Gives entirely free slabs back to the backend; returns bytes
    /// released. On the process heap this first empties the calling
    /// thread's cache.
    pub fn trim(&self) -> usize {
        match &self.src {
            Source::Global(_) => global::trim(),
            Source::Own(h) => h.trim(),
        }
    }

    /// Raw allocation (16-aligned, NULL when out of memory).
    pub fn alloc_raw(&self, size: usize) -> *mut u8 {
        match &self.src {
            Source::Global(h) => global::with_cache(|tc| h.malloc(size, tc)),
            Source::Own(h) => h.malloc(size, None),
        }
    }

    /// Raw aligned allocation; `align` must be a power of two.
    pub fn alloc_aligned_raw(&self, align: usize, size: usize) -> *mut u8 {
        match &self.src {
            Source::Global(h) => global::with_cache(|tc| h.memalign(align, size, tc)),
            Source::Own(h) => h.memalign(align, size, None),
        }
    }

    /// Raw free; invalid pointers abort.
    ///
    /// # Safety
    /// `p` must come from this pool and not be used afterwards.
    pub unsafe fn free_raw(&self, p: *mut u8) {
        if p.is_null() {
            return;
        }
        let h = self.heap();
        if !h.contains(p) {
            crate::fault::abort_ptr("Pool::free", "pointer not from this pool", p as usize);
        }
        match &self.src {
            // SAFETY: forwarded contract; p is in the arena.
            Source::Global(h) => global::with_cache(|tc| unsafe { h.free(p, "Pool::free", tc) }),
            // SAFETY: as above.
            Source::Own(h) => unsafe { h.free(p, "Pool::free", None) },
        }
    }

    /// Raw realloc (`size > 0`).
    ///
    /// # Safety
    /// As [`Pool::free_raw`].
    pub unsafe fn realloc_raw(&self, p: *mut u8, size: usize) -> *mut u8 {
        if p.is_null() {
            return self.alloc_raw(size);
        }
        let h = self.heap();
        if !h.contains(p) {
            crate::fault::abort_ptr("Pool::realloc", "pointer not from this pool", p as usize);
        }
        match &self.src {
            Source::Global(h) => global::with_cache(|tc| {
                // SAFETY: forwarded contract.
                unsafe { h.realloc(p, size.max(1), "Pool::realloc", tc) }
            }),
            // SAFETY: forwarded contract.
            Source::Own(h) => unsafe { h.realloc(p, size.max(1), "Pool::realloc", None) },
        }
    }

    /// Usable bytes at `p`.
    pub fn usable_size(&self, p: *mut u8) -> usize {
        if !self.heap().contains(p) {
            return 0;
        }
        self.heap().usable_size(p, "Pool::usable_size")
    }

    /// A zeroed pinned buffer of `len` bytes.
    pub fn alloc(&self, len: usize) -> Result<PinnedBuf<'_>, Error> {
        let p = self.alloc_raw(len.max(1));
        let ptr = NonNull::new(p).ok_or(Error::OutOfMemory(len))?;
        // SAFETY: the block has at least len writable bytes.
        unsafe { core::ptr::write_bytes(p, 0, len) };
        Ok(PinnedBuf {
            pool: self,
            ptr,
            len,
        })
    }

    /// A pinned box holding `value`.
    pub fn boxed<T>(&self, value: T) -> Result<PinnedBox<'_, T>, Error> {
        let l = Layout::new::<T>();
        let p = self
            .alloc_aligned_raw(l.align().max(MIN_ALIGN), l.size().max(1))
            .cast::<T>();
        let ptr = NonNull::new(p).ok_or(Error::OutOfMemory(l.size()))?;
        // SAFETY: fresh block, large and aligned enough for T.
        unsafe { ptr.as_ptr().write(value) };
        Ok(PinnedBox { pool: self, ptr })
    }
}

/// A byte buffer in pinned memory; the device can work on it in place.
pub struct PinnedBuf<'a> {
    pool: &'a Pool,
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: the buffer owns its bytes exclusively, like Box<[u8]>.
unsafe impl Send for PinnedBuf<'_> {}
// SAFETY: shared access only reads.
unsafe impl Sync for PinnedBuf<'_> {}

impl PinnedBuf<'_> {
    /// Physical address of the first byte and the contiguous bytes from it.
    pub fn phys(&self) -> Result<Phys, V2pError> {
        self.pool.v2p(self.ptr.as_ptr())
    }

    /// The physically contiguous pieces of the buffer, in order.
    pub fn phys_segments(&self) -> PhysSegments<'_> {
        PhysSegments {
            pool: self.pool,
            p: self.ptr.as_ptr() as usize,
            left: self.len,
        }
    }

    /// The pool it came from.
    pub fn pool(&self) -> &Pool {
        self.pool
    }
}

impl Deref for PinnedBuf<'_> {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        // SAFETY: ptr is valid for len initialised bytes we own.
        unsafe { core::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }
}

impl DerefMut for PinnedBuf<'_> {
    fn deref_mut(&mut self) -> &mut [u8] {
        // SAFETY: as above, and &mut self gives exclusivity.
        unsafe { core::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }
}

impl Drop for PinnedBuf<'_> {
    fn drop(&mut self) {
        // SAFETY: allocated from this pool, dropped once.
        unsafe { self.pool.free_raw(self.ptr.as_ptr()) }
    }
}

/// Iterator over the physically contiguous pieces of a range.
pub struct PhysSegments<'a> {
    pool: &'a Pool,
    p: usize,
    left: usize,
}

impl PhysSegments<'_> {
    /// Segments of an arbitrary range `[p, p+len)` of `pool`'s arena.
    pub fn of(pool: &Pool, p: *const u8, len: usize) -> PhysSegments<'_> {
        PhysSegments {
            pool,
            p: p as usize,
            left: len,
        }
    }
}

impl Iterator for PhysSegments<'_> {
    type Item = Result<(u64, usize), V2pError>;
    fn next(&mut self) -> Option<Self::Item> {
        if self.left == 0 {
            return None;
        }
        match self.pool.v2p(self.p as *const u8) {
            Ok(ph) => {
                let n = ph.contig.min(self.left);
                self.p += n;
                self.left -= n;
                Some(Ok((ph.addr, n)))
            }
            Err(e) => {
                self.left = 0;
                Some(Err(e))
            }
        }
    }
}

/// A value in pinned memory.
pub struct PinnedBox<'a, T> {
    pool: &'a Pool,
    ptr: NonNull<T>,
}

// SAFETY: owns its T exclusively, like Box<T>.
unsafe impl<T: Send> Send for PinnedBox<'_, T> {}
// SAFETY: as Box<T>.
unsafe impl<T: Sync> Sync for PinnedBox<'_, T> {}

impl<T> PinnedBox<'_, T> {
    /// Physical address of the value.
    pub fn phys(&self) -> Result<Phys, V2pError> {
        self.pool.v2p(self.ptr.as_ptr().cast())
    }
}

impl<T> Deref for PinnedBox<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: ptr holds an initialised T we own.
        unsafe { self.ptr.as_ref() }
    }
}

impl<T> DerefMut for PinnedBox<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: as above, exclusive through &mut self.
        unsafe { self.ptr.as_mut() }
    }
}

impl<T> Drop for PinnedBox<'_, T> {
    fn drop(&mut self) {
        // SAFETY: the T is initialised and dropped once; then its block is freed.
        unsafe {
            self.ptr.as_ptr().drop_in_place();
            self.pool.free_raw(self.ptr.as_ptr().cast());
        }
    }
}

/// `#[global_allocator]` putting a whole Rust program's heap in pinned
/// slabs (the process heap).
#[derive(Debug, Default, Clone, Copy)]
pub struct PktslabAlloc;

// SAFETY: returns blocks of at least layout.size() bytes aligned to
// layout.align() (pieces are naturally aligned, memalign handles the rest),
// or NULL; frees go back to the same heap.
unsafe impl GlobalAlloc for PktslabAlloc {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if layout.align() <= MIN_ALIGN {
            global::malloc_pinned(layout.size())
        } else {
            global::memalign_pinned(layout.align(), layout.size())
        }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if layout.align() <= MIN_ALIGN {
            global::calloc_pinned(1, layout.size())
        } else {
            let p = global::memalign_pinned(layout.align(), layout.size());
            if !p.is_null() {
                // SAFETY: p has layout.size() writable bytes.
                unsafe { core::ptr::write_bytes(p, 0, layout.size()) };
            }
            p
        }
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: GlobalAlloc contract: ptr came from this allocator with
        // this layout; an over-aligned block's class is not the size's, so
        // its free takes the full path.
        unsafe { global::free_sized(ptr, layout.size(), "dealloc") }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if layout.align() <= MIN_ALIGN {
            // SAFETY: GlobalAlloc contract; new_size > 0.
            return unsafe { global::realloc_pinned(ptr, new_size) };
        }
        let Ok(nl) = Layout::from_size_align(new_size, layout.align()) else {
            return core::ptr::null_mut();
        };
        // SAFETY: nl is a valid layout with non-zero size.
        let q = unsafe { self.alloc(nl) };
        if !q.is_null() {
            // SAFETY: both blocks live; copy the smaller size.
            unsafe {
                core::ptr::copy_nonoverlapping(ptr, q, layout.size().min(new_size));
                self.dealloc(ptr, layout);
            }
        }
        q
    }
}
