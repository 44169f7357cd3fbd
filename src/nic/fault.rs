//! A seeded fault injector that wraps any frame device.
//!
//! [`FaultInjector`] implements [`FrameDevice`] around an inner device and damages traffic in both directions:
//! frames received from the inner device before the handler sees them (the *rx* faults), and frames transmitted —
//! by a receive handler or by the caller directly — before they reach the inner device (the *tx* faults). The
//! faults are loss, duplication, corruption (bit flips anywhere in the frame, headers included), delay with jitter,
//! reordering (a frame held back for a random extra time while later frames pass), and a partition switch that
//! drops everything both ways.
//!
//! Every decision is drawn from one `ChaCha8Rng` seeded by the caller, so given the same seed, configuration and
//! inputs, a run replays exactly; [`FaultInjector::seed`] is there to be printed when a test fails.
//!
//! Frames that are only passed through are not copied. Corrupted, duplicated and held frames are copied into owned
//! buffers taken from a small pool; held frames wait in the wrapper's own queues (one per direction, bounded by
//! [`FaultConfig::held_frames_max`]) and go out once their time has come: held rx frames on a later `receive`, held
//! tx frames on a later `flush`, `receive` or `transmit`. [`FrameDevice::poll_at`] reports the earliest of them
//! together with the inner device's.

use core::time::Duration;
use std::collections::VecDeque;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::{DeviceStats, FrameDevice, Transmit};
use crate::time::Instant;

/// Probabilities are in parts per million: `PPM` means always, `PPM / 100` means one frame in a hundred.
pub const PPM: u32 = 1_000_000;

/// The faults applied to one direction of traffic.
///
/// For each frame, in this order: loss (the frame is gone); corruption (one owned copy gets bits flipped);
/// duplication (two copies go on); then each copy independently gets a hold time of `delay`, plus a uniform
/// `0..=jitter_max`, plus — with probability `reorder_ppm` — a uniform `1..=reorder_delay_max`. A copy with a zero
/// hold time goes on at once; the others wait in the injector.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Faults {
    /// Probability that a frame is dropped, in parts per million.
    pub loss_ppm: u32,
    /// Probability that a frame is delivered twice, in parts per million.
    pub duplicate_ppm: u32,
    /// Probability that a frame has bits flipped, in parts per million.
    pub corrupt_ppm: u32,
    /// A corrupted frame gets a uniform `1..=corrupt_bits_max` distinct bits flipped (0 counts as 1).
    pub corrupt_bits_max: u32,
    /// Probability that a frame is held back for an extra random time, letting later frames overtake it.
    pub reorder_ppm: u32,
    /// The longest extra hold of a reordered frame. Zero turns reordering off.
    pub reorder_delay_max: Duration,
    /// A fixed hold added to every frame.
    pub delay: Duration,
    /// The longest random hold added to every frame on top of `delay`. Jitter reorders frames too.
    pub jitter_max: Duration,
}

impl Faults {
    /// No faults: frames pass through untouched and uncopied.
    pub const NONE: Faults = Faults {
        loss_ppm: 0,
        duplicate_ppm: 0,
        corrupt_ppm: 0,
        corrupt_bits_max: 1,
        reorder_ppm: 0,
        reorder_delay_max: Duration::ZERO,
        delay: Duration::ZERO,
        jitter_max: Duration::ZERO,
    };
}

impl Default for Faults {
    fn default() -> Faults {
        Faults::NONE
    }
}

/// What a [`FaultInjector`] does, per direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FaultConfig {
    /// Faults on frames received from the inner device, before the handler sees them.
    pub rx: Faults,
    /// Faults on frames transmitted, before the inner device gets them.
    pub tx: Faults,
    /// While set, every frame is dropped both ways, including held frames whose time comes meanwhile.
    pub partitioned: bool,
    /// Frames each direction may hold (delayed, reordered, or over the receive budget); beyond it a frame that
    /// should be held is dropped and counted in [`DirectionStats::held_overflow`].
    pub held_frames_max: usize,
}

impl FaultConfig {
    /// No faults either way, room to hold 1024 frames per direction.
    pub const NONE: FaultConfig =
        FaultConfig { rx: Faults::NONE, tx: Faults::NONE, partitioned: false, held_frames_max: 1024 };

    /// The same faults in both directions.
    pub fn both(faults: Faults) -> FaultConfig {
        FaultConfig { rx: faults, tx: faults, ..FaultConfig::NONE }
    }
}

impl Default for FaultConfig {
    fn default() -> FaultConfig {
        FaultConfig::NONE
    }
}

