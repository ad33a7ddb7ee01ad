//! Allocator behaviour through the process heap (the functions the
//! preloaded malloc ABI calls) and private pools. Bad frees: faults.rs.

use pktslab::class::{MAX_SMALL, SLAB_SIZE};
use pktslab::client::ioctl::errno;
use pktslab::global;
use pktslab::{BackendChoice, BackendMode, Config, Pool, V2pError};

fn host_cfg() -> Config {
    Config {
        backend: BackendChoice::Host,
        arena_size: 8 << 30,
        ..Default::default()
    }
}

#[test]
fn size_37_gets_a_64_byte_piece_and_realloc_in_class_keeps_the_pointer() {
    let p = global::malloc(37);
    assert!(!p.is_null());
    // SAFETY: p is a live allocation.
    unsafe {
        assert_eq!(global::usable_size(p), 64);
        p.write_bytes(0xab, 37);
        let q = global::realloc(p, 60);
        assert_eq!(q, p, "realloc within the 64-byte class must not move");
        let r = global::realloc(q, 65);
        assert_ne!(r, q, "65 bytes needs the 128-byte class");
        assert_eq!(global::usable_size(r), 128);
        assert!(std::slice::from_raw_parts(r, 37).iter().all(|&b| b == 0xab));
        global::free(r, "free");
    }
}

#[test]
fn every_size_is_16_aligned_and_usable_is_the_power_of_two() {
    let mut v = Vec::new();
    for s in [
        0usize,
        1,
        15,
        16,
        17,
        31,
        33,
        100,
        1000,
        4097,
        65_537,
        MAX_SMALL,
        MAX_SMALL + 1,
        5 << 20,
    ] {
        let p = global::malloc_pinned(s);
        assert!(!p.is_null(), "size {s}");
        assert_eq!(p as usize % 16, 0, "size {s}");
        // SAFETY: live allocation.
        let u = unsafe { global::usable_size(p) };
        assert!(u >= s.max(1));
        if s <= MAX_SMALL {
            assert!(
                u.is_power_of_two() && (u / 2 < s || u == 16),
                "size {s} usable {u}"
            );
        } else {
            // Large runs are page-granular (host memory).
            assert!(u % 4096 == 0 && u < s + 4096, "size {s} usable {u}");
        }
        // SAFETY: u bytes are usable.
        unsafe { p.write_bytes(0x5a, u) };
        v.push(p);
    }
    for p in v {
        // SAFETY: live allocations freed once.
        unsafe { global::free(p, "free") };
    }
}

#[test]
fn memalign_honours_alignments_from_32_bytes_to_8_mib() {
    for align in [32usize, 64, 4096, 65_536, 1 << 20, 2 << 20, 8 << 20] {
        for size in [1usize, 100, 5000, 3 << 20] {
            let p = global::memalign(align, size);
            assert!(!p.is_null());
            assert_eq!(p as usize % align, 0, "align {align} size {size}");
            // SAFETY: live allocation of at least `size` bytes.
            unsafe {
                p.write_bytes(1, size);
                global::free(p, "free");
            }
        }
    }
}

#[test]
fn calloc_zeroes_reused_memory() {
    let p = global::malloc(200);
    // SAFETY: live allocation.
    unsafe {
        p.write_bytes(0xff, 200);
        global::free(p, "free");
    }
    let q = global::calloc(25, 8);
    // SAFETY: 200 bytes live.
    let zq = unsafe { std::slice::from_raw_parts(q, 200) };
    assert!(zq.iter().all(|&b| b == 0));
    let big = global::malloc(3 << 20);
    // SAFETY: live allocation.
    unsafe {
        big.write_bytes(0xee, 3 << 20);
        global::free(big, "free");
    }
    let bz = global::calloc(3, 1 << 20);
    // SAFETY: 3 MiB live.
    let zb = unsafe { std::slice::from_raw_parts(bz, 3 << 20) };
    assert!(zb.iter().all(|&b| b == 0));
    // SAFETY: live allocations.
    unsafe {
        global::free(q, "free");
        global::free(bz, "free");
    }
}

