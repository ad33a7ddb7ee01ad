//! Forked children on the inherited files, and short-lived files closed
//! with requests in flight.

use super::*;

/// A child that uses the inherited files (no allocation: the parent is
/// multi-threaded) and exits; its requests are all invalid, so the
/// parent's completion accounting is untouched.
pub(super) fn fork_child(ctx: &Ctx, rng: &mut Rng) -> Found {
    let fd = ctx.files[rng.below(2) as usize].dev.f.as_raw_fd();
    // Wraps around: always refused, so no completion reaches the parent.
    let seg = IocSegment {
        addr: u64::MAX - rng.below(32),
        len: 64,
        dir: SEG_IN,
    };
    let r = IocRequest {
        header: RequestHeader {
            op: OP_CRC32C,
            cookie: u64::MAX,
            ..Default::default()
        },
        segs: &raw const seg as u64,
        nsegs: 1,
        queue: u32::MAX,
    };
    // SAFETY: the child only makes raw syscalls on stack data and `_exit`s.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        let mut info = IocInfo::default();
        let mut s = IocSubmit {
            reqs: &raw const r as u64,
            count: 1,
            flags: 0,
            submitted: 0,
            reserved: 0,
        };
        // SAFETY: ioctls on the inherited fd with valid structs.
        let code = unsafe {
            let a = libc::ioctl(fd, libc::c_ulong::from(PKTACCEL_IOC_INFO), &raw mut info);
            let b = libc::ioctl(fd, libc::c_ulong::from(PKTACCEL_IOC_SUBMIT), &raw mut s);
            if a == 0 && b < 0 && s.submitted == 0 {
                0
            } else {
                1
            }
        };
        // SAFETY: leaving the child without running the parent's destructors.
        unsafe { libc::_exit(code) };
    }
    if pid < 0 {
        return allowed("fork", errno(), &[libc::EAGAIN, libc::ENOMEM]);
    }
    let mut st = 0;
    // SAFETY: reaping our own child.
    unsafe { libc::waitpid(pid, &mut st, 0) };
    if libc::WEXITSTATUS(st) != 0 {
        return Err("a forked child's INFO failed or its bad SUBMIT was accepted".into());
    }
    Ok(())
}

/// Opens a file, allocates and maps a slab, submits a few requests and
/// closes with them in flight (or after freeing the slab).
pub(super) fn short_lived_file(rng: &mut Rng) -> Found {
    let d = Dev::open()?;
    let s = match d.alloc(SLAB_MIN_SIZE, rng.below(3) as u32) {
        Ok(s) => s,
        Err(e) => return allowed("SLAB_ALLOC", e, &[libc::ENOMEM]),
    };
    let segs = [
        IocSegment {
            addr: s.phys,
            len: 4096,
            dir: SEG_IN,
        },
        IocSegment {
            addr: s.phys + 8192,
            len: 4096,
            dir: SEG_OUT,
        },
    ];
    let reqs: Vec<IocRequest> = (0..1 + rng.below(16))
        .map(|i| IocRequest {
            header: RequestHeader {
                op: OP_COPY,
                cookie: i,
                ..Default::default()
            },
            segs: segs.as_ptr() as u64,
            nsegs: 2,
            queue: u32::MAX,
        })
        .collect();
    if let (Err(e), _) = d.submit(&reqs, SUBMIT_NONBLOCK) {
        allowed("SUBMIT", e, &[libc::EAGAIN, libc::EBUSY])?;
    }
    if rng.chance(50) {
        d.free(s.id)
            .map_err(|e| format!("SLAB_FREE: {}", errname(e)))?;
    }
    drop(d);
    Ok(())
}
