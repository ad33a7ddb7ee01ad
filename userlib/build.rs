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

use std::path::PathBuf;

fn main() {
    if let Err(e) = install_header() {
        eprintln!("error: pktslab build script: {e}");
        std::process::exit(1);
    }
    link_unwinder_statically();
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
