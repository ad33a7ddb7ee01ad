//! `libpktcrc.so`: zlib's `crc32()` and `crc32_z()` on the pktaccel device.
//!
//! Preloaded after libpktslab (`LD_PRELOAD="libpktslab.so libpktcrc.so"`),
//! an unmodified program's heap lives in pinned slabs, and every CRC-32 it
//! asks zlib for over such a buffer is computed by the device's `OP_CRC32`
//! on the program's own memory, by physical address: zero copies, no change
//! to the program. This is the "preloaded replacement of a library
//! function" path of the design (the OpenSSL-provider route does the same
//! for AES-GCM with far more code).
//!
//! The device's CRC-32 is zlib's exactly: IEEE polynomial, the previous
//! CRC as seed (`aux`), the finished CRC as result, so `crc32(crc32(0, a),
//! b) == crc32(0, a ++ b)` holds across the two implementations.
//!
//! Anything else goes to the real zlib function (found with
//! `dlsym(RTLD_NEXT)`, or in `libz.so.1` when zlib was loaded privately,
//! e.g. by a Python extension module; a built-in software CRC if neither
//! exists): a buffer outside the pinned arena, libpktslab not loaded, no
//! device, or any device error. `PKTCRC_STATS=1` prints at exit how many
//! calls and bytes went to the device and how many to software;
//! `PKTCRC_MIN=N` sends only buffers of at least N bytes to the device.

use core::ffi::{c_char, c_int, c_void};
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU64, AtomicUsize, Ordering};

use pktaccel_abi::{IocCompletion, OP_CRC32, STATUS_OK};

/// Bytes per device request. Under the device's 1 MiB request limit and
/// few enough pinned slabs (2 MiB each) to stay far below its segment limit.
pub const CHUNK: usize = 256 * 1024;

/// `struct pktslab_iov` / `struct pktslab_op`: libpktslab's own definition.
#[path = "../../src/client/c_types.rs"]
mod c_types;
use c_types::{CIov as Iov, COp};

/// The device lock and setup that survive fork() (shared with the provider).
#[allow(dead_code)] // the provider uses parts libpktcrc does not
mod fork_lock;
use fork_lock::{ForkLock, ForkOnce};

type OpenFn = unsafe extern "C" fn() -> *mut c_void;
type RunFn = unsafe extern "C" fn(*mut c_void, *mut COp, u32, *mut IocCompletion) -> c_int;
type Crc32Fn = unsafe extern "C" fn(u64, *const u8, u32) -> u64;
type Crc32zFn = unsafe extern "C" fn(u64, *const u8, usize) -> u64;

/// The libpktslab client, opened on first use. `Send` because the client
/// handle is only used under the lock.
///
/// A forked child keeps it: the prepare handler waited for the call in
/// progress, so the handle is idle at the fork, and libpktslab moves an
/// inherited client to the child's own device file and router by itself.
struct Dev {
    client: *mut c_void,
    run: RunFn,
}

// SAFETY: the handle is an opaque pointer used only while DEV is locked.
unsafe impl Send for Dev {}

