//! The request builder: a header plus borrowed buffers, and how a batch
//! of them becomes the `IocRequest`/`IocSegment` arrays SUBMIT reads.
//!
//! A buffer becomes one or more segments: its physical address from v2p,
//! split wherever physical contiguity ends (device slabs are contiguous,
//! host pages are not). In copy mode the segments carry virtual addresses
//! instead and the driver bounces them.

use pktaccel_abi::{
    IocRequest, IocSegment, MAX_BATCH, RequestHeader, SEG_IN, SEG_OUT, SUBMIT_COPY,
};

use super::ClientError;
use super::router::Route;
use crate::pool::{PhysSegments, Pool};

#[derive(Clone, Copy)]
struct Buf {
    ptr: usize,
    len: usize,
    dir: u32,
}

/// One request under construction: a header plus input and output
/// buffers. The buffers are borrowed for `'b`.
pub struct Request<'b> {
    /// The device header (op, aux, key slot, params); the cookie is set at
    /// submission.
    pub header: RequestHeader,
    bufs: Vec<Buf>,
    _life: core::marker::PhantomData<&'b mut [u8]>,
}

impl<'b> Request<'b> {
    /// A request for `op` (`pktaccel_abi::OP_*`).
    pub fn new(op: u16) -> Self {
        Self {
            header: RequestHeader {
                op,
                ..Default::default()
            },
            bufs: Vec::new(),
            _life: core::marker::PhantomData,
        }
    }

    /// Sets the op argument (seed, AAD length).
    pub fn aux(mut self, aux: u32) -> Self {
        self.header.aux = aux;
        self
    }

    /// Sets the key slot.
    pub fn key_slot(mut self, slot: u32) -> Self {
        self.header.key_slot = slot;
        self
    }

    /// Copies op parameters (RSS key, GCM IV) into the header.
    pub fn params(mut self, p: &[u8]) -> Self {
        let n = p.len().min(self.header.params.len());
        self.header.params[..n].copy_from_slice(&p[..n]);
        self
    }

    /// Adds a buffer the device reads.
    pub fn input(mut self, buf: &'b [u8]) -> Result<Self, ClientError> {
        if self.bufs.iter().any(|b| b.dir == SEG_OUT) {
            return Err(ClientError::Order);
        }
        self.push(buf.as_ptr(), buf.len(), SEG_IN)?;
        Ok(self)
    }

    /// Adds a buffer the device writes.
    pub fn output(mut self, buf: &'b mut [u8]) -> Result<Self, ClientError> {
        self.push(buf.as_mut_ptr(), buf.len(), SEG_OUT)?;
        Ok(self)
    }

    fn push(&mut self, ptr: *const u8, len: usize, dir: u32) -> Result<(), ClientError> {
        if len == 0 {
            return Err(ClientError::EmptyBuffer);
        }
        self.bufs.push(Buf {
            ptr: ptr as usize,
            len,
            dir,
        });
        Ok(())
    }
}

/// Appends the physical segments of `[p, p+len)` to `out`, splitting at
/// physical discontinuities and at 4 GiB (the segment length is 32-bit).
pub fn split_segments(
    pool: &Pool,
    p: *const u8,
    len: usize,
    dir: u32,
    out: &mut Vec<IocSegment>,
) -> Result<(), ClientError> {
    let mut at = p as usize;
    for r in PhysSegments::of(pool, p, len) {
        match r {
            Ok((mut addr, mut n)) => {
                while n > 0 {
                    let take = n.min(u32::MAX as usize & !0xfff);
                    out.push(IocSegment {
                        addr,
                        len: take as u32,
                        dir,
                    });
                    addr += take as u64;
                    n -= take;
                    at += take;
                }
            }
            Err(why) => return Err(ClientError::NotPinned { addr: at, why }),
        }
    }
    Ok(())
}

/// Segment arrays of a submitted batch; they must outlive the submit call.
pub struct Built {
    /// The requests, pointing into `segs`.
    pub reqs: Vec<IocRequest>,
    /// Segments of all requests.
    pub segs: Vec<IocSegment>,
    /// Submit flags (`SUBMIT_COPY` when the batch had unpinned buffers).
    pub flags: u32,
}

/// Zero-copy ioctl structures for a batch of 1..=`MAX_BATCH` requests,
/// cookies from `route` (unique on the file); the driver chooses the queue.
pub(super) fn build(
    pool: &Pool,
    reqs: &[Request<'_>],
    route: &mut Route,
) -> Result<Built, ClientError> {
    if reqs.is_empty() || reqs.len() > MAX_BATCH as usize {
        return Err(ClientError::BatchSize(reqs.len()));
    }
    let mut segs = Vec::new();
    let mut spans = Vec::with_capacity(reqs.len());
    for r in reqs {
        let start = segs.len();
        for b in &r.bufs {
            split_segments(pool, b.ptr as *const u8, b.len, b.dir, &mut segs)?;
        }
        spans.push((start, segs.len() - start));
    }
    Ok(finish(reqs, segs, spans, 0, route))
}

/// As [`build`], in copy mode: virtual addresses the driver bounces.
pub(super) fn build_copy(reqs: &[Request<'_>], route: &mut Route) -> Built {
    let mut segs = Vec::new();
    let mut spans = Vec::with_capacity(reqs.len());
    for r in reqs {
        let start = segs.len();
        segs.extend(r.bufs.iter().map(|b| IocSegment {
            addr: b.ptr as u64,
            len: b.len as u32,
            dir: b.dir,
        }));
        spans.push((start, segs.len() - start));
    }
    finish(reqs, segs, spans, SUBMIT_COPY, route)
}

fn finish(
    reqs: &[Request<'_>],
    segs: Vec<IocSegment>,
    spans: Vec<(usize, usize)>,
    flags: u32,
    route: &mut Route,
) -> Built {
    let base = segs.as_ptr();
    let out = reqs
        .iter()
        .zip(spans)
        .map(|(r, (start, n))| {
            let mut header = r.header;
            header.cookie = route.next_cookie();
            IocRequest {
                header,
                segs: base.wrapping_add(start) as u64,
                nsegs: n as u32,
                queue: u32::MAX,
            }
        })
        .collect();
    Built {
        reqs: out,
        segs,
        flags,
    }
}
