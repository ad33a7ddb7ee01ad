//! The device, reached through libpktslab's own client (found with
//! `dlsym` at run time, as libpktcrc does): only the client that mapped
//! the process's pinned slabs may name their physical addresses, so the
//! caller's buffers go to the device as they are.
//!
//! One process-wide state: the client, a bitmap of this file's key slots
//! (the driver gives every open file its own slot namespace), and the
//! device limits. Requests run one at a time under its lock, each through
//! libpktslab's `pktslab_client_run`, which reaps it before it returns.
//!
//! After fork() the child's device file is a new one (libpktslab reopens
//! it): none of the parent's key slots or pinned buffers are the child's.
//! The lock's fork handlers (`fork_lock`, shared with libpktcrc) wait for
//! the request in progress and count the fork; a [`Slot`] or
//! [`PinnedBuf`] from before it is then stale: contexts install their key
//! again on the child's own file and take new pinned buffers, and the
//! child's slot table starts empty.

use core::ffi::{CStr, c_int, c_void};

use pktaccel_abi::{
    AES256_KEY_LEN, IocCompletion, OP_KEY_CLEAR, OP_KEY_SET, STATUS_AUTH_FAILED, STATUS_OK,
};

use crate::stats;

/// The device lock and setup that survive fork() (libpktcrc's).
#[path = "../../pktcrc/src/fork_lock.rs"]
mod fork_lock;
use fork_lock::{ForkLock, ForkOnce};

/// `struct pktslab_iov` / `struct pktslab_op`: libpktslab's own definition.
#[path = "../../src/client/c_types.rs"]
mod c_types;
pub use c_types::CIov as Iov;
use c_types::{CLimits, COp};

type OpenFn = unsafe extern "C" fn() -> *mut c_void;
type RunFn = unsafe extern "C" fn(*mut c_void, *mut COp, u32, *mut IocCompletion) -> c_int;
type LimitsFn = unsafe extern "C" fn(*mut c_void, *mut CLimits) -> c_int;
type V2pFn = unsafe extern "C" fn(*const c_void, *mut usize) -> u64;
type AllocFn = unsafe extern "C" fn(usize) -> *mut c_void;
type FreeFn = unsafe extern "C" fn(*mut c_void);
type CopyModeFn = unsafe extern "C" fn(*mut c_void, c_int) -> c_int;

/// `PKTSLAB_COPY_FALLBACK`.
const COPY_FALLBACK: c_int = 1;

/// `PKTSLAB_V2P_NOT_MAPPED`: v2p values at or above it are errors.
const V2P_ERROR_MIN: u64 = u64::MAX - 2;

/// The bound libpktslab client and this file's key slots.
struct Dev {
    client: *mut c_void,
    run: RunFn,
    v2p: V2pFn,
    alloc: AllocFn,
    free: FreeFn,
    /// `pktslab_client_copy_mode`, when libpktslab has it.
    copy_mode: Option<CopyModeFn>,
    /// Bit i set: slot i is taken by a context of this process.
    slots: u64,
    /// Slots this process may use: `first..key_slots`.
    first_slot: u32,
    key_slots: u32,
    max_request: usize,
    /// The fork count `slots` belongs to ([`ForkLock::forks`]).
    forks: u64,
}

// SAFETY: the client handle is only used while DEV is locked; the function
// pointers are plain C functions.
unsafe impl Send for Dev {}

enum State {
    Unopened,
    Open(Dev),
    Unavailable,
}

/// Held across each request (one client handle, one request at a time).
static DEV: ForkLock<State> = ForkLock::new(State::Unopened);
/// Opens the client and registers the fork handlers, once per process.
static SETUP: ForkOnce = ForkOnce::new();

extern "C" fn before_fork() {
    DEV.before_fork();
}

extern "C" fn after_fork_parent() {
    DEV.after_fork_parent();
}

