//! An in-memory Ethernet link between two ports, driven by a virtual clock.
//!
//! [`SimLink`] joins two [`SimPort`]s. A frame one port transmits at `now` is put in flight towards the other port
//! with a ready time (`now` plus serialization time at the configured rate, plus `latency`); the other port's
//! [`FrameDevice::receive`] hands it out only once the caller's `now` has reached that ready time. Frames come out
//! in ready-time order, ties in send order, and [`FrameDevice::poll_at`] tells the harness when the next one is due.
//!
//! Nothing here reads a clock: the harness owns a [`SimClock`], advances it, and passes `now()` to the ports and to
//! the stack. The link has no faults of its own beyond its limits (queue depth, frame size); wrap a port in
//! [`super::fault::FaultInjector`] for loss, duplication, corruption, reordering and partitions.
//!
//! The simulation is single-threaded: both ports share the link through `Rc<RefCell<..>>`, and no borrow of it is
//! held while caller code (a receive handler or a transmit fill) runs, so a handler may transmit on either port.

use core::time::Duration;
use std::cell::RefCell;
use std::collections::VecDeque;
use std::rc::Rc;

use super::{DeviceStats, FrameDevice, Transmit};
use crate::time::Instant;

/// A virtual clock owned by the test harness.
///
/// It only moves when the harness moves it, and never backwards.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SimClock {
    now: Instant,
}

impl SimClock {
    /// A clock at the epoch.
    pub const fn new() -> SimClock {
        SimClock { now: Instant::ZERO }
    }

    /// A clock starting at `now`.
    pub const fn starting_at(now: Instant) -> SimClock {
        SimClock { now }
    }

    /// The current virtual time.
    pub const fn now(&self) -> Instant {
        self.now
    }

    /// Moves the clock forward by `by` and returns the new time.
    pub fn advance(&mut self, by: Duration) -> Instant {
        self.now += by;
        self.now
    }

    /// Moves the clock forward to `to` and returns the new time. An earlier `to` leaves the clock where it is, so
    /// `clock.advance_to(device.poll_at()?)` is safe when a frame was already due.
    pub fn advance_to(&mut self, to: Instant) -> Instant {
        self.now = self.now.max(to);
        self.now
    }
}

/// One end of a [`SimLink`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Side {
    /// The first port.
    A,
    /// The second port.
    B,
}

impl Side {
    /// The other end.
    pub const fn peer(self) -> Side {
        match self {
            Side::A => Side::B,
            Side::B => Side::A,
        }
    }

    const fn index(self) -> usize {
        match self {
            Side::A => 0,
            Side::B => 1,
        }
    }
}

/// The shape of a [`SimLink`], the same in both directions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LinkConfig {
    /// Propagation delay: from the end of a frame's serialization to its arrival at the other port.
    pub latency: Duration,
    /// Frames in flight per direction (sent, not yet received) before `transmit` refuses and counts a drop.
    pub queue_frames_max: usize,
    /// The largest frame the link carries, Ethernet header included, FCS excluded.
    pub max_frame_len: usize,
    /// Serialization rate per direction. `None` (or zero) means frames take no time on the wire; otherwise each
    /// direction sends one frame at a time and a frame of `n` bytes occupies it for `8 n / rate` seconds.
    pub rate_bits_per_sec: Option<u64>,
}

impl LinkConfig {
    /// 50 µs latency, 4096 frames per direction, 1514-byte frames, no rate limit.
    pub const DEFAULT: LinkConfig = LinkConfig {
        latency: Duration::from_micros(50),
        queue_frames_max: 4096,
        max_frame_len: 1514,
        rate_bits_per_sec: None,
    };
}

impl Default for LinkConfig {
    fn default() -> LinkConfig {
        LinkConfig::DEFAULT
    }
}

/// Counters of one port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PortStats {
    /// Frames put in flight towards the peer.
    pub tx_frames: u64,
    /// Bytes of those frames.
    pub tx_bytes: u64,
    /// Frames refused because the direction already had `queue_frames_max` frames in flight.
    pub tx_dropped_queue_full: u64,
    /// Frames refused because they were longer than `max_frame_len`.
    pub tx_dropped_too_long: u64,
    /// Frames handed to a receive handler.
    pub rx_frames: u64,
    /// Bytes of those frames.
    pub rx_bytes: u64,
}

