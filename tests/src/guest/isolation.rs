//! Issue 9: isolation in the driver. One guest test per numbered defect
//! (each doc comment says why it fails on the driver before the fix). The
//! bad-input classes no other test covered are in `isolation_classes`, the
//! driver going away under open files (defect 7) in `isolation_unbind`.

use std::os::fd::AsRawFd;
use std::time::Duration;

use pktaccel_abi::*;

use super::kmod_helpers::{
    Dev, Page, Scratch, child_exit, debugfs_u64, dmesg_count, errname, errno, expect_err,
    expect_ok, ioctl_on_readonly_page, req, seg_in, seg_out, wait_pinned_zero,
};
use crate::ensure;
use crate::harness::{Test, TestResult};

pub(super) fn tests() -> Vec<Test> {
    tests![
        "kmod":
        key_slots_are_per_file,
        key_slots_run_out_and_come_back,
        copy_bounce_memory_is_capped_and_counted,
        private_writable_mapping_refused,
        readonly_submit_struct_queues_nothing,
        readonly_reap_struct_loses_nothing,
        rejected_requests_rate_limited_and_counted,
        copy_outputs_reaped_only_by_submitter,
        copy_submit_without_segments,
    ]
}

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

fn key_set(sc: &Scratch, slot: u32, key: &[u8; 32], cookie: u64) -> TestResult {
    sc.map.write(0, key);
    let ks = [seg_in(sc.phys(0), 32)];
    let mut r = req(OP_KEY_SET, 0, &ks, cookie);
    r.header.key_slot = slot;
    expect_ok(&sc.dev.run(&r, 0)?, "key-set")
}

/// A GCM request on `sc` (input at 4096, output at 8192) naming `slot`.
fn gcm(sc: &Scratch, op: u16, slot: u32, input: &[u8], out_len: usize, cookie: u64) -> IocRequest {
    sc.map.write(4096, input);
    // Leaked so the request's segment pointer stays valid; tests are short.
    let segs: &'static [IocSegment] = Box::leak(Box::new([
        seg_in(sc.phys(4096), input.len()),
        seg_out(sc.phys(8192), out_len),
    ]));
    let mut r = req(op, 0, segs, cookie);
    r.header.key_slot = slot;
    r.header.params[..GCM_IV_LEN].copy_from_slice(&[9u8; GCM_IV_LEN]);
    r
}

fn seal(sc: &Scratch, slot: u32, pt: &[u8]) -> Result<Result<Vec<u8>, i32>, String> {
    let r = gcm(sc, OP_AES_GCM_SEAL, slot, pt, pt.len() + GCM_TAG_LEN, 10);
    let (res, _) = sc.dev.submit(std::slice::from_ref(&r), 0);
    if let Err(e) = res {
        return Ok(Err(e));
    }
    let c = sc.dev.reap_n(1)?;
    expect_ok(&c[0], "seal")?;
    Ok(Ok(sc.map.read(8192, pt.len() + GCM_TAG_LEN)))
}

// ---------------------------------------------------------------------------
// Defect 1: key slots
// ---------------------------------------------------------------------------

