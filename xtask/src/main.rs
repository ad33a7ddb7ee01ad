//! `cargo xtask`: everything a pktaccel user runs, from provisioning a fresh
//! machine to booting the guest and running the suites.
//!
//! Heavy artifacts (Debian packages, the kernel build, the QEMU root) live in
//! a cache outside the clone (see [`cache`]), keyed by their inputs, so a
//! second clone or a repeat run reuses them.

mod bench;
mod bench_chart;
mod bench_guest;
mod bench_host;
mod bench_openssl;
mod bench_programs;
mod cache;
mod cargo_build;
mod cli;
mod deps;
mod e2e;
mod fuzz;
mod guest_log;
mod initramfs;
mod kernel;
mod kmod;
mod qemu;
mod rustsrc;
mod step;
mod testcmd;
mod vm;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    match cli::dispatch(cli) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}
