//! The socket and the process around the device: a frontend vanishing
//! mid-traffic, `--once`, socket permissions and stale sockets, signals,
//! and command-line errors.

mod support;

use std::time::Duration;

use pktaccel_abi::*;
use pktaccel_testvectors::vectors;
use support::{Daemon, Guest, GuestOpts, gcm_header, hdr, ok, still_serves};

#[test]
fn frontend_vanishing_mid_traffic_then_next_connection_is_served() {
    let d = Daemon::spawn(&["--queues", "2"]);
    {
        let mut g = Guest::connect(
            &d.path,
            GuestOpts {
                queues: 2,
                ..Default::default()
            },
        );
        let a = g.alloc(1 << 20);
        // Fill both rings with large requests and leave without waiting.
        for q in 0..2 {
            while g.queues[q].free_descs() >= 3 {
                g.submit(q, &hdr(OP_CRC32), &[(a, 1 << 20)], &[]);
            }
            g.kick(q);
        }
    } // frontend, memory and eventfds dropped here, mid-traffic
    d.wait_for_log("frontend connection ended", 0);
    d.wait_for_log("waiting for a vhost-user frontend", 1);
    let mut g = Guest::connect(
        &d.path,
        GuestOpts {
            queues: 2,
            ..Default::default()
        },
    );
    let c = g.alloc_with(vectors::CHECK_INPUT);
    for q in 0..2 {
        assert_eq!(
            ok(g.call(q, &hdr(OP_CRC32C), &[(c, 9)], &[]).0).result,
            u64::from(vectors::CRC32C_CHECK)
        );
    }
    // Key slots do not survive the reconnection (a device reset).
    let st = g
        .call(
            0,
            &gcm_header(OP_AES_GCM_SEAL, 0, &[0; 12], 0),
            &[(c, 9)],
            &[(c, 25)],
        )
        .0;
    assert_eq!(st.status, STATUS_NO_KEY);
    drop(g);
    assert!(d.stop().success());
}

#[test]
fn once_exits_cleanly_when_the_frontend_leaves_and_removes_the_socket() {
    let mut d = Daemon::spawn(&["--once"]);
    // A liveness probe (connect and leave) does not end a --once daemon.
    drop(std::os::unix::net::UnixStream::connect(&d.path).unwrap());
    d.wait_for_log("connection closed without a vhost-user message", 0);
    let mut g = Guest::connect(&d.path, GuestOpts::default());
    still_serves(&mut g, 0);
    drop(g);
    let st = d
        .wait_exit(Duration::from_secs(10))
        .expect("--once daemon kept running");
    assert!(st.success(), "{st:?}; log:\n{}", d.log());
    assert!(!d.path.exists(), "socket left behind");
    assert!(
        d.log().contains("op nop"),
        "exit stats missing:\n{}",
        d.log()
    );
}

#[test]
fn socket_is_private_live_one_refused_stale_one_replaced() {
    use std::os::unix::fs::PermissionsExt;
    let d = Daemon::spawn(&[]);
    let mode = std::fs::metadata(&d.path).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    // A second daemon on the live socket fails with one clear line.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_pktaccel-device"))
        .arg("--socket")
        .arg(&d.path)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("another pktaccel-device is serving"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    assert!(d.stop().success());

    // A stale socket (bound, nobody listening) is replaced.
    let dir = std::env::temp_dir().join(format!("pktaccel-stale-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("dev.sock");
    let _ = std::fs::remove_file(&path);
    drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
    let d2 = Daemon::spawn_at(&path, &[], dir);
    assert!(d2.log().contains("replacing stale socket"));
    let mut g = Guest::connect(&path, GuestOpts::default());
    still_serves(&mut g, 0);
    drop(g);
    assert!(d2.stop().success());
}

#[test]
fn sigint_and_sigterm_shut_down_cleanly_with_stats() {
    for sig in [libc::SIGINT, libc::SIGTERM] {
        let mut d = Daemon::spawn(&[]);
        let mut g = Guest::connect(&d.path, GuestOpts::default());
        still_serves(&mut g, 0);
        d.signal(sig);
        let st = d
            .wait_exit(Duration::from_secs(10))
            .expect("no exit on signal");
        assert!(st.success(), "{st:?}");
        let log = d.log();
        assert!(log.contains("shutting down"), "{log}");
        assert_eq!(support::parse_stats(&log)["op.nop.requests"], 1);
        assert!(!d.path.exists());
        drop(g);
    }
}

#[test]
fn bad_command_lines_fail_with_one_line() {
    for args in [
        &["--socket", "/tmp/x.sock", "--queues", "0"][..],
        &["--socket", "/tmp/x.sock", "--queue-size", "100"],
        &["--socket", "/tmp/x.sock", "--ops", "md5"],
        &["--socket", "/nonexistent-dir/x.sock"],
    ] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_pktaccel-device"))
            .args(args)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(err.trim().lines().count(), 1, "{args:?}: {err}");
        assert!(err.starts_with("pktaccel-device: error:"), "{err}");
    }
}
