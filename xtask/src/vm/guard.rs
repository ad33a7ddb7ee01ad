//! What one boot owns and must not leave behind: its child processes (the
//! device and QEMU), its run dir, and what Ctrl-C does meanwhile.

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

/// Set by the Ctrl-C handler; checked by every wait loop.
pub(super) static INTERRUPTED: AtomicBool = AtomicBool::new(false);
/// True while a VM runs: then the boot loop stops QEMU and the device in
/// order; otherwise (provisioning, builds) Ctrl-C ends the xtask at once.
pub(super) static BOOTING: AtomicBool = AtomicBool::new(false);

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
pub(super) struct BootingFlag;

impl BootingFlag {
    pub(super) fn set() -> Self {
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
pub(super) struct Guard {
    pub(super) children: Vec<(&'static str, Child)>,
    pub(super) run_dir: Option<tempfile::TempDir>,
    pub(super) keep: bool,
}

impl Guard {
    pub(super) fn child(&mut self, name: &str) -> Result<&mut Child> {
        self.children
            .iter_mut()
            .find(|(n, _)| *n == name)
            .map(|(_, c)| c)
            .with_context(|| format!("{name} is not running"))
    }

    /// Forgets pktaccel-device if it exited with status `code` (an
    /// injected `die-after` fault); true if it did.
    pub(super) fn forget_device_exited_with(&mut self, code: i32) -> bool {
        let dead = self.children.iter_mut().position(|(n, c)| {
            *n == "pktaccel-device" && matches!(c.try_wait(), Ok(Some(s)) if s.code() == Some(code))
        });
        dead.map(|i| self.children.remove(i)).is_some()
    }

    /// Kills the device on the guest's cue (the killed-device test) and
    /// forgets it, so its death is not reported as a failure.
    pub(super) fn kill_device_on_cue(&mut self) {
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

    pub(super) fn stop_all(&mut self) {
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

pub(super) const RUN_DIR_PREFIX: &str = "pktaccel-run-";
/// Holds the pid of the xtask that owns a run dir.
pub(super) const OWNER_FILE: &str = "owner.pid";

/// Removes run dirs whose owning xtask is gone (killed with SIGKILL, say,
/// where no cleanup code runs): the next run leaves nothing behind either.
pub(super) fn sweep_stale_run_dirs(tmp: &Path) {
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
pub(super) fn tie_to_parent(cmd: &mut Command, own_group: bool) {
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
