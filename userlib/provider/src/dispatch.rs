//! The cipher's `OSSL_DISPATCH` table: C entry points that check their
//! arguments and call [`GcmCtx`], and the parameters OpenSSL's AES-GCM
//! exposes (so libssl, `EVP_CIPHER_CTX_ctrl` and the CLI treat it alike).

use core::ffi::{c_int, c_uchar, c_void};

use crate::cipher::{GcmCtx, IV_MAX};
use crate::ossl::*;

/// Runs `f` unless it panics; a panic (a bug) becomes a failed call, never
/// an unwind into C.
fn guard<R>(fail: R, f: impl FnOnce() -> R) -> R {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).unwrap_or(fail)
}

/// # Safety
/// `vctx` is NULL or a context from [`newctx`] not freed yet.
unsafe fn ctx<'a>(vctx: *mut c_void) -> Option<&'a mut GcmCtx> {
    // SAFETY: caller contract.
    unsafe { vctx.cast::<GcmCtx>().as_mut() }
}

/// # Safety
/// `p` is NULL or has `len` readable bytes.
unsafe fn bytes<'a>(p: *const c_uchar, len: usize) -> Option<&'a [u8]> {
    // SAFETY: caller contract.
    (!p.is_null()).then(|| unsafe { core::slice::from_raw_parts(p, len) })
}

unsafe extern "C" fn newctx(_provctx: *mut c_void) -> *mut c_void {
    guard(core::ptr::null_mut(), || {
        Box::into_raw(Box::<GcmCtx>::default()).cast()
    })
}

unsafe extern "C" fn freectx(vctx: *mut c_void) {
    if !vctx.is_null() {
        // SAFETY: from newctx/dupctx (Box::into_raw), freed once by OpenSSL.
        guard((), || drop(unsafe { Box::from_raw(vctx.cast::<GcmCtx>()) }));
    }
}

unsafe extern "C" fn dupctx(vctx: *mut c_void) -> *mut c_void {
    // SAFETY: OpenSSL passes a live context.
    guard(core::ptr::null_mut(), || match unsafe { ctx(vctx) } {
        Some(c) => Box::into_raw(Box::new(c.dup())).cast(),
        None => core::ptr::null_mut(),
    })
}

/// # Safety
/// OpenSSL's init contract: key/iv NULL or of the given lengths.
unsafe fn init(
    vctx: *mut c_void,
    key: *const c_uchar,
    keylen: usize,
    iv: *const c_uchar,
    ivlen: usize,
    params: *const OsslParam,
    enc: bool,
) -> c_int {
    guard(0, || {
        // SAFETY: caller contract.
        let Some(c) = (unsafe { ctx(vctx) }) else {
            return 0;
        };
        // SAFETY: caller contract.
        let (k, i) = unsafe { (bytes(key, keylen), bytes(iv, ivlen)) };
        if !c.init(k, i, enc) {
            return 0;
        }
        // SAFETY: caller contract.
        unsafe { set_params(c, params.cast_mut()) }
    })
}

/// `OSSL_FUNC_cipher_encrypt_init` (`ENC` true) and `..._decrypt_init`.
unsafe extern "C" fn init_for<const ENC: bool>(
    vctx: *mut c_void,
    key: *const c_uchar,
    keylen: usize,
    iv: *const c_uchar,
    ivlen: usize,
    params: *const OsslParam,
) -> c_int {
    // SAFETY: forwarded contract.
    unsafe { init(vctx, key, keylen, iv, ivlen, params, ENC) }
}

