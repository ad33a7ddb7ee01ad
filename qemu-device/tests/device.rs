//! The real daemon on a real unix socket, driven through the vhost-user
//! frontend with real split rings in memfd guest memory: negotiation, config
//! space, every op, and every bad-input line of the device's contract.

mod support;

use std::time::Duration;

use pktaccel_abi::*;
use support::{Daemon, Guest, GuestOpts, RawDesc, base_features, hdr};

fn start(args: &[&str]) -> (Daemon, Guest) {
    let d = Daemon::spawn(args);
    let g = Guest::connect(&d.path, GuestOpts::default());
    (d, g)
}

fn ok(st: StatusRecord) -> StatusRecord {
    assert_eq!(st.status, STATUS_OK, "status {}", status_name(st.status));
    st
}

// ---------------------------------------------------------------------------
// Negotiation and config space
// ---------------------------------------------------------------------------

#[test]
fn features_queue_count_and_config_space() {
    let d = Daemon::spawn(&["--queues", "3", "--ops", "csum,copy"]);
    let mut g = Guest::connect(
        &d.path,
        GuestOpts {
            queues: 3,
            ..Default::default()
        },
    );
    let want = base_features() | op_feature(OP_NOP) | op_feature(OP_CSUM) | op_feature(OP_COPY);
    assert_eq!(g.offered, want, "offered {:#x}", g.offered);
    let cfg = g.config(0, DEVICE_CONFIG_SIZE as u32);
    let c = DeviceConfig::from_le_bytes(&cfg).unwrap();
    assert_eq!(&cfg[..4], b"PKAC");
    assert_eq!(c.magic, MAGIC);
    assert_eq!(c.abi_version, ABI_VERSION);
    assert_eq!(c.num_queues, 3);
    assert_eq!(c.ops, (1 << OP_NOP) | (1 << OP_CSUM) | (1 << OP_COPY));
    assert_eq!(c.key_slots, 16);
    assert_eq!(c.max_segments, 64);
    assert_eq!(c.max_request_bytes, 1 << 20);
    assert_eq!(c.reserved, 0);
    // A partial read at an offset, as a guest reading one register does.
    assert_eq!(g.config(4, 4), ABI_VERSION.to_le_bytes().to_vec());
    assert_eq!(g.config(8, 4), 3u32.to_le_bytes().to_vec());
    // Every queue works, each on its own worker.
    for q in 0..3 {
        let a = g.alloc_with(b"\x00\x01\xf2\x03\xf4\xf5\xf6\xf7");
        let st = ok(g.call(q, &hdr(OP_CSUM), &[(a, 8)], &[]).0);
        assert_eq!(st.result, 0x220d);
    }
}

// ---------------------------------------------------------------------------
// Ops through the device
// ---------------------------------------------------------------------------

#[test]
fn nop_csum_crc_and_rss_compute_published_values() {
    let (_d, mut g) = start(&[]);
    let (st, used) = g.call(0, &hdr(OP_NOP), &[], &[]);
    assert_eq!((ok(st).result, used), (0, 16));

    let rfc = g.alloc_with(&[0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7]);
    // Scattered with an odd split: the checksum must not change.
    let st = g.call(0, &hdr(OP_CSUM), &[(rfc, 3), (rfc + 3, 5)], &[]).0;
    assert_eq!(ok(st).result, 0x220d);

    let check = g.alloc_with(b"123456789");
    let st = g
        .call(0, &hdr(OP_CRC32C), &[(check, 4), (check + 4, 5)], &[])
        .0;
    assert_eq!(ok(st).result, 0xE306_9283);
    let st = g.call(0, &hdr(OP_CRC32), &[(check, 9)], &[]).0;
    assert_eq!(ok(st).result, 0xCBF4_3926);
    // Chaining through aux.
    let mut h = hdr(OP_CRC32C);
    let first = g.call(0, &h, &[(check, 5)], &[]).0.result;
    h.aux = first as u32;
    assert_eq!(g.call(0, &h, &[(check + 5, 4)], &[]).0.result, 0xE306_9283);

    // Microsoft's RSS verification vector: 66.9.149.187:2794 -> 161.142.100.80:1766.
    let mut h = hdr(OP_RSS);
    h.params = [
        0x6d, 0x5a, 0x56, 0xda, 0x25, 0x5b, 0x0e, 0xc2, 0x41, 0x67, 0x25, 0x3d, 0x43, 0xa3, 0x8f,
        0xb0, 0xd0, 0xca, 0x2b, 0xcb, 0xae, 0x7b, 0x30, 0xb4, 0x77, 0xcb, 0x2d, 0xa3, 0x80, 0x30,
        0xf2, 0x0c, 0x6a, 0x42, 0xb7, 0x3b, 0xbe, 0xac, 0x01, 0xfa,
    ];
    let tuple = g.alloc_with(&[66, 9, 149, 187, 161, 142, 100, 80, 0x0a, 0xea, 0x06, 0xe6]);
    assert_eq!(ok(g.call(0, &h, &[(tuple, 12)], &[]).0).result, 0x51cc_c178);
    assert_eq!(ok(g.call(0, &h, &[(tuple, 8)], &[]).0).result, 0x323e_8fc2);
}

