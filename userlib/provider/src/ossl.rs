//! The parts of OpenSSL 3's provider ABI this provider uses, declared by
//! hand from `<openssl/core.h>`, `core_dispatch.h` and `core_names.h`
//! (the numbers and names are stable ABI), and `OSSL_PARAM` accessors with
//! the integer-width conversions `OSSL_PARAM_get/set_*` perform.

use core::ffi::{CStr, c_char, c_int, c_uint, c_void};

/// `OSSL_DISPATCH`.
#[repr(C)]
pub struct OsslDispatch {
    /// `OSSL_FUNC_*` number; 0 ends the table.
    pub function_id: c_int,
    /// The function, type-erased.
    pub function: Option<unsafe extern "C" fn()>,
}

// SAFETY: dispatch tables are immutable statics of function pointers.
unsafe impl Sync for OsslDispatch {}

/// `OSSL_ALGORITHM`.
#[repr(C)]
pub struct OsslAlgorithm {
    /// Colon-separated names.
    pub names: *const c_char,
    /// Property definition.
    pub props: *const c_char,
    /// Dispatch table.
    pub implementation: *const OsslDispatch,
    /// Description.
    pub description: *const c_char,
}

// SAFETY: points only at static, immutable data.
unsafe impl Sync for OsslAlgorithm {}

/// `OSSL_PARAM`.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct OsslParam {
    /// Name; NULL ends an array.
    pub key: *const c_char,
    /// `OSSL_PARAM_*` type.
    pub data_type: c_uint,
    /// Value buffer (or, for pointer types, where the pointer goes).
    pub data: *mut c_void,
    /// Size of `data`.
    pub data_size: usize,
    /// Size written (or needed).
    pub return_size: usize,
}

/// A static, immutable `OSSL_PARAM` descriptor array.
#[repr(transparent)]
pub struct ParamTable<const N: usize>(pub [OsslParam; N]);

// SAFETY: descriptor tables are never written; their pointers are to
// static C strings.
unsafe impl<const N: usize> Sync for ParamTable<N> {}

pub const OSSL_PARAM_INTEGER: c_uint = 1;
pub const OSSL_PARAM_UNSIGNED_INTEGER: c_uint = 2;
pub const OSSL_PARAM_UTF8_PTR: c_uint = 6;
pub const OSSL_PARAM_OCTET_STRING: c_uint = 5;
pub const OSSL_PARAM_OCTET_PTR: c_uint = 7;
/// `OSSL_PARAM_UNMODIFIED`.
pub const UNMODIFIED: usize = usize::MAX;

pub const OSSL_OP_CIPHER: c_int = 2;
pub const FUNC_PROVIDER_TEARDOWN: c_int = 1024;
pub const FUNC_PROVIDER_GETTABLE_PARAMS: c_int = 1025;
pub const FUNC_PROVIDER_GET_PARAMS: c_int = 1026;
pub const FUNC_PROVIDER_QUERY_OPERATION: c_int = 1027;
pub const FUNC_CIPHER_NEWCTX: c_int = 1;
pub const FUNC_CIPHER_ENCRYPT_INIT: c_int = 2;
pub const FUNC_CIPHER_DECRYPT_INIT: c_int = 3;
pub const FUNC_CIPHER_UPDATE: c_int = 4;
pub const FUNC_CIPHER_FINAL: c_int = 5;
pub const FUNC_CIPHER_CIPHER: c_int = 6;
pub const FUNC_CIPHER_FREECTX: c_int = 7;
pub const FUNC_CIPHER_DUPCTX: c_int = 8;
pub const FUNC_CIPHER_GET_PARAMS: c_int = 9;
pub const FUNC_CIPHER_GET_CTX_PARAMS: c_int = 10;
pub const FUNC_CIPHER_SET_CTX_PARAMS: c_int = 11;
pub const FUNC_CIPHER_GETTABLE_PARAMS: c_int = 12;
pub const FUNC_CIPHER_GETTABLE_CTX_PARAMS: c_int = 13;
pub const FUNC_CIPHER_SETTABLE_CTX_PARAMS: c_int = 14;

/// `EVP_CIPH_GCM_MODE`.
pub const EVP_CIPH_GCM_MODE: u64 = 0x6;

/// A descriptor entry (no data), for gettable/settable tables.
pub const fn desc(key: &'static CStr, data_type: c_uint) -> OsslParam {
    OsslParam {
        key: key.as_ptr(),
        data_type,
        data: core::ptr::null_mut(),
        data_size: 0,
        return_size: UNMODIFIED,
    }
}

/// The terminating entry.
pub const END: OsslParam = OsslParam {
    key: core::ptr::null(),
    data_type: 0,
    data: core::ptr::null_mut(),
    data_size: 0,
    return_size: 0,
};

