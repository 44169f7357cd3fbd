//! Send and receive buffers: fixed-capacity byte rings allocated when the connection is made, never grown.
//!
//! The receive side keeps out-of-order data in place (at its offset past the in-order bytes) and tracks which
//! ranges are present with a bounded [`Assembler`].

use crate::wire::SeqNumber;

/// A fixed-capacity byte ring.
#[derive(Debug)]
struct Ring {
    bytes: Box<[u8]>,
    /// Index of the first held byte.
    head: usize,
    /// Held bytes.
    len: usize,
}

impl Ring {
    fn new(capacity: usize) -> Ring {
        Ring { bytes: vec![0; capacity].into_boxed_slice(), head: 0, len: 0 }
    }

    fn capacity(&self) -> usize {
        self.bytes.len()
    }

    fn index(&self, offset: usize) -> usize {
        let cap = self.capacity();
        let i = self.head + offset;
        if i >= cap {
            i - cap
        } else {
            i
        }
    }

    /// Copies `data` into the ring at `offset` bytes past the head (which may be past `len`). The caller
    /// guarantees `offset + data.len() <= capacity`.
    fn write_at(&mut self, offset: usize, data: &[u8]) {
        debug_assert!(offset + data.len() <= self.capacity());
        if data.is_empty() {
            return;
        }
        let start = self.index(offset);
        let first = data.len().min(self.capacity() - start);
        self.bytes[start..start + first].copy_from_slice(&data[..first]);
        self.bytes[..data.len() - first].copy_from_slice(&data[first..]);
    }

    /// The longest contiguous run of held bytes starting `offset` past the head, at most `max` long.
    fn contiguous_at(&self, offset: usize, max: usize) -> &[u8] {
        if offset >= self.len {
            return &[];
        }
        let start = self.index(offset);
        let n = (self.len - offset).min(max).min(self.capacity() - start);
        &self.bytes[start..start + n]
    }

    fn consume(&mut self, n: usize) {
        let n = n.min(self.len);
        self.head = self.index(n);
        self.len -= n;
        if self.len == 0 {
            self.head = 0;
        }
    }
}

/// Bytes the application queued for sending, from SND.UNA onward: sent-but-unacknowledged first, then unsent.
#[derive(Debug)]
pub struct SendBuffer {
    ring: Ring,
}

impl SendBuffer {
    /// A buffer of `capacity` bytes.
    pub fn new(capacity: usize) -> SendBuffer {
        SendBuffer { ring: Ring::new(capacity) }
    }

    /// Bytes held (unacknowledged plus unsent).
    pub fn len(&self) -> usize {
        self.ring.len
    }

    /// True when nothing is held.
    pub fn is_empty(&self) -> bool {
        self.ring.len == 0
    }

    /// Room for more bytes.
    pub fn free(&self) -> usize {
        self.ring.capacity() - self.ring.len
    }

    /// The capacity in bytes.
    pub fn capacity(&self) -> usize {
        self.ring.capacity()
    }

    /// Appends as much of `data` as fits; returns how much.
    pub fn enqueue(&mut self, data: &[u8]) -> usize {
        let n = data.len().min(self.free());
        let len = self.ring.len;
        self.ring.write_at(len, &data[..n]);
        self.ring.len += n;
        n
    }

    /// Up to `max` contiguous bytes starting `offset` bytes past SND.UNA (shorter where the ring wraps).
    pub fn peek(&self, offset: usize, max: usize) -> &[u8] {
        self.ring.contiguous_at(offset, max)
    }

    /// Drops `n` acknowledged bytes from the front.
    pub fn consume(&mut self, n: usize) {
        self.ring.consume(n)
    }
}

/// The most out-of-order ranges a connection remembers. A segment that would need one more is dropped (and
/// counted); the sender retransmits it later.
pub const MAX_OOO_RANGES: usize = 16;

/// Which sequence ranges past RCV.NXT are held, as at most [`MAX_OOO_RANGES`] sorted, disjoint, non-adjacent
/// half-open ranges.
#[derive(Debug, Default, Clone)]
pub struct Assembler {
    ranges: [(SeqNumber, SeqNumber); MAX_OOO_RANGES],
    len: usize,
}

