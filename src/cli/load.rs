//! `xtcp load`: the load generator on either stack, with a progress bar on a terminal and a report at the end.

use std::io::IsTerminal;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::ops::RangeInclusive;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use xtcp::app::load::{
    Load, LoadConfig, LoadLimit, LoadMode, Report, CONNECTIONS_MAX, LATENCY_US_MAX, PIPELINE_DEPTH_MAX,
    RATE_PER_SEC_MAX, REQUESTS_MAX, SEND_BYTES_MAX,
};
use xtcp::app::{App, Sockets};
use xtcp::engine::kernel::{run_kernel, KernelConfig, KernelStack};
use xtcp::engine::StackEvent;
use xtcp::time::Instant;

use super::{bytes_in, duration_in, number_in, parse_duration, stop_on_signals, NetArgs, StackKind};

/// What each request is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Workload {
    /// Messages echoed back by an echo server.
    Echo,
    /// HTTP/1.1 requests.
    Http,
    /// One way: each connection sends --message-bytes to a discard server (`xtcp echo --discard`) and closes; done
    /// when the server closes after reading it all (bulk transfer).
    Send,
}

/// The `xtcp load` arguments.
#[derive(Debug, Clone, clap::Args)]
pub struct LoadArgs {
    #[command(flatten)]
    pub net: NetArgs,
    /// The server, ADDR:PORT.
    #[arg(long, value_name = "ADDR:PORT")]
    pub target: SocketAddrV4,
    /// Echo messages or HTTP requests.
    #[arg(long, value_enum, default_value = "echo")]
    pub mode: Workload,
    /// Connections kept open.
    #[arg(long, default_value_t = 1, value_parser = number_in::<u32>(1, CONNECTIONS_MAX.into()))]
    pub connections: u32,
    /// Open N more connections first and hold them idle (no requests) while the load runs on --connections: the
    /// rate and memory with many connections open. The warm-up starts once all are open; they are reset at the end.
    #[arg(long, default_value_t = 0, value_name = "N",
          value_parser = number_in::<u32>(0, CONNECTIONS_MAX.into()))]
    pub hold: u32,
    /// Requests each connection keeps outstanding (1: wait for each answer).
    #[arg(long, default_value_t = 1, value_name = "N",
          value_parser = number_in::<u32>(1, PIPELINE_DEPTH_MAX.into()))]
    pub pipeline: u32,
    /// How long to measure (e.g. 10s, 500ms, 2m; at least 1ms) [default: 10s unless --requests is given].
    #[arg(long, value_parser = duration_in(Duration::from_millis(1), Duration::MAX), conflicts_with = "requests")]
    pub duration: Option<Duration>,
    /// Measure this many requests instead of a duration.
    #[arg(long, value_parser = number_in::<u64>(1, REQUESTS_MAX))]
    pub requests: Option<u64>,
    /// Run this long before measuring; its requests are counted apart.
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    pub warmup: Duration,
    /// Open loop at this many requests per second in total, latency measured from each request's scheduled time
    /// (coordinated omission corrected, as wrk2) [default: closed loop].
    #[arg(long, value_name = "PER_SEC", value_parser = number_in::<u64>(1, RATE_PER_SEC_MAX))]
    pub rate: Option<u64>,
    /// Echo and send: bytes per message (64, 16KiB, 1GiB...; echo at most 16MiB, send at most 1TiB).
    #[arg(long, default_value = "64", value_parser = bytes_in(1, SEND_BYTES_MAX))]
    pub message_bytes: u64,
    /// HTTP: the method.
    #[arg(long, default_value = "GET")]
    pub method: String,
    /// HTTP: the request target.
    #[arg(long, default_value = "/")]
    pub path: String,
    /// HTTP: the Host header [default: the target address].
    #[arg(long)]
    pub host: Option<String>,
    /// HTTP: another header, "Name: value" (repeatable).
    #[arg(long = "header", value_name = "NAME: VALUE", value_parser = parse_header)]
    pub headers: Vec<(String, String)>,
    /// HTTP: a new connection for every request (the connections-per-second test) instead of keep-alive.
    #[arg(long)]
    pub new_connection_per_request: bool,
    /// A request unanswered this long is a timeout; its connection is replaced. --mode send: a transfer this long
    /// without progress (the stack taking more of its bytes). From 1ms to 60s.
    #[arg(long, default_value = "10s",
          value_parser = duration_in(Duration::from_millis(1), Duration::from_micros(LATENCY_US_MAX)))]
    pub timeout: Duration,
    /// Open connections from this address of the interface (repeatable: connections go round-robin over them,
    /// past one address's 64k ports to one server) [default: the one address, --ip or the interface's first].
    #[arg(long = "source", value_name = "ADDR")]
    pub sources: Vec<Ipv4Addr>,
    /// Open connections from the interface's first N addresses (add aliases: `ip addr add ADDR/LEN dev IFACE`).
    #[arg(long = "sources", value_name = "N", conflicts_with = "sources",
          value_parser = number_in::<u8>(1, xtcp::engine::MAX_LOCAL_ADDRESSES as u64))]
    pub source_count: Option<u8>,
    /// xtcp's source ports, LO-HI, on every source address [default: the ports beside the kernel's
    /// ip_local_port_range where no kernel socket listens]. --stack xdp only: the kernel's are
    /// net.ipv4.ip_local_port_range.
    #[arg(long, value_name = "LO-HI", value_parser = parse_port_range)]
    pub ephemeral_ports: Option<RangeInclusive<u16>>,
    /// Print the report as JSON (and no progress bar).
    #[arg(long)]
    pub json: bool,
}

