//! `pktaccel-device`: the emulated pktaccel packet-processing accelerator,
//! as a vhost-user backend that QEMU's `vhost-user-test-device-pci` connects
//! to. It reads and writes guest memory by guest-physical address and does
//! real work (checksums, CRCs, RSS, AES-GCM, DMA copy) on the buffers the
//! guest driver hands it. The device ABI is `pktaccel_abi`; the prose
//! datasheet is `docs/datasheet.md`.

pub mod backend;
pub mod completion;
pub mod config;
pub mod drain;
pub mod engines;
pub mod faults;
pub mod guest;
pub mod keys;
pub mod mem_table;
pub mod request;
pub mod ring;
pub mod server;
pub mod spin;
pub mod stats;
