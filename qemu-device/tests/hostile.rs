//! A hostile guest driver against the real daemon on a real socket: rings
//! it breaks on purpose, and descriptors it rewrites while the device is
//! processing them.

mod support;

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use pktaccel_abi::*;
use pktaccel_device::engines::{crc, csum};
use support::{Daemon, Guest, GuestOpts, RawDesc, hdr};
use vm_memory::{Bytes, GuestAddress};

fn nop_ok(g: &mut Guest, q: usize) {
    let (st, used) = g.call(q, &hdr(OP_NOP), &[], &[]);
    assert_eq!(
        (st.status, used),
        (STATUS_OK, 16),
        "queue {q} stopped serving"
    );
}

/// Issue 10's wedge: with EVENT_IDX, an avail index more than a ring ahead
/// plus a kick used to make the worker spin at 100% CPU forever and the
/// daemon never served another frontend. Now the queue is marked broken
/// with one log line, nothing polls it, and the other queue and the next
/// connection work.
#[test]
fn event_idx_avail_index_past_the_ring_breaks_only_that_queue() {
    let d = Daemon::spawn(&["--queues", "2"]);
    let opts = GuestOpts {
        queues: 2,
        event_idx: true,
        ..Default::default()
    };
    {
        let mut g = Guest::connect(&d.path, opts);
        nop_ok(&mut g, 0);
        nop_ok(&mut g, 1);
        let size = g.queues[0].size;
        // One request served so far: an index a ring and 5 more ahead.
        g.set_avail_idx_raw(0, 1 + size + 5);
        g.kick_raw(0);
        d.wait_for_log("is broken", 0);
        // The other queue is unaffected.
        let c = g.alloc_with(b"123456789");
        let (st, _) = g.call(1, &hdr(OP_CRC32C), &[(c, 9)], &[]);
        assert_eq!((st.status, st.result), (STATUS_OK, 0xE306_9283));
        // More kicks on the broken queue: no polling, no new log line.
        std::thread::sleep(Duration::from_millis(50));
        let cpu0 = d.cpu_seconds();
        for _ in 0..20 {
            g.kick_raw(0);
            std::thread::sleep(Duration::from_millis(25));
        }
        let cpu = d.cpu_seconds() - cpu0;
        assert!(
            cpu < 0.2,
            "daemon used {cpu:.2} s of CPU in 0.5 s on a broken queue"
        );
        assert_eq!(d.log().matches("is broken").count(), 1, "{}", d.log());
        assert!(
            d.log().contains("avail index"),
            "the log line says why: {}",
            d.log()
        );
        nop_ok(&mut g, 1);
        assert_eq!(d.stats()["broken"], 1);
    } // the frontend leaves
    d.wait_for_log("waiting for a vhost-user frontend", 1);
    let mut g = Guest::connect(&d.path, opts);
    nop_ok(&mut g, 0);
    nop_ok(&mut g, 1);
    drop(g);
    assert!(d.stop().success());
}

/// The same without EVENT_IDX, and an index exactly one ring ahead (legal:
/// a full ring) still being served.
#[test]
fn a_full_ring_is_served_and_one_more_is_broken_without_event_idx() {
    let d = Daemon::spawn(&[]);
    let mut g = Guest::connect(
        &d.path,
        GuestOpts {
            queue_size: 16,
            ..Default::default()
        },
    );
    let h = g.alloc_with(&hdr(OP_NOP).to_le_bytes());
    let s = g.alloc(16 * 16);
    // Sixteen chains of two descriptors would not fit; one chain offered
    // sixteen times is a full ring of valid entries.
    let head = g.take_desc(0);
    let st = g.take_desc(0);
    g.write_desc(0, head, h, 64, 1, st);
    g.write_desc(0, st, s, 16, 2, 0);
    for _ in 0..16 {
        g.push_avail(0, head);
    }
    g.kick(0);
    assert_eq!(g.wait(0, 16).len(), 16);
    g.give_back(0, &[head, st]);
    nop_ok(&mut g, 0);
    let idx = 16 + 1 + 17;
    g.set_avail_idx_raw(0, idx);
    g.kick_raw(0);
    d.wait_for_log("is broken", 0);
    assert_eq!(d.stats()["broken"], 1);
}

