//! A heap: an arena, its class pools, and the malloc-family semantics.
//!
//! The process-wide heap behind malloc() is one of these (see
//! [`crate::global`]); tests and private [`crate::Pool`]s make their own.
//! Every entry point takes an optional thread cache: the global heap passes
//! the calling thread's, private heaps go straight to the shared lists.

use core::sync::atomic::Ordering;

use crate::Error;
use crate::arena::{Arena, KIND_FREE_MAPPED, KIND_GROW, KIND_LARGE, KIND_SMALL, KIND_UNMAPPED};
use crate::backend::{Backend, BackendMode, set_errno};
use crate::class::{
    MAX_SMALL, MIN_ALIGN, NUM_CLASSES, PAGE_SIZE, SLAB_SIZE, class_of, class_size, slabs_for,
};
use crate::config::Config;
use crate::fault::{abort_ptr, notice};
use crate::grow::{GrowPool, GrowPtr};
use crate::slab::{Chain, ClassPool, Refill, has_free_key, mark_free, mark_used};
use crate::stats::{Counters, LARGE, Stats};
use crate::tcache::ThreadCache;

/// What an arena pointer is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Block {
    /// A piece of class `c`.
    Small(usize),
    /// A large run starting at `slot`, `n` slabs long.
    Large {
        /// First slot.
        slot: usize,
        /// Slabs in the run.
        n: usize,
        /// Bytes mapped in the run (the last slab may be partial).
        bytes: usize,
    },
    /// A block of a grow slab (see [`crate::grow`]).
    Grown {
        /// The grow slab's slot.
        slot: usize,
        /// Offset of the block in the slot.
        off: usize,
        /// Bytes in the block.
        bytes: usize,
    },
}

/// An allocator instance.
pub struct Heap {
    arena: Arena,
    classes: [ClassPool; NUM_CLASSES],
    grow: GrowPool,
    key: u64,
    counters: Counters,
    cfg: Config,
}

/// Bytes in the last slab of an `n`-slab run holding `size` bytes.
fn tail_of(size: usize, n: usize) -> usize {
    size - (n - 1) * SLAB_SIZE
}

/// A per-process random value for the free key (glibc's tcache_key idea):
/// user data equal to it by chance is a 2^-64 event.
fn random_key() -> u64 {
    let mut k = 0u64;
    // SAFETY: getrandom writes at most 8 bytes into `k`; it does not allocate.
    let n = unsafe { libc::getrandom((&raw mut k).cast(), 8, libc::GRND_NONBLOCK) };
    if n != 8 {
        // SAFETY: AT_RANDOM points at 16 random bytes the kernel gave us.
        let at = unsafe { libc::getauxval(libc::AT_RANDOM) } as *const u64;
        if !at.is_null() {
            // SAFETY: as above; read_unaligned because alignment is not promised.
            k = unsafe { at.read_unaligned() };
        }
        k ^= (&raw const k) as u64;
    }
    k | 1
}

impl Heap {
    /// Opens the backend and reserves the arena. A missing device prints
    /// one notice and leaves only the fallback rule.
    pub fn new(cfg: Config) -> Result<Self, Error> {
        let mut h = core::mem::MaybeUninit::<Self>::uninit();
        // SAFETY: h is writable memory for a Heap; init_in initialised it
        // when it returns Ok.
        unsafe {
            Self::init_in(h.as_mut_ptr(), cfg)?;
            Ok(h.assume_init())
        }
    }

    /// [`Heap::new`], built in place at `dst`. A heap is about 8 KiB (the
    /// class pools): the process heap is built straight into its static,
    /// not on the stack and then copied, which would take a stack page
    /// more than the program's own, one page fault in every process's
    /// first malloc().
    ///
    /// # Safety
    /// `dst` must be valid for writes of a `Heap`. On `Ok` it holds an
    /// initialised heap; on `Err` nothing was written that needs dropping.
    pub unsafe fn init_in(dst: *mut Self, cfg: Config) -> Result<(), Error> {
        let arena = Self::open_arena(&cfg)?;
        let grow = GrowPool::new(&arena, cfg.pin_max);
        // SAFETY: dst is valid for writes (caller); each field is written
        // once, in place, and every field is written before Ok.
        unsafe {
            (&raw mut (*dst).grow).write(grow);
            (&raw mut (*dst).arena).write(arena);
            let classes = (&raw mut (*dst).classes).cast::<ClassPool>();
            for c in 0..NUM_CLASSES {
                classes.add(c).write(ClassPool::default());
            }
            (&raw mut (*dst).key).write(random_key());
            (&raw mut (*dst).counters).write(Counters::new());
            (&raw mut (*dst).cfg).write(cfg);
        }
        Ok(())
    }

