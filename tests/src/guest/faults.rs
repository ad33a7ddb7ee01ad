//! The driver and the tools under injected device faults. Each test asks
//! the host to change the device's faults by printing `PKTACCEL-FAULT CMD`
//! on the console (`cargo xtask` forwards CMD to the device's fault
//! control socket), runs `pktctl`/`pktbench`, then clears the faults and
//! reloads the module: rmmod must work after every fault, nothing stays
//! pinned, and the next request succeeds. KASAN/lockdep reports anywhere
//! in the console fail the suite on the host side.

use std::io::Write;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use pktaccel_abi::{STATUS_COUNT, STATUS_OK, status_name};

use crate::ensure;
use crate::harness::{Test, TestResult};

const KO: &str = "/lib/modules/pktaccel.ko";
const DEV: &str = "/dev/pktaccel";
const DEBUGFS_STATS: &str = "/sys/kernel/debug/pktaccel/stats";
/// The driver's watchdog for these tests (module parameter), short so that
/// a lost completion is noticed quickly.
pub(super) const TIMEOUT_MS: u64 = 1500;

/// The fault tests, in run order.
pub fn tests() -> Vec<Test> {
    let mut v = tests![
        "faults":
        error_statuses_reach_pktctl_and_pktbench_by_name,
        delayed_completions_still_complete,
        dropped_completion_times_out_wakes_waiters_and_traffic_resumes,
        lost_interrupt_times_out_or_recovers,
        spurious_interrupts_are_harmless,
        wrong_used_length_is_survived,
        reset_not_acknowledged_holds_rmmod,
    ];
    // It ends the device: `cargo xtask test-e2e` gives it a boot of its own
    // and sets this variable there.
    if std::env::var_os("PKTACCEL_DEVICE_DEATH_TEST").is_some() {
        v.extend(tests!["faults": device_dies_after_n_requests]);
    }
    v
}

/// Asks the host to send `cmd` to the device's fault control socket.
pub(super) fn host(cmd: &str) {
    println!("{} {cmd}", pktaccel_abi::console::FAULT);
    let _ = std::io::stdout().flush();
    // The host reads the console as it comes; give it time to act.
    std::thread::sleep(Duration::from_millis(400));
}

/// Clears the faults and reloads the module when dropped, so that a failed
/// test does not leave a faulty device to the tests after it.
pub(super) struct Cleanup;

impl Drop for Cleanup {
    fn drop(&mut self) {
        host("clear");
        if !std::path::Path::new(DEV).exists() || loaded_with_timeout() {
            let _ = reload(&[]);
        }
    }
}

fn loaded_with_timeout() -> bool {
    std::fs::read_to_string("/sys/module/pktaccel/parameters/request_timeout_ms")
        .is_ok_and(|v| v.trim() != "5000")
}

fn sh(prog: &str, args: &[&str]) -> TestResult {
    let o = Command::new(prog)
        .args(args)
        .output()
        .map_err(|e| format!("cannot run {prog}: {e}"))?;
    ensure!(
        o.status.success(),
        "{prog} {args:?}: {}",
        String::from_utf8_lossy(&o.stderr).trim()
    );
    Ok(())
}

/// rmmod (which resets the device), then insmod with `params`.
pub(super) fn reload(params: &[&str]) -> TestResult {
    if std::path::Path::new("/sys/module/pktaccel").exists() {
        sh("rmmod", &["pktaccel"])?;
    }
    sh("insmod", &[&[KO], params].concat())?;
    ensure!(
        std::path::Path::new(DEV).exists(),
        "{DEV} missing after insmod"
    );
    Ok(())
}

fn tool(prog: &str, args: &[&str]) -> Result<Output, String> {
    Command::new(prog)
        .args(args)
        .env_remove("LD_PRELOAD")
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run {prog}: {e}"))
}

/// `pktctl run crc32c` on "123456789", timed.
pub(super) fn pktctl_crc() -> Result<(Output, Duration), String> {
    let f = input()?;
    let t = Instant::now();
    let o = tool("pktctl", &["run", "crc32c", &f])?;
    Ok((o, t.elapsed()))
}

fn input() -> Result<String, String> {
    let p = format!("/tmp/pktaccel-faults-{}", std::process::id());
    std::fs::write(&p, b"123456789").map_err(|e| format!("{p}: {e}"))?;
    Ok(p)
}

