//! libpktcrc across fork(), on the host: python3 keeps a thread in
//! zlib.crc32 (a device call, which takes a while on the mock device)
//! while the main thread forks; every child's own crc32 calls must finish,
//! on the device, with the right values. A child that inherited the lock
//! held by its parent's thread would wait forever (its alarm kills it).
//!
//! The device is provider/tests/mockdev.c (libpktslab's client API over a
//! software device: OP_CRC32, every call delayed); the script is
//! userlib/tests/fork_children.py, shared with the heap's fork tests.
//! Skipped with a note without python3 or a C compiler.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// libpktcrc.so of this build (`cargo test` leaves it in `deps/`).
fn libpktcrc() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let deps = exe.parent().unwrap();
    [deps.join("libpktcrc.so"), deps.join("../libpktcrc.so")]
        .into_iter()
        .find(|p| p.is_file())
        .expect("libpktcrc.so is not built next to the test (cargo test -p pktcrc builds it)")
}

/// Builds the mock device; `None` without cc or OpenSSL headers.
fn mockdev() -> Option<PathBuf> {
    let out = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("pktcrc-mockdev.so");
    let src = concat!(env!("CARGO_MANIFEST_DIR"), "/../provider/tests/mockdev.c");
    let ok = Command::new("cc")
        .args(["-O1", "-shared", "-fPIC", "-o"])
        .arg(&out)
        .arg(src)
        .args(["-lcrypto", "-lpthread"])
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        eprintln!("skipped: cannot build mockdev.so (apt-get install gcc libssl-dev)");
    }
    ok.then_some(out)
}

/// Debian's python3 if there is one (a version manager's shim runs other
/// programs, each with its own report).
fn python() -> Option<&'static str> {
    let p = ["/usr/bin/python3", "python3"].into_iter().find(|p| {
        Command::new(p)
            .arg("-c")
            .arg("import zlib")
            .output()
            .is_ok_and(|o| o.status.success())
    });
    if p.is_none() {
        eprintln!("skipped: no python3 with zlib");
    }
    p
}

/// Runs `cmd`, killing it after `limit`; (status code, stdout, stderr).
fn run_with_limit(mut cmd: Command, limit: Duration) -> (Option<i32>, String, String) {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn python3");
    let end = Instant::now() + limit;
    while child.try_wait().unwrap().is_none() && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let o = child.wait_with_output().unwrap();
    (
        o.status.code(),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

#[test]
fn children_forked_during_a_device_crc_call_make_their_own() {
    let (Some(py), Some(mock)) = (python(), mockdev()) else {
        return;
    };
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../userlib/tests/fork_children.py");
    let script = script.canonicalize().unwrap_or(script);
    let preload = format!("{} {}", mock.display(), libpktcrc().display());
    let mut cmd = Command::new(py);
    cmd.arg(&script)
        .args(["12", "crc"])
        .env("LD_PRELOAD", preload)
        .env("MOCK_PIN", "all")
        .env("MOCK_DELAY_US", "3000")
        .env("PKTCRC_STATS", "1");
    let (code, out, err) = run_with_limit(cmd, Duration::from_secs(120));
    let children: Vec<&str> = out.lines().filter(|l| l.starts_with("child ")).collect();
    for c in &children {
        assert!(
            c.ends_with(" 0"),
            "a child forked during a device crc32 call failed ({c}; -14: it hung until its alarm):\n{out}\n{err}"
        );
    }
    assert_eq!(
        children.len(),
        12,
        "not every child was reaped:\n{out}\n{err}"
    );
    assert_eq!(code, Some(0), "python3 failed:\n{out}\n{err}");
    assert!(
        out.contains("crc32 in the parent's thread: right"),
        "{out}\n{err}"
    );
    // The parent and the child that exits normally report their own
    // calls: all on the device, none in software, no errors.
    let reports: Vec<&str> = err.lines().filter(|l| l.starts_with("pktcrc: ")).collect();
    assert_eq!(reports.len(), 2, "{err}");
    for r in reports {
        let on_device: u64 = r
            .split_whitespace()
            .nth(1)
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        assert!(on_device > 0, "no crc32 call on the device: {r}");
        assert!(
            r.contains(", 0 in software") && r.ends_with(" 0 device errors"),
            "{r}"
        );
    }
}