    /// Opens the backend (a missing device prints one notice) and
    /// reserves the arena.
    fn open_arena(cfg: &Config) -> Result<Arena, Error> {
        let (backend, missing) = Backend::open(cfg);
        if let Some(e) = missing {
            let path = cfg.device_path.to_str().unwrap_or("/dev/pktaccel");
            // SAFETY: strerror returns a static string for any errno.
            let msg = unsafe { core::ffi::CStr::from_ptr(libc::strerror(e)) }
                .to_str()
                .unwrap_or("error");
            if cfg.fallback {
                notice(format_args!(
                    "{path}: {msg}; no pinned memory, using ordinary memory (PKTSLAB_STRICT=1 makes allocations fail instead)"
                ));
            } else {
                notice(format_args!(
                    "{path}: {msg}; no pinned memory, allocations will fail (PKTSLAB_STRICT=1; unset it to use ordinary memory)"
                ));
            }
        }
        Arena::new(cfg.arena_size, backend, cfg.fallback, cfg.retain)
    }

    /// The configuration this heap was made with.
    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// Where physical addresses come from (on the host, asking probes
    /// /proc/self/pagemap the first time).
    pub fn mode(&self) -> BackendMode {
        self.arena.backend().mode()
    }

    /// The arena.
    pub fn arena(&self) -> &Arena {
        &self.arena
    }

    /// The shared counters.
    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    /// The free key.
    #[inline(always)]
    pub fn key(&self) -> u64 {
        self.key
    }

    /// Whether `p` is an arena address.
    #[inline(always)]
    pub fn contains(&self, p: *const u8) -> bool {
        self.arena.contains(p as usize)
    }

    /// Shared-list take of linked pieces for class `c`.
    pub(crate) fn take(&self, c: usize, want: usize) -> Option<Chain> {
        self.classes[c].take(&self.arena, c, want, self.key).ok()
    }

    /// A thread cache's refill for class `c` (see [`ClassPool::take_batch`]).
    pub(crate) fn take_batch(&self, c: usize, want: usize) -> Option<Refill> {
        self.classes[c]
            .take_batch(&self.arena, c, want, self.key)
            .ok()
    }

    /// Shared-list return for class `c`.
    /// Frees crossing the class's hysteresis mark give its entirely free
    /// slabs back right away (see [`crate::slab::AUTO_TRIM_MIN`]).
    /// Returns the bytes so released.
    pub(crate) fn give(&self, c: usize, chain: Chain) -> usize {
        if self.classes[c].give(c, chain) {
            self.classes[c].trim(&self.arena, c)
        } else {
            0
        }
    }

    /// Free pieces of class `c` on the shared list.
    pub fn shared_free_count(&self, c: usize) -> usize {
        self.classes[c].free_count()
    }

    /// Identifies an arena pointer, aborting (naming `call`) when it is not
    /// something this heap handed out and has not taken back.
    #[inline(always)]
    pub fn classify(&self, p: *mut u8, call: &str) -> Block {
        let a = p as usize;
        let slot = self.arena.slot_of(a);
        let m = self.arena.meta(slot);
        let (kind, c) = m.kind_class();
        let off = a - self.arena.slot_addr(slot);
        if kind == KIND_SMALL {
            let size = class_size(c);
            if off & (size - 1) != 0 || off >= m.bump.load(Ordering::Acquire) as usize {
                abort_ptr(call, "invalid pointer", a);
            }
            return Block::Small(c);
        }
        if kind == KIND_GROW {
            // Not cold: a buffer realloc() grows by small steps lands here
            // at every call.
            return match self.grow.classify(&self.arena, slot, off) {
                GrowPtr::Live(bytes) => Block::Grown { slot, off, bytes },
                GrowPtr::Freed => abort_ptr(call, "double free of", a),
                GrowPtr::Invalid => abort_ptr(call, "invalid pointer", a),
            };
        }
        self.classify_large(slot, kind, off, a, call)
    }

