//! Setting up xtcp on an interface queue over AF_XDP: the checks that turn a bad argument into one line saying what
//! to do, the steering program, the AF_XDP socket, the stack, and a peer's MAC for active opens.

use std::net::Ipv4Addr;
use std::ops::RangeInclusive;
use std::time::Duration;

use xtcp::engine::{Stack, StackConfig};
use xtcp::nic::afxdp::{self, BindMode, Steering, XskConfig, XskDevice};
use xtcp::nic::neigh::Neighbors;
use xtcp::nic::pcap::{PcapConfig, PcapTap};
use xtcp::nic::FrameDevice;
use xtcp::time::Instant;

use super::{is_root, kernel_listens_on, system_seed, Mode, NetArgs};

/// xtcp on one queue of an interface, ready to run.
pub struct XdpPort {
    /// The stack.
    pub stack: Stack,
    /// The AF_XDP socket, behind a pcap tap when one was asked for.
    pub dev: Box<dyn FrameDevice>,
    /// The steering program; dropping it detaches it.
    pub steering: Steering,
    /// Our address.
    pub ip: Ipv4Addr,
    /// The bind mode asked for.
    pub mode: BindMode,
    /// Receive queues the interface has.
    pub queues: u32,
}

/// Opens xtcp on `net`'s interface and queue, steering `listen_ports` to it, and with `active_to` also the
/// stack's ephemeral ports, with that peer's MAC looked up in (or resolved by) the kernel's neighbour table.
pub fn open(name: &str, net: &NetArgs, listen_ports: &[u16], active_to: Option<Ipv4Addr>) -> Result<XdpPort, String> {
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
    let mac = afxdp::interface_mac(iface).map_err(|e| format!("reading {iface}'s MAC address: {e}"))?;
    let mut steering = Steering::load_and_attach(iface, ip, listen_ports.iter().copied())
        .map_err(|e| format!("loading XDP on {iface}: {e}"))?;
    let mut cfg = StackConfig::new(mac, ip, net.seed.unwrap_or_else(system_seed));
    // The kernel keeps ARP (the XDP program passes it on); replies follow the frames' senders.
    cfg.arp = false;
    cfg.next_hop_mac = net.next_hop_mac;
    if active_to.is_some() {
        cfg.ephemeral_ports = ephemeral_ports_beside_the_kernel();
        steering.allow_ports(cfg.ephemeral_ports.clone()).map_err(|e| format!("steering the ephemeral ports: {e}"))?;
    }
    let mode = match net.xdp_mode {
        Mode::Auto => BindMode::Auto,
        Mode::Copy => BindMode::Copy,
        Mode::ZeroCopy => BindMode::ZeroCopy,
    };
    let xsk_cfg = XskConfig { queue: net.queue, mode, ..XskConfig::default() };
    let xsk = XskDevice::open(iface, &xsk_cfg, &steering).map_err(|e| format!("opening AF_XDP on {iface}: {e}"))?;
    let queues = afxdp::interface_rx_queues(iface).unwrap_or(1);
    let mut stack = Stack::new(cfg, Instant::ZERO);
    if let (Some(peer), None) = (active_to, net.next_hop_mac) {
        let peer_mac = neighbors
            .resolve(ifindex, peer, Duration::from_secs(3))
            .map_err(|e| format!("resolving {peer}'s MAC over netlink: {e}"))?
            .ok_or_else(|| {
                format!("{peer} did not answer ARP on {iface} — is it on this link? For a router, give --next-hop-mac")
            })?;
        stack.add_neighbor(peer, peer_mac);
    }
    let dev: Box<dyn FrameDevice> = match &net.pcap {
        Some(path) => {
            let file = std::fs::File::create(path).map_err(|e| format!("creating {}: {e}", path.display()))?;
            Box::new(PcapTap::new(xsk, std::io::BufWriter::new(file), PcapConfig::default()))
        }
        None => Box::new(xsk),
    };
    Ok(XdpPort { stack, dev, steering, ip, mode, queues })
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
    use super::gap_beside;

    #[test]
    fn the_ephemeral_range_avoids_the_kernels() {
        assert_eq!(gap_beside((32768, 60999)), 61000..=65535);
        assert_eq!(gap_beside((40000, 65535)), 1024..=39999);
        assert_eq!(gap_beside((1024, 65535)), 1024..=65535);
        assert_eq!(gap_beside((20000, 50000)), 50001..=65535);
        assert_eq!(gap_beside((20000, 65000)), 1024..=19999);
    }
}
