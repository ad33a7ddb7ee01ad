//! Issue 9: guest tests for the bad-input classes no other test covered:
//! read-only and unmapped argument structs, segments in another process's
//! slab, ranges straddling adjacent slabs, slab mappings across fork and
//! mremap.

use std::time::Duration;

use pktaccel_abi::*;

use super::kmod_helpers::{
    Dev, Filler, Map, Page, Scratch, child_exit, errname, errno, expect_err, expect_ok,
    inaccessible_page, ioctl_raw, req, seg_in, seg_out, wait_child, wait_pinned_zero,
};
use crate::ensure;
use crate::harness::{Test, TestResult};

pub(super) fn tests() -> Vec<Test> {
    tests![
        "kmod":
        arg_structs_readonly_and_unmapped,
        segment_in_another_process_slab,
        segments_straddling_adjacent_slabs,
        slab_mapping_fork_and_mremap,
    ]
}

// ---------------------------------------------------------------------------
// Classes no test covered
// ---------------------------------------------------------------------------

/// Every ioctl that writes back, with its argument struct read-only and
/// unmapped: EFAULT, nothing allocated, nothing queued.
fn arg_structs_readonly_and_unmapped() -> TestResult {
    wait_pinned_zero()?;
    let d = Dev::open()?;
    let gone_page = inaccessible_page()?;
    let gone = gone_page.ptr as usize;
    let page = Page::new()?;
    let reqs = [req(OP_NOP, 0, &[], 1)];
    let mut comps = [IocCompletion::default(); 2];
    let comps_addr = comps.as_mut_ptr() as u64;
    let cases: [(&str, u32, Filler<'_>); 5] = [
        (
            "INFO",
            PKTACCEL_IOC_INFO,
            Box::new(|p| p.put(IocInfo::default()) as usize),
        ),
        (
            "SLAB_ALLOC",
            PKTACCEL_IOC_SLAB_ALLOC,
            Box::new(|p| {
                p.put(IocSlabAlloc {
                    size: SLAB_MIN_SIZE,
                    ..Default::default()
                }) as usize
            }),
        ),
        (
            "SUBMIT",
            PKTACCEL_IOC_SUBMIT,
            Box::new(|p| {
                p.put(IocSubmit {
                    reqs: reqs.as_ptr() as u64,
                    count: 1,
                    flags: 0,
                    submitted: 0,
                    reserved: 0,
                }) as usize
            }),
        ),
        (
            "REAP",
            PKTACCEL_IOC_REAP,
            Box::new(|p| {
                p.put(IocReap {
                    comps: comps_addr,
                    max: 2,
                    timeout_ms: 0,
                    count: 0,
                    reserved: 0,
                }) as usize
            }),
        ),
        (
            "STATS",
            PKTACCEL_IOC_STATS,
            Box::new(|p| p.put(IocStats::default()) as usize),
        ),
    ];
    for (name, cmd, fill) in &cases {
        expect_err(
            ioctl_raw(&d, *cmd, gone),
            libc::EFAULT,
            &format!("{name} with a PROT_NONE struct"),
        )?;
        // Page 0 is never mapped (mmap_min_addr).
        expect_err(
            ioctl_raw(&d, *cmd, 0x8),
            libc::EFAULT,
            &format!("{name} with an unmapped struct"),
        )?;
        page.protect(libc::PROT_READ | libc::PROT_WRITE)?;
        let p = fill(&page);
        page.protect(libc::PROT_READ)?;
        let r = ioctl_raw(&d, *cmd, p);
        // REAP with nothing in flight may say so first; both refuse.
        if *cmd == PKTACCEL_IOC_REAP && r == Err(libc::ENOENT) {
            continue;
        }
        expect_err(r, libc::EFAULT, &format!("{name} with a read-only struct"))?;
    }
    let s = d.stats()?;
    ensure!(
        s.slabs == 0 && s.pinned == 0,
        "a refused SLAB_ALLOC left {} slabs",
        s.slabs
    );
    expect_err(
        d.reap(1, 0).map(|_| ()),
        libc::ENOENT,
        "REAP after the refused SUBMITs",
    )?;
    Ok(())
}

/// A segment inside another process's slab is refused (EFAULT) and never
/// reaches the device.
fn segment_in_another_process_slab() -> TestResult {
    let mut fds = [0i32; 2];
    // SAFETY: `fds` has room for two descriptors.
    if unsafe { libc::pipe(fds.as_mut_ptr()) } != 0 {
        return Err(format!("pipe: {}", errname(errno())));
    }
    // SAFETY: single-threaded here; the child makes syscalls and `_exit`s.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        let Ok(d) = Dev::open() else { child_exit(2) };
        let Ok(s) = d.alloc(SLAB_MIN_SIZE, CACHE_WRITE_BACK) else {
            child_exit(3)
        };
        let b = s.phys.to_ne_bytes();
        // SAFETY: writing 8 bytes to the pipe.
        unsafe { libc::write(fds[1], b.as_ptr().cast(), 8) };
        std::thread::sleep(Duration::from_secs(30));
        child_exit(0);
    }
    let mut b = [0u8; 8];
    // SAFETY: reading 8 bytes from the pipe.
    let n = unsafe { libc::read(fds[0], b.as_mut_ptr().cast(), 8) };
    // SAFETY: closing our pipe ends.
    unsafe {
        libc::close(fds[0]);
        libc::close(fds[1])
    };
    let result = (|| -> TestResult {
        ensure!(n == 8, "child did not report its slab");
        let phys = u64::from_ne_bytes(b);
        let sc = Scratch::new(SLAB_MIN_SIZE, CACHE_WRITE_BACK)?;
        let before = sc.dev.stats()?.rejected;
        for segs in [
            vec![seg_in(phys, 64)],
            vec![seg_out(phys + 4096, 64)],
            vec![seg_in(sc.phys(0), 64), seg_out(phys, 64)],
        ] {
            let (r, n) = sc.dev.submit(&[req(OP_COPY, 0, &segs, 1)], 0);
            expect_err(r, libc::EFAULT, "segment in another process's slab")?;
            ensure!(n == 0, "queued");
        }
        ensure!(
            sc.dev.stats()?.rejected == before + 3,
            "rejects not counted"
        );
        Ok(())
    })();
    // SAFETY: ending our own child.
    unsafe { libc::kill(pid, libc::SIGKILL) };
    wait_child(pid);
    result
}