/// The entries of a caller's `OSSL_PARAM` array (NULL = none).
///
/// # Safety
/// `p` is NULL or a terminated array that outlives the returned iterator.
pub unsafe fn iter<'a>(p: *mut OsslParam) -> impl Iterator<Item = &'a mut OsslParam> {
    let mut i = 0usize;
    core::iter::from_fn(move || {
        if p.is_null() {
            return None;
        }
        // SAFETY: the array is terminated by a NULL key; we stop there.
        let e = unsafe { &mut *p.add(i) };
        if e.key.is_null() {
            return None;
        }
        i += 1;
        Some(e)
    })
}

impl OsslParam {
    /// The entry's name.
    pub fn name(&self) -> &CStr {
        // SAFETY: a non-NULL key is a C string (OSSL_PARAM contract).
        unsafe { CStr::from_ptr(self.key) }
    }

    /// Reads an integer of any width/signedness as u64 (negative fails).
    pub fn get_u64(&self) -> Option<u64> {
        if self.data.is_null() {
            return None;
        }
        // SAFETY: `data` holds `data_size` bytes of the declared type.
        unsafe {
            match (self.data_type, self.data_size) {
                (OSSL_PARAM_UNSIGNED_INTEGER, 4) => Some(u64::from(*self.data.cast::<u32>())),
                (OSSL_PARAM_UNSIGNED_INTEGER, 8) => Some(*self.data.cast::<u64>()),
                (OSSL_PARAM_INTEGER, 4) => u64::try_from(*self.data.cast::<i32>()).ok(),
                (OSSL_PARAM_INTEGER, 8) => u64::try_from(*self.data.cast::<i64>()).ok(),
                _ => None,
            }
        }
    }

    /// Writes an integer into whatever integer type the caller asked for.
    pub fn set_u64(&mut self, v: u64) -> bool {
        // Sizes are written even without a buffer (size queries).
        let ok = match (self.data_type, self.data_size) {
            (OSSL_PARAM_UNSIGNED_INTEGER | OSSL_PARAM_INTEGER, 4 | 8) if self.data.is_null() => {
                true
            }
            (OSSL_PARAM_UNSIGNED_INTEGER, 4) => u32::try_from(v).is_ok_and(|x| {
                // SAFETY: 4 writable bytes per the descriptor.
                unsafe { self.data.cast::<u32>().write_unaligned(x) };
                true
            }),
            (OSSL_PARAM_UNSIGNED_INTEGER, 8) => {
                // SAFETY: 8 writable bytes per the descriptor.
                unsafe { self.data.cast::<u64>().write_unaligned(v) };
                true
            }
            (OSSL_PARAM_INTEGER, 4) => i32::try_from(v).is_ok_and(|x| {
                // SAFETY: 4 writable bytes per the descriptor.
                unsafe { self.data.cast::<i32>().write_unaligned(x) };
                true
            }),
            (OSSL_PARAM_INTEGER, 8) => i64::try_from(v).is_ok_and(|x| {
                // SAFETY: 8 writable bytes per the descriptor.
                unsafe { self.data.cast::<i64>().write_unaligned(x) };
                true
            }),
            _ => false,
        };
        if ok {
            self.return_size = self.data_size;
        }
        ok
    }

    /// The bytes of an octet string parameter.
    pub fn octets(&self) -> Option<&[u8]> {
        if self.data_type != OSSL_PARAM_OCTET_STRING {
            return None;
        }
        if self.data.is_null() {
            return (self.data_size == 0).then_some(&[]);
        }
        // SAFETY: `data` holds `data_size` readable bytes.
        Some(unsafe { core::slice::from_raw_parts(self.data.cast::<u8>(), self.data_size) })
    }

    /// Writes `v` as an octet string (or, for an octet pointer parameter,
    /// points it at `v`, which must then outlive the caller's use).
    pub fn set_octets(&mut self, v: &[u8]) -> bool {
        self.return_size = v.len();
        match self.data_type {
            OSSL_PARAM_OCTET_STRING => {
                if self.data.is_null() {
                    return true;
                }
                if self.data_size < v.len() {
                    return false;
                }
                // SAFETY: `data` has room for `v.len()` bytes (checked).
                unsafe { core::ptr::copy_nonoverlapping(v.as_ptr(), self.data.cast(), v.len()) };
                true
            }
            OSSL_PARAM_OCTET_PTR => {
                if self.data.is_null() {
                    return true;
                }
                // SAFETY: `data` is where the caller wants the pointer.
                unsafe { *self.data.cast::<*const c_void>() = v.as_ptr().cast() };
                true
            }
            _ => false,
        }
    }

    /// Points a UTF-8 pointer parameter at a static string.
    pub fn set_utf8_ptr(&mut self, s: &'static CStr) -> bool {
        if self.data_type != OSSL_PARAM_UTF8_PTR || self.data.is_null() {
            return false;
        }
        // SAFETY: `data` is where the caller wants the pointer.
        unsafe { *self.data.cast::<*const c_char>() = s.as_ptr() };
        self.return_size = s.to_bytes().len();
        true
    }
}
