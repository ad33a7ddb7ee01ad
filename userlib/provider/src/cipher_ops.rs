//! The data path of [`GcmCtx`]: update, final, the TLS 1.2 record, and
//! the device requests behind them (zero-copy, or staged and counted).

use super::*;

/// One side of a device request: the caller's buffer if it is pinned,
/// else a region of the staging buffer.
struct Side {
    ptr: *mut u8,
    staged: bool,
}

impl GcmCtx {
    /// Pinned scratch holding room for the tag and `aad_len` AAD bytes.
    fn scratch(&mut self, aad_len: usize) -> Option<&PinnedBuf> {
        if self
            .scratch
            .as_ref()
            .is_none_or(|s| s.len() < TAG + aad_len || !s.current())
        {
            self.scratch = PinnedBuf::new((TAG + aad_len).max(64));
        }
        self.scratch.as_ref()
    }

    fn stage(&mut self, len: usize) -> Option<*mut u8> {
        if self
            .stage
            .as_ref()
            .is_none_or(|s| s.len() < len || !s.current())
        {
            self.stage = PinnedBuf::new(len.next_power_of_two().max(4096));
        }
        self.stage.as_ref().map(|s| s.as_ptr())
    }

    /// Chooses zero-copy or staging for input `inp` and output `out`
    /// (`in_len`/`out_len` bytes; the staging buffer is shared, which is
    /// fine: the device reads all input before it writes).
    fn sides(
        &mut self,
        inp: *const u8,
        in_len: usize,
        out: *mut u8,
        out_len: usize,
    ) -> Option<(Side, Side)> {
        let in_pinned = device::pinned(inp, in_len);
        let out_pinned = out_len == 0 || device::pinned(out, out_len);
        let st = if in_pinned && out_pinned {
            core::ptr::null_mut()
        } else {
            self.stage(in_len.max(out_len))?
        };
        if !in_pinned {
            // SAFETY: the caller's input has `in_len` bytes; the staging
            // buffer at least as many.
            unsafe { core::ptr::copy_nonoverlapping(inp, st, in_len) };
            stats::STAGED_COPIES.add(in_len as u64);
        }
        Some((
            Side {
                ptr: if in_pinned { inp.cast_mut() } else { st },
                staged: !in_pinned,
            },
            Side {
                ptr: if out_pinned { out } else { st },
                staged: !out_pinned,
            },
        ))
    }

    fn count_device(len: usize, a: &Side, b: &Side) {
        if a.staged || b.staged {
            stats::STAGED_BYTES.add(len as u64);
        } else {
            stats::ZERO_COPY_BYTES.add(len as u64);
        }
    }

    /// The AAD iov (copied into the pinned scratch after the tag area).
    fn aad_iov(&mut self, aad: &[u8]) -> Option<Option<Iov>> {
        if aad.is_empty() {
            return Some(None);
        }
        let s = self.scratch(aad.len())?;
        s.slice_mut()[TAG..TAG + aad.len()].copy_from_slice(aad);
        stats::AAD_COPIED.add(aad.len() as u64);
        Some(Some(Iov {
            base: s.as_ptr().wrapping_add(TAG).cast(),
            len: aad.len(),
        }))
    }

    /// Whether the device can take a request of `len` payload bytes now;
    /// the slot and IV if so.
    fn device_ready(&mut self, len: usize, aad_len: usize) -> Result<(Slot, [u8; 12]), Reason> {
        if !device::available() {
            return Err(Reason::NoDevice);
        }
        let iv = self.iv12().ok_or(Reason::Unsupported)?;
        if len == 0 || len + aad_len + 2 * TAG > device::max_request() {
            return Err(Reason::Unsupported);
        }
        Ok((self.slot()?, iv))
    }

