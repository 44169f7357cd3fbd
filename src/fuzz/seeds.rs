//! Seed inputs recorded from real exchanges: a second [`Stack`] (the peer, a plain client and server) talks to
//! the [`Harness`]'s stack, and every frame it sends becomes an [`Op::Frame`] of the recorded input, next to the
//! harness's own application calls and clock advances. Replayed through [`super::stack()`], a seed reproduces the
//! exchange exactly (everything is seeded and the clock is simulated), so the fuzzer starts from inputs that
//! already reach the handshake, data transfer, loss recovery, the teardowns and RST; the frames of both
//! directions are the seeds of [`super::wire()`].
//!
//! `XTCP_WRITE_FUZZ_SEEDS=1 cargo test --test fuzz_regressions` writes them to `fuzz/corpus/`.

use std::collections::HashMap;
use std::net::SocketAddrV4;

use super::stack::{
    app_byte, stream_byte, Device, Harness, Op, LISTEN_PORTS, PEER_IP, PEER_MAC, PEER_PORT_BASE, STACK_IP,
};
use crate::engine::{ConnId, Stack, StackConfig, StackEvent};
use crate::time::Instant;
use crate::wire::{ArpOperation, ArpPacket, ArpRepr, EtherType, EthernetFrame, Ipv4Packet, TcpPacket};

/// One exchange being recorded.
#[derive(Debug)]
struct Recorder {
    harness: Harness,
    input: Vec<u8>,
    peer: Stack,
    /// The peer's device: frames the harness's stack sent wait in `rx`; the peer's own land in `tx`.
    dev: Device,
    /// Every frame, both directions, in order.
    frames: Vec<Vec<u8>>,
    /// Bytes the peer queued and read, per connection.
    peer_sent: HashMap<ConnId, usize>,
    peer_read: HashMap<ConnId, u64>,
    /// The peer's connections, in the order they were made.
    peer_conns: Vec<ConnId>,
    peer_closed: usize,
    /// Data segments of the harness's stack still to pass before one is lost on the way to the peer.
    lose_after: Option<usize>,
}

impl Recorder {
    fn new(settings: [u8; 2]) -> Recorder {
        let mut harness = Harness::new(settings);
        harness.record();
        let mut cfg = StackConfig::new(PEER_MAC, PEER_IP, 7);
        cfg.ephemeral_ports = PEER_PORT_BASE..=PEER_PORT_BASE + 7;
        cfg.tcp.msl = std::time::Duration::from_secs(1);
        let mut peer = Stack::new(cfg, Instant::ZERO);
        peer.listen(PEER_PORT_BASE).expect("peer listens");
        // The harness's stack learns the peer's address from ARP (an active open asks); the peer knows it.
        peer.add_neighbor(STACK_IP, super::stack::STACK_MAC);
        Recorder {
            harness,
            input: settings.to_vec(),
            peer,
            dev: Device::new(usize::MAX),
            frames: Vec::new(),
            peer_sent: HashMap::new(),
            peer_read: HashMap::new(),
            peer_conns: Vec::new(),
            peer_closed: 0,
            lose_after: None,
        }
    }

    /// Records `op`, runs it, and hands what the stack sent to the peer (less a lost segment).
    fn op(&mut self, op: Op<'_>) {
        op.encode(&mut self.input);
        self.harness.step(&op);
        for frame in self.harness.take_sent() {
            if carries_data(&frame) {
                match self.lose_after {
                    Some(0) => {
                        self.lose_after = None;
                        continue;
                    }
                    Some(n) => self.lose_after = Some(n - 1),
                    None => {}
                }
            }
            self.frames.push(frame.clone());
            self.dev.rx.push_back(frame);
        }
    }

    /// Lets the two sides talk until neither has anything to say at this instant.
    fn pump(&mut self) {
        for _ in 0..1000 {
            self.peer.poll(self.harness.now(), &mut self.dev);
            self.peer_events();
            let out = std::mem::take(&mut self.dev.tx);
            if out.is_empty() && self.dev.rx.is_empty() {
                return;
            }
            for frame in out {
                self.frames.push(frame.clone());
                self.op(Op::Frame(&frame));
            }
        }
        panic!("the exchange never went quiet");
    }

    /// Advances the clock by `ms` and lets both sides act.
    fn wait(&mut self, ms: u16) {
        self.op(Op::Advance { ms });
        self.pump();
    }