/// # Safety
/// OpenSSL's update contract: `in` has `inl` bytes, `out` NULL (AAD) or
/// `outsize` writable bytes.
unsafe fn run(
    vctx: *mut c_void,
    out: *mut c_uchar,
    outl: *mut usize,
    outsize: usize,
    inp: *const c_uchar,
    inl: usize,
    whole_record: bool,
) -> c_int {
    guard(0, || {
        // SAFETY: caller contract.
        let Some(c) = (unsafe { ctx(vctx) }) else {
            return 0;
        };
        if outl.is_null() {
            return 0;
        }
        let r = if inl == 0 && !c.tls_pending() {
            Some(0)
        } else if inp.is_null() || (!out.is_null() && outsize < inl) {
            None
        } else if c.tls_pending() {
            // SAFETY: caller contract (and in == out is checked inside).
            unsafe { c.tls_record(out, inp, inl) }.map(|n| if whole_record { inl } else { n })
        } else {
            // SAFETY: caller contract.
            unsafe { c.update(out, inp, inl) }
        };
        let (n, ok) = match r {
            Some(n) => (n, 1),
            None => (0, 0),
        };
        // SAFETY: `outl` is writable (checked non-NULL).
        unsafe { *outl = n };
        ok
    })
}

/// `OSSL_FUNC_cipher_update` (`WHOLE_RECORD` false) and
/// `OSSL_FUNC_cipher_cipher` (true): one body, two table entries.
unsafe extern "C" fn update<const WHOLE_RECORD: bool>(
    vctx: *mut c_void,
    out: *mut c_uchar,
    outl: *mut usize,
    outsize: usize,
    inp: *const c_uchar,
    inl: usize,
) -> c_int {
    // SAFETY: forwarded contract.
    unsafe { run(vctx, out, outl, outsize, inp, inl, WHOLE_RECORD) }
}

unsafe extern "C" fn final_(
    vctx: *mut c_void,
    _out: *mut c_uchar,
    outl: *mut usize,
    _outsize: usize,
) -> c_int {
    guard(0, || {
        // SAFETY: OpenSSL passes a live context.
        let Some(c) = (unsafe { ctx(vctx) }) else {
            return 0;
        };
        if outl.is_null() || c.tls_pending() {
            return 0;
        }
        // SAFETY: writable per the contract.
        unsafe { *outl = 0 };
        c_int::from(c.finish())
    })
}

static CIPHER_PARAMS: ParamTable<9> = ParamTable([
    desc(c"mode", OSSL_PARAM_UNSIGNED_INTEGER),
    desc(c"keylen", OSSL_PARAM_UNSIGNED_INTEGER),
    desc(c"ivlen", OSSL_PARAM_UNSIGNED_INTEGER),
    desc(c"blocksize", OSSL_PARAM_UNSIGNED_INTEGER),
    desc(c"aead", OSSL_PARAM_INTEGER),
    desc(c"custom-iv", OSSL_PARAM_INTEGER),
    desc(c"cts", OSSL_PARAM_INTEGER),
    desc(c"tls-multi", OSSL_PARAM_INTEGER),
    END,
]);

unsafe extern "C" fn get_params(params: *mut OsslParam) -> c_int {
    guard(0, || {
        // SAFETY: OpenSSL passes a terminated array or NULL.
        for p in unsafe { iter(params) } {
            let v = match p.name().to_bytes() {
                b"mode" => EVP_CIPH_GCM_MODE,
                b"keylen" => 32,
                b"ivlen" => 12,
                b"blocksize" => 1,
                b"aead" | b"custom-iv" => 1,
                b"cts" | b"tls-multi" | b"has-randkey" => 0,
                _ => continue,
            };
            if !p.set_u64(v) {
                return 0;
            }
        }
        1
    })
}

unsafe extern "C" fn gettable_params(_provctx: *mut c_void) -> *const OsslParam {
    CIPHER_PARAMS.0.as_ptr()
}

static CTX_GETTABLE: ParamTable<10> = ParamTable([
    desc(c"keylen", OSSL_PARAM_UNSIGNED_INTEGER),
    desc(c"ivlen", OSSL_PARAM_UNSIGNED_INTEGER),
    desc(c"taglen", OSSL_PARAM_UNSIGNED_INTEGER),
    desc(c"iv", OSSL_PARAM_OCTET_STRING),
    desc(c"updated-iv", OSSL_PARAM_OCTET_STRING),
    desc(c"tag", OSSL_PARAM_OCTET_STRING),
    desc(c"tlsaadpad", OSSL_PARAM_UNSIGNED_INTEGER),
    desc(c"tlsivgen", OSSL_PARAM_OCTET_STRING),
    desc(c"tls-iv-gen-rand", OSSL_PARAM_UNSIGNED_INTEGER),
    END,
]);

