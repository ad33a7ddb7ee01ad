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
    /// failing. Off in [`Config::default`] (a private pool exists to hold
    /// DMA buffers, so it fails loudly); on for the process heap unless
    /// PKTSLAB_STRICT=1.
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
    /// malloc() requests above this many bytes come from ordinary memory
    /// (the explicit `pktslab_*` API and [`crate::Pool`] always pin).
    pub pin_max: usize,
    /// Host backend: mark slabs MADV_DONTFORK, as the device's mappings are
    /// (`VM_DONTCOPY`), so fork handling is tested without the device.
    pub host_dontfork: bool,
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
            retain: DEFAULT_RETAIN,
            force_synthetic: false,
            print_stats: false,
            pin_max: DEFAULT_PIN_MAX,
            host_dontfork: false,
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

/// The default `PKTSLAB_PIN_MAX`: the largest malloc() request served from
/// pinned memory. The biggest single buffer a packet program hands a
/// device is a TSO/GSO super-frame: 64 KiB of payload plus headers, which
/// lands in the 128 KiB class (a 16 KiB TLS record plus its overhead is in
/// the 32 KiB class, a 9000 B jumbo frame in the 16 KiB class). Anything
/// bigger is a program's own working memory (sort's array, xz's dictionary)
/// that no device reads, and pinning it would exhaust the driver's 64 MiB
/// per-file cap for nothing.
pub const DEFAULT_PIN_MAX: usize = 128 * 1024;

/// Default bytes of freed large runs kept mapped: two full slabs, so a
/// loop that frees and reallocates a big buffer does not call the driver
/// every time, while pinned memory (64 MiB per file) is not hoarded.
pub const DEFAULT_RETAIN: usize = 4 << 20;

/// Smallest and largest arena reservation accepted from `PKTSLAB_ARENA`.
const ARENA_MIN: u64 = 64 << 20;
const ARENA_MAX: u64 = 1 << 40;

