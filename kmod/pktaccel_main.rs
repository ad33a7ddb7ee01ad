// SPDX-License-Identifier: GPL-2.0
//! pktaccel: PCI driver for the pktaccel packet-processing accelerator.
//!
//! The device is a virtio-pci (modern) function, 1af4:1055 by default,
//! identified by the magic and ABI version in its config space. This module
//! implements the virtio transport itself (`virtio`, `ring`), drives the
//! request queues (`dev`) and exposes `/dev/pktaccel` (`file`, `misc`) with
//! pinned slabs (`slab`). See docs/kmod.md.

use core::ptr::NonNull;
use kernel::{
    debugfs,
    device::{Bound, Core},
    dma::{Device as _, DmaMask},
    irq::{self, ThreadedRegistration},
    pci,
    prelude::*,
    sync::Arc,
};

// The ABI is formatted and linted with the workspace (`cargo fmt`,
// `cargo clippy`), not by the kernel's rules.
#[allow(dead_code, unreachable_pub, clippy::all)]
#[rustfmt::skip]
#[path = "../abi/src/pktaccel_abi.rs"]
mod abi;
mod bounce;
mod dev;
mod file;
mod keys;
mod misc;
mod ring;
mod slab;
mod virtio;

use abi::DeviceConfig;
use dev::{DeviceState, Interrupt, Setup, StatsView};
use file::FileState;
use misc::PollMiscRegistration;
use virtio::{common, status, Regs};

/// Most data segments per request the driver supports, whatever the
/// device advertises.
const MAX_SEGS: u32 = 64;
/// Most device key slots the driver tracks, whatever the device advertises.
const MAX_KEY_SLOTS: u32 = 1024;

pub(crate) fn max_pinned_per_file() -> u64 {
    module_parameters::max_pinned_per_file.value()
}
pub(crate) fn max_pinned_total() -> u64 {
    module_parameters::max_pinned_total.value()
}
/// Test hook (issue 9): the rig's device always acknowledges a reset
/// (QEMU completes it synchronously), so the quarantine path of an
/// unacknowledged one is reached only through this parameter.
pub(crate) fn test_unacked_reset() -> bool {
    module_parameters::test_unacked_reset.value() != 0
}
pub(crate) fn request_timeout_ms() -> u32 {
    module_parameters::request_timeout_ms.value()
}
pub(crate) fn queue_size_param() -> u16 {
    module_parameters::queue_size.value().clamp(2, 32768) as u16
}

kernel::pci_device_table!(
    PCI_TABLE,
    <PktDriver as pci::Driver>::IdInfo,
    [(
        pci::DeviceId::from_id(pci::Vendor::REDHAT_QUMRANET, abi::PCI_DEVICE_ID as u32),
        ()
    )]
);

struct PktDriver;

/// The MSI-X vector allocation, boxed so that its address is stable and it
/// can be borrowed for `'bound` by the IRQ registration.
///
/// # Invariants
///
/// `ptr` comes from `KBox::into_raw` and is freed only in `drop`.
struct Vectors<'bound> {
    ptr: NonNull<pci::IrqVectorRegistration<'bound>>,
}

// SAFETY: the vector registration only refers to the PCI device, which may
// be used from any thread.
unsafe impl Send for Vectors<'_> {}

impl<'bound> Vectors<'bound> {
    fn new(
        pdev: &'bound pci::Device<Bound>,
    ) -> Result<(Self, &'bound pci::IrqVectorRegistration<'bound>)> {
        let types = pci::IrqTypes::default().with(pci::IrqType::MsiX);
        let v = pdev.alloc_irq_vectors(1, 1, types).inspect_err(|e| {
            dev_err!(pdev, "cannot enable the MSI-X vector: {:?}\n", e);
        })?;
        let ptr = NonNull::new(KBox::into_raw(KBox::new(v, GFP_KERNEL)?)).ok_or(ENOMEM)?;
        // SAFETY: `ptr` points to a live heap allocation that stays put and
        // is freed only when `Vectors` is dropped. `DevData` declares `irq`
        // (the only holder of this borrow) before `vectors`, so the IRQ is
        // freed before the vectors are.
        let r = unsafe { &*ptr.as_ptr() };
        Ok((Vectors { ptr }, r))
    }
}

