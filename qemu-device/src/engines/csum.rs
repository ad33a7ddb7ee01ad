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
/// Unaligned 16-byte loads from `p` itself, then at most one 8-, 4-, 2- and
/// 1-byte load for the tail: guest buffers start anywhere, and a byte-wise
/// head up to the next alignment cost more than the whole body of a
/// packet. Every load is volatile and reads each byte exactly once.
///
/// # Safety
/// `p..p+len` must be mapped and readable.
#[inline]
unsafe fn le_sum(p: *const u8, len: usize) -> u64 {
    let blocks = len / 16;
    // SAFETY: `blocks * 16 <= len` bytes in bounds.
    let mut sum = u64::from(fold(unsafe { block_sum(p, blocks) }));
    let mut i = blocks * 16;
    // Every piece starts at an even offset from `p`, so its bytes pair up
    // into the same words as in one pass; a 32- or 64-bit piece is summed
    // as 32-bit halves (2^16 = 1 in one's-complement arithmetic).
    if len - i >= 8 {
        // SAFETY: 8 bytes in bounds; alignment-1 type.
        let w =
            u64::from_le(unsafe { std::ptr::read_volatile(p.add(i).cast::<Unaligned<u64>>()) }.0);
        sum += (w & 0xffff_ffff) + (w >> 32);
        i += 8;
    }
    if len - i >= 4 {
        // SAFETY: 4 bytes in bounds; alignment-1 type.
        sum += u64::from(u32::from_le(
            unsafe { std::ptr::read_volatile(p.add(i).cast::<Unaligned<u32>>()) }.0,
        ));
        i += 4;
    }
    if len - i >= 2 {
        // SAFETY: 2 bytes in bounds; alignment-1 type.
        sum += u64::from(u16::from_le(
            unsafe { std::ptr::read_volatile(p.add(i).cast::<Unaligned<u16>>()) }.0,
        ));
        i += 2;
    }
    if len > i {
        // SAFETY: the last byte, in bounds.
        sum += u64::from(unsafe { std::ptr::read_volatile(p.add(i)) });
    }
    sum
}

/// A value at any alignment, for one volatile unaligned load.
#[repr(C, packed)]
#[derive(Clone, Copy)]
struct Unaligned<T>(T);

/// Sum of `blocks` 16-byte blocks at `p` (any alignment), as 32-bit
/// little-endian words, unfolded.
///
/// # Safety
/// `p..p+16*blocks` mapped and readable.
#[inline]
unsafe fn block_sum(p: *const u8, blocks: usize) -> u64 {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::*;
        let w = p.cast::<Unaligned<__m128i>>();
        // SAFETY: SSE2 is part of x86_64; every load is in bounds
        // (k < blocks) and volatile through an alignment-1 type, so each
        // byte is read once.
        unsafe {
            let zero = _mm_setzero_si128();
            let (mut a, mut b) = (zero, zero);
            for k in 0..blocks {
                let v = std::ptr::read_volatile(w.add(k)).0;
                a = _mm_add_epi64(a, _mm_unpacklo_epi32(v, zero));
                b = _mm_add_epi64(b, _mm_unpackhi_epi32(v, zero));
            }
            let s = _mm_add_epi64(a, b);
            let lo = _mm_cvtsi128_si64(s) as u64;
            let hi = _mm_cvtsi128_si64(_mm_unpackhi_epi64(s, s)) as u64;
            u64::from(fold(lo)) + u64::from(fold(hi))
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let w = p.cast::<Unaligned<u64>>();
        let mut sum = 0u64;
        for k in 0..blocks * 2 {
            // SAFETY: in bounds; alignment-1 type.
            let v = u64::from_le(unsafe { std::ptr::read_volatile(w.add(k)) }.0);
            sum += u64::from(fold((v & 0xffff_ffff) + (v >> 32)));
        }
        sum
    }
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
    use pktaccel_testvectors::soft;
    use pktaccel_testvectors::vectors::{RFC1071_CSUM, RFC1071_DATA};
    use proptest::prelude::*;

    #[test]
    fn rfc1071_section_3_example() {
        // RFC 1071 §3: the example bytes sum to ddf2 (big-endian), so the
        // checksum is its complement, 220d.
        let data = RFC1071_DATA;
        let mut c = Csum::new(0);
        c.update(&data);
        assert_eq!(c.folded(), !RFC1071_CSUM);
        assert_eq!(c.finish(), RFC1071_CSUM);
        // Byte-order independence and grouping: split oddly, same answer.
        assert_eq!(
            checksum(0, [&data[..3], &data[3..5], &data[5..]]),
            RFC1071_CSUM
        );
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
            prop_assert_eq!(checksum(seed, segs), soft::inet_csum(seed, &[&data]));
        }
    }
}
