//! The few libcrypto EVP functions the checks need, bound with `dlopen`
//! at run time (no OpenSSL headers or link-time dependency), and a cipher
//! context wrapper whose calls report OpenSSL's success or failure.

use core::ffi::{CStr, c_char, c_int, c_uchar, c_void};

use anyhow::{Context, Result, bail};

/// `EVP_CTRL_*` numbers (`<openssl/evp.h>`).
pub const CTRL_SET_IVLEN: c_int = 0x9;
pub const CTRL_GET_TAG: c_int = 0x10;
pub const CTRL_SET_TAG: c_int = 0x11;
pub const CTRL_SET_IV_FIXED: c_int = 0x12;
pub const CTRL_TLS1_AAD: c_int = 0x16;

type Ptr = *mut c_void;

/// The bound functions.
pub struct Evp {
    provider_load: unsafe extern "C" fn(Ptr, *const c_char) -> Ptr,
    fetch: unsafe extern "C" fn(Ptr, *const c_char, *const c_char) -> Ptr,
    get0_provider: unsafe extern "C" fn(Ptr) -> Ptr,
    provider_name: unsafe extern "C" fn(Ptr) -> *const c_char,
    ctx_new: unsafe extern "C" fn() -> Ptr,
    ctx_free: unsafe extern "C" fn(Ptr),
    ctx_copy: unsafe extern "C" fn(Ptr, Ptr) -> c_int,
    init: unsafe extern "C" fn(Ptr, Ptr, *const c_uchar, *const c_uchar, c_int, Ptr) -> c_int,
    update: unsafe extern "C" fn(Ptr, *mut c_uchar, *mut c_int, *const c_uchar, c_int) -> c_int,
    final_: unsafe extern "C" fn(Ptr, *mut c_uchar, *mut c_int) -> c_int,
    ctrl: unsafe extern "C" fn(Ptr, c_int, c_int, Ptr) -> c_int,
    set_key_length: unsafe extern "C" fn(Ptr, c_int) -> c_int,
    cipher: unsafe extern "C" fn(Ptr, *mut c_uchar, *const c_uchar, u32) -> c_int,
    err_clear: unsafe extern "C" fn(),
}

fn sym(h: Ptr, name: &CStr) -> Result<*mut c_void> {
    // SAFETY: dlsym on a live handle with a C string.
    let p = unsafe { libc::dlsym(h, name.as_ptr()) };
    if p.is_null() {
        bail!("libcrypto has no {name:?}: is it OpenSSL 3?");
    }
    Ok(p)
}

macro_rules! bind {
    ($h:expr, $name:literal) => {
        // SAFETY: the symbol is libcrypto's, with the C signature of the
        // field it is stored in (OpenSSL 3.0 <openssl/evp.h>).
        unsafe { core::mem::transmute::<*mut c_void, _>(sym($h, $name)?) }
    };
}

impl Evp {
    /// Opens `lib` (e.g. `libcrypto.so.3`). The target type of each
    /// transmute is the field's declared type.
    #[allow(clippy::missing_transmute_annotations)]
    pub fn open(lib: &str) -> Result<Self> {
        let c = std::ffi::CString::new(lib)?;
        // SAFETY: dlopen of a C string path.
        let h = unsafe { libc::dlopen(c.as_ptr(), libc::RTLD_NOW | libc::RTLD_GLOBAL) };
        if h.is_null() {
            bail!("cannot dlopen {lib}: install OpenSSL 3 (libssl3)");
        }
        Ok(Self {
            provider_load: bind!(h, c"OSSL_PROVIDER_load"),
            fetch: bind!(h, c"EVP_CIPHER_fetch"),
            get0_provider: bind!(h, c"EVP_CIPHER_get0_provider"),
            provider_name: bind!(h, c"OSSL_PROVIDER_get0_name"),
            ctx_new: bind!(h, c"EVP_CIPHER_CTX_new"),
            ctx_free: bind!(h, c"EVP_CIPHER_CTX_free"),
            ctx_copy: bind!(h, c"EVP_CIPHER_CTX_copy"),
            init: bind!(h, c"EVP_CipherInit_ex2"),
            update: bind!(h, c"EVP_CipherUpdate"),
            final_: bind!(h, c"EVP_CipherFinal_ex"),
            ctrl: bind!(h, c"EVP_CIPHER_CTX_ctrl"),
            set_key_length: bind!(h, c"EVP_CIPHER_CTX_set_key_length"),
            cipher: bind!(h, c"EVP_Cipher"),
            err_clear: bind!(h, c"ERR_clear_error"),
        })
    }

    /// Loads a provider by name or path into the default library context.
    pub fn load_provider(&self, name: &str) -> Result<()> {
        let c = std::ffi::CString::new(name)?;
        // SAFETY: NULL = default library context; a C string name.
        if unsafe { (self.provider_load)(core::ptr::null_mut(), c.as_ptr()) }.is_null() {
            bail!("OSSL_PROVIDER_load({name}) failed: is the path right?");
        }
        Ok(())
    }

