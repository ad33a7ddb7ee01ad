//! Size classes: powers of two from 16 bytes to half a slab.
//!
//! Every piece in a slab has the same size, so a slab never fragments and a
//! pointer's class is known from its slab alone (no per-piece header).

/// log2 of the slab size. 2 MiB is the device's default slab and the x86
/// huge-page size, so one slab is one table entry in the arena.
pub const SLAB_SHIFT: u32 = 21;
/// Bytes in one slab.
pub const SLAB_SIZE: usize = 1 << SLAB_SHIFT;
/// log2 of the base page size the physical page table is kept at.
pub const PAGE_SHIFT: u32 = 12;
/// Bytes in one base page.
pub const PAGE_SIZE: usize = 1 << PAGE_SHIFT;
/// Pages per slab.
pub const PAGES_PER_SLAB: usize = SLAB_SIZE / PAGE_SIZE;
/// log2 of the smallest class: 16 bytes, the alignment glibc guarantees.
pub const MIN_SHIFT: u32 = 4;
/// log2 of the largest class: half a slab. Anything bigger gets its own
/// contiguous run of slabs.
pub const MAX_SHIFT: u32 = SLAB_SHIFT - 1;
/// Number of small classes (16 B ..= 1 MiB).
pub const NUM_CLASSES: usize = (MAX_SHIFT - MIN_SHIFT + 1) as usize;
/// The largest request served from a class.
pub const MAX_SMALL: usize = 1 << MAX_SHIFT;
/// Minimum alignment of every returned pointer.
pub const MIN_ALIGN: usize = 1 << MIN_SHIFT;

/// Class index for a request of `size` bytes (`size <= MAX_SMALL`).
/// Branch-free (sizes up to 16 fold into class 0 by the OR): a program
/// mixing sizes around 16 bytes pays no mispredicted branch for it.
#[inline(always)]
pub const fn class_of(size: usize) -> usize {
    let s = size.saturating_sub(1) | (MIN_ALIGN - 1);
    (usize::BITS - s.leading_zeros() - MIN_SHIFT) as usize
}

/// Piece size of class `c`.
#[inline(always)]
pub const fn class_size(c: usize) -> usize {
    1 << (c as u32 + MIN_SHIFT)
}

/// How many pieces move between a thread cache and the shared lists at
/// once: up to 64 pieces or 64 KiB, at least one.
#[inline(always)]
pub const fn batch(c: usize) -> usize {
    let by_bytes = (64 * 1024) >> (c as u32 + MIN_SHIFT);
    if by_bytes == 0 {
        1
    } else if by_bytes > 64 {
        64
    } else {
        by_bytes
    }
}

/// A thread cache holds at most this many pieces of class `c` before it
/// hands a batch back.
#[inline(always)]
pub const fn cache_limit(c: usize) -> usize {
    CACHE_LIMITS[c]
}

const CACHE_LIMITS: [usize; NUM_CLASSES] = {
    let mut t = [0; NUM_CLASSES];
    let mut c = 0;
    while c < NUM_CLASSES {
        t[c] = 2 * batch(c);
        c += 1;
    }
    t
};

/// Number of slabs a large request of `size` bytes needs.
#[inline]
pub const fn slabs_for(size: usize) -> usize {
    size.div_ceil(SLAB_SIZE)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes_round_up_to_powers_of_two() {
        assert_eq!(class_size(class_of(0)), 16);
        assert_eq!(class_size(class_of(1)), 16);
        assert_eq!(class_size(class_of(16)), 16);
        assert_eq!(class_size(class_of(17)), 32);
        assert_eq!(class_size(class_of(37)), 64);
        assert_eq!(class_size(class_of(64)), 64);
        assert_eq!(class_size(class_of(65)), 128);
        assert_eq!(class_size(class_of(MAX_SMALL)), MAX_SMALL);
        assert_eq!(class_of(MAX_SMALL), NUM_CLASSES - 1);
        for s in 1..=MAX_SMALL.min(70_000) {
            let c = class_size(class_of(s));
            assert!(c >= s && (c / 2 < s || c == 16), "size {s} -> {c}");
        }
    }

    #[test]
    fn batches_are_bounded() {
        assert_eq!(batch(0), 64);
        assert_eq!(batch(NUM_CLASSES - 1), 1);
        for c in 0..NUM_CLASSES {
            assert!(batch(c) * class_size(c) <= 64 * 1024 || batch(c) == 1);
        }
        assert_eq!(slabs_for(SLAB_SIZE + 1), 2);
    }
}
