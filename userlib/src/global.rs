//! The process-wide heap behind malloc(), with everything that makes a
//! malloc replacement safe in an unmodified program:
//!
//! - lazy initialisation inside the first call, without recursion: while
//!   this thread initialises (and while it calls dlsym, which may calloc),
//!   requests are served from a static bootstrap buffer;
//! - per-thread caches in `const` thread-local storage, registered with a
//!   pthread key whose destructor returns the cache at thread exit;
//! - `pthread_atfork` handlers holding every lock across fork();
//! - pointers from outside the arena handed to the next allocator
//!   (`dlsym(RTLD_NEXT, ...)`), never touched.

use core::cell::{Cell, UnsafeCell};
use core::mem::MaybeUninit;
use core::sync::atomic::{AtomicU8, AtomicUsize, Ordering};

use crate::backend::set_errno;
use crate::class::{MIN_ALIGN, class_of};
use crate::config::Config;
use crate::fault::{FixedBuf, abort_ptr, notice};
use crate::heap::Heap;
use crate::slab::has_free_key;
use crate::stats::Stats;
use crate::tcache::ThreadCache;
use crate::v2p::{Phys, V2pError};

mod explicit;
mod fork;
mod next;
mod ordinary;
mod thread_caches;

pub(crate) use fork::single_threaded;
use ordinary::BLOCKS;
pub use thread_caches::with_cache;
use thread_caches::{REGISTRY, cache_ptr, tc_here, thread_exit};

pub use explicit::{arena_alloc, arena_free, arena_realloc, cache_active_here, cached_here, trim};

use next::{
    free_ordinary, next_calloc, next_malloc, next_memalign, next_realloc, next_usable,
    note_ordinary, ordinary_malloc, pin_max, realloc_to_ordinary,
};

// Not zero when uninitialised: STATE then lives in .data, on the page
// the dynamic loader already wrote (it zeroes the start of .bss there),
// not on a fresh .bss page that the first malloc() would fault in twice
// (read, then write) and every process's exit (the report check) once.
const UNINIT: u8 = 1;
const INITIALIZING: u8 = 2;
const READY: u8 = 3;
const FAILED: u8 = 4;

static STATE: AtomicU8 = AtomicU8::new(UNINIT);
/// Copy of stderr for the exit report.
static STATS_FD: core::sync::atomic::AtomicI32 = core::sync::atomic::AtomicI32::new(-1);

struct HeapCell(UnsafeCell<MaybeUninit<Heap>>);
// SAFETY: written once by the initialising thread before STATE becomes
// READY (release); only read after observing READY (acquire).
unsafe impl Sync for HeapCell {}
static HEAP: HeapCell = HeapCell(UnsafeCell::new(MaybeUninit::uninit()));

struct KeyCell(UnsafeCell<libc::pthread_key_t>);
// SAFETY: written once during initialisation, before READY.
unsafe impl Sync for KeyCell {}
static TC_KEY: KeyCell = KeyCell(UnsafeCell::new(0));

thread_local! {
    /// This thread is inside our initialisation or a dlsym call: serve
    /// nested requests from the bootstrap buffer.
    static BUSY: Cell<bool> = const { Cell::new(false) };
}

// ---------------------------------------------------------------------------
// Bootstrap buffer
// ---------------------------------------------------------------------------

const BOOT_SIZE: usize = 256 * 1024;
#[repr(C, align(16))]
struct Boot(UnsafeCell<[u8; BOOT_SIZE]>);
// SAFETY: disjoint ranges are handed out by an atomic bump pointer.
unsafe impl Sync for Boot {}
static BOOT: Boot = Boot(UnsafeCell::new([0; BOOT_SIZE]));
static BOOT_USED: AtomicUsize = AtomicUsize::new(0);

fn boot_base() -> usize {
    BOOT.0.get() as usize
}

/// Whether `p` came from the bootstrap buffer.
pub fn is_boot(p: *const u8) -> bool {
    (p as usize).wrapping_sub(boot_base()) < BOOT_SIZE
}