#[test]
fn copy_scatters_in_place_and_across_memory_regions() {
    let (_d, mut g) = start(&[]);
    let data: Vec<u8> = (0..5000u32).map(|i| (i * 7 + 3) as u8).collect();
    let src = g.alloc_with(&data);
    let dst = g.alloc(5000);
    let (st, used) = g.call(
        0,
        &hdr(OP_COPY),
        &[(src, 1000), (src + 1000, 4000)],
        &[(dst, 2500), (dst + 2500, 3000)],
    );
    assert_eq!((ok(st).len, used), (5000, 5016));
    assert_eq!(g.read(dst, 5000), data);

    // In place: the output segment is the input segment.
    let (st, _) = g.call(0, &hdr(OP_COPY), &[(src, 5000)], &[(src, 5000)]);
    ok(st);
    assert_eq!(g.read(src, 5000), data);

    // A buffer straddling the boundary between the two memory regions.
    let edge = support::REGION_SIZE - 100;
    g.write(edge, &data[..300]);
    let out = g.alloc(300);
    ok(g.call(0, &hdr(OP_COPY), &[(edge, 300)], &[(out, 300)]).0);
    assert_eq!(g.read(out, 300), &data[..300]);
    let st = g.call(0, &hdr(OP_CRC32C), &[(edge, 300)], &[]).0;
    assert_eq!(st.result, u64::from(crc32c::crc32c(&data[..300])));
}

fn gcm_header(op: u16, slot: u32, iv: &[u8; 12], aad_len: u32) -> RequestHeader {
    let mut h = hdr(op);
    h.key_slot = slot;
    h.aux = aad_len;
    h.params[..12].copy_from_slice(iv);
    h
}

fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

#[test]
fn gcm_seal_open_with_key_slots_matches_mcgrew_viega_case_16() {
    let (_d, mut g) = start(&[]);
    let key = hex("feffe9928665731c6d6a8f9467308308feffe9928665731c6d6a8f9467308308");
    let iv: [u8; 12] = hex("cafebabefacedbaddecaf888").try_into().unwrap();
    let aad = hex("feedfacedeadbeeffeedfacedeadbeefabaddad2");
    let pt = hex(
        "d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a721c3c0c95956809532fcf0e2449a6b525b16aedf5aa0de657ba637b39",
    );
    let ct = hex(
        "522dc1f099567d07f47f37a32a84427d643a8cdcbfe5c0c97598a2bd2555d1aa8cb08e48590dbb3da7b08b1056828838c5f61e6393ba7a0abcc9f662",
    );
    let tag = hex("76fc6ece0f4e1768cddf8853bb2d551b");

    let mut ks = hdr(OP_KEY_SET);
    ks.key_slot = 5;
    let k = g.alloc_with(&key);
    // The key itself scattered over two segments.
    ok(g.call(0, &ks, &[(k, 10), (k + 10, 22)], &[]).0);

    // Seal: inputs AAD + plaintext (scattered), outputs ciphertext + tag (scattered).
    let a = g.alloc_with(&aad);
    let p = g.alloc_with(&pt);
    let out = g.alloc(76);
    let h = gcm_header(OP_AES_GCM_SEAL, 5, &iv, aad.len() as u32);
    let (st, used) = g.call(
        0,
        &h,
        &[(a, 20), (p, 7), (p + 7, 53)],
        &[(out, 30), (out + 30, 46)],
    );
    assert_eq!((ok(st).len, used), (76, 92));
    assert_eq!(g.read(out, 60), ct);
    assert_eq!(g.read(out + 60, 16), tag);

    // Open in place: ciphertext buffer is also the plaintext output.
    let c = g.alloc_with(&[ct.clone(), tag.clone()].concat());
    let h = gcm_header(OP_AES_GCM_OPEN, 5, &iv, aad.len() as u32);
    let (st, used) = g.call(0, &h, &[(a, 20), (c, 76)], &[(c, 60)]);
    assert_eq!((ok(st).len, used), (60, 76));
    assert_eq!(g.read(c, 60), pt);

    // Clear the key: further use is NO_KEY.
    let mut kc = hdr(OP_KEY_CLEAR);
    kc.key_slot = 5;
    ok(g.call(0, &kc, &[], &[]).0);
    let h = gcm_header(OP_AES_GCM_SEAL, 5, &iv, 0);
    let st = g.call(0, &h, &[(p, 60)], &[(out, 76)]).0;
    assert_eq!(st.status, STATUS_NO_KEY);
}

