//! `cargo xtask bench`: every benchmark side by side in one run, and one
//! report.
//!
//! On the host: the device benchmark (`cargo bench -p pktaccel-device`,
//! the daemon through a vhost-user frontend vs the raw engines) and the
//! allocator benchmark (`cargo bench -p pktslab`: pktslab vs glibc,
//! jemalloc and mimalloc; v2p vs /proc/self/pagemap). In the guest:
//! `pktbench` sweeping frame sizes, batch sizes and queues, zero-copy and
//! copy mode. Writes `target/bench/report.md` with tables and SVG plots
//! (plotters, SVG backend), plus each benchmark's raw output beside it.
//!
//! This file runs them and writes the report; `bench_host.rs` and
//! `bench_guest.rs` hold each half's parsing and sections, `bench_chart.rs`
//! the charts.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use xshell::{Shell, cmd};

use crate::bench_guest::{GuestSink, app_section, guest_sections};
use crate::bench_host::{DEVICE_SUMMARY, HostRun, alloc_section, cargo_bench, device_section};
use crate::initramfs::Mode;
use crate::step::{Step, fmt_duration};
use crate::vm::{self, Prepared, VmArgs};

const JSON_PREFIX: &str = "PKTBENCH-JSON ";

/// Guest shell snippet: Debian's pigz compresses 4 MB plain, then with its
/// heap on pinned slabs and zlib's crc32() on the device (libpktcrc), and
/// prints the archives' digests, pktcrc's report and the driver's counters
/// before and after, each line prefixed with `PKTBENCH-APP`
/// (`console::BENCH_APP`).
const APP_DEMO: &str = "if command -v pigz >/dev/null; then \
    cat /usr/bin/python3.11 /usr/bin/sqlite3 /usr/bin/pigz | head -c 4000000 > /tmp/d; \
    S=/sys/kernel/debug/pktaccel/stats; P='/usr/lib/libpktslab.so /usr/lib/libpktcrc.so'; \
    grep -E '^(requests.crc32|bytes_zero_copy|bytes_copied) ' $S | sed 's/^/PKTBENCH-APP before /'; \
    echo \"PKTBENCH-APP plain pigz: $(pigz -c /tmp/d | md5sum)\"; \
    echo \"PKTBENCH-APP preloaded pigz: $(LD_PRELOAD=\"$P\" PKTCRC_STATS=1 pigz -c /tmp/d 2>/tmp/e | md5sum)\"; \
    sed 's/^/PKTBENCH-APP /' /tmp/e; \
    grep -E '^(requests.crc32|bytes_zero_copy|bytes_copied) ' $S | sed 's/^/PKTBENCH-APP after /'; \
    fi;";

/// What to run.
#[derive(Debug, Clone)]
pub struct BenchOpts {
    /// Skip the host benchmarks.
    pub guest_only: bool,
    /// Skip the guest run.
    pub host_only: bool,
    /// Device time per pktbench measurement, milliseconds.
    pub budget_ms: u64,
    /// Guest timeout.
    pub timeout: Duration,
    /// Time limit of each host benchmark (build included).
    pub host_limit: Duration,
    /// Only the real programs under the four allocators (no boot).
    pub programs_only: bool,
}

/// The first line `prog args` prints, or "unknown" when it cannot run.
fn cmd_line(prog: &str, args: &[&str]) -> String {
    Shell::new()
        .and_then(|sh| cmd!(sh, "{prog} {args...}").quiet().ignore_stderr().read())
        .ok()
        .map(|out| out.lines().next().unwrap_or_default().trim().to_string())
        .unwrap_or_else(|| "unknown".into())
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into())
}

/// What the report header says about the run.
struct RunInfo {
    accel: &'static str,
    /// Guest kernel release, QEMU description.
    versions: (String, String),
    guest_took: Duration,
    /// Host 1-minute load average at the start and at the end.
    load: (String, String),
}

/// The host's 1-minute load average.
fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().map(str::to_string))
        .unwrap_or_else(|| "unknown".into())
}