enum DevState {
    Unopened,
    Open(Dev),
    /// Why, said at the first crc32 call (not at load: a program that
    /// never calls crc32 prints nothing).
    Unavailable(&'static str),
}

/// Held across each device call (one client handle, one call at a time).
static DEV: ForkLock<DevState> = ForkLock::new(DevState::Unopened);
/// Opens the client and registers the fork handlers, once.
static SETUP: ForkOnce = ForkOnce::new();

static DEVICE_CALLS: AtomicU64 = AtomicU64::new(0);
static DEVICE_BYTES: AtomicU64 = AtomicU64::new(0);
static SOFT_CALLS: AtomicU64 = AtomicU64::new(0);
static SOFT_BYTES: AtomicU64 = AtomicU64::new(0);
static DEVICE_ERRORS: AtomicU64 = AtomicU64::new(0);
/// 0 = not read yet; else min length + 1.
static MIN_LEN: AtomicUsize = AtomicUsize::new(0);
/// Where the `PKTCRC_STATS=1` report goes (a copy of stderr); -1: none.
static STATS_FD: AtomicI32 = AtomicI32::new(-1);

fn sym(handle: *mut c_void, name: &core::ffi::CStr) -> *mut c_void {
    // SAFETY: dlsym with a valid pseudo-handle or handle and a C string.
    unsafe { libc::dlsym(handle, name.as_ptr()) }
}

fn say(msg: &str) {
    // SAFETY: writes a live buffer to stderr; a failed write is ignored.
    unsafe { libc::write(2, msg.as_ptr().cast(), msg.len()) };
}

/// The `PKTCRC_STATS=1` report, at exit (and at unload), of a process that
/// made crc32 calls: a `.fini_array` entry, so nothing is registered while
/// the program may be forking (an `atexit` in progress in another thread
/// at a fork would leave the child's exit waiting on glibc's lock).
extern "C" fn report_at_exit() {
    let fd = STATS_FD.load(Ordering::Relaxed);
    if fd < 0 {
        return;
    }
    let (dc, db) = (
        DEVICE_CALLS.load(Ordering::Relaxed),
        DEVICE_BYTES.load(Ordering::Relaxed),
    );
    let (sc, sb) = (
        SOFT_CALLS.load(Ordering::Relaxed),
        SOFT_BYTES.load(Ordering::Relaxed),
    );
    let e = DEVICE_ERRORS.load(Ordering::Relaxed);
    if dc + sc + e == 0 {
        return;
    }
    let mut b = StackBuf {
        buf: [0; 256],
        len: 0,
    };
    let _ = core::fmt::Write::write_fmt(
        &mut b,
        format_args!(
            "pktcrc: {dc} crc32 calls on the device ({db} bytes, zero-copy), {sc} in software ({sb} bytes), {e} device errors\n"
        ),
    );
    // SAFETY: writes the buffer's filled part; a failed write is ignored.
    unsafe { libc::write(fd, b.buf.as_ptr().cast(), b.len) };
}

#[used]
#[unsafe(link_section = ".fini_array")]
static REPORT_AT_EXIT: extern "C" fn() = report_at_exit;

/// A line formatted without allocating (the report runs at exit).
struct StackBuf {
    buf: [u8; 256],
    len: usize,
}

impl core::fmt::Write for StackBuf {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        let n = s.len().min(self.buf.len() - self.len);
        self.buf[self.len..self.len + n].copy_from_slice(&s.as_bytes()[..n]);
        self.len += n;
        Ok(())
    }
}

/// `PKTCRC_MIN` (read by the setup).
fn min_len() -> usize {
    MIN_LEN.load(Ordering::Relaxed).max(1) - 1
}

/// Reads `PKTCRC_MIN` and `PKTCRC_STATS` (part of the setup).
fn read_env() {
    let v = std::env::var("PKTCRC_MIN")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1usize)
        .max(1);
    MIN_LEN.store(v + 1, Ordering::Relaxed);
    if std::env::var_os("PKTCRC_STATS").is_some_and(|s| s == "1") {
        // A copy of stderr: programs may close it before the report runs.
        // SAFETY: fcntl on fd 2; failure leaves -1 (no report).
        let fd = unsafe { libc::fcntl(2, libc::F_DUPFD_CLOEXEC, 100) };
        STATS_FD.store(fd, Ordering::Relaxed);
    }
}

extern "C" fn before_fork() {
    DEV.before_fork();
}

extern "C" fn after_fork_parent() {
    DEV.after_fork_parent();
}

/// The child counts from zero: each process's report is its own work.
extern "C" fn after_fork_child() {
    for c in [
        &DEVICE_CALLS,
        &DEVICE_BYTES,
        &SOFT_CALLS,
        &SOFT_BYTES,
        &DEVICE_ERRORS,
    ] {
        c.store(0, Ordering::Relaxed);
    }
    DEV.after_fork_child();
}

/// The one-time setup: the client is opened without the lock held and
/// before our fork handlers are registered, so libpktslab's handlers are
/// registered first and ours run first at a fork (see `fork_lock`).
extern "C" fn setup() {
    read_env();
    let st = open_dev();
    DEV.register(before_fork, after_fork_parent, after_fork_child);
    *DEV.lock() = st;
}

