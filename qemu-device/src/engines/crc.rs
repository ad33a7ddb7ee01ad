//! CRC-32C (Castagnoli) and CRC-32 (IEEE 802.3) over scattered segments.
//!
//! Both continue from `seed`, a finished CRC of the preceding data (0 to
//! start), so a long buffer can be split over requests by passing each
//! result as the next seed.
//!
//! Guest memory may change under the device, so the engines never see it
//! as a `&[u8]`. CRC-32C runs the SSE4.2 `crc32` instruction directly on
//! volatile loads, each piece in three lanes side by side whose CRCs are
//! then joined by carry-less multiplication (see `hw`). CRC-32 (no
//! instruction for its polynomial) folds guest memory with AVX-512
//! VPCLMULQDQ where the CPU has it (`crate::engines::crc32_fold`), else
//! copies the pieces back to back into a private, cache-resident buffer
//! and runs `crc32fast` on it.

/// Bytes copied at a time for the engines that work on a private copy.
pub const CHUNK: usize = 4096;

/// CRC-32C of the concatenated segments, continuing from `seed`.
pub fn crc32c<'a>(seed: u32, segments: impl IntoIterator<Item = &'a [u8]>) -> u32 {
    let mut c = Crc32c::new(seed);
    for s in segments {
        c.update(s);
    }
    c.finish()
}

/// CRC-32 (Ethernet FCS / zlib) of the concatenated segments, continuing from `seed`.
pub fn crc32<'a>(seed: u32, segments: impl IntoIterator<Item = &'a [u8]>) -> u32 {
    let mut h = crc32fast::Hasher::new_with_initial(seed);
    for s in segments {
        h.update(s);
    }
    h.finalize()
}

/// CRC-32 over guest pieces through one private, cache-resident buffer:
/// the pieces are copied in back to back and the CRC runs once per full
/// buffer, so many small segments cost what one large one does.
///
/// On CPUs with AVX-512 VPCLMULQDQ the stream folds guest memory directly
/// instead ([`crate::engines::crc32_fold`]), which saves the copy.
pub struct Crc32Stream<'a> {
    #[cfg(target_arch = "x86_64")]
    fold: Option<crate::engines::crc32_fold::Crc32Fold>,
    h: crc32fast::Hasher,
    buf: &'a mut Vec<u8>,
}

impl std::fmt::Debug for Crc32Stream<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Crc32Stream").finish_non_exhaustive()
    }
}

impl<'a> Crc32Stream<'a> {
    /// Continues from the finished CRC `seed`, using `buf` (any reusable
    /// vector; its contents are replaced) as the private copy.
    pub fn new(seed: u32, buf: &'a mut Vec<u8>) -> Self {
        buf.clear();
        buf.reserve(CHUNK);
        Self {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: made only when the CPU has the features it needs.
            fold: crate::engines::crc32_fold::supported()
                .then(|| unsafe { crate::engines::crc32_fold::Crc32Fold::new(seed) }),
            h: crc32fast::Hasher::new_with_initial(seed),
            buf,
        }
    }

    /// Adds the `len` bytes at `p`, copying each exactly once.
    ///
    /// # Safety
    /// `p..p+len` must be mapped and readable for the whole call.
    pub unsafe fn update_raw(&mut self, p: *const u8, len: usize) {
        #[cfg(target_arch = "x86_64")]
        if let Some(f) = &mut self.fold {
            // SAFETY: `fold` exists only on CPUs with its features; the
            // range is the caller's.
            unsafe { f.update_raw(p, len) };
            return;
        }
        let mut off = 0;
        while off < len {
            let at = self.buf.len();
            let n = (CHUNK - at).min(len - off);
            // SAFETY: the source is in bounds by the caller's contract; the
            // vector has capacity for CHUNK bytes (reserved in `new`, never
            // shrunk) and `at + n <= CHUNK`; host heap memory cannot overlap
            // guest memory. The copied bytes are initialised before set_len.
            unsafe {
                std::ptr::copy_nonoverlapping(p.add(off), self.buf.as_mut_ptr().add(at), n);
                self.buf.set_len(at + n);
            }
            off += n;
            if self.buf.len() == CHUNK {
                self.h.update(self.buf);
                self.buf.clear();
            }
        }
    }

