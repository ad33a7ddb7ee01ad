//! RFC 1071 Internet checksum over scattered segments.
//!
//! The data is summed as big-endian (network order) 16-bit words, as if all
//! segments were one buffer: a segment of odd length makes the next one start
//! in the middle of a word. An odd total is padded with one zero byte, as
//! RFC 1071 prescribes.

/// Running one's-complement sum that can be fed segment by segment.
#[derive(Clone, Copy, Debug, Default)]
pub struct Csum {
    /// Sum of big-endian 32-bit (or 16-bit) words; folded at the end.
    sum: u64,
    /// True when an odd number of bytes has been fed so far.
    odd: bool,
}

impl Csum {
    /// Starts a sum from a 32-bit seed (the request's `aux`), which lets a
    /// driver fold in a pseudo-header sum it computed itself.
    pub fn new(seed: u32) -> Self {
        Self {
            sum: u64::from(seed),
            odd: false,
        }
    }

    /// Adds `data` as the continuation of everything fed so far.
    pub fn update(&mut self, mut data: &[u8]) {
        if data.is_empty() {
            return;
        }
        if self.odd {
            // This byte is the low half of a big-endian word begun earlier.
            self.sum += u64::from(data[0]);
            data = &data[1..];
            self.odd = false;
        }
        let mut words = data.chunks_exact(4);
        // Two independent accumulators keep the loop vectorizable; 2^32
        // words of at most 2^32 cannot overflow u64 within any request.
        let mut acc = 0u64;
        for w in &mut words {
            acc += u64::from(u32::from_be_bytes([w[0], w[1], w[2], w[3]]));
        }
        self.sum += acc;
        let rest = words.remainder();
        let mut i = 0;
        while i + 2 <= rest.len() {
            self.sum += u64::from(u16::from_be_bytes([rest[i], rest[i + 1]]));
            i += 2;
        }
        if i < rest.len() {
            self.sum += u64::from(rest[i]) << 8;
            self.odd = true;
        }
    }

    /// The one's-complement sum folded to 16 bits (not yet complemented).
    pub fn folded(&self) -> u16 {
        let mut s = self.sum;
        while s >> 16 != 0 {
            s = (s & 0xffff) + (s >> 16);
        }
        s as u16
    }

    /// The checksum to store in a header, in host order: write it with
    /// `to_be_bytes()` into the packet.
    pub fn finish(&self) -> u16 {
        !self.folded()
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
