//! The explicit C API declared in `include/pktslab.h`: allocation that must
//! come from pinned slabs, v2p, statistics. Always exported (the names are
//! our own, so they cannot interpose anything).

use core::ffi::{c_int, c_void};

use crate::class::SLAB_SIZE;
use crate::global;
use crate::stats::Totals;

/// C view of [`crate::Stats`]; layout pinned by `pktslab.h`.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct CStats {
    /// Allocation counts and byte totals.
    pub totals: Totals,
    /// Internal waste, per mille.
    pub waste_permille: u32,
    /// `PKTSLAB_MODE_*` of the backend.
    pub mode: u32,
    /// Slab size in bytes.
    pub slab_size: u64,
    /// Live bytes of malloc() requests above PKTSLAB_PIN_MAX (ordinary memory).
    pub bytes_ordinary: u64,
    /// malloc() calls served from ordinary memory above PKTSLAB_PIN_MAX.
    pub ordinary_allocs: u64,
}

/// Allocates from pinned slabs (or fallback memory when enabled); NULL +
/// ENOMEM when there is none. Unlike malloc it never uses another allocator.
#[unsafe(no_mangle)]
pub extern "C" fn pktslab_alloc(size: usize) -> *mut c_void {
    global::arena_alloc(size).cast()
}

/// Frees a pktslab pointer; any other pointer aborts.
///
/// # Safety
/// `p` is NULL or from pktslab_alloc/pktslab_realloc (or malloc under preload).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn pktslab_free(p: *mut c_void) {
    // SAFETY: forwarded C contract.
    unsafe { global::arena_free(p.cast(), "pktslab_free") }
}

/// Resizes a pktslab pointer (same pointer while the class is unchanged).
///
/// # Safety
/// As [`pktslab_free`].
#[unsafe(no_mangle)]
pub unsafe extern "C" fn pktslab_realloc(p: *mut c_void, size: usize) -> *mut c_void {
    // SAFETY: forwarded C contract.
    unsafe { global::arena_realloc(p.cast(), size, "pktslab_realloc") }.cast()
}

/// Physical address of `p`, storing the physically contiguous bytes from
/// there in `*contig` (if non-NULL). Errors are `PKTSLAB_V2P_*` values,
/// all above any physical address; `*contig` is then 0.
///
/// # Safety
/// `contig` is NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn pktslab_v2p(p: *const c_void, contig: *mut usize) -> u64 {
    let (addr, len) = match global::v2p(p.cast()) {
        Ok(ph) => (ph.addr, ph.contig),
        Err(e) => (e.c_value(), 0),
    };
    if !contig.is_null() {
        // SAFETY: C contract.
        unsafe { *contig = len };
    }
    addr
}

/// Fills `*out` with statistics; returns 0, or -1 before the first allocation.
///
/// # Safety
/// `out` must be writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn pktslab_stats(out: *mut CStats) -> c_int {
    let Some(s) = global::stats() else { return -1 };
    let c = CStats {
        totals: s.totals,
        waste_permille: (s.waste_percent() * 10.0) as u32,
        mode: s.mode as u32,
        slab_size: SLAB_SIZE as u64,
        bytes_ordinary: s.bytes_ordinary,
        ordinary_allocs: s.ordinary_allocs,
    };
    // SAFETY: C contract.
    unsafe { *out = c };
    0
}

/// Gives entirely free slabs back to the driver; returns bytes released.
#[unsafe(no_mangle)]
pub extern "C" fn pktslab_trim() -> usize {
    global::trim()
}

/// Usable size of a pktslab pointer.
///
/// # Safety
/// As [`pktslab_free`].
#[unsafe(no_mangle)]
pub unsafe extern "C" fn pktslab_usable_size(p: *mut c_void) -> usize {
    // SAFETY: forwarded C contract.
    unsafe { global::usable_size(p.cast()) }
}

