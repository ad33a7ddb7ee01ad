//! The split virtqueue as the fast path walks it (the DPDK vhost way): the
//! three rings are translated to host addresses once per batch, each
//! descriptor is read exactly once, by volatile loads, into a private copy
//! that every later check and use looks at, and used elements are written
//! without publishing, so that the drain loop (`crate::drain`) can publish
//! a whole batch with one index store.
//!
//! virtio-queue's [`Queue`] stays the owner of the queue's state (addresses,
//! size, next_avail, next_used): the fast path reads it at the start of a
//! batch and writes the two indices back at the end, so vhost-user's
//! GET_VRING_BASE and the slow path see the same queue.

use std::ptr;
use std::sync::atomic::{AtomicU16, Ordering};

use virtio_queue::{Queue, QueueT};
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend};

use crate::guest::{Regions, read_guest};

const F_NEXT: u16 = 1;
const F_WRITE: u16 = 2;
const F_INDIRECT: u16 = 4;

/// A descriptor as the device saw it: its private copy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Desc {
    /// Guest-physical address.
    pub addr: u64,
    /// Length in bytes.
    pub len: u32,
    /// Device-writable.
    pub write: bool,
}

/// virtio's `vring_need_event`: true when `event` (the driver's
/// used_event or avail_event) lies in `old..new` (mod 2^16), i.e. the driver
/// asked to be told once the index passed it.
#[inline]
pub fn need_event(event: u16, new: u16, old: u16) -> bool {
    new.wrapping_sub(event).wrapping_sub(1) < new.wrapping_sub(old)
}

/// The rings of one queue, translated to host addresses for one batch.
/// Only valid while the guest-memory guard it was made under is held.
#[derive(Debug)]
pub struct Ring {
    desc: *const u8,
    avail: *const u8,
    used: *mut u8,
    size: u16,
    event_idx: bool,
}

/// Why a queue cannot be served.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Broken {
    /// The avail index is more than a ring ahead of what was taken.
    AvailIndex {
        /// The driver's avail index.
        avail: u16,
        /// The device's next avail position.
        next: u16,
        /// Ring size.
        size: u16,
    },
    /// A ring lies (partly) outside guest memory.
    RingOutsideMemory,
}

impl std::fmt::Display for Broken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match *self {
            Self::AvailIndex { avail, next, size } => write!(
                f,
                "avail index {avail} is {} entries ahead of the device's {next}, more than the ring's {size}",
                avail.wrapping_sub(next)
            ),
            Self::RingOutsideMemory => write!(f, "a ring lies outside guest memory"),
        }
    }
}

/// Bytes of the avail ring: flags, idx, entries, used_event.
fn avail_len(size: u16, event_idx: bool) -> u64 {
    4 + 2 * u64::from(size) + if event_idx { 2 } else { 0 }
}

/// Bytes of the used ring: flags, idx, elements, avail_event.
fn used_len(size: u16, event_idx: bool) -> u64 {
    4 + 8 * u64::from(size) + if event_idx { 2 } else { 0 }
}

impl Ring {
    /// Translates `q`'s rings. `Ok(None)` when they are in guest memory but
    /// one spans two regions (or is misaligned): the caller then uses the
    /// slow path through virtio-queue.
    pub fn of<M: GuestMemoryBackend>(
        q: &Queue,
        regions: &Regions,
        mem: &M,
    ) -> Result<Option<Self>, Broken> {
        let (size, ev) = (q.size(), q.event_idx_enabled());
        // virtio-queue only accepts power-of-two sizes; the fast path
        // relies on it (positions wrap with a mask, not a division).
        if !size.is_power_of_two() {
            return Ok(None);
        }
        let parts = [
            (q.desc_table(), 16 * u64::from(size), 16),
            (q.avail_ring(), avail_len(size, ev), 2),
            (q.used_ring(), used_len(size, ev), 4),
        ];
        let mut host = [ptr::null_mut(); 3];
        for (i, &(addr, len, align)) in parts.iter().enumerate() {
            match regions.host(addr, len) {
                Some(p) if (p as usize).is_multiple_of(align) => host[i] = p,
                _ if mem.check_range(GuestAddress(addr), len as usize) => return Ok(None),
                _ => return Err(Broken::RingOutsideMemory),
            }
        }
        Ok(Some(Self {
            desc: host[0],
            avail: host[1],
            used: host[2],
            size,
            event_idx: ev,
        }))
    }

