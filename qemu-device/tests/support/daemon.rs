//! The daemon process: spawning it on a private socket, its log, signals,
//! and the counters it prints.

use super::*;

static NEXT_ID: AtomicU32 = AtomicU32::new(0);

/// A running `pktaccel-device` process.
pub struct Daemon {
    child: Child,
    /// The vhost-user socket.
    pub path: PathBuf,
    dir: PathBuf,
    log: Arc<Mutex<String>>,
}

impl Daemon {
    /// Starts the daemon with extra `args` and waits for its socket.
    pub fn spawn(args: &[&str]) -> Daemon {
        let dir = std::env::temp_dir().join(format!(
            "pktaccel-dev-{}-{}",
            std::process::id(),
            NEXT_ID.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("dev.sock");
        Self::spawn_at(&path, args, dir)
    }

    /// Starts the daemon on `path` (no readiness wait if the socket is taken).
    pub fn spawn_at(path: &Path, args: &[&str], dir: PathBuf) -> Daemon {
        let mut child = Command::new(env!("CARGO_BIN_EXE_pktaccel-device"))
            .arg("--socket")
            .arg(path)
            .args(args)
            .args(["--log-level", "info"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start pktaccel-device");
        let log = Arc::new(Mutex::new(String::new()));
        let stderr = child.stderr.take().unwrap();
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let mut l = sink.lock().unwrap();
                l.push_str(&line);
                l.push('\n');
            }
        });
        let d = Daemon {
            child,
            path: path.to_owned(),
            dir,
            log,
        };
        d.wait_for_log("waiting for a vhost-user frontend", 0);
        d
    }

    /// Everything the daemon wrote to stderr so far.
    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// Waits until `needle` occurs in the log more than `seen` times.
    pub fn wait_for_log(&self, needle: &str, seen: usize) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.log().matches(needle).count() <= seen {
            assert!(
                Instant::now() < deadline,
                "daemon never logged {needle:?}; log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// CPU time (user + system) the daemon has used so far, in seconds.
    pub fn cpu_seconds(&self) -> f64 {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.child.id())).unwrap();
        // Fields after the parenthesised command name; utime and stime are
        // fields 14 and 15 of the whole line.
        let rest = &stat[stat.rfind(')').unwrap() + 2..];
        let f: Vec<&str> = rest.split_whitespace().collect();
        let ticks: f64 = f[11].parse::<f64>().unwrap() + f[12].parse::<f64>().unwrap();
        // SAFETY: sysconf has no preconditions.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
        ticks / hz
    }

    /// The daemon's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends a signal to the daemon.
    pub fn signal(&self, sig: libc::c_int) {
        // SAFETY: kill() on our own child's pid has no memory-safety
        // preconditions; the child has not been reaped, so the pid is ours.
        unsafe { libc::kill(self.child.id() as libc::pid_t, sig) };
    }

    /// Asks for the counters (SIGUSR1) and parses the dump.
    pub fn stats(&self) -> HashMap<String, u64> {
        let before = self.log().matches("pktaccel-device stats:").count();
        self.signal(libc::SIGUSR1);
        self.wait_for_log("bad ring heads", before);
        parse_stats(&self.log())
    }

    /// Waits for the process to exit by itself.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                return Some(st);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// SIGTERM, then the exit status.
    pub fn stop(mut self) -> ExitStatus {
        self.signal(libc::SIGTERM);
        self.wait_exit(Duration::from_secs(10))
            .expect("daemon did not exit on SIGTERM")
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Parses the last stats dump: `op.<name>.requests`, `op.<name>.bytes`,
/// `status.<name>`, `no_status`, `bad_head`.
pub fn parse_stats(log: &str) -> HashMap<String, u64> {
    let mut m = HashMap::new();
    let Some(start) = log.rfind("pktaccel-device stats:") else {
        return m;
    };
    for line in log[start..].lines().skip(1) {
        let w: Vec<&str> = line.split_whitespace().collect();
        match w.as_slice() {
            ["op", name, "requests", r, "bytes", b] => {
                m.insert(format!("op.{name}.requests"), r.parse().unwrap());
                m.insert(format!("op.{name}.bytes"), b.parse().unwrap());
            }
            ["status", name, n] => {
                m.insert(format!("status.{name}"), n.parse().unwrap());
            }
            ["no-status", "chains", n] => {
                m.insert("no_status".into(), n.parse().unwrap());
            }
            ["spins", "(hits)", n, hits] => {
                m.insert("spins".into(), n.parse().unwrap());
                m.insert("spin_hits".into(), hits.parse().unwrap());
            }
            ["busy", "ns", n] => {
                m.insert("busy_ns".into(), n.parse().unwrap());
            }
            ["broken", "queues", n] => {
                m.insert("broken".into(), n.parse().unwrap());
            }
            ["bad", "ring", "heads", n] => {
                m.insert("bad_head".into(), n.parse().unwrap());
                break;
            }
            ["fault", ..] => {}
            _ => break,
        }
    }
    m
}