/// The setup runs when the library is loaded: preloaded, that is before
/// `main`, with one thread, so no fork can interrupt it. Run lazily in a
/// threaded program, a fork while it registered libpktslab's and our
/// handlers (and took libpktslab's locks) could leave the child waiting
/// on a lock whose child handler did not run for that fork.
extern "C" fn setup_at_load() {
    SETUP.call(setup);
}

#[used]
#[unsafe(link_section = ".init_array")]
static SETUP_AT_LOAD: extern "C" fn() = setup_at_load;

fn open_dev() -> DevState {
    let open = sym(libc::RTLD_DEFAULT, c"pktslab_client_open");
    let run = sym(libc::RTLD_DEFAULT, c"pktslab_client_run");
    if open.is_null() || run.is_null() {
        return DevState::Unavailable(
            "pktcrc: libpktslab.so is not loaded (LD_PRELOAD=\"libpktslab.so libpktcrc.so\"); CRCs stay in software\n",
        );
    }
    // SAFETY: the symbols are libpktslab's, with the signatures of pktslab.h.
    let (open, run) = unsafe {
        (
            core::mem::transmute::<*mut c_void, OpenFn>(open),
            core::mem::transmute::<*mut c_void, RunFn>(run),
        )
    };
    // SAFETY: no arguments; returns NULL when there is no device.
    let client = unsafe { open() };
    if client.is_null() {
        return DevState::Unavailable(
            "pktcrc: no /dev/pktaccel behind the pktslab heap; CRCs stay in software\n",
        );
    }
    DevState::Open(Dev { client, run })
}

