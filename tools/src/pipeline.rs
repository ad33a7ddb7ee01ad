//! The packet pipelines `pktbench` runs through the device, each result
//! checked against software:
//!
//! - `csum`: fill the TCP/UDP checksum (pseudo-header + segment, two
//!   input segments), then verify it (the sum over the filled packet is 0);
//! - `rss`: Toeplitz hash of the address/port tuple (a slice of the frame
//!   itself), mapped through a 128-entry indirection table into N flows;
//! - `gcm`: ESP-like tunnel: AES-256-GCM seal of the IP packet with the
//!   8-byte ESP header as AAD, then open of the result;
//! - `copy`: DMA copy of the frame.
//!
//! Zero-copy mode keeps every buffer in pinned memory and hands physical
//! addresses to the device; copy mode keeps them in ordinary memory and
//! the driver bounces them.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use pktaccel_abi::*;
use pktslab::{Client, ClientError, DeviceTransport, PinnedBuf, Request};

use crate::dev::{Device, run};
use crate::frames::{self, Layout};
use crate::soft;

/// A pipeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pipeline {
    /// Checksum fill + verify.
    Csum,
    /// RSS classification.
    Rss,
    /// ESP-like AES-256-GCM seal + open.
    Gcm,
    /// DMA copy.
    Copy,
}

impl Pipeline {
    /// Every pipeline.
    pub const ALL: [Pipeline; 4] = [Pipeline::Csum, Pipeline::Rss, Pipeline::Gcm, Pipeline::Copy];

    /// Name used on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            Pipeline::Csum => "csum",
            Pipeline::Rss => "rss",
            Pipeline::Gcm => "gcm",
            Pipeline::Copy => "copy",
        }
    }

    /// Parses a name.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|p| p.name() == s)
    }

    /// Device requests per packet.
    pub fn requests_per_packet(self) -> u64 {
        match self {
            Pipeline::Csum | Pipeline::Gcm => 2,
            Pipeline::Rss | Pipeline::Copy => 1,
        }
    }

    fn op(self) -> u16 {
        match self {
            Pipeline::Csum => OP_CSUM,
            Pipeline::Rss => OP_RSS,
            Pipeline::Gcm => OP_AES_GCM_SEAL,
            Pipeline::Copy => OP_COPY,
        }
    }
}

/// What one measurement runs.
#[derive(Debug, Clone)]
pub struct CellSpec {
    /// The pipeline.
    pub pipeline: Pipeline,
    /// Label of the traffic (e.g. `64`, `imix`, `pcap`).
    pub traffic: String,
    /// Copy mode (else zero-copy).
    pub copy: bool,
    /// Packets per submitted batch.
    pub batch: usize,
    /// Request queues used.
    pub queues: u32,
    /// Stop after this many packets...
    pub packets: usize,
    /// ...or this much device time, whichever comes first.
    pub budget: Duration,
    /// RSS flows.
    pub flows: u32,
}

/// Results of one measurement.
#[derive(Debug, Clone, Default)]
pub struct CellResult {
    /// Packets processed (and verified).
    pub packets: u64,
    /// Frame bytes processed.
    pub bytes: u64,
    /// Device requests completed.
    pub requests: u64,
    /// Time spent in submit/reap (software checks excluded).
    pub secs: f64,
    /// Request latency percentiles, microseconds.
    pub p50_us: f64,
    /// 99th percentile.
    pub p99_us: f64,
    /// 99.9th percentile.
    pub p999_us: f64,
    /// Bytes the driver bounced (IocStats delta).
    pub bytes_copied: u64,
    /// Bytes the device processed by physical address (IocStats delta).
    pub bytes_zero_copy: u64,
    /// Packets per RSS flow (RSS only).
    pub flow_counts: Vec<u64>,
}

impl CellResult {
    /// Packets per second.
    pub fn pps(&self) -> f64 {
        if self.secs > 0.0 {
            self.packets as f64 / self.secs
        } else {
            0.0
        }
    }
    /// Frame throughput in Gbit/s.
    pub fn gbps(&self) -> f64 {
        if self.secs > 0.0 {
            self.bytes as f64 * 8.0 / self.secs / 1e9
        } else {
            0.0
        }
    }
}

