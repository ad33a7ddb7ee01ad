//! Throughput of the real daemon driven through the vhost-user frontend,
//! side by side with the raw engines called in a loop (and memcpy for COPY).
//!
//! `cargo bench -p pktaccel-device` — prints requests/s for batched (32)
//! 64-byte NOP and CSUM, Gbit/s for 1500-byte CSUM, CRC32C, CRC-32,
//! AES-256-GCM seal and COPY, and the device/raw ratios. No assertions:
//! figures depend on the machine and its load.

#[path = "../tests/support/mod.rs"]
mod support;

use std::hint::black_box;
use std::time::{Duration, Instant};

use pktaccel_abi::*;
use pktaccel_device::engines::{crc, csum, gcm};
use support::{Daemon, Guest, GuestOpts, RawDesc, hdr};

const BATCH: usize = 32;
const RING: u16 = 1024;
const MEASURE: Duration = Duration::from_millis(1500);

/// One request shape, pre-built into as many chains as the ring holds.
struct Shape {
    header: RequestHeader,
    in_len: u32,
    out_len: u32,
}

struct DeviceRun {
    /// Wall-clock requests per second.
    requests_per_s: f64,
    /// Wall-clock input bytes per second.
    bytes_per_s: f64,
    /// Requests per second of daemon CPU time: what one fully available
    /// core would sustain (the host is shared, so wall time understates it).
    requests_per_cpu_s: f64,
}

fn run_device(d: &Daemon, g: &mut Guest, shape: &Shape) -> DeviceRun {
    let q = 0;
    let per_chain = 2 + u16::from(shape.in_len > 0) + u16::from(shape.out_len > 0);
    let chains = (RING / per_chain) as usize / BATCH * BATCH;
    let mut heads = Vec::with_capacity(chains);
    let hdr_area = g.alloc(64 * chains as u64);
    let st_area = g.alloc(16 * chains as u64);
    let data = g.alloc(u64::from(shape.in_len.max(1)) * chains as u64);
    let out = g.alloc(u64::from(shape.out_len.max(1)) * chains as u64);
    let payload: Vec<u8> = (0..shape.in_len).map(|i| (i * 31 + 7) as u8).collect();
    for i in 0..chains {
        let h = hdr_area + 64 * i as u64;
        g.write(h, &shape.header.to_le_bytes());
        let mut d = vec![RawDesc::r(h, 64)];
        if shape.in_len > 0 {
            let a = data + u64::from(shape.in_len) * i as u64;
            g.write(a, &payload);
            d.push(RawDesc::r(a, shape.in_len));
        }
        if shape.out_len > 0 {
            d.push(RawDesc::w(
                out + u64::from(shape.out_len) * i as u64,
                shape.out_len,
            ));
        }
        d.push(RawDesc::w(st_area + 16 * i as u64, 16));
        let first = i as u16 * per_chain;
        g.prebuild(q, first, &d);
        heads.push(first);
    }
    g.queues[q].interrupts = false;
    let batches = chains / BATCH;
    let mut run = |dur: Duration| -> (usize, Duration) {
        let start = Instant::now();
        let (mut submitted, mut completed, mut next) = (0usize, 0usize, 0usize);
        // Keep every pre-built chain in flight, in batches of 32.
        loop {
            while submitted - completed + BATCH <= chains {
                let b = next % batches;
                g.push_avail_batch(q, &heads[b * BATCH..(b + 1) * BATCH]);
                g.kick(q);
                submitted += BATCH;
                next += 1;
            }
            completed += g.reap(q);
            if start.elapsed() >= dur && completed >= submitted.saturating_sub(chains) {
                break;
            }
            std::hint::spin_loop();
        }
        // Drain so the next run starts with an empty ring.
        while completed < submitted {
            completed += g.reap(q);
        }
        (completed, start.elapsed())
    };
    run(Duration::from_millis(200)); // warm-up
    let cpu0 = d.cpu_seconds();
    let (n, t) = run(MEASURE);
    let cpu = (d.cpu_seconds() - cpu0).max(0.01);
    // Spot-check results: every status record says OK.
    for i in [0, chains / 2, chains - 1] {
        let st = StatusRecord::from_le_bytes(&g.read(st_area + 16 * i as u64, 16)).unwrap();
        assert_eq!(st.status, STATUS_OK, "benchmark request failed: {st:?}");
    }
    let rps = n as f64 / t.as_secs_f64();
    DeviceRun {
        requests_per_s: rps,
        bytes_per_s: rps * f64::from(shape.in_len),
        requests_per_cpu_s: n as f64 / cpu,
    }
}

