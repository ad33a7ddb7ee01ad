//! The benchmark's rigs: a daemon with a connected frontend and pre-built
//! request chains, the same request path run in process, and the raw
//! engines in a loop.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use pktaccel_abi::*;

use crate::support::{Daemon, Guest, GuestOpts, RawDesc, hdr};

/// Requests per kick.
pub const BATCH: usize = 32;
/// Ring size.
pub const RING: u16 = 1024;
/// Time per measured point.
pub const MEASURE: Duration = Duration::from_millis(400);
const WARMUP: Duration = Duration::from_millis(100);
/// Bytes of guest memory for inputs, and again for outputs.
const AREA: u64 = 15 << 20;

/// One request shape.
pub struct Shape {
    /// The request header.
    pub header: RequestHeader,
    /// Input bytes (one segment; 0 for none).
    pub in_len: u32,
    /// Output bytes (one segment; 0 for none).
    pub out_len: u32,
    /// The input bytes.
    pub payload: Vec<u8>,
    /// Input segments the input is split into (in process only).
    pub segs: u32,
    /// In process: at most this many distinct chains (0: as many as the
    /// ring and the data area hold), so that two shapes can be compared
    /// over the same working set.
    pub chains: usize,
}

/// Requests completed per wall second and per second of daemon CPU.
pub struct DeviceRun {
    /// Wall-clock requests per second.
    pub requests_per_s: f64,
    /// Requests per second of the daemon's CPU time: what the queue thread
    /// sustains when it has a core (the host is shared, so wall time also
    /// counts the time other tasks held the CPU).
    pub requests_per_cpu_s: f64,
    /// Requests per second the worker spent processing them (its "busy
    /// ns" counter: no spinning, sleeping or waking).
    pub requests_per_busy_s: f64,
}

/// A daemon, its frontend and guest-memory areas for chains.
pub struct Rig {
    d: Daemon,
    g: Guest,
    hdrs: u64,
    stat: u64,
    ins: u64,
    outs: u64,
}

fn per_chain(s: &Shape) -> u16 {
    2 + u16::from(s.in_len > 0) + u16::from(s.out_len > 0)
}

impl Rig {
    /// Starts a daemon with `args`, connects, installs `key` in slot 0.
    pub fn start(args: &[&str], key: &[u8; 32]) -> Rig {
        let mut a = vec!["--queue-size", "1024"];
        a.extend_from_slice(args);
        let d = Daemon::spawn(&a);
        let mut g = Guest::connect(
            &d.path,
            GuestOpts {
                queues: 1,
                queue_size: RING,
                event_idx: true,
            },
        );
        let k = g.alloc_with(key);
        assert_eq!(
            g.call(0, &hdr(OP_KEY_SET), &[(k, 32)], &[]).0.status,
            STATUS_OK
        );
        let hdrs = g.alloc(64 * u64::from(RING));
        let stat = g.alloc(16 * u64::from(RING));
        let ins = g.alloc(AREA);
        let outs = g.alloc(AREA);
        g.queues[0].interrupts = false;
        Rig {
            d,
            g,
            hdrs,
            stat,
            ins,
            outs,
        }
    }

    /// The daemon's counters (see `support::parse_stats`).
    pub fn stats(&self) -> std::collections::HashMap<String, u64> {
        self.d.stats()
    }

    /// Chains of `s` that fit the ring and the areas, a multiple of BATCH.
    pub fn chains(&self, s: &Shape) -> usize {
        let by_ring = usize::from(RING / per_chain(s));
        let by_mem = (AREA / u64::from(s.in_len.max(s.out_len).max(1))) as usize;
        by_ring.min(by_mem) / BATCH * BATCH
    }

    /// Writes the chains of `s` into the ring's descriptors; their heads.
    fn prebuild(&mut self, s: &Shape) -> Vec<u16> {
        let chains = self.chains(s);
        let pc = per_chain(s);
        let g = &mut self.g;
        (0..chains)
            .map(|i| {
                let h = self.hdrs + 64 * i as u64;
                g.write(h, &s.header.to_le_bytes());
                let mut d = vec![RawDesc::r(h, 64)];
                if s.in_len > 0 {
                    let a = self.ins + u64::from(s.in_len) * i as u64;
                    g.write(a, &s.payload);
                    d.push(RawDesc::r(a, s.in_len));
                }
                if s.out_len > 0 {
                    let o = self.outs + u64::from(s.out_len) * i as u64;
                    d.push(RawDesc::w(o, s.out_len));
                }
                d.push(RawDesc::w(self.stat + 16 * i as u64, 16));
                let first = i as u16 * pc;
                g.prebuild(0, first, &d);
                first
            })
            .collect()
    }

