//! The words the guest prints on its serial console for the host (`cargo
//! xtask`) to act on, defined once for both sides. Each is the first word of
//! its line; what follows is separated by one space. `images/init` is a shell
//! script and echoes the same words (an xtask test checks it uses no other).

/// The guest is up and the module is loaded: what follows is the command's.
pub const READY: &str = "PKTACCEL-READY";
/// The command or suite finished; followed by its exit status.
pub const EXIT: &str = "PKTACCEL-EXIT";
/// Something the user should see; followed by the text.
pub const WARN: &str = "PKTACCEL-WARN";
/// The guest's kernel log follows, up to [`DMESG_END`].
pub const DMESG_BEGIN: &str = "PKTACCEL-DMESG-BEGIN";
/// End of the kernel log that followed [`DMESG_BEGIN`].
pub const DMESG_END: &str = "PKTACCEL-DMESG-END";
/// The end-of-suite kmemleak scan ran (debug kernel).
pub const KMEMLEAK_SCANNED: &str = "PKTACCEL-KMEMLEAK-SCANNED";
/// A guest test asks the host to kill `pktaccel-device` now.
pub const KILL_DEVICE: &str = "PKTACCEL-KILL-DEVICE-NOW";
/// A guest test asks the host to send the rest of the line to the device's
/// fault control socket.
pub const FAULT: &str = "PKTACCEL-FAULT";
/// One guest test's result: `PKTTEST name ok|FAIL ms [reason]`.
pub const TEST: &str = "PKTTEST";
/// A filter selected no guest test: followed by the filter and the
/// comma-separated test names.
pub const TEST_NO_MATCH: &str = "PKTTEST-NOMATCH";
/// A benchmark's JSON line.
pub const BENCH_JSON: &str = "PKTBENCH-JSON";
/// A line of a benchmark's application section.
pub const BENCH_APP: &str = "PKTBENCH-APP";

/// Every marker, for checks that a script uses no other.
pub const ALL: &[&str] = &[
    READY,
    EXIT,
    WARN,
    DMESG_BEGIN,
    DMESG_END,
    KMEMLEAK_SCANNED,
    KILL_DEVICE,
    FAULT,
    TEST,
    TEST_NO_MATCH,
    BENCH_JSON,
    BENCH_APP,
];

/// The rest of `line` after `marker` and one space, if `line` starts so.
pub fn after<'l>(line: &'l str, marker: &str) -> Option<&'l str> {
    line.strip_prefix(marker)?.strip_prefix(' ')
}

/// Whether `line` is one of the rig's own lines rather than the kernel's.
pub fn is_marker_line(line: &str) -> bool {
    line.starts_with("PKTACCEL-") || line.starts_with(TEST) || line.starts_with("PKTBENCH-")
}
