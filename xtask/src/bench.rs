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

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use plotters::prelude::*;
use xshell::{Shell, cmd};

use pktaccel_abi::console;

use crate::initramfs::Mode;
use crate::step::{Step, fmt_duration};
use crate::vm::{self, ConsoleSink, Prepared, VmArgs};

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

/// One pktbench measurement (a JSON line from the guest).
#[derive(Debug, Clone)]
struct Cell {
    op: String,
    traffic: String,
    copy: bool,
    batch: u64,
    queues: u64,
    pps: f64,
    gbps: f64,
    p50: f64,
    p99: f64,
    p999: f64,
    copied: u64,
    zero_copy: u64,
    packets: u64,
}

impl Cell {
    fn parse(v: &serde_json::Value) -> Option<Cell> {
        Some(Cell {
            op: v["op"].as_str()?.to_string(),
            traffic: v["traffic"].as_str()?.to_string(),
            copy: v["mode"].as_str()? == "copy",
            batch: v["batch"].as_u64()?,
            queues: v["queues"].as_u64()?,
            pps: v["pps"].as_f64()?,
            gbps: v["gbps"].as_f64()?,
            p50: v["p50_us"].as_f64()?,
            p99: v["p99_us"].as_f64()?,
            p999: v["p999_us"].as_f64()?,
            copied: v["bytes_copied"].as_u64()?,
            zero_copy: v["bytes_zero_copy"].as_u64()?,
            packets: v["packets"].as_u64()?,
        })
    }
}

struct GuestSink {
    ready: bool,
    table: Vec<String>,
    cells: Vec<Cell>,
    app: Vec<String>,
}

const JSON_PREFIX: &str = "PKTBENCH-JSON ";

/// Guest shell snippet: Debian's pigz compresses 4 MB plain, then with its
/// heap on pinned slabs and zlib's crc32() on the device (libpktcrc), and
/// prints the archives' digests, pktcrc's report and the driver's counters
/// before and after, each line prefixed with [`APP_PREFIX`].
const APP_DEMO: &str = "if command -v pigz >/dev/null; then \
    cat /usr/bin/python3.11 /usr/bin/sqlite3 /usr/bin/pigz | head -c 4000000 > /tmp/d; \
    S=/sys/kernel/debug/pktaccel/stats; P='/usr/lib/libpktslab.so /usr/lib/libpktcrc.so'; \
    grep -E '^(requests.crc32|bytes_zero_copy|bytes_copied) ' $S | sed 's/^/PKTBENCH-APP before /'; \
    echo \"PKTBENCH-APP plain pigz: $(pigz -c /tmp/d | md5sum)\"; \
    echo \"PKTBENCH-APP preloaded pigz: $(LD_PRELOAD=\"$P\" PKTCRC_STATS=1 pigz -c /tmp/d 2>/tmp/e | md5sum)\"; \
    sed 's/^/PKTBENCH-APP /' /tmp/e; \
    grep -E '^(requests.crc32|bytes_zero_copy|bytes_copied) ' $S | sed 's/^/PKTBENCH-APP after /'; \
    fi;";

impl ConsoleSink for GuestSink {
    fn line(&mut self, line: &str) {
        if line.starts_with(console::READY) {
            self.ready = true;
        } else if line.starts_with("PKTACCEL-") {
        } else if let Some(a) = console::after(line, console::BENCH_APP) {
            self.app.push(a.to_string());
        } else if let Some(j) = console::after(line, console::BENCH_JSON) {
            if let Some(c) = serde_json::from_str(j).ok().as_ref().and_then(Cell::parse) {
                self.cells.push(c);
            }
        } else if self.ready && !line.starts_with('[') {
            // (Lines starting with '[' are kernel messages.)
            println!("    {line}");
            self.table.push(line.to_string());
        }
    }
}

/// A host benchmark's output and run time.
struct HostRun {
    name: &'static str,
    stdout: String,
    took: Duration,
    ok: bool,
}

