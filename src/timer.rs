//! The hierarchical timing wheel that drives every connection timer of one core.
//!
//! One [`TimerWheel`] holds the retransmission, delayed-ACK, persist, keepalive and TIME_WAIT timers of all the
//! connections a core owns. The value stored with each timer is generic; the engine stores
//! `(connection slot, timer kind)`.
//!
//! # Time
//!
//! Time is whole milliseconds in a `u64`, passed in by the caller (`Instant::total_millis()`); the wheel never reads
//! a clock. The wheel keeps its own notion of the present, [`TimerWheel::now_ms`]: the latest time it has been
//! advanced to. That time never goes backwards: [`TimerWheel::advance`] and [`TimerWheel::poll_expired`] with a
//! `now_ms` earlier than the wheel's do nothing.
//!
//! # Layout
//!
//! Entries live in a slab of `capacity` entries allocated by [`TimerWheel::new`]; a free list threads the unused
//! ones, so nothing is allocated afterwards. Each pending entry sits in exactly one slot list, an intrusive doubly
//! linked list through slab indices, so scheduling and cancelling are O(1).
//!
//! There are 11 levels of 64 slots; level `L` resolves bits `6L..6L+6` of a deadline. An entry is filed at the level
//! of the highest 6-bit group in which its deadline differs from the wheel's time, in the slot named by that group of
//! its deadline. Level 0 slots therefore hold entries due at one exact millisecond; a level `L` slot holds entries
//! due somewhere in a block of `64^L` milliseconds. When the wheel's time reaches the start of a block, the block's
//! slot is cascaded: its entries are filed again, at lower levels. Every entry is filed at most 11 times in its life.
//!
//! 11 levels × 6 bits = 66 bits, so the span covers every `u64` deadline, up to and including `u64::MAX`: there is
//! no "beyond the span", no clamping and no re-cascading of far entries. (The 2-hour keepalive, 7,200,000 ms, sits
//! at level 4 at most: level 3 unless its deadline crosses a multiple of 2^24 ms.)
//!
//! Each level keeps a 64-bit bitmap of occupied slots. Finding the next slot to process is a `trailing_zeros` per
//! level, so advancing over an idle gap of hours, or years, costs a few bitmap reads, not a loop over milliseconds.
//!
//! # Guarantees
//!
//! - An entry never fires early: it fires only from an advance to a `now_ms` at or after its deadline.
//! - Within one call to [`TimerWheel::advance`], entries fire in deadline order (entries due at the same millisecond
//!   in any order). [`TimerWheel::poll_expired`] always returns a pending entry with the earliest deadline.
//! - An advance by any jump, however large, fires everything due and keeps everything else.
//! - A deadline at or before [`TimerWheel::now_ms`] fires on the next advance, ahead of everything not yet due and
//!   in deadline order with other such entries.
//!
//! # Firing and re-entrancy
//!
//! [`TimerWheel::advance`] hands each expired value to a callback by value. The callback cannot reach the wheel
//! (it is mutably borrowed), so timers cannot be scheduled from inside it: collect what to schedule and do it after
//! `advance` returns, or drain with [`TimerWheel::poll_expired`], which returns one expired entry at a time and lets
//! the caller schedule, cancel and reschedule between calls. A timer scheduled during such a drain with a deadline
//! at or before the drain's `now_ms` is returned by the same drain.
//!
//! # Next deadline
//!
//! [`TimerWheel::next_deadline`] is exact when the earliest entry is due within the current 64 ms block, and
//! otherwise a lower bound: the start of the block that holds it. The engine sleeps until that time and advances;
//! the advance cascades the block and `next_deadline` gets finer. Reaching an entry's exact deadline this way takes
//! at most one extra wake-up per level the entry is filed at.

use core::fmt;
use core::num::NonZeroU32;

/// Bits of a deadline resolved by one level.
const SLOT_BITS: u32 = 6;
/// Slots per level.
const SLOTS: usize = 1 << SLOT_BITS;
/// Mask of one level's slot index.
const SLOT_MASK: u64 = (SLOTS as u64) - 1;
/// Levels: enough that `LEVELS * SLOT_BITS >= 64`, so every `u64` deadline has a slot.
const LEVELS: usize = 11;
const _: () = assert!(LEVELS as u32 * SLOT_BITS >= u64::BITS);

/// The null slab index.
const NIL: u32 = u32::MAX;
/// The `slot` of an entry on the free list.
const FREE: u16 = u16::MAX;

/// Names one scheduled timer, to cancel, reschedule or inspect it.
///
/// A handle goes stale when its timer fires or is cancelled; a stale handle is refused by every method even after
/// its slab entry is reused, because the entry's generation has moved on. (Generations are 32-bit and wrap: a handle
/// kept across four billion reuses of the same entry could alias. Nothing in the engine keeps one that long.)
/// Generations are never zero, so an `Option<TimerHandle>` takes no more room than a handle: the engine keeps five
/// per connection.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct TimerHandle {
    index: u32,
    generation: NonZeroU32,
}

