//! The preload library on real programs: python3, sqlite3, sort and git
//! produce the same output with `LD_PRELOAD=libpktslab.so` as without, and
//! the C test program exercises `pktslab.h` and the exported C ABI.
//!
//! The library is built here with `--features preload` (into a target
//! directory of its own, so the outer cargo's lock is not contended).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

mod common;

fn tmp() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("pktslab-preload-tests")
}

/// Builds libpktslab.so with the malloc exports once per test run.
fn libpktslab() -> &'static Path {
    static LIB: OnceLock<PathBuf> = OnceLock::new();
    LIB.get_or_init(|| {
        let target = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("pktslab-preload");
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let st = Command::new(cargo)
            .args([
                "build",
                "--quiet",
                "--release",
                "-p",
                "pktslab",
                "--features",
                "preload",
                "--lib",
            ])
            .arg("--target-dir")
            .arg(&target)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .status()
            .expect("run cargo");
        assert!(st.success(), "building libpktslab.so failed");
        let so = target.join("release/libpktslab.so");
        assert!(so.exists());
        so
    })
}

fn have(tool: &str) -> bool {
    Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {tool}"))
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Runs `cmd` twice, plain and preloaded with PKTSLAB_STATS=1, and checks
/// the outputs are identical and that the library really served at least
/// `min_allocs` allocations in one of the processes.
fn same_output(min_allocs: u64, mut make: impl FnMut() -> Command) -> Output {
    let plain = make().env_remove("LD_PRELOAD").output().unwrap();
    assert!(
        plain.status.success(),
        "plain run failed: {}",
        String::from_utf8_lossy(&plain.stderr)
    );
    let pre = make()
        .env("LD_PRELOAD", libpktslab())
        .env("PKTSLAB_STATS", "1")
        .env("PKTSLAB_BACKEND", "host")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&pre.stderr);
    assert!(
        pre.status.success(),
        "preloaded run failed: {:?}\n{err}",
        pre.status
    );
    assert!(
        err.contains("pktslab: backend host"),
        "stats report missing: {err}"
    );
    let served = err
        .lines()
        .filter_map(|l| {
            l.strip_prefix("pktslab: ")?
                .split(" allocations,")
                .next()?
                .parse::<u64>()
                .ok()
        })
        .max()
        .unwrap_or(0);
    assert!(
        served >= min_allocs,
        "pktslab served only {served} allocations: {err}"
    );
    assert!(
        plain.stdout == pre.stdout,
        "stdout differs under LD_PRELOAD ({} vs {} bytes)",
        plain.stdout.len(),
        pre.stdout.len()
    );
    assert!(!plain.stdout.is_empty());
    pre
}

#[test]
fn python3_script_runs_identically() {
    assert!(have("python3"), "python3 is required");
    std::fs::create_dir_all(tmp()).unwrap();
    let script = tmp().join("workload.py");
    std::fs::write(
        &script,
        r#"
import json, re, collections, hashlib
words = [("w%d" % (i * 7919 % 10007)) * (1 + i % 5) for i in range(60000)]
counts = collections.Counter(w[:4] for w in words)
d = {w: len(w) for w in words}
blob = json.dumps({"counts": counts.most_common(20), "n": len(d)}, sort_keys=True)
parts = re.findall(r"w\d+", " ".join(words[:5000]))
big = bytearray()
for i in range(2000):
    big += bytes([i % 256]) * (i % 700)
print(blob)
print(len(parts), sorted(set(parts))[:10])
print(hashlib.sha256(bytes(big)).hexdigest(), len(big))
print(sum(len(s) for s in sorted(words, key=lambda s: (len(s), s))[:1000]))
"#,
    )
    .unwrap();
    same_output(1000, || {
        let mut c = Command::new(python());
        c.arg(&script);
        c
    });
}

#[test]
fn sqlite3_workload_runs_identically() {
    assert!(
        have("sqlite3"),
        "sqlite3 is required (apt-get install -y sqlite3)"
    );
    let sql = "
        CREATE TABLE t(id INTEGER PRIMARY KEY, k TEXT, v REAL, blob BLOB);
        WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 30000)
          INSERT INTO t SELECT i, printf('key%05d', (i * 7919) % 30011), i * 0.5, zeroblob(i % 900) FROM n;
        CREATE INDEX tk ON t(k);
        SELECT count(*), sum(length(blob)), round(avg(v), 3) FROM t;
        SELECT substr(k, 1, 5) AS p, count(*), max(v) FROM t GROUP BY p ORDER BY p LIMIT 20;
        SELECT k FROM t WHERE k BETWEEN 'key01000' AND 'key01050' ORDER BY k;
        UPDATE t SET k = upper(k) WHERE id % 3 = 0;
        DELETE FROM t WHERE id % 7 = 0;
        VACUUM;
        SELECT count(*), group_concat(k, ',') FROM (SELECT k FROM t ORDER BY k DESC LIMIT 50);
    ";
    same_output(1000, || {
        let mut c = Command::new("sqlite3");
        c.args([":memory:", sql]);
        c
    });
}