    /// Ring size.
    #[inline]
    pub fn size(&self) -> u16 {
        self.size
    }

    /// The 16-bit field at `p`, as an atomic.
    ///
    /// # Safety
    /// `p` must be 2-aligned and inside the live mapping the ring came from.
    #[inline]
    unsafe fn field<'a>(p: *const u8) -> &'a AtomicU16 {
        // SAFETY: the caller's contract; AtomicU16 has u16's layout and any
        // bit pattern is valid. Guest memory is shared with the guest, and
        // atomic access is exactly how shared memory should be touched.
        unsafe { &*p.cast::<AtomicU16>() }
    }

    /// The driver's avail index (acquire: entries before it are visible).
    #[inline]
    pub fn avail_idx(&self) -> u16 {
        // SAFETY: offset 2 of a 2-aligned, translated avail ring.
        u16::from_le(unsafe { Self::field(self.avail.add(2)) }.load(Ordering::Acquire))
    }

    /// The avail ring's flags (VRING_AVAIL_F_NO_INTERRUPT).
    #[inline]
    pub fn avail_flags(&self) -> u16 {
        // SAFETY: offset 0 of a 2-aligned, translated avail ring.
        u16::from_le(unsafe { Self::field(self.avail) }.load(Ordering::Acquire))
    }

    /// The driver's used_event (only with EVENT_IDX).
    #[inline]
    pub fn used_event(&self) -> Option<u16> {
        let off = 4 + 2 * usize::from(self.size);
        if !self.event_idx {
            return None;
        }
        // SAFETY: with EVENT_IDX the translated avail ring includes the
        // 2-byte used_event at this even offset.
        let field = unsafe { Self::field(self.avail.add(off)) };
        Some(u16::from_le(field.load(Ordering::Acquire)))
    }

    /// Head of avail entry `pos` (mod the ring size, a power of two).
    #[inline]
    pub fn avail_entry(&self, pos: u16) -> u16 {
        let off = 4 + 2 * usize::from(pos & (self.size - 1));
        // SAFETY: inside the translated avail ring, 2-aligned.
        u16::from_le(unsafe { Self::field(self.avail.add(off)) }.load(Ordering::Relaxed))
    }

    /// Descriptor `i` of the ring's table (`i < size`), read once.
    #[inline]
    fn desc(&self, i: u16) -> (u64, u64) {
        debug_assert!(i < self.size);
        // SAFETY: `i < size`, so the 16 bytes lie in the translated table,
        // which is 16-aligned (checked in `of`): two aligned volatile loads.
        unsafe {
            let p = self.desc.add(16 * usize::from(i)).cast::<u64>();
            (
                u64::from_le(ptr::read_volatile(p)),
                u64::from_le(ptr::read_volatile(p.add(1))),
            )
        }
    }

    /// Writes used element `pos` (mod size) without publishing it.
    #[inline]
    pub fn put_used(&self, pos: u16, id: u16, len: u32) {
        let off = 4 + 8 * usize::from(pos & (self.size - 1));
        // SAFETY: inside the translated used ring, which is 4-aligned, so
        // both u32 fields are aligned.
        unsafe {
            let p = self.used.add(off).cast::<u32>();
            ptr::write_volatile(p, u32::from(id).to_le());
            ptr::write_volatile(p.add(1), len.to_le());
        }
    }

    /// Publishes the used index (release: the elements before it first).
    #[inline]
    pub fn publish_used(&self, idx: u16) {
        // SAFETY: offset 2 of the 2-aligned, translated used ring.
        unsafe { Self::field(self.used.add(2)) }.store(idx.to_le(), Ordering::Release);
    }

