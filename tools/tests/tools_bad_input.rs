//! `pktctl` and `pktbench` on bad input, on the host (no `/dev/pktaccel`
//! here, which is itself one of the cases): every case is one clear
//! message on stderr and a non-zero exit, never a panic.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use pcap_file::pcap::{PcapHeader, PcapPacket, PcapWriter};

const NO_DEVICE: &str = "/nonexistent/pktaccel";

fn tmp(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("tools-{}-{name}", std::process::id()))
}

/// Runs the tool with a device path that does not exist and checks the
/// failure: exit code `code`, stderr mentions `want`, no panic, and (for
/// the tools' own errors) exactly one line.
fn fails(tool: &str, args: &[&str], code: i32, want: &str) {
    let exe = match tool {
        "pktctl" => env!("CARGO_BIN_EXE_pktctl"),
        _ => env!("CARGO_BIN_EXE_pktbench"),
    };
    let out = Command::new(exe)
        .args(args)
        .env("PKTSLAB_DEVICE", NO_DEVICE)
        .output()
        .expect("run tool");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(code),
        "{tool} {args:?}: status {:?}, stderr: {err}",
        out.status
    );
    assert!(
        err.contains(want),
        "{tool} {args:?}: stderr lacks '{want}': {err}"
    );
    assert!(
        !err.contains("panicked") && !err.contains("RUST_BACKTRACE"),
        "{tool} {args:?} panicked: {err}"
    );
    if code == 1 {
        assert_eq!(
            err.trim_end().lines().count(),
            1,
            "{tool} {args:?}: more than one line: {err}"
        );
        assert!(err.starts_with(&format!("{tool}: error: ")), "{err}");
    }
}

#[test]
fn pktctl_wrong_options_are_usage_errors() {
    fails("pktctl", &[], 2, "Usage");
    fails("pktctl", &["--frobnicate"], 2, "--frobnicate");
    fails("pktctl", &["run"], 2, "<OP>");
    fails(
        "pktctl",
        &["run", "crc32", "--seed", "nope"],
        2,
        "is not a 32-bit number",
    );
    fails("pktctl", &["--caching", "xx", "info"], 2, "xx");
}

#[test]
fn pktctl_unknown_op_and_missing_key() {
    let f = tmp("data");
    std::fs::write(&f, b"hello").unwrap();
    let f = f.to_str().unwrap();
    fails(
        "pktctl",
        &["run", "frobnicate", f],
        1,
        "unknown op 'frobnicate'",
    );
    fails(
        "pktctl",
        &["run", "aes-gcm-seal", f, "--iv", "000102030405060708090a0b"],
        1,
        "needs a key",
    );
    fails(
        "pktctl",
        &["run", "aes-gcm-open", f, "--key", &"00".repeat(32)],
        1,
        "needs --iv",
    );
    fails(
        "pktctl",
        &["run", "aes-gcm-seal", f, "--key", "zz", "--iv", "00"],
        1,
        "--key is not valid hex",
    );
    fails(
        "pktctl",
        &[
            "run",
            "aes-gcm-seal",
            f,
            "--key",
            "0011",
            "--iv",
            &"00".repeat(12),
        ],
        1,
        "must be 32 bytes",
    );
    fails(
        "pktctl",
        &[
            "run",
            "aes-gcm-seal",
            f,
            "--key",
            &"00".repeat(32),
            "--iv",
            "00",
        ],
        1,
        "--iv must be 12 bytes",
    );
    fails(
        "pktctl",
        &["run", "rss", f, "--rss-key", "00"],
        1,
        "--rss-key must be 40 bytes",
    );
    fails(
        "pktctl",
        &["run", "key-set", "--key-file", "/nonexistent/key"],
        1,
        "cannot read key file",
    );
}

#[test]
fn pktctl_unreadable_input_and_no_device() {
    fails(
        "pktctl",
        &["run", "crc32", "/nonexistent/input"],
        1,
        "cannot read /nonexistent/input",
    );
    fails("pktctl", &["info"], 1, "no pktaccel device");
    let f = tmp("data2");
    std::fs::write(&f, b"hello").unwrap();
    fails(
        "pktctl",
        &["run", "crc32", f.to_str().unwrap()],
        1,
        "no pktaccel device",
    );
    fails("pktctl", &["run", "nop"], 1, "no pktaccel device");
}

fn write_pcap(path: &PathBuf, frames: &[Vec<u8>]) -> Vec<u8> {
    let mut bytes = Vec::new();
    {
        let mut w = PcapWriter::with_header(&mut bytes, PcapHeader::default()).unwrap();
        for f in frames {
            w.write_packet(&PcapPacket::new(Duration::ZERO, f.len() as u32, f))
                .unwrap();
        }
    }
    std::fs::write(path, &bytes).unwrap();
    bytes
}

#[test]
fn pktbench_wrong_options() {
    fails("pktbench", &["--ops", "frob"], 2, "unknown pipeline 'frob'");
    fails(
        "pktbench",
        &["--sizes", "10"],
        2,
        "must be imix or 64..=1518",
    );
    fails("pktbench", &["--batches", "0"], 2, "--batches");
    fails("pktbench", &["--queues", "0"], 2, "positive number or N");
    fails("pktbench", &["--modes", "fast"], 2, "fast");
    fails("pktbench", &["--bogus"], 2, "--bogus");
}

#[test]
fn pktbench_bad_pcap_files() {
    fails(
        "pktbench",
        &["--pcap", "/nonexistent/x.pcap"],
        1,
        "cannot open pcap file",
    );
    let g = tmp("garbage.pcap");
    std::fs::write(&g, b"not a capture at all, just some text").unwrap();
    fails(
        "pktbench",
        &["--pcap", g.to_str().unwrap()],
        1,
        "is not a readable pcap file",
    );
    // Valid header, then a record cut short.
    let t = tmp("truncated.pcap");
    let frame: Vec<u8> = pktaccel_tools::frames::traffic(1, &[200], 1, 1).remove(0);
    let bytes = write_pcap(&t, &[frame.clone(), frame]);
    std::fs::write(&t, &bytes[..bytes.len() - 50]).unwrap();
    fails(
        "pktbench",
        &["--pcap", t.to_str().unwrap()],
        1,
        "record 2 is malformed",
    );
    // Well-formed, but nothing the pipelines can use (ARP-like frames).
    let n = tmp("nonip.pcap");
    write_pcap(&n, &[vec![0xff; 60], vec![0x01; 42]]);
    fails(
        "pktbench",
        &["--pcap", n.to_str().unwrap()],
        1,
        "none of its 2 records",
    );
}

#[test]
fn pktbench_no_device() {
    fails("pktbench", &["--quick"], 1, "no pktaccel device");
    // A good capture still needs the device.
    let p = tmp("good.pcap");
    write_pcap(&p, &pktaccel_tools::frames::traffic(4, &[128], 2, 3));
    fails(
        "pktbench",
        &["--pcap", p.to_str().unwrap()],
        1,
        "no pktaccel device",
    );
}