#[test]
fn sort_of_a_large_file_runs_identically() {
    assert!(have("sort"), "sort is required");
    std::fs::create_dir_all(tmp()).unwrap();
    let file = tmp().join("sort-input.txt");
    let mut text = String::with_capacity(12 << 20);
    let mut x = 0x2545_f491_4f6c_dd1du64;
    for i in 0..300_000u64 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        text.push_str(&format!("{:016x} {} line-{}\n", x, x % 1000, i));
    }
    std::fs::write(&file, text).unwrap();
    // sort reads into a few large buffers: few, big allocations.
    let out = same_output(5, || {
        let mut c = Command::new("sort");
        c.env("LC_ALL", "C").args(["-k2,2n", "-k1,1"]).arg(&file);
        c
    });
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        ordinary_allocs(&err) >= 1,
        "sort's big buffers are above PKTSLAB_PIN_MAX, in ordinary memory: {err}"
    );
}

/// The most allocations above PKTSLAB_PIN_MAX any process of a run reported.
fn ordinary_allocs(err: &str) -> u64 {
    err.lines()
        .filter_map(|l| l.split("PKTSLAB_PIN_MAX from ").nth(1))
        .filter_map(|r| r.split(' ').next()?.parse().ok())
        .max()
        .unwrap_or_else(|| panic!("no ordinary-memory line: {err}"))
}

#[test]
fn git_log_runs_identically() {
    assert!(have("git"), "git is required");
    let repo = tmp().join("git-repo");
    let _ = std::fs::remove_dir_all(&repo);
    std::fs::create_dir_all(&repo).unwrap();
    let git = |args: &[&str]| {
        let st = Command::new("git")
            .args(args)
            .current_dir(&repo)
            .env("GIT_AUTHOR_DATE", "2024-01-01T00:00:00Z")
            .env("GIT_COMMITTER_DATE", "2024-01-01T00:00:00Z")
            .env_remove("LD_PRELOAD")
            .output()
            .unwrap();
        assert!(
            st.status.success(),
            "git {args:?}: {}",
            String::from_utf8_lossy(&st.stderr)
        );
    };
    git(&["init", "-q", "-b", "main"]);
    git(&["config", "user.email", "t@example.com"]);
    git(&["config", "user.name", "t"]);
    for i in 0..40 {
        let body: String = (0..200)
            .map(|j| format!("line {j} of rev {i} {}\n", (i * j) % 17))
            .collect();
        std::fs::write(repo.join(format!("f{}.txt", i % 7)), body).unwrap();
        git(&["add", "."]);
        git(&[
            "commit",
            "-q",
            "-m",
            &format!("commit {i}\n\nbody of commit {i}"),
        ]);
    }
    same_output(500, || {
        let mut c = Command::new("git");
        c.args(["log", "--stat", "-p", "--no-color"])
            .current_dir(&repo);
        c
    });
}

fn c_test_program() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let so = libpktslab();
        let dir = so.parent().unwrap();
        std::fs::create_dir_all(tmp()).unwrap();
        let out = tmp().join("pktslab_test");
        let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
        let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
        let st = Command::new(cc)
            .args(["-Wall", "-O1"])
            // The header C users take: userlib/include.
            .arg("-I")
            .arg(manifest.join("include"))
            .arg(manifest.join("tests/c/pktslab_test.c"))
            .arg("-o")
            .arg(&out)
            .arg(format!("-L{}", dir.display()))
            .arg("-lpktslab")
            // DT_RPATH, not RUNPATH: it wins over the LD_LIBRARY_PATH cargo
            // sets for tests (which holds a non-preload libpktslab.so).
            .arg("-Wl,--disable-new-dtags")
            .arg(format!("-Wl,-rpath,{}", dir.display()))
            .arg("-lpthread")
            .output()
            .expect("run cc");
        assert!(
            st.status.success(),
            "cc failed:\n{}",
            String::from_utf8_lossy(&st.stderr)
        );
        out
    })
}

