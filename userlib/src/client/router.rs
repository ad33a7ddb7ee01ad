//! Completions reach the client that submitted them.
//!
//! Every [`Client`](super::Client) of a process on one `/dev/pktaccel`
//! file (libpktslab's own, libpktcrc's, the OpenSSL provider's, one per
//! thread) submits and reaps on that file, and REAP returns whichever of
//! the file's completions are ready. So each file has one [`Router`],
//! shared by its clients through a process-wide registry:
//!
//! - a cookie carries its client's id in its top [`ID_BITS`] bits (ids are
//!   unique per file, handed out by the router), so cookies never collide
//!   across clients and the reaper sees at once whose a completion is;
//! - a completion reaped for another client goes into that client's box
//!   in the router's mailbox (the only lock, taken only then); the owner
//!   empties its box before it reaps and, while other clients are live,
//!   waits in short slices so it finds mail posted during its own wait.
//!
//! The single-client fast path costs no lock: a tag compare per
//! completion and two relaxed loads per reap.
//!
//! After `fork()` the child's device file is a new one (libpktslab reopens
//! it over the same descriptor), and the parent's requests are not the
//! child's to wait for: a fork handler bumps [`fork_generation`], and a
//! client that sees a new generation joins a fresh router with a fresh id
//! and nothing outstanding, leaving the parent's mail behind.

use std::cell::UnsafeCell;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};

use pktaccel_abi::IocCompletion;

use crate::lock::{ForkHeld, SpinLock};

/// Bits of a cookie that number the requests of one client (wrapping).
pub const SEQ_BITS: u32 = 40;
/// Bits of a cookie that name the client.
pub const ID_BITS: u32 = 64 - SEQ_BITS;
/// The sequence part of a cookie.
pub const SEQ_MASK: u64 = (1 << SEQ_BITS) - 1;

/// What identifies a device file in the registry: its descriptor, or for
/// transports without one (test doubles) the pool the clients share.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum FileKey {
    /// A `/dev/pktaccel` descriptor.
    Fd(i32),
    /// The address of the [`Pool`](crate::pool::Pool) the clients borrow.
    Pool(usize),
}

/// The clients, cookies and mail of one device file.
pub struct Router {
    clients: AtomicUsize,
    pending: AtomicUsize,
    /// Each live client's box (present while it lives, possibly empty).
    boxes: Mutex<HashMap<u32, Vec<IocCompletion>>>,
}

impl Router {
    fn new() -> Self {
        Self {
            clients: AtomicUsize::new(0),
            pending: AtomicUsize::new(0),
            boxes: Mutex::new(HashMap::new()),
        }
    }

    fn boxes(&self) -> std::sync::MutexGuard<'_, HashMap<u32, Vec<IocCompletion>>> {
        self.boxes.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A new live client: its id (1..2^ID_BITS, skipping ids still live).
    /// Ids come from one process-wide counter, which a forked child
    /// continues: its clients never take an id of its parent's, whose
    /// completions a child's copy of the parent's state might still name.
    fn join(&self) -> u32 {
        static NEXT_ID: AtomicU32 = AtomicU32::new(1);
        let mut boxes = self.boxes();
        let id = loop {
            let id = NEXT_ID.fetch_add(1, Ordering::Relaxed) % ((1 << ID_BITS) - 1) + 1;
            if !boxes.contains_key(&id) {
                break id;
            }
        };
        boxes.insert(id, Vec::new());
        self.clients.fetch_add(1, Ordering::Release);
        id
    }

    fn leave(&self, id: u32) {
        let mut boxes = self.boxes();
        if let Some(mail) = boxes.remove(&id) {
            self.pending.fetch_sub(mail.len(), Ordering::Relaxed);
        }
        self.clients.fetch_sub(1, Ordering::Release);
    }
}

/// The process's routers, by file and fork generation. A spin lock (not a
/// mutex) so the fork handlers can hold it across `fork()`.
struct Registry {
    lock: SpinLock,
    entries: UnsafeCell<Vec<(FileKey, u64, Weak<Router>)>>,
}

// SAFETY: `entries` is only touched with `lock` held.
unsafe impl Sync for Registry {}

static REGISTRY: Registry = Registry {
    lock: SpinLock::new(),
    entries: UnsafeCell::new(Vec::new()),
};

static FORK_GENERATION: AtomicU64 = AtomicU64::new(0);

