//! The pieces every `xtcp` subcommand shares: the stack arguments, one-line errors, signals, parsing.

pub mod load;
pub mod serve;
pub mod stat;
#[cfg(all(feature = "afxdp", target_os = "linux"))]
pub mod xdp;

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use xtcp::engine::kernel::KernelConfig;
use xtcp::engine::run::RunOptions;
use xtcp::tcp::Algorithm;
use xtcp::wire::EthernetAddress;

/// The highest `--queue`: the kernel gives a device at most 4096 receive queues.
const QUEUE_MAX: u64 = 4095;
/// The most `--cores`.
const CORES_MAX: u64 = 1024;
/// The longest `--busy-poll-us`, 1000 s: never sleep.
const BUSY_POLL_US_MAX: u64 = 1_000_000_000;

/// Which TCP stack runs the application.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum StackKind {
    /// xtcp over AF_XDP: the XDP program steers our frames into AF_XDP rings and xtcp does TCP itself.
    Xdp,
    /// The kernel's TCP, through ordinary sockets and epoll: the same application, for comparison.
    Kernel,
}

/// AF_XDP bind mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    /// Zero-copy where the driver has it, copy otherwise.
    Auto,
    /// Copy mode (works on every driver; veth has only this).
    Copy,
    /// Zero-copy only (fails where the driver lacks it).
    ZeroCopy,
}

/// When xtcp answers a SYN with a SYN cookie.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Cookies {
    /// Never: SYNs past the backlog are dropped.
    Never,
    /// When a listener's SYN backlog is full (a flood).
    WhenFull,
    /// For every SYN (no half-open state at all).
    Always,
}

/// Congestion control (`--congestion`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Congestion {
    /// NewReno (RFC 5681, RFC 6582): the window grows by one segment per round trip and halves on a loss.
    #[value(name = "newreno")]
    NewReno,
    /// CUBIC (RFC 9438): the window grows as a cubic function of the time since the last loss and shrinks to 0.7
    /// of itself on one; faster to fill long, fat paths.
    Cubic,
}

impl Congestion {
    /// The library's algorithm.
    pub fn algorithm(self) -> Algorithm {
        match self {
            Congestion::NewReno => Algorithm::NewReno,
            Congestion::Cubic => Algorithm::Cubic,
        }
    }
}

/// Where and on which stack a command runs.
#[derive(Debug, Clone, clap::Args)]
pub struct NetArgs {
    /// The TCP stack: xtcp over AF_XDP, or the kernel's through ordinary sockets (same application, to compare).
    #[arg(long, value_enum, default_value = "xdp")]
    pub stack: StackKind,
    /// The interface (needed for --stack xdp). xtcp shares its IPv4 address with the kernel, which keeps ARP and
    /// ICMP.
    #[arg(long, value_name = "IFACE")]
    pub iface: Option<String>,
    /// The local IPv4 address [default: the interface's first; 0.0.0.0 for --stack kernel without --iface].
    #[arg(long, value_name = "ADDR")]
    pub ip: Option<Ipv4Addr>,
    /// The first interface receive queue to serve (AF_XDP); core i serves queue QUEUE+i.
    #[arg(long, default_value_t = 0, value_name = "N", value_parser = number_in::<u32>(0, QUEUE_MAX))]
    pub queue: u32,
    /// Cores to run, one pinned loop per queue [default: every rx queue from --queue].
    #[arg(long, value_name = "N", value_parser = number_in::<u16>(1, CORES_MAX))]
    pub cores: Option<u16>,
    /// AF_XDP bind mode: zero-copy where the driver has it (auto), or forced.
    #[arg(long, value_enum, default_value = "auto")]
    pub xdp_mode: Mode,
    /// Record every frame xtcp receives and sends to FILE (pcap, 64 MiB at most; with several cores one file per
    /// core, -coreN before the extension): tcpdump on the interface cannot see frames XDP redirected. AF_XDP only.
    #[arg(long, value_name = "FILE")]
    pub pcap: Option<PathBuf>,
    /// Seed for the stack's random choices [default: from the system's random source].
    #[arg(long)]
    pub seed: Option<u64>,
    /// Send every frame to this MAC (aa:bb:cc:dd:ee:ff) instead of the neighbour table's or the sender's.
    #[arg(long, value_name = "MAC", value_parser = parse_mac)]
    pub next_hop_mac: Option<EthernetAddress>,
    /// Keep polling at least this long after the last frame or event before sleeping, in microseconds; when work
    /// comes at intervals the loop polls through them, up to 2 ms (or this, if longer). 1000000000 never sleeps.
    #[arg(long, default_value_t = 200, value_name = "US",
          value_parser = number_in::<u64>(0, BUSY_POLL_US_MAX))]
    pub busy_poll_us: u64,
    /// Connections each core holds at most, TIME_WAIT included (AF_XDP; the table is allocated up front).
    #[arg(long, default_value_t = 65536, value_name = "N", value_parser = number_in::<u32>(1, 16_777_216))]
    pub max_connections: u32,
    /// Half-open connections each listener keeps per core before SYN cookies take over (AF_XDP).
    #[arg(long, default_value_t = 1024, value_name = "N")]
    pub syn_backlog: u32,
    /// When SYNs are answered with SYN cookies, which hold no state (AF_XDP).
    #[arg(long, value_enum, default_value = "when-full")]
    pub syn_cookies: Cookies,
    /// Connections each core keeps in TIME_WAIT; past this, connections close without it (AF_XDP).
    #[arg(long, default_value_t = 32768, value_name = "N")]
    pub max_time_wait: u32,
    /// A connection quiescent this long (nothing in flight, no buffer, no timer but keep-alive or TIME_WAIT's) is
    /// kept as a compact record (one 192-byte heap block) until something touches it (AF_XDP); `off` never
    /// compacts.
    #[arg(long, default_value = "100ms", value_name = "DURATION|off", value_parser = parse_compact_after)]
    pub compact_after: CompactAfter,
    /// Congestion control of every connection, accepted and opened [default: newreno for --stack xdp; for --stack
    /// kernel the system's, net.ipv4.tcp_congestion_control — given, it sets TCP_CONGESTION to reno or cubic].
    #[arg(long, value_enum, value_name = "ALGORITHM")]
    pub congestion: Option<Congestion>,
}

