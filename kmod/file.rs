// SPDX-License-Identifier: GPL-2.0
//! `/dev/pktaccel`: per-open-file state, its completion queue, mmap, the
//! ioctl dispatch, info and statistics, poll, and what close does. Batched
//! submit and reap are in `file_io.rs`, the slab ioctls in `file_slabs.rs`
//! (child modules). See docs/kmod.md for the user-visible contract.
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
    bounce::{Bounce, BounceBytes},
    dev::{DeviceState, InFlight, Submitter},
    keys::{self, KeyClaim},
    misc::{MiscPoll, PollMiscRegistration},
    ring::Seg,
    slab::{free_slab, quarantine_slab, reject_log_allowed, Slab, PINNED_TOTAL, SLABS_TOTAL},
};

#[path = "file_io.rs"]
mod io;
#[path = "file_slabs.rs"]
mod slabs;

/// Source of file ids (0 means "no file" in the key table).
static NEXT_FILE_ID: Atomic<u64> = Atomic::new(1);

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
    /// Queues `e`; gives it back if the ring is full (to be dropped by the
    /// caller outside the lock).
    fn push(&mut self, e: CompEntry) -> Option<CompEntry> {
        let cap = self.ring.len();
        if self.len == cap {
            return Some(e);
        }
        let i = (self.head + self.len).checked_rem(cap).unwrap_or(0);
        self.ring[i] = Some(e);
        self.len += 1;
        None
    }

    /// The submitter's pid if the next completion has copy-mode outputs
    /// for another process's memory.
    fn head_foreign_owner(&self) -> Option<i32> {
        if self.len == 0 {
            return None;
        }
        self.ring[self.head]
            .as_ref()
            .and_then(|e| e.bounce.as_ref())
            .filter(|b| !b.is_current_mm())
            .map(|b| b.owner_pid())
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
    ring_full: Atomic<u64>,
}

/// The state of one open `/dev/pktaccel`.
#[pin_data(PinnedDrop)]
pub(crate) struct FileState {
    shared: Arc<DeviceState>,
    /// Unique over the module's life: names this file in the key table.
    id: u64,
    /// Copy-mode bounce bytes held (in flight or unreaped).
    bounce: BounceBytes,
    /// Set when the device did not acknowledge a reset while this file
    /// had requests in flight: its slabs are then never freed.
    quarantined: Atomic<u32>,
    #[pin]
    inner: Mutex<FileInner>,
    #[pin]
    comp: SpinLock<CompQueue>,
    /// Woken on every completion: reapers and poll().
    #[pin]
    wait: PollCondVar,
    stats: FileStats,
}

impl FileState {
    fn is_quarantined(&self) -> bool {
        self.quarantined.load(Relaxed) != 0
    }

