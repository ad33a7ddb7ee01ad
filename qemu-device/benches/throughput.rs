//! The device's request path measured side by side in one run: the real
//! daemon through a real vhost-user socket (a non-sleeping worker and the
//! default one), the same request path in process, and the raw engines
//! called in a loop.
//!
//! `cargo bench -p pktaccel-device` prints the tables and writes the
//! summary to `target/bench/device-summary.json`. No assertions: figures
//! depend on the machine and its load (printed with them).

#[path = "../tests/support/mod.rs"]
mod support;

#[path = "common/rig.rs"]
mod rig;

#[path = "common/profile.rs"]
mod profile;

use std::hint::black_box;
use std::time::{Duration, Instant};

use pktaccel_abi::*;
use pktaccel_device::engines::{crc, csum::Csum, gcm};
use rig::{Rig, Shape, in_process, raw_rate};
use support::hdr;

const SIZES: [u32; 4] = [64, 1500, 9000, 65536];
const OPS: [u16; 6] = [
    OP_CSUM,
    OP_CRC32C,
    OP_CRC32,
    OP_AES_GCM_SEAL,
    OP_AES_GCM_OPEN,
    OP_COPY,
];
/// The non-sleeping worker spins this long (µs) on an empty ring.
const SPIN_US: &str = "100000";
const KEY: [u8; 32] = [0x5a; 32];
/// Chains in the segment comparison: what a 1024-entry ring holds with
/// 16 input segments per chain (18 descriptors), rounded to batches.
const SEGMENT_CHAINS: usize = 32;
const IV: [u8; 12] = [1; 12];

fn shape(op: u16, size: u32) -> Shape {
    let mut header = hdr(op);
    header.params[..12].copy_from_slice(&IV);
    let (in_len, out_len) = match op {
        OP_AES_GCM_SEAL => (size, size + 16),
        OP_AES_GCM_OPEN => (size + 16, size),
        OP_COPY => (size, size),
        _ => (size, 0),
    };
    Shape {
        header,
        in_len,
        out_len,
        payload: payload(op, size),
        segs: 1,
        chains: 0,
    }
}

/// Engines streaming across segments: in-process CPU time of 16 input
/// segments of 1500 B over one segment of 24000 B, per op, both over the
/// same chains (as many as the ring holds with 16 segments each), so
/// that only the split differs, not the working set.
fn segment_costs() -> Vec<(u16, f64)> {
    OPS.iter()
        .map(|&op| {
            let mut one = shape(op, 24000);
            one.chains = SEGMENT_CHAINS;
            let mut sixteen = shape(op, 24000);
            (sixteen.segs, sixteen.chains) = (16, SEGMENT_CHAINS);
            // Alternate, so that both see the same load.
            let (mut a, mut b) = (0.0f64, 0.0f64);
            for _ in 0..2 {
                a = a.max(in_process(&one, &KEY));
                b = b.max(in_process(&sixteen, &KEY));
            }
            (op, a / b)
        })
        .collect()
}

/// The input bytes: for OPEN, a valid ciphertext and tag.
fn payload(op: u16, size: u32) -> Vec<u8> {
    let mut p: Vec<u8> = (0..size).map(|i| (i * 31 + 7) as u8).collect();
    if op == OP_AES_GCM_OPEN {
        let tag = gcm::seal(&gcm::key(&KEY), &IV, &[], &mut p);
        p.extend_from_slice(&tag);
    }
    p
}

