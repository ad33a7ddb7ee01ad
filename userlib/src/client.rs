//! The accelerator client: the one way requests reach `/dev/pktaccel`.
//!
//! [`Request`] (in `request.rs`) borrows the buffers; the [`Client`] turns
//! a batch into ioctl structures (zero-copy when v2p finds every buffer
//! pinned, the driver's copy path otherwise, as [`CopyMode`] says),
//! chooses the queue of every request, submits, and reaps every
//! completion before it returns, even after an error, so the device never
//! writes into a buffer whose borrow has ended. The ioctls themselves are
//! in [`ioctl`]; the C API (`pktslab_client_*`) in `capi.rs`.

use std::time::{Duration, Instant};

use pktaccel_abi::{IocCompletion, IocInfo, IocRequest, MAX_BATCH};

mod c_types;
mod capi;
pub mod ioctl;
mod request;

pub use c_types::{CIov, CLimits, COp};
pub use request::{Built, Request, split_segments};

use crate::pool::Pool;
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
    ///
    /// # Safety
    /// As [`ioctl::submit`]: the segment arrays are valid for the call,
    /// and the buffers they name stay alive and unaliased until their
    /// completions are reaped.
    unsafe fn submit(&mut self, reqs: &[IocRequest], flags: u32) -> Result<u32, ClientError>;
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

