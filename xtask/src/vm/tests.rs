//! Boots with stand-ins for QEMU and the device (shell scripts).

use super::*;
use std::os::unix::fs::PermissionsExt;

/// A boot with stand-ins for QEMU and the device: shell scripts that
/// record their pid, so the test can prove nothing survives.
struct Fake {
    dir: tempfile::TempDir,
    prepared: Prepared,
}

fn script(dir: &Path, name: &str, body: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(
        &p,
        format!(
            "#!/bin/sh\necho $$ > {}/{name}.pid\n{body}\n",
            dir.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    p
}

fn fake(device_body: &str, qemu_body: &str) -> Fake {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let device = script(
        d,
        "device",
        // The arguments are written before the socket appears: boot may
        // finish and kill the stand-in as soon as the socket exists.
        &format!(
            "echo \"$@\" > \"$(dirname \"$0\")/device.args\"\n\
             while [ \"$1\" != --socket ]; do shift; done\ntouch \"$2\"\n{device_body}"
        ),
    );
    let qemu = script(d, "qemu", qemu_body);
    let base = d.join("base.cpio");
    std::fs::write(&base, b"").unwrap();
    let kernel = kernel::Kernel {
        build_dir: d.to_path_buf(),
        bzimage: d.join("bzImage"),
        release: "7.3.4".into(),
        make_vars: vec![],
        path_env: Default::default(),
    };
    let prepared = Prepared {
        workspace: workspace_root(),
        kernel,
        initrd_base: base.clone(),
        initrd_programs: base,
        device,
        qemu: Qemu::from_program(qemu),
        variant: Variant::Plain,
    };
    Fake { dir, prepared }
}

fn args() -> VmArgs {
    VmArgs {
        accel: Accel::Tcg,
        mem: "64M".into(),
        cpus: 1,
        queues: 1,
        include: vec![],
        programs: false,
        keep: false,
        qemu: None,
        faults: vec![],
    }
}

struct Lines(Vec<String>);
impl ConsoleSink for Lines {
    fn line(&mut self, line: &str) {
        self.0.push(line.to_string());
    }
}

fn assert_all_gone(f: &Fake) {
    for name in ["device", "qemu"] {
        let Ok(pid) = std::fs::read_to_string(f.dir.path().join(format!("{name}.pid"))) else {
            continue;
        };
        let pid: libc::pid_t = pid.trim().parse().unwrap();
        // SAFETY: signal 0 only checks for existence; the pid is one our
        // stand-in wrote and we reaped, so at worst it names nothing.
        let alive = unsafe { libc::kill(pid, 0) } == 0;
        assert!(!alive, "{name} (pid {pid}) survived the run");
    }
}

fn boot_fake(f: &Fake, timeout: Option<Duration>) -> (Result<Outcome>, Vec<String>) {
    let mut sink = Lines(vec![]);
    let r = boot(
        &f.prepared,
        &args(),
        &Mode::Exec("true".into()),
        timeout,
        &mut sink,
    );
    (r, sink.0)
}

/// The error a boot that must fail ends with, with its causes.
fn boot_error(f: &Fake, timeout: Duration) -> String {
    format!("{:#}", boot_fake(f, Some(timeout)).0.err().unwrap())
}

#[test]
fn guest_status_and_output_come_back_and_nothing_survives() {
    let f = fake(
        "exec sleep 30",
        "echo PKTACCEL-READY\necho hello\necho PKTACCEL-EXIT 3",
    );
    let (r, lines) = boot_fake(&f, Some(Duration::from_secs(20)));
    let out = r.unwrap();
    assert_eq!(out.guest_status, Some(3));
    assert!(lines.contains(&"hello".to_string()));
    assert!(
        std::fs::read_to_string(&out.console_log)
            .unwrap()
            .contains("hello")
    );
    assert_all_gone(&f);
}

#[test]
fn faults_reach_the_device_and_guest_fault_cues_reach_its_control_socket() {
    let f = fake(
        "exec sleep 30",
        "echo PKTACCEL-READY\necho 'PKTACCEL-FAULT add drop'\necho PKTACCEL-EXIT 0",
    );
    let mut sink = Lines(vec![]);
    let a = VmArgs {
        faults: vec!["drop,queue=0".into(), "delay=1ms".into()],
        ..args()
    };
    let out = boot(
        &f.prepared,
        &a,
        &Mode::Exec("true".into()),
        Some(Duration::from_secs(20)),
        &mut sink,
    )
    .unwrap();
    let dev_args = std::fs::read_to_string(f.dir.path().join("device.args")).unwrap();
    assert!(
        dev_args.contains("--fault drop,queue=0 --fault delay=1ms"),
        "{dev_args}"
    );
    // The stand-in has no control socket: the attempt is logged.
    let log = std::fs::read_to_string(&out.console_log).unwrap();
    assert!(
        log.contains("[host] fault control: add drop -> cannot reach"),
        "{log}"
    );
    assert_all_gone(&f);
}

#[test]
fn qemu_exiting_early_is_an_error_with_its_log() {
    let f = fake(
        "exec sleep 30",
        "echo 'could not load kernel bzImage' >&2\nexit 1",
    );
    let err = boot_error(&f, Duration::from_secs(20));
    assert!(err.contains("QEMU exited"), "{err}");
    assert!(err.contains("could not load kernel"), "{err}");
    assert_all_gone(&f);
}

#[test]
fn a_hung_guest_hits_the_timeout_and_is_stopped() {
    let f = fake("exec sleep 30", "echo PKTACCEL-READY\nexec sleep 30");
    let err = boot_error(&f, Duration::from_millis(800));
    assert!(err.contains("did not finish within"), "{err}");
    assert_all_gone(&f);
}

#[test]
fn the_device_dying_mid_run_is_an_error_with_its_log() {
    let f = fake(
        "echo 'backend: guest memory table invalid' >&2\nsleep 0.3\nexit 3",
        "exec sleep 30",
    );
    let err = boot_error(&f, Duration::from_secs(20));
    assert!(err.contains("pktaccel-device died"), "{err}");
    assert!(err.contains("guest memory table invalid"), "{err}");
    assert_all_gone(&f);
}

#[test]
fn a_device_that_never_listens_is_an_error() {
    let f = fake("", "exec sleep 30");
    // The stand-in touches the socket then exits 0 at once: fine. One
    // that exits before creating it:
    let bad = script(
        f.dir.path(),
        "device2",
        "echo 'cannot bind: address in use' >&2\nexit 1",
    );
    let mut p = fake("", "exec sleep 30");
    p.prepared.device = bad;
    let err = format!(
        "{:#}",
        boot_fake(&p, Some(Duration::from_secs(20)))
            .0
            .err()
            .unwrap()
    );
    assert!(err.contains("before creating its socket"), "{err}");
    assert!(err.contains("address in use"), "{err}");
    assert_all_gone(&p);
    drop(f);
}

#[test]
fn stale_run_dirs_of_dead_owners_are_swept_live_ones_kept() {
    let tmp = tempfile::tempdir().unwrap();
    let dead = tmp.path().join(format!("{RUN_DIR_PREFIX}dead"));
    let live = tmp.path().join(format!("{RUN_DIR_PREFIX}live"));
    let other = tmp.path().join("unrelated");
    for d in [&dead, &live, &other] {
        std::fs::create_dir(d).unwrap();
    }
    // A pid that cannot exist (above pid_max's ceiling of 2^22).
    std::fs::write(dead.join(OWNER_FILE), "4194305").unwrap();
    std::fs::write(live.join(OWNER_FILE), std::process::id().to_string()).unwrap();
    sweep_stale_run_dirs(tmp.path());
    assert!(!dead.exists());
    assert!(live.exists());
    assert!(other.exists());
}

#[test]
fn includes_default_to_root_and_reject_relative_guest_paths() {
    let here = env!("CARGO_MANIFEST_DIR");
    let v = parse_includes(&[format!("{here}/Cargo.toml")]).unwrap();
    assert_eq!(v[0].1, "/root/Cargo.toml");
    let v = parse_includes(&[format!("{here}/src:/opt/x/")]).unwrap();
    assert_eq!(v[0].1, "/opt/x");
    assert!(parse_includes(&[format!("{here}/src:rel")]).is_err());
    assert!(parse_includes(&["/does/not/exist".to_string()]).is_err());
}
