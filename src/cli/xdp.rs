//! Setting up xtcp over AF_XDP on an interface's queues, one pinned core per queue: the checks that turn a bad
//! argument into one line saying what to do, the settings of the cores, and a peer's MAC for active opens.

use std::net::Ipv4Addr;
use std::ops::RangeInclusive;
use std::path::Path;
use std::time::Duration;

use xtcp::engine::control::ControlConfig;
use xtcp::engine::shard::{CoreInfo, CoresConfig, CoresReport};
use xtcp::engine::{StackConfig, SynCookieMode};
use xtcp::nic::afxdp::shared::XTCP_MAX_QUEUES;
use xtcp::nic::afxdp::{self, BindMode};
use xtcp::nic::neigh::Neighbors;
use xtcp::nic::DeviceStats;

use super::{boot_isn_key, is_root, kernel_listening_ports, system_seed, Cookies, Mode, NetArgs, ISN_KEY_FILE};

/// What a command that opens connections asks for.
#[derive(Debug, Clone)]
pub struct ActiveOpens {
    /// The peer connections go to.
    pub peer: Ipv4Addr,
    /// xtcp's source ports as given (`--ephemeral-ports`); `None` takes those beside the kernel's.
    pub ports: Option<RangeInclusive<u16>>,
}

/// Checks `net` and builds the multi-core settings for serving `listen_ports` on its interface and, with `active`,
/// opening connections to its peer (the peer's MAC looked up in, or resolved by, the kernel's neighbour table) from
/// source ports the kernel does not use ([`source_ports`]). Without `active` no port but `listen_ports` is steered to
/// xtcp. Every bad argument comes back as one line saying what to do.
pub fn cores_config(
    name: &str,
    net: &NetArgs,
    listen_ports: &[u16],
    active: Option<&ActiveOpens>,
) -> Result<CoresConfig, String> {
    let iface =
        net.iface.as_deref().ok_or("--stack xdp needs --iface — `ip -br link` lists them (or use --stack kernel)")?;
    let ifindex = afxdp::interface_index(iface)
        .map_err(|_| format!("no interface named {iface:?} — `ip -br link` lists them"))?;
    if !is_root() {
        return Err(format!("AF_XDP and XDP need root — run `sudo xtcp {name} ...`"));
    }
    let mut neighbors = Neighbors::open().map_err(|e| format!("opening netlink: {e}"))?;
    let addresses =
        neighbors.interface_addresses(ifindex).map_err(|e| format!("reading {iface}'s addresses over netlink: {e}"))?;
    let ip = match net.ip {
        Some(ip) if addresses.contains(&ip) => ip,
        Some(ip) => {
            return Err(format!("{ip} is not an address of {iface} (it has {addresses:?}) — choose one of those"))
        }
        None => *addresses
            .first()
            .ok_or_else(|| format!("{iface} has no IPv4 address — add one: `ip addr add ADDR/LEN dev {iface}`"))?,
    };
    let kernel_listeners = kernel_listening_ports();
    let kernel_range = kernel_port_range();
    for &port in listen_ports {
        if kernel_listeners.contains(&port) {
            return Err(format!(
                "port {port} has a kernel listener; xtcp would take its traffic — stop it or choose another --port"
            ));
        }
        if let Some(warning) = in_kernel_range(port, kernel_range) {
            eprintln!("xtcp {name}: warning: {warning}");
        }
    }
    let queues = afxdp::interface_rx_queues(iface).unwrap_or(1);
    let cores = plan_cores(iface, queues, net.queue, net.cores.map(u32::from))?;
    let mac = afxdp::interface_mac(iface).map_err(|e| format!("reading {iface}'s MAC address: {e}"))?;
    let mut stack = StackConfig::new(mac, ip, net.seed.unwrap_or_else(system_seed));
    if net.seed.is_none() {
        // A key shared with this boot's other xtcp processes; a seeded run keeps the one its seed gives.
        stack.isn_key = boot_isn_key(Path::new(ISN_KEY_FILE)).ok();
    }
    // The kernel keeps ARP (the XDP program passes it on); replies follow the frames' senders.
    stack.arp = false;
    stack.ephemeral_ports = match active {
        // A server opens no connection: the kernel keeps every port but the listening ones.
        None => RangeInclusive::new(1, 0),
        Some(active) => {
            let (ports, note) = source_ports(kernel_port_range(), active.ports.clone(), &kernel_listeners)?;
            if let Some(note) = note {
                eprintln!("xtcp {name}: {note}");
            }
            ports
        }
    };
    apply_settings(&mut stack, net);
    let mut cfg = CoresConfig::new(iface, stack);
    cfg.cores = Some(cores as usize);
    cfg.first_queue = net.queue;
    cfg.ports = listen_ports.to_vec();
    cfg.xsk.mode = match net.xdp_mode {
        Mode::Auto => BindMode::Auto,
        Mode::Copy => BindMode::Copy,
        Mode::ZeroCopy => BindMode::ZeroCopy,
    };
    cfg.run = net.run_options();
    cfg.pcap = net.pcap.clone();
    cfg.control = Some(ControlConfig::new(0));
    if active.is_some() {
        // A NIC that spreads flows over its queues with Toeplitz RSS: each core opens connections only from source
        // ports whose replies the NIC hashes to its own queue. veth has no RSS (its receive queue follows the
        // sender's transmit queue, docs/multicore.md): there the port partition and the hand-off do the work.
        cfg.rss = xtcp::engine::shard::interface_rss(iface).ok();
    }
    if let (Some(peer), None) = (active.map(|a| a.peer), net.next_hop_mac) {
        let peer_mac = neighbors
            .resolve(ifindex, peer, Duration::from_secs(3))
            .map_err(|e| format!("resolving {peer}'s MAC over netlink: {e}"))?
            .ok_or_else(|| {
                format!("{peer} did not answer ARP on {iface} — is it on this link? For a router, give --next-hop-mac")
            })?;
        cfg.neighbors.push((peer, peer_mac));
    }
    Ok(cfg)
}