fn cargo_bench(ws: &Path, package: &str, bench: &'static str, limit: Duration) -> Result<HostRun> {
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
fn numbers(line: &str) -> Option<(String, Vec<f64>)> {
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
fn device_rows(out: &str) -> Vec<(String, [f64; 3])> {
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
fn alloc_rows(out: &str) -> Vec<(String, String, [f64; 4])> {
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
fn v2p_rows(out: &str) -> Vec<(String, f64)> {
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

const COLORS: [RGBColor; 6] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
];

type Series = (String, Vec<f64>);

/// Grouped bar chart: one group per label, one bar per series.
fn bars(
    path: &Path,
    title: &str,
    ylabel: &str,
    groups: &[String],
    series: &[Series],
    log_y: bool,
) -> Result<()> {
    let max = series
        .iter()
        .flat_map(|s| s.1.iter().copied())
        .fold(0.0f64, f64::max)
        .max(1e-9);
    let min = series
        .iter()
        .flat_map(|s| s.1.iter().copied())
        .filter(|v| *v > 0.0)
        .fold(f64::MAX, f64::min);
    let root = SVGBackend::new(path, (900, 480)).into_drawing_area();
    root.fill(&WHITE)?;
    let n = groups.len().max(1) as f64;
    let mut b = ChartBuilder::on(&root);
    b.caption(title, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(60)
        .y_label_area_size(80);
    let base = if log_y { min / 2.0 } else { 0.0 };
    let fmt_x = |x: &f64| {
        let i = x.floor() as usize;
        if (x - x.floor() - 0.5).abs() < 1e-6 {
            groups.get(i).cloned().unwrap_or_default()
        } else {
            String::new()
        }
    };
    if log_y {
        let mut chart = b.build_cartesian_2d(0f64..n, ((min / 2.0)..(max * 2.0)).log_scale())?;
        draw_chart(&mut chart, groups.len(), &fmt_x, ylabel, series, base)?;
    } else {
        let mut chart = b.build_cartesian_2d(0f64..n, 0f64..max * 1.15)?;
        draw_chart(&mut chart, groups.len(), &fmt_x, ylabel, series, base)?;
    }
    root.present()?;
    Ok(())
}

type Chart<'a, Y> =
    ChartContext<'a, SVGBackend<'a>, Cartesian2d<plotters::coord::types::RangedCoordf64, Y>>;

/// Mesh, bars and legend of a bar chart, whatever its y scale.
fn draw_chart<Y>(
    chart: &mut Chart<'_, Y>,
    groups: usize,
    fmt_x: &dyn Fn(&f64) -> String,
    ylabel: &str,
    series: &[Series],
    base: f64,
) -> Result<()>
where
    Y: Ranged<ValueType = f64> + plotters::coord::ranged1d::ValueFormatter<f64>,
{
    chart
        .configure_mesh()
        .x_labels(groups * 2 + 1)
        .x_label_formatter(fmt_x)
        .y_desc(ylabel)
        .disable_x_mesh()
        .draw()?;
    draw_bars(chart, series, base)?;
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()?;
    Ok(())
}

fn draw_bars<Y: Ranged<ValueType = f64>>(
    chart: &mut Chart<'_, Y>,
    series: &[Series],
    base: f64,
) -> Result<()> {
    let k = series.len().max(1) as f64;
    for (si, (name, vals)) in series.iter().enumerate() {
        let c = COLORS[si % COLORS.len()];
        chart
            .draw_series(
                vals.iter()
                    .enumerate()
                    .filter(|(_, v)| **v > 0.0)
                    .map(|(gi, v)| {
                        let x0 = gi as f64 + 0.1 + 0.8 * si as f64 / k;
                        Rectangle::new([(x0, base), (x0 + 0.8 / k, *v)], c.filled())
                    }),
            )?
            .label(name.clone())
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 10, y + 5)], c.filled()));
    }
    Ok(())
}

/// Line chart of (x, y) series.
fn lines(
    path: &Path,
    title: &str,
    xlabel: &str,
    ylabel: &str,
    series: &[(String, Vec<(f64, f64)>)],
) -> Result<()> {
    let pts = || series.iter().flat_map(|s| s.1.iter().copied());
    let (xmin, xmax) = pts().fold((f64::MAX, f64::MIN), |(a, b), (x, _)| (a.min(x), b.max(x)));
    let ymax = pts().fold(0.0f64, |a, (_, y)| a.max(y)).max(1e-9);
    if xmin > xmax {
        return Ok(());
    }
    let root = SVGBackend::new(path, (640, 400)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(xmin * 0.9..xmax * 1.05, 0f64..ymax * 1.15)?;
    chart
        .configure_mesh()
        .x_desc(xlabel)
        .y_desc(ylabel)
        .draw()?;
    for (si, (name, v)) in series.iter().enumerate() {
        let c = COLORS[si % COLORS.len()];
        chart
            .draw_series(LineSeries::new(v.iter().copied(), c.stroke_width(2)))?
            .label(name.clone())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], c.stroke_width(2)));
        chart.draw_series(v.iter().map(|&p| Circle::new(p, 3, c.filled())))?;
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(())
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

fn guest_sections(md: &mut String, dir: &Path, cells: &[Cell], took: Duration) -> Result<()> {
    writeln!(
        md,
        "## Packet pipelines in the guest (`pktbench`, {})\n",
        fmt_duration(took)
    )?;
    writeln!(
        md,
        "Full stack: application buffers → libpktslab → v2p → pktaccel.ko → virtqueue → pktaccel-device → back. Every result was checked against software. Pipelines: `csum` = TCP/UDP checksum fill then verify (2 requests/packet), `rss` = Toeplitz hash into 8 flows, `gcm` = ESP-like AES-256-GCM seal then open (2 requests/packet), `copy` = DMA copy. Zero-copy (`zc`) buffers are in uncached pinned slabs; copy mode uses ordinary memory that the driver bounces. Latency is per request, submit to reap. Each row is the median (by packets/s) of 3 runs; p50 latency is the steadiest figure on a shared host.\n"
    )?;
    let ops: Vec<String> = {
        let mut v: Vec<String> = cells.iter().map(|c| c.op.clone()).collect();
        v.dedup();
        v
    };
    zc_vs_copy_section(md, dir, cells, &ops)?;
    size_section(md, dir, cells, &ops)?;
    batch_section(md, dir, cells, &ops)?;
    queues_section(md, cells, &ops)?;
    all_cells_section(md, cells)
}

/// The first cell measured with these parameters.
fn find_cell<'a>(
    cells: &'a [Cell],
    op: &str,
    traffic: &str,
    copy: bool,
    batch: u64,
    queues: u64,
) -> Option<&'a Cell> {
    cells.iter().find(|c| {
        c.op == op
            && c.traffic == traffic
            && c.copy == copy
            && c.batch == batch
            && c.queues == queues
    })
}