#[test]
fn queues_work_concurrently_and_share_key_slots() {
    let d = Daemon::spawn(&["--queues", "4"]);
    let mut g = Guest::connect(
        &d.path,
        GuestOpts {
            queues: 4,
            event_idx: true,
            ..Default::default()
        },
    );
    // A key installed through queue 0 is used by queues 1..3.
    let k = g.alloc_with(&[0x11; 32]);
    let mut ks = hdr(OP_KEY_SET);
    ks.key_slot = 7;
    ok(g.call(0, &ks, &[(k, 32)], &[]).0);
    let pt: Vec<u8> = (0..1000u32).map(|i| (i % 251) as u8).collect();
    let p = g.alloc_with(&pt);
    let mut sealed = Vec::new();
    for q in 1..4 {
        let out = g.alloc(1016);
        ok(g.call(
            q,
            &gcm_header(OP_AES_GCM_SEAL, 7, &[q as u8; 12], 0),
            &[(p, 1000)],
            &[(out, 1016)],
        )
        .0);
        sealed.push(out);
    }
    // Fill all four rings with CRC requests, kick all, then collect: the
    // workers run at the same time and every answer is right.
    let data: Vec<u8> = (0..4096u32).map(|i| (i * 7) as u8).collect();
    let a = g.alloc_with(&data);
    let want = u64::from(crc32c::crc32c(&data));
    let mut heads = vec![Vec::new(); 4];
    for (q, hs) in heads.iter_mut().enumerate() {
        while g.queues[q].free_descs() >= 3 {
            hs.push(g.submit(q, &hdr(OP_CRC32C), &[(a, 4096)], &[]));
        }
    }
    for q in 0..4 {
        g.kick(q);
    }
    for (q, hs) in heads.iter().enumerate() {
        let done = g.wait(q, hs.len());
        assert_eq!(done.len(), hs.len());
        for (h, _) in done {
            assert_eq!(ok(g.status(q, h)).result, want, "queue {q}");
        }
    }
    // And the sealed buffers open on a different queue than they were sealed on.
    for (i, &c) in sealed.iter().enumerate() {
        let q = i + 1;
        let out = g.alloc(1000);
        let h = gcm_header(OP_AES_GCM_OPEN, 7, &[q as u8; 12], 0);
        ok(g.call((q + 1) % 4, &h, &[(c, 1016)], &[(out, 1000)]).0);
        assert_eq!(g.read(out, 1000), pt);
    }
    let s = d.stats();
    assert_eq!(s["op.crc32c.requests"], 4 * 85);
}

#[test]
fn event_idx_and_a_full_ring_of_batched_requests() {
    let d = Daemon::spawn(&["--queue-size", "256"]);
    let mut g = Guest::connect(
        &d.path,
        GuestOpts {
            event_idx: true,
            queue_size: 64,
            ..Default::default()
        },
    );
    let data: Vec<u8> = (0..64u8).collect();
    let buf = g.alloc_with(&data);
    let expect = u64::from(pktaccel_device::engines::csum::checksum(0, [&data[..]]));
    for _round in 0..50 {
        let mut heads = Vec::new();
        while g.queues[0].free_descs() >= 3 {
            heads.push(g.submit(0, &hdr(OP_CSUM), &[(buf, 64)], &[]));
        }
        g.kick(0);
        let done = g.wait(0, heads.len());
        assert_eq!(done.len(), heads.len());
        for (h, used) in done {
            assert_eq!(used, 16);
            assert_eq!(g.status(0, h).result, expect);
        }
    }
    let s = d.stats();
    assert_eq!(s["op.csum.requests"], 50 * 21);
    assert_eq!(s["status.ok"], 50 * 21);
}

