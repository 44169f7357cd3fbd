//! One AF_XDP socket on one rx/tx queue pair, behind [`FrameDevice`].
//!
//! The UMEM is split once, at open: `rx_ring_frames` frames circulate fill ring → rx ring → handler → fill ring
//! (only as many lent to the kernel at once as the traffic needs: see `FillLevel`), and `tx_ring_frames` frames
//! circulate pool → tx ring → completion ring → pool. Neither side can starve the other; when the transmit pool
//! runs dry (the kernel has not completed enough frames yet) `transmit` refuses and [`XskStats::tx_pool_empty`]
//! counts it.
//!
//! Rings are touched only through xsk-rs (libxdp's reserve/submit and peek/release, with their acquire/release
//! ordering). Transmissions are batched: `transmit` writes the frame into a pool frame and queues its descriptor;
//! `flush` submits the batch to the tx ring, kicks the kernel with `sendto` when it asks (need_wakeup) and always in
//! copy mode, and takes completions back into the pool.
//!
//! [`FrameDevice::device_stats`] reports the drops by reason: ours ([`XskStats`]: `tx_ring_full`, `tx_pool_empty`,
//! `tx_too_long`, `fill_ring_full`) and the kernel's for this socket ([`XskDevice::kernel_stats`], read with one
//! `getsockopt` per call: `xdp_rx_ring_full`, `xdp_rx_fill_ring_empty_descs`, `xdp_rx_dropped`,
//! `xdp_rx_invalid_descs`, `xdp_tx_invalid_descs`).

use std::fmt;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};

use xsk_rs::config::{BindFlags, Interface, LibxdpFlags, QueueSize, SocketConfig, UmemConfig};
use xsk_rs::{CompQueue, FillQueue, FrameDesc, RxQueue, Socket, TxQueue, Umem};

use super::{AfXdpError, Result, Steering};
use crate::nic::{DeviceStats, FrameDevice, Transmit};
use crate::time::Instant;

/// The socket option that sets how many frames one `sendto` may send in copy mode (Linux 6.17 and later; older
/// kernels send 32 per call).
const XDP_MAX_TX_SKB_BUDGET: libc::c_int = 9;
/// Frames per copy-mode `sendto` on a kernel without [`XDP_MAX_TX_SKB_BUDGET`].
const DEFAULT_TX_BUDGET_FRAMES: u32 = 32;
/// Ethernet header bytes on top of the interface MTU.
const ETHERNET_HEADER_LEN: usize = 14;

/// How the socket binds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BindMode {
    /// Zero-copy where the driver has it, copy otherwise.
    Auto,
    /// Zero-copy only: fails where the driver lacks it (veth does: EOPNOTSUPP).
    ZeroCopy,
    /// Copy mode: the kernel copies each frame between the UMEM and its own buffers; works on every driver.
    Copy,
}

/// Settings of one [`XskDevice`]. Ring sizes are powers of two.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct XskConfig {
    /// The rx/tx queue of the interface to bind to; also the socket's key in the XSKMAP.
    pub queue: u32,
    /// Zero-copy, copy, or whichever works.
    pub mode: BindMode,
    /// UMEM frame size in bytes: 2048 or 4096.
    pub frame_size: u32,
    /// Size of the rx and fill rings, and the frames set aside for receiving.
    pub rx_ring_frames: u32,
    /// Size of the tx and completion rings, and the frames in the transmit pool.
    pub tx_ring_frames: u32,
    /// Bind with XDP_USE_NEED_WAKEUP: the kernel says when it needs a syscall to make progress.
    pub need_wakeup: bool,
}

impl XskConfig {
    /// Queue 0, automatic mode, 2048-byte frames, 2048-entry rings, need_wakeup on.
    pub const DEFAULT: XskConfig = XskConfig {
        queue: 0,
        mode: BindMode::Auto,
        frame_size: 2048,
        rx_ring_frames: 2048,
        tx_ring_frames: 2048,
        need_wakeup: true,
    };
}