/// Key slot and key the GCM pipeline installs.
const GCM_SLOT: u32 = 0;
const GCM_KEY: [u8; 32] = *b"pktbench ESP AES-256-GCM key 32B";
const ESP_SPI: u32 = 0x0000_1001;

/// Packet buffers of one batch, pinned or ordinary.
enum Bufs<'d> {
    Pinned(Vec<PinnedBuf<'d>>),
    Plain(Vec<Vec<u8>>),
}

impl<'d> Bufs<'d> {
    fn new(dev: &'d Device, copy: bool, n: usize, len: usize) -> Result<Self> {
        Ok(if copy {
            Bufs::Plain((0..n).map(|_| vec![0u8; len]).collect())
        } else {
            Bufs::Pinned((0..n).map(|_| dev.pinned(len)).collect::<Result<_>>()?)
        })
    }
    fn get(&self, i: usize) -> &[u8] {
        match self {
            Bufs::Pinned(v) => &v[i],
            Bufs::Plain(v) => &v[i],
        }
    }
    fn get_mut(&mut self, i: usize) -> &mut [u8] {
        match self {
            Bufs::Pinned(v) => &mut v[i],
            Bufs::Plain(v) => &mut v[i],
        }
    }
    /// Every buffer, for building a batch's outputs.
    fn all_mut(&mut self) -> Vec<&mut [u8]> {
        match self {
            Bufs::Pinned(v) => v.iter_mut().map(|x| &mut x[..]).collect(),
            Bufs::Plain(v) => v.iter_mut().map(|x| &mut x[..]).collect(),
        }
    }
}

/// Installs the GCM key (through the same mode as the measurement).
fn install_key(dev: &Device, copy: bool) -> Result<()> {
    let mut k = Bufs::new(dev, copy, 1, 32)?;
    k.get_mut(0).copy_from_slice(&GCM_KEY);
    let req = Request::new(OP_KEY_SET)
        .key_slot(GCM_SLOT)
        .input(k.get(0))?;
    dev.call(req, copy)?;
    Ok(())
}

fn percentile(sorted: &[u64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    sorted[i.min(sorted.len() - 1)] as f64 / 1000.0
}

/// One packet's completion, its status checked: its place `j` in the
/// batch, its number `pkt` in the cell, its frame `traffic[t]`.
struct Done<'c> {
    j: usize,
    pkt: u64,
    t: usize,
    c: &'c IocCompletion,
}

/// The batch `idx`'s completions, each checked to be OK (else an error
/// naming `what`, the packet and the status).
fn checked<'c>(
    what: &str,
    first: u64,
    idx: &[usize],
    comps: &'c [IocCompletion],
) -> Result<Vec<Done<'c>>> {
    let each = idx.iter().zip(comps).enumerate().map(|(j, (&t, c))| {
        let pkt = first + j as u64;
        if c.status != STATUS_OK {
            bail!(
                "{what} of packet {pkt}: device status {}",
                status_name(c.status)
            );
        }
        Ok(Done { j, pkt, t, c })
    });
    each.collect()
}

/// Runs one cell over `traffic` (frames that [`frames::parse`] accepts).
pub fn run_cell(dev: &Device, spec: &CellSpec, traffic: &[Vec<u8>]) -> Result<CellResult> {
    let mut cell = Cell::new(dev, spec, traffic)?;
    let b = spec.batch.clamp(1, 4096);
    let mut table = [0u32; 128];
    for (i, t) in table.iter_mut().enumerate() {
        *t = i as u32 % spec.flows.max(1);
    }
    let mut res = CellResult {
        flow_counts: vec![0; spec.flows.max(1) as usize],
        ..Default::default()
    };
    let before = dev.stats()?;
    let mut device_time = Duration::ZERO;
    let mut next = 0usize;
    while (res.packets as usize) < spec.packets && device_time < spec.budget {
        // Load the batch (not timed).
        let idx: Vec<usize> = (0..b).map(|j| (next + j) % traffic.len()).collect();
        next += b;
        cell.load(&idx);
        let first = res.packets;
        device_time += match spec.pipeline {
            Pipeline::Csum => cell.csum(&idx, first)?,
            Pipeline::Rss => cell.rss(&idx, first, &table, &mut res.flow_counts)?,
            Pipeline::Gcm => cell.gcm(&idx, first)?,
            Pipeline::Copy => cell.copy(&idx, first)?,
        };
        res.packets += b as u64;
        res.requests += b as u64 * spec.pipeline.requests_per_packet();
        res.bytes += idx.iter().map(|&t| traffic[t].len() as u64).sum::<u64>();
    }
    let after = dev.stats()?;
    res.secs = device_time.as_secs_f64();
    res.bytes_copied = after.bytes_copied - before.bytes_copied;
    res.bytes_zero_copy = after.bytes_zero_copy - before.bytes_zero_copy;
    let mut lat = cell.lat.take();
    lat.sort_unstable();
    res.p50_us = percentile(&lat, 0.50);
    res.p99_us = percentile(&lat, 0.99);
    res.p999_us = percentile(&lat, 0.999);
    if spec.pipeline != Pipeline::Rss {
        res.flow_counts.clear();
    }
    Ok(res)
}

