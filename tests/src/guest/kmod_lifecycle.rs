//! pktaccel.ko across lifecycles: processes killed or exiting with
//! requests in flight, module reload with parameters, PCI unbind and
//! rebind, and the device process dying under the driver.

use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};

use pktaccel_abi::*;

use super::kmod_helpers::*;
use crate::ensure;
use crate::harness::{Test, TestResult};

pub(super) fn tests() -> Vec<Test> {
    let v: Vec<Test> = tests![
        "kmod":
        killed_process_frees_slabs,
        exit_with_requests_in_flight,
        module_params_cap_pinned_memory,
        unbind_fails_in_flight_and_rebind,
    ];
    v.into_iter()
        .chain(
            // Needs the host to kill pktaccel-device on cue: `cargo xtask
            // test-e2e` gives it a boot of its own and sets the variable.
            std::env::var_os(KILL_TEST_ENV).map(|_| Test {
                name: "kmod::device_killed_while_in_flight",
                run: device_killed_while_in_flight,
            }),
        )
        .collect()
}

/// Set in the guest to enable `kmod::device_killed_while_in_flight`.
const KILL_TEST_ENV: &str = "PKTACCEL_DEVICE_KILL_TEST";
/// Console line on which the host kills pktaccel-device.
const KILL_CUE: &str = pktaccel_abi::console::KILL_DEVICE;

fn killed_process_frees_slabs() -> TestResult {
    wait_pinned_zero()?;
    fn child(fd: i32) -> ! {
        let Ok(d) = Dev::open() else { child_exit(2) };
        let mut maps = Vec::new();
        for (size, caching) in [
            (SLAB_MAX_SIZE, CACHE_UNCACHED),
            (MIB, CACHE_WRITE_COMBINING),
            (SLAB_MIN_SIZE, CACHE_WRITE_BACK),
        ] {
            let Ok(s) = d.alloc(size, caching) else {
                child_exit(3)
            };
            let Ok(m) = Map::of(&d, &s) else {
                child_exit(4)
            };
            m.write(0, b"x");
            maps.push(m);
        }
        child_ready(fd);
        loop {
            std::thread::sleep(Duration::from_secs(1));
        }
    }
    let pid = fork_child(child)?;
    let pinned = debugfs_u64("pinned_bytes")?;
    let want = SLAB_MAX_SIZE + MIB + SLAB_MIN_SIZE;
    // SAFETY: signalling our own child.
    unsafe { libc::kill(pid, libc::SIGKILL) };
    wait_child(pid);
    ensure!(
        pinned == want,
        "child pinned {pinned} bytes, expected {want}"
    );
    wait_pinned_zero()
}

fn exit_with_requests_in_flight() -> TestResult {
    wait_pinned_zero()?;
    fn child(fd: i32) -> ! {
        let Ok(d) = Dev::open() else { child_exit(2) };
        let Ok(s) = d.alloc(SLAB_MAX_SIZE, CACHE_UNCACHED) else {
            child_exit(3)
        };
        let Ok(max) = d.info().map(|i| i.config.max_request_bytes as usize) else {
            child_exit(4)
        };
        let len = max.min(SLAB_MAX_SIZE as usize / 2);
        let segs = [seg_in(s.phys, len), seg_out(s.phys + len as u64, len)];
        let reqs: Vec<IocRequest> = (0..64).map(|i| req(OP_COPY, 0, &segs, i)).collect();
        let (r, _) = d.submit(&reqs, SUBMIT_NONBLOCK);
        if r.is_err_and(|e| e != libc::EAGAIN) {
            child_exit(5);
        }
        child_ready(fd);
        // Exit at once with the requests in flight; the file is released
        // by exit.
        child_exit(0)
    }
    let pid = fork_child(child)?;
    wait_child(pid);
    wait_pinned_zero()?;
    // The device still works.
    let d = Dev::open()?;
    expect_ok(&d.run(&req(OP_NOP, 0, &[], 77), 0)?, "nop after exit")?;
    ensure!(debugfs_u64("in_flight")? == 0, "requests left in flight");
    Ok(())
}

