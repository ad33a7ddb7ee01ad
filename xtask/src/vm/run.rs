//! Running QEMU and following its console: on the terminal (interactive),
//! or captured line by line with a timeout, fault cues passed to the
//! device's control socket, and the device watched for an early death.

use std::io::BufRead;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::Ordering;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use pktaccel_abi::console;

use crate::deps::file_tail;
use crate::initramfs::Mode;
use crate::step::fmt_duration;

use super::guard::{Guard, INTERRUPTED, tie_to_parent};
use super::{BootLogs, ConsoleSink, Outcome};

/// Runs QEMU with the console on the terminal until the user leaves it.
pub(super) fn run_interactive(
    mut q: Command,
    guard: &mut Guard,
    logs: BootLogs,
) -> Result<Outcome> {
    let console_log = logs.console;
    q.arg("-chardev")
        .arg(format!(
            "stdio,id=con,mux=on,signal=off,logfile={}",
            console_log.display()
        ))
        .args([
            "-serial",
            "chardev:con",
            "-mon",
            "chardev=con,mode=readline",
        ]);
    tie_to_parent(&mut q, false);
    eprintln!(
        "    console log: {}  (leave the guest with 'exit', or Ctrl-A X)",
        console_log.display()
    );
    let child = q.spawn().context("cannot start QEMU")?;
    guard.children.push(("qemu", child));
    let status = loop {
        if INTERRUPTED.load(Ordering::SeqCst) {
            guard.stop_all();
            bail!("interrupted: QEMU and pktaccel-device stopped");
        }
        if let Some(status) = guard.child("qemu")?.try_wait()? {
            break status;
        }
        check_device_alive(guard, &logs.device)?;
        std::thread::sleep(Duration::from_millis(50));
    };
    if !status.success() {
        bail!(
            "QEMU exited with {status}; its log ({}):\n{}",
            logs.qemu.display(),
            file_tail(&logs.qemu, 20)
        );
    }
    Ok(Outcome {
        guest_status: Some(0),
        console_log,
    })
}

/// Starts QEMU with the console piped to a thread that sends it line by line.
pub(super) fn spawn_captured(mut q: Command, guard: &mut Guard) -> Result<mpsc::Receiver<String>> {
    q.args(["-serial", "stdio"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped());
    tie_to_parent(&mut q, true);
    let mut child = q.spawn().context("cannot start QEMU")?;
    let stdout = child.stdout.take().context("no QEMU stdout")?;
    guard.children.push(("qemu", child));
    let (tx, rx) = mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).split(b'\n') {
            let Ok(line) = line else { break };
            let text = String::from_utf8_lossy(&line)
                .trim_end_matches('\r')
                .to_string();
            if tx.send(text).is_err() {
                break;
            }
        }
    });
    Ok(rx)
}

/// The last console lines, indented for an error message.
pub(super) fn indented(tail: &std::collections::VecDeque<String>) -> String {
    tail.iter()
        .map(|l| format!("    | {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Runs QEMU with the console captured: logs every line, answers the
/// guest's cues (exit status, fault control, device kill) and feeds `sink`.
pub(super) fn run_captured(
    q: Command,
    guard: &mut Guard,
    mode: &Mode,
    timeout: Option<Duration>,
    sink: &mut dyn ConsoleSink,
    fault_ctl: &Path,
    logs: BootLogs,
) -> Result<Outcome> {
    use std::io::Write;
    let console_log = logs.console;
    let rx = spawn_captured(q, guard)?;
    let mut log = std::io::BufWriter::new(std::fs::File::create(&console_log)?);
    let started = Instant::now();
    let mut guest_status = None;
    let mut tail: std::collections::VecDeque<String> = Default::default();
    loop {
        if INTERRUPTED.load(Ordering::SeqCst) {
            guard.stop_all();
            bail!(
                "interrupted: QEMU and pktaccel-device stopped; console log: {}",
                console_log.display()
            );
        }
        if let Some(t) = timeout
            && started.elapsed() > t
        {
            guard.stop_all();
            bail!(
                "the guest did not finish within {} (hung?); QEMU and the device were stopped.\n  console log: {}\n{}",
                fmt_duration(t),
                console_log.display(),
                indented(&tail)
            );
        }
        match rx.recv_timeout(Duration::from_millis(50)) {
            Ok(line) => {
                let _ = writeln!(log, "{line}");
                if let Some(rc) = console::after(&line, console::EXIT) {
                    guest_status = rc.trim().parse().ok();
                }
                if let Some(cmd) = console::after(line.trim(), console::FAULT) {
                    let answer = fault_control(fault_ctl, cmd);
                    let _ = writeln!(log, "[host] fault control: {cmd} -> {answer}");
                }
                if matches!(mode, Mode::DeviceKill) && line.trim() == console::KILL_DEVICE {
                    guard.kill_device_on_cue();
                    let _ = writeln!(log, "[host] pktaccel-device killed on the guest's cue");
                }
                tail.push_back(line.clone());
                if tail.len() > 30 {
                    tail.pop_front();
                }
                sink.line(&line);
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {
                if matches!(mode, Mode::FaultDeath) && guard.forget_device_exited_with(3) {
                    let _ = writeln!(log, "[host] pktaccel-device died of its injected fault");
                }
                check_device_alive(guard, &logs.device)?;
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
    }
    let status = guard.child("qemu")?.wait()?;
    let _ = log.flush();
    if guest_status.is_none() {
        bail!(
            "QEMU exited ({status}) before the guest finished.\n  QEMU log ({}):\n{}\n  console log ({}):\n{}",
            logs.qemu.display(),
            file_tail(&logs.qemu, 15),
            console_log.display(),
            indented(&tail)
        );
    }
    Ok(Outcome {
        guest_status,
        console_log,
    })
}

/// Sends one command to the device's fault control socket; returns its
/// answer lines joined, or what went wrong.
pub(super) fn fault_control(path: &Path, cmd: &str) -> String {
    use std::io::{BufRead, Write};
    let talk = || -> std::io::Result<String> {
        let s = std::os::unix::net::UnixStream::connect(path)?;
        s.set_read_timeout(Some(Duration::from_secs(5)))?;
        (&s).write_all(format!("{}\n", cmd.trim()).as_bytes())?;
        let mut out = Vec::new();
        for line in std::io::BufReader::new(&s).lines() {
            let line = line?;
            let last = line.starts_with("ok") || line.starts_with("error:");
            out.push(line);
            if last {
                break;
            }
        }
        Ok(out.join(" | "))
    };
    talk().unwrap_or_else(|e| format!("cannot reach {}: {e}", path.display()))
}

pub(super) fn check_device_alive(guard: &mut Guard, device_log: &Path) -> Result<()> {
    if let Some((_, c)) = guard
        .children
        .iter_mut()
        .find(|(n, _)| *n == "pktaccel-device")
        && let Some(status) = c.try_wait()?
    {
        // With --once the device exits when QEMU disconnects at power-off;
        // that is only an error while QEMU still runs.
        let qemu_running = guard
            .children
            .iter_mut()
            .any(|(n, c)| *n == "qemu" && matches!(c.try_wait(), Ok(None)));
        if qemu_running && !status.success() {
            guard.stop_all();
            bail!(
                "pktaccel-device died ({status}) while the guest was running; its log ({}):\n{}",
                device_log.display(),
                file_tail(device_log, 20)
            );
        }
    }
    Ok(())
}
