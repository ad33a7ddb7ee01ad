//! A hostile driver: pktaccel is unbound and the test drives the device
//! from user space through the PCI BAR ([`crate::uvirtio`]), with rings in
//! memory it allocates, feeding the daemon the malformed queues a broken
//! or malicious driver could: avail index jumps (with and without
//! EVENT_IDX), descriptor loops, out-of-range addresses and heads, indirect
//! tables pointing at themselves, zero-length and over-length chains.
//! After each one the device is reset and must answer a well-formed
//! request; at the end pktaccel is rebound and must work. A daemon that
//! dies ends the whole boot on the host side.

use std::time::{Duration, Instant};

use pktaccel_abi::{
    OP_NOP, REQUEST_HEADER_SIZE, RequestHeader, STATUS_OK, STATUS_RECORD_SIZE, VIRTIO_F_EVENT_IDX,
    VIRTIO_F_INDIRECT_DESC, VIRTIO_F_VERSION_1, status_name,
};

use crate::ensure;
use crate::harness::{Test, TestResult};
use crate::uvirtio::{DmaPages, F_INDIRECT, F_NEXT, F_WRITE, S_NEEDS_RESET, UserVirtio};

const SIZE: u16 = 16;
/// Pages: descriptor table (+ indirect tables at 0x400 and up), avail ring,
/// used ring, header (+ status record at 0x100), data.
const DESC: usize = 0;
const AVAIL: usize = 1;
const USED: usize = 2;
const HDR: usize = 3;
const DATA: usize = 4;
const STATUS_OFF: usize = 0x100;
const TABLE_OFF: usize = 0x400;

/// The hostile-driver tests.
pub fn tests() -> Vec<Test> {
    tests!["hostile": malformed_queues_from_user_space_then_rebind]
}

struct Rig {
    v: UserVirtio,
    m: DmaPages,
    avail: u16,
    used_seen: u16,
}

impl Rig {
    fn start(&mut self, event_idx: bool) -> TestResult {
        for p in [DESC, AVAIL, USED, HDR, DATA] {
            self.m.clear(p);
        }
        self.avail = 0;
        self.used_seen = 0;
        let mut f = (1u64 << VIRTIO_F_VERSION_1) | (1u64 << VIRTIO_F_INDIRECT_DESC);
        if event_idx {
            f |= 1u64 << VIRTIO_F_EVENT_IDX;
        }
        let ring = [
            self.m.phys(DESC, 0),
            self.m.phys(AVAIL, 0),
            self.m.phys(USED, 0),
        ];
        self.v.start(f, SIZE, ring)
    }

    /// Writes descriptor `i` of the table at `base` in page `DESC`:
    /// (address, length, flags, next).
    fn desc(&self, base: usize, i: u16, (addr, len, flags, next): (u64, u32, u16, u16)) {
        let o = base + usize::from(i) * 16;
        self.m.put(DESC, o, addr);
        self.m.put(DESC, o + 8, len);
        self.m.put(DESC, o + 12, flags);
        self.m.put(DESC, o + 14, next);
    }

    fn d(&self, i: u16, addr: u64, len: u32, flags: u16, next: u16) {
        self.desc(0, i, (addr, len, flags, next));
    }

    /// Publishes `head` and sets the avail index to `idx` (normally the
    /// next one), then kicks.
    fn offer(&mut self, head: u16, idx: Option<u16>) {
        self.m
            .put(AVAIL, 4 + 2 * usize::from(self.avail % SIZE), head);
        self.avail = self.avail.wrapping_add(1);
        self.m.put(AVAIL, 2, idx.unwrap_or(self.avail));
        self.v.notify();
    }

    fn used_idx(&self) -> u16 {
        self.m.get(USED, 2)
    }

    fn hdr_phys(&self) -> u64 {
        self.m.phys(HDR, 0)
    }

    fn status_phys(&self) -> u64 {
        self.m.phys(HDR, STATUS_OFF)
    }

    /// A well-formed NOP must complete with STATUS_OK within 5 s.
    fn nop_completes(&mut self) -> TestResult {
        let h = RequestHeader {
            op: OP_NOP,
            ..Default::default()
        };
        for (i, chunk) in h.to_le_bytes().chunks(8).enumerate() {
            self.m
                .put(HDR, i * 8, u64::from_le_bytes(chunk.try_into().unwrap()));
        }
        self.m.put(HDR, STATUS_OFF, 0xeeee_eeeeu32);
        self.d(0, self.hdr_phys(), REQUEST_HEADER_SIZE as u32, F_NEXT, 1);
        self.d(1, self.status_phys(), STATUS_RECORD_SIZE as u32, F_WRITE, 0);
        let want = self.used_seen.wrapping_add(1);
        self.offer(0, None);
        let t = Instant::now();
        while self.used_idx() != want {
            ensure!(
                t.elapsed() < Duration::from_secs(5),
                "a well-formed NOP got no completion in 5 s (used idx {}, device status {:#x})",
                self.used_idx(),
                self.v.status()
            );
            std::thread::sleep(Duration::from_millis(1));
        }
        self.used_seen = want;
        let st: u32 = self.m.get(HDR, STATUS_OFF);
        ensure!(st == STATUS_OK, "NOP answered {}", status_name(st));
        Ok(())
    }
}

