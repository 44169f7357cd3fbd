//! `xtcp demo --sim`: the life of one connection, watched.
//!
//! Two stacks on a simulated link: the client connects, sends a greeting, the server answers, the client closes,
//! the server closes, the client waits out TIME_WAIT. Every segment is printed as tcpdump prints it and every
//! state change as it happens; the client's frames go to a pcap file that tcpdump and Wireshark read.

use std::cell::RefCell;
use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::PathBuf;
use std::rc::Rc;
use std::time::Duration;

use crate::engine::sim::SimWorld;
use crate::engine::{ConnId, Stack, StackConfig, StackEvent};
use crate::nic::fault::{FaultConfig, FaultInjector, Faults};
use crate::nic::pcap::{PcapConfig, PcapTap};
use crate::nic::sim::{LinkConfig, SimLink};
use crate::nic::trace::{Direction, Tracer};
use crate::nic::FrameDevice;
use crate::tcp::State;
use crate::time::Instant;
use crate::wire::{EtherType, EthernetAddress, EthernetFrame, IpProtocol, Ipv4Packet, Ipv4Repr, TcpPacket, TcpRepr};

/// What the demo does.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// Where the client's frames are written.
    pub pcap: Option<PathBuf>,
    /// Frames lost, per mille, on each side's transmit path.
    pub loss_per_mille: u32,
    /// Seed of the stacks and the faults.
    pub seed: u64,
    /// One-way link latency.
    pub latency: Duration,
    /// Maximum segment lifetime (TIME_WAIT lasts twice this).
    pub msl: Duration,
    /// The greeting the client sends; the server answers with it reversed.
    pub message: String,
}

const CLIENT: (Ipv4Addr, EthernetAddress) = (Ipv4Addr::new(10, 0, 0, 1), EthernetAddress([2, 0, 0, 0, 0, 1]));
const SERVER: (Ipv4Addr, EthernetAddress) = (Ipv4Addr::new(10, 0, 0, 2), EthernetAddress([2, 0, 0, 0, 0, 2]));
const PORT: u16 = 80;

/// One line per TCP segment, like `tcpdump -n -S`: `0.001000 10.0.0.1.40000 > 10.0.0.2.80: Flags [S], ...`.
pub fn describe_frame(frame: &[u8]) -> Option<String> {
    let eth = EthernetFrame::new_checked(frame).ok()?;
    if eth.ethertype() != EtherType::Ipv4 {
        return Some(format!("{} > {}: ethertype {}", eth.src_addr(), eth.dst_addr(), eth.ethertype()));
    }
    let ip = Ipv4Packet::new_checked(eth.payload()).ok()?;
    let ip_repr = Ipv4Repr::parse(&ip).ok()?;
    if ip_repr.protocol != IpProtocol::Tcp {
        return None;
    }
    let tcp = TcpPacket::new_checked(ip.payload()).ok()?;
    let seg = TcpRepr::parse(&tcp, ip_repr.src_addr, ip_repr.dst_addr, false).ok()?;
    Some(format!("{}.{} > {}.{}: {}", ip_repr.src_addr, seg.src_port, ip_repr.dst_addr, seg.dst_port, seg))
}

