// SPDX-License-Identifier: GPL-2.0
//! The device's death: the watchdog that notices a device which stopped
//! completing, the reset, failing (or quarantining) what is in flight, and
//! unbind. A child module of `dev`, so it works on the device state's
//! private fields directly.

use super::*;

impl DeviceState {
    /// The queues (bit `q` for queue `q`) that have had requests in flight
    /// and no completion for longer than `request_timeout_ms`.
    fn stalled_queues(&self, hw: &Hw) -> u64 {
        let limit = i64::from(crate::request_timeout_ms());
        if limit <= 0 || hw.dead {
            return 0;
        }
        let mut mask = 0;
        for (q, qs) in hw.queues.iter().enumerate().take(64) {
            if qs.vq.as_ref().is_some_and(|v| v.in_flight() > 0)
                && qs.last_progress.elapsed().as_millis() > limit
            {
                mask |= 1 << q;
            }
        }
        mask
    }

    /// Whether a queue has had requests in flight and no completion for
    /// longer than `request_timeout_ms`.
    pub(super) fn stalled(&self, hw: &Hw) -> bool {
        self.stalled_queues(hw) != 0
    }

    /// Checks for a device that stopped completing. A stalled queue's used
    /// ring is polled first, under the lock the interrupt thread takes (as
    /// NVMe's timeout handler polls its completion queue): completions
    /// found there mean a lost interrupt, which is delivered, logged
    /// (rate-limited) and counted (`lost_irq_polls`), and the device lives
    /// on. Only a stalled queue whose used ring holds nothing kills it.
    pub(crate) fn watchdog(&self) {
        let stalled = self.stalled_queues(&self.hw.lock());
        if stalled == 0 {
            return;
        }
        let (mut found, mut bogus) = (0, 0u64);
        for q in (0..self.nq).filter(|&q| stalled & (1 << q) != 0) {
            // At most a ring's worth: a device that keeps publishing
            // entries cannot keep the waiter here.
            let (d, t) = self.drain_queue(q, usize::from(self.queue_size));
            found += d;
            if t > 0 && d == 0 {
                bogus |= 1 << q;
            }
        }
        if found > 0 {
            self.lost_interrupt(found);
        }
        self.die_if_stalled(bogus);
    }

    /// Counts and logs (at most once per 5 s) a poll that found `found`
    /// completions no interrupt had announced.
    fn lost_interrupt(&self, found: usize) {
        let total = self.stats.lost_irq_polls.fetch_add(1, Relaxed) + 1;
        if errors::due(&mut self.hw.lock().lost_irq_logged) {
            dev_warn!(
                self.pdev.as_ref(),
                "lost interrupt? completed {} requests by polling the used ring after {} ms without one ({} such polls so far; debugfs lost_irq_polls)\n",
                found,
                crate::request_timeout_ms(),
                total
            );
        }
    }

    /// Declares the device dead if a queue is still stalled and its used
    /// ring holds nothing, checked under the same lock hold that marks it
    /// dead. Entries that arrived since the poll leave it alive (the next
    /// watchdog pass takes them), except on the `bogus` queues (bit `q`),
    /// whose poll took entries that completed none of their requests: a
    /// device flooding a ring with bogus ids does not keep itself alive.
    fn die_if_stalled(&self, bogus: u64) {
        let _death = self.death.lock();
        {
            let mut hw = self.hw.lock();
            let stalled = self.stalled_queues(&hw);
            if stalled == 0 {
                return;
            }
            let pending = hw.queues.iter().enumerate().any(|(q, qs)| {
                (stalled & !bogus) & (1 << q) != 0 && qs.vq.as_ref().is_some_and(Vq::has_used)
            });
            if pending {
                return;
            }
            hw.dead = true;
        }
        self.fail_everything(Some("stopped completing requests"));
    }

    /// Stops the device for good: no new requests, the device is reset
    /// (so it touches no ring or buffer any more), and every request in
    /// flight completes with `STATUS_DEVICE_ERROR`, waking its waiters.
    /// `why` is logged; `None` is an orderly unbind.
    pub(crate) fn declare_dead(&self, why: Option<&str>) {
        // Taken before `dead` is looked at: when another thread is already
        // failing the device, this waits until its reset is over (unbind
        // frees the rings right after).
        let _death = self.death.lock();
        {
            let mut hw = self.hw.lock();
            if hw.dead {
                return;
            }
            hw.dead = true;
        }
        self.fail_everything(why);
    }

