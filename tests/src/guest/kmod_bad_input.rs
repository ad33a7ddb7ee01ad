//! pktaccel.ko through `/dev/pktaccel`, every bad-input case of issue 4:
//! bad ioctl numbers and arguments, foreign and unmapped memory, the
//! pinned-memory caps. Each must fail with the right errno and leave the
//! driver working (the KASAN kernel fails the suite on any splat).

use std::os::fd::AsRawFd;

use pktaccel_abi::*;

use super::kmod_helpers::*;
use crate::ensure;
use crate::harness::{Test, TestResult};

pub(super) fn tests() -> Vec<Test> {
    tests![
        "kmod":
        bad_ioctl_numbers,
        bad_submit_arguments,
        bad_slab_arguments,
        bad_free_twice_and_foreign,
        bad_mmap,
        segments_outside_own_slabs_efault,
        reap_with_nothing_in_flight,
        pinned_memory_caps,
    ]
}

fn bad_ioctl_numbers() -> TestResult {
    let d = Dev::open()?;
    let mut buf = [0u64; 64];
    let unknown = ioc(3, IOC_TYPE, 0x7f, 8);
    expect_err(d.ioctl(unknown, &mut buf), libc::ENOTTY, "unknown ioctl")?;
    // The right number with the wrong size is a different command.
    let wrong_size = ioc(3, IOC_TYPE, 0x41, 40);
    expect_err(
        d.ioctl(wrong_size, &mut buf),
        libc::ENOTTY,
        "SLAB_ALLOC with size 40",
    )?;
    let other_type = ioc(2, b'Q', 0x40, core::mem::size_of::<IocInfo>());
    expect_err(
        d.ioctl(other_type, &mut buf),
        libc::ENOTTY,
        "INFO with type 'Q'",
    )?;
    // Bad user pointers are EFAULT.
    // SAFETY: the kernel must reject the pointer without touching memory.
    let r = unsafe {
        libc::ioctl(
            d.f.as_raw_fd(),
            libc::c_ulong::from(PKTACCEL_IOC_INFO),
            8usize,
        )
    };
    ensure!(
        r < 0 && errno() == libc::EFAULT,
        "INFO to address 8: {r} {}",
        errname(errno())
    );
    d.info()?;
    Ok(())
}

fn bad_submit_arguments() -> TestResult {
    let sc = Scratch::new(SLAB_MIN_SIZE, CACHE_WRITE_BACK)?;
    let d = &sc.dev;
    let rejected0 = d.stats()?.rejected;
    let good = [seg_in(sc.phys(0), 64)];
    let ok = req(OP_CRC32C, 0, &good, 1);
    bad_submit_struct(d, &ok)?;
    bad_request_fields(&sc, ok)?;

    // A bad request in the middle of a batch: the prefix is queued.
    // A named array: `req` keeps only the address of its segments.
    let zero_len = [seg_in(sc.phys(0), 0)];
    let bad = req(OP_CRC32C, 0, &zero_len, 8);
    let (res, n) = d.submit(&[ok, ok, bad, ok], 0);
    expect_err(res, libc::EINVAL, "batch with a bad third request")?;
    ensure!(n == 2, "batch prefix: submitted {n}, expected 2");
    let comps = d.reap_n(2)?;
    for c in &comps {
        expect_ok(c, "prefix request")?;
    }
    ensure!(d.stats()?.rejected > rejected0, "rejections not counted");
    Ok(())
}

