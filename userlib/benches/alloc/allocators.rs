//! The allocators the benchmark compares, behind one trait, each through
//! one of two APIs so that a row compares like with like:
//!
//! - the C API ([`Pktslab`], [`Glibc`], [`JeC`], [`MiC`]): `malloc`/`free`
//!   without a size, as unmodified C programs call them (jemalloc's
//!   `malloc`/`free`, linked as `_rjem_malloc`/`_rjem_free`; mimalloc's
//!   `mi_malloc`/`mi_free`; pktslab's exported functions);
//! - Rust's `GlobalAlloc` ([`PkRust`], [`SysRust`], [`Je`], [`Mi`]): what a
//!   Rust program's `#[global_allocator]` gets, with the size on every
//!   `dealloc` (jemalloc: `mallocx`/`sdallocx`; mimalloc:
//!   `mi_malloc_aligned`/`mi_free`; glibc: `std::alloc::System`).

use std::alloc::{GlobalAlloc, Layout, System};
use std::ffi::c_void;

use mimalloc::MiMalloc;
use pktslab::PktslabAlloc;
use tikv_jemallocator::Jemalloc;

pub trait Alloc: Sync + Send + 'static {
    fn malloc(&self, size: usize) -> *mut u8;
    /// # Safety
    /// `p` came from `malloc`/`realloc` of this allocator with `size`.
    unsafe fn free(&self, p: *mut u8, size: usize);
    /// # Safety
    /// As `free`.
    unsafe fn realloc(&self, p: *mut u8, old: usize, new: usize) -> *mut u8;
    /// # Safety
    /// `p` is live.
    unsafe fn usable(&self, p: *mut u8) -> usize;
}

/// pktslab's malloc as a C program reaches it: one call into the library
/// (the preload's exported `malloc` inlines the same function).
#[inline(never)]
extern "C" fn pk_malloc(size: usize) -> *mut u8 {
    pktslab::global::malloc(size)
}

/// pktslab's free as a C program reaches it: no size.
#[inline(never)]
unsafe extern "C" fn pk_free(p: *mut u8) {
    // SAFETY: forwarded Alloc::free contract.
    unsafe { pktslab::global::free(p, "free") }
}

/// pktslab through the C ABI (malloc/free/realloc), as unmodified
/// programs use it under LD_PRELOAD: frees carry no size.
pub struct Pktslab;
impl Alloc for Pktslab {
    #[inline(always)]
    fn malloc(&self, size: usize) -> *mut u8 {
        pk_malloc(size)
    }
    #[inline(always)]
    unsafe fn free(&self, p: *mut u8, _size: usize) {
        // SAFETY: trait contract.
        unsafe { pk_free(p) }
    }
    unsafe fn realloc(&self, p: *mut u8, _old: usize, new: usize) -> *mut u8 {
        // SAFETY: trait contract.
        unsafe { pktslab::global::realloc(p, new) }
    }
    unsafe fn usable(&self, p: *mut u8) -> usize {
        // SAFETY: trait contract.
        unsafe { pktslab::global::usable_size(p) }
    }
}

/// glibc through the C API.
pub struct Glibc;
impl Alloc for Glibc {
    #[inline(always)]
    fn malloc(&self, size: usize) -> *mut u8 {
        // SAFETY: plain malloc.
        unsafe { libc::malloc(size) }.cast()
    }
    #[inline(always)]
    unsafe fn free(&self, p: *mut u8, _size: usize) {
        // SAFETY: trait contract.
        unsafe { libc::free(p.cast()) }
    }
    unsafe fn realloc(&self, p: *mut u8, _old: usize, new: usize) -> *mut u8 {
        // SAFETY: trait contract.
        unsafe { libc::realloc(p.cast(), new) }.cast()
    }
    unsafe fn usable(&self, p: *mut u8) -> usize {
        // SAFETY: trait contract.
        unsafe { libc::malloc_usable_size(p.cast()) }
    }
}

/// jemalloc through its C API (the `_rjem_`-prefixed symbols the Rust
/// crate builds): `free` without a size, as a C program calls it.
pub struct JeC;
impl Alloc for JeC {
    #[inline(always)]
    fn malloc(&self, size: usize) -> *mut u8 {
        // SAFETY: plain malloc.
        unsafe { tikv_jemalloc_sys::malloc(size) }.cast()
    }
    #[inline(always)]
    unsafe fn free(&self, p: *mut u8, _size: usize) {
        // SAFETY: trait contract.
        unsafe { tikv_jemalloc_sys::free(p.cast()) }
    }
    unsafe fn realloc(&self, p: *mut u8, _old: usize, new: usize) -> *mut u8 {
        // SAFETY: trait contract.
        unsafe { tikv_jemalloc_sys::realloc(p.cast(), new) }.cast()
    }
    unsafe fn usable(&self, p: *mut u8) -> usize {
        // SAFETY: trait contract.
        unsafe { tikv_jemalloc_sys::malloc_usable_size(p.cast::<c_void>()) }
    }
}

