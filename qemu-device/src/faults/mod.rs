//! Fault injection: the device misbehaves on purpose, the way silicon can
//! and a driver team cannot provoke on demand (a slow or lost completion,
//! an error status, a false length, a used id naming no request, a lost
//! or spurious interrupt, a reset it ignores, death mid-batch).
//!
//! Faults come from `--fault SPEC` (grammar in [`spec`]) and from the
//! control socket ([`control`]) at run time. The request path asks
//! [`Faults::on_request`], [`Faults::lose_interrupt`],
//! [`Faults::spurious_interrupt`] and
//! [`Faults::on_ring_stop`] what to do; with no fault installed each call
//! is one relaxed load. Every fault counts how often it fired; the counts
//! appear in the device stats.

pub mod control;
pub mod inject;
pub mod spec;

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, RwLock};
use std::time::Duration;

pub use spec::{BogusUsed, Kind, Spec, SpecError};

/// One installed fault with its counters.
#[derive(Debug)]
pub struct Fault {
    /// Number for `del ID` on the control socket.
    pub id: u32,
    /// What, where, how often.
    pub spec: Spec,
    seen: AtomicU64,
    fired: AtomicU64,
    rng: AtomicU64,
}

impl Fault {
    fn new(id: u32, spec: Spec) -> Self {
        let seed = spec.seed.unwrap_or_else(|| {
            let t = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(0);
            t ^ u64::from(id).rotate_left(32)
        });
        Self {
            id,
            spec,
            seen: AtomicU64::new(0),
            fired: AtomicU64::new(0),
            rng: AtomicU64::new(seed),
        }
    }

    /// How many times it fired.
    pub fn fired(&self) -> u64 {
        self.fired.load(Relaxed)
    }

    /// A uniformly distributed u64 (splitmix64 over an atomic counter, so
    /// workers never lock for it).
    fn random(&self) -> u64 {
        let mut z = self
            .rng
            .fetch_add(0x9e37_79b9_7f4a_7c15, Relaxed)
            .wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn matches(&self, queue: u16, op: Option<u16>) -> bool {
        self.spec.queue.is_none_or(|q| q == queue) && self.spec.op.is_none_or(|o| Some(o) == op)
    }

    /// Decides one matching event: `after`, then `rate`, then `count`.
    fn fire(&self) -> bool {
        let n = self.seen.fetch_add(1, Relaxed);
        if n < self.spec.after {
            return false;
        }
        if let Some(r) = self.spec.rate
            && (self.random() >> 32) >= r
        {
            return false;
        }
        match self.spec.count {
            None => {
                self.fired.fetch_add(1, Relaxed);
                true
            }
            Some(max) => self
                .fired
                .fetch_update(Relaxed, Relaxed, |f| (f < max).then_some(f + 1))
                .is_ok(),
        }
    }
}

/// What the faults decided for one request.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RequestFaults {
    /// Hold the completion this long.
    pub delay: Duration,
    /// Answer with this status instead of doing the op.
    pub status: Option<u32>,
    /// Never complete the request.
    pub drop: bool,
    /// Report this used length.
    pub used_len: Option<u32>,
    /// Write this `len` in the status record.
    pub status_len: Option<u32>,
    /// Publish a used element that completes no request, too.
    pub bogus_used: Option<BogusUsed>,
    /// The device dies after this completion: the spec that said so.
    pub die: Option<u32>,
}

/// The faults installed in a device, shared by its workers, the control
/// socket and the stats. Survives reconnections, like the counters.
#[derive(Debug, Default)]
pub struct Faults {
    list: RwLock<Vec<Arc<Fault>>>,
    any: AtomicBool,
    next_id: AtomicU32,
}

impl Faults {
    /// No faults (a `const fn`, so a static empty table can stand in
    /// where no faults were configured).
    pub const fn new() -> Self {
        Self {
            list: RwLock::new(Vec::new()),
            any: AtomicBool::new(false),
            next_id: AtomicU32::new(0),
        }
    }

    /// Parses and installs every spec, or none of them.
    pub fn from_specs<S: AsRef<str>>(specs: &[S]) -> Result<Self, SpecError> {
        let parsed = specs
            .iter()
            .map(|s| spec::parse(s.as_ref()))
            .collect::<Result<Vec<_>, _>>()?;
        let me = Self::new();
        for s in parsed {
            me.add(s);
        }
        Ok(me)
    }

    /// Installs a parsed fault; returns its id.
    pub fn add(&self, spec: Spec) -> u32 {
        let id = self.next_id.fetch_add(1, Relaxed) + 1;
        let mut list = self.list.write().unwrap_or_else(|e| e.into_inner());
        list.push(Arc::new(Fault::new(id, spec)));
        self.any.store(true, Relaxed);
        id
    }

    /// Removes fault `id`; false when there is none.
    pub fn remove(&self, id: u32) -> bool {
        let mut list = self.list.write().unwrap_or_else(|e| e.into_inner());
        let before = list.len();
        list.retain(|f| f.id != id);
        self.any.store(!list.is_empty(), Relaxed);
        list.len() != before
    }