fn boot_alloc(size: usize) -> *mut u8 {
    let Some(need) = size
        .checked_add(2 * MIN_ALIGN - 1)
        .map(|s| s & !(MIN_ALIGN - 1))
    else {
        set_errno(libc::ENOMEM);
        return core::ptr::null_mut();
    };
    let mut cur = BOOT_USED.load(Ordering::Relaxed);
    loop {
        if cur + need > BOOT_SIZE {
            set_errno(libc::ENOMEM);
            return core::ptr::null_mut();
        }
        match BOOT_USED.compare_exchange_weak(cur, cur + need, Ordering::Relaxed, Ordering::Relaxed)
        {
            Ok(_) => break,
            Err(c) => cur = c,
        }
    }
    let hdr = (boot_base() + cur) as *mut usize;
    // SAFETY: [cur, cur+need) is ours; the header is 16-aligned.
    unsafe { *hdr = size };
    (boot_base() + cur + MIN_ALIGN) as *mut u8
}

fn boot_size(p: *const u8) -> usize {
    // SAFETY: p is a bootstrap pointer; its header is 16 bytes before it.
    unsafe { *((p as usize - MIN_ALIGN) as *const usize) }
}

// ---------------------------------------------------------------------------
// Initialisation, statistics (fork: fork.rs; the thread caches: thread_caches.rs)
// ---------------------------------------------------------------------------

/// The process heap, initialising it on first use. `None` while this very
/// thread initialises (use the bootstrap buffer) or if the arena could not
/// be reserved (use the next allocator).
#[inline(always)]
pub fn heap() -> Option<&'static Heap> {
    if STATE.load(Ordering::Acquire) == READY {
        // SAFETY: READY is stored (release) only after HEAP was written.
        Some(unsafe { (*HEAP.0.get()).assume_init_ref() })
    } else {
        heap_slow()
    }
}

/// The process heap if it is already initialised (never initialises).
#[inline(always)]
pub fn heap_if_ready() -> Option<&'static Heap> {
    if STATE.load(Ordering::Acquire) == READY {
        // SAFETY: as in heap().
        Some(unsafe { (*HEAP.0.get()).assume_init_ref() })
    } else {
        None
    }
}

#[cold]
fn heap_slow() -> Option<&'static Heap> {
    loop {
        match STATE.load(Ordering::Acquire) {
            READY => return heap_if_ready(),
            FAILED => return None,
            INITIALIZING => {
                if BUSY.with(Cell::get) {
                    return None;
                }
                // SAFETY: sched_yield has no preconditions.
                unsafe { libc::sched_yield() };
            }
            _ => {
                if STATE
                    .compare_exchange(UNINIT, INITIALIZING, Ordering::Acquire, Ordering::Relaxed)
                    .is_ok()
                {
                    BUSY.with(|b| b.set(true));
                    init();
                    BUSY.with(|b| b.set(false));
                }
            }
        }
    }
}

fn init() {
    // SAFETY: only the thread that won the INITIALIZING race writes HEAP,
    // and nobody reads it before READY; built in place (see init_in).
    match unsafe { Heap::init_in((*HEAP.0.get()).as_mut_ptr(), Config::from_env()) } {
        Ok(()) => {
            // SAFETY: init_in returned Ok, so HEAP is initialised.
            let print_stats = unsafe { (*HEAP.0.get()).assume_init_ref() }
                .config()
                .print_stats;
            // SAFETY: the key cell is written once here; the destructor is
            // an extern "C" fn valid for the process lifetime.
            unsafe { libc::pthread_key_create(TC_KEY.0.get(), Some(thread_exit)) };
            // SAFETY: the handlers are extern "C" fns valid for the process lifetime.
            unsafe {
                libc::pthread_atfork(Some(fork::prepare), Some(fork::parent), Some(fork::child))
            };
            crate::client::router::register_fork_handlers();
            if print_stats {
                // Programs may close stderr in an atexit handler (coreutils
                // close_stdout does) before our report runs: keep a copy.
                // SAFETY: fcntl on fd 2; failure leaves -1, checked at use.
                let fd = unsafe { libc::fcntl(2, libc::F_DUPFD_CLOEXEC, 100) };
                STATS_FD.store(fd, Ordering::Relaxed);
            }
            STATE.store(READY, Ordering::Release);
        }
        Err(e) => {
            notice(format_args!(
                "cannot set up the arena ({e}); passing allocations to the system allocator"
            ));
            STATE.store(FAILED, Ordering::Release);
        }
    }
}

/// v2p on the process heap: the arena's answer, and "not pinned" (not
/// "outside the arena") for ordinary memory malloc() handed out above
/// PKTSLAB_PIN_MAX.
#[inline(always)]
pub fn v2p(p: *const u8) -> Result<Phys, V2pError> {
    match heap_if_ready() {
        Some(h) => match h.arena().v2p(p as usize) {
            Err(V2pError::OutsideArena) => v2p_outside(p),
            r => r,
        },
        None => Err(V2pError::OutsideArena),
    }
}

