//! `cargo xtask fuzz [TARGET] [--time S]`: builds the cargo-fuzz targets in
//! `fuzz/` and runs each under libFuzzer for a time budget, starting from
//! the committed seeds (`fuzz/corpus/<target>`) plus what earlier runs
//! found (`target/fuzz-corpus/<target>`, not committed).
//!
//! The toolchain here is stable; cargo-fuzz's `-Zsanitizer=address` and
//! friends are nightly flags, which stable rustc accepts when
//! `RUSTC_BOOTSTRAP=1` is set (verified with rustc 1.95: the targets link
//! AddressSanitizer). It is set only for the fuzz build, which has its own
//! target directory, so it never leaks into the normal build.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use xshell::{Shell, cmd};

use crate::step::{Step, fmt_duration};

/// Every target in `fuzz/Cargo.toml`, in the order they are run.
pub const TARGETS: &[&str] = &["abi_codec", "pcap_reader", "request_ring", "vhost_user"];

/// What one libFuzzer run did.
#[derive(Debug, Default)]
pub struct FuzzRun {
    /// Target name.
    pub target: String,
    /// Inputs executed.
    pub execs: u64,
    /// Executions per second (libFuzzer's own average).
    pub execs_per_sec: u64,
    /// Coverage points (`cov:`) and features (`ft:`) at the end.
    pub cov: u64,
    /// Features at the end.
    pub ft: u64,
    /// Inputs in the corpus at the end.
    pub corpus: u64,
    /// Wall time.
    pub elapsed: Duration,
    /// The crash/timeout/OOM input libFuzzer saved, if it found one.
    pub crash: Option<PathBuf>,
}

impl std::fmt::Display for FuzzRun {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "fuzz {}: {} ({} execs, {}/s, cov {}, ft {}, corpus {}, {})",
            self.target,
            match &self.crash {
                Some(p) => format!("CRASH, input saved to {}", p.display()),
                None => "ok".into(),
            },
            self.execs,
            self.execs_per_sec,
            self.cov,
            self.ft,
            self.corpus,
            fmt_duration(self.elapsed)
        )
    }
}

/// Makes sure `cargo fuzz` exists, installing it with cargo if not.
fn ensure_cargo_fuzz(cargo: &str) -> Result<()> {
    let sh = Shell::new()?;
    let ok = cmd!(sh, "{cargo} fuzz --version")
        .quiet()
        .ignore_stdout()
        .ignore_stderr()
        .run()
        .is_ok();
    if ok {
        return Ok(());
    }
    let step = Step::start("cargo install cargo-fuzz (once, about 1 min)");
    cmd!(sh, "{cargo} install cargo-fuzz --locked")
        .quiet()
        .run()
        .context("cargo install cargo-fuzz failed; install it by hand and retry")?;
    step.done("installed");
    Ok(())
}

/// Builds all targets (one cargo invocation: shared dependencies build once).
pub fn build(ws: &Path) -> Result<()> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    ensure_cargo_fuzz(&cargo)?;
    let step = Step::start("cargo fuzz build (AddressSanitizer, RUSTC_BOOTSTRAP=1)");
    let sh = Shell::new()?;
    sh.change_dir(ws.join("fuzz"));
    cmd!(sh, "{cargo} fuzz build --sanitizer address")
        .env("RUSTC_BOOTSTRAP", "1")
        .quiet()
        .run()
        .context("cargo fuzz build failed; see the compiler output above")?;
    step.done("built");
    Ok(())
}

fn binary(ws: &Path, target: &str) -> PathBuf {
    ws.join("fuzz/target/x86_64-unknown-linux-gnu/release")
        .join(target)
}