/// What the faults did to one direction. A duplicated frame counts once in `frames` and its copies count
/// separately in `delivered`, `delayed` and so on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DirectionStats {
    /// Frames that met this direction's faults.
    pub frames: u64,
    /// Copies passed on: handed to the receive handler (rx) or accepted by the inner device (tx).
    pub delivered: u64,
    /// Frames dropped by `loss_ppm`.
    pub lost: u64,
    /// Frames and held copies dropped because the link was partitioned.
    pub partitioned: u64,
    /// Frames that had bits flipped.
    pub corrupted: u64,
    /// Frames that went on twice.
    pub duplicated: u64,
    /// Copies given a reorder hold.
    pub reordered: u64,
    /// Copies held for a nonzero time (delay, jitter or reorder).
    pub delayed: u64,
    /// Copies dropped because this direction already held `held_frames_max` frames.
    pub held_overflow: u64,
    /// Copies the inner device refused (tx only: its ring was full or the frame too long).
    pub refused: u64,
}

/// Fault counters of a [`FaultInjector`], per direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FaultStats {
    /// Frames received from the inner device.
    pub rx: DirectionStats,
    /// Frames transmitted towards the inner device.
    pub tx: DirectionStats,
}

/// A copy waiting for its time.
#[derive(Debug)]
struct Held {
    release: Instant,
    data: Vec<u8>,
}

/// Held copies of one direction, sorted by release time; equal times keep the order they were held in.
#[derive(Debug, Default)]
struct HeldQueue {
    frames: VecDeque<Held>,
}

impl HeldQueue {
    fn push(&mut self, release: Instant, data: Vec<u8>) {
        let at = self.frames.partition_point(|h| h.release <= release);
        self.frames.insert(at, Held { release, data });
    }

    fn pop_due(&mut self, now: Instant) -> Option<Vec<u8>> {
        match self.frames.front() {
            Some(h) if h.release <= now => self.frames.pop_front().map(|h| h.data),
            _ => None,
        }
    }

    fn next_release(&self) -> Option<Instant> {
        self.frames.front().map(|h| h.release)
    }
}

/// Reusable frame buffers, so steady faulting does not allocate. Keeps at most `buffers_max`.
#[derive(Debug)]
struct Pool {
    free: Vec<Vec<u8>>,
    buffers_max: usize,
}

impl Pool {
    fn take(&mut self) -> Vec<u8> {
        self.free.pop().unwrap_or_default()
    }

    fn give(&mut self, mut buf: Vec<u8>) {
        if self.free.len() < self.buffers_max {
            buf.clear();
            self.free.push(buf);
        }
    }
}

/// The fate of one frame, drawn before any copy is made.
#[derive(Debug)]
struct Plan {
    corrupt: bool,
    /// Hold time of each copy: one copy, or two when duplicated.
    holds: [Option<Duration>; 2],
}

impl Plan {
    fn is_pass_through(&self) -> bool {
        !self.corrupt && self.holds == [Some(Duration::ZERO), None]
    }
}