/// `--compact-after`: a duration, or `off` (read by the AF_XDP stack only).
#[derive(Debug, Clone, Copy)]
#[cfg_attr(not(feature = "afxdp"), allow(dead_code))]
pub struct CompactAfter(pub Option<Duration>);

fn parse_compact_after(s: &str) -> Result<CompactAfter, String> {
    if s == "off" {
        return Ok(CompactAfter(None));
    }
    parse_duration(s).map(|d| CompactAfter(Some(d))).map_err(|e| format!("{e} (or `off`)"))
}

impl NetArgs {
    /// The loop's idle behaviour.
    pub fn run_options(&self) -> RunOptions {
        RunOptions { busy_poll: Duration::from_micros(self.busy_poll_us), ..RunOptions::default() }
    }

    /// The kernel stack's settings on `ip`: the congestion control, if chosen.
    pub fn kernel_config(&self, ip: Ipv4Addr) -> KernelConfig {
        KernelConfig { congestion: self.congestion.map(Congestion::algorithm), ..KernelConfig::new(ip) }
    }
}

/// One line on stderr when frames were dropped for bad checksums: over veth, a kernel peer sends partial checksums
/// (CHECKSUM_PARTIAL) unless its transmit offload is off, and xtcp cannot tell them from corrupted frames.
#[cfg_attr(not(all(feature = "afxdp", target_os = "linux")), allow(dead_code))]
pub fn checksum_hint(name: &str, counters: &xtcp::engine::Counters) {
    let bad = counters.dropped(xtcp::engine::Drop::BadChecksum);
    if bad > 0 {
        eprintln!(
            "xtcp {name}: {bad} frames dropped for bad checksums — a kernel peer over veth needs \
             `ethtool -K <its interface> tx off`"
        );
    }
}

/// Parses `aa:bb:cc:dd:ee:ff`.
pub fn parse_mac(s: &str) -> Result<EthernetAddress, String> {
    let bytes: Vec<u8> = s.split(':').filter_map(|h| u8::from_str_radix(h, 16).ok()).collect();
    match (s.split(':').count(), EthernetAddress::from_bytes(&bytes)) {
        (6, Some(mac)) => Ok(mac),
        _ => Err(format!("{s:?} is not a MAC address: write six hex bytes, aa:bb:cc:dd:ee:ff")),
    }
}