/// Parses `LO-HI`, a range of TCP ports from 1024 up.
fn parse_port_range(s: &str) -> Result<RangeInclusive<u16>, String> {
    let range = s.split_once('-').and_then(|(lo, hi)| Some((lo.trim().parse::<u16>().ok()?, hi.trim().parse().ok()?)));
    match range {
        Some((lo, hi)) if lo >= 1024 && lo <= hi => Ok(lo..=hi),
        _ => Err(format!("{s:?} is not a port range: write LO-HI, e.g. 61000-65535, with 1024 <= LO <= HI")),
    }
}

/// The source addresses `--source` or `--sources N` ask for, each checked against `iface`'s addresses (in the
/// kernel's order, the primary first); `None` when neither is given.
fn source_addresses(args: &LoadArgs) -> Result<Option<Vec<Ipv4Addr>>, String> {
    if args.sources.is_empty() && args.source_count.is_none() {
        return Ok(None);
    }
    let iface = args.net.iface.as_deref().ok_or("--source and --sources need --iface, whose addresses they use")?;
    let have = super::serve::interface_addresses(iface)?;
    if let Some(n) = args.source_count {
        let n = usize::from(n);
        if n > have.len() {
            return Err(format!(
                "--sources {n}: {iface} has {} IPv4 addresses — add aliases (`ip addr add ADDR/LEN dev {iface}`)",
                have.len()
            ));
        }
        return Ok(Some(have[..n].to_vec()));
    }
    let mut sources: Vec<Ipv4Addr> = Vec::with_capacity(args.sources.len());
    for &ip in &args.sources {
        if !have.contains(&ip) {
            return Err(format!("--source {ip} is not an address of {iface} (it has {have:?}) — choose one of those"));
        }
        if !sources.contains(&ip) {
            sources.push(ip);
        }
    }
    if sources.len() > xtcp::engine::MAX_LOCAL_ADDRESSES {
        return Err(format!("at most {} --source addresses", xtcp::engine::MAX_LOCAL_ADDRESSES));
    }
    Ok(Some(sources))
}

fn parse_header(s: &str) -> Result<(String, String), String> {
    match s.split_once(':') {
        Some((name, value)) if !name.trim().is_empty() => Ok((name.trim().to_owned(), value.trim().to_owned())),
        _ => Err(format!("{s:?} is not a header: write \"Name: value\"")),
    }
}

