//! `pktctl`: the pktaccel device from the command line, like `ethtool` or
//! `openssl` for it. `pktctl info` shows the device, its limits and
//! counters; `pktctl run OP` runs any op on a file or stdin, zero-copy from
//! pinned memory or (`--copy`) through the driver's copy path.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Result, bail};
use clap::{Parser, Subcommand};
use pktaccel_abi::*;
use pktaccel_tools::dev::{Device, caching};

mod ops;

/// Drive the pktaccel accelerator.
#[derive(Parser, Debug)]
#[command(name = "pktctl", version)]
struct Cli {
    /// Slab caching for pinned buffers: uc (default), wc, wb.
    #[arg(long, global = true, default_value = "uc", value_parser = ["uc", "wc", "wb"])]
    caching: String,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Device, ABI, ops, queues, limits and statistics.
    Info,
    /// Run one op on a file (or stdin) and print its result.
    Run(Box<RunArgs>),
}

#[derive(clap::Args, Debug)]
struct RunArgs {
    /// nop, csum, crc32c, crc32, rss, aes-gcm-seal, aes-gcm-open, copy,
    /// key-set, key-clear.
    op: String,
    /// Input file; `-` or nothing reads stdin.
    input: Option<PathBuf>,
    /// Write the output (ciphertext+tag, plaintext, copy) here instead of
    /// printing it in hex.
    #[arg(short, long, value_name = "FILE")]
    output: Option<PathBuf>,
    /// Copy mode: ordinary memory, bounced by the driver.
    #[arg(long)]
    copy: bool,
    /// Seed for csum/crc32/crc32c (hex with 0x, or decimal).
    #[arg(long, value_parser = parse_u32)]
    seed: Option<u32>,
    /// AES-256 key, 64 hex digits.
    #[arg(long, value_name = "HEX")]
    key: Option<String>,
    /// File holding the 32-byte AES-256 key.
    #[arg(long, value_name = "FILE", conflicts_with = "key")]
    key_file: Option<PathBuf>,
    /// Key slot, in this process's own slot namespace: the driver gives
    /// each open file its own slots, cleared when the file closes (so a
    /// key lives only as long as this pktctl run).
    #[arg(long, default_value_t = 0)]
    slot: u32,
    /// AES-GCM IV, 24 hex digits.
    #[arg(long, value_name = "HEX")]
    iv: Option<String>,
    /// AES-GCM additional authenticated data, hex.
    #[arg(long, value_name = "HEX", default_value = "")]
    aad: String,
    /// RSS key, 80 hex digits (default: the Microsoft verification key).
    #[arg(long, value_name = "HEX")]
    rss_key: Option<String>,
}

fn parse_u32(s: &str) -> Result<u32, String> {
    let r = match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(h) => u32::from_str_radix(h, 16),
        None => s.parse(),
    };
    r.map_err(|_| format!("'{s}' is not a 32-bit number"))
}

fn main() -> ExitCode {
    pktaccel_tools::tool_main("pktctl", || run(Cli::parse()))
}

const OPS: &[(&str, u16)] = &[
    ("nop", OP_NOP),
    ("csum", OP_CSUM),
    ("crc32c", OP_CRC32C),
    ("crc32", OP_CRC32),
    ("rss", OP_RSS),
    ("aes-gcm-seal", OP_AES_GCM_SEAL),
    ("aes-gcm-open", OP_AES_GCM_OPEN),
    ("copy", OP_COPY),
    ("key-set", OP_KEY_SET),
    ("key-clear", OP_KEY_CLEAR),
];

fn run(cli: Cli) -> Result<()> {
    match cli.cmd {
        Cmd::Info => info(&Device::open(caching(&cli.caching))?),
        Cmd::Run(a) => {
            let Some(&(_, op)) = OPS.iter().find(|(n, _)| *n == a.op) else {
                let names: Vec<&str> = OPS.iter().map(|(n, _)| *n).collect();
                bail!(
                    "unknown op '{}' (expected one of: {})",
                    a.op,
                    names.join(", ")
                );
            };
            ops::run(op, &a, caching(&cli.caching))
        }
    }
}

fn info(dev: &Device) -> Result<()> {
    let i = dev.info();
    let c = &i.config;
    println!(
        "device        pktaccel {:04x}:{:04x}, magic {:#010x}, ABI v{}",
        PCI_VENDOR_ID, PCI_DEVICE_ID, c.magic, c.abi_version
    );
    let ops: Vec<&str> = (0..OP_COUNT)
        .filter(|&o| c.ops & (1 << o) != 0)
        .map(op_name)
        .collect();
    println!("ops           {}", ops.join(" "));
    println!("queues        {} x {} entries", c.num_queues, i.queue_size);
    println!(
        "limits        {} segments, {} bytes per request, {} key slots (per open file, shared device slots)",
        c.max_segments, c.max_request_bytes, c.key_slots
    );
    println!(
        "pinned        {} bytes now (cap {} per file, {} total)",
        i.pinned_total, i.max_pinned_per_file, i.max_pinned_total
    );
    match std::fs::read_to_string("/sys/kernel/debug/pktaccel/stats") {
        Ok(s) => {
            println!("driver statistics (/sys/kernel/debug/pktaccel/stats):");
            for l in s.lines() {
                println!("  {l}");
            }
        }
        Err(e) => println!(
            "driver statistics: /sys/kernel/debug/pktaccel/stats unreadable ({e}); is debugfs mounted?"
        ),
    }
    Ok(())
}
