//! The vhost-user backend: what QEMU negotiates with (features, protocol
//! features, queue count, config space) and the per-queue worker that pulls
//! requests off a virtqueue and completes them.
//!
//! Threading: queue `i` is served by worker thread `i`
//! ([`VhostUserBackend::queues_per_thread`] returns one bit per thread), so
//! queues never contend; each worker has its own scratch buffers and stats
//! shard. Key slots are the only state shared between queues.

use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use pktaccel_abi::VIRTIO_F_VERSION_1;
use tracing::{debug, warn};
use vhost::vhost_user::message::VhostUserProtocolFeatures;
use vhost_user_backend::{VhostUserBackend, VringRwLock, VringT};
use virtio_queue::QueueT;
use vm_memory::{GuestAddressSpace, GuestMemory, GuestMemoryAtomic, GuestMemoryMmap};
use vmm_sys_util::epoll::EventSet;
use vmm_sys_util::event::{
    EventConsumer, EventFlag, EventNotifier, new_event_consumer_and_notifier,
};

use crate::config::DeviceOptions;

use crate::completion::CompletionHook;
use crate::drain::Lane;
use crate::faults::Faults;
use crate::request::Processor;
use crate::spin::{Spinner, involuntary_switches};
use crate::stats::Stats;

/// Guest memory as the backend sees it (no dirty-page bitmap: the device
/// does not offer LOG_ALL, so live migration is not supported).
pub type GuestMem = GuestMemoryAtomic<GuestMemoryMmap<()>>;
/// The vring type used by the backend.
pub type Vring = VringRwLock<GuestMem>;

struct Inner {
    opts: DeviceOptions,
    processor: Processor,
    mem: GuestMem,
    event_idx: AtomicBool,
    negotiated: AtomicBool,
    lanes: Vec<Mutex<Lane>>,
    spinners: Vec<Mutex<Spinner>>,
    stats: Arc<Stats>,
    /// Injected faults the request path does not see: interrupts and the
    /// ring stop (the completion faults reach it through `processor.hook`).
    faults: Arc<Faults>,
    /// The exit-event consumer fds handed to vhost-user-backend, which it
    /// never closes (see `Drop for Inner`).
    exit_fds: Mutex<Vec<RawFd>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // vhost-user-backend 0.24.0 registers each worker's exit-event
        // consumer in its epoll with `into_raw_fd()` and never closes it
        // (event_loop.rs, VringEpollHandler::new): one fd per queue per
        // connection, until the daemon runs out (found by the vhost_user
        // fuzz target; test `reconnections_do_not_leak_file_descriptors`).
        // The dependency is pinned to =0.24.0 so this cannot turn into a
        // double close unnoticed.
        for fd in self
            .exit_fds
            .get_mut()
            .unwrap_or_else(|e| e.into_inner())
            .drain(..)
        {
            // SAFETY: `fd` is the consumer side of an eventfd we created in
            // `exit_event`; the library took it over as a raw fd, added it to
            // its epoll and never closes it. Every VringEpollHandler holds a
            // clone of the backend, so when the last `Inner` reference goes
            // those handlers, their epoll fds and their threads are gone and
            // nothing can use `fd` any more: closing it is the release the
            // library omits, and happens exactly once (the list is drained).
            unsafe { libc::close(fd) };
        }
    }
}

/// The pktaccel device behind one vhost-user connection. Cheap to clone
/// (the library hands a clone to each worker thread).
#[derive(Clone)]
pub struct PktAccelBackend {
    inner: Arc<Inner>,
}

impl PktAccelBackend {
    /// A device with `opts`, reading guest memory through `mem` (the same
    /// `GuestMemoryAtomic` given to the `VhostUserDaemon`, which updates it
    /// on SET_MEM_TABLE), counting into `stats` (which outlives connections).
    pub fn new(opts: DeviceOptions, mem: GuestMem, stats: Arc<Stats>) -> Self {
        Self::with_hook(opts, mem, stats, None)
    }

