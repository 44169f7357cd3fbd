//! IPv4 headers (RFC 791). Options are accepted and skipped; fragments are refused (xtcp does not reassemble).

use core::fmt;
use std::net::Ipv4Addr;

use super::checksum;
use super::{Error, Result};

/// The protocol field: what the payload is.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub enum IpProtocol {
    /// ICMP, 1.
    Icmp,
    /// TCP, 6.
    Tcp,
    /// UDP, 17.
    Udp,
    /// Anything else.
    Unknown(u8),
}

impl From<u8> for IpProtocol {
    fn from(value: u8) -> IpProtocol {
        match value {
            1 => IpProtocol::Icmp,
            6 => IpProtocol::Tcp,
            17 => IpProtocol::Udp,
            other => IpProtocol::Unknown(other),
        }
    }
}

impl From<IpProtocol> for u8 {
    fn from(value: IpProtocol) -> u8 {
        match value {
            IpProtocol::Icmp => 1,
            IpProtocol::Tcp => 6,
            IpProtocol::Udp => 17,
            IpProtocol::Unknown(other) => other,
        }
    }
}

impl fmt::Display for IpProtocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IpProtocol::Icmp => f.write_str("ICMP"),
            IpProtocol::Tcp => f.write_str("TCP"),
            IpProtocol::Udp => f.write_str("UDP"),
            IpProtocol::Unknown(other) => write!(f, "proto {other}"),
        }
    }
}

mod field {
    use core::ops::Range;

    pub const VER_IHL: usize = 0;
    pub const DSCP_ECN: usize = 1;
    pub const LENGTH: Range<usize> = 2..4;
    pub const IDENT: Range<usize> = 4..6;
    pub const FLG_OFF: Range<usize> = 6..8;
    pub const TTL: usize = 8;
    pub const PROTOCOL: usize = 9;
    pub const CHECKSUM: Range<usize> = 10..12;
    pub const SRC_ADDR: Range<usize> = 12..16;
    pub const DST_ADDR: Range<usize> = 16..20;
}

/// The length of a header without options.
pub const HEADER_LEN: usize = field::DST_ADDR.end;

/// The largest header: IHL 15.
pub const MAX_HEADER_LEN: usize = 60;

const FLAG_DONT_FRAG: u16 = 0x4000;
const FLAG_MORE_FRAGS: u16 = 0x2000;
const FRAG_OFFSET_MASK: u16 = 0x1fff;

