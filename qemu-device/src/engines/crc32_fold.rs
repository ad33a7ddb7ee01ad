//! CRC-32 (IEEE 802.3) by carry-less multiplication, streaming over guest
//! memory: the folding method of Gopal et al., "Fast CRC computation for
//! generic polynomials using PCLMULQDQ" (Intel, 2009), in the 16-stream
//! AVX-512 VPCLMULQDQ form crc32fast uses for long buffers, with the same
//! constants.
//!
//! Why not crc32fast itself: it takes a `&[u8]`, which the device never
//! forms over guest memory, so the device had to copy every byte into a
//! private buffer first; that copy cost as much as the CRC. Here each
//! 256-byte block is read straight from guest memory by four volatile
//! 64-byte loads (each byte read exactly once) and folded into the running
//! state; only a segment's ragged ends (under 256 bytes) go through a
//! private carry buffer, so many small segments cost about what one large
//! one does. A racing guest can only change which bytes the CRC covers,
//! never what the device checks: nothing here is read twice.

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

use super::carry::Carry;

/// Bytes folded per step: four 64-byte vectors, sixteen 128-bit streams.
const BLOCK: usize = 256;

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
    streams: Streams,
    /// Stream bytes not folded yet.
    carry: Carry<BLOCK>,
}

/// The folding state.
#[cfg(target_arch = "x86_64")]
#[derive(Clone, Copy)]
struct Streams {
    /// The sixteen 128-bit streams, once a first block was folded.
    acc: [__m512i; 4],
    started: bool,
    /// The finished CRC to continue from, until a first block is folded.
    seed: u32,
}

/// A 64-byte vector at any alignment, so that it can be read with one
/// volatile load.
#[cfg(target_arch = "x86_64")]
#[repr(C, packed)]
#[derive(Clone, Copy)]
struct Unaligned(__m512i);

#[cfg(target_arch = "x86_64")]
impl Crc32Fold {
    /// Continues from the finished CRC `seed`.
    ///
    /// # Safety
    /// The CPU must have the features [`supported`] checks.
    pub unsafe fn new(seed: u32) -> Self {
        Self {
            streams: Streams {
                // SAFETY: an all-zero vector is a valid __m512i (plain bits).
                acc: unsafe { std::mem::zeroed() },
                started: false,
                seed,
            },
            carry: Carry::new(),
        }
    }

    /// Adds the `len` bytes at `p`, each read exactly once.
    ///
    /// # Safety
    /// As for [`new`](Self::new); `p..p+len` mapped and readable for the
    /// whole call.
    #[target_feature(enable = "avx512f,vpclmulqdq,pclmulqdq,sse4.1")]
    pub unsafe fn update_raw(&mut self, p: *const u8, len: usize) {
        let streams = &mut self.streams;
        let blocks = |q: *const u8, n: usize| {
            for i in (0..n).step_by(BLOCK) {
                // SAFETY: `feed` hands over `n` readable bytes at `q`, a
                // multiple of BLOCK; the CPU features are this function's.
                unsafe { streams.fold(q.add(i)) };
            }
        };
        // SAFETY: the caller's range, which never overlaps the carry.
        unsafe { self.carry.feed(p, len, blocks) };
    }

    /// The finished CRC.
    ///
    /// # Safety
    /// As for [`new`](Self::new).
    #[target_feature(enable = "avx512f,vpclmulqdq,pclmulqdq,sse4.1")]
    pub unsafe fn finish(&self) -> u32 {
        // SAFETY: the features, as for this function.
        unsafe { self.streams.finish(self.carry.tail()) }
    }
}

#[cfg(target_arch = "x86_64")]
impl Streams {
    /// Folds the 256 bytes at `p` into the streams.
    ///
    /// # Safety
    /// `p..p+BLOCK` mapped and readable.
    #[target_feature(enable = "avx512f,vpclmulqdq,pclmulqdq,sse4.1")]
    #[inline]
    unsafe fn fold(&mut self, p: *const u8) {
        let w = p.cast::<Unaligned>();
        // SAFETY: four 64-byte loads inside `p..p+BLOCK`, volatile through
        // an alignment-1 type, so each byte is read exactly once.
        let v = unsafe { [0, 1, 2, 3].map(|i| std::ptr::read_volatile(w.add(i)).0) };
        if !self.started {
            self.acc = v;
            self.acc[0] = _mm512_xor_si512(
                v[0],
                _mm512_castsi128_si512(_mm_cvtsi32_si128(!self.seed as i32)),
            );
            self.started = true;
            return;
        }
        let k = _mm512_set_epi64(
            K_2048_HIGH,
            K_2048_LOW,
            K_2048_HIGH,
            K_2048_LOW,
            K_2048_HIGH,
            K_2048_LOW,
            K_2048_HIGH,
            K_2048_LOW,
        );
        for (a, v) in self.acc.iter_mut().zip(v) {
            *a = reduce512(*a, v, k);
        }
    }

    /// The finished CRC over the folded streams and then `tail`.
    ///
    /// # Safety
    /// As for [`Crc32Fold::new`].
    #[target_feature(enable = "avx512f,vpclmulqdq,pclmulqdq,sse4.1")]
    unsafe fn finish(&self, tail: &[u8]) -> u32 {
        if !self.started {
            let mut h = crc32fast::Hasher::new_with_initial(self.seed);
            h.update(tail);
            return h.finalize();
        }
        // The four vectors, in stream order, folded 64 bytes at a time
        // into the last one, then the carry's whole 64-byte pieces.
        let k512 = _mm512_set_epi64(K2, K1, K2, K1, K2, K1, K2, K1);
        let mut r = reduce512(self.acc[0], self.acc[1], k512);
        r = reduce512(r, self.acc[2], k512);
        r = reduce512(r, self.acc[3], k512);
        let mut chunks = tail.chunks_exact(64);
        for c in &mut chunks {
            // SAFETY: 64 bytes of our own array; unaligned load.
            r = reduce512(r, unsafe { _mm512_loadu_si512(c.as_ptr().cast()) }, k512);
        }
        // Its four streams into one, then whole 16-byte pieces.
        let k3k4 = _mm_set_epi64x(K4, K3);
        let mut x = _mm512_castsi512_si128(r);
        x = reduce128(x, _mm512_extracti32x4_epi32::<1>(r), k3k4);
        x = reduce128(x, _mm512_extracti32x4_epi32::<2>(r), k3k4);
        x = reduce128(x, _mm512_extracti32x4_epi32::<3>(r), k3k4);
        let mut sixteens = chunks.remainder().chunks_exact(16);
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
