// SPDX-License-Identifier: GPL-2.0
//! pktaccel: PCI driver for the pktaccel packet-processing accelerator.
//!
//! The device is a virtio-pci (modern) function, 1af4:1055 by default; this
//! module implements the transport itself. See docs/kmod.md.

use kernel::{device::Core, pci, prelude::*};

#[allow(dead_code, unreachable_pub, clippy::all)]
#[path = "../abi/src/pktaccel_abi.rs"]
mod abi;
mod virtio;

use abi::DeviceConfig;

kernel::pci_device_table!(
    PCI_TABLE,
    <PktDriver as pci::Driver>::IdInfo,
    [(
        pci::DeviceId::from_id(pci::Vendor::REDHAT_QUMRANET, abi::PCI_DEVICE_ID as u32),
        ()
    )]
);

struct PktDriver;

struct DevData<'bound> {
    pdev: &'bound pci::Device<kernel::device::Bound>,
    _bar: pci::Bar<'bound>,
    cfg: DeviceConfig,
}

impl pci::Driver for PktDriver {
    type IdInfo = ();
    type Data<'bound> = DevData<'bound>;
    const ID_TABLE: pci::IdTable<Self::IdInfo> = &PCI_TABLE;

    fn probe<'bound>(
        pdev: &'bound pci::Device<Core<'_>>,
        _info: Option<&'bound Self::IdInfo>,
    ) -> impl PinInit<Self::Data<'bound>, Error> + 'bound {
        pdev.enable_device_mem()?;
        pdev.set_master();
        let caps = virtio::find_caps(pdev)?;
        let bar = pdev.iomap_region(caps.bar, c"pktaccel")?;
        let regs = virtio::Regs { bar: &bar, caps: &caps };
        let mut raw = [0u8; abi::DEVICE_CONFIG_SIZE];
        regs.read_device_config(&mut raw).inspect_err(|_| {
            dev_err!(pdev, "device config space too small for the pktaccel ABI\n");
        })?;
        let cfg = DeviceConfig::from_le_bytes(&raw).ok_or(EINVAL)?;
        if cfg.magic != abi::MAGIC {
            dev_err!(
                pdev,
                "not a pktaccel device: config magic {:#010x}, expected {:#010x} (\"PKAC\")\n",
                cfg.magic,
                abi::MAGIC
            );
            return Err(ENODEV);
        }
        if cfg.abi_version != abi::ABI_VERSION {
            dev_err!(
                pdev,
                "unsupported pktaccel ABI version {} (driver speaks {})\n",
                cfg.abi_version,
                abi::ABI_VERSION
            );
            return Err(ENODEV);
        }
        dev_info!(
            pdev,
            "pktaccel ABI v{}: {} queues, max {} segments / {} bytes per request, ops {:#x}, {} key slots\n",
            cfg.abi_version,
            cfg.num_queues,
            cfg.max_segments,
            cfg.max_request_bytes,
            cfg.ops,
            cfg.key_slots
        );
        Ok(DevData { pdev, _bar: bar, cfg })
    }
}

impl Drop for DevData<'_> {
    fn drop(&mut self) {
        dev_info!(self.pdev, "pktaccel unbound ({} queues)\n", self.cfg.num_queues);
    }
}

kernel::module_pci_driver! {
    type: PktDriver,
    name: "pktaccel",
    authors: ["pktaccel developers"],
    description: "pktaccel packet-processing accelerator (virtio-pci transport, /dev/pktaccel)",
    license: "GPL v2",
}
