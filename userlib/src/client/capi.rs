//! The C client API of `include/pktslab.h` (`pktslab_client_*`,
//! `pktslab_segments`): the [`Client`] behind an opaque handle, for
//! libraries that reach libpktslab through `dlsym` (libpktcrc, the OpenSSL
//! provider) and for C programs.

use core::ffi::{c_int, c_void};

use pktaccel_abi::{IocCompletion, IocSegment};

use super::c_types::{CLimits, COp};
use super::{
    Client, ClientError, CopyMode, DeviceTransport, Request, Transport, ioctl, split_segments,
};
use crate::pool::Pool;

/// The C client handle.
pub struct CClient {
    client: Client<'static, DeviceTransport>,
}

fn global_pool() -> Option<&'static Pool> {
    static POOL: std::sync::OnceLock<Option<Pool>> = std::sync::OnceLock::new();
    POOL.get_or_init(|| Pool::global().ok()).as_ref()
}

/// Opens a client on the process heap's device; NULL + ENODEV when the heap
/// has no device behind it.
#[unsafe(no_mangle)]
pub extern "C" fn pktslab_client_open() -> *mut CClient {
    match global_pool().map(Client::open) {
        Some(Ok(client)) => Box::into_raw(Box::new(CClient { client })),
        _ => {
            ioctl::set_errno(libc::ENODEV);
            core::ptr::null_mut()
        }
    }
}

/// Closes a client.
///
/// # Safety
/// `c` is NULL or from pktslab_client_open, closed once.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn pktslab_client_close(c: *mut CClient) {
    if !c.is_null() {
        // SAFETY: C contract: c came from Box::into_raw and is closed once.
        drop(unsafe { Box::from_raw(c) });
    }
}

fn c_err(e: ClientError) -> c_int {
    -match e {
        ClientError::NotPinned { .. } => libc::EFAULT,
        ClientError::EmptyBuffer | ClientError::BatchSize(_) | ClientError::Order => libc::EINVAL,
        ClientError::NoDevice => libc::ENODEV,
        ClientError::Os(e) => e,
    }
}

/// The `n` entries of a C array; empty when `n` is 0 (`p` may be NULL then).
///
/// # Safety
/// When `n > 0`, `p` points at `n` valid entries that outlive `'a`.
unsafe fn c_slice<'a, T>(p: *const T, n: u32) -> &'a [T] {
    if n == 0 {
        &[]
    } else {
        // SAFETY: the caller's contract.
        unsafe { core::slice::from_raw_parts(p, n as usize) }
    }
}

/// The [`Request`] a C op describes.
///
/// # Safety
/// `o`'s iov arrays are valid, and every buffer they name is live (and
/// writable for outputs) for `'a`.
unsafe fn request_of<'a>(o: &COp) -> Result<Request<'a>, ClientError> {
    let mut r = Request::new(o.op)
        .aux(o.aux)
        .key_slot(o.key_slot)
        .params(&o.params);
    // SAFETY: C contract: `inputs` has `n_in` entries.
    for v in unsafe { c_slice(o.inputs, o.n_in) } {
        // SAFETY: C contract: the iov describes live memory.
        r = r.input(unsafe { core::slice::from_raw_parts(v.base.cast::<u8>(), v.len) })?;
    }
    // SAFETY: C contract: `outputs` has `n_out` entries.
    for v in unsafe { c_slice(o.outputs, o.n_out) } {
        // SAFETY: C contract: the iov describes live, writable memory that
        // nothing else reads until the completion is reaped.
        let s = unsafe { core::slice::from_raw_parts_mut(v.base.cast::<u8>().cast_mut(), v.len) };
        r = r.output(s)?;
    }
    Ok(r)
}

/// The client and the `n` requests of a C call.
///
/// # Safety
/// `c` is a live handle and `ops` has `n` entries, as [`request_of`] needs.
unsafe fn requests<'a>(
    c: *mut CClient,
    ops: *mut COp,
    n: u32,
) -> Result<(&'a mut Client<'static, DeviceTransport>, Vec<Request<'a>>), c_int> {
    if c.is_null() || ops.is_null() {
        return Err(-libc::EINVAL);
    }
    // SAFETY: C contract: `ops` has `n` entries.
    let ops = unsafe { c_slice(ops.cast_const(), n) };
    let reqs = ops
        .iter()
        // SAFETY: C contract (as request_of's).
        .map(|o| unsafe { request_of(o) })
        .collect::<Result<Vec<_>, _>>()
        .map_err(c_err)?;
    // SAFETY: C contract: a live handle, used by one thread at a time.
    Ok((unsafe { &mut (*c).client }, reqs))
}

