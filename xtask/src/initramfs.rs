//! The guest's root file system, an initramfs in two parts concatenated (the
//! kernel unpacks both): a base archive with busybox, the init script, the
//! kernel module, the guest programs and their shared libraries, rebuilt
//! only when one of those changes; and a small per-run archive with the run
//! mode, the `--exec` command and `--include`d files.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use sha2::{Digest, Sha256};
use xshell::{Shell, cmd};

use crate::step::Step;

/// One file in the archive.
enum Node {
    Dir,
    File {
        data: Vec<u8>,
        mode: u32,
    },
    /// Read only when the archive is written, so deciding that nothing
    /// changed costs a stat per file, not a read.
    HostFile {
        path: PathBuf,
        mode: u32,
        len: u64,
        mtime_ns: i128,
    },
    CharDev {
        major: u32,
        minor: u32,
    },
    Symlink {
        target: String,
    },
}

/// An archive under construction, keyed by absolute guest path.
#[derive(Default)]
pub struct Archive {
    nodes: BTreeMap<String, Node>,
}

impl Archive {
    /// Adds a file with `mode` (permission bits), creating parent dirs.
    pub fn file(&mut self, guest: &str, data: Vec<u8>, mode: u32) {
        self.parents(guest);
        self.nodes
            .insert(guest.to_string(), Node::File { data, mode });
    }

    /// Adds a host file, keeping its permission bits.
    pub fn host_file(&mut self, guest: &str, host: &Path) -> Result<()> {
        use std::os::unix::fs::MetadataExt;
        let m = std::fs::metadata(host).with_context(|| format!("reading {}", host.display()))?;
        self.parents(guest);
        self.nodes.insert(
            guest.to_string(),
            Node::HostFile {
                path: host.to_path_buf(),
                mode: m.mode() & 0o7777,
                len: m.len(),
                mtime_ns: i128::from(m.mtime()) * 1_000_000_000 + i128::from(m.mtime_nsec()),
            },
        );
        Ok(())
    }

    /// Adds a host file or directory tree at `guest`.
    pub fn host_tree(&mut self, guest: &str, host: &Path) -> Result<()> {
        let meta = std::fs::metadata(host)
            .with_context(|| format!("--include: {} does not exist", host.display()))?;
        if meta.is_dir() {
            self.dir(guest);
            for e in std::fs::read_dir(host)? {
                let e = e?;
                let name = e.file_name().to_string_lossy().into_owned();
                self.host_tree(
                    &format!("{}/{name}", guest.trim_end_matches('/')),
                    &e.path(),
                )?;
            }
            Ok(())
        } else {
            self.host_file(guest, host)
        }
    }

    /// Adds a directory (and its parents).
    pub fn dir(&mut self, guest: &str) {
        self.parents(guest);
        self.nodes.entry(guest.to_string()).or_insert(Node::Dir);
    }

    /// Adds a symbolic link.
    pub fn symlink(&mut self, guest: &str, target: &str) {
        self.parents(guest);
        self.nodes.insert(
            guest.to_string(),
            Node::Symlink {
                target: target.to_string(),
            },
        );
    }

    /// Adds a character device node.
    pub fn char_dev(&mut self, guest: &str, major: u32, minor: u32) {
        self.parents(guest);
        self.nodes
            .insert(guest.to_string(), Node::CharDev { major, minor });
    }

    fn parents(&mut self, guest: &str) {
        let mut p = Path::new(guest).parent();
        while let Some(dir) = p {
            let s = dir.to_string_lossy();
            if s == "/" || s.is_empty() {
                break;
            }
            self.nodes.entry(s.into_owned()).or_insert(Node::Dir);
            p = dir.parent();
        }
    }

