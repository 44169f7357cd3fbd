//! The kernel's neighbour table, over rtnetlink.
//!
//! On the AF_XDP path xtcp shares the interface's IPv4 address with the kernel, and the kernel keeps ARP (the XDP
//! program passes ARP frames on). A passive open learns the peer's MAC from the SYN's frame; an active open needs
//! it before the SYN goes out, so it reads the kernel's neighbour table and, when the entry is missing, asks the
//! kernel to resolve it — an `RTM_NEWNEIGH` with `NTF_USE` and no state, what `ip neigh replace IP dev IF use nud
//! none` sends — then reads again until the entry is usable. No packet of ours is sent for it: the kernel probes.
//!
//! This runs at connection set-up, never per packet.

use std::io;
use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant as StdInstant};

use netlink_packet_core::{
    NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP, NLM_F_REPLACE, NLM_F_REQUEST,
};
use netlink_packet_route::address::{AddressAttribute, AddressMessage};
use netlink_packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourFlags, NeighbourHeader, NeighbourMessage, NeighbourState,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use netlink_sys::{protocols::NETLINK_ROUTE, Socket, SocketAddr};

use crate::wire::EthernetAddress;

/// How often [`Neighbors::resolve`] looks again while the kernel resolves.
const RESOLVE_POLL: Duration = Duration::from_millis(5);

/// A route netlink socket for neighbour look-ups.
pub struct Neighbors {
    socket: Socket,
    seq: u32,
    buf: Vec<u8>,
}

impl core::fmt::Debug for Neighbors {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Neighbors").field("seq", &self.seq).finish_non_exhaustive()
    }
}

/// One usable entry of the kernel's table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Neighbor {
    /// The interface index.
    pub ifindex: u32,
    /// The neighbour's IPv4 address.
    pub ip: Ipv4Addr,
    /// Its MAC address.
    pub mac: EthernetAddress,
}

impl Neighbors {
    /// Opens a route netlink socket in this process's network namespace.
    pub fn open() -> io::Result<Neighbors> {
        let mut socket = Socket::new(NETLINK_ROUTE)?;
        socket.bind_auto()?;
        socket.connect(&SocketAddr::new(0, 0))?;
        Ok(Neighbors { socket, seq: 0, buf: vec![0; 64 * 1024] })
    }

    /// Every usable IPv4 entry (a MAC address known: REACHABLE, STALE, DELAY, PROBE, PERMANENT or NOARP).
    pub fn dump(&mut self) -> io::Result<Vec<Neighbor>> {
        let mut msg = NeighbourMessage::default();
        msg.header.family = AddressFamily::Inet;
        let seq = self.send(RouteNetlinkMessage::GetNeighbour(msg), NLM_F_REQUEST | NLM_F_DUMP)?;
        let mut found = Vec::new();
        self.receive(seq, |msg| {
            if let RouteNetlinkMessage::NewNeighbour(entry) = msg {
                if let Some(n) = usable(&entry) {
                    found.push(n);
                }
            }
        })?;
        Ok(found)
    }

    /// The IPv4 addresses the kernel has on interface `ifindex` (the same socket serves: it is route netlink).
    pub fn interface_addresses(&mut self, ifindex: u32) -> io::Result<Vec<Ipv4Addr>> {
        let mut msg = AddressMessage::default();
        msg.header.family = AddressFamily::Inet;
        let seq = self.send(RouteNetlinkMessage::GetAddress(msg), NLM_F_REQUEST | NLM_F_DUMP)?;
        let mut found = Vec::new();
        self.receive(seq, |msg| {
            if let RouteNetlinkMessage::NewAddress(a) = msg {
                if a.header.index == ifindex {
                    for attr in &a.attributes {
                        if let AddressAttribute::Local(IpAddr::V4(ip)) | AddressAttribute::Address(IpAddr::V4(ip)) =
                            attr
                        {
                            if !found.contains(ip) {
                                found.push(*ip);
                            }
                        }
                    }
                }
            }
        })?;
        Ok(found)
    }

    /// The MAC address of `ip` on interface `ifindex`, if the kernel knows it.
    pub fn lookup(&mut self, ifindex: u32, ip: Ipv4Addr) -> io::Result<Option<EthernetAddress>> {
        Ok(self.dump()?.into_iter().find(|n| n.ifindex == ifindex && n.ip == ip).map(|n| n.mac))
    }

