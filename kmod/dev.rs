// SPDX-License-Identifier: GPL-2.0
//! Device state shared by the PCI driver, the interrupt thread and open
//! files: the request queues, requests in flight, the interrupt that
//! completes them, and statistics. Device death (watchdog, reset, unbind)
//! is in `dev_death.rs`, what the driver refuses of a faulty device in
//! `dev_errors.rs` (child modules).
//!
//! `DeviceState` outlives the PCI binding while files are open. A device
//! declared dead refuses new requests; after unbind, moreover, its BAR is
//! revoked (`DevresBar`) and its rings are freed.

use core::fmt;
use kernel::{
    device::{self, Bound},
    io::Io,
    irq::{IrqReturn, ThreadedHandler},
    new_condvar, new_mutex, new_spinlock, pci,
    prelude::*,
    sync::{
        aref::ARef,
        atomic::{Atomic, Relaxed},
        CondVar, CondVarTimeoutResult, Mutex, SpinLock,
    },
    time::{delay::fsleep, msecs_to_jiffies, Delta, Instant, Monotonic},
};

use crate::{
    abi,
    bounce::Bounce,
    keys::{KeyClaim, KeyTable},
    ring::{Seg, Vq, STATUS_UNWRITTEN},
    slab::{PINNED_TOTAL, QUARANTINED_TOTAL, SLABS_TOTAL},
    virtio::{self, common, Caps, Regs},
};
use kernel::sync::Arc;

#[path = "dev_death.rs"]
mod death;
#[path = "dev_errors.rs"]
mod errors;

/// Whoever submitted a request: the device hands it the outcome. The
/// file side implements it, so this module does not depend on `file.rs`.
pub(crate) trait Submitter: Send + Sync {
    /// Called once per finished request, without device locks held.
    fn complete(&self, cookie: u64, op: u16, st: abi::StatusRecord, bounce: Option<Bounce>);
    /// The device may still write to the submitter's memory: never free it.
    fn quarantine(&self);
    /// A submit of this submitter found every queue full.
    fn note_ring_full(&self);
}

/// A request the device holds.
pub(crate) struct InFlight {
    /// Keeps the submitting file's state (and so its slabs) alive until
    /// the device is done with the request, even if the file is closed.
    pub(crate) file: Arc<dyn Submitter>,
    pub(crate) cookie: u64,
    pub(crate) op: u16,
    pub(crate) bounce: Option<Bounce>,
    /// The device key slot this request names, if any.
    pub(crate) key: Option<KeyClaim>,
    /// Output bytes the request gave the device, recorded at submit: the
    /// most its status record may claim.
    pub(crate) out_len: u32,
}

pub(crate) struct QueueState {
    vq: Option<Vq>,
    slots: KVec<Option<InFlight>>,
    last_progress: Instant<Monotonic>,
}

impl QueueState {
    /// The state of a queue the device has just enabled: nothing in flight.
    pub(crate) fn new(vq: Vq) -> Result<Self> {
        let mut slots = KVec::with_capacity(usize::from(vq.nslots()), GFP_KERNEL)?;
        for _ in 0..vq.nslots() {
            slots.push(None, GFP_KERNEL)?;
        }
        Ok(QueueState {
            vq: Some(vq),
            slots,
            last_progress: Instant::now(),
        })
    }
}

struct Hw {
    queues: KVec<QueueState>,
    dead: bool,
    next: usize,
    /// When the watchdog last logged a lost interrupt (rate limit).
    lost_irq_logged: Option<Instant<Monotonic>>,
    /// When a used entry not in flight was last logged (rate limit).
    bogus_logged: Option<Instant<Monotonic>>,
    /// When a status length past the output was last logged (rate limit).
    bad_len_logged: Option<Instant<Monotonic>>,
}

impl Hw {
    fn new(queues: KVec<QueueState>) -> Self {
        Hw {
            queues,
            dead: false,
            next: 0,
            lost_irq_logged: None,
            bogus_logged: None,
            bad_len_logged: None,
        }
    }
}

