//! Builds the workspace's host and guest programs with cargo and reports
//! where the artifacts are, from cargo's own JSON messages.

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};
use xshell::{Shell, cmd};

use crate::step::Step;

/// What the rig runs: the device on the host; programs and libraries that
/// go into the guest (same x86_64-linux-gnu target, copied with their
/// shared libraries).
#[derive(Debug, Default)]
pub struct Artifacts {
    /// `pktaccel-device`.
    pub device: PathBuf,
    /// Guest executables (the guest suite, pktctl, pktbench, the KAT tool).
    pub guest_bins: Vec<PathBuf>,
    /// Guest shared libraries (`libpktslab.so`).
    pub guest_libs: Vec<PathBuf>,
}

/// Packages whose binaries go into the guest: the guest suite (`tests/`),
/// the user tools (`tools/`), the libraries and the provider.
const GUEST_PACKAGES: &[&str] = &[
    "pktaccel-tests",
    "pktaccel-tools",
    "pktslab",
    "pktcrc",
    "pktaccel-provider",
];

/// `cargo build --release` of the device and the guest programs.
pub fn build(workspace: &Path) -> Result<Artifacts> {
    let step = Step::start("cargo build (device, guest programs, libpktslab)");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let sh = Shell::new()?;
    sh.change_dir(workspace);
    let packages = GUEST_PACKAGES.iter().flat_map(|p| ["-p", p]);
    let build = cmd!(
        sh,
        "{cargo} build --release --message-format=json-render-diagnostics
            -p pktaccel-device {packages...}"
    );
    // A std `Command` (built by xshell's `cmd!`): cargo's JSON messages
    // are read as they come while its diagnostics pass through, and xshell
    // only hands back output once a command has ended.
    let mut child = Command::from(build)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .context("cannot run cargo")?;
    let mut arts = Artifacts::default();
    for line in std::io::BufReader::new(child.stdout.take().context("no stdout")?).lines() {
        let line = line?;
        let Ok(msg) = serde_json::from_str::<serde_json::Value>(&line) else {
            continue;
        };
        if msg["reason"] != "compiler-artifact" {
            continue;
        }
        let pkg = msg["package_id"].as_str().unwrap_or_default();
        let kinds: Vec<&str> = msg["target"]["kind"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|k| k.as_str())
            .collect();
        if let Some(exe) = msg["executable"].as_str() {
            let exe = PathBuf::from(exe);
            if msg["target"]["name"] == "pktaccel-device" {
                arts.device = exe;
            } else if GUEST_PACKAGES.iter().any(|p| {
                pkg.contains(&format!("/{p}#"))
                    || pkg.contains(&format!("{p} "))
                    || pkg.contains(&format!("#{p}@"))
            }) {
                arts.guest_bins.push(exe);
            }
        } else if kinds.contains(&"cdylib") {
            for f in msg["filenames"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|f| f.as_str())
            {
                if f.ends_with(".so") {
                    arts.guest_libs.push(guest_lib_name(Path::new(f))?);
                }
            }
        }
    }
    let status = child.wait()?;
    if !status.success() {
        bail!("cargo build failed ({status}); the compiler output is above");
    }
    if arts.device.as_os_str().is_empty() {
        bail!("cargo built no pktaccel-device binary: is qemu-device/ in the workspace?");
    }
    // The guest's libpktslab.so must export malloc & co. for LD_PRELOAD;
    // the workspace build cannot enable `preload`, which would also
    // replace the allocator of every guest program linking the rlib.
    let preload = build_preload(&sh, workspace, &cargo)?;
    arts.guest_libs
        .retain(|l| l.file_name() != preload.file_name());
    arts.guest_libs.push(preload);
    step.done(&format!(
        "{} guest programs, {} libraries",
        arts.guest_bins.len(),
        arts.guest_libs.len()
    ));
    Ok(arts)
}

/// `libpktslab.so` built with `--features preload` in a target directory
/// of its own (`target/preload`), so both builds stay incremental.
fn build_preload(sh: &Shell, workspace: &Path, cargo: &std::ffi::OsStr) -> Result<PathBuf> {
    let target = workspace.join("target/preload");
    cmd!(
        sh,
        "{cargo} build --release --quiet -p pktslab --features preload --lib
            --target-dir {target}"
    )
    .quiet()
    .run()
    .context("cargo build of the preload libpktslab.so failed; the compiler output is above")?;
    Ok(target.join("release/libpktslab.so"))
}

/// The guest name of a built library: cargo cannot put a hyphen in a
/// library name, but the provider is documented as
/// `libpktaccel-provider.so`; it is copied to that name next to cargo's.
fn guest_lib_name(built: &Path) -> Result<PathBuf> {
    if built.file_name() != Some("libpktaccel_provider.so".as_ref()) {
        return Ok(built.to_path_buf());
    }
    let to = built.with_file_name("libpktaccel-provider.so");
    std::fs::copy(built, &to)
        .with_context(|| format!("copying {} to {}", built.display(), to.display()))?;
    Ok(to)
}
