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

use std::collections::{HashMap, HashSet};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use pktaccel_abi::*;

use super::kmod_helpers::{Dev, errname, errno, wait_pinned_zero};
use crate::harness::{Test, TestResult};

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

/// Reaps until nothing is in flight; every cookie must be outstanding.
fn drain(f: &FileM, m: &mut Model) -> Found {
    let start = Instant::now();
    while !m.outstanding.is_empty() {
        if start.elapsed() > Duration::from_secs(30) {
            return Err(format!(
                "{} accepted requests never completed",
                m.outstanding.len()
            ));
        }
        match f.dev.reap(MAX_BATCH, 1000) {
            Ok(v) => account(m, &v)?,
            Err(libc::ETIMEDOUT) | Err(libc::EINTR) => {}
            Err(libc::ENOENT) => {
                return Err(format!(
                    "REAP says nothing is in flight but {} accepted requests never completed",
                    m.outstanding.len()
                ));
            }
            Err(e) => return Err(format!("final REAP: {}", errname(e))),
        }
    }
    Ok(())
}

fn account(m: &mut Model, comps: &[IocCompletion]) -> Found {
    for c in comps {
        if !m.outstanding.remove(&c.cookie) {
            return Err(format!(
                "completion {:#x} (status {}) was not outstanding: completed twice or never submitted",
                c.cookie,
                status_name(c.status)
            ));
        }
        if c.status >= STATUS_COUNT {
            return Err(format!(
                "completion {:#x} with unknown status {}",
                c.cookie, c.status
            ));
        }
        m.copy_bufs.remove(&c.cookie);
        m.completed += 1;
    }
    Ok(())
}

fn step(ctx: &Ctx, rng: &mut Rng) -> Found {
    let fi = rng.below(2) as usize;
    let f = &ctx.files[fi];
    match rng.below(100) {
        0..=9 => slab_alloc(ctx, f, rng),
        10..=15 => slab_free(ctx, f, rng),
        16..=23 => map_ops(f, rng),
        24..=59 => submit(ctx, fi, rng),
        60..=79 => reap(f, rng),
        80..=84 => small_calls(f, rng),
        85..=88 => fork_child(ctx, rng),
        89..=91 => short_lived_file(rng),
        _ => poll_once(f),
    }
}

fn lock(f: &FileM) -> Result<std::sync::MutexGuard<'_, Model>, String> {
    f.m.lock().map_err(|_| "model lock poisoned".to_string())
}

fn slab_alloc(_ctx: &Ctx, f: &FileM, rng: &mut Rng) -> Found {
    let mut m = lock(f)?;
    if m.slabs.len() >= 12 {
        return Ok(());
    }
    let size = match rng.below(10) {
        0 => rng.next() & 0x3f_ffff,
        1..=6 => SLAB_MIN_SIZE,
        _ => SLAB_MIN_SIZE << rng.below(3),
    };
    let caching = if rng.chance(5) {
        7
    } else {
        rng.below(3) as u32
    };
    match f.dev.alloc(size, caching) {
        Ok(s) => m.slabs.push(s),
        Err(e) => allowed("SLAB_ALLOC", e, &[libc::EINVAL, libc::ENOMEM])?,
    }
    Ok(())
}

fn slab_free(ctx: &Ctx, f: &FileM, rng: &mut Rng) -> Found {
    let mut m = lock(f)?;
    if m.slabs.is_empty() || rng.chance(10) {
        // Any id: it must succeed exactly when it names a live slab.
        let id = rng.below(2000) as u32;
        let live = m.slabs.iter().position(|s| s.id == id);
        return match (f.dev.free(id), live) {
            (Ok(()), Some(i)) => {
                m.slabs.swap_remove(i);
                Ok(())
            }
            (Ok(()), None) => Err(format!("SLAB_FREE of unknown id {id} succeeded")),
            (Err(e), Some(_)) => Err(format!("SLAB_FREE of live slab {id}: {}", errname(e))),
            (Err(e), None) => allowed("SLAB_FREE", e, &[libc::ENOENT]),
        };
    }
    let i = rng.below(m.slabs.len() as u64) as usize;
    let s = m.slabs.swap_remove(i);
    f.dev
        .free(s.id)
        .map_err(|e| format!("SLAB_FREE of live slab {}: {}", s.id, errname(e)))?;
    if let Ok(mut d) = ctx.dead.lock() {
        d.push(s.phys);
        if d.len() > 64 {
            d.remove(0);
        }
    }
    Ok(())
}

