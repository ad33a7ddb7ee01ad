//! The `--fault SPEC` grammar (also what the control socket's `add` takes).
//!
//! ```text
//! SPEC  := KIND ( ',' KEY '=' VALUE )*
//! KIND  := delay=DUR | delay=DUR..DUR | status=STATUS | drop | used-len=N
//!        | status-len=N | bogus-used=out-of-range|duplicate|not-in-flight
//!        | no-reset-ack[=DUR] | die-after=N | lose-irq | spurious-irq
//! KEY   := queue=N | op=OP | rate=P | count=N | after=N | seed=N
//! DUR   := N(us|ms|s)        P := 0..1 (e.g. 0.25) or N% (e.g. 25%)
//! ```
//!
//! Every error names the part that is wrong, so that one line on stderr
//! (or on the control socket) is enough to fix the spec.

use std::fmt;
use std::time::Duration;

use pktaccel_abi::{OP_COUNT, STATUS_COUNT, STATUS_OK, op_name, status_name};

pub use crate::completion::BogusUsed;

/// Longest completion delay a fault may ask for: longer than any request
/// timeout worth testing, short enough that a typo cannot wedge a queue
/// for good (`drop` is the fault for "never").
pub const MAX_DELAY: Duration = Duration::from_secs(10);
/// Longest a ring stop (the vhost-user form of a device reset) may be held.
pub const MAX_RESET_STALL: Duration = Duration::from_secs(60);
/// How long `no-reset-ack` holds a ring stop when no duration is given.
pub const DEFAULT_RESET_STALL: Duration = Duration::from_secs(5);

/// What a fault does when it fires.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Hold each completion for a time drawn uniformly from `min..=max`.
    Delay {
        /// Shortest delay.
        min: Duration,
        /// Longest delay (equal to `min` for a fixed delay).
        max: Duration,
    },
    /// Answer with this error status instead of doing the op.
    Status(u32),
    /// Take the request and never complete it.
    Drop,
    /// Report this used length instead of the true one.
    UsedLen(u32),
    /// Write this `len` in the status record instead of the true one.
    StatusLen(u32),
    /// Publish a used element that completes no request besides the
    /// request's own.
    BogusUsed(BogusUsed),
    /// Hold the frontend's ring stop (reset) for this long.
    NoResetAck(Duration),
    /// Exit the process when this many matching requests were completed.
    DieAfter(u64),
    /// Complete a batch without interrupting the driver.
    LoseIrq,
    /// Interrupt the driver with nothing new on the used ring.
    SpuriousIrq,
}

impl Kind {
    fn name(&self) -> &'static str {
        match self {
            Kind::Delay { .. } => "delay",
            Kind::Status(_) => "status",
            Kind::Drop => "drop",
            Kind::UsedLen(_) => "used-len",
            Kind::StatusLen(_) => "status-len",
            Kind::BogusUsed(_) => "bogus-used",
            Kind::NoResetAck(_) => "no-reset-ack",
            Kind::DieAfter(_) => "die-after",
            Kind::LoseIrq => "lose-irq",
            Kind::SpuriousIrq => "spurious-irq",
        }
    }

    /// Whether the fault is decided per request (so `op=` means something).
    fn per_request(&self) -> bool {
        matches!(
            self,
            Kind::Delay { .. }
                | Kind::Status(_)
                | Kind::Drop
                | Kind::UsedLen(_)
                | Kind::StatusLen(_)
                | Kind::BogusUsed(_)
                | Kind::DieAfter(_)
        )
    }
}

/// A parsed fault: what, where, how often.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Spec {
    /// What it does.
    pub kind: Kind,
    /// Only this queue (all when `None`).
    pub queue: Option<u16>,
    /// Only requests of this op (all when `None`).
    pub op: Option<u16>,
    /// Probability of firing for a matching event, in 1/2^32 units
    /// (`None`: always).
    pub rate: Option<u64>,
    /// Fire at most this many times.
    pub count: Option<u64>,
    /// Let this many matching events pass before it may fire.
    pub after: u64,
    /// Seed of the fault's random choices (rate, random delay).
    pub seed: Option<u64>,
    /// The spec as written (trimmed), for `list` and the stats.
    pub text: String,
}

/// A malformed SPEC; the message names the bad part.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("bad fault spec {spec:?}: {what}")]
pub struct SpecError {
    /// The whole spec.
    pub spec: String,
    /// What is wrong with which part.
    pub what: String,
}

const KINDS: &str = "delay=DUR[..DUR], status=NAME, drop, used-len=N, status-len=N, bogus-used=MODE, no-reset-ack[=DUR], die-after=N, lose-irq, spurious-irq";
const KEYS: &str = "queue=N, op=NAME, rate=P, count=N, after=N, seed=N";

