// SPDX-License-Identifier: GPL-2.0
//! The virtio-pci modern transport, implemented in this module (the guest
//! kernel has no C virtio core): capability walk, common-config registers,
//! status handshake, feature negotiation and queue setup.
//!
//! Register offsets are from the virtio 1.2 specification, section 4.1.4.

use kernel::{
    device::Bound,
    io::Io,
    pci,
    prelude::*, //
};

use crate::{abi, ring::Vq};

/// PCI capability ID of a vendor-specific capability (all virtio caps).
const PCI_CAP_ID_VNDR: u8 = 0x09;
/// PCI status register bit: the capability list is valid.
const PCI_STATUS_CAP_LIST: u16 = 0x10;
/// virtio_pci_cap.cfg_type values.
const CAP_COMMON: u8 = 1;
const CAP_NOTIFY: u8 = 2;
const CAP_ISR: u8 = 3;
const CAP_DEVICE: u8 = 4;

/// Common configuration registers (offsets inside the common cap).
pub(crate) mod common {
    pub(crate) const DEVICE_FEATURE_SELECT: usize = 0x00;
    pub(crate) const DEVICE_FEATURE: usize = 0x04;
    pub(crate) const DRIVER_FEATURE_SELECT: usize = 0x08;
    pub(crate) const DRIVER_FEATURE: usize = 0x0c;
    pub(crate) const MSIX_CONFIG: usize = 0x10;
    pub(crate) const NUM_QUEUES: usize = 0x12;
    pub(crate) const DEVICE_STATUS: usize = 0x14;
    pub(crate) const QUEUE_SELECT: usize = 0x16;
    pub(crate) const QUEUE_SIZE: usize = 0x18;
    pub(crate) const QUEUE_MSIX_VECTOR: usize = 0x1a;
    pub(crate) const QUEUE_ENABLE: usize = 0x1c;
    pub(crate) const QUEUE_NOTIFY_OFF: usize = 0x1e;
    pub(crate) const QUEUE_DESC: usize = 0x20;
    pub(crate) const QUEUE_DRIVER: usize = 0x28;
    pub(crate) const QUEUE_DEVICE: usize = 0x30;
    /// Size of the common configuration structure we use.
    pub(crate) const LEN: u32 = 0x38;
}

/// Device status bits.
pub(crate) mod status {
    pub(crate) const ACKNOWLEDGE: u8 = 1;
    pub(crate) const DRIVER: u8 = 2;
    pub(crate) const DRIVER_OK: u8 = 4;
    pub(crate) const FEATURES_OK: u8 = 8;
    pub(crate) const FAILED: u8 = 0x80;
}

/// "No MSI-X vector" value of the vector registers.
pub(crate) const NO_VECTOR: u16 = 0xffff;

/// Where the virtio structures live, from the PCI capability list.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Caps {
    /// The BAR holding all four structures (QEMU: BAR 2).
    pub(crate) bar: u32,
    pub(crate) common: u32,
    pub(crate) notify: u32,
    pub(crate) notify_len: u32,
    pub(crate) notify_mult: u32,
    pub(crate) device: u32,
    pub(crate) device_len: u32,
}

#[derive(Clone, Copy, Default)]
struct Cap {
    found: bool,
    bar: u8,
    offset: u32,
    length: u32,
    extra: u32,
}

