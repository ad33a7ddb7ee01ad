//! `pktctl`: the pktaccel device from the command line, like `ethtool` or
//! `openssl` for it. `pktctl info` shows the device, its limits and
//! counters; `pktctl run OP` runs any op on a file or stdin, zero-copy from
//! pinned memory or (`--copy`) through the driver's copy path.

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use pktaccel_abi::*;
use pktaccel_tools::dev::Device;
use pktaccel_tools::soft::MS_RSS_KEY;
use pktslab::Request;

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
    pktaccel_tools::one_line_panics("pktctl");
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("pktctl: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn caching(s: &str) -> u32 {
    match s {
        "wc" => CACHE_WRITE_COMBINING,
        "wb" => CACHE_WRITE_BACK,
        _ => CACHE_UNCACHED,
    }
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
            run_op(op, &a, caching(&cli.caching))
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

fn hex_arg(what: &str, s: &str, len: Option<usize>) -> Result<Vec<u8>> {
    let v = hex::decode(s.trim()).with_context(|| format!("{what} is not valid hex"))?;
    if let Some(n) = len
        && v.len() != n
    {
        bail!(
            "{what} must be {n} bytes ({} hex digits), got {} bytes",
            n * 2,
            v.len()
        );
    }
    Ok(v)
}

fn key_bytes(a: &RunArgs, op: u16) -> Result<Vec<u8>> {
    let k = match (&a.key, &a.key_file) {
        (Some(h), _) => hex_arg("--key", h, None)?,
        (None, Some(p)) => {
            std::fs::read(p).with_context(|| format!("cannot read key file {}", p.display()))?
        }
        (None, None) => bail!(
            "{} needs a key: --key HEX (32 bytes) or --key-file FILE",
            op_name(op)
        ),
    };
    if k.len() != AES256_KEY_LEN {
        bail!(
            "the AES-256 key must be {AES256_KEY_LEN} bytes, got {}",
            k.len()
        );
    }
    Ok(k)
}

fn read_input(a: &RunArgs) -> Result<Vec<u8>> {
    let mut data = Vec::new();
    match a.input.as_deref() {
        None => std::io::stdin()
            .read_to_end(&mut data)
            .context("cannot read stdin")?,
        Some(p) if p.as_os_str() == "-" => std::io::stdin()
            .read_to_end(&mut data)
            .context("cannot read stdin")?,
        Some(p) => {
            data = std::fs::read(p).with_context(|| format!("cannot read {}", p.display()))?;
            data.len()
        }
    };
    Ok(data)
}

/// A buffer the device can use in the chosen mode.
enum Buf<'d> {
    Pinned(pktslab::PinnedBuf<'d>),
    Plain(Vec<u8>),
}

impl Buf<'_> {
    fn new<'d>(dev: &'d Device, copy: bool, data: &[u8], len: usize) -> Result<Buf<'d>> {
        let mut b = if copy {
            Buf::Plain(vec![0; len])
        } else {
            Buf::Pinned(dev.pinned(len)?)
        };
        b.as_mut()[..data.len()].copy_from_slice(data);
        Ok(b)
    }
    fn as_ref(&self) -> &[u8] {
        match self {
            Buf::Pinned(p) => p,
            Buf::Plain(v) => v,
        }
    }
    fn as_mut(&mut self) -> &mut [u8] {
        match self {
            Buf::Pinned(p) => p,
            Buf::Plain(v) => v,
        }
    }
}