/// How many cores serve `iface`'s `queues` rx queues from queue `first`: `cores` as given, else one per queue from
/// `first`. Queues that do not exist, or that the steering program does not serve (`XTCP_MAX_QUEUES`), are a
/// one-line error saying what to do.
fn plan_cores(iface: &str, queues: u32, first: u32, cores: Option<u32>) -> Result<u32, String> {
    let max = XTCP_MAX_QUEUES;
    if first >= queues {
        return Err(format!("{iface} has {queues} rx queues: --queue {first} is not one of them — lower it"));
    }
    if first >= max {
        return Err(format!("xtcp serves rx queues 0-{} at most: --queue {first} is beyond them — lower it", max - 1));
    }
    let Some(cores) = cores else {
        if queues > max {
            return Err(format!(
                "{iface} has {queues} rx queues; xtcp serves at most {max} — set --cores {} and steer the rest onto \
                 those with `ethtool -L {iface} combined {max}` or `ethtool -X {iface} equal {max}`",
                max - first
            ));
        }
        return Ok(queues - first);
    };
    if cores == 0 || first + cores > queues {
        return Err(format!(
            "{iface} has {queues} rx queues: --queue {first} with --cores {cores} does not fit — lower them"
        ));
    }
    if first + cores > max {
        return Err(format!(
            "xtcp serves rx queues 0-{} at most: --queue {first} with --cores {cores} reaches queue {} — lower them",
            max - 1,
            first + cores - 1
        ));
    }
    Ok(cores)
}

/// Says once, on stderr, which of the interface's rx queues get no socket from `cfg`'s cores.
pub fn warn_unserved_queues(name: &str, cfg: &CoresConfig) {
    // A NIC with Toeplitz RSS sends the replies of xtcp's own connections to their core's queue: with no listening
    // port, no segment of xtcp's lands elsewhere.
    if cfg.ports.is_empty() && cfg.rss.is_some() {
        return;
    }
    let (Ok(queues), Some(cores)) = (afxdp::interface_rx_queues(&cfg.ifname), cfg.cores) else { return };
    if let Some(warning) = unserved_queues(&cfg.ifname, queues, cfg.first_queue, cores as u32) {
        eprintln!("xtcp {name}: warning: {warning}");
    }
}

