//! The fault control socket: a line protocol beside the vhost-user socket
//! (`<socket>.ctl` by default) that changes faults without a restart.
//!
//! ```text
//! list            one line per fault "ID SPEC fired=N", then "ok N faults"
//! add SPEC        "ok ID"
//! del ID          "ok"
//! clear           "ok N removed"
//! help            the commands, then "ok"
//! ```
//!
//! Every answer ends with one line starting `ok` or `error:`; a bad command
//! changes nothing, so the device keeps the faults it had.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tracing::{info, warn};

use super::{Faults, spec};
use crate::server::{ServeError, bind_socket};

/// Longest command line accepted.
pub const MAX_LINE: usize = 4096;

const HELP: &str = "commands: list, add SPEC, del ID, clear, help";

/// Runs one command line against `faults`; returns the answer lines (the
/// last starts with `ok` or `error:`).
pub fn execute(faults: &Faults, line: &str) -> Vec<String> {
    let line = line.trim();
    let (cmd, arg) = match line.split_once(char::is_whitespace) {
        Some((c, a)) => (c, a.trim()),
        None => (line, ""),
    };
    if matches!(cmd, "list" | "clear" | "help") && !arg.is_empty() {
        return vec![format!(
            "error: \"{cmd}\" takes no argument (got \"{arg}\")"
        )];
    }
    match cmd {
        "" => vec![format!("error: empty command ({HELP})")],
        "list" => {
            let list = faults.list();
            let mut out: Vec<String> = list.iter().map(|f| f.to_string()).collect();
            out.push(format!("ok {} faults", list.len()));
            out
        }
        "add" if arg.is_empty() => {
            vec!["error: \"add\" needs a SPEC, e.g. add drop,queue=0".into()]
        }
        "add" => match spec::parse(arg) {
            Ok(s) => {
                let text = s.text.clone();
                let id = faults.add(s);
                info!(id, spec = %text, "fault added");
                vec![format!("ok {id}")]
            }
            Err(e) => vec![format!("error: {e}")],
        },
        "del" | "remove" => match arg.parse::<u32>() {
            Ok(id) if faults.remove(id) => {
                info!(id, "fault removed");
                vec!["ok".into()]
            }
            Ok(id) => vec![format!("error: no fault {id} (\"list\" shows the ids)")],
            Err(_) => vec![format!(
                "error: \"{cmd}\" needs a fault id, got \"{arg}\" (\"list\" shows the ids)"
            )],
        },
        "clear" => {
            let n = faults.clear();
            info!(removed = n, "faults cleared");
            vec![format!("ok {n} removed")]
        }
        "help" => vec![
            HELP.into(),
            "SPEC: KIND[,KEY=VALUE...]; see docs/datasheet.md, \"Fault injection\"".into(),
            "ok".into(),
        ],
        _ => vec![format!("error: unknown command \"{cmd}\" ({HELP})")],
    }
}

/// Serves one client until it hangs up; a malformed line is answered and
/// the next one read.
fn serve_client(faults: &Faults, stream: UnixStream) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut out = stream.try_clone()?;
    let mut r = BufReader::new(stream);
    let mut buf = Vec::new();
    loop {
        buf.clear();
        let n = (&mut r)
            .take(MAX_LINE as u64 + 1)
            .read_until(b'\n', &mut buf)?;
        if n == 0 {
            return Ok(());
        }
        let answer = if buf.len() > MAX_LINE && !buf.ends_with(b"\n") {
            // Skip the rest of the over-long line.
            let mut rest = Vec::new();
            (&mut r).take(1 << 20).read_until(b'\n', &mut rest)?;
            vec![format!("error: line longer than {MAX_LINE} bytes")]
        } else {
            match std::str::from_utf8(&buf) {
                Ok(line) => execute(faults, line),
                Err(_) => vec!["error: the command is not UTF-8 text".into()],
            }
        };
        for line in answer {
            writeln!(out, "{line}")?;
        }
    }
}

/// The control socket's listening thread; dropping it stops the thread and
/// removes the socket file.
#[derive(Debug)]
pub struct ControlSocket {
    path: PathBuf,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl ControlSocket {
    /// Binds `path` (mode 0600; a stale socket is replaced, a live one is
    /// an error) and serves clients one at a time on a thread.
    pub fn spawn(path: &Path, faults: Arc<Faults>) -> Result<Self, ServeError> {
        let listener: UnixListener = bind_socket(path)?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("fault-control".into())
            .spawn(move || {
                for conn in listener.incoming() {
                    if flag.load(Ordering::SeqCst) {
                        break;
                    }
                    match conn {
                        Ok(s) => {
                            if let Err(e) = serve_client(&faults, s) {
                                warn!(error = %e, "fault control client dropped");
                            }
                        }
                        Err(e) => warn!(error = %e, "fault control accept failed"),
                    }
                }
            })
            .map_err(|e| {
                ServeError::Daemon(format!("cannot start the fault control thread: {e}"))
            })?;
        Ok(Self {
            path: path.to_owned(),
            stop,
            thread: Some(thread),
        })
    }

    /// The socket path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for ControlSocket {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake accept(). Not joined: a client being served (at most 30 s
        // idle) must not hold up the daemon's exit.
        let _ = UnixStream::connect(&self.path);
        drop(self.thread.take());
        let _ = std::fs::remove_file(&self.path);
    }
}