/// Zero-copy vs copy, side by side, on IMIX at batch 32, 1 queue.
fn zc_vs_copy_section(md: &mut String, dir: &Path, cells: &[Cell], ops: &[String]) -> Result<()> {
    let find = |op: &str, t: &str, copy: bool, b: u64, q: u64| find_cell(cells, op, t, copy, b, q);
    writeln!(md, "### Zero-copy vs copy (IMIX, batch 32, 1 queue)\n")?;
    writeln!(
        md,
        "| op | pkts/s zc | pkts/s copy | zc/copy | Gbit/s zc | Gbit/s copy | p50 µs zc | p50 µs copy | p99 µs zc | p99 µs copy | p99.9 µs zc | p99.9 µs copy | bytes copied zc | bytes copied copy |"
    )?;
    writeln!(
        md,
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    )?;
    let (mut zc_series, mut cp_series) = (Vec::new(), Vec::new());
    let (mut zc_lat, mut cp_lat) = (Vec::new(), Vec::new());
    for op in ops {
        if let (Some(z), Some(c)) = (
            find(op, "imix", false, 32, 1),
            find(op, "imix", true, 32, 1),
        ) {
            writeln!(
                md,
                "| {op} | {:.0} | {:.0} | {:.2} | {:.3} | {:.3} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} | {} | {} |",
                z.pps,
                c.pps,
                z.pps / c.pps.max(1e-9),
                z.gbps,
                c.gbps,
                z.p50,
                c.p50,
                z.p99,
                c.p99,
                z.p999,
                c.p999,
                z.copied,
                c.copied
            )?;
            zc_series.push(z.pps);
            cp_series.push(c.pps);
            zc_lat.push(z.p50);
            cp_lat.push(c.p50);
        }
    }
    bars(
        &dir.join("zc_vs_copy.svg"),
        "Zero-copy vs copy mode (IMIX, batch 32)",
        "packets/s",
        ops,
        &[("zero-copy".into(), zc_series), ("copy".into(), cp_series)],
        false,
    )?;
    bars(
        &dir.join("zc_vs_copy_latency.svg"),
        "Median request latency, zero-copy vs copy (IMIX, batch 32; lower is better)",
        "p50 µs",
        ops,
        &[("zero-copy".into(), zc_lat), ("copy".into(), cp_lat)],
        false,
    )?;
    writeln!(
        md,
        "\n![zero-copy vs copy](zc_vs_copy.svg) ![zero-copy vs copy latency](zc_vs_copy_latency.svg)\n"
    )?;

    Ok(())
}

