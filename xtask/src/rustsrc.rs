//! Packages the host release does not carry, fetched from Debian's
//! trixie-backports without touching the system's apt configuration: the
//! Rust library sources matching the active rustc (the kernel's Rust build
//! needs exactly those), the Linux 7.x source, and bindgen-cli.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime};

use anyhow::{Context, Result, bail};
use xshell::{Cmd, Shell, cmd};

use crate::cache::Cache;
use crate::deps::{parse_version, run_quiet};
use crate::step::{Step, bar};

/// Private apt state under the cache: sources list and package lists.
pub struct PrivateApt {
    dir: PathBuf,
    sh: Shell,
}

impl PrivateApt {
    /// Sets up the private sources list (trixie-backports and trixie, on the
    /// mirror the host already uses) and refreshes the lists when older than
    /// a day.
    pub fn open(cache: &Cache) -> Result<Self> {
        Self::open_with_mirror(cache, &host_mirror())
    }

    /// [`PrivateApt::open`] on an explicit mirror.
    pub fn open_with_mirror(cache: &Cache, mirror: &str) -> Result<Self> {
        let dir = cache.apt_dir();
        for sub in ["lists/partial", "cache/archives/partial"] {
            std::fs::create_dir_all(dir.join(sub))?;
        }
        let list = format!("deb {mirror} trixie-backports main\ndeb {mirror} trixie main\n");
        let list_path = dir.join("sources.list");
        let changed = std::fs::read_to_string(&list_path).ok().as_deref() != Some(list.as_str());
        std::fs::write(&list_path, &list)?;
        let apt = Self {
            dir,
            sh: Shell::new()?,
        };
        let stamp = apt.dir.join("lists/.updated");
        let fresh = std::fs::metadata(&stamp)
            .and_then(|m| m.modified())
            .map(|t| {
                SystemTime::now().duration_since(t).unwrap_or_default()
                    < Duration::from_secs(86_400)
            })
            .unwrap_or(false);
        if changed || !fresh {
            let step = Step::start("package lists for trixie-backports");
            run_quiet(apt.command("apt-get").args(["update", "--error-on=any"])).with_context(
                || format!("cannot reach the Debian mirror {mirror}: check the network"),
            )?;
            std::fs::write(&stamp, b"")?;
            step.done("updated");
        }
        Ok(apt)
    }