/// Runs one built target for `time`.
pub fn run_one(ws: &Path, target: &str, time: Duration) -> Result<FuzzRun> {
    let bin = binary(ws, target);
    if !bin.exists() {
        bail!(
            "{} is missing; run `cargo xtask fuzz` to build it",
            bin.display()
        );
    }
    let work = ws.join("target/fuzz-corpus").join(target);
    let artifacts = ws.join("target/fuzz-artifacts").join(target);
    std::fs::create_dir_all(&work)?;
    std::fs::create_dir_all(&artifacts)?;
    let seeds = ws.join("fuzz/corpus").join(target);
    let t = Instant::now();
    let max_time = format!("-max_total_time={}", time.as_secs().max(1));
    let prefix = format!("-artifact_prefix={}/", artifacts.display());
    let sh = Shell::new()?;
    // libFuzzer exits non-zero on a crash: that is a result, read below.
    let out = cmd!(
        sh,
        "{bin} {max_time} -timeout=20 -rss_limit_mb=2048 -print_final_stats=1 {prefix} {work} {seeds}"
    )
    .quiet()
    .ignore_status()
    .ignore_stdout()
    .output()
        .with_context(|| format!("cannot run {}", bin.display()))?;
    let log = String::from_utf8_lossy(&out.stderr);
    let mut run = parse_stats(target, &log);
    run.elapsed = t.elapsed();
    if !out.status.success() {
        run.crash = log
            .lines()
            .find_map(|l| {
                l.split_once("Test unit written to ")
                    .map(|(_, p)| PathBuf::from(p.trim()))
            })
            .or_else(|| Some(artifacts.clone()));
        let tail: Vec<&str> = log.lines().rev().take(40).collect();
        eprintln!(
            "{target}: libFuzzer failed ({}); last lines:\n{}",
            out.status,
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        );
    }
    Ok(run)
}

/// libFuzzer's last status line (`#N DONE cov: C ft: F corp: K/...
/// exec/s: E`) and its final stats.
fn parse_stats(target: &str, log: &str) -> FuzzRun {
    let mut run = FuzzRun {
        target: target.into(),
        ..FuzzRun::default()
    };
    let field = |line: &str, key: &str| -> Option<u64> {
        let rest = line.split(key).nth(1)?;
        rest.trim_start()
            .split(|c: char| !c.is_ascii_digit())
            .next()?
            .parse()
            .ok()
    };
    for line in log.lines() {
        if line.starts_with('#') && line.contains(" cov: ") {
            run.cov = field(line, " cov:").unwrap_or(run.cov);
            run.ft = field(line, " ft:").unwrap_or(run.ft);
            run.corpus = field(line, " corp:").unwrap_or(run.corpus);
        }
        if let Some(n) = field(line, "stat::number_of_executed_units:") {
            run.execs = n;
        }
        if let Some(n) = field(line, "stat::average_exec_per_sec:") {
            run.execs_per_sec = n;
        }
    }
    run
}

/// `cargo xtask fuzz`: build, then run `target` (or every target) for
/// `time` each; fails when any run crashed.
pub fn run(ws: &Path, target: Option<&str>, time: Duration) -> Result<Vec<FuzzRun>> {
    let targets: Vec<&str> = match target {
        None => TARGETS.to_vec(),
        Some(t) if TARGETS.contains(&t) => vec![t],
        Some(t) => bail!("no fuzz target {t:?} (targets: {})", TARGETS.join(", ")),
    };
    build(ws)?;
    let mut runs = Vec::new();
    for t in targets {
        eprintln!("==> fuzz {t} for {}", fmt_duration(time));
        let r = run_one(ws, t, time)?;
        println!("{r}");
        runs.push(r);
    }
    Ok(runs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats_are_parsed_from_libfuzzer_output() {
        let log = "INFO: Seed: 1\n#2\tINITED cov: 10 ft: 11 corp: 1/1b exec/s: 0 rss: 30Mb\n\
                   #805080\tDONE   cov: 63 ft: 64 corp: 4/113b lim: 4096 exec/s: 134180 rss: 128Mb\n\
                   Done 805080 runs in 6 second(s)\n\
                   stat::number_of_executed_units: 805080\nstat::average_exec_per_sec:     134180\n";
        let r = parse_stats("abi_codec", log);
        assert_eq!((r.execs, r.execs_per_sec), (805080, 134180));
        assert_eq!((r.cov, r.ft, r.corpus), (63, 64, 4));
    }
}