/// mimalloc through its C API (`mi_malloc`/`mi_free`).
pub struct MiC;
impl Alloc for MiC {
    #[inline(always)]
    fn malloc(&self, size: usize) -> *mut u8 {
        // SAFETY: plain malloc.
        unsafe { libmimalloc_sys::mi_malloc(size) }.cast()
    }
    #[inline(always)]
    unsafe fn free(&self, p: *mut u8, _size: usize) {
        // SAFETY: trait contract.
        unsafe { libmimalloc_sys::mi_free(p.cast()) }
    }
    unsafe fn realloc(&self, p: *mut u8, _old: usize, new: usize) -> *mut u8 {
        // SAFETY: trait contract.
        unsafe { libmimalloc_sys::mi_realloc(p.cast(), new) }.cast()
    }
    unsafe fn usable(&self, p: *mut u8) -> usize {
        // SAFETY: trait contract.
        unsafe { libmimalloc_sys::mi_usable_size(p.cast()) }
    }
}

fn layout(size: usize) -> Layout {
    // Alignment 8 takes both crates' plain-malloc paths.
    Layout::from_size_align(size.max(1), 8).unwrap()
}

/// A Rust global allocator, called as Rust calls it (sized frees), with
/// its own usable-size function for the waste comparison.
pub struct Crate<G: GlobalAlloc + Sync + Send + 'static> {
    alloc: G,
    usable: unsafe fn(*mut u8) -> usize,
}

impl<G: GlobalAlloc + Sync + Send + 'static> Alloc for Crate<G> {
    #[inline(always)]
    fn malloc(&self, size: usize) -> *mut u8 {
        // SAFETY: non-zero layout.
        unsafe { self.alloc.alloc(layout(size)) }
    }
    #[inline(always)]
    unsafe fn free(&self, p: *mut u8, size: usize) {
        // SAFETY: trait contract.
        unsafe { self.alloc.dealloc(p, layout(size)) }
    }
    unsafe fn realloc(&self, p: *mut u8, old: usize, new: usize) -> *mut u8 {
        // SAFETY: trait contract.
        unsafe { self.alloc.realloc(p, layout(old), new.max(1)) }
    }
    unsafe fn usable(&self, p: *mut u8) -> usize {
        // SAFETY: trait contract.
        unsafe { (self.usable)(p) }
    }
}

unsafe fn pk_usable(p: *mut u8) -> usize {
    // SAFETY: p is a live pktslab block (Alloc::usable's contract).
    unsafe { pktslab::global::usable_size(p) }
}

unsafe fn je_usable(p: *mut u8) -> usize {
    // SAFETY: p is a live jemalloc block (Alloc::usable's contract).
    unsafe { tikv_jemallocator::usable_size(p) }
}

unsafe fn mi_usable(p: *mut u8) -> usize {
    // SAFETY: p is a live mimalloc block (Alloc::usable's contract).
    unsafe { libmimalloc_sys::mi_usable_size(p.cast()) }
}

unsafe fn sys_usable(p: *mut u8) -> usize {
    // SAFETY: p is a live glibc block (Alloc::usable's contract).
    unsafe { libc::malloc_usable_size(p.cast()) }
}

/// glibc through Rust's `GlobalAlloc` (`std::alloc::System`).
#[allow(non_upper_case_globals)]
pub static SysRust: Crate<System> = Crate {
    alloc: System,
    usable: sys_usable,
};

/// jemalloc through its Rust crate (`GlobalAlloc`: `mallocx`/`sdallocx`).
#[allow(non_upper_case_globals)]
pub static Je: Crate<Jemalloc> = Crate {
    alloc: Jemalloc,
    usable: je_usable,
};

/// mimalloc through its Rust crate (`GlobalAlloc`: `mi_malloc_aligned`/`mi_free`).
#[allow(non_upper_case_globals)]
pub static Mi: Crate<MiMalloc> = Crate {
    alloc: MiMalloc,
    usable: mi_usable,
};

/// pktslab through its Rust global allocator (`PktslabAlloc`): sized
/// deallocation (`free_sized`). Only for the small-block rows: it pins at
/// any size, unlike the C ABI.
#[allow(non_upper_case_globals)]
pub static PkRust: Crate<PktslabAlloc> = Crate {
    alloc: PktslabAlloc,
    usable: pk_usable,
};