/// One draw against a probability in parts per million. Draws nothing when the answer is certain.
fn chance(rng: &mut ChaCha8Rng, ppm: u32) -> bool {
    match ppm {
        0 => false,
        p if p >= PPM => true,
        p => rng.gen_range(0..PPM) < p,
    }
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// Decides what happens to one frame, counting loss, duplication, corruption and reordering. `None`: dropped.
fn plan(rng: &mut ChaCha8Rng, faults: &Faults, partitioned: bool, stats: &mut DirectionStats) -> Option<Plan> {
    stats.frames += 1;
    if partitioned {
        stats.partitioned += 1;
        return None;
    }
    if chance(rng, faults.loss_ppm) {
        stats.lost += 1;
        return None;
    }
    let corrupt = chance(rng, faults.corrupt_ppm);
    stats.corrupted += u64::from(corrupt);
    let duplicate = chance(rng, faults.duplicate_ppm);
    stats.duplicated += u64::from(duplicate);
    let first = hold_time(rng, faults, stats);
    let second = duplicate.then(|| hold_time(rng, faults, stats));
    Some(Plan { corrupt, holds: [Some(first), second] })
}

fn hold_time(rng: &mut ChaCha8Rng, faults: &Faults, stats: &mut DirectionStats) -> Duration {
    let mut hold = faults.delay;
    let jitter_us = micros(faults.jitter_max);
    if jitter_us > 0 {
        hold += Duration::from_micros(rng.gen_range(0..=jitter_us));
    }
    let reorder_us = micros(faults.reorder_delay_max);
    if reorder_us > 0 && chance(rng, faults.reorder_ppm) {
        stats.reordered += 1;
        hold += Duration::from_micros(rng.gen_range(1..=reorder_us));
    }
    hold
}

/// Flips `1..=bits_max` distinct random bits of `data`.
fn flip_bits(rng: &mut ChaCha8Rng, data: &mut [u8], bits_max: u32) {
    let bits = data.len() * 8;
    if bits == 0 {
        return;
    }
    let count = (rng.gen_range(1..=bits_max.max(1)) as usize).min(bits);
    for bit in rand::seq::index::sample(rng, bits, count) {
        data[bit / 8] ^= 1 << (bit % 8);
    }
}

/// Everything but the inner device, so a receive handler's transmit half can borrow it while the inner device is
/// busy receiving.
#[derive(Debug)]
struct State {
    config: FaultConfig,
    seed: u64,
    rng: ChaCha8Rng,
    held_rx: HeldQueue,
    held_tx: HeldQueue,
    pool: Pool,
    stats: FaultStats,
}

impl State {
    /// Sends held tx copies whose time has come.
    fn release_tx(&mut self, inner: &mut dyn Transmit, now: Instant) {
        while let Some(data) = self.held_tx.pop_due(now) {
            if self.config.partitioned {
                self.stats.tx.partitioned += 1;
            } else {
                self.send_copy(inner, now, &data);
            }
            self.pool.give(data);
        }
    }

    fn send_copy(&mut self, inner: &mut dyn Transmit, now: Instant, data: &[u8]) -> bool {
        let sent = inner.transmit(now, data.len(), &mut |buf| buf.copy_from_slice(data));
        if sent {
            self.stats.tx.delivered += 1;
        } else {
            self.stats.tx.refused += 1;
        }
        sent
    }

    /// Holds a copy of `data` until `release`; false when the queue is full (the copy is dropped and counted).
    fn hold(&mut self, rx: bool, release: Instant, data: &[u8]) -> bool {
        let (queue, stats) =
            if rx { (&mut self.held_rx, &mut self.stats.rx) } else { (&mut self.held_tx, &mut self.stats.tx) };
        if queue.frames.len() >= self.config.held_frames_max {
            stats.held_overflow += 1;
            return false;
        }
        let mut buf = self.pool.take();
        buf.extend_from_slice(data);
        queue.push(release, buf);
        true
    }

    /// The tx faults, applied to one frame on its way to `inner`.
    fn transmit(
        &mut self,
        inner: &mut dyn Transmit,
        max_frame_len: usize,
        now: Instant,
        len: usize,
        fill: &mut dyn FnMut(&mut [u8]),
    ) -> bool {
        self.release_tx(inner, now);
        if len > max_frame_len {
            // The inner device refuses it and counts it; no fault applies to a frame that never left.
            return inner.transmit(now, len, fill);
        }
        let plan = plan(&mut self.rng, &self.config.tx, self.config.partitioned, &mut self.stats.tx);
        let Some(plan) = plan else {
            // Lost on the wire: the sender built it and believes it sent it.
            let mut buf = self.pool.take();
            buf.resize(len, 0);
            fill(&mut buf);
            self.pool.give(buf);
            return true;
        };
        if plan.is_pass_through() {
            let sent = inner.transmit(now, len, fill);
            if sent {
                self.stats.tx.delivered += 1;
            } else {
                self.stats.tx.refused += 1;
            }
            return sent;
        }
        let mut buf = self.pool.take();
        buf.resize(len, 0);
        fill(&mut buf);
        if plan.corrupt {
            flip_bits(&mut self.rng, &mut buf, self.config.tx.corrupt_bits_max);
        }
        let mut first_sent = true;
        for (i, hold) in plan.holds.iter().flatten().enumerate() {
            let sent = if hold.is_zero() {
                self.send_copy(inner, now, &buf)
            } else {
                self.stats.tx.delayed += 1;
                // A copy lost to a full hold queue is lost on the wire: the sender is not told.
                self.hold(false, now + *hold, &buf);
                true
            };
            if i == 0 {
                first_sent = sent;
            }
        }
        self.pool.give(buf);
        first_sent
    }

    /// The rx faults, applied to one frame received from the inner device. `budget` is how many more frames the
    /// handler may be given in this `receive`; copies beyond it are held until the next one.
    fn receive_frame(
        &mut self,
        frame: &[u8],
        tx: &mut dyn Transmit,
        call: Call,
        budget: &mut usize,
        handler: &mut dyn FnMut(&[u8], &mut dyn Transmit),
    ) {
        let Some(plan) = plan(&mut self.rng, &self.config.rx, self.config.partitioned, &mut self.stats.rx) else {
            return;
        };
        if plan.is_pass_through() && *budget > 0 {
            *budget -= 1;
            self.stats.rx.delivered += 1;
            handler(frame, &mut FaultTx { inner: tx, state: self, max_frame_len: call.max_frame_len });
            return;
        }
        let mut buf = self.pool.take();
        buf.extend_from_slice(frame);
        if plan.corrupt {
            flip_bits(&mut self.rng, &mut buf, self.config.rx.corrupt_bits_max);
        }
        for hold in plan.holds.into_iter().flatten() {
            if hold.is_zero() && *budget > 0 {
                *budget -= 1;
                self.stats.rx.delivered += 1;
                handler(&buf, &mut FaultTx { inner: tx, state: self, max_frame_len: call.max_frame_len });
            } else {
                if !hold.is_zero() {
                    self.stats.rx.delayed += 1;
                }
                self.hold(true, call.now + hold, &buf);
            }
        }
        self.pool.give(buf);
    }
}

/// What `receive_frame` needs to know about the `receive` call it is part of.
#[derive(Debug, Clone, Copy)]
struct Call {
    now: Instant,
    max_frame_len: usize,
}

/// The transmit half a receive handler gets: the inner device's transmit half behind the tx faults.
struct FaultTx<'a> {
    inner: &'a mut dyn Transmit,
    state: &'a mut State,
    max_frame_len: usize,
}

