//! `libpktaccel-provider.so`: an OpenSSL 3 provider whose AES-256-GCM runs
//! on the pktaccel device, zero-copy.
//!
//! Under `LD_PRELOAD=libpktslab.so` an unmodified program's heap — and so
//! libssl's record buffers — lies in pinned slabs. The provider hands such
//! buffers to the device by physical address through libpktslab's own
//! client: one request per TLS record, no copy (Intel's QAT_Engine has to
//! copy into pinned memory here). Buffers outside the pinned heap are
//! staged through a pinned buffer; streams of several updates, IVs other
//! than 96 bits, truncated tags, and a missing device or libpktslab run in
//! software. Every byte is counted; `PKTACCEL_PROVIDER_STATS=1` prints the
//! counters at exit.
//!
//! It registers `AES-256-GCM` with `provider=pktaccel`; a config with
//! `default_properties = ?provider=pktaccel` (see `docs/workloads.md`)
//! makes it the one `openssl` and libssl pick.

use core::ffi::{CStr, c_int, c_void};

pub mod cipher;
pub mod device;
mod dispatch;
pub mod ossl;
pub mod soft_gcm;
pub mod stats;

use ossl::*;

/// Name and version reported to `openssl list -providers`.
const NAME: &CStr = c"pktaccel AES-256-GCM provider";
const VERSION: &CStr = c"0.1.0";

static ALGORITHMS: [OsslAlgorithm; 2] = [
    OsslAlgorithm {
        names: c"AES-256-GCM:id-aes256-GCM:aes-256-gcm:2.16.840.1.101.3.4.1.46".as_ptr(),
        props: c"provider=pktaccel".as_ptr(),
        implementation: dispatch::AES_256_GCM.as_ptr(),
        description: c"AES-256-GCM on the pktaccel device, zero-copy over libpktslab".as_ptr(),
    },
    OsslAlgorithm {
        names: core::ptr::null(),
        props: core::ptr::null(),
        implementation: core::ptr::null(),
        description: core::ptr::null(),
    },
];

unsafe extern "C" fn query_operation(
    _provctx: *mut c_void,
    operation_id: c_int,
    no_cache: *mut c_int,
) -> *const OsslAlgorithm {
    if !no_cache.is_null() {
        // SAFETY: OpenSSL passes a writable int.
        unsafe { *no_cache = 0 };
    }
    if operation_id == OSSL_OP_CIPHER {
        ALGORITHMS.as_ptr()
    } else {
        core::ptr::null()
    }
}

static PROVIDER_PARAMS: ParamTable<5> = ParamTable([
    desc(c"name", OSSL_PARAM_UTF8_PTR),
    desc(c"version", OSSL_PARAM_UTF8_PTR),
    desc(c"buildinfo", OSSL_PARAM_UTF8_PTR),
    desc(c"status", OSSL_PARAM_INTEGER),
    END,
]);

unsafe extern "C" fn gettable_params(_provctx: *mut c_void) -> *const OsslParam {
    PROVIDER_PARAMS.0.as_ptr()
}

unsafe extern "C" fn get_params(_provctx: *mut c_void, params: *mut OsslParam) -> c_int {
    // SAFETY: OpenSSL passes a terminated array or NULL.
    for p in unsafe { iter(params) } {
        let ok = match p.name().to_bytes() {
            b"name" => p.set_utf8_ptr(NAME),
            b"version" | b"buildinfo" => p.set_utf8_ptr(VERSION),
            b"status" => p.set_u64(1),
            _ => true,
        };
        if !ok {
            return 0;
        }
    }
    1
}

unsafe extern "C" fn teardown(_provctx: *mut c_void) {}

type TeardownFn = unsafe extern "C" fn(*mut c_void);
type GettableFn = unsafe extern "C" fn(*mut c_void) -> *const OsslParam;
type GetParamsFn = unsafe extern "C" fn(*mut c_void, *mut OsslParam) -> c_int;
type QueryFn = unsafe extern "C" fn(*mut c_void, c_int, *mut c_int) -> *const OsslAlgorithm;

static PROVIDER: [OsslDispatch; 5] = [
    OsslDispatch {
        function_id: FUNC_PROVIDER_TEARDOWN,
        // SAFETY: OpenSSL calls it as OSSL_FUNC_provider_teardown_fn.
        function: Some(unsafe {
            core::mem::transmute::<TeardownFn, unsafe extern "C" fn()>(teardown)
        }),
    },
    OsslDispatch {
        function_id: FUNC_PROVIDER_GETTABLE_PARAMS,
        // SAFETY: OpenSSL calls it as OSSL_FUNC_provider_gettable_params_fn.
        function: Some(unsafe {
            core::mem::transmute::<GettableFn, unsafe extern "C" fn()>(gettable_params)
        }),
    },
    OsslDispatch {
        function_id: FUNC_PROVIDER_GET_PARAMS,
        // SAFETY: OpenSSL calls it as OSSL_FUNC_provider_get_params_fn.
        function: Some(unsafe {
            core::mem::transmute::<GetParamsFn, unsafe extern "C" fn()>(get_params)
        }),
    },
    OsslDispatch {
        function_id: FUNC_PROVIDER_QUERY_OPERATION,
        // SAFETY: OpenSSL calls it as OSSL_FUNC_provider_query_operation_fn.
        function: Some(unsafe {
            core::mem::transmute::<QueryFn, unsafe extern "C" fn()>(query_operation)
        }),
    },
    OsslDispatch {
        function_id: 0,
        function: None,
    },
];

/// The provider's entry point (`OSSL_provider_init_fn`).
///
/// # Safety
/// Called by OpenSSL with writable `out` and `provctx`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn OSSL_provider_init(
    _handle: *const c_void,
    _in: *const OsslDispatch,
    out: *mut *const OsslDispatch,
    provctx: *mut *mut c_void,
) -> c_int {
    if out.is_null() || provctx.is_null() {
        return 0;
    }
    stats::register_report();
    device::setup_now();
    // SAFETY: OpenSSL passes writable pointers (checked non-NULL).
    unsafe {
        *out = PROVIDER.as_ptr();
        // Not used, but must not be NULL-confused with failure by callers.
        *provctx = PROVIDER.as_ptr().cast_mut().cast();
    }
    1
}
