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
use vm_memory::GuestMemoryBackend;

use crate::completion::{Completion, CompletionHook, Decision};
use crate::guest::{Regions, Target, read_guest};
use crate::keys::KeySlots;
use crate::ring::Desc;
use crate::stats::Shard;
use segments::{Seg, resolve};

mod ops;
mod segments;

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
        if let Some(n) = d.status_len {
            out.record.len = n;
        }
        let used = self.finish(mem, out, stats);
        (d.used_len.unwrap_or(used), d)
    }

    /// Validates and runs the chain in `scratch.descs`; the status record
    /// is left for [`finish`](Self::finish).
    #[inline(always)]
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
    #[inline(always)]
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

    /// Checks 2 to 7 of the module's list, then the op itself.
    fn run<M: GuestMemoryBackend>(
        &self,
        mem: &M,
        regions: &Regions,
        s: &mut Scratch,
        stats: &Shard,
        op: &mut Option<u16>,
    ) -> Result<Done, Fail> {
        let n = s.descs.len() - 1; // excluding the status descriptor
        let w = self.check_header(mem, regions, s.descs[..n].first(), op)?;
        let (in_total, out_total) = self.check_segments(mem, regions, s, n)?;
        let hdr_op = w[0] as u16;
        stats.op(hdr_op, in_total as u64);
        let d = ops::Data {
            ins: &s.ins,
            outs: &s.outs,
            buf: &mut s.buf,
            in_total,
            out_total,
        };
        // Checksums need only the op and aux words; the other ops get the
        // whole header, parsed from the same private copy.
        match hdr_op {
            OP_NOP => return Ok(Done { len: 0, result: 0 }),
            OP_CSUM | OP_CRC32C | OP_CRC32 => return Ok(ops::checksum(hdr_op, w[2] as u32, d)),
            _ => {}
        }
        let hdr = parse_header(&w);
        match hdr.op {
            OP_RSS => ops::rss(&hdr, d),
            OP_AES_GCM_SEAL | OP_AES_GCM_OPEN => ops::gcm(&self.keys, &hdr, d),
            OP_COPY => ops::copy(d),
            OP_KEY_SET => ops::key_set(&self.keys, &hdr, d),
            OP_KEY_CLEAR => {
                self.keys
                    .clear(hdr.key_slot)
                    .map_err(|_| fail(STATUS_NO_KEY))?;
                Ok(Done { len: 0, result: 0 })
            }
            _ => Err(fail(STATUS_UNSUPPORTED)),
        }
    }

    /// Checks 2 to 4: the header descriptor, its fields, and the op.
    /// Records the op in `op` as soon as the header is read.
    #[inline]
    fn check_header<M: GuestMemoryBackend>(
        &self,
        mem: &M,
        regions: &Regions,
        h: Option<&Desc>,
        op: &mut Option<u16>,
    ) -> Result<[u64; 8], Fail> {
        let Some(&h) = h else {
            return Err(fail(STATUS_BAD_REQUEST));
        };
        if h.write || h.len as usize != REQUEST_HEADER_SIZE {
            return Err(fail(STATUS_BAD_REQUEST));
        }
        let w = read_header(regions, mem, h.addr).ok_or(fail(STATUS_BAD_ADDRESS))?;
        // Word 0: op (16 bits), flags (16), key_slot (32); word 2: aux (32),
        // reserved (32). See `parse_header`.
        let hop = w[0] as u16;
        *op = Some(hop);
        if (w[0] >> 16) as u16 != 0 || (w[2] >> 32) as u32 != 0 {
            return Err(fail(STATUS_BAD_REQUEST));
        }
        if hop >= OP_COUNT || self.ops & (1 << hop) == 0 {
            return Err(fail(STATUS_UNSUPPORTED));
        }
        Ok(w)
    }

    /// Checks 5 to 7 on the data descriptors `descs[1..n]`, resolving them
    /// into `s.ins` and `s.outs`. Returns the input and output totals.
    ///
    /// One pass: a segment is resolved as soon as its own checks pass, and
    /// an address failure is only reported once no earlier check (5, 6)
    /// fails on any segment, so the status is that of the checks' order.
    #[inline]
    fn check_segments<M: GuestMemoryBackend>(
        &self,
        mem: &M,
        regions: &Regions,
        s: &mut Scratch,
        n: usize,
    ) -> Result<(usize, usize), Fail> {
        let segs = &s.descs[1..n];
        if segs.len() > self.max_segments as usize {
            return Err(fail(STATUS_BAD_REQUEST));
        }
        s.ins.clear();
        s.outs.clear();
        let (mut totals, mut seen_write, mut resolved) = ([0u64; 2], false, true);
        let mut hint = 0;
        for d in segs {
            if d.len == 0 || (seen_write && !d.write) {
                return Err(fail(STATUS_BAD_REQUEST));
            }
            seen_write |= d.write;
            totals[usize::from(d.write)] += u64::from(d.len);
            let list = if d.write { &mut s.outs } else { &mut s.ins };
            resolved &= resolve(mem, regions, d, list, &mut hint).is_ok();
        }
        let [in_total, out_total] = totals;
        let max = u64::from(self.max_request_bytes);
        if in_total > max || out_total > max {
            return Err(fail(STATUS_TOO_BIG));
        }
        if !resolved {
            return Err(fail(STATUS_BAD_ADDRESS));
        }
        // Both totals are at most max_request_bytes (u32) from here on.
        Ok((in_total as usize, out_total as usize))
    }
}

/// Reads the request header at `addr` once (eight volatile 8-byte loads
/// when it is aligned inside one region) into its little-endian words,
/// the private copy every check and op reads; `None` when it is outside
/// guest memory.
#[inline]
fn read_header<M: GuestMemoryBackend>(regions: &Regions, mem: &M, addr: u64) -> Option<[u64; 8]> {
    if let Some(p) = regions.host(addr, REQUEST_HEADER_SIZE as u64)
        && (p as usize).is_multiple_of(8)
    {
        let p = p.cast::<u64>();
        return Some(std::array::from_fn(|i| {
            // SAFETY: `p..p+64` lies in a region of `mem` (borrowed for
            // this call) and is 8-aligned, and `i < 8`; each word is loaded
            // once.
            u64::from_le(unsafe { ptr::read_volatile(p.add(i)) })
        }));
    }
    let b = read_guest::<REQUEST_HEADER_SIZE, M>(regions, mem, addr)?;
    Some(std::array::from_fn(|i| {
        u64::from_le_bytes(b[i * 8..i * 8 + 8].try_into().unwrap_or_default())
    }))
}

/// The ABI's header from its words (the private copy).
fn parse_header(w: &[u64; 8]) -> RequestHeader {
    let mut params = [0u8; 40];
    for (i, chunk) in params.chunks_exact_mut(8).enumerate() {
        chunk.copy_from_slice(&w[3 + i].to_le_bytes());
    }
    RequestHeader {
        op: w[0] as u16,
        flags: (w[0] >> 16) as u16,
        key_slot: (w[0] >> 32) as u32,
        cookie: w[1],
        aux: w[2] as u32,
        reserved: (w[2] >> 32) as u32,
        params,
    }
}

#[cfg(test)]
#[path = "request_tests.rs"]
mod tests;
