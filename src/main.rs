//! The `xtcp` command: serve (echo, http), generate load, inspect a running xtcp (stat), or watch the simulated
//! demo — on xtcp's own stack over AF_XDP or, for comparison, on the kernel's.

mod cli;
#[cfg(all(feature = "afxdp", target_os = "linux"))]
#[path = "cli/reflect.rs"]
mod reflect;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};

use cli::{duration_in, number_in, NetArgs};

/// The largest `xtcp http --body-bytes`: the body is built in memory at start.
const BODY_BYTES_MAX: u64 = 1 << 30;
/// The smallest `--max-header-bytes`: a request line and a Host header fit.
const HEADER_BYTES_MIN: u64 = 256;
/// The largest `--max-header-bytes`.
const HEADER_BYTES_MAX: u64 = 1 << 20;

/// xtcp: a kernel-bypass TCP/IP stack.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Watch one connection's life: handshake, data, teardown and TIME_WAIT, segment by segment.
    Demo {
        /// Run over the in-memory simulated link.
        #[arg(long, required = true)]
        sim: bool,
        /// Write the client's frames to this pcap file (tcpdump -nr FILE reads it).
        #[arg(long, value_name = "FILE")]
        pcap: Option<PathBuf>,
        /// Frames lost on each side's transmit path, per mille (0-1000).
        #[arg(long, default_value_t = 0, value_parser = number_in::<u32>(0, 1000))]
        loss: u32,
        /// Seed for the stacks and the faults: the same seed replays the same run.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// One-way link latency in milliseconds (0-10000).
        #[arg(long, default_value_t = 1, value_parser = number_in::<u64>(0, 10_000))]
        latency_ms: u64,
        /// Maximum segment lifetime in seconds (1-900); TIME_WAIT lasts twice this.
        #[arg(long, default_value_t = 30, value_parser = number_in::<u64>(1, 900))]
        msl_secs: u64,
        /// What the client says.
        #[arg(long, default_value = "hello, xtcp")]
        message: String,
    },
    /// Echo server: every byte received goes back.
    Echo {
        #[command(flatten)]
        net: NetArgs,
        /// The port to listen on.
        #[arg(long, default_value_t = 7, value_parser = number_in::<u16>(1, u16::MAX.into()))]
        port: u16,
        /// Read and drop instead of echoing (a discard server, RFC 863): the far end of `xtcp load --mode send`.
        #[arg(long)]
        discard: bool,
    },
    /// HTTP/1.1 server: a fixed body (or a directory of static files) for GET and HEAD, keep-alive, pipelining.
    Http {
        #[command(flatten)]
        net: NetArgs,
        /// The port to listen on.
        #[arg(long, default_value_t = 80, value_parser = number_in::<u16>(1, u16::MAX.into()))]
        port: u16,
        /// Size of the body every GET receives, in bytes (when no --dir is given; at most 1 GiB).
        #[arg(long, default_value_t = 600, value_parser = number_in::<usize>(0, BODY_BYTES_MAX))]
        body_bytes: usize,
        /// Serve the files under DIR instead (read into memory at start; 404 for anything else).
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
        /// Requests one connection may make before the server closes it.
        #[arg(long, default_value_t = 10_000, value_parser = number_in::<u32>(1, u32::MAX.into()))]
        max_requests_per_connection: u32,
        /// The largest request head (request line and headers) in bytes, 256 to 1 MiB; larger gets 431.
        #[arg(long, default_value_t = 8192, value_parser = number_in::<usize>(HEADER_BYTES_MIN, HEADER_BYTES_MAX))]
        max_header_bytes: usize,
        /// Close a connection that moves no byte either way for this long (idle between requests, or a slow
        /// client stuck half-way); 0 never does. Up to a day.
        #[arg(long, default_value = "60s", value_parser = duration_in(Duration::ZERO, Duration::from_secs(86_400)))]
        idle_timeout: Duration,
    },
    /// Load generator: echo or HTTP requests over many connections, closed or open loop, latency percentiles.
    Load(cli::load::LoadArgs),
    /// What running xtcp processes do: connections per state (like `ss -tan`), counters, drops by reason.
    Stat(cli::stat::StatArgs),
    /// The raw AF_XDP ceiling, no TCP: bounce frames back with addresses and ports swapped, or ping-pong them.
    #[cfg(all(feature = "afxdp", target_os = "linux"))]
    Reflect(reflect::ReflectArgs),
}

