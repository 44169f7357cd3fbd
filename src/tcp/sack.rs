//! Selective acknowledgment: the sender's scoreboard (RFC 2018, RFC 6675) and the receiver's choice of blocks.
//!
//! The scoreboard holds what the peer's SACK blocks said it has above SND.UNA, as sorted, disjoint ranges, and the
//! ranges retransmitted in the current recovery. From those it answers RFC 6675's questions: `IsLost` (as the
//! boundary below which every unSACKed byte counts as lost), `pipe`, and `NextSeg`'s first rule. Everything is
//! bounded: a block that would need one range too many evicts the highest one (SACK information is advisory, losing
//! some costs at most a needless retransmission).

use crate::wire::{SackBlocks, SeqNumber};

/// The most SACKed ranges the sender remembers.
pub const MAX_SACKED_RANGES: usize = 16;
/// The most retransmitted ranges the sender tracks in one recovery; when full, no more holes are resent until an
/// ACK frees one.
pub const MAX_RETRANSMITTED_RANGES: usize = 16;
/// RFC 6675's DupThresh: where the reordering threshold starts.
pub const DUP_THRESH: usize = 3;
/// The most the reordering threshold grows to (in segments) when D-SACK shows retransmissions were needless.
pub const MAX_REORDERING_SEGMENTS: usize = 16;

/// Sorted, disjoint, non-adjacent half-open ranges of sequence space, at most `N`, compared with wrapping arithmetic.
#[derive(Debug, Clone, Copy)]
struct Ranges<const N: usize> {
    ranges: [(SeqNumber, SeqNumber); N],
    len: usize,
}

impl<const N: usize> Default for Ranges<N> {
    fn default() -> Self {
        Self::EMPTY
    }
}

impl<const N: usize> Ranges<N> {
    const EMPTY: Self = Ranges { ranges: [(SeqNumber(0), SeqNumber(0)); N], len: 0 };

    fn as_slice(&self) -> &[(SeqNumber, SeqNumber)] {
        &self.ranges[..self.len]
    }

    /// Adds `[start, end)`, merging with what it touches. When that needs one range too many the highest range is
    /// dropped (which may be the new one); returns false then.
    fn insert(&mut self, start: SeqNumber, end: SeqNumber) -> bool {
        if end.diff(start) <= 0 {
            return true;
        }
        let (mut start, mut end) = (start, end);
        let lo = self.as_slice().iter().position(|r| r.1.diff(start) >= 0).unwrap_or(self.len);
        let hi = self.as_slice().iter().position(|r| r.0.diff(end) > 0).unwrap_or(self.len);
        if lo < hi {
            start = start.min(self.ranges[lo].0);
            end = end.max(self.ranges[hi - 1].1);
            self.ranges.copy_within(hi..self.len, lo + 1);
            self.len -= hi - lo - 1;
            self.ranges[lo] = (start, end);
            return true;
        }
        if self.len == N {
            if lo == N {
                return false;
            }
            self.len -= 1;
            self.ranges.copy_within(lo..self.len, lo + 1);
            self.len += 1;
            self.ranges[lo] = (start, end);
            return false;
        }
        self.ranges.copy_within(lo..self.len, lo + 1);
        self.len += 1;
        self.ranges[lo] = (start, end);
        true
    }

    /// Forgets everything below `seq`, trimming a range that straddles it.
    fn trim_below(&mut self, seq: SeqNumber) {
        let gone = self.as_slice().iter().take_while(|r| r.1.diff(seq) <= 0).count();
        self.ranges.copy_within(gone..self.len, 0);
        self.len -= gone;
        if self.len > 0 && self.ranges[0].0.diff(seq) < 0 {
            self.ranges[0].0 = seq;
        }
    }

    /// Bytes of `[start, end)` covered.
    fn covered(&self, start: SeqNumber, end: SeqNumber) -> usize {
        self.as_slice()
            .iter()
            .map(|&(a, b)| {
                let a = a.max(start);
                let b = b.min(end);
                if b.diff(a) > 0 {
                    b - a
                } else {
                    0
                }
            })
            .sum()
    }