/// Defect 1. Before the fix, slot numbers named the device's slots
/// directly: B's OPEN with A's slot decrypted A's ciphertext (OK instead
/// of ENOKEY), B's KEY_CLEAR erased A's key, and A's key outlived A.
fn key_slots_are_per_file() -> TestResult {
    let used0 = debugfs_u64("key_slots_used")?;
    let a = Scratch::new(SLAB_MIN_SIZE, CACHE_WRITE_BACK)?;
    let b = Scratch::new(SLAB_MIN_SIZE, CACHE_WRITE_BACK)?;
    let (ka, kb) = ([0xa5u8; 32], [0x5au8; 32]);
    let pt = b"secret of file A, not for B".to_vec();
    key_set(&a, 1, &ka, 1)?;
    let ct_a = seal(&a, 1, &pt)?.map_err(|e| format!("A seal: {}", errname(e)))?;

    // B names A's slot: refused before the device sees it.
    let r = gcm(&b, OP_AES_GCM_OPEN, 1, &ct_a, pt.len(), 2);
    let (res, n) = b.dev.submit(std::slice::from_ref(&r), 0);
    expect_err(res, libc::ENOKEY, "B opens with A's slot 1")?;
    ensure!(n == 0, "B's open was queued");
    let r = gcm(&b, OP_AES_GCM_SEAL, 1, &pt, pt.len() + GCM_TAG_LEN, 3);
    expect_err(
        b.dev.submit(std::slice::from_ref(&r), 0).0,
        libc::ENOKEY,
        "B seals with slot 1",
    )?;
    let mut clr = req(OP_KEY_CLEAR, 0, &[], 4);
    clr.header.key_slot = 1;
    expect_err(
        b.dev.submit(std::slice::from_ref(&clr), 0).0,
        libc::ENOKEY,
        "B clears slot 1",
    )?;
    // A's key is intact.
    let again = seal(&a, 1, &pt)?.map_err(|e| format!("A seal after B's clear: {}", errname(e)))?;
    ensure!(again == ct_a, "A's key changed after B's attempts");

    // B installs its own key in "its" slot 1: a different device slot.
    key_set(&b, 1, &kb, 5)?;
    let ct_b = seal(&b, 1, &pt)?.map_err(|e| format!("B seal: {}", errname(e)))?;
    ensure!(ct_b != ct_a, "B's slot 1 sealed with A's key");
    let again = seal(&a, 1, &pt)?.map_err(|e| format!("A seal: {}", errname(e)))?;
    ensure!(again == ct_a, "B's KEY_SET replaced A's key");
    let used = debugfs_u64("key_slots_used")?;
    ensure!(
        used == used0 + 2,
        "key_slots_used {used}, expected {}",
        used0 + 2
    );

    // Closing A clears its device slot: nobody can reach A's key again.
    drop(a);
    ensure!(
        debugfs_u64("key_slots_used")? == used0 + 1,
        "A's device slot still in use after close"
    );
    ensure!(
        debugfs_u64("key_slots_clearing")? == 0,
        "a clear is still pending after close"
    );
    let c = Scratch::new(SLAB_MIN_SIZE, CACHE_WRITE_BACK)?;
    let r = gcm(&c, OP_AES_GCM_OPEN, 1, &ct_a, pt.len(), 6);
    expect_err(
        c.dev.submit(std::slice::from_ref(&r), 0).0,
        libc::ENOKEY,
        "new file opens with slot 1",
    )?;
    // B's own clear works and frees its slot.
    expect_ok(&b.dev.run(&clr, 0)?, "B clears its slot 1")?;
    ensure!(
        debugfs_u64("key_slots_used")? == used0,
        "B's slot still in use after its clear"
    );
    Ok(())
}

/// Defect 1, the device side: a file holding every device slot leaves none
/// for another (ENOSPC), a KEY_SET beyond the slots is EINVAL, and the slots
/// come back when the holder closes.
fn key_slots_run_out_and_come_back() -> TestResult {
    let a = Scratch::new(SLAB_MIN_SIZE, CACHE_WRITE_BACK)?;
    let n = a.dev.info()?.config.key_slots;
    ensure!(n >= 2, "device has {n} key slots");
    let key = [7u8; 32];
    for s in 0..n {
        key_set(&a, s, &key, u64::from(s) + 1)?;
    }
    // Setting a slot A already holds reuses its device slot.
    key_set(&a, 0, &[8u8; 32], 100)?;
    let b = Scratch::new(SLAB_MIN_SIZE, CACHE_WRITE_BACK)?;
    b.map.write(0, &key);
    let ks = [seg_in(b.phys(0), 32)];
    let mut r = req(OP_KEY_SET, 0, &ks, 1);
    r.header.key_slot = 0;
    expect_err(
        b.dev.submit(std::slice::from_ref(&r), 0).0,
        libc::ENOSPC,
        "KEY_SET with every device slot taken",
    )?;
    r.header.key_slot = n;
    expect_err(
        b.dev.submit(std::slice::from_ref(&r), 0).0,
        libc::EINVAL,
        "KEY_SET beyond key_slots",
    )?;
    drop(a);
    key_set(&b, 0, &key, 2)?;
    ensure!(
        debugfs_u64("key_slots_used")? == 1,
        "slots not given back after close"
    );
    Ok(())
}