fn error_statuses() -> String {
    (STATUS_OK + 1..STATUS_COUNT)
        .map(status_name)
        .collect::<Vec<_>>()
        .join(", ")
}

fn bogus_modes() -> String {
    BogusUsed::ALL.map(BogusUsed::name).join(", ")
}

fn ops() -> String {
    (0..OP_COUNT).map(op_name).collect::<Vec<_>>().join(", ")
}

/// Parses one SPEC.
pub fn parse(spec: &str) -> Result<Spec, SpecError> {
    let text = spec.trim();
    let err = |what: String| SpecError {
        spec: text.to_string(),
        what,
    };
    if text.is_empty() {
        return Err(err(format!("empty; expected one of: {KINDS}")));
    }
    let mut parts = text.split(',').map(str::trim);
    let first = parts.next().unwrap_or_default();
    let kind = parse_kind(first).map_err(err)?;
    let mut s = Spec {
        kind,
        queue: None,
        op: None,
        rate: None,
        count: None,
        after: 0,
        seed: None,
        text: text.to_string(),
    };
    for part in parts {
        parse_key(&mut s, part).map_err(err)?;
    }
    if s.op.is_some() && !s.kind.per_request() {
        return Err(err(format!(
            "\"op=\" does not apply to {} (it acts on a batch or a queue, not on one request)",
            s.kind.name()
        )));
    }
    if let Kind::DieAfter(_) = s.kind
        && (s.rate.is_some() || s.count.is_some() || s.after != 0)
    {
        return Err(err(
            "die-after takes no rate=, count= or after= (the device dies once)".into(),
        ));
    }
    Ok(s)
}

fn parse_kind(part: &str) -> Result<Kind, String> {
    let (name, value) = match part.split_once('=') {
        Some((n, v)) => (n.trim(), Some(v.trim())),
        None => (part, None),
    };
    fn need<'a>(name: &str, v: Option<&'a str>, what: &str) -> Result<&'a str, String> {
        v.filter(|v| !v.is_empty())
            .ok_or_else(|| format!("\"{name}\" needs a value: {name}={what}"))
    }
    let none = |v: Option<&str>| match v {
        Some(v) => Err(format!("\"{name}\" takes no value (got \"{name}={v}\")")),
        None => Ok(()),
    };
    Ok(match name {
        "delay" => {
            let v = need(name, value, "DUR or DUR..DUR, e.g. 5ms or 1ms..20ms")?;
            let (min, max) = match v.split_once("..") {
                Some((a, b)) => (duration(a)?, duration(b)?),
                None => (duration(v)?, duration(v)?),
            };
            if min > max {
                return Err(format!("delay range \"{v}\" runs backwards"));
            }
            if max > MAX_DELAY {
                return Err(format!(
                    "delay \"{v}\" is over the {} s limit (use drop for a completion that never comes)",
                    MAX_DELAY.as_secs()
                ));
            }
            Kind::Delay { min, max }
        }
        "status" => {
            let v = need(name, value, "NAME")?;
            let st = (STATUS_OK + 1..STATUS_COUNT)
                .find(|&s| status_name(s).eq_ignore_ascii_case(v))
                .ok_or_else(|| {
                    format!(
                        "unknown status \"{v}\" (error statuses: {})",
                        error_statuses()
                    )
                })?;
            Kind::Status(st)
        }
        "drop" => none(value).map(|()| Kind::Drop)?,
        "used-len" => Kind::UsedLen(number(need(name, value, "N")?, "used-len")?),
        "status-len" => Kind::StatusLen(number(need(name, value, "N")?, "status-len")?),
        "bogus-used" => {
            let v = need(
                name,
                value,
                "MODE (out-of-range, duplicate or not-in-flight)",
            )?;
            let mode = BogusUsed::ALL
                .into_iter()
                .find(|m| m.name().eq_ignore_ascii_case(v))
                .ok_or_else(|| {
                    format!("unknown bogus-used mode \"{v}\" (modes: {})", bogus_modes())
                })?;
            Kind::BogusUsed(mode)
        }
        "no-reset-ack" => {
            let d = match value {
                None => DEFAULT_RESET_STALL,
                Some(v) => duration(v)?,
            };
            if d > MAX_RESET_STALL {
                return Err(format!(
                    "no-reset-ack stall is over the {} s limit",
                    MAX_RESET_STALL.as_secs()
                ));
            }
            Kind::NoResetAck(d)
        }
        "die-after" => Kind::DieAfter(number(need(name, value, "N")?, "die-after")?),
        "lose-irq" => none(value).map(|()| Kind::LoseIrq)?,
        "spurious-irq" => none(value).map(|()| Kind::SpuriousIrq)?,
        _ => return Err(format!("unknown fault \"{name}\" (faults: {KINDS})")),
    })
}

