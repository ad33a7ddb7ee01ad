//! Booting the guest: prepares every artifact, starts `pktaccel-device` on a
//! socket in a private run directory, starts QEMU with the device attached,
//! follows the console, and always cleans up (success, failure, timeout,
//! Ctrl-C): no QEMU or device process survives, the run dir is removed.

use std::io::BufRead;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use pktaccel_abi::console;

use crate::cache::Cache;
use crate::deps::file_tail;
use crate::initramfs::{self, Mode};
use crate::kernel::{self, Variant};
use crate::qemu::{self, Qemu};
use crate::step::{Step, fmt_duration};
use crate::{cargo_build, deps, kmod, rustsrc};

/// CPU accelerator choice.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Accel {
    /// KVM when usable (vmx/svm in cpuinfo and /dev/kvm opens), else TCG.
    Auto,
    /// Software emulation.
    Tcg,
    /// Hardware virtualisation.
    Kvm,
}

/// Options shared by run-vm and test-e2e.
#[derive(Clone, Debug, clap::Args)]
pub struct VmArgs {
    /// CPU accelerator.
    #[arg(long, value_enum, default_value = "auto")]
    pub accel: Accel,
    /// Guest memory (QEMU syntax, e.g. 512M, 1G).
    #[arg(long, default_value = "512M")]
    pub mem: String,
    /// Guest CPUs.
    #[arg(long, default_value_t = 2)]
    pub cpus: u32,
    /// Request queues the device offers.
    #[arg(long, default_value_t = 2)]
    pub queues: u32,
    /// Put host files into the guest: HOST_PATH[:GUEST_PATH] (default guest
    /// path /root/<name>). Repeatable; directories are copied whole.
    #[arg(long, value_name = "HOST[:GUEST]")]
    pub include: Vec<String>,
    /// Also put the unmodified Debian programs of images/guest-programs.txt
    /// (sqlite3, pigz, python3) into the guest; test-e2e always does. Off by
    /// default because the extra 34 MB cost about 2 s of boot under TCG.
    #[arg(long)]
    pub programs: bool,
    /// Keep the run directory (socket, initrd) afterwards.
    #[arg(long)]
    pub keep: bool,
    /// Use this qemu-system-x86_64 (≥ 10.2) instead of the system's or the
    /// provisioned one. Also PKTACCEL_QEMU.
    #[arg(long, value_name = "PATH")]
    pub qemu: Option<PathBuf>,
    /// Start pktaccel-device with this fault injected (repeatable; see
    /// docs/datasheet.md, "Fault injection"). A guest line
    /// `PKTACCEL-FAULT CMD` sends CMD to the device's fault control socket.
    #[arg(long = "fault", value_name = "SPEC")]
    pub faults: Vec<String>,
}

/// Everything built and ready to boot.
pub struct Prepared {
    workspace: PathBuf,
    kernel: kernel::Kernel,
    initrd_base: PathBuf,
    initrd_programs: PathBuf,
    device: PathBuf,
    qemu: Qemu,
    variant: Variant,
}

impl Prepared {
    /// Guest kernel release and QEMU description, for reports.
    pub fn versions(&self) -> (&str, &str) {
        (&self.kernel.release, &self.qemu.description)
    }

    /// Which kernel this run boots.
    pub fn variant(&self) -> Variant {
        self.variant
    }

    /// rustfmt and clippy over `kmod/`, against this run's kernel.
    pub fn lint_kmod(&self) -> Result<()> {
        crate::kmod::lint(&self.workspace, &self.kernel)
    }
}

