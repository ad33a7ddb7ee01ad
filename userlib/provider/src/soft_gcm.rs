//! Streaming AES-256-GCM in software (NIST SP 800-38D), for everything the
//! device cannot take: IVs other than 96 bits, truncated tags, multi-update
//! streams, no device. AES and GHASH come from RustCrypto (`aes`, `ghash`,
//! both with run-time AES-NI/PCLMUL detection); this module adds the
//! streaming, any IV length, and [`SoftGcm::resume_after_device`], which
//! continues a stream the device started, from the device's tag alone.
//!
//! Resuming works because GHASH is linear: the tag of the first piece gives
//! the GHASH state after it, without reading the first piece's ciphertext
//! again (the caller may already have reused that buffer).

use aes::Aes256;
use aes::cipher::BlockEncrypt;
use ghash::GHash;
use ghash::universal_hash::{KeyInit, UniversalHash};

/// GCM's reduction constant R = 11100001 || 0^120 (bit 0 = MSB).
const R: u128 = 0xe1 << 120;

/// Multiplication in GF(2^128) with GCM's bit order (SP 800-38D Alg. 1);
/// blocks as big-endian `u128`. Used only for the few fix-ups of a resumed
/// stream, so the plain bit loop is fast enough.
pub fn gf_mul(x: u128, y: u128) -> u128 {
    let mut z = 0u128;
    let mut v = y;
    for i in 0..128 {
        if (x >> (127 - i)) & 1 == 1 {
            z ^= v;
        }
        v = if v & 1 == 1 { (v >> 1) ^ R } else { v >> 1 };
    }
    z
}

/// `x^e` in GF(2^128).
pub fn gf_pow(x: u128, mut e: u128) -> u128 {
    let (mut acc, mut b) = (1u128 << 127, x); // 1 is the MSB in GCM order
    while e != 0 {
        if e & 1 == 1 {
            acc = gf_mul(acc, b);
        }
        b = gf_mul(b, b);
        e >>= 1;
    }
    acc
}

/// `x^-1` (x != 0): x^(2^128 - 2).
pub fn gf_inv(x: u128) -> u128 {
    gf_pow(x, u128::MAX - 1)
}

/// An expanded AES-256 key and GCM's hash key H = E_K(0^128).
#[derive(Clone)]
pub struct GcmKey {
    aes: Aes256,
    h: [u8; 16],
}

impl GcmKey {
    /// Expands a 32-byte key.
    pub fn new(key: &[u8; 32]) -> Self {
        let aes = Aes256::new(key.into());
        let mut h = [0u8; 16];
        aes.encrypt_block((&mut h).into());
        Self { aes, h }
    }

    fn encrypt(&self, block: &mut [u8; 16]) {
        self.aes.encrypt_block(block.into());
    }

    fn ghash(&self) -> GHash {
        GHash::new(&self.h.into())
    }

    /// The pre-counter block J0 for `iv` (any non-empty length).
    pub fn j0(&self, iv: &[u8]) -> [u8; 16] {
        let mut j0 = [0u8; 16];
        if iv.len() == 12 {
            j0[..12].copy_from_slice(iv);
            j0[15] = 1;
        } else {
            let mut g = self.ghash();
            g.update_padded(iv);
            let mut len = [0u8; 16];
            len[8..].copy_from_slice(&((iv.len() as u64) * 8).to_be_bytes());
            g.update(&[len.into()]);
            j0.copy_from_slice(&g.finalize());
        }
        j0
    }
}

/// One GCM message in progress.
#[derive(Clone)]
pub struct SoftGcm {
    key: GcmKey,
    j0: [u8; 16],
    /// GHASH state before `fresh` started, already multiplied through
    /// (non-zero only after a resume).
    base: u128,
    fresh: GHash,
    /// Blocks `fresh` has absorbed (to carry `base` forward by H^n).
    fresh_blocks: u128,
    partial: [u8; 16],
    partial_len: usize,
    aad_len: u64,
    ct_len: u64,
    in_aad: bool,
}

impl SoftGcm {
    /// A new message under `key` and `iv` (non-empty).
    pub fn new(key: &GcmKey, iv: &[u8]) -> Self {
        Self {
            key: key.clone(),
            j0: key.j0(iv),
            base: 0,
            fresh: key.ghash(),
            fresh_blocks: 0,
            partial: [0; 16],
            partial_len: 0,
            aad_len: 0,
            ct_len: 0,
            in_aad: true,
        }
    }

