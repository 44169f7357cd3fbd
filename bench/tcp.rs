//! Benchmarks of the TCP state machine on established connections, in steady state.
//!
//! Each bench starts from two [`Connection`]s taken through a real handshake with the default settings (window
//! scaling and timestamps on, MSS 1460, so full segments carry 1448 bytes), then drives one of them with segments
//! built the way its peer sends them. Nothing runs down: buffers are read or refilled as they are used, so every
//! bench can run forever at the same point of the connection's life. The clock stands still (segments carry the
//! same timestamps throughout), which PAWS accepts and which changes no code path measured here.
//!
//! - `rx/data_1448`: [`Connection::process`] of an in-order 1448-byte segment on an established connection,
//!   then the application's [`Connection::recv`] of those bytes. Timed in runs of 32 segments; between runs (not
//!   timed) the receiver's ACK goes out, which moves the window on.
//! - `rx/data_1448_and_ack`: the same plus [`Connection::poll_transmit`] after every segment, as the engine does:
//!   every second segment it emits an ACK (into a sink that keeps nothing). The whole receive path of a bulk flow.
//! - `tx/ack_new_data`: [`Connection::process`] of a pure ACK that acknowledges one new full segment, on a sender
//!   with 181 full segments in flight (its whole send buffer). Timed in runs of 32 ACKs; between runs (not timed)
//!   the send buffer is refilled and the new data transmitted, so the flight never drains.
//! - `tx/poll_transmit_1_segment`: [`Connection::poll_transmit`] emitting one full segment into a sink that keeps
//!   nothing, after an ACK (not timed) opened room for exactly one and the send buffer was refilled. Measured over
//!   32 such senders, each called once per timed round.
//! - `tx/poll_transmit_16_segments`: the same with room for 16: one call emits 16 full segments; throughput is per
//!   segment.
//!
//! Throughput is in payload bytes for the data benches and in segments otherwise. Run with
//! `cargo bench --bench tcp`; `-- --test` runs each once.

use std::hint::black_box;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::{Duration, Instant as WallClock};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use xtcp::tcp::{listen_input, Config, Connection, IsnGenerator, ListenAction, State, TimerKind};
use xtcp::time::Instant;
use xtcp::wire::{SeqNumber, TcpFlags, TcpRepr};

const CLIENT: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 1), 40000);
const SERVER: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 2), 80);
/// The virtual time of every bench.
const NOW: Instant = Instant::from_secs(1);
/// Payload of a full segment: MSS 1460 less the 12 bytes of the timestamp option.
const SEGMENT_LEN: usize = 1448;
/// Segments timed together between two untimed steps.
const RUN: u64 = 32;
/// The sender's buffer: a whole number of segments (just under 256 KiB), so that segments never straddle the
/// ring's end and every segment the sender emits is full.
const SEND_BUFFER_SEGMENTS: usize = 181;

/// A segment that owns its payload.
struct Owned {
    header: TcpRepr<'static>,
    payload: Vec<u8>,
}

impl Owned {
    fn from_repr(seg: &TcpRepr<'_>) -> Owned {
        let header = TcpRepr {
            src_port: seg.src_port,
            dst_port: seg.dst_port,
            seq_number: seg.seq_number,
            ack_number: seg.ack_number,
            flags: seg.flags,
            window_len: seg.window_len,
            urgent_pointer: seg.urgent_pointer,
            options: seg.options,
            payload: &[],
        };
        Owned { header, payload: seg.payload.to_vec() }
    }

    fn repr(&self) -> TcpRepr<'_> {
        TcpRepr { payload: &self.payload, ..self.header }
    }
}

/// Every segment `c` owes now.
fn transmit(c: &mut Connection) -> Vec<Owned> {
    let mut out = Vec::new();
    c.poll_transmit(NOW, &mut |seg| {
        out.push(Owned::from_repr(seg));
        true
    });
    out
}

/// Emits what `c` owes into a sink that keeps nothing; returns the number of segments and payload bytes.
fn transmit_to_sink(c: &mut Connection) -> (usize, usize) {
    let (mut segments, mut bytes) = (0, 0);
    c.poll_transmit(NOW, &mut |seg| {
        segments += 1;
        bytes += seg.payload.len();
        black_box(seg);
        true
    });
    (segments, bytes)
}