/// Throughput vs frame size per op.
fn size_section(md: &mut String, dir: &Path, cells: &[Cell], ops: &[String]) -> Result<()> {
    let find = |op: &str, t: &str, copy: bool, b: u64, q: u64| find_cell(cells, op, t, copy, b, q);
    writeln!(md, "### Throughput vs frame size (batch 32, 1 queue)\n")?;
    writeln!(
        md,
        "| op | mode | 64 B Gbit/s | 594 B Gbit/s | 1518 B Gbit/s | IMIX Gbit/s | IMIX pkts/s |"
    )?;
    writeln!(md, "|---|---|---:|---:|---:|---:|---:|")?;
    for op in ops {
        let mut series = Vec::new();
        for copy in [false, true] {
            let mode = if copy { "copy" } else { "zc" };
            let g = |t: &str| find(op, t, copy, 32, 1).map_or(0.0, |c| c.gbps);
            writeln!(
                md,
                "| {op} | {mode} | {:.3} | {:.3} | {:.3} | {:.3} | {:.0} |",
                g("64"),
                g("594"),
                g("1518"),
                g("imix"),
                find(op, "imix", copy, 32, 1).map_or(0.0, |c| c.pps)
            )?;
            let pts: Vec<(f64, f64)> = ["64", "594", "1518"]
                .iter()
                .filter_map(|t| {
                    find(op, t, copy, 32, 1).map(|c| (t.parse().unwrap_or(0.0), c.gbps))
                })
                .collect();
            series.push((
                if copy {
                    "copy mode".to_string()
                } else {
                    "zero-copy".to_string()
                },
                pts,
            ));
        }
        lines(
            &dir.join(format!("size_{op}.svg")),
            &format!("{op}: throughput vs frame size"),
            "frame bytes",
            "Gbit/s",
            &series,
        )?;
    }
    writeln!(md)?;
    for op in ops {
        write!(md, "![{op}](size_{op}.svg) ")?;
    }
    writeln!(md, "\n")?;

    Ok(())
}

