//! Toeplitz RSS hash, as NICs compute it (Microsoft RSS specification).
//!
//! The hash XORs, for every set bit of the input (most significant bit of
//! each byte first), the 32-bit window of the key that starts at that bit.
//! With a 40-byte key the input can be at most 36 bytes (IPv6 addresses
//! plus ports), since every input bit needs 32 key bits after it.

use pktaccel_abi::RSS_KEY_LEN;

/// Longest input a 40-byte key can hash.
pub const RSS_MAX_INPUT: usize = RSS_KEY_LEN - 4;

/// The input was longer than [`RSS_MAX_INPUT`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("RSS input of {0} bytes exceeds the {RSS_MAX_INPUT}-byte maximum for a 40-byte key")]
pub struct RssInputTooLong(pub usize);

/// Toeplitz hash of the concatenated segments under `key`.
pub fn toeplitz<'a>(
    key: &[u8; RSS_KEY_LEN],
    segments: impl IntoIterator<Item = &'a [u8]>,
) -> Result<u32, RssInputTooLong> {
    let key_at = |i: usize| u64::from(key.get(i).copied().unwrap_or(0));
    // `window` holds key bytes i..i+8, big-endian, for input byte i.
    let mut window = (0..8).fold(0u64, |w, i| (w << 8) | key_at(i));
    let mut hash = 0u32;
    let mut i = 0usize;
    for seg in segments {
        for &b in seg {
            if i >= RSS_MAX_INPUT {
                return Err(RssInputTooLong(i + 1));
            }
            for bit in 0..8 {
                if b & (0x80 >> bit) != 0 {
                    hash ^= (window >> (32 - bit)) as u32;
                }
            }
            window = (window << 8) | key_at(i + 8);
            i += 1;
        }
    }
    Ok(hash)
}

#[cfg(test)]
mod tests {
    use super::*;
    use pktaccel_testvectors::soft::{self, MS_RSS_KEY};
    use pktaccel_testvectors::vectors::{RSS_V4, RSS_V6};
    use proptest::prelude::*;

    /// Microsoft's published IPv4 vectors, whole and with the addresses and
    /// the ports in separate segments.
    #[test]
    fn microsoft_ipv4_vectors() {
        for (src, dst, sp, dp, h_ip, h_tcp) in RSS_V4 {
            let tcp = [&src[..], &dst[..], &sp.to_be_bytes(), &dp.to_be_bytes()].concat();
            let ip = &tcp[..8];
            assert_eq!(toeplitz(&MS_RSS_KEY, [ip]), Ok(h_ip), "{src:?}->{dst:?}");
            assert_eq!(
                toeplitz(&MS_RSS_KEY, [&tcp[..]]),
                Ok(h_tcp),
                "{src:?}->{dst:?} tcp"
            );
            assert_eq!(toeplitz(&MS_RSS_KEY, [&tcp[..8], &tcp[8..]]), Ok(h_tcp));
        }
    }

    #[test]
    fn microsoft_ipv6_vector() {
        let (src, dst, sp, dp, h_ip, h_tcp) = RSS_V6;
        let ports = [sp.to_be_bytes(), dp.to_be_bytes()].concat();
        assert_eq!(toeplitz(&MS_RSS_KEY, [&src[..], &dst[..]]), Ok(h_ip));
        assert_eq!(
            toeplitz(&MS_RSS_KEY, [&src[..], &dst[..], &ports[..]]),
            Ok(h_tcp)
        );
    }

    #[test]
    fn input_longer_than_key_allows_is_refused() {
        assert_eq!(
            toeplitz(&MS_RSS_KEY, [&[0u8; 37][..]]),
            Err(RssInputTooLong(37))
        );
        assert_eq!(toeplitz(&MS_RSS_KEY, [&[0u8; 36][..]]), Ok(0));
    }

    proptest! {
        #[test]
        fn matches_the_software_reference(
            key in proptest::array::uniform32(any::<u8>()),
            key_tail in proptest::array::uniform8(any::<u8>()),
            data in proptest::collection::vec(any::<u8>(), 0..=36),
            cut in any::<prop::sample::Index>(),
        ) {
            let mut k = [0u8; 40];
            k[..32].copy_from_slice(&key);
            k[32..].copy_from_slice(&key_tail);
            let c = cut.index(data.len() + 1);
            prop_assert_eq!(toeplitz(&k, [&data[..c], &data[c..]]), Ok(soft::toeplitz(&k, &data)));
        }
    }
}