/// Another thread rewrites the descriptors, the header and the avail ring
/// entries of requests while the device processes them. The device must
/// never crash, and an OK status must carry a result computed from one of
/// the states the guest wrote (never from a length checked in one state
/// and used in another).
#[test]
fn descriptors_rewritten_during_processing_never_yield_a_wrong_ok() {
    let d = Daemon::spawn(&[]);
    let mut g = Guest::connect(&d.path, GuestOpts::default());
    let x: Vec<u8> = (0..1500u32).map(|i| (i * 7 + 3) as u8).collect();
    let y: Vec<u8> = (0..1500u32).map(|i| (i * 13 + 1) as u8).collect();
    let (xa, ya) = (g.alloc_with(&x), g.alloc_with(&y));
    // Every (address, length) pair the mutator can produce, and the
    // results the device may accept as OK for each op.
    let addrs = [xa, ya, 1 << 40];
    let lens = [100u32, 1500, 0x7fff_0000];
    let mut good = HashSet::new();
    for (a, buf) in [(xa, &x), (ya, &y)] {
        let _ = a;
        for l in [100usize, 1500] {
            good.insert(u64::from(csum::checksum(0, [&buf[..l]])));
            good.insert(u64::from(crc::crc32c(0, [&buf[..l]])));
        }
    }
    let stop = Arc::new(AtomicBool::new(false));
    let n = 40usize;
    let mut chains = Vec::new();
    for _ in 0..n {
        let (h, s) = (g.alloc(64), g.alloc(16));
        g.write(h, &hdr(OP_CSUM).to_le_bytes());
        let ids = [g.take_desc(0), g.take_desc(0), g.take_desc(0)];
        chains.push((ids, h, s));
    }
    let mutator = {
        let mem = g.mem.clone();
        let stop = stop.clone();
        let table: Vec<(u64, u64)> = chains
            .iter()
            .map(|&(ids, h, _)| (g.desc_addr(0, ids[1]), h))
            .collect();
        let next_desc: Vec<u64> = chains
            .iter()
            .map(|&(ids, _, _)| g.desc_addr(0, ids[0]))
            .collect();
        std::thread::spawn(move || {
            let mut r = 0x2545_f491_4f6c_dd1du64;
            while !stop.load(Ordering::Relaxed) {
                r ^= r << 13;
                r ^= r >> 7;
                r ^= r << 17;
                let i = (r % table.len() as u64) as usize;
                let (data_desc, h) = table[i];
                let addr = addrs[(r >> 8) as usize % 3];
                let len = lens[(r >> 16) as usize % 3];
                mem.write_obj(addr, GuestAddress(data_desc)).unwrap();
                mem.write_obj(len, GuestAddress(data_desc + 8)).unwrap();
                // Flip the op between CSUM and CRC32C, sometimes to junk.
                let op = [OP_CSUM, OP_CRC32C, 0x77][(r >> 24) as usize % 3];
                mem.write_obj(op, GuestAddress(h)).unwrap();
                // Sometimes cut the chain after the header.
                let flags: u16 = if (r >> 32).is_multiple_of(8) { 0 } else { 1 };
                mem.write_obj(flags, GuestAddress(next_desc[i] + 12))
                    .unwrap();
            }
        })
    };
    let (mut oks, mut errors, mut unanswered) = (0u64, 0u64, 0u64);
    let deadline = Instant::now() + Duration::from_millis(1500);
    while Instant::now() < deadline {
        for &(ids, h, s) in &chains {
            let descs = [RawDesc::r(h, 64), RawDesc::r(xa, 1500), RawDesc::w(s, 16)];
            for (k, dsc) in descs.iter().enumerate() {
                let last = k == 2;
                let flags = if dsc.write { 2 } else { 0 } | if last { 0 } else { 1 };
                let next = if last { 0 } else { ids[k + 1] };
                g.write_desc(0, ids[k], dsc.addr, dsc.len, flags, next);
            }
            g.write(s, &[0xee; 16]);
            g.push_avail(0, ids[0]);
        }
        g.kick(0);
        let done = g.wait(0, n);
        for (head, used) in done {
            let &(_, _, s) = chains.iter().find(|c| c.0[0] == head).expect("known head");
            if used == 0 {
                unanswered += 1;
                continue;
            }
            assert_eq!(used, 16, "only the status record is written");
            let st = StatusRecord::from_le_bytes(&g.read(s, 16)).unwrap();
            if st.status == STATUS_OK {
                assert!(
                    good.contains(&st.result),
                    "OK with a result from no state the guest wrote: {st:?}"
                );
                oks += 1;
            } else {
                assert!(st.status < STATUS_DEVICE_ERROR, "undefined status {st:?}");
                errors += 1;
            }
        }
    }
    stop.store(true, Ordering::Relaxed);
    mutator.join().unwrap();
    eprintln!("ok {oks}, rejected {errors}, unanswered {unanswered}");
    assert!(
        oks > 0 && errors > 0,
        "the mutation raced too little to test anything"
    );
    // The daemon is alive and serves a clean request.
    for (ids, _, _) in &chains {
        g.give_back(0, ids);
    }
    nop_ok(&mut g, 0);
    assert!(d.stop().success());
}
