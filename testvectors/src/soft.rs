//! Software references for every device op: the workloads check each
//! device result against these, so a wrong answer is never reported as
//! throughput, and the device's host tests check its engines against them.

use aes_gcm::aead::AeadInPlace;
use aes_gcm::{Aes256Gcm, KeyInit, Nonce};
use pktaccel_abi::{GCM_TAG_LEN, RSS_KEY_LEN};

/// The RSS key from Microsoft's RSS verification suite; NICs ship it as
/// their default, so its published hashes are the known answers.
pub const MS_RSS_KEY: [u8; RSS_KEY_LEN] = [
    0x6d, 0x5a, 0x56, 0xda, 0x25, 0x5b, 0x0e, 0xc2, 0x41, 0x67, 0x25, 0x3d, 0x43, 0xa3, 0x8f, 0xb0,
    0xd0, 0xca, 0x2b, 0xcb, 0xae, 0x7b, 0x30, 0xb4, 0x77, 0xcb, 0x2d, 0xa3, 0x80, 0x30, 0xf2, 0x0c,
    0x6a, 0x42, 0xb7, 0x3b, 0xbe, 0xac, 0x01, 0xfa,
];

/// RFC 1071 one's-complement sum of `parts` as one big-endian stream
/// (odd total padded with a zero byte), folded from `seed`, complemented.
pub fn inet_csum(seed: u32, parts: &[&[u8]]) -> u16 {
    let mut sum = u64::from(seed);
    let mut carry: Option<u8> = None;
    for p in parts {
        for &b in *p {
            match carry.take() {
                Some(hi) => sum += u64::from(u16::from_be_bytes([hi, b])),
                None => carry = Some(b),
            }
        }
    }
    if let Some(hi) = carry {
        sum += u64::from(u16::from_be_bytes([hi, 0]));
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// CRC-32C (Castagnoli) continuing from `seed` (0 to start).
pub fn crc32c(seed: u32, data: &[u8]) -> u32 {
    crc32c::crc32c_append(seed, data)
}

/// CRC-32 (IEEE 802.3 / zlib) continuing from `seed` (0 to start).
pub fn crc32(seed: u32, data: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new_with_initial(seed);
    h.update(data);
    h.finalize()
}

/// Toeplitz hash of `data` (at most 36 bytes) under a 40-byte key.
pub fn toeplitz(key: &[u8; RSS_KEY_LEN], data: &[u8]) -> u32 {
    let mut hash = 0u32;
    for (i, &b) in data.iter().enumerate().take(RSS_KEY_LEN - 4) {
        for bit in 0..8 {
            if b & (0x80 >> bit) != 0 {
                let off = i * 8 + bit;
                // The 32 key bits starting at bit `off`.
                let mut w = 0u64;
                for k in 0..5 {
                    w = (w << 8) | u64::from(key.get(off / 8 + k).copied().unwrap_or(0));
                }
                hash ^= (w >> (8 - off % 8)) as u32;
            }
        }
    }
    hash
}

/// AES-256-GCM seal: ciphertext followed by the 16-byte tag.
pub fn gcm_seal(key: &[u8; 32], iv: &[u8; 12], aad: &[u8], pt: &[u8]) -> Vec<u8> {
    let c = Aes256Gcm::new(key.into());
    let mut buf = pt.to_vec();
    match c.encrypt_in_place_detached(Nonce::from_slice(iv), aad, &mut buf) {
        Ok(tag) => buf.extend_from_slice(&tag),
        // Only over-long inputs (64 GiB) fail; never reached here.
        Err(_) => buf.clear(),
    }
    buf
}

/// AES-256-GCM open of `ct || tag`; `None` when the tag does not verify.
pub fn gcm_open(key: &[u8; 32], iv: &[u8; 12], aad: &[u8], ct_tag: &[u8]) -> Option<Vec<u8>> {
    if ct_tag.len() < GCM_TAG_LEN {
        return None;
    }
    let (ct, tag) = ct_tag.split_at(ct_tag.len() - GCM_TAG_LEN);
    let c = Aes256Gcm::new(key.into());
    let mut buf = ct.to_vec();
    c.decrypt_in_place_detached(Nonce::from_slice(iv), aad, &mut buf, tag.into())
        .ok()
        .map(|()| buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn published_answers() {
        assert_eq!(crc32c(0, b"123456789"), 0xe306_9283);
        assert_eq!(crc32(0, b"123456789"), 0xcbf4_3926);
        assert_eq!(crc32(crc32(0, b"1234"), b"56789"), 0xcbf4_3926);
        // RFC 1071 section 3 example: sum 0xddf2, checksum !0xddf2.
        let d = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(inet_csum(0, &[&d]), !0xddf2);
        assert_eq!(inet_csum(0, &[&d[..3], &d[3..]]), !0xddf2);
        // Microsoft RSS: 66.9.149.187:2794 -> 161.142.100.80:1766.
        let t = [66, 9, 149, 187, 161, 142, 100, 80, 0x0a, 0xea, 0x06, 0xe6];
        assert_eq!(toeplitz(&MS_RSS_KEY, &t[..8]), 0x323e_8fc2);
        assert_eq!(toeplitz(&MS_RSS_KEY, &t), 0x51cc_c178);
    }

    #[test]
    fn gcm_round_trip_and_tamper() {
        let (k, iv) = ([7u8; 32], [9u8; 12]);
        let s = gcm_seal(&k, &iv, b"hdr", b"payload");
        assert_eq!(s.len(), 7 + 16);
        assert_eq!(
            gcm_open(&k, &iv, b"hdr", &s).as_deref(),
            Some(&b"payload"[..])
        );
        let mut bad = s.clone();
        bad[0] ^= 1;
        assert_eq!(gcm_open(&k, &iv, b"hdr", &bad), None);
    }
}
