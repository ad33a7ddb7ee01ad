//! What the `kmod::` guest tests share: `/dev/pktaccel` ioctls and
//! mappings, argument structs on pages of chosen protection, debugfs
//! counters, forked children and shell commands.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use pktaccel_abi::*;
use pktslab::client::ioctl;

use crate::ensure;
use crate::harness::TestResult;

pub(super) const DEV: &str = "/dev/pktaccel";
const DEBUGFS_STATS: &str = "/sys/kernel/debug/pktaccel/stats";
pub(super) const MIB: u64 = 1024 * 1024;

pub(super) use pktslab::client::ioctl::errno;

pub(super) fn errname(e: i32) -> String {
    format!("{} (errno {e})", std::io::Error::from_raw_os_error(e))
}

/// `r` must have failed with `want`.
pub(super) fn expect_err<T>(r: Result<T, i32>, want: i32, what: &str) -> TestResult {
    match r {
        Ok(_) => Err(format!("{what}: succeeded, expected {}", errname(want))),
        Err(e) if e == want => Ok(()),
        Err(e) => Err(format!(
            "{what}: got {}, expected {}",
            errname(e),
            errname(want)
        )),
    }
}

pub(super) struct Dev {
    pub(super) f: File,
}

impl Dev {
    pub(super) fn open() -> Result<Dev, String> {
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .open(DEV)
            .map_err(|e| format!("open {DEV}: {e}"))?;
        Ok(Dev { f })
    }

    /// poll(2) on this file for `events`: the count it returned and the
    /// events it reported.
    pub(super) fn poll(&self, events: i16, timeout_ms: i32) -> (i32, i16) {
        let mut pfd = libc::pollfd {
            fd: self.f.as_raw_fd(),
            events,
            revents: 0,
        };
        // SAFETY: one valid pollfd, alive for the whole call.
        let n = unsafe { libc::poll(&mut pfd, 1, timeout_ms) };
        (n, pfd.revents)
    }

    /// Raw ioctl with a pointer to `arg`, for the bad-input cases (wrong
    /// numbers, sizes and argument contents); everything else goes through
    /// userlib's typed `client::ioctl`.
    pub(super) fn ioctl<T>(&self, cmd: u32, arg: &mut T) -> Result<(), i32> {
        // SAFETY: `arg` is a valid, writable `T` for the whole call; the
        // driver reads/writes at most the size encoded in `cmd`, which the
        // callers keep equal to `size_of::<T>()` (or test its checks with a
        // larger `T`).
        let r = unsafe {
            libc::ioctl(
                self.f.as_raw_fd(),
                libc::c_ulong::from(cmd),
                std::ptr::from_mut(arg),
            )
        };
        if r < 0 { Err(errno()) } else { Ok(()) }
    }

    fn fd(&self) -> i32 {
        self.f.as_raw_fd()
    }

    pub(super) fn info(&self) -> Result<IocInfo, String> {
        ioctl::info(self.fd()).map_err(|e| format!("INFO: {}", errname(e)))
    }

    pub(super) fn alloc(&self, size: u64, caching: u32) -> Result<IocSlabAlloc, i32> {
        ioctl::slab_alloc(self.fd(), size, caching)
    }

    pub(super) fn free(&self, id: u32) -> Result<(), i32> {
        ioctl::slab_free(self.fd(), id)
    }

    pub(super) fn stats(&self) -> Result<IocStats, String> {
        ioctl::stats(self.fd()).map_err(|e| format!("STATS: {}", errname(e)))
    }

    /// Submits `reqs`; returns the result and how many were queued.
    pub(super) fn submit(&self, reqs: &[IocRequest], flags: u32) -> (Result<(), i32>, u32) {
        // SAFETY: the kmod tests test the driver, so their requests name
        // this file's own slabs (touched only through `Map`'s volatile
        // accessors, so a device write races no Rust reference), buffers
        // they keep until the reap, or addresses the driver must refuse,
        // which is what the bad-input cases check.
        match unsafe { ioctl::submit(self.fd(), reqs, flags) } {
            Ok(n) => (Ok(()), n),
            Err(e) => (Err(e.errno), e.queued),
        }
    }