/// The child counts from zero (each process reports its own work) and
/// sees every slot and pinned buffer of the parent as stale.
extern "C" fn after_fork_child() {
    stats::reset();
    DEV.after_fork_child();
}

/// The one-time setup: the client is opened without the lock held and
/// before our fork handlers are registered, so libpktslab's (heap, client
/// router) are registered first and ours run first at a fork.
extern "C" fn setup() {
    let st = open_dev();
    DEV.register(before_fork, after_fork_parent, after_fork_child);
    *DEV.lock() = st;
}

/// Opens the client and registers the fork handlers now, if not done yet
/// (called when OpenSSL loads the provider): a fork cannot interrupt a
/// setup that already ran, while one run lazily in a threaded program
/// could be interrupted half-way, leaving the child waiting on a lock of
/// libpktslab's whose child handler did not run for that fork.
pub fn setup_now() {
    SETUP.call(setup);
}

/// A key slot of this process's device file, as of one fork count.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Slot {
    n: u32,
    forks: u64,
}

impl Slot {
    /// Whether the slot is on this process's file (not a parent's).
    pub fn current(&self) -> bool {
        self.forks == DEV.forks()
    }
}

fn sym(name: &CStr) -> *mut c_void {
    // SAFETY: dlsym with the default pseudo-handle and a C string.
    unsafe { libc::dlsym(libc::RTLD_DEFAULT, name.as_ptr()) }
}

fn say(msg: &str) {
    // SAFETY: writes a live buffer to stderr; a failed write is ignored.
    unsafe { libc::write(2, msg.as_ptr().cast(), msg.len()) };
}

/// The driver's limits (key slots, request size) through the client's own
/// file; the datasheet defaults if that fails.
fn device_limits(client: *mut c_void, limits: LimitsFn) -> (u32, usize) {
    let mut l = CLimits::default();
    // SAFETY: a live client handle and a writable CLimits.
    if unsafe { limits(client, &mut l) } != 0 {
        return (16, 1 << 20);
    }
    (l.key_slots.min(64), l.max_request_bytes as usize)
}

fn open_dev() -> State {
    let names = [
        c"pktslab_client_open",
        c"pktslab_client_run",
        c"pktslab_client_limits",
        c"pktslab_v2p",
        c"pktslab_alloc",
        c"pktslab_free",
    ];
    let p: Vec<*mut c_void> = names.iter().map(|n| sym(n)).collect();
    if p.iter().any(|p| p.is_null()) {
        say(
            "pktaccel-provider: libpktslab.so is not loaded (run under LD_PRELOAD=libpktslab.so); AES-GCM stays in software\n",
        );
        return State::Unavailable;
    }
    // SAFETY: the symbols are libpktslab's, with the signatures of pktslab.h.
    let (open, run, limits, v2p, alloc, free) = unsafe {
        (
            core::mem::transmute::<*mut c_void, OpenFn>(p[0]),
            core::mem::transmute::<*mut c_void, RunFn>(p[1]),
            core::mem::transmute::<*mut c_void, LimitsFn>(p[2]),
            core::mem::transmute::<*mut c_void, V2pFn>(p[3]),
            core::mem::transmute::<*mut c_void, AllocFn>(p[4]),
            core::mem::transmute::<*mut c_void, FreeFn>(p[5]),
        )
    };
    // SAFETY: no arguments; NULL when the heap has no device behind it.
    let client = unsafe { open() };
    if client.is_null() {
        say(
            "pktaccel-provider: no /dev/pktaccel behind the pktslab heap (is pktaccel.ko loaded?); AES-GCM stays in software\n",
        );
        return State::Unavailable;
    }
    let copy_mode = Some(sym(c"pktslab_client_copy_mode"))
        .filter(|p| !p.is_null())
        // SAFETY: libpktslab's pktslab_client_copy_mode(handle, int).
        .map(|p| unsafe { core::mem::transmute::<*mut c_void, CopyModeFn>(p) });
    let (mut key_slots, max_request) = device_limits(client, limits);
    let (first_slot, last) = slot_range(key_slots);
    key_slots = key_slots.min(last + 1);
    State::Open(Dev {
        client,
        run,
        v2p,
        alloc,
        free,
        copy_mode,
        slots: 0,
        first_slot,
        key_slots,
        max_request,
        forks: DEV.forks(),
    })
}

