//! [`Arena::v2p`] on a page table written by hand: every error kind, and
//! the offset and contiguity inside a page; a run's regrow when no memory
//! can be had (failures injected into [`Arena::back_slot`]).

use core::sync::atomic::AtomicUsize;

use super::*;
use crate::backend::host::HostBackend;

/// Lets `pass` more backings succeed, then fails the next `fail`.
#[derive(Default)]
pub(super) struct FailBacking {
    pass: AtomicUsize,
    fail: AtomicUsize,
}

impl FailBacking {
    fn arm(&self, pass: usize, fail: usize) {
        self.pass.store(pass, Ordering::Relaxed);
        self.fail.store(fail, Ordering::Relaxed);
    }

    pub(super) fn fails_now(&self) -> bool {
        if self.fail.load(Ordering::Relaxed) == 0 {
            return false;
        }
        if self.pass.load(Ordering::Relaxed) > 0 {
            self.pass.fetch_sub(1, Ordering::Relaxed);
            return false;
        }
        self.fail.fetch_sub(1, Ordering::Relaxed);
        true
    }
}

fn host_arena() -> Arena {
    let backend = Backend::Host(HostBackend::new(u64::MAX, true, false));
    Arena::new(64 * SLAB_SIZE, backend, false, 0).expect("reserve the arena")
}

/// A one-slot run of `tail` bytes filled with a pattern.
fn patterned_run(a: &Arena, tail: usize) -> (usize, *mut u8) {
    let (slot, _) = a.alloc_run(1, 1, KIND_LARGE, 0, tail).expect("a run");
    let p = a.slot_addr(slot) as *mut u8;
    for k in 0..tail {
        // SAFETY: the run has `tail` mapped bytes.
        unsafe { *p.add(k) = (k % 251) as u8 };
    }
    (slot, p)
}

fn assert_pattern(p: *const u8, len: usize) {
    for k in 0..len {
        // SAFETY: the caller's block has `len` mapped bytes.
        assert_eq!(unsafe { *p.add(k) }, (k % 251) as u8, "byte {k}");
    }
}

#[test]
fn failed_regrow_keeps_the_block() {
    let a = host_arena();
    let tail = 64 * 1024;
    let (slot, p) = patterned_run(&a, tail);
    // The new second slot is backed; both attempts for the first fail.
    a.inject.arm(1, 2);
    assert!(!a.grow_run(slot, 2, SLAB_SIZE), "grow must report failure");
    assert_eq!(
        a.inject.fail.load(Ordering::Relaxed),
        0,
        "both attempts ran"
    );
    assert_pattern(p, tail);
    assert_eq!(a.meta(slot).run.load(Ordering::Relaxed), 1);
    assert_eq!(a.run_bytes(slot, 1), tail);
    assert!(a.is_free(slot + 1), "the new slot went back");
    // The bytes are now ordinary memory, and v2p says so.
    assert_eq!(a.v2p(p as usize + 5), Err(V2pError::NotPinned));
    assert_eq!(a.fallback_bytes(), tail as u64);
    // The block still grows once memory is there, keeping its bytes.
    assert!(a.grow_run(slot, 2, SLAB_SIZE));
    assert_pattern(p, tail);
    a.free_run(slot);
    assert_eq!(a.fallback_bytes(), 0);
}

#[test]
fn regrow_falling_back_to_the_old_length_keeps_v2p() {
    let a = host_arena();
    let tail = 64 * 1024;
    let (slot, p) = patterned_run(&a, tail);
    // The new length fails, the old one is had again.
    a.inject.arm(1, 1);
    assert!(!a.grow_run(slot, 2, SLAB_SIZE));
    assert_pattern(p, tail);
    assert_eq!(a.run_bytes(slot, 1), tail);
    assert!(
        a.v2p(p as usize + tail - 1).is_ok(),
        "the re-backed slot's pages are mapped for v2p"
    );
    a.free_run(slot);
}

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