    /// AES-256-GCM from the provider matching `props`; checks its name.
    pub fn fetch(&self, props: &CStr, want: &str) -> Result<Cipher<'_>> {
        // SAFETY: NULL = default library context; C strings.
        let c = unsafe {
            (self.fetch)(
                core::ptr::null_mut(),
                c"AES-256-GCM".as_ptr(),
                props.as_ptr(),
            )
        };
        if c.is_null() {
            bail!("no AES-256-GCM with properties {props:?}");
        }
        // SAFETY: a fetched cipher has a provider with a name.
        let name = unsafe { CStr::from_ptr((self.provider_name)((self.get0_provider)(c))) };
        let name = name.to_string_lossy().into_owned();
        if !name.contains(want) {
            bail!("AES-256-GCM with {props:?} came from provider {name:?}, not {want:?}");
        }
        Ok(Cipher { evp: self, c, name })
    }
}

/// A fetched AES-256-GCM (never freed: the process is short).
pub struct Cipher<'e> {
    evp: &'e Evp,
    c: Ptr,
    /// The provider's name.
    pub name: String,
}

/// One EVP_CIPHER_CTX.
pub struct Ctx<'e> {
    evp: &'e Evp,
    ctx: Ptr,
}

impl Drop for Ctx<'_> {
    fn drop(&mut self) {
        // SAFETY: our own context, freed once.
        unsafe { (self.evp.ctx_free)(self.ctx) };
    }
}

impl Cipher<'_> {
    /// A new context (no key yet).
    pub fn ctx(&self) -> Ctx<'_> {
        // SAFETY: no arguments.
        let ctx = unsafe { (self.evp.ctx_new)() };
        assert!(!ctx.is_null(), "EVP_CIPHER_CTX_new: out of memory");
        let c = Ctx { evp: self.evp, ctx };
        // SAFETY: binds the cipher; key and IV come later.
        let ok = unsafe {
            (self.evp.init)(
                ctx,
                self.c,
                core::ptr::null(),
                core::ptr::null(),
                1,
                core::ptr::null_mut(),
            )
        };
        assert!(ok == 1, "EVP_CipherInit_ex2 without key failed");
        c
    }
}

fn opt(p: Option<&[u8]>) -> *const c_uchar {
    p.map_or(core::ptr::null(), |s| s.as_ptr())
}

impl Ctx<'_> {
    /// `EVP_CipherInit_ex2(ctx, NULL, key, iv, enc, NULL)`.
    pub fn init(&mut self, key: Option<&[u8]>, iv: Option<&[u8]>, enc: bool) -> bool {
        // SAFETY: live context; key/iv NULL or as long as the cipher needs
        // (the callers pass 32-byte keys and IVs of the set IV length).
        unsafe {
            (self.evp.init)(
                self.ctx,
                core::ptr::null_mut(),
                opt(key),
                opt(iv),
                c_int::from(enc),
                core::ptr::null_mut(),
            ) == 1
        }
    }

    /// `EVP_CIPHER_CTX_ctrl` with a buffer.
    pub fn ctrl(&mut self, op: c_int, arg: c_int, buf: Option<&mut [u8]>) -> bool {
        let p = buf.map_or(core::ptr::null_mut(), |b| b.as_mut_ptr().cast());
        // SAFETY: live context; `p` NULL or `arg` bytes (the callers' buffers).
        unsafe { (self.evp.ctrl)(self.ctx, op, arg, p) > 0 }
    }

    /// `EVP_CIPHER_CTX_set_key_length`.
    pub fn set_key_length(&mut self, n: c_int) -> bool {
        // SAFETY: live context.
        unsafe { (self.evp.set_key_length)(self.ctx, n) == 1 }
    }

    /// AAD through update with a NULL output.
    pub fn aad(&mut self, aad: &[u8]) -> bool {
        let mut n = 0;
        // SAFETY: live context; `aad` readable.
        unsafe {
            (self.evp.update)(
                self.ctx,
                core::ptr::null_mut(),
                &mut n,
                aad.as_ptr(),
                aad.len() as c_int,
            ) == 1
        }
    }

    /// Data update from `inp` into `out` (same length); the output length.
    pub fn update(&mut self, out: *mut u8, inp: *const u8, len: usize) -> Option<usize> {
        let mut n = 0;
        // SAFETY: the callers pass buffers of `len` bytes.
        let ok = unsafe { (self.evp.update)(self.ctx, out, &mut n, inp, len as c_int) };
        (ok == 1).then_some(n as usize)
    }

    /// `EVP_CipherFinal_ex`.
    pub fn finish(&mut self) -> bool {
        let mut n = 0;
        let mut scratch = [0u8; 32];
        // SAFETY: live context; 32 bytes of room (GCM writes none).
        unsafe { (self.evp.final_)(self.ctx, scratch.as_mut_ptr(), &mut n) == 1 }
    }

    /// `EVP_Cipher` in place (TLS 1.2 records); its return value.
    pub fn cipher_in_place(&mut self, buf: &mut [u8]) -> c_int {
        let p = buf.as_mut_ptr();
        // SAFETY: live context; `buf` readable and writable.
        unsafe { (self.evp.cipher)(self.ctx, p, p, buf.len() as u32) }
    }

    /// `EVP_CIPHER_CTX_copy` into a new context (the provider's dupctx).
    pub fn try_clone(&self) -> Option<Self> {
        // SAFETY: no arguments.
        let ctx = unsafe { (self.evp.ctx_new)() };
        if ctx.is_null() {
            return None;
        }
        let c = Ctx { evp: self.evp, ctx };
        // SAFETY: both contexts live; `c` is fresh.
        (unsafe { (self.evp.ctx_copy)(c.ctx, self.ctx) } == 1).then_some(c)
    }

    /// Clears libcrypto's error queue (expected failures leave entries).
    pub fn clear_errors(&self) {
        // SAFETY: no arguments.
        unsafe { (self.evp.err_clear)() };
    }

    /// Gets the tag after an encrypt final.
    pub fn tag(&mut self) -> Option<[u8; 16]> {
        let mut t = [0u8; 16];
        self.ctrl(CTRL_GET_TAG, 16, Some(&mut t)).then_some(t)
    }

    /// Sets the expected tag (decrypt).
    pub fn set_tag(&mut self, tag: &[u8]) -> bool {
        let mut t = tag.to_vec();
        self.ctrl(CTRL_SET_TAG, t.len() as c_int, Some(&mut t))
    }

    /// Sets the IV length.
    pub fn set_ivlen(&mut self, n: c_int) -> bool {
        self.ctrl(CTRL_SET_IVLEN, n, None)
    }
}

