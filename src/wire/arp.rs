//! ARP (RFC 826). The view reads any hardware and protocol sizes; [`ArpRepr`] knows Ethernet and IPv4 only.

use core::fmt;
use std::net::Ipv4Addr;

use super::ethernet::{EtherType, EthernetAddress};
use super::{Error, Result};

/// The hardware type of Ethernet (RFC 826, IANA "Hardware Types").
pub const HARDWARE_ETHERNET: u16 = 1;

/// The ARP opcode.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub enum ArpOperation {
    /// Who has the target protocol address? (1)
    Request,
    /// The source hardware address has the source protocol address. (2)
    Reply,
    /// Any other opcode (RARP, InARP...).
    Unknown(u16),
}

impl From<u16> for ArpOperation {
    fn from(value: u16) -> ArpOperation {
        match value {
            1 => ArpOperation::Request,
            2 => ArpOperation::Reply,
            other => ArpOperation::Unknown(other),
        }
    }
}

impl From<ArpOperation> for u16 {
    fn from(value: ArpOperation) -> u16 {
        match value {
            ArpOperation::Request => 1,
            ArpOperation::Reply => 2,
            ArpOperation::Unknown(other) => other,
        }
    }
}

mod field {
    use core::ops::Range;

    pub const HTYPE: Range<usize> = 0..2;
    pub const PTYPE: Range<usize> = 2..4;
    pub const HLEN: usize = 4;
    pub const PLEN: usize = 5;
    pub const OPER: Range<usize> = 6..8;
    /// The addresses follow; their offsets depend on HLEN and PLEN.
    pub const ADDRESSES: usize = 8;

    pub const fn sha(hlen: u8, _plen: u8) -> Range<usize> {
        let start = ADDRESSES;
        start..start + hlen as usize
    }
    pub const fn spa(hlen: u8, plen: u8) -> Range<usize> {
        let start = sha(hlen, plen).end;
        start..start + plen as usize
    }
    pub const fn tha(hlen: u8, plen: u8) -> Range<usize> {
        let start = spa(hlen, plen).end;
        start..start + hlen as usize
    }
    pub const fn tpa(hlen: u8, plen: u8) -> Range<usize> {
        let start = tha(hlen, plen).end;
        start..start + plen as usize
    }
}

/// The length of an ARP packet for Ethernet and IPv4.
pub const ETHERNET_IPV4_LEN: usize = field::tpa(6, 4).end;

