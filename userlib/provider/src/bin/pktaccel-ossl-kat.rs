//! `pktaccel-ossl-kat`: drives libpktaccel-provider through libcrypto's EVP
//! API (dlopen, no headers) and checks it against the GCM specification's
//! AES-256 answers and against OpenSSL's own default provider:
//!
//! - known answers: encrypt, decrypt with the tag set before or after the
//!   data, and a tampered tag that must fail final and release nothing;
//! - differential: many lengths, AAD sizes, IV sizes and update splits,
//!   sealed by both providers and opened by each other;
//! - TLS 1.2 records (fixed + explicit IV, `EVP_Cipher` in place) and
//!   TLS 1.3-style records (per-record IV on one context);
//! - bad input (wrong key length, IV lengths, tag length, update after
//!   final, final without a tag): the provider must succeed or fail exactly
//!   when the default provider does.
//!
//! `--fork N` checks the provider across fork() instead (`kat/fork.rs`).
//!
//! Exit status 0 when every check passes; each failure is printed.

#[path = "kat/crc_thread.rs"]
mod crc_thread;
#[path = "kat/evp.rs"]
mod evp;
#[path = "kat/fork.rs"]
mod fork;

use anyhow::{Result, bail};
use evp::{Cipher, open, seal};
use pktaccel_testvectors::vectors::{GCM, GCM_EMPTY, GCM_ODD_IV, GcmVector, unhex};

const USAGE: &str = "usage: pktaccel-ossl-kat [--provider PATH] [--libcrypto NAME] [--crc-thread] [--fork N]\n\
  Checks libpktaccel-provider against the GCM spec and OpenSSL's default provider.\n\
  --crc-thread: meanwhile, a second thread checks zlib crc32() calls (libpktcrc).\n\
  --fork N: instead, fork N children while a thread keeps GCM on the device; each\n\
  child must seal and open correctly on its own key slots (PKTACCEL_PROVIDER_STATS=1).\n\
  Defaults: --provider /usr/lib/libpktaccel-provider.so --libcrypto libcrypto.so.3";

fn main() {
    let mut provider = "/usr/lib/libpktaccel-provider.so".to_string();
    let mut lib = "libcrypto.so.3".to_string();
    let mut crc = false;
    let mut forks = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        if a == "--crc-thread" {
            crc = true;
            continue;
        }
        match (a.as_str(), args.next()) {
            ("--provider", Some(v)) => provider = v,
            ("--libcrypto", Some(v)) => lib = v,
            ("--fork", Some(v)) if v.parse::<usize>().is_ok_and(|n| n > 0) => {
                forks = v.parse().ok();
            }
            _ => {
                eprintln!("{USAGE}");
                std::process::exit(2);
            }
        }
    }
    let r = match forks {
        Some(n) => fork::run(&provider, &lib, n),
        None => run_with_crc(&provider, &lib, crc),
    };
    match r {
        Ok(n) => println!("pktaccel-ossl-kat: all {n} checks passed"),
        Err(e) => {
            eprintln!("pktaccel-ossl-kat: FAILED: {e:#}");
            std::process::exit(1);
        }
    }
}

/// [`run`], with the CRC thread beside it when asked.
fn run_with_crc(provider: &str, lib: &str, crc: bool) -> Result<usize> {
    if !crc {
        return run(provider, lib);
    }
    let t = crc_thread::CrcThread::start()?;
    let r = run(provider, lib);
    let crcs = t.finish()?;
    println!("pktaccel-ossl-kat: {crcs} crc32 calls checked beside the GCM checks");
    r
}

fn run(provider: &str, lib: &str) -> Result<usize> {
    let e = evp::Evp::open(lib)?;
    e.load_provider(provider)?;
    e.load_provider("default")?;
    let ours = e.fetch(c"provider=pktaccel", "pktaccel")?;
    let reference = e.fetch(c"provider=default", "default")?;
    let mut n = 0;
    n += known_answers(&ours)?;
    n += differential(&ours, &reference)?;
    n += tls12_records(&ours, &reference)?;
    n += tls13_records(&ours, &reference)?;
    n += copied_contexts(&ours, &reference)?;
    n += bad_input(&ours, &reference)?;
    Ok(n)
}

