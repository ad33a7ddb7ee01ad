//! The allocators the benchmark compares, behind one trait: pktslab's
//! process heap and glibc through the C API (malloc/free), jemalloc and
//! mimalloc through their Rust crates, as a Rust program uses them.

use std::alloc::{GlobalAlloc, Layout};

use mimalloc::MiMalloc;
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

pub struct Pktslab;
impl Alloc for Pktslab {
    #[inline(always)]
    fn malloc(&self, size: usize) -> *mut u8 {
        pktslab::global::malloc(size)
    }
    #[inline(always)]
    unsafe fn free(&self, p: *mut u8, _size: usize) {
        // SAFETY: trait contract.
        unsafe { pktslab::global::free(p, "free") }
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
