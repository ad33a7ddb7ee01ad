//! `cargo xtask bench`, real programs: Debian's own `sort`, `xz`, sqlite3,
//! python3, `git log -p`, `ls -l` and a shell loop, each under glibc's
//! malloc, jemalloc, mimalloc and pktslab (`LD_PRELOAD`, host backend),
//! side by side in one run: rounds interleave the allocators (their order
//! rotates every round) and each figure is the median over rounds. CPU
//! time and max RSS come from `wait4()` for the program and the children
//! it waited for; every run's stdout must be byte-identical to glibc's.
//!
//! The programs start from a tiny C launcher, not from this process: Linux
//! carries a process's peak RSS across fork and exec, so a program
//! started by xtask directly would report at least xtask's own peak.
//!
//! The start-up bound programs (`ls -l`, the shell loop) also run under a
//! fifth "allocator", the preload floor: an empty C library preloaded the
//! same way, which replaces nothing. What it costs over glibc is what any
//! `LD_PRELOAD` library pays per process on this machine (the loader opens,
//! maps and links one more object); pktslab's own start-up cost is what it
//! costs over the floor.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};
use sha2::{Digest, Sha256};
use xshell::{Shell, cmd};

use crate::step::Step;

/// Rounds per (program, allocator); the median is reported.
const ROUNDS: usize = 5;

/// The allocators compared, in table order; the last one, the preload
/// floor, only for programs with [`Program::floor`] set.
const ALLOCATORS: [&str; 5] = ["glibc", "jemalloc", "mimalloc", "pktslab", "floor"];

/// Index of pktslab and of the preload floor in [`ALLOCATORS`].
const PKTSLAB: usize = 3;
const FLOOR: usize = 4;

/// Shared objects of the peers (Debian's libjemalloc2 and libmimalloc2.0).
const JEMALLOC: &str = "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2";
const MIMALLOC: &str = "/usr/lib/x86_64-linux-gnu/libmimalloc.so.2";

/// One program and how to run it.
struct Program {
    name: &'static str,
    argv: Vec<String>,
    stdin: Option<PathBuf>,
    /// Also run under the preload floor: a program whose time is mostly
    /// process start-up, where the cost of preloading shows.
    floor: bool,
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
    write_inputs(dir)?;
    program_list(ws, dir)
}

/// Writes the programs' input files into `dir` (the same bytes every run).
fn write_inputs(dir: &Path) -> Result<()> {
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
    Ok(())
}

/// The programs to run, on the inputs `write_inputs` put in `dir`.
fn program_list(ws: &Path, dir: &Path) -> Result<Vec<Program>> {
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
            floor: false,
        },
        Program {
            name: "xz -6 (4 MiB)",
            argv: s(&["xz", "-6", "-c", &d("text.bin")]),
            stdin: None,
            floor: false,
        },
        Program {
            name: "xz -9 (256 KB)",
            argv: s(&["xz", "-9", "-c", &d("small.bin")]),
            stdin: None,
            floor: false,
        },
        Program {
            name: "sqlite3 (300k inserts)",
            argv: s(&["sqlite3", ":memory:"]),
            stdin: Some(dir.join("inserts.sql")),
            floor: false,
        },
        Program {
            name: "python3 (dicts, json)",
            argv: s(&["/usr/bin/python3", &d("script.py")]),
            stdin: None,
            floor: false,
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
            floor: false,
        },
        Program {
            name: "ls -l /usr/lib/x86_64-linux-gnu",
            argv: s(&["ls", "-l", "--time-style=+%s", "/usr/lib/x86_64-linux-gnu"]),
            stdin: None,
            floor: true,
        },
        Program {
            name: "shell loop (200 commands)",
            argv: s(&[
                "dash",
                "-c",
                "i=0; while [ $i -lt 100 ]; do /bin/echo \"$i\" | /usr/bin/tr 0-9 a-j; i=$((i+1)); done",
            ]),
            stdin: None,
            floor: true,
        },
    ])
}

/// The launcher: `launch OUT PRELOAD PROG ARGS...` runs PROG with
/// LD_PRELOAD=PRELOAD ("-" for none) and writes "cpu_s wall_s maxrss_kib
/// wait_status" to OUT.
const LAUNCHER_C: &str = r#"
#include <stdio.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
int main(int argc, char **argv) {
    if (argc < 4) return 2;
    struct timespec a, b;
    clock_gettime(CLOCK_MONOTONIC, &a);
    pid_t pid = fork();
    if (pid < 0) return 3;
    if (pid == 0) {
        if (argv[2][0] != '-') setenv("LD_PRELOAD", argv[2], 1);
        execvp(argv[3], argv + 3);
        _exit(127);
    }
    int st = 0;
    struct rusage ru;
    if (wait4(pid, &st, 0, &ru) < 0) return 4;
    clock_gettime(CLOCK_MONOTONIC, &b);
    FILE *f = fopen(argv[1], "w");
    if (!f) return 5;
    fprintf(f, "%.6f %.6f %ld %d\n",
            ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 + ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6,
            (b.tv_sec - a.tv_sec) + (b.tv_nsec - a.tv_nsec) / 1e9, ru.ru_maxrss, st);
    return fclose(f) != 0;
}
"#;