impl Default for XskConfig {
    fn default() -> XskConfig {
        XskConfig::DEFAULT
    }
}

/// Counters of one [`XskDevice`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct XskStats {
    /// Frames taken from the rx ring.
    pub rx_frames: u64,
    /// Bytes of those frames.
    pub rx_bytes: u64,
    /// Syscalls made because the fill ring asked for a wakeup.
    pub fill_wakeups: u64,
    /// Received frames that found no room on the fill ring and waited for the next turn to go back, counted at
    /// each try (the kernel publishes how far it has read the ring lazily, so the ring can look full when it is
    /// not).
    pub fill_ring_full: u64,
    /// Frames submitted to the tx ring.
    pub tx_frames: u64,
    /// Written frames that found no room on the tx ring and waited for the next flush, counted at each try (the
    /// pool is no larger than the ring, so this stays zero unless the kernel is slow to consume it).
    pub tx_ring_full: u64,
    /// Bytes of those frames.
    pub tx_bytes: u64,
    /// `sendto` kicks.
    pub tx_kicks: u64,
    /// Kicks that failed with an error other than the transient ones (ENOBUFS, EAGAIN, EBUSY, ENETDOWN).
    pub tx_kick_errors: u64,
    /// Frames the kernel completed (back in the pool).
    pub tx_completed: u64,
    /// Transmissions refused because the pool had no free frame.
    pub tx_pool_empty: u64,
    /// Transmissions refused because the frame was longer than [`FrameDevice::max_frame_len`].
    pub tx_too_long: u64,
}

/// An AF_XDP socket on one queue, as a [`FrameDevice`]. See the [module docs](self).
pub struct XskDevice {
    rx: RxSide,
    tx: TxSide,
    queue: u32,
    mode: BindMode,
    max_frame_len: usize,
    fd: RawFd,
}

struct RxSide {
    umem: Umem,
    rx: RxQueue,
    fill: FillQueue,
    /// Descriptors of one receive batch.
    batch: Vec<FrameDesc>,
    /// Frames of the receive share not lent to the kernel, the most recently received last.
    spare: Vec<FrameDesc>,
    /// Frames lent to the kernel: on the fill ring, or written and waiting on the rx ring.
    lent: usize,
    /// How many frames to keep lent.
    level: FillLevel,
    stats: XskStats,
}

struct TxSide {
    umem: Umem,
    tx: TxQueue,
    comp: CompQueue,
    /// Free transmit frames.
    pool: Vec<FrameDesc>,
    /// Written, not yet on the tx ring.
    pending: Vec<FrameDesc>,
    /// Room for one batch of completions.
    completed: Vec<FrameDesc>,
    ring_frames: u32,
    /// The largest frame `transmit` accepts.
    max_frame_len: usize,
    /// Copy mode: every submission needs a `sendto`.
    kick_always: bool,
    /// The kernel says when it needs a `sendto` (need_wakeup); without that flag every submission gets one.
    wakeup_flag: bool,
    /// Frames one copy-mode `sendto` sends.
    budget_frames: u32,
    stats: XskStats,
}

impl fmt::Debug for XskDevice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("XskDevice")
            .field("queue", &self.queue)
            .field("mode", &self.mode)
            .field("fd", &self.fd)
            .field("tx_budget_frames", &self.tx.budget_frames)
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

fn io_err(what: &'static str) -> impl FnOnce(io::Error) -> AfXdpError {
    move |source| AfXdpError::Io { what, source }
}

