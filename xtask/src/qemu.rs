//! Finding a QEMU new enough for `vhost-user-test-device-pci` (≥ 10.2):
//! the user's choice, else the system's, else one provisioned into a Debian
//! trixie root under the cache. The root's binary runs through the root's
//! own dynamic loader, so no chroot is needed and host paths work as is.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};
use xshell::{Cmd, Shell, cmd};

use crate::cache::Cache;
use crate::deps::{is_root, parse_version, run_quiet};
use crate::step::Step;

/// The first QEMU version whose vhost-user-test-device users may create.
pub const MIN_QEMU: (u32, u32, u32) = (10, 2, 0);

/// How to start QEMU.
#[derive(Clone, Debug)]
pub struct Qemu {
    program: PathBuf,
    prefix: Vec<OsString>,
    data_dirs: Vec<PathBuf>,
    /// e.g. "11.1.3 (provisioned trixie root)".
    pub description: String,
}

impl Qemu {
    /// A QEMU that is just this program (tests use stand-ins).
    #[cfg(test)]
    pub fn from_program(program: PathBuf) -> Self {
        Self {
            program,
            prefix: vec![],
            data_dirs: vec![],
            description: "stand-in".into(),
        }
    }

    /// A command with the binary and its firmware dirs set; add the rest.
    /// A std `Command`, not xshell's: the VM runs QEMU as a long-lived
    /// child that it talks to, waits on and kills, which xshell cannot do.
    pub fn command(&self) -> Command {
        let mut c = Command::new(&self.program);
        c.args(&self.prefix);
        for d in &self.data_dirs {
            c.arg("-L").arg(d);
        }
        c
    }

    /// `qemu-system-x86_64 --version`, through the same binary and loader.
    fn version_cmd<'a>(&self, sh: &'a Shell) -> Cmd<'a> {
        let (program, prefix) = (&self.program, &self.prefix);
        cmd!(sh, "{program} {prefix...} --version")
    }
}

/// Resolves the QEMU to use, provisioning the trixie root when needed.
pub fn ensure(cache: &Cache, flag: Option<PathBuf>) -> Result<Qemu> {
    let step = Step::start("QEMU");
    let sh = Shell::new()?;
    if let Some(p) = flag.or_else(|| std::env::var_os("PKTACCEL_QEMU").map(PathBuf::from)) {
        let v = version_of(cmd!(sh, "{p} --version"))
            .with_context(|| format!("{} (from --qemu/PKTACCEL_QEMU) does not run", p.display()))?;
        if v < MIN_QEMU {
            bail!(
                "{} is QEMU {}.{}.{}, but pktaccel needs ≥ 10.2 for vhost-user-test-device-pci.\n  unset PKTACCEL_QEMU / drop --qemu to use the provisioned QEMU 11",
                p.display(),
                v.0,
                v.1,
                v.2
            );
        }
        step.done(&format!("{}.{}.{} (user's choice)", v.0, v.1, v.2));
        return Ok(Qemu {
            program: p,
            prefix: vec![],
            data_dirs: vec![],
            description: format!("{}.{}.{} (user)", v.0, v.1, v.2),
        });
    }
    let mut system_note = String::new();
    if let Ok(sys) = which::which("qemu-system-x86_64") {
        match version_of(cmd!(sh, "{sys} --version")) {
            Ok(v) if v >= MIN_QEMU => {
                step.done(&format!("{}.{}.{} (system)", v.0, v.1, v.2));
                return Ok(Qemu {
                    program: sys,
                    prefix: vec![],
                    data_dirs: vec![],
                    description: format!("{}.{}.{} (system)", v.0, v.1, v.2),
                });
            }
            Ok(v) => {
                system_note = format!("system QEMU {}.{}.{} is older than 10.2; ", v.0, v.1, v.2)
            }
            Err(_) => {}
        }
    }
    let root = cache.qemu_root();
    if !root.join(".pktaccel-ready").is_file() {
        eprintln!(
            "    {system_note}provisioning QEMU 11 into {}",
            root.display()
        );
        provision_root(&root)?;
    }
    let q = from_root(&root)?;
    let v = version_of(q.version_cmd(&sh)).context(
        "the provisioned QEMU does not run; remove the qemu-root dir in the cache and retry",
    )?;
    let desc = format!("{}.{}.{} (provisioned trixie root)", v.0, v.1, v.2);
    step.done(&desc);
    Ok(Qemu {
        description: desc,
        ..q
    })
}

