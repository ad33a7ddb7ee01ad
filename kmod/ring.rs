// SPDX-License-Identifier: GPL-2.0
//! Split virtqueues in DMA-coherent memory (virtio 1.2, section 2.7).
//!
//! Every ring lives in [`Coherent`] allocations and is touched only through
//! the kernel crate's volatile I/O projections (`io_read!`/`io_write!`,
//! `io_project!`): the only `unsafe` here are the byte-layout promises
//! (`FromBytes`/`AsBytes`) for the descriptor and slot buffer types.
//!
//! A request is a chain `[header][segments...][status]`. The ring is cut
//! into fixed *slots*, one per request in flight: with
//! `VIRTIO_F_INDIRECT_DESC` a slot is one ring descriptor pointing at the
//! slot's own indirect table; without it, a slot is a run of
//! `max_segments + 2` consecutive ring descriptors. Either way the head
//! descriptor index identifies the slot and no descriptor free-list is
//! needed. Each slot also owns a 64-byte header and a 16-byte status buffer.

use kernel::{
    device::{Bound, Device},
    dma::Coherent,
    io::{io_project, io_read, io_write, Io},
    prelude::*,
    sync::barrier::{smp_mb, Read, Write},
};

use crate::abi;

const DESC_F_NEXT: u16 = 1;
const DESC_F_WRITE: u16 = 2;
const DESC_F_INDIRECT: u16 = 4;

/// Status value the driver writes before submission; the device always
/// overwrites it, so seeing it at completion means a device bug.
pub(crate) const STATUS_UNWRITTEN: u32 = 0xffff_ffff;

/// One virtq descriptor.
#[repr(C)]
#[derive(Clone, Copy, Default, FromBytes, IntoBytes)]
pub(crate) struct Desc {
    addr: u64,
    len: u32,
    flags: u16,
    next: u16,
}

// SAFETY: `Desc` is `repr(C)` with only integer fields and no padding
// (8 + 4 + 2 + 2 bytes), so every bit pattern is valid.
unsafe impl kernel::transmute::FromBytes for Desc {}
// SAFETY: `Desc` is `repr(C)` with only integer fields and no padding.
unsafe impl kernel::transmute::AsBytes for Desc {}

/// The per-slot header and status buffers the chain points at.
#[repr(C)]
#[derive(FromBytes, IntoBytes)]
pub(crate) struct SlotBuf {
    hdr: [u8; abi::REQUEST_HEADER_SIZE],
    status: [u8; abi::STATUS_RECORD_SIZE],
}

// SAFETY: byte arrays only (64 + 16 bytes, alignment 1): no padding, every
// bit pattern valid.
unsafe impl kernel::transmute::FromBytes for SlotBuf {}
// SAFETY: byte arrays only, no padding.
unsafe impl kernel::transmute::AsBytes for SlotBuf {}

/// One data segment as the device sees it.
#[derive(Clone, Copy)]
pub(crate) struct Seg {
    pub(crate) addr: u64,
    pub(crate) len: u32,
    /// Device-writable (an output).
    pub(crate) write: bool,
}

/// A split virtqueue and its slots.
pub(crate) struct Vq {
    /// `size - 1`: sizes are powers of two.
    mask: u16,
    desc: Coherent<[Desc]>,
    /// flags, idx, ring[size], used_event.
    avail: Coherent<[u16]>,
    /// (flags | idx << 16), then {id, len} per entry, then avail_event.
    used: Coherent<[u32]>,
    slots: Coherent<[SlotBuf]>,
    indirect: Option<Coherent<[Desc]>>,
    /// Descriptors per slot: chain length limit.
    per_slot: u16,
    nslots: u16,
    free: KVec<u16>,
    avail_idx: u16,
    last_used: u16,
}

