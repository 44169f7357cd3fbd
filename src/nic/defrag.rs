//! IPv4 reassembly in front of the stack: a device wrapper that holds the fragments of TCP datagrams and hands
//! the stack each datagram once it is whole, as one unfragmented frame.
//!
//! TCP senders set DF and size segments to the path, so fragments are rare; a peer that fragments anyway (a
//! tunnel, a middlebox, a probe) should find xtcp answering as Linux does, which reassembles. The rules are
//! Linux's (`ip_frag_queue`, `inet_frag_queue_insert`): offsets in 8-byte units, a fragment other than the last
//! trimmed to a multiple of 8, a datagram whose fragments overlap (other than an exact duplicate, which is
//! dropped alone) or contradict each other about where it ends dropped whole (RFC 5722's rule, which Linux applies
//! to IPv4 too since CVE-2018-5391), none longer than 65,535 bytes, each given up 30 s after its first fragment
//! came. Memory is bounded: at most [`DefragConfig::max_datagrams`] datagrams and
//! [`DefragConfig::max_bytes`] of data held. A fragment that would start a datagram past the bytes is dropped; one
//! past the datagrams gives up the oldest to make room, so that first fragments whose datagrams never complete
//! cannot keep every new datagram out until they time out.
//!
//! It sits inside the multi-core hand-off ([`crate::engine::shard`]), so a datagram is routed by the ports of the
//! frame it becomes, and behind any capture, so a pcap shows the fragments as they came. Frames that are not
//! fragments of TCP pass through untouched, at the cost of two byte comparisons.
//!
//! The steering program sends xtcp the later fragments of a datagram whose first fragment was for one of its
//! ports; a later fragment that comes before the first goes to the kernel, and the datagram is lost (the sender
//! retransmits, and Linux senders send fragments in order).

use core::time::Duration;

use crate::nic::{DeviceStats, FrameDevice, Transmit};
use crate::time::Instant;
use crate::wire::checksum;

const ETH_LEN: usize = 14;
const IP_MIN_LEN: usize = 20;
/// The most a datagram's data may come to: its total length, a 16-bit field, less the smallest header.
const MAX_DATA: usize = 65_535 - IP_MIN_LEN;
/// Fragments one datagram may be made of before it is given up (a 64 KiB datagram in 1 KiB pieces).
const MAX_FRAGMENTS: usize = 64;

/// Bounds and timing of the reassembly.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DefragConfig {
    /// Datagrams held at once (default 64); a new one past it gives up the oldest.
    pub max_datagrams: usize,
    /// Bytes of fragment data held at once, all datagrams together (default 1 MiB).
    pub max_bytes: usize,
    /// How long after its first fragment a datagram is given up (default 30 s, Linux's `ipfrag_time`).
    pub timeout: Duration,
}

impl Default for DefragConfig {
    fn default() -> DefragConfig {
        DefragConfig { max_datagrams: 64, max_bytes: 1 << 20, timeout: Duration::from_secs(30) }
    }
}

/// What the reassembly counted (Linux's `Ip: Reasm*` counters, by the same names where there is one).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DefragStats {
    /// Fragments taken in (`ReasmReqds`).
    pub fragments: u64,
    /// Datagrams made whole and handed on (`ReasmOKs`).
    pub reassembled: u64,
    /// Datagrams given up whole: overlapping or contradicting fragments, too long (data, or the first fragment's
    /// header and the data, past 65,535 bytes), too many pieces (`ReasmFails` less the timeouts and evictions).
    pub failed: u64,
    /// Of those, datagrams given up for overlapping fragments (`ReasmOverlaps`).
    pub overlaps: u64,
    /// Datagrams given up because their time ran out (`ReasmTimeout`).
    pub timeouts: u64,
    /// Datagrams given up, oldest first, to make room for a new one past [`DefragConfig::max_datagrams`].
    pub evicted: u64,
    /// Fragments dropped alone: exact duplicates, empty ones, and those past the bounds.
    pub dropped: u64,
}

