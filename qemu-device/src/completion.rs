//! The seam where a finished request's completion can be altered before
//! the driver sees it: fault injection plugs in here.
//!
//! Both request paths call [`CompletionHook::decide`] once per request,
//! after the op ran and before its status record is written and its used
//! element published, so a hook can delay, re-status, drop or mis-length any
//! completion without touching the request path itself, give its status
//! record a false length, or publish a used element besides it that
//! completes no request.

use std::time::Duration;

/// A finished request, as the hook sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Completion {
    /// Queue index.
    pub queue: usize,
    /// Head descriptor of the chain.
    pub head: u16,
    /// The op, once the header could be read.
    pub op: Option<u16>,
    /// The status the device is about to write; `None` when the chain has
    /// no usable status descriptor (it is returned unanswered).
    pub status: Option<u32>,
    /// The used length the device is about to publish.
    pub used_len: u32,
}

/// What to do with a completion. The default publishes it unchanged.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Decision {
    /// Wait this long before publishing it (and everything after it: the
    /// device completes in order, like a slow engine would).
    pub delay: Option<Duration>,
    /// Write this status instead (its `len` and `result` become 0 unless it
    /// is OK). Ignored for a chain without a usable status descriptor.
    pub status: Option<u32>,
    /// Publish this used length instead.
    pub used_len: Option<u32>,
    /// Never complete it: no status record, no used element.
    pub drop: bool,
    /// Write this `len` in the status record instead of the true one
    /// (after `status`): a device claiming more output than it was given.
    pub status_len: Option<u32>,
    /// Publish, after its used element (or in its place, when dropped),
    /// one more that completes no request. Only the fast path does
    /// (rings inside one memory region, as QEMU's always are):
    /// virtio-queue's slow path publishes no id it did not hand out.
    pub bogus_used: Option<BogusUsed>,
}

/// A used element naming no request the driver has in flight: the device
/// bugs a driver must survive without completing the wrong request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BogusUsed {
    /// An id past the ring (`size + head`): it names no descriptor.
    OutOfRange,
    /// The completed chain's head again, right after it: a chain the
    /// driver already has back.
    Duplicate,
    /// The head half a ring away: inside the ring, but no chain the driver
    /// made available unless it keeps more than half a ring in flight (then
    /// it names a real request, as a lying device would).
    NotInFlight,
}

impl BogusUsed {
    /// Every mode, for parsing and listing.
    pub const ALL: [BogusUsed; 3] = [Self::OutOfRange, Self::Duplicate, Self::NotInFlight];

    /// The name `--fault bogus-used=NAME` takes.
    pub fn name(self) -> &'static str {
        match self {
            Self::OutOfRange => "out-of-range",
            Self::Duplicate => "duplicate",
            Self::NotInFlight => "not-in-flight",
        }
    }

    /// The id to publish for the chain at `head` on a ring of `size`
    /// entries (at most 32768, so `size + head` fits).
    pub fn id(self, head: u16, size: u16) -> u16 {
        let size = u32::from(size.max(1));
        let head = u32::from(head) % size;
        let id = match self {
            Self::OutOfRange => size + head,
            Self::Duplicate => head,
            Self::NotInFlight => (head + size / 2) % size,
        };
        id.min(u32::from(u16::MAX)) as u16
    }
}

/// Decides, per request, what happens to its completion.
pub trait CompletionHook: Send + Sync + std::fmt::Debug {
    /// Called once per request, on the queue's worker thread, so it should
    /// be cheap; a decision with no field set costs nothing further.
    fn decide(&self, c: &Completion) -> Decision;
}