#[test]
fn a_request_in_an_indirect_table_is_served() {
    let (_d, mut g) = start(&[]);
    let h = g.alloc_with(&hdr(OP_CRC32C).to_le_bytes());
    let data = g.alloc_with(b"123456789");
    let s = g.alloc(16);
    let table = g.alloc(16 * 4);
    let head = g.submit_indirect(
        0,
        table,
        &[
            RawDesc::r(h, 64),
            RawDesc::r(data, 4),
            RawDesc::r(data + 4, 5),
            RawDesc::w(s, 16),
        ],
    );
    g.kick(0);
    assert_eq!(g.wait(0, 1), vec![(head, 16)]);
    let st = StatusRecord::from_le_bytes(&g.read(s, 16)).unwrap();
    assert_eq!((st.status, st.result), (STATUS_OK, 0xE306_9283));
    // A table whose length is not a multiple of 16 ends the chain at once.
    let bad = g.take_desc(0);
    g.write_desc(0, bad, table, 20, 4, 0);
    g.push_avail(0, bad);
    g.kick(0);
    assert_eq!(g.wait(0, 1), vec![(bad, 0)]);
    still_serves(&mut g);
}

#[test]
fn no_interrupt_flag_suppresses_notifications() {
    let (_d, mut g) = start(&[]);
    still_serves(&mut g);
    let _ = g.wait_call(0); // the first request's notification
    // With VRING_AVAIL_F_NO_INTERRUPT the device completes but does not signal.
    g.set_avail_flags(0, 1);
    still_serves(&mut g);
    // Without it, it signals again. Both requests ran on the same worker, in
    // order, so a signal for the first would already be counted here.
    g.set_avail_flags(0, 0);
    still_serves(&mut g);
    assert_eq!(
        g.wait_call(0),
        1,
        "a notification was sent despite NO_INTERRUPT"
    );
}

// ---------------------------------------------------------------------------
// Bad input and faults: one test per line of the contract
// ---------------------------------------------------------------------------

/// After any bad request the queue must still serve a good one.
fn still_serves(g: &mut Guest) {
    let (st, used) = g.call(0, &hdr(OP_NOP), &[], &[]);
    assert_eq!((st.status, used), (STATUS_OK, 16), "queue stopped serving");
}

#[test]
fn unknown_or_unadvertised_op_is_unsupported() {
    let (d, mut g) = start(&["--ops", "csum"]);
    let a = g.alloc_with(&[1, 2, 3, 4]);
    for op in [OP_COUNT, 0x7fff, u16::MAX, OP_CRC32C] {
        let (st, used) = g.call(0, &hdr(op), &[(a, 4)], &[]);
        assert_eq!(
            (st.status, st.len, st.result, used),
            (STATUS_UNSUPPORTED, 0, 0, 16),
            "op {op}"
        );
    }
    still_serves(&mut g);
    assert_eq!(d.stats()["status.unsupported"], 4);
}

#[test]
fn short_long_or_writable_header_is_bad_request() {
    let (d, mut g) = start(&[]);
    let h = g.alloc_with(&hdr(OP_NOP).to_le_bytes());
    let s = g.alloc(16);
    for desc in [
        RawDesc::r(h, 32), // shorter than the header struct
        RawDesc::r(h, 63), // one byte short
        RawDesc::r(h, 65), // longer than the header
        RawDesc::w(h, 64), // writable header
    ] {
        let used = g.call_raw(0, &[desc, RawDesc::w(s, 16)]);
        assert_eq!(used, 16);
        let st = StatusRecord::from_le_bytes(&g.read(s, 16)).unwrap();
        assert_eq!(st.status, STATUS_BAD_REQUEST, "{desc:?}");
    }
    // Only a status descriptor: no header at all.
    g.call_raw(0, &[RawDesc::w(s, 16)]);
    assert_eq!(
        StatusRecord::from_le_bytes(&g.read(s, 16)).unwrap().status,
        STATUS_BAD_REQUEST
    );
    // Non-zero flags or reserved fields.
    let mut bad = hdr(OP_NOP);
    bad.flags = 1;
    assert_eq!(g.call(0, &bad, &[], &[]).0.status, STATUS_BAD_REQUEST);
    let mut bad = hdr(OP_NOP);
    bad.reserved = 1;
    assert_eq!(g.call(0, &bad, &[], &[]).0.status, STATUS_BAD_REQUEST);
    still_serves(&mut g);
    assert_eq!(d.stats()["status.bad-request"], 7);
}

#[test]
fn missing_read_only_or_misshapen_status_is_returned_unanswered() {
    let (d, mut g) = start(&[]);
    let h = g.alloc_with(&hdr(OP_NOP).to_le_bytes());
    let s = g.alloc(32);
    g.write(s, &[0xaa; 32]);
    // No status descriptor at all: header only.
    assert_eq!(g.call_raw(0, &[RawDesc::r(h, 64)]), 0);
    // Read-only status descriptor.
    assert_eq!(g.call_raw(0, &[RawDesc::r(h, 64), RawDesc::r(s, 16)]), 0);
    // Writable but not 16 bytes.
    assert_eq!(g.call_raw(0, &[RawDesc::r(h, 64), RawDesc::w(s, 15)]), 0);
    assert_eq!(g.call_raw(0, &[RawDesc::r(h, 64), RawDesc::w(s, 32)]), 0);
    // Status outside guest memory.
    assert_eq!(
        g.call_raw(0, &[RawDesc::r(h, 64), RawDesc::w(1 << 40, 16)]),
        0
    );
    // Nothing was written where a status might have gone.
    assert_eq!(g.read(s, 32), vec![0xaa; 32]);
    still_serves(&mut g);
    assert_eq!(d.stats()["no_status"], 5);
}