/// The AES-256 cases of the GCM specification, 13 to 18.
fn spec_cases() -> impl Iterator<Item = &'static GcmVector> {
    std::iter::once(&GCM_EMPTY).chain(&GCM).chain(&GCM_ODD_IV)
}

fn known_answers(c: &Cipher<'_>) -> Result<usize> {
    let mut n = 0;
    for v in spec_cases() {
        let (key, iv, aad, pt) = (unhex(v.key), unhex(v.iv), unhex(v.aad), unhex(v.pt));
        let (ct, tag) = (unhex(v.ct), unhex(v.tag));
        let s = seal(c, &key, &iv, &aad, &pt, 1)?;
        if s.ct != ct || s.tag[..] != tag[..] {
            bail!(
                "{}: seal through {} gave a different ciphertext or tag",
                v.name,
                c.name
            );
        }
        for tag_first in [true, false] {
            let (got, _) = open(c, &key, &iv, &aad, &ct, &tag, tag_first)?;
            if got.as_deref() != Some(&pt[..]) {
                bail!(
                    "{}: open (tag first: {tag_first}) did not return the plaintext",
                    v.name
                );
            }
            let mut bad = tag.clone();
            bad[0] ^= 1;
            let (got, out) = open(c, &key, &iv, &aad, &ct, &bad, tag_first)?;
            if got.is_some() {
                bail!(
                    "{}: a tampered tag verified (tag first: {tag_first})",
                    v.name
                );
            }
            // Nothing released: the output is untouched (0xa5) or zeroed.
            if out.iter().any(|&b| b != 0xa5) && out.iter().any(|&b| b != 0) {
                bail!("{}: a tampered tag released output bytes", v.name);
            }
            n += 2;
        }
        n += 1;
    }
    println!(
        "known answers: {} GCM spec cases, tampered tags rejected, {n} checks",
        spec_cases().count()
    );
    Ok(n)
}

/// Deterministic filler so failures reproduce.
fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

fn differential(ours: &Cipher<'_>, reference: &Cipher<'_>) -> Result<usize> {
    let key = pattern(32, 7);
    let mut n = 0;
    for len in [1usize, 15, 16, 17, 64, 255, 1500, 16384, 65536] {
        for aad_len in [0usize, 5, 13, 20] {
            for iv_len in [12usize, 8, 16] {
                for pieces in [1usize, 2, 3] {
                    let (iv, aad, pt) = (pattern(iv_len, 3), pattern(aad_len, 5), pattern(len, 9));
                    let a = seal(ours, &key, &iv, &aad, &pt, pieces)?;
                    let b = seal(reference, &key, &iv, &aad, &pt, 1)?;
                    let what = format!("len {len} aad {aad_len} iv {iv_len} pieces {pieces}");
                    if a.ct != b.ct || a.tag != b.tag {
                        bail!("{what}: pktaccel and default disagree");
                    }
                    let (got, _) = open(ours, &key, &iv, &aad, &b.ct, &b.tag, pieces == 1)?;
                    if got.as_deref() != Some(&pt[..]) {
                        bail!("{what}: pktaccel did not open default's ciphertext");
                    }
                    n += 2;
                }
            }
        }
    }
    println!("differential: {n} checks against the default provider");
    Ok(n)
}

/// A TLS 1.2 AEAD record header for a record of `len` bytes on the wire.
fn tls12_aad(seq: u64, len: usize) -> [u8; 13] {
    let mut a = [0u8; 13];
    a[..8].copy_from_slice(&seq.to_be_bytes());
    a[8] = 23;
    a[9] = 3;
    a[10] = 3;
    a[11..].copy_from_slice(&(len as u16).to_be_bytes());
    a
}

fn tls12_ctx<'c>(c: &'c Cipher<'_>, key: &[u8], fixed: &[u8], enc: bool) -> Result<evp::Ctx<'c>> {
    let mut x = c.ctx();
    if !x.init(Some(key), None, enc) {
        bail!("{}: TLS 1.2 init failed", c.name);
    }
    let mut f = fixed.to_vec();
    if !x.ctrl(evp::CTRL_SET_IV_FIXED, 4, Some(&mut f)) {
        bail!("{}: EVP_CTRL_GCM_SET_IV_FIXED failed", c.name);
    }
    Ok(x)
}

