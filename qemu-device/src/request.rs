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

use std::ptr;

use pktaccel_abi::*;
use tracing::debug;
use virtio_queue::desc::split::Descriptor;
use virtio_queue::{Queue, QueueOwnedT, QueueT};
use vm_memory::{
    Address, Bytes, GuestAddress, GuestMemory, GuestMemoryBackend, GuestMemoryRegion,
    MemoryRegionAddress,
};

use crate::engines::{copy, crc, csum::Csum, gcm, rss};
use crate::faults::Faults;
use crate::faults::inject::{Completion, Processed, after_request};
use crate::keys::KeySlots;
use crate::stats::Shard;

/// A descriptor as the device saw it.
#[derive(Clone, Copy, Debug)]
struct Desc {
    addr: u64,
    len: u32,
    write: bool,
}

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

impl Seg {
    /// The bytes of this piece.
    ///
    /// # Safety
    /// The guest memory mapping `ptr` came from must still be mapped, and no
    /// `&mut` to the same bytes may be alive.
    unsafe fn bytes<'a>(&self) -> &'a [u8] {
        // SAFETY: `ptr..ptr+len` was returned by vm-memory as a valid slice
        // of a live mapping (caller's contract). Guest memory is shared with
        // the guest, which could write it concurrently only by breaking the
        // virtio contract (the device owns buffers until it returns them);
        // even then every bit pattern is a valid `u8`, so the worst outcome
        // is a wrong answer for that guest's own request.
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }
}

/// Per-worker reusable buffers, so that the hot path does not allocate.
#[derive(Debug, Default)]
pub struct Scratch {
    descs: Vec<Desc>,
    ins: Vec<Seg>,
    outs: Vec<Seg>,
    buf: Vec<u8>,
    /// Op code of the request being processed, once its header was read.
    op: Option<u16>,
}

/// Guest RAM as (guest start, length, host address) triples, captured from
/// the memory map for one request so that the header, the status record and
/// each segment are translated with a compare instead of a vm-memory lookup
/// apiece. More regions than fit fall back to vm-memory for everything.
struct Regions {
    r: [(u64, u64, usize); 8],
    n: usize,
}