/// The raw engine for `op` on one buffer: what the device's op costs
/// without the device (for GCM including the gather copy the device does).
fn raw_engine(op: u16) -> impl FnMut(&[u8], &mut [u8]) {
    let key = gcm::key(&KEY);
    move |i: &[u8], o: &mut [u8]| match op {
        OP_CSUM => {
            let mut c = Csum::new(0);
            c.update(black_box(i));
            black_box(c.finish());
        }
        OP_CRC32C => {
            black_box(crc::crc32c(0, [black_box(i)]));
        }
        OP_CRC32 => {
            black_box(crc::crc32(0, [black_box(i)]));
        }
        OP_AES_GCM_SEAL => {
            let n = i.len();
            o[..n].copy_from_slice(i);
            let tag = gcm::seal(&key, &IV, &[], black_box(&mut o[..n]));
            o[n..n + 16].copy_from_slice(&tag);
        }
        OP_AES_GCM_OPEN => {
            let n = i.len() - 16;
            o[..n].copy_from_slice(&i[..n]);
            let tag: &[u8; 16] = i[n..].try_into().unwrap();
            gcm::open(&key, &IV, &[], black_box(&mut o[..n]), tag).unwrap();
        }
        _ => {
            o[..i.len()].copy_from_slice(black_box(i));
            black_box(o);
        }
    }
}

/// Requests per second: (wall clock, daemon CPU, worker busy time).
type Rate = (f64, f64, f64);

fn rate(r: rig::DeviceRun) -> Rate {
    (
        r.requests_per_s,
        r.requests_per_cpu_s,
        r.requests_per_busy_s,
    )
}

/// Which clock a device rate is per.
#[derive(Clone, Copy)]
enum Basis {
    /// Wall-clock time (counts time other tasks held the CPUs).
    Wall,
    /// The daemon's CPU time (counts spinning and waking).
    Cpu,
    /// The worker's time processing requests.
    Busy,
}

fn pick(r: Rate, b: Basis) -> f64 {
    match b {
        Basis::Wall => r.0,
        Basis::Cpu => r.1,
        Basis::Busy => r.2,
    }
}

/// One (op, size) point.
struct Point {
    op: u16,
    size: u32,
    /// Raw engine, requests per CPU second, over the device's working set.
    raw_set: f64,
    /// Raw engine on one hot buffer (1500 B only).
    raw_hot: f64,
    polling: Rate,
    sleeping: Rate,
    in_process: f64,
}

fn measure_point(poll: &mut Rig, sleep: &mut Rig, op: u16, size: u32) -> Point {
    let sh = shape(op, size);
    let chains = poll.chains(&sh);
    let bufs: Vec<Vec<u8>> = (0..chains).map(|_| sh.payload.clone()).collect();
    let mut outs: Vec<Vec<u8>> = vec![vec![0u8; sh.out_len.max(size + 16) as usize]; chains];
    let mut raw = raw_engine(op);
    let mut n = 0usize;
    let raw_set = raw_rate(|| {
        raw(&bufs[n % chains], &mut outs[n % chains]);
        n += 1;
    });
    let raw_hot = if size == 1500 {
        raw_rate(|| raw(&bufs[0], &mut outs[0]))
    } else {
        0.0
    };
    let polling = rate(poll.run(&sh));
    // Let the spinning worker go to sleep before anything else is timed.
    std::thread::sleep(Duration::from_millis(150));
    let sleeping = rate(sleep.run(&sh));
    let in_process = if size == 1500 {
        in_process(&sh, &KEY)
    } else {
        0.0
    };
    Point {
        op,
        size,
        raw_set,
        raw_hot,
        polling,
        sleeping,
        in_process,
    }
}

/// Adaptive spinning (`a`) against none (`o`), `rounds` runs each in ABBA
/// order, NOP and CSUM 9000 B; prints and returns (wall, CPU) ratios a/o.
fn adaptive_vs_off(a: &mut Rig, o: &mut Rig, rounds: usize) -> [(f64, f64); 2] {
    let mut out = [(0.0, 0.0); 2];
    for (k, sh) in [shape(OP_NOP, 64), shape(OP_CSUM, 9000)].iter().enumerate() {
        let (mut sa, mut so) = ((0.0, 0.0), (0.0, 0.0));
        for round in 0..rounds {
            let (ra, ro) = if round % 2 == 0 {
                let ra = a.run(sh);
                (ra, o.run(sh))
            } else {
                let ro = o.run(sh);
                (a.run(sh), ro)
            };
            sa = (sa.0 + ra.requests_per_s, sa.1 + ra.requests_per_cpu_s);
            so = (so.0 + ro.requests_per_s, so.1 + ro.requests_per_cpu_s);
        }
        out[k] = (sa.0 / so.0, sa.1 / so.1);
        println!(
            "adaptive spin vs --poll off, {} ({rounds} runs each, ABBA): wall {:.2} vs {:.2} M req/s ({:.2}x); per CPU {:.2} vs {:.2} M req/s ({:.2}x)",
            if k == 0 { "NOP" } else { "CSUM 9000 B" },
            sa.0 / rounds as f64 / 1e6,
            so.0 / rounds as f64 / 1e6,
            out[k].0,
            sa.1 / rounds as f64 / 1e6,
            so.1 / rounds as f64 / 1e6,
            out[k].1
        );
    }
    out
}

