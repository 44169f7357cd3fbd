//! The `stack` harness: one [`Stack`] under a simulated clock, fed by operations decoded from the fuzz input.
//!
//! The input starts with two bytes of settings (TCP options offered, buffer sizes, limits — all small, so that
//! limits bite), then holds [`Op`]s back to back until it ends. The peer is whatever the fuzzer writes: frames
//! taken raw from the input, or segments whose Ethernet, IPv4 and TCP headers (checksums included) are built for
//! the stack's address and a chosen port, with sequence and acknowledgment numbers given relative to the
//! connection's own `RCV.NXT` and `SND.NXT`, so that the fuzzer reaches the handshake, data, FIN and RST of every
//! state. The application is the harness: it sends, reads, closes, aborts and releases the connections the
//! events name, and opens connections of its own.
//!
//! After every step the harness asserts what must hold whatever the peer sends:
//! - limits: the table never holds more than `max_connections`, a listener never more than `syn_backlog`
//!   half-open connections, the timer wheel never overflows, no event is lost;
//! - counters: every received frame is counted once, as used or as exactly one drop; every connection opened is
//!   in the table or was counted closed;
//! - handles: a handle works until its `Closed` event and never after; events name only connections the
//!   application knows;
//! - the streams: every frame the stack sends parses with valid checksums; its payload is exactly the bytes the
//!   application queued, at their place in sequence space, and FIN comes right after them, only after `close`;
//!   the bytes the application reads are the peer's, in order (the peer's payload byte at sequence number `s` is
//!   always [`stream_byte`]`(s)`, so retransmissions and overlaps agree; a raw frame that breaks this turns the
//!   read check off for the rest of the run).
//!
//! At the end every handle is released and the clock runs on with a silent peer: then every connection, table
//! slot and timer must be gone.

use std::collections::{HashMap, VecDeque};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::Duration;

use super::Cursor;
use crate::app::demo::describe_frame;
use crate::engine::{ConnId, Drop, Stack, StackConfig, StackError, StackEvent, SynCookieMode};
use crate::nic::{FrameDevice, Transmit};
use crate::tcp::{Algorithm, Keepalive, State};
use crate::time::Instant;
use crate::wire::{
    ArpOperation, ArpPacket, ArpRepr, EtherType, EthernetAddress, EthernetFrame, EthernetRepr, IpProtocol, Ipv4Packet,
    Ipv4Repr, SackBlocks, SeqNumber, TcpFlags, TcpOptions, TcpPacket, TcpRepr,
};

/// The stack's MAC address.
pub const STACK_MAC: EthernetAddress = EthernetAddress([0x02, 0, 0, 0, 0, 2]);
/// The stack's IPv4 address.
pub const STACK_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);
/// The peer's MAC address (the source of built frames).
pub const PEER_MAC: EthernetAddress = EthernetAddress([0x02, 0, 0, 0, 0, 1]);
/// The peer's IPv4 address.
pub const PEER_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
/// The ports the stack listens on.
pub const LISTEN_PORTS: [u16; 2] = [80, 443];
/// A port nobody listens on.
pub const CLOSED_PORT: u16 = 81;
/// The peer's ports: `PEER_PORT_BASE` and the seven after it.
pub const PEER_PORT_BASE: u16 = 40000;
/// The stack's seed: fixed, so that every input replays.
pub const STACK_SEED: u64 = 0x5eed;

/// The largest payload of a built segment.
const MAX_PAYLOAD: usize = 4096;
/// The largest raw frame.
const MAX_FRAME: usize = 2048;

/// The peer's payload byte at sequence number `seq`: a fixed function, so that every copy of a byte agrees.
pub fn stream_byte(seq: u32) -> u8 {
    (seq.wrapping_mul(0x9e37_79b1) >> 24) as u8
}

/// The application's byte at offset `k` of what it sends.
pub fn app_byte(k: u64) -> u8 {
    ((k as u32).wrapping_mul(0x85eb_ca6b) >> 24) as u8 ^ 0x5a
}