/// [`TimerWheel::schedule`] failed: all `capacity` entries are pending.
#[derive(Clone, Copy, PartialEq, Eq, Debug, thiserror::Error)]
#[error("timer wheel full: all {capacity} entries are pending")]
pub struct WheelFull {
    /// The wheel's capacity.
    pub capacity: usize,
}

/// A timer that expired, as returned by [`TimerWheel::poll_expired`].
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Expired<T> {
    /// The deadline it was scheduled for, in milliseconds.
    pub deadline_ms: u64,
    /// The value it was scheduled with.
    pub value: T,
}

/// One slab entry: a pending timer, or a link in the free list.
struct Entry<T> {
    value: Option<T>,
    deadline_ms: u64,
    /// Previous entry in the slot list.
    prev: u32,
    /// Next entry in the slot list, or in the free list.
    next: u32,
    /// Bumped each time the entry is freed, so that old handles go stale; never zero (see [`TimerHandle`]).
    generation: u32,
    /// `level * SLOTS + slot` of the list the entry is on, or [`FREE`].
    slot: u16,
}

/// A hierarchical timing wheel with millisecond resolution and a fixed capacity. See the [module docs](self).
pub struct TimerWheel<T> {
    entries: Vec<Entry<T>>,
    capacity: usize,
    /// Head of the free list (entries below `entries.len()` that are free).
    free_head: u32,
    len: usize,
    /// The wheel's time; every pending entry is filed relative to it.
    now_ms: u64,
    /// Per level, bit `s` is set when slot `s` is non-empty.
    occupied: [u64; LEVELS],
    heads: [[u32; SLOTS]; LEVELS],
    tails: [[u32; SLOTS]; LEVELS],
    /// At most the earliest deadline among pending entries due before `now_ms` (which all sit in the level 0 slot
    /// of `now_ms`); `u64::MAX` when there are none.
    overdue_floor_ms: u64,
    /// The level 0 slot of `now_ms` may not be in deadline order (an overdue entry went into its middle).
    current_unsorted: bool,
}

impl<T> TimerWheel<T> {
    /// A wheel whose time is `now_ms`, with room for `capacity` pending timers. All entry storage is allocated here.
    ///
    /// # Panics
    ///
    /// If `capacity` is `u32::MAX` or more.
    pub fn new(capacity: usize, now_ms: u64) -> TimerWheel<T> {
        assert!(capacity < NIL as usize, "timer wheel capacity {capacity} does not fit 32-bit indices");
        TimerWheel {
            entries: Vec::with_capacity(capacity),
            capacity,
            free_head: NIL,
            len: 0,
            now_ms,
            occupied: [0; LEVELS],
            heads: [[NIL; SLOTS]; LEVELS],
            tails: [[NIL; SLOTS]; LEVELS],
            overdue_floor_ms: u64::MAX,
            current_unsorted: false,
        }
    }

    /// How many timers are pending.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether no timer is pending.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// How many timers can be pending at once.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// The wheel's time: the latest `now_ms` it was advanced to. While [`TimerWheel::poll_expired`] drains, it is
    /// the deadline being drained.
    pub fn now_ms(&self) -> u64 {
        self.now_ms
    }

    /// Schedules `value` to fire at `deadline_ms`. O(1), no allocation.
    ///
    /// A deadline at or before [`TimerWheel::now_ms`] fires on the next advance.
    pub fn schedule(&mut self, deadline_ms: u64, value: T) -> Result<TimerHandle, WheelFull> {
        let index = if self.free_head != NIL {
            let index = self.free_head;
            self.free_head = self.entries[index as usize].next;
            index
        } else if self.entries.len() < self.capacity {
            // Within the capacity reserved by `new`: this push does not allocate.
            self.entries.push(Entry { value: None, deadline_ms: 0, prev: NIL, next: NIL, generation: 1, slot: FREE });
            (self.entries.len() - 1) as u32
        } else {
            return Err(WheelFull { capacity: self.capacity });
        };
        let entry = &mut self.entries[index as usize];
        entry.value = Some(value);
        entry.deadline_ms = deadline_ms;
        let generation = NonZeroU32::new(entry.generation).unwrap_or(NonZeroU32::MIN);
        self.len += 1;
        self.link(index);
        Ok(TimerHandle { index, generation })
    }

    /// Cancels a pending timer and returns its value; `None` when the handle is stale (the timer already fired or
    /// was cancelled). O(1).
    pub fn cancel(&mut self, handle: TimerHandle) -> Option<T> {
        let index = self.live_index(handle)?;
        self.unlink(index);
        Some(self.release(index).value)
    }

