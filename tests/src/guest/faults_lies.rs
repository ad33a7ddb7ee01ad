//! The driver under a device that lies about what it did (fault kinds
//! `status-len` and `bogus-used`, datasheet section 11): a status record
//! claiming more output than the request has fails the request as a
//! device error instead of reaching user space; used elements naming no
//! request in flight are skipped, counted and logged at most once per 5 s,
//! and the real completions still arrive; one naming a request the device
//! has not answered (its status record unwritten) completes nothing, so
//! the request's memory stays in flight while the device may still write
//! it. Each failure is counted in
//! debugfs and the guest kernel survives (KASAN/lockdep reports anywhere
//! on the console fail the suite on the host side).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use pktaccel_abi::*;

use super::faults::{
    Cleanup, TIMEOUT_MS, crc_fails_with, crc_ok, host, pktctl_crc, recovered, reload, stat,
};
use super::kmod_helpers::{
    Scratch, counter_rise, debugfs_counters, debugfs_stats, dmesg_count, req, seg_in, seg_out,
};
use crate::ensure;
use crate::harness::{Test, TestResult};

/// Part of the driver's log line for a status length past the output.
const BAD_LEN_LOG: &str = "more output than the request has";
/// Part of the driver's log line for a used element not in flight.
const BOGUS_LOG: &str = "which is not in flight";
const MSG: &[u8; 9] = b"123456789";
const CRC: u64 = 0xe306_9283;

/// The lying-device tests, in run order.
pub fn tests() -> Vec<Test> {
    tests![
        "faults":
        status_length_past_the_output_fails_as_a_device_error,
        bogus_used_ids_are_skipped_counted_and_logged_rate_limited,
        only_a_bogus_used_id_for_a_stalled_request_kills_the_device_cleanly,
        a_used_id_naming_an_unanswered_request_completes_nothing,
    ]
}

/// `after - before` log lines of a once-per-5-s log over `took`: at least
/// one, at most one per started 5 s.
fn rate_limited(what: &str, lines: usize, events: u64, took: Duration) -> TestResult {
    let most = 1 + took.as_secs() as usize / 5;
    println!("faults: {events} {what} in {took:?} logged {lines} line(s)");
    ensure!(
        (1..=most).contains(&lines),
        "{events} {what} in {took:?} logged {lines} kernel log lines; expected 1 to {most} (one per 5 s)"
    );
    Ok(())
}

fn device_alive() -> TestResult {
    let s = debugfs_stats()?;
    ensure!(
        s.get("device").map(String::as_str) == Some("alive"),
        "debugfs says device {:?}, expected alive",
        s.get("device")
    );
    Ok(())
}

/// A COPY of 9 bytes whose status record claims `n` output bytes (the
/// `status-len=N` fault), zero-copy from a slab and in copy mode from
/// ordinary memory: with `n` up to the output's 9 bytes the completion
/// passes; beyond it the driver fails the request with device-error and
/// length 0 (so user space never reads past its buffer), counts it in
/// debugfs `bad_status_len` and logs at most once per 5 s.
fn status_length_past_the_output_fails_as_a_device_error() -> TestResult {
    let _c = Cleanup;
    reload(&[])?;
    let sc = Scratch::new(SLAB_MIN_SIZE, CACHE_WRITE_BACK)?;
    sc.map.write(0, MSG);
    let zsegs = [seg_in(sc.phys(0), 9), seg_out(sc.phys(4096), 9)];
    let mut dst = [0u8; 9];
    let csegs = [
        seg_in(MSG.as_ptr() as u64, 9),
        seg_out(dst.as_mut_ptr() as u64, 9),
    ];
    let (before, logged, t0) = (
        debugfs_counters()?,
        dmesg_count(BAD_LEN_LOG)?,
        Instant::now(),
    );
    host("add status-len=9,op=copy,count=1");
    let c = sc.dev.run(&req(OP_COPY, 0, &zsegs, 1), 0)?;
    ensure!(
        c.status == STATUS_OK && c.len == 9,
        "a status length equal to the output: status {} len {}, expected ok 9",
        status_name(c.status),
        c.len
    );
    let mut lies = 0;
    for (mode, segs, flags) in [("zero-copy", &zsegs, 0), ("copy-mode", &csegs, SUBMIT_COPY)] {
        for n in [10u32, 4096, u32::MAX] {
            host(&format!("add status-len={n},op=copy,count=1"));
            let c = sc.dev.run(&req(OP_COPY, 0, segs, 2), flags)?;
            ensure!(
                c.status == STATUS_DEVICE_ERROR && c.len == 0 && c.result == 0,
                "{mode} COPY of 9 bytes whose status record claims {n}: completion status {} len {} result {}; expected device-error, len 0",
                status_name(c.status),
                c.len,
                c.result
            );
            lies += 1;
        }
    }
    // pktctl's CRC32C has no outputs: any claimed length is past them.
    host("add status-len=1,op=crc32c,count=1");
    crc_fails_with("device-error")?;
    lies += 1;
    let took = t0.elapsed();
    let after = debugfs_counters()?;
    let counted = counter_rise(&before, &after, "bad_status_len");
    ensure!(
        counted == lies,
        "debugfs bad_status_len rose by {counted}; expected {lies}, one per status record past its output"
    );
    rate_limited(
        "status lengths past the output",
        dmesg_count(BAD_LEN_LOG)? - logged,
        lies,
        took,
    )?;
    // The file and the device go on.
    device_alive()?;
    sc.map.write(4096, &[0; 9]);
    let c = sc.dev.run(&req(OP_COPY, 0, &zsegs, 3), 0)?;
    ensure!(
        c.status == STATUS_OK && c.len == 9 && sc.map.read(4096, 9) == MSG,
        "a COPY after the faults: status {} len {}",
        status_name(c.status),
        c.len
    );
    drop(sc);
    recovered()
}

