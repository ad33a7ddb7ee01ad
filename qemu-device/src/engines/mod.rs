//! The device's compute engines over scattered segments.
//!
//! Each engine computes exactly what its op's standard says over the
//! request's input segments in order, so that the same code serves the
//! device, the unit tests and the benchmark's "raw engine" ceiling. Guest
//! memory may change under the device, so the device never hands an engine
//! a `&[u8]` over it: the checksum and CRC engines take raw pieces
//! (`update_raw`, each byte read once with volatile loads), and RSS, AES-GCM
//! and key loading run on a private copy (see `crate::request`). The
//! `&[u8]` entry points serve tests and host-side callers.

pub mod copy;
pub mod crc;
pub mod crc32_fold;
pub mod csum;
pub mod gcm;
pub mod rss;