/// A view over the bytes of an ARP packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArpPacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> ArpPacket<T> {
    /// Wraps `buffer` without checking; accessors panic if it is shorter than the sizes it declares.
    pub const fn new_unchecked(buffer: T) -> ArpPacket<T> {
        ArpPacket { buffer }
    }

    /// Wraps `buffer` after checking it holds the fixed part and the four addresses its sizes declare.
    pub fn new_checked(buffer: T) -> Result<ArpPacket<T>> {
        let packet = Self::new_unchecked(buffer);
        packet.check_len()?;
        Ok(packet)
    }

    /// `Err(Truncated)` when the buffer is shorter than the fixed part or than the addresses it declares.
    /// Bytes after the addresses (Ethernet padding) are allowed.
    pub fn check_len(&self) -> Result<()> {
        let len = self.buffer.as_ref().len();
        if len < field::ADDRESSES {
            return Err(Error::Truncated);
        }
        if len < field::tpa(self.hardware_len(), self.protocol_len()).end {
            return Err(Error::Truncated);
        }
        Ok(())
    }

    /// The wrapped buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// The hardware type ([`HARDWARE_ETHERNET`] is 1).
    pub fn hardware_type(&self) -> u16 {
        super::get_u16(&self.buffer.as_ref()[field::HTYPE])
    }

    /// The protocol type, in EtherType numbering.
    pub fn protocol_type(&self) -> EtherType {
        EtherType::from(super::get_u16(&self.buffer.as_ref()[field::PTYPE]))
    }

    /// The length of a hardware address in bytes.
    pub fn hardware_len(&self) -> u8 {
        self.buffer.as_ref()[field::HLEN]
    }

    /// The length of a protocol address in bytes.
    pub fn protocol_len(&self) -> u8 {
        self.buffer.as_ref()[field::PLEN]
    }

    /// The opcode.
    pub fn operation(&self) -> ArpOperation {
        ArpOperation::from(super::get_u16(&self.buffer.as_ref()[field::OPER]))
    }

    /// The sender's hardware address bytes.
    pub fn source_hardware_addr(&self) -> &[u8] {
        &self.buffer.as_ref()[field::sha(self.hardware_len(), self.protocol_len())]
    }

    /// The sender's protocol address bytes.
    pub fn source_protocol_addr(&self) -> &[u8] {
        &self.buffer.as_ref()[field::spa(self.hardware_len(), self.protocol_len())]
    }

    /// The target's hardware address bytes.
    pub fn target_hardware_addr(&self) -> &[u8] {
        &self.buffer.as_ref()[field::tha(self.hardware_len(), self.protocol_len())]
    }

    /// The target's protocol address bytes.
    pub fn target_protocol_addr(&self) -> &[u8] {
        &self.buffer.as_ref()[field::tpa(self.hardware_len(), self.protocol_len())]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> ArpPacket<T> {
    /// Sets the hardware type.
    pub fn set_hardware_type(&mut self, value: u16) {
        self.buffer.as_mut()[field::HTYPE].copy_from_slice(&value.to_be_bytes());
    }

    /// Sets the protocol type.
    pub fn set_protocol_type(&mut self, value: EtherType) {
        self.buffer.as_mut()[field::PTYPE].copy_from_slice(&u16::from(value).to_be_bytes());
    }

    /// Sets the hardware address length; set it before the addresses.
    pub fn set_hardware_len(&mut self, value: u8) {
        self.buffer.as_mut()[field::HLEN] = value;
    }

    /// Sets the protocol address length; set it before the addresses.
    pub fn set_protocol_len(&mut self, value: u8) {
        self.buffer.as_mut()[field::PLEN] = value;
    }

    /// Sets the opcode.
    pub fn set_operation(&mut self, value: ArpOperation) {
        self.buffer.as_mut()[field::OPER].copy_from_slice(&u16::from(value).to_be_bytes());
    }

    /// Sets the sender's hardware address; `value` must be `hardware_len` bytes.
    pub fn set_source_hardware_addr(&mut self, value: &[u8]) {
        let range = field::sha(self.hardware_len(), self.protocol_len());
        self.buffer.as_mut()[range].copy_from_slice(value);
    }

    /// Sets the sender's protocol address; `value` must be `protocol_len` bytes.
    pub fn set_source_protocol_addr(&mut self, value: &[u8]) {
        let range = field::spa(self.hardware_len(), self.protocol_len());
        self.buffer.as_mut()[range].copy_from_slice(value);
    }

    /// Sets the target's hardware address; `value` must be `hardware_len` bytes.
    pub fn set_target_hardware_addr(&mut self, value: &[u8]) {
        let range = field::tha(self.hardware_len(), self.protocol_len());
        self.buffer.as_mut()[range].copy_from_slice(value);
    }

    /// Sets the target's protocol address; `value` must be `protocol_len` bytes.
    pub fn set_target_protocol_addr(&mut self, value: &[u8]) {
        let range = field::tpa(self.hardware_len(), self.protocol_len());
        self.buffer.as_mut()[range].copy_from_slice(value);
    }
}

fn ipv4(bytes: &[u8]) -> Ipv4Addr {
    let mut octets = [0u8; 4];
    octets.copy_from_slice(bytes);
    Ipv4Addr::from(octets)
}

fn mac(bytes: &[u8]) -> EthernetAddress {
    let mut octets = [0u8; 6];
    octets.copy_from_slice(bytes);
    EthernetAddress(octets)
}

/// The meaning of an ARP packet xtcp handles: Ethernet hardware addresses, IPv4 protocol addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ArpRepr {
    /// ARP over Ethernet for IPv4 (hardware type 1, protocol type 0x0800, sizes 6 and 4).
    EthernetIpv4 {
        /// Request, reply, or another opcode.
        operation: ArpOperation,
        /// Sender MAC.
        source_hardware_addr: EthernetAddress,
        /// Sender IPv4 address.
        source_protocol_addr: Ipv4Addr,
        /// Target MAC (zero in a request).
        target_hardware_addr: EthernetAddress,
        /// Target IPv4 address.
        target_protocol_addr: Ipv4Addr,
    },
}