#[cold]
fn v2p_outside(p: *const u8) -> Result<Phys, V2pError> {
    if BLOCKS.contains(p as usize) {
        Err(V2pError::NotPinned)
    } else {
        Err(V2pError::OutsideArena)
    }
}

/// Statistics of the process heap, including live threads' caches.
pub fn stats() -> Option<Stats> {
    let h = heap_if_ready()?;
    let mut s = h.stats();
    (s.bytes_ordinary, s.ordinary_allocs) = BLOCKS.totals();
    let _g = REGISTRY.lock.lock();
    // SAFETY: registry lock held; listed caches are alive.
    let mut p = unsafe { *REGISTRY.head.get() };
    while !p.is_null() {
        // SAFETY: as above.
        unsafe {
            (*p).counters.add_to(&mut s);
            p = (*p).next;
        }
    }
    Some(s)
}

extern "C" fn print_stats_at_exit() {
    let Some(h) = heap_if_ready() else { return };
    if !h.config().print_stats {
        return;
    }
    if let Some(s) = stats() {
        let mut b = FixedBuf::<4096>::new();
        let _ = s.write_report(&mut b);
        let fd = STATS_FD.load(Ordering::Relaxed);
        b.write_to_fd(if fd >= 0 { fd } else { 2 });
    }
}

/// Runs at exit (and at unload): prints the PKTSLAB_STATS=1 report. A
/// .fini_array entry needs no registration, so nothing allocates.
#[used]
#[unsafe(link_section = ".fini_array")]
static PRINT_STATS_AT_EXIT: extern "C" fn() = print_stats_at_exit;

// ---------------------------------------------------------------------------
// The malloc family, as exported by the preload library
// ---------------------------------------------------------------------------

/// malloc(): a pop from this thread's cache when it holds a piece of the
/// class (no check of the heap's state: an active cache implies a ready
/// heap), else the general path.
#[inline(always)]
pub fn malloc(size: usize) -> *mut u8 {
    let tc = tc_here();
    // SAFETY: tc is this thread's cache, used only by this thread and not
    // borrowed elsewhere during the call.
    let t = unsafe { &mut *tc };
    if size <= t.fast_max {
        let p = t.try_pop(class_of(size), size, true);
        if !p.is_null() {
            return p;
        }
    }
    malloc_slow(size, false)
}

/// The rest of malloc, out of line: inlined, its register needs would
/// make every call save and restore registers, the fast pop included.
#[inline(never)]
fn malloc_slow(size: usize, all: bool) -> *mut u8 {
    malloc_in(size, all)
}

/// [`malloc`] for [`crate::PktslabAlloc`]: pinned at any size (a Rust program
/// that chose the pinned heap as its global allocator).
#[inline(always)]
pub fn malloc_pinned(size: usize) -> *mut u8 {
    // SAFETY: as in malloc.
    let t = unsafe { &mut *tc_here() };
    if size <= t.fast_max {
        let p = t.try_pop(class_of(size), size, false);
        if !p.is_null() {
            return p;
        }
    }
    malloc_slow(size, true)
}

#[inline(always)]
fn malloc_in(size: usize, all: bool) -> *mut u8 {
    match heap() {
        Some(h) => {
            if size > pin_max(h, all) {
                return ordinary_malloc(size);
            }
            let tc = cache_ptr();
            // SAFETY: as in with_cache.
            h.malloc(size, unsafe { tc.as_mut() })
        }
        None => fallback_malloc(size),
    }
}

#[cold]
fn fallback_malloc(size: usize) -> *mut u8 {
    if BUSY.with(Cell::get) || STATE.load(Ordering::Acquire) != FAILED {
        boot_alloc(size)
    } else {
        next_malloc(size)
    }
}

/// free(); `call` names the API in fault messages.
///
/// The inline part serves a small piece of the process heap into this
/// thread's cache: the piece is validated as [`Heap::classify`] does (on
/// the cache's copy of the arena's geometry, see
/// [`ThreadCache::small_piece`](crate::tcache::ThreadCache::small_piece))
/// and checked for a double free; everything else takes [`free_slow`].
///
/// # Safety
/// `p` must be NULL or a pointer from this allocator family (ours,
/// bootstrap, or the next allocator's).
#[inline(always)]
pub unsafe fn free(p: *mut u8, call: &str) {
    // SAFETY: this thread's cache, used only by this thread and not
    // borrowed elsewhere during the call.
    let t = unsafe { &mut *tc_here() };
    let c = t.small_piece(p);
    // SAFETY: c is small_piece's answer for p.
    if !unsafe { push_small(t, p, c, call) } {
        // SAFETY: forwarded caller contract.
        unsafe { free_slow(p, call) }
    }
}

