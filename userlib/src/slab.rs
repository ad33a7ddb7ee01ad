//! Carving slabs into pieces of one class, and the shared per-class lists.
//!
//! A free piece holds two words: the next free piece, and the process's
//! free key (like glibc's tcache key). A piece handed out has the key
//! cleared, so free() can tell a double free by the key and a pointer that
//! was never handed out by its offset (beyond the slab's carve mark, or not
//! on a piece boundary).

use core::cell::UnsafeCell;
use core::sync::atomic::Ordering;

use crate::arena::{Arena, KIND_SMALL};
use crate::backend::BackendError;
use crate::class::{PAGE_SIZE, SLAB_SIZE, class_size};
use crate::lock::SpinLock;

/// A chain of free pieces: `head`..`tail` linked through word 0.
#[derive(Clone, Copy)]
pub struct Chain {
    /// First piece (null when empty).
    pub head: *mut u8,
    /// Last piece.
    pub tail: *mut u8,
    /// Pieces in the chain.
    pub count: usize,
}

impl Chain {
    /// The empty chain.
    pub const EMPTY: Chain = Chain {
        head: core::ptr::null_mut(),
        tail: core::ptr::null_mut(),
        count: 0,
    };
}

/// Reads the next link of a free piece.
///
/// # Safety
/// `p` must be a free piece (at least 16 bytes, 16-aligned, owned by the list).
#[inline(always)]
pub unsafe fn next_of(p: *mut u8) -> *mut u8 {
    // SAFETY: caller contract: p is a live free piece, aligned for a pointer.
    unsafe { *p.cast::<*mut u8>() }
}

/// Marks `p` free: link to `next`, store the key.
///
/// # Safety
/// As [`next_of`].
#[inline(always)]
pub unsafe fn mark_free(p: *mut u8, next: *mut u8, key: u64) {
    // SAFETY: caller contract: p has 16 writable, 16-aligned bytes.
    unsafe {
        *p.cast::<*mut u8>() = next;
        *p.cast::<u64>().add(1) = key;
    }
}

/// Stores the free key only (a piece going into a thread cache: its link
/// is written when a batch leaves the cache).
///
/// # Safety
/// As [`next_of`].
#[inline(always)]
pub unsafe fn set_free_key(p: *mut u8, key: u64) {
    // SAFETY: caller contract: p has 16 writable, 16-aligned bytes.
    unsafe { *p.cast::<u64>().add(1) = key };
}

/// Clears the free key of a piece being handed out.
///
/// # Safety
/// As [`next_of`].
#[inline(always)]
pub unsafe fn mark_used(p: *mut u8) {
    // SAFETY: caller contract.
    unsafe { *p.cast::<u64>().add(1) = 0 };
}

/// Whether the piece carries the free key.
///
/// # Safety
/// `p` must be a piece inside a carved part of a small slab.
#[inline(always)]
pub unsafe fn has_free_key(p: *mut u8, key: u64) -> bool {
    // SAFETY: caller contract: the piece is mapped and at least 16 bytes.
    unsafe { *p.cast::<u64>().add(1) == key }
}

/// What a thread cache's refill gets (see [`ClassPool::take_batch`]).
pub enum Refill {
    /// Linked free pieces.
    Chain(Chain),
    /// `n` fresh pieces of the class from address `base`, keys set.
    Carved {
        /// First piece.
        base: usize,
        /// Pieces.
        n: usize,
    },
}

/// Whole batches kept as they arrived, so moving one between a thread
/// cache and the shared list is O(1) under the lock (no walk to find a
/// tail through memory another core just wrote).
const BATCHES: usize = 16;

struct ClassInner {
    /// Batches handed back by thread caches, newest last.
    batches: [Chain; BATCHES],
    nbatches: usize,
    /// Everything else (single pieces, overflow), one list.
    free: Chain,
    /// Slab being carved: slot index, or usize::MAX.
    carving: usize,
    /// Slabs this class has taken so far: each is twice the last.
    grown: u32,
    /// Pieces on the shared list and in the kept batches.
    listed: usize,
    /// Bytes of listed pieces at which a give() trims the class (the
    /// hysteresis of the automatic return of empty slabs).
    trim_at: usize,
}

