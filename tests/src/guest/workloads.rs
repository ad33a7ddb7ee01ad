//! Packet workloads and unmodified programs in the guest (issue 6), short
//! enough for TCG and the KASAN kernel:
//!
//! - known answers from the standards through the device, zero-copy and
//!   copy mode: RFC 1071, the CRC-32C and CRC-32 check values, Microsoft's
//!   Toeplitz RSS vectors, the GCM specification's AES-256 cases;
//! - `pktctl` on every op and its errors by name; `pktbench --quick`
//!   (zero bytes copied in zero-copy mode, non-zero in copy mode);
//! - sqlite3, python3 and pigz, Debian's own binaries, under
//!   `LD_PRELOAD=libpktslab.so` on uncached slabs: output identical to a
//!   plain run, pinned-allocation statistics printed;
//! - pigz and python3 with `libpktcrc.so` as well: zlib's crc32() runs on
//!   the device over the programs' own buffers, the driver's request and
//!   zero-copy byte counters rise, the output does not change.

use std::collections::HashMap;
use std::process::{Command, Output, Stdio};

use pktaccel_abi::*;

use crate::ensure;
use crate::harness::{Test, TestResult};
use crate::workload::dev::{Device, Job};
use crate::workload::{soft, vectors};

pub(super) fn tests() -> Vec<Test> {
    tests![
        "workloads":
        kat_rfc1071_checksum,
        kat_crc_check_values,
        kat_toeplitz_microsoft,
        kat_gcm_specification,
        pktctl_every_op,
        pktctl_errors_by_name,
        pktbench_quick_zero_copy_vs_copy,
        pktbench_pcap_traffic,
        pktbench_bad_input,
        sqlite3_on_pinned_slabs,
        python3_on_pinned_slabs,
        pigz_on_pinned_slabs,
        pigz_crc32_on_device_zero_copy,
        python3_zlib_crc32_on_device,
    ]
}

const PRELOAD: &str = "/usr/lib/libpktslab.so";
const PRELOAD_CRC: &str = "/usr/lib/libpktslab.so /usr/lib/libpktcrc.so";
const DEBUGFS_STATS: &str = "/sys/kernel/debug/pktaccel/stats";

fn open() -> Result<Device, String> {
    Device::open(CACHE_UNCACHED).map_err(|e| format!("{e:#}"))
}

/// Runs `job` (whose buffers are `bufs`, pinned or not) and returns the
/// completion; any failure becomes the test's message.
fn call(dev: &Device, job: &Job, copy: bool) -> Result<IocCompletion, String> {
    // SAFETY: every caller keeps the job's buffers alive and untouched for
    // the duration of the call.
    unsafe { dev.call(job, copy) }.map_err(|e| format!("{e:#}"))
}

/// `data` in a pinned buffer (zero-copy) or an ordinary one (copy mode),
/// handed to `f`.
fn with_buf<R>(
    dev: &Device,
    copy: bool,
    data: &[u8],
    f: impl FnOnce(&mut [u8]) -> R,
) -> Result<R, String> {
    if copy {
        let mut v = data.to_vec();
        Ok(f(&mut v))
    } else {
        let mut b = dev.pinned(data.len().max(1)).map_err(|e| e.to_string())?;
        b[..data.len()].copy_from_slice(data);
        Ok(f(&mut b[..data.len()]))
    }
}

