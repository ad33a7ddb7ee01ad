//! Tests of the request processor on a synthetic guest memory: validation
//! order, key handling, and proptests against software answers.

use super::*;
use crate::stats::Stats;
use pktaccel_testvectors::soft;
use proptest::prelude::*;
use virtio_queue::desc::RawDescriptor;
use virtio_queue::mock::MockSplitQueue;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

const MEM: u64 = 0x20_0000;
const DATA: u64 = 0x10_0000;
const HDR: u64 = 0x1f_0000;
const STATUS: u64 = 0x1f_1000;

fn mem() -> GuestMemoryMmap<()> {
    GuestMemoryMmap::from_ranges(&[(GuestAddress(0), MEM as usize)]).unwrap()
}

fn desc(addr: u64, len: u32, write: bool) -> RawDescriptor {
    let flags = if write { 2 } else { 0 };
    RawDescriptor::from(Descriptor::new(addr, len, flags, 0))
}

fn processor() -> Processor {
    Processor::new(crate::config::ALL_OPS, 64, 1 << 20, 16)
}

/// Runs one chain (built with the mock split queue) through `p`;
/// returns the used length and the counters it produced.
fn process(
    m: &GuestMemoryMmap<()>,
    descs: &[RawDescriptor],
    p: &Processor,
    scratch: &mut Scratch,
) -> (u32, crate::stats::Snapshot) {
    let vq = MockSplitQueue::new(m, 256);
    let chain = vq.build_desc_chain(descs).unwrap();
    let stats = Stats::new(1);
    let used = p.process(m, chain, scratch, stats.shard(0));
    (used, stats.snapshot())
}

/// A well-formed request with header at HDR and status at STATUS;
/// returns (used length, status record).
fn call(
    m: &GuestMemoryMmap<()>,
    p: &Processor,
    h: &RequestHeader,
    segs: &[(u64, u32, bool)],
) -> (u32, StatusRecord) {
    m.write_slice(&h.to_le_bytes(), GuestAddress(HDR)).unwrap();
    m.write_slice(&[0xee; 16], GuestAddress(STATUS)).unwrap();
    let mut d = vec![desc(HDR, 64, false)];
    d.extend(segs.iter().map(|&(a, l, w)| desc(a, l, w)));
    d.push(desc(STATUS, 16, true));
    let (used, _) = process(m, &d, p, &mut Scratch::default());
    let mut b = [0u8; 16];
    m.read_slice(&mut b, GuestAddress(STATUS)).unwrap();
    (used, StatusRecord::from_le_bytes(&b).unwrap())
}

fn h(op: u16) -> RequestHeader {
    RequestHeader {
        op,
        ..Default::default()
    }
}

#[test]
fn validation_order_is_as_documented() {
    let m = mem();
    let p = processor();
    // The op check comes before the segment checks.
    let st = call(&m, &p, &h(42), &[(DATA, 0, false)]).1;
    assert_eq!(st.status, STATUS_UNSUPPORTED);
    // Structure beats size, size beats address.
    let big = (MEM * 4, 2 << 20, false);
    let st = call(&m, &p, &h(OP_CSUM), &[big, (DATA, 0, false)]).1;
    assert_eq!(st.status, STATUS_BAD_REQUEST);
    assert_eq!(call(&m, &p, &h(OP_CSUM), &[big]).1.status, STATUS_TOO_BIG);
    let st = call(&m, &p, &h(OP_CSUM), &[(MEM * 4, 8, false)]).1;
    assert_eq!(st.status, STATUS_BAD_ADDRESS);
    // ... whichever segment comes first (the checks run in one pass).
    let outside = (MEM * 4, 8, false);
    let st = call(
        &m,
        &p,
        &h(OP_COPY),
        &[outside, (DATA, 8, true), (DATA, 8, false)],
    )
    .1;
    assert_eq!(st.status, STATUS_BAD_REQUEST);
    let st = call(
        &m,
        &p,
        &h(OP_CSUM),
        &[outside, (DATA, 1 << 20, false), (DATA, 1, false)],
    )
    .1;
    assert_eq!(st.status, STATUS_TOO_BIG);
    let wraps = (u64::MAX - 3, 8, false);
    let st = call(&m, &p, &h(OP_CSUM), &[(DATA, 8, false), wraps]).1;
    assert_eq!(st.status, STATUS_BAD_ADDRESS);
    // Key before sizes for GCM.
    let mut seal = h(OP_AES_GCM_SEAL);
    seal.key_slot = 9;
    seal.aux = 100;
    assert_eq!(
        call(&m, &p, &seal, &[(DATA, 8, false)]).1.status,
        STATUS_NO_KEY
    );
}