impl Transmit for FaultTx<'_> {
    fn transmit(&mut self, now: Instant, len: usize, fill: &mut dyn FnMut(&mut [u8])) -> bool {
        self.state.transmit(self.inner, self.max_frame_len, now, len, fill)
    }
}

/// A [`FrameDevice`] wrapper that applies seeded faults to the traffic of an inner device, both ways.
///
/// `transmit` reports a frame the faults drop (lost, partitioned, or over the hold limit) or hold as sent: the
/// wire does not tell the sender. It reports false only when the inner device refuses the frame (for a duplicated
/// frame, the first copy). A dropped frame is still built by `fill`, as it would be before it left.
///
/// The partition switch lives in the configuration ([`FaultConfig::partitioned`]); tests flip it with
/// [`FaultInjector::set_partitioned`] and may change any fault mid-run through [`FaultInjector::config_mut`].
#[derive(Debug)]
pub struct FaultInjector<D> {
    inner: D,
    state: State,
}

impl<D: FrameDevice> FaultInjector<D> {
    /// Wraps `inner`. Every random decision comes from `ChaCha8Rng::seed_from_u64(seed)`.
    pub fn new(inner: D, config: FaultConfig, seed: u64) -> FaultInjector<D> {
        let state = State {
            config,
            seed,
            rng: ChaCha8Rng::seed_from_u64(seed),
            held_rx: HeldQueue::default(),
            held_tx: HeldQueue::default(),
            pool: Pool { free: Vec::new(), buffers_max: 64 },
            stats: FaultStats::default(),
        };
        FaultInjector { inner, state }
    }

    /// The seed this injector was made with: print it when a test fails, and the run replays.
    pub fn seed(&self) -> u64 {
        self.state.seed
    }

    /// The current configuration.
    pub fn config(&self) -> &FaultConfig {
        &self.state.config
    }

    /// The configuration, to change faults mid-run. Frames already held keep their release times.
    pub fn config_mut(&mut self) -> &mut FaultConfig {
        &mut self.state.config
    }

    /// Turns the partition on (every frame dropped both ways) or off.
    pub fn set_partitioned(&mut self, partitioned: bool) {
        self.state.config.partitioned = partitioned;
    }

    /// Whether the partition is on.
    pub fn is_partitioned(&self) -> bool {
        self.state.config.partitioned
    }

    /// The fault counters.
    pub fn stats(&self) -> FaultStats {
        self.state.stats
    }

    /// Frames held in the injector, rx and tx together.
    pub fn held_frames(&self) -> usize {
        self.state.held_rx.frames.len() + self.state.held_tx.frames.len()
    }

    /// The wrapped device.
    pub fn inner(&self) -> &D {
        &self.inner
    }

    /// The wrapped device, mutably.
    pub fn inner_mut(&mut self) -> &mut D {
        &mut self.inner
    }

    /// Unwraps the device. Held frames are dropped.
    pub fn into_inner(self) -> D {
        self.inner
    }
}

