//! The guest tests, one module per area. Register new tests in [`all`].

use crate::harness::Test;

mod faults;
mod hostile;
mod kmod;
mod rig;
mod workloads;

/// Every guest test, in run order.
pub fn all() -> Vec<Test> {
    let mut v = Vec::new();
    v.extend(rig::tests());
    v.extend(kmod::tests());
    v.extend(workloads::tests());
    v.extend(faults::tests());
    v.extend(hostile::tests());
    v
}
