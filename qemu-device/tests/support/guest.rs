//! The guest side of a connection: memfd guest memory, the vhost-user
//! handshake that hands it and the queues to the daemon, config space and
//! a bump allocator over guest memory.

use super::*;

/// A driver-side split virtqueue living in guest memory.
pub struct Queue {
    /// Queue size.
    pub size: u16,
    pub(super) base: u64,
    pub(super) desc: u64,
    pub(super) avail: u64,
    pub(super) used: u64,
    pub(super) kick: EventFd,
    pub(super) call: EventFd,
    pub(super) avail_idx: u16,
    pub(super) kicked_idx: u16,
    pub(super) used_seen: u16,
    pub(super) free: Vec<u16>,
    pub(super) inflight: HashMap<u16, Vec<u16>>,
    pub(super) event_idx: bool,
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
    pub(super) _memfd: File,
    /// The request queues.
    pub queues: Vec<Queue>,
    /// Features the backend offered.
    pub offered: u64,
    pub(super) heap: u64,
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
}
