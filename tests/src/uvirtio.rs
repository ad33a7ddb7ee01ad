//! A user-space virtio-pci driver for one queue, just enough to talk to
//! the pktaccel device without the kernel module: the BAR mapped through
//! sysfs, the common configuration, a notify register, and rings in
//! locked pages whose physical addresses come from /proc/self/pagemap.
//! The hostile-driver guest test uses it to hand the device malformed
//! queues that a well-behaved driver never would.

use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::pci::virtio_caps;

/// virtio_pci_cap cfg_type values.
const CAP_COMMON: u8 = 1;
const CAP_NOTIFY: u8 = 2;

/// Device status bits.
pub const S_ACKNOWLEDGE: u8 = 1;
/// The guest has a driver.
pub const S_DRIVER: u8 = 2;
/// The driver is ready.
pub const S_DRIVER_OK: u8 = 4;
/// Feature negotiation is complete.
pub const S_FEATURES_OK: u8 = 8;
/// The device wants a reset.
pub const S_NEEDS_RESET: u8 = 64;

/// Descriptor flags.
pub const F_NEXT: u16 = 1;
/// Device-writable.
pub const F_WRITE: u16 = 2;
/// The descriptor holds an indirect table.
pub const F_INDIRECT: u16 = 4;

const PAGE: usize = 4096;

/// A mapped BAR; every access is a volatile load or store.
pub struct Bar {
    base: *mut u8,
    len: usize,
}

impl Bar {
    /// Maps the whole of `res` (a sysfs `resourceN` file) read-write.
    pub fn map(res: &Path) -> Result<Self, String> {
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .open(res)
            .map_err(|e| format!("opening {}: {e}", res.display()))?;
        let len = f.metadata().map_err(|e| e.to_string())?.len() as usize;
        // SAFETY: a shared mapping of a sysfs resource file we opened; the
        // kernel checks the length against the BAR. Checked before use.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                f.as_raw_fd(),
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(format!(
                "mmap {}: {}",
                res.display(),
                std::io::Error::last_os_error()
            ));
        }
        Ok(Self {
            base: base.cast(),
            len,
        })
    }

    fn at<T>(&self, off: usize) -> *mut T {
        assert!(
            off + std::mem::size_of::<T>() <= self.len
                && off.is_multiple_of(std::mem::size_of::<T>()),
            "BAR access at {off:#x} outside or unaligned"
        );
        // SAFETY: checked just above to lie inside the mapping.
        unsafe { self.base.add(off).cast() }
    }

    /// Volatile load.
    pub fn read<T: Copy>(&self, off: usize) -> T {
        // SAFETY: `at` returns an aligned pointer inside the live mapping.
        unsafe { std::ptr::read_volatile(self.at::<T>(off)) }
    }

    /// Volatile store.
    pub fn write<T: Copy>(&self, off: usize, v: T) {
        // SAFETY: `at` returns an aligned pointer inside the live mapping.
        unsafe { std::ptr::write_volatile(self.at::<T>(off), v) }
    }
}

impl Drop for Bar {
    fn drop(&mut self) {
        // SAFETY: unmapping exactly what `map` mapped.
        unsafe { libc::munmap(self.base.cast(), self.len) };
    }
}

/// Locked anonymous pages with known physical addresses (each page is
/// physically contiguous only with itself). Accesses are volatile and
/// naturally aligned: the device reads and writes them concurrently.
pub struct DmaPages {
    base: *mut u8,
    phys: Vec<u64>,
}