static CTX_SETTABLE: ParamTable<7> = ParamTable([
    desc(c"keylen", OSSL_PARAM_UNSIGNED_INTEGER),
    desc(c"ivlen", OSSL_PARAM_UNSIGNED_INTEGER),
    desc(c"tag", OSSL_PARAM_OCTET_STRING),
    desc(c"tlsaad", OSSL_PARAM_OCTET_STRING),
    desc(c"tlsivfixed", OSSL_PARAM_OCTET_STRING),
    desc(c"tlsivinv", OSSL_PARAM_OCTET_STRING),
    END,
]);

unsafe extern "C" fn gettable_ctx_params(_c: *mut c_void, _p: *mut c_void) -> *const OsslParam {
    CTX_GETTABLE.0.as_ptr()
}

unsafe extern "C" fn settable_ctx_params(_c: *mut c_void, _p: *mut c_void) -> *const OsslParam {
    CTX_SETTABLE.0.as_ptr()
}

fn get_one(c: &mut GcmCtx, p: &mut OsslParam) -> bool {
    match p.name().to_bytes() {
        b"ivlen" => p.set_u64(c.ivlen as u64),
        b"keylen" => p.set_u64(32),
        b"taglen" => p.set_u64(c.taglen.unwrap_or(16) as u64),
        b"tlsaadpad" => p.set_u64(c.tls_aad_pad as u64),
        b"iv" | b"updated-iv" => {
            if !c.preupdate_iv() {
                return false;
            }
            if !p.data.is_null() && p.data_type == OSSL_PARAM_OCTET_STRING && p.data_size < c.ivlen
            {
                return false;
            }
            let iv: &[u8] = &c.iv[..c.ivlen.min(IV_MAX)];
            p.set_octets(iv)
        }
        b"tag" => {
            let Some(tl) = c.taglen.filter(|_| c.enc) else {
                return false;
            };
            let sz = if p.data.is_null() { tl } else { p.data_size };
            if sz == 0 || sz > 16 {
                return false;
            }
            let tag = c.tag;
            p.set_octets(&tag[..sz])
        }
        b"tlsivgen" => {
            if p.data.is_null() || p.data_type != OSSL_PARAM_OCTET_STRING {
                return false;
            }
            // SAFETY: an octet string parameter with `data_size` bytes.
            let buf = unsafe { core::slice::from_raw_parts_mut(p.data.cast::<u8>(), p.data_size) };
            c.iv_gen_next(buf)
        }
        _ => true,
    }
}

unsafe extern "C" fn get_ctx_params(vctx: *mut c_void, params: *mut OsslParam) -> c_int {
    guard(0, || {
        // SAFETY: OpenSSL passes a live context.
        let Some(c) = (unsafe { ctx(vctx) }) else {
            return 0;
        };
        // SAFETY: terminated array or NULL.
        for p in unsafe { iter(params) } {
            if !get_one(c, p) {
                return 0;
            }
        }
        1
    })
}

fn set_one(c: &mut GcmCtx, p: &OsslParam) -> bool {
    match p.name().to_bytes() {
        b"tag" => p.octets().is_some_and(|t| c.set_tag(t)),
        b"ivlen" => p.get_u64().is_some_and(|n| c.set_ivlen(n as usize)),
        b"keylen" => p.get_u64() == Some(32),
        b"tlsaad" => p.octets().and_then(|a| c.set_tls_aad(a)).is_some(),
        b"tlsivfixed" => {
            // A size of (size_t)-1 restores the whole IV (OpenSSL's special
            // case); the data then holds the full IV.
            if p.data_type != OSSL_PARAM_OCTET_STRING || p.data.is_null() {
                return false;
            }
            if p.data_size == usize::MAX {
                // SAFETY: the caller's buffer holds the whole IV.
                let iv = unsafe { core::slice::from_raw_parts(p.data.cast::<u8>(), c.ivlen) };
                return c.iv_set_fixed(iv, true);
            }
            p.octets().is_some_and(|f| c.iv_set_fixed(f, false))
        }
        b"tlsivinv" => p.octets().is_some_and(|i| c.iv_set_invocation(i)),
        _ => true,
    }
}