/// The warning for `iface`'s rx queues (`queues` of them) outside the cores' `first..first + cores`: segments for
/// xtcp that arrive there find no socket and pass to the kernel, which resets their connections. `None` when every
/// queue has a core.
fn unserved_queues(iface: &str, queues: u32, first: u32, cores: u32) -> Option<String> {
    let end = first.saturating_add(cores);
    let span = |a: u32, b: u32| if a == b { a.to_string() } else { format!("{a}-{b}") };
    let mut unserved = Vec::new();
    if first > 0 {
        unserved.push(span(0, first.min(queues) - 1));
    }
    if end < queues {
        unserved.push(span(end, queues - 1));
    }
    if unserved.is_empty() {
        return None;
    }
    let all = (queues <= XTCP_MAX_QUEUES).then_some(queues);
    let todo = match (first, all) {
        (0, Some(all)) => {
            format!("`ethtool -L {iface} combined {end}` (or `ethtool -X {iface} equal {end}`), or --cores {all}")
        }
        (0, None) => format!("`ethtool -L {iface} combined {end}` (or `ethtool -X {iface} equal {end}`)"),
        (_, Some(all)) => format!("steer flows off them (`ethtool -X {iface}`), or --queue 0 --cores {all}"),
        (_, None) => format!("steer flows off them (`ethtool -X {iface}`)"),
    };
    let count = first.min(queues) + queues.saturating_sub(end);
    Some(format!(
        "{iface} has {queues} rx queues and xtcp serves {}: segments for xtcp arriving on {} {} find no socket and \
         go to the kernel, which resets their connections — {todo}",
        span(first, end - 1),
        if count == 1 { "queue" } else { "queues" },
        unserved.join(" and ")
    ))
}

/// What `net`'s flags set in every core's stack: the next hop, the limits, SYN cookies, compaction, and the TCP
/// settings `listen` and `connect` give every connection (congestion control).
fn apply_settings(stack: &mut StackConfig, net: &NetArgs) {
    stack.next_hop_mac = net.next_hop_mac;
    stack.max_connections = net.max_connections as usize;
    stack.syn_backlog = net.syn_backlog as usize;
    stack.max_time_wait = net.max_time_wait as usize;
    stack.compact_after = net.compact_after.0;
    stack.syn_cookies = match net.syn_cookies {
        Cookies::Never => SynCookieMode::Never,
        Cookies::WhenFull => SynCookieMode::WhenFull,
        Cookies::Always => SynCookieMode::Always,
    };
    if let Some(congestion) = net.congestion {
        stack.tcp.congestion = congestion.algorithm();
    }
}

/// The line that says where xtcp runs, once every socket is in place.
pub fn describe(infos: &[CoreInfo], cpus: usize) -> String {
    let cores: Vec<String> = infos
        .iter()
        .map(|i| match i.cpu {
            Some(cpu) => format!("queue {} on CPU {cpu}", i.queue),
            None => format!("queue {}", i.queue),
        })
        .collect();
    let mode = infos.first().map_or(String::new(), |i| format!("{:?}", i.mode));
    let shared = if infos.len() > cpus { format!(" ({} cores share {cpus} CPUs)", infos.len()) } else { String::new() };
    format!(
        "{} core{} ({}), {mode} mode{shared}",
        infos.len(),
        if infos.len() == 1 { "" } else { "s" },
        cores.join(", ")
    )
}

/// After a run: one line of totals, one of the device's drops by reason when there were any, and with several cores
/// one line per core.
pub fn summary<A>(name: &str, report: &CoresReport<A>) {
    let sum = |f: &dyn Fn(&xtcp::engine::Counters) -> u64| report.cores.iter().map(|c| f(&c.counters)).sum::<u64>();
    println!(
        "xtcp {name}: stopped: {} frames in, {} out, {} connections, {} drops, {} handed off between {} cores",
        sum(&|c| c.rx_frames),
        sum(&|c| c.tx_frames),
        sum(&|c| c.conns_opened),
        sum(&|c| c.total_drops()),
        report.total_handoff().handed_out,
        report.cores.len()
    );
    if let Some(drops) = device_drops(report.cores.iter().map(|c| &c.device)) {
        println!("xtcp {name}: device drops: {drops}");
    }
    for c in &report.cores {
        if report.cores.len() > 1 {
            println!(
                "xtcp {name}: core {} (queue {}): {} frames in, {} out, {} connections, {} drops, {} handed off{}",
                c.core,
                c.queue,
                c.counters.rx_frames,
                c.counters.tx_frames,
                c.counters.conns_opened,
                c.counters.total_drops(),
                c.handoff.handed_out,
                device_drops([&c.device]).map_or(String::new(), |d| format!(", device drops: {d}"))
            );
        }
        super::checksum_hint(name, &c.counters);
    }
}

