//! OpenSSL through libpktaccel-provider.so (issue 13), in the guest:
//!
//! - known answers, differential and TLS-record checks (`pktaccel-ossl-kat`)
//!   through the EVP API with the provider on the device, under
//!   `LD_PRELOAD=libpktslab.so`: the driver's GCM counters must rise;
//! - the same checks with no device behind the heap: software, no failure;
//! - Debian's unmodified `openssl s_server`/`s_client` with
//!   `OPENSSL_CONF=/etc/ssl/pktaccel.cnf` move a 4 MB file over TLS 1.3
//!   with TLS_AES_256_GCM_SHA384: identical bytes, the driver's
//!   `requests.aes-gcm-seal`/`open` rise by at least the record count, and
//!   the providers' zero-copy and staged byte counts are printed;
//! - the same with TLS 1.2 (ECDHE-ECDSA-AES256-GCM-SHA384, 1 MB), whose
//!   records reach the provider as whole `EVP_Cipher` calls.

use std::process::{Command, Stdio};

use super::kmod_helpers::{counter_rise, debugfs_counters, pattern};
use super::preload::PRELOAD;
use crate::ensure;
use crate::harness::{Test, TestResult};

pub(super) fn tests() -> Vec<Test> {
    tests![
        "openssl":
        provider_known_answers_on_device,
        provider_without_device_in_software,
        tls13_transfer_on_device,
        tls12_transfer_on_device,
        provider_and_pktcrc_in_one_process,
        provider_in_forked_children,
    ]
}

const PROVIDER: &str = "/usr/lib/libpktaccel-provider.so";
const CNF: &str = "/etc/ssl/pktaccel.cnf";
/// TLS's largest record payload.
const MAX_RECORD: usize = 16384;

/// The provider's exit report, as numbers: (seal requests, open requests,
/// zero-copy bytes, staged bytes), summed over every report in `err`.
fn provider_report(err: &str) -> (u64, u64, u64, u64) {
    let mut t = (0, 0, 0, 0);
    for l in err.lines() {
        let Some(rest) = l.strip_prefix("pktaccel-provider: device ") else {
            continue;
        };
        let w: Vec<&str> = rest.split_whitespace().collect();
        let num = |i: usize| w.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
        // "S seal + O open requests, Z bytes zero-copy, T bytes staged ..."
        t.0 += num(0);
        t.1 += num(3);
        t.2 += num(6);
        t.3 += num(9);
    }
    t
}

fn kat(env: &[(&str, &str)]) -> Result<(String, String), String> {
    let mut c = Command::new("pktaccel-ossl-kat");
    c.args(["--provider", PROVIDER])
        .env_remove("LD_PRELOAD")
        .env("LD_PRELOAD", PRELOAD)
        .env("PKTACCEL_PROVIDER_STATS", "1");
    for (k, v) in env {
        c.env(k, v);
    }
    let o = c
        .output()
        .map_err(|e| format!("cannot run pktaccel-ossl-kat: {e}"))?;
    let (so, se) = (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    );
    ensure!(o.status.success(), "pktaccel-ossl-kat failed:\n{so}\n{se}");
    ensure!(
        so.contains("checks passed"),
        "pktaccel-ossl-kat gave no verdict:\n{so}\n{se}"
    );
    Ok((so, se))
}

fn provider_known_answers_on_device() -> TestResult {
    let before = debugfs_counters()?;
    let (so, se) = kat(&[])?;
    let after = debugfs_counters()?;
    let (seals, opens, zc, staged) = provider_report(&se);
    let (ds, dopen) = (
        counter_rise(&before, &after, "requests.aes-gcm-seal"),
        counter_rise(&before, &after, "requests.aes-gcm-open"),
    );
    for l in so.lines().chain(se.lines()) {
        println!("kat: {l}");
    }
    println!(
        "kat: driver requests.aes-gcm-seal +{ds}, requests.aes-gcm-open +{dopen}; provider {zc} bytes zero-copy, {staged} staged"
    );
    ensure!(
        seals > 0 && opens > 0,
        "the provider sent no GCM request to the device: {se}"
    );
    ensure!(
        ds >= seals && dopen >= opens,
        "driver counters (+{ds} seal, +{dopen} open) below the provider's ({seals}, {opens})"
    );
    ensure!(zc > 0, "no byte went to the device zero-copy: {se}");
    Ok(())
}

