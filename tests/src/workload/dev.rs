//! The accelerator as the workloads see it: a private pktslab pool on
//! `/dev/pktaccel` (so buffers are pinned and v2p works) plus the raw
//! submit/reap/info/stats ioctls on the file that owns the slabs.
//!
//! Requests are built here rather than with `pktslab::Client` because the
//! workloads choose the queue of every request and time each completion.

use std::path::Path;
use std::time::Instant;

use anyhow::{Result, anyhow, bail};
use pktaccel_abi::*;
use pktslab::client::{ClientError, DeviceTransport, Transport, split_segments};
use pktslab::{BackendChoice, BackendMode, Config, PinnedBuf, Pool};

/// Default device node.
pub const DEV_PATH: &str = "/dev/pktaccel";

/// Symbolic name of an errno the driver returns, with its description.
pub fn errno_name(e: i32) -> String {
    let name = match e {
        libc::EPERM => "EPERM",
        libc::ENOENT => "ENOENT",
        libc::EIO => "EIO",
        libc::E2BIG => "E2BIG",
        libc::EBADF => "EBADF",
        libc::EAGAIN => "EAGAIN",
        libc::ENOMEM => "ENOMEM",
        libc::EACCES => "EACCES",
        libc::EFAULT => "EFAULT",
        libc::EBUSY => "EBUSY",
        libc::ENODEV => "ENODEV",
        libc::EINVAL => "EINVAL",
        libc::ENOTTY => "ENOTTY",
        libc::ENOSPC => "ENOSPC",
        libc::ENOKEY => "ENOKEY",
        libc::ETIMEDOUT => "ETIMEDOUT",
        libc::EOVERFLOW => "EOVERFLOW",
        libc::EMSGSIZE => "EMSGSIZE",
        _ => "errno",
    };
    format!(
        "{name} ({}, errno {e})",
        std::io::Error::from_raw_os_error(e).kind()
    )
}

fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

/// A buffer handed to the device: pointer, length, `SEG_IN`/`SEG_OUT`.
#[derive(Debug, Clone, Copy)]
pub struct Seg {
    /// First byte.
    pub ptr: *const u8,
    /// Bytes.
    pub len: usize,
    /// Direction.
    pub dir: u32,
}

impl Seg {
    /// A buffer the device reads.
    pub fn input(b: &[u8]) -> Self {
        Self {
            ptr: b.as_ptr(),
            len: b.len(),
            dir: SEG_IN,
        }
    }
    /// A buffer the device writes.
    pub fn output(b: &mut [u8]) -> Self {
        Self {
            ptr: b.as_mut_ptr(),
            len: b.len(),
            dir: SEG_OUT,
        }
    }
}

/// One request: header fields plus buffers.
#[derive(Debug, Clone)]
pub struct Job {
    /// Header (cookie and queue are assigned at submission).
    pub header: RequestHeader,
    /// Inputs, then outputs.
    pub segs: Vec<Seg>,
}

impl Job {
    /// A request for `op` with `aux` and no buffers.
    pub fn new(op: u16, aux: u32) -> Self {
        Self {
            header: RequestHeader {
                op,
                aux,
                ..Default::default()
            },
            segs: Vec::new(),
        }
    }
    /// Sets the op parameters (RSS key, GCM IV).
    pub fn params(mut self, p: &[u8]) -> Self {
        let n = p.len().min(40);
        self.header.params[..n].copy_from_slice(&p[..n]);
        self
    }
    /// Sets the key slot.
    pub fn slot(mut self, s: u32) -> Self {
        self.header.key_slot = s;
        self
    }
    /// Adds an input buffer.
    pub fn input(mut self, b: &[u8]) -> Self {
        self.segs.push(Seg::input(b));
        self
    }
    /// Adds an output buffer.
    pub fn output(mut self, b: &mut [u8]) -> Self {
        self.segs.push(Seg::output(b));
        self
    }
}