impl Regions {
    fn of<M: GuestMemoryBackend>(mem: &M) -> Self {
        let mut me = Self {
            r: [(0, 0, 0); 8],
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
    /// region (`None` also when it does not: the caller then asks
    /// vm-memory, which handles ranges spanning regions and reports errors).
    fn host(&self, addr: u64, len: u64) -> Option<*mut u8> {
        self.r[..self.n].iter().find_map(|&(start, size, host)| {
            let off = addr.checked_sub(start)?;
            (off < size && len <= size - off).then(|| (host + off as usize) as *mut u8)
        })
    }
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

impl Processor {
    /// A processor for the given limits with `key_slots` empty key slots.
    pub fn new(ops: u32, max_segments: u32, max_request_bytes: u32, key_slots: u32) -> Self {
        Self {
            ops,
            max_segments,
            max_request_bytes,
            keys: KeySlots::new(key_slots),
        }
    }

    /// Completes every request available on `queue`: takes all chains
    /// offered with one read of the avail index, processes them in order,
    /// puts each on the used ring, and repeats until none is left. Returns
    /// how many chains were taken. Signalling the driver is the caller's job.
    pub fn drain<M: GuestMemoryBackend + GuestMemory>(
        &self,
        queue: &mut Queue,
        mem: &M,
        scratch: &mut Scratch,
        stats: &Shard,
    ) -> usize {
        static NO_FAULTS: Faults = Faults::new();
        self.drain_with_faults(queue, mem, scratch, stats, &NO_FAULTS, 0)
    }

    /// [`drain`](Self::drain) with `faults` applied to each request of
    /// queue `qidx` between processing and completion.
    pub fn drain_with_faults<M: GuestMemoryBackend + GuestMemory>(
        &self,
        queue: &mut Queue,
        mem: &M,
        scratch: &mut Scratch,
        stats: &Shard,
        faults: &Faults,
        qidx: u16,
    ) -> usize {
        let mut done = 0usize;
        loop {
            let chains: Vec<_> = match queue.iter(mem) {
                Ok(it) => it.collect(),
                Err(e) => {
                    // E.g. an avail index more than a ring ahead: nothing can
                    // be taken until the driver repairs it.
                    debug!(error = %e, "cannot read the available ring");
                    break;
                }
            };
            if chains.is_empty() {
                break;
            }
            for chain in chains {
                let head = chain.head_index();
                let used = self.process(mem, chain, scratch, stats);
                let req = Processed {
                    queue: qidx,
                    op: scratch.op,
                    status_addr: scratch
                        .descs
                        .last()
                        .filter(|_| used as usize >= STATUS_RECORD_SIZE)
                        .map(|d| d.addr),
                    used,
                };
                let used = match after_request(faults, mem, req) {
                    Completion::Used(u) => u,
                    Completion::Dropped => {
                        done += 1;
                        continue;
                    }
                };
                if let Err(e) = queue.add_used(mem, head, used) {
                    // A head past the descriptor table cannot be returned.
                    debug!(head, error = %e, "cannot return chain");
                    stats.bad_head();
                }
                done += 1;
            }
        }
        done
    }

    /// Processes one chain and returns the used length to report (bytes
    /// written into device-writable descriptors, status record included).
    /// Never panics on guest input; every outcome is counted in `stats`.
    pub fn process<M: GuestMemoryBackend>(
        &self,
        mem: &M,
        chain: impl Iterator<Item = Descriptor>,
        scratch: &mut Scratch,
        stats: &Shard,
    ) -> u32 {
        scratch.descs.clear();
        scratch.op = None;
        scratch.descs.extend(chain.map(|d| Desc {
            addr: d.addr().raw_value(),
            len: d.len(),
            write: d.is_write_only(),
        }));
        let Some(&status_desc) = scratch.descs.last() else {
            debug!("empty descriptor chain returned unanswered");
            stats.no_status();
            return 0;
        };
        let status_addr = GuestAddress(status_desc.addr);
        let regions = Regions::of(mem);
        let status_host = regions.host(status_desc.addr, STATUS_RECORD_SIZE as u64);
        if !status_desc.write
            || status_desc.len as usize != STATUS_RECORD_SIZE
            || (status_host.is_none() && !mem.check_range(status_addr, STATUS_RECORD_SIZE))
        {
            debug!(
                descriptors = scratch.descs.len(),
                last_addr = format_args!("{:#x}", status_desc.addr),
                last_len = status_desc.len,
                last_writable = status_desc.write,
                "no usable status descriptor: chain returned unanswered"
            );
            stats.no_status();
            return 0;
        }
        let (record, written) = match self.run(mem, &regions, scratch, stats) {
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
        scratch.ins.clear();
        scratch.outs.clear();
        let bytes = record.to_le_bytes();
        if let Some(p) = status_host {
            // SAFETY: `p..p+16` lies inside a mapped guest region of `mem`,
            // which is borrowed for this whole call; `bytes` is on our stack.
            unsafe { ptr::copy_nonoverlapping(bytes.as_ptr(), p, bytes.len()) };
        } else if mem.write_slice(&bytes, status_addr).is_err() {
            // Checked above; only a concurrent memory-map change gets here.
            stats.no_status();
            return written;
        }
        stats.status(record.status);
        if record.status != STATUS_OK {
            debug!(
                status = status_name(record.status),
                op = scratch.op.map(op_name),
                op_code = scratch.op,
                descriptors = scratch.descs.len(),
                "request rejected"
            );
        }
        written.saturating_add(STATUS_RECORD_SIZE as u32)
    }

    fn run<M: GuestMemoryBackend>(
        &self,
        mem: &M,
        regions: &Regions,
        s: &mut Scratch,
        stats: &Shard,
    ) -> Result<Done, Fail> {
        let n = s.descs.len() - 1; // excluding the status descriptor
        let Some(&h) = s.descs[..n].first() else {
            return Err(fail(STATUS_BAD_REQUEST));
        };
        if h.write || h.len as usize != REQUEST_HEADER_SIZE {
            return Err(fail(STATUS_BAD_REQUEST));
        }
        let mut hb = [0u8; REQUEST_HEADER_SIZE];
        if let Some(p) = regions.host(h.addr, REQUEST_HEADER_SIZE as u64) {
            // SAFETY: `p..p+64` lies inside a mapped guest region of `mem`,
            // borrowed for this call; `hb` is a distinct stack buffer. A
            // guest racing with this read only changes its own header bytes.
            unsafe { ptr::copy_nonoverlapping(p, hb.as_mut_ptr(), hb.len()) };
        } else {
            mem.read_slice(&mut hb, GuestAddress(h.addr))
                .map_err(|_| fail(STATUS_BAD_ADDRESS))?;
        }
        let hdr = RequestHeader::from_le_bytes(&hb).ok_or(fail(STATUS_BAD_REQUEST))?;
        s.op = Some(hdr.op);
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

        let inputs = || {
            s.ins.iter().map(|g| {
                // SAFETY: the segments were just resolved from `mem`, which
                // the caller keeps alive for this call, and no `&mut` to guest
                // memory exists while these shared slices are used (outputs
                // are written only through raw pointers, after the inputs'
                // last use).
                unsafe { g.bytes() }
            })
        };
        match hdr.op {
            OP_NOP => Ok(Done { len: 0, result: 0 }),
            OP_CSUM => {
                let mut c = Csum::new(hdr.aux);
                inputs().for_each(|b| c.update(b));
                Ok(Done {
                    len: 0,
                    result: u64::from(c.finish()),
                })
            }
            OP_CRC32C => Ok(Done {
                len: 0,
                result: u64::from(crc::crc32c(hdr.aux, inputs())),
            }),
            OP_CRC32 => Ok(Done {
                len: 0,
                result: u64::from(crc::crc32(hdr.aux, inputs())),
            }),
            OP_RSS => {
                let key: &[u8; RSS_KEY_LEN] = &hdr.params;
                let hash = rss::toeplitz(key, inputs()).map_err(|_| fail(STATUS_BAD_REQUEST))?;
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
        // SAFETY: see `Seg::bytes`; `buf` is host heap memory, not guest memory.
        buf.extend_from_slice(unsafe { g.bytes() });
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
    let mut il = [0usize; 8];
    let mut ol = [0usize; 8];
    if ins.len() == 1 && outs.len() == 1 {
        // The common single-segment case without building length lists.
        // SAFETY: both ranges lie in live guest mappings and the caller
        // checked that the output is at least as long as the input;
        // `ptr::copy` allows overlap.
        unsafe { ptr::copy(ins[0].ptr, outs[0].ptr, ins[0].len) };
        return;
    }
    let lens = |segs: &[Seg], small: &mut [usize; 8]| -> Vec<usize> {
        if segs.len() <= small.len() {
            for (d, g) in small.iter_mut().zip(segs) {
                *d = g.len;
            }
            Vec::new()
        } else {
            segs.iter().map(|g| g.len).collect()
        }
    };
    let iv = lens(ins, &mut il);
    let ov = lens(outs, &mut ol);
    let il: &[usize] = if iv.is_empty() { &il[..ins.len()] } else { &iv };
    let ol: &[usize] = if ov.is_empty() {
        &ol[..outs.len()]
    } else {
        &ov
    };
    copy::plan(il, ol, |c| {
        // SAFETY: the plan keeps every chunk inside its input and output
        // piece, both in live guest mappings; `ptr::copy` allows overlap.
        unsafe {
            ptr::copy(
                ins[c.src].ptr.add(c.src_off),
                outs[c.dst].ptr.add(c.dst_off),
                c.len,
            )
        };
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engines::csum::checksum;
    use crate::stats::Stats;
    use proptest::prelude::*;
    use virtio_queue::desc::RawDescriptor;
    use virtio_queue::mock::MockSplitQueue;
    use vm_memory::GuestMemoryMmap;

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