    /// Waits in steps of `ms` until both sides are idle or `steps` have passed.
    fn settle(&mut self, ms: u16, steps: usize) {
        for _ in 0..steps {
            if self.peer.poll_at().is_none() && self.harness.stack().poll_at().is_none() {
                return;
            }
            self.wait(ms);
        }
    }

    fn peer_events(&mut self) {
        while let Some(ev) = self.peer.next_event() {
            match ev {
                StackEvent::Accepted { conn, .. } | StackEvent::Connected(conn) => self.peer_conns.push(conn),
                StackEvent::Readable(conn) | StackEvent::PeerClosed(conn) => {
                    let mut buf = [0u8; 4096];
                    while let Ok(n @ 1..) = self.peer.recv(conn, &mut buf) {
                        let read = self.peer_read.entry(conn).or_default();
                        for &b in &buf[..n] {
                            assert_eq!(b, app_byte(*read), "the peer read a wrong byte");
                            *read += 1;
                        }
                    }
                }
                StackEvent::Closed(..) => self.peer_closed += 1,
                StackEvent::Writable(_) => {}
            }
        }
    }

    /// Waits in steps of `ms` until the peer has `n` connections.
    fn until_connected(&mut self, n: usize, ms: u16) {
        for _ in 0..100 {
            if self.peer_conns.len() >= n {
                return;
            }
            self.wait(ms);
        }
        panic!("the peer's connection {n} never came up");
    }

    /// The peer's `i`th connection.
    fn peer_conn(&self, i: usize) -> ConnId {
        self.peer_conns[i]
    }

    /// The peer sends `n` bytes that follow the harness's stream rule.
    fn peer_send(&mut self, conn: ConnId, n: usize) {
        let iss = self.peer.connection(conn).expect("peer connection").iss();
        let sent = self.peer_sent.entry(conn).or_default();
        let data: Vec<u8> = (0..n).map(|k| stream_byte((iss + 1 + *sent + k).0)).collect();
        let queued = self.peer.send(conn, &data).expect("peer send");
        assert_eq!(queued, n, "the peer's send buffer took everything");
        *sent += n;
    }

    fn peer_connect(&mut self, port: u16) {
        self.peer.connect(SocketAddrV4::new(STACK_IP, port)).expect("peer connect");
        self.pump();
    }

    fn finish(self) -> (Vec<u8>, Vec<Vec<u8>>) {
        (self.input, self.frames)
    }
}

fn carries_data(frame: &[u8]) -> bool {
    let Ok(eth) = EthernetFrame::new_checked(frame) else { return false };
    let Ok(ip) = Ipv4Packet::new_checked(eth.payload()) else { return false };
    TcpPacket::new_checked(ip.payload()).is_ok_and(|t| !t.payload().is_empty())
}

/// Settings: timestamps, SACK, window scaling and Nagle on; four connections, a backlog of one, one frame per
/// poll. See [`super::stack::config`].
const FULL: [u8; 2] = [0x0f, 0x03];

/// The seeds of the `stack` target, by name.
pub fn stack_seeds() -> Vec<(&'static str, Vec<u8>)> {
    exchanges().into_iter().map(|(name, input, _)| (name, input)).collect()
}

/// The seeds of the `wire` target: the first frame of each kind seen in the exchanges.
pub fn wire_seeds() -> Vec<(String, Vec<u8>)> {
    let mut seen = HashMap::new();
    for (_, _, frames) in exchanges() {
        for frame in frames {
            seen.entry(kind(&frame)).or_insert(frame);
        }
    }
    let mut seeds: Vec<(String, Vec<u8>)> = seen.into_iter().collect();
    seeds.sort();
    seeds
}

/// A name for the kind of a frame: `arp-request`, `tcp-12` (the flags byte in hex), `tcp-18-data`, `tcp-10-sack`.
fn kind(frame: &[u8]) -> String {
    let Ok(eth) = EthernetFrame::new_checked(frame) else { return "short".into() };
    if eth.ethertype() == EtherType::Arp {
        return match ArpPacket::new_checked(eth.payload()).and_then(|p| ArpRepr::parse(&p)) {
            Ok(ArpRepr::EthernetIpv4 { operation: ArpOperation::Request, .. }) => "arp-request".into(),
            _ => "arp-reply".into(),
        };
    }
    let Ok(ip) = Ipv4Packet::new_checked(eth.payload()) else { return "ipv4".into() };
    let Ok(tcp) = TcpPacket::new_checked(ip.payload()) else { return "ipv4".into() };
    let options = crate::wire::TcpOptions::parse(tcp.options()).unwrap_or_default();
    let mut name = format!("tcp-{:02x}", tcp.flags().0);
    if !tcp.payload().is_empty() {
        name.push_str("-data");
    }
    if !options.sack_blocks.is_empty() {
        name.push_str("-sack");
    }
    name
}

