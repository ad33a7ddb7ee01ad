//! Debian's own programs under `LD_PRELOAD=libpktslab.so` (and
//! `libpktcrc.so`): identical output, the driver's counters rise.

use super::{PRELOAD, PRELOAD_CRC, run, write_tmp};
use crate::ensure;
use crate::guest::kmod_helpers::{counter_rise, debugfs_counters};
use crate::guest::preload::preloaded_stderr;
use crate::harness::TestResult;

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
    let err = preloaded_stderr(name, &pre)?;
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

pub(super) fn sqlite3_on_pinned_slabs() -> TestResult {
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

pub(super) fn python3_on_pinned_slabs() -> TestResult {
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

pub(super) fn pigz_on_pinned_slabs() -> TestResult {
    let f = write_tmp("pigz-in", &test_data(400_000))?;
    same_output("pigz", "pigz", &["-c", "-p", "2", &f], None, PRELOAD, &[])?;
    std::fs::remove_file(&f).ok();
    Ok(())
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

pub(super) fn pigz_crc32_on_device_zero_copy() -> TestResult {
    let data = test_data(600_000);
    let f = write_tmp("pigz-crc-in", &data)?;
    let before = debugfs_counters()?;
    let err = same_output(
        "pigz+pktcrc",
        "pigz",
        &["-c", "-p", "2", &f],
        None,
        PRELOAD_CRC,
        &[("PKTCRC_STATS", "1")],
    )?;
    let after = debugfs_counters()?;
    let (calls, bytes) = pktcrc_report(&err);
    let reqs = counter_rise(&before, &after, "requests.crc32");
    let zc = counter_rise(&before, &after, "bytes_zero_copy");
    let copied = counter_rise(&before, &after, "bytes_copied");
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

pub(super) fn python3_zlib_crc32_on_device() -> TestResult {
    let script = "import zlib\n\
        b = bytes(range(256)) * 400\n\
        print(zlib.crc32(b), zlib.crc32(b[:5000], zlib.crc32(b[5000:])), zlib.crc32(b'123456789'))\n";
    let before = debugfs_counters()?;
    let err = same_output(
        "python3+pktcrc",
        "python3",
        &["-c", script],
        None,
        PRELOAD_CRC,
        &[("PKTCRC_STATS", "1")],
    )?;
    let after = debugfs_counters()?;
    let (calls, _) = pktcrc_report(&err);
    let reqs = counter_rise(&before, &after, "requests.crc32");
    ensure!(
        calls >= 1 && reqs >= calls,
        "python3's zlib.crc32 did not reach the device (pktcrc {calls} calls, requests.crc32 +{reqs}): {err}"
    );
    Ok(())
}

/// The fork script userlib's tests share, with a thread in zlib.crc32 (a
/// device call under libpktcrc) while the parent forks.
const PY_FORK: &str = include_str!("../../../../userlib/tests/fork_children.py");

/// python3 forks while a thread's zlib.crc32 is on the device: every
/// child's own crc32 calls must finish (a child that hung on the lock its
/// parent's thread held is killed by its alarm and shows as -14, so the
/// output differs) with the right values. The parent and the child that
/// exits normally each report their own calls (counters from zero in a
/// child), none failed on the device; the parent's ran there. A child's
/// calls on buffers it inherited run in software: its heap is a copy in
/// ordinary memory.
pub(super) fn python3_zlib_crc32_across_fork() -> TestResult {
    let before = debugfs_counters()?;
    let err = same_output(
        "python3 fork+pktcrc",
        "python3",
        &["-c", PY_FORK, "6", "crc"],
        None,
        PRELOAD_CRC,
        &[("PKTCRC_STATS", "1")],
    )?;
    let after = debugfs_counters()?;
    let reports: Vec<&str> = err
        .lines()
        .filter_map(|l| l.strip_prefix("pktcrc: "))
        .collect();
    ensure!(
        reports.len() == 2,
        "expected the parent's and one child's pktcrc report: {err}"
    );
    let mut calls = 0;
    for r in &reports {
        ensure!(
            r.ends_with(" 0 device errors"),
            "crc32 calls failed on the device: {r}"
        );
        calls += r
            .split(' ')
            .next()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0u64);
    }
    // The parent exits last: its report is the last line.
    let parent: u64 = reports[1]
        .split(' ')
        .next()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    ensure!(
        parent > 0,
        "the parent's crc32 calls did not reach the device: {}",
        reports[1]
    );
    let reqs = counter_rise(&before, &after, "requests.crc32");
    ensure!(
        reqs >= calls,
        "requests.crc32 rose by {reqs}, fewer than the {calls} device calls reported"
    );
    Ok(())
}
