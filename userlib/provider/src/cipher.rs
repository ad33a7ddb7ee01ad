//! One AES-256-GCM context: the semantics of OpenSSL's own GCM provider
//! (IV states, TLS fixed/explicit IVs, AAD through update, tags), with the
//! record on the device where it can go in one request.
//!
//! Encryption sends the first data update to the device at once (output
//! is due at update); a further update continues in software from the
//! device's tag. Decryption is one OPEN request at final, so a bad tag
//! fails `EVP_DecryptFinal` with no plaintext released: the data update
//! records the caller's buffers, which (as for any one-shot AEAD, and as
//! libssl does) must stay unchanged until final. A second data update
//! turns the message into a software stream.

use crate::device::{self, DevError, Iov, PinnedBuf, Slot};
use crate::soft_gcm::{GcmKey, SoftGcm, tags_equal};
use crate::stats::{self, Counter};
use pktaccel_abi::{OP_AES_GCM_OPEN, OP_AES_GCM_SEAL};

/// Longest IV (OpenSSL's `GCM_IV_MAX_SIZE`).
pub const IV_MAX: usize = 128;
/// `EVP_AEAD_TLS1_AAD_LEN`.
pub const TLS1_AAD_LEN: usize = 13;
const TLS_EXPLICIT_IV: usize = 8;
const TLS_FIXED_IV: usize = 4;
const TAG: usize = 16;

/// Where an IV stands (OpenSSL's IV_STATE_*).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum IvState {
    Uninit,
    Buffered,
    Started,
    Finished,
}

/// Why bytes went to software (which counter they land in).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Reason {
    NoDevice,
    MultiUpdate,
    Unsupported,
    NoSlot,
    DeviceError,
}

impl Reason {
    fn counter(self) -> &'static Counter {
        match self {
            Reason::NoDevice => &stats::SOFT_NO_DEVICE,
            Reason::MultiUpdate => &stats::SOFT_MULTI_UPDATE,
            Reason::Unsupported => &stats::SOFT_UNSUPPORTED,
            Reason::NoSlot => &stats::SOFT_NO_SLOT,
            Reason::DeviceError => &stats::SOFT_DEVICE_ERROR,
        }
    }
    fn from_dev(e: DevError) -> Self {
        match e {
            DevError::Absent => Reason::NoDevice,
            DevError::NoSlot => Reason::NoSlot,
            _ => Reason::DeviceError,
        }
    }
}

/// The key: raw bytes (for the device), the software schedule, the slot.
struct Key {
    raw: [u8; 32],
    soft: GcmKey,
    slot: Option<Slot>,
    /// The slot holds an older key (rekeyed since).
    stale: bool,
    /// Installing failed; stay in software for this key.
    no_slot: Option<Reason>,
}

impl Drop for Key {
    fn drop(&mut self) {
        if let Some(s) = self.slot.take() {
            device::free_slot(s);
        }
        for b in &mut self.raw {
            // SAFETY: a live byte; volatile so the wipe is kept.
            unsafe { core::ptr::write_volatile(b, 0) };
        }
    }
}

/// The message in progress.
#[derive(Clone)]
enum Msg {
    /// Only AAD so far (in `GcmCtx::aad`).
    Fresh,
    /// The device sealed the first `ct_len` bytes; its tag.
    Sealed {
        tag: [u8; 16],
        ct_len: u64,
        aad_len: u64,
    },
    /// Decrypt: one data update recorded for the OPEN at final.
    Deferred {
        inp: *const u8,
        out: *mut u8,
        len: usize,
    },
    /// Software from here on; bytes counted under the reason.
    Soft(Box<SoftGcm>, Reason),
}

/// An AES-256-GCM context.
pub struct GcmCtx {
    pub enc: bool,
    key: Option<Key>,
    pub iv: [u8; IV_MAX],
    pub ivlen: usize,
    pub iv_state: IvState,
    /// The IV of the message in progress (`iv` may count on for TLS).
    msg_iv: [u8; IV_MAX],
    iv_gen: bool,
    pub taglen: Option<usize>,
    pub tag: [u8; 16],
    tls_aad: Option<[u8; TLS1_AAD_LEN]>,
    pub tls_aad_pad: usize,
    tls_enc_records: u64,
    msg: Msg,
    aad: Vec<u8>,
    /// Pinned: tag (16 bytes) then AAD.
    scratch: Option<PinnedBuf>,
    /// Pinned staging for buffers outside the pinned heap.
    stage: Option<PinnedBuf>,
}

fn random(buf: &mut [u8]) -> bool {
    let mut got = 0;
    while got < buf.len() {
        // SAFETY: writes at most the remaining bytes of `buf`.
        let r = unsafe { libc::getrandom(buf[got..].as_mut_ptr().cast(), buf.len() - got, 0) };
        if r <= 0 {
            return false;
        }
        got += r as usize;
    }
    true
}