/// The least free bytes a class keeps on its shared list before a free
/// gives its empty slabs back by itself: two grown slabs (or two of the
/// class's own slabs when bigger), so a program that frees and reallocates
/// a working set does not make the driver unmap and map slabs all the time.
pub const AUTO_TRIM_MIN: usize = 2 * GROWN_SLAB;

/// The first slab of a class: the driver's smallest (64 KiB). A program
/// that uses a class lightly pins 64 KiB for it, not 2 MiB; a busier class
/// doubles its slabs up to [`GROWN_SLAB`].
pub const FIRST_SLAB: usize = 64 * 1024;

/// Where slab growth stops (unless two pieces need more): every slab is
/// populated and pinned in full, so the last one of a class is on average
/// half unused; 256 KiB bounds that at 128 KiB per class, while a program
/// at the driver's 64 MiB cap still needs only ~256 slabs (driver calls).
pub const GROWN_SLAB: usize = 256 * 1024;

/// Length of the next slab of class `c` after `grown` slabs: doubling from
/// [`FIRST_SLAB`] to [`GROWN_SLAB`], at least two pieces, at most a slot.
pub const fn slab_len(c: usize, grown: u32) -> usize {
    let g = if grown > 2 { 2 } else { grown };
    let by_growth = FIRST_SLAB << g;
    let two = 2 * class_size(c);
    let len = if by_growth > two { by_growth } else { two };
    if len > SLAB_SIZE { SLAB_SIZE } else { len }
}

/// Shared state of one class.
pub struct ClassPool {
    lock: SpinLock,
    inner: UnsafeCell<ClassInner>,
}

// SAFETY: `inner` is only accessed with `lock` held.
unsafe impl Sync for ClassPool {}
// SAFETY: raw pointers into the arena are not thread-bound.
unsafe impl Send for ClassPool {}

impl Default for ClassPool {
    fn default() -> Self {
        Self {
            lock: SpinLock::new(),
            inner: UnsafeCell::new(ClassInner {
                batches: [Chain::EMPTY; BATCHES],
                nbatches: 0,
                free: Chain::EMPTY,
                carving: usize::MAX,
                grown: 0,
                listed: 0,
                trim_at: AUTO_TRIM_MIN,
            }),
        }
    }
}

impl ClassPool {
    /// Takes up to `want` free pieces as a linked chain with keys set (at
    /// least one unless memory ran out): from the free list, then carved.
    /// The path of heaps without thread caches.
    pub fn take(
        &self,
        arena: &Arena,
        c: usize,
        want: usize,
        key: u64,
    ) -> Result<Chain, BackendError> {
        let _g = self.lock.lock();
        // SAFETY: lock held.
        let inner = unsafe { &mut *self.inner.get() };
        let mut out = Self::take_listed(inner, want);
        let size = class_size(c);
        while out.count < want {
            let (base, n) = match Self::carve(inner, arena, c, want - out.count) {
                Ok(r) => r,
                Err(e) if out.count == 0 => return Err(e),
                Err(_) => break,
            };
            // Link the new pieces in address order, then prepend to `out`.
            for k in 0..n {
                let p = (base + k * size) as *mut u8;
                let next = if k + 1 < n {
                    (base + (k + 1) * size) as *mut u8
                } else {
                    out.head
                };
                // SAFETY: p is a fresh piece in a mapped slab owned by this class.
                unsafe { mark_free(p, next, key) };
            }
            if out.count == 0 {
                out.tail = (base + (n - 1) * size) as *mut u8;
            }
            out.head = base as *mut u8;
            out.count += n;
        }
        Ok(out)
    }

