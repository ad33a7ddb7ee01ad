//! Per-thread caches of free pieces.
//!
//! The fast path of malloc/free is a pop/push on the calling thread's
//! pointer stack for the class: no lock, no atomic read-modify-write. A freed piece goes
//! to the freeing thread's cache whichever thread allocated it (frees from
//! other threads need no message passing); a cache above its limit hands a
//! batch back to the shared list, and a thread's exit hands everything back.

use core::sync::atomic::Ordering;

use crate::arena::{KIND_SMALL, SlotMeta};
use crate::class::{NUM_CLASSES, SLAB_SIZE, batch, cache_limit, class_size};
use crate::heap::Heap;
use crate::slab::{Chain, Refill, mark_used, next_of, set_free_key};
use crate::stats::Counters;

/// Cache not yet set up on this thread.
pub const TC_UNINIT: u8 = 0;
/// Being set up (a nested malloc must not use it).
pub const TC_SETUP: u8 = 1;
/// In use.
pub const TC_ACTIVE: u8 = 2;
/// The thread is exiting and its cache was returned: go to shared lists.
pub const TC_DEAD: u8 = 3;

/// Where class `c`'s slots start in [`ThreadCache::slots`].
const OFFSETS: [usize; NUM_CLASSES + 1] = {
    let mut t = [0; NUM_CLASSES + 1];
    let mut c = 0;
    while c < NUM_CLASSES {
        t[c + 1] = t[c] + cache_limit(c);
        c += 1;
    }
    t
};

/// Slots in all bins: each class has its own capacity ([`cache_limit`]:
/// two batches, 128 pieces for small classes down to 2 for the largest).
const SLOTS: usize = OFFSETS[NUM_CLASSES];

/// One thread's cache. Lives in thread-local storage; `const`-initialised
/// and without Drop, so touching it never allocates or registers anything.
///
/// Each class's bin is a stack of pointers (as jemalloc's cache bins),
/// not a list threaded through the pieces: a malloc right after a free
/// reads the pointer from the cache, not from the piece just written, so
/// the pair is not one dependency chain through memory. Pieces are linked
/// only when a batch goes to or comes from the shared lists.
///
/// The fast malloc also notes the piece it handed out last and its class
/// ([`ThreadCache::small_piece`] uses them): a free of that very piece
/// (a temporary freed right away) then knows its bin without waiting for
/// the slot table. Otherwise a malloc of the same class right after would
/// wait for the free's bin push, whose address came from that table: each
/// malloc/free pair would be one chain of dependent loads.
///
/// `repr(C)`, hot fields first: the state, counts and counters every call
/// writes share the first page with the small classes' slots, so a thread
/// touches (and a forked parent copies on write) as few pages as it can.
#[repr(C)]
pub struct ThreadCache {
    /// One of the `TC_*` states.
    pub state: u8,
    /// Largest request the inline fast path serves from this cache:
    /// min(PKTSLAB_PIN_MAX, largest class) while the cache is active, 0
    /// otherwise, so one compare checks both.
    pub fast_max: usize,
    /// The process heap's arena as the inline free path checks it: start,
    /// length (0 while the cache is not active, so one compare checks
    /// both), slot table and free key. Copied from the heap at activation
    /// so a free reads one cache line of thread-local data, not the heap.
    arena_base: usize,
    arena_len: usize,
    metas: *const SlotMeta,
    key: u64,
    /// The piece [`ThreadCache::try_pop`] (with `note`) handed out last,
    /// and its class (a hint: a free checks it against the slot table).
    last_p: *mut u8,
    last_c: usize,
    counts: [u32; NUM_CLASSES],
    /// This thread's allocation counters.
    pub counters: Counters,
    /// Registry links (guarded by the registry lock).
    pub next: *mut ThreadCache,
    /// Registry links (guarded by the registry lock).
    pub prev: *mut ThreadCache,
    slots: [*mut u8; SLOTS],
}

impl ThreadCache {
    /// An empty, unset-up cache.
    pub const fn new() -> Self {
        Self {
            state: TC_UNINIT,
            fast_max: 0,
            arena_base: 0,
            arena_len: 0,
            metas: core::ptr::null(),
            key: 0,
            last_p: core::ptr::null_mut(),
            last_c: 0,
            counts: [0; NUM_CLASSES],
            slots: [core::ptr::null_mut(); SLOTS],
            counters: Counters::new(),
            next: core::ptr::null_mut(),
            prev: core::ptr::null_mut(),
        }
    }

    /// Lets the inline paths serve requests up to `fast_max` bytes and
    /// frees of `heap`'s small pieces from this cache (the cache is active).
    pub fn enable_fast(&mut self, heap: &Heap, fast_max: usize) {
        let a = heap.arena();
        self.arena_base = a.base();
        self.metas = a.meta_table();
        self.key = heap.key();
        self.arena_len = a.size();
        self.fast_max = fast_max;
    }

