// SPDX-License-Identifier: GPL-2.0
//! Copy-mode bounce buffers: the inputs and the outputs of one request as
//! two streams of equal-size page chunks.
//!
//! The device gathers inputs and scatters outputs over their segments as
//! streams, so the bounce memory need not mirror the user's segments: the
//! chunk is the smallest power-of-two size (from one page) that keeps the
//! request within the device's segment limit — 32 KiB (order 3) for 1 MiB
//! in and out with 64 segments — so user input never asks for a large
//! contiguous allocation. Chunks are allocated `GFP_KERNEL_ACCOUNT`
//! (charged to the caller's memory cgroup), without allocation-failure
//! warnings, and zeroed (what the device does not write reads as zero).
//! Their bytes count against the pinning caps like slabs do, from submit
//! until the completion is reaped (or the file is closed).
//!
//! A bounce buffer remembers the process that submitted it (thread group
//! id and address space): only that process may reap its outputs.

use core::ptr::NonNull;
use kernel::{
    bindings,
    page::{PAGE_SHIFT, PAGE_SIZE},
    prelude::*,
    sync::{
        atomic::{Atomic, Relaxed},
        Arc,
    },
    uaccess::{UserPtr, UserSlice},
};

use crate::{
    abi::{self, IocSegment},
    ring::Seg,
    slab::{current_owner, page_kaddr, page_phys, PINNED_TOTAL, QUARANTINED_TOTAL},
};

/// Bytes of bounce memory one file holds; shared by its buffers, which
/// give their bytes back when dropped.
pub(crate) type BounceBytes = Arc<Atomic<u64>>;

/// The bounce memory of one copy-mode request.
///
/// # Invariants
///
/// Each of `chunks` is a zeroed buddy allocation of order `order` owned by
/// this buffer; `bytes` (= chunks × chunk size once complete) is charged
/// to `acct` and `PINNED_TOTAL`.
pub(crate) struct Bounce {
    chunks: KVec<NonNull<bindings::page>>,
    order: u32,
    tin: usize,
    tout: usize,
    /// User output segments: (address, length), in order.
    outs: KVec<(u64, u32)>,
    /// The submitter: its process (thread group) id and its address space
    /// (as an identity only, never dereferenced).
    owner: (i32, usize),
    acct: BounceBytes,
    bytes: u64,
    /// Never freed: the device may still write to it.
    quarantined: bool,
}

// SAFETY: the chunks are plain pages owned by the buffer; nothing ties
// them to a thread.
unsafe impl Send for Bounce {}
// SAFETY: `&Bounce` only reads.
unsafe impl Sync for Bounce {}

/// Chunks of `PAGE_SIZE << order` bytes needed for `len` bytes (shifts,
/// not divisions: the chunk size is a power of two).
fn chunks_of(len: usize, order: u32) -> usize {
    let shift = PAGE_SHIFT + order as usize;
    (len >> shift) + usize::from(len & ((1 << shift) - 1) != 0)
}

/// Why a bounce buffer could not be set up.
fn over_cap(before: u64) -> Error {
    // Bounce memory already held comes back at reap: worth retrying then.
    if before > 0 {
        EAGAIN
    } else {
        ENOMEM
    }
}

impl Bounce {
    /// Allocates and charges the bounce memory for `segs` (validated: all
    /// inputs first, totals `tin`/`tout`) and copies the inputs in from
    /// the caller's memory. `slab_pinned` is what the file's slabs pin.
    pub(crate) fn new(
        segs: &[IocSegment],
        tin: usize,
        tout: usize,
        max_segs: usize,
        acct: &BounceBytes,
        slab_pinned: u64,
    ) -> Result<Self> {
        let mut order = 0u32;
        while chunks_of(tin, order) + chunks_of(tout, order) > max_segs {
            if PAGE_SIZE << order >= abi::SLAB_MAX_SIZE as usize {
                return Err(E2BIG);
            }
            order += 1;
        }
        let n = chunks_of(tin, order) + chunks_of(tout, order);
        let bytes = (n << (PAGE_SHIFT + order as usize)) as u64;
        let before = acct.fetch_add(bytes, Relaxed);
        let mut b = Bounce {
            chunks: KVec::new(),
            order,
            tin,
            tout,
            outs: KVec::new(),
            owner: current_owner(),
            acct: acct.clone(),
            bytes,
            quarantined: false,
        };
        let total_before = PINNED_TOTAL.fetch_add(bytes, Relaxed);
        if slab_pinned + before + bytes > crate::max_pinned_per_file()
            || total_before + bytes > crate::max_pinned_total()
        {
            return Err(over_cap(before));
        }
        b.chunks.reserve(n, GFP_KERNEL)?;
        b.outs.reserve(segs.len(), GFP_KERNEL)?;
        let gfp = bindings::GFP_KERNEL_ACCOUNT | bindings::__GFP_NOWARN | bindings::__GFP_ZERO;
        for _ in 0..n {
            // SAFETY: process context, valid flags; failure returns null.
            let p = unsafe { bindings::alloc_pages(gfp, b.order) };
            let p = NonNull::new(p).ok_or(ENOMEM)?;
            // Cannot fail: capacity reserved above.
            let _ = b.chunks.push_within_capacity(p);
        }
        let mut off = 0;
        for s in segs {
            if s.dir == abi::SEG_IN {
                b.copy_in(off, s)?;
                off += s.len as usize;
            } else {
                let _ = b.outs.push_within_capacity((s.addr, s.len));
            }
        }
        Ok(b)
    }

