//! Booting the guest: prepares every artifact, starts `pktaccel-device` on a
//! socket in a private run directory, starts QEMU with the device attached,
//! follows the console, and always cleans up (success, failure, timeout,
//! Ctrl-C): no QEMU or device process survives, the run dir is removed.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::cache::Cache;
use crate::deps::file_tail;
use crate::initramfs::{self, Mode};
use crate::kernel::{self, Variant};
use crate::qemu::{self, Qemu};
use crate::step::{Step, fmt_duration};
use crate::{cargo_build, deps, kmod, rustsrc};

mod guard;
mod run;

pub use guard::install_interrupt_handler;
use guard::{
    BootingFlag, Guard, INTERRUPTED, OWNER_FILE, RUN_DIR_PREFIX, sweep_stale_run_dirs,
    tie_to_parent,
};
use run::{run_captured, run_interactive};

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
mod tests;