/// The OS error behind an xsk-rs error, or the error itself.
/// How long `open` waits for a queue another socket still holds (see there).
const BUSY_QUEUE_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// The OS error code behind an xsk-rs error, if any.
fn os_error(e: &(dyn std::error::Error + 'static)) -> Option<i32> {
    e.source().and_then(|s| s.downcast_ref::<io::Error>()).and_then(io::Error::raw_os_error)
}

fn xsk_err(what: &'static str, e: impl std::error::Error + Send + Sync + 'static) -> AfXdpError {
    let source = match e.source().and_then(|s| s.downcast_ref::<io::Error>()) {
        Some(os) => match os.raw_os_error() {
            Some(code) => io::Error::from_raw_os_error(code),
            None => io::Error::new(os.kind(), format!("{e}: {os}")),
        },
        None => io::Error::other(e.to_string()),
    };
    AfXdpError::Io { what, source }
}

impl XskDevice {
    /// Opens an AF_XDP socket on `cfg.queue` of the interface `ifname` and puts it into `steering`'s XSKMAP, so
    /// the steering program (attached to that interface) redirects our frames to it. libxdp's own program is never
    /// loaded. Needs root.
    pub fn open(ifname: &str, cfg: &XskConfig, steering: &Steering) -> Result<XskDevice> {
        if cfg.frame_size != 2048 && cfg.frame_size != 4096 {
            return Err(AfXdpError::Config(format!("frame size {} (2048 or 4096)", cfg.frame_size)));
        }
        let ring = |n: u32| QueueSize::new(n).map_err(|e| AfXdpError::Config(e.to_string()));
        let (rx_ring, tx_ring) = (ring(cfg.rx_ring_frames)?, ring(cfg.tx_ring_frames)?);
        let if_mtu: usize = super::sysfs(ifname, "mtu")
            .map_err(io_err("read the interface MTU"))?
            .parse()
            .map_err(|e| AfXdpError::Config(format!("interface MTU: {e}")))?;
        let interface: Interface =
            ifname.parse().map_err(|_| AfXdpError::Config(format!("interface name {ifname:?}")))?;

        let modes: &[BindMode] = match cfg.mode {
            BindMode::Auto => &[BindMode::ZeroCopy, BindMode::Copy],
            BindMode::ZeroCopy => &[BindMode::ZeroCopy],
            BindMode::Copy => &[BindMode::Copy],
        };
        let mut last_err = None;
        for &mode in modes {
            let umem_cfg = UmemConfig::builder()
                .frame_size(
                    cfg.frame_size
                        .try_into()
                        .map_err(|e: xsk_rs::config::FrameSizeError| AfXdpError::Config(e.to_string()))?,
                )
                .fill_queue_size(rx_ring)
                .comp_queue_size(tx_ring)
                .frame_headroom(0)
                .build()
                .map_err(|e| AfXdpError::Config(e.to_string()))?;
            let frames = (cfg.rx_ring_frames + cfg.tx_ring_frames).try_into().expect("ring sizes are non-zero");
            let (umem, descs) = Umem::new(umem_cfg, frames, false).map_err(|e| xsk_err("create the UMEM", e))?;

            let mut bind = match mode {
                BindMode::ZeroCopy => BindFlags::XDP_ZEROCOPY,
                _ => BindFlags::XDP_COPY,
            };
            if cfg.need_wakeup {
                bind |= BindFlags::XDP_USE_NEED_WAKEUP;
            }
            let sock_cfg = SocketConfig::builder()
                .rx_queue_size(rx_ring)
                .tx_queue_size(tx_ring)
                .libxdp_flags(LibxdpFlags::XSK_LIBXDP_FLAGS_INHIBIT_PROG_LOAD)
                .bind_flags(bind)
                .build();
            // A socket of a process that just exited can hold the queue a little longer: the kernel lets its pool
            // go in deferred work, and until then a bind answers EBUSY. Wait for that, briefly, rather than fail a
            // server restarted at once.
            let mut busy_until = None;
            let created = loop {
                // SAFETY: xsk-rs requires XSK_LIBXDP_FLAGS_INHIBIT_PROG_LOAD when a shared UMEM's (interface,
                // queue) is already bound; we set it always (our own program steers), and this UMEM is fresh and
                // not shared.
                let created = unsafe { Socket::new(sock_cfg, &umem, &interface, cfg.queue) };
                match created {
                    Err(e) if os_error(&e) == Some(libc::EBUSY) => {
                        let until = *busy_until.get_or_insert_with(|| std::time::Instant::now() + BUSY_QUEUE_WAIT);
                        if std::time::Instant::now() >= until {
                            break Err(e);
                        }
                        std::thread::sleep(std::time::Duration::from_millis(10));
                    }
                    created => break created,
                }
            };
            let (tx, rx, fq_cq) = match created {
                Ok(parts) => parts,
                Err(e) => {
                    last_err = Some(xsk_err(
                        if mode == BindMode::ZeroCopy { "bind in zero-copy mode" } else { "bind in copy mode" },
                        e,
                    ));
                    continue;
                }
            };
            let (fill, comp) =
                fq_cq.ok_or_else(|| AfXdpError::Config("the UMEM came without fill/comp rings".into()))?;
            let fd = rx.fd().as_raw_fd();
            let max_frame_len = (umem_cfg.mtu() as usize).min(if_mtu + ETHERNET_HEADER_LEN);
            let (rx_descs, tx_descs) = descs.split_at(cfg.rx_ring_frames as usize);

            let mut dev = XskDevice {
                rx: RxSide {
                    umem: umem.clone(),
                    rx,
                    fill,
                    batch: vec![FrameDesc::default(); cfg.rx_ring_frames as usize],
                    spare: rx_descs.to_vec(),
                    lent: 0,
                    level: FillLevel::new(rx_descs.len()),
                    stats: XskStats::default(),
                },
                tx: TxSide {
                    umem,
                    tx,
                    comp,
                    pool: tx_descs.to_vec(),
                    pending: Vec::with_capacity(cfg.tx_ring_frames as usize),
                    completed: vec![FrameDesc::default(); cfg.tx_ring_frames as usize],
                    ring_frames: cfg.tx_ring_frames,
                    max_frame_len,
                    kick_always: mode == BindMode::Copy,
                    wakeup_flag: cfg.need_wakeup,
                    budget_frames: DEFAULT_TX_BUDGET_FRAMES,
                    stats: XskStats::default(),
                },
                queue: cfg.queue,
                mode,
                max_frame_len,
                fd,
            };
            // The first fill: the frames are this UMEM's, fresh from Umem::new, in no other ring or pool.
            dev.rx.top_up(rx_descs.len());
            if dev.rx.lent != rx_descs.len() {
                let lent = dev.rx.lent;
                return Err(AfXdpError::Config(format!("fill ring took {lent} of {} frames", rx_descs.len())));
            }
            if mode == BindMode::Copy {
                dev.tx.budget_frames = dev.raise_tx_budget();
            }
            steering.register_socket(cfg.queue, dev.as_fd())?;
            return Ok(dev);
        }
        Err(last_err.unwrap_or_else(|| AfXdpError::Config("no bind mode to try".into())))
    }

    /// Raises the frames one copy-mode `sendto` may send, as far as the kernel allows; returns the budget in force.
    fn raise_tx_budget(&self) -> u32 {
        let mut want = self.tx.ring_frames;
        while want > DEFAULT_TX_BUDGET_FRAMES {
            // SAFETY: `self.fd` is our open AF_XDP socket; optval points at a live u32 whose size is passed as
            // optlen, and the kernel only reads it.
            let rc = unsafe {
                libc::setsockopt(
                    self.fd,
                    libc::SOL_XDP,
                    XDP_MAX_TX_SKB_BUDGET,
                    (&want as *const u32).cast(),
                    core::mem::size_of::<u32>() as libc::socklen_t,
                )
            };
            if rc == 0 {
                return want;
            }
            if io::Error::last_os_error().raw_os_error() == Some(libc::ENOPROTOOPT) {
                break; // an older kernel: 32 per call
            }
            want /= 2; // the kernel caps it (at half the tx ring)
        }
        DEFAULT_TX_BUDGET_FRAMES
    }

    /// The queue this socket is bound to.
    pub fn queue(&self) -> u32 {
        self.queue
    }

    /// The mode the socket is bound in: [`BindMode::ZeroCopy`] or [`BindMode::Copy`].
    pub fn mode(&self) -> BindMode {
        self.mode
    }

    /// Frames one copy-mode kick sends (raised with XDP_MAX_TX_SKB_BUDGET where the kernel has it).
    pub fn tx_budget_frames(&self) -> u32 {
        self.tx.budget_frames
    }

    /// Free frames in the transmit pool.
    pub fn tx_pool_free(&self) -> usize {
        self.tx.pool.len()
    }

    /// The device's counters.
    pub fn stats(&self) -> XskStats {
        let (r, t) = (&self.rx.stats, &self.tx.stats);
        XskStats {
            rx_frames: r.rx_frames,
            rx_bytes: r.rx_bytes,
            fill_wakeups: r.fill_wakeups,
            fill_ring_full: r.fill_ring_full,
            ..*t
        }
    }

    /// The kernel's counters for this socket (drops for a full rx ring, an empty fill ring, bad descriptors).
    pub fn kernel_stats(&self) -> Result<xsk_rs::socket::XdpStatistics> {
        self.rx.rx.fd().xdp_statistics().map_err(io_err("read XDP_STATISTICS"))
    }

    /// Waits up to `timeout_ms` milliseconds for received frames (poll(2) on the socket); true if some wait.
    pub fn wait_rx(&mut self, timeout_ms: i32) -> Result<bool> {
        self.rx.rx.poll(timeout_ms).map_err(io_err("poll the AF_XDP socket"))
    }
}

impl AsFd for XskDevice {
    fn as_fd(&self) -> BorrowedFd<'_> {
        // SAFETY: `fd` is the socket's descriptor, held open by the xsk-rs queues this device owns; the borrow
        // cannot outlive `self`, so it cannot outlive them.
        unsafe { BorrowedFd::borrow_raw(self.fd) }
    }
}

