//! A wrapper that shows every frame crossing a device to a callback — the demo prints them like tcpdump.

use crate::nic::{DeviceStats, FrameDevice, Transmit};
use crate::time::Instant;

/// Which way a frame crossed the device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Received from the device.
    Rx,
    /// Handed to the device.
    Tx,
}

/// Calls `F` with each frame received from or sent to `D`, then passes it on unchanged.
pub struct Tracer<D, F> {
    inner: D,
    on_frame: F,
}

impl<D, F> core::fmt::Debug for Tracer<D, F> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("Tracer")
    }
}

impl<D: FrameDevice, F: FnMut(Instant, Direction, &[u8])> Tracer<D, F> {
    /// Wraps `inner`.
    pub fn new(inner: D, on_frame: F) -> Tracer<D, F> {
        Tracer { inner, on_frame }
    }

    /// The wrapped device.
    pub fn into_inner(self) -> D {
        self.inner
    }
}

struct TraceTx<'a, F> {
    inner: &'a mut dyn Transmit,
    on_frame: &'a mut F,
}

impl<F: FnMut(Instant, Direction, &[u8])> Transmit for TraceTx<'_, F> {
    fn transmit(&mut self, now: Instant, len: usize, fill: &mut dyn FnMut(&mut [u8])) -> bool {
        let on_frame = &mut *self.on_frame;
        self.inner.transmit(now, len, &mut |buf| {
            fill(buf);
            on_frame(now, Direction::Tx, buf);
        })
    }
}

impl<D: FrameDevice, F: FnMut(Instant, Direction, &[u8])> Transmit for Tracer<D, F> {
    fn transmit(&mut self, now: Instant, len: usize, fill: &mut dyn FnMut(&mut [u8])) -> bool {
        TraceTx { inner: &mut self.inner, on_frame: &mut self.on_frame }.transmit(now, len, fill)
    }
}

impl<D: FrameDevice, F: FnMut(Instant, Direction, &[u8])> FrameDevice for Tracer<D, F> {
    fn receive(&mut self, now: Instant, budget: usize, handler: &mut dyn FnMut(&[u8], &mut dyn Transmit)) -> usize {
        let on_frame = &mut self.on_frame;
        self.inner.receive(now, budget, &mut |frame, tx| {
            on_frame(now, Direction::Rx, frame);
            handler(frame, &mut TraceTx { inner: tx, on_frame: &mut *on_frame });
        })
    }

    fn flush(&mut self, now: Instant) {
        self.inner.flush(now)
    }

    fn max_frame_len(&self) -> usize {
        self.inner.max_frame_len()
    }

    fn poll_at(&self) -> Option<Instant> {
        self.inner.poll_at()
    }

    fn wait(&mut self, timeout: core::time::Duration) {
        self.inner.wait(timeout)
    }
    fn device_stats(&self, out: &mut DeviceStats) {
        self.inner.device_stats(out);
    }
}
