//! A device whose transmissions come back as its own receptions: one stack talking to itself, for tests and for
//! measuring the stack without a NIC.

use std::collections::VecDeque;

use crate::nic::{DeviceStats, FrameDevice, Transmit};
use crate::time::Instant;

/// Frames sent are received on the next [`FrameDevice::receive`], in order. Bounded: a full queue refuses.
#[derive(Debug)]
pub struct Loopback {
    queue: VecDeque<Vec<u8>>,
    spare: Vec<Vec<u8>>,
    capacity: usize,
    max_frame_len: usize,
    /// Frames refused because the queue was full.
    pub tx_ring_full: u64,
    /// Frames refused because they were longer than the device's frame size.
    pub tx_too_long: u64,
}

impl Loopback {
    /// A loopback holding at most `capacity` frames of at most `max_frame_len` bytes.
    pub fn new(capacity: usize, max_frame_len: usize) -> Loopback {
        Loopback {
            queue: VecDeque::with_capacity(capacity),
            spare: Vec::with_capacity(capacity),
            capacity,
            max_frame_len,
            tx_ring_full: 0,
            tx_too_long: 0,
        }
    }
}

impl Transmit for Loopback {
    fn transmit(&mut self, _now: Instant, len: usize, fill: &mut dyn FnMut(&mut [u8])) -> bool {
        if len > self.max_frame_len {
            self.tx_too_long += 1;
            return false;
        }
        if self.queue.len() >= self.capacity {
            self.tx_ring_full += 1;
            return false;
        }
        let mut frame = self.spare.pop().unwrap_or_default();
        frame.clear();
        frame.resize(len, 0);
        fill(&mut frame);
        self.queue.push_back(frame);
        true
    }
}

impl FrameDevice for Loopback {
    fn receive(&mut self, _now: Instant, budget: usize, handler: &mut dyn FnMut(&[u8], &mut dyn Transmit)) -> usize {
        // Only what was queued before this call: replies go round on the next one.
        let n = budget.min(self.queue.len());
        for _ in 0..n {
            let Some(frame) = self.queue.pop_front() else { break };
            handler(&frame, self);
            if self.spare.len() < self.capacity {
                self.spare.push(frame);
            }
        }
        n
    }

    fn flush(&mut self, _now: Instant) {}

    fn max_frame_len(&self) -> usize {
        self.max_frame_len
    }

    fn poll_at(&self) -> Option<Instant> {
        (!self.queue.is_empty()).then_some(Instant::ZERO)
    }

    fn device_stats(&self, out: &mut DeviceStats) {
        out.drops.extend([("tx_ring_full", self.tx_ring_full), ("tx_too_long", self.tx_too_long)]);
    }
}
