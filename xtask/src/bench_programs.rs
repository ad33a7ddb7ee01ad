//! `cargo xtask bench`, real programs: Debian's own `sort`, `xz`, sqlite3,
//! python3, `git log -p`, `ls -l` and a shell loop, each under glibc's
//! malloc, jemalloc, mimalloc and pktslab (`LD_PRELOAD`, host backend),
//! side by side in one run: rounds interleave the allocators (their order
//! rotates every round) and each figure is the median over rounds. CPU
//! time and max RSS come from `wait4()` for the program and the children
//! it waited for; every run's stdout must be byte-identical to glibc's.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use sha2::{Digest, Sha256};

use crate::step::Step;

/// Rounds per (program, allocator); the median is reported.
const ROUNDS: usize = 5;

/// The allocators compared, in table order.
const ALLOCATORS: [&str; 4] = ["glibc", "jemalloc", "mimalloc", "pktslab"];

/// Shared objects of the peers (Debian's libjemalloc2 and libmimalloc2.0).
const JEMALLOC: &str = "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2";
const MIMALLOC: &str = "/usr/lib/x86_64-linux-gnu/libmimalloc.so.2";

/// One program and how to run it.
struct Program {
    name: &'static str,
    argv: Vec<String>,
    stdin: Option<PathBuf>,
}

/// One run's figures.
#[derive(Clone, Copy, Default)]
struct Sample {
    cpu_s: f64,
    wall_s: f64,
    rss_kib: u64,
    pinned: u64,
}

/// Deterministic pseudo-random numbers (xorshift) for the inputs.
fn xorshift(x: &mut u64) -> u64 {
    *x ^= *x << 13;
    *x ^= *x >> 7;
    *x ^= *x << 17;
    *x
}

/// Writes the input files; returns the programs to run.
fn programs(ws: &Path, dir: &Path) -> Result<Vec<Program>> {
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let mut nums = String::with_capacity(30 << 20);
    for _ in 0..3_000_000 {
        writeln!(nums, "{}", xorshift(&mut x) % 1_000_000_000)?;
    }
    std::fs::write(dir.join("numbers.txt"), &nums)?;
    // Text-like, compressible data for xz: 4 MiB, and a 256 KB piece.
    let words = [
        "packet ", "slab ", "pinned ", "memory ", "device ", "queue ", "ring ",
    ];
    let mut text = Vec::with_capacity(4 << 20);
    while text.len() < 4 << 20 {
        let r = xorshift(&mut x);
        text.extend_from_slice(words[(r % 7) as usize].as_bytes());
        if r.is_multiple_of(11) {
            text.extend_from_slice(format!("{}\n", r % 100_000).as_bytes());
        }
    }
    std::fs::write(dir.join("text.bin"), &text)?;
    std::fs::write(dir.join("small.bin"), &text[..256_000])?;
    let sql = "create table t(id integer primary key, k text, v text);\n\
        with recursive c(x) as (select 1 union all select x+1 from c where x < 300000)\n\
        insert into t(k, v) select printf('k%08d', x * 7919 % 300000), printf('%0*d', x % 200 + 1, x) from c;\n\
        create index tk on t(k);\n\
        select count(*), sum(length(v)), min(k), max(k) from t;\n\
        select substr(k, 1, 4), count(*) from t group by 1 order by 2 desc limit 3;\n";
    std::fs::write(dir.join("inserts.sql"), sql)?;
    let py = "import json, collections\n\
        words = [('w%d' % (i * 7919 % 5000)) * (i % 7 + 1) for i in range(300000)]\n\
        c = collections.Counter(words)\n\
        d = {w: [len(w), n, str(n) * 3] for w, n in c.items()}\n\
        blob = json.dumps(sorted(d.items()))\n\
        back = json.loads(blob)\n\
        print(len(blob), len(back), sum(len(w) for w in words), c.most_common(2))\n";
    std::fs::write(dir.join("script.py"), py)?;
    let s = |v: &[&str]| v.iter().map(|a| a.to_string()).collect::<Vec<_>>();
    let d = |f: &str| dir.join(f).display().to_string();
    let git = if Path::new("/usr/bin/git").exists() {
        "/usr/bin/git"
    } else {
        "git"
    };
    let ws = ws.display().to_string();
    Ok(vec![
        Program {
            name: "sort -n (3M numbers)",
            argv: s(&["sort", "-n", &d("numbers.txt")]),
            stdin: None,
        },
        Program {
            name: "xz -6 (4 MiB)",
            argv: s(&["xz", "-6", "-c", &d("text.bin")]),
            stdin: None,
        },
        Program {
            name: "xz -9 (256 KB)",
            argv: s(&["xz", "-9", "-c", &d("small.bin")]),
            stdin: None,
        },
        Program {
            name: "sqlite3 (300k inserts)",
            argv: s(&["sqlite3", ":memory:"]),
            stdin: Some(dir.join("inserts.sql")),
        },
        Program {
            name: "python3 (dicts, json)",
            argv: s(&["/usr/bin/python3", &d("script.py")]),
            stdin: None,
        },
        Program {
            name: "git log -p (300 commits)",
            argv: s(&[
                git,
                "-C",
                &ws,
                "log",
                "-p",
                "-n",
                "300",
                "--no-color",
                "--no-ext-diff",
            ]),
            stdin: None,
        },
        Program {
            name: "ls -l /usr/lib/x86_64-linux-gnu",
            argv: s(&["ls", "-l", "--time-style=+%s", "/usr/lib/x86_64-linux-gnu"]),
            stdin: None,
        },
        Program {
            name: "shell loop (200 commands)",
            argv: s(&[
                "dash",
                "-c",
                "i=0; while [ $i -lt 100 ]; do /bin/echo \"$i\" | /usr/bin/tr 0-9 a-j; i=$((i+1)); done",
            ]),
            stdin: None,
        },
    ])
}

