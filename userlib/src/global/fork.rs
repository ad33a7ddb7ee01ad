//! The heap's `pthread_atfork` handlers: every lock held across fork()
//! when another thread could hold one, and a child whose slabs were not
//! inherited (the driver's `VM_DONTCOPY` mappings) gets the parent's bytes
//! as ordinary memory and its own device file.

use super::heap_if_ready;
use super::ordinary::BLOCKS;
use super::thread_caches::{REGISTRY, tc_here};
use crate::lock::ForkHeld;
use crate::tcache::TC_ACTIVE;

unsafe extern "C" {
    /// glibc (2.32 on): nonzero while the process has never had a second
    /// thread (glibc clears it in pthread_create). glibc's own fork()
    /// skips its malloc locks on the same test.
    static mut __libc_single_threaded: core::ffi::c_char;
}

/// Whether [`prepare`] took the locks (the parent and child handlers
/// then release them).
static FORK_LOCKED: ForkHeld = ForkHeld::new();

/// Whether this fork() needs our locks held across it. A single-threaded
/// process has nobody who could hold one (fork() from a signal handler
/// that interrupted malloc would deadlock on them anyway), and with slabs
/// the child inherits there is nothing to copy. Skipping the locks then
/// matters for a shell: every unlock after fork() writes the page holding
/// the lock, a copy-on-write fault in the parent and again in the child,
/// about ten per fork for the heap's locks spread over its pages.
fn fork_needs_locks() -> bool {
    !single_threaded() || heap_if_ready().is_some_and(|h| h.arena().backend().slabs_not_inherited())
}

/// Whether the process has never had a second thread: then no other
/// thread can hold a lock across fork(), and fork handlers may skip
/// taking it (each lock and unlock would write its page after fork(), a
/// copy-on-write fault in the parent and again in the child).
pub(crate) fn single_threaded() -> bool {
    // SAFETY: a byte glibc keeps for the process lifetime, read through a
    // raw pointer. Only pthread_create writes it, and while it reads
    // nonzero this thread is the only one: no write can race the read.
    unsafe { core::ptr::read_volatile(&raw const __libc_single_threaded) != 0 }
}

pub(super) extern "C" fn prepare() {
    let needed = fork_needs_locks();
    FORK_LOCKED.set(needed);
    if !needed {
        return;
    }
    if let Some(h) = heap_if_ready() {
        h.lock_all();
        if h.arena().backend().slabs_not_inherited() {
            h.arena().fork_save();
        }
    }
    REGISTRY.lock.raw_lock();
    BLOCKS.lock.raw_lock();
}

pub(super) extern "C" fn parent() {
    if !FORK_LOCKED.get() {
        return;
    }
    BLOCKS.lock.raw_unlock();
    REGISTRY.lock.raw_unlock();
    if let Some(h) = heap_if_ready() {
        h.arena().fork_parent();
        h.unlock_all();
    }
}

pub(super) extern "C" fn child() {
    if !FORK_LOCKED.get() {
        // Single-threaded, slabs inherited: the registry lists at most this
        // thread's cache already, and nothing was locked.
        return;
    }
    // Only the forking thread exists now. Its cache is intact; the other
    // threads' caches are gone with them (their pieces leak in the child),
    // and glibc may reuse their stacks and TLS for new threads, so they must
    // leave the registry: keep just this thread's cache.
    let tc = tc_here();
    // SAFETY: we hold the registry lock (taken in prepare) and are the
    // only thread; tc is this thread's cache.
    unsafe {
        if (*tc).state == TC_ACTIVE {
            (*tc).next = core::ptr::null_mut();
            (*tc).prev = core::ptr::null_mut();
            *REGISTRY.head.get() = tc;
        } else {
            *REGISTRY.head.get() = core::ptr::null_mut();
        }
    }
    BLOCKS.lock.raw_unlock();
    REGISTRY.lock.raw_unlock();
    if let Some(h) = heap_if_ready() {
        if h.arena().backend().slabs_not_inherited() {
            // The slabs were not inherited: move the parent's copies into
            // place (ordinary memory), and give the child its own device
            // file so its new slabs are its own.
            h.arena().fork_child();
            h.arena().backend().reopen_in_child();
        }
        h.unlock_all();
    }
}