impl Drop for Vectors<'_> {
    fn drop(&mut self) {
        // SAFETY: from `KBox::into_raw` (invariant); the borrow handed out
        // in `new` ended with the IRQ registration, dropped before us.
        drop(unsafe { KBox::from_raw(self.ptr.as_ptr()) });
    }
}

/// Per-device driver data. Fields drop in order: the misc device and
/// debugfs first (no new opens), then the IRQ, then its vector.
#[pin_data]
struct DevData<'bound> {
    #[pin]
    misc: PollMiscRegistration<FileState>,
    #[pin]
    stats_file: debugfs::File<StatsView>,
    _debugfs: debugfs::Dir,
    #[pin]
    irq: ThreadedRegistration<'bound, Interrupt>,
    _vectors: Vectors<'bound>,
    shared: Arc<DeviceState>,
    pdev: &'bound pci::Device<Bound>,
}

/// Reads, checks and logs the device config. Errors are logged.
fn check_config(pdev: &pci::Device<Bound>, regs: &Regs<'_>) -> Result<DeviceConfig> {
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
    Ok(cfg)
}

/// Brings the device up to just before DRIVER_OK: negotiation, config,
/// the MSI-X vector and the request queues. The caller fails and resets
/// the device on error.
fn bring_up<'bound>(
    pdev: &'bound pci::Device<Bound>,
    regs: &Regs<'_>,
) -> Result<(
    Setup,
    Vectors<'bound>,
    &'bound pci::IrqVectorRegistration<'bound>,
)> {
    let indirect = virtio::negotiate(pdev, regs)?;
    // Read once: QEMU asks the backend for every access.
    let cfg = check_config(pdev, regs)?;
    let dev_nq = u32::from(regs.read16(common::NUM_QUEUES)?);
    let nq = cfg.num_queues.min(dev_nq).min(64);
    if nq == 0 {
        dev_err!(pdev, "device has no request queues\n");
        return Err(ENODEV);
    }
    let max_segs = cfg.max_segments.min(MAX_SEGS) as u16;
    let (vectors, vref) = Vectors::new(pdev)?;
    regs.write16(virtio::NO_VECTOR, common::MSIX_CONFIG)?;
    let (vqs, notify, qsize) = virtio::setup_queues(pdev, regs, nq as u16, max_segs, indirect)?;
    let mut queues = KVec::with_capacity(vqs.len(), GFP_KERNEL)?;
    for vq in vqs {
        queues.push(dev::QueueState::new(vq)?, GFP_KERNEL)?;
    }
    let setup = Setup {
        cfg,
        indirect,
        queue_size: qsize,
        max_segs,
        queues,
        notify,
    };
    Ok((setup, vectors, vref))
}

fn fail_device(regs: &Regs<'_>) {
    let _ = regs.add_status(status::FAILED);
}

impl pci::Driver for PktDriver {
    type IdInfo = ();
    type Data<'bound> = DevData<'bound>;
    const ID_TABLE: pci::IdTable<Self::IdInfo> = &PCI_TABLE;