/// Whether [`before_fork`] took the registry lock (the after-fork handlers
/// then release it).
static FORK_LOCKED: ForkHeld = ForkHeld::new();

extern "C" fn before_fork() {
    // A process that never had a second thread has nobody who could hold
    // the lock, as the heap's own handlers reason (global/fork.rs).
    let single = crate::global::single_threaded();
    FORK_LOCKED.set(!single);
    if !single {
        REGISTRY.lock.raw_lock();
    }
}

extern "C" fn after_fork_parent() {
    if FORK_LOCKED.get() {
        REGISTRY.lock.raw_unlock();
    }
}

extern "C" fn after_fork_child() {
    // A new generation matters only to routes that exist: each one's
    // router is listed (entries of the current generation leave the list
    // only when their router is gone). With none listed, routes of older
    // generations are stale either way, and not bumping leaves the page
    // of the counter shared with the parent.
    // SAFETY: the child has one thread, and the registry lock is either
    // held by it (taken in before_fork) or was free in a parent that had
    // no other thread: nobody else touches the entries.
    if unsafe { !(*REGISTRY.entries.get()).is_empty() } {
        FORK_GENERATION.fetch_add(1, Ordering::Relaxed);
    }
    if FORK_LOCKED.get() {
        REGISTRY.lock.raw_unlock();
    }
}

/// How many times this process was forked into being (0 in the original).
pub fn fork_generation() -> u64 {
    FORK_GENERATION.load(Ordering::Relaxed)
}

/// A `pthread_once_t` for a static: glibc restarts a `pthread_once` that
/// a fork interrupted in another thread, where Rust's `Once` would leave
/// the child waiting for it forever.
struct PthreadOnce(UnsafeCell<libc::pthread_once_t>);

// SAFETY: the cell is only handed to pthread_once, which synchronises.
unsafe impl Sync for PthreadOnce {}

extern "C" fn register_now() {
    // SAFETY: plain extern "C" functions that only touch atomics. A
    // failure (ENOMEM) leaves a child on its parent's routers, as before
    // this module existed; nothing is unsound then.
    unsafe {
        libc::pthread_atfork(
            Some(before_fork),
            Some(after_fork_parent),
            Some(after_fork_child),
        )
    };
}

/// Registers the registry's fork handlers, once per process. The process
/// heap calls this from its own initialisation, right after registering its
/// handlers: prepare handlers run in reverse order of registration, so ours
/// then take the registry lock before the heap's take theirs, the order in
/// which [`router_for`] takes them (it allocates with the registry lock
/// held).
pub fn register_fork_handlers() {
    static HANDLERS: PthreadOnce = PthreadOnce(UnsafeCell::new(libc::PTHREAD_ONCE_INIT));
    // SAFETY: a static pthread_once_t used only here; `register_now` is a
    // plain function that cannot unwind.
    unsafe { libc::pthread_once(HANDLERS.0.get(), register_now) };
}

/// The router of `key` in this fork generation, made on first use.
fn router_for(key: FileKey, generation: u64) -> Arc<Router> {
    // A no-op once the process heap is up; a private pool's clients
    // (tests, programs without the global heap) register here.
    register_fork_handlers();
    let _g = REGISTRY.lock.lock();
    // SAFETY: the registry lock is held.
    let entries = unsafe { &mut *REGISTRY.entries.get() };
    entries.retain(|(_, g, w)| *g == generation && w.strong_count() > 0);
    if let Some(r) = entries
        .iter()
        .find(|(k, _, _)| *k == key)
        .and_then(|(_, _, w)| w.upgrade())
    {
        return r;
    }
    let r = Arc::new(Router::new());
    entries.push((key, generation, Arc::downgrade(&r)));
    r
}

/// One client's place on its file: router, id and cookie sequence.
pub struct Route {
    key: FileKey,
    generation: u64,
    router: Arc<Router>,
    id: u32,
    seq: u64,
}

impl Route {
    /// Joins the router of `key`.
    pub fn join(key: FileKey) -> Self {
        let generation = fork_generation();
        let router = router_for(key, generation);
        let id = router.join();
        Self {
            key,
            generation,
            router,
            id,
            seq: 1,
        }
    }

    /// After a fork, joins the child's fresh router; returns whether it did
    /// (the client then has nothing outstanding).
    #[inline]
    pub fn refresh(&mut self) -> bool {
        if self.generation == fork_generation() {
            return false;
        }
        // The parent's router stays as it was: its lock may have been held
        // by a thread that does not exist here, so it is not touched.
        let stale = core::mem::replace(self, Self::join(self.key));
        core::mem::forget(stale);
        true
    }

