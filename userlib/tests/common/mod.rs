//! Helpers shared by the integration tests that check aborts.

use std::os::unix::process::ExitStatusExt;
use std::process::Output;

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
