//! Builds `kmod/` out of tree against one kernel variant. The sources and
//! the shared ABI file are mirrored into `target/kmod/<variant>/` so the
//! build leaves no artifacts in the clone and the two variants don't clash.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use xshell::{Shell, cmd};

use crate::deps::run_quiet;
use crate::kernel::{Kernel, Variant};
use crate::step::Step;

/// Builds pktaccel.ko for `kernel` and returns its path.
pub fn build(workspace: &Path, kernel: &Kernel, variant: Variant) -> Result<PathBuf> {
    let step = Step::start(format!("kmod ({})", variant.name()));
    let src = workspace.join("kmod");
    if !src.join("Kbuild").is_file() && !src.join("Makefile").is_file() {
        bail!(
            "{} has no Kbuild or Makefile: the kernel module sources are missing from this checkout",
            src.display()
        );
    }
    let root = workspace.join("target/kmod").join(variant.name());
    let mirror = root.join("kmod");
    let changed = sync_dir(&src, &mirror)?
        | sync_file(
            &workspace.join("abi/src/pktaccel_abi.rs"),
            &root.join("abi/src/pktaccel_abi.rs"),
        )?;
    let ko = mirror.join("pktaccel.ko");
    let stamp = mirror.join(".pktaccel-kernel");
    let kernel_id = format!(
        "{}:{}",
        kernel.build_dir.display(),
        std::fs::read_to_string(kernel.build_dir.join(".pktaccel-stamp")).unwrap_or_default()
    );
    if !changed
        && ko.is_file()
        && std::fs::read_to_string(&stamp).ok().as_deref() == Some(kernel_id.as_str())
    {
        step.done("up to date");
        return Ok(ko);
    }
    let sh = Shell::new()?;
    let (build_dir, make_vars) = (&kernel.build_dir, &kernel.make_vars);
    let make = cmd!(sh, "make -C {build_dir} M={mirror} {make_vars...} modules")
        .env("PATH", &kernel.path_env);
    run_quiet(make).context("the kernel module does not build")?;
    if !ko.is_file() {
        bail!(
            "kmod build succeeded but produced no pktaccel.ko in {}",
            mirror.display()
        );
    }
    std::fs::write(&stamp, kernel_id)?;
    step.done("built");
    Ok(ko)
}

/// Checks `kmod/` as the kernel checks its own Rust: rustfmt with the
/// kernel's `.rustfmt.toml`, then a clippy build (`CLIPPY=1`) with warnings
/// denied. The kernel's `rustfmtcheck` target only walks the kernel tree, so
/// rustfmt is called directly; the clippy build has a mirror of its own so it
/// never replaces the module the guest boots.
pub fn lint(workspace: &Path, kernel: &Kernel) -> Result<()> {
    let sh = Shell::new()?;
    let src = workspace.join("kmod");
    let config = kernel.build_dir.join("source/.rustfmt.toml");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&src)
        .with_context(|| format!("reading {}", src.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "rs"))
        .collect();
    files.sort();
    run_quiet(cmd!(sh, "rustfmt --check --config-path {config} {files...}")).context(
        "kmod/ is not formatted the kernel's way; run `rustfmt --config-path <linux source>/.rustfmt.toml kmod/*.rs`",
    )?;
    let root = workspace.join("target/kmod/clippy");
    let mirror = root.join("kmod");
    sync_dir(&src, &mirror)?;
    sync_file(
        &workspace.join("abi/src/pktaccel_abi.rs"),
        &root.join("abi/src/pktaccel_abi.rs"),
    )?;
    let (build_dir, make_vars) = (&kernel.build_dir, &kernel.make_vars);
    let make = cmd!(
        sh,
        "make -C {build_dir} M={mirror} {make_vars...} CLIPPY=1 KRUSTFLAGS=-Dwarnings modules"
    )
    .env("PATH", &kernel.path_env);
    run_quiet(make)
        .context("clippy (the kernel's CLIPPY=1 build, warnings denied) rejects kmod/")?;
    Ok(())
}

/// Mirrors the regular files of `src` (recursively) into `dst`; returns
/// whether anything changed. Stale files from a previous mirror are removed
/// only if they were sources (build outputs stay for incremental builds).
fn sync_dir(src: &Path, dst: &Path) -> Result<bool> {
    std::fs::create_dir_all(dst)?;
    let mut changed = false;
    for entry in std::fs::read_dir(src).with_context(|| format!("reading {}", src.display()))? {
        let entry = entry?;
        let path = entry.path();
        let target = dst.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            changed |= sync_dir(&path, &target)?;
        } else {
            changed |= sync_file(&path, &target)?;
        }
    }
    Ok(changed)
}

fn sync_file(src: &Path, dst: &Path) -> Result<bool> {
    let data = std::fs::read(src).with_context(|| format!("reading {}", src.display()))?;
    if std::fs::read(dst).ok().as_deref() == Some(&data[..]) {
        return Ok(false);
    }
    if let Some(parent) = dst.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(dst, data)?;
    Ok(true)
}