/// Runs the demo, writing the narration to `out`.
pub fn run(opts: &DemoOptions, out: &mut dyn Write) -> io::Result<()> {
    let link = LinkConfig { latency: opts.latency, ..LinkConfig::default() };
    let (client_port, server_port) = SimLink::pair(link);
    let faults = Faults { loss_ppm: opts.loss_per_mille * 1000, ..Faults::default() };
    let fault_cfg = FaultConfig { tx: faults, ..FaultConfig::default() };

    // The narration is shared by both tracers; lines are printed in the order frames are sent.
    let lines: Rc<RefCell<Vec<String>>> = Rc::default();
    let tracer = |lines: Rc<RefCell<Vec<String>>>| {
        move |now: Instant, dir: Direction, frame: &[u8]| {
            if dir == Direction::Tx {
                if let Some(line) = describe_frame(frame) {
                    lines.borrow_mut().push(format!("{now} {line}"));
                }
            }
        }
    };
    let client_dev = FaultInjector::new(client_port, fault_cfg, opts.seed ^ 1);
    let server_dev = FaultInjector::new(server_port, fault_cfg, opts.seed ^ 2);
    let client_dev: Box<dyn FrameDevice> = match &opts.pcap {
        Some(path) => {
            let file = BufWriter::new(File::create(path)?);
            Box::new(Tracer::new(PcapTap::new(client_dev, file, PcapConfig::default()), tracer(lines.clone())))
        }
        None => Box::new(Tracer::new(client_dev, tracer(lines.clone()))),
    };
    let server_dev: Box<dyn FrameDevice> = Box::new(Tracer::new(server_dev, tracer(lines.clone())));

    let now = Instant::ZERO;
    let mut cfg_c = StackConfig::new(CLIENT.1, CLIENT.0, opts.seed.wrapping_mul(2));
    let mut cfg_s = StackConfig::new(SERVER.1, SERVER.0, opts.seed.wrapping_mul(2) + 1);
    cfg_c.tcp.msl = opts.msl;
    cfg_s.tcp.msl = opts.msl;
    let mut client = Stack::new(cfg_c, now);
    let mut server = Stack::new(cfg_s, now);
    client.add_neighbor(SERVER.0, SERVER.1);
    server.add_neighbor(CLIENT.0, CLIENT.1);
    server.listen(PORT).map_err(io::Error::other)?;
    let conn = client.connect(SocketAddrV4::new(SERVER.0, PORT)).map_err(io::Error::other)?;
    writeln!(
        out,
        "client {}:{} connects to server {}:{} over a simulated link ({:?} one way, {}‰ loss, seed {})",
        CLIENT.0,
        client.connection(conn).map(|c| c.local().port()).unwrap_or(0),
        SERVER.0,
        PORT,
        opts.latency,
        opts.loss_per_mille,
        opts.seed
    )?;
    writeln!(out, "{} client: CLOSED -> SYN_SENT (active open)", now)?;

    let mut world = SimWorld::new([client, server], [client_dev, server_dev], now);
    let mut last_states: [Vec<(ConnId, State)>; 2] = [vec![(conn, State::SynSent)], vec![]];
    let mut server_conn: Option<ConnId> = None;
    let mut sent_greeting = false;
    let mut answered = false;
    let mut buf = [0u8; 4096];
    let mut narration: Vec<String> = Vec::new();
    let message = opts.message.as_bytes().to_vec();
    let done = world.run(Instant::from_secs(3600), |stacks, now| {
        let mut notes = Vec::new();
        // States are looked at before the application acts (so that CLOSE_WAIT shows before the close that ends
        // it) and after.
        observe(stacks, &mut last_states, now, &mut notes);
        while let Some(ev) = stacks[0].next_event() {
            match ev {
                StackEvent::Connected(id) if !sent_greeting => {
                    let _ = stacks[0].send(id, &message);
                    sent_greeting = true;
                    notes.push(format!("{now} client: sends {:?}", opts.message));
                }
                StackEvent::Readable(id) => {
                    let n = stacks[0].recv(id, &mut buf).unwrap_or(0);
                    notes.push(format!("{now} client: reads {:?}, closes", String::from_utf8_lossy(&buf[..n])));
                    let _ = stacks[0].close(id);
                }
                StackEvent::Closed(_, reason) => notes.push(format!("{now} client: connection gone ({reason:?})")),
                _ => {}
            }
        }
        while let Some(ev) = stacks[1].next_event() {
            match ev {
                StackEvent::Accepted { conn, .. } => server_conn = Some(conn),
                StackEvent::Readable(id) if !answered => {
                    let n = stacks[1].recv(id, &mut buf).unwrap_or(0);
                    let reply: Vec<u8> = buf[..n].iter().rev().copied().collect();
                    let _ = stacks[1].send(id, &reply);
                    answered = true;
                    notes.push(format!(
                        "{now} server: reads {:?}, answers {:?}",
                        String::from_utf8_lossy(&buf[..n]),
                        String::from_utf8_lossy(&reply)
                    ));
                }
                StackEvent::PeerClosed(id) => {
                    notes.push(format!("{now} server: peer closed; closes too"));
                    let _ = stacks[1].close(id);
                }
                StackEvent::Closed(_, reason) => notes.push(format!("{now} server: connection gone ({reason:?})")),
                _ => {}
            }
        }
        observe(stacks, &mut last_states, now, &mut notes);
        // Frames first (they were sent before the state changes they caused were observed), then notes.
        narration.append(&mut lines.borrow_mut());
        narration.extend(notes);
        let _ = server_conn;
        answered && stacks.iter().all(|s| s.connection_count() == 0)
    });
    narration.append(&mut lines.borrow_mut());
    for line in &narration {
        writeln!(out, "{line}")?;
    }
    drop(world);
    if let Some(path) = &opts.pcap {
        writeln!(out, "client's frames written to {} (tcpdump -nr {} reads them)", path.display(), path.display())?;
    }
    if !done {
        return Err(io::Error::other("the demo did not finish within an hour of simulated time"));
    }
    Ok(())
}

/// Notes every state change since the last look: `client: SYN_SENT -> ESTABLISHED`.
fn observe(stacks: &[Stack; 2], last: &mut [Vec<(ConnId, State)>; 2], now: Instant, notes: &mut Vec<String>) {
    const NAMES: [&str; 2] = ["client", "server"];
    for side in 0..2 {
        let current: Vec<(ConnId, State)> = stacks[side].connections().map(|(id, c)| (id, c.state())).collect();
        for &(id, state) in &current {
            let before = last[side].iter().find(|(i, _)| *i == id).map(|&(_, s)| s);
            if before != Some(state) {
                let from = before.unwrap_or(if side == 1 { State::Listen } else { State::Closed });
                notes.push(format!("{now} {}: {} -> {}", NAMES[side], from, state));
            }
        }
        for &(id, state) in &last[side] {
            if !current.iter().any(|(i, _)| *i == id) {
                notes.push(format!("{now} {}: {} -> CLOSED", NAMES[side], state));
            }
        }
        last[side] = current;
    }
}