/// Copies `len` bytes from `inp` to `out` (which may be the same buffer)
/// and returns `out` as a slice.
///
/// # Safety
/// Both point at `len` valid bytes; `out` is writable and not otherwise
/// borrowed.
unsafe fn to_out<'a>(inp: *const u8, out: *mut u8, len: usize) -> &'a mut [u8] {
    if !core::ptr::eq(inp, out) {
        // SAFETY: caller contract; `copy` allows overlap.
        unsafe { core::ptr::copy(inp, out, len) };
    }
    // SAFETY: caller contract.
    unsafe { core::slice::from_raw_parts_mut(out, len) }
}

impl Default for GcmCtx {
    fn default() -> Self {
        Self {
            enc: false,
            key: None,
            iv: [0; IV_MAX],
            ivlen: 12,
            iv_state: IvState::Uninit,
            msg_iv: [0; IV_MAX],
            iv_gen: false,
            taglen: None,
            tag: [0; 16],
            tls_aad: None,
            tls_aad_pad: 0,
            tls_enc_records: 0,
            msg: Msg::Fresh,
            aad: Vec::new(),
            scratch: None,
            stage: None,
        }
    }
}

impl GcmCtx {
    /// A copy for `EVP_CIPHER_CTX_copy`: same key (it takes its own slot
    /// when it first uses the device), IV, and message state.
    pub fn dup(&self) -> Self {
        Self {
            enc: self.enc,
            key: self.key.as_ref().map(|k| Key {
                raw: k.raw,
                soft: k.soft.clone(),
                slot: None,
                stale: false,
                no_slot: k.no_slot,
            }),
            iv: self.iv,
            ivlen: self.ivlen,
            iv_state: self.iv_state,
            msg_iv: self.msg_iv,
            iv_gen: self.iv_gen,
            taglen: self.taglen,
            tag: self.tag,
            tls_aad: self.tls_aad,
            tls_aad_pad: self.tls_aad_pad,
            tls_enc_records: self.tls_enc_records,
            msg: self.msg.clone(),
            aad: self.aad.clone(),
            scratch: None,
            stage: None,
        }
    }

    /// `init_for` (encrypt or decrypt init) without the parameters: key
    /// and IV as OpenSSL's `gcm_init` checks them.
    pub fn init(&mut self, key: Option<&[u8]>, iv: Option<&[u8]>, enc: bool) -> bool {
        self.enc = enc;
        if let Some(iv) = iv {
            if iv.is_empty() || iv.len() > IV_MAX {
                return false;
            }
            self.ivlen = iv.len();
            self.iv[..iv.len()].copy_from_slice(iv);
            self.iv_state = IvState::Buffered;
            self.new_message();
        }
        if let Some(k) = key {
            let Ok(raw) = <[u8; 32]>::try_from(k) else {
                return false;
            };
            match &mut self.key {
                Some(old) if old.raw == raw => {}
                Some(old) => {
                    old.raw = raw;
                    old.soft = GcmKey::new(&raw);
                    old.stale = old.slot.is_some();
                    old.no_slot = None;
                }
                None => {
                    self.key = Some(Key {
                        raw,
                        soft: GcmKey::new(&raw),
                        slot: None,
                        stale: false,
                        no_slot: None,
                    })
                }
            }
            self.tls_enc_records = 0;
            self.new_message();
        }
        true
    }

    fn new_message(&mut self) {
        self.msg = Msg::Fresh;
        self.aad.clear();
    }

    /// The key's slot, installing (or re-installing) it on first use.
    fn slot(&mut self) -> Result<Slot, Reason> {
        let k = self.key.as_mut().ok_or(Reason::DeviceError)?;
        if let Some(r) = k.no_slot {
            return Err(r);
        }
        if k.slot.is_some_and(|s| !s.current()) {
            // A forked child: the slot is on the parent's device file.
            // Install the key on the child's own.
            k.slot = None;
            k.stale = false;
        }
        match k.slot {
            Some(s) if k.stale => match device::replace_key(s, &k.raw) {
                Ok(()) => {
                    k.stale = false;
                    Ok(s)
                }
                Err(e) => {
                    device::free_slot(s);
                    k.slot = None;
                    k.no_slot = Some(Reason::from_dev(e));
                    Err(Reason::from_dev(e))
                }
            },
            Some(s) => Ok(s),
            None => match device::install_key(&k.raw) {
                Ok(s) => {
                    k.slot = Some(s);
                    Ok(s)
                }
                Err(e) => {
                    // Absent stays absent; a full device may free up for
                    // the next key, but not for this one.
                    k.no_slot = Some(Reason::from_dev(e));
                    Err(Reason::from_dev(e))
                }
            },
        }
    }

    /// Starts a message if the IV allows (generating one when encrypting
    /// without an IV, as OpenSSL does). `false`: no key, or IV used up.
    fn begin(&mut self) -> bool {
        if self.key.is_none() {
            return false;
        }
        match self.iv_state {
            IvState::Finished => false,
            IvState::Uninit => {
                if !self.enc || self.ivlen < 12 || !random(&mut self.iv[..self.ivlen]) {
                    return false;
                }
                self.iv_state = IvState::Started;
                self.msg_iv = self.iv;
                self.new_message();
                true
            }
            IvState::Buffered => {
                self.iv_state = IvState::Started;
                self.msg_iv = self.iv;
                self.new_message();
                true
            }
            IvState::Started => true,
        }
    }

