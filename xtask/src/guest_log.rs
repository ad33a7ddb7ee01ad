//! Finding kernel trouble in a guest console log: an oops, panic, BUG,
//! WARN, KASAN, lockdep, soft-lockup, hung-task or kmemleak report anywhere
//! fails the run, with the report shown.

use pktaccel_abi::console;

/// Markers that start a kernel report, with the kind we name it by.
const MARKERS: &[(&str, &str)] = &[
    ("BUG: soft lockup", "soft lockup"),
    ("BUG: workqueue lockup", "workqueue lockup"),
    ("blocked for more than", "hung task"),
    ("new suspected memory leaks", "kmemleak report"),
    ("unreferenced object 0x", "kmemleak report"),
    ("BUG: KASAN:", "KASAN report"),
    ("BUG:", "kernel BUG"),
    ("Oops:", "kernel oops"),
    ("Oops -", "kernel oops"),
    ("general protection fault", "general protection fault"),
    ("Kernel panic", "kernel panic"),
    ("WARNING:", "kernel WARN"),
    ("UBSAN:", "UBSAN report"),
    ("rust_panic", "Rust panic in the kernel"),
    ("possible circular locking dependency", "lockdep report"),
    ("inconsistent lock state", "lockdep report"),
    (
        "sleeping function called from invalid context",
        "sleep in atomic context",
    ),
    ("kernel BUG at", "kernel BUG"),
];

/// One report found in the log.
#[derive(Debug, PartialEq, Eq)]
pub struct Report {
    /// What kind of report.
    pub kind: &'static str,
    /// The lines of the report (up to 40).
    pub excerpt: Vec<String>,
}

/// Strips a `[   12.345678] ` printk timestamp.
fn body(line: &str) -> &str {
    let t = line.trim_start();
    if t.starts_with('[')
        && let Some(end) = t.find("] ")
    {
        return &t[end + 2..];
    }
    t
}

/// Every kernel report in `lines`, each with the lines that follow it.
/// Lines our own tools print (PKTTEST…, PKTACCEL…) are never reports.
pub fn scan(lines: &[String]) -> Vec<Report> {
    let mut reports = Vec::new();
    let mut seen = std::collections::HashSet::new();
    let mut i = 0;
    while i < lines.len() {
        let b = body(&lines[i]);
        let hit = if console::is_marker_line(b) {
            None
        } else {
            MARKERS
                .iter()
                .find(|(m, _)| b.starts_with(m) || (m.len() > 12 && b.contains(m)))
        };
        if let Some((_, kind)) = hit {
            let end = (i + 40).min(lines.len());
            let mut excerpt = Vec::new();
            for l in &lines[i..end] {
                if console::is_marker_line(l) {
                    break;
                }
                excerpt.push(l.clone());
            }
            // The console and the dmesg dump both carry each report: keep one.
            if seen.insert(b.to_string()) {
                reports.push(Report { kind, excerpt });
            }
        }
        i += 1;
    }
    reports
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> Vec<String> {
        s.lines().map(String::from).collect()
    }

    #[test]
    fn finds_kasan_warn_and_oops_but_not_our_lines() {
        let log = v("[    1.0] pktaccel: probe ok\n\
             [    2.0] BUG: KASAN: slab-use-after-free in foo+0x1/0x2\n\
             [    2.1] Read of size 8\n\
             [    2.2] ---[ end trace 0000000000000000 ]---\n\
             PKTTEST kmod::x FAIL 3 WARNING: not a kernel line\n\
             [    3.0] WARNING: CPU: 0 PID: 1 at drivers/x.c:1 f+0x0\n\
             [    4.0] Oops: general protection fault, probably for non-canonical address");
        let r = scan(&log);
        let kinds: Vec<&str> = r.iter().map(|r| r.kind).collect();
        assert_eq!(kinds, ["KASAN report", "kernel WARN", "kernel oops"]);
        assert!(r[0].excerpt[1].contains("Read of size 8"));
    }

    #[test]
    fn finds_lockup_hung_task_and_kmemleak_reports() {
        let log = v(
            "[   30.0] watchdog: BUG: soft lockup - CPU#0 stuck for 22s! [sh:1]\n\
             [   40.0] INFO: task pktaccel-guest:88 blocked for more than 30 seconds.\n\
             [   50.0] kmemleak: 2 new suspected memory leaks (see /sys/kernel/debug/kmemleak)\n\
             unreferenced object 0xffff888003a1b000 (size 64):\n\
               comm \"insmod\", pid 70, jiffies 4294670000",
        );
        let kinds: Vec<&str> = scan(&log).iter().map(|r| r.kind).collect();
        assert_eq!(
            kinds,
            [
                "soft lockup",
                "hung task",
                "kmemleak report",
                "kmemleak report"
            ]
        );
    }

    #[test]
    fn clean_log_has_no_reports() {
        assert!(
            scan(&v(
                "[ 0.1] Linux version 7.3.4\nPKTTEST rig::x ok 1\nhello BUG fixed"
            ))
            .is_empty()
        );
    }
}
