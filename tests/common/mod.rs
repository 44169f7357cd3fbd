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