impl LoadArgs {
    fn config(&self) -> LoadConfig {
        let mut cfg = LoadConfig::new(self.target);
        cfg.mode = match self.mode {
            Workload::Echo => LoadMode::Echo { message_bytes: self.message_bytes },
            Workload::Send => LoadMode::Send { message_bytes: self.message_bytes },
            Workload::Http => LoadMode::Http {
                method: self.method.clone(),
                path: self.path.clone(),
                host: self.host.clone().unwrap_or_else(|| self.target.to_string()),
                headers: self.headers.clone(),
                keep_alive: !self.new_connection_per_request,
            },
        };
        cfg.connections = self.connections;
        cfg.pipeline_depth = self.pipeline;
        cfg.limit = match (self.requests, self.duration) {
            (Some(requests), _) => LoadLimit::Requests { requests },
            (None, d) => LoadLimit::Duration { duration_ms: d.unwrap_or(Duration::from_secs(10)).as_millis() as u64 },
        };
        cfg.warmup_ms = self.warmup.as_millis() as u64;
        cfg.rate_per_sec = self.rate;
        cfg.request_timeout_ms = self.timeout.as_millis() as u64;
        cfg.reconnects_max = u64::from(self.connections).saturating_mul(100).max(1000);
        cfg.hold = self.hold;
        cfg
    }
}

