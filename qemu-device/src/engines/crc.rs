//! CRC-32C (Castagnoli) and CRC-32 (IEEE 802.3) over scattered segments.
//!
//! Both use hardware-accelerated crates (`crc32c`: SSE4.2/ARMv8 CRC
//! instructions; `crc32fast`: PCLMULQDQ folding). `seed` is a finished CRC of
//! the preceding data (0 to start), so a long buffer can be split over
//! requests by passing each result as the next seed.

/// CRC-32C of the concatenated segments, continuing from `seed`.
pub fn crc32c<'a>(seed: u32, segments: impl IntoIterator<Item = &'a [u8]>) -> u32 {
    segments.into_iter().fold(seed, crc32c::crc32c_append)
}

/// CRC-32 (Ethernet FCS / zlib) of the concatenated segments, continuing from `seed`.
pub fn crc32<'a>(seed: u32, segments: impl IntoIterator<Item = &'a [u8]>) -> u32 {
    let mut h = crc32fast::Hasher::new_with_initial(seed);
    for s in segments {
        h.update(s);
    }
    h.finalize()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Bitwise reflected CRC, straight from the definition.
    fn bitwise(poly: u32, seed: u32, data: &[u8]) -> u32 {
        let mut crc = !seed;
        for &b in data {
            crc ^= u32::from(b);
            for _ in 0..8 {
                crc = if crc & 1 != 0 {
                    (crc >> 1) ^ poly
                } else {
                    crc >> 1
                };
            }
        }
        !crc
    }

    #[test]
    fn check_values() {
        // The "check" values of the CRC catalogue for "123456789".
        assert_eq!(crc32c(0, [&b"123456789"[..]]), 0xE306_9283);
        assert_eq!(crc32(0, [&b"123456789"[..]]), 0xCBF4_3926);
        // iSCSI (RFC 3720 B.4): 32 bytes of zeros -> 8a9136aa.
        assert_eq!(crc32c(0, [&[0u8; 32][..]]), 0x8A91_36AA);
        // ... and 32 bytes of 0xff -> 62a8ab43.
        assert_eq!(crc32c(0, [&[0xffu8; 32][..]]), 0x62A8_AB43);
        assert_eq!(crc32c(0, std::iter::empty::<&[u8]>()), 0);
    }

    #[test]
    fn chaining_through_seed_equals_one_pass() {
        let a = crc32c(0, [&b"12345"[..]]);
        assert_eq!(crc32c(a, [&b"6789"[..]]), 0xE306_9283);
        let b = crc32(0, [&b"1234"[..]]);
        assert_eq!(crc32(b, [&b"56789"[..]]), 0xCBF4_3926);
    }

    proptest! {
        #[test]
        fn match_bitwise_definitions(
            data in proptest::collection::vec(any::<u8>(), 0..2000),
            cut in any::<prop::sample::Index>(),
            seed in any::<u32>(),
        ) {
            let c = cut.index(data.len() + 1);
            let segs = [&data[..c], &data[c..]];
            prop_assert_eq!(crc32c(seed, segs), bitwise(0x82F6_3B78, seed, &data));
            prop_assert_eq!(crc32(seed, segs), bitwise(0xEDB8_8320, seed, &data));
        }
    }
}