type Case = (&'static str, bool, fn(&mut Rig));

fn cases() -> Vec<Case> {
    vec![
        ("avail index 1000 ahead", false, |r| r.offer(0, Some(1000))),
        ("avail index 1000 ahead with EVENT_IDX", true, |r| {
            r.offer(0, Some(1000))
        }),
        ("descriptor loop", false, |r| {
            r.d(0, r.hdr_phys(), 64, F_NEXT, 1);
            r.d(1, r.status_phys(), 16, F_NEXT | F_WRITE, 0);
            r.offer(0, None);
        }),
        ("header and status outside guest memory", false, |r| {
            r.d(0, 0xffff_ffff_f000, 64, F_NEXT, 1);
            r.d(1, u64::MAX - 7, 16, F_WRITE, 0);
            r.offer(0, None);
        }),
        ("head and next past the ring", false, |r| {
            r.d(0, r.hdr_phys(), 64, F_NEXT, 200);
            r.offer(40, None);
            r.offer(0, None);
        }),
        ("indirect table pointing at itself", false, |r| {
            let t = r.m.phys(DESC, TABLE_OFF);
            r.desc(TABLE_OFF, 0, (t, 16, F_INDIRECT, 0));
            r.d(0, t, 16, F_INDIRECT, 0);
            r.offer(0, None);
        }),
        ("indirect table looping inside itself", false, |r| {
            let t = r.m.phys(DESC, TABLE_OFF);
            r.desc(TABLE_OFF, 0, (r.hdr_phys(), 64, F_NEXT, 1));
            r.desc(TABLE_OFF, 1, (r.status_phys(), 16, F_NEXT | F_WRITE, 0));
            r.d(0, t, 32, F_INDIRECT, 0);
            r.offer(0, None);
        }),
        ("zero-length descriptors and indirect table", false, |r| {
            r.d(0, r.hdr_phys(), 0, 0, 0);
            r.d(1, r.m.phys(DESC, TABLE_OFF), 0, F_INDIRECT, 0);
            r.offer(0, None);
            r.offer(1, None);
        }),
        (
            "over-length chains and a 4 GiB indirect table",
            false,
            |r| {
                for i in 0..SIZE {
                    r.d(i, r.m.phys(DATA, 0), u32::MAX, F_NEXT, i + 1);
                }
                r.d(SIZE - 1, r.status_phys(), 16, F_WRITE, 0);
                r.offer(0, None);
                r.d(1, r.m.phys(DESC, TABLE_OFF), 0xffff_fff0, F_INDIRECT, 0);
                r.offer(1, None);
            },
        ),
    ]
}

fn malformed_queues_from_user_space_then_rebind() -> TestResult {
    let dev = crate::pci::find_device().ok_or("no pktaccel PCI function")?;
    let name = dev
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or("bad PCI path")?
        .to_string();
    let bound = dev.join("driver").exists();
    if bound {
        std::fs::write("/sys/bus/pci/drivers/pktaccel/unbind", &name)
            .map_err(|e| format!("unbind {name}: {e}"))?;
    }
    let outcome = (|| -> TestResult {
        let mut r = Rig {
            v: UserVirtio::open(&dev)?,
            m: DmaPages::new(5)?,
            avail: 0,
            used_seen: 0,
        };
        r.start(false)?;
        r.nop_completes()
            .map_err(|e| format!("before any bad queue: {e}"))?;
        for (what, event_idx, feed) in cases() {
            r.start(event_idx)?;
            feed(&mut r);
            std::thread::sleep(Duration::from_millis(300));
            println!(
                "hostile: {what}: used idx {}, device status {:#x}{}",
                r.used_idx(),
                r.v.status(),
                if r.v.status() & S_NEEDS_RESET != 0 {
                    " (needs reset)"
                } else {
                    ""
                }
            );
            r.start(false)?;
            r.nop_completes()
                .map_err(|e| format!("after \"{what}\": {e}"))?;
        }
        Ok(())
    })();
    let _ = std::fs::write(dev.join("enable"), "0");
    std::fs::write("/sys/bus/pci/drivers/pktaccel/bind", &name)
        .map_err(|e| format!("rebind {name}: {e}"))?;
    outcome?;
    let f = format!("/tmp/pktaccel-hostile-{}", std::process::id());
    std::fs::write(&f, b"123456789").map_err(|e| e.to_string())?;
    let o = std::process::Command::new("pktctl")
        .args(["run", "crc32c", &f])
        .output()
        .map_err(|e| format!("pktctl: {e}"))?;
    let out = String::from_utf8_lossy(&o.stdout);
    ensure!(
        o.status.success() && out.contains("e3069283"),
        "pktctl after rebind: {} {} {}",
        o.status,
        out.trim(),
        String::from_utf8_lossy(&o.stderr).trim()
    );
    Ok(())
}
