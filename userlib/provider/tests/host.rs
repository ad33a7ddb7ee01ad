//! Host checks of the provider with no device (the software path), through
//! libcrypto's EVP API and through the unmodified `openssl` CLI with the
//! shipped config. Skipped with a note when OpenSSL 3 is not installed.

use std::path::PathBuf;
use std::process::Command;

fn kat_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_pktaccel-ossl-kat"))
}

/// The cdylib of this build. `cargo test` leaves it in `deps/` (only
/// `cargo build` copies it next to the binaries), so look there first: a
/// copy next to the KAT binary may be from an older `cargo build`.
fn provider_so() -> PathBuf {
    let name = "libpktaccel_provider.so";
    let deps = kat_bin().with_file_name("deps").join(name);
    if deps.is_file() {
        deps
    } else {
        kat_bin().with_file_name(name)
    }
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

/// Builds `mockdev.so` (libpktslab's client API over a software device,
/// see mockdev.c); `None` when the host has no C compiler or OpenSSL
/// headers (then the device-path tests are skipped with a note).
fn mockdev() -> Option<PathBuf> {
    let out = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("mockdev.so");
    let src = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/mockdev.c");
    let ok = Command::new("cc")
        .args(["-O1", "-shared", "-fPIC", "-o"])
        .arg(&out)
        .arg(src)
        .arg("-lcrypto")
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        eprintln!("skipped: cannot build mockdev.so (apt-get install gcc libssl-dev)");
    }
    ok.then_some(out)
}

/// Runs the KAT with the mock device and `env`; returns the provider's
/// counters by name (the numbers of its two report lines, in order).
fn kat_on_mock(mock: &PathBuf, env: &[(&str, &str)]) -> Vec<u64> {
    let mut c = Command::new(kat_bin());
    c.arg("--provider")
        .arg(provider_so())
        .env("LD_PRELOAD", mock)
        .env("PKTACCEL_PROVIDER_STATS", "1");
    for (k, v) in env {
        c.env(k, v);
    }
    let out = c.output().expect("run pktaccel-ossl-kat");
    let (so, se) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "KAT failed with {env:?}:\n{so}\n{se}");
    pktaccel_provider::stats::report_numbers(&se)
}

// Counter positions in the two report lines.
const SEALS: usize = 0;
const OPENS: usize = 1;
const ZERO_COPY: usize = 2;
const STAGED: usize = 3;
const MULTI: usize = 9;
const NO_SLOT: usize = 11;
const DEV_ERRORS: usize = 13;

#[test]
fn device_path_zero_copy_staged_no_slot_and_errors_on_a_mock_device() {
    if !have_openssl3() {
        return;
    }
    let Some(mock) = mockdev() else { return };
    // Every buffer "pinned": one request per record, zero-copy; encrypt
    // streams of several updates continue in software from the device tag.
    let c = kat_on_mock(&mock, &[("MOCK_PIN", "all")]);
    assert!(c[SEALS] > 0 && c[OPENS] > 0, "{c:?}");
    assert!(c[ZERO_COPY] > 0 && c[STAGED] == 0, "{c:?}");
    assert!(c[MULTI] > 0, "{c:?}");
    // Only pktslab_alloc memory pinned: the caller's buffers are staged.
    let c = kat_on_mock(&mock, &[("MOCK_PIN", "arena")]);
    assert!(c[SEALS] > 0 && c[ZERO_COPY] == 0 && c[STAGED] > 0, "{c:?}");
    // One key slot: contexts beyond it fall back (ENOSPC), still correct.
    let c = kat_on_mock(&mock, &[("MOCK_PIN", "all"), ("MOCK_SLOTS", "1")]);
    assert!(c[SEALS] > 0 && c[NO_SLOT] > 0, "{c:?}");
    // Every GCM request fails on the device: all in software, counted.
    let c = kat_on_mock(&mock, &[("MOCK_PIN", "all"), ("MOCK_FAIL", "1")]);
    assert!(c[SEALS] == 0 && c[DEV_ERRORS] > 0, "{c:?}");
}

/// The provider across fork() on the mock device (`--fork`, see
/// kat/fork.rs): a thread keeps requests on the (slow) device while the
/// main thread forks; each child, whose device file is fresh (no keys),
/// must seal with the parent's context and open with a new one, on the
/// device, the keys installed on its own file. Before the fork handlers a
/// child hung on the lock the parent's thread held, or sent the parent's
/// slot to a file without that key.
#[test]
fn forked_children_use_the_device_with_their_own_key_slots() {
    if !have_openssl3() {
        return;
    }
    let Some(mock) = mockdev() else { return };
    let mut c = Command::new(kat_bin());
    c.arg("--provider")
        .arg(provider_so())
        .args(["--fork", "8"])
        .env("LD_PRELOAD", mock)
        .env("MOCK_PIN", "all")
        .env("MOCK_DELAY_US", "2000")
        .env("PKTACCEL_PROVIDER_STATS", "1");
    let out = c.output().expect("run pktaccel-ossl-kat --fork");
    let (so, se) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "KAT --fork failed:\n{so}\n{se}");
    assert!(so.contains("fork: 8 children"), "{so}\n{se}");
    // The mock's memory is all "pinned": every child must have used the
    // device, with both keys installed on its own (fresh) file.
    let on_device = so
        .lines()
        .filter(|l| l.ends_with(": correct, on the device, keys installed on its own file"))
        .count();
    assert_eq!(on_device, 8, "{so}");
}
