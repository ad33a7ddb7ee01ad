//! How long a queue worker spins on an empty ring before it sleeps until
//! the next kick.
//!
//! A sleep and wake costs a few microseconds of CPU; spinning that long
//! instead costs at most as much, so spinning for up to one wake's cost and
//! then blocking never loses more than 2x against the better of the two
//! (the ski-rental argument). The spin adapts: it doubles when work
//! arrived while spinning, halves when it did not, and is off for a while
//! when spinning takes the CPU from someone else: when the thread was
//! preempted while spinning, or when `/proc/pressure/cpu` shows tasks
//! waiting for a CPU.

use std::str::FromStr;
use std::time::{Duration, Instant};

/// The worker's polling policy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PollMode {
    /// Adaptive spin-then-block (the default).
    Adaptive,
    /// Spin for a fixed time after the ring runs empty.
    Fixed(Duration),
    /// Never spin: sleep as soon as the ring is empty.
    Off,
}

impl FromStr for PollMode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "adaptive" => Ok(Self::Adaptive),
            "off" | "0" => Ok(Self::Off),
            _ => s
                .parse::<u32>()
                .map(|us| Self::Fixed(Duration::from_micros(u64::from(us))))
                .map_err(|_| format!("--poll takes adaptive, off or microseconds (got {s:?})")),
        }
    }
}

/// Longest adaptive spin: about one sleep/wake's CPU cost.
pub const MAX_SPIN: Duration = Duration::from_micros(8);
const MIN_SPIN: Duration = Duration::from_nanos(500);
const START_SPIN: Duration = Duration::from_micros(2);
/// How long spinning stays off after contention was seen.
const BACKOFF: Duration = Duration::from_millis(20);
/// CPU pressure above this share of wall time turns spinning off.
const PRESSURE_LIMIT: f64 = 0.05;

/// One worker's spin state.
#[derive(Debug)]
pub struct Spinner {
    mode: PollMode,
    spin: Duration,
    off_until: Option<Instant>,
    /// (when, PSI "some" total in µs) at the last pressure check.
    psi: Option<(Instant, u64)>,
}

impl Spinner {
    /// A spinner for `mode`.
    pub fn new(mode: PollMode) -> Self {
        Self {
            mode,
            spin: START_SPIN,
            off_until: None,
            psi: None,
        }
    }

    /// How long to spin now (zero: do not).
    pub fn budget(&mut self) -> Duration {
        match self.mode {
            PollMode::Off => Duration::ZERO,
            PollMode::Fixed(d) => d,
            PollMode::Adaptive => {
                let now = Instant::now();
                if self.off_until.is_some_and(|t| now < t) {
                    return Duration::ZERO;
                }
                if self.pressured(now) {
                    self.off_until = Some(now + BACKOFF);
                    return Duration::ZERO;
                }
                self.spin
            }
        }
    }

    /// Records how a spin ended: `hit` when work arrived, `preempted` when
    /// the thread lost its CPU meanwhile.
    pub fn record(&mut self, hit: bool, preempted: bool) {
        if self.mode != PollMode::Adaptive {
            return;
        }
        if preempted {
            self.off_until = Some(Instant::now() + BACKOFF);
        }
        self.spin = if hit {
            (self.spin * 2).min(MAX_SPIN)
        } else {
            (self.spin / 2).max(MIN_SPIN)
        };
    }

    /// True when, since the last check (at most every [`BACKOFF`]), tasks
    /// waited for a CPU more than [`PRESSURE_LIMIT`] of the time.
    fn pressured(&mut self, now: Instant) -> bool {
        if self
            .psi
            .is_some_and(|(t, _)| now.duration_since(t) < BACKOFF)
        {
            return false;
        }
        let Some(total) = cpu_pressure_total_us() else {
            return false;
        };
        let prev = self.psi.replace((now, total));
        prev.is_some_and(|(t, before)| {
            let wall = now.duration_since(t).as_micros().max(1) as f64;
            total.saturating_sub(before) as f64 / wall > PRESSURE_LIMIT
        })
    }
}

/// `some total=` of `/proc/pressure/cpu`: microseconds during which at
/// least one task waited for a CPU. `None` without PSI.
fn cpu_pressure_total_us() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/pressure/cpu").ok()?;
    parse_psi_some_total(&text)
}

fn parse_psi_some_total(text: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with("some "))?;
    line.split_whitespace()
        .find_map(|f| f.strip_prefix("total="))?
        .parse()
        .ok()
}

/// Involuntary context switches of the calling thread so far.
pub fn involuntary_switches() -> i64 {
    // SAFETY: rusage is plain data for which all-zero is valid, and
    // getrusage only writes into the struct we pass.
    unsafe {
        let mut ru: libc::rusage = std::mem::zeroed();
        if libc::getrusage(libc::RUSAGE_THREAD, &mut ru) != 0 {
            return 0;
        }
        ru.ru_nivcsw
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_parse_and_bad_ones_say_what_is_accepted() {
        assert_eq!("adaptive".parse(), Ok(PollMode::Adaptive));
        assert_eq!("off".parse(), Ok(PollMode::Off));
        assert_eq!("0".parse(), Ok(PollMode::Off));
        assert_eq!("50".parse(), Ok(PollMode::Fixed(Duration::from_micros(50))));
        let e = "fast".parse::<PollMode>().unwrap_err();
        assert!(e.contains("adaptive, off or microseconds"), "{e}");
    }

    #[test]
    fn spin_doubles_on_hits_halves_on_misses_and_backs_off_when_preempted() {
        let mut s = Spinner::new(PollMode::Adaptive);
        s.psi = Some((Instant::now(), 0)); // no pressure check for a while
        assert_eq!(s.budget(), START_SPIN);
        for _ in 0..10 {
            s.record(true, false);
        }
        assert_eq!(s.budget(), MAX_SPIN);
        s.record(false, false);
        assert_eq!(s.budget(), MAX_SPIN / 2);
        for _ in 0..20 {
            s.record(false, false);
        }
        assert_eq!(s.budget(), MIN_SPIN);
        s.record(true, true);
        assert_eq!(s.budget(), Duration::ZERO, "preempted: spinning is off");
        let mut off = Spinner::new(PollMode::Off);
        assert_eq!(off.budget(), Duration::ZERO);
    }

    #[test]
    fn psi_line_parses() {
        let t = "some avg10=1.50 avg60=0.80 avg300=0.20 total=123456\nfull avg10=0.00 avg60=0.00 avg300=0.00 total=0\n";
        assert_eq!(parse_psi_some_total(t), Some(123_456));
        assert_eq!(parse_psi_some_total("garbage"), None);
    }
}