    /// An apt command reading only our private configuration.
    pub fn command(&self, tool: &str) -> Cmd<'_> {
        let d = &self.dir;
        let (sources, lists, cache) = (d.join("sources.list"), d.join("lists"), d.join("cache"));
        cmd!(
            self.sh,
            "{tool} -oDir::Etc::SourceList={sources} -oDir::Etc::SourceParts=/dev/null
                -oDir::State::Lists={lists} -oDir::Cache={cache}
                -oAPT::Get::List-Cleanup=0 -oAPT::Sandbox::User=root -q"
        )
    }

    /// Every version of `pkg` the private lists know, newest first.
    pub fn versions(&self, pkg: &str) -> Result<Vec<String>> {
        let out = run_quiet(self.command("apt-cache").args(["madison", pkg]))?;
        let mut v: Vec<String> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.split('|').nth(1).map(|s| s.trim().to_string()))
            .collect();
        v.dedup();
        Ok(v)
    }

    /// Package names matching a regex.
    pub fn search_names(&self, regex: &str) -> Result<Vec<String>> {
        let out = run_quiet(
            self.command("apt-cache")
                .args(["search", "--names-only", regex]),
        )?;
        Ok(String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.split_whitespace().next().map(String::from))
            .collect())
    }

    /// Downloads `pkg=version` into the cache's debs dir (with a progress
    /// bar) and returns the .deb path; reuses a previous download.
    pub fn download(&self, cache: &Cache, pkg: &str, version: &str) -> Result<PathBuf> {
        let debs = cache.debs_dir();
        std::fs::create_dir_all(&debs)?;
        let prefix = format!("{pkg}_");
        let fname_version = version.replace(':', "%3a");
        let find = || -> Option<PathBuf> {
            std::fs::read_dir(&debs)
                .ok()?
                .flatten()
                .map(|e| e.path())
                .find(|p| {
                    p.file_name().and_then(|n| n.to_str()).is_some_and(|n| {
                        n.starts_with(&prefix) && n.contains(&fname_version) && n.ends_with(".deb")
                    })
                })
        };
        if let Some(p) = find() {
            return Ok(p);
        }
        let step = Step::start(format!("download {pkg} {version}"));
        let size = self.size_of(pkg, version).unwrap_or(0);
        let pb = bar(size.max(1), pkg, true);
        // A std `Command` (built by xshell's `cmd!`): the bar polls the
        // download's size while apt-get runs, and xshell only returns
        // once a command has ended.
        let mut child = Command::from(
            self.command("apt-get")
                .args(["download", &format!("{pkg}={version}")]),
        );
        let mut child = child
            .current_dir(&debs)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .context("cannot start apt-get")?;
        loop {
            if let Some(status) = child.try_wait()? {
                pb.finish_and_clear();
                if !status.success() {
                    let mut err = String::new();
                    if let Some(mut e) = child.stderr.take() {
                        use std::io::Read;
                        let _ = e.read_to_string(&mut err);
                    }
                    bail!(
                        "downloading {pkg} {version} failed: {}\n  check the network to the Debian mirror",
                        err.trim()
                    );
                }
                break;
            }
            pb.set_position(dir_bytes(&debs, &prefix));
            std::thread::sleep(Duration::from_millis(250));
        }
        let path = find().with_context(|| {
            format!(
                "apt-get reported success but no {pkg} .deb is in {}",
                debs.display()
            )
        })?;
        step.done(&format!(
            "{} MB",
            std::fs::metadata(&path)?.len() / 1_000_000
        ));
        Ok(path)
    }

    fn size_of(&self, pkg: &str, version: &str) -> Option<u64> {
        let out = self
            .command("apt-cache")
            .args(["show", &format!("{pkg}={version}")])
            .quiet()
            .ignore_status()
            .output()
            .ok()?;
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .find_map(|l| l.strip_prefix("Size: ")?.trim().parse().ok())
    }
}

/// Bytes in files of `dir` (and its partial/) whose name starts with `prefix`.
fn dir_bytes(dir: &Path, prefix: &str) -> u64 {
    [dir.to_path_buf(), dir.join("partial")]
        .iter()
        .filter_map(|d| std::fs::read_dir(d).ok())
        .flatten()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(prefix))
        .filter_map(|e| e.metadata().ok())
        .map(|m| m.len())
        .sum()
}

/// The Debian mirror the host's apt already uses (so proxies and mirrors
/// chosen by the admin apply), else deb.debian.org; `PKTACCEL_DEBIAN_MIRROR`
/// overrides it.
pub fn host_mirror() -> String {
    if let Ok(m) = std::env::var("PKTACCEL_DEBIAN_MIRROR") {
        return m.trim_end_matches('/').to_string();
    }
    let sources = [
        "/etc/apt/sources.list.d/debian.sources",
        "/etc/apt/sources.list",
    ];
    for s in sources {
        let Ok(text) = std::fs::read_to_string(s) else {
            continue;
        };
        for line in text.lines() {
            let line = line.trim();
            let uri = if let Some(rest) = line.strip_prefix("URIs:") {
                rest.split_whitespace().next()
            } else if line.starts_with("deb ") {
                line.split_whitespace().find(|w| w.starts_with("http"))
            } else {
                None
            };
            if let Some(u) = uri.filter(|u| !u.contains("security")) {
                return u.trim_end_matches('/').to_string();
            }
        }
    }
    "http://deb.debian.org/debian".to_string()
}