#[test]
fn overflow_and_huge_sizes_give_null_and_enomem() {
    assert!(global::calloc(usize::MAX / 2, 3).is_null());
    assert_eq!(errno(), libc::ENOMEM);
    assert!(global::malloc(usize::MAX).is_null());
    assert_eq!(errno(), libc::ENOMEM);
    assert!(global::malloc(usize::MAX - 4096).is_null());
    assert_eq!(errno(), libc::ENOMEM);
    let p = global::malloc(10);
    // SAFETY: p is live; reallocarray overflow leaves it untouched.
    unsafe {
        assert!(global::reallocarray(p, usize::MAX, 2).is_null());
        assert_eq!(errno(), libc::ENOMEM);
        assert_eq!(global::usable_size(p), 16);
        global::free(p, "free");
    }
}

/// malloc() above PKTSLAB_PIN_MAX (128 KiB by default) is ordinary memory
/// from the next allocator; realloc moves data across the limit both ways.
#[test]
fn malloc_above_the_pin_limit_is_ordinary_and_realloc_crosses_it() {
    let limit = global::heap().unwrap().config().pin_max;
    let p = global::malloc(limit);
    assert!(pktslab::v2p(p).is_ok(), "at the limit: pinned");
    // SAFETY: live allocations, sizes within what was asked.
    unsafe {
        for i in 0..limit {
            *p.add(i) = (i % 253) as u8;
        }
        let q = global::realloc(p, limit + 1);
        assert_eq!(pktslab::v2p(q), Err(V2pError::NotPinned), "above: ordinary");
        assert!(global::usable_size(q) > limit);
        let r = global::realloc(q, 4 * limit);
        // Inside the block, to its last byte: still the heap's, not pinned.
        for at in [0, 1, 4 * limit - 1] {
            assert_eq!(pktslab::v2p(r.add(at)), Err(V2pError::NotPinned), "+{at}");
        }
        let s = global::realloc(r, 1000);
        assert!(pktslab::v2p(s).is_ok(), "back below: pinned again");
        for i in 0..1000 {
            assert_eq!(*s.add(i), (i % 253) as u8);
        }
        global::free(s, "free");
        let z = global::calloc(3, limit);
        assert_eq!(pktslab::v2p(z), Err(V2pError::NotPinned));
        assert!((0..3 * limit).all(|i| *z.add(i) == 0));
        global::free(z, "free");
    }
    // This test's own: the realloc across the limit and the calloc (the
    // realloc that stays above grows the same block). Other tests running
    // in parallel may add theirs.
    let s = global::stats().unwrap();
    assert!(s.ordinary_allocs >= 2, "counted: {s:?}");
}

/// A buffer doubling from 4 KiB to the pin limit moves once, into a grow
/// block (its first page copied), then grows in place: pinned to its last
/// byte, contents kept. A second buffer growing meanwhile gets room
/// of its own.
#[test]
fn realloc_doubling_to_the_pin_limit_moves_once_and_stays_pinned() {
    let pool = Pool::new(host_cfg()).unwrap();
    let limit = pool.heap().config().pin_max;
    let p = pool.alloc_raw(4096);
    // SAFETY: live blocks, written within their sizes.
    unsafe {
        p.write_bytes(0x5a, 4096);
        let g = pool.realloc_raw(p, 8192);
        assert_ne!(g, p, "a class piece cannot grow");
        g.add(4096).write_bytes(0x6b, 4096);
        let mut size = 8192;
        while size < limit {
            size *= 2;
            assert_eq!(pool.realloc_raw(g, size), g, "in place to {size}");
            assert_eq!(pool.usable_size(g), size);
        }
        assert!((0..4096).all(|i| *g.add(i) == 0x5a));
        assert!((4096..8192).all(|i| *g.add(i) == 0x6b));
        *g.add(size - 1) = 1;
        assert!(
            pool.v2p(g).is_ok() && pool.v2p(g.add(size - 1)).is_ok(),
            "pinned"
        );
        // PKTSLAB_STATS counts each growth as the class move it replaces.
        let st = pool.stats();
        let class = |n: usize| n.trailing_zeros() as usize - 4;
        let mut s = 8192;
        while s <= limit {
            assert_eq!(st.allocs[class(s)], 1, "class {s}: {st:?}");
            s *= 2;
        }
        assert_eq!(st.largest, limit as u64);
        let other = pool.realloc_raw(pool.alloc_raw(3000), 5000);
        assert_eq!(pool.realloc_raw(other, 16384), other, "room of its own");
        assert_eq!(pool.realloc_raw(g, 20_000), g, "a shrink stays");
        assert_eq!(pool.usable_size(g), 32768);
        let small = pool.realloc_raw(g, 100);
        assert_eq!(pool.usable_size(small), 128);
        assert_eq!(*small.add(99), 0x5a);
        pool.free_raw(small);
        pool.free_raw(other);
    }
    assert!(pool.trim() > 0, "the emptied grow slabs go back");
}

