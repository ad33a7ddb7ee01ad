//! One function per op. Each runs on a request that passed the common
//! checks (see the order in [`super`]), makes the checks only its op has,
//! and runs its engine on the resolved pieces.

use pktaccel_abi::*;

use super::segments::{Seg, copy_segs, gather, scatter, zero};
use super::{Done, Fail, fail};
use crate::engines::{crc, csum::Csum, gcm, rss};
use crate::keys::KeySlots;

/// A validated request's data pieces and their totals (each at most
/// `max_request_bytes`), plus the worker's scratch buffer.
pub(super) struct Data<'a> {
    pub(super) ins: &'a [Seg],
    pub(super) outs: &'a [Seg],
    pub(super) buf: &'a mut Vec<u8>,
    pub(super) in_total: usize,
    pub(super) out_total: usize,
}

/// CSUM, CRC32C and CRC32: a streaming engine reads every input piece by
/// host address, each byte once (see `crate::engines`); nothing makes a
/// `&[u8]` over guest memory.
pub(super) fn checksum(op: u16, aux: u32, d: Data<'_>) -> Done {
    macro_rules! feed {
        ($engine:expr) => {{
            let mut c = $engine;
            for g in d.ins {
                // SAFETY: every piece was resolved from guest memory that
                // the caller keeps mapped for this request.
                unsafe { c.update_raw(g.ptr, g.len) };
            }
            u64::from(c.finish())
        }};
    }
    let result = match op {
        OP_CSUM => feed!(Csum::new(aux)),
        OP_CRC32C => feed!(crc::Crc32c::new(aux)),
        _ => {
            let mut c = crc::Crc32Stream::new(aux, d.buf);
            // SAFETY: as for `feed`.
            unsafe { c.update_pieces(d.ins.iter().map(|g| (g.ptr.cast_const(), g.len))) };
            u64::from(c.finish())
        }
    };
    Done { len: 0, result }
}

/// RSS: the Toeplitz hash of the gathered input under the key in `params`.
pub(super) fn rss(hdr: &RequestHeader, d: Data<'_>) -> Result<Done, Fail> {
    if d.in_total > rss::RSS_MAX_INPUT {
        return Err(fail(STATUS_BAD_REQUEST));
    }
    gather(d.ins, d.buf);
    let key: &[u8; RSS_KEY_LEN] = &hdr.params;
    let hash = rss::toeplitz(key, [&d.buf[..]]).map_err(|_| fail(STATUS_BAD_REQUEST))?;
    Ok(Done {
        len: 0,
        result: u64::from(hash),
    })
}

/// AES-256-GCM seal or open. Inputs are `[aad][data]` (seal) or
/// `[aad][ciphertext][tag]` (open); a failed open zeroes the outputs.
pub(super) fn gcm(keys: &KeySlots, hdr: &RequestHeader, d: Data<'_>) -> Result<Done, Fail> {
    let key = keys.get(hdr.key_slot).map_err(|_| fail(STATUS_NO_KEY))?;
    let iv: [u8; GCM_IV_LEN] = hdr.params[..GCM_IV_LEN]
        .try_into()
        .map_err(|_| fail(STATUS_BAD_REQUEST))?;
    let aad = hdr.aux as usize;
    let seal = hdr.op == OP_AES_GCM_SEAL;
    let tail = if seal { 0 } else { GCM_TAG_LEN };
    if aad + tail > d.in_total {
        return Err(fail(STATUS_BAD_REQUEST));
    }
    let data_len = d.in_total - aad - tail;
    let need = if seal {
        data_len + GCM_TAG_LEN
    } else {
        data_len
    };
    if d.out_total < need {
        return Err(fail(STATUS_SHORT_OUTPUT));
    }
    gather(d.ins, d.buf);
    let (a, rest) = d.buf.split_at_mut(aad);
    let (data, tag) = rest.split_at_mut(data_len);
    if seal {
        let t = gcm::seal(&key, &iv, a, data);
        scatter(d.outs, &[data, &t]);
    } else {
        let t: &[u8; GCM_TAG_LEN] = (&*tag).try_into().map_err(|_| fail(STATUS_BAD_REQUEST))?;
        if gcm::open(&key, &iv, a, data, t).is_err() {
            zero(d.outs);
            return Err(Fail {
                status: STATUS_AUTH_FAILED,
                written: d.out_total as u32,
            });
        }
        scatter(d.outs, &[data]);
    }
    Ok(Done {
        len: need as u32,
        result: 0,
    })
}

/// COPY: the inputs, in order, to the outputs.
pub(super) fn copy(d: Data<'_>) -> Result<Done, Fail> {
    if d.out_total < d.in_total {
        return Err(fail(STATUS_SHORT_OUTPUT));
    }
    copy_segs(d.ins, d.outs);
    Ok(Done {
        len: d.in_total as u32,
        result: 0,
    })
}

/// KEY_SET: loads the 32-byte input into a key slot; the scratch copy of
/// the key is wiped afterwards.
pub(super) fn key_set(keys: &KeySlots, hdr: &RequestHeader, d: Data<'_>) -> Result<Done, Fail> {
    if hdr.key_slot >= keys.len() {
        return Err(fail(STATUS_NO_KEY));
    }
    if d.in_total != AES256_KEY_LEN {
        return Err(fail(STATUS_BAD_REQUEST));
    }
    gather(d.ins, d.buf);
    let key: &[u8; AES256_KEY_LEN] = d.buf[..].try_into().map_err(|_| fail(STATUS_BAD_REQUEST))?;
    keys.set(hdr.key_slot, key)
        .map_err(|_| fail(STATUS_NO_KEY))?;
    d.buf.fill(0);
    Ok(Done { len: 0, result: 0 })
}