    /// The range holding `seq`, if any.
    fn containing(&self, seq: SeqNumber) -> Option<(SeqNumber, SeqNumber)> {
        self.as_slice().iter().copied().find(|r| seq.diff(r.0) >= 0 && seq.diff(r.1) < 0)
    }

    /// The start of the first range that begins after `seq`.
    fn next_start_after(&self, seq: SeqNumber) -> Option<SeqNumber> {
        self.as_slice().iter().map(|r| r.0).find(|s| s.diff(seq) > 0)
    }
}

/// A range retransmitted during recovery, with SND.MAX when it went: data from there on was sent after it.
#[derive(Debug, Clone, Copy)]
struct Retransmitted {
    start: SeqNumber,
    end: SeqNumber,
    snd_max_then: SeqNumber,
}

/// The sender's view of what the receiver holds above SND.UNA (RFC 6675 §3's scoreboard).
#[derive(Debug, Clone, Copy)]
pub struct Scoreboard {
    sacked: Ranges<MAX_SACKED_RANGES>,
    rexmit: [Retransmitted; MAX_RETRANSMITTED_RANGES],
    rexmit_len: usize,
    /// Time-based evidence (RFC 8985's RACK in the small: a probe timeout passed since these bytes were sent and
    /// later data was SACKed): every unSACKed byte below this counts as lost.
    lost_below: Option<SeqNumber>,
    /// The reordering threshold in segments: DupThresh, raised by each needless retransmission D-SACK reveals (as
    /// Linux's tp->reordering), at most [`MAX_REORDERING_SEGMENTS`].
    reordering: usize,
}

/// What one ACK's blocks did to the scoreboard ([`Scoreboard::update`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SackUpdate {
    /// Bytes newly SACKed.
    pub newly_sacked: usize,
    /// Blocks ignored because they lay outside SND.UNA..SND.MAX or were malformed.
    pub ignored: u32,
    /// Ranges dropped because the scoreboard was full.
    pub evicted: u32,
}

impl Default for Scoreboard {
    fn default() -> Scoreboard {
        Scoreboard::EMPTY
    }
}

impl Scoreboard {
    /// Nothing known, the reordering threshold at DupThresh.
    pub const EMPTY: Scoreboard = Scoreboard::with_reordering(DUP_THRESH);

    /// Nothing known, with a reordering threshold learned before (see [`Scoreboard::reordering`]).
    pub const fn with_reordering(reordering: usize) -> Scoreboard {
        let empty = Retransmitted { start: SeqNumber(0), end: SeqNumber(0), snd_max_then: SeqNumber(0) };
        Scoreboard {
            sacked: Ranges::EMPTY,
            rexmit: [empty; MAX_RETRANSMITTED_RANGES],
            rexmit_len: 0,
            lost_below: None,
            reordering,
        }
    }

    /// True when the scoreboard holds nothing for the current flight (no SACKed range, no retransmission record,
    /// no loss mark): only the reordering threshold would be lost by dropping it.
    pub fn is_idle(&self) -> bool {
        self.sacked.len == 0 && self.rexmit_len == 0 && self.lost_below.is_none()
    }

    /// True when `(left, right)` is a block [`Scoreboard::update`] would take: non-empty and inside
    /// `[snd_una, snd_max)`.
    pub fn block_in_flight(left: SeqNumber, right: SeqNumber, snd_una: SeqNumber, snd_max: SeqNumber) -> bool {
        right.diff(left) > 0 && left.diff(snd_una) >= 0 && right.diff(snd_max) <= 0
    }

    /// The SACKed ranges, in sequence order.
    pub fn sacked(&self) -> &[(SeqNumber, SeqNumber)] {
        self.sacked.as_slice()
    }

    /// Bytes SACKed within `[start, end)`.
    pub fn sacked_between(&self, start: SeqNumber, end: SeqNumber) -> usize {
        self.sacked.covered(start, end)
    }

