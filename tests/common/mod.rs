//! Shared fixtures for the integration tests: two stacks on a simulated link.
#![allow(dead_code)]

use std::net::{Ipv4Addr, SocketAddrV4};

use xtcp::app::demo::describe_frame;
use xtcp::engine::sim::SimWorld;
use xtcp::engine::{Stack, StackConfig};
use xtcp::nic::fault::{FaultConfig, FaultInjector, Faults};
use xtcp::nic::sim::{LinkConfig, SimLink};
use xtcp::nic::trace::{Direction, Tracer};
use xtcp::nic::FrameDevice;
use xtcp::time::Instant;
use xtcp::wire::EthernetAddress;

pub const CLIENT_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
pub const SERVER_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);
pub const CLIENT_MAC: EthernetAddress = EthernetAddress([0x02, 0, 0, 0, 0, 1]);
pub const SERVER_MAC: EthernetAddress = EthernetAddress([0x02, 0, 0, 0, 0, 2]);
pub const PORT: u16 = 80;

pub fn server_addr() -> SocketAddrV4 {
    SocketAddrV4::new(SERVER_IP, PORT)
}

/// Stack configs for the client (index 0) and the server (index 1), seeded.
pub fn configs(seed: u64) -> [StackConfig; 2] {
    [
        StackConfig::new(CLIENT_MAC, CLIENT_IP, seed.wrapping_mul(2).wrapping_add(1)),
        StackConfig::new(SERVER_MAC, SERVER_IP, seed.wrapping_mul(2).wrapping_add(2)),
    ]
}

/// A client/server world over one link, each side's transmissions passing its own fault injector.
pub fn world(cfgs: [StackConfig; 2], link: LinkConfig, faults: Faults, seed: u64) -> SimWorld {
    let (pa, pb) = SimLink::pair(link);
    let tx_only = FaultConfig { tx: faults, ..FaultConfig::default() };
    let da = FaultInjector::new(pa, tx_only, seed ^ 0xA5A5);
    let db = FaultInjector::new(pb, tx_only, seed ^ 0x5A5A);
    let now = Instant::ZERO;
    let [ca, cb] = cfgs;
    let mut a = Stack::new(ca, now);
    let mut b = Stack::new(cb, now);
    a.add_neighbor(SERVER_IP, SERVER_MAC);
    b.add_neighbor(CLIENT_IP, CLIENT_MAC);
    b.listen(PORT).unwrap();
    if std::env::var_os("XTCP_SIM_TRACE").is_some() {
        // Print what each stack sends, before the faults act on it.
        let trace = |name: &'static str| {
            move |now: Instant, dir: Direction, frame: &[u8]| {
                if dir == Direction::Tx {
                    eprintln!("{now} {name} {}", describe_frame(frame).unwrap_or_default());
                }
            }
        };
        let ta: Box<dyn FrameDevice> = Box::new(Tracer::new(da, trace("c")));
        let tb: Box<dyn FrameDevice> = Box::new(Tracer::new(db, trace("s")));
        return SimWorld::new([a, b], [ta, tb], now);
    }
    SimWorld::new([a, b], [Box::new(da), Box::new(db)], now)
}

/// A device driven by the test: frames queued in `rx` are received in order, transmitted frames land in `tx`.
#[derive(Debug, Default)]
pub struct Script {
    pub rx: std::collections::VecDeque<Vec<u8>>,
    pub tx: Vec<Vec<u8>>,
}

struct ScriptTx<'a>(&'a mut Vec<Vec<u8>>);

impl xtcp::nic::Transmit for ScriptTx<'_> {
    fn transmit(&mut self, _now: Instant, len: usize, fill: &mut dyn FnMut(&mut [u8])) -> bool {
        let mut frame = vec![0; len];
        fill(&mut frame);
        self.0.push(frame);
        true
    }
}

impl xtcp::nic::Transmit for Script {
    fn transmit(&mut self, now: Instant, len: usize, fill: &mut dyn FnMut(&mut [u8])) -> bool {
        ScriptTx(&mut self.tx).transmit(now, len, fill)
    }
}

impl FrameDevice for Script {
    fn receive(
        &mut self,
        _now: Instant,
        budget: usize,
        handler: &mut dyn FnMut(&[u8], &mut dyn xtcp::nic::Transmit),
    ) -> usize {
        let mut n = 0;
        while n < budget {
            let Some(frame) = self.rx.pop_front() else { break };
            handler(&frame, &mut ScriptTx(&mut self.tx));
            n += 1;
        }
        n
    }