impl Assembler {
    /// The held ranges, in sequence order.
    pub fn ranges(&self) -> &[(SeqNumber, SeqNumber)] {
        &self.ranges[..self.len]
    }

    /// True when no out-of-order data is held.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Records `[start, end)`, merging with neighbours. Returns false, changing nothing, when the range would need
    /// more than [`MAX_OOO_RANGES`] entries.
    pub fn insert(&mut self, start: SeqNumber, end: SeqNumber) -> bool {
        if end.diff(start) <= 0 {
            return true;
        }
        let (mut start, mut end) = (start, end);
        // First range that ends at or after `start` (could merge), and the first that begins after `end`.
        let lo = self.ranges().iter().position(|r| r.1.diff(start) >= 0).unwrap_or(self.len);
        let hi = self.ranges().iter().position(|r| r.0.diff(end) > 0).unwrap_or(self.len);
        if lo < hi {
            start = start.min(self.ranges[lo].0);
            end = end.max(self.ranges[hi - 1].1);
        } else if self.len == MAX_OOO_RANGES {
            return false;
        }
        // Replace ranges[lo..hi] with the one merged range.
        let removed = hi - lo;
        if removed == 0 {
            self.ranges.copy_within(lo..self.len, lo + 1);
            self.len += 1;
        } else {
            self.ranges.copy_within(hi..self.len, lo + 1);
            self.len -= removed - 1;
        }
        self.ranges[lo] = (start, end);
        true
    }

    /// If the first range begins at or before `rcv_nxt`, removes it and returns its end (the new RCV.NXT).
    pub fn pop_front_at(&mut self, rcv_nxt: SeqNumber) -> Option<SeqNumber> {
        if self.len == 0 || self.ranges[0].0.diff(rcv_nxt) > 0 {
            return None;
        }
        let end = self.ranges[0].1;
        self.ranges.copy_within(1..self.len, 0);
        self.len -= 1;
        Some(end)
    }

    /// Forgets everything.
    pub fn clear(&mut self) {
        self.len = 0;
    }
}

/// Bytes received: in-order bytes the application has not read yet, followed by room where out-of-order segments
/// are stored at their offset until the gap before them fills.
#[derive(Debug)]
pub struct RecvBuffer {
    ring: Ring,
    ooo: Assembler,
}

impl RecvBuffer {
    /// A buffer of `capacity` bytes.
    pub fn new(capacity: usize) -> RecvBuffer {
        RecvBuffer { ring: Ring::new(capacity), ooo: Assembler::default() }
    }

    /// In-order bytes waiting to be read.
    pub fn len(&self) -> usize {
        self.ring.len
    }

    /// True when nothing waits to be read.
    pub fn is_empty(&self) -> bool {
        self.ring.len == 0
    }

    /// The capacity in bytes.
    pub fn capacity(&self) -> usize {
        self.ring.capacity()
    }

    /// Room past the unread bytes: the most the receive window can offer.
    pub fn free(&self) -> usize {
        self.ring.capacity() - self.ring.len
    }

    /// The out-of-order ranges held.
    pub fn out_of_order(&self) -> &Assembler {
        &self.ooo
    }

    /// Stores `data`, whose first byte has sequence number `seq`, given that the next expected byte is `rcv_nxt`.
    /// The caller has trimmed `data` to `[rcv_nxt, rcv_nxt + free())`. Returns the new RCV.NXT, or `None` when
    /// the data was out of order and could not be tracked (too many ranges) and was dropped.
    pub fn write(&mut self, rcv_nxt: SeqNumber, seq: SeqNumber, data: &[u8]) -> Option<SeqNumber> {
        let offset = seq - rcv_nxt;
        debug_assert!(offset + data.len() <= self.free());
        if offset > 0 {
            if !self.ooo.insert(seq, seq + data.len()) {
                return None;
            }
            let at = self.ring.len + offset;
            self.ring.write_at(at, data);
            return Some(rcv_nxt);
        }
        let at = self.ring.len;
        self.ring.write_at(at, data);
        let mut next = rcv_nxt + data.len();
        // Ranges now covered by in-order data, or joined to it, become readable.
        while let Some(end) = self.ooo.pop_front_at(next) {
            next = next.max(end);
        }
        self.ring.len += next - rcv_nxt;
        Some(next)
    }

