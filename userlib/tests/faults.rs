//! Bad frees through the process heap: each case runs in a child process
//! (this test binary again) that must die with SIGABRT after one
//! glibc-style line naming the call and the pointer.

use std::process::Command;

use pktslab::class::SLAB_SIZE;
use pktslab::global;

mod common;

const CRASH_ENV: &str = "PKTSLAB_TEST_CRASH";

fn crash(case: &str) {
    // SAFETY: deliberately invalid frees; the allocator must abort first.
    unsafe {
        match case {
            "double-free" => {
                let p = global::malloc(37);
                global::free(p, "free");
                global::free(p, "free");
            }
            "interior-free" => {
                let p = global::malloc(64);
                global::free(p.add(16), "free");
            }
            "never-returned" => {
                // A piece boundary in this slab that no malloc ever returned.
                let p = global::malloc(1000) as usize;
                let slab_end = (p | (SLAB_SIZE - 1)) + 1;
                global::free((slab_end - 1024) as *mut u8, "free");
            }
            "cached-never-returned" => {
                // The next piece of the same fresh refill: in this thread's
                // cache, carrying the free key, never handed out.
                let p = global::malloc(1000);
                global::free(p.add(1024), "free");
            }
            "realloc-invalid" => {
                let p = global::malloc(100);
                global::realloc(p.add(32), 300);
            }
            "realloc-freed" => {
                let p = global::malloc(100);
                global::free(p, "free");
                global::realloc(p, 300);
            }
            "large-double-free" => {
                let p = global::malloc_pinned(3 << 20);
                global::free(p, "free");
                global::free(p, "free");
            }
            // A block realloc() moved into a grow slab.
            "grown-double-free" => {
                let p = global::realloc(global::malloc(4096), 16384);
                global::free(p, "free");
                global::free(p, "free");
            }
            "grown-interior-free" => {
                let p = global::realloc(global::malloc(4096), 16384);
                global::free(p.add(4096), "free");
            }
            // The sized path (PktslabAlloc::dealloc): the size picks the
            // bin, the pointer is still checked.
            "sized-double-free" => {
                let p = global::malloc_pinned(100);
                global::free_sized(p, 100, "dealloc");
                global::free_sized(p, 100, "dealloc");
            }
            "sized-interior-free" => {
                let p = global::malloc_pinned(64);
                global::free_sized(p.add(16), 48, "dealloc");
            }
            "sized-never-returned" => {
                let p = global::malloc_pinned(1000);
                global::free_sized(p.add(1024), 1000, "dealloc");
            }
            _ => panic!("unknown case {case}"),
        }
    }
}

fn expect_abort(test: &str, case: &str, line: &str) {
    if let Ok(c) = std::env::var(CRASH_ENV) {
        crash(&c);
        std::process::exit(0);
    }
    let out = Command::new(std::env::current_exe().unwrap())
        .args([test, "--exact", "--nocapture", "--test-threads=1"])
        .env(CRASH_ENV, case)
        .output()
        .unwrap();
    let err = common::aborted_stderr(&out, case);
    let l = err
        .lines()
        .find(|l| l.starts_with("pktslab: "))
        .unwrap_or("");
    assert!(l.starts_with(line), "case {case}: got {l:?}, want {line:?}");
    assert!(l.contains(" 0x"), "names the pointer: {l}");
}

#[test]
fn double_free_aborts() {
    expect_abort(
        "double_free_aborts",
        "double-free",
        "pktslab: free(): double free of 0x",
    );
}

#[test]
fn interior_pointer_free_aborts() {
    expect_abort(
        "interior_pointer_free_aborts",
        "interior-free",
        "pktslab: free(): invalid pointer 0x",
    );
}

#[test]
fn free_of_never_returned_piece_aborts() {
    expect_abort(
        "free_of_never_returned_piece_aborts",
        "never-returned",
        "pktslab: free(): invalid pointer 0x",
    );
}

#[test]
fn free_of_a_cached_piece_never_returned_aborts() {
    expect_abort(
        "free_of_a_cached_piece_never_returned_aborts",
        "cached-never-returned",
        "pktslab: free(): double free of 0x",
    );
}

#[test]
fn realloc_of_invalid_pointer_aborts() {
    expect_abort(
        "realloc_of_invalid_pointer_aborts",
        "realloc-invalid",
        "pktslab: realloc(): invalid pointer 0x",
    );
}

#[test]
fn realloc_of_freed_pointer_aborts() {
    expect_abort(
        "realloc_of_freed_pointer_aborts",
        "realloc-freed",
        "pktslab: realloc(): use after free of 0x",
    );
}

#[test]
fn large_double_free_aborts() {
    expect_abort(
        "large_double_free_aborts",
        "large-double-free",
        "pktslab: free(): double free of 0x",
    );
}

#[test]
fn sized_double_free_aborts() {
    expect_abort(
        "sized_double_free_aborts",
        "sized-double-free",
        "pktslab: dealloc(): double free of 0x",
    );
}

#[test]
fn sized_interior_pointer_free_aborts() {
    expect_abort(
        "sized_interior_pointer_free_aborts",
        "sized-interior-free",
        "pktslab: dealloc(): invalid pointer 0x",
    );
}

#[test]
fn sized_free_of_a_cached_piece_never_returned_aborts() {
    expect_abort(
        "sized_free_of_a_cached_piece_never_returned_aborts",
        "sized-never-returned",
        "pktslab: dealloc(): double free of 0x",
    );
}

#[test]
fn grown_block_double_free_aborts() {
    expect_abort(
        "grown_block_double_free_aborts",
        "grown-double-free",
        "pktslab: free(): double free of 0x",
    );
}

#[test]
fn grown_block_interior_free_aborts() {
    expect_abort(
        "grown_block_interior_free_aborts",
        "grown-interior-free",
        "pktslab: free(): invalid pointer 0x",
    );
}