/// Device-wide counters (debugfs).
struct Stats {
    requests: [Atomic<u64>; 16],
    errors: [Atomic<u64>; 16],
    rejected: Atomic<u64>,
    bytes_copied: Atomic<u64>,
    bytes_zero_copy: Atomic<u64>,
    ring_full: Atomic<u64>,
    device_errors: Atomic<u64>,
    /// Watchdog passes that found completions on a stalled queue's used
    /// ring: an interrupt was lost, and polling recovered it.
    lost_irq_polls: Atomic<u64>,
    /// Interrupts whose thread found no used entry on any queue.
    spurious_irqs: Atomic<u64>,
    /// Used entries whose id was not a request in flight, or one whose
    /// status the device had not written (device bugs).
    bogus_used: Atomic<u64>,
    /// Status records claiming more output than their request has (device
    /// bugs): those requests fail with `STATUS_DEVICE_ERROR`.
    bad_status_len: Atomic<u64>,
    /// Resets the device did not acknowledge: from the first on, its rings
    /// are never freed (see `shutdown`).
    unacked_resets: Atomic<u64>,
}

impl Stats {
    const fn new() -> Self {
        Stats {
            requests: [const { Atomic::new(0) }; 16],
            errors: [const { Atomic::new(0) }; 16],
            rejected: Atomic::new(0),
            bytes_copied: Atomic::new(0),
            bytes_zero_copy: Atomic::new(0),
            ring_full: Atomic::new(0),
            device_errors: Atomic::new(0),
            lost_irq_polls: Atomic::new(0),
            spurious_irqs: Atomic::new(0),
            bogus_used: Atomic::new(0),
            bad_status_len: Atomic::new(0),
            unacked_resets: Atomic::new(0),
        }
    }
}

/// One pktaccel device: its queues, what it holds in flight, its key
/// slots and counters. Open files and the interrupt share it.
#[pin_data]
pub(crate) struct DeviceState {
    pdev: ARef<pci::Device>,
    cfg: abi::DeviceConfig,
    queue_size: u16,
    max_segs: u16,
    nq: usize,
    /// Requests that fit in all rings at once.
    total_slots: usize,
    caps: Caps,
    bar: pci::DevresBar,
    notify: KVec<usize>,
    #[pin]
    hw: SpinLock<Hw>,
    /// Woken when ring slots free up or the device dies.
    #[pin]
    space: CondVar,
    /// Held from marking the device dead until its reset and the failing
    /// of what was in flight are over, so that unbind, finding it already
    /// dead, still waits for that before it frees the rings.
    #[pin]
    death: Mutex<()>,
    stats: Stats,
    /// Which file holds which device key slot (see `keys.rs`).
    #[pin]
    keys: SpinLock<KeyTable>,
}

/// What probe learnt and set up on a device before it can run.
pub(crate) struct Setup {
    pub(crate) cfg: abi::DeviceConfig,
    /// Whether indirect descriptors were negotiated.
    pub(crate) indirect: bool,
    /// Entries per ring (every queue has the same size).
    pub(crate) queue_size: u16,
    pub(crate) max_segs: u16,
    pub(crate) queues: KVec<QueueState>,
    /// Doorbell offset of each queue.
    pub(crate) notify: KVec<usize>,
}

impl DeviceState {
    /// The device's state once its queues are set up (`Setup`) and its
    /// BAR handed to devres; `keys` covers its key slots.
    pub(crate) fn new(
        pdev: &pci::Device<Bound>,
        caps: Caps,
        bar: pci::DevresBar,
        setup: Setup,
        keys: KeyTable,
    ) -> impl PinInit<Self, Error> {
        let Setup {
            cfg,
            indirect: _,
            queue_size,
            max_segs,
            queues,
            notify,
        } = setup;
        let pdev: ARef<pci::Device> = pdev.into();
        let nq = queues.len();
        let total_slots = queues
            .iter()
            .map(|q| q.vq.as_ref().map_or(0, |v| usize::from(v.nslots())))
            .sum();
        try_pin_init!(Self {
            pdev,
            cfg,
            queue_size,
            max_segs,
            nq,
            total_slots,
            caps,
            bar,
            notify,
            hw <- new_spinlock!(Hw::new(queues)),
            space <- new_condvar!(),
            death <- new_mutex!(()),
            stats: Stats::new(),
            keys <- new_spinlock!(keys),
        }? Error)
    }

