//! The guest half of `cargo xtask bench`: pktbench's JSON lines off the
//! console, and the report's sections built from them (zero-copy vs copy,
//! frame size, batch, queues, every cell, the application demo).

use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use anyhow::Result;

use pktaccel_abi::console;

use crate::bench_chart::{bars, lines};
use crate::step::fmt_duration;
use crate::vm::ConsoleSink;

/// One pktbench measurement (a JSON line from the guest).
#[derive(Debug, Clone)]
pub(crate) struct Cell {
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

pub(crate) struct GuestSink {
    pub(crate) ready: bool,
    pub(crate) table: Vec<String>,
    pub(crate) cells: Vec<Cell>,
    pub(crate) app: Vec<String>,
}

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

pub(crate) fn guest_sections(
    md: &mut String,
    dir: &Path,
    cells: &[Cell],
    took: Duration,
) -> Result<()> {
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
pub(crate) fn find_cell<'a>(
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
pub(crate) fn zc_vs_copy_section(
    md: &mut String,
    dir: &Path,
    cells: &[Cell],
    ops: &[String],
) -> Result<()> {
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
pub(crate) fn size_section(
    md: &mut String,
    dir: &Path,
    cells: &[Cell],
    ops: &[String],
) -> Result<()> {
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
pub(crate) fn batch_section(
    md: &mut String,
    dir: &Path,
    cells: &[Cell],
    ops: &[String],
) -> Result<()> {
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
pub(crate) fn queues_section(md: &mut String, cells: &[Cell], ops: &[String]) -> Result<()> {
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
pub(crate) fn all_cells_section(md: &mut String, cells: &[Cell]) -> Result<()> {
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
pub(crate) fn app_section(md: &mut String, lines: &[String]) -> Result<()> {
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
