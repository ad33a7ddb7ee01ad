//! The request parser and processor over a synthetic guest memory and a
//! split ring built from the input, optionally with a second thread that
//! rewrites descriptors, headers and indices while the device walks them
//! (a hostile guest does exactly that).
//!
//! Input: `[flags u8][mutations u8][memory image ...]`. The image is copied
//! to guest address 0; the ring sits at fixed addresses inside it (see
//! `DESC`, `AVAIL`, `USED`) so seeds can be written by hand. The mutator
//! thread replays `(offset u16, value u8)` triples taken from the image's
//! tail. Flag bits: 0-2 queue size (1 << n, at most 64), 4 EVENT_IDX,
//! 5 the racing mutator, 6 injected faults (drop, status, used length) in
//! the completion hook.
#![no_main]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use libfuzzer_sys::fuzz_target;
use pktaccel_device::drain::Lane;
use pktaccel_device::faults::Faults;
use pktaccel_device::request::Processor;
use pktaccel_device::stats::Stats;
use virtio_queue::{Queue, QueueT};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

/// Descriptor table, avail ring and used ring of the synthetic queue.
const DESC: u64 = 0x0;
const AVAIL: u64 = 0x400;
const USED: u64 = 0x600;
/// Guest RAM: two adjacent regions (segments may span them) and one
/// beyond a hole (addresses in the hole must be refused).
const REGIONS: [(u64, usize); 3] = [(0, 0x8000), (0x8000, 0x8000), (0x2_0000, 0x1000)];

fn memory() -> GuestMemoryMmap<()> {
    let ranges: Vec<_> = REGIONS.iter().map(|&(a, l)| (GuestAddress(a), l)).collect();
    GuestMemoryMmap::from_ranges(&ranges).expect("fixed layout")
}

fn queue(size: u16, event_idx: bool) -> Queue {
    let mut q = Queue::new(64).expect("64 is a valid queue size");
    q.set_size(size);
    q.try_set_desc_table_address(GuestAddress(DESC))
        .expect("aligned");
    q.try_set_avail_ring_address(GuestAddress(AVAIL))
        .expect("aligned");
    q.try_set_used_ring_address(GuestAddress(USED))
        .expect("aligned");
    q.set_event_idx(event_idx);
    q.set_ready(true);
    q
}

fn mutate(mem: GuestMemoryMmap<()>, script: Vec<u8>, stop: Arc<AtomicBool>) {
    if script.len() < 3 {
        return;
    }
    let mut i = 0;
    while !stop.load(Ordering::Relaxed) {
        let t = &script[i..i + 3];
        // Aim at the ring and the first pages, where headers usually live.
        let off = u64::from(u16::from_le_bytes([t[0], t[1]])) % 0x4000;
        let _ = mem.write_obj(t[2], GuestAddress(off));
        i = (i + 3) % (script.len() - script.len() % 3).max(3);
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let Some((&mutations, image)) = rest.split_first() else {
        return;
    };
    let mem = memory();
    let image = &image[..image.len().min(0x8000)];
    mem.write_slice(image, GuestAddress(0))
        .expect("inside region 0");
    let size = 1u16 << (flags & 7).min(6);
    let mut q = queue(size, flags & 0x10 != 0);
    let mut processor = Processor::new(u32::MAX, 64, 1 << 20, 4);
    let faulty = flags & 0x40 != 0;
    if faulty {
        let specs = [
            "drop,rate=0.2,seed=1",
            "status=bad-request,rate=0.3,seed=2",
            "used-len=3,rate=0.2,seed=3",
        ];
        processor.hook = Some(Arc::new(Faults::from_specs(&specs).expect("valid specs")));
    }
    let stats = Stats::new(1);
    let mut lane = Lane::default();

    let stop = Arc::new(AtomicBool::new(false));
    let racer = (flags & 0x20 != 0 && mutations > 0).then(|| {
        let n = usize::from(mutations) * 3;
        let script = image[image.len().saturating_sub(n)..].to_vec();
        let (m, s) = (mem.clone(), stop.clone());
        std::thread::spawn(move || mutate(m, script, s))
    });
    // A few rounds, as a worker woken by kicks would run them.
    let mut taken = 0;
    for _ in 0..3 {
        taken += processor
            .drain(&mut q, &mem, 0, &mut lane, stats.shard(0))
            .taken;
    }
    stop.store(true, Ordering::Relaxed);
    if let Some(t) = racer {
        t.join().expect("mutator thread");
    }
    // Without dropped completions, every chain taken whose head names a
    // real descriptor went back on the used ring exactly once.
    if !faulty {
        let bad_heads = stats.snapshot().bad_head as usize;
        assert_eq!(
            usize::from(q.next_used()),
            (taken - bad_heads) % 0x10000,
            "taken {taken}, used index {}: {:?}",
            q.next_used(),
            stats.snapshot()
        );
    }
});
