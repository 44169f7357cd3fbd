//! The fuzz targets' regressions and seed corpus under plain `cargo test`, through the same harnesses the targets
//! run (`xtcp::fuzz`): the committed seeds of `fuzz/corpus/`, the seeds recorded afresh from real exchanges, the
//! seeds made from frames of the Linux TCP stack, and every input the fuzzer found a crash with, kept under
//! `tests/fuzz_inputs/`.

use std::fs;
use std::path::{Path, PathBuf};

use xtcp::engine::Stack;
use xtcp::fuzz::linux::{self, SCENARIOS};
use xtcp::fuzz::seeds::{stack_seeds, wire_seeds};
use xtcp::fuzz::stack::{Harness, Op};
use xtcp::fuzz::Cursor;
use xtcp::tcp::State;
use xtcp::wire::{ArpPacket, ArpRepr, EtherType, EthernetFrame, Ipv4Packet, Ipv4Repr, TcpOptions, TcpPacket, TcpRepr};

fn corpus(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus").join(target);
    let mut files: Vec<(PathBuf, Vec<u8>)> = fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| {
            let path = entry.expect("corpus entry").path();
            let bytes = fs::read(&path).expect("corpus file");
            (path, bytes)
        })
        .collect();
    files.sort();
    files
}

#[test]
fn committed_wire_seeds_round_trip() {
    let files = corpus("wire");
    assert!(files.len() >= 8, "wire seeds: {}", files.len());
    for (path, bytes) in files {
        eprintln!("{}", path.display());
        xtcp::fuzz::wire(&bytes);
    }
}

#[test]
fn committed_stack_seeds_keep_the_invariants() {
    let files = corpus("stack");
    assert!(files.len() >= 5, "stack seeds: {}", files.len());
    for (path, bytes) in files {
        eprintln!("{}", path.display());
        xtcp::fuzz::stack(&bytes);
    }
}

/// Records the seeds afresh (the recorder asserts each exchange did what it should: data delivered, closes
/// heard), replays them, and with `XTCP_WRITE_FUZZ_SEEDS=1` writes them over `fuzz/corpus/`.
#[test]
fn recorded_seeds_replay() {
    let write = std::env::var_os("XTCP_WRITE_FUZZ_SEEDS").is_some();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus");
    let stack = stack_seeds();
    for (name, input) in &stack {
        xtcp::fuzz::stack(input);
        if write {
            fs::write(root.join("stack").join(format!("seed-{name}")), input).expect("write seed");
        }
    }
    let wire = wire_seeds();
    assert!(wire.len() >= 8, "frame kinds seen: {:?}", wire.iter().map(|(n, _)| n).collect::<Vec<_>>());
    for (name, frame) in &wire {
        xtcp::fuzz::wire(frame);
        if write {
            fs::write(root.join("wire").join(format!("seed-{name}")), frame).expect("write seed");
        }
    }
}

/// A SYN-ACK retransmission that the device refused (its ring full: two ARP requests took it) left the half-open
/// connection with no retransmission timer: it held its table slot and backlog place for good. Fixed in
/// `Connection::on_retransmit_timeout`, which now restarts the timer itself (RFC 6298 (5.6)).
#[test]
fn refused_syn_ack_resend_keeps_the_timer() {
    xtcp::fuzz::stack(include_bytes!("fuzz_inputs/stack-syn-ack-refused-no-timer"));
}

/// The Linux capture, read and split into frames.
fn linux_capture() -> Vec<linux::Captured> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/linux-capture.pcap");
    let bytes = fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    linux::read_pcap(&bytes).expect("the Linux capture reads")
}

/// The committed `linux-*` seeds of a target.
fn linux_corpus(target: &str) -> Vec<(String, Vec<u8>)> {
    corpus(target)
        .into_iter()
        .map(|(path, bytes)| (path.file_name().expect("file name").to_string_lossy().into_owned(), bytes))
        .filter(|(name, _)| name.starts_with("linux-"))
        .collect()
}