    /// Adds the pieces `(p, len)` in order, copying each byte exactly once
    /// (the folding engine keeps its state in registers between pieces).
    ///
    /// # Safety
    /// Every `p..p+len` must be mapped and readable for the whole call.
    #[inline]
    pub unsafe fn update_pieces(&mut self, pieces: impl IntoIterator<Item = (*const u8, usize)>) {
        #[cfg(target_arch = "x86_64")]
        if let Some(f) = &mut self.fold {
            // SAFETY: `fold` exists only on CPUs with its features; the
            // ranges are the caller's.
            unsafe { f.update_pieces(pieces) };
            return;
        }
        for (p, len) in pieces {
            // SAFETY: the caller's range.
            unsafe { self.update_raw(p, len) };
        }
    }

    /// The finished CRC.
    pub fn finish(mut self) -> u32 {
        #[cfg(target_arch = "x86_64")]
        if let Some(f) = &self.fold {
            // SAFETY: `fold` exists only on CPUs with its features.
            return unsafe { f.finish() };
        }
        self.h.update(self.buf);
        self.buf.clear();
        self.h.finalize()
    }
}

/// A running CRC-32C.
#[derive(Clone, Copy, Debug)]
pub struct Crc32c {
    /// The raw CRC register (the finished CRC, inverted).
    state: u32,
    /// The CPU has SSE4.2 and PCLMULQDQ (checked once, in `new`).
    hw: bool,
}

impl Crc32c {
    /// Continues from the finished CRC `seed`.
    pub fn new(seed: u32) -> Self {
        Self {
            state: !seed,
            hw: hw::supported(),
        }
    }

    /// Adds `data`.
    pub fn update(&mut self, data: &[u8]) {
        // SAFETY: a slice is readable for its length.
        unsafe { self.update_raw(data.as_ptr(), data.len()) }
    }

    /// Adds the `len` bytes at `p`, each read exactly once.
    ///
    /// # Safety
    /// `p..p+len` must be mapped and readable for the whole call.
    #[inline]
    pub unsafe fn update_raw(&mut self, p: *const u8, len: usize) {
        #[cfg(target_arch = "x86_64")]
        if self.hw {
            // SAFETY: `hw` says the CPU has the features; the range is
            // the caller's.
            self.state = unsafe { hw::crc32c(self.state, p, len) };
            return;
        }
        let mut buf = [0u8; CHUNK];
        let mut off = 0;
        while off < len {
            let n = (len - off).min(CHUNK);
            // SAFETY: in bounds by the caller's contract; `buf` is a
            // private stack buffer, so the ranges cannot overlap.
            unsafe { std::ptr::copy_nonoverlapping(p.add(off), buf.as_mut_ptr(), n) };
            self.state = !crc32c::crc32c_append(!self.state, &buf[..n]);
            off += n;
        }
    }

    /// The finished CRC.
    pub fn finish(&self) -> u32 {
        !self.state
    }
}

/// The SSE4.2 engine. Each piece is cut into three equal lanes that run
/// side by side (the `crc32` instruction has a 3-cycle latency), whatever
/// its length, and the lanes are joined by carry-less multiplication:
/// advancing a register over n zero bytes is multiplying it by x^8n mod P,
/// which one PCLMULQDQ and one `crc32` do, with the factor from a table.
/// A piece therefore ends with a handful of instructions, no serial tail
/// of blocks and nothing carried: many small segments cost about what one
/// large one does, and no byte is ever copied.
#[cfg(target_arch = "x86_64")]
mod hw {
    use std::arch::x86_64::*;
    use std::ptr::read_volatile;

    /// Longest lane, in bytes: long pieces run in blocks of three.
    const LANE: usize = 1024;
    /// Shortest piece that is split into lanes (shorter ones run serially,
    /// which is as fast there).
    const MIN_SPLIT: usize = 3 * 32;
    /// The CRC-32C polynomial, bit-reflected, without its x^32 term.
    const POLY: u32 = 0x82F6_3B78;

    /// `K[j]` = x^(64j - 33) mod P, bit-reflected (bit i is x^(31-i)):
    /// `crc32(0, clmul(r, K[j]))` is the raw register `r` advanced over
    /// 8j zero bytes (the product of two reflected 32-bit values is x
    /// times their product as a reflected 64-bit value, and `crc32` of a
    /// 64-bit value multiplies by x^32 mod P: 1 + (64j - 33) + 32 = 64j).
    static K: [u32; 3 * LANE / 8 + 1] = shifts();