/// The process heap: a grown block crosses the pin limit into ordinary
/// memory with its contents, and frees there.
#[test]
fn a_grown_block_crosses_the_pin_limit() {
    let limit = global::heap().unwrap().config().pin_max;
    // SAFETY: live allocations, written within their sizes.
    unsafe {
        let p = global::malloc(4096);
        let g = global::realloc(p, limit);
        assert!(pktslab::v2p(g).is_ok());
        for i in 0..limit {
            *g.add(i) = (i % 241) as u8;
        }
        let q = global::realloc(g, 2 * limit);
        assert_eq!(pktslab::v2p(q), Err(V2pError::NotPinned));
        assert!((0..limit).all(|i| *q.add(i) == (i % 241) as u8));
        global::free(q, "free");
    }
}

#[test]
fn large_realloc_grows_in_place_and_keeps_contents() {
    let p = global::malloc_pinned(3 << 20);
    // SAFETY: live allocation; sizes within usable.
    unsafe {
        for i in 0..(3 << 20) {
            *p.add(i) = (i % 251) as u8;
        }
        let q = global::realloc_pinned(p, 9 << 20);
        assert!(!q.is_null());
        for i in (0..(3 << 20)).step_by(4093) {
            assert_eq!(*q.add(i), (i % 251) as u8);
        }
        let r = global::realloc_pinned(q, (2 << 20) + 1);
        assert_eq!(r, q, "shrinking a large run stays in place");
        assert_eq!(global::usable_size(r), 4 << 20);
        let s = global::realloc_pinned(r, 100);
        assert_eq!(global::usable_size(s), 128);
        assert_eq!(*s.add(99), 99);
        global::free(s, "free");
    }
}

#[test]
fn v2p_is_outside_for_foreign_pointers_and_exact_inside() {
    let p = global::malloc(5000);
    let pool = Pool::global().unwrap();
    let ph = pool.v2p(p).unwrap();
    // Contiguity never runs past the slab (a small piece's run); host pages
    // may happen to be physically adjacent, so it can exceed the piece.
    let to_slab_end = SLAB_SIZE - (p as usize & (SLAB_SIZE - 1));
    assert!(ph.contig >= 1 && ph.contig <= to_slab_end, "{ph:?}");
    let ph2 = pool.v2p(p.wrapping_add(100)).unwrap();
    if ph.contig > 100 {
        assert_eq!(ph2.addr, ph.addr + 100);
        assert_eq!(ph2.contig, ph.contig - 100);
    }
    let local = 5u64;
    assert_eq!(
        pool.v2p((&raw const local).cast()),
        Err(V2pError::OutsideArena)
    );
    assert_eq!(pktslab::v2p(std::ptr::null()), Err(V2pError::OutsideArena));
    let b = Box::new(1u8);
    assert_eq!(pktslab::v2p(&*b), Err(V2pError::OutsideArena));
    // SAFETY: live allocation.
    unsafe { global::free(p, "free") };
}

/// On the host as root, the pagemap mode reports the same physical address
/// as reading /proc/self/pagemap directly.
#[test]
fn host_mode_matches_pagemap_or_is_synthetic() {
    let pool = Pool::new(host_cfg()).unwrap();
    let buf = pool.alloc(3 * 4096).unwrap();
    let mode = pool.mode();
    assert!(
        matches!(mode, BackendMode::HostPagemap | BackendMode::HostSynthetic),
        "{mode:?}"
    );
    eprintln!("host backend mode: {}", mode.name());
    let ph = buf.phys().unwrap();
    if mode == BackendMode::HostPagemap {
        use std::os::unix::fs::FileExt;
        let f = std::fs::File::open("/proc/self/pagemap").unwrap();
        let va = buf.as_ptr() as usize;
        let mut e = [0u8; 8];
        f.read_exact_at(&mut e, (va / 4096 * 8) as u64).unwrap();
        let e = u64::from_le_bytes(e);
        let pfn = e & ((1 << 55) - 1);
        assert_eq!(ph.addr, (pfn << 12) + (va % 4096) as u64);
    }
    // The segments cover the buffer exactly, each within its contiguity.
    let segs: Vec<_> = buf.phys_segments().map(Result::unwrap).collect();
    assert_eq!(segs.iter().map(|s| s.1).sum::<usize>(), buf.len());
}

