//! `pktctl run OP`: the arguments checked before the device is touched,
//! then one function per op.

use std::io::{Read, Write};

use anyhow::{Context, Result, bail};
use pktaccel_abi::*;
use pktaccel_tools::dev::Device;
use pktaccel_tools::soft::MS_RSS_KEY;
use pktslab::Request;

use super::RunArgs;

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

/// A `run`'s inputs, checked before the device is opened.
struct Inputs {
    /// The AES key to install first (or, for key-set, the one to set).
    key: Option<Vec<u8>>,
    iv: Vec<u8>,
    aad: Vec<u8>,
    rss_key: Vec<u8>,
    data: Vec<u8>,
}

impl Inputs {
    fn check(op: u16, a: &RunArgs) -> Result<Self> {
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
        let data = if takes_data(op) {
            read_input(a)?
        } else {
            Vec::new()
        };
        Ok(Self {
            key,
            iv,
            aad,
            rss_key,
            data,
        })
    }
}

fn takes_data(op: u16) -> bool {
    !matches!(op, OP_NOP | OP_KEY_SET | OP_KEY_CLEAR)
}

/// Checks the arguments, opens the device and runs `op`.
pub(super) fn run(op: u16, a: &RunArgs, caching: u32) -> Result<()> {
    let inp = Inputs::check(op, a)?;
    let dev = Device::open(caching)?;
    if !dev.has_op(op) {
        bail!("the device does not advertise op {}", op_name(op));
    }
    if takes_data(op) && inp.data.is_empty() {
        bail!("empty input: {} needs at least one byte", op_name(op));
    }
    if let Some(k) = &inp.key
        && op != OP_KEY_SET
        && op != OP_KEY_CLEAR
    {
        key_set(&dev, a.copy, a.slot, k)?;
    }
    match op {
        OP_NOP => {
            dev.call(Request::new(OP_NOP), a.copy)?;
            println!("nop ok");
            Ok(())
        }
        OP_KEY_SET => key_set_op(&dev, a, &inp),
        OP_KEY_CLEAR => key_clear(&dev, a, &inp),
        OP_CSUM | OP_CRC32 | OP_CRC32C => checksum(&dev, op, a, &inp.data),
        OP_RSS => rss(&dev, a, &inp),
        OP_AES_GCM_SEAL | OP_AES_GCM_OPEN | OP_COPY => transform(&dev, op, a, &inp),
        _ => bail!("op {} cannot be run from pktctl", op_name(op)),
    }
}

fn key_set_op(dev: &Device, a: &RunArgs, inp: &Inputs) -> Result<()> {
    key_set(dev, a.copy, a.slot, inp.key.as_deref().unwrap_or_default())?;
    println!(
        "key-set slot {} ok (the key is cleared again when pktctl exits: key slots belong to the open file)",
        a.slot
    );
    Ok(())
}

fn key_clear(dev: &Device, a: &RunArgs, inp: &Inputs) -> Result<()> {
    // Slots belong to the open file: a fresh pktctl holds none unless
    // given a key to install first.
    if let Some(k) = &inp.key {
        key_set(dev, a.copy, a.slot, k)?;
    }
    match dev.call(Request::new(OP_KEY_CLEAR).key_slot(a.slot), a.copy) {
        Ok(_) => println!("key-clear slot {} ok", a.slot),
        // The driver's ENOKEY: this file holds no key there, which is what
        // a clear asks for.
        Err(e) if format!("{e:#}").contains("ENOKEY") => println!(
            "key-clear slot {} ok: nothing to clear (this pktctl run installed no key there; key slots belong to the open file and are cleared when it closes)",
            a.slot
        ),
        Err(e) => return Err(e.context(format!("clearing slot {}", a.slot))),
    }
    Ok(())
}

/// The checksum and the CRCs. Long inputs are chained in even-sized
/// chunks: the CRCs take the previous result as seed, the checksum its
/// uncomplemented sum.
fn checksum(dev: &Device, op: u16, a: &RunArgs, data: &[u8]) -> Result<()> {
    let max = dev.info().config.max_request_bytes as usize;
    let mut acc = a.seed.unwrap_or(0);
    let buf = Buf::new(dev, a.copy, data, data.len())?;
    let mut last = 0u64;
    for chunk in buf.as_ref().chunks(max & !1) {
        last = dev
            .call(Request::new(op).aux(acc).input(chunk)?, a.copy)?
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
    Ok(())
}

fn rss(dev: &Device, a: &RunArgs, inp: &Inputs) -> Result<()> {
    let data = &inp.data;
    if data.len() > RSS_KEY_LEN - 4 {
        bail!(
            "rss hashes at most {} bytes (addresses and ports), got {}",
            RSS_KEY_LEN - 4,
            data.len()
        );
    }
    let buf = Buf::new(dev, a.copy, data, data.len())?;
    let req = Request::new(OP_RSS)
        .params(&inp.rss_key)
        .input(buf.as_ref())?;
    let c = dev.call(req, a.copy)?;
    println!("rss {:08x}", c.result as u32);
    Ok(())
}

/// The ops with an output buffer: AES-GCM seal and open, and copy.
fn transform(dev: &Device, op: u16, a: &RunArgs, inp: &Inputs) -> Result<()> {
    let (data, aad) = (&inp.data, &inp.aad);
    let max = dev.info().config.max_request_bytes as usize;
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
    let inbuf = Buf::new(
        dev,
        a.copy,
        &[aad.as_slice(), data].concat(),
        aad.len() + data.len(),
    )?;
    let mut outbuf = Buf::new(dev, a.copy, &[], out_len)?;
    let req = Request::new(op)
        .aux(aad.len() as u32)
        .key_slot(a.slot)
        .params(&inp.iv)
        .input(inbuf.as_ref())?
        .output(outbuf.as_mut())?;
    let c = dev.call(req, a.copy)?;
    // The length comes from the device: a broken one may claim more than
    // the output holds.
    let out = outbuf.as_ref();
    let written = out.get(..c.len as usize).with_context(|| {
        format!(
            "the device reported {} bytes written into a {}-byte output; the device is faulty",
            c.len,
            out.len()
        )
    })?;
    write_output(op, a, written)
}

/// `-o FILE`, or hex on stdout.
fn write_output(op: u16, a: &RunArgs, out: &[u8]) -> Result<()> {
    match &a.output {
        Some(p) => {
            std::fs::write(p, out).with_context(|| format!("cannot write {}", p.display()))?;
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