/// Parses a duration such as `10s`, `500ms`, `250us`, `2m` or a plain number of seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    let split = t.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let value: f64 = num.parse().map_err(|_| format!("{s:?} is not a duration: write e.g. 10s, 500ms, 2m"))?;
    let secs = match unit {
        "" | "s" => value,
        "ms" => value / 1e3,
        "us" | "µs" => value / 1e6,
        "m" | "min" => value * 60.0,
        "h" => value * 3600.0,
        _ => return Err(format!("{s:?}: unknown unit {unit:?} — use us, ms, s, m or h")),
    };
    if !(0.0..=1e9).contains(&secs) {
        return Err(format!("{s:?} is out of range"));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// A parser of whole numbers from `min` to `max` (both inclusive) into `T`, for a flag that needs one in that range:
/// the error names the range, also for a number too large for any integer type.
pub fn number_in<T: TryFrom<u64>>(min: u64, max: u64) -> impl Fn(&str) -> Result<T, String> + Clone {
    move |s| {
        let t = s.trim();
        if t.is_empty() || !t.bytes().all(|b| b.is_ascii_digit()) {
            return Err(format!("{s:?} is not a whole number in {min}..={max}"));
        }
        match t.parse::<u64>() {
            Ok(n) if (min..=max).contains(&n) => T::try_from(n).map_err(|_| format!("{n} is not in {min}..={max}")),
            _ => Err(format!("{t} is not in {min}..={max}")),
        }
    }
}

/// A parser of durations from `min` to `max` (both inclusive), for a flag that needs one in that range.
pub fn duration_in(min: Duration, max: Duration) -> impl Fn(&str) -> Result<Duration, String> + Clone {
    move |s| {
        let d = parse_duration(s)?;
        if d < min {
            Err(format!("{s:?} is shorter than {min:?}, the least allowed"))
        } else if d > max {
            Err(format!("{s:?} is longer than {max:?}, the most allowed"))
        } else {
            Ok(d)
        }
    }
}

/// A parser of byte counts (as [`parse_bytes`]) from `min` to `max`, both inclusive.
pub fn bytes_in(min: u64, max: u64) -> impl Fn(&str) -> Result<u64, String> + Clone {
    move |s| {
        let n = parse_bytes(s)?;
        if (min..=max).contains(&n) {
            Ok(n)
        } else {
            Err(format!("{s:?} is not in {min}..={max} bytes"))
        }
    }
}

/// Parses a byte count such as `64`, `16KiB`, `1MiB`, `1GiB` (also `k`, `m`, `g`, `K`, `M`, `G`: powers of 1024).
pub fn parse_bytes(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let value: u64 = num.parse().map_err(|_| format!("{s:?} is not a size: write e.g. 64, 16KiB, 1GiB"))?;
    let shift = match unit.trim().trim_end_matches("iB").trim_end_matches('B') {
        "" => 0,
        "k" | "K" => 10,
        "m" | "M" => 20,
        "g" | "G" => 30,
        "t" | "T" => 40,
        _ => return Err(format!("{s:?}: unknown unit {unit:?} — use KiB, MiB, GiB or plain bytes")),
    };
    value.checked_mul(1 << shift).ok_or_else(|| format!("{s:?} is out of range"))
}

/// A seed from the system's random source (the ISN key and table hashing must not be guessable).
#[cfg_attr(not(all(feature = "afxdp", target_os = "linux")), allow(dead_code))]
pub fn system_seed() -> u64 {
    use std::io::Read;
    let mut b = [0u8; 8];
    match std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut b)) {
        Ok(()) => u64::from_ne_bytes(b),
        Err(_) => std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64),
    }
}

/// Where [`boot_isn_key`] keeps the key: /run is emptied at boot, so the key lives as long as the boot.
#[cfg_attr(not(all(feature = "afxdp", target_os = "linux")), allow(dead_code))]
pub const ISN_KEY_FILE: &str = "/run/xtcp/isn.key";

/// The key for ISNs and timestamp offsets that every xtcp process of this boot shares, as the kernel keeps one
/// secret from boot: made (16 bytes from the system's random source, readable by root only) by the first process
/// that asks, read by the rest. With it, and the engine's clock counted from boot, a 4-tuple that an earlier
/// process left in TIME_WAIT at the peer gets a later timestamp and sequence number from the next process, so the
/// peer reopens it (RFC 6191) instead of answering the SYN with an ACK and costing a one-second SYN timeout.
#[cfg_attr(not(all(feature = "afxdp", target_os = "linux")), allow(dead_code))]
pub fn boot_isn_key(path: &std::path::Path) -> std::io::Result<[u8; 16]> {
    use std::io::{Read, Write};
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    let read = |p: &std::path::Path| -> std::io::Result<[u8; 16]> {
        let mut key = [0u8; 16];
        std::fs::File::open(p)?.read_exact(&mut key)?;
        Ok(key)
    };
    if let Ok(key) = read(path) {
        return Ok(key);
    }
    if let Some(dir) = path.parent() {
        std::fs::DirBuilder::new().recursive(true).mode(0o755).create(dir)?;
    }
    // Written whole under a name of this process's, then linked into place: a link fails if another process was
    // first, and then its key (complete, as ours is) is the one everybody reads.
    let mut key = [0u8; 16];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut key)?;
    let tmp = path.with_extension(format!("{}.tmp", std::process::id()));
    let written = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .and_then(|mut f| f.write_all(&key));
    let linked = written.and_then(|()| std::fs::hard_link(&tmp, path));
    let _ = std::fs::remove_file(&tmp);
    match linked {
        Ok(()) => Ok(key),
        Err(_) => read(path),
    }
}