/// A client and a server connection taken through the three-way handshake, both ESTABLISHED, events drained.
fn established(cfg: Config) -> (Connection, Connection) {
    let mut client = Connection::connect(cfg, CLIENT, SERVER, &IsnGenerator::new([0xa1; 16]), NOW);
    let syn = transmit(&mut client);
    assert_eq!(syn.len(), 1);
    assert_eq!(listen_input(&syn[0].repr()), ListenAction::Accept);
    let mut server = Connection::accept(cfg, SERVER, CLIENT, &syn[0].repr(), &IsnGenerator::new([0xb2; 16]), NOW);
    let syn_ack = transmit(&mut server);
    assert_eq!(syn_ack.len(), 1);
    client.process(NOW, &syn_ack[0].repr());
    let ack = transmit(&mut client);
    assert_eq!(ack.len(), 1);
    server.process(NOW, &ack[0].repr());
    for c in [&mut client, &mut server] {
        assert_eq!(c.state(), State::Established);
        assert!(c.timestamps_enabled());
        assert_eq!(c.send_mss(), SEGMENT_LEN);
        while c.poll_event().is_some() {}
    }
    (client, server)
}

/// A pure ACK to `c` from its peer, acknowledging up to `ack`, with the window and timestamps of `template` (a
/// pure ACK the peer sent before).
fn ack_for(c: &Connection, template: &TcpRepr<'static>, ack: SeqNumber) -> TcpRepr<'static> {
    TcpRepr { seq_number: c.rcv_nxt(), ack_number: ack, flags: TcpFlags::ACK, ..*template }
}

/// A server that has received one data segment from the client, and that segment, to replay at later sequence
/// numbers.
fn receiver() -> (Connection, Owned) {
    let (mut client, mut server) = established(Config::default());
    let data: Vec<u8> = (0..SEGMENT_LEN).map(|i| (i * 7) as u8).collect();
    assert_eq!(client.send(&data), Ok(SEGMENT_LEN));
    let segs = transmit(&mut client);
    assert_eq!(segs.len(), 1);
    assert_eq!(segs[0].payload.len(), SEGMENT_LEN);
    let mut buf = vec![0; SEGMENT_LEN];
    server.process(NOW, &segs[0].repr());
    assert_eq!(server.recv(&mut buf), SEGMENT_LEN);
    transmit_to_sink(&mut server);
    (server, segs.into_iter().next().expect("one segment"))
}

fn bench_rx(c: &mut Criterion) {
    let mut group = c.benchmark_group("rx");
    group
        .sample_size(50)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3))
        .throughput(Throughput::Bytes(SEGMENT_LEN as u64));
    let mut buf = vec![0; SEGMENT_LEN];

    let (mut server, data) = receiver();
    let start = server.rcv_nxt();
    let mut segments = 0u64;
    group.bench_function("data_1448", |b| {
        b.iter_custom(|iters| {
            in_runs(iters, |run| {
                let base = server.rcv_nxt();
                let segs: Vec<TcpRepr<'_>> =
                    (0..run as usize).map(|i| TcpRepr { seq_number: base + i * SEGMENT_LEN, ..data.repr() }).collect();
                let mut read = 0;
                let t = WallClock::now();
                for seg in &segs {
                    server.process(NOW, seg);
                    read += server.recv(&mut buf);
                }
                let timed = t.elapsed();
                assert_eq!(read, run as usize * SEGMENT_LEN, "every segment accepted and read");
                // One ACK for the run (none after a lone segment: the delayed-ACK timer waits for a second).
                let (acks, _) = transmit_to_sink(&mut server);
                assert!(acks <= 1, "one ACK for the run, not {acks}");
                segments += run;
                timed
            })
        })
    });
    assert_eq!(server.rcv_nxt().0.wrapping_sub(start.0), (segments as usize * SEGMENT_LEN) as u32);
    assert_eq!(server.state(), State::Established);

    let (mut server, data) = receiver();
    let (mut acks, mut segments) = (0, 0);
    group.bench_function("data_1448_and_ack", |b| {
        b.iter(|| {
            let seg = TcpRepr { seq_number: server.rcv_nxt(), ..data.repr() };
            server.process(NOW, &seg);
            let read = server.recv(&mut buf);
            assert_eq!(read, SEGMENT_LEN);
            acks += transmit_to_sink(&mut server).0;
            segments += 1;
        })
    });
    assert!(acks >= segments / 2 && acks <= segments / 2 + 1, "an ACK every second segment: {acks}/{segments}");
    group.finish();
}

