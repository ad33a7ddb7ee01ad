//! A device file shared by several clients, for the client tests.

use std::collections::VecDeque;
use std::sync::{Condvar, Mutex};
use std::time::Duration;

use pktaccel_abi::{IocCompletion, IocRequest, STATUS_OK};
use pktslab::{ClientError, Transport};

/// One device file shared by every client: completes each request at
/// once with `result = aux`, and hands out completions in order to
/// whichever client reaps first, as the driver does. Like the driver, a
/// waiting reap with nothing queued or in flight fails with `ENOENT`, and
/// a reap with a timeout waits up to that long for a completion.
#[derive(Default)]
pub struct SharedFile {
    /// Completions not reaped yet.
    pub done: Mutex<VecDeque<IocCompletion>>,
    ready: Condvar,
}

impl Transport for &SharedFile {
    unsafe fn submit(&mut self, reqs: &[IocRequest], _flags: u32) -> Result<u32, ClientError> {
        let mut done = self.done.lock().unwrap();
        done.extend(reqs.iter().map(|r| IocCompletion {
            cookie: r.header.cookie,
            status: STATUS_OK,
            len: 0,
            result: u64::from(r.header.aux),
        }));
        self.ready.notify_all();
        Ok(reqs.len() as u32)
    }

    fn reap(&mut self, out: &mut [IocCompletion], timeout_ms: i32) -> Result<usize, ClientError> {
        let mut done = self.done.lock().unwrap();
        if let Ok(ms) = u64::try_from(timeout_ms) {
            let wait = Duration::from_millis(ms);
            done = self
                .ready
                .wait_timeout_while(done, wait, |d| d.is_empty())
                .unwrap()
                .0;
        }
        let n = out.len().min(done.len());
        for (o, c) in out.iter_mut().zip(done.drain(..n)) {
            *o = c;
        }
        match n {
            0 if timeout_ms < 0 => Err(ClientError::Os(libc::ENOENT)),
            _ => Ok(n),
        }
    }
}
