//! The DMA engine's scatter-gather memcpy, as a plan of contiguous moves.
//!
//! [`plan`] walks input and output segment lengths in order and yields the
//! maximal chunks that lie inside one input and one output segment; the
//! device executes each chunk with a `memmove` on guest memory (so a segment
//! that is its own output, "in place", is fine), and [`copy_slices`] runs the
//! same plan over ordinary slices.

/// One contiguous move: `len` bytes from input `src` at `src_off` to output
/// `dst` at `dst_off`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Chunk {
    /// Index of the input segment.
    pub src: usize,
    /// Offset inside that input segment.
    pub src_off: usize,
    /// Index of the output segment.
    pub dst: usize,
    /// Offset inside that output segment.
    pub dst_off: usize,
    /// Bytes to move.
    pub len: usize,
}

/// Calls `f` for each chunk that copies the inputs (lengths `ins`) in order
/// into the outputs (lengths `outs`), stopping when either side runs out.
/// Returns the bytes covered.
pub fn plan(ins: &[usize], outs: &[usize], f: impl FnMut(Chunk)) -> usize {
    plan_with((ins.len(), |i| ins[i]), (outs.len(), |o| outs[o]), f)
}

/// [`plan`] over `(count, length of segment i)` on each side, so that a
/// caller with its own segment lists needs no length arrays.
#[inline]
pub fn plan_with(
    (n_in, in_len): (usize, impl Fn(usize) -> usize),
    (n_out, out_len): (usize, impl Fn(usize) -> usize),
    mut f: impl FnMut(Chunk),
) -> usize {
    let (mut i, mut io, mut o, mut oo, mut done) = (0, 0, 0, 0, 0);
    while i < n_in && o < n_out {
        let (il, ol) = (in_len(i), out_len(o));
        let len = (il - io).min(ol - oo);
        if len > 0 {
            f(Chunk {
                src: i,
                src_off: io,
                dst: o,
                dst_off: oo,
                len,
            });
        }
        io += len;
        oo += len;
        done += len;
        if io == il {
            i += 1;
            io = 0;
        }
        if oo == ol {
            o += 1;
            oo = 0;
        }
    }
    done
}

/// Copies the concatenated `ins` into the concatenated `outs`; returns bytes copied.
pub fn copy_slices(ins: &[&[u8]], outs: &mut [&mut [u8]]) -> usize {
    let il: Vec<usize> = ins.iter().map(|s| s.len()).collect();
    let ol: Vec<usize> = outs.iter().map(|s| s.len()).collect();
    plan(&il, &ol, |c| {
        outs[c.dst][c.dst_off..c.dst_off + c.len]
            .copy_from_slice(&ins[c.src][c.src_off..c.src_off + c.len]);
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn chunks_split_at_both_sides_boundaries() {
        let mut v = Vec::new();
        let n = plan(&[3, 5], &[4, 4], |c| {
            v.push((c.src, c.src_off, c.dst, c.dst_off, c.len))
        });
        assert_eq!(n, 8);
        assert_eq!(v, vec![(0, 0, 0, 0, 3), (1, 0, 0, 3, 1), (1, 1, 1, 0, 4)]);
    }

    proptest! {
        #[test]
        fn scattered_copy_equals_concatenation(
            ins in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 1..50), 0..6),
            out_lens in proptest::collection::vec(1usize..60, 0..6),
        ) {
            let flat: Vec<u8> = ins.concat();
            let mut outs: Vec<Vec<u8>> = out_lens.iter().map(|&l| vec![0u8; l]).collect();
            let in_refs: Vec<&[u8]> = ins.iter().map(|v| &v[..]).collect();
            let mut out_refs: Vec<&mut [u8]> = outs.iter_mut().map(|v| &mut v[..]).collect();
            let n = copy_slices(&in_refs, &mut out_refs);
            let out_total: usize = out_lens.iter().sum();
            prop_assert_eq!(n, flat.len().min(out_total));
            let got: Vec<u8> = outs.concat();
            prop_assert_eq!(&got[..n], &flat[..n]);
            prop_assert!(got[n..].iter().all(|&b| b == 0));
        }
    }
}
