//! The guest kernel: Debian's Linux source + `make tinyconfig` + the
//! project's fragments in `images/`, built with LLVM 19 so Rust (and KASAN
//! in the debug variant) are on. Rebuilt only when its inputs change.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};
use sha2::{Digest, Sha256};
use xshell::{Cmd, Shell, cmd};

use crate::cache::Cache;
use crate::deps::{file_tail, run_quiet};
use crate::step::{Step, bar};

/// Bump when the build recipe below changes in a way the inputs don't show.
const RECIPE: &str = "pktaccel-kernel-recipe-1";

/// Which kernel to build.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Variant {
    /// The fast kernel for interactive use.
    Plain,
    /// KASAN + lockdep + sleep-in-atomic checks, for the guest suite.
    Debug,
}

impl Variant {
    /// Name used for cache dirs and messages.
    pub fn name(self) -> &'static str {
        match self {
            Variant::Plain => "plain",
            Variant::Debug => "debug",
        }
    }

    fn fragments(self, workspace: &Path) -> Vec<PathBuf> {
        let images = workspace.join("images");
        match self {
            Variant::Plain => vec![images.join("kernel.config")],
            Variant::Debug => vec![
                images.join("kernel.config"),
                images.join("kernel-debug.config"),
            ],
        }
    }
}

/// Everything the kmod and the VM need from a built kernel.
#[derive(Clone, Debug)]
pub struct Kernel {
    /// The O= build dir (kmods build against it).
    pub build_dir: PathBuf,
    /// arch/x86/boot/bzImage inside it.
    pub bzimage: PathBuf,
    /// `make kernelrelease`.
    pub release: String,
    /// Make variables every kernel make call needs.
    pub make_vars: Vec<String>,
    /// PATH with bindgen first.
    pub path_env: std::ffi::OsString,
}

/// Inputs that decide whether a rebuild is needed.
pub struct KernelInputs<'a> {
    /// Unpacked Linux source.
    pub src: &'a Path,
    /// Its upstream version.
    pub src_version: &'a str,
    /// RUST_LIB_SRC.
    pub rust_lib_src: &'a Path,
    /// Dir holding bindgen.
    pub bindgen_dir: &'a Path,
    /// The workspace root.
    pub workspace: &'a Path,
}

/// Builds (or reuses) the kernel of `variant`.
pub fn ensure(cache: &Cache, inputs: &KernelInputs<'_>, variant: Variant) -> Result<Kernel> {
    let out = cache.kernel_build_dir(variant.name());
    std::fs::create_dir_all(&out)?;
    let mut path_env = std::ffi::OsString::from(inputs.bindgen_dir);
    path_env.push(":");
    path_env.push(std::env::var_os("PATH").unwrap_or_default());
    let make_vars = vec![
        "LLVM=-19".to_string(),
        format!("RUST_LIB_SRC={}", inputs.rust_lib_src.display()),
    ];
    let key = input_key(inputs, variant)?;
    let stamp = out.join(".pktaccel-stamp");
    let bzimage = out.join("arch/x86/boot/bzImage");
    let step = Step::start(format!(
        "kernel {} ({})",
        inputs.src_version,
        variant.name()
    ));
    let sh = Shell::new()?;
    sh.change_dir(inputs.src);
    let make = |args: &[&str]| {
        let vars = &make_vars;
        cmd!(sh, "make O={out} {vars...} {args...}").env("PATH", &path_env)
    };
    if std::fs::read_to_string(&stamp).ok().as_deref() != Some(key.as_str()) || !bzimage.is_file() {
        configure(inputs, variant, &out, &make)?;
        build_with_progress(
            make(&[&format!("-j{}", jobs()), "bzImage", "modules_prepare"]).into(),
            &out,
            variant,
        )?;
        std::fs::write(&stamp, &key)?;
        step.done("built");
    } else {
        step.done("cached");
    }
    // `bzImage modules_prepare` leaves only vmlinux.symvers; modpost of an
    // out-of-tree module looks for Module.symvers.
    let symvers = out.join("Module.symvers");
    if !symvers.is_file() && out.join("vmlinux.symvers").is_file() {
        std::fs::copy(out.join("vmlinux.symvers"), &symvers)?;
    }
    let rel = run_quiet(make(&["-s", "kernelrelease"]))?;
    let release = String::from_utf8_lossy(&rel.stdout).trim().to_string();
    Ok(Kernel {
        build_dir: out,
        bzimage,
        release,
        make_vars,
        path_env,
    })
}

