//! TCP header and options (RFC 9293 §3.1, RFC 7323, RFC 2018).
//!
//! [`TcpRepr`] is what the connection state machine consumes and produces; [`TcpPacket`] is the checked view.

use core::cmp::Ordering;
use core::fmt;
use core::ops::{Add, AddAssign, Sub};
use std::net::Ipv4Addr;

use super::checksum;
use super::{Error, Result};

/// A TCP sequence number: arithmetic modulo 2^32, compared with wrapping arithmetic (RFC 9293 §3.4, RFC 1982).
///
/// `a < b` means `b` lies in the 2^31 numbers after `a`. This is not a total order over all of u32, which is why
/// the type implements `PartialOrd` only.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct SeqNumber(pub u32);

impl SeqNumber {
    /// The signed distance from `other` to `self`: positive when `self` is after `other`.
    pub fn diff(self, other: SeqNumber) -> i32 {
        self.0.wrapping_sub(other.0) as i32
    }

    /// The later of two numbers in sequence space.
    pub fn max(self, other: SeqNumber) -> SeqNumber {
        if self.diff(other) >= 0 {
            self
        } else {
            other
        }
    }

    /// The earlier of two numbers in sequence space.
    pub fn min(self, other: SeqNumber) -> SeqNumber {
        if self.diff(other) <= 0 {
            self
        } else {
            other
        }
    }
}

impl PartialOrd for SeqNumber {
    fn partial_cmp(&self, other: &SeqNumber) -> Option<Ordering> {
        Some(self.diff(*other).cmp(&0))
    }
}

impl Add<usize> for SeqNumber {
    type Output = SeqNumber;
    /// Adds a length; lengths in one window are far below 2^31.
    fn add(self, rhs: usize) -> SeqNumber {
        SeqNumber(self.0.wrapping_add(rhs as u32))
    }
}

impl AddAssign<usize> for SeqNumber {
    fn add_assign(&mut self, rhs: usize) {
        *self = *self + rhs;
    }
}

impl Sub<usize> for SeqNumber {
    type Output = SeqNumber;
    fn sub(self, rhs: usize) -> SeqNumber {
        SeqNumber(self.0.wrapping_sub(rhs as u32))
    }
}

impl Sub<SeqNumber> for SeqNumber {
    type Output = usize;
    /// The forward distance from `rhs` to `self`; zero when `rhs` is after `self`.
    fn sub(self, rhs: SeqNumber) -> usize {
        let d = self.diff(rhs);
        if d < 0 {
            0
        } else {
            d as usize
        }
    }
}

impl fmt::Debug for SeqNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl fmt::Display for SeqNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// The control bits of a TCP header, as on the wire (byte 13).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct TcpFlags(pub u8);

impl TcpFlags {
    /// No more data from sender.
    pub const FIN: TcpFlags = TcpFlags(0x01);
    /// Synchronize sequence numbers.
    pub const SYN: TcpFlags = TcpFlags(0x02);
    /// Reset the connection.
    pub const RST: TcpFlags = TcpFlags(0x04);
    /// Push function.
    pub const PSH: TcpFlags = TcpFlags(0x08);
    /// The acknowledgment field is significant.
    pub const ACK: TcpFlags = TcpFlags(0x10);
    /// The urgent pointer field is significant.
    pub const URG: TcpFlags = TcpFlags(0x20);
    /// ECN-Echo (RFC 3168).
    pub const ECE: TcpFlags = TcpFlags(0x40);
    /// Congestion window reduced (RFC 3168).
    pub const CWR: TcpFlags = TcpFlags(0x80);

    /// True when every bit of `other` is set in `self`.
    pub const fn contains(self, other: TcpFlags) -> bool {
        self.0 & other.0 == other.0
    }
    /// The SYN bit.
    pub const fn syn(self) -> bool {
        self.contains(Self::SYN)
    }
    /// The FIN bit.
    pub const fn fin(self) -> bool {
        self.contains(Self::FIN)
    }
    /// The RST bit.
    pub const fn rst(self) -> bool {
        self.contains(Self::RST)
    }
    /// The ACK bit.
    pub const fn ack(self) -> bool {
        self.contains(Self::ACK)
    }
    /// The PSH bit.
    pub const fn psh(self) -> bool {
        self.contains(Self::PSH)
    }
}

impl core::ops::BitOr for TcpFlags {
    type Output = TcpFlags;
    fn bitor(self, rhs: TcpFlags) -> TcpFlags {
        TcpFlags(self.0 | rhs.0)
    }
}

impl core::ops::BitOrAssign for TcpFlags {
    fn bitor_assign(&mut self, rhs: TcpFlags) {
        self.0 |= rhs.0;
    }
}

impl fmt::Debug for TcpFlags {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl fmt::Display for TcpFlags {
    /// Like tcpdump: `S`, `S.`, `F.`, `R`, `P.`; `.` is ACK, `none` when no bit is set.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut s = String::new();
        for (bit, c) in [
            (Self::SYN, 'S'),
            (Self::FIN, 'F'),
            (Self::PSH, 'P'),
            (Self::RST, 'R'),
            (Self::URG, 'U'),
            (Self::ECE, 'E'),
            (Self::CWR, 'W'),
            (Self::ACK, '.'),
        ] {
            if self.contains(bit) {
                s.push(c);
            }
        }
        if s.is_empty() {
            s.push_str("none");
        }
        f.write_str(&s)
    }
}

/// Up to four SACK blocks (RFC 2018), each `[left, right)` in sequence space.
#[derive(Clone, Copy, PartialEq, Eq, Default, Debug)]
pub struct SackBlocks {
    /// The blocks; only the first `len` are meaningful.
    pub blocks: [(SeqNumber, SeqNumber); 4],
    /// How many blocks are present, 0 to 4.
    pub len: u8,
}

impl SackBlocks {
    /// The present blocks.
    pub fn as_slice(&self) -> &[(SeqNumber, SeqNumber)] {
        &self.blocks[..usize::from(self.len.min(4))]
    }

    /// Appends a block; returns false when four are held already.
    pub fn push(&mut self, left: SeqNumber, right: SeqNumber) -> bool {
        if self.len >= 4 {
            return false;
        }
        self.blocks[usize::from(self.len)] = (left, right);
        self.len += 1;
        true
    }

    /// True when no block is present.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// The options xtcp understands. Unknown options are skipped by their length when parsing.
#[derive(Clone, Copy, PartialEq, Eq, Default, Debug)]
pub struct TcpOptions {
    /// Maximum segment size (kind 2), SYN only.
    pub mss: Option<u16>,
    /// Window scale shift count (kind 3), SYN only.
    pub window_scale: Option<u8>,
    /// SACK permitted (kind 4), SYN only.
    pub sack_permitted: bool,
    /// SACK blocks (kind 5).
    pub sack_blocks: SackBlocks,
    /// Timestamps (kind 8): (TSval, TSecr).
    pub timestamp: Option<(u32, u32)>,
    /// Parsing stopped at a malformed option (see [`TcpOptionIter`]): the options above are those before it, and
    /// what followed it was not read (nor does Linux read it). Set by [`TcpOptions::parse`] only; never emitted.
    pub malformed: bool,
}

/// A parsed TCP segment: header fields, options and a borrowed payload.
///
/// `ack_number` is kept as on the wire whatever the ACK flag says, so that any header round-trips; the state
/// machine looks at `flags.ack()` before trusting it.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct TcpRepr<'a> {
    /// Source port.
    pub src_port: u16,
    /// Destination port.
    pub dst_port: u16,
    /// Sequence number of the first octet (of the SYN, when SYN is set).
    pub seq_number: SeqNumber,
    /// Acknowledgment number: meaningful when `flags.ack()`.
    pub ack_number: SeqNumber,
    /// Control bits.
    pub flags: TcpFlags,
    /// The window field as sent, before scaling.
    pub window_len: u16,
    /// Urgent pointer, meaningful when URG is set.
    pub urgent_pointer: u16,
    /// The options understood.
    pub options: TcpOptions,
    /// The data.
    pub payload: &'a [u8],
}

impl TcpRepr<'_> {
    /// Sequence space the segment occupies: payload plus one for SYN and one for FIN (RFC 9293 §3.4, SEG.LEN).
    pub fn segment_len(&self) -> usize {
        self.payload.len() + usize::from(self.flags.syn()) + usize::from(self.flags.fin())
    }
}

/// The length of a TCP header without options.
pub const HEADER_LEN: usize = field::URGENT.end;

/// The largest option area: a data offset of 15 words less the fixed header.
pub const MAX_OPTIONS_LEN: usize = 40;

/// The bytes of a TCP-MD5 signature, after kind and length.
const MD5_SIGNATURE_LEN: usize = 16;

/// Linux's scan for signature options looks at an option only while this many bytes of the area are left from its
/// kind byte on: the length of an MD5 option (`TCPOLEN_MD5SIG`), in a kernel built without TCP-AO. One built with
/// it scans down to 5 bytes left, so that a malformed option further on drops the segment too.
pub const AUTH_SCAN_LEN: usize = 2 + MD5_SIGNATURE_LEN;

mod field {
    use core::ops::Range;

    pub const SRC_PORT: Range<usize> = 0..2;
    pub const DST_PORT: Range<usize> = 2..4;
    pub const SEQ_NUM: Range<usize> = 4..8;
    pub const ACK_NUM: Range<usize> = 8..12;
    /// Data offset in the high nibble; the low nibble is reserved (AccECN uses its last bit).
    pub const DATA_OFFSET: usize = 12;
    pub const FLAGS: usize = 13;
    pub const WINDOW: Range<usize> = 14..16;
    pub const CHECKSUM: Range<usize> = 16..18;
    pub const URGENT: Range<usize> = 18..20;

