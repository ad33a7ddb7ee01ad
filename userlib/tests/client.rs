//! The accelerator client against a software device that resolves the
//! physical addresses it is given back to memory, the way the emulated
//! device does with guest RAM. The kernel module is not needed: the
//! transport is the only thing swapped.

mod common;

use std::collections::{HashMap, VecDeque};

use pktaccel_abi::{
    IocCompletion, IocRequest, IocSegment, OP_COPY, OP_CSUM, OP_NOP, SEG_IN, SEG_OUT,
    STATUS_BAD_ADDRESS, STATUS_BAD_REQUEST, STATUS_OK, STATUS_UNSUPPORTED, SUBMIT_COPY,
};
use pktaccel_testvectors::soft::inet_csum;
use pktslab::class::PAGE_SIZE;
use pktslab::client::{Built, split_segments};
use pktslab::{Client, ClientError, DeviceTransport, Pool, Request, Transport};

/// A device in software: phys page -> virtual page, learnt from the pool.
#[derive(Default)]
struct SoftDevice {
    pages: HashMap<u64, usize>,
    done: VecDeque<IocCompletion>,
    batches: Vec<(usize, u32)>,
    segments_seen: usize,
}

impl SoftDevice {
    fn learn(&mut self, pool: &Pool, buf: &[u8]) {
        let start = buf.as_ptr() as usize & !(PAGE_SIZE - 1);
        for va in (start..buf.as_ptr() as usize + buf.len()).step_by(PAGE_SIZE) {
            let ph = pool.v2p(va as *const u8).unwrap();
            self.pages.insert(ph.addr, va);
        }
    }

    fn resolve(&self, s: &IocSegment, copy: bool) -> Option<*mut u8> {
        if copy {
            return Some(s.addr as *mut u8);
        }
        let page = s.addr & !(PAGE_SIZE as u64 - 1);
        let va = self.pages.get(&page)?;
        // A segment never crosses a physical discontinuity, so the last
        // byte must be in a page that maps contiguously.
        let last = s.addr + u64::from(s.len) - 1;
        let last_va = self.pages.get(&(last & !(PAGE_SIZE as u64 - 1)))?;
        if last_va + (last as usize & (PAGE_SIZE - 1)) != va + (last - page) as usize {
            return None;
        }
        Some((va + (s.addr - page) as usize) as *mut u8)
    }

    fn execute(&mut self, r: &IocRequest, copy: bool) -> IocCompletion {
        // SAFETY: the client keeps the segment array alive during submit.
        let segs =
            unsafe { std::slice::from_raw_parts(r.segs as *const IocSegment, r.nsegs as usize) };
        self.segments_seen += segs.len();
        let mut comp = IocCompletion {
            cookie: r.header.cookie,
            status: STATUS_OK,
            len: 0,
            result: 0,
        };
        if segs
            .windows(2)
            .any(|w| w[0].dir == SEG_OUT && w[1].dir == SEG_IN)
            || segs.iter().any(|s| s.len == 0)
        {
            comp.status = STATUS_BAD_REQUEST;
            return comp;
        }
        let mut input = Vec::new();
        let mut outs = Vec::new();
        for s in segs {
            let Some(p) = self.resolve(s, copy) else {
                comp.status = STATUS_BAD_ADDRESS;
                return comp;
            };
            if s.dir == SEG_IN {
                // SAFETY: p resolves to live memory of the submitting test.
                input.extend_from_slice(unsafe { std::slice::from_raw_parts(p, s.len as usize) });
            } else {
                outs.push((p, s.len as usize));
            }
        }
        match r.header.op {
            OP_NOP => {}
            OP_CSUM => comp.result = u64::from(inet_csum(r.header.aux, &[&input])),
            OP_COPY => {
                let mut off = 0;
                for (p, n) in outs {
                    let k = n.min(input.len() - off);
                    // SAFETY: p is a live output buffer of at least n bytes.
                    unsafe { std::ptr::copy_nonoverlapping(input[off..].as_ptr(), p, k) };
                    off += k;
                }
                comp.len = off as u32;
            }
            _ => comp.status = STATUS_UNSUPPORTED,
        }
        comp
    }
}

impl Transport for &mut SoftDevice {
    unsafe fn submit(&mut self, reqs: &[IocRequest], flags: u32) -> Result<u32, ClientError> {
        self.batches.push((reqs.len(), flags));
        for r in reqs {
            let c = self.execute(r, flags & SUBMIT_COPY != 0);
            self.done.push_back(c);
        }
        Ok(reqs.len() as u32)
    }

    fn reap(&mut self, out: &mut [IocCompletion], _timeout_ms: i32) -> Result<usize, ClientError> {
        let mut n = 0;
        while n < out.len() {
            match self.done.pop_front() {
                Some(c) => {
                    out[n] = c;
                    n += 1;
                }
                None => break,
            }
        }
        Ok(n)
    }
}

fn synthetic_pool() -> Pool {
    common::synthetic_pool(4 << 30)
}