fn parse_key(s: &mut Spec, part: &str) -> Result<(), String> {
    let Some((key, value)) = part.split_once('=') else {
        return Err(format!("\"{part}\" is not KEY=VALUE (keys: {KEYS})"));
    };
    let (key, value) = (key.trim(), value.trim());
    if value.is_empty() {
        return Err(format!("\"{key}=\" has no value"));
    }
    match key {
        "queue" => s.queue = Some(number(value, "queue")?),
        "op" => {
            let op = (0..OP_COUNT)
                .find(|&o| op_name(o).eq_ignore_ascii_case(value))
                .ok_or_else(|| format!("unknown op \"{value}\" (ops: {})", ops()))?;
            s.op = Some(op);
        }
        "rate" => s.rate = Some(rate(value)?),
        "count" => {
            let n: u64 = number(value, "count")?;
            if n == 0 {
                return Err("count=0 would never fire".into());
            }
            s.count = Some(n);
        }
        "after" => s.after = number(value, "after")?,
        "seed" => s.seed = Some(number(value, "seed")?),
        _ => return Err(format!("unknown key \"{key}\" (keys: {KEYS})")),
    }
    Ok(())
}

fn number<T: std::str::FromStr>(v: &str, what: &str) -> Result<T, String> {
    v.parse()
        .map_err(|_| format!("{what} \"{v}\" is not a whole number in range"))
}

/// `N(us|ms|s)`; a bare number is refused (ambiguous).
fn duration(v: &str) -> Result<Duration, String> {
    let v = v.trim();
    let (digits, unit): (&str, fn(u64) -> Duration) = if let Some(n) = v.strip_suffix("us") {
        (n, Duration::from_micros)
    } else if let Some(n) = v.strip_suffix("ms") {
        (n, Duration::from_millis)
    } else if let Some(n) = v.strip_suffix('s') {
        (n, Duration::from_secs)
    } else {
        return Err(format!(
            "duration \"{v}\" needs a unit: us, ms or s (e.g. 5ms)"
        ));
    };
    digits
        .parse::<u64>()
        .map(unit)
        .map_err(|_| format!("duration \"{v}\" is not a whole number of us, ms or s"))
}

/// A probability as a 1/2^32 fraction: `0.25` or `25%`.
fn rate(v: &str) -> Result<u64, String> {
    let p = match v.strip_suffix('%') {
        Some(pct) => pct.trim().parse::<f64>().map(|x| x / 100.0),
        None => v.parse::<f64>(),
    };
    match p {
        Ok(p) if (0.0..=1.0).contains(&p) => Ok((p * (1u64 << 32) as f64) as u64),
        _ => Err(format!(
            "rate \"{v}\" is not a probability between 0 and 1 (write 0.25 or 25%)"
        )),
    }
}