    /// True when nothing above SND.UNA is known SACKed.
    pub fn is_empty(&self) -> bool {
        self.sacked.len == 0
    }

    /// RFC 6675 `Update()`: folds in an ACK's blocks. Blocks not wholly inside `[snd_una, snd_max)` are ignored (a
    /// D-SACK below SND.UNA, or garbage).
    pub fn update(&mut self, blocks: &SackBlocks, snd_una: SeqNumber, snd_max: SeqNumber) -> SackUpdate {
        let before = self.sacked_bytes();
        let mut out = SackUpdate::default();
        for &(left, right) in blocks.as_slice() {
            if !Scoreboard::block_in_flight(left, right, snd_una, snd_max) {
                out.ignored += 1;
                continue;
            }
            if !self.sacked.insert(left, right) {
                out.evicted += 1;
            }
        }
        out.newly_sacked = self.sacked_bytes().saturating_sub(before);
        out
    }

    /// SND.UNA moved to `snd_una`: forget what lies below.
    pub fn acked(&mut self, snd_una: SeqNumber) {
        self.sacked.trim_below(snd_una);
        if self.lost_below.is_some_and(|l| l.diff(snd_una) <= 0) {
            self.lost_below = None;
        }
        let mut i = 0;
        while i < self.rexmit_len {
            let r = &mut self.rexmit[i];
            if r.end.diff(snd_una) <= 0 {
                self.remove_rexmit(i);
                continue;
            }
            if r.start.diff(snd_una) < 0 {
                r.start = snd_una;
            }
            i += 1;
        }
    }

    /// Forgets all SACK information (RFC 6675 §5.1 on a timeout, RFC 2018's "reneging" caution) and every
    /// retransmission record.
    pub fn clear(&mut self) {
        self.sacked = Ranges::default();
        self.rexmit_len = 0;
        self.lost_below = None;
    }

    /// Forgets the retransmission records and the time-based loss mark (a recovery ended).
    pub fn clear_retransmitted(&mut self) {
        self.rexmit_len = 0;
        self.lost_below = None;
    }

    /// Time says every unSACKed byte below the highest SACKed range was lost (it went out a probe timeout or
    /// more before data that has arrived since): they count as lost from now on. Retransmission records go too, as
    /// those retransmissions are as old. Returns true when that marks anything.
    pub fn mark_lost_below_highest_sack(&mut self, snd_una: SeqNumber) -> bool {
        let Some(&(start, _)) = self.sacked.as_slice().last() else { return false };
        self.rexmit_len = 0;
        self.lost_below = Some(self.lost_below.map_or(start, |l| l.max(start)));
        start.diff(snd_una) > 0
    }

    /// Total bytes SACKed above SND.UNA.
    pub fn sacked_bytes(&self) -> usize {
        self.sacked.as_slice().iter().map(|&(a, b)| b - a).sum()
    }

    /// The end of the SACKed range holding `seq`, if `seq` is SACKed.
    pub fn sacked_end(&self, seq: SeqNumber) -> Option<SeqNumber> {
        self.sacked.containing(seq).map(|r| r.1)
    }

    /// The first SACKed byte after `seq`, if any: a segment starting at `seq` should stop there.
    pub fn next_sacked_after(&self, seq: SeqNumber) -> Option<SeqNumber> {
        self.sacked.next_start_after(seq)
    }

    /// The boundary of RFC 6675's `IsLost`: every unSACKed byte below it has DupThresh SACKed ranges, or more than
    /// (DupThresh − 1)·SMSS SACKed bytes, above it. `snd_una` when nothing counts as lost.
    pub fn lost_edge(&self, snd_una: SeqNumber, smss: usize) -> SeqNumber {
        let marked = self.lost_below.map_or(snd_una, |l| l.max(snd_una));
        let mut bytes = 0usize;
        for (count, &(a, b)) in self.sacked.as_slice().iter().rev().enumerate() {
            bytes += b - a;
            if count + 1 >= self.reordering || bytes > (self.reordering - 1) * smss {
                return a.max(marked);
            }
        }
        marked
    }

