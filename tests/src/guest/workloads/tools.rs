//! `pktctl` on every op and its errors by name, `pktbench` on generated
//! and pcap traffic and on bad input.

use std::collections::HashMap;

use super::{run, write_tmp};
use crate::ensure;
use crate::harness::TestResult;
use crate::workload::{soft, vectors};

fn ok_stdout(
    prog: &str,
    args: &[&str],
    env: &[(&str, &str)],
    stdin: Option<&[u8]>,
) -> Result<String, String> {
    let o = run(prog, args, env, stdin)?;
    ensure!(
        o.status.success(),
        "{prog} {args:?} failed ({}): {}",
        o.status,
        String::from_utf8_lossy(&o.stderr).trim()
    );
    Ok(String::from_utf8_lossy(&o.stdout).into_owned())
}

/// `prog args` must fail with one line on stderr containing `want`.
fn fails_with(prog: &str, args: &[&str], want: &str) -> TestResult {
    let o = run(prog, args, &[], None)?;
    let err = String::from_utf8_lossy(&o.stderr);
    ensure!(
        !o.status.success(),
        "{prog} {args:?} succeeded; expected an error mentioning '{want}'"
    );
    ensure!(
        err.contains(want),
        "{prog} {args:?}: stderr does not mention '{want}': {}",
        err.trim()
    );
    ensure!(
        !err.contains("panicked") && !err.contains("RUST_BACKTRACE"),
        "{prog} {args:?} panicked: {err}"
    );
    Ok(())
}