#[test]
fn c_program_uses_the_header_and_the_c_abi() {
    let out = Command::new(c_test_program())
        .env_remove("LD_LIBRARY_PATH")
        .env("PKTSLAB_BACKEND", "host")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{:?}\n{err}", out.status);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "ok\n");
}

#[test]
fn c_program_faults_abort_with_one_line() {
    for (case, want) in [
        ("double-free", "pktslab: free(): double free of 0x"),
        ("invalid-free", "pktslab: free(): invalid pointer 0x"),
        ("invalid-realloc", "pktslab: realloc(): invalid pointer 0x"),
    ] {
        let out = Command::new(c_test_program())
            .env_remove("LD_LIBRARY_PATH")
            .arg(case)
            .env("PKTSLAB_BACKEND", "host")
            .output()
            .unwrap();
        let err = common::aborted_stderr(&out, case);
        assert!(err.lines().any(|l| l.starts_with(want)), "{case}: {err}");
    }
}

#[test]
fn missing_device_prints_once_and_fallback_keeps_programs_running() {
    let run = |fallback: &str| {
        Command::new("sh")
            .args(["-c", "echo hello | tr a-z A-Z"])
            .env("LD_PRELOAD", libpktslab())
            .env("PKTSLAB_BACKEND", "device")
            .env("PKTSLAB_DEVICE", "/nonexistent/pktaccel")
            .env("PKTSLAB_FALLBACK", fallback)
            .output()
            .unwrap()
    };
    let ok = run("1");
    assert!(ok.status.success());
    assert_eq!(String::from_utf8_lossy(&ok.stdout), "HELLO\n");
    let err = String::from_utf8_lossy(&ok.stderr);
    let notices = err
        .lines()
        .filter(|l| l.contains("/nonexistent/pktaccel"))
        .count();
    // One notice per process (sh and tr): never one per allocation.
    assert!((1..=3).contains(&notices), "{err}");
    assert!(err.contains("using ordinary memory"), "{err}");
    let strict = run("0");
    assert!(
        !strict.status.success(),
        "without fallback, malloc must fail"
    );
    assert!(String::from_utf8_lossy(&strict.stderr).contains("allocations will fail"));
}

/// Debian's python3 itself (a version manager's shim would be a shell
/// script running other programs, each with its own report).
fn python() -> &'static str {
    if Path::new("/usr/bin/python3").exists() {
        "/usr/bin/python3"
    } else {
        "python3"
    }
}

/// Runs `prog args` plain and preloaded on host slabs that a forked child
/// does not inherit (`PKTSLAB_HOST_DONTFORK=1`, as the device's mappings
/// are `VM_DONTCOPY`): the fork handlers must give every child a copy of
/// the heap. Outputs must match; returns the preloaded run's stderr.
fn same_output_across_fork(prog: &str, args: &[&str]) -> String {
    same_output_forking(prog, args, "1")
}

/// [`same_output_across_fork`] with `PKTSLAB_HOST_DONTFORK` set to `dontfork`.
fn same_output_forking(prog: &str, args: &[&str], dontfork: &str) -> String {
    let plain = Command::new(prog).args(args).output().unwrap();
    assert!(
        plain.status.success(),
        "{prog}: plain run failed: {plain:?}"
    );
    let pre = Command::new(prog)
        .args(args)
        .env("LD_PRELOAD", libpktslab())
        .env("PKTSLAB_BACKEND", "host")
        .env("PKTSLAB_HOST_DONTFORK", dontfork)
        .env("PKTSLAB_STATS", "1")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&pre.stderr).into_owned();
    assert!(
        pre.status.success(),
        "{prog}: preloaded run failed: {:?}\n{err}",
        pre.status
    );
    assert_eq!(
        String::from_utf8_lossy(&plain.stdout),
        String::from_utf8_lossy(&pre.stdout),
        "{prog}: output differs under LD_PRELOAD"
    );
    assert!(!plain.stdout.is_empty());
    err
}