    pub(super) fn reap(&self, max: u32, timeout_ms: i32) -> Result<Vec<IocCompletion>, i32> {
        let mut v = vec![IocCompletion::default(); max as usize];
        let n = ioctl::reap(self.fd(), &mut v, timeout_ms)?;
        v.truncate(n);
        Ok(v)
    }

    /// Reaps exactly `n` completions (5 s overall).
    pub(super) fn reap_n(&self, n: usize) -> Result<Vec<IocCompletion>, String> {
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut out = Vec::new();
        while out.len() < n {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(format!("reaped {} of {n} completions in 5 s", out.len()));
            }
            let want = (n - out.len()).min(MAX_BATCH as usize) as u32;
            let got = self
                .reap(want, left.as_millis() as i32)
                .map_err(|e| format!("REAP after {} of {n}: {}", out.len(), errname(e)))?;
            out.extend(got);
        }
        Ok(out)
    }

    /// Submits one request and waits for its completion.
    pub(super) fn run(&self, r: &IocRequest, flags: u32) -> Result<IocCompletion, String> {
        let (res, n) = self.submit(std::slice::from_ref(r), flags);
        res.map_err(|e| format!("SUBMIT op {}: {}", op_name(r.header.op), errname(e)))?;
        ensure!(n == 1, "SUBMIT queued {n} of 1");
        let c = self.reap_n(1)?;
        ensure!(
            c[0].cookie == r.header.cookie,
            "completion cookie {:#x}, expected {:#x}",
            c[0].cookie,
            r.header.cookie
        );
        Ok(c[0])
    }
}

/// A user mapping of a slab, unmapped on drop.
pub(super) struct Map {
    pub(super) ptr: *mut u8,
    pub(super) len: usize,
}

impl Map {
    pub(super) fn new(dev: &Dev, offset: u64, len: usize) -> Result<Map, i32> {
        // SAFETY: a fresh shared mapping of our own file; the kernel checks
        // offset and length. The result is checked before use.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                dev.f.as_raw_fd(),
                offset as libc::off_t,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(errno());
        }
        Ok(Map { ptr: p.cast(), len })
    }

    pub(super) fn of(dev: &Dev, s: &IocSlabAlloc) -> Result<Map, String> {
        Map::new(dev, s.mmap_offset, s.size as usize)
            .map_err(|e| format!("mmap slab {}: {}", s.id, errname(e)))
    }

    pub(super) fn write(&self, off: usize, data: &[u8]) {
        assert!(off + data.len() <= self.len);
        for (i, b) in data.iter().enumerate() {
            // SAFETY: in bounds of our live mapping (asserted above);
            // volatile because the device reads it by physical address.
            unsafe { self.ptr.add(off + i).write_volatile(*b) };
        }
    }

    pub(super) fn read(&self, off: usize, len: usize) -> Vec<u8> {
        assert!(off + len <= self.len);
        (0..len)
            // SAFETY: in bounds of our live mapping (asserted above).
            .map(|i| unsafe { self.ptr.add(off + i).read_volatile() })
            .collect()
    }
}

impl Drop for Map {
    fn drop(&mut self) {
        // SAFETY: unmapping exactly the region `new` mapped.
        unsafe { libc::munmap(self.ptr.cast(), self.len) };
    }
}

pub(super) fn seg_in(addr: u64, len: usize) -> IocSegment {
    IocSegment {
        addr,
        len: len as u32,
        dir: SEG_IN,
    }
}

pub(super) fn seg_out(addr: u64, len: usize) -> IocSegment {
    IocSegment {
        addr,
        len: len as u32,
        dir: SEG_OUT,
    }
}

/// A request over `segs`, which must outlive the submit call.
pub(super) fn req(op: u16, aux: u32, segs: &[IocSegment], cookie: u64) -> IocRequest {
    IocRequest {
        header: RequestHeader {
            op,
            cookie,
            aux,
            ..Default::default()
        },
        segs: segs.as_ptr() as u64,
        nsegs: segs.len() as u32,
        queue: u32::MAX,
    }
}