/// The stack's configuration for the two settings bytes at the start of an input.
pub fn config(settings: [u8; 2]) -> StackConfig {
    let [a, b] = settings;
    let mut cfg = StackConfig::new(STACK_MAC, STACK_IP, STACK_SEED);
    cfg.tcp.timestamps = a & 0x01 != 0;
    cfg.tcp.sack = a & 0x02 != 0;
    cfg.tcp.window_scaling = a & 0x04 != 0;
    cfg.tcp.nagle = a & 0x08 != 0;
    cfg.tcp.congestion = if a & 0x10 != 0 { Algorithm::Cubic } else { Algorithm::NewReno };
    cfg.verify_checksums = a & 0x20 == 0;
    cfg.arp = a & 0x40 == 0;
    let buffer_bytes = if a & 0x80 != 0 { 2048 } else { 16 * 1024 };
    cfg.tcp.send_buffer_bytes = buffer_bytes;
    cfg.tcp.recv_buffer_bytes = buffer_bytes;
    cfg.max_connections = 1 + usize::from(b & 0x03);
    cfg.syn_backlog = 1 + usize::from((b >> 2) & 0x01);
    cfg.rx_batch = 1 + usize::from((b >> 3) & 0x03);
    cfg.tcp.mss = if b & 0x40 != 0 { 536 } else { 1460 };
    if b & 0x80 != 0 {
        cfg.tcp.keepalive =
            Some(Keepalive { idle: Duration::from_secs(10), interval: Duration::from_secs(1), probes: 3 });
    }
    // Short timeouts, so that a few advances of the clock reach them and the final drain ends soon.
    cfg.tcp.syn_retries = 3;
    cfg.tcp.data_retries = 4;
    cfg.tcp.rto_max = Duration::from_secs(4);
    cfg.tcp.msl = Duration::from_secs(1);
    cfg.tcp.fin_wait_2_timeout = Some(Duration::from_secs(5));
    // Every bit of the two bytes has a use above; the hardening limits take combinations of them.
    let mix = a ^ b;
    cfg.syn_cookies = match mix & 0x03 {
        0 => SynCookieMode::Always,
        1 => SynCookieMode::Never,
        _ => SynCookieMode::WhenFull,
    };
    if mix & 0x0c == 0 {
        cfg.max_buffer_bytes = 4096;
    }
    if mix & 0x10 != 0 {
        cfg.max_time_wait = 0;
    }
    cfg.max_listeners = LISTEN_PORTS.len();
    cfg.max_events = 4096;
    cfg.max_neighbors = 4;
    cfg
}

/// How many frames the device takes per step for the settings: few, so that the device refuses some.
fn tx_capacity(settings: [u8; 2]) -> usize {
    if settings[1] & 0x20 != 0 {
        2
    } else {
        64
    }
}

/// A segment from the peer with headers built by the harness.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Segment {
    /// Which 4-tuple: see [`Harness::tuple`].
    pub target: u8,
    /// Control bits.
    pub flags: u8,
    /// Added to the connection's `RCV.NXT` (or the peer's ISN when there is no connection).
    pub seq_delta: u32,
    /// Added to the connection's `SND.NXT`.
    pub ack_delta: u32,
    /// The window field.
    pub window: u16,
    /// Bit 0 MSS, 1 window scale, 2 SACK permitted, 3 timestamps, 4 SACK blocks (bits 5–6: count less one).
    pub options: u8,
    /// The MSS option.
    pub mss: u16,
    /// The window-scale option.
    pub window_scale: u8,
    /// TSval is the peer's clock in ms plus this (signed); TSecr the stack's last TSval plus the second.
    pub ts_deltas: [u8; 2],
    /// SACK blocks as signed 16-bit offsets from the acknowledgment number.
    pub sack: [(u16, u16); 4],
    /// Payload length; the bytes are [`stream_byte`]s.
    pub payload_len: u16,
}

/// One step of a run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op<'a> {
    /// A frame as it is.
    Frame(&'a [u8]),
    /// A segment with headers built for the stack.
    Segment(Segment),
    /// TCP header, options and payload from the input, in valid IPv4 and Ethernet headers with the checksum
    /// fixed; ports from `target`, sequence and acknowledgment numbers relative as in [`Segment`], payload bytes
    /// replaced by [`stream_byte`]s.
    RawSegment {
        /// Which 4-tuple, as [`Segment::target`].
        target: u8,
        /// At least 20 bytes are used (zero-padded).
        bytes: &'a [u8],
    },
    /// An ARP request (or reply) from the peer for the stack's address.
    Arp {
        /// A request, else a reply.
        request: bool,
    },
    /// The clock moves on.
    Advance {
        /// By this many milliseconds.
        ms: u16,
    },
    /// The clock moves to the stack's next timer.
    AdvanceToTimer,
    /// The application sends.
    Send {
        /// Which connection: see [`Harness::pick`].
        conn: u8,
        /// How many bytes.
        len: u16,
    },
    /// The application reads.
    Recv {
        /// Which connection.
        conn: u8,
        /// The buffer's size.
        len: u16,
    },
    /// The application closes its side.
    Close {
        /// Which connection.
        conn: u8,
    },
    /// The application aborts.
    Abort {
        /// Which connection.
        conn: u8,
    },
    /// The application releases the handle.
    Release {
        /// Which connection.
        conn: u8,
    },
    /// The application opens a connection to the peer's port `PEER_PORT_BASE + peer % 8`.
    Connect {
        /// Which peer port.
        peer: u8,
    },
}

const OPS: u8 = 12;

