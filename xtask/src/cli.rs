//! Command-line interface of `cargo xtask`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Result, bail};
use clap::{Parser, Subcommand};

use pktaccel_abi::console;

use crate::cache::Cache;
use crate::initramfs::Mode;
use crate::kernel::Variant;
use crate::vm::{self, ConsoleSink, VmArgs};
use crate::{bench, e2e, fuzz, testcmd};

/// pktaccel's developer tasks: provision, build, boot the guest, test.
#[derive(Parser, Debug)]
#[command(name = "cargo xtask", bin_name = "cargo xtask", version, about)]
pub struct Cli {
    /// Cache for provisioned artifacts (kernel build, QEMU root, packages).
    /// Default: $PKTACCEL_CACHE, else $XDG_CACHE_HOME/pktaccel, else
    /// ~/.cache/pktaccel.
    #[arg(long, global = true, value_name = "DIR")]
    cache_dir: Option<PathBuf>,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Provision and build everything without booting.
    Build {
        /// Build the KASAN/lockdep debug kernel instead of the plain one.
        #[arg(long)]
        debug_kernel: bool,
        /// Use this qemu-system-x86_64 (≥ 10.2).
        #[arg(long, value_name = "PATH")]
        qemu: Option<PathBuf>,
    },
    /// Boot the guest with the device attached: a shell on the console, or
    /// run one command with --exec.
    RunVm {
        /// Run CMD (a shell command line) in the guest, print its output and
        /// exit with its status. Works without a terminal.
        #[arg(long, value_name = "CMD")]
        exec: Option<String>,
        /// Boot the KASAN/lockdep debug kernel.
        #[arg(long)]
        debug_kernel: bool,
        /// Give up after this many seconds (0 = never; --exec only).
        #[arg(long, default_value_t = 600)]
        timeout: u64,
        #[command(flatten)]
        vm: VmArgs,
    },
    /// Boot the guest and run the guest test suite.
    TestE2e {
        /// Only tests whose name contains this.
        #[arg(long)]
        filter: Option<String>,
        /// Use the plain kernel instead of the KASAN/lockdep debug kernel.
        #[arg(long)]
        plain_kernel: bool,
        /// Overall timeout in seconds.
        #[arg(long, default_value_t = 900)]
        timeout: u64,
        #[command(flatten)]
        vm: VmArgs,
    },
    /// Benchmarks side by side: the device and the allocator on the host,
    /// pktbench in the guest; writes target/bench/report.md with SVG plots.
    Bench {
        /// Only pktbench in the guest.
        #[arg(long, conflicts_with = "host_only")]
        guest_only: bool,
        /// Only the real programs (sort, xz, sqlite3, python3, git, ls, a
        /// shell loop) under glibc, jemalloc, mimalloc and pktslab.
        #[arg(long, conflicts_with_all = ["guest_only", "host_only"])]
        programs_only: bool,
        /// Only the host benchmarks (no boot).
        #[arg(long)]
        host_only: bool,
        /// Device time per pktbench measurement, in milliseconds.
        #[arg(long, default_value_t = 800)]
        budget_ms: u64,
        /// Guest timeout in seconds.
        #[arg(long, default_value_t = 900)]
        timeout: u64,
        /// Time limit of each host benchmark in seconds, its build included
        /// (a benchmark over it is stopped and its partial output kept).
        #[arg(long, default_value_t = 300)]
        host_limit: u64,
        #[command(flatten)]
        vm: VmArgs,
    },
    /// Fuzz with cargo-fuzz (libFuzzer + AddressSanitizer): every target,
    /// or TARGET, for --time seconds each (fuzz/README.md).
    Fuzz {
        /// One of abi_codec, pcap_reader, request_ring, vhost_user.
        target: Option<String>,
        /// Seconds per target.
        #[arg(long, default_value_t = 60)]
        time: u64,
    },
    /// The full test: rustfmt check, clippy -D warnings, cargo test, each
    /// fuzz target for 10 s, and the guest suite. This is what CI runs.
    Test {
        /// Skip the guest suite (host checks only).
        #[arg(long)]
        no_e2e: bool,
        /// Overall timeout of the guest suite in seconds.
        #[arg(long, default_value_t = 900)]
        timeout: u64,
        #[command(flatten)]
        vm: VmArgs,
    },
}

struct ExecSink {
    ready: bool,
}

