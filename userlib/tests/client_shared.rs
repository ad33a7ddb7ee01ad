//! Several clients on one device file: libpktcrc's, the OpenSSL
//! provider's and the program's own, or one per thread. REAP returns any
//! of the file's completions, so before the router each client numbered
//! its cookies from 1 and one could reap another's completion and drop it
//! or take it for its own request. Every completion must reach the request
//! that submitted it, with that request's result.

mod common;
#[path = "common/shared_file.rs"]
mod shared_file;

use pktaccel_abi::OP_NOP;
use pktslab::{Client, ClientError, Pool, Request};
use shared_file::SharedFile;

fn pool() -> Pool {
    common::synthetic_pool(1 << 30)
}

#[test]
fn two_clients_in_one_thread_each_reap_their_own() {
    let pool = pool();
    let file = SharedFile::default();
    let mut a = Client::with_transport(&pool, &file);
    let mut b = Client::with_transport(&pool, &file);
    // SAFETY: the requests have no buffers.
    let cb = unsafe { b.submit(&[Request::new(OP_NOP).aux(20)]) }.unwrap();
    // SAFETY: as above.
    let ca = unsafe { a.submit(&[Request::new(OP_NOP).aux(10)]) }.unwrap();
    assert_ne!(ca, cb, "two clients of one file gave the same cookie");
    // A reaps first and meets B's completion on the way.
    let got = a.reap(4, -1).unwrap();
    assert_eq!(got.len(), 1, "A got {got:?}");
    assert_eq!((got[0].cookie, got[0].result), (ca[0], 10));
    let got = b.reap(4, -1).unwrap();
    assert_eq!(got.len(), 1, "B got {got:?}");
    assert_eq!((got[0].cookie, got[0].result), (cb[0], 20));
}

#[test]
fn a_run_does_not_take_another_clients_completion() {
    let pool = pool();
    let file = SharedFile::default();
    let mut a = Client::with_transport(&pool, &file);
    let mut b = Client::with_transport(&pool, &file);
    // B submits and has not reaped yet; A runs (as libpktcrc's crc32 does
    // while the provider's request is in flight).
    // SAFETY: the request has no buffers.
    let cb = unsafe { b.submit(&[Request::new(OP_NOP).aux(7)]) }.unwrap();
    for round in 0..3u32 {
        let mut reqs: Vec<_> = (0..3)
            .map(|i| Request::new(OP_NOP).aux(100 * round + i))
            .collect();
        let comps = a.run(&mut reqs).unwrap();
        let results: Vec<u64> = comps.iter().map(|c| c.result).collect();
        let want: Vec<u64> = (0..3).map(|i| u64::from(100 * round + i)).collect();
        assert_eq!(results, want, "round {round}");
        // SAFETY: no buffers.
        unsafe { b.submit(&[Request::new(OP_NOP).aux(1000 + round)]) }.unwrap();
    }
    let mut got = Vec::new();
    while got.len() < 4 {
        got.extend(b.reap(8, -1).unwrap());
    }
    let results: Vec<u64> = got.iter().map(|c| c.result).collect();
    assert_eq!(results, vec![7, 1000, 1001, 1002]);
    assert_eq!(got[0].cookie, cb[0]);
}

#[test]
fn threads_with_their_own_clients_on_one_file_get_their_own_results() {
    let pool = pool();
    let file = SharedFile::default();
    let threads = 4u32;
    let rounds = 2000u32;
    std::thread::scope(|s| {
        for t in 0..threads {
            let (pool, file) = (&pool, &file);
            s.spawn(move || {
                let mut c = Client::with_transport(pool, file);
                for i in 0..rounds {
                    let n = 1 + (i % 4);
                    let aux = |k: u32| t << 24 | i << 2 | k;
                    let mut reqs: Vec<_> =
                        (0..n).map(|k| Request::new(OP_NOP).aux(aux(k))).collect();
                    let comps = c
                        .run(&mut reqs)
                        .unwrap_or_else(|e| panic!("thread {t} round {i}: {e}"));
                    for (k, comp) in comps.iter().enumerate() {
                        assert_eq!(
                            comp.result,
                            u64::from(aux(k as u32)),
                            "thread {t} round {i} request {k} got another request's completion"
                        );
                    }
                }
            });
        }
    });
    assert!(
        file.done.lock().unwrap().is_empty(),
        "completions left unreaped"
    );
}

#[test]
fn a_client_with_nothing_in_flight_does_not_take_others_completions() {
    let pool = pool();
    let file = SharedFile::default();
    let mut a = Client::with_transport(&pool, &file);
    let mut b = Client::with_transport(&pool, &file);
    // SAFETY: no buffers.
    unsafe { b.submit(&[Request::new(OP_NOP).aux(5)]) }.unwrap();
    let r = a.reap(4, 0);
    assert!(
        matches!(r, Err(ClientError::Os(libc::ENOENT))),
        "A has nothing in flight and got {r:?}"
    );
    assert_eq!(b.reap(4, -1).unwrap()[0].result, 5);
}

/// A file where, as when another client keeps reaping this one's
/// completions and posting them a moment later, every completion is
/// preceded by a few `ENOENT`s (nothing queued or in flight for the
/// driver), handed out one per reap.
#[derive(Default)]
struct OthersReapFirst {
    done: std::collections::VecDeque<pktaccel_abi::IocCompletion>,
    enoents_left: u32,
}

impl pktslab::Transport for &mut OthersReapFirst {
    unsafe fn submit(
        &mut self,
        reqs: &[pktaccel_abi::IocRequest],
        _flags: u32,
    ) -> Result<u32, ClientError> {
        self.done
            .extend(reqs.iter().map(|r| pktaccel_abi::IocCompletion {
                cookie: r.header.cookie,
                result: u64::from(r.header.aux),
                ..Default::default()
            }));
        Ok(reqs.len() as u32)
    }

    fn reap(
        &mut self,
        out: &mut [pktaccel_abi::IocCompletion],
        _timeout_ms: i32,
    ) -> Result<usize, ClientError> {
        if self.enoents_left > 0 || self.done.is_empty() {
            self.enoents_left = self.enoents_left.saturating_sub(1);
            return Err(ClientError::Os(libc::ENOENT));
        }
        self.enoents_left = 3;
        out[0] = self.done.pop_front().unwrap();
        Ok(1)
    }
}

#[test]
fn a_long_run_waits_up_to_a_second_for_each_completion_not_for_all() {
    let pool = pool();
    let file = SharedFile::default();
    // Another client is live on the file, so an ENOENT may mean mail.
    let _other = Client::with_transport(&pool, &file);
    let mut dev = OthersReapFirst {
        enoents_left: 3,
        ..Default::default()
    };
    let mut c = Client::with_transport(&pool, &mut dev);
    // 400 completions, 3 short waits each: 1200 ms of waiting in all, a
    // few ms for any one of them.
    let mut reqs: Vec<_> = (0..400).map(|i| Request::new(OP_NOP).aux(i)).collect();
    let comps = c
        .run(&mut reqs)
        .expect("a run gave up although every completion came within ms");
    assert!(comps.iter().enumerate().all(|(i, c)| c.result == i as u64));
}