    /// Writes a newc cpio archive, parents before children.
    pub fn write(&self, out: &Path) -> Result<()> {
        let mut w = std::io::BufWriter::new(std::fs::File::create(out)?);
        for (ino, (path, node)) in self.nodes.iter().enumerate() {
            let name = path.trim_start_matches('/');
            let b = cpio::NewcBuilder::new(name)
                .ino(ino as u32 + 1)
                .uid(0)
                .gid(0)
                .nlink(1);
            let host_data;
            let (b, data): (_, &[u8]) = match node {
                Node::Dir => (b.mode(0o040755).nlink(2), &[]),
                Node::File { data, mode } => (b.mode(0o100000 | mode), data),
                Node::HostFile { path, mode, .. } => {
                    host_data = std::fs::read(path)
                        .with_context(|| format!("reading {}", path.display()))?;
                    (b.mode(0o100000 | mode), &host_data)
                }
                Node::CharDev { major, minor } => {
                    (b.mode(0o020600).rdev_major(*major).rdev_minor(*minor), &[])
                }
                Node::Symlink { target } => (b.mode(0o120777), target.as_bytes()),
            };
            let mut fw = b.write(
                &mut w,
                u32::try_from(data.len()).context("file over 4 GiB in the initramfs")?,
            );
            fw.write_all(data)?;
            fw.finish()?;
        }
        cpio::newc::trailer(&mut w)?;
        w.flush()?;
        Ok(())
    }

    /// A hash of the archive's description (host files by path, size and
    /// mtime), to decide cheaply whether to rewrite it.
    pub fn fingerprint(&self) -> String {
        let mut h = Sha256::new();
        for (path, node) in &self.nodes {
            h.update(path.as_bytes());
            match node {
                Node::Dir => h.update(b"d"),
                Node::File { data, mode } => {
                    h.update(mode.to_le_bytes());
                    h.update(data);
                }
                Node::HostFile {
                    path,
                    mode,
                    len,
                    mtime_ns,
                } => {
                    h.update(b"h");
                    h.update(path.as_os_str().as_encoded_bytes());
                    h.update(mode.to_le_bytes());
                    h.update(len.to_le_bytes());
                    h.update(mtime_ns.to_le_bytes());
                }
                Node::CharDev { major, minor } => {
                    h.update(major.to_le_bytes());
                    h.update(minor.to_le_bytes());
                }
                Node::Symlink { target } => {
                    h.update(b"l");
                    h.update(target.as_bytes());
                }
            }
        }
        hex::encode(h.finalize())
    }
}

/// Inputs of the base archive.
pub struct BaseInputs<'a> {
    /// The workspace root (for images/).
    pub workspace: &'a Path,
    /// pktaccel.ko for the kernel in use.
    pub kmod: &'a Path,
    /// Guest executables.
    pub bins: &'a [PathBuf],
    /// Guest shared libraries.
    pub libs: &'a [PathBuf],
    /// Where to write (one file per kernel variant).
    pub out: &'a Path,
}

/// Builds the base archive if its content changed.
pub fn ensure_base(inp: &BaseInputs<'_>) -> Result<PathBuf> {
    let step = Step::start("initramfs");
    let busybox = Path::new("/bin/busybox");
    if !busybox.is_file() {
        bail!(
            "/bin/busybox is missing: install Debian's busybox-static (apt-get install busybox-static)"
        );
    }
    let mut a = Archive::default();
    for d in [
        "/dev",
        "/proc",
        "/sys",
        "/tmp",
        "/run",
        "/root",
        "/etc",
        "/usr/bin",
        "/usr/sbin",
        "/sbin",
        "/usr/lib",
    ] {
        a.dir(d);
    }
    a.char_dev("/dev/console", 5, 1);
    a.host_file("/bin/busybox", busybox)?;
    a.host_file("/init", &inp.workspace.join("images/init"))?;
    a.file(
        "/etc/passwd",
        b"root:x:0:0:root:/root:/bin/sh\n".to_vec(),
        0o644,
    );
    a.file("/etc/group", b"root:x:0:\n".to_vec(), 0o644);
    a.host_file("/lib/modules/pktaccel.ko", inp.kmod)?;
    let mut elfs = Vec::new();
    for b in inp.bins {
        let name = b
            .file_name()
            .context("bin without name")?
            .to_string_lossy()
            .into_owned();
        a.host_file(&format!("/usr/bin/{name}"), b)?;
        elfs.push(b.clone());
    }
    for l in inp.libs {
        let name = l
            .file_name()
            .context("lib without name")?
            .to_string_lossy()
            .into_owned();
        a.host_file(&format!("/usr/lib/{name}"), l)?;
        elfs.push(l.clone());
    }
    let header = inp.workspace.join("userlib/include/pktslab.h");
    if header.is_file() {
        a.host_file("/usr/include/pktslab.h", &header)?;
    }
    // OPENSSL_CONF for the OpenSSL provider (userlib/provider).
    let ossl_cnf = inp.workspace.join("images/pktaccel.cnf");
    if ossl_cnf.is_file() {
        a.dir("/etc/ssl");
        a.host_file("/etc/ssl/pktaccel.cnf", &ossl_cnf)?;
    }
    write_if_changed(a, &elfs, inp.out, step)
}