/// One datagram being put together.
#[derive(Debug)]
struct Datagram {
    /// Source, destination, protocol and identification: what the fragments of one datagram share.
    key: [u8; 11],
    started: Instant,
    /// The Ethernet header and IPv4 header (options included) of the first fragment, once it came.
    head: Vec<u8>,
    /// The data, each fragment at its offset.
    data: Vec<u8>,
    /// Byte ranges of `data` present: sorted, disjoint.
    have: Vec<(usize, usize)>,
    /// The data's length, once the last fragment (MF clear) came; until then the furthest end seen.
    len: usize,
    last_in: bool,
}

/// What one fragment did to its datagram.
enum Insert {
    Kept,
    Duplicate,
    Overlap,
}

impl Datagram {
    fn insert(&mut self, offset: usize, bytes: &[u8]) -> Insert {
        let end = offset + bytes.len();
        let at = self.have.partition_point(|&(_, e)| e <= offset);
        if let Some(&(s, e)) = self.have.get(at) {
            if s < end {
                return if (s, e) == (offset, end) { Insert::Duplicate } else { Insert::Overlap };
            }
        }
        if self.data.len() < end {
            self.data.resize(end, 0);
        }
        self.data[offset..end].copy_from_slice(bytes);
        self.have.insert(at, (offset, end));
        Insert::Kept
    }

    /// Whole: the last fragment came, and the ranges cover `0..len` without a gap.
    fn is_whole(&self) -> bool {
        self.last_in
            && !self.head.is_empty()
            && self.have.first().is_some_and(|r| r.0 == 0)
            && self.have.windows(2).all(|w| w[0].1 == w[1].0)
            && self.have.last().is_some_and(|r| r.1 == self.len)
    }
}

/// Reassembles IPv4 fragments of TCP datagrams from `inner` (see the module's documentation).
#[derive(Debug)]
pub struct Defrag<D> {
    inner: D,
    table: Table,
}

/// The datagrams being put together.
#[derive(Debug)]
struct Table {
    cfg: DefragConfig,
    datagrams: Vec<Datagram>,
    /// Bytes of data held, all datagrams together.
    held: usize,
    /// The whole frame handed on, rebuilt here.
    frame: Vec<u8>,
    stats: DefragStats,
}

impl<D> Defrag<D> {
    /// `inner` with reassembly in front, bounded by `cfg`.
    pub fn new(inner: D, cfg: DefragConfig) -> Defrag<D> {
        let table = Table { cfg, datagrams: Vec::new(), held: 0, frame: Vec::new(), stats: DefragStats::default() };
        Defrag { inner, table }
    }

    /// The device inside.
    pub fn inner(&self) -> &D {
        &self.inner
    }

    /// The device inside, to change.
    pub fn inner_mut(&mut self) -> &mut D {
        &mut self.inner
    }

    /// What the reassembly counted.
    pub fn stats(&self) -> DefragStats {
        self.table.stats
    }

    /// Datagrams held now.
    pub fn pending(&self) -> usize {
        self.table.datagrams.len()
    }

    /// Bytes of fragment data held now.
    pub fn held_bytes(&self) -> usize {
        self.table.held
    }
}

impl Table {
    /// Gives up the datagrams whose time ran out.
    fn expire(&mut self, now: Instant) {
        let timeout = self.cfg.timeout;
        let before = self.datagrams.len();
        let mut freed = 0;
        self.datagrams.retain(|d| {
            let keep = now < d.started + timeout;
            if !keep {
                freed += d.data.len();
            }
            keep
        });
        self.held -= freed;
        self.stats.timeouts += (before - self.datagrams.len()) as u64;
    }