    /// SEAL of `len` bytes `inp` -> `out` with `aad`; the full tag.
    fn device_seal(
        &mut self,
        aad: &[u8],
        inp: *const u8,
        out: *mut u8,
        len: usize,
    ) -> Result<[u8; 16], Reason> {
        let (slot, iv) = self.device_ready(len, aad.len())?;
        let aad_iov = self.aad_iov(aad).ok_or(Reason::DeviceError)?;
        let tag_ptr = self.scratch(aad.len()).ok_or(Reason::DeviceError)?.as_ptr();
        let (i, o) = self.sides(inp, len, out, len).ok_or(Reason::DeviceError)?;
        let mut ins: Vec<Iov> = aad_iov.into_iter().collect();
        ins.push(Iov {
            base: i.ptr.cast(),
            len,
        });
        let outs = [
            Iov {
                base: o.ptr.cast(),
                len,
            },
            Iov {
                base: tag_ptr.cast(),
                len: TAG,
            },
        ];
        device::gcm(OP_AES_GCM_SEAL, slot, &iv, aad.len() as u32, &ins, &outs)
            .map_err(Reason::from_dev)?;
        if o.staged {
            // SAFETY: the staging buffer holds `len` output bytes; `out`
            // has room for them (EVP's contract).
            unsafe { core::ptr::copy_nonoverlapping(o.ptr, out, len) };
            stats::STAGED_COPIES.add(len as u64);
        }
        stats::DEV_SEALS.add(1);
        Self::count_device(len, &i, &o);
        let mut tag = [0u8; 16];
        // SAFETY: the scratch buffer's first 16 bytes are the tag.
        tag.copy_from_slice(unsafe { core::slice::from_raw_parts(tag_ptr, TAG) });
        Ok(tag)
    }

    /// OPEN of `len` bytes `inp` (then `tag`) -> `out` with `aad`.
    /// `Ok(false)`: the tag did not verify and nothing was released.
    fn device_open(
        &mut self,
        aad: &[u8],
        inp: *const u8,
        out: *mut u8,
        len: usize,
        tag: &[u8; 16],
    ) -> Result<bool, Reason> {
        let (slot, iv) = self.device_ready(len, aad.len())?;
        let aad_iov = self.aad_iov(aad).ok_or(Reason::DeviceError)?;
        let s = self.scratch(aad.len()).ok_or(Reason::DeviceError)?;
        s.slice_mut()[..TAG].copy_from_slice(tag);
        let tag_ptr = s.as_ptr();
        let (i, o) = self.sides(inp, len, out, len).ok_or(Reason::DeviceError)?;
        let mut ins: Vec<Iov> = aad_iov.into_iter().collect();
        ins.push(Iov {
            base: i.ptr.cast(),
            len,
        });
        ins.push(Iov {
            base: tag_ptr.cast(),
            len: TAG,
        });
        let outs = [Iov {
            base: o.ptr.cast(),
            len,
        }];
        let r = device::gcm(OP_AES_GCM_OPEN, slot, &iv, aad.len() as u32, &ins, &outs);
        match r {
            Ok(_) => {}
            Err(DevError::AuthFailed) => {
                stats::DEV_OPENS.add(1);
                stats::AUTH_FAILURES.add(1);
                Self::count_device(len, &i, &o);
                return Ok(false);
            }
            Err(e) => return Err(Reason::from_dev(e)),
        }
        if o.staged {
            // SAFETY: staging holds `len` verified plaintext bytes; `out`
            // has room (EVP's contract).
            unsafe { core::ptr::copy_nonoverlapping(o.ptr, out, len) };
            stats::STAGED_COPIES.add(len as u64);
        }
        stats::DEV_OPENS.add(1);
        Self::count_device(len, &i, &o);
        Ok(true)
    }

    /// `update`: AAD when `out` is NULL, else data. Returns the output
    /// length or `None` on failure.
    ///
    /// # Safety
    /// `inp` has `len` readable bytes; `out` is NULL or has `len` writable
    /// bytes, and (decrypting) both stay valid and unchanged until final.
    pub unsafe fn update(&mut self, out: *mut u8, inp: *const u8, len: usize) -> Option<usize> {
        if !self.begin() {
            return None;
        }
        if out.is_null() {
            // SAFETY: caller contract.
            let aad = unsafe { core::slice::from_raw_parts(inp, len) };
            return match &mut self.msg {
                Msg::Fresh => {
                    self.aad.extend_from_slice(aad);
                    Some(0)
                }
                Msg::Soft(g, _) => g.aad(aad).then_some(0),
                _ => None,
            };
        }
        // SAFETY: caller contract.
        unsafe {
            if self.enc {
                self.encrypt_data(inp, out, len)?;
            } else {
                self.decrypt_data(inp, out, len)?;
            }
        }
        Some(len)
    }