/// One record through `EVP_Cipher` in place: header control, then the
/// explicit IV || payload || tag buffer. The return value of EVP_Cipher.
/// As libssl does, the header's length counts the explicit IV when
/// sending and the explicit IV and tag when receiving.
fn tls12_record(x: &mut evp::Ctx<'_>, seq: u64, rec: &mut [u8], send: bool) -> Result<i32> {
    let wire = if send { rec.len() - 16 } else { rec.len() };
    let mut aad = tls12_aad(seq, wire);
    let pad = x.ctrl(evp::CTRL_TLS1_AAD, 13, Some(&mut aad));
    if !pad {
        bail!("EVP_CTRL_AEAD_TLS1_AAD failed");
    }
    Ok(x.cipher_in_place(rec))
}

fn tls12_records(ours: &Cipher<'_>, reference: &Cipher<'_>) -> Result<usize> {
    let (key, fixed) = (pattern(32, 1), pattern(4, 2));
    let mut n = 0;
    for (sender, receiver) in [(ours, reference), (reference, ours), (ours, ours)] {
        let mut tx = tls12_ctx(sender, &key, &fixed, true)?;
        let mut rx = tls12_ctx(receiver, &key, &fixed, false)?;
        for (seq, len) in [0usize, 1, 100, 1500, 16384].into_iter().enumerate() {
            let pt = pattern(len, seq as u8);
            let mut rec = vec![0u8; 8 + len + 16];
            rec[8..8 + len].copy_from_slice(&pt);
            if tls12_record(&mut tx, seq as u64, &mut rec, true)? < 0 {
                bail!("{}: TLS 1.2 seal of {len} bytes failed", sender.name);
            }
            let mut bad = rec.clone();
            if tls12_record(&mut rx, seq as u64, &mut rec, false)? < 0 || rec[8..8 + len] != pt[..]
            {
                bail!(
                    "{} -> {}: TLS 1.2 record of {len} bytes did not open",
                    sender.name,
                    receiver.name
                );
            }
            if len > 0 {
                let last = bad.len() - 1;
                bad[last] ^= 0x80;
                if tls12_record(&mut rx, seq as u64, &mut bad, false)? >= 0 {
                    bail!("{}: a TLS 1.2 record with a bad tag opened", receiver.name);
                }
                if bad[8..8 + len] == pt[..] {
                    bail!("{}: a bad TLS 1.2 record released plaintext", receiver.name);
                }
                rx.clear_errors();
            }
            n += 2;
        }
    }
    println!("TLS 1.2 records: fixed+explicit IV, in place, both directions, {n} checks");
    Ok(n)
}

/// TLS 1.3's pattern (libssl's tls13_enc): one context per direction, a
/// new IV per record by init without key, the tag set before the data on
/// receive, header as AAD, in-place data.
fn tls13_records(ours: &Cipher<'_>, reference: &Cipher<'_>) -> Result<usize> {
    let key = pattern(32, 4);
    let mut n = 0;
    for (sender, receiver) in [(ours, reference), (reference, ours)] {
        let (mut tx, mut rx) = (sender.ctx(), receiver.ctx());
        if !tx.init(Some(&key), None, true) || !rx.init(Some(&key), None, false) {
            bail!("TLS 1.3 key set failed");
        }
        for seq in 0..40u64 {
            let len = [1usize, 17, 1200, 16385][seq as usize % 4];
            let mut iv = pattern(12, 6);
            for (b, s) in iv[4..].iter_mut().zip(seq.to_be_bytes()) {
                *b ^= s;
            }
            let hdr = [23u8, 3, 3, ((len + 16) >> 8) as u8, (len + 16) as u8];
            let pt = pattern(len, seq as u8);
            let mut rec = pt.clone();
            let p = rec.as_mut_ptr();
            if !tx.init(None, Some(&iv), true)
                || !tx.aad(&hdr)
                || tx.update(p, p, len) != Some(len)
                || !tx.finish()
            {
                bail!("{}: TLS 1.3 seal of record {seq} failed", sender.name);
            }
            let tag = tx.tag().unwrap_or_default();
            let p = rec.as_mut_ptr();
            if !rx.init(None, Some(&iv), false)
                || !rx.set_tag(&tag)
                || !rx.aad(&hdr)
                || rx.update(p, p, len) != Some(len)
                || !rx.finish()
            {
                bail!(
                    "{} -> {}: TLS 1.3 record {seq} did not open",
                    sender.name,
                    receiver.name
                );
            }
            if rec != pt {
                bail!(
                    "{} -> {}: TLS 1.3 record {seq} opened to different bytes",
                    sender.name,
                    receiver.name
                );
            }
            n += 1;
        }
    }
    println!("TLS 1.3 records: per-record IV on one context, {n} checks");
    Ok(n)
}