/// The fewest receive frames kept on the fill ring (see [`FillLevel`]).
const FILL_LEVEL_MIN: usize = 512;
/// Batches per window of [`FillLevel`]'s look back.
const FILL_WINDOW_BATCHES: u32 = 1 << 16;

/// How many receive frames to lend the kernel at once.
///
/// The kernel writes the fill ring's frames in the order they were put there, so a ring holding every receive
/// frame cycles through all of them (4 MiB of UMEM at the defaults) and each frame it writes has long left the
/// caches; with one message in flight that alone cost 1.5–8% of the round trips a second on our test machine
/// (docs/benchmarks.md). So only the level's worth is lent, and the ring is topped up with the frames received last.
///
/// The level follows the frames the kernel has written by the time a batch is taken (the batch and what still
/// waits on the rx ring): it grows at once to four times the frames written when they reach half of it, and halves,
/// down to [`FILL_LEVEL_MIN`], when a window of [`FILL_WINDOW_BATCHES`] batches never saw more than a sixteenth of
/// it written. Before the loop sleeps every frame is lent (a burst may come while it is not there to give frames
/// back), so the level is low only while the loop polls and takes frames as fast as they come.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FillLevel {
    level: usize,
    capacity: usize,
    /// Batches in this window, and the most frames written at one in it.
    batches: u32,
    peak: usize,
}