fn jobs() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2)
}

fn configure<'s>(
    inputs: &KernelInputs<'_>,
    variant: Variant,
    out: &Path,
    make: &dyn Fn(&[&str]) -> Cmd<'s>,
) -> Result<()> {
    run_quiet(make(&["tinyconfig"]))?;
    let sh = Shell::new()?;
    sh.change_dir(inputs.src);
    let config = out.join(".config");
    let fragments = variant.fragments(inputs.workspace);
    // Absolute: a relative program path with a changed cwd is ambiguous.
    let merge = inputs.src.join("scripts/kconfig/merge_config.sh");
    run_quiet(cmd!(sh, "{merge} -m -O {out} {config} {fragments...}"))?;
    run_quiet(make(&["olddefconfig"]))?;
    // Fail early, with the reason, when Kconfig silently dropped an option
    // we rely on (a missing dependency does that).
    let config = std::fs::read_to_string(out.join(".config"))?;
    for f in variant.fragments(inputs.workspace) {
        for line in std::fs::read_to_string(&f)?.lines() {
            let line = line.trim();
            if line.starts_with("CONFIG_")
                && line.ends_with("=y")
                && !config.lines().any(|l| l == line)
            {
                if line == "CONFIG_RUST=y" {
                    let avail = run_quiet(make(&["rustavailable"]));
                    bail!(
                        "the kernel config lost CONFIG_RUST=y: the Rust toolchain is not usable for this kernel\n{}",
                        match avail {
                            Ok(_) => String::new(),
                            Err(e) => format!("{e:#}"),
                        }
                    );
                }
                bail!(
                    "{} asks for {line} but Kconfig dropped it (a dependency is missing); fix the fragment",
                    f.display()
                );
            }
        }
    }
    Ok(())
}

/// Runs the kernel make with a progress bar of compiled objects, estimated
/// from the previous build of this variant. A std `Command` (built by
/// xshell's `cmd!`): xshell only hands back output once the command ends,
/// and the bar needs make's lines as they come.
fn build_with_progress(mut cmd: Command, out: &Path, variant: Variant) -> Result<()> {
    let count_file = out.with_extension("steps");
    let expected: u64 = std::fs::read_to_string(&count_file)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(match variant {
            Variant::Plain => 1300,
            Variant::Debug => 1500,
        });
    let log_path = out.join("pktaccel-build.log");
    let mut log = std::fs::File::create(&log_path)?;
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .stdin(Stdio::null())
        .spawn()
        .context("cannot run make")?;
    let stderr = child.stderr.take().context("no stderr")?;
    let err_thread = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = std::io::Read::read_to_end(&mut BufReader::new(stderr), &mut v);
        v
    });
    let pb = bar(expected, &format!("kernel ({})", variant.name()), false);
    let mut n = 0u64;
    for line in BufReader::new(child.stdout.take().context("no stdout")?).lines() {
        let line = line?;
        use std::io::Write;
        let _ = writeln!(log, "{line}");
        if line.starts_with("  ") {
            n += 1;
            pb.set_position(n.min(expected.saturating_sub(1)));
        }
    }
    let status = child.wait()?;
    let err = err_thread.join().unwrap_or_default();
    {
        use std::io::Write;
        let _ = log.write_all(&err);
    }
    pb.finish_and_clear();
    if !status.success() {
        bail!(
            "kernel build failed ({status}); full log: {}\n{}",
            log_path.display(),
            file_tail(&log_path, 30)
        );
    }
    std::fs::write(count_file, n.to_string())?;
    Ok(())
}

fn input_key(inputs: &KernelInputs<'_>, variant: Variant) -> Result<String> {
    let mut h = Sha256::new();
    h.update(RECIPE);
    h.update(inputs.src_version);
    h.update(inputs.rust_lib_src.to_string_lossy().as_bytes());
    for f in variant.fragments(inputs.workspace) {
        h.update(std::fs::read(&f).with_context(|| format!("reading {}", f.display()))?);
    }
    let sh = Shell::new()?;
    for tool in ["rustc", "clang-19"] {
        let out = cmd!(sh, "{tool} --version")
            .quiet()
            .ignore_status()
            .output()
            .with_context(|| format!("{tool} not found"))?;
        h.update(&out.stdout);
    }
    Ok(hex::encode(h.finalize()))
}
