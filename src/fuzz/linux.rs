//! Seeds from the real Linux TCP stack. `scripts/capture-linux-seeds.sh` had two kernel sockets talk across a veth
//! pair in network namespaces of their own and recorded the server's side once, into the committed
//! `fuzz/linux-capture.pcap`; this module turns that capture into seeds of both targets, so that the fuzzer also
//! starts from Linux's option layout (MSS, SACK-permitted, timestamps, NOP, window scale), its sequence numbers,
//! ACKs, SACK blocks and RSTs rather than only from what xtcp itself sends:
//!
//! - [`wire_seeds`]: every frame as it was captured, named `linux-<scenario>-<index>-<kind>`;
//! - [`stack_seeds`]: per scenario, the Linux client's frames, made the harness peer's (see [`stack_seed`]), with
//!   the harness's application doing what the Linux server did and the clock moving as the capture's did.
//!
//! `XTCP_WRITE_FUZZ_SEEDS=1 cargo test --test fuzz_regressions linux` writes them to `fuzz/corpus/`.

use std::time::Duration;

use pcap_file::pcap::PcapReader;
use pcap_file::PcapError;

use super::stack::{
    stream_byte, Harness, Op, CLOSED_PORT, LISTEN_PORTS, PEER_IP, PEER_MAC, PEER_PORT_BASE, STACK_IP, STACK_MAC,
};
use crate::wire::{
    ArpOperation, ArpPacket, ArpRepr, EtherType, EthernetFrame, Ipv4Packet, SeqNumber, TcpOptions, TcpPacket,
};

/// One scenario of the capture: a connection to one port of the Linux server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Scenario {
    /// Its name in seed file names.
    pub name: &'static str,
    /// The Linux server's port.
    pub server_port: u16,
    /// Someone listened there (else the SYN was refused).
    pub listening: bool,
}

/// The scenarios of `scripts/capture-linux-seeds.sh`, by the port the client connected to.
pub const SCENARIOS: [Scenario; 4] = [
    // Handshake, 2000 bytes up, 3000 down, the client's FIN, then the server's.
    Scenario { name: "exchange", server_port: 8080, listening: true },
    // 8688 bytes up, the third of six segments lost on the way: the server SACKs, the client retransmits.
    Scenario { name: "sack", server_port: 8081, listening: true },
    // A SYN to a port nobody listens on, answered with RST.
    Scenario { name: "refused", server_port: 8082, listening: false },
    // 1000 bytes up, then the client closes with SO_LINGER 0: RST.
    Scenario { name: "reset", server_port: 8083, listening: true },
];

/// Settings of the stack seeds (see [`super::stack::config`]): timestamps, SACK and window scaling on, as Linux
/// has them; Nagle off, so that each segment the Linux server sent is one `Send` and one segment of ours; SYN
/// cookies never, so the handshake takes the ordinary SYN_RECEIVED path (the other seeds cover cookies).
pub const LINUX_SETTINGS: [u8; 2] = [0x07, 0x02];

/// A frame of the capture and when it was seen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Captured {
    /// The capture's timestamp.
    pub at: Duration,
    /// The whole Ethernet frame.
    pub frame: Vec<u8>,
}

/// The frames of a pcap file, in order.
pub fn read_pcap(bytes: &[u8]) -> Result<Vec<Captured>, PcapError> {
    let mut reader = PcapReader::new(bytes)?;
    let mut frames = Vec::new();
    while let Some(packet) = reader.next_packet() {
        let packet = packet?;
        frames.push(Captured { at: packet.timestamp, frame: packet.data.into_owned() });
    }
    Ok(frames)
}

/// The TCP segment in `frame`, if it holds one.
fn tcp_of(frame: &[u8]) -> Option<TcpPacket<&[u8]>> {
    let eth = EthernetFrame::new_checked(frame).ok()?;
    let ip = Ipv4Packet::new_checked(eth.payload()).ok()?;
    TcpPacket::new_checked(ip.payload()).ok()
}

/// The scenario a TCP frame belongs to: the one whose server port is either of its ports.
fn scenario_of(tcp: &TcpPacket<&[u8]>) -> Option<&'static Scenario> {
    SCENARIOS.iter().find(|s| s.server_port == tcp.dst_port() || s.server_port == tcp.src_port())
}