/// The devices' drops by reason that are not zero, summed by name in the order first met (`tx_pool_empty 3,
/// xdp_rx_ring_full 12`); `None` when there are none.
fn device_drops<'a>(devices: impl IntoIterator<Item = &'a DeviceStats>) -> Option<String> {
    let mut sums: Vec<(&str, u64)> = Vec::new();
    for (name, count) in devices.into_iter().flat_map(DeviceStats::nonzero_drops) {
        match sums.iter_mut().find(|(n, _)| *n == name) {
            Some((_, sum)) => *sum = sum.saturating_add(count),
            None => sums.push((name, count)),
        }
    }
    let parts: Vec<String> = sums.iter().map(|(n, c)| format!("{n} {c}")).collect();
    (!parts.is_empty()).then(|| parts.join(", "))
}

/// A warning when listening `port` lies in the kernel's range `(lo, hi)`: allowed, since the kernel may never pick
/// it, but a kernel connection that takes it as its source port would lose its replies to xtcp.
fn in_kernel_range(port: u16, (lo, hi): (u16, u16)) -> Option<String> {
    (lo..=hi).contains(&port).then(|| {
        format!(
            "port {port} is in the kernel's ip_local_port_range ({lo}-{hi}): a kernel connection that takes it as \
             its source port loses its replies to xtcp — choose a port outside it, or narrow \
             net.ipv4.ip_local_port_range"
        )
    })
}

/// The kernel's `net.ipv4.ip_local_port_range`: the source ports of its own connections.
fn kernel_port_range() -> (u16, u16) {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| {
            let mut it = s.split_whitespace().filter_map(|v| v.parse::<u16>().ok());
            Some((it.next()?, it.next()?))
        })
        .unwrap_or((32768, 60999))
}

/// xtcp's source ports for active opens, which the steering program takes from the kernel, and a note to print
/// when they are not what one would expect.
///
/// `asked` (`--ephemeral-ports`) is taken as given, unless a kernel socket listens in it (`listeners`); overlapping
/// the kernel's range (`kernel`, its `ip_local_port_range`) is the caller's choice, noted. Otherwise the ports
/// beside the kernel's range ([`gap_beside`]), or their longest stretch without a kernel listener — never a port
/// the kernel may use: with no room beside its range, an error says how to make some.
pub fn source_ports(
    kernel: (u16, u16),
    asked: Option<RangeInclusive<u16>>,
    listeners: &[u16],
) -> Result<(RangeInclusive<u16>, Option<String>), String> {
    let (lo, hi) = kernel;
    let in_range =
        |range: &RangeInclusive<u16>| -> Vec<u16> { listeners.iter().copied().filter(|p| range.contains(p)).collect() };
    let list = |ports: &[u16]| ports.iter().map(u16::to_string).collect::<Vec<_>>().join(", ");
    if let Some(asked) = asked {
        let (a, b) = (*asked.start(), *asked.end());
        let taken = in_range(&asked);
        if !taken.is_empty() {
            return Err(format!(
                "kernel sockets listen on {} in --ephemeral-ports {a}-{b}; xtcp would take their traffic — choose \
                 a range without them",
                list(&taken)
            ));
        }
        let note = (a <= hi && lo <= b).then(|| {
            format!(
                "--ephemeral-ports {a}-{b} overlaps the kernel's ip_local_port_range ({lo}-{hi}): a kernel \
                 connection from a port in both loses its replies to xtcp"
            )
        });
        return Ok((asked, note));
    }
    let gap = gap_beside(kernel).ok_or_else(|| {
        format!(
            "the kernel's ip_local_port_range ({lo}-{hi}) leaves no ports for xtcp's connections, and xtcp taking \
             the kernel's would reset its connections — narrow it (`sysctl -w \
             net.ipv4.ip_local_port_range=\"32768 60999\"`) or give --ephemeral-ports LO-HI"
        )
    })?;
    let taken = in_range(&gap);
    if taken.is_empty() {
        return Ok((gap, None));
    }
    let (a, b) = (*gap.start(), *gap.end());
    let free = longest_run_without(&gap, &taken);
    if free.len() < MIN_SOURCE_PORTS {
        return Err(format!(
            "kernel sockets listen on {} in {a}-{b}, the ports beside the kernel's ip_local_port_range ({lo}-{hi}), \
             leaving fewer than {MIN_SOURCE_PORTS} together for xtcp's connections — stop them, narrow the \
             kernel's range or give --ephemeral-ports LO-HI",
            list(&taken)
        ));
    }
    let note = format!(
        "kernel sockets listen on {} in {a}-{b}, beside the kernel's ip_local_port_range: xtcp's connections use \
         {}-{} instead",
        list(&taken),
        free.start(),
        free.end()
    );
    Ok((free, Some(note)))
}

