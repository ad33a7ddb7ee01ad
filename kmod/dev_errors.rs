// SPDX-License-Identifier: GPL-2.0
//! What a faulty (or hostile) device hands back that the driver refuses:
//! used elements naming no request in flight or one the device has not
//! answered (`drain_queue` skips those), and status records claiming
//! more output than their request has. Each is counted in debugfs and
//! logged at most once per 5 s, so a device that keeps doing it cannot
//! flood the log. A child module of `dev`, so it works on the device
//! state's private fields directly.

use super::*;

/// Whether a log line rate-limited to one per 5 s is due, given when the
/// last one was printed; if so, `last` becomes now.
pub(super) fn due(last: &mut Option<Instant<Monotonic>>) -> bool {
    let due = last
        .as_ref()
        .is_none_or(|t| t.elapsed().as_millis() >= 5000);
    if due {
        *last = Some(Instant::now());
    }
    due
}

impl DeviceState {
    /// Counts `n` used elements of queue `q` that completed no request
    /// (`id`, the last, is logged): ids not in flight, or naming a request
    /// whose status record the device has not written.
    pub(super) fn bogus_used(&self, q: usize, id: u32, n: u64) {
        let total = self.stats.bogus_used.fetch_add(n, Relaxed) + n;
        if due(&mut self.hw.lock().bogus_logged) {
            dev_warn!(
                self.pdev.as_ref(),
                "queue {}: device completed descriptor {} which is not in flight or not answered ({} such used entries so far; debugfs bogus_used)\n",
                q,
                id,
                total
            );
        }
    }

    /// The status record of `inf`, or `STATUS_DEVICE_ERROR` if it claims
    /// more output bytes than the request gave the device (`out_len`,
    /// recorded at submit): user space trusting that length would read
    /// past its buffer. That is counted (`bad_status_len`) and logged. A
    /// record the device never wrote fails too, uncounted: `drain_queue`
    /// never delivers one, this keeps the marker from user space whatever
    /// the path.
    pub(super) fn checked_status(
        &self,
        inf: &InFlight,
        st: abi::StatusRecord,
    ) -> abi::StatusRecord {
        let bad = abi::StatusRecord {
            status: abi::STATUS_DEVICE_ERROR,
            ..Default::default()
        };
        if st.status == STATUS_UNWRITTEN {
            return bad;
        }
        if st.len <= inf.out_len {
            return st;
        }
        let total = self.stats.bad_status_len.fetch_add(1, Relaxed) + 1;
        if due(&mut self.hw.lock().bad_len_logged) {
            dev_warn!(
                self.pdev.as_ref(),
                "request {:#x} ({}): the device's status record claims {} output bytes, more output than the request has ({}); failed with STATUS_DEVICE_ERROR ({} such so far; debugfs bad_status_len)\n",
                inf.cookie,
                abi::op_name(inf.op),
                st.len,
                inf.out_len,
                total
            );
        }
        bad
    }
}
