//! The multi-core engine: one pinned run-to-completion loop per rx queue, sharing nothing on the hot path.
//!
//! Each core owns its AF_XDP socket (and so its UMEM frame pool), its [`Stack`] (a shard of the connection table,
//! its timer wheel and counters) and its own application instance. Which core owns a connection is decided without
//! any shared table:
//! - a passive open belongs to the core whose queue the SYN arrived on (every core's application listens);
//! - an active open takes its source port from the opening core's slice of the ephemeral range
//!   ([`PortPartition`]), so the owner of any reply is a function of its destination port alone.
//!
//! The NIC (or veth) should deliver a reply on the opening core's queue; `docs/multicore.md` says how that is
//! arranged on veth and on Toeplitz RSS NICs ([`super::rss`]). When it is not — a frame to a port of another core's
//! slice lands here — [`ShardDevice`] copies it into the owner's bounded lock-free inbox ([`Handoff`]), counted,
//! and the owner processes it on its next poll. That copy and two `ArrayQueue` operations are the only cross-core
//! traffic; a frame that needs no hand-off costs one header peek. A segment of a passive connection that lands on
//! a core without it (its flow moved queue) is caught when that core's stack answers it with an RST: the RST is
//! held back and the segment passed along the ring of cores until one has the connection (or all have said no).
//!
//! [`run_cores`] puts it together over AF_XDP: one [`Steering`] program, one [`XskDevice`] per queue, one thread per
//! queue pinned with `core_affinity`, [`super::run::run`] on each, and an orderly shutdown (FIN on every connection,
//! a bounded wait, RST for the rest) when `stop` is set.
//!
//! [`Steering`]: crate::nic::afxdp::Steering
//! [`XskDevice`]: crate::nic::afxdp::XskDevice

use core::ops::RangeInclusive;

use crossbeam_queue::ArrayQueue;

use super::Stack;
use crate::nic::{DeviceStats, FrameDevice, Transmit};
use crate::time::Instant;

/// The ephemeral port range cut into one contiguous slice per core: core `i` opens connections only from
/// [`PortPartition::range`]`(i)`, so [`PortPartition::owner`] of a reply's destination port names the core that
/// holds the connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortPartition {
    first: u16,
    ports_per_core: u32,
    cores: u32,
}

/// Why a [`PortPartition`] could not be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PartitionError {
    /// No cores, or more than the range has ports for.
    #[error("{ports} ephemeral ports cannot give {cores} cores {min} each")]
    TooFewPorts {
        /// Ports in the range.
        ports: u32,
        /// Cores asked for.
        cores: usize,
        /// The fewest ports a core may have.
        min: u32,
    },
}

impl PortPartition {
    /// The fewest ephemeral ports a core may have (its concurrent connections to one peer address and port).
    pub const MIN_PORTS_PER_CORE: u32 = 64;

    /// Cuts `range` into `cores` equal slices (the remainder, fewer than `cores` ports, goes unused). An empty
    /// `range` gives every core an empty slice and no port an owner, so every frame stays on the core whose queue it
    /// arrived on: for cores that only accept connections (their `StackConfig::ephemeral_ports` empty).
    pub fn new(range: RangeInclusive<u16>, cores: usize) -> Result<PortPartition, PartitionError> {
        let min = Self::MIN_PORTS_PER_CORE;
        if range.is_empty() {
            if cores == 0 || cores > usize::from(u16::MAX) {
                return Err(PartitionError::TooFewPorts { ports: 0, cores, min });
            }
            return Ok(PortPartition { first: 0, ports_per_core: 0, cores: cores as u32 });
        }
        let ports = u32::from(*range.end()) - u32::from(*range.start()) + 1;
        let per = if cores == 0 { 0 } else { ports / cores as u32 };
        if cores == 0 || cores > usize::from(u16::MAX) || per < min {
            return Err(PartitionError::TooFewPorts { ports, cores, min });
        }
        Ok(PortPartition { first: *range.start(), ports_per_core: per, cores: cores as u32 })
    }

    /// How many cores share the range.
    pub fn cores(&self) -> usize {
        self.cores as usize
    }

    /// Core `core`'s slice: the source ports of its active opens (empty for an empty range).
    pub fn range(&self, core: usize) -> RangeInclusive<u16> {
        if self.ports_per_core == 0 {
            return RangeInclusive::new(1, 0);
        }
        let start = u32::from(self.first) + core as u32 * self.ports_per_core;
        let end = start + self.ports_per_core - 1;
        start.min(65535) as u16..=end.min(65535) as u16
    }

