//! [`Arena::v2p`] on a page table written by hand: every error kind, and
//! the offset and contiguity inside a page.

use super::*;

#[test]
fn v2p_distinguishes_errors() {
    let a = Arena::new(SLAB_SIZE, Backend::Missing, false, 0).expect("reserve one slab");
    let set = |i: usize, phys: u64, contig: u64| {
        a.page(i).phys.store(phys, Ordering::Relaxed);
        a.page(i).contig.store(contig, Ordering::Relaxed);
    };
    set(0, 0x10_0000, 8192);
    set(1, 0x10_1000, 4096);
    set(2, PHYS_NOT_PINNED, 4096);
    // Page 3 keeps its zeroed entry: nothing mapped there.
    let base = a.base();
    assert_eq!(
        a.v2p(base + 10),
        Ok(Phys {
            addr: 0x10_000a,
            contig: 8182
        })
    );
    assert_eq!(
        a.v2p(base + PAGE_SIZE + 1),
        Ok(Phys {
            addr: 0x10_1001,
            contig: 4095
        })
    );
    assert_eq!(a.v2p(base + 2 * PAGE_SIZE), Err(V2pError::NotPinned));
    assert_eq!(a.v2p(base + 3 * PAGE_SIZE), Err(V2pError::NotMapped));
    assert_eq!(a.v2p(base + a.size()), Err(V2pError::OutsideArena));
    assert_eq!(a.v2p(base - 1), Err(V2pError::OutsideArena));
}