/// A frame in flight.
#[derive(Debug)]
struct InFlight {
    ready: Instant,
    data: Vec<u8>,
}

/// One direction of the link, named by the side that sends into it.
#[derive(Debug, Default)]
struct Lane {
    /// Sorted by ready time; equal ready times keep send order.
    frames: VecDeque<InFlight>,
    /// Buffers of delivered frames, reused by later transmissions; at most `queue_frames_max`.
    free: Vec<Vec<u8>>,
    /// When the sender finishes serializing the last frame it put on the wire (with a link rate).
    busy_until: Instant,
}

#[derive(Debug)]
struct Link {
    config: LinkConfig,
    lanes: [Lane; 2],
    stats: [PortStats; 2],
}

/// An in-memory Ethernet link between two ports.
///
/// `SimLink` is a handle: clones share the same link, and so do the ports it hands out.
#[derive(Debug, Clone)]
pub struct SimLink {
    link: Rc<RefCell<Link>>,
}

impl SimLink {
    /// A link with nothing in flight.
    pub fn new(config: LinkConfig) -> SimLink {
        let link = Link { config, lanes: [Lane::default(), Lane::default()], stats: [PortStats::default(); 2] };
        SimLink { link: Rc::new(RefCell::new(link)) }
    }

    /// A new link's two ports, A then B.
    pub fn pair(config: LinkConfig) -> (SimPort, SimPort) {
        let link = SimLink::new(config);
        (link.port(Side::A), link.port(Side::B))
    }

    /// A handle on the port at `side`. Handles on the same side share everything, counters included.
    pub fn port(&self, side: Side) -> SimPort {
        SimPort { link: self.clone(), side }
    }

    /// The link's configuration.
    pub fn config(&self) -> LinkConfig {
        self.link.borrow().config
    }

    /// The counters of the port at `side`.
    pub fn stats(&self, side: Side) -> PortStats {
        self.link.borrow().stats[side.index()]
    }

    /// Frames in flight from `from` towards its peer, due or not.
    pub fn in_flight(&self, from: Side) -> usize {
        self.link.borrow().lanes[from.index()].frames.len()
    }
}

/// One port of a [`SimLink`]: a [`FrameDevice`] whose frames go to the other port.
#[derive(Debug, Clone)]
pub struct SimPort {
    link: SimLink,
    side: Side,
}

impl SimPort {
    /// Which end of the link this port is.
    pub fn side(&self) -> Side {
        self.side
    }

    /// The link this port belongs to.
    pub fn link(&self) -> &SimLink {
        &self.link
    }

    /// This port's counters.
    pub fn stats(&self) -> PortStats {
        self.link.stats(self.side)
    }

    /// Frames in flight towards this port, due or not.
    pub fn rx_queued(&self) -> usize {
        self.link.in_flight(self.side.peer())
    }
}

/// How long `len` bytes occupy the wire at `rate_bits_per_sec`, rounded up to whole microseconds.
fn serialization_time(len: usize, rate_bits_per_sec: Option<u64>) -> Duration {
    match rate_bits_per_sec {
        None | Some(0) => Duration::ZERO,
        Some(rate) => {
            let bits = (len as u128) * 8;
            let micros = (bits * 1_000_000).div_ceil(u128::from(rate));
            Duration::from_micros(u64::try_from(micros).unwrap_or(u64::MAX))
        }
    }
}