/// libpktcrc's CRC-32 (a second thread) and the provider's AES-GCM (the
/// checks) in one process, each through its own libpktslab client on the
/// one device file: every completion must reach its own client (before
/// the client router, one could reap the other's and a CRC came out wrong
/// or a request waited and failed).
fn provider_and_pktcrc_in_one_process() -> TestResult {
    let o = Command::new("pktaccel-ossl-kat")
        .args(["--provider", PROVIDER, "--crc-thread"])
        .env("LD_PRELOAD", format!("{PRELOAD} /usr/lib/libpktcrc.so"))
        .env("PKTACCEL_PROVIDER_STATS", "1")
        .env("PKTCRC_STATS", "1")
        .output()
        .map_err(|e| format!("cannot run pktaccel-ossl-kat: {e}"))?;
    let (so, se) = (
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr),
    );
    let report = |l: &&str| ["pktcrc:", "pktaccel-"].iter().any(|p| l.starts_with(p));
    for l in so.lines().chain(se.lines()).filter(report) {
        println!("kat+crc: {l}");
    }
    ensure!(
        o.status.success(),
        "pktaccel-ossl-kat --crc-thread failed:\n{so}\n{se}"
    );
    let crc = se
        .lines()
        .find_map(|l| l.strip_prefix("pktcrc: "))
        .ok_or_else(|| format!("no pktcrc report:\n{se}"))?;
    let w: Vec<&str> = crc.split_whitespace().collect();
    // "N crc32 calls on the device (B bytes, zero-copy), S in software (...), E device errors"
    let on_device: u64 = w.first().and_then(|v| v.parse().ok()).unwrap_or(0);
    ensure!(on_device > 0, "no crc32 call reached the device: {crc}");
    ensure!(
        crc.ends_with(" 0 device errors"),
        "pktcrc saw device errors: {crc}"
    );
    let (seals, opens, _, _) = provider_report(&se);
    ensure!(
        seals > 0 && opens > 0,
        "the provider sent no GCM request to the device: {se}"
    );
    Ok(())
}

fn provider_without_device_in_software() -> TestResult {
    let before = debugfs_counters()?;
    let (_, se) = kat(&[
        ("PKTSLAB_DEVICE", "/dev/pktaccel-missing"),
        ("PKTSLAB_BACKEND", "host"),
    ])?;
    let after = debugfs_counters()?;
    let (seals, opens, _, _) = provider_report(&se);
    ensure!(
        seals == 0 && opens == 0,
        "with no device the provider still reports device requests: {se}"
    );
    ensure!(
        se.contains("software ") && !se.contains("software 0 bytes no device"),
        "the software fallback was not counted: {se}"
    );
    let ds = counter_rise(&before, &after, "requests.aes-gcm-seal");
    ensure!(
        ds == 0,
        "requests.aes-gcm-seal rose by {ds} with the device hidden"
    );
    Ok(())
}

/// The TLS 1.3 transfer, as a shell script (the programs are Debian's own,
/// unmodified; only the environment differs). Over a Unix-domain socket:
/// the guest kernel has no TCP/IP, and TLS does not care. `$2`/`$3`
/// prefix the server/client (an `env` setting, or nothing); `$4` is the
/// protocol and cipher options of both.
const TLS_SCRIPT: &str = r#"
set -e
cd "$1"
printf '[req]\ndistinguished_name=dn\n[dn]\n' > req.cnf
OPENSSL_CONF=req.cnf openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 \
    -nodes -subj /CN=pktaccel -days 1 -keyout key.pem -out cert.pem 2>req.err
export OPENSSL_CONF=/etc/ssl/pktaccel.cnf LD_PRELOAD=/usr/lib/libpktslab.so PKTACCEL_PROVIDER_STATS=1
$2 openssl s_server -unix "$1/tls.sock" -cert cert.pem -key key.pem $4 \
    -naccept 1 -WWW -quiet >server.out 2>server.err &
spid=$!
i=0
until [ -S tls.sock ]; do
    i=$((i+1)); [ $i -lt 300 ] || { echo "s_server did not listen" >&2; exit 1; }
    sleep 0.2
done
printf 'GET /data.bin HTTP/1.0\r\n\r\n' | $3 openssl s_client -unix "$1/tls.sock" $4 \
    -quiet >client.out 2>client.err
wait $spid
"#;

fn tls13_transfer_on_device() -> TestResult {
    tls_transfer(
        "tls13",
        "-tls1_3 -ciphersuites TLS_AES_256_GCM_SHA384",
        4 << 20,
    )
}

/// TLS 1.2 reaches the cipher differently: libssl sets the record header
/// as a control and hands `EVP_Cipher` the whole record (explicit IV,
/// payload, tag) in place; the provider's fixed+explicit IV path.
fn tls12_transfer_on_device() -> TestResult {
    tls_transfer(
        "tls12",
        "-tls1_2 -cipher ECDHE-ECDSA-AES256-GCM-SHA384",
        1 << 20,
    )
}