    #[cold]
    #[inline(never)]
    fn classify_large(&self, slot: usize, kind: u32, off: usize, a: usize, call: &str) -> Block {
        match kind {
            KIND_LARGE if off == 0 => {
                let n = self.arena.meta(slot).run.load(Ordering::Relaxed) as usize;
                Block::Large {
                    slot,
                    n,
                    bytes: self.arena.run_bytes(slot, n),
                }
            }
            KIND_FREE_MAPPED | KIND_UNMAPPED if off == 0 => abort_ptr(call, "double free of", a),
            _ => abort_ptr(call, "invalid pointer", a),
        }
    }

    /// Bytes usable at a block.
    #[inline(always)]
    pub fn block_size(b: Block) -> usize {
        match b {
            Block::Small(c) => class_size(c),
            Block::Large { bytes, .. } | Block::Grown { bytes, .. } => bytes,
        }
    }

    /// malloc(): NULL + ENOMEM when out of memory.
    #[inline(always)]
    pub fn malloc(&self, size: usize, tc: Option<&mut ThreadCache>) -> *mut u8 {
        if size <= MAX_SMALL {
            let c = class_of(size);
            let p = match tc {
                Some(t) => {
                    let p = t.pop(self, c);
                    if !p.is_null() {
                        t.counters.record_owned(c, size);
                    }
                    p
                }
                None => {
                    let p = self.take_one(c);
                    if !p.is_null() {
                        self.counters.record_shared(c, size, class_size(c));
                    }
                    p
                }
            };
            if p.is_null() {
                set_errno(libc::ENOMEM);
            }
            p
        } else {
            self.alloc_large(size, 1)
                .map_or(core::ptr::null_mut(), |(p, _)| p)
        }
    }

    fn take_one(&self, c: usize) -> *mut u8 {
        match self.take(c, 1) {
            Some(ch) => {
                // SAFETY: the chain has one free piece.
                unsafe { mark_used(ch.head) };
                ch.head
            }
            None => core::ptr::null_mut(),
        }
    }

    /// A large run for `size` bytes aligned to `align` (at least a slab).
    /// Returns the pointer and whether its memory is fresh (zeroed).
    pub fn alloc_large(&self, size: usize, align: usize) -> Option<(*mut u8, bool)> {
        let align_slots = align.div_ceil(SLAB_SIZE);
        if size > self.arena.size() || align > crate::arena::ARENA_ALIGN {
            set_errno(libc::ENOMEM);
            return None;
        }
        // A zero-byte request still gets its own run: callers expect a
        // unique, freeable pointer, as glibc gives.
        let n = slabs_for(size.max(1));
        match self
            .arena
            .alloc_run(n, align_slots, KIND_LARGE, 0, tail_of(size.max(1), n))
        {
            Ok((slot, fresh)) => {
                self.counters
                    .record_shared(LARGE, size, self.arena.run_bytes(slot, n));
                Some((self.arena.slot_addr(slot) as *mut u8, fresh))
            }
            Err(_) => {
                set_errno(libc::ENOMEM);
                None
            }
        }
    }

    /// free() of an arena pointer (`call` names the API for messages).
    ///
    /// # Safety
    /// `p` must be inside the arena; it is validated, and invalid pointers abort.
    #[inline(always)]
    pub unsafe fn free(&self, p: *mut u8, call: &str, tc: Option<&mut ThreadCache>) {
        let b = self.classify(p, call);
        // SAFETY: forwarded caller contract; b came from classify(p).
        unsafe { self.free_block(p, b, call, tc) }
    }