/// A view over the bytes of an IPv4 packet.
///
/// The buffer may be longer than the total length (Ethernet pads short frames to 60 bytes); [`Ipv4Packet::payload`]
/// stops at the total length.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ipv4Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Ipv4Packet<T> {
    /// Wraps `buffer` without checking; accessors panic on a short buffer. Use it to emit.
    pub const fn new_unchecked(buffer: T) -> Ipv4Packet<T> {
        Ipv4Packet { buffer }
    }

    /// Wraps `buffer` after [`Ipv4Packet::check_len`], so that no accessor can panic.
    pub fn new_checked(buffer: T) -> Result<Ipv4Packet<T>> {
        let packet = Self::new_unchecked(buffer);
        packet.check_len()?;
        Ok(packet)
    }

    /// Validates the version and the three lengths (buffer, header, total):
    /// - shorter than 20 bytes, or than the header or total length: `Truncated`;
    /// - version not 4, header length under 20, total length under the header length: `Malformed`.
    pub fn check_len(&self) -> Result<()> {
        let len = self.buffer.as_ref().len();
        if len < HEADER_LEN {
            return Err(Error::Truncated);
        }
        if self.version() != 4 {
            return Err(Error::Malformed);
        }
        let header_len = self.header_len();
        if header_len < HEADER_LEN {
            return Err(Error::Malformed);
        }
        if header_len > len {
            return Err(Error::Truncated);
        }
        let total_len = usize::from(self.total_len());
        if total_len < header_len {
            return Err(Error::Malformed);
        }
        if total_len > len {
            return Err(Error::Truncated);
        }
        Ok(())
    }

    /// The wrapped buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// The version field (4).
    pub fn version(&self) -> u8 {
        self.buffer.as_ref()[field::VER_IHL] >> 4
    }

    /// The header length in bytes: IHL times four.
    pub fn header_len(&self) -> usize {
        usize::from(self.buffer.as_ref()[field::VER_IHL] & 0x0f) * 4
    }

    /// The DSCP and ECN byte (formerly type of service).
    pub fn dscp_ecn(&self) -> u8 {
        self.buffer.as_ref()[field::DSCP_ECN]
    }

    /// The total length: header and payload, in bytes.
    pub fn total_len(&self) -> u16 {
        super::get_u16(&self.buffer.as_ref()[field::LENGTH])
    }

    /// The identification field.
    pub fn ident(&self) -> u16 {
        super::get_u16(&self.buffer.as_ref()[field::IDENT])
    }

    /// The don't-fragment flag.
    pub fn dont_frag(&self) -> bool {
        super::get_u16(&self.buffer.as_ref()[field::FLG_OFF]) & FLAG_DONT_FRAG != 0
    }

    /// The more-fragments flag.
    pub fn more_frags(&self) -> bool {
        super::get_u16(&self.buffer.as_ref()[field::FLG_OFF]) & FLAG_MORE_FRAGS != 0
    }

    /// The fragment offset in bytes (the field counts units of eight).
    pub fn frag_offset(&self) -> u16 {
        (super::get_u16(&self.buffer.as_ref()[field::FLG_OFF]) & FRAG_OFFSET_MASK) << 3
    }

    /// True when this is a fragment of a larger datagram: more-fragments set or a non-zero offset.
    pub fn is_fragment(&self) -> bool {
        self.more_frags() || self.frag_offset() != 0
    }

    /// Time to live.
    pub fn hop_limit(&self) -> u8 {
        self.buffer.as_ref()[field::TTL]
    }

    /// The payload's protocol.
    pub fn protocol(&self) -> IpProtocol {
        IpProtocol::from(self.buffer.as_ref()[field::PROTOCOL])
    }

    /// The header checksum field.
    pub fn checksum(&self) -> u16 {
        super::get_u16(&self.buffer.as_ref()[field::CHECKSUM])
    }

    /// The source address.
    pub fn src_addr(&self) -> Ipv4Addr {
        Ipv4Addr::from(super::get_u32(&self.buffer.as_ref()[field::SRC_ADDR]))
    }

    /// The destination address.
    pub fn dst_addr(&self) -> Ipv4Addr {
        Ipv4Addr::from(super::get_u32(&self.buffer.as_ref()[field::DST_ADDR]))
    }

    /// The option bytes between the fixed header and the payload (empty when IHL is 5).
    pub fn options(&self) -> &[u8] {
        &self.buffer.as_ref()[HEADER_LEN..self.header_len()]
    }

    /// True when the header, options included, sums to 0xffff.
    pub fn verify_checksum(&self) -> bool {
        checksum::data(&self.buffer.as_ref()[..self.header_len()]) == 0xffff
    }
}

