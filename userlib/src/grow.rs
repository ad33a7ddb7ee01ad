//! Room to grow for buffers realloc() enlarges within the pinned sizes.
//!
//! A class piece cannot grow: its neighbours are pieces of the same class.
//! So a realloc() that enlarges a block past a page moves it once into a
//! *grow slab*, a slab shared by power-of-two blocks from two pages up to
//! the class holding `PKTSLAB_PIN_MAX`, placed buddy-style: a block starts the
//! largest free aligned block there is and leaves its upper halves free,
//! so the space right after it is free and the next doublings grow it in
//! place, without a copy (two growing buffers split the room between
//! them instead of one taking the other's next page). A vector doubling from
//! 4 KiB to `PKTSLAB_PIN_MAX` copies once (its first page) instead of at
//! every step.
//!
//! The slabs are ordinary arena slabs (pinned, one slot each, v2p as for
//! any slab), so the device backend places them as it places class slabs.
//! Only realloc() puts blocks here; malloc() never does, so the thread
//! caches and the free fast path are untouched, and a grow block's free
//! takes this pool's lock (as a large run's takes the arena's).
//!
//! Per slab, one word: a bitmap of used units (pages, or 1/32 of a slab
//! over 32 pages) and one of block starts, so a pointer is validated
//! exactly (a live block's start) before anything is freed or resized,
//! and classifying needs no lock. An emptied slab is kept for reuse while
//! it is the only empty one (the hysteresis); further empty slabs go back
//! to the arena, and [`GrowPool::trim`] returns them all.

use core::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use crate::arena::{Arena, KIND_GROW};
use crate::class::{MAX_SMALL, PAGE_SIZE};
use crate::lock::SpinLock;

/// Most grow slabs: bounds the pinned memory this pool holds (2 MiB at
/// the default 128 KiB limit); past it, realloc() copies between class
/// pieces as before.
pub const MAX_SLABS: usize = 16;

/// The smallest grow block: two pages (one page fits a class piece).
pub const MIN_BLOCK: usize = 2 * PAGE_SIZE;

/// Units per slab at most: a unit is a page, or 1/32 of a slab larger
/// than 32 pages, so a slab's whole state is one word (read without the
/// lock, see [`GrowPool::classify`]).
const UNITS: usize = 32;

/// A slab's state: used units (low half) and the first units of live
/// blocks (high half). A block ends at the next start or free unit
/// (blocks are power-of-two sized and aligned, buddy-style).
#[derive(Clone, Copy, Default)]
struct Slab {
    used: u32,
    starts: u32,
}

/// Bits `from..from + n` (`n >= 1`, `from + n <= 32`).
fn bits(from: usize, n: usize) -> u32 {
    (u32::MAX >> (32 - n)) << from
}

impl Slab {
    #[inline]
    fn load(w: &AtomicU64) -> Self {
        let v = w.load(Ordering::Acquire);
        Self {
            used: v as u32,
            starts: (v >> 32) as u32,
        }
    }

    fn store(self, w: &AtomicU64) {
        w.store(
            u64::from(self.used) | u64::from(self.starts) << 32,
            Ordering::Release,
        );
    }

    /// The largest free aligned block of at least `n` units (powers of
    /// two, `n <= top <= units`): (first unit, units).
    fn find(self, n: usize, units: usize, top: usize) -> Option<(usize, usize)> {
        let mut j = top;
        while j >= n {
            let mut s = 0;
            while s + j <= units {
                if self.used & bits(s, j) == 0 {
                    return Some((s, j));
                }
                s += j;
            }
            j /= 2;
        }
        None
    }

    /// Units of the live block starting at unit `u`, if there is one.
    #[inline]
    fn block_at(self, u: usize, units: usize) -> Option<usize> {
        if self.starts & (1 << u) == 0 {
            return None;
        }
        let after = (self.starts | !self.used) & ((u32::MAX << u) << 1);
        Some((after.trailing_zeros() as usize).min(units) - u)
    }
}