impl Vq {
    /// Allocates the rings for a queue of `size` descriptors carrying up to
    /// `max_segs` data segments per request.
    pub(crate) fn new(
        dev: &Device<Bound>,
        size: u16,
        max_segs: u16,
        indirect: bool,
    ) -> Result<Self> {
        if !size.is_power_of_two() {
            return Err(EINVAL);
        }
        let n = usize::from(size);
        let per_slot = max_segs.checked_add(2).ok_or(EINVAL)?;
        let (nslots, indirect) = if indirect {
            let table = Coherent::<Desc>::zeroed_slice(dev, n * usize::from(per_slot), GFP_KERNEL)?;
            (size, Some(table))
        } else {
            if per_slot > size {
                return Err(EINVAL);
            }
            (size.checked_div(per_slot).unwrap_or(0), None)
        };
        let mut free = KVec::with_capacity(usize::from(nslots), GFP_KERNEL)?;
        for s in (0..nslots).rev() {
            free.push(s, GFP_KERNEL)?;
        }
        Ok(Self {
            mask: size.wrapping_sub(1),
            desc: Coherent::<Desc>::zeroed_slice(dev, n, GFP_KERNEL)?,
            avail: Coherent::<u16>::zeroed_slice(dev, n + 3, GFP_KERNEL)?,
            used: Coherent::<u32>::zeroed_slice(dev, 2 * n + 2, GFP_KERNEL)?,
            slots: Coherent::<SlotBuf>::zeroed_slice(dev, usize::from(nslots), GFP_KERNEL)?,
            indirect,
            per_slot,
            nslots,
            free,
            avail_idx: 0,
            last_used: 0,
        })
    }

    /// Gives the rings up without freeing them: the device did not
    /// acknowledge a reset and may still read the descriptors and write the
    /// used ring, so that memory must never be reused. Returns its size in
    /// bytes.
    pub(crate) fn quarantine(self) -> usize {
        let n = usize::from(self.mask) + 1;
        let mut bytes = n * core::mem::size_of::<Desc>()
            + (n + 3) * 2
            + (2 * n + 2) * 4
            + usize::from(self.nslots) * core::mem::size_of::<SlotBuf>();
        if self.indirect.is_some() {
            bytes += n * usize::from(self.per_slot) * core::mem::size_of::<Desc>();
        }
        let Self {
            desc,
            avail,
            used,
            slots,
            indirect,
            ..
        } = self;
        // Leaks the DMA memory (and the device reference each allocation
        // holds) on purpose; the slot free list goes as usual.
        core::mem::forget((desc, avail, used, slots, indirect));
        bytes
    }

    /// DMA addresses of the descriptor table, driver (avail) and device
    /// (used) areas, for the common-config queue registers.
    pub(crate) fn addrs(&self) -> (u64, u64, u64) {
        (
            self.desc.dma_address(),
            self.avail.dma_address(),
            self.used.dma_address(),
        )
    }

    /// Requests that fit in the ring at once.
    pub(crate) fn nslots(&self) -> u16 {
        self.nslots
    }

    /// Requests in flight.
    pub(crate) fn in_flight(&self) -> usize {
        usize::from(self.nslots) - self.free.len()
    }

    pub(crate) fn has_room(&self) -> bool {
        !self.free.is_empty()
    }

    fn put_desc(&self, table: &Coherent<[Desc]>, i: usize, d: Desc) {
        io_project!(table, [panic: i]).copy_write(d);
    }

