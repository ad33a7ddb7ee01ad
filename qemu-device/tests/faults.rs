//! Fault injection against the real daemon over a real socket: `--fault`
//! specs at start, the control socket at run time, and what the frontend
//! sees for each fault kind. Also the fuzz finds that concern the daemon's
//! vhost-user path.

mod support;

use std::io::{BufRead, BufReader, Write};
use std::os::fd::{AsRawFd, FromRawFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

use pktaccel_abi::*;
use support::{Daemon, Guest, GuestOpts, hdr};
use vhost::vhost_user::Frontend;
use vhost::{VhostBackend, VhostUserMemoryRegionInfo, VringConfigData};

fn ctl_path(d: &Daemon) -> PathBuf {
    let mut p = d.path.as_os_str().to_owned();
    p.push(".ctl");
    PathBuf::from(p)
}

/// Sends one control command; returns the answer lines up to and
/// including the final `ok`/`error:` line.
fn control(path: &Path, cmd: &str) -> Vec<String> {
    let s = UnixStream::connect(path).expect("connect to the control socket");
    (&s).write_all(format!("{cmd}\n").as_bytes()).unwrap();
    let mut out = Vec::new();
    for line in BufReader::new(&s).lines() {
        let line = line.unwrap();
        let last = line.starts_with("ok") || line.starts_with("error:");
        out.push(line);
        if last {
            break;
        }
    }
    out
}

#[test]
fn bad_fault_spec_at_start_is_one_line_and_exit_1() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_pktaccel-device"))
        .args([
            "--socket",
            "/nonexistent-dir/x.sock",
            "--fault",
            "drop",
            "--fault",
        ])
        .arg("status=sad,op=csum")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.starts_with(
            "pktaccel-device: error: bad fault spec \"status=sad,op=csum\": unknown status \"sad\""
        ),
        "{err}"
    );
}

#[test]
fn control_socket_lists_adds_and_refuses_bad_commands_keeping_faults() {
    let d = Daemon::spawn(&["--fault", "lose-irq,queue=1"]);
    let ctl = ctl_path(&d);
    assert_eq!(
        control(&ctl, "list"),
        ["1 lose-irq,queue=1 fired=0", "ok 1 faults"]
    );
    let e = control(&ctl, "add delay=forever");
    assert_eq!(e.len(), 1);
    assert!(
        e[0].starts_with("error: bad fault spec \"delay=forever\""),
        "{e:?}"
    );
    assert_eq!(
        control(&ctl, "bogus"),
        ["error: unknown command \"bogus\" (commands: list, add SPEC, del ID, clear, help)"]
    );
    assert_eq!(control(&ctl, "add drop,op=csum"), ["ok 2"]);
    assert_eq!(
        control(&ctl, "list"),
        [
            "1 lose-irq,queue=1 fired=0",
            "2 drop,op=csum fired=0",
            "ok 2 faults"
        ]
    );
    assert_eq!(control(&ctl, "clear"), ["ok 2 removed"]);
    drop(d);
}

/// A frontend that maps a region longer than its file must not SIGBUS the
/// daemon (fuzz find: `vhost_user` target, SET_VRING_ADDR read the used
/// index through such a mapping). The table is refused, that connection
/// ends, the next one is served.
#[test]
fn memory_region_past_its_file_is_refused_and_daemon_survives() {
    let d = Daemon::spawn(&[]);
    {
        let front = Frontend::connect(&d.path, 1).expect("connect");
        front.set_owner().unwrap();
        let features = front.get_features().unwrap();
        front.set_features(features).unwrap();
        // SAFETY: memfd_create with a NUL-terminated name; checked below.
        let fd = unsafe { libc::memfd_create(c"short".as_ptr(), libc::MFD_CLOEXEC) };
        assert!(fd >= 0);
        // SAFETY: a fresh descriptor nothing else owns.
        let file = unsafe { std::fs::File::from_raw_fd(fd) };
        file.set_len(0x1000).unwrap();
        let region = VhostUserMemoryRegionInfo {
            guest_phys_addr: 0,
            memory_size: 0x10_0000,
            userspace_addr: 0x7000_0000_0000,
            mmap_offset: 0,
            mmap_handle: file.as_raw_fd(),
        };
        let _ = front.set_mem_table(&[region]);
        let _ = front.set_vring_num(0, 8);
        let far = 0x7000_0000_0000 + 0x8_0000;
        let _ = front.set_vring_addr(
            0,
            &VringConfigData {
                queue_max_size: 8,
                queue_size: 8,
                flags: 0,
                desc_table_addr: far,
                used_ring_addr: far + 0x1000,
                avail_ring_addr: far + 0x800,
                log_addr: None,
            },
        );
    }
    d.wait_for_log("memory table refused", 0);
    d.wait_for_log("waiting for a vhost-user frontend", 1);
    let mut g = Guest::connect(&d.path, GuestOpts::default());
    let st = g.call(0, &hdr(OP_NOP), &[], &[]).0;
    assert_eq!(st.status, STATUS_OK);
    drop(g);
    assert!(d.stop().success());
}
