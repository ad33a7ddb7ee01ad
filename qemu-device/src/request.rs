//! One request = one descriptor chain: validation, address translation, and
//! dispatch to the engines.
//!
//! Layout (see `pktaccel_abi`): `[header R, 64 B][inputs R …][outputs W …]
//! [status W, 16 B]`. Checks run in this order and the first failure decides
//! the status code:
//!
//! 1. the last descriptor must be writable, exactly 16 bytes and inside guest
//!    memory, or there is nowhere to report anything: the chain is returned
//!    with used length 0 and counted as "no status";
//! 2. the first descriptor must be readable and exactly 64 bytes
//!    (BAD_REQUEST), inside guest memory (BAD_ADDRESS);
//! 3. `flags` and `reserved` must be zero (BAD_REQUEST);
//! 4. the op must be known and advertised (UNSUPPORTED);
//! 5. at most `max_segments` data segments, none of zero length, no
//!    readable one after a writable one (BAD_REQUEST);
//! 6. inputs and outputs each at most `max_request_bytes` (TOO_BIG);
//! 7. every segment inside guest memory, without wrapping (BAD_ADDRESS);
//! 8. the op's own checks: NO_KEY, BAD_REQUEST (input size), SHORT_OUTPUT,
//!    AUTH_FAILED.
//!
//! Every check runs on the device's private copy of the descriptors and of
//! the header (see [`crate::ring`]), never on guest memory itself.

use std::ptr;
use std::sync::Arc;

use pktaccel_abi::*;
use tracing::debug;
use virtio_queue::desc::split::Descriptor;
use vm_memory::{GuestAddress, GuestMemoryBackend};

use crate::completion::{Completion, CompletionHook, Decision};
use crate::engines::{copy, crc, csum::Csum, gcm, rss};
use crate::guest::{Regions, Target, read_guest};
use crate::keys::KeySlots;
use crate::ring::Desc;
use crate::stats::Shard;

/// A host-mapped piece of a guest segment (a segment spanning two guest
/// memory regions becomes two pieces).
#[derive(Clone, Copy, Debug)]
struct Seg {
    ptr: *mut u8,
    len: usize,
}

// SAFETY: a `Seg` is only an address and a length; it is dereferenced only
// by the worker that resolved it, while that worker holds the guest-memory
// guard that keeps the mapping alive, and segment lists are cleared at the
// end of every request. Sending the (empty) scratch lists between threads is
// therefore sound.
unsafe impl Send for Seg {}

/// Per-worker reusable buffers, so that the hot path does not allocate.
#[derive(Debug, Default)]
pub struct Scratch {
    pub(crate) descs: Vec<Desc>,
    ins: Vec<Seg>,
    outs: Vec<Seg>,
    buf: Vec<u8>,
}

/// What the device does to a request: the engines plus the limits it
/// advertised in config space.
#[derive(Debug)]
pub struct Processor {
    /// Advertised op bitmap.
    pub ops: u32,
    /// Maximum data segments per request.
    pub max_segments: u32,
    /// Maximum input bytes and output bytes per request.
    pub max_request_bytes: u32,
    /// AES key slots.
    pub keys: KeySlots,
    /// Consulted for every finished request before it is published (fault
    /// injection); `None` publishes every completion as it is.
    pub hook: Option<Arc<dyn CompletionHook>>,
}

/// A successful op: what goes in the status record.
struct Done {
    len: u32,
    result: u64,
}

/// A failed request: its status code and the output bytes written anyway
/// (AUTH_FAILED zeroes the outputs).
struct Fail {
    status: u32,
    written: u32,
}

fn fail(status: u32) -> Fail {
    Fail { status, written: 0 }
}

/// A processed request whose status record is not written yet.
#[derive(Clone, Copy, Debug)]
pub struct Outcome {
    /// Where the status record goes; `None` when the chain has no usable
    /// status descriptor (it is returned unanswered, used length 0).
    target: Option<Target>,
    /// The record to write.
    pub record: StatusRecord,
    /// Bytes written to the outputs.
    pub written: u32,
    /// The op, once the header was read.
    pub op: Option<u16>,
}

