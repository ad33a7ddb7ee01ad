//! pktaccel.ko through `/dev/pktaccel`, the happy paths: slabs, mmap,
//! zero-copy and copy submission, reap, poll, statistics. Bad input is in
//! `kmod_bad_input`, process and module lifecycle in `kmod_lifecycle`.
//! These run on the KASAN/lockdep kernel in `cargo xtask test-e2e`: a test
//! that leaves a splat in the kernel log fails the suite there.

use std::fs::File;
use std::path::Path;

use pktaccel_abi::*;

use super::kmod_helpers::*;
use crate::ensure;
use crate::harness::{Test, TestResult};
use crate::workload::{soft, vectors};

pub(super) fn tests() -> Vec<Test> {
    tests![
        "kmod":
        dev_node_and_debugfs,
        info_ioctl,
        slab_alloc_mmap_free,
        slab_sizes_and_modes,
        phys_address_is_right_crc32c,
        every_op_through_the_device,
        aes_gcm_seal_open_and_keys,
        copy_mode_counts_bytes_zero_copy_none,
        batch_of_many_requests,
        poll_reports_completions,
        uncached_slab_has_uc_memtype,
    ]
}

fn dev_node_and_debugfs() -> TestResult {
    ensure!(Path::new(DEV).exists(), "{DEV} does not exist");
    let s = debugfs_stats()?;
    ensure!(
        s.get("device").map(String::as_str) == Some("alive"),
        "debugfs says device {:?}",
        s.get("device")
    );
    let dmesg = std::process::Command::new("dmesg")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    ensure!(
        dmesg.contains("/dev/pktaccel ready"),
        "no probe line in the kernel log"
    );
    Ok(())
}

fn info_ioctl() -> TestResult {
    let dev = Dev::open()?;
    let i = dev.info()?;
    ensure!(i.config.magic == MAGIC, "magic {:#x}", i.config.magic);
    ensure!(
        i.config.abi_version == ABI_VERSION,
        "ABI {}",
        i.config.abi_version
    );
    ensure!(i.config.num_queues >= 1, "no queues");
    ensure!(i.queue_size >= 2, "queue size {}", i.queue_size);
    let all = (1u32 << OP_COUNT) - 1;
    ensure!(
        i.config.ops & all == all,
        "ops bitmap {:#x} lacks some of {all:#x}",
        i.config.ops
    );
    ensure!(
        i.max_pinned_per_file > 0 && i.max_pinned_total >= i.max_pinned_per_file,
        "caps {} / {}",
        i.max_pinned_per_file,
        i.max_pinned_total
    );
    ensure!(
        i.pinned_by_file == 0,
        "fresh file pins {}",
        i.pinned_by_file
    );
    Ok(())
}

fn slab_alloc_mmap_free() -> TestResult {
    let dev = Dev::open()?;
    let s = dev
        .alloc(0, CACHE_UNCACHED)
        .map_err(|e| format!("SLAB_ALLOC default: {}", errname(e)))?;
    ensure!(s.size == SLAB_DEFAULT_SIZE, "default size {}", s.size);
    ensure!(s.id != 0 && s.phys != 0, "id {} phys {:#x}", s.id, s.phys);
    ensure!(
        s.phys.is_multiple_of(s.size),
        "phys {:#x} not naturally aligned",
        s.phys
    );
    ensure!(
        s.mmap_offset.is_multiple_of(4096),
        "mmap offset {:#x}",
        s.mmap_offset
    );
    {
        let m = Map::of(&dev, &s)?;
        ensure!(m.read(0, 4096).iter().all(|&b| b == 0), "slab not zeroed");
        let p = pattern(8192, 7);
        m.write(s.size as usize - 8192, &p);
        ensure!(
            m.read(s.size as usize - 8192, 8192) == p,
            "read-back differs"
        );
        let st = dev.stats()?;
        ensure!(st.slabs == 1 && st.pinned == s.size, "stats {st:?}");
        let i = dev.info()?;
        ensure!(
            i.pinned_by_file == s.size,
            "info pinned {}",
            i.pinned_by_file
        );
        // A second mapping of the same slab sees the same bytes.
        let m2 = Map::of(&dev, &s)?;
        ensure!(
            m2.read(s.size as usize - 8192, 8192) == p,
            "second map differs"
        );
    }
    dev.free(s.id)
        .map_err(|e| format!("SLAB_FREE: {}", errname(e)))?;
    let st = dev.stats()?;
    ensure!(st.slabs == 0 && st.pinned == 0, "after free: {st:?}");
    Ok(())
}

