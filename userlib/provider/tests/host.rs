//! Host checks of the provider with no device (the software path), through
//! libcrypto's EVP API and through the unmodified `openssl` CLI with the
//! shipped config. Skipped with a note when OpenSSL 3 is not installed.

use std::path::PathBuf;
use std::process::Command;

fn kat_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_pktaccel-ossl-kat"))
}

/// The cdylib cargo built next to the KAT binary.
fn provider_so() -> PathBuf {
    kat_bin().with_file_name("libpktaccel_provider.so")
}

fn have_openssl3() -> bool {
    let ok = Command::new("openssl")
        .arg("version")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).starts_with("OpenSSL 3"));
    if !ok {
        eprintln!("skipped: no OpenSSL 3 `openssl` on this host (apt-get install openssl)");
    }
    ok
}

#[test]
fn known_answers_differential_tls_and_bad_input_in_software() {
    if !have_openssl3() {
        return;
    }
    let out = Command::new(kat_bin())
        .arg("--provider")
        .arg(provider_so())
        .env("PKTACCEL_PROVIDER_STATS", "1")
        // A missing device: the provider must fall back, not fail.
        .env("PKTSLAB_DEVICE", "/nonexistent/pktaccel")
        .output()
        .expect("run pktaccel-ossl-kat");
    let (so, se) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "KAT failed:\n{so}\n{se}");
    assert!(so.contains("checks passed"), "{so}");
    assert!(so.contains("6 GCM spec cases"), "{so}");
    // Everything ran in software and was counted as such.
    let line = se
        .lines()
        .find(|l| l.starts_with("pktaccel-provider: software "))
        .unwrap_or_else(|| panic!("no stats line: {se}"));
    let soft: u64 = line
        .split_whitespace()
        .nth(2)
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    assert!(soft > 1_000_000, "software bytes not counted: {line}");
    assert!(se.contains("device 0 seal + 0 open"), "{se}");
}

#[test]
fn openssl_cli_uses_the_provider_through_the_config() {
    if !have_openssl3() {
        return;
    }
    let dir = std::env::temp_dir().join(format!("pktaccel-cnf-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cnf = include_str!("../../../images/pktaccel.cnf").replace(
        "/usr/lib/libpktaccel-provider.so",
        &provider_so().to_string_lossy(),
    );
    let path = dir.join("pktaccel.cnf");
    std::fs::write(&path, cnf).unwrap();
    let out = Command::new("openssl")
        .args([
            "speed",
            "-evp",
            "aes-256-gcm",
            "-bytes",
            "1024",
            "-seconds",
            "1",
        ])
        .env("OPENSSL_CONF", &path)
        .env("PKTACCEL_PROVIDER_STATS", "1")
        .output()
        .expect("run openssl speed");
    std::fs::remove_dir_all(&dir).ok();
    let se = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "openssl speed failed: {se}");
    assert!(
        se.contains("pktaccel-provider: software"),
        "the config did not load the provider: {se}"
    );
}