    /// Keeps every chain of `s` in flight, in batches, for MEASURE.
    pub fn run(&mut self, s: &Shape) -> DeviceRun {
        let heads = self.prebuild(s);
        let chains = heads.len();
        let g = &mut self.g;
        let mut go = |dur: Duration| -> (usize, Duration) {
            let batches = chains / BATCH;
            let start = Instant::now();
            let (mut submitted, mut completed, mut next) = (0usize, 0usize, 0usize);
            let mut idle = 0u32;
            loop {
                while submitted - completed + BATCH <= chains {
                    let b = next % batches;
                    g.push_avail_batch(0, &heads[b * BATCH..(b + 1) * BATCH]);
                    g.kick(0);
                    submitted += BATCH;
                    next += 1;
                }
                let got = g.reap(0);
                completed += got;
                if start.elapsed() >= dur {
                    break;
                }
                if got == 0 {
                    idle += 1;
                    // A driver polling for completions on a shared host
                    // gives its CPU away now and then.
                    if idle.is_multiple_of(256) {
                        std::thread::yield_now();
                    }
                }
                std::hint::spin_loop();
            }
            let t = start.elapsed();
            let deadline = Instant::now() + Duration::from_secs(20);
            while completed < submitted {
                completed += g.reap(0);
                assert!(Instant::now() < deadline, "device stopped completing");
            }
            (completed, t)
        };
        go(WARMUP);
        let busy0 = self.d.stats()["busy_ns"];
        let cpu0 = self.d.cpu_seconds();
        let (n, t) = go(MEASURE);
        let cpu = (self.d.cpu_seconds() - cpu0).max(0.01);
        let busy = (self.d.stats()["busy_ns"] - busy0).max(1) as f64 / 1e9;
        for i in [0, chains / 2, chains - 1] {
            let st = StatusRecord::from_le_bytes(&g.read(self.stat + 16 * i as u64, 16)).unwrap();
            assert_eq!(st.status, STATUS_OK, "benchmark request failed: {st:?}");
        }
        DeviceRun {
            requests_per_s: n as f64 / t.as_secs_f64(),
            requests_per_cpu_s: n as f64 / cpu,
            requests_per_busy_s: n as f64 / busy,
        }
    }

    /// One request of `s` at a time, each kicked and awaited; the daemon's
    /// CPU seconds per request.
    pub fn one_at_a_time(&mut self, s: &Shape) -> f64 {
        let heads = self.prebuild(s);
        let g = &mut self.g;
        let mut go = |dur: Duration| -> usize {
            let start = Instant::now();
            let mut n = 0;
            while start.elapsed() < dur {
                g.push_avail_batch(0, &heads[..1]);
                g.kick(0);
                let mut idle = 0u32;
                while g.reap(0) == 0 {
                    idle += 1;
                    if idle.is_multiple_of(256) {
                        std::thread::yield_now();
                    }
                    std::hint::spin_loop();
                }
                n += 1;
            }
            n
        };
        go(WARMUP);
        let cpu0 = self.d.cpu_seconds();
        let n = go(MEASURE * 2);
        (self.d.cpu_seconds() - cpu0) / n.max(1) as f64
    }
}

