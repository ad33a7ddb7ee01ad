//! pktaccel.ko through `/dev/pktaccel`: slabs, mmap, zero-copy and copy
//! submission, reap, poll, statistics, and every bad-input case of issue 4.
//! These run on the KASAN/lockdep kernel in `cargo xtask test-e2e`: a test
//! that leaves a splat in the kernel log fails the suite there.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::os::fd::AsRawFd;
use std::path::Path;
use std::time::{Duration, Instant};

use pktaccel_abi::*;

use crate::ensure;
use crate::harness::{Test, TestResult};

pub(super) const DEV: &str = "/dev/pktaccel";
const DEBUGFS_STATS: &str = "/sys/kernel/debug/pktaccel/stats";
pub(super) const MIB: u64 = 1024 * 1024;

pub(super) fn tests() -> Vec<Test> {
    macro_rules! t {
        ($($name:ident),* $(,)?) => {
            vec![$(Test { name: concat!("kmod::", stringify!($name)), run: $name }),*]
        };
    }
    let v: Vec<Test> = t![
        dev_node_and_debugfs,
        info_ioctl,
        slab_alloc_mmap_free,
        slab_sizes_and_modes,
        phys_address_is_right_crc32c,
        every_op_through_the_device,
        aes_gcm_seal_open_and_keys,
        copy_mode_counts_bytes_zero_copy_none,
        batch_of_many_requests,
        poll_reports_completions,
        uncached_slab_has_uc_memtype,
        bad_ioctl_numbers,
        bad_submit_arguments,
        bad_slab_arguments,
        bad_free_twice_and_foreign,
        bad_mmap,
        segments_outside_own_slabs_efault,
        reap_with_nothing_in_flight,
        pinned_memory_caps,
        killed_process_frees_slabs,
        exit_with_requests_in_flight,
        module_params_cap_pinned_memory,
        unbind_fails_in_flight_and_rebind,
    ];
    v.into_iter()
        .chain(
            // Needs the host to kill pktaccel-device on cue: run it by hand
            // (docs/kmod.md) until the rig has a hook for it.
            std::env::var_os(KILL_TEST_ENV).map(|_| Test {
                name: "kmod::device_killed_while_in_flight",
                run: device_killed_while_in_flight,
            }),
        )
        .collect()
}

/// Set in the guest to enable `kmod::device_killed_while_in_flight`.
const KILL_TEST_ENV: &str = "PKTACCEL_DEVICE_KILL_TEST";
/// Console line on which the host kills pktaccel-device.
const KILL_CUE: &str = pktaccel_abi::console::KILL_DEVICE;

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

