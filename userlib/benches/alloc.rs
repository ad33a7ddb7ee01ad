//! `cargo bench -p pktslab`: pktslab against glibc malloc, jemalloc and
//! mimalloc, side by side in one run, with ratios.
//!
//! - single-thread small alloc/free pairs (and a 1000-object window), once
//!   with every allocator through its C API (`malloc`/`free`, no size on
//!   free, as preloaded programs call pktslab) and once through Rust's
//!   `GlobalAlloc` (sized dealloc: `PktslabAlloc`, `System`, the jemalloc
//!   and mimalloc crates); see `alloc/allocators.rs`. Every other row uses
//!   the C API,
//! - larson-like multi-thread with cross-thread frees, and a producer
//!   thread whose blocks a consumer thread frees,
//! - realloc growth, doubling, and one doubling cycle in a fresh process,
//! - v2p ns per lookup vs one /proc/self/pagemap lookup,
//! - internal waste for a realistic size distribution vs the others'
//!   usable sizes.
//!
//! Timings vary with the machine and load; nothing here asserts on them.

use std::hint::black_box;
use std::sync::{Arc, Barrier, Mutex};
use std::time::{Duration, Instant};

#[path = "alloc/allocators.rs"]
mod allocators;
use allocators::{Alloc, Glibc, Je, JeC, Mi, MiC, PkRust, Pktslab, SysRust};

