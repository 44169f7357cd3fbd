//! Frame I/O behind one small trait.
//!
//! A [`FrameDevice`] hands received frames to a handler in batches and lets the handler transmit replies while
//! the received frame is still borrowed (an AF_XDP rx descriptor and a tx descriptor are different UMEM frames, so
//! a device can lend both at once). Wrappers — the fault injector and the pcap tap — implement the same trait
//! around any inner device, so the simulator's faults can later sit around the AF_XDP device unchanged.

use crate::time::Instant;

#[cfg(all(feature = "afxdp", target_os = "linux"))]
pub mod afxdp;
pub mod defrag;
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

    /// Adds the device's own counts to `out`: frames it dropped or held back, by reason, and its other
    /// statistics. For `xtcp stat` and the summary at exit, so it is called when a snapshot is made, never per
    /// packet, and may cost a syscall (an AF_XDP socket reads the kernel's XDP_STATISTICS). A wrapper adds its inner
    /// device's. By default a device counts nothing of its own.
    fn device_stats(&self, out: &mut DeviceStats) {
        let _ = out;
    }
}

/// What a device counts beyond what the stack does, by name: see [`FrameDevice::device_stats`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeviceStats {
    /// Frames dropped or held back in the device, by reason (`tx_pool_empty`, `fill_ring_full`, the kernel's
    /// `xdp_rx_ring_full`...), named as the device's own counters are. Frames a device refused to send are also
    /// in the stack's `tx_full` drops; the others the stack never saw.
    pub drops: Vec<(&'static str, u64)>,
    /// Other statistics (`tx_kicks`, `fill_wakeups`...).
    pub values: Vec<(&'static str, u64)>,
}

impl DeviceStats {
    /// The stats of `dev`.
    pub fn of(dev: &(impl FrameDevice + ?Sized)) -> DeviceStats {
        let mut out = DeviceStats::default();
        dev.device_stats(&mut out);
        out
    }

    /// The drops for `reason`, if the device counts it.
    pub fn dropped(&self, reason: &str) -> Option<u64> {
        self.drops.iter().find(|(n, _)| *n == reason).map(|&(_, v)| v)
    }

    /// The drops that are not zero.
    pub fn nonzero_drops(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        self.drops.iter().copied().filter(|&(_, v)| v > 0)
    }
}