    /// Continues a message whose AAD (`aad_len` bytes) and first `ct_len`
    /// ciphertext bytes the device processed, producing `tag` (full 16
    /// bytes) for them. `iv` is the 96-bit IV the device used.
    pub fn resume_after_device(
        key: &GcmKey,
        iv: &[u8],
        aad_len: u64,
        ct_len: u64,
        tag: &[u8; 16],
    ) -> Self {
        let mut s = Self::new(key, iv);
        let h = u128::from_be_bytes(s.key.h);
        let h_inv = gf_inv(h);
        let mut ekj0 = s.j0;
        s.key.encrypt(&mut ekj0);
        // tag = S ^ E(J0); S = (Y ^ L) * H with L the length block.
        let sv = u128::from_be_bytes(*tag) ^ u128::from_be_bytes(ekj0);
        let l = (u128::from(aad_len * 8) << 64) | u128::from(ct_len * 8);
        let mut y = gf_mul(sv, h_inv) ^ l;
        let k = (ct_len % 16) as usize;
        if k != 0 {
            // The device padded the last partial block with zeros and
            // multiplied; undo the multiply, and let the next bytes fill
            // the block after the k bytes already absorbed.
            y = gf_mul(y, h_inv);
            s.partial_len = k;
        }
        s.base = y;
        s.aad_len = aad_len;
        s.ct_len = ct_len;
        s.in_aad = false;
        s
    }

    fn absorb(&mut self, mut data: &[u8]) {
        if self.partial_len > 0 {
            let n = (16 - self.partial_len).min(data.len());
            self.partial[self.partial_len..self.partial_len + n].copy_from_slice(&data[..n]);
            self.partial_len += n;
            data = &data[n..];
            if self.partial_len < 16 {
                return;
            }
            let b = self.partial;
            self.fresh.update(&[b.into()]);
            self.fresh_blocks += 1;
            self.partial = [0; 16];
            self.partial_len = 0;
        }
        let whole = data.len() / 16 * 16;
        let (blocks, rest) = data.split_at(whole);
        // In batches, so GHASH's parallel backend gets several blocks.
        let mut batch = [ghash::Block::default(); 8];
        for group in blocks.chunks(16 * 8) {
            let n = group.len() / 16;
            for (b, c) in batch.iter_mut().zip(group.chunks_exact(16)) {
                b.copy_from_slice(c);
            }
            self.fresh.update(&batch[..n]);
        }
        self.fresh_blocks += (whole / 16) as u128;
        self.partial[..rest.len()].copy_from_slice(rest);
        self.partial_len = rest.len();
    }

    fn flush_partial(&mut self) {
        if self.partial_len > 0 {
            let b = self.partial;
            self.fresh.update(&[b.into()]);
            self.fresh_blocks += 1;
            self.partial = [0; 16];
            self.partial_len = 0;
        }
    }

    /// Adds AAD; `false` once ciphertext has started (GCM allows AAD only
    /// first).
    pub fn aad(&mut self, aad: &[u8]) -> bool {
        if !self.in_aad {
            return aad.is_empty();
        }
        self.absorb(aad);
        self.aad_len += aad.len() as u64;
        true
    }

    fn start_text(&mut self) {
        if self.in_aad {
            self.flush_partial();
            self.in_aad = false;
        }
    }

    /// XORs the keystream from message offset `ct_len` over `buf`.
    fn ctr(&mut self, buf: &mut [u8]) {
        let mut pos = self.ct_len;
        let base_ctr = u32::from_be_bytes(self.j0[12..].try_into().unwrap_or([0; 4]));
        let counter = |block: u64| {
            let mut ks = self.j0;
            let c = base_ctr.wrapping_add(1).wrapping_add(block as u32);
            ks[12..].copy_from_slice(&c.to_be_bytes());
            aes::Block::from(ks)
        };
        let mut i = 0;
        while i < buf.len() {
            let off = (pos % 16) as usize;
            // Whole blocks, eight at a time so AES-NI can pipeline them.
            let whole = if off == 0 { (buf.len() - i) / 16 } else { 0 };
            let n_blocks = whole.min(8);
            if n_blocks > 1 {
                let mut ks = [aes::Block::default(); 8];
                for (j, k) in ks[..n_blocks].iter_mut().enumerate() {
                    *k = counter(pos / 16 + j as u64);
                }
                self.key.aes.encrypt_blocks(&mut ks[..n_blocks]);
                let n = n_blocks * 16;
                for (b, k) in buf[i..i + n].iter_mut().zip(ks.iter().flatten()) {
                    *b ^= k;
                }
                i += n;
                pos += n as u64;
                continue;
            }
            let mut ks: [u8; 16] = counter(pos / 16).into();
            self.key.encrypt(&mut ks);
            let n = (16 - off).min(buf.len() - i);
            for (b, k) in buf[i..i + n].iter_mut().zip(&ks[off..off + n]) {
                *b ^= k;
            }
            i += n;
            pos += n as u64;
        }
    }

