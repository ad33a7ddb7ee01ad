//! The driver side of the split rings: descriptors, avail and used
//! indices, kicks, calls, and request submission.

use super::*;

impl Guest {
    /// Writes descriptor `id` of queue `q` verbatim.
    pub fn write_desc(&self, q: usize, id: u16, addr: u64, len: u32, flags: u16, next: u16) {
        let at = self.queues[q].desc + u64::from(id) * 16;
        let mut b = [0u8; 16];
        b[0..8].copy_from_slice(&addr.to_le_bytes());
        b[8..12].copy_from_slice(&len.to_le_bytes());
        b[12..14].copy_from_slice(&flags.to_le_bytes());
        b[14..16].copy_from_slice(&next.to_le_bytes());
        self.write(at, &b);
    }

    /// Takes a free descriptor id out of the allocator (for hand-built chains).
    pub fn take_desc(&mut self, q: usize) -> u16 {
        self.queues[q].free.pop().expect("out of descriptors")
    }

    /// Returns descriptor ids taken with [`take_desc`](Self::take_desc).
    pub fn give_back(&mut self, q: usize, ids: &[u16]) {
        self.queues[q].free.extend_from_slice(ids);
    }

    /// Puts `head` on the available ring (published, not kicked).
    pub fn push_avail(&mut self, q: usize, head: u16) {
        let qu = &mut self.queues[q];
        let slot = qu.avail + 4 + u64::from(qu.avail_idx % qu.size) * 2;
        let (avail, idx) = (qu.avail, qu.avail_idx.wrapping_add(1));
        qu.avail_idx = idx;
        self.mem
            .write_obj(head.to_le(), GuestAddress(slot))
            .unwrap();
        self.mem
            .store(idx.to_le(), GuestAddress(avail + 2), Ordering::Release)
            .unwrap();
    }

    /// Writes `descs` into descriptors `ids` (one each), linked in order.
    fn write_chain(&self, q: usize, ids: &[u16], descs: &[RawDesc]) {
        for (i, d) in descs.iter().enumerate() {
            let last = i + 1 == descs.len();
            let flags = if d.write { VRING_DESC_F_WRITE } else { 0 }
                | if last { 0 } else { VRING_DESC_F_NEXT };
            let next = if last { 0 } else { ids[i + 1] };
            self.write_desc(q, ids[i], d.addr, d.len, flags, next);
        }
    }

    /// Writes a chain of `descs` once into descriptors `first..first+len`
    /// (for drivers that keep pre-built chains and only recycle heads).
    pub fn prebuild(&mut self, q: usize, first: u16, descs: &[RawDesc]) {
        let qu = &mut self.queues[q];
        let ids: Vec<u16> = (0..descs.len() as u16).map(|i| first + i).collect();
        qu.free.retain(|id| !ids.contains(id));
        self.write_chain(q, &ids, descs);
    }

    /// Host address of `len` bytes of ring at `addr` (inside one region),
    /// translated once per call as a driver with its rings mapped would.
    fn ring_ptr(&self, addr: u64, len: usize) -> *mut u8 {
        let s = self.mem.get_slice(GuestAddress(addr), len).unwrap();
        s.ptr_guard_mut().as_ptr()
    }

    /// Makes pre-built chains available with one index update. Writes the
    /// ring through its host address (one translation per batch), as a
    /// real driver does, so that the benchmark's driver costs what a
    /// driver costs and not a vm-memory lookup per entry.
    pub fn push_avail_batch(&mut self, q: usize, heads: &[u16]) {
        let (avail, size) = (self.queues[q].avail, self.queues[q].size);
        let base = self.ring_ptr(avail, 4 + 2 * usize::from(size));
        let qu = &mut self.queues[q];
        for &head in heads {
            let slot = 4 + 2 * usize::from(qu.avail_idx % size);
            qu.avail_idx = qu.avail_idx.wrapping_add(1);
            // SAFETY: `slot + 2 <= 4 + 2 * size`, inside the mapped ring
            // just translated; rings are 2-aligned.
            unsafe { std::ptr::write_volatile(base.add(slot).cast::<u16>(), head.to_le()) };
        }
        // SAFETY: the avail index at offset 2 of the 2-aligned, mapped ring;
        // AtomicU16 has u16's layout.
        let idx = unsafe { &*base.add(2).cast::<std::sync::atomic::AtomicU16>() };
        idx.store(qu.avail_idx.to_le(), Ordering::Release);
    }