/// The driver's debugfs `stats` file as a map.
pub(super) fn debugfs_stats() -> Result<HashMap<String, String>, String> {
    let text = fs::read_to_string(DEBUGFS_STATS).map_err(|e| format!("{DEBUGFS_STATS}: {e}"))?;
    Ok(text
        .lines()
        .filter_map(|l| l.split_once(' '))
        .map(|(k, v)| (k.to_string(), v.trim().to_string()))
        .collect())
}

pub(super) fn debugfs_u64(key: &str) -> Result<u64, String> {
    debugfs_stats()?
        .get(key)
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| format!("no numeric {key:?} in {DEBUGFS_STATS}"))
}

/// The numeric debugfs entries (every counter; `device alive` is left out).
pub(super) fn debugfs_counters() -> Result<HashMap<String, u64>, String> {
    Ok(debugfs_stats()?
        .into_iter()
        .filter_map(|(k, v)| Some((k, v.parse().ok()?)))
        .collect())
}

/// How much counter `key` rose from `before` to `after` (0 if absent).
pub(super) fn counter_rise(
    before: &HashMap<String, u64>,
    after: &HashMap<String, u64>,
    key: &str,
) -> u64 {
    after.get(key).copied().unwrap_or(0) - before.get(key).copied().unwrap_or(0)
}

/// Total requests the device completed, from debugfs.
pub(super) fn device_requests() -> Result<u64, String> {
    let s = debugfs_stats()?;
    Ok(s.iter()
        .filter(|(k, _)| k.starts_with("requests."))
        .filter_map(|(_, v)| v.parse::<u64>().ok())
        .sum())
}