/// The `linux-*` seeds are exactly what `xtcp::fuzz::linux` makes of the committed capture; with
/// `XTCP_WRITE_FUZZ_SEEDS=1` they are written afresh (stale ones removed).
#[test]
fn linux_seeds_are_made_from_the_capture() {
    let capture = linux_capture();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus");
    let write = std::env::var_os("XTCP_WRITE_FUZZ_SEEDS").is_some();
    for (target, mut made) in [("wire", linux::wire_seeds(&capture)), ("stack", linux::stack_seeds(&capture))] {
        made.sort();
        if write {
            for (name, _) in linux_corpus(target) {
                fs::remove_file(root.join(target).join(name)).expect("remove a stale seed");
            }
            for (name, bytes) in &made {
                fs::write(root.join(target).join(name), bytes).expect("write seed");
            }
        }
        assert!(made == linux_corpus(target), "fuzz/corpus/{target}/linux-*: rewrite with XTCP_WRITE_FUZZ_SEEDS=1");
    }
}

/// Every Linux frame parses with xtcp's parsers, checksums verified: all 44 frames, 2 ARP and 42 TCP.
#[test]
fn linux_wire_seeds_parse_with_valid_checksums() {
    let seeds = linux_corpus("wire");
    assert_eq!(seeds.len(), 44, "Linux frames: {:?}", seeds.iter().map(|(n, _)| n).collect::<Vec<_>>());
    let (mut arp, mut tcp) = (0, 0);
    for (name, frame) in &seeds {
        let eth = EthernetFrame::new_checked(&frame[..]).unwrap_or_else(|e| panic!("{name}: Ethernet: {e}"));
        match eth.ethertype() {
            EtherType::Arp => {
                ArpRepr::parse(&ArpPacket::new_checked(eth.payload()).expect("ARP checks"))
                    .unwrap_or_else(|e| panic!("{name}: ARP: {e}"));
                arp += 1;
            }
            EtherType::Ipv4 => {
                let packet = Ipv4Packet::new_checked(eth.payload()).unwrap_or_else(|e| panic!("{name}: IPv4: {e}"));
                assert!(packet.verify_checksum(), "{name}: IPv4 checksum");
                let ip = Ipv4Repr::parse(&packet).unwrap_or_else(|e| panic!("{name}: IPv4: {e}"));
                let segment = TcpPacket::new_checked(packet.payload()).unwrap_or_else(|e| panic!("{name}: TCP: {e}"));
                TcpRepr::parse(&segment, ip.src_addr, ip.dst_addr, true)
                    .unwrap_or_else(|e| panic!("{name}: TCP, checksum verified: {e}"));
                tcp += 1;
            }
            other => panic!("{name}: ethertype {other}"),
        }
    }
    assert_eq!((arp, tcp), (2, 42));
}

/// Linux's SYN offers what Linux offers by default, laid out as Linux lays it out: MSS 1460, SACK-permitted,
/// timestamps (TSecr zero), NOP, window scale 10 (the capture's kernel, 6.18, with its default buffer sizes).
#[test]
fn linux_syn_options_are_linuxs() {
    let seeds = linux_corpus("wire");
    let (_, frame) = seeds.iter().find(|(name, _)| name == "linux-exchange-00-syn").expect("the exchange's SYN");
    let eth = EthernetFrame::new_checked(&frame[..]).expect("Ethernet");
    let ip = Ipv4Packet::new_checked(eth.payload()).expect("IPv4");
    let tcp = TcpPacket::new_checked(ip.payload()).expect("TCP");
    let options = TcpOptions::parse(tcp.options()).expect("options parse");
    let (tsval, tsecr) = options.timestamp.expect("a timestamp");
    assert_eq!(
        (options.mss, options.sack_permitted, tsecr, options.window_scale, options.sack_blocks.is_empty()),
        (Some(1460), true, 0, Some(10), true)
    );
    let mut layout = vec![2, 4, 0x05, 0xb4, 4, 2, 8, 10];
    layout.extend_from_slice(&tsval.to_be_bytes());
    layout.extend_from_slice(&[0, 0, 0, 0, 1, 3, 3, 10]);
    assert_eq!(tcp.options(), &layout[..], "Linux's option layout");
    assert_eq!((tcp.window_len(), ip.hop_limit(), ip.dont_frag()), (64240, 64, true));
}