/// The seeds of the `wire` target: every frame of the capture, named `linux-<scenario>-<index>-<kind>` (`arp` for
/// the ARP frames; the index counts within the scenario; the kind as [`kind`] names it).
pub fn wire_seeds(capture: &[Captured]) -> Vec<(String, Vec<u8>)> {
    let mut counts = [0usize; SCENARIOS.len() + 1];
    let mut seeds = Vec::new();
    for c in capture {
        let (slot, scenario) = match tcp_of(&c.frame).as_ref().and_then(scenario_of) {
            Some(s) => (SCENARIOS.iter().position(|x| x == s).expect("a scenario of the table"), s.name),
            None => (SCENARIOS.len(), "arp"),
        };
        seeds.push((format!("linux-{scenario}-{:02}-{}", counts[slot], kind(&c.frame)), c.frame.clone()));
        counts[slot] += 1;
    }
    seeds
}

/// A name for the kind of a frame: `arp-request`, `arp-reply`, or the TCP flags set (`syn-ack`, `psh-ack`) with
/// `-data` when it carries payload and `-sack` when it carries SACK blocks.
pub fn kind(frame: &[u8]) -> String {
    let Ok(eth) = EthernetFrame::new_checked(frame) else { return "short".into() };
    if eth.ethertype() == EtherType::Arp {
        return match ArpPacket::new_checked(eth.payload()).and_then(|p| ArpRepr::parse(&p)) {
            Ok(ArpRepr::EthernetIpv4 { operation: ArpOperation::Request, .. }) => "arp-request".into(),
            _ => "arp-reply".into(),
        };
    }
    let Some(tcp) = tcp_of(frame) else { return "ipv4".into() };
    let f = tcp.flags();
    let mut words: Vec<&str> =
        [(f.syn(), "syn"), (f.fin(), "fin"), (f.rst(), "rst"), (f.psh(), "psh"), (f.ack(), "ack")]
            .into_iter()
            .filter_map(|(set, word)| set.then_some(word))
            .collect();
    if !tcp.payload().is_empty() {
        words.push("data");
    }
    if TcpOptions::parse(tcp.options()).is_ok_and(|o| !o.sack_blocks.is_empty()) {
        words.push("sack");
    }
    words.join("-")
}

/// The seeds of the `stack` target, one per scenario, named `linux-<scenario>`.
pub fn stack_seeds(capture: &[Captured]) -> Vec<(String, Vec<u8>)> {
    SCENARIOS.iter().map(|s| (format!("linux-{}", s.name), stack_seed(capture, s))).collect()
}

/// A seed of the `stack` target from one scenario: the harness's stack takes the Linux server's place.
///
/// Each of the Linux client's frames becomes an [`Op::Frame`], made the harness peer's: MACs, addresses and ports
/// those of the harness ([`PEER_PORT_BASE`] to the first listener, or to [`CLOSED_PORT`] where nobody listened);
/// acknowledgment numbers and SACK edges moved from the Linux server's sequence space to the harness stack's
/// (both ISNs are read from the SYN-ACKs); TSecr the harness stack's last TSval; the payload bytes the harness's
/// [`stream_byte`]s, so that its read check stays on; both checksums recomputed. The rest — sequence numbers,
/// TSval, window, option layout, IP identification and TTL — stays as Linux sent it. The Linux server's frames
/// become what its application did: data a `Send` of as many bytes, a FIN a `Close`; the client's data and FIN
/// are read (`Recv`) as they arrive. The clock advances to each frame's time in the capture.
pub fn stack_seed(capture: &[Captured], scenario: &Scenario) -> Vec<u8> {
    let local_port = if scenario.listening { LISTEN_PORTS[0] } else { CLOSED_PORT };
    let mut replay = Replay::new();
    let mut linux_iss: Option<SeqNumber> = None;
    let mut start = None;
    for c in capture {
        let Some(tcp) = tcp_of(&c.frame) else { continue };
        if scenario_of(&tcp) != Some(scenario) {
            continue;
        }
        let start = *start.get_or_insert(c.at);
        replay.advance_to((c.at - start).as_millis());
        let flags = tcp.flags();
        if tcp.dst_port() == scenario.server_port {
            let ack_shift = linux_iss.zip(replay.iss).map(|(linux, ours)| ours.0.wrapping_sub(linux.0));
            let frame = from_harness_peer(&c.frame, local_port, ack_shift, replay.tsval);
            replay.op(Op::Frame(&frame));
            if !tcp.payload().is_empty() || flags.fin() {
                replay.op(Op::Recv { conn: 0, len: 8191 });
            }
        } else {
            if flags.syn() {
                linux_iss = Some(tcp.seq_number());
            }
            if !tcp.payload().is_empty() {
                let len = u16::try_from(tcp.payload().len()).expect("a segment under 64 KiB");
                replay.op(Op::Send { conn: 0, len });
            }
            if flags.fin() {
                replay.op(Op::Close { conn: 0 });
            }
        }
    }
    replay.input
}