    const fn shifts() -> [u32; 3 * LANE / 8 + 1] {
        let mut k = [0u32; 3 * LANE / 8 + 1];
        // x^31: bit 0.
        let mut v = 1u32;
        let mut j = 1;
        while j < k.len() {
            k[j] = v;
            // Times x^64, one x at a time (a right shift, reduced by P).
            let mut i = 0;
            while i < 64 {
                v = if v & 1 != 0 { (v >> 1) ^ POLY } else { v >> 1 };
                i += 1;
            }
            j += 1;
        }
        k
    }

    /// True when this CPU has what [`crc32c`] needs.
    pub fn supported() -> bool {
        is_x86_feature_detected!("sse4.2") && is_x86_feature_detected!("pclmulqdq")
    }

    /// Unaligned values, for single volatile loads.
    #[repr(C, packed)]
    #[derive(Clone, Copy)]
    struct U64(u64);
    #[repr(C, packed)]
    #[derive(Clone, Copy)]
    struct U32(u32);
    #[repr(C, packed)]
    #[derive(Clone, Copy)]
    struct U16(u16);

    /// Advances the raw register `crc` over `p..p+len`.
    ///
    /// # Safety
    /// SSE4.2 and PCLMULQDQ present; `p..p+len` mapped and readable.
    #[target_feature(enable = "sse4.2,pclmulqdq")]
    pub unsafe fn crc32c(mut crc: u32, mut p: *const u8, mut len: usize) -> u32 {
        // SAFETY: every load below is inside `p..p+len` (each step checks
        // the remaining length first) and volatile through an alignment-1
        // type, so each byte is read exactly once whatever the guest does.
        unsafe {
            while len >= 3 * LANE {
                crc = lanes(crc, p, LANE / 8);
                (p, len) = (p.add(3 * LANE), len - 3 * LANE);
            }
            if len >= MIN_SPLIT {
                let n = len / 24;
                crc = lanes(crc, p, n);
                (p, len) = (p.add(24 * n), len - 24 * n);
            }
            while len >= 8 {
                crc = _mm_crc32_u64(
                    u64::from(crc),
                    u64::from_le(read_volatile(p.cast::<U64>()).0),
                ) as u32;
                (p, len) = (p.add(8), len - 8);
            }
            if len >= 4 {
                crc = _mm_crc32_u32(crc, u32::from_le(read_volatile(p.cast::<U32>()).0));
                (p, len) = (p.add(4), len - 4);
            }
            if len >= 2 {
                crc = _mm_crc32_u16(crc, u16::from_le(read_volatile(p.cast::<U16>()).0));
                (p, len) = (p.add(2), len - 2);
            }
            if len == 1 {
                crc = _mm_crc32_u8(crc, read_volatile(p));
            }
        }
        crc
    }

    /// The register `crc` advanced over three lanes of `n` 8-byte words at
    /// `p` (1 <= n <= LANE / 8).
    ///
    /// # Safety
    /// As for [`crc32c`], with `24 * n` readable bytes at `p`.
    #[target_feature(enable = "sse4.2,pclmulqdq")]
    #[inline]
    unsafe fn lanes(crc: u32, p: *const u8, n: usize) -> u32 {
        let w = p.cast::<U64>();
        // SAFETY: word indices below 3n, inside the caller's range.
        let ld = |i: usize| u64::from_le(unsafe { read_volatile(w.add(i)) }.0);
        // All three lanes start from 0, so they do not wait for `crc`
        // (nor for the previous piece's join).
        let (mut a, mut b, mut c) = (0u64, 0u64, 0u64);
        for i in 0..n - 1 {
            a = _mm_crc32_u64(a, ld(i));
            b = _mm_crc32_u64(b, ld(n + i));
            c = _mm_crc32_u64(c, ld(2 * n + i));
        }
        a = _mm_crc32_u64(a, ld(n - 1));
        b = _mm_crc32_u64(b, ld(2 * n - 1));
        // By linearity, the register over the 3n words is
        // crc * x^(3*64n) + a * x^(2*64n) + b * x^(64n) + c; the shifts are
        // summed unreduced and reduced by c's last `crc32`, which adds
        // its operand times x^32.
        let mul = |v: u64, k: u32| {
            let p =
                _mm_clmulepi64_si128::<0>(_mm_cvtsi64_si128(v as i64), _mm_cvtsi32_si128(k as i32));
            _mm_cvtsi128_si64(p) as u64
        };
        let t = mul(u64::from(crc), K[3 * n]) ^ mul(a, K[2 * n]) ^ mul(b, K[n]);
        _mm_crc32_u64(c, ld(3 * n - 1) ^ t) as u32
    }
}

