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

/// The fired counter of the fault whose spec is `spec`, from the daemon's
/// stats dump (SIGUSR1).
fn fired(d: &Daemon, spec: &str) -> u64 {
    d.stats();
    let log = d.log();
    let dump = &log[log.rfind("pktaccel-device stats:").unwrap()..];
    dump.lines()
        .find_map(|l| {
            let rest = l.trim().strip_prefix("fault ")?.strip_prefix(spec)?;
            rest.split_whitespace().nth(1)?.parse().ok()
        })
        .unwrap_or_else(|| panic!("no counter for fault {spec:?} in:\n{dump}"))
}

/// Polls queue `q` for `ms` milliseconds; returns what completed.
fn completions_within(g: &mut Guest, q: usize, ms: u64) -> Vec<(u16, u32)> {
    let end = std::time::Instant::now() + std::time::Duration::from_millis(ms);
    let mut out = Vec::new();
    while std::time::Instant::now() < end {
        g.poll_into(q, &mut out);
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    out
}

#[test]
fn status_fault_answers_its_op_and_queue_only_and_is_counted() {
    let spec = "status=no-key,op=csum,queue=1";
    let d = Daemon::spawn(&["--queues", "2", "--fault", spec]);
    let mut g = Guest::connect(
        &d.path,
        GuestOpts {
            queues: 2,
            ..Default::default()
        },
    );
    let a = g.alloc_with(b"abcdefgh");
    let (st, used) = g.call(1, &hdr(OP_CSUM), &[(a, 8)], &[]);
    assert_eq!(
        (st.status, st.len, st.result, used),
        (STATUS_NO_KEY, 0, 0, 16)
    );
    assert_eq!(g.call(0, &hdr(OP_CSUM), &[(a, 8)], &[]).0.status, STATUS_OK);
    assert_eq!(g.call(1, &hdr(OP_NOP), &[], &[]).0.status, STATUS_OK);
    assert_eq!(fired(&d, spec), 1);
    // Every error status of the ABI can be injected by name.
    let ctl = ctl_path(&d);
    control(&ctl, "clear");
    for s in 1..STATUS_COUNT {
        let id = control(&ctl, &format!("add status={},count=1", status_name(s)));
        assert!(id[0].starts_with("ok "), "{id:?}");
        assert_eq!(g.call(0, &hdr(OP_NOP), &[], &[]).0.status, s);
    }
    assert_eq!(g.call(0, &hdr(OP_NOP), &[], &[]).0.status, STATUS_OK);
}

#[test]
fn dropped_completion_never_comes_and_traffic_resumes_once_lifted() {
    let d = Daemon::spawn(&[]);
    let ctl = ctl_path(&d);
    let mut g = Guest::connect(&d.path, GuestOpts::default());
    assert_eq!(control(&ctl, "add drop"), ["ok 1"]);
    g.submit(0, &hdr(OP_NOP), &[], &[]);
    g.kick(0);
    assert!(completions_within(&mut g, 0, 300).is_empty());
    assert_eq!(fired(&d, "drop"), 1);
    assert_eq!(control(&ctl, "del 1"), ["ok"]);
    assert_eq!(g.call(0, &hdr(OP_NOP), &[], &[]).0.status, STATUS_OK);
}

#[test]
fn wrong_used_length_and_delay_are_seen_by_the_driver() {
    let d = Daemon::spawn(&[
        "--fault",
        "used-len=7,count=1",
        "--fault",
        "delay=150ms,op=crc32c",
    ]);
    let mut g = Guest::connect(&d.path, GuestOpts::default());
    assert_eq!(g.call(0, &hdr(OP_NOP), &[], &[]).1, 7);
    assert_eq!(g.call(0, &hdr(OP_NOP), &[], &[]).1, 16);
    let a = g.alloc_with(b"123456789");
    let t = std::time::Instant::now();
    let st = g.call(0, &hdr(OP_CRC32C), &[(a, 9)], &[]).0;
    assert!(
        t.elapsed() >= std::time::Duration::from_millis(150),
        "{:?}",
        t.elapsed()
    );
    assert_eq!(st.result, 0xE306_9283, "a delayed answer is still right");
}

#[test]
fn lost_and_spurious_interrupts() {
    let d = Daemon::spawn(&["--fault", "lose-irq,count=1"]);
    let ctl = ctl_path(&d);
    let mut g = Guest::connect(&d.path, GuestOpts::default());
    // Lost: the completion is on the used ring, the call eventfd is silent.
    g.submit(0, &hdr(OP_NOP), &[], &[]);
    g.kick(0);
    assert_eq!(g.wait(0, 1).len(), 1);
    std::thread::sleep(std::time::Duration::from_millis(50));
    assert_eq!(g.try_call(0), None, "interrupt was not lost");
    g.submit(0, &hdr(OP_NOP), &[], &[]);
    g.kick(0);
    assert_eq!(g.wait(0, 1).len(), 1);
    assert!(g.wait_call(0) >= 1, "the next interrupt is sent");
    // Spurious: a kick with nothing new gets an interrupt with nothing new.
    assert_eq!(control(&ctl, "add spurious-irq,count=1"), ["ok 2"]);
    g.kick(0);
    assert!(g.wait_call(0) >= 1);
    assert!(
        g.poll(0).is_empty(),
        "a spurious interrupt completes nothing"
    );
    assert_eq!(fired(&d, "spurious-irq,count=1"), 1);
    assert_eq!(fired(&d, "lose-irq,count=1"), 1);
}

#[test]
fn reset_not_acknowledged_holds_the_ring_stop() {
    let d = Daemon::spawn(&["--fault", "no-reset-ack=1s"]);
    let mut g = Guest::connect(&d.path, GuestOpts::default());
    assert_eq!(g.call(0, &hdr(OP_NOP), &[], &[]).0.status, STATUS_OK);
    let t = std::time::Instant::now();
    let _ = g.front.get_vring_base(0);
    assert!(
        t.elapsed() >= std::time::Duration::from_secs(1),
        "{:?}",
        t.elapsed()
    );
    assert_eq!(fired(&d, "no-reset-ack=1s"), 1);
}

#[test]
fn death_after_n_requests_exits_with_one_line() {
    let mut d = Daemon::spawn(&["--fault", "die-after=2"]);
    let mut g = Guest::connect(&d.path, GuestOpts::default());
    for _ in 0..2 {
        assert_eq!(g.call(0, &hdr(OP_NOP), &[], &[]).0.status, STATUS_OK);
    }
    g.submit(0, &hdr(OP_NOP), &[], &[]);
    g.kick(0);
    let st = d
        .wait_exit(std::time::Duration::from_secs(10))
        .expect("the device did not die");
    assert_eq!(st.code(), Some(3));
    assert!(
        d.log()
            .contains("pktaccel-device: fault \"die-after=2\" fired: exiting as a dead device"),
        "{}",
        d.log()
    );
    assert!(g.poll(0).is_empty(), "the fatal request was completed");
}

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count()
}

