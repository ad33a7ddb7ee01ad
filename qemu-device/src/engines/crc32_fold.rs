//! CRC-32 (IEEE 802.3) by carry-less multiplication, streaming over guest
//! memory: the folding method of Gopal et al., "Fast CRC computation for
//! generic polynomials using PCLMULQDQ" (Intel, 2009), in the 16-stream
//! AVX-512 VPCLMULQDQ form crc32fast uses for long buffers, with the same
//! constants.
//!
//! Why not crc32fast itself: it takes a `&[u8]`, which the device never
//! forms over guest memory, so the device had to copy every byte into a
//! private buffer first; that copy cost as much as the CRC. Here guest
//! memory is read straight into vector registers, 64 bytes per load, and
//! folded into the running state. The sixteen streams are four 512-bit
//! accumulators, and 64-byte chunk q of the stream folds into accumulator
//! q mod 4, so a segment boundary can fall at any 64-byte chunk: only the
//! bytes of a chunk that straddles two segments are gathered, by one
//! masked load from each, in a register (the carry). Many small segments
//! therefore cost about what one large one does, and nothing is copied
//! through memory. A racing guest can only change which bytes the CRC
//! covers, never what the device checks: nothing here is read twice.

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

/// Bytes per load and per fold step.
const CHUNK: usize = 64;

// Fold constants, as in crc32fast: for a fold by D bits the pair is
// (reflect(x^(D+32) mod P), reflect(x^(D-32) mod P)).
const K_2048_LOW: i64 = 0x1_1542_778a;
const K_2048_HIGH: i64 = 0x1_322d_1430;
/// D = 512.
const K1: i64 = 0x1_5444_2bd4;
const K2: i64 = 0x1_c6e4_1596;
/// D = 128.
const K3: i64 = 0x1_7519_97d0;
const K4: i64 = 0x0_ccaa_009e;
const K5: i64 = 0x1_63cd_6124;
/// Barrett reduction: P(x) and its reciprocal μ.
const P_X: i64 = 0x1_DB71_0641;
const U_PRIME: i64 = 0x1_F701_1641;

/// True when this CPU has what [`Crc32Fold`] needs.
pub fn supported() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512bw")
            && std::arch::is_x86_feature_detected!("vpclmulqdq")
            && std::arch::is_x86_feature_detected!("pclmulqdq")
            && std::arch::is_x86_feature_detected!("sse4.1")
    }
    #[cfg(not(target_arch = "x86_64"))]
    false
}

/// A running CRC-32 whose input may be guest memory. Only made when
/// [`supported`] is true.
#[cfg(target_arch = "x86_64")]
#[derive(Clone, Copy)]
pub struct Crc32Fold {
    /// The sixteen 128-bit streams, as four accumulators that take the
    /// stream's 64-byte chunks in turn, in the order they take the next
    /// ones (`acc[0]` takes the next chunk and holds the oldest).
    acc: [__m512i; 4],
    /// Chunk 0 (which carries the seed) was folded.
    started: bool,
    /// The first `n` bytes of the next chunk (a private copy).
    carry: __m512i,
    n: usize,
    /// The finished CRC to continue from (folded into chunk 0).
    seed: u32,
}

/// Mask of bytes `from..from + len` of a 64-byte vector (`from + len <= 64`).
#[inline]
fn span(from: usize, len: usize) -> u64 {
    let low = if len >= CHUNK { !0 } else { (1u64 << len) - 1 };
    low << from
}

#[cfg(target_arch = "x86_64")]
impl Crc32Fold {
    /// Continues from the finished CRC `seed`.
    ///
    /// # Safety
    /// The CPU must have the features [`supported`] checks.
    pub unsafe fn new(seed: u32) -> Self {
        Self {
            // SAFETY: an all-zero vector is a valid __m512i (plain bits).
            acc: unsafe { std::mem::zeroed() },
            started: false,
            // SAFETY: as above.
            carry: unsafe { std::mem::zeroed() },
            n: 0,
            seed,
        }
    }

    /// Adds the `len` bytes at `p`, each read exactly once.
    ///
    /// # Safety
    /// As for [`new`](Self::new); `p..p+len` mapped and readable for the
    /// whole call.
    #[target_feature(enable = "avx512f,avx512bw,vpclmulqdq,pclmulqdq,sse4.1")]
    pub unsafe fn update_raw(&mut self, p: *const u8, len: usize) {
        // SAFETY: the caller's contract.
        unsafe { self.update_pieces([(p, len)]) }
    }