impl Outcome {
    /// The used length this outcome publishes: the output bytes plus the
    /// status record, or 0 for a chain returned unanswered.
    #[inline]
    pub fn used_len(&self) -> u32 {
        match self.target {
            Some(_) => self.written.saturating_add(STATUS_RECORD_SIZE as u32),
            None => 0,
        }
    }
}

impl Processor {
    /// A processor for the given limits with `key_slots` empty key slots.
    pub fn new(ops: u32, max_segments: u32, max_request_bytes: u32, key_slots: u32) -> Self {
        Self {
            ops,
            max_segments,
            max_request_bytes,
            keys: KeySlots::new(key_slots),
            hook: None,
        }
    }

    /// Processes one chain given as descriptors (the slow path and tests)
    /// and returns the used length to report. Never panics on guest input;
    /// every outcome is counted in `stats`.
    pub fn process<M: GuestMemoryBackend>(
        &self,
        mem: &M,
        chain: impl Iterator<Item = Descriptor>,
        scratch: &mut Scratch,
        stats: &Shard,
    ) -> u32 {
        scratch.descs.clear();
        scratch.descs.extend(chain.map(|d| Desc {
            addr: d.addr().0,
            len: d.len(),
            write: d.is_write_only(),
        }));
        let regions = Regions::of(mem);
        let out = self.execute(mem, &regions, scratch, stats);
        self.finish(mem, out, stats)
    }

    /// Processes the chain in `scratch.descs` for queue `queue`, head
    /// `head`, lets the hook decide, and writes the status record. Returns
    /// the used length to publish and the decision (whose `drop` and
    /// `delay` the caller carries out).
    #[inline]
    pub fn complete<M: GuestMemoryBackend>(
        &self,
        mem: &M,
        regions: &Regions,
        (queue, head): (usize, u16),
        scratch: &mut Scratch,
        stats: &Shard,
    ) -> (u32, Decision) {
        let mut out = self.execute(mem, regions, scratch, stats);
        let Some(hook) = &self.hook else {
            return (self.finish(mem, out, stats), Decision::default());
        };
        // The seam for injected faults: the request is done, nothing of its
        // completion is visible to the driver yet.
        let d = hook.decide(&Completion {
            queue,
            head,
            op: out.op,
            status: out.target.map(|_| out.record.status),
            used_len: out.used_len(),
        });
        if d.drop {
            return (0, d);
        }
        if let Some(s) = d.status {
            out.record = StatusRecord {
                status: s,
                len: if s == STATUS_OK { out.record.len } else { 0 },
                result: if s == STATUS_OK { out.record.result } else { 0 },
            };
        }
        let used = self.finish(mem, out, stats);
        (d.used_len.unwrap_or(used), d)
    }

    /// Validates and runs the chain in `scratch.descs`; the status record
    /// is left for [`finish`](Self::finish).
    pub fn execute<M: GuestMemoryBackend>(
        &self,
        mem: &M,
        regions: &Regions,
        scratch: &mut Scratch,
        stats: &Shard,
    ) -> Outcome {
        let none = Outcome {
            target: None,
            record: StatusRecord::default(),
            written: 0,
            op: None,
        };
        let Some(&status_desc) = scratch.descs.last() else {
            return none;
        };
        let target = if status_desc.write && status_desc.len as usize == STATUS_RECORD_SIZE {
            Target::of(regions, mem, status_desc.addr, STATUS_RECORD_SIZE)
        } else {
            None
        };
        if target.is_none() {
            return none;
        }
        let mut op = None;
        let res = self.run(mem, regions, scratch, stats, &mut op);
        scratch.ins.clear();
        scratch.outs.clear();
        let (record, written) = match res {
            Ok(d) => (
                StatusRecord {
                    status: STATUS_OK,
                    len: d.len,
                    result: d.result,
                },
                d.len,
            ),
            Err(f) => (
                StatusRecord {
                    status: f.status,
                    len: 0,
                    result: 0,
                },
                f.written,
            ),
        };
        Outcome {
            target,
            record,
            written,
            op,
        }
    }