    /// The same, with `hook` deciding about every completion (see
    /// [`crate::completion`]).
    pub fn with_hook(
        opts: DeviceOptions,
        mem: GuestMem,
        stats: Arc<Stats>,
        hook: Option<Arc<dyn CompletionHook>>,
    ) -> Self {
        Self::with_faults(opts, mem, stats, hook, Arc::new(Faults::new()))
    }

    /// The same, with `faults` also deciding about interrupts and ring
    /// stops (see [`crate::faults`]; pass them as `hook` too for the
    /// completion faults).
    pub fn with_faults(
        opts: DeviceOptions,
        mem: GuestMem,
        stats: Arc<Stats>,
        hook: Option<Arc<dyn CompletionHook>>,
        faults: Arc<Faults>,
    ) -> Self {
        let mut processor = Processor::new(
            opts.ops,
            opts.max_segments,
            opts.max_request_bytes,
            opts.key_slots,
        );
        processor.hook = hook;
        let lanes = (0..opts.num_queues)
            .map(|_| Mutex::new(Lane::default()))
            .collect();
        let spinners = (0..opts.num_queues)
            .map(|_| Mutex::new(Spinner::new(opts.poll)))
            .collect();
        Self {
            inner: Arc::new(Inner {
                opts,
                processor,
                mem,
                event_idx: AtomicBool::new(false),
                negotiated: AtomicBool::new(false),
                lanes,
                spinners,
                stats,
                faults,
                exit_fds: Mutex::new(Vec::new()),
            }),
        }
    }

    /// True once the peer spoke vhost-user (asked for features) on this
    /// connection, i.e. it was a frontend such as QEMU and not a liveness
    /// probe that connected and left without a word.
    pub fn negotiated(&self) -> bool {
        self.inner.negotiated.load(Ordering::Relaxed)
    }

    /// The device's request processor (engines, limits, key slots).
    pub fn processor(&self) -> &Processor {
        &self.inner.processor
    }

    /// One kick's worth of work: drain, spin while work keeps coming, then
    /// re-enable notifications and check once more (a request published
    /// just before would otherwise wait for a kick that never comes).
    ///
    /// The loop always ends: a broken queue returns at once, and a queue
    /// that keeps reporting work the device cannot take (passes without
    /// progress) stops being polled, so the worker gets back to its event
    /// loop, where it sees the exit event and the next kick.
    fn serve(&self, vring: &Vring, queue: usize) {
        let spinner = &self.inner.spinners[queue.min(self.inner.spinners.len() - 1)];
        let mut idle = 0u32;
        loop {
            let _ = vring.disable_notification();
            let Some(taken) = self.process_queue(vring, queue) else {
                return;
            };
            if taken > 0 {
                idle = 0;
            } else {
                idle += 1;
                if idle > 2 {
                    debug!(
                        queue,
                        "queue reports work but none can be taken; waiting for a kick"
                    );
                    return;
                }
            }
            if self.spin(vring, queue, spinner) {
                continue;
            }
            match vring.enable_notification() {
                Ok(true) => continue,
                Ok(false) => return,
                Err(e) => {
                    warn!(queue, error = %e, "cannot re-enable notifications");
                    return;
                }
            }
        }
    }