#[test]
fn writable_before_readable_is_bad_request() {
    let (d, mut g) = start(&[]);
    let h = g.alloc_with(&hdr(OP_COPY).to_le_bytes());
    let a = g.alloc(64);
    let b = g.alloc(64);
    let s = g.alloc(16);
    let used = g.call_raw(
        0,
        &[
            RawDesc::r(h, 64),
            RawDesc::w(a, 64),
            RawDesc::r(b, 64),
            RawDesc::w(s, 16),
        ],
    );
    assert_eq!(used, 16);
    assert_eq!(
        StatusRecord::from_le_bytes(&g.read(s, 16)).unwrap().status,
        STATUS_BAD_REQUEST
    );
    still_serves(&mut g);
    assert_eq!(d.stats()["status.bad-request"], 1);
}

#[test]
fn zero_length_or_too_many_segments_is_bad_request() {
    let (d, mut g) = start(&[]);
    let a = g.alloc(4096);
    assert_eq!(
        g.call(0, &hdr(OP_CSUM), &[(a, 0)], &[]).0.status,
        STATUS_BAD_REQUEST
    );
    assert_eq!(
        g.call(0, &hdr(OP_COPY), &[(a, 8)], &[(a + 8, 0), (a + 16, 8)])
            .0
            .status,
        STATUS_BAD_REQUEST
    );
    let segs: Vec<(u64, u32)> = (0..65).map(|i| (a + i * 8, 8)).collect();
    assert_eq!(
        g.call(0, &hdr(OP_CSUM), &segs, &[]).0.status,
        STATUS_BAD_REQUEST
    );
    // Exactly the limit is fine.
    assert_eq!(
        g.call(0, &hdr(OP_CSUM), &segs[..64], &[]).0.status,
        STATUS_OK
    );
    still_serves(&mut g);
    assert_eq!(d.stats()["status.bad-request"], 3);
}

#[test]
fn total_over_the_advertised_limit_is_too_big() {
    let (d, mut g) = start(&[]);
    let a = g.alloc(2 << 20);
    let max = 1u32 << 20;
    assert_eq!(
        g.call(0, &hdr(OP_CRC32C), &[(a, max), (a, 1)], &[])
            .0
            .status,
        STATUS_TOO_BIG
    );
    assert_eq!(
        g.call(0, &hdr(OP_COPY), &[(a, 16)], &[(a, max + 1)])
            .0
            .status,
        STATUS_TOO_BIG
    );
    assert_eq!(
        g.call(0, &hdr(OP_CRC32C), &[(a, max)], &[]).0.status,
        STATUS_OK
    );
    still_serves(&mut g);
    assert_eq!(d.stats()["status.too-big"], 2);
}

#[test]
fn segment_outside_guest_memory_or_wrapping_is_bad_address() {
    let (d, mut g) = start(&[]);
    let a = g.alloc(64);
    let end = support::MEM_SIZE;
    let cases: [(u64, u32); 4] = [
        (end, 8),          // just past the end of RAM
        (end - 4, 8),      // straddles the end of RAM
        (u64::MAX - 3, 8), // wraps around the address space
        (1 << 50, 8),      // nowhere near RAM
    ];
    for (addr, len) in cases {
        assert_eq!(
            g.call(0, &hdr(OP_CSUM), &[(addr, len)], &[]).0.status,
            STATUS_BAD_ADDRESS,
            "input {addr:#x}+{len}"
        );
        assert_eq!(
            g.call(0, &hdr(OP_COPY), &[(a, 8)], &[(addr, len)]).0.status,
            STATUS_BAD_ADDRESS,
            "output {addr:#x}+{len}"
        );
    }
    // The header itself outside RAM.
    let s = g.alloc(16);
    g.call_raw(0, &[RawDesc::r(end + 64, 64), RawDesc::w(s, 16)]);
    assert_eq!(
        StatusRecord::from_le_bytes(&g.read(s, 16)).unwrap().status,
        STATUS_BAD_ADDRESS
    );
    still_serves(&mut g);
    assert_eq!(d.stats()["status.bad-address"], 9);
}

