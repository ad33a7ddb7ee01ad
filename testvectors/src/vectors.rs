//! Published known answers for every op, used by the guest suite against
//! the device and by the host unit tests against the software references
//! (so a typo here fails on the host first).

/// The RFC 1071 section 3 example bytes; their one's-complement sum is
/// 0xddf2, so the checksum is !0xddf2 = 0x220d.
pub const RFC1071_DATA: [u8; 8] = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
/// The checksum of [`RFC1071_DATA`].
pub const RFC1071_CSUM: u16 = !0xddf2;

/// The CRC catalogue's check input.
pub const CHECK_INPUT: &[u8] = b"123456789";
/// CRC-32C (Castagnoli) check value.
pub const CRC32C_CHECK: u32 = 0xe306_9283;
/// CRC-32 (IEEE 802.3, zlib) check value.
pub const CRC32_CHECK: u32 = 0xcbf4_3926;

/// One RSS known answer: source and destination address, source and
/// destination port, hash of the addresses, hash with the ports.
pub type RssVector<const N: usize> = ([u8; N], [u8; N], u16, u16, u32, u32);

/// Microsoft's RSS verification suite (IPv4), one row per vector as the
/// suite's table prints it.
#[rustfmt::skip]
pub const RSS_V4: [RssVector<4>; 5] = [
    ([66, 9, 149, 187],   [161, 142, 100, 80], 2794,  1766,  0x323e_8fc2, 0x51cc_c178),
    ([199, 92, 111, 2],   [65, 69, 140, 83],   14230, 4739,  0xd718_262a, 0xc626_b0ea),
    ([24, 19, 198, 95],   [12, 22, 207, 184],  12898, 38024, 0xd2d0_a5de, 0x5c2b_394a),
    ([38, 27, 205, 30],   [209, 142, 163, 6],  48228, 2217,  0x8298_9176, 0xafc7_327f),
    ([153, 39, 163, 191], [202, 188, 127, 2],  44251, 1303,  0x5d18_09c5, 0x10e8_28a2),
];

/// Microsoft's IPv6 vector: 3ffe:2501:200:1fff::7 port 2794 to
/// 3ffe:2501:200:3::1 port 1766; hash of the addresses, hash with ports.
pub const RSS_V6: RssVector<16> = (
    [
        0x3f, 0xfe, 0x25, 0x01, 0x02, 0x00, 0x1f, 0xff, 0, 0, 0, 0, 0, 0, 0, 7,
    ],
    [
        0x3f, 0xfe, 0x25, 0x01, 0x02, 0x00, 0x00, 0x03, 0, 0, 0, 0, 0, 0, 0, 1,
    ],
    2794,
    1766,
    0x2cc1_8cd5,
    0x4020_7d3d,
);

/// One AES-256-GCM known answer (hex): key, IV, AAD, plaintext,
/// ciphertext, tag.
#[derive(Debug, Clone, Copy)]
pub struct GcmVector {
    /// Name in the GCM specification's appendix.
    pub name: &'static str,
    /// 32-byte key.
    pub key: &'static str,
    /// IV: 12 bytes, other lengths only in [`GCM_ODD_IV`].
    pub iv: &'static str,
    /// AAD.
    pub aad: &'static str,
    /// Plaintext.
    pub pt: &'static str,
    /// Ciphertext.
    pub ct: &'static str,
    /// 16-byte tag.
    pub tag: &'static str,
}

/// The AES-256 test cases of the GCM specification (McGrew and Viega,
/// as used by NIST's GCM validation): cases 14, 15 and 16 (13 has an empty
/// plaintext, which the device cannot be given as a segment).
pub const GCM: [GcmVector; 3] = [
    GcmVector {
        name: "test case 14",
        key: "0000000000000000000000000000000000000000000000000000000000000000",
        iv: "000000000000000000000000",
        aad: "",
        pt: "00000000000000000000000000000000",
        ct: "cea7403d4d606b6e074ec5d3baf39d18",
        tag: "d0d1c8a799996bf0265b98b5d48ab919",
    },
    GcmVector {
        name: "test case 15",
        key: "feffe9928665731c6d6a8f9467308308feffe9928665731c6d6a8f9467308308",
        iv: "cafebabefacedbaddecaf888",
        aad: "",
        pt: "d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a721c3c0c95956809532fcf0e2449a6b525b16aedf5aa0de657ba637b391aafd255",
        ct: "522dc1f099567d07f47f37a32a84427d643a8cdcbfe5c0c97598a2bd2555d1aa8cb08e48590dbb3da7b08b1056828838c5f61e6393ba7a0abcc9f662898015ad",
        tag: "b094dac5d93471bdec1a502270e3cc6c",
    },
    GcmVector {
        name: "test case 16",
        key: "feffe9928665731c6d6a8f9467308308feffe9928665731c6d6a8f9467308308",
        iv: "cafebabefacedbaddecaf888",
        aad: "feedfacedeadbeeffeedfacedeadbeefabaddad2",
        pt: "d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a721c3c0c95956809532fcf0e2449a6b525b16aedf5aa0de657ba637b39",
        ct: "522dc1f099567d07f47f37a32a84427d643a8cdcbfe5c0c97598a2bd2555d1aa8cb08e48590dbb3da7b08b1056828838c5f61e6393ba7a0abcc9f662",
        tag: "76fc6ece0f4e1768cddf8853bb2d551b",
    },
];