impl FillLevel {
    fn new(capacity: usize) -> FillLevel {
        FillLevel { level: capacity, capacity, batches: 0, peak: 0 }
    }

    /// Every frame, and a new window: for a loop about to sleep.
    fn all(&mut self) -> usize {
        *self = FillLevel::new(self.capacity);
        self.level
    }

    /// The level after a receive batch found `written` frames written (empty batches of an idle loop count too).
    fn after_batch(&mut self, written: usize) -> usize {
        if written * 2 >= self.level && self.level < self.capacity {
            self.level = (written * 4).next_power_of_two().min(self.capacity);
        }
        self.peak = self.peak.max(written);
        self.batches += 1;
        if self.batches == FILL_WINDOW_BATCHES {
            if self.peak * 16 <= self.level {
                self.level = (self.level / 2).max(FILL_LEVEL_MIN.min(self.capacity));
            }
            self.batches = 0;
            self.peak = 0;
        }
        self.level
    }
}

impl RxSide {
    /// Takes back the `got` frames of the last batch, `backlog` more waiting on the rx ring, and tops the fill
    /// ring up to the [`FillLevel`]; wakes the driver if it asks.
    fn refill(&mut self, got: usize, backlog: usize) {
        self.lent -= got;
        self.spare.extend_from_slice(&self.batch[..got]);
        let level = self.level.after_batch(got + backlog);
        self.top_up(level);
        if self.fill.needs_wakeup() {
            self.stats.fill_wakeups += 1;
            // A poll(2) with no wait: the driver refills its rx descriptors from the fill ring.
            let _ = self.fill.wakeup(self.rx.fd_mut(), 0);
        }
    }

