//! AES-256-GCM seal and open (RustCrypto `aes-gcm`, AES-NI + CLMUL when the
//! CPU has them), with a 12-byte IV and a 16-byte tag.
//!
//! The engine works on one contiguous buffer in place; the request layer
//! gathers scattered inputs into it and scatters the result, which also makes
//! in-place requests (outputs aliasing inputs) safe.

use aes_gcm::aead::{AeadInPlace, KeyInit};
use aes_gcm::{Aes256Gcm, Nonce, Tag};
use pktaccel_abi::{AES256_KEY_LEN, GCM_IV_LEN, GCM_TAG_LEN};

/// An expanded AES-256-GCM key, ready to use from any thread.
pub type GcmKey = Aes256Gcm;

/// The tag did not verify: the data or AAD was altered, or the key/IV differ.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("AES-GCM tag mismatch")]
pub struct AuthFailed;

/// Expands a 32-byte key.
pub fn key(bytes: &[u8; AES256_KEY_LEN]) -> GcmKey {
    Aes256Gcm::new(bytes.into())
}

/// Encrypts `buf` in place and returns the tag.
pub fn seal(key: &GcmKey, iv: &[u8; GCM_IV_LEN], aad: &[u8], buf: &mut [u8]) -> [u8; GCM_TAG_LEN] {
    // encrypt_in_place_detached fails only for inputs over GCM's 64 GiB
    // limit, far beyond any request's max_request_bytes.
    let tag = key
        .encrypt_in_place_detached(Nonce::from_slice(iv), aad, buf)
        .expect("GCM plaintext within the 2^36-byte limit");
    tag.into()
}

/// Verifies `tag` and decrypts `buf` in place. On failure `buf` is left as
/// ciphertext (the tag is checked before any plaintext is produced).
pub fn open(
    key: &GcmKey,
    iv: &[u8; GCM_IV_LEN],
    aad: &[u8],
    buf: &mut [u8],
    tag: &[u8; GCM_TAG_LEN],
) -> Result<(), AuthFailed> {
    key.decrypt_in_place_detached(Nonce::from_slice(iv), aad, buf, Tag::from_slice(tag))
        .map_err(|_| AuthFailed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    struct Case {
        key: &'static str,
        iv: &'static str,
        pt: &'static str,
        aad: &'static str,
        ct: &'static str,
        tag: &'static str,
    }

    // McGrew & Viega, "The Galois/Counter Mode of Operation", test cases 13-16
    // (the AES-256 ones, also in NIST's GCM validation set).
    const CASES: [Case; 4] = [
        Case {
            key: "0000000000000000000000000000000000000000000000000000000000000000",
            iv: "000000000000000000000000",
            pt: "",
            aad: "",
            ct: "",
            tag: "530f8afbc74536b9a963b4f1c4cb738b",
        },
        Case {
            key: "0000000000000000000000000000000000000000000000000000000000000000",
            iv: "000000000000000000000000",
            pt: "00000000000000000000000000000000",
            aad: "",
            ct: "cea7403d4d606b6e074ec5d3baf39d18",
            tag: "d0d1c8a799996bf0265b98b5d48ab919",
        },
        Case {
            key: "feffe9928665731c6d6a8f9467308308feffe9928665731c6d6a8f9467308308",
            iv: "cafebabefacedbaddecaf888",
            pt: "d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a721c3c0c95956809532fcf0e2449a6b525b16aedf5aa0de657ba637b391aafd255",
            aad: "",
            ct: "522dc1f099567d07f47f37a32a84427d643a8cdcbfe5c0c97598a2bd2555d1aa8cb08e48590dbb3da7b08b1056828838c5f61e6393ba7a0abcc9f662898015ad",
            tag: "b094dac5d93471bdec1a502270e3cc6c",
        },
        Case {
            key: "feffe9928665731c6d6a8f9467308308feffe9928665731c6d6a8f9467308308",
            iv: "cafebabefacedbaddecaf888",
            pt: "d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a721c3c0c95956809532fcf0e2449a6b525b16aedf5aa0de657ba637b39",
            aad: "feedfacedeadbeeffeedfacedeadbeefabaddad2",
            ct: "522dc1f099567d07f47f37a32a84427d643a8cdcbfe5c0c97598a2bd2555d1aa8cb08e48590dbb3da7b08b1056828838c5f61e6393ba7a0abcc9f662",
            tag: "76fc6ece0f4e1768cddf8853bb2d551b",
        },
    ];

    #[test]
    fn mcgrew_viega_aes256_vectors() {
        for (n, c) in CASES.iter().enumerate() {
            let k = key(&hex(c.key).try_into().unwrap());
            let iv: [u8; 12] = hex(c.iv).try_into().unwrap();
            let mut buf = hex(c.pt);
            let tag = seal(&k, &iv, &hex(c.aad), &mut buf);
            assert_eq!(buf, hex(c.ct), "case {}", n + 13);
            assert_eq!(tag.to_vec(), hex(c.tag), "case {}", n + 13);
            let tag: [u8; 16] = tag;
            assert_eq!(open(&k, &iv, &hex(c.aad), &mut buf, &tag), Ok(()));
            assert_eq!(buf, hex(c.pt));
        }
    }

    #[test]
    fn wrong_tag_fails_and_releases_nothing() {
        let c = &CASES[3];
        let k = key(&hex(c.key).try_into().unwrap());
        let iv: [u8; 12] = hex(c.iv).try_into().unwrap();
        let mut buf = hex(c.ct);
        let mut tag: [u8; 16] = hex(c.tag).try_into().unwrap();
        tag[15] ^= 1;
        assert_eq!(open(&k, &iv, &hex(c.aad), &mut buf, &tag), Err(AuthFailed));
        assert_eq!(buf, hex(c.ct));
    }

    proptest! {
        #[test]
        fn round_trip_and_any_bit_flip_is_caught(
            k in proptest::array::uniform32(any::<u8>()),
            iv in proptest::array::uniform12(any::<u8>()),
            aad in proptest::collection::vec(any::<u8>(), 0..64),
            pt in proptest::collection::vec(any::<u8>(), 1..600),
            flip in any::<prop::sample::Index>(),
        ) {
            let key = key(&k);
            let mut buf = pt.clone();
            let tag = seal(&key, &iv, &aad, &mut buf);
            prop_assert_ne!(&buf, &pt);
            let ct = buf.clone();
            prop_assert_eq!(open(&key, &iv, &aad, &mut buf, &tag), Ok(()));
            prop_assert_eq!(&buf, &pt);
            let mut bad = ct.clone();
            let bit = flip.index(bad.len() * 8);
            bad[bit / 8] ^= 1 << (bit % 8);
            prop_assert_eq!(open(&key, &iv, &aad, &mut bad, &tag), Err(AuthFailed));
        }
    }
}