fn modes() -> [(bool, &'static str); 2] {
    [(false, "zero-copy"), (true, "copy")]
}

fn kat_rfc1071_checksum() -> TestResult {
    let dev = open()?;
    for (copy, mode) in modes() {
        let r = with_buf(&dev, copy, &vectors::RFC1071_DATA, |b| {
            call(&dev, &Job::new(OP_CSUM, 0).input(b), copy)
        })??;
        ensure!(
            r.result as u16 == vectors::RFC1071_CSUM,
            "{mode}: RFC 1071 example gave {:#06x}, expected {:#06x}",
            r.result,
            vectors::RFC1071_CSUM
        );
        // Scattered over two segments, odd boundary included.
        let r = with_buf(&dev, copy, &vectors::RFC1071_DATA, |b| {
            let (x, y) = b.split_at(3);
            call(&dev, &Job::new(OP_CSUM, 0).input(x).input(y), copy)
        })??;
        ensure!(
            r.result as u16 == vectors::RFC1071_CSUM,
            "{mode}: split RFC 1071 example gave {:#06x}",
            r.result
        );
    }
    Ok(())
}

fn kat_crc_check_values() -> TestResult {
    let dev = open()?;
    for (copy, mode) in modes() {
        for (op, want) in [
            (OP_CRC32C, vectors::CRC32C_CHECK),
            (OP_CRC32, vectors::CRC32_CHECK),
        ] {
            let r = with_buf(&dev, copy, vectors::CHECK_INPUT, |b| {
                call(&dev, &Job::new(op, 0).input(b), copy)
            })??;
            ensure!(
                r.result as u32 == want,
                "{mode} {}: check value {:#010x}, expected {want:#010x}",
                op_name(op),
                r.result
            );
            // Chained through the seed, as zlib callers do.
            let first = with_buf(&dev, copy, &vectors::CHECK_INPUT[..4], |b| {
                call(&dev, &Job::new(op, 0).input(b), copy)
            })??;
            let r = with_buf(&dev, copy, &vectors::CHECK_INPUT[4..], |b| {
                call(&dev, &Job::new(op, first.result as u32).input(b), copy)
            })??;
            ensure!(
                r.result as u32 == want,
                "{mode} {}: chained check value {:#010x}",
                op_name(op),
                r.result
            );
        }
    }
    Ok(())
}

fn kat_toeplitz_microsoft() -> TestResult {
    let dev = open()?;
    let mut cases: Vec<(Vec<u8>, u32, u32)> = vectors::RSS_V4
        .iter()
        .map(|(s, d, sp, dp, h, hp)| {
            (
                [&s[..], &d[..], &sp.to_be_bytes(), &dp.to_be_bytes()].concat(),
                *h,
                *hp,
            )
        })
        .collect();
    let (s, d, sp, dp, h, hp) = vectors::RSS_V6;
    cases.push((
        [&s[..], &d[..], &sp.to_be_bytes(), &dp.to_be_bytes()].concat(),
        h,
        hp,
    ));
    for (copy, mode) in modes() {
        for (t, h, hp) in &cases {
            let addrs = t.len() - 4;
            let got = with_buf(&dev, copy, t, |b| {
                let a = call(
                    &dev,
                    &Job::new(OP_RSS, 0)
                        .params(&soft::MS_RSS_KEY)
                        .input(&b[..addrs]),
                    copy,
                )?;
                let p = call(
                    &dev,
                    &Job::new(OP_RSS, 0).params(&soft::MS_RSS_KEY).input(b),
                    copy,
                )?;
                Ok::<_, String>((a.result as u32, p.result as u32))
            })??;
            ensure!(
                got == (*h, *hp),
                "{mode}: tuple {} hashed to {:#010x}/{:#010x}, expected {h:#010x}/{hp:#010x}",
                hex::encode(t),
                got.0,
                got.1
            );
        }
    }
    Ok(())
}

fn kat_gcm_specification() -> TestResult {
    let dev = open()?;
    for (copy, mode) in modes() {
        for v in vectors::GCM {
            let (key, iv, aad, pt) = (
                vectors::unhex(v.key),
                vectors::unhex(v.iv),
                vectors::unhex(v.aad),
                vectors::unhex(v.pt),
            );
            with_buf(&dev, copy, &key, |k| {
                call(&dev, &Job::new(OP_KEY_SET, 0).slot(1).input(k), copy)
            })??;
            let input = [aad.as_slice(), &pt].concat();
            let sealed = with_buf(&dev, copy, &input, |inp| {
                with_buf(&dev, copy, &vec![0u8; pt.len() + GCM_TAG_LEN], |out| {
                    call(
                        &dev,
                        &Job::new(OP_AES_GCM_SEAL, aad.len() as u32)
                            .slot(1)
                            .params(&iv)
                            .input(inp)
                            .output(out),
                        copy,
                    )?;
                    Ok::<_, String>(out.to_vec())
                })
            })???;
            ensure!(
                hex::encode(&sealed) == format!("{}{}", v.ct, v.tag),
                "{mode} {}: device sealed to {}, expected {}{}",
                v.name,
                hex::encode(&sealed),
                v.ct,
                v.tag
            );
            let input = [aad.as_slice(), &sealed].concat();
            let opened = with_buf(&dev, copy, &input, |inp| {
                with_buf(&dev, copy, &vec![0u8; pt.len()], |out| {
                    call(
                        &dev,
                        &Job::new(OP_AES_GCM_OPEN, aad.len() as u32)
                            .slot(1)
                            .params(&iv)
                            .input(inp)
                            .output(out),
                        copy,
                    )?;
                    Ok::<_, String>(out.to_vec())
                })
            })???;
            ensure!(
                opened == pt,
                "{mode} {}: open did not give the plaintext back",
                v.name
            );
            // A flipped tag bit: AUTH_FAILED, never plaintext.
            let mut bad = input.clone();
            if let Some(last) = bad.last_mut() {
                *last ^= 1;
            }
            let st = with_buf(&dev, copy, &bad, |inp| {
                with_buf(&dev, copy, &vec![0u8; pt.len()], |out| {
                    let job = Job::new(OP_AES_GCM_OPEN, aad.len() as u32)
                        .slot(1)
                        .params(&iv)
                        .input(inp)
                        .output(out);
                    // SAFETY: both buffers live through the call.
                    let c = unsafe { dev.run(std::slice::from_ref(&job), copy, 1, None) }
                        .map_err(|e| format!("{e:#}"))?;
                    Ok::<_, String>((c[0].status, out.iter().all(|&b| b == 0)))
                })
            })???;
            ensure!(
                st == (STATUS_AUTH_FAILED, true),
                "{mode} {}: tampered open gave status {} (zeroed output: {})",
                v.name,
                status_name(st.0),
                st.1
            );
        }
    }
    call(&dev, &Job::new(OP_KEY_CLEAR, 0).slot(1), false)?;
    Ok(())
}

// ---------------------------------------------------------------------------
// Tools
// ---------------------------------------------------------------------------

fn run(
    prog: &str,
    args: &[&str],
    env: &[(&str, &str)],
    stdin: Option<&[u8]>,
) -> Result<Output, String> {
    let mut c = Command::new(prog);
    c.args(args)
        .env_remove("LD_PRELOAD")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        c.env(k, v);
    }
    c.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    });
    let mut child = c.spawn().map_err(|e| format!("cannot run {prog}: {e}"))?;
    if let Some(data) = stdin {
        use std::io::Write;
        let mut si = child.stdin.take().ok_or("no stdin")?;
        si.write_all(data)
            .map_err(|e| format!("{prog}: writing stdin: {e}"))?;
    }
    child.wait_with_output().map_err(|e| format!("{prog}: {e}"))
}

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

