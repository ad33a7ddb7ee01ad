//! Runs the guest test suite: `pktaccel-guest-suite [FILTER]`.
//! Exit status 0 when every selected test passed, 1 otherwise.

fn main() {
    let filter = std::env::args().nth(1);
    let tests = pktaccel_tests::guest::all();
    let failed = pktaccel_tests::harness::run(&tests, filter.as_deref());
    std::process::exit(i32::from(failed > 0));
}
