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

    fn read_u16(&self, range: core::ops::Range<usize>) -> u16 {
        let b = &self.buffer.as_ref()[range];
        u16::from_be_bytes([b[0], b[1]])
    }

    fn read_addr(&self, range: core::ops::Range<usize>) -> Ipv4Addr {
        let b = &self.buffer.as_ref()[range];
        Ipv4Addr::new(b[0], b[1], b[2], b[3])
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
        self.read_u16(field::LENGTH)
    }

    /// The identification field.
    pub fn ident(&self) -> u16 {
        self.read_u16(field::IDENT)
    }

    /// The don't-fragment flag.
    pub fn dont_frag(&self) -> bool {
        self.read_u16(field::FLG_OFF) & FLAG_DONT_FRAG != 0
    }

    /// The more-fragments flag.
    pub fn more_frags(&self) -> bool {
        self.read_u16(field::FLG_OFF) & FLAG_MORE_FRAGS != 0
    }

    /// The fragment offset in bytes (the field counts units of eight).
    pub fn frag_offset(&self) -> u16 {
        (self.read_u16(field::FLG_OFF) & FRAG_OFFSET_MASK) << 3
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
        self.read_u16(field::CHECKSUM)
    }

    /// The source address.
    pub fn src_addr(&self) -> Ipv4Addr {
        self.read_addr(field::SRC_ADDR)
    }

    /// The destination address.
    pub fn dst_addr(&self) -> Ipv4Addr {
        self.read_addr(field::DST_ADDR)
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
    fn write_u16(&mut self, range: core::ops::Range<usize>, value: u16) {
        self.buffer.as_mut()[range].copy_from_slice(&value.to_be_bytes());
    }

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
        self.write_u16(field::LENGTH, value);
    }

    /// Sets the identification field.
    pub fn set_ident(&mut self, value: u16) {
        self.write_u16(field::IDENT, value);
    }

    /// Clears the flags and the fragment offset.
    pub fn clear_flags(&mut self) {
        self.write_u16(field::FLG_OFF, 0);
    }

    /// Sets or clears the don't-fragment flag.
    pub fn set_dont_frag(&mut self, value: bool) {
        let raw = self.read_u16(field::FLG_OFF);
        let raw = if value {
            raw | FLAG_DONT_FRAG
        } else {
            raw & !FLAG_DONT_FRAG
        };
        self.write_u16(field::FLG_OFF, raw);
    }

    /// Sets or clears the more-fragments flag.
    pub fn set_more_frags(&mut self, value: bool) {
        let raw = self.read_u16(field::FLG_OFF);
        let raw = if value {
            raw | FLAG_MORE_FRAGS
        } else {
            raw & !FLAG_MORE_FRAGS
        };
        self.write_u16(field::FLG_OFF, raw);
    }

    /// Sets the fragment offset in bytes (a multiple of eight).
    pub fn set_frag_offset(&mut self, offset_bytes: u16) {
        let raw = self.read_u16(field::FLG_OFF);
        self.write_u16(
            field::FLG_OFF,
            (raw & !FRAG_OFFSET_MASK) | (offset_bytes >> 3),
        );
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
        self.write_u16(field::CHECKSUM, value);
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