fn write_tmp(name: &str, data: &[u8]) -> Result<String, String> {
    let p = format!("/tmp/pktaccel-wl-{}-{name}", std::process::id());
    std::fs::write(&p, data).map_err(|e| format!("{p}: {e}"))?;
    Ok(p)
}

fn join<'a>(mode: &[&'a str], args: &[&'a str]) -> Vec<&'a str> {
    [args, mode].concat()
}

fn pktctl_every_op() -> TestResult {
    let data: Vec<u8> = (0..3000u32).map(|i| (i * 7 + 3) as u8).collect();
    let f = write_tmp("ctl-data", &data)?;
    let key = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";
    let iv = "0102030405060708090a0b0c";
    for copy in [false, true] {
        let m: &[&str] = if copy { &["--copy"] } else { &[] };
        let out = ok_stdout("pktctl", &join(m, &["run", "crc32", &f]), &[], None)?;
        ensure!(
            out.trim() == format!("crc32 {:08x}", soft::crc32(0, &data)),
            "crc32: {out}"
        );
        let out = ok_stdout(
            "pktctl",
            &join(m, &["run", "crc32c", "-"]),
            &[],
            Some(&data),
        )?;
        ensure!(
            out.trim() == format!("crc32c {:08x}", soft::crc32c(0, &data)),
            "crc32c from stdin: {out}"
        );
        let out = ok_stdout("pktctl", &join(m, &["run", "csum", &f]), &[], None)?;
        ensure!(
            out.trim() == format!("csum {:04x}", soft::inet_csum(0, &[&data])),
            "csum: {out}"
        );
        let out = ok_stdout(
            "pktctl",
            &join(m, &["run", "rss", "-"]),
            &[],
            Some(&data[..12]),
        )?;
        ensure!(
            out.trim() == format!("rss {:08x}", soft::toeplitz(&soft::MS_RSS_KEY, &data[..12])),
            "rss: {out}"
        );
        let out = ok_stdout("pktctl", &join(m, &["run", "nop"]), &[], None)?;
        ensure!(out.trim() == "nop ok", "nop: {out}");
        let out = ok_stdout("pktctl", &join(m, &["run", "copy", &f]), &[], None)?;
        ensure!(
            out.trim() == hex::encode(&data),
            "copy printed something else"
        );
        let sealed_path = format!("{f}.sealed");
        ok_stdout(
            "pktctl",
            &join(
                m,
                &[
                    "run",
                    "aes-gcm-seal",
                    &f,
                    "--key",
                    key,
                    "--iv",
                    iv,
                    "--aad",
                    "beef",
                    "-o",
                    &sealed_path,
                ],
            ),
            &[],
            None,
        )?;
        let sealed = std::fs::read(&sealed_path).map_err(|e| e.to_string())?;
        let k: [u8; 32] = vectors::unhex(key).try_into().map_err(|_| "key")?;
        let v: [u8; 12] = vectors::unhex(iv).try_into().map_err(|_| "iv")?;
        ensure!(
            sealed == soft::gcm_seal(&k, &v, &[0xbe, 0xef], &data),
            "seal output differs from software AES-256-GCM"
        );
        let out = ok_stdout(
            "pktctl",
            &join(
                m,
                &[
                    "run",
                    "aes-gcm-open",
                    &sealed_path,
                    "--key",
                    key,
                    "--iv",
                    iv,
                    "--aad",
                    "beef",
                ],
            ),
            &[],
            None,
        )?;
        ensure!(
            out.trim() == hex::encode(&data),
            "open did not print the plaintext"
        );
        ok_stdout(
            "pktctl",
            &join(m, &["run", "key-set", "--key", key, "--slot", "2"]),
            &[],
            None,
        )?;
        ok_stdout(
            "pktctl",
            &join(m, &["run", "key-clear", "--slot", "2"]),
            &[],
            None,
        )?;
        std::fs::remove_file(&sealed_path).ok();
    }
    let info = ok_stdout("pktctl", &["info"], &[], None)?;
    ensure!(
        info.contains("ABI v1") && info.contains("requests.crc32"),
        "pktctl info lacks the ABI or the driver counters:\n{info}"
    );
    std::fs::remove_file(&f).ok();
    Ok(())
}

fn pktctl_errors_by_name() -> TestResult {
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

fn pktbench_quick_zero_copy_vs_copy() -> TestResult {
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

fn pktbench_pcap_traffic() -> TestResult {
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

fn pktbench_bad_input() -> TestResult {
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

// ---------------------------------------------------------------------------
// Unmodified programs
// ---------------------------------------------------------------------------

/// Runs `prog` plain and under the preload (`preload`, stats on, uncached
/// slabs); the outputs must be identical and the library must have served
/// pinned allocations. Prints the allocation statistics to the console.
fn same_output(
    name: &str,
    prog: &str,
    args: &[&str],
    stdin: Option<&[u8]>,
    preload: &str,
    extra: &[(&str, &str)],
) -> Result<String, String> {
    let plain = run(prog, args, &[], stdin)?;
    ensure!(
        plain.status.success(),
        "{name}: plain run failed: {}",
        String::from_utf8_lossy(&plain.stderr)
    );
    let env = [
        &[
            ("LD_PRELOAD", preload),
            ("PKTSLAB_STATS", "1"),
            ("PKTSLAB_CACHING", "uc"),
        ][..],
        extra,
    ]
    .concat();
    let pre = run(prog, args, &env, stdin)?;
    let err = String::from_utf8_lossy(&pre.stderr).into_owned();
    ensure!(
        pre.status.success(),
        "{name}: preloaded run failed ({}): {err}",
        pre.status
    );
    ensure!(
        err.contains("pktslab: backend device"),
        "{name}: no device-backed pktslab statistics: {err}"
    );
    let served: u64 = err
        .lines()
        .filter_map(|l| {
            l.strip_prefix("pktslab: ")?
                .split(" allocations,")
                .next()?
                .parse()
                .ok()
        })
        .max()
        .unwrap_or(0);
    ensure!(served > 0, "{name}: pktslab served no allocations: {err}");
    ensure!(
        plain.stdout == pre.stdout,
        "{name}: output differs under LD_PRELOAD ({} vs {} bytes)",
        plain.stdout.len(),
        pre.stdout.len()
    );
    for l in err.lines() {
        println!("{name}: {l}");
    }
    Ok(err)
}

fn sqlite3_on_pinned_slabs() -> TestResult {
    let sql = "create table t(id integer primary key, k text, v blob);\n\
        with recursive c(x) as (select 1 union all select x+1 from c where x < 2000)\n\
        insert into t(k, v) select 'key' || (x * 7919 % 2000), randomblob(x % 300 + 1) from c;\n\
        create index tk on t(k);\n\
        select count(*), sum(length(v)), min(k), max(k) from t;\n\
        select k, count(*) from t group by substr(k, 1, 4) order by 2 desc limit 3;\n\
        select sum(id) from t where k like 'key1%';\n";
    same_output(
        "sqlite3",
        "sqlite3",
        &[":memory:"],
        Some(sql.as_bytes()),
        PRELOAD,
        &[],
    )?;
    Ok(())
}

fn python3_on_pinned_slabs() -> TestResult {
    let script = "import hashlib, json, zlib, collections\n\
        words = [('w%d' % (i * 7919 % 1000)) * (i % 5 + 1) for i in range(20000)]\n\
        c = collections.Counter(words)\n\
        blob = json.dumps(sorted(c.items())).encode()\n\
        print(len(blob), hashlib.sha256(blob).hexdigest())\n\
        z = zlib.compress(blob * 4, 6)\n\
        print(len(z), zlib.crc32(blob), zlib.decompress(z) == blob * 4)\n\
        print(sum(len(w) for w in words), c.most_common(2))\n";
    same_output("python3", "python3", &["-c", script], None, PRELOAD, &[])?;
    Ok(())
}

fn test_data(len: usize) -> Vec<u8> {
    // Compressible but not trivial: text-like runs with varying content.
    let mut rng = crate::workload::frames::Rng::new(42);
    (0..len)
        .map(|i| {
            let r = rng.next_u64();
            if r.is_multiple_of(4) {
                (r >> 8) as u8
            } else {
                b"the quick brown fox jumps over the lazy dog "[i % 44]
            }
        })
        .collect()
}

fn pigz_on_pinned_slabs() -> TestResult {
    let f = write_tmp("pigz-in", &test_data(400_000))?;
    same_output("pigz", "pigz", &["-c", "-p", "2", &f], None, PRELOAD, &[])?;
    std::fs::remove_file(&f).ok();
    Ok(())
}

fn debugfs() -> Result<HashMap<String, u64>, String> {
    let s = std::fs::read_to_string(DEBUGFS_STATS).map_err(|e| format!("{DEBUGFS_STATS}: {e}"))?;
    Ok(s.lines()
        .filter_map(|l| {
            let (k, v) = l.split_once(' ')?;
            Some((k.to_string(), v.trim().parse().ok()?))
        })
        .collect())
}

fn counter(m: &HashMap<String, u64>, k: &str) -> u64 {
    m.get(k).copied().unwrap_or(0)
}

/// pktcrc's own exit report: (calls on the device, bytes on the device).
fn pktcrc_report(err: &str) -> (u64, u64) {
    err.lines()
        .find_map(|l| {
            let rest = l.strip_prefix("pktcrc: ")?;
            let calls = rest.split(' ').next()?.parse().ok()?;
            let bytes = rest.split('(').nth(1)?.split(' ').next()?.parse().ok()?;
            Some((calls, bytes))
        })
        .unwrap_or((0, 0))
}

fn pigz_crc32_on_device_zero_copy() -> TestResult {
    let data = test_data(600_000);
    let f = write_tmp("pigz-crc-in", &data)?;
    let before = debugfs()?;
    let err = same_output(
        "pigz+pktcrc",
        "pigz",
        &["-c", "-p", "2", &f],
        None,
        PRELOAD_CRC,
        &[("PKTCRC_STATS", "1")],
    )?;
    let after = debugfs()?;
    let (calls, bytes) = pktcrc_report(&err);
    let reqs = counter(&after, "requests.crc32") - counter(&before, "requests.crc32");
    let zc = counter(&after, "bytes_zero_copy") - counter(&before, "bytes_zero_copy");
    let copied = counter(&after, "bytes_copied") - counter(&before, "bytes_copied");
    println!(
        "pigz+pktcrc: device requests.crc32 +{reqs}, bytes_zero_copy +{zc}, bytes_copied +{copied}"
    );
    ensure!(
        calls > 0 && bytes as usize == data.len(),
        "pigz's crc32 calls did not reach the device over the whole input: {err}"
    );
    ensure!(
        reqs >= calls,
        "requests.crc32 rose by {reqs}, fewer than the {calls} device calls pktcrc reports"
    );
    ensure!(
        zc >= data.len() as u64,
        "bytes_zero_copy rose by {zc}, less than the {} bytes CRCed",
        data.len()
    );
    ensure!(
        copied == 0,
        "the CRC path copied {copied} bytes; it must be zero-copy"
    );
    // And the archive decompresses (its trailer CRC is the device's).
    let gz = run(
        "sh",
        &[
            "-c",
            &format!("pigz -c {f} | LD_PRELOAD='{PRELOAD_CRC}' pigz -d -c | cmp - {f}"),
        ],
        &[],
        None,
    )?;
    ensure!(
        gz.status.success(),
        "round trip through pigz -d under the preload failed: {}",
        String::from_utf8_lossy(&gz.stderr)
    );
    std::fs::remove_file(&f).ok();
    Ok(())
}

fn python3_zlib_crc32_on_device() -> TestResult {
    let script = "import zlib\n\
        b = bytes(range(256)) * 400\n\
        print(zlib.crc32(b), zlib.crc32(b[:5000], zlib.crc32(b[5000:])), zlib.crc32(b'123456789'))\n";
    let before = debugfs()?;
    let err = same_output(
        "python3+pktcrc",
        "python3",
        &["-c", script],
        None,
        PRELOAD_CRC,
        &[("PKTCRC_STATS", "1")],
    )?;
    let after = debugfs()?;
    let (calls, _) = pktcrc_report(&err);
    let reqs = counter(&after, "requests.crc32") - counter(&before, "requests.crc32");
    ensure!(
        calls >= 1 && reqs >= calls,
        "python3's zlib.crc32 did not reach the device (pktcrc {calls} calls, requests.crc32 +{reqs}): {err}"
    );
    Ok(())
}
