//! `--crc-thread`: zlib `crc32()` calls in a second thread while the
//! checks run, so one process uses libpktcrc (CRC-32 on the device, under
//! `LD_PRELOAD="libpktslab.so libpktcrc.so"`) and the provider (AES-GCM on
//! the device) at once, each through its own libpktslab client on the one
//! device file. Every CRC is checked against a software one: a completion
//! reaped by the wrong client shows up as a wrong CRC here or a failed
//! check in the main thread.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;

use anyhow::{Result, bail};

type Crc32Fn = unsafe extern "C" fn(u64, *const u8, u32) -> u64;

/// The running thread and its stop flag.
pub struct CrcThread {
    stop: Arc<AtomicBool>,
    handle: JoinHandle<Result<u64>>,
}

/// zlib's CRC-32 (IEEE, reflected), bit by bit: the reference.
fn soft_crc32(mut crc: u32, data: &[u8]) -> u32 {
    crc = !crc;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = (crc >> 1) ^ (0xEDB8_8320 & (crc & 1).wrapping_neg());
        }
    }
    !crc
}

impl CrcThread {
    /// Starts the thread; fails when no `crc32` is loaded.
    pub fn start() -> Result<Self> {
        // SAFETY: dlsym with the default pseudo-handle and a C string.
        let p = unsafe { libc::dlsym(libc::RTLD_DEFAULT, c"crc32".as_ptr()) };
        if p.is_null() {
            bail!("--crc-thread: no crc32() in the process (preload libpktcrc.so or load zlib)");
        }
        // SAFETY: zlib's crc32(uLong, const Bytef *, uInt).
        let f = unsafe { core::mem::transmute::<*mut libc::c_void, Crc32Fn>(p) };
        let stop = Arc::new(AtomicBool::new(false));
        let s = Arc::clone(&stop);
        let handle = std::thread::spawn(move || crc_loop(f, &s));
        Ok(Self { stop, handle })
    }

    /// Stops the thread; returns how many CRCs it checked, or the first
    /// wrong one.
    pub fn finish(self) -> Result<u64> {
        self.stop.store(true, Ordering::Relaxed);
        match self.handle.join() {
            Ok(r) => r,
            Err(_) => bail!("--crc-thread: the CRC thread panicked"),
        }
    }
}

/// CRCs of heap buffers of varied sizes until told to stop (and at least
/// 200 of them).
fn crc_loop(f: Crc32Fn, stop: &AtomicBool) -> Result<u64> {
    let mut n = 0u64;
    while n < 200 || !stop.load(Ordering::Relaxed) {
        let len = 64 + (n as usize * 997) % 8192;
        let buf: Vec<u8> = (0..len).map(|i| (i as u64 * 31 + n) as u8).collect();
        // SAFETY: `buf` has `len` readable bytes for the call.
        let got = unsafe { f(0, buf.as_ptr(), len as u32) } as u32;
        let want = soft_crc32(0, &buf);
        if got != want {
            bail!(
                "--crc-thread: crc32 of {len} bytes #{n} gave {got:#010x}, software {want:#010x}"
            );
        }
        n += 1;
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    #[test]
    fn soft_crc32_is_zlibs() {
        assert_eq!(super::soft_crc32(0, b"123456789"), 0xcbf4_3926);
    }
}
