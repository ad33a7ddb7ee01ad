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

/// PKTACCEL_BENCH_ENGINE=1: the device's streaming checksum engines
/// alone, on one hot 24000-byte buffer fed as 1 and as 16 pieces: how much
/// of the segment comparison is the engine's own per-piece cost.
pub fn engine_pieces() {
    use pktaccel_device::engines::crc::{Crc32Stream, Crc32c};
    let data = payload(OP_CSUM, 24000);
    let mut buf = Vec::new();
    for pieces in [1usize, 16, 1, 16] {
        let each = data.len() / pieces;
        let feed = |update: &mut dyn FnMut(*const u8, usize)| {
            for k in 0..pieces {
                update(data[k * each..].as_ptr(), each);
            }
        };
        let csum = raw_rate(|| {
            let mut c = Csum::new(0);
            // SAFETY: pieces of a live vector.
            feed(&mut |p, n| unsafe { c.update_raw(p, n) });
            black_box(c.finish());
        });
        let crc32c = raw_rate(|| {
            let mut c = Crc32c::new(0);
            // SAFETY: as above.
            feed(&mut |p, n| unsafe { c.update_raw(p, n) });
            black_box(c.finish());
        });
        let crc32 = raw_rate(|| {
            let mut c = Crc32Stream::new(0, &mut buf);
            let all = (0..pieces).map(|k| (data[k * each..].as_ptr(), each));
            // SAFETY: as above.
            unsafe { c.update_pieces(all) };
            black_box(c.finish());
        });
        println!(
            "{pieces:>2} x {each} B: csum {:.1} ns, crc32c {:.1} ns, crc32 {:.1} ns",
            1e9 / csum,
            1e9 / crc32c,
            1e9 / crc32
        );
    }
}