/// The fewest source ports [`source_ports`] settles for: one core's.
const MIN_SOURCE_PORTS: usize = xtcp::engine::shard::PortPartition::MIN_PORTS_PER_CORE as usize;

/// The ports the kernel's range `(lo, hi)` leaves free for xtcp: above it (61000–65535 with the default
/// 32768–60999) when there are at least 1024 there, else the larger of that and the gap below it, down to 1024
/// (which holds more well-known service ports); `None` when neither holds [`MIN_SOURCE_PORTS`]. Many source
/// addresses, not a wider range, are the way past this.
fn gap_beside((lo, hi): (u16, u16)) -> Option<RangeInclusive<u16>> {
    let below = usize::from(lo.saturating_sub(1024));
    let above = usize::from(65535 - hi);
    if above >= 1024 || (above >= below && above >= MIN_SOURCE_PORTS) {
        Some(hi + 1..=65535)
    } else if below >= MIN_SOURCE_PORTS {
        Some(1024..=lo - 1)
    } else {
        None
    }
}

/// The longest stretch of `range` holding none of `taken` (the first of equals).
fn longest_run_without(range: &RangeInclusive<u16>, taken: &[u16]) -> RangeInclusive<u16> {
    let mut best = RangeInclusive::new(1, 0);
    let mut start = u32::from(*range.start());
    let mut cuts: Vec<u32> = taken.iter().filter(|p| range.contains(p)).map(|&p| u32::from(p)).collect();
    cuts.sort_unstable();
    cuts.push(u32::from(*range.end()) + 1);
    for cut in cuts {
        if cut > start && (cut - start) as usize > best.len() {
            best = start as u16..=(cut - 1) as u16;
        }
        start = start.max(cut + 1);
    }
    best
}

#[cfg(test)]
mod tests {
    use clap::Parser;
    use xtcp::nic::DeviceStats;
    use xtcp::tcp::Algorithm;
    use xtcp::wire::EthernetAddress;

    use super::*;

    #[derive(Parser)]
    struct Args {
        #[command(flatten)]
        net: NetArgs,
    }

    /// The stack settings a command line gives.
    fn stack_of(flags: &[&str]) -> StackConfig {
        let args = Args::try_parse_from(std::iter::once("xtcp").chain(flags.iter().copied())).unwrap();
        let mut stack = StackConfig::new(EthernetAddress([2, 0, 0, 0, 0, 1]), Ipv4Addr::new(10, 0, 0, 1), 1);
        apply_settings(&mut stack, &args.net);
        stack
    }

