// SPDX-License-Identifier: GPL-2.0
//! Batched submit and reap of one open `/dev/pktaccel`: a child module of
//! `file`, so it works on the file state's private fields directly.

use super::*;

/// One request as copied in and checked by `read_request`.
struct Checked {
    req: IocRequest,
    segs: KVec<IocSegment>,
    /// Total bytes of the input and output segments.
    tin: u64,
    tout: u64,
}

impl FileState {
    pub(super) fn submit(me: ArcBorrow<'_, Self>, ptr: UserPtr) -> Result {
        let (mut r, mut w) = UserSlice::new(ptr, size_of::<IocSubmit>()).reader_writer();
        let mut sub: IocSubmit = r.read()?;
        if sub.count == 0
            || sub.count > abi::MAX_BATCH
            || sub.flags & !(abi::SUBMIT_NONBLOCK | abi::SUBMIT_COPY) != 0
            || sub.reserved != 0
        {
            return Err(EINVAL);
        }
        // Nothing may be queued unless `submitted` can be written back:
        // check that now, with nothing queued yet.
        sub.submitted = 0;
        UserSlice::new(ptr, size_of::<IocSubmit>())
            .writer()
            .write(&sub)?;
        if me.shared.is_dead() {
            return Err(ENODEV);
        }
        let nonblock = sub.flags & abi::SUBMIT_NONBLOCK != 0;
        let copy = sub.flags & abi::SUBMIT_COPY != 0;
        let mut touched = 0u64;
        let mut done = 0u32;
        let mut result = Ok(());
        for i in 0..sub.count {
            let addr = u64::from(i)
                .checked_mul(size_of::<IocRequest>() as u64)
                .and_then(|o| sub.reqs.checked_add(o))
                .ok_or(EFAULT);
            let r = addr.and_then(|a| {
                Self::submit_one(
                    me,
                    UserPtr::from_addr(a as usize),
                    nonblock,
                    copy,
                    &mut touched,
                )
            });
            match r {
                Ok(()) => done += 1,
                Err(e) => {
                    result = Err(e);
                    break;
                }
            }
        }
        me.shared.kick_touched(touched);
        sub.submitted = done;
        w.write(&sub)?;
        result
    }

    /// Reads and checks one request (on a private copy), maps its key slot
    /// and queues it.
    pub(super) fn submit_one(
        me: ArcBorrow<'_, Self>,
        uptr: UserPtr,
        nonblock: bool,
        copy: bool,
        touched: &mut u64,
    ) -> Result {
        let shared = &me.shared;
        let mut req = Self::read_request(me, uptr)?;
        let h = &req.req.header;
        let key = if keys::uses_key(h.op) {
            let c = shared
                .keys()
                .lock()
                .claim(me.id, h.op, h.key_slot)
                .map_err(|e| me.reject(e))?;
            // The device sees the device slot, never the file's number.
            req.req.header.key_slot = c.dev;
            Some(c)
        } else {
            None
        };
        let r = Self::queue_one(me, &req, copy, nonblock, touched, key);
        if let (Err(_), Some(c)) = (&r, key) {
            shared.keys().lock().unclaim(c);
        }
        r
    }

    /// Copies one request and its segment list in from the user and checks
    /// them: op, flags, queue, segment count, directions and sizes.
    fn read_request(me: ArcBorrow<'_, Self>, uptr: UserPtr) -> Result<Checked> {
        let shared = &me.shared;
        let req: IocRequest = UserSlice::new(uptr, size_of::<IocRequest>())
            .reader()
            .read()?;
        let h = &req.header;
        if h.op >= 16 || h.flags != 0 || h.reserved != 0 {
            return Err(me.reject(EINVAL));
        }
        if req.queue != u32::MAX && req.queue as usize >= shared.nq() {
            return Err(me.reject(EINVAL));
        }
        let n = req.nsegs as usize;
        if n > usize::from(shared.max_segs()) {
            return Err(me.reject(E2BIG));
        }
        let mut segs = KVec::<IocSegment>::with_capacity(n, GFP_KERNEL)?;
        if n > 0 {
            let mut r = UserSlice::new(
                UserPtr::from_addr(req.segs as usize),
                n * size_of::<IocSegment>(),
            )
            .reader();
            for _ in 0..n {
                segs.push(r.read::<IocSegment>()?, GFP_KERNEL)?;
            }
        }
        let (mut tin, mut tout) = (0u64, 0u64);
        let mut seen_out = false;
        for s in segs.iter() {
            if s.len == 0 || s.addr.checked_add(u64::from(s.len)).is_none() {
                return Err(me.reject(EINVAL));
            }
            match s.dir {
                abi::SEG_IN if !seen_out => tin += u64::from(s.len),
                abi::SEG_OUT => {
                    seen_out = true;
                    tout += u64::from(s.len);
                }
                _ => return Err(me.reject(EINVAL)),
            }
        }
        let max = u64::from(shared.cfg().max_request_bytes);
        if tin > max || tout > max {
            return Err(me.reject(E2BIG));
        }
        Ok(Checked {
            req,
            segs,
            tin,
            tout,
        })
    }

