//! A minimal test harness for the guest, where `cargo test` cannot run.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::time::Instant;

/// Outcome of one guest test; `Err` carries the reason shown to the user.
pub type TestResult = Result<(), String>;

/// One registered guest test.
pub struct Test {
    /// `area::name`, unique; used for filtering.
    pub name: &'static str,
    /// The body.
    pub run: fn() -> TestResult,
}

/// Prefix of every result line; the host parser keys on it.
pub const LINE_PREFIX: &str = pktaccel_abi::console::TEST;

/// Prefix of the one line printed when a filter selects no test, followed
/// by the filter and the comma-separated test names, so the host can say
/// which filter was wrong and what exists.
pub const NO_MATCH_PREFIX: &str = pktaccel_abi::console::TEST_NO_MATCH;

/// Runs every test whose name contains `filter` and prints one line each.
/// Returns the number of failures. A panicking test is a failure, not an
/// abort of the suite.
pub fn run(tests: &[Test], filter: Option<&str>) -> usize {
    if let Some(f) = filter
        && !tests.iter().any(|t| t.name.contains(f))
    {
        let names: Vec<&str> = tests.iter().map(|t| t.name).collect();
        println!("{NO_MATCH_PREFIX} {f} {}", names.join(","));
        return 1;
    }
    let mut failed = 0;
    for t in tests
        .iter()
        .filter(|t| filter.is_none_or(|f| t.name.contains(f)))
    {
        let start = Instant::now();
        let outcome = catch_unwind(AssertUnwindSafe(t.run));
        let ms = start.elapsed().as_millis();
        match outcome {
            Ok(Ok(())) => println!("{LINE_PREFIX} {} ok {ms}", t.name),
            Ok(Err(reason)) => {
                failed += 1;
                println!(
                    "{LINE_PREFIX} {} FAIL {ms} {}",
                    t.name,
                    reason.replace('\n', " | ")
                );
            }
            Err(_) => {
                failed += 1;
                println!("{LINE_PREFIX} {} FAIL {ms} test panicked", t.name);
            }
        }
    }
    failed
}

/// Turns a false condition into a test failure with a message.
#[macro_export]
macro_rules! ensure {
    ($cond:expr, $($fmt:tt)+) => {
        if !$cond {
            return Err(format!($($fmt)+));
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    fn passes() -> TestResult {
        Ok(())
    }

    #[test]
    fn a_filter_that_selects_nothing_is_a_failure() {
        let tests = [Test {
            name: "kmod::open",
            run: passes,
        }];
        assert_eq!(run(&tests, Some("kmod::nope")), 1);
        assert_eq!(run(&tests, Some("kmod::")), 0);
        assert_eq!(run(&tests, None), 0);
    }
}
