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
    use proptest::prelude::*;

    /// The key of Microsoft's "Verifying the RSS Hash Calculation" page.
    pub(crate) const MS_KEY: [u8; 40] = [
        0x6d, 0x5a, 0x56, 0xda, 0x25, 0x5b, 0x0e, 0xc2, 0x41, 0x67, 0x25, 0x3d, 0x43, 0xa3, 0x8f,
        0xb0, 0xd0, 0xca, 0x2b, 0xcb, 0xae, 0x7b, 0x30, 0xb4, 0x77, 0xcb, 0x2d, 0xa3, 0x80, 0x30,
        0xf2, 0x0c, 0x6a, 0x42, 0xb7, 0x3b, 0xbe, 0xac, 0x01, 0xfa,
    ];

    fn v4(src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16) -> (Vec<u8>, Vec<u8>) {
        let ip: Vec<u8> = src.iter().chain(dst.iter()).copied().collect();
        let mut tcp = ip.clone();
        tcp.extend_from_slice(&sport.to_be_bytes());
        tcp.extend_from_slice(&dport.to_be_bytes());
        (ip, tcp)
    }

    #[test]
    fn microsoft_ipv4_vectors() {
        // (source, destination, source port, destination port, IPv4 hash, IPv4+TCP hash)
        let cases = [
            (
                [66, 9, 149, 187],
                [161, 142, 100, 80],
                2794,
                1766,
                0x323e_8fc2,
                0x51cc_c178,
            ),
            (
                [199, 92, 111, 2],
                [65, 69, 140, 83],
                14230,
                4739,
                0xd718_262a,
                0xc626_b0ea,
            ),
            (
                [24, 19, 198, 95],
                [12, 22, 207, 184],
                12898,
                38024,
                0xd2d0_a5de,
                0x5c2b_394a,
            ),
            (
                [38, 27, 205, 30],
                [209, 142, 163, 6],
                48228,
                2217,
                0x8298_9176,
                0xafc7_327f,
            ),
            (
                [153, 39, 163, 191],
                [202, 188, 127, 2],
                44251,
                1303,
                0x5d18_09c5,
                0x10e8_28a2,
            ),
        ];
        for (src, dst, sp, dp, h_ip, h_tcp) in cases {
            let (ip, tcp) = v4(src, dst, sp, dp);
            assert_eq!(toeplitz(&MS_KEY, [&ip[..]]), Ok(h_ip), "{src:?}->{dst:?}");
            assert_eq!(
                toeplitz(&MS_KEY, [&tcp[..]]),
                Ok(h_tcp),
                "{src:?}->{dst:?} tcp"
            );
            // Scattered: addresses and ports in separate segments.
            assert_eq!(toeplitz(&MS_KEY, [&tcp[..8], &tcp[8..]]), Ok(h_tcp));
        }
    }

    #[test]
    fn microsoft_ipv6_vector() {
        // src 3ffe:2501:200:1fff::7 port 2794, dst 3ffe:2501:200:3::1 port 1766.
        let src: [u8; 16] = [
            0x3f, 0xfe, 0x25, 0x01, 0x02, 0x00, 0x1f, 0xff, 0, 0, 0, 0, 0, 0, 0, 7,
        ];
        let dst: [u8; 16] = [
            0x3f, 0xfe, 0x25, 0x01, 0x02, 0x00, 0x00, 0x03, 0, 0, 0, 0, 0, 0, 0, 1,
        ];
        let ports = [2794u16.to_be_bytes(), 1766u16.to_be_bytes()].concat();
        assert_eq!(toeplitz(&MS_KEY, [&src[..], &dst[..]]), Ok(0x2cc1_8cd5));
        assert_eq!(
            toeplitz(&MS_KEY, [&src[..], &dst[..], &ports[..]]),
            Ok(0x4020_7d3d)
        );
    }

    #[test]
    fn input_longer_than_key_allows_is_refused() {
        assert_eq!(
            toeplitz(&MS_KEY, [&[0u8; 37][..]]),
            Err(RssInputTooLong(37))
        );
        assert_eq!(toeplitz(&MS_KEY, [&[0u8; 36][..]]), Ok(0));
    }

    /// Bit-at-a-time definition: key as a big bit string.
    fn reference(key: &[u8; 40], data: &[u8]) -> u32 {
        let key_bit = |n: usize| (key[n / 8] >> (7 - n % 8)) & 1;
        let mut h = 0u32;
        for (n, _) in (0..data.len() * 8)
            .map(|n| (n, (data[n / 8] >> (7 - n % 8)) & 1))
            .filter(|&(_, b)| b == 1)
        {
            let mut w = 0u32;
            for k in 0..32 {
                w = (w << 1) | u32::from(key_bit(n + k));
            }
            h ^= w;
        }
        h
    }

    proptest! {
        #[test]
        fn matches_bitwise_definition(
            key in proptest::array::uniform32(any::<u8>()),
            key_tail in proptest::array::uniform8(any::<u8>()),
            data in proptest::collection::vec(any::<u8>(), 0..=36),
            cut in any::<prop::sample::Index>(),
        ) {
            let mut k = [0u8; 40];
            k[..32].copy_from_slice(&key);
            k[32..].copy_from_slice(&key_tail);
            let c = cut.index(data.len() + 1);
            prop_assert_eq!(toeplitz(&k, [&data[..c], &data[c..]]), Ok(reference(&k, &data)));
        }
    }
}