    /// Lends frames, the ones received last first, until `level` are lent.
    fn top_up(&mut self, level: usize) {
        let want = level.saturating_sub(self.lent).min(self.spare.len());
        if want == 0 {
            return;
        }
        // libxdp reserves all or nothing, and the kernel publishes how far it has read the ring lazily: when the
        // ring looks too full for all, lend what it has room for.
        let mut n = self.lend(want);
        if n == 0 {
            let room = self.fill.nb_free_exact() as usize;
            if room > 0 {
                n = self.lend(room.min(want));
            }
        }
        self.stats.fill_ring_full += (want - n) as u64;
    }

    /// Puts the last `n` spare frames on the fill ring, all or none; how many went.
    fn lend(&mut self, n: usize) -> usize {
        let from = self.spare.len() - n;
        // SAFETY: frames of this UMEM that we received and finished with (the handler's borrows of them ended
        // with its calls) or never lent; no slice of them is alive.
        let lent = unsafe { self.fill.produce(&self.spare[from..]) };
        self.spare.truncate(self.spare.len() - lent);
        self.lent += lent;
        lent
    }
}

impl TxSide {
    /// Takes completed frames back into the pool.
    fn reclaim(&mut self) {
        // SAFETY: the completion ring hands back addresses of our transmit frames that the kernel is done with;
        // they go to the pool and are written again only after this.
        let n = unsafe { self.comp.consume(&mut self.completed) };
        self.pool.extend_from_slice(&self.completed[..n]);
        self.stats.tx_completed += n as u64;
    }

    /// Moves pending descriptors onto the tx ring.
    fn submit(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        // SAFETY: each pending descriptor is a pool frame of this UMEM we have just written and will not touch
        // until the completion ring returns it.
        let n = unsafe { self.tx.produce(&self.pending) };
        self.stats.tx_ring_full += (self.pending.len() - n) as u64;
        for d in &self.pending[..n] {
            self.stats.tx_bytes += d.lengths().data() as u64;
        }
        self.stats.tx_frames += n as u64;
        self.pending.drain(..n);
    }

    /// Frames on the tx ring the kernel has not taken yet.
    fn unsent(&mut self) -> u32 {
        self.ring_frames - self.tx.nb_free_exact().min(self.ring_frames)
    }

    fn kick(&mut self) {
        self.stats.tx_kicks += 1;
        if self.tx.wakeup().is_err() {
            self.stats.tx_kick_errors += 1;
        }
    }

    fn flush(&mut self) {
        self.submit();
        if self.kick_always {
            // Copy mode sends only inside sendto, at most `budget_frames` per call: as many calls as that takes.
            // Whether a call sent anything cannot be told from the ring: kernels before 6.17 publish its consumer
            // index only once every descriptor they looked at is sent, so after a call that stopped at the budget
            // it has not moved. Only a ring seen empty ends the calls early (a busy device costs at most these).
            for _ in 0..self.unsent().div_ceil(self.budget_frames) {
                self.kick();
                if self.unsent() == 0 {
                    break;
                }
            }
        } else if (!self.wakeup_flag || self.tx.needs_wakeup()) && self.unsent() > 0 {
            self.kick();
        }
        self.reclaim();
        // Room opened on the ring: pending frames go now rather than waiting for the next flush.
        if !self.pending.is_empty() {
            self.submit();
        }
    }
}

