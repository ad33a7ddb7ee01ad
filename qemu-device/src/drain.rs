//! Draining a queue: the fast path (rings translated once per batch,
//! descriptors copied once, shadow used ring, one used-index store per
//! batch), the slow path through virtio-queue for rings that span memory
//! regions, and the notification decision (EVENT_IDX's `vring_need_event`
//! or VRING_AVAIL_F_NO_INTERRUPT).

use tracing::debug;
use virtio_queue::{Queue, QueueOwnedT, QueueT};
use vm_memory::{Bytes, GuestMemory, GuestMemoryBackend};

use crate::guest::Regions;
use crate::request::{Processor, Scratch};
use crate::ring::{Broken, Ring, avail_flags_slow, need_event};
use crate::stats::Shard;

/// Most requests completed before the used index is published: a driver
/// on another core sees its first completions after at most this many.
pub const MAX_BATCH: u16 = 64;

/// virtio: the driver does not want used-buffer notifications.
const VRING_AVAIL_F_NO_INTERRUPT: u16 = 1;

/// The device's own per-queue state, beside virtio-queue's.
#[derive(Debug, Default)]
pub struct Lane {
    /// Reusable buffers.
    pub scratch: Scratch,
    /// Used index at the last notification decision (vhost's
    /// `signalled_used`); `None` until the first, or after the frontend
    /// reset the queue.
    signalled: Option<u16>,
    /// Why the queue is not served, until the frontend sets it up anew.
    broken: Option<Broken>,
    /// The queue as this lane left it (addresses, size, indices): anything
    /// else at the next drain means the frontend changed it.
    left: Option<[u64; 5]>,
    /// The slow path's completions of one pass: (head, used length).
    shadow: Vec<(u16, u32)>,
}

/// What one drain did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Drained {
    /// Chains taken off the avail ring.
    pub taken: usize,
    /// The driver asked to be notified about what was published.
    pub notify: bool,
    /// The queue is broken (reported once, when it breaks).
    pub broke: Option<Broken>,
}

fn identity(q: &Queue) -> [u64; 5] {
    [
        q.desc_table(),
        q.avail_ring(),
        q.used_ring(),
        u64::from(q.size()),
        u64::from(q.next_avail()) | u64::from(q.next_used()) << 16,
    ]
}

impl Lane {
    /// Forgets everything about the queue but the buffers: the frontend
    /// stopped the ring (GET_VRING_BASE) or reset the device, so whatever
    /// it starts next is served afresh.
    pub fn reset(&mut self) {
        self.signalled = None;
        self.broken = None;
        self.left = None;
    }

    /// True while the queue is marked broken.
    pub fn is_broken(&self) -> bool {
        self.broken.is_some()
    }
}

impl Processor {
    /// Completes every request available on `q` (queue number `index`):
    /// takes them in batches of at most [`MAX_BATCH`], publishes each
    /// batch with one used-index store, and decides whether to notify.
    /// Guest faults are answered and counted, never returned: a broken
    /// queue is reported in [`Drained::broke`] once and then ignored until
    /// the frontend sets it up again.
    pub fn drain<M: GuestMemoryBackend + GuestMemory>(
        &self,
        q: &mut Queue,
        mem: &M,
        index: usize,
        lane: &mut Lane,
        stats: &Shard,
    ) -> Drained {
        if lane.left != Some(identity(q)) {
            lane.signalled = None;
            lane.broken = None;
        }
        let mut out = Drained::default();
        if lane.broken.is_none() && q.ready() {
            let regions = Regions::of(mem);
            match Ring::of(q, &regions, mem) {
                Ok(Some(ring)) => {
                    match self.drain_fast(q, &ring, &regions, mem, index, lane, stats) {
                        Ok(n) => out.taken = n,
                        Err((n, b)) => (out.taken, out.broke) = (n, Some(b)),
                    }
                    out.notify = out.taken > 0 && notify_fast(&ring, q.next_used(), lane);
                }
                Ok(None) => {
                    match self.drain_slow(q, mem, index, lane, stats) {
                        Ok(n) => out.taken = n,
                        Err((n, b)) => (out.taken, out.broke) = (n, Some(b)),
                    }
                    out.notify = out.taken > 0 && notify_slow(q, mem, lane);
                }
                Err(b) => out.broke = Some(b),
            }
            lane.broken = out.broke;
        }
        lane.left = Some(identity(q));
        out
    }

    #[allow(clippy::too_many_arguments)]
    fn drain_fast<M: GuestMemoryBackend>(
        &self,
        q: &mut Queue,
        ring: &Ring,
        regions: &Regions,
        mem: &M,
        index: usize,
        lane: &mut Lane,
        stats: &Shard,
    ) -> Result<usize, (usize, Broken)> {
        let (mut next_avail, mut next_used) = (q.next_avail(), q.next_used());
        let mut taken = 0usize;
        loop {
            let avail = ring.avail_idx();
            let pending = avail.wrapping_sub(next_avail);
            if pending == 0 {
                return Ok(taken);
            }
            if pending > ring.size() {
                let b = Broken::AvailIndex {
                    avail,
                    next: next_avail,
                    size: ring.size(),
                };
                return Err((taken, b));
            }
            let n = pending.min(MAX_BATCH);
            if self.hook.is_none() {
                (next_avail, next_used) =
                    self.take_plain(ring, regions, mem, lane, stats, (next_avail, next_used, n));
                taken += usize::from(n);
                n_done(ring, q, next_avail, next_used);
                continue;
            }
            for _ in 0..n {
                let head = ring.avail_entry(next_avail);
                next_avail = next_avail.wrapping_add(1);
                taken += 1;
                ring.walk(regions, mem, head, &mut lane.scratch.descs);
                let (len, d) = self.complete(mem, regions, (index, head), &mut lane.scratch, stats);
                if head >= ring.size() {
                    // Named a descriptor past the table: nothing to return.
                    debug!(head, "avail entry past the descriptor table");
                    stats.bad_head();
                    continue;
                }
                if let Some(delay) = d.delay {
                    // Publish what is done, then stall like a slow engine.
                    ring.publish_used(next_used);
                    std::thread::sleep(delay);
                }
                if !d.drop {
                    ring.put_used(next_used, head, len);
                    next_used = next_used.wrapping_add(1);
                }
                if let Some(b) = d.bogus_used {
                    // An injected device bug: an id naming no request.
                    ring.put_used(next_used, b.id(head, ring.size()), 0);
                    next_used = next_used.wrapping_add(1);
                }
            }
            n_done(ring, q, next_avail, next_used);
        }
    }