/// Initialises the heap if needed and returns its `PKTSLAB_MODE_*`, or -1
/// when the arena could not be set up.
#[unsafe(no_mangle)]
pub extern "C" fn pktslab_mode() -> c_int {
    global::heap().map_or(-1, |h| h.mode() as c_int)
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::mem::{offset_of, size_of};

    /// The same numbers are `_Static_assert`ed against `pktslab.h` by the
    /// C test program.
    #[test]
    fn c_layouts_match_the_header() {
        assert_eq!(size_of::<CStats>(), 216);
        assert_eq!(offset_of!(CStats, mode), 188);
        assert_eq!(offset_of!(CStats, slab_size), 192);
        use crate::client::{CIov, COp};
        assert_eq!(size_of::<COp>(), 88);
        assert_eq!(offset_of!(COp, inputs), 56);
        assert_eq!(offset_of!(COp, outputs), 72);
        assert_eq!(offset_of!(COp, cookie), 80);
        assert_eq!(size_of::<CIov>(), 16);
        assert_eq!(size_of::<pktaccel_abi::IocSegment>(), 16);
        assert_eq!(size_of::<pktaccel_abi::IocCompletion>(), 24);
    }

    /// Every `#define PKTACCEL_OP_*` / `PKTACCEL_STATUS_*` / `PKTACCEL_SEG_*`
    /// in the header equals the ABI crate's constant.
    #[test]
    fn header_codes_match_the_abi() {
        use pktaccel_abi as abi;
        let expect: &[(&str, u64)] = &[
            ("PKTACCEL_OP_NOP", abi::OP_NOP.into()),
            ("PKTACCEL_OP_CSUM", abi::OP_CSUM.into()),
            ("PKTACCEL_OP_CRC32C", abi::OP_CRC32C.into()),
            ("PKTACCEL_OP_CRC32", abi::OP_CRC32.into()),
            ("PKTACCEL_OP_RSS", abi::OP_RSS.into()),
            ("PKTACCEL_OP_AES_GCM_SEAL", abi::OP_AES_GCM_SEAL.into()),
            ("PKTACCEL_OP_AES_GCM_OPEN", abi::OP_AES_GCM_OPEN.into()),
            ("PKTACCEL_OP_COPY", abi::OP_COPY.into()),
            ("PKTACCEL_OP_KEY_SET", abi::OP_KEY_SET.into()),
            ("PKTACCEL_OP_KEY_CLEAR", abi::OP_KEY_CLEAR.into()),
            ("PKTACCEL_STATUS_OK", abi::STATUS_OK.into()),
            (
                "PKTACCEL_STATUS_UNSUPPORTED",
                abi::STATUS_UNSUPPORTED.into(),
            ),
            (
                "PKTACCEL_STATUS_BAD_REQUEST",
                abi::STATUS_BAD_REQUEST.into(),
            ),
            (
                "PKTACCEL_STATUS_BAD_ADDRESS",
                abi::STATUS_BAD_ADDRESS.into(),
            ),
            ("PKTACCEL_STATUS_TOO_BIG", abi::STATUS_TOO_BIG.into()),
            (
                "PKTACCEL_STATUS_AUTH_FAILED",
                abi::STATUS_AUTH_FAILED.into(),
            ),
            ("PKTACCEL_STATUS_NO_KEY", abi::STATUS_NO_KEY.into()),
            (
                "PKTACCEL_STATUS_SHORT_OUTPUT",
                abi::STATUS_SHORT_OUTPUT.into(),
            ),
            (
                "PKTACCEL_STATUS_DEVICE_ERROR",
                abi::STATUS_DEVICE_ERROR.into(),
            ),
            ("PKTACCEL_SEG_IN", abi::SEG_IN.into()),
            ("PKTACCEL_SEG_OUT", abi::SEG_OUT.into()),
        ];
        let header = include_str!("../include/pktslab.h");
        for (name, value) in expect {
            let line = header
                .lines()
                .find(|l| l.split_whitespace().nth(1) == Some(name))
                .unwrap_or_else(|| panic!("{name} missing from pktslab.h"));
            let v = line
                .split_whitespace()
                .nth(2)
                .unwrap()
                .trim_end_matches('u');
            assert_eq!(v.parse::<u64>().unwrap(), *value, "{name}");
        }
        let defined = header
            .lines()
            .filter(|l| l.starts_with("#define PKTACCEL_"))
            .count();
        assert_eq!(defined, expect.len(), "a PKTACCEL_ define is not checked");
    }
}
