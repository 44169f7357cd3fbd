//! Send and receive buffers: byte rings of a fixed logical capacity whose memory is taken only while they hold
//! data — allocated on the first byte, grown by doubling as data arrives, and given back when they empty. An idle
//! connection holds no buffer memory at all; a busy one holds about what it has queued.
//!
//! The receive side keeps out-of-order data in place (at its offset past the in-order bytes) and tracks which
//! ranges are present with a bounded [`Assembler`], allocated, like the memory, only while out-of-order data is
//! held: an in-order connection never allocates one.

use super::sack::SackReporter;
use crate::wire::{SackBlocks, SeqNumber};

/// The smallest allocation: an echo-sized message fits, and the allocator serves a block this small from its
/// per-thread cache, so a connection that sends and drains one small message at a time costs little.
pub const MIN_ALLOCATION: usize = 512;

/// The largest buffer, 2 GiB: positions are kept in `u32`s (which save every connection's two rings eight bytes
/// each), and a connection's two buffers together fit one too. A TCP window reaches 1 GiB at most (RFC 7323 §2.3),
/// so no connection could use more.
pub const MAX_BUFFER_BYTES: usize = (u32::MAX / 2) as usize;

/// Block sizes a [`BufferPool`] keeps: 512 B, 1, 2 and 4 KiB, the sizes small messages and short answers take.
const POOLED_SIZES: usize = 4;

/// Blocks that emptied buffers gave back, for the next buffer that needs one of the same size: a connection that
/// sends or receives one small message at a time (an echo, an HTTP request or answer) takes its block here and
/// gives it back when the message is gone, so the hot path does not go to the allocator per message. Blocks of
/// [`MIN_ALLOCATION`] bytes up to 4 KiB are kept, up to a byte budget (blocks past it are freed); owned by whoever
/// drives the connections — the engine keeps one per stack — and handed to the calls that may fill or empty a
/// buffer. A recycled block is not cleared: a buffer reads only bytes written into it.
#[derive(Debug, Default)]
pub struct BufferPool {
    /// Kept blocks by size: `MIN_ALLOCATION << i`.
    blocks: [Vec<Box<[u8]>>; POOLED_SIZES],
    /// Bytes kept now, and at most.
    bytes: usize,
    max_bytes: usize,
}

impl BufferPool {
    /// A pool that keeps up to `max_bytes` of blocks.
    pub fn new(max_bytes: usize) -> BufferPool {
        BufferPool { max_bytes, ..BufferPool::default() }
    }

    /// A pool that keeps nothing: every buffer allocates and frees for itself.
    pub const fn none() -> BufferPool {
        BufferPool { blocks: [Vec::new(), Vec::new(), Vec::new(), Vec::new()], bytes: 0, max_bytes: 0 }
    }

    /// Blocks kept now.
    pub fn len(&self) -> usize {
        self.blocks.iter().map(Vec::len).sum()
    }

    /// True when no block is kept.
    pub fn is_empty(&self) -> bool {
        self.bytes == 0
    }

    /// Bytes kept now.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// The size class of a block of `len` bytes, if the pool keeps such blocks.
    fn class(len: usize) -> Option<usize> {
        (0..POOLED_SIZES).find(|&class| len == MIN_ALLOCATION << class)
    }

    /// A block of `len` bytes: a kept one, or a new one.
    fn take(&mut self, len: usize) -> Box<[u8]> {
        if let Some(block) = BufferPool::class(len).and_then(|c| self.blocks[c].pop()) {
            self.bytes -= len;
            return block;
        }
        vec![0; len].into_boxed_slice()
    }

    /// Keeps `block` if the pool keeps its size and it fits the budget; frees it otherwise.
    fn give(&mut self, block: Box<[u8]>) {
        let len = block.len();
        if let Some(class) = BufferPool::class(len) {
            if self.bytes + len <= self.max_bytes {
                self.bytes += len;
                self.blocks[class].push(block);
            }
        }
    }
}