/// What a pointer into a grow slab is (see [`GrowPool::classify`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GrowPtr {
    /// A live block of this many bytes starts there.
    Live(usize),
    /// Free space: the block there was freed (or never handed out).
    Freed,
    /// Not a block start.
    Invalid,
}

/// No slab in this entry.
const NO_SLOT: usize = usize::MAX;

/// The grow slabs of one heap. Entry `i` is the slab at arena slot
/// `slots[i]`, whose metadata's `bump` holds `i` (a grow slab carves no
/// pieces), so a pointer finds its slab's state in O(1).
pub struct GrowPool {
    lock: SpinLock,
    slots: [AtomicUsize; MAX_SLABS],
    /// Each slab's [`Slab`] word: written under the lock, read without it.
    states: [AtomicU64; MAX_SLABS],
    /// Largest block, a power of two (0: the pool is off).
    top: usize,
    /// Bytes of each slab (the backend's granule for `top`).
    slab_len: usize,
    /// log2 of a unit's bytes.
    unit_shift: u32,
}

impl GrowPool {
    /// A pool for blocks up to the class that holds `pin_max` (at most the
    /// largest class); off when that is below [`MIN_BLOCK`].
    pub fn new(arena: &Arena, pin_max: usize) -> Self {
        let top = pin_max.min(MAX_SMALL).next_power_of_two();
        let top = if top < MIN_BLOCK { 0 } else { top };
        let slab_len = if top == 0 {
            0
        } else {
            arena.backend().granule(top).max(top)
        };
        let unit = (slab_len / UNITS).max(PAGE_SIZE);
        Self {
            lock: SpinLock::new(),
            slots: [const { AtomicUsize::new(NO_SLOT) }; MAX_SLABS],
            states: [const { AtomicU64::new(0) }; MAX_SLABS],
            top,
            slab_len,
            unit_shift: unit.trailing_zeros(),
        }
    }

    /// Largest block this pool gives (0: off).
    pub fn top(&self) -> usize {
        self.top
    }

    /// Whether entry `i` holds a slab with no live block.
    fn empty(&self, i: usize) -> bool {
        self.slots[i].load(Ordering::Relaxed) != NO_SLOT && Slab::load(&self.states[i]).starts == 0
    }

    #[inline]
    fn units(&self) -> usize {
        self.slab_len >> self.unit_shift
    }

    /// Entry of the grow slab at arena slot `slot`.
    #[inline]
    fn index_of(&self, arena: &Arena, slot: usize) -> Option<usize> {
        let i = arena.meta(slot).bump.load(Ordering::Acquire) as usize;
        (i < MAX_SLABS && self.slots[i].load(Ordering::Acquire) == slot).then_some(i)
    }

    /// Units of a block holding `size` bytes.
    fn units_for(&self, size: usize) -> usize {
        (size.max(MIN_BLOCK).next_power_of_two() >> self.unit_shift).max(1)
    }

    /// The unit at `off` bytes into a slab, if `off` is a unit boundary
    /// inside it.
    #[inline]
    fn unit_at(&self, off: usize) -> Option<usize> {
        let u = off >> self.unit_shift;
        (off & ((1 << self.unit_shift) - 1) == 0 && u < self.units()).then_some(u)
    }

    /// A block of at least `size` bytes (`size <= top`), at the start of
    /// the largest free space (room to grow); a new slab when no slab has
    /// room. Returns (address, bytes), or None when the pool is off or
    /// full or no slab could be had (the caller uses a class piece).
    pub fn alloc(&self, arena: &Arena, size: usize) -> Option<(usize, usize)> {
        if size > self.top {
            return None;
        }
        let n = self.units_for(size);
        let (units, top) = (self.units(), self.top >> self.unit_shift);
        let _g = self.lock.lock();
        let mut best: Option<(usize, usize, usize)> = None;
        for i in 0..MAX_SLABS {
            if self.slots[i].load(Ordering::Relaxed) == NO_SLOT {
                continue;
            }
            if let Some((u, len)) = Slab::load(&self.states[i]).find(n, units, top)
                && best.is_none_or(|b| len > b.2)
            {
                best = Some((i, u, len));
                if len == top {
                    break;
                }
            }
        }
        let (i, u) = match best {
            Some((i, u, _)) => (i, u),
            None => (self.add_slab(arena)?, 0),
        };
        let mut s = Slab::load(&self.states[i]);
        s.used |= bits(u, n);
        s.starts |= 1 << u;
        s.store(&self.states[i]);
        let slot = self.slots[i].load(Ordering::Relaxed);
        Some((
            arena.slot_addr(slot) + (u << self.unit_shift),
            n << self.unit_shift,
        ))
    }