    /// A thread cache's refill of up to `want` pieces: a whole batch a
    /// cache gave back (O(1), up to [`crate::class::cache_limit`] pieces:
    /// what fits an empty bin), else pieces of the free list, else a range
    /// carved from the slab, handed over as addresses without writing a
    /// byte of it: a fresh slab's pages are touched when the program uses
    /// its pieces, not when a cache fills up.
    pub fn take_batch(
        &self,
        arena: &Arena,
        c: usize,
        want: usize,
        key: u64,
    ) -> Result<Refill, BackendError> {
        let _g = self.lock.lock();
        // SAFETY: lock held.
        let inner = unsafe { &mut *self.inner.get() };
        if inner.nbatches > 0 {
            inner.nbatches -= 1;
            let b = inner.batches[inner.nbatches];
            inner.listed -= b.count;
            return Ok(Refill::Chain(b));
        }
        if inner.free.count > 0 {
            return Ok(Refill::Chain(Self::take_listed(inner, want)));
        }
        // At most a page of fresh pieces (or one larger piece): each gets
        // the free key, so a free() of one the program never got aborts
        // as before, and a refill touches one new page, not 64 KiB.
        let size = class_size(c);
        let (base, n) = Self::carve(inner, arena, c, want.min((PAGE_SIZE / size).max(1)))?;
        for k in 0..n {
            // SAFETY: a fresh piece in a mapped slab owned by this class.
            unsafe { set_free_key((base + k * size) as *mut u8, key) };
        }
        Ok(Refill::Carved { base, n })
    }

    /// Unlinks up to `want` pieces from the front of the free list.
    fn take_listed(inner: &mut ClassInner, want: usize) -> Chain {
        let n = want.min(inner.free.count);
        if n == 0 {
            return Chain::EMPTY;
        }
        let head = inner.free.head;
        let mut tail = head;
        for _ in 1..n {
            // SAFETY: the first n pieces of the list are free pieces.
            tail = unsafe { next_of(tail) };
        }
        // SAFETY: tail is a free piece.
        inner.free.head = unsafe { next_of(tail) };
        // SAFETY: tail is a free piece we now own; end the chain there.
        unsafe { *tail.cast::<*mut u8>() = core::ptr::null_mut() };
        inner.free.count -= n;
        inner.listed -= n;
        Chain {
            head,
            tail,
            count: n,
        }
    }

    /// Claims up to `want` (>= 1) uncarved pieces of the class's current
    /// slab, taking a new slab first if needed. Returns the first piece's
    /// address and the count; only the carve mark is written.
    fn carve(
        inner: &mut ClassInner,
        arena: &Arena,
        c: usize,
        want: usize,
    ) -> Result<(usize, usize), BackendError> {
        if inner.carving == usize::MAX {
            let (slot, _) = arena.alloc_run(1, 1, KIND_SMALL, c, slab_len(c, inner.grown))?;
            inner.carving = slot;
            inner.grown = inner.grown.saturating_add(1);
        }
        let (size, slot) = (class_size(c), inner.carving);
        let meta = arena.meta(slot);
        let slab_end = meta.mapped();
        let bump = meta.bump.load(Ordering::Relaxed) as usize;
        let n = want.min((slab_end - bump) / size);
        let new_bump = bump + n * size;
        // Publish the carve mark; the pieces below it are now handed out
        // (to a cache or a caller), which is all free() checks it for.
        meta.bump.store(new_bump as u32, Ordering::Release);
        if new_bump + size > slab_end {
            inner.carving = usize::MAX;
        }
        Ok((arena.slot_addr(slot) + bump, n))
    }

    /// Returns a chain of free pieces of class `c` (keys already set).
    /// True when the free bytes listed reached the class's trim mark: the
    /// caller should [`ClassPool::trim`] it (after this lock is released).
    pub fn give(&self, c: usize, chain: Chain) -> bool {
        if chain.count == 0 {
            return false;
        }
        let _g = self.lock.lock();
        // SAFETY: lock held.
        let inner = unsafe { &mut *self.inner.get() };
        inner.listed += chain.count;
        if chain.count > 1 && inner.nbatches < BATCHES {
            inner.batches[inner.nbatches] = chain;
            inner.nbatches += 1;
        } else {
            Self::prepend(&mut inner.free, chain);
        }
        // At least two of the class's grown slabs' worth (a big class's
        // slab holds few pieces).
        inner.listed * class_size(c) >= inner.trim_at.max(2 * slab_len(c, 2))
    }