impl<D: FrameDevice> Transmit for FaultInjector<D> {
    fn transmit(&mut self, now: Instant, len: usize, fill: &mut dyn FnMut(&mut [u8])) -> bool {
        let max_frame_len = self.inner.max_frame_len();
        self.state.transmit(&mut self.inner, max_frame_len, now, len, fill)
    }
}

impl<D: FrameDevice> FrameDevice for FaultInjector<D> {
    fn receive(&mut self, now: Instant, budget: usize, handler: &mut dyn FnMut(&[u8], &mut dyn Transmit)) -> usize {
        let call = Call { now, max_frame_len: self.inner.max_frame_len() };
        let state = &mut self.state;
        state.release_tx(&mut self.inner, now);

        let mut left = budget;
        // Held frames first: their time came before anything the inner device has now.
        while left > 0 {
            let Some(data) = state.held_rx.pop_due(now) else {
                break;
            };
            if state.config.partitioned {
                state.stats.rx.partitioned += 1;
            } else {
                left -= 1;
                state.stats.rx.delivered += 1;
                handler(&data, &mut FaultTx { inner: &mut self.inner, state, max_frame_len: call.max_frame_len });
            }
            state.pool.give(data);
        }
        if left > 0 {
            // Each inner frame yields at most two copies; copies over the budget are held for the next call.
            self.inner.receive(now, left, &mut |frame, tx| {
                state.receive_frame(frame, tx, call, &mut left, handler);
            });
        }
        budget - left
    }

    fn flush(&mut self, now: Instant) {
        self.state.release_tx(&mut self.inner, now);
        self.inner.flush(now);
    }

    fn max_frame_len(&self) -> usize {
        self.inner.max_frame_len()
    }

    fn poll_at(&self) -> Option<Instant> {
        [self.inner.poll_at(), self.state.held_rx.next_release(), self.state.held_tx.next_release()]
            .into_iter()
            .flatten()
            .min()
    }