/// Runs the load and prints its report; a one-line error otherwise.
pub fn run(args: &LoadArgs) -> Result<(), String> {
    let cfg = args.config();
    Load::new(cfg.clone()).map_err(|e| e.to_string())?;
    if args.ephemeral_ports.is_some() && args.net.stack == StackKind::Kernel {
        return Err("--ephemeral-ports is for --stack xdp: the kernel's are net.ipv4.ip_local_port_range".into());
    }
    let sources = source_addresses(args)?;
    let show_progress = !args.json && std::io::stderr().is_terminal();
    let total_ms = args.warmup.as_millis() as u64 + args.duration.map_or(10_000, |d| d.as_millis() as u64);
    let bar = show_progress.then(|| {
        let bar = if args.requests.is_some() { ProgressBar::new_spinner() } else { ProgressBar::new(total_ms) };
        bar.set_style(
            ProgressStyle::with_template("{spinner} [{elapsed_precise}] {wide_bar} {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        bar
    });
    let stop = stop_on_signals()?;
    let report = match args.net.stack {
        StackKind::Xdp => run_xdp(args, &cfg, sources, bar.clone(), &stop)?,
        StackKind::Kernel => {
            let ip = super::serve::kernel_ip(&args.net)?;
            let files = xtcp::engine::kernel::open_files_limit().unwrap_or(u64::MAX);
            let wanted = u64::from(args.connections) + u64::from(args.hold);
            if wanted + 64 > files {
                return Err(format!(
                    "{wanted} connections need more open files than the limit of {files} — raise it (`ulimit -n 1048576`)"
                ));
            }
            let kernel_cfg = KernelConfig { sources: sources.unwrap_or_default(), ..args.net.kernel_config(ip) };
            let mut stack = KernelStack::new(kernel_cfg).map_err(|e| format!("starting --stack kernel: {e}"))?;
            if !args.json {
                eprintln!("xtcp load: {}", preamble(args));
            }
            let mut app = Progress::new(Load::new(cfg).map_err(|e| e.to_string())?, bar.clone());
            run_kernel(&mut stack, &mut app, &stop, args.net.run_options());
            app.load.report()
        }
    };
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    if args.json {
        println!("{}", report.to_json());
    } else {
        print!("{}", report.to_text());
    }
    if report.completed == 0 {
        return Err(format!("no request completed — is {} serving? ({} errors)", args.target, report.errors.total()));
    }
    Ok(())
}

/// What the load is, said once it is set up (so that a set-up error is the only line).
fn preamble(args: &LoadArgs) -> String {
    let what = match args.net.stack {
        StackKind::Xdp => "xtcp over AF_XDP",
        StackKind::Kernel => "the kernel's TCP",
    };
    format!("{:?} load on {} with {what}", args.mode, args.target)
}

/// `cfg` shared between at most `cores` cores, one configuration each: connections, requests and rate split as
/// evenly as they go, on no more cores than there are connections, requests or requests per second, so that every
/// core has some of each and the shares sum to exactly what was asked (`--rate 2` on eight cores is two requests a
/// second, not eight).
#[cfg_attr(not(all(feature = "afxdp", target_os = "linux")), allow(dead_code))]
fn shares(cfg: &LoadConfig, cores: usize) -> Vec<LoadConfig> {
    let mut most = u64::from(cfg.connections);
    if let LoadLimit::Requests { requests } = cfg.limit {
        most = most.min(requests);
    }
    if let Some(rate) = cfg.rate_per_sec {
        most = most.min(rate);
    }
    let cores = cores.min(usize::try_from(most).unwrap_or(usize::MAX)).max(1);
    (0..cores)
        .map(|core| {
            let part = |total: u64| total / cores as u64 + u64::from((core as u64) < total % cores as u64);
            let mut c = cfg.clone();
            c.connections = part(u64::from(cfg.connections)) as u32;
            if let LoadLimit::Requests { requests } = cfg.limit {
                c.limit = LoadLimit::Requests { requests: part(requests) };
            }
            c.rate_per_sec = cfg.rate_per_sec.map(part);
            c.reconnects_max = part(cfg.reconnects_max).max(1);
            c.hold = part(u64::from(cfg.hold)) as u32;
            c
        })
        .collect()
}

#[cfg(all(feature = "afxdp", target_os = "linux"))]
fn run_xdp(
    args: &LoadArgs,
    cfg: &LoadConfig,
    sources: Option<Vec<Ipv4Addr>>,
    bar: Option<ProgressBar>,
    stop: &std::sync::atomic::AtomicBool,
) -> Result<Report, String> {
    use xtcp::engine::shard::{CoreInfo, Hooks};
    let active = super::xdp::ActiveOpens { peer: *args.target.ip(), ports: args.ephemeral_ports.clone() };
    let mut cores_cfg = super::xdp::cores_config("load", &args.net, &[], Some(&active))?;
    if let Some((first, rest)) = sources.as_deref().and_then(|s| s.split_first()) {
        // Every core opens from every address, each from its own slice of the same ports.
        cores_cfg.stack.ip = *first;
        cores_cfg.stack.extra_ips = rest.to_vec();
    }
    // No core without a connection, a request and a share of the rate of its own.
    let shares = shares(cfg, cores_cfg.cores.unwrap_or(1));
    let cores = shares.len();
    cores_cfg.cores = Some(cores);
    let ports = &cores_cfg.stack.ephemeral_ports;
    let min = xtcp::engine::shard::PortPartition::MIN_PORTS_PER_CORE as usize;
    if ports.len() < min * cores {
        return Err(format!(
            "{} source ports ({}-{}) give {cores} cores fewer than {min} each — run fewer --cores, or give more \
             with --ephemeral-ports LO-HI",
            ports.len(),
            ports.start(),
            ports.end()
        ));
    }
    let quiet = args.json;
    let ready = |infos: &[CoreInfo], cpus: usize| {
        if !quiet {
            eprintln!("xtcp load: {}", preamble(args));
            eprintln!("xtcp load: {}", super::xdp::describe(infos, cpus));
        }
    };
    let hooks = Hooks { ready: Some(&ready), ..Hooks::default() };
    super::xdp::warn_unserved_queues("load", &cores_cfg);
    let make = |core: usize| {
        let load = Load::new(shares[core].clone()).expect("a share of a valid configuration is valid");
        Progress::new(load, if core == 0 { bar.clone() } else { None })
    };
    let report = xtcp::engine::shard::run_cores_with(&cores_cfg, make, &hooks, stop).map_err(|e| e.to_string())?;
    if !quiet {
        super::xdp::summary("load", &report);
    }
    let mut merged: Option<Report> = None;
    for core in &report.cores {
        let r = core.app.load.report();
        match merged.as_mut() {
            Some(m) => m.merge(&r),
            None => merged = Some(r),
        }
    }
    merged.ok_or_else(|| "no core ran".to_owned())
}

#[cfg(not(all(feature = "afxdp", target_os = "linux")))]
fn run_xdp(
    _: &LoadArgs,
    _: &LoadConfig,
    _: Option<Vec<Ipv4Addr>>,
    _: Option<ProgressBar>,
    _: &std::sync::atomic::AtomicBool,
) -> Result<Report, String> {
    Err("this xtcp was built without AF_XDP — rebuild with the afxdp feature, or use --stack kernel".into())
}

/// The load generator with a progress bar ticked from the loop at most every 100 ms (no clock read of its own).
struct Progress {
    load: Load,
    bar: Option<ProgressBar>,
    start: Option<Instant>,
    shown: Instant,
}

impl Progress {
    fn new(load: Load, bar: Option<ProgressBar>) -> Progress {
        Progress { load, bar, start: None, shown: Instant::ZERO }
    }
}

impl<S: Sockets + ?Sized> App<S> for Progress
where
    Load: App<S>,
{
    fn start(&mut self, stack: &mut S, now: Instant) {
        self.start = Some(now);
        self.load.start(stack, now);
    }

    fn on_event(&mut self, stack: &mut S, now: Instant, event: StackEvent) {
        self.load.on_event(stack, now, event);
    }

    fn on_tick(&mut self, stack: &mut S, now: Instant) {
        self.load.on_tick(stack, now);
        let (Some(bar), Some(start)) = (&self.bar, self.start) else { return };
        if now - self.shown >= Duration::from_millis(100) {
            self.shown = now;
            bar.set_position((now - start).as_millis() as u64);
            let r = self.load.report();
            bar.set_message(format!("{} requests, {} errors", r.completed + r.warmup_completed, r.errors.total()));
        }
    }

    fn done(&self) -> bool {
        App::<S>::done(&self.load)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The sums of the shares' connections, requests and rates.
    fn totals(shares: &[LoadConfig]) -> (u32, u64, u64) {
        let requests = |c: &LoadConfig| match c.limit {
            LoadLimit::Requests { requests } => requests,
            LoadLimit::Duration { .. } => 0,
        };
        (
            shares.iter().map(|c| c.connections).sum(),
            shares.iter().map(requests).sum(),
            shares.iter().filter_map(|c| c.rate_per_sec).sum(),
        )
    }

    #[test]
    fn a_load_is_shared_between_cores_without_losing_any() {
        let mut cfg = LoadConfig::new("10.0.0.1:80".parse().unwrap());
        cfg.connections = 5;
        cfg.limit = LoadLimit::Requests { requests: 1001 };
        cfg.rate_per_sec = Some(10);
        cfg.hold = 1001;
        let shares = shares(&cfg, 2);
        assert_eq!(shares.len(), 2);
        assert_eq!(totals(&shares), (5, 1001, 10));
        assert_eq!(shares.iter().map(|c| c.hold).sum::<u32>(), 1001);
    }

    #[test]
    fn a_small_rate_or_request_count_runs_on_fewer_cores_and_is_not_rounded_up() {
        let mut cfg = LoadConfig::new("10.0.0.1:80".parse().unwrap());
        cfg.connections = 8;
        cfg.limit = LoadLimit::Requests { requests: 3 };
        cfg.rate_per_sec = Some(2);
        let split = shares(&cfg, 8);
        assert_eq!(totals(&split), (8, 3, 2));
        assert_eq!(split.len(), 2);
        for c in &split {
            Load::new(c.clone()).expect("every share is a valid load");
        }
        // Requests alone, then connections alone, limit the cores.
        cfg.rate_per_sec = None;
        assert_eq!(shares(&cfg, 8).len(), 3);
        assert_eq!(totals(&shares(&cfg, 8)), (8, 3, 0));
        cfg.limit = LoadLimit::Duration { duration_ms: 1000 };
        assert_eq!(shares(&cfg, 16).len(), 8);
        assert_eq!(shares(&cfg, 4).len(), 4);
    }

    #[test]
    fn port_ranges_parse_and_refuse_garbage() {
        assert_eq!(parse_port_range("61000-65535"), Ok(61000..=65535));
        assert_eq!(parse_port_range("40000-40099"), Ok(40000..=40099));
        for bad in ["40099-40000", "80-90", "40000", "a-b", "40000-70000"] {
            assert!(parse_port_range(bad).unwrap_err().contains("LO-HI"), "{bad}");
        }
    }
}