fn run_op(op: u16, a: &RunArgs, caching: u32) -> Result<()> {
    // Check arguments before touching the device.
    let key = if op == OP_KEY_CLEAR {
        (a.key.is_some() || a.key_file.is_some())
            .then(|| key_bytes(a, OP_KEY_SET))
            .transpose()?
    } else {
        matches!(op, OP_AES_GCM_SEAL | OP_AES_GCM_OPEN | OP_KEY_SET)
            .then(|| key_bytes(a, op))
            .transpose()?
    };
    let iv = match op {
        OP_AES_GCM_SEAL | OP_AES_GCM_OPEN => {
            let Some(iv) = &a.iv else {
                bail!("{} needs --iv HEX (12 bytes)", op_name(op))
            };
            hex_arg("--iv", iv, Some(GCM_IV_LEN))?
        }
        _ => Vec::new(),
    };
    let aad = hex_arg("--aad", &a.aad, None)?;
    let rss_key = match &a.rss_key {
        Some(h) => hex_arg("--rss-key", h, Some(RSS_KEY_LEN))?,
        None => MS_RSS_KEY.to_vec(),
    };
    let data = if matches!(op, OP_NOP | OP_KEY_SET | OP_KEY_CLEAR) {
        Vec::new()
    } else {
        read_input(a)?
    };
    let dev = Device::open(caching)?;
    if !dev.has_op(op) {
        bail!("the device does not advertise op {}", op_name(op));
    }
    let copy = a.copy;
    let max = dev.info().config.max_request_bytes as usize;
    let needs_data = !matches!(op, OP_NOP | OP_KEY_SET | OP_KEY_CLEAR);
    if needs_data && data.is_empty() {
        bail!("empty input: {} needs at least one byte", op_name(op));
    }
    if let Some(k) = &key
        && op != OP_KEY_SET
        && op != OP_KEY_CLEAR
    {
        key_set(&dev, copy, a.slot, k)?;
    }
    match op {
        OP_NOP => {
            dev.call(Request::new(OP_NOP), copy)?;
            println!("nop ok");
        }
        OP_KEY_SET => {
            key_set(&dev, copy, a.slot, key.as_deref().unwrap_or_default())?;
            println!(
                "key-set slot {} ok (the key is cleared again when pktctl exits: key slots belong to the open file)",
                a.slot
            );
        }
        OP_KEY_CLEAR => {
            // Slots belong to the open file: a fresh pktctl holds none
            // unless given a key to install first.
            if let Some(k) = &key {
                key_set(&dev, copy, a.slot, k)?;
            }
            match dev.call(Request::new(OP_KEY_CLEAR).key_slot(a.slot), copy) {
                Ok(_) => println!("key-clear slot {} ok", a.slot),
                // The driver's ENOKEY: this file holds no key there, which
                // is what a clear asks for.
                Err(e) if format!("{e:#}").contains("ENOKEY") => println!(
                    "key-clear slot {} ok: nothing to clear (this pktctl run installed no key there; key slots belong to the open file and are cleared when it closes)",
                    a.slot
                ),
                Err(e) => return Err(e.context(format!("clearing slot {}", a.slot))),
            }
        }
        OP_CSUM | OP_CRC32 | OP_CRC32C => {
            // Long inputs are chained in even-sized chunks: the CRCs take the
            // previous result as seed, the checksum its uncomplemented sum.
            let mut acc = a.seed.unwrap_or(0);
            let buf = Buf::new(&dev, copy, &data, data.len())?;
            let mut last = 0u64;
            for chunk in buf.as_ref().chunks(max & !1) {
                last = dev
                    .call(Request::new(op).aux(acc).input(chunk)?, copy)?
                    .result;
                acc = if op == OP_CSUM {
                    u32::from(!(last as u16))
                } else {
                    last as u32
                };
            }
            if op == OP_CSUM {
                println!("csum {:04x}", last as u16);
            } else {
                println!("{} {:08x}", op_name(op), last as u32);
            }
        }
        OP_RSS => {
            if data.len() > RSS_KEY_LEN - 4 {
                bail!(
                    "rss hashes at most {} bytes (addresses and ports), got {}",
                    RSS_KEY_LEN - 4,
                    data.len()
                );
            }
            let buf = Buf::new(&dev, copy, &data, data.len())?;
            let req = Request::new(OP_RSS).params(&rss_key).input(buf.as_ref())?;
            let c = dev.call(req, copy)?;
            println!("rss {:08x}", c.result as u32);
        }
        OP_AES_GCM_SEAL | OP_AES_GCM_OPEN | OP_COPY => {
            let (out_len, min_in) = match op {
                OP_AES_GCM_SEAL => (data.len() + GCM_TAG_LEN, 0),
                OP_AES_GCM_OPEN => (data.len().saturating_sub(GCM_TAG_LEN), GCM_TAG_LEN),
                _ => (data.len(), 0),
            };
            if data.len() < min_in || (op == OP_AES_GCM_OPEN && out_len == 0) {
                bail!(
                    "aes-gcm-open input must be ciphertext followed by the {GCM_TAG_LEN}-byte tag (got {} bytes)",
                    data.len()
                );
            }
            if data.len() + aad.len() > max || out_len > max {
                bail!(
                    "input of {} bytes exceeds the device's {max}-byte request limit",
                    data.len() + aad.len()
                );
            }
            let mut inbuf = Buf::new(
                &dev,
                copy,
                &[aad.as_slice(), &data].concat(),
                aad.len() + data.len(),
            )?;
            let mut outbuf = Buf::new(&dev, copy, &[], out_len)?;
            let req = Request::new(op)
                .aux(aad.len() as u32)
                .key_slot(a.slot)
                .params(&iv)
                .input(&inbuf.as_mut()[..])?
                .output(outbuf.as_mut())?;
            let c = dev.call(req, copy)?;
            let out = &outbuf.as_ref()[..c.len as usize];
            match &a.output {
                Some(p) => {
                    std::fs::write(p, out)
                        .with_context(|| format!("cannot write {}", p.display()))?;
                    println!(
                        "{} ok: wrote {} bytes to {}",
                        op_name(op),
                        out.len(),
                        p.display()
                    );
                }
                None => {
                    let mut so = std::io::stdout().lock();
                    writeln!(so, "{}", hex::encode(out))?;
                }
            }
        }
        _ => bail!("op {} cannot be run from pktctl", op_name(op)),
    }
    Ok(())
}

fn key_set(dev: &Device, copy: bool, slot: u32, key: &[u8]) -> Result<()> {
    let buf = Buf::new(dev, copy, key, key.len())?;
    let req = Request::new(OP_KEY_SET)
        .key_slot(slot)
        .input(buf.as_ref())?;
    dev.call(req, copy)
        .with_context(|| format!("installing the key into slot {slot}"))?;
    Ok(())
}
