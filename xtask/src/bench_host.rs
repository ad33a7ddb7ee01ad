//! The host half of `cargo xtask bench`: `cargo bench` of the device and
//! the allocator under a time limit, their tables parsed, and the report's
//! sections built from them.

use std::fmt::Write as _;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use crate::bench_chart::{Series, bars};
use crate::step::{Step, fmt_duration};

/// A host benchmark's output and run time.
pub(crate) struct HostRun {
    pub(crate) name: &'static str,
    pub(crate) stdout: String,
    pub(crate) took: Duration,
    pub(crate) ok: bool,
}

pub(crate) fn cargo_bench(
    ws: &Path,
    package: &str,
    bench: &'static str,
    limit: Duration,
) -> Result<HostRun> {
    use std::io::Read;
    use std::os::unix::process::CommandExt;
    let step = Step::start(format!("cargo bench -p {package} --bench {bench}"));
    let started = Instant::now();
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    // Own process group, so a benchmark over its time limit is stopped
    // together with cargo. A std `Command`, not xshell: xshell cannot set a
    // process group or kill a command it runs.
    let mut child = Command::new(cargo)
        .current_dir(ws)
        .args(["bench", "-p", package, "--bench", bench])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .process_group(0)
        .spawn()
        .context("cannot run cargo bench")?;
    let mut pipe = child.stdout.take().context("no stdout")?;
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = pipe.read_to_string(&mut s);
        s
    });
    let status = loop {
        if let Some(st) = child.try_wait()? {
            break Some(st);
        }
        if started.elapsed() > limit {
            // SAFETY: signals the process group we created above.
            unsafe { libc::kill(-(child.id() as i32), libc::SIGTERM) };
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let stdout = reader.join().unwrap_or_default();
    let took = started.elapsed();
    let ok = status.is_some_and(|s| s.success());
    step.done(&match status {
        Some(s) if s.success() => "done".to_string(),
        Some(s) => format!("failed ({s})"),
        None => format!(
            "stopped after the {} limit; partial output kept",
            fmt_duration(limit)
        ),
    });
    Ok(HostRun {
        name: bench,
        stdout,
        took,
        ok,
    })
}

/// Label and trailing numbers of a table line: the longest run of
/// numeric tokens at the end (`x1.23` ratio tokens count as numbers).
pub(crate) fn numbers(line: &str) -> Option<(String, Vec<f64>)> {
    let toks: Vec<&str> = line.split_whitespace().collect();
    let mut n = toks.len();
    while n > 0 && toks[n - 1].trim_start_matches('x').parse::<f64>().is_ok() {
        n -= 1;
    }
    if n == toks.len() || n == 0 {
        return None;
    }
    let vals = toks[n..]
        .iter()
        .filter_map(|t| t.trim_start_matches('x').parse().ok())
        .collect();
    Some((toks[..n].join(" "), vals))
}

/// (op, device wall, raw hot, raw set) Gbit/s rows of the device bench's
/// 1500-byte table.
pub(crate) fn device_rows(out: &str) -> Vec<(String, [f64; 3])> {
    let mut in_table = false;
    let mut rows = Vec::new();
    for l in out.lines() {
        if l.starts_with("1500 B") {
            in_table = true;
            continue;
        }
        if in_table {
            if l.trim().is_empty() {
                break;
            }
            if let Some((label, v)) = numbers(l)
                && v.len() >= 5
            {
                rows.push((label, [v[0], v[3], v[4]]));
            }
        }
    }
    rows
}

/// (workload, unit, [pktslab, glibc, jemalloc, mimalloc]) rows of the
/// allocator bench.
pub(crate) fn alloc_rows(out: &str) -> Vec<(String, String, [f64; 4])> {
    out.lines()
        .filter_map(|l| {
            let left = l.split('|').next()?;
            if !l.contains('|') {
                return None;
            }
            let toks: Vec<&str> = left.split_whitespace().collect();
            if toks.len() < 6 {
                return None;
            }
            let unit = toks[toks.len() - 1];
            let v: Vec<f64> = toks[toks.len() - 5..toks.len() - 1]
                .iter()
                .filter_map(|t| t.parse().ok())
                .collect();
            (v.len() == 4).then(|| {
                (
                    toks[..toks.len() - 5].join(" "),
                    unit.to_string(),
                    [v[0], v[1], v[2], v[3]],
                )
            })
        })
        .collect()
}

/// (method, ns per lookup) from the allocator bench's v2p lines.
pub(crate) fn v2p_rows(out: &str) -> Vec<(String, f64)> {
    let mut rows = Vec::new();
    for l in out.lines() {
        let Some(at) = l.find(" ns/lookup") else {
            continue;
        };
        let head = &l[..at];
        let Some((label, num)) = head.rsplit_once(' ') else {
            continue;
        };
        let Ok(ns) = num.parse::<f64>() else { continue };
        let label = label.trim().trim_start_matches("v2p:").trim();
        let label = if label == "pktslab" {
            "pktslab v2p()".to_string()
        } else {
            label.to_string()
        };
        rows.push((label, ns));
    }
    rows
}

/// The line that stands in for a table the benchmark did not print.
pub(crate) fn no_table(md: &mut String, h: &HostRun, raw_file: &str, missing: &str) -> Result<()> {
    let what = if h.ok { missing } else { "failed" };
    writeln!(md, "The benchmark {what} — raw output in `{raw_file}`.\n")?;
    Ok(())
}

/// A benchmark's own output, folded away under its tables.
pub(crate) fn raw_output(md: &mut String, text: &str) -> Result<()> {
    writeln!(
        md,
        "<details><summary>Raw output</summary>\n\n```\n{text}```\n</details>\n"
    )?;
    Ok(())
}

pub(crate) fn device_section(md: &mut String, dir: &Path, h: &HostRun) -> Result<()> {
    writeln!(
        md,
        "## Device on the host (`cargo bench -p pktaccel-device`, {})\n",
        fmt_duration(h.took)
    )?;
    let rows = device_rows(&h.stdout);
    if !h.ok || rows.is_empty() {
        no_table(md, h, "throughput.txt", "printed no 1500-byte table")?;
    } else {
        writeln!(
            md,
            "1500-byte requests, Gbit/s: the daemon (default worker, per second of its CPU time) driven through a real vhost-user frontend vs the engine called in a loop on one hot buffer and over the device's working set.\n"
        )?;
        writeln!(
            md,
            "| op | device | raw hot | raw set | device/raw hot |\n|---|---:|---:|---:|---:|"
        )?;
        for (op, [d, hot, set]) in &rows {
            writeln!(
                md,
                "| {op} | {d:.2} | {hot:.2} | {set:.2} | {:.2} |",
                d / hot.max(1e-9)
            )?;
        }
        let groups: Vec<String> = rows.iter().map(|r| r.0.clone()).collect();
        let series: Vec<Series> = ["device (wall)", "raw hot", "raw set"]
            .iter()
            .enumerate()
            .map(|(i, n)| (n.to_string(), rows.iter().map(|r| r.1[i]).collect()))
            .collect();
        bars(
            &dir.join("device.svg"),
            "pktaccel-device, 1500-byte requests",
            "Gbit/s",
            &groups,
            &series,
            false,
        )?;
        writeln!(md, "\n![device vs raw engines](device.svg)\n")?;
    }
    device_summary(md, dir)?;
    raw_output(md, &h.stdout)?;
    Ok(())
}

/// The device bench's summary file, beside the report.
pub(crate) const DEVICE_SUMMARY: &str = "device-summary.json";

/// The device bench's summary (`device-summary.json`): request rate,
/// per-request overhead, wake cost and device/raw ratios per op and size.
pub(crate) fn device_summary(md: &mut String, dir: &Path) -> Result<()> {
    let path = dir.join(DEVICE_SUMMARY);
    let Ok(text) = std::fs::read_to_string(&path) else {
        writeln!(md, "The device benchmark wrote no `{DEVICE_SUMMARY}`.\n")?;
        return Ok(());
    };
    let v: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("{} is not JSON", path.display()))?;
    let num = |p: &str| v.pointer(p).and_then(serde_json::Value::as_f64);
    let show = |x: Option<f64>| x.map_or("-".to_string(), |x| format!("{x:.2}"));
    writeln!(
        md,
        "Request path (`{DEVICE_SUMMARY}`, host load average {}):\n",
        v["loadavg"].as_str().unwrap_or("?")
    )?;
    writeln!(md, "| figure | value |\n|---|---:|")?;
    for (label, p) in [
        (
            "batched NOP through vhost-user, non-sleeping worker (M req per busy s)",
            "/nop_mreqs_per_s",
        ),
        (
            "the same per wall second (M req/s)",
            "/nop_mreqs_per_s_wall",
        ),
        (
            "request path in process, NOP (ns/request)",
            "/overhead_ns/in_process",
        ),
        (
            "overhead through vhost-user, CSUM 1500 B, non-sleeping, busy (ns)",
            "/overhead_ns/vhost_user",
        ),
        (
            "overhead through vhost-user, CSUM 1500 B, default worker, CPU (ns)",
            "/overhead_ns/vhost_user_sleeping",
        ),
        ("sleep + wake, daemon CPU (µs)", "/wake_us"),
        (
            "adaptive spin over no spinning, NOP, wall",
            "/adaptive_over_off_wall/nop",
        ),
    ] {
        writeln!(md, "| {label} | {} |", show(num(p)))?;
    }
    for (key, title) in [
        ("ratio_polling", "non-sleeping worker, per busy second"),
        ("ratio_sleeping", "default worker, per daemon CPU second"),
        ("ratio_polling_wall", "non-sleeping worker, per wall second"),
        ("ratio_sleeping_wall", "default worker, per wall second"),
    ] {
        let Some(ops) = v[key].as_object() else {
            continue;
        };
        writeln!(md, "\nDevice/raw engine, {title}, by request size:\n")?;
        writeln!(
            md,
            "| op | 64 | 1500 | 9000 | 65536 |\n|---|---:|---:|---:|---:|"
        )?;
        for (op, sizes) in ops {
            let cells: Vec<String> = ["64", "1500", "9000", "65536"]
                .iter()
                .map(|s| show(sizes[*s].as_f64()))
                .collect();
            writeln!(md, "| {op} | {} |", cells.join(" | "))?;
        }
    }
    writeln!(md)?;
    Ok(())
}

