//! Every `/dev/pktaccel` ioctl as a typed function over the `abi`
//! structures: the one place that knows the ioctl numbers and reads
//! `errno`. The allocator's device backend, the [`Client`](super::Client)
//! and the guest suite's kmod tests all call these; only the guest suite's
//! bad-input cases issue raw ioctls (with arguments these types cannot
//! express).
//!
//! Each function takes the descriptor of an open `/dev/pktaccel` and
//! returns the driver's errno on failure. They are safe: the driver reads
//! and writes exactly the argument structure the number encodes, which is
//! a live value of ours. [`submit`] is the exception: the requests name
//! buffers the device reads and writes until their completions are
//! reaped, which the type of an `IocRequest` cannot promise.

use std::os::fd::RawFd;

use pktaccel_abi::{
    IocCompletion, IocInfo, IocReap, IocRequest, IocSlabAlloc, IocSlabFree, IocStats, IocSubmit,
    PKTACCEL_IOC_INFO, PKTACCEL_IOC_REAP, PKTACCEL_IOC_SLAB_ALLOC, PKTACCEL_IOC_SLAB_FREE,
    PKTACCEL_IOC_STATS, PKTACCEL_IOC_SUBMIT,
};

/// The calling thread's errno.
pub fn errno() -> i32 {
    // SAFETY: __errno_location always returns the thread's errno slot.
    unsafe { *libc::__errno_location() }
}

/// Sets the calling thread's errno (the C API reports failures there).
pub fn set_errno(e: i32) {
    // SAFETY: as in `errno`.
    unsafe { *libc::__errno_location() = e };
}

/// One ioctl on `fd` with a pointer to `arg`.
///
/// # Safety
/// `cmd` encodes `size_of::<T>()`, and every pointer inside `*arg` is
/// valid for what the driver does with it (submit's requests, reap's
/// completion array).
unsafe fn call<T>(fd: RawFd, cmd: u32, arg: &mut T) -> Result<(), i32> {
    // SAFETY: `arg` is a valid, writable `T` for the whole call and the
    // number encodes its size, so the driver reads and writes only `*arg`
    // and what the caller vouches for. On a file that is not
    // /dev/pktaccel the number is unknown (ENOTTY) or, at worst, another
    // driver's command of the same size, writing into `*arg`.
    let r = unsafe { libc::ioctl(fd, libc::c_ulong::from(cmd), std::ptr::from_mut(arg)) };
    if r < 0 { Err(errno()) } else { Ok(()) }
}

/// `PKTACCEL_IOC_INFO`: the device's config space and the driver's limits.
pub fn info(fd: RawFd) -> Result<IocInfo, i32> {
    let mut info = IocInfo::default();
    // SAFETY: the number is INFO's and `IocInfo` holds no pointers.
    unsafe { call(fd, PKTACCEL_IOC_INFO, &mut info) }?;
    Ok(info)
}

/// `PKTACCEL_IOC_STATS`: this file's counters.
pub fn stats(fd: RawFd) -> Result<IocStats, i32> {
    let mut s = IocStats::default();
    // SAFETY: the number is STATS's and `IocStats` holds no pointers.
    unsafe { call(fd, PKTACCEL_IOC_STATS, &mut s) }?;
    Ok(s)
}

/// `PKTACCEL_IOC_SLAB_ALLOC`: one pinned slab of `size` bytes; the answer
/// holds its id, physical base and mmap offset.
pub fn slab_alloc(fd: RawFd, size: u64, caching: u32) -> Result<IocSlabAlloc, i32> {
    let mut a = IocSlabAlloc {
        size,
        caching,
        ..Default::default()
    };
    // SAFETY: the number is SLAB_ALLOC's and `IocSlabAlloc` holds no
    // pointers.
    unsafe { call(fd, PKTACCEL_IOC_SLAB_ALLOC, &mut a) }?;
    Ok(a)
}

/// `PKTACCEL_IOC_SLAB_FREE`: gives slab `id` back (the driver keeps it as
/// a zombie while a request still uses it).
pub fn slab_free(fd: RawFd, id: u32) -> Result<(), i32> {
    let mut f = IocSlabFree { id, reserved: 0 };
    // SAFETY: the number is SLAB_FREE's and `IocSlabFree` holds no pointers.
    unsafe { call(fd, PKTACCEL_IOC_SLAB_FREE, &mut f) }
}

/// A SUBMIT the driver stopped part-way: `queued` requests (a prefix) went
/// to the device before it failed with `errno`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SubmitError {
    /// The driver's errno.
    pub errno: i32,
    /// Requests queued before it (still in flight: reap them).
    pub queued: u32,
}

/// `PKTACCEL_IOC_SUBMIT`: queues `reqs` (1..=`MAX_BATCH`) with `flags`
/// (`SUBMIT_COPY`, `SUBMIT_NONBLOCK`); returns how many were queued, all
/// unless the driver waits no longer (`SUBMIT_NONBLOCK`).
///
/// # Safety
/// Each request's segment array is valid for the call, and every buffer
/// its segments name (by physical address in this file's slabs, or by
/// virtual address with `SUBMIT_COPY`) stays alive and is not otherwise
/// accessed until that request's completion is reaped: the device, or the
/// driver's copy-back at reap, writes into it until then.
pub unsafe fn submit(fd: RawFd, reqs: &[IocRequest], flags: u32) -> Result<u32, SubmitError> {
    let mut s = IocSubmit {
        reqs: reqs.as_ptr() as u64,
        count: reqs.len() as u32,
        flags,
        submitted: 0,
        reserved: 0,
    };
    // SAFETY: the number is SUBMIT's; `reqs` points at `count` live
    // requests, and the caller vouches for their segments and buffers.
    match unsafe { call(fd, PKTACCEL_IOC_SUBMIT, &mut s) } {
        Ok(()) => Ok(s.submitted),
        Err(errno) => Err(SubmitError {
            errno,
            queued: s.submitted,
        }),
    }
}

/// `PKTACCEL_IOC_REAP`: up to `out.len()` completions (the driver takes
/// 1..=`MAX_BATCH`), waiting up to `timeout_ms` for the first (negative:
/// forever); returns how many were written to the front of `out`.
pub fn reap(fd: RawFd, out: &mut [IocCompletion], timeout_ms: i32) -> Result<usize, i32> {
    let mut r = IocReap {
        comps: out.as_mut_ptr() as u64,
        max: u32::try_from(out.len()).unwrap_or(u32::MAX),
        timeout_ms,
        count: 0,
        reserved: 0,
    };
    // SAFETY: the number is REAP's; `comps` points at `out`, which has
    // room for the `max` completions the driver may write.
    unsafe { call(fd, PKTACCEL_IOC_REAP, &mut r) }?;
    Ok(r.count as usize)
}