/// `PKTACCEL_PROVIDER_SLOTS=FIRST-LAST`: the key slots this process may
/// use. Only needed with a driver whose key slots are shared by all open
/// files (before per-file slot namespaces): processes sharing the device
/// must then use disjoint slots. Default: all of them.
fn slot_range(key_slots: u32) -> (u32, u32) {
    let all = (0, key_slots.saturating_sub(1));
    let Ok(v) = std::env::var("PKTACCEL_PROVIDER_SLOTS") else {
        return all;
    };
    match parse_slot_range(&v, key_slots) {
        Some(r) => r,
        None => {
            say(&format!(
                "pktaccel-provider: PKTACCEL_PROVIDER_SLOTS={v:?} is not FIRST-LAST within 0-{}; using all slots\n",
                key_slots.saturating_sub(1)
            ));
            all
        }
    }
}

/// `FIRST-LAST` within `0..key_slots`.
fn parse_slot_range(v: &str, key_slots: u32) -> Option<(u32, u32)> {
    let (a, b) = v.split_once('-')?;
    let (a, b): (u32, u32) = (a.trim().parse().ok()?, b.trim().parse().ok()?);
    (a <= b && b < key_slots).then_some((a, b))
}

/// Runs `f` on the open device; `None` when there is none. Waits while
/// another thread's request is on the device.
fn with_dev<R>(f: impl FnOnce(&mut Dev) -> R) -> Option<R> {
    SETUP.call(setup);
    let mut g = DEV.lock();
    match &mut *g {
        State::Open(d) => {
            let forks = DEV.forks();
            if d.forks != forks {
                // A forked child: its file holds none of these slots, and
                // its heap is a copy in ordinary memory, from which even
                // pktslab_alloc may answer: buffers the device cannot
                // reach by address go through the driver's copy path.
                d.slots = 0;
                d.forks = forks;
                if let Some(f) = d.copy_mode {
                    // SAFETY: the live handle, used under the lock.
                    unsafe { f(d.client, COPY_FALLBACK) };
                }
            }
            Some(f(d))
        }
        _ => None,
    }
}

/// Whether the fork count is still `forks` (checked under the lock, so a
/// stale slot or buffer never reaches the device).
fn same_process(forks: u64) -> Result<(), DevError> {
    if forks == DEV.forks() {
        Ok(())
    } else {
        Err(DevError::Stale)
    }
}

/// Whether the device is there (opens it on first call).
pub fn available() -> bool {
    with_dev(|_| ()).is_some()
}

/// Largest request the device takes, bytes.
pub fn max_request() -> usize {
    with_dev(|d| d.max_request).unwrap_or(0)
}

/// Why a request did not produce a result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DevError {
    /// No device (or no libpktslab).
    Absent,
    /// A buffer is not in this process's pinned slabs (submit said EFAULT).
    NotPinned,
    /// No free key slot (ENOSPC, or all of this file's slots taken).
    NoSlot,
    /// The tag did not verify; the device zeroed the outputs.
    AuthFailed,
    /// A slot or buffer of the parent process, used in a forked child.
    Stale,
    /// Any other failure: errno or device status.
    Failed,
}

