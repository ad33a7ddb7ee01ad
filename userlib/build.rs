//! Installs `include/pktslab.h` next to the built `libpktslab.so`
//! (`target/<profile>/include/pktslab.h`), so C users of a build find the
//! header and the library in one place.

use std::path::PathBuf;

fn main() {
    println!("cargo:rerun-if-changed=include/pktslab.h");
    let Ok(out) = std::env::var("OUT_DIR") else {
        return;
    };
    // OUT_DIR = <target>/<profile>/build/pktslab-<hash>/out
    let Some(profile_dir) = PathBuf::from(out).ancestors().nth(3).map(PathBuf::from) else {
        return;
    };
    let dest = profile_dir.join("include");
    if std::fs::create_dir_all(&dest).is_ok() {
        let _ = std::fs::copy("include/pktslab.h", dest.join("pktslab.h"));
    }
}