/// A stack seed being built: the input so far, and a harness that runs it, to learn the stack's ISN and TSval.
#[derive(Debug)]
struct Replay {
    harness: Harness,
    input: Vec<u8>,
    now_ms: u128,
    /// The harness stack's ISN, from its SYN-ACK.
    iss: Option<SeqNumber>,
    /// The harness stack's last TSval.
    tsval: Option<u32>,
}

impl Replay {
    fn new() -> Replay {
        let mut harness = Harness::new(LINUX_SETTINGS);
        harness.record();
        Replay { harness, input: LINUX_SETTINGS.to_vec(), now_ms: 0, iss: None, tsval: None }
    }

    fn op(&mut self, op: Op<'_>) {
        op.encode(&mut self.input);
        self.harness.step(&op);
        for frame in self.harness.take_sent() {
            let Some(tcp) = tcp_of(&frame) else { continue };
            if tcp.flags().syn() {
                self.iss = Some(tcp.seq_number());
            }
            if let Ok(TcpOptions { timestamp: Some((tsval, _)), .. }) = TcpOptions::parse(tcp.options()) {
                self.tsval = Some(tsval);
            }
        }
    }

    fn advance_to(&mut self, ms: u128) {
        while self.now_ms < ms {
            let step = u16::try_from(ms - self.now_ms).unwrap_or(u16::MAX);
            self.op(Op::Advance { ms: step });
            self.now_ms += u128::from(step);
        }
    }
}

/// A Linux client's frame as the harness's peer would send it: see [`stack_seed`]. `ack_shift` is added to the
/// acknowledgment number and SACK edges (of a segment with ACK set); `tsecr` replaces TSecr.
fn from_harness_peer(frame: &[u8], local_port: u16, ack_shift: Option<u32>, tsecr: Option<u32>) -> Vec<u8> {
    let mut frame = frame.to_vec();
    let mut eth = EthernetFrame::new_unchecked(&mut frame[..]);
    eth.set_src_addr(PEER_MAC);
    eth.set_dst_addr(STACK_MAC);
    let mut ip = Ipv4Packet::new_unchecked(eth.payload_mut());
    ip.set_src_addr(PEER_IP);
    ip.set_dst_addr(STACK_IP);
    ip.fill_checksum();
    let mut tcp = TcpPacket::new_unchecked(ip.payload_mut());
    tcp.set_src_port(PEER_PORT_BASE);
    tcp.set_dst_port(local_port);
    if tcp.flags().ack() {
        let shift = ack_shift.unwrap_or(0);
        tcp.set_ack_number(SeqNumber(tcp.ack_number().0.wrapping_add(shift)));
        patch_options(tcp.options_mut(), shift, tsecr);
    }
    let data_seq = tcp.seq_number() + usize::from(tcp.flags().syn());
    for (j, b) in tcp.payload_mut().iter_mut().enumerate() {
        *b = stream_byte((data_seq + j).0);
    }
    tcp.fill_checksum(PEER_IP, STACK_IP);
    frame
}

/// Moves the SACK edges in an option area by `shift` and sets TSecr, in place: the layout stays Linux's.
fn patch_options(options: &mut [u8], shift: u32, tsecr: Option<u32>) {
    let mut at = 0;
    while at < options.len() {
        let kind = options[at];
        if kind == 0 {
            break;
        }
        if kind == 1 {
            at += 1;
            continue;
        }
        let len = options.get(at + 1).map_or(0, |&l| usize::from(l));
        if len < 2 || at + len > options.len() {
            break;
        }
        let data = &mut options[at + 2..at + len];
        match (kind, tsecr) {
            // Timestamps: TSval (4 bytes), then TSecr.
            (8, Some(tsecr)) if data.len() == 8 => data[4..].copy_from_slice(&tsecr.to_be_bytes()),
            // SACK blocks: left and right edges, 4 bytes each.
            (5, _) => {
                for edge in data.chunks_exact_mut(4) {
                    let value = u32::from_be_bytes([edge[0], edge[1], edge[2], edge[3]]).wrapping_add(shift);
                    edge.copy_from_slice(&value.to_be_bytes());
                }
            }
            _ => {}
        }
        at += len;
    }
}