    fn chunk_size(&self) -> usize {
        PAGE_SIZE << self.order
    }

    /// (chunk index, offset in it) of stream byte `off`.
    fn locate(&self, off: usize) -> (usize, usize) {
        let shift = PAGE_SHIFT + self.order as usize;
        (off >> shift, off & ((1 << shift) - 1))
    }

    /// Chunk `k` as bytes.
    fn chunk(&self, k: usize) -> &[u8] {
        // SAFETY: chunk `k` is a live, direct-mapped (x86-64: no highmem)
        // buddy allocation of `chunk_size()` bytes owned by `self`
        // (invariant); the device writes it only while the request is in
        // flight, when the buffer is not read.
        unsafe { core::slice::from_raw_parts(page_kaddr(self.chunks[k]), self.chunk_size()) }
    }

    fn chunk_mut(&mut self, k: usize) -> &mut [u8] {
        // SAFETY: as in `chunk`, and `&mut self` makes this the only
        // reference.
        unsafe { core::slice::from_raw_parts_mut(page_kaddr(self.chunks[k]), self.chunk_size()) }
    }

    /// Copies user input segment `s` into the input stream at `off`.
    fn copy_in(&mut self, mut off: usize, s: &IocSegment) -> Result {
        let mut r = UserSlice::new(UserPtr::from_addr(s.addr as usize), s.len as usize).reader();
        let c = self.chunk_size();
        let mut left = s.len as usize;
        while left > 0 {
            let (k, o) = self.locate(off);
            let n = left.min(c - o);
            r.read_slice(&mut self.chunk_mut(k)[o..o + n])?;
            off += n;
            left -= n;
        }
        Ok(())
    }

    /// The device segments: input chunks, then output chunks.
    pub(crate) fn segs(&self, out: &mut KVec<Seg>) -> Result {
        let c = self.chunk_size();
        let nin = chunks_of(self.tin, self.order);
        for (k, p) in self.chunks.iter().enumerate() {
            let (len, write) = if k < nin {
                ((self.tin - k * c).min(c), false)
            } else {
                ((self.tout - (k - nin) * c).min(c), true)
            };
            out.push(
                Seg {
                    addr: page_phys(*p),
                    len: len as u32,
                    write,
                },
                GFP_KERNEL,
            )?;
        }
        Ok(())
    }

    /// Whether the calling process submitted this request.
    pub(crate) fn is_current_mm(&self) -> bool {
        current_owner() == self.owner
    }

    /// The submitting process's id (for log lines).
    pub(crate) fn owner_pid(&self) -> i32 {
        self.owner.0
    }

    /// Copies the first `len` output bytes to the user's output segments.
    /// Returns the bytes copied, or the error of the first that failed.
    pub(crate) fn copy_out(&self, len: usize) -> (u64, Result) {
        let c = self.chunk_size();
        let base = chunks_of(self.tin, self.order) * c;
        let mut left = len.min(self.tout);
        let mut off = 0usize;
        let mut copied = 0u64;
        for &(uaddr, slen) in self.outs.iter() {
            let mut w = UserSlice::new(UserPtr::from_addr(uaddr as usize), slen as usize).writer();
            let mut n = left.min(slen as usize);
            while n > 0 {
                let (k, o) = self.locate(base + off);
                let m = n.min(c - o);
                if let Err(e) = w.write_slice(&self.chunk(k)[o..o + m]) {
                    return (copied, Err(e));
                }
                copied += m as u64;
                off += m;
                n -= m;
                left -= m;
            }
            if left == 0 {
                break;
            }
        }
        (copied, Ok(()))
    }

    /// Never free this memory: the device did not acknowledge its reset
    /// and may still write to it.
    pub(crate) fn quarantine(&mut self) {
        self.quarantined = true;
    }
}

impl Drop for Bounce {
    fn drop(&mut self) {
        self.acct.fetch_sub(self.bytes, Relaxed);
        PINNED_TOTAL.fetch_sub(self.bytes, Relaxed);
        if self.quarantined {
            QUARANTINED_TOTAL.fetch_add(self.bytes, Relaxed);
            return;
        }
        for p in self.chunks.iter() {
            // SAFETY: we own each chunk, an allocation of `order`.
            unsafe { bindings::__free_pages(p.as_ptr(), self.order) };
        }
    }
}