    /// # Safety
    /// As [`Self::update`].
    unsafe fn encrypt_data(&mut self, inp: *const u8, out: *mut u8, len: usize) -> Option<()> {
        let msg = core::mem::replace(&mut self.msg, Msg::Fresh);
        let (mut g, why) = match msg {
            Msg::Fresh => {
                let aad = core::mem::take(&mut self.aad);
                let r = self.device_seal(&aad, inp, out, len);
                match r {
                    Ok(tag) => {
                        self.msg = Msg::Sealed {
                            tag,
                            ct_len: len as u64,
                            aad_len: aad.len() as u64,
                        };
                        return Some(());
                    }
                    Err(why) => {
                        let mut g = self.soft()?;
                        g.aad(&aad);
                        (g, why)
                    }
                }
            }
            Msg::Sealed {
                tag,
                ct_len,
                aad_len,
            } => {
                let k = self.key.as_ref()?;
                let iv = self.iv12()?;
                (
                    SoftGcm::resume_after_device(&k.soft, &iv, aad_len, ct_len, &tag),
                    Reason::MultiUpdate,
                )
            }
            Msg::Soft(g, why) => (*g, why),
            Msg::Deferred { .. } => return None,
        };
        // SAFETY: caller contract.
        g.encrypt(unsafe { to_out(inp, out, len) });
        why.counter().add(len as u64);
        self.msg = Msg::Soft(Box::new(g), why);
        Some(())
    }

    /// # Safety
    /// As [`Self::update`].
    unsafe fn decrypt_data(&mut self, inp: *const u8, out: *mut u8, len: usize) -> Option<()> {
        let msg = core::mem::replace(&mut self.msg, Msg::Fresh);
        let mut g = match msg {
            Msg::Fresh => {
                self.msg = Msg::Deferred { inp, out, len };
                return Some(());
            }
            Msg::Deferred {
                inp: i1,
                out: o1,
                len: l1,
            } => {
                // A second piece: one request cannot take the stream any
                // more; software from the start, the recorded piece first.
                let mut g = self.soft()?;
                g.aad(&self.aad);
                // SAFETY: the recorded buffers are still valid (contract).
                g.decrypt(unsafe { to_out(i1, o1, l1) });
                Reason::MultiUpdate.counter().add(l1 as u64);
                Box::new(g)
            }
            Msg::Soft(g, _) => g,
            Msg::Sealed { .. } => return None,
        };
        // SAFETY: caller contract.
        g.decrypt(unsafe { to_out(inp, out, len) });
        Reason::MultiUpdate.counter().add(len as u64);
        self.msg = Msg::Soft(g, Reason::MultiUpdate);
        Some(())
    }

    /// `final`: computes (encrypt) or verifies (decrypt) the tag.
    pub fn finish(&mut self) -> bool {
        if !self.begin() {
            return false;
        }
        if !self.enc && self.taglen.is_none() {
            return false;
        }
        let msg = core::mem::replace(&mut self.msg, Msg::Fresh);
        self.iv_state = IvState::Finished;
        let ok = if self.enc {
            self.finish_encrypt(msg)
        } else {
            self.finish_decrypt(msg)
        };
        self.aad.clear();
        ok
    }

    fn finish_encrypt(&mut self, msg: Msg) -> bool {
        let tag = match msg {
            Msg::Sealed { tag, .. } => tag,
            Msg::Soft(g, _) => g.tag(),
            Msg::Fresh => {
                // No data: GMAC of the AAD alone, in software.
                let Some(mut g) = self.soft() else {
                    return false;
                };
                g.aad(&self.aad);
                Reason::Unsupported.counter().add(0);
                g.tag()
            }
            Msg::Deferred { .. } => return false,
        };
        self.tag = tag;
        self.taglen = Some(TAG);
        true
    }