    /// Writes the status record of `out` and counts it; returns the used
    /// length (bytes written into device-writable descriptors).
    #[inline]
    pub fn finish<M: GuestMemoryBackend>(&self, mem: &M, out: Outcome, stats: &Shard) -> u32 {
        let Some(target) = out.target else {
            debug!("no usable status descriptor: chain returned unanswered");
            stats.no_status();
            return 0;
        };
        let r = &out.record;
        let words = [u64::from(r.status) | u64::from(r.len) << 32, r.result];
        // SAFETY: `target` came from `Target::of` on `mem`, which the caller
        // still borrows, so a host target is still mapped.
        if !unsafe { target.write_words(mem, words) } {
            // Checked in execute; only a concurrent memory-map change gets here.
            stats.no_status();
            return out.written;
        }
        stats.status(out.record.status);
        if out.record.status != STATUS_OK {
            debug!(
                status = status_name(out.record.status),
                op = out.op.map(op_name),
                op_code = out.op,
                "request rejected"
            );
        }
        out.used_len()
    }

    fn run<M: GuestMemoryBackend>(
        &self,
        mem: &M,
        regions: &Regions,
        s: &mut Scratch,
        stats: &Shard,
        op: &mut Option<u16>,
    ) -> Result<Done, Fail> {
        let n = s.descs.len() - 1; // excluding the status descriptor
        let Some(&h) = s.descs[..n].first() else {
            return Err(fail(STATUS_BAD_REQUEST));
        };
        if h.write || h.len as usize != REQUEST_HEADER_SIZE {
            return Err(fail(STATUS_BAD_REQUEST));
        }
        let hdr = read_header(regions, mem, h.addr).ok_or(fail(STATUS_BAD_ADDRESS))?;
        *op = Some(hdr.op);
        if hdr.flags != 0 || hdr.reserved != 0 {
            return Err(fail(STATUS_BAD_REQUEST));
        }
        if hdr.op >= OP_COUNT || self.ops & (1 << hdr.op) == 0 {
            return Err(fail(STATUS_UNSUPPORTED));
        }

        let segs = &s.descs[1..n];
        if segs.len() > self.max_segments as usize {
            return Err(fail(STATUS_BAD_REQUEST));
        }
        let (mut in_total, mut out_total, mut seen_write) = (0u64, 0u64, false);
        for d in segs {
            if d.len == 0 || (seen_write && !d.write) {
                return Err(fail(STATUS_BAD_REQUEST));
            }
            seen_write |= d.write;
            if d.write {
                out_total += u64::from(d.len);
            } else {
                in_total += u64::from(d.len);
            }
        }
        let max = u64::from(self.max_request_bytes);
        if in_total > max || out_total > max {
            return Err(fail(STATUS_TOO_BIG));
        }
        s.ins.clear();
        s.outs.clear();
        for d in segs {
            let list = if d.write { &mut s.outs } else { &mut s.ins };
            resolve(mem, regions, d, list).map_err(|()| fail(STATUS_BAD_ADDRESS))?;
        }
        // Both totals are at most max_request_bytes (u32) from here on.
        let (in_total, out_total) = (in_total as usize, out_total as usize);
        stats.op(hdr.op, in_total as u64);

        // The engines read the inputs by host address, each byte once (see
        // `crate::engines`); nothing makes a `&[u8]` over guest memory.
        match hdr.op {
            OP_NOP => Ok(Done { len: 0, result: 0 }),
            OP_CSUM => {
                let mut c = Csum::new(hdr.aux);
                for g in &s.ins {
                    // SAFETY: resolved from `mem`, which the caller keeps
                    // mapped for this call.
                    unsafe { c.update_raw(g.ptr, g.len) };
                }
                Ok(Done {
                    len: 0,
                    result: u64::from(c.finish()),
                })
            }
            OP_CRC32C => {
                let mut c = crc::Crc32c::new(hdr.aux);
                for g in &s.ins {
                    // SAFETY: as for CSUM.
                    unsafe { c.update_raw(g.ptr, g.len) };
                }
                Ok(Done {
                    len: 0,
                    result: u64::from(c.finish()),
                })
            }
            OP_CRC32 => {
                let mut c = crc::Crc32Stream::new(hdr.aux, &mut s.buf);
                for g in &s.ins {
                    // SAFETY: as for CSUM.
                    unsafe { c.update_raw(g.ptr, g.len) };
                }
                Ok(Done {
                    len: 0,
                    result: u64::from(c.finish()),
                })
            }
            OP_RSS => {
                if in_total > rss::RSS_MAX_INPUT {
                    return Err(fail(STATUS_BAD_REQUEST));
                }
                gather(&s.ins, &mut s.buf);
                let key: &[u8; RSS_KEY_LEN] = &hdr.params;
                let hash =
                    rss::toeplitz(key, [&s.buf[..]]).map_err(|_| fail(STATUS_BAD_REQUEST))?;
                Ok(Done {
                    len: 0,
                    result: u64::from(hash),
                })
            }
            OP_AES_GCM_SEAL | OP_AES_GCM_OPEN => {
                let key = self
                    .keys
                    .get(hdr.key_slot)
                    .map_err(|_| fail(STATUS_NO_KEY))?;
                let iv: [u8; GCM_IV_LEN] = hdr.params[..GCM_IV_LEN]
                    .try_into()
                    .map_err(|_| fail(STATUS_BAD_REQUEST))?;
                let aad = hdr.aux as usize;
                let seal = hdr.op == OP_AES_GCM_SEAL;
                let tail = if seal { 0 } else { GCM_TAG_LEN };
                if aad + tail > in_total {
                    return Err(fail(STATUS_BAD_REQUEST));
                }
                let data_len = in_total - aad - tail;
                let need = if seal {
                    data_len + GCM_TAG_LEN
                } else {
                    data_len
                };
                if out_total < need {
                    return Err(fail(STATUS_SHORT_OUTPUT));
                }
                gather(&s.ins, &mut s.buf);
                let (a, rest) = s.buf.split_at_mut(aad);
                let (data, tag) = rest.split_at_mut(data_len);
                if seal {
                    let t = gcm::seal(&key, &iv, a, data);
                    scatter(&s.outs, &[data, &t]);
                } else {
                    let t: &[u8; GCM_TAG_LEN] =
                        (&*tag).try_into().map_err(|_| fail(STATUS_BAD_REQUEST))?;
                    if gcm::open(&key, &iv, a, data, t).is_err() {
                        zero(&s.outs);
                        return Err(Fail {
                            status: STATUS_AUTH_FAILED,
                            written: out_total as u32,
                        });
                    }
                    scatter(&s.outs, &[data]);
                }
                Ok(Done {
                    len: need as u32,
                    result: 0,
                })
            }
            OP_COPY => {
                if out_total < in_total {
                    return Err(fail(STATUS_SHORT_OUTPUT));
                }
                copy_segs(&s.ins, &s.outs);
                Ok(Done {
                    len: in_total as u32,
                    result: 0,
                })
            }
            OP_KEY_SET => {
                if hdr.key_slot >= self.keys.len() {
                    return Err(fail(STATUS_NO_KEY));
                }
                if in_total != AES256_KEY_LEN {
                    return Err(fail(STATUS_BAD_REQUEST));
                }
                gather(&s.ins, &mut s.buf);
                let key: &[u8; AES256_KEY_LEN] =
                    s.buf[..].try_into().map_err(|_| fail(STATUS_BAD_REQUEST))?;
                self.keys
                    .set(hdr.key_slot, key)
                    .map_err(|_| fail(STATUS_NO_KEY))?;
                s.buf.fill(0);
                Ok(Done { len: 0, result: 0 })
            }
            OP_KEY_CLEAR => {
                self.keys
                    .clear(hdr.key_slot)
                    .map_err(|_| fail(STATUS_NO_KEY))?;
                Ok(Done { len: 0, result: 0 })
            }
            _ => Err(fail(STATUS_UNSUPPORTED)),
        }
    }
}

