//! SLAB_ALLOC and SLAB_FREE, and the mappings of slabs: mmap, munmap,
//! mremap.

use super::*;

pub(super) fn slab_alloc(_ctx: &Ctx, f: &FileM, rng: &mut Rng) -> Found {
    let mut m = lock(f)?;
    if m.slabs.len() >= 12 {
        return Ok(());
    }
    let size = match rng.below(10) {
        0 => rng.next() & 0x3f_ffff,
        1..=6 => SLAB_MIN_SIZE,
        _ => SLAB_MIN_SIZE << rng.below(3),
    };
    let caching = if rng.chance(5) {
        7
    } else {
        rng.below(3) as u32
    };
    match f.dev.alloc(size, caching) {
        Ok(s) => m.slabs.push(s),
        Err(e) => allowed("SLAB_ALLOC", e, &[libc::EINVAL, libc::ENOMEM])?,
    }
    Ok(())
}

pub(super) fn slab_free(ctx: &Ctx, f: &FileM, rng: &mut Rng) -> Found {
    let mut m = lock(f)?;
    if m.slabs.is_empty() || rng.chance(10) {
        // Any id: it must succeed exactly when it names a live slab.
        let id = rng.below(2000) as u32;
        let live = m.slabs.iter().position(|s| s.id == id);
        return match (f.dev.free(id), live) {
            (Ok(()), Some(i)) => {
                m.slabs.swap_remove(i);
                Ok(())
            }
            (Ok(()), None) => Err(format!("SLAB_FREE of unknown id {id} succeeded")),
            (Err(e), Some(_)) => Err(format!("SLAB_FREE of live slab {id}: {}", errname(e))),
            (Err(e), None) => allowed("SLAB_FREE", e, &[libc::ENOENT]),
        };
    }
    let i = rng.below(m.slabs.len() as u64) as usize;
    let s = m.slabs.swap_remove(i);
    f.dev
        .free(s.id)
        .map_err(|e| format!("SLAB_FREE of live slab {}: {}", s.id, errname(e)))?;
    if let Ok(mut d) = ctx.dead.lock() {
        d.push(s.phys);
        if d.len() > 64 {
            d.remove(0);
        }
    }
    Ok(())
}

pub(super) fn map_ops(f: &FileM, rng: &mut Rng) -> Found {
    let mut m = lock(f)?;
    let fd = f.dev.f.as_raw_fd();
    match rng.below(3) {
        0 if !m.slabs.is_empty() && m.maps.len() < 16 => {
            let s = m.slabs[rng.below(m.slabs.len() as u64) as usize];
            let pages = (s.size as usize / 4096).max(1);
            let len = 4096 * (1 + rng.below(pages as u64 + 1) as usize);
            let flags = if rng.chance(15) {
                libc::MAP_PRIVATE
            } else {
                libc::MAP_SHARED
            };
            // SAFETY: a new mapping of our own file; checked below.
            let p = unsafe {
                libc::mmap(
                    std::ptr::null_mut(),
                    len,
                    libc::PROT_READ | libc::PROT_WRITE,
                    flags,
                    fd,
                    s.mmap_offset as libc::off_t,
                )
            };
            if p == libc::MAP_FAILED {
                let e = errno();
                if len <= s.size as usize && flags == libc::MAP_SHARED {
                    return Err(format!("mmap of live slab {}: {}", s.id, errname(e)));
                }
                return allowed("mmap", e, &[libc::EINVAL, libc::EACCES]);
            }
            if flags == libc::MAP_PRIVATE || len > s.size as usize {
                return Err(format!(
                    "mmap private={} len={len} of a {} slab succeeded",
                    flags == libc::MAP_PRIVATE,
                    s.size
                ));
            }
            // SAFETY: writing the first byte of the fresh shared mapping.
            unsafe { p.cast::<u8>().write_volatile(0x5a) };
            m.maps.push(MapRec {
                ptr: p as usize,
                len,
            });
        }
        1 if !m.maps.is_empty() => {
            let i = rng.below(m.maps.len() as u64) as usize;
            let mr = m.maps.swap_remove(i);
            // SAFETY: unmapping a mapping the fuzzer made.
            unsafe { libc::munmap(mr.ptr as *mut _, mr.len) };
        }
        2 if !m.maps.is_empty() => {
            let i = rng.below(m.maps.len() as u64) as usize;
            let mr = &mut m.maps[i];
            let grow = rng.chance(50);
            let new_len = if grow {
                mr.len * 2
            } else {
                (mr.len / 2).max(4096)
            };
            // SAFETY: resizing a mapping the fuzzer made; checked below.
            let p =
                unsafe { libc::mremap(mr.ptr as *mut _, mr.len, new_len, libc::MREMAP_MAYMOVE) };
            if p == libc::MAP_FAILED {
                let e = errno();
                if !grow {
                    return Err(format!("mremap shrink: {}", errname(e)));
                }
                return allowed("mremap", e, &[libc::EFAULT, libc::EINVAL, libc::ENOMEM]);
            }
            if grow {
                return Err("mremap grew a slab mapping".into());
            }
            mr.ptr = p as usize;
            mr.len = new_len;
        }
        _ => {}
    }
    Ok(())
}