impl<'a> Op<'a> {
    /// Reads one operation; any bytes decode to something.
    pub fn decode(c: &mut Cursor<'a>) -> Op<'a> {
        match c.u8() % OPS {
            0 => {
                let len = usize::from(c.u16()) % (MAX_FRAME + 1);
                Op::Frame(c.take(len))
            }
            1 => {
                let mut s = Segment {
                    target: c.u8(),
                    flags: c.u8(),
                    seq_delta: c.u32(),
                    ack_delta: c.u32(),
                    window: c.u16(),
                    options: c.u8(),
                    ..Segment::default()
                };
                if s.options & 0x01 != 0 {
                    s.mss = c.u16();
                }
                if s.options & 0x02 != 0 {
                    s.window_scale = c.u8();
                }
                if s.options & 0x08 != 0 {
                    s.ts_deltas = [c.u8(), c.u8()];
                }
                if s.options & 0x10 != 0 {
                    for i in 0..=usize::from((s.options >> 5) & 0x03) {
                        s.sack[i] = (c.u16(), c.u16());
                    }
                }
                s.payload_len = c.u16() % (MAX_PAYLOAD as u16 + 1);
                Op::Segment(s)
            }
            2 => {
                let target = c.u8();
                let len = usize::from(c.u16()) % (MAX_FRAME + 1);
                Op::RawSegment { target, bytes: c.take(len) }
            }
            3 => Op::Arp { request: c.u8() & 1 == 0 },
            4 => Op::Advance { ms: c.u16() },
            5 => Op::AdvanceToTimer,
            6 => Op::Send { conn: c.u8(), len: c.u16() },
            7 => Op::Recv { conn: c.u8(), len: c.u16() },
            8 => Op::Close { conn: c.u8() },
            9 => Op::Abort { conn: c.u8() },
            10 => Op::Release { conn: c.u8() },
            _ => Op::Connect { peer: c.u8() },
        }
    }

    /// Appends the bytes that [`Op::decode`] reads back as this operation.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let len16 = |n: usize| u16::try_from(n).expect("op field fits in 16 bits").to_be_bytes();
        match *self {
            Op::Frame(frame) => {
                assert!(frame.len() <= MAX_FRAME);
                out.push(0);
                out.extend_from_slice(&len16(frame.len()));
                out.extend_from_slice(frame);
            }
            Op::Segment(s) => {
                out.extend_from_slice(&[1, s.target, s.flags]);
                out.extend_from_slice(&s.seq_delta.to_be_bytes());
                out.extend_from_slice(&s.ack_delta.to_be_bytes());
                out.extend_from_slice(&s.window.to_be_bytes());
                out.push(s.options);
                if s.options & 0x01 != 0 {
                    out.extend_from_slice(&s.mss.to_be_bytes());
                }
                if s.options & 0x02 != 0 {
                    out.push(s.window_scale);
                }
                if s.options & 0x08 != 0 {
                    out.extend_from_slice(&s.ts_deltas);
                }
                if s.options & 0x10 != 0 {
                    for i in 0..=usize::from((s.options >> 5) & 0x03) {
                        out.extend_from_slice(&s.sack[i].0.to_be_bytes());
                        out.extend_from_slice(&s.sack[i].1.to_be_bytes());
                    }
                }
                out.extend_from_slice(&s.payload_len.to_be_bytes());
            }
            Op::RawSegment { target, bytes } => {
                assert!(bytes.len() <= MAX_FRAME);
                out.extend_from_slice(&[2, target]);
                out.extend_from_slice(&len16(bytes.len()));
                out.extend_from_slice(bytes);
            }
            Op::Arp { request } => out.extend_from_slice(&[3, u8::from(!request)]),
            Op::Advance { ms } => {
                out.push(4);
                out.extend_from_slice(&ms.to_be_bytes());
            }
            Op::AdvanceToTimer => out.push(5),
            Op::Send { conn, len } | Op::Recv { conn, len } => {
                out.push(if matches!(self, Op::Send { .. }) { 6 } else { 7 });
                out.push(conn);
                out.extend_from_slice(&len.to_be_bytes());
            }
            Op::Close { conn } => out.extend_from_slice(&[8, conn]),
            Op::Abort { conn } => out.extend_from_slice(&[9, conn]),
            Op::Release { conn } => out.extend_from_slice(&[10, conn]),
            Op::Connect { peer } => out.extend_from_slice(&[11, peer]),
        }
    }
}

/// Runs one input: settings, operations, then the final drain. Panics when an invariant breaks.
pub fn stack(data: &[u8]) {
    let mut c = Cursor::new(data);
    let settings = [c.u8(), c.u8()];
    let mut h = Harness::new(settings);
    while !c.is_empty() {
        let op = Op::decode(&mut c);
        h.step(&op);
    }
    h.finish();
}

/// The in-memory device: frames queued by the harness are received in order; frames sent are kept for the
/// harness to check, up to a capacity per step, after which the device refuses.
#[derive(Debug)]
pub(super) struct Device {
    pub(super) rx: VecDeque<Vec<u8>>,
    pub(super) tx: Vec<Vec<u8>>,
    tx_capacity: usize,
    /// Frames taken, over the whole run.
    tx_accepted: u64,
}