    /// Turns the inline paths off (the thread is exiting).
    pub fn disable_fast(&mut self) {
        self.fast_max = 0;
        self.arena_len = 0;
    }

    /// The free key of the heap this cache serves (valid once
    /// [`ThreadCache::enable_fast`] ran).
    #[inline(always)]
    pub fn key(&self) -> u64 {
        self.key
    }

    /// The class of `p` when the inline free path may take it: this cache
    /// is active and `p` is on a piece boundary below the carve mark of a
    /// small slab of the heap: the same checks as [`Heap::classify`], on
    /// the copy of the arena's geometry this cache holds. `None` for
    /// everything else (NULL, foreign, large, invalid), which the caller
    /// sends down the full path: it classifies again and aborts on bad
    /// pointers.
    ///
    /// For the piece malloc handed out last, the class returned is the one
    /// noted then (the slot table's must match it), so the caller's bin
    /// push need not wait for the table.
    #[inline(always)]
    pub fn small_piece(&self, p: *mut u8) -> Option<usize> {
        let (m, off) = self.slot_of(p)?;
        // Each arm reads the table itself: with one read before the
        // branch, the compiler would take the class from the table in both.
        let c = if p == self.last_p {
            let c = self.last_c;
            if m.kind_class() != (KIND_SMALL, c) {
                return None;
            }
            c
        } else {
            let (kind, c) = m.kind_class();
            if kind != KIND_SMALL {
                return None;
            }
            c
        };
        carved(m, off, c)
    }

    /// [`ThreadCache::small_piece`] without the hint, for a free that
    /// knows the class from the size and so need not wait for the table
    /// either: the caller compares the answer with its class.
    #[inline(always)]
    pub fn small_piece_unhinted(&self, p: *mut u8) -> Option<usize> {
        let (m, off) = self.slot_of(p)?;
        let (kind, c) = m.kind_class();
        if kind != KIND_SMALL {
            return None;
        }
        carved(m, off, c)
    }

    /// The slot table entry of `p` and its offset in the arena, when `p`
    /// is in the arena and this cache is active.
    #[inline(always)]
    fn slot_of(&self, p: *mut u8) -> Option<(&SlotMeta, usize)> {
        let off = (p as usize).wrapping_sub(self.arena_base);
        if off >= self.arena_len {
            return None;
        }
        // SAFETY: off < arena_len = the arena's size, so the slot index is
        // below the slot table's length; the table lives as long as the
        // process heap (never dropped).
        let m = unsafe { &*self.metas.add(off >> crate::class::SLAB_SHIFT) };
        Some((m, off))
    }

    /// The fast path of malloc: pops a cached piece of class `c`, or NULL
    /// when the bin is empty (the caller takes the slow path). No lock, no
    /// atomic read-modify-write, no bounds check.
    ///
    /// With `note`, the piece and its class become the hint
    /// [`ThreadCache::small_piece`] uses (for callers whose frees carry no
    /// size).
    #[inline(always)]
    pub fn try_pop(&mut self, c: usize, size: usize, note: bool) -> *mut u8 {
        debug_assert!(c < NUM_CLASSES);
        // SAFETY: c < NUM_CLASSES (class_of of a size <= fast_max).
        let n = unsafe { *self.counts.get_unchecked(c) } as usize;
        if n == 0 {
            return core::ptr::null_mut();
        }
        // SAFETY: c < NUM_CLASSES; n - 1 < cache_limit(c), so the slot is
        // inside class c's part of `slots`.
        unsafe {
            *self.counts.get_unchecked_mut(c) = (n - 1) as u32;
            let p = *self.slots.get_unchecked(*OFFSETS.get_unchecked(c) + n - 1);
            if note {
                self.last_p = p;
                self.last_c = c;
            }
            // The piece belongs to the caller now: clear its free key.
            mark_used(p);
            self.counters.record_owned(c, size);
            p
        }
    }

    /// The fast path of free: caches a validated piece of class `c` when
    /// its bin has room; false (nothing done) when full.
    ///
    /// # Safety
    /// `p` must be a live piece of class `c`, validated by the caller as
    /// [`Heap::classify`] and the double-free check do.
    #[inline(always)]
    pub unsafe fn try_push(&mut self, p: *mut u8, c: usize) -> bool {
        // SAFETY: c < NUM_CLASSES (from the slot's metadata).
        let n = unsafe { *self.counts.get_unchecked(c) } as usize;
        if n == cache_limit(c) {
            return false;
        }
        // SAFETY: p is a live piece; n < cache_limit(c) keeps the slot in
        // class c's part of `slots`.
        unsafe {
            set_free_key(p, self.key);
            *self.slots.get_unchecked_mut(*OFFSETS.get_unchecked(c) + n) = p;
            *self.counts.get_unchecked_mut(c) = n as u32 + 1;
        }
        true
    }

