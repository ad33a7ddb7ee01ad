//! Packet workloads and unmodified programs in the guest (issue 6), short
//! enough for TCG and the KASAN kernel:
//!
//! - known answers from the standards through the device, zero-copy and
//!   copy mode: RFC 1071, the CRC-32C and CRC-32 check values, Microsoft's
//!   Toeplitz RSS vectors, the GCM specification's AES-256 cases;
//! - `pktctl` on every op and its errors by name; `pktbench --quick`
//!   (zero bytes copied in zero-copy mode, non-zero in copy mode);
//! - sqlite3, python3 and pigz, Debian's own binaries, under
//!   `LD_PRELOAD=libpktslab.so` on uncached slabs: output identical to a
//!   plain run, pinned-allocation statistics printed;
//! - pigz and python3 with `libpktcrc.so` as well: zlib's crc32() runs on
//!   the device over the programs' own buffers, the driver's request and
//!   zero-copy byte counters rise, the output does not change.

mod kat;
mod programs;
mod tools;

use std::process::{Command, Output, Stdio};

use super::preload::PRELOAD;
use crate::harness::Test;
use kat::*;
use programs::*;
use tools::*;

pub(super) fn tests() -> Vec<Test> {
    tests![
        "workloads":
        kat_rfc1071_checksum,
        kat_crc_check_values,
        kat_toeplitz_microsoft,
        kat_gcm_specification,
        pktctl_every_op,
        pktctl_errors_by_name,
        pktbench_quick_zero_copy_vs_copy,
        pktbench_pcap_traffic,
        pktbench_bad_input,
        sqlite3_on_pinned_slabs,
        python3_on_pinned_slabs,
        pigz_on_pinned_slabs,
        pigz_crc32_on_device_zero_copy,
        python3_zlib_crc32_on_device,
        python3_zlib_crc32_across_fork,
    ]
}

const PRELOAD_CRC: &str = "/usr/lib/libpktslab.so /usr/lib/libpktcrc.so";

fn run(
    prog: &str,
    args: &[&str],
    env: &[(&str, &str)],
    stdin: Option<&[u8]>,
) -> Result<Output, String> {
    let mut c = Command::new(prog);
    c.args(args)
        .env_remove("LD_PRELOAD")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        c.env(k, v);
    }
    c.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    });
    let mut child = c.spawn().map_err(|e| format!("cannot run {prog}: {e}"))?;
    if let Some(data) = stdin {
        use std::io::Write;
        let mut si = child.stdin.take().ok_or("no stdin")?;
        si.write_all(data)
            .map_err(|e| format!("{prog}: writing stdin: {e}"))?;
    }
    child.wait_with_output().map_err(|e| format!("{prog}: {e}"))
}

fn write_tmp(name: &str, data: &[u8]) -> Result<String, String> {
    let p = format!("/tmp/pktaccel-wl-{}-{name}", std::process::id());
    std::fs::write(&p, data).map_err(|e| format!("{p}: {e}"))?;
    Ok(p)
}
