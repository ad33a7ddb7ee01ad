//! Unmodified programs at real scale on pinned memory, device mode,
//! default caps (issue 11): `LD_PRELOAD=libpktslab.so` with the device
//! backend, no PKTSLAB_* tuning. Each program's output must equal a plain
//! run's, and the exit statistics must show the pinned/ordinary split:
//!
//! - `xz -9` on a 256 KB file (its ~700 MiB of match-finder tables are
//!   above PKTSLAB_PIN_MAX: ordinary memory, never the 64 MiB driver cap);
//! - `sort -n` on 1M numbers (one big buffer, ordinary);
//! - sqlite3 with 300k inserts;
//! - fork: a dash pipeline with subshells, python3 `os.fork()` and
//!   `subprocess`, and a python3 parent forking while a thread allocates.
//!   The driver's mappings are `VM_DONTCOPY`: before the fix the child died
//!   in the atfork handler.

use std::process::{Command, Output, Stdio};

use super::preload::{PRELOAD, preloaded_stderr};
use crate::ensure;
use crate::harness::{Test, TestResult};

pub(super) fn tests() -> Vec<Test> {
    tests![
        "pinned_programs":
        xz_9_small_file,
        sort_n_million_numbers,
        sqlite3_300k_inserts,
        dash_pipeline_forks,
        python3_fork_and_subprocess,
        python3_threaded_parent_forks,
    ]
}

fn run(argv: &[&str], preload: bool, stdin: Option<&str>) -> Result<Output, String> {
    let mut c = Command::new(argv[0]);
    c.args(&argv[1..])
        .env_remove("LD_PRELOAD")
        .env("LC_ALL", "C")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .stdin(match stdin {
            Some(f) => Stdio::from(std::fs::File::open(f).map_err(|e| format!("{f}: {e}"))?),
            None => Stdio::null(),
        });
    if preload {
        c.env("LD_PRELOAD", PRELOAD).env("PKTSLAB_STATS", "1");
    }
    c.output()
        .map_err(|e| format!("cannot run {}: {e}", argv[0]))
}

/// The `memory now` lines of every process's report: (pinned, ordinary,
/// copied at fork or past the cap, live above PKTSLAB_PIN_MAX, calls).
fn splits(err: &str) -> Vec<[u64; 5]> {
    err.lines()
        .filter_map(|l| {
            let l = l.strip_prefix("pktslab: memory now: pinned ")?;
            let n: Vec<u64> = l
                .split(|c: char| !c.is_ascii_digit())
                .filter_map(|w| w.parse().ok())
                .collect();
            (n.len() >= 5).then(|| [n[0], n[1], n[2], n[3], n[4]])
        })
        .collect()
}

/// Runs `argv` plain and preloaded; outputs must match, the library must
/// report device mode and the split. Returns the preloaded stderr.
fn same_output(name: &str, argv: &[&str], stdin: Option<&str>) -> Result<String, String> {
    let plain = run(argv, false, stdin)?;
    ensure!(
        plain.status.success(),
        "{name}: plain run failed ({}): {}",
        plain.status,
        String::from_utf8_lossy(&plain.stderr)
    );
    let pre = run(argv, true, stdin)?;
    let err = preloaded_stderr(name, &pre)?;
    ensure!(
        !splits(&err).is_empty(),
        "{name}: no pinned/ordinary split in the report: {err}"
    );
    ensure!(
        plain.stdout == pre.stdout,
        "{name}: output differs under LD_PRELOAD ({} vs {} bytes)",
        plain.stdout.len(),
        pre.stdout.len()
    );
    for l in err.lines().filter(|l| l.starts_with("pktslab: memory now")) {
        println!("{name}: {l}");
    }
    Ok(err)
}

fn tmp(name: &str, data: &[u8]) -> Result<String, String> {
    let p = format!("/tmp/pktaccel-pp-{}-{name}", std::process::id());
    std::fs::write(&p, data).map_err(|e| format!("{p}: {e}"))?;
    Ok(p)
}

fn numbers(n: usize) -> String {
    let mut x = 0x2545_f491_4f6c_dd1du64;
    let mut s = String::with_capacity(n * 11);
    for _ in 0..n {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        s.push_str(&format!("{}\n", x % 1_000_000_000));
    }
    s
}

