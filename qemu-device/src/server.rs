//! The listening socket and the connection loop: one vhost-user frontend
//! (QEMU) at a time, a fresh device per connection (like a hardware reset:
//! key slots are cleared), counters kept across connections.

use std::io;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use tracing::{info, warn};
use vhost::vhost_user::Listener;
use vhost_user_backend::{ShutdownHandle, VhostUserDaemon};
use vm_memory::{GuestMemoryAtomic, GuestMemoryMmap};

use crate::backend::PktAccelBackend;
use crate::completion::CompletionHook;
use crate::config::DeviceOptions;
use crate::faults::Faults;
use crate::stats::Stats;

/// Why the server could not start or keep serving.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// Another live process accepts connections on the path.
    #[error("another pktaccel-device is serving {0}")]
    InUse(PathBuf),
    /// Something that is not a socket is in the way.
    #[error("{0} exists and is not a socket; refusing to replace it")]
    NotASocket(PathBuf),
    /// Creating, binding or chmod-ing the socket failed.
    #[error("cannot create socket {path} (does its directory exist and is it writable?)")]
    Socket {
        /// The socket path.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// The vhost-user library failed to set up a connection.
    #[error("vhost-user: {0}")]
    Daemon(String),
}

/// Binds `path` with mode 0600. A live socket there is an error; a stale
/// one (nobody accepts on it) is replaced.
pub fn bind_socket(path: &Path) -> Result<UnixListener, ServeError> {
    let sock_err = |source| ServeError::Socket {
        path: path.to_owned(),
        source,
    };
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => {
            if UnixStream::connect(path).is_ok() {
                return Err(ServeError::InUse(path.to_owned()));
            }
            info!(path = %path.display(), "replacing stale socket");
            std::fs::remove_file(path).map_err(sock_err)?;
        }
        Ok(_) => return Err(ServeError::NotASocket(path.to_owned())),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(sock_err(e)),
    }
    let listener = UnixListener::bind(path).map_err(sock_err)?;
    // The socket is created with the umask's mode; tighten it before anyone
    // could plausibly connect (QEMU runs as the same user).
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(sock_err)?;
    Ok(listener)
}

/// Lets another thread (a signal handler thread, a test) stop a running
/// [`Server`].
#[derive(Clone, Default)]
pub struct Stopper {
    stop: Arc<AtomicBool>,
    current: Arc<Mutex<Option<ShutdownHandle>>>,
    path: Arc<Mutex<Option<PathBuf>>>,
}

impl std::fmt::Debug for Stopper {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stopper")
            .field("stopped", &self.stopped())
            .finish()
    }
}

impl Stopper {
    /// Asks the server to finish: the current connection is shut down and
    /// no new one is accepted.
    pub fn stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
        let handle = self
            .current
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        match handle {
            Some(h) => h.shutdown(),
            None => {
                // Wake a blocking accept() by connecting to ourselves.
                if let Some(p) = self.path.lock().unwrap_or_else(|e| e.into_inner()).as_ref() {
                    let _ = UnixStream::connect(p);
                }
            }
        }
    }

    /// True once [`stop`](Self::stop) was called.
    pub fn stopped(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }
}

/// The device server on one socket path.
pub struct Server {
    path: PathBuf,
    listener: Listener,
    opts: DeviceOptions,
    stats: Arc<Stats>,
    stopper: Stopper,
    hook: Option<Arc<dyn CompletionHook>>,
    faults: Arc<Faults>,
}

impl Server {
    /// Binds the socket (see [`bind_socket`]).
    pub fn bind(path: &Path, opts: DeviceOptions) -> Result<Self, ServeError> {
        let listener = Listener::from(bind_socket(path)?);
        let stats = Arc::new(Stats::new(opts.num_queues as usize));
        let stopper = Stopper::default();
        *stopper.path.lock().unwrap_or_else(|e| e.into_inner()) = Some(path.to_owned());
        Ok(Self {
            path: path.to_owned(),
            listener,
            opts,
            stats,
            stopper,
            hook: None,
            faults: Arc::new(Faults::new()),
        })
    }

    /// Injects `faults` into every connection's device from now on: as the
    /// completion hook, and for interrupts and ring stops. Their fired
    /// counters join the stats.
    pub fn set_faults(&mut self, faults: Arc<Faults>) {
        self.stats.attach_faults(faults.clone());
        self.set_completion_hook(faults.clone());
        self.faults = faults;
    }

    /// Has every connection's device consult `hook` before publishing each
    /// completion (fault injection; see [`crate::completion`]).
    pub fn set_completion_hook(&mut self, hook: Arc<dyn CompletionHook>) {
        self.hook = Some(hook);
    }

    /// The counters, shared with every connection's device.
    pub fn stats(&self) -> Arc<Stats> {
        self.stats.clone()
    }

    /// A handle to stop [`serve`](Self::serve) from another thread.
    pub fn stopper(&self) -> Stopper {
        self.stopper.clone()
    }

    /// Serves frontends one after another until stopped, or after the first
    /// one disconnects when `once` is set. A frontend vanishing mid-traffic
    /// is logged and is not an error.
    pub fn serve(&mut self, once: bool) -> Result<(), ServeError> {
        let mut connection = 0u64;
        while !self.stopper.stopped() {
            let mem = GuestMemoryAtomic::new(GuestMemoryMmap::new());
            let backend = PktAccelBackend::with_faults(
                self.opts.clone(),
                mem.clone(),
                self.stats.clone(),
                self.hook.clone(),
                self.faults.clone(),
            );
            let mut daemon = VhostUserDaemon::new("pktaccel-device".into(), backend.clone(), mem)
                .map_err(|e| ServeError::Daemon(e.to_string()))?;
            info!(path = %self.path.display(), "waiting for a vhost-user frontend");
            daemon
                .start(&mut self.listener)
                .map_err(|e| ServeError::Daemon(e.to_string()))?;
            connection += 1;
            if self.stopper.stopped() {
                daemon.request_shutdown();
                let _ = daemon.wait();
                break;
            }
            *self
                .stopper
                .current
                .lock()
                .unwrap_or_else(|e| e.into_inner()) = daemon.shutdown_handle();
            // stop() sets the flag before it looks for a connection to shut
            // down; we published the connection before looking at the flag:
            // one of the two sees the other, so no stop request is lost.
            if self.stopper.stopped() {
                daemon.request_shutdown();
            }
            info!(connection, "frontend connected");
            match daemon.wait() {
                Ok(()) => info!(connection, "frontend disconnected"),
                Err(e) if backend.negotiated() => {
                    warn!(connection, error = %e, "frontend connection ended")
                }
                Err(e) => info!(connection, error = %e, "frontend connection ended"),
            }
            *self
                .stopper
                .current
                .lock()
                .unwrap_or_else(|e| e.into_inner()) = None;
            // Dropping the daemon stops and joins this connection's workers.
            drop(daemon);
            if !backend.negotiated() {
                // A liveness probe (or a frontend that died at once): not the
                // session --once waits for.
                info!(connection, "connection closed without a vhost-user message");
                continue;
            }
            if once {
                break;
            }
        }
        Ok(())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}
