//! A seeded ioctl fuzzer for `/dev/pktaccel` with an oracle (issue 9).
//!
//! Several threads drive two files with random SLAB_ALLOC/FREE, mmap,
//! munmap, mremap, SUBMIT (zero copy and copy mode, all ops, key slots,
//! good and bad segments), REAP, INFO, STATS and poll; they also fork
//! children that use the inherited file, and open and close short-lived
//! files with requests in flight. Each file's model (its live slabs, key
//! slots and accepted cookies) is kept under a lock held across that
//! file's ioctls, so the oracle is exact:
//! - an accepted zero-copy segment lies inside one of the file's live
//!   slabs, and one that does is never refused with EFAULT;
//! - SEAL/OPEN/KEY_CLEAR are accepted exactly for slots the file set;
//! - every accepted request completes exactly once (no unknown or
//!   duplicate cookie, nothing left at the end);
//! - every errno is one docs/kmod.md lists for that call;
//! - pinned bytes return to 0 once everything is closed.
//!
//! `PKTACCEL_FUZZ_SECS` (default 120) bounds the run and
//! `PKTACCEL_FUZZ_SEED` replays one; the seed is printed.

mod processes;
mod reap;
mod slabs;
mod submit;

use std::collections::{HashMap, HashSet};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use pktaccel_abi::*;

use super::kmod_helpers::{Dev, errname, errno, wait_pinned_zero};
use crate::harness::{Test, TestResult};
use processes::{fork_child, short_lived_file};
use reap::{drain, poll_once, reap_locked};
use slabs::{map_ops, slab_alloc, slab_free};

pub(super) fn tests() -> Vec<Test> {
    tests!["kmod": fuzz_ioctls_with_oracle]
}

const THREADS: u64 = 3;

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next() % n }
    }
    fn chance(&mut self, pct: u64) -> bool {
        self.below(100) < pct
    }
}

/// A user mapping the fuzzer made of a slab.
struct MapRec {
    ptr: usize,
    len: usize,
}

#[derive(Default)]
struct Model {
    slabs: Vec<IocSlabAlloc>,
    maps: Vec<MapRec>,
    /// Accepted and not yet reaped.
    outstanding: HashSet<u64>,
    /// Copy-mode buffers of outstanding requests (written at reap).
    copy_bufs: HashMap<u64, (Vec<u8>, Vec<u8>)>,
    keys: HashSet<u32>,
    completed: u64,
}

struct FileM {
    dev: Dev,
    m: Mutex<Model>,
}

struct Ctx {
    files: [FileM; 2],
    cookie: AtomicU64,
    stop: AtomicBool,
    key_slots: u32,
    queues: u32,
    /// Physical addresses of slabs that were freed (for stale segments).
    dead: Mutex<Vec<u64>>,
}

type Found = Result<(), String>;

fn allowed(call: &str, e: i32, list: &[i32]) -> Found {
    if list.contains(&e) {
        Ok(())
    } else {
        Err(format!("{call}: undocumented errno {}", errname(e)))
    }
}

fn fuzz_ioctls_with_oracle() -> TestResult {
    let secs: u64 = std::env::var("PKTACCEL_FUZZ_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(120);
    let seed: u64 = std::env::var("PKTACCEL_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
                | 1
        });
    println!("kmod: fuzz seed {seed} for {secs} s (PKTACCEL_FUZZ_SEED={seed} replays it)");
    wait_pinned_zero()?;
    let a = Dev::open()?;
    let info = a.info()?;
    let ctx = Arc::new(Ctx {
        files: [
            FileM {
                dev: a,
                m: Mutex::default(),
            },
            FileM {
                dev: Dev::open()?,
                m: Mutex::default(),
            },
        ],
        cookie: AtomicU64::new(1),
        stop: AtomicBool::new(false),
        key_slots: info.config.key_slots,
        queues: info.config.num_queues,
        dead: Mutex::default(),
    });
    let iters = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs(secs);
    let handles: Vec<_> = (0..THREADS)
        .map(|t| {
            let (ctx, iters) = (ctx.clone(), iters.clone());
            std::thread::spawn(move || -> Found {
                let mut rng = Rng(seed ^ (t + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
                while Instant::now() < deadline && !ctx.stop.load(Ordering::Relaxed) {
                    if let Err(e) = step(&ctx, &mut rng) {
                        ctx.stop.store(true, Ordering::Relaxed);
                        return Err(e);
                    }
                    iters.fetch_add(1, Ordering::Relaxed);
                }
                Ok(())
            })
        })
        .collect();
    let mut first_err = None;
    for h in handles {
        let r = h
            .join()
            .unwrap_or_else(|_| Err("a fuzz thread panicked".into()));
        if let Err(e) = r {
            first_err.get_or_insert(e);
        }
    }
    let n = iters.load(Ordering::Relaxed);
    println!("kmod: fuzz seed {seed}: {n} iterations");
    if let Some(e) = first_err {
        return Err(format!("seed {seed}, after {n} iterations: {e}"));
    }
    // Every accepted request completes exactly once.
    let mut completed = 0;
    for f in &ctx.files {
        let mut m = f.m.lock().map_err(|_| "model lock poisoned")?;
        drain(f, &mut m)?;
        completed += m.completed;
        for mr in m.maps.drain(..) {
            // SAFETY: unmapping a mapping the fuzzer made.
            unsafe { libc::munmap(mr.ptr as *mut _, mr.len) };
        }
    }
    println!("kmod: fuzz: {completed} requests completed");
    drop(ctx);
    wait_pinned_zero().map_err(|e| format!("seed {seed}: after close: {e}"))
}

fn step(ctx: &Ctx, rng: &mut Rng) -> Found {
    let fi = rng.below(2) as usize;
    let f = &ctx.files[fi];
    match rng.below(100) {
        0..=9 => slab_alloc(ctx, f, rng),
        10..=15 => slab_free(ctx, f, rng),
        16..=23 => map_ops(f, rng),
        24..=59 => submit::submit(ctx, fi, rng),
        60..=79 => reap::reap(f, rng),
        80..=84 => small_calls(f, rng),
        85..=88 => fork_child(ctx, rng),
        89..=91 => short_lived_file(rng),
        _ => poll_once(f),
    }
}

fn lock(f: &FileM) -> Result<std::sync::MutexGuard<'_, Model>, String> {
    f.m.lock().map_err(|_| "model lock poisoned".to_string())
}

fn small_calls(f: &FileM, rng: &mut Rng) -> Found {
    let _m = lock(f)?;
    let i = f.dev.info()?;
    let s = f.dev.stats()?;
    if i.pinned_by_file != s.pinned {
        // Bounce memory may come and go between the two calls only if
        // requests are in flight; with the model lock held nothing is
        // submitted or reaped, but completions may still arrive. Pinned
        // changes only at submit/reap/alloc/free: both must agree.
        return Err(format!(
            "INFO pinned_by_file {} != STATS pinned {}",
            i.pinned_by_file, s.pinned
        ));
    }
    let bad = 0x4000_0000u32 | (rng.below(256) as u32);
    let mut x = [0u8; 64];
    match f.dev.ioctl(bad, &mut x) {
        Ok(()) => Err(format!("unknown ioctl {bad:#x} succeeded")),
        Err(e) => allowed("unknown ioctl", e, &[libc::ENOTTY]),
    }
}
