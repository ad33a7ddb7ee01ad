//! The accelerator client: the one way requests reach `/dev/pktaccel`.
//!
//! [`Request`] (in `request.rs`) borrows the buffers; the [`Client`] turns
//! a batch into ioctl structures (zero-copy when v2p finds every buffer
//! pinned, the driver's copy path otherwise, as [`CopyMode`] says),
//! chooses the queue of every request, submits, and reaps every
//! completion before it returns, even after an error, so the device never
//! writes into a buffer whose borrow has ended. The ioctls themselves are
//! in [`ioctl`]; the C API (`pktslab_client_*`) in `capi.rs`; `run` and
//! its bookkeeping in `run.rs`.
//!
//! Several clients may share one device file (libpktcrc's and the OpenSSL
//! provider's beside the program's own, one per thread): their cookies
//! carry the client's id, and a completion one of them reaps for another
//! is handed to its owner ([`router`]), so each client sees exactly its own.

use std::time::{Duration, Instant};

use pktaccel_abi::{IocCompletion, IocInfo, IocRequest, MAX_BATCH};

mod c_types;
mod capi;
pub mod ioctl;
mod request;
pub mod router;
mod run;

pub use c_types::{CIov, CLimits, COp};
pub use request::{Built, Request, split_segments};

use crate::pool::Pool;
use crate::v2p::V2pError;
use router::{FileKey, Route};

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
    ///
    /// # Safety
    /// As [`ioctl::submit`]: the segment arrays are valid for the call,
    /// and the buffers they name stay alive and unaliased until their
    /// completions are reaped.
    unsafe fn submit(&mut self, reqs: &[IocRequest], flags: u32) -> Result<u32, ClientError>;
    /// Collects up to `out.len()` completions, waiting up to `timeout_ms`
    /// for the first (negative = forever).
    fn reap(&mut self, out: &mut [IocCompletion], timeout_ms: i32) -> Result<usize, ClientError>;
    /// The device file's descriptor, which identifies the file its clients
    /// share; `None` (test doubles): clients of one pool share a file.
    fn fd(&self) -> Option<i32> {
        None
    }
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
    unsafe fn submit(&mut self, reqs: &[IocRequest], flags: u32) -> Result<u32, ClientError> {
        // SAFETY: this function's own contract is ioctl::submit's.
        match unsafe { ioctl::submit(self.fd, reqs, flags) } {
            Ok(n) => Ok(n),
            Err(e) if e.queued > 0 => Ok(e.queued),
            Err(e) => Err(ClientError::Os(e.errno)),
        }
    }

    fn reap(&mut self, out: &mut [IocCompletion], timeout_ms: i32) -> Result<usize, ClientError> {
        let room = out.len().min(MAX_BATCH as usize);
        match ioctl::reap(self.fd, &mut out[..room], timeout_ms) {
            Ok(n) => Ok(n),
            Err(libc::EAGAIN | libc::ETIMEDOUT) => Ok(0),
            Err(e) => Err(ClientError::Os(e)),
        }
    }

    fn fd(&self) -> Option<i32> {
        Some(self.fd)
    }
}

/// What a client does with buffers v2p finds no physical address for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CopyMode {
    /// Refuse the batch ([`ClientError::NotPinned`]).
    #[default]
    Never,
    /// Send that batch through the driver's copy path (counted in
    /// [`Client::copy_fallbacks`]).
    Fallback,
    /// Send every batch through the copy path, pinned or not: the slow
    /// baseline the tools' `--copy` measures.
    Always,
}

/// Called with each request's time from submit to reap.
pub type LatencyHook<'h> = Box<dyn FnMut(Duration) + 'h>;

/// A client: a pool for v2p, a transport, its place on the device file
/// (cookies and mail, [`router`]), the queue choice and an optional
/// latency hook.
pub struct Client<'p, T: Transport> {
    pool: &'p Pool,
    transport: T,
    route: Route,
    /// Requests of [`Client::submit`] not yet reaped by [`Client::reap_into`].
    outstanding: usize,
    copy: CopyMode,
    copy_fallbacks: u64,
    queues: u32,
    on_latency: Option<LatencyHook<'p>>,
}

impl<'p> Client<'p, DeviceTransport> {
    /// A client on the pool's device.
    pub fn open(pool: &'p Pool) -> Result<Self, ClientError> {
        Ok(Self::with_transport(pool, DeviceTransport::for_pool(pool)?))
    }