    fn probe<'bound>(
        pdev: &'bound pci::Device<Core<'_>>,
        _info: Option<&'bound Self::IdInfo>,
    ) -> impl PinInit<Self::Data<'bound>, Error> + 'bound {
        pin_init::pin_init_scope(move || {
            pdev.enable_device_mem()?;
            pdev.set_master();
            // SAFETY: probe runs before any DMA allocation or mapping for
            // this device.
            unsafe { pdev.dma_set_mask_and_coherent(DmaMask::new::<64>())? };
            let pdev: &'bound pci::Device<Bound> = pdev;
            let caps = virtio::find_caps(pdev)?;
            let bar = pdev.iomap_region(caps.bar, c"pktaccel")?;

            let regs = Regs {
                bar: &bar,
                caps: &caps,
            };
            let (setup, vectors, vref) = bring_up(pdev, &regs).inspect_err(|_| {
                fail_device(&regs);
                let _ = regs.reset();
            })?;
            let indirect = setup.indirect;
            let bar = bar.into_devres()?;
            let key_table = keys::KeyTable::new(setup.cfg.key_slots.min(MAX_KEY_SLOTS))?;
            let shared = Arc::pin_init(
                DeviceState::new(pdev, caps, bar, setup, key_table),
                GFP_KERNEL,
            )?;
            // From here on, a failure must reset the device before the
            // rings are freed.
            let fail =
                kernel::types::ScopeGuard::new_with_data(shared.clone(), |s: Arc<DeviceState>| {
                    s.shutdown()
                });
            let request = vref.index(0)?;
            let debugfs = debugfs::Dir::new(c"pktaccel");
            let (s_irq, s_misc, s_dbg) = (shared.clone(), shared.clone(), shared.clone());
            let init = try_pin_init!(DevData {
                // SAFETY: `DevData` is never leaked: the driver core drops
                // it on unbind.
                irq <- unsafe {
                    ThreadedRegistration::new(
                        request.into(),
                        irq::Flags::TRIGGER_NONE,
                        c"pktaccel",
                        Interrupt::new(s_irq),
                    )
                },
                _vectors: vectors,
                misc <- PollMiscRegistration::register(c"pktaccel", s_misc),
                stats_file <- debugfs.read_only_file(c"stats", StatsView(s_dbg)),
                _debugfs: debugfs,
                shared,
                pdev,
            }? Error);
            Ok(init.pin_chain(move |this| {
                // Everything is in place: let the device run.
                if let Err(e) = this.shared.start(this.pdev) {
                    dev_err!(this.pdev, "cannot set DRIVER_OK\n");
                    return Err(e);
                }
                fail.dismiss();
                let c = this.shared.cfg();
                dev_info!(
                    this.pdev,
                    "pktaccel ABI v{}: {} queue(s) of {} ({} descriptors{}), max {} segments / {} bytes per request, ops {:#x}, {} key slots; /dev/pktaccel ready\n",
                    c.abi_version,
                    this.shared.nq(),
                    this.shared.total_slots().checked_div(this.shared.nq()).unwrap_or(0),
                    this.shared.queue_size(),
                    if indirect { ", indirect" } else { "" },
                    this.shared.max_segs(),
                    c.max_request_bytes,
                    c.ops,
                    c.key_slots
                );
                Ok(())
            }))
        })
    }

    fn unbind<'bound>(pdev: &'bound pci::Device<Core<'_>>, this: Pin<&Self::Data<'bound>>) {
        // Reset the device, fail what is in flight, free the rings while
        // the device is still bound. Files still open see ENODEV.
        this.shared.shutdown();
        dev_info!(pdev, "pktaccel unbound\n");
    }
}

kernel::module_pci_driver! {
    type: PktDriver,
    name: "pktaccel",
    authors: ["pktaccel developers"],
    description: "pktaccel packet-processing accelerator (virtio-pci transport, /dev/pktaccel)",
    license: "GPL v2",
    params: {
        max_pinned_per_file: u64 {
            default: 64 << 20,
            description: "Most bytes of slabs one open file may pin (ENOMEM beyond)",
        },
        max_pinned_total: u64 {
            default: 256 << 20,
            description: "Most bytes of slabs all files together may pin (ENOMEM beyond)",
        },
        request_timeout_ms: u32 {
            default: 5000,
            description: "A device that completes nothing for this long is declared dead (0 = never)",
        },
        test_unacked_reset: u32 {
            default: 0,
            description: "Test hook: treat every device reset as unacknowledged (quarantine path); 0 = off",
        },
        queue_size: u32 {
            default: 256,
            description: "Ring entries per request queue (rounded down to a power of two, capped by the device)",
        },
    },
}