/// The effective user is root (read from /proc, no unsafe call).
#[cfg_attr(not(all(feature = "afxdp", target_os = "linux")), allow(dead_code))]
pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("Uid:")).map(|l| l.split_whitespace().nth(2) == Some("0")))
        .unwrap_or(false)
}

/// The TCP ports kernel sockets listen on in this network namespace, for IPv4: listeners on an IPv4 address, and
/// IPv6 ones on `::` or an IPv4-mapped address (a dual-stack socket takes IPv4 connections too), ascending.
#[cfg_attr(not(all(feature = "afxdp", target_os = "linux")), allow(dead_code))]
pub fn kernel_listening_ports() -> Vec<u16> {
    let read = |path: &str| std::fs::read_to_string(path).unwrap_or_default();
    let (v4, v6) = (read("/proc/net/tcp"), read("/proc/net/tcp6"));
    let mut ports: Vec<u16> = listening_ports(&v4).chain(listening_ports(&v6)).collect();
    ports.sort_unstable();
    ports.dedup();
    ports
}

/// The ports of the IPv4-reachable listeners (state `0A`) in a `/proc/net/tcp` or `/proc/net/tcp6` table: every
/// IPv4 one, and IPv6 ones whose address is `::` or IPv4-mapped (`::ffff:a.b.c.d`, written `0000FFFF` in its
/// third word in either byte order).
#[cfg_attr(not(all(feature = "afxdp", target_os = "linux")), allow(dead_code))]
fn listening_ports(table: &str) -> impl Iterator<Item = u16> + '_ {
    table.lines().skip(1).filter_map(|l| {
        let mut f = l.split_whitespace();
        let (addr, port) = f.nth(1)?.rsplit_once(':')?;
        let state = f.nth(1)?;
        let ipv4_reachable = addr.len() == 8
            || addr.bytes().all(|b| b == b'0')
            || (addr.len() == 32
                && addr[..16].bytes().all(|b| b == b'0')
                && matches!(&addr[16..24], "0000FFFF" | "FFFF0000"));
        (state == "0A" && ipv4_reachable).then(|| u16::from_str_radix(port, 16).ok()).flatten()
    })
}