struct Rng(u64);
impl Rng {
    #[inline(always)]
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// Runs per allocator per workload (best counts).
const REPEAT: usize = 3;

const SMALL: [usize; 8] = [16, 24, 37, 64, 100, 128, 200, 512];

/// Runs `f(iterations)` for at least `budget`, returns ops/s.
fn rate(budget: Duration, mut f: impl FnMut(u64) -> u64) -> f64 {
    f(1_000); // warm up caches and slabs
    let mut iters = 12u64;
    loop {
        let t = Instant::now();
        let ops = f(iters);
        let e = t.elapsed();
        if e >= budget || iters >= 1 << 40 {
            return ops as f64 / e.as_secs_f64();
        }
        iters *= 2;
    }
}

fn small_pairs<A: Alloc>(a: &A) -> f64 {
    rate(Duration::from_millis(300), |n| {
        for i in 0..n {
            let s = SMALL[(i & 7) as usize];
            let p = a.malloc(s);
            // SAFETY: p is live with s >= 1 bytes.
            unsafe {
                *black_box(p) = 1;
                a.free(p, s);
            }
        }
        n
    })
}

fn small_window<A: Alloc>(a: &A) -> f64 {
    let mut slots = vec![(std::ptr::null_mut::<u8>(), 0usize); 1000];
    let mut rng = Rng(42);
    let r = rate(Duration::from_millis(300), |n| {
        for _ in 0..n {
            let x = rng.next();
            let slot = &mut slots[(x % 1000) as usize];
            if !slot.0.is_null() {
                // SAFETY: live block with its size.
                unsafe { a.free(slot.0, slot.1) };
            }
            let s = SMALL[(x >> 20) as usize & 7];
            let p = black_box(a.malloc(s));
            // SAFETY: p is live.
            unsafe { *p = 1 };
            *slot = (p, s);
        }
        n
    });
    for s in slots {
        if !s.0.is_null() {
            // SAFETY: live blocks.
            unsafe { a.free(s.0, s.1) };
        }
    }
    r
}

/// A thread's slot array: (address, size), 0 = empty.
type Slots = Vec<(usize, usize)>;

/// Larson-like: each thread owns a slot array and replaces random slots;
/// between rounds the arrays rotate to the next thread, so most frees hit
/// blocks another thread allocated.
fn larson<A: Alloc>(a: &'static A, threads: usize) -> f64 {
    const SLOTS: usize = 1000;
    const ROUNDS: usize = 40;
    const PER_ROUND: usize = 25_000;
    let arrays: Arc<Mutex<Vec<Slots>>> = Arc::new(Mutex::new(
        (0..threads)
            .map(|_| vec![(0usize, 0usize); SLOTS])
            .collect(),
    ));
    let barrier = Arc::new(Barrier::new(threads));
    let start = Instant::now();
    let hs: Vec<_> = (0..threads)
        .map(|t| {
            let arrays = arrays.clone();
            let barrier = barrier.clone();
            std::thread::spawn(move || {
                let mut rng = Rng(0x1234 + t as u64);
                for round in 0..ROUNDS {
                    let mut mine =
                        std::mem::take(&mut arrays.lock().unwrap()[(t + round) % threads]);
                    for _ in 0..PER_ROUND {
                        let x = rng.next();
                        let slot = &mut mine[(x % SLOTS as u64) as usize];
                        if slot.0 != 0 {
                            // SAFETY: live block with its size.
                            unsafe { a.free(slot.0 as *mut u8, slot.1) };
                        }
                        let s = 8 + (x >> 24) as usize % 500;
                        let p = black_box(a.malloc(s));
                        // SAFETY: p is live.
                        unsafe { *p = 1 };
                        *slot = (p as usize, s);
                    }
                    arrays.lock().unwrap()[(t + round) % threads] = mine;
                    barrier.wait();
                }
            })
        })
        .collect();
    for h in hs {
        h.join().unwrap();
    }
    let e = start.elapsed();
    for arr in arrays.lock().unwrap().iter() {
        for &(p, s) in arr {
            if p != 0 {
                // SAFETY: live blocks.
                unsafe { a.free(p as *mut u8, s) };
            }
        }
    }
    (threads * ROUNDS * PER_ROUND) as f64 / e.as_secs_f64()
}

/// A growing buffer: +64 bytes per realloc up to 64 KiB, touching the end.
fn realloc_growth<A: Alloc>(a: &A) -> f64 {
    rate(Duration::from_millis(300), |n| {
        let mut ops = 0;
        let mut left = n;
        while left > 0 {
            let mut size = 64;
            let mut p = a.malloc(size);
            while size < 64 * 1024 && left > 0 {
                // SAFETY: p is live with `size` bytes.
                unsafe {
                    p = black_box(a.realloc(p, size, size + 64));
                    size += 64;
                    *p.add(size - 1) = 1;
                }
                ops += 1;
                left -= 1;
            }
            // SAFETY: live block.
            unsafe { a.free(p, size) };
        }
        ops
    })
}

/// A large buffer doubling from 4 KiB to 16 MiB (vector growth), cycle
/// after cycle.
fn realloc_doubling<A: Alloc>(a: &A) -> f64 {
    rate(Duration::from_millis(300), |n| {
        (0..n.div_ceil(12)).map(|_| realloc_cycle(a)).sum()
    })
}

/// Producer -> consumer: one thread allocates, another frees everything
/// (every free is a cross-thread free), blocks handed over 256 at a time.
fn producer_consumer<A: Alloc>(a: &'static A) -> f64 {
    const BATCH: usize = 256;
    const BATCHES: usize = 4_000;
    let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<usize>>(8);
    let start = Instant::now();
    let consumer = std::thread::spawn(move || {
        for v in rx {
            for (i, p) in v.into_iter().enumerate() {
                // SAFETY: live blocks handed over once; size as allocated.
                unsafe { a.free(p as *mut u8, SMALL[i & 7]) };
            }
        }
    });
    for _ in 0..BATCHES {
        let mut v = Vec::with_capacity(BATCH);
        for i in 0..BATCH {
            let p = black_box(a.malloc(SMALL[i & 7]));
            // SAFETY: p is live.
            unsafe { *p = 1 };
            v.push(p as usize);
        }
        tx.send(v).unwrap();
    }
    drop(tx);
    consumer.join().unwrap();
    (BATCH * BATCHES) as f64 / start.elapsed().as_secs_f64()
}

/// One realloc doubling cycle (4 KiB .. 16 MiB, 12 calls) in a process
/// whose allocator has done nothing yet: what a short-lived program pays.
/// Run in a fresh copy of this binary (`--fresh-realloc N`); returns calls/s.
fn fresh_realloc_child(i: usize) -> f64 {
    let t = Instant::now();
    let ops = match i {
        0 => realloc_cycle(&Pktslab),
        1 => realloc_cycle(&Glibc),
        2 => realloc_cycle(&JeC),
        _ => realloc_cycle(&MiC),
    };
    ops as f64 / t.elapsed().as_secs_f64()
}

fn realloc_cycle<A: Alloc>(a: &A) -> u64 {
    let mut size = 4096;
    let mut p = a.malloc(size);
    let mut ops = 0;
    while size < 16 << 20 {
        // SAFETY: p is live with `size` bytes.
        unsafe {
            p = black_box(a.realloc(p, size, size * 2));
            size *= 2;
            *p.add(size - 1) = 1;
        }
        ops += 1;
    }
    // SAFETY: live block.
    unsafe { a.free(p, size) };
    ops
}

fn fresh_realloc(i: usize) -> f64 {
    let mut rates: Vec<f64> = (0..7)
        .map(|_| {
            let out = std::process::Command::new(std::env::current_exe().unwrap())
                .args(["--bench", "--fresh-realloc", &i.to_string()])
                .output()
                .expect("run the bench binary again");
            String::from_utf8_lossy(&out.stdout)
                .trim()
                .parse()
                .unwrap_or(0.0)
        })
        .collect();
    rates.sort_by(f64::total_cmp);
    rates[3]
}

/// Sizes from a web-server/packet-processing-like mix.
fn size_mix() -> Vec<usize> {
    let mut rng = Rng(7);
    (0..200_000)
        .map(|_| {
            let x = rng.next();
            let r = x % 1000;
            let y = (x >> 16) as usize;
            match r {
                0..=599 => 8 + y % 121,            // 8..128: objects, strings
                600..=849 => 129 + y % 896,        // up to 1 KiB
                850..=959 => 1025 + y % 15_360,    // packets, up to 16 KiB
                960..=994 => 16_385 + y % 245_760, // up to 256 KiB
                _ => 262_145 + y % (4 << 20),      // up to ~4 MiB
            }
        })
        .collect()
}

fn waste<A: Alloc>(a: &A, sizes: &[usize]) -> f64 {
    let mut req = 0u64;
    let mut usable = 0u64;
    let ps: Vec<_> = sizes.iter().map(|&s| (a.malloc(s), s)).collect();
    for &(p, s) in &ps {
        req += s as u64;
        // SAFETY: live block.
        usable += unsafe { a.usable(p) } as u64;
    }
    for (p, s) in ps {
        // SAFETY: live block.
        unsafe { a.free(p, s) };
    }
    100.0 * (usable - req) as f64 / usable as f64
}

fn v2p_ns() -> (f64, f64, f64) {
    let bufs: Vec<_> = (0..64)
        .map(|i| pktslab::global::malloc(1000 + i * 37))
        .collect();
    let mut rng = Rng(99);
    let addrs: Vec<*const u8> = (0..4096)
        .map(|_| {
            bufs[(rng.next() % 64) as usize].wrapping_add((rng.next() % 1000) as usize) as *const u8
        })
        .collect();
    let n = 20_000_000usize;
    let t = Instant::now();
    let mut acc = 0u64;
    for i in 0..n {
        if let Ok(ph) = pktslab::v2p(black_box(addrs[i & 4095])) {
            acc = acc.wrapping_add(ph.addr);
        }
    }
    black_box(acc);
    let v2p = t.elapsed().as_nanos() as f64 / n as f64;
    // DPDK rte_mem_virt2phy style: open, pread, close per lookup.
    let m = 20_000usize;
    let t = Instant::now();
    for i in 0..m {
        let va = addrs[i & 4095] as usize;
        // SAFETY: plain file syscalls on a local buffer.
        unsafe {
            let fd = libc::open(c"/proc/self/pagemap".as_ptr(), libc::O_RDONLY);
            let mut e = 0u64;
            libc::pread(fd, (&raw mut e).cast(), 8, ((va / 4096) * 8) as libc::off_t);
            libc::close(fd);
            acc = acc.wrapping_add(e);
        }
    }
    let open_read = t.elapsed().as_nanos() as f64 / m as f64;
    // SAFETY: as above.
    let fd = unsafe { libc::open(c"/proc/self/pagemap".as_ptr(), libc::O_RDONLY) };
    let t = Instant::now();
    for i in 0..m {
        let va = addrs[i & 4095] as usize;
        let mut e = 0u64;
        // SAFETY: as above.
        unsafe { libc::pread(fd, (&raw mut e).cast(), 8, ((va / 4096) * 8) as libc::off_t) };
        acc = acc.wrapping_add(e);
    }
    let pread_only = t.elapsed().as_nanos() as f64 / m as f64;
    // SAFETY: our fd.
    unsafe { libc::close(fd) };
    black_box(acc);
    for b in bufs {
        // SAFETY: live blocks.
        unsafe { pktslab::global::free(b, "free") };
    }
    (v2p, open_read, pread_only)
}

/// Workloads named on the command line (`cargo bench -p pktslab -- larson`)
/// run alone; no names = all.
fn wanted(name: &str) -> bool {
    let filters: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    filters.is_empty() || filters.iter().any(|f| name.contains(f.as_str()))
}

fn row(name: &str, unit: &str, vals: [f64; 4], higher_is_better: bool) {
    let [p, g, j, m] = vals;
    // Ratios to three significant digits, so 0.0046 does not print as 0.00.
    let r = |o: f64| {
        let x = if higher_is_better { p / o } else { o / p };
        let digits = (2 - x.abs().log10().floor() as i32).clamp(0, 6) as usize;
        format!("x{x:.digits$}")
    };
    println!(
        "{name:<34} {p:>12.3e} {g:>12.3e} {j:>12.3e} {m:>12.3e} {unit:<6} | {:>7} {:>7} {:>7}",
        r(g),
        r(j),
        r(m)
    );
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(k) = args.iter().position(|a| a == "--fresh-realloc") {
        let i = args.get(k + 1).and_then(|s| s.parse().ok()).unwrap_or(0);
        println!("{}", fresh_realloc_child(i));
        return;
    }
    if args.iter().any(|a| a == "--list") {
        println!("alloc: bench");
        return;
    }
    // `cargo bench` passes --bench; `cargo test --all-targets` does not and
    // must not spend a minute here.
    if !args.iter().any(|a| a == "--bench") {
        println!("alloc: run with `cargo bench -p pktslab`");
        return;
    }
    let pool = pktslab::Pool::global().expect("pktslab heap");
    println!("pktslab benchmark — backend: {}", pool.mode().name());
    println!("ratios are pktslab relative to glibc, jemalloc, mimalloc (>1 = pktslab better)");
    println!(
        "API: rows marked \"Rust API\" call every allocator through GlobalAlloc (sized\n\
         dealloc); all others through its C API (malloc/free, no size on free)\n"
    );
    println!(
        "{:<34} {:>12} {:>12} {:>12} {:>12} {:<6} | {:>7} {:>7} {:>7}",
        "workload", "pktslab", "glibc", "jemalloc", "mimalloc", "unit", "/glibc", "/je", "/mi"
    );
    allocator_rows();
    if wanted("v2p") {
        v2p_section(&pool);
    }
}

/// Each timed workload runs REPEAT times per allocator, interleaved
/// round-robin, and the best rate counts: on a shared machine the best run
/// is the one least disturbed by other load.
fn best(f: &dyn Fn(usize) -> f64) -> [f64; 4] {
    let mut out = [0f64; 4];
    for _ in 0..REPEAT {
        for (i, o) in out.iter_mut().enumerate() {
            *o = o.max(f(i));
        }
    }
    out
}

/// `|i| workload(allocator i, args...)`, statically dispatched: pktslab,
/// glibc, jemalloc, mimalloc, each through its C API (malloc/free).
macro_rules! each {
    ($f:ident $(, $arg:expr)*) => {
        |i: usize| match i {
            0 => $f(&Pktslab $(, $arg)*),
            1 => $f(&Glibc $(, $arg)*),
            2 => $f(&JeC $(, $arg)*),
            _ => $f(&MiC $(, $arg)*),
        }
    };
}

/// `each!` with every allocator through Rust's `GlobalAlloc` (sized
/// dealloc).
macro_rules! each_rust {
    ($f:ident $(, $arg:expr)*) => {
        |i: usize| match i {
            0 => $f(&PkRust $(, $arg)*),
            1 => $f(&SysRust $(, $arg)*),
            2 => $f(&Je $(, $arg)*),
            _ => $f(&Mi $(, $arg)*),
        }
    };
}

/// The workload rows, pktslab against the three other allocators.
fn allocator_rows() {
    let threads = std::thread::available_parallelism()
        .map_or(2, |n| n.get())
        .max(2);
    let larson_name = format!("larson-like, {threads} threads, x-frees");
    let timed: [(&str, &dyn Fn(usize) -> f64); 9] = [
        ("small alloc+free pairs (1 thread)", &each!(small_pairs)),
        ("small, 1000-object window", &each!(small_window)),
        ("small pairs, Rust API", &each_rust!(small_pairs)),
        ("1000-object window, Rust API", &each_rust!(small_window)),
        (&larson_name, &each!(larson, threads)),
        ("producer->consumer, 2 threads", &each!(producer_consumer)),
        ("first realloc cycle, fresh process", &fresh_realloc),
        ("realloc +64 B to 64 KiB", &each!(realloc_growth)),
        ("realloc doubling 4 KiB..16 MiB", &each!(realloc_doubling)),
    ];
    for (name, f) in timed {
        if wanted(name) {
            let vals = best(f);
            row(name, "ops/s", vals, true);
            if name.starts_with("realloc doubling") {
                pin_max_copy_ceiling(vals[1]);
            }
        }
    }
    let sizes = size_mix();
    if wanted("internal waste, realistic mix") {
        let w = each!(waste, &sizes);
        row(
            "internal waste, realistic mix",
            "%",
            [w(0), w(1), w(2), w(3)],
            false,
        );
    }
}

/// The doubling row's ceiling: a block crossing PKTSLAB_PIN_MAX moves from
/// pinned to ordinary memory, and device pages cannot be remapped, so
/// each cycle copies PIN_MAX bytes at least. That copy alone (pinned piece
/// to a glibc block, warm, best of many), as reallocs/s for a 12-call
/// cycle, against glibc's rate of the same run (`glibc`, reallocs/s).
fn pin_max_copy_ceiling(glibc: f64) {
    let n = pktslab::Pool::global()
        .expect("pktslab heap")
        .heap()
        .config()
        .pin_max;
    let src = pktslab::global::malloc(n);
    // SAFETY: plain malloc of n bytes.
    let dst: *mut u8 = unsafe { libc::malloc(n) }.cast();
    let mut best_ns = f64::MAX;
    for _ in 0..REPEAT * 100 {
        let t = Instant::now();
        // SAFETY: both blocks are live, distinct and n bytes long.
        unsafe { core::ptr::copy_nonoverlapping(black_box(src), black_box(dst), n) };
        best_ns = best_ns.min(t.elapsed().as_nanos() as f64);
    }
    // SAFETY: live blocks.
    unsafe {
        libc::free(dst.cast());
        pktslab::global::free(src, "free");
    }
    let ceiling = 12.0 / (best_ns * 1e-9);
    println!(
        "  ceiling: the {} KiB copy at PIN_MAX alone takes {best_ns:.0} ns per cycle: at most {ceiling:.3e} reallocs/s, x{:.2} glibc",
        n >> 10,
        ceiling / glibc
    );
}

/// v2p against /proc/self/pagemap, then the pool's statistics and a trim.
fn v2p_section(pool: &pktslab::Pool) {
    let (v, open_read, pread_only) = v2p_ns();
    println!();
    println!("v2p: pktslab {v:.2} ns/lookup");
    println!(
        "     /proc/self/pagemap open+pread+close {open_read:.0} ns/lookup  (x{:.0} slower)",
        open_read / v
    );
    println!(
        "     /proc/self/pagemap pread on open fd  {pread_only:.0} ns/lookup  (x{:.0} slower)",
        pread_only / v
    );
    let s = pool.stats();
    println!(
        "\npktslab stats: {} allocations, {:.1}% waste overall, {} MiB pinned",
        s.total_allocs(),
        s.waste_percent(),
        s.bytes_pinned >> 20
    );
    let released = pool.trim();
    println!(
        "pktslab trim: released {} MiB of empty slabs, {} MiB pinned now",
        released >> 20,
        pool.stats().bytes_pinned >> 20
    );
}
