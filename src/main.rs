//! The `xtcp` command.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};

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
        #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u32).range(0..=1000))]
        loss: u32,
        /// Seed for the stacks and the faults: the same seed replays the same run.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// One-way link latency in milliseconds.
        #[arg(long, default_value_t = 1)]
        latency_ms: u64,
        /// Maximum segment lifetime in seconds; TIME_WAIT lasts twice this.
        #[arg(long, default_value_t = 30)]
        msl_secs: u64,
        /// What the client says.
        #[arg(long, default_value = "hello, xtcp")]
        message: String,
    },
    /// Echo server over AF_XDP: every byte received goes back.
    #[cfg(all(feature = "afxdp", target_os = "linux"))]
    Echo {
        #[command(flatten)]
        serve: serve::ServeArgs,
        /// The port to listen on.
        #[arg(long, default_value_t = 7)]
        port: u16,
    },
    /// HTTP/1.1 server over AF_XDP: a fixed body for GET and HEAD, keep-alive, pipelining.
    #[cfg(all(feature = "afxdp", target_os = "linux"))]
    Http {
        #[command(flatten)]
        serve: serve::ServeArgs,
        /// The port to listen on.
        #[arg(long, default_value_t = 80)]
        port: u16,
        /// Size of the body every GET receives, in bytes.
        #[arg(long, default_value_t = 600)]
        body_bytes: usize,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Demo { sim: _, pcap, loss, seed, latency_ms, msl_secs, message } => {
            let opts = xtcp::app::demo::DemoOptions {
                pcap,
                loss_per_mille: loss,
                seed,
                latency: Duration::from_millis(latency_ms),
                msl: Duration::from_secs(msl_secs),
                message,
            };
            match xtcp::app::demo::run(&opts, &mut std::io::stdout().lock()) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("xtcp demo: error: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        #[cfg(all(feature = "afxdp", target_os = "linux"))]
        Command::Echo { serve, port } => serve::run("echo", &serve, port, &mut xtcp::app::echo::Echo::new(port)),
        #[cfg(all(feature = "afxdp", target_os = "linux"))]
        Command::Http { serve, port, body_bytes } => {
            let body = (0..body_bytes).map(|i| b"xtcp serves this body\n"[i % 22]).collect();
            let mut app = xtcp::app::http::Http::new(xtcp::app::http::HttpConfig::new(port, body));
            serve::run("http", &serve, port, &mut app)
        }
    }
}

/// Serving an [`xtcp::app::App`] on one interface queue over AF_XDP.
#[cfg(all(feature = "afxdp", target_os = "linux"))]
mod serve {
    use std::net::Ipv4Addr;
    use std::path::PathBuf;
    use std::process::ExitCode;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::sync::Arc;

    use xtcp::app::App;
    use xtcp::engine::run::{run as run_loop, RunOptions};
    use xtcp::engine::{Stack, StackConfig};
    use xtcp::nic::afxdp::{self, BindMode, Steering, XskConfig, XskDevice};
    use xtcp::nic::neigh::Neighbors;
    use xtcp::nic::pcap::{PcapConfig, PcapTap};
    use xtcp::nic::FrameDevice;
    use xtcp::time::Instant;
    use xtcp::wire::EthernetAddress;

    /// Where and how to serve.
    #[derive(Debug, clap::Args)]
    pub struct ServeArgs {
        /// The interface to serve on. xtcp shares its IPv4 address with the kernel, which keeps ARP and ICMP.
        #[arg(long, value_name = "IFACE")]
        iface: String,
        /// The IPv4 address to serve on [default: the interface's first].
        #[arg(long, value_name = "ADDR")]
        ip: Option<Ipv4Addr>,
        /// The receive queue to bind (this single-core server serves one).
        #[arg(long, default_value_t = 0)]
        queue: u32,
        /// AF_XDP bind mode: zero-copy where the driver has it (auto), or forced.
        #[arg(long, value_enum, default_value = "auto")]
        mode: Mode,
        /// Record every frame xtcp receives and sends to FILE (pcap; tcpdump on the interface cannot see them).
        #[arg(long, value_name = "FILE")]
        pcap: Option<PathBuf>,
        /// Seed for the stack's random choices [default: from the system's random source].
        #[arg(long)]
        seed: Option<u64>,
        /// Send every frame to this MAC (aa:bb:cc:dd:ee:ff) instead of the sender's or the neighbour table's.
        #[arg(long, value_name = "MAC", value_parser = parse_mac)]
        next_hop_mac: Option<EthernetAddress>,
    }

    fn parse_mac(s: &str) -> Result<EthernetAddress, String> {
        let bytes: Vec<u8> = s.split(':').filter_map(|h| u8::from_str_radix(h, 16).ok()).collect();
        match (s.split(':').count(), EthernetAddress::from_bytes(&bytes)) {
            (6, Some(mac)) => Ok(mac),
            _ => Err(format!("{s:?} is not a MAC address: write six hex bytes, aa:bb:cc:dd:ee:ff")),
        }
    }

    #[derive(Debug, Clone, Copy, clap::ValueEnum)]
    enum Mode {
        Auto,
        Copy,
        ZeroCopy,
    }

    /// Runs `app` until Ctrl-C (or SIGTERM); a second signal exits at once. Errors are one line.
    pub fn run(name: &str, args: &ServeArgs, port: u16, app: &mut dyn App) -> ExitCode {
        match serve(name, args, port, app) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("xtcp {name}: error: {e}");
                ExitCode::FAILURE
            }
        }
    }

    fn serve(name: &str, args: &ServeArgs, port: u16, app: &mut dyn App) -> Result<(), String> {
        let iface = args.iface.as_str();
        let ifindex = afxdp::interface_index(iface)
            .map_err(|_| format!("no interface named {iface:?} — `ip -br link` lists them"))?;
        if !is_root() {
            return Err(format!("AF_XDP and XDP need root — run `sudo xtcp {name} ...`"));
        }
        let addresses = Neighbors::open()
            .and_then(|mut n| n.interface_addresses(ifindex))
            .map_err(|e| format!("reading {iface}'s addresses over netlink: {e}"))?;
        let ip = match args.ip {
            Some(ip) if addresses.contains(&ip) => ip,
            Some(ip) => {
                return Err(format!("{ip} is not an address of {iface} (it has {addresses:?}) — choose one of those"))
            }
            None => *addresses
                .first()
                .ok_or_else(|| format!("{iface} has no IPv4 address — add one: `ip addr add ADDR/LEN dev {iface}`"))?,
        };
        if kernel_listens_on(port) {
            return Err(format!(
                "port {port} has a kernel listener; xtcp would take its traffic — stop it or choose another --port"
            ));
        }
        let mac = afxdp::interface_mac(iface).map_err(|e| format!("reading {iface}'s MAC address: {e}"))?;
        let steering = Steering::load_and_attach(iface, ip, [port]).map_err(|e| format!("loading XDP: {e}"))?;
        let mode = match args.mode {
            Mode::Auto => BindMode::Auto,
            Mode::Copy => BindMode::Copy,
            Mode::ZeroCopy => BindMode::ZeroCopy,
        };
        let cfg = XskConfig { queue: args.queue, mode, ..XskConfig::default() };
        let xsk = XskDevice::open(iface, &cfg, &steering).map_err(|e| format!("opening AF_XDP on {iface}: {e}"))?;
        let queues = afxdp::interface_rx_queues(iface).unwrap_or(1);
        let mut stack_cfg = StackConfig::new(mac, ip, args.seed.unwrap_or_else(system_seed));
        // The kernel keeps ARP (the XDP program passes it on); replies follow the frames' senders.
        stack_cfg.arp = false;
        stack_cfg.next_hop_mac = args.next_hop_mac;
        let mut stack = Stack::new(stack_cfg, Instant::ZERO);
        let mut dev: Box<dyn FrameDevice> = match &args.pcap {
            Some(path) => {
                let file = std::fs::File::create(path).map_err(|e| format!("creating {}: {e}", path.display()))?;
                Box::new(PcapTap::new(xsk, std::io::BufWriter::new(file), PcapConfig::default()))
            }
            None => Box::new(xsk),
        };
        let stop = Arc::new(AtomicBool::new(false));
        let signals = Arc::new(AtomicUsize::new(0));
        {
            let (stop, signals) = (stop.clone(), signals.clone());
            ctrlc::set_handler(move || {
                if signals.fetch_add(1, Ordering::SeqCst) > 0 {
                    // A second signal: leave now. The XDP program goes with the process (its bpf_link closes).
                    std::process::exit(130);
                }
                stop.store(true, Ordering::SeqCst);
            })
            .map_err(|e| format!("installing the signal handler: {e}"))?;
        }
        println!(
            "xtcp {name}: serving {ip}:{port} on {iface} queue {} ({:?} mode){}; Ctrl-C stops",
            args.queue,
            mode,
            if queues > 1 {
                format!(" — {iface} has {queues} rx queues, only this one is served")
            } else {
                String::new()
            }
        );
        run_loop(&mut stack, dev.as_mut(), app, &stop, RunOptions::default());
        let c = stack.counters();
        println!(
            "xtcp {name}: stopped: {} frames in, {} out, {} connections, {} drops",
            c.rx_frames,
            c.tx_frames,
            c.conns_opened,
            c.total_drops()
        );
        drop(steering);
        Ok(())
    }

    /// A seed from the system's random source (the ISN key and table hashing must not be guessable).
    fn system_seed() -> u64 {
        use std::io::Read;
        let mut b = [0u8; 8];
        match std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut b)) {
            Ok(()) => u64::from_ne_bytes(b),
            Err(_) => {
                std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64)
            }
        }
    }

    /// The effective user is root (read from /proc, no unsafe call).
    fn is_root() -> bool {
        std::fs::read_to_string("/proc/self/status")
            .ok()
            .and_then(|s| s.lines().find(|l| l.starts_with("Uid:")).map(|l| l.split_whitespace().nth(2) == Some("0")))
            .unwrap_or(false)
    }

    /// Whether a kernel socket listens on TCP `port` (any address) in this network namespace.
    fn kernel_listens_on(port: u16) -> bool {
        let Ok(table) = std::fs::read_to_string("/proc/net/tcp") else { return false };
        table.lines().skip(1).any(|l| {
            let mut f = l.split_whitespace();
            let local = f.nth(1).unwrap_or("");
            let state = f.nth(1).unwrap_or("");
            state == "0A" && local.rsplit(':').next().and_then(|p| u16::from_str_radix(p, 16).ok()) == Some(port)
        })
    }
}
