//! The guest test suite.
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

/// The packet workloads, the device wrapper and the software references
/// live with the tools (`pktaccel-tools`); the suite's `workloads::` tests
/// use them under this name.
pub use pktaccel_tools as workload;