    pub const OPT_END: u8 = 0;
    pub const OPT_NOP: u8 = 1;
    pub const OPT_MSS: u8 = 2;
    pub const OPT_WS: u8 = 3;
    pub const OPT_SACKPERM: u8 = 4;
    pub const OPT_SACKRNG: u8 = 5;
    pub const OPT_TSTAMP: u8 = 8;
    /// TCP-MD5 signature (RFC 2385).
    pub const OPT_MD5: u8 = 19;
    /// TCP-AO, the authentication option (RFC 5925).
    pub const OPT_AO: u8 = 29;
}

/// A view over the bytes of a TCP segment: header, options and payload.
///
/// TCP has no length field: the segment is the whole buffer, which the IPv4 layer cuts at its total length.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TcpPacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> TcpPacket<T> {
    /// Wraps `buffer` without checking; accessors panic on a short buffer. Use it to emit.
    pub const fn new_unchecked(buffer: T) -> TcpPacket<T> {
        TcpPacket { buffer }
    }

    /// Wraps `buffer` after [`TcpPacket::check_len`], so that no accessor can panic.
    pub fn new_checked(buffer: T) -> Result<TcpPacket<T>> {
        let packet = Self::new_unchecked(buffer);
        packet.check_len()?;
        Ok(packet)
    }

    /// `Truncated` when the buffer is shorter than 20 bytes or than the data offset says; `Malformed` when the
    /// data offset is below 5 words.
    pub fn check_len(&self) -> Result<()> {
        let len = self.buffer.as_ref().len();
        if len < HEADER_LEN {
            return Err(Error::Truncated);
        }
        let header_len = self.header_len();
        if header_len < HEADER_LEN {
            return Err(Error::Malformed);
        }
        if header_len > len {
            return Err(Error::Truncated);
        }
        Ok(())
    }

    /// The wrapped buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// The source port.
    pub fn src_port(&self) -> u16 {
        super::get_u16(&self.buffer.as_ref()[field::SRC_PORT])
    }

    /// The destination port.
    pub fn dst_port(&self) -> u16 {
        super::get_u16(&self.buffer.as_ref()[field::DST_PORT])
    }

    /// The sequence number.
    pub fn seq_number(&self) -> SeqNumber {
        SeqNumber(super::get_u32(&self.buffer.as_ref()[field::SEQ_NUM]))
    }

    /// The acknowledgment number, whatever the ACK flag says.
    pub fn ack_number(&self) -> SeqNumber {
        SeqNumber(super::get_u32(&self.buffer.as_ref()[field::ACK_NUM]))
    }

    /// The data offset field, in 32-bit words.
    pub fn data_offset(&self) -> u8 {
        self.buffer.as_ref()[field::DATA_OFFSET] >> 4
    }

    /// The header length in bytes, options included: the data offset times four.
    pub fn header_len(&self) -> usize {
        usize::from(self.data_offset()) * 4
    }

    /// The control bits (byte 13).
    pub fn flags(&self) -> TcpFlags {
        TcpFlags(self.buffer.as_ref()[field::FLAGS])
    }

    /// The window field, before scaling.
    pub fn window_len(&self) -> u16 {
        super::get_u16(&self.buffer.as_ref()[field::WINDOW])
    }

    /// The checksum field.
    pub fn checksum(&self) -> u16 {
        super::get_u16(&self.buffer.as_ref()[field::CHECKSUM])
    }

    /// The urgent pointer.
    pub fn urgent_pointer(&self) -> u16 {
        super::get_u16(&self.buffer.as_ref()[field::URGENT])
    }

    /// The option bytes, between the fixed header and the data offset.
    pub fn options(&self) -> &[u8] {
        &self.buffer.as_ref()[HEADER_LEN..self.header_len()]
    }

    /// The length of the whole segment: header, options and payload.
    pub fn segment_len(&self) -> usize {
        self.buffer.as_ref().len()
    }

    /// True when the checksum over the pseudo-header and the whole segment verifies.
    pub fn verify_checksum(&self, src: Ipv4Addr, dst: Ipv4Addr) -> bool {
        segment_sum(self.buffer.as_ref(), src, dst) == 0xffff
    }
}

impl<'a, T: AsRef<[u8]> + ?Sized> TcpPacket<&'a T> {
    /// The data after the header, borrowed for as long as the buffer.
    pub fn payload(&self) -> &'a [u8] {
        &self.buffer.as_ref()[self.header_len()..]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> TcpPacket<T> {
    /// Sets the source port.
    pub fn set_src_port(&mut self, value: u16) {
        self.buffer.as_mut()[field::SRC_PORT].copy_from_slice(&u16::to_be_bytes(value));
    }

    /// Sets the destination port.
    pub fn set_dst_port(&mut self, value: u16) {
        self.buffer.as_mut()[field::DST_PORT].copy_from_slice(&u16::to_be_bytes(value));
    }

    /// Sets the sequence number.
    pub fn set_seq_number(&mut self, value: SeqNumber) {
        self.buffer.as_mut()[field::SEQ_NUM].copy_from_slice(&u32::to_be_bytes(value.0));
    }

    /// Sets the acknowledgment number.
    pub fn set_ack_number(&mut self, value: SeqNumber) {
        self.buffer.as_mut()[field::ACK_NUM].copy_from_slice(&u32::to_be_bytes(value.0));
    }

    /// Sets the header length in bytes (a multiple of four, 20 to 60); clears the reserved bits.
    pub fn set_header_len(&mut self, len_bytes: usize) {
        self.buffer.as_mut()[field::DATA_OFFSET] = ((len_bytes / 4) as u8) << 4;
    }

    /// Sets the control bits.
    pub fn set_flags(&mut self, flags: TcpFlags) {
        self.buffer.as_mut()[field::FLAGS] = flags.0;
    }

    /// Sets the window field.
    pub fn set_window_len(&mut self, value: u16) {
        self.buffer.as_mut()[field::WINDOW].copy_from_slice(&u16::to_be_bytes(value));
    }

    /// Sets the checksum field.
    pub fn set_checksum(&mut self, value: u16) {
        self.buffer.as_mut()[field::CHECKSUM].copy_from_slice(&u16::to_be_bytes(value));
    }

    /// Sets the urgent pointer.
    pub fn set_urgent_pointer(&mut self, value: u16) {
        self.buffer.as_mut()[field::URGENT].copy_from_slice(&u16::to_be_bytes(value));
    }

    /// The option bytes, to write options into after setting the header length.
    pub fn options_mut(&mut self) -> &mut [u8] {
        let end = self.header_len();
        &mut self.buffer.as_mut()[HEADER_LEN..end]
    }

    /// The data after the header.
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let start = self.header_len();
        &mut self.buffer.as_mut()[start..]
    }

    /// Computes the checksum over the pseudo-header and the whole buffer, and writes it.
    pub fn fill_checksum(&mut self, src: Ipv4Addr, dst: Ipv4Addr) {
        self.set_checksum(0);
        let sum = !segment_sum(self.buffer.as_ref(), src, dst);
        self.set_checksum(sum);
    }
}

/// The one's complement sum of the pseudo-header and `segment`.
fn segment_sum(segment: &[u8], src: Ipv4Addr, dst: Ipv4Addr) -> u16 {
    let len = u32::try_from(segment.len()).unwrap_or(u32::MAX);
    checksum::combine(&[checksum::pseudo_header(src, dst, TCP_PROTOCOL, len), checksum::data(segment)])
}

/// The IPv4 protocol number of TCP.
const TCP_PROTOCOL: u8 = 6;

/// One TCP option as found on the wire.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum TcpOption<'a> {
    /// End of option list (kind 0): the parser stops here.
    EndOfList,
    /// No-operation (kind 1), used for alignment.
    NoOperation,
    /// Maximum segment size (kind 2, length 4).
    MaxSegmentSize(u16),
    /// Window scale shift count (kind 3, length 3).
    WindowScale(u8),
    /// SACK permitted (kind 4, length 2).
    SackPermitted,
    /// SACK blocks (kind 5, length 2 + 8n, n from 1 to 4).
    SackRange(SackBlocks),
    /// Timestamps (kind 8, length 10).
    Timestamp {
        /// TSval: the sender's clock.
        tsval: u32,
        /// TSecr: the TSval echoed.
        tsecr: u32,
    },
    /// Any other kind, skipped by its length.
    Unknown {
        /// The kind byte.
        kind: u8,
        /// The bytes after kind and length.
        data: &'a [u8],
    },
    /// One of the kinds above with a length it cannot have (an MSS of 3 bytes, SACK with half a block): skipped
    /// by its length and ignored, as Linux ignores an option whose size is not its `TCPOLEN_*`.
    WrongLength {
        /// The kind byte.
        kind: u8,
        /// The bytes after kind and length.
        data: &'a [u8],
    },
}

impl fmt::Display for TcpOption<'_> {
    /// As tcpdump prints one option: `mss 1460`, `sackOK`, `TS val 1 ecr 0`, `nop`, `wscale 7`, `sack 1 {a:b}`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            TcpOption::EndOfList => f.write_str("eol"),
            TcpOption::NoOperation => f.write_str("nop"),
            TcpOption::MaxSegmentSize(mss) => write!(f, "mss {mss}"),
            TcpOption::WindowScale(shift) => write!(f, "wscale {shift}"),
            TcpOption::SackPermitted => f.write_str("sackOK"),
            TcpOption::SackRange(blocks) => {
                write!(f, "sack {}", blocks.as_slice().len())?;
                for (left, right) in blocks.as_slice() {
                    write!(f, " {{{left}:{right}}}")?;
                }
                Ok(())
            }
            TcpOption::Timestamp { tsval, tsecr } => write!(f, "TS val {tsval} ecr {tsecr}"),
            TcpOption::Unknown { kind, data } => {
                write!(f, "unknown-{kind}")?;
                if !data.is_empty() {
                    f.write_str(" 0x")?;
                    for b in data {
                        write!(f, "{b:02x}")?;
                    }
                }
                Ok(())
            }
            TcpOption::WrongLength { kind, data } => {
                let name = match kind {
                    field::OPT_MSS => "mss",
                    field::OPT_WS => "wscale",
                    field::OPT_SACKPERM => "sackOK",
                    field::OPT_SACKRNG => "sack",
                    field::OPT_TSTAMP => "TS",
                    _ => "unknown",
                };
                write!(f, "{name} [bad length {}]", data.len() + 2)
            }
        }
    }
}

