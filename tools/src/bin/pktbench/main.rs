//! `pktbench`: packet pipelines through the pktaccel device, from pinned
//! memory (zero-copy) and from ordinary memory (copy mode) side by side.
//!
//! `pktbench --quick` prints a short table; without options it sweeps
//! packet sizes, batch sizes and queue counts. Every device result is
//! checked against software before it counts.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::Parser;
use pktaccel_tools::dev::{Device, caching};
use pktaccel_tools::pcap::Capture;
use pktaccel_tools::pipeline::{CellResult, CellSpec, Pipeline, run_cell};
use pktaccel_tools::{frames, pcap, report};

/// Packet workloads on the pktaccel device.
#[derive(Parser, Debug)]
#[command(name = "pktbench", version)]
struct Args {
    /// A short run: every pipeline on IMIX, batch 32, one queue, both modes.
    #[arg(long)]
    quick: bool,
    /// Pipelines: csum, rss, gcm, copy (comma-separated).
    #[arg(long, value_delimiter = ',', value_parser = parse_pipeline)]
    ops: Vec<Pipeline>,
    /// Frame sizes in bytes, or `imix` (64/594/1518 at 7:4:1).
    #[arg(long, value_delimiter = ',', value_parser = parse_size)]
    sizes: Vec<usize>,
    /// Packets per batch (1..=4096).
    #[arg(long, value_delimiter = ',', value_parser = clap::value_parser!(u32).range(1..=4096))]
    batches: Vec<u32>,
    /// Request queues: numbers, or `N` for all the device has.
    #[arg(long, value_delimiter = ',', value_parser = parse_queues)]
    queues: Vec<u32>,
    /// Modes: `zc` (zero-copy, pinned memory) and/or `copy`.
    #[arg(long, value_delimiter = ',', value_parser = ["zc", "copy"])]
    modes: Vec<String>,
    /// Packets per measurement (at most).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    packets: Option<u32>,
    /// Device time per measurement, milliseconds (at most).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    budget_ms: Option<u64>,
    /// Runs per measurement; the run with the median packets/s is reported
    /// (default 3, 1 with --quick): one host hiccup does not decide a row.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=15))]
    repeat: Option<u32>,
    /// RSS flows (indirection table targets).
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..=128))]
    flows: u32,
    /// Use the frames of this pcap file instead of generated traffic.
    #[arg(long, value_name = "FILE")]
    pcap: Option<PathBuf>,
    /// Slab caching: uc (default), wc, wb.
    #[arg(long, default_value = "uc", value_parser = ["uc", "wc", "wb"])]
    caching: String,
    /// Also write one JSON object per measurement (JSON lines) to FILE.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
}

const IMIX: usize = 0;

fn parse_pipeline(s: &str) -> Result<Pipeline, String> {
    Pipeline::parse(s)
        .ok_or_else(|| format!("unknown pipeline '{s}' (expected csum, rss, gcm or copy)"))
}

fn parse_size(s: &str) -> Result<usize, String> {
    if s == "imix" {
        return Ok(IMIX);
    }
    match s.parse::<usize>() {
        Ok(n) if (64..=frames::MAX_FRAME).contains(&n) => Ok(n),
        _ => Err(format!(
            "frame size '{s}' must be imix or 64..={}",
            frames::MAX_FRAME
        )),
    }
}

fn parse_queues(s: &str) -> Result<u32, String> {
    if s == "N" || s == "n" {
        return Ok(0);
    }
    match s.parse::<u32>() {
        Ok(n) if n >= 1 => Ok(n),
        _ => Err(format!("queue count '{s}' must be a positive number or N")),
    }
}

fn main() -> ExitCode {
    pktaccel_tools::tool_main("pktbench", || run(Args::parse()))
}

/// One measurement of the plan: pipeline, frame size (or [`IMIX`], or
/// `usize::MAX` for the capture), batch, queues.
type Point = (Pipeline, usize, u32, u32);

