//! Bad input and faults against the real daemon: one test per line of the
//! device's contract. After each, the queue must still serve.

mod support;

use pktaccel_abi::*;
use support::{RawDesc, gcm_header, hdr, ok, start, still_serves};

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
    still_serves(&mut g, 0);
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
        let st = g.status_at(s);
        assert_eq!(st.status, STATUS_BAD_REQUEST, "{desc:?}");
    }
    // Only a status descriptor: no header at all.
    g.call_raw(0, &[RawDesc::w(s, 16)]);
    assert_eq!(g.status_at(s).status, STATUS_BAD_REQUEST);
    // Non-zero flags or reserved fields.
    let mut bad = hdr(OP_NOP);
    bad.flags = 1;
    assert_eq!(g.call(0, &bad, &[], &[]).0.status, STATUS_BAD_REQUEST);
    let mut bad = hdr(OP_NOP);
    bad.reserved = 1;
    assert_eq!(g.call(0, &bad, &[], &[]).0.status, STATUS_BAD_REQUEST);
    still_serves(&mut g, 0);
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
    still_serves(&mut g, 0);
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
    assert_eq!(g.status_at(s).status, STATUS_BAD_REQUEST);
    still_serves(&mut g, 0);
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
    still_serves(&mut g, 0);
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
    still_serves(&mut g, 0);
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
    assert_eq!(g.status_at(s).status, STATUS_BAD_ADDRESS);
    still_serves(&mut g, 0);
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
    still_serves(&mut g, 0);
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
    still_serves(&mut g, 0);
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
    still_serves(&mut g, 0);
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
    still_serves(&mut g, 0);
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
    still_serves(&mut g, 0);
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
        still_serves(&mut g, 0);
    }
    let s = d.stats();
    let answered: u64 = s
        .iter()
        .filter(|(k, _)| k.starts_with("status."))
        .map(|(_, v)| v)
        .sum();
    assert_eq!(answered + s["no_status"], returned as u64 + 20);
}
