//! Guest memory as the request path touches it: a region table captured
//! once per batch, and volatile accessors for the few fixed-size records the
//! device reads and writes (descriptors, request header, status record).
//!
//! The guest can write its memory at any time, so nothing here ever makes a
//! `&[u8]` over it: every read is a volatile load into a private copy that
//! the device then checks and uses, so a value can never change between its
//! check and its use.

use std::ptr;

use vm_memory::{
    Address, Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryRegion, MemoryRegionAddress,
};

/// Most regions kept in the table; a guest with more falls back to
/// vm-memory for every translation (correct, only slower).
const MAX_REGIONS: usize = 8;

/// Guest RAM as (guest start, length, host address) triples, so that a
/// translation is a few compares instead of a vm-memory lookup apiece.
#[derive(Clone, Copy, Debug)]
pub struct Regions {
    r: [(u64, u64, usize); MAX_REGIONS],
    n: usize,
}

impl Regions {
    /// The table of `mem` (empty when `mem` has more than
    /// `MAX_REGIONS` (8) regions or one without a host mapping).
    pub fn of<M: GuestMemoryBackend>(mem: &M) -> Self {
        let mut me = Self {
            r: [(0, 0, 0); MAX_REGIONS],
            n: 0,
        };
        for region in mem.iter() {
            let Ok(host) = region.get_host_address(MemoryRegionAddress(0)) else {
                return Self { n: 0, ..me };
            };
            if me.n == me.r.len() {
                return Self { n: 0, ..me };
            }
            me.r[me.n] = (region.start_addr().raw_value(), region.len(), host as usize);
            me.n += 1;
        }
        me
    }

    /// Host address of `addr..addr+len` when that range lies inside one
    /// region. `None` also when it does not: the caller then asks
    /// vm-memory, which handles ranges spanning regions and reports errors.
    #[inline]
    pub fn host(&self, addr: u64, len: u64) -> Option<*mut u8> {
        self.r[..self.n].iter().find_map(|&(start, size, host)| {
            let off = addr.checked_sub(start)?;
            (off < size && len <= size - off).then(|| (host + off as usize) as *mut u8)
        })
    }
}

// A separate impl block on purpose: with this method in the one above,
// the in-process NOP path measured 32 instead of 20 ns (codegen, not logic).
impl Regions {
    /// [`host`](Self::host), trying region `*hint` first and leaving in
    /// `*hint` the region the range was found in.
    #[inline]
    pub fn host_hinted(&self, addr: u64, len: u64, hint: &mut usize) -> Option<*mut u8> {
        let inside = |&(start, size, host): &(u64, u64, usize)| {
            let off = addr.checked_sub(start)?;
            (off < size && len <= size - off).then(|| (host + off as usize) as *mut u8)
        };
        if let Some(p) = self.r[..self.n].get(*hint).and_then(inside) {
            return Some(p);
        }
        let (i, p) = self.r[..self.n]
            .iter()
            .enumerate()
            .find_map(|(i, r)| Some((i, inside(r)?)))?;
        *hint = i;
        Some(p)
    }
}

/// Copies `N` bytes from guest memory at host address `p` with volatile
/// loads (8 bytes at a time when `p` allows it).
///
/// # Safety
/// `p..p+N` must lie inside a live guest mapping.
#[inline]
pub unsafe fn read_bytes<const N: usize>(p: *const u8) -> [u8; N] {
    let mut out = [0u8; N];
    if N.is_multiple_of(8) && (p as usize).is_multiple_of(8) {
        for i in 0..N / 8 {
            // SAFETY: in bounds and 8-aligned (checked above); the caller
            // guarantees the mapping is live. A volatile load reads the
            // guest's bytes exactly once, whatever the guest does meanwhile.
            let w = unsafe { ptr::read_volatile(p.cast::<u64>().add(i)) };
            out[i * 8..i * 8 + 8].copy_from_slice(&w.to_ne_bytes());
        }
    } else {
        for (i, b) in out.iter_mut().enumerate() {
            // SAFETY: in bounds (the caller's contract); bytes need no alignment.
            *b = unsafe { ptr::read_volatile(p.add(i)) };
        }
    }
    out
}

/// Writes `bytes` to guest memory at host address `p` with volatile stores.
///
/// # Safety
/// `p..p+N` must lie inside a live, writable guest mapping.
#[inline]
pub unsafe fn write_bytes<const N: usize>(p: *mut u8, bytes: &[u8; N]) {
    if N.is_multiple_of(8) && (p as usize).is_multiple_of(8) {
        for i in 0..N / 8 {
            let w = u64::from_ne_bytes(bytes[i * 8..i * 8 + 8].try_into().unwrap_or([0; 8]));
            // SAFETY: in bounds and 8-aligned (checked above), in a live
            // writable mapping (the caller's contract).
            unsafe { ptr::write_volatile(p.cast::<u64>().add(i), w) };
        }
    } else {
        for (i, &b) in bytes.iter().enumerate() {
            // SAFETY: in bounds (the caller's contract).
            unsafe { ptr::write_volatile(p.add(i), b) };
        }
    }
}

