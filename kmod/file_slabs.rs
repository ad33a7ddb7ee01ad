// SPDX-License-Identifier: GPL-2.0
//! The slab ioctls of one open `/dev/pktaccel` (SLAB_ALLOC, SLAB_FREE) and
//! the zombie slabs a free leaves behind: a child module of `file`, so it
//! works on the file state's private fields directly.

use super::*;

impl FileState {
    /// Frees freed-but-busy slabs that nothing references any more.
    fn reap_zombies(&self, inner: &mut FileInner) {
        if inner.zombies.is_empty() || self.inflight() != 0 || self.is_quarantined() {
            return;
        }
        let mut i = 0;
        while i < inner.zombies.len() {
            if inner.zombies[i].busy() {
                i += 1;
            } else if let Ok(s) = inner.zombies.remove(i) {
                free_slab(&mut inner.pinned, s);
            }
        }
    }

    /// SLAB_ALLOC: a new pinned slab within both pinning caps.
    pub(super) fn slab_alloc(&self, ptr: UserPtr) -> Result {
        let (mut r, mut w) = UserSlice::new(ptr, size_of::<IocSlabAlloc>()).reader_writer();
        let req: IocSlabAlloc = r.read()?;
        let size = if req.size == 0 {
            abi::SLAB_DEFAULT_SIZE
        } else {
            req.size
        };
        if !size.is_power_of_two() || !(abi::SLAB_MIN_SIZE..=abi::SLAB_MAX_SIZE).contains(&size) {
            return Err(EINVAL);
        }
        if req.caching > abi::CACHE_WRITE_BACK {
            return Err(EINVAL);
        }
        let out = {
            let mut inner = self.inner.lock();
            self.reap_zombies(&mut inner);
            let held = self.pinned_by_file(&inner);
            if held + size > crate::max_pinned_per_file() {
                pr_info!(
                    "slab of {} bytes refused: file would pin {} of max_pinned_per_file={}\n",
                    size,
                    held + size,
                    crate::max_pinned_per_file()
                );
                return Err(ENOMEM);
            }
            let before = PINNED_TOTAL.fetch_add(size, Relaxed);
            if before + size > crate::max_pinned_total() {
                PINNED_TOTAL.fetch_sub(size, Relaxed);
                pr_info!(
                    "slab of {} bytes refused: {} bytes pinned of max_pinned_total={}\n",
                    size,
                    before,
                    crate::max_pinned_total()
                );
                return Err(ENOMEM);
            }
            let id = inner.next_id.checked_add(1).ok_or(ENOSPC);
            let slab = id.and_then(|id| Slab::new(id, size, req.caching));
            let slab = match slab {
                Ok(s) => s,
                Err(e) => {
                    PINNED_TOTAL.fetch_sub(size, Relaxed);
                    return Err(e);
                }
            };
            inner.next_id = slab.id;
            let out = IocSlabAlloc {
                size,
                caching: req.caching,
                id: slab.id,
                phys: slab.phys,
                mmap_offset: slab.mmap_offset,
            };
            inner.slabs.reserve(1, GFP_KERNEL).inspect_err(|_| {
                // `slab` is dropped (freed) on return; undo its accounting.
                PINNED_TOTAL.fetch_sub(size, Relaxed);
            })?;
            inner.pinned += size;
            SLABS_TOTAL.add(1, Relaxed);
            // Cannot fail: room reserved above.
            let _ = inner.slabs.push_within_capacity(slab);
            out
        };
        if let Err(e) = w.write(&out) {
            // The caller cannot learn the id: take the slab back.
            let mut inner = self.inner.lock();
            if let Some(i) = inner.slabs.iter().position(|s| s.id == out.id) {
                if let Ok(s) = inner.slabs.remove(i) {
                    free_slab(&mut inner.pinned, s);
                }
            }
            return Err(e);
        }
        Ok(())
    }

    /// SLAB_FREE: the slab leaves the file's list at once; its memory is
    /// freed once no mapping or request in flight uses it.
    pub(super) fn slab_free(&self, ptr: UserPtr) -> Result {
        let req: abi::IocSlabFree = UserSlice::new(ptr, size_of::<abi::IocSlabFree>())
            .reader()
            .read()?;
        if req.reserved != 0 {
            return Err(EINVAL);
        }
        let mut inner = self.inner.lock();
        let i = inner
            .slabs
            .iter()
            .position(|s| s.id == req.id)
            .ok_or(ENOENT)?;
        inner.zombies.reserve(1, GFP_KERNEL)?;
        let s = inner.slabs.remove(i).map_err(|_| ENOENT)?;
        // Cannot fail: room reserved above.
        let _ = inner.zombies.push_within_capacity(s);
        self.reap_zombies(&mut inner);
        Ok(())
    }
}