#[test]
fn synthetic_mode_splits_at_16k_chunks() {
    let pool = Pool::new(Config {
        force_synthetic: true,
        ..host_cfg()
    })
    .unwrap();
    assert_eq!(pool.mode(), BackendMode::HostSynthetic);
    let buf = pool.alloc(64 * 1024).unwrap();
    let segs: Vec<_> = buf.phys_segments().map(Result::unwrap).collect();
    assert_eq!(segs.len(), 4, "{segs:x?}");
    assert!(segs.iter().all(|s| s.1 == 16 * 1024));
    for w in segs.windows(2) {
        assert_ne!(w[0].0 + w[0].1 as u64, w[1].0, "chunks are discontiguous");
    }
    // Same address twice: consistent.
    assert_eq!(buf.phys().unwrap(), buf.phys().unwrap());
}

#[test]
fn out_of_pinned_memory_gives_null_and_enomem() {
    let pool = Pool::new(Config {
        max_pinned: 4 << 20,
        ..host_cfg()
    })
    .unwrap();
    let mut held = Vec::new();
    let mut failed = false;
    for _ in 0..10 {
        let p = pool.alloc_raw(1 << 20);
        if p.is_null() {
            assert_eq!(errno(), libc::ENOMEM);
            failed = true;
            break;
        }
        held.push(p);
    }
    assert!(failed, "a 4 MiB cap must run out");
    assert_eq!(held.len(), 4, "two 1 MiB pieces per slab, two slabs");
    assert!(pool.alloc_raw(3 << 20).is_null());
    assert_eq!(pool.stats().bytes_fallback, 0);
    for p in held {
        // SAFETY: from this pool, freed once.
        unsafe { pool.free_raw(p) };
    }
}

#[test]
fn realloc_without_memory_gives_null_and_keeps_the_block() {
    let pool = Pool::new(Config {
        max_pinned: 4 << 20,
        ..host_cfg()
    })
    .unwrap();
    let len = 3 << 20;
    let p = pool.alloc_raw(len);
    assert!(!p.is_null());
    // SAFETY: p has `len` bytes; realloc's NULL leaves it live.
    unsafe {
        for i in 0..len {
            *p.add(i) = (i % 251) as u8;
        }
        assert!(pool.realloc_raw(p, 12 << 20).is_null(), "past the cap");
        assert_eq!(errno(), libc::ENOMEM);
        for i in (0..len).step_by(997) {
            assert_eq!(*p.add(i), (i % 251) as u8, "byte {i} kept");
        }
        assert_eq!(pool.usable_size(p), len);
        pool.free_raw(p);
    }
}

#[test]
fn fallback_hands_out_unpinned_memory_and_counts_it() {
    let pool = Pool::new(Config {
        max_pinned: 2 << 20,
        fallback: true,
        ..host_cfg()
    })
    .unwrap();
    let a = pool.alloc(1 << 20).unwrap();
    let b = pool.alloc(1 << 20).unwrap();
    assert!(a.phys().is_ok() && b.phys().is_ok());
    let mut c = pool.alloc(5 << 20).unwrap();
    c[5 << 19] = 7;
    assert_eq!(c.phys(), Err(V2pError::NotPinned));
    let s = pool.stats();
    // Page-granular: the 5 MiB run maps exactly 5 MiB.
    assert_eq!(s.bytes_fallback, 5 << 20);
    assert_eq!(s.bytes_pinned, 2 << 20);
}

#[test]
fn missing_device_follows_the_fallback_rule() {
    let cfg = Config {
        backend: BackendChoice::Device,
        device_path: c"/nonexistent/pktaccel",
        ..host_cfg()
    };
    let strict = Pool::new(cfg).unwrap();
    assert_eq!(strict.mode(), BackendMode::Missing);
    assert!(strict.alloc_raw(100).is_null());
    assert_eq!(errno(), libc::ENOMEM);
    assert!(strict.alloc(100).is_err());
    let lenient = Pool::new(Config {
        fallback: true,
        ..cfg
    })
    .unwrap();
    let mut b = lenient.alloc(100).unwrap();
    b[99] = 1;
    assert_eq!(b.phys(), Err(V2pError::NotPinned));
    assert!(lenient.stats().bytes_fallback > 0);
}

