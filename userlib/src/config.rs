//! Configuration, read from the environment without allocating.
//!
//! The global heap is configured inside the first malloc() call, where
//! `std::env::var` (which allocates a String) would recurse; `getenv`
//! returns a pointer into the environment block and allocates nothing.

use core::ffi::CStr;

use pktaccel_abi::{CACHE_UNCACHED, CACHE_WRITE_BACK, CACHE_WRITE_COMBINING};

/// Which slab source to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendChoice {
    /// The device when its node exists, else the host backend.
    Auto,
    /// `/dev/pktaccel` only: if it is missing, say so and follow the
    /// fallback rule.
    Device,
    /// Anonymous host memory (tests and benchmarks).
    Host,
}

/// Heap configuration.
#[derive(Debug, Clone, Copy)]
pub struct Config {
    /// Slab source.
    pub backend: BackendChoice,
    /// Device node path.
    pub device_path: &'static CStr,
    /// Device slab caching mode (`CACHE_*`).
    pub caching: u32,
    /// When pinned memory runs out, hand out ordinary memory instead of
    /// failing (PKTSLAB_FALLBACK=1).
    pub fallback: bool,
    /// Host backend: most bytes it will pin (simulates the driver's cap).
    pub max_pinned: u64,
    /// Bytes of virtual address space reserved for the arena.
    pub arena_size: usize,
    /// Bytes of freed large-allocation slabs kept mapped for reuse.
    pub retain: usize,
    /// Host backend: ignore /proc/self/pagemap and use synthetic addresses.
    pub force_synthetic: bool,
    /// Print statistics at exit.
    pub print_stats: bool,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            backend: BackendChoice::Auto,
            device_path: c"/dev/pktaccel",
            caching: CACHE_UNCACHED,
            fallback: false,
            max_pinned: u64::MAX,
            arena_size: 64 << 30,
            retain: 64 << 20,
            force_synthetic: false,
            print_stats: false,
        }
    }
}

/// The value of environment variable `name`, without allocating.
pub fn getenv(name: &CStr) -> Option<&'static CStr> {
    // SAFETY: name is NUL-terminated; getenv returns NULL or a pointer into
    // the environment, which lives as long as the process unless someone
    // calls setenv on the same name (the same contract as every C user).
    let p = unsafe { libc::getenv(name.as_ptr()) };
    if p.is_null() {
        None
    } else {
        // SAFETY: non-NULL getenv results are NUL-terminated strings.
        Some(unsafe { CStr::from_ptr(p) })
    }
}

/// Parses a byte count with an optional K/M/G suffix ("512M").
pub fn parse_size(s: &[u8]) -> Option<u64> {
    let (digits, mult) = match s.last()? {
        b'k' | b'K' => (&s[..s.len() - 1], 1u64 << 10),
        b'm' | b'M' => (&s[..s.len() - 1], 1 << 20),
        b'g' | b'G' => (&s[..s.len() - 1], 1 << 30),
        _ => (s, 1),
    };
    if digits.is_empty() {
        return None;
    }
    let mut v: u64 = 0;
    for &d in digits {
        if !d.is_ascii_digit() {
            return None;
        }
        v = v.checked_mul(10)?.checked_add(u64::from(d - b'0'))?;
    }
    v.checked_mul(mult)
}

fn flag(name: &CStr) -> bool {
    matches!(
        getenv(name).map(CStr::to_bytes),
        Some(b"1" | b"yes" | b"true" | b"on")
    )
}

impl Config {
    /// The configuration the process-wide heap uses: PKTSLAB_BACKEND
    /// (auto|device|host), PKTSLAB_CACHING (uc|wc|wb), PKTSLAB_FALLBACK,
    /// PKTSLAB_STATS, PKTSLAB_DEVICE, PKTSLAB_MAX_PINNED, PKTSLAB_ARENA,
    /// PKTSLAB_RETAIN, PKTSLAB_SYNTHETIC. Unknown values keep the default.
    pub fn from_env() -> Self {
        let mut c = Self::default();
        match getenv(c"PKTSLAB_BACKEND").map(CStr::to_bytes) {
            Some(b"device") => c.backend = BackendChoice::Device,
            Some(b"host") => c.backend = BackendChoice::Host,
            _ => {}
        }
        match getenv(c"PKTSLAB_CACHING").map(CStr::to_bytes) {
            Some(b"wc") => c.caching = CACHE_WRITE_COMBINING,
            Some(b"wb") => c.caching = CACHE_WRITE_BACK,
            _ => c.caching = CACHE_UNCACHED,
        }
        if let Some(p) = getenv(c"PKTSLAB_DEVICE") {
            c.device_path = p;
        }
        if let Some(v) = getenv(c"PKTSLAB_MAX_PINNED").and_then(|s| parse_size(s.to_bytes())) {
            c.max_pinned = v;
        }
        if let Some(v) = getenv(c"PKTSLAB_ARENA").and_then(|s| parse_size(s.to_bytes())) {
            c.arena_size = v as usize;
        }
        if let Some(v) = getenv(c"PKTSLAB_RETAIN").and_then(|s| parse_size(s.to_bytes())) {
            c.retain = v as usize;
        }
        c.fallback = flag(c"PKTSLAB_FALLBACK");
        c.print_stats = flag(c"PKTSLAB_STATS");
        c.force_synthetic = flag(c"PKTSLAB_SYNTHETIC");
        c
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse() {
        assert_eq!(parse_size(b"4096"), Some(4096));
        assert_eq!(parse_size(b"4k"), Some(4096));
        assert_eq!(parse_size(b"2M"), Some(2 << 20));
        assert_eq!(parse_size(b"64G"), Some(64 << 30));
        assert_eq!(parse_size(b"M"), None);
        assert_eq!(parse_size(b"12x"), None);
        assert_eq!(parse_size(b""), None);
        assert_eq!(parse_size(b"99999999999999999999"), None);
    }
}