    /// Moves a pending timer to a new deadline, keeping its handle valid; `false` when the handle is stale. O(1).
    pub fn reschedule(&mut self, handle: TimerHandle, deadline_ms: u64) -> bool {
        let Some(index) = self.live_index(handle) else {
            return false;
        };
        self.unlink(index);
        self.entries[index as usize].deadline_ms = deadline_ms;
        self.link(index);
        true
    }

    /// The deadline of a pending timer; `None` when the handle is stale.
    pub fn deadline(&self, handle: TimerHandle) -> Option<u64> {
        let index = self.live_index(handle)?;
        Some(self.entries[index as usize].deadline_ms)
    }

    /// When to advance next: `None` when nothing is pending, else a time never later than the earliest pending
    /// deadline. Exact when that deadline is within the current 64 ms block, else the start of the block holding
    /// it (see the [module docs](self#next-deadline)).
    pub fn next_deadline(&self) -> Option<u64> {
        let (_, _, start_ms) = self.next_expiration()?;
        Some(start_ms.min(self.overdue_floor_ms))
    }

    /// Advances the wheel's time to `now_ms` and fires every timer due at or before it, in deadline order, handing
    /// `fire` each value with its deadline. Returns how many fired.
    ///
    /// `fire` cannot schedule into the wheel (see the [module docs](self#firing-and-re-entrancy)); use
    /// [`TimerWheel::poll_expired`] for that. A `now_ms` earlier than [`TimerWheel::now_ms`] fires nothing.
    pub fn advance(&mut self, now_ms: u64, mut fire: impl FnMut(T, u64)) -> usize {
        let mut fired = 0;
        while let Some(expired) = self.poll_expired(now_ms) {
            fire(expired.value, expired.deadline_ms);
            fired += 1;
        }
        fired
    }

    /// Returns one expired timer with the earliest deadline, if any is due at or before `now_ms`, advancing the
    /// wheel's time towards `now_ms` as far as that entry's deadline; when none is due, advances the wheel's time to
    /// `now_ms` and returns `None`. Between calls the caller may schedule, cancel and reschedule freely.
    ///
    /// A `now_ms` earlier than [`TimerWheel::now_ms`] returns `None` and changes nothing.
    pub fn poll_expired(&mut self, now_ms: u64) -> Option<Expired<T>> {
        if now_ms < self.now_ms {
            return None;
        }
        loop {
            let Some((level, slot, start_ms)) = self.next_expiration().filter(|&(_, _, start)| start <= now_ms) else {
                self.move_to(now_ms);
                return None;
            };
            self.move_to(start_ms);
            if level > 0 {
                self.cascade(level, slot);
                continue;
            }
            if self.current_unsorted {
                self.sort_current_slot();
            }
            let index = self.heads[0][slot];
            self.unlink(index);
            let expired = self.release(index);
            debug_assert!(expired.deadline_ms <= now_ms);
            return Some(expired);
        }
    }

    /// The index of the entry `handle` names, if it is pending.
    fn live_index(&self, handle: TimerHandle) -> Option<u32> {
        let entry = self.entries.get(handle.index as usize)?;
        (entry.generation == handle.generation.get() && entry.slot != FREE).then_some(handle.index)
    }

    /// The lowest occupied slot and the time its block starts. Levels below it are empty, and every entry on other
    /// slots is due after that block, so this holds the earliest pending entry.
    fn next_expiration(&self) -> Option<(usize, usize, u64)> {
        let level = self.occupied.iter().position(|&bits| bits != 0)?;
        let shift = level as u32 * SLOT_BITS;
        let slot = self.occupied[level].trailing_zeros();
        let current = ((self.now_ms >> shift) & SLOT_MASK) as u32;
        // Entries are filed at or after the wheel's time: at level 0 in the current slot or later, above it
        // strictly later, never wrapping around.
        debug_assert!(slot > current || (level == 0 && slot == current));
        let block_shift = shift + SLOT_BITS;
        let block_start = if block_shift >= u64::BITS { 0 } else { (self.now_ms >> block_shift) << block_shift };
        Some((level, slot as usize, block_start | (u64::from(slot) << shift)))
    }

    /// Sets the wheel's time. Called only with a time at or before the next expiration, so every filed entry stays
    /// correctly filed.
    fn move_to(&mut self, now_ms: u64) {
        if now_ms != self.now_ms {
            debug_assert!(now_ms > self.now_ms);
            // The old current slot is empty (it would have been the next expiration), so nothing is overdue.
            self.now_ms = now_ms;
            self.overdue_floor_ms = u64::MAX;
            self.current_unsorted = false;
        }
    }

    /// Files every entry of a slot again, relative to the wheel's time, which is the start of the slot's block.
    fn cascade(&mut self, level: usize, slot: usize) {
        let mut index = self.heads[level][slot];
        self.heads[level][slot] = NIL;
        self.tails[level][slot] = NIL;
        self.occupied[level] &= !(1 << slot);
        while index != NIL {
            let next = self.entries[index as usize].next;
            self.link(index);
            index = next;
        }
    }