#[test]
fn output_shorter_than_the_op_needs_is_short_output() {
    let (d, mut g) = start(&[]);
    let a = g.alloc_with(&[7u8; 100]);
    let out = g.alloc(200);
    g.write(out, &[0x55; 200]);
    assert_eq!(
        g.call(0, &hdr(OP_COPY), &[(a, 100)], &[(out, 99)]).0.status,
        STATUS_SHORT_OUTPUT
    );
    let k = g.alloc_with(&[1u8; 32]);
    let ks = RequestHeader {
        op: OP_KEY_SET,
        key_slot: 0,
        ..Default::default()
    };
    ok(g.call(0, &ks, &[(k, 32)], &[]).0);
    // Seal needs plaintext + 16 bytes of tag.
    let h = gcm_header(OP_AES_GCM_SEAL, 0, &[0; 12], 0);
    assert_eq!(
        g.call(0, &h, &[(a, 100)], &[(out, 115)]).0.status,
        STATUS_SHORT_OUTPUT
    );
    // Open needs room for the plaintext (input minus tag).
    let h = gcm_header(OP_AES_GCM_OPEN, 0, &[0; 12], 0);
    assert_eq!(
        g.call(0, &h, &[(a, 100)], &[(out, 83)]).0.status,
        STATUS_SHORT_OUTPUT
    );
    // Nothing was written to the too-short outputs.
    assert_eq!(g.read(out, 200), vec![0x55; 200]);
    still_serves(&mut g);
    assert_eq!(d.stats()["status.short-output"], 3);
}

#[test]
fn wrong_input_size_for_the_op_is_bad_request() {
    let (d, mut g) = start(&[]);
    let a = g.alloc(64);
    let mut ks = hdr(OP_KEY_SET);
    ks.key_slot = 1;
    // A key must be exactly 32 bytes.
    assert_eq!(g.call(0, &ks, &[(a, 31)], &[]).0.status, STATUS_BAD_REQUEST);
    assert_eq!(g.call(0, &ks, &[(a, 33)], &[]).0.status, STATUS_BAD_REQUEST);
    ok(g.call(0, &ks, &[(a, 32)], &[]).0);
    // RSS input longer than a 40-byte key can hash.
    assert_eq!(
        g.call(0, &hdr(OP_RSS), &[(a, 37)], &[]).0.status,
        STATUS_BAD_REQUEST
    );
    // GCM: AAD longer than the input; open input shorter than AAD + tag.
    let h = gcm_header(OP_AES_GCM_SEAL, 1, &[0; 12], 65);
    assert_eq!(
        g.call(0, &h, &[(a, 64)], &[(a, 64)]).0.status,
        STATUS_BAD_REQUEST
    );
    let h = gcm_header(OP_AES_GCM_OPEN, 1, &[0; 12], 8);
    assert_eq!(g.call(0, &h, &[(a, 23)], &[]).0.status, STATUS_BAD_REQUEST);
    still_serves(&mut g);
    assert_eq!(d.stats()["status.bad-request"], 5);
}

#[test]
fn gcm_open_with_a_wrong_tag_is_auth_failed_and_releases_no_plaintext() {
    let (d, mut g) = start(&[]);
    let k = g.alloc_with(&[0x42; 32]);
    let mut ks = hdr(OP_KEY_SET);
    ks.key_slot = 2;
    ok(g.call(0, &ks, &[(k, 32)], &[]).0);
    let pt: Vec<u8> = (0..1500u32).map(|i| i as u8).collect();
    let p = g.alloc_with(&pt);
    let sealed = g.alloc(1516);
    let iv = [9u8; 12];
    ok(g.call(
        0,
        &gcm_header(OP_AES_GCM_SEAL, 2, &iv, 0),
        &[(p, 1500)],
        &[(sealed, 1516)],
    )
    .0);
    // Flip one tag bit; open into a buffer pre-filled with a pattern.
    let mut bytes = g.read(sealed, 1516);
    bytes[1515] ^= 0x80;
    g.write(sealed, &bytes);
    let out = g.alloc(1500);
    g.write(out, &[0x77; 1500]);
    let (st, _) = g.call(
        0,
        &gcm_header(OP_AES_GCM_OPEN, 2, &iv, 0),
        &[(sealed, 1516)],
        &[(out, 1500)],
    );
    assert_eq!((st.status, st.len), (STATUS_AUTH_FAILED, 0));
    assert_eq!(g.read(out, 1500), vec![0; 1500], "outputs must be zeroed");
    // Undo the flip: the same request now opens.
    bytes[1515] ^= 0x80;
    g.write(sealed, &bytes);
    ok(g.call(
        0,
        &gcm_header(OP_AES_GCM_OPEN, 2, &iv, 0),
        &[(sealed, 1516)],
        &[(out, 1500)],
    )
    .0);
    assert_eq!(g.read(out, 1500), pt);
    still_serves(&mut g);
    assert_eq!(d.stats()["status.auth-failed"], 1);
}

