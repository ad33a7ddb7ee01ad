//! What the integration tests share: a synthetic pool for the client
//! tests, the SIGABRT check for the abort tests.
#![allow(dead_code)] // each test binary uses only some of these

use std::os::unix::process::ExitStatusExt;
use std::process::Output;

use pktslab::{BackendChoice, Config, Pool};

/// A host pool with synthetic physical addresses (contiguous in 16 KiB
/// chunks with gaps, so segment splitting happens on any host).
pub fn synthetic_pool(arena_size: usize) -> Pool {
    Pool::new(Config {
        backend: BackendChoice::Host,
        force_synthetic: true,
        arena_size,
        ..Default::default()
    })
    .unwrap()
}

/// Asserts that the process behind `out` died of SIGABRT (`what` names the
/// case in the failure message) and returns its stderr.
pub fn aborted_stderr(out: &Output, what: &str) -> String {
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(
        out.status.signal(),
        Some(libc::SIGABRT),
        "{what}: {:?}\n{err}",
        out.status
    );
    err
}