    /// Maps a new grow slab into a free entry (lock held).
    fn add_slab(&self, arena: &Arena) -> Option<usize> {
        let i = (0..MAX_SLABS).find(|&i| self.slots[i].load(Ordering::Relaxed) == NO_SLOT)?;
        let (slot, _) = arena.alloc_run(1, 1, KIND_GROW, 0, self.slab_len).ok()?;
        Slab::default().store(&self.states[i]);
        arena.meta(slot).bump.store(i as u32, Ordering::Release);
        self.slots[i].store(slot, Ordering::Release);
        Some(i)
    }

    /// What `off` bytes into grow slab `slot` is. No lock: one load of the
    /// slab's state word. A live block's own units change only through
    /// its owner, so its answer is exact; a freed one reads as free.
    #[inline]
    pub fn classify(&self, arena: &Arena, slot: usize, off: usize) -> GrowPtr {
        let (Some(i), Some(u)) = (self.index_of(arena, slot), self.unit_at(off)) else {
            return GrowPtr::Invalid;
        };
        let s = Slab::load(&self.states[i]);
        match s.block_at(u, self.units()) {
            Some(n) => GrowPtr::Live(n << self.unit_shift),
            None if s.used & (1 << u) == 0 => GrowPtr::Freed,
            None => GrowPtr::Invalid,
        }
    }

    /// Resizes the live block at `off` in slab `slot` to hold `size` bytes
    /// (`size <= top`) in place: a shrink gives its upper units back; a
    /// growth takes the free units after it when the block is aligned to
    /// its new size (a lower buddy). Returns the block's new bytes, or
    /// None (nothing changed).
    pub fn resize(&self, arena: &Arena, slot: usize, off: usize, size: usize) -> Option<usize> {
        if size > self.top {
            return None;
        }
        let want = self.units_for(size);
        let _g = self.lock.lock();
        let (i, u) = (self.index_of(arena, slot)?, self.unit_at(off)?);
        let units = self.units();
        let mut s = Slab::load(&self.states[i]);
        let have = s.block_at(u, units)?;
        if want < have {
            s.used &= !bits(u + want, have - want);
        } else if want > have {
            if u % want != 0 || u + want > units {
                return None;
            }
            let more = bits(u + have, want - have);
            if s.used & more != 0 {
                return None;
            }
            s.used |= more;
        }
        s.store(&self.states[i]);
        Some(want << self.unit_shift)
    }

    /// Frees the live block at `off` in slab `slot` (validated by
    /// [`GrowPool::classify`]). An emptied slab stays for reuse if it is
    /// the only empty one, else goes back to the arena.
    pub fn free(&self, arena: &Arena, slot: usize, off: usize) {
        let _g = self.lock.lock();
        let (Some(i), Some(u)) = (self.index_of(arena, slot), self.unit_at(off)) else {
            return;
        };
        let mut s = Slab::load(&self.states[i]);
        let Some(n) = s.block_at(u, self.units()) else {
            return;
        };
        s.used &= !bits(u, n);
        s.starts &= !(1 << u);
        s.store(&self.states[i]);
        if s.starts != 0 {
            return;
        }
        if (0..MAX_SLABS).any(|k| k != i && self.empty(k)) {
            self.slots[i].store(NO_SLOT, Ordering::Release);
            arena.free_run(slot);
        }
    }