impl fmt::Display for Spec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pktaccel_abi::{OP_CRC32C, OP_CSUM, STATUS_DEVICE_ERROR, STATUS_NO_KEY};

    #[test]
    fn every_kind_parses() {
        let d = parse("delay=5ms").unwrap();
        let five = Duration::from_millis(5);
        assert_eq!(
            d.kind,
            Kind::Delay {
                min: five,
                max: five
            }
        );
        let r = parse("delay=100us..2ms").unwrap().kind;
        assert_eq!(
            r,
            Kind::Delay {
                min: Duration::from_micros(100),
                max: Duration::from_millis(2)
            }
        );
        for st in STATUS_OK + 1..STATUS_COUNT {
            let s = parse(&format!("status={}", status_name(st))).unwrap();
            assert_eq!(s.kind, Kind::Status(st));
        }
        assert_eq!(parse("drop").unwrap().kind, Kind::Drop);
        assert_eq!(parse("used-len=3").unwrap().kind, Kind::UsedLen(3));
        assert_eq!(
            parse("status-len=4096").unwrap().kind,
            Kind::StatusLen(4096)
        );
        for m in BogusUsed::ALL {
            let s = parse(&format!("bogus-used={},op=crc32c", m.name())).unwrap();
            assert_eq!((s.kind, s.op), (Kind::BogusUsed(m), Some(OP_CRC32C)));
        }
        assert_eq!(
            parse("bogus-used=DUPLICATE").unwrap().kind,
            Kind::BogusUsed(BogusUsed::Duplicate)
        );
        assert_eq!(
            parse("no-reset-ack").unwrap().kind,
            Kind::NoResetAck(DEFAULT_RESET_STALL)
        );
        assert_eq!(
            parse("no-reset-ack=2s").unwrap().kind,
            Kind::NoResetAck(Duration::from_secs(2))
        );
        assert_eq!(parse("die-after=10").unwrap().kind, Kind::DieAfter(10));
        assert_eq!(parse("lose-irq").unwrap().kind, Kind::LoseIrq);
        assert_eq!(parse("spurious-irq").unwrap().kind, Kind::SpuriousIrq);
    }

    #[test]
    fn scope_and_rate_keys_parse() {
        let s =
            parse(" status=NO-KEY, queue=1, op=csum, rate=25%, count=3, after=2, seed=7 ").unwrap();
        assert_eq!(s.kind, Kind::Status(STATUS_NO_KEY));
        assert_eq!((s.queue, s.op), (Some(1), Some(OP_CSUM)));
        assert_eq!(s.rate, Some(1 << 30));
        assert_eq!((s.count, s.after, s.seed), (Some(3), 2, Some(7)));
        assert_eq!(
            s.text,
            "status=NO-KEY, queue=1, op=csum, rate=25%, count=3, after=2, seed=7"
        );
        assert_eq!(parse("drop,rate=0.5").unwrap().rate, Some(1 << 31));
        assert_eq!(parse("drop,rate=1").unwrap().rate, Some(1 << 32));
        let one = parse("status=device-error,count=1").unwrap();
        assert_eq!(
            (one.kind, one.count),
            (Kind::Status(STATUS_DEVICE_ERROR), Some(1))
        );
    }

    /// Each malformed spec is refused with a message quoting the bad part.
    #[test]
    fn bad_specs_name_the_bad_part() {
        let cases: &[(&str, &str)] = &[
            ("", "empty"),
            ("   ", "empty"),
            ("explode", "unknown fault \"explode\""),
            ("delay", "\"delay\" needs a value"),
            ("delay=", "\"delay\" needs a value"),
            ("delay=5", "needs a unit"),
            ("delay=5min", "duration \"5min\" needs a unit"),
            ("delay=-1ms", "not a whole number"),
            ("delay=9ms..1ms", "runs backwards"),
            ("delay=11s", "over the 10 s limit"),
            ("delay=1ms..20s", "over the 10 s limit"),
            ("status=ok", "unknown status \"ok\""),
            ("status=broken", "unknown status \"broken\""),
            ("status", "\"status\" needs a value"),
            ("drop=3", "takes no value"),
            ("lose-irq=1", "takes no value"),
            ("spurious-irq=yes", "takes no value"),
            ("used-len=-1", "used-len \"-1\""),
            ("used-len=99999999999", "used-len \"99999999999\""),
            ("status-len", "\"status-len\" needs a value"),
            ("status-len=-5", "status-len \"-5\""),
            ("status-len=4294967296", "status-len \"4294967296\""),
            (
                "bogus-used",
                "\"bogus-used\" needs a value: bogus-used=MODE (out-of-range, duplicate or not-in-flight)",
            ),
            (
                "bogus-used=sometimes",
                "unknown bogus-used mode \"sometimes\" (modes: out-of-range, duplicate, not-in-flight)",
            ),
            ("no-reset-ack=61s", "over the 60 s limit"),
            ("no-reset-ack=soon", "needs a unit"),
            ("die-after=x", "die-after \"x\""),
            ("die-after=5,rate=0.5", "die-after takes no rate="),
            ("die-after=5,count=1", "die-after takes no rate="),
            ("drop,queue=70000", "queue \"70000\""),
            ("drop,queue=", "\"queue=\" has no value"),
            ("drop,op=md5", "unknown op \"md5\""),
            ("drop,rate=2", "rate \"2\""),
            ("drop,rate=150%", "rate \"150%\""),
            ("drop,rate=-0.1", "rate \"-0.1\""),
            ("drop,rate=NaN", "rate \"NaN\""),
            ("drop,count=0", "count=0 would never fire"),
            ("drop,colour=red", "unknown key \"colour\""),
            ("drop,,queue=1", "\"\" is not KEY=VALUE"),
            ("drop,queue", "\"queue\" is not KEY=VALUE"),
            ("lose-irq,op=csum", "\"op=\" does not apply to lose-irq"),
            (
                "no-reset-ack,op=nop",
                "\"op=\" does not apply to no-reset-ack",
            ),
        ];
        for (spec, want) in cases {
            let e = parse(spec).expect_err(spec).to_string();
            assert!(e.contains(want), "{spec:?}: {e}");
            assert!(!e.contains('\n'), "{spec:?}: not one line: {e}");
            assert!(e.starts_with("bad fault spec"), "{e}");
        }
    }
}
