//! `--fork N`: the provider across fork(). A second thread keeps
//! AES-GCM requests on the device while the main thread forks N times;
//! each child, with the parent's context (whose key is in a slot of the
//! parent's device file, not the child's) and a new one, must seal and
//! open correctly. Its provider report (printed at its exit, counters from
//! zero in a child) must show no device error (the parent's slot used on
//! the child's file is one: ENOKEY) and either the requests on the device
//! with the keys installed on the child's own file, or a counted software
//! fallback (a forked child's pinned buffers may be ordinary memory: its
//! heap is a copy of the parent's). A child that hangs is killed by its
//! alarm.

use std::io::Read;
use std::os::fd::FromRawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use anyhow::{Context, Result, bail};

use crate::evp::{self, Cipher, Evp, open, seal};
use crate::pattern;

/// Seconds a child may take before its alarm kills it.
const CHILD_ALARM: u32 = 30;

/// Runs the fork checks; returns how many passed.
pub fn run(provider: &str, lib: &str, forks: usize) -> Result<usize> {
    let e = Evp::open(lib)?;
    e.load_provider(provider)?;
    e.load_provider("default")?;
    let ours = e.fetch(c"provider=pktaccel", "pktaccel")?;
    let reference = e.fetch(c"provider=default", "default")?;
    let key = pattern(32, 21);
    // The parent's context: its key goes into a slot of the parent's file.
    let mut a = ours.ctx();
    if !a.init(Some(&key), None, true) {
        bail!("fork: encrypt init with the key failed");
    }
    let (iv, aad, pt) = (pattern(12, 1), pattern(13, 2), pattern(4096, 3));
    let want = seal(&reference, &key, &iv, &aad, &pt, 1)?;
    if seal_with(&mut a, &iv, &aad, &pt)? != (want.ct, want.tag) {
        bail!("fork: the parent's context sealed wrongly before any fork");
    }
    let stop = Arc::new(AtomicBool::new(false));
    let rounds = Arc::new(AtomicU64::new(0));
    let (s, r) = (Arc::clone(&stop), Arc::clone(&rounds));
    let lib_name = lib.to_string();
    let busy = std::thread::spawn(move || busy_loop(&lib_name, &s, &r));
    // Fork only once the thread is busy on the device.
    while rounds.load(Ordering::Relaxed) == 0 && !busy.is_finished() {
        std::thread::yield_now();
    }
    let mut n = 1;
    for k in 0..forks {
        let report = fork_child(|| child_checks(&ours, &reference, &mut a, &key, k))
            .with_context(|| format!("fork child {k}"))?;
        for l in report.lines() {
            println!("fork child {k}: {l}");
        }
        let how = check_child_report(&report).with_context(|| format!("fork child {k}"))?;
        println!("fork child {k}: correct, {how}");
        n += 3;
    }
    stop.store(true, Ordering::Relaxed);
    let done = busy
        .join()
        .map_err(|_| anyhow::anyhow!("fork: the busy thread panicked"))??;
    println!(
        "fork: {forks} children, each correct on its own key slots; the parent's thread made {done} device round trips meanwhile"
    );
    Ok(n + 1)
}

/// Seals `pt` on context `x` (key already set): ciphertext and tag.
fn seal_with(
    x: &mut evp::Ctx<'_>,
    iv: &[u8],
    aad: &[u8],
    pt: &[u8],
) -> Result<(Vec<u8>, [u8; 16])> {
    let mut ct = pt.to_vec();
    let p = ct.as_mut_ptr();
    if !x.init(None, Some(iv), true)
        || !x.aad(aad)
        || x.update(p, p, ct.len()) != Some(ct.len())
        || !x.finish()
    {
        bail!("seal on an existing context failed");
    }
    Ok((ct, x.tag().context("get tag")?))
}

/// In the child: the inherited context seals, a new one opens.
fn child_checks(
    ours: &Cipher<'_>,
    reference: &Cipher<'_>,
    a: &mut evp::Ctx<'_>,
    key: &[u8],
    k: usize,
) -> Result<()> {
    let (iv, aad, pt) = (
        pattern(12, 40 + k as u8),
        pattern(13, 5),
        pattern(1500 + k, 6),
    );
    let want = seal(reference, key, &iv, &aad, &pt, 1)?;
    if seal_with(a, &iv, &aad, &pt)? != (want.ct.clone(), want.tag) {
        bail!("the context inherited from the parent sealed to different bytes");
    }
    let (got, _) = open(ours, key, &iv, &aad, &want.ct, &want.tag, true)?;
    if got.as_deref() != Some(&pt[..]) {
        bail!("a new context did not open the default provider's ciphertext");
    }
    Ok(())
}

