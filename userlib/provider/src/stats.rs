//! Process-wide counters of where the provider's bytes went, printed at
//! exit with `PKTACCEL_PROVIDER_STATS=1`, so a run shows how much really
//! ran on the device, zero-copy, and how much was staged or fell back.

use std::sync::Once;
use std::sync::atomic::{AtomicU64, Ordering};

/// One counter.
pub struct Counter(AtomicU64);

impl Counter {
    const fn new() -> Self {
        Self(AtomicU64::new(0))
    }
    /// Adds `n`.
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }
    /// The value now.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Seal requests the device completed.
pub static DEV_SEALS: Counter = Counter::new();
/// Open requests the device completed (verified or not).
pub static DEV_OPENS: Counter = Counter::new();
/// Payload bytes the device read and wrote in the caller's own buffers.
pub static ZERO_COPY_BYTES: Counter = Counter::new();
/// Payload bytes the device processed through a staging buffer.
pub static STAGED_BYTES: Counter = Counter::new();
/// Bytes copied to and from staging buffers (in + out).
pub static STAGED_COPIES: Counter = Counter::new();
/// AAD bytes copied into the context's pinned AAD buffer.
pub static AAD_COPIED: Counter = Counter::new();
/// Tags that did not verify.
pub static AUTH_FAILURES: Counter = Counter::new();
/// Key installs into a device slot.
pub static KEY_SETS: Counter = Counter::new();
/// Payload bytes in software: no libpktslab or no device.
pub static SOFT_NO_DEVICE: Counter = Counter::new();
/// Payload bytes in software: streams of several updates.
pub static SOFT_MULTI_UPDATE: Counter = Counter::new();
/// Payload bytes in software: IV not 96 bits, tag shorter than 16 bytes,
/// empty message, or too big for one request.
pub static SOFT_UNSUPPORTED: Counter = Counter::new();
/// Payload bytes in software: no free key slot.
pub static SOFT_NO_SLOT: Counter = Counter::new();
/// Payload bytes in software after a device error.
pub static SOFT_DEVICE_ERROR: Counter = Counter::new();
/// Device errors (submit, reap or a status other than OK/AUTH_FAILED).
pub static DEVICE_ERRORS: Counter = Counter::new();

/// Every counter, for [`reset`].
static ALL: [&Counter; 14] = [
    &DEV_SEALS,
    &DEV_OPENS,
    &ZERO_COPY_BYTES,
    &STAGED_BYTES,
    &STAGED_COPIES,
    &AAD_COPIED,
    &AUTH_FAILURES,
    &KEY_SETS,
    &SOFT_NO_DEVICE,
    &SOFT_MULTI_UPDATE,
    &SOFT_UNSUPPORTED,
    &SOFT_NO_SLOT,
    &SOFT_DEVICE_ERROR,
    &DEVICE_ERRORS,
];

/// Zeroes every counter: a forked child reports only its own work (the
/// parent reports what it did before the fork).
pub fn reset() {
    for c in ALL {
        c.0.store(0, Ordering::Relaxed);
    }
}

/// The report line(s).
pub fn report() -> String {
    format!(
        "pktaccel-provider: device {} seal + {} open requests, {} bytes zero-copy, {} bytes staged ({} bytes copied), {} AAD bytes copied, {} key sets, {} auth failures\n\
         pktaccel-provider: software {} bytes no device, {} bytes multi-update, {} bytes unsupported, {} bytes no key slot, {} bytes after {} device errors\n",
        DEV_SEALS.get(),
        DEV_OPENS.get(),
        ZERO_COPY_BYTES.get(),
        STAGED_BYTES.get(),
        STAGED_COPIES.get(),
        AAD_COPIED.get(),
        KEY_SETS.get(),
        AUTH_FAILURES.get(),
        SOFT_NO_DEVICE.get(),
        SOFT_MULTI_UPDATE.get(),
        SOFT_UNSUPPORTED.get(),
        SOFT_NO_SLOT.get(),
        SOFT_DEVICE_ERROR.get(),
        DEVICE_ERRORS.get(),
    )
}

/// The numbers of [`report`]'s two lines found in `text` (other lines
/// ignored), in order: 8 device counters, then 6 software ones. For the
/// tests and the KAT binary, which read the report a provider printed.
pub fn report_numbers(text: &str) -> Vec<u64> {
    text.lines()
        .filter(|l| {
            l.starts_with("pktaccel-provider: device")
                || l.starts_with("pktaccel-provider: software")
        })
        .flat_map(|l| {
            l.split(|ch: char| !ch.is_ascii_digit())
                .filter_map(|w| w.parse::<u64>().ok())
                .collect::<Vec<_>>()
        })
        .collect()
}

extern "C" fn report_at_exit() {
    let s = report();
    // SAFETY: writes a live buffer to stderr; a failed write is ignored.
    unsafe { libc::write(2, s.as_ptr().cast(), s.len()) };
}

/// Registers the exit report once if `PKTACCEL_PROVIDER_STATS=1`. The
/// handler belongs to this library (glibc runs it at exit or at dlclose,
/// whichever is first), so an unloaded provider never leaves a dangling
/// handler.
pub fn register_report() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        if std::env::var_os("PKTACCEL_PROVIDER_STATS").is_some_and(|v| v == "1") {
            // SAFETY: registering a plain extern "C" fn of this library.
            unsafe { libc::atexit(report_at_exit) };
        }
    });
}