/// One cell's checked inputs and its buffers: each pipeline step below
/// loads a batch into them, times the device, then checks every packet
/// against software.
struct Cell<'d, 't> {
    /// Spreads each batch over the cell's queues and times every request.
    client: Client<'d, DeviceTransport>,
    traffic: &'t [Vec<u8>],
    layouts: Vec<Layout>,
    frame: Bufs<'d>,
    /// Pseudo-header or ESP header.
    aux: Bufs<'d>,
    out: Bufs<'d>,
    out2: Bufs<'d>,
    /// Request latencies, nanoseconds (the client's latency hook fills it).
    lat: Rc<RefCell<Vec<u64>>>,
}

impl<'d, 't> Cell<'d, 't> {
    /// Parses every frame, checks the device has the op, installs the GCM
    /// key if needed and allocates one batch of buffers.
    fn new(dev: &'d Device, spec: &CellSpec, traffic: &'t [Vec<u8>]) -> Result<Self> {
        if traffic.is_empty() {
            bail!("no frames to run");
        }
        let layouts: Vec<Layout> = traffic
            .iter()
            .enumerate()
            .map(|(i, f)| {
                frames::parse(f)
                    .ok_or_else(|| anyhow::anyhow!("frame {i} is not IPv4/IPv6 UDP/TCP"))
            })
            .collect::<Result<_>>()?;
        if !dev.has_op(spec.pipeline.op()) {
            bail!(
                "the device does not advertise op {}",
                op_name(spec.pipeline.op())
            );
        }
        let b = spec.batch.clamp(1, 4096);
        let copy = spec.copy;
        let queues = spec.queues.clamp(1, dev.queues());
        if spec.pipeline == Pipeline::Gcm {
            install_key(dev, copy)?;
        }
        let mut client = dev.client(copy)?;
        client.spread_over(queues);
        let lat = Rc::new(RefCell::new(Vec::new()));
        let sink = Rc::clone(&lat);
        client.on_latency(Some(Box::new(move |d: Duration| {
            sink.borrow_mut().push(d.as_nanos() as u64);
        })));
        Ok(Cell {
            client,
            traffic,
            layouts,
            frame: Bufs::new(dev, copy, b, frames::MAX_FRAME)?,
            aux: Bufs::new(dev, copy, b, 64)?,
            out: Bufs::new(dev, copy, b, frames::MAX_FRAME + GCM_TAG_LEN)?,
            out2: Bufs::new(dev, copy, b, frames::MAX_FRAME)?,
            lat,
        })
    }

    /// Copies the frames `idx` into the batch's frame buffers.
    fn load(&mut self, idx: &[usize]) {
        for (j, &t) in idx.iter().enumerate() {
            let f = &self.traffic[t];
            self.frame.get_mut(j)[..f.len()].copy_from_slice(f);
        }
    }