/// Batch counts, flags, the reserved field and the request array pointer of
/// IocSubmit itself.
fn bad_submit_struct(d: &Dev, ok: &IocRequest) -> TestResult {
    let mut s = IocSubmit {
        reqs: std::ptr::from_ref(ok) as u64,
        count: 0,
        flags: 0,
        submitted: 0,
        reserved: 0,
    };
    expect_err(
        d.ioctl(PKTACCEL_IOC_SUBMIT, &mut s),
        libc::EINVAL,
        "count 0",
    )?;
    s.count = MAX_BATCH + 1;
    expect_err(
        d.ioctl(PKTACCEL_IOC_SUBMIT, &mut s),
        libc::EINVAL,
        "count MAX_BATCH+1",
    )?;
    s.count = 1;
    s.flags = 1 << 7;
    expect_err(
        d.ioctl(PKTACCEL_IOC_SUBMIT, &mut s),
        libc::EINVAL,
        "unknown flag",
    )?;
    s.flags = 0;
    s.reserved = 1;
    expect_err(
        d.ioctl(PKTACCEL_IOC_SUBMIT, &mut s),
        libc::EINVAL,
        "reserved != 0",
    )?;
    s.reserved = 0;
    s.reqs = 0x10;
    expect_err(
        d.ioctl(PKTACCEL_IOC_SUBMIT, &mut s),
        libc::EFAULT,
        "requests at 0x10",
    )?;
    Ok(())
}

/// One request submitted alone must be refused with `want`, nothing queued.
fn refused_alone(d: &Dev, r: IocRequest, want: i32, what: &str) -> TestResult {
    let (res, n) = d.submit(&[r], 0);
    expect_err(res, want, what)?;
    ensure!(n == 0, "{what}: submitted {n}");
    Ok(())
}

/// Each field of one request out of range in turn (`ok` is a good one on
/// `sc`'s slab).
fn bad_request_fields(sc: &Scratch, ok: IocRequest) -> TestResult {
    let d = &sc.dev;
    let info = d.info()?;
    let mut r = ok;
    r.header.op = 16;
    refused_alone(d, r, libc::EINVAL, "op 16")?;
    let mut r = ok;
    r.header.flags = 1;
    refused_alone(d, r, libc::EINVAL, "header flags")?;
    let mut r = ok;
    r.queue = info.config.num_queues + 5;
    refused_alone(d, r, libc::EINVAL, "queue out of range")?;
    let many: Vec<IocSegment> = (0..=info.config.max_segments.min(64) as usize)
        .map(|i| seg_in(sc.phys(i * 64), 64))
        .collect();
    refused_alone(
        d,
        req(OP_CRC32C, 0, &many, 2),
        libc::E2BIG,
        "too many segments",
    )?;
    refused_alone(
        d,
        req(OP_CRC32C, 0, &[seg_in(sc.phys(0), 0)], 3),
        libc::EINVAL,
        "zero-length segment",
    )?;
    refused_alone(
        d,
        req(OP_CRC32C, 0, &[seg_in(u64::MAX - 10, 64)], 4),
        libc::EINVAL,
        "address + length overflows",
    )?;
    let bad_dir = [IocSegment {
        addr: sc.phys(0),
        len: 64,
        dir: 9,
    }];
    refused_alone(
        d,
        req(OP_CRC32C, 0, &bad_dir, 5),
        libc::EINVAL,
        "direction 9",
    )?;
    let order = [seg_out(sc.phys(0), 64), seg_in(sc.phys(64), 64)];
    refused_alone(
        d,
        req(OP_COPY, 0, &order, 6),
        libc::EINVAL,
        "input after output",
    )?;
    let big = (info.config.max_request_bytes as usize) + 4096;
    let sc2 = Scratch::new(SLAB_MAX_SIZE, CACHE_WRITE_BACK)?;
    let too_big = [seg_in(sc2.phys(0), big)];
    let (res, _) = sc2.dev.submit(&[req(OP_CRC32C, 0, &too_big, 7)], 0);
    expect_err(res, libc::E2BIG, "more than max_request_bytes")?;
    let mut r = ok;
    r.segs = 0x20;
    refused_alone(d, r, libc::EFAULT, "segments at 0x20")?;

    Ok(())
}

