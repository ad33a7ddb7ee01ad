// SPDX-License-Identifier: GPL-2.0
//! `/dev/pktaccel`: per-open-file state, slabs, mmap, batched submit and
//! reap, poll, statistics. See docs/kmod.md for the user-visible contract.
//!
//! Locking: `inner` (a mutex: slabs) is never held across a user copy,
//! because `mmap` takes it under the mmap lock and a faulting user copy
//! takes the mmap lock. `comp` (a spinlock) and the device's `hw` lock are
//! never nested in each other.

use core::mem::size_of;
use kernel::{
    fs::File,
    miscdevice::{MiscDevice, MiscDeviceRegistration},
    mm::virt::VmaNew,
    new_mutex, new_poll_condvar, new_spinlock,
    page::PAGE_SIZE,
    prelude::*,
    sync::{
        atomic::{Atomic, Relaxed},
        poll::{PollCondVar, PollTable},
        Arc, ArcBorrow, CondVarTimeoutResult, Mutex, SpinLock,
    },
    time::{delay::fsleep, msecs_to_jiffies, Delta, Instant, Monotonic},
    uaccess::{UserPtr, UserSlice},
};

use crate::{
    abi::{self, IocCompletion, IocReap, IocRequest, IocSegment, IocSlabAlloc, IocSubmit},
    dev::{InFlight, Shared, PINNED_TOTAL, SLABS_TOTAL},
    misc::{MiscPoll, PollMiscRegistration},
    ring::Seg,
    slab::{kmalloc_phys, Slab},
};

// The ioctl structs cross the user boundary as plain bytes.
macro_rules! plain_old_data {
    ($($t:ty),*) => {$(
        // SAFETY: `repr(C)`, integer (and integer-array) fields only, laid
        // out without padding (sizes pinned by the ABI crate's tests), so
        // every bit pattern is valid and no byte is uninitialised.
        unsafe impl kernel::transmute::FromBytes for $t {}
        // SAFETY: as above.
        unsafe impl kernel::transmute::AsBytes for $t {}
    )*};
}
plain_old_data!(
    abi::IocInfo,
    abi::IocSlabAlloc,
    abi::IocSlabFree,
    abi::IocSegment,
    abi::IocRequest,
    abi::IocSubmit,
    abi::IocCompletion,
    abi::IocReap,
    abi::IocStats
);

const EPOLLIN: u32 = 0x1;
const EPOLLOUT: u32 = 0x4;
const EPOLLERR: u32 = 0x8;
const EPOLLHUP: u32 = 0x10;
const EPOLLRDNORM: u32 = 0x40;
const EPOLLWRNORM: u32 = 0x100;

/// Copy-mode bounce buffer of one request: inputs then outputs, in one
/// physically contiguous kmalloc() allocation.
pub(crate) struct Bounce {
    buf: KVec<u8>,
    /// Outputs: (user address, length, offset in `buf`).
    outs: KVec<(u64, u32, usize)>,
}

struct CompEntry {
    comp: IocCompletion,
    bounce: Option<Bounce>,
}

/// Completions waiting for reap, in a ring preallocated at open so the
/// interrupt thread never allocates, plus the count of requests in flight.
struct CompQueue {
    ring: KVec<Option<CompEntry>>,
    head: usize,
    len: usize,
    inflight: usize,
}

impl CompQueue {
    fn push(&mut self, e: CompEntry) -> core::result::Result<(), CompEntry> {
        let cap = self.ring.len();
        if self.len == cap {
            return Err(e);
        }
        let i = (self.head + self.len).checked_rem(cap).unwrap_or(0);
        self.ring[i] = Some(e);
        self.len += 1;
        Ok(())
    }

    fn pop(&mut self) -> Option<CompEntry> {
        if self.len == 0 {
            return None;
        }
        let e = self.ring[self.head].take();
        self.head = (self.head + 1).checked_rem(self.ring.len()).unwrap_or(0);
        self.len -= 1;
        e
    }
}

#[derive(Default)]
struct FileInner {
    slabs: KVec<Slab>,
    /// Freed by the user but still mapped or possibly under DMA: released
    /// once nothing references them.
    zombies: KVec<Slab>,
    next_id: u32,
    pinned: u64,
}

/// Per-file counters.
pub(crate) struct FileStats {
    requests: [Atomic<u64>; 16],
    errors: Atomic<u64>,
    rejected: Atomic<u64>,
    bytes_copied: Atomic<u64>,
    bytes_zero_copy: Atomic<u64>,
    pub(crate) ring_full: Atomic<u64>,
}