    /// Copies out and consumes up to `out.len()` in-order bytes.
    pub fn read(&mut self, out: &mut [u8]) -> usize {
        // Out-of-order bytes live at offsets past `len` relative to the head; consuming moves the head and the
        // length together, so their position relative to the in-order end is unchanged.
        let n = out.len().min(self.ring.len);
        let cap = self.ring.capacity();
        let mut done = 0;
        while done < n {
            let chunk = self.ring.contiguous_at(0, n - done);
            let c = chunk.len();
            out[done..done + c].copy_from_slice(chunk);
            done += c;
            // Do not reset head to 0 when len reaches 0: out-of-order bytes may sit past it.
            self.ring.head = (self.ring.head + c) % cap;
            self.ring.len -= c;
        }
        n
    }

    /// The longest contiguous run of unread in-order bytes, for reading without a copy.
    pub fn peek(&self) -> &[u8] {
        self.ring.contiguous_at(0, usize::MAX)
    }

    /// Drops `n` in-order bytes after a [`RecvBuffer::peek`].
    pub fn consume(&mut self, n: usize) {
        let n = n.min(self.ring.len);
        let cap = self.ring.capacity();
        self.ring.head = (self.ring.head + n) % cap;
        self.ring.len -= n;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(n: u32) -> SeqNumber {
        SeqNumber(n)
    }

    #[test]
    fn send_buffer_wraps_and_peeks_contiguous_runs() {
        let mut b = SendBuffer::new(8);
        assert_eq!(b.enqueue(b"abcdef"), 6);
        b.consume(4);
        assert_eq!(b.enqueue(b"ghijklmn"), 6);
        assert_eq!(b.len(), 8);
        assert_eq!(b.peek(0, 100), b"efgh");
        assert_eq!(b.peek(4, 100), b"ijkl");
        assert_eq!(b.peek(1, 2), b"fg");
        assert_eq!(b.peek(8, 1), b"");
    }

    #[test]
    fn assembler_merges_and_bounds_ranges() {
        let mut a = Assembler::default();
        assert!(a.insert(s(10), s(20)));
        assert!(a.insert(s(30), s(40)));
        assert!(a.insert(s(20), s(30)));
        assert_eq!(a.ranges(), &[(s(10), s(40))]);
        for i in 0..(MAX_OOO_RANGES as u32 - 1) {
            assert!(a.insert(s(100 + i * 10), s(105 + i * 10)));
        }
        assert!(!a.insert(s(1000), s(1001)), "one range too many must be refused");
        assert!(a.insert(s(5), s(12)), "merging needs no new range");
        assert_eq!(a.ranges()[0], (s(5), s(40)));
        assert_eq!(a.pop_front_at(s(5)), Some(s(40)));
    }

    #[test]
    fn assembler_handles_sequence_wraparound() {
        let mut a = Assembler::default();
        assert!(a.insert(s(u32::MAX - 5), s(3)));
        assert!(a.insert(s(3), s(10)));
        assert_eq!(a.ranges(), &[(s(u32::MAX - 5), s(10))]);
    }

    #[test]
    fn recv_buffer_reassembles_out_of_order_data() {
        let mut r = RecvBuffer::new(16);
        let base = s(u32::MAX - 3);
        assert_eq!(r.write(base, base + 4, b"efgh"), Some(base));
        assert_eq!(r.len(), 0);
        assert_eq!(r.write(base, base + 10, b"kl"), Some(base));
        let next = r.write(base, base, b"abcd").unwrap();
        assert_eq!(next, base + 8);
        let mut out = [0u8; 16];
        assert_eq!(r.read(&mut out[..3]), 3);
        assert_eq!(&out[..3], b"abc");
        let next = r.write(next, next, b"ij").unwrap();
        assert_eq!(next, base + 12);
        let n = r.read(&mut out);
        assert_eq!(&out[..n], b"defghijkl");
    }
}