    /// The core whose slice holds `port`; `None` for ports outside every slice (listening ports, for instance).
    #[inline]
    pub fn owner(&self, port: u16) -> Option<usize> {
        let offset = u32::from(port.checked_sub(self.first)?);
        let core = offset.checked_div(self.ports_per_core)?;
        (core < self.cores).then_some(core as usize)
    }
}

/// The TCP destination port of an Ethernet/IPv4/TCP frame, read without any checks beyond bounds (the owner
/// validates the frame in full); `None` for anything else, including fragments.
#[inline]
pub fn tcp_dst_port(frame: &[u8]) -> Option<u16> {
    const ETH: usize = 14;
    let ip = frame.get(ETH..)?;
    if frame[12..14] != [0x08, 0x00] || ip.len() < 20 || ip[0] >> 4 != 4 || ip[9] != 6 {
        return None;
    }
    if u16::from_be_bytes([ip[6], ip[7]]) & 0x1fff != 0 {
        return None; // a non-first fragment carries no TCP header
    }
    let ihl = usize::from(ip[0] & 0x0f) * 4;
    let ports = ip.get(ihl.max(20)..ihl.max(20) + 4)?;
    Some(u16::from_be_bytes([ports[2], ports[3]]))
}

/// One frame crossing between cores: a buffer from the owner's pool and the frame's length.
#[derive(Debug)]
struct Parcel {
    buf: Box<[u8]>,
    len: usize,
    /// Cores this frame has been offered to before: 0 for a frame sent to its port's owner, 1.. for a stray
    /// passed along the ring of cores.
    hops: u8,
}

/// One core's side of the hand-off: frames handed to it, and the free buffers others copy them into.
#[derive(Debug)]
struct Mailbox {
    inbox: ArrayQueue<Parcel>,
    free: ArrayQueue<Box<[u8]>>,
}

/// The cross-core hand-off of every core: per core a bounded lock-free inbox and a pool of frame buffers,
/// allocated once. Shared by reference between the cores' threads.
#[derive(Debug)]
pub struct Handoff {
    partition: PortPartition,
    boxes: Vec<Mailbox>,
    frame_bytes: usize,
}

impl Handoff {
    /// Mailboxes for every core of `partition`, each holding up to `frames_per_core` frames of up to `frame_bytes`
    /// bytes (at least one of each).
    pub fn new(partition: PortPartition, frames_per_core: usize, frame_bytes: usize) -> Handoff {
        let frames = frames_per_core.max(1);
        let boxes = (0..partition.cores())
            .map(|_| {
                let free = ArrayQueue::new(frames);
                for _ in 0..frames {
                    let _ = free.push(vec![0u8; frame_bytes.max(1)].into_boxed_slice());
                }
                Mailbox { inbox: ArrayQueue::new(frames), free }
            })
            .collect();
        Handoff { partition, boxes, frame_bytes }
    }

    /// The port partition the hand-off routes by.
    pub fn partition(&self) -> &PortPartition {
        &self.partition
    }

    /// Core `core`'s view of `inner`: frames for other cores' ports leave, frames handed to `core` arrive.
    pub fn device<D: FrameDevice>(&self, core: usize, inner: D) -> ShardDevice<'_, D> {
        assert!(core < self.boxes.len(), "core {core} of {}", self.boxes.len());
        ShardDevice { inner, core, handoff: self, stats: HandoffStats::default() }
    }

    /// Frames waiting in `core`'s inbox.
    pub fn pending(&self, core: usize) -> usize {
        self.boxes.get(core).map_or(0, |b| b.inbox.len())
    }

    /// Copies `frame` into `owner`'s inbox; false (the frame is dropped) when its pool or inbox is full.
    fn send(&self, owner: usize, frame: &[u8], hops: u8) -> bool {
        let mailbox = &self.boxes[owner];
        if frame.len() > self.frame_bytes {
            return false;
        }
        let Some(mut buf) = mailbox.free.pop() else { return false };
        buf[..frame.len()].copy_from_slice(frame);
        match mailbox.inbox.push(Parcel { buf, len: frame.len(), hops }) {
            Ok(()) => true,
            Err(parcel) => {
                let _ = mailbox.free.push(parcel.buf);
                false
            }
        }
    }
}