/// Moves a `size`-byte file from s_server to s_client with `proto`; checks
/// the bytes, the driver's GCM counters and prints where the bytes went.
fn tls_transfer(name: &str, proto: &str, size: usize) -> TestResult {
    ensure!(
        std::path::Path::new(CNF).is_file(),
        "{CNF} is missing from the guest image (xtask initramfs adds images/pktaccel.cnf)"
    );
    let dir = format!("/tmp/pktaccel-{name}-{}", std::process::id());
    std::fs::create_dir_all(&dir).map_err(|e| format!("{dir}: {e}"))?;
    let data = pattern(size, 0x9e37_79b9);
    std::fs::write(format!("{dir}/data.bin"), &data).map_err(|e| e.to_string())?;
    let before = debugfs_counters()?;
    // A driver without per-file key slots (no `key_slots_used` in its
    // stats) shares slot numbers between processes: give each side its
    // own half, or their keys would overwrite each other.
    let per_file = before.contains_key("key_slots_used");
    let (srv, cli) = if per_file {
        ("", "")
    } else {
        println!(
            "{name}: driver without per-file key slots: s_server uses slots 0-7, s_client 8-15"
        );
        (
            "env PKTACCEL_PROVIDER_SLOTS=0-7",
            "env PKTACCEL_PROVIDER_SLOTS=8-15",
        )
    };
    let o = Command::new("sh")
        .args(["-c", TLS_SCRIPT, "tls", &dir, srv, cli, proto])
        .env_remove("LD_PRELOAD")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .map_err(|e| format!("cannot run sh: {e}"))?;
    let after = debugfs_counters()?;
    let read = |f: &str| std::fs::read_to_string(format!("{dir}/{f}")).unwrap_or_default();
    let (serr, cerr) = (read("server.err"), read("client.err"));
    ensure!(
        o.status.success(),
        "{name} transfer failed: {}\nserver: {serr}\nclient: {cerr}\nreq: {}",
        String::from_utf8_lossy(&o.stderr),
        read("req.err")
    );
    let got = std::fs::read(format!("{dir}/client.out")).map_err(|e| e.to_string())?;
    let body = got
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map_or(&got[..], |i| &got[i + 4..]);
    let sums = Command::new("sh")
        .args(["-c", &format!("sha256sum {dir}/data.bin")])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    ensure!(
        body == &data[..],
        "the client received {} bytes that differ from the {}-byte file (sha256 {})",
        body.len(),
        data.len(),
        sums.trim()
    );
    let records = data.len().div_ceil(MAX_RECORD) as u64;
    let (ds, dopen) = (
        counter_rise(&before, &after, "requests.aes-gcm-seal"),
        counter_rise(&before, &after, "requests.aes-gcm-open"),
    );
    let copied = counter_rise(&before, &after, "bytes_copied");
    let (s, c) = (provider_report(&serr), provider_report(&cerr));
    println!(
        "{name}: {} bytes identical (sha256 {}); driver requests.aes-gcm-seal +{ds}, requests.aes-gcm-open +{dopen}, bytes_copied +{copied}; at least {records} records",
        data.len(),
        sums.split_whitespace().next().unwrap_or("?")
    );
    println!(
        "{name}: s_server {} seal/{} open requests, {} bytes zero-copy, {} bytes staged",
        s.0, s.1, s.2, s.3
    );
    println!(
        "{name}: s_client {} seal/{} open requests, {} bytes zero-copy, {} bytes staged",
        c.0, c.1, c.2, c.3
    );
    for l in serr.lines().chain(cerr.lines()) {
        if l.starts_with("pktaccel-provider:") || l.starts_with("pktslab:") {
            println!("{name}: {l}");
        }
    }
    ensure!(
        ds >= records && dopen >= records,
        "driver GCM requests rose by {ds} seal / {dopen} open, fewer than the {records} records"
    );
    std::fs::remove_dir_all(&dir).ok();
    Ok(())
}

/// The provider across fork() (`pktaccel-ossl-kat --fork`, kat/fork.rs):
/// a thread keeps AES-GCM on the device while the main thread forks; each
/// child seals with the parent's context (whose key is in a slot of the
/// parent's device file: the driver answers ENOKEY for it on the child's
/// file) and opens with a new one, correctly. Each child's own report must
/// show device seals and opens, two key installs on its own file, no
/// device error and no software fallback; a child that hung on the lock
/// the parent's thread held is killed by its alarm.
fn provider_in_forked_children() -> TestResult {
    let forks = 4u64;
    let before = debugfs_counters()?;
    let o = Command::new("pktaccel-ossl-kat")
        .args(["--provider", PROVIDER, "--fork", &forks.to_string()])
        .env("LD_PRELOAD", PRELOAD)
        .env("PKTACCEL_PROVIDER_STATS", "1")
        .output()
        .map_err(|e| format!("cannot run pktaccel-ossl-kat: {e}"))?;
    let after = debugfs_counters()?;
    let (so, se) = (
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr),
    );
    for l in so.lines().filter(|l| l.starts_with("fork")) {
        println!("kat --fork: {l}");
    }
    ensure!(
        o.status.success() && so.contains("checks passed"),
        "pktaccel-ossl-kat --fork failed:\n{so}\n{se}"
    );
    // A child's heap is a copy in ordinary memory: its buffers go through
    // the driver's copy path (pktslab_client_copy_mode), still on the
    // device, the keys on the child's own file.
    let own = so
        .lines()
        .filter(|l| l.ends_with(": correct, on the device, keys installed on its own file"))
        .count() as u64;
    ensure!(
        own == forks,
        "{} of {forks} children used the device with keys on their own file:\n{so}",
        own
    );
    let ds = counter_rise(&before, &after, "requests.aes-gcm-seal");
    let (seals, _, _, _) = provider_report(&se);
    ensure!(
        ds >= seals + forks,
        "requests.aes-gcm-seal rose by {ds}: fewer than the parent's {seals} and one per child"
    );
    Ok(())
}