/// An iterator over the options in an option area, stepping as Linux's `tcp_parse_options` does.
///
/// Stops after [`TcpOption::EndOfList`], at the end of the bytes, or at a malformed option, which it yields once as
/// `Err(Malformed)`: a kind with no length byte after it (the area's last byte), a length under 2, or a length
/// running past the area. A known kind with a length it cannot have is [`TcpOption::WrongLength`], skipped by
/// that length as Linux skips it.
#[derive(Clone, Debug)]
pub struct TcpOptionIter<'a> {
    bytes: &'a [u8],
    done: bool,
}

impl<'a> TcpOptionIter<'a> {
    /// Iterates over the options in `bytes` (a segment's [`TcpPacket::options`]).
    pub fn new(bytes: &'a [u8]) -> TcpOptionIter<'a> {
        TcpOptionIter { bytes, done: false }
    }

    fn parse_one(&mut self) -> Result<TcpOption<'a>> {
        let bytes = self.bytes;
        match bytes.first().copied() {
            // `next` does not call with an empty area.
            None => Err(Error::Truncated),
            Some(field::OPT_END) => {
                self.done = true;
                Ok(TcpOption::EndOfList)
            }
            Some(field::OPT_NOP) => {
                self.bytes = &bytes[1..];
                Ok(TcpOption::NoOperation)
            }
            Some(kind) => {
                let len = usize::from(*bytes.get(1).ok_or(Error::Malformed)?);
                if len < 2 || len > bytes.len() {
                    return Err(Error::Malformed);
                }
                let data = &bytes[2..len];
                self.bytes = &bytes[len..];
                let option = match (kind, data.len()) {
                    (field::OPT_MSS, 2) => TcpOption::MaxSegmentSize(u16::from_be_bytes([data[0], data[1]])),
                    (field::OPT_WS, 1) => TcpOption::WindowScale(data[0]),
                    (field::OPT_SACKPERM, 0) => TcpOption::SackPermitted,
                    (field::OPT_SACKRNG, 8 | 16 | 24 | 32) => {
                        let mut blocks = SackBlocks::default();
                        for block in data.chunks_exact(8) {
                            let left = u32::from_be_bytes([block[0], block[1], block[2], block[3]]);
                            let right = u32::from_be_bytes([block[4], block[5], block[6], block[7]]);
                            blocks.push(SeqNumber(left), SeqNumber(right));
                        }
                        TcpOption::SackRange(blocks)
                    }
                    (field::OPT_TSTAMP, 8) => TcpOption::Timestamp {
                        tsval: u32::from_be_bytes([data[0], data[1], data[2], data[3]]),
                        tsecr: u32::from_be_bytes([data[4], data[5], data[6], data[7]]),
                    },
                    (
                        field::OPT_MSS | field::OPT_WS | field::OPT_SACKPERM | field::OPT_SACKRNG | field::OPT_TSTAMP,
                        _,
                    ) => TcpOption::WrongLength { kind, data },
                    (kind, _) => TcpOption::Unknown { kind, data },
                };
                Ok(option)
            }
        }
    }
}

impl<'a> Iterator for TcpOptionIter<'a> {
    type Item = Result<TcpOption<'a>>;

    fn next(&mut self) -> Option<Result<TcpOption<'a>>> {
        if self.done || self.bytes.is_empty() {
            return None;
        }
        let item = self.parse_one();
        if item.is_err() {
            self.done = true;
        }
        Some(item)
    }
}

impl core::iter::FusedIterator for TcpOptionIter<'_> {}

/// Writes options one after another into a buffer sized by [`TcpOptions::buffer_len`].
struct OptionWriter<'b> {
    buf: &'b mut [u8],
    at: usize,
}

impl OptionWriter<'_> {
    fn put(&mut self, bytes: &[u8]) {
        self.buf[self.at..self.at + bytes.len()].copy_from_slice(bytes);
        self.at += bytes.len();
    }

    fn put_u32(&mut self, value: u32) {
        self.put(&value.to_be_bytes());
    }
}

impl TcpOptions {
    /// Reads the options in an option area as Linux's receive path does.
    ///
    /// Unknown kinds, and known kinds of a length they cannot have, are skipped; a later copy of an option
    /// replaces an earlier one; an MSS of 0 is ignored; parsing stops at End of Option List. A malformed option
    /// (see [`TcpOptionIter`]) stops parsing too: the options before it are kept and [`TcpOptions::malformed`] is
    /// set (`tcp_parse_options`: "don't parse partial options").
    ///
    /// Before it reads the options, Linux scans them for a signature (`tcp_do_parse_auth_options`, for every
    /// segment), looking at each option that begins with [`AUTH_SCAN_LEN`] bytes of the area or more left, and
    /// drops the segment when that scan fails. So do we:
    /// - `Malformed`: a malformed option there, a TCP-MD5 option (kind 19) not 18 bytes long, a TCP-AO option
    ///   (kind 29) of 4 bytes or less, or a second MD5 or AO option.
    /// - `Unsupported`: a TCP-MD5 signature (RFC 2385). xtcp holds no key, and Linux drops a signed segment it
    ///   holds no key for (`TCPMD5Unexpected`). (A kernel built without TCP-AO, as ours is, ignores an AO option.)
    pub fn parse(bytes: &[u8]) -> Result<TcpOptions> {
        // The area of nearly every segment of an established connection: NOP, NOP, timestamps, the aligned layout
        // of RFC 7323 appendix A that Linux (and we) send. Read straight off, as Linux's `tcp_fast_parse_options`
        // does; the loop below reads it the same way, only slower.
        if let [field::OPT_NOP, field::OPT_NOP, field::OPT_TSTAMP, 10, v0, v1, v2, v3, e0, e1, e2, e3] = *bytes {
            let timestamp = (u32::from_be_bytes([v0, v1, v2, v3]), u32::from_be_bytes([e0, e1, e2, e3]));
            return Ok(TcpOptions { timestamp: Some(timestamp), ..TcpOptions::default() });
        }
        TcpOptions::parse_general(bytes, true)
    }

    /// The options as Linux reads them for a segment that meets a TIME_WAIT socket, which it hands to
    /// `tcp_timewait_state_process` before the signature scan: as [`TcpOptions::parse`] without the scan, so
    /// never an error — a malformed option only stops the parse, and a signature option is skipped.
    pub fn parse_unscanned(bytes: &[u8]) -> TcpOptions {
        TcpOptions::parse_general(bytes, false).unwrap_or_default()
    }

    /// [`TcpOptions::parse`] for any area, option by option; `scan`: with Linux's signature scan.
    fn parse_general(bytes: &[u8], scan: bool) -> Result<TcpOptions> {
        let mut options = TcpOptions::default();
        let mut signed = false;
        let mut signatures = 0;
        let mut iter = TcpOptionIter::new(bytes);
        loop {
            let scanned = scan && iter.bytes.len() >= AUTH_SCAN_LEN;
            match iter.next() {
                None => break,
                Some(Err(e)) if scanned => return Err(e),
                Some(Err(_)) => options.malformed = true,
                Some(Ok(option)) => match option {
                    TcpOption::MaxSegmentSize(mss) => {
                        if mss != 0 {
                            options.mss = Some(mss);
                        }
                    }
                    TcpOption::WindowScale(shift) => options.window_scale = Some(shift),
                    TcpOption::SackPermitted => options.sack_permitted = true,
                    TcpOption::SackRange(blocks) => options.sack_blocks = blocks,
                    TcpOption::Timestamp { tsval, tsecr } => options.timestamp = Some((tsval, tsecr)),
                    TcpOption::Unknown { kind: kind @ (field::OPT_MD5 | field::OPT_AO), data } if scanned => {
                        signatures += 1;
                        let well_formed =
                            if kind == field::OPT_MD5 { data.len() == MD5_SIGNATURE_LEN } else { data.len() > 2 };
                        if !well_formed || signatures > 1 {
                            return Err(Error::Malformed);
                        }
                        signed |= kind == field::OPT_MD5;
                    }
                    TcpOption::EndOfList
                    | TcpOption::NoOperation
                    | TcpOption::Unknown { .. }
                    | TcpOption::WrongLength { .. } => {}
                },
            }
        }
        if signed {
            return Err(Error::Unsupported);
        }
        Ok(options)
    }

    /// Bytes taken by everything but the SACK blocks, in Linux's layout.
    fn fixed_len(&self) -> usize {
        let mut len = 0;
        if self.mss.is_some() {
            len += 4;
        }
        if self.timestamp.is_some() {
            len += 12; // SACK_PERM + TS, or NOP NOP TS
        } else if self.sack_permitted {
            len += 4; // NOP NOP SACK_PERM
        }
        if self.window_scale.is_some() {
            len += 4; // NOP WS
        }
        len
    }

    /// How many SACK blocks [`TcpOptions::emit`] writes: as many as are present and fit in 40 bytes (at most 3
    /// beside timestamps, 4 alone).
    pub fn sack_blocks_emitted(&self) -> usize {
        let room = MAX_OPTIONS_LEN - self.fixed_len();
        let fit = if room >= 12 { (room - 4) / 8 } else { 0 };
        self.sack_blocks.as_slice().len().min(fit)
    }

