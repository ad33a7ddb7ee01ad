//! Host-mapped pieces of a request's data segments, and the only code that
//! moves bytes through them: translation from guest addresses, gathering
//! into the private scratch copy, scattering results back, zeroing, and the
//! DMA copy.

use std::ptr;

use vm_memory::{GuestAddress, GuestMemoryBackend};

use crate::engines::copy;
use crate::guest::Regions;
use crate::ring::Desc;

/// A host-mapped piece of a guest segment (a segment spanning two guest
/// memory regions becomes two pieces).
#[derive(Clone, Copy, Debug)]
pub(super) struct Seg {
    pub(super) ptr: *mut u8,
    pub(super) len: usize,
}

// SAFETY: a `Seg` is only an address and a length; it is dereferenced only
// by the worker that resolved it, while that worker holds the guest-memory
// guard that keeps the mapping alive, and segment lists are cleared at the
// end of every request. Sending the (empty) scratch lists between threads is
// therefore sound.
unsafe impl Send for Seg {}

/// Translates one guest segment into host pieces; `Err` when any byte is
/// outside guest memory or the range wraps. `hint` is the region the last
/// segment was found in, tried first (consecutive segments are nearly
/// always in the same one), and is updated.
#[inline]
pub(super) fn resolve<M: GuestMemoryBackend>(
    mem: &M,
    regions: &Regions,
    d: &Desc,
    out: &mut Vec<Seg>,
    hint: &mut usize,
) -> Result<(), ()> {
    let len = d.len as usize;
    if let Some(ptr) = regions.host_hinted(d.addr, u64::from(d.len), hint) {
        out.push(Seg { ptr, len });
        return Ok(());
    }
    d.addr.checked_add(u64::from(d.len)).ok_or(())?;
    for slice in mem.get_slices(GuestAddress(d.addr), len) {
        let slice = slice.map_err(|_| ())?;
        out.push(Seg {
            ptr: slice.ptr_guard_mut().as_ptr(),
            len: slice.len(),
        });
    }
    Ok(())
}

/// Copies all input pieces, in order, into `buf` (resized to fit).
pub(super) fn gather(ins: &[Seg], buf: &mut Vec<u8>) {
    buf.clear();
    for g in ins {
        let at = buf.len();
        buf.resize(at + g.len, 0);
        // SAFETY: `g` lies in a live guest mapping (resolved for this
        // request); `buf` is host heap memory with room for `g.len` bytes
        // at `at`, so the ranges do not overlap. This copy is the private
        // snapshot the engine works on.
        unsafe { ptr::copy_nonoverlapping(g.ptr, buf.as_mut_ptr().add(at), g.len) };
    }
}

/// Writes `parts`, concatenated, to the start of the outputs.
pub(super) fn scatter(outs: &[Seg], parts: &[&[u8]]) {
    let (mut o, mut off) = (0usize, 0usize);
    for part in parts {
        let mut p: &[u8] = part;
        while !p.is_empty() && o < outs.len() {
            let n = p.len().min(outs[o].len - off);
            // SAFETY: `outs[o].ptr + off .. + n` lies inside a live, writable
            // guest mapping (resolved from a device-writable descriptor), and
            // `p` is host memory (the scratch buffer), so they cannot overlap.
            unsafe { ptr::copy_nonoverlapping(p.as_ptr(), outs[o].ptr.add(off), n) };
            p = &p[n..];
            off += n;
            if off == outs[o].len {
                o += 1;
                off = 0;
            }
        }
    }
}

/// Zeroes every output piece.
pub(super) fn zero(outs: &[Seg]) {
    for g in outs {
        // SAFETY: a live, writable guest mapping of `len` bytes.
        unsafe { ptr::write_bytes(g.ptr, 0, g.len) };
    }
}

/// The DMA copy: inputs to outputs with `memmove`, so in-place and
/// overlapping segment pairs are fine.
pub(super) fn copy_segs(ins: &[Seg], outs: &[Seg]) {
    copy::plan_with(
        (ins.len(), |i| ins[i].len),
        (outs.len(), |o| outs[o].len),
        |c| {
            // SAFETY: the plan keeps every chunk inside its input and output
            // piece, both in live guest mappings; `ptr::copy` allows overlap.
            unsafe {
                ptr::copy(
                    ins[c.src].ptr.add(c.src_off),
                    outs[c.dst].ptr.add(c.dst_off),
                    c.len,
                )
            };
        },
    );
}