    /// Adds the pieces `(p, len)` in order, each byte read exactly once.
    /// The state stays in registers from one piece to the next.
    ///
    /// # Safety
    /// As for [`new`](Self::new); every `p..p+len` mapped and readable for
    /// the whole call.
    #[target_feature(enable = "avx512f,avx512bw,vpclmulqdq,pclmulqdq,sse4.1")]
    pub unsafe fn update_pieces(&mut self, pieces: impl IntoIterator<Item = (*const u8, usize)>) {
        let k = k2048();
        let (mut a, mut carry, mut n) = (self.acc, self.carry, self.n);
        for (mut p, mut len) in pieces {
            if n > 0 || !self.started {
                // Complete the carry (chunk 0 always goes this way, for
                // the seed).
                let take = (CHUNK - n).min(len);
                // SAFETY: the mask selects bytes n..n+take of the vector,
                // which come from p..p+take, inside the caller's range;
                // masked-off bytes are not accessed (AVX-512 masked loads
                // suppress faults), so nothing before `p` is read.
                carry = unsafe {
                    _mm512_mask_loadu_epi8(carry, span(n, take), p.wrapping_sub(n).cast())
                };
                // SAFETY: take <= len.
                (p, len, n) = (unsafe { p.add(take) }, len - take, n + take);
                if n < CHUNK {
                    continue;
                }
                let mut v = carry;
                if !self.started {
                    let seed = _mm_cvtsi32_si128(!self.seed as i32);
                    v = _mm512_xor_si512(v, _mm512_castsi128_si512(seed));
                    self.started = true;
                }
                a[0] = reduce512(a[0], v, k);
                (a, n) = ([a[1], a[2], a[3], a[0]], 0);
            }
            let w = p.cast::<Unaligned>();
            // SAFETY: every load below is a whole chunk inside `p..p+len`
            // (`blocks` and `singles` count them), volatile through an
            // alignment-1 type, so each byte is read exactly once.
            let ld = |i: usize| unsafe { std::ptr::read_volatile(w.add(i)) }.0;
            let (blocks, singles) = (len / (4 * CHUNK), len / CHUNK % 4);
            for b in 0..blocks {
                for (j, a) in a.iter_mut().enumerate() {
                    *a = reduce512(*a, ld(4 * b + j), k);
                }
            }
            let at = 4 * blocks;
            for (j, a) in a.iter_mut().enumerate().take(singles) {
                *a = reduce512(*a, ld(at + j), k);
            }
            a = match singles {
                0 => a,
                1 => [a[1], a[2], a[3], a[0]],
                2 => [a[2], a[3], a[0], a[1]],
                _ => [a[3], a[0], a[1], a[2]],
            };
            let rest = len % CHUNK;
            if rest > 0 {
                // SAFETY: the last `rest < 64` bytes of the piece; the
                // masked load reads only those.
                carry = unsafe { _mm512_maskz_loadu_epi8(span(0, rest), p.add(len - rest).cast()) };
                n = rest;
            }
        }
        (self.acc, self.carry, self.n) = (a, carry, n);
    }

    /// The finished CRC.
    ///
    /// # Safety
    /// As for [`new`](Self::new).
    #[target_feature(enable = "avx512f,avx512bw,vpclmulqdq,pclmulqdq,sse4.1")]
    pub unsafe fn finish(&self) -> u32 {
        let mut tail = [0u8; CHUNK];
        // SAFETY: a 64-byte store into our own array.
        unsafe { _mm512_storeu_si512(tail.as_mut_ptr().cast(), self.carry) };
        let tail = &tail[..self.n];
        if !self.started {
            let mut h = crc32fast::Hasher::new_with_initial(self.seed);
            h.update(tail);
            return h.finalize();
        }
        // The four vectors, oldest chunk first, folded 64 bytes at a time
        // into the one holding the last chunk.
        let k512 = _mm512_set_epi64(K2, K1, K2, K1, K2, K1, K2, K1);
        let mut x512 = self.acc[0];
        for &a in &self.acc[1..] {
            x512 = reduce512(x512, a, k512);
        }
        // Its four streams into one, then whole 16-byte pieces.
        let k3k4 = _mm_set_epi64x(K4, K3);
        let mut x = _mm512_castsi512_si128(x512);
        x = reduce128(x, _mm512_extracti32x4_epi32::<1>(x512), k3k4);
        x = reduce128(x, _mm512_extracti32x4_epi32::<2>(x512), k3k4);
        x = reduce128(x, _mm512_extracti32x4_epi32::<3>(x512), k3k4);
        let mut sixteens = tail.chunks_exact(16);
        for c in &mut sixteens {
            // SAFETY: 16 bytes of our own array; unaligned load.
            x = reduce128(x, unsafe { _mm_loadu_si128(c.as_ptr().cast()) }, k3k4);
        }
        let crc = barrett(x);
        let mut h = crc32fast::Hasher::new_with_initial(crc);
        h.update(sixteens.remainder());
        h.finalize()
    }
}

/// A 64-byte vector at any alignment, so that it can be read with one
/// volatile load.
#[cfg(target_arch = "x86_64")]
#[repr(C, packed)]
#[derive(Clone, Copy)]
struct Unaligned(__m512i);

