//! Device counters: requests and bytes per op, completions per status, and
//! chains that could not even be answered.
//!
//! Each queue worker owns one [`Shard`] and is its only writer, so counting
//! is a plain load+store (no locked instruction on the hot path); readers
//! (SIGUSR1, exit, tests) sum the shards with relaxed loads.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, OnceLock};

use pktaccel_abi::{OP_COUNT, STATUS_COUNT, op_name, status_name};

const OPS: usize = OP_COUNT as usize;
const STATUSES: usize = STATUS_COUNT as usize;

/// One writer's counters.
#[derive(Debug, Default)]
pub struct Shard {
    requests: [AtomicU64; OPS],
    bytes: [AtomicU64; OPS],
    status: [AtomicU64; STATUSES],
    no_status: AtomicU64,
    bad_head: AtomicU64,
    broken: AtomicU64,
    busy_ns: AtomicU64,
    spins: AtomicU64,
    spin_hits: AtomicU64,
}

#[inline]
fn bump(c: &AtomicU64, n: u64) {
    // Single writer per shard: a relaxed load+store cannot lose updates.
    c.store(c.load(Relaxed).wrapping_add(n), Relaxed);
}

impl Shard {
    /// Counts a completed request of a known op with its input bytes.
    #[inline]
    pub fn op(&self, op: u16, bytes: u64) {
        let i = usize::from(op);
        if i < OPS {
            bump(&self.requests[i], 1);
            bump(&self.bytes[i], bytes);
        }
    }

    /// Counts a status record written.
    #[inline]
    pub fn status(&self, status: u32) {
        if let Some(c) = self.status.get(status as usize) {
            bump(c, 1);
        }
    }

    /// Counts a chain returned without a status record (no usable status
    /// descriptor).
    pub fn no_status(&self) {
        bump(&self.no_status, 1);
    }

    /// Counts an available-ring entry naming a descriptor past the ring,
    /// which cannot even be returned to the used ring.
    pub fn bad_head(&self) {
        bump(&self.bad_head, 1);
    }

    /// Adds time the worker spent taking and completing requests (not
    /// spinning, not sleeping).
    pub fn busy(&self, d: std::time::Duration) {
        bump(&self.busy_ns, d.as_nanos() as u64);
    }

    /// Counts a spin on an empty ring, and whether work arrived during it.
    pub fn spin(&self, hit: bool) {
        bump(&self.spins, 1);
        if hit {
            bump(&self.spin_hits, 1);
        }
    }

    /// Counts a queue marked broken (e.g. an avail index more than a ring
    /// ahead).
    pub fn broken_queue(&self) {
        bump(&self.broken, 1);
    }
}

/// All shards of a device; shared across reconnections.
#[derive(Debug)]
pub struct Stats {
    shards: Vec<Shard>,
    faults: OnceLock<Arc<crate::faults::Faults>>,
}

/// Summed counters at one moment.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// Completed requests per op code.
    pub requests: [u64; OPS],
    /// Input bytes per op code.
    pub bytes: [u64; OPS],
    /// Status records written, per status code.
    pub status: [u64; STATUSES],
    /// Chains returned without a status record.
    pub no_status: u64,
    /// Available-ring heads past the descriptor table.
    pub bad_head: u64,
    /// Queues marked broken.
    pub broken: u64,
    /// Nanoseconds workers spent processing requests.
    pub busy_ns: u64,
    /// Spins on an empty ring.
    pub spins: u64,
    /// Spins during which work arrived.
    pub spin_hits: u64,
    /// Injected faults installed now: (spec, times fired).
    pub faults: Vec<(String, u64)>,
}

impl Snapshot {
    /// All error completions: non-OK status records plus unanswerable chains.
    pub fn errors(&self) -> u64 {
        self.status[1..].iter().sum::<u64>() + self.no_status + self.bad_head
    }
}

