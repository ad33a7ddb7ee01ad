//! Host-side stand-in for QEMU and a guest driver, shared by the integration
//! tests and the benchmark: starts the real `pktaccel-device` binary on a
//! real unix socket, connects with the `vhost` crate's `Frontend`, hands it
//! memfd-backed guest memory (two regions, so segments can straddle them),
//! lays out split virtqueues in that memory, kicks through eventfds and reads
//! completions from the used rings.
#![allow(dead_code)]

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::os::fd::{AsRawFd, FromRawFd};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use pktaccel_abi::*;
use vhost::vhost_user::message::{VhostUserProtocolFeatures, VhostUserVirtioFeatures};
use vhost::vhost_user::{Frontend, VhostUserFrontend};
use vhost::{VhostBackend, VhostUserMemoryRegionInfo, VringConfigData};
use vm_memory::{
    Bytes, FileOffset, GuestAddress, GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion,
};
use vmm_sys_util::eventfd::EventFd;

/// Guest RAM: two adjacent 32 MiB regions of one memfd.
pub const REGION_SIZE: u64 = 32 << 20;
/// Total guest RAM.
pub const MEM_SIZE: u64 = 2 * REGION_SIZE;
/// Per-queue control area (rings, header slots, status slots).
const QUEUE_AREA: u64 = 256 << 10;
const RING_BASE: u64 = 1 << 20;
/// Start of the data-buffer heap.
pub const DATA_BASE: u64 = 16 << 20;

use virtio_bindings::bindings::virtio_ring as vr;
const VRING_DESC_F_NEXT: u16 = vr::VRING_DESC_F_NEXT as u16;
const VRING_DESC_F_WRITE: u16 = vr::VRING_DESC_F_WRITE as u16;
const VRING_DESC_F_INDIRECT: u16 = vr::VRING_DESC_F_INDIRECT as u16;

static NEXT_ID: AtomicU32 = AtomicU32::new(0);

/// A running `pktaccel-device` process.
pub struct Daemon {
    child: Child,
    /// The vhost-user socket.
    pub path: PathBuf,
    dir: PathBuf,
    log: Arc<Mutex<String>>,
}