    fn finish_decrypt(&mut self, msg: Msg) -> bool {
        let tl = self.taglen.unwrap_or(TAG);
        let want = self.tag;
        match msg {
            Msg::Soft(g, _) => tags_equal(&g.tag()[..tl], &want[..tl]),
            Msg::Fresh => {
                let Some(mut g) = self.soft() else {
                    return false;
                };
                g.aad(&self.aad);
                tags_equal(&g.tag()[..tl], &want[..tl])
            }
            Msg::Deferred { inp, out, len } => {
                let aad = core::mem::take(&mut self.aad);
                let why = if tl == TAG {
                    match self.device_open(&aad, inp, out, len, &want) {
                        Ok(ok) => return ok,
                        Err(why) => why,
                    }
                } else {
                    Reason::Unsupported
                };
                // Software into a private buffer; released only if the
                // tag verifies.
                let Some(mut g) = self.soft() else {
                    return false;
                };
                g.aad(&aad);
                // SAFETY: the recorded input is valid (update's contract).
                let mut buf = unsafe { core::slice::from_raw_parts(inp, len) }.to_vec();
                g.decrypt(&mut buf);
                why.counter().add(len as u64);
                if !tags_equal(&g.tag()[..tl], &want[..tl]) {
                    stats::AUTH_FAILURES.add(1);
                    buf.iter_mut().for_each(|b| *b = 0);
                    return false;
                }
                // SAFETY: the recorded output has `len` writable bytes.
                unsafe { core::ptr::copy_nonoverlapping(buf.as_ptr(), out, len) };
                true
            }
            Msg::Sealed { .. } => false,
        }
    }
}

impl GcmCtx {
    /// A whole TLS 1.2 record in place (`out == inp`): explicit IV (8),
    /// payload, tag (16), after `set_tls_aad`. Returns the payload length
    /// (decrypt) or the record length (encrypt), `None` on failure; a
    /// record that fails to verify is zeroed.
    ///
    /// # Safety
    /// `inp`/`out` have `len` bytes, readable and writable.
    pub unsafe fn tls_record(&mut self, out: *mut u8, inp: *const u8, len: usize) -> Option<usize> {
        let aad = self.tls_aad.take()?;
        let r = if self.key.is_none()
            || !core::ptr::eq(out, inp)
            || len < TLS_EXPLICIT_IV + TAG
            || (self.enc && self.tls_enc_records == u64::MAX)
        {
            None
        } else {
            // SAFETY: caller contract.
            let rec = unsafe { core::slice::from_raw_parts_mut(out, len) };
            self.tls_record_inner(&aad, rec)
        };
        self.iv_state = IvState::Finished;
        self.msg = Msg::Fresh;
        r
    }

    fn tls_record_inner(&mut self, aad: &[u8; TLS1_AAD_LEN], rec: &mut [u8]) -> Option<usize> {
        let len = rec.len();
        if self.enc {
            self.tls_enc_records += 1;
            let mut explicit = [0u8; TLS_EXPLICIT_IV];
            if !self.iv_gen_next(&mut explicit) {
                return None;
            }
            rec[..TLS_EXPLICIT_IV].copy_from_slice(&explicit);
        } else if !self.iv_set_invocation(&rec[..TLS_EXPLICIT_IV]) || !self.begin() {
            return None;
        }
        let plen = len - TLS_EXPLICIT_IV - TAG;
        let (payload, tag) = rec[TLS_EXPLICIT_IV..].split_at_mut(plen);
        let p = payload.as_mut_ptr();
        if self.enc {
            let t = match self.device_seal(aad, p, p, plen) {
                Ok(t) => t,
                Err(why) => {
                    let mut g = self.soft()?;
                    g.aad(aad);
                    g.encrypt(payload);
                    why.counter().add(plen as u64);
                    g.tag()
                }
            };
            tag.copy_from_slice(&t);
            return Some(len);
        }
        let want: [u8; 16] = (&*tag).try_into().ok()?;
        let why = match self.device_open(aad, p, p, plen, &want) {
            Ok(true) => return Some(plen),
            Ok(false) => {
                payload.iter_mut().for_each(|b| *b = 0);
                return None;
            }
            Err(why) => why,
        };
        let mut g = self.soft()?;
        g.aad(aad);
        let mut buf = payload.to_vec();
        g.decrypt(&mut buf);
        why.counter().add(plen as u64);
        if !tags_equal(&g.tag(), &want) {
            stats::AUTH_FAILURES.add(1);
            payload.iter_mut().for_each(|b| *b = 0);
            return None;
        }
        payload.copy_from_slice(&buf);
        Some(plen)
    }
}