// ---------------------------------------------------------------------------
// Defect 2: bounce memory
// ---------------------------------------------------------------------------

/// Defect 2. Before the fix, 49 unreaped 1 MiB + 1 MiB copy requests were
/// all accepted (98 MiB of kernel memory against a 64 MiB cap) with
/// `pinned` 0, from one physically contiguous kmalloc each.
fn copy_bounce_memory_is_capped_and_counted() -> TestResult {
    wait_pinned_zero()?;
    let d = Dev::open()?;
    let info = d.info()?;
    let len = info.config.max_request_bytes as usize;
    let cap = info.max_pinned_per_file;
    let src = vec![0x3cu8; len];
    let mut dst = vec![0u8; len];
    let segs = [
        seg_in(src.as_ptr() as u64, len),
        seg_out(dst.as_mut_ptr() as u64, len),
    ];
    let mut accepted = 0u64;
    let mut refused = None;
    for i in 0..49 {
        let (r, _) = d.submit(&[req(OP_COPY, 0, &segs, i)], SUBMIT_COPY);
        match r {
            Ok(()) => accepted += 1,
            Err(e) => {
                refused = Some(e);
                break;
            }
        }
    }
    let held = d.stats()?.pinned;
    let e = refused.ok_or_else(|| {
        format!("49 unreaped copy requests of {len}+{len} bytes all accepted (cap {cap})")
    })?;
    ensure!(
        e == libc::EAGAIN || e == libc::ENOMEM,
        "over the cap: {}, expected EAGAIN or ENOMEM",
        errname(e)
    );
    ensure!(
        held <= cap,
        "file holds {held} bytes of bounce memory, cap {cap}"
    );
    ensure!(
        held >= accepted * 2 * len as u64,
        "stats.pinned {held} for {accepted} requests of 2x{len} bytes"
    );
    ensure!(
        debugfs_u64("pinned_bytes")? >= held,
        "debugfs pinned_bytes does not count bounce memory"
    );
    let comps = d.reap_n(accepted as usize)?;
    for c in &comps {
        expect_ok(c, "copy")?;
    }
    ensure!(dst == src, "copy output wrong");
    ensure!(
        d.stats()?.pinned == 0,
        "bounce memory still counted after reap"
    );
    // Reaped: room again.
    expect_ok(
        &d.run(&req(OP_COPY, 0, &segs, 99), SUBMIT_COPY)?,
        "copy after reap",
    )?;
    drop(d);
    wait_pinned_zero()?;
    let fails = dmesg_count("page allocation failure")?;
    ensure!(
        fails == 0,
        "{fails} page allocation failure reports in the kernel log"
    );
    Ok(())
}

// ---------------------------------------------------------------------------
// Defect 3: private writable mappings
// ---------------------------------------------------------------------------

/// Defect 3. Before the fix a MAP_PRIVATE writable mapping succeeded and
/// writes went to copy-on-write pages the device never sees.
fn private_writable_mapping_refused() -> TestResult {
    let d = Dev::open()?;
    let s = d
        .alloc(SLAB_MIN_SIZE, CACHE_WRITE_BACK)
        .map_err(|e| format!("SLAB_ALLOC: {}", errname(e)))?;
    let map = |prot: i32, flags: i32| {
        // SAFETY: a new mapping of our own file; checked by the caller.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                65536,
                prot,
                flags,
                d.f.as_raw_fd(),
                s.mmap_offset as libc::off_t,
            )
        };
        if p == libc::MAP_FAILED {
            Err(errno())
        } else {
            Ok(p)
        }
    };
    let rw = libc::PROT_READ | libc::PROT_WRITE;
    let private = map(rw, libc::MAP_PRIVATE);
    if let Ok(p) = private {
        // SAFETY: unmapping the mapping that should not exist.
        unsafe { libc::munmap(p, 65536) };
    }
    expect_err(private, libc::EACCES, "MAP_PRIVATE writable")?;
    let ro = map(libc::PROT_READ, libc::MAP_PRIVATE)
        .map_err(|e| format!("MAP_PRIVATE read-only: {}", errname(e)))?;
    // SAFETY: changing the protection of the mapping just made.
    let r = unsafe { libc::mprotect(ro, 65536, rw) };
    let e = errno();
    // SAFETY: unmapping it.
    unsafe { libc::munmap(ro, 65536) };
    ensure!(r != 0, "mprotect made a private slab mapping writable");
    ensure!(
        e == libc::EACCES,
        "mprotect: {}, expected EACCES",
        errname(e)
    );
    let shared = map(rw, libc::MAP_SHARED).map_err(|e| format!("MAP_SHARED: {}", errname(e)))?;
    // SAFETY: unmapping it.
    unsafe { libc::munmap(shared, 65536) };
    Ok(())
}

