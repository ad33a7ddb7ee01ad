//! Copies `include/pktslab.h` into `$OUT_DIR/include` and tells crates that
//! build C against libpktslab where it is (`DEP_PKTSLAB_INCLUDE` in their
//! build scripts, through `links = "pktslab"`). A build script may write
//! only under `OUT_DIR`; C users outside cargo take the header from
//! `userlib/include/`.
//!
//! It also links the unwinder into libpktslab.so statically (libgcc_eh)
//! instead of depending on libgcc_s.so: every process that preloads the
//! library would otherwise load one more shared object and run its
//! constructor (CPU feature probing with cpuid, slow in a VM), about 0.05
//! ms per process, which a shell loop of short commands pays hundreds of
//! times.
//!
//! With rustc's own lld as the linker it also orders std's one
//! constructor (which saves argc/argv) right after `_init`, so the code a
//! process runs at load shares one fault-around window with the library's
//! own: one page fault (and 16 page-table entries) less per process.

use std::path::PathBuf;

fn main() {
    if let Err(e) = install_header() {
        eprintln!("error: pktslab build script: {e}");
        std::process::exit(1);
    }
    link_unwinder_statically();
    order_startup_code();
}

/// The mangled name of std's `.init_array` function (`ARGV_INIT_ARRAY`'s
/// `init_wrapper`). Its hash is std's and changes only with the toolchain;
/// a name the linker does not find leaves the layout as it was.
const STARTUP_SYMBOLS: &str =
    "_RNvNvNtNtNtNtCsjrHSEGnQ3l9_3std3sys4args4unix3imp15ARGV_INIT_ARRAY12init_wrapper\n";

/// Places [`STARTUP_SYMBOLS`] first in `.text`, next to `_init`, when the
/// linker is known to be lld (GNU ld has no `--symbol-ordering-file`).
fn order_startup_code() {
    if !linker_is_rust_lld() {
        return;
    }
    let Some(out) = std::env::var_os("OUT_DIR") else {
        return;
    };
    let file = PathBuf::from(out).join("startup-order.txt");
    if std::fs::write(&file, STARTUP_SYMBOLS).is_err() {
        return;
    }
    println!(
        "cargo:rustc-cdylib-link-arg=-Wl,--symbol-ordering-file={},--no-warn-symbol-ordering",
        file.display()
    );
}

/// rustc links x86_64-unknown-linux-gnu with its own lld from 1.90 on,
/// unless a linker or linker flavour is configured.
fn linker_is_rust_lld() -> bool {
    let env = |k: &str| std::env::var(k).unwrap_or_default();
    if env("TARGET") != "x86_64-unknown-linux-gnu" || std::env::var_os("RUSTC_LINKER").is_some() {
        return false;
    }
    let flags = env("CARGO_ENCODED_RUSTFLAGS");
    if flags.contains("linker") || flags.contains("fuse-ld") {
        return false;
    }
    let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let Ok(out) = std::process::Command::new(rustc).arg("-V").output() else {
        return false;
    };
    // "rustc 1.95.0 (59807616e 2026-04-14)"
    let v = String::from_utf8_lossy(&out.stdout);
    let minor = v
        .split_whitespace()
        .nth(1)
        .and_then(|ver| ver.split('.').nth(1))
        .and_then(|m| m.parse::<u32>().ok());
    minor.is_some_and(|m| m >= 90)
}

/// Passes libgcc_eh.a whole to the cdylib's link, so the `_Unwind_*`
/// symbols std needs are resolved inside the library and the linker
/// (`--as-needed`) drops libgcc_s.so. Without a C compiler that knows the
/// archive, the library keeps depending on libgcc_s.so: slower start-up,
/// same behaviour.
fn link_unwinder_statically() {
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    let Ok(out) = std::process::Command::new(&cc)
        .arg("-print-file-name=libgcc_eh.a")
        .output()
    else {
        return;
    };
    let path = String::from_utf8_lossy(&out.stdout).trim().to_string();
    // An unknown file is printed back as its bare name.
    if !out.status.success() || !std::path::Path::new(&path).is_absolute() {
        return;
    }
    println!("cargo:rustc-cdylib-link-arg=-Wl,--whole-archive,{path},--no-whole-archive");
}

fn install_header() -> Result<(), String> {
    println!("cargo:rerun-if-changed=include/pktslab.h");
    let out =
        std::env::var_os("OUT_DIR").ok_or("OUT_DIR is not set; run the build through cargo")?;
    let dest = PathBuf::from(out).join("include");
    std::fs::create_dir_all(&dest).map_err(|e| format!("cannot create {}: {e}", dest.display()))?;
    let target = dest.join("pktslab.h");
    std::fs::copy("include/pktslab.h", &target).map_err(|e| {
        format!(
            "cannot copy include/pktslab.h to {}: {e}; is the header missing from userlib/include?",
            target.display()
        )
    })?;
    println!("cargo:include={}", dest.display());
    Ok(())
}
