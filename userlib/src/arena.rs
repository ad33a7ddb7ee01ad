//! The arena: one large, slab-aligned virtual reservation into which slabs
//! are mapped at fixed slots.
//!
//! Reserving the whole range up front (PROT_NONE, MAP_NORESERVE: address
//! space only) is what makes everything else O(1): a pointer's slot is
//! `(p - base) >> SLAB_SHIFT`, its slab metadata is `slots[slot]` and its
//! physical address is one page-table load ([`mod@crate::v2p`]). Slabs are
//! placed with MAP_FIXED over the reservation and put back to PROT_NONE
//! when released. The tables sit right below the arena; with host memory
//! the first [`PREMAP_SLOTS`] slots are mapped read-write together with
//! them, so a short program's first slabs cost no system call.

use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use crate::Error;
use crate::backend::{self, Backend, BackendError, SlabPhys};
use crate::class::{PAGE_SHIFT, PAGE_SIZE, PAGES_PER_SLAB, SLAB_SHIFT, SLAB_SIZE};
use crate::lock::SpinLock;
use crate::v2p::{PHYS_LAZY, PHYS_NOT_PINNED, PageEntry, Phys, V2pError};

/// Slot holds nothing; reservation only.
pub const KIND_UNMAPPED: u32 = 0;
/// Slot is free but still mapped (kept for reuse).
pub const KIND_FREE_MAPPED: u32 = 1;
/// Slot is a slab carved into pieces of one class.
pub const KIND_SMALL: u32 = 2;
/// Slot is the first slab of a large allocation.
pub const KIND_LARGE: u32 = 3;
/// Slot is a later slab of a large allocation.
pub const KIND_TAIL: u32 = 4;
/// Slot is a grow slab: blocks realloc() enlarges, buddy-placed (see
/// [`crate::grow`]).
pub const KIND_GROW: u32 = 5;

mod entries;
mod fork;
mod lazy;
mod resize;
#[cfg(test)]
mod tests;

const PINNED_BIT: u32 = 1 << 16;
/// The slot's page entries are not written: host memory nobody asked a
/// physical address of yet. Its entries' contiguity is all zero, so v2p
/// takes the cold path, which pins the slab and writes them
/// ([`Arena::v2p_cold`]). A short program never pays a page-table page
/// per size class (one page fault each) for lookups it never makes.
const UNWRITTEN_BIT: u32 = 1 << 17;

/// Per-slot metadata, kept out of band so pieces have no headers.
#[repr(C)]
pub struct SlotMeta {
    /// kind | class << 8 | pinned << 16.
    info: AtomicU32,
    /// Large head: number of slabs in the run.
    pub run: AtomicU32,
    /// Small slab: bytes carved so far (pieces below are or were handed out).
    pub bump: AtomicU32,
    /// Device slab id, `u32::MAX` for host memory.
    dev_id: AtomicU32,
    /// Free pieces counted by a trim (owned by the slab's class lock).
    pub scratch: AtomicU32,
    /// Bytes mapped at the start of the slot (a power of two from 64 KiB
    /// for device slabs, pages for host memory); the rest is reservation.
    len: AtomicU32,
}

impl SlotMeta {
    /// (kind, class).
    #[inline(always)]
    pub fn kind_class(&self) -> (u32, usize) {
        let i = self.info.load(Ordering::Acquire);
        (i & 0xff, ((i >> 8) & 0xff) as usize)
    }

    fn pinned(&self) -> bool {
        self.info.load(Ordering::Relaxed) & PINNED_BIT != 0
    }

    /// See [`UNWRITTEN_BIT`].
    fn unwritten(&self) -> bool {
        self.info.load(Ordering::Acquire) & UNWRITTEN_BIT != 0
    }

    /// Sets or clears [`UNWRITTEN_BIT`] (under the arena lock, as `set`).
    fn set_unwritten(&self, on: bool) {
        if on {
            self.info.fetch_or(UNWRITTEN_BIT, Ordering::Release);
        } else {
            self.info.fetch_and(!UNWRITTEN_BIT, Ordering::Release);
        }
    }

    /// Bytes mapped in the slot.
    #[inline(always)]
    pub fn mapped(&self) -> usize {
        self.len.load(Ordering::Relaxed) as usize
    }