/// The fold-by-2048-bits constants in every 128-bit lane.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[inline]
fn k2048() -> __m512i {
    _mm512_set_epi64(
        K_2048_HIGH,
        K_2048_LOW,
        K_2048_HIGH,
        K_2048_LOW,
        K_2048_HIGH,
        K_2048_LOW,
        K_2048_HIGH,
        K_2048_LOW,
    )
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,vpclmulqdq")]
#[inline]
fn reduce512(a: __m512i, b: __m512i, keys: __m512i) -> __m512i {
    let t1 = _mm512_clmulepi64_epi128::<0x00>(a, keys);
    let t2 = _mm512_clmulepi64_epi128::<0x11>(a, keys);
    _mm512_xor_si512(_mm512_xor_si512(b, t1), t2)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "pclmulqdq,sse4.1")]
#[inline]
fn reduce128(a: __m128i, b: __m128i, keys: __m128i) -> __m128i {
    let t1 = _mm_clmulepi64_si128::<0x00>(a, keys);
    let t2 = _mm_clmulepi64_si128::<0x11>(a, keys);
    _mm_xor_si128(_mm_xor_si128(b, t1), t2)
}

/// The 128-bit remainder reduced to the finished CRC (crc32fast's step 3
/// and its bit-reflected Barrett reduction).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "pclmulqdq,sse4.1")]
#[inline]
fn barrett(x: __m128i) -> u32 {
    let k3k4 = _mm_set_epi64x(K4, K3);
    let low32 = _mm_set_epi32(0, 0, 0, !0);
    let x = _mm_xor_si128(
        _mm_clmulepi64_si128::<0x10>(x, k3k4),
        _mm_srli_si128::<8>(x),
    );
    let x = _mm_xor_si128(
        _mm_clmulepi64_si128::<0x00>(_mm_and_si128(x, low32), _mm_set_epi64x(0, K5)),
        _mm_srli_si128::<4>(x),
    );
    let pu = _mm_set_epi64x(U_PRIME, P_X);
    let t1 = _mm_clmulepi64_si128::<0x10>(_mm_and_si128(x, low32), pu);
    let t2 = _mm_clmulepi64_si128::<0x00>(_mm_and_si128(t1, low32), pu);
    !(_mm_extract_epi32::<1>(_mm_xor_si128(x, t2)) as u32)
}

#[cfg(all(test, target_arch = "x86_64"))]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn fold(seed: u32, pieces: &[&[u8]]) -> u32 {
        // SAFETY: checked by the callers' `supported()`; live slices.
        unsafe {
            let mut c = Crc32Fold::new(seed);
            for p in pieces {
                c.update_raw(p.as_ptr(), p.len());
            }
            c.finish()
        }
    }

    fn reference(seed: u32, data: &[u8]) -> u32 {
        let mut h = crc32fast::Hasher::new_with_initial(seed);
        h.update(data);
        h.finalize()
    }

    #[test]
    fn every_length_around_the_block_sizes() {
        if !supported() {
            return;
        }
        let data: Vec<u8> = (0..2000u32).map(|i| (i * 131 + 7) as u8).collect();
        for len in (0..=1100).chain([1500, 1999]) {
            for start in [0, 1, 13] {
                let d = &data[start..start + len.min(2000 - start)];
                assert_eq!(
                    fold(0x5a5a_0001, &[d]),
                    reference(0x5a5a_0001, d),
                    "{start}+{len}"
                );
            }
        }
    }

    #[test]
    fn pieces_of_every_size_in_one_stream() {
        if !supported() {
            return;
        }
        // Chunks straddling one, two or many pieces, from the carry's
        // every fill level.
        let data: Vec<u8> = (0..20_000u32).map(|i| (i * 131 + 7) as u8).collect();
        for step in [1usize, 7, 63, 64, 65, 200, 1500] {
            let mut pieces = Vec::new();
            let (mut at, mut len) = (0, 1);
            while at < data.len() {
                let end = (at + len).min(data.len());
                pieces.push(&data[at..end]);
                at = end;
                len = len % step + 1;
            }
            assert_eq!(fold(3, &pieces), reference(3, &data), "step {step}");
            // SAFETY: checked `supported()`; live slices.
            let all = unsafe {
                let mut c = Crc32Fold::new(3);
                c.update_pieces(pieces.iter().map(|p| (p.as_ptr(), p.len())));
                c.finish()
            };
            assert_eq!(all, reference(3, &data), "step {step}, in one call");
        }
    }

    proptest! {
        #[test]
        fn matches_crc32fast_for_any_split(
            data in proptest::collection::vec(any::<u8>(), 0..3000),
            cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..8),
            seed in any::<u32>(),
        ) {
            if !supported() {
                return Ok(());
            }
            let mut points: Vec<usize> = cuts.iter().map(|i| i.index(data.len() + 1)).collect();
            points.sort_unstable();
            let mut pieces = Vec::new();
            let mut last = 0;
            for p in points { pieces.push(&data[last..p]); last = p; }
            pieces.push(&data[last..]);
            prop_assert_eq!(fold(seed, &pieces), reference(seed, &data));
        }
    }
}