    /// Walks the chain at `head` into `out`, with virtio-queue's rules (so
    /// both paths see the same chain): a chain ends silently at a `next`
    /// past its table, after as many descriptors as its table has (a loop),
    /// at a second indirect level, a misshapen indirect table, an indirect
    /// entry outside guest memory, or when the lengths would pass 4 GiB. A
    /// head past the ring gives an empty chain. Data addresses are not
    /// checked here: the request checks them (BAD_ADDRESS).
    #[inline(always)]
    pub fn walk<M: GuestMemoryBackend>(
        &self,
        regions: &Regions,
        mem: &M,
        head: u16,
        out: &mut Vec<Desc>,
    ) {
        out.clear();
        let (size, head) = (u32::from(self.size), u32::from(head));
        if head >= size {
            return;
        }
        // Drivers lay chains out in consecutive slots: while the links
        // say so, the next slot's address is the loop counter, known
        // before this slot's `next` field arrives, so the reads do not
        // wait on each other. Any other link (or an indirect descriptor)
        // continues on the general walk, from the same state. The run
        // ends at the table's end at the latest, so it needs at most
        // `room` entries, reserved up front (once per lane, in practice).
        let room = size - head;
        out.reserve(room as usize);
        let base = out.as_mut_ptr();
        let (mut k, mut total) = (0u32, 0u32);
        let (next, pending) = loop {
            let d = self.desc((head + k) as u16);
            let (len, flags, link) = (d.1 as u32, (d.1 >> 32) as u16, (d.1 >> 48) as u16);
            if flags & F_INDIRECT != 0 {
                break (head + k, Some(d));
            }
            let Some(t) = total.checked_add(len) else {
                break (size, None);
            };
            total = t;
            let desc = Desc {
                addr: d.0,
                len,
                write: flags & F_WRITE != 0,
            };
            // SAFETY: `k < room` entries were reserved above and `out` is
            // not touched otherwise inside this loop; `set_len` below
            // covers exactly the `k` entries written.
            unsafe { base.add(k as usize).write(desc) };
            k += 1;
            if flags & F_NEXT == 0 {
                break (size, None);
            }
            if u32::from(link) != head + k || k == room {
                break (u32::from(link), None);
            }
        };
        // SAFETY: entries 0..k were written above, within the capacity.
        unsafe { out.set_len(k as usize) };
        if next < size {
            self.walk_general(regions, mem, (next, size - k, total), pending, out);
        }
    }

    /// The rest of [`walk`](Self::walk) from slot `next` of the ring's
    /// table with `ttl` descriptors left and `total` bytes so far;
    /// `pending` is slot `next` when it was read already.
    #[cold]
    fn walk_general<M: GuestMemoryBackend>(
        &self,
        regions: &Regions,
        mem: &M,
        (mut next, mut ttl, mut total): (u32, u32, u32),
        mut pending: Option<(u64, u64)>,
        out: &mut Vec<Desc>,
    ) {
        let (mut table, mut n) = (None::<u64>, u32::from(self.size));
        while ttl != 0 && next < n {
            // addr, then len | flags << 32 | next << 48 (little-endian).
            let (addr, rest) = match (table, pending.take()) {
                (None, Some(d)) => d,
                (None, None) => self.desc(next as u16),
                (Some(base), _) => match indirect_entry(regions, mem, base, next) {
                    Some(d) => d,
                    None => return,
                },
            };
            let (len, flags, link) = (rest as u32, (rest >> 32) as u16, (rest >> 48) as u16);
            if flags & F_INDIRECT != 0 {
                if table.is_some() || len % 16 != 0 || len / 16 > u32::from(u16::MAX) {
                    return;
                }
                (table, n, next, ttl) = (Some(addr), len / 16, 0, len / 16);
                continue;
            }
            let Some(t) = total.checked_add(len) else {
                return;
            };
            total = t;
            out.push(Desc {
                addr,
                len,
                write: flags & F_WRITE != 0,
            });
            if flags & F_NEXT != 0 {
                next = u32::from(link);
                ttl -= 1;
            } else {
                ttl = 0;
            }
        }
    }
}