/// Builds and submits `n` requests; fills the cookie of each op the
/// driver accepted. Returns how many it accepted (a prefix of `ops`):
/// `n`, or fewer when it stopped part-way, with `errno` saying why (the
/// accepted ones are in flight: reap them; resubmit the rest); -errno when
/// none went in (-EFAULT: a buffer is not pinned).
///
/// # Safety
/// `ops` has `n` entries whose iov arrays are valid; every buffer stays
/// alive until its completion is reaped.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn pktslab_client_submit(c: *mut CClient, ops: *mut COp, n: u32) -> c_int {
    // SAFETY: C contract.
    let (cl, reqs) = match unsafe { requests(c, ops, n) } {
        Ok(v) => v,
        Err(e) => return e,
    };
    // SAFETY: C contract: `ops` has `n` entries, the buffers live until reaped.
    unsafe { submit_ops(cl, ops, &reqs) }
}

/// `pktslab_client_submit` on any transport (tests use a double).
///
/// # Safety
/// `ops` has `reqs.len()` writable entries, which `reqs` no longer reads;
/// every buffer of `reqs` stays alive until its completion is reaped.
pub(super) unsafe fn submit_ops<T: Transport>(
    cl: &mut Client<'_, T>,
    ops: *mut COp,
    reqs: &[Request<'_>],
) -> c_int {
    // SAFETY: the caller's contract.
    match unsafe { cl.submit_prefix(reqs) } {
        Ok(s) => {
            // SAFETY: the caller's contract: `ops` has room for every
            // request, and the accepted ones are a prefix.
            let ops = unsafe { core::slice::from_raw_parts_mut(ops, s.cookies.len()) };
            for (o, ck) in ops.iter_mut().zip(&s.cookies) {
                o.cookie = *ck;
            }
            match s.error {
                Some(e) if s.cookies.is_empty() => c_err(e),
                Some(e) => {
                    ioctl::set_errno(-c_err(e));
                    s.cookies.len() as c_int
                }
                None => s.cookies.len() as c_int,
            }
        }
        Err(e) => c_err(e),
    }
}

/// Runs `n` requests (any number) and waits for all of them; their
/// completions go to `out[0..n]` in request order. Returns 0 or -errno;
/// whatever the driver accepted is reaped before an error returns.
///
/// # Safety
/// `ops` has `n` entries whose iov arrays are valid and name live buffers;
/// `out` has room for `n` completions.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn pktslab_client_run(
    c: *mut CClient,
    ops: *mut COp,
    n: u32,
    out: *mut IocCompletion,
) -> c_int {
    if out.is_null() {
        return -libc::EINVAL;
    }
    // SAFETY: C contract.
    let (cl, mut reqs) = match unsafe { requests(c, ops, n) } {
        Ok(v) => v,
        Err(e) => return e,
    };
    match cl.run(&mut reqs) {
        Ok(comps) => {
            for (i, comp) in comps.iter().enumerate() {
                // SAFETY: C contract: `out` has room for `n` entries, and
                // there is one completion per request.
                unsafe { *out.add(i) = *comp };
            }
            0
        }
        Err(e) => c_err(e),
    }
}

/// Reaps up to `max` completions into `out`; returns the count or -errno.
///
/// # Safety
/// `out` has room for `max` entries.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn pktslab_client_reap(
    c: *mut CClient,
    out: *mut IocCompletion,
    max: u32,
    timeout_ms: c_int,
) -> c_int {
    if c.is_null() || out.is_null() || max == 0 {
        return -libc::EINVAL;
    }
    // SAFETY: C contract.
    let (cl, out) = unsafe {
        (
            &mut (*c).client,
            core::slice::from_raw_parts_mut(out, max as usize),
        )
    };
    match cl.reap_into(out, timeout_ms) {
        Ok(n) => n as c_int,
        Err(e) => c_err(e),
    }
}

/// The driver's limits (`PKTACCEL_IOC_INFO` on the client's file) into
/// `out`; 0 or -errno.
///
/// # Safety
/// `c` is a live handle; `out` is writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn pktslab_client_limits(c: *mut CClient, out: *mut CLimits) -> c_int {
    if c.is_null() || out.is_null() {
        return -libc::EINVAL;
    }
    // SAFETY: C contract: a live handle.
    match unsafe { &(*c).client }.info() {
        Ok(i) => {
            let l = CLimits {
                key_slots: i.config.key_slots,
                max_segments: i.config.max_segments,
                max_request_bytes: i.config.max_request_bytes,
                queues: i.config.num_queues,
            };
            // SAFETY: C contract: `out` is writable.
            unsafe { out.write(l) };
            0
        }
        Err(e) => c_err(e),
    }
}