#[test]
fn pinned_box_and_buffer_round_trip() {
    let pool = Pool::new(host_cfg()).unwrap();
    #[repr(align(4096))]
    struct Page([u8; 4096]);
    let mut bx = pool.boxed(Page([3; 4096])).unwrap();
    bx.0[4095] = 9;
    assert_eq!((&*bx as *const Page as usize) % 4096, 0);
    assert!(bx.phys().is_ok());
    let s = pool.stats();
    assert!(s.allocs.iter().sum::<u64>() >= 1);
    assert!(s.bytes_pinned >= 64 * 1024);
}

#[test]
fn freed_pieces_are_reused() {
    let pool = Pool::new(host_cfg()).unwrap();
    let p = pool.alloc_raw(48);
    // SAFETY: from this pool.
    unsafe { pool.free_raw(p) };
    let q = pool.alloc_raw(50);
    assert_eq!(p, q, "the shared list is LIFO");
    assert_eq!(pool.usable_size(q), 64);
}

/// The device backend's error paths, with a node that is not the driver
/// (/dev/null: opens, but every ioctl fails with ENOTTY).
#[test]
fn device_backend_ioctl_failures_follow_the_fallback_rule() {
    let cfg = Config {
        backend: BackendChoice::Device,
        device_path: c"/dev/null",
        ..host_cfg()
    };
    let strict = Pool::new(cfg).unwrap();
    assert_eq!(strict.mode(), BackendMode::Device);
    assert!(strict.device_fd().is_some());
    assert!(strict.alloc_raw(64).is_null());
    assert_eq!(errno(), libc::ENOMEM);
    let lenient = Pool::new(Config {
        fallback: true,
        ..cfg
    })
    .unwrap();
    let mut b = lenient.alloc(4096).unwrap();
    b[0] = 1;
    assert_eq!(b.phys(), Err(V2pError::NotPinned));
    // The client reaches the ioctl and reports its failure.
    let mut client = pktslab::Client::open(&lenient).unwrap();
    let mut reqs = [pktslab::Request::new(pktaccel_abi::OP_CSUM)
        .input(&b)
        .unwrap()];
    assert!(matches!(
        client.run(&mut reqs),
        Err(pktslab::ClientError::NotPinned { .. })
    ));
    client.allow_copy(true);
    assert_eq!(
        client.run(&mut reqs).err(),
        Some(pktslab::ClientError::Os(libc::ENOTTY))
    );
    assert_eq!(
        client.reap(4, 0).err(),
        Some(pktslab::ClientError::Os(libc::ENOTTY))
    );
}

#[test]
fn trim_returns_entirely_free_slabs_only() {
    let pool = Pool::new(Config {
        retain: 0,
        ..host_cfg()
    })
    .unwrap();
    // 64 KiB pieces in slabs that grow (at least two pieces each): 101 of
    // them fill some slabs and start one more.
    let ps: Vec<*mut u8> = (0..101).map(|_| pool.alloc_raw(60_000)).collect();
    assert!(ps.iter().all(|p| !p.is_null()));
    let arena = pool.heap().arena();
    let slot = |p: *mut u8| arena.slot_of(p as usize);
    let len = |p: *mut u8| arena.meta(slot(p)).mapped() as u64;
    let mut slots: Vec<usize> = ps.iter().map(|&p| slot(p)).collect();
    slots.dedup();
    let c = pktslab::class::class_of(60_000);
    let (mut need, mut carved) = (0u32, 0usize);
    while carved < 101 {
        carved += pktslab::slab::slab_len(c, need) / (64 << 10);
        need += 1;
    }
    assert!(carved > 101, "the last slab is still being carved");
    assert_eq!(slots.len(), need as usize, "{slots:?}");
    let first = pktslab::slab::slab_len(c, 0) as u64;
    let last = pktslab::slab::slab_len(c, need - 1) as u64;
    assert_eq!((len(ps[0]), len(ps[100])), (first, last));
    let all: u64 = slots.iter().map(|&s| arena.meta(s).mapped() as u64).sum();
    assert_eq!(pool.stats().bytes_pinned, all);
    // Keep one piece of the first slab alive: that slab must stay.
    for p in &ps[1..] {
        // SAFETY: live blocks of this pool, freed once.
        unsafe { pool.free_raw(*p) };
    }
    // Past the hysteresis mark the frees gave empty slabs back by themselves.
    assert!(pool.stats().bytes_pinned < all, "no automatic return");
    let released = pool.trim() as u64;
    // The middle slabs are entirely free; the first has a live piece, the
    // last is still being carved.
    let kept = len(ps[0]) + len(ps[100]);
    assert!(released < all - kept);
    assert_eq!(pool.stats().bytes_pinned, kept);
    // SAFETY: ps[0] is live.
    unsafe { ps[0].write_bytes(9, 60_000) };
    assert!(pool.v2p(ps[0]).is_ok());
    // Released slabs' addresses no longer translate; allocation goes on.
    assert_eq!(pool.v2p(ps[40]), Err(V2pError::NotMapped));
    let again: Vec<*mut u8> = (0..64).map(|_| pool.alloc_raw(60_000)).collect();
    for p in again.into_iter().chain([ps[0]]) {
        assert!(!p.is_null());
        // SAFETY: live blocks freed once.
        unsafe { pool.free_raw(p) };
    }
    assert_eq!(pool.trim() % (64 << 10), 0);
}