    /// Queues one request and publishes it in the avail ring. Returns the
    /// slot, or `None` when the ring is full. `segs` must have at most
    /// `per_slot - 2` entries (the caller checks against the device limit).
    pub(crate) fn add(
        &mut self,
        hdr: &[u8; abi::REQUEST_HEADER_SIZE],
        segs: &[Seg],
    ) -> Option<u16> {
        let n = segs.len() + 2;
        if n > usize::from(self.per_slot) {
            return None;
        }
        let slot = self.free.pop()?;
        let s = usize::from(slot);
        io_project!(&self.slots, [panic: s].hdr).copy_write(*hdr);
        io_project!(&self.slots, [panic: s].status).copy_write(
            abi::StatusRecord {
                status: STATUS_UNWRITTEN,
                ..Default::default()
            }
            .to_le_bytes(),
        );
        let buf_dma = io_project!(&self.slots, [panic: s]).dma_address();

        let chain = |k: usize| -> (u64, u32, u16) {
            if k == 0 {
                (buf_dma, abi::REQUEST_HEADER_SIZE as u32, 0)
            } else if k == n - 1 {
                (
                    buf_dma + abi::REQUEST_HEADER_SIZE as u64,
                    abi::STATUS_RECORD_SIZE as u32,
                    DESC_F_WRITE,
                )
            } else {
                let g = &segs[k - 1];
                (g.addr, g.len, if g.write { DESC_F_WRITE } else { 0 })
            }
        };

        let head = if let Some(table) = &self.indirect {
            let base = s * usize::from(self.per_slot);
            for k in 0..n {
                let (addr, len, flags) = chain(k);
                let last = k == n - 1;
                self.put_desc(
                    table,
                    base + k,
                    Desc {
                        addr,
                        len,
                        flags: flags | if last { 0 } else { DESC_F_NEXT },
                        next: if last { 0 } else { (k + 1) as u16 },
                    },
                );
            }
            let tdma = io_project!(table, [panic: base]).dma_address();
            self.put_desc(
                &self.desc,
                s,
                Desc {
                    addr: tdma,
                    len: (n * core::mem::size_of::<Desc>()) as u32,
                    flags: DESC_F_INDIRECT,
                    next: 0,
                },
            );
            slot
        } else {
            let base = s * usize::from(self.per_slot);
            for k in 0..n {
                let (addr, len, flags) = chain(k);
                let last = k == n - 1;
                self.put_desc(
                    &self.desc,
                    base + k,
                    Desc {
                        addr,
                        len,
                        flags: flags | if last { 0 } else { DESC_F_NEXT },
                        next: if last { 0 } else { (base + k + 1) as u16 },
                    },
                );
            }
            base as u16
        };

        let pos = 2 + usize::from(self.avail_idx & self.mask);
        io_write!(&self.avail, [panic: pos], head);
        // The device must see the descriptors and the ring entry before the
        // new index.
        smp_mb(Write);
        self.avail_idx = self.avail_idx.wrapping_add(1);
        io_write!(&self.avail, [panic: 1], self.avail_idx);
        Some(slot)
    }

    /// Whether the device has put entries on the used ring that
    /// `pop_used` has not taken yet.
    pub(crate) fn has_used(&self) -> bool {
        let w0: u32 = io_read!(&self.used, [panic: 0]);
        (w0 >> 16) as u16 != self.last_used
    }

    /// Takes the next used entry: its slot. An id that is not the head of
    /// a slot is a device bug: `Some(Err(id))`, which the caller logs and
    /// skips (as it does a slot with nothing in flight).
    ///
    /// The entry's used length is not read: nothing in the driver needs it
    /// (what a request wrote is told by its status record, whose `len` is
    /// checked against the request's outputs before delivery), so a wrong
    /// or hostile used length cannot change what reaches user memory.
    pub(crate) fn pop_used(&mut self) -> Option<core::result::Result<u16, u32>> {
        let w0: u32 = io_read!(&self.used, [panic: 0]);
        let used_idx = (w0 >> 16) as u16;
        if used_idx == self.last_used {
            return None;
        }
        // Read the entry only after seeing the index that publishes it.
        smp_mb(Read);
        let e = usize::from(self.last_used & self.mask);
        let id: u32 = io_read!(&self.used, [panic: 1 + 2 * e]);
        self.last_used = self.last_used.wrapping_add(1);
        let slot = if self.indirect.is_some() {
            id
        } else {
            let per = u32::from(self.per_slot);
            if id.checked_rem(per) != Some(0) {
                return Some(Err(id));
            }
            id.checked_div(per).unwrap_or(u32::MAX)
        };
        if slot >= u32::from(self.nslots) {
            return Some(Err(id));
        }
        Some(Ok(slot as u16))
    }

    /// The status record the device wrote for `slot`.
    pub(crate) fn status(&self, slot: u16) -> abi::StatusRecord {
        let raw: [u8; abi::STATUS_RECORD_SIZE] =
            io_project!(&self.slots, [panic: usize::from(slot)].status).copy_read();
        abi::StatusRecord::from_le_bytes(&raw).unwrap_or_default()
    }

    /// Returns `slot` to the free pool.
    pub(crate) fn release(&mut self, slot: u16) {
        // Cannot fail: the capacity is `nslots` and a slot is freed once.
        let _ = self.free.push_within_capacity(slot);
    }

    /// Forgets every request (after a device reset): all slots free, ring
    /// indices back to zero as a reset device expects.
    pub(crate) fn reset_state(&mut self) {
        self.free.clear();
        for s in (0..self.nslots).rev() {
            let _ = self.free.push_within_capacity(s);
        }
        self.avail_idx = 0;
        self.last_used = 0;
        io_write!(&self.avail, [panic: 1], 0u16);
        io_write!(&self.used, [panic: 0], 0u32);
    }
}