    /// Spins until `vring` has work or the spinner's budget runs out;
    /// true when work arrived. Runs without the vring lock.
    fn spin(&self, vring: &Vring, queue: usize, spinner: &Mutex<Spinner>) -> bool {
        let mut spinner = spinner.lock().unwrap_or_else(|e| e.into_inner());
        let budget = spinner.budget();
        if budget.is_zero() {
            return false;
        }
        let mem = self.inner.mem.memory();
        let switches = involuntary_switches();
        let start = Instant::now();
        let mut spins = 0u32;
        let long = budget > crate::spin::MAX_SPIN;
        let hit = loop {
            if has_work(vring, &*mem) {
                break true;
            }
            spins += 1;
            // Reading the clock costs more than a pause: check it sparingly.
            if spins.is_multiple_of(16) && start.elapsed() >= budget {
                break false;
            }
            // A long fixed spin gives the CPU away now and then, so that on
            // a busy host the driver it waits for gets to run.
            if long && spins.is_multiple_of(256) {
                std::thread::yield_now();
            }
            std::hint::spin_loop();
        };
        spinner.record(hit, involuntary_switches() != switches);
        self.inner.stats.shard(queue).spin(hit);
        hit
    }

    /// Completes every available request on `vring` and notifies the
    /// driver if it asked; returns how many chains were taken, or `None`
    /// when the queue is broken (then it is not served until the frontend
    /// sets it up again; it broke with one log line).
    pub fn process_queue(&self, vring: &Vring, queue: usize) -> Option<usize> {
        let inner = &*self.inner;
        let stats = inner.stats.shard(queue);
        let mut lane = inner.lanes[queue.min(inner.lanes.len() - 1)]
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let mem = inner.mem.memory();
        let mut state = vring.get_mut();
        if !state.is_enabled() {
            return Some(0);
        }
        if inner.faults.spurious_interrupt(queue as u16) {
            // Before anything new is on the used ring: nothing to find.
            let _ = state.signal_used_queue();
        }
        let t0 = Instant::now();
        let d = inner
            .processor
            .drain(state.get_queue_mut(), &*mem, queue, &mut lane, stats);
        if d.taken > 0 {
            stats.busy(t0.elapsed());
        }
        if d.notify
            && !inner.faults.lose_interrupt(queue as u16)
            && let Err(e) = state.signal_used_queue()
        {
            warn!(queue, error = %e, "failed to signal the used queue");
        }
        if let Some(b) = d.broke {
            stats.broken_queue();
            warn!(
                queue,
                "queue {queue} is broken and no longer served until the driver resets it: {b}"
            );
        }
        (!lane.is_broken()).then_some(d.taken)
    }
}

/// True when the driver made requests available that were not taken yet.
fn has_work<M: GuestMemory>(vring: &Vring, mem: &M) -> bool {
    let state = vring.get_ref();
    let q = state.get_queue();
    if !q.ready() || !state.is_enabled() {
        return false;
    }
    q.avail_idx(mem, Ordering::Acquire)
        .map(|idx| idx.0 != q.next_avail())
        .unwrap_or(false)
}

impl VhostUserBackend for PktAccelBackend {
    type Bitmap = ();
    type Vring = Vring;

    fn num_queues(&self) -> usize {
        self.inner.opts.num_queues as usize
    }

    fn max_queue_size(&self) -> usize {
        usize::from(self.inner.opts.queue_size)
    }

    fn features(&self) -> u64 {
        // Only a vhost-user message (GET_FEATURES/SET_FEATURES) gets here.
        self.inner.negotiated.store(true, Ordering::Relaxed);
        self.inner.opts.features()
    }

    fn acked_features(&self, features: u64) {
        if features & (1 << VIRTIO_F_VERSION_1) == 0 {
            warn!(
                features,
                "driver did not accept VIRTIO_F_VERSION_1; legacy is unsupported"
            );
        }
        self.inner.negotiated.store(true, Ordering::Relaxed);
    }

    fn protocol_features(&self) -> VhostUserProtocolFeatures {
        self.inner.negotiated.store(true, Ordering::Relaxed);
        VhostUserProtocolFeatures::CONFIG | VhostUserProtocolFeatures::MQ
    }

    fn set_event_idx(&self, enabled: bool) {
        self.inner.event_idx.store(enabled, Ordering::Relaxed);
    }

    fn get_config(&self, offset: u32, size: u32) -> Vec<u8> {
        config_slice(&self.inner.opts.device_config().to_le_bytes(), offset, size)
    }