fn slab_sizes_and_modes() -> TestResult {
    let dev = Dev::open()?;
    for caching in [CACHE_UNCACHED, CACHE_WRITE_COMBINING, CACHE_WRITE_BACK] {
        for size in [SLAB_MIN_SIZE, 128 * 1024, MIB, SLAB_MAX_SIZE] {
            let s = dev
                .alloc(size, caching)
                .map_err(|e| format!("SLAB_ALLOC {size} mode {caching}: {}", errname(e)))?;
            ensure!(s.size == size, "size {} for {size}", s.size);
            let m = Map::of(&dev, &s)?;
            m.write(0, b"pktaccel");
            ensure!(m.read(0, 8) == b"pktaccel", "mode {caching}: read-back");
            drop(m);
            dev.free(s.id)
                .map_err(|e| format!("SLAB_FREE: {}", errname(e)))?;
        }
    }
    Ok(())
}

fn phys_address_is_right_crc32c() -> TestResult {
    for caching in [CACHE_UNCACHED, CACHE_WRITE_COMBINING, CACHE_WRITE_BACK] {
        let sc = Scratch::new(SLAB_DEFAULT_SIZE, caching)?;
        let max = sc.dev.info()?.config.max_request_bytes as usize;
        let len = (sc.slab.size as usize).min(max);
        // The CPU writes through the mapping...
        let data = pattern(len, caching + 1);
        sc.map.write(0, &data);
        // ...and the device reads the slab by physical address, in pieces
        // that cross pages, so every page's address must be right.
        let pieces = 7;
        let step = len / pieces;
        let segs: Vec<IocSegment> = (0..pieces)
            .map(|i| {
                let end = if i == pieces - 1 { len } else { (i + 1) * step };
                seg_in(sc.phys(i * step), end - i * step)
            })
            .collect();
        let c = sc.dev.run(&req(OP_CRC32C, 0, &segs, 0xc0de), 0)?;
        expect_ok(&c, "crc32c")?;
        let want = soft::crc32c(0, &data);
        ensure!(
            c.result == u64::from(want),
            "mode {caching}: device CRC32C {:#x}, software {want:#x}",
            c.result
        );
    }
    Ok(())
}

fn every_op_through_the_device() -> TestResult {
    let sc = Scratch::new(SLAB_MIN_SIZE, CACHE_WRITE_BACK)?;
    let d = &sc.dev;
    // NOP
    expect_ok(&d.run(&req(OP_NOP, 0, &[], 1), 0)?, "nop")?;
    // CSUM over an odd length, split across segments.
    let data = pattern(1501, 3);
    sc.map.write(0, &data);
    let segs = [seg_in(sc.phys(0), 333), seg_in(sc.phys(333), 1501 - 333)];
    let c = d.run(&req(OP_CSUM, 0, &segs, 2), 0)?;
    expect_ok(&c, "csum")?;
    ensure!(
        c.result == u64::from(soft::inet_csum(0, &[&data])),
        "csum {:#x}, software {:#x}",
        c.result,
        soft::inet_csum(0, &[&data])
    );
    // CRC32C and CRC32 check values.
    sc.map.write(4096, vectors::CHECK_INPUT);
    let s9 = [seg_in(sc.phys(4096), vectors::CHECK_INPUT.len())];
    let c = d.run(&req(OP_CRC32C, 0, &s9, 3), 0)?;
    expect_ok(&c, "crc32c")?;
    ensure!(
        c.result == u64::from(vectors::CRC32C_CHECK),
        "crc32c(123456789) = {:#x}",
        c.result
    );
    ensure!(
        soft::crc32c(0, vectors::CHECK_INPUT) == vectors::CRC32C_CHECK,
        "software crc32c broken"
    );
    let c = d.run(&req(OP_CRC32, 0, &s9, 4), 0)?;
    expect_ok(&c, "crc32")?;
    ensure!(
        c.result == u64::from(vectors::CRC32_CHECK),
        "crc32(123456789) = {:#x}",
        c.result
    );
    ensure!(
        soft::crc32(0, vectors::CHECK_INPUT) == vectors::CRC32_CHECK,
        "software crc32 broken"
    );
    // RSS: Microsoft's IPv4/TCP vector 66.9.149.187:2794 -> 161.142.100.80:1766.
    let (src, dst, sport, dport, _, want) = vectors::RSS_V4[0];
    let mut tuple = [0u8; 12];
    tuple[..4].copy_from_slice(&src);
    tuple[4..8].copy_from_slice(&dst);
    tuple[8..10].copy_from_slice(&sport.to_be_bytes());
    tuple[10..].copy_from_slice(&dport.to_be_bytes());
    sc.map.write(8192, &tuple);
    let st = [seg_in(sc.phys(8192), tuple.len())];
    let mut r = req(OP_RSS, 0, &st, 5);
    r.header.params = soft::MS_RSS_KEY;
    let c = d.run(&r, 0)?;
    expect_ok(&c, "rss")?;
    ensure!(
        c.result == u64::from(want),
        "toeplitz {:#x}, expected {want:#x}",
        c.result
    );
    // COPY
    let src = pattern(5000, 9);
    sc.map.write(12288, &src);
    let cs = [seg_in(sc.phys(12288), 5000), seg_out(sc.phys(20480), 5000)];
    let c = d.run(&req(OP_COPY, 0, &cs, 6), 0)?;
    expect_ok(&c, "copy")?;
    ensure!(c.len == 5000, "copy wrote {}", c.len);
    ensure!(sc.map.read(20480, 5000) == src, "copy output differs");
    let st = d.stats()?;
    for op in [OP_NOP, OP_CSUM, OP_CRC32C, OP_CRC32, OP_RSS, OP_COPY] {
        ensure!(
            st.requests[usize::from(op)] >= 1,
            "file stats count no {} request",
            op_name(op)
        );
    }
    ensure!(
        st.bytes_copied == 0,
        "zero-copy counted {} bytes copied",
        st.bytes_copied
    );
    Ok(())
}