/// The default control socket path for a vhost-user socket path.
pub fn default_path(socket: &Path) -> PathBuf {
    let mut p = socket.as_os_str().to_owned();
    p.push(".ctl");
    PathBuf::from(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn last(v: &[String]) -> &str {
        v.last().map(String::as_str).unwrap_or("")
    }

    /// Each malformed command gets one `error:` line naming the bad part,
    /// and the faults are unchanged.
    #[test]
    fn bad_commands_change_nothing() {
        let f = Faults::from_specs(&["drop,queue=1"]).unwrap();
        let cases: &[(&str, &str)] = &[
            ("", "empty command"),
            ("   ", "empty command"),
            ("frobnicate", "unknown command \"frobnicate\""),
            ("LIST", "unknown command \"LIST\""),
            ("list all", "\"list\" takes no argument (got \"all\")"),
            ("clear now", "\"clear\" takes no argument"),
            ("help me", "\"help\" takes no argument"),
            ("add", "\"add\" needs a SPEC"),
            ("add   ", "\"add\" needs a SPEC"),
            ("add explode", "unknown fault \"explode\""),
            ("add status=fine", "unknown status \"fine\""),
            ("add drop,rate=7", "rate \"7\""),
            ("del", "needs a fault id, got \"\""),
            ("del one", "needs a fault id, got \"one\""),
            ("del -1", "needs a fault id, got \"-1\""),
            ("del 99", "no fault 99"),
            ("remove 0", "no fault 0"),
        ];
        for (cmd, want) in cases {
            let a = execute(&f, cmd);
            assert_eq!(a.len(), 1, "{cmd:?}: {a:?}");
            assert!(
                a[0].starts_with("error: ") && a[0].contains(want),
                "{cmd:?}: {a:?}"
            );
            assert_eq!(f.counts(), vec![("drop,queue=1".to_string(), 0)], "{cmd:?}");
        }
    }

    #[test]
    fn commands_work() {
        let f = Faults::new();
        assert_eq!(execute(&f, "add drop, queue=0"), ["ok 1"]);
        assert_eq!(execute(&f, "add status=no-key,count=1\n"), ["ok 2"]);
        assert_eq!(
            execute(&f, "list"),
            [
                "1 drop, queue=0 fired=0",
                "2 status=no-key,count=1 fired=0",
                "ok 2 faults"
            ]
        );
        assert_eq!(execute(&f, "del 1"), ["ok"]);
        assert_eq!(last(&execute(&f, "help")), "ok");
        assert_eq!(execute(&f, "clear"), ["ok 1 removed"]);
        assert_eq!(execute(&f, "list"), ["ok 0 faults"]);
    }

    fn ask(stream: &UnixStream, cmd: &[u8]) -> String {
        (&*stream).write_all(cmd).unwrap();
        let mut r = BufReader::new(stream);
        let mut l = String::new();
        r.read_line(&mut l).unwrap();
        l
    }

    #[test]
    fn over_a_real_socket() {
        let dir = std::env::temp_dir().join(format!("pktaccel-ctl-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("dev.sock.ctl");
        let faults = Arc::new(Faults::new());
        let ctl = ControlSocket::spawn(&path, faults.clone()).unwrap();
        {
            let s = UnixStream::connect(ctl.path()).unwrap();
            assert_eq!(ask(&s, b"add lose-irq\n"), "ok 1\n");
            let e = ask(&s, b"add lose-irq,rate=x\n");
            assert!(
                e.starts_with("error: bad fault spec") && e.contains("rate \"x\""),
                "{e}"
            );
            assert_eq!(
                ask(&s, b"\xff\xfe\n"),
                "error: the command is not UTF-8 text\n"
            );
            let mut long = vec![b'a'; MAX_LINE + 10];
            long.push(b'\n');
            assert_eq!(
                ask(&s, &long),
                format!("error: line longer than {MAX_LINE} bytes\n")
            );
            assert_eq!(ask(&s, b"list\n"), "1 lose-irq fired=0\n");
        }
        assert!(faults.lose_interrupt(0), "kept across bad commands");
        // A second client, after the first hung up.
        let s = UnixStream::connect(ctl.path()).unwrap();
        assert_eq!(ask(&s, b"del 1\n"), "ok\n");
        assert!(!faults.active());
        drop(s);
        drop(ctl);
        assert!(!path.exists(), "socket removed on drop");
        std::fs::remove_dir_all(&dir).ok();
    }
}
