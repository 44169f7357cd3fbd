//! Wire-format benchmarks: the checksum, and parsing and emitting whole Ethernet + IPv4 + TCP frames.
//!
//! - `checksum/{64,576,1460}`: the one's complement sum ([`checksum::data`]) over that many bytes.
//! - `parse/{ack,full}/{verify,no_verify}`: a frame to a [`TcpRepr`] the way the engine takes it in: checked views
//!   of each header, [`Ipv4Repr::parse`] (which always verifies the 20-byte IPv4 header checksum) and
//!   [`TcpRepr::parse`] with or without verifying the TCP checksum over the pseudo-header and the whole segment.
//!   `ack` is a pure ACK (66 bytes), `full` carries 1448 bytes of data (1514 bytes, the most a 1500-byte MTU
//!   allows beside timestamps). Both carry the timestamp option, as every segment of a Linux peer does.
//! - `emit/{ack,full}`: the same frames written into a frame buffer the way the engine sends: Ethernet and IPv4
//!   headers (with the IPv4 checksum), TCP header and options, the payload copied in, and the TCP checksum.
//!
//! Throughput is in bytes: for the checksum, of data summed; for parse and emit, of whole frames. Run with
//! `cargo bench --bench wire`; `-- --test` runs each once.

use std::hint::black_box;
use std::net::Ipv4Addr;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use xtcp::wire::checksum;
use xtcp::wire::{
    EtherType, EthernetAddress, EthernetFrame, EthernetRepr, IpProtocol, Ipv4Packet, Ipv4Repr, SeqNumber, TcpFlags,
    TcpOptions, TcpPacket, TcpRepr,
};

const CLIENT_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
const SERVER_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);
const CLIENT_MAC: EthernetAddress = EthernetAddress([0x02, 0, 0, 0, 0, 1]);
const SERVER_MAC: EthernetAddress = EthernetAddress([0x02, 0, 0, 0, 0, 2]);
/// Payload of a full segment: a 1500-byte MTU less 20 (IPv4), 20 (TCP) and 12 (timestamps).
const FULL_PAYLOAD_LEN: usize = 1448;
/// Ethernet and IPv4 headers before the TCP segment.
const LOWER_HEADERS_LEN: usize = 14 + 20;

/// Deterministic bytes (splitmix64), so that the checksum and copies see no special pattern.
fn bytes(len: usize) -> Vec<u8> {
    let mut state = 0x5EED_u64;
    (0..len)
        .map(|_| {
            state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            (z ^ (z >> 31)) as u8
        })
        .collect()
}

/// An established-connection segment from the client, with timestamps, carrying `payload`.
fn segment(payload: &[u8]) -> TcpRepr<'_> {
    TcpRepr {
        src_port: 40000,
        dst_port: 80,
        seq_number: SeqNumber(0x1234_5678),
        ack_number: SeqNumber(0x9abc_def0),
        flags: if payload.is_empty() { TcpFlags::ACK } else { TcpFlags::ACK | TcpFlags::PSH },
        window_len: 2048,
        urgent_pointer: 0,
        options: TcpOptions { timestamp: Some((0x0102_0304, 0x0506_0708)), ..TcpOptions::default() },
        payload,
    }
}

/// What the engine writes for one segment: Ethernet, IPv4 (checksummed), then the TCP segment (checksummed).
fn emit_frame(seg: &TcpRepr<'_>, buf: &mut [u8]) -> usize {
    let ip = Ipv4Repr {
        src_addr: CLIENT_IP,
        dst_addr: SERVER_IP,
        protocol: IpProtocol::Tcp,
        payload_len: seg.buffer_len(),
        hop_limit: 64,
        dscp_ecn: 0,
        ident: 0,
        dont_frag: true,
    };
    let eth = EthernetRepr { src_addr: CLIENT_MAC, dst_addr: SERVER_MAC, ethertype: EtherType::Ipv4 };
    let len = LOWER_HEADERS_LEN + seg.buffer_len();
    let mut frame = EthernetFrame::new_unchecked(&mut buf[..len]);
    eth.emit(&mut frame);
    let mut packet = Ipv4Packet::new_unchecked(frame.payload_mut());
    ip.emit(&mut packet);
    seg.emit(&mut TcpPacket::new_unchecked(packet.payload_mut()), CLIENT_IP, SERVER_IP);
    len
}

