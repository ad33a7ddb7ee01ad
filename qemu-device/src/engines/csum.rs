//! RFC 1071 Internet checksum over scattered segments, reading its input
//! with volatile loads so that it can run on guest memory directly.
//!
//! The data is summed as big-endian (network order) 16-bit words, as if all
//! segments were one buffer: a segment of odd length makes the next one start
//! in the middle of a word. An odd total is padded with one zero byte, as
//! RFC 1071 prescribes.

/// Running one's-complement sum that can be fed segment by segment.
///
/// The sum is kept in little-endian word order (RFC 1071 §2(B): the
/// one's-complement sum commutes with byte swapping), which lets the inner
/// loop add aligned 16-byte loads without shuffling; [`folded`](Self::folded)
/// swaps the result back to network order.
#[derive(Clone, Copy, Debug, Default)]
pub struct Csum {
    /// Sum of little-endian words, as if the data started at an even offset.
    sum: u64,
    /// True when an odd number of bytes has been fed so far.
    odd: bool,
}

/// Folds a sum of 16-bit words to 16 bits with end-around carry.
#[inline]
fn fold(mut s: u64) -> u16 {
    while s >> 16 != 0 {
        s = (s & 0xffff) + (s >> 16);
    }
    s as u16
}

impl Csum {
    /// Starts a sum from a 32-bit seed (the request's `aux`), which lets a
    /// driver fold in a pseudo-header sum it computed itself.
    pub fn new(seed: u32) -> Self {
        Self {
            sum: u64::from(fold(u64::from(seed)).swap_bytes()),
            odd: false,
        }
    }

    /// Adds `data` as the continuation of everything fed so far.
    pub fn update(&mut self, data: &[u8]) {
        // SAFETY: a slice is readable for its length.
        unsafe { self.update_raw(data.as_ptr(), data.len()) }
    }

    /// Adds the `len` bytes at `p`, reading each exactly once with volatile
    /// loads: `p` may point into guest memory the guest is writing.
    ///
    /// # Safety
    /// `p..p+len` must be mapped and readable for the whole call.
    #[inline]
    pub unsafe fn update_raw(&mut self, p: *const u8, len: usize) {
        // SAFETY: the caller's contract.
        let part = fold(unsafe { le_sum(p, len) });
        // A segment that starts at an odd offset of the stream has its
        // bytes in the other half of every word.
        self.sum += u64::from(if self.odd { part.swap_bytes() } else { part });
        self.odd ^= len % 2 == 1;
    }

    /// The one's-complement sum folded to 16 bits (not yet complemented).
    pub fn folded(&self) -> u16 {
        fold(self.sum).swap_bytes()
    }

    /// The checksum to store in a header, in host order: write it with
    /// `to_be_bytes()` into the packet.
    pub fn finish(&self) -> u16 {
        !self.folded()
    }
}

/// Sum of the little-endian 16-bit words of `p..p+len` (a last odd byte
/// is the low half of a word), unfolded.
///
/// # Safety
/// `p..p+len` must be mapped and readable.
#[inline]
unsafe fn le_sum(p: *const u8, len: usize) -> u64 {
    // Bytes up to 16-byte alignment, then aligned 16-byte loads.
    let head = p.align_offset(16).min(len);
    let mut sum = 0u64;
    for i in 0..head {
        // SAFETY: i < len.
        let b = u64::from(unsafe { std::ptr::read_volatile(p.add(i)) });
        sum += if i % 2 == 0 { b } else { b << 8 };
    }
    // SAFETY: p + head is 16-aligned and the rest is in bounds.
    let body = fold(unsafe { aligned_sum(p.add(head), len - head) });
    sum + u64::from(if head % 2 == 1 {
        body.swap_bytes()
    } else {
        body
    })
}