    /// Links `chain` (whose tail we own) in front of `list`.
    fn prepend(list: &mut Chain, chain: Chain) {
        // SAFETY: tail is a free piece of the chain we now own.
        unsafe { *chain.tail.cast::<*mut u8>() = list.head };
        if list.count == 0 {
            list.tail = chain.tail;
        }
        list.head = chain.head;
        list.count += chain.count;
    }

    /// Moves every kept batch onto the one list (trim and counts).
    fn merge_batches(inner: &mut ClassInner) {
        while inner.nbatches > 0 {
            inner.nbatches -= 1;
            let b = inner.batches[inner.nbatches];
            Self::prepend(&mut inner.free, b);
        }
    }

    /// Returns slabs of this class whose every carved piece is on the
    /// shared free list (pieces in thread caches keep their slab). Returns
    /// the bytes released. O(free pieces), under the class lock.
    pub fn trim(&self, arena: &Arena, c: usize) -> usize {
        const RELEASE: u32 = u32::MAX;
        let _g = self.lock.lock();
        // SAFETY: lock held.
        let inner = unsafe { &mut *self.inner.get() };
        Self::merge_batches(inner);
        if inner.free.count == 0 {
            return 0;
        }
        let size = class_size(c);
        // Pass 1: free pieces per slab.
        let mut p = inner.free.head;
        while !p.is_null() {
            let m = arena.meta(arena.slot_of(p as usize));
            m.scratch
                .store(m.scratch.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
            // SAFETY: p is on the free list.
            p = unsafe { next_of(p) };
        }
        // Pass 2: unlink pieces of slabs that are entirely free.
        let mut kept = Chain::EMPTY;
        let mut p = inner.free.head;
        while !p.is_null() {
            // SAFETY: p is on the free list (its slab is still mapped).
            let next = unsafe { next_of(p) };
            let slot = arena.slot_of(p as usize);
            let m = arena.meta(slot);
            let carved = m.bump.load(Ordering::Relaxed) / size as u32;
            let n = m.scratch.load(Ordering::Relaxed);
            if slot != inner.carving && (n == RELEASE || n == carved) {
                m.scratch.store(RELEASE, Ordering::Relaxed);
            } else {
                if kept.count == 0 {
                    kept.head = p;
                } else {
                    // SAFETY: kept.tail is a free piece we own.
                    unsafe { *kept.tail.cast::<*mut u8>() = p };
                }
                kept.tail = p;
                kept.count += 1;
            }
            p = next;
        }
        if kept.count > 0 {
            // SAFETY: kept.tail is a free piece; end the list there.
            unsafe { *kept.tail.cast::<*mut u8>() = core::ptr::null_mut() };
        }
        inner.free = kept;
        inner.listed = kept.count;
        // Next automatic trim when the free bytes left have doubled.
        inner.trim_at = AUTO_TRIM_MIN.max(2 * kept.count * size);
        // Pass 3: release marked slabs, reset the counters of the others.
        let mut released = 0;
        for slot in 0..arena.slots_in_use() {
            let m = arena.meta(slot);
            if m.kind_class() != (KIND_SMALL, c) {
                continue;
            }
            if m.scratch.swap(0, Ordering::Relaxed) == RELEASE {
                released += arena.release_small(slot);
            }
        }
        released
    }

    /// Free pieces on the shared list (tests and stats).
    pub fn free_count(&self) -> usize {
        let _g = self.lock.lock();
        // SAFETY: lock held.
        let inner = unsafe { &*self.inner.get() };
        inner.free.count
            + inner.batches[..inner.nbatches]
                .iter()
                .map(|b| b.count)
                .sum::<usize>()
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