/// What one core's [`ShardDevice`] moved between cores.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct HandoffStats {
    /// Frames that arrived on this core's queue for a port of another core's slice, copied to the owner.
    pub handed_out: u64,
    /// Frames other cores handed to this one, processed here.
    pub handed_in: u64,
    /// Frames for another core dropped because its inbox or buffer pool was full (or the frame too long).
    pub handoff_dropped: u64,
    /// Segments to a listening port that found no connection here (the stack answered RST): the RST was held back
    /// and the segment passed to the next core, which may own the connection (a flow that moved queue). The
    /// stack's own `rst_sent` still counts those RSTs.
    pub strays_passed: u64,
}

/// A core's device: the queue's own device (`inner`) plus the hand-off. Frames whose destination port lies in
/// another core's slice are copied to that core instead of reaching this stack; frames handed to this core are
/// received as if they came from `inner` (replies go out through `inner`, this core's queue).
#[derive(Debug)]
pub struct ShardDevice<'h, D> {
    inner: D,
    core: usize,
    handoff: &'h Handoff,
    stats: HandoffStats,
}

impl<D> ShardDevice<'_, D> {
    /// The queue's own device.
    pub fn inner(&self) -> &D {
        &self.inner
    }

    /// The queue's own device, mutably.
    pub fn inner_mut(&mut self) -> &mut D {
        &mut self.inner
    }

    /// The hand-off counters.
    pub fn stats(&self) -> HandoffStats {
        self.stats
    }

    /// This core's index.
    pub fn core(&self) -> usize {
        self.core
    }

    /// The device without the hand-off.
    pub fn into_inner(self) -> D {
        self.inner
    }
}

impl<D: FrameDevice> Transmit for ShardDevice<'_, D> {
    fn transmit(&mut self, now: Instant, len: usize, fill: &mut dyn FnMut(&mut [u8])) -> bool {
        self.inner.transmit(now, len, fill)
    }
}

impl<D: FrameDevice> FrameDevice for ShardDevice<'_, D> {
    /// Frames handed to this core first (at most `budget`), then the queue's own; each counts against `budget`,
    /// handed-out frames included.
    fn receive(&mut self, now: Instant, budget: usize, handler: &mut dyn FnMut(&[u8], &mut dyn Transmit)) -> usize {
        let (core, handoff) = (self.core, self.handoff);
        let mailbox = &handoff.boxes[core];
        let mut n = 0;
        while n < budget {
            let Some(parcel) = mailbox.inbox.pop() else { break };
            let frame = &parcel.buf[..parcel.len];
            offer(handoff, core, frame, parcel.hops, &mut self.inner, handler, &mut self.stats);
            if parcel.hops == 0 {
                self.stats.handed_in += 1;
            }
            let _ = mailbox.free.push(parcel.buf);
            n += 1;
        }
        if n == budget {
            return n;
        }
        let stats = &mut self.stats;
        n + self.inner.receive(now, budget - n, &mut |frame, tx| {
            if let Some(owner) = tcp_dst_port(frame).and_then(|p| handoff.partition.owner(p)) {
                if owner != core {
                    if handoff.send(owner, frame, 0) {
                        stats.handed_out += 1;
                    } else {
                        stats.handoff_dropped += 1;
                    }
                    return;
                }
            }
            offer(handoff, core, frame, 0, tx, handler, stats);
        })
    }

    fn flush(&mut self, now: Instant) {
        self.inner.flush(now);
    }

    fn max_frame_len(&self) -> usize {
        self.inner.max_frame_len()
    }

    fn poll_at(&self) -> Option<Instant> {
        if !self.handoff.boxes[self.core].inbox.is_empty() {
            return Some(Instant::ZERO);
        }
        self.inner.poll_at()
    }

    /// Wakes for the queue's own frames; a frame another core hands over while this one waits is taken when the
    /// wait ends (at most the loop's longest sleep, 1 ms by default) — hand-offs are the rare path.
    fn wait(&mut self, timeout: core::time::Duration) {
        self.inner.wait(timeout)
    }
    fn device_stats(&self, out: &mut DeviceStats) {
        self.inner.device_stats(out);
    }
}

/// Bytes of an Ethernet/IPv4/TCP frame with no IP or TCP options: a bare RST.
const BARE_TCP_FRAME_BYTES: usize = 14 + 20 + 20;