/// A client whose whole send buffer is in flight (181 full segments, slow start long past), with the ACK
/// template of its peer.
fn sender() -> (Connection, TcpRepr<'static>) {
    let cfg = Config { send_buffer_bytes: SEND_BUFFER_SEGMENTS * SEGMENT_LEN, ..Config::default() };
    let (mut client, mut server) = established(cfg);
    let data = vec![0x5a; SEND_BUFFER_SEGMENTS * SEGMENT_LEN];
    // The server's pure ACK, with its window and the timestamps as they stand, is the template of every ACK.
    assert_eq!(client.send(&data[..SEGMENT_LEN]), Ok(SEGMENT_LEN));
    let first = transmit(&mut client);
    server.process(NOW, &first[0].repr());
    let mut buf = vec![0; SEGMENT_LEN];
    assert_eq!(server.recv(&mut buf), SEGMENT_LEN);
    server.on_timer(NOW + Duration::from_secs(1), TimerKind::DelayedAck);
    let acks = transmit(&mut server);
    assert_eq!(acks.len(), 1);
    let template = acks[0].header;
    client.process(NOW, &template);
    // Grow the congestion window until the send buffer, not the window, limits the flight.
    // Slow start adds one segment per ACK of a full segment, so every segment is acknowledged on its own.
    loop {
        refill_and_send(&mut client, &data);
        let flight = client.snd_nxt() - client.snd_una();
        if flight == SEND_BUFFER_SEGMENTS * SEGMENT_LEN {
            break;
        }
        for _ in 0..flight / SEGMENT_LEN {
            let ack = ack_for(&client, &template, client.snd_una() + SEGMENT_LEN);
            client.process(NOW, &ack);
        }
        assert_eq!(client.snd_una(), client.snd_nxt(), "all acknowledged");
    }
    (client, template)
}

/// Refills what was acknowledged and sends it; returns the segments and bytes sent.
fn refill_and_send(client: &mut Connection, data: &[u8]) -> (usize, usize) {
    let free = client.send_capacity();
    assert_eq!(client.send(&data[..free]), Ok(free));
    transmit_to_sink(client)
}

fn bench_tx(c: &mut Criterion) {
    let mut group = c.benchmark_group("tx");
    group
        .sample_size(50)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3))
        .throughput(Throughput::Elements(1));
    let data = vec![0x5a; SEND_BUFFER_SEGMENTS * SEGMENT_LEN];

    let (mut client, template) = sender();
    let start = client.snd_una();
    let mut acked = 0u64;
    group.bench_function("ack_new_data", |b| {
        b.iter_custom(|iters| {
            in_runs(iters, |run| {
                let base = client.snd_una();
                let acks: Vec<TcpRepr<'_>> =
                    (1..=run as usize).map(|i| ack_for(&client, &template, base + i * SEGMENT_LEN)).collect();
                let t = WallClock::now();
                for ack in &acks {
                    client.process(NOW, ack);
                }
                let timed = t.elapsed();
                assert_eq!(client.snd_una() - base, run as usize * SEGMENT_LEN, "every ACK took new data");
                let (segments, bytes) = refill_and_send(&mut client, &data);
                assert_eq!((segments, bytes), (run as usize, run as usize * SEGMENT_LEN), "full segments only");
                acked += run;
                timed
            })
        })
    });
    assert_eq!(client.snd_una().0.wrapping_sub(start.0), (acked as usize * SEGMENT_LEN) as u32);
    assert_eq!(client.stats().retransmits, 0);

    // One call per connection per round, over `RUN` connections in the same state, so that a round of calls is
    // timed with one clock read and no untimed step comes between two calls.
    for per_call in [1, 16] {
        let mut senders: Vec<(Connection, TcpRepr<'static>)> = (0..RUN).map(|_| sender()).collect();
        let mut sent = vec![(0, 0); senders.len()];
        group.throughput(Throughput::Elements(per_call as u64));
        group.bench_function(format!("poll_transmit_{per_call}_segment{}", if per_call > 1 { "s" } else { "" }), |b| {
            b.iter_custom(|iters| {
                in_runs(iters, |run| {
                    let run = run as usize;
                    for (client, template) in &mut senders[..run] {
                        let ack = ack_for(client, template, client.snd_una() + per_call * SEGMENT_LEN);
                        client.process(NOW, &ack);
                        let free = client.send_capacity();
                        assert_eq!(client.send(&data[..free]), Ok(per_call * SEGMENT_LEN));
                    }
                    let t = WallClock::now();
                    for ((client, _), sent) in senders[..run].iter_mut().zip(&mut sent) {
                        *sent = transmit_to_sink(client);
                    }
                    let timed = t.elapsed();
                    assert!(sent[..run].iter().all(|&s| s == (per_call, per_call * SEGMENT_LEN)), "{sent:?}");
                    timed
                })
            })
        });
        assert!(senders.iter().all(|(client, _)| client.stats().retransmits == 0));
    }
    group.finish();
}

/// Runs `iters` iterations in batches of at most [`RUN`], summing the time each batch reports (set-up between
/// batches is not timed).
fn in_runs(iters: u64, mut batch: impl FnMut(u64) -> Duration) -> Duration {
    let mut timed = Duration::ZERO;
    let mut left = iters;
    while left > 0 {
        let run = left.min(RUN);
        left -= run;
        timed += batch(run);
    }
    timed
}

criterion_group!(benches, bench_rx, bench_tx);
criterion_main!(benches);