/// The device's request path in-process: the same `Processor::drain` the
/// daemon runs, on a ring in local memory, with no vhost-user, no eventfds
/// and no thread wake-ups. Returns requests per CPU second of the device
/// part alone (the ring refills are not timed).
fn run_in_process(shape: &Shape, key: &[u8; 32]) -> f64 {
    use pktaccel_device::request::Processor;
    use pktaccel_device::stats::Stats;
    use virtio_queue::{Queue, QueueT};
    use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

    let mem: GuestMemoryMmap<()> =
        GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 16 << 20)]).unwrap();
    let (desc, avail, used) = (0u64, 0x4000u64, 0x8000u64);
    let mut q = Queue::new(RING).unwrap();
    q.set_size(RING);
    q.set_desc_table_address(Some(desc as u32), Some(0));
    q.set_avail_ring_address(Some(avail as u32), Some(0));
    q.set_used_ring_address(Some(used as u32), Some(0));
    q.set_ready(true);
    let per_chain = 2 + u16::from(shape.in_len > 0) + u16::from(shape.out_len > 0);
    let chains = (RING / per_chain) as usize / BATCH * BATCH;
    let (hdrs, stat, data) = (0x10_0000u64, 0x20_0000u64, 0x30_0000u64);
    let out = data + 0x40_0000;
    let payload: Vec<u8> = (0..shape.in_len).map(|i| (i * 31 + 7) as u8).collect();
    let mut heads = Vec::new();
    for i in 0..chains as u64 {
        let h = hdrs + 64 * i;
        mem.write_slice(&shape.header.to_le_bytes(), GuestAddress(h))
            .unwrap();
        let mut d = vec![(h, 64u32, 0u16)];
        if shape.in_len > 0 {
            let a = data + u64::from(shape.in_len) * i;
            mem.write_slice(&payload, GuestAddress(a)).unwrap();
            d.push((a, shape.in_len, 0));
        }
        if shape.out_len > 0 {
            d.push((out + u64::from(shape.out_len) * i, shape.out_len, 2));
        }
        d.push((stat + 16 * i, 16, 2));
        let first = i as u16 * per_chain;
        for (j, &(a, l, f)) in d.iter().enumerate() {
            let last = j + 1 == d.len();
            let id = first + j as u16;
            let at = GuestAddress(desc + 16 * u64::from(id));
            mem.write_obj(a.to_le(), at).unwrap();
            mem.write_obj(l.to_le(), GuestAddress(at.0 + 8)).unwrap();
            let flags = f | if last { 0 } else { 1 };
            mem.write_obj(flags.to_le(), GuestAddress(at.0 + 12))
                .unwrap();
            mem.write_obj(
                (if last { 0 } else { id + 1 }).to_le(),
                GuestAddress(at.0 + 14),
            )
            .unwrap();
        }
        heads.push(first);
    }
    let p = Processor::new(pktaccel_device::config::ALL_OPS, 64, 1 << 20, 16);
    p.keys.set(0, key).unwrap();
    let stats = Stats::new(1);
    let mut lane = pktaccel_device::drain::Lane::default();
    let mut avail_idx = 0u16;
    let mut next = 0usize;
    let mut device_cpu = 0.0f64;
    let mut n = 0usize;
    let start = Instant::now();
    while start.elapsed() < MEASURE {
        // Driver: offer a whole ring's worth, in batches of 32 (untimed).
        for _ in 0..chains / BATCH {
            for k in 0..BATCH {
                let slot = GuestAddress(avail + 4 + 2 * u64::from(avail_idx % RING));
                mem.write_obj(heads[(next + k) % chains].to_le(), slot)
                    .unwrap();
                avail_idx = avail_idx.wrapping_add(1);
            }
            next += BATCH;
        }
        mem.write_obj(avail_idx.to_le(), GuestAddress(avail + 2))
            .unwrap();
        // Device (timed).
        let c0 = thread_cpu_seconds();
        n += p.drain(&mut q, &mem, 0, &mut lane, stats.shard(0)).taken;
        device_cpu += thread_cpu_seconds() - c0;
    }
    assert_eq!(stats.snapshot().errors(), 0, "in-process requests failed");
    n as f64 / device_cpu.max(1e-6)
}

/// CPU time of the calling thread, in seconds.
fn thread_cpu_seconds() -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; the clock id is a constant
    // Linux supports.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as f64 + ts.tv_nsec as f64 / 1e9
}