    /// Files an entry (not on any list) by its deadline.
    fn link(&mut self, index: u32) {
        let deadline_ms = self.entries[index as usize].deadline_ms;
        let when_ms = deadline_ms.max(self.now_ms);
        let differing = (self.now_ms ^ when_ms) | SLOT_MASK;
        let level = ((u64::BITS - 1 - differing.leading_zeros()) / SLOT_BITS) as usize;
        let slot = ((when_ms >> (level as u32 * SLOT_BITS)) & SLOT_MASK) as usize;

        let head = self.heads[level][slot];
        let mut at_front = false;
        if when_ms == self.now_ms {
            // The current slot: it holds overdue entries (earlier deadlines) and entries due now. Keep it sorted
            // when an end will do; otherwise sort it once before it fires.
            if deadline_ms < self.now_ms {
                self.overdue_floor_ms = self.overdue_floor_ms.min(deadline_ms);
            }
            if head != NIL {
                let tail = self.tails[level][slot];
                if deadline_ms < self.entries[tail as usize].deadline_ms {
                    at_front = deadline_ms <= self.entries[head as usize].deadline_ms;
                    self.current_unsorted |= !at_front;
                }
            }
        }

        let entry = &mut self.entries[index as usize];
        entry.slot = (level * SLOTS + slot) as u16;
        if head == NIL {
            entry.prev = NIL;
            entry.next = NIL;
            self.heads[level][slot] = index;
            self.tails[level][slot] = index;
            self.occupied[level] |= 1 << slot;
        } else if at_front {
            entry.prev = NIL;
            entry.next = head;
            self.entries[head as usize].prev = index;
            self.heads[level][slot] = index;
        } else {
            let tail = self.tails[level][slot];
            entry.prev = tail;
            entry.next = NIL;
            self.entries[tail as usize].next = index;
            self.tails[level][slot] = index;
        }
    }

    /// Takes a pending entry off its slot list.
    fn unlink(&mut self, index: u32) {
        let entry = &self.entries[index as usize];
        let (prev, next) = (entry.prev, entry.next);
        let level = entry.slot as usize / SLOTS;
        let slot = entry.slot as usize % SLOTS;
        if prev == NIL {
            self.heads[level][slot] = next;
        } else {
            self.entries[prev as usize].next = next;
        }
        if next == NIL {
            self.tails[level][slot] = prev;
        } else {
            self.entries[next as usize].prev = prev;
        }
        if self.heads[level][slot] == NIL {
            self.occupied[level] &= !(1 << slot);
            if level == 0 && slot as u64 == self.now_ms & SLOT_MASK {
                self.overdue_floor_ms = u64::MAX;
                self.current_unsorted = false;
            }
        }
    }

    /// Returns an unlinked entry to the free list, staling its handles, and hands back what it held.
    fn release(&mut self, index: u32) -> Expired<T> {
        let entry = &mut self.entries[index as usize];
        let value = entry.value.take().expect("a pending timer holds a value");
        entry.generation = entry.generation.checked_add(1).unwrap_or(1);
        entry.slot = FREE;
        entry.next = self.free_head;
        self.free_head = index;
        self.len -= 1;
        Expired { deadline_ms: entry.deadline_ms, value }
    }

    /// Sorts the current level 0 slot by deadline: a bottom-up merge sort over the `next` links (stable, no
    /// allocation), then the `prev` links and tail are rebuilt.
    fn sort_current_slot(&mut self) {
        let slot = (self.now_ms & SLOT_MASK) as usize;
        let mut list = self.heads[0][slot];
        let mut run = 1usize;
        loop {
            let mut left = list;
            let (mut head, mut tail) = (NIL, NIL);
            let mut merges = 0;
            while left != NIL {
                merges += 1;
                let mut right = left;
                let mut left_len = 0;
                while left_len < run && right != NIL {
                    left_len += 1;
                    right = self.entries[right as usize].next;
                }
                let mut right_len = run;
                while left_len > 0 || (right_len > 0 && right != NIL) {
                    let take_left = right_len == 0
                        || right == NIL
                        || (left_len > 0
                            && self.entries[left as usize].deadline_ms <= self.entries[right as usize].deadline_ms);
                    let taken = if take_left {
                        let taken = left;
                        left = self.entries[left as usize].next;
                        left_len -= 1;
                        taken
                    } else {
                        let taken = right;
                        right = self.entries[right as usize].next;
                        right_len -= 1;
                        taken
                    };
                    if tail == NIL {
                        head = taken;
                    } else {
                        self.entries[tail as usize].next = taken;
                    }
                    tail = taken;
                }
                left = right;
            }
            if tail != NIL {
                self.entries[tail as usize].next = NIL;
            }
            list = head;
            if merges <= 1 {
                break;
            }
            run *= 2;
        }
        let mut prev = NIL;
        let mut index = list;
        while index != NIL {
            self.entries[index as usize].prev = prev;
            prev = index;
            index = self.entries[index as usize].next;
        }
        self.heads[0][slot] = list;
        self.tails[0][slot] = prev;
        self.current_unsorted = false;
    }
}

