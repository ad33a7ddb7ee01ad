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
            for _ in 0..pending.min(MAX_BATCH) {
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
            }
            // One store publishes the whole batch; the state goes back to
            // virtio-queue at once, so GET_VRING_BASE sees it.
            ring.publish_used(next_used);
            q.set_next_avail(next_avail);
            q.set_next_used(next_used);
        }
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
mod tests {
    use super::*;
    use crate::completion::{Completion, CompletionHook, Decision};
    use crate::stats::Stats;
    use pktaccel_abi::*;
    use std::sync::Arc;
    use vm_memory::{GuestAddress, GuestMemoryMmap};

    const SIZE: u16 = 16;
    const DESC: u64 = 0x0;
    const AVAIL: u64 = 0x1000;
    const USED: u64 = 0x2000;
    const HDR: u64 = 0x1_0000;
    const STATUS: u64 = 0x2_0000;

    /// Guest memory with a ready queue whose chain `i` (descriptors 2i,
    /// 2i+1) is a NOP with its status at STATUS + 16i.
    fn setup(event_idx: bool) -> (GuestMemoryMmap<()>, Queue) {
        let m = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x10_0000)]).unwrap();
        m.write_slice(&RequestHeader::default().to_le_bytes(), GuestAddress(HDR))
            .unwrap();
        for i in 0..u64::from(SIZE / 2) {
            let d = DESC + 32 * i;
            m.write_obj(HDR.to_le(), GuestAddress(d)).unwrap();
            m.write_obj(64u32.to_le(), GuestAddress(d + 8)).unwrap();
            m.write_obj(1u16.to_le(), GuestAddress(d + 12)).unwrap();
            m.write_obj((2 * i as u16 + 1).to_le(), GuestAddress(d + 14))
                .unwrap();
            m.write_obj((STATUS + 16 * i).to_le(), GuestAddress(d + 16))
                .unwrap();
            m.write_obj(16u32.to_le(), GuestAddress(d + 24)).unwrap();
            m.write_obj(2u16.to_le(), GuestAddress(d + 28)).unwrap();
        }
        let mut q = Queue::new(SIZE).unwrap();
        q.set_size(SIZE);
        q.set_desc_table_address(Some(DESC as u32), Some(0));
        q.set_avail_ring_address(Some(AVAIL as u32), Some(0));
        q.set_used_ring_address(Some(USED as u32), Some(0));
        q.set_event_idx(event_idx);
        q.set_ready(true);
        (m, q)
    }

    /// Offers chains `ids` (heads 2i) and publishes avail index `idx`.
    fn offer(m: &GuestMemoryMmap<()>, from: u16, ids: &[u16]) {
        for (k, &i) in ids.iter().enumerate() {
            let slot = AVAIL + 4 + 2 * u64::from((from + k as u16) % SIZE);
            m.write_obj((2 * i).to_le(), GuestAddress(slot)).unwrap();
        }
        m.write_obj((from + ids.len() as u16).to_le(), GuestAddress(AVAIL + 2))
            .unwrap();
    }

    fn used(m: &GuestMemoryMmap<()>) -> (u16, Vec<(u32, u32)>) {
        let idx: u16 = m.read_obj(GuestAddress(USED + 2)).unwrap();
        let elems = (0..idx)
            .map(|i| {
                let e = USED + 4 + 8 * u64::from(i % SIZE);
                (
                    m.read_obj(GuestAddress(e)).unwrap(),
                    m.read_obj(GuestAddress(e + 4)).unwrap(),
                )
            })
            .collect();
        (idx, elems)
    }

    fn status(m: &GuestMemoryMmap<()>, chain: u64) -> u32 {
        m.read_obj(GuestAddress(STATUS + 16 * chain)).unwrap()
    }

    #[derive(Debug)]
    struct Faults;
    impl CompletionHook for Faults {
        fn decide(&self, c: &Completion) -> Decision {
            assert_eq!(
                (c.queue, c.op, c.status, c.used_len),
                (3, Some(OP_NOP), Some(0), 16)
            );
            match c.head {
                0 => Decision {
                    drop: true,
                    ..Default::default()
                },
                4 => Decision {
                    status: Some(STATUS_NO_KEY),
                    ..Default::default()
                },
                8 => Decision {
                    used_len: Some(999),
                    ..Default::default()
                },
                10 => Decision {
                    delay: Some(std::time::Duration::from_millis(20)),
                    ..Default::default()
                },
                _ => Decision::default(),
            }
        }
    }

    #[test]
    fn the_hook_drops_restatuses_mislengths_and_delays_completions() {
        let (m, mut q) = setup(false);
        for c in 0..6 {
            m.write_slice(&[0xee; 16], GuestAddress(STATUS + 16 * c))
                .unwrap();
        }
        let mut p = Processor::new(crate::config::ALL_OPS, 64, 1 << 20, 1);
        p.hook = Some(Arc::new(Faults));
        let stats = Stats::new(1);
        let mut lane = Lane::default();
        offer(&m, 0, &[0, 1, 2, 3, 4, 5]);
        let t = std::time::Instant::now();
        let d = p.drain(&mut q, &m, 3, &mut lane, stats.shard(0));
        assert!(t.elapsed() >= std::time::Duration::from_millis(20));
        assert_eq!((d.taken, d.notify, d.broke), (6, true, None));
        let (idx, elems) = used(&m);
        assert_eq!(idx, 5, "the dropped completion is never published");
        assert_eq!(elems, vec![(2, 16), (4, 16), (6, 16), (8, 999), (10, 16)]);
        assert_eq!(
            status(&m, 0),
            0xeeee_eeee,
            "a dropped request writes no status"
        );
        assert_eq!(status(&m, 2), STATUS_NO_KEY);
        assert_eq!(status(&m, 1), STATUS_OK);
        assert_eq!((q.next_avail(), q.next_used()), (6, 5));
    }

    #[test]
    fn an_avail_index_past_the_ring_breaks_the_queue_once_until_it_is_reset() {
        let (m, mut q) = setup(true);
        let p = Processor::new(crate::config::ALL_OPS, 64, 1 << 20, 1);
        let stats = Stats::new(1);
        let mut lane = Lane::default();
        offer(&m, 0, &[0, 1]);
        assert_eq!(p.drain(&mut q, &m, 0, &mut lane, stats.shard(0)).taken, 2);
        m.write_obj((2 + SIZE + 1).to_le(), GuestAddress(AVAIL + 2))
            .unwrap();
        let d = p.drain(&mut q, &m, 0, &mut lane, stats.shard(0));
        assert_eq!(
            d.broke,
            Some(Broken::AvailIndex {
                avail: 2 + SIZE + 1,
                next: 2,
                size: SIZE
            })
        );
        assert!(lane.is_broken());
        // Reported once; nothing taken while broken, even once repaired.
        offer(&m, 2, &[2]);
        let d = p.drain(&mut q, &m, 0, &mut lane, stats.shard(0));
        assert_eq!((d.taken, d.broke), (0, None));
        // The frontend stops the ring (GET_VRING_BASE) and starts it again
        // from the same position: served.
        lane.reset();
        let d = p.drain(&mut q, &m, 0, &mut lane, stats.shard(0));
        assert_eq!((d.taken, d.broke), (1, None));
        // So is a queue whose base the frontend moved.
        m.write_obj((3 + SIZE + 1).to_le(), GuestAddress(AVAIL + 2))
            .unwrap();
        assert!(
            p.drain(&mut q, &m, 0, &mut lane, stats.shard(0))
                .broke
                .is_some()
        );
        q.set_next_avail(3 + SIZE);
        assert_eq!(p.drain(&mut q, &m, 0, &mut lane, stats.shard(0)).taken, 1);
    }

    #[test]
    fn event_idx_notifies_only_when_used_event_is_passed() {
        let (m, mut q) = setup(true);
        let p = Processor::new(crate::config::ALL_OPS, 64, 1 << 20, 1);
        let stats = Stats::new(1);
        let mut lane = Lane::default();
        let used_event = GuestAddress(AVAIL + 4 + 2 * u64::from(SIZE));
        // First decision: always notify (nothing known yet).
        offer(&m, 0, &[0]);
        assert!(p.drain(&mut q, &m, 0, &mut lane, stats.shard(0)).notify);
        // The driver wants an interrupt after used index 3 only.
        m.write_obj(3u16.to_le(), used_event).unwrap();
        offer(&m, 1, &[1]);
        assert!(!p.drain(&mut q, &m, 0, &mut lane, stats.shard(0)).notify);
        offer(&m, 2, &[2, 3]);
        assert!(
            p.drain(&mut q, &m, 0, &mut lane, stats.shard(0)).notify,
            "index passed 3"
        );
        offer(&m, 4, &[4]);
        assert!(!p.drain(&mut q, &m, 0, &mut lane, stats.shard(0)).notify);
        // Without EVENT_IDX, NO_INTERRUPT decides.
        let (m, mut q) = setup(false);
        let mut lane = Lane::default();
        m.write_obj(1u16.to_le(), GuestAddress(AVAIL)).unwrap();
        offer(&m, 0, &[0]);
        assert!(!p.drain(&mut q, &m, 0, &mut lane, stats.shard(0)).notify);
        m.write_obj(0u16.to_le(), GuestAddress(AVAIL)).unwrap();
        offer(&m, 1, &[1]);
        assert!(p.drain(&mut q, &m, 0, &mut lane, stats.shard(0)).notify);
    }
}