/// Builds libpktslab.so with the malloc exports (own target directory so
/// the workspace's build is not invalidated).
fn build_preload(ws: &Path) -> Result<PathBuf> {
    let target = ws.join("target/bench-preload");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let st = Command::new(cargo)
        .current_dir(ws)
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
        .status()
        .context("cannot run cargo build for libpktslab.so")?;
    if !st.success() {
        bail!(
            "building libpktslab.so failed ({st}); run `cargo build -p pktslab --features preload` to see why"
        );
    }
    Ok(target.join("release/libpktslab.so"))
}

/// Runs `p` once under allocator `alloc`; returns the figures and the
/// hash of its stdout.
fn run_once(p: &Program, alloc: &str, lib: &Path, dir: &Path) -> Result<(Sample, [u8; 32])> {
    let out_path = dir.join("out.bin");
    let err_path = dir.join("err.txt");
    let mut c = Command::new(&p.argv[0]);
    c.args(&p.argv[1..])
        .env("LC_ALL", "C")
        .env_remove("LD_PRELOAD")
        .stdout(std::fs::File::create(&out_path)?)
        .stderr(std::fs::File::create(&err_path)?)
        .stdin(match &p.stdin {
            Some(f) => Stdio::from(std::fs::File::open(f)?),
            None => Stdio::null(),
        });
    match alloc {
        "jemalloc" => c.env("LD_PRELOAD", JEMALLOC),
        "mimalloc" => c.env("LD_PRELOAD", MIMALLOC),
        "pktslab" => c
            .env("LD_PRELOAD", lib)
            .env("PKTSLAB_BACKEND", "host")
            .env("PKTSLAB_STATS", "1"),
        _ => &mut c,
    };
    let t = Instant::now();
    let child = c
        .spawn()
        .with_context(|| format!("cannot run {}", p.argv[0]))?;
    let mut status = 0;
    // SAFETY: an all-zero rusage is valid; wait4 fills it.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: waits for our own child (std never reaps it: we do not call wait()).
    let r = unsafe { libc::wait4(child.id() as i32, &mut status, 0, &mut ru) };
    let wall_s = t.elapsed().as_secs_f64();
    let err = std::fs::read_to_string(&err_path).unwrap_or_default();
    if r < 0 || !libc::WIFEXITED(status) || libc::WEXITSTATUS(status) != 0 {
        bail!(
            "{} under {alloc} failed (wait status {status:#x}): {}",
            p.name,
            err.trim()
        );
    }
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    let pinned = err
        .lines()
        .filter_map(|l| {
            l.strip_prefix("pktslab: memory now: pinned ")?
                .split(' ')
                .next()?
                .parse()
                .ok()
        })
        .max()
        .unwrap_or(0);
    let hash = Sha256::digest(std::fs::read(&out_path)?).into();
    Ok((
        Sample {
            cpu_s: tv(ru.ru_utime) + tv(ru.ru_stime),
            wall_s,
            rss_kib: ru.ru_maxrss as u64,
            pinned,
        },
        hash,
    ))
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    if v.is_empty() { 0.0 } else { v[v.len() / 2] }
}

