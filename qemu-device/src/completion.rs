//! The seam where a finished request's completion can be altered before
//! the driver sees it: fault injection plugs in here.
//!
//! Both request paths call [`CompletionHook::decide`] once per request,
//! after the op ran and before its status record is written and its used
//! element published, so a hook can delay, re-status, drop or mis-length any
//! completion without touching the request path itself.

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
}

/// Decides, per request, what happens to its completion.
pub trait CompletionHook: Send + Sync + std::fmt::Debug {
    /// Called once per request, on the queue's worker thread, so it should
    /// be cheap; a decision with no field set costs nothing further.
    fn decide(&self, c: &Completion) -> Decision;
}
