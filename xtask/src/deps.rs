//! Host packages from the machine's own Debian release, and the one helper
//! xshell lacks: running a command quietly (the step line is the progress)
//! with its last output lines in the error when it fails.

use std::path::Path;
use std::process::Output;

use anyhow::{Context, Result, bail};
use xshell::{Cmd, Shell, cmd};

use crate::step::Step;

/// Debian (bookworm) packages the rig needs on the host: the kernel build
/// chain (LLVM 19 for Rust + KASAN, libclang for bindgen), cpio tooling,
/// debootstrap for the QEMU root, a static busybox for the guest, and the
/// programs the guest suites run unmodified.
pub const HOST_PACKAGES: &[&str] = &[
    "build-essential",
    "flex",
    "bison",
    "bc",
    "libelf-dev",
    "libssl-dev",
    "cpio",
    "xz-utils",
    "zstd",
    "clang-19",
    "lld-19",
    "llvm-19",
    "libclang-19-dev",
    "debootstrap",
    "busybox-static",
    "sqlite3",
    "pigz",
    "python3",
    "openssl",
    "git",
    // The allocators `cargo xtask bench` compares pktslab with.
    "libjemalloc2",
    "libmimalloc2.0",
];

/// Whether we run as root (apt and chroot need it).
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// Packages from `wanted` that dpkg does not report as installed.
pub fn missing_packages(wanted: &[&str]) -> Result<Vec<String>> {
    // One dpkg-query for all: it prints a line per known package and
    // complains on stderr about unknown ones.
    // dpkg-query exits 1 when some package is unknown: that is an answer.
    let sh = Shell::new()?;
    let format = "-f=${Package} ${db:Status-Abbrev}\n";
    let out = cmd!(sh, "dpkg-query -W {format} {wanted...}")
        .quiet()
        .ignore_status()
        .ignore_stderr()
        .output()
        .context("dpkg-query not found: the rig needs a Debian (12 bookworm) host")?;
    let text = String::from_utf8_lossy(&out.stdout);
    let installed: Vec<&str> = text
        .lines()
        .filter_map(|l| l.split_once(' '))
        .filter(|(_, status)| status.starts_with("ii"))
        .map(|(name, _)| name.split(':').next().unwrap_or(name))
        .collect();
    Ok(wanted
        .iter()
        .filter(|p| !installed.contains(p))
        .map(|p| (*p).to_string())
        .collect())
}

/// Installs the missing host packages with apt (as root), or tells the user
/// the exact line to run.
pub fn ensure_host_packages() -> Result<()> {
    let step = Step::start("host packages");
    let missing = missing_packages(HOST_PACKAGES)?;
    if missing.is_empty() {
        step.done("all present");
        return Ok(());
    }
    let line = apt_line(&missing);
    if !is_root() {
        bail!("{}", not_root_message(&missing));
    }
    eprintln!("    installing {}", missing.join(" "));
    let sh = Shell::new()?;
    let pkgs = &missing;
    run_quiet(cmd!(sh, "apt-get update -q"))
        .context("cannot reach the Debian mirror: check the network or the proxy apt uses")?;
    run_quiet(
        cmd!(
            sh,
            "apt-get install -y -q --no-install-recommends {pkgs...}"
        )
        .env("DEBIAN_FRONTEND", "noninteractive"),
    )
    .with_context(|| format!("installing host packages failed; try by hand: {line}"))?;
    step.done(&format!("installed {}", missing.len()));
    Ok(())
}

/// The apt command that installs `missing`.
fn apt_line(missing: &[String]) -> String {
    format!(
        "apt-get update && apt-get install -y --no-install-recommends {}",
        missing.join(" ")
    )
}

/// What a non-root user is told to run.
fn not_root_message(missing: &[String]) -> String {
    format!(
        "missing Debian packages: {}\n  run as root:  sudo sh -c '{}'\n  then run the xtask again",
        missing.join(" "),
        apt_line(missing)
    )
}

