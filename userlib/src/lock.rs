//! A spin lock that never allocates.
//!
//! The allocator's shared lists need mutual exclusion inside malloc itself,
//! so the lock must not allocate, and `fork()` handlers must be able to take
//! and release it without a guard object; `std::sync::Mutex` offers neither.

use core::sync::atomic::{AtomicBool, Ordering};

/// Test-and-test-and-set lock with `sched_yield` backoff.
#[derive(Default)]
pub struct SpinLock {
    locked: AtomicBool,
}

/// Releases the lock when dropped.
pub struct SpinGuard<'a> {
    lock: &'a SpinLock,
}

impl SpinLock {
    /// An unlocked lock, usable in statics.
    pub const fn new() -> Self {
        Self {
            locked: AtomicBool::new(false),
        }
    }

    /// Acquires the lock.
    #[inline]
    pub fn lock(&self) -> SpinGuard<'_> {
        self.raw_lock();
        SpinGuard { lock: self }
    }

    /// Acquires without a guard; pair with [`SpinLock::raw_unlock`]. Used
    /// by the fork handlers, which lock in one callback and unlock in another.
    #[inline]
    pub fn raw_lock(&self) {
        let mut spins = 0u32;
        loop {
            if !self.locked.load(Ordering::Relaxed)
                && self
                    .locked
                    .compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed)
                    .is_ok()
            {
                return;
            }
            spins += 1;
            if spins < 64 {
                core::hint::spin_loop();
            } else {
                // SAFETY: sched_yield has no preconditions.
                unsafe { libc::sched_yield() };
            }
        }
    }

    /// Releases a lock taken with [`SpinLock::raw_lock`]. Also used in a
    /// forked child, where the holder thread no longer exists.
    #[inline]
    pub fn raw_unlock(&self) {
        self.locked.store(false, Ordering::Release);
    }
}

impl Drop for SpinGuard<'_> {
    #[inline]
    fn drop(&mut self) {
        self.lock.raw_unlock();
    }
}

/// Whether a `pthread_atfork` prepare handler took its locks this fork,
/// for its parent and child handlers to release them. It is written only
/// when the answer changes, so a single-threaded process (a shell) that
/// forks hundreds of times writes none of the page holding it: each write
/// would be a copy-on-write fault in the parent and again in the child.
#[derive(Default)]
pub struct ForkHeld(AtomicBool);

impl ForkHeld {
    /// Nothing held, usable in statics.
    pub const fn new() -> Self {
        Self(AtomicBool::new(false))
    }

    /// Records whether this fork's prepare handler takes its locks.
    #[inline]
    pub fn set(&self, held: bool) {
        // Fork handlers run in the forking thread only; no other writer.
        if self.0.load(Ordering::Relaxed) != held {
            self.0.store(held, Ordering::Relaxed);
        }
    }

    /// Whether the locks were taken before this fork.
    #[inline]
    pub fn get(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn lock_excludes() {
        struct Shared(SpinLock, core::cell::UnsafeCell<u64>);
        // SAFETY: the counter is only touched under the lock.
        unsafe impl Sync for Shared {}
        let s = Arc::new(Shared(SpinLock::new(), core::cell::UnsafeCell::new(0)));
        let hs: Vec<_> = (0..4)
            .map(|_| {
                let s = s.clone();
                std::thread::spawn(move || {
                    for _ in 0..10_000 {
                        let _g = s.0.lock();
                        // SAFETY: we hold the lock.
                        unsafe { *s.1.get() += 1 };
                    }
                })
            })
            .collect();
        for h in hs {
            h.join().unwrap();
        }
        let _g = s.0.lock();
        // SAFETY: we hold the lock.
        assert_eq!(unsafe { *s.1.get() }, 40_000);
    }
}
