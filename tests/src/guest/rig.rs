//! The rig itself: the guest sees the device, the module is loaded, and the
//! device's config space carries the ABI's magic and version.

use std::fs;

use pktaccel_abi::{ABI_VERSION, MAGIC};

use crate::ensure;
use crate::harness::{Test, TestResult};
use crate::pci;

pub(super) fn tests() -> Vec<Test> {
    tests!["rig": kernel_is_7x, pci_function_present, module_loaded, config_space_magic_and_abi]
}

fn kernel_is_7x() -> TestResult {
    let rel = fs::read_to_string("/proc/sys/kernel/osrelease").map_err(|e| e.to_string())?;
    ensure!(rel.starts_with("7."), "guest kernel is {rel}, expected 7.x");
    Ok(())
}

fn pci_function_present() -> TestResult {
    let dev = pci::find_device().ok_or("no 1af4:1055 function under /sys/bus/pci/devices")?;
    let class = pci::read_hex(&dev.join("class")).unwrap_or(0);
    ensure!(
        class >> 8 == 0x0780,
        "class is {class:#x}, expected 0x0780xx"
    );
    Ok(())
}

fn module_loaded() -> TestResult {
    let modules = fs::read_to_string("/proc/modules").map_err(|e| e.to_string())?;
    ensure!(
        modules.lines().any(|l| l.starts_with("pktaccel ")),
        "pktaccel not in /proc/modules:\n{modules}"
    );
    let dev = pci::find_device().ok_or("no pktaccel function")?;
    let driver = fs::read_link(dev.join("driver"))
        .map_err(|e| format!("device has no driver bound: {e}"))?;
    ensure!(
        driver.ends_with("pktaccel"),
        "device bound to {}, expected pktaccel",
        driver.display()
    );
    Ok(())
}

fn config_space_magic_and_abi() -> TestResult {
    let dev = pci::find_device().ok_or("no pktaccel function")?;
    let cfg = pci::read_device_config(&dev)?;
    ensure!(
        cfg.magic == MAGIC,
        "magic {:#x}, expected {MAGIC:#x}",
        cfg.magic
    );
    ensure!(
        cfg.abi_version == ABI_VERSION,
        "ABI version {}, expected {ABI_VERSION}",
        cfg.abi_version
    );
    ensure!(
        cfg.num_queues >= 1,
        "device reports {} queues",
        cfg.num_queues
    );
    Ok(())
}