    /// Sets kind, class and pinned; keeps [`UNWRITTEN_BIT`] (the entries'
    /// state changes only with the mapping). Under the arena lock.
    fn set(&self, kind: u32, class: usize, pinned: bool) {
        let p = if pinned { PINNED_BIT } else { 0 };
        let keep = self.info.load(Ordering::Relaxed) & UNWRITTEN_BIT;
        self.info
            .store(kind | (class as u32) << 8 | p | keep, Ordering::Release);
    }
}

struct ArenaState {
    high_water: usize,
    /// Slots from here up to [`Arena::premapped`] were never backed: still
    /// the untouched read-write memory [`Arena::new`] mapped for them.
    untouched_from: usize,
    retained: usize,
    /// Fork: copies of the pinned slabs for the child (0 = none).
    shadow: usize,
    shadow_len: usize,
}

/// The reserved range plus the slot and page tables.
pub struct Arena {
    base: usize,
    size: usize,
    /// The whole reservation (start, length): the arena plus its unused
    /// alignment head and tail.
    reserved: (usize, usize),
    nslots: usize,
    /// Slots at the start of the arena mapped read-write with the tables
    /// (host memory only; see [`PREMAP_SLOTS`]).
    premapped: usize,
    slots: *mut SlotMeta,
    pages: *mut PageEntry,
    lock: SpinLock,
    state: UnsafeCell<ArenaState>,
    backend: Backend,
    fallback: bool,
    retain: usize,
    fallback_bytes: AtomicU64,
    /// Unit tests: makes [`Arena::back_slot`] fail on demand.
    #[cfg(test)]
    inject: tests::FailBacking,
}

// SAFETY: the raw tables are only written under `lock` (or before the slot
// is published) and read through atomics; `state` is only touched under `lock`.
unsafe impl Sync for Arena {}
// SAFETY: the arena owns its mappings; nothing is tied to the creating thread.
unsafe impl Send for Arena {}

/// Alignment of the arena base: large aligned requests can start at any
/// slab whose address has the alignment, up to this.
pub const ARENA_ALIGN: usize = 1 << 30;

/// Slots whose memory host backends get mapped read-write together with
/// the tables, in the same mmap() (untouched, so neither resident nor
/// committed): a class's first slab there costs no system call. A short
/// program (a shell loop runs hundreds) uses one slot per size class, so
/// this saves one mmap() per class per process, and the slots form one
/// mapping instead of two per slab for fork() and exit to walk.
pub const PREMAP_SLOTS: usize = 16;