/// A client: a pool for v2p, a transport, cookies, the queue choice and
/// an optional latency hook.
pub struct Client<'p, T: Transport> {
    pool: &'p Pool,
    transport: T,
    next_cookie: u64,
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
        Self {
            pool,
            transport,
            next_cookie: 1,
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
        request::build(self.pool, reqs, &mut self.next_cookie)
    }

    /// Builds zero-copy requests, or copy-mode ones as the copy mode says,
    /// with queues chosen for requests `first..` of the batch.
    fn build_for(&mut self, reqs: &[Request<'_>], first: usize) -> Result<Built, ClientError> {
        let mut built = match self.copy {
            CopyMode::Always => request::build_copy(reqs, &mut self.next_cookie),
            CopyMode::Never => self.build(reqs)?,
            CopyMode::Fallback => match self.build(reqs) {
                Err(ClientError::NotPinned { .. }) => {
                    self.copy_fallbacks += 1;
                    request::build_copy(reqs, &mut self.next_cookie)
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

    /// Builds and submits a batch; returns the cookies in order.
    ///
    /// # Safety
    /// The device reads and writes the requests' buffers until their
    /// completions are reaped: they must stay alive and unaliased until then.
    pub unsafe fn submit(&mut self, reqs: &[Request<'_>]) -> Result<Vec<u64>, ClientError> {
        let built = self.build_for(reqs, 0)?;
        let mut done = 0usize;
        while done < built.reqs.len() {
            // SAFETY: `built` holds the segment arrays through the call, and
            // this function's caller keeps the buffers until they are reaped.
            let n = unsafe { self.transport.submit(&built.reqs[done..], built.flags) }? as usize;
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
        let n = self.reap_into(&mut out, timeout_ms)?;
        out.truncate(n);
        Ok(out)
    }

    /// Reaps up to `out.len()` completions into `out`; returns how many.
    pub fn reap_into(
        &mut self,
        out: &mut [IocCompletion],
        timeout_ms: i32,
    ) -> Result<usize, ClientError> {
        self.transport.reap(out, timeout_ms)
    }

    /// Submits any number of requests and waits for all of their
    /// completions, returned in request order. The borrows of the buffers
    /// last until then, so this is safe. Batches above `MAX_BATCH` go in
    /// pieces, reaping between them so the driver's completion ring never
    /// fills. When the driver takes only part and then fails, the part it
    /// took is still reaped before the error returns: the device may write
    /// into those buffers until it completes them.
    pub fn run(&mut self, reqs: &mut [Request<'_>]) -> Result<Vec<IocCompletion>, ClientError> {
        if reqs.is_empty() {
            return Err(ClientError::BatchSize(0));
        }
        let batches = reqs
            .chunks(MAX_BATCH as usize)
            .enumerate()
            .map(|(i, chunk)| self.build_for(chunk, i * MAX_BATCH as usize))
            .collect::<Result<Vec<_>, _>>()?;
        let mut flight = InFlight::new(batches[0].reqs[0].header.cookie, reqs.len());
        let failed = self.submit_all(&batches, &mut flight).err();
        let drained = self.drain(&mut flight);
        if let Some(e) = failed {
            return Err(e);
        }
        drained?;
        Ok(flight
            .got
            .into_iter()
            .map(Option::unwrap_or_default)
            .collect())
    }

    /// Submits every request of `batches`, reaping between pieces.
    fn submit_all(&mut self, batches: &[Built], flight: &mut InFlight) -> Result<(), ClientError> {
        let per = MAX_BATCH as usize;
        while flight.accepted < flight.got.len() {
            let b = &batches[flight.accepted / per];
            let at = Instant::now();
            // SAFETY: `batches` holds the segment arrays through the call;
            // the buffers are borrowed by `run`'s requests, and `run` reaps
            // every accepted request (`drain`) before those borrows end, or
            // aborts the process.
            let sent = unsafe {
                self.transport
                    .submit(&b.reqs[flight.accepted % per..], b.flags)
            };
            match sent? {
                0 => return Err(ClientError::Os(libc::EAGAIN)),
                n => flight.accept(n as usize, at),
            }
            if flight.accepted < flight.got.len() {
                self.reap_some(flight)?;
            }
        }
        Ok(())
    }

    /// Reaps until every accepted request has completed. Returns early only
    /// when the driver says nothing is in flight (`ENOENT`).
    fn drain(&mut self, flight: &mut InFlight) -> Result<(), ClientError> {
        while flight.reaped < flight.accepted {
            self.reap_some(flight)?;
        }
        Ok(())
    }

    /// Waits for at least one completion of `flight` and records what
    /// comes. A signal (`EINTR`) just waits again; other reap errors are
    /// retried, and if they persist the process is aborted: returning
    /// would end the buffers' borrows while the device may still write
    /// into them.
    fn reap_some(&mut self, flight: &mut InFlight) -> Result<(), ClientError> {
        let mut out = [IocCompletion::default(); MAX_BATCH as usize];
        let room = (flight.accepted - flight.reaped).clamp(1, out.len());
        match self.transport.reap(&mut out[..room], -1) {
            Ok(n) => {
                let now = Instant::now();
                for c in &out[..n] {
                    if let Some(sent) = flight.complete(c)
                        && let Some(hook) = self.on_latency.as_mut()
                    {
                        hook(now.duration_since(sent));
                    }
                }
                Ok(())
            }
            Err(ClientError::Os(libc::ENOENT)) => Err(ClientError::Os(libc::ENOENT)),
            Err(ClientError::Os(libc::EINTR)) => Ok(()),
            Err(e) => {
                flight.failures += 1;
                if flight.failures > 1000 {
                    eprintln!(
                        "pktslab: cannot reap {} requests still in flight ({e}); aborting, as returning would let the device write into freed buffers",
                        flight.accepted - flight.reaped
                    );
                    std::process::abort();
                }
                std::thread::sleep(Duration::from_millis(10));
                Ok(())
            }
        }
    }
}

/// The requests of one [`Client::run`]: cookies `first..first + n`, how
/// many the driver accepted and when, and the completions so far.
struct InFlight {
    first: u64,
    got: Vec<Option<IocCompletion>>,
    sent_at: Vec<Instant>,
    accepted: usize,
    reaped: usize,
    failures: u32,
}

impl InFlight {
    fn new(first: u64, n: usize) -> Self {
        Self {
            first,
            got: vec![None; n],
            sent_at: Vec::with_capacity(n),
            accepted: 0,
            reaped: 0,
            failures: 0,
        }
    }

    /// The driver took the next `n` requests, submitted `at`.
    fn accept(&mut self, n: usize, at: Instant) {
        let n = n.min(self.got.len() - self.accepted);
        self.sent_at.resize(self.accepted + n, at);
        self.accepted += n;
    }

    /// Records `c` if it is one of ours and new; returns when it was
    /// submitted.
    fn complete(&mut self, c: &IocCompletion) -> Option<Instant> {
        let i = c.cookie.wrapping_sub(self.first) as usize;
        let slot = self.got[..self.accepted].get_mut(i)?;
        if slot.is_some() {
            return None;
        }
        *slot = Some(*c);
        self.reaped += 1;
        Some(self.sent_at[i])
    }
}