#[test]
fn key_slot_never_set_or_out_of_range_is_no_key() {
    let (d, mut g) = start(&[]);
    let a = g.alloc(64);
    for op in [OP_AES_GCM_SEAL, OP_AES_GCM_OPEN] {
        assert_eq!(
            g.call(0, &gcm_header(op, 3, &[0; 12], 0), &[(a, 32)], &[(a, 48)])
                .0
                .status,
            STATUS_NO_KEY
        );
        assert_eq!(
            g.call(0, &gcm_header(op, 16, &[0; 12], 0), &[(a, 32)], &[(a, 48)])
                .0
                .status,
            STATUS_NO_KEY
        );
    }
    let mut ks = hdr(OP_KEY_SET);
    ks.key_slot = 16;
    assert_eq!(g.call(0, &ks, &[(a, 32)], &[]).0.status, STATUS_NO_KEY);
    let mut kc = hdr(OP_KEY_CLEAR);
    kc.key_slot = u32::MAX;
    assert_eq!(g.call(0, &kc, &[], &[]).0.status, STATUS_NO_KEY);
    still_serves(&mut g);
    assert_eq!(d.stats()["status.no-key"], 6);
}

#[test]
fn descriptor_loop_and_indices_past_the_ring_are_survived() {
    let (d, mut g) = start(&[]);
    let h = g.alloc_with(&hdr(OP_NOP).to_le_bytes());
    // A two-descriptor loop: 0 -> 1 -> 0 -> ...
    let x = g.take_desc(0);
    let y = g.take_desc(0);
    g.write_desc(0, x, h, 64, 1, y);
    g.write_desc(0, y, h, 64, 1, x);
    g.push_avail(0, x);
    g.kick(0);
    let done = g.wait(0, 1);
    assert_eq!(done, vec![(x, 0)]);

    // A `next` pointing past the descriptor table.
    let z = g.take_desc(0);
    g.write_desc(0, z, h, 64, 1, 999);
    g.push_avail(0, z);
    g.kick(0);
    assert_eq!(g.wait(0, 1), vec![(z, 0)]);

    // An available-ring entry naming a head past the table: it cannot be
    // returned, but the next good request still completes.
    g.push_avail(0, 4000);
    g.kick(0);
    still_serves(&mut g);
    let s = d.stats();
    assert_eq!(s["no_status"], 3);
    assert_eq!(s["bad_head"], 1);
}

#[test]
fn random_descriptor_tables_are_survived() {
    let (d, mut g) = start(&[]);
    // Random bytes in a 1 MiB data area, which random indirect tables and
    // random status descriptors point into (never into the rings).
    let area = g.alloc(1 << 20);
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let mut rnd = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let noise: Vec<u8> = (0..1 << 20).map(|_| rnd() as u8).collect();
    g.write(area, &noise);
    let mut returned = 0;
    for _round in 0..20 {
        let ids: Vec<u16> = (0..g.queues[0].free_descs())
            .map(|_| g.take_desc(0))
            .collect();
        for &id in &ids {
            let r = rnd();
            let addr = match r % 4 {
                0 => u64::MAX - (r >> 56),
                1 => support::MEM_SIZE - (r >> 52) % 64,
                _ => area + (r >> 20) % (1 << 20),
            };
            let len = match (r >> 8) % 4 {
                0 => 16,
                1 => 64,
                2 => ((r >> 32) % 4096) as u32,
                _ => (r >> 32) as u32,
            };
            let flags = ((r >> 40) % 8) as u16; // NEXT | WRITE | INDIRECT
            let next = ((r >> 48) % 300) as u16; // sometimes past the ring
            g.write_desc(0, id, addr, len, flags, next);
        }
        let n = 40;
        for _ in 0..n {
            let head = ids[(rnd() % ids.len() as u64) as usize];
            g.push_avail(0, head);
        }
        g.kick(0);
        assert_eq!(g.wait(0, n).len(), n);
        returned += n;
        g.give_back(0, &ids);
        still_serves(&mut g);
    }
    let s = d.stats();
    let answered: u64 = s
        .iter()
        .filter(|(k, _)| k.starts_with("status."))
        .map(|(_, v)| v)
        .sum();
    assert_eq!(answered + s["no_status"], returned as u64 + 20);
}

// ---------------------------------------------------------------------------
// Socket, lifecycle and reconnection
// ---------------------------------------------------------------------------