    /// Counts completions of pre-built chains (entries not read).
    pub fn reap(&mut self, q: usize) -> usize {
        let base = self.ring_ptr(self.queues[q].used, 4);
        // SAFETY: the used index at offset 2 of the 4-aligned, mapped ring.
        let idx = unsafe { &*base.add(2).cast::<std::sync::atomic::AtomicU16>() };
        let idx = u16::from_le(idx.load(Ordering::Acquire));
        let qu = &mut self.queues[q];
        let n = idx.wrapping_sub(qu.used_seen);
        qu.used_seen = idx;
        usize::from(n)
    }

    /// Builds a chain from `descs` and makes it available; returns the head.
    pub fn submit_raw(&mut self, q: usize, descs: &[RawDesc]) -> u16 {
        let ids: Vec<u16> = (0..descs.len()).map(|_| self.take_desc(q)).collect();
        self.write_chain(q, &ids, descs);
        let head = ids[0];
        self.queues[q].inflight.insert(head, ids);
        self.push_avail(q, head);
        head
    }

    /// Puts `descs` into an indirect table at `table` (guest memory) and
    /// submits one ring descriptor pointing at it; returns the head.
    pub fn submit_indirect(&mut self, q: usize, table: u64, descs: &[RawDesc]) -> u16 {
        for (i, d) in descs.iter().enumerate() {
            let last = i + 1 == descs.len();
            let flags = if d.write { VRING_DESC_F_WRITE } else { 0 }
                | if last { 0 } else { VRING_DESC_F_NEXT };
            let mut b = [0u8; 16];
            b[0..8].copy_from_slice(&d.addr.to_le_bytes());
            b[8..12].copy_from_slice(&d.len.to_le_bytes());
            b[12..14].copy_from_slice(&flags.to_le_bytes());
            b[14..16].copy_from_slice(&(if last { 0 } else { i as u16 + 1 }).to_le_bytes());
            self.write(table + 16 * i as u64, &b);
        }
        let head = self.take_desc(q);
        self.write_desc(
            q,
            head,
            table,
            16 * descs.len() as u32,
            VRING_DESC_F_INDIRECT,
            0,
        );
        self.queues[q].inflight.insert(head, vec![head]);
        self.push_avail(q, head);
        head
    }

    /// Submits a well-formed request: header and status go to the head
    /// descriptor's slots; returns the head.
    pub fn submit(
        &mut self,
        q: usize,
        hdr: &RequestHeader,
        ins: &[(u64, u32)],
        outs: &[(u64, u32)],
    ) -> u16 {
        let head = *self.queues[q].free.last().expect("out of descriptors");
        let (h, s) = (
            self.queues[q].header_slot(head),
            self.queues[q].status_slot(head),
        );
        self.write(h, &hdr.to_le_bytes());
        self.write(s, &[0xee; STATUS_RECORD_SIZE]);
        let mut d = vec![RawDesc::r(h, REQUEST_HEADER_SIZE as u32)];
        d.extend(ins.iter().map(|&(a, l)| RawDesc::r(a, l)));
        d.extend(outs.iter().map(|&(a, l)| RawDesc::w(a, l)));
        d.push(RawDesc::w(s, STATUS_RECORD_SIZE as u32));
        let got = self.submit_raw(q, &d);
        debug_assert_eq!(got, head);
        head
    }

    /// Notifies the device (with EVENT_IDX: only when it asked to be).
    pub fn kick(&mut self, q: usize) {
        let qu = &mut self.queues[q];
        let (new, old) = (qu.avail_idx, qu.kicked_idx);
        qu.kicked_idx = new;
        if qu.event_idx {
            std::sync::atomic::fence(Ordering::SeqCst);
            let ev: u16 = self
                .mem
                .load(
                    GuestAddress(qu.used + 4 + 8 * u64::from(qu.size)),
                    Ordering::Acquire,
                )
                .unwrap();
            // vring_need_event(event, new, old)
            if new.wrapping_sub(ev).wrapping_sub(1) >= new.wrapping_sub(old) {
                return;
            }
        }
        qu.kick.write(1).unwrap();
    }

    /// Publishes `idx` as the avail index verbatim (a hostile driver).
    pub fn set_avail_idx_raw(&mut self, q: usize, idx: u16) {
        let at = self.queues[q].avail + 2;
        self.mem
            .store(idx.to_le(), GuestAddress(at), Ordering::Release)
            .unwrap();
    }

    /// Kicks queue `q` unconditionally (ignoring EVENT_IDX's avail_event).
    pub fn kick_raw(&self, q: usize) {
        self.queues[q].kick.write(1).unwrap();
    }