/// Calls `f` in a loop for about MEASURE; returns calls per wall second and
/// per CPU second of this thread.
fn run_raw(mut f: impl FnMut()) -> (f64, f64) {
    for _ in 0..1000 {
        f();
    }
    let start = Instant::now();
    let cpu0 = thread_cpu_seconds();
    let mut n = 0u64;
    while start.elapsed() < MEASURE {
        for _ in 0..256 {
            f();
        }
        n += 256;
    }
    let cpu = (thread_cpu_seconds() - cpu0).max(1e-6);
    (n as f64 / start.elapsed().as_secs_f64(), n as f64 / cpu)
}

fn gbit(bytes_per_s: f64) -> f64 {
    bytes_per_s * 8.0 / 1e9
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --benches` would pass other
    // flags: run only for a real benchmark run.
    if !std::env::args().any(|a| a == "--bench") {
        println!("throughput: run with `cargo bench -p pktaccel-device`");
        return;
    }
    let total = Instant::now();
    // PKTACCEL_BENCH_PROFILE=1: only the in-process NOP path, for ~5 s, to
    // run under a profiler.
    if std::env::var_os("PKTACCEL_BENCH_PROFILE").is_some() {
        let shape = Shape {
            header: hdr(OP_NOP),
            in_len: 64,
            out_len: 0,
        };
        let rate = (0..3)
            .map(|_| run_in_process(&shape, &[0; 32]))
            .fold(0.0, f64::max);
        println!("in-process NOP 64 B: {rate:.0} requests per CPU second");
        return;
    }
    // PKTACCEL_BENCH_POLL_US overrides the daemon's --poll-us (to compare).
    let poll = std::env::var("PKTACCEL_BENCH_POLL_US").ok();
    let mut args = vec!["--queue-size", "1024"];
    if let Some(p) = poll.as_deref() {
        args.extend(["--poll-us", p]);
    }
    let d = Daemon::spawn(&args);
    let mut g = Guest::connect(
        &d.path,
        GuestOpts {
            queues: 1,
            queue_size: RING,
            event_idx: true,
        },
    );
    let key = [0x5au8; 32];
    let k = g.alloc_with(&key);
    let mut ks = hdr(OP_KEY_SET);
    ks.key_slot = 0;
    assert_eq!(g.call(0, &ks, &[(k, 32)], &[]).0.status, STATUS_OK);
    // Descriptors used by that setup call are free again; pre-built chains
    // below claim the ring from descriptor 0.

    println!(
        "pktaccel-device throughput (1 queue, ring {RING}, batches of {BATCH}, EVENT_IDX, polling driver)"
    );
    println!();
    println!(
        "{:<28} {:>14} {:>18} {:>14}",
        "small requests", "requests/s", "per device CPU-s", "in-process"
    );
    for (name, op) in [("NOP 64 B", OP_NOP), ("CSUM 64 B", OP_CSUM)] {
        let r = run_device(
            &d,
            &mut g,
            &Shape {
                header: hdr(op),
                in_len: 64,
                out_len: 0,
            },
        );
        let shape = Shape {
            header: hdr(op),
            in_len: 64,
            out_len: 0,
        };
        let inproc = run_in_process(&shape, &key);
        println!(
            "{:<28} {:>14.0} {:>18.0} {:>14.0}",
            format!("device {name}"),
            r.requests_per_s,
            r.requests_per_cpu_s,
            inproc
        );
    }
    let small = [0xabu8; 64];
    let (raw_csum64, raw_csum64_cpu) = run_raw(|| {
        black_box(csum::checksum(0, [black_box(&small[..])]));
    });
    println!(
        "{:<28} {:>14.0} {:>18.0}",
        "raw csum 64 B", raw_csum64, raw_csum64_cpu
    );

    // Raw ceilings: the engine on one hot buffer (L1), and the engine over
    // as many distinct buffers as the device has requests in flight (the
    // same working set the device streams through, ~512 KiB).
    let set = (usize::from(RING) / 3) / BATCH * BATCH;
    let bufs: Vec<Vec<u8>> = (0..set)
        .map(|b| (0..1500u32).map(|i| (i * 13 + b as u32) as u8).collect())
        .collect();
    let mut outs: Vec<Vec<u8>> = vec![vec![0u8; 1516]; set];
    let gkey = gcm::key(&key);
    let iv = [1u8; 12];
    let mut seal_hdr = hdr(OP_AES_GCM_SEAL);
    seal_hdr.params[..12].copy_from_slice(&iv);

    println!();
    println!(
        "{:<17} {:>8} {:>9} {:>9} {:>9} {:>9} {:>8} {:>8} {:>8} {:>8}",
        "1500 B (Gbit/s)",
        "device",
        "dev/CPU",
        "in-proc",
        "raw hot",
        "raw set",
        "wall",
        "CPU",
        "CPU/set",
        "inp/set"
    );
    println!(
        "{:<17} {:>8} {:>9} {:>9} {:>9} {:>9} {:>8} {:>8} {:>8} {:>8}",
        "", "wall", "", "per CPU", "per CPU", "per CPU", "dev/hot", "dev/hot", "dev/set", ""
    );
    type Raw<'a> = Box<dyn FnMut(&[u8], &mut [u8]) + 'a>;
    let cases: Vec<(&str, RequestHeader, u32, Raw)> = vec![
        (
            "CSUM",
            hdr(OP_CSUM),
            0,
            Box::new(|i: &[u8], _: &mut [u8]| {
                black_box(csum::checksum(0, [black_box(i)]));
            }),
        ),
        (
            "CRC32C",
            hdr(OP_CRC32C),
            0,
            Box::new(|i: &[u8], _: &mut [u8]| {
                black_box(crc::crc32c(0, [black_box(i)]));
            }),
        ),
        (
            "CRC-32",
            hdr(OP_CRC32),
            0,
            Box::new(|i: &[u8], _: &mut [u8]| {
                black_box(crc::crc32(0, [black_box(i)]));
            }),
        ),
        (
            "AES-256-GCM seal",
            seal_hdr,
            1516,
            // The device seals from guest memory into guest memory; the raw
            // engine seals in place, after the same copy the device does.
            Box::new(|i: &[u8], o: &mut [u8]| {
                o[..1500].copy_from_slice(i);
                let tag = gcm::seal(&gkey, &iv, &[], black_box(&mut o[..1500]));
                o[1500..].copy_from_slice(&tag);
            }),
        ),
        (
            "COPY (memcpy)",
            hdr(OP_COPY),
            1500,
            Box::new(|i: &[u8], o: &mut [u8]| {
                o[..1500].copy_from_slice(black_box(i));
                black_box(o);
            }),
        ),
    ];
    for (name, header, out_len, mut raw) in cases {
        let dev = run_device(
            &d,
            &mut g,
            &Shape {
                header,
                in_len: 1500,
                out_len,
            },
        );
        let inproc_bps = run_in_process(
            &Shape {
                header,
                in_len: 1500,
                out_len,
            },
            &key,
        ) * 1500.0;
        let (_, hot_cpu) = run_raw(|| raw(&bufs[0], &mut outs[0]));
        let mut n = 0usize;
        let (_, set_cpu) = run_raw(|| {
            raw(&bufs[n % set], &mut outs[n % set]);
            n += 1;
        });
        let (dev_bps, dev_cpu_bps) = (dev.bytes_per_s, dev.requests_per_cpu_s * 1500.0);
        let (hot_bps, set_bps) = (hot_cpu * 1500.0, set_cpu * 1500.0);
        println!(
            "{:<17} {:>8.2} {:>9.2} {:>9.2} {:>9.2} {:>9.2} {:>8.2} {:>8.2} {:>8.2} {:>8.2}",
            name,
            gbit(dev_bps),
            gbit(dev_cpu_bps),
            gbit(inproc_bps),
            gbit(hot_bps),
            gbit(set_bps),
            dev_bps / hot_bps,
            dev_cpu_bps / hot_bps,
            dev_cpu_bps / set_bps,
            inproc_bps / set_bps,
        );
    }
    drop(g);
    let _ = d.stop();
    println!();
    println!("device wall: requests completed per wall-clock second through the frontend.");
    println!("dev/CPU: the same per second of daemon CPU time (what one free core sustains).");
    println!("raw hot / raw set: the engine called in a loop, per second of its thread's CPU");
    println!("  time, on one hot buffer / over as many buffers as the device has in flight.");
    println!("in-process: the daemon's request path (Processor::drain) on a local ring, no");
    println!("  vhost-user, eventfds or wake-ups, per CPU second of the device part.");
    println!("Ratios: wall device over raw hot; dev/CPU over raw hot; dev/CPU over raw set;");
    println!("  in-process over raw set.");
    println!(
        "total benchmark time {:.1} s",
        total.elapsed().as_secs_f64()
    );
}