/// Writes `a` to `out` unless it is unchanged. The shared libraries of
/// `elfs` are resolved (ldd) only when something changed; the libraries
/// found last time are part of the fingerprint, so a host library upgrade
/// also rebuilds.
fn write_if_changed(mut a: Archive, elfs: &[PathBuf], out: &Path, step: Step) -> Result<PathBuf> {
    let libs_file = out.with_extension("libs");
    let fp_file = out.with_extension("fp");
    let recorded: Vec<String> = std::fs::read_to_string(&libs_file)
        .unwrap_or_default()
        .lines()
        .map(String::from)
        .collect();
    let libs_fingerprint = |libs: &[String]| -> Result<String> {
        let mut probe = Archive::default();
        for l in libs {
            probe.host_file(l, Path::new(l))?;
        }
        Ok(probe.fingerprint())
    };
    let own = a.fingerprint();
    if out.is_file()
        && let Ok(lf) = libs_fingerprint(&recorded)
        && std::fs::read_to_string(&fp_file).ok().as_deref() == Some(format!("{own}{lf}").as_str())
    {
        step.done("up to date");
        return Ok(out.to_path_buf());
    }
    let before: std::collections::BTreeSet<String> = a.nodes.keys().cloned().collect();
    add_shared_libs(&mut a, elfs)?;
    let libs: Vec<String> = a
        .nodes
        .iter()
        .filter(|(k, n)| !before.contains(*k) && matches!(n, Node::HostFile { .. }))
        .map(|(k, _)| k.clone())
        .collect();
    let fp = format!("{own}{}", libs_fingerprint(&libs)?);
    if let Some(p) = out.parent() {
        std::fs::create_dir_all(p)?;
    }
    a.write(out)?;
    std::fs::write(&libs_file, libs.join("\n"))?;
    std::fs::write(&fp_file, fp)?;
    step.done(&format!(
        "written, {} KiB",
        std::fs::metadata(out)?.len() / 1024
    ));
    Ok(out.to_path_buf())
}

/// Adds every shared library (and the loader) that `elfs` need, at the
/// paths the host's ldd resolves, so dynamically linked programs run.
pub fn add_shared_libs(a: &mut Archive, elfs: &[PathBuf]) -> Result<()> {
    let mut seen = std::collections::BTreeSet::new();
    let sh = Shell::new()?;
    for elf in elfs {
        // ldd exits 1 on a static binary: its output says so.
        let out = cmd!(sh, "ldd {elf}")
            .quiet()
            .ignore_status()
            .output()
            .context("ldd not found")?;
        let text = String::from_utf8_lossy(&out.stdout);
        if text.contains("not a dynamic executable") {
            continue;
        }
        for line in text.lines() {
            let path = match line.split_once("=>") {
                Some((_, rhs)) => rhs.split_whitespace().next(),
                None => line
                    .split_whitespace()
                    .next()
                    .filter(|p| p.starts_with('/')),
            };
            if let Some(p) = path.filter(|p| p.starts_with('/'))
                && seen.insert(p.to_string())
            {
                a.host_file(p, Path::new(p))?;
            }
        }
        if line_has_missing(&text) {
            bail!("{} needs libraries the host lacks:\n{text}", elf.display());
        }
    }
    Ok(())
}

