//! The accelerator client: turns buffers into device requests and moves
//! them through `/dev/pktaccel`.
//!
//! A buffer becomes one or more segments: its physical address from v2p,
//! split wherever physical contiguity ends (device slabs are contiguous,
//! host pages are not). Buffers that are not pinned are refused, or, when
//! the client allows it, the whole batch is sent with `SUBMIT_COPY` and
//! virtual addresses so the driver bounces them (the slow baseline).

use core::ffi::{c_int, c_void};

use pktaccel_abi::{
    IocCompletion, IocReap, IocRequest, IocSegment, IocSubmit, MAX_BATCH, PKTACCEL_IOC_REAP,
    PKTACCEL_IOC_SUBMIT, RequestHeader, SEG_IN, SEG_OUT, SUBMIT_COPY,
};

mod c_types;
pub use c_types::{CIov, COp};

use crate::backend::errno;
use crate::pool::{PhysSegments, Pool};
use crate::v2p::V2pError;

/// Client failures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ClientError {
    /// A buffer has no physical address and copy mode is off.
    #[error("buffer at {addr:#x} is not in pinned memory: {why}")]
    NotPinned {
        /// The first byte without a physical address.
        addr: usize,
        /// Why.
        why: V2pError,
    },
    /// A zero-length buffer (the device rejects empty segments).
    #[error("empty buffer")]
    EmptyBuffer,
    /// Batch empty or above `MAX_BATCH`.
    #[error("batch of {0} requests (1..={MAX_BATCH} allowed)")]
    BatchSize(usize),
    /// An input was added after an output.
    #[error("inputs must precede outputs")]
    Order,
    /// The pool has no device behind it.
    #[error("no /dev/pktaccel behind this pool")]
    NoDevice,
    /// The ioctl failed.
    #[error("ioctl failed: errno {0}")]
    Os(i32),
}

/// Moves request batches to a device and completions back.
pub trait Transport {
    /// Queues `reqs`; returns how many were taken.
    fn submit(&mut self, reqs: &[IocRequest], flags: u32) -> Result<u32, ClientError>;
    /// Collects up to `out.len()` completions, waiting up to `timeout_ms`
    /// for the first (negative = forever).
    fn reap(&mut self, out: &mut [IocCompletion], timeout_ms: i32) -> Result<usize, ClientError>;
}

/// The kernel module's ioctls on the pool's own device file.
pub struct DeviceTransport {
    fd: i32,
}

impl DeviceTransport {
    /// Uses the file that owns the pool's slabs (the driver only accepts
    /// physical addresses inside the submitting file's slabs).
    pub fn for_pool(pool: &Pool) -> Result<Self, ClientError> {
        pool.device_fd()
            .map(|fd| Self { fd })
            .ok_or(ClientError::NoDevice)
    }
}

impl Transport for DeviceTransport {
    fn submit(&mut self, reqs: &[IocRequest], flags: u32) -> Result<u32, ClientError> {
        let mut s = IocSubmit {
            reqs: reqs.as_ptr() as u64,
            count: reqs.len() as u32,
            flags,
            submitted: 0,
            reserved: 0,
        };
        // SAFETY: the ioctl reads `count` requests (and their segment
        // arrays, which the caller keeps alive) and writes `submitted`.
        let r = unsafe { libc::ioctl(self.fd, PKTACCEL_IOC_SUBMIT as _, &raw mut s) };
        if r < 0 && s.submitted == 0 {
            return Err(ClientError::Os(errno()));
        }
        Ok(s.submitted)
    }

    fn reap(&mut self, out: &mut [IocCompletion], timeout_ms: i32) -> Result<usize, ClientError> {
        let mut r = IocReap {
            comps: out.as_mut_ptr() as u64,
            max: out.len().min(MAX_BATCH as usize) as u32,
            timeout_ms,
            count: 0,
            reserved: 0,
        };
        // SAFETY: the ioctl writes at most `max` completions into `out`.
        let rc = unsafe { libc::ioctl(self.fd, PKTACCEL_IOC_REAP as _, &raw mut r) };
        if rc < 0 {
            let e = errno();
            return if e == libc::EAGAIN || e == libc::ETIMEDOUT {
                Ok(0)
            } else {
                Err(ClientError::Os(e))
            };
        }
        Ok(r.count as usize)
    }
}

#[derive(Clone, Copy)]
struct Buf {
    ptr: usize,
    len: usize,
    dir: u32,
}