/// `/dev/pktaccel` with a private pinned pool.
pub struct Device {
    pool: Pool,
    fd: i32,
    info: IocInfo,
}

impl Device {
    /// Opens the device (uncached slabs unless `caching` says otherwise).
    /// A missing node or driver is a clear error, not a fallback.
    pub fn open(caching: u32) -> Result<Self> {
        let path = std::env::var("PKTSLAB_DEVICE").unwrap_or_else(|_| DEV_PATH.into());
        if !Path::new(&path).exists() {
            bail!(
                "no pktaccel device: {path} does not exist (is pktaccel.ko loaded? these tools run in the guest)"
            );
        }
        let cpath = std::ffi::CString::new(path.clone())?;
        let cfg = Config {
            backend: BackendChoice::Device,
            device_path: Box::leak(cpath.into_boxed_c_str()),
            caching,
            arena_size: 4 << 30,
            ..Config::default()
        };
        let pool =
            Pool::new(cfg).map_err(|e| anyhow!("cannot set up pinned memory on {path}: {e}"))?;
        if pool.mode() != BackendMode::Device {
            bail!(
                "cannot open {path}: the pktaccel driver did not accept it (permissions or driver state)"
            );
        }
        let fd = pool
            .device_fd()
            .ok_or_else(|| anyhow!("{path}: no device file behind the pool"))?;
        let mut info = IocInfo::default();
        // SAFETY: the ioctl writes one IocInfo into `info`.
        if unsafe { libc::ioctl(fd, PKTACCEL_IOC_INFO as _, &raw mut info) } < 0 {
            bail!(
                "PKTACCEL_IOC_INFO on {path} failed: {}",
                errno_name(errno())
            );
        }
        Ok(Self { pool, fd, info })
    }

    /// Device config and driver limits as read at open.
    pub fn info(&self) -> &IocInfo {
        &self.info
    }

    /// Number of request queues.
    pub fn queues(&self) -> u32 {
        self.info.config.num_queues.max(1)
    }

    /// Does the device advertise `op`?
    pub fn has_op(&self, op: u16) -> bool {
        self.info.config.ops & (1 << op) != 0
    }

    /// This file's counters.
    pub fn stats(&self) -> Result<IocStats> {
        let mut s = IocStats::default();
        // SAFETY: the ioctl writes one IocStats into `s`.
        if unsafe { libc::ioctl(self.fd, PKTACCEL_IOC_STATS as _, &raw mut s) } < 0 {
            bail!("PKTACCEL_IOC_STATS failed: {}", errno_name(errno()));
        }
        Ok(s)
    }