/// Packets/s and p99 latency by batch size.
fn batch_section(md: &mut String, dir: &Path, cells: &[Cell], ops: &[String]) -> Result<()> {
    let find = |op: &str, t: &str, copy: bool, b: u64, q: u64| find_cell(cells, op, t, copy, b, q);
    writeln!(md, "### Batch size (IMIX, 1 queue): packets/s, p99 µs\n")?;
    writeln!(
        md,
        "| op | mode | b=1 | b=8 | b=32 | b=128 | p99 b=1 | p99 b=128 |"
    )?;
    writeln!(md, "|---|---|---:|---:|---:|---:|---:|---:|")?;
    let mut batch_series = Vec::new();
    for op in ops {
        for copy in [false, true] {
            let mode = if copy { "copy" } else { "zc" };
            let p = |b: u64| find(op, "imix", copy, b, 1);
            writeln!(
                md,
                "| {op} | {mode} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} |",
                p(1).map_or(0.0, |c| c.pps),
                p(8).map_or(0.0, |c| c.pps),
                p(32).map_or(0.0, |c| c.pps),
                p(128).map_or(0.0, |c| c.pps),
                p(1).map_or(0.0, |c| c.p99),
                p(128).map_or(0.0, |c| c.p99)
            )?;
            if !copy {
                let pts: Vec<(f64, f64)> = [1u64, 8, 32, 128]
                    .iter()
                    .filter_map(|&b| p(b).map(|c| (b as f64, c.pps)))
                    .collect();
                batch_series.push((format!("{op} zc"), pts));
            }
        }
    }
    lines(
        &dir.join("batch.svg"),
        "Packets/s vs batch size (IMIX, zero-copy)",
        "requests per submit",
        "packets/s",
        &batch_series,
    )?;
    writeln!(md, "\n![batch sizes](batch.svg)\n")?;

    Ok(())
}

/// One queue vs the most queues measured, when more than one was.
fn queues_section(md: &mut String, cells: &[Cell], ops: &[String]) -> Result<()> {
    let find = |op: &str, t: &str, copy: bool, b: u64, q: u64| find_cell(cells, op, t, copy, b, q);
    let nq = cells.iter().map(|c| c.queues).max().unwrap_or(1);
    if nq > 1 {
        writeln!(md, "### 1 vs {nq} queues (IMIX, batch 32)\n")?;
        writeln!(md, "| op | mode | pkts/s 1 queue | pkts/s {nq} queues |")?;
        writeln!(md, "|---|---|---:|---:|")?;
        for op in ops {
            for copy in [false, true] {
                let mode = if copy { "copy" } else { "zc" };
                writeln!(
                    md,
                    "| {op} | {mode} | {:.0} | {:.0} |",
                    find(op, "imix", copy, 32, 1).map_or(0.0, |c| c.pps),
                    find(op, "imix", copy, 32, nq).map_or(0.0, |c| c.pps)
                )?;
            }
        }
        writeln!(md)?;
    }
    Ok(())
}

/// Every guest cell, folded away under a details tag.
fn all_cells_section(md: &mut String, cells: &[Cell]) -> Result<()> {
    writeln!(
        md,
        "<details><summary>All {} guest measurements</summary>\n",
        cells.len()
    )?;
    writeln!(
        md,
        "| op | frames | mode | batch | queues | packets | pkts/s | Gbit/s | p50 µs | p99 µs | p99.9 µs | bytes copied | bytes zero-copy |"
    )?;
    writeln!(
        md,
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    )?;
    for c in cells {
        writeln!(
            md,
            "| {} | {} | {} | {} | {} | {} | {:.0} | {:.3} | {:.0} | {:.0} | {:.0} | {} | {} |",
            c.op,
            c.traffic,
            if c.copy { "copy" } else { "zc" },
            c.batch,
            c.queues,
            c.packets,
            c.pps,
            c.gbps,
            c.p50,
            c.p99,
            c.p999,
            c.copied,
            c.zero_copy
        )?;
    }
    writeln!(md, "\n</details>\n")?;
    Ok(())
}