/// Test case 13 of the same appendix: an empty plaintext, so only the tag.
/// Host tests only: the device cannot be given an empty segment.
pub const GCM_EMPTY: GcmVector = GcmVector {
    name: "test case 13",
    key: "0000000000000000000000000000000000000000000000000000000000000000",
    iv: "000000000000000000000000",
    aad: "",
    pt: "",
    ct: "",
    tag: "530f8afbc74536b9a963b4f1c4cb738b",
};

/// Test cases 17 and 18 of the same appendix: 64- and 480-bit IVs. The
/// device takes 96-bit IVs only; software GCM (the OpenSSL provider's
/// fallback) must handle these.
pub const GCM_ODD_IV: [GcmVector; 2] = [
    GcmVector {
        name: "test case 17 (64-bit IV)",
        key: "feffe9928665731c6d6a8f9467308308feffe9928665731c6d6a8f9467308308",
        iv: "cafebabefacedbad",
        aad: "feedfacedeadbeeffeedfacedeadbeefabaddad2",
        pt: "d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a721c3c0c95956809532fcf0e2449a6b525b16aedf5aa0de657ba637b39",
        ct: "c3762df1ca787d32ae47c13bf19844cbaf1ae14d0b976afac52ff7d79bba9de0feb582d33934a4f0954cc2363bc73f7862ac430e64abe499f47c9b1f",
        tag: "3a337dbf46a792c45e454913fe2ea8f2",
    },
    GcmVector {
        name: "test case 18 (480-bit IV)",
        key: "feffe9928665731c6d6a8f9467308308feffe9928665731c6d6a8f9467308308",
        iv: "9313225df88406e555909c5aff5269aa6a7a9538534f7da1e4c303d2a318a728c3c0c95156809539fcf0e2429a6b525416aedbf5a0de6a57a637b39b",
        aad: "feedfacedeadbeeffeedfacedeadbeefabaddad2",
        pt: "d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a721c3c0c95956809532fcf0e2449a6b525b16aedf5aa0de657ba637b39",
        ct: "5a8def2f0c9e53f1f75d7853659e2a20eeb2b22aafde6419a058ab4f6f746bf40fc0c3b780f244452da3ebf1c5d82cdea2418997200ef82e44ae7e3f",
        tag: "a44a8266ee1c8eb0c8b5d4cf5ae9f19a",
    },
];

/// Hex to bytes for the constants above (they are valid by test).
pub fn unhex(s: &str) -> Vec<u8> {
    hex::decode(s).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::soft;

    #[test]
    fn software_agrees_with_every_published_answer() {
        assert_eq!(soft::inet_csum(0, &[&RFC1071_DATA]), RFC1071_CSUM);
        assert_eq!(soft::crc32c(0, CHECK_INPUT), CRC32C_CHECK);
        assert_eq!(soft::crc32(0, CHECK_INPUT), CRC32_CHECK);
        for (s, d, sp, dp, h, hp) in RSS_V4 {
            let t = [&s[..], &d[..], &sp.to_be_bytes(), &dp.to_be_bytes()].concat();
            assert_eq!(soft::toeplitz(&soft::MS_RSS_KEY, &t[..8]), h);
            assert_eq!(soft::toeplitz(&soft::MS_RSS_KEY, &t), hp);
        }
        let (s, d, sp, dp, h, hp) = RSS_V6;
        let t = [&s[..], &d[..], &sp.to_be_bytes(), &dp.to_be_bytes()].concat();
        assert_eq!(soft::toeplitz(&soft::MS_RSS_KEY, &t[..32]), h);
        assert_eq!(soft::toeplitz(&soft::MS_RSS_KEY, &t), hp);
        for v in [GCM_EMPTY].iter().chain(&GCM) {
            let key: [u8; 32] = unhex(v.key).try_into().unwrap();
            let iv: [u8; 12] = unhex(v.iv).try_into().unwrap();
            let sealed = soft::gcm_seal(&key, &iv, &unhex(v.aad), &unhex(v.pt));
            assert_eq!(
                hex::encode(&sealed),
                format!("{}{}", v.ct, v.tag),
                "{}",
                v.name
            );
        }
    }

    /// [`GCM_ODD_IV`] against RustCrypto's GCM with the matching nonce
    /// sizes ([`soft::gcm_seal`] takes 96-bit IVs only, like the device).
    #[test]
    fn odd_iv_cases_agree_with_rustcrypto() {
        use aes_gcm::AesGcm;
        use aes_gcm::aead::consts::{U8, U60};
        use aes_gcm::aead::{AeadInPlace, KeyInit};
        use aes_gcm::aes::Aes256;
        fn seal<N: aes_gcm::aead::generic_array::ArrayLength<u8>>(v: &GcmVector) -> String {
            let c = AesGcm::<Aes256, N>::new_from_slice(&unhex(v.key)).unwrap();
            let mut buf = unhex(v.pt);
            let nonce =
                aes_gcm::aead::generic_array::GenericArray::from_slice(&unhex(v.iv)).clone();
            let tag = c
                .encrypt_in_place_detached(&nonce, &unhex(v.aad), &mut buf)
                .unwrap();
            format!("{}{}", hex::encode(&buf), hex::encode(tag))
        }
        let [c17, c18] = GCM_ODD_IV;
        assert_eq!(
            seal::<U8>(&c17),
            format!("{}{}", c17.ct, c17.tag),
            "{}",
            c17.name
        );
        assert_eq!(
            seal::<U60>(&c18),
            format!("{}{}", c18.ct, c18.tag),
            "{}",
            c18.name
        );
    }
}
