//! Allocation statistics: per-class counts, pinned bytes, internal waste.
//!
//! Power-of-two classes waste up to half of a piece; that is the price of
//! slabs that never fragment, and these counters report it honestly.
//! Thread caches count into their own [`Counters`] with plain (non-locked)
//! stores and fold them into the heap's when the thread exits.

use core::fmt::{self, Write};
use core::sync::atomic::{AtomicU64, Ordering};

use crate::backend::BackendMode;
use crate::class::{NUM_CLASSES, class_size};

/// Index of the "large" bucket in per-class arrays.
pub const LARGE: usize = NUM_CLASSES;

/// Counters of one thread (single writer) or of the heap (shared).
pub struct Counters {
    allocs: [AtomicU64; NUM_CLASSES + 1],
    requested: AtomicU64,
    usable: AtomicU64,
    largest: AtomicU64,
}

impl Counters {
    /// All zero.
    pub const fn new() -> Self {
        Self {
            allocs: [const { AtomicU64::new(0) }; NUM_CLASSES + 1],
            requested: AtomicU64::new(0),
            usable: AtomicU64::new(0),
            largest: AtomicU64::new(0),
        }
    }

    /// Records a small allocation of class `c`; only the owning thread may
    /// call this (plain load + store: no locked instruction on the fast
    /// path). Usable bytes of small pieces follow from the per-class
    /// counts, so they are not summed here.
    #[inline(always)]
    pub fn record_owned(&self, c: usize, requested: usize) {
        let bump = |a: &AtomicU64, v: u64| {
            a.store(a.load(Ordering::Relaxed).wrapping_add(v), Ordering::Relaxed)
        };
        bump(&self.allocs[c], 1);
        bump(&self.requested, requested as u64);
        if requested as u64 > self.largest.load(Ordering::Relaxed) {
            self.largest.store(requested as u64, Ordering::Relaxed);
        }
    }

    /// Records an allocation from any thread; `usable` is summed only for
    /// large allocations (small ones derive it from the class counts).
    pub fn record_shared(&self, bucket: usize, requested: usize, usable: usize) {
        self.allocs[bucket].fetch_add(1, Ordering::Relaxed);
        self.requested
            .fetch_add(requested as u64, Ordering::Relaxed);
        if bucket == LARGE {
            self.usable.fetch_add(usable as u64, Ordering::Relaxed);
        }
        self.largest.fetch_max(requested as u64, Ordering::Relaxed);
    }

    /// Adds these counters into `into` and zeroes them.
    pub fn drain_into(&self, into: &Counters) {
        for (a, b) in self.allocs.iter().zip(&into.allocs) {
            b.fetch_add(a.swap(0, Ordering::Relaxed), Ordering::Relaxed);
        }
        into.requested
            .fetch_add(self.requested.swap(0, Ordering::Relaxed), Ordering::Relaxed);
        into.usable
            .fetch_add(self.usable.swap(0, Ordering::Relaxed), Ordering::Relaxed);
        into.largest
            .fetch_max(self.largest.load(Ordering::Relaxed), Ordering::Relaxed);
    }

    /// Adds these counters to a snapshot.
    pub fn add_to(&self, s: &mut Stats) {
        let s = &mut s.totals;
        for (c, (a, b)) in self.allocs.iter().zip(s.allocs.iter_mut()).enumerate() {
            let n = a.load(Ordering::Relaxed);
            *b += n;
            if c < NUM_CLASSES {
                s.usable += n * class_size(c) as u64;
            }
        }
        s.requested += self.requested.load(Ordering::Relaxed);
        s.usable += self.usable.load(Ordering::Relaxed);
        s.largest = s.largest.max(self.largest.load(Ordering::Relaxed));
    }
}

impl Default for Counters {
    fn default() -> Self {
        Self::new()
    }
}

/// The summed counters of a snapshot, laid out as the start of the C
/// `struct pktslab_stats` (see [`crate::capi::CStats`], which embeds it).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct Totals {
    /// Allocations per class (16 B .. 1 MiB), then large allocations.
    pub allocs: [u64; NUM_CLASSES + 1],
    /// Sum of requested bytes over all allocations.
    pub requested: u64,
    /// Sum of bytes actually handed out (piece or run sizes).
    pub usable: u64,
    /// Largest single request.
    pub largest: u64,
    /// Pinned bytes held from the backend now.
    pub bytes_pinned: u64,
    /// Unpinned fallback bytes mapped in the arena now (pinned cap reached,
    /// or a forked child's copy of its parent's pinned heap).
    pub bytes_fallback: u64,
}