/// Upstream part of a Debian version: `1:7.3.4-1~bpo13+1` → `7.3.4`,
/// `1.95.0+dfsg1-2~bpo13+1` → `1.95.0`.
pub fn upstream(version: &str) -> &str {
    let v = version.split_once(':').map_or(version, |(_, r)| r);
    let end = v.find(['-', '+', '~']).unwrap_or(v.len());
    &v[..end]
}

/// Unpacks a .deb into `dest` atomically (via a `.part` dir).
pub fn unpack_deb(deb: &Path, dest: &Path) -> Result<()> {
    let part = dest.with_extension("part");
    let _ = std::fs::remove_dir_all(&part);
    std::fs::create_dir_all(&part)?;
    let sh = Shell::new()?;
    run_quiet(cmd!(sh, "dpkg-deb -x {deb} {part}"))?;
    std::fs::rename(&part, dest)?;
    Ok(())
}

/// The active rustc's version, e.g. `1.95.0`.
pub fn rustc_version() -> Result<String> {
    let sh = Shell::new()?;
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let out = run_quiet(cmd!(sh, "{rustc} --version"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    let (a, b, c) = parse_version(&text)
        .with_context(|| format!("cannot parse rustc version from {text:?}"))?;
    Ok(format!("{a}.{b}.{c}"))
}

/// Ensures the Rust library sources of the active rustc are unpacked and
/// returns the `library` dir the kernel build wants as RUST_LIB_SRC.
pub fn ensure_rust_src(cache: &Cache, apt: &mut Option<PrivateApt>) -> Result<PathBuf> {
    let ver = rustc_version()?;
    let dir = cache.rust_src_dir(&ver);
    let lib = dir.join(format!("usr/src/rustc-{ver}/library"));
    let step = Step::start(format!("rust-src {ver}"));
    if lib.join("core").is_dir() {
        step.done("cached");
        return Ok(lib);
    }
    let apt = open_apt(cache, apt)?;
    let versions = apt.versions("rust-src")?;
    let Some(deb_ver) = versions.iter().find(|v| upstream(v) == ver) else {
        let have: Vec<&str> = versions.iter().map(|v| upstream(v)).collect();
        bail!(
            "Debian has no rust-src for rustc {ver} (it has: {}).\n  The kernel's Rust build needs the library sources of the exact rustc in use:\n  switch toolchains, e.g. `rustup default {}`, and run again",
            have.join(", "),
            have.first().copied().unwrap_or("1.95.0")
        );
    };
    let deb = apt.download(cache, "rust-src", deb_ver)?;
    unpack_deb(&deb, &dir)?;
    if !lib.join("core").is_dir() {
        bail!(
            "rust-src {deb_ver} unpacked but {} is missing",
            lib.display()
        );
    }
    step.done("unpacked");
    Ok(lib)
}

/// Ensures the newest Linux 7.x source from Debian is unpacked; returns its
/// tree and upstream version.
pub fn ensure_linux_src(cache: &Cache, apt: &mut Option<PrivateApt>) -> Result<(PathBuf, String)> {
    // Reuse an unpacked tree without touching the network.
    if let Some(found) = newest_unpacked_linux(cache) {
        let step = Step::start(format!("linux source {}", found.1));
        step.done("cached");
        return Ok(found);
    }
    let apt = open_apt(cache, apt)?;
    let mut names: Vec<(u32, String)> = apt
        .search_names("^linux-source-7\\.[0-9]+$")?
        .into_iter()
        .filter_map(|n| {
            n.rsplit('.')
                .next()
                .and_then(|m| m.parse().ok())
                .map(|m| (m, n))
        })
        .collect();
    names.sort();
    let (_, pkg) = names.pop().context(
        "Debian's trixie-backports has no linux-source-7.x package: cannot build the guest kernel",
    )?;
    let version = apt
        .versions(&pkg)?
        .into_iter()
        .next()
        .with_context(|| format!("no version of {pkg} found"))?;
    let up = upstream(&version).to_string();
    let step = Step::start(format!("linux source {up}"));
    let deb = apt.download(cache, &pkg, &version)?;
    let unpacked = cache.root().join(format!("{pkg}.deb-x"));
    let _ = std::fs::remove_dir_all(&unpacked);
    unpack_deb(&deb, &unpacked)?;
    let tarball = std::fs::read_dir(unpacked.join("usr/src"))?
        .flatten()
        .map(|e| e.path())
        .find(|p| p.to_string_lossy().ends_with(".tar.xz"))
        .context("linux-source package holds no .tar.xz")?;
    let dest = cache.linux_src_dir(&up);
    let part = dest.with_extension("part");
    let _ = std::fs::remove_dir_all(&part);
    std::fs::create_dir_all(&part)?;
    let sh = Shell::new()?;
    run_quiet(cmd!(
        sh,
        "tar -xJf {tarball} -C {part} --strip-components=1"
    ))
    .context("unpacking the kernel source")?;
    std::fs::rename(&part, &dest)?;
    std::fs::remove_dir_all(&unpacked)?;
    step.done("unpacked");
    Ok((dest, up))
}

fn newest_unpacked_linux(cache: &Cache) -> Option<(PathBuf, String)> {
    let mut found: Vec<((u32, u32, u32), PathBuf, String)> = std::fs::read_dir(cache.root())
        .ok()?
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let ver = name.strip_prefix("linux-src-")?.to_string();
            if ver.ends_with(".part") || !e.path().join("Makefile").is_file() {
                return None;
            }
            Some((parse_version(&ver)?, e.path(), ver))
        })
        .collect();
    found.sort();
    found.pop().map(|(_, p, v)| (p, v))
}

