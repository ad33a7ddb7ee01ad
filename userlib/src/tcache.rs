//! Per-thread caches of free pieces.
//!
//! The fast path of malloc/free is a pop/push on the calling thread's list
//! for the class: no lock, no atomic read-modify-write. A freed piece goes
//! to the freeing thread's cache whichever thread allocated it (frees from
//! other threads need no message passing); a cache above its limit hands a
//! batch back to the shared list, and a thread's exit hands everything back.

use crate::class::{NUM_CLASSES, batch, cache_limit};
use crate::heap::Heap;
use crate::slab::{mark_free, mark_used, next_of};
use crate::stats::Counters;

/// Cache not yet set up on this thread.
pub const TC_UNINIT: u8 = 0;
/// Being set up (a nested malloc must not use it).
pub const TC_SETUP: u8 = 1;
/// In use.
pub const TC_ACTIVE: u8 = 2;
/// The thread is exiting and its cache was returned: go to shared lists.
pub const TC_DEAD: u8 = 3;

#[derive(Clone, Copy)]
struct Bin {
    head: *mut u8,
    count: usize,
}

/// One thread's cache. Lives in thread-local storage; `const`-initialised
/// and without Drop, so touching it never allocates or registers anything.
pub struct ThreadCache {
    /// One of the `TC_*` states.
    pub state: u8,
    bins: [Bin; NUM_CLASSES],
    /// This thread's allocation counters.
    pub counters: Counters,
    /// Registry links (guarded by the registry lock).
    pub next: *mut ThreadCache,
    /// Registry links (guarded by the registry lock).
    pub prev: *mut ThreadCache,
}

impl ThreadCache {
    /// An empty, unset-up cache.
    pub const fn new() -> Self {
        Self {
            state: TC_UNINIT,
            bins: [Bin {
                head: core::ptr::null_mut(),
                count: 0,
            }; NUM_CLASSES],
            counters: Counters::new(),
            next: core::ptr::null_mut(),
            prev: core::ptr::null_mut(),
        }
    }

    /// Pops a piece of class `c`, refilling a batch from the shared list
    /// when empty. NULL when memory ran out.
    #[inline(always)]
    pub fn pop(&mut self, heap: &Heap, c: usize) -> *mut u8 {
        let bin = &mut self.bins[c];
        if bin.head.is_null() && !Self::refill(bin, heap, c) {
            return core::ptr::null_mut();
        }
        let p = bin.head;
        // SAFETY: p is a free piece owned by this cache.
        bin.head = unsafe { next_of(p) };
        bin.count -= 1;
        // SAFETY: as above; it now belongs to the caller.
        unsafe { mark_used(p) };
        p
    }

    #[cold]
    #[inline(never)]
    fn refill(bin: &mut Bin, heap: &Heap, c: usize) -> bool {
        match heap.take(c, batch(c)) {
            Some(ch) => {
                bin.head = ch.head;
                bin.count = ch.count;
                true
            }
            None => false,
        }
    }

    /// Pushes a freed piece of class `c`.
    ///
    /// # Safety
    /// `p` must be a live piece of class `c` of `heap`, validated by
    /// [`Heap::classify`], and not used by the caller afterwards.
    #[inline(always)]
    pub unsafe fn push(&mut self, heap: &Heap, p: *mut u8, c: usize) {
        let bin = &mut self.bins[c];
        // SAFETY: the caller validated p as a live piece of class c.
        unsafe { mark_free(p, bin.head, heap.key()) };
        bin.head = p;
        bin.count += 1;
        if bin.count > cache_limit(c) {
            Self::spill(bin, heap, c);
        }
    }

    /// Hands the newest batch back to the shared list; keeps the rest hot.
    #[cold]
    #[inline(never)]
    fn spill(bin: &mut Bin, heap: &Heap, c: usize) {
        let n = batch(c);
        let head = bin.head;
        let mut tail = head;
        for _ in 1..n {
            // SAFETY: the bin holds more than n free pieces.
            tail = unsafe { next_of(tail) };
        }
        // SAFETY: tail is a free piece.
        bin.head = unsafe { next_of(tail) };
        bin.count -= n;
        // SAFETY: tail is a free piece; terminate the chain handed back.
        unsafe { *tail.cast::<*mut u8>() = core::ptr::null_mut() };
        heap.give(
            c,
            crate::slab::Chain {
                head,
                tail,
                count: n,
            },
        );
    }

    /// Returns every cached piece and the counters to the heap.
    pub fn flush(&mut self, heap: &Heap) {
        for (c, bin) in self.bins.iter_mut().enumerate() {
            heap.drain_chain(c, bin.head, bin.count);
            *bin = Bin {
                head: core::ptr::null_mut(),
                count: 0,
            };
        }
        self.counters.drain_into(heap.counters());
    }

    /// Pieces cached for class `c` (tests).
    pub fn cached(&self, c: usize) -> usize {
        self.bins[c].count
    }
}

impl Default for ThreadCache {
    fn default() -> Self {
        Self::new()
    }
}