fn line_has_missing(ldd: &str) -> bool {
    ldd.lines().any(|l| l.contains("=> not found"))
}

/// Builds the archive of unmodified host programs listed in
/// `images/guest-programs.txt` (with their shared libraries), if changed.
///
/// Line format: `file HOST [GUEST]`, `link GUEST TARGET`, or
/// `tree HOST [EXCLUDED_NAME,...]` (ELF files inside get their libraries).
pub fn ensure_programs(workspace: &Path, out: &Path) -> Result<PathBuf> {
    let step = Step::start("guest programs");
    let list_path = workspace.join("images/guest-programs.txt");
    let list = std::fs::read_to_string(&list_path)
        .with_context(|| format!("reading {}", list_path.display()))?;
    let mut a = Archive::default();
    let mut elfs = Vec::new();
    for (n, line) in list.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let words: Vec<&str> = line.split_whitespace().collect();
        let at = || format!("{}:{}", list_path.display(), n + 1);
        match words.as_slice() {
            ["file", host, rest @ ..] => {
                let host = Path::new(host);
                if !host.is_file() {
                    bail!(
                        "{}: {} is not on this machine; install the Debian package that has it (see deps.rs HOST_PACKAGES)",
                        at(),
                        host.display()
                    );
                }
                let guest = rest
                    .first()
                    .copied()
                    .unwrap_or(host.to_str().unwrap_or_default());
                a.host_file(guest, host)?;
                elfs.push(host.to_path_buf());
            }
            ["link", guest, target] => a.symlink(guest, target),
            ["tree", host, rest @ ..] => {
                let excluded: Vec<&str> = rest
                    .first()
                    .map(|e| e.split(',').collect())
                    .unwrap_or_default();
                add_tree(&mut a, Path::new(host), &excluded, &mut elfs).with_context(at)?;
            }
            _ => bail!(
                "{}: cannot parse {line:?} (want `file HOST [GUEST]`, `link GUEST TARGET` or `tree HOST [EXCLUDES]`)",
                at()
            ),
        }
    }
    write_if_changed(a, &elfs, out, step)
}

fn add_tree(
    a: &mut Archive,
    host: &Path,
    excluded: &[&str],
    elfs: &mut Vec<PathBuf>,
) -> Result<()> {
    for e in std::fs::read_dir(host).with_context(|| format!("reading {}", host.display()))? {
        let e = e?;
        let name = e.file_name().to_string_lossy().into_owned();
        if excluded.contains(&name.as_str()) {
            continue;
        }
        let path = e.path();
        let guest = path.to_string_lossy().into_owned();
        let ft = e.file_type()?;
        if ft.is_symlink() {
            a.symlink(&guest, &std::fs::read_link(&path)?.to_string_lossy());
        } else if ft.is_dir() {
            a.dir(&guest);
            add_tree(a, &path, excluded, elfs)?;
        } else if ft.is_file() {
            a.host_file(&guest, &path)?;
            if name.ends_with(".so") || name.contains(".so.") {
                elfs.push(path);
            }
        }
    }
    Ok(())
}

/// What the guest's /init does after setup.
#[derive(Clone, Debug)]
pub enum Mode {
    /// An interactive shell on the console.
    Shell,
    /// Run a command; report its status.
    Exec(String),
    /// Run the guest suite with an optional filter.
    Suite(Option<String>),
    /// Run only the suite's killed-device test: the host kills
    /// pktaccel-device when the guest prints [`pktaccel_abi::console::KILL_DEVICE`].
    DeviceKill,
    /// Run only [`DEATH_TEST`]: the device dies of an injected fault.
    FaultDeath,
}

/// Run only the suite's injected-death test: on the guest's cue the
/// device gets a `die-after` fault and exits by itself (status 3), which
/// the host then expects instead of treating it as a crash.
pub const DEATH_TEST: &str = "faults::device_dies_after_n_requests";

/// Console line on which the host kills pktaccel-device (DeviceKill mode).
/// The guest test that prints [`pktaccel_abi::console::KILL_DEVICE`] and checks the driver's recovery.
pub const KILL_TEST: &str = "kmod::device_killed_while_in_flight";