/// Connections come and go for the daemon's whole life: each one's
/// eventfds and mappings must go with it (fuzz find: the `vhost_user`
/// target ran out of file descriptors).
#[test]
fn reconnections_do_not_leak_file_descriptors() {
    let d = Daemon::spawn(&["--queues", "2"]);
    let mut served = 0;
    let mut cycle = |n: usize| {
        for _ in 0..n {
            let mut g = Guest::connect(
                &d.path,
                GuestOpts {
                    queues: 2,
                    ..Default::default()
                },
            );
            assert_eq!(g.call(0, &hdr(OP_NOP), &[], &[]).0.status, STATUS_OK);
            drop(g);
            served += 1;
            d.wait_for_log("waiting for a vhost-user frontend", served);
        }
    };
    cycle(3);
    let before = open_fds(d.pid());
    cycle(20);
    let after = open_fds(d.pid());
    assert!(
        after <= before + 2,
        "{before} fds before 20 connections, {after} after"
    );
}

#[test]
fn false_status_length_reaches_the_driver_with_the_right_output() {
    let d = Daemon::spawn(&["--fault", "status-len=4096,op=copy,count=1"]);
    let mut g = Guest::connect(&d.path, GuestOpts::default());
    let a = g.alloc_with(b"123456789");
    let o = g.alloc(9);
    let (st, used) = g.call(0, &hdr(OP_COPY), &[(a, 9)], &[(o, 9)]);
    assert_eq!((st.status, st.len, used), (STATUS_OK, 4096, 9 + 16));
    assert_eq!(g.read(o, 9), b"123456789", "only the length lies");
    let (st, _) = g.call(0, &hdr(OP_COPY), &[(a, 9)], &[(o, 9)]);
    assert_eq!((st.status, st.len), (STATUS_OK, 9), "count=1");
    assert_eq!(fired(&d, "status-len=4096,op=copy,count=1"), 1);
}

/// Each mode publishes one used element besides the real completion, with
/// used length 0: past the ring, the same head again, or half a ring away.
#[test]
fn bogus_used_ids_follow_the_real_completion() {
    let d = Daemon::spawn(&[]);
    let ctl = ctl_path(&d);
    let mut g = Guest::connect(&d.path, GuestOpts::default());
    let size = GuestOpts::default().queue_size;
    type Expect = fn(u16, u16) -> u16;
    let modes: [(&str, Expect); 3] = [
        ("out-of-range", |h, s| s + h),
        ("duplicate", |h, _| h),
        ("not-in-flight", |h, s| (h + s / 2) % s),
    ];
    for (mode, bogus) in modes {
        let add = control(&ctl, &format!("add bogus-used={mode},count=1"));
        assert!(add[0].starts_with("ok "), "{add:?}");
        let head = g.submit(0, &hdr(OP_NOP), &[], &[]);
        g.kick(0);
        assert_eq!(g.wait(0, 2), [(head, 16), (bogus(head, size), 0)], "{mode}");
        assert_eq!(g.status(0, head).status, STATUS_OK);
        assert_eq!(fired(&d, &format!("bogus-used={mode},count=1")), 1);
    }
    // Lifted (count=1): one completion per request again.
    let head = g.submit(0, &hdr(OP_NOP), &[], &[]);
    g.kick(0);
    assert_eq!(completions_within(&mut g, 0, 100), [(head, 16)]);
    // With `drop`, the bogus element comes instead of the real one.
    control(&ctl, "add drop,count=1");
    control(&ctl, "add bogus-used=out-of-range,count=1");
    let head = g.submit(0, &hdr(OP_NOP), &[], &[]);
    g.kick(0);
    assert_eq!(completions_within(&mut g, 0, 300), [(size + head, 0)]);
}