/// Runs `cmd` with stdin closed and its output captured. xshell's own
/// error names the command but drops the output, so on failure this one
/// shows the command, its exit status and the last lines it printed.
pub fn run_quiet(cmd: Cmd<'_>) -> Result<Output> {
    let cmd = cmd.quiet().ignore_status();
    let out = cmd.output()?;
    if !out.status.success() {
        bail!(
            "`{cmd}` failed ({}):\n{}",
            out.status,
            tail_of(&[&out.stdout, &out.stderr], 25)
        );
    }
    Ok(out)
}

/// The last `n` lines of the concatenated outputs, indented.
fn tail_of(parts: &[&[u8]], n: usize) -> String {
    let text: String = parts
        .iter()
        .map(|p| String::from_utf8_lossy(p).into_owned())
        .collect::<Vec<_>>()
        .join("\n");
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    let start = lines.len().saturating_sub(n);
    lines[start..]
        .iter()
        .map(|l| format!("    | {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The last `n` lines of a file (for logs of dead processes).
pub fn file_tail(path: &Path, n: usize) -> String {
    match std::fs::read(path) {
        Ok(b) => tail_of(&[&b], n),
        Err(e) => format!("    | (cannot read {}: {e})", path.display()),
    }
}

/// Parses the first `X.Y[.Z]` in `text` into a comparable triple.
pub fn parse_version(text: &str) -> Option<(u32, u32, u32)> {
    text.split(|c: char| !(c.is_ascii_digit() || c == '.'))
        .find_map(|tok| {
            let mut it = tok
                .split('.')
                .filter(|s| !s.is_empty())
                .map(|s| s.parse::<u32>());
            let major = it.next()?.ok()?;
            let minor = it.next()?.ok()?;
            let patch = it.next().and_then(|r| r.ok()).unwrap_or(0);
            Some((major, minor, patch))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_parse_from_tool_banners() {
        assert_eq!(
            parse_version("QEMU emulator version 11.1.3 (Debian 1:11.1.3+ds-1~bpo13+1)"),
            Some((11, 1, 3))
        );
        assert_eq!(parse_version("bindgen 0.73.2"), Some((0, 73, 2)));
        assert_eq!(
            parse_version("rustc 1.95.0 (59807616e 2026-04-14)"),
            Some((1, 95, 0))
        );
        assert_eq!(parse_version("QEMU emulator version 7.2"), Some((7, 2, 0)));
        assert_eq!(parse_version("no digits"), None);
    }

    #[test]
    fn missing_packages_are_found_and_named_with_the_apt_line() {
        let missing = missing_packages(&["dpkg", "pktaccel-no-such-package"]).unwrap();
        assert_eq!(missing, ["pktaccel-no-such-package"]);
        let msg = not_root_message(&missing);
        assert!(msg.contains("sudo sh -c 'apt-get update && apt-get install -y --no-install-recommends pktaccel-no-such-package'"), "{msg}");
    }

    #[test]
    fn a_failing_command_is_shown_with_its_status_and_last_output() {
        let sh = Shell::new().unwrap();
        let script = "echo compiling; echo boom >&2; exit 3";
        let err = format!("{:#}", run_quiet(cmd!(sh, "sh -c {script}")).unwrap_err());
        assert!(err.contains("`sh -c \"echo compiling;"), "{err}");
        assert!(err.contains("exit status: 3"), "{err}");
        assert!(err.contains("    | compiling\n    | boom"), "{err}");
    }

    #[test]
    fn a_missing_program_is_named() {
        let sh = Shell::new().unwrap();
        let err = format!(
            "{:#}",
            run_quiet(cmd!(sh, "pktaccel-no-such-tool --version")).unwrap_err()
        );
        assert!(err.contains("pktaccel-no-such-tool"), "{err}");
    }

    #[test]
    fn tail_keeps_the_last_lines() {
        let t = tail_of(&[b"a\nb\n\nc\n", b"d"], 2);
        assert_eq!(t, "    | c\n    | d");
    }
}