/// A byte ring of `limit` bytes' logical capacity, backed by an allocation of at most that much.
struct Ring {
    /// Empty when nothing is held; else a power of two (or `limit`) at least as long as the held span.
    bytes: Box<[u8]>,
    /// The logical capacity: what the ring may hold, whatever is allocated now.
    limit: u32,
    /// Index in `bytes` of the first held byte.
    head: u32,
    /// Held bytes.
    held: u32,
    /// The size the next allocation starts at (0: [`MIN_ALLOCATION`]), set from the last one as it was given back:
    /// a connection that keeps filling and draining its buffer (bulk data read as it comes) allocates once per
    /// fill instead of growing from the smallest size by doubling, copying at each step. It follows use down by
    /// halves: an allocation that never had to grow leaves half its size as the next start.
    start: u32,
}

/// Everything but `start`, which is a sizing hint, not state: a connection's compact record drops it (one idle for
/// that long starts small again), and a connection back from compaction prints as it did before.
impl core::fmt::Debug for Ring {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Ring")
            .field("bytes", &self.bytes)
            .field("limit", &self.limit)
            .field("head", &self.head)
            .field("held", &self.held)
            .finish()
    }
}

impl Ring {
    fn new(limit: usize) -> Ring {
        Ring { bytes: Box::default(), limit: limit.min(MAX_BUFFER_BYTES) as u32, head: 0, held: 0, start: 0 }
    }

    fn capacity(&self) -> usize {
        self.limit as usize
    }

    /// Held bytes.
    fn len(&self) -> usize {
        self.held as usize
    }

    /// `n` more bytes are held (the caller checked they fit the capacity).
    fn grow(&mut self, n: usize) {
        self.held += n as u32;
    }

    /// As [`Ring::new`] made it for `limit`: nothing held, nothing allocated.
    fn is_pristine(&self, limit: usize) -> bool {
        self.bytes.is_empty() && self.held == 0 && self.head == 0 && self.limit as usize == limit.min(MAX_BUFFER_BYTES)
    }

    /// Bytes allocated now.
    fn allocated(&self) -> usize {
        self.bytes.len()
    }

    /// The index in `bytes` of the byte `offset` past the head (`offset` at most the allocation's length).
    fn index(&self, offset: usize) -> usize {
        let cap = self.bytes.len();
        let i = self.head as usize + offset;
        if i >= cap {
            i - cap
        } else {
            i
        }
    }

    /// Makes the allocation cover `end` bytes past the head, moving what it held to a larger one (head first). A
    /// block of a size the pool keeps comes from `pool` when it has one, and one outgrown goes back to it.
    fn reserve(&mut self, end: usize, pool: &mut BufferPool) {
        let have = self.bytes.len();
        if end <= have {
            return;
        }
        debug_assert!(end <= self.capacity());
        let first = if have == 0 { self.start as usize } else { 0 };
        let want = end.max(MIN_ALLOCATION).max(first).next_power_of_two().min(self.capacity()).max(end);
        let mut bytes = pool.take(want);
        let (front, back) = self.bytes.split_at(self.head as usize);
        bytes[..back.len()].copy_from_slice(back);
        bytes[back.len()..have].copy_from_slice(front);
        pool.give(core::mem::replace(&mut self.bytes, bytes));
        self.head = 0;
    }

    /// Gives the allocation back (to `pool`, if it keeps blocks of its size); the caller knows nothing is held in
    /// it. The next one starts at this one's size if it had to grow past where it started, else at half of it.
    fn release(&mut self, pool: &mut BufferPool) {
        let size = self.bytes.len();
        if size > 0 {
            let grew = size > (self.start as usize).max(MIN_ALLOCATION);
            let next = if grew { size } else { size / 2 };
            self.start = if next > MIN_ALLOCATION { next as u32 } else { 0 };
        }
        pool.give(core::mem::take(&mut self.bytes));
        self.head = 0;
    }