impl ConsoleSink for ExecSink {
    fn line(&mut self, line: &str) {
        if line.starts_with(console::READY) {
            self.ready = true;
        } else if let Some(w) = console::after(line, console::WARN) {
            eprintln!("guest: {w}");
        } else if line.starts_with(console::EXIT) {
            self.ready = false;
        } else if console::is_marker_line(line) {
        } else if self.ready {
            println!("{line}");
        }
    }
}

/// Runs the parsed command.
pub fn dispatch(cli: Cli) -> Result<ExitCode> {
    let cache = Cache::locate(cli.cache_dir)?;
    vm::install_interrupt_handler();
    match cli.cmd {
        Cmd::Build { debug_kernel, qemu } => {
            vm::prepare(&cache, variant(debug_kernel), qemu)?;
            Ok(ExitCode::SUCCESS)
        }
        Cmd::RunVm {
            exec,
            debug_kernel,
            timeout,
            vm: args,
        } => run_vm(&cache, exec, debug_kernel, timeout, &args),
        Cmd::TestE2e {
            filter,
            plain_kernel,
            timeout,
            vm: args,
        } => {
            let p = vm::prepare(&cache, variant(!plain_kernel), args.qemu.clone())?;
            let s = e2e::run(&p, &args, filter, Duration::from_secs(timeout))?;
            Ok(if s.failed == 0 {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        Cmd::Bench {
            guest_only,
            programs_only,
            host_only,
            budget_ms,
            timeout,
            host_limit,
            vm: args,
        } => {
            let opts = bench::BenchOpts {
                guest_only,
                host_only,
                budget_ms,
                timeout: Duration::from_secs(timeout),
                host_limit: Duration::from_secs(host_limit),
                programs_only,
            };
            let report = bench::run(&cache, &args, &opts)?;
            println!("report: {}", report.display());
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Fuzz { target, time } => {
            let runs = fuzz::run(
                &vm::workspace_root(),
                target.as_deref(),
                Duration::from_secs(time),
            )?;
            let crashed = runs.iter().filter(|r| r.crash.is_some()).count();
            Ok(if crashed == 0 {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        Cmd::Test {
            no_e2e,
            timeout,
            vm: args,
        } => test_all(&cache, no_e2e, timeout, &args),
    }
}

/// `run-vm`: a shell on the guest, or one command whose status is ours.
fn run_vm(
    cache: &Cache,
    exec: Option<String>,
    debug_kernel: bool,
    timeout: u64,
    args: &VmArgs,
) -> Result<ExitCode> {
    let p = vm::prepare(cache, variant(debug_kernel), args.qemu.clone())?;
    let mode = match exec {
        Some(cmd) if cmd.trim().is_empty() => {
            bail!("--exec needs a command, e.g. --exec 'uname -r'")
        }
        Some(cmd) => Mode::Exec(cmd),
        None => Mode::Shell,
    };
    let t = (timeout > 0 && matches!(mode, Mode::Exec(_))).then(|| Duration::from_secs(timeout));
    let step = vm::boot_step(&p, args.accel);
    let mut sink = ExecSink { ready: false };
    let out = vm::boot(&p, args, &mode, t, &mut sink)?;
    let status = out.guest_status.unwrap_or(1);
    step.done(&format!(
        "guest exited with status {status}; console log {}",
        out.console_log.display()
    ));
    Ok(ExitCode::from(
        u8::try_from(status.clamp(0, 255)).unwrap_or(1),
    ))
}

/// `test`: every host stage, then (unless `no_e2e`) the kmod lints and the
/// guest suite; one total at the end.
fn test_all(cache: &Cache, no_e2e: bool, timeout: u64, args: &VmArgs) -> Result<ExitCode> {
    let ws = vm::workspace_root();
    let (mut passed, mut failed) = (0, 0);
    for stage in testcmd::STAGES {
        if testcmd::run_stage(&ws, stage)? {
            passed += 1;
        } else {
            failed += 1;
        }
    }
    if testcmd::fuzz_stage(&ws) {
        passed += 1;
    } else {
        failed += 1;
    }
    if !no_e2e {
        eprintln!("==> guest suite");
        let p = vm::prepare(cache, Variant::Debug, args.qemu.clone())?;
        if testcmd::kmod_lint_stage(&p) {
            passed += 1;
        } else {
            failed += 1;
        }
        let s = e2e::run(&p, args, None, Duration::from_secs(timeout))?;
        passed += s.passed;
        failed += s.failed;
    }
    println!("total: {passed} passed, {failed} failed");
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn variant(debug: bool) -> Variant {
    if debug {
        Variant::Debug
    } else {
        Variant::Plain
    }
}