/// One request under construction: a header plus input and output
/// buffers. The buffers are borrowed for `'b`.
pub struct Request<'b> {
    /// The device header (op, aux, key slot, params); the cookie is set at
    /// submission.
    pub header: RequestHeader,
    bufs: Vec<Buf>,
    _life: core::marker::PhantomData<&'b mut [u8]>,
}

impl<'b> Request<'b> {
    /// A request for `op` (`pktaccel_abi::OP_*`).
    pub fn new(op: u16) -> Self {
        Self {
            header: RequestHeader {
                op,
                ..Default::default()
            },
            bufs: Vec::new(),
            _life: core::marker::PhantomData,
        }
    }

    /// Sets the op argument (seed, AAD length).
    pub fn aux(mut self, aux: u32) -> Self {
        self.header.aux = aux;
        self
    }

    /// Sets the key slot.
    pub fn key_slot(mut self, slot: u32) -> Self {
        self.header.key_slot = slot;
        self
    }

    /// Copies op parameters (RSS key, GCM IV) into the header.
    pub fn params(mut self, p: &[u8]) -> Self {
        let n = p.len().min(self.header.params.len());
        self.header.params[..n].copy_from_slice(&p[..n]);
        self
    }

    /// Adds a buffer the device reads.
    pub fn input(mut self, buf: &'b [u8]) -> Result<Self, ClientError> {
        if self.bufs.iter().any(|b| b.dir == SEG_OUT) {
            return Err(ClientError::Order);
        }
        if buf.is_empty() {
            return Err(ClientError::EmptyBuffer);
        }
        self.bufs.push(Buf {
            ptr: buf.as_ptr() as usize,
            len: buf.len(),
            dir: SEG_IN,
        });
        Ok(self)
    }

    /// Adds a buffer the device writes.
    pub fn output(mut self, buf: &'b mut [u8]) -> Result<Self, ClientError> {
        if buf.is_empty() {
            return Err(ClientError::EmptyBuffer);
        }
        self.bufs.push(Buf {
            ptr: buf.as_mut_ptr() as usize,
            len: buf.len(),
            dir: SEG_OUT,
        });
        Ok(self)
    }
}

/// Appends the physical segments of `[p, p+len)` to `out`, splitting at
/// physical discontinuities and at 4 GiB (the segment length is 32-bit).
pub fn split_segments(
    pool: &Pool,
    p: *const u8,
    len: usize,
    dir: u32,
    out: &mut Vec<IocSegment>,
) -> Result<(), ClientError> {
    let mut at = p as usize;
    for r in PhysSegments::of(pool, p, len) {
        match r {
            Ok((mut addr, mut n)) => {
                while n > 0 {
                    let take = n.min(u32::MAX as usize & !0xfff);
                    out.push(IocSegment {
                        addr,
                        len: take as u32,
                        dir,
                    });
                    addr += take as u64;
                    n -= take;
                    at += take;
                }
            }
            Err(why) => return Err(ClientError::NotPinned { addr: at, why }),
        }
    }
    Ok(())
}

/// A client: a pool for v2p, a transport, and cookies.
pub struct Client<'p, T: Transport> {
    pool: &'p Pool,
    transport: T,
    next_cookie: u64,
    allow_copy: bool,
    copy_fallbacks: u64,
}

impl<'p> Client<'p, DeviceTransport> {
    /// A client on the pool's device.
    pub fn open(pool: &'p Pool) -> Result<Self, ClientError> {
        Ok(Self::with_transport(pool, DeviceTransport::for_pool(pool)?))
    }
}

/// Segment arrays of a submitted batch; they must outlive the submit call.
pub struct Built {
    /// The requests, pointing into `segs`.
    pub reqs: Vec<IocRequest>,
    /// Segments of all requests.
    pub segs: Vec<IocSegment>,
    /// Submit flags (`SUBMIT_COPY` when the batch had unpinned buffers).
    pub flags: u32,
}

impl<'p, T: Transport> Client<'p, T> {
    /// A client over any transport (tests use a software device).
    pub fn with_transport(pool: &'p Pool, transport: T) -> Self {
        Self {
            pool,
            transport,
            next_cookie: 1,
            allow_copy: false,
            copy_fallbacks: 0,
        }
    }

    /// Allow batches with unpinned buffers to go through the driver's copy
    /// path instead of failing.
    pub fn allow_copy(&mut self, yes: bool) {
        self.allow_copy = yes;
    }