impl Transmit for SimPort {
    fn transmit(&mut self, now: Instant, len: usize, fill: &mut dyn FnMut(&mut [u8])) -> bool {
        let me = self.side.index();
        let mut data = {
            let mut link = self.link.link.borrow_mut();
            let link = &mut *link;
            if len > link.config.max_frame_len {
                link.stats[me].tx_dropped_too_long += 1;
                return false;
            }
            let lane = &mut link.lanes[me];
            if lane.frames.len() >= link.config.queue_frames_max {
                link.stats[me].tx_dropped_queue_full += 1;
                return false;
            }
            lane.free.pop().unwrap_or_else(|| Vec::with_capacity(link.config.max_frame_len))
        };
        data.clear();
        data.resize(len, 0);
        // No borrow of the link is held while caller code runs.
        fill(&mut data);

        let mut link = self.link.link.borrow_mut();
        let link = &mut *link;
        let config = link.config;
        let lane = &mut link.lanes[me];
        // `fill` may have sent on another handle of this port; the limit still holds.
        if lane.frames.len() >= config.queue_frames_max {
            link.stats[me].tx_dropped_queue_full += 1;
            return false;
        }
        // Without a rate frames do not queue for the wire; with one, each waits for the one before it.
        let done = match config.rate_bits_per_sec {
            None | Some(0) => now,
            rate => now.max(lane.busy_until) + serialization_time(len, rate),
        };
        lane.busy_until = done;
        let ready = done + config.latency;
        let at = lane.frames.partition_point(|f| f.ready <= ready);
        lane.frames.insert(at, InFlight { ready, data });
        let stats = &mut link.stats[me];
        stats.tx_frames += 1;
        stats.tx_bytes += len as u64;
        true
    }
}

impl FrameDevice for SimPort {
    fn receive(&mut self, now: Instant, budget: usize, handler: &mut dyn FnMut(&[u8], &mut dyn Transmit)) -> usize {
        let me = self.side.index();
        let from = self.side.peer().index();
        let mut handed = 0;
        while handed < budget {
            let frame = {
                let mut link = self.link.link.borrow_mut();
                let link = &mut *link;
                let lane = &mut link.lanes[from];
                match lane.frames.front() {
                    Some(f) if f.ready <= now => lane.frames.pop_front(),
                    _ => None,
                }
                .inspect(|f| {
                    link.stats[me].rx_frames += 1;
                    link.stats[me].rx_bytes += f.data.len() as u64;
                })
            };
            let Some(frame) = frame else { break };
            handler(&frame.data, self);
            handed += 1;
            let mut link = self.link.link.borrow_mut();
            let limit = link.config.queue_frames_max;
            let free = &mut link.lanes[from].free;
            if free.len() < limit {
                free.push(frame.data);
            }
        }
        handed
    }

    /// Frames go in flight as they are transmitted; there is nothing to kick.
    fn flush(&mut self, _now: Instant) {}

    fn max_frame_len(&self) -> usize {
        self.link.config().max_frame_len
    }

    fn poll_at(&self) -> Option<Instant> {
        let link = self.link.link.borrow();
        link.lanes[self.side.peer().index()].frames.front().map(|f| f.ready)
    }

    /// The port's refusals, named as an AF_XDP socket's are: a full direction is its tx ring full.
    fn device_stats(&self, out: &mut DeviceStats) {
        let s = self.stats();
        out.drops.extend([("tx_ring_full", s.tx_dropped_queue_full), ("tx_too_long", s.tx_dropped_too_long)]);
    }
}

/// Dummy frames for the device tests: self-checking, so corruption anywhere is caught.
#[cfg(test)]
pub(crate) mod testing {
    use super::*;

    /// The shortest dummy frame: an 8-byte sequence number and a 4-byte check.
    pub(crate) const FRAME_LEN_MIN: usize = 12;

    fn fnv1a(bytes: &[u8]) -> u32 {
        bytes.iter().fold(0x811c_9dc5_u32, |h, &b| (h ^ u32::from(b)).wrapping_mul(0x0100_0193))
    }

    /// Writes dummy frame `seq` into `buf`: the sequence number, a filler, and an FNV-1a of all that. FNV-1a changes
    /// whenever any one byte changes, so a single flipped bit anywhere always fails [`check`].
    pub(crate) fn fill(seq: u64, buf: &mut [u8]) {
        assert!(buf.len() >= FRAME_LEN_MIN);
        let body = buf.len() - 4;
        buf[..8].copy_from_slice(&seq.to_be_bytes());
        for (i, b) in buf[8..body].iter_mut().enumerate() {
            *b = (seq as u8).wrapping_mul(31).wrapping_add(i as u8);
        }
        let sum = fnv1a(&buf[..body]);
        buf[body..].copy_from_slice(&sum.to_be_bytes());
    }