    /// The device's config and the driver's limits.
    pub fn info(&self) -> Result<IocInfo, ClientError> {
        ioctl::info(self.transport.fd).map_err(ClientError::Os)
    }
}

impl<'p, T: Transport> Client<'p, T> {
    /// A client over any transport (tests use a software device).
    pub fn with_transport(pool: &'p Pool, transport: T) -> Self {
        let key = match transport.fd() {
            Some(fd) => FileKey::Fd(fd),
            None => FileKey::Pool(core::ptr::from_ref(pool) as usize),
        };
        Self {
            pool,
            transport,
            route: Route::join(key),
            outstanding: 0,
            copy: CopyMode::Never,
            copy_fallbacks: 0,
            queues: 0,
            on_latency: None,
        }
    }

    /// Allow batches with unpinned buffers to go through the driver's copy
    /// path instead of failing ([`CopyMode::Fallback`]).
    pub fn allow_copy(&mut self, yes: bool) {
        self.copy = if yes {
            CopyMode::Fallback
        } else {
            CopyMode::Never
        };
    }

    /// Sets what happens to buffers that are not pinned.
    pub fn copy_mode(&mut self, mode: CopyMode) {
        self.copy = mode;
    }

    /// Batches sent in copy mode because a buffer was not pinned (ordinary
    /// memory: above PKTSLAB_PIN_MAX, past the pin cap, or a forked
    /// child's copy of its parent's heap).
    pub fn copy_fallbacks(&self) -> u64 {
        self.copy_fallbacks
    }

    /// Spreads each batch over queues `0..queues`: request `i` goes to
    /// queue `i % queues`. 0 (the default) lets the driver choose.
    pub fn spread_over(&mut self, queues: u32) {
        self.queues = queues;
    }

    /// Calls `hook` with each request's time from submit to reap (in
    /// [`Client::run`]); `None` stops it.
    pub fn on_latency(&mut self, hook: Option<LatencyHook<'p>>) {
        self.on_latency = hook;
    }

