//! Known answers from the standards through the device, zero-copy and
//! copy mode.

use pktaccel_abi::*;

use crate::ensure;
use crate::harness::TestResult;
use crate::workload::dev::{self, Device};
use crate::workload::{soft, vectors};
use pktslab::{ClientError, Request};

fn open() -> Result<Device, String> {
    Device::open(CACHE_UNCACHED).map_err(|e| format!("{e:#}"))
}

/// Runs `req` and returns the completion; any failure (building the
/// request included) becomes the test's message.
fn call(
    dev: &Device,
    req: Result<Request<'_>, ClientError>,
    copy: bool,
) -> Result<IocCompletion, String> {
    let req = req.map_err(|e| e.to_string())?;
    dev.call(req, copy).map_err(|e| format!("{e:#}"))
}

/// `data` in a pinned buffer (zero-copy) or an ordinary one (copy mode),
/// handed to `f`.
fn with_buf<R>(
    dev: &Device,
    copy: bool,
    data: &[u8],
    f: impl FnOnce(&mut [u8]) -> R,
) -> Result<R, String> {
    if copy {
        let mut v = data.to_vec();
        Ok(f(&mut v))
    } else {
        let mut b = dev.pinned(data.len().max(1)).map_err(|e| e.to_string())?;
        b[..data.len()].copy_from_slice(data);
        Ok(f(&mut b[..data.len()]))
    }
}

fn modes() -> [(bool, &'static str); 2] {
    [(false, "zero-copy"), (true, "copy")]
}

pub(super) fn kat_rfc1071_checksum() -> TestResult {
    let dev = open()?;
    for (copy, mode) in modes() {
        let r = with_buf(&dev, copy, &vectors::RFC1071_DATA, |b| {
            call(&dev, Request::new(OP_CSUM).input(b), copy)
        })??;
        ensure!(
            r.result as u16 == vectors::RFC1071_CSUM,
            "{mode}: RFC 1071 example gave {:#06x}, expected {:#06x}",
            r.result,
            vectors::RFC1071_CSUM
        );
        // Scattered over two segments, odd boundary included.
        let r = with_buf(&dev, copy, &vectors::RFC1071_DATA, |b| {
            let (x, y) = b.split_at(3);
            call(
                &dev,
                Request::new(OP_CSUM).input(x).and_then(|r| r.input(y)),
                copy,
            )
        })??;
        ensure!(
            r.result as u16 == vectors::RFC1071_CSUM,
            "{mode}: split RFC 1071 example gave {:#06x}",
            r.result
        );
    }
    Ok(())
}

pub(super) fn kat_crc_check_values() -> TestResult {
    let dev = open()?;
    for (copy, mode) in modes() {
        for (op, want) in [
            (OP_CRC32C, vectors::CRC32C_CHECK),
            (OP_CRC32, vectors::CRC32_CHECK),
        ] {
            let r = with_buf(&dev, copy, vectors::CHECK_INPUT, |b| {
                call(&dev, Request::new(op).input(b), copy)
            })??;
            ensure!(
                r.result as u32 == want,
                "{mode} {}: check value {:#010x}, expected {want:#010x}",
                op_name(op),
                r.result
            );
            // Chained through the seed, as zlib callers do.
            let first = with_buf(&dev, copy, &vectors::CHECK_INPUT[..4], |b| {
                call(&dev, Request::new(op).input(b), copy)
            })??;
            let r = with_buf(&dev, copy, &vectors::CHECK_INPUT[4..], |b| {
                call(
                    &dev,
                    Request::new(op).aux(first.result as u32).input(b),
                    copy,
                )
            })??;
            ensure!(
                r.result as u32 == want,
                "{mode} {}: chained check value {:#010x}",
                op_name(op),
                r.result
            );
        }
    }
    Ok(())
}

pub(super) fn kat_toeplitz_microsoft() -> TestResult {
    let dev = open()?;
    let mut cases: Vec<(Vec<u8>, u32, u32)> = vectors::RSS_V4
        .iter()
        .map(|(s, d, sp, dp, h, hp)| {
            (
                [&s[..], &d[..], &sp.to_be_bytes(), &dp.to_be_bytes()].concat(),
                *h,
                *hp,
            )
        })
        .collect();
    let (s, d, sp, dp, h, hp) = vectors::RSS_V6;
    cases.push((
        [&s[..], &d[..], &sp.to_be_bytes(), &dp.to_be_bytes()].concat(),
        h,
        hp,
    ));
    for (copy, mode) in modes() {
        for (t, h, hp) in &cases {
            let addrs = t.len() - 4;
            let got = with_buf(&dev, copy, t, |b| {
                let a = call(
                    &dev,
                    Request::new(OP_RSS)
                        .params(&soft::MS_RSS_KEY)
                        .input(&b[..addrs]),
                    copy,
                )?;
                let p = call(
                    &dev,
                    Request::new(OP_RSS).params(&soft::MS_RSS_KEY).input(b),
                    copy,
                )?;
                Ok::<_, String>((a.result as u32, p.result as u32))
            })??;
            ensure!(
                got == (*h, *hp),
                "{mode}: tuple {} hashed to {:#010x}/{:#010x}, expected {h:#010x}/{hp:#010x}",
                hex::encode(t),
                got.0,
                got.1
            );
        }
    }
    Ok(())
}

/// One GCM vector's settings, the key in slot 1.
struct Gcm<'a> {
    dev: &'a Device,
    copy: bool,
    aad_len: usize,
    iv: &'a [u8],
}

