//! The allocators the benchmark compares, behind one trait: pktslab's
//! process heap and glibc through the C API (malloc/free), jemalloc and
//! mimalloc through their Rust crates, as a Rust program uses them.

use std::alloc::{GlobalAlloc, Layout};

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

fn layout(size: usize) -> Layout {
    // Alignment 8 takes both crates' plain-malloc paths.
    Layout::from_size_align(size.max(1), 8).unwrap()
}

/// A Rust global allocator crate, called as Rust calls it (sized frees),
/// with its own usable-size function for the waste comparison.
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

/// jemalloc through its Rust crate.
#[allow(non_upper_case_globals)]
pub static Je: Crate<Jemalloc> = Crate {
    alloc: Jemalloc,
    usable: je_usable,
};

/// mimalloc through its Rust crate.
#[allow(non_upper_case_globals)]
pub static Mi: Crate<MiMalloc> = Crate {
    alloc: MiMalloc,
    usable: mi_usable,
};

/// pktslab through its Rust global allocator (`PktslabAlloc`), called as
/// jemalloc and mimalloc are here: sized deallocation. Only for the
/// small-block rows: it pins at any size, unlike the C ABI.
#[allow(non_upper_case_globals)]
pub static PkRust: Crate<PktslabAlloc> = Crate {
    alloc: PktslabAlloc,
    usable: pk_usable,
};
