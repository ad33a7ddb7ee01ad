//! The allocator underneath (`dlsym(RTLD_NEXT, ...)`, glibc's under
//! LD_PRELOAD): pointers from before we ran, and the ordinary memory for
//! malloc() requests above PKTSLAB_PIN_MAX, counted for the statistics.

use core::ffi::c_void;
use core::sync::atomic::{AtomicUsize, Ordering};

use super::ordinary::BLOCKS;
use super::{BUSY, boot_alloc, free};
use crate::heap::Heap;

static NEXT_MALLOC: AtomicUsize = AtomicUsize::new(0);
static NEXT_FREE: AtomicUsize = AtomicUsize::new(0);
static NEXT_REALLOC: AtomicUsize = AtomicUsize::new(0);
static NEXT_USABLE: AtomicUsize = AtomicUsize::new(0);
static NEXT_CALLOC: AtomicUsize = AtomicUsize::new(0);
static NEXT_MEMALIGN: AtomicUsize = AtomicUsize::new(0);

pub(super) fn resolve(slot: &AtomicUsize, name: &core::ffi::CStr) -> usize {
    let f = slot.load(Ordering::Acquire);
    if f != 0 {
        return f;
    }
    let was = BUSY.with(|b| b.replace(true));
    // SAFETY: dlsym with a NUL-terminated name; it may call calloc, which
    // BUSY routes to the bootstrap buffer.
    let f = unsafe { libc::dlsym(libc::RTLD_NEXT, name.as_ptr()) } as usize;
    BUSY.with(|b| b.set(was));
    slot.store(f, Ordering::Release);
    f
}

pub(super) fn next_malloc(size: usize) -> *mut u8 {
    let f = resolve(&NEXT_MALLOC, c"malloc");
    if f == 0 {
        return boot_alloc(size);
    }
    // SAFETY: f is the next object's `malloc`, with the C signature.
    let f: unsafe extern "C" fn(usize) -> *mut c_void = unsafe { core::mem::transmute(f) };
    // SAFETY: calling malloc.
    unsafe { f(size) }.cast()
}

pub(super) fn next_free(p: *mut u8) {
    let f = resolve(&NEXT_FREE, c"free");
    if f == 0 {
        return;
    }
    // SAFETY: f is the next object's `free`.
    let f: unsafe extern "C" fn(*mut c_void) = unsafe { core::mem::transmute(f) };
    // SAFETY: p did not come from us, so it is the next allocator's to free.
    unsafe { f(p.cast()) }
}

pub(super) fn next_usable(p: *mut u8) -> usize {
    let f = resolve(&NEXT_USABLE, c"malloc_usable_size");
    if f == 0 {
        return 0;
    }
    // SAFETY: f is the next object's `malloc_usable_size`.
    let f: unsafe extern "C" fn(*mut c_void) -> usize = unsafe { core::mem::transmute(f) };
    // SAFETY: p is the next allocator's pointer.
    unsafe { f(p.cast()) }
}

pub(super) fn next_calloc(n: usize, size: usize) -> *mut u8 {
    let f = resolve(&NEXT_CALLOC, c"calloc");
    if f == 0 {
        return core::ptr::null_mut();
    }
    // SAFETY: f is the next object's `calloc`.
    let f: unsafe extern "C" fn(usize, usize) -> *mut c_void = unsafe { core::mem::transmute(f) };
    // SAFETY: calling calloc.
    unsafe { f(n, size) }.cast()
}

pub(super) fn next_memalign(align: usize, size: usize) -> *mut u8 {
    let f = resolve(&NEXT_MEMALIGN, c"memalign");
    if f == 0 {
        return core::ptr::null_mut();
    }
    // SAFETY: f is the next object's `memalign`.
    let f: unsafe extern "C" fn(usize, usize) -> *mut c_void = unsafe { core::mem::transmute(f) };
    // SAFETY: calling memalign with a power-of-two alignment.
    unsafe { f(align, size) }.cast()
}

/// The malloc-family size limit for pinned memory (`all`: no limit).
#[inline(always)]
pub(super) fn pin_max(h: &Heap, all: bool) -> usize {
    if all { usize::MAX } else { h.config().pin_max }
}

/// Counts a block the next allocator just handed out for us.
pub(super) fn note_ordinary(q: *mut u8) -> *mut u8 {
    if !q.is_null() {
        BLOCKS.insert(q as usize, next_usable(q), true);
    }
    q
}

/// malloc() above PKTSLAB_PIN_MAX: ordinary memory from the next
/// allocator, which no device will read.
#[cold]
pub(super) fn ordinary_malloc(size: usize) -> *mut u8 {
    note_ordinary(next_malloc(size))
}

/// Frees a block of the next allocator, uncounting it.
pub(super) fn free_ordinary(p: *mut u8) {
    BLOCKS.remove(p as usize);
    next_free(p);
}

pub(super) fn next_realloc(p: *mut u8, size: usize) -> *mut u8 {
    let f = resolve(&NEXT_REALLOC, c"realloc");
    if f == 0 {
        return core::ptr::null_mut();
    }
    // SAFETY: f is the next object's `realloc`.
    let f: unsafe extern "C" fn(*mut c_void, usize) -> *mut c_void =
        unsafe { core::mem::transmute(f) };
    // SAFETY: p is the next allocator's pointer.
    unsafe { f(p.cast(), size) }.cast()
}

/// realloc() of an arena block to a size above PKTSLAB_PIN_MAX: the data
/// moves to ordinary memory.
///
/// # Safety
/// `p` must be inside the arena; it is validated (bad pointers abort).
#[cold]
pub(super) unsafe fn realloc_to_ordinary(h: &'static Heap, p: *mut u8, size: usize) -> *mut u8 {
    let old = h.live_size(p, "realloc");
    let q = ordinary_malloc(size);
    if !q.is_null() {
        // SAFETY: both live and distinct; old is p's usable size.
        unsafe { core::ptr::copy_nonoverlapping(p, q, old.min(size)) };
        // SAFETY: p is a validated arena pointer, freed once.
        unsafe { free(p, "realloc") };
    }
    q
}
