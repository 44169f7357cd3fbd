//! What a stack counts. Every frame that is not used ends in exactly one drop reason.

use serde::de::{Deserializer, MapAccess, Visitor};
use serde::ser::{SerializeMap, Serializer};
use serde::{Deserialize, Serialize};

use crate::tcp::CloseReason;
use crate::wire;

/// Why a received frame (or a frame to send) was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Drop {
    /// A header failed to parse: truncated, or a field the format forbids (a malformed TCP option only where Linux
    /// drops the segment for it too: see [`wire::TcpOptions::parse`]), or a source no sender has: a group MAC, or a
    /// martian IPv4 address (0/8, 127/8, 224/4 and above, one of ours).
    Malformed,
    /// An IPv4 or TCP checksum did not verify.
    BadChecksum,
    /// An IPv4 fragment (not reassembled).
    Fragment,
    /// Addressed to another MAC or IPv4 address, or IPv4 in a broadcast frame (broadcast is taken for ARP only).
    NotForUs,
    /// Another EtherType or IP protocol, or a TCP-MD5 signature (RFC 2385), which xtcp holds no key to check.
    Unsupported,
    /// A TCP segment for no connection that no listener took: to a closed port, or to a listener that makes no
    /// connection of it (an ACK that returns no cookie of ours, an RST, a segment with neither SYN nor ACK).
    /// Answered with RST if it carried an ACK or went to a closed port, unless it was one.
    NoConnection,
    /// A SYN while the listener's SYN backlog was full.
    SynBacklogFull,
    /// A SYN while the connection table was full.
    TableFull,
    /// The device refused a frame we sent: no room (ring full, pool empty) or too long. Why, the device counts
    /// itself ([`crate::nic::DeviceStats`]: `tx_pool_empty`, `tx_ring_full`, `tx_too_long`).
    TxFull,
    /// No MAC address known for the peer.
    NoNeighbor,
    /// Data that arrived while the connections' buffers held [`super::StackConfig::max_buffer_bytes`].
    MemoryFull,
}

impl Drop {
    /// Every reason, in display order.
    pub const ALL: [Drop; Drop::COUNT] = [
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
        Drop::MemoryFull,
    ];

    /// How many reasons there are.
    pub const COUNT: usize = 11;

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
            Drop::MemoryFull => "memory_full",
        }
    }

    /// The reason called `name` by [`Drop::name`].
    pub fn from_name(name: &str) -> Option<Drop> {
        Drop::ALL.into_iter().find(|d| d.name() == name)
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
///
/// In JSON (serde) each counter is a field of the same name, and `drops` is an object from [`Drop::name`] to its
/// count, in [`Drop::ALL`] order. Missing fields and drop reasons read as zero and unknown ones are ignored, so a
/// client reads the snapshots of an older or newer xtcp.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Counters {
    /// Frames received from the device.
    pub rx_frames: u64,
    /// Frames handed to the device.
    pub tx_frames: u64,
    /// TCP segments that passed parsing and checksums.
    pub tcp_in: u64,
    /// TCP segments sent.
    pub tcp_out: u64,
    /// TCP segments whose options ended in a malformed one (a kind with no length byte, a length under 2 or past
    /// the option area): taken with the options before it, as Linux takes them. Counted in `tcp_in` too; not a
    /// drop.
    pub malformed_options: u64,
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
    /// SYNs for a 4-tuple in TIME_WAIT that could not reopen it (their timestamp or sequence number was not past
    /// the old connection's, RFC 6191, or no listener was there to take them): answered with an ACK, as Linux
    /// does, which the peer's RST and a SYN resent a second later get past.
    pub time_wait_refused: u64,
    /// Connection-table-full refusals.
    pub table_full: u64,
    /// Timers that found the wheel full.
    pub timer_wheel_full: u64,
    /// Application events dropped because the queue was full.
    pub events_dropped: u64,
    /// SYN-ACKs sent with a SYN cookie instead of a half-open connection (the SYN backlog was full).
    pub syn_cookies_sent: u64,
    /// ACKs that returned a valid cookie and became connections.
    pub syn_cookies_valid: u64,
    /// ACKs to a listener that were checked for a cookie and failed (answered with RST).
    pub syn_cookies_invalid: u64,
    /// Connections that closed without TIME_WAIT because [`super::StackConfig::max_time_wait`] were waiting.
    pub time_wait_limited: u64,
    /// Quiescent connections kept compact (see [`super::StackConfig::compact_after`]).
    pub conns_compacted: u64,
    /// Compacted connections made live again by a segment, a timer or an application call.
    pub conns_woken: u64,
    /// Drops by reason, indexed like [`Drop::ALL`].
    #[serde(serialize_with = "serialize_drops", deserialize_with = "deserialize_drops")]
    pub drops: [u64; Drop::COUNT],
}

impl Counters {
    /// How many counters [`Counters::named`] lists.
    pub const NAMED_LEN: usize = 23;

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

