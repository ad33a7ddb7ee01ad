//! [`Client::run`]: any number of requests, submitted in pieces and all
//! reaped before it returns, and the bookkeeping of their completions.

use std::time::{Duration, Instant};

use pktaccel_abi::{IocCompletion, MAX_BATCH};

use super::router::{SEQ_BITS, SEQ_MASK};
use super::{Built, Client, ClientError, Request, Transport};

impl<T: Transport> Client<'_, T> {
    /// Submits any number of requests and waits for all of their
    /// completions, returned in request order. The borrows of the buffers
    /// last until then, so this is safe. Batches above `MAX_BATCH` go in
    /// pieces, reaping between them so the driver's completion ring never
    /// fills. When the driver takes only part and then fails, the part it
    /// took is still reaped before the error returns: the device may write
    /// into those buffers until it completes them.
    pub fn run(&mut self, reqs: &mut [Request<'_>]) -> Result<Vec<IocCompletion>, ClientError> {
        if reqs.is_empty() {
            return Err(ClientError::BatchSize(0));
        }
        if self.route.refresh() {
            self.outstanding = 0;
        }
        let batches = reqs
            .chunks(MAX_BATCH as usize)
            .enumerate()
            .map(|(i, chunk)| self.build_for(chunk, i * MAX_BATCH as usize))
            .collect::<Result<Vec<_>, _>>()?;
        let mut flight = InFlight::new(batches[0].reqs[0].header.cookie, reqs.len());
        let failed = self.submit_all(&batches, &mut flight).err();
        let drained = self.drain(&mut flight);
        if let Some(e) = failed {
            return Err(e);
        }
        drained?;
        Ok(flight
            .got
            .into_iter()
            .map(Option::unwrap_or_default)
            .collect())
    }

    /// Submits every request of `batches`, reaping between pieces.
    fn submit_all(&mut self, batches: &[Built], flight: &mut InFlight) -> Result<(), ClientError> {
        let per = MAX_BATCH as usize;
        while flight.accepted < flight.got.len() {
            let b = &batches[flight.accepted / per];
            let at = Instant::now();
            // SAFETY: `batches` holds the segment arrays through the call;
            // the buffers are borrowed by `run`'s requests, and `run` reaps
            // every accepted request (`drain`) before those borrows end, or
            // aborts the process.
            let sent = unsafe {
                self.transport
                    .submit(&b.reqs[flight.accepted % per..], b.flags)
            };
            match sent? {
                0 => return Err(ClientError::Os(libc::EAGAIN)),
                n => flight.accept(n as usize, at),
            }
            if flight.accepted < flight.got.len() {
                self.reap_some(flight)?;
            }
        }
        Ok(())
    }

    /// Reaps until every accepted request has completed. Returns early only
    /// when the driver says nothing is in flight (`ENOENT`).
    fn drain(&mut self, flight: &mut InFlight) -> Result<(), ClientError> {
        while flight.reaped < flight.accepted {
            self.reap_some(flight)?;
        }
        Ok(())
    }

    /// Waits for at least one completion of `flight` and records what
    /// comes. A signal (`EINTR`) just waits again; `ENOENT` while another
    /// client may hold this one's completions waits for its mail; other
    /// reap errors are retried, and if they persist the process is
    /// aborted: returning would end the buffers' borrows while the device
    /// may still write into them.
    fn reap_some(&mut self, flight: &mut InFlight) -> Result<(), ClientError> {
        let mut out = [IocCompletion::default(); MAX_BATCH as usize];
        let room = (flight.accepted - flight.reaped).clamp(1, out.len());
        match self.reap_once(&mut out[..room], -1) {
            Ok(n) => {
                if n > 0 {
                    // The wait for mail is up to a second at a time, not
                    // for the whole run.
                    flight.idle = 0;
                }
                self.record(flight, &out[..n]);
                Ok(())
            }
            Err(ClientError::Os(libc::ENOENT)) => self.mail_may_come(&mut flight.idle),
            Err(ClientError::Os(libc::EINTR)) => Ok(()),
            Err(e) => {
                flight.failures += 1;
                if flight.failures > 1000 {
                    eprintln!(
                        "pktslab: cannot reap {} requests still in flight ({e}); aborting, as returning would let the device write into freed buffers",
                        flight.accepted - flight.reaped
                    );
                    std::process::abort();
                }
                std::thread::sleep(Duration::from_millis(10));
                Ok(())
            }
        }
    }

    /// Records this client's completions `comps` in `flight` and calls the
    /// latency hook; ones from an earlier [`Client::submit`] are dropped,
    /// as `run` always did, and no longer counted as outstanding.
    fn record(&mut self, flight: &mut InFlight, comps: &[IocCompletion]) {
        let now = Instant::now();
        for c in comps {
            match flight.complete(c) {
                Some(sent) => {
                    if let Some(hook) = self.on_latency.as_mut() {
                        hook(now.duration_since(sent));
                    }
                }
                None => self.outstanding = self.outstanding.saturating_sub(1),
            }
        }
    }
}

/// The requests of one [`Client::run`]: cookies `first..first + n`, how
/// many the driver accepted and when, and the completions so far.
struct InFlight {
    first: u64,
    got: Vec<Option<IocCompletion>>,
    sent_at: Vec<Instant>,
    accepted: usize,
    reaped: usize,
    failures: u32,
    /// `ENOENT`s met while waiting for mail since the last completion.
    idle: u32,
}

impl InFlight {
    fn new(first: u64, n: usize) -> Self {
        Self {
            first,
            got: vec![None; n],
            sent_at: Vec::with_capacity(n),
            accepted: 0,
            reaped: 0,
            failures: 0,
            idle: 0,
        }
    }

    /// The driver took the next `n` requests, submitted `at`.
    fn accept(&mut self, n: usize, at: Instant) {
        let n = n.min(self.got.len() - self.accepted);
        self.sent_at.resize(self.accepted + n, at);
        self.accepted += n;
    }

    /// Records `c` if it is one of ours and new; returns when it was
    /// submitted.
    fn complete(&mut self, c: &IocCompletion) -> Option<Instant> {
        if c.cookie >> SEQ_BITS != self.first >> SEQ_BITS {
            return None;
        }
        let i = (c.cookie.wrapping_sub(self.first) & SEQ_MASK) as usize;
        let slot = self.got[..self.accepted].get_mut(i)?;
        if slot.is_some() {
            return None;
        }
        *slot = Some(*c);
        self.reaped += 1;
        Some(self.sent_at[i])
    }
}