#[test]
fn shell_pipelines_fork_on_slabs_children_do_not_inherit() {
    if !have("dash") {
        eprintln!("skipped: dash not installed");
        return;
    }
    // Pipelines, command substitution and a subshell that uses variables
    // and functions the parent built on its heap before forking.
    let script = r#"
        f() { echo "fn:$1"; }
        big=$(seq 1 3000 | tr '\n' ' ')
        seq 1 20000 | sort -rn | head -3
        x=$(echo hello | tr a-z A-Z); echo "$x"
        ( f sub; echo "${#big}" ) | cat
        for i in 1 2 3 4 5; do echo "$i" | wc -c; done
    "#;
    let err = same_output_across_fork("dash", &["-c", script]);
    assert!(err.contains("pktslab: memory now: pinned"), "{err}");
}

#[test]
fn python_forks_and_spawns_on_slabs_children_do_not_inherit() {
    if !have("python3") {
        eprintln!("skipped: python3 not installed");
        return;
    }
    // Five forks while a thread allocates; subprocess spawns.
    let script = include_str!("fork_children.py");
    let err = same_output_across_fork(python(), &["-c", script, "5", "threads"]);
    // The child that exits normally reports its heap: copied at fork.
    let copied = err
        .lines()
        .filter_map(|l| {
            l.split("ordinary ")
                .nth(1)?
                .split(" B (")
                .nth(1)?
                .split(' ')
                .next()?
                .parse::<u64>()
                .ok()
        })
        .max()
        .unwrap_or(0);
    assert!(copied > 0, "no child reported a heap copied at fork: {err}");
}

#[test]
fn single_threaded_and_threaded_parents_fork_on_inherited_slabs() {
    if !have("python3") {
        eprintln!("skipped: python3 not installed");
        return;
    }
    // Inherited slabs (the host default): a single-threaded parent forks
    // without holding our locks; once a thread exists, fork holds them
    // again. Children of both kinds allocate and read the parent's heap.
    let script = include_str!("fork_children.py");
    for mode in ["single", "threads"] {
        let err = same_output_forking(python(), &["-c", script, "8", mode], "0");
        assert!(err.contains("pktslab: memory now: pinned"), "{mode}: {err}");
    }
}

#[test]
fn threaded_parent_forks_on_slabs_children_do_not_inherit() {
    // threads.rs's fork test again, in a fresh process whose heap is
    // configured so that forked children inherit no slab.
    let exe = std::env::current_exe().unwrap();
    let threads = exe
        .parent()
        .unwrap()
        .read_dir()
        .unwrap()
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("threads-") && !n.ends_with(".d"))
        });
    let Some(threads) = threads else {
        eprintln!("skipped: the threads test binary is not built yet");
        return;
    };
    let out = Command::new(threads)
        .args([
            "fork_while_threads_allocate_then_child_allocates",
            "--exact",
        ])
        .env("PKTSLAB_BACKEND", "host")
        .env("PKTSLAB_HOST_DONTFORK", "1")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("1 passed"), "{text}");
}

#[test]
fn big_requests_use_ordinary_memory_and_the_limit_is_configurable() {
    if !have("python3") {
        eprintln!("skipped: python3 not installed");
        return;
    }
    let run = |pin_max: Option<&str>| {
        let mut c = Command::new(python());
        c.args(["-c", "b = bytearray(4 << 20); b[-1] = 1; print(sum(b))"])
            .env("LD_PRELOAD", libpktslab())
            .env("PKTSLAB_BACKEND", "host")
            .env("PKTSLAB_STATS", "1");
        if let Some(v) = pin_max {
            c.env("PKTSLAB_PIN_MAX", v);
        }
        let o = c.output().unwrap();
        assert!(o.status.success(), "{o:?}");
        assert_eq!(String::from_utf8_lossy(&o.stdout), "1\n");
        let err = String::from_utf8_lossy(&o.stderr).into_owned();
        (ordinary_allocs(&err), err)
    };
    let (n, err) = run(None);
    assert!(
        n >= 1,
        "a 4 MiB bytearray is above the default 128 KiB: {err}"
    );
    let (n, err) = run(Some("16M"));
    assert_eq!(n, 0, "with PKTSLAB_PIN_MAX=16M it is pinned: {err}");
    // A malformed value: one line naming it and the value used, and the
    // program still runs.
    let (n, err) = run(Some("lots"));
    assert!(n >= 1);
    let lines: Vec<_> = err
        .lines()
        .filter(|l| l.contains("PKTSLAB_PIN_MAX="))
        .collect();
    assert_eq!(lines.len(), 1, "{err}");
    assert!(
        lines[0].starts_with("pktslab: PKTSLAB_PIN_MAX=\"lots\"")
            && lines[0].ends_with("using 131072"),
        "{err}"
    );
}