pub(super) fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

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

    /// ioctl with a pointer to `arg`.
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

    pub(super) fn info(&self) -> Result<IocInfo, String> {
        let mut i = IocInfo::default();
        self.ioctl(PKTACCEL_IOC_INFO, &mut i)
            .map_err(|e| format!("INFO: {}", errname(e)))?;
        Ok(i)
    }

    pub(super) fn alloc(&self, size: u64, caching: u32) -> Result<IocSlabAlloc, i32> {
        let mut a = IocSlabAlloc {
            size,
            caching,
            ..Default::default()
        };
        self.ioctl(PKTACCEL_IOC_SLAB_ALLOC, &mut a)?;
        Ok(a)
    }

    pub(super) fn free(&self, id: u32) -> Result<(), i32> {
        let mut f = IocSlabFree { id, reserved: 0 };
        self.ioctl(PKTACCEL_IOC_SLAB_FREE, &mut f)
    }

    pub(super) fn stats(&self) -> Result<IocStats, String> {
        let mut s = IocStats::default();
        self.ioctl(PKTACCEL_IOC_STATS, &mut s)
            .map_err(|e| format!("STATS: {}", errname(e)))?;
        Ok(s)
    }

    /// Submits `reqs`; returns the result and how many were queued.
    pub(super) fn submit(&self, reqs: &[IocRequest], flags: u32) -> (Result<(), i32>, u32) {
        let mut s = IocSubmit {
            reqs: reqs.as_ptr() as u64,
            count: reqs.len() as u32,
            flags,
            submitted: 0,
            reserved: 0,
        };
        let r = self.ioctl(PKTACCEL_IOC_SUBMIT, &mut s);
        (r, s.submitted)
    }

    pub(super) fn reap(&self, max: u32, timeout_ms: i32) -> Result<Vec<IocCompletion>, i32> {
        let mut v = vec![IocCompletion::default(); max as usize];
        let mut r = IocReap {
            comps: v.as_mut_ptr() as u64,
            max,
            timeout_ms,
            count: 0,
            reserved: 0,
        };
        self.ioctl(PKTACCEL_IOC_REAP, &mut r)?;
        v.truncate(r.count as usize);
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

fn crc32_generic(poly: u32, seed: u32, data: &[u8]) -> u32 {
    let mut c = !seed;
    for &b in data {
        c ^= u32::from(b);
        for _ in 0..8 {
            c = if c & 1 != 0 { (c >> 1) ^ poly } else { c >> 1 };
        }
    }
    !c
}

pub(super) fn crc32c(data: &[u8]) -> u32 {
    crc32_generic(0x82f6_3b78, 0, data)
}

fn crc32_ieee(data: &[u8]) -> u32 {
    crc32_generic(0xedb8_8320, 0, data)
}

/// RFC 1071 checksum (the value to store in a header).
fn inet_csum(data: &[u8]) -> u16 {
    let mut sum: u64 = 0;
    for ch in data.chunks(2) {
        let w = if ch.len() == 2 {
            u16::from_be_bytes([ch[0], ch[1]])
        } else {
            u16::from_be_bytes([ch[0], 0])
        };
        sum += u64::from(w);
    }
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// The key of Microsoft's "Verifying the RSS Hash Calculation".
const MS_RSS_KEY: [u8; 40] = [
    0x6d, 0x5a, 0x56, 0xda, 0x25, 0x5b, 0x0e, 0xc2, 0x41, 0x67, 0x25, 0x3d, 0x43, 0xa3, 0x8f, 0xb0,
    0xd0, 0xca, 0x2b, 0xcb, 0xae, 0x7b, 0x30, 0xb4, 0x77, 0xcb, 0x2d, 0xa3, 0x80, 0x30, 0xf2, 0x0c,
    0x6a, 0x42, 0xb7, 0x3b, 0xbe, 0xac, 0x01, 0xfa,
];

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

// ---------------------------------------------------------------------------
// Happy paths
// ---------------------------------------------------------------------------

fn dev_node_and_debugfs() -> TestResult {
    ensure!(Path::new(DEV).exists(), "{DEV} does not exist");
    let s = debugfs_stats()?;
    ensure!(
        s.get("device").map(String::as_str) == Some("alive"),
        "debugfs says device {:?}",
        s.get("device")
    );
    let dmesg = std::process::Command::new("dmesg")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    ensure!(
        dmesg.contains("/dev/pktaccel ready"),
        "no probe line in the kernel log"
    );
    Ok(())
}

fn info_ioctl() -> TestResult {
    let dev = Dev::open()?;
    let i = dev.info()?;
    ensure!(i.config.magic == MAGIC, "magic {:#x}", i.config.magic);
    ensure!(
        i.config.abi_version == ABI_VERSION,
        "ABI {}",
        i.config.abi_version
    );
    ensure!(i.config.num_queues >= 1, "no queues");
    ensure!(i.queue_size >= 2, "queue size {}", i.queue_size);
    let all = (1u32 << OP_COUNT) - 1;
    ensure!(
        i.config.ops & all == all,
        "ops bitmap {:#x} lacks some of {all:#x}",
        i.config.ops
    );
    ensure!(
        i.max_pinned_per_file > 0 && i.max_pinned_total >= i.max_pinned_per_file,
        "caps {} / {}",
        i.max_pinned_per_file,
        i.max_pinned_total
    );
    ensure!(
        i.pinned_by_file == 0,
        "fresh file pins {}",
        i.pinned_by_file
    );
    Ok(())
}

fn slab_alloc_mmap_free() -> TestResult {
    let dev = Dev::open()?;
    let s = dev
        .alloc(0, CACHE_UNCACHED)
        .map_err(|e| format!("SLAB_ALLOC default: {}", errname(e)))?;
    ensure!(s.size == SLAB_DEFAULT_SIZE, "default size {}", s.size);
    ensure!(s.id != 0 && s.phys != 0, "id {} phys {:#x}", s.id, s.phys);
    ensure!(
        s.phys.is_multiple_of(s.size),
        "phys {:#x} not naturally aligned",
        s.phys
    );
    ensure!(
        s.mmap_offset.is_multiple_of(4096),
        "mmap offset {:#x}",
        s.mmap_offset
    );
    {
        let m = Map::of(&dev, &s)?;
        ensure!(m.read(0, 4096).iter().all(|&b| b == 0), "slab not zeroed");
        let p = pattern(8192, 7);
        m.write(s.size as usize - 8192, &p);
        ensure!(
            m.read(s.size as usize - 8192, 8192) == p,
            "read-back differs"
        );
        let st = dev.stats()?;
        ensure!(st.slabs == 1 && st.pinned == s.size, "stats {st:?}");
        let i = dev.info()?;
        ensure!(
            i.pinned_by_file == s.size,
            "info pinned {}",
            i.pinned_by_file
        );
        // A second mapping of the same slab sees the same bytes.
        let m2 = Map::of(&dev, &s)?;
        ensure!(
            m2.read(s.size as usize - 8192, 8192) == p,
            "second map differs"
        );
    }
    dev.free(s.id)
        .map_err(|e| format!("SLAB_FREE: {}", errname(e)))?;
    let st = dev.stats()?;
    ensure!(st.slabs == 0 && st.pinned == 0, "after free: {st:?}");
    Ok(())
}

fn slab_sizes_and_modes() -> TestResult {
    let dev = Dev::open()?;
    for caching in [CACHE_UNCACHED, CACHE_WRITE_COMBINING, CACHE_WRITE_BACK] {
        for size in [SLAB_MIN_SIZE, 128 * 1024, MIB, SLAB_MAX_SIZE] {
            let s = dev
                .alloc(size, caching)
                .map_err(|e| format!("SLAB_ALLOC {size} mode {caching}: {}", errname(e)))?;
            ensure!(s.size == size, "size {} for {size}", s.size);
            let m = Map::of(&dev, &s)?;
            m.write(0, b"pktaccel");
            ensure!(m.read(0, 8) == b"pktaccel", "mode {caching}: read-back");
            drop(m);
            dev.free(s.id)
                .map_err(|e| format!("SLAB_FREE: {}", errname(e)))?;
        }
    }
    Ok(())
}

fn phys_address_is_right_crc32c() -> TestResult {
    for caching in [CACHE_UNCACHED, CACHE_WRITE_COMBINING, CACHE_WRITE_BACK] {
        let sc = Scratch::new(SLAB_DEFAULT_SIZE, caching)?;
        let max = sc.dev.info()?.config.max_request_bytes as usize;
        let len = (sc.slab.size as usize).min(max);
        // The CPU writes through the mapping...
        let data = pattern(len, caching + 1);
        sc.map.write(0, &data);
        // ...and the device reads the slab by physical address, in pieces
        // that cross pages, so every page's address must be right.
        let pieces = 7;
        let step = len / pieces;
        let segs: Vec<IocSegment> = (0..pieces)
            .map(|i| {
                let end = if i == pieces - 1 { len } else { (i + 1) * step };
                seg_in(sc.phys(i * step), end - i * step)
            })
            .collect();
        let c = sc.dev.run(&req(OP_CRC32C, 0, &segs, 0xc0de), 0)?;
        expect_ok(&c, "crc32c")?;
        let want = crc32c(&data);
        ensure!(
            c.result == u64::from(want),
            "mode {caching}: device CRC32C {:#x}, software {want:#x}",
            c.result
        );
    }
    Ok(())
}

fn every_op_through_the_device() -> TestResult {
    let sc = Scratch::new(SLAB_MIN_SIZE, CACHE_WRITE_BACK)?;
    let d = &sc.dev;
    // NOP
    expect_ok(&d.run(&req(OP_NOP, 0, &[], 1), 0)?, "nop")?;
    // CSUM over an odd length, split across segments.
    let data = pattern(1501, 3);
    sc.map.write(0, &data);
    let segs = [seg_in(sc.phys(0), 333), seg_in(sc.phys(333), 1501 - 333)];
    let c = d.run(&req(OP_CSUM, 0, &segs, 2), 0)?;
    expect_ok(&c, "csum")?;
    ensure!(
        c.result == u64::from(inet_csum(&data)),
        "csum {:#x}, software {:#x}",
        c.result,
        inet_csum(&data)
    );
    // CRC32C and CRC32 check values.
    sc.map.write(4096, b"123456789");
    let s9 = [seg_in(sc.phys(4096), 9)];
    let c = d.run(&req(OP_CRC32C, 0, &s9, 3), 0)?;
    expect_ok(&c, "crc32c")?;
    ensure!(
        c.result == 0xe306_9283,
        "crc32c(123456789) = {:#x}",
        c.result
    );
    ensure!(
        crc32c(b"123456789") == 0xe306_9283,
        "software crc32c broken"
    );
    let c = d.run(&req(OP_CRC32, 0, &s9, 4), 0)?;
    expect_ok(&c, "crc32")?;
    ensure!(
        c.result == 0xcbf4_3926,
        "crc32(123456789) = {:#x}",
        c.result
    );
    ensure!(
        crc32_ieee(b"123456789") == 0xcbf4_3926,
        "software crc32 broken"
    );
    // RSS: Microsoft's IPv4/TCP vector 66.9.149.187:2794 -> 161.142.100.80:1766.
    let tuple = [66, 9, 149, 187, 161, 142, 100, 80, 0x0a, 0xea, 0x06, 0xe6];
    sc.map.write(8192, &tuple);
    let st = [seg_in(sc.phys(8192), tuple.len())];
    let mut r = req(OP_RSS, 0, &st, 5);
    r.header.params = MS_RSS_KEY;
    let c = d.run(&r, 0)?;
    expect_ok(&c, "rss")?;
    ensure!(
        c.result == 0x51cc_c178,
        "toeplitz {:#x}, expected 0x51ccc178",
        c.result
    );
    // COPY
    let src = pattern(5000, 9);
    sc.map.write(12288, &src);
    let cs = [seg_in(sc.phys(12288), 5000), seg_out(sc.phys(20480), 5000)];
    let c = d.run(&req(OP_COPY, 0, &cs, 6), 0)?;
    expect_ok(&c, "copy")?;
    ensure!(c.len == 5000, "copy wrote {}", c.len);
    ensure!(sc.map.read(20480, 5000) == src, "copy output differs");
    let st = d.stats()?;
    for op in [OP_NOP, OP_CSUM, OP_CRC32C, OP_CRC32, OP_RSS, OP_COPY] {
        ensure!(
            st.requests[usize::from(op)] >= 1,
            "file stats count no {} request",
            op_name(op)
        );
    }
    ensure!(
        st.bytes_copied == 0,
        "zero-copy counted {} bytes copied",
        st.bytes_copied
    );
    Ok(())
}

fn aes_gcm_seal_open_and_keys() -> TestResult {
    let sc = Scratch::new(SLAB_MIN_SIZE, CACHE_WRITE_BACK)?;
    let d = &sc.dev;
    let slot = 1u32;
    let key = pattern(32, 11);
    sc.map.write(0, &key);
    let ks = [seg_in(sc.phys(0), 32)];
    let mut r = req(OP_KEY_SET, 0, &ks, 1);
    r.header.key_slot = slot;
    expect_ok(&d.run(&r, 0)?, "key-set")?;

    let aad = b"header";
    let pt = pattern(1000, 12);
    let iv = [7u8; GCM_IV_LEN];
    sc.map.write(4096, aad);
    sc.map.write(4096 + aad.len(), &pt);
    let seal_segs = [
        seg_in(sc.phys(4096), aad.len() + pt.len()),
        seg_out(sc.phys(8192), pt.len() + GCM_TAG_LEN),
    ];
    let mut r = req(OP_AES_GCM_SEAL, aad.len() as u32, &seal_segs, 2);
    r.header.key_slot = slot;
    r.header.params[..GCM_IV_LEN].copy_from_slice(&iv);
    let c = d.run(&r, 0)?;
    expect_ok(&c, "seal")?;
    ensure!(
        c.len as usize == pt.len() + GCM_TAG_LEN,
        "seal wrote {}",
        c.len
    );
    let sealed = sc.map.read(8192, pt.len() + GCM_TAG_LEN);
    ensure!(sealed[..pt.len()] != pt[..], "ciphertext equals plaintext");

    // open(aad, ct, tag) gives the plaintext back.
    sc.map.write(16384, aad);
    sc.map.write(16384 + aad.len(), &sealed);
    let open_segs = [
        seg_in(sc.phys(16384), aad.len() + sealed.len()),
        seg_out(sc.phys(24576), pt.len()),
    ];
    let mut r = req(OP_AES_GCM_OPEN, aad.len() as u32, &open_segs, 3);
    r.header.key_slot = slot;
    r.header.params[..GCM_IV_LEN].copy_from_slice(&iv);
    let c = d.run(&r, 0)?;
    expect_ok(&c, "open")?;
    ensure!(
        sc.map.read(24576, pt.len()) == pt,
        "open did not restore the plaintext"
    );

    // A flipped tag bit fails authentication.
    let last = 16384 + aad.len() + sealed.len() - 1;
    sc.map.write(last, &[sealed[sealed.len() - 1] ^ 1]);
    r.header.cookie = 4;
    let c = d.run(&r, 0)?;
    ensure!(
        c.status == STATUS_AUTH_FAILED,
        "tampered open: status {}",
        status_name(c.status)
    );

    // Clear the key: the file no longer holds the slot, so a seal naming
    // it is refused before it reaches the device.
    let mut r = req(OP_KEY_CLEAR, 0, &[], 5);
    r.header.key_slot = slot;
    expect_ok(&d.run(&r, 0)?, "key-clear")?;
    let mut r = req(OP_AES_GCM_SEAL, aad.len() as u32, &seal_segs, 6);
    r.header.key_slot = slot;
    let (res, n) = d.submit(std::slice::from_ref(&r), 0);
    expect_err(res, libc::ENOKEY, "seal after clear")?;
    ensure!(n == 0, "seal after clear: {n} queued");
    Ok(())
}

fn copy_mode_counts_bytes_zero_copy_none() -> TestResult {
    let sc = Scratch::new(SLAB_MIN_SIZE, CACHE_WRITE_BACK)?;
    let d = &sc.dev;
    let dev_copied_before = debugfs_u64("bytes_copied")?;
    // Copy mode: ordinary heap buffers, by user virtual address.
    let src = pattern(10_000, 21);
    let mut dst = vec![0u8; 10_000];
    let segs = [
        seg_in(src.as_ptr() as u64, 6000),
        seg_in(src[6000..].as_ptr() as u64, 4000),
        seg_out(dst.as_mut_ptr() as u64, 10_000),
    ];
    let c = d.run(&req(OP_COPY, 0, &segs, 1), SUBMIT_COPY)?;
    expect_ok(&c, "copy-mode copy")?;
    ensure!(dst == src, "copy mode: output differs from input");
    let crc_segs = [seg_in(src.as_ptr() as u64, src.len())];
    let c = d.run(&req(OP_CRC32C, 0, &crc_segs, 2), SUBMIT_COPY)?;
    expect_ok(&c, "copy-mode crc32c")?;
    ensure!(
        c.result == u64::from(crc32c(&src)),
        "copy-mode crc32c wrong"
    );
    let st = d.stats()?;
    let want = 10_000 + 10_000 + 10_000;
    ensure!(
        st.bytes_copied == want,
        "copy mode counted {} bytes copied, expected {want}",
        st.bytes_copied
    );
    ensure!(st.bytes_zero_copy == 0, "copy mode counted zero-copy bytes");
    // Zero-copy adds nothing to the copy counter.
    sc.map.write(0, &src);
    let zc = [seg_in(sc.phys(0), 10_000), seg_out(sc.phys(16384), 10_000)];
    let c = d.run(&req(OP_COPY, 0, &zc, 3), 0)?;
    expect_ok(&c, "zero-copy copy")?;
    ensure!(
        sc.map.read(16384, 10_000) == src,
        "zero-copy output differs"
    );
    let st2 = d.stats()?;
    ensure!(
        st2.bytes_copied == st.bytes_copied,
        "zero-copy request copied {} bytes",
        st2.bytes_copied - st.bytes_copied
    );
    ensure!(
        st2.bytes_zero_copy == 20_000,
        "zero-copy bytes {}",
        st2.bytes_zero_copy
    );
    ensure!(
        debugfs_u64("bytes_copied")? >= dev_copied_before + want,
        "debugfs bytes_copied did not grow"
    );
    // A copy-mode segment at an unmapped address is EFAULT at submit.
    let bad = [seg_in(0x10, 64)];
    let (r, n) = d.submit(&[req(OP_CRC32C, 0, &bad, 4)], SUBMIT_COPY);
    expect_err(r, libc::EFAULT, "copy mode from address 0x10")?;
    ensure!(n == 0, "submitted {n}");
    Ok(())
}

fn batch_of_many_requests() -> TestResult {
    let sc = Scratch::new(SLAB_MIN_SIZE, CACHE_WRITE_BACK)?;
    let d = &sc.dev;
    let data = pattern(4096, 5);
    sc.map.write(0, &data);
    let want = u64::from(crc32c(&data));
    let segs = [seg_in(sc.phys(0), 4096)];
    let reqs: Vec<IocRequest> = (0..MAX_BATCH)
        .map(|i| req(OP_CRC32C, 0, &segs, 1000 + u64::from(i)))
        .collect();
    let mut total = 0usize;
    for round in 0..4 {
        // Blocking submit: waits for ring room instead of failing.
        let (r, n) = d.submit(&reqs, 0);
        r.map_err(|e| {
            format!(
                "round {round}: SUBMIT {} after {n}: {}",
                MAX_BATCH,
                errname(e)
            )
        })?;
        ensure!(n == MAX_BATCH, "round {round}: submitted {n}");
        let comps = d.reap_n(n as usize)?;
        let mut cookies: Vec<u64> = comps.iter().map(|c| c.cookie).collect();
        cookies.sort_unstable();
        ensure!(
            cookies == (1000..1000 + u64::from(MAX_BATCH)).collect::<Vec<_>>(),
            "round {round}: cookies do not match the batch"
        );
        for c in &comps {
            expect_ok(c, "batched crc32c")?;
            ensure!(c.result == want, "batched crc32c {:#x}", c.result);
        }
        total += comps.len();
    }
    // Non-blocking: either all queued or EAGAIN with a prefix; what was
    // queued completes.
    let (r, n) = d.submit(&reqs, SUBMIT_NONBLOCK);
    if let Err(e) = r {
        ensure!(e == libc::EAGAIN, "nonblocking submit: {}", errname(e));
        ensure!(
            d.stats()?.ring_full >= 1,
            "EAGAIN without a ring-full count"
        );
    }
    d.reap_n(n as usize)?;
    ensure!(total == 4 * MAX_BATCH as usize, "reaped {total}");
    Ok(())
}

fn poll_reports_completions() -> TestResult {
    let d = Dev::open()?;
    let mut pfd = libc::pollfd {
        fd: d.f.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd.
    let n = unsafe { libc::poll(&mut pfd, 1, 0) };
    ensure!(
        n == 0,
        "poll with nothing pending returned {n} ({:#x})",
        pfd.revents
    );
    let (r, _) = d.submit(&[req(OP_NOP, 0, &[], 42)], 0);
    r.map_err(|e| format!("SUBMIT: {}", errname(e)))?;
    pfd.revents = 0;
    // SAFETY: one valid pollfd.
    let n = unsafe { libc::poll(&mut pfd, 1, 5000) };
    ensure!(
        n == 1 && pfd.revents & libc::POLLIN != 0,
        "poll returned {n}, revents {:#x}",
        pfd.revents
    );
    let c = d.reap(4, 0).map_err(|e| format!("REAP: {}", errname(e)))?;
    ensure!(c.len() == 1 && c[0].cookie == 42, "reaped {c:?}");
    Ok(())
}

/// PG_arch_2 in /proc/kpageflags (KPF_ARCH_2, bit 41) is x86 PAT's UC-
/// marker for RAM pages, PG_arch_1 (KPF_ARCH, bit 38) its WC marker.
fn kpageflags(pfn: u64) -> Result<u64, String> {
    let f = File::open("/proc/kpageflags").map_err(|e| format!("/proc/kpageflags: {e}"))?;
    let mut b = [0u8; 8];
    std::os::unix::fs::FileExt::read_exact_at(&f, &mut b, pfn * 8)
        .map_err(|e| format!("/proc/kpageflags pfn {pfn:#x}: {e}"))?;
    Ok(u64::from_le_bytes(b))
}

fn uncached_slab_has_uc_memtype() -> TestResult {
    const KPF_ARCH: u64 = 1 << 38;
    const KPF_ARCH_2: u64 = 1 << 41;
    ensure!(
        Path::new("/sys/kernel/debug/x86/pat_memtype_list").exists(),
        "no /sys/kernel/debug/x86/pat_memtype_list: PAT is off in this kernel"
    );
    let dev = Dev::open()?;
    let mut slabs = Vec::new();
    for caching in [CACHE_UNCACHED, CACHE_WRITE_COMBINING, CACHE_WRITE_BACK] {
        let s = dev
            .alloc(SLAB_MIN_SIZE, caching)
            .map_err(|e| format!("SLAB_ALLOC: {}", errname(e)))?;
        let _m = Map::of(&dev, &s)?;
        let pages = s.size / 4096;
        for p in [0, pages / 2, pages - 1] {
            let f = kpageflags(s.phys / 4096 + p)?;
            let (uc, wc) = (
                f & KPF_ARCH_2 != 0 && f & KPF_ARCH == 0,
                f & KPF_ARCH != 0 && f & KPF_ARCH_2 == 0,
            );
            let ok = match caching {
                CACHE_UNCACHED => uc,
                CACHE_WRITE_COMBINING => wc,
                _ => f & (KPF_ARCH | KPF_ARCH_2) == 0,
            };
            ensure!(
                ok,
                "{} slab page {p}: kpageflags {f:#x} does not show that memtype",
                ["uncached", "write-combining", "write-back"][caching as usize]
            );
        }
        slabs.push(s);
    }
    // Freed slabs go back to write-back before the pages are released.
    let pfn = slabs[0].phys / 4096;
    for s in &slabs {
        dev.free(s.id)
            .map_err(|e| format!("SLAB_FREE: {}", errname(e)))?;
    }
    let f = kpageflags(pfn)?;
    ensure!(
        f & (KPF_ARCH | KPF_ARCH_2) == 0,
        "freed uncached slab still marked ({f:#x})"
    );
    Ok(())
}

// ---------------------------------------------------------------------------
// Bad input and faults
// ---------------------------------------------------------------------------

fn bad_ioctl_numbers() -> TestResult {
    let d = Dev::open()?;
    let mut buf = [0u64; 64];
    let unknown = ioc(3, IOC_TYPE, 0x7f, 8);
    expect_err(d.ioctl(unknown, &mut buf), libc::ENOTTY, "unknown ioctl")?;
    // The right number with the wrong size is a different command.
    let wrong_size = ioc(3, IOC_TYPE, 0x41, 40);
    expect_err(
        d.ioctl(wrong_size, &mut buf),
        libc::ENOTTY,
        "SLAB_ALLOC with size 40",
    )?;
    let other_type = ioc(2, b'Q', 0x40, core::mem::size_of::<IocInfo>());
    expect_err(
        d.ioctl(other_type, &mut buf),
        libc::ENOTTY,
        "INFO with type 'Q'",
    )?;
    // Bad user pointers are EFAULT.
    // SAFETY: the kernel must reject the pointer without touching memory.
    let r = unsafe {
        libc::ioctl(
            d.f.as_raw_fd(),
            libc::c_ulong::from(PKTACCEL_IOC_INFO),
            8usize,
        )
    };
    ensure!(
        r < 0 && errno() == libc::EFAULT,
        "INFO to address 8: {r} {}",
        errname(errno())
    );
    d.info()?;
    Ok(())
}

fn bad_submit_arguments() -> TestResult {
    let sc = Scratch::new(SLAB_MIN_SIZE, CACHE_WRITE_BACK)?;
    let d = &sc.dev;
    let info = d.info()?;
    let rejected0 = d.stats()?.rejected;
    let good = [seg_in(sc.phys(0), 64)];
    let ok = req(OP_CRC32C, 0, &good, 1);

    // Batch counts and flags.
    let mut s = IocSubmit {
        reqs: std::ptr::from_ref(&ok) as u64,
        count: 0,
        flags: 0,
        submitted: 0,
        reserved: 0,
    };
    expect_err(
        d.ioctl(PKTACCEL_IOC_SUBMIT, &mut s),
        libc::EINVAL,
        "count 0",
    )?;
    s.count = MAX_BATCH + 1;
    expect_err(
        d.ioctl(PKTACCEL_IOC_SUBMIT, &mut s),
        libc::EINVAL,
        "count MAX_BATCH+1",
    )?;
    s.count = 1;
    s.flags = 1 << 7;
    expect_err(
        d.ioctl(PKTACCEL_IOC_SUBMIT, &mut s),
        libc::EINVAL,
        "unknown flag",
    )?;
    s.flags = 0;
    s.reserved = 1;
    expect_err(
        d.ioctl(PKTACCEL_IOC_SUBMIT, &mut s),
        libc::EINVAL,
        "reserved != 0",
    )?;
    s.reserved = 0;
    s.reqs = 0x10;
    expect_err(
        d.ioctl(PKTACCEL_IOC_SUBMIT, &mut s),
        libc::EFAULT,
        "requests at 0x10",
    )?;

    let one = |r: IocRequest, want: i32, what: &str| -> TestResult {
        let (res, n) = d.submit(&[r], 0);
        expect_err(res, want, what)?;
        ensure!(n == 0, "{what}: submitted {n}");
        Ok(())
    };
    let mut r = ok;
    r.header.op = 16;
    one(r, libc::EINVAL, "op 16")?;
    let mut r = ok;
    r.header.flags = 1;
    one(r, libc::EINVAL, "header flags")?;
    let mut r = ok;
    r.queue = info.config.num_queues + 5;
    one(r, libc::EINVAL, "queue out of range")?;
    let many: Vec<IocSegment> = (0..=info.config.max_segments.min(64) as usize)
        .map(|i| seg_in(sc.phys(i * 64), 64))
        .collect();
    one(
        req(OP_CRC32C, 0, &many, 2),
        libc::E2BIG,
        "too many segments",
    )?;
    one(
        req(OP_CRC32C, 0, &[seg_in(sc.phys(0), 0)], 3),
        libc::EINVAL,
        "zero-length segment",
    )?;
    one(
        req(OP_CRC32C, 0, &[seg_in(u64::MAX - 10, 64)], 4),
        libc::EINVAL,
        "address + length overflows",
    )?;
    let bad_dir = [IocSegment {
        addr: sc.phys(0),
        len: 64,
        dir: 9,
    }];
    one(req(OP_CRC32C, 0, &bad_dir, 5), libc::EINVAL, "direction 9")?;
    let order = [seg_out(sc.phys(0), 64), seg_in(sc.phys(64), 64)];
    one(
        req(OP_COPY, 0, &order, 6),
        libc::EINVAL,
        "input after output",
    )?;
    let big = (info.config.max_request_bytes as usize) + 4096;
    let sc2 = Scratch::new(SLAB_MAX_SIZE, CACHE_WRITE_BACK)?;
    let too_big = [seg_in(sc2.phys(0), big)];
    let (res, _) = sc2.dev.submit(&[req(OP_CRC32C, 0, &too_big, 7)], 0);
    expect_err(res, libc::E2BIG, "more than max_request_bytes")?;
    let mut r = ok;
    r.segs = 0x20;
    one(r, libc::EFAULT, "segments at 0x20")?;

    // A bad request in the middle of a batch: the prefix is queued.
    let bad = req(OP_CRC32C, 0, &[seg_in(sc.phys(0), 0)], 8);
    let (res, n) = d.submit(&[ok, ok, bad, ok], 0);
    expect_err(res, libc::EINVAL, "batch with a bad third request")?;
    ensure!(n == 2, "batch prefix: submitted {n}, expected 2");
    let comps = d.reap_n(2)?;
    for c in &comps {
        expect_ok(c, "prefix request")?;
    }
    ensure!(d.stats()?.rejected > rejected0, "rejections not counted");
    Ok(())
}

fn bad_slab_arguments() -> TestResult {
    let d = Dev::open()?;
    for (size, what) in [
        (32 * 1024, "32 KiB (below minimum)"),
        (8 * MIB, "8 MiB (above maximum)"),
        (3 * 64 * 1024, "192 KiB (not a power of two)"),
        (100, "100 bytes"),
        (MIB + 4096, "1 MiB + 4 KiB"),
        (u64::MAX, "u64::MAX"),
    ] {
        expect_err(d.alloc(size, CACHE_UNCACHED), libc::EINVAL, what)?;
    }
    expect_err(d.alloc(0, 3), libc::EINVAL, "caching mode 3")?;
    let st = d.stats()?;
    ensure!(
        st.slabs == 0 && st.pinned == 0,
        "failed allocations left {st:?}"
    );
    // SLAB_FREE with a non-zero reserved field.
    let mut f = IocSlabFree { id: 1, reserved: 1 };
    expect_err(
        d.ioctl(PKTACCEL_IOC_SLAB_FREE, &mut f),
        libc::EINVAL,
        "free reserved != 0",
    )?;
    Ok(())
}

fn bad_free_twice_and_foreign() -> TestResult {
    let a = Dev::open()?;
    let b = Dev::open()?;
    let s = a
        .alloc(SLAB_MIN_SIZE, CACHE_UNCACHED)
        .map_err(|e| format!("SLAB_ALLOC: {}", errname(e)))?;
    expect_err(b.free(s.id), libc::ENOENT, "free another file's slab")?;
    a.free(s.id)
        .map_err(|e| format!("SLAB_FREE: {}", errname(e)))?;
    expect_err(a.free(s.id), libc::ENOENT, "free twice")?;
    expect_err(a.free(12345), libc::ENOENT, "free unknown id")?;
    ensure!(a.stats()?.slabs == 0, "slab left after free");
    Ok(())
}

fn bad_mmap() -> TestResult {
    let d = Dev::open()?;
    let s = d
        .alloc(SLAB_MIN_SIZE, CACHE_UNCACHED)
        .map_err(|e| format!("SLAB_ALLOC: {}", errname(e)))?;
    let len = s.size as usize;
    expect_err(
        Map::new(&d, s.mmap_offset + 4096, len - 4096),
        libc::EINVAL,
        "mmap at offset+4K",
    )?;
    expect_err(Map::new(&d, 0, len), libc::EINVAL, "mmap at offset 0")?;
    expect_err(
        Map::new(&d, s.mmap_offset, len + 4096),
        libc::EINVAL,
        "mmap beyond the slab",
    )?;
    // Freeing while mapped is allowed; the pages live until munmap.
    let m = Map::of(&d, &s)?;
    m.write(0, b"still here");
    d.free(s.id)
        .map_err(|e| format!("SLAB_FREE while mapped: {}", errname(e)))?;
    ensure!(m.read(0, 10) == b"still here", "mapping changed after free");
    expect_err(
        Map::new(&d, s.mmap_offset, len),
        libc::EINVAL,
        "mmap after free",
    )?;
    drop(m);
    // The parked slab is released by the next slab operation.
    let t = d
        .alloc(SLAB_MIN_SIZE, CACHE_UNCACHED)
        .map_err(|e| format!("SLAB_ALLOC: {}", errname(e)))?;
    let st = d.stats()?;
    ensure!(
        st.slabs == 1 && st.pinned == t.size,
        "after munmap + alloc: {st:?}"
    );
    Ok(())
}

fn segments_outside_own_slabs_efault() -> TestResult {
    let a = Scratch::new(SLAB_MIN_SIZE, CACHE_WRITE_BACK)?;
    let b = Scratch::new(SLAB_MIN_SIZE, CACHE_WRITE_BACK)?;
    let freed = a
        .dev
        .alloc(SLAB_MIN_SIZE, CACHE_WRITE_BACK)
        .map_err(|e| format!("SLAB_ALLOC: {}", errname(e)))?;
    a.dev
        .free(freed.id)
        .map_err(|e| format!("SLAB_FREE: {}", errname(e)))?;
    let before = device_requests()?;
    let size = a.slab.size as usize;
    let cases: [(&str, IocSegment); 6] = [
        ("another file's slab", seg_in(b.phys(0), 64)),
        ("another file's slab (output)", seg_out(b.phys(0), 64)),
        ("a freed slab", seg_in(freed.phys, 64)),
        ("physical page 1", seg_in(0x1000, 64)),
        ("past the slab's end", seg_in(a.phys(size - 32), 64)),
        ("just below the slab", seg_in(a.phys(0) - 64, 64)),
    ];
    for (what, s) in cases {
        let segs = [seg_in(a.phys(0), 64), s];
        let (r, n) = a.dev.submit(&[req(OP_CRC32C, 0, &segs, 9)], 0);
        expect_err(r, libc::EFAULT, what)?;
        ensure!(n == 0, "{what}: submitted {n}");
    }
    ensure!(
        device_requests()? == before,
        "rejected requests reached the device"
    );
    ensure!(a.dev.stats()?.rejected >= 6, "rejections not counted");
    // The slab's last byte is fine.
    let ok = [seg_in(a.phys(size - 1), 1)];
    expect_ok(&a.dev.run(&req(OP_CRC32C, 0, &ok, 10), 0)?, "last byte")?;
    Ok(())
}

fn reap_with_nothing_in_flight() -> TestResult {
    let d = Dev::open()?;
    expect_err(
        d.reap(4, 0),
        libc::ENOENT,
        "reap, nothing in flight, no wait",
    )?;
    expect_err(
        d.reap(4, 100),
        libc::ENOENT,
        "reap, nothing in flight, 100 ms",
    )?;
    expect_err(
        d.reap(4, -1),
        libc::ENOENT,
        "reap, nothing in flight, forever",
    )?;
    expect_err(d.reap(0, 0), libc::EINVAL, "reap max 0")?;
    expect_err(
        d.reap(MAX_BATCH + 1, 0),
        libc::EINVAL,
        "reap max MAX_BATCH+1",
    )?;
    let mut r = IocReap {
        comps: 0x30,
        max: 1,
        timeout_ms: 1000,
        count: 0,
        reserved: 0,
    };
    let (res, _) = d.submit(&[req(OP_NOP, 0, &[], 1)], 0);
    res.map_err(|e| format!("SUBMIT: {}", errname(e)))?;
    expect_err(
        d.ioctl(PKTACCEL_IOC_REAP, &mut r),
        libc::EFAULT,
        "reap into address 0x30",
    )?;
    Ok(())
}

fn pinned_memory_caps() -> TestResult {
    let d = Dev::open()?;
    let info = d.info()?;
    let cap = info.max_pinned_per_file;
    ensure!(
        cap.is_multiple_of(SLAB_MAX_SIZE),
        "per-file cap {cap} not a slab multiple"
    );
    let n = cap / SLAB_MAX_SIZE;
    ensure!(
        info.max_pinned_total > info.pinned_total + cap,
        "total cap too small to test the per-file cap"
    );
    let mut ids = Vec::new();
    for i in 0..n {
        let s = d
            .alloc(SLAB_MAX_SIZE, CACHE_WRITE_BACK)
            .map_err(|e| format!("slab {i} of {n}: {}", errname(e)))?;
        ids.push(s.id);
    }
    expect_err(
        d.alloc(SLAB_MIN_SIZE, CACHE_WRITE_BACK),
        libc::ENOMEM,
        "over the per-file cap",
    )?;
    ensure!(d.stats()?.pinned == cap, "pinned {}", d.stats()?.pinned);
    d.free(ids[0])
        .map_err(|e| format!("SLAB_FREE: {}", errname(e)))?;
    d.alloc(SLAB_MIN_SIZE, CACHE_WRITE_BACK)
        .map_err(|e| format!("alloc after free under the cap: {}", errname(e)))?;
    drop(d);
    wait_pinned_zero()
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

fn killed_process_frees_slabs() -> TestResult {
    wait_pinned_zero()?;
    fn child(fd: i32) -> ! {
        let Ok(d) = Dev::open() else { child_exit(2) };
        let mut maps = Vec::new();
        for (size, caching) in [
            (SLAB_MAX_SIZE, CACHE_UNCACHED),
            (MIB, CACHE_WRITE_COMBINING),
            (SLAB_MIN_SIZE, CACHE_WRITE_BACK),
        ] {
            let Ok(s) = d.alloc(size, caching) else {
                child_exit(3)
            };
            let Ok(m) = Map::of(&d, &s) else {
                child_exit(4)
            };
            m.write(0, b"x");
            maps.push(m);
        }
        child_ready(fd);
        loop {
            std::thread::sleep(Duration::from_secs(1));
        }
    }
    let pid = fork_child(child)?;
    let pinned = debugfs_u64("pinned_bytes")?;
    let want = SLAB_MAX_SIZE + MIB + SLAB_MIN_SIZE;
    // SAFETY: signalling our own child.
    unsafe { libc::kill(pid, libc::SIGKILL) };
    wait_child(pid);
    ensure!(
        pinned == want,
        "child pinned {pinned} bytes, expected {want}"
    );
    wait_pinned_zero()
}

fn exit_with_requests_in_flight() -> TestResult {
    wait_pinned_zero()?;
    fn child(fd: i32) -> ! {
        let Ok(d) = Dev::open() else { child_exit(2) };
        let Ok(s) = d.alloc(SLAB_MAX_SIZE, CACHE_UNCACHED) else {
            child_exit(3)
        };
        let Ok(max) = d.info().map(|i| i.config.max_request_bytes as usize) else {
            child_exit(4)
        };
        let len = max.min(SLAB_MAX_SIZE as usize / 2);
        let segs = [seg_in(s.phys, len), seg_out(s.phys + len as u64, len)];
        let reqs: Vec<IocRequest> = (0..64).map(|i| req(OP_COPY, 0, &segs, i)).collect();
        let (r, _) = d.submit(&reqs, SUBMIT_NONBLOCK);
        if r.is_err_and(|e| e != libc::EAGAIN) {
            child_exit(5);
        }
        child_ready(fd);
        // Exit at once with the requests in flight; the file is released
        // by exit.
        child_exit(0)
    }
    let pid = fork_child(child)?;
    wait_child(pid);
    wait_pinned_zero()?;
    // The device still works.
    let d = Dev::open()?;
    expect_ok(&d.run(&req(OP_NOP, 0, &[], 77), 0)?, "nop after exit")?;
    ensure!(debugfs_u64("in_flight")? == 0, "requests left in flight");
    Ok(())
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

/// Reloads the module with small caps, checks both, and reloads it with
/// the defaults.
fn module_params_cap_pinned_memory() -> TestResult {
    const KO: &str = "/lib/modules/pktaccel.ko";
    ensure!(Path::new(KO).exists(), "{KO} missing in the guest");
    wait_pinned_zero()?;
    sh("rmmod", &["pktaccel"])?;
    let per_file = 2 * MIB;
    let total = 3 * MIB;
    let checked = (|| -> TestResult {
        sh(
            "insmod",
            &[
                KO,
                &format!("max_pinned_per_file={per_file}"),
                &format!("max_pinned_total={total}"),
            ],
        )?;
        let a = Dev::open()?;
        let i = a.info()?;
        ensure!(
            i.max_pinned_per_file == per_file && i.max_pinned_total == total,
            "INFO caps {} / {}",
            i.max_pinned_per_file,
            i.max_pinned_total
        );
        let sa = a
            .alloc(2 * MIB, CACHE_UNCACHED)
            .map_err(|e| format!("a: 2 MiB: {}", errname(e)))?;
        expect_err(
            a.alloc(SLAB_MIN_SIZE, CACHE_UNCACHED),
            libc::ENOMEM,
            "per-file cap",
        )?;
        let b = Dev::open()?;
        b.alloc(MIB, CACHE_UNCACHED)
            .map_err(|e| format!("b: 1 MiB: {}", errname(e)))?;
        expect_err(
            b.alloc(SLAB_MIN_SIZE, CACHE_UNCACHED),
            libc::ENOMEM,
            "total cap",
        )?;
        ensure!(
            b.info()?.pinned_total == total,
            "pinned_total {}",
            b.info()?.pinned_total
        );
        a.free(sa.id).map_err(|e| format!("free: {}", errname(e)))?;
        b.alloc(SLAB_MIN_SIZE, CACHE_UNCACHED)
            .map_err(|e| format!("b: 64 KiB after a's free: {}", errname(e)))?;
        Ok(())
    })();
    let _ = sh("rmmod", &["pktaccel"]);
    sh("insmod", &[KO])?;
    checked?;
    ensure!(Path::new(DEV).exists(), "{DEV} missing after reload");
    wait_pinned_zero()
}

pub(super) fn pci_function() -> Result<std::path::PathBuf, String> {
    crate::pci::find_device().ok_or_else(|| "no pktaccel PCI function".to_string())
}

fn unbind_fails_in_flight_and_rebind() -> TestResult {
    let dev = pci_function()?;
    let name = dev
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or("bad PCI path")?
        .to_string();
    let sc = Scratch::new(SLAB_MAX_SIZE, CACHE_UNCACHED)?;
    let len = (sc.dev.info()?.config.max_request_bytes as usize).min(SLAB_MAX_SIZE as usize / 2);
    let segs = [seg_in(sc.phys(0), len), seg_out(sc.phys(len), len)];
    let reqs: Vec<IocRequest> = (0..64).map(|i| req(OP_COPY, 0, &segs, i)).collect();
    let (r, n) = sc.dev.submit(&reqs, SUBMIT_NONBLOCK);
    if let Err(e) = r {
        ensure!(e == libc::EAGAIN, "SUBMIT: {}", errname(e));
    }
    fs::write("/sys/bus/pci/drivers/pktaccel/unbind", &name)
        .map_err(|e| format!("unbind {name}: {e}"))?;
    let rebind = || {
        fs::write("/sys/bus/pci/drivers/pktaccel/bind", &name)
            .map_err(|e| format!("bind {name}: {e}"))
    };
    let check = || -> TestResult {
        // Everything submitted completes (OK if the device got to it first,
        // DEVICE_ERROR otherwise); nothing hangs.
        let comps = sc.dev.reap_n(n as usize)?;
        for c in &comps {
            ensure!(
                c.status == STATUS_OK || c.status == STATUS_DEVICE_ERROR,
                "in-flight request ended with {}",
                status_name(c.status)
            );
        }
        let (r, _) = sc.dev.submit(&[req(OP_NOP, 0, &[], 1)], 0);
        expect_err(r, libc::ENODEV, "submit after unbind")?;
        let mut pfd = libc::pollfd {
            fd: sc.dev.f.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        unsafe { libc::poll(&mut pfd, 1, 1000) };
        ensure!(
            pfd.revents & libc::POLLHUP != 0,
            "poll after unbind: {:#x}",
            pfd.revents
        );
        // Slabs and mappings stay usable until closed.
        sc.map.write(0, b"ok");
        ensure!(!Path::new(DEV).exists(), "{DEV} still exists after unbind");
        Ok(())
    };
    let checked = check();
    drop(sc);
    rebind()?;
    checked?;
    ensure!(Path::new(DEV).exists(), "{DEV} missing after rebind");
    let d = Dev::open()?;
    expect_ok(&d.run(&req(OP_NOP, 0, &[], 2), 0)?, "nop after rebind")?;
    wait_pinned_zero()
}

/// The device process dies with requests in flight: they complete with
/// STATUS_DEVICE_ERROR once the driver's watchdog (request_timeout_ms)
/// gives up on the device, the waiter wakes, new submits fail with ENODEV,
/// poll reports POLLHUP, the slabs are freed on close and rmmod works.
fn device_killed_while_in_flight() -> TestResult {
    use std::io::Write;
    let sc = Scratch::new(SLAB_MAX_SIZE, CACHE_UNCACHED)?;
    let len = (sc.dev.info()?.config.max_request_bytes as usize).min(SLAB_MAX_SIZE as usize / 2);
    let segs = [seg_in(sc.phys(0), len), seg_out(sc.phys(len), len)];
    let reqs: Vec<IocRequest> = (0..32).map(|i| req(OP_COPY, 0, &segs, i)).collect();
    println!("{KILL_CUE}");
    let _ = std::io::stdout().flush();
    // A second file submits once the device is gone and closes without
    // reaping: its release must notice the dead device and free its slab.
    let closer = std::thread::spawn(|| -> Result<Duration, String> {
        let b = Scratch::new(SLAB_MIN_SIZE, CACHE_UNCACHED)?;
        std::thread::sleep(Duration::from_secs(2));
        let segs = [seg_in(b.phys(0), 4096), seg_out(b.phys(4096), 4096)];
        let (r, _) = b.dev.submit(&[req(OP_COPY, 0, &segs, 1)], 0);
        r.map_err(|e| format!("second file: SUBMIT: {}", errname(e)))?;
        let t = Instant::now();
        drop(b);
        Ok(t.elapsed())
    });
    let start = Instant::now();
    let mut device_errors = 0;
    let mut ok = 0u64;
    while device_errors == 0 {
        ensure!(
            start.elapsed() < Duration::from_secs(120),
            "no STATUS_DEVICE_ERROR within 120 s ({ok} requests completed)"
        );
        let (r, n) = sc.dev.submit(&reqs, 0);
        match r {
            Ok(()) => {}
            Err(e) if e == libc::ENODEV => break,
            Err(e) => return Err(format!("SUBMIT: {}", errname(e))),
        }
        let mut left = n as usize;
        while left > 0 {
            // Blocks without a timeout: only the driver can wake us.
            let got = sc
                .dev
                .reap(MAX_BATCH, -1)
                .map_err(|e| format!("REAP: {}", errname(e)))?;
            left -= got.len();
            for c in got {
                match c.status {
                    STATUS_OK => ok += 1,
                    STATUS_DEVICE_ERROR => device_errors += 1,
                    s => return Err(format!("completion status {}", status_name(s))),
                }
            }
        }
    }
    println!(
        "kmod: {ok} requests completed, then {device_errors} failed with device-error after {:?}",
        start.elapsed()
    );
    let closed_in = closer
        .join()
        .map_err(|_| "second file's thread panicked".to_string())??;
    println!("kmod: closing a file with a request in flight took {closed_in:?}");
    let (r, _) = sc.dev.submit(&reqs[..1], 0);
    expect_err(r, libc::ENODEV, "submit to a dead device")?;
    let mut pfd = libc::pollfd {
        fd: sc.dev.f.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd.
    unsafe { libc::poll(&mut pfd, 1, 1000) };
    ensure!(
        pfd.revents & libc::POLLHUP != 0,
        "poll on a dead device: {:#x}",
        pfd.revents
    );
    ensure!(
        debugfs_stats()?.get("device").map(String::as_str) == Some("dead"),
        "debugfs does not say dead"
    );
    drop(sc);
    wait_pinned_zero()?;
    let out = std::process::Command::new("rmmod")
        .arg("pktaccel")
        .output()
        .map_err(|e| format!("rmmod: {e}"))?;
    ensure!(
        out.status.success(),
        "rmmod pktaccel: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}