/// Batches of CRC32C requests on a slab, each request's completion followed
/// by a used element naming no request (`bogus-used=MODE`, every mode):
/// every request completes right, debugfs `bogus_used` counts every bogus
/// element, the log says so at most once per 5 s, and the device lives.
fn bogus_used_ids_are_skipped_counted_and_logged_rate_limited() -> TestResult {
    const BATCH: usize = 8;
    const ROUNDS: usize = 4;
    let _c = Cleanup;
    reload(&[])?;
    let sc = Scratch::new(SLAB_MIN_SIZE, CACHE_WRITE_BACK)?;
    sc.map.write(0, MSG);
    let segs = [seg_in(sc.phys(0), 9)];
    let (before, logged, t0) = (debugfs_counters()?, dmesg_count(BOGUS_LOG)?, Instant::now());
    let mut sent = 0u64;
    for mode in ["out-of-range", "duplicate", "not-in-flight"] {
        host(&format!(
            "add bogus-used={mode},op=crc32c,count={}",
            BATCH * ROUNDS
        ));
        for _ in 0..ROUNDS {
            let reqs: Vec<_> = (0..BATCH as u64)
                .map(|i| req(OP_CRC32C, 0, &segs, sent + i))
                .collect();
            crc_batch(&sc, &reqs, mode, &before)?;
            sent += BATCH as u64;
        }
    }
    let took = t0.elapsed();
    let after = debugfs_counters()?;
    let counted = counter_rise(&before, &after, "bogus_used");
    ensure!(
        counted == sent,
        "debugfs bogus_used rose by {counted}; expected {sent}, one per bogus used element"
    );
    rate_limited(
        "bogus used elements",
        dmesg_count(BOGUS_LOG)? - logged,
        sent,
        took,
    )?;
    device_alive()?;
    drop(sc);
    crc_ok()?;
    recovered()
}

/// Submits `reqs` and reaps them: each must complete once, right.
fn crc_batch(
    sc: &Scratch,
    reqs: &[IocRequest],
    mode: &str,
    before: &HashMap<String, u64>,
) -> TestResult {
    let (r, n) = sc.dev.submit(reqs, 0);
    ensure!(
        r.is_ok() && n as usize == reqs.len(),
        "SUBMIT of {} under bogus-used={mode}: {r:?}, {n} queued",
        reqs.len()
    );
    let got = sc.dev.reap_n(reqs.len()).map_err(|e| {
        let seen = debugfs_counters().map(|a| counter_rise(before, &a, "bogus_used"));
        format!("under bogus-used={mode}: {e} (bogus_used so far: {seen:?})")
    })?;
    let mut cookies: Vec<u64> = got.iter().map(|c| c.cookie).collect();
    cookies.sort_unstable();
    let want: Vec<u64> = reqs.iter().map(|r| r.header.cookie).collect();
    ensure!(
        cookies == want,
        "under bogus-used={mode} the completions were for cookies {cookies:?}, expected {want:?}"
    );
    for c in &got {
        ensure!(
            c.status == STATUS_OK && c.result == CRC,
            "under bogus-used={mode}: cookie {} completed {} result {:#x}",
            c.cookie,
            status_name(c.status),
            c.result
        );
    }
    Ok(())
}