/// Where the result of a one-shot message lives.
pub struct Sealed {
    /// Ciphertext.
    pub ct: Vec<u8>,
    /// Full tag.
    pub tag: [u8; 16],
}

/// Seals `pt` in `pieces` data updates (1 = one record) with `aad`.
pub fn seal(
    c: &Cipher<'_>,
    key: &[u8],
    iv: &[u8],
    aad: &[u8],
    pt: &[u8],
    pieces: usize,
) -> Result<Sealed> {
    let mut x = c.ctx();
    if iv.len() != 12 {
        x.set_ivlen(iv.len() as c_int)
            .then_some(())
            .context("set IV length")?;
    }
    x.init(Some(key), Some(iv), true)
        .then_some(())
        .context("encrypt init")?;
    if !aad.is_empty() {
        x.aad(aad).then_some(()).context("AAD update")?;
    }
    let mut ct = pt.to_vec();
    let step = pt.len().div_ceil(pieces.max(1)).max(1);
    let mut at = 0;
    while at < ct.len() {
        let n = step.min(ct.len() - at);
        let p = ct[at..].as_mut_ptr();
        let got = x.update(p, p, n).context("encrypt update")?;
        if got != n {
            bail!("encrypt update returned {got} bytes for {n}");
        }
        at += n;
    }
    x.finish().then_some(()).context("encrypt final")?;
    Ok(Sealed {
        ct,
        tag: x.tag().context("get tag")?,
    })
}

/// Opens `ct` (tag set before the data when `tag_first`); `Ok(None)` when
/// final fails, with what the output buffer held then.
pub fn open(
    c: &Cipher<'_>,
    key: &[u8],
    iv: &[u8],
    aad: &[u8],
    ct: &[u8],
    tag: &[u8],
    tag_first: bool,
) -> Result<(Option<Vec<u8>>, Vec<u8>)> {
    let mut x = c.ctx();
    if iv.len() != 12 {
        x.set_ivlen(iv.len() as c_int)
            .then_some(())
            .context("set IV length")?;
    }
    x.init(Some(key), Some(iv), false)
        .then_some(())
        .context("decrypt init")?;
    if tag_first {
        x.set_tag(tag).then_some(()).context("set tag")?;
    }
    if !aad.is_empty() {
        x.aad(aad).then_some(()).context("AAD update")?;
    }
    // Separate output, pre-filled, to see what is released on failure.
    let mut out = vec![0xa5u8; ct.len()];
    if !ct.is_empty() {
        x.update(out.as_mut_ptr(), ct.as_ptr(), ct.len())
            .context("decrypt update")?;
    }
    if !tag_first {
        x.set_tag(tag).then_some(()).context("set tag")?;
    }
    let ok = x.finish();
    x.clear_errors();
    Ok((ok.then(|| out.clone()), out))
}