impl<'a, T: AsRef<[u8]> + ?Sized> Ipv4Packet<&'a T> {
    /// The bytes from the end of the header to the total length, borrowed for as long as the buffer.
    pub fn payload(&self) -> &'a [u8] {
        let range = self.header_len()..usize::from(self.total_len());
        &self.buffer.as_ref()[range]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Ipv4Packet<T> {
    /// Sets the version field.
    pub fn set_version(&mut self, value: u8) {
        let b = &mut self.buffer.as_mut()[field::VER_IHL];
        *b = (*b & 0x0f) | (value << 4);
    }

    /// Sets the header length in bytes (a multiple of four, 20 to 60).
    pub fn set_header_len(&mut self, len_bytes: usize) {
        let b = &mut self.buffer.as_mut()[field::VER_IHL];
        *b = (*b & 0xf0) | ((len_bytes / 4) as u8 & 0x0f);
    }

    /// Sets the DSCP and ECN byte.
    pub fn set_dscp_ecn(&mut self, value: u8) {
        self.buffer.as_mut()[field::DSCP_ECN] = value;
    }

    /// Sets the total length.
    pub fn set_total_len(&mut self, value: u16) {
        self.buffer.as_mut()[field::LENGTH].copy_from_slice(&u16::to_be_bytes(value));
    }

    /// Sets the identification field.
    pub fn set_ident(&mut self, value: u16) {
        self.buffer.as_mut()[field::IDENT].copy_from_slice(&u16::to_be_bytes(value));
    }

    /// Clears the flags and the fragment offset.
    pub fn clear_flags(&mut self) {
        self.buffer.as_mut()[field::FLG_OFF].copy_from_slice(&u16::to_be_bytes(0));
    }

    /// Sets or clears the don't-fragment flag.
    pub fn set_dont_frag(&mut self, value: bool) {
        let raw = super::get_u16(&self.buffer.as_ref()[field::FLG_OFF]);
        let raw = if value { raw | FLAG_DONT_FRAG } else { raw & !FLAG_DONT_FRAG };
        self.buffer.as_mut()[field::FLG_OFF].copy_from_slice(&u16::to_be_bytes(raw));
    }

    /// Sets or clears the more-fragments flag.
    pub fn set_more_frags(&mut self, value: bool) {
        let raw = super::get_u16(&self.buffer.as_ref()[field::FLG_OFF]);
        let raw = if value { raw | FLAG_MORE_FRAGS } else { raw & !FLAG_MORE_FRAGS };
        self.buffer.as_mut()[field::FLG_OFF].copy_from_slice(&u16::to_be_bytes(raw));
    }

    /// Sets the fragment offset in bytes (a multiple of eight).
    pub fn set_frag_offset(&mut self, offset_bytes: u16) {
        let raw = super::get_u16(&self.buffer.as_ref()[field::FLG_OFF]);
        self.buffer.as_mut()[field::FLG_OFF]
            .copy_from_slice(&u16::to_be_bytes((raw & !FRAG_OFFSET_MASK) | (offset_bytes >> 3)));
    }

    /// Sets the time to live.
    pub fn set_hop_limit(&mut self, value: u8) {
        self.buffer.as_mut()[field::TTL] = value;
    }

    /// Sets the protocol.
    pub fn set_protocol(&mut self, value: IpProtocol) {
        self.buffer.as_mut()[field::PROTOCOL] = u8::from(value);
    }

    /// Sets the checksum field.
    pub fn set_checksum(&mut self, value: u16) {
        self.buffer.as_mut()[field::CHECKSUM].copy_from_slice(&u16::to_be_bytes(value));
    }

    /// Sets the source address.
    pub fn set_src_addr(&mut self, addr: Ipv4Addr) {
        self.buffer.as_mut()[field::SRC_ADDR].copy_from_slice(&addr.octets());
    }

    /// Sets the destination address.
    pub fn set_dst_addr(&mut self, addr: Ipv4Addr) {
        self.buffer.as_mut()[field::DST_ADDR].copy_from_slice(&addr.octets());
    }

    /// The option bytes, to write options into after setting the header length.
    pub fn options_mut(&mut self) -> &mut [u8] {
        let end = self.header_len();
        &mut self.buffer.as_mut()[HEADER_LEN..end]
    }

    /// Computes the header checksum over the header length and writes it.
    pub fn fill_checksum(&mut self) {
        self.set_checksum(0);
        let end = self.header_len();
        let sum = checksum::checksum(&self.buffer.as_ref()[..end]);
        self.set_checksum(sum);
    }

    /// The bytes from the end of the header to the total length, to write the next header into.
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let range = self.header_len()..usize::from(self.total_len());
        &mut self.buffer.as_mut()[range]
    }
}

