//! `cargo xtask test`: the README's test command. Host unit and integration
//! tests, clippy with warnings denied, the rustfmt check, then the guest
//! suite; the last line is the overall `N passed, N failed`.

use std::time::Instant;

use anyhow::Result;
use xshell::{Shell, cmd};

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
    let sh = Shell::new()?;
    sh.change_dir(workspace);
    let args = stage.args;
    let t = Instant::now();
    // The stage's own output is the report; xshell's error adds the
    // command and its exit code (or why it did not start).
    let ok = match cmd!(sh, "{cargo} {args...}").quiet().run() {
        Ok(()) => true,
        Err(e) => {
            eprintln!("    {e}");
            false
        }
    };
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

/// The kernel module's rustfmt and clippy checks (they need the guest
/// kernel's build tree, so they run once it is prepared).
pub fn kmod_lint_stage(p: &crate::vm::Prepared) -> bool {
    eprintln!("==> kmod rustfmt + clippy");
    let t = Instant::now();
    let ok = match p.lint_kmod() {
        Ok(()) => true,
        Err(e) => {
            eprintln!("{e:#}");
            false
        }
    };
    println!(
        "stage kmod lints ... {} ({})",
        if ok { "ok" } else { "FAILED" },
        fmt_duration(t.elapsed())
    );
    ok
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stage_passes_or_fails_with_cargo_exit_status() {
        let ws = std::env::temp_dir();
        let ok = Stage {
            name: "version",
            args: &["--version"],
        };
        assert!(run_stage(&ws, &ok).unwrap());
        let bad = Stage {
            name: "no such subcommand",
            args: &["pktaccel-no-such-subcommand"],
        };
        assert!(!run_stage(&ws, &bad).unwrap());
    }
}