/// Reads the request header at `addr` once (eight volatile 8-byte loads
/// when it is aligned inside one region) and parses it without a detour
/// through a byte array; `None` when it is outside guest memory.
#[inline]
fn read_header<M: GuestMemoryBackend>(
    regions: &Regions,
    mem: &M,
    addr: u64,
) -> Option<RequestHeader> {
    if let Some(p) = regions.host(addr, REQUEST_HEADER_SIZE as u64)
        && (p as usize).is_multiple_of(8)
    {
        let p = p.cast::<u64>();
        // SAFETY: `p..p+64` lies in a region of `mem` (borrowed for this
        // call) and is 8-aligned; each word is loaded once.
        let w: [u64; 8] =
            std::array::from_fn(|i| u64::from_le(unsafe { ptr::read_volatile(p.add(i)) }));
        let mut params = [0u8; 40];
        for (i, chunk) in params.chunks_exact_mut(8).enumerate() {
            chunk.copy_from_slice(&w[3 + i].to_le_bytes());
        }
        return Some(RequestHeader {
            op: w[0] as u16,
            flags: (w[0] >> 16) as u16,
            key_slot: (w[0] >> 32) as u32,
            cookie: w[1],
            aux: w[2] as u32,
            reserved: (w[2] >> 32) as u32,
            params,
        });
    }
    let b = read_guest::<REQUEST_HEADER_SIZE, M>(regions, mem, addr)?;
    RequestHeader::from_le_bytes(&b)
}

