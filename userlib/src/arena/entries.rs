//! The per-page physical table's contiguity: written for a run once its
//! slots are backed (or, for host memory, on the first v2p) and cleared
//! when a slot is given back.

use core::sync::atomic::Ordering;

use super::Arena;
use crate::class::{PAGE_SIZE, PAGES_PER_SLAB};
use crate::v2p::{PHYS_LAZY, PHYS_NOT_PINNED};

impl Arena {
    /// Recomputes contiguity for pages of slots `first..first+n` (one run).
    /// Pages past a slot's mapped length keep contiguity 0 (v2p: not
    /// mapped): [`Arena::unmap_slot`] clears a slot's pages, so they are.
    pub(super) fn fill_contig(&self, first: usize, n: usize) {
        let mut next_phys = PHYS_NOT_PINNED;
        let mut next_contig = 0u64;
        for slot in (first..first + n).rev() {
            let mapped = self.meta(slot).mapped() / PAGE_SIZE;
            if mapped < PAGES_PER_SLAB || self.meta(slot).unwritten() {
                (next_phys, next_contig) = (PHYS_NOT_PINNED, 0);
            }
            if self.meta(slot).unwritten() {
                // Entries stay zero until a v2p writes them.
                continue;
            }
            for k in (0..mapped).rev() {
                let e = self.page(slot * PAGES_PER_SLAB + k);
                let ph = e.phys.load(Ordering::Relaxed);
                // Not pinned or not yet resolved: a page on its own.
                let c = if ph < PHYS_LAZY
                    && next_phys < PHYS_LAZY
                    && ph + PAGE_SIZE as u64 == next_phys
                {
                    PAGE_SIZE as u64 + next_contig
                } else {
                    PAGE_SIZE as u64
                };
                e.contig.store(c, Ordering::Release);
                (next_phys, next_contig) = (ph, c);
            }
        }
    }

    /// Marks slot `i`'s mapped pages "not mapped" for v2p (pages past the
    /// mapped length never had contiguity). Call before the length is reset.
    pub(super) fn clear_pages(&self, i: usize) {
        if self.meta(i).unwritten() {
            // Never written: already zero (and not worth a page fault).
            return;
        }
        let first = i * PAGES_PER_SLAB;
        for k in first..first + self.meta(i).mapped() / PAGE_SIZE {
            self.page(k).contig.store(0, Ordering::Relaxed);
        }
    }
}
