//! The vhost-user message path as a frontend reaches it: the real
//! `VhostUserDaemon` with pktaccel's backend, fed a byte stream of
//! messages over a real socket (features, SET_MEM_TABLE, SET_VRING_*,
//! GET/SET_CONFIG, ...), with file descriptors attached where the message
//! carries them, then every kick eventfd kicked so the workers walk
//! whatever rings the messages described.
//!
//! Input: `[image_len u16][messages ...][memory image]`. Each message is a
//! vhost-user header (`request u32, flags u32, size u32`) and `size` bytes
//! of payload (cut at the end of the input). SET_MEM_TABLE and
//! ADD_MEM_REG get one memfd per region named in the payload (at most 8),
//! each holding the memory image; SET_VRING_KICK/CALL/ERR get an eventfd
//! unless the payload sets the no-fd bit; other fd-carrying messages get
//! one memfd.
#![no_main]

use std::io::Read;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use libfuzzer_sys::fuzz_target;
use pktaccel_device::backend::PktAccelBackend;
use pktaccel_device::config::DeviceOptions;
use pktaccel_device::stats::Stats;
use vhost_user_backend::VhostUserDaemon;
use vm_memory::{GuestMemoryAtomic, GuestMemoryMmap};
use vmm_sys_util::sock_ctrl_msg::ScmSocket;

/// Size of each memfd handed over as guest RAM.
const MEMFD_SIZE: usize = 0x10000;

const SET_MEM_TABLE: u32 = 5;
const SET_VRING_KICK: u32 = 12;
const SET_VRING_ERR: u32 = 14;
const ADD_MEM_REG: u32 = 37;
const REM_MEM_REG: u32 = 38;
const FD_MESSAGES: [u32; 5] = [6, 7, 21, 32, 42];

fn memfd(image: &[u8]) -> OwnedFd {
    // SAFETY: memfd_create with a NUL-terminated name; the result is checked.
    let fd = unsafe { libc::memfd_create(c"fuzz-guest-ram".as_ptr(), libc::MFD_CLOEXEC) };
    assert!(fd >= 0, "memfd_create failed");
    // SAFETY: `fd` is a fresh descriptor that we own from here on.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let mut f = std::fs::File::from(fd);
    f.set_len(MEMFD_SIZE as u64).expect("memfd size");
    std::io::Write::write_all(&mut f, &image[..image.len().min(MEMFD_SIZE)]).expect("memfd");
    f.into()
}

fn eventfd() -> OwnedFd {
    // SAFETY: eventfd with valid flags; the result is checked.
    let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
    assert!(fd >= 0, "eventfd failed");
    // SAFETY: `fd` is a fresh descriptor that we own from here on.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

/// The descriptors to attach to a message, and the kick eventfds among them.
fn fds_for(request: u32, payload: &[u8], image: &[u8], kicks: &mut Vec<OwnedFd>) -> Vec<OwnedFd> {
    let word = |i: usize| {
        payload
            .get(i..i + 8)
            .map_or(0, |b| u64::from_le_bytes(b.try_into().unwrap()))
    };
    match request {
        SET_MEM_TABLE => {
            let n = payload.first().map_or(0, |&b| usize::from(b).min(8));
            (0..n).map(|_| memfd(image)).collect()
        }
        ADD_MEM_REG | REM_MEM_REG => vec![memfd(image)],
        SET_VRING_KICK..=SET_VRING_ERR if word(0) & 0x100 == 0 => {
            let fd = eventfd();
            if request == SET_VRING_KICK {
                // SAFETY: dup of a descriptor we own; the result is checked.
                let dup = unsafe { libc::dup(fd.as_raw_fd()) };
                assert!(dup >= 0, "dup failed");
                // SAFETY: `dup` is a fresh descriptor that we own.
                kicks.push(unsafe { OwnedFd::from_raw_fd(dup) });
            }
            vec![fd]
        }
        r if FD_MESSAGES.contains(&r) => vec![memfd(image)],
        _ => Vec::new(),
    }
}

fn socket_path() -> std::path::PathBuf {
    static N: AtomicU64 = AtomicU64::new(0);
    std::env::temp_dir().join(format!(
        "pktaccel-fuzz-vu-{}-{}.sock",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ))
}

fn send_all(sock: &UnixStream, msgs: &[u8], image: &[u8], kicks: &mut Vec<OwnedFd>) {
    let mut rest = msgs;
    while rest.len() >= 12 {
        let request = u32::from_le_bytes(rest[0..4].try_into().unwrap());
        let size = u32::from_le_bytes(rest[8..12].try_into().unwrap()) as usize;
        let end = (12 + size).min(rest.len());
        let (msg, tail) = rest.split_at(end);
        let fds = fds_for(request, &msg[12..], image, kicks);
        let raw: Vec<RawFd> = fds.iter().map(|f| f.as_raw_fd()).collect();
        if sock.send_with_fds(&[msg], &raw).is_err() {
            return; // The backend hung up on an earlier message.
        }
        rest = tail;
    }
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 2 {
        return;
    }
    let image_len = usize::from(u16::from_le_bytes([data[0], data[1]])).min(data.len() - 2);
    let (msgs, image) = data[2..].split_at(data.len() - 2 - image_len);

    let opts = DeviceOptions {
        num_queues: 2,
        queue_size: 64,
        ..DeviceOptions::default()
    };
    let mem = GuestMemoryAtomic::new(GuestMemoryMmap::new());
    let backend = PktAccelBackend::new(opts, mem.clone(), Arc::new(Stats::new(2)));
    let mut daemon = VhostUserDaemon::new("fuzz".into(), backend, mem).expect("daemon");

    let path = socket_path();
    let listener = UnixListener::bind(&path).expect("bind the fuzz socket");
    daemon
        .start_client(path.to_str().expect("utf-8 temp path"))
        .expect("connect");
    let (sock, _) = listener.accept().expect("accept");
    drop(listener);
    let _ = std::fs::remove_file(&path);

    // Drain replies so that the backend never blocks writing them.
    let mut reader = sock.try_clone().expect("clone");
    let drain = std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while matches!(reader.read(&mut buf), Ok(n) if n > 0) {}
    });
    let mut kicks = Vec::new();
    send_all(&sock, msgs, image, &mut kicks);
    for k in &kicks {
        let one = 1u64.to_ne_bytes();
        // SAFETY: writing 8 bytes from a local buffer to an eventfd we own.
        unsafe { libc::write(k.as_raw_fd(), one.as_ptr().cast(), one.len()) };
    }
    let _ = sock.shutdown(std::net::Shutdown::Write);
    let _ = daemon.wait();
    let _ = sock.shutdown(std::net::Shutdown::Both);
    drain.join().expect("reply reader");
    // Dropping the daemon stops and joins the queue workers.
    drop(daemon);
});
