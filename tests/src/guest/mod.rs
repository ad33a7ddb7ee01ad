//! The guest tests, one module per area. Register new tests in [`all`].

use crate::harness::Test;

/// An area's test list: `tests!("area": f, g)` registers each function as
/// `area::f`, the name `--filter` and the host's report use.
macro_rules! tests {
    ($area:literal: $($name:ident),* $(,)?) => {
        vec![$(crate::harness::Test { name: concat!($area, "::", stringify!($name)), run: $name }),*]
    };
}

mod faults;
mod faults_lies;
mod fuzz;
mod hostile;
mod isolation;
mod isolation_classes;
mod isolation_unbind;
mod kmod;
mod kmod_bad_input;
mod kmod_helpers;
mod kmod_lifecycle;
mod openssl;
mod pinned_programs;
mod preload;
mod rig;
mod workloads;

/// Every guest test, in run order.
pub fn all() -> Vec<Test> {
    let mut v = Vec::new();
    v.extend(rig::tests());
    v.extend(kmod::tests());
    v.extend(kmod_bad_input::tests());
    v.extend(kmod_lifecycle::tests());
    v.extend(isolation::tests());
    v.extend(isolation_classes::tests());
    v.extend(isolation_unbind::tests());
    v.extend(fuzz::tests());
    v.extend(workloads::tests());
    v.extend(openssl::tests());
    v.extend(pinned_programs::tests());
    v.extend(faults::tests());
    v.extend(faults_lies::tests());
    v.extend(hostile::tests());
    v
}