fn map_ops(f: &FileM, rng: &mut Rng) -> Found {
    let mut m = lock(f)?;
    let fd = f.dev.f.as_raw_fd();
    match rng.below(3) {
        0 if !m.slabs.is_empty() && m.maps.len() < 16 => {
            let s = m.slabs[rng.below(m.slabs.len() as u64) as usize];
            let pages = (s.size as usize / 4096).max(1);
            let len = 4096 * (1 + rng.below(pages as u64 + 1) as usize);
            let flags = if rng.chance(15) {
                libc::MAP_PRIVATE
            } else {
                libc::MAP_SHARED
            };
            // SAFETY: a new mapping of our own file; checked below.
            let p = unsafe {
                libc::mmap(
                    std::ptr::null_mut(),
                    len,
                    libc::PROT_READ | libc::PROT_WRITE,
                    flags,
                    fd,
                    s.mmap_offset as libc::off_t,
                )
            };
            if p == libc::MAP_FAILED {
                let e = errno();
                if len <= s.size as usize && flags == libc::MAP_SHARED {
                    return Err(format!("mmap of live slab {}: {}", s.id, errname(e)));
                }
                return allowed("mmap", e, &[libc::EINVAL, libc::EACCES]);
            }
            if flags == libc::MAP_PRIVATE || len > s.size as usize {
                return Err(format!(
                    "mmap private={} len={len} of a {} slab succeeded",
                    flags == libc::MAP_PRIVATE,
                    s.size
                ));
            }
            // SAFETY: writing the first byte of the fresh shared mapping.
            unsafe { p.cast::<u8>().write_volatile(0x5a) };
            m.maps.push(MapRec {
                ptr: p as usize,
                len,
            });
        }
        1 if !m.maps.is_empty() => {
            let i = rng.below(m.maps.len() as u64) as usize;
            let mr = m.maps.swap_remove(i);
            // SAFETY: unmapping a mapping the fuzzer made.
            unsafe { libc::munmap(mr.ptr as *mut _, mr.len) };
        }
        2 if !m.maps.is_empty() => {
            let i = rng.below(m.maps.len() as u64) as usize;
            let mr = &mut m.maps[i];
            let grow = rng.chance(50);
            let new_len = if grow {
                mr.len * 2
            } else {
                (mr.len / 2).max(4096)
            };
            // SAFETY: resizing a mapping the fuzzer made; checked below.
            let p =
                unsafe { libc::mremap(mr.ptr as *mut _, mr.len, new_len, libc::MREMAP_MAYMOVE) };
            if p == libc::MAP_FAILED {
                let e = errno();
                if !grow {
                    return Err(format!("mremap shrink: {}", errname(e)));
                }
                return allowed("mremap", e, &[libc::EFAULT, libc::EINVAL, libc::ENOMEM]);
            }
            if grow {
                return Err("mremap grew a slab mapping".into());
            }
            mr.ptr = p as usize;
            mr.len = new_len;
        }
        _ => {}
    }
    Ok(())
}

