//! Engine benchmarks: one segment through [`Stack::poll`] with one connection and with a million in the table.
//!
//! The table is filled the way a server fills it: clients' SYNs come in through a device, the stack answers each
//! with a SYN-ACK, and the client's ACK (echoing the SYN-ACK's sequence number and timestamp) makes the connection
//! ESTABLISHED, 64 connections per poll. Every segment carries timestamps, as from a Linux peer; checksums are
//! verified. The clients sit on 17 addresses with up to 60,000 ports each.
//!
//! - `deliver_ack/{1,1m}`: one [`Stack::poll`] that takes one frame: a pure ACK for an established, idle
//!   connection (nothing in flight either way, so it needs no reply). Ethernet, IPv4 and TCP parsing with both
//!   checksums, the 4-tuple lookup, [`xtcp::tcp::Connection::process`], the connection's (empty) transmit and
//!   timer and event bookkeeping, and the poll's own work (timer wheel, dirty list, flush). With 1M connections
//!   the ACKs go to 65,536 connections drawn at random from the million, in a fixed random order, so that the
//!   table, the slots and the connections are mostly out of cache as with real traffic.
//! - `deliver_ack_batch_64/{1,1m}`: the same with 64 frames per poll, as the run loop takes them under load;
//!   throughput is per frame.
//! - `echo_round_trip/64`: one 64-byte echo exchange with both ends in one stack over a [`Loopback`]: the
//!   client's send, its segment out and back in, the server's read and answer, the answer's segment, the
//!   client's read — the user-space work of one round trip of `xtcp load` against `xtcp echo`, less the device.
//!
//! After filling the table the bench prints the process's resident memory (VmRSS) to stderr, before and after,
//! and the difference per connection. Connections are made with 512-byte send and receive buffers: xtcp
//! allocates both buffers when the connection is made, and the default 256 KiB each would need 512 GiB for a
//! million.
//!
//! With `-- --test` (and under `cargo test`) the big table holds 10,000 connections instead, so that the smoke
//! run takes a second. Run with `cargo bench --bench engine`.

use std::hint::black_box;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant as WallClock};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use xtcp::engine::{Stack, StackConfig, StackEvent};
use xtcp::nic::loopback::Loopback;
use xtcp::nic::{FrameDevice, Transmit};
use xtcp::tcp::{self, Connection};
use xtcp::time::Instant;
use xtcp::wire::{
    EtherType, EthernetAddress, EthernetFrame, EthernetRepr, IpProtocol, Ipv4Packet, Ipv4Repr, SeqNumber, TcpFlags,
    TcpOptions, TcpPacket, TcpRepr,
};

const SERVER_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);
const SERVER_MAC: EthernetAddress = EthernetAddress([0x02, 0, 0, 0, 0, 2]);
const CLIENT_MAC: EthernetAddress = EthernetAddress([0x02, 0, 0, 0, 0, 1]);
const SERVER_PORT: u16 = 80;
/// Clients are 10.1.0.0, 10.1.0.1, ... with ports from `CLIENT_PORT_BASE`, this many per address.
const PORTS_PER_CLIENT: usize = 60_000;
const CLIENT_PORT_BASE: u16 = 1024;
/// The clients' TSval: their clock stands still, like the stack's.
const CLIENT_TSVAL: u32 = 1_000_000;
/// The virtual time of the whole bench.
const NOW: Instant = Instant::from_secs(10);
/// Connections in the big table (10,000 in smoke mode).
const MANY: usize = 1_000_000;
/// Distinct connections the ACKs go to in the big table.
const TARGETS: usize = 1 << 16;
/// Frames per poll while filling, and in the batch benches.
const BATCH: usize = 64;
/// Send and receive buffer bytes of every connection.
const BUFFER_BYTES: usize = 512;

/// True when criterion runs each bench once (`--test`, `cargo test`) or only lists them.
fn smoke_mode() -> bool {
    let args: Vec<String> = std::env::args().collect();
    args.iter().any(|a| a == "--test" || a == "--list") || !args.iter().any(|a| a == "--bench")
}

/// Deterministic pseudo-random numbers (splitmix64).
fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Client `i`'s address and port.
fn client(i: usize) -> (Ipv4Addr, u16) {
    let ip = u32::from(Ipv4Addr::new(10, 1, 0, 0)) + (i / PORTS_PER_CLIENT) as u32;
    (Ipv4Addr::from(ip), CLIENT_PORT_BASE + (i % PORTS_PER_CLIENT) as u16)
}