/// Maps `bytes` read-write at `addr`, inside our own reservation.
fn map_tables(addr: usize, bytes: usize) -> Result<*mut u8, Error> {
    // SAFETY: MAP_FIXED over the caller's fresh reservation, which nothing
    // uses yet; MAP_NORESERVE so untouched entries and slots cost nothing.
    let p = unsafe {
        libc::mmap(
            addr as *mut libc::c_void,
            bytes,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE | libc::MAP_FIXED,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        Err(Error::Reserve(backend::errno()))
    } else {
        Ok(p.cast())
    }
}

impl Arena {
    /// Reserves `size` bytes (rounded to slabs) of address space.
    pub fn new(
        size: usize,
        backend: Backend,
        fallback: bool,
        retain: usize,
    ) -> Result<Self, Error> {
        let size = size.max(SLAB_SIZE).next_multiple_of(SLAB_SIZE);
        let nslots = size >> SLAB_SHIFT;
        // The page table, then the slot table, right below the arena.
        let pages_len = (size >> PAGE_SHIFT) * size_of::<PageEntry>();
        let tables_len = (pages_len + nslots * size_of::<SlotMeta>()).next_multiple_of(PAGE_SIZE);
        let span = tables_len + size + ARENA_ALIGN;
        // SAFETY: a fresh reservation, address space only.
        let raw = unsafe {
            libc::mmap(
                core::ptr::null_mut(),
                span,
                libc::PROT_NONE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        if raw == libc::MAP_FAILED {
            return Err(Error::Reserve(backend::errno()));
        }
        let raw = raw as usize;
        // The unaligned head and the tail stay reserved (address space
        // only, never touched): trimming them would cost two more system
        // calls in every process's start-up. The tables sit just below the
        // aligned base, so one mmap() gives them and the premapped slots.
        let base = (raw + tables_len).next_multiple_of(ARENA_ALIGN);
        let mut premapped = if backend.premaps_slabs() {
            PREMAP_SLOTS.min(nslots)
        } else {
            0
        };
        let mut tables = map_tables(base - tables_len, tables_len + (premapped << SLAB_SHIFT));
        if tables.is_err() && premapped > 0 {
            // Strict overcommit (vm.overcommit_memory=2) charges the
            // premapped slots in full: go without them.
            premapped = 0;
            tables = map_tables(base - tables_len, tables_len);
        }
        let tables = match tables {
            Ok(t) => t,
            Err(e) => {
                // SAFETY: the reservation just made; nothing uses it.
                unsafe { libc::munmap(raw as *mut libc::c_void, span) };
                return Err(e);
            }
        };
        let pages = tables.cast::<PageEntry>();
        // SAFETY: pages_len is inside the tables mapping; it is a multiple
        // of 16, so the slot table is aligned for SlotMeta.
        let slots = unsafe { tables.add(pages_len) }.cast::<SlotMeta>();
        Ok(Self {
            base,
            size,
            reserved: (raw, span),
            nslots,
            premapped,
            slots,
            pages,
            lock: SpinLock::new(),
            state: UnsafeCell::new(ArenaState {
                high_water: 0,
                untouched_from: 0,
                retained: 0,
                shadow: 0,
                shadow_len: 0,
            }),
            backend,
            fallback,
            retain,
            fallback_bytes: AtomicU64::new(0),
            #[cfg(test)]
            inject: tests::FailBacking::default(),
        })
    }

    /// Start of the arena.
    #[inline(always)]
    pub fn base(&self) -> usize {
        self.base
    }

    /// Bytes reserved.
    #[inline(always)]
    pub fn size(&self) -> usize {
        self.size
    }

    /// Whether `p` is inside the arena.
    #[inline(always)]
    pub fn contains(&self, p: usize) -> bool {
        p.wrapping_sub(self.base) < self.size
    }

    /// Slot index of an arena address.
    #[inline(always)]
    pub fn slot_of(&self, p: usize) -> usize {
        (p - self.base) >> SLAB_SHIFT
    }

    /// Address of slot `i`.
    #[inline(always)]
    pub fn slot_addr(&self, i: usize) -> usize {
        self.base + (i << SLAB_SHIFT)
    }

    /// Metadata of slot `i` (`i < nslots`).
    #[inline(always)]
    pub fn meta(&self, i: usize) -> &SlotMeta {
        debug_assert!(i < self.nslots);
        // SAFETY: i < nslots (callers derive i from an arena address) and
        // the table has nslots zero-initialised entries.
        unsafe { &*self.slots.add(i) }
    }

    /// The slot table (`size() >> SLAB_SHIFT` entries, alive as long as
    /// the arena), for the thread caches' inline free path.
    #[inline(always)]
    pub fn meta_table(&self) -> *const SlotMeta {
        self.slots
    }

    fn page(&self, i: usize) -> &PageEntry {
        // SAFETY: callers pass a page index of a slot < nslots.
        unsafe { &*self.pages.add(i) }
    }

    /// Physical address of `p` and the bytes physically contiguous from it:
    /// one page-table load, no syscall, no lock; see [`mod@crate::v2p`].
    #[inline(always)]
    pub fn v2p(&self, p: usize) -> Result<Phys, V2pError> {
        let off = p.wrapping_sub(self.base);
        if off >= self.size {
            return Err(V2pError::OutsideArena);
        }
        // SAFETY: off < size and `pages` has size >> PAGE_SHIFT entries.
        let e = unsafe { &*self.pages.add(off >> PAGE_SHIFT) };
        // Acquire: a contiguity written after the page's address (see
        // fill_contig) comes with it.
        let contig = e.contig.load(Ordering::Acquire);
        let phys = e.phys.load(Ordering::Relaxed);
        if contig == 0 {
            return self.v2p_unwritten(p);
        }
        if phys >= PHYS_LAZY {
            return self.v2p_cold(p, phys);
        }
        let in_page = off & (PAGE_SIZE - 1);
        Ok(Phys {
            addr: phys + in_page as u64,
            contig: contig as usize - in_page,
        })
    }

    /// The slab source.
    pub fn backend(&self) -> &Backend {
        &self.backend
    }

    /// Bytes of unpinned fallback memory mapped now.
    pub fn fallback_bytes(&self) -> u64 {
        self.fallback_bytes.load(Ordering::Relaxed)
    }

    #[allow(clippy::mut_from_ref)]
    fn state(&self) -> &mut ArenaState {
        // SAFETY: only called with `lock` held, so there is one user at a time.
        unsafe { &mut *self.state.get() }
    }

    /// Gives slot `i` `len` bytes of memory (`len` already a backend
    /// granule). Returns whether it is freshly mapped (zeroed).
    fn back_slot(&self, i: usize, len: usize) -> Result<bool, BackendError> {
        #[cfg(test)]
        if self.inject.fails_now() {
            return Err(BackendError::OutOfPinned);
        }
        let m = self.meta(i);
        let st = self.state();
        // Never backed: the slot's metadata is still zero (unmapped; not
        // read, so its table page is first touched by a write) and, when
        // premapped, its memory still the untouched mapping from new().
        let untouched = i >= st.untouched_from;
        st.untouched_from = st.untouched_from.max(i + 1);
        if !untouched && m.kind_class().0 == KIND_FREE_MAPPED {
            if m.mapped() == len {
                self.state().retained -= len;
                return Ok(false);
            }
            self.state().retained -= m.mapped();
            self.unmap_slot(i);
        }
        let addr = self.slot_addr(i);
        let mut phys: SlabPhys = [PHYS_NOT_PINNED; PAGES_PER_SLAB];
        let premapped = untouched && i < self.premapped;
        // SAFETY: the slot is unmapped (reservation only, or untouched
        // premapped memory) and inside the arena.
        let (pinned, id) = match unsafe { self.backend.map_slab(addr, len, &mut phys, premapped) } {
            Ok(id) => (true, id),
            Err(e) => {
                if !self.fallback {
                    return Err(e);
                }
                // SAFETY: as above.
                unsafe { backend::map_unpinned(addr, len) }?;
                self.fallback_bytes.fetch_add(len as u64, Ordering::Relaxed);
                phys = [PHYS_NOT_PINNED; PAGES_PER_SLAB];
                (false, u32::MAX)
            }
        };
        // Only the mapped pages' entries: the rest stay untouched (no page
        // faults in the table for address space nobody uses). Lazy host
        // memory writes none until a v2p asks (UNWRITTEN_BIT).
        let unwritten = phys[0] == PHYS_LAZY;
        if !unwritten {
            let first = i * PAGES_PER_SLAB;
            for (k, ph) in phys.iter().take(len / PAGE_SIZE).enumerate() {
                self.page(first + k).phys.store(*ph, Ordering::Relaxed);
            }
        }
        m.len.store(len as u32, Ordering::Relaxed);
        m.dev_id.store(id, Ordering::Relaxed);
        m.set(KIND_FREE_MAPPED, 0, pinned);
        m.set_unwritten(unwritten);
        Ok(true)
    }

    /// Frees slot `i` for reuse: kept mapped while the retained bytes stay
    /// under PKTSLAB_RETAIN (the hysteresis that spares the driver a
    /// free/alloc pair per loop iteration), else returned to the backend.
    fn release_slot(&self, i: usize, may_retain: bool) {
        let m = self.meta(i);
        let st = self.state();
        if may_retain && st.retained + m.mapped() <= self.retain {
            st.retained += m.mapped();
            m.set(KIND_FREE_MAPPED, 0, m.pinned());
            return;
        }
        self.unmap_slot(i);
    }

    /// Returns slot `i`'s memory to where it came from; the slot becomes
    /// reservation only.
    fn unmap_slot(&self, i: usize) {
        let m = self.meta(i);
        let (addr, len) = (self.slot_addr(i), m.mapped());
        self.clear_pages(i);
        if m.pinned() {
            // SAFETY: the slot's allocation was freed; nothing uses it.
            unsafe {
                self.backend
                    .unmap_slab(addr, m.dev_id.load(Ordering::Relaxed), len)
            };
        } else {
            // SAFETY: as above.
            unsafe { backend::reserve_fixed(addr, len) };
            self.fallback_bytes.fetch_sub(len as u64, Ordering::Relaxed);
        }
        m.len.store(0, Ordering::Relaxed);
        m.set(KIND_UNMAPPED, 0, false);
        m.set_unwritten(false);
    }

    fn is_free(&self, i: usize) -> bool {
        matches!(
            self.meta(i).kind_class().0,
            KIND_UNMAPPED | KIND_FREE_MAPPED
        )
    }

    /// Slot lengths of a run of `n` slots whose last one holds `tail` bytes.
    fn slot_len(&self, j: usize, last: usize, tail: usize) -> usize {
        if j == last {
            self.backend.granule(tail.max(1))
        } else {
            SLAB_SIZE
        }
    }

    /// Claims `n` consecutive slots whose first address is a multiple of
    /// `align_slots` slabs, backs them (the last with `tail` bytes, rounded
    /// to the backend's granule: a small slab, or the page-granular end of
    /// a large run), and marks them as one allocation (`kind` =
    /// [`KIND_SMALL`] with `class`, or [`KIND_LARGE`]).
    /// Returns the first slot and whether all memory is fresh (zeroed).
    pub fn alloc_run(
        &self,
        n: usize,
        align_slots: usize,
        kind: u32,
        class: usize,
        tail: usize,
    ) -> Result<(usize, bool), BackendError> {
        if n == 0 || n > self.nslots {
            return Err(BackendError::OutOfPinned);
        }
        let align_slots = align_slots.max(1);
        let _g = self.lock.lock();
        let st = self.state();
        // First fit below the high-water mark, else extend it.
        let mut start = None;
        let mut i = 0;
        while i + n <= st.high_water {
            match (i..i + n).rev().find(|&j| !self.is_free(j)) {
                None => {
                    start = Some(i);
                    break;
                }
                Some(busy) => i = (busy + 1).next_multiple_of(align_slots),
            }
        }
        let start = match start {
            Some(s) => s,
            None => {
                let s = st.high_water.next_multiple_of(align_slots);
                if s + n > self.nslots {
                    return Err(BackendError::OutOfPinned);
                }
                s
            }
        };
        let mut fresh = true;
        let last = start + n - 1;
        for j in start..start + n {
            match self.back_slot(j, self.slot_len(j, last, tail)) {
                Ok(f) => fresh &= f,
                Err(e) => {
                    // Slots already backed stay mapped and free for reuse.
                    for k in start..j {
                        self.release_slot(k, true);
                    }
                    self.state().high_water = self.state().high_water.max(j);
                    return Err(e);
                }
            }
        }
        let st = self.state();
        st.high_water = st.high_water.max(start + n);
        self.fill_contig(start, n);
        for j in start + 1..start + n {
            let m = self.meta(j);
            m.set(KIND_TAIL, 0, m.pinned());
        }
        let head = self.meta(start);
        head.run.store(n as u32, Ordering::Relaxed);
        head.bump.store(0, Ordering::Relaxed);
        head.set(kind, class, head.pinned());
        Ok((start, fresh))
    }

    /// Bytes mapped in the run starting at `first` (`n` slots).
    pub fn run_bytes(&self, first: usize, n: usize) -> usize {
        (n - 1) * SLAB_SIZE + self.meta(first + n - 1).mapped()
    }

    /// Frees a run made by [`Arena::alloc_run`].
    pub fn free_run(&self, first: usize) {
        let _g = self.lock.lock();
        let n = self.meta(first).run.load(Ordering::Relaxed) as usize;
        for j in first..first + n {
            self.release_slot(j, true);
        }
    }

    /// Gives an empty small slab back to the backend (no retention: trim
    /// exists to return memory). Returns the bytes released.
    pub fn release_small(&self, slot: usize) -> usize {
        let _g = self.lock.lock();
        let len = self.meta(slot).mapped();
        self.release_slot(slot, false);
        len
    }

    /// Slots below the high-water mark (every slot ever used).
    pub fn slots_in_use(&self) -> usize {
        let _g = self.lock.lock();
        self.state().high_water
    }

    /// Takes the arena lock (fork preparation).
    pub fn lock_for_fork(&self) {
        self.lock.raw_lock();
    }

    /// Releases the lock taken by [`Arena::lock_for_fork`].
    pub fn unlock_after_fork(&self) {
        self.lock.raw_unlock();
    }
}

impl Drop for Arena {
    fn drop(&mut self) {
        let hw = self.state.get_mut().high_water;
        for i in 0..hw {
            let m = self.meta(i);
            if m.kind_class().0 != KIND_UNMAPPED && m.pinned() {
                // SAFETY: the arena is being dropped; nothing uses its memory.
                unsafe {
                    self.backend.unmap_slab(
                        self.slot_addr(i),
                        m.dev_id.load(Ordering::Relaxed),
                        m.mapped(),
                    )
                };
            }
        }
        // SAFETY: we own these mappings and nobody refers to them any more.
        unsafe {
            // The tables live inside the reservation.
            libc::munmap(self.reserved.0 as *mut libc::c_void, self.reserved.1);
        }
    }
}