/// One random segment and whether the oracle says it is inside a live
/// slab of the submitting file.
fn segment(ctx: &Ctx, own: &Model, other: &[u64], rng: &mut Rng, dir: u32) -> (IocSegment, bool) {
    let max = if rng.chance(80) { 4096 } else { 70_000 };
    let len = 1 + rng.below(max) as u32;
    let addr = match rng.below(10) {
        0..=5 if !own.slabs.is_empty() => {
            let s = own.slabs[rng.below(own.slabs.len() as u64) as usize];
            s.phys + rng.below(s.size)
        }
        6 if !other.is_empty() => other[rng.below(other.len() as u64) as usize] + rng.below(4096),
        7 => {
            ctx.dead
                .lock()
                .ok()
                .and_then(|d| d.first().copied())
                .unwrap_or(0)
                + rng.below(4096)
        }
        8 => rng.next(),
        _ => rng.below(1 << 30),
    };
    let inside = addr.checked_add(u64::from(len)).is_some()
        && own
            .slabs
            .iter()
            .any(|s| addr >= s.phys && addr + u64::from(len) <= s.phys + s.size);
    (IocSegment { addr, len, dir }, inside)
}

fn submit(ctx: &Ctx, fi: usize, rng: &mut Rng) -> Found {
    let other: Vec<u64> = lock(&ctx.files[1 - fi])?
        .slabs
        .iter()
        .map(|s| s.phys)
        .collect();
    let f = &ctx.files[fi];
    let mut m = lock(f)?;
    if m.outstanding.len() > 200 {
        return reap_locked(f, &mut m, 0);
    }
    let copy = rng.chance(25);
    let n = 1 + rng.below(8) as usize;
    let mut segs: Vec<Vec<IocSegment>> = Vec::new();
    let mut reqs = Vec::new();
    let mut expect: Vec<Result<(), i32>> = Vec::new();
    let mut bufs = Vec::new();
    for _ in 0..n {
        let op = if rng.chance(3) {
            rng.below(20) as u16
        } else {
            rng.below(u64::from(OP_COUNT)) as u16
        };
        let nin = rng.below(3) as usize;
        let nout = rng.below(3) as usize;
        let mut v = Vec::new();
        let mut ok = true;
        let (mut inb, mut outb) = (Vec::new(), Vec::new());
        if copy {
            let (li, lo) = (1 + rng.below(8192) as usize, 1 + rng.below(8192) as usize);
            inb = vec![0x11u8; li];
            outb = vec![0u8; lo];
            if nin > 0 {
                v.push(IocSegment {
                    addr: inb.as_ptr() as u64,
                    len: li as u32,
                    dir: SEG_IN,
                });
            }
            if nout > 0 {
                v.push(IocSegment {
                    addr: outb.as_mut_ptr() as u64,
                    len: lo as u32,
                    dir: SEG_OUT,
                });
            }
        } else {
            for k in 0..nin + nout {
                let (s, inside) =
                    segment(ctx, &m, &other, rng, if k < nin { SEG_IN } else { SEG_OUT });
                ok &= inside;
                v.push(s);
            }
        }
        let slot = if rng.chance(80) {
            rng.below(u64::from(ctx.key_slots) + 1) as u32
        } else {
            rng.next() as u32
        };
        let cookie = ctx.cookie.fetch_add(1, Ordering::Relaxed);
        let mut r = IocRequest {
            header: RequestHeader {
                op,
                key_slot: slot,
                cookie,
                ..Default::default()
            },
            segs: 0,
            nsegs: v.len() as u32,
            queue: if rng.chance(10) {
                rng.below(4) as u32
            } else {
                u32::MAX
            },
        };
        if rng.chance(2) {
            r.header.flags = 1;
        }
        let bad_queue = r.queue != u32::MAX && r.queue >= ctx.queues;
        let e = if op >= 16 || r.header.flags != 0 || bad_queue {
            Err(libc::EINVAL)
        } else if !copy && !v.is_empty() && !ok {
            Err(libc::EFAULT)
        } else {
            Ok(())
        };
        expect.push(e);
        segs.push(v);
        reqs.push(r);
        bufs.push((inb, outb));
    }
    for (r, v) in reqs.iter_mut().zip(&segs) {
        r.segs = v.as_ptr() as u64;
    }
    let flags =
        if copy { SUBMIT_COPY } else { 0 } | if rng.chance(70) { SUBMIT_NONBLOCK } else { 0 };
    let (res, done) = f.dev.submit(&reqs, flags);
    let done = done as usize;
    if done > reqs.len() || (res.is_ok() && done != reqs.len()) {
        return Err(format!(
            "SUBMIT of {} said {done} submitted ({res:?})",
            reqs.len()
        ));
    }
    for (i, r) in reqs.iter().take(done).enumerate() {
        if let Err(e) = expect[i] {
            return Err(format!(
                "SUBMIT accepted request {i} (op {}, segs {:x?}) that must fail with {}",
                r.header.op,
                segs[i].iter().map(|s| (s.addr, s.len)).collect::<Vec<_>>(),
                errname(e)
            ));
        }
        let h = &r.header;
        key_oracle(&mut m, h.op, h.key_slot, true, ctx.key_slots)?;
        m.outstanding.insert(h.cookie);
        if copy {
            m.copy_bufs.insert(h.cookie, std::mem::take(&mut bufs[i]));
        }
    }
    if let Err(e) = res {
        allowed(
            "SUBMIT",
            e,
            &[
                libc::EINVAL,
                libc::E2BIG,
                libc::EFAULT,
                libc::EAGAIN,
                libc::EBUSY,
                libc::ENOKEY,
                libc::ENOSPC,
                libc::ENOMEM,
                libc::EINTR,
            ],
        )?;
        let r = &reqs[done];
        if e == libc::EFAULT && expect[done].is_ok() && !copy {
            return Err(format!(
                "SUBMIT refused request {done} with EFAULT though its segments are in live slabs"
            ));
        }
        if e == libc::ENOKEY || (e == libc::EINVAL && expect[done].is_ok()) {
            key_oracle(&mut m, r.header.op, r.header.key_slot, false, ctx.key_slots)
                .map_err(|x| format!("{x} ({})", errname(e)))?;
        }
    }
    Ok(())
}