impl Dev {
    /// Runs one request: libpktslab submits it and reaps its completion
    /// before it returns, even after an error.
    fn run(&mut self, op: &mut COp) -> Result<IocCompletion, DevError> {
        let mut c = IocCompletion::default();
        // SAFETY: `op` and its iov arrays are valid, the buffers they name
        // stay alive for the call, and `c` has room for one completion.
        let r = unsafe { (self.run)(self.client, op, 1, &mut c) };
        if r != 0 {
            return Err(match -r {
                libc::EFAULT => DevError::NotPinned,
                libc::ENOSPC => DevError::NoSlot,
                _ => {
                    stats::DEVICE_ERRORS.add(1);
                    DevError::Failed
                }
            });
        }
        match c.status {
            STATUS_OK => Ok(c),
            STATUS_AUTH_FAILED => Err(DevError::AuthFailed),
            _ => {
                stats::DEVICE_ERRORS.add(1);
                Err(DevError::Failed)
            }
        }
    }

    /// Installs `key` in `slot` from a pinned buffer wiped afterwards.
    fn set_key(&mut self, slot: u32, key: &[u8; AES256_KEY_LEN]) -> Result<(), DevError> {
        let kbuf = PinnedBuf::new_in(self, AES256_KEY_LEN).ok_or(DevError::Failed)?;
        kbuf.slice_mut().copy_from_slice(key);
        let ins = [Iov {
            base: kbuf.ptr.cast(),
            len: AES256_KEY_LEN,
        }];
        let r = self.run(&mut op(OP_KEY_SET, slot, 0, &[0; 12], &ins, &[]));
        kbuf.wipe();
        kbuf.release(self);
        r?;
        stats::KEY_SETS.add(1);
        Ok(())
    }
}

fn op(code: u16, slot: u32, aux: u32, iv: &[u8; 12], ins: &[Iov], outs: &[Iov]) -> COp {
    let mut params = [0u8; 40];
    params[..12].copy_from_slice(iv);
    COp {
        op: code,
        flags: 0,
        key_slot: slot,
        aux,
        reserved: 0,
        params,
        inputs: ins.as_ptr(),
        n_in: ins.len() as u32,
        n_out: outs.len() as u32,
        outputs: outs.as_ptr(),
        cookie: 0,
    }
}

/// Takes a free slot of this process and installs `key` in it.
pub fn install_key(key: &[u8; AES256_KEY_LEN]) -> Result<Slot, DevError> {
    with_dev(|d| {
        let Some(slot) = (d.first_slot..d.key_slots).find(|i| d.slots & (1 << i) == 0) else {
            return Err(DevError::NoSlot);
        };
        d.set_key(slot, key)?;
        d.slots |= 1 << slot;
        Ok(Slot {
            n: slot,
            forks: d.forks,
        })
    })
    .unwrap_or(Err(DevError::Absent))
}

/// Re-installs `key` in a slot this context already owns (rekey).
pub fn replace_key(slot: Slot, key: &[u8; AES256_KEY_LEN]) -> Result<(), DevError> {
    with_dev(|d| {
        same_process(slot.forks)?;
        d.set_key(slot.n, key)
    })
    .unwrap_or(Err(DevError::Absent))
}

/// Erases `slot` on the device and gives it back to the bitmap; a parent's
/// slot (in a forked child) is not this file's and is left alone.
pub fn free_slot(slot: Slot) {
    with_dev(|d| {
        if same_process(slot.forks).is_err() {
            return;
        }
        // A failed clear still frees the bit: the driver clears the file's
        // slots when it is closed, and a later KEY_SET overwrites.
        let _ = d.run(&mut op(OP_KEY_CLEAR, slot.n, 0, &[0; 12], &[], &[]));
        d.slots &= !(1u64 << slot.n);
    });
}

/// One GCM request: `code` is OP_AES_GCM_SEAL or OPEN.
pub fn gcm(
    code: u16,
    slot: Slot,
    iv: &[u8; 12],
    aad_len: u32,
    ins: &[Iov],
    outs: &[Iov],
) -> Result<u64, DevError> {
    with_dev(|d| {
        same_process(slot.forks)?;
        d.run(&mut op(code, slot.n, aad_len, iv, ins, outs))
            .map(|c| c.result)
    })
    .unwrap_or(Err(DevError::Absent))
}

