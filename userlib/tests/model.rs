//! Property test: random alloc/free/realloc sequences against a model
//! allocator (a map of live blocks with their expected contents).

use std::collections::BTreeMap;

use proptest::prelude::*;

use pktslab::class::SLAB_SIZE;
use pktslab::{BackendChoice, Config, Pool};

#[derive(Debug, Clone)]
enum Op {
    Alloc(usize),
    Free(usize),
    Realloc(usize, usize),
    Aligned(u32, usize),
}

fn size() -> impl Strategy<Value = usize> {
    prop_oneof![
        8 => 0usize..256,
        4 => 256usize..70_000,
        1 => (SLAB_SIZE / 2 - 8)..(3 * SLAB_SIZE + 100),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => size().prop_map(Op::Alloc),
        3 => any::<usize>().prop_map(Op::Free),
        3 => (any::<usize>(), size()).prop_map(|(i, s)| Op::Realloc(i, s)),
        1 => (5u32..22, size()).prop_map(|(a, s)| Op::Aligned(a, s)),
    ]
}

struct Live {
    len: usize,
    seed: u8,
}

fn pattern(seed: u8, i: usize) -> u8 {
    seed.wrapping_add((i % 253) as u8)
}

/// Every byte of the first 4 KiB, then every 61st: large blocks stay cheap
/// to check in debug builds while any misplaced copy is still caught.
fn checked(len: usize) -> impl Iterator<Item = usize> {
    (0..len.min(4096)).chain((4096..len).step_by(61))
}

fn write(p: *mut u8, len: usize, seed: u8) {
    for i in checked(len) {
        // SAFETY: the block has at least len bytes.
        unsafe { *p.add(i) = pattern(seed, i) };
    }
}

fn verify(p: *mut u8, len: usize, seed: u8) -> bool {
    // SAFETY: the block has at least len bytes.
    checked(len).all(|i| unsafe { *p.add(i) } == pattern(seed, i))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn matches_the_model(ops in proptest::collection::vec(op(), 1..160)) {
        let pool = Pool::new(Config { backend: BackendChoice::Host, arena_size: 4 << 30, ..Default::default() }).unwrap();
        let mut live: BTreeMap<usize, Live> = BTreeMap::new();
        let mut seed = 1u8;
        for op in ops {
            seed = seed.wrapping_add(17);
            match op {
                Op::Alloc(n) | Op::Aligned(_, n) => {
                    let align = if let Op::Aligned(a, _) = op { 1usize << a } else { 16 };
                    let p = if align > 16 { pool.alloc_aligned_raw(align, n) } else { pool.alloc_raw(n) };
                    prop_assert!(!p.is_null());
                    prop_assert_eq!(p as usize % align, 0);
                    let usable = pool.usable_size(p);
                    prop_assert!(usable >= n);
                    // No overlap with any live block.
                    let a = p as usize;
                    if let Some((&b, l)) = live.range(..=a).next_back() {
                        prop_assert!(b + l.len.max(1) <= a, "overlaps block at {:#x}", b);
                    }
                    if let Some((&b, _)) = live.range(a..).next() {
                        prop_assert!(a + n.max(1) <= b, "overlaps next block");
                    }
                    write(p, n, seed);
                    live.insert(a, Live { len: n, seed });
                }
                Op::Free(i) if !live.is_empty() => {
                    let k = *live.keys().nth(i % live.len()).unwrap();
                    let l = live.remove(&k).unwrap();
                    prop_assert!(verify(k as *mut u8, l.len, l.seed), "contents of {:#x} changed", k);
                    // SAFETY: a live block of this pool, freed once.
                    unsafe { pool.free_raw(k as *mut u8) };
                }
                Op::Realloc(i, n) if !live.is_empty() => {
                    let k = *live.keys().nth(i % live.len()).unwrap();
                    let l = live.remove(&k).unwrap();
                    let old_usable = pool.usable_size(k as *mut u8);
                    // SAFETY: a live block of this pool.
                    let q = unsafe { pool.realloc_raw(k as *mut u8, n) };
                    prop_assert!(!q.is_null());
                    let keep = l.len.min(n);
                    prop_assert!(verify(q, keep, l.seed), "realloc lost contents");
                    if n <= SLAB_SIZE / 2 && n > old_usable / 2 && n <= old_usable && old_usable <= SLAB_SIZE / 2 {
                        prop_assert_eq!(q as usize, k, "same class must not move");
                    }
                    write(q, n, seed);
                    live.insert(q as usize, Live { len: n, seed });
                }
                _ => {}
            }
        }
        for (k, l) in live {
            prop_assert!(verify(k as *mut u8, l.len, l.seed));
            // SAFETY: live block freed once.
            unsafe { pool.free_raw(k as *mut u8) };
        }
    }
}

/// Found by `matches_the_model`: memalign of a slab-sized alignment with
/// size 0 returned NULL (a dedicated run of zero slabs).
#[test]
fn zero_byte_allocations_with_large_alignment_are_unique_pointers() {
    let pool = Pool::new(Config {
        backend: BackendChoice::Host,
        arena_size: 4 << 30,
        ..Default::default()
    })
    .unwrap();
    for shift in [5u32, 12, 20, 21] {
        let p = pool.alloc_aligned_raw(1 << shift, 0);
        assert!(!p.is_null(), "memalign(1 << {shift}, 0) returned NULL");
        assert_eq!(p as usize % (1 << shift), 0);
        // SAFETY: a live block of this pool, freed once.
        unsafe { pool.free_raw(p) };
    }
}