/// Translates one guest segment into host pieces; `Err` when any byte is
/// outside guest memory or the range wraps.
fn resolve<M: GuestMemoryBackend>(
    mem: &M,
    regions: &Regions,
    d: &Desc,
    out: &mut Vec<Seg>,
) -> Result<(), ()> {
    d.addr.checked_add(u64::from(d.len)).ok_or(())?;
    if let Some(ptr) = regions.host(d.addr, u64::from(d.len)) {
        out.push(Seg {
            ptr,
            len: d.len as usize,
        });
        return Ok(());
    }
    for slice in mem.get_slices(GuestAddress(d.addr), d.len as usize) {
        let slice = slice.map_err(|_| ())?;
        out.push(Seg {
            ptr: slice.ptr_guard_mut().as_ptr(),
            len: slice.len(),
        });
    }
    Ok(())
}

/// Copies all input pieces, in order, into `buf` (resized to fit).
fn gather(ins: &[Seg], buf: &mut Vec<u8>) {
    buf.clear();
    for g in ins {
        let at = buf.len();
        buf.resize(at + g.len, 0);
        // SAFETY: `g` lies in a live guest mapping (resolved for this
        // request); `buf` is host heap memory with room for `g.len` bytes
        // at `at`, so the ranges do not overlap. This copy is the private
        // snapshot the engine works on.
        unsafe { ptr::copy_nonoverlapping(g.ptr, buf.as_mut_ptr().add(at), g.len) };
    }
}

/// Writes `parts`, concatenated, to the start of the outputs.
fn scatter(outs: &[Seg], parts: &[&[u8]]) {
    let (mut o, mut off) = (0usize, 0usize);
    for part in parts {
        let mut p: &[u8] = part;
        while !p.is_empty() && o < outs.len() {
            let n = p.len().min(outs[o].len - off);
            // SAFETY: `outs[o].ptr + off .. + n` lies inside a live, writable
            // guest mapping (resolved from a device-writable descriptor), and
            // `p` is host memory (the scratch buffer), so they cannot overlap.
            unsafe { ptr::copy_nonoverlapping(p.as_ptr(), outs[o].ptr.add(off), n) };
            p = &p[n..];
            off += n;
            if off == outs[o].len {
                o += 1;
                off = 0;
            }
        }
    }
}

/// Zeroes every output piece.
fn zero(outs: &[Seg]) {
    for g in outs {
        // SAFETY: a live, writable guest mapping of `len` bytes.
        unsafe { ptr::write_bytes(g.ptr, 0, g.len) };
    }
}

