//! `cargo xtask test-e2e`: boots the guest (KASAN kernel by default), runs
//! the guest suite from `tests/`, prints one line per test and the closing
//! `N passed, N failed`. Kernel trouble anywhere in the log is a failure.

use std::time::Duration;

use anyhow::Result;

use pktaccel_abi::console;

use crate::guest_log;
use crate::initramfs::{DEATH_TEST, KILL_TEST, Mode};
use crate::kernel::Variant;
use crate::vm::{ConsoleSink, Outcome, Prepared, VmArgs, boot};

/// Counts of one e2e run.
#[derive(Debug, Default)]
pub struct Summary {
    /// Tests that passed.
    pub passed: usize,
    /// Tests that failed (including kernel reports and a missing suite).
    pub failed: usize,
}

struct SuiteSink {
    lines: Vec<String>,
    summary: Summary,
    ran: usize,
    /// The guest's answer when the filter selected no test: the filter and
    /// the names of the tests that exist.
    no_match: Option<(String, String)>,
}

impl ConsoleSink for SuiteSink {
    fn line(&mut self, line: &str) {
        self.lines.push(line.to_string());
        if let Some(rest) = console::after(line, console::TEST_NO_MATCH) {
            let (filter, names) = rest.split_once(' ').unwrap_or((rest, ""));
            self.no_match = Some((filter.to_string(), names.to_string()));
            return;
        }
        let Some(rest) = console::after(line, console::TEST) else {
            if let Some(w) = console::after(line, console::WARN) {
                eprintln!("guest: {w}");
            }
            return;
        };
        let mut it = rest.splitn(4, ' ');
        let (name, verdict, ms, reason) = (
            it.next().unwrap_or("?"),
            it.next().unwrap_or("?"),
            it.next().unwrap_or("0"),
            it.next().unwrap_or(""),
        );
        self.ran += 1;
        if verdict == "ok" {
            self.summary.passed += 1;
            println!("test {name} ... ok ({ms} ms)");
        } else {
            self.summary.failed += 1;
            println!("test {name} ... FAILED ({ms} ms)");
            for part in reason.split(" | ") {
                println!("    {part}");
            }
        }
    }
}

/// Printed by the guest's init after its end-of-suite kmemleak scan.
const KMEMLEAK_SCANNED: &str = console::KMEMLEAK_SCANNED;

/// On the debug kernel the suite must end with a kmemleak scan (its
/// reports are then found by the log scan); say why if it did not run.
fn kmemleak_missing(
    p: &Prepared,
    outcome: &Result<crate::vm::Outcome>,
    lines: &[String],
) -> Option<String> {
    let finished = matches!(outcome, Ok(o) if o.guest_status.is_some());
    (p.variant() == Variant::Debug
        && finished
        && !lines.iter().any(|l| l.trim() == KMEMLEAK_SCANNED))
    .then(|| {
        "the debug kernel ran no kmemleak scan at the end of the suite: \
             /sys/kernel/debug/kmemleak is missing (is CONFIG_DEBUG_KMEMLEAK=y in \
             images/kernel-debug.config and the kernel rebuilt?)"
            .to_string()
    })
}

