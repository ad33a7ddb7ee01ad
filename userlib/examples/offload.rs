//! End-to-end check for the guest: a buffer from plain `malloc` (the
//! process heap that `LD_PRELOAD=libpktslab.so` gives unmodified programs)
//! is handed to the device by physical address, and the device's results
//! are compared with software ones.
//!
//! `cargo run -p pktslab --example offload` (exit 0 = results right,
//! 1 = wrong result, 2 = no device here).

use pktaccel_abi::{OP_COPY, OP_CSUM, OP_NOP, STATUS_OK, status_name};
use pktaccel_testvectors::soft::inet_csum;
use pktslab::{Client, Pool, Request, global};

fn main() {
    let pool = match Pool::global() {
        Ok(p) => p,
        Err(e) => {
            eprintln!("offload: {e}");
            std::process::exit(2);
        }
    };
    println!("offload: backend {}", pool.mode().name());
    let mut client = match Client::open(&pool) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("offload: {e}");
            std::process::exit(2);
        }
    };
    let len = 9000;
    let src = global::malloc(len);
    let dst = global::malloc(len);
    assert!(!src.is_null() && !dst.is_null());
    // SAFETY: both are live blocks of `len` bytes, distinct.
    let (s, d) = unsafe {
        (
            std::slice::from_raw_parts_mut(src, len),
            std::slice::from_raw_parts_mut(dst, len),
        )
    };
    for (i, b) in s.iter_mut().enumerate() {
        *b = (i * 7 + 3) as u8;
    }
    d.fill(0);
    let ph = pool
        .v2p(src)
        .expect("malloc'ed buffer has a physical address");
    println!(
        "offload: src {src:p} -> phys {:#x} ({} bytes contiguous)",
        ph.addr, ph.contig
    );
    let mut reqs = vec![
        Request::new(OP_NOP),
        Request::new(OP_CSUM).input(s).unwrap(),
        Request::new(OP_COPY).input(s).unwrap().output(d).unwrap(),
    ];
    let comps = match client.run(&mut reqs) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("offload: submit failed: {e}");
            std::process::exit(1);
        }
    };
    drop(reqs);
    let mut ok = true;
    for (name, c) in ["nop", "csum", "copy"].iter().zip(&comps) {
        println!(
            "offload: {name}: status {} len {} result {:#x}",
            status_name(c.status),
            c.len,
            c.result
        );
        ok &= c.status == STATUS_OK;
    }
    // SAFETY: the device finished with both buffers (completions reaped).
    let (s, d) = unsafe {
        (
            std::slice::from_raw_parts(src, len),
            std::slice::from_raw_parts(dst, len),
        )
    };
    if comps[1].result != u64::from(inet_csum(0, &[s])) {
        eprintln!(
            "offload: csum {:#x}, software {:#x}",
            comps[1].result,
            inet_csum(0, &[s])
        );
        ok = false;
    }
    if s != d {
        eprintln!("offload: copy differs");
        ok = false;
    }
    // SAFETY: live blocks freed once.
    unsafe {
        global::free(src, "free");
        global::free(dst, "free");
    }
    println!("offload: {}", if ok { "ok" } else { "FAILED" });
    std::process::exit(if ok { 0 } else { 1 });
}