/// Parses the command line; a bad argument is one line on stderr that says what to do, and exit code 2.
fn parse() -> Cli {
    let matches = Cli::command().try_get_matches().and_then(|m| Cli::from_arg_matches(&m));
    match matches {
        Ok(cli) => cli,
        Err(e) if !e.use_stderr() => e.exit(),
        Err(e) => {
            let text = e.render().to_string();
            let said: Vec<&str> = text
                .lines()
                .map(str::trim)
                .take_while(|l| !l.starts_with("Usage:") && !l.starts_with("For more information"))
                .filter(|l| !l.is_empty())
                .collect();
            let sub = std::env::args().nth(1).filter(|a| !a.starts_with('-')).unwrap_or_default();
            let help = if sub.is_empty() { "xtcp --help".to_owned() } else { format!("xtcp {sub} --help") };
            eprintln!("{} — `{help}` explains every flag", said.join(" "));
            std::process::exit(2);
        }
    }
}

fn main() -> ExitCode {
    let cli = parse();
    let (name, result) = match cli.command {
        Command::Demo { sim: _, pcap, loss, seed, latency_ms, msl_secs, message } => {
            let opts = xtcp::app::demo::DemoOptions {
                pcap,
                loss_per_mille: loss,
                seed,
                latency: Duration::from_millis(latency_ms),
                msl: Duration::from_secs(msl_secs),
                message,
            };
            ("demo", xtcp::app::demo::run(&opts, &mut std::io::stdout().lock()).map_err(|e| e.to_string()))
        }
        Command::Echo { net, port, discard: false } => {
            ("echo", cli::serve::serve("echo", &net, port, || xtcp::app::echo::Echo::new(port)))
        }
        Command::Echo { net, port, discard: true } => {
            ("echo", cli::serve::serve("echo", &net, port, || xtcp::app::echo::Echo::discard(port)))
        }
        Command::Http { net, port, body_bytes, dir, max_requests_per_connection, max_header_bytes, idle_timeout } => {
            let limits = (max_requests_per_connection, max_header_bytes, idle_timeout);
            ("http", http(&net, port, body_bytes, dir, limits))
        }
        Command::Load(args) => ("load", cli::load::run(&args)),
        Command::Stat(args) => ("stat", cli::stat::run(&args)),
        #[cfg(all(feature = "afxdp", target_os = "linux"))]
        Command::Reflect(args) => ("reflect", reflect::run(&args)),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtcp {name}: error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn http(
    net: &NetArgs,
    port: u16,
    body_bytes: usize,
    dir: Option<PathBuf>,
    (max_requests_per_connection, max_header_bytes, idle_timeout): (u32, usize, Duration),
) -> Result<(), String> {
    use xtcp::app::files::{FileLimits, StaticFiles};
    use xtcp::app::http::{Http, HttpConfig};
    let body = (0..body_bytes).map(|i| b"xtcp serves this body\n"[i % 22]).collect();
    let mut cfg = HttpConfig::new(port, body);
    cfg.max_requests_per_connection = max_requests_per_connection;
    cfg.max_header_bytes = max_header_bytes;
    cfg.idle_timeout = Some(idle_timeout).filter(|t| !t.is_zero());
    if let Some(dir) = dir {
        let files =
            StaticFiles::load(&dir, FileLimits::default()).map_err(|e| format!("--dir {}: {e}", dir.display()))?;
        println!("xtcp http: {} files, {} bytes from {}", files.len(), files.total_bytes(), dir.display());
        cfg.files = Some(Arc::new(files));
    }
    cli::serve::serve("http", net, port, || Http::new(cfg.clone()))
}