fn open_apt<'a>(cache: &Cache, apt: &'a mut Option<PrivateApt>) -> Result<&'a PrivateApt> {
    if apt.is_none() {
        *apt = Some(PrivateApt::open(cache)?);
    }
    Ok(apt.as_ref().expect("just set"))
}

/// Ensures bindgen-cli ≥ 0.71.1 (the kernel's minimum) and returns the dir
/// to put first in PATH.
pub fn ensure_bindgen(cache: &Cache) -> Result<PathBuf> {
    let step = Step::start("bindgen-cli");
    let bin_dir = cache.tools_dir().join("bin");
    let sh = Shell::new()?;
    let ok = |p: &Path| {
        cmd!(sh, "{p} --version")
            .quiet()
            .ignore_status()
            .ignore_stderr()
            .output()
            .ok()
            .and_then(|o| parse_version(&String::from_utf8_lossy(&o.stdout)))
            .is_some_and(|v| v >= (0, 71, 1))
    };
    if ok(&bin_dir.join("bindgen")) {
        step.done("cached");
        return Ok(bin_dir);
    }
    eprintln!("    cargo install --locked bindgen-cli (about 80 s)");
    let root = cache.tools_dir();
    run_quiet(cmd!(
        sh,
        "cargo install --locked --quiet bindgen-cli --root {root}"
    ))
    .context("cannot install bindgen-cli from the crate registry: check the network")?;
    if !ok(&bin_dir.join("bindgen")) {
        bail!(
            "bindgen installed into {} but does not report a version ≥ 0.71.1",
            bin_dir.display()
        );
    }
    step.done("installed");
    Ok(bin_dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstream_strips_epoch_and_debian_revision() {
        assert_eq!(upstream("7.3.4-1~bpo13+1"), "7.3.4");
        assert_eq!(upstream("1.95.0+dfsg1-2~bpo13+1"), "1.95.0");
        assert_eq!(upstream("1:11.1.3+ds-1~bpo13+1"), "11.1.3");
    }

    #[test]
    fn an_unreachable_mirror_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::locate(Some(dir.path().to_path_buf())).unwrap();
        // Port 9 (discard) on loopback: nothing listens, the connection is refused.
        let err = PrivateApt::open_with_mirror(&cache, "http://127.0.0.1:9/debian")
            .err()
            .expect("update must fail");
        let msg = format!("{err:#}");
        assert!(
            msg.contains("cannot reach the Debian mirror http://127.0.0.1:9/debian"),
            "{msg}"
        );
    }
}