impl Device {
    /// An empty device that takes up to `tx_capacity` frames per step.
    pub(super) fn new(tx_capacity: usize) -> Device {
        Device { rx: VecDeque::new(), tx: Vec::new(), tx_capacity, tx_accepted: 0 }
    }
}

impl Transmit for Device {
    fn transmit(&mut self, _now: Instant, len: usize, fill: &mut dyn FnMut(&mut [u8])) -> bool {
        if self.tx.len() >= self.tx_capacity || len > MAX_FRAME {
            return false;
        }
        let mut frame = vec![0; len];
        fill(&mut frame);
        self.tx.push(frame);
        self.tx_accepted += 1;
        true
    }
}

impl FrameDevice for Device {
    fn receive(&mut self, _now: Instant, budget: usize, handler: &mut dyn FnMut(&[u8], &mut dyn Transmit)) -> usize {
        let mut n = 0;
        while n < budget {
            let Some(frame) = self.rx.pop_front() else { break };
            handler(&frame, self);
            n += 1;
        }
        n
    }

    fn flush(&mut self, _now: Instant) {}

    fn max_frame_len(&self) -> usize {
        MAX_FRAME
    }
}

/// A connection the application knows.
#[derive(Debug, Clone, Copy)]
struct AppConn {
    id: ConnId,
    /// Bytes queued with `send`.
    sent: u64,
    /// Bytes read with `recv`.
    read: u64,
    /// `close` succeeded.
    closed: bool,
    /// An active open not yet connected.
    connecting: bool,
}

/// The stack, its device, the clock and the application's view. See the [module docs](self).
#[derive(Debug)]
pub struct Harness {
    stack: Stack,
    dev: Device,
    now: Instant,
    conns: Vec<AppConn>,
    /// Handles whose `Closed` event came, the latest last (at most 8).
    stale: VecDeque<ConnId>,
    /// A frame broke the [`stream_byte`] rule: reads are no longer checked.
    tainted: bool,
    /// Frames handed to the stack.
    delivered: u64,
    /// Bytes the application read, over the run.
    bytes_read: u64,
    /// The stack's last TSval per (local port, remote port).
    tsval: HashMap<(u16, u16), u32>,
    /// Frames the stack sent, kept for [`Harness::take_sent`] when `record` is set.
    sent: Vec<Vec<u8>>,
    record: bool,
    /// `XTCP_FUZZ_TRACE` is set: print each step.
    trace: bool,
}

impl Harness {
    /// A stack configured by `settings`, listening on [`LISTEN_PORTS`].
    pub fn new(settings: [u8; 2]) -> Harness {
        let cfg = config(settings);
        let now = Instant::ZERO;
        let mut stack = Stack::new(cfg, now);
        for port in LISTEN_PORTS {
            stack.listen(port).expect("listen");
        }
        assert_eq!(stack.listen(8080), Err(StackError::ListenerExists), "the listener limit holds");
        let dev = Device::new(tx_capacity(settings));
        Harness {
            stack,
            dev,
            now,
            conns: Vec::new(),
            stale: VecDeque::new(),
            tainted: false,
            delivered: 0,
            bytes_read: 0,
            tsval: HashMap::new(),
            sent: Vec::new(),
            record: false,
            trace: std::env::var_os("XTCP_FUZZ_TRACE").is_some(),
        }
    }

    /// Keeps the frames the stack sends for [`Harness::take_sent`] (the seed recorder's peer reads them).
    pub fn record(&mut self) {
        self.record = true;
    }

    /// The frames the stack sent since the last call (with [`Harness::record`]).
    pub fn take_sent(&mut self) -> Vec<Vec<u8>> {
        std::mem::take(&mut self.sent)
    }

    /// The simulated time.
    pub fn now(&self) -> Instant {
        self.now
    }

    /// The stack.
    pub fn stack(&self) -> &Stack {
        &self.stack
    }

    /// Bytes the application read over the run, on every connection.
    pub fn bytes_read(&self) -> u64 {
        self.bytes_read
    }

    /// True while every byte read is checked against the peer's stream: no frame has broken the
    /// [`stream_byte`] rule.
    pub fn checks_reads(&self) -> bool {
        !self.tainted
    }