/// `EVP_CIPHER_CTX_copy` after the AAD: the copy and the original each
/// finish the message (the copy takes its own key slot) and must give the
/// default provider's ciphertext and tag.
fn copied_contexts(ours: &Cipher<'_>, reference: &Cipher<'_>) -> Result<usize> {
    let (key, iv, aad, pt) = (
        pattern(32, 11),
        pattern(12, 12),
        pattern(13, 13),
        pattern(1500, 14),
    );
    let want = seal(reference, &key, &iv, &aad, &pt, 1)?;
    let mut a = ours.ctx();
    if !a.init(Some(&key), Some(&iv), true) || !a.aad(&aad) {
        bail!("copy: encrypt init or AAD failed");
    }
    let Some(mut b) = a.try_clone() else {
        bail!("EVP_CIPHER_CTX_copy of a pktaccel context failed");
    };
    for (name, x) in [("original", &mut a), ("copy", &mut b)] {
        let mut ct = pt.clone();
        let p = ct.as_mut_ptr();
        if x.update(p, p, ct.len()) != Some(ct.len()) || !x.finish() {
            bail!("copy: the {name} failed to finish the message");
        }
        if ct != want.ct || x.tag() != Some(want.tag) {
            bail!("copy: the {name} gave a different ciphertext or tag");
        }
    }
    println!("copied contexts: original and copy both finish the message, 2 checks");
    Ok(2)
}

/// Each case run on both providers: the outcome (success or failure of
/// the whole sequence) must match.
fn bad_input(ours: &Cipher<'_>, reference: &Cipher<'_>) -> Result<usize> {
    type Case = fn(&Cipher<'_>) -> bool;
    let cases: [(&str, Case); 9] = [
        ("key length 16", |c| {
            let mut x = c.ctx();
            let r = x.set_key_length(16);
            x.clear_errors();
            r
        }),
        ("key length 32", |c| c.ctx().set_key_length(32)),
        ("IV length 0", |c| c.ctx().set_ivlen(0)),
        ("IV length 129 then init", |c| {
            let mut x = c.ctx();
            x.set_ivlen(129) && x.init(Some(&pattern(32, 8)), Some(&[0; 129]), true)
        }),
        ("tag of 17 bytes before decrypt", |c| {
            let mut x = c.ctx();
            x.init(Some(&pattern(32, 8)), Some(&[1; 12]), false) && x.set_tag(&[0; 17])
        }),
        ("tag set when encrypting", |c| {
            let mut x = c.ctx();
            x.init(Some(&pattern(32, 8)), Some(&[1; 12]), true) && x.set_tag(&[0; 16])
        }),
        ("update after final", |c| {
            let mut x = c.ctx();
            let mut b = [0u8; 32];
            let p = b.as_mut_ptr();
            x.init(Some(&pattern(32, 8)), Some(&[1; 12]), true)
                && x.update(p, p, 16).is_some()
                && x.finish()
                && x.update(p, p, 16).is_some()
        }),
        ("decrypt final without a tag", |c| {
            let mut x = c.ctx();
            let mut b = [0u8; 16];
            let p = b.as_mut_ptr();
            x.init(Some(&pattern(32, 8)), Some(&[1; 12]), false)
                && x.update(p, p, 16).is_some()
                && x.finish()
        }),
        ("update without a key", |c| {
            let mut x = c.ctx();
            let mut b = [0u8; 16];
            let p = b.as_mut_ptr();
            x.init(None, Some(&[1; 12]), true) && x.update(p, p, 16).is_some()
        }),
    ];
    for (name, f) in cases {
        let (a, b) = (f(ours), f(reference));
        ours.ctx().clear_errors();
        if a != b {
            bail!(
                "bad input {name:?}: pktaccel {} but default {}",
                verdict(a),
                verdict(b)
            );
        }
        println!("bad input {name:?}: {} on both providers", verdict(a));
    }
    Ok(cases.len())
}

fn verdict(ok: bool) -> &'static str {
    if ok { "succeeds" } else { "fails" }
}