    /// Removes every fault; returns how many there were.
    pub fn clear(&self) -> usize {
        let mut list = self.list.write().unwrap_or_else(|e| e.into_inner());
        let n = list.len();
        list.clear();
        self.any.store(false, Relaxed);
        n
    }

    /// The installed faults, in the order they were added.
    pub fn list(&self) -> Vec<Arc<Fault>> {
        self.list.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// True when at least one fault is installed (one relaxed load: the
    /// request path asks this first).
    pub fn active(&self) -> bool {
        self.any.load(Relaxed)
    }

    fn each(&self, mut f: impl FnMut(&Fault)) {
        if !self.active() {
            return;
        }
        for fault in self.list.read().unwrap_or_else(|e| e.into_inner()).iter() {
            f(fault);
        }
    }

    /// Decides the per-request faults for a request of `op` (None when its
    /// header could not be read) on `queue`.
    pub fn on_request(&self, queue: u16, op: Option<u16>) -> RequestFaults {
        let mut r = RequestFaults::default();
        self.each(|f| {
            if !f.matches(queue, op) {
                return;
            }
            match f.spec.kind {
                Kind::Delay { min, max } => {
                    if f.fire() {
                        let span = (max - min).as_nanos() as u64;
                        let extra = if span == 0 {
                            0
                        } else {
                            f.random() % (span + 1)
                        };
                        r.delay += min + Duration::from_nanos(extra);
                    }
                }
                Kind::Status(st) => {
                    if r.status.is_none() && f.fire() {
                        r.status = Some(st);
                    }
                }
                Kind::Drop => r.drop |= f.fire(),
                Kind::UsedLen(n) => {
                    if r.used_len.is_none() && f.fire() {
                        r.used_len = Some(n);
                    }
                }
                Kind::StatusLen(n) => {
                    if r.status_len.is_none() && f.fire() {
                        r.status_len = Some(n);
                    }
                }
                Kind::BogusUsed(m) => {
                    if r.bogus_used.is_none() && f.fire() {
                        r.bogus_used = Some(m);
                    }
                }
                Kind::DieAfter(n) => {
                    if f.seen.fetch_add(1, Relaxed) >= n {
                        f.fired.fetch_add(1, Relaxed);
                        r.die = Some(f.id);
                    }
                }
                Kind::NoResetAck(_) | Kind::LoseIrq | Kind::SpuriousIrq => {}
            }
        });
        r.delay = r.delay.min(spec::MAX_DELAY);
        r
    }

    /// True when the interrupt now due on `queue` is to be lost.
    pub fn lose_interrupt(&self, queue: u16) -> bool {
        self.irq(queue, Kind::LoseIrq)
    }

    /// True when the worker, woken on `queue`, is to interrupt the driver
    /// before it completed anything (an interrupt with nothing new).
    pub fn spurious_interrupt(&self, queue: u16) -> bool {
        self.irq(queue, Kind::SpuriousIrq)
    }

    fn irq(&self, queue: u16, kind: Kind) -> bool {
        let mut fired = false;
        self.each(|f| {
            if f.spec.kind == kind && f.matches(queue, None) {
                fired |= f.fire();
            }
        });
        fired
    }

    /// How long to hold the frontend's stop of `queue` (its reset).
    pub fn on_ring_stop(&self, queue: u16) -> Option<Duration> {
        let mut stall = None;
        self.each(|f| {
            if let Kind::NoResetAck(d) = f.spec.kind
                && f.matches(queue, None)
                && f.fire()
            {
                stall = Some(stall.unwrap_or(Duration::ZERO).max(d));
            }
        });
        stall
    }

    /// The text of fault `id` (for the death message).
    pub fn describe(&self, id: u32) -> String {
        self.list()
            .iter()
            .find(|f| f.id == id)
            .map(|f| f.spec.text.clone())
            .unwrap_or_else(|| format!("fault {id}"))
    }

    /// `(spec, fired)` per installed fault, for the stats.
    pub fn counts(&self) -> Vec<(String, u64)> {
        self.list()
            .iter()
            .map(|f| (f.spec.text.clone(), f.fired()))
            .collect()
    }
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} fired={}", self.id, self.spec.text, self.fired())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pktaccel_abi::{OP_COPY, OP_CSUM, STATUS_NO_KEY, STATUS_TOO_BIG};

    #[test]
    fn nothing_installed_decides_nothing() {
        let f = Faults::new();
        assert!(!f.active());
        assert_eq!(f.on_request(0, Some(OP_CSUM)), RequestFaults::default());
        assert!(!f.lose_interrupt(0) && !f.spurious_interrupt(0));
        assert_eq!(f.on_ring_stop(0), None);
    }

