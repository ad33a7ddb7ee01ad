//! Where provisioned artifacts live: outside the clone, shared by every clone
//! on the machine, each entry named by the inputs that produced it.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

/// The cache root and the paths inside it.
#[derive(Clone, Debug)]
pub struct Cache {
    root: PathBuf,
}

impl Cache {
    /// `--cache-dir`, else `$PKTACCEL_CACHE`, else `$XDG_CACHE_HOME/pktaccel`,
    /// else `~/.cache/pktaccel`.
    pub fn locate(flag: Option<PathBuf>) -> Result<Self> {
        let root = match flag.or_else(|| std::env::var_os("PKTACCEL_CACHE").map(PathBuf::from)) {
            Some(p) => p,
            None => {
                let base = std::env::var_os("XDG_CACHE_HOME")
                    .map(PathBuf::from)
                    .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
                    .context("neither XDG_CACHE_HOME nor HOME is set: pass --cache-dir DIR")?;
                base.join("pktaccel")
            }
        };
        std::fs::create_dir_all(&root).with_context(|| {
            format!(
                "cannot create cache dir {}: pass --cache-dir to a writable place",
                root.display()
            )
        })?;
        let root = root.canonicalize()?;
        Ok(Self { root })
    }

    /// The cache root.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Private apt state for packages outside the host's release.
    pub fn apt_dir(&self) -> PathBuf {
        self.root.join("apt")
    }

    /// Downloaded .deb files.
    pub fn debs_dir(&self) -> PathBuf {
        self.root.join("debs")
    }

    /// Tools installed with `cargo install --root`.
    pub fn tools_dir(&self) -> PathBuf {
        self.root.join("tools")
    }

    /// `rust-src` unpacked for one rustc version.
    pub fn rust_src_dir(&self, version: &str) -> PathBuf {
        self.root.join(format!("rust-src-{version}"))
    }

    /// Linux source tree for one upstream version.
    pub fn linux_src_dir(&self, version: &str) -> PathBuf {
        self.root.join(format!("linux-src-{version}"))
    }

    /// Kernel build output for one variant.
    pub fn kernel_build_dir(&self, variant: &str) -> PathBuf {
        self.root.join("kernel").join(variant)
    }

    /// The provisioned QEMU root (a Debian trixie minbase).
    pub fn qemu_root(&self) -> PathBuf {
        self.root.join("qemu-root")
    }
}