/// Runs everything and writes the report; returns its path.
pub fn run(cache: &crate::cache::Cache, args: &VmArgs, opts: &BenchOpts) -> Result<PathBuf> {
    let started = Instant::now();
    let load_before = loadavg();
    let ws = vm::workspace_root();
    let out_dir = ws.join("target/bench");
    std::fs::create_dir_all(&out_dir)
        .with_context(|| format!("cannot create {}", out_dir.display()))?;
    if opts.programs_only {
        return crate::bench_programs::run_alone(&ws, &out_dir);
    }
    let programs = (!opts.guest_only)
        .then(|| crate::bench_programs::run(&ws, &out_dir))
        .transpose()?;
    let mut host = Vec::new();
    if !opts.guest_only {
        // The device bench writes this afresh; a stale one must not pass for it.
        let _ = std::fs::remove_file(out_dir.join(DEVICE_SUMMARY));
        host.push(cargo_bench(
            &ws,
            "pktaccel-device",
            "throughput",
            opts.host_limit,
        )?);
        host.push(cargo_bench(&ws, "pktslab", "alloc", opts.host_limit)?);
        for h in &host {
            std::fs::write(out_dir.join(format!("{}.txt", h.name)), &h.stdout)?;
        }
    }
    let accel = vm::resolve_accel(args.accel)?;
    let mut guest = GuestSink {
        ready: false,
        table: Vec::new(),
        cells: Vec::new(),
        app: Vec::new(),
    };
    let mut versions = ("not booted".to_string(), "not used".to_string());
    let mut guest_took = Duration::ZERO;
    if !opts.host_only {
        let p: Prepared = vm::prepare(cache, crate::kernel::Variant::Plain, args.qemu.clone())?;
        let (k, q) = p.versions();
        versions = (k.to_string(), q.to_string());
        let cmd = format!(
            "pktbench --budget-ms {} --json /tmp/pktbench.json; rc=$?; sed 's/^/{JSON_PREFIX}/' /tmp/pktbench.json; {APP_DEMO} {} exit $rc",
            opts.budget_ms,
            crate::bench_openssl::guest_snippet()
        );
        let step = vm::boot_step(&p, args.accel);
        let t = Instant::now();
        // With the unmodified programs, for the pigz + libpktcrc demo.
        let args = VmArgs {
            programs: true,
            ..args.clone()
        };
        let o = vm::boot(&p, &args, &Mode::Exec(cmd), Some(opts.timeout), &mut guest)?;
        guest_took = t.elapsed();
        step.done(&format!(
            "pktbench: {} measurements, status {:?}",
            guest.cells.len(),
            o.guest_status
        ));
        if o.guest_status != Some(0) {
            bail!(
                "pktbench failed in the guest (status {:?}); console log {}",
                o.guest_status,
                o.console_log.display()
            );
        }
        std::fs::write(out_dir.join("pktbench.txt"), guest.table.join("\n") + "\n")?;
    }
    let step = Step::start("report");
    let info = RunInfo {
        accel,
        versions,
        guest_took,
        load: (load_before, loadavg()),
    };
    let report = write_report(&out_dir, &host, &guest, &info, args)?;
    if let Some(section) = &programs {
        crate::bench_programs::append(&report, section)?;
    }
    step.done(&format!(
        "{} (total {})",
        report.display(),
        fmt_duration(started.elapsed())
    ));
    Ok(report)
}

fn write_report(
    dir: &Path,
    host: &[HostRun],
    guest: &GuestSink,
    info: &RunInfo,
    args: &VmArgs,
) -> Result<PathBuf> {
    let (accel, versions, load) = (info.accel, &info.versions, &info.load);
    let mut md = String::new();
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    writeln!(md, "# pktaccel benchmark report\n")?;
    writeln!(md, "| | |\n|---|---|")?;
    writeln!(md, "| machine | {}, {cores} cores |", cpu_model())?;
    writeln!(md, "| host kernel | {} |", cmd_line("uname", &["-sr"]))?;
    writeln!(
        md,
        "| accelerator | {} ({} guest CPUs, {} guest memory, {} device queues) |",
        accel.to_uppercase(),
        args.cpus,
        args.mem,
        args.queues
    )?;
    writeln!(md, "| guest kernel | {} |", versions.0)?;
    writeln!(md, "| QEMU | {} |", versions.1)?;
    writeln!(md, "| rustc | {} |", cmd_line("rustc", &["--version"]))?;
    writeln!(
        md,
        "| host load average (1 min) | {} at the start, {} at the end: other work on the host shows up as latency outliers |",
        load.0, load.1
    )?;
    writeln!(
        md,
        "| date | {} |",
        cmd_line("date", &["-u", "+%Y-%m-%d %H:%M UTC"])
    )?;
    writeln!(md)?;
    writeln!(
        md,
        "Every comparison below was measured side by side in this one run. The guest runs under {}: guest-side figures are emulation-bound and say more about relative costs (zero-copy vs copy, batching) than about absolute speed.\n",
        accel.to_uppercase()
    )?;

    if !guest.cells.is_empty() {
        guest_sections(&mut md, dir, &guest.cells, info.guest_took)?;
    }
    if !guest.app.is_empty() {
        app_section(&mut md, &guest.app)?;
        crate::bench_openssl::section(&mut md, &guest.app)?;
    }
    for h in host {
        match h.name {
            "throughput" => device_section(&mut md, dir, h)?,
            _ => alloc_section(&mut md, dir, h)?,
        }
    }
    let path = dir.join("report.md");
    std::fs::write(&path, md).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cmd_line_is_the_first_line_or_unknown() {
        assert_eq!(cmd_line("printf", &[" one \ntwo\n"]), "one");
        assert_eq!(cmd_line("false", &[]), "unknown");
        assert_eq!(cmd_line("/nonexistent/prog", &[]), "unknown");
    }
}