/// Reloads the module with small caps, checks both, and reloads it with
/// the defaults.
fn module_params_cap_pinned_memory() -> TestResult {
    const KO: &str = "/lib/modules/pktaccel.ko";
    ensure!(Path::new(KO).exists(), "{KO} missing in the guest");
    wait_pinned_zero()?;
    sh("rmmod", &["pktaccel"])?;
    let per_file = 2 * MIB;
    let total = 3 * MIB;
    let checked = (|| -> TestResult {
        sh(
            "insmod",
            &[
                KO,
                &format!("max_pinned_per_file={per_file}"),
                &format!("max_pinned_total={total}"),
            ],
        )?;
        let a = Dev::open()?;
        let i = a.info()?;
        ensure!(
            i.max_pinned_per_file == per_file && i.max_pinned_total == total,
            "INFO caps {} / {}",
            i.max_pinned_per_file,
            i.max_pinned_total
        );
        let sa = a
            .alloc(2 * MIB, CACHE_UNCACHED)
            .map_err(|e| format!("a: 2 MiB: {}", errname(e)))?;
        expect_err(
            a.alloc(SLAB_MIN_SIZE, CACHE_UNCACHED),
            libc::ENOMEM,
            "per-file cap",
        )?;
        let b = Dev::open()?;
        b.alloc(MIB, CACHE_UNCACHED)
            .map_err(|e| format!("b: 1 MiB: {}", errname(e)))?;
        expect_err(
            b.alloc(SLAB_MIN_SIZE, CACHE_UNCACHED),
            libc::ENOMEM,
            "total cap",
        )?;
        ensure!(
            b.info()?.pinned_total == total,
            "pinned_total {}",
            b.info()?.pinned_total
        );
        a.free(sa.id).map_err(|e| format!("free: {}", errname(e)))?;
        b.alloc(SLAB_MIN_SIZE, CACHE_UNCACHED)
            .map_err(|e| format!("b: 64 KiB after a's free: {}", errname(e)))?;
        Ok(())
    })();
    let _ = sh("rmmod", &["pktaccel"]);
    sh("insmod", &[KO])?;
    checked?;
    ensure!(Path::new(DEV).exists(), "{DEV} missing after reload");
    wait_pinned_zero()
}

fn unbind_fails_in_flight_and_rebind() -> TestResult {
    let dev = pci_function()?;
    let name = dev
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or("bad PCI path")?
        .to_string();
    let sc = Scratch::new(SLAB_MAX_SIZE, CACHE_UNCACHED)?;
    let len = (sc.dev.info()?.config.max_request_bytes as usize).min(SLAB_MAX_SIZE as usize / 2);
    let segs = [seg_in(sc.phys(0), len), seg_out(sc.phys(len), len)];
    let reqs: Vec<IocRequest> = (0..64).map(|i| req(OP_COPY, 0, &segs, i)).collect();
    let (r, n) = sc.dev.submit(&reqs, SUBMIT_NONBLOCK);
    if let Err(e) = r {
        ensure!(e == libc::EAGAIN, "SUBMIT: {}", errname(e));
    }
    fs::write("/sys/bus/pci/drivers/pktaccel/unbind", &name)
        .map_err(|e| format!("unbind {name}: {e}"))?;
    let rebind = || {
        fs::write("/sys/bus/pci/drivers/pktaccel/bind", &name)
            .map_err(|e| format!("bind {name}: {e}"))
    };
    let check = || -> TestResult {
        // Everything submitted completes (OK if the device got to it first,
        // DEVICE_ERROR otherwise); nothing hangs.
        let comps = sc.dev.reap_n(n as usize)?;
        for c in &comps {
            ensure!(
                c.status == STATUS_OK || c.status == STATUS_DEVICE_ERROR,
                "in-flight request ended with {}",
                status_name(c.status)
            );
        }
        let (r, _) = sc.dev.submit(&[req(OP_NOP, 0, &[], 1)], 0);
        expect_err(r, libc::ENODEV, "submit after unbind")?;
        let (_, revents) = sc.dev.poll(libc::POLLIN, 1000);
        ensure!(
            revents & libc::POLLHUP != 0,
            "poll after unbind: {:#x}",
            revents
        );
        // Slabs and mappings stay usable until closed.
        sc.map.write(0, b"ok");
        ensure!(!Path::new(DEV).exists(), "{DEV} still exists after unbind");
        Ok(())
    };
    let checked = check();
    drop(sc);
    rebind()?;
    checked?;
    ensure!(Path::new(DEV).exists(), "{DEV} missing after rebind");
    let d = Dev::open()?;
    expect_ok(&d.run(&req(OP_NOP, 0, &[], 2), 0)?, "nop after rebind")?;
    wait_pinned_zero()
}