    /// Asks the kernel to resolve `ip` on `ifindex` (it sends the ARP request); returns once the kernel accepted.
    pub fn request(&mut self, ifindex: u32, ip: Ipv4Addr) -> io::Result<()> {
        let mut msg = NeighbourMessage::default();
        msg.header = NeighbourHeader {
            family: AddressFamily::Inet,
            ifindex,
            state: NeighbourState::None,
            flags: NeighbourFlags::Use,
            ..msg.header
        };
        msg.attributes.push(NeighbourAttribute::Destination(NeighbourAddress::Inet(ip)));
        let flags = NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE;
        let seq = self.send(RouteNetlinkMessage::NewNeighbour(msg), flags)?;
        self.receive(seq, |_| {})
    }

    /// The MAC address of `ip` on `ifindex`: from the table, or after asking the kernel to resolve it and waiting
    /// up to `timeout`. `None` when it does not answer in time (no such host).
    pub fn resolve(&mut self, ifindex: u32, ip: Ipv4Addr, timeout: Duration) -> io::Result<Option<EthernetAddress>> {
        if let Some(mac) = self.lookup(ifindex, ip)? {
            return Ok(Some(mac));
        }
        self.request(ifindex, ip)?;
        let deadline = StdInstant::now() + timeout;
        loop {
            if let Some(mac) = self.lookup(ifindex, ip)? {
                return Ok(Some(mac));
            }
            if StdInstant::now() >= deadline {
                return Ok(None);
            }
            std::thread::sleep(RESOLVE_POLL);
        }
    }

    fn send(&mut self, msg: RouteNetlinkMessage, flags: u16) -> io::Result<u32> {
        self.seq = self.seq.wrapping_add(1);
        let mut header = NetlinkHeader::default();
        header.flags = flags;
        header.sequence_number = self.seq;
        let mut req = NetlinkMessage::new(header, NetlinkPayload::from(msg));
        req.finalize();
        let mut bytes = vec![0; req.buffer_len()];
        req.serialize(&mut bytes);
        self.socket.send(&bytes, 0)?;
        Ok(self.seq)
    }

    /// Reads the answers to request `seq` until its end (DONE, or the ACK), handing each message to `f`.
    fn receive(&mut self, seq: u32, mut f: impl FnMut(RouteNetlinkMessage)) -> io::Result<()> {
        loop {
            let size = self.socket.recv(&mut &mut self.buf[..], 0)?;
            let mut offset = 0;
            while offset < size {
                let msg = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&self.buf[offset..size])
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
                let len = msg.header.length as usize;
                let ours = msg.header.sequence_number == seq;
                match msg.payload {
                    NetlinkPayload::Done(_) if ours => return Ok(()),
                    NetlinkPayload::Error(e) if ours => {
                        return match e.code {
                            None => Ok(()),
                            Some(_) => Err(e.to_io()),
                        };
                    }
                    NetlinkPayload::InnerMessage(inner) if ours => f(inner),
                    _ => {}
                }
                if len == 0 {
                    break;
                }
                offset += len;
            }
        }
    }
}

/// The entry as a [`Neighbor`] when it is IPv4 and its MAC address is known.
fn usable(entry: &NeighbourMessage) -> Option<Neighbor> {
    let ok = matches!(
        entry.header.state,
        NeighbourState::Reachable
            | NeighbourState::Stale
            | NeighbourState::Delay
            | NeighbourState::Probe
            | NeighbourState::Permanent
            | NeighbourState::Noarp
    );
    if !ok || entry.header.family != AddressFamily::Inet {
        return None;
    }
    let mut ip = None;
    let mut mac = None;
    for attr in &entry.attributes {
        match attr {
            NeighbourAttribute::Destination(NeighbourAddress::Inet(a)) => ip = Some(*a),
            NeighbourAttribute::LinkLayerAddress(bytes) => mac = EthernetAddress::from_bytes(bytes),
            _ => {}
        }
    }
    Some(Neighbor { ifindex: entry.header.ifindex, ip: ip?, mac: mac? })
}