    /// Bytes this file pins: its slabs and its bounce buffers.
    fn pinned_by_file(&self, inner: &FileInner) -> u64 {
        inner.pinned + self.bounce.load(Relaxed)
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

    fn info(&self, ptr: UserPtr) -> Result {
        let pinned = self.pinned_by_file(&self.inner.lock());
        let info = abi::IocInfo {
            config: *self.shared.cfg(),
            queue_size: u32::from(self.shared.queue_size()),
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

    fn stats_ioctl(&self, ptr: UserPtr) -> Result {
        let (slabs, pinned) = {
            let inner = self.inner.lock();
            (
                (inner.slabs.len() + inner.zombies.len()) as u64,
                self.pinned_by_file(&inner),
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
        self.shared.count_rejected();
        e
    }

    /// Waits up to `request_timeout_ms` for this file's requests in
    /// flight, checking for a dead device meanwhile.
    fn drain(&self) {
        let limit = i64::from(crate::request_timeout_ms());
        let start = Instant::<Monotonic>::now();
        while self.inflight() != 0 && limit > 0 && start.elapsed().as_millis() <= limit + 100 {
            self.shared.watchdog();
            fsleep(Delta::from_millis(10));
        }
    }

    /// At close: clears every device key slot this file holds, so no key
    /// outlives its file and the slots can serve other files.
    fn clear_keys(me: &Arc<Self>) {
        let shared = &me.shared;
        let nslots = shared.keys().lock().len();
        let Ok(mut claims) = KVec::<KeyClaim>::with_capacity(nslots, GFP_KERNEL) else {
            // The slots stay owned by this file's id, which is never
            // reused: lost, but never handed to anyone else.
            return;
        };
        shared.keys().lock().release(me.id, &mut claims);
        if claims.is_empty() {
            return;
        }
        // Nobody reaps any more: make room for the clears' completions.
        loop {
            let popped = me.comp.lock().pop();
            if popped.is_none() {
                break;
            }
            // Dropped here, outside the lock (freeing a bounce buffer
            // drops an mm reference).
            drop(popped);
        }
        let mut touched = 0u64;
        for c in claims.drain_all() {
            if Self::send_clear(me, c, &mut touched).is_err() {
                // Never sent: the slot stays out of use for good.
                shared.keys().lock().complete(c, abi::STATUS_DEVICE_ERROR);
            }
        }
        shared.kick_touched(touched);
    }

    /// Queues the driver's own KEY_CLEAR of device slot `c.dev`. Does not
    /// sleep on the rings (a dying process has a fatal signal pending):
    /// retries a full ring for up to `request_timeout_ms`.
    fn send_clear(me: &Arc<Self>, c: KeyClaim, touched: &mut u64) -> Result {
        let hdr = abi::RequestHeader {
            op: abi::OP_KEY_CLEAR,
            key_slot: c.dev,
            cookie: u64::MAX,
            ..Default::default()
        }
        .to_le_bytes();
        me.reserve()?;
        let start = Instant::<Monotonic>::now();
        let limit = i64::from(crate::request_timeout_ms()).max(1000);
        loop {
            let inf = InFlight {
                file: me.clone(),
                cookie: u64::MAX,
                op: abi::OP_KEY_CLEAR,
                bounce: None,
                key: Some(c),
                out_len: 0,
            };
            match me.shared.submit(u32::MAX, &hdr, &[], inf, true, touched) {
                Ok(()) => return Ok(()),
                Err(e) if e == EAGAIN && start.elapsed().as_millis() < limit => {
                    me.shared.kick_touched(*touched);
                    *touched = 0;
                    fsleep(Delta::from_millis(1));
                }
                Err(e) => {
                    me.unreserve();
                    return Err(e);
                }
            }
        }
    }
}

/// The device's view of a file: where its requests' outcomes go.
impl Submitter for FileState {
    fn complete(&self, cookie: u64, op: u16, st: abi::StatusRecord, bounce: Option<Bounce>) {
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
            g.push(e)
        };
        if lost.is_some() {
            // Unreachable: submit reserves room for every completion.
            pr_err!("completion queue overflow, completion {:#x} lost\n", cookie);
        }
        self.wait.notify_all();
    }

    fn quarantine(&self) {
        self.quarantined.store(1, Relaxed);
    }

    fn note_ring_full(&self) {
        self.stats.ring_full.add(1, Relaxed);
    }
}

#[pinned_drop]
impl PinnedDrop for FileState {
    fn drop(self: Pin<&mut Self>) {
        let release = if self.is_quarantined() {
            quarantine_slab
        } else {
            free_slab
        };
        let mut inner = self.inner.lock();
        while let Some(s) = inner.slabs.pop() {
            release(&mut inner.pinned, s);
        }
        while let Some(s) = inner.zombies.pop() {
            release(&mut inner.pinned, s);
        }
    }
}

#[vtable]
impl MiscDevice for FileState {
    type Ptr = Arc<FileState>;

    fn open(_file: &File, misc: &MiscDeviceRegistration<Self>) -> Result<Arc<Self>> {
        let shared = PollMiscRegistration::<Self>::data_of(misc).clone();
        let cap = 2 * shared.total_slots();
        let mut ring = KVec::with_capacity(cap, GFP_KERNEL)?;
        for _ in 0..cap {
            ring.push(None, GFP_KERNEL)?;
        }
        let bounce = Arc::new(Atomic::new(0), GFP_KERNEL)?;
        Arc::pin_init(
            try_pin_init!(FileState {
                shared,
                id: NEXT_FILE_ID.fetch_add(1, Relaxed),
                bounce,
                quarantined: Atomic::new(0),
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
        // freed now) rather than at unbind. Then clear this file's keys
        // on the device and wait for that too.
        device.drain();
        Self::clear_keys(&device);
        device.drain();
        drop(device);
    }

    fn mmap(me: ArcBorrow<'_, Self>, _file: &File, vma: &VmaNew) -> Result {
        // SAFETY: `vma` is valid for the duration of `mmap` (type
        // invariant of `VmaNew`); `vm_pgoff` is a plain field.
        let pgoff = unsafe { (*vma.as_ptr()).vm_pgoff } as u64;
        let off = pgoff.checked_mul(PAGE_SIZE as u64).ok_or(EINVAL)?;
        let len = vma.end() - vma.start();
        // A private writable mapping would give the writer copy-on-write
        // pages the device never sees: refuse it, and keep read-only
        // private mappings from becoming writable.
        if vma.flags() & kernel::mm::virt::flags::SHARED == 0 {
            if vma.writable() {
                return Err(EACCES);
            }
            vma.try_clear_maywrite()?;
        }
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
    type RegData = Arc<DeviceState>;

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