/// The DMA copy: inputs to outputs with `memmove`, so in-place and
/// overlapping segment pairs are fine.
fn copy_segs(ins: &[Seg], outs: &[Seg]) {
    copy::plan_with(
        (ins.len(), |i| ins[i].len),
        (outs.len(), |o| outs[o].len),
        |c| {
            // SAFETY: the plan keeps every chunk inside its input and output
            // piece, both in live guest mappings; `ptr::copy` allows overlap.
            unsafe {
                ptr::copy(
                    ins[c.src].ptr.add(c.src_off),
                    outs[c.dst].ptr.add(c.dst_off),
                    c.len,
                )
            };
        },
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engines::csum::checksum;
    use crate::stats::Stats;
    use proptest::prelude::*;
    use virtio_queue::desc::RawDescriptor;
    use virtio_queue::mock::MockSplitQueue;
    use vm_memory::{Bytes, GuestMemoryMmap};

    const MEM: u64 = 0x20_0000;
    const DATA: u64 = 0x10_0000;
    const HDR: u64 = 0x1f_0000;
    const STATUS: u64 = 0x1f_1000;

    fn mem() -> GuestMemoryMmap<()> {
        GuestMemoryMmap::from_ranges(&[(GuestAddress(0), MEM as usize)]).unwrap()
    }

    fn desc(addr: u64, len: u32, write: bool) -> RawDescriptor {
        let flags = if write { 2 } else { 0 };
        RawDescriptor::from(Descriptor::new(addr, len, flags, 0))
    }

    fn processor() -> Processor {
        Processor::new(crate::config::ALL_OPS, 64, 1 << 20, 16)
    }

    /// Runs one chain (built with the mock split queue) through `p`;
    /// returns the used length and the counters it produced.
    fn process(
        m: &GuestMemoryMmap<()>,
        descs: &[RawDescriptor],
        p: &Processor,
        scratch: &mut Scratch,
    ) -> (u32, crate::stats::Snapshot) {
        let vq = MockSplitQueue::new(m, 256);
        let chain = vq.build_desc_chain(descs).unwrap();
        let stats = Stats::new(1);
        let used = p.process(m, chain, scratch, stats.shard(0));
        (used, stats.snapshot())
    }

    /// A well-formed request with header at HDR and status at STATUS;
    /// returns (used length, status record).
    fn call(
        m: &GuestMemoryMmap<()>,
        p: &Processor,
        h: &RequestHeader,
        segs: &[(u64, u32, bool)],
    ) -> (u32, StatusRecord) {
        m.write_slice(&h.to_le_bytes(), GuestAddress(HDR)).unwrap();
        m.write_slice(&[0xee; 16], GuestAddress(STATUS)).unwrap();
        let mut d = vec![desc(HDR, 64, false)];
        d.extend(segs.iter().map(|&(a, l, w)| desc(a, l, w)));
        d.push(desc(STATUS, 16, true));
        let (used, _) = process(m, &d, p, &mut Scratch::default());
        let mut b = [0u8; 16];
        m.read_slice(&mut b, GuestAddress(STATUS)).unwrap();
        (used, StatusRecord::from_le_bytes(&b).unwrap())
    }

    fn h(op: u16) -> RequestHeader {
        RequestHeader {
            op,
            ..Default::default()
        }
    }

    #[test]
    fn validation_order_is_as_documented() {
        let m = mem();
        let p = processor();
        // The op check comes before the segment checks.
        let st = call(&m, &p, &h(42), &[(DATA, 0, false)]).1;
        assert_eq!(st.status, STATUS_UNSUPPORTED);
        // Structure beats size, size beats address.
        let big = (MEM * 4, 2 << 20, false);
        let st = call(&m, &p, &h(OP_CSUM), &[big, (DATA, 0, false)]).1;
        assert_eq!(st.status, STATUS_BAD_REQUEST);
        assert_eq!(call(&m, &p, &h(OP_CSUM), &[big]).1.status, STATUS_TOO_BIG);
        let st = call(&m, &p, &h(OP_CSUM), &[(MEM * 4, 8, false)]).1;
        assert_eq!(st.status, STATUS_BAD_ADDRESS);
        // Key before sizes for GCM.
        let mut seal = h(OP_AES_GCM_SEAL);
        seal.key_slot = 9;
        seal.aux = 100;
        assert_eq!(
            call(&m, &p, &seal, &[(DATA, 8, false)]).1.status,
            STATUS_NO_KEY
        );
    }

    #[test]
    fn key_set_wipes_its_scratch_copy() {
        let m = mem();
        let p = processor();
        m.write_slice(&[0x3c; 32], GuestAddress(DATA)).unwrap();
        let mut ks = h(OP_KEY_SET);
        ks.key_slot = 4;
        m.write_slice(&ks.to_le_bytes(), GuestAddress(HDR)).unwrap();
        let d = [
            desc(HDR, 64, false),
            desc(DATA, 32, false),
            desc(STATUS, 16, true),
        ];
        let mut scratch = Scratch::default();
        let (used, snap) = process(&m, &d, &p, &mut scratch);
        assert_eq!((used, snap.status[STATUS_OK as usize]), (16, 1));
        assert!(p.keys.get(4).is_ok());
        assert!(
            scratch.buf.iter().all(|&b| b == 0),
            "key material left in scratch"
        );
    }

    proptest! {
        /// Well-formed CSUM, CRC32C and COPY requests with arbitrary
        /// scattering give the software answer.
        #[test]
        fn scattered_requests_match_software(
            data in proptest::collection::vec(any::<u8>(), 1..4000),
            cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..5),
            seed in any::<u32>(),
        ) {
            let m = mem();
            let p = processor();
            m.write_slice(&data, GuestAddress(DATA)).unwrap();
            let mut points: Vec<usize> = cuts.iter().map(|i| i.index(data.len())).collect();
            points.sort_unstable();
            points.dedup();
            let mut segs = Vec::new();
            let mut last = 0;
            for pt in points.into_iter().filter(|&p| p > 0) {
                segs.push((DATA + last as u64, (pt - last) as u32, false));
                last = pt;
            }
            segs.push((DATA + last as u64, (data.len() - last) as u32, false));

            let mut hc = h(OP_CSUM);
            hc.aux = seed;
            let st = call(&m, &p, &hc, &segs).1;
            prop_assert_eq!(st.result, u64::from(checksum(seed, [&data[..]])));

            let mut hc = h(OP_CRC32C);
            hc.aux = seed;
            let st = call(&m, &p, &hc, &segs).1;
            prop_assert_eq!(st.result, u64::from(crc::crc32c(seed, [&data[..]])));

            let out = DATA + 0x8000;
            let mut with_out = segs.clone();
            with_out.push((out, 1000, true));
            with_out.push((out + 1000, data.len() as u32, true));
            let (used, st) = call(&m, &p, &h(OP_COPY), &with_out);
            prop_assert_eq!(st.len as usize, data.len());
            prop_assert_eq!(used as usize, data.len() + 16);
            let mut got = vec![0u8; data.len()];
            m.read_slice(&mut got, GuestAddress(out)).unwrap();
            prop_assert_eq!(got, data);
        }

        /// Arbitrary descriptor lists and headers never panic, have exactly
        /// one counted outcome, and every answer is a defined status with a
        /// used length the chain can hold.
        #[test]
        fn arbitrary_chains_never_panic(
            shape in proptest::collection::vec(
                (prop_oneof![Just(HDR), Just(STATUS), DATA..MEM + 64, Just(u64::MAX - 7), any::<u64>()],
                 prop_oneof![Just(0u32), Just(16), Just(64), 1u32..5000, Just(u32::MAX)],
                 any::<bool>()),
                1..10),
            params in proptest::array::uniform32(any::<u8>()),
            op in 0u16..12,
            aux in prop_oneof![Just(0u32), 0u32..80, any::<u32>()],
        ) {
            let m = mem();
            let p = processor();
            p.keys.set(0, &[1; 32]).unwrap();
            let mut hd = h(op);
            hd.aux = aux;
            hd.params[..32].copy_from_slice(&params);
            hd.key_slot = u32::from(params[0] % 2);
            m.write_slice(&hd.to_le_bytes(), GuestAddress(HDR)).unwrap();
            let descs: Vec<RawDescriptor> =
                shape.iter().map(|&(a, l, w)| desc(a, l, w)).collect();
            let (used, snap) = process(&m, &descs, &p, &mut Scratch::default());
            let writable: u64 = shape.iter().filter(|s| s.2).map(|s| u64::from(s.1)).sum();
            prop_assert!(u64::from(used) <= writable);
            let answered: u64 = snap.status.iter().sum();
            prop_assert_eq!(answered + snap.no_status, 1, "one outcome: {:?}", snap);
            if snap.no_status == 1 {
                prop_assert_eq!(used, 0);
            } else {
                // The status record went to the last descriptor the device
                // saw (a chain over 4 GiB in total ends early).
                let vq = MockSplitQueue::new(&m, 256);
                let seen: Vec<Descriptor> = vq.build_desc_chain(&descs).unwrap().collect();
                let addr = seen.last().unwrap().addr();
                let mut b = [0u8; 16];
                m.read_slice(&mut b, addr).unwrap();
                let st = StatusRecord::from_le_bytes(&b).unwrap();
                prop_assert!(st.status < STATUS_DEVICE_ERROR, "status {}", st.status);
                prop_assert_eq!(snap.status[st.status as usize], 1);
                prop_assert!(used >= 16);
                if st.status != STATUS_OK {
                    prop_assert_eq!((st.len, st.result), (0, 0));
                }
            }
        }
    }
}