impl Daemon {
    /// Starts the daemon with extra `args` and waits for its socket.
    pub fn spawn(args: &[&str]) -> Daemon {
        let dir = std::env::temp_dir().join(format!(
            "pktaccel-dev-{}-{}",
            std::process::id(),
            NEXT_ID.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("dev.sock");
        Self::spawn_at(&path, args, dir)
    }

    /// Starts the daemon on `path` (no readiness wait if the socket is taken).
    pub fn spawn_at(path: &Path, args: &[&str], dir: PathBuf) -> Daemon {
        let mut child = Command::new(env!("CARGO_BIN_EXE_pktaccel-device"))
            .arg("--socket")
            .arg(path)
            .args(args)
            .args(["--log-level", "info"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start pktaccel-device");
        let log = Arc::new(Mutex::new(String::new()));
        let stderr = child.stderr.take().unwrap();
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let mut l = sink.lock().unwrap();
                l.push_str(&line);
                l.push('\n');
            }
        });
        let d = Daemon {
            child,
            path: path.to_owned(),
            dir,
            log,
        };
        d.wait_for_log("waiting for a vhost-user frontend", 0);
        d
    }

    /// Everything the daemon wrote to stderr so far.
    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// Waits until `needle` occurs in the log more than `seen` times.
    pub fn wait_for_log(&self, needle: &str, seen: usize) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.log().matches(needle).count() <= seen {
            assert!(
                Instant::now() < deadline,
                "daemon never logged {needle:?}; log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// CPU time (user + system) the daemon has used so far, in seconds.
    pub fn cpu_seconds(&self) -> f64 {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.child.id())).unwrap();
        // Fields after the parenthesised command name; utime and stime are
        // fields 14 and 15 of the whole line.
        let rest = &stat[stat.rfind(')').unwrap() + 2..];
        let f: Vec<&str> = rest.split_whitespace().collect();
        let ticks: f64 = f[11].parse::<f64>().unwrap() + f[12].parse::<f64>().unwrap();
        // SAFETY: sysconf has no preconditions.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
        ticks / hz
    }

    /// The daemon's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends a signal to the daemon.
    pub fn signal(&self, sig: libc::c_int) {
        // SAFETY: kill() on our own child's pid has no memory-safety
        // preconditions; the child has not been reaped, so the pid is ours.
        unsafe { libc::kill(self.child.id() as libc::pid_t, sig) };
    }

    /// Asks for the counters (SIGUSR1) and parses the dump.
    pub fn stats(&self) -> HashMap<String, u64> {
        let before = self.log().matches("pktaccel-device stats:").count();
        self.signal(libc::SIGUSR1);
        self.wait_for_log("bad ring heads", before);
        parse_stats(&self.log())
    }

    /// Waits for the process to exit by itself.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                return Some(st);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// SIGTERM, then the exit status.
    pub fn stop(mut self) -> ExitStatus {
        self.signal(libc::SIGTERM);
        self.wait_exit(Duration::from_secs(10))
            .expect("daemon did not exit on SIGTERM")
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Parses the last stats dump: `op.<name>.requests`, `op.<name>.bytes`,
/// `status.<name>`, `no_status`, `bad_head`.
pub fn parse_stats(log: &str) -> HashMap<String, u64> {
    let mut m = HashMap::new();
    let Some(start) = log.rfind("pktaccel-device stats:") else {
        return m;
    };
    for line in log[start..].lines().skip(1) {
        let w: Vec<&str> = line.split_whitespace().collect();
        match w.as_slice() {
            ["op", name, "requests", r, "bytes", b] => {
                m.insert(format!("op.{name}.requests"), r.parse().unwrap());
                m.insert(format!("op.{name}.bytes"), b.parse().unwrap());
            }
            ["status", name, n] => {
                m.insert(format!("status.{name}"), n.parse().unwrap());
            }
            ["no-status", "chains", n] => {
                m.insert("no_status".into(), n.parse().unwrap());
            }
            ["busy", "ns", n] => {
                m.insert("busy_ns".into(), n.parse().unwrap());
            }
            ["broken", "queues", n] => {
                m.insert("broken".into(), n.parse().unwrap());
            }
            ["bad", "ring", "heads", n] => {
                m.insert("bad_head".into(), n.parse().unwrap());
                break;
            }
            _ => break,
        }
    }
    m
}

/// One raw descriptor, for building well- and ill-formed chains.
#[derive(Clone, Copy, Debug)]
pub struct RawDesc {
    /// Guest-physical address.
    pub addr: u64,
    /// Length in bytes.
    pub len: u32,
    /// Device-writable.
    pub write: bool,
}

impl RawDesc {
    /// A device-readable descriptor.
    pub fn r(addr: u64, len: u32) -> Self {
        Self {
            addr,
            len,
            write: false,
        }
    }
    /// A device-writable descriptor.
    pub fn w(addr: u64, len: u32) -> Self {
        Self {
            addr,
            len,
            write: true,
        }
    }
}

/// A driver-side split virtqueue living in guest memory.
pub struct Queue {
    /// Queue size.
    pub size: u16,
    base: u64,
    desc: u64,
    avail: u64,
    used: u64,
    kick: EventFd,
    call: EventFd,
    avail_idx: u16,
    kicked_idx: u16,
    used_seen: u16,
    free: Vec<u16>,
    inflight: HashMap<u16, Vec<u16>>,
    event_idx: bool,
    /// When false (a polling driver), used_event is never advanced, so the
    /// device does not signal the call eventfd after every batch.
    pub interrupts: bool,
}

impl Queue {
    /// Address of the 64-byte header slot of descriptor `id`.
    pub fn header_slot(&self, id: u16) -> u64 {
        self.base + (64 << 10) + u64::from(id) * 64
    }
    /// Address of the 16-byte status slot of descriptor `id`.
    pub fn status_slot(&self, id: u16) -> u64 {
        self.base + (128 << 10) + u64::from(id) * 16
    }
    /// Descriptors free for new chains.
    pub fn free_descs(&self) -> usize {
        self.free.len()
    }
}

/// A connected frontend with guest memory and queues.
pub struct Guest {
    /// The vhost-user frontend connection.
    pub front: Frontend,
    /// Guest memory, as the driver sees it.
    pub mem: GuestMemoryMmap,
    _memfd: File,
    /// The request queues.
    pub queues: Vec<Queue>,
    /// Features the backend offered.
    pub offered: u64,
    heap: u64,
}

fn memfd(size: u64) -> File {
    let name = c"pktaccel-guest-ram";
    // SAFETY: `name` is a valid NUL-terminated string; memfd_create has no
    // other preconditions and returns a new fd or -1.
    let fd = unsafe { libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC) };
    assert!(fd >= 0, "memfd_create: {}", std::io::Error::last_os_error());
    // SAFETY: `fd` is a freshly created descriptor that nothing else owns.
    let f = unsafe { File::from_raw_fd(fd) };
    f.set_len(size).unwrap();
    f
}

/// Options for [`Guest::connect`].
#[derive(Clone, Copy, Debug)]
pub struct GuestOpts {
    /// Queues to set up (must equal the daemon's `--queues`).
    pub queues: usize,
    /// Ring size.
    pub queue_size: u16,
    /// Negotiate VIRTIO_F_EVENT_IDX.
    pub event_idx: bool,
}

impl Default for GuestOpts {
    fn default() -> Self {
        Self {
            queues: 1,
            queue_size: 256,
            event_idx: false,
        }
    }
}

impl Guest {
    /// Connects and negotiates like QEMU does, then starts every queue.
    pub fn connect(path: &Path, o: GuestOpts) -> Guest {
        let mut front = Frontend::connect(path, o.queues as u64).expect("connect");
        front.set_owner().unwrap();
        let offered = front.get_features().unwrap();
        let pf = front.get_protocol_features().unwrap();
        assert!(pf.contains(VhostUserProtocolFeatures::CONFIG | VhostUserProtocolFeatures::MQ));
        front
            .set_protocol_features(
                VhostUserProtocolFeatures::CONFIG | VhostUserProtocolFeatures::MQ,
            )
            .unwrap();
        assert_eq!(front.get_queue_num().unwrap(), o.queues as u64);
        let mut acked = offered & !(1u64 << VIRTIO_F_EVENT_IDX);
        if o.event_idx {
            acked |= 1u64 << VIRTIO_F_EVENT_IDX;
        }
        front.set_features(acked).unwrap();

        let file = memfd(MEM_SIZE);
        let mem: GuestMemoryMmap = GuestMemoryMmap::from_ranges_with_files([
            (
                GuestAddress(0),
                REGION_SIZE as usize,
                Some(FileOffset::new(file.try_clone().unwrap(), 0)),
            ),
            (
                GuestAddress(REGION_SIZE),
                REGION_SIZE as usize,
                Some(FileOffset::new(file.try_clone().unwrap(), REGION_SIZE)),
            ),
        ])
        .unwrap();
        let regions: Vec<VhostUserMemoryRegionInfo> = mem
            .iter()
            .map(|r| VhostUserMemoryRegionInfo {
                guest_phys_addr: r.start_addr().0,
                memory_size: r.len(),
                userspace_addr: r.as_ptr() as u64,
                mmap_offset: r.start_addr().0,
                mmap_handle: file.as_raw_fd(),
            })
            .collect();
        front.set_mem_table(&regions).unwrap();

        let mut queues = Vec::new();
        for q in 0..o.queues {
            let n = o.queue_size;
            let base = RING_BASE + q as u64 * QUEUE_AREA;
            let (desc, avail, used) = (base, base + (16 << 10), base + (32 << 10));
            let hva = |gpa: u64| mem.get_host_address(GuestAddress(gpa)).unwrap() as u64;
            front.set_vring_num(q, n).unwrap();
            front
                .set_vring_addr(
                    q,
                    &VringConfigData {
                        queue_max_size: n,
                        queue_size: n,
                        flags: 0,
                        desc_table_addr: hva(desc),
                        used_ring_addr: hva(used),
                        avail_ring_addr: hva(avail),
                        log_addr: None,
                    },
                )
                .unwrap();
            front.set_vring_base(q, 0).unwrap();
            let call = EventFd::new(libc::EFD_NONBLOCK).unwrap();
            let kick = EventFd::new(libc::EFD_NONBLOCK).unwrap();
            front.set_vring_call(q, &call).unwrap();
            front.set_vring_kick(q, &kick).unwrap();
            front.set_vring_enable(q, true).unwrap();
            queues.push(Queue {
                size: n,
                base,
                desc,
                avail,
                used,
                kick,
                call,
                avail_idx: 0,
                kicked_idx: 0,
                used_seen: 0,
                free: (0..n).rev().collect(),
                inflight: HashMap::new(),
                event_idx: o.event_idx,
                interrupts: true,
            });
        }
        Guest {
            front,
            mem,
            _memfd: file,
            queues,
            offered,
            heap: DATA_BASE,
        }
    }

    /// The device config space through GET_CONFIG.
    pub fn config(&mut self, offset: u32, size: u32) -> Vec<u8> {
        let buf = vec![0u8; size as usize];
        let (_, payload) = self
            .front
            .get_config(
                offset,
                size,
                vhost::vhost_user::message::VhostUserConfigFlags::empty(),
                &buf,
            )
            .unwrap();
        payload
    }

    /// Allocates `len` bytes of guest memory (64-byte aligned).
    pub fn alloc(&mut self, len: u64) -> u64 {
        let a = self.heap.next_multiple_of(64);
        self.heap = a + len;
        assert!(self.heap <= MEM_SIZE, "test guest memory exhausted");
        a
    }

    /// Allocates and fills a buffer.
    pub fn alloc_with(&mut self, data: &[u8]) -> u64 {
        let a = self.alloc(data.len() as u64);
        self.write(a, data);
        a
    }

    /// Writes guest memory.
    pub fn write(&self, gpa: u64, data: &[u8]) {
        self.mem.write_slice(data, GuestAddress(gpa)).unwrap();
    }

    /// Reads guest memory.
    pub fn read(&self, gpa: u64, len: usize) -> Vec<u8> {
        let mut v = vec![0u8; len];
        self.mem.read_slice(&mut v, GuestAddress(gpa)).unwrap();
        v
    }

    /// Writes descriptor `id` of queue `q` verbatim.
    pub fn write_desc(&self, q: usize, id: u16, addr: u64, len: u32, flags: u16, next: u16) {
        let at = self.queues[q].desc + u64::from(id) * 16;
        let mut b = [0u8; 16];
        b[0..8].copy_from_slice(&addr.to_le_bytes());
        b[8..12].copy_from_slice(&len.to_le_bytes());
        b[12..14].copy_from_slice(&flags.to_le_bytes());
        b[14..16].copy_from_slice(&next.to_le_bytes());
        self.write(at, &b);
    }

    /// Takes a free descriptor id out of the allocator (for hand-built chains).
    pub fn take_desc(&mut self, q: usize) -> u16 {
        self.queues[q].free.pop().expect("out of descriptors")
    }

    /// Returns descriptor ids taken with [`take_desc`](Self::take_desc).
    pub fn give_back(&mut self, q: usize, ids: &[u16]) {
        self.queues[q].free.extend_from_slice(ids);
    }

    /// Puts `head` on the available ring (published, not kicked).
    pub fn push_avail(&mut self, q: usize, head: u16) {
        let qu = &mut self.queues[q];
        let slot = qu.avail + 4 + u64::from(qu.avail_idx % qu.size) * 2;
        let (avail, idx) = (qu.avail, qu.avail_idx.wrapping_add(1));
        qu.avail_idx = idx;
        self.mem
            .write_obj(head.to_le(), GuestAddress(slot))
            .unwrap();
        self.mem
            .store(idx.to_le(), GuestAddress(avail + 2), Ordering::Release)
            .unwrap();
    }

    /// Writes a chain of `descs` once into descriptors `first..first+len`
    /// (for drivers that keep pre-built chains and only recycle heads).
    pub fn prebuild(&mut self, q: usize, first: u16, descs: &[RawDesc]) {
        let qu = &mut self.queues[q];
        let ids: Vec<u16> = (0..descs.len() as u16).map(|i| first + i).collect();
        qu.free.retain(|id| !ids.contains(id));
        for (i, d) in descs.iter().enumerate() {
            let last = i + 1 == descs.len();
            let flags = if d.write { VRING_DESC_F_WRITE } else { 0 }
                | if last { 0 } else { VRING_DESC_F_NEXT };
            let next = if last { 0 } else { ids[i + 1] };
            self.write_desc(q, ids[i], d.addr, d.len, flags, next);
        }
    }

    /// Makes pre-built chains available with one index update.
    pub fn push_avail_batch(&mut self, q: usize, heads: &[u16]) {
        let qu = &mut self.queues[q];
        for &head in heads {
            let slot = qu.avail + 4 + u64::from(qu.avail_idx % qu.size) * 2;
            qu.avail_idx = qu.avail_idx.wrapping_add(1);
            self.mem
                .write_obj(head.to_le(), GuestAddress(slot))
                .unwrap();
        }
        self.mem
            .store(
                qu.avail_idx.to_le(),
                GuestAddress(qu.avail + 2),
                Ordering::Release,
            )
            .unwrap();
    }

    /// Counts completions of pre-built chains (entries not read).
    pub fn reap(&mut self, q: usize) -> usize {
        let qu = &mut self.queues[q];
        let idx: u16 = self
            .mem
            .load(GuestAddress(qu.used + 2), Ordering::Acquire)
            .unwrap();
        let n = idx.wrapping_sub(qu.used_seen);
        qu.used_seen = idx;
        usize::from(n)
    }

    /// Builds a chain from `descs` and makes it available; returns the head.
    pub fn submit_raw(&mut self, q: usize, descs: &[RawDesc]) -> u16 {
        let ids: Vec<u16> = (0..descs.len()).map(|_| self.take_desc(q)).collect();
        for (i, d) in descs.iter().enumerate() {
            let last = i + 1 == descs.len();
            let flags = if d.write { VRING_DESC_F_WRITE } else { 0 }
                | if last { 0 } else { VRING_DESC_F_NEXT };
            let next = if last { 0 } else { ids[i + 1] };
            self.write_desc(q, ids[i], d.addr, d.len, flags, next);
        }
        let head = ids[0];
        self.queues[q].inflight.insert(head, ids);
        self.push_avail(q, head);
        head
    }

    /// Puts `descs` into an indirect table at `table` (guest memory) and
    /// submits one ring descriptor pointing at it; returns the head.
    pub fn submit_indirect(&mut self, q: usize, table: u64, descs: &[RawDesc]) -> u16 {
        for (i, d) in descs.iter().enumerate() {
            let last = i + 1 == descs.len();
            let flags = if d.write { VRING_DESC_F_WRITE } else { 0 }
                | if last { 0 } else { VRING_DESC_F_NEXT };
            let mut b = [0u8; 16];
            b[0..8].copy_from_slice(&d.addr.to_le_bytes());
            b[8..12].copy_from_slice(&d.len.to_le_bytes());
            b[12..14].copy_from_slice(&flags.to_le_bytes());
            b[14..16].copy_from_slice(&(if last { 0 } else { i as u16 + 1 }).to_le_bytes());
            self.write(table + 16 * i as u64, &b);
        }
        let head = self.take_desc(q);
        self.write_desc(
            q,
            head,
            table,
            16 * descs.len() as u32,
            VRING_DESC_F_INDIRECT,
            0,
        );
        self.queues[q].inflight.insert(head, vec![head]);
        self.push_avail(q, head);
        head
    }

    /// Submits a well-formed request: header and status go to the head
    /// descriptor's slots; returns the head.
    pub fn submit(
        &mut self,
        q: usize,
        hdr: &RequestHeader,
        ins: &[(u64, u32)],
        outs: &[(u64, u32)],
    ) -> u16 {
        let head = *self.queues[q].free.last().expect("out of descriptors");
        let (h, s) = (
            self.queues[q].header_slot(head),
            self.queues[q].status_slot(head),
        );
        self.write(h, &hdr.to_le_bytes());
        self.write(s, &[0xee; STATUS_RECORD_SIZE]);
        let mut d = vec![RawDesc::r(h, REQUEST_HEADER_SIZE as u32)];
        d.extend(ins.iter().map(|&(a, l)| RawDesc::r(a, l)));
        d.extend(outs.iter().map(|&(a, l)| RawDesc::w(a, l)));
        d.push(RawDesc::w(s, STATUS_RECORD_SIZE as u32));
        let got = self.submit_raw(q, &d);
        debug_assert_eq!(got, head);
        head
    }

    /// Notifies the device (with EVENT_IDX: only when it asked to be).
    pub fn kick(&mut self, q: usize) {
        let qu = &mut self.queues[q];
        let (new, old) = (qu.avail_idx, qu.kicked_idx);
        qu.kicked_idx = new;
        if qu.event_idx {
            std::sync::atomic::fence(Ordering::SeqCst);
            let ev: u16 = self
                .mem
                .load(
                    GuestAddress(qu.used + 4 + 8 * u64::from(qu.size)),
                    Ordering::Acquire,
                )
                .unwrap();
            // vring_need_event(event, new, old)
            if new.wrapping_sub(ev).wrapping_sub(1) >= new.wrapping_sub(old) {
                return;
            }
        }
        qu.kick.write(1).unwrap();
    }

    /// Publishes `idx` as the avail index verbatim (a hostile driver).
    pub fn set_avail_idx_raw(&mut self, q: usize, idx: u16) {
        let at = self.queues[q].avail + 2;
        self.mem
            .store(idx.to_le(), GuestAddress(at), Ordering::Release)
            .unwrap();
    }

    /// Kicks queue `q` unconditionally (ignoring EVENT_IDX's avail_event).
    pub fn kick_raw(&self, q: usize) {
        self.queues[q].kick.write(1).unwrap();
    }

    /// Guest address of descriptor `id` of queue `q`.
    pub fn desc_addr(&self, q: usize, id: u16) -> u64 {
        self.queues[q].desc + u64::from(id) * 16
    }

    /// Sets the available ring's flags (1 = VRING_AVAIL_F_NO_INTERRUPT).
    pub fn set_avail_flags(&mut self, q: usize, flags: u16) {
        let at = self.queues[q].avail;
        self.mem
            .store(flags.to_le(), GuestAddress(at), Ordering::Release)
            .unwrap();
    }

    /// Waits (up to 10 s) for the call eventfd to fire and returns its
    /// counter: the number of notifications since the last read.
    pub fn wait_call(&mut self, q: usize) -> u64 {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match self.queues[q].call.read() {
                Ok(n) => return n,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    assert!(Instant::now() < deadline, "no used-buffer notification");
                    std::thread::sleep(Duration::from_millis(1));
                }
                Err(e) => panic!("call eventfd: {e}"),
            }
        }
    }