    /// One operation, a poll of the stack, and the checks.
    pub fn step(&mut self, op: &Op<'_>) {
        if self.trace {
            match op {
                Op::Frame(f) => eprintln!("{} op frame {}", self.now, describe_frame(f).unwrap_or_default()),
                _ => eprintln!("{} op {op:?}", self.now),
            }
        }
        match *op {
            Op::Frame(frame) => self.deliver(frame.to_vec()),
            Op::Segment(ref s) => {
                let frame = self.build_segment(s);
                self.deliver(frame);
            }
            Op::RawSegment { target, bytes } => {
                let frame = self.build_raw_segment(target, bytes);
                self.deliver(frame);
            }
            Op::Arp { request } => {
                let arp = ArpRepr::EthernetIpv4 {
                    operation: if request { ArpOperation::Request } else { ArpOperation::Reply },
                    source_hardware_addr: PEER_MAC,
                    source_protocol_addr: PEER_IP,
                    target_hardware_addr: if request { EthernetAddress([0; 6]) } else { STACK_MAC },
                    target_protocol_addr: STACK_IP,
                };
                let dst = if request { EthernetAddress::BROADCAST } else { STACK_MAC };
                let eth = EthernetRepr { src_addr: PEER_MAC, dst_addr: dst, ethertype: EtherType::Arp };
                let mut frame = vec![0u8; 14 + arp.buffer_len()];
                let mut view = EthernetFrame::new_unchecked(&mut frame[..]);
                eth.emit(&mut view);
                arp.emit(&mut ArpPacket::new_unchecked(view.payload_mut()));
                self.deliver(frame);
            }
            Op::Advance { ms } => self.now += Duration::from_millis(u64::from(ms)),
            Op::AdvanceToTimer => {
                if let Some(t) = self.stack.poll_at() {
                    self.now = self.now.max(t);
                }
            }
            Op::Send { conn, len } => self.app_call(conn, |h, c| {
                let start = c.sent;
                let data: Vec<u8> = (0..u64::from(len)).map(|k| app_byte(start + k)).collect();
                match h.stack.send(c.id, &data) {
                    Ok(n) => {
                        assert!(n <= data.len());
                        c.sent += n as u64;
                        Ok(())
                    }
                    Err(e) => Err(e),
                }
            }),
            Op::Recv { conn, len } => self.app_call(conn, |h, c| {
                let mut buf = vec![0u8; usize::from(len) % 8192];
                let irs = h.stack.connection(c.id).map(|conn| conn.irs());
                let n = h.stack.recv(c.id, &mut buf)?;
                assert!(n <= buf.len());
                if let (false, Ok(irs)) = (h.tainted, irs) {
                    for (j, &b) in buf[..n].iter().enumerate() {
                        let seq = (irs + 1 + (c.read as usize) + j).0;
                        assert_eq!(b, stream_byte(seq), "byte {} of the stream read (seq {seq})", c.read as usize + j);
                    }
                }
                c.read += n as u64;
                h.bytes_read += n as u64;
                Ok(())
            }),
            Op::Close { conn } => self.app_call(conn, |h, c| {
                h.stack.close(c.id)?;
                c.closed = true;
                Ok(())
            }),
            Op::Abort { conn } => self.app_call(conn, |h, c| h.stack.abort(c.id)),
            Op::Release { conn } => self.app_call(conn, |h, c| h.stack.release(c.id)),
            Op::Connect { peer } => {
                let remote = SocketAddrV4::new(PEER_IP, PEER_PORT_BASE + u16::from(peer % 8));
                let full = self.stack.connection_count() >= self.stack.config().max_connections;
                match self.stack.connect(remote) {
                    Ok(id) => {
                        assert!(!full, "connect succeeded with the table full");
                        self.conns.push(AppConn { id, sent: 0, read: 0, closed: false, connecting: true });
                    }
                    Err(StackError::TableFull) => assert!(full, "connect refused with room in the table"),
                    Err(e) => panic!("connect: {e}"),
                }
            }
        }
        self.poll();
    }

    /// Releases every handle, then lets the clock run with a silent peer: everything must go away.
    pub fn finish(&mut self) {
        let ids: Vec<ConnId> = self.conns.iter().map(|c| c.id).collect();
        if self.trace {
            eprintln!("{} finish: releasing {ids:?} {:?}", self.now, self.stack.counters());
            for (id, c) in self.stack.connections() {
                eprintln!("  {id:?} {:?} {} unread {}", c.state(), c.remote(), c.recv_queue_len());
            }
        }
        for id in ids {
            assert_eq!(self.stack.release(id), Ok(()), "release of a live handle");
        }
        // A release that frees at once owes no poll, but its Closed event is queued: drain it.
        self.poll();
        let deadline = self.now + Duration::from_secs(3600);
        for _ in 0..10_000 {
            let Some(t) = self.stack.poll_at() else { break };
            assert!(t < deadline, "the stack still has work an hour after the peer fell silent");
            self.now = self.now.max(t);
            self.poll();
            // Connections the application hears of only now (none should: no frame arrives) go too.
            let ids: Vec<ConnId> = self.conns.iter().map(|c| c.id).collect();
            for id in ids {
                let _ = self.stack.release(id);
            }
        }
        let s = &self.stack;
        assert_eq!(
            (s.connection_count(), s.slots_in_use(), s.pending_timers()),
            (0, 0, 0),
            "connections, slots or timers left after every handle was released and the peer fell silent"
        );
        assert!(self.conns.is_empty(), "handles without a Closed event: {:?}", self.conns);
    }