    /// Dummy frame `seq`, `len` bytes long.
    pub(crate) fn frame(seq: u64, len: usize) -> Vec<u8> {
        let mut buf = vec![0; len];
        fill(seq, &mut buf);
        buf
    }

    /// The sequence number of an intact dummy frame; `None` when it was damaged.
    pub(crate) fn check(frame: &[u8]) -> Option<u64> {
        if frame.len() < FRAME_LEN_MIN {
            return None;
        }
        let body = frame.len() - 4;
        let sum = u32::from_be_bytes(frame[body..].try_into().ok()?);
        let seq = u64::from_be_bytes(frame[..8].try_into().ok()?);
        (fnv1a(&frame[..body]) == sum && frame == self::frame(seq, frame.len())).then_some(seq)
    }

    /// Transmits dummy frame `seq` of `len` bytes on `dev`.
    pub(crate) fn send(dev: &mut dyn Transmit, now: Instant, seq: u64, len: usize) -> bool {
        dev.transmit(now, len, &mut |buf| fill(seq, buf))
    }

    /// Receives everything due at `now`, returning copies of the frames.
    pub(crate) fn drain(dev: &mut dyn FrameDevice, now: Instant) -> Vec<Vec<u8>> {
        let mut got = Vec::new();
        dev.receive(now, usize::MAX, &mut |f, _| got.push(f.to_vec()));
        got
    }