    /// Copies `data` into the ring at `offset` bytes past the head (which may be past `len`). The caller
    /// guarantees `offset + data.len() <= capacity`.
    fn write_at(&mut self, offset: usize, data: &[u8], pool: &mut BufferPool) {
        debug_assert!(offset + data.len() <= self.capacity());
        if data.is_empty() {
            return;
        }
        self.reserve(offset + data.len(), pool);
        let start = self.index(offset);
        let first = data.len().min(self.bytes.len() - start);
        self.bytes[start..start + first].copy_from_slice(&data[..first]);
        self.bytes[..data.len() - first].copy_from_slice(&data[first..]);
    }

    /// The longest contiguous run of held bytes starting `offset` past the head, at most `max` long.
    fn contiguous_at(&self, offset: usize, max: usize) -> &[u8] {
        if offset >= self.len() {
            return &[];
        }
        let start = self.index(offset);
        let n = (self.len() - offset).min(max).min(self.bytes.len() - start);
        &self.bytes[start..start + n]
    }

    /// Drops `n` bytes from the front, keeping the positions of bytes stored past `len`.
    fn advance(&mut self, n: usize) {
        let n = n.min(self.len());
        if n > 0 {
            // Both below the capacity, a u32.
            self.head = self.index(n) as u32;
            self.held -= n as u32;
        }
    }
}

/// Bytes the application queued for sending, from SND.UNA onward: sent-but-unacknowledged first, then unsent.
#[derive(Debug)]
pub struct SendBuffer {
    ring: Ring,
}

impl SendBuffer {
    /// A buffer of `capacity` bytes (nothing allocated until the first byte).
    pub fn new(capacity: usize) -> SendBuffer {
        SendBuffer { ring: Ring::new(capacity) }
    }

    /// Bytes of memory held now.
    pub fn allocated(&self) -> usize {
        self.ring.allocated()
    }

    /// As `new(capacity)` made it: nothing held, nothing allocated.
    pub fn is_pristine(&self, capacity: usize) -> bool {
        self.ring.is_pristine(capacity)
    }

    /// Bytes held (unacknowledged plus unsent).
    pub fn len(&self) -> usize {
        self.ring.len()
    }

    /// True when nothing is held.
    pub fn is_empty(&self) -> bool {
        self.ring.len() == 0
    }

    /// Room for more bytes.
    pub fn free(&self) -> usize {
        self.ring.capacity() - self.ring.len()
    }

    /// The capacity in bytes.
    pub fn capacity(&self) -> usize {
        self.ring.capacity()
    }

    /// Appends as much of `data` as fits; returns how much.
    pub fn enqueue(&mut self, data: &[u8], pool: &mut BufferPool) -> usize {
        let n = data.len().min(self.free());
        let len = self.ring.len();
        self.ring.write_at(len, &data[..n], pool);
        self.ring.grow(n);
        n
    }

    /// Up to `max` contiguous bytes starting `offset` bytes past SND.UNA (shorter where the ring wraps).
    pub fn peek(&self, offset: usize, max: usize) -> &[u8] {
        self.ring.contiguous_at(offset, max)
    }