    #[test]
    fn congestion_sets_what_every_connection_gets_and_newreno_stays_the_default() {
        assert_eq!(stack_of(&[]).tcp.congestion, Algorithm::NewReno);
        assert_eq!(stack_of(&["--congestion", "newreno"]).tcp.congestion, Algorithm::NewReno);
        assert_eq!(stack_of(&["--congestion", "cubic"]).tcp.congestion, Algorithm::Cubic);
        let bad = Args::try_parse_from(["xtcp", "--congestion", "bbr"]).err().unwrap().to_string();
        assert!(bad.contains("bbr") && bad.contains("newreno") && bad.contains("cubic"), "{bad}");
    }

    #[test]
    fn the_summary_names_the_device_drops_that_are_not_zero_summed_over_cores() {
        let core = |drops: &[(&'static str, u64)]| DeviceStats { drops: drops.to_vec(), values: vec![("tx_kicks", 9)] };
        let cores = [
            core(&[("tx_pool_empty", 3), ("fill_ring_full", 0), ("xdp_rx_ring_full", 0)]),
            core(&[("tx_pool_empty", 1), ("fill_ring_full", 0), ("xdp_rx_ring_full", 12)]),
        ];
        assert_eq!(device_drops(&cores).as_deref(), Some("tx_pool_empty 4, xdp_rx_ring_full 12"));
        assert_eq!(device_drops([&cores[0]]).as_deref(), Some("tx_pool_empty 3"));
        assert_eq!(device_drops([&core(&[("tx_pool_empty", 0)])]), None, "all zero: no line");
        assert_eq!(device_drops([]), None);
    }

    #[test]
    fn the_ephemeral_range_avoids_the_kernels() {
        assert_eq!(gap_beside((32768, 60999)), Some(61000..=65535));
        assert_eq!(gap_beside((40000, 65535)), Some(1024..=39999));
        assert_eq!(gap_beside((20000, 50000)), Some(50001..=65535));
        assert_eq!(gap_beside((20000, 65000)), Some(1024..=19999));
        assert_eq!(gap_beside((1024, 65000)), Some(65001..=65535), "small, but the only room");
        assert_eq!(gap_beside((1024, 65535)), None, "the kernel takes every port: no sharing");
        assert_eq!(gap_beside((1050, 65500)), None, "36 and 26 ports are too few for one core");
        assert_eq!(gap_beside((500, 65535)), None);
    }

    #[test]
    fn a_listening_port_in_the_kernels_range_is_warned_of() {
        assert_eq!(in_kernel_range(80, (32768, 60999)), None);
        assert_eq!(in_kernel_range(61000, (32768, 60999)), None);
        let w = in_kernel_range(40000, (32768, 60999)).unwrap();
        assert!(w.contains("port 40000") && w.contains("(32768-60999)") && !w.contains('\n'), "{w}");
        assert!(in_kernel_range(32768, (32768, 60999)).is_some() && in_kernel_range(60999, (32768, 60999)).is_some());
    }

    #[test]
    fn source_ports_never_take_the_kernels_and_skip_its_listeners() {
        let ok = |kernel, listeners: &[u16]| source_ports(kernel, None, listeners).unwrap();
        assert_eq!(ok((32768, 60999), &[22, 5432, 32768]), (61000..=65535, None), "listeners elsewhere");
        let err = source_ports((1024, 65535), None, &[]).unwrap_err();
        assert!(err.contains("(1024-65535) leaves no ports"), "{err}");
        assert!(err.contains("sysctl -w net.ipv4.ip_local_port_range=\"32768 60999\""), "{err}");
        assert!(!err.contains('\n'), "one line: {err}");
        // A kernel listener in the room beside the kernel's range: its longest free stretch, with a note.
        let (ports, note) = ok((32768, 60999), &[62000, 64000]);
        assert_eq!(ports, 62001..=63999);
        let note = note.unwrap();
        assert!(note.contains("62000, 64000 in 61000-65535") && note.contains("use 62001-63999"), "{note}");
        assert_eq!(ok((32768, 60999), &[61000]).0, 61001..=65535);
        assert_eq!(ok((32768, 60999), &[65535]).0, 61000..=65534);
        let crowded: Vec<u16> = (61000..=65535).step_by(50).collect();
        let err = source_ports((32768, 60999), None, &crowded).unwrap_err();
        assert!(err.contains("fewer than 64 together"), "{err}");
        // Asked for: taken as given, refused over a kernel listener, noted when it overlaps the kernel's range.
        assert_eq!(source_ports((32768, 60999), Some(61000..=61199), &[22]).unwrap(), (61000..=61199, None));
        assert_eq!(source_ports((1024, 65535), Some(2000..=2999), &[]).unwrap().0, 2000..=2999);
        let note = source_ports((1024, 65535), Some(2000..=2999), &[]).unwrap().1.unwrap();
        assert!(note.contains("overlaps the kernel's ip_local_port_range (1024-65535)"), "{note}");
        let err = source_ports((32768, 60999), Some(61000..=61199), &[61100]).unwrap_err();
        assert!(err.contains("listen on 61100 in --ephemeral-ports 61000-61199"), "{err}");
    }

    #[test]
    fn cores_fit_the_queues_and_the_steering_programs_limit_or_say_what_to_do() {
        let plan = |queues, first, cores| plan_cores("eth1", queues, first, cores);
        assert_eq!(plan(8, 0, None), Ok(8), "one core per queue");
        assert_eq!(plan(8, 2, None), Ok(6));
        assert_eq!(plan(8, 0, Some(3)), Ok(3));
        assert_eq!(plan(64, 0, None), Ok(64));
        assert_eq!(plan(96, 0, Some(64)), Ok(64), "asked for: the rest are warned about");
        let err = plan(96, 0, None).unwrap_err();
        assert_eq!(
            err,
            "eth1 has 96 rx queues; xtcp serves at most 64 — set --cores 64 and steer the rest onto those with \
             `ethtool -L eth1 combined 64` or `ethtool -X eth1 equal 64`"
        );
        assert!(plan(96, 4, None).unwrap_err().contains("set --cores 60"));
        assert!(plan(96, 4, Some(61)).unwrap_err().contains("--queue 4 with --cores 61 reaches queue 64"));
        assert!(plan(96, 64, Some(1)).unwrap_err().contains("--queue 64 is beyond them"));
        assert!(plan(8, 8, None).unwrap_err().contains("--queue 8 is not one of them"));
        assert!(plan(8, 4, Some(5)).unwrap_err().contains("does not fit"));
        assert!(plan(8, 0, Some(0)).unwrap_err().contains("does not fit"));
    }

    #[test]
    fn queues_without_a_core_are_named_with_what_to_do() {
        assert_eq!(unserved_queues("eth1", 8, 0, 8), None);
        assert_eq!(unserved_queues("eth1", 1, 0, 1), None);
        let w = unserved_queues("eth1", 8, 0, 2).unwrap();
        assert_eq!(
            w,
            "eth1 has 8 rx queues and xtcp serves 0-1: segments for xtcp arriving on queues 2-7 find no socket and go \
             to the kernel, which resets their connections — `ethtool -L eth1 combined 2` (or `ethtool -X eth1 \
             equal 2`), or --cores 8"
        );
        let w = unserved_queues("eth1", 96, 0, 64).unwrap();
        assert!(w.contains("serves 0-63") && w.contains("queues 64-95") && !w.contains("--cores"), "{w}");
        let w = unserved_queues("veth0", 3, 1, 2).unwrap();
        assert!(w.contains("serves 1-2") && w.contains("queue 0 find") && w.contains("--queue 0 --cores 3"), "{w}");
        let w = unserved_queues("eth1", 8, 2, 1).unwrap();
        assert!(w.contains("serves 2") && w.contains("queues 0-1 and 3-7"), "{w}");
    }

    #[test]
    fn the_longest_run_skips_every_taken_port() {
        assert_eq!(longest_run_without(&(10..=20), &[]), 10..=20);
        assert_eq!(longest_run_without(&(10..=20), &[13, 5, 99]), 14..=20);
        assert_eq!(longest_run_without(&(10..=20), &[17]), 10..=16);
        assert_eq!(longest_run_without(&(10..=20), &[10, 20]), 11..=19);
        assert_eq!(longest_run_without(&(10..=12), &[10, 11, 12]), RangeInclusive::new(1, 0));
        assert_eq!(longest_run_without(&(65530..=65535), &[65532]), 65533..=65535);
    }
}
