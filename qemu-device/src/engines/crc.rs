//! CRC-32C (Castagnoli) and CRC-32 (IEEE 802.3) over scattered segments.
//!
//! Both continue from `seed`, a finished CRC of the preceding data (0 to
//! start), so a long buffer can be split over requests by passing each
//! result as the next seed.
//!
//! Guest memory may change under the device, so the engines never see it
//! as a `&[u8]`. CRC-32C runs the SSE4.2 `crc32` instruction directly on
//! volatile 8-byte loads, three independent lanes at a time whose CRCs are
//! then combined (a CRC shifted over n zero bytes is linear in the CRC, so
//! the shift is four table lookups). CRC-32 (no instruction for its
//! polynomial) copies the pieces back to back into a private,
//! cache-resident buffer and runs `crc32fast` (PCLMULQDQ folding) on it.

use std::sync::OnceLock;

use super::carry::Carry;

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

/// Bytes of a middle-sized three-lane block. A segment's last bytes that
/// do not fill one wait in a carry buffer for the next segment, so that
/// segment boundaries cost neither serial tails nor short lanes (whose
/// combine steps dominate): the engine streams.
const BLOCK: usize = 3 * 128;

/// A running CRC-32C.
#[derive(Clone, Copy, Debug)]
pub struct Crc32c {
    /// The raw CRC register (the finished CRC, inverted).
    state: u32,
    /// Stream bytes not yet in the register.
    carry: Carry<BLOCK>,
}

impl Crc32c {
    /// Continues from the finished CRC `seed`.
    pub fn new(seed: u32) -> Self {
        Self {
            state: !seed,
            carry: Carry::new(),
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
        if std::arch::is_x86_feature_detected!("sse4.2") {
            // SAFETY: the CPU has SSE4.2 (checked); the range is the caller's.
            unsafe { self.stream(p, len) };
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

    /// The SSE4.2 path: whole blocks straight from `p`, the rest carried.
    ///
    /// # Safety
    /// SSE4.2 present; `p..p+len` mapped and readable.
    #[cfg(target_arch = "x86_64")]
    unsafe fn stream(&mut self, p: *const u8, len: usize) {
        let state = &mut self.state;
        let blocks = |q, n| {
            // SAFETY: SSE4.2 (caller); `feed` hands over `n` readable bytes
            // at `q`.
            *state = unsafe { hw::crc32c(*state, q, n) };
        };
        // SAFETY: the caller's range, which never overlaps the carry.
        unsafe { self.carry.feed(p, len, blocks) };
    }

    /// The finished CRC.
    pub fn finish(&self) -> u32 {
        let mut state = self.state;
        let tail = self.carry.tail();
        if !tail.is_empty() {
            // Only the SSE4.2 path carries bytes.
            #[cfg(target_arch = "x86_64")]
            {
                // SAFETY: carry bytes exist only on CPUs with SSE4.2; the
                // tail is our own initialised array.
                state = unsafe { hw::crc32c(state, tail.as_ptr(), tail.len()) };
            }
        }
        !state
    }
}

/// Lane lengths of the three-way loop, longest first, and their shift
/// tables.
const LANES: [usize; 3] = [1024, 128, 32];

/// `T[k][b]`: the raw CRC register `b << 8k` advanced over `lane` zero bytes.
type ShiftTable = [[u32; 256]; 4];

fn tables() -> &'static [ShiftTable; 3] {
    static T: OnceLock<Box<[ShiftTable; 3]>> = OnceLock::new();
    T.get_or_init(|| {
        let mut t = Box::new([[[0u32; 256]; 4]; 3]);
        for (li, &lane) in LANES.iter().enumerate() {
            // Columns: each basis bit advanced over `lane` zero bytes, the
            // same bitwise way the instruction does it.
            let cols: Vec<u32> = (0..32).map(|i| zeros(1 << i, lane)).collect();
            for k in 0..4 {
                for b in 0..256usize {
                    t[li][k][b] = (0..8)
                        .filter(|j| b >> j & 1 == 1)
                        .fold(0, |acc, j| acc ^ cols[8 * k + j]);
                }
            }
        }
        t
    })
}

/// The raw CRC-32C register `v` advanced over `n` zero bytes, bitwise.
fn zeros(mut v: u32, n: usize) -> u32 {
    for _ in 0..n * 8 {
        v = if v & 1 != 0 {
            (v >> 1) ^ 0x82F6_3B78
        } else {
            v >> 1
        };
    }
    v
}

#[inline]
fn shift(t: &ShiftTable, v: u32) -> u32 {
    t[0][(v & 0xff) as usize]
        ^ t[1][(v >> 8 & 0xff) as usize]
        ^ t[2][(v >> 16 & 0xff) as usize]
        ^ t[3][(v >> 24) as usize]
}

#[cfg(target_arch = "x86_64")]
mod hw {
    use std::arch::x86_64::{_mm_crc32_u8, _mm_crc32_u64};
    use std::ptr::read_volatile;

    use super::{LANES, shift, tables};

    /// An unaligned u64 (what vm-memory reads guest objects through).
    #[repr(C, packed)]
    #[derive(Clone, Copy)]
    struct U64(u64);

    /// Advances the raw register `crc` over `p..p+len`.
    ///
    /// # Safety
    /// SSE4.2 present; `p..p+len` mapped and readable.
    #[target_feature(enable = "sse4.2")]
    pub unsafe fn crc32c(mut crc: u32, mut p: *const u8, mut len: usize) -> u32 {
        // SAFETY: every load is inside `p..p+len` (each loop checks the
        // remaining length first) and volatile through an alignment-1 type,
        // so each byte is read exactly once whatever the guest does.
        unsafe {
            let ld = |w: *const U64, i: usize| u64::from_le(read_volatile(w.add(i)).0);
            for (t, &lane) in tables().iter().zip(&LANES) {
                let n = lane / 8;
                while len >= 3 * lane {
                    let w = p.cast::<U64>();
                    // All three lanes start from 0, so a block does not
                    // wait for the previous block's combine; the register
                    // is shifted over the block and added at the end.
                    let (mut a, mut b, mut c) = (0u64, 0u64, 0u64);
                    for i in 0..n {
                        a = _mm_crc32_u64(a, ld(w, i));
                        b = _mm_crc32_u64(b, ld(w, n + i));
                        c = _mm_crc32_u64(c, ld(w, 2 * n + i));
                    }
                    // By linearity: crc(s, A||B||C) = shift3(s) ^
                    // shift2(crc(0, A)) ^ shift(crc(0, B)) ^ crc(0, C).
                    let x = shift(t, shift(t, a as u32) ^ b as u32) ^ c as u32;
                    crc = shift(t, shift(t, shift(t, crc))) ^ x;
                    (p, len) = (p.add(3 * lane), len - 3 * lane);
                }
            }
            while len >= 8 {
                crc = _mm_crc32_u64(u64::from(crc), ld(p.cast::<U64>(), 0)) as u32;
                (p, len) = (p.add(8), len - 8);
            }
            while len > 0 {
                crc = _mm_crc32_u8(crc, read_volatile(p));
                (p, len) = (p.add(1), len - 1);
            }
        }
        crc
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