impl ArpRepr {
    /// Reads a checked packet. Another hardware or protocol type is `Unsupported`; Ethernet/IPv4 with address
    /// sizes other than 6 and 4 is `Malformed`.
    pub fn parse<T: AsRef<[u8]> + ?Sized>(packet: &ArpPacket<&T>) -> Result<ArpRepr> {
        packet.check_len()?;
        if packet.hardware_type() != HARDWARE_ETHERNET || packet.protocol_type() != EtherType::Ipv4 {
            return Err(Error::Unsupported);
        }
        if packet.hardware_len() != 6 || packet.protocol_len() != 4 {
            return Err(Error::Malformed);
        }
        Ok(ArpRepr::EthernetIpv4 {
            operation: packet.operation(),
            source_hardware_addr: mac(packet.source_hardware_addr()),
            source_protocol_addr: ipv4(packet.source_protocol_addr()),
            target_hardware_addr: mac(packet.target_hardware_addr()),
            target_protocol_addr: ipv4(packet.target_protocol_addr()),
        })
    }

    /// The packet length, [`ETHERNET_IPV4_LEN`] (28).
    pub const fn buffer_len(&self) -> usize {
        match self {
            ArpRepr::EthernetIpv4 { .. } => ETHERNET_IPV4_LEN,
        }
    }

    /// Writes the packet into `packet`, which must hold [`ArpRepr::buffer_len`] bytes.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, packet: &mut ArpPacket<T>) {
        match *self {
            ArpRepr::EthernetIpv4 {
                operation,
                source_hardware_addr,
                source_protocol_addr,
                target_hardware_addr,
                target_protocol_addr,
            } => {
                packet.set_hardware_type(HARDWARE_ETHERNET);
                packet.set_protocol_type(EtherType::Ipv4);
                packet.set_hardware_len(6);
                packet.set_protocol_len(4);
                packet.set_operation(operation);
                packet.set_source_hardware_addr(&source_hardware_addr.0);
                packet.set_source_protocol_addr(&source_protocol_addr.octets());
                packet.set_target_hardware_addr(&target_hardware_addr.0);
                packet.set_target_protocol_addr(&target_protocol_addr.octets());
            }
        }
    }
}