impl<T> fmt::Debug for TimerWheel<T> {
    /// A summary: sizes, time, and occupied slots per level (values are not printed).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TimerWheel")
            .field("len", &self.len)
            .field("capacity", &self.capacity)
            .field("now_ms", &self.now_ms)
            .field("occupied_slots_per_level", &self.occupied.map(u64::count_ones))
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    /// A small deterministic generator for test data (splitmix64).
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        }

        fn below(&mut self, bound: u64) -> u64 {
            self.next() % bound
        }
    }

    /// Advances and collects `(value, deadline)` in firing order, checking that nothing fires early or out of order.
    fn drain<T>(wheel: &mut TimerWheel<T>, now_ms: u64) -> Vec<(T, u64)> {
        let mut fired = Vec::new();
        wheel.advance(now_ms, |value, deadline_ms| {
            assert!(deadline_ms <= now_ms, "fired early: deadline {deadline_ms} at {now_ms}");
            fired.push((value, deadline_ms));
        });
        assert!(fired.windows(2).all(|w| w[0].1 <= w[1].1), "fired out of deadline order");
        fired
    }

    #[test]
    fn schedule_cancel_and_expire() {
        let mut wheel = TimerWheel::new(8, 1000);
        assert!(wheel.is_empty());
        let a = wheel.schedule(1010, 'a').unwrap();
        let b = wheel.schedule(1005, 'b').unwrap();
        let c = wheel.schedule(1200, 'c').unwrap();
        assert_eq!(wheel.len(), 3);
        assert_eq!(wheel.deadline(a), Some(1010));
        assert_eq!(wheel.next_deadline(), Some(1005));

        assert_eq!(wheel.cancel(c), Some('c'));
        assert_eq!(wheel.len(), 2);
        assert!(drain(&mut wheel, 1004).is_empty());
        assert_eq!(wheel.now_ms(), 1004);
        assert_eq!(drain(&mut wheel, 1005), vec![('b', 1005)]);
        assert_eq!(drain(&mut wheel, 2000), vec![('a', 1010)]);
        assert!(wheel.is_empty());
        assert_eq!(wheel.next_deadline(), None);
        assert_eq!(wheel.deadline(a), None);
        assert_eq!(wheel.deadline(b), None);
    }

    #[test]
    fn stale_handle_cancel_returns_none() {
        let mut wheel = TimerWheel::new(1, 0);
        let fired = wheel.schedule(5, 1).unwrap();
        drain(&mut wheel, 5);
        assert_eq!(wheel.cancel(fired), None);

        let cancelled = wheel.schedule(10, 2).unwrap();
        assert_eq!(wheel.cancel(cancelled), Some(2));
        assert_eq!(wheel.cancel(cancelled), None);

        // The one slab entry is reused by a new timer; the old handles stay stale.
        let live = wheel.schedule(20, 3).unwrap();
        assert_eq!(live.index, fired.index);
        assert_eq!(wheel.cancel(fired), None);
        assert_eq!(wheel.cancel(cancelled), None);
        assert!(!wheel.reschedule(cancelled, 30));
        assert_eq!(wheel.deadline(live), Some(20));
        assert_eq!(wheel.cancel(live), Some(3));
    }

    #[test]
    fn full_wheel_returns_wheel_full() {
        let mut wheel = TimerWheel::new(3, 0);
        let handles: Vec<_> = (0..3).map(|i| wheel.schedule(100 + i, i).unwrap()).collect();
        assert_eq!(wheel.schedule(50, 9), Err(WheelFull { capacity: 3 }));
        wheel.cancel(handles[1]).unwrap();
        assert!(wheel.schedule(50, 9).is_ok());
        assert_eq!(wheel.schedule(50, 10), Err(WheelFull { capacity: 3 }));

        let mut empty = TimerWheel::new(0, 0);
        assert_eq!(empty.schedule(1, ()), Err(WheelFull { capacity: 0 }));
    }

    #[test]
    fn never_fires_before_its_deadline() {
        // Deadlines at every level boundary, approached one millisecond short, then reached.
        let mut wheel = TimerWheel::new(64, 0);
        for shift in (0..64).step_by(3) {
            let deadline_ms = 1u64 << shift;
            wheel.schedule(deadline_ms, deadline_ms).unwrap();
        }
        for shift in (0..64).step_by(3) {
            let deadline_ms = 1u64 << shift;
            assert!(drain(&mut wheel, deadline_ms - 1).is_empty());
            assert_eq!(drain(&mut wheel, deadline_ms), vec![(deadline_ms, deadline_ms)]);
        }
        assert!(wheel.is_empty());
    }

    #[test]
    fn past_deadlines_fire_on_next_advance_in_deadline_order() {
        let mut wheel = TimerWheel::new(16, 0);
        drain(&mut wheel, 10_000);
        wheel.schedule(10_000, "now").unwrap();
        wheel.schedule(10_001, "later").unwrap();
        wheel.schedule(9_000, "9000").unwrap();
        wheel.schedule(5, "5").unwrap();
        wheel.schedule(9_999, "9999").unwrap();
        wheel.schedule(7_000, "7000").unwrap();
        assert_eq!(wheel.next_deadline(), Some(5));
        let fired = drain(&mut wheel, 10_000);
        let names: Vec<_> = fired.iter().map(|&(name, _)| name).collect();
        assert_eq!(names, ["5", "7000", "9000", "9999", "now"]);
        assert_eq!(wheel.next_deadline(), Some(10_001));
    }

    #[test]
    fn time_does_not_go_backwards() {
        let mut wheel = TimerWheel::new(4, 100);
        wheel.schedule(50, ()).unwrap();
        assert!(drain(&mut wheel, 40).is_empty());
        assert_eq!(wheel.now_ms(), 100);
        assert_eq!(drain(&mut wheel, 100).len(), 1);
    }

    #[test]
    fn fires_in_deadline_order_across_levels() {
        let mut rng = Rng(7);
        let mut wheel = TimerWheel::new(20_000, 0);
        let mut expected = Vec::new();
        for i in 0..20_000u32 {
            // Spread over levels 0..=5: up to 2^36 ms.
            let deadline_ms = rng.below(1 << (6 * (i % 6) + 6));
            wheel.schedule(deadline_ms, i).unwrap();
            expected.push((deadline_ms, i));
        }
        expected.sort_unstable();
        let mut fired = Vec::new();
        let mut now_ms = 0;
        while !wheel.is_empty() {
            // Wake up at the wheel's own hint, sometimes a little later.
            now_ms = wheel.next_deadline().unwrap().max(now_ms) + rng.below(3);
            fired.extend(drain(&mut wheel, now_ms).into_iter().map(|(i, d)| (d, i)));
        }
        assert!(fired.windows(2).all(|w| w[0].0 <= w[1].0));
        fired.sort_unstable();
        assert_eq!(fired, expected);
    }

    #[test]
    fn big_jump_fires_everything_due_and_keeps_the_rest() {
        let two_hours_ms = 7_200_000;
        let mut rng = Rng(11);
        let mut wheel = TimerWheel::new(10_000, 123);
        let mut due = Vec::new();
        for i in 0..10_000u64 {
            let deadline_ms = 123 + rng.below(4 * two_hours_ms);
            wheel.schedule(deadline_ms, i).unwrap();
            if deadline_ms <= 123 + two_hours_ms {
                due.push((deadline_ms, i));
            }
        }
        due.sort_unstable();
        let mut fired: Vec<_> = drain(&mut wheel, 123 + two_hours_ms).into_iter().map(|(i, d)| (d, i)).collect();
        fired.sort_unstable();
        assert_eq!(fired, due);
        assert_eq!(wheel.len(), 10_000 - due.len());
        assert!(wheel.next_deadline().unwrap() > 123 + two_hours_ms);
        assert_eq!(drain(&mut wheel, u64::MAX).len(), 10_000 - due.len());
    }

    #[test]
    fn far_deadlines_up_to_u64_max() {
        // The span is all of u64: the farthest deadlines wait and fire like any other.
        let mut wheel = TimerWheel::new(8, 0);
        wheel.schedule(u64::MAX, "max").unwrap();
        wheel.schedule(u64::MAX - 1, "max-1").unwrap();
        wheel.schedule(1 << 63, "2^63").unwrap();
        wheel.schedule(7_200_000, "keepalive").unwrap();
        assert_eq!(drain(&mut wheel, 7_200_000), vec![("keepalive", 7_200_000)]);
        assert!(drain(&mut wheel, (1 << 63) - 1).is_empty());
        assert_eq!(drain(&mut wheel, 1 << 63), vec![("2^63", 1 << 63)]);
        assert!(drain(&mut wheel, u64::MAX - 2).is_empty());
        assert_eq!(wheel.len(), 2);
        assert_eq!(drain(&mut wheel, u64::MAX), vec![("max-1", u64::MAX - 1), ("max", u64::MAX)]);
        // At the end of time, new timers are all due.
        wheel.schedule(u64::MAX, "again").unwrap();
        wheel.schedule(3, "past").unwrap();
        assert_eq!(drain(&mut wheel, u64::MAX), vec![("past", 3), ("again", u64::MAX)]);
    }

    #[test]
    fn next_deadline_is_exact_nearby_and_a_lower_bound_far_away() {
        let mut wheel = TimerWheel::new(4, 0);
        wheel.schedule(40, ()).unwrap();
        assert_eq!(wheel.next_deadline(), Some(40));
        drain(&mut wheel, 40);

        // The 2-hour keepalive: each wake-up at the hint cascades a level, never passing the deadline.
        let keepalive_ms = 40 + 7_200_000;
        wheel.schedule(keepalive_ms, ()).unwrap();
        let mut wakeups = 0;
        loop {
            let hint_ms = wheel.next_deadline().unwrap();
            assert!(hint_ms <= keepalive_ms);
            wakeups += 1;
            if drain(&mut wheel, hint_ms).len() == 1 {
                assert_eq!(hint_ms, keepalive_ms);
                break;
            }
        }
        assert!(wakeups <= 4, "{wakeups} wake-ups");
        assert_eq!(wheel.next_deadline(), None);
    }

    #[test]
    fn reschedule_keeps_the_handle() {
        let mut wheel = TimerWheel::new(4, 0);
        let rto = wheel.schedule(200, "rto").unwrap();
        wheel.schedule(300, "ack").unwrap();
        assert!(wheel.reschedule(rto, 400));
        assert_eq!(wheel.deadline(rto), Some(400));
        assert_eq!(drain(&mut wheel, 350), vec![("ack", 300)]);
        assert!(wheel.reschedule(rto, 360));
        assert_eq!(drain(&mut wheel, 1000), vec![("rto", 360)]);
        assert!(!wheel.reschedule(rto, 2000));
    }

    #[test]
    fn poll_expired_lets_the_caller_schedule_while_draining() {
        let mut wheel = TimerWheel::new(8, 0);
        wheel.schedule(10, 10).unwrap();
        wheel.schedule(30, 30).unwrap();
        let mut fired = Vec::new();
        while let Some(expired) = wheel.poll_expired(50) {
            fired.push(expired.deadline_ms);
            // A timer that re-arms itself 15 ms later, twice.
            if expired.value < 40 {
                let deadline_ms = expired.deadline_ms + 15;
                wheel.schedule(deadline_ms, expired.value + 15).unwrap();
            }
        }
        assert_eq!(fired, [10, 25, 30, 40, 45]);
        assert_eq!(wheel.now_ms(), 50);
        let next = wheel.schedule(60, 0).unwrap();
        assert_eq!(wheel.deadline(next), Some(60));
    }

    #[test]
    fn one_million_timers_scheduled_and_drained() {
        const N: u32 = 1_000_000;
        let mut rng = Rng(3);
        let mut wheel = TimerWheel::new(N as usize, 0);
        for i in 0..N {
            wheel.schedule(1 + rng.below(600_000), i).unwrap();
        }
        assert_eq!(wheel.len(), N as usize);
        assert!(wheel.schedule(1, N).is_err());
        let mut seen = vec![false; N as usize];
        let mut last_ms = 0;
        let mut count = 0;
        for now_ms in (0..=600_000).step_by(997).chain([600_000]) {
            count += wheel.advance(now_ms, |i, deadline_ms| {
                assert!(deadline_ms >= last_ms && deadline_ms <= now_ms);
                last_ms = deadline_ms;
                assert!(!std::mem::replace(&mut seen[i as usize], true));
            });
        }
        assert_eq!(count, N as usize);
        assert!(wheel.is_empty());
    }

    /// One step of the model test.
    #[derive(Clone, Debug)]
    enum Op {
        /// Schedule at the wheel's time plus (or, when negative, minus) an offset.
        Schedule(i64),
        /// Schedule at an absolute deadline.
        ScheduleAt(u64),
        /// Cancel the n-th handle ever issued (possibly stale).
        Cancel(usize),
        /// Reschedule the n-th handle ever issued (possibly stale) to the wheel's time plus an offset.
        Reschedule(usize, u64),
        /// Advance by an offset.
        Advance(u64),
        /// Poll once at the wheel's time plus an offset.
        Poll(u64),
    }

    fn offset() -> impl Strategy<Value = u64> {
        prop_oneof![0..70u64, 0..5_000u64, 0..10_000_000u64, 0..(1u64 << 40), Just(u64::MAX)]
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => offset().prop_map(|d| Op::Schedule(d.min(i64::MAX as u64) as i64)),
            1 => (0..10_000i64).prop_map(|d| Op::Schedule(-d)),
            1 => prop_oneof![any::<u64>(), Just(u64::MAX)].prop_map(Op::ScheduleAt),
            2 => any::<prop::sample::Index>().prop_map(|i| Op::Cancel(i.index(1 << 16))),
            1 => (any::<prop::sample::Index>(), offset()).prop_map(|(i, d)| Op::Reschedule(i.index(1 << 16), d)),
            2 => offset().prop_map(Op::Advance),
            1 => (0..100u64).prop_map(Op::Poll),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        /// Random schedule/cancel/reschedule/advance/poll sequences against a `BTreeMap<(deadline, seq), seq>`.
        #[test]
        fn matches_reference_model(start_ms in prop_oneof![0..1_000u64, any::<u64>()], ops in prop::collection::vec(op(), 1..120)) {
            let capacity = 48;
            let mut wheel = TimerWheel::new(capacity, start_ms);
            let mut model: BTreeMap<(u64, u64), u64> = BTreeMap::new();
            let mut handles: Vec<(TimerHandle, u64)> = Vec::new();
            let mut deadlines: Vec<u64> = Vec::new();
            let mut model_now = start_ms;
            for op in ops {
                match op {
                    Op::Schedule(_) | Op::ScheduleAt(_) => {
                        let deadline_ms = match op {
                            Op::Schedule(d) if d >= 0 => model_now.saturating_add(d as u64),
                            Op::Schedule(d) => model_now.saturating_sub(d.unsigned_abs()),
                            Op::ScheduleAt(at) => at,
                            _ => unreachable!(),
                        };
                        let seq = handles.len() as u64;
                        match wheel.schedule(deadline_ms, seq) {
                            Ok(handle) => {
                                prop_assert!(model.len() < capacity);
                                model.insert((deadline_ms, seq), seq);
                                handles.push((handle, seq));
                                deadlines.push(deadline_ms);
                            }
                            Err(WheelFull { capacity: c }) => {
                                prop_assert_eq!(c, capacity);
                                prop_assert_eq!(model.len(), capacity);
                            }
                        }
                    }
                    Op::Cancel(i) if !handles.is_empty() => {
                        let (handle, seq) = handles[i % handles.len()];
                        let expected = model.remove(&(deadlines[seq as usize], seq));
                        prop_assert_eq!(wheel.cancel(handle), expected);
                    }
                    Op::Reschedule(i, d) if !handles.is_empty() => {
                        let (handle, seq) = handles[i % handles.len()];
                        let deadline_ms = model_now.saturating_add(d);
                        let pending = model.remove(&(deadlines[seq as usize], seq)).is_some();
                        prop_assert_eq!(wheel.reschedule(handle, deadline_ms), pending);
                        if pending {
                            deadlines[seq as usize] = deadline_ms;
                            model.insert((deadline_ms, seq), seq);
                        }
                    }
                    Op::Cancel(_) | Op::Reschedule(..) => {}
                    Op::Advance(d) => {
                        model_now = model_now.saturating_add(d);
                        let mut fired = Vec::new();
                        let count = wheel.advance(model_now, |seq, deadline_ms| fired.push((deadline_ms, seq)));
                        prop_assert_eq!(count, fired.len());
                        let mut expected = Vec::new();
                        while let Some(entry) = model.first_entry().filter(|e| e.key().0 <= model_now) {
                            expected.push(*entry.key());
                            entry.remove();
                        }
                        // Same deadlines in the same order; within one millisecond, any order.
                        let order: Vec<u64> = fired.iter().map(|&(d, _)| d).collect();
                        let expected_order: Vec<u64> = expected.iter().map(|&(d, _)| d).collect();
                        prop_assert_eq!(order, expected_order);
                        fired.sort_unstable();
                        prop_assert_eq!(fired, expected);
                        prop_assert_eq!(wheel.now_ms(), model_now);
                    }
                    Op::Poll(d) => {
                        let at_ms = model_now.saturating_add(d);
                        let polled = wheel.poll_expired(at_ms);
                        match model.first_key_value().map(|(&key, _)| key).filter(|&(deadline_ms, _)| deadline_ms <= at_ms) {
                            Some((deadline_ms, _)) => {
                                let polled = polled.expect("a due timer was not returned");
                                prop_assert_eq!(polled.deadline_ms, deadline_ms);
                                prop_assert!(model.remove(&(deadline_ms, polled.value)).is_some());
                                // Time moved forward, towards the polled deadline and never past `at_ms`.
                                prop_assert!(model_now <= wheel.now_ms() && wheel.now_ms() <= at_ms);
                                model_now = wheel.now_ms();
                            }
                            None => {
                                prop_assert!(polled.is_none());
                                model_now = at_ms;
                                prop_assert_eq!(wheel.now_ms(), model_now);
                            }
                        }
                    }
                }
                prop_assert_eq!(wheel.len(), model.len());
                let earliest = model.keys().next().map(|&(deadline_ms, _)| deadline_ms);
                match (wheel.next_deadline(), earliest) {
                    (Some(hint_ms), Some(earliest_ms)) => prop_assert!(hint_ms <= earliest_ms),
                    (hint, earliest) => prop_assert_eq!(hint, earliest),
                }
            }
        }
    }
}