    /// The next cookie: this client's id, then its sequence number.
    #[inline]
    pub fn next_cookie(&mut self) -> u64 {
        let c = (u64::from(self.id) << SEQ_BITS) | (self.seq & SEQ_MASK);
        self.seq = self.seq.wrapping_add(1);
        c
    }

    /// Whether `cookie` is one of this client's.
    #[inline]
    pub fn owns(&self, cookie: u64) -> bool {
        cookie >> SEQ_BITS == u64::from(self.id)
    }

    /// Whether other clients are live on the file (then a wait must come
    /// back now and then to look at the mailbox).
    #[inline]
    pub fn shared(&self) -> bool {
        self.router.clients.load(Ordering::Acquire) > 1
    }

    /// Moves this client's completions to the front of `got`, posts the
    /// others' to their owners; returns how many are this client's.
    #[inline]
    pub fn keep_own(&self, got: &mut [IocCompletion]) -> usize {
        if got.iter().all(|c| self.owns(c.cookie)) {
            return got.len();
        }
        let mut boxes = self.router.boxes();
        let mut mine = 0;
        for i in 0..got.len() {
            let c = got[i];
            if self.owns(c.cookie) {
                got[mine] = c;
                mine += 1;
            } else if let Some(b) = boxes.get_mut(&((c.cookie >> SEQ_BITS) as u32)) {
                b.push(c);
                self.router.pending.fetch_add(1, Ordering::Release);
            }
            // else: its client is gone, and nobody can wait for it.
        }
        mine
    }

    /// Whether completions were posted for this client (slow path).
    pub fn has_mail(&self) -> bool {
        self.router.pending.load(Ordering::Acquire) > 0
            && self
                .router
                .boxes()
                .get(&self.id)
                .is_some_and(|b| !b.is_empty())
    }

    /// Takes up to `out.len()` completions posted for this client.
    #[inline]
    pub fn take_mail(&self, out: &mut [IocCompletion]) -> usize {
        if self.router.pending.load(Ordering::Acquire) == 0 {
            return 0;
        }
        let mut boxes = self.router.boxes();
        let Some(b) = boxes.get_mut(&self.id) else {
            return 0;
        };
        let n = b.len().min(out.len());
        for (o, c) in out.iter_mut().zip(b.drain(..n)) {
            *o = c;
        }
        self.router.pending.fetch_sub(n, Ordering::Relaxed);
        n
    }
}

impl Drop for Route {
    fn drop(&mut self) {
        if self.generation != fork_generation() {
            // A forked child's copy of a parent's client: the parent's
            // router lock may be held by a thread that is not here.
            core::mem::forget(Arc::clone(&self.router));
            return;
        }
        self.router.leave(self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn comp(cookie: u64) -> IocCompletion {
        IocCompletion {
            cookie,
            ..Default::default()
        }
    }

    #[test]
    fn cookies_of_two_clients_differ_and_mail_reaches_its_owner() {
        let key = FileKey::Pool(0x1234_5670);
        let mut a = Route::join(key);
        let mut b = Route::join(key);
        let (ca, cb) = (a.next_cookie(), b.next_cookie());
        assert_ne!(ca, cb);
        assert!(a.owns(ca) && !a.owns(cb) && b.owns(cb));
        assert!(a.shared());
        let mut got = [comp(cb), comp(ca), comp(cb + 1)];
        assert_eq!(a.keep_own(&mut got), 1);
        assert_eq!(got[0].cookie, ca);
        let mut out = [IocCompletion::default(); 4];
        assert_eq!(a.take_mail(&mut out), 0);
        assert_eq!(b.take_mail(&mut out), 2);
        assert_eq!((out[0].cookie, out[1].cookie), (cb, cb + 1));
        drop(b);
        assert!(!a.shared());
        // Mail for a client that is gone is dropped, not kept forever.
        let mut late = [comp(cb + 2)];
        assert_eq!(a.keep_own(&mut late), 0);
        assert_eq!(a.router.pending.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn sequence_wraps_inside_the_client_tag() {
        let mut a = Route::join(FileKey::Pool(0x7654_3210));
        a.seq = SEQ_MASK;
        let (x, y) = (a.next_cookie(), a.next_cookie());
        assert!(a.owns(x) && a.owns(y));
        assert_eq!(y & SEQ_MASK, 0);
    }
}