    /// Calls `f` on the connection `sel` picks; a stale handle must fail with `NoConnection`, a live one must not.
    fn app_call(&mut self, sel: u8, f: impl FnOnce(&mut Harness, &mut AppConn) -> Result<(), StackError>) {
        if sel & 0x80 != 0 && !self.stale.is_empty() {
            let id = self.stale[usize::from(sel & 0x7f) % self.stale.len()];
            let mut c = AppConn { id, sent: 0, read: 0, closed: false, connecting: false };
            assert_eq!(f(self, &mut c), Err(StackError::NoConnection), "a stale handle worked");
            return;
        }
        let Some(i) = self.pick(sel) else { return };
        let mut c = self.conns[i];
        let result = f(self, &mut c);
        assert_ne!(result, Err(StackError::NoConnection), "a handle failed before its Closed event");
        self.conns[i] = c;
    }

    /// The index of the known connection `sel` picks, if any.
    fn pick(&self, sel: u8) -> Option<usize> {
        (!self.conns.is_empty()).then(|| usize::from(sel) % self.conns.len())
    }

    fn deliver(&mut self, frame: Vec<u8>) {
        if self.trace {
            eprintln!("  in  {}", describe_frame(&frame).unwrap_or_else(|| format!("{} bytes", frame.len())));
        }
        if !self.tainted && !follows_stream_rule(&frame) {
            self.tainted = true;
        }
        self.dev.rx.push_back(frame);
    }

    /// Polls until the device has handed over every frame, then drains events and checks.
    fn poll(&mut self) {
        self.delivered += self.dev.rx.len() as u64;
        for _ in 0..64 {
            self.stack.poll(self.now, &mut self.dev);
            if self.dev.rx.is_empty() {
                break;
            }
        }
        assert!(self.dev.rx.is_empty(), "the stack stopped taking frames");
        if self.trace {
            eprintln!("  timers {} next {:?}", self.stack.pending_timers(), self.stack.poll_at());
            for (id, c) in self.stack.connections() {
                eprintln!(
                    "  conn {}/{} {:?} {} unread {}",
                    id.slot(),
                    self.stack.connection_count(),
                    c.state(),
                    c.remote(),
                    c.recv_queue_len()
                );
            }
        }
        self.drain_events();
        self.check_sent();
        self.check_invariants();
    }

    fn known(&self, id: ConnId) -> Option<usize> {
        self.conns.iter().position(|c| c.id == id)
    }

    fn drain_events(&mut self) {
        while let Some(ev) = self.stack.next_event() {
            if self.trace {
                eprintln!("  event {ev:?}");
            }
            match ev {
                StackEvent::Accepted { conn, port } => {
                    assert!(LISTEN_PORTS.contains(&port), "accepted on port {port}");
                    assert!(self.known(conn).is_none(), "{conn:?} accepted twice");
                    assert!(!self.stale.contains(&conn), "a stale handle came back");
                    self.conns.push(AppConn { id: conn, sent: 0, read: 0, closed: false, connecting: false });
                }
                StackEvent::Connected(conn) => {
                    let i = self.known(conn).expect("Connected for a connection we did not open");
                    assert!(self.conns[i].connecting, "Connected twice");
                    self.conns[i].connecting = false;
                }
                StackEvent::Readable(conn) | StackEvent::Writable(conn) | StackEvent::PeerClosed(conn) => {
                    assert!(self.known(conn).is_some(), "{ev:?} for a connection the application does not know");
                }
                StackEvent::Closed(conn, _) => {
                    let i = self.known(conn).expect("Closed for a connection the application does not know");
                    self.conns.swap_remove(i);
                    if self.stale.len() == 8 {
                        self.stale.pop_front();
                    }
                    self.stale.push_back(conn);
                }
            }
        }
    }

    /// Every frame sent is well formed and from us; TCP payload and FIN are where the application put them.
    fn check_sent(&mut self) {
        let frames = std::mem::take(&mut self.dev.tx);
        for frame in &frames {
            if self.trace {
                eprintln!("  out {}", describe_frame(frame).unwrap_or_else(|| format!("{} bytes", frame.len())));
            }
            let eth = EthernetFrame::new_checked(&frame[..]).expect("sent frame: Ethernet");
            assert_eq!(eth.src_addr(), STACK_MAC, "sent frame: source MAC");
            match eth.ethertype() {
                EtherType::Arp => {
                    let arp = ArpRepr::parse(&ArpPacket::new_checked(eth.payload()).expect("sent ARP checks"))
                        .expect("sent ARP parses");
                    let ArpRepr::EthernetIpv4 { source_hardware_addr, source_protocol_addr, .. } = arp;
                    assert_eq!((source_hardware_addr, source_protocol_addr), (STACK_MAC, STACK_IP));
                }
                EtherType::Ipv4 => self.check_sent_tcp(eth.payload()),
                other => panic!("sent a frame of ethertype {other}"),
            }
        }
        if self.record {
            self.sent.extend(frames);
        }
    }