    /// Stops ring `q` (GET_VRING_BASE, as QEMU does on a device reset)
    /// and starts it again at avail position `base`, with the same rings
    /// and eventfds; returns the position the backend reported.
    pub fn restart_ring(&mut self, q: usize, base: u16) -> u32 {
        let stopped_at = self.front.get_vring_base(q).unwrap();
        self.front.set_vring_base(q, base).unwrap();
        self.front.set_vring_call(q, &self.queues[q].call).unwrap();
        self.front.set_vring_kick(q, &self.queues[q].kick).unwrap();
        stopped_at
    }

    /// Guest address of descriptor `id` of queue `q`.
    pub fn desc_addr(&self, q: usize, id: u16) -> u64 {
        self.queues[q].desc + u64::from(id) * 16
    }

    /// Sets the available ring's flags (1 = VRING_AVAIL_F_NO_INTERRUPT).
    pub fn set_avail_flags(&mut self, q: usize, flags: u16) {
        let at = self.queues[q].avail;
        self.mem
            .store(flags.to_le(), GuestAddress(at), Ordering::Release)
            .unwrap();
    }

    /// Waits (up to 10 s) for the call eventfd to fire and returns its
    /// counter: the number of notifications since the last read.
    pub fn wait_call(&mut self, q: usize) -> u64 {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match self.queues[q].call.read() {
                Ok(n) => return n,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    assert!(Instant::now() < deadline, "no used-buffer notification");
                    std::thread::sleep(Duration::from_millis(1));
                }
                Err(e) => panic!("call eventfd: {e}"),
            }
        }
    }

    /// The call eventfd's counter if it fired since the last read, without
    /// waiting.
    pub fn try_call(&mut self, q: usize) -> Option<u64> {
        self.queues[q].call.read().ok()
    }

    /// Completions available now: (head, used length).
    pub fn poll(&mut self, q: usize) -> Vec<(u16, u32)> {
        let mut out = Vec::new();
        self.poll_into(q, &mut out);
        out
    }

    /// Appends available completions to `out`; returns how many.
    pub fn poll_into(&mut self, q: usize, out: &mut Vec<(u16, u32)>) -> usize {
        let qu = &mut self.queues[q];
        let idx: u16 = self
            .mem
            .load(GuestAddress(qu.used + 2), Ordering::Acquire)
            .unwrap();
        let mut n = 0;
        while qu.used_seen != idx {
            let e = qu.used + 4 + u64::from(qu.used_seen % qu.size) * 8;
            let id: u32 = self.mem.read_obj(GuestAddress(e)).unwrap();
            let len: u32 = self.mem.read_obj(GuestAddress(e + 4)).unwrap();
            qu.used_seen = qu.used_seen.wrapping_add(1);
            if let Some(ids) = qu.inflight.remove(&(id as u16)) {
                qu.free.extend(ids);
            }
            out.push((id as u16, len));
            n += 1;
        }
        if qu.event_idx && qu.interrupts && n > 0 {
            // used_event: interrupt me after the next completion.
            let at = qu.avail + 4 + 2 * u64::from(qu.size);
            self.mem
                .store(qu.used_seen.to_le(), GuestAddress(at), Ordering::Release)
                .unwrap();
        }
        n
    }

    /// Waits (up to 10 s) for at least `n` completions.
    pub fn wait(&mut self, q: usize, n: usize) -> Vec<(u16, u32)> {
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut out = Vec::new();
        while out.len() < n {
            if self.poll_into(q, &mut out) == 0 {
                assert!(
                    Instant::now() < deadline,
                    "timed out waiting for {n} completions"
                );
                std::thread::sleep(Duration::from_micros(200));
            }
        }
        out
    }

    /// The status record of the chain whose head is `head`.
    pub fn status(&self, q: usize, head: u16) -> StatusRecord {
        self.status_at(self.queues[q].status_slot(head))
    }

    /// The status record at guest address `gpa`.
    pub fn status_at(&self, gpa: u64) -> StatusRecord {
        StatusRecord::from_le_bytes(&self.read(gpa, 16)).unwrap()
    }

    /// Submits one request, waits, returns (status record, used length).
    pub fn call(
        &mut self,
        q: usize,
        hdr: &RequestHeader,
        ins: &[(u64, u32)],
        outs: &[(u64, u32)],
    ) -> (StatusRecord, u32) {
        let head = self.submit(q, hdr, ins, outs);
        self.kick(q);
        let done = self.wait(q, 1);
        assert_eq!(done[0].0, head, "completion for an unexpected head");
        (self.status(q, head), done[0].1)
    }

    /// A raw chain, submitted, kicked and waited for: its used length.
    pub fn call_raw(&mut self, q: usize, descs: &[RawDesc]) -> u32 {
        let head = self.submit_raw(q, descs);
        self.kick(q);
        let done = self.wait(q, 1);
        assert_eq!(done[0].0, head);
        done[0].1
    }
}