/// The workspace root (xtask lives one level below it).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// Provisions (first run) and builds whatever changed.
pub fn prepare(cache: &Cache, variant: Variant, qemu_flag: Option<PathBuf>) -> Result<Prepared> {
    let started = Instant::now();
    let workspace = workspace_root();
    deps::ensure_host_packages()?;
    let mut apt = None;
    let rust_lib = rustsrc::ensure_rust_src(cache, &mut apt)?;
    let (linux, linux_ver) = rustsrc::ensure_linux_src(cache, &mut apt)?;
    let bindgen = rustsrc::ensure_bindgen(cache)?;
    let qemu = qemu::ensure(cache, qemu_flag)?;
    let inputs = kernel::KernelInputs {
        src: &linux,
        src_version: &linux_ver,
        rust_lib_src: &rust_lib,
        bindgen_dir: &bindgen,
        workspace: &workspace,
    };
    let kernel = kernel::ensure(cache, &inputs, variant)?;
    let arts = cargo_build::build(&workspace)?;
    let ko = kmod::build(&workspace, &kernel, variant)?;
    let initrd_base = initramfs::ensure_base(&initramfs::BaseInputs {
        workspace: &workspace,
        kmod: &ko,
        bins: &arts.guest_bins,
        libs: &arts.guest_libs,
        out: &workspace.join(format!("target/xtask/initramfs-{}.cpio", variant.name())),
    })?;
    let initrd_programs = initramfs::ensure_programs(
        &workspace,
        &workspace.join("target/xtask/initramfs-programs.cpio"),
    )?;
    eprintln!("    ready in {}", fmt_duration(started.elapsed()));
    Ok(Prepared {
        initrd_programs,
        workspace,
        kernel,
        initrd_base,
        device: arts.device,
        qemu,
        variant,
    })
}

/// What the caller wants done with each console line.
pub trait ConsoleSink {
    /// Called for every console line (without line ending).
    fn line(&mut self, line: &str);
}

/// The result of one boot.
pub struct Outcome {
    /// Status the guest reported (`PKTACCEL-EXIT n`), if it got that far.
    pub guest_status: Option<i32>,
    /// The kept console log.
    pub console_log: PathBuf,
}

/// Set by the Ctrl-C handler; checked by every wait loop.
static INTERRUPTED: AtomicBool = AtomicBool::new(false);
/// True while a VM runs: then the boot loop stops QEMU and the device in
/// order; otherwise (provisioning, builds) Ctrl-C ends the xtask at once.
static BOOTING: AtomicBool = AtomicBool::new(false);

/// Installs the Ctrl-C / SIGTERM handler (once).
pub fn install_interrupt_handler() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let _ = ctrlc::set_handler(|| {
            INTERRUPTED.store(true, Ordering::SeqCst);
            if !BOOTING.load(Ordering::SeqCst) {
                eprintln!(
                    "\ninterrupted; nothing was left running (cached steps resume next time)"
                );
                std::process::exit(130);
            }
        });
    });
}

/// Marks the boot phase for the interrupt handler.
struct BootingFlag;

impl BootingFlag {
    fn set() -> Self {
        BOOTING.store(true, Ordering::SeqCst);
        Self
    }
}

impl Drop for BootingFlag {
    fn drop(&mut self) {
        BOOTING.store(false, Ordering::SeqCst);
    }
}

/// Processes that must not outlive the run, and the run dir.
struct Guard {
    children: Vec<(&'static str, Child)>,
    run_dir: Option<tempfile::TempDir>,
    keep: bool,
}

impl Guard {
    fn child(&mut self, name: &str) -> Result<&mut Child> {
        self.children
            .iter_mut()
            .find(|(n, _)| *n == name)
            .map(|(_, c)| c)
            .with_context(|| format!("{name} is not running"))
    }

    /// Kills the device on the guest's cue (the killed-device test) and
    /// forgets it, so its death is not reported as a failure.
    /// Forgets pktaccel-device if it exited with status `code` (an
    /// injected `die-after` fault); true if it did.
    fn forget_device_exited_with(&mut self, code: i32) -> bool {
        let dead = self.children.iter_mut().position(|(n, c)| {
            *n == "pktaccel-device" && matches!(c.try_wait(), Ok(Some(s)) if s.code() == Some(code))
        });
        dead.map(|i| self.children.remove(i)).is_some()
    }