    /// Encrypts `buf` in place.
    pub fn encrypt(&mut self, buf: &mut [u8]) {
        self.start_text();
        self.ctr(buf);
        self.absorb(buf);
        self.ct_len += buf.len() as u64;
    }

    /// Decrypts `buf` in place (the caller verifies the tag before it
    /// releases the plaintext where that matters).
    pub fn decrypt(&mut self, buf: &mut [u8]) {
        self.start_text();
        self.absorb(buf);
        self.ctr(buf);
        self.ct_len += buf.len() as u64;
    }

    /// The full 16-byte tag.
    pub fn tag(mut self) -> [u8; 16] {
        self.start_text();
        self.flush_partial();
        let mut l = [0u8; 16];
        l[..8].copy_from_slice(&(self.aad_len * 8).to_be_bytes());
        l[8..].copy_from_slice(&(self.ct_len * 8).to_be_bytes());
        self.fresh.update(&[l.into()]);
        self.fresh_blocks += 1;
        let fresh = u128::from_be_bytes(self.fresh.finalize().into());
        let h = u128::from_be_bytes(self.key.h);
        let s = if self.base == 0 {
            fresh
        } else {
            gf_mul(self.base, gf_pow(h, self.fresh_blocks)) ^ fresh
        };
        let mut ekj0 = self.j0;
        self.key.encrypt(&mut ekj0);
        (s ^ u128::from_be_bytes(ekj0)).to_be_bytes()
    }
}

/// Constant-time equality of two tags of the same length.
pub fn tags_equal(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |d, (x, y)| d | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unhex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    const K: &str = "feffe9928665731c6d6a8f9467308308feffe9928665731c6d6a8f9467308308";
    const P: &str = "d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a721c3c0c95956809532fcf0e2449a6b525b16aedf5aa0de657ba637b39";
    const A: &str = "feedfacedeadbeeffeedfacedeadbeefabaddad2";

    /// GCM specification test case 16 (AES-256, 60 bytes, 20 bytes AAD).
    #[test]
    fn spec_case_16_in_pieces() {
        let key = GcmKey::new(&unhex(K).try_into().unwrap());
        let want_c = "522dc1f099567d07f47f37a32a84427d643a8cdcbfe5c0c97598a2bd2555d1aa8cb08e48590dbb3da7b08b1056828838c5f61e6393ba7a0abcc9f662";
        for cut in [0, 1, 15, 16, 17, 33, 60] {
            let mut g = SoftGcm::new(&key, &unhex("cafebabefacedbaddecaf888"));
            let a = unhex(A);
            assert!(g.aad(&a[..7]) && g.aad(&a[7..]));
            let mut p = unhex(P);
            let (x, y) = p.split_at_mut(cut);
            g.encrypt(x);
            g.encrypt(y);
            assert_eq!(p, unhex(want_c), "cut {cut}");
            assert_eq!(g.tag().to_vec(), unhex("76fc6ece0f4e1768cddf8853bb2d551b"));
        }
    }

    #[test]
    fn resume_from_a_tag_matches_one_stream() {
        let key = GcmKey::new(&unhex(K).try_into().unwrap());
        let iv = unhex("cafebabefacedbaddecaf888");
        let a = unhex(A);
        for cut in [1, 5, 16, 17, 32, 59] {
            let mut first = unhex(P);
            let (x, rest) = first.split_at_mut(cut);
            // What the device would have returned for the first piece alone.
            let mut dev = SoftGcm::new(&key, &iv);
            dev.aad(&a);
            dev.encrypt(x);
            let tag1 = dev.tag();
            let mut g = SoftGcm::resume_after_device(&key, &iv, a.len() as u64, cut as u64, &tag1);
            g.encrypt(rest);
            let mut whole = SoftGcm::new(&key, &iv);
            whole.aad(&a);
            let mut p = unhex(P);
            whole.encrypt(&mut p);
            assert_eq!(first, p, "cut {cut}");
            assert_eq!(g.tag(), whole.tag(), "cut {cut}");
        }
    }

    #[test]
    fn field_inverse() {
        let x = 0x1234_5678_9abc_def0_0fed_cba9_8765_4321u128;
        assert_eq!(gf_mul(x, gf_inv(x)), 1u128 << 127);
    }
}