/// Runs the suite once and prints its report; the summary decides the exit.
pub fn run(
    p: &Prepared,
    args: &VmArgs,
    filter: Option<String>,
    timeout: Duration,
) -> Result<Summary> {
    let mut sink = SuiteSink {
        lines: Vec::new(),
        summary: Summary::default(),
        ran: 0,
        no_match: None,
    };
    let outcome = boot(
        p,
        args,
        &Mode::Suite(filter.clone()),
        Some(timeout),
        &mut sink,
    );
    // The killed-device and device-death tests end the device, so each gets
    // a boot of its own; a filter may select only them.
    let selects = |test: &str| filter.as_deref().is_none_or(|f| test.contains(f));
    let (kill, death_selected) = (selects(KILL_TEST), selects(DEATH_TEST));
    let kill_outcome = own_boot(
        p,
        args,
        (&Mode::DeviceKill, KILL_TEST),
        kill && outcome.is_ok(),
        timeout,
        &mut sink,
    );
    let death = own_boot(
        p,
        args,
        (&Mode::FaultDeath, DEATH_TEST),
        death_selected && outcome.is_ok(),
        timeout,
        &mut sink,
    );
    let mut summary = std::mem::take(&mut sink.summary);
    if let Some(Err(e)) = &death {
        summary.failed += 1;
        println!("test {DEATH_TEST} ... FAILED");
        for l in format!("{e:#}").lines() {
            println!("    {l}");
        }
    }
    let log_path = match &outcome {
        Ok(o) => Some(o.console_log.clone()),
        Err(_) => None,
    };
    let reports = guest_log::scan(&sink.lines);
    if let Some(why) = kmemleak_missing(p, &outcome, &sink.lines) {
        summary.failed += 1;
        println!("test kernel::kmemleak_scan ... FAILED\n    {why}");
    }
    for r in &reports {
        summary.failed += 1;
        println!("test kernel::{} ... FAILED", r.kind.replace(' ', "_"));
        for l in &r.excerpt {
            println!("    | {l}");
        }
    }
    match &kill_outcome {
        Some(Err(e)) => {
            summary.failed += 1;
            println!("test {KILL_TEST} ... FAILED");
            for l in format!("{e:#}").lines() {
                println!("    {l}");
            }
        }
        Some(Ok(o)) => println!(
            "console log (killed-device boot): {}",
            o.console_log.display()
        ),
        None => {}
    }
    judge_main_boot(&outcome, &sink, kill || death_selected, &mut summary);
    if let Some(p) = log_path {
        println!("console log: {}", p.display());
    } else {
        println!("console log: target/xtask/logs/latest/console.log");
    }
    println!("{} passed, {} failed", summary.passed, summary.failed);
    Ok(summary)
}

/// Fails the main boot when it did not run the suite as asked: the filter
/// matched nothing (and no own-boot test either), nothing ran, the exit
/// status disagrees with the results, or the boot itself failed.
fn judge_main_boot(
    outcome: &Result<Outcome>,
    sink: &SuiteSink,
    own_boot_selected: bool,
    summary: &mut Summary,
) {
    match outcome {
        Ok(o) => {
            if let Some((f, names)) = &sink.no_match
                && !own_boot_selected
            {
                summary.failed += 1;
                println!(
                    "test rig::filter ... FAILED\n    no guest test name contains '{f}'; the tests are:"
                );
                for n in names.split(',') {
                    println!("      {n}");
                }
            } else if sink.ran == 0 {
                summary.failed += 1;
                println!(
                    "test rig::suite_ran ... FAILED\n    the guest suite printed no results (status {:?})",
                    o.guest_status
                );
            } else if o.guest_status != Some(0) && summary.failed == 0 {
                summary.failed += 1;
                println!(
                    "test rig::suite_exit ... FAILED\n    the suite exited with {:?} but reported no failing test",
                    o.guest_status
                );
            }
        }
        Err(e) => {
            summary.failed += 1;
            println!("test rig::boot ... FAILED");
            for l in format!("{e:#}").lines() {
                println!("    {l}");
            }
        }
    }
}

/// Boots once more for a test that ends the device (`mode` runs only
/// `test`), when `wanted` (selected by the filter, main boot went well); a
/// boot that reports no result counts as a failure.
fn own_boot(
    p: &Prepared,
    args: &VmArgs,
    (mode, test): (&Mode, &str),
    wanted: bool,
    timeout: Duration,
    sink: &mut SuiteSink,
) -> Option<Result<Outcome>> {
    if !wanted {
        return None;
    }
    let before = sink.ran;
    let o = boot(p, args, mode, Some(timeout), sink);
    if o.is_ok() && sink.ran == before {
        sink.summary.failed += 1;
        println!("test {test} ... FAILED\n    its own boot reported no result");
    }
    Some(o)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_no_match_line_is_kept_apart_from_results() {
        let mut sink = SuiteSink {
            lines: Vec::new(),
            summary: Summary::default(),
            ran: 0,
            no_match: None,
        };
        sink.line("PKTTEST-NOMATCH kmod::nope kmod::open,rig::boot");
        sink.line("PKTTEST kmod::open ok 3");
        assert_eq!(
            sink.no_match,
            Some(("kmod::nope".to_string(), "kmod::open,rig::boot".to_string()))
        );
        assert_eq!((sink.ran, sink.summary.passed), (1, 1));
    }
}
