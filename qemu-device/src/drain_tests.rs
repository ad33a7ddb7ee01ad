//! Tests of queue draining on a synthetic guest memory and split ring:
//! the completion hook, broken queues, notifications, and the fast path
//! against virtio-queue's slow path.

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

mod differential {
    use super::*;
    use proptest::prelude::*;

    /// Two regions split here, so that a ring placed across the split
    /// forces virtio-queue's slow path.
    const SPLIT: u64 = 0x8000;
    const END: u64 = 0x2_0000;
    const H: u64 = 0x9000;
    const ST: u64 = 0xa000;
    const DATA: u64 = 0xb000;

    /// Runs one drain over `descs` and `heads` with the used ring at
    /// `used`; returns everything the guest can observe afterwards.
    fn run(
        used: u64,
        descs: &[(u64, u32, u16, u16)],
        heads: &[u16],
        header: &RequestHeader,
    ) -> (Vec<u8>, crate::stats::Snapshot, (u16, u16)) {
        let m: GuestMemoryMmap<()> = GuestMemoryMmap::from_ranges(&[
            (GuestAddress(0), SPLIT as usize),
            (GuestAddress(SPLIT), (END - SPLIT) as usize),
        ])
        .unwrap();
        let noise: Vec<u8> = (0..0x4000u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 11) as u8)
            .collect();
        m.write_slice(&noise, GuestAddress(DATA)).unwrap();
        m.write_slice(&header.to_le_bytes(), GuestAddress(H))
            .unwrap();
        for (i, &(a, l, f, n)) in descs.iter().enumerate() {
            let d = DESC + 16 * i as u64;
            m.write_obj(a.to_le(), GuestAddress(d)).unwrap();
            m.write_obj(l.to_le(), GuestAddress(d + 8)).unwrap();
            m.write_obj(f.to_le(), GuestAddress(d + 12)).unwrap();
            m.write_obj(n.to_le(), GuestAddress(d + 14)).unwrap();
        }
        for (k, &h) in heads.iter().enumerate() {
            m.write_obj(h.to_le(), GuestAddress(AVAIL + 4 + 2 * k as u64))
                .unwrap();
        }
        m.write_obj((heads.len() as u16).to_le(), GuestAddress(AVAIL + 2))
            .unwrap();
        let mut q = Queue::new(SIZE).unwrap();
        q.set_size(SIZE);
        q.set_desc_table_address(Some(DESC as u32), Some(0));
        q.set_avail_ring_address(Some(AVAIL as u32), Some(0));
        q.set_used_ring_address(Some(used as u32), Some(0));
        q.set_ready(true);
        let p = Processor::new(crate::config::ALL_OPS, 64, 1 << 20, 2);
        p.keys.set(0, &[9; 32]).unwrap();
        let stats = Stats::new(1);
        let d = p.drain(&mut q, &m, 0, &mut Lane::default(), stats.shard(0));
        assert_eq!(d.taken, heads.len());
        // What the guest sees: the used ring's index and elements, and
        // every byte the device may have written.
        let mut seen = Vec::new();
        let idx: u16 = m.read_obj(GuestAddress(used + 2)).unwrap();
        seen.extend_from_slice(&idx.to_le_bytes());
        for i in 0..u64::from(idx) {
            let mut e = [0u8; 8];
            m.read_slice(&mut e, GuestAddress(used + 4 + 8 * i))
                .unwrap();
            seen.extend_from_slice(&e);
        }
        let mut rest = vec![0u8; (END - H) as usize];
        m.read_slice(&mut rest, GuestAddress(H)).unwrap();
        seen.extend_from_slice(&rest);
        (seen, stats.snapshot(), (q.next_avail(), q.next_used()))
    }

    proptest! {
        /// For any descriptor table (loops, indirect tables, bad indices,
        /// addresses outside or across regions) and any header, the fast
        /// path leaves the guest exactly what virtio-queue's path leaves.
        #[test]
        fn the_fast_path_completes_exactly_as_virtio_queue_does(
            descs in proptest::collection::vec(
                (prop_oneof![Just(H), (0u64..16).prop_map(|k| ST + 16 * k), DATA..DATA + 0x3000,
                             Just(SPLIT - 8), Just(1u64 << 40), any::<u64>()],
                 prop_oneof![Just(16u32), Just(64), 1u32..3000, Just(0), any::<u32>()],
                 0u16..8, 0u16..20),
                16),
            heads in proptest::collection::vec(0u16..18, 1..16),
            op in 0u16..11,
            aux in 0u32..40,
            slot in 0u32..3,
        ) {
            let header = RequestHeader { op, aux, key_slot: slot, ..Default::default() };
            let fast = run(0x2000, &descs, &heads, &header);
            let slow = run(SPLIT - 0x40, &descs, &heads, &header);
            prop_assert_eq!(fast, slow);
        }
    }

    #[test]
    fn a_ring_across_regions_takes_the_slow_path() {
        let m: GuestMemoryMmap<()> = GuestMemoryMmap::from_ranges(&[
            (GuestAddress(0), SPLIT as usize),
            (GuestAddress(SPLIT), (END - SPLIT) as usize),
        ])
        .unwrap();
        let mut q = Queue::new(SIZE).unwrap();
        q.set_size(SIZE);
        q.set_desc_table_address(Some(DESC as u32), Some(0));
        q.set_avail_ring_address(Some(AVAIL as u32), Some(0));
        let regions = Regions::of(&m);
        q.set_used_ring_address(Some(0x2000), Some(0));
        assert!(matches!(Ring::of(&q, &regions, &m), Ok(Some(_))));
        q.set_used_ring_address(Some((SPLIT - 0x40) as u32), Some(0));
        assert!(matches!(Ring::of(&q, &regions, &m), Ok(None)));
        q.set_used_ring_address(Some(0x4000_0000), Some(0));
        assert_eq!(
            Ring::of(&q, &regions, &m).unwrap_err(),
            Broken::RingOutsideMemory
        );
    }
}
