//! `pktaccel-device`: serve the emulated pktaccel accelerator on a
//! vhost-user socket for QEMU's `vhost-user-test-device-pci`.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use pktaccel_device::config::DeviceOptions;
use pktaccel_device::faults::Faults;
use pktaccel_device::faults::control::{self, ControlSocket};
use pktaccel_device::server::{Server, Stopper};
use pktaccel_device::spin::PollMode;
use pktaccel_device::stats::Stats;
use tracing::info;

/// The emulated pktaccel packet-processing accelerator (a vhost-user backend).
///
/// Start it, then QEMU with
/// `-chardev socket,id=c0,path=PATH -device vhost-user-test-device-pci,chardev=c0,virtio-id=21,num_vqs=N,config_size=32`
/// where N equals --queues (QEMU aborts otherwise) and config_size=32 exposes
/// the device config space (QEMU's default 0 hides it). SIGUSR1 prints the
/// counters; SIGINT/SIGTERM stop.
#[derive(Parser, Debug)]
#[command(version)]
struct Cli {
    /// Path of the vhost-user unix socket to listen on (created with mode 0600).
    #[arg(long)]
    socket: PathBuf,
    /// Number of request queues (one worker thread each); QEMU's num_vqs must match.
    #[arg(long, default_value_t = 1)]
    queues: u32,
    /// Maximum virtqueue size (a power of two).
    #[arg(long, default_value_t = 256)]
    queue_size: u32,
    /// Ops to advertise: comma-separated names (nop, csum, crc32c, crc32, rss,
    /// aes-gcm-seal, aes-gcm-open, copy, key-set, key-clear) or "all".
    #[arg(long, default_value = "all")]
    ops: String,
    /// Spinning on an empty ring before sleeping until the next kick:
    /// "adaptive" (at most about one wake's cost, off while other tasks wait
    /// for a CPU), "off", or a fixed number of microseconds.
    #[arg(long, default_value = "adaptive", value_parser = parse_poll)]
    poll: PollMode,
    /// Same as --poll N (fixed spinning, 0 = off); kept for old scripts.
    #[arg(long, conflicts_with = "poll", hide = true)]
    poll_us: Option<u32>,
    /// Exit when the first frontend disconnects (default: serve reconnections).
    #[arg(long)]
    once: bool,
    /// Inject a fault (repeatable), e.g. `status=device-error,op=csum,rate=0.1`,
    /// `drop,queue=0,count=1`, `delay=1ms..20ms`; see docs/datasheet.md,
    /// "Fault injection". The control socket changes them at run time.
    #[arg(long = "fault", value_name = "SPEC")]
    faults: Vec<String>,
    /// Path of the fault control socket (default: the --socket path + ".ctl").
    #[arg(long, value_name = "PATH")]
    control: Option<PathBuf>,
    /// Log level (error, warn, info, debug, trace) or a tracing filter.
    #[arg(long, default_value = "info")]
    log_level: String,
}

fn parse_poll(s: &str) -> Result<PollMode, String> {
    s.parse()
}

const SIGNALS: [libc::c_int; 3] = [libc::SIGINT, libc::SIGTERM, libc::SIGUSR1];

fn signal_set() -> libc::sigset_t {
    // SAFETY: sigset_t is a plain C bit set for which all-zero is a valid
    // value, and sigemptyset/sigaddset only write into the set we own.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for s in SIGNALS {
            libc::sigaddset(&mut set, s);
        }
        set
    }
}

/// Blocks the signals in this (and every later-spawned) thread, so that only
/// the signal thread's sigwait() receives them.
fn block_signals() -> anyhow::Result<()> {
    let set = signal_set();
    // SAFETY: `set` is a valid, initialised signal set; passing a null old
    // set is allowed.
    let rc = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
    anyhow::ensure!(rc == 0, "pthread_sigmask failed: {rc}");
    Ok(())
}

fn spawn_signal_thread(stopper: Stopper, stats: Arc<Stats>) -> anyhow::Result<()> {
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            let set = signal_set();
            let mut stopping = false;
            loop {
                let mut sig: libc::c_int = 0;
                // SAFETY: `set` is initialised and `sig` is a valid place to
                // store the received signal number.
                if unsafe { libc::sigwait(&set, &mut sig) } != 0 {
                    continue;
                }
                if sig == libc::SIGUSR1 {
                    eprintln!("{}", stats.snapshot());
                    continue;
                }
                if stopping {
                    eprintln!("{}", stats.snapshot());
                    std::process::exit(130);
                }
                stopping = true;
                info!(signal = sig, "shutting down");
                stopper.stop();
                // If a connection does not wind down promptly, do not hang.
                let stats = stats.clone();
                std::thread::spawn(move || {
                    std::thread::sleep(Duration::from_secs(5));
                    eprintln!("{}", stats.snapshot());
                    std::process::exit(1);
                });
            }
        })
        .context("cannot start the signal thread")?;
    Ok(())
}

fn main() {
    if let Err(e) = run() {
        eprintln!("pktaccel-device: error: {e:#}");
        std::process::exit(1);
    }
}

fn run() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_new(&cli.log_level)
        .with_context(|| format!("bad --log-level {:?}", cli.log_level))?;
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let poll = match cli.poll_us {
        Some(us) => us.to_string().parse().map_err(anyhow::Error::msg)?,
        None => cli.poll,
    };
    let opts = DeviceOptions {
        poll,
        ..DeviceOptions::new(cli.queues, cli.queue_size, &cli.ops)?
    };
    let faults = Arc::new(Faults::from_specs(&cli.faults)?);
    block_signals()?;
    let mut server = Server::bind(&cli.socket, opts.clone())?;
    server.set_faults(faults.clone());
    let ctl_path = cli
        .control
        .clone()
        .unwrap_or_else(|| control::default_path(&cli.socket));
    let ctl = ControlSocket::spawn(&ctl_path, faults.clone())
        .with_context(|| format!("fault control socket {}", ctl_path.display()))?;
    spawn_signal_thread(server.stopper(), server.stats())?;
    info!(
        socket = %cli.socket.display(),
        queues = opts.num_queues,
        queue_size = opts.queue_size,
        ops = format_args!("{:#x}", opts.ops),
        once = cli.once,
        control = %ctl.path().display(),
        faults = faults.list().len(),
        "pktaccel-device ready"
    );
    let result = server.serve(cli.once);
    drop(ctl);
    eprintln!("{}", server.stats().snapshot());
    result?;
    Ok(())
}