/// One chained CRC-32 over `[p, p+len)` on the device; `None` when the
/// buffer is not pinned or the device fails (nothing was changed then).
fn device_crc(mut crc: u32, p: *const u8, len: usize) -> Option<u32> {
    // The setup ran (crc_common). Waits while another thread's call is on the device: every CRC of a
    // pinned buffer runs there, none falls back for contention.
    let g = DEV.lock();
    let d = match &*g {
        DevState::Open(d) => d,
        DevState::Unavailable(why) => {
            static SAID: AtomicBool = AtomicBool::new(false);
            if !SAID.swap(true, Ordering::Relaxed) {
                say(why);
            }
            return None;
        }
        DevState::Unopened => return None,
    };
    let mut off = 0usize;
    while off < len {
        let n = (len - off).min(CHUNK);
        let iov = Iov {
            base: p.wrapping_add(off).cast(),
            len: n,
        };
        let mut op = COp {
            op: OP_CRC32,
            flags: 0,
            key_slot: 0,
            aux: crc,
            reserved: 0,
            params: [0; 40],
            inputs: &iov,
            n_in: 1,
            n_out: 0,
            outputs: core::ptr::null(),
            cookie: 0,
        };
        let mut c = IocCompletion::default();
        // SAFETY: `op` and `iov` are valid and `c` has room for the one
        // completion; the caller's buffer stays alive and unchanged for the
        // whole call (zlib's contract gives it to us for the duration),
        // and libpktslab's run reaps the request before it returns.
        let r = unsafe { (d.run)(d.client, &mut op, 1, &mut c) };
        if r != 0 {
            // -EFAULT: not pinned (the usual case for foreign memory).
            if r != -libc::EFAULT {
                DEVICE_ERRORS.fetch_add(1, Ordering::Relaxed);
            }
            return None;
        }
        if c.status != STATUS_OK {
            DEVICE_ERRORS.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        crc = c.result as u32;
        off += n;
    }
    DEVICE_CALLS.fetch_add(1, Ordering::Relaxed);
    DEVICE_BYTES.fetch_add(len as u64, Ordering::Relaxed);
    Some(crc)
}

fn real_crc32z() -> Option<Crc32zFn> {
    static F: AtomicUsize = AtomicUsize::new(0);
    resolve(&F, c"crc32_z")
        // SAFETY: zlib's crc32_z(uLong, const Bytef *, z_size_t).
        .map(|p| unsafe { core::mem::transmute::<usize, Crc32zFn>(p) })
}

fn real_crc32() -> Option<Crc32Fn> {
    static F: AtomicUsize = AtomicUsize::new(0);
    resolve(&F, c"crc32")
        // SAFETY: zlib's crc32(uLong, const Bytef *, uInt).
        .map(|p| unsafe { core::mem::transmute::<usize, Crc32Fn>(p) })
}

/// The next definition of `name` after this library, else the one in
/// `libz.so.1`; cached in `slot` (1 = none).
fn resolve(slot: &AtomicUsize, name: &core::ffi::CStr) -> Option<usize> {
    let v = slot.load(Ordering::Acquire);
    if v > 1 {
        return Some(v);
    }
    if v == 1 {
        return None;
    }
    let mut p = sym(libc::RTLD_NEXT, name);
    if p.is_null() {
        // SAFETY: dlopen of a library name; NULL on failure.
        let h = unsafe { libc::dlopen(c"libz.so.1".as_ptr() as *const c_char, libc::RTLD_LAZY) };
        if !h.is_null() {
            p = sym(h, name);
        }
    }
    let v = if p.is_null() { 1 } else { p as usize };
    slot.store(v, Ordering::Release);
    (v > 1).then_some(v)
}

fn soft(crc: u32, p: *const u8, len: usize) -> u32 {
    // SAFETY: zlib's contract: `p` points at `len` readable bytes.
    let s = unsafe { core::slice::from_raw_parts(p, len) };
    let mut h = crc32fast::Hasher::new_with_initial(crc);
    h.update(s);
    h.finalize()
}

fn crc_common(crc: u64, p: *const u8, len: usize, fallback: impl FnOnce() -> u64) -> u64 {
    SETUP.call(setup);
    if !p.is_null()
        && len >= min_len()
        && let Some(v) = device_crc(crc as u32, p, len)
    {
        return u64::from(v);
    }
    if !p.is_null() {
        SOFT_CALLS.fetch_add(1, Ordering::Relaxed);
        SOFT_BYTES.fetch_add(len as u64, Ordering::Relaxed);
    }
    fallback()
}

/// zlib `crc32(crc, buf, len)`: on the device for pinned buffers.
///
/// # Safety
/// zlib's contract: `buf` is NULL or points at `len` readable bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn crc32(crc: u64, buf: *const u8, len: u32) -> u64 {
    crc_common(crc, buf, len as usize, || match real_crc32() {
        // SAFETY: forwarding the caller's arguments to zlib.
        Some(f) => unsafe { f(crc, buf, len) },
        None if buf.is_null() => 0,
        None => u64::from(soft(crc as u32, buf, len as usize)),
    })
}

/// zlib `crc32_z(crc, buf, len)` (size_t length): as [`crc32`].
///
/// # Safety
/// As [`crc32`].
#[unsafe(no_mangle)]
pub unsafe extern "C" fn crc32_z(crc: u64, buf: *const u8, len: usize) -> u64 {
    crc_common(crc, buf, len, || match real_crc32z() {
        // SAFETY: forwarding the caller's arguments to zlib.
        Some(f) => unsafe { f(crc, buf, len) },
        None if buf.is_null() => 0,
        None => u64::from(soft(crc as u32, buf, len)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn falls_back_to_software_without_libpktslab() {
        // In the test binary libpktslab is not loaded: the real/soft path
        // must give zlib's published check value, chained or not.
        let d = b"123456789";
        // SAFETY: valid buffers.
        unsafe {
            assert_eq!(crc32(0, d.as_ptr(), 9), 0xcbf4_3926);
            assert_eq!(
                crc32_z(crc32(0, d.as_ptr(), 4), d[4..].as_ptr(), 5),
                0xcbf4_3926
            );
            assert_eq!(crc32(0, core::ptr::null(), 0), 0);
            assert_eq!(crc32(0x1234, d.as_ptr(), 0), 0x1234);
        }
        assert!(DEVICE_CALLS.load(Ordering::Relaxed) == 0);
    }
}
