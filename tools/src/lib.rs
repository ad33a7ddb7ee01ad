//! The pktaccel user tools, `pktctl` and `pktbench` (in `src/bin/`), and
//! what they are thin command-line layers over: the device wrapper,
//! traffic generation and capture reading, software references (from
//! `pktaccel-testvectors`), the pipelines `pktbench` measures and their
//! report. The guest suite (`pktaccel-tests`) uses these modules too.

use std::process::ExitCode;

pub mod dev;
pub mod frames;
pub mod pcap;
pub mod pipeline;
pub mod report;

/// The software references and known answers live in their own crate, so
/// that the device's host tests use the very same ones.
pub use pktaccel_testvectors::{soft, vectors};

/// Replaces the default panic message (with its backtrace hint) by one
/// line: the tools promise a clear message and never a panic trace.
///
/// Also restores the default SIGPIPE action, which Rust's runtime ignores:
/// `pktctl info | head -1` should end quietly, as C tools do, instead of
/// failing a print on EPIPE.
pub fn one_line_panics(tool: &'static str) {
    // SAFETY: called first thing in main, before any thread exists; setting
    // a signal disposition to SIG_DFL has no other precondition.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    std::panic::set_hook(Box::new(move |info| {
        let msg = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| (*s).to_string())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown".into());
        eprintln!("{tool}: internal error: {msg}");
    }));
}

/// A tool's `main`: one-line panics, then `run`, whose error is printed as
/// `TOOL: error: ...` with its context, exit status 1.
pub fn tool_main(tool: &'static str, run: impl FnOnce() -> anyhow::Result<()>) -> ExitCode {
    one_line_panics(tool);
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{tool}: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