    /// `n` requests from avail position `next_avail` on, without a
    /// completion hook: nothing can delay, drop or add a used element, so
    /// each request is walk, execute, status, used element. Returns the
    /// new (next_avail, next_used).
    #[inline(always)]
    fn take_plain<M: GuestMemoryBackend>(
        &self,
        ring: &Ring,
        regions: &Regions,
        mem: &M,
        lane: &mut Lane,
        stats: &Shard,
        (mut next_avail, mut next_used, n): (u16, u16, u16),
    ) -> (u16, u16) {
        for _ in 0..n {
            let head = ring.avail_entry(next_avail);
            next_avail = next_avail.wrapping_add(1);
            ring.walk(regions, mem, head, &mut lane.scratch.descs);
            let out = self.execute(mem, regions, &mut lane.scratch, stats);
            let len = self.finish(mem, out, stats);
            if head < ring.size() {
                ring.put_used(next_used, head, len);
                next_used = next_used.wrapping_add(1);
            } else {
                debug!(head, "avail entry past the descriptor table");
                stats.bad_head();
            }
        }
        (next_avail, next_used)
    }

    /// The same through virtio-queue, for rings that span two regions.
    fn drain_slow<M: GuestMemoryBackend + GuestMemory>(
        &self,
        q: &mut Queue,
        mem: &M,
        index: usize,
        lane: &mut Lane,
        stats: &Shard,
    ) -> Result<usize, (usize, Broken)> {
        let regions = Regions::of(mem);
        let mut taken = 0;
        loop {
            lane.shadow.clear();
            if let Ok(avail) = q.avail_idx(mem, std::sync::atomic::Ordering::Acquire)
                && avail.0.wrapping_sub(q.next_avail()) > q.size()
            {
                return Err((
                    taken,
                    Broken::AvailIndex {
                        avail: avail.0,
                        next: q.next_avail(),
                        size: q.size(),
                    },
                ));
            }
            match q.iter(mem) {
                Ok(it) => {
                    for chain in it {
                        let head = chain.head_index();
                        lane.scratch.descs.clear();
                        lane.scratch.descs.extend(chain.map(|d| crate::ring::Desc {
                            addr: d.addr().0,
                            len: d.len(),
                            write: d.is_write_only(),
                        }));
                        let (len, d) =
                            self.complete(mem, &regions, (index, head), &mut lane.scratch, stats);
                        if let Some(delay) = d.delay {
                            std::thread::sleep(delay);
                        }
                        if !d.drop {
                            lane.shadow.push((head, len));
                        }
                    }
                }
                Err(e) => debug!(error = %e, "cannot read the available ring"),
            }
            if lane.shadow.is_empty() {
                return Ok(taken);
            }
            taken += lane.shadow.len();
            for &(head, len) in &lane.shadow {
                if q.add_used(mem, head, len).is_err() {
                    debug!(head, "cannot return chain");
                    stats.bad_head();
                }
            }
        }
    }
}

/// Ends a fast batch: one store publishes it; the state goes back to
/// virtio-queue at once, so GET_VRING_BASE sees it.
#[inline]
fn n_done(ring: &Ring, q: &mut Queue, next_avail: u16, next_used: u16) {
    ring.publish_used(next_used);
    q.set_next_avail(next_avail);
    q.set_next_used(next_used);
}

/// Notification decision after a fast drain published up to `used`.
fn notify_fast(ring: &Ring, used: u16, lane: &mut Lane) -> bool {
    std::sync::atomic::fence(std::sync::atomic::Ordering::SeqCst);
    match ring.used_event() {
        Some(event) => {
            let old = lane.signalled.replace(used);
            old.is_none_or(|old| need_event(event, used, old))
        }
        None => ring.avail_flags() & VRING_AVAIL_F_NO_INTERRUPT == 0,
    }
}

/// Notification decision after a slow drain.
fn notify_slow<M: GuestMemoryBackend + GuestMemory>(q: &Queue, mem: &M, lane: &mut Lane) -> bool {
    std::sync::atomic::fence(std::sync::atomic::Ordering::SeqCst);
    let used = q.next_used();
    if q.event_idx_enabled() {
        let at = vm_memory::GuestAddress(q.avail_ring() + 4 + 2 * u64::from(q.size()));
        let Ok(event) = mem.load::<u16>(at, std::sync::atomic::Ordering::Acquire) else {
            return true;
        };
        let old = lane.signalled.replace(used);
        old.is_none_or(|old| need_event(u16::from_le(event), used, old))
    } else {
        avail_flags_slow(q, mem) & VRING_AVAIL_F_NO_INTERRUPT == 0
    }
}

#[cfg(test)]
#[path = "drain_tests.rs"]
mod tests;