/// A device that answers a request with a bogus id instead of its own
/// (`drop` plus `bogus-used=out-of-range`), and loses the interrupt, so the
/// watchdog's poll finds only the bogus element: that is no lost
/// interrupt (`lost_irq_polls` unchanged); the device is declared dead
/// after `request_timeout_ms`, the waiter gets device-error, and a reload
/// serves again.
fn only_a_bogus_used_id_for_a_stalled_request_kills_the_device_cleanly() -> TestResult {
    let _c = Cleanup;
    reload(&[&format!("request_timeout_ms={TIMEOUT_MS}")])?;
    crc_ok()?;
    let (bogus, polls) = (stat("bogus_used")?, stat("lost_irq_polls")?);
    host("add drop,op=crc32c,count=1");
    host("add bogus-used=out-of-range,op=crc32c,count=1");
    host("add lose-irq,count=1");
    let (o, took) = pktctl_crc()?;
    let err = String::from_utf8_lossy(&o.stderr);
    ensure!(
        !o.status.success() && err.contains("device-error"),
        "pktctl with its completion replaced by a bogus id: {} after {took:?}, {}",
        o.status,
        err.trim()
    );
    ensure!(
        took >= Duration::from_millis(TIMEOUT_MS) && took < Duration::from_secs(30),
        "the waiter woke after {took:?} (request_timeout_ms={TIMEOUT_MS})"
    );
    let (bogus, polls) = (stat("bogus_used")? - bogus, stat("lost_irq_polls")? - polls);
    ensure!(
        bogus == 1 && polls == 0,
        "debugfs bogus_used rose by {bogus} and lost_irq_polls by {polls}; expected 1 and 0"
    );
    let s = debugfs_stats()?;
    ensure!(
        s.get("device").map(String::as_str) == Some("dead"),
        "the device is {:?} after a stall with only a bogus used element",
        s.get("device")
    );
    println!(
        "faults: a request answered only by a bogus id failed with device-error after {took:?}"
    );
    recovered()
}

/// A device that publishes the id of a request it never answered (`drop`
/// plus `bogus-used=duplicate`: the head of the dropped request, its
/// status record unwritten). Completing it would hand its memory back
/// while the device may still write it (a bounce buffer freed under DMA),
/// so the driver skips the entry as bogus; the request stays in flight
/// until the watchdog declares the device dead after
/// `request_timeout_ms`, which resets it first.
fn a_used_id_naming_an_unanswered_request_completes_nothing() -> TestResult {
    let _c = Cleanup;
    reload(&[&format!("request_timeout_ms={TIMEOUT_MS}")])?;
    crc_ok()?;
    let bogus = stat("bogus_used")?;
    host("add drop,op=crc32c,count=1");
    host("add bogus-used=duplicate,op=crc32c,count=1");
    let (o, took) = pktctl_crc()?;
    let err = String::from_utf8_lossy(&o.stderr);
    ensure!(
        !o.status.success() && err.contains("device-error"),
        "pktctl whose request the device named without answering it: {} after {took:?}, {}",
        o.status,
        err.trim()
    );
    ensure!(
        took >= Duration::from_millis(TIMEOUT_MS) && took < Duration::from_secs(30),
        "the request failed after {took:?}: completed by the bogus entry instead of staying in flight until the watchdog (request_timeout_ms={TIMEOUT_MS})"
    );
    let bogus = stat("bogus_used")? - bogus;
    ensure!(
        bogus == 1,
        "debugfs bogus_used rose by {bogus}; expected 1 (the entry naming the unanswered request); pktctl failed after {took:?}"
    );
    let s = debugfs_stats()?;
    ensure!(
        s.get("device").map(String::as_str) == Some("dead"),
        "the device is {:?} after it never answered a request",
        s.get("device")
    );
    println!("faults: a request named but never answered failed with device-error after {took:?}");
    recovered()
}