impl fmt::Display for ArpRepr {
    /// Like tcpdump: `Request who-has 10.0.0.2 tell 10.0.0.1`, `Reply 10.0.0.2 is-at 52:54:00:ab:cd:ef`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            ArpRepr::EthernetIpv4 {
                operation,
                source_hardware_addr,
                source_protocol_addr,
                target_hardware_addr,
                target_protocol_addr,
            } => match operation {
                ArpOperation::Request => {
                    write!(f, "Request who-has {target_protocol_addr} tell {source_protocol_addr}")
                }
                ArpOperation::Reply => write!(f, "Reply {source_protocol_addr} is-at {source_hardware_addr}"),
                ArpOperation::Unknown(op) => write!(
                    f,
                    "opcode {op} {source_hardware_addr} {source_protocol_addr} > \
                     {target_hardware_addr} {target_protocol_addr}"
                ),
            },
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::wire::ethernet::{EthernetFrame, EthernetRepr};
    use proptest::prelude::*;

    /// A real ARP request from Linux 6.18 on a veth: who-has 10.0.0.2 tell 10.0.0.1.
    #[rustfmt::skip]
    pub(crate) const ARP_REQUEST: [u8; 42] = [
        // Ethernet: dst ff:ff:ff:ff:ff:ff, src 52:54:00:12:34:56, type ARP
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x52, 0x54, 0x00, 0x12, 0x34, 0x56, 0x08, 0x06,
        // ARP: htype 1, ptype 0x0800, hlen 6, plen 4, op 1 (request)
        0x00, 0x01, 0x08, 0x00, 0x06, 0x04, 0x00, 0x01,
        // sha 52:54:00:12:34:56, spa 10.0.0.1
        0x52, 0x54, 0x00, 0x12, 0x34, 0x56, 0x0a, 0x00, 0x00, 0x01,
        // tha 00:00:00:00:00:00, tpa 10.0.0.2
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x0a, 0x00, 0x00, 0x02,
    ];

    /// The reply to [`ARP_REQUEST`]: 10.0.0.2 is-at 52:54:00:ab:cd:ef.
    #[rustfmt::skip]
    pub(crate) const ARP_REPLY: [u8; 42] = [
        // Ethernet: dst 52:54:00:12:34:56, src 52:54:00:ab:cd:ef, type ARP
        0x52, 0x54, 0x00, 0x12, 0x34, 0x56, 0x52, 0x54, 0x00, 0xab, 0xcd, 0xef, 0x08, 0x06,
        // ARP: htype 1, ptype 0x0800, hlen 6, plen 4, op 2 (reply)
        0x00, 0x01, 0x08, 0x00, 0x06, 0x04, 0x00, 0x02,
        // sha 52:54:00:ab:cd:ef, spa 10.0.0.2
        0x52, 0x54, 0x00, 0xab, 0xcd, 0xef, 0x0a, 0x00, 0x00, 0x02,
        // tha 52:54:00:12:34:56, tpa 10.0.0.1
        0x52, 0x54, 0x00, 0x12, 0x34, 0x56, 0x0a, 0x00, 0x00, 0x01,
    ];

    const MAC_A: EthernetAddress = EthernetAddress([0x52, 0x54, 0x00, 0x12, 0x34, 0x56]);
    const MAC_B: EthernetAddress = EthernetAddress([0x52, 0x54, 0x00, 0xab, 0xcd, 0xef]);
    const IP_A: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
    const IP_B: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);

    fn request_repr() -> ArpRepr {
        ArpRepr::EthernetIpv4 {
            operation: ArpOperation::Request,
            source_hardware_addr: MAC_A,
            source_protocol_addr: IP_A,
            target_hardware_addr: EthernetAddress([0; 6]),
            target_protocol_addr: IP_B,
        }
    }

    fn reply_repr() -> ArpRepr {
        ArpRepr::EthernetIpv4 {
            operation: ArpOperation::Reply,
            source_hardware_addr: MAC_B,
            source_protocol_addr: IP_B,
            target_hardware_addr: MAC_A,
            target_protocol_addr: IP_A,
        }
    }

    fn parse_frame(bytes: &[u8]) -> Result<(EthernetRepr, ArpRepr)> {
        let frame = EthernetFrame::new_checked(bytes)?;
        let eth = EthernetRepr::parse(&frame)?;
        let arp = ArpRepr::parse(&ArpPacket::new_checked(frame.payload())?)?;
        Ok((eth, arp))
    }

    #[test]
    fn deconstruct_request() {
        let packet = ArpPacket::new_checked(&ARP_REQUEST[14..]).unwrap();
        assert_eq!(packet.hardware_type(), 1);
        assert_eq!(packet.protocol_type(), EtherType::Ipv4);
        assert_eq!(packet.hardware_len(), 6);
        assert_eq!(packet.protocol_len(), 4);
        assert_eq!(packet.operation(), ArpOperation::Request);
        assert_eq!(packet.source_hardware_addr(), &MAC_A.0);
        assert_eq!(packet.source_protocol_addr(), &[10, 0, 0, 1]);
        assert_eq!(packet.target_hardware_addr(), &[0; 6]);
        assert_eq!(packet.target_protocol_addr(), &[10, 0, 0, 2]);
        let (eth, arp) = parse_frame(&ARP_REQUEST).unwrap();
        assert_eq!(eth.dst_addr, EthernetAddress::BROADCAST);
        assert_eq!(eth.ethertype, EtherType::Arp);
        assert_eq!(arp, request_repr());
        assert_eq!(arp.to_string(), "Request who-has 10.0.0.2 tell 10.0.0.1");
    }

    #[test]
    fn deconstruct_reply() {
        let (eth, arp) = parse_frame(&ARP_REPLY).unwrap();
        assert_eq!(eth.src_addr, MAC_B);
        assert_eq!(eth.dst_addr, MAC_A);
        assert_eq!(arp, reply_repr());
        assert_eq!(arp.to_string(), "Reply 10.0.0.2 is-at 52:54:00:ab:cd:ef");
    }

    #[test]
    fn construct_request_and_reply() {
        for (bytes, repr) in [(ARP_REQUEST, request_repr()), (ARP_REPLY, reply_repr())] {
            let (eth, _) = parse_frame(&bytes).unwrap();
            let mut out = [0xa5u8; 42];
            let mut frame = EthernetFrame::new_unchecked(&mut out[..]);
            eth.emit(&mut frame);
            assert_eq!(repr.buffer_len(), 28);
            repr.emit(&mut ArpPacket::new_unchecked(frame.payload_mut()));
            assert_eq!(out, bytes);
        }
    }

    #[test]
    fn padded_frame_parses() {
        // On a real wire the request is padded to 60 bytes; the padding is ignored.
        let mut padded = [0u8; 60];
        padded[..42].copy_from_slice(&ARP_REQUEST);
        assert_eq!(parse_frame(&padded).unwrap().1, request_repr());
    }

    #[test]
    fn reject_truncated() {
        for len in 0..ARP_REQUEST.len() {
            assert_eq!(parse_frame(&ARP_REQUEST[..len]).unwrap_err(), Error::Truncated, "len {len}");
        }
        for len in 0..28 {
            assert_eq!(ArpPacket::new_checked(&ARP_REPLY[14..14 + len]).unwrap_err(), Error::Truncated);
        }
    }

    #[test]
    fn reject_other_types() {
        let mut bytes = ARP_REQUEST;
        bytes[15] = 6; // hardware type 6, IEEE 802
        assert_eq!(parse_frame(&bytes).unwrap_err(), Error::Unsupported);
        let mut bytes = ARP_REQUEST;
        bytes[16..18].copy_from_slice(&[0x86, 0xdd]); // protocol IPv6
        assert_eq!(parse_frame(&bytes).unwrap_err(), Error::Unsupported);
        let mut bytes = ARP_REQUEST;
        bytes[19] = 16; // plen 16: now the packet declares 52 bytes
        assert_eq!(parse_frame(&bytes).unwrap_err(), Error::Truncated);
        let mut bytes = ARP_REQUEST;
        bytes[19] = 2; // plen 2: fits, but is not IPv4
        assert_eq!(parse_frame(&bytes).unwrap_err(), Error::Malformed);
        let mut bytes = ARP_REQUEST;
        bytes[21] = 9;
        assert_eq!(parse_frame(&bytes).unwrap().1.to_string().split(' ').next(), Some("opcode"));
    }

    proptest! {
        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            if let Ok(packet) = ArpPacket::new_checked(&bytes[..]) {
                let _ = packet.source_hardware_addr();
                let _ = packet.target_protocol_addr();
                if let Ok(repr) = ArpRepr::parse(&packet) {
                    let mut out = [0u8; 28];
                    repr.emit(&mut ArpPacket::new_unchecked(&mut out[..]));
                    prop_assert_eq!(&out[..], &bytes[..28]);
                    let _ = repr.to_string();
                }
            }
        }

        #[test]
        fn mutated_request_never_panics(at in 0usize..42, value in any::<u8>()) {
            let mut bytes = ARP_REQUEST;
            bytes[at] = value;
            let _ = parse_frame(&bytes);
        }
    }
}