    fn flush(&mut self, _now: Instant) {}

    fn max_frame_len(&self) -> usize {
        1514
    }
}

/// An Ethernet + IPv4 + TCP frame carrying `seg` from the client to the server.
pub fn client_frame(seg: &xtcp::wire::TcpRepr<'_>) -> Vec<u8> {
    client_frame_to(SERVER_IP, seg)
}

/// An Ethernet + IPv4 + TCP frame carrying `seg` from the client to `dst` at the server's MAC.
pub fn client_frame_to(dst: Ipv4Addr, seg: &xtcp::wire::TcpRepr<'_>) -> Vec<u8> {
    tcp_frame((CLIENT_MAC, CLIENT_IP), (SERVER_MAC, dst), seg)
}

/// An Ethernet + IPv4 + TCP frame carrying `seg` from the server to the client.
pub fn server_frame(seg: &xtcp::wire::TcpRepr<'_>) -> Vec<u8> {
    tcp_frame((SERVER_MAC, SERVER_IP), (CLIENT_MAC, CLIENT_IP), seg)
}

/// An Ethernet + IPv4 + TCP frame carrying `seg` from `src` to `dst` (each a MAC and an IPv4 address), whatever
/// they are: for frames no honest peer sends.
pub fn tcp_frame(
    src: (EthernetAddress, Ipv4Addr),
    dst: (EthernetAddress, Ipv4Addr),
    seg: &xtcp::wire::TcpRepr<'_>,
) -> Vec<u8> {
    use xtcp::wire::{EtherType, EthernetFrame, EthernetRepr, IpProtocol, Ipv4Packet, Ipv4Repr, TcpPacket};
    let ip = Ipv4Repr {
        src_addr: src.1,
        dst_addr: dst.1,
        protocol: IpProtocol::Tcp,
        payload_len: seg.buffer_len(),
        hop_limit: 64,
        dscp_ecn: 0,
        ident: 1,
        dont_frag: true,
    };
    let eth = EthernetRepr { src_addr: src.0, dst_addr: dst.0, ethertype: EtherType::Ipv4 };
    let mut frame = vec![0; 14 + 20 + seg.buffer_len()];
    let mut e = EthernetFrame::new_unchecked(&mut frame[..]);
    eth.emit(&mut e);
    let mut p = Ipv4Packet::new_unchecked(e.payload_mut());
    ip.emit(&mut p);
    seg.emit(&mut TcpPacket::new_unchecked(p.payload_mut()), src.1, dst.1);
    frame
}

/// The TCP segments in frames a stack sent, parsed.
pub fn sent_segments(frames: &[Vec<u8>]) -> Vec<(xtcp::wire::TcpFlags, u32, u32, u16)> {
    use xtcp::wire::{EthernetFrame, Ipv4Packet, TcpPacket};
    frames
        .iter()
        .filter_map(|f| {
            let e = EthernetFrame::new_checked(&f[..]).ok()?;
            let ip = Ipv4Packet::new_checked(e.payload()).ok()?;
            let t = TcpPacket::new_checked(ip.payload()).ok()?;
            Some((t.flags(), t.seq_number().0, t.ack_number().0, t.dst_port()))
        })
        .collect()
}

/// A server stack (listening on [`PORT`]) and its scripted device.
pub fn scripted_server(cfg: StackConfig) -> (Stack, Script) {
    let mut s = Stack::new(cfg, Instant::ZERO);
    s.add_neighbor(CLIENT_IP, CLIENT_MAC);
    s.listen(PORT).unwrap();
    (s, Script::default())
}

/// A bare SYN from the client's `port` with sequence number `seq`.
pub fn syn(port: u16, seq: u32) -> xtcp::wire::TcpRepr<'static> {
    xtcp::wire::TcpRepr {
        src_port: port,
        dst_port: PORT,
        seq_number: xtcp::wire::SeqNumber(seq),
        ack_number: xtcp::wire::SeqNumber(0),
        flags: xtcp::wire::TcpFlags::SYN,
        window_len: 65535,
        urgent_pointer: 0,
        options: xtcp::wire::TcpOptions { mss: Some(1460), ..Default::default() },
        payload: &[],
    }
}