/// Whether all of `[p, p+len)` is in pinned memory this process can hand
/// to the device (first byte checked by v2p; the submit re-checks all).
pub fn pinned(p: *const u8, len: usize) -> bool {
    if p.is_null() || len == 0 {
        return false;
    }
    with_dev(|d| {
        let mut contig = 0usize;
        // SAFETY: v2p only looks the address up; `contig` is writable.
        let a = unsafe { (d.v2p)(p.cast(), &mut contig) };
        a < V2P_ERROR_MIN
    })
    .unwrap_or(false)
}

/// A buffer from `pktslab_alloc` (pinned), freed with `pktslab_free`.
pub struct PinnedBuf {
    ptr: *mut u8,
    len: usize,
    /// The fork count it was pinned in: a forked child inherits a copy in
    /// ordinary memory, which the device cannot reach.
    forks: u64,
}

// SAFETY: the buffer is owned memory like a Box<[u8]>.
unsafe impl Send for PinnedBuf {}

impl PinnedBuf {
    fn new_in(d: &Dev, len: usize) -> Option<Self> {
        // SAFETY: pktslab_alloc takes any size; NULL on failure.
        let ptr = unsafe { (d.alloc)(len.max(1)) }.cast::<u8>();
        (!ptr.is_null()).then_some(Self {
            ptr,
            len,
            forks: d.forks,
        })
    }

    /// Whether it is pinned for this process (not a parent's, inherited).
    pub fn current(&self) -> bool {
        self.forks == DEV.forks()
    }

    /// A pinned buffer of `len` bytes, or `None` (no device, no memory).
    pub fn new(len: usize) -> Option<Self> {
        with_dev(|d| Self::new_in(d, len)).flatten()
    }

    /// Its bytes.
    #[allow(clippy::mut_from_ref)]
    pub fn slice_mut(&self) -> &mut [u8] {
        // SAFETY: `ptr` owns `len` bytes; the provider never hands out two
        // live slices of one buffer at a time.
        unsafe { core::slice::from_raw_parts_mut(self.ptr, self.len) }
    }

    /// First byte.
    pub fn as_ptr(&self) -> *mut u8 {
        self.ptr
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether it has no bytes.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn wipe(&self) {
        for b in self.slice_mut() {
            // SAFETY: a live byte of the buffer; volatile so the key wipe
            // is not optimised away.
            unsafe { core::ptr::write_volatile(b, 0) };
        }
    }

    fn release(self, d: &Dev) {
        let p = self.ptr;
        core::mem::forget(self);
        // SAFETY: `p` came from pktslab_alloc and is freed once.
        unsafe { (d.free)(p.cast()) };
    }
}

impl Drop for PinnedBuf {
    fn drop(&mut self) {
        self.wipe();
        let p = self.ptr;
        with_dev(|d| {
            // SAFETY: `p` came from pktslab_alloc and is freed once.
            unsafe { (d.free)(p.cast()) }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slot_ranges() {
        assert_eq!(parse_slot_range("0-7", 16), Some((0, 7)));
        assert_eq!(parse_slot_range(" 8 - 15 ", 16), Some((8, 15)));
        assert_eq!(parse_slot_range("8-16", 16), None);
        assert_eq!(parse_slot_range("9-8", 16), None);
        assert_eq!(parse_slot_range("x", 16), None);
        assert_eq!(parse_slot_range("", 16), None);
    }

    #[test]
    fn without_libpktslab_nothing_is_pinned_and_no_slot_is_taken() {
        assert!(!available());
        assert!(!pinned(b"abc".as_ptr(), 3));
        assert_eq!(install_key(&[0; 32]), Err(DevError::Absent));
        assert!(PinnedBuf::new(16).is_none());
    }
}
