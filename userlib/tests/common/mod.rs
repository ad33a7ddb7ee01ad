//! What the client tests share.

use pktslab::{BackendChoice, Config, Pool};

/// A host pool with synthetic physical addresses (contiguous in 16 KiB
/// chunks with gaps, so segment splitting happens on any host).
pub fn synthetic_pool(arena_size: usize) -> Pool {
    Pool::new(Config {
        backend: BackendChoice::Host,
        force_synthetic: true,
        arena_size,
        ..Default::default()
    })
    .unwrap()
}