/// Reads `N` bytes at guest address `addr`: through the region table when
/// the range lies in one region, else through vm-memory. `None` when any
/// byte is outside guest memory.
#[inline]
pub fn read_guest<const N: usize, M: GuestMemoryBackend>(
    regions: &Regions,
    mem: &M,
    addr: u64,
) -> Option<[u8; N]> {
    if let Some(p) = regions.host(addr, N as u64) {
        // SAFETY: `p..p+N` lies in a region of `mem`, which the caller
        // borrows for this call, so the mapping is live.
        return Some(unsafe { read_bytes::<N>(p) });
    }
    let mut out = [0u8; N];
    mem.read_slice(&mut out, GuestAddress(addr)).ok()?;
    Some(out)
}

/// Where a status record goes: a host address, or (a record spanning two
/// regions) a guest address for vm-memory.
#[derive(Clone, Copy, Debug)]
pub enum Target {
    /// Inside one region.
    Host(*mut u8),
    /// Across regions; written through vm-memory.
    Guest(u64),
}

impl Target {
    /// The target for `len` bytes at `addr`, or `None` when any of them is
    /// outside guest memory.
    #[inline]
    pub fn of<M: GuestMemoryBackend>(
        regions: &Regions,
        mem: &M,
        addr: u64,
        len: usize,
    ) -> Option<Self> {
        if let Some(p) = regions.host(addr, len as u64) {
            return Some(Self::Host(p));
        }
        mem.check_range(GuestAddress(addr), len)
            .then_some(Self::Guest(addr))
    }

    /// Writes two little-endian words (a status record) with two volatile
    /// stores when the target allows; false when the memory went away.
    ///
    /// # Safety
    /// As for [`write`](Self::write), for 16 bytes.
    #[inline]
    pub unsafe fn write_words<M: GuestMemoryBackend>(self, mem: &M, w: [u64; 2]) -> bool {
        if let Self::Host(p) = self
            && (p as usize).is_multiple_of(8)
        {
            let p = p.cast::<u64>();
            // SAFETY: 16 bytes in a live mapping (the caller's contract),
            // 8-aligned (checked).
            unsafe {
                ptr::write_volatile(p, w[0].to_le());
                ptr::write_volatile(p.add(1), w[1].to_le());
            }
            return true;
        }
        let mut b = [0u8; 16];
        b[..8].copy_from_slice(&w[0].to_le_bytes());
        b[8..].copy_from_slice(&w[1].to_le_bytes());
        // SAFETY: the caller's contract.
        unsafe { self.write(mem, &b) }
    }

    /// Writes `bytes`; false when the memory went away meanwhile.
    ///
    /// # Safety
    /// A `Host` target must come from [`Target::of`] on memory that is still
    /// mapped (the caller holds the guest-memory guard), for `N` bytes.
    #[inline]
    pub unsafe fn write<const N: usize, M: GuestMemoryBackend>(
        self,
        mem: &M,
        bytes: &[u8; N],
    ) -> bool {
        match self {
            // SAFETY: the caller's contract.
            Self::Host(p) => unsafe { write_bytes(p, bytes) },
            Self::Guest(a) => return mem.write_slice(bytes, GuestAddress(a)).is_ok(),
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vm_memory::GuestMemoryMmap;

    #[test]
    fn reads_and_writes_within_and_across_regions() {
        let m: GuestMemoryMmap<()> = GuestMemoryMmap::from_ranges(&[
            (GuestAddress(0), 0x1000),
            (GuestAddress(0x1000), 0x1000),
        ])
        .unwrap();
        let r = Regions::of(&m);
        assert!(r.host(0xff8, 8).is_some());
        assert!(r.host(0xff8, 16).is_none());
        // The hinted lookup finds the same, whatever the hint says.
        let mut hint = 0;
        assert_eq!(r.host_hinted(0x1008, 8, &mut hint), r.host(0x1008, 8));
        assert_eq!(hint, 1);
        assert_eq!(r.host_hinted(0x10, 8, &mut hint), r.host(0x10, 8));
        assert_eq!(hint, 0);
        assert_eq!(r.host_hinted(0xff8, 16, &mut hint), None);
        hint = 7;
        assert_eq!(r.host_hinted(0x1ff8, 8, &mut hint), r.host(0x1ff8, 8));
        assert_eq!(hint, 1);
        let data: [u8; 16] = std::array::from_fn(|i| i as u8 + 1);
        for addr in [0x10, 0x13, 0xff8] {
            let t = Target::of(&r, &m, addr, 16).unwrap();
            // SAFETY: `m` is alive and `t` came from it.
            assert!(unsafe { t.write(&m, &data) });
            assert_eq!(read_guest::<16, _>(&r, &m, addr), Some(data));
        }
        assert!(Target::of(&r, &m, 0x1ff8, 16).is_none());
        assert_eq!(read_guest::<16, _>(&r, &m, 0x1ff8), None);
        assert_eq!(read_guest::<16, _>(&r, &m, u64::MAX - 3), None);
    }
}