// ---------------------------------------------------------------------------
// Defect 4: read-only argument structs
// ---------------------------------------------------------------------------

/// Defect 4. Before the fix SUBMIT with a read-only IocSubmit queued the
/// request and then failed with EFAULT: a completion showed up that the
/// caller was told never happened.
fn readonly_submit_struct_queues_nothing() -> TestResult {
    let d = Dev::open()?;
    let before = d.stats()?;
    let reqs = [req(OP_NOP, 0, &[], 1)];
    let submit = IocSubmit {
        reqs: reqs.as_ptr() as u64,
        count: 1,
        flags: 0,
        submitted: 0,
        reserved: 0,
    };
    expect_err(
        ioctl_on_readonly_page(&d, PKTACCEL_IOC_SUBMIT, submit)?,
        libc::EFAULT,
        "SUBMIT with a read-only IocSubmit",
    )?;
    std::thread::sleep(Duration::from_millis(200));
    expect_err(
        d.reap(1, 0).map(|_| ()),
        libc::ENOENT,
        "REAP after the refused SUBMIT",
    )?;
    let after = d.stats()?;
    ensure!(
        after.requests == before.requests,
        "the refused SUBMIT reached the device"
    );
    Ok(())
}

/// Defect 4, reap side. Before the fix a REAP with a read-only IocReap (or
/// completion array) took the completions off the queue and lost them.
fn readonly_reap_struct_loses_nothing() -> TestResult {
    let d = Dev::open()?;
    let (r, _) = d.submit(&[req(OP_NOP, 0, &[], 7)], 0);
    r.map_err(|e| format!("SUBMIT: {}", errname(e)))?;
    std::thread::sleep(Duration::from_millis(200));
    let mut comps = [IocCompletion::default(); 4];
    let reap = IocReap {
        comps: comps.as_mut_ptr() as u64,
        max: 4,
        timeout_ms: 1000,
        count: 0,
        reserved: 0,
    };
    expect_err(
        ioctl_on_readonly_page(&d, PKTACCEL_IOC_REAP, reap)?,
        libc::EFAULT,
        "REAP with a read-only IocReap",
    )?;
    // A read-only completion array.
    let arr = Page::new()?;
    arr.protect(libc::PROT_READ)?;
    let mut rp = IocReap {
        comps: arr.ptr as u64,
        max: 4,
        timeout_ms: 1000,
        count: 0,
        reserved: 0,
    };
    expect_err(
        d.ioctl(PKTACCEL_IOC_REAP, &mut rp),
        libc::EFAULT,
        "REAP into a read-only array",
    )?;
    let got = d.reap_n(1)?;
    ensure!(
        got[0].cookie == 7,
        "completion {:#x}, expected 7",
        got[0].cookie
    );
    Ok(())
}

// ---------------------------------------------------------------------------
// Defect 5: log flooding
// ---------------------------------------------------------------------------

/// Defect 5. Before the fix every rejected request printed a warning:
/// 2000 rejects, 2000 lines.
fn rejected_requests_rate_limited_and_counted() -> TestResult {
    let d = Dev::open()?;
    let lines0 = dmesg_count("rejected: segment")?;
    let rej0 = d.stats()?.rejected;
    let dbg0 = debugfs_u64("rejected")?;
    let segs = [seg_in(0x1000, 64)];
    for i in 0..2000 {
        let (r, _) = d.submit(&[req(OP_NOP, 0, &segs, i)], 0);
        expect_err(r, libc::EFAULT, "segment outside every slab")?;
    }
    let lines = dmesg_count("rejected: segment")? - lines0;
    ensure!(
        lines <= 20,
        "2000 rejected requests wrote {lines} log lines"
    );
    let rej = d.stats()?.rejected - rej0;
    ensure!(rej == 2000, "stats.rejected counted {rej} of 2000");
    let dbg = debugfs_u64("rejected")? - dbg0;
    ensure!(dbg == 2000, "debugfs rejected counted {dbg} of 2000");
    Ok(())
}