/// The client index of an address and port made by [`client`].
fn client_index(ip: Ipv4Addr, port: u16) -> usize {
    let host = u32::from(ip) - u32::from(Ipv4Addr::new(10, 1, 0, 0));
    host as usize * PORTS_PER_CLIENT + usize::from(port - CLIENT_PORT_BASE)
}

/// Client `i`'s initial sequence number.
fn client_isn(i: usize) -> SeqNumber {
    SeqNumber((i as u32).wrapping_mul(2_654_435_761))
}

/// Client `i`'s SYN, with the options a Linux client offers.
fn syn(i: usize) -> TcpRepr<'static> {
    TcpRepr {
        src_port: client(i).1,
        dst_port: SERVER_PORT,
        seq_number: client_isn(i),
        ack_number: SeqNumber(0),
        flags: TcpFlags::SYN,
        window_len: 64240,
        urgent_pointer: 0,
        options: TcpOptions {
            mss: Some(1460),
            window_scale: Some(7),
            sack_permitted: true,
            timestamp: Some((CLIENT_TSVAL, 0)),
            ..TcpOptions::default()
        },
        payload: &[],
    }
}

/// What the server said in its SYN-ACK to a client.
#[derive(Debug, Clone, Copy, Default)]
struct SynAck {
    iss: SeqNumber,
    tsval: u32,
}

/// Client `i`'s ACK of the SYN-ACK; sent again later, a pure ACK that changes nothing.
fn ack(i: usize, syn_ack: SynAck) -> TcpRepr<'static> {
    TcpRepr {
        src_port: client(i).1,
        dst_port: SERVER_PORT,
        seq_number: client_isn(i) + 1,
        ack_number: syn_ack.iss + 1,
        flags: TcpFlags::ACK,
        window_len: 502,
        urgent_pointer: 0,
        options: TcpOptions { timestamp: Some((CLIENT_TSVAL, syn_ack.tsval)), ..TcpOptions::default() },
        payload: &[],
    }
}

/// Writes the frame carrying client `i`'s segment `seg` into `frame`.
fn client_frame(i: usize, seg: &TcpRepr<'_>, frame: &mut Vec<u8>) {
    let src = client(i).0;
    let ip = Ipv4Repr {
        src_addr: src,
        dst_addr: SERVER_IP,
        protocol: IpProtocol::Tcp,
        payload_len: seg.buffer_len(),
        hop_limit: 64,
        dscp_ecn: 0,
        ident: 0,
        dont_frag: true,
    };
    let eth = EthernetRepr { src_addr: CLIENT_MAC, dst_addr: SERVER_MAC, ethertype: EtherType::Ipv4 };
    frame.clear();
    frame.resize(14 + ip.buffer_len(), 0);
    let mut e = EthernetFrame::new_unchecked(&mut frame[..]);
    eth.emit(&mut e);
    let mut p = Ipv4Packet::new_unchecked(e.payload_mut());
    ip.emit(&mut p);
    seg.emit(&mut TcpPacket::new_unchecked(p.payload_mut()), src, SERVER_IP);
}

/// The transmit half of [`Feed`]: writes each frame into one buffer and, while filling, notes the SYN-ACKs.
struct Sink {
    buf: Vec<u8>,
    frames: u64,
    /// Per client index, what its SYN-ACK said (empty when not noting).
    syn_acks: Vec<SynAck>,
}

impl Sink {
    fn note_syn_ack(&mut self, frame: &[u8]) {
        let eth = EthernetFrame::new_checked(frame).expect("ethernet");
        let ip = Ipv4Packet::new_checked(eth.payload()).expect("ipv4");
        let tcp = TcpPacket::new_checked(ip.payload()).expect("tcp");
        let seg = TcpRepr::parse(&tcp, ip.src_addr(), ip.dst_addr(), true).expect("a valid segment");
        assert_eq!(seg.flags, TcpFlags::SYN | TcpFlags::ACK, "the stack answers a SYN with a SYN-ACK");
        let tsval = seg.options.timestamp.expect("timestamps agreed").0;
        self.syn_acks[client_index(ip.dst_addr(), seg.dst_port)] = SynAck { iss: seg.seq_number, tsval };
    }
}

impl Transmit for Sink {
    fn transmit(&mut self, _now: Instant, len: usize, fill: &mut dyn FnMut(&mut [u8])) -> bool {
        if len > self.buf.len() {
            return false;
        }
        fill(&mut self.buf[..len]);
        self.frames += 1;
        if !self.syn_acks.is_empty() {
            let frame = std::mem::take(&mut self.buf);
            self.note_syn_ack(&frame[..len]);
            self.buf = frame;
        }
        true
    }
}