pub(crate) fn alloc_section(md: &mut String, dir: &Path, h: &HostRun) -> Result<()> {
    writeln!(
        md,
        "## Allocator on the host (`cargo bench -p pktslab`, {})\n",
        fmt_duration(h.took)
    )?;
    let rows = alloc_rows(&h.stdout);
    if !h.ok || rows.is_empty() {
        no_table(md, h, "alloc.txt", "printed no comparison table")?;
    } else {
        writeln!(
            md,
            "| workload | unit | pktslab | glibc | jemalloc | mimalloc |\n|---|---|---:|---:|---:|---:|"
        )?;
        for (name, unit, v) in &rows {
            writeln!(
                md,
                "| {name} | {unit} | {:.3e} | {:.3e} | {:.3e} | {:.3e} |",
                v[0], v[1], v[2], v[3]
            )?;
        }
        // Throughput as a fraction of the fastest allocator per workload
        // (robust to one allocator collapsing on a workload).
        let speed: Vec<&(String, String, [f64; 4])> =
            rows.iter().filter(|r| r.1 == "ops/s").collect();
        let groups: Vec<String> = speed.iter().map(|r| r.0.clone()).collect();
        let series: Vec<Series> = ["pktslab", "glibc", "jemalloc", "mimalloc"]
            .iter()
            .enumerate()
            .map(|(i, n)| {
                let frac = |r: &&(String, String, [f64; 4])| {
                    r.2[i] / r.2.iter().copied().fold(1e-9, f64::max)
                };
                (n.to_string(), speed.iter().map(frac).collect())
            })
            .collect();
        bars(
            &dir.join("alloc.svg"),
            "Allocator throughput, fraction of the fastest (higher is better)",
            "fraction of fastest",
            &groups,
            &series,
            false,
        )?;
        writeln!(md, "\n![allocators](alloc.svg)\n")?;
    }
    let v2p = v2p_rows(&h.stdout);
    if !v2p.is_empty() {
        writeln!(
            md,
            "### v2p vs /proc/self/pagemap\n\n| method | ns per lookup |\n|---|---:|"
        )?;
        for (m, ns) in &v2p {
            writeln!(md, "| {m} | {ns:.2} |")?;
        }
        let groups: Vec<String> = v2p.iter().map(|r| r.0.clone()).collect();
        bars(
            &dir.join("v2p.svg"),
            "Virtual-to-physical lookup (log scale, lower is better)",
            "ns per lookup",
            &groups,
            &[("ns".into(), v2p.iter().map(|r| r.1).collect())],
            true,
        )?;
        writeln!(md, "\n![v2p vs pagemap](v2p.svg)\n")?;
    }
    raw_output(md, &h.stdout)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_summary_becomes_tables() {
        let dir = tempfile::tempdir().unwrap();
        let mut md = String::new();
        device_summary(&mut md, dir.path()).unwrap();
        assert!(md.contains("wrote no"), "{md}");
        std::fs::write(
            dir.path().join(DEVICE_SUMMARY),
            r#"{"nop_mreqs_per_s": 15.5, "overhead_ns": {"in_process": 20.1, "vhost_user": 28.0},
               "wake_us": 3.3, "ratio_polling": {"csum": {"64": 0.5, "1500": 0.91, "9000": 0.95, "65536": 0.99}},
               "ratio_sleeping": {"csum": {"64": 0.1, "1500": 0.5}}, "loadavg": "1.00 2.00 3.00 1/100 5"}"#,
        )
        .unwrap();
        let mut md = String::new();
        device_summary(&mut md, dir.path()).unwrap();
        assert!(
            md.contains(
                "| batched NOP through vhost-user, non-sleeping worker (M req per busy s) | 15.50 |"
            ),
            "{md}"
        );
        assert!(md.contains("| csum | 0.50 | 0.91 | 0.95 | 0.99 |"), "{md}");
        assert!(md.contains("| csum | 0.10 | 0.50 | - | - |"), "{md}");
        assert!(md.contains("1.00 2.00 3.00"), "{md}");
    }

    #[test]
    fn parses_the_benchmarks_tables() {
        let dev = "x\n1500 B (Gbit/s)     device   dev/CPU\n                    wall\nCSUM                  2.10      3.00      4.00      5.00      6.00     0.42     0.60     0.50     0.66\nAES-256-GCM seal      1.00      1.10      1.20      1.30      1.40     0.77     0.85     0.79     0.86\n\nfoot 1 2\n";
        let r = device_rows(dev);
        assert_eq!(r.len(), 2);
        assert_eq!(r[0], ("CSUM".to_string(), [2.10, 5.00, 6.00]));
        assert_eq!(r[1].0, "AES-256-GCM seal");
        let alloc = "workload pktslab glibc jemalloc mimalloc unit | /glibc\nsmall alloc+free pairs (1 thread)   1.000e8  5.000e7  6.0e7  9.0e7 ops/s  | x 2.00 x 1.6 x 1.1\n\nv2p: pktslab 1.25 ns/lookup\n     /proc/self/pagemap open+pread+close 2100 ns/lookup  (x1680 slower)\n";
        let a = alloc_rows(alloc);
        assert_eq!(
            a,
            vec![(
                "small alloc+free pairs (1 thread)".to_string(),
                "ops/s".to_string(),
                [1e8, 5e7, 6e7, 9e7]
            )]
        );
        let v = v2p_rows(alloc);
        assert_eq!(v[0], ("pktslab v2p()".to_string(), 1.25));
        assert_eq!(
            v[1],
            ("/proc/self/pagemap open+pread+close".to_string(), 2100.0)
        );
    }
}