impl DmaPages {
    /// `n` zeroed, locked pages.
    pub fn new(n: usize) -> Result<Self, String> {
        // SAFETY: an anonymous private mapping; checked before use.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                n * PAGE,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_LOCKED | libc::MAP_POPULATE,
                -1,
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(format!("mmap: {}", std::io::Error::last_os_error()));
        }
        let base: *mut u8 = base.cast();
        let pagemap = File::open("/proc/self/pagemap").map_err(|e| format!("pagemap: {e}"))?;
        let mut phys = Vec::new();
        for i in 0..n {
            let va = base as u64 + (i * PAGE) as u64;
            let mut e = [0u8; 8];
            pagemap
                .read_exact_at(&mut e, va / PAGE as u64 * 8)
                .map_err(|e| format!("pagemap read: {e}"))?;
            let e = u64::from_le_bytes(e);
            let pfn = e & ((1 << 55) - 1);
            if e >> 63 == 0 || pfn == 0 {
                return Err("pagemap shows no physical page (not root?)".into());
            }
            phys.push(pfn * PAGE as u64);
        }
        Ok(Self { base, phys })
    }

    /// Physical address of byte `off` of page `page`.
    pub fn phys(&self, page: usize, off: usize) -> u64 {
        self.phys[page] + off as u64
    }

    fn ptr<T>(&self, page: usize, off: usize) -> *mut T {
        let size = std::mem::size_of::<T>();
        assert!(page < self.phys.len() && off + size <= PAGE && off.is_multiple_of(size));
        // SAFETY: inside the mapping (checked above).
        unsafe { self.base.add(page * PAGE + off).cast() }
    }

    /// Volatile store (the device reads these pages concurrently).
    pub fn put<T: Copy>(&self, page: usize, off: usize, v: T) {
        // SAFETY: `ptr` is aligned and inside our live mapping; volatile
        // because the device may read it at any time.
        unsafe { std::ptr::write_volatile(self.ptr::<T>(page, off), v) };
        std::sync::atomic::fence(std::sync::atomic::Ordering::SeqCst);
    }

    /// Volatile load (the device writes these pages concurrently).
    pub fn get<T: Copy>(&self, page: usize, off: usize) -> T {
        std::sync::atomic::fence(std::sync::atomic::Ordering::SeqCst);
        // SAFETY: as in `put`.
        unsafe { std::ptr::read_volatile(self.ptr::<T>(page, off)) }
    }

    /// Zeroes page `page`.
    pub fn clear(&self, page: usize) {
        // SAFETY: one whole page of our mapping.
        unsafe { std::ptr::write_bytes(self.ptr::<u8>(page, 0), 0, PAGE) };
    }
}

impl Drop for DmaPages {
    fn drop(&mut self) {
        // SAFETY: unmapping exactly what `new` mapped.
        unsafe { libc::munmap(self.base.cast(), self.phys.len() * PAGE) };
    }
}

/// The function's common configuration and notify register.
pub struct UserVirtio {
    /// sysfs directory of the PCI function.
    pub dev: PathBuf,
    bars: Vec<(u8, Bar)>,
    common: (usize, usize),
    notify: (usize, usize, u32),
}