/// The state of one open `/dev/pktaccel`.
#[pin_data(PinnedDrop)]
pub(crate) struct FileState {
    shared: Arc<Shared>,
    #[pin]
    inner: Mutex<FileInner>,
    #[pin]
    comp: SpinLock<CompQueue>,
    /// Woken on every completion: reapers and poll().
    #[pin]
    wait: PollCondVar,
    pub(crate) stats: FileStats,
}

fn free_slab(pinned: &mut u64, s: Slab) {
    *pinned -= s.size;
    PINNED_TOTAL.fetch_sub(s.size, Relaxed);
    SLABS_TOTAL.fetch_sub(1, Relaxed);
    drop(s);
}

impl FileState {
    /// Called by the device for each finished request of this file.
    pub(crate) fn complete(
        &self,
        cookie: u64,
        op: u16,
        st: abi::StatusRecord,
        bounce: Option<Bounce>,
    ) {
        self.stats.requests[usize::from(op) & 15].add(1, Relaxed);
        if st.status != abi::STATUS_OK {
            self.stats.errors.add(1, Relaxed);
        }
        let e = CompEntry {
            comp: IocCompletion {
                cookie,
                status: st.status,
                len: st.len,
                result: st.result,
            },
            bounce,
        };
        let lost = {
            let mut g = self.comp.lock();
            g.inflight = g.inflight.saturating_sub(1);
            g.push(e).err()
        };
        if lost.is_some() {
            // Unreachable: submit reserves room for every completion.
            pr_err!("completion queue overflow, completion {:#x} lost\n", cookie);
        }
        self.wait.notify_all();
    }

    /// Reserves room for one more completion.
    fn reserve(&self) -> Result {
        let mut g = self.comp.lock();
        if g.inflight + g.len >= g.ring.len() {
            return Err(EBUSY);
        }
        g.inflight += 1;
        Ok(())
    }

    fn unreserve(&self) {
        let mut g = self.comp.lock();
        g.inflight = g.inflight.saturating_sub(1);
    }

    fn inflight(&self) -> usize {
        self.comp.lock().inflight
    }

    /// Frees freed-but-busy slabs that nothing references any more.
    fn reap_zombies(&self, inner: &mut FileInner) {
        if inner.zombies.is_empty() || self.inflight() != 0 {
            return;
        }
        let mut i = 0;
        while i < inner.zombies.len() {
            if inner.zombies[i].busy() {
                i += 1;
            } else if let Ok(s) = inner.zombies.remove(i) {
                free_slab(&mut inner.pinned, s);
            }
        }
    }

    fn info(&self, ptr: UserPtr) -> Result {
        let pinned = self.inner.lock().pinned;
        let info = abi::IocInfo {
            config: self.shared.cfg,
            queue_size: u32::from(self.shared.queue_size),
            reserved: 0,
            max_pinned_per_file: crate::max_pinned_per_file(),
            max_pinned_total: crate::max_pinned_total(),
            pinned_by_file: pinned,
            pinned_total: PINNED_TOTAL.load(Relaxed),
        };
        UserSlice::new(ptr, size_of::<abi::IocInfo>())
            .writer()
            .write(&info)
    }

    fn slab_alloc(&self, ptr: UserPtr) -> Result {
        let (mut r, mut w) = UserSlice::new(ptr, size_of::<IocSlabAlloc>()).reader_writer();
        let req: IocSlabAlloc = r.read()?;
        let size = if req.size == 0 {
            abi::SLAB_DEFAULT_SIZE
        } else {
            req.size
        };
        if !size.is_power_of_two() || !(abi::SLAB_MIN_SIZE..=abi::SLAB_MAX_SIZE).contains(&size) {
            return Err(EINVAL);
        }
        if req.caching > abi::CACHE_WRITE_BACK {
            return Err(EINVAL);
        }
        let out = {
            let mut inner = self.inner.lock();
            self.reap_zombies(&mut inner);
            if inner.pinned + size > crate::max_pinned_per_file() {
                pr_info!(
                    "slab of {} bytes refused: file would pin {} of max_pinned_per_file={}\n",
                    size,
                    inner.pinned + size,
                    crate::max_pinned_per_file()
                );
                return Err(ENOMEM);
            }
            let before = PINNED_TOTAL.fetch_add(size, Relaxed);
            if before + size > crate::max_pinned_total() {
                PINNED_TOTAL.fetch_sub(size, Relaxed);
                pr_info!(
                    "slab of {} bytes refused: {} bytes pinned of max_pinned_total={}\n",
                    size,
                    before,
                    crate::max_pinned_total()
                );
                return Err(ENOMEM);
            }
            let id = inner.next_id.checked_add(1).ok_or(ENOSPC);
            let slab = id.and_then(|id| Slab::new(id, size, req.caching));
            let slab = match slab {
                Ok(s) => s,
                Err(e) => {
                    PINNED_TOTAL.fetch_sub(size, Relaxed);
                    return Err(e);
                }
            };
            inner.next_id = slab.id;
            let out = IocSlabAlloc {
                size,
                caching: req.caching,
                id: slab.id,
                phys: slab.phys,
                mmap_offset: slab.mmap_offset,
            };
            inner.slabs.reserve(1, GFP_KERNEL).inspect_err(|_| {
                // `slab` is dropped (freed) on return; undo its accounting.
                PINNED_TOTAL.fetch_sub(size, Relaxed);
            })?;
            inner.pinned += size;
            SLABS_TOTAL.add(1, Relaxed);
            // Cannot fail: room reserved above.
            let _ = inner.slabs.push_within_capacity(slab);
            out
        };
        if let Err(e) = w.write(&out) {
            // The caller cannot learn the id: take the slab back.
            let mut inner = self.inner.lock();
            if let Some(i) = inner.slabs.iter().position(|s| s.id == out.id) {
                if let Ok(s) = inner.slabs.remove(i) {
                    free_slab(&mut inner.pinned, s);
                }
            }
            return Err(e);
        }
        Ok(())
    }