/// The meaning of an IPv4 header, minus options (which are skipped when parsing and never emitted).
///
/// Identification, DSCP/ECN and DF are kept so that an option-less header round-trips byte for byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Ipv4Repr {
    /// Source address.
    pub src_addr: Ipv4Addr,
    /// Destination address.
    pub dst_addr: Ipv4Addr,
    /// The payload's protocol.
    pub protocol: IpProtocol,
    /// Payload length in bytes (total length minus header length).
    pub payload_len: usize,
    /// Time to live.
    pub hop_limit: u8,
    /// DSCP and ECN byte.
    pub dscp_ecn: u8,
    /// Identification.
    pub ident: u16,
    /// The don't-fragment flag (Linux sets it on TCP: path MTU discovery).
    pub dont_frag: bool,
}

impl Ipv4Repr {
    /// Reads a checked packet: a bad header checksum is `Checksum`, a fragment is `Fragment`.
    pub fn parse<T: AsRef<[u8]> + ?Sized>(packet: &Ipv4Packet<&T>) -> Result<Ipv4Repr> {
        packet.check_len()?;
        if !packet.verify_checksum() {
            return Err(Error::Checksum);
        }
        if packet.is_fragment() {
            return Err(Error::Fragment);
        }
        Ok(Ipv4Repr {
            src_addr: packet.src_addr(),
            dst_addr: packet.dst_addr(),
            protocol: packet.protocol(),
            payload_len: usize::from(packet.total_len()) - packet.header_len(),
            hop_limit: packet.hop_limit(),
            dscp_ecn: packet.dscp_ecn(),
            ident: packet.ident(),
            dont_frag: packet.dont_frag(),
        })
    }

    /// The length of the emitted header, [`HEADER_LEN`] (no options).
    pub const fn header_len(&self) -> usize {
        HEADER_LEN
    }

    /// The length of the emitted packet: header and payload.
    pub const fn buffer_len(&self) -> usize {
        HEADER_LEN + self.payload_len
    }

    /// Writes the header with its checksum into `packet`, which must hold at least [`HEADER_LEN`] bytes; the
    /// payload goes into `packet.payload_mut()` afterwards. `payload_len` must be at most 65515 (the total length
    /// is a 16-bit field); a larger one is clamped.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, packet: &mut Ipv4Packet<T>) {
        packet.set_version(4);
        packet.set_header_len(HEADER_LEN);
        packet.set_dscp_ecn(self.dscp_ecn);
        packet.set_total_len(u16::try_from(self.buffer_len()).unwrap_or(u16::MAX));
        packet.set_ident(self.ident);
        packet.clear_flags();
        packet.set_dont_frag(self.dont_frag);
        packet.set_hop_limit(self.hop_limit);
        packet.set_protocol(self.protocol);
        packet.set_src_addr(self.src_addr);
        packet.set_dst_addr(self.dst_addr);
        packet.fill_checksum();
    }
}