/// The engine's receive path down to the segment: checked views, [`Ipv4Repr::parse`], [`TcpRepr::parse`].
fn parse_frame(frame: &[u8], verify_checksum: bool) -> Option<TcpRepr<'_>> {
    let eth = EthernetFrame::new_checked(frame).ok()?;
    let eth_repr = EthernetRepr::parse(&eth).ok()?;
    if eth_repr.ethertype != EtherType::Ipv4 {
        return None;
    }
    let ip = Ipv4Packet::new_checked(eth.payload()).ok()?;
    let ip_repr = Ipv4Repr::parse(&ip).ok()?;
    if ip_repr.protocol != IpProtocol::Tcp {
        return None;
    }
    let tcp = TcpPacket::new_checked(ip.payload()).ok()?;
    TcpRepr::parse(&tcp, ip_repr.src_addr, ip_repr.dst_addr, verify_checksum).ok()
}

fn bench_checksum(c: &mut Criterion) {
    let data = bytes(1460);
    let mut group = c.benchmark_group("checksum");
    group.sample_size(50).warm_up_time(Duration::from_millis(300)).measurement_time(Duration::from_secs(2));
    for len in [64, 576, 1460] {
        group.throughput(Throughput::Bytes(len as u64));
        group.bench_with_input(BenchmarkId::from_parameter(len), &data[..len], |b, data| {
            b.iter(|| checksum::data(black_box(data)))
        });
    }
    group.finish();
}

/// The two frames measured: a pure ACK and a full data segment, both with timestamps.
fn frames(payload: &[u8]) -> [(&'static str, Vec<u8>); 2] {
    let mut buf = vec![0; 2048];
    let mut make = |seg: &TcpRepr<'_>| {
        let len = emit_frame(seg, &mut buf);
        buf[..len].to_vec()
    };
    [("ack", make(&segment(&[]))), ("full", make(&segment(payload)))]
}

fn bench_parse(c: &mut Criterion) {
    let payload = bytes(FULL_PAYLOAD_LEN);
    let mut group = c.benchmark_group("parse");
    group.sample_size(50).warm_up_time(Duration::from_millis(300)).measurement_time(Duration::from_secs(2));
    for (name, frame) in frames(&payload) {
        let parsed = parse_frame(&frame, true).expect("the frame parses");
        assert_eq!(parsed.payload.len(), if name == "ack" { 0 } else { FULL_PAYLOAD_LEN });
        assert!(parsed.options.timestamp.is_some());
        group.throughput(Throughput::Bytes(frame.len() as u64));
        for (mode, verify) in [("verify", true), ("no_verify", false)] {
            group.bench_with_input(BenchmarkId::new(name, mode), &frame, |b, frame| {
                b.iter(|| parse_frame(black_box(frame), verify).map(|seg| black_box(seg).seq_number))
            });
        }
    }
    group.finish();
}

fn bench_emit(c: &mut Criterion) {
    let payload = bytes(FULL_PAYLOAD_LEN);
    let mut buf = vec![0u8; 2048];
    let mut group = c.benchmark_group("emit");
    group.sample_size(50).warm_up_time(Duration::from_millis(300)).measurement_time(Duration::from_secs(2));
    for (name, seg) in [("ack", segment(&[])), ("full", segment(&payload))] {
        let len = emit_frame(&seg, &mut buf);
        assert_eq!(parse_frame(&buf[..len], true), Some(seg), "what is emitted parses back");
        group.throughput(Throughput::Bytes(len as u64));
        group.bench_function(name, |b| b.iter(|| emit_frame(black_box(&seg), black_box(&mut buf))));
    }
    group.finish();
}

criterion_group!(benches, bench_checksum, bench_parse, bench_emit);
criterion_main!(benches);