fn aes_gcm_seal_open_and_keys() -> TestResult {
    let sc = Scratch::new(SLAB_MIN_SIZE, CACHE_WRITE_BACK)?;
    let d = &sc.dev;
    let slot = 1u32;
    let key = pattern(32, 11);
    sc.map.write(0, &key);
    let ks = [seg_in(sc.phys(0), 32)];
    let mut r = req(OP_KEY_SET, 0, &ks, 1);
    r.header.key_slot = slot;
    expect_ok(&d.run(&r, 0)?, "key-set")?;

    let aad = b"header";
    let pt = pattern(1000, 12);
    let iv = [7u8; GCM_IV_LEN];
    sc.map.write(4096, aad);
    sc.map.write(4096 + aad.len(), &pt);
    let seal_segs = [
        seg_in(sc.phys(4096), aad.len() + pt.len()),
        seg_out(sc.phys(8192), pt.len() + GCM_TAG_LEN),
    ];
    let mut r = req(OP_AES_GCM_SEAL, aad.len() as u32, &seal_segs, 2);
    r.header.key_slot = slot;
    r.header.params[..GCM_IV_LEN].copy_from_slice(&iv);
    let c = d.run(&r, 0)?;
    expect_ok(&c, "seal")?;
    ensure!(
        c.len as usize == pt.len() + GCM_TAG_LEN,
        "seal wrote {}",
        c.len
    );
    let sealed = sc.map.read(8192, pt.len() + GCM_TAG_LEN);
    ensure!(sealed[..pt.len()] != pt[..], "ciphertext equals plaintext");

    // open(aad, ct, tag) gives the plaintext back.
    sc.map.write(16384, aad);
    sc.map.write(16384 + aad.len(), &sealed);
    let open_segs = [
        seg_in(sc.phys(16384), aad.len() + sealed.len()),
        seg_out(sc.phys(24576), pt.len()),
    ];
    let mut r = req(OP_AES_GCM_OPEN, aad.len() as u32, &open_segs, 3);
    r.header.key_slot = slot;
    r.header.params[..GCM_IV_LEN].copy_from_slice(&iv);
    let c = d.run(&r, 0)?;
    expect_ok(&c, "open")?;
    ensure!(
        sc.map.read(24576, pt.len()) == pt,
        "open did not restore the plaintext"
    );

    // A flipped tag bit fails authentication.
    let last = 16384 + aad.len() + sealed.len() - 1;
    sc.map.write(last, &[sealed[sealed.len() - 1] ^ 1]);
    r.header.cookie = 4;
    let c = d.run(&r, 0)?;
    ensure!(
        c.status == STATUS_AUTH_FAILED,
        "tampered open: status {}",
        status_name(c.status)
    );

    // Clear the key: the file no longer holds the slot, so a seal naming
    // it is refused before it reaches the device.
    let mut r = req(OP_KEY_CLEAR, 0, &[], 5);
    r.header.key_slot = slot;
    expect_ok(&d.run(&r, 0)?, "key-clear")?;
    let mut r = req(OP_AES_GCM_SEAL, aad.len() as u32, &seal_segs, 6);
    r.header.key_slot = slot;
    let (res, n) = d.submit(std::slice::from_ref(&r), 0);
    expect_err(res, libc::ENOKEY, "seal after clear")?;
    ensure!(n == 0, "seal after clear: {n} queued");
    Ok(())
}

