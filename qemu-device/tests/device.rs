//! The real daemon on a real unix socket, driven through the vhost-user
//! frontend with real split rings in memfd guest memory: negotiation, config
//! space and every op. Bad input is in `bad_input.rs`, the socket and the
//! process lifecycle in `lifecycle.rs`.

mod support;

use pktaccel_abi::*;
use pktaccel_testvectors::soft;
use pktaccel_testvectors::vectors::{self, unhex};
use support::{
    Daemon, Guest, GuestOpts, RawDesc, base_features, gcm_header, hdr, ok, start, still_serves,
};

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

    let rfc = g.alloc_with(&vectors::RFC1071_DATA);
    // Scattered with an odd split: the checksum must not change.
    let st = g.call(0, &hdr(OP_CSUM), &[(rfc, 3), (rfc + 3, 5)], &[]).0;
    assert_eq!(ok(st).result, u64::from(vectors::RFC1071_CSUM));

    let check = g.alloc_with(vectors::CHECK_INPUT);
    let st = g
        .call(0, &hdr(OP_CRC32C), &[(check, 4), (check + 4, 5)], &[])
        .0;
    assert_eq!(ok(st).result, u64::from(vectors::CRC32C_CHECK));
    let st = g.call(0, &hdr(OP_CRC32), &[(check, 9)], &[]).0;
    assert_eq!(ok(st).result, u64::from(vectors::CRC32_CHECK));
    // Chaining through aux.
    let mut h = hdr(OP_CRC32C);
    let first = g.call(0, &h, &[(check, 5)], &[]).0.result;
    h.aux = first as u32;
    let st = g.call(0, &h, &[(check + 5, 4)], &[]).0;
    assert_eq!(st.result, u64::from(vectors::CRC32C_CHECK));

    // Microsoft's first RSS verification vector: 66.9.149.187:2794 -> 161.142.100.80:1766.
    let mut h = hdr(OP_RSS);
    h.params = soft::MS_RSS_KEY;
    let (src, dst, sp, dp, h_ip, h_tcp) = vectors::RSS_V4[0];
    let tuple = g.alloc_with(&[&src[..], &dst[..], &sp.to_be_bytes(), &dp.to_be_bytes()].concat());
    assert_eq!(
        ok(g.call(0, &h, &[(tuple, 12)], &[]).0).result,
        u64::from(h_tcp)
    );
    assert_eq!(
        ok(g.call(0, &h, &[(tuple, 8)], &[]).0).result,
        u64::from(h_ip)
    );
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

#[test]
fn gcm_seal_open_with_key_slots_matches_mcgrew_viega_case_16() {
    let (_d, mut g) = start(&[]);
    let case16 = vectors::GCM[2];
    assert_eq!(case16.name, "test case 16");
    let key = unhex(case16.key);
    let iv: [u8; 12] = unhex(case16.iv).try_into().unwrap();
    let aad = unhex(case16.aad);
    let pt = unhex(case16.pt);
    let ct = unhex(case16.ct);
    let tag = unhex(case16.tag);

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
    let expect = u64::from(soft::inet_csum(0, &[&data]));
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
    let data = g.alloc_with(vectors::CHECK_INPUT);
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
    let st = g.status_at(s);
    assert_eq!(
        (st.status, st.result),
        (STATUS_OK, u64::from(vectors::CRC32C_CHECK))
    );
    // A table whose length is not a multiple of 16 ends the chain at once.
    let bad = g.take_desc(0);
    g.write_desc(0, bad, table, 20, 4, 0);
    g.push_avail(0, bad);
    g.kick(0);
    assert_eq!(g.wait(0, 1), vec![(bad, 0)]);
    still_serves(&mut g, 0);
}

#[test]
fn no_interrupt_flag_suppresses_notifications() {
    let (_d, mut g) = start(&[]);
    still_serves(&mut g, 0);
    let _ = g.wait_call(0); // the first request's notification
    // With VRING_AVAIL_F_NO_INTERRUPT the device completes but does not signal.
    g.set_avail_flags(0, 1);
    still_serves(&mut g, 0);
    // Without it, it signals again. Both requests ran on the same worker, in
    // order, so a signal for the first would already be counted here.
    g.set_avail_flags(0, 0);
    still_serves(&mut g, 0);
    assert_eq!(
        g.wait_call(0),
        1,
        "a notification was sent despite NO_INTERRUPT"
    );
}
