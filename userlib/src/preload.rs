//! The libc allocator ABI, exported when built with `--features preload`
//! so that `LD_PRELOAD=libpktslab.so` puts unmodified programs' heaps in
//! pinned slabs.
//!
//! Inside this library Rust's own `std` allocates through the system
//! allocator, i.e. through these very symbols. That is safe because the
//! allocator's code paths never allocate through `std`: metadata lives in
//! mmap()ed tables, thread caches in `const` TLS, messages in stack buffers.

use core::ffi::{c_int, c_void};

use crate::backend::set_errno;
use crate::global;

fn page_size() -> usize {
    // SAFETY: sysconf has no preconditions.
    let p = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if p > 0 { p as usize } else { 4096 }
}

/// malloc(3).
#[unsafe(no_mangle)]
pub extern "C" fn malloc(size: usize) -> *mut c_void {
    global::malloc(size).cast()
}

/// free(3).
///
/// # Safety
/// C contract: `p` is NULL or from this allocator family.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn free(p: *mut c_void) {
    // SAFETY: forwarded C contract.
    unsafe { global::free(p.cast(), "free") }
}

/// cfree(3), an old alias some programs still call.
///
/// # Safety
/// As [`free`].
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cfree(p: *mut c_void) {
    // SAFETY: forwarded C contract.
    unsafe { global::free(p.cast(), "free") }
}

/// calloc(3).
#[unsafe(no_mangle)]
pub extern "C" fn calloc(n: usize, size: usize) -> *mut c_void {
    global::calloc(n, size).cast()
}

/// realloc(3).
///
/// # Safety
/// As [`free`].
#[unsafe(no_mangle)]
pub unsafe extern "C" fn realloc(p: *mut c_void, size: usize) -> *mut c_void {
    // SAFETY: forwarded C contract.
    unsafe { global::realloc(p.cast(), size) }.cast()
}

/// reallocarray(3).
///
/// # Safety
/// As [`free`].
#[unsafe(no_mangle)]
pub unsafe extern "C" fn reallocarray(p: *mut c_void, n: usize, size: usize) -> *mut c_void {
    // SAFETY: forwarded C contract.
    unsafe { global::reallocarray(p.cast(), n, size) }.cast()
}

/// posix_memalign(3): EINVAL unless `align` is a power-of-two multiple of
/// `sizeof(void *)`.
///
/// # Safety
/// `out` must be writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn posix_memalign(out: *mut *mut c_void, align: usize, size: usize) -> c_int {
    if !align.is_power_of_two() || !align.is_multiple_of(size_of::<*mut c_void>()) {
        return libc::EINVAL;
    }
    let p = global::memalign(align, size);
    if p.is_null() {
        return libc::ENOMEM;
    }
    // SAFETY: C contract: out is writable.
    unsafe { *out = p.cast() };
    0
}

/// aligned_alloc(3): EINVAL for an alignment that is not a power of two.
#[unsafe(no_mangle)]
pub extern "C" fn aligned_alloc(align: usize, size: usize) -> *mut c_void {
    if !align.is_power_of_two() {
        set_errno(libc::EINVAL);
        return core::ptr::null_mut();
    }
    global::memalign(align, size).cast()
}

/// memalign(3): like glibc, rounds a non-power-of-two alignment up.
#[unsafe(no_mangle)]
pub extern "C" fn memalign(align: usize, size: usize) -> *mut c_void {
    match align.checked_next_power_of_two() {
        Some(a) => global::memalign(a, size).cast(),
        None => {
            set_errno(libc::EINVAL);
            core::ptr::null_mut()
        }
    }
}

/// valloc(3): page-aligned.
#[unsafe(no_mangle)]
pub extern "C" fn valloc(size: usize) -> *mut c_void {
    global::memalign(page_size(), size).cast()
}

/// pvalloc(3): page-aligned, size rounded up to pages.
#[unsafe(no_mangle)]
pub extern "C" fn pvalloc(size: usize) -> *mut c_void {
    let ps = page_size();
    match size.max(1).checked_next_multiple_of(ps) {
        Some(s) => global::memalign(ps, s).cast(),
        None => {
            set_errno(libc::ENOMEM);
            core::ptr::null_mut()
        }
    }
}

/// malloc_trim(3): returns entirely free slabs; 1 if memory was released.
#[unsafe(no_mangle)]
pub extern "C" fn malloc_trim(_pad: usize) -> c_int {
    c_int::from(global::trim() > 0)
}

/// malloc_usable_size(3).
///
/// # Safety
/// As [`free`].
#[unsafe(no_mangle)]
pub unsafe extern "C" fn malloc_usable_size(p: *mut c_void) -> usize {
    // SAFETY: forwarded C contract.
    unsafe { global::usable_size(p.cast()) }
}