/// [`le_sum`] for a 16-byte aligned start.
///
/// # Safety
/// `p` 16-aligned, `p..p+len` mapped and readable.
#[inline]
unsafe fn aligned_sum(p: *const u8, len: usize) -> u64 {
    let blocks = len / 16;
    let mut sum = 0u64;
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::*;
        // SAFETY: SSE2 is part of x86_64; every load is 16-aligned and in
        // bounds (k < blocks), and volatile so each byte is read once.
        unsafe {
            let zero = _mm_setzero_si128();
            let (mut a, mut b) = (zero, zero);
            for k in 0..blocks {
                let v = std::ptr::read_volatile(p.cast::<__m128i>().add(k));
                a = _mm_add_epi64(a, _mm_unpacklo_epi32(v, zero));
                b = _mm_add_epi64(b, _mm_unpackhi_epi32(v, zero));
            }
            let s = _mm_add_epi64(a, b);
            // 32-bit words summed: 2^16 = 1 in one's-complement arithmetic,
            // so folding their sum equals summing their 16-bit halves.
            let lo = _mm_cvtsi128_si64(s) as u64;
            let hi = _mm_cvtsi128_si64(_mm_unpackhi_epi64(s, s)) as u64;
            sum += u64::from(fold(lo)) + u64::from(fold(hi));
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    for k in 0..blocks * 2 {
        // SAFETY: 8-aligned (p is 16-aligned) and in bounds.
        let w = unsafe { std::ptr::read_volatile(p.cast::<u64>().add(k)) };
        sum += u64::from(fold((w & 0xffff_ffff) + (w >> 32)));
    }
    let mut i = blocks * 16;
    while i + 1 < len {
        // SAFETY: i + 1 < len.
        let (lo, hi) = unsafe {
            (
                std::ptr::read_volatile(p.add(i)),
                std::ptr::read_volatile(p.add(i + 1)),
            )
        };
        sum += u64::from(u16::from_le_bytes([lo, hi]));
        i += 2;
    }
    if i < len {
        // SAFETY: i < len.
        sum += u64::from(unsafe { std::ptr::read_volatile(p.add(i)) });
    }
    sum
}

/// RFC 1071 checksum of the concatenation of `segments`, seeded with `seed`.
pub fn checksum<'a>(seed: u32, segments: impl IntoIterator<Item = &'a [u8]>) -> u16 {
    let mut c = Csum::new(seed);
    for s in segments {
        c.update(s);
    }
    c.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Straight from the RFC's words: 16-bit big-endian words, end-around carry.
    fn reference(seed: u32, data: &[u8]) -> u16 {
        let mut sum: u32 = (seed & 0xffff) + (seed >> 16);
        sum = (sum & 0xffff) + (sum >> 16);
        let mut i = 0;
        while i < data.len() {
            let hi = data[i];
            let lo = if i + 1 < data.len() { data[i + 1] } else { 0 };
            sum += u32::from(u16::from_be_bytes([hi, lo]));
            sum = (sum & 0xffff) + (sum >> 16);
            i += 2;
        }
        !(sum as u16)
    }

    #[test]
    fn rfc1071_section_3_example() {
        // RFC 1071 §3: bytes 00 01 f2 03 f4 f5 f6 f7 sum to ddf2 (big-endian),
        // so the checksum is its complement, 220d.
        let data = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        let mut c = Csum::new(0);
        c.update(&data);
        assert_eq!(c.folded(), 0xddf2);
        assert_eq!(c.finish(), 0x220d);
        // Byte-order independence and grouping: split oddly, same answer.
        assert_eq!(checksum(0, [&data[..3], &data[3..5], &data[5..]]), 0x220d);
    }

    #[test]
    fn ipv4_header_checksum_verifies_to_zero() {
        // A classic IPv4 header (Wikipedia "IPv4 header checksum") whose
        // checksum field holds b861: the sum over the whole header is ffff.
        let hdr = [
            0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0xb8, 0x61, 0xc0, 0xa8,
            0x00, 0x01, 0xc0, 0xa8, 0x00, 0xc7,
        ];
        assert_eq!(checksum(0, [&hdr[..]]), 0);
        let mut zeroed = hdr;
        zeroed[10] = 0;
        zeroed[11] = 0;
        assert_eq!(checksum(0, [&zeroed[..]]), 0xb861);
    }

    #[test]
    fn odd_length_pads_with_zero_and_seed_folds() {
        assert_eq!(checksum(0, [&[0xab][..]]), !0xab00);
        assert_eq!(checksum(0, std::iter::empty::<&[u8]>()), 0xffff);
        assert_eq!(checksum(0x0001_0002, std::iter::empty::<&[u8]>()), !0x0003);
    }

    proptest! {
        #[test]
        fn matches_reference_for_any_split(
            data in proptest::collection::vec(any::<u8>(), 0..3000),
            cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..6),
            seed in any::<u32>(),
        ) {
            let mut points: Vec<usize> = cuts.iter().map(|i| i.index(data.len() + 1)).collect();
            points.sort_unstable();
            let mut segs = Vec::new();
            let mut last = 0;
            for p in points { segs.push(&data[last..p]); last = p; }
            segs.push(&data[last..]);
            prop_assert_eq!(checksum(seed, segs), reference(seed, &data));
        }
    }
}