    /// The device's config as read (once) at probe.
    pub(crate) fn cfg(&self) -> &abi::DeviceConfig {
        &self.cfg
    }

    pub(crate) fn queue_size(&self) -> u16 {
        self.queue_size
    }

    /// Most segments one request may have.
    pub(crate) fn max_segs(&self) -> u16 {
        self.max_segs
    }

    /// Number of request queues.
    pub(crate) fn nq(&self) -> usize {
        self.nq
    }

    /// Requests that fit in all rings at once.
    pub(crate) fn total_slots(&self) -> usize {
        self.total_slots
    }

    /// The device, for log lines.
    pub(crate) fn dev(&self) -> &device::Device {
        self.pdev.as_ref()
    }

    /// Which file holds which device key slot (see `keys.rs`).
    pub(crate) fn keys(&self) -> &SpinLock<KeyTable> {
        &self.keys
    }

    /// Counts a request refused before it reached the device.
    pub(crate) fn count_rejected(&self) {
        self.stats.rejected.add(1, Relaxed);
    }

    /// Counts bytes copied through bounce buffers.
    pub(crate) fn count_copied(&self, bytes: u64) {
        self.stats.bytes_copied.add(bytes, Relaxed);
    }

    /// Counts bytes the device read and wrote in place (zero-copy).
    pub(crate) fn count_zero_copy(&self, bytes: u64) {
        self.stats.bytes_zero_copy.add(bytes, Relaxed);
    }

    /// Sets DRIVER_OK: everything is in place, the device may run.
    pub(crate) fn start(&self, pdev: &pci::Device<Bound>) -> Result {
        let bar = self.bar.access(pdev.as_ref())?;
        Regs {
            bar,
            caps: &self.caps,
        }
        .add_status(virtio::status::DRIVER_OK)
    }

    pub(crate) fn is_dead(&self) -> bool {
        self.hw.lock().dead
    }

    /// Rings the doorbell of every queue whose bit is set in `touched`.
    pub(crate) fn kick_touched(&self, touched: u64) {
        if touched == 0 {
            return;
        }
        let Some(bar) = self.bar.try_access() else {
            return;
        };
        for q in 0..self.nq {
            if touched & (1 << q) != 0 {
                let _ = bar.try_write16(q as u16, self.notify[q]);
            }
        }
    }

    /// Queues one validated request on `queue` (or any queue for
    /// `u32::MAX`). When the rings are full: `EAGAIN` if `nonblock`,
    /// otherwise waits for room. The doorbell is rung by the caller
    /// (`kick_touched`), once per batch; before sleeping, the queues
    /// touched so far are kicked so the device can make room.
    pub(crate) fn submit(
        &self,
        queue: u32,
        hdr: &[u8; abi::REQUEST_HEADER_SIZE],
        segs: &[Seg],
        inf: InFlight,
        nonblock: bool,
        touched: &mut u64,
    ) -> Result {
        let mut inf = Some(inf);
        let mut hw = self.hw.lock();
        loop {
            if hw.dead {
                return Err(ENODEV);
            }
            let nq = hw.queues.len();
            let room = |hw: &Hw, q: usize| hw.queues[q].vq.as_ref().is_some_and(|v| v.has_room());
            let pick = if queue != u32::MAX {
                let q = queue as usize;
                if room(&hw, q) {
                    Some(q)
                } else {
                    None
                }
            } else {
                (0..nq)
                    .map(|i| (hw.next + i).checked_rem(nq).unwrap_or(0))
                    .find(|&q| room(&hw, q))
            };
            if let Some(q) = pick {
                let qs = &mut hw.queues[q];
                let Some(vq) = qs.vq.as_mut() else {
                    return Err(ENODEV);
                };
                let idle = vq.in_flight() == 0;
                let slot = vq.add(hdr, segs).ok_or(EINVAL)?;
                if idle {
                    qs.last_progress = Instant::now();
                }
                qs.slots[usize::from(slot)] = inf.take();
                hw.next = (q + 1).checked_rem(nq).unwrap_or(0);
                *touched |= 1 << q;
                return Ok(());
            }
            self.stats.ring_full.add(1, Relaxed);
            if let Some(i) = &inf {
                i.file.note_ring_full();
            }
            if nonblock {
                return Err(EAGAIN);
            }
            self.kick_touched(*touched);
            *touched = 0;
            if self.stalled(&hw) {
                // Polls the stalled queues (a lost interrupt) and declares
                // the device dead only if they hold nothing.
                drop(hw);
                self.watchdog();
                hw = self.hw.lock();
                continue;
            }
            if let CondVarTimeoutResult::Signal { .. } = self
                .space
                .wait_interruptible_timeout(&mut hw, msecs_to_jiffies(100))
            {
                return Err(EINTR);
            }
        }
    }