    /// Gives up the datagram whose first fragment came first, to make room for a new one.
    fn evict_oldest(&mut self) {
        let oldest = self.datagrams.iter().enumerate().min_by_key(|(_, d)| d.started).map(|(i, _)| i);
        if let Some(index) = oldest {
            self.remove(index);
            self.stats.evicted += 1;
        }
    }

    fn remove(&mut self, index: usize) -> Datagram {
        let d = self.datagrams.swap_remove(index);
        self.held -= d.data.len();
        d
    }

    /// Takes one fragment (`ip` is its IPv4 header and data, already checked). Returns the index of its datagram
    /// when that is now whole.
    fn take(&mut self, now: Instant, frame: &[u8], ihl: usize, ip: &[u8]) -> Option<usize> {
        self.stats.fragments += 1;
        let flags_offset = u16::from_be_bytes([ip[6], ip[7]]);
        let more = flags_offset & 0x2000 != 0;
        let offset = usize::from(flags_offset & 0x1fff) * 8;
        let total = usize::from(u16::from_be_bytes([ip[2], ip[3]]));
        let mut bytes = &ip[ihl..total];
        if more {
            // Every fragment but the last carries a multiple of 8 bytes; Linux trims any excess.
            bytes = &bytes[..bytes.len() & !7];
        }
        let end = offset + bytes.len();
        let mut key = [0u8; 11];
        key[..8].copy_from_slice(&ip[12..20]);
        key[8] = ip[9];
        key[9..].copy_from_slice(&ip[4..6]);
        let index = match self.datagrams.iter().position(|d| d.key == key) {
            Some(i) => i,
            None => {
                if bytes.is_empty() || self.held + end > self.cfg.max_bytes {
                    self.stats.dropped += 1;
                    return None;
                }
                if self.datagrams.len() >= self.cfg.max_datagrams {
                    self.evict_oldest();
                }
                self.datagrams.push(Datagram {
                    key,
                    started: now,
                    head: Vec::new(),
                    data: Vec::new(),
                    have: Vec::new(),
                    len: 0,
                    last_in: false,
                });
                self.datagrams.len() - 1
            }
        };
        let d = &self.datagrams[index];
        // Where the datagram ends: the last fragment says, and nothing may contradict it (Linux: corrupted).
        let contradicts = if more { d.last_in && end > d.len } else { end < d.len || (d.last_in && end != d.len) };
        if contradicts || end > MAX_DATA || d.have.len() >= MAX_FRAGMENTS {
            self.remove(index);
            self.stats.failed += 1;
            return None;
        }
        if bytes.is_empty() {
            self.stats.dropped += 1;
            return None;
        }
        let grows = end.saturating_sub(d.data.len());
        if self.held + grows > self.cfg.max_bytes {
            self.remove(index);
            self.stats.failed += 1;
            return None;
        }
        let d = &mut self.datagrams[index];
        match d.insert(offset, bytes) {
            Insert::Duplicate => {
                self.stats.dropped += 1;
                return None;
            }
            Insert::Overlap => {
                self.remove(index);
                self.stats.failed += 1;
                self.stats.overlaps += 1;
                return None;
            }
            Insert::Kept => {}
        }
        self.held += grows;
        if !more {
            d.last_in = true;
            d.len = end;
        } else {
            d.len = d.len.max(end);
        }
        if offset == 0 {
            d.head = frame[..ETH_LEN + ihl].to_vec();
        }
        if !d.is_whole() {
            return None;
        }
        // The first fragment's header with the data must fit the 16-bit total length: with IP options the header
        // is longer than `MAX_DATA` allows for (Linux, `ip_frag_reasm`: an oversized datagram fails).
        if d.head.len() - ETH_LEN + d.len > usize::from(u16::MAX) {
            self.remove(index);
            self.stats.failed += 1;
            return None;
        }
        Some(index)
    }

