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

mod daemon;
mod guest;
mod ring;

// Each test binary and the benchmark use a different subset.
#[allow(unused_imports)]
pub use daemon::{Daemon, parse_stats};
pub use guest::{Guest, GuestOpts};

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

/// A header for `op` with everything else zero.
pub fn hdr(op: u16) -> RequestHeader {
    RequestHeader {
        op,
        ..Default::default()
    }
}

/// A header for an AES-GCM op on key slot `slot` with IV `iv` and
/// `aad_len` bytes of associated data.
pub fn gcm_header(op: u16, slot: u32, iv: &[u8; 12], aad_len: u32) -> RequestHeader {
    let mut h = hdr(op);
    h.key_slot = slot;
    h.aux = aad_len;
    h.params[..12].copy_from_slice(iv);
    h
}

/// A daemon started with `args` and a guest connected with default options.
pub fn start(args: &[&str]) -> (Daemon, Guest) {
    let d = Daemon::spawn(args);
    let g = Guest::connect(&d.path, GuestOpts::default());
    (d, g)
}

/// Asserts `st` is OK (naming the status otherwise) and passes it on.
pub fn ok(st: StatusRecord) -> StatusRecord {
    assert_eq!(st.status, STATUS_OK, "status {}", status_name(st.status));
    st
}

/// After any bad request queue `q` must still serve a good one.
pub fn still_serves(g: &mut Guest, q: usize) {
    let (st, used) = g.call(q, &hdr(OP_NOP), &[], &[]);
    assert_eq!(
        (st.status, used),
        (STATUS_OK, 16),
        "queue {q} stopped serving"
    );
}

/// Features the daemon must offer regardless of `--ops`.
pub fn base_features() -> u64 {
    (1u64 << VIRTIO_F_VERSION_1)
        | (1u64 << VIRTIO_F_EVENT_IDX)
        | (1u64 << VIRTIO_F_INDIRECT_DESC)
        | VhostUserVirtioFeatures::PROTOCOL_FEATURES.bits()
}