    /// Drops `n` acknowledged bytes from the front; the memory goes back once nothing is held.
    pub fn consume(&mut self, n: usize, pool: &mut BufferPool) {
        self.ring.advance(n);
        if self.ring.len() == 0 {
            self.ring.release(pool);
        }
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
    /// No ranges: what an idle connection's receive buffer reports without holding one.
    pub const EMPTY: Assembler = Assembler { ranges: [(SeqNumber(0), SeqNumber(0)); MAX_OOO_RANGES], len: 0 };

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

/// What reassembly keeps while out-of-order data is held: which ranges, and the order to report them in SACK
/// blocks.
#[derive(Debug, Default)]
struct OutOfOrder {
    ranges: Assembler,
    reporter: SackReporter,
}

/// Bytes received: in-order bytes the application has not read yet, followed by room where out-of-order segments
/// are stored at their offset until the gap before them fills.
#[derive(Debug)]
pub struct RecvBuffer {
    ring: Ring,
    /// Allocated by the first out-of-order segment, freed when the gap fills (or the ranges are dropped).
    ooo: Option<Box<OutOfOrder>>,
}

impl RecvBuffer {
    /// A buffer of `capacity` bytes (nothing allocated until the first byte).
    pub fn new(capacity: usize) -> RecvBuffer {
        RecvBuffer { ring: Ring::new(capacity), ooo: None }
    }

    /// Bytes of memory held now.
    pub fn allocated(&self) -> usize {
        self.ring.allocated()
    }

    /// As `new(capacity)` made it: nothing held, nothing allocated.
    pub fn is_pristine(&self, capacity: usize) -> bool {
        self.ring.is_pristine(capacity) && self.ooo.is_none()
    }

    /// In-order bytes waiting to be read.
    pub fn len(&self) -> usize {
        self.ring.len()
    }

    /// True when nothing waits to be read.
    pub fn is_empty(&self) -> bool {
        self.ring.len() == 0
    }

    /// The capacity in bytes.
    pub fn capacity(&self) -> usize {
        self.ring.capacity()
    }

    /// Room past the unread bytes: the most the receive window can offer.
    pub fn free(&self) -> usize {
        self.ring.capacity() - self.ring.len()
    }

    /// Whether storing the bytes `[seq, seq + len)` needs no more memory than is allocated now (given the next
    /// expected byte `rcv_nxt`): bytes already received, or bytes that land inside the held span — a gap before
    /// out-of-order data.
    pub fn fits_allocated(&self, rcv_nxt: SeqNumber, seq: SeqNumber, len: usize) -> bool {
        let end = seq + len;
        end.diff(rcv_nxt) <= 0 || self.ring.len() + (end - rcv_nxt) <= self.ring.allocated()
    }

    /// The out-of-order ranges held.
    pub fn out_of_order(&self) -> &Assembler {
        self.ooo.as_ref().map_or(&Assembler::EMPTY, |o| &o.ranges)
    }

    /// True while reassembly state (the ranges and their SACK order) is allocated: only while out-of-order data
    /// is held.
    pub fn holds_reassembly_state(&self) -> bool {
        self.ooo.is_some()
    }

    /// The SACK blocks to report, at most `max` (RFC 2018 §4): the range holding the latest out-of-order segment
    /// first, then the others as [`SackReporter::blocks`] orders them.
    pub fn sack_blocks(&self, max: usize) -> SackBlocks {
        match &self.ooo {
            Some(o) => o.reporter.blocks(o.ranges.ranges(), max),
            None => SackBlocks::default(),
        }
    }

    /// Stores `data`, whose first byte has sequence number `seq`, given that the next expected byte is `rcv_nxt`.
    /// The caller has trimmed `data` to `[rcv_nxt, rcv_nxt + free())`. Returns the new RCV.NXT, or `None` when
    /// the data was out of order and could not be tracked (too many ranges) and was dropped.
    pub fn write(
        &mut self,
        rcv_nxt: SeqNumber,
        seq: SeqNumber,
        data: &[u8],
        pool: &mut BufferPool,
    ) -> Option<SeqNumber> {
        let offset = seq - rcv_nxt;
        debug_assert!(offset + data.len() <= self.free());
        if offset > 0 {
            if data.is_empty() {
                return Some(rcv_nxt);
            }
            let ooo = self.ooo.get_or_insert_with(Box::default);
            // Refused only when all the ranges are taken: the box is in use.
            if !ooo.ranges.insert(seq, seq + data.len()) {
                return None;
            }
            ooo.reporter.received(seq, ooo.ranges.ranges());
            let at = self.ring.len() + offset;
            self.ring.write_at(at, data, pool);
            return Some(rcv_nxt);
        }
        let at = self.ring.len();
        self.ring.write_at(at, data, pool);
        let mut next = rcv_nxt + data.len();
        // Ranges now covered by in-order data, or joined to it, become readable; once none is left the reassembly
        // state goes.
        if let Some(ooo) = self.ooo.as_mut() {
            while let Some(end) = ooo.ranges.pop_front_at(next) {
                next = next.max(end);
            }
            if ooo.ranges.is_empty() {
                self.ooo = None;
            }
        }
        self.ring.grow(next - rcv_nxt);
        Some(next)
    }

    /// Copies out and consumes up to `out.len()` in-order bytes.
    pub fn read(&mut self, out: &mut [u8], pool: &mut BufferPool) -> usize {
        let n = out.len().min(self.ring.len());
        let mut done = 0;
        while done < n {
            let chunk = self.ring.contiguous_at(0, n - done);
            let c = chunk.len();
            out[done..done + c].copy_from_slice(chunk);
            done += c;
            self.ring.advance(c);
        }
        self.release_if_empty(pool);
        n
    }

    /// The longest contiguous run of unread in-order bytes, for reading without a copy.
    pub fn peek(&self) -> &[u8] {
        self.ring.contiguous_at(0, usize::MAX)
    }

    /// Drops `n` in-order bytes after a [`RecvBuffer::peek`].
    pub fn consume(&mut self, n: usize, pool: &mut BufferPool) {
        self.ring.advance(n);
        self.release_if_empty(pool);
    }

    /// Out-of-order bytes live at offsets past `len` relative to the head (advancing moves the head and the
    /// length together, so their place relative to the in-order end holds): the memory goes back only when
    /// neither kind is held.
    fn release_if_empty(&mut self, pool: &mut BufferPool) {
        if self.ring.len() == 0 && self.ooo.is_none() {
            self.ring.release(pool);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(n: u32) -> SeqNumber {
        SeqNumber(n)
    }

    #[test]
    fn a_buffer_refilled_after_it_drained_starts_at_the_size_it_needed_and_follows_use_down() {
        let mut p = BufferPool::none();
        let mut b = SendBuffer::new(1 << 20);
        let chunk = vec![7u8; 100_000];
        // First fill: grows from the smallest size by doubling to 128 KiB; drained, nothing stays allocated.
        assert_eq!(b.enqueue(&chunk, &mut p), chunk.len());
        assert_eq!(b.allocated(), 128 * 1024);
        b.consume(chunk.len(), &mut p);
        assert_eq!(b.allocated(), 0);
        // The next first byte takes 128 KiB at once: no growth, no copies.
        assert_eq!(b.enqueue(b"x", &mut p), 1);
        assert_eq!(b.allocated(), 128 * 1024);
        b.consume(1, &mut p);
        // That allocation never had to grow, so the next one starts at half; small use keeps halving it.
        let sizes: Vec<usize> = (0..9)
            .map(|_| {
                b.enqueue(b"x", &mut p);
                let size = b.allocated();
                b.consume(1, &mut p);
                size
            })
            .collect();
        assert_eq!(sizes, [65536, 32768, 16384, 8192, 4096, 2048, 1024, MIN_ALLOCATION, MIN_ALLOCATION]);
        assert_eq!(b.allocated(), 0, "nothing held while nothing is queued");
    }

    #[test]
    fn emptied_blocks_go_to_the_pool_and_come_back_without_their_old_bytes_showing() {
        let mut p = BufferPool::new(MIN_ALLOCATION);
        let (mut send, mut recv) = (SendBuffer::new(64 * 1024), RecvBuffer::new(64 * 1024));
        for round in 0..3u8 {
            assert_eq!(send.enqueue(&[round; 100], &mut p), 100);
            assert!(p.is_empty(), "round {round}: the send buffer took the kept block (or a new one)");
            send.consume(100, &mut p);
            assert_eq!((send.allocated(), p.len(), p.bytes()), (0, 1, MIN_ALLOCATION), "round {round}");
            // The receive buffer takes the block the send buffer filled, and shows only what it was given.
            let base = s(1000 * u32::from(round));
            assert_eq!(recv.write(base, base, b"xy", &mut p), Some(base + 2));
            assert!(p.is_empty());
            assert_eq!(recv.peek(), b"xy");
            let mut out = [0u8; 8];
            assert_eq!(recv.read(&mut out, &mut p), 2);
            assert_eq!(&out[..2], b"xy");
            assert_eq!((recv.allocated(), p.len()), (0, 1));
        }
        // Past its budget a pool frees what it is given.
        let mut other = SendBuffer::new(64 * 1024);
        other.enqueue(b"z", &mut BufferPool::none());
        other.consume(1, &mut p);
        assert_eq!(p.len(), 1);
    }

    #[test]
    fn blocks_up_to_4_kib_are_kept_by_size_within_the_budget() {
        let mut p = BufferPool::new(8 * 1024);
        let mut b = SendBuffer::new(1 << 20);
        // An HTTP answer's worth: a 1 KiB block, kept when the buffer empties and taken again by the next one.
        b.enqueue(&[1; 700], &mut p);
        assert_eq!(b.allocated(), 1024);
        b.consume(700, &mut p);
        assert_eq!((p.len(), p.bytes()), (1, 1024));
        let mut c = SendBuffer::new(1 << 20);
        c.enqueue(&[2; 1000], &mut p);
        assert_eq!((c.allocated(), p.len()), (1024, 0), "the kept 1 KiB block, not a new one");
        // Growing gives the outgrown block back; 4 KiB is the largest size kept, 8 KiB is freed.
        c.enqueue(&[3; 3000], &mut p);
        assert_eq!((c.allocated(), p.bytes()), (4096, 1024));
        c.enqueue(&[4; 4000], &mut p);
        assert_eq!((c.allocated(), p.bytes()), (8192, 1024 + 4096));
        c.consume(8000, &mut p);
        assert_eq!((c.allocated(), p.bytes()), (0, 1024 + 4096), "8 KiB is not kept");
        // Nothing past the budget: 8 KiB now held, one more 4 KiB block would pass it.
        let mut d = SendBuffer::new(1 << 20);
        d.enqueue(&[5; 4000], &mut BufferPool::none());
        d.consume(4000, &mut p);
        let mut e = SendBuffer::new(1 << 20);
        e.enqueue(&[6; 2000], &mut BufferPool::none());
        e.consume(2000, &mut p);
        assert_eq!(p.bytes(), 1024 + 4096 + 2048, "the 2 KiB block fit; the second 4 KiB did not");
    }

    #[test]
    fn send_buffer_wraps_and_peeks_contiguous_runs() {
        let mut p = BufferPool::none();
        let mut b = SendBuffer::new(8);
        assert_eq!(b.enqueue(b"abcdef", &mut p), 6);
        b.consume(4, &mut p);
        assert_eq!(b.enqueue(b"ghijklmn", &mut p), 6);
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
        let mut p = BufferPool::none();
        let mut r = RecvBuffer::new(16);
        let base = s(u32::MAX - 3);
        assert!(!r.holds_reassembly_state());
        assert_eq!(r.write(base, base + 4, b"efgh", &mut p), Some(base));
        assert!(r.holds_reassembly_state());
        assert_eq!(r.len(), 0);
        assert_eq!(r.write(base, base + 10, b"kl", &mut p), Some(base));
        let next = r.write(base, base, b"abcd", &mut p).unwrap();
        assert_eq!(next, base + 8);
        let mut out = [0u8; 16];
        assert_eq!(r.read(&mut out[..3], &mut p), 3);
        assert_eq!(&out[..3], b"abc");
        let next = r.write(next, next, b"ij", &mut p).unwrap();
        assert_eq!(next, base + 12);
        let n = r.read(&mut out, &mut p);
        assert_eq!(&out[..n], b"defghijkl");
        assert!(!r.holds_reassembly_state(), "the gap closed: no ranges to keep");
    }

    #[test]
    fn memory_is_taken_on_the_first_byte_grows_with_the_data_and_goes_back_when_empty() {
        let mut p = BufferPool::none();
        let mut b = SendBuffer::new(256 * 1024);
        assert_eq!(b.allocated(), 0);
        b.enqueue(&[1; 64], &mut p);
        assert_eq!(b.allocated(), MIN_ALLOCATION);
        b.consume(60, &mut p);
        // Wrapped data survives growth: head near the end of the small block, then a big write.
        b.enqueue(&[2; 500], &mut p);
        b.enqueue(&(0..=255).cycle().take(5000).collect::<Vec<u8>>(), &mut p);
        assert_eq!(b.allocated(), 8192);
        assert_eq!(b.peek(0, 4), [1, 1, 1, 1]);
        assert_eq!(b.peek(4, 500), [2; 500]);
        assert_eq!(b.peek(504, 3), [0, 1, 2]);
        b.consume(b.len(), &mut p);
        assert_eq!(b.allocated(), 0);

        let mut r = RecvBuffer::new(256 * 1024);
        let base = s(1000);
        // Out-of-order data alone holds memory; reading the in-order part keeps it while a gap remains.
        assert_eq!(r.write(base, base + 100, b"later", &mut p), Some(base));
        assert_eq!(r.allocated(), MIN_ALLOCATION);
        let next = r.write(base, base, &[7; 50], &mut p).unwrap();
        assert_eq!(next, base + 50);
        let mut out = [0u8; 64];
        assert_eq!(r.read(&mut out, &mut p), 50);
        assert_eq!(r.allocated(), MIN_ALLOCATION, "the out-of-order bytes are still held");
        let next = r.write(next, next, &[8; 50], &mut p).unwrap();
        assert_eq!(next, base + 105);
        let mut all = vec![0u8; 64];
        assert_eq!(r.read(&mut all, &mut p), 55);
        assert_eq!(&all[50..55], b"later");
        assert_eq!(r.allocated(), 0);
    }

    /// Random enqueues, partial acknowledgements, in-order and out-of-order arrivals and reads, checked against a
    /// plain model, across every allocation size.
    #[test]
    fn buffers_match_a_model_through_growth_wrap_and_release() {
        // A pool both buffers share: blocks come back dirty from one and go to the other.
        let mut p = BufferPool::new(8 * 1024);
        use rand::{Rng, SeedableRng};
        use std::collections::VecDeque;
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(9);
        let limit = 20_000;
        let (mut b, mut model) = (SendBuffer::new(limit), VecDeque::<u8>::new());
        let mut counter = 0u8;
        for _ in 0..20_000 {
            if rng.gen_bool(0.5) {
                let n = rng.gen_range(0..3000);
                let data: Vec<u8> = (0..n)
                    .map(|_| {
                        counter = counter.wrapping_add(1);
                        counter
                    })
                    .collect();
                let took = b.enqueue(&data, &mut p);
                model.extend(&data[..took]);
            } else {
                let n = rng.gen_range(0..=model.len());
                b.consume(n, &mut p);
                model.drain(..n);
            }
            assert_eq!(b.len(), model.len());
            let off = rng.gen_range(0..=model.len());
            let run = b.peek(off, usize::MAX);
            assert!(run.iter().eq(model.range(off..off + run.len())));
            assert!(b.allocated() <= limit && (model.is_empty() == (b.allocated() == 0)));
        }

        // The receiver: a stream cut into segments that arrive in a shuffled window, read in random chunks.
        let stream: Vec<u8> = (0..400_000u32).map(|i| (i % 253) as u8).collect();
        let mut r = RecvBuffer::new(limit);
        let (mut rcv_nxt, mut read) = (s(u32::MAX - 1000), Vec::new());
        let start = rcv_nxt;
        while read.len() < stream.len() {
            let delivered = rcv_nxt - start;
            let window = r.free().min(stream.len() - delivered);
            if window > 0 && rng.gen_bool(0.7) {
                let off = rng.gen_range(0..window);
                let len = rng.gen_range(1..=(window - off).min(1500));
                let from = delivered + off;
                if let Some(next) = r.write(rcv_nxt, rcv_nxt + off, &stream[from..from + len], &mut p) {
                    rcv_nxt = next;
                }
            } else {
                let mut out = vec![0u8; rng.gen_range(1..5000)];
                let n = r.read(&mut out, &mut p);
                read.extend_from_slice(&out[..n]);
            }
            assert!(r.allocated() <= limit);
            if r.is_empty() && r.out_of_order().is_empty() {
                assert_eq!(r.allocated(), 0);
            }
        }
        assert!(read == stream, "every byte once, in order");
    }
}