    /// The call eventfd's counter if it fired since the last read, without
    /// waiting.
    pub fn try_call(&mut self, q: usize) -> Option<u64> {
        self.queues[q].call.read().ok()
    }

    /// Completions available now: (head, used length).
    pub fn poll(&mut self, q: usize) -> Vec<(u16, u32)> {
        let mut out = Vec::new();
        self.poll_into(q, &mut out);
        out
    }

    /// Appends available completions to `out`; returns how many.
    pub fn poll_into(&mut self, q: usize, out: &mut Vec<(u16, u32)>) -> usize {
        let qu = &mut self.queues[q];
        let idx: u16 = self
            .mem
            .load(GuestAddress(qu.used + 2), Ordering::Acquire)
            .unwrap();
        let mut n = 0;
        while qu.used_seen != idx {
            let e = qu.used + 4 + u64::from(qu.used_seen % qu.size) * 8;
            let id: u32 = self.mem.read_obj(GuestAddress(e)).unwrap();
            let len: u32 = self.mem.read_obj(GuestAddress(e + 4)).unwrap();
            qu.used_seen = qu.used_seen.wrapping_add(1);
            if let Some(ids) = qu.inflight.remove(&(id as u16)) {
                qu.free.extend(ids);
            }
            out.push((id as u16, len));
            n += 1;
        }
        if qu.event_idx && qu.interrupts && n > 0 {
            // used_event: interrupt me after the next completion.
            let at = qu.avail + 4 + 2 * u64::from(qu.size);
            self.mem
                .store(qu.used_seen.to_le(), GuestAddress(at), Ordering::Release)
                .unwrap();
        }
        n
    }