    /// These options as [`TcpOptions::emit`] writes them: SACK blocks that do not fit dropped, and not
    /// [`TcpOptions::malformed`].
    pub fn fit(&self) -> TcpOptions {
        let n = self.sack_blocks_emitted();
        let mut sack_blocks = SackBlocks::default();
        for &(left, right) in &self.sack_blocks.as_slice()[..n] {
            sack_blocks.push(left, right);
        }
        TcpOptions { sack_blocks, malformed: false, ..*self }
    }

    /// The length of the emitted options, a multiple of four, at most [`MAX_OPTIONS_LEN`].
    pub fn buffer_len(&self) -> usize {
        let n = self.sack_blocks_emitted();
        self.fixed_len() + if n > 0 { 4 + 8 * n } else { 0 }
    }

    /// Writes the options into `buf` (at least [`TcpOptions::buffer_len`] bytes) in the order and alignment Linux
    /// uses (`tcp_options_write`), so Linux's segments round-trip byte for byte: MSS; SACK_PERM+TS, NOP NOP TS or
    /// NOP NOP SACK_PERM; NOP WS; NOP NOP SACK. Returns the number of bytes written.
    pub fn emit(&self, buf: &mut [u8]) -> usize {
        let mut w = OptionWriter { buf, at: 0 };
        if let Some(mss) = self.mss {
            w.put(&[field::OPT_MSS, 4]);
            w.put(&mss.to_be_bytes());
        }
        match (self.sack_permitted, self.timestamp) {
            (true, Some((tsval, tsecr))) => {
                w.put(&[field::OPT_SACKPERM, 2, field::OPT_TSTAMP, 10]);
                w.put_u32(tsval);
                w.put_u32(tsecr);
            }
            (false, Some((tsval, tsecr))) => {
                w.put(&[field::OPT_NOP, field::OPT_NOP, field::OPT_TSTAMP, 10]);
                w.put_u32(tsval);
                w.put_u32(tsecr);
            }
            (true, None) => w.put(&[field::OPT_NOP, field::OPT_NOP, field::OPT_SACKPERM, 2]),
            (false, None) => {}
        }
        if let Some(shift) = self.window_scale {
            w.put(&[field::OPT_NOP, field::OPT_WS, 3, shift]);
        }
        let n = self.sack_blocks_emitted();
        if n > 0 {
            w.put(&[field::OPT_NOP, field::OPT_NOP, field::OPT_SACKRNG, (2 + 8 * n) as u8]);
            for &(left, right) in &self.sack_blocks.as_slice()[..n] {
                w.put_u32(left.0);
                w.put_u32(right.0);
            }
        }
        w.at
    }
}

impl<'a> TcpRepr<'a> {
    /// Reads a checked segment sent from `src` to `dst`. With `verify_checksum`, a checksum that does not
    /// verify is `Checksum` (checked before anything else). A zero port is `Malformed`; an option area is read, or
    /// refused, as [`TcpOptions::parse`] says.
    pub fn parse<T: AsRef<[u8]> + ?Sized>(
        packet: &TcpPacket<&'a T>,
        src: Ipv4Addr,
        dst: Ipv4Addr,
        verify_checksum: bool,
    ) -> Result<TcpRepr<'a>> {
        TcpRepr::read(packet, src, dst, verify_checksum, TcpOptions::parse)
    }

    /// As [`TcpRepr::parse`], with the options read by [`TcpOptions::parse_unscanned`]: for a segment that
    /// [`TcpRepr::parse`] refused over its options and that turns out to meet a TIME_WAIT connection.
    pub fn parse_unscanned<T: AsRef<[u8]> + ?Sized>(
        packet: &TcpPacket<&'a T>,
        src: Ipv4Addr,
        dst: Ipv4Addr,
        verify_checksum: bool,
    ) -> Result<TcpRepr<'a>> {
        TcpRepr::read(packet, src, dst, verify_checksum, |area| Ok(TcpOptions::parse_unscanned(area)))
    }

    /// Both parses: the checks, then the option area read by `options`.
    fn read<T: AsRef<[u8]> + ?Sized>(
        packet: &TcpPacket<&'a T>,
        src: Ipv4Addr,
        dst: Ipv4Addr,
        verify_checksum: bool,
        options: impl FnOnce(&[u8]) -> Result<TcpOptions>,
    ) -> Result<TcpRepr<'a>> {
        packet.check_len()?;
        if verify_checksum && !packet.verify_checksum(src, dst) {
            return Err(Error::Checksum);
        }
        if packet.src_port() == 0 || packet.dst_port() == 0 {
            return Err(Error::Malformed);
        }
        let options = options(packet.options())?;
        Ok(TcpRepr {
            src_port: packet.src_port(),
            dst_port: packet.dst_port(),
            seq_number: packet.seq_number(),
            ack_number: packet.ack_number(),
            flags: packet.flags(),
            window_len: packet.window_len(),
            urgent_pointer: packet.urgent_pointer(),
            options,
            payload: packet.payload(),
        })
    }

    /// The length of the emitted header, options included: a multiple of four, at most 60.
    pub fn header_len(&self) -> usize {
        HEADER_LEN + self.options.buffer_len()
    }

    /// The length of the emitted segment: header, options and payload.
    pub fn buffer_len(&self) -> usize {
        self.header_len() + self.payload.len()
    }

    /// Writes the segment into `packet`, which must hold at least [`TcpRepr::buffer_len`] bytes: header,
    /// options (see [`TcpOptions::emit`]), payload, and the checksum over the first `buffer_len` bytes with the
    /// pseudo-header of `src` and `dst`.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, packet: &mut TcpPacket<T>, src: Ipv4Addr, dst: Ipv4Addr) {
        let header_len = self.header_len();
        packet.set_src_port(self.src_port);
        packet.set_dst_port(self.dst_port);
        packet.set_seq_number(self.seq_number);
        packet.set_ack_number(self.ack_number);
        packet.set_header_len(header_len);
        packet.set_flags(self.flags);
        packet.set_window_len(self.window_len);
        packet.set_checksum(0);
        packet.set_urgent_pointer(self.urgent_pointer);
        let options = packet.options_mut();
        let written = self.options.emit(options);
        // Never needed with Linux's aligned layout; End of Option List (zeros) if it ever is.
        options[written..].fill(field::OPT_END);
        packet.payload_mut()[..self.payload.len()].copy_from_slice(self.payload);
        let sum = !segment_sum(&packet.buffer.as_ref()[..self.buffer_len()], src, dst);
        packet.set_checksum(sum);
    }
}