    /// Batches sent in copy mode because a buffer was not pinned (ordinary
    /// memory: above PKTSLAB_PIN_MAX, past the pin cap, or a forked
    /// child's copy of its parent's heap).
    pub fn copy_fallbacks(&self) -> u64 {
        self.copy_fallbacks
    }

    /// The transport.
    pub fn transport_mut(&mut self) -> &mut T {
        &mut self.transport
    }

    /// Builds the ioctl structures for a batch and assigns cookies.
    pub fn build(&mut self, reqs: &[Request<'_>]) -> Result<Built, ClientError> {
        if reqs.is_empty() || reqs.len() > MAX_BATCH as usize {
            return Err(ClientError::BatchSize(reqs.len()));
        }
        let mut segs = Vec::new();
        let mut spans = Vec::with_capacity(reqs.len());
        for r in reqs {
            let start = segs.len();
            for b in &r.bufs {
                split_segments(self.pool, b.ptr as *const u8, b.len, b.dir, &mut segs)?;
            }
            spans.push((start, segs.len() - start));
        }
        Ok(self.finish(reqs, segs, spans, 0))
    }

    fn build_copy(&mut self, reqs: &[Request<'_>]) -> Built {
        let mut segs = Vec::new();
        let mut spans = Vec::with_capacity(reqs.len());
        for r in reqs {
            let start = segs.len();
            for b in &r.bufs {
                segs.push(IocSegment {
                    addr: b.ptr as u64,
                    len: b.len as u32,
                    dir: b.dir,
                });
            }
            spans.push((start, segs.len() - start));
        }
        self.finish(reqs, segs, spans, SUBMIT_COPY)
    }

    fn finish(
        &mut self,
        reqs: &[Request<'_>],
        segs: Vec<IocSegment>,
        spans: Vec<(usize, usize)>,
        flags: u32,
    ) -> Built {
        let base = segs.as_ptr();
        let out = reqs
            .iter()
            .zip(spans)
            .map(|(r, (start, n))| {
                let mut header = r.header;
                header.cookie = self.next_cookie;
                self.next_cookie += 1;
                IocRequest {
                    header,
                    segs: base.wrapping_add(start) as u64,
                    nsegs: n as u32,
                    queue: u32::MAX,
                }
            })
            .collect();
        Built {
            reqs: out,
            segs,
            flags,
        }
    }

    /// Builds zero-copy requests, or copy-mode ones (counted) when a buffer
    /// is not pinned and copying is allowed.
    fn build_or_copy(&mut self, reqs: &[Request<'_>]) -> Result<Built, ClientError> {
        match self.build(reqs) {
            Err(ClientError::NotPinned { .. }) if self.allow_copy => {
                self.copy_fallbacks += 1;
                Ok(self.build_copy(reqs))
            }
            r => r,
        }
    }

    /// Builds and submits a batch; returns the cookies in order.
    ///
    /// # Safety
    /// The device reads and writes the requests' buffers until their
    /// completions are reaped: they must stay alive and unaliased until then.
    pub unsafe fn submit(&mut self, reqs: &[Request<'_>]) -> Result<Vec<u64>, ClientError> {
        let built = self.build_or_copy(reqs)?;
        let mut done = 0usize;
        while done < built.reqs.len() {
            let n = self.transport.submit(&built.reqs[done..], built.flags)? as usize;
            if n == 0 {
                return Err(ClientError::Os(libc::EAGAIN));
            }
            done += n;
        }
        Ok(built.reqs.iter().map(|r| r.header.cookie).collect())
    }

    /// Reaps up to `max` completions.
    pub fn reap(&mut self, max: usize, timeout_ms: i32) -> Result<Vec<IocCompletion>, ClientError> {
        let mut out = vec![IocCompletion::default(); max.clamp(1, MAX_BATCH as usize)];
        let n = self.transport.reap(&mut out, timeout_ms)?;
        out.truncate(n);
        Ok(out)
    }

    /// Submits a batch and waits for all of its completions, returned in
    /// request order. The borrows of the buffers last until then, so this
    /// is safe. When the driver takes only part of the batch and then
    /// fails, the part it took is still reaped before the error returns:
    /// the device may write into those buffers until it completes them.
    pub fn run(&mut self, reqs: &mut [Request<'_>]) -> Result<Vec<IocCompletion>, ClientError> {
        let built = self.build_or_copy(reqs)?;
        let first = built.reqs[0].header.cookie;
        let mut accepted = 0usize;
        let mut failed = None;
        while accepted < built.reqs.len() {
            match self.transport.submit(&built.reqs[accepted..], built.flags) {
                Ok(0) => failed = Some(ClientError::Os(libc::EAGAIN)),
                Ok(n) => accepted += n as usize,
                Err(e) => failed = Some(e),
            }
            if failed.is_some() {
                break;
            }
        }
        let mut got: Vec<Option<IocCompletion>> = vec![None; accepted];
        let drained = self.reap_accepted(first, &mut got);
        if let Some(e) = failed {
            return Err(e);
        }
        drained?;
        Ok(got.into_iter().map(|c| c.unwrap_or_default()).collect())
    }

    /// Reaps the completions of cookies `first..first + got.len()`. Returns
    /// early only when the driver says nothing is in flight (`ENOENT`);
    /// other reap errors are retried, and if they persist the process is
    /// aborted: returning would end the buffers' borrows while the device
    /// may still write into them.
    fn reap_accepted(
        &mut self,
        first: u64,
        got: &mut [Option<IocCompletion>],
    ) -> Result<(), ClientError> {
        let mut left = got.len();
        let mut failures = 0u32;
        while left > 0 {
            match self.reap(left, -1) {
                Ok(cs) => {
                    for c in cs {
                        let i = c.cookie.wrapping_sub(first) as usize;
                        if i < got.len() && got[i].is_none() {
                            got[i] = Some(c);
                            left -= 1;
                        }
                    }
                }
                Err(ClientError::Os(libc::ENOENT)) => return Err(ClientError::Os(libc::ENOENT)),
                Err(e) => {
                    failures += 1;
                    if failures > 1000 {
                        eprintln!(
                            "pktslab: cannot reap {left} requests still in flight ({e}); aborting, as returning would let the device write into freed buffers"
                        );
                        std::process::abort();
                    }
                    std::thread::sleep(std::time::Duration::from_millis(10));
                }
            }
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------
// C API
// ---------------------------------------------------------------------------

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
            crate::backend::set_errno(libc::ENODEV);
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

/// Builds and submits `n` requests; fills each op's cookie. Returns the
/// number submitted or -errno (-EFAULT: a buffer is not pinned).
///
/// # Safety
/// `ops` has `n` entries whose iov arrays are valid; every buffer stays
/// alive until its completion is reaped.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn pktslab_client_submit(c: *mut CClient, ops: *mut COp, n: u32) -> c_int {
    if c.is_null() || ops.is_null() {
        return -libc::EINVAL;
    }
    // SAFETY: C contract.
    let (cl, ops) = unsafe {
        (
            &mut (*c).client,
            core::slice::from_raw_parts_mut(ops, n as usize),
        )
    };
    let mut reqs = Vec::with_capacity(ops.len());
    for o in ops.iter() {
        let mut r = Request::new(o.op)
            .aux(o.aux)
            .key_slot(o.key_slot)
            .params(&o.params);
        let ins = if o.n_in == 0 {
            &[][..]
        } else {
            // SAFETY: C contract.
            unsafe { core::slice::from_raw_parts(o.inputs, o.n_in as usize) }
        };
        let outs = if o.n_out == 0 {
            &[][..]
        } else {
            // SAFETY: C contract.
            unsafe { core::slice::from_raw_parts(o.outputs, o.n_out as usize) }
        };
        for v in ins {
            // SAFETY: C contract: the iov describes live memory.
            let s = unsafe { core::slice::from_raw_parts(v.base.cast::<u8>(), v.len) };
            r = match r.input(s) {
                Ok(r) => r,
                Err(e) => return c_err(e),
            };
        }
        for v in outs {
            // SAFETY: C contract: the iov describes live, writable memory.
            let s =
                unsafe { core::slice::from_raw_parts_mut(v.base.cast::<u8>().cast_mut(), v.len) };
            r = match r.output(s) {
                Ok(r) => r,
                Err(e) => return c_err(e),
            };
        }
        reqs.push(r);
    }
    // SAFETY: C contract: buffers live until reaped.
    match unsafe { cl.submit(&reqs) } {
        Ok(cookies) => {
            for (o, ck) in ops.iter_mut().zip(&cookies) {
                o.cookie = *ck;
            }
            cookies.len() as c_int
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
    match cl.transport_mut().reap(out, timeout_ms) {
        Ok(n) => n as c_int,
        Err(e) => c_err(e),
    }
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