/// A statistics snapshot: the [`Totals`] (read through `Deref`, so
/// `stats.allocs` works) plus ordinary memory and the backend mode.
#[derive(Debug, Clone, Copy)]
pub struct Stats {
    /// The summed counters.
    pub totals: Totals,
    /// Live bytes of malloc() requests above PKTSLAB_PIN_MAX, served from
    /// ordinary memory by the next allocator.
    pub bytes_ordinary: u64,
    /// malloc() calls served from ordinary memory (above PKTSLAB_PIN_MAX).
    pub ordinary_allocs: u64,
    /// Where physical addresses come from.
    pub mode: BackendMode,
}

impl core::ops::Deref for Stats {
    type Target = Totals;
    fn deref(&self) -> &Totals {
        &self.totals
    }
}

impl core::ops::DerefMut for Stats {
    fn deref_mut(&mut self) -> &mut Totals {
        &mut self.totals
    }
}

impl Stats {
    /// An empty snapshot for `mode`.
    pub fn empty(mode: BackendMode) -> Self {
        Self {
            totals: Totals {
                allocs: [0; NUM_CLASSES + 1],
                requested: 0,
                usable: 0,
                largest: 0,
                bytes_pinned: 0,
                bytes_fallback: 0,
            },
            bytes_ordinary: 0,
            ordinary_allocs: 0,
            mode,
        }
    }

    /// Internal waste: percentage of handed-out bytes nobody asked for.
    pub fn waste_percent(&self) -> f64 {
        if self.usable == 0 {
            0.0
        } else {
            100.0 * (self.usable - self.requested) as f64 / self.usable as f64
        }
    }

    /// Total allocations.
    pub fn total_allocs(&self) -> u64 {
        self.allocs.iter().sum()
    }

    /// Writes the multi-line report PKTSLAB_STATS=1 prints.
    pub fn write_report<W: Write>(&self, w: &mut W) -> fmt::Result {
        writeln!(w, "pktslab: backend {}", self.mode.name())?;
        for (c, &n) in self.allocs[..NUM_CLASSES].iter().enumerate() {
            if n > 0 {
                writeln!(
                    w,
                    "pktslab:   class {:>8} B: {n} allocations",
                    class_size(c)
                )?;
            }
        }
        if self.allocs[LARGE] > 0 {
            writeln!(
                w,
                "pktslab:   large (> 1 MiB): {} allocations",
                self.allocs[LARGE]
            )?;
        }
        writeln!(
            w,
            "pktslab: {} allocations, bytes pinned {}, fallback (unpinned) {}, internal waste {:.1}%, largest allocation {} B",
            self.total_allocs(),
            self.bytes_pinned,
            self.bytes_fallback,
            self.waste_percent(),
            self.largest
        )?;
        writeln!(
            w,
            "pktslab: memory now: pinned {} B, ordinary {} B ({} B in the arena past the pin cap or copied at fork, {} B live above PKTSLAB_PIN_MAX from {} allocations)",
            self.bytes_pinned,
            self.bytes_fallback + self.bytes_ordinary,
            self.bytes_fallback,
            self.bytes_ordinary,
            self.ordinary_allocs
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fault::FixedBuf;

    #[test]
    fn counters_merge_and_report() {
        let t = Counters::new();
        t.record_owned(2, 37);
        t.record_owned(2, 60);
        let h = Counters::new();
        h.record_shared(LARGE, 3 << 20, 4 << 20);
        t.drain_into(&h);
        let mut s = Stats::empty(BackendMode::HostSynthetic);
        h.add_to(&mut s);
        t.add_to(&mut s);
        assert_eq!(s.allocs[2], 2);
        assert_eq!(s.allocs[LARGE], 1);
        assert_eq!(s.largest, 3 << 20);
        assert_eq!(s.requested, 97 + (3 << 20));
        assert!(
            (s.waste_percent()
                - 100.0 * ((4 << 20) + 128 - 97 - (3 << 20)) as f64 / ((4 << 20) + 128) as f64)
                .abs()
                < 1e-9
        );
        let mut b = FixedBuf::<1024>::new();
        s.write_report(&mut b).unwrap();
        let text = core::str::from_utf8(b.as_bytes()).unwrap();
        assert!(text.contains("class       64 B: 2 allocations"), "{text}");
        assert!(text.contains("internal waste"), "{text}");
    }
}