/// The unmodified-program demo: counters before/after and the digests.
fn app_section(md: &mut String, lines: &[String]) -> Result<()> {
    writeln!(md, "## An unmodified program on the device, zero-copy\n")?;
    writeln!(
        md,
        "Mechanism: a preloaded replacement of zlib's `crc32()`/`crc32_z()` (`libpktcrc.so`, after `libpktslab.so`). Debian's own `pigz` binary mallocs its blocks (now in pinned, uncached slabs) and asks zlib for their CRC-32; libpktcrc hands each block to the device as `OP_CRC32` by physical address. Identical archives prove the device's CRCs right (the gzip trailer carries them).\n"
    )?;
    let get = |when: &str, key: &str| -> Option<u64> {
        lines.iter().find_map(|l| {
            l.strip_prefix(when)?
                .trim()
                .strip_prefix(key)?
                .trim()
                .parse()
                .ok()
        })
    };
    writeln!(
        md,
        "| driver counter | before | after | delta |\n|---|---:|---:|---:|"
    )?;
    for key in ["requests.crc32", "bytes_zero_copy", "bytes_copied"] {
        if let (Some(b), Some(a)) = (get("before", key), get("after", key)) {
            writeln!(md, "| `{key}` | {b} | {a} | +{} |", a.saturating_sub(b))?;
        }
    }
    writeln!(md, "\n```")?;
    for l in lines
        .iter()
        .filter(|l| !l.starts_with("before ") && !l.starts_with("after "))
        .filter(|l| !l.starts_with(crate::bench_openssl::TAG))
    {
        writeln!(md, "{l}")?;
    }
    writeln!(md, "```\n")?;
    Ok(())
}

/// The line that stands in for a table the benchmark did not print.
fn no_table(md: &mut String, h: &HostRun, raw_file: &str, missing: &str) -> Result<()> {
    let what = if h.ok { missing } else { "failed" };
    writeln!(md, "The benchmark {what} — raw output in `{raw_file}`.\n")?;
    Ok(())
}

/// A benchmark's own output, folded away under its tables.
fn raw_output(md: &mut String, text: &str) -> Result<()> {
    writeln!(
        md,
        "<details><summary>Raw output</summary>\n\n```\n{text}```\n</details>\n"
    )?;
    Ok(())
}

fn device_section(md: &mut String, dir: &Path, h: &HostRun) -> Result<()> {
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
const DEVICE_SUMMARY: &str = "device-summary.json";

/// The device bench's summary (`device-summary.json`): request rate,
/// per-request overhead, wake cost and device/raw ratios per op and size.
fn device_summary(md: &mut String, dir: &Path) -> Result<()> {
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

fn alloc_section(md: &mut String, dir: &Path, h: &HostRun) -> Result<()> {
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

    #[test]
    fn writes_svgs() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("b.svg");
        bars(
            &p,
            "t",
            "y",
            &["a".into(), "b".into()],
            &[("s1".into(), vec![1.0, 2.0]), ("s2".into(), vec![3.0, 0.5])],
            false,
        )
        .unwrap();
        let s = std::fs::read_to_string(&p).unwrap();
        assert!(
            s.starts_with("<svg") && s.matches("<rect").count() >= 4,
            "{s}"
        );
        let l = d.path().join("l.svg");
        lines(
            &l,
            "t",
            "x",
            "y",
            &[("s".into(), vec![(64.0, 1.0), (1518.0, 3.0)])],
        )
        .unwrap();
        assert!(std::fs::read_to_string(&l).unwrap().contains("<polyline"));
    }

    #[test]
    fn cmd_line_is_the_first_line_or_unknown() {
        assert_eq!(cmd_line("printf", &[" one \ntwo\n"]), "one");
        assert_eq!(cmd_line("false", &[]), "unknown");
        assert_eq!(cmd_line("/nonexistent/prog", &[]), "unknown");
    }
}