impl fmt::Display for Ipv4Repr {
    /// Like `tcpdump -v`'s first line: `IPv4 10.0.0.1 > 10.0.0.2: TCP ttl 64 id 14759 DF length 40`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "IPv4 {} > {}: {} ttl {} id {}",
            self.src_addr, self.dst_addr, self.protocol, self.hop_limit, self.ident
        )?;
        if self.dont_frag {
            f.write_str(" DF")?;
        }
        if self.dscp_ecn != 0 {
            write!(f, " tos 0x{:x}", self.dscp_ecn)?;
        }
        write!(f, " length {}", self.payload_len)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::wire::checksum::tests::reference_sum;
    use crate::wire::tcp::tests::{SYN, SYN_ACK};
    use proptest::prelude::*;

    /// A real Linux SYN sent with `IP_OPTIONS` record-route (07 07 08 0a000001, then EOL): IHL 7.
    #[rustfmt::skip]
    pub(crate) const SYN_WITH_IP_OPTIONS: [u8; 82] = [
        // Ethernet: dst 52:54:00:ab:cd:ef, src 52:54:00:12:34:56, type IPv4
        0x52, 0x54, 0x00, 0xab, 0xcd, 0xef, 0x52, 0x54, 0x00, 0x12, 0x34, 0x56, 0x08, 0x00,
        // IPv4: ver 4 ihl 7, tos 0, total 68, id 0x65dc, DF, ttl 64, TCP, checksum 0xaec4
        0x47, 0x00, 0x00, 0x44, 0x65, 0xdc, 0x40, 0x00, 0x40, 0x06, 0xae, 0xc4,
        // src 10.0.0.1, dst 10.0.0.2
        0x0a, 0x00, 0x00, 0x01, 0x0a, 0x00, 0x00, 0x02,
        // options: RR len 7 ptr 8 [10.0.0.1], EOL
        0x07, 0x07, 0x08, 0x0a, 0x00, 0x00, 0x01, 0x00,
        // TCP: 59990 > 80, seq 0x536dcb71, ack 0, doff 10, SYN, win 64240, checksum 0xfdb6, urg 0
        0xea, 0x56, 0x00, 0x50, 0x53, 0x6d, 0xcb, 0x71, 0x00, 0x00, 0x00, 0x00,
        0xa0, 0x02, 0xfa, 0xf0, 0xfd, 0xb6, 0x00, 0x00,
        // mss 1460, sackOK, TS val 0x9024a1a8 ecr 0, nop, wscale 10
        0x02, 0x04, 0x05, 0xb4, 0x04, 0x02, 0x08, 0x0a, 0x90, 0x24, 0xa1, 0xa8,
        0x00, 0x00, 0x00, 0x00, 0x01, 0x03, 0x03, 0x0a,
    ];

    fn syn_ip() -> &'static [u8] {
        &SYN[14..]
    }

    fn syn_repr() -> Ipv4Repr {
        Ipv4Repr {
            src_addr: Ipv4Addr::new(10, 0, 0, 1),
            dst_addr: Ipv4Addr::new(10, 0, 0, 2),
            protocol: IpProtocol::Tcp,
            payload_len: 40,
            hop_limit: 64,
            dscp_ecn: 0,
            ident: 0x39a7,
            dont_frag: true,
        }
    }

    #[test]
    fn deconstruct_syn() {
        let packet = Ipv4Packet::new_checked(syn_ip()).unwrap();
        assert_eq!(packet.version(), 4);
        assert_eq!(packet.header_len(), 20);
        assert_eq!(packet.dscp_ecn(), 0);
        assert_eq!(packet.total_len(), 60);
        assert_eq!(packet.ident(), 0x39a7);
        assert!(packet.dont_frag());
        assert!(!packet.more_frags());
        assert_eq!(packet.frag_offset(), 0);
        assert_eq!(packet.hop_limit(), 64);
        assert_eq!(packet.protocol(), IpProtocol::Tcp);
        assert_eq!(packet.checksum(), 0xed12);
        assert!(packet.verify_checksum());
        assert_eq!(reference_sum(&syn_ip()[..20]), 0xffff);
        assert_eq!(packet.src_addr(), Ipv4Addr::new(10, 0, 0, 1));
        assert_eq!(packet.dst_addr(), Ipv4Addr::new(10, 0, 0, 2));
        assert!(packet.options().is_empty());
        assert_eq!(packet.payload(), &SYN[34..]);
        let repr = Ipv4Repr::parse(&packet).unwrap();
        assert_eq!(repr, syn_repr());
        assert_eq!(repr.to_string(), "IPv4 10.0.0.1 > 10.0.0.2: TCP ttl 64 id 14759 DF length 40");
    }

    #[test]
    fn construct_syn_and_syn_ack() {
        for frame in [&SYN[..], &SYN_ACK[..]] {
            let ip = &frame[14..];
            let repr = Ipv4Repr::parse(&Ipv4Packet::new_checked(ip).unwrap()).unwrap();
            let mut out = vec![0xa5u8; repr.buffer_len()];
            let mut packet = Ipv4Packet::new_unchecked(&mut out[..]);
            repr.emit(&mut packet);
            packet.payload_mut().copy_from_slice(&ip[20..]);
            assert_eq!(out, ip);
        }
        // Linux sends its SYN-ACK with identification 0 and DF.
        let repr = Ipv4Repr::parse(&Ipv4Packet::new_checked(&SYN_ACK[14..]).unwrap()).unwrap();
        assert_eq!((repr.ident, repr.dont_frag, repr.src_addr), (0, true, Ipv4Addr::new(10, 0, 0, 2)));
    }

    #[test]
    fn options_are_skipped() {
        let ip = &SYN_WITH_IP_OPTIONS[14..];
        let packet = Ipv4Packet::new_checked(ip).unwrap();
        assert_eq!(packet.header_len(), 28);
        assert_eq!(packet.options(), &[0x07, 0x07, 0x08, 0x0a, 0x00, 0x00, 0x01, 0x00]);
        assert_eq!(packet.payload(), &ip[28..]);
        assert_eq!(reference_sum(&ip[..28]), 0xffff);
        let repr = Ipv4Repr::parse(&packet).unwrap();
        assert_eq!(repr.payload_len, 40);
        assert_eq!(repr.ident, 0x65dc);
        // The repr emits no options: a 20-byte header over the same payload, with a valid checksum.
        let mut out = vec![0u8; repr.buffer_len()];
        let mut view = Ipv4Packet::new_unchecked(&mut out[..]);
        repr.emit(&mut view);
        view.payload_mut().copy_from_slice(packet.payload());
        let reparsed = Ipv4Packet::new_checked(&out[..]).unwrap();
        assert_eq!(Ipv4Repr::parse(&reparsed).unwrap(), repr);
        assert_eq!(reparsed.payload(), packet.payload());
    }

    #[test]
    fn construct_with_options_through_the_view() {
        let ip = &SYN_WITH_IP_OPTIONS[14..];
        let mut out = [0u8; 68];
        let mut packet = Ipv4Packet::new_unchecked(&mut out[..]);
        packet.set_version(4);
        packet.set_header_len(28);
        packet.set_dscp_ecn(0);
        packet.set_total_len(68);
        packet.set_ident(0x65dc);
        packet.clear_flags();
        packet.set_dont_frag(true);
        packet.set_hop_limit(64);
        packet.set_protocol(IpProtocol::Tcp);
        packet.set_src_addr(Ipv4Addr::new(10, 0, 0, 1));
        packet.set_dst_addr(Ipv4Addr::new(10, 0, 0, 2));
        packet.options_mut().copy_from_slice(&ip[20..28]);
        packet.fill_checksum();
        packet.payload_mut().copy_from_slice(&ip[28..]);
        assert_eq!(&out[..], ip);
    }

    #[test]
    fn ethernet_padding_is_not_payload() {
        let mut padded = syn_ip().to_vec();
        padded.extend_from_slice(&[0; 6]);
        let packet = Ipv4Packet::new_checked(&padded[..]).unwrap();
        assert_eq!(packet.payload(), &SYN[34..]);
        assert_eq!(Ipv4Repr::parse(&packet).unwrap(), syn_repr());
    }

    #[test]
    fn reject_truncated() {
        for bytes in [syn_ip(), &SYN_WITH_IP_OPTIONS[14..]] {
            for len in 0..bytes.len() {
                let err = Ipv4Packet::new_checked(&bytes[..len]).unwrap_err();
                assert_eq!(err, Error::Truncated, "len {len}");
            }
        }
    }

    /// The SYN's header with one byte changed and the checksum recomputed.
    fn syn_with(at: usize, value: u8) -> Vec<u8> {
        let mut bytes = syn_ip().to_vec();
        bytes[at] = value;
        Ipv4Packet::new_unchecked(&mut bytes[..]).fill_checksum();
        bytes
    }

    fn parse(bytes: &[u8]) -> Result<Ipv4Repr> {
        Ipv4Repr::parse(&Ipv4Packet::new_checked(bytes)?)
    }

    #[test]
    fn reject_malformed() {
        assert_eq!(parse(&syn_with(0, 0x65)), Err(Error::Malformed)); // version 6
        assert_eq!(parse(&syn_with(0, 0x44)), Err(Error::Malformed)); // IHL 4
        assert_eq!(parse(&syn_with(0, 0x4f)[..40]), Err(Error::Truncated)); // IHL 15: 60 bytes of header
        assert_eq!(parse(&syn_with(3, 19)), Err(Error::Malformed)); // total length below the header
        assert_eq!(parse(&syn_with(3, 61)), Err(Error::Truncated)); // total length past the buffer
        let short = syn_with(3, 20); // a bare header
        assert_eq!(parse(&short).map(|r| r.payload_len), Ok(0));
    }

    #[test]
    fn reject_bad_checksum() {
        let mut bytes = syn_ip().to_vec();
        bytes[8] = 63; // TTL changed, checksum not
        assert_eq!(parse(&bytes), Err(Error::Checksum));
        let mut bytes = syn_ip().to_vec();
        bytes[11] ^= 1;
        assert_eq!(parse(&bytes), Err(Error::Checksum));
    }

    #[test]
    fn reject_fragments() {
        assert_eq!(parse(&syn_with(6, 0x60)), Err(Error::Fragment)); // DF and MF
        assert_eq!(parse(&syn_with(7, 0x01)), Err(Error::Fragment)); // DF, offset 8
        let mut bytes = syn_ip().to_vec();
        let mut packet = Ipv4Packet::new_unchecked(&mut bytes[..]);
        packet.set_frag_offset(1480);
        packet.set_more_frags(false);
        packet.fill_checksum();
        assert_eq!(Ipv4Packet::new_unchecked(&bytes[..]).frag_offset(), 1480);
        assert_eq!(parse(&bytes), Err(Error::Fragment));
    }

    #[test]
    fn protocol_numbers_round_trip() {
        for value in 0..=255u8 {
            assert_eq!(u8::from(IpProtocol::from(value)), value);
        }
        assert_eq!(IpProtocol::from(17), IpProtocol::Udp);
    }

    fn arb_repr() -> impl Strategy<Value = Ipv4Repr> {
        (
            any::<[u8; 4]>(),
            any::<[u8; 4]>(),
            any::<u8>(),
            0usize..1480,
            any::<u8>(),
            any::<u8>(),
            any::<u16>(),
            any::<bool>(),
        )
            .prop_map(|(s, d, p, payload_len, hop_limit, dscp_ecn, ident, dont_frag)| Ipv4Repr {
                src_addr: Ipv4Addr::from(s),
                dst_addr: Ipv4Addr::from(d),
                protocol: IpProtocol::from(p),
                payload_len,
                hop_limit,
                dscp_ecn,
                ident,
                dont_frag,
            })
    }

    proptest! {
        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..100)) {
            if let Ok(packet) = Ipv4Packet::new_checked(&bytes[..]) {
                let _ = (packet.options(), packet.payload(), packet.verify_checksum());
                let _ = Ipv4Repr::parse(&packet);
            }
        }

        #[test]
        fn mutated_syn_never_panics(at in 0usize..60, value in any::<u8>(), fix in any::<bool>()) {
            let mut bytes = syn_ip().to_vec();
            bytes[at] = value;
            if fix && Ipv4Packet::new_checked(&bytes[..]).is_ok() {
                Ipv4Packet::new_unchecked(&mut bytes[..]).fill_checksum();
            }
            if let Ok(packet) = Ipv4Packet::new_checked(&bytes[..]) {
                let _ = (packet.options(), packet.payload());
                let _ = Ipv4Repr::parse(&packet);
            }
        }

        #[test]
        fn repr_round_trips(repr in arb_repr()) {
            let mut bytes = vec![0u8; repr.buffer_len()];
            repr.emit(&mut Ipv4Packet::new_unchecked(&mut bytes[..]));
            let packet = Ipv4Packet::new_checked(&bytes[..]).unwrap();
            prop_assert_eq!(Ipv4Repr::parse(&packet), Ok(repr));
            prop_assert_eq!(reference_sum(&bytes[..20]), 0xffff);
        }
    }
}