/// A device that hands out prepared frames, `per_poll` at a time, round and round (one frame may go several
/// times in one poll).
struct Feed {
    frames: Vec<Vec<u8>>,
    /// How many of `frames` are in use.
    len: usize,
    next: usize,
    per_poll: usize,
    sink: Sink,
}

impl Feed {
    fn new(per_poll: usize) -> Feed {
        Feed {
            frames: Vec::new(),
            len: 0,
            next: 0,
            per_poll,
            sink: Sink { buf: vec![0; 1514], frames: 0, syn_acks: Vec::new() },
        }
    }

    /// Replaces the frames with `count` new ones, written by `write` (reusing the old frames' memory).
    fn load(&mut self, count: usize, mut write: impl FnMut(usize, &mut Vec<u8>)) {
        if self.frames.len() < count {
            self.frames.resize_with(count, Vec::new);
        }
        for (k, frame) in self.frames[..count].iter_mut().enumerate() {
            write(k, frame);
        }
        self.len = count;
        self.next = 0;
    }
}

impl Transmit for Feed {
    fn transmit(&mut self, now: Instant, len: usize, fill: &mut dyn FnMut(&mut [u8])) -> bool {
        self.sink.transmit(now, len, fill)
    }
}

impl FrameDevice for Feed {
    fn receive(&mut self, _now: Instant, budget: usize, handler: &mut dyn FnMut(&[u8], &mut dyn Transmit)) -> usize {
        if self.len == 0 {
            return 0;
        }
        let n = budget.min(self.per_poll);
        for _ in 0..n {
            handler(&self.frames[self.next], &mut self.sink);
            self.next = if self.next + 1 == self.len { 0 } else { self.next + 1 };
        }
        n
    }

    fn flush(&mut self, _now: Instant) {}

    fn max_frame_len(&self) -> usize {
        1514
    }
}

/// The process's resident set in bytes, from /proc/self/status; 0 where there is none.
fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// A listening stack with room for `max_connections`.
fn stack(max_connections: usize) -> Stack {
    let mut cfg = StackConfig::new(SERVER_MAC, SERVER_IP, 7);
    cfg.tcp =
        tcp::Config { send_buffer_bytes: BUFFER_BYTES, recv_buffer_bytes: BUFFER_BYTES, ..tcp::Config::default() };
    cfg.max_connections = max_connections;
    cfg.syn_backlog = max_connections;
    cfg.rx_batch = BATCH;
    let mut stack = Stack::new(cfg, NOW);
    stack.listen(SERVER_PORT).expect("a free port");
    stack
}

/// Fills `stack` with `count` established connections through handshakes and returns what each SYN-ACK said.
fn fill(stack: &mut Stack, count: usize, syn_acks: Vec<SynAck>) -> Vec<SynAck> {
    let mut feed = Feed::new(BATCH);
    feed.sink.syn_acks = syn_acks;
    for start in (0..count).step_by(BATCH) {
        let n = BATCH.min(count - start);
        feed.per_poll = n;
        feed.load(n, |k, frame| client_frame(start + k, &syn(start + k), frame));
        assert_eq!(stack.poll(NOW, &mut feed), n);
        let answers = &feed.sink.syn_acks;
        let acks: Vec<(usize, SynAck)> = (start..start + n).map(|i| (i, answers[i])).collect();
        feed.load(n, |k, frame| client_frame(acks[k].0, &ack(acks[k].0, acks[k].1), frame));
        assert_eq!(stack.poll(NOW, &mut feed), n);
        while let Some(ev) = stack.next_event() {
            assert!(matches!(ev, StackEvent::Accepted { .. }), "only accepts: {ev:?}");
        }
    }
    assert_eq!(stack.connection_count(), count);
    assert_eq!(stack.counters().total_drops(), 0, "{:?}", stack.counters());
    assert_eq!(stack.state_counts()[4], count, "all ESTABLISHED");
    std::mem::take(&mut feed.sink.syn_acks)
}

/// A device that delivers, `per_poll` per poll, pure ACKs to the connections `targets` of a filled stack.
fn ack_feed(targets: &[usize], syn_acks: &[SynAck], per_poll: usize) -> Feed {
    let mut feed = Feed::new(per_poll);
    feed.load(targets.len(), |k, frame| client_frame(targets[k], &ack(targets[k], syn_acks[targets[k]]), frame));
    feed
}

