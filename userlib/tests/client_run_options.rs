//! What the one device client decides for its callers: the queue of every
//! request, the latency hook, batches above `MAX_BATCH`, copy mode.

mod common;

use std::cell::Cell;
use std::time::Duration;

use pktaccel_abi::{IocCompletion, IocRequest, MAX_BATCH, OP_CSUM, OP_NOP, STATUS_OK, SUBMIT_COPY};
use pktslab::{Client, ClientError, CopyMode, Pool, Request, Transport};

/// Completes every request at once; records each submit's queues and flags.
#[derive(Default)]
struct Recorder {
    submits: Vec<(Vec<u32>, u32)>,
    done: Vec<u64>,
}

impl Transport for &mut Recorder {
    unsafe fn submit(&mut self, reqs: &[IocRequest], flags: u32) -> Result<u32, ClientError> {
        self.submits
            .push((reqs.iter().map(|r| r.queue).collect(), flags));
        self.done.extend(reqs.iter().map(|r| r.header.cookie));
        Ok(reqs.len() as u32)
    }

    fn reap(&mut self, out: &mut [IocCompletion], _timeout_ms: i32) -> Result<usize, ClientError> {
        let n = out.len().min(self.done.len());
        for (o, cookie) in out.iter_mut().zip(self.done.drain(..n)) {
            *o = IocCompletion {
                cookie,
                status: STATUS_OK,
                len: 0,
                result: 0,
            };
        }
        Ok(n)
    }
}

fn pool() -> Pool {
    common::synthetic_pool(1 << 30)
}

#[test]
fn the_driver_chooses_the_queue_unless_told_to_spread() {
    let pool = pool();
    let mut dev = Recorder::default();
    let mut client = Client::with_transport(&pool, &mut dev);
    let mut reqs: Vec<_> = (0..4).map(|_| Request::new(OP_NOP)).collect();
    client.run(&mut reqs).unwrap();
    client.spread_over(3);
    client.run(&mut reqs).unwrap();
    drop(client);
    assert_eq!(dev.submits[0].0, vec![u32::MAX; 4]);
    assert_eq!(dev.submits[1].0, vec![0, 1, 2, 0]);
}

#[test]
fn the_latency_hook_sees_every_completion_once() {
    let pool = pool();
    let mut dev = Recorder::default();
    let calls = Cell::new(0usize);
    let mut client = Client::with_transport(&pool, &mut dev);
    client.on_latency(Some(Box::new(|d: Duration| {
        assert!(d < Duration::from_secs(60));
        calls.set(calls.get() + 1);
    })));
    let mut reqs: Vec<_> = (0..5).map(|_| Request::new(OP_NOP)).collect();
    client.run(&mut reqs).unwrap();
    drop(client);
    assert_eq!(calls.get(), 5);
}

#[test]
fn runs_above_max_batch_go_in_pieces_and_come_back_in_order() {
    let pool = pool();
    let mut dev = Recorder::default();
    let n = 2 * MAX_BATCH as usize + 7;
    let mut client = Client::with_transport(&pool, &mut dev);
    client.spread_over(2);
    let mut reqs: Vec<_> = (0..n).map(|_| Request::new(OP_NOP)).collect();
    let comps = client.run(&mut reqs).unwrap();
    drop(client);
    assert_eq!(comps.len(), n);
    assert!(comps.windows(2).all(|w| w[1].cookie == w[0].cookie + 1));
    assert_eq!(dev.submits.len(), 3, "three pieces of at most MAX_BATCH");
    let queues: Vec<u32> = dev.submits.iter().flat_map(|s| s.0.clone()).collect();
    assert!(queues.iter().enumerate().all(|(i, &q)| q == i as u32 % 2));
}

#[test]
fn copy_mode_always_bounces_pinned_buffers_too() {
    let pool = pool();
    let b = pool.alloc(64).unwrap();
    let mut dev = Recorder::default();
    let mut client = Client::with_transport(&pool, &mut dev);
    let mut reqs = [Request::new(OP_CSUM).input(&b).unwrap()];
    client.run(&mut reqs).unwrap();
    client.copy_mode(CopyMode::Always);
    client.run(&mut reqs).unwrap();
    assert_eq!(client.copy_fallbacks(), 0);
    drop(client);
    assert_eq!(dev.submits[0].1 & SUBMIT_COPY, 0);
    assert_eq!(dev.submits[1].1 & SUBMIT_COPY, SUBMIT_COPY);
}
