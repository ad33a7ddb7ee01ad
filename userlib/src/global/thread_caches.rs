//! Where each thread's cache lives and how the heap finds them all: the
//! cache itself in initial-exec TLS, activated on a thread's first
//! allocation, listed in a registry (for statistics and fork) and flushed
//! back to the shared lists by a pthread key destructor at thread exit.

use core::cell::UnsafeCell;
use core::ffi::c_void;

use super::{TC_KEY, heap_if_ready};
use crate::class::MAX_SMALL;
use crate::lock::SpinLock;
use crate::tcache::{TC_ACTIVE, TC_DEAD, TC_SETUP, TC_UNINIT, ThreadCache};

// The thread cache lives in ELF TLS. On x86_64 Linux it is a `.tbss`
// symbol reached with the initial-exec model (`%fs:0` plus a GOT-held
// offset): inside the preloaded shared library, Rust's `thread_local!`
// would use the general-dynamic model, a `__tls_get_addr` call on every
// malloc and free. An all-zero ThreadCache is exactly `ThreadCache::new()`.
#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
core::arch::global_asm!(
    ".pushsection .tbss,\"awT\",@nobits",
    ".p2align 6",
    ".globl pktslab_tls_cache",
    ".hidden pktslab_tls_cache",
    "pktslab_tls_cache:",
    ".zero {size}",
    ".popsection",
    size = const core::mem::size_of::<ThreadCache>(),
);

/// This thread's cache.
#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
#[inline(always)]
pub(super) fn tc_here() -> *mut ThreadCache {
    let p: usize;
    // SAFETY: reads the thread pointer (%fs:0 holds its own address on
    // x86_64 Linux) and adds the TLS offset of our .tbss symbol; no memory
    // is written.
    unsafe {
        core::arch::asm!(
            "mov {p}, qword ptr fs:0",
            "add {p}, qword ptr [rip + pktslab_tls_cache@GOTTPOFF]",
            p = out(reg) p,
            options(nostack, readonly, pure),
        );
    }
    p as *mut ThreadCache
}

#[cfg(not(all(target_arch = "x86_64", target_os = "linux")))]
thread_local! {
    static TC: UnsafeCell<ThreadCache> = const { UnsafeCell::new(ThreadCache::new()) };
}

/// This thread's cache.
#[cfg(not(all(target_arch = "x86_64", target_os = "linux")))]
#[inline(always)]
pub(super) fn tc_here() -> *mut ThreadCache {
    TC.with(UnsafeCell::get)
}

pub(super) struct Registry {
    pub(super) lock: SpinLock,
    pub(super) head: UnsafeCell<*mut ThreadCache>,
}
// SAFETY: `head` and the links of listed caches are only used under `lock`.
unsafe impl Sync for Registry {}
pub(super) static REGISTRY: Registry = Registry {
    lock: SpinLock::new(),
    head: UnsafeCell::new(core::ptr::null_mut()),
};

/// The calling thread's cache, or null when it cannot be used (being set
/// up, or the thread is exiting).
#[inline(always)]
pub(super) fn cache_ptr() -> *mut ThreadCache {
    let tc = tc_here();
    // SAFETY: tc is this thread's cache; only this thread touches its state.
    let state = unsafe { (*tc).state };
    if state == TC_ACTIVE {
        return tc;
    }
    if state == TC_UNINIT {
        activate(tc);
        // SAFETY: as above.
        if unsafe { (*tc).state } == TC_ACTIVE {
            return tc;
        }
    }
    core::ptr::null_mut()
}

/// Runs `f` with the calling thread's cache when it can be used.
#[inline(always)]
pub fn with_cache<R>(f: impl FnOnce(Option<&mut ThreadCache>) -> R) -> R {
    let tc = cache_ptr();
    // SAFETY: a non-null tc is this thread's live cache; the &mut lives only
    // for f, which never re-enters malloc on this thread while holding it.
    f(unsafe { tc.as_mut() })
}

#[cold]
fn activate(tc: *mut ThreadCache) {
    // SAFETY: tc is this thread's cache; raw writes, no reference is held
    // across pthread_setspecific (which may call calloc and re-enter).
    unsafe { (*tc).state = TC_SETUP };
    // SAFETY: the key was created in init(); the value is this thread's cache.
    let r = unsafe { libc::pthread_setspecific(*TC_KEY.0.get(), tc.cast()) };
    if r != 0 {
        // SAFETY: as above.
        unsafe { (*tc).state = TC_DEAD };
        return;
    }
    let _g = REGISTRY.lock.lock();
    // SAFETY: registry lock held; tc is live until its thread exits, when
    // thread_exit unlinks it under the same lock.
    unsafe {
        let head = *REGISTRY.head.get();
        (*tc).next = head;
        (*tc).prev = core::ptr::null_mut();
        if !head.is_null() {
            (*head).prev = tc;
        }
        *REGISTRY.head.get() = tc;
        (*tc).state = TC_ACTIVE;
        if let Some(h) = heap_if_ready() {
            (*tc).enable_fast(h, h.config().pin_max.min(MAX_SMALL));
        }
    }
}

pub(super) extern "C" fn thread_exit(v: *mut c_void) {
    let tc = v.cast::<ThreadCache>();
    let Some(heap) = heap_if_ready() else { return };
    // SAFETY: v is the exiting thread's own cache (set in activate); its TLS
    // block is still alive while key destructors run.
    unsafe {
        (*tc).state = TC_DEAD;
        (*tc).disable_fast();
        (*tc).flush(heap);
    }
    let _g = REGISTRY.lock.lock();
    // SAFETY: registry lock held; unlinks tc from the list.
    unsafe {
        let (n, p) = ((*tc).next, (*tc).prev);
        if !n.is_null() {
            (*n).prev = p;
        }
        if p.is_null() {
            *REGISTRY.head.get() = n;
        } else {
            (*p).next = n;
        }
    }
}