    /// Checksum fill, then verify over the filled packet; returns the
    /// device time.
    fn csum(&mut self, idx: &[usize], first: u64) -> Result<Duration> {
        for (j, &t) in idx.iter().enumerate() {
            let l = &self.layouts[t];
            let ph = l.pseudo_header(&self.traffic[t]);
            self.aux.get_mut(j)[..ph.len()].copy_from_slice(&ph);
            let c = l.csum_off();
            self.frame.get_mut(j)[c..c + 2].fill(0);
        }
        let t0 = Instant::now();
        let reqs = csum_requests(&self.frame, &self.aux, idx, &self.layouts)?;
        let fill = run_batch(&mut self.client, reqs)?;
        let mut stored = Vec::with_capacity(idx.len());
        for Done { j, t, c, .. } in checked("checksum fill", first, idx, &fill)? {
            let l = &self.layouts[t];
            let mut v = c.result as u16;
            if v == 0 && l.proto == 17 {
                v = 0xffff;
            }
            let co = l.csum_off();
            self.frame.get_mut(j)[co..co + 2].copy_from_slice(&v.to_be_bytes());
            stored.push(v);
        }
        let reqs = csum_requests(&self.frame, &self.aux, idx, &self.layouts)?;
        let verify = run_batch(&mut self.client, reqs)?;
        let took = t0.elapsed();
        let verified = checked("checksum verify", first, idx, &verify)?;
        for (Done { pkt, t, c, .. }, v) in verified.into_iter().zip(&stored) {
            let want = frames::l4_checksum(&self.traffic[t], &self.layouts[t]);
            if *v != want {
                bail!("packet {pkt}: device checksum {v:#06x}, software {want:#06x}");
            }
            if c.result as u16 != 0 {
                bail!(
                    "packet {pkt}: verify over the filled packet gave {:#06x}, expected 0",
                    c.result as u16
                );
            }
        }
        Ok(took)
    }

    /// Toeplitz hash of each tuple, counted into `flow_counts` through
    /// the indirection `table`; returns the device time.
    fn rss(
        &mut self,
        idx: &[usize],
        first: u64,
        table: &[u32; 128],
        flow_counts: &mut [u64],
    ) -> Result<Duration> {
        let t0 = Instant::now();
        let reqs = idx
            .iter()
            .enumerate()
            .map(|(j, &t)| {
                Request::new(OP_RSS)
                    .params(&soft::MS_RSS_KEY)
                    .input(&self.frame.get(j)[self.layouts[t].rss_range()])
            })
            .collect::<Result<Vec<_>, _>>()?;
        let done = run_batch(&mut self.client, reqs)?;
        let took = t0.elapsed();
        for Done { pkt, t, c, .. } in checked("RSS", first, idx, &done)? {
            let range = self.layouts[t].rss_range();
            let want = soft::toeplitz(&soft::MS_RSS_KEY, &self.traffic[t][range]);
            if c.result as u32 != want {
                bail!(
                    "packet {pkt}: device RSS hash {:#010x}, software {want:#010x}",
                    c.result as u32
                );
            }
            flow_counts[table[(want & 127) as usize] as usize] += 1;
        }
        Ok(took)
    }

    /// ESP seal of each IP packet into `out`, then open into `out2`;
    /// returns the device time.
    fn gcm(&mut self, idx: &[usize], first: u64) -> Result<Duration> {
        let ivs = self.esp_headers(idx.len(), first);
        let t0 = Instant::now();
        let (frame, aux, traffic, layouts) = (&self.frame, &self.aux, self.traffic, &self.layouts);
        let seal = per_packet(idx, &mut self.out, |j, t, o| {
            let n = traffic[t].len() - layouts[t].l3;
            let (ct, rest) = o.split_at_mut(n);
            Request::new(OP_AES_GCM_SEAL)
                .aux(8)
                .key_slot(GCM_SLOT)
                .params(&ivs[j])
                .input(&aux.get(j)[..8])?
                .input(&frame.get(j)[layouts[t].l3..traffic[t].len()])?
                .output(ct)?
                .output(&mut rest[..GCM_TAG_LEN])
        })?;
        let sealed = run_batch(&mut self.client, seal)?;
        checked("GCM seal", first, idx, &sealed)?;
        let out = &self.out;
        let open = per_packet(idx, &mut self.out2, |j, t, o| {
            let n = traffic[t].len() - layouts[t].l3;
            Request::new(OP_AES_GCM_OPEN)
                .aux(8)
                .key_slot(GCM_SLOT)
                .params(&ivs[j])
                .input(&aux.get(j)[..8])?
                .input(&out.get(j)[..n + GCM_TAG_LEN])?
                .output(&mut o[..n])
        })?;
        let opened = run_batch(&mut self.client, open)?;
        let took = t0.elapsed();
        for Done { j, pkt, t, .. } in checked("GCM open", first, idx, &opened)? {
            let l3 = self.layouts[t].l3;
            let n = self.traffic[t].len() - l3;
            let pt = &self.traffic[t][l3..];
            if &self.out2.get(j)[..n] != pt {
                bail!("packet {pkt}: GCM open did not give back the plaintext");
            }
            let want = soft::gcm_seal(&GCM_KEY, &ivs[j], &self.aux.get(j)[..8], pt);
            if self.out.get(j)[..n + GCM_TAG_LEN] != want[..] {
                bail!("packet {pkt}: device ciphertext/tag differ from software AES-256-GCM");
            }
        }
        Ok(took)
    }

