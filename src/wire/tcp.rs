//! TCP header and options (RFC 9293 §3.1, RFC 7323, RFC 2018).
//!
//! [`TcpRepr`] is what the connection state machine consumes and produces; [`TcpPacket`] is the checked view.

use core::cmp::Ordering;
use core::fmt;
use core::ops::{Add, AddAssign, Sub};

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