    fn slab_free(&self, ptr: UserPtr) -> Result {
        let req: abi::IocSlabFree = UserSlice::new(ptr, size_of::<abi::IocSlabFree>())
            .reader()
            .read()?;
        if req.reserved != 0 {
            return Err(EINVAL);
        }
        let mut inner = self.inner.lock();
        let i = inner
            .slabs
            .iter()
            .position(|s| s.id == req.id)
            .ok_or(ENOENT)?;
        inner.zombies.reserve(1, GFP_KERNEL)?;
        let s = inner.slabs.remove(i).map_err(|_| ENOENT)?;
        // Cannot fail: room reserved above.
        let _ = inner.zombies.push_within_capacity(s);
        self.reap_zombies(&mut inner);
        Ok(())
    }

    fn stats_ioctl(&self, ptr: UserPtr) -> Result {
        let (slabs, pinned) = {
            let inner = self.inner.lock();
            (
                (inner.slabs.len() + inner.zombies.len()) as u64,
                inner.pinned,
            )
        };
        let mut out = abi::IocStats {
            errors: self.stats.errors.load(Relaxed),
            rejected: self.stats.rejected.load(Relaxed),
            bytes_copied: self.stats.bytes_copied.load(Relaxed),
            bytes_zero_copy: self.stats.bytes_zero_copy.load(Relaxed),
            ring_full: self.stats.ring_full.load(Relaxed),
            slabs,
            pinned,
            ..Default::default()
        };
        for (o, s) in out.requests.iter_mut().zip(self.stats.requests.iter()) {
            *o = s.load(Relaxed);
        }
        UserSlice::new(ptr, size_of::<abi::IocStats>())
            .writer()
            .write(&out)
    }

    fn reject(&self, e: Error) -> Error {
        self.stats.rejected.add(1, Relaxed);
        self.shared.stats.rejected.add(1, Relaxed);
        e
    }