/// Sets the returned flag on SIGINT, SIGTERM or SIGHUP (ctrlc's `termination` feature adds the last two); a second
/// signal of any of them exits at once with status 130 (an XDP program leaves with the process: its bpf_link
/// closes).
pub fn stop_on_signals() -> Result<Arc<AtomicBool>, String> {
    let stop = Arc::new(AtomicBool::new(false));
    let signals = Arc::new(AtomicUsize::new(0));
    let (flag, count) = (stop.clone(), signals);
    ctrlc::set_handler(move || {
        if count.fetch_add(1, Ordering::SeqCst) > 0 {
            std::process::exit(130);
        }
        flag.store(true, Ordering::SeqCst);
    })
    .map_err(|e| format!("installing the signal handler: {e}"))?;
    Ok(stop)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_boot_isn_key_is_made_once_readable_by_root_only_and_then_shared() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("xtcp-isn-key-{}", std::process::id()));
        let path = dir.join("run/isn.key");
        let first = boot_isn_key(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        let second = boot_isn_key(&path).unwrap();
        let listed: Vec<_> =
            std::fs::read_dir(path.parent().unwrap()).unwrap().map(|e| e.unwrap().file_name()).collect();
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(mode, 0o600);
        assert_eq!(first, second, "a second process reads the first one's key");
        assert_ne!(first, [0; 16]);
        assert_eq!(listed, ["isn.key"], "the temporary file is gone");
    }

    #[test]
    fn sizes_parse_with_binary_units_and_refuse_garbage() {
        assert_eq!(parse_bytes("64"), Ok(64));
        assert_eq!(parse_bytes("16KiB"), Ok(16 << 10));
        assert_eq!(parse_bytes("1MiB"), Ok(1 << 20));
        assert_eq!(parse_bytes("1GiB"), Ok(1 << 30));
        assert_eq!(parse_bytes("2G"), Ok(2 << 30));
        assert_eq!(parse_bytes("3k"), Ok(3 << 10));
        assert!(parse_bytes("1.5GiB").is_err());
        assert!(parse_bytes("GiB").is_err());
        assert!(parse_bytes("1PiB").unwrap_err().contains("unknown unit"));
        assert!(parse_bytes("99999999999T").unwrap_err().contains("out of range"));
    }

    #[test]
    fn durations_parse_with_units_and_refuse_garbage() {
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("3"), Ok(Duration::from_secs(3)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("250us"), Ok(Duration::from_micros(250)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert!(parse_duration("ten").unwrap_err().contains("not a duration"));
        assert!(parse_duration("5y").unwrap_err().contains("unknown unit"));
        let timeout = duration_in(Duration::from_millis(1), Duration::from_secs(60));
        assert_eq!(timeout("1ms"), Ok(Duration::from_millis(1)));
        assert_eq!(timeout("60s"), Ok(Duration::from_secs(60)));
        assert!(timeout("0.5ms").unwrap_err().contains("shorter than 1ms"));
        assert!(timeout("61s").unwrap_err().contains("longer than 60s"));
        assert!(timeout("ten").unwrap_err().contains("not a duration"));
        let n = number_in::<u16>(1, 1024);
        assert_eq!(n("1024"), Ok(1024));
        assert!(n("0").unwrap_err().contains("1..=1024"));
        assert!(n("99999999999999999999999").unwrap_err().contains("1..=1024"));
        assert!(n("-1").unwrap_err().contains("not a whole number in 1..=1024"));
        let bytes = bytes_in(1, 1 << 20);
        assert_eq!(bytes("1MiB"), Ok(1 << 20));
        assert!(bytes("0").unwrap_err().contains("1..=1048576"));
        assert!(bytes("2MiB").unwrap_err().contains("1..=1048576"));
    }

    #[test]
    fn congestion_sets_the_kernels_tcp_congestion_only_when_given() {
        use clap::Parser;
        #[derive(Parser)]
        struct Args {
            #[command(flatten)]
            net: NetArgs,
        }
        let kernel = |flags: &[&str]| {
            let args = Args::try_parse_from(std::iter::once("xtcp").chain(flags.iter().copied())).unwrap();
            args.net.kernel_config(Ipv4Addr::LOCALHOST).congestion
        };
        assert_eq!(kernel(&[]), None, "the system's default");
        assert_eq!(kernel(&["--congestion", "cubic"]), Some(Algorithm::Cubic));
        assert_eq!(kernel(&["--congestion", "newreno"]), Some(Algorithm::NewReno));
    }

    #[test]
    fn kernel_listeners_reachable_over_ipv4_are_read_from_both_tables() {
        // Lines as /proc/net/tcp and tcp6 print them (host byte order, here little-endian), trailing fields cut.
        let v4 = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000:0016 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1
   1: 0100007F:1538 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 2
   2: 0201A8C0:D431 0101A8C0:0016 01 00000000:00000000 00:00000000 00000000     0        0 3
";
        assert_eq!(listening_ports(v4).collect::<Vec<_>>(), [22, 5432], "the established connection is no listener");
        let v6 = "  sl  local_address                         remote_address                        st
   0: 00000000000000000000000000000000:1F90 00000000000000000000000000000000:0000 0A 00000000:00000000
   1: 0000000000000000FFFF00000100007F:0CEA 00000000000000000000000000000000:0000 0A 00000000:00000000
   2: 00000000000000000000000001000000:2383 00000000000000000000000000000000:0000 0A 00000000:00000000
   3: 000080FE00000000FF0000000100A8C0:1A0A 00000000000000000000000000000000:0000 0A 00000000:00000000
";
        assert_eq!(listening_ports(v6).collect::<Vec<_>>(), [8080, 3306], "::1 and a link-local address are not IPv4");
        assert_eq!(listening_ports("header only\n").count(), 0);
        assert_eq!(listening_ports("h\n   0: garbage\n").count(), 0);
    }

    #[test]
    fn macs_parse_and_refuse_garbage() {
        assert_eq!(parse_mac("02:00:00:00:00:01"), Ok(EthernetAddress([2, 0, 0, 0, 0, 1])));
        assert!(parse_mac("02:00:00:00:00").is_err());
        assert!(parse_mac("zz:00:00:00:00:01").is_err());
    }
}