    /// True when the byte `seq` (not SACKed) counts as lost: RFC 6675 `IsLost(seq)`.
    pub fn is_lost(&self, seq: SeqNumber, snd_una: SeqNumber, smss: usize) -> bool {
        self.sacked_end(seq).is_none() && seq.diff(self.lost_edge(snd_una, smss)) < 0
    }

    /// RFC 6675 `SetPipe()`, in bytes over `[snd_una, snd_max)`: every unSACKed byte not lost counts once, and every
    /// unSACKed byte retransmitted in this recovery (and not found lost again) counts once more.
    pub fn pipe(&self, snd_una: SeqNumber, snd_max: SeqNumber, smss: usize) -> usize {
        let edge = self.lost_edge(snd_una, smss).max(snd_una);
        let not_lost = if snd_max.diff(edge) > 0 { (snd_max - edge) - self.sacked.covered(edge, snd_max) } else { 0 };
        let retransmitted: usize =
            self.rexmits().iter().map(|r| (r.end - r.start) - self.sacked.covered(r.start, r.end)).sum();
        not_lost + retransmitted
    }

    /// RFC 6675 `NextSeg()` rule 1: the first stretch (at most `smss` bytes) of lost data not yet retransmitted in
    /// this recovery, as `(start, len)`.
    pub fn next_lost(&self, snd_una: SeqNumber, snd_max: SeqNumber, smss: usize) -> Option<(SeqNumber, usize)> {
        let edge = self.lost_edge(snd_una, smss).min(snd_max);
        let mut s = snd_una;
        while s.diff(edge) < 0 {
            if let Some(end) = self.sacked_end(s) {
                s = end;
                continue;
            }
            if let Some(r) = self.rexmits().iter().find(|r| s.diff(r.start) >= 0 && s.diff(r.end) < 0) {
                s = r.end;
                continue;
            }
            let mut end = edge.min(s + smss);
            if let Some(next) = self.next_sacked_after(s) {
                end = end.min(next);
            }
            if let Some(next) = self.rexmits().iter().map(|r| r.start).find(|x| x.diff(s) > 0) {
                end = end.min(next);
            }
            return Some((s, end - s));
        }
        None
    }

    /// Records that `[start, end)` was retransmitted while SND.MAX was `snd_max`. Returns false (recording
    /// nothing) when the table is full.
    pub fn retransmitted(&mut self, start: SeqNumber, end: SeqNumber, snd_max: SeqNumber) -> bool {
        if end.diff(start) <= 0 {
            return true;
        }
        let at = self.rexmits().iter().position(|r| r.start.diff(start) > 0).unwrap_or(self.rexmit_len);
        // Contiguous with the one before and sent at the same SND.MAX: extend it.
        if at > 0 {
            let prev = &mut self.rexmit[at - 1];
            if prev.end == start && prev.snd_max_then == snd_max {
                prev.end = end;
                return true;
            }
        }
        if self.rexmit_len == MAX_RETRANSMITTED_RANGES {
            return false;
        }
        self.rexmit.copy_within(at..self.rexmit_len, at + 1);
        self.rexmit_len += 1;
        self.rexmit[at] = Retransmitted { start, end, snd_max_then: snd_max };
        true
    }

    /// A D-SACK said a retransmission was needless: the original had only been reordered. Loss now needs one more
    /// segment SACKed above a hole, up to [`MAX_REORDERING_SEGMENTS`].
    pub fn needless_retransmission(&mut self) {
        self.reordering = (self.reordering + 1).min(MAX_REORDERING_SEGMENTS);
    }

    /// The reordering threshold in segments (DupThresh as adapted).
    pub fn reordering(&self) -> usize {
        self.reordering
    }

    /// True when a retransmission record has room.
    pub fn can_retransmit(&self) -> bool {
        self.rexmit_len < MAX_RETRANSMITTED_RANGES
    }

