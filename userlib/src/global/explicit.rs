//! The explicit API's entry points on the process heap (`pktslab_alloc`
//! and friends: arena memory at any size, or an abort), trim, and the
//! thread-cache probes the tests use.

use super::{cache_ptr, heap, heap_if_ready, tc_here, with_cache};
use crate::backend::set_errno;
use crate::fault::abort_ptr;
use crate::tcache::TC_ACTIVE;

/// Explicit API: allocation that must come from the arena.
pub fn arena_alloc(size: usize) -> *mut u8 {
    match heap() {
        Some(h) => with_cache(|tc| h.malloc(size, tc)),
        None => {
            set_errno(libc::ENOMEM);
            core::ptr::null_mut()
        }
    }
}

/// Explicit API: free of an arena pointer; anything else aborts.
///
/// # Safety
/// `p` must be NULL or from [`arena_alloc`] / [`malloc`].
pub unsafe fn arena_free(p: *mut u8, call: &str) {
    if p.is_null() {
        return;
    }
    match heap_if_ready() {
        // SAFETY: in the arena; validated inside.
        Some(h) if h.contains(p) => with_cache(|tc| unsafe { h.free(p, call, tc) }),
        _ => abort_ptr(call, "pointer not from the pktslab arena", p as usize),
    }
}

/// Explicit API: realloc within the arena.
///
/// # Safety
/// As [`arena_free`].
pub unsafe fn arena_realloc(p: *mut u8, size: usize, call: &str) -> *mut u8 {
    if p.is_null() {
        return arena_alloc(size);
    }
    match heap_if_ready() {
        Some(h) if h.contains(p) => {
            if size == 0 {
                // SAFETY: in the arena; validated inside.
                with_cache(|tc| unsafe { h.free(p, call, tc) });
                return core::ptr::null_mut();
            }
            // SAFETY: in the arena; validated inside.
            with_cache(|tc| unsafe { h.realloc(p, size, call, tc) })
        }
        _ => abort_ptr(call, "pointer not from the pktslab arena", p as usize),
    }
}

/// Returns the calling thread's cache to the shared lists, then gives
/// entirely free small slabs back to the backend. Returns bytes released.
pub fn trim() -> usize {
    let Some(h) = heap_if_ready() else { return 0 };
    let tc = cache_ptr();
    let mut released = 0;
    if !tc.is_null() {
        // SAFETY: this thread's own live cache, not otherwise borrowed here.
        released = unsafe { (*tc).flush(h) };
    }
    released + h.trim()
}

/// Pieces cached by the calling thread for class `c` (tests).
pub fn cached_here(c: usize) -> usize {
    // SAFETY: reading this thread's own cache.
    unsafe { (*tc_here()).cached(c) }
}

/// Whether the calling thread's cache is active (tests).
pub fn cache_active_here() -> bool {
    // SAFETY: reading this thread's own cache state.
    unsafe { (*tc_here()).state == TC_ACTIVE }
}