#[test]
fn trim_on_the_process_heap_flushes_this_threads_cache() {
    // 300 KiB requests -> 512 KiB class: two pieces per 1 MiB slab, unused
    // elsewhere.
    let c = pktslab::class::class_of(300 << 10);
    let ps: Vec<*mut u8> = (0..16).map(|_| global::malloc_pinned(300 << 10)).collect();
    for p in &ps {
        // SAFETY: live blocks freed once.
        unsafe { global::free(*p, "free") };
    }
    // The cache kept the last two (one slab); the shared list got the rest,
    // whose slabs the frees gave back by themselves.
    assert_eq!(global::cached_here(c), 2);
    let released = global::trim();
    assert_eq!(global::cached_here(c), 0);
    assert!(
        released >= pktslab::slab::slab_len(c, 0),
        "released {released}"
    );
    let p = global::malloc_pinned(300 << 10);
    assert!(!p.is_null());
    // SAFETY: live block.
    unsafe {
        p.write_bytes(1, 300 << 10);
        global::free(p, "free");
    }
}

/// What a forked child does in device mode (device slabs are MAP_SHARED):
/// every pinned slab becomes a private copy in place. Exercised here on
/// host slabs: contents survive, v2p reports "not pinned", allocation and
/// free go on.
#[test]
fn privatizing_slabs_keeps_contents_and_unpins_them() {
    let pool = Pool::new(host_cfg()).unwrap();
    let mut small = pool.alloc(1000).unwrap();
    let mut large = pool.alloc(3 << 20).unwrap();
    for (i, b) in small.iter_mut().enumerate() {
        *b = i as u8;
    }
    large[(3 << 20) - 1] = 0x77;
    assert!(small.phys().is_ok());
    let copied = pool.heap().arena().privatize_pinned();
    assert!(copied >= 3, "one small slab and a two-slab run: {copied}");
    assert!(small.iter().enumerate().all(|(i, &b)| b == i as u8));
    assert_eq!(large[(3 << 20) - 1], 0x77);
    assert_eq!(small.phys(), Err(V2pError::NotPinned));
    assert_eq!(large.phys(), Err(V2pError::NotPinned));
    assert!(pool.stats().bytes_fallback >= 3 << 20);
    let more = pool.alloc(5 << 20).unwrap();
    assert!(more.phys().is_ok(), "new slabs are pinned again");
    drop(large);
    drop(small);
}

/// What a forked child does to a grow slab in device mode (a private,
/// unpinned copy in place): the grown block keeps its bytes, is "not
/// pinned", still grows in place and frees (the slab then serves
/// ordinary memory, as a privatized class slab does).
#[test]
fn a_grown_block_survives_privatizing_and_keeps_growing() {
    let pool = Pool::new(host_cfg()).unwrap();
    // SAFETY: live blocks, written within their sizes.
    unsafe {
        let g = pool.realloc_raw(pool.alloc_raw(4096), 16384);
        for i in 0..16384 {
            *g.add(i) = (i % 239) as u8;
        }
        assert!(pool.v2p(g).is_ok());
        assert!(pool.heap().arena().privatize_pinned() >= 2);
        assert_eq!(pool.v2p(g), Err(V2pError::NotPinned));
        assert!((0..16384).all(|i| *g.add(i) == (i % 239) as u8));
        assert_eq!(pool.realloc_raw(g, 65536), g, "grows in place");
        *g.add(65535) = 1;
        assert_eq!(pool.v2p(g.add(65535)), Err(V2pError::NotPinned));
        pool.free_raw(g);
        let h = pool.realloc_raw(pool.alloc_raw(4096), 16384);
        assert!(!h.is_null());
        pool.free_raw(h);
    }
}