    /// The rest of `declare_dead`, once the caller has set `dead`; the
    /// caller holds `death` from before it set `dead`.
    fn fail_everything(&self, why: Option<&str>) {
        if let Some(why) = why {
            dev_err!(
                self.pdev.as_ref(),
                "device {}: resetting it and failing outstanding requests with STATUS_DEVICE_ERROR\n",
                why
            );
        }
        let acked = self.reset_device();
        if !acked {
            self.stats.unacked_resets.add(1, Relaxed);
        }
        let mut quarantined = 0usize;
        loop {
            let inf = {
                let mut hw = self.hw.lock();
                let mut found = None;
                for qs in hw.queues.iter_mut() {
                    if let Some(s) = qs.slots.iter_mut().find(|s| s.is_some()) {
                        found = s.take();
                        break;
                    }
                }
                found
            };
            let Some(mut inf) = inf else { break };
            if !acked {
                // The device may still write to this request's memory:
                // never free it.
                if let Some(b) = inf.bounce.as_mut() {
                    b.quarantine();
                }
                inf.file.quarantine();
                quarantined += 1;
            }
            self.stats.device_errors.add(1, Relaxed);
            let st = abi::StatusRecord {
                status: abi::STATUS_DEVICE_ERROR,
                ..Default::default()
            };
            self.deliver(inf, st);
        }
        if quarantined > 0 {
            dev_err!(
                self.pdev.as_ref(),
                "device did not acknowledge its reset: the memory of {} requests in flight (their slabs and bounce buffers) is quarantined and never reused\n",
                quarantined
            );
        }
        {
            let mut hw = self.hw.lock();
            for qs in hw.queues.iter_mut() {
                if let Some(vq) = qs.vq.as_mut() {
                    vq.reset_state();
                }
            }
        }
        self.space.notify_all();
    }

    /// Resets the device through the (revocable) BAR, waiting up to 100 ms
    /// for it to acknowledge. False if it did not (or could not be asked):
    /// it may still write to memory it was given.
    fn reset_device(&self) -> bool {
        let write = self.bar.try_access().map(|bar| {
            Regs {
                bar: &bar,
                caps: &self.caps,
            }
            .write8(0, common::DEVICE_STATUS)
        });
        if !matches!(write, Some(Ok(()))) {
            return false;
        }
        if crate::test_unacked_reset() {
            return false;
        }
        for _ in 0..1000 {
            let st = self.bar.try_access().map(|bar| {
                Regs {
                    bar: &bar,
                    caps: &self.caps,
                }
                .status()
            });
            match st {
                Some(Ok(0)) => return true,
                None | Some(Err(_)) => return false,
                Some(Ok(_)) => fsleep(Delta::from_micros(100)),
            }
        }
        false
    }

    /// Unbind: stop everything and free the rings while still bound,
    /// unless a reset went unacknowledged: then the device may still use
    /// them, and they are quarantined like the requests' memory.
    pub(crate) fn shutdown(&self) {
        self.declare_dead(None);
        let keep = self.stats.unacked_resets.load(Relaxed) > 0;
        let mut rings = KVec::with_capacity(self.nq, GFP_KERNEL).ok();
        let mut kept = 0usize;
        {
            let mut hw = self.hw.lock();
            for qs in hw.queues.iter_mut() {
                match (qs.vq.take(), rings.as_mut()) {
                    (Some(vq), _) if keep => kept += vq.quarantine(),
                    // Cannot fail: capacity `nq`. On allocation failure
                    // above, the rings are dropped here, under the lock,
                    // which is also fine (freeing coherent memory does
                    // not sleep).
                    (Some(vq), Some(r)) => {
                        let _ = r.push_within_capacity(vq);
                    }
                    _ => {}
                }
            }
        }
        drop(rings);
        if kept > 0 {
            QUARANTINED_TOTAL.fetch_add(kept as u64, Relaxed);
            dev_err!(
                self.pdev.as_ref(),
                "device never acknowledged a reset: its rings ({} bytes) stay allocated and are never reused\n",
                kept
            );
        }
    }
}