fn bad_slab_arguments() -> TestResult {
    let d = Dev::open()?;
    for (size, what) in [
        (32 * 1024, "32 KiB (below minimum)"),
        (8 * MIB, "8 MiB (above maximum)"),
        (3 * 64 * 1024, "192 KiB (not a power of two)"),
        (100, "100 bytes"),
        (MIB + 4096, "1 MiB + 4 KiB"),
        (u64::MAX, "u64::MAX"),
    ] {
        expect_err(d.alloc(size, CACHE_UNCACHED), libc::EINVAL, what)?;
    }
    expect_err(d.alloc(0, 3), libc::EINVAL, "caching mode 3")?;
    let st = d.stats()?;
    ensure!(
        st.slabs == 0 && st.pinned == 0,
        "failed allocations left {st:?}"
    );
    // SLAB_FREE with a non-zero reserved field.
    let mut f = IocSlabFree { id: 1, reserved: 1 };
    expect_err(
        d.ioctl(PKTACCEL_IOC_SLAB_FREE, &mut f),
        libc::EINVAL,
        "free reserved != 0",
    )?;
    Ok(())
}

fn bad_free_twice_and_foreign() -> TestResult {
    let a = Dev::open()?;
    let b = Dev::open()?;
    let s = a
        .alloc(SLAB_MIN_SIZE, CACHE_UNCACHED)
        .map_err(|e| format!("SLAB_ALLOC: {}", errname(e)))?;
    expect_err(b.free(s.id), libc::ENOENT, "free another file's slab")?;
    a.free(s.id)
        .map_err(|e| format!("SLAB_FREE: {}", errname(e)))?;
    expect_err(a.free(s.id), libc::ENOENT, "free twice")?;
    expect_err(a.free(12345), libc::ENOENT, "free unknown id")?;
    ensure!(a.stats()?.slabs == 0, "slab left after free");
    Ok(())
}

fn bad_mmap() -> TestResult {
    let d = Dev::open()?;
    let s = d
        .alloc(SLAB_MIN_SIZE, CACHE_UNCACHED)
        .map_err(|e| format!("SLAB_ALLOC: {}", errname(e)))?;
    let len = s.size as usize;
    expect_err(
        Map::new(&d, s.mmap_offset + 4096, len - 4096),
        libc::EINVAL,
        "mmap at offset+4K",
    )?;
    expect_err(Map::new(&d, 0, len), libc::EINVAL, "mmap at offset 0")?;
    expect_err(
        Map::new(&d, s.mmap_offset, len + 4096),
        libc::EINVAL,
        "mmap beyond the slab",
    )?;
    // Freeing while mapped is allowed; the pages live until munmap.
    let m = Map::of(&d, &s)?;
    m.write(0, b"still here");
    d.free(s.id)
        .map_err(|e| format!("SLAB_FREE while mapped: {}", errname(e)))?;
    ensure!(m.read(0, 10) == b"still here", "mapping changed after free");
    expect_err(
        Map::new(&d, s.mmap_offset, len),
        libc::EINVAL,
        "mmap after free",
    )?;
    drop(m);
    // The parked slab is released by the next slab operation.
    let t = d
        .alloc(SLAB_MIN_SIZE, CACHE_UNCACHED)
        .map_err(|e| format!("SLAB_ALLOC: {}", errname(e)))?;
    let st = d.stats()?;
    ensure!(
        st.slabs == 1 && st.pinned == t.size,
        "after munmap + alloc: {st:?}"
    );
    Ok(())
}