    /// Writes the ESP header (SPI, sequence number from `first + 1`) of
    /// `n` packets into `aux` and returns their IVs.
    fn esp_headers(&mut self, n: usize, first: u64) -> Vec<[u8; 12]> {
        let mut ivs = Vec::with_capacity(n);
        for j in 0..n {
            let seq = (first + j as u64 + 1) as u32;
            let a = self.aux.get_mut(j);
            a[..4].copy_from_slice(&ESP_SPI.to_be_bytes());
            a[4..8].copy_from_slice(&seq.to_be_bytes());
            let mut iv = [0u8; 12];
            iv[..4].copy_from_slice(b"salt");
            iv[4..].copy_from_slice(&u64::from(seq).to_be_bytes());
            ivs.push(iv);
        }
        ivs
    }

    /// DMA copy of each frame into `out`; returns the device time.
    fn copy(&mut self, idx: &[usize], first: u64) -> Result<Duration> {
        let t0 = Instant::now();
        let (frame, traffic) = (&self.frame, self.traffic);
        let reqs = per_packet(idx, &mut self.out, |j, t, o| {
            let n = traffic[t].len();
            Request::new(OP_COPY)
                .input(&frame.get(j)[..n])?
                .output(&mut o[..n])
        })?;
        let done = run_batch(&mut self.client, reqs)?;
        let took = t0.elapsed();
        for Done { j, pkt, t, .. } in checked("copy", first, idx, &done)? {
            let n = self.traffic[t].len();
            if self.out.get(j)[..n] != self.traffic[t][..] {
                bail!("packet {pkt}: copied bytes differ from the source");
            }
        }
        Ok(took)
    }
}

fn csum_requests<'a>(
    frame: &'a Bufs<'_>,
    aux: &'a Bufs<'_>,
    idx: &[usize],
    layouts: &[Layout],
) -> Result<Vec<Request<'a>>> {
    let reqs = idx.iter().enumerate().map(|(j, &t)| {
        let l = &layouts[t];
        let ph = if l.v6 { 40 } else { 12 };
        Request::new(OP_CSUM)
            .input(&aux.get(j)[..ph])?
            .input(&frame.get(j)[l.l4..l.l4 + l.l4_len])
    });
    Ok(reqs.collect::<Result<_, _>>()?)
}

/// Runs a batch through the cell's client; the requests, and with them
/// the borrows of the cell's buffers, end here.
fn run_batch(
    client: &mut Client<'_, DeviceTransport>,
    mut reqs: Vec<Request<'_>>,
) -> Result<Vec<IocCompletion>> {
    run(client, &mut reqs)
}

/// One request per packet of the batch: `make(j, t, out)` gets the
/// packet's place `j` in the batch, its frame `traffic[t]` and its own
/// output buffer of `outs`.
fn per_packet<'a>(
    idx: &[usize],
    outs: &'a mut Bufs<'_>,
    mut make: impl FnMut(usize, usize, &'a mut [u8]) -> Result<Request<'a>, ClientError>,
) -> Result<Vec<Request<'a>>> {
    let reqs = idx
        .iter()
        .zip(outs.all_mut())
        .enumerate()
        .map(|(j, (&t, o))| make(j, t, o));
    Ok(reqs.collect::<Result<_, _>>()?)
}
