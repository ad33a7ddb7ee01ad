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
    use pktaccel_testvectors::vectors::{GCM, GCM_EMPTY, unhex};
    use proptest::prelude::*;

    #[test]
    fn mcgrew_viega_aes256_vectors() {
        for c in [GCM_EMPTY].iter().chain(&GCM) {
            let k = key(&unhex(c.key).try_into().unwrap());
            let iv: [u8; 12] = unhex(c.iv).try_into().unwrap();
            let mut buf = unhex(c.pt);
            let tag = seal(&k, &iv, &unhex(c.aad), &mut buf);
            assert_eq!(buf, unhex(c.ct), "{}", c.name);
            assert_eq!(tag.to_vec(), unhex(c.tag), "{}", c.name);
            let tag: [u8; 16] = tag;
            assert_eq!(open(&k, &iv, &unhex(c.aad), &mut buf, &tag), Ok(()));
            assert_eq!(buf, unhex(c.pt));
        }
    }

    #[test]
    fn wrong_tag_fails_and_releases_nothing() {
        let c = &GCM[2];
        let k = key(&unhex(c.key).try_into().unwrap());
        let iv: [u8; 12] = unhex(c.iv).try_into().unwrap();
        let mut buf = unhex(c.ct);
        let mut tag: [u8; 16] = unhex(c.tag).try_into().unwrap();
        tag[15] ^= 1;
        assert_eq!(
            open(&k, &iv, &unhex(c.aad), &mut buf, &tag),
            Err(AuthFailed)
        );
        assert_eq!(buf, unhex(c.ct));
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