fn bench_deliver(c: &mut Criterion) {
    let many = if smoke_mode() { 10_000 } else { MANY };

    let mut one = stack(1 << 20);
    let one_syn_acks = fill(&mut one, 1, vec![SynAck::default(); 1]);

    let mut big = stack(1 << 20);
    let syn_acks = vec![SynAck::default(); many];
    let rss_before = rss_bytes();
    let started = WallClock::now();
    let syn_acks = fill(&mut big, many, syn_acks);
    let rss_after = rss_bytes();
    eprintln!(
        "engine: {many} established connections made in {:.1} s; VmRSS {} MiB (was {} MiB before filling): {} bytes \
         per connection with {BUFFER_BYTES}-byte send and receive buffers; size_of::<Connection>() = {} bytes",
        started.elapsed().as_secs_f64(),
        rss_after >> 20,
        rss_before >> 20,
        rss_after.saturating_sub(rss_before) / many as u64,
        std::mem::size_of::<Connection>(),
    );
    let mut state = 0x5EED;
    let targets: Vec<usize> = (0..TARGETS.min(many)).map(|_| (splitmix(&mut state) % many as u64) as usize).collect();

    for (per_poll, group_name) in [(1, "deliver_ack"), (BATCH, "deliver_ack_batch_64")] {
        let mut group = c.benchmark_group(group_name);
        group
            .sample_size(30)
            .warm_up_time(Duration::from_millis(500))
            .measurement_time(Duration::from_secs(3))
            .throughput(Throughput::Elements(per_poll as u64));
        for (name, stack, mut feed) in [
            ("1", &mut one, ack_feed(&[0], &one_syn_acks, per_poll)),
            ("1m", &mut big, ack_feed(&targets, &syn_acks, per_poll)),
        ] {
            let before = stack.counters().clone();
            let mut polls = 0u64;
            group.bench_function(BenchmarkId::from_parameter(name), |b| {
                b.iter(|| {
                    polls += 1;
                    black_box(stack.poll(NOW, &mut feed))
                })
            });
            let after = stack.counters();
            assert_eq!(after.tcp_in - before.tcp_in, polls * per_poll as u64, "every frame reached TCP");
            assert_eq!(after.total_drops(), 0, "{after:?}");
            assert_eq!(after.tx_frames, before.tx_frames, "a pure ACK to an idle connection needs no reply");
            assert!(stack.next_event().is_none());
        }
        group.finish();
    }
}

/// One echo round trip through the whole user-space path, both ends in one stack over a [`Loopback`]: the client
/// queues 64 bytes, the stack sends them as a frame, takes that frame back in, the server reads and queues them
/// again, the answer goes out and comes back, the client reads it. Two data segments, each carrying the other
/// side's ACK, as with a one-connection echo over veth; what the benchmark leaves out is the device (rings and
/// system calls). The virtual clock steps 5 µs per round trip, so timers are armed and moved as under load.
fn bench_echo_round_trip(c: &mut Criterion) {
    let mut cfg = StackConfig::new(SERVER_MAC, SERVER_IP, 7);
    cfg.tcp = tcp::Config { nagle: false, ..tcp::Config::default() };
    let mut stack = Stack::new(cfg, NOW);
    stack.add_neighbor(SERVER_IP, SERVER_MAC);
    stack.listen(SERVER_PORT).expect("a free port");
    let mut dev = Loopback::new(64, 2048);
    let client = stack.connect(std::net::SocketAddrV4::new(SERVER_IP, SERVER_PORT)).expect("a connection");
    let mut server = None;
    let mut now = NOW;
    for _ in 0..8 {
        stack.poll(now, &mut dev);
        while let Some(ev) = stack.next_event() {
            if let StackEvent::Accepted { conn, .. } = ev {
                server = Some(conn);
            }
        }
    }
    let server = server.expect("the handshake completed");
    let message = [0x5a_u8; 64];
    let mut scratch = [0_u8; 256];
    let mut group = c.benchmark_group("echo_round_trip");
    group.sample_size(30).warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(3));
    let before = stack.counters().clone();
    let mut trips = 0_u64;
    group.bench_function("64", |b| {
        b.iter(|| {
            trips += 1;
            now += Duration::from_micros(5);
            assert_eq!(stack.send(client, &message), Ok(64));
            let mut back = 0;
            while back < message.len() {
                stack.poll(now, &mut dev);
                while let Some(ev) = stack.next_event() {
                    if let StackEvent::Readable(id) = ev {
                        let n = stack.recv(id, &mut scratch).expect("a live connection");
                        if id == server {
                            assert_eq!(stack.send(server, &scratch[..n]), Ok(n));
                        } else {
                            back += n;
                        }
                    }
                }
            }
            black_box(back)
        })
    });
    group.finish();
    let after = stack.counters();
    assert_eq!(after.tx_frames - before.tx_frames, 2 * trips, "one frame each way per round trip: {after:?}");
    assert_eq!(after.total_drops(), 0, "{after:?}");
}

criterion_group!(benches, bench_echo_round_trip, bench_deliver);
criterion_main!(benches);