fn segments_outside_own_slabs_efault() -> TestResult {
    let a = Scratch::new(SLAB_MIN_SIZE, CACHE_WRITE_BACK)?;
    let b = Scratch::new(SLAB_MIN_SIZE, CACHE_WRITE_BACK)?;
    let freed = a
        .dev
        .alloc(SLAB_MIN_SIZE, CACHE_WRITE_BACK)
        .map_err(|e| format!("SLAB_ALLOC: {}", errname(e)))?;
    a.dev
        .free(freed.id)
        .map_err(|e| format!("SLAB_FREE: {}", errname(e)))?;
    let before = device_requests()?;
    let size = a.slab.size as usize;
    let cases: [(&str, IocSegment); 6] = [
        ("another file's slab", seg_in(b.phys(0), 64)),
        ("another file's slab (output)", seg_out(b.phys(0), 64)),
        ("a freed slab", seg_in(freed.phys, 64)),
        ("physical page 1", seg_in(0x1000, 64)),
        ("past the slab's end", seg_in(a.phys(size - 32), 64)),
        ("just below the slab", seg_in(a.phys(0) - 64, 64)),
    ];
    for (what, s) in cases {
        let segs = [seg_in(a.phys(0), 64), s];
        let (r, n) = a.dev.submit(&[req(OP_CRC32C, 0, &segs, 9)], 0);
        expect_err(r, libc::EFAULT, what)?;
        ensure!(n == 0, "{what}: submitted {n}");
    }
    ensure!(
        device_requests()? == before,
        "rejected requests reached the device"
    );
    ensure!(a.dev.stats()?.rejected >= 6, "rejections not counted");
    // The slab's last byte is fine.
    let ok = [seg_in(a.phys(size - 1), 1)];
    expect_ok(&a.dev.run(&req(OP_CRC32C, 0, &ok, 10), 0)?, "last byte")?;
    Ok(())
}

fn reap_with_nothing_in_flight() -> TestResult {
    let d = Dev::open()?;
    expect_err(
        d.reap(4, 0),
        libc::ENOENT,
        "reap, nothing in flight, no wait",
    )?;
    expect_err(
        d.reap(4, 100),
        libc::ENOENT,
        "reap, nothing in flight, 100 ms",
    )?;
    expect_err(
        d.reap(4, -1),
        libc::ENOENT,
        "reap, nothing in flight, forever",
    )?;
    expect_err(d.reap(0, 0), libc::EINVAL, "reap max 0")?;
    expect_err(
        d.reap(MAX_BATCH + 1, 0),
        libc::EINVAL,
        "reap max MAX_BATCH+1",
    )?;
    let mut r = IocReap {
        comps: 0x30,
        max: 1,
        timeout_ms: 1000,
        count: 0,
        reserved: 0,
    };
    let (res, _) = d.submit(&[req(OP_NOP, 0, &[], 1)], 0);
    res.map_err(|e| format!("SUBMIT: {}", errname(e)))?;
    expect_err(
        d.ioctl(PKTACCEL_IOC_REAP, &mut r),
        libc::EFAULT,
        "reap into address 0x30",
    )?;
    Ok(())
}

fn pinned_memory_caps() -> TestResult {
    let d = Dev::open()?;
    let info = d.info()?;
    let cap = info.max_pinned_per_file;
    ensure!(
        cap.is_multiple_of(SLAB_MAX_SIZE),
        "per-file cap {cap} not a slab multiple"
    );
    let n = cap / SLAB_MAX_SIZE;
    ensure!(
        info.max_pinned_total > info.pinned_total + cap,
        "total cap too small to test the per-file cap"
    );
    let mut ids = Vec::new();
    for i in 0..n {
        let s = d
            .alloc(SLAB_MAX_SIZE, CACHE_WRITE_BACK)
            .map_err(|e| format!("slab {i} of {n}: {}", errname(e)))?;
        ids.push(s.id);
    }
    expect_err(
        d.alloc(SLAB_MIN_SIZE, CACHE_WRITE_BACK),
        libc::ENOMEM,
        "over the per-file cap",
    )?;
    ensure!(d.stats()?.pinned == cap, "pinned {}", d.stats()?.pinned);
    d.free(ids[0])
        .map_err(|e| format!("SLAB_FREE: {}", errname(e)))?;
    d.alloc(SLAB_MIN_SIZE, CACHE_WRITE_BACK)
        .map_err(|e| format!("alloc after free under the cap: {}", errname(e)))?;
    drop(d);
    wait_pinned_zero()
}