    fn submit(me: ArcBorrow<'_, Self>, ptr: UserPtr) -> Result {
        let (mut r, mut w) = UserSlice::new(ptr, size_of::<IocSubmit>()).reader_writer();
        let mut sub: IocSubmit = r.read()?;
        if sub.count == 0
            || sub.count > abi::MAX_BATCH
            || sub.flags & !(abi::SUBMIT_NONBLOCK | abi::SUBMIT_COPY) != 0
            || sub.reserved != 0
        {
            return Err(EINVAL);
        }
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

    fn submit_one(
        me: ArcBorrow<'_, Self>,
        uptr: UserPtr,
        nonblock: bool,
        copy: bool,
        touched: &mut u64,
    ) -> Result {
        let shared = &me.shared;
        let req: IocRequest = UserSlice::new(uptr, size_of::<IocRequest>())
            .reader()
            .read()?;
        let h = &req.header;
        if h.op >= 16 || h.flags != 0 || h.reserved != 0 {
            return Err(me.reject(EINVAL));
        }
        if req.queue != u32::MAX && req.queue as usize >= shared.nq {
            return Err(me.reject(EINVAL));
        }
        let n = req.nsegs as usize;
        if n > usize::from(shared.max_segs) {
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
        let max = u64::from(shared.cfg.max_request_bytes);
        if tin > max || tout > max {
            return Err(me.reject(E2BIG));
        }

        let mut dsegs = KVec::<Seg>::with_capacity(n, GFP_KERNEL)?;
        let bounce = if copy {
            let total = (tin + tout) as usize;
            let mut buf = KVec::<u8>::new();
            buf.resize(total, 0, GFP_KERNEL)?;
            let mut outs = KVec::with_capacity(n, GFP_KERNEL)?;
            let mut off = 0usize;
            for s in segs.iter() {
                let len = s.len as usize;
                let dst = &mut buf[off..off + len];
                if s.dir == abi::SEG_IN {
                    UserSlice::new(UserPtr::from_addr(s.addr as usize), len)
                        .reader()
                        .read_slice(dst)
                        .map_err(|e| me.reject(e))?;
                } else {
                    outs.push((s.addr, s.len, off), GFP_KERNEL)?;
                }
                off += len;
            }
            // The allocation does not move from here on: the physical
            // addresses stay valid while the request is in flight.
            let base = kmalloc_phys(buf.as_ptr());
            let mut off = 0u64;
            for s in segs.iter() {
                dsegs.push(
                    Seg {
                        addr: base + off,
                        len: s.len,
                        write: s.dir == abi::SEG_OUT,
                    },
                    GFP_KERNEL,
                )?;
                off += u64::from(s.len);
            }
            me.reserve()?;
            me.stats.bytes_copied.add(tin, Relaxed);
            shared.stats.bytes_copied.add(tin, Relaxed);
            Some(Bounce { buf, outs })
        } else {
            for s in segs.iter() {
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
            for s in segs.iter() {
                if !inner
                    .slabs
                    .iter()
                    .any(|sl| sl.contains(s.addr, u64::from(s.len)))
                {
                    drop(inner);
                    dev_warn!(
                        shared.pdev.as_ref(),
                        "request {:#x} rejected: segment {:#x}+{} is not inside a slab of this file\n",
                        h.cookie,
                        s.addr,
                        s.len
                    );
                    return Err(me.reject(EFAULT));
                }
            }
            // Count the request in flight before `inner` is released: a
            // slab freed from now on waits as a zombie until it completes.
            me.reserve()?;
            drop(inner);
            None
        };
        let inf = InFlight {
            file: me.into(),
            cookie: h.cookie,
            op: h.op,
            bounce,
        };
        match shared.submit(req.queue, &h.to_le_bytes(), &dsegs, inf, nonblock, touched) {
            Ok(()) => {
                if !copy {
                    me.stats.bytes_zero_copy.add(tin + tout, Relaxed);
                    shared.stats.bytes_zero_copy.add(tin + tout, Relaxed);
                }
                Ok(())
            }
            Err(e) => {
                me.unreserve();
                Err(e)
            }
        }
    }

    fn reap(me: ArcBorrow<'_, Self>, ptr: UserPtr) -> Result {
        let (mut r, mut w) = UserSlice::new(ptr, size_of::<IocReap>()).reader_writer();
        let mut req: IocReap = r.read()?;
        if req.max == 0 || req.max > abi::MAX_BATCH || req.reserved != 0 {
            return Err(EINVAL);
        }
        let max = req.max as usize;
        let mut got = KVec::<CompEntry>::with_capacity(max, GFP_KERNEL)?;
        let start = Instant::<Monotonic>::now();
        let mut g = me.comp.lock();
        loop {
            while got.len() < max {
                match g.pop() {
                    Some(e) => {
                        let _ = got.push_within_capacity(e);
                    }
                    None => break,
                }
            }
            if !got.is_empty() {
                break;
            }
            if g.inflight == 0 {
                return Err(ENOENT);
            }
            if req.timeout_ms == 0 {
                return Err(EAGAIN);
            }
            let elapsed = start.elapsed().as_millis();
            let chunk = if req.timeout_ms > 0 {
                let left = i64::from(req.timeout_ms) - elapsed;
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
        drop(g);

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
                let mut left = c.len as usize;
                for &(uaddr, len, off) in b.outs.iter() {
                    let n = left.min(len as usize);
                    if n == 0 {
                        break;
                    }
                    let copied = UserSlice::new(UserPtr::from_addr(uaddr as usize), n)
                        .writer()
                        .write_slice(&b.buf[off..off + n]);
                    if copied.is_err() && c.status == abi::STATUS_OK {
                        c.status = abi::STATUS_BAD_ADDRESS;
                        me.stats.errors.add(1, Relaxed);
                    }
                    me.stats.bytes_copied.add(n as u64, Relaxed);
                    me.shared.stats.bytes_copied.add(n as u64, Relaxed);
                    left -= n;
                }
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

#[pinned_drop]
impl PinnedDrop for FileState {
    fn drop(self: Pin<&mut Self>) {
        let mut inner = self.inner.lock();
        while let Some(s) = inner.slabs.pop() {
            free_slab(&mut inner.pinned, s);
        }
        while let Some(s) = inner.zombies.pop() {
            free_slab(&mut inner.pinned, s);
        }
    }
}

#[vtable]
impl MiscDevice for FileState {
    type Ptr = Arc<FileState>;

    fn open(_file: &File, misc: &MiscDeviceRegistration<Self>) -> Result<Arc<Self>> {
        let shared = PollMiscRegistration::<Self>::data_of(misc).clone();
        let cap = 2 * shared.total_slots;
        let mut ring = KVec::with_capacity(cap, GFP_KERNEL)?;
        for _ in 0..cap {
            ring.push(None, GFP_KERNEL)?;
        }
        Arc::pin_init(
            try_pin_init!(FileState {
                shared,
                inner <- new_mutex!(FileInner::default()),
                comp <- new_spinlock!(CompQueue { ring, head: 0, len: 0, inflight: 0 }),
                wait <- new_poll_condvar!(),
                stats: FileStats {
                    requests: [const { Atomic::new(0) }; 16],
                    errors: Atomic::new(0),
                    rejected: Atomic::new(0),
                    bytes_copied: Atomic::new(0),
                    bytes_zero_copy: Atomic::new(0),
                    ring_full: Atomic::new(0),
                },
            }),
            GFP_KERNEL,
        )
    }

    fn release(device: Arc<Self>, _file: &File) {
        // Requests still in flight keep the state (and their slabs) alive
        // until they complete. Give them up to `request_timeout_ms` to
        // drain, so that a dead device is noticed here (and everything is
        // freed now) rather than at unbind.
        let limit = i64::from(crate::request_timeout_ms());
        let start = Instant::<Monotonic>::now();
        while device.inflight() != 0 && limit > 0 && start.elapsed().as_millis() <= limit + 100 {
            device.shared.watchdog();
            fsleep(Delta::from_millis(10));
        }
        drop(device);
    }

    fn mmap(me: ArcBorrow<'_, Self>, _file: &File, vma: &VmaNew) -> Result {
        // SAFETY: `vma` is valid for the duration of `mmap` (type
        // invariant of `VmaNew`); `vm_pgoff` is a plain field.
        let pgoff = unsafe { (*vma.as_ptr()).vm_pgoff } as u64;
        let off = pgoff.checked_mul(PAGE_SIZE as u64).ok_or(EINVAL)?;
        let len = vma.end() - vma.start();
        let inner = me.inner.lock();
        let Some(slab) = inner.slabs.iter().find(|s| s.mmap_offset == off) else {
            return Err(EINVAL);
        };
        slab.map(vma, len)
    }

    fn ioctl(me: ArcBorrow<'_, Self>, _file: &File, cmd: u32, arg: usize) -> Result<isize> {
        let ptr = UserPtr::from_addr(arg);
        match cmd {
            abi::PKTACCEL_IOC_INFO => me.info(ptr)?,
            abi::PKTACCEL_IOC_SLAB_ALLOC => me.slab_alloc(ptr)?,
            abi::PKTACCEL_IOC_SLAB_FREE => me.slab_free(ptr)?,
            abi::PKTACCEL_IOC_SUBMIT => Self::submit(me, ptr)?,
            abi::PKTACCEL_IOC_REAP => Self::reap(me, ptr)?,
            abi::PKTACCEL_IOC_STATS => me.stats_ioctl(ptr)?,
            _ => return Err(ENOTTY),
        }
        Ok(0)
    }
}

impl MiscPoll for FileState {
    type RegData = Arc<Shared>;

    fn poll(me: ArcBorrow<'_, Self>, file: &File, table: PollTable<'_>) -> u32 {
        table.register_wait(file, &me.wait);
        // Pollers do not sleep in the driver: check for a device that
        // stopped completing on every (re)poll instead.
        if me.inflight() != 0 {
            me.shared.watchdog();
        }
        let dead = me.shared.is_dead();
        let g = me.comp.lock();
        let mut mask = 0;
        if g.len > 0 {
            mask |= EPOLLIN | EPOLLRDNORM;
        }
        if dead {
            if g.len == 0 && g.inflight == 0 {
                mask |= EPOLLHUP | EPOLLERR;
            }
        } else {
            mask |= EPOLLOUT | EPOLLWRNORM;
        }
        mask
    }
}