    /// Frees a classified block.
    ///
    /// # Safety
    /// `b` must be `classify(p)`.
    #[inline(always)]
    pub unsafe fn free_block(
        &self,
        p: *mut u8,
        b: Block,
        call: &str,
        tc: Option<&mut ThreadCache>,
    ) {
        match b {
            Block::Small(c) => {
                // SAFETY: classify proved p is a carved piece of class c.
                if unsafe { has_free_key(p, self.key) } {
                    abort_ptr(call, "double free of", p as usize);
                }
                match tc {
                    // SAFETY: p was validated as a live piece of class c.
                    Some(t) => unsafe { t.push(self, p, c) },
                    None => {
                        // SAFETY: p is a live piece being freed.
                        unsafe { mark_free(p, core::ptr::null_mut(), self.key) };
                        self.give(
                            c,
                            Chain {
                                head: p,
                                tail: p,
                                count: 1,
                            },
                        );
                    }
                }
            }
            Block::Large { slot, .. } => self.arena.free_run(slot),
            Block::Grown { slot, off, .. } => self.grow.free(&self.arena, slot, off),
        }
    }

    /// Usable size of a live arena block; aborts (naming `call`) on an
    /// invalid pointer or a freed piece.
    pub(crate) fn live_size(&self, p: *mut u8, call: &str) -> usize {
        let b = self.classify(p, call);
        // SAFETY: classify proved p is a carved piece; the key is readable.
        if matches!(b, Block::Small(_)) && unsafe { has_free_key(p, self.key) } {
            abort_ptr(call, "use after free of", p as usize);
        }
        Self::block_size(b)
    }

    /// usable size of an arena pointer.
    pub fn usable_size(&self, p: *mut u8, call: &str) -> usize {
        Self::block_size(self.classify(p, call))
    }

    /// realloc() of an arena pointer; `size > 0`.
    ///
    /// # Safety
    /// `p` must be inside the arena.
    pub unsafe fn realloc(
        &self,
        p: *mut u8,
        size: usize,
        call: &str,
        mut tc: Option<&mut ThreadCache>,
    ) -> *mut u8 {
        let b = self.classify(p, call);
        if let Block::Small(_) = b {
            // SAFETY: classify proved p is a carved piece; the key is readable.
            let freed = unsafe { has_free_key(p, self.key) };
            if freed {
                abort_ptr(call, "use after free of", p as usize);
            }
        }
        match b {
            Block::Small(c) if size <= MAX_SMALL && class_of(size) == c => return p,
            // Growing past a page: into a grow block, which the next
            // doublings enlarge in place.
            Block::Small(c) if size > class_size(c) && size > PAGE_SIZE => {
                // SAFETY: b is classify(p), a live piece.
                if let Some(q) = unsafe { self.move_to_grow(p, b, size, call, tc.as_deref_mut()) } {
                    return q;
                }
            }
            // Same power of two: nothing to do (no lock).
            Block::Grown { bytes, .. } if size <= bytes && size > bytes / 2 => return p,
            Block::Grown { slot, off, bytes } if size > PAGE_SIZE => {
                if let Some(now) = self.grow.resize(&self.arena, slot, off, size) {
                    if now != bytes {
                        // Counted as the move between classes it replaces.
                        self.count_grown(size, now, tc.as_deref_mut());
                    }
                    return p;
                }
                if size > bytes {
                    // SAFETY: b is classify(p), a live block.
                    let moved = unsafe { self.move_to_grow(p, b, size, call, tc.as_deref_mut()) };
                    if let Some(q) = moved {
                        return q;
                    }
                }
            }
            // A run keeps its place unless it would be more than half empty
            // and a small piece can hold the data.
            Block::Large { slot, n, bytes } if size > MAX_SMALL || size > bytes / 2 => {
                let want = slabs_for(size);
                if want < n {
                    self.arena.shrink_run(slot, want);
                    return p;
                }
                // In place: the slots after the run are free address space
                // (the arena is a reservation), or only its last, partial
                // slab needs more bytes.
                if size <= bytes || self.arena.grow_run(slot, want, tail_of(size, want)) {
                    return p;
                }
            }
            _ => {}
        }
        let q = self.malloc(size, tc.as_deref_mut());
        if q.is_null() {
            return q;
        }
        let keep = Self::block_size(b).min(size);
        // SAFETY: both blocks are live, distinct, and at least `keep` bytes.
        unsafe { core::ptr::copy_nonoverlapping(p, q, keep) };
        // SAFETY: b is classify(p).
        unsafe { self.free_block(p, b, call, tc) };
        q
    }