    /// The loop bounds `timeout` by [`FrameDevice::poll_at`], so held frames are released on time.
    fn wait(&mut self, timeout: core::time::Duration) {
        self.inner.wait(timeout)
    }
    fn device_stats(&self, out: &mut DeviceStats) {
        self.inner.device_stats(out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nic::sim::testing::{check, drain, send, seqs};
    use crate::nic::sim::{LinkConfig, SimClock, SimLink, SimPort};

    const US: Duration = Duration::from_micros(1);
    const FRAMES: u64 = 100_000;

    fn quick_link() -> (SimPort, SimPort) {
        SimLink::pair(LinkConfig { latency: Duration::ZERO, ..LinkConfig::DEFAULT })
    }

    /// Pushes `FRAMES` frames through `faults` in one direction at time zero, returning what arrived.
    fn run_through(faults: Faults, rx: bool, seed: u64) -> (Vec<Vec<u8>>, FaultStats) {
        let (a, b) = quick_link();
        let now = Instant::ZERO;
        let mut got = Vec::new();
        let stats = if rx {
            let config = FaultConfig { rx: faults, ..FaultConfig::NONE };
            let (mut a, mut b) = (a, FaultInjector::new(b, config, seed));
            for chunk in 0..FRAMES / 1000 {
                for seq in chunk * 1000..(chunk + 1) * 1000 {
                    assert!(send(&mut a, now, seq, 60));
                }
                got.extend(drain(&mut b, now));
            }
            b.stats()
        } else {
            let config = FaultConfig { tx: faults, ..FaultConfig::NONE };
            let (mut a, mut b) = (FaultInjector::new(a, config, seed), b);
            for chunk in 0..FRAMES / 1000 {
                for seq in chunk * 1000..(chunk + 1) * 1000 {
                    assert!(send(&mut a, now, seq, 60));
                }
                got.extend(drain(&mut b, now));
            }
            a.stats()
        };
        (got, stats)
    }

    /// `count` is within `tolerance` (a fraction) of `FRAMES * ppm / PPM`.
    fn assert_near(what: &str, count: u64, ppm: u32, tolerance: f64) {
        let expected = FRAMES as f64 * f64::from(ppm) / f64::from(PPM);
        let error = (count as f64 - expected).abs() / expected;
        assert!(error <= tolerance, "{what}: {count} frames, expected about {expected}");
    }

    #[test]
    fn no_faults_pass_everything_through_in_order() {
        for rx in [true, false] {
            let (got, stats) = run_through(Faults::NONE, rx, 1);
            assert_eq!(seqs(&got), (0..FRAMES).collect::<Vec<_>>());
            let dir = if rx { stats.rx } else { stats.tx };
            assert_eq!((dir.frames, dir.delivered), (FRAMES, FRAMES));
        }
    }

    #[test]
    fn measured_loss_rate_is_near_configured() {
        for rx in [true, false] {
            let faults = Faults { loss_ppm: 50_000, ..Faults::NONE };
            let (got, stats) = run_through(faults, rx, 7);
            let dir = if rx { stats.rx } else { stats.tx };
            let missing = FRAMES - got.len() as u64;
            assert_eq!(missing, dir.lost);
            assert_near("lost", missing, faults.loss_ppm, 0.08);
            // What arrived is intact and in order.
            let arrived = seqs(&got);
            assert_eq!(arrived.len(), got.len());
            assert!(arrived.windows(2).all(|w| w[0] < w[1]));
        }
    }

    #[test]
    fn measured_duplicate_rate_is_near_configured() {
        for rx in [true, false] {
            let faults = Faults { duplicate_ppm: 50_000, ..Faults::NONE };
            let (got, stats) = run_through(faults, rx, 8);
            let dir = if rx { stats.rx } else { stats.tx };
            let extra = got.len() as u64 - FRAMES;
            assert_eq!(extra, dir.duplicated);
            assert_near("duplicated", extra, faults.duplicate_ppm, 0.08);
            let mut arrived = seqs(&got);
            arrived.dedup();
            assert_eq!(arrived, (0..FRAMES).collect::<Vec<_>>());
        }
    }

    #[test]
    fn measured_corruption_rate_is_near_configured_and_every_corruption_shows() {
        for (rx, bits_max) in [(true, 1), (false, 3)] {
            let faults = Faults { corrupt_ppm: 50_000, corrupt_bits_max: bits_max, ..Faults::NONE };
            let (got, stats) = run_through(faults, rx, 9);
            let dir = if rx { stats.rx } else { stats.tx };
            assert_eq!(got.len() as u64, FRAMES);
            let damaged = got.iter().filter(|f| check(f).is_none()).count() as u64;
            assert_eq!(damaged, dir.corrupted);
            assert_near("corrupted", damaged, faults.corrupt_ppm, 0.08);
            assert!(got.iter().all(|f| f.len() == 60));
        }
    }

    #[test]
    fn corruption_reaches_every_byte_of_the_frame() {
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let mut hit = [false; 60];
        for _ in 0..10_000 {
            let mut data = [0u8; 60];
            flip_bits(&mut rng, &mut data, 1);
            let ones: u32 = data.iter().map(|b| b.count_ones()).sum();
            assert_eq!(ones, 1);
            hit[data.iter().position(|&b| b != 0).unwrap()] = true;
        }
        assert!(hit.iter().all(|&h| h), "headers and trailer alike");
        let mut data = [0u8; 2];
        flip_bits(&mut rng, &mut data, 100);
        assert!(data.iter().map(|b| b.count_ones()).sum::<u32>() <= 16);
    }

    /// Everything on, both ways: B echoes what it receives; the trace records every delivery on both sides.
    fn echo_run(seed: u64) -> (Vec<(Instant, char, Vec<u8>)>, FaultStats) {
        let (mut a, b) = SimLink::pair(LinkConfig { latency: 20 * US, ..LinkConfig::DEFAULT });
        let faults = Faults {
            loss_ppm: 50_000,
            duplicate_ppm: 50_000,
            corrupt_ppm: 50_000,
            corrupt_bits_max: 4,
            reorder_ppm: 100_000,
            reorder_delay_max: 200 * US,
            delay: 10 * US,
            jitter_max: 30 * US,
        };
        let mut b = FaultInjector::new(b, FaultConfig::both(faults), seed);
        let mut clock = SimClock::new();
        let mut trace = Vec::new();
        let sends = 2000;
        let mut next_seq = 0;
        loop {
            let next_send = (next_seq < sends).then(|| Instant::from_micros(next_seq * 5));
            let Some(next) = [next_send, a.poll_at(), b.poll_at()].into_iter().flatten().min() else {
                break;
            };
            let now = clock.advance_to(next);
            if next_send == Some(now) {
                send(&mut a, now, next_seq, 64 + (next_seq as usize % 64));
                next_seq += 1;
            }
            b.receive(now, 16, &mut |f, tx| {
                trace.push((now, 'b', f.to_vec()));
                tx.transmit(now, f.len(), &mut |buf| buf.copy_from_slice(f));
            });
            b.flush(now);
            for f in drain(&mut a, now) {
                trace.push((now, 'a', f));
            }
        }
        assert_eq!(b.held_frames(), 0);
        (trace, b.stats())
    }

    #[test]
    fn same_seed_replays_the_same_faults_and_another_seed_does_not() {
        let (trace, stats) = echo_run(42);
        let faults_hit = |d: DirectionStats| [d.lost, d.duplicated, d.corrupted, d.reordered, d.delayed];
        assert!(faults_hit(stats.rx).iter().chain(&faults_hit(stats.tx)).all(|&n| n > 0), "{stats:?}");
        assert_eq!(echo_run(42), (trace.clone(), stats));
        let (other, other_stats) = echo_run(43);
        assert_ne!(other, trace);
        assert_ne!(other_stats, stats);
    }

    #[test]
    fn reorder_reorders_without_losing_anything() {
        let (mut a, b) = quick_link();
        let faults = Faults { reorder_ppm: 200_000, reorder_delay_max: 100 * US, ..Faults::NONE };
        let mut b = FaultInjector::new(b, FaultConfig { rx: faults, ..FaultConfig::NONE }, 5);
        let mut clock = SimClock::new();
        let mut got = Vec::new();
        let sends = 1000;
        let mut next_seq = 0;
        loop {
            let next_send = (next_seq < sends).then(|| Instant::from_micros(next_seq * 10));
            let Some(next) = [next_send, b.poll_at()].into_iter().flatten().min() else {
                break;
            };
            let now = clock.advance_to(next);
            if next_send == Some(now) {
                send(&mut a, now, next_seq, 64);
                next_seq += 1;
            }
            got.extend(seqs(&drain(&mut b, now)));
        }
        let inversions = got.windows(2).filter(|w| w[0] > w[1]).count();
        assert!(inversions > 50, "{inversions} inversions");
        let stats = b.stats().rx;
        assert_eq!(stats.reordered, stats.delayed);
        assert_near("reordered", stats.reordered * (FRAMES / sends), faults.reorder_ppm, 0.2);
        got.sort_unstable();
        assert_eq!(got, (0..sends).collect::<Vec<_>>());
    }

    /// Frame `seq` is sent at `seq * 7 µs` over a 50 µs link with a 100 µs delay and up to 50 µs jitter on `rx` or
    /// tx. Before each step the harness looks just before the next reported time and must find nothing.
    fn check_nothing_early(rx: bool) {
        let (a, b) = SimLink::pair(LinkConfig { latency: 50 * US, ..LinkConfig::DEFAULT });
        let faults = Faults { delay: 100 * US, jitter_max: 50 * US, ..Faults::NONE };
        let config = if rx {
            FaultConfig { rx: faults, ..FaultConfig::NONE }
        } else {
            FaultConfig { tx: faults, ..FaultConfig::NONE }
        };
        let (mut a, mut b): (Box<dyn FrameDevice>, Box<dyn FrameDevice>) = if rx {
            (Box::new(a), Box::new(FaultInjector::new(b, config, 11)))
        } else {
            (Box::new(FaultInjector::new(a, config, 11)), Box::new(b))
        };
        let mut clock = SimClock::new();
        let mut arrivals = Vec::new();
        let sends = 500;
        let mut next_seq = 0;
        loop {
            let next_send = (next_seq < sends).then(|| Instant::from_micros(next_seq * 7));
            let Some(next) = [next_send, a.poll_at(), b.poll_at()].into_iter().flatten().min() else {
                break;
            };
            let before = next - US;
            if before > clock.now() {
                a.flush(before);
                assert!(drain(&mut *b, before).is_empty(), "frame early at {before}");
            }
            let now = clock.advance_to(next);
            if next_send == Some(now) {
                assert!(send(&mut *a, now, next_seq, 64));
                next_seq += 1;
            }
            a.flush(now);
            arrivals.extend(seqs(&drain(&mut *b, now)).into_iter().map(|seq| (seq, now)));
        }
        assert_eq!(arrivals.len(), sends as usize);
        for (seq, at) in arrivals {
            let waited = at - Instant::from_micros(seq * 7);
            assert!(waited >= 150 * US && waited <= 200 * US, "frame {seq} took {waited:?}");
        }
    }

    #[test]
    fn nothing_is_delivered_before_its_time_rx() {
        check_nothing_early(true);
    }

    #[test]
    fn nothing_is_delivered_before_its_time_tx() {
        check_nothing_early(false);
    }

    #[test]
    fn partition_drops_everything_both_ways_and_healing_restores_delivery() {
        let (a, mut b) = SimLink::pair(LinkConfig { latency: 10 * US, ..LinkConfig::DEFAULT });
        let tx_delay = Faults { delay: 100 * US, ..Faults::NONE };
        let mut a = FaultInjector::new(a, FaultConfig { tx: tx_delay, ..FaultConfig::NONE }, 1);
        let t = |us| Instant::from_micros(us);
        // Held before the partition, due during it: dropped too.
        assert!(send(&mut a, t(0), 100, 64));
        a.set_partitioned(true);
        assert!(a.is_partitioned());
        for seq in 0..10 {
            assert!(send(&mut a, t(1), seq, 64), "the sender is not told");
            assert!(send(&mut b, t(1), seq, 64));
        }
        a.flush(t(200));
        assert!(drain(&mut b, t(1000)).is_empty());
        assert!(drain(&mut a, t(1000)).is_empty());
        assert_eq!(a.held_frames(), 0);
        let stats = a.stats();
        assert_eq!((stats.tx.partitioned, stats.rx.partitioned), (11, 10));
        assert_eq!((stats.tx.delivered, stats.rx.delivered), (0, 0));

        a.set_partitioned(false);
        assert!(send(&mut a, t(1000), 20, 64));
        assert!(send(&mut b, t(1000), 21, 64));
        a.flush(t(1100));
        assert_eq!(seqs(&drain(&mut b, t(1110))), [20]);
        assert_eq!(seqs(&drain(&mut a, t(1110))), [21]);
    }

    #[test]
    fn handler_transmissions_get_the_tx_faults() {
        let (a, mut b) = quick_link();
        let config = FaultConfig { tx: Faults { duplicate_ppm: PPM, ..Faults::NONE }, ..FaultConfig::NONE };
        let mut a = FaultInjector::new(a, config, 1);
        send(&mut b, Instant::ZERO, 1, 64);
        let n = a.receive(Instant::ZERO, 8, &mut |f, tx| {
            assert!(send(tx, Instant::ZERO, check(f).unwrap() + 1, 64));
        });
        assert_eq!(n, 1);
        assert_eq!(seqs(&drain(&mut b, Instant::ZERO)), [2, 2]);
        assert_eq!(a.stats().tx.duplicated, 1);
    }

    #[test]
    fn copies_over_the_budget_wait_for_the_next_receive() {
        let (mut a, b) = quick_link();
        let config = FaultConfig { rx: Faults { duplicate_ppm: PPM, ..Faults::NONE }, ..FaultConfig::NONE };
        let mut b = FaultInjector::new(b, config, 1);
        for seq in 0..3 {
            send(&mut a, Instant::ZERO, seq, 64);
        }
        let mut got = Vec::new();
        assert_eq!(b.receive(Instant::ZERO, 2, &mut |f, _| got.push(check(f).unwrap())), 2);
        assert_eq!(b.poll_at(), Some(Instant::ZERO));
        assert_eq!(b.receive(Instant::ZERO, 10, &mut |f, _| got.push(check(f).unwrap())), 4);
        assert_eq!(got, [0, 0, 1, 1, 2, 2]);
        assert_eq!(b.poll_at(), None);
    }

    #[test]
    fn held_queue_is_bounded_and_counts_overflow() {
        let (mut a, b) = quick_link();
        let config =
            FaultConfig { rx: Faults { delay: 10 * US, ..Faults::NONE }, held_frames_max: 4, ..FaultConfig::NONE };
        let mut b = FaultInjector::new(b, config, 1);
        for seq in 0..6 {
            send(&mut a, Instant::ZERO, seq, 64);
        }
        assert!(drain(&mut b, Instant::ZERO).is_empty());
        assert_eq!(b.held_frames(), 4);
        assert_eq!(b.stats().rx.held_overflow, 2);
        assert_eq!(b.poll_at(), Some(Instant::from_micros(10)));
        assert_eq!(seqs(&drain(&mut b, Instant::from_micros(10))), [0, 1, 2, 3]);
    }

    #[test]
    fn oversize_transmit_is_refused_by_the_inner_device() {
        let (a, _b) = quick_link();
        let mut a = FaultInjector::new(a, FaultConfig::both(Faults { corrupt_ppm: PPM, ..Faults::NONE }), 1);
        assert!(!a.transmit(Instant::ZERO, 1515, &mut |_| panic!("fill called")));
        assert_eq!(a.inner().stats().tx_dropped_too_long, 1);
        assert_eq!(a.stats().tx.frames, 0);
    }
}
