//! The host backend in a forked child: a slab the child pins (lazily, on
//! its first v2p) must get the child's physical addresses, read from the
//! child's own /proc/self/pagemap, not the parent's descriptor (which
//! reads the parent's page table: after copy on write, the parent's
//! frame). Its own file (one test) so no other test thread runs at the
//! fork. Needs real PFNs in pagemap (CAP_SYS_ADMIN); skipped otherwise.

use pktslab::{BackendChoice, BackendMode, Config, Pool};

const PAGE: usize = 4096;

/// To stderr itself: the test harness's capture does not reach the child.
fn say(msg: &str) {
    // SAFETY: writes a live buffer; a failed write is ignored.
    unsafe { libc::write(2, msg.as_ptr().cast(), msg.len()) };
}

/// The physical address of the page at `p` in this process's own page
/// table (a descriptor opened now, by this process); 0 if not shown.
fn own_pagemap(p: *const u8) -> u64 {
    // SAFETY: a constant NUL-terminated path.
    let fd = unsafe { libc::open(c"/proc/self/pagemap".as_ptr(), libc::O_RDONLY) };
    if fd < 0 {
        return 0;
    }
    let mut e = 0u64;
    // SAFETY: reads 8 bytes into a local u64 from our own descriptor.
    let n = unsafe { libc::pread(fd, (&raw mut e).cast(), 8, ((p as usize / PAGE) * 8) as i64) };
    // SAFETY: our own descriptor, closed once.
    unsafe { libc::close(fd) };
    if n != 8 || e >> 63 == 0 {
        return 0;
    }
    (e & ((1 << 55) - 1)) * PAGE as u64
}

/// The child's side: break copy on write in `a`, pin it by v2p, compare.
fn child(pool: &Pool, a: *mut u8) -> i32 {
    // SAFETY: `a` is a live allocation of at least one page.
    unsafe { a.write_volatile(0x5a) };
    let got = match pool.v2p(a) {
        Ok(p) => p.addr,
        Err(e) => {
            say(&format!("child: v2p of its heap page failed: {e}\n"));
            return 2;
        }
    };
    let own = own_pagemap(a);
    if got != own {
        say(&format!(
            "child: v2p says {got:#x}, the child's own pagemap {own:#x} (the parent's descriptor was used)\n"
        ));
        return 1;
    }
    0
}

#[test]
fn a_forked_child_pins_with_its_own_pagemap() {
    let pool = Pool::new(Config {
        backend: BackendChoice::Host,
        force_synthetic: false,
        arena_size: 1 << 30,
        ..Default::default()
    })
    .unwrap();
    // The mode probe opens the parent's pagemap descriptor.
    if pool.mode() != BackendMode::HostPagemap {
        eprintln!("skipped: /proc/self/pagemap shows no PFNs here (needs CAP_SYS_ADMIN)");
        return;
    }
    // Above the largest small class: each its own run of slabs.
    let (a, b) = (pool.alloc_raw(3 << 20), pool.alloc_raw(3 << 20));
    assert!(!a.is_null() && !b.is_null());
    // SAFETY: both are live 3 MiB allocations.
    unsafe {
        a.write_bytes(1, PAGE);
        b.write_bytes(2, PAGE);
    }
    // `b`'s slab is pinned in the parent; `a`'s is left for the child.
    let pb = pool.v2p(b).expect("v2p in the parent");
    assert_eq!(pb.addr, own_pagemap(b), "the parent's own v2p is wrong");
    // SAFETY: fork in a test binary with one test; the child only writes
    // its heap, asks v2p and leaves with _exit.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed");
    if pid == 0 {
        let code = child(&pool, a);
        // SAFETY: ends the child without running the parent's exit hooks.
        unsafe { libc::_exit(code) };
    }
    let mut status = 0;
    // SAFETY: waits for our own child.
    assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "the child's v2p did not match its own page table (status {status:#x})"
    );
    // The parent's translation is still its own.
    assert_eq!(pool.v2p(a).unwrap().addr, own_pagemap(a));
}