    fn kill_device_on_cue(&mut self) {
        if let Some(i) = self
            .children
            .iter()
            .position(|(n, _)| *n == "pktaccel-device")
        {
            let (_, mut c) = self.children.remove(i);
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn stop_all(&mut self) {
        for (_, c) in &mut self.children {
            if let Ok(None) = c.try_wait() {
                // SAFETY: kill(2) on a pid we spawned and have not reaped yet,
                // so it cannot name an unrelated process.
                unsafe { libc::kill(c.id() as libc::pid_t, libc::SIGTERM) };
            }
        }
        let deadline = Instant::now() + Duration::from_secs(3);
        for (_, c) in &mut self.children {
            while matches!(c.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            if let Ok(None) = c.try_wait() {
                let _ = c.kill();
            }
            let _ = c.wait();
        }
        self.children.clear();
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        self.stop_all();
        if let Some(dir) = self.run_dir.take()
            && self.keep
        {
            eprintln!("    run dir kept: {}", dir.keep().display());
        }
    }
}

const RUN_DIR_PREFIX: &str = "pktaccel-run-";
/// Holds the pid of the xtask that owns a run dir.
const OWNER_FILE: &str = "owner.pid";

/// Removes run dirs whose owning xtask is gone (killed with SIGKILL, say,
/// where no cleanup code runs): the next run leaves nothing behind either.
fn sweep_stale_run_dirs(tmp: &Path) {
    let Ok(entries) = std::fs::read_dir(tmp) else {
        return;
    };
    for e in entries.flatten() {
        let path = e.path();
        if !e.file_name().to_string_lossy().starts_with(RUN_DIR_PREFIX) {
            continue;
        }
        let owner: Option<libc::pid_t> = std::fs::read_to_string(path.join(OWNER_FILE))
            .ok()
            .and_then(|s| s.trim().parse().ok());
        let alive = owner.is_some_and(|pid| {
            // SAFETY: signal 0 sends nothing; it only asks whether `pid` exists.
            unsafe { libc::kill(pid, 0) == 0 }
        });
        let old = e
            .metadata()
            .and_then(|m| m.modified())
            .is_ok_and(|t| t.elapsed().unwrap_or_default() > Duration::from_secs(60));
        // A dir without an owner file is either being created right now or
        // from an older xtask: remove it only once it is a minute old.
        if (owner.is_some() && !alive) || (owner.is_none() && old) {
            let _ = std::fs::remove_dir_all(&path);
        }
    }
}

/// Makes a child die with us (PR_SET_PDEATHSIG) and, unless it needs the
/// terminal, leave our process group so a terminal Ctrl-C reaches only us
/// and we stop it in order.
fn tie_to_parent(cmd: &mut Command, own_group: bool) {
    // SAFETY: the closure runs between fork and exec and calls only
    // async-signal-safe functions (prctl, setpgid) without allocating.
    unsafe {
        cmd.pre_exec(move || {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            if own_group {
                libc::setpgid(0, 0);
            }
            Ok(())
        });
    }
}

/// A fresh logs dir under target/xtask/logs (UTC time, mode, pid, seq).
fn logs_dir(workspace: &Path, what: &str) -> Result<PathBuf> {
    static SEQ: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let seq = SEQ.fetch_add(1, Ordering::SeqCst);
    let time = humantime::format_rfc3339_seconds(std::time::SystemTime::now())
        .to_string()
        .replace(':', "");
    let dir = workspace
        .join("target/xtask/logs")
        .join(format!("{time}-{what}-{}-{seq}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let latest = workspace.join("target/xtask/logs/latest");
    let _ = std::fs::remove_file(&latest);
    let _ = std::os::unix::fs::symlink(&dir, &latest);
    Ok(dir)
}

/// Where one boot writes its logs.
struct BootLogs {
    console: PathBuf,
    device: PathBuf,
    qemu: PathBuf,
}

/// Boots the guest once in `mode`.
pub fn boot(
    p: &Prepared,
    args: &VmArgs,
    mode: &Mode,
    timeout: Option<Duration>,
    sink: &mut dyn ConsoleSink,
) -> Result<Outcome> {
    install_interrupt_handler();
    if args.queues == 0 || args.queues > 64 {
        bail!("--queues must be 1..=64 (got {})", args.queues);
    }
    if args.cpus == 0 || args.cpus > 64 {
        bail!("--cpus must be 1..=64 (got {})", args.cpus);
    }
    let includes = parse_includes(&args.include)?;
    let interactive = matches!(mode, Mode::Shell);
    if interactive && !std::io::IsTerminal::is_terminal(&std::io::stdin()) {
        bail!("run-vm without --exec needs a terminal on stdin; use --exec 'CMD' when scripting");
    }
    let mode_name = match mode {
        Mode::Shell => "shell",
        Mode::Exec(_) => "exec",
        Mode::Suite(_) | Mode::DeviceKill | Mode::FaultDeath => "suite",
    };
    let logs_root = logs_dir(&p.workspace, mode_name)?;
    let logs = BootLogs {
        console: logs_root.join("console.log"),
        device: logs_root.join("device.log"),
        qemu: logs_root.join("qemu.log"),
    };
    // Declared before the guard so it drops after it: a Ctrl-C during the
    // guard's cleanup must not exit the process half way.
    let _booting = BootingFlag::set();
    sweep_stale_run_dirs(&std::env::temp_dir());
    let run_dir = tempfile::Builder::new()
        .prefix(RUN_DIR_PREFIX)
        .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o700))
        .tempdir()
        .context("cannot create a private run dir in $TMPDIR")?;
    std::fs::write(
        run_dir.path().join(OWNER_FILE),
        std::process::id().to_string(),
    )?;
    let mut guard = Guard {
        children: Vec::new(),
        run_dir: None,
        keep: args.keep,
    };
    let rd = run_dir.path().to_path_buf();
    guard.run_dir = Some(run_dir);

    // Per-run initrd = base + overlay.
    let overlay = rd.join("overlay.cpio");
    initramfs::write_overlay(&overlay, mode, &includes)?;
    let initrd = rd.join("initrd.cpio");
    let mut parts: Vec<&Path> = vec![&p.initrd_base];
    if args.programs || matches!(mode, Mode::Suite(_)) {
        parts.push(&p.initrd_programs);
    }
    parts.push(&overlay);
    initramfs::concat(&parts, &initrd)?;

    // The device first: QEMU connects to its socket at start.
    let sock = rd.join("pktaccel.sock");
    spawn_device(p, args, &sock, &logs.device, &mut guard)?;
    let mut q = qemu_command(p, args, mode, &initrd, &sock)?;
    q.stderr(std::fs::File::create(&logs.qemu)?);
    if interactive {
        return run_interactive(q, &mut guard, logs);
    }
    let fault_ctl = rd.join("pktaccel.sock.ctl");
    run_captured(q, &mut guard, mode, timeout, sink, &fault_ctl, logs)
}

/// Starts `pktaccel-device` on `sock` and waits until the socket exists.
fn spawn_device(
    p: &Prepared,
    args: &VmArgs,
    sock: &Path,
    device_log: &Path,
    guard: &mut Guard,
) -> Result<()> {
    // std Command, not xshell: the device is a long-lived child that
    // needs pre_exec (tie_to_parent) and must be killable mid-run.
    let mut dev = Command::new(&p.device);
    dev.arg("--socket")
        .arg(sock)
        .arg("--queues")
        .arg(args.queues.to_string())
        .arg("--once");
    for f in &args.faults {
        dev.arg("--fault").arg(f);
    }
    let dlog = std::fs::File::create(device_log)?;
    dev.stdin(Stdio::null())
        .stdout(dlog.try_clone()?)
        .stderr(dlog);
    tie_to_parent(&mut dev, true);
    let child = dev
        .spawn()
        .with_context(|| format!("cannot start {}", p.device.display()))?;
    guard.children.push(("pktaccel-device", child));
    let t0 = Instant::now();
    while !sock.exists() {
        if let Some(status) = guard.child("pktaccel-device")?.try_wait()? {
            bail!(
                "pktaccel-device exited at start ({status}) before creating its socket; its log ({}):\n{}",
                device_log.display(),
                file_tail(device_log, 20)
            );
        }
        if t0.elapsed() > Duration::from_secs(10) {
            bail!(
                "pktaccel-device did not create {} within 10 s; its log:\n{}",
                sock.display(),
                file_tail(device_log, 20)
            );
        }
        if INTERRUPTED.load(Ordering::SeqCst) {
            bail!("interrupted");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Ok(())
}

/// The QEMU command line shared by both console modes: machine, kernel,
/// initrd, shared memory and the vhost-user device on `sock`.
fn qemu_command(
    p: &Prepared,
    args: &VmArgs,
    mode: &Mode,
    initrd: &Path,
    sock: &Path,
) -> Result<Command> {
    let accel = resolve_accel(args.accel)?;
    let mut q = p.qemu.command();
    let cmdline = match mode {
        Mode::Suite(_) | Mode::DeviceKill | Mode::FaultDeath => "console=ttyS0 loglevel=5 panic=-1",
        _ => "console=ttyS0 quiet panic=-1",
    };
    q.args([
        "-machine",
        "q35",
        "-accel",
        accel,
        "-m",
        &args.mem,
        "-smp",
        &args.cpus.to_string(),
    ])
    .args(["-nodefaults", "-display", "none", "-no-reboot"])
    .arg("-kernel")
    .arg(&p.kernel.bzimage)
    .arg("-initrd")
    .arg(initrd)
    .args(["-append", cmdline])
    .args([
        "-object",
        &format!("memory-backend-memfd,id=mem,size={},share=on", args.mem),
        "-numa",
        "node,memdev=mem",
    ])
    .arg("-chardev")
    .arg(format!("socket,id=pktaccel0,path={}", sock.display()))
    .args([
        "-device",
        &format!(
            "vhost-user-test-device-pci,chardev=pktaccel0,virtio-id={},num_vqs={},config_size={}",
            pktaccel_abi::VIRTIO_ID,
            args.queues,
            pktaccel_abi::DEVICE_CONFIG_SIZE
        ),
    ]);
    Ok(q)
}

/// Runs QEMU with the console on the terminal until the user leaves it.
fn run_interactive(mut q: Command, guard: &mut Guard, logs: BootLogs) -> Result<Outcome> {
    let console_log = logs.console;
    q.arg("-chardev")
        .arg(format!(
            "stdio,id=con,mux=on,signal=off,logfile={}",
            console_log.display()
        ))
        .args([
            "-serial",
            "chardev:con",
            "-mon",
            "chardev=con,mode=readline",
        ]);
    tie_to_parent(&mut q, false);
    eprintln!(
        "    console log: {}  (leave the guest with 'exit', or Ctrl-A X)",
        console_log.display()
    );
    let child = q.spawn().context("cannot start QEMU")?;
    guard.children.push(("qemu", child));
    let status = loop {
        if INTERRUPTED.load(Ordering::SeqCst) {
            guard.stop_all();
            bail!("interrupted: QEMU and pktaccel-device stopped");
        }
        if let Some(status) = guard.child("qemu")?.try_wait()? {
            break status;
        }
        check_device_alive(guard, &logs.device)?;
        std::thread::sleep(Duration::from_millis(50));
    };
    if !status.success() {
        bail!(
            "QEMU exited with {status}; its log ({}):\n{}",
            logs.qemu.display(),
            file_tail(&logs.qemu, 20)
        );
    }
    Ok(Outcome {
        guest_status: Some(0),
        console_log,
    })
}

/// Starts QEMU with the console piped to a thread that sends it line by line.
fn spawn_captured(mut q: Command, guard: &mut Guard) -> Result<mpsc::Receiver<String>> {
    q.args(["-serial", "stdio"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped());
    tie_to_parent(&mut q, true);
    let mut child = q.spawn().context("cannot start QEMU")?;
    let stdout = child.stdout.take().context("no QEMU stdout")?;
    guard.children.push(("qemu", child));
    let (tx, rx) = mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).split(b'\n') {
            let Ok(line) = line else { break };
            let text = String::from_utf8_lossy(&line)
                .trim_end_matches('\r')
                .to_string();
            if tx.send(text).is_err() {
                break;
            }
        }
    });
    Ok(rx)
}

/// The last console lines, indented for an error message.
fn indented(tail: &std::collections::VecDeque<String>) -> String {
    tail.iter()
        .map(|l| format!("    | {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Runs QEMU with the console captured: logs every line, answers the
/// guest's cues (exit status, fault control, device kill) and feeds `sink`.
fn run_captured(
    q: Command,
    guard: &mut Guard,
    mode: &Mode,
    timeout: Option<Duration>,
    sink: &mut dyn ConsoleSink,
    fault_ctl: &Path,
    logs: BootLogs,
) -> Result<Outcome> {
    use std::io::Write;
    let console_log = logs.console;
    let rx = spawn_captured(q, guard)?;
    let mut log = std::io::BufWriter::new(std::fs::File::create(&console_log)?);
    let started = Instant::now();
    let mut guest_status = None;
    let mut tail: std::collections::VecDeque<String> = Default::default();
    loop {
        if INTERRUPTED.load(Ordering::SeqCst) {
            guard.stop_all();
            bail!(
                "interrupted: QEMU and pktaccel-device stopped; console log: {}",
                console_log.display()
            );
        }
        if let Some(t) = timeout
            && started.elapsed() > t
        {
            guard.stop_all();
            bail!(
                "the guest did not finish within {} (hung?); QEMU and the device were stopped.\n  console log: {}\n{}",
                fmt_duration(t),
                console_log.display(),
                indented(&tail)
            );
        }
        match rx.recv_timeout(Duration::from_millis(50)) {
            Ok(line) => {
                let _ = writeln!(log, "{line}");
                if let Some(rc) = console::after(&line, console::EXIT) {
                    guest_status = rc.trim().parse().ok();
                }
                if let Some(cmd) = console::after(line.trim(), console::FAULT) {
                    let answer = fault_control(fault_ctl, cmd);
                    let _ = writeln!(log, "[host] fault control: {cmd} -> {answer}");
                }
                if matches!(mode, Mode::DeviceKill) && line.trim() == console::KILL_DEVICE {
                    guard.kill_device_on_cue();
                    let _ = writeln!(log, "[host] pktaccel-device killed on the guest's cue");
                }
                tail.push_back(line.clone());
                if tail.len() > 30 {
                    tail.pop_front();
                }
                sink.line(&line);
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {
                if matches!(mode, Mode::FaultDeath) && guard.forget_device_exited_with(3) {
                    let _ = writeln!(log, "[host] pktaccel-device died of its injected fault");
                }
                check_device_alive(guard, &logs.device)?;
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
    }
    let status = guard.child("qemu")?.wait()?;
    let _ = log.flush();
    if guest_status.is_none() {
        bail!(
            "QEMU exited ({status}) before the guest finished.\n  QEMU log ({}):\n{}\n  console log ({}):\n{}",
            logs.qemu.display(),
            file_tail(&logs.qemu, 15),
            console_log.display(),
            indented(&tail)
        );
    }
    Ok(Outcome {
        guest_status,
        console_log,
    })
}

/// Sends one command to the device's fault control socket; returns its
/// answer lines joined, or what went wrong.
fn fault_control(path: &Path, cmd: &str) -> String {
    use std::io::{BufRead, Write};
    let talk = || -> std::io::Result<String> {
        let s = std::os::unix::net::UnixStream::connect(path)?;
        s.set_read_timeout(Some(Duration::from_secs(5)))?;
        (&s).write_all(format!("{}\n", cmd.trim()).as_bytes())?;
        let mut out = Vec::new();
        for line in std::io::BufReader::new(&s).lines() {
            let line = line?;
            let last = line.starts_with("ok") || line.starts_with("error:");
            out.push(line);
            if last {
                break;
            }
        }
        Ok(out.join(" | "))
    };
    talk().unwrap_or_else(|e| format!("cannot reach {}: {e}", path.display()))
}

fn check_device_alive(guard: &mut Guard, device_log: &Path) -> Result<()> {
    if let Some((_, c)) = guard
        .children
        .iter_mut()
        .find(|(n, _)| *n == "pktaccel-device")
        && let Some(status) = c.try_wait()?
    {
        // With --once the device exits when QEMU disconnects at power-off;
        // that is only an error while QEMU still runs.
        let qemu_running = guard
            .children
            .iter_mut()
            .any(|(n, c)| *n == "qemu" && matches!(c.try_wait(), Ok(None)));
        if qemu_running && !status.success() {
            guard.stop_all();
            bail!(
                "pktaccel-device died ({status}) while the guest was running; its log ({}):\n{}",
                device_log.display(),
                file_tail(device_log, 20)
            );
        }
    }
    Ok(())
}

/// `HOST[:GUEST]` → (host path, absolute guest path).
pub fn parse_includes(specs: &[String]) -> Result<Vec<(PathBuf, String)>> {
    specs
        .iter()
        .map(|s| {
            let (host, guest) = match s.split_once(':') {
                Some((h, g)) => (h, Some(g)),
                None => (s.as_str(), None),
            };
            let host = PathBuf::from(host);
            if !host.exists() {
                bail!("--include {s}: {} does not exist", host.display());
            }
            let guest = match guest {
                Some(g) if g.starts_with('/') => g.trim_end_matches('/').to_string(),
                Some(g) => bail!("--include {s}: the guest path {g:?} must be absolute"),
                None => format!(
                    "/root/{}",
                    host.file_name()
                        .context("--include needs a file or dir name")?
                        .to_string_lossy()
                ),
            };
            Ok((host, guest))
        })
        .collect()
}

/// The `-accel` value for `choice`.
pub fn resolve_accel(choice: Accel) -> Result<&'static str> {
    Ok(match choice {
        Accel::Tcg => "tcg",
        Accel::Kvm => {
            if !qemu::kvm_usable() {
                bail!(
                    "--accel kvm: KVM is not usable here (no vmx/svm in /proc/cpuinfo, or /dev/kvm does not open); use --accel tcg"
                );
            }
            "kvm"
        }
        Accel::Auto => {
            if qemu::kvm_usable() {
                "kvm"
            } else {
                "tcg"
            }
        }
    })
}

/// One `Step` wrapper for booting, used by run-vm's progress output.
pub fn boot_step(p: &Prepared, accel: Accel) -> Step {
    Step::start(format!(
        "boot {} kernel {} with QEMU {} ({})",
        p.variant.name(),
        p.kernel.release,
        p.qemu.description,
        resolve_accel(accel).unwrap_or("no accelerator")
    ))
}

#[cfg(test)]
mod tests {
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
        let err = format!(
            "{:#}",
            boot_fake(&f, Some(Duration::from_secs(20)))
                .0
                .err()
                .unwrap()
        );
        assert!(err.contains("QEMU exited"), "{err}");
        assert!(err.contains("could not load kernel"), "{err}");
        assert_all_gone(&f);
    }

    #[test]
    fn a_hung_guest_hits_the_timeout_and_is_stopped() {
        let f = fake("exec sleep 30", "echo PKTACCEL-READY\nexec sleep 30");
        let err = format!(
            "{:#}",
            boot_fake(&f, Some(Duration::from_millis(800)))
                .0
                .err()
                .unwrap()
        );
        assert!(err.contains("did not finish within"), "{err}");
        assert_all_gone(&f);
    }

    #[test]
    fn the_device_dying_mid_run_is_an_error_with_its_log() {
        let f = fake(
            "echo 'backend: guest memory table invalid' >&2\nsleep 0.3\nexit 3",
            "exec sleep 30",
        );
        let err = format!(
            "{:#}",
            boot_fake(&f, Some(Duration::from_secs(20)))
                .0
                .err()
                .unwrap()
        );
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
}
