//! This whole test binary, harness included, runs on pktslab through
//! `#[global_allocator]`: every Vec, String, HashMap and thread the tests
//! and the test harness create lives in pinned slabs.

use std::collections::HashMap;

use pktslab::{PktslabAlloc, V2pError};

#[global_allocator]
static ALLOC: PktslabAlloc = PktslabAlloc;

#[test]
fn std_collections_live_in_the_arena() {
    let v: Vec<u64> = (0..10_000).collect();
    assert!(pktslab::v2p(v.as_ptr().cast()).is_ok());
    let s = "x".repeat(3 << 20);
    assert!(pktslab::v2p(s.as_ptr()).is_ok(), "large allocations too");
    let local = 1u8;
    assert_eq!(pktslab::v2p(&local), Err(V2pError::OutsideArena));
    let mut m = HashMap::new();
    for i in 0..50_000u32 {
        m.insert(i, i.to_string());
    }
    for i in (0..50_000u32).step_by(3) {
        m.remove(&i);
    }
    assert_eq!(m.len(), 33_333);
    assert_eq!(m[&1], "1");
}

#[test]
fn over_aligned_types_are_aligned() {
    #[repr(align(4096))]
    struct Page(#[allow(dead_code)] [u8; 4096]);
    #[repr(align(64))]
    struct Line(#[allow(dead_code)] [u8; 64]);
    let pages: Vec<Box<Page>> = (0..20).map(|_| Box::new(Page([1; 4096]))).collect();
    for p in &pages {
        assert_eq!(&**p as *const Page as usize % 4096, 0);
    }
    let lines: Vec<Line> = (0..1000).map(|_| Line([2; 64])).collect();
    assert_eq!(lines.as_ptr() as usize % 64, 0);
    let mut grow: Vec<Line> = Vec::new();
    for _ in 0..5000 {
        grow.push(Line([3; 64]));
        assert_eq!(
            grow.as_ptr() as usize % 64,
            0,
            "realloc keeps over-alignment"
        );
    }
}

#[test]
fn threads_allocate_and_free_each_others_strings() {
    let (tx, rx) = std::sync::mpsc::channel::<Vec<String>>();
    let producers: Vec<_> = (0..3)
        .map(|t| {
            let tx = tx.clone();
            std::thread::spawn(move || {
                for r in 0..200 {
                    tx.send(
                        (0..100)
                            .map(|i| format!("{t}-{r}-{i}-{}", "y".repeat(i % 50)))
                            .collect(),
                    )
                    .unwrap();
                }
            })
        })
        .collect();
    drop(tx);
    let mut n = 0;
    for batch in rx {
        assert!(
            batch
                .iter()
                .enumerate()
                .all(|(i, s)| s.ends_with(&"y".repeat(i % 50)))
        );
        n += batch.len();
    }
    for p in producers {
        p.join().unwrap();
    }
    assert_eq!(n, 3 * 200 * 100);
}