    fn check_sent_tcp(&mut self, bytes: &[u8]) {
        let ip = Ipv4Packet::new_checked(bytes).expect("sent IPv4 checks");
        let ip_repr = Ipv4Repr::parse(&ip).expect("sent IPv4 parses, checksum included");
        assert_eq!((ip_repr.src_addr, ip_repr.protocol), (STACK_IP, IpProtocol::Tcp));
        let tcp = TcpPacket::new_checked(ip.payload()).expect("sent TCP checks");
        let seg = TcpRepr::parse(&tcp, ip_repr.src_addr, ip_repr.dst_addr, true).expect("sent TCP parses");
        if let Some((tsval, _)) = seg.options.timestamp {
            self.tsval.insert((seg.src_port, seg.dst_port), tsval);
        }
        if seg.flags.rst() {
            return;
        }
        let remote = SocketAddrV4::new(ip_repr.dst_addr, seg.dst_port);
        let Some((id, iss)) = self
            .stack
            .connections()
            .find(|(_, c)| c.local().port() == seg.src_port && c.remote() == remote)
            .map(|(id, c)| (id, c.iss()))
        else {
            return;
        };
        let app = self.known(id).map(|i| self.conns[i]);
        let (queued, closed) = app.map_or((0, false), |c| (c.sent, c.closed));
        let data_seq = seg.seq_number + usize::from(seg.flags.syn());
        // Wrapping: a byte before the stream's start shows as a huge offset, past what was queued.
        let first = u64::from(data_seq.0.wrapping_sub((iss + 1).0));
        for (j, &b) in seg.payload.iter().enumerate() {
            let k = first + j as u64;
            assert!(k < queued, "sent byte {k} of a stream the application queued {queued} bytes of");
            assert_eq!(b, app_byte(k), "sent byte {k} differs from the application's");
        }
        if seg.flags.fin() {
            assert!(closed, "FIN before the application closed");
            assert_eq!(first + seg.payload.len() as u64, queued, "FIN not right after the data");
        }
    }

    fn check_invariants(&self) {
        let s = &self.stack;
        let cfg = s.config();
        let k = s.counters();
        assert!(s.connection_count() <= cfg.max_connections, "table over its limit");
        assert!(s.slots_in_use() >= s.connection_count());
        assert!(s.pending_timers() <= s.slots_in_use(), "more timers than connections");
        assert!(s.compact_count() <= s.connection_count(), "a compacted connection out of the table");
        assert_eq!(k.conns_compacted - k.conns_woken, s.compact_count() as u64, "compactions less wakes");
        for port in LISTEN_PORTS {
            let half_open =
                s.connections().filter(|(_, c)| c.state() == State::SynReceived && c.local().port() == port).count();
            assert!(half_open <= cfg.syn_backlog, "listener {port}: {half_open} half-open connections");
        }
        assert_eq!(k.rx_frames, self.delivered, "frames received");
        assert_eq!(k.tx_frames, self.dev.tx_accepted, "frames sent");
        let rx_drops: u64 = [Drop::Malformed, Drop::BadChecksum, Drop::Fragment, Drop::NotForUs, Drop::Unsupported]
            .into_iter()
            .map(|d| k.dropped(d))
            .sum();
        assert_eq!(k.rx_frames, k.tcp_in + k.arp_in + rx_drops, "every frame used or dropped once: {k:?}");
        let closed = k.conns_closed + k.conns_reset + k.conns_timed_out + k.conns_aborted;
        assert_eq!(k.conns_opened, closed + s.connection_count() as u64, "connections opened: {k:?}");
        assert!(k.rst_sent <= k.tcp_in);
        assert!(k.tcp_out <= k.tx_frames);
        assert_eq!((k.events_dropped, k.timer_wheel_full), (0, 0));
    }

    /// The 4-tuple `target` picks, as (our port, the peer's port): bits 0–2 pick the peer's port; bits 3–4 our
    /// port: a listener, the closed port, or the port of an active open to that peer port.
    pub fn tuple(&self, target: u8) -> (u16, u16) {
        let peer = PEER_PORT_BASE + u16::from(target & 0x07);
        let local = match (target >> 3) & 0x03 {
            0 => LISTEN_PORTS[0],
            1 => LISTEN_PORTS[1],
            2 => CLOSED_PORT,
            _ => self
                .stack
                .connections()
                .map(|(_, c)| (c.local().port(), c.remote().port()))
                .find(|&(l, r)| r == peer && !LISTEN_PORTS.contains(&l))
                .map_or(LISTEN_PORTS[0], |(l, _)| l),
        };
        (local, peer)
    }

    /// (RCV.NXT, SND.NXT) of the connection on the tuple, or (the peer's ISN, 0) when there is none.
    fn bases(&self, local: u16, peer: u16) -> (SeqNumber, SeqNumber) {
        self.stack
            .connections()
            .find(|(_, c)| c.local().port() == local && c.remote() == SocketAddrV4::new(PEER_IP, peer))
            .map(|(_, c)| (c.rcv_nxt(), c.snd_nxt()))
            .unwrap_or((SeqNumber(1_000_000 * u32::from(peer - PEER_PORT_BASE + 1)), SeqNumber(0)))
    }