    /// Builds the ioctl structures for a batch and assigns cookies.
    pub fn build(&mut self, reqs: &[Request<'_>]) -> Result<Built, ClientError> {
        request::build(self.pool, reqs, &mut self.route)
    }

    /// Builds zero-copy requests, or copy-mode ones as the copy mode says,
    /// with queues chosen for requests `first..` of the batch.
    fn build_for(&mut self, reqs: &[Request<'_>], first: usize) -> Result<Built, ClientError> {
        let mut built = match self.copy {
            CopyMode::Always => request::build_copy(reqs, &mut self.route),
            CopyMode::Never => self.build(reqs)?,
            CopyMode::Fallback => match self.build(reqs) {
                Err(ClientError::NotPinned { .. }) => {
                    self.copy_fallbacks += 1;
                    request::build_copy(reqs, &mut self.route)
                }
                r => r?,
            },
        };
        if self.queues > 0 {
            for (i, r) in built.reqs.iter_mut().enumerate() {
                r.queue = ((first + i) % self.queues as usize) as u32;
            }
        }
        Ok(built)
    }

    /// Builds and submits a batch; returns the cookies in order. When the
    /// driver stops part-way the error returns and the accepted part stays
    /// in flight: [`Client::submit_prefix`] says which part that is.
    ///
    /// # Safety
    /// The device reads and writes the requests' buffers until their
    /// completions are reaped: they must stay alive and unaliased until then.
    pub unsafe fn submit(&mut self, reqs: &[Request<'_>]) -> Result<Vec<u64>, ClientError> {
        // SAFETY: the same contract.
        let s = unsafe { self.submit_prefix(reqs) }?;
        match s.error {
            None => Ok(s.cookies),
            Some(e) => Err(e),
        }
    }

    /// Builds and submits a batch; returns the cookies of the requests the
    /// driver accepted (a prefix of `reqs`) and, when that is not all of
    /// them, why it stopped. `Err` only when nothing was submitted because
    /// the batch could not be built.
    ///
    /// # Safety
    /// As [`Client::submit`], for the accepted requests.
    pub unsafe fn submit_prefix(&mut self, reqs: &[Request<'_>]) -> Result<Submitted, ClientError> {
        if self.route.refresh() {
            self.outstanding = 0;
        }
        let built = self.build_for(reqs, 0)?;
        let mut done = 0usize;
        let mut error = None;
        while done < built.reqs.len() {
            // SAFETY: `built` holds the segment arrays through the call, and
            // this function's caller keeps the buffers until they are reaped.
            match unsafe { self.transport.submit(&built.reqs[done..], built.flags) } {
                Ok(0) => error = Some(ClientError::Os(libc::EAGAIN)),
                Ok(n) => done += (n as usize).min(built.reqs.len() - done),
                Err(e) => error = Some(e),
            }
            if error.is_some() {
                break;
            }
        }
        self.outstanding += done;
        let cookies = built.reqs[..done].iter().map(|r| r.header.cookie).collect();
        Ok(Submitted { cookies, error })
    }

    /// Reaps up to `max` completions.
    pub fn reap(&mut self, max: usize, timeout_ms: i32) -> Result<Vec<IocCompletion>, ClientError> {
        let mut out = vec![IocCompletion::default(); max.clamp(1, MAX_BATCH as usize)];
        let n = self.reap_into(&mut out, timeout_ms)?;
        out.truncate(n);
        Ok(out)
    }

    /// Reaps up to `out.len()` completions of this client's
    /// [`Client::submit`]s into `out`; returns how many. `timeout_ms` as
    /// REAP's; `ENOENT` when none of this client's requests is in flight.
    /// Other clients' completions met on the way go to their owners.
    pub fn reap_into(
        &mut self,
        out: &mut [IocCompletion],
        timeout_ms: i32,
    ) -> Result<usize, ClientError> {
        if self.route.refresh() {
            self.outstanding = 0;
        }
        let deadline = u64::try_from(timeout_ms)
            .ok()
            .filter(|&ms| ms > 0)
            .map(|ms| Instant::now() + Duration::from_millis(ms));
        let mut idle = 0;
        loop {
            let left = match deadline {
                None => timeout_ms,
                Some(d) => match d.checked_duration_since(Instant::now()) {
                    Some(l) if !l.is_zero() => l.as_millis().clamp(1, i32::MAX as u128) as i32,
                    _ => return Ok(0),
                },
            };
            // With nothing of ours in flight, one look (which still
            // reports a failing device, and posts what it meets) and no wait.
            let wait = if self.outstanding == 0 { 0 } else { left };
            match self.reap_once(out, wait) {
                Ok(0) if self.outstanding == 0 => return Err(ClientError::Os(libc::ENOENT)),
                Ok(0) if timeout_ms == 0 => return Ok(0),
                Ok(0) => {}
                Ok(n) => {
                    self.outstanding = self.outstanding.saturating_sub(n);
                    return Ok(n);
                }
                Err(ClientError::Os(libc::ENOENT)) if self.outstanding > 0 => {
                    self.mail_may_come(&mut idle)?;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// One reap for this client: its mail first, else the device (in short
    /// slices while other clients share the file, so mail posted during the
    /// wait is seen); others' completions go to their owners. Returns how
    /// many of this client's are at the front of `out`.
    fn reap_once(
        &mut self,
        out: &mut [IocCompletion],
        timeout_ms: i32,
    ) -> Result<usize, ClientError> {
        let n = self.route.take_mail(out);
        if n > 0 {
            return Ok(n);
        }
        let wait = if self.route.shared() && !(0..=SHARED_WAIT_MS).contains(&timeout_ms) {
            SHARED_WAIT_MS
        } else {
            timeout_ms
        };
        let got = self.transport.reap(out, wait)?;
        Ok(self.route.keep_own(&mut out[..got]))
    }

    /// The driver said nothing is in flight (`ENOENT`) while this client
    /// still waits for requests: another client may have reaped them and
    /// be about to post them. Waits a moment while that can be so (other
    /// clients live, up to a second); `ENOENT` otherwise. Mail that came
    /// meanwhile is found by the next [`Client::reap_once`].
    fn mail_may_come(&self, idle: &mut u32) -> Result<(), ClientError> {
        // Read before the mailbox: a client posts before it leaves.
        let shared = self.route.shared();
        if self.route.has_mail() {
            return Ok(());
        }
        if shared && *idle < 1000 {
            *idle += 1;
            std::thread::sleep(Duration::from_millis(1));
            return Ok(());
        }
        Err(ClientError::Os(libc::ENOENT))
    }
}

/// How long a client waits on the device at a time while other clients
/// share its file, milliseconds: the longest its own completion can sit in
/// the mailbox unseen.
const SHARED_WAIT_MS: i32 = 2;

/// What [`Client::submit_prefix`] got in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Submitted {
    /// Cookies of the accepted requests, in order (a prefix of the batch).
    pub cookies: Vec<u64>,
    /// Why the rest was not accepted, if any was left.
    pub error: Option<ClientError>,
}
