//! The `wire` harness: bytes as an Ethernet frame and everything inside it.
//!
//! Each layer that parses is emitted into a fresh buffer and parsed again. What is asserted is only what the
//! parsers promise: the re-parsed meaning equals the first (TCP options as [`TcpOptions::fit`] keeps them), and the
//! emitted bytes equal the received ones wherever the `Repr` keeps every field (Ethernet, ARP, an IPv4 or TCP
//! header without options), less the checksum (0x0000 and 0xffff both verify when the data sums to 0xffff) and
//! the bits the format reserves (IPv4's evil bit, TCP's four reserved bits), which a `Repr` does not keep.

use std::net::Ipv4Addr;

use super::Cursor;
use crate::app::demo::describe_frame;
use crate::engine::shard::tcp_dst_port;
use crate::wire::checksum;
use crate::wire::{
    ArpPacket, ArpRepr, EtherType, EthernetFrame, EthernetRepr, IpProtocol, Ipv4Packet, Ipv4Repr, TcpOptionIter,
    TcpOptions, TcpPacket, TcpRepr,
};

/// Runs `data` through the parsers; panics when a round trip disagrees.
pub fn wire(data: &[u8]) {
    checksums(data);
    // The display code formats whatever parses.
    let _ = describe_frame(data);
    let Ok(frame) = EthernetFrame::new_checked(data) else {
        assert!(data.len() < 14, "a frame of 14 bytes or more has an Ethernet header");
        return;
    };
    let eth = EthernetRepr::parse(&frame).expect("a checked frame parses");
    let mut out = vec![0u8; data.len()];
    let mut view = EthernetFrame::new_unchecked(&mut out[..]);
    eth.emit(&mut view);
    view.payload_mut().copy_from_slice(frame.payload());
    assert_eq!(out, data, "Ethernet: emitted header differs");
    let _ = eth.to_string();
    match eth.ethertype {
        EtherType::Arp => arp(frame.payload()),
        EtherType::Ipv4 => {
            let full_tcp = ipv4(frame.payload());
            // The cores' steering peek must agree with the full parse on every TCP frame the stack would take.
            if let Some(dst_port) = full_tcp {
                assert_eq!(tcp_dst_port(data), Some(dst_port), "steering peek disagrees with the parser");
            }
        }
        _ => {}
    }
}

fn arp(bytes: &[u8]) {
    let Ok(packet) = ArpPacket::new_checked(bytes) else { return };
    let Ok(repr) = ArpRepr::parse(&packet) else { return };
    let _ = repr.to_string();
    let mut out = vec![0u8; repr.buffer_len()];
    repr.emit(&mut ArpPacket::new_unchecked(&mut out[..]));
    // Ethernet/IPv4 is the only kind that parses, so every field of those 28 bytes is in the repr.
    assert_eq!(out[..], bytes[..repr.buffer_len()], "ARP: emitted packet differs");
    let again = ArpRepr::parse(&ArpPacket::new_checked(&out[..]).expect("emitted ARP checks")).expect("re-parse");
    assert_eq!(again, repr, "ARP: round trip differs");
}

/// Returns the TCP destination port when the packet parsed all the way to TCP (checksums included).
fn ipv4(bytes: &[u8]) -> Option<u16> {
    let packet = Ipv4Packet::new_checked(bytes).ok()?;
    let _ = (packet.options(), packet.verify_checksum());
    let repr = Ipv4Repr::parse(&packet).ok()?;
    assert_eq!(repr.payload_len, packet.payload().len());
    let _ = repr.to_string();
    let mut out = vec![0u8; repr.buffer_len()];
    let mut view = Ipv4Packet::new_unchecked(&mut out[..]);
    repr.emit(&mut view);
    view.payload_mut().copy_from_slice(packet.payload());
    let emitted = Ipv4Packet::new_checked(&out[..]).expect("emitted IPv4 checks");
    assert!(emitted.verify_checksum(), "IPv4: emitted checksum does not verify");
    let again = Ipv4Repr::parse(&emitted).expect("emitted IPv4 parses");
    assert_eq!(again, repr, "IPv4: round trip differs");
    if packet.header_len() == 20 {
        let mut received = bytes[..repr.buffer_len()].to_vec();
        received[6] &= 0x7f; // the reserved flag
        received[10..12].copy_from_slice(&out[10..12]);
        assert_eq!(out, received, "IPv4: emitted header differs");
    }
    if repr.protocol != IpProtocol::Tcp {
        return None;
    }
    tcp(packet.payload(), repr.src_addr, repr.dst_addr)
}