/// Entry `i` of the indirect table at guest address `base`, read once;
/// `None` when it is outside guest memory. Out of line and cold, so that
/// the walk of a direct chain does not load the region table.
#[cold]
#[inline(never)]
fn indirect_entry<M: GuestMemoryBackend>(
    regions: &Regions,
    mem: &M,
    base: u64,
    i: u32,
) -> Option<(u64, u64)> {
    let at = base.checked_add(16 * u64::from(i))?;
    let b = read_guest::<16, M>(regions, mem, at)?;
    Some((
        u64::from_le_bytes(b[0..8].try_into().unwrap_or_default()),
        u64::from_le_bytes(b[8..16].try_into().unwrap_or_default()),
    ))
}

/// Reads the avail ring's flags through vm-memory (slow path).
pub fn avail_flags_slow<M: GuestMemoryBackend>(q: &Queue, mem: &M) -> u16 {
    mem.load(GuestAddress(q.avail_ring()), Ordering::Acquire)
        .map(u16::from_le)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use virtio_queue::desc::RawDescriptor;
    use virtio_queue::desc::split::Descriptor;
    use virtio_queue::mock::MockSplitQueue;
    use vm_memory::GuestMemoryMmap;

    #[test]
    fn need_event_matches_the_spec_formula() {
        // The driver wants an event once the index passes 5.
        assert!(need_event(5, 6, 5));
        assert!(need_event(5, 9, 3));
        assert!(!need_event(5, 5, 3));
        assert!(!need_event(9, 8, 3));
        // Across the wrap.
        assert!(need_event(0xffff, 2, 0xfff0));
        assert!(!need_event(3, 2, 0xfff0));
        assert!(!need_event(5, 5, 5));
    }

    proptest! {
        /// The fast walk yields exactly the descriptors virtio-queue's
        /// DescriptorChain yields, for any table (loops, indirect, bad
        /// indices, addresses outside memory).
        #[test]
        fn walk_matches_virtio_queue(
            table in proptest::collection::vec(
                (prop_oneof![0u64..0x1_0000, Just(0x8000u64), any::<u64>()],
                 prop_oneof![Just(16u32), Just(48), any::<u32>(), 0u32..100],
                 0u16..8, 0u16..20),
                16),
            consecutive in any::<bool>(),
            indirect in proptest::collection::vec((0u64..0x1_0000, any::<u32>(), 0u16..8, 0u16..6), 6),
            head in 0u16..18,
        ) {
            let m: GuestMemoryMmap<()> = GuestMemoryMmap::from_ranges(&[
                (GuestAddress(0), 0x1_0000),
            ]).unwrap();
            let vq = MockSplitQueue::new(&m, 16);
            for (i, &(a, l, f, n)) in table.iter().enumerate() {
                // Mostly consecutive links too (the walk's fast path),
                // broken where `n` says so.
                let n = if consecutive && n < 14 { i as u16 + 1 } else { n };
                let d = Descriptor::new(a, l, f, n);
                vq.desc_table().store(i as u16, RawDescriptor::from(d)).unwrap();
            }
            for (i, &(a, l, f, n)) in indirect.iter().enumerate() {
                let d = RawDescriptor::from(Descriptor::new(a, l, f, n));
                m.write_obj(d, GuestAddress(0x8000 + 16 * i as u64)).unwrap();
            }
            vq.avail().ring().ref_at(0).unwrap().store(head);
            vq.avail().idx().store(1);
            let mut q: Queue = vq.create_queue().unwrap();
            let regions = Regions::of(&m);
            let ring = Ring::of(&q, &regions, &m).unwrap().unwrap();
            let mut got = Vec::new();
            ring.walk(&regions, &m, ring.avail_entry(0), &mut got);
            let chain = q.pop_descriptor_chain(&m).unwrap();
            let want: Vec<Desc> = chain.map(|d| Desc {
                addr: d.addr().0, len: d.len(), write: d.is_write_only()
            }).collect();
            prop_assert_eq!(got, want);
        }
    }
}