#[test]
fn copy_across_physical_discontinuities() {
    let pool = synthetic_pool();
    let mut src = pool.alloc(100_000).unwrap();
    for (i, b) in src.iter_mut().enumerate() {
        *b = (i * 31 % 256) as u8;
    }
    let mut dst = pool.alloc(100_000).unwrap();
    let mut dev = SoftDevice::default();
    dev.learn(&pool, &src);
    dev.learn(&pool, &dst);
    let mut client = Client::with_transport(&pool, &mut dev);
    let mut reqs = [Request::new(OP_COPY)
        .input(&src)
        .unwrap()
        .output(&mut dst)
        .unwrap()];
    let c = client.run(&mut reqs).unwrap();
    assert_eq!(c[0].status, STATUS_OK);
    assert_eq!(c[0].len, 100_000);
    drop(reqs);
    assert_eq!(&src[..], &dst[..]);
    // 100 000 bytes over 16 KiB synthetic chunks: at least 7 segments each way.
    assert!(dev.segments_seen >= 14, "{} segments", dev.segments_seen);
}

#[test]
fn checksum_batch_completes_in_order_with_cookies() {
    let pool = synthetic_pool();
    let bufs: Vec<_> = (0..8usize)
        .map(|i| {
            let mut b = pool.alloc(1000 + i * 9000).unwrap();
            for (j, x) in b.iter_mut().enumerate() {
                *x = (j ^ i) as u8;
            }
            b
        })
        .collect();
    let mut dev = SoftDevice::default();
    for b in &bufs {
        dev.learn(&pool, b);
    }
    let mut client = Client::with_transport(&pool, &mut dev);
    let mut reqs: Vec<_> = bufs
        .iter()
        .map(|b| Request::new(OP_CSUM).input(b).unwrap())
        .collect();
    let comps = client.run(&mut reqs).unwrap();
    let mut cookies = std::collections::HashSet::new();
    for (b, c) in bufs.iter().zip(&comps) {
        assert_eq!(c.status, STATUS_OK);
        assert_eq!(c.result, u64::from(inet_csum(0, &[b])));
        assert!(cookies.insert(c.cookie));
    }
    assert_eq!(dev.batches, vec![(8, 0)], "one submit for the whole batch");
}

#[test]
fn unpinned_buffers_are_refused_or_sent_for_copying() {
    let pool = synthetic_pool();
    let ordinary = vec![5u8; 3000];
    let mut out = vec![0u8; 3000];
    let mut dev = SoftDevice::default();
    let mut client = Client::with_transport(&pool, &mut dev);
    let reqs = [Request::new(OP_COPY)
        .input(&ordinary)
        .unwrap()
        .output(&mut out)
        .unwrap()];
    // SAFETY: the soft device completes synchronously inside submit.
    let e = unsafe { client.submit(&reqs) }.unwrap_err();
    assert!(
        matches!(e, ClientError::NotPinned { addr, .. } if addr == ordinary.as_ptr() as usize),
        "{e}"
    );
    assert_eq!(client.copy_fallbacks(), 0);
    client.allow_copy(true);
    let mut reqs = [Request::new(OP_COPY)
        .input(&ordinary)
        .unwrap()
        .output(&mut out)
        .unwrap()];
    let c = client.run(&mut reqs).unwrap();
    assert_eq!(c[0].status, STATUS_OK);
    assert_eq!(client.copy_fallbacks(), 1, "the copy fallback is counted");
    drop(reqs);
    assert_eq!(out, ordinary);
    assert_eq!(dev.batches.last(), Some(&(1, SUBMIT_COPY)));
}

#[test]
fn malformed_requests_are_rejected_before_the_device() {
    let pool = synthetic_pool();
    let a = pool.alloc(10).unwrap();
    let mut b = pool.alloc(10).unwrap();
    let r = Request::new(OP_COPY).output(&mut b).unwrap().input(&a);
    assert_eq!(r.err(), Some(ClientError::Order));
    assert_eq!(
        Request::new(OP_CSUM).input(&[]).err(),
        Some(ClientError::EmptyBuffer)
    );
    let mut dev = SoftDevice::default();
    let mut client = Client::with_transport(&pool, &mut dev);
    assert_eq!(client.build(&[]).err(), Some(ClientError::BatchSize(0)));
    let many: Vec<_> = (0..257).map(|_| Request::new(OP_NOP)).collect();
    assert_eq!(client.build(&many).err(), Some(ClientError::BatchSize(257)));
    let Built { reqs, segs, flags } = client.build(&many[..3]).unwrap();
    assert_eq!((reqs.len(), segs.len(), flags), (3, 0, 0));
    assert!(reqs.iter().all(|r| r.queue == u32::MAX));
}

#[test]
fn segments_follow_v2p_exactly() {
    let pool = synthetic_pool();
    let buf = pool.alloc(50_000).unwrap();
    let mut segs = Vec::new();
    split_segments(
        &pool,
        buf.as_ptr().wrapping_add(5),
        40_000,
        SEG_OUT,
        &mut segs,
    )
    .unwrap();
    assert_eq!(segs.iter().map(|s| s.len as usize).sum::<usize>(), 40_000);
    assert_eq!(
        segs[0].addr,
        pool.v2p(buf.as_ptr().wrapping_add(5)).unwrap().addr
    );
    assert!(segs.iter().all(|s| s.dir == SEG_OUT));
    for w in segs.windows(2) {
        assert_ne!(
            w[0].addr + u64::from(w[0].len),
            w[1].addr,
            "adjacent segments would have been merged"
        );
    }
}

#[test]
fn device_transport_needs_the_device() {
    let pool = synthetic_pool();
    assert!(matches!(
        DeviceTransport::for_pool(&pool),
        Err(ClientError::NoDevice)
    ));
    assert!(Client::open(&pool).is_err());
}
