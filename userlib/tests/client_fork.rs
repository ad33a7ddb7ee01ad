//! A forked child does not wait for, or get, completions of requests its
//! parent submitted: in device mode libpktslab reopens the device in the
//! child (a new file with nothing in flight), so a client the child
//! inherited must start over with nothing outstanding, and mail its
//! parent's clients had not collected yet is not the child's. Its own file
//! (one test) so no other test thread is running at the fork.

mod common;
#[path = "common/shared_file.rs"]
mod shared_file;

use pktaccel_abi::OP_NOP;
use pktslab::{Client, ClientError, Request};
use shared_file::SharedFile;

/// To stderr itself: the test harness's capture does not reach the parent.
fn say(msg: &str) {
    // SAFETY: writes a live buffer; a failed write is ignored.
    unsafe { libc::write(2, msg.as_ptr().cast(), msg.len()) };
}

#[test]
fn a_forked_child_gets_none_of_its_parents_completions() {
    let pool = common::synthetic_pool(1 << 30);
    let file = SharedFile::default();
    let mut a = Client::with_transport(&pool, &file);
    let mut b = Client::with_transport(&pool, &file);
    // SAFETY: the requests have no buffers.
    unsafe { a.submit(&[Request::new(OP_NOP).aux(1), Request::new(OP_NOP).aux(3)]) }.unwrap();
    // SAFETY: as above.
    unsafe { b.submit(&[Request::new(OP_NOP).aux(2)]) }.unwrap();
    // B reaps one: A's first completion comes first (posted to A's box).
    let got = b.reap(1, -1).unwrap();
    assert_eq!(got.len(), 1);
    // SAFETY: fork in a test binary with one test; the child only runs
    // the client and leaves with _exit.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed");
    if pid == 0 {
        let code = match a.reap(4, -1) {
            Err(ClientError::Os(libc::ENOENT)) => 0,
            Ok(c) => {
                say(&format!("child reaped its parent's completions {c:?}\n"));
                1
            }
            Err(e) => {
                say(&format!("child: {e}\n"));
                2
            }
        };
        // SAFETY: ends the child without running the parent's exit hooks.
        unsafe { libc::_exit(code) };
    }
    let mut status = 0;
    // SAFETY: waits for our own child.
    assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "the child waited for or got its parent's completions (status {status:#x})"
    );
    // The parent still gets all of its own.
    let mut mine = Vec::new();
    while mine.len() < 2 {
        mine.extend(a.reap(4, -1).unwrap().iter().map(|c| c.result));
    }
    assert_eq!(mine, vec![1, 3]);
}