    /// Pops a piece of class `c`, refilling a batch from the shared list
    /// when empty. NULL when memory ran out.
    #[inline(always)]
    pub fn pop(&mut self, heap: &Heap, c: usize) -> *mut u8 {
        let mut n = self.counts[c] as usize;
        if n == 0 {
            n = self.refill(heap, c);
            if n == 0 {
                return core::ptr::null_mut();
            }
        }
        n -= 1;
        self.counts[c] = n as u32;
        let p = self.slots[OFFSETS[c] + n];
        // SAFETY: p is a free piece owned by this cache; it now belongs to
        // the caller.
        unsafe { mark_used(p) };
        p
    }

    /// Takes a batch from the shared list into the empty bin `c`.
    #[cold]
    #[inline(never)]
    fn refill(&mut self, heap: &Heap, c: usize) -> usize {
        let base = OFFSETS[c];
        let n = match heap.take_batch(c, batch(c)) {
            None => return 0,
            Some(Refill::Chain(ch)) => {
                // A batch is at most a full bin (see ClassPool::take_batch).
                assert!(ch.count <= cache_limit(c));
                let mut p = ch.head;
                for k in 0..ch.count {
                    self.slots[base + k] = p;
                    // SAFETY: the chain holds ch.count free pieces.
                    p = unsafe { next_of(p) };
                }
                ch.count
            }
            Some(Refill::Carved { base: first, n }) => {
                assert!(n <= cache_limit(c));
                // Lowest address on top: handed out in address order.
                let size = class_size(c);
                for k in 0..n {
                    self.slots[base + k] = (first + (n - 1 - k) * size) as *mut u8;
                }
                n
            }
        };
        self.counts[c] = n as u32;
        n
    }

    /// Pushes a freed piece of class `c`.
    ///
    /// # Safety
    /// `p` must be a live piece of class `c` of `heap`, validated by
    /// [`Heap::classify`], and not used by the caller afterwards.
    #[inline(always)]
    pub unsafe fn push(&mut self, heap: &Heap, p: *mut u8, c: usize) {
        // SAFETY: the caller validated p as a live piece of class c.
        unsafe { set_free_key(p, heap.key()) };
        let mut n = self.counts[c] as usize;
        if n == cache_limit(c) {
            n = self.spill(heap, c);
        }
        self.slots[OFFSETS[c] + n] = p;
        self.counts[c] = n as u32 + 1;
    }

    /// Links `n` cached pieces of bin `c` from slot `from` into a chain
    /// (their free keys are already set).
    fn chain(&self, c: usize, from: usize, n: usize) -> Chain {
        let s = &self.slots[OFFSETS[c] + from..OFFSETS[c] + from + n];
        for w in s.windows(2) {
            // SAFETY: cached pieces are free pieces this cache owns.
            unsafe { *w[0].cast::<*mut u8>() = w[1] };
        }
        // SAFETY: as above; end the chain.
        unsafe { *s[n - 1].cast::<*mut u8>() = core::ptr::null_mut() };
        Chain {
            head: s[0],
            tail: s[n - 1],
            count: n,
        }
    }

    /// Hands the oldest batch of a full bin back to the shared list and
    /// keeps the most recently freed pieces (still in cache). Returns the
    /// new count.
    #[cold]
    #[inline(never)]
    fn spill(&mut self, heap: &Heap, c: usize) -> usize {
        let (n, b) = (self.counts[c] as usize, batch(c));
        heap.give(c, self.chain(c, 0, b));
        self.slots
            .copy_within(OFFSETS[c] + b..OFFSETS[c] + n, OFFSETS[c]);
        self.counts[c] = (n - b) as u32;
        n - b
    }

    /// Returns every cached piece and the counters to the heap; returns
    /// the bytes of slabs that became empty and went back (see [`Heap::give`]).
    pub fn flush(&mut self, heap: &Heap) -> usize {
        let mut released = 0;
        for c in 0..NUM_CLASSES {
            let n = self.counts[c] as usize;
            if n > 0 {
                released += heap.give(c, self.chain(c, 0, n));
            }
            self.counts[c] = 0;
        }
        self.counters.drain_into(heap.counters());
        released
    }

    /// Pieces cached for class `c` (tests).
    pub fn cached(&self, c: usize) -> usize {
        self.counts[c] as usize
    }
}

/// `Some(c)` when arena offset `off`, in small slab `m` of class `c`, is
/// on a piece boundary below the slab's carve mark.
#[inline(always)]
fn carved(m: &SlotMeta, off: usize, c: usize) -> Option<usize> {
    let in_slab = off & (SLAB_SIZE - 1);
    if in_slab & (class_size(c) - 1) != 0 || in_slab >= m.bump.load(Ordering::Acquire) as usize {
        return None;
    }
    Some(c)
}

impl Default for ThreadCache {
    fn default() -> Self {
        Self::new()
    }
}
