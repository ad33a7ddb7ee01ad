//! `cargo xtask test`: the README's test command. Host unit and integration
//! tests, clippy with warnings denied, the rustfmt check, then the guest
//! suite; the last line is the overall `N passed, N failed`.

use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result};

use crate::step::fmt_duration;

/// One host-side stage.
pub struct Stage {
    /// Shown in the report.
    pub name: &'static str,
    /// Arguments after `cargo`.
    pub args: &'static [&'static str],
}

/// The host stages, in order.
pub const STAGES: &[Stage] = &[
    Stage {
        name: "rustfmt",
        args: &["fmt", "--all", "--", "--check"],
    },
    Stage {
        name: "clippy",
        args: &[
            "clippy",
            "--workspace",
            "--all-targets",
            "--quiet",
            "--",
            "-D",
            "warnings",
        ],
    },
    Stage {
        name: "cargo test",
        args: &["test", "--workspace", "--quiet", "--no-fail-fast"],
    },
];

/// Runs one stage with output passing through; returns whether it passed.
pub fn run_stage(workspace: &std::path::Path, stage: &Stage) -> Result<bool> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    eprintln!("==> {}", stage.name);
    let t = Instant::now();
    let status = Command::new(cargo)
        .current_dir(workspace)
        .args(stage.args)
        .status()
        .with_context(|| format!("cannot run cargo {}", stage.args.join(" ")))?;
    let ok = status.success();
    println!(
        "stage {} ... {} ({})",
        stage.name,
        if ok { "ok" } else { "FAILED" },
        fmt_duration(t.elapsed())
    );
    Ok(ok)
}

/// Seconds each fuzz target runs in `cargo xtask test`.
pub const FUZZ_SECS: u64 = 10;

/// Builds the fuzz targets and runs each for [`FUZZ_SECS`], printing its
/// executions; passes when none crashed.
pub fn fuzz_stage(workspace: &std::path::Path) -> bool {
    eprintln!("==> fuzz ({FUZZ_SECS} s per target)");
    let t = Instant::now();
    let ok = match crate::fuzz::run(workspace, None, std::time::Duration::from_secs(FUZZ_SECS)) {
        Ok(runs) => runs.iter().all(|r| r.crash.is_none()),
        Err(e) => {
            eprintln!("fuzz: {e:#}");
            false
        }
    };
    println!(
        "stage fuzz ... {} ({})",
        if ok { "ok" } else { "FAILED" },
        fmt_duration(t.elapsed())
    );
    ok
}