    /// Hands one finished request to its file, with its status record
    /// checked (`checked_status`). Called without locks held: dropping the
    /// last reference to a closed file frees its slabs.
    fn deliver(&self, inf: InFlight, st: abi::StatusRecord) {
        let st = self.checked_status(&inf, st);
        let op = usize::from(inf.op) & 15;
        self.stats.requests[op].add(1, Relaxed);
        if st.status != abi::STATUS_OK {
            self.stats.errors[op].add(1, Relaxed);
        }
        if let Some(k) = inf.key {
            self.keys.lock().complete(k, st.status);
        }
        inf.file.complete(inf.cookie, inf.op, st, inf.bounce);
    }

    /// Takes the entries on queue `q`'s used ring, at most `max` and
    /// `BATCH` per hold of the device lock, and delivers them outside it.
    /// Returns `(delivered, taken)`: requests completed, and used entries
    /// taken including bogus ones (ids not in flight, or naming a request
    /// whose status record the device has not written). The interrupt
    /// thread and the watchdog's poll (a lost interrupt) both call it; the
    /// lock makes each entry go to one of them.
    fn drain_queue(&self, q: usize, max: usize) -> (usize, usize) {
        const BATCH: usize = 16;
        let (mut delivered, mut taken) = (0, 0);
        loop {
            let mut done: [Option<(InFlight, abi::StatusRecord)>; BATCH] = [const { None }; BATCH];
            let mut n = 0;
            let (mut bad, mut nbad) = (0u32, 0u64);
            let mut more = true;
            {
                let mut hw = self.hw.lock();
                let QueueState {
                    vq,
                    slots,
                    last_progress,
                } = &mut hw.queues[q];
                let Some(vq) = vq.as_mut() else { break };
                // Bogus entries count towards the batch too: a device that
                // floods the ring with them cannot keep the lock held.
                for _ in 0..BATCH {
                    let used = if taken < max { vq.pop_used() } else { None };
                    let Some(used) = used else {
                        more = false;
                        break;
                    };
                    taken += 1;
                    match used {
                        Err(id) => (bad, nbad) = (id, nbad + 1),
                        Ok(slot) => {
                            // Read once. A request whose status the device
                            // never wrote is not answered (the device may
                            // still be working on it): the entry is bogus,
                            // the request and its memory stay in flight.
                            let st = vq.status(slot);
                            let inf = if st.status == STATUS_UNWRITTEN {
                                None
                            } else {
                                slots[usize::from(slot)].take()
                            };
                            match inf {
                                Some(inf) => {
                                    vq.release(slot);
                                    *last_progress = Instant::now();
                                    done[n] = Some((inf, st));
                                    n += 1;
                                }
                                None => (bad, nbad) = (u32::from(slot), nbad + 1),
                            }
                        }
                    }
                }
            }
            if nbad > 0 {
                // Counted, and logged at most once per 5 s: a device
                // flooding the ring with bogus ids must not flood the log.
                self.bogus_used(q, bad, nbad);
            }
            for (inf, st) in done.iter_mut().filter_map(Option::take) {
                self.deliver(inf, st);
            }
            delivered += n;
            if n > 0 {
                self.space.notify_all();
            }
            if !more {
                break;
            }
        }
        (delivered, taken)
    }