/// Host slots start premapped (no mmap on first use); once backed and
/// given back they are reservation again, and backing them anew must map
/// fresh zeroed memory instead of trusting the premapped state.
#[test]
fn premapped_slots_are_mapped_again_after_release() {
    let host = crate::backend::host::HostBackend::new(u64::MAX, true, false);
    let a = Arena::new(64 * SLAB_SIZE, Backend::Host(host), false, 0).expect("reserve");
    assert_eq!(a.premapped, PREMAP_SLOTS);
    for round in 0..3u8 {
        // Slot 0 each time (first fit), one page-granular small slab.
        let (slot, fresh) = a
            .alloc_run(1, 1, KIND_SMALL, 0, 16 * PAGE_SIZE)
            .expect("back slot 0");
        assert_eq!((slot, fresh), (0, true), "round {round}");
        let p = a.slot_addr(slot) as *mut u8;
        // SAFETY: the slot has 16 pages mapped read-write.
        unsafe {
            assert_eq!(*p.add(5 * PAGE_SIZE), 0, "round {round}: not zeroed");
            p.add(5 * PAGE_SIZE).write(round + 1);
        }
        // retain = 0: the slot goes back to the reservation (PROT_NONE).
        a.free_run(slot);
        assert_eq!(a.meta(slot).kind_class().0, KIND_UNMAPPED);
    }
    // A slot past the premapped ones is mapped the ordinary way.
    let (far, _) = a
        .alloc_run(1, 2 * PREMAP_SLOTS, KIND_SMALL, 0, PAGE_SIZE)
        .expect("back a far slot");
    assert_eq!(far, 0, "slot 0 is free again: first fit");
    let (far, _) = a
        .alloc_run(1, 2 * PREMAP_SLOTS, KIND_SMALL, 0, PAGE_SIZE)
        .expect("back a far slot");
    assert_eq!(far, 2 * PREMAP_SLOTS);
    // SAFETY: one page mapped read-write.
    unsafe { (a.slot_addr(far) as *mut u8).write(7) };
}

/// Host slabs write no page entries until a v2p asks: the first lookup
/// pins and answers, past the mapped length stays "not mapped", a slot
/// backed anew answers with its new pages, and a forked child's copy
/// (privatize_pinned) says "not pinned" without pinning anything.
#[test]
fn host_page_entries_are_written_on_the_first_v2p() {
    let host = crate::backend::host::HostBackend::new(u64::MAX, true, false);
    let a = Arena::new(64 * SLAB_SIZE, Backend::Host(host), false, 0).expect("reserve");
    let (slot, _) = a
        .alloc_run(1, 1, KIND_SMALL, 0, 4 * PAGE_SIZE)
        .expect("back");
    let addr = a.slot_addr(slot);
    assert!(a.meta(slot).unwritten());
    assert_eq!(
        a.page(slot * PAGES_PER_SLAB).contig.load(Ordering::Relaxed),
        0
    );
    assert_eq!(a.v2p(addr + 4 * PAGE_SIZE), Err(V2pError::NotMapped));
    let first = a.v2p(addr + 3 * PAGE_SIZE + 5).expect("host page resolves");
    assert!(!a.meta(slot).unwritten());
    assert_eq!(first.addr & (PAGE_SIZE as u64 - 1), 5);
    assert!(first.contig >= PAGE_SIZE - 5);
    assert_eq!(
        a.v2p(addr + 3 * PAGE_SIZE + 5),
        Ok(first),
        "second lookup: same answer"
    );
    a.free_run(slot);
    assert_eq!(a.v2p(addr), Err(V2pError::NotMapped), "freed: not mapped");
    // Backed anew, larger: unwritten again, and resolved afresh.
    let (again, _) = a
        .alloc_run(1, 1, KIND_SMALL, 0, 8 * PAGE_SIZE)
        .expect("back again");
    assert_eq!(again, slot);
    assert!(a.meta(slot).unwritten());
    assert!(a.v2p(addr + 7 * PAGE_SIZE).is_ok());
    // A second slab, never looked up, becomes a child's private copy.
    let (other, _) = a
        .alloc_run(1, 1, KIND_SMALL, 1, 4 * PAGE_SIZE)
        .expect("back other");
    assert!(a.meta(other).unwritten());
    assert!(a.privatize_pinned() >= 1);
    assert_eq!(a.v2p(a.slot_addr(other)), Err(V2pError::NotPinned));
    assert_eq!(a.v2p(addr), Err(V2pError::NotPinned));
}