/// Hands `frame` to this core's stack. A segment that may be a stray — to a port outside every slice (a listening
/// port), not a SYN opening a connection, and not yet offered to every core — is watched: if the stack answers it
/// with an RST (it has no such connection), the RST is held back and the segment goes to the next core instead.
fn offer(
    handoff: &Handoff,
    core: usize,
    frame: &[u8],
    hops: u8,
    tx: &mut dyn Transmit,
    handler: &mut dyn FnMut(&[u8], &mut dyn Transmit),
    stats: &mut HandoffStats,
) {
    let cores = handoff.boxes.len();
    let watch = usize::from(hops) + 1 < cores
        && tcp_dst_port(frame).is_some_and(|p| handoff.partition.owner(p).is_none())
        && !is_opening_syn(frame);
    if !watch {
        return handler(frame, tx);
    }
    let mut check = StrayCheck { inner: tx, rx: frame, held: false };
    handler(frame, &mut check);
    if check.held {
        if handoff.send((core + 1) % cores, frame, hops + 1) {
            stats.strays_passed += 1;
        } else {
            stats.handoff_dropped += 1;
        }
    }
}

/// A SYN without ACK: a new connection, which the core it arrived on takes.
fn is_opening_syn(frame: &[u8]) -> bool {
    tcp_flags(frame).is_some_and(|f| f & 0x12 == 0x02)
}

/// The TCP flags byte of an Ethernet/IPv4/TCP frame.
fn tcp_flags(frame: &[u8]) -> Option<u8> {
    let ihl = usize::from(frame.get(14)? & 0x0f) * 4;
    frame.get(14 + ihl.max(20) + 13).copied()
}

/// The transmit side while a possible stray is handled: holds back a bare RST answering it. `rx` has passed
/// [`tcp_dst_port`], so its IPv4 and TCP port fields are in bounds.
struct StrayCheck<'a, 'f> {
    inner: &'a mut dyn Transmit,
    rx: &'f [u8],
    held: bool,
}

impl Transmit for StrayCheck<'_, '_> {
    fn transmit(&mut self, now: Instant, len: usize, fill: &mut dyn FnMut(&mut [u8])) -> bool {
        if self.held || len != BARE_TCP_FRAME_BYTES {
            return self.inner.transmit(now, len, fill);
        }
        // Only bare segments (54 bytes) go through this copy: an RST, or an ACK of a connection without timestamps.
        let mut scratch = [0u8; BARE_TCP_FRAME_BYTES];
        fill(&mut scratch);
        // Ours has no IP options: addresses at 26..34, ports at 34..38, flags at 47. The received one may have.
        let rx_ihl = (usize::from(self.rx[14] & 0x0f) * 4).max(20);
        let rx_ports = &self.rx[14 + rx_ihl..14 + rx_ihl + 4];
        let answers_rx = scratch[30..34] == self.rx[26..30]
            && scratch[34..36] == rx_ports[2..4]
            && scratch[36..38] == rx_ports[0..2];
        if answers_rx && scratch[47] & 0x04 != 0 {
            self.held = true;
            return true;
        }
        self.inner.transmit(now, len, &mut |buf| buf.copy_from_slice(&scratch))
    }
}

/// A seed for core `core` derived from the configured one (SplitMix64 of both): every core's ISN key, port choice
/// and table hashing differ, and a run still replays from one seed.
pub fn core_seed(seed: u64, core: usize) -> u64 {
    let mut z = seed ^ (core as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Live connections of `stack` that still need the wire: not in TIME_WAIT and not closed.
#[cfg_attr(not(all(feature = "afxdp", target_os = "linux")), allow(dead_code))]
fn live_connections(stack: &Stack) -> usize {
    use crate::tcp::State;
    // From the state counts, which read a compacted connection's state off its record instead of rebuilding it.
    let counts = stack.state_counts();
    State::ALL
        .iter()
        .zip(counts)
        .filter(|(s, _)| !matches!(s, State::Listen | State::TimeWait | State::Closed))
        .map(|(_, n)| n)
        .sum()
}

#[cfg(all(feature = "afxdp", target_os = "linux"))]
mod cores;
#[cfg(all(feature = "afxdp", target_os = "linux"))]
pub use cores::*;

#[cfg(test)]
mod tests;