    fn reset_device(&self) {
        for lane in &self.inner.lanes {
            lane.lock().unwrap_or_else(|e| e.into_inner()).reset();
        }
    }

    fn stop_vring(&self, queue_index: u32) -> io::Result<()> {
        // vhost-user's form of a device reset: the frontend stops each ring
        // (GET_VRING_BASE) and waits for the answer.
        if let Some(stall) = self.inner.faults.on_ring_stop(queue_index as u16) {
            warn!(
                queue = queue_index,
                ?stall,
                "injected fault: holding the ring stop (reset)"
            );
            std::thread::sleep(stall);
        }
        // The frontend stopped the ring: what it starts next (possibly a
        // repaired ring after a broken one) is served afresh.
        if let Some(lane) = self.inner.lanes.get(queue_index as usize) {
            lane.lock().unwrap_or_else(|e| e.into_inner()).reset();
        }
        Ok(())
    }

    fn update_memory(&self, mem: GuestMem) -> io::Result<()> {
        // `inner.mem` is the same atomic the daemon just updated. A region
        // past its file's end would SIGBUS the first worker that reads it:
        // drop the whole table and refuse (the connection then ends).
        if let Err(e) = crate::mem_table::check_files(&*mem.memory()) {
            warn!(error = %e, "memory table refused");
            mem.lock()
                .unwrap_or_else(|e| e.into_inner())
                .replace(GuestMemoryMmap::new());
            return Err(io::Error::new(io::ErrorKind::InvalidInput, e));
        }
        Ok(())
    }

    fn queues_per_thread(&self) -> Vec<u64> {
        (0..self.inner.opts.num_queues).map(|q| 1u64 << q).collect()
    }

    fn exit_event(&self, _thread_index: usize) -> Option<(EventConsumer, EventNotifier)> {
        match new_event_consumer_and_notifier(EventFlag::NONBLOCK | EventFlag::CLOEXEC) {
            Ok(pair) => {
                self.inner
                    .exit_fds
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(pair.0.as_raw_fd());
                Some(pair)
            }
            Err(e) => {
                warn!(error = %e, "cannot create a worker exit event");
                None
            }
        }
    }

    fn handle_event(
        &self,
        device_event: u16,
        evset: EventSet,
        vrings: &[Vring],
        thread_id: usize,
    ) -> io::Result<()> {
        if evset != EventSet::IN {
            warn!(?evset, "unexpected event set");
            return Ok(());
        }
        let Some(vring) = vrings.get(usize::from(device_event)) else {
            warn!(device_event, "event for an unknown vring");
            return Ok(());
        };
        // Thread i serves exactly queue i (see queues_per_thread).
        self.serve(vring, thread_id);
        Ok(())
    }
}

/// The `size` bytes of `config` at `offset`, zero-padded past its end (the
/// guest reads a fixed window; bytes beyond the struct read as zero).
pub fn config_slice(config: &[u8], offset: u32, size: u32) -> Vec<u8> {
    let size = (size as usize).min(4096);
    let mut out = vec![0u8; size];
    let start = (offset as usize).min(config.len());
    let end = start.saturating_add(size).min(config.len());
    out[..end - start].copy_from_slice(&config[start..end]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_window_is_sliced_and_padded() {
        let cfg = DeviceOptions::default().device_config().to_le_bytes();
        assert_eq!(config_slice(&cfg, 0, 32), cfg.to_vec());
        assert_eq!(config_slice(&cfg, 0, 4), b"PKAC".to_vec());
        assert_eq!(config_slice(&cfg, 4, 4), 1u32.to_le_bytes().to_vec());
        assert_eq!(config_slice(&cfg, 28, 8), vec![0; 8]);
        assert_eq!(config_slice(&cfg, 100, 4), vec![0; 4]);
        assert_eq!(config_slice(&cfg, u32::MAX, 4), vec![0; 4]);
    }
}