/// Ranges that straddle two physically adjacent slabs — both this file's,
/// or one of another file — are refused: a segment must lie inside one
/// slab. Adjacent slabs are found by allocating pairs until the buddy
/// allocator hands out neighbours (it splits one block for two requests).
fn segments_straddling_adjacent_slabs() -> TestResult {
    let a = Dev::open()?;
    let b = Dev::open()?;
    let (mut own, mut foreign) = (None, None);
    let mut mine = Vec::new();
    let mut theirs = Vec::new();
    for _ in 0..32 {
        let x = a
            .alloc(SLAB_MIN_SIZE, CACHE_WRITE_BACK)
            .map_err(|e| format!("alloc: {}", errname(e)))?;
        let y = b
            .alloc(SLAB_MIN_SIZE, CACHE_WRITE_BACK)
            .map_err(|e| format!("alloc: {}", errname(e)))?;
        let z = a
            .alloc(SLAB_MIN_SIZE, CACHE_WRITE_BACK)
            .map_err(|e| format!("alloc: {}", errname(e)))?;
        mine.push(x.phys);
        mine.push(z.phys);
        theirs.push(y.phys);
        for &p in &mine {
            if mine.contains(&(p + SLAB_MIN_SIZE)) {
                own.get_or_insert(p + SLAB_MIN_SIZE);
            }
            if theirs.contains(&(p + SLAB_MIN_SIZE)) {
                foreign.get_or_insert(p + SLAB_MIN_SIZE);
            }
        }
        if own.is_some() && foreign.is_some() {
            break;
        }
    }
    let own = own.ok_or("no two of this file's slabs were adjacent in 64 allocations")?;
    let foreign =
        foreign.ok_or("no slab of this file was followed by another file's in 32 tries")?;
    for (what, boundary) in [("own", own), ("foreign", foreign)] {
        let segs = [seg_in(boundary - 2048, 4096)];
        let (r, n) = a.submit(&[req(OP_CRC32C, 0, &segs, 1)], 0);
        expect_err(
            r,
            libc::EFAULT,
            &format!("segment straddling two adjacent slabs ({what})"),
        )?;
        ensure!(n == 0, "queued");
    }
    // Each half alone is fine.
    let segs = [seg_in(own - 2048, 2048), seg_in(own, 2048)];
    expect_ok(
        &a.run(&req(OP_CRC32C, 0, &segs, 2), 0)?,
        "two segments, one per slab",
    )?;
    Ok(())
}

/// A slab mapping is not inherited by fork (VM_DONTCOPY), cannot grow by
/// mremap (VM_DONTEXPAND), and a moved mapping still maps the slab.
fn slab_mapping_fork_and_mremap() -> TestResult {
    let sc = Scratch::new(SLAB_MIN_SIZE, CACHE_WRITE_BACK)?;
    sc.map.write(0, b"slab");
    let addr = sc.map.ptr as usize;
    // SAFETY: single-threaded here; the child only calls mincore and exits.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        let mut v = [0u8; 1];
        // SAFETY: mincore on an address the child should not have mapped.
        let r = unsafe { libc::mincore(addr as *mut _, 4096, v.as_mut_ptr()) };
        child_exit(if r != 0 && errno() == libc::ENOMEM {
            0
        } else {
            1
        });
    }
    let mut st = 0;
    // SAFETY: reaping our own child.
    unsafe { libc::waitpid(pid, &mut st, 0) };
    ensure!(
        libc::WEXITSTATUS(st) == 0,
        "the child inherited the slab mapping"
    );
    // Growing in place or by moving: refused.
    // SAFETY: mremap of our own mapping; checked.
    let grown = unsafe { libc::mremap(sc.map.ptr.cast(), 65536, 131072, libc::MREMAP_MAYMOVE) };
    ensure!(grown == libc::MAP_FAILED, "mremap grew a slab mapping");
    // Moving a whole mapping keeps the slab behind it.
    let m2 = Map::new(&sc.dev, sc.slab.mmap_offset, 65536)
        .map_err(|e| format!("mmap: {}", errname(e)))?;
    // SAFETY: reserve a fresh 64 KiB region as the move target.
    let dst = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            65536,
            libc::PROT_NONE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    ensure!(dst != libc::MAP_FAILED, "mmap target");
    // SAFETY: moving our second mapping onto the reserved region.
    let moved = unsafe {
        libc::mremap(
            m2.ptr.cast(),
            65536,
            65536,
            libc::MREMAP_MAYMOVE | libc::MREMAP_FIXED,
            dst,
        )
    };
    ensure!(
        moved != libc::MAP_FAILED,
        "mremap move: {}",
        errname(errno())
    );
    // SAFETY: reading the moved mapping (64 KiB).
    let b = unsafe { std::slice::from_raw_parts(moved.cast::<u8>(), 4) };
    ensure!(b == b"slab", "the moved mapping does not show the slab");
    std::mem::forget(m2);
    // SAFETY: unmapping the moved mapping.
    unsafe { libc::munmap(moved, 65536) };
    drop(sc);
    wait_pinned_zero()
}
