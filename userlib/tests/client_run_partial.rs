//! `Client::run` when the driver accepts only part of a batch (issue 9,
//! defect 9). The old `run` returned the second submit's error at once,
//! ending the buffers' borrows while the accepted requests were still in
//! flight; this double records whether anything was still in flight when
//! `run` returned.

mod common;

use std::collections::VecDeque;

use pktaccel_abi::{IocCompletion, IocRequest, OP_NOP, STATUS_OK};
use pktslab::{Client, ClientError, Pool, Request, Transport};

/// Accepts `accept` requests of the first batch, then fails every submit
/// with `EBUSY`. Completions come out one per reap call, so draining takes
/// several calls.
struct PartialDevice {
    accept: usize,
    calls: usize,
    in_flight: VecDeque<u64>,
}

impl Transport for &mut PartialDevice {
    unsafe fn submit(&mut self, reqs: &[IocRequest], _flags: u32) -> Result<u32, ClientError> {
        self.calls += 1;
        if self.calls > 1 {
            return Err(ClientError::Os(libc::EBUSY));
        }
        let n = self.accept.min(reqs.len());
        self.in_flight
            .extend(reqs[..n].iter().map(|r| r.header.cookie));
        Ok(n as u32)
    }

    fn reap(&mut self, out: &mut [IocCompletion], _timeout_ms: i32) -> Result<usize, ClientError> {
        match self.in_flight.pop_front() {
            Some(cookie) if !out.is_empty() => {
                out[0] = IocCompletion {
                    cookie,
                    status: STATUS_OK,
                    len: 0,
                    result: 0,
                };
                Ok(1)
            }
            _ => Err(ClientError::Os(libc::ENOENT)),
        }
    }
}

fn pool() -> Pool {
    common::synthetic_pool(1 << 30)
}

#[test]
fn run_drains_the_accepted_part_before_returning_the_error() {
    let pool = pool();
    let mut dev = PartialDevice {
        accept: 3,
        calls: 0,
        in_flight: VecDeque::new(),
    };
    {
        let mut client = Client::with_transport(&pool, &mut dev);
        let mut reqs: Vec<_> = (0..8).map(|_| Request::new(OP_NOP)).collect();
        let r = client.run(&mut reqs);
        assert!(
            matches!(r, Err(ClientError::Os(libc::EBUSY))),
            "run should report the failed submit, got {r:?}"
        );
    }
    assert_eq!(dev.calls, 2, "run should have tried the rest of the batch");
    assert!(
        dev.in_flight.is_empty(),
        "run returned with {} accepted requests still in flight",
        dev.in_flight.len()
    );
}

#[test]
fn run_with_everything_accepted_returns_completions_in_order() {
    let pool = pool();
    let mut dev = PartialDevice {
        accept: 8,
        calls: 0,
        in_flight: VecDeque::new(),
    };
    let mut client = Client::with_transport(&pool, &mut dev);
    let mut reqs: Vec<_> = (0..8).map(|_| Request::new(OP_NOP)).collect();
    let comps = client.run(&mut reqs).unwrap();
    assert_eq!(comps.len(), 8);
    assert!(comps.windows(2).all(|w| w[1].cookie == w[0].cookie + 1));
}