fn copy_mode_counts_bytes_zero_copy_none() -> TestResult {
    let sc = Scratch::new(SLAB_MIN_SIZE, CACHE_WRITE_BACK)?;
    let d = &sc.dev;
    let dev_copied_before = debugfs_u64("bytes_copied")?;
    // Copy mode: ordinary heap buffers, by user virtual address.
    let src = pattern(10_000, 21);
    let mut dst = vec![0u8; 10_000];
    let segs = [
        seg_in(src.as_ptr() as u64, 6000),
        seg_in(src[6000..].as_ptr() as u64, 4000),
        seg_out(dst.as_mut_ptr() as u64, 10_000),
    ];
    let c = d.run(&req(OP_COPY, 0, &segs, 1), SUBMIT_COPY)?;
    expect_ok(&c, "copy-mode copy")?;
    ensure!(dst == src, "copy mode: output differs from input");
    let crc_segs = [seg_in(src.as_ptr() as u64, src.len())];
    let c = d.run(&req(OP_CRC32C, 0, &crc_segs, 2), SUBMIT_COPY)?;
    expect_ok(&c, "copy-mode crc32c")?;
    ensure!(
        c.result == u64::from(soft::crc32c(0, &src)),
        "copy-mode crc32c wrong"
    );
    let st = d.stats()?;
    let want = 10_000 + 10_000 + 10_000;
    ensure!(
        st.bytes_copied == want,
        "copy mode counted {} bytes copied, expected {want}",
        st.bytes_copied
    );
    ensure!(st.bytes_zero_copy == 0, "copy mode counted zero-copy bytes");
    // Zero-copy adds nothing to the copy counter.
    sc.map.write(0, &src);
    let zc = [seg_in(sc.phys(0), 10_000), seg_out(sc.phys(16384), 10_000)];
    let c = d.run(&req(OP_COPY, 0, &zc, 3), 0)?;
    expect_ok(&c, "zero-copy copy")?;
    ensure!(
        sc.map.read(16384, 10_000) == src,
        "zero-copy output differs"
    );
    let st2 = d.stats()?;
    ensure!(
        st2.bytes_copied == st.bytes_copied,
        "zero-copy request copied {} bytes",
        st2.bytes_copied - st.bytes_copied
    );
    ensure!(
        st2.bytes_zero_copy == 20_000,
        "zero-copy bytes {}",
        st2.bytes_zero_copy
    );
    ensure!(
        debugfs_u64("bytes_copied")? >= dev_copied_before + want,
        "debugfs bytes_copied did not grow"
    );
    // A copy-mode segment at an unmapped address is EFAULT at submit.
    let bad = [seg_in(0x10, 64)];
    let (r, n) = d.submit(&[req(OP_CRC32C, 0, &bad, 4)], SUBMIT_COPY);
    expect_err(r, libc::EFAULT, "copy mode from address 0x10")?;
    ensure!(n == 0, "submitted {n}");
    Ok(())
}

fn batch_of_many_requests() -> TestResult {
    let sc = Scratch::new(SLAB_MIN_SIZE, CACHE_WRITE_BACK)?;
    let d = &sc.dev;
    let data = pattern(4096, 5);
    sc.map.write(0, &data);
    let want = u64::from(soft::crc32c(0, &data));
    let segs = [seg_in(sc.phys(0), 4096)];
    let reqs: Vec<IocRequest> = (0..MAX_BATCH)
        .map(|i| req(OP_CRC32C, 0, &segs, 1000 + u64::from(i)))
        .collect();
    let mut total = 0usize;
    for round in 0..4 {
        // Blocking submit: waits for ring room instead of failing.
        let (r, n) = d.submit(&reqs, 0);
        r.map_err(|e| {
            format!(
                "round {round}: SUBMIT {} after {n}: {}",
                MAX_BATCH,
                errname(e)
            )
        })?;
        ensure!(n == MAX_BATCH, "round {round}: submitted {n}");
        let comps = d.reap_n(n as usize)?;
        let mut cookies: Vec<u64> = comps.iter().map(|c| c.cookie).collect();
        cookies.sort_unstable();
        ensure!(
            cookies == (1000..1000 + u64::from(MAX_BATCH)).collect::<Vec<_>>(),
            "round {round}: cookies do not match the batch"
        );
        for c in &comps {
            expect_ok(c, "batched crc32c")?;
            ensure!(c.result == want, "batched crc32c {:#x}", c.result);
        }
        total += comps.len();
    }
    // Non-blocking: either all queued or EAGAIN with a prefix; what was
    // queued completes.
    let (r, n) = d.submit(&reqs, SUBMIT_NONBLOCK);
    if let Err(e) = r {
        ensure!(e == libc::EAGAIN, "nonblocking submit: {}", errname(e));
        ensure!(
            d.stats()?.ring_full >= 1,
            "EAGAIN without a ring-full count"
        );
    }
    d.reap_n(n as usize)?;
    ensure!(total == 4 * MAX_BATCH as usize, "reaped {total}");
    Ok(())
}