    /// Every counter but the drops, by its field name (the JSON key), in declaration order.
    pub fn named(&self) -> [(&'static str, u64); Counters::NAMED_LEN] {
        [
            ("rx_frames", self.rx_frames),
            ("tx_frames", self.tx_frames),
            ("tcp_in", self.tcp_in),
            ("tcp_out", self.tcp_out),
            ("malformed_options", self.malformed_options),
            ("arp_in", self.arp_in),
            ("rst_sent", self.rst_sent),
            ("conns_opened", self.conns_opened),
            ("conns_closed", self.conns_closed),
            ("conns_reset", self.conns_reset),
            ("conns_timed_out", self.conns_timed_out),
            ("conns_aborted", self.conns_aborted),
            ("time_wait_reopened", self.time_wait_reopened),
            ("time_wait_refused", self.time_wait_refused),
            ("table_full", self.table_full),
            ("timer_wheel_full", self.timer_wheel_full),
            ("events_dropped", self.events_dropped),
            ("syn_cookies_sent", self.syn_cookies_sent),
            ("syn_cookies_valid", self.syn_cookies_valid),
            ("syn_cookies_invalid", self.syn_cookies_invalid),
            ("time_wait_limited", self.time_wait_limited),
            ("conns_compacted", self.conns_compacted),
            ("conns_woken", self.conns_woken),
        ]
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

fn serialize_drops<S: Serializer>(drops: &[u64; Drop::COUNT], s: S) -> Result<S::Ok, S::Error> {
    let mut map = s.serialize_map(Some(drops.len()))?;
    for (reason, count) in Drop::ALL.iter().zip(drops) {
        map.serialize_entry(reason.name(), count)?;
    }
    map.end()
}

fn deserialize_drops<'de, D: Deserializer<'de>>(d: D) -> Result<[u64; Drop::COUNT], D::Error> {
    struct DropsVisitor;
    impl<'de> Visitor<'de> for DropsVisitor {
        type Value = [u64; Drop::COUNT];
        fn expecting(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
            f.write_str("an object from drop reason to count")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<[u64; Drop::COUNT], A::Error> {
            let mut drops = [0; Drop::COUNT];
            while let Some((name, count)) = map.next_entry::<String, u64>()? {
                if let Some(i) = Drop::from_name(&name).and_then(|r| Drop::ALL.iter().position(|&d| d == r)) {
                    drops[i] = count;
                }
            }
            Ok(drops)
        }
    }
    d.deserialize_map(DropsVisitor)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Counters {
        let mut c = Counters::default();
        for (i, field) in [
            &mut c.rx_frames,
            &mut c.tx_frames,
            &mut c.tcp_in,
            &mut c.tcp_out,
            &mut c.malformed_options,
            &mut c.arp_in,
            &mut c.rst_sent,
            &mut c.conns_opened,
            &mut c.conns_closed,
            &mut c.conns_reset,
            &mut c.conns_timed_out,
            &mut c.conns_aborted,
            &mut c.time_wait_reopened,
            &mut c.time_wait_refused,
            &mut c.table_full,
            &mut c.timer_wheel_full,
            &mut c.events_dropped,
            &mut c.syn_cookies_sent,
            &mut c.syn_cookies_valid,
            &mut c.syn_cookies_invalid,
            &mut c.time_wait_limited,
            &mut c.conns_compacted,
            &mut c.conns_woken,
        ]
        .into_iter()
        .enumerate()
        {
            *field = 100 + i as u64;
        }
        c.drop(Drop::BadChecksum);
        c.drop(Drop::NoNeighbor);
        c.drop(Drop::NoNeighbor);
        c
    }

    #[test]
    fn json_names_every_counter_and_drops_by_reason() {
        let c = sample();
        let v = serde_json::to_value(&c).unwrap();
        let obj = v.as_object().unwrap();
        // Every scalar field is listed by `named`, under its JSON key, with its value.
        assert_eq!(obj.len(), Counters::NAMED_LEN + 1);
        for (name, value) in c.named() {
            assert_eq!(obj[name], value, "{name}");
        }
        let drops = obj["drops"].as_object().unwrap();
        let keys: Vec<&str> = drops.keys().map(String::as_str).collect();
        let mut names: Vec<&str> = Drop::ALL.iter().map(|d| d.name()).collect();
        names.sort_unstable();
        let mut sorted = keys.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, names);
        assert_eq!(drops["bad_checksum"], 1);
        assert_eq!(drops["no_neighbor"], 2);
        assert_eq!(drops["malformed"], 0);
    }

    #[test]
    fn json_round_trips_and_tolerates_missing_and_unknown_names() {
        let c = sample();
        let back: Counters = serde_json::from_str(&serde_json::to_string(&c).unwrap()).unwrap();
        assert_eq!(back, c);
        let partial: Counters =
            serde_json::from_str(r#"{"rx_frames": 7, "future_counter": 1, "drops": {"tx_full": 3, "new_reason": 9}}"#)
                .unwrap();
        assert_eq!(partial.rx_frames, 7);
        assert_eq!(partial.tx_frames, 0);
        assert_eq!(partial.dropped(Drop::TxFull), 3);
        assert_eq!(partial.total_drops(), 3);
    }

    #[test]
    fn drop_names_are_unique_and_found_again() {
        for d in Drop::ALL {
            assert_eq!(Drop::from_name(d.name()), Some(d));
        }
        assert_eq!(Drop::from_name("nonsense"), None);
    }
}
