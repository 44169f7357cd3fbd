//! Frame I/O behind one small trait.
//!
//! A [`FrameDevice`] hands received frames to a handler in batches and lets the handler transmit replies while
//! the received frame is still borrowed (an AF_XDP rx descriptor and a tx descriptor are different UMEM frames, so
//! a device can lend both at once). Wrappers — the fault injector and the pcap tap — implement the same trait
//! around any inner device, so the simulator's faults can later sit around the AF_XDP device unchanged.

use crate::time::Instant;

#[cfg(all(feature = "afxdp", target_os = "linux"))]
pub mod afxdp;
pub mod fault;
pub mod loopback;
pub mod neigh;
pub mod pcap;
pub mod sim;
pub mod trace;

/// The transmit half of a device.
pub trait Transmit {
    /// Queues one frame of `len` bytes, written by `fill` straight into the device's buffer.
    ///
    /// Returns false, and queues nothing, when the device has no room (ring full, pool empty) or `len` exceeds the
    /// device's frame size; the device counts it.
    fn transmit(&mut self, now: Instant, len: usize, fill: &mut dyn FnMut(&mut [u8])) -> bool;
}

/// A source and sink of Ethernet frames.
pub trait FrameDevice: Transmit {
    /// Hands up to `budget` received frames, one at a time, to `handler` together with the transmit half.
    /// Returns how many frames were handed over.
    fn receive(&mut self, now: Instant, budget: usize, handler: &mut dyn FnMut(&[u8], &mut dyn Transmit)) -> usize;

    /// Pushes queued transmissions out (kicks the driver). A device may also send as it goes.
    fn flush(&mut self, now: Instant);

    /// The largest frame, in bytes, this device carries (Ethernet header included, FCS excluded).
    fn max_frame_len(&self) -> usize;

    /// The earliest time at which this device will have something to deliver without new input (a delayed frame
    /// in a simulator or a fault wrapper); `None` when it has nothing pending.
    fn poll_at(&self) -> Option<Instant> {
        None
    }

    /// The idle loop's sleep: returns after `timeout`, or sooner once a frame may have arrived (a device with
    /// something to wait on, such as an AF_XDP socket, wakes at once; others just sleep).
    fn wait(&mut self, timeout: core::time::Duration) {
        std::thread::sleep(timeout);
    }
}