fn poll_reports_completions() -> TestResult {
    let d = Dev::open()?;
    let (n, revents) = d.poll(libc::POLLIN, 0);
    ensure!(
        n == 0,
        "poll with nothing pending returned {n} ({revents:#x})"
    );
    let (r, _) = d.submit(&[req(OP_NOP, 0, &[], 42)], 0);
    r.map_err(|e| format!("SUBMIT: {}", errname(e)))?;
    let (n, revents) = d.poll(libc::POLLIN, 5000);
    ensure!(
        n == 1 && revents & libc::POLLIN != 0,
        "poll returned {n}, revents {revents:#x}"
    );
    let c = d.reap(4, 0).map_err(|e| format!("REAP: {}", errname(e)))?;
    ensure!(c.len() == 1 && c[0].cookie == 42, "reaped {c:?}");
    Ok(())
}

/// PG_arch_2 in /proc/kpageflags (KPF_ARCH_2, bit 41) is x86 PAT's UC-
/// marker for RAM pages, PG_arch_1 (KPF_ARCH, bit 38) its WC marker.
fn kpageflags(pfn: u64) -> Result<u64, String> {
    let f = File::open("/proc/kpageflags").map_err(|e| format!("/proc/kpageflags: {e}"))?;
    let mut b = [0u8; 8];
    std::os::unix::fs::FileExt::read_exact_at(&f, &mut b, pfn * 8)
        .map_err(|e| format!("/proc/kpageflags pfn {pfn:#x}: {e}"))?;
    Ok(u64::from_le_bytes(b))
}

fn uncached_slab_has_uc_memtype() -> TestResult {
    const KPF_ARCH: u64 = 1 << 38;
    const KPF_ARCH_2: u64 = 1 << 41;
    ensure!(
        Path::new("/sys/kernel/debug/x86/pat_memtype_list").exists(),
        "no /sys/kernel/debug/x86/pat_memtype_list: PAT is off in this kernel"
    );
    let dev = Dev::open()?;
    let mut slabs = Vec::new();
    for caching in [CACHE_UNCACHED, CACHE_WRITE_COMBINING, CACHE_WRITE_BACK] {
        let s = dev
            .alloc(SLAB_MIN_SIZE, caching)
            .map_err(|e| format!("SLAB_ALLOC: {}", errname(e)))?;
        let _m = Map::of(&dev, &s)?;
        let pages = s.size / 4096;
        for p in [0, pages / 2, pages - 1] {
            let f = kpageflags(s.phys / 4096 + p)?;
            let (uc, wc) = (
                f & KPF_ARCH_2 != 0 && f & KPF_ARCH == 0,
                f & KPF_ARCH != 0 && f & KPF_ARCH_2 == 0,
            );
            let ok = match caching {
                CACHE_UNCACHED => uc,
                CACHE_WRITE_COMBINING => wc,
                _ => f & (KPF_ARCH | KPF_ARCH_2) == 0,
            };
            ensure!(
                ok,
                "{} slab page {p}: kpageflags {f:#x} does not show that memtype",
                ["uncached", "write-combining", "write-back"][caching as usize]
            );
        }
        slabs.push(s);
    }
    // Freed slabs go back to write-back before the pages are released.
    let pfn = slabs[0].phys / 4096;
    for s in &slabs {
        dev.free(s.id)
            .map_err(|e| format!("SLAB_FREE: {}", errname(e)))?;
    }
    let f = kpageflags(pfn)?;
    ensure!(
        f & (KPF_ARCH | KPF_ARCH_2) == 0,
        "freed uncached slab still marked ({f:#x})"
    );
    Ok(())
}
