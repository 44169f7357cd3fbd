//! Zero-copy views over frames and their parsed representations.
//!
//! Every header has two types, as in smoltcp: a `Packet<T: AsRef<[u8]>>` view over bytes with field accessors
//! (offsets are named ranges in a private `field` module), and a `Repr`, the parsed meaning, with `parse`,
//! `buffer_len` and `emit`. Untrusted bytes go through `new_checked`, which validates lengths once so that the
//! accessors cannot panic; emitting into our own buffer uses `new_unchecked`.
//!
//! Nothing here panics on any input: every frame refused ends as an [`Error`], which the engine counts. TCP options
//! are read as Linux reads them, and a malformed one may only stop the parse (see [`TcpOptions::parse`]).

pub mod arp;
pub mod checksum;
pub mod ethernet;
pub mod ipv4;
pub mod tcp;

pub use arp::{ArpOperation, ArpPacket, ArpRepr};
pub use ethernet::{EtherType, EthernetAddress, EthernetFrame, EthernetRepr};
pub use ipv4::{IpProtocol, Ipv4Packet, Ipv4Repr};
pub use tcp::{SackBlocks, SeqNumber, TcpFlags, TcpOption, TcpOptionIter, TcpOptions, TcpPacket, TcpRepr};

/// Why bytes were not accepted as a header. Each variant maps to a drop counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
pub enum Error {
    /// Shorter than the header or than a length field says.
    #[error("truncated")]
    Truncated,
    /// A field holds a value the format forbids (version, header length, option length...).
    #[error("malformed")]
    Malformed,
    /// The checksum does not verify.
    #[error("bad checksum")]
    Checksum,
    /// An IPv4 fragment: xtcp does not reassemble, it drops and counts.
    #[error("fragment")]
    Fragment,
    /// Well formed but not something this stack handles (another EtherType, protocol, ARP hardware type...).
    #[error("unsupported")]
    Unsupported,
}

/// Big-endian header fields, shared by every view. Ranges come from a length checked once in `new_checked` (or
/// from our own emit buffer), so the indexing cannot fail.
pub(crate) fn get_u16(bytes: &[u8]) -> u16 {
    u16::from_be_bytes([bytes[0], bytes[1]])
}

/// See [`get_u16`].
pub(crate) fn get_u32(bytes: &[u8]) -> u32 {
    u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]])
}

/// The result of parsing.
pub type Result<T> = core::result::Result<T, Error>;