    /// Moves the live block `p` (`b`) into a new grow block of `size`
    /// bytes; None (nothing done) when the grow pool has none.
    ///
    /// # Safety
    /// `b` must be `classify(p)`, a live block.
    unsafe fn move_to_grow(
        &self,
        p: *mut u8,
        b: Block,
        size: usize,
        call: &str,
        mut tc: Option<&mut ThreadCache>,
    ) -> Option<*mut u8> {
        let (q, bytes) = self.grow.alloc(&self.arena, size)?;
        let q = q as *mut u8;
        self.count_grown(size, bytes, tc.as_deref_mut());
        // SAFETY: both blocks are live and distinct; the new one holds
        // `size` bytes and the old one its usable size.
        unsafe { core::ptr::copy_nonoverlapping(p, q, Self::block_size(b).min(size)) };
        // SAFETY: b is classify(p).
        unsafe { self.free_block(p, b, call, tc) };
        Some(q)
    }

    /// Counts a grow block of `bytes` for a request of `size` as an
    /// allocation of its class (in the thread's counters when it has a
    /// cache: no atomic).
    fn count_grown(&self, size: usize, bytes: usize, tc: Option<&mut ThreadCache>) {
        match tc {
            Some(t) => t.counters.record_owned(class_of(size), size),
            None => self.counters.record_shared(class_of(size), size, bytes),
        }
    }

    /// calloc() with the overflow check.
    pub fn calloc(&self, n: usize, size: usize, tc: Option<&mut ThreadCache>) -> *mut u8 {
        let Some(total) = n.checked_mul(size) else {
            set_errno(libc::ENOMEM);
            return core::ptr::null_mut();
        };
        if total > MAX_SMALL {
            return match self.alloc_large(total, 1) {
                Some((p, fresh)) => {
                    if !fresh {
                        // SAFETY: the run has at least `total` writable bytes.
                        unsafe { core::ptr::write_bytes(p, 0, total) };
                    }
                    p
                }
                None => core::ptr::null_mut(),
            };
        }
        let p = self.malloc(total, tc);
        if !p.is_null() {
            // SAFETY: the piece has at least `total` writable bytes.
            unsafe { core::ptr::write_bytes(p, 0, total) };
        }
        p
    }

    /// Aligned allocation: `align` must be a power of two.
    pub fn memalign(&self, align: usize, size: usize, tc: Option<&mut ThreadCache>) -> *mut u8 {
        if align <= MIN_ALIGN {
            return self.malloc(size, tc);
        }
        // A piece of class >= align sits at a multiple of its size from a
        // slab-aligned base, so it is aligned.
        let s = size.max(align);
        if s <= MAX_SMALL {
            return self.malloc(s, tc);
        }
        self.alloc_large(size, align.max(SLAB_SIZE))
            .map_or(core::ptr::null_mut(), |(p, _)| p)
    }

    /// Statistics of this heap's shared counters (the global heap adds its
    /// live thread caches).
    pub fn stats(&self) -> Stats {
        let mut s = Stats::empty(self.mode());
        self.counters.add_to(&mut s);
        s.bytes_pinned = self.arena.backend().pinned_bytes();
        s.bytes_fallback = self.arena.fallback_bytes();
        s
    }

    /// Gives entirely free small slabs back to the backend; returns bytes
    /// released. Pieces held in thread caches keep their slabs.
    pub fn trim(&self) -> usize {
        (0..NUM_CLASSES)
            .map(|c| self.classes[c].trim(&self.arena, c))
            .sum::<usize>()
            + self.grow.trim(&self.arena)
    }

    /// Fork preparation: take every lock, classes and the grow pool before
    /// the arena (the order allocation uses).
    pub fn lock_all(&self) {
        for c in &self.classes {
            c.lock_for_fork();
        }
        self.grow.lock_for_fork();
        self.arena.lock_for_fork();
    }

    /// Releases what [`Heap::lock_all`] took.
    pub fn unlock_all(&self) {
        self.arena.unlock_after_fork();
        self.grow.unlock_after_fork();
        for c in &self.classes {
            c.unlock_after_fork();
        }
    }
}