/// Sets what the client does with buffers that are not pinned (`mode`:
/// `PKTSLAB_COPY_NEVER`, `_FALLBACK`, `_ALWAYS`, as [`CopyMode`]); 0 or
/// -EINVAL. For callers whose buffers may be ordinary memory, such as a
/// forked child, whose heap is a copy of its parent's.
///
/// # Safety
/// `c` is NULL or a live handle, not in use by another thread.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn pktslab_client_copy_mode(c: *mut CClient, mode: c_int) -> c_int {
    let mode = match mode {
        0 => CopyMode::Never,
        1 => CopyMode::Fallback,
        2 => CopyMode::Always,
        _ => return -libc::EINVAL,
    };
    if c.is_null() {
        return -libc::EINVAL;
    }
    // SAFETY: C contract: a live handle, used by one thread at a time.
    unsafe { &mut (*c).client }.copy_mode(mode);
    0
}

/// Writes the physical segments of `[p, p+len)` (direction `dir`) into
/// `out`; returns how many there are (may exceed `max`: only `max` are
/// written) or -EFAULT when a byte is not pinned.
///
/// # Safety
/// `out` has room for `max` entries.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn pktslab_segments(
    p: *const c_void,
    len: usize,
    dir: u32,
    out: *mut IocSegment,
    max: usize,
) -> isize {
    let Some(pool) = global_pool() else {
        return -(libc::EFAULT as isize);
    };
    let mut v = Vec::new();
    if split_segments(pool, p.cast(), len, dir, &mut v).is_err() {
        return -(libc::EFAULT as isize);
    }
    for (i, s) in v.iter().take(max).enumerate() {
        // SAFETY: C contract: i < max.
        unsafe { *out.add(i) = *s };
    }
    v.len() as isize
}

#[cfg(test)]
mod tests {
    use pktaccel_abi::{IocRequest, OP_NOP};

    use super::*;
    use crate::config::{BackendChoice, Config};

    /// Takes `accept` requests of the first submit, then fails with EBUSY.
    struct Partial {
        accept: u32,
        calls: u32,
    }

    impl Transport for &mut Partial {
        unsafe fn submit(&mut self, reqs: &[IocRequest], _flags: u32) -> Result<u32, ClientError> {
            self.calls += 1;
            match self.calls {
                1 => Ok(self.accept.min(reqs.len() as u32)),
                _ => Err(ClientError::Os(libc::EBUSY)),
            }
        }

        fn reap(&mut self, _out: &mut [IocCompletion], _t: i32) -> Result<usize, ClientError> {
            Err(ClientError::Os(libc::ENOENT))
        }
    }

    fn nop() -> COp {
        COp {
            op: OP_NOP,
            flags: 0,
            key_slot: 0,
            aux: 0,
            reserved: 0,
            params: [0; 40],
            inputs: core::ptr::null(),
            n_in: 0,
            n_out: 0,
            outputs: core::ptr::null(),
            cookie: 0,
        }
    }

    #[test]
    fn copy_mode_rejects_a_null_handle_and_unknown_modes() {
        // SAFETY: NULL is an accepted handle value (refused).
        let r = unsafe { pktslab_client_copy_mode(core::ptr::null_mut(), 1) };
        assert_eq!(r, -libc::EINVAL);
        // SAFETY: as above; the mode is checked first.
        let r = unsafe { pktslab_client_copy_mode(core::ptr::null_mut(), 3) };
        assert_eq!(r, -libc::EINVAL);
    }

    #[test]
    fn a_partial_submit_reports_the_accepted_count_and_why_it_stopped() {
        let pool = Pool::new(Config {
            backend: BackendChoice::Host,
            force_synthetic: true,
            arena_size: 1 << 30,
            ..Default::default()
        })
        .unwrap();
        let mut dev = Partial {
            accept: 2,
            calls: 0,
        };
        let mut cl = Client::with_transport(&pool, &mut dev);
        let mut ops = [nop(); 5];
        let reqs: Vec<_> = ops.iter().map(|_| Request::new(OP_NOP)).collect();
        ioctl::set_errno(0);
        // SAFETY: `ops` has 5 entries and the requests have no buffers.
        let r = unsafe { submit_ops(&mut cl, ops.as_mut_ptr(), &reqs) };
        assert_eq!(r, 2, "the driver accepted 2 of 5");
        assert_eq!(
            ioctl::errno(),
            libc::EBUSY,
            "errno says why the rest did not go"
        );
        assert!(ops[..2].iter().all(|o| o.cookie != 0));
        assert!(ops[2..].iter().all(|o| o.cookie == 0));
        // Nothing accepted: -errno as before.
        drop(cl);
        let mut cl = Client::with_transport(&pool, &mut dev);
        let mut ops = [nop(); 1];
        // SAFETY: as above.
        let r = unsafe { submit_ops(&mut cl, ops.as_mut_ptr(), &reqs[..1]) };
        assert_eq!(r, -libc::EBUSY);
    }
}