/// The device process dies with requests in flight: they complete with
/// STATUS_DEVICE_ERROR once the driver's watchdog (request_timeout_ms)
/// gives up on the device, the waiter wakes, new submits fail with ENODEV,
/// poll reports POLLHUP, the slabs are freed on close and rmmod works.
fn device_killed_while_in_flight() -> TestResult {
    use std::io::Write;
    let sc = Scratch::new(SLAB_MAX_SIZE, CACHE_UNCACHED)?;
    let len = (sc.dev.info()?.config.max_request_bytes as usize).min(SLAB_MAX_SIZE as usize / 2);
    let segs = [seg_in(sc.phys(0), len), seg_out(sc.phys(len), len)];
    let reqs: Vec<IocRequest> = (0..32).map(|i| req(OP_COPY, 0, &segs, i)).collect();
    println!("{KILL_CUE}");
    let _ = std::io::stdout().flush();
    // A second file submits once the device is gone and closes without
    // reaping: its release must notice the dead device and free its slab.
    let closer = std::thread::spawn(|| -> Result<Duration, String> {
        let b = Scratch::new(SLAB_MIN_SIZE, CACHE_UNCACHED)?;
        std::thread::sleep(Duration::from_secs(2));
        let segs = [seg_in(b.phys(0), 4096), seg_out(b.phys(4096), 4096)];
        let (r, _) = b.dev.submit(&[req(OP_COPY, 0, &segs, 1)], 0);
        r.map_err(|e| format!("second file: SUBMIT: {}", errname(e)))?;
        let t = Instant::now();
        drop(b);
        Ok(t.elapsed())
    });
    let start = Instant::now();
    let mut device_errors = 0;
    let mut ok = 0u64;
    while device_errors == 0 {
        ensure!(
            start.elapsed() < Duration::from_secs(120),
            "no STATUS_DEVICE_ERROR within 120 s ({ok} requests completed)"
        );
        let (r, n) = sc.dev.submit(&reqs, 0);
        match r {
            Ok(()) => {}
            Err(e) if e == libc::ENODEV => break,
            Err(e) => return Err(format!("SUBMIT: {}", errname(e))),
        }
        let mut left = n as usize;
        while left > 0 {
            // Blocks without a timeout: only the driver can wake us.
            let got = sc
                .dev
                .reap(MAX_BATCH, -1)
                .map_err(|e| format!("REAP: {}", errname(e)))?;
            left -= got.len();
            for c in got {
                match c.status {
                    STATUS_OK => ok += 1,
                    STATUS_DEVICE_ERROR => device_errors += 1,
                    s => return Err(format!("completion status {}", status_name(s))),
                }
            }
        }
    }
    println!(
        "kmod: {ok} requests completed, then {device_errors} failed with device-error after {:?}",
        start.elapsed()
    );
    let closed_in = closer
        .join()
        .map_err(|_| "second file's thread panicked".to_string())??;
    println!("kmod: closing a file with a request in flight took {closed_in:?}");
    let (r, _) = sc.dev.submit(&reqs[..1], 0);
    expect_err(r, libc::ENODEV, "submit to a dead device")?;
    let (_, revents) = sc.dev.poll(libc::POLLIN, 1000);
    ensure!(
        revents & libc::POLLHUP != 0,
        "poll on a dead device: {:#x}",
        revents
    );
    ensure!(
        debugfs_stats()?.get("device").map(String::as_str) == Some("dead"),
        "debugfs does not say dead"
    );
    drop(sc);
    wait_pinned_zero()?;
    let out = std::process::Command::new("rmmod")
        .arg("pktaccel")
        .output()
        .map_err(|e| format!("rmmod: {e}"))?;
    ensure!(
        out.status.success(),
        "rmmod pktaccel: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}
