//! The one home of the reference implementations and test vectors: the
//! device's host tests (`pktaccel-device`, as a dev-dependency) and the
//! guest suite and workloads (`pktaccel-tests`) check against the same
//! code and the same published answers.
//!
//! [`soft`] computes every op in plain software, written from the
//! standards and independent of the device's engines; [`vectors`] holds
//! the published known answers, checked against [`soft`] by this crate's
//! own tests.

pub mod soft;
pub mod vectors;
