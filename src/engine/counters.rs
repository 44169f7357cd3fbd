//! What a stack counts. Every frame that is not used ends in exactly one drop reason.

use crate::tcp::CloseReason;
use crate::wire;

/// Why a received frame (or a frame to send) was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Drop {
    /// A header failed to parse: truncated, or a field the format forbids.
    Malformed,
    /// An IPv4 or TCP checksum did not verify.
    BadChecksum,
    /// An IPv4 fragment (not reassembled).
    Fragment,
    /// Addressed to another MAC or IPv4 address.
    NotForUs,
    /// Another EtherType or IP protocol.
    Unsupported,
    /// A TCP segment for no connection and no listener (answered with RST unless it was one).
    NoConnection,
    /// A SYN while the listener's SYN backlog was full.
    SynBacklogFull,
    /// A SYN while the connection table was full.
    TableFull,
    /// The device had no room for a frame we sent.
    TxFull,
    /// No MAC address known for the peer.
    NoNeighbor,
}

impl Drop {
    /// Every reason, in display order.
    pub const ALL: [Drop; 10] = [
        Drop::Malformed,
        Drop::BadChecksum,
        Drop::Fragment,
        Drop::NotForUs,
        Drop::Unsupported,
        Drop::NoConnection,
        Drop::SynBacklogFull,
        Drop::TableFull,
        Drop::TxFull,
        Drop::NoNeighbor,
    ];

    /// A short name for tables and JSON.
    pub fn name(self) -> &'static str {
        match self {
            Drop::Malformed => "malformed",
            Drop::BadChecksum => "bad_checksum",
            Drop::Fragment => "fragment",
            Drop::NotForUs => "not_for_us",
            Drop::Unsupported => "unsupported",
            Drop::NoConnection => "no_connection",
            Drop::SynBacklogFull => "syn_backlog_full",
            Drop::TableFull => "table_full",
            Drop::TxFull => "tx_full",
            Drop::NoNeighbor => "no_neighbor",
        }
    }
}

impl From<wire::Error> for Drop {
    fn from(e: wire::Error) -> Drop {
        match e {
            wire::Error::Truncated | wire::Error::Malformed => Drop::Malformed,
            wire::Error::Checksum => Drop::BadChecksum,
            wire::Error::Fragment => Drop::Fragment,
            wire::Error::Unsupported => Drop::Unsupported,
        }
    }
}

/// One stack's counters.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Counters {
    /// Frames received from the device.
    pub rx_frames: u64,
    /// Frames handed to the device.
    pub tx_frames: u64,
    /// TCP segments that passed parsing and checksums.
    pub tcp_in: u64,
    /// TCP segments sent.
    pub tcp_out: u64,
    /// ARP packets received for us.
    pub arp_in: u64,
    /// RSTs sent for segments that found no connection.
    pub rst_sent: u64,
    /// Connections created (active and passive).
    pub conns_opened: u64,
    /// Connections that closed normally.
    pub conns_closed: u64,
    /// Connections reset by the peer (or refused).
    pub conns_reset: u64,
    /// Connections that timed out.
    pub conns_timed_out: u64,
    /// Connections aborted by the application.
    pub conns_aborted: u64,
    /// TIME_WAIT connections replaced by a new SYN (RFC 6191).
    pub time_wait_reopened: u64,
    /// Connection-table-full refusals.
    pub table_full: u64,
    /// Timers that found the wheel full.
    pub timer_wheel_full: u64,
    /// Application events dropped because the queue was full.
    pub events_dropped: u64,
    /// Drops by reason, indexed like [`Drop::ALL`].
    pub drops: [u64; 10],
}

impl Counters {
    /// Counts one drop.
    pub fn drop(&mut self, reason: Drop) {
        let i = Drop::ALL.iter().position(|&d| d == reason).unwrap_or(0);
        self.drops[i] += 1;
    }

    /// Counts a parse failure.
    pub fn drop_wire(&mut self, e: wire::Error) {
        self.drop(Drop::from(e));
    }

    /// Drops for one reason.
    pub fn dropped(&self, reason: Drop) -> u64 {
        let i = Drop::ALL.iter().position(|&d| d == reason).unwrap_or(0);
        self.drops[i]
    }

    /// Drops for every reason together.
    pub fn total_drops(&self) -> u64 {
        self.drops.iter().sum()
    }

    pub(crate) fn count_close(&mut self, reason: CloseReason) {
        match reason {
            CloseReason::Normal => self.conns_closed += 1,
            CloseReason::Reset | CloseReason::Refused | CloseReason::ReturnedToListen => self.conns_reset += 1,
            CloseReason::TimedOut => self.conns_timed_out += 1,
            CloseReason::Aborted => self.conns_aborted += 1,
        }
    }
}