    /// Writes datagram `d` as one unfragmented frame into `self.frame`: the first fragment's headers with the
    /// total length and checksum made anew, the fragment fields cleared (DF kept), then the data.
    fn rebuild(&mut self, d: &Datagram) {
        let ihl = d.head.len() - ETH_LEN;
        self.frame.clear();
        self.frame.extend_from_slice(&d.head);
        self.frame.extend_from_slice(&d.data[..d.len]);
        let ip = &mut self.frame[ETH_LEN..];
        let total = (ihl + d.len) as u16;
        ip[2..4].copy_from_slice(&total.to_be_bytes());
        let df = u16::from_be_bytes([ip[6], ip[7]]) & 0x4000;
        ip[6..8].copy_from_slice(&df.to_be_bytes());
        ip[10..12].fill(0);
        let sum = checksum::checksum(&ip[..ihl]);
        ip[10..12].copy_from_slice(&sum.to_be_bytes());
    }
}

/// The IPv4 header length of `frame` when it is a fragment of a TCP datagram whose header checks out (length
/// fields and checksum); `None` for any other frame, which passes on as it is.
fn tcp_fragment(frame: &[u8]) -> Option<usize> {
    let ip = frame.get(ETH_LEN..)?;
    if frame[12..14] != [0x08, 0x00] || ip.len() < IP_MIN_LEN || ip[9] != 6 {
        return None;
    }
    if u16::from_be_bytes([ip[6], ip[7]]) & 0x3fff == 0 || ip[0] >> 4 != 4 {
        return None;
    }
    let ihl = usize::from(ip[0] & 0x0f) * 4;
    let total = usize::from(u16::from_be_bytes([ip[2], ip[3]]));
    if ihl < IP_MIN_LEN || total < ihl || total > ip.len() || checksum::data(&ip[..ihl]) != 0xffff {
        return None;
    }
    Some(ihl)
}

impl<D: Transmit> Transmit for Defrag<D> {
    fn transmit(&mut self, now: Instant, len: usize, fill: &mut dyn FnMut(&mut [u8])) -> bool {
        self.inner.transmit(now, len, fill)
    }
}

impl<D: FrameDevice> FrameDevice for Defrag<D> {
    fn receive(&mut self, now: Instant, budget: usize, handler: &mut dyn FnMut(&[u8], &mut dyn Transmit)) -> usize {
        let Defrag { inner, table } = self;
        if !table.datagrams.is_empty() {
            table.expire(now);
        }
        inner.receive(now, budget, &mut |frame, tx| {
            let Some(ihl) = tcp_fragment(frame) else {
                return handler(frame, tx);
            };
            if let Some(index) = table.take(now, frame, ihl, &frame[ETH_LEN..]) {
                let d = table.remove(index);
                table.rebuild(&d);
                table.stats.reassembled += 1;
                handler(&table.frame, tx);
            }
        })
    }

    fn flush(&mut self, now: Instant) {
        self.inner.flush(now);
    }

    fn max_frame_len(&self) -> usize {
        self.inner.max_frame_len()
    }

    fn poll_at(&self) -> Option<Instant> {
        self.inner.poll_at()
    }

    fn wait(&mut self, timeout: Duration) {
        self.inner.wait(timeout);
    }