    #[test]
    fn scope_after_and_count_are_honoured() {
        let f = Faults::from_specs(&["status=no-key,queue=1,op=csum,after=2,count=2"]).unwrap();
        assert_eq!(f.on_request(0, Some(OP_CSUM)).status, None, "other queue");
        assert_eq!(f.on_request(1, Some(OP_COPY)).status, None, "other op");
        assert_eq!(f.on_request(1, None).status, None, "unknown op");
        let got: Vec<_> = (0..6)
            .map(|_| f.on_request(1, Some(OP_CSUM)).status)
            .collect();
        let k = Some(STATUS_NO_KEY);
        assert_eq!(got, [None, None, k, k, None, None]);
        assert_eq!(f.counts(), vec![(f.list()[0].spec.text.clone(), 2)]);
    }

    #[test]
    fn rate_is_roughly_honoured_and_seeded() {
        let f = Faults::from_specs(&["drop,rate=0.25,seed=1"]).unwrap();
        let n = (0..10_000).filter(|_| f.on_request(0, None).drop).count();
        assert!((2_200..2_800).contains(&n), "{n} of 10000 at rate 0.25");
        let g = Faults::from_specs(&["drop,rate=0.25,seed=1"]).unwrap();
        let m = (0..10_000).filter(|_| g.on_request(0, None).drop).count();
        assert_eq!(n, m, "same seed, same choices");
        let never = Faults::from_specs(&["drop,rate=0"]).unwrap();
        assert!((0..1000).all(|_| !never.on_request(0, None).drop));
    }

    #[test]
    fn delays_stay_in_range_and_die_after_counts() {
        let f = Faults::from_specs(&["delay=1ms..3ms,seed=5", "die-after=3,op=csum"]).unwrap();
        for i in 0..50 {
            let r = f.on_request(0, Some(OP_COPY));
            assert!(
                (Duration::from_millis(1)..=Duration::from_millis(3)).contains(&r.delay),
                "{r:?}"
            );
            assert_eq!(r.die, None, "copy is not counted ({i})");
        }
        let die: Vec<_> = (0..4).map(|_| f.on_request(0, Some(OP_CSUM)).die).collect();
        assert_eq!(die, [None, None, None, Some(2)]);
        assert_eq!(f.describe(2), "die-after=3,op=csum");
    }

    #[test]
    fn irq_and_reset_faults_and_runtime_changes() {
        let f = Faults::from_specs(&["lose-irq,queue=0", "no-reset-ack=2s"]).unwrap();
        assert!(f.lose_interrupt(0));
        assert!(!f.lose_interrupt(1));
        assert!(!f.spurious_interrupt(0));
        assert_eq!(f.on_ring_stop(1), Some(Duration::from_secs(2)));
        let id = f.add(spec::parse("spurious-irq,count=1").unwrap());
        assert!(f.spurious_interrupt(1));
        assert!(!f.spurious_interrupt(1), "count=1");
        assert!(f.remove(id));
        assert!(!f.remove(id));
        assert_eq!(f.clear(), 2);
        assert!(!f.active());
        let t = Faults::from_specs(&["used-len=7", "status=too-big"]).unwrap();
        let r = t.on_request(3, None);
        assert_eq!((r.used_len, r.status), (Some(7), Some(STATUS_TOO_BIG)));
    }

    /// The lying-device kinds: a false status length and a used id naming
    /// no request, each scoped and counted like the others.
    #[test]
    fn status_len_and_bogus_used_are_decided_per_request() {
        let f = Faults::from_specs(&[
            "status-len=4096,op=copy,count=1",
            "bogus-used=duplicate,queue=1,count=2",
        ])
        .unwrap();
        assert_eq!(f.on_request(0, Some(OP_CSUM)).status_len, None, "other op");
        let r = f.on_request(0, Some(OP_COPY));
        assert_eq!((r.status_len, r.bogus_used), (Some(4096), None));
        assert_eq!(f.on_request(0, Some(OP_COPY)).status_len, None, "count=1");
        let got: Vec<_> = (0..3).map(|_| f.on_request(1, None).bogus_used).collect();
        let d = Some(BogusUsed::Duplicate);
        assert_eq!(got, [d, d, None]);
        assert_eq!(f.counts().iter().map(|c| c.1).collect::<Vec<_>>(), [1, 2]);
    }

    /// The ids each mode publishes, on rings of 1, 64 and 32768 entries.
    #[test]
    fn bogus_ids_are_out_of_range_a_duplicate_or_half_a_ring_away() {
        use BogusUsed::*;
        assert_eq!(OutOfRange.id(3, 64), 67);
        assert_eq!(OutOfRange.id(32767, 32768), 65535);
        assert!((0..64).all(|h| OutOfRange.id(h, 64) >= 64));
        assert_eq!(Duplicate.id(5, 64), 5);
        assert_eq!(NotInFlight.id(0, 64), 32);
        assert_eq!(NotInFlight.id(40, 64), 8);
        assert_eq!(NotInFlight.id(0, 1), 0);
        assert_eq!(OutOfRange.id(0, 1), 1);
    }

    #[test]
    fn one_bad_spec_installs_none() {
        let e = Faults::from_specs(&["drop", "status=nope"]).unwrap_err();
        assert!(e.to_string().contains("unknown status \"nope\""), "{e}");
    }
}