/// free() with the size the caller allocated (Rust's `dealloc` knows it,
/// as C23's `free_sized` does): the size names the cache bin, so the push
/// does not wait for the slot table's answer. The piece is still validated
/// in full (the table's class must be the size's, then the checks of
/// [`free`]); any mismatch takes [`free_slow`], which classifies and aborts
/// on bad pointers.
///
/// # Safety
/// As [`free`]; `size` is a hint (a wrong one costs the slow path).
#[inline(always)]
pub unsafe fn free_sized(p: *mut u8, size: usize, call: &str) {
    // SAFETY: as in free.
    let t = unsafe { &mut *tc_here() };
    let c = class_of(size);
    let found = if size <= t.fast_max {
        t.small_piece_unhinted(p).filter(|&k| k == c)
    } else {
        None
    };
    // SAFETY: found is small_piece's answer for p (or None).
    if !unsafe { push_small(t, p, found, call) } {
        // SAFETY: forwarded caller contract.
        unsafe { free_slow(p, call) }
    }
}

/// The inline free's push: aborts on a double free of a piece
/// [`ThreadCache::small_piece`](crate::tcache::ThreadCache::small_piece)
/// found (class `c`), then pushes it into `t`. False when there is no such
/// piece or its bin is full: the caller takes [`free_slow`].
///
/// # Safety
/// `c` is `t.small_piece(p)`, or `None`.
#[inline(always)]
unsafe fn push_small(t: &mut ThreadCache, p: *mut u8, c: Option<usize>, call: &str) -> bool {
    let Some(c) = c else {
        return false;
    };
    // SAFETY: small_piece proved p is a carved piece of class c.
    if unsafe { has_free_key(p, t.key()) } {
        abort_ptr(call, "double free of", p as usize);
    }
    // SAFETY: p was validated as a live piece of class c just above.
    unsafe { t.try_push(p, c) }
}

/// The general free(): NULL, the bootstrap buffer, the next allocator's
/// blocks, large runs, a full cache bin, a thread without a cache, and
/// every invalid pointer (which aborts).
///
/// # Safety
/// As [`free`].
#[inline(never)]
pub unsafe fn free_slow(p: *mut u8, call: &str) {
    if p.is_null() {
        return;
    }
    if let Some(h) = heap_if_ready()
        && h.contains(p)
    {
        let b = h.classify(p, call);
        let tc = cache_ptr();
        // SAFETY: b is classify(p); tc as in with_cache.
        return unsafe { h.free_block(p, b, call, tc.as_mut()) };
    }
    free_foreign(p);
}

#[cold]
fn free_foreign(p: *mut u8) {
    if is_boot(p) {
        return;
    }
    free_ordinary(p);
}

/// calloc().
pub fn calloc(n: usize, size: usize) -> *mut u8 {
    calloc_in(n, size, false)
}

/// [`calloc`] for [`crate::PktslabAlloc`]: pinned at any size (a Rust program
/// that chose the pinned heap as its global allocator).
pub fn calloc_pinned(n: usize, size: usize) -> *mut u8 {
    calloc_in(n, size, true)
}

#[inline(always)]
fn calloc_in(n: usize, size: usize, all: bool) -> *mut u8 {
    match heap() {
        Some(h) => {
            if n.checked_mul(size).is_some_and(|t| t > pin_max(h, all)) {
                // The next allocator knows when fresh memory is already zero.
                return note_ordinary(next_calloc(n, size));
            }
            with_cache(|tc| h.calloc(n, size, tc))
        }
        None => match n.checked_mul(size) {
            // The bootstrap buffer starts zeroed and is never reused.
            Some(t) => fallback_calloc(t),
            None => {
                set_errno(libc::ENOMEM);
                core::ptr::null_mut()
            }
        },
    }
}

fn fallback_calloc(total: usize) -> *mut u8 {
    let p = fallback_malloc(total);
    if !p.is_null() && !is_boot(p) {
        // SAFETY: p has `total` writable bytes.
        unsafe { core::ptr::write_bytes(p, 0, total) };
    }
    p
}

/// realloc().
///
/// # Safety
/// As [`free`].
pub unsafe fn realloc(p: *mut u8, size: usize) -> *mut u8 {
    // SAFETY: forwarded.
    unsafe { realloc_in(p, size, false) }
}

