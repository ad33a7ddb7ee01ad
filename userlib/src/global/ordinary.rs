//! The live blocks of ordinary memory the heap handed out (malloc()
//! requests above PKTSLAB_PIN_MAX, served by the next allocator), so v2p
//! can answer "not pinned" for them instead of "outside the arena": the
//! caller then knows to copy or compute in software because the memory is
//! the heap's own, just not pinned.
//!
//! A sorted array of (start, length) in an mmap()ed table (allocating
//! through the heap here would recurse), under a spin lock. Blocks above
//! PKTSLAB_PIN_MAX are big and comparatively few; the O(live blocks)
//! insert is small next to the page faults of the block itself.

use core::cell::UnsafeCell;

use crate::lock::SpinLock;

/// Most blocks tracked (16 MiB of address space reserved, touched as it
/// fills). Beyond it a block is still served, and v2p says "outside the
/// arena" for it, as before there was a table.
const CAP: usize = 1 << 20;

struct Table {
    entries: *mut (usize, usize),
    len: usize,
    /// Bytes of the recorded blocks, and blocks ever recorded by a
    /// malloc-family call (the statistics; kept here, under the lock the
    /// table update takes anyway, instead of in atomics of their own).
    bytes: u64,
    allocs: u64,
}

pub(super) struct Blocks {
    pub(super) lock: SpinLock,
    table: UnsafeCell<Table>,
}

// SAFETY: `table` is only used with `lock` held.
unsafe impl Sync for Blocks {}

pub(super) static BLOCKS: Blocks = Blocks {
    lock: SpinLock::new(),
    table: UnsafeCell::new(Table {
        entries: core::ptr::null_mut(),
        len: 0,
        bytes: 0,
        allocs: 0,
    }),
};

impl Table {
    fn slice(&self) -> &[(usize, usize)] {
        if self.entries.is_null() {
            return &[];
        }
        // SAFETY: entries has CAP slots, the first len initialised.
        unsafe { core::slice::from_raw_parts(self.entries, self.len) }
    }

    /// Index of the first entry starting above `p`.
    fn upper(&self, p: usize) -> usize {
        self.slice().partition_point(|&(s, _)| s <= p)
    }

    fn map(&mut self) -> bool {
        if self.entries.is_null() {
            // SAFETY: a fresh private mapping, touched only as it fills.
            let m = unsafe {
                libc::mmap(
                    core::ptr::null_mut(),
                    CAP * size_of::<(usize, usize)>(),
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                    -1,
                    0,
                )
            };
            if m == libc::MAP_FAILED {
                return false;
            }
            self.entries = m.cast();
        }
        true
    }
}

impl Blocks {
    #[allow(clippy::mut_from_ref)]
    fn table(&self) -> &mut Table {
        // SAFETY: callers hold `lock`, so there is one user at a time.
        unsafe { &mut *self.table.get() }
    }

    /// Records a block of `len` bytes at `p` the heap just handed out
    /// (`new`: by malloc, calloc or memalign, counted as an allocation;
    /// else the result of a realloc).
    pub(super) fn insert(&self, p: usize, len: usize, new: bool) {
        let _g = self.lock.lock();
        let t = self.table();
        t.allocs += u64::from(new);
        if t.len == CAP || !t.map() {
            return;
        }
        t.bytes += len as u64;
        let i = t.upper(p);
        // SAFETY: i <= len < CAP: shift [i, len) up by one inside the table.
        unsafe {
            core::ptr::copy(t.entries.add(i), t.entries.add(i + 1), t.len - i);
            *t.entries.add(i) = (p, len);
        }
        t.len += 1;
    }

    /// Forgets the block starting at `p`, if it is one; returns its
    /// recorded length.
    pub(super) fn remove(&self, p: usize) -> Option<usize> {
        let _g = self.lock.lock();
        let t = self.table();
        let i = t.upper(p);
        if i == 0 || t.slice()[i - 1].0 != p {
            return None;
        }
        let len = t.slice()[i - 1].1;
        // SAFETY: i - 1 < len: shift [i, len) down by one.
        unsafe { core::ptr::copy(t.entries.add(i), t.entries.add(i - 1), t.len - i) };
        t.len -= 1;
        t.bytes -= len as u64;
        Some(len)
    }

    /// (Live bytes recorded, allocations ever recorded.)
    pub(super) fn totals(&self) -> (u64, u64) {
        let _g = self.lock.lock();
        let t = self.table();
        (t.bytes, t.allocs)
    }

    /// Whether `p` lies inside a recorded block.
    pub(super) fn contains(&self, p: usize) -> bool {
        let _g = self.lock.lock();
        let t = self.table();
        let i = t.upper(p);
        i > 0 && {
            let (s, l) = t.slice()[i - 1];
            p - s < l
        }
    }
}