    /// Builds the device segments of a checked request (bounce buffers in
    /// copy mode, slab ranges in zero copy) and queues it.
    fn queue_one(
        me: ArcBorrow<'_, Self>,
        c: &Checked,
        copy: bool,
        nonblock: bool,
        touched: &mut u64,
        key: Option<KeyClaim>,
    ) -> Result {
        let shared = &me.shared;
        let h = &c.req.header;
        let mut dsegs = KVec::<Seg>::with_capacity(c.segs.len(), GFP_KERNEL)?;
        let bounce = if copy {
            Some(Self::bounce_segs(me, c, &mut dsegs)?)
        } else {
            Self::owned_segs(me, c, &mut dsegs)?;
            None
        };
        let file: Arc<FileState> = me.into();
        let inf = InFlight {
            file,
            cookie: h.cookie,
            op: h.op,
            bounce,
            key,
            // Cannot saturate: `read_request` caps it at the device's
            // `max_request_bytes`, a u32.
            out_len: c.tout.min(u64::from(u32::MAX)) as u32,
        };
        match shared.submit(
            c.req.queue,
            &h.to_le_bytes(),
            &dsegs,
            inf,
            nonblock,
            touched,
        ) {
            Ok(()) => {
                if !copy {
                    me.stats.bytes_zero_copy.add(c.tin + c.tout, Relaxed);
                    shared.count_zero_copy(c.tin + c.tout);
                }
                Ok(())
            }
            Err(e) => {
                me.unreserve();
                Err(e)
            }
        }
    }

    /// Copy mode: copies the input into a new bounce buffer, whose pages
    /// become the device segments, and reserves the completion.
    fn bounce_segs(me: ArcBorrow<'_, Self>, c: &Checked, dsegs: &mut KVec<Seg>) -> Result<Bounce> {
        let slab_pinned = me.inner.lock().pinned;
        let b = Bounce::new(
            &c.segs,
            c.tin as usize,
            c.tout as usize,
            usize::from(me.shared.max_segs()),
            &me.bounce,
            slab_pinned,
        )
        .map_err(|e| if e == EFAULT { me.reject(e) } else { e })?;
        b.segs(dsegs)?;
        me.reserve()?;
        me.stats.bytes_copied.add(c.tin, Relaxed);
        me.shared.count_copied(c.tin);
        Ok(b)
    }

    /// Zero copy: the device works on the user's own slab memory, so every
    /// segment must lie inside a slab of this file. Reserves the completion
    /// while the slabs are locked.
    fn owned_segs(me: ArcBorrow<'_, Self>, c: &Checked, dsegs: &mut KVec<Seg>) -> Result {
        for s in c.segs.iter() {
            dsegs.push(
                Seg {
                    addr: s.addr,
                    len: s.len,
                    write: s.dir == abi::SEG_OUT,
                },
                GFP_KERNEL,
            )?;
        }
        let inner = me.inner.lock();
        for s in c.segs.iter() {
            if !inner
                .slabs
                .iter()
                .any(|sl| sl.contains(s.addr, u64::from(s.len)))
            {
                drop(inner);
                if reject_log_allowed() {
                    dev_warn!(
                        me.shared.dev(),
                        "request {:#x} rejected: segment {:#x}+{} is not inside a slab of this file\n",
                        c.req.header.cookie,
                        s.addr,
                        s.len
                    );
                }
                return Err(me.reject(EFAULT));
            }
        }
        // Count the request in flight before `inner` is released: a slab
        // freed from now on waits as a zombie until it completes.
        me.reserve()?;
        drop(inner);
        Ok(())
    }

