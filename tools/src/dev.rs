//! The accelerator as the tools and workloads see it: a private pktslab
//! pool on `/dev/pktaccel` (so buffers are pinned and v2p works), the
//! device's limits, and [`Client`]s on the file that owns the slabs.

use std::path::Path;

use anyhow::{Result, anyhow, bail};
use pktaccel_abi::*;
use pktslab::client::ioctl;
use pktslab::{
    BackendChoice, BackendMode, Client, ClientError, Config, CopyMode, DeviceTransport, PinnedBuf,
    Pool, Request,
};

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

/// `/dev/pktaccel` with a private pinned pool.
pub struct Device {
    pool: Pool,
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
        let info = ioctl::info(fd)
            .map_err(|e| anyhow!("PKTACCEL_IOC_INFO on {path} failed: {}", errno_name(e)))?;
        Ok(Self { pool, info })
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
        let fd = self
            .pool
            .device_fd()
            .ok_or_else(|| anyhow!("no device file behind the pool"))?;
        ioctl::stats(fd).map_err(|e| anyhow!("PKTACCEL_IOC_STATS failed: {}", errno_name(e)))
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

    /// A client on this device: zero-copy, or with `copy` every request
    /// through the driver's bounce buffers (ordinary memory).
    pub fn client(&self, copy: bool) -> Result<Client<'_, DeviceTransport>> {
        let mut c = Client::open(&self.pool).map_err(|e| anyhow!("{}", client_error(&e)))?;
        c.copy_mode(if copy {
            CopyMode::Always
        } else {
            CopyMode::Never
        });
        Ok(c)
    }

    /// Runs one request and returns its completion; a non-OK device status
    /// is an error naming the status.
    pub fn call(&self, req: Request<'_>, copy: bool) -> Result<IocCompletion> {
        let op = req.header.op;
        let c = run(&mut self.client(copy)?, &mut [req])?.remove(0);
        if c.status != STATUS_OK {
            bail!(
                "the device answered {} (status {}) to {}",
                status_name(c.status),
                c.status,
                op_name(op)
            );
        }
        Ok(c)
    }
}

/// [`Client::run`] with its error as the tools print it.
pub fn run(
    client: &mut Client<'_, DeviceTransport>,
    reqs: &mut [Request<'_>],
) -> Result<Vec<IocCompletion>> {
    client
        .run(reqs)
        .map_err(|e| anyhow!("the driver refused the requests: {}", client_error(&e)))
}

/// A client error as the tools print it: errnos by their name.
pub fn client_error(e: &ClientError) -> String {
    match e {
        ClientError::Os(errno) => errno_name(*errno),
        other => other.to_string(),
    }
}

/// The `--caching` names: `uc` (the default), `wc`, `wb`.
pub fn caching(name: &str) -> u32 {
    match name {
        "wc" => CACHE_WRITE_COMBINING,
        "wb" => CACHE_WRITE_BACK,
        _ => CACHE_UNCACHED,
    }
}