/// # Safety
/// `params` is NULL or a terminated array.
unsafe fn set_params(c: &mut GcmCtx, params: *mut OsslParam) -> c_int {
    // SAFETY: caller contract.
    for p in unsafe { iter(params) } {
        if !set_one(c, p) {
            return 0;
        }
    }
    1
}

unsafe extern "C" fn set_ctx_params(vctx: *mut c_void, params: *const OsslParam) -> c_int {
    guard(0, || {
        // SAFETY: OpenSSL passes a live context.
        let Some(c) = (unsafe { ctx(vctx) }) else {
            return 0;
        };
        // SAFETY: terminated array or NULL.
        unsafe { set_params(c, params.cast_mut()) }
    })
}

macro_rules! entry {
    ($id:expr, $f:expr, $t:ty) => {
        OsslDispatch {
            function_id: $id,
            // SAFETY: OpenSSL calls the function through the type its id
            // stands for, which is the one it has here.
            function: Some(unsafe { core::mem::transmute::<$t, unsafe extern "C" fn()>($f) }),
        }
    };
}

type InitFn = unsafe extern "C" fn(
    *mut c_void,
    *const c_uchar,
    usize,
    *const c_uchar,
    usize,
    *const OsslParam,
) -> c_int;
type UpdFn = unsafe extern "C" fn(
    *mut c_void,
    *mut c_uchar,
    *mut usize,
    usize,
    *const c_uchar,
    usize,
) -> c_int;
type TableFn = unsafe extern "C" fn(*mut c_void, *mut c_void) -> *const OsslParam;

/// The AES-256-GCM dispatch table.
pub static AES_256_GCM: [OsslDispatch; 15] = [
    entry!(
        FUNC_CIPHER_NEWCTX,
        newctx,
        unsafe extern "C" fn(*mut c_void) -> *mut c_void
    ),
    entry!(FUNC_CIPHER_ENCRYPT_INIT, init_for::<true>, InitFn),
    entry!(FUNC_CIPHER_DECRYPT_INIT, init_for::<false>, InitFn),
    entry!(FUNC_CIPHER_UPDATE, update::<false>, UpdFn),
    entry!(
        FUNC_CIPHER_FINAL,
        final_,
        unsafe extern "C" fn(*mut c_void, *mut c_uchar, *mut usize, usize) -> c_int
    ),
    entry!(FUNC_CIPHER_CIPHER, update::<true>, UpdFn),
    entry!(
        FUNC_CIPHER_FREECTX,
        freectx,
        unsafe extern "C" fn(*mut c_void)
    ),
    entry!(
        FUNC_CIPHER_DUPCTX,
        dupctx,
        unsafe extern "C" fn(*mut c_void) -> *mut c_void
    ),
    entry!(
        FUNC_CIPHER_GET_PARAMS,
        get_params,
        unsafe extern "C" fn(*mut OsslParam) -> c_int
    ),
    entry!(
        FUNC_CIPHER_GET_CTX_PARAMS,
        get_ctx_params,
        unsafe extern "C" fn(*mut c_void, *mut OsslParam) -> c_int
    ),
    entry!(
        FUNC_CIPHER_SET_CTX_PARAMS,
        set_ctx_params,
        unsafe extern "C" fn(*mut c_void, *const OsslParam) -> c_int
    ),
    entry!(
        FUNC_CIPHER_GETTABLE_PARAMS,
        gettable_params,
        unsafe extern "C" fn(*mut c_void) -> *const OsslParam
    ),
    entry!(
        FUNC_CIPHER_GETTABLE_CTX_PARAMS,
        gettable_ctx_params,
        TableFn
    ),
    entry!(
        FUNC_CIPHER_SETTABLE_CTX_PARAMS,
        settable_ctx_params,
        TableFn
    ),
    OsslDispatch {
        function_id: 0,
        function: None,
    },
];
