//! Finding the pktaccel PCI function through sysfs and reading its virtio
//! device configuration without any driver: the rig's own view of the
//! hardware, independent of the kernel module.

use std::fs;
use std::path::{Path, PathBuf};

use pktaccel_abi::{DEVICE_CONFIG_SIZE, DeviceConfig, PCI_DEVICE_ID, PCI_VENDOR_ID};

/// sysfs directory of the first pktaccel function, if any.
pub fn find_device() -> Option<PathBuf> {
    let mut entries: Vec<PathBuf> = fs::read_dir("/sys/bus/pci/devices")
        .ok()?
        .flatten()
        .map(|e| e.path())
        .collect();
    entries.sort();
    entries.into_iter().find(|p| {
        read_hex(&p.join("vendor")) == Some(u64::from(PCI_VENDOR_ID))
            && read_hex(&p.join("device")) == Some(u64::from(PCI_DEVICE_ID))
    })
}

/// Parses a sysfs `0x…` attribute.
pub fn read_hex(path: &Path) -> Option<u64> {
    let s = fs::read_to_string(path).ok()?;
    u64::from_str_radix(s.trim().trim_start_matches("0x"), 16).ok()
}

/// Location of a virtio structure: BAR number and offset inside it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VirtioCap {
    /// virtio_pci_cap.cfg_type.
    pub cfg_type: u8,
    /// BAR index.
    pub bar: u8,
    /// Offset in the BAR.
    pub offset: u32,
    /// Length of the structure.
    pub length: u32,
}

/// virtio_pci_cap cfg_type of the device-specific configuration.
pub const VIRTIO_PCI_CAP_DEVICE_CFG: u8 = 4;

/// Walks the PCI capability list in `config` (the sysfs `config` file) and
/// returns every virtio vendor capability.
pub fn virtio_caps(config: &[u8]) -> Vec<VirtioCap> {
    let mut caps = Vec::new();
    if config.len() < 0x40 || config[6] & 0x10 == 0 {
        return caps;
    }
    let mut ptr = usize::from(config[0x34] & 0xfc);
    let mut guard = 0;
    while ptr != 0 && ptr + 16 <= config.len() && guard < 48 {
        guard += 1;
        if config[ptr] == 0x09 {
            let u32at = |o: usize| {
                u32::from_le_bytes([config[o], config[o + 1], config[o + 2], config[o + 3]])
            };
            caps.push(VirtioCap {
                cfg_type: config[ptr + 3],
                bar: config[ptr + 4],
                offset: u32at(ptr + 8),
                length: u32at(ptr + 12),
            });
        }
        ptr = usize::from(config[ptr + 1] & 0xfc);
    }
    caps
}

/// Reads the device configuration of the function at `dev` by mmap()ing
/// the sysfs resource file of the BAR that holds it (tinyconfig has no
/// /dev/mem, and resource files cannot be read()).
pub fn read_device_config(dev: &Path) -> Result<DeviceConfig, String> {
    let config = fs::read(dev.join("config"))
        .map_err(|e| format!("reading {}/config: {e}", dev.display()))?;
    let cap = virtio_caps(&config)
        .into_iter()
        .find(|c| c.cfg_type == VIRTIO_PCI_CAP_DEVICE_CFG)
        .ok_or("no virtio device-config capability in PCI config space")?;
    if (cap.length as usize) < DEVICE_CONFIG_SIZE {
        return Err(format!(
            "device config is {} bytes, ABI needs {DEVICE_CONFIG_SIZE}",
            cap.length
        ));
    }
    let res = dev.join(format!("resource{}", cap.bar));
    // Without a bound driver nobody has turned on memory decoding, and the
    // BAR reads as all ones: enable the function for the read, as a driver
    // would, and put it back after.
    let enable = dev.join("enable");
    let was_enabled = fs::read_to_string(&enable)
        .map(|s| s.trim() != "0")
        .unwrap_or(true);
    if !was_enabled {
        fs::write(&enable, "1").map_err(|e| format!("enabling {}: {e}", dev.display()))?;
    }
    let bytes = crate::mmio::read_bytes(&res, u64::from(cap.offset), DEVICE_CONFIG_SIZE);
    if !was_enabled {
        let _ = fs::write(&enable, "0");
    }
    let bytes = bytes?;
    DeviceConfig::from_le_bytes(&bytes).ok_or_else(|| "short device config".to_string())
}