/// Waits up to 5 s for debugfs `slabs` and `pinned_bytes` to be zero.
pub(super) fn wait_pinned_zero() -> TestResult {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let slabs = debugfs_u64("slabs")?;
        let pinned = debugfs_u64("pinned_bytes")?;
        if slabs == 0 && pinned == 0 {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!(
                "debugfs still shows {slabs} slabs / {pinned} bytes pinned 5 s later"
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

pub(super) fn pattern(len: usize, seed: u32) -> Vec<u8> {
    let mut x = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

/// One slab, mapped, for tests that need device-visible memory.
pub(super) struct Scratch {
    pub(super) dev: Dev,
    pub(super) slab: IocSlabAlloc,
    pub(super) map: Map,
}

impl Scratch {
    pub(super) fn new(size: u64, caching: u32) -> Result<Scratch, String> {
        let dev = Dev::open()?;
        let slab = dev
            .alloc(size, caching)
            .map_err(|e| format!("SLAB_ALLOC {size}: {}", errname(e)))?;
        let map = Map::of(&dev, &slab)?;
        Ok(Scratch { dev, slab, map })
    }

    pub(super) fn phys(&self, off: usize) -> u64 {
        self.slab.phys + off as u64
    }
}

pub(super) fn expect_ok(c: &IocCompletion, what: &str) -> TestResult {
    ensure!(
        c.status == STATUS_OK,
        "{what}: status {} ({})",
        c.status,
        status_name(c.status)
    );
    Ok(())
}

/// Runs `child` in a forked process; it reports readiness by writing a
/// byte to the pipe. Returns the child's pid once it is ready.
pub(super) fn fork_child(child: fn(i32) -> !) -> Result<libc::pid_t, String> {
    let mut fds = [0i32; 2];
    // SAFETY: `fds` has room for two descriptors.
    if unsafe { libc::pipe(fds.as_mut_ptr()) } != 0 {
        return Err(format!("pipe: {}", errname(errno())));
    }
    // SAFETY: the suite is single-threaded; the child only runs `child`,
    // which ends with `_exit`.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(format!("fork: {}", errname(errno())));
    }
    if pid == 0 {
        // SAFETY: closing our copy of the read end.
        unsafe { libc::close(fds[0]) };
        child(fds[1]);
    }
    // SAFETY: closing our copy of the write end.
    unsafe { libc::close(fds[1]) };
    let mut b = [0u8; 1];
    // SAFETY: reading one byte into `b`.
    let n = unsafe { libc::read(fds[0], b.as_mut_ptr().cast(), 1) };
    // SAFETY: closing the read end.
    unsafe { libc::close(fds[0]) };
    if n != 1 {
        return Err("child died before it was ready".into());
    }
    Ok(pid)
}

pub(super) fn child_ready(fd: i32) {
    // SAFETY: writing one byte from a static buffer to the pipe.
    unsafe { libc::write(fd, b"r".as_ptr().cast(), 1) };
}

pub(super) fn child_exit(code: i32) -> ! {
    // SAFETY: `_exit` never returns and runs no destructors of the parent.
    unsafe { libc::_exit(code) }
}

pub(super) fn wait_child(pid: libc::pid_t) {
    let mut st = 0;
    // SAFETY: reaping our own child.
    unsafe { libc::waitpid(pid, &mut st, 0) };
}

pub(super) fn sh(prog: &str, args: &[&str]) -> TestResult {
    let out = std::process::Command::new(prog)
        .args(args)
        .output()
        .map_err(|e| format!("{prog}: {e}"))?;
    ensure!(
        out.status.success(),
        "{prog} {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(())
}

pub(super) fn pci_function() -> Result<std::path::PathBuf, String> {
    crate::pci::find_device().ok_or_else(|| "no pktaccel PCI function".to_string())
}

/// How many kernel log lines contain `needle` (for "logged once" checks).
pub(super) fn dmesg_count(needle: &str) -> Result<usize, String> {
    let out = std::process::Command::new("dmesg")
        .output()
        .map_err(|e| format!("dmesg: {e}"))?;
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.contains(needle))
        .count())
}

/// One anonymous page, for argument structs with chosen protection.
pub(super) struct Page {
    pub(super) ptr: *mut u8,
}

impl Page {
    pub(super) fn new() -> Result<Page, String> {
        // SAFETY: a fresh private anonymous mapping; checked below.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                4096,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(format!("mmap: {}", errname(errno())));
        }
        Ok(Page { ptr: p.cast() })
    }

    /// Puts `v` at the start of the page.
    pub(super) fn put<T: Copy>(&self, v: T) -> *mut T {
        let p = self.ptr.cast::<T>();
        // SAFETY: the page is writable here and `T` (an ABI struct) fits.
        unsafe { p.write(v) };
        p
    }

    pub(super) fn protect(&self, prot: i32) -> TestResult {
        // SAFETY: changing the protection of our own page.
        if unsafe { libc::mprotect(self.ptr.cast(), 4096, prot) } != 0 {
            return Err(format!("mprotect: {}", errname(errno())));
        }
        Ok(())
    }
}

impl Drop for Page {
    fn drop(&mut self) {
        // SAFETY: unmapping our own page.
        unsafe { libc::munmap(self.ptr.cast(), 4096) };
    }
}

/// Writes an ioctl's argument struct into a page; returns its address.
pub(super) type Filler<'a> = Box<dyn Fn(&Page) -> usize + 'a>;

/// A page no access is allowed to (PROT_NONE), kept mapped so that no
/// other mapping can take its address while it is in use.
pub(super) fn inaccessible_page() -> Result<Page, String> {
    let p = Page::new()?;
    p.protect(libc::PROT_NONE)?;
    Ok(p)
}

/// ioctl with a raw argument pointer.
pub(super) fn ioctl_raw(d: &Dev, cmd: u32, arg: usize) -> Result<(), i32> {
    // SAFETY: the driver validates `arg`; the tests pass pointers that are
    // deliberately read-only or unmapped, which the kernel must refuse.
    let r = unsafe { libc::ioctl(d.f.as_raw_fd(), libc::c_ulong::from(cmd), arg) };
    if r < 0 { Err(errno()) } else { Ok(()) }
}

/// `cmd` with its argument struct `v` on a read-only page: what the driver
/// answered.
pub(super) fn ioctl_on_readonly_page<T: Copy>(
    d: &Dev,
    cmd: u32,
    v: T,
) -> Result<Result<(), i32>, String> {
    let page = Page::new()?;
    let p = page.put(v);
    page.protect(libc::PROT_READ)?;
    Ok(ioctl_raw(d, cmd, p as usize))
}