    /// The sequence numbers of intact frames, in order.
    pub(crate) fn seqs(frames: &[Vec<u8>]) -> Vec<u64> {
        frames.iter().filter_map(|f| check(f)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::testing::{check, drain, send, seqs};
    use super::*;

    const US: Duration = Duration::from_micros(1);

    fn config() -> LinkConfig {
        LinkConfig { latency: 50 * US, ..LinkConfig::DEFAULT }
    }

    #[test]
    fn clock_only_moves_forward() {
        let mut clock = SimClock::new();
        assert_eq!(clock.now(), Instant::ZERO);
        assert_eq!(clock.advance(10 * US), Instant::from_micros(10));
        assert_eq!(clock.advance_to(Instant::from_micros(25)), Instant::from_micros(25));
        assert_eq!(clock.advance_to(Instant::from_micros(5)), Instant::from_micros(25));
        assert_eq!(SimClock::starting_at(Instant::from_secs(1)).now(), Instant::from_secs(1));
    }

    #[test]
    fn delivers_in_order_after_latency_and_not_before() {
        let (mut a, mut b) = SimLink::pair(config());
        let t0 = Instant::from_micros(100);
        for seq in 0..3 {
            assert!(send(&mut a, t0, seq, 64));
        }
        assert!(send(&mut a, t0 + 10 * US, 3, 64));
        assert_eq!(b.poll_at(), Some(t0 + 50 * US));
        assert_eq!(a.poll_at(), None);

        assert!(drain(&mut b, t0).is_empty());
        assert!(drain(&mut b, t0 + 49 * US).is_empty());
        // Ties come out in send order.
        assert_eq!(seqs(&drain(&mut b, t0 + 50 * US)), [0, 1, 2]);
        assert_eq!(b.poll_at(), Some(t0 + 60 * US));
        assert!(drain(&mut b, t0 + 59 * US).is_empty());
        assert_eq!(seqs(&drain(&mut b, t0 + 60 * US)), [3]);
        assert_eq!(b.poll_at(), None);
        // Nothing came back the other way.
        assert!(drain(&mut a, t0 + 1000 * US).is_empty());

        let (sa, sb) = (a.stats(), b.stats());
        assert_eq!((sa.tx_frames, sa.tx_bytes, sa.rx_frames), (4, 256, 0));
        assert_eq!((sb.rx_frames, sb.rx_bytes, sb.tx_frames), (4, 256, 0));
    }

    #[test]
    fn frames_sent_out_of_time_order_come_out_in_ready_order() {
        let (mut a, mut b) = SimLink::pair(config());
        assert!(send(&mut a, Instant::from_micros(30), 0, 64));
        assert!(send(&mut a, Instant::from_micros(10), 1, 64));
        assert_eq!(b.poll_at(), Some(Instant::from_micros(60)));
        assert_eq!(seqs(&drain(&mut b, Instant::from_micros(100))), [1, 0]);
    }

    #[test]
    fn receive_respects_budget() {
        let (mut a, mut b) = SimLink::pair(config());
        for seq in 0..5 {
            send(&mut a, Instant::ZERO, seq, 64);
        }
        let now = Instant::from_millis(1);
        let mut got = Vec::new();
        assert_eq!(b.receive(now, 2, &mut |f, _| got.push(check(f).unwrap())), 2);
        assert_eq!(b.receive(now, 0, &mut |_, _| unreachable!()), 0);
        assert_eq!(b.receive(now, 10, &mut |f, _| got.push(check(f).unwrap())), 3);
        assert_eq!(got, [0, 1, 2, 3, 4]);
    }

    #[test]
    fn queue_limit_counts_drops() {
        let (mut a, mut b) = SimLink::pair(LinkConfig { queue_frames_max: 4, ..config() });
        let sent: Vec<bool> = (0..6).map(|seq| send(&mut a, Instant::ZERO, seq, 64)).collect();
        assert_eq!(sent, [true, true, true, true, false, false]);
        assert_eq!(a.stats().tx_dropped_queue_full, 2);
        assert_eq!(a.stats().tx_frames, 4);
        assert_eq!(b.rx_queued(), 4);
        assert_eq!(seqs(&drain(&mut b, Instant::from_millis(1))), [0, 1, 2, 3]);
        // Room again once received.
        assert!(send(&mut a, Instant::from_millis(1), 6, 64));
    }

    #[test]
    fn oversize_frame_is_refused_without_calling_fill() {
        let (mut a, mut b) = SimLink::pair(config());
        assert_eq!(a.max_frame_len(), 1514);
        assert!(!a.transmit(Instant::ZERO, 1515, &mut |_| panic!("fill called")));
        assert!(send(&mut a, Instant::ZERO, 0, 1514));
        assert_eq!(a.stats().tx_dropped_too_long, 1);
        assert_eq!(seqs(&drain(&mut b, Instant::from_millis(1))), [0]);
    }

    #[test]
    fn handler_can_transmit_while_receiving() {
        let (mut a, mut b) = SimLink::pair(config());
        send(&mut a, Instant::ZERO, 7, 64);
        let now = Instant::from_micros(50);
        let n = b.receive(now, 8, &mut |f, tx| {
            let seq = check(f).unwrap();
            assert!(send(tx, now, seq + 1, 64));
        });
        assert_eq!(n, 1);
        assert_eq!(a.poll_at(), Some(Instant::from_micros(100)));
        assert_eq!(seqs(&drain(&mut a, Instant::from_micros(100))), [8]);
    }

    #[test]
    fn link_rate_spaces_frames_by_serialization_time() {
        // 1000 bytes at 80 Mbit/s take 100 µs.
        let cfg = LinkConfig { rate_bits_per_sec: Some(80_000_000), ..config() };
        let (mut a, mut b) = SimLink::pair(cfg);
        for seq in 0..3 {
            send(&mut a, Instant::ZERO, seq, 1000);
        }
        let mut arrivals = Vec::new();
        while let Some(t) = b.poll_at() {
            for seq in seqs(&drain(&mut b, t)) {
                arrivals.push((seq, t.total_micros()));
            }
        }
        assert_eq!(arrivals, [(0, 150), (1, 250), (2, 350)]);
        // An idle wire starts the next frame at once.
        send(&mut a, Instant::from_micros(1000), 3, 1000);
        assert_eq!(b.poll_at(), Some(Instant::from_micros(1150)));
    }

    #[test]
    fn serialization_time_rounds_up() {
        assert_eq!(serialization_time(1, Some(1_000_000_000)), US);
        assert_eq!(serialization_time(1500, None), Duration::ZERO);
        assert_eq!(serialization_time(1500, Some(0)), Duration::ZERO);
        assert_eq!(serialization_time(125, Some(1_000_000)), 1000 * US);
    }
}