impl UserVirtio {
    /// Maps the function's virtio structures and turns on memory decoding
    /// and bus mastering (no driver is bound to do it).
    pub fn open(dev: &Path) -> Result<Self, String> {
        let cfg_path = dev.join("config");
        let config =
            std::fs::read(&cfg_path).map_err(|e| format!("{}: {e}", cfg_path.display()))?;
        let caps = virtio_caps(&config);
        let find = |t: u8| {
            caps.iter()
                .find(|c| c.cfg_type == t)
                .copied()
                .ok_or(format!("no virtio capability of type {t}"))
        };
        let (common, notify) = (find(CAP_COMMON)?, find(CAP_NOTIFY)?);
        let mult = notify_multiplier(&config).ok_or("no notify_off_multiplier")?;
        let _ = std::fs::write(dev.join("enable"), "1");
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&cfg_path)
            .map_err(|e| format!("{}: {e}", cfg_path.display()))?;
        let mut cmd = [0u8; 2];
        f.read_exact_at(&mut cmd, 4).map_err(|e| e.to_string())?;
        let cmd = u16::from_le_bytes(cmd) | 0x2 | 0x4; // memory space, bus master
        f.write_all_at(&cmd.to_le_bytes(), 4)
            .map_err(|e| format!("PCI command register: {e}"))?;
        let mut bars: Vec<(u8, Bar)> = Vec::new();
        for bar in [common.bar, notify.bar] {
            if !bars.iter().any(|(b, _)| *b == bar) {
                bars.push((bar, Bar::map(&dev.join(format!("resource{bar}")))?));
            }
        }
        let idx = |b: u8| bars.iter().position(|(x, _)| *x == b).unwrap_or(0);
        Ok(Self {
            dev: dev.to_owned(),
            common: (idx(common.bar), common.offset as usize),
            notify: (idx(notify.bar), notify.offset as usize, mult),
            bars,
        })
    }

    fn c<T: Copy>(&self, off: usize) -> T {
        self.bars[self.common.0].1.read(self.common.1 + off)
    }

    fn set<T: Copy>(&self, off: usize, v: T) {
        self.bars[self.common.0].1.write(self.common.1 + off, v)
    }

    /// The device status register.
    pub fn status(&self) -> u8 {
        self.c(0x14)
    }

    /// Resets the device and waits for the reset to read back.
    pub fn reset(&self) -> Result<(), String> {
        self.set::<u8>(0x14, 0);
        let t = Instant::now();
        while self.status() != 0 {
            if t.elapsed() > Duration::from_secs(10) {
                return Err("device status did not read 0 after reset".into());
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        Ok(())
    }

    /// Resets, negotiates `features` (which must include VERSION_1) and
    /// starts queue 0 with `size` entries at the given physical addresses,
    /// without an interrupt vector (the caller polls the used ring).
    pub fn start(&self, features: u64, size: u16, ring: [u64; 3]) -> Result<(), String> {
        self.reset()?;
        self.set::<u8>(0x14, S_ACKNOWLEDGE | S_DRIVER);
        self.set::<u32>(0x00, 0);
        let lo: u32 = self.c(0x04);
        self.set::<u32>(0x00, 1);
        let hi: u32 = self.c(0x04);
        let offered = u64::from(lo) | (u64::from(hi) << 32);
        if features & !offered != 0 {
            return Err(format!("device does not offer {:#x}", features & !offered));
        }
        for (sel, v) in [(0u32, features as u32), (1, (features >> 32) as u32)] {
            self.set::<u32>(0x08, sel);
            self.set::<u32>(0x0c, v);
        }
        self.set::<u8>(0x14, S_ACKNOWLEDGE | S_DRIVER | S_FEATURES_OK);
        if self.status() & S_FEATURES_OK == 0 {
            return Err("FEATURES_OK did not stick".into());
        }
        self.set::<u16>(0x16, 0);
        self.set::<u16>(0x18, size);
        self.set::<u16>(0x1a, 0xffff);
        self.set::<u64>(0x20, ring[0]);
        self.set::<u64>(0x28, ring[1]);
        self.set::<u64>(0x30, ring[2]);
        self.set::<u16>(0x1c, 1);
        self.set::<u8>(0x14, S_ACKNOWLEDGE | S_DRIVER | S_FEATURES_OK | S_DRIVER_OK);
        Ok(())
    }

    /// Kicks queue 0.
    pub fn notify(&self) {
        self.set::<u16>(0x16, 0);
        let off: u16 = self.c(0x1e);
        let (bar, base, mult) = self.notify;
        self.bars[bar]
            .1
            .write::<u16>(base + usize::from(off) * mult as usize, 0);
    }
}

impl Drop for UserVirtio {
    fn drop(&mut self) {
        let _ = self.reset();
    }
}

/// notify_off_multiplier of the notify capability (the 4 bytes after the
/// generic virtio_pci_cap).
fn notify_multiplier(config: &[u8]) -> Option<u32> {
    let mut ptr = usize::from(*config.get(0x34)? & 0xfc);
    for _ in 0..48 {
        if ptr == 0 || ptr + 20 > config.len() {
            return None;
        }
        if config[ptr] == 0x09 && config[ptr + 3] == CAP_NOTIFY {
            return Some(u32::from_le_bytes(
                config[ptr + 16..ptr + 20].try_into().ok()?,
            ));
        }
        ptr = usize::from(config[ptr + 1] & 0xfc);
    }
    None
}
