//! The client's own cost per request, over a transport that completes
//! everything at once (no device, no syscall): what the client adds on
//! top of the ioctls. Ignored by default; run in release:
//! `cargo test --release -p pktslab --test client_cost -- --ignored --nocapture`
//! (under `flock /work/bench.lock`). The file compiles against the client
//! before the router too, for a before/after.

mod common;

use std::hint::black_box;
use std::time::Instant;

use pktaccel_abi::{IocCompletion, IocRequest, OP_NOP, STATUS_OK};
use pktslab::{Client, ClientError, Request, Transport};

/// Completes every request at submit; reap hands them back in order.
#[derive(Default)]
struct Instant0 {
    done: Vec<IocCompletion>,
}

impl Transport for &mut Instant0 {
    unsafe fn submit(&mut self, reqs: &[IocRequest], _flags: u32) -> Result<u32, ClientError> {
        self.done.extend(reqs.iter().map(|r| IocCompletion {
            cookie: r.header.cookie,
            status: STATUS_OK,
            len: 0,
            result: 0,
        }));
        Ok(reqs.len() as u32)
    }

    fn reap(&mut self, out: &mut [IocCompletion], _timeout_ms: i32) -> Result<usize, ClientError> {
        let n = out.len().min(self.done.len());
        out[..n].copy_from_slice(&self.done[..n]);
        self.done.drain(..n);
        Ok(n)
    }
}

/// Nanoseconds per request of `run` with batches of `batch`, best of 7.
fn ns_per_request(batch: usize) -> f64 {
    let pool = common::synthetic_pool(1 << 30);
    let buf = pool.alloc(256).unwrap();
    let mut dev = Instant0::default();
    let mut client = Client::with_transport(&pool, &mut dev);
    let rounds = 200_000 / batch;
    let mut best = f64::MAX;
    for _ in 0..7 {
        let t = Instant::now();
        for _ in 0..rounds {
            let mut reqs: Vec<_> = (0..batch)
                .map(|_| Request::new(OP_NOP).input(&buf).unwrap())
                .collect();
            black_box(client.run(&mut reqs).unwrap());
        }
        best = best.min(t.elapsed().as_nanos() as f64 / (rounds * batch) as f64);
    }
    best
}

#[test]
#[ignore = "a measurement; run in release under the bench lock"]
fn client_cost_per_request() {
    for batch in [1, 32] {
        println!(
            "client_cost batch={batch}: {:.1} ns/request",
            ns_per_request(batch)
        );
    }
}