    /// Finds retransmissions lost again: a range still not (wholly) SACKed although more than (DupThresh − 1)·SMSS
    /// bytes sent after it were. Their records go, so that they count as lost and `next_lost` offers them again.
    /// Returns how many were found.
    pub fn detect_lost_retransmissions(&mut self, smss: usize) -> usize {
        let mut found = 0;
        let mut i = 0;
        while i < self.rexmit_len {
            let r = self.rexmit[i];
            let whole = self.sacked.covered(r.start, r.end) == r.end - r.start;
            let high = self.sacked.as_slice().last().map_or(r.snd_max_then, |x| x.1);
            let after = if high.diff(r.snd_max_then) > 0 { self.sacked.covered(r.snd_max_then, high) } else { 0 };
            if !whole && after > (self.reordering - 1) * smss {
                self.remove_rexmit(i);
                found += 1;
                continue;
            }
            i += 1;
        }
        found
    }

    fn rexmits(&self) -> &[Retransmitted] {
        &self.rexmit[..self.rexmit_len]
    }

    fn remove_rexmit(&mut self, i: usize) {
        self.rexmit.copy_within(i + 1..self.rexmit_len, i);
        self.rexmit_len -= 1;
    }
}

/// The SACK blocks a receiver sends (RFC 2018 §4): the block holding the most recently received segment first,
/// then the other held ranges most recently reported first. Keeps the order of the last few reported blocks.
#[derive(Debug, Clone, Copy, Default)]
pub struct SackReporter {
    /// Blocks as last reported, most recent first (each a point inside one out-of-order range).
    recent: [Option<SeqNumber>; 4],
}

impl SackReporter {
    /// A segment starting at `start` arrived out of order and is held in one of `ranges` (the out-of-order ranges
    /// now held): its block goes first from now on, and an older mark in the same range goes.
    pub fn received(&mut self, start: SeqNumber, ranges: &[(SeqNumber, SeqNumber)]) {
        let range_of = |seq: SeqNumber| ranges.iter().position(|r| seq.diff(r.0) >= 0 && seq.diff(r.1) < 0);
        let mine = range_of(start);
        let pos = self
            .recent
            .iter()
            .position(|r| r.is_none() || r.and_then(range_of) == mine || r.and_then(range_of).is_none())
            .unwrap_or(self.recent.len() - 1);
        self.recent.copy_within(0..pos, 1);
        self.recent[0] = Some(start);
    }

    /// Forgets the order (nothing is held out of order any more).
    pub fn clear(&mut self) {
        self.recent = [None; 4];
    }