fn build_launcher(dir: &Path) -> Result<PathBuf> {
    let src = dir.join("launch.c");
    let exe = dir.join("launch");
    std::fs::write(&src, LAUNCHER_C)?;
    let sh = Shell::new()?;
    cmd!(sh, "cc -O2 -static -o {exe} {src}")
        .quiet()
        .run()
        .with_context(|| {
            format!(
                "compiling the benchmark launcher {} failed (no cc? apt-get install build-essential)",
                src.display()
            )
        })?;
    Ok(exe)
}

/// The preload floor: a C library with one empty function and nothing
/// else, compiled as the launcher is (`cc -O2`, as a shared object).
const FLOOR_C: &str = "void pktbench_preload_floor(void) {}\n";

fn build_floor(dir: &Path) -> Result<PathBuf> {
    let src = dir.join("floor.c");
    let lib = dir.join("libfloor.so");
    std::fs::write(&src, FLOOR_C)?;
    let sh = Shell::new()?;
    cmd!(sh, "cc -O2 -shared -fPIC -o {lib} {src}")
        .quiet()
        .run()
        .with_context(|| {
            format!(
                "compiling the preload floor {} failed (no cc? apt-get install build-essential)",
                src.display()
            )
        })?;
    Ok(lib)
}

/// Builds libpktslab.so with the malloc exports (own target directory so
/// the workspace's build is not invalidated).
fn build_preload(ws: &Path) -> Result<PathBuf> {
    let target = ws.join("target/bench-preload");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let sh = Shell::new()?;
    sh.change_dir(ws);
    cmd!(
        sh,
        "{cargo} build --quiet --release -p pktslab --features preload --lib --target-dir {target}"
    )
    .quiet()
    .run()
    .context(
        "building libpktslab.so failed; run `cargo build -p pktslab --features preload` to see why",
    )?;
    Ok(target.join("release/libpktslab.so"))
}

/// Runs `p` once under allocator `alloc` through the launcher; returns
/// the figures and the hash of its stdout. `stats`: pktslab prints its
/// report (for the pinned bytes; such runs are not timed).
fn run_once(p: &Program, alloc: &str, env: &Env, stats: bool) -> Result<(Sample, [u8; 32])> {
    let (out_path, err_path, res_path) = (
        env.dir.join("out.bin"),
        env.dir.join("err.txt"),
        env.dir.join("res.txt"),
    );
    let preload = match alloc {
        "jemalloc" => Path::new(JEMALLOC),
        "mimalloc" => Path::new(MIMALLOC),
        "pktslab" => env.lib.as_path(),
        "floor" => env.floor.as_path(),
        _ => Path::new("-"),
    };
    // A std `Command`, not xshell: the program's output goes straight to
    // files (xshell would hold it in memory) and stdin comes from a file.
    let mut c = Command::new(&env.launcher);
    c.arg(&res_path)
        .arg(preload)
        .args(&p.argv)
        .env("LC_ALL", "C")
        .env_remove("LD_PRELOAD")
        .env("PKTSLAB_BACKEND", "host")
        .stdout(std::fs::File::create(&out_path)?)
        .stderr(std::fs::File::create(&err_path)?)
        .stdin(match &p.stdin {
            Some(f) => Stdio::from(std::fs::File::open(f)?),
            None => Stdio::null(),
        });
    if stats {
        c.env("PKTSLAB_STATS", "1");
    }
    let st = c
        .status()
        .with_context(|| format!("cannot run {}", env.launcher.display()))?;
    let err = std::fs::read_to_string(&err_path).unwrap_or_default();
    let res = std::fs::read_to_string(&res_path).unwrap_or_default();
    let f: Vec<f64> = res
        .split_whitespace()
        .filter_map(|w| w.parse().ok())
        .collect();
    if !st.success() || f.len() != 4 || f[3] != 0.0 {
        bail!(
            "{} under {alloc} failed ({st}, wait status {res:?}): {}",
            p.name,
            err.trim()
        );
    }
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
            cpu_s: f[0],
            wall_s: f[1],
            rss_kib: f[2] as u64,
            pinned,
        },
        hash,
    ))
}