/// Runs a stack seed op by op and reports the harness at the end (before its final drain) and whether a
/// connection was ever ESTABLISHED.
fn replay(seed: &[u8]) -> (Harness, bool, Vec<Vec<u8>>) {
    let mut c = Cursor::new(seed);
    let mut h = Harness::new([c.u8(), c.u8()]);
    h.record();
    let mut established = false;
    let mut sent = Vec::new();
    while !c.is_empty() {
        h.step(&Op::decode(&mut c));
        sent.extend(h.take_sent());
        established |= h.stack().connections().any(|(_, conn)| conn.state() == State::Established);
    }
    (h, established, sent)
}

/// What a connection's end counted: (opened, closed, reset).
fn conns(stack: &Stack) -> (u64, u64, u64) {
    let k = stack.counters();
    (k.conns_opened, k.conns_closed, k.conns_reset)
}

/// The stack seeds made from the Linux client's frames drive the harness's stack as they drove Linux's: the
/// handshake reaches ESTABLISHED, every byte the client sent is read (checked byte for byte against the stream),
/// and each connection ends as it did under Linux.
#[test]
fn linux_stack_seeds_reach_established_and_deliver() {
    let seeds = linux_corpus("stack");
    assert_eq!(seeds.len(), SCENARIOS.len());
    let seed = |name: &str| &seeds.iter().find(|(n, _)| n == name).unwrap_or_else(|| panic!("{name}")).1;

    // 2000 bytes in, our 3000 out and acknowledged (else no clean close), FIN both ways.
    let (mut h, established, _) = replay(seed("linux-exchange"));
    assert!(established, "exchange: never ESTABLISHED");
    assert!(h.checks_reads(), "exchange: a frame broke the stream rule");
    assert_eq!(h.bytes_read(), 2000, "exchange: bytes read");
    assert_eq!(conns(h.stack()), (1, 1, 0), "exchange: one connection, closed cleanly");
    h.finish();

    // The third segment never came: our stack SACKs the three after it, as Linux did, then reads all 8688 bytes.
    let (mut h, established, sent) = replay(seed("linux-sack"));
    assert!(established, "sack: never ESTABLISHED");
    assert_eq!(h.bytes_read(), 8688, "sack: bytes read");
    let sacks = sent.iter().filter(|f| linux::kind(f).ends_with("-sack")).count();
    assert!(sacks >= 3, "sack: {sacks} segments with SACK blocks");
    assert_eq!(conns(h.stack()), (1, 1, 0), "sack: one connection, closed cleanly");
    h.finish();

    // 1000 bytes, then Linux's RST from SO_LINGER 0.
    let (mut h, established, _) = replay(seed("linux-reset"));
    assert!(established, "reset: never ESTABLISHED");
    assert_eq!(h.bytes_read(), 1000, "reset: bytes read");
    assert_eq!(conns(h.stack()), (1, 0, 1), "reset: one connection, reset");
    h.finish();

    // A SYN to a closed port: RST, no connection.
    let (mut h, established, sent) = replay(seed("linux-refused"));
    assert!(!established);
    assert_eq!(sent.iter().map(|f| linux::kind(f)).collect::<Vec<_>>(), ["rst-ack"], "refused: the answer");
    assert_eq!(conns(h.stack()), (0, 0, 0));
    h.finish();
}