/// Walks the capability list of `pdev` and returns the virtio structures.
///
/// Takes the first capability of each type (as the specification asks),
/// and requires all four to be in one memory BAR, which is what QEMU and
/// every virtio-pci implementation we know of do.
pub(crate) fn find_caps(pdev: &pci::Device<Bound>) -> Result<Caps> {
    let cfg = pdev.config_space();
    let st = cfg.try_read16(0x06)?;
    if st & PCI_STATUS_CAP_LIST == 0 {
        dev_err!(
            pdev,
            "no PCI capability list: not a modern virtio function\n"
        );
        return Err(ENODEV);
    }
    let mut caps = [Cap::default(); 5];
    let mut pos = usize::from(cfg.try_read8(0x34)? & 0xfc);
    // A malformed list may loop: 48 is the most capabilities that fit.
    let mut budget = 48;
    while pos >= 0x40 && budget > 0 {
        budget -= 1;
        let id = cfg.try_read8(pos)?;
        let next = usize::from(cfg.try_read8(pos + 1)? & 0xfc);
        if id == PCI_CAP_ID_VNDR {
            let len = cfg.try_read8(pos + 2)?;
            let ty = cfg.try_read8(pos + 3)?;
            let bar = cfg.try_read8(pos + 4)?;
            if (CAP_COMMON..=CAP_DEVICE).contains(&ty) && len >= 16 && bar <= 5 {
                let c = &mut caps[usize::from(ty)];
                if !c.found {
                    c.found = true;
                    c.bar = bar;
                    c.offset = cfg.try_read32(pos + 8)?;
                    c.length = cfg.try_read32(pos + 12)?;
                    if ty == CAP_NOTIFY && len >= 20 {
                        c.extra = cfg.try_read32(pos + 16)?;
                    }
                }
            }
        }
        pos = next;
    }
    for (ty, name) in [
        (CAP_COMMON, "common"),
        (CAP_NOTIFY, "notify"),
        (CAP_ISR, "isr"),
        (CAP_DEVICE, "device"),
    ] {
        let c = &caps[usize::from(ty)];
        if !c.found {
            dev_err!(pdev, "virtio {} capability missing\n", name);
            return Err(ENODEV);
        }
        if c.bar != caps[usize::from(CAP_COMMON)].bar {
            dev_err!(pdev, "virtio capabilities span several BARs: unsupported\n");
            return Err(ENODEV);
        }
    }
    let common = caps[usize::from(CAP_COMMON)];
    if common.length < common::LEN {
        dev_err!(
            pdev,
            "virtio common config too short ({} bytes)\n",
            common.length
        );
        return Err(ENODEV);
    }
    Ok(Caps {
        bar: u32::from(common.bar),
        common: common.offset,
        notify: caps[usize::from(CAP_NOTIFY)].offset,
        notify_len: caps[usize::from(CAP_NOTIFY)].length,
        notify_mult: caps[usize::from(CAP_NOTIFY)].extra,
        device: caps[usize::from(CAP_DEVICE)].offset,
        device_len: caps[usize::from(CAP_DEVICE)].length,
    })
}

/// Register access to one virtio-pci function through its mapped BAR.
pub(crate) struct Regs<'a> {
    pub(crate) bar: &'a pci::Bar<'a>,
    pub(crate) caps: &'a Caps,
}

impl Regs<'_> {
    fn c(&self, off: usize) -> usize {
        self.caps.common as usize + off
    }

    pub(crate) fn read8(&self, off: usize) -> Result<u8> {
        self.bar.try_read8(self.c(off))
    }
    pub(crate) fn read16(&self, off: usize) -> Result<u16> {
        self.bar.try_read16(self.c(off))
    }
    pub(crate) fn read32(&self, off: usize) -> Result<u32> {
        self.bar.try_read32(self.c(off))
    }
    pub(crate) fn write8(&self, v: u8, off: usize) -> Result {
        self.bar.try_write8(v, self.c(off))
    }
    pub(crate) fn write16(&self, v: u16, off: usize) -> Result {
        self.bar.try_write16(v, self.c(off))
    }
    pub(crate) fn write32(&self, v: u32, off: usize) -> Result {
        self.bar.try_write32(v, self.c(off))
    }
    /// 64-bit queue addresses are written as two 32-bit halves, which every
    /// transport must accept.
    pub(crate) fn write64(&self, v: u64, off: usize) -> Result {
        self.write32(v as u32, off)?;
        self.write32((v >> 32) as u32, off + 4)
    }

    pub(crate) fn status(&self) -> Result<u8> {
        self.read8(common::DEVICE_STATUS)
    }

    /// ORs `bits` into the device status.
    pub(crate) fn add_status(&self, bits: u8) -> Result {
        let s = self.status()?;
        self.write8(s | bits, common::DEVICE_STATUS)
    }

    /// Writes 0 to the status and waits for the device to read back 0: the
    /// device has then stopped using every queue.
    pub(crate) fn reset(&self) -> Result {
        self.write8(0, common::DEVICE_STATUS)?;
        for _ in 0..1000 {
            if self.status()? == 0 {
                return Ok(());
            }
            kernel::time::delay::fsleep(kernel::time::Delta::from_micros(100));
        }
        Err(ETIMEDOUT)
    }

    /// The device's 64 feature bits.
    pub(crate) fn device_features(&self) -> Result<u64> {
        self.write32(0, common::DEVICE_FEATURE_SELECT)?;
        let lo = self.read32(common::DEVICE_FEATURE)?;
        self.write32(1, common::DEVICE_FEATURE_SELECT)?;
        let hi = self.read32(common::DEVICE_FEATURE)?;
        Ok(u64::from(lo) | (u64::from(hi) << 32))
    }

    pub(crate) fn set_driver_features(&self, f: u64) -> Result {
        self.write32(0, common::DRIVER_FEATURE_SELECT)?;
        self.write32(f as u32, common::DRIVER_FEATURE)?;
        self.write32(1, common::DRIVER_FEATURE_SELECT)?;
        self.write32((f >> 32) as u32, common::DRIVER_FEATURE)
    }

    /// Reads `out.len()` bytes of device configuration space, 32 bits at a
    /// time. QEMU fetches the whole space from the backend for each access,
    /// so the driver does this once, at probe.
    pub(crate) fn read_device_config(&self, out: &mut [u8]) -> Result {
        if out.len() > self.caps.device_len as usize {
            return Err(EINVAL);
        }
        for (i, chunk) in out.chunks_mut(4).enumerate() {
            let v = self.bar.try_read32(self.caps.device as usize + i * 4)?;
            let b = v.to_le_bytes();
            chunk.copy_from_slice(&b[..chunk.len()]);
        }
        Ok(())
    }

    /// Byte offset in the BAR of queue `q`'s doorbell.
    pub(crate) fn notify_offset(&self, q: u16) -> Result<usize> {
        self.write16(q, common::QUEUE_SELECT)?;
        let off = u32::from(self.read16(common::QUEUE_NOTIFY_OFF)?);
        let rel = off.checked_mul(self.caps.notify_mult).ok_or(EINVAL)?;
        if rel.checked_add(2).ok_or(EINVAL)? > self.caps.notify_len {
            return Err(EINVAL);
        }
        Ok(self.caps.notify as usize + rel as usize)
    }
}