impl Gcm<'_> {
    /// Seals or opens `input` (the AAD, then the text): the completion,
    /// whatever its status, and the `out_len` bytes the device wrote.
    fn complete(
        &self,
        op: u16,
        input: &[u8],
        out_len: usize,
    ) -> Result<(IocCompletion, Vec<u8>), String> {
        with_buf(self.dev, self.copy, input, |inp| {
            with_buf(self.dev, self.copy, &vec![0u8; out_len], |out| {
                let req = Request::new(op)
                    .aux(self.aad_len as u32)
                    .key_slot(1)
                    .params(self.iv)
                    .input(inp)
                    .and_then(|r| r.output(out))
                    .map_err(|e| e.to_string())?;
                let c = self
                    .dev
                    .client(self.copy)
                    .and_then(|mut cl| dev::run(&mut cl, &mut [req]))
                    .map_err(|e| format!("{e:#}"))?;
                Ok((c[0], out.to_vec()))
            })
        })??
    }

    /// As [`Gcm::complete`], for a request that must succeed: the output.
    fn run(&self, op: u16, input: &[u8], out_len: usize) -> Result<Vec<u8>, String> {
        let (c, out) = self.complete(op, input, out_len)?;
        ensure!(
            c.status == STATUS_OK,
            "the device answered {} (status {}) to {}",
            status_name(c.status),
            c.status,
            op_name(op)
        );
        Ok(out)
    }
}

pub(super) fn kat_gcm_specification() -> TestResult {
    let dev = open()?;
    for (copy, mode) in modes() {
        for v in vectors::GCM {
            let (key, iv, aad, pt) = (
                vectors::unhex(v.key),
                vectors::unhex(v.iv),
                vectors::unhex(v.aad),
                vectors::unhex(v.pt),
            );
            with_buf(&dev, copy, &key, |k| {
                call(&dev, Request::new(OP_KEY_SET).key_slot(1).input(k), copy)
            })??;
            let input = [aad.as_slice(), &pt].concat();
            let gcm = Gcm {
                dev: &dev,
                copy,
                aad_len: aad.len(),
                iv: &iv,
            };
            let sealed = gcm.run(OP_AES_GCM_SEAL, &input, pt.len() + GCM_TAG_LEN)?;
            ensure!(
                hex::encode(&sealed) == format!("{}{}", v.ct, v.tag),
                "{mode} {}: device sealed to {}, expected {}{}",
                v.name,
                hex::encode(&sealed),
                v.ct,
                v.tag
            );
            let input = [aad.as_slice(), &sealed].concat();
            let opened = gcm.run(OP_AES_GCM_OPEN, &input, pt.len())?;
            ensure!(
                opened == pt,
                "{mode} {}: open did not give the plaintext back",
                v.name
            );
            // A flipped tag bit: AUTH_FAILED, never plaintext.
            let mut bad = input.clone();
            if let Some(last) = bad.last_mut() {
                *last ^= 1;
            }
            let (c, out) = gcm.complete(OP_AES_GCM_OPEN, &bad, pt.len())?;
            let st = (c.status, out.iter().all(|&b| b == 0));
            ensure!(
                st == (STATUS_AUTH_FAILED, true),
                "{mode} {}: tampered open gave status {} (zeroed output: {})",
                v.name,
                status_name(st.0),
                st.1
            );
        }
    }
    call(&dev, Ok(Request::new(OP_KEY_CLEAR).key_slot(1)), false)?;
    Ok(())
}