/// Without x86_64 there is no hardware path.
#[cfg(not(target_arch = "x86_64"))]
mod hw {
    pub fn supported() -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pktaccel_testvectors::vectors::{CHECK_INPUT, CRC32_CHECK, CRC32C_CHECK};
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
        // The "check" values of the CRC catalogue.
        assert_eq!(crc32c(0, [CHECK_INPUT]), CRC32C_CHECK);
        assert_eq!(crc32(0, [CHECK_INPUT]), CRC32_CHECK);
        // iSCSI (RFC 3720 B.4): 32 bytes of zeros -> 8a9136aa.
        assert_eq!(crc32c(0, [&[0u8; 32][..]]), 0x8A91_36AA);
        // ... and 32 bytes of 0xff -> 62a8ab43.
        assert_eq!(crc32c(0, [&[0xffu8; 32][..]]), 0x62A8_AB43);
        assert_eq!(crc32c(0, std::iter::empty::<&[u8]>()), 0);
    }

    #[test]
    fn chaining_through_seed_equals_one_pass() {
        let a = crc32c(0, [&CHECK_INPUT[..5]]);
        assert_eq!(crc32c(a, [&CHECK_INPUT[5..]]), CRC32C_CHECK);
        let b = crc32(0, [&CHECK_INPUT[..4]]);
        assert_eq!(crc32(b, [&CHECK_INPUT[4..]]), CRC32_CHECK);
    }

    #[test]
    fn long_unaligned_inputs_match_the_crate() {
        let data: Vec<u8> = (0..70_000u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        for (start, len) in [
            (0, 70_000),
            (3, 65_536),
            (1, 3 * 1024 + 5),
            (5, 1500),
            (7, 97),
        ] {
            let d = &data[start..start + len.min(data.len() - start)];
            assert_eq!(
                crc32c(0x1234, [d]),
                crc32c::crc32c_append(0x1234, d),
                "{start}+{len}"
            );
        }
    }

    #[test]
    fn crc32c_every_length_around_the_lane_sizes() {
        // Every split into lanes (lengths up to two long blocks and a
        // remainder), serial tails of 0 to 23 bytes, at odd addresses.
        let data: Vec<u8> = (0..6300u32).map(|i| (i * 131 + 7) as u8).collect();
        for len in (0..=3200).chain(6100..=6200) {
            for start in [0, 1, 13] {
                let d = &data[start..start + len.min(data.len() - start)];
                assert_eq!(
                    crc32c(0x5a5a_0001, [d]),
                    crc32c::crc32c_append(0x5a5a_0001, d),
                    "{start}+{len}"
                );
            }
        }
    }

    #[test]
    fn crc32c_streams_across_any_piece_sizes() {
        let data: Vec<u8> = (0..20_000u32)
            .map(|i| (i.wrapping_mul(40_503) >> 7) as u8)
            .collect();
        for pieces in [1usize, 2, 16, 97, 1000] {
            let mut c = Crc32c::new(7);
            for p in data.chunks(data.len().div_ceil(pieces)) {
                c.update(p);
            }
            assert_eq!(
                c.finish(),
                crc32c::crc32c_append(7, &data),
                "{pieces} pieces"
            );
        }
    }

    #[test]
    fn the_crc32_stream_matches_one_pass_for_any_piece_sizes() {
        let data: Vec<u8> = (0..20_000u32)
            .map(|i| (i.wrapping_mul(40_503) >> 7) as u8)
            .collect();
        let mut buf = Vec::new();
        for pieces in [1usize, 3, 16, 97] {
            let mut c = Crc32Stream::new(7, &mut buf);
            for p in data.chunks(data.len().div_ceil(pieces)) {
                // SAFETY: a live slice.
                unsafe { c.update_raw(p.as_ptr(), p.len()) };
            }
            assert_eq!(c.finish(), crc32(7, [&data[..]]), "{pieces} pieces");
        }
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
