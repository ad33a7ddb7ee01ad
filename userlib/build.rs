//! Copies `include/pktslab.h` into `$OUT_DIR/include` and tells crates that
//! build C against libpktslab where it is (`DEP_PKTSLAB_INCLUDE` in their
//! build scripts, through `links = "pktslab"`). A build script may write
//! only under `OUT_DIR`; C users outside cargo take the header from
//! `userlib/include/`.

use std::path::PathBuf;

fn main() {
    if let Err(e) = install_header() {
        eprintln!("error: pktslab build script: {e}");
        std::process::exit(1);
    }
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