fn join<'a>(mode: &[&'a str], args: &[&'a str]) -> Vec<&'a str> {
    [args, mode].concat()
}

pub(super) fn pktctl_every_op() -> TestResult {
    let data: Vec<u8> = (0..3000u32).map(|i| (i * 7 + 3) as u8).collect();
    let f = write_tmp("ctl-data", &data)?;
    for copy in [false, true] {
        let m: &[&str] = if copy { &["--copy"] } else { &[] };
        pktctl_digests(m, &f, &data)?;
        pktctl_gcm_and_keys(m, &f, &data)?;
    }
    let info = ok_stdout("pktctl", &["info"], &[], None)?;
    ensure!(
        info.contains("ABI v1") && info.contains("requests.crc32"),
        "pktctl info lacks the ABI or the driver counters:\n{info}"
    );
    std::fs::remove_file(&f).ok();
    Ok(())
}

/// `pktctl` with the mode flags `m` before `args`: its stdout.
fn pktctl(m: &[&str], args: &[&str], stdin: Option<&[u8]>) -> Result<String, String> {
    ok_stdout("pktctl", &join(m, args), &[], stdin)
}

/// crc32, crc32c (from stdin), csum, rss, nop and copy on `data` (in the
/// file `f`), each against the software reference.
fn pktctl_digests(m: &[&str], f: &str, data: &[u8]) -> TestResult {
    let out = pktctl(m, &["run", "crc32", f], None)?;
    ensure!(
        out.trim() == format!("crc32 {:08x}", soft::crc32(0, data)),
        "crc32: {out}"
    );
    let out = pktctl(m, &["run", "crc32c", "-"], Some(data))?;
    ensure!(
        out.trim() == format!("crc32c {:08x}", soft::crc32c(0, data)),
        "crc32c from stdin: {out}"
    );
    let out = pktctl(m, &["run", "csum", f], None)?;
    ensure!(
        out.trim() == format!("csum {:04x}", soft::inet_csum(0, &[data])),
        "csum: {out}"
    );
    let out = pktctl(m, &["run", "rss", "-"], Some(&data[..12]))?;
    ensure!(
        out.trim() == format!("rss {:08x}", soft::toeplitz(&soft::MS_RSS_KEY, &data[..12])),
        "rss: {out}"
    );
    let out = pktctl(m, &["run", "nop"], None)?;
    ensure!(out.trim() == "nop ok", "nop: {out}");
    let out = pktctl(m, &["run", "copy", f], None)?;
    ensure!(
        out.trim() == hex::encode(data),
        "copy printed something else"
    );
    Ok(())
}

/// AES-256-GCM seal (checked against software) and open of `data`, then
/// key-set and key-clear on a slot.
fn pktctl_gcm_and_keys(m: &[&str], f: &str, data: &[u8]) -> TestResult {
    let key = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";
    let iv = "0102030405060708090a0b0c";
    let sealed_path = format!("{f}.sealed");
    let gcm = ["--key", key, "--iv", iv, "--aad", "beef"];
    pktctl(
        m,
        &[&["run", "aes-gcm-seal", f][..], &gcm, &["-o", &sealed_path]].concat(),
        None,
    )?;
    let sealed = std::fs::read(&sealed_path).map_err(|e| e.to_string())?;
    let k: [u8; 32] = vectors::unhex(key).try_into().map_err(|_| "key")?;
    let v: [u8; 12] = vectors::unhex(iv).try_into().map_err(|_| "iv")?;
    ensure!(
        sealed == soft::gcm_seal(&k, &v, &[0xbe, 0xef], data),
        "seal output differs from software AES-256-GCM"
    );
    let out = pktctl(
        m,
        &[&["run", "aes-gcm-open", &sealed_path][..], &gcm].concat(),
        None,
    )?;
    ensure!(
        out.trim() == hex::encode(data),
        "open did not print the plaintext"
    );
    pktctl(m, &["run", "key-set", "--key", key, "--slot", "2"], None)?;
    pktctl(m, &["run", "key-clear", "--slot", "2"], None)?;
    std::fs::remove_file(&sealed_path).ok();
    Ok(())
}

pub(super) fn pktctl_errors_by_name() -> TestResult {
    let f = write_tmp("ctl-err", b"some bytes of ciphertext and a tag!")?;
    let key = "11".repeat(32);
    let iv = "22".repeat(12);
    fails_with(
        "pktctl",
        &["run", "frobnicate", &f],
        "unknown op 'frobnicate'",
    )?;
    fails_with(
        "pktctl",
        &["run", "aes-gcm-seal", &f, "--iv", &iv],
        "needs a key",
    )?;
    fails_with(
        "pktctl",
        &["run", "aes-gcm-seal", &f, "--key", "abc", "--iv", &iv],
        "--key is not valid hex",
    )?;
    fails_with(
        "pktctl",
        &["run", "crc32", "/nonexistent/file"],
        "cannot read /nonexistent/file",
    )?;
    fails_with("pktctl", &["--bogus-flag"], "--bogus-flag")?;
    // Device statuses by name: a tag that does not verify, a slot out of range.
    fails_with(
        "pktctl",
        &["run", "aes-gcm-open", &f, "--key", &key, "--iv", &iv],
        "auth-failed",
    )?;
    // A slot beyond the device's: the driver refuses it before the device
    // sees it (key slots are per open file, docs/kmod.md).
    fails_with(
        "pktctl",
        &["run", "key-set", "--key", &key, "--slot", "4096"],
        "EINVAL",
    )?;
    std::fs::remove_file(&f).ok();
    Ok(())
}

pub(super) fn pktbench_quick_zero_copy_vs_copy() -> TestResult {
    let json = format!("/tmp/pktaccel-wl-{}-bench.json", std::process::id());
    let out = ok_stdout(
        "pktbench",
        &["--quick", "--packets", "64", "--json", &json],
        &[],
        None,
    )?;
    let text = std::fs::read_to_string(&json).map_err(|e| format!("{json}: {e}"))?;
    std::fs::remove_file(&json).ok();
    let mut seen = HashMap::new();
    for l in text.lines() {
        let v: serde_json::Value =
            serde_json::from_str(l).map_err(|e| format!("bad JSON line {l}: {e}"))?;
        let (op, mode) = (
            v["op"].as_str().unwrap_or("?").to_string(),
            v["mode"].as_str().unwrap_or("?").to_string(),
        );
        let copied = v["bytes_copied"].as_u64().unwrap_or(u64::MAX);
        let zc = v["bytes_zero_copy"].as_u64().unwrap_or(0);
        ensure!(
            v["packets"].as_u64().unwrap_or(0) > 0,
            "{op}/{mode}: no packets processed"
        );
        if mode == "zero-copy" {
            ensure!(
                copied == 0 && zc > 0,
                "{op} zero-copy: {copied} bytes copied, {zc} zero-copy\n{out}"
            );
        } else {
            ensure!(copied > 0, "{op} copy mode: no bytes copied\n{out}");
        }
        seen.insert((op, mode), ());
    }
    ensure!(
        seen.len() == 8,
        "expected 4 pipelines x 2 modes, got {} rows:\n{out}",
        seen.len()
    );
    ensure!(out.contains("bytes copied"), "table header missing:\n{out}");
    Ok(())
}

pub(super) fn pktbench_pcap_traffic() -> TestResult {
    use pcap_file::pcap::{PcapHeader, PcapPacket, PcapWriter};
    let frames = crate::workload::frames::traffic(24, &crate::workload::frames::IMIX, 6, 5);
    let mut bytes = Vec::new();
    {
        let mut w = PcapWriter::with_header(&mut bytes, PcapHeader::default())
            .map_err(|e| e.to_string())?;
        for f in frames.iter().map(Vec::as_slice).chain([&[0u8; 60][..]]) {
            w.write_packet(&PcapPacket::new(
                std::time::Duration::ZERO,
                f.len() as u32,
                f,
            ))
            .map_err(|e| e.to_string())?;
        }
    }
    let cap = write_tmp("traffic.pcap", &bytes)?;
    let json = format!("{cap}.json");
    let out = ok_stdout(
        "pktbench",
        &[
            "--pcap",
            &cap,
            "--ops",
            "csum,rss",
            "--packets",
            "48",
            "--json",
            &json,
        ],
        &[],
        None,
    )?;
    ensure!(
        out.contains("24 frames from the capture (1 records skipped)"),
        "capture summary missing:\n{out}"
    );
    let text = std::fs::read_to_string(&json).map_err(|e| format!("{json}: {e}"))?;
    let rows: Vec<serde_json::Value> = text
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    ensure!(
        rows.len() == 4,
        "expected csum and rss in both modes, got {} rows:\n{out}",
        rows.len()
    );
    for r in &rows {
        ensure!(
            r["traffic"] == "pcap" && r["packets"].as_u64().unwrap_or(0) >= 48,
            "bad row {r}"
        );
    }
    std::fs::remove_file(&cap).ok();
    std::fs::remove_file(&json).ok();
    Ok(())
}

pub(super) fn pktbench_bad_input() -> TestResult {
    let garbage = write_tmp("garbage.pcap", b"definitely not a pcap file")?;
    fails_with(
        "pktbench",
        &["--pcap", &garbage],
        "is not a readable pcap file",
    )?;
    fails_with(
        "pktbench",
        &["--pcap", "/nonexistent.pcap"],
        "cannot open pcap file",
    )?;
    fails_with("pktbench", &["--ops", "frob"], "unknown pipeline 'frob'")?;
    fails_with(
        "pktbench",
        &["--queues", "999", "--quick"],
        "request queue(s)",
    )?;
    fails_with("pktbench", &["--batches", "0"], "--batches")?;
    std::fs::remove_file(&garbage).ok();
    Ok(())
}