/// A recorded exchange: its name, the `stack` input, and the frames seen.
type Exchange = (&'static str, Vec<u8>, Vec<Vec<u8>>);

/// Every recorded exchange.
fn exchanges() -> Vec<Exchange> {
    let mut out = Vec::new();
    let mut add = |name, r: Recorder| {
        let (input, frames) = r.finish();
        out.push((name, input, frames));
    };

    // A request and its answer; the peer closes first, the harness's stack passes through CLOSE_WAIT and
    // LAST_ACK.
    let mut r = Recorder::new(FULL);
    r.peer_connect(LISTEN_PORTS[0]);
    let c = r.peer_conn(0);
    r.peer_send(c, 120);
    r.pump();
    r.op(Op::Recv { conn: 0, len: 4096 });
    r.op(Op::Send { conn: 0, len: 600 });
    r.pump();
    r.wait(50);
    r.peer.close(c).expect("peer close");
    r.pump();
    r.op(Op::Recv { conn: 0, len: 4096 });
    r.op(Op::Close { conn: 0 });
    r.pump();
    r.settle(500, 10);
    assert_eq!((r.peer_read[&c], r.peer_closed), (600, 1), "request-response");
    add("request-response", r);

    // The harness's stack closes first after a transfer larger than the window: FIN_WAIT_1, FIN_WAIT_2,
    // TIME_WAIT, and the 2·MSL wait.
    let mut r = Recorder::new(FULL);
    r.peer_connect(LISTEN_PORTS[1]);
    let c = r.peer_conn(0);
    r.op(Op::Send { conn: 0, len: 30_000 });
    r.op(Op::Close { conn: 0 });
    r.pump();
    r.settle(20, 50);
    r.peer.close(c).expect("peer close");
    r.pump();
    r.settle(500, 10);
    assert!(r.peer_read[&c] > 16_000, "close-first: the peer read {}", r.peer_read[&c]);
    add("close-first", r);

    // Loss: one data segment of the harness's stack never reaches the peer, which SACKs what follows.
    let mut r = Recorder::new(FULL);
    r.peer_connect(LISTEN_PORTS[0]);
    let c = r.peer_conn(0);
    r.lose_after = Some(2);
    r.op(Op::Send { conn: 0, len: 12_000 });
    r.pump();
    r.settle(50, 40);
    assert_eq!(r.peer_read[&c], 12_000, "sack-recovery");
    r.peer.abort(c).expect("peer abort");
    r.pump();
    add("sack-recovery", r);

    // The peer sends data and resets the connection; the application reads, then hears of the reset.
    let mut r = Recorder::new([0x07, 0x0b]);
    r.peer_connect(LISTEN_PORTS[0]);
    let c = r.peer_conn(0);
    r.peer_send(c, 3000);
    r.pump();
    r.op(Op::Recv { conn: 0, len: 1000 });
    r.peer.abort(c).expect("peer abort");
    r.pump();
    r.wait(10);
    add("peer-reset", r);

    // An active open from the harness's stack: ARP, SYN, data both ways, then an abort.
    let mut r = Recorder::new(FULL);
    r.op(Op::Connect { peer: 0 });
    r.pump();
    r.until_connected(1, 250);
    let c = r.peer_conn(0);
    r.op(Op::Send { conn: 0, len: 1000 });
    r.peer_send(c, 500);
    r.pump();
    r.wait(50);
    r.op(Op::Recv { conn: 0, len: 4096 });
    r.op(Op::Abort { conn: 0 });
    r.pump();
    assert_eq!(r.peer_read[&c], 1000, "active-open");
    add("active-open", r);

    // No options offered, one connection allowed: a second connection waits in SYN retransmissions until the
    // first closes.
    let mut r = Recorder::new([0x00, 0x00]);
    r.peer_connect(LISTEN_PORTS[0]);
    r.peer_connect(LISTEN_PORTS[0]);
    let c = r.peer_conn(0);
    r.peer_send(c, 10);
    r.pump();
    r.op(Op::Recv { conn: 0, len: 100 });
    r.op(Op::Send { conn: 0, len: 10 });
    r.op(Op::Close { conn: 0 });
    r.pump();
    r.peer.close(c).expect("peer close");
    r.pump();
    r.settle(1000, 8);
    add("table-full", r);
    out
}