/// [`realloc`] for [`crate::PktslabAlloc`] (pinned at any size).
///
/// # Safety
/// As [`free`].
pub unsafe fn realloc_pinned(p: *mut u8, size: usize) -> *mut u8 {
    // SAFETY: forwarded.
    unsafe { realloc_in(p, size, true) }
}

unsafe fn realloc_in(p: *mut u8, size: usize, all: bool) -> *mut u8 {
    if p.is_null() {
        return malloc_in(size, all);
    }
    if let Some(h) = heap_if_ready()
        && h.contains(p)
    {
        if size == 0 {
            // SAFETY: arena pointer, validated inside.
            unsafe { free(p, "realloc") };
            return core::ptr::null_mut();
        }
        if size > pin_max(h, all) {
            // SAFETY: arena pointer, validated inside.
            return unsafe { realloc_to_ordinary(h, p, size) };
        }
        // SAFETY: arena pointer, validated inside.
        return with_cache(|tc| unsafe { h.realloc(p, size, "realloc", tc) });
    }
    if is_boot(p) {
        let q = malloc_in(size, all);
        if !q.is_null() {
            // SAFETY: both live; copy what the old block held.
            unsafe { core::ptr::copy_nonoverlapping(p, q, boot_size(p).min(size)) };
        }
        return q;
    }
    match heap() {
        // Still above the pin limit: the next allocator grows it (often in
        // place, or by mremap for big blocks).
        Some(h) if size > pin_max(h, all) => {
            // Forget p while it is still ours: once the next allocator has
            // moved the block, another thread may get p and record it, and
            // a remove then would drop that thread's entry and leave ours.
            let old = BLOCKS.remove(p as usize);
            let q = next_realloc(p, size);
            match (q.is_null(), old) {
                (true, Some(len)) => BLOCKS.insert(p as usize, len, false),
                (true, None) => {}
                (false, _) => BLOCKS.insert(q as usize, next_usable(q), false),
            }
            q
        }
        // A pointer of the next allocator shrunk below the pin limit (or
        // made before we ran): move it into the arena so it becomes
        // pinned, and give the old block back.
        Some(_) => {
            if size == 0 {
                free_ordinary(p);
                return core::ptr::null_mut();
            }
            let q = malloc_in(size, all);
            if !q.is_null() {
                let old = next_usable(p);
                // SAFETY: both live; `old` is the next allocator's usable size of p.
                unsafe { core::ptr::copy_nonoverlapping(p, q, old.min(size)) };
                free_ordinary(p);
            }
            q
        }
        None => next_realloc(p, size),
    }
}

/// reallocarray().
///
/// # Safety
/// As [`free`].
pub unsafe fn reallocarray(p: *mut u8, n: usize, size: usize) -> *mut u8 {
    match n.checked_mul(size) {
        // SAFETY: forwarded.
        Some(t) => unsafe { realloc(p, t) },
        None => {
            set_errno(libc::ENOMEM);
            core::ptr::null_mut()
        }
    }
}

/// memalign()-style allocation; `align` must be a power of two.
pub fn memalign(align: usize, size: usize) -> *mut u8 {
    memalign_in(align, size, false)
}

/// [`memalign`] for [`crate::PktslabAlloc`]: pinned at any size (a Rust program
/// that chose the pinned heap as its global allocator).
pub fn memalign_pinned(align: usize, size: usize) -> *mut u8 {
    memalign_in(align, size, true)
}

#[inline(always)]
fn memalign_in(align: usize, size: usize, all: bool) -> *mut u8 {
    match heap() {
        Some(h) if size.max(align) > pin_max(h, all) => note_ordinary(next_memalign(align, size)),
        Some(h) => with_cache(|tc| h.memalign(align, size, tc)),
        None => {
            // Bootstrap pieces are 16-aligned; more is not needed this early.
            if align <= MIN_ALIGN {
                fallback_malloc(size)
            } else {
                set_errno(libc::ENOMEM);
                core::ptr::null_mut()
            }
        }
    }
}

/// malloc_usable_size().
///
/// # Safety
/// As [`free`].
pub unsafe fn usable_size(p: *mut u8) -> usize {
    if p.is_null() {
        return 0;
    }
    if let Some(h) = heap_if_ready()
        && h.contains(p)
    {
        return h.usable_size(p, "malloc_usable_size");
    }
    if is_boot(p) {
        return boot_size(p);
    }
    next_usable(p)
}