impl Transmit for TxSide {
    fn transmit(&mut self, _now: Instant, len: usize, fill: &mut dyn FnMut(&mut [u8])) -> bool {
        if len > self.max_frame_len {
            self.stats.tx_too_long += 1;
            return false;
        }
        if self.pool.is_empty() {
            self.reclaim();
        }
        let Some(mut desc) = self.pool.pop() else {
            self.stats.tx_pool_empty += 1;
            return false;
        };
        {
            // SAFETY: `desc` is a pool frame of this UMEM: not on any ring, so neither the kernel nor another
            // slice touches it while this one lives (it ends with this block).
            let mut data = unsafe { self.umem.data_mut(&mut desc) };
            data.cursor().set_pos(len);
            let buf = data.contents_mut();
            debug_assert_eq!(buf.len(), len, "max_frame_len fits the UMEM frame");
            fill(buf);
        }
        self.pending.push(desc);
        if self.pending.len() >= self.ring_frames as usize / 2 {
            self.flush(); // a large burst: don't hold half the pool back
        }
        true
    }
}

impl Transmit for XskDevice {
    fn transmit(&mut self, now: Instant, len: usize, fill: &mut dyn FnMut(&mut [u8])) -> bool {
        self.tx.transmit(now, len, fill)
    }
}

impl FrameDevice for XskDevice {
    fn receive(&mut self, _now: Instant, budget: usize, handler: &mut dyn FnMut(&[u8], &mut dyn Transmit)) -> usize {
        let want = budget.min(self.rx.batch.len());
        if want == 0 {
            return 0;
        }
        // SAFETY: the descriptors filled in are frames of our UMEM that the kernel has written and hands to us;
        // it will not write them again until we put them back on the fill ring in `refill`, after the handler.
        let got = unsafe { self.rx.rx.consume(&mut self.rx.batch[..want]) };
        for desc in &self.rx.batch[..got] {
            // SAFETY: `desc` is a received frame of this UMEM (see above); only shared slices of it exist, and
            // this one ends with the handler call, before the frame goes back to the kernel.
            let data = unsafe { self.rx.umem.data(desc) };
            self.rx.stats.rx_frames += 1;
            self.rx.stats.rx_bytes += data.contents().len() as u64;
            handler(data.contents(), &mut self.tx);
        }
        // A full batch may have left frames behind: count them (libxdp's cached producer index, read again only
        // when the cache is empty) so that the fill level sees the whole burst.
        let backlog = if got == want { self.rx.rx.nb_avail(u32::MAX) as usize } else { 0 };
        self.rx.refill(got, backlog);
        got
    }

    fn flush(&mut self, _now: Instant) {
        self.tx.flush();
    }

    fn max_frame_len(&self) -> usize {
        self.max_frame_len
    }

    /// Lends every receive frame (see [`FillLevel`]), then blocks in `ppoll` on the socket until a frame is on the rx
    /// ring or `timeout` passes: an idle loop sleeps without missing a frame by a whole sleep, and wakes in the time
    /// the scheduler takes.
    fn wait(&mut self, timeout: core::time::Duration) {
        let all = self.rx.level.all();
        self.rx.top_up(all);
        let mut pfd = libc::pollfd { fd: self.fd, events: libc::POLLIN, revents: 0 };
        let ts = libc::timespec {
            tv_sec: timeout.as_secs().min(i32::MAX as u64) as libc::time_t,
            tv_nsec: timeout.subsec_nanos() as libc::c_long,
        };
        // SAFETY: one valid pollfd and a valid timespec, both alive for the call; no signal mask is changed. An
        // error (EINTR from a signal) only ends the wait early, which the loop takes like a wake-up.
        unsafe { libc::ppoll(&mut pfd, 1, &ts, core::ptr::null()) };
    }