    /// The pinned pool.
    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    /// A zeroed pinned buffer.
    pub fn pinned(&self, len: usize) -> Result<PinnedBuf<'_>> {
        self.pool
            .alloc(len)
            .map_err(|e| anyhow!("pinned allocation of {len} bytes: {e}"))
    }

    /// Submits `jobs` (zero-copy, or `copy` for ordinary memory through the
    /// driver's bounce buffers), queue `i % queues` for job `i` (all on
    /// queue 0 when `queues` is 1), and waits for every completion. Returns
    /// completions in job order; `lat_ns`, if given, gets each request's
    /// submit-to-reap time.
    ///
    /// # Safety
    /// Every segment of every job must be valid for its length (readable,
    /// and writable for outputs) and not otherwise accessed until this
    /// returns.
    pub unsafe fn run(
        &self,
        jobs: &[Job],
        copy: bool,
        queues: u32,
        mut lat_ns: Option<&mut Vec<u64>>,
    ) -> Result<Vec<IocCompletion>> {
        if jobs.is_empty() {
            return Ok(Vec::new());
        }
        let mut segs = Vec::new();
        let mut spans = Vec::with_capacity(jobs.len());
        for j in jobs {
            let start = segs.len();
            for s in &j.segs {
                if copy {
                    segs.push(IocSegment {
                        addr: s.ptr as u64,
                        len: s.len as u32,
                        dir: s.dir,
                    });
                } else {
                    split_segments(&self.pool, s.ptr, s.len, s.dir, &mut segs)
                        .map_err(|e| anyhow!("{e}"))?;
                }
            }
            spans.push((start, segs.len() - start));
        }
        let base = segs.as_ptr();
        let reqs: Vec<IocRequest> = jobs
            .iter()
            .zip(&spans)
            .enumerate()
            .map(|(i, (j, &(start, n)))| {
                let mut header = j.header;
                header.cookie = i as u64;
                let queue = if queues <= 1 { 0 } else { i as u32 % queues };
                IocRequest {
                    header,
                    segs: base.wrapping_add(start) as u64,
                    nsegs: n as u32,
                    queue,
                }
            })
            .collect();
        let flags = if copy { SUBMIT_COPY } else { 0 };
        let mut dev = DeviceTransport::for_pool(&self.pool).map_err(|e| anyhow!("{e}"))?;
        let mut got: Vec<Option<IocCompletion>> = vec![None; jobs.len()];
        let mut left = jobs.len();
        let mut submitted = 0usize;
        let t0 = Instant::now();
        let mut comps = vec![IocCompletion::default(); MAX_BATCH as usize];
        while left > 0 {
            if submitted < reqs.len() {
                let chunk = &reqs[submitted..(submitted + MAX_BATCH as usize).min(reqs.len())];
                // The segment arrays `chunk` points into stay alive in
                // `segs` until every request is reaped (this fn's contract).
                match dev.submit(chunk, flags) {
                    Ok(n) => submitted += n as usize,
                    Err(e) => {
                        // Reap what is in flight before reporting, so no
                        // buffer stays with the device.
                        drain(&mut dev, &mut comps, jobs.len() - left, submitted);
                        bail!("submit rejected by the driver: {}", client_error(&e));
                    }
                }
            }
            let count = match dev.reap(&mut comps, 10_000) {
                Ok(0) => bail!("the device did not complete {left} request(s) within 10 s"),
                Ok(n) => n,
                Err(e) => bail!("reap failed: {}", client_error(&e)),
            };
            let now = t0.elapsed().as_nanos() as u64;
            for c in &comps[..count] {
                if let Some(slot) = got.get_mut(c.cookie as usize)
                    && slot.is_none()
                {
                    *slot = Some(*c);
                    left -= 1;
                    if let Some(l) = lat_ns.as_deref_mut() {
                        l.push(now);
                    }
                }
            }
        }
        Ok(got.into_iter().map(Option::unwrap_or_default).collect())
    }

    /// Runs one request and returns its completion; a non-OK device status
    /// is an error naming the status.
    ///
    /// # Safety
    /// As [`Device::run`].
    pub unsafe fn call(&self, job: &Job, copy: bool) -> Result<IocCompletion> {
        // SAFETY: forwarded contract.
        let c = unsafe { self.run(std::slice::from_ref(job), copy, 1, None) }?.remove(0);
        if c.status != STATUS_OK {
            bail!(
                "the device answered {} (status {}) to {}",
                status_name(c.status),
                c.status,
                op_name(job.header.op)
            );
        }
        Ok(c)
    }
}

/// Best-effort reap of `inflight - done` outstanding completions after an
/// error, so their buffers are released before the caller frees them.
fn drain(dev: &mut DeviceTransport, comps: &mut [IocCompletion], done: usize, inflight: usize) {
    let mut left = inflight.saturating_sub(done);
    while left > 0 {
        match dev.reap(comps, 10_000) {
            Ok(n) if n > 0 => left = left.saturating_sub(n),
            _ => return,
        }
    }
}

/// A client error as the tools print it: errnos by their name.
fn client_error(e: &ClientError) -> String {
    match e {
        ClientError::Os(errno) => errno_name(*errno).to_string(),
        other => other.to_string(),
    }
}