impl Stats {
    /// Counters for `shards` writers (one per queue).
    pub fn new(shards: usize) -> Self {
        Self {
            shards: (0..shards).map(|_| Shard::default()).collect(),
            faults: OnceLock::new(),
        }
    }

    /// Reports `faults`' fired counters with the other counters (once; a
    /// second call is ignored).
    pub fn attach_faults(&self, faults: Arc<crate::faults::Faults>) {
        let _ = self.faults.set(faults);
    }

    /// The shard of writer `i` (clamped, so a bad index cannot panic).
    pub fn shard(&self, i: usize) -> &Shard {
        &self.shards[i.min(self.shards.len() - 1)]
    }

    /// Sums all shards.
    pub fn snapshot(&self) -> Snapshot {
        let mut s = Snapshot::default();
        for sh in &self.shards {
            for i in 0..OPS {
                s.requests[i] += sh.requests[i].load(Relaxed);
                s.bytes[i] += sh.bytes[i].load(Relaxed);
            }
            for i in 0..STATUSES {
                s.status[i] += sh.status[i].load(Relaxed);
            }
            s.no_status += sh.no_status.load(Relaxed);
            s.bad_head += sh.bad_head.load(Relaxed);
            s.broken += sh.broken.load(Relaxed);
            s.busy_ns += sh.busy_ns.load(Relaxed);
            s.spins += sh.spins.load(Relaxed);
            s.spin_hits += sh.spin_hits.load(Relaxed);
        }
        if let Some(f) = self.faults.get() {
            s.faults = f.counts();
        }
        s
    }
}

impl fmt::Display for Snapshot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "pktaccel-device stats:")?;
        for op in 0..OP_COUNT {
            let i = usize::from(op);
            if self.requests[i] != 0 {
                writeln!(
                    f,
                    "  op {:<13} requests {:>12}  bytes {:>16}",
                    op_name(op),
                    self.requests[i],
                    self.bytes[i]
                )?;
            }
        }
        for st in 0..STATUS_COUNT {
            let n = self.status[st as usize];
            if n != 0 {
                writeln!(f, "  status {:<12} {:>12}", status_name(st), n)?;
            }
        }
        writeln!(f, "  no-status chains    {:>12}", self.no_status)?;
        writeln!(f, "  broken queues       {:>12}", self.broken)?;
        writeln!(f, "  busy ns             {:>12}", self.busy_ns)?;
        writeln!(
            f,
            "  spins (hits)        {:>12} {}",
            self.spins, self.spin_hits
        )?;
        for (spec, fired) in &self.faults {
            writeln!(f, "  fault {spec:<30} fired {fired:>12}")?;
        }
        // Last, so a reader of the log knows the dump is complete.
        write!(f, "  bad ring heads      {:>12}", self.bad_head)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_sum_and_errors_exclude_ok() {
        let s = Stats::new(2);
        s.shard(0).op(1, 100);
        s.shard(1).op(1, 50);
        s.shard(1).status(0);
        s.shard(0).status(3);
        s.shard(0).no_status();
        s.shard(7).op(99, 1); // unknown op, clamped shard: ignored, no panic
        let snap = s.snapshot();
        assert_eq!(snap.requests[1], 2);
        assert_eq!(snap.bytes[1], 150);
        assert_eq!(snap.errors(), 2);
        let text = snap.to_string();
        assert!(text.contains("csum"), "{text}");
        assert!(text.contains("bad-address"), "{text}");
        let f = Arc::new(crate::faults::Faults::from_specs(&["drop,count=1"]).unwrap());
        s.attach_faults(f.clone());
        assert!(f.on_request(0, None).drop);
        let text = s.snapshot().to_string();
        assert!(
            text.lines()
                .any(|l| l.trim_start().starts_with("fault drop,count=1") && l.ends_with(" 1")),
            "{text}"
        );
        let last = text.lines().last().unwrap_or_default();
        assert!(
            last.contains("bad ring heads"),
            "the dump must end with it: {text}"
        );
    }
}
