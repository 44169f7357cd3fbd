//! Setting up xtcp over AF_XDP on an interface's queues, one pinned core per queue: the checks that turn a bad
//! argument into one line saying what to do, the settings of the cores, and a peer's MAC for active opens.

use std::net::Ipv4Addr;
use std::ops::RangeInclusive;
use std::path::Path;
use std::time::Duration;

use xtcp::engine::control::ControlConfig;
use xtcp::engine::shard::{CoreInfo, CoresConfig, CoresReport};
use xtcp::engine::{StackConfig, SynCookieMode};
use xtcp::nic::afxdp::{self, BindMode};
use xtcp::nic::neigh::Neighbors;
use xtcp::nic::DeviceStats;

use super::{boot_isn_key, is_root, kernel_listens_on, system_seed, Cookies, Mode, NetArgs, ISN_KEY_FILE};

/// Checks `net` and builds the multi-core settings for serving `listen_ports` on its interface and, with
/// `active_to`, opening connections to that peer (its MAC looked up in, or resolved by, the kernel's neighbour
/// table). Every bad argument comes back as one line saying what to do.
pub fn cores_config(
    name: &str,
    net: &NetArgs,
    listen_ports: &[u16],
    active_to: Option<Ipv4Addr>,
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
    for &port in listen_ports {
        if kernel_listens_on(port) {
            return Err(format!(
                "port {port} has a kernel listener; xtcp would take its traffic — stop it or choose another --port"
            ));
        }
    }
    let queues = afxdp::interface_rx_queues(iface).unwrap_or(1);
    let cores = net.cores.map(|c| c as u32).unwrap_or(queues.saturating_sub(net.queue).max(1));
    if cores == 0 || net.queue + cores > queues {
        return Err(format!(
            "{iface} has {queues} rx queues: --queue {} with --cores {cores} does not fit — lower them",
            net.queue
        ));
    }
    let mac = afxdp::interface_mac(iface).map_err(|e| format!("reading {iface}'s MAC address: {e}"))?;
    let mut stack = StackConfig::new(mac, ip, net.seed.unwrap_or_else(system_seed));
    if net.seed.is_none() {
        // A key shared with this boot's other xtcp processes; a seeded run keeps the one its seed gives.
        stack.isn_key = boot_isn_key(Path::new(ISN_KEY_FILE)).ok();
    }
    // The kernel keeps ARP (the XDP program passes it on); replies follow the frames' senders.
    stack.arp = false;
    stack.ephemeral_ports = ephemeral_ports_beside_the_kernel();
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
    if active_to.is_some() {
        // A NIC that spreads flows over its queues with Toeplitz RSS: each core opens connections only from source
        // ports whose replies the NIC hashes to its own queue. veth has no RSS (its receive queue follows the
        // sender's transmit queue, docs/multicore.md): there the port partition and the hand-off do the work.
        cfg.rss = xtcp::engine::shard::interface_rss(iface).ok();
    }
    if let (Some(peer), None) = (active_to, net.next_hop_mac) {
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

/// Source ports for xtcp's active opens that the kernel does not use for its own on the same address: the ports
/// above the kernel's `ip_local_port_range` (61000–65535 with the default 32768–60999) when there are at least 1024
/// of them, else the gap below it (which holds more well-known service ports, whose traffic would be steered to
/// xtcp too). Many source addresses, not a wider range, are the way past this.
pub fn ephemeral_ports_beside_the_kernel() -> RangeInclusive<u16> {
    let kernel = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| {
            let mut it = s.split_whitespace().filter_map(|v| v.parse::<u16>().ok());
            Some((it.next()?, it.next()?))
        })
        .unwrap_or((32768, 60999));
    gap_beside(kernel)
}

fn gap_beside((lo, hi): (u16, u16)) -> RangeInclusive<u16> {
    let below = lo.saturating_sub(1024);
    let above = 65535 - hi;
    if above >= 1024 || (above >= below && above > 0) {
        hi + 1..=65535
    } else if below > 0 {
        1024..=lo - 1
    } else {
        // The kernel takes every port: share its range rather than have none.
        lo..=hi
    }
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
        assert_eq!(gap_beside((32768, 60999)), 61000..=65535);
        assert_eq!(gap_beside((40000, 65535)), 1024..=39999);
        assert_eq!(gap_beside((1024, 65535)), 1024..=65535);
        assert_eq!(gap_beside((20000, 50000)), 50001..=65535);
        assert_eq!(gap_beside((20000, 65000)), 1024..=19999);
    }
}