/// Wake cost: one request at a time to a worker that never spins, so each
/// one is a kick, a wake-up and a sleep; the daemon's CPU per request minus
/// the request path's own cost.
fn wake_us(rig: &mut Rig, path_ns: f64) -> f64 {
    let per_req_s = rig.one_at_a_time(&shape(OP_NOP, 0));
    (per_req_s * 1e9 - path_ns).max(0.0) / 1e3
}

fn gbit(requests_per_s: f64, bytes: u32) -> f64 {
    requests_per_s * f64::from(bytes) * 8.0 / 1e9
}

/// The "some" line of /proc/pressure/cpu.
fn pressure() -> String {
    std::fs::read_to_string("/proc/pressure/cpu")
        .unwrap_or_default()
        .lines()
        .next()
        .unwrap_or("unavailable")
        .to_string()
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .trim()
        .to_string()
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --benches` would pass other
    // flags: run only for a real benchmark run.
    if !std::env::args().any(|a| a == "--bench") {
        println!("throughput: run with `cargo bench -p pktaccel-device`");
        return;
    }
    let runs = |var: &str| std::env::var(var).ok().and_then(|v| v.parse::<u32>().ok());
    if std::env::var_os("PKTACCEL_BENCH_PROFILE").is_some() {
        profile_only();
    } else if let Ok(spec) = std::env::var("PKTACCEL_BENCH_INPROC") {
        profile::inproc_only(&spec);
    } else if std::env::var_os("PKTACCEL_BENCH_ENGINE").is_some() {
        profile::engine_pieces();
    } else if std::env::var_os("PKTACCEL_BENCH_SEGMENTS").is_some() {
        segments_only();
    } else if let Some(n) = runs("PKTACCEL_BENCH_NOP") {
        nop_only(n);
    } else if let Some(n) = runs("PKTACCEL_BENCH_SPIN") {
        spin_only(n);
    } else if let Some(n) = runs("PKTACCEL_BENCH_WAKE") {
        profile::wake_only(n);
    } else {
        full_run();
    }
}

/// PKTACCEL_BENCH_PROFILE=1: only the in-process NOP path, about 5 s, to
/// run under a profiler.
fn profile_only() {
    let r = (0..12)
        .map(|_| in_process(&shape(OP_NOP, 64), &KEY))
        .fold(0.0, f64::max);
    println!("in-process NOP 64 B: {:.1} ns/request", 1e9 / r);
}

/// PKTACCEL_BENCH_SEGMENTS=1: only the segment-streaming comparison.
fn segments_only() {
    for (op, r) in segment_costs() {
        println!("16 x 1500 B over 1 x 24000 B, {:<14} {r:.2}", op_name(op));
    }
}

/// PKTACCEL_BENCH_NOP=N: only batched NOP, N runs on each worker.
fn nop_only(n: u32) {
    println!("load average: {}; {}", loadavg(), pressure());
    let mut rigs = [
        Rig::start(&["--poll", SPIN_US], &KEY),
        Rig::start(&[], &KEY),
    ];
    for _ in 0..n {
        for (name, rig) in ["non-sleeping", "default"].iter().zip(&mut rigs) {
            let r = rate(rig.run(&shape(OP_NOP, 64)));
            println!(
                "NOP {name:<13} {:>7.2} M/s wall {:>7.2} M/CPU-s {:>7.2} M/busy-s",
                r.0 / 1e6,
                r.1 / 1e6,
                r.2 / 1e6
            );
            std::thread::sleep(Duration::from_millis(150));
        }
    }
}

/// PKTACCEL_BENCH_SPIN=N: only adaptive vs no spinning, N runs each.
fn spin_only(n: u32) {
    println!("load average: {}; {}", loadavg(), pressure());
    let mut a = Rig::start(&[], &KEY);
    let mut o = Rig::start(&["--poll", "off"], &KEY);
    adaptive_vs_off(&mut a, &mut o, n as usize);
    for (name, r) in [("adaptive", &a), ("off", &o)] {
        let s = r.stats();
        println!(
            "{name}: {} spins, {} with work arriving",
            s["spins"], s["spin_hits"]
        );
    }
    println!("load average: {}; {}", loadavg(), pressure());
}

/// The whole benchmark: NOP, adaptive spinning, every op at every size,
/// segment streaming, per-request overhead, and the JSON summary.
fn full_run() {
    let total = Instant::now();
    let load_start = loadavg();
    let mut poll = Rig::start(&["--poll", SPIN_US], &KEY);
    let mut sleep = Rig::start(&[], &KEY);
    let mut never = Rig::start(&["--poll", "off"], &KEY);
    println!(
        "pktaccel-device request path (1 queue, ring {}, batches of {}, EVENT_IDX, polling driver)",
        rig::RING,
        rig::BATCH
    );
    println!("load average at start: {load_start}");
    println!("(shared host: every figure below was measured in this one run; \"per CPU\" figures");
    println!(
        " count the daemon's CPU time, wall figures also the time other tasks held the CPUs)\n"
    );
    let (nop_poll, nop_inproc, wake) = nop_section(&mut poll, &mut sleep, &mut never);

    // The adaptive default against no spinning at all, on this host as it
    // is (ABBA order, so both see the same load).
    let adaptive = adaptive_vs_off(&mut sleep, &mut never, 4);
    println!("CPU pressure now: {}", pressure());
    println!();

    let mut points = Vec::new();
    for &size in &SIZES {
        for &op in &OPS {
            points.push(measure_point(&mut poll, &mut sleep, op, size));
        }
    }
    print_tables(&points);
    let segs = segment_costs();
    println!("\n16 input segments of 1500 B over 1 of 24000 B, in-process CPU time per request:");
    for (op, r) in &segs {
        println!("  {:<14} {r:>6.2}", op_name(*op));
    }
    let csum_over = overhead_section(&points);
    let load_end = loadavg();
    println!("\nload average at end: {load_end}");
    let json = summary_json(
        (nop_poll, nop_inproc),
        csum_over,
        (wake, (adaptive[0].0, adaptive[1].0)),
        (&points, &segs),
        &load_end,
    );
    write_summary(&json);
    drop((poll, sleep, never));
    println!(
        "total benchmark time {:.1} s",
        total.elapsed().as_secs_f64()
    );
}

/// The batched NOP table: in process, non-sleeping and default worker,
/// and the wake cost. Returns the non-sleeping rate, the in-process rate
/// and the wake cost in µs.
fn nop_section(poll: &mut Rig, sleep: &mut Rig, never: &mut Rig) -> (Rate, f64, f64) {
    let nop = shape(OP_NOP, 64);
    let nop_inproc = in_process(&nop, &KEY);
    let nop_poll = rate(poll.run(&nop));
    std::thread::sleep(Duration::from_millis(150));
    let nop_sleep = rate(sleep.run(&nop));
    let path_ns = 1e9 / nop_inproc;
    let wake = wake_us(never, path_ns);
    println!(
        "{:<34} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}",
        "batched NOP (64 B input)",
        "M/s wall",
        "ns wall",
        "M/CPU-s",
        "CPU ns",
        "M/busy-s",
        "busy ns"
    );
    println!(
        "{:<34} {:>9} {:>9} {:>9.2} {:>9.1}",
        "in process",
        "",
        "",
        nop_inproc / 1e6,
        path_ns
    );
    for (name, r) in [
        ("vhost-user, non-sleeping worker", nop_poll),
        ("vhost-user, default worker", nop_sleep),
    ] {
        println!(
            "{name:<34} {:>9.2} {:>9.1} {:>9.2} {:>9.1} {:>9.2} {:>9.1}",
            r.0 / 1e6,
            1e9 / r.0,
            r.1 / 1e6,
            1e9 / r.1,
            r.2 / 1e6,
            1e9 / r.2
        );
    }
    println!(
        "{:<34} {:>12.2} µs of daemon CPU",
        "wake cost (sleep + wake)", wake
    );
    println!();
    (nop_poll, nop_inproc, wake)
}

/// Prints the per-request overhead of CSUM and CRC32C at 1500 B over the
/// raw engine; returns CSUM's (non-sleeping busy, default CPU,
/// non-sleeping wall, default wall) for the summary.
fn overhead_section(points: &[Point]) -> [f64; 4] {
    let over = |p: &Point, rate: f64| 1e9 / rate - 1e9 / p.raw_set;
    let (c, k) = (point(points, OP_CSUM, 1500), point(points, OP_CRC32C, 1500));
    println!("\nper-request overhead at 1500 B (device time per request minus the raw engine's):");
    for (name, p) in [("CSUM  ", c), ("CRC32C", k)] {
        println!(
            "  {name} in process {:>6.1} ns; vhost-user non-sleeping {:>6.1} ns busy, {:.1} CPU, {:.1} wall; default {:>6.1} ns CPU, {:.1} wall",
            over(p, p.in_process),
            over(p, p.polling.2),
            over(p, p.polling.1),
            over(p, p.polling.0),
            over(p, p.sleeping.1),
            over(p, p.sleeping.0)
        );
    }
    [
        over(c, c.polling.2),
        over(c, c.sleeping.1),
        over(c, c.polling.0),
        over(c, c.sleeping.0),
    ]
}

fn point(points: &[Point], op: u16, size: u32) -> &Point {
    points
        .iter()
        .find(|p| p.op == op && p.size == size)
        .expect("every op was measured at every size")
}

fn print_tables(points: &[Point]) {
    // The 1500-byte table `cargo xtask bench` reads (columns 1, 4, 5).
    println!(
        "{:<17} {:>8} {:>9} {:>9} {:>9} {:>9} {:>8} {:>8}",
        "1500 B (Gbit/s)",
        "default",
        "in-proc",
        "spin/busy",
        "raw hot",
        "raw set",
        "dflt wall",
        "spin wall"
    );
    for p in points.iter().filter(|p| p.size == 1500) {
        println!(
            "{:<17} {:>8.2} {:>9.2} {:>9.2} {:>9.2} {:>9.2} {:>8.2} {:>8.2}",
            op_name(p.op),
            gbit(p.sleeping.1, 1500),
            gbit(p.in_process, 1500),
            gbit(p.polling.2, 1500),
            gbit(p.raw_hot, 1500),
            gbit(p.raw_set, 1500),
            gbit(p.sleeping.0, 1500),
            gbit(p.polling.0, 1500),
        );
    }
    println!("(default: the default worker per second of daemon CPU; spin/busy: the non-sleeping");
    println!(" worker per second it was busy; *wall: per wall-clock second)");
    for (title, sleeping, basis) in [
        ("device/raw, non-sleeping, per busy", false, Basis::Busy),
        ("device/raw, default, per CPU", true, Basis::Cpu),
        ("device/raw, non-sleeping, per wall", false, Basis::Wall),
        ("device/raw, default, per wall", true, Basis::Wall),
    ] {
        println!(
            "\n{title:<34} {:>8} {:>8} {:>8} {:>8}",
            "64", "1500", "9000", "65536"
        );
        for &op in &OPS {
            let row: Vec<String> = SIZES
                .iter()
                .map(|&s| format!("{:>8.2}", ratio(point(points, op, s), sleeping, basis)))
                .collect();
            println!("{:<34} {}", op_name(op), row.join(" "));
        }
    }
}

/// Device over raw engine for one point.
fn ratio(p: &Point, sleeping: bool, basis: Basis) -> f64 {
    pick(if sleeping { p.sleeping } else { p.polling }, basis) / p.raw_set
}

fn summary_json(
    (nop, nop_inproc): (Rate, f64),
    [over_busy, over_cpu_sleeping, over_wall, over_wall_sleeping]: [f64; 4],
    (wake, adaptive): (f64, (f64, f64)),
    (points, segs): (&[Point], &[(u16, f64)]),
    load: &str,
) -> String {
    let ratios = |sleeping: bool, basis: Basis| {
        let ops: Vec<String> = OPS
            .iter()
            .map(|&op| {
                let sizes: Vec<String> = SIZES
                    .iter()
                    .map(|&s| {
                        format!(
                            "\"{s}\": {:.3}",
                            ratio(point(points, op, s), sleeping, basis)
                        )
                    })
                    .collect();
                format!("\"{}\": {{{}}}", op_name(op), sizes.join(", "))
            })
            .collect();
        format!("{{{}}}", ops.join(", "))
    };
    let mut j = String::from("{");
    j += "\"basis\": \"raw engines per second of their thread's CPU time; the device with the non-sleeping worker (nop_mreqs_per_s, overhead_ns.vhost_user, ratio_polling) per second the worker spent processing requests (its busy ns counter), with the default worker (overhead_ns.vhost_user_sleeping, ratio_sleeping) per second of daemon CPU time, wakes included; *_wall keys per wall-clock second\",\n";
    j += &format!(
        " \"nop_mreqs_per_s\": {:.3}, \"nop_mreqs_per_s_wall\": {:.3}, \"nop_mreqs_per_s_in_process\": {:.3},\n",
        nop.2 / 1e6,
        nop.0 / 1e6,
        nop_inproc / 1e6
    );
    j += &format!(
        " \"overhead_ns\": {{\"in_process\": {:.1}, \"vhost_user\": {over_busy:.1}, \"vhost_user_sleeping\": {over_cpu_sleeping:.1}, \"vhost_user_wall\": {over_wall:.1}, \"vhost_user_sleeping_wall\": {over_wall_sleeping:.1}}},\n",
        1e9 / nop_inproc
    );
    j += &format!(" \"wake_us\": {wake:.3},\n");
    j += &format!(
        " \"adaptive_over_off_wall\": {{\"nop\": {:.3}, \"csum_9000\": {:.3}}},\n",
        adaptive.0, adaptive.1
    );
    j += &format!(" \"ratio_polling\": {},\n", ratios(false, Basis::Busy));
    j += &format!(" \"ratio_sleeping\": {},\n", ratios(true, Basis::Cpu));
    j += &format!(" \"ratio_polling_wall\": {},\n", ratios(false, Basis::Wall));
    j += &format!(" \"ratio_sleeping_wall\": {},\n", ratios(true, Basis::Wall));
    let seg: Vec<String> = segs
        .iter()
        .map(|(op, r)| format!("\"{}\": {r:.3}", op_name(*op)))
        .collect();
    j += &format!(
        " \"segments_16x1500_over_1x24000\": {{{}}},\n",
        seg.join(", ")
    );
    j += &format!(" \"loadavg\": \"{load}\"}}\n");
    j
}

/// Writes `target/bench/device-summary.json` (the target directory is the
/// one this benchmark binary was built into).
fn write_summary(json: &str) {
    let exe = std::env::current_exe().expect("benchmark path");
    // target/<profile>/deps/throughput-<hash>
    let target = exe
        .ancestors()
        .nth(3)
        .expect("benchmark binary inside a target directory");
    let dir = target.join("bench");
    let path = dir.join("device-summary.json");
    match std::fs::create_dir_all(&dir).and_then(|()| std::fs::write(&path, json)) {
        Ok(()) => println!("summary written to {}", path.display()),
        Err(e) => eprintln!("cannot write {}: {e}", path.display()),
    }
}