    fn in_flight(&self) -> usize {
        let hw = self.hw.lock();
        hw.queues
            .iter()
            .map(|q| q.vq.as_ref().map_or(0, |v| v.in_flight()))
            .sum()
    }
}

/// The interrupt: one MSI-X vector for all queues. The hard handler (the
/// trait's default) only wakes the thread, which delivers completions: it
/// may free slabs of closed files, which sleeps.
#[pin_data]
pub(crate) struct Interrupt {
    dev: Arc<DeviceState>,
}

impl Interrupt {
    pub(crate) fn new(dev: Arc<DeviceState>) -> impl PinInit<Self, Error> {
        try_pin_init!(Interrupt { dev }? Error)
    }
}

impl ThreadedHandler for Interrupt {
    /// Delivers every used-ring entry; runs in the interrupt thread. An
    /// interrupt that finds nothing new is counted (`spurious_irqs`): a
    /// device bug, or completions an earlier run or the watchdog's poll
    /// already took.
    fn handle_threaded(&self) -> IrqReturn {
        let d = &*self.dev;
        // A queue holds at most `queue_size` requests, so a run takes at
        // most twice that from one queue (slots refilled meanwhile): a
        // device flooding the ring cannot keep the thread here. Entries
        // left come with an interrupt of their own, or the watchdog polls.
        let max = 2 * usize::from(d.queue_size);
        let mut taken = 0;
        for q in 0..d.nq {
            taken += d.drain_queue(q, max).1;
        }
        if taken == 0 {
            d.stats.spurious_irqs.add(1, Relaxed);
        }
        IrqReturn::Handled
    }
}

/// The debugfs `stats` file: one `key value` pair per line.
pub(crate) struct StatsView(pub(crate) Arc<DeviceState>);

impl fmt::Debug for StatsView {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = &self.0;
        writeln!(f, "slabs {}", SLABS_TOTAL.load(Relaxed))?;
        writeln!(f, "pinned_bytes {}", PINNED_TOTAL.load(Relaxed))?;
        writeln!(f, "max_pinned_per_file {}", crate::max_pinned_per_file())?;
        writeln!(f, "max_pinned_total {}", crate::max_pinned_total())?;
        writeln!(f, "device {}", if s.is_dead() { "dead" } else { "alive" })?;
        writeln!(f, "queues {}", s.nq)?;
        writeln!(f, "queue_size {}", s.queue_size)?;
        writeln!(f, "in_flight {}", s.in_flight())?;
        for op in 0..abi::OP_COUNT {
            writeln!(
                f,
                "requests.{} {}",
                abi::op_name(op),
                s.stats.requests[usize::from(op)].load(Relaxed)
            )?;
        }
        for op in 0..abi::OP_COUNT {
            writeln!(
                f,
                "errors.{} {}",
                abi::op_name(op),
                s.stats.errors[usize::from(op)].load(Relaxed)
            )?;
        }
        writeln!(f, "rejected {}", s.stats.rejected.load(Relaxed))?;
        writeln!(f, "bytes_copied {}", s.stats.bytes_copied.load(Relaxed))?;
        writeln!(
            f,
            "bytes_zero_copy {}",
            s.stats.bytes_zero_copy.load(Relaxed)
        )?;
        writeln!(f, "ring_full {}", s.stats.ring_full.load(Relaxed))?;
        let (used, clearing) = s.keys.lock().counts();
        writeln!(f, "key_slots_used {}", used)?;
        writeln!(f, "key_slots_clearing {}", clearing)?;
        writeln!(f, "quarantined_bytes {}", QUARANTINED_TOTAL.load(Relaxed))?;
        writeln!(f, "device_errors {}", s.stats.device_errors.load(Relaxed))?;
        writeln!(f, "lost_irq_polls {}", s.stats.lost_irq_polls.load(Relaxed))?;
        writeln!(f, "spurious_irqs {}", s.stats.spurious_irqs.load(Relaxed))?;
        writeln!(f, "bogus_used {}", s.stats.bogus_used.load(Relaxed))?;
        writeln!(f, "bad_status_len {}", s.stats.bad_status_len.load(Relaxed))?;
        writeln!(f, "unacked_resets {}", s.stats.unacked_resets.load(Relaxed))
    }
}