/// The request path in process: `Processor::drain` (what the worker runs)
/// on a ring in local memory, no vhost-user, eventfds or wake-ups.
/// Requests per CPU second of the drain alone (ring refills not timed).
pub fn in_process(shape: &Shape, key: &[u8; 32]) -> f64 {
    use pktaccel_device::drain::Lane;
    use pktaccel_device::request::Processor;
    use pktaccel_device::stats::Stats;
    use virtio_queue::{Queue, QueueT};
    use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

    let mem: GuestMemoryMmap<()> =
        GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 40 << 20)]).unwrap();
    let (desc, avail, used) = (0u64, 0x4000u64, 0x8000u64);
    let mut q = Queue::new(RING).unwrap();
    q.set_size(RING);
    q.set_desc_table_address(Some(desc as u32), Some(0));
    q.set_avail_ring_address(Some(avail as u32), Some(0));
    q.set_used_ring_address(Some(used as u32), Some(0));
    q.set_event_idx(true);
    q.set_ready(true);
    let pc = per_chain(shape) + shape.segs.max(1) as u16 - 1;
    let chains = (usize::from(RING / pc))
        .min((16 << 20) / shape.in_len.max(shape.out_len).max(1) as usize)
        .min(if shape.chains > 0 {
            shape.chains
        } else {
            usize::MAX
        })
        / BATCH
        * BATCH;
    // PKTACCEL_BENCH_CHAINS caps the working set (profiling: how much of a
    // request's cost is cache misses).
    let chains = std::env::var("PKTACCEL_BENCH_CHAINS")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .map_or(chains, |c| chains.min(c.max(BATCH)));
    let (hdrs, stat, data) = (0x10_0000u64, 0x14_0000u64, 0x20_0000u64);
    let out = data + (18 << 20);
    let mut heads = Vec::new();
    for i in 0..chains as u64 {
        let h = hdrs + 64 * i;
        mem.write_slice(&shape.header.to_le_bytes(), GuestAddress(h))
            .unwrap();
        let mut d = vec![(h, 64u32, 0u16)];
        if shape.in_len > 0 {
            let a = data + u64::from(shape.in_len) * i;
            mem.write_slice(&shape.payload, GuestAddress(a)).unwrap();
            let n = shape.segs.max(1);
            let each = shape.in_len / n;
            for k in 0..n {
                let len = if k + 1 == n {
                    shape.in_len - each * k
                } else {
                    each
                };
                d.push((a + u64::from(each * k), len, 0));
            }
        }
        if shape.out_len > 0 {
            d.push((out + u64::from(shape.out_len) * i, shape.out_len, 2));
        }
        d.push((stat + 16 * i, 16, 2));
        let first = i as u16 * pc;
        for (j, &(a, l, f)) in d.iter().enumerate() {
            let last = j + 1 == d.len();
            let id = first + j as u16;
            let mut b = [0u8; 16];
            b[0..8].copy_from_slice(&a.to_le_bytes());
            b[8..12].copy_from_slice(&l.to_le_bytes());
            b[12..14].copy_from_slice(&(f | if last { 0 } else { 1 }).to_le_bytes());
            b[14..16].copy_from_slice(&(if last { 0 } else { id + 1 }).to_le_bytes());
            mem.write_slice(&b, GuestAddress(desc + 16 * u64::from(id)))
                .unwrap();
        }
        heads.push(first);
    }
    let p = Processor::new(pktaccel_device::config::ALL_OPS, 64, 1 << 20, 16);
    p.keys.set(0, key).unwrap();
    let stats = Stats::new(1);
    let mut lane = Lane::default();
    let (mut avail_idx, mut next) = (0u16, 0usize);
    let (mut device_cpu, mut n) = (0.0f64, 0usize);
    let start = Instant::now();
    // Each timed drain takes a whole ring's worth of requests (the chains
    // offered again as often as they fit), so that the clock reads around
    // it (~0.4 µs on a VM) cost under a nanosecond per request whatever the
    // number of chains.
    let offer = chains * (usize::from(RING) / chains).max(1);
    while start.elapsed() < MEASURE {
        // Driver: offer a whole ring's worth (untimed).
        for _ in 0..offer {
            let slot = GuestAddress(avail + 4 + 2 * u64::from(avail_idx % RING));
            mem.write_obj(heads[next % chains].to_le(), slot).unwrap();
            avail_idx = avail_idx.wrapping_add(1);
            next += 1;
        }
        mem.store(
            avail_idx.to_le(),
            GuestAddress(avail + 2),
            Ordering::Release,
        )
        .unwrap();
        let c0 = thread_cpu_seconds();
        n += p.drain(&mut q, &mem, 0, &mut lane, stats.shard(0)).taken;
        device_cpu += thread_cpu_seconds() - c0;
    }
    assert_eq!(stats.snapshot().errors(), 0, "in-process requests failed");
    n as f64 / device_cpu.max(1e-6)
}

/// CPU time of the calling thread, in seconds.
pub fn thread_cpu_seconds() -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; the clock id is a constant
    // Linux supports.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as f64 + ts.tv_nsec as f64 / 1e9
}

/// Calls `f` in a loop for MEASURE; calls per CPU second of this thread.
pub fn raw_rate(mut f: impl FnMut()) -> f64 {
    let warm = Instant::now();
    while warm.elapsed() < WARMUP / 4 {
        f();
    }
    let start = Instant::now();
    let cpu0 = thread_cpu_seconds();
    let mut n = 0u64;
    while start.elapsed() < MEASURE {
        for _ in 0..16 {
            f();
        }
        n += 16;
    }
    n as f64 / (thread_cpu_seconds() - cpu0).max(1e-6)
}
