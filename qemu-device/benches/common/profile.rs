//! The benchmark's single-figure modes, for profiling and A/B runs of
//! one change (see `main` in throughput.rs for the variables).

use super::*;

/// PKTACCEL_BENCH_INPROC=op:size[:segments[:chains]]: only that op in
/// process and its raw engine, a few seconds, to run under a profiler.
pub fn inproc_only(spec: &str) {
    let parts: Vec<&str> = spec.split(':').collect();
    let op = OPS
        .iter()
        .chain(&[OP_NOP])
        .copied()
        .find(|&o| op_name(o) == parts[0])
        .expect("PKTACCEL_BENCH_INPROC=op:size[:segments[:chains]] with a pktctl op name");
    let size: u32 = parts.get(1).and_then(|s| s.parse().ok()).unwrap_or(1500);
    let mut sh = shape(op, size);
    sh.segs = parts.get(2).and_then(|s| s.parse().ok()).unwrap_or(1);
    sh.chains = parts.get(3).and_then(|s| s.parse().ok()).unwrap_or(0);
    let mut raw = raw_engine(op);
    let mut out = vec![0u8; size as usize + 16];
    let r = raw_rate(|| raw(&sh.payload, &mut out));
    for _ in 0..8 {
        let d = in_process(&sh, &KEY);
        println!(
            "{} {size} B x{}: in process {:.1} ns/request, raw (hot) {:.1} ns, ratio {:.2}",
            op_name(op),
            sh.segs,
            1e9 / d,
            1e9 / r,
            d / r
        );
    }
}

/// PKTACCEL_BENCH_WAKE=N: only the wake cost, N times.
pub fn wake_only(n: u32) {
    println!("load average: {}; {}", loadavg(), pressure());
    let mut never = Rig::start(&["--poll", "off"], &KEY);
    let path_ns = 1e9 / in_process(&shape(OP_NOP, 64), &KEY);
    for _ in 0..n {
        println!(
            "wake cost {:.2} µs of daemon CPU",
            wake_us(&mut never, path_ns)
        );
    }
}
