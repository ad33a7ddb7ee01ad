//! The vhost-user backend: what QEMU negotiates with (features, protocol
//! features, queue count, config space) and the per-queue worker that pulls
//! requests off a virtqueue and completes them.
//!
//! Threading: queue `i` is served by worker thread `i`
//! ([`VhostUserBackend::queues_per_thread`] returns one bit per thread), so
//! queues never contend; each worker has its own scratch buffers and stats
//! shard. Key slots are the only state shared between queues.

use std::io;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use pktaccel_abi::VIRTIO_F_VERSION_1;
use tracing::warn;
use vhost::vhost_user::message::VhostUserProtocolFeatures;
use vhost_user_backend::{VhostUserBackend, VringRwLock, VringT};
use virtio_queue::QueueT;
use vm_memory::{Bytes, GuestAddress, GuestAddressSpace, GuestMemoryAtomic, GuestMemoryMmap};
use vmm_sys_util::epoll::EventSet;
use vmm_sys_util::event::{
    EventConsumer, EventFlag, EventNotifier, new_event_consumer_and_notifier,
};

use crate::config::DeviceOptions;
use crate::faults::Faults;

/// virtio: the driver does not want used-buffer notifications.
const VRING_AVAIL_F_NO_INTERRUPT: u16 =
    virtio_bindings::bindings::virtio_ring::VRING_AVAIL_F_NO_INTERRUPT as u16;
use crate::request::{Processor, Scratch};
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
    acked: AtomicU64,
    negotiated: AtomicBool,
    scratch: Vec<Mutex<Scratch>>,
    stats: Arc<Stats>,
    faults: Arc<Faults>,
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
        Self::with_faults(opts, mem, stats, Arc::new(Faults::new()))
    }

    /// [`new`](Self::new) with `faults` injected into its request path.
    pub fn with_faults(
        opts: DeviceOptions,
        mem: GuestMem,
        stats: Arc<Stats>,
        faults: Arc<Faults>,
    ) -> Self {
        let processor = Processor::new(
            opts.ops,
            opts.max_segments,
            opts.max_request_bytes,
            opts.key_slots,
        );
        let scratch = (0..opts.num_queues)
            .map(|_| Mutex::new(Scratch::default()))
            .collect();
        Self {
            inner: Arc::new(Inner {
                opts,
                processor,
                mem,
                event_idx: AtomicBool::new(false),
                acked: AtomicU64::new(0),
                negotiated: AtomicBool::new(false),
                scratch,
                stats,
                faults,
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

    /// Polls `vring` for up to `budget` after it ran empty, processing
    /// whatever arrives (each arrival restarts the budget). This is the
    /// device's answer to back-to-back batches: no kick, no wake-up.
    fn poll_queue(&self, vring: &Vring, queue: usize, budget: Duration) {
        if budget.is_zero() {
            return;
        }
        let mut since = Instant::now();
        let mut spins = 0u32;
        loop {
            if self.has_work(vring) {
                if self.process_queue(vring, queue) == 0 {
                    // The avail index is ahead but nothing can be popped (a
                    // driver bug, e.g. an index more than a ring ahead):
                    // stop polling rather than spin on it.
                    return;
                }
                since = Instant::now();
                continue;
            }
            spins += 1;
            // Reading the clock costs more than a pause: check it sparingly.
            if spins.is_multiple_of(64) && since.elapsed() >= budget {
                return;
            }
            std::hint::spin_loop();
        }
    }

    /// True when the driver made requests available that were not taken yet.
    fn has_work(&self, vring: &Vring) -> bool {
        let mem = self.inner.mem.memory();
        let state = vring.get_ref();
        let q = state.get_queue();
        if !q.ready() || !state.is_enabled() {
            return false;
        }
        q.avail_idx(&*mem, Ordering::Acquire)
            .map(|idx| idx.0 != q.next_avail())
            .unwrap_or(false)
    }

    /// Completes every available request on `vring`; returns how many.
    /// Guest faults are answered and counted, never returned as errors: an
    /// error here would end the queue's worker thread.
    pub fn process_queue(&self, vring: &Vring, queue: usize) -> usize {
        let inner = &*self.inner;
        let stats = inner.stats.shard(queue);
        let mut scratch = inner.scratch[queue.min(inner.scratch.len() - 1)]
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let mem = inner.mem.memory();
        let mut state = vring.get_mut();
        let qidx = queue as u16;
        if inner.faults.spurious_interrupt(qidx) {
            // Before anything new is on the used ring: nothing to find.
            let _ = state.signal_used_queue();
        }
        let done = inner.processor.drain_with_faults(
            state.get_queue_mut(),
            &*mem,
            &mut scratch,
            stats,
            &inner.faults,
            qidx,
        );
        if done > 0 {
            let q = state.get_queue_mut();
            let notify = if q.event_idx_enabled() {
                q.needs_notification(&*mem).unwrap_or(true)
            } else {
                // virtio-queue does not implement VRING_AVAIL_F_NO_INTERRUPT;
                // honour it here (a polling driver sets it).
                let flags: u16 = mem
                    .load(GuestAddress(q.avail_ring()), Ordering::Acquire)
                    .map(u16::from_le)
                    .unwrap_or(0);
                flags & VRING_AVAIL_F_NO_INTERRUPT == 0
            };
            let notify = notify && !inner.faults.lose_interrupt(qidx);
            if notify && let Err(e) = state.signal_used_queue() {
                warn!(queue, error = %e, "failed to signal the used queue");
            }
        }
        done
    }
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
        self.inner.acked.store(features, Ordering::Relaxed);
        self.inner.negotiated.store(true, Ordering::Relaxed);
    }

    fn protocol_features(&self) -> VhostUserProtocolFeatures {
        self.inner.negotiated.store(true, Ordering::Relaxed);
        VhostUserProtocolFeatures::CONFIG | VhostUserProtocolFeatures::MQ
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
        Ok(())
    }

    fn set_event_idx(&self, enabled: bool) {
        self.inner.event_idx.store(enabled, Ordering::Relaxed);
    }

    fn get_config(&self, offset: u32, size: u32) -> Vec<u8> {
        config_slice(&self.inner.opts.device_config().to_le_bytes(), offset, size)
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
            Ok(pair) => Some(pair),
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
        let queue = thread_id;
        let poll = Duration::from_micros(u64::from(self.inner.opts.poll_us));
        if self.inner.event_idx.load(Ordering::Relaxed) {
            // Keep going until no new request arrived while notifications
            // were off, so that none is left unseen.
            loop {
                let _ = vring.disable_notification();
                self.process_queue(vring, queue);
                self.poll_queue(vring, queue, poll);
                match vring.enable_notification() {
                    Ok(true) => continue,
                    Ok(false) => break,
                    Err(e) => {
                        warn!(queue, error = %e, "cannot re-enable notifications");
                        break;
                    }
                }
            }
        } else {
            self.process_queue(vring, queue);
            self.poll_queue(vring, queue, poll);
        }
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