/// Where [`Config::from_lookup`] reports a malformed value: one line per
/// variable, naming it and the value used instead.
pub type Warn<'a> = &'a mut dyn FnMut(core::fmt::Arguments<'_>);

fn shown(v: &[u8]) -> &str {
    core::str::from_utf8(v).unwrap_or("<not UTF-8>")
}

fn flag_value(name: &str, v: Option<&[u8]>, default: bool, warn: Warn<'_>) -> bool {
    match v {
        None => default,
        Some(b"1" | b"yes" | b"true" | b"on") => true,
        Some(b"0" | b"no" | b"false" | b"off" | b"") => false,
        Some(x) => {
            let used = if default { "1" } else { "0" };
            warn(format_args!(
                "{name}={:?} is not 0 or 1; using {used}",
                shown(x)
            ));
            default
        }
    }
}

fn size_value(
    name: &str,
    v: Option<&[u8]>,
    default: u64,
    range: (u64, u64),
    warn: Warn<'_>,
) -> u64 {
    let Some(x) = v else { return default };
    match parse_size(x) {
        Some(n) if (range.0..=range.1).contains(&n) => n,
        Some(_) => {
            warn(format_args!(
                "{name}={:?} is outside {}..={} bytes; using {default}",
                shown(x),
                range.0,
                range.1
            ));
            default
        }
        None => {
            warn(format_args!(
                "{name}={:?} is not a size (digits with an optional K, M or G); using {default}",
                shown(x)
            ));
            default
        }
    }
}

impl Config {
    /// The configuration the process-wide heap uses, from the environment:
    /// PKTSLAB_BACKEND (auto|device|host), PKTSLAB_CACHING (uc|wc|wb),
    /// PKTSLAB_PIN_MAX, PKTSLAB_STRICT, PKTSLAB_FALLBACK, PKTSLAB_STATS,
    /// PKTSLAB_DEVICE, PKTSLAB_MAX_PINNED, PKTSLAB_ARENA, PKTSLAB_RETAIN,
    /// PKTSLAB_SYNTHETIC, PKTSLAB_HOST_DONTFORK. A malformed value prints
    /// one line on stderr and keeps the default.
    pub fn from_env() -> Self {
        Self::from_lookup(&getenv, &mut |a| crate::fault::notice(a))
    }

    /// [`Config::from_env`] over any variable source (tests).
    pub fn from_lookup(var: &dyn Fn(&CStr) -> Option<&'static CStr>, warn: Warn<'_>) -> Self {
        let get = |n: &CStr| var(n).map(CStr::to_bytes);
        let mut c = Self {
            // The process heap serves unmodified programs: it never fails
            // one for lack of pinned memory unless PKTSLAB_STRICT=1.
            fallback: true,
            ..Self::default()
        };
        match get(c"PKTSLAB_BACKEND") {
            None | Some(b"auto") => {}
            Some(b"device") => c.backend = BackendChoice::Device,
            Some(b"host") => c.backend = BackendChoice::Host,
            Some(x) => warn(format_args!(
                "PKTSLAB_BACKEND={:?} is not auto, device or host; using auto",
                shown(x)
            )),
        }
        match get(c"PKTSLAB_CACHING") {
            None | Some(b"uc") => {}
            Some(b"wc") => c.caching = CACHE_WRITE_COMBINING,
            Some(b"wb") => c.caching = CACHE_WRITE_BACK,
            Some(x) => warn(format_args!(
                "PKTSLAB_CACHING={:?} is not uc, wc or wb; using uc",
                shown(x)
            )),
        }
        if let Some(p) = var(c"PKTSLAB_DEVICE") {
            c.device_path = p;
        }
        c.max_pinned = size_value(
            "PKTSLAB_MAX_PINNED",
            get(c"PKTSLAB_MAX_PINNED"),
            u64::MAX,
            (0, u64::MAX),
            warn,
        );
        c.arena_size = size_value(
            "PKTSLAB_ARENA",
            get(c"PKTSLAB_ARENA"),
            c.arena_size as u64,
            (ARENA_MIN, ARENA_MAX),
            warn,
        ) as usize;
        c.retain = size_value(
            "PKTSLAB_RETAIN",
            get(c"PKTSLAB_RETAIN"),
            c.retain as u64,
            (0, ARENA_MAX),
            warn,
        ) as usize;
        c.pin_max = size_value(
            "PKTSLAB_PIN_MAX",
            get(c"PKTSLAB_PIN_MAX"),
            c.pin_max as u64,
            (0, ARENA_MAX),
            warn,
        ) as usize;
        let lenient = flag_value("PKTSLAB_FALLBACK", get(c"PKTSLAB_FALLBACK"), true, warn);
        let strict = flag_value("PKTSLAB_STRICT", get(c"PKTSLAB_STRICT"), false, warn);
        c.fallback = lenient && !strict;
        c.print_stats = flag_value("PKTSLAB_STATS", get(c"PKTSLAB_STATS"), false, warn);
        c.force_synthetic = flag_value("PKTSLAB_SYNTHETIC", get(c"PKTSLAB_SYNTHETIC"), false, warn);
        c.host_dontfork = flag_value(
            "PKTSLAB_HOST_DONTFORK",
            get(c"PKTSLAB_HOST_DONTFORK"),
            false,
            warn,
        );
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

    /// Parses `vars` (name, value) and returns the config and the lines warned.
    fn parse(vars: &[(&'static CStr, &'static CStr)]) -> (Config, Vec<String>) {
        let mut lines = Vec::new();
        let c = Config::from_lookup(
            &|n| vars.iter().find(|(k, _)| *k == n).map(|(_, v)| *v),
            &mut |a| lines.push(a.to_string()),
        );
        (c, lines)
    }

    #[test]
    fn defaults_pin_up_to_a_gso_frame_and_fall_back() {
        let (c, lines) = parse(&[]);
        assert!(lines.is_empty());
        assert_eq!(c.pin_max, 128 * 1024);
        assert!(
            c.fallback,
            "the process heap must not fail programs by default"
        );
        assert!(!Config::default().fallback, "private pools stay strict");
        let (c, _) = parse(&[(c"PKTSLAB_STRICT", c"1")]);
        assert!(!c.fallback);
        let (c, _) = parse(&[(c"PKTSLAB_FALLBACK", c"0")]);
        assert!(!c.fallback);
        let (c, lines) = parse(&[(c"PKTSLAB_PIN_MAX", c"16M"), (c"PKTSLAB_BACKEND", c"host")]);
        assert_eq!((c.pin_max, c.backend), (16 << 20, BackendChoice::Host));
        assert!(lines.is_empty());
    }

    #[test]
    fn every_bad_value_gives_one_line_naming_the_variable_and_the_value_used() {
        let cases: &[(&CStr, &CStr, &str)] = &[
            (c"PKTSLAB_BACKEND", c"gpu", "using auto"),
            (c"PKTSLAB_CACHING", c"fast", "using uc"),
            (c"PKTSLAB_PIN_MAX", c"12x", "using 131072"),
            (c"PKTSLAB_MAX_PINNED", c"lots", "using 18446744073709551615"),
            (c"PKTSLAB_ARENA", c"1K", "using 68719476736"),
            (c"PKTSLAB_ARENA", c"", "using 68719476736"),
            (c"PKTSLAB_RETAIN", c"-1", "using 4194304"),
        ];
        // The flags: each takes 0 or 1 and keeps its default otherwise.
        let flags: &[(&CStr, &str)] = &[
            (c"PKTSLAB_STRICT", "using 0"),
            (c"PKTSLAB_FALLBACK", "using 1"),
            (c"PKTSLAB_STATS", "using 0"),
            (c"PKTSLAB_SYNTHETIC", "using 0"),
            (c"PKTSLAB_HOST_DONTFORK", "using 0"),
        ];
        let flag_cases = flags.iter().map(|&(var, used)| (var, c"maybe", used));
        for (var, value, used) in cases.iter().copied().chain(flag_cases) {
            // SAFETY of 'static: the literals above are 'static.
            let (c, lines) = parse(&[(var, value)]);
            let name = var.to_str().unwrap();
            assert_eq!(lines.len(), 1, "{name}: {lines:?}");
            let l = &lines[0];
            assert!(l.starts_with(name), "{l}");
            assert!(l.contains(&format!("{:?}", value.to_str().unwrap())), "{l}");
            assert!(l.ends_with(used), "{l}");
            let d = parse(&[]).0;
            assert_eq!(
                (
                    c.pin_max,
                    c.arena_size,
                    c.retain,
                    c.fallback,
                    c.print_stats,
                    c.backend
                ),
                (
                    d.pin_max,
                    d.arena_size,
                    d.retain,
                    d.fallback,
                    d.print_stats,
                    d.backend
                ),
                "{name}: a bad value must keep the default"
            );
        }
    }
}
