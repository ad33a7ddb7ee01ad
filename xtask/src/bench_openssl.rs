//! `cargo xtask bench`: Debian's unmodified `openssl speed -evp aes-256-gcm
//! -aead` (TLS-like: IV, AAD, one record, tag per iteration) with OpenSSL's
//! default provider and with libpktaccel-provider on the device, side by
//! side in one guest boot, alternating rounds so host noise hits both.

use std::fmt::Write as _;

use anyhow::Result;

/// Marks this module's lines among the app-demo lines of the guest sink.
pub const TAG: &str = "ossl ";

/// Runs: (label, extra `openssl speed` flag, record size). `aead` is the
/// TLS-like sequence (IV, AAD, one record, tag per iteration); `update` is
/// speed's default loop, which in OpenSSL 3.0.19 re-initialises key and IV
/// before each single update (no AAD, no final). Either way one device
/// request per iteration. `-elapsed`: speed otherwise divides by user CPU
/// time, which a process waiting on the device hardly uses.
const RUNS: [(&str, &str, usize); 3] = [
    ("aead", "-aead", 1500),
    ("aead", "-aead", 16384),
    ("update", "", 16384),
];

/// Guest shell snippet: for each run, two rounds of default-then-provider;
/// every line prefixed `PKTBENCH-APP ossl `.
pub fn guest_snippet() -> String {
    let runs: Vec<String> = RUNS
        .iter()
        .map(|(l, f, b)| format!("{l}:{f}:{b}"))
        .collect();
    format!(
        "if command -v openssl >/dev/null && [ -f /etc/ssl/pktaccel.cnf ]; then \
         S=/sys/kernel/debug/pktaccel/stats; O='openssl speed -elapsed -evp aes-256-gcm -mr -seconds 2'; \
         grep -E '^requests.aes-gcm-(seal|open) ' $S | sed 's/^/PKTBENCH-APP {TAG}before /'; \
         for run in {}; do l=${{run%%:*}}; r=${{run#*:}}; f=${{r%%:*}}; b=${{r#*:}}; for i in 1 2; do \
         echo \"PKTBENCH-APP {TAG}default $l $b $($O $f -bytes $b 2>/dev/null | grep '^+F:')\"; \
         echo \"PKTBENCH-APP {TAG}pktaccel $l $b $(OPENSSL_CONF=/etc/ssl/pktaccel.cnf LD_PRELOAD=/usr/lib/libpktslab.so PKTACCEL_PROVIDER_STATS=1 $O $f -bytes $b 2>/tmp/ossl.err | grep '^+F:')\"; \
         grep '^pktaccel-provider:' /tmp/ossl.err | sed \"s/^/PKTBENCH-APP {TAG}stats $l $b /\"; \
         done; done; \
         grep -E '^requests.aes-gcm-(seal|open) ' $S | sed 's/^/PKTBENCH-APP {TAG}after /'; \
         fi; ",
        runs.join(" ")
    )
}

/// Bytes per second from an `openssl speed -mr` line `+F:n:NAME:value`.
fn rate(rest: &str) -> Option<f64> {
    rest.split(':').nth(3)?.trim().parse().ok()
}

/// Best rate of `who` in run `label` at `size` over the rounds.
fn best(lines: &[&str], who: &str, label: &str, size: usize) -> Option<f64> {
    let prefix = format!("{who} {label} {size} ");
    lines
        .iter()
        .filter_map(|l| rate(l.strip_prefix(&prefix)?))
        .fold(None, |m, v| Some(m.map_or(v, |m: f64| m.max(v))))
}

/// The report section; nothing when the guest printed no openssl lines.
pub fn section(md: &mut String, app: &[String]) -> Result<()> {
    let lines: Vec<&str> = app.iter().filter_map(|l| l.strip_prefix(TAG)).collect();
    if lines.is_empty() {
        return Ok(());
    }
    writeln!(md, "## OpenSSL AES-256-GCM: default provider vs pktaccel\n")?;
    writeln!(
        md,
        "Debian's `openssl speed -elapsed -evp aes-256-gcm` (wall-clock time: by default speed divides by user CPU time, which a process waiting on the device hardly uses), 2 s per run, best of two alternating rounds. `aead` (`-aead`): per iteration a new IV, 13-byte AAD, one record, tag — what TLS does. `update`: speed's default loop (in 3.0.19: key and IV set, one update, per iteration). With the provider each iteration is one device request on the program's own pinned buffer. `default` is OpenSSL's own provider on the guest CPU; `pktaccel` runs the same binary with `OPENSSL_CONF=/etc/ssl/pktaccel.cnf` and `LD_PRELOAD=libpktslab.so`.\n"
    )?;
    writeln!(
        md,
        "| mode | record | default MB/s | pktaccel MB/s | pktaccel / default |\n|---|---:|---:|---:|---:|"
    )?;
    for (label, _, size) in RUNS {
        let (d, p) = (
            best(&lines, "default", label, size),
            best(&lines, "pktaccel", label, size),
        );
        let mb = |v: Option<f64>| v.map_or("failed".to_string(), |v| format!("{:.1}", v / 1e6));
        let ratio = match (d, p) {
            (Some(d), Some(p)) if d > 0.0 => format!("{:.3}", p / d),
            _ => "-".into(),
        };
        writeln!(
            md,
            "| {label} | {size} B | {} | {} | {ratio} |",
            mb(d),
            mb(p)
        )?;
    }
    writeln!(md, "\n```")?;
    for l in lines
        .iter()
        .filter(|l| l.starts_with("stats ") || l.starts_with("before ") || l.starts_with("after "))
    {
        writeln!(md, "{l}")?;
    }
    writeln!(md, "```\n")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_speed_lines_and_writes_the_table() {
        let app: Vec<String> = [
            "ossl default aead 1500 +F:25:AES-256-GCM:2330110344.83",
            "ossl default aead 1500 +F:25:AES-256-GCM:2000000000.00",
            "ossl pktaccel aead 1500 +F:25:AES-256-GCM:100000000.00",
            "ossl pktaccel aead 16384 ",
            "ossl stats aead 1500 pktaccel-provider: device 5 seal + 0 open requests",
            "plain pigz: abc",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let mut md = String::new();
        section(&mut md, &app).unwrap();
        assert!(
            md.contains("| aead | 1500 B | 2330.1 | 100.0 | 0.043 |"),
            "{md}"
        );
        assert!(
            md.contains("| aead | 16384 B | failed | failed | - |"),
            "{md}"
        );
        assert!(
            md.contains("| update | 16384 B | failed | failed | - |"),
            "{md}"
        );
        assert!(md.contains("device 5 seal"), "{md}");
        assert!(!md.contains("pigz"), "{md}");
    }

    #[test]
    fn guest_snippet_is_valid_shell() {
        let sh = xshell::Shell::new().unwrap();
        let snippet = guest_snippet();
        let checked = xshell::cmd!(sh, "sh -n -c {snippet}").quiet().run();
        assert!(checked.is_ok(), "{snippet}");
    }
}
