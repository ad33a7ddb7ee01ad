//! fork() when the slabs are not inherited: the driver's mappings are
//! `VM_DONTCOPY` (and host slabs with `PKTSLAB_HOST_DONTFORK=1`), so a
//! child would find holes where its heap was. The parent copies the live
//! bytes of its pinned slabs before fork; the child moves the copies into
//! place as ordinary memory.

use core::sync::atomic::Ordering;

use super::{Arena, KIND_FREE_MAPPED, KIND_SMALL, KIND_UNMAPPED};
use crate::backend;
use crate::class::{PAGE_SIZE, PAGES_PER_SLAB};
use crate::v2p::PHYS_NOT_PINNED;

impl Arena {
    /// Bytes of slot `i` worth copying for a forked child: the carved part
    /// of a small slab (the rest was never handed out), all of a run.
    fn live_bytes(&self, i: usize) -> usize {
        let m = self.meta(i);
        match m.kind_class().0 {
            KIND_SMALL => (m.bump.load(Ordering::Relaxed) as usize)
                .next_multiple_of(PAGE_SIZE)
                .min(m.mapped()),
            _ => m.mapped(),
        }
    }

    /// Slots whose memory a forked child does not inherit: pinned and in use.
    fn shadowed(&self, i: usize) -> bool {
        let m = self.meta(i);
        m.pinned() && !matches!(m.kind_class().0, KIND_UNMAPPED | KIND_FREE_MAPPED)
    }

    /// Fork preparation in the parent, with the arena lock held: the
    /// pinned slabs are `VM_DONTCOPY` (the driver's mappings; host slabs
    /// with `PKTSLAB_HOST_DONTFORK=1`), so the child would find holes where
    /// its heap was. Copy their live bytes into one private mapping the
    /// child inherits copy-on-write; [`Arena::fork_child`] moves the copies
    /// into place and [`Arena::fork_parent`] drops them here. Writes other
    /// threads make between this copy and the fork itself are not seen by
    /// the child: they race with fork() in the program anyway.
    pub fn fork_save(&self) {
        let st = self.state();
        let total: usize = (0..st.high_water)
            .filter(|&i| self.shadowed(i))
            .map(|i| self.meta(i).mapped())
            .sum();
        st.shadow = 0;
        if total == 0 {
            return;
        }
        // SAFETY: a fresh private mapping, ours alone.
        let sh = unsafe {
            libc::mmap(
                core::ptr::null_mut(),
                total,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        if sh == libc::MAP_FAILED {
            return;
        }
        let mut off = 0;
        for i in (0..st.high_water).filter(|&i| self.shadowed(i)) {
            // SAFETY: the slot is mapped (pinned, in use) and the shadow
            // has len bytes at off; live_bytes <= len.
            unsafe {
                core::ptr::copy_nonoverlapping(
                    self.slot_addr(i) as *const u8,
                    sh.cast::<u8>().add(off),
                    self.live_bytes(i),
                )
            };
            off += self.meta(i).mapped();
        }
        st.shadow = sh as usize;
        st.shadow_len = total;
    }

    /// The parent's side after fork(): drop the copies.
    pub fn fork_parent(&self) {
        let st = self.state();
        if st.shadow != 0 {
            // SAFETY: the shadow is our own mapping and nothing points into it.
            unsafe { libc::munmap(st.shadow as *mut libc::c_void, st.shadow_len) };
            st.shadow = 0;
        }
    }

    /// The child's side after fork(): every pinned slab becomes ordinary
    /// memory holding the parent's bytes (`mremap` of the copy over the
    /// slot), v2p says "not pinned" for it, and slabs kept mapped for reuse
    /// are dropped. The caller then reopens the device, so the child's new
    /// slabs are its own. Returns the slabs moved into place.
    pub fn fork_child(&self) -> usize {
        let st = self.state();
        let (shadow, mut off, mut n) = (st.shadow, 0, 0);
        for i in 0..st.high_water {
            let m = self.meta(i);
            let (kind, class) = m.kind_class();
            if !m.pinned() || kind == KIND_UNMAPPED {
                continue;
            }
            let (addr, len) = (self.slot_addr(i), m.mapped());
            if kind == KIND_FREE_MAPPED {
                // SAFETY: a free slot: nothing lives there.
                unsafe { backend::reserve_fixed(addr, len) };
                st.retained -= len;
                self.clear_pages(i);
                m.len.store(0, Ordering::Relaxed);
                m.set(KIND_UNMAPPED, 0, false);
                continue;
            }
            let moved = shadow != 0 && {
                // SAFETY: moves our shadow's chunk over the slot (which
                // the child did not inherit); MREMAP_FIXED replaces it.
                let r = unsafe {
                    libc::mremap(
                        (shadow + off) as *mut libc::c_void,
                        len,
                        len,
                        libc::MREMAP_MAYMOVE | libc::MREMAP_FIXED,
                        addr as *mut libc::c_void,
                    )
                };
                r != libc::MAP_FAILED
            };
            off += len;
            if !moved {
                crate::fault::notice(format_args!(
                    "fork: no memory to copy the heap for the child; slab {addr:#x} is lost"
                ));
                // SAFETY: the child has no mapping there; map zeroes so a
                // stray read does not crash in our own metadata walk.
                let _ = unsafe { backend::map_unpinned(addr, len) };
            }
            let first = i * PAGES_PER_SLAB;
            for k in first..first + PAGES_PER_SLAB {
                self.page(k).phys.store(PHYS_NOT_PINNED, Ordering::Relaxed);
            }
            m.dev_id.store(u32::MAX, Ordering::Relaxed);
            m.set(kind, class, false);
            if m.unwritten() {
                // Host memory never looked up: give its pages contiguity
                // so v2p answers "not pinned" instead of pinning them.
                m.set_unwritten(false);
                self.fill_contig(i, 1);
            }
            self.backend.forget(len);
            self.fallback_bytes.fetch_add(len as u64, Ordering::Relaxed);
            n += 1;
        }
        if shadow != 0 && off < st.shadow_len {
            // SAFETY: the rest of the shadow (if any) is ours and unused.
            unsafe { libc::munmap((shadow + off) as *mut libc::c_void, st.shadow_len - off) };
        }
        st.shadow = 0;
        n
    }

    /// Replaces every pinned slab mapping with a private, unpinned copy of
    /// its contents, in place: what a forked child does, without the fork
    /// (tests). Returns the slabs copied.
    pub fn privatize_pinned(&self) -> usize {
        let _g = self.lock.lock();
        self.fork_save();
        self.fork_child()
    }
}