impl fmt::Display for TcpRepr<'_> {
    /// Like the part of a tcpdump line after the addresses (with `-S`, absolute sequence numbers):
    /// `Flags [S], seq 1, win 65535, options [mss 1460,sackOK,TS val 1 ecr 0,nop,wscale 7], length 0`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Flags [{}], seq {}", self.flags, self.seq_number)?;
        if !self.payload.is_empty() {
            write!(f, ":{}", self.seq_number + self.payload.len())?;
        }
        if self.flags.ack() {
            write!(f, ", ack {}", self.ack_number)?;
        }
        write!(f, ", win {}", self.window_len)?;
        if self.flags.contains(TcpFlags::URG) {
            write!(f, ", urg {}", self.urgent_pointer)?;
        }
        let mut bytes = [0u8; MAX_OPTIONS_LEN];
        let len = self.options.emit(&mut bytes);
        if len > 0 || self.options.malformed {
            f.write_str(", options [")?;
            for (i, option) in TcpOptionIter::new(&bytes[..len]).enumerate() {
                if i > 0 {
                    f.write_str(",")?;
                }
                match option {
                    Ok(option) => write!(f, "{option}")?,
                    Err(_) => f.write_str("bad opts")?,
                }
            }
            if self.options.malformed {
                // What the parser stopped at, as tcpdump marks it.
                f.write_str(if len > 0 { ",bad opts" } else { "bad opts" })?;
            }
            f.write_str("]")?;
        }
        write!(f, ", length {}", self.payload.len())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::wire::checksum::tests::{reference_sum, reference_tcp_sum};
    use crate::wire::ethernet::{EtherType, EthernetFrame, EthernetRepr};
    use crate::wire::ipv4::tests::SYN_WITH_IP_OPTIONS;
    use crate::wire::ipv4::{IpProtocol, Ipv4Packet, Ipv4Repr};
    use proptest::prelude::*;

    // Real frames captured from Linux 6.18 (two network namespaces joined through veth pairs and a user-space
    // bridge that dropped one segment to provoke SACK). Client 10.0.0.1 (52:54:00:12:34:56) port 41172, server
    // 10.0.0.2 (52:54:00:ab:cd:ef) port 80; checksums are the kernel's (offloads were off).

    /// SYN: mss 1460, sackOK, TS val 3843477454 ecr 0, nop, wscale 7.
    #[rustfmt::skip]
    pub(crate) const SYN: [u8; 74] = [
        // Ethernet: dst 52:54:00:ab:cd:ef, src 52:54:00:12:34:56, type IPv4
        0x52, 0x54, 0x00, 0xab, 0xcd, 0xef, 0x52, 0x54, 0x00, 0x12, 0x34, 0x56, 0x08, 0x00,
        // IPv4: ihl 5, tos 0, total 60, id 0x39a7, DF, ttl 64, TCP, checksum 0xed12
        0x45, 0x00, 0x00, 0x3c, 0x39, 0xa7, 0x40, 0x00, 0x40, 0x06, 0xed, 0x12,
        // src 10.0.0.1, dst 10.0.0.2
        0x0a, 0x00, 0x00, 0x01, 0x0a, 0x00, 0x00, 0x02,
        // TCP: 41172 > 80, seq 1309157865, ack 0
        0xa0, 0xd4, 0x00, 0x50, 0x4e, 0x08, 0x29, 0xe9, 0x00, 0x00, 0x00, 0x00,
        // doff 10, flags S, win 64240, checksum 0x6b11, urg 0
        0xa0, 0x02, 0xfa, 0xf0, 0x6b, 0x11, 0x00, 0x00,
        // mss 1460; sackOK; TS val 0xe516cfce ecr 0; nop; wscale 7
        0x02, 0x04, 0x05, 0xb4, 0x04, 0x02, 0x08, 0x0a, 0xe5, 0x16, 0xcf, 0xce,
        0x00, 0x00, 0x00, 0x00, 0x01, 0x03, 0x03, 0x07,
    ];

    /// SYN-ACK: IPv4 id 0, mss 1460, sackOK, TS val 2053919658 ecr 3843477454, nop, wscale 7.
    #[rustfmt::skip]
    pub(crate) const SYN_ACK: [u8; 74] = [
        // Ethernet: dst 52:54:00:12:34:56, src 52:54:00:ab:cd:ef, type IPv4
        0x52, 0x54, 0x00, 0x12, 0x34, 0x56, 0x52, 0x54, 0x00, 0xab, 0xcd, 0xef, 0x08, 0x00,
        // IPv4: ihl 5, tos 0, total 60, id 0, DF, ttl 64, TCP, checksum 0x26ba
        0x45, 0x00, 0x00, 0x3c, 0x00, 0x00, 0x40, 0x00, 0x40, 0x06, 0x26, 0xba,
        // src 10.0.0.2, dst 10.0.0.1
        0x0a, 0x00, 0x00, 0x02, 0x0a, 0x00, 0x00, 0x01,
        // TCP: 80 > 41172, seq 733206911, ack 1309157866
        0x00, 0x50, 0xa0, 0xd4, 0x2b, 0xb3, 0xd9, 0x7f, 0x4e, 0x08, 0x29, 0xea,
        // doff 10, flags S., win 65160, checksum 0x941e, urg 0
        0xa0, 0x12, 0xfe, 0x88, 0x94, 0x1e, 0x00, 0x00,
        // mss 1460; sackOK; TS val 0x7a6c53aa ecr 0xe516cfce; nop; wscale 7
        0x02, 0x04, 0x05, 0xb4, 0x04, 0x02, 0x08, 0x0a, 0x7a, 0x6c, 0x53, 0xaa,
        0xe5, 0x16, 0xcf, 0xce, 0x01, 0x03, 0x03, 0x07,
    ];

    /// Data: PSH ACK carrying `GET / HTTP/1.0\r\n\r\n`, options nop, nop, TS.
    #[rustfmt::skip]
    pub(crate) const DATA: [u8; 84] = [
        // Ethernet: dst 52:54:00:ab:cd:ef, src 52:54:00:12:34:56, type IPv4
        0x52, 0x54, 0x00, 0xab, 0xcd, 0xef, 0x52, 0x54, 0x00, 0x12, 0x34, 0x56, 0x08, 0x00,
        // IPv4: ihl 5, tos 0, total 70, id 0x39a9, DF, ttl 64, TCP, checksum 0xed06
        0x45, 0x00, 0x00, 0x46, 0x39, 0xa9, 0x40, 0x00, 0x40, 0x06, 0xed, 0x06,
        // src 10.0.0.1, dst 10.0.0.2
        0x0a, 0x00, 0x00, 0x01, 0x0a, 0x00, 0x00, 0x02,
        // TCP: 41172 > 80, seq 1309157866, ack 733206912
        0xa0, 0xd4, 0x00, 0x50, 0x4e, 0x08, 0x29, 0xea, 0x2b, 0xb3, 0xd9, 0x80,
        // doff 8, flags P., win 502, checksum 0xe0bf, urg 0
        0x80, 0x18, 0x01, 0xf6, 0xe0, 0xbf, 0x00, 0x00,
        // nop; nop; TS val 0xe516cfd2 ecr 0x7a6c53aa
        0x01, 0x01, 0x08, 0x0a, 0xe5, 0x16, 0xcf, 0xd2, 0x7a, 0x6c, 0x53, 0xaa,
        // "GET / HTTP/1.0\r\n\r\n"
        0x47, 0x45, 0x54, 0x20, 0x2f, 0x20, 0x48, 0x54, 0x54, 0x50, 0x2f, 0x31,
        0x2e, 0x30, 0x0d, 0x0a, 0x0d, 0x0a,
    ];

    /// A duplicate ACK with one SACK block, after the bridge dropped the segment at 733209808.
    #[rustfmt::skip]
    pub(crate) const SACK_ACK: [u8; 78] = [
        // Ethernet: dst 52:54:00:ab:cd:ef, src 52:54:00:12:34:56, type IPv4
        0x52, 0x54, 0x00, 0xab, 0xcd, 0xef, 0x52, 0x54, 0x00, 0x12, 0x34, 0x56, 0x08, 0x00,
        // IPv4: ihl 5, tos 0, total 64, id 0x39ac, DF, ttl 64, TCP, checksum 0xed09
        0x45, 0x00, 0x00, 0x40, 0x39, 0xac, 0x40, 0x00, 0x40, 0x06, 0xed, 0x09,
        // src 10.0.0.1, dst 10.0.0.2
        0x0a, 0x00, 0x00, 0x01, 0x0a, 0x00, 0x00, 0x02,
        // TCP: 41172 > 80, seq 1309157884, ack 733209808
        0xa0, 0xd4, 0x00, 0x50, 0x4e, 0x08, 0x29, 0xfc, 0x2b, 0xb3, 0xe4, 0xd0,
        // doff 11, flags ., win 570, checksum 0x4bbc, urg 0
        0xb0, 0x10, 0x02, 0x3a, 0x4b, 0xbc, 0x00, 0x00,
        // nop; nop; TS val 0xe516cfd2 ecr 0x7a6c53aa
        0x01, 0x01, 0x08, 0x0a, 0xe5, 0x16, 0xcf, 0xd2, 0x7a, 0x6c, 0x53, 0xaa,
        // nop; nop; sack 1 {733211256:733212704}
        0x01, 0x01, 0x05, 0x0a, 0x2b, 0xb3, 0xea, 0x78, 0x2b, 0xb3, 0xf0, 0x20,
    ];

    /// FIN ACK from the server, options nop, nop, TS.
    #[rustfmt::skip]
    pub(crate) const FIN_ACK: [u8; 66] = [
        // Ethernet: dst 52:54:00:12:34:56, src 52:54:00:ab:cd:ef, type IPv4
        0x52, 0x54, 0x00, 0x12, 0x34, 0x56, 0x52, 0x54, 0x00, 0xab, 0xcd, 0xef, 0x08, 0x00,
        // IPv4: ihl 5, tos 0, total 52, id 0xc487, DF, ttl 64, TCP, checksum 0x623a
        0x45, 0x00, 0x00, 0x34, 0xc4, 0x87, 0x40, 0x00, 0x40, 0x06, 0x62, 0x3a,
        // src 10.0.0.2, dst 10.0.0.1
        0x0a, 0x00, 0x00, 0x02, 0x0a, 0x00, 0x00, 0x01,
        // TCP: 80 > 41172, seq 733226931, ack 1309157884
        0x00, 0x50, 0xa0, 0xd4, 0x2b, 0xb4, 0x27, 0xb3, 0x4e, 0x08, 0x29, 0xfc,
        // doff 8, flags F., win 509, checksum 0x6f38, urg 0
        0x80, 0x11, 0x01, 0xfd, 0x6f, 0x38, 0x00, 0x00,
        // nop; nop; TS val 0x7a6c559e ecr 0xe516cfd2
        0x01, 0x01, 0x08, 0x0a, 0x7a, 0x6c, 0x55, 0x9e, 0xe5, 0x16, 0xcf, 0xd2,
    ];

    const ALL: [&[u8]; 6] = [&SYN, &SYN_ACK, &DATA, &SACK_ACK, &FIN_ACK, &SYN_WITH_IP_OPTIONS];
    const CLIENT: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
    const SERVER: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);

    /// Ethernet, IPv4 and TCP, as the engine will parse a received frame.
    pub(crate) fn parse_frame(bytes: &[u8]) -> Result<(EthernetRepr, Ipv4Repr, TcpRepr<'_>)> {
        let frame = EthernetFrame::new_checked(bytes)?;
        let eth = EthernetRepr::parse(&frame)?;
        if eth.ethertype != EtherType::Ipv4 {
            return Err(Error::Unsupported);
        }
        let packet = Ipv4Packet::new_checked(frame.payload())?;
        let ip = Ipv4Repr::parse(&packet)?;
        if ip.protocol != IpProtocol::Tcp {
            return Err(Error::Unsupported);
        }
        let segment = TcpPacket::new_checked(packet.payload())?;
        let tcp = TcpRepr::parse(&segment, ip.src_addr, ip.dst_addr, true)?;
        Ok((eth, ip, tcp))
    }

    /// The frame built back from its three reprs.
    fn construct_frame(eth: &EthernetRepr, ip: &Ipv4Repr, tcp: &TcpRepr<'_>) -> Vec<u8> {
        assert_eq!(ip.payload_len, tcp.buffer_len());
        let mut out = vec![0xa5u8; eth.buffer_len() + ip.buffer_len()];
        let mut frame = EthernetFrame::new_unchecked(&mut out[..]);
        eth.emit(&mut frame);
        let mut packet = Ipv4Packet::new_unchecked(frame.payload_mut());
        ip.emit(&mut packet);
        tcp.emit(&mut TcpPacket::new_unchecked(packet.payload_mut()), ip.src_addr, ip.dst_addr);
        out
    }

    fn syn_repr() -> TcpRepr<'static> {
        TcpRepr {
            src_port: 41172,
            dst_port: 80,
            seq_number: SeqNumber(1309157865),
            ack_number: SeqNumber(0),
            flags: TcpFlags::SYN,
            window_len: 64240,
            urgent_pointer: 0,
            options: TcpOptions {
                mss: Some(1460),
                window_scale: Some(7),
                sack_permitted: true,
                sack_blocks: SackBlocks::default(),
                timestamp: Some((0xe516cfce, 0)),
                malformed: false,
            },
            payload: &[],
        }
    }

    #[test]
    fn checksums_of_vectors_agree_with_reference() {
        for frame in ALL {
            let ip = &frame[14..];
            let ihl = usize::from(ip[0] & 0x0f) * 4;
            let total = usize::from(u16::from_be_bytes([ip[2], ip[3]]));
            assert_eq!(reference_sum(&ip[..ihl]), 0xffff);
            let src = Ipv4Addr::new(ip[12], ip[13], ip[14], ip[15]);
            let dst = Ipv4Addr::new(ip[16], ip[17], ip[18], ip[19]);
            let segment = &ip[ihl..total];
            assert_eq!(reference_tcp_sum(src, dst, segment), 0xffff);
            assert!(TcpPacket::new_checked(segment).unwrap().verify_checksum(src, dst));
            // Recomputed from zero by both implementations.
            let mut zeroed = segment.to_vec();
            zeroed[16..18].fill(0);
            let fast = {
                let mut p = TcpPacket::new_unchecked(&mut zeroed[..]);
                p.fill_checksum(src, dst);
                p.checksum()
            };
            zeroed[16..18].fill(0);
            assert_eq!(!reference_tcp_sum(src, dst, &zeroed), fast);
            assert_eq!(fast, u16::from_be_bytes([segment[16], segment[17]]));
        }
    }

    #[test]
    fn deconstruct_syn() {
        let segment = TcpPacket::new_checked(&SYN[34..]).unwrap();
        assert_eq!(segment.src_port(), 41172);
        assert_eq!(segment.dst_port(), 80);
        assert_eq!(segment.seq_number(), SeqNumber(1309157865));
        assert_eq!(segment.ack_number(), SeqNumber(0));
        assert_eq!(segment.data_offset(), 10);
        assert_eq!(segment.header_len(), 40);
        assert_eq!(segment.flags(), TcpFlags::SYN);
        assert_eq!(segment.window_len(), 64240);
        assert_eq!(segment.checksum(), 0x6b11);
        assert_eq!(segment.urgent_pointer(), 0);
        assert_eq!(segment.options(), &SYN[54..]);
        assert!(segment.payload().is_empty());
        assert!(segment.verify_checksum(CLIENT, SERVER));
        assert!(!segment.verify_checksum(SERVER, Ipv4Addr::new(10, 0, 0, 3)));
        let options: Vec<TcpOption<'_>> = TcpOptionIter::new(segment.options()).map(|o| o.unwrap()).collect();
        assert_eq!(
            options,
            [
                TcpOption::MaxSegmentSize(1460),
                TcpOption::SackPermitted,
                TcpOption::Timestamp { tsval: 0xe516cfce, tsecr: 0 },
                TcpOption::NoOperation,
                TcpOption::WindowScale(7),
            ]
        );

        let (eth, ip, tcp) = parse_frame(&SYN).unwrap();
        assert_eq!(eth.ethertype, EtherType::Ipv4);
        assert_eq!(
            (ip.src_addr, ip.dst_addr, ip.hop_limit, ip.dont_frag, ip.payload_len),
            (CLIENT, SERVER, 64, true, 40)
        );
        assert_eq!(tcp, syn_repr());
        assert_eq!(tcp.segment_len(), 1);
        assert_eq!(
            tcp.to_string(),
            "Flags [S], seq 1309157865, win 64240, options [mss 1460,sackOK,TS val 3843477454 ecr 0,nop,wscale 7], \
             length 0"
        );
    }

    #[test]
    fn construct_syn_from_scratch() {
        let repr = syn_repr();
        assert_eq!(repr.header_len(), 40);
        assert_eq!(repr.buffer_len(), 40);
        let mut bytes = [0xa5u8; 40];
        repr.emit(&mut TcpPacket::new_unchecked(&mut bytes[..]), CLIENT, SERVER);
        assert_eq!(bytes, SYN[34..]);
    }

    #[test]
    fn deconstruct_syn_ack() {
        let (_, ip, tcp) = parse_frame(&SYN_ACK).unwrap();
        assert_eq!((ip.src_addr, ip.ident), (SERVER, 0));
        assert_eq!(tcp.flags, TcpFlags::SYN | TcpFlags::ACK);
        assert_eq!(tcp.seq_number, SeqNumber(733206911));
        assert_eq!(tcp.ack_number, SeqNumber(1309157866));
        assert_eq!(tcp.window_len, 65160);
        assert_eq!(tcp.options.timestamp, Some((0x7a6c53aa, 0xe516cfce)));
        assert_eq!(
            tcp.to_string(),
            "Flags [S.], seq 733206911, ack 1309157866, win 65160, options [mss 1460,sackOK,TS val 2053919658 ecr \
             3843477454,nop,wscale 7], length 0"
        );
    }

    #[test]
    fn deconstruct_data() {
        let segment = TcpPacket::new_checked(&DATA[34..]).unwrap();
        assert_eq!(segment.header_len(), 32);
        assert_eq!(segment.payload(), b"GET / HTTP/1.0\r\n\r\n");
        let (_, _, tcp) = parse_frame(&DATA).unwrap();
        assert_eq!(tcp.flags, TcpFlags::PSH | TcpFlags::ACK);
        assert_eq!(tcp.options, TcpOptions { timestamp: Some((0xe516cfd2, 0x7a6c53aa)), ..TcpOptions::default() });
        assert_eq!(tcp.payload, b"GET / HTTP/1.0\r\n\r\n");
        assert_eq!(tcp.segment_len(), 18);
        assert_eq!(
            tcp.to_string(),
            "Flags [P.], seq 1309157866:1309157884, ack 733206912, win 502, options [nop,nop,TS val 3843477458 ecr \
             2053919658], length 18"
        );
    }

    #[test]
    fn deconstruct_sack() {
        let (_, _, tcp) = parse_frame(&SACK_ACK).unwrap();
        assert_eq!(tcp.flags, TcpFlags::ACK);
        assert_eq!(tcp.ack_number, SeqNumber(733209808));
        assert_eq!(tcp.options.sack_blocks.as_slice(), &[(SeqNumber(733211256), SeqNumber(733212704))]);
        assert_eq!(tcp.options.timestamp, Some((0xe516cfd2, 0x7a6c53aa)));
        assert!(!tcp.options.sack_permitted);
        assert_eq!(
            tcp.to_string(),
            "Flags [.], seq 1309157884, ack 733209808, win 570, options [nop,nop,TS val 3843477458 ecr 2053919658,\
             nop,nop,sack 1 {733211256:733212704}], length 0"
        );
    }

    #[test]
    fn deconstruct_fin() {
        let (_, ip, tcp) = parse_frame(&FIN_ACK).unwrap();
        assert_eq!(ip.src_addr, SERVER);
        assert_eq!(tcp.flags, TcpFlags::FIN | TcpFlags::ACK);
        assert_eq!(tcp.segment_len(), 1);
    }

    #[test]
    fn deconstruct_syn_behind_ip_options() {
        let (_, ip, tcp) = parse_frame(&SYN_WITH_IP_OPTIONS).unwrap();
        assert_eq!(ip.payload_len, 40);
        assert_eq!(tcp.src_port, 59990);
        assert_eq!(tcp.options.window_scale, Some(10));
        assert_eq!(tcp.options.mss, Some(1460));
    }

    #[test]
    fn construct_frames_byte_for_byte() {
        for frame in [&SYN[..], &SYN_ACK[..], &DATA[..], &SACK_ACK[..], &FIN_ACK[..]] {
            let (eth, ip, tcp) = parse_frame(frame).unwrap();
            assert_eq!(construct_frame(&eth, &ip, &tcp), frame);
        }
    }

    #[test]
    fn reject_truncated_frames() {
        for frame in ALL {
            for len in 0..frame.len() {
                assert!(parse_frame(&frame[..len]).is_err(), "frame of {} cut at {len}", frame.len());
            }
        }
    }

    #[test]
    fn reject_truncated_segments() {
        for frame in [&SYN[..], &SYN_ACK[..], &DATA[..], &SACK_ACK[..], &FIN_ACK[..]] {
            let (src, dst) = (
                Ipv4Addr::new(frame[26], frame[27], frame[28], frame[29]),
                Ipv4Addr::new(frame[30], frame[31], frame[32], frame[33]),
            );
            let segment = &frame[34..];
            let header_len = usize::from(segment[12] >> 4) * 4;
            for len in 0..segment.len() {
                let result = TcpPacket::new_checked(&segment[..len]).and_then(|p| TcpRepr::parse(&p, src, dst, true));
                let expected = if len < header_len { Error::Truncated } else { Error::Checksum };
                assert_eq!(result.unwrap_err(), expected, "cut at {len}");
            }
        }
    }

    #[test]
    fn reject_bad_data_offset() {
        let mut segment = SYN[34..].to_vec();
        segment[12] = 0x40;
        assert_eq!(TcpPacket::new_checked(&segment[..]).unwrap_err(), Error::Malformed);
        segment[12] = 0x00;
        assert_eq!(TcpPacket::new_checked(&segment[..]).unwrap_err(), Error::Malformed);
        segment[12] = 0xb0; // 44 bytes of header in 40
        assert_eq!(TcpPacket::new_checked(&segment[..]).unwrap_err(), Error::Truncated);
        segment[12] = 0x50; // the options become payload
        let packet = TcpPacket::new_checked(&segment[..]).unwrap();
        assert_eq!(packet.payload().len(), 20);
    }

    #[test]
    fn reject_bad_checksum_only_when_asked() {
        let mut segment = DATA[34..].to_vec();
        segment[40] ^= 0x20; // a payload byte
        let packet = TcpPacket::new_checked(&segment[..]).unwrap();
        assert_eq!(TcpRepr::parse(&packet, CLIENT, SERVER, true).unwrap_err(), Error::Checksum);
        assert_eq!(TcpRepr::parse(&packet, CLIENT, SERVER, false).unwrap().payload.len(), 18);
    }

    #[test]
    fn reject_zero_ports() {
        let mut segment = SYN[34..].to_vec();
        segment[0..2].fill(0);
        let packet = TcpPacket::new_checked(&segment[..]).unwrap();
        assert_eq!(TcpRepr::parse(&packet, CLIENT, SERVER, false).unwrap_err(), Error::Malformed);
    }

    fn options(bytes: &[u8]) -> Result<TcpOptions> {
        TcpOptions::parse(bytes)
    }

    #[test]
    fn option_parser_accepts() {
        // EOL stops: what follows is not read, even if it would be malformed.
        assert_eq!(options(&[2, 4, 5, 0xb4, 0, 0xff, 1]).unwrap().mss, Some(1460));
        assert_eq!(TcpOptionIter::new(&[0, 2, 4, 5]).count(), 1);
        // Unknown kinds are skipped by their length: kind 30 of 18 bytes, then wscale.
        let mut bytes = vec![30, 18];
        bytes.extend_from_slice(&[0xaa; 16]);
        bytes.extend_from_slice(&[3, 3, 14]);
        let parsed = options(&bytes).unwrap();
        assert_eq!(parsed, TcpOptions { window_scale: Some(14), ..TcpOptions::default() });
        assert_eq!(TcpOptionIter::new(&bytes).next(), Some(Ok(TcpOption::Unknown { kind: 30, data: &[0xaa; 16] })));
        // An empty unknown option (length 2).
        assert!(options(&[30, 2, 4, 2]).unwrap().sack_permitted);
        // Four SACK blocks, the most that fit.
        let mut bytes = vec![1, 1, 5, 34];
        for i in 0..8u32 {
            bytes.extend_from_slice(&(i * 100).to_be_bytes());
        }
        let parsed = options(&bytes).unwrap();
        assert_eq!(parsed.sack_blocks.len, 4);
        assert_eq!(parsed.sack_blocks.as_slice()[3], (SeqNumber(600), SeqNumber(700)));
        // Empty option area.
        assert_eq!(options(&[]).unwrap(), TcpOptions::default());
        // A later copy wins.
        assert_eq!(options(&[2, 4, 0, 1, 2, 4, 0, 2]).unwrap().mss, Some(2));
        // An MSS of 0 is ignored, as Linux ignores it (the peer's MSS stays the default, 536); so it does not
        // replace an earlier one.
        assert_eq!(options(&[2, 4, 0, 0]).unwrap(), TcpOptions::default());
        assert_eq!(options(&[2, 4, 5, 0xb4, 2, 4, 0, 0]).unwrap().mss, Some(1460));
        assert_eq!(TcpOptionIter::new(&[2, 4, 0, 0]).next(), Some(Ok(TcpOption::MaxSegmentSize(0))));
    }

    /// A malformed option stops the parse as it stops Linux's `tcp_parse_options`: the options before it are kept,
    /// nothing after it is read, the segment is taken (and marked, to be counted).
    #[test]
    fn option_parser_stops_at_a_malformed_option() {
        let none = TcpOptions { malformed: true, ..TcpOptions::default() };
        let mss = TcpOptions { mss: Some(1460), ..none };
        let cases: &[(&[u8], TcpOptions)] = &[
            // The three of tests/adversarial.rs: a kind in the last byte, its length byte missing; an MSS of
            // length 10 in a 4-byte area; an unknown kind of length 0.
            (&[1, 1, 1, 2], none),
            (&[2, 10, 5, 0xb4], none),
            (&[0x42, 0, 1, 1], none),
            (&[2], none),
            (&[2, 4, 5], none),                    // runs past the area
            (&[30, 1, 1, 1], none),                // length 1
            (&[30, 9, 1, 1], none),                // an unknown kind running past the area
            (&[1, 1, 8, 10, 0, 0, 0, 0, 0], none), // timestamps cut short
            (&[30, 0, 2, 4, 5, 0xb4], none),       // the MSS after the bad option is not read
            (&[2, 4, 5, 0xb4, 2], mss),            // the MSS before it is kept
            (&[2, 4, 5, 0xb4, 3, 3, 7, 8, 10, 0, 0, 0, 1], TcpOptions { window_scale: Some(7), ..mss }),
        ];
        for &(bytes, expected) in cases {
            assert_eq!(options(bytes), Ok(expected), "{bytes:?}");
            // The iterator yields the error once, then stops.
            let mut iter = TcpOptionIter::new(bytes);
            assert!(iter.by_ref().any(|o| o.is_err()));
            assert_eq!(iter.next(), None);
        }
        // Found with fewer than 18 bytes of the area left, it is read up to: 17 bytes left here.
        let mut bytes = vec![1, 1, 1, 30, 18];
        bytes.resize(20, 0);
        assert_eq!(options(&bytes), Ok(none));
        bytes.resize(17, 0);
        bytes[..5].copy_from_slice(&[30, 18, 0, 0, 0]);
        assert_eq!(options(&bytes), Ok(none));
        // The display marks where the parse stopped.
        let repr = TcpRepr { options: TcpOptions { timestamp: None, ..mss }, ..syn_repr() };
        assert_eq!(repr.to_string(), "Flags [S], seq 1309157865, win 64240, options [mss 1460,bad opts], length 0");
        let repr = TcpRepr { options: none, ..syn_repr() };
        assert_eq!(repr.to_string(), "Flags [S], seq 1309157865, win 64240, options [bad opts], length 0");
    }

    /// A known kind with a length it cannot have is ignored and the parse goes on, as Linux ignores an option
    /// whose size is not its `TCPOLEN_*`.
    #[test]
    fn option_parser_ignores_a_known_kind_of_the_wrong_length() {
        let mut sack_of_38 = vec![5, 40];
        sack_of_38.resize(40, 0);
        let wrong: &[&[u8]] = &[
            &[2, 3, 5],                                // MSS of length 3
            &[2, 5, 5, 0xb4, 0],                       // MSS of length 5
            &[2, 2],                                   // MSS of length 2
            &[3, 4, 7, 0],                             // window scale of length 4
            &[3, 2],                                   // window scale of length 2
            &[4, 3, 0],                                // SACK permitted of length 3
            &[5, 2],                                   // SACK with no block
            &[5, 6, 0, 0, 0, 1],                       // SACK of a half block
            &[5, 13, 0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0], // SACK of a block and three bytes
            &sack_of_38,                               // SACK of 40 bytes: 38 are not whole blocks
            &[8, 8, 0, 0, 0, 0, 0, 0],                 // timestamps of length 8
            &[8, 12, 0, 0, 0, 1, 0, 0, 0, 2, 0, 0],    // timestamps of length 12
        ];
        for &bytes in wrong {
            // Alone: nothing read, nothing malformed.
            assert_eq!(options(bytes), Ok(TcpOptions::default()), "{bytes:?}");
            assert_eq!(
                TcpOptionIter::new(bytes).collect::<Vec<_>>(),
                [Ok(TcpOption::WrongLength { kind: bytes[0], data: &bytes[2..] })],
                "{bytes:?}"
            );
            // Followed by an MSS, which is read.
            let mut then_mss = bytes.to_vec();
            then_mss.extend_from_slice(&[2, 4, 5, 0xb4]);
            if then_mss.len() <= MAX_OPTIONS_LEN {
                let expected = TcpOptions { mss: Some(1460), ..TcpOptions::default() };
                assert_eq!(options(&then_mss), Ok(expected), "{bytes:?}");
            }
        }
        assert_eq!(TcpOption::WrongLength { kind: 2, data: &[5] }.to_string(), "mss [bad length 3]");
        assert_eq!(TcpOption::WrongLength { kind: 5, data: &[] }.to_string(), "sack [bad length 2]");
    }

    /// What Linux drops before reading the options: its scan for signatures (`tcp_do_parse_auth_options`) fails,
    /// or finds an MD5 signature it holds no key for.
    #[test]
    fn option_parser_refuses_what_linux_drops_unread() {
        let option = |kind: u8, len: u8| {
            let mut bytes = vec![kind, len];
            bytes.resize(usize::from(len.max(2)), 0xaa);
            bytes
        };
        let cat = |parts: &[&[u8]]| parts.concat();
        // An MD5 signature, alone or among other options.
        assert_eq!(options(&option(19, 18)), Err(Error::Unsupported));
        assert_eq!(options(&cat(&[&[2, 4, 5, 0xb4, 1, 1], &option(19, 18), &[1, 1]])), Err(Error::Unsupported));
        // An MD5 option of the wrong length, a short AO option, two signatures.
        assert_eq!(options(&cat(&[&option(19, 17), &[1]])), Err(Error::Malformed));
        assert_eq!(options(&cat(&[&option(19, 19), &[1; 3]])), Err(Error::Malformed));
        assert_eq!(options(&cat(&[&option(29, 4), &[1; 14]])), Err(Error::Malformed));
        assert_eq!(options(&cat(&[&option(29, 18), &option(19, 18)])), Err(Error::Malformed));
        assert_eq!(options(&cat(&[&option(29, 18), &option(29, 18)])), Err(Error::Malformed));
        // A malformed option with 18 bytes or more of the area left (with 17, it only stops the parse).
        let cut = TcpOptions { malformed: true, ..TcpOptions::default() };
        assert_eq!(options(&cat(&[&[1, 1, 1], &[30, 18], &[0; 15]])), Ok(cut));
        assert_eq!(options(&cat(&[&[1, 1], &[30, 19], &[0; 16]])), Err(Error::Malformed));
        assert_eq!(options(&cat(&[&[1, 1], &[30, 1], &[0; 16]])), Err(Error::Malformed));
        assert_eq!(options(&cat(&[&[2, 4, 5, 0xb4, 0x42, 0], &[1; 34]])), Err(Error::Malformed));
        // An AO option, well formed: a kernel built without TCP-AO ignores it.
        assert_eq!(options(&option(29, 18)), Ok(TcpOptions::default()));
        // Past the scan (under 18 bytes left), a signature kind is any unknown option.
        assert_eq!(options(&cat(&[&[1; 3], &option(29, 3), &[1; 14]])), Ok(TcpOptions::default()));
        assert_eq!(options(&cat(&[&[1; 3], &option(19, 17)])), Ok(TcpOptions::default()));
        // The segment is refused with it.
        let mut segment = SYN[34..54].to_vec();
        segment[12] = 0xa0; // 40 bytes of header
        segment.extend_from_slice(&cat(&[&option(19, 18), &[1, 1]]));
        let packet = TcpPacket::new_checked(&segment[..]).unwrap();
        assert_eq!(TcpRepr::parse(&packet, CLIENT, SERVER, false), Err(Error::Unsupported));
    }

    fn blocks(n: u32) -> SackBlocks {
        let mut blocks = SackBlocks::default();
        for i in 0..n {
            blocks.push(SeqNumber(1000 * i), SeqNumber(1000 * i + 500));
        }
        blocks
    }

    fn emitted(options: &TcpOptions) -> Vec<u8> {
        let mut buf = [0u8; MAX_OPTIONS_LEN];
        let n = options.emit(&mut buf);
        assert_eq!(n, options.buffer_len());
        buf[..n].to_vec()
    }

    #[test]
    fn option_layouts_follow_linux() {
        let ts = Some((1, 2));
        assert_eq!(emitted(&TcpOptions::default()), [0u8; 0]);
        assert_eq!(emitted(&TcpOptions { mss: Some(1460), ..Default::default() }), [2, 4, 5, 0xb4]);
        assert_eq!(emitted(&TcpOptions { timestamp: ts, ..Default::default() }), [1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2]);
        assert_eq!(
            emitted(&TcpOptions { timestamp: ts, sack_permitted: true, ..Default::default() }),
            [4, 2, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2]
        );
        assert_eq!(emitted(&TcpOptions { sack_permitted: true, ..Default::default() }), [1, 1, 4, 2]);
        assert_eq!(
            emitted(&TcpOptions { mss: Some(536), window_scale: Some(0), ..Default::default() }),
            [2, 4, 2, 0x18, 1, 3, 3, 0]
        );
        assert_eq!(
            emitted(&TcpOptions { sack_blocks: blocks(1), ..Default::default() }),
            [1, 1, 5, 10, 0, 0, 0, 0, 0, 0, 1, 0xf4]
        );
    }

    #[test]
    fn sack_blocks_that_do_not_fit_are_dropped() {
        let alone = TcpOptions { sack_blocks: blocks(4), ..Default::default() };
        assert_eq!((alone.sack_blocks_emitted(), alone.buffer_len()), (4, 36));
        let with_ts = TcpOptions { sack_blocks: blocks(4), timestamp: Some((1, 2)), ..Default::default() };
        assert_eq!((with_ts.sack_blocks_emitted(), with_ts.buffer_len()), (3, 40));
        assert_eq!(with_ts.fit().sack_blocks, blocks(3));
        let everything = TcpOptions {
            mss: Some(1460),
            window_scale: Some(7),
            sack_permitted: true,
            sack_blocks: blocks(4),
            timestamp: Some((1, 2)),
            malformed: false,
        };
        assert_eq!((everything.sack_blocks_emitted(), everything.buffer_len()), (2, 40));
        let mut crowded = everything;
        crowded.sack_permitted = false;
        crowded.timestamp = None;
        crowded.mss = None;
        crowded.window_scale = None;
        crowded.sack_blocks.len = 9; // out of range: clamped to the four held
        assert_eq!(crowded.sack_blocks_emitted(), 4);
        // The emitted options parse back as the fitted ones.
        for o in [alone, with_ts, everything, crowded] {
            assert_eq!(options(&emitted(&o)).unwrap(), o.fit());
            assert!(o.buffer_len() <= MAX_OPTIONS_LEN && o.buffer_len() % 4 == 0);
        }
    }

    #[test]
    fn display_of_urgent_and_flagless() {
        let repr = TcpRepr {
            flags: TcpFlags::URG | TcpFlags::ACK,
            urgent_pointer: 3,
            options: TcpOptions::default(),
            payload: b"abc",
            ..syn_repr()
        };
        assert_eq!(repr.to_string(), "Flags [U.], seq 1309157865:1309157868, ack 0, win 64240, urg 3, length 3");
        let repr = TcpRepr { flags: TcpFlags(0), options: TcpOptions::default(), ..syn_repr() };
        assert_eq!(repr.to_string(), "Flags [none], seq 1309157865, win 64240, length 0");
        assert_eq!(TcpOption::Unknown { kind: 30, data: &[1, 2] }.to_string(), "unknown-30 0x0102");
    }

    fn arb_options() -> impl Strategy<Value = TcpOptions> {
        (
            // An MSS of 0 is not read back (Linux ignores it).
            proptest::option::of(1u16..),
            proptest::option::of(any::<u8>()),
            any::<bool>(),
            proptest::collection::vec((any::<u32>(), any::<u32>()), 0..=4),
            proptest::option::of((any::<u32>(), any::<u32>())),
            any::<bool>(),
        )
            .prop_map(|(mss, window_scale, sack_permitted, sack, timestamp, malformed)| {
                let mut sack_blocks = SackBlocks::default();
                for (l, r) in sack {
                    sack_blocks.push(SeqNumber(l), SeqNumber(r));
                }
                TcpOptions { mss, window_scale, sack_permitted, sack_blocks, timestamp, malformed }
            })
    }

    proptest! {
        #[test]
        fn repr_round_trips(
            src_port in 1u16..,
            dst_port in 1u16..,
            seq in any::<u32>(),
            ack in any::<u32>(),
            flags in any::<u8>(),
            window_len in any::<u16>(),
            urgent_pointer in any::<u16>(),
            options in arb_options(),
            payload in proptest::collection::vec(any::<u8>(), 0..64),
            src in any::<[u8; 4]>(),
            dst in any::<[u8; 4]>(),
        ) {
            let (src, dst) = (Ipv4Addr::from(src), Ipv4Addr::from(dst));
            let repr = TcpRepr {
                src_port, dst_port, seq_number: SeqNumber(seq), ack_number: SeqNumber(ack), flags: TcpFlags(flags),
                window_len, urgent_pointer, options, payload: &payload,
            };
            prop_assert!(repr.header_len() <= 60 && repr.header_len() % 4 == 0);
            let mut bytes = vec![0u8; repr.buffer_len()];
            repr.emit(&mut TcpPacket::new_unchecked(&mut bytes[..]), src, dst);
            prop_assert_eq!(reference_tcp_sum(src, dst, &bytes), 0xffff);
            let packet = TcpPacket::new_checked(&bytes[..]).unwrap();
            let parsed = TcpRepr::parse(&packet, src, dst, true).unwrap();
            prop_assert_eq!(parsed, TcpRepr { options: options.fit(), ..repr });
            let _ = parsed.to_string();
        }

        #[test]
        fn random_segments_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..80), verify in any::<bool>()) {
            if let Ok(packet) = TcpPacket::new_checked(&bytes[..]) {
                let _ = (packet.options(), packet.payload(), packet.verify_checksum(CLIENT, SERVER));
                if let Ok(repr) = TcpRepr::parse(&packet, CLIENT, SERVER, verify) {
                    let _ = repr.to_string();
                }
            }
        }

        #[test]
        fn the_timestamp_fast_path_reads_as_the_general_parser_does(
            tsval in any::<u32>(), tsecr in any::<u32>(), edit in proptest::option::of((0usize..12, any::<u8>())),
        ) {
            let mut area = [field::OPT_NOP, field::OPT_NOP, field::OPT_TSTAMP, 10, 0, 0, 0, 0, 0, 0, 0, 0];
            area[4..8].copy_from_slice(&tsval.to_be_bytes());
            area[8..].copy_from_slice(&tsecr.to_be_bytes());
            // Sometimes a byte changed, so that areas just off the layout take the general path and agree too.
            if let Some((at, byte)) = edit {
                area[at] = byte;
            }
            let parsed = TcpOptions::parse(&area);
            prop_assert_eq!(parsed, TcpOptions::parse_general(&area, true));
            if edit.is_none() {
                prop_assert_eq!(parsed.unwrap().timestamp, Some((tsval, tsecr)));
            }
        }

        #[test]
        fn random_options_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..40)) {
            for option in TcpOptionIter::new(&bytes).flatten() {
                let _ = option.to_string();
            }
            let _ = TcpOptions::parse(&bytes);
        }

        #[test]
        fn mutated_frames_never_panic(which in 0usize..6, edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4)) {
            let mut bytes = ALL[which].to_vec();
            for (at, value) in edits {
                let i = at.index(bytes.len());
                bytes[i] = value;
            }
            // Also past the checksums: parse the TCP header without verifying.
            if let Ok((_, _, tcp)) = parse_frame(&bytes) {
                let _ = tcp.to_string();
            }
            if let Ok(packet) = Ipv4Packet::new_checked(&bytes[14..]) {
                if let Ok(segment) = TcpPacket::new_checked(packet.payload()) {
                    let _ = TcpRepr::parse(&segment, CLIENT, SERVER, false).map(|r| r.to_string());
                }
            }
        }
    }
}