fn xz_9_small_file() -> TestResult {
    let words = ["packet ", "slab ", "pinned ", "ring ", "queue "];
    let text: String = (0..256_000 / 4)
        .map(|i| words[(i * 7 + i / 13) % 5])
        .collect();
    ensure!(text.len() >= 256_000, "test data too short");
    let f = tmp("xz-in", &text.as_bytes()[..256_000])?;
    // xz -9 reserves ~674 MiB it mostly never touches; the 512 MiB guest's
    // heuristic overcommit refuses that even to glibc's malloc. Allow it
    // for this test (the host default), then restore the setting.
    const OVERCOMMIT: &str = "/proc/sys/vm/overcommit_memory";
    let old = std::fs::read_to_string(OVERCOMMIT).map_err(|e| format!("{OVERCOMMIT}: {e}"))?;
    std::fs::write(OVERCOMMIT, "1").map_err(|e| format!("{OVERCOMMIT}: {e}"))?;
    let err = same_output("xz -9", &["/usr/bin/xz", "-9", "-c", &f], None);
    std::fs::write(OVERCOMMIT, old.trim()).ok();
    std::fs::remove_file(&f).ok();
    let err = err?;
    let big = splits(&err).iter().map(|s| s[4]).max().unwrap_or(0);
    ensure!(big >= 1, "xz's big tables must be ordinary memory: {err}");
    Ok(())
}

fn sort_n_million_numbers() -> TestResult {
    let f = tmp("sort-in", numbers(1_000_000).as_bytes())?;
    let r = same_output("sort -n", &["/usr/bin/sort", "-n", &f], None);
    std::fs::remove_file(&f).ok();
    r.map(drop)
}

fn sqlite3_300k_inserts() -> TestResult {
    let sql = "create table t(id integer primary key, k text, v text);\n\
        with recursive c(x) as (select 1 union all select x+1 from c where x < 300000)\n\
        insert into t(k, v) select printf('k%08d', x * 7919 % 300000), printf('%0*d', x % 200 + 1, x) from c;\n\
        create index tk on t(k);\n\
        select count(*), sum(length(v)), min(k), max(k) from t;\n";
    let f = tmp("inserts.sql", sql.as_bytes())?;
    let r = same_output("sqlite3", &["/usr/bin/sqlite3", ":memory:"], Some(&f));
    std::fs::remove_file(&f).ok();
    r.map(drop)
}

fn dash_pipeline_forks() -> TestResult {
    let f = tmp("pipe-in", numbers(20_000).as_bytes())?;
    let script = format!(
        "f() {{ echo \"fn:$1\"; }}\n\
         big=$(/usr/bin/sort -n {f} | tr '\\n' ' ')\n\
         /usr/bin/sort -rn {f} | head -3\n\
         x=$(echo hello | tr a-z A-Z); echo \"$x\"\n\
         ( f sub; echo \"${{#big}}\" ) | cat\n\
         for i in 1 2 3; do echo \"$i\" | wc -c; done\n"
    );
    // The subshell's output proves the forked children ran on the heap
    // they were given (dash children leave with _exit: no report).
    let err = same_output("dash pipeline", &["/usr/bin/dash", "-c", &script], None);
    std::fs::remove_file(&f).ok();
    err.map(drop)
}

/// The fork script userlib's host preload test runs too (three forks, no
/// thread here).
const PY_FORK: &str = include_str!("../../../userlib/tests/fork_children.py");

fn python3_fork_and_subprocess() -> TestResult {
    let err = same_output(
        "python3 fork",
        &["/usr/bin/python3", "-c", PY_FORK, "3"],
        None,
    )?;
    // The child that exits normally reports the heap it was given: a
    // copy in ordinary memory, since the pinned slabs are not inherited.
    let copied = splits(&err).iter().map(|s| s[2]).max().unwrap_or(0);
    ensure!(copied > 0, "no child reported its copied heap: {err}");
    Ok(())
}

const PY_THREADS: &str = r#"
import os, threading
stop = False
def churn():
    while not stop:
        [bytes(i) * 3 for i in range(300)]
ts = [threading.Thread(target=churn) for _ in range(2)]
for t in ts: t.start()
codes = []
for k in range(6):
    pid = os.fork()
    if pid == 0:
        s = sum(len(bytes(i)) for i in range(2000))
        os._exit(0 if s == 1999000 else 4)
    codes.append(os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]))
stop = True
for t in ts: t.join()
print(codes)
"#;

fn python3_threaded_parent_forks() -> TestResult {
    same_output(
        "python3 threads+fork",
        &["/usr/bin/python3", "-c", PY_THREADS],
        None,
    )
    .map(drop)
}