    /// Takes up to `max` completions off the queue, waiting as `timeout_ms`
    /// says. Stops before a copy-mode completion of another process
    /// (`EPERM` if that is the first).
    pub(super) fn take_completions(
        me: ArcBorrow<'_, Self>,
        max: usize,
        timeout_ms: i32,
    ) -> Result<KVec<CompEntry>> {
        let mut got = KVec::<CompEntry>::with_capacity(max, GFP_KERNEL)?;
        let start = Instant::<Monotonic>::now();
        let mut g = me.comp.lock();
        loop {
            let mut foreign = None;
            while got.len() < max {
                foreign = g.head_foreign_owner();
                if foreign.is_some() {
                    break;
                }
                match g.pop() {
                    Some(e) => {
                        let _ = got.push_within_capacity(e);
                    }
                    None => break,
                }
            }
            if !got.is_empty() {
                return Ok(got);
            }
            if let Some(pid) = foreign {
                drop(g);
                if reject_log_allowed() {
                    dev_info!(
                        me.shared.dev(),
                        "reap refused: the next completion's copy-mode outputs belong to process {}, not {}\n",
                        pid,
                        crate::slab::current_owner().0
                    );
                }
                return Err(EPERM);
            }
            if g.inflight == 0 {
                return Err(ENOENT);
            }
            if timeout_ms == 0 {
                return Err(EAGAIN);
            }
            let elapsed = start.elapsed().as_millis();
            let chunk = if timeout_ms > 0 {
                let left = i64::from(timeout_ms) - elapsed;
                if left <= 0 {
                    return Err(ETIMEDOUT);
                }
                left.min(100)
            } else {
                100
            };
            if let CondVarTimeoutResult::Signal { .. } = me
                .wait
                .wait_interruptible_timeout(&mut g, msecs_to_jiffies(chunk as u32))
            {
                return Err(EINTR);
            }
            // A device that stopped completing is declared dead here, which
            // completes everything outstanding with STATUS_DEVICE_ERROR.
            drop(g);
            me.shared.watchdog();
            g = me.comp.lock();
        }
    }

    pub(super) fn reap(me: ArcBorrow<'_, Self>, ptr: UserPtr) -> Result {
        let (mut r, mut w) = UserSlice::new(ptr, size_of::<IocReap>()).reader_writer();
        let mut req: IocReap = r.read()?;
        if req.max == 0 || req.max > abi::MAX_BATCH || req.reserved != 0 {
            return Err(EINVAL);
        }
        let max = req.max as usize;
        // Completions taken off the queue cannot be put back: check that
        // both the argument struct and the completion array are writable
        // before taking any.
        req.count = 0;
        UserSlice::new(ptr, size_of::<IocReap>())
            .writer()
            .write(&req)?;
        let mut probe = UserSlice::new(
            UserPtr::from_addr(req.comps as usize),
            max * size_of::<IocCompletion>(),
        )
        .writer();
        for _ in 0..max {
            probe.write(&IocCompletion::default())?;
        }
        let mut got = Self::take_completions(me, max, req.timeout_ms)?;

        let mut cw = UserSlice::new(
            UserPtr::from_addr(req.comps as usize),
            max * size_of::<IocCompletion>(),
        )
        .writer();
        let mut count = 0u32;
        let mut result = Ok(());
        for e in got.drain_all() {
            let mut c = e.comp;
            if let Some(b) = e.bounce {
                let (n, copied) = b.copy_out(c.len as usize);
                if copied.is_err() && c.status == abi::STATUS_OK {
                    c.status = abi::STATUS_BAD_ADDRESS;
                    me.stats.errors.add(1, Relaxed);
                }
                me.stats.bytes_copied.add(n, Relaxed);
                me.shared.count_copied(n);
            }
            if result.is_ok() {
                match cw.write(&c) {
                    Ok(()) => count += 1,
                    Err(e) => result = Err(e),
                }
            }
        }
        req.count = count;
        w.write(&req)?;
        result
    }
}