#[test]
fn key_set_wipes_its_scratch_copy() {
    let m = mem();
    let p = processor();
    m.write_slice(&[0x3c; 32], GuestAddress(DATA)).unwrap();
    let mut ks = h(OP_KEY_SET);
    ks.key_slot = 4;
    m.write_slice(&ks.to_le_bytes(), GuestAddress(HDR)).unwrap();
    let d = [
        desc(HDR, 64, false),
        desc(DATA, 32, false),
        desc(STATUS, 16, true),
    ];
    let mut scratch = Scratch::default();
    let (used, snap) = process(&m, &d, &p, &mut scratch);
    assert_eq!((used, snap.status[STATUS_OK as usize]), (16, 1));
    assert!(p.keys.get(4).is_ok());
    assert!(
        scratch.buf.iter().all(|&b| b == 0),
        "key material left in scratch"
    );
}

proptest! {
    /// Well-formed CSUM, CRC32C and COPY requests with arbitrary
    /// scattering give the software answer.
    #[test]
    fn scattered_requests_match_software(
        data in proptest::collection::vec(any::<u8>(), 1..4000),
        cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..5),
        seed in any::<u32>(),
    ) {
        let m = mem();
        let p = processor();
        m.write_slice(&data, GuestAddress(DATA)).unwrap();
        let mut points: Vec<usize> = cuts.iter().map(|i| i.index(data.len())).collect();
        points.sort_unstable();
        points.dedup();
        let mut segs = Vec::new();
        let mut last = 0;
        for pt in points.into_iter().filter(|&p| p > 0) {
            segs.push((DATA + last as u64, (pt - last) as u32, false));
            last = pt;
        }
        segs.push((DATA + last as u64, (data.len() - last) as u32, false));

        let mut hc = h(OP_CSUM);
        hc.aux = seed;
        let st = call(&m, &p, &hc, &segs).1;
        prop_assert_eq!(st.result, u64::from(soft::inet_csum(seed, &[&data])));

        let mut hc = h(OP_CRC32C);
        hc.aux = seed;
        let st = call(&m, &p, &hc, &segs).1;
        prop_assert_eq!(st.result, u64::from(soft::crc32c(seed, &data)));

        let out = DATA + 0x8000;
        let mut with_out = segs.clone();
        with_out.push((out, 1000, true));
        with_out.push((out + 1000, data.len() as u32, true));
        let (used, st) = call(&m, &p, &h(OP_COPY), &with_out);
        prop_assert_eq!(st.len as usize, data.len());
        prop_assert_eq!(used as usize, data.len() + 16);
        let mut got = vec![0u8; data.len()];
        m.read_slice(&mut got, GuestAddress(out)).unwrap();
        prop_assert_eq!(got, data);
    }

    /// Arbitrary descriptor lists and headers never panic, have exactly
    /// one counted outcome, and every answer is a defined status with a
    /// used length the chain can hold.
    #[test]
    fn arbitrary_chains_never_panic(
        shape in proptest::collection::vec(
            (prop_oneof![Just(HDR), Just(STATUS), DATA..MEM + 64, Just(u64::MAX - 7), any::<u64>()],
             prop_oneof![Just(0u32), Just(16), Just(64), 1u32..5000, Just(u32::MAX)],
             any::<bool>()),
            1..10),
        params in proptest::array::uniform32(any::<u8>()),
        op in 0u16..12,
        aux in prop_oneof![Just(0u32), 0u32..80, any::<u32>()],
    ) {
        let m = mem();
        let p = processor();
        p.keys.set(0, &[1; 32]).unwrap();
        let mut hd = h(op);
        hd.aux = aux;
        hd.params[..32].copy_from_slice(&params);
        hd.key_slot = u32::from(params[0] % 2);
        m.write_slice(&hd.to_le_bytes(), GuestAddress(HDR)).unwrap();
        let descs: Vec<RawDescriptor> =
            shape.iter().map(|&(a, l, w)| desc(a, l, w)).collect();
        let (used, snap) = process(&m, &descs, &p, &mut Scratch::default());
        let writable: u64 = shape.iter().filter(|s| s.2).map(|s| u64::from(s.1)).sum();
        prop_assert!(u64::from(used) <= writable);
        let answered: u64 = snap.status.iter().sum();
        prop_assert_eq!(answered + snap.no_status, 1, "one outcome: {:?}", snap);
        if snap.no_status == 1 {
            prop_assert_eq!(used, 0);
        } else {
            // The status record went to the last descriptor the device
            // saw (a chain over 4 GiB in total ends early).
            let vq = MockSplitQueue::new(&m, 256);
            let seen: Vec<Descriptor> = vq.build_desc_chain(&descs).unwrap().collect();
            let addr = seen.last().unwrap().addr();
            let mut b = [0u8; 16];
            m.read_slice(&mut b, addr).unwrap();
            let st = StatusRecord::from_le_bytes(&b).unwrap();
            prop_assert!(st.status < STATUS_DEVICE_ERROR, "status {}", st.status);
            prop_assert_eq!(snap.status[st.status as usize], 1);
            prop_assert!(used >= 16);
            if st.status != STATUS_OK {
                prop_assert_eq!((st.len, st.result), (0, 0));
            }
        }
    }
}
