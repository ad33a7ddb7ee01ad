//! A process-wide lock held across blocking device calls that a forked
//! child can still take, and the fork-safe one-time setup that goes with
//! it (shared by libpktcrc and the OpenSSL provider, which include this
//! file by path, as they do libpktslab's C types).
//!
//! `fork()` copies a lock as it is: if another thread held it in a device
//! call, the child (where that thread does not exist) would wait for it
//! forever. So the lock's `pthread_atfork` handlers take it before the
//! fork (waiting for the call in progress: every call still runs on the
//! device, nothing falls back because of a fork) and release it on both
//! sides; [`ForkLock::forks`] then tells the child's users that what they
//! set up belongs to the parent.
//!
//! Order against libpktslab's own fork handlers: the thread holding the
//! lock is inside libpktslab (malloc, the client's router), whose prepare
//! handlers take the heap's and the router's locks. Prepare handlers run
//! in reverse order of registration, so ours must be registered after
//! libpktslab's, and run first: we wait for the device call while holding
//! nothing, then libpktslab takes its locks, which nobody holds across a
//! call of ours. The setup ([`ForkOnce`]) therefore opens the libpktslab
//! client (which registers the heap's and the router's handlers) before it
//! registers ours, and opens it without holding the lock.

use core::cell::UnsafeCell;
use core::marker::PhantomData;
use core::ops::{Deref, DerefMut};
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// A mutex for statics whose holder may block in a device call, made
/// fork-safe by its handlers (see the module docs).
pub struct ForkLock<T> {
    mutex: UnsafeCell<libc::pthread_mutex_t>,
    data: UnsafeCell<T>,
    /// Forks this process is the child of, counted by the child handler.
    forks: AtomicU64,
    /// Our handlers are registered in this process (set by the prepare
    /// handler too, so a child forked while the setup registered them
    /// knows it inherited them).
    registered: AtomicBool,
}

// SAFETY: `data` is only reached through a guard, which holds the mutex;
// `T: Send` because the guard may be taken on any thread.
unsafe impl<T: Send> Sync for ForkLock<T> {}

impl<T> ForkLock<T> {
    /// An unlocked lock (for a `static`).
    pub const fn new(value: T) -> Self {
        Self {
            mutex: UnsafeCell::new(libc::PTHREAD_MUTEX_INITIALIZER),
            data: UnsafeCell::new(value),
            forks: AtomicU64::new(0),
            registered: AtomicBool::new(false),
        }
    }

    /// Waits for the lock. `'static`: the mutex never moves once used.
    pub fn lock(&'static self) -> ForkGuard<T> {
        // SAFETY: a valid, never moved mutex (a static); a normal mutex,
        // and no thread locks it twice (guards are not re-entered).
        unsafe { libc::pthread_mutex_lock(self.mutex.get()) };
        ForkGuard {
            lock: self,
            _not_send: PhantomData,
        }
    }

    /// How many forks this process is the child of (0 in the original).
    pub fn forks(&self) -> u64 {
        self.forks.load(Ordering::Acquire)
    }

    /// Registers the lock's fork handlers, once per process: `prepare`,
    /// `parent` and `child` must call [`ForkLock::before_fork`],
    /// [`ForkLock::after_fork_parent`] and [`ForkLock::after_fork_child`]
    /// of this lock. Call it from the one-time setup, after libpktslab's
    /// handlers exist, before the lock is first taken. Returns false when
    /// pthread_atfork failed (ENOMEM): the lock then works, without the
    /// fork guarantee.
    pub fn register(
        &'static self,
        prepare: extern "C" fn(),
        parent: extern "C" fn(),
        child: extern "C" fn(),
    ) -> bool {
        if self.registered.load(Ordering::Acquire) {
            return true;
        }
        // SAFETY: plain extern "C" functions of this library that only
        // touch this static. They stay valid while registered: glibc's
        // pthread_atfork (from libc_nonshared) registers them under this
        // library's __dso_handle, and dlclose unregisters them.
        let ok = unsafe { libc::pthread_atfork(Some(prepare), Some(parent), Some(child)) } == 0;
        self.registered.store(ok, Ordering::Release);
        ok
    }

    /// Prepare handler: waits for the holder's call to end, then holds the
    /// lock across the fork.
    pub fn before_fork(&'static self) {
        self.registered.store(true, Ordering::Release);
        // SAFETY: as in `lock`; released by one of the after-fork handlers
        // on the same thread.
        unsafe { libc::pthread_mutex_lock(self.mutex.get()) };
    }

    /// Parent handler: releases the lock taken by [`ForkLock::before_fork`].
    pub fn after_fork_parent(&'static self) {
        // SAFETY: this thread locked it in before_fork.
        unsafe { libc::pthread_mutex_unlock(self.mutex.get()) };
    }

    /// Child handler: counts the fork and makes the lock new (this thread,
    /// the only one, took it in [`ForkLock::before_fork`]; no one waits).
    pub fn after_fork_child(&'static self) {
        self.forks.fetch_add(1, Ordering::AcqRel);
        // SAFETY: the child has one thread, which holds the mutex (its
        // copy was locked by this thread before the fork); nothing else
        // can use it while it is re-initialised in place.
        unsafe { self.mutex.get().write(libc::PTHREAD_MUTEX_INITIALIZER) };
    }
}

/// Holds a [`ForkLock`]; not `Send` (a pthread mutex is released by the
/// thread that took it).
pub struct ForkGuard<T: 'static> {
    lock: &'static ForkLock<T>,
    _not_send: PhantomData<*const ()>,
}

impl<T> Deref for ForkGuard<T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: the guard holds the mutex, so no other reference exists.
        unsafe { &*self.lock.data.get() }
    }
}

impl<T> DerefMut for ForkGuard<T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: as in deref; `&mut self` makes this the only borrow.
        unsafe { &mut *self.lock.data.get() }
    }
}

impl<T> Drop for ForkGuard<T> {
    fn drop(&mut self) {
        // SAFETY: this guard's thread locked the mutex in `lock`.
        unsafe { libc::pthread_mutex_unlock(self.lock.mutex.get()) };
    }
}

/// A one-time setup that a fork cannot wedge: glibc's `pthread_once`
/// restarts a setup that a fork interrupted in another thread (Rust's
/// `Once` would leave the child waiting for it forever).
pub struct ForkOnce(UnsafeCell<libc::pthread_once_t>);

// SAFETY: the cell is only handed to pthread_once, which synchronises.
unsafe impl Sync for ForkOnce {}

impl ForkOnce {
    /// Not run yet (for a `static`).
    pub const fn new() -> Self {
        Self(UnsafeCell::new(libc::PTHREAD_ONCE_INIT))
    }

    /// Runs `init` unless it has run (or waits for the run in progress).
    pub fn call(&'static self, init: extern "C" fn()) {
        // SAFETY: a static pthread_once_t, only used by pthread_once; `init`
        // is a plain function (a panic in it aborts, never unwinds).
        unsafe { libc::pthread_once(self.0.get(), init) };
    }
}