fn run(a: Args) -> Result<()> {
    // Inputs first: a bad capture is reported even without a device.
    let capture = a.pcap.as_deref().map(pcap::read).transpose()?;
    let dev = Device::open(caching(&a.caching))?;
    let nq = dev.queues();
    let modes: Vec<bool> = if a.modes.is_empty() {
        vec![false, true]
    } else {
        a.modes.iter().map(|m| m == "copy").collect()
    };
    let grid = plan(&a, nq, capture.is_some())?;
    let packets = a.packets.unwrap_or(if a.quick { 256 } else { 4096 }) as usize;
    let repeat = a.repeat.unwrap_or(if a.quick { 1 } else { 3 }) as usize;
    let budget = Duration::from_millis(a.budget_ms.unwrap_or(if a.quick { 500 } else { 1000 }));
    let mut json_out = match &a.json {
        Some(p) => Some(
            std::fs::File::create(p).with_context(|| format!("cannot create {}", p.display()))?,
        ),
        None => None,
    };
    println!(
        "pktbench: device with {nq} queue(s), ring {}, slabs {}; {} measurement(s), each the median of {repeat} run(s) of up to {packets} packets or {} ms of device time",
        dev.info().queue_size,
        a.caching,
        grid.len() * modes.len(),
        budget.as_millis()
    );
    if let Some(c) = &capture {
        println!(
            "pktbench: {} frames from the capture ({} records skipped)",
            c.frames.len(),
            c.skipped
        );
    }
    println!("{}", report::header());
    for (op, size, batch, q) in grid {
        let (label, traffic) = traffic(capture.as_ref(), size, a.flows);
        for &copy in &modes {
            let spec = CellSpec {
                pipeline: op,
                traffic: label.clone(),
                copy,
                batch: batch as usize,
                queues: q,
                packets,
                budget,
                flows: a.flows,
            };
            let r = measure(&dev, &spec, &traffic, repeat)?;
            println!("{}", report::row(&spec, &r));
            if let Some(f) = json_out.as_mut() {
                use std::io::Write;
                writeln!(f, "{}", report::json(&spec, &r))?;
            }
        }
    }
    Ok(())
}

/// The measurements to run: what the options name (or the quick set), or
/// the full sweep.
fn plan(a: &Args, nq: u32, capture: bool) -> Result<Vec<Point>> {
    let explicit =
        !(a.ops.is_empty() && a.sizes.is_empty() && a.batches.is_empty() && a.queues.is_empty());
    let or = |v: &[u32], d: &[u32]| if v.is_empty() { d.to_vec() } else { v.to_vec() };
    let ops = if a.ops.is_empty() {
        Pipeline::ALL.to_vec()
    } else {
        a.ops.clone()
    };
    let sizes = if capture {
        vec![usize::MAX]
    } else if a.sizes.is_empty() {
        vec![IMIX]
    } else {
        a.sizes.clone()
    };
    let queues: Vec<u32> = or(&a.queues, &[1])
        .into_iter()
        .map(|q| if q == 0 { nq } else { q })
        .collect();
    if let Some(&q) = queues.iter().find(|&&q| q > nq) {
        bail!("--queues {q}: the device has {nq} request queue(s)");
    }
    let mut grid = Vec::new();
    if a.quick || explicit || capture {
        for &op in &ops {
            for &s in &sizes {
                for &b in &or(&a.batches, &[32]) {
                    for &q in &queues {
                        grid.push((op, s, b, q));
                    }
                }
            }
        }
    } else {
        // The full sweep: sizes at batch 32; batch sizes and 1 vs N queues on IMIX.
        for &op in &ops {
            for s in [64, 594, 1518, IMIX] {
                grid.push((op, s, 32, 1));
            }
            for b in [1, 8, 128] {
                grid.push((op, IMIX, b, 1));
            }
            if nq > 1 {
                grid.push((op, IMIX, 32, nq));
            }
        }
    }
    Ok(grid)
}

/// The frames of one measurement and their label.
fn traffic(capture: Option<&Capture>, size: usize, flows: u32) -> (String, Vec<Vec<u8>>) {
    match (capture, size) {
        (Some(c), _) => ("pcap".to_string(), c.frames.clone()),
        (None, IMIX) => (
            "imix".to_string(),
            frames::traffic(240, &frames::IMIX, flows * 4, 7),
        ),
        (None, s) => (s.to_string(), frames::traffic(64, &[s], flows * 4, 7)),
    }
}

/// Runs one measurement `repeat` times and keeps the run with the median
/// packets/s.
fn measure(
    dev: &Device,
    spec: &CellSpec,
    traffic: &[Vec<u8>],
    repeat: usize,
) -> Result<CellResult> {
    let mut runs = Vec::with_capacity(repeat);
    for _ in 0..repeat {
        runs.push(run_cell(dev, spec, traffic).with_context(|| {
            format!(
                "{} on {} frames, {} mode",
                spec.pipeline.name(),
                spec.traffic,
                if spec.copy { "copy" } else { "zero-copy" }
            )
        })?);
    }
    runs.sort_by(|a, b| a.pps().total_cmp(&b.pps()));
    Ok(runs.swap_remove(runs.len() / 2))
}