    /// Gives every empty grow slab back to the backend; returns the bytes.
    pub fn trim(&self, arena: &Arena) -> usize {
        let _g = self.lock.lock();
        let mut released = 0;
        for i in 0..MAX_SLABS {
            if self.empty(i) {
                let slot = self.slots[i].load(Ordering::Relaxed);
                self.slots[i].store(NO_SLOT, Ordering::Release);
                released += arena.release_small(slot);
            }
        }
        released
    }

    /// Slabs held now (tests).
    pub fn slabs(&self) -> usize {
        self.slots
            .iter()
            .filter(|s| s.load(Ordering::Relaxed) != NO_SLOT)
            .count()
    }

    /// Fork preparation: hold the lock across fork().
    pub fn lock_for_fork(&self) {
        self.lock.raw_lock();
    }

    /// Releases the fork lock in parent and child.
    pub fn unlock_after_fork(&self) {
        self.lock.raw_unlock();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::Backend;
    use crate::backend::host::HostBackend;
    use crate::class::SLAB_SIZE;

    const K: usize = 1024;

    fn arena() -> Arena {
        let backend = Backend::Host(HostBackend::new(u64::MAX, true, false));
        Arena::new(64 * SLAB_SIZE, backend, false, 0).expect("reserve the arena")
    }

    fn off(a: &Arena, addr: usize) -> (usize, usize) {
        let slot = a.slot_of(addr);
        (slot, addr - a.slot_addr(slot))
    }

    #[test]
    fn a_lone_block_doubles_in_place_up_to_the_top() {
        let a = arena();
        let g = GrowPool::new(&a, 128 * K);
        assert_eq!(g.top(), 128 * K);
        let (p, bytes) = g.alloc(&a, 5000).unwrap();
        assert_eq!(bytes, 8 * K);
        let (slot, o) = off(&a, p);
        assert_eq!(a.meta(slot).kind_class().0, KIND_GROW);
        for size in [16 * K, 32 * K, 64 * K, 128 * K] {
            assert_eq!(g.resize(&a, slot, o, size), Some(size), "to {size}");
            assert_eq!(g.classify(&a, slot, o), GrowPtr::Live(size));
        }
        assert_eq!(g.resize(&a, slot, o, 256 * K), None, "past the top");
        g.free(&a, slot, o);
        let (lo, _) = g.alloc(&a, 64 * K).unwrap();
        let (hi, _) = g.alloc(&a, 64 * K).unwrap();
        assert_eq!(hi, lo + 64 * K);
        let (_, ho) = off(&a, hi);
        assert_eq!(
            g.resize(&a, slot, ho, 128 * K),
            None,
            "an upper half ends the slab"
        );
        assert_eq!(g.alloc(&a, 256 * K), None);
        let (hs, lo_off) = off(&a, lo);
        g.free(&a, hs, lo_off);
        assert_eq!(g.classify(&a, hs, lo_off), GrowPtr::Freed);
    }

    #[test]
    fn new_blocks_split_the_largest_free_space_and_growth_stops_at_a_neighbour() {
        let a = arena();
        let g = GrowPool::new(&a, 128 * K);
        let (p, _) = g.alloc(&a, 8 * K).unwrap();
        let (q, _) = g.alloc(&a, 8 * K).unwrap();
        assert_eq!(q, p + 64 * K, "the largest free block: the upper half");
        let (r, _) = g.alloc(&a, 8 * K).unwrap();
        assert_eq!(r, p + 32 * K, "then the largest left");
        let ((slot, po), (_, qo), (_, ro)) = (off(&a, p), off(&a, q), off(&a, r));
        assert_eq!(g.resize(&a, slot, po, 32 * K), Some(32 * K));
        assert_eq!(g.resize(&a, slot, po, 64 * K), None, "r is in the way");
        assert_eq!(g.resize(&a, slot, ro, 16 * K), Some(16 * K));
        assert_eq!(
            g.resize(&a, slot, ro, 64 * K),
            None,
            "not aligned to 64 KiB"
        );
        assert_eq!(g.resize(&a, slot, qo, 64 * K), Some(64 * K));
        g.free(&a, slot, ro);
        assert_eq!(g.resize(&a, slot, po, 64 * K), Some(64 * K));
        assert_eq!(
            g.alloc(&a, 8 * K)
                .map(|b| b.0 - a.slot_addr(slot) >= 128 * K),
            Some(true)
        );
        assert_eq!(g.slabs(), 2, "full: a second slab");
    }

    #[test]
    fn pointers_inside_or_between_blocks_are_not_blocks() {
        let a = arena();
        let g = GrowPool::new(&a, 128 * K);
        let (p, _) = g.alloc(&a, 16 * K).unwrap();
        let (slot, o) = off(&a, p);
        assert_eq!(
            g.classify(&a, slot, o + 4 * K),
            GrowPtr::Invalid,
            "interior page"
        );
        assert_eq!(g.classify(&a, slot, o + 16), GrowPtr::Invalid, "not a page");
        assert_eq!(
            g.classify(&a, slot, o + 16 * K),
            GrowPtr::Freed,
            "free space"
        );
        assert_eq!(
            g.classify(&a, slot, 128 * K),
            GrowPtr::Invalid,
            "past the slab"
        );
        assert_eq!(
            g.classify(&a, slot + 1, 0),
            GrowPtr::Invalid,
            "not a grow slab"
        );
        // A shrink gives its upper pages back, so they are free space.
        assert_eq!(g.resize(&a, slot, o, 9 * K), Some(16 * K));
        assert_eq!(g.resize(&a, slot, o, 8 * K), Some(8 * K));
        assert_eq!(g.classify(&a, slot, o + 8 * K), GrowPtr::Freed);
        assert_eq!(
            g.resize(&a, slot, o, 128 * K),
            Some(128 * K),
            "all free again"
        );
    }

    #[test]
    fn one_empty_slab_stays_further_ones_go_and_trim_returns_all() {
        let a = arena();
        let g = GrowPool::new(&a, 128 * K);
        let blocks: Vec<_> = (0..3).map(|_| g.alloc(&a, 128 * K).unwrap().0).collect();
        assert_eq!(g.slabs(), 3);
        for &b in &blocks {
            let (slot, o) = off(&a, b);
            g.free(&a, slot, o);
        }
        assert_eq!(g.slabs(), 1, "the hysteresis keeps one empty slab");
        let (b, _) = g.alloc(&a, 32 * K).unwrap();
        assert_eq!(g.slabs(), 1, "reused");
        let (slot, o) = off(&a, b);
        g.free(&a, slot, o);
        assert_eq!(g.trim(&a), 128 * K);
        assert_eq!(g.slabs(), 0);
        assert_eq!(a.meta(slot).kind_class().0, crate::arena::KIND_UNMAPPED);
    }

    #[test]
    fn a_full_pool_says_no_and_a_small_limit_turns_it_off() {
        let a = arena();
        let g = GrowPool::new(&a, 128 * K);
        for _ in 0..MAX_SLABS {
            assert!(g.alloc(&a, 128 * K).is_some());
        }
        assert_eq!(g.alloc(&a, 8 * K), None, "every slab is full");
        let off = GrowPool::new(&a, 4 * K);
        assert_eq!(off.top(), 0);
        assert_eq!(off.alloc(&a, 8 * K), None);
    }

    #[test]
    fn slabs_over_64_pages_use_bigger_units() {
        let a = arena();
        let g = GrowPool::new(&a, MAX_SMALL);
        let (p, bytes) = g.alloc(&a, 5000).unwrap();
        assert_eq!(bytes, 32 * K, "a unit is 1/32 of a 1 MiB slab");
        let (slot, o) = off(&a, p);
        assert_eq!(g.resize(&a, slot, o, MAX_SMALL), Some(MAX_SMALL));
        assert_eq!(g.classify(&a, slot, o), GrowPtr::Live(MAX_SMALL));
    }
}
