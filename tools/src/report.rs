//! The `pktbench` table and its machine-readable twin (JSON lines for
//! `cargo xtask bench`).

use std::fmt::Write as _;

use crate::pipeline::{CellResult, CellSpec};

/// Header of the printed table.
pub fn header() -> String {
    format!(
        "{:<5} {:<7} {:<5} {:>5} {:>3} {:>8} {:>10} {:>8} {:>9} {:>9} {:>9} {:>12} {:>12}",
        "op",
        "frames",
        "mode",
        "batch",
        "q",
        "packets",
        "pkts/s",
        "Gbit/s",
        "p50 us",
        "p99 us",
        "p99.9 us",
        "bytes copied",
        "bytes 0-copy"
    )
}

/// One printed row.
pub fn row(s: &CellSpec, r: &CellResult) -> String {
    let mut line = format!(
        "{:<5} {:<7} {:<5} {:>5} {:>3} {:>8} {:>10.0} {:>8.3} {:>9.1} {:>9.1} {:>9.1} {:>12} {:>12}",
        s.pipeline.name(),
        s.traffic,
        if s.copy { "copy" } else { "zc" },
        s.batch,
        s.queues,
        r.packets,
        r.pps(),
        r.gbps(),
        r.p50_us,
        r.p99_us,
        r.p999_us,
        r.bytes_copied,
        r.bytes_zero_copy
    );
    if !r.flow_counts.is_empty() {
        let _ = write!(line, "  flows {:?}", r.flow_counts);
    }
    line
}

/// One JSON object per cell.
pub fn json(s: &CellSpec, r: &CellResult) -> serde_json::Value {
    serde_json::json!({
        "op": s.pipeline.name(),
        "traffic": s.traffic,
        "mode": if s.copy { "copy" } else { "zero-copy" },
        "batch": s.batch,
        "queues": s.queues,
        "packets": r.packets,
        "requests": r.requests,
        "bytes": r.bytes,
        "secs": r.secs,
        "pps": r.pps(),
        "gbps": r.gbps(),
        "p50_us": r.p50_us,
        "p99_us": r.p99_us,
        "p999_us": r.p999_us,
        "bytes_copied": r.bytes_copied,
        "bytes_zero_copy": r.bytes_zero_copy,
        "flows": r.flow_counts,
    })
}
