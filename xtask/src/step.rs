//! Visible progress: one line per step with its duration, and progress bars
//! for the long ones (downloads, the kernel build).

use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// A named step. Prints `==> name` when started and `    name: outcome (1.2s)`
/// when finished, so a log shows where the time went.
pub struct Step {
    name: String,
    start: Instant,
}

impl Step {
    /// Starts and announces a step.
    pub fn start(name: impl Into<String>) -> Self {
        let name = name.into();
        eprintln!("==> {name}");
        Self {
            name,
            start: Instant::now(),
        }
    }

    /// Finishes the step with a short outcome such as "cached" or "built".
    pub fn done(self, outcome: &str) {
        eprintln!(
            "    {}: {outcome} ({})",
            self.name,
            fmt_duration(self.start.elapsed())
        );
    }
}

/// `1.2s` or `3m04s`.
pub fn fmt_duration(d: Duration) -> String {
    let s = d.as_secs_f64();
    if s < 60.0 {
        format!("{s:.1}s")
    } else {
        format!("{}m{:02}s", d.as_secs() / 60, d.as_secs() % 60)
    }
}

/// A progress bar with `len` units; hidden when stderr is not a terminal,
/// where it would only litter CI logs.
pub fn bar(len: u64, what: &str, bytes: bool) -> ProgressBar {
    let pb = ProgressBar::with_draw_target(Some(len), ProgressDrawTarget::stderr_with_hz(4));
    let template = if bytes {
        "    {msg} [{bar:40}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}"
    } else {
        "    {msg} [{bar:40}] {pos}/{len} eta {eta}"
    };
    if let Ok(style) = ProgressStyle::with_template(template) {
        pb.set_style(style.progress_chars("=> "));
    }
    pb.set_message(what.to_string());
    pb
}