/// Checks a key op's acceptance against the model and updates it.
fn key_oracle(m: &mut Model, op: u16, slot: u32, accepted: bool, nslots: u32) -> Found {
    let held = m.keys.contains(&slot);
    match op {
        OP_KEY_SET => {
            if accepted {
                m.keys.insert(slot);
            } else if slot < nslots && held {
                return Err(format!("KEY_SET of held slot {slot} refused"));
            }
        }
        OP_AES_GCM_SEAL | OP_AES_GCM_OPEN | OP_KEY_CLEAR => {
            if accepted != held {
                return Err(format!(
                    "op {} on slot {slot}: accepted={accepted} but the file {} that slot",
                    op_name(op),
                    if held { "holds" } else { "does not hold" }
                ));
            }
            if accepted && op == OP_KEY_CLEAR {
                m.keys.remove(&slot);
            }
        }
        _ => {}
    }
    Ok(())
}

fn reap(f: &FileM, rng: &mut Rng) -> Found {
    let mut m = lock(f)?;
    let t = [0, 0, 1, 5][rng.below(4) as usize];
    reap_locked(f, &mut m, t)
}

fn reap_locked(f: &FileM, m: &mut Model, timeout: i32) -> Found {
    match f.dev.reap(MAX_BATCH, timeout) {
        Ok(v) => account(m, &v),
        Err(libc::ENOENT) if !m.outstanding.is_empty() => Err(format!(
            "REAP: ENOENT with {} accepted requests not reaped",
            m.outstanding.len()
        )),
        Err(e) => allowed(
            "REAP",
            e,
            &[libc::ENOENT, libc::EAGAIN, libc::ETIMEDOUT, libc::EINTR],
        ),
    }
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

fn poll_once(f: &FileM) -> Found {
    let mut pfd = libc::pollfd {
        fd: f.dev.f.as_raw_fd(),
        events: libc::POLLIN | libc::POLLOUT,
        revents: 0,
    };
    // SAFETY: one valid pollfd.
    let r = unsafe { libc::poll(&mut pfd, 1, 0) };
    if r < 0 {
        return Err(format!("poll: {}", errname(errno())));
    }
    if pfd.revents & (libc::POLLHUP | libc::POLLERR | libc::POLLNVAL) != 0 {
        return Err(format!("poll on a live device: revents {:#x}", pfd.revents));
    }
    Ok(())
}

/// A child that uses the inherited files (no allocation: the parent is
/// multi-threaded) and exits; its requests are all invalid, so the
/// parent's completion accounting is untouched.
fn fork_child(ctx: &Ctx, rng: &mut Rng) -> Found {
    let fd = ctx.files[rng.below(2) as usize].dev.f.as_raw_fd();
    // Wraps around: always refused, so no completion reaches the parent.
    let seg = IocSegment {
        addr: u64::MAX - rng.below(32),
        len: 64,
        dir: SEG_IN,
    };
    let r = IocRequest {
        header: RequestHeader {
            op: OP_CRC32C,
            cookie: u64::MAX,
            ..Default::default()
        },
        segs: &raw const seg as u64,
        nsegs: 1,
        queue: u32::MAX,
    };
    // SAFETY: the child only makes raw syscalls on stack data and `_exit`s.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        let mut info = IocInfo::default();
        let mut s = IocSubmit {
            reqs: &raw const r as u64,
            count: 1,
            flags: 0,
            submitted: 0,
            reserved: 0,
        };
        // SAFETY: ioctls on the inherited fd with valid structs.
        let code = unsafe {
            let a = libc::ioctl(fd, libc::c_ulong::from(PKTACCEL_IOC_INFO), &raw mut info);
            let b = libc::ioctl(fd, libc::c_ulong::from(PKTACCEL_IOC_SUBMIT), &raw mut s);
            if a == 0 && b < 0 && s.submitted == 0 {
                0
            } else {
                1
            }
        };
        // SAFETY: leaving the child without running the parent's destructors.
        unsafe { libc::_exit(code) };
    }
    if pid < 0 {
        return allowed("fork", errno(), &[libc::EAGAIN, libc::ENOMEM]);
    }
    let mut st = 0;
    // SAFETY: reaping our own child.
    unsafe { libc::waitpid(pid, &mut st, 0) };
    if libc::WEXITSTATUS(st) != 0 {
        return Err("a forked child's INFO failed or its bad SUBMIT was accepted".into());
    }
    Ok(())
}