fn from_root(root: &Path) -> Result<Qemu> {
    let loader = root.join("lib64/ld-linux-x86-64.so.2");
    let libs = format!(
        "{}:{}",
        root.join("lib/x86_64-linux-gnu").display(),
        root.join("usr/lib/x86_64-linux-gnu").display()
    );
    Ok(Qemu {
        program: loader,
        prefix: vec![
            "--library-path".into(),
            libs.into(),
            root.join("usr/bin/qemu-system-x86_64").into(),
        ],
        data_dirs: vec![root.join("usr/share/seabios"), root.join("usr/share/qemu")],
        description: String::new(),
    })
}

fn version_of(version_cmd: Cmd<'_>) -> Result<(u32, u32, u32)> {
    let out = run_quiet(version_cmd)?;
    let text = String::from_utf8_lossy(&out.stdout);
    parse_version(&text).with_context(|| format!("cannot parse QEMU version from {text:?}"))
}

/// debootstrap a trixie minbase and install qemu-system-x86 from
/// trixie-backports into it (the verified recipe: ~1 minute, ~500 MB).
fn provision_root(root: &Path) -> Result<()> {
    if !is_root() {
        bail!(
            "no QEMU ≥ 10.2 found, and provisioning one needs root (debootstrap + chroot).\n  either run this xtask as root once, or point PKTACCEL_QEMU at a qemu-system-x86_64 ≥ 10.2"
        );
    }
    let part = root.with_extension("part");
    let _ = std::fs::remove_dir_all(&part);
    let mirror = crate::rustsrc::host_mirror();
    let step = Step::start("debootstrap trixie (for QEMU)");
    let sh = Shell::new()?;
    run_quiet(cmd!(
        sh,
        "debootstrap --variant=minbase trixie {part} {mirror}"
    ))
    .with_context(|| format!("cannot debootstrap from {mirror}: check the network"))?;
    step.done("done");
    let step = Step::start("qemu-system-x86 from trixie-backports");
    std::fs::write(
        part.join("etc/apt/sources.list.d/backports.list"),
        format!("deb {mirror} trixie-backports main\n"),
    )?;
    run_quiet(cmd!(sh, "chroot {part} apt-get update -q"))
        .context("apt-get update in the QEMU root")?;
    run_quiet(cmd!(
        sh,
        "chroot {part} env DEBIAN_FRONTEND=noninteractive
            apt-get install -y -q --no-install-recommends -t trixie-backports qemu-system-x86"
    ))
    .context("installing qemu-system-x86 in the QEMU root")?;
    let _ = std::fs::remove_dir_all(part.join("var/cache/apt/archives"));
    std::fs::write(
        part.join(".pktaccel-ready"),
        b"qemu-system-x86 from trixie-backports\n",
    )?;
    std::fs::rename(&part, root)?;
    step.done("installed");
    Ok(())
}

/// `auto`: KVM only when the CPU shows vmx/svm and /dev/kvm opens
/// (these machines have /dev/kvm without the CPU flags, where a guest hangs).
pub fn kvm_usable() -> bool {
    let flags = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let has_virt = flags
        .lines()
        .filter(|l| l.starts_with("flags"))
        .any(|l| l.split_whitespace().any(|f| f == "vmx" || f == "svm"));
    has_virt
        && std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/kvm")
            .is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn fake_qemu(dir: &Path, banner: &str) -> PathBuf {
        let p = dir.join("qemu-system-x86_64");
        std::fs::write(&p, format!("#!/bin/sh\necho '{banner}'\n")).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        p
    }

    #[test]
    fn a_qemu_older_than_10_2_is_refused_with_the_fix() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::locate(Some(dir.path().join("cache"))).unwrap();
        let old = fake_qemu(
            dir.path(),
            "QEMU emulator version 7.2.19 (Debian 1:7.2+dfsg-7+deb12u18)",
        );
        let err = format!("{:#}", ensure(&cache, Some(old)).err().unwrap());
        assert!(
            err.contains("is QEMU 7.2.19, but pktaccel needs ≥ 10.2"),
            "{err}"
        );
        assert!(err.contains("PKTACCEL_QEMU"), "{err}");
    }

    #[test]
    fn a_new_enough_user_qemu_is_used() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::locate(Some(dir.path().join("cache"))).unwrap();
        let q = fake_qemu(dir.path(), "QEMU emulator version 10.2.0");
        assert_eq!(
            ensure(&cache, Some(q)).unwrap().description,
            "10.2.0 (user)"
        );
    }

    #[test]
    fn a_missing_qemu_binary_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::locate(Some(dir.path().join("cache"))).unwrap();
        let err = format!(
            "{:#}",
            ensure(&cache, Some(dir.path().join("nope"))).err().unwrap()
        );
        assert!(
            err.contains("nope (from --qemu/PKTACCEL_QEMU) does not run"),
            "{err}"
        );
    }
}