fn tcp(bytes: &[u8], src: Ipv4Addr, dst: Ipv4Addr) -> Option<u16> {
    let packet = TcpPacket::new_checked(bytes).ok()?;
    for option in TcpOptionIter::new(packet.options()).flatten() {
        let _ = option.to_string();
    }
    let unverified = TcpRepr::parse(&packet, src, dst, false);
    let repr = match TcpRepr::parse(&packet, src, dst, true) {
        Ok(repr) => repr,
        Err(crate::wire::Error::Checksum) => return None,
        Err(e) => {
            assert_eq!(unverified, Err(e), "TCP: the checksum is the only thing verification adds");
            return None;
        }
    };
    assert_eq!(unverified, Ok(repr), "TCP: the checksum is the only thing verification adds");
    assert_eq!(TcpOptions::parse(packet.options()), Ok(repr.options));
    let _ = repr.to_string();
    let mut out = vec![0u8; repr.buffer_len()];
    repr.emit(&mut TcpPacket::new_unchecked(&mut out[..]), src, dst);
    let emitted = TcpPacket::new_checked(&out[..]).expect("emitted TCP checks");
    let again = TcpRepr::parse(&emitted, src, dst, true).expect("emitted TCP parses, checksum included");
    assert_eq!(again, TcpRepr { options: repr.options.fit(), ..repr }, "TCP: round trip differs");
    if packet.header_len() == 20 {
        let mut received = bytes.to_vec();
        received[12] &= 0xf0; // reserved bits
        received[16..18].copy_from_slice(&out[16..18]);
        assert_eq!(out, received, "TCP: emitted segment differs");
    }
    Some(repr.dst_port)
}

/// The fast checksum against a word-by-word reference (RFC 1071), and incremental update (RFC 1624) of one word
/// chosen by the first bytes.
fn checksums(data: &[u8]) {
    assert_eq!(checksum::data(data), reference_sum(data), "checksum of {} bytes", data.len());
    // Odd offsets and lengths: the fast path's tail handling.
    let mut cursor = Cursor::new(data);
    let (a, b) = (usize::from(cursor.u8()), usize::from(cursor.u8()));
    if let Some(slice) = data.get(a.min(data.len())..(a + b).min(data.len())) {
        assert_eq!(checksum::data(slice), reference_sum(slice), "checksum of a slice");
    }
    if data.len() >= 2 {
        let at = (a * 2) % (data.len() & !1);
        let old_word = u16::from_be_bytes([data[at], data[at + 1]]);
        let new_word = cursor.u16();
        let old_checksum = checksum::checksum(data);
        let updated = checksum::update(old_checksum, old_word, new_word);
        let mut changed = data.to_vec();
        changed[at..at + 2].copy_from_slice(&new_word.to_be_bytes());
        if changed.iter().all(|&b| b == 0) {
            // RFC 1624's one exception: negative zero where a full sum gives positive zero; both verify.
            assert_eq!(updated, 0);
        } else {
            assert_eq!(updated, checksum::checksum(&changed), "incremental update differs from a full sum");
        }
    }
}

/// RFC 1071 done the plain way: big-endian words, end-around carry after each, an odd byte padded with zero.
fn reference_sum(bytes: &[u8]) -> u16 {
    let mut acc: u32 = 0;
    for pair in bytes.chunks(2) {
        let word = u32::from(pair[0]) << 8 | u32::from(pair.get(1).copied().unwrap_or(0));
        acc += word;
        acc = (acc & 0xffff) + (acc >> 16);
    }
    acc as u16
}