/// Status handshake and feature negotiation up to FEATURES_OK. Returns
/// whether indirect descriptors were negotiated.
pub(crate) fn negotiate(pdev: &pci::Device<Bound>, regs: &Regs<'_>) -> Result<bool> {
    regs.reset()
        .inspect_err(|_| dev_err!(pdev, "device did not reset\n"))?;
    regs.add_status(status::ACKNOWLEDGE)?;
    regs.add_status(status::DRIVER)?;
    let offered = regs.device_features()?;
    let version1 = 1u64 << abi::VIRTIO_F_VERSION_1;
    if offered & version1 == 0 {
        dev_err!(
            pdev,
            "device does not offer VIRTIO_F_VERSION_1: legacy devices are not supported\n"
        );
        return Err(ENODEV);
    }
    let indirect = 1u64 << abi::VIRTIO_F_INDIRECT_DESC;
    let wanted = version1 | (offered & indirect) | (offered & abi::OP_FEATURES_MASK);
    regs.set_driver_features(wanted)?;
    regs.add_status(status::FEATURES_OK)?;
    if regs.status()? & status::FEATURES_OK == 0 {
        dev_err!(pdev, "device refused features {:#x}\n", wanted);
        return Err(ENODEV);
    }
    Ok(offered & indirect != 0)
}

/// Sets up every request queue: size, rings, MSI-X vector 0, doorbell,
/// enable. Returns the rings, the doorbell offsets and the queue size.
pub(crate) fn setup_queues(
    pdev: &pci::Device<Bound>,
    regs: &Regs<'_>,
    nq: u16,
    max_segs: u16,
    indirect: bool,
) -> Result<(KVec<Vq>, KVec<usize>, u16)> {
    let mut queues = KVec::with_capacity(usize::from(nq), GFP_KERNEL)?;
    let mut notify = KVec::with_capacity(usize::from(nq), GFP_KERNEL)?;
    let mut qsize = 0;
    for q in 0..nq {
        regs.write16(q, common::QUEUE_SELECT)?;
        let max = regs.read16(common::QUEUE_SIZE)?;
        if max == 0 {
            dev_err!(pdev, "queue {} is not available (size 0)\n", q);
            return Err(ENODEV);
        }
        let want = max.min(crate::queue_size_param()).max(1);
        // Power of two, as every split-ring implementation expects.
        let size = 1u16 << want.ilog2();
        regs.write16(size, common::QUEUE_SIZE)?;
        let vq = Vq::new(pdev.as_ref(), size, max_segs, indirect).inspect_err(|_| {
            dev_err!(
                pdev,
                "queue {}: cannot allocate rings of {} entries\n",
                q,
                size
            );
        })?;
        let (d, a, u) = vq.addrs();
        regs.write64(d, common::QUEUE_DESC)?;
        regs.write64(a, common::QUEUE_DRIVER)?;
        regs.write64(u, common::QUEUE_DEVICE)?;
        regs.write16(0, common::QUEUE_MSIX_VECTOR)?;
        if regs.read16(common::QUEUE_MSIX_VECTOR)? == NO_VECTOR {
            dev_err!(pdev, "queue {}: device refused MSI-X vector 0\n", q);
            return Err(EIO);
        }
        notify.push(regs.notify_offset(q)?, GFP_KERNEL)?;
        regs.write16(q, common::QUEUE_SELECT)?;
        regs.write16(1, common::QUEUE_ENABLE)?;
        qsize = size;
        queues.push(vq, GFP_KERNEL)?;
    }
    Ok((queues, notify, qsize))
}