    /// Waits (up to 10 s) for at least `n` completions.
    pub fn wait(&mut self, q: usize, n: usize) -> Vec<(u16, u32)> {
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut out = Vec::new();
        while out.len() < n {
            if self.poll_into(q, &mut out) == 0 {
                assert!(
                    Instant::now() < deadline,
                    "timed out waiting for {n} completions"
                );
                std::thread::sleep(Duration::from_micros(200));
            }
        }
        out
    }

    /// The status record of the chain whose head is `head`.
    pub fn status(&self, q: usize, head: u16) -> StatusRecord {
        StatusRecord::from_le_bytes(&self.read(self.queues[q].status_slot(head), 16)).unwrap()
    }

    /// Submits one request, waits, returns (status record, used length).
    pub fn call(
        &mut self,
        q: usize,
        hdr: &RequestHeader,
        ins: &[(u64, u32)],
        outs: &[(u64, u32)],
    ) -> (StatusRecord, u32) {
        let head = self.submit(q, hdr, ins, outs);
        self.kick(q);
        let done = self.wait(q, 1);
        assert_eq!(done[0].0, head, "completion for an unexpected head");
        (self.status(q, head), done[0].1)
    }

    /// A raw chain, submitted, kicked and waited for: its used length.
    pub fn call_raw(&mut self, q: usize, descs: &[RawDesc]) -> u32 {
        let head = self.submit_raw(q, descs);
        self.kick(q);
        let done = self.wait(q, 1);
        assert_eq!(done[0].0, head);
        done[0].1
    }
}

/// A header for `op` with everything else zero.
pub fn hdr(op: u16) -> RequestHeader {
    RequestHeader {
        op,
        ..Default::default()
    }
}

/// Features the daemon must offer regardless of `--ops`.
pub fn base_features() -> u64 {
    (1u64 << VIRTIO_F_VERSION_1)
        | (1u64 << VIRTIO_F_EVENT_IDX)
        | (1u64 << VIRTIO_F_INDIRECT_DESC)
        | VhostUserVirtioFeatures::PROTOCOL_FEATURES.bits()
}