    fn build_segment(&self, s: &Segment) -> Vec<u8> {
        let (local, peer) = self.tuple(s.target);
        let (rcv_nxt, snd_nxt) = self.bases(local, peer);
        let seq = SeqNumber(rcv_nxt.0.wrapping_add(s.seq_delta));
        let ack = SeqNumber(snd_nxt.0.wrapping_add(s.ack_delta));
        let mut options = TcpOptions::default();
        if s.options & 0x01 != 0 {
            options.mss = Some(s.mss);
        }
        if s.options & 0x02 != 0 {
            options.window_scale = Some(s.window_scale);
        }
        options.sack_permitted = s.options & 0x04 != 0;
        if s.options & 0x08 != 0 {
            let tsval = (self.now.total_millis() as u32).wrapping_add(s.ts_deltas[0] as i8 as u32);
            let last = self.tsval.get(&(local, peer)).copied().unwrap_or(0);
            options.timestamp = Some((tsval, last.wrapping_add(s.ts_deltas[1] as i8 as u32)));
        }
        if s.options & 0x10 != 0 {
            let mut blocks = SackBlocks::default();
            for &(l, r) in &s.sack[..=usize::from((s.options >> 5) & 0x03)] {
                let at = |d: u16| SeqNumber(ack.0.wrapping_add(d as i16 as u32));
                blocks.push(at(l), at(r));
            }
            options.sack_blocks = blocks;
        }
        let flags = TcpFlags(s.flags);
        let data_seq = seq + usize::from(flags.syn());
        let payload: Vec<u8> = (0..usize::from(s.payload_len)).map(|j| stream_byte((data_seq + j).0)).collect();
        let seg = TcpRepr {
            src_port: peer,
            dst_port: local,
            seq_number: seq,
            ack_number: ack,
            flags,
            window_len: s.window,
            urgent_pointer: 0,
            options,
            payload: &payload,
        };
        let mut tcp = vec![0u8; seg.buffer_len()];
        seg.emit(&mut TcpPacket::new_unchecked(&mut tcp[..]), PEER_IP, STACK_IP);
        ip_frame(&tcp)
    }

    fn build_raw_segment(&self, target: u8, bytes: &[u8]) -> Vec<u8> {
        let mut tcp = bytes.to_vec();
        if tcp.len() < 20 {
            tcp.resize(20, 0);
        }
        let (local, peer) = self.tuple(target);
        let (rcv_nxt, snd_nxt) = self.bases(local, peer);
        let mut view = TcpPacket::new_unchecked(&mut tcp[..]);
        view.set_src_port(peer);
        view.set_dst_port(local);
        view.set_seq_number(SeqNumber(rcv_nxt.0.wrapping_add(view.seq_number().0)));
        view.set_ack_number(SeqNumber(snd_nxt.0.wrapping_add(view.ack_number().0)));
        let header_len = view.header_len();
        if (20..=view.segment_len()).contains(&header_len) {
            let data_seq = view.seq_number() + usize::from(view.flags().syn());
            for (j, b) in view.payload_mut().iter_mut().enumerate() {
                *b = stream_byte((data_seq + j).0);
            }
        }
        view.fill_checksum(PEER_IP, STACK_IP);
        ip_frame(&tcp)
    }
}

/// `tcp` from the peer to the stack in IPv4 and Ethernet headers.
fn ip_frame(tcp: &[u8]) -> Vec<u8> {
    let ip = Ipv4Repr {
        src_addr: PEER_IP,
        dst_addr: STACK_IP,
        protocol: IpProtocol::Tcp,
        payload_len: tcp.len(),
        hop_limit: 64,
        dscp_ecn: 0,
        ident: 0,
        dont_frag: true,
    };
    let eth = EthernetRepr { src_addr: PEER_MAC, dst_addr: STACK_MAC, ethertype: EtherType::Ipv4 };
    let mut frame = vec![0u8; 14 + ip.buffer_len()];
    let mut view = EthernetFrame::new_unchecked(&mut frame[..]);
    eth.emit(&mut view);
    let mut packet = Ipv4Packet::new_unchecked(view.payload_mut());
    ip.emit(&mut packet);
    packet.payload_mut().copy_from_slice(tcp);
    frame
}

/// False when `frame` carries TCP payload (however broken the rest) whose bytes are not [`stream_byte`]s of
/// their sequence numbers.
fn follows_stream_rule(frame: &[u8]) -> bool {
    let Ok(eth) = EthernetFrame::new_checked(frame) else { return true };
    let Ok(ip) = Ipv4Packet::new_checked(eth.payload()) else { return true };
    let Ok(tcp) = TcpPacket::new_checked(ip.payload()) else { return true };
    let data_seq = tcp.seq_number() + usize::from(tcp.flags().syn());
    tcp.payload().iter().enumerate().all(|(j, &b)| b == stream_byte((data_seq + j).0))
}