// ---------------------------------------------------------------------------
// Defect 6: copy outputs and other address spaces
// ---------------------------------------------------------------------------

/// Defect 6. Before the fix a forked child that reaped the parent's
/// copy-mode request got the output written into its own memory; now the
/// child's reap is refused (EPERM) and the parent gets its output.
fn copy_outputs_reaped_only_by_submitter() -> TestResult {
    let d = Dev::open()?;
    let src = vec![0x77u8; 4096];
    let mut dst = vec![0u8; 4096];
    let segs = [
        seg_in(src.as_ptr() as u64, 4096),
        seg_out(dst.as_mut_ptr() as u64, 4096),
    ];
    let (r, _) = d.submit(&[req(OP_COPY, 0, &segs, 5)], SUBMIT_COPY);
    r.map_err(|e| format!("SUBMIT: {}", errname(e)))?;
    std::thread::sleep(Duration::from_millis(200));
    let fd = d.f.as_raw_fd();
    let dst_addr = dst.as_ptr() as usize;
    // SAFETY: single-threaded here; the child only makes syscalls and
    // reads its own copy of `dst`, then `_exit`s.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(format!("fork: {}", errname(errno())));
    }
    if pid == 0 {
        let mut comps = [IocCompletion::default(); 1];
        let mut rp = IocReap {
            comps: comps.as_mut_ptr() as u64,
            max: 1,
            timeout_ms: 1000,
            count: 0,
            reserved: 0,
        };
        // SAFETY: REAP on the inherited fd with a valid IocReap.
        let r = unsafe { libc::ioctl(fd, libc::c_ulong::from(PKTACCEL_IOC_REAP), &raw mut rp) };
        let e = errno();
        // SAFETY: the child's own copy of the parent's `dst`.
        let touched = unsafe { *(dst_addr as *const u8) } != 0;
        child_exit(match (r, e, touched) {
            (_, _, true) => 3,
            (0, _, _) => 4,
            (_, libc::EPERM, _) => 0,
            _ => 5,
        });
    }
    let mut st = 0;
    // SAFETY: reaping our own child.
    unsafe { libc::waitpid(pid, &mut st, 0) };
    let code = libc::WEXITSTATUS(st);
    ensure!(
        code != 3,
        "the parent's copy output was written into the child's memory"
    );
    ensure!(code != 4, "the child reaped the parent's copy-mode request");
    ensure!(
        code == 0,
        "the child's REAP did not fail with EPERM (exit {code})"
    );
    let c = d.reap_n(1)?;
    expect_ok(&c[0], "parent's copy")?;
    ensure!(dst == src, "the parent did not get its output");
    Ok(())
}

// ---------------------------------------------------------------------------
// Defect 8: copy mode without segments
// ---------------------------------------------------------------------------

/// Defect 8. Before the fix a copy-mode request with no segments computed
/// the physical address of an empty buffer's dangling pointer: a BUG with
/// CONFIG_DEBUG_VIRTUAL (the debug kernel), a bogus address otherwise.
fn copy_submit_without_segments() -> TestResult {
    let d = Dev::open()?;
    for op in [OP_NOP, OP_CSUM] {
        let r = IocRequest {
            header: RequestHeader {
                op,
                cookie: 3,
                ..Default::default()
            },
            segs: 0,
            nsegs: 0,
            queue: u32::MAX,
        };
        let c = d.run(&r, SUBMIT_COPY)?;
        if op == OP_NOP {
            expect_ok(&c, "copy-mode NOP without segments")?;
        }
    }
    ensure!(
        d.stats()?.pinned == 0,
        "bounce memory left after segment-less requests"
    );
    Ok(())
}