/// Forks; the child runs `f` with its stderr on a pipe and exits (0 when
/// `f` succeeded), so its provider report goes to the pipe. Returns what
/// the child wrote there, after checking its exit status.
fn fork_child(f: impl FnOnce() -> Result<()>) -> Result<String> {
    let mut fds = [0i32; 2];
    // SAFETY: `fds` has room for the two descriptors.
    if unsafe { libc::pipe(fds.as_mut_ptr()) } != 0 {
        bail!("pipe: {}", std::io::Error::last_os_error());
    }
    // SAFETY: the child only runs the checks and exits; the parent's
    // other thread is not needed there.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        bail!("fork: {}", std::io::Error::last_os_error());
    }
    if pid == 0 {
        // SAFETY: the child's own descriptors: stderr onto the pipe.
        unsafe {
            libc::alarm(CHILD_ALARM);
            libc::dup2(fds[1], 2);
            libc::close(fds[0]);
            libc::close(fds[1]);
        }
        let code = match f() {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("FAILED: {e:#}");
                1
            }
        };
        // A normal exit: the provider's report is printed (to the pipe).
        std::process::exit(code);
    }
    // SAFETY: the write end is the child's now; we own the read end.
    let mut r = unsafe {
        libc::close(fds[1]);
        std::fs::File::from_raw_fd(fds[0])
    };
    let mut text = String::new();
    let read = r.read_to_string(&mut text);
    let mut status = 0;
    // SAFETY: waits for our own child.
    unsafe { libc::waitpid(pid, &mut status, 0) };
    read.context("reading the child's report")?;
    if libc::WIFSIGNALED(status) && libc::WTERMSIG(status) == libc::SIGALRM {
        bail!("hung for {CHILD_ALARM} s (killed by its alarm):\n{text}");
    }
    if !libc::WIFEXITED(status) || libc::WEXITSTATUS(status) != 0 {
        bail!("failed (status {status:#x}):\n{text}");
    }
    Ok(text)
}

/// The child's own work: no device error, and either on the device with
/// both keys installed on its own file, or a counted software fallback.
fn check_child_report(report: &str) -> Result<&'static str> {
    let c = pktaccel_provider::stats::report_numbers(report);
    if c.len() != 14 {
        bail!("no provider report (PKTACCEL_PROVIDER_STATS=1?):\n{report}");
    }
    let (seals, opens, key_sets) = (c[0], c[1], c[6]);
    let (no_device, after_errors, errors) = (c[8], c[12], c[13]);
    if errors > 0 || no_device > 0 {
        bail!("device errors (a parent's key slot?) or no device in the child:\n{report}");
    }
    if seals > 0 && opens > 0 && key_sets >= 2 && after_errors == 0 {
        return Ok("on the device, keys installed on its own file");
    }
    if after_errors > 0 {
        return Ok("in software (counted): its buffers were not pinned");
    }
    bail!("neither on the device nor a counted fallback:\n{report}")
}

/// The parent's other thread: seal and open on the device until told to
/// stop (and at least 20 times), checked against the default provider.
fn busy_loop(lib: &str, stop: &AtomicBool, rounds: &AtomicU64) -> Result<u64> {
    let e = Evp::open(lib)?;
    let ours = e.fetch(c"provider=pktaccel", "pktaccel")?;
    let reference = e.fetch(c"provider=default", "default")?;
    let key = pattern(32, 22);
    let mut n = 0u64;
    while n < 20 || !stop.load(Ordering::Relaxed) {
        let (iv, pt) = (pattern(12, n as u8), pattern(8192, n as u8));
        let a = seal(&ours, &key, &iv, &[], &pt, 1)?;
        let b = seal(&reference, &key, &iv, &[], &pt, 1)?;
        if a.ct != b.ct || a.tag != b.tag {
            bail!("fork: the parent's thread sealed wrongly (round {n})");
        }
        let (got, _) = open(&ours, &key, &iv, &[], &a.ct, &a.tag, true)?;
        if got.as_deref() != Some(&pt[..]) {
            bail!("fork: the parent's thread did not open its own ciphertext (round {n})");
        }
        n += 1;
        rounds.store(n, Ordering::Relaxed);
    }
    Ok(n)
}