/// What every run needs.
struct Env {
    lib: PathBuf,
    floor: PathBuf,
    launcher: PathBuf,
    dir: PathBuf,
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
    let launcher = build_launcher(&dir)?;
    let floor = build_floor(&dir)?;
    let progs = programs(ws, &dir)?;
    let env = Env {
        lib,
        floor,
        launcher,
        dir: dir.clone(),
    };
    let load_before = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    // samples[program][allocator] over rounds; hashes must all agree.
    let mut samples = vec![vec![Vec::<Sample>::new(); ALLOCATORS.len()]; progs.len()];
    let mut same = vec![true; progs.len()];
    for round in 0..ROUNDS {
        for (pi, p) in progs.iter().enumerate() {
            let mut want = None;
            let n = if p.floor { FLOOR + 1 } else { FLOOR };
            for k in 0..n {
                let ai = (k + round) % n;
                let (s, h) = run_once(p, ALLOCATORS[ai], &env, false)?;
                same[pi] &= *want.get_or_insert(h) == h;
                samples[pi][ai].push(s);
            }
        }
    }
    // Pinned bytes from one more, untimed pktslab run with the report on.
    for (pi, p) in progs.iter().enumerate() {
        let (s, _) = run_once(p, "pktslab", &env, true)?;
        samples[pi][PKTSLAB]
            .iter_mut()
            .for_each(|x| x.pinned = s.pinned);
    }
    let load_after = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let md = table(&progs, &samples, &same, (&load_before, &load_after))?;
    std::fs::write(dir.join("table.md"), &md)?;
    step.done(&format!(
        "{} programs x {} allocators (+ the preload floor for {}) x {ROUNDS} rounds",
        progs.len(),
        FLOOR,
        progs.iter().filter(|p| p.floor).count()
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
        "Medians of {ROUNDS} interleaved rounds (allocator order rotating), Debian's binaries, pktslab on the host backend (slabs mapped as used and pinned (mlock()ed) on the first v2p; the driver pins its slabs when it hands them out). CPU = user + system time of the program and its children (`wait4`); RSS = max resident set (KiB); speed ratios are glibc time / pktslab time (higher is better), the RSS ratio pktslab / glibc (lower is better). Load average before: `{}`, after: `{}`.\n",
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
        let pinned = m(&|s| s.pinned as f64)[PKTSLAB];
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
            j(&cpu[..FLOOR], 3),
            j(&wall[..FLOOR], 3),
            j(&rss[..FLOOR], 0),
            cpu[0] / cpu[PKTSLAB].max(1e-9),
            wall[0] / wall[PKTSLAB].max(1e-9),
            rss[PKTSLAB] / rss[0].max(1.0),
            pinned / (1 << 20) as f64,
            if same[pi] { "yes" } else { "**NO**" }
        )?;
    }
    writeln!(md)?;
    floor_table(&mut md, progs, samples)?;
    Ok(md)
}

/// The preload floor's table: how much of pktslab's gap to glibc on the
/// start-up bound programs any preloaded library pays, from the same
/// interleaved rounds as the main table.
fn floor_table(md: &mut String, progs: &[Program], samples: &[Vec<Vec<Sample>>]) -> Result<()> {
    writeln!(
        md,
        "### The cost of LD_PRELOAD itself (preload floor)
"
    )?;
    writeln!(
        md,
        "The floor is a C library with one empty function (`cc -O2 -shared -fPIC`, as the launcher is compiled), preloaded the same way and measured in the same interleaved rounds. It replaces nothing, so its time over glibc's is what the loader charges any preloaded library per process: no preload library can score better than the floor's ratio to glibc. pktslab's own start-up cost is its time over the floor's. Ratios are times divided as in the main table (higher is better); the floor's share is (floor - glibc) / (pktslab - glibc), the part of pktslab's gap that preloading alone causes (`no gap` when pktslab is within 1 % of glibc).\n"
    )?;
    writeln!(
        md,
        "| program | CPU ms glibc / floor / pktslab | wall ms glibc / floor / pktslab | best any preload can do: glibc / floor, CPU / wall | pktslab vs glibc, CPU / wall | pktslab vs floor (its own cost), CPU / wall | floor's share of the gap, CPU / wall |\n|---|---|---|---:|---:|---:|---:|"
    )?;
    for (pi, p) in progs.iter().enumerate().filter(|(_, p)| p.floor) {
        let m = |ai: usize, f: fn(&Sample) -> f64| median(samples[pi][ai].iter().map(f).collect());
        let cpu = [0, FLOOR, PKTSLAB].map(|ai| m(ai, |s| s.cpu_s));
        let wall = [0, FLOOR, PKTSLAB].map(|ai| m(ai, |s| s.wall_s));
        let ratio = |a: f64, b: f64| format!("{:.2}x", a / b.max(1e-9));
        let share = |v: &[f64; 3]| {
            let gap = v[2] - v[0];
            // Below 1 % of glibc's time the gap is within the noise.
            if gap > 0.01 * v[0] {
                format!("{:.0} %", 100.0 * (v[1] - v[0]) / gap)
            } else {
                "no gap".to_string()
            }
        };
        let j = |v: &[f64; 3]| format!("{:.1} / {:.1} / {:.1}", v[0] * 1e3, v[1] * 1e3, v[2] * 1e3);
        writeln!(
            md,
            "| {} | {} | {} | {} / {} | {} / {} | {} / {} | {} / {} |",
            p.name,
            j(&cpu),
            j(&wall),
            ratio(cpu[0], cpu[1]),
            ratio(wall[0], wall[1]),
            ratio(cpu[0], cpu[2]),
            ratio(wall[0], wall[2]),
            ratio(cpu[1], cpu[2]),
            ratio(wall[1], wall[2]),
            share(&cpu),
            share(&wall),
        )?;
    }
    writeln!(md)?;
    Ok(())
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
