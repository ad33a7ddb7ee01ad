//! Growing and shrinking a large allocation's run of slots in place (for
//! realloc): the address stays, the slots after the run are taken or given
//! back, and the run's last slot is re-backed to its new length.

use core::sync::atomic::Ordering;

use super::{Arena, KIND_TAIL};
use crate::class::PAGE_SIZE;
use crate::fault::notice;
use crate::v2p::PHYS_NOT_PINNED;

impl Arena {
    /// Re-backs the in-use slot `i` with `len` bytes, keeping its contents
    /// (device slabs cannot grow, so the bytes move through a copy; the
    /// address stays). False when memory is short: the slot then holds its
    /// old bytes again, re-backed at the old length or, when even that
    /// failed, as ordinary memory (see [`Arena::restore_unpinned`]).
    fn regrow_slot(&self, i: usize, len: usize) -> bool {
        let m = self.meta(i);
        let (old, kind_class, addr) = (m.mapped(), m.kind_class(), self.slot_addr(i));
        if old >= len {
            return true;
        }
        // SAFETY: a fresh private mapping for the copy.
        let tmp = unsafe {
            libc::mmap(
                core::ptr::null_mut(),
                old,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if tmp == libc::MAP_FAILED {
            return false;
        }
        // SAFETY: the slot has `old` mapped bytes; tmp has `old` bytes.
        unsafe { core::ptr::copy_nonoverlapping(addr as *const u8, tmp.cast::<u8>(), old) };
        self.unmap_slot(i);
        let ok = self.back_slot(i, len).is_ok() || self.back_slot(i, old).is_ok();
        if !ok {
            // The copy's pages become the slot's: nothing is lost.
            self.restore_unpinned(i, tmp, old, kind_class);
            return false;
        }
        // SAFETY: the slot has at least `old` bytes mapped again.
        unsafe { core::ptr::copy_nonoverlapping(tmp.cast::<u8>(), addr as *mut u8, old) };
        let pinned = m.pinned();
        m.set(kind_class.0, kind_class.1, pinned);
        // SAFETY: our own temporary mapping.
        unsafe { libc::munmap(tmp, old) };
        m.mapped() >= len
    }

    /// Puts a slot's saved contents (`tmp`, `old` bytes, our private
    /// mapping) back at the slot after no backing could be had for it:
    /// the pages move into place (mremap, no copy) and the slot is
    /// ordinary memory from then on, counted as fallback bytes; v2p says
    /// "not pinned" for it. If even the move fails the process aborts with
    /// a message: that is better than handing back a block whose bytes
    /// are gone.
    fn restore_unpinned(
        &self,
        i: usize,
        tmp: *mut libc::c_void,
        old: usize,
        kind_class: (u32, usize),
    ) {
        let addr = self.slot_addr(i);
        // SAFETY: tmp is our private anonymous mapping of `old` bytes; the
        // target is the slot's part of the reservation, which unmap_slot
        // made reservation-only and MREMAP_FIXED replaces.
        let r = unsafe {
            libc::mremap(
                tmp,
                old,
                old,
                libc::MREMAP_MAYMOVE | libc::MREMAP_FIXED,
                addr as *mut libc::c_void,
            )
        };
        if r == libc::MAP_FAILED {
            notice(format_args!(
                "cannot put a {old}-byte block back at {addr:#x} after failing to grow it (errno {}); aborting rather than losing its contents",
                crate::backend::errno()
            ));
            // SAFETY: abort has no preconditions and does not return.
            unsafe { libc::abort() };
        }
        let first = i * crate::class::PAGES_PER_SLAB;
        for k in first..first + old / PAGE_SIZE {
            self.page(k).phys.store(PHYS_NOT_PINNED, Ordering::Relaxed);
        }
        let m = self.meta(i);
        m.len.store(old as u32, Ordering::Relaxed);
        m.dev_id.store(u32::MAX, Ordering::Relaxed);
        m.set(kind_class.0, kind_class.1, false);
        self.fallback_bytes.fetch_add(old as u64, Ordering::Relaxed);
    }

    /// Extends a large run in place to `new_n` slots, the last holding
    /// `tail` bytes, if the slots after it are free. Returns false (the
    /// run as it was) otherwise.
    pub fn grow_run(&self, first: usize, new_n: usize, tail: usize) -> bool {
        let _g = self.lock.lock();
        let head = self.meta(first);
        let old_n = head.run.load(Ordering::Relaxed) as usize;
        if new_n < old_n
            || first + new_n > self.nslots
            || !(first + old_n..first + new_n).all(|j| self.is_free(j))
        {
            return false;
        }
        let last = first + new_n - 1;
        for j in first + old_n..first + new_n {
            if self.back_slot(j, self.slot_len(j, last, tail)).is_err() {
                for k in first + old_n..j {
                    self.release_slot(k, true);
                }
                return false;
            }
            let m = self.meta(j);
            m.set(KIND_TAIL, 0, m.pinned());
        }
        let old_last = first + old_n - 1;
        if !self.regrow_slot(old_last, self.slot_len(old_last, last, tail)) {
            for k in first + old_n..first + new_n {
                self.release_slot(k, true);
            }
            // The last slot was re-backed (or restored as ordinary
            // memory): its pages need their v2p contiguity again.
            self.fill_contig(first, old_n);
            return false;
        }
        let st = self.state();
        st.high_water = st.high_water.max(first + new_n);
        head.run.store(new_n as u32, Ordering::Relaxed);
        self.fill_contig(first, new_n);
        true
    }

    /// Shrinks a large run in place to `new_n >= 1` slabs.
    pub fn shrink_run(&self, first: usize, new_n: usize) {
        let _g = self.lock.lock();
        let head = self.meta(first);
        let old_n = head.run.load(Ordering::Relaxed) as usize;
        for j in first + new_n..first + old_n {
            self.release_slot(j, true);
        }
        head.run.store(new_n as u32, Ordering::Relaxed);
        self.fill_contig(first, new_n);
    }
}