    /// The blocks to send, at most `max`, from the out-of-order ranges held (`ranges`, in sequence order): those
    /// containing recently received segments first, most recent first, then the rest in sequence order.
    pub fn blocks(&self, ranges: &[(SeqNumber, SeqNumber)], max: usize) -> SackBlocks {
        let mut out = SackBlocks::default();
        let max = max.min(4);
        let mut used = [false; 64];
        let inside = |seq: SeqNumber| ranges.iter().position(|r| seq.diff(r.0) >= 0 && seq.diff(r.1) < 0);
        for seq in self.recent.iter().flatten() {
            if usize::from(out.len) >= max {
                break;
            }
            if let Some(i) = inside(*seq) {
                if i < used.len() && !used[i] {
                    used[i] = true;
                    out.push(ranges[i].0, ranges[i].1);
                }
            }
        }
        for (i, r) in ranges.iter().enumerate() {
            if usize::from(out.len) >= max {
                break;
            }
            if i < used.len() && !used[i] {
                used[i] = true;
                out.push(r.0, r.1);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(n: u32) -> SeqNumber {
        SeqNumber(n)
    }

    fn blocks(list: &[(u32, u32)]) -> SackBlocks {
        let mut b = SackBlocks::default();
        for &(l, r) in list {
            b.push(s(l), s(r));
        }
        b
    }

    #[test]
    fn scoreboard_merges_blocks_and_ignores_those_outside_una_to_max() {
        let mut sb = Scoreboard::default();
        let (una, max) = (s(1000), s(11_000));
        assert_eq!(sb.update(&blocks(&[(3000, 4000), (5000, 6000)]), una, max).newly_sacked, 2000);
        let u = sb.update(&blocks(&[(4000, 5000), (500, 900), (10_000, 12_000), (7000, 7000)]), una, max);
        assert_eq!(u, SackUpdate { newly_sacked: 1000, ignored: 3, evicted: 0 });
        assert_eq!(sb.sacked(), &[(s(3000), s(6000))]);
        assert!(!sb.is_idle());
        sb.acked(s(3500));
        assert_eq!(sb.sacked(), &[(s(3500), s(6000))]);
        sb.acked(s(6000));
        assert!(sb.is_empty());
        assert!(sb.is_idle());
    }

    #[test]
    fn scoreboard_is_bounded_and_keeps_the_lowest_ranges() {
        let mut sb = Scoreboard::default();
        let (una, max) = (s(0), s(1_000_000));
        let mut evicted = 0;
        for i in 0..(MAX_SACKED_RANGES as u32 + 5) {
            evicted += sb.update(&blocks(&[(100 + i * 100, 150 + i * 100)]), una, max).evicted;
        }
        assert_eq!(sb.sacked().len(), MAX_SACKED_RANGES);
        assert_eq!(evicted, 5);
        // A low block still gets in, evicting the highest.
        sb.update(&blocks(&[(10, 20)]), una, max);
        assert_eq!(sb.sacked()[0], (s(10), s(20)));
        assert_eq!(sb.sacked().len(), MAX_SACKED_RANGES);
    }

    #[test]
    fn lost_edge_pipe_and_next_segment_across_sequence_wraparound() {
        // SMSS 100; SND.UNA just below the wrap. Segments of 100: holes at una and una+300, SACKed una+100..300
        // and una+400..700.
        let smss = 100;
        let una = s(u32::MAX - 149);
        let max = una + 1000;
        let mut sb = Scoreboard::default();
        let mut b = SackBlocks::default();
        b.push(una + 400, una + 700);
        b.push(una + 100, una + 300);
        assert_eq!(sb.update(&b, una, max).newly_sacked, 500);
        // 300 SACKed bytes above una+300 > 2·SMSS: both holes are lost; above una+400 nothing is.
        assert_eq!(sb.lost_edge(una, smss), una + 400);
        assert!(sb.is_lost(una, una, smss));
        assert!(sb.is_lost(una + 300, una, smss));
        assert!(!sb.is_lost(una + 100, una, smss), "SACKed");
        assert!(!sb.is_lost(una + 800, una, smss));
        // Pipe: una+700..1000 not lost (300); the two lost holes count nothing yet.
        assert_eq!(sb.pipe(una, max, smss), 300);
        assert_eq!(sb.next_lost(una, max, smss), Some((una, 100)));
        assert!(sb.retransmitted(una, una + 100, max));
        assert_eq!(sb.pipe(una, max, smss), 400, "a retransmitted hole is in the pipe");
        assert_eq!(sb.next_lost(una, max, smss), Some((una + 300, 100)));
        assert!(sb.retransmitted(una + 300, una + 400, max));
        assert_eq!(sb.next_lost(una, max, smss), None);
        assert_eq!(sb.pipe(una, max, smss), 500);
        // The first retransmission arrives: SND.UNA moves to the second hole.
        sb.acked(una + 300);
        assert_eq!(sb.pipe(una + 300, max, smss), 400);
    }

    #[test]
    fn a_retransmission_is_lost_again_when_data_sent_after_it_is_sacked() {
        let smss = 100;
        let una = s(5000);
        let mut sb = Scoreboard::default();
        sb.update(&blocks(&[(5100, 5400)]), una, s(5400));
        assert_eq!(sb.next_lost(una, s(5400), smss), Some((una, 100)));
        sb.retransmitted(una, una + 100, s(5400));
        // New data 5400..5800 went after the retransmission; 5400..5600 SACKed is not enough yet.
        sb.update(&blocks(&[(5400, 5600), (5100, 5400)]), una, s(5800));
        assert_eq!(sb.detect_lost_retransmissions(smss), 0);
        assert_eq!(sb.next_lost(una, s(5800), smss), None);
        sb.update(&blocks(&[(5400, 5700), (5100, 5400)]), una, s(5800));
        assert_eq!(sb.detect_lost_retransmissions(smss), 1);
        assert_eq!(sb.next_lost(una, s(5800), smss), Some((una, 100)), "offered again");
    }

    #[test]
    fn time_marks_everything_below_the_highest_sack_lost() {
        let smss = 100;
        let una = s(u32::MAX - 50);
        let max = una + 500;
        let mut sb = Scoreboard::default();
        // One segment SACKed above two holes: not enough for IsLost by count or bytes.
        sb.update(&blocks(&[((una + 200).0, (una + 300).0)]), una, max);
        assert_eq!(sb.lost_edge(una, smss), una);
        assert_eq!(sb.pipe(una, max, smss), 400);
        assert!(sb.mark_lost_below_highest_sack(una));
        assert_eq!(sb.lost_edge(una, smss), una + 200);
        assert_eq!(sb.pipe(una, max, smss), 200, "only una+300..500 is in flight");
        assert_eq!(sb.next_lost(una, max, smss), Some((una, 100)));
        sb.retransmitted(una, una + 100, max);
        assert_eq!(sb.next_lost(una, max, smss), Some((una + 100, 100)));
        // An ACK past the mark drops it.
        sb.acked(una + 300);
        assert_eq!(sb.lost_edge(una + 300, smss), una + 300);
    }

    #[test]
    fn needless_retransmissions_raise_the_reordering_threshold_to_a_limit() {
        let smss = 100;
        let una = s(0);
        let mut sb = Scoreboard::default();
        // Three SACKed segments above a hole: lost at DupThresh 3.
        sb.update(&blocks(&[(100, 400)]), una, s(1000));
        assert_eq!(sb.lost_edge(una, smss), s(100));
        sb.needless_retransmission();
        assert_eq!(sb.reordering(), 4);
        assert_eq!(sb.lost_edge(una, smss), una, "now four are needed");
        sb.update(&blocks(&[(100, 500)]), una, s(1000));
        assert_eq!(sb.lost_edge(una, smss), s(100));
        for _ in 0..100 {
            sb.needless_retransmission();
        }
        assert_eq!(sb.reordering(), MAX_REORDERING_SEGMENTS);
        // A timeout forgets SACK information but not what was learned about the path.
        sb.clear();
        assert_eq!(sb.reordering(), MAX_REORDERING_SEGMENTS);
    }

    #[test]
    fn reporter_puts_the_latest_segments_block_first() {
        let mut r = SackReporter::default();
        let held = [(s(100), s(200)), (s(300), s(400)), (s(500), s(600)), (s(700), s(800)), (s(900), s(1000))];
        r.received(s(300), &held);
        r.received(s(900), &held);
        r.received(s(500), &held);
        r.received(s(550), &held);
        assert_eq!(r.recent.iter().flatten().count(), 3, "one mark per range");
        let b = r.blocks(&held, 3);
        assert_eq!(b.as_slice(), &[(s(500), s(600)), (s(900), s(1000)), (s(300), s(400))]);
        // Without timestamps four fit; the fourth is the lowest range not yet named.
        let b = r.blocks(&held, 4);
        assert_eq!(b.as_slice()[3], (s(100), s(200)));
        // A range that filled in (no longer held) is skipped.
        let b = r.blocks(&held[2..], 3);
        assert_eq!(b.as_slice(), &[(s(500), s(600)), (s(900), s(1000)), (s(700), s(800))]);
    }
}