/// Opens a file, allocates and maps a slab, submits a few requests and
/// closes with them in flight (or after freeing the slab).
fn short_lived_file(rng: &mut Rng) -> Found {
    let d = Dev::open()?;
    let s = match d.alloc(SLAB_MIN_SIZE, rng.below(3) as u32) {
        Ok(s) => s,
        Err(e) => return allowed("SLAB_ALLOC", e, &[libc::ENOMEM]),
    };
    let segs = [
        IocSegment {
            addr: s.phys,
            len: 4096,
            dir: SEG_IN,
        },
        IocSegment {
            addr: s.phys + 8192,
            len: 4096,
            dir: SEG_OUT,
        },
    ];
    let reqs: Vec<IocRequest> = (0..1 + rng.below(16))
        .map(|i| IocRequest {
            header: RequestHeader {
                op: OP_COPY,
                cookie: i,
                ..Default::default()
            },
            segs: segs.as_ptr() as u64,
            nsegs: 2,
            queue: u32::MAX,
        })
        .collect();
    if let (Err(e), _) = d.submit(&reqs, SUBMIT_NONBLOCK) {
        allowed("SUBMIT", e, &[libc::EAGAIN, libc::EBUSY])?;
    }
    if rng.chance(50) {
        d.free(s.id)
            .map_err(|e| format!("SLAB_FREE: {}", errname(e)))?;
    }
    drop(d);
    Ok(())
}
