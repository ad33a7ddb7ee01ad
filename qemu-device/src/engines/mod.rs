//! The device's compute engines: pure functions over scattered segments.
//!
//! Each engine takes the request's input segments in order (a `&[u8]` per
//! segment) and computes exactly what its op's standard says, so that the
//! same functions serve the device, the unit tests and the benchmark's
//! "raw engine" ceiling.

pub mod copy;
pub mod crc;
pub mod csum;
pub mod gcm;
pub mod rss;
