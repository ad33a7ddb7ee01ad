//! Host memory pinned on first use: a host slab is mapped with every page
//! entry [`PHYS_LAZY`]; the first v2p inside its run pins the run and
//! fills in the physical addresses, so later lookups are the usual one
//! load. Device slabs are pinned by the driver and never lazy.

use core::sync::atomic::Ordering;

use super::{Arena, KIND_FREE_MAPPED, KIND_GROW, KIND_LARGE, KIND_SMALL, KIND_TAIL};
use crate::class::{PAGE_SIZE, PAGES_PER_SLAB};
use crate::v2p::{PHYS_LAZY, PHYS_NOT_PINNED, Phys, V2pError};

impl Arena {
    /// v2p of a page whose entry has no contiguity: nothing mapped there,
    /// or host memory whose entries were never written (see
    /// `UNWRITTEN_BIT`): pin its run and answer as for a lazy page.
    #[cold]
    #[inline(never)]
    pub(super) fn v2p_unwritten(&self, p: usize) -> Result<Phys, V2pError> {
        let slot = self.slot_of(p);
        let m = self.meta(slot);
        if !m.unwritten() || p - self.slot_addr(slot) >= m.mapped() {
            return Err(V2pError::NotMapped);
        }
        self.v2p_cold(p, PHYS_LAZY)
    }

    /// v2p's rare cases: ordinary memory, or a lazy host page (pin its run,
    /// then answer). `phys` is the entry v2p read for `p`.
    #[cold]
    #[inline(never)]
    pub(super) fn v2p_cold(&self, p: usize, phys: u64) -> Result<Phys, V2pError> {
        if phys == PHYS_NOT_PINNED {
            return Err(V2pError::NotPinned);
        }
        let slot = self.slot_of(p);
        self.resolve_run(slot);
        let off = p - self.base;
        let e = self.page(off >> crate::class::PAGE_SHIFT);
        let (contig, phys) = (
            e.contig.load(Ordering::Acquire),
            e.phys.load(Ordering::Acquire),
        );
        match phys {
            _ if contig == 0 => Err(V2pError::NotMapped),
            PHYS_NOT_PINNED => Err(V2pError::NotPinned),
            // Freed and unmapped while we looked: nothing there any more.
            PHYS_LAZY => Err(V2pError::NotMapped),
            _ => {
                let in_page = off & (PAGE_SIZE - 1);
                Ok(Phys {
                    addr: phys + in_page as u64,
                    contig: contig as usize - in_page,
                })
            }
        }
    }

    /// Pins every lazy slab of the run holding `slot` and recomputes the
    /// run's contiguity, under the arena lock.
    fn resolve_run(&self, slot: usize) {
        let _g = self.lock.lock();
        let (mut first, mut n) = (slot, 1);
        match self.meta(slot).kind_class().0 {
            KIND_SMALL | KIND_GROW | KIND_FREE_MAPPED => {}
            KIND_LARGE | KIND_TAIL => {
                while first > 0 && self.meta(first).kind_class().0 == KIND_TAIL {
                    first -= 1;
                }
                n = self.meta(first).run.load(Ordering::Relaxed).max(1) as usize;
            }
            _ => return,
        }
        for j in first..first + n {
            let m = self.meta(j);
            let len = m.mapped();
            let base = j * PAGES_PER_SLAB;
            if len == 0
                || !(m.unwritten() || self.page(base).phys.load(Ordering::Relaxed) == PHYS_LAZY)
            {
                continue;
            }
            let mut phys = [PHYS_LAZY; PAGES_PER_SLAB];
            self.backend.resolve(self.slot_addr(j), j, len, &mut phys);
            for (k, ph) in phys.iter().take(len / PAGE_SIZE).enumerate() {
                self.page(base + k).phys.store(*ph, Ordering::Release);
            }
            // fill_contig below writes the contiguity, after the addresses.
            m.set_unwritten(false);
        }
        self.fill_contig(first, n);
    }
}
