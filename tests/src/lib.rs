//! The guest test suite and packet workloads.
//!
//! `pktaccel-guest-suite` runs inside the guest (started by
//! `cargo xtask test-e2e`). Each test prints one machine-readable line,
//! `PKTTEST <name> ok <ms>` or `PKTTEST <name> FAIL <ms> <reason>`, which
//! the host side turns into its report. Tests are plain functions returning
//! `Result<(), String>`: the reason is what a person reads when it fails.

pub mod guest;
pub mod harness;
pub mod mmio;
pub mod pci;
pub mod uvirtio;
pub mod workload;