/// `pktctl run crc32c` on "123456789": the right answer, or why not.
pub(super) fn crc_ok() -> TestResult {
    let (o, _) = pktctl_crc()?;
    let out = String::from_utf8_lossy(&o.stdout);
    ensure!(
        o.status.success() && out.contains("e3069283"),
        "pktctl run crc32c: {} {}{}",
        o.status,
        out.trim(),
        String::from_utf8_lossy(&o.stderr).trim()
    );
    Ok(())
}

/// `pktctl run crc32c` must fail with one line naming `want`.
pub(super) fn crc_fails_with(want: &str) -> Result<Duration, String> {
    let (o, took) = pktctl_crc()?;
    let err = String::from_utf8_lossy(&o.stderr);
    ensure!(
        !o.status.success() && err.contains(want) && err.trim().lines().count() == 1,
        "pktctl run crc32c: {} after {took:?}, stderr {:?}; expected one line naming {want}",
        o.status,
        err.trim()
    );
    Ok(took)
}

/// Waits up to 5 s for the driver to hold no slab and no pinned byte.
fn nothing_pinned() -> TestResult {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let text =
            std::fs::read_to_string(DEBUGFS_STATS).map_err(|e| format!("{DEBUGFS_STATS}: {e}"))?;
        let get = |k: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(k)?.trim().parse::<u64>().ok())
        };
        if get("slabs ") == Some(0) && get("pinned_bytes ") == Some(0) {
            return Ok(());
        }
        ensure!(
            Instant::now() < deadline,
            "debugfs still shows pinned memory 5 s later:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The end of every test: faults off, rmmod/insmod, no leak, traffic.
pub(super) fn recovered() -> TestResult {
    host("clear");
    reload(&[])?;
    nothing_pinned()?;
    crc_ok()
}

fn error_statuses_reach_pktctl_and_pktbench_by_name() -> TestResult {
    let _c = Cleanup;
    crc_ok()?;
    for s in STATUS_OK + 1..STATUS_COUNT {
        let name = status_name(s);
        host(&format!("add status={name},count=1"));
        crc_fails_with(name)?;
    }
    crc_ok()?;
    host("add status=device-error,op=csum,count=1");
    let o = tool("pktbench", &["--quick", "--packets", "16"])?;
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    ensure!(
        !o.status.success() && all.contains("device-error"),
        "pktbench under status=device-error,op=csum: {}; output:\n{all}",
        o.status
    );
    recovered()
}

fn delayed_completions_still_complete() -> TestResult {
    let _c = Cleanup;
    host("add delay=300ms,count=1");
    let t = Instant::now();
    crc_ok()?;
    ensure!(
        t.elapsed() >= Duration::from_millis(300),
        "a 300 ms completion delay took {:?}",
        t.elapsed()
    );
    recovered()
}

fn dropped_completion_times_out_wakes_waiters_and_traffic_resumes() -> TestResult {
    let _c = Cleanup;
    reload(&[&format!("request_timeout_ms={TIMEOUT_MS}")])?;
    host("add drop");
    let took = crc_fails_with("device-error")?;
    ensure!(
        took >= Duration::from_millis(TIMEOUT_MS) && took < Duration::from_secs(30),
        "the waiter woke after {took:?} (request_timeout_ms={TIMEOUT_MS})"
    );
    println!("faults: a dropped completion failed with device-error after {took:?}");
    // The driver declared the device dead: lifting the fault is not enough,
    // a reset (rmmod/insmod) is.
    recovered()
}

/// One counter of the debugfs stats file.
pub(super) fn stat(key: &str) -> Result<u64, String> {
    let text =
        std::fs::read_to_string(DEBUGFS_STATS).map_err(|e| format!("{DEBUGFS_STATS}: {e}"))?;
    text.lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(' ')?.trim().parse().ok())
        .ok_or_else(|| format!("{DEBUGFS_STATS} has no counter {key:?}:\n{text}"))
}