/// Writes the per-run archive.
pub fn write_overlay(out: &Path, mode: &Mode, includes: &[(PathBuf, String)]) -> Result<()> {
    let mut a = Archive::default();
    let (name, extra) = match mode {
        Mode::Shell => ("shell", String::new()),
        Mode::Exec(cmd) => {
            a.file(
                "/etc/pktaccel/exec.sh",
                format!("{cmd}\n").into_bytes(),
                0o755,
            );
            ("exec", String::new())
        }
        Mode::Suite(filter) => (
            "suite",
            format!(
                "SUITE_FILTER='{}'\n",
                filter.clone().unwrap_or_default().replace('\'', "")
            ),
        ),
        Mode::FaultDeath => (
            "suite",
            format!("SUITE_FILTER='{DEATH_TEST}'\nexport PKTACCEL_DEVICE_DEATH_TEST=1\n"),
        ),
        Mode::DeviceKill => (
            "suite",
            format!("SUITE_FILTER='{KILL_TEST}'\nexport PKTACCEL_DEVICE_KILL_TEST=1\n"),
        ),
    };
    a.file(
        "/etc/pktaccel/run.conf",
        format!("MODE={name}\n{extra}").into_bytes(),
        0o644,
    );
    for (host, guest) in includes {
        a.host_tree(guest, host)?;
    }
    a.write(out)
}

/// Concatenates the base and per-run archives into one initrd.
pub fn concat(parts: &[&Path], out: &Path) -> Result<()> {
    let mut w = std::fs::File::create(out)?;
    for p in parts {
        let mut data = std::fs::read(p)?;
        // The kernel wants each archive in a concatenation 4-byte aligned.
        while data.len() % 4 != 0 {
            data.push(0);
        }
        w.write_all(&data)?;
    }
    Ok(())
}

#[cfg(test)]
mod console_marker_tests {
    use pktaccel_abi::console;

    /// Words in `text` that look like console markers (family prefixes such
    /// as a bare `PKTACCEL-` are not markers).
    fn marker_words(text: &str) -> Vec<&str> {
        text.split(|c: char| !(c.is_ascii_uppercase() || c == '-'))
            .map(|w| w.trim_end_matches('-'))
            .filter(|w| {
                w.starts_with("PKTTEST")
                    || (w.starts_with("PKTACCEL-") || w.starts_with("PKTBENCH-"))
            })
            .collect()
    }

    #[test]
    fn scripts_use_only_the_defined_console_markers() {
        let ws = crate::vm::workspace_root();
        let files = [
            "images/init",
            "xtask/src/bench.rs",
            "xtask/src/bench_openssl.rs",
            "xtask/src/bench_programs.rs",
        ];
        let mut seen = 0;
        for f in files {
            let text = std::fs::read_to_string(ws.join(f)).unwrap();
            for w in marker_words(&text) {
                assert!(
                    console::ALL.contains(&w),
                    "{f} uses console marker {w}, which pktaccel_abi::console does not define"
                );
                seen += 1;
            }
        }
        assert!(seen > 5, "found only {seen} markers: the scan is broken");
        assert_eq!(marker_words("echo PKTACCEL-NOPE x"), ["PKTACCEL-NOPE"]);
    }

    #[test]
    fn shared_libs_come_from_ldd_and_a_static_binary_needs_none() {
        let mut a = super::Archive::default();
        super::add_shared_libs(&mut a, &[std::path::PathBuf::from("/bin/sh")]).unwrap();
        assert!(
            a.nodes.keys().any(|k| k.contains("libc.so")),
            "{:?}",
            a.nodes.keys().collect::<Vec<_>>()
        );
        let mut b = super::Archive::default();
        super::add_shared_libs(&mut b, &[std::path::PathBuf::from("/bin/busybox")]).unwrap();
        assert!(
            b.nodes.is_empty(),
            "{:?}",
            b.nodes.keys().collect::<Vec<_>>()
        );
    }
}