    fn device_stats(&self, out: &mut DeviceStats) {
        self.inner.device_stats(out);
        let s = self.table.stats;
        out.drops.extend([
            ("reasm_failed", s.failed),
            ("reasm_timeout", s.timeouts),
            ("reasm_evicted", s.evicted),
            ("frag_dropped", s.dropped),
        ]);
        out.values.extend([("frags_in", s.fragments), ("reasm_ok", s.reassembled), ("reasm_overlaps", s.overlaps)]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nic::loopback::Loopback;

    /// An unfragmented IPv4 frame carrying `data` as protocol `proto`, identification `id`, checksum filled in.
    fn datagram(proto: u8, id: u16, data: &[u8]) -> Vec<u8> {
        let mut f = vec![0u8; ETH_LEN + IP_MIN_LEN];
        f[0..6].copy_from_slice(&[2, 0, 0, 0, 0, 2]);
        f[6..12].copy_from_slice(&[2, 0, 0, 0, 0, 1]);
        f[12..14].copy_from_slice(&[0x08, 0x00]);
        let ip = &mut f[ETH_LEN..];
        ip[0] = 0x45;
        ip[2..4].copy_from_slice(&((IP_MIN_LEN + data.len()) as u16).to_be_bytes());
        ip[4..6].copy_from_slice(&id.to_be_bytes());
        ip[8] = 64;
        ip[9] = proto;
        ip[12..16].copy_from_slice(&[10, 0, 0, 1]);
        ip[16..20].copy_from_slice(&[10, 0, 0, 2]);
        let sum = checksum::checksum(&ip[..IP_MIN_LEN]);
        ip[10..12].copy_from_slice(&sum.to_be_bytes());
        f.extend_from_slice(data);
        f
    }

    /// `whole` (from [`datagram`]) cut into fragments at the data offsets `cuts` (multiples of 8).
    fn fragments(whole: &[u8], cuts: &[usize]) -> Vec<Vec<u8>> {
        let data = &whole[ETH_LEN + IP_MIN_LEN..];
        let mut bounds = vec![0];
        bounds.extend_from_slice(cuts);
        bounds.push(data.len());
        bounds
            .windows(2)
            .map(|w| {
                let last = w[1] == data.len();
                let mut f = datagram(whole[ETH_LEN + 9], u16::from_be_bytes([whole[18], whole[19]]), &data[w[0]..w[1]]);
                let field = (w[0] / 8) as u16 | if last { 0 } else { 0x2000 };
                let ip = &mut f[ETH_LEN..];
                ip[6..8].copy_from_slice(&field.to_be_bytes());
                ip[10..12].fill(0);
                let sum = checksum::checksum(&ip[..IP_MIN_LEN]);
                ip[10..12].copy_from_slice(&sum.to_be_bytes());
                f
            })
            .collect()
    }

    /// Feeds `frames` in order at `now` and returns what came out.
    fn feed(d: &mut Defrag<Loopback>, now: Instant, frames: &[Vec<u8>]) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        for f in frames {
            assert!(d.inner.transmit(now, f.len(), &mut |b| b.copy_from_slice(f)));
            d.receive(now, 64, &mut |frame, _| out.push(frame.to_vec()));
        }
        out
    }

    fn defrag() -> Defrag<Loopback> {
        Defrag::new(Loopback::new(64, 70_000), DefragConfig::default())
    }

    fn payload(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 7 + 3) as u8).collect()
    }

    #[test]
    fn fragments_in_any_order_become_the_frame_they_were_cut_from() {
        let whole = datagram(6, 0x1234, &payload(3000));
        let pieces = fragments(&whole, &[1480, 2960]);
        for order in [[0, 1, 2], [2, 0, 1], [1, 2, 0], [2, 1, 0]] {
            let mut d = defrag();
            let shuffled: Vec<Vec<u8>> = order.iter().map(|&i| pieces[i].clone()).collect();
            let out = feed(&mut d, Instant::ZERO, &shuffled);
            assert_eq!(out, vec![whole.clone()], "order {order:?}");
            assert_eq!((d.pending(), d.held_bytes()), (0, 0));
            assert_eq!(d.stats(), DefragStats { fragments: 3, reassembled: 1, ..DefragStats::default() });
        }
    }

    #[test]
    fn other_frames_pass_untouched_and_other_protocols_fragments_too() {
        let mut d = defrag();
        let tcp = datagram(6, 1, &payload(100));
        let udp_piece = fragments(&datagram(17, 2, &payload(100)), &[48]).remove(0);
        let arp = vec![0xff; 60];
        let frames = vec![tcp.clone(), udp_piece.clone(), arp.clone()];
        assert_eq!(feed(&mut d, Instant::ZERO, &frames), frames);
        assert_eq!(d.stats(), DefragStats::default());
    }

    #[test]
    fn an_exact_duplicate_is_dropped_alone_and_an_overlap_drops_the_datagram() {
        let whole = datagram(6, 7, &payload(64));
        let pieces = fragments(&whole, &[24, 48]);
        let mut d = defrag();
        let out =
            feed(&mut d, Instant::ZERO, &[pieces[0].clone(), pieces[0].clone(), pieces[2].clone(), pieces[1].clone()]);
        assert_eq!(out, vec![whole.clone()]);
        assert_eq!(d.stats().dropped, 1);

        // A fragment covering 16..40 overlaps both 0..24 and the later 24..48: the datagram goes.
        let overlapping = fragments(&whole, &[16, 40]).remove(1);
        let mut d = defrag();
        let out = feed(&mut d, Instant::ZERO, &[pieces[0].clone(), overlapping, pieces[1].clone(), pieces[2].clone()]);
        assert!(out.is_empty(), "{out:?}");
        assert_eq!((d.stats().failed, d.stats().overlaps), (1, 1));
        // What came after the overlap started a datagram of its own, which lacks its first fragment.
        assert_eq!(d.pending(), 1);
    }

    #[test]
    fn a_datagram_whose_fragments_disagree_on_its_end_is_dropped() {
        let whole = datagram(6, 9, &payload(64));
        let pieces = fragments(&whole, &[32]);
        let shorter_last = fragments(&datagram(6, 9, &payload(48)), &[32]).remove(1);
        let mut d = defrag();
        assert!(feed(&mut d, Instant::ZERO, &[pieces[1].clone(), shorter_last, pieces[0].clone()]).is_empty());
        assert_eq!(d.stats().failed, 1);
    }

    #[test]
    fn a_datagram_not_whole_in_30_seconds_is_given_up() {
        let whole = datagram(6, 11, &payload(64));
        let pieces = fragments(&whole, &[32]);
        let mut d = defrag();
        assert!(feed(&mut d, Instant::ZERO, &pieces[..1]).is_empty());
        let late = Instant::ZERO + Duration::from_secs(30);
        assert!(feed(&mut d, late, &pieces[1..]).is_empty(), "the first half was given up before the second came");
        assert_eq!(d.stats().timeouts, 1);
        // Just in time, it is whole.
        let mut d = defrag();
        feed(&mut d, Instant::ZERO, &pieces[..1]);
        assert_eq!(feed(&mut d, late - Duration::from_millis(1), &pieces[1..]), vec![whole]);
    }

    #[test]
    fn datagrams_and_bytes_held_are_bounded() {
        let mut d = Defrag::new(
            Loopback::new(64, 70_000),
            DefragConfig { max_datagrams: 2, max_bytes: 4096, timeout: Duration::from_secs(30) },
        );
        let pieces: Vec<Vec<Vec<u8>>> = (0..3).map(|id| fragments(&datagram(6, id, &payload(1000)), &[496])).collect();
        for (i, p) in pieces.iter().enumerate() {
            assert!(feed(&mut d, Instant::from_millis(i as u64), &p[..1]).is_empty());
        }
        // The third datagram made room by giving up the oldest, so that stale first fragments cannot keep new
        // datagrams out for the whole timeout.
        assert_eq!((d.pending(), d.held_bytes(), d.stats().evicted, d.stats().dropped), (2, 992, 1, 0));
        let now = Instant::from_millis(3);
        let whole = feed(&mut d, now, &[pieces[1][1].clone(), pieces[2][1].clone()]);
        assert_eq!(whole.len(), 2, "the two newest became whole");
        assert_eq!((d.pending(), d.held_bytes(), d.stats().reassembled), (0, 0, 2));
        // A datagram that would take the bytes past the bound is refused as it starts.
        let big = fragments(&datagram(6, 50, &payload(8000)), &[4000]);
        let mut d = Defrag::new(Loopback::new(64, 70_000), DefragConfig { max_bytes: 4096, ..DefragConfig::default() });
        assert!(feed(&mut d, Instant::ZERO, &big[1..]).is_empty());
        assert_eq!((d.pending(), d.held_bytes(), d.stats().dropped), (0, 0, 1));
    }

    #[test]
    fn a_datagram_longer_than_ip_allows_is_dropped() {
        // The last fragment at offset 65528 with 100 bytes would end past 65,515 bytes of data.
        let mut last = fragments(&datagram(6, 3, &payload(100)), &[]).remove(0);
        last[ETH_LEN + 6..ETH_LEN + 8].copy_from_slice(&(65_528u16 / 8).to_be_bytes());
        last[ETH_LEN + 10..ETH_LEN + 12].fill(0);
        let sum = checksum::checksum(&last[ETH_LEN..ETH_LEN + IP_MIN_LEN]);
        last[ETH_LEN + 10..ETH_LEN + 12].copy_from_slice(&sum.to_be_bytes());
        let mut d = defrag();
        assert!(feed(&mut d, Instant::ZERO, &[last]).is_empty());
        assert_eq!((d.pending(), d.stats().failed), (0, 1));
    }

    #[test]
    fn a_datagram_whose_header_and_data_pass_65535_bytes_is_given_up() {
        // 65,512 bytes of data (a multiple of 8 under 65,515), and a first fragment with 8 bytes of IP options:
        // 28 + 65,512 bytes would not fit the 16-bit total length.
        let pieces = fragments(&datagram(6, 5, &payload(65_512)), &[32_000]);
        let mut first = pieces[0].clone();
        first.splice(ETH_LEN + IP_MIN_LEN..ETH_LEN + IP_MIN_LEN, [1u8; 8]);
        let ip = &mut first[ETH_LEN..];
        ip[0] = 0x47;
        ip[2..4].copy_from_slice(&((IP_MIN_LEN + 8 + 32_000) as u16).to_be_bytes());
        ip[10..12].fill(0);
        let sum = checksum::checksum(&ip[..IP_MIN_LEN + 8]);
        ip[10..12].copy_from_slice(&sum.to_be_bytes());
        let mut d = defrag();
        assert!(feed(&mut d, Instant::ZERO, &[first, pieces[1].clone()]).is_empty());
        assert_eq!((d.pending(), d.held_bytes(), d.stats().failed, d.stats().reassembled), (0, 0, 1, 0));
    }

    proptest::proptest! {
        #[test]
        fn any_cutting_shuffling_and_duplication_reassembles_the_datagram(
            len in 9usize..4000,
            cuts in proptest::collection::vec(1usize..500, 0..8),
            seed in proptest::prelude::any::<u64>(),
        ) {
            use rand::{seq::SliceRandom, Rng, SeedableRng};
            let whole = datagram(6, 77, &payload(len));
            let mut at: Vec<usize> = cuts.iter().map(|c| c * 8).filter(|&c| c < len).collect();
            at.sort_unstable();
            at.dedup();
            if at.is_empty() {
                at.push(8); // one piece would be no fragment at all
            }
            let mut pieces = fragments(&whole, &at);
            let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
            let duplicated = rng.gen_bool(0.5);
            if duplicated {
                let dup = pieces[rng.gen_range(0..pieces.len())].clone();
                pieces.push(dup);
            }
            pieces.shuffle(&mut rng);
            let mut d = defrag();
            let out = feed(&mut d, Instant::ZERO, &pieces);
            proptest::prop_assert_eq!(out, vec![whole]);
            // A duplicate that comes after the datagram was whole starts one of its own, never completed.
            if !duplicated {
                proptest::prop_assert_eq!(d.held_bytes(), 0);
            }
        }
    }
}