    /// The IV when the device can take it (96 bits).
    fn iv12(&self) -> Option<[u8; 12]> {
        (self.ivlen == 12).then(|| self.msg_iv[..12].try_into().unwrap_or([0; 12]))
    }

    fn soft(&self) -> Option<SoftGcm> {
        let k = self.key.as_ref()?;
        Some(SoftGcm::new(&k.soft, &self.msg_iv[..self.ivlen]))
    }

    /// IV generation for `getivgen` (TLS 1.2 encrypt): the last `olen`
    /// bytes of the IV, then the invocation field counts up.
    pub fn iv_gen_next(&mut self, out: &mut [u8]) -> bool {
        if !self.iv_gen || self.key.is_none() {
            return false;
        }
        let n = if out.is_empty() || out.len() > self.ivlen {
            self.ivlen
        } else {
            out.len()
        };
        let Some(dst) = out.get_mut(..n) else {
            return false;
        };
        // The message uses the IV as it is now; the next one counts on.
        self.iv_state = IvState::Buffered;
        if !self.begin() {
            return false;
        }
        dst.copy_from_slice(&self.iv[self.ivlen - n..self.ivlen]);
        let inv = &mut self.iv[self.ivlen - 8..self.ivlen];
        for b in inv.iter_mut().rev() {
            *b = b.wrapping_add(1);
            if *b != 0 {
                break;
            }
        }
        true
    }

    /// `setivinv` (TLS 1.2 decrypt): the explicit part from the record.
    pub fn iv_set_invocation(&mut self, inv: &[u8]) -> bool {
        if !self.iv_gen || self.key.is_none() || self.enc || inv.len() > self.ivlen {
            return false;
        }
        let at = self.ivlen - inv.len();
        self.iv[at..self.ivlen].copy_from_slice(inv);
        self.iv_state = IvState::Buffered;
        true
    }

    /// `tlsivfixed`: the fixed IV part (or the whole IV, length -1 in C,
    /// here `whole`); the rest random when encrypting.
    pub fn iv_set_fixed(&mut self, fixed: &[u8], whole: bool) -> bool {
        if whole {
            if fixed.len() < self.ivlen {
                return false;
            }
            self.iv[..self.ivlen].copy_from_slice(&fixed[..self.ivlen]);
        } else {
            let len = fixed.len();
            if len < TLS_FIXED_IV || len > self.ivlen || self.ivlen - len < TLS_EXPLICIT_IV {
                return false;
            }
            self.iv[..len].copy_from_slice(fixed);
            if self.enc && !random(&mut self.iv[len..self.ivlen]) {
                return false;
            }
        }
        self.iv_gen = true;
        self.iv_state = IvState::Buffered;
        true
    }

    /// `tlsaad`: saves the record header with its length corrected for
    /// the explicit IV (and the tag when decrypting); returns the padding
    /// (tag length) or `None` for a malformed header.
    pub fn set_tls_aad(&mut self, aad: &[u8]) -> Option<usize> {
        let mut a: [u8; TLS1_AAD_LEN] = aad.try_into().ok()?;
        let mut len = usize::from(u16::from_be_bytes([a[11], a[12]]));
        len = len.checked_sub(TLS_EXPLICIT_IV)?;
        if !self.enc {
            len = len.checked_sub(TAG)?;
        }
        a[11..].copy_from_slice(&(len as u16).to_be_bytes());
        self.tls_aad = Some(a);
        self.tls_aad_pad = TAG;
        Some(TAG)
    }

    /// Whether a TLS 1.2 record header is pending (update/cipher then
    /// take a whole record).
    pub fn tls_pending(&self) -> bool {
        self.tls_aad.is_some()
    }

    /// Sets the IV length (`ivlen` parameter).
    pub fn set_ivlen(&mut self, sz: usize) -> bool {
        if sz == 0 || sz > IV_MAX {
            return false;
        }
        if sz != self.ivlen {
            if self.iv_state != IvState::Uninit {
                self.iv_state = IvState::Finished;
            }
            self.ivlen = sz;
        }
        true
    }

    /// Generates an IV for a parameter query before the first update.
    pub fn preupdate_iv(&mut self) -> bool {
        if self.iv_state != IvState::Uninit {
            return true;
        }
        if self.tls_aad.is_some() || !self.enc || self.ivlen < 12 {
            return false;
        }
        if !random(&mut self.iv[..self.ivlen]) {
            return false;
        }
        self.iv_state = IvState::Buffered;
        true
    }

    /// Sets the expected tag (decrypt only).
    pub fn set_tag(&mut self, tag: &[u8]) -> bool {
        if tag.len() > TAG || self.enc || tag.is_empty() {
            return false;
        }
        self.tag[..tag.len()].copy_from_slice(tag);
        self.taglen = Some(tag.len());
        true
    }
}

#[path = "cipher_ops.rs"]
mod ops;