#[test]
fn frontend_vanishing_mid_traffic_then_next_connection_is_served() {
    let d = Daemon::spawn(&["--queues", "2"]);
    {
        let mut g = Guest::connect(
            &d.path,
            GuestOpts {
                queues: 2,
                ..Default::default()
            },
        );
        let a = g.alloc(1 << 20);
        // Fill both rings with large requests and leave without waiting.
        for q in 0..2 {
            while g.queues[q].free_descs() >= 3 {
                g.submit(q, &hdr(OP_CRC32), &[(a, 1 << 20)], &[]);
            }
            g.kick(q);
        }
    } // frontend, memory and eventfds dropped here, mid-traffic
    d.wait_for_log("frontend connection ended", 0);
    d.wait_for_log("waiting for a vhost-user frontend", 1);
    let mut g = Guest::connect(
        &d.path,
        GuestOpts {
            queues: 2,
            ..Default::default()
        },
    );
    let c = g.alloc_with(b"123456789");
    for q in 0..2 {
        assert_eq!(
            ok(g.call(q, &hdr(OP_CRC32C), &[(c, 9)], &[]).0).result,
            0xE306_9283
        );
    }
    // Key slots do not survive the reconnection (a device reset).
    let st = g
        .call(
            0,
            &gcm_header(OP_AES_GCM_SEAL, 0, &[0; 12], 0),
            &[(c, 9)],
            &[(c, 25)],
        )
        .0;
    assert_eq!(st.status, STATUS_NO_KEY);
    drop(g);
    assert!(d.stop().success());
}

#[test]
fn once_exits_cleanly_when_the_frontend_leaves_and_removes_the_socket() {
    let mut d = Daemon::spawn(&["--once"]);
    // A liveness probe (connect and leave) does not end a --once daemon.
    drop(std::os::unix::net::UnixStream::connect(&d.path).unwrap());
    d.wait_for_log("connection closed without a vhost-user message", 0);
    let mut g = Guest::connect(&d.path, GuestOpts::default());
    still_serves(&mut g);
    drop(g);
    let st = d
        .wait_exit(Duration::from_secs(10))
        .expect("--once daemon kept running");
    assert!(st.success(), "{st:?}; log:\n{}", d.log());
    assert!(!d.path.exists(), "socket left behind");
    assert!(
        d.log().contains("op nop"),
        "exit stats missing:\n{}",
        d.log()
    );
}

#[test]
fn socket_is_private_live_one_refused_stale_one_replaced() {
    use std::os::unix::fs::PermissionsExt;
    let d = Daemon::spawn(&[]);
    let mode = std::fs::metadata(&d.path).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    // A second daemon on the live socket fails with one clear line.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_pktaccel-device"))
        .arg("--socket")
        .arg(&d.path)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("another pktaccel-device is serving"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    assert!(d.stop().success());

    // A stale socket (bound, nobody listening) is replaced.
    let dir = std::env::temp_dir().join(format!("pktaccel-stale-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("dev.sock");
    let _ = std::fs::remove_file(&path);
    drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
    let d2 = Daemon::spawn_at(&path, &[], dir);
    assert!(d2.log().contains("replacing stale socket"));
    let mut g = Guest::connect(&path, GuestOpts::default());
    still_serves(&mut g);
    drop(g);
    assert!(d2.stop().success());
}

#[test]
fn sigint_and_sigterm_shut_down_cleanly_with_stats() {
    for sig in [libc::SIGINT, libc::SIGTERM] {
        let mut d = Daemon::spawn(&[]);
        let mut g = Guest::connect(&d.path, GuestOpts::default());
        still_serves(&mut g);
        d.signal(sig);
        let st = d
            .wait_exit(Duration::from_secs(10))
            .expect("no exit on signal");
        assert!(st.success(), "{st:?}");
        let log = d.log();
        assert!(log.contains("shutting down"), "{log}");
        assert_eq!(support::parse_stats(&log)["op.nop.requests"], 1);
        assert!(!d.path.exists());
        drop(g);
    }
}

#[test]
fn bad_command_lines_fail_with_one_line() {
    for args in [
        &["--socket", "/tmp/x.sock", "--queues", "0"][..],
        &["--socket", "/tmp/x.sock", "--queue-size", "100"],
        &["--socket", "/tmp/x.sock", "--ops", "md5"],
        &["--socket", "/nonexistent-dir/x.sock"],
    ] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_pktaccel-device"))
            .args(args)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(err.trim().lines().count(), 1, "{args:?}: {err}");
        assert!(err.starts_with("pktaccel-device: error:"), "{err}");
    }
}