/// The driver's watchdog polls the used ring before it declares the device
/// dead: a completion whose interrupt was lost is delivered after about
/// `request_timeout_ms`, counted in `lost_irq_polls`, and the device lives.
fn lost_interrupt_times_out_or_recovers() -> TestResult {
    let _c = Cleanup;
    reload(&[&format!("request_timeout_ms={TIMEOUT_MS}")])?;
    let before = stat("lost_irq_polls")?;
    host("add lose-irq,count=1");
    let (o, took) = pktctl_crc()?;
    let out = String::from_utf8_lossy(&o.stdout);
    ensure!(
        o.status.success() && out.contains("e3069283"),
        "after a lost interrupt pktctl should succeed once the watchdog polls the used ring: {} after {took:?}, {} {}",
        o.status,
        out.trim(),
        String::from_utf8_lossy(&o.stderr).trim()
    );
    ensure!(
        took >= Duration::from_millis(TIMEOUT_MS) && took < Duration::from_secs(30),
        "pktctl took {took:?}: the lost interrupt should be noticed after request_timeout_ms={TIMEOUT_MS}"
    );
    let after = stat("lost_irq_polls")?;
    ensure!(
        after == before + 1,
        "debugfs lost_irq_polls went from {before} to {after}; expected one recovery"
    );
    let text =
        std::fs::read_to_string(DEBUGFS_STATS).map_err(|e| format!("{DEBUGFS_STATS}: {e}"))?;
    ensure!(
        text.lines().any(|l| l == "device alive"),
        "the device was declared dead after a recovered lost interrupt:\n{text}"
    );
    println!("faults: a lost interrupt was recovered by polling after {took:?}");
    // Still serving, with interrupts, without a reload.
    crc_ok()?;
    recovered()
}

/// Interrupts with nothing new change nothing, and each is counted.
fn spurious_interrupts_are_harmless() -> TestResult {
    let _c = Cleanup;
    let before = stat("spurious_irqs")?;
    // Bounded: a polling worker would otherwise interrupt without end.
    host("add spurious-irq,count=200");
    for _ in 0..10 {
        crc_ok()?;
    }
    // The device signals the spurious interrupt and, microseconds later,
    // the completion on the same eventfd: QEMU mostly delivers the two as
    // one MSI. A completion delay holds the second back, so the driver
    // sees an interrupt with nothing new.
    host("add delay=100ms,count=5");
    for _ in 0..5 {
        crc_ok()?;
    }
    let after = stat("spurious_irqs")?;
    println!("faults: spurious_irqs went from {before} to {after} over 15 requests");
    ensure!(
        after > before,
        "debugfs spurious_irqs stayed at {before} under spurious-irq,count=200"
    );
    recovered()
}

/// The driver does not use the used ring's length (the status record says
/// what was written): a wrong one changes nothing, zero-copy or bounced.
fn wrong_used_length_is_survived() -> TestResult {
    let _c = Cleanup;
    let f = input()?;
    for len in ["0", "1", "4096", "4294967295"] {
        for mode in [&[][..], &["--copy"][..]] {
            host(&format!("add used-len={len},count=1"));
            let o = tool("pktctl", &[&["run", "copy", &f][..], mode].concat())?;
            let out = String::from_utf8_lossy(&o.stdout);
            ensure!(
                o.status.success() && out.trim() == "313233343536373839",
                "used length {len} on a copy {mode:?}: pktctl {} {} {}",
                o.status,
                out.trim(),
                String::from_utf8_lossy(&o.stderr).trim()
            );
            crc_ok()?;
        }
    }
    recovered()
}

fn reset_not_acknowledged_holds_rmmod() -> TestResult {
    let _c = Cleanup;
    crc_ok()?;
    host("add no-reset-ack=2s,count=1");
    let t = Instant::now();
    sh("rmmod", &["pktaccel"])?;
    let took = t.elapsed();
    println!("faults: rmmod with the ring stop held for 2 s took {took:?}");
    ensure!(
        took >= Duration::from_millis(1500),
        "rmmod took {took:?}: the held ring stop was not seen"
    );
    recovered()
}

/// `die-after`: the device process exits after N requests. The waiter of
/// the next one wakes with device-error once the watchdog fires, later
/// submits fail, nothing stays pinned and rmmod works.
fn device_dies_after_n_requests() -> TestResult {
    reload(&[&format!("request_timeout_ms={TIMEOUT_MS}")])?;
    crc_ok()?;
    host("add die-after=20");
    let mut done = 0;
    let failed = loop {
        ensure!(done < 100, "the device still answers after {done} requests");
        let (o, _) = pktctl_crc()?;
        if !o.status.success() {
            break String::from_utf8_lossy(&o.stderr).trim().to_string();
        }
        done += 1;
    };
    println!("faults: {done} requests completed, then pktctl: {failed}");
    ensure!(
        (1..=20).contains(&done) && failed.contains("device-error"),
        "after {done} pktctl runs pktctl said {failed:?}; expected device-error within 20 requests"
    );
    let (o, _) = pktctl_crc()?;
    ensure!(
        !o.status.success() && String::from_utf8_lossy(&o.stderr).trim().lines().count() == 1,
        "pktctl on a dead device: {} {}",
        o.status,
        String::from_utf8_lossy(&o.stderr).trim()
    );
    nothing_pinned()?;
    sh("rmmod", &["pktaccel"])
}