/// Runs every program under every allocator and returns the report
/// section (markdown).
pub fn run(ws: &Path, out_dir: &Path) -> Result<String> {
    let step = Step::start("real programs under glibc, jemalloc, mimalloc, pktslab");
    for lib in [JEMALLOC, MIMALLOC] {
        if !Path::new(lib).exists() {
            bail!(
                "{lib} is missing: apt-get install libjemalloc2 libmimalloc2.0 (cargo xtask provisions them as host packages)"
            );
        }
    }
    let lib = build_preload(ws)?;
    let dir = out_dir.join("programs");
    std::fs::create_dir_all(&dir)?;
    let progs = programs(ws, &dir)?;
    let load_before = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    // samples[program][allocator] over rounds; hashes must all agree.
    let mut samples = vec![vec![Vec::<Sample>::new(); ALLOCATORS.len()]; progs.len()];
    let mut same = vec![true; progs.len()];
    for round in 0..ROUNDS {
        for (pi, p) in progs.iter().enumerate() {
            let mut want = None;
            for k in 0..ALLOCATORS.len() {
                let ai = (k + round) % ALLOCATORS.len();
                let (s, h) = run_once(p, ALLOCATORS[ai], &lib, &dir)?;
                same[pi] &= *want.get_or_insert(h) == h;
                samples[pi][ai].push(s);
            }
        }
    }
    let load_after = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let md = table(&progs, &samples, &same, (&load_before, &load_after))?;
    std::fs::write(dir.join("table.md"), &md)?;
    step.done(&format!(
        "{} programs x {} allocators x {ROUNDS} rounds",
        progs.len(),
        ALLOCATORS.len()
    ));
    Ok(md)
}

/// The markdown section: medians and pktslab's ratios to glibc.
fn table(
    progs: &[Program],
    samples: &[Vec<Vec<Sample>>],
    same: &[bool],
    load: (&str, &str),
) -> Result<String> {
    let mut md = String::new();
    writeln!(md, "## Real programs under four allocators (host)\n")?;
    writeln!(
        md,
        "Medians of {ROUNDS} interleaved rounds (allocator order rotating), Debian's binaries, pktslab on the host backend (slabs populated and mlock()ed like the driver's). CPU = user + system time of the program and its children (`wait4`); RSS = max resident set (KiB); speed ratios are glibc time / pktslab time (higher is better), the RSS ratio pktslab / glibc (lower is better). Load average before: `{}`, after: `{}`.\n",
        load.0.trim(),
        load.1.trim()
    )?;
    writeln!(
        md,
        "| program | CPU s glibc / jemalloc / mimalloc / pktslab | wall s glibc / jemalloc / mimalloc / pktslab | max RSS KiB glibc / jemalloc / mimalloc / pktslab | CPU speed vs glibc | wall speed vs glibc | RSS vs glibc | pktslab pinned at exit | same output |\n|---|---|---|---|---:|---:|---:|---:|---|"
    )?;
    for (pi, p) in progs.iter().enumerate() {
        let m = |f: &dyn Fn(&Sample) -> f64| -> Vec<f64> {
            samples[pi]
                .iter()
                .map(|v| median(v.iter().map(f).collect()))
                .collect()
        };
        let cpu = m(&|s| s.cpu_s);
        let wall = m(&|s| s.wall_s);
        let rss = m(&|s| s.rss_kib as f64);
        let pinned = m(&|s| s.pinned as f64)[3];
        let j = |v: &[f64], prec: usize| {
            v.iter()
                .map(|x| format!("{x:.prec$}"))
                .collect::<Vec<_>>()
                .join(" / ")
        };
        writeln!(
            md,
            "| {} | {} | {} | {} | {:.2}x | {:.2}x | {:.2}x | {:.1} MiB | {} |",
            p.name,
            j(&cpu, 3),
            j(&wall, 3),
            j(&rss, 0),
            cpu[0] / cpu[3].max(1e-9),
            wall[0] / wall[3].max(1e-9),
            rss[3] / rss[0].max(1.0),
            pinned / (1 << 20) as f64,
            if same[pi] { "yes" } else { "**NO**" }
        )?;
    }
    writeln!(md)?;
    Ok(md)
}

/// `cargo xtask bench --programs-only`: the section alone, as
/// `target/bench/programs.md`.
pub fn run_alone(ws: &Path, out_dir: &Path) -> Result<PathBuf> {
    let md = run(ws, out_dir)?;
    let path = out_dir.join("programs.md");
    std::fs::write(
        &path,
        format!("# pktaccel benchmark report: real programs\n\n{md}"),
    )?;
    Ok(path)
}

/// Appends the section to the report.
pub fn append(report: &Path, section: &str) -> Result<()> {
    let mut md = std::fs::read_to_string(report)?;
    md.push_str(section);
    std::fs::write(report, md).with_context(|| format!("cannot write {}", report.display()))
}
