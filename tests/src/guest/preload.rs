//! What the guest tests of programs under `LD_PRELOAD=libpktslab.so`
//! share: the library's path and the check of a preloaded run.

use std::process::Output;

use crate::ensure;

/// libpktslab in the guest.
pub(super) const PRELOAD: &str = "/usr/lib/libpktslab.so";

/// A preloaded run of `name` must have succeeded with libpktslab on the
/// device backend. Returns its stderr, where the library's report is.
pub(super) fn preloaded_stderr(name: &str, pre: &Output) -> Result<String, String> {
    let err = String::from_utf8_lossy(&pre.stderr).into_owned();
    ensure!(
        pre.status.success(),
        "{name}: preloaded run failed ({}): {err}",
        pre.status
    );
    ensure!(
        err.contains("pktslab: backend device"),
        "{name}: no device-backed pktslab report: {err}"
    );
    Ok(err)
}
