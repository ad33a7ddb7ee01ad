//! Threads and fork: per-thread caches, frees from other threads, caches
//! returned at thread exit, and a child that allocates after fork().

use std::sync::mpsc;
use std::sync::{Arc, Barrier};

use pktslab::class::{batch, class_of};
use pktslab::global;

/// Addresses cross threads as integers (raw pointers are not Send).
#[derive(Clone, Copy)]
struct Block {
    addr: usize,
    len: usize,
    tag: u8,
}

fn fill(b: Block) {
    // SAFETY: the block is live and `len` bytes long.
    unsafe { (b.addr as *mut u8).write_bytes(b.tag, b.len) };
}

fn check(b: Block) {
    // SAFETY: as above.
    let s = unsafe { std::slice::from_raw_parts(b.addr as *const u8, b.len) };
    assert!(
        s.iter().all(|&x| x == b.tag),
        "block {:#x} len {} corrupted",
        b.addr,
        b.len
    );
}

/// Larson-like: every thread allocates blocks of random sizes, fills them
/// with its tag, and sends them to the next thread, which checks and frees
/// them. Every block is freed by a thread other than its allocator.
#[test]
fn cross_thread_frees_under_stress() {
    const THREADS: usize = 4;
    const ROUNDS: usize = 20_000;
    let mut txs = Vec::new();
    let mut rxs = Vec::new();
    for _ in 0..THREADS {
        let (tx, rx) = mpsc::sync_channel::<Block>(256);
        txs.push(tx);
        rxs.push(Some(rx));
    }
    let handles: Vec<_> = (0..THREADS)
        .map(|t| {
            let tx = txs[(t + 1) % THREADS].clone();
            let rx = rxs[t].take().unwrap();
            std::thread::spawn(move || {
                let mut seed = 0x9e37_79b9_u64 ^ t as u64;
                let mut received = 0usize;
                for i in 0..ROUNDS {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    let len = match seed % 100 {
                        0 => 100_000 + (seed % 3_000_000) as usize,
                        1..=10 => 1000 + (seed % 8000) as usize,
                        _ => 1 + (seed % 300) as usize,
                    };
                    let p = global::malloc(len);
                    assert!(!p.is_null());
                    let b = Block {
                        addr: p as usize,
                        len,
                        tag: (i % 251) as u8,
                    };
                    fill(b);
                    tx.send(b).unwrap();
                    while let Ok(b) = rx.try_recv() {
                        check(b);
                        // SAFETY: received blocks are live and owned by us now.
                        unsafe { global::free(b.addr as *mut u8, "free") };
                        received += 1;
                    }
                }
                drop(tx);
                for b in rx {
                    check(b);
                    // SAFETY: as above.
                    unsafe { global::free(b.addr as *mut u8, "free") };
                    received += 1;
                }
                received
            })
        })
        .collect();
    drop(txs);
    let total: usize = handles.into_iter().map(|h| h.join().unwrap()).sum();
    assert_eq!(total, THREADS * ROUNDS);
}

/// A thread that exits hands its cached pieces back to the shared list.
#[test]
fn thread_exit_returns_its_cache() {
    // A class nothing else in this binary uses: 20 KiB requests -> 32 KiB
    // (the other tests here stay below 16 KiB or above 64 KiB).
    let c = class_of(20 * 1024);
    let h = global::heap().unwrap();
    let before = h.shared_free_count(c);
    std::thread::spawn(move || {
        let ps: Vec<usize> = (0..batch(c))
            .map(|_| global::malloc(20 * 1024) as usize)
            .collect();
        for p in &ps {
            // SAFETY: live allocations freed once.
            unsafe { global::free(*p as *mut u8, "free") };
        }
        assert!(global::cache_active_here());
        assert_eq!(
            global::cached_here(c),
            batch(c),
            "frees land in this thread's cache"
        );
    })
    .join()
    .unwrap();
    assert!(
        h.shared_free_count(c) >= before + batch(c),
        "cache returned at thread exit"
    );
}

fn run_child(f: impl FnOnce() -> bool) -> i32 {
    // SAFETY: fork; the child runs only `f` then _exit.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0);
    if pid == 0 {
        let ok = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).unwrap_or(false);
        // SAFETY: leave the child without running the parent's exit handlers.
        unsafe { libc::_exit(if ok { 0 } else { 1 }) };
    }
    let mut status = 0;
    // SAFETY: waiting for our own child.
    unsafe { libc::waitpid(pid, &mut status, 0) };
    status
}

/// fork() while other threads allocate and free: the atfork handlers hold
/// every allocator lock across fork, so the child's heap is consistent and
/// it can allocate and free (including the parent's blocks).
#[test]
fn fork_while_threads_allocate_then_child_allocates() {
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let start = Arc::new(Barrier::new(3));
    let workers: Vec<_> = (0..2)
        .map(|t| {
            let stop = stop.clone();
            let start = start.clone();
            std::thread::spawn(move || {
                start.wait();
                let mut n = 0u64;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let sz = 16 + ((n as usize * 37 + t) % 5000);
                    let p = global::malloc(sz);
                    // SAFETY: live allocation freed once.
                    unsafe { global::free(p, "free") };
                    if n.is_multiple_of(64) {
                        let q = global::malloc(3 << 20);
                        // SAFETY: as above.
                        unsafe { global::free(q, "free") };
                    }
                    n += 1;
                }
            })
        })
        .collect();
    start.wait();
    // Run again by preload.rs with PKTSLAB_HOST_DONTFORK=1: the children
    // then get copies of slabs they did not inherit, which are not pinned.
    let not_inherited = global::heap()
        .unwrap()
        .arena()
        .backend()
        .slabs_not_inherited();
    assert_eq!(
        not_inherited,
        std::env::var_os("PKTSLAB_HOST_DONTFORK").is_some()
    );
    let parent = global::malloc(777);
    let pb = Block {
        addr: parent as usize,
        len: 777,
        tag: 0x42,
    };
    fill(pb);
    for _ in 0..20 {
        let status = run_child(move || {
            check(pb);
            if not_inherited
                && pktslab::v2p(pb.addr as *const u8) != Err(pktslab::V2pError::NotPinned)
            {
                return false;
            }
            let mut v = Vec::new();
            for i in 1..2000usize {
                let p = global::malloc(i * 3);
                let b = Block {
                    addr: p as usize,
                    len: i * 3,
                    tag: i as u8,
                };
                fill(b);
                v.push(b);
            }
            // Threads in the child reuse the parent's dead threads' stacks
            // and TLS: their caches must start clean.
            let hs: Vec<_> = (0..3)
                .map(|t| {
                    std::thread::spawn(move || {
                        for i in 0..500usize {
                            let p = global::malloc(16 + (i * t) % 900);
                            // SAFETY: live block freed once.
                            unsafe { global::free(p, "free") };
                        }
                    })
                })
                .collect();
            for h in hs {
                if h.join().is_err() {
                    return false;
                }
            }
            if pktslab::global::stats().is_none() {
                return false;
            }
            let big = global::malloc(5 << 20);
            // SAFETY: live allocations, each freed once.
            unsafe {
                big.write_bytes(1, 5 << 20);
                global::free(big, "free");
                for b in &v {
                    check(*b);
                    global::free(b.addr as *mut u8, "free");
                }
                global::free(pb.addr as *mut u8, "free");
            }
            true
        });
        assert_eq!(status, 0, "child failed (status {status:#x})");
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for w in workers {
        w.join().unwrap();
    }
    check(pb);
    // SAFETY: live allocation.
    unsafe { global::free(parent, "free") };
}