    /// Our drops by reason, then the kernel's (one `getsockopt`; left out if it fails), then the wakeup counts.
    fn device_stats(&self, out: &mut DeviceStats) {
        let s = self.stats();
        out.drops.extend([
            ("tx_ring_full", s.tx_ring_full),
            ("tx_pool_empty", s.tx_pool_empty),
            ("tx_too_long", s.tx_too_long),
            ("fill_ring_full", s.fill_ring_full),
        ]);
        let kernel = self.kernel_stats().ok();
        if let Some(k) = &kernel {
            out.drops.extend([
                ("xdp_rx_ring_full", k.rx_ring_full()),
                ("xdp_rx_fill_ring_empty_descs", k.rx_fill_ring_empty_descs()),
                ("xdp_rx_dropped", k.rx_dropped()),
                ("xdp_rx_invalid_descs", k.rx_invalid_descs()),
                ("xdp_tx_invalid_descs", k.tx_invalid_descs()),
            ]);
        }
        out.values.extend([
            ("tx_kicks", s.tx_kicks),
            ("tx_kick_errors", s.tx_kick_errors),
            ("fill_wakeups", s.fill_wakeups),
            ("fill_level", self.rx.level.level as u64),
        ]);
        if let Some(k) = &kernel {
            out.values.push(("xdp_tx_ring_empty_descs", k.tx_ring_empty_descs()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs one whole window of batches that each found `written` frames written; the level after it.
    fn window(f: &mut FillLevel, written: usize) -> usize {
        for _ in 1..FILL_WINDOW_BATCHES {
            f.after_batch(written);
        }
        f.after_batch(written)
    }

    #[test]
    fn the_fill_level_starts_with_every_frame_and_halves_through_calm_windows_down_to_the_minimum() {
        let mut f = FillLevel::new(2048);
        assert_eq!(f.level, 2048);
        assert_eq!(f.after_batch(0), 2048, "the level moves at a window's end only");
        for _ in 2..FILL_WINDOW_BATCHES {
            f.after_batch(1);
        }
        assert_eq!(f.after_batch(1), 1024);
        assert_eq!(window(&mut f, 64), 512, "64 is a sixteenth of 1024");
        assert_eq!(window(&mut f, 0), FILL_LEVEL_MIN);
        assert_eq!(window(&mut f, 0), FILL_LEVEL_MIN, "never under the minimum");
    }

    #[test]
    fn a_window_that_wrote_over_a_sixteenth_keeps_the_level() {
        let mut f = FillLevel::new(2048);
        assert_eq!(window(&mut f, 1), 1024);
        f.after_batch(65);
        assert_eq!(window(&mut f, 1), 1024, "one batch over a sixteenth in the window");
        assert_eq!(window(&mut f, 1), 512);
    }

    #[test]
    fn frames_written_reaching_half_the_level_take_it_to_four_times_them_at_once() {
        let mut f = FillLevel::new(4096);
        window(&mut f, 0);
        window(&mut f, 0);
        window(&mut f, 0);
        assert_eq!(f.level, FILL_LEVEL_MIN);
        assert_eq!(f.after_batch(FILL_LEVEL_MIN / 2 - 1), FILL_LEVEL_MIN, "under half: no change");
        assert_eq!(f.after_batch(FILL_LEVEL_MIN / 2), 2 * FILL_LEVEL_MIN);
        assert_eq!(f.after_batch(600), 4096, "four times 600, to a power of two, at most every frame");
    }

    #[test]
    fn a_loop_about_to_sleep_lends_every_frame_again() {
        let mut f = FillLevel::new(2048);
        window(&mut f, 0);
        window(&mut f, 0);
        assert_eq!(f.level, FILL_LEVEL_MIN);
        f.after_batch(1);
        assert_eq!(f.all(), 2048);
        assert_eq!(f.after_batch(1), 2048, "a new window starts");
    }

    #[test]
    fn a_ring_smaller_than_the_minimum_lends_every_frame() {
        let mut f = FillLevel::new(64);
        assert_eq!(window(&mut f, 0), 64);
        assert_eq!(f.after_batch(64), 64);
    }
}
