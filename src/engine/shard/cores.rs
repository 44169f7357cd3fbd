//! [`run_cores`]: the shards over AF_XDP, one pinned thread per rx queue.

use core::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use core::time::Duration;
use std::net::Ipv4Addr;
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};

use super::{core_seed, live_connections, Handoff, HandoffStats, PartitionError, PortPartition};
use crate::app::App;
use crate::engine::control::{ControlConfig, ControlServer};
use crate::engine::rss::Rss;
use crate::engine::run::{run_with, RunOptions, RunStats};
use crate::engine::{Counters, PortFilter, Stack, StackConfig, StackEvent};
use crate::nic::afxdp::{self, AfXdpError, QueueCounters, Steering, XskConfig, XskDevice, XskStats};
use crate::nic::defrag::{Defrag, DefragConfig};
use crate::nic::pcap::{PcapConfig, PcapTap};
use crate::nic::{DeviceStats, FrameDevice, Transmit};
use crate::time::Instant;
use crate::wire::EthernetAddress;

/// What [`run_cores`] needs to know.
#[derive(Debug, Clone)]
pub struct CoresConfig {
    /// The interface to serve on.
    pub ifname: String,
    /// Every core's stack settings: address, TCP settings, limits. Each core gets its own slice of
    /// `ephemeral_ports` ([`PortPartition`]), which the steering program takes from the kernel whole, and a seed
    /// derived from `seed` ([`core_seed`]). An empty `ephemeral_ports` is for cores that only accept connections:
    /// no port beyond `ports` is steered, and the kernel keeps every other one.
    pub stack: StackConfig,
    /// Cores to run, on queues `first_queue..first_queue + cores`; `None` takes every rx queue from `first_queue`.
    pub cores: Option<usize>,
    /// The rx queue of core 0 (0 on a NIC; 1 on veth set up with `scripts/netns.sh --xps-rxqs`, see
    /// `docs/multicore.md`).
    pub first_queue: u32,
    /// Pin core `i` to the `i`-th CPU this process may run on (wrapping when there are fewer CPUs than cores).
    pub pin: bool,
    /// AF_XDP settings of every socket (`queue` is set per core).
    pub xsk: XskConfig,
    /// TCP ports to steer to xtcp besides the ephemeral range: the applications' listening ports.
    pub ports: Vec<u16>,
    /// Static neighbour entries every core's stack starts with (peer address → MAC), for active opens.
    pub neighbors: Vec<(Ipv4Addr, EthernetAddress)>,
    /// How each loop waits when idle.
    pub run: RunOptions,
    /// Frames each core's hand-off inbox holds (its buffer pool has as many).
    pub handoff_frames: usize,
    /// At shutdown, how long connections get to finish after our FIN before they are reset.
    pub shutdown_grace: Duration,
    /// Record each core's frames to a pcap file: `PATH` itself with one core, else `PATH` with `-coreN` before its
    /// extension.
    pub pcap: Option<PathBuf>,
    /// The NIC's RSS key and indirection table, when it hashes flows to queues with Toeplitz: each core then opens
    /// connections only from source ports whose replies the NIC puts on its own queue.
    pub rss: Option<Rss>,
    /// Give each core an `xtcp stat` socket with these settings (`core`, `queue` and `interface` are set per core).
    pub control: Option<ControlConfig>,
}

impl CoresConfig {
    /// Defaults for serving on `ifname` with `stack`: as many cores as rx queues, pinned, default AF_XDP settings,
    /// 1024 hand-off frames per core, a 2 s shutdown grace.
    pub fn new(ifname: &str, stack: StackConfig) -> CoresConfig {
        CoresConfig {
            ifname: ifname.to_owned(),
            stack,
            cores: None,
            first_queue: 0,
            pin: true,
            xsk: XskConfig::DEFAULT,
            ports: Vec::new(),
            neighbors: Vec::new(),
            run: RunOptions::default(),
            handoff_frames: 1024,
            shutdown_grace: Duration::from_secs(2),
            pcap: None,
            rss: None,
            control: None,
        }
    }
}

/// Why [`run_cores`] could not run.
#[derive(Debug, thiserror::Error)]
pub enum CoresError {
    /// Loading the steering program or opening a socket failed.
    #[error("core {core}: {source}")]
    AfXdp {
        /// The core (queue) that failed, or 0 for the steering program.
        core: usize,
        /// What went wrong.
        source: AfXdpError,
    },
    /// The interface is missing or unreadable.
    #[error("interface {ifname}: {source}")]
    Interface {
        /// The interface.
        ifname: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// The ephemeral range is too small for the cores.
    #[error(transparent)]
    Partition(#[from] PartitionError),
    /// No cores, or more queues than the steering program serves.
    #[error(
        "{cores} cores from rx queue {first_queue}: xtcp serves from 1 to {max} queues, numbered below {max} \
         (XTCP_MAX_QUEUES) — run fewer cores or from a lower queue"
    )]
    Queues {
        /// Core 0's queue.
        first_queue: u32,
        /// Cores asked for.
        cores: usize,
        /// Queues the steering program's maps hold.
        max: u32,
    },
    /// A pcap file could not be created.
    #[error("creating {path}: {source}")]
    Pcap {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// A core's thread panicked.
    #[error("core {0} panicked")]
    Panicked(usize),
}

/// An application chosen at run time, for [`run_cores`] (`|core| DynApp(Box::new(Echo::new(port)))`).
pub struct DynApp(pub Box<dyn App + Send>);

impl core::fmt::Debug for DynApp {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("DynApp(..)")
    }
}

impl App for DynApp {
    fn start(&mut self, stack: &mut Stack, now: Instant) {
        self.0.start(stack, now);
    }

    fn on_event(&mut self, stack: &mut Stack, now: Instant, event: StackEvent) {
        self.0.on_event(stack, now, event);
    }

    fn on_tick(&mut self, stack: &mut Stack, now: Instant) {
        self.0.on_tick(stack, now);
    }

    fn done(&self) -> bool {
        self.0.done()
    }
}

/// How the shutdown went on one core.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ShutdownStats {
    /// Connections sent a FIN when the shutdown began.
    pub closed: usize,
    /// Connections still open when the grace ran out, reset.
    pub aborted: usize,
    /// Connections left in TIME_WAIT when the core stopped.
    pub time_wait: usize,
}

/// What one core did.
#[derive(Debug)]
pub struct CoreReport<A> {
    /// The core's index.
    pub core: usize,
    /// Its rx/tx queue.
    pub queue: u32,
    /// The CPU it was pinned to (`None`: not pinned, or pinning failed).
    pub cpu: Option<usize>,
    /// Its slice of the ephemeral ports.
    pub ephemeral_ports: RangeInclusive<u16>,
    /// Its application, as it ended.
    pub app: A,
    /// Its stack's counters.
    pub counters: Counters,
    /// Its loop's turns and sleeps.
    pub run: RunStats,
    /// Frames it handed to other cores and took from them.
    pub handoff: HandoffStats,
    /// Its AF_XDP socket's counters (`None` when a device wrapper hid the socket).
    pub xsk: Option<XskStats>,
    /// What its device counted as it stopped: drops by reason (the socket's and the kernel's XDP_STATISTICS for
    /// it, through any wrapper that passes them on) and other statistics.
    pub device: DeviceStats,
    /// The steering program's counters for its queue.
    pub steering: QueueCounters,
    /// How its shutdown went.
    pub shutdown: ShutdownStats,
}

/// What [`run_cores`] did.
#[derive(Debug)]
pub struct CoresReport<A> {
    /// Per core, in queue order.
    pub cores: Vec<CoreReport<A>>,
    /// CPUs this process could run on; fewer than the cores means some cores shared a CPU.
    pub cpus: usize,
}

impl<A> CoresReport<A> {
    /// True when there were fewer CPUs than cores, so some cores shared a CPU.
    pub fn cpus_shared(&self) -> bool {
        self.cores.len() > self.cpus
    }

    /// Every core's counters added up.
    pub fn total_handoff(&self) -> HandoffStats {
        let mut t = HandoffStats::default();
        for c in &self.cores {
            t.handed_out += c.handoff.handed_out;
            t.handed_in += c.handoff.handed_in;
            t.handoff_dropped += c.handoff.handoff_dropped;
            t.strays_passed += c.handoff.strays_passed;
        }
        t
    }
}

/// The RSS setting of the interface `ifname` (ethtool `ETHTOOL_GRSSH`), for [`CoresConfig::rss`]. Fails on
/// interfaces without Toeplitz RSS, such as veth.
pub fn interface_rss(ifname: &str) -> std::io::Result<Rss> {
    let nic = afxdp::read_rss(ifname)?;
    Rss::new(&nic.key, nic.table).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
}

/// Which CPU each of `cores` cores is pinned to, and how many CPUs there are. When there are fewer CPUs than cores
/// the assignment wraps (core `i` on CPU `i % cpus`) and cores share CPUs: the caller should say so.
pub fn cpu_plan(cores: usize) -> (Vec<Option<usize>>, usize) {
    match core_affinity::get_core_ids() {
        Some(ids) if !ids.is_empty() => ((0..cores).map(|i| Some(ids[i % ids.len()].id)).collect(), ids.len()),
        _ => (vec![None; cores], std::thread::available_parallelism().map_or(1, |n| n.get())),
    }
}

/// The cores [`run_cores`] would run for `cfg`: `cfg.cores`, or the interface's rx queues from `cfg.first_queue`.
pub fn core_count(cfg: &CoresConfig) -> Result<usize, CoresError> {
    match cfg.cores {
        Some(n) => Ok(n),
        None => afxdp::interface_rx_queues(&cfg.ifname)
            .map(|n| n.saturating_sub(cfg.first_queue) as usize)
            .map_err(|source| CoresError::Interface { ifname: cfg.ifname.clone(), source }),
    }
}

/// Core `core`'s pcap file: `base` with `-coreN` before its extension.
pub fn pcap_path(base: &Path, core: usize) -> PathBuf {
    let stem = base.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    let name = match base.extension() {
        Some(ext) => format!("{stem}-core{core}.{}", ext.to_string_lossy()),
        None => format!("{stem}-core{core}"),
    };
    base.with_file_name(name)
}

/// A device wrapper: given the core and its AF_XDP socket, returns the device the core's stack runs on (a fault
/// injector, a tracer...). Called on the core's own thread.
pub type WrapDevice<'a> = dyn Fn(usize, XskDevice) -> Box<dyn FrameDevice> + Sync + 'a;

/// A ready callback: the cores as planned, and the CPUs this process may use.
pub type Ready<'a> = dyn Fn(&[CoreInfo], usize) + Sync + 'a;

/// One core as planned, told to [`Hooks::ready`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CoreInfo {
    /// The core's index.
    pub core: usize,
    /// Its rx/tx queue.
    pub queue: u32,
    /// The CPU it will be pinned to (`None`: not pinned).
    pub cpu: Option<usize>,
    /// Its slice of the ephemeral ports.
    pub ephemeral_ports: RangeInclusive<u16>,
    /// The AF_XDP bind mode its socket got.
    pub mode: afxdp::BindMode,
}

/// Optional hooks of [`run_cores_with`].
#[derive(Default)]
pub struct Hooks<'a> {
    /// Wraps each core's socket (then `cfg.pcap` is ignored and the report has no socket counters).
    pub wrap: Option<&'a WrapDevice<'a>>,
    /// Called once every socket is in the steering program's map, before the loops start: from here frames for
    /// xtcp's ports reach it (what a caller waits for before it says "ready"). Also gets the CPU count.
    pub ready: Option<&'a Ready<'a>>,
}

impl core::fmt::Debug for Hooks<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Hooks").field("wrap", &self.wrap.is_some()).field("ready", &self.ready.is_some()).finish()
    }
}

/// Runs one shard per rx queue of `cfg.ifname` until `stop` is set or every core's application is done, then shuts
/// down in order; see the [module docs](super).
///
/// `make_app(core)` builds each core's application on its own thread (so it need not be `Send` until it is
/// returned in the report). Every core's application should listen on the same ports: a passive open stays on the
/// core its SYN arrived on. For signals, the caller sets `stop` on the first and exits the process on the second
/// (the XDP program leaves with the process).
pub fn run_cores<A, F>(cfg: &CoresConfig, make_app: F, stop: &AtomicBool) -> Result<CoresReport<A>, CoresError>
where
    A: App + Send,
    F: Fn(usize) -> A + Sync,
{
    run_cores_with(cfg, make_app, &Hooks::default(), stop)
}

/// [`run_cores`] with [`Hooks`]: a device wrapper, a ready callback.
pub fn run_cores_with<A, F>(
    cfg: &CoresConfig,
    make_app: F,
    hooks: &Hooks<'_>,
    stop: &AtomicBool,
) -> Result<CoresReport<A>, CoresError>
where
    A: App + Send,
    F: Fn(usize) -> A + Sync,
{
    let wrap = hooks.wrap;
    let cores = core_count(cfg)?;
    let max = afxdp::shared::XTCP_MAX_QUEUES;
    if cores == 0 || cfg.first_queue as usize + cores > max as usize {
        return Err(CoresError::Queues { first_queue: cfg.first_queue, cores, max });
    }
    let ephemeral = &cfg.stack.ephemeral_ports;
    let partition = PortPartition::new(ephemeral.clone(), cores)?;
    let (cpus, cpu_count) = cpu_plan(cores);
    let mut steering = Steering::load_and_attach(&cfg.ifname, &cfg.stack.local_addresses(), cfg.ports.iter().copied())
        .map_err(|source| CoresError::AfXdp { core: 0, source })?;
    if !ephemeral.is_empty() {
        steering
            .allow_ports(*partition.range(0).start()..=*partition.range(cores - 1).end())
            .map_err(|source| CoresError::AfXdp { core: 0, source })?;
    }
    let mut devices = Vec::with_capacity(cores);
    for core in 0..cores {
        let xsk_cfg = XskConfig { queue: cfg.first_queue + core as u32, ..cfg.xsk };
        let dev =
            XskDevice::open(&cfg.ifname, &xsk_cfg, &steering).map_err(|source| CoresError::AfXdp { core, source })?;
        devices.push(dev);
    }
    let mut pcaps = Vec::with_capacity(cores);
    for core in 0..cores {
        pcaps.push(match (&cfg.pcap, wrap) {
            (Some(base), None) => {
                let path = if cores == 1 { base.clone() } else { pcap_path(base, core) };
                let file = std::fs::File::create(&path).map_err(|source| CoresError::Pcap { path, source })?;
                Some(std::io::BufWriter::new(file))
            }
            _ => None,
        });
    }
    if let Some(ready) = hooks.ready {
        let infos: Vec<CoreInfo> = devices
            .iter()
            .enumerate()
            .map(|(core, d)| CoreInfo {
                core,
                queue: d.queue(),
                cpu: cpus[core].filter(|_| cfg.pin),
                ephemeral_ports: partition.range(core),
                mode: d.mode(),
            })
            .collect();
        ready(&infos, cpu_count);
    }
    let frame_bytes = devices.first().map_or(2048, |d| d.max_frame_len());
    let handoff = Handoff::new(partition, cfg.handoff_frames, frame_bytes);
    let shared = Shared { cores, stop, done: AtomicUsize::new(0), drained: AtomicUsize::new(0) };

    let results: Vec<std::thread::Result<CoreReport<A>>> = std::thread::scope(|s| {
        let handles: Vec<_> = devices
            .into_iter()
            .zip(pcaps)
            .enumerate()
            .map(|(core, (xsk, pcap))| {
                let (handoff, shared, make_app, cpu) = (&handoff, &shared, &make_app, cpus[core]);
                std::thread::Builder::new()
                    .name(format!("xtcp-core{core}"))
                    .spawn_scoped(s, move || {
                        let _guard = PanicGuard(shared);
                        let cpu =
                            cpu.filter(|&id| cfg.pin && core_affinity::set_for_current(core_affinity::CoreId { id }));
                        let dev = match (wrap, pcap) {
                            (Some(wrap), _) => CoreDevice::Wrapped(wrap(core, xsk)),
                            (None, Some(w)) => CoreDevice::Pcap(PcapTap::new(xsk, w, PcapConfig::default())),
                            (None, None) => CoreDevice::Xsk(xsk),
                        };
                        run_core(cfg, core, cpu, dev, handoff, shared, make_app(core))
                    })
                    .expect("spawn a core's thread")
            })
            .collect();
        handles.into_iter().map(|h| h.join()).collect()
    });
    let mut reports = Vec::with_capacity(cores);
    for (core, r) in results.into_iter().enumerate() {
        let mut report = r.map_err(|_| CoresError::Panicked(core))?;
        report.steering = steering.counters(cfg.first_queue + core as u32).unwrap_or_default();
        reports.push(report);
    }
    steering.detach();
    Ok(CoresReport { cores: reports, cpus: cpu_count })
}

/// What the cores agree on: how many there are, and how many have finished each phase (read once per loop turn).
#[derive(Debug)]
struct Shared<'a> {
    cores: usize,
    stop: &'a AtomicBool,
    /// Cores whose application is done.
    done: AtomicUsize,
    /// Cores whose connections are all closed, reset or in TIME_WAIT.
    drained: AtomicUsize,
}

/// Counts a core that panics as done and drained, so the others do not wait for it.
struct PanicGuard<'a, 'b>(&'a Shared<'b>);

impl Drop for PanicGuard<'_, '_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.0.done.fetch_add(1, Ordering::SeqCst);
            self.0.drained.fetch_add(1, Ordering::SeqCst);
        }
    }
}

/// The device a core runs on.
enum CoreDevice {
    Xsk(XskDevice),
    Pcap(PcapTap<XskDevice, std::io::BufWriter<std::fs::File>>),
    Wrapped(Box<dyn FrameDevice>),
}

impl CoreDevice {
    fn xsk_stats(&self) -> Option<XskStats> {
        match self {
            CoreDevice::Xsk(x) => Some(x.stats()),
            CoreDevice::Pcap(p) => Some(p.inner().stats()),
            CoreDevice::Wrapped(_) => None,
        }
    }

    fn as_dyn(&mut self) -> &mut dyn FrameDevice {
        match self {
            CoreDevice::Xsk(x) => x,
            CoreDevice::Pcap(p) => p,
            CoreDevice::Wrapped(b) => b.as_mut(),
        }
    }
}

impl Transmit for CoreDevice {
    fn transmit(&mut self, now: Instant, len: usize, fill: &mut dyn FnMut(&mut [u8])) -> bool {
        self.as_dyn().transmit(now, len, fill)
    }
}

impl FrameDevice for CoreDevice {
    fn receive(&mut self, now: Instant, budget: usize, handler: &mut dyn FnMut(&[u8], &mut dyn Transmit)) -> usize {
        self.as_dyn().receive(now, budget, handler)
    }

    fn flush(&mut self, now: Instant) {
        self.as_dyn().flush(now);
    }

    fn max_frame_len(&self) -> usize {
        match self {
            CoreDevice::Xsk(x) => x.max_frame_len(),
            CoreDevice::Pcap(p) => p.max_frame_len(),
            CoreDevice::Wrapped(b) => b.max_frame_len(),
        }
    }

    fn poll_at(&self) -> Option<Instant> {
        match self {
            CoreDevice::Xsk(x) => x.poll_at(),
            CoreDevice::Pcap(p) => p.poll_at(),
            CoreDevice::Wrapped(b) => b.poll_at(),
        }
    }

    fn wait(&mut self, timeout: core::time::Duration) {
        self.as_dyn().wait(timeout);
    }

    fn device_stats(&self, out: &mut DeviceStats) {
        match self {
            CoreDevice::Xsk(x) => x.device_stats(out),
            CoreDevice::Pcap(p) => p.device_stats(out),
            CoreDevice::Wrapped(b) => b.device_stats(out),
        }
    }
}

fn run_core<A: App>(
    cfg: &CoresConfig,
    core: usize,
    cpu: Option<usize>,
    dev: CoreDevice,
    handoff: &Handoff,
    shared: &Shared<'_>,
    app: A,
) -> CoreReport<A> {
    let mut stack_cfg = cfg.stack.clone();
    stack_cfg.ephemeral_ports = handoff.partition().range(core);
    stack_cfg.seed = core_seed(cfg.stack.seed, core);
    if let Some(rss) = cfg.rss.clone() {
        let queue = cfg.first_queue + core as u32;
        stack_cfg.port_filter =
            Some(PortFilter(std::sync::Arc::new(move |local, remote| rss.reply_queue(local, remote) == queue)));
    }
    let ephemeral_ports = stack_cfg.ephemeral_ports.clone();
    let mut stack = Stack::new(stack_cfg, Instant::ZERO);
    for &(ip, mac) in &cfg.neighbors {
        stack.add_neighbor(ip, mac);
    }
    // Reassembly inside the hand-off, so that a datagram is routed by the ports of the frame it becomes.
    let mut dev = handoff.device(core, Defrag::new(dev, DefragConfig::default()));
    let mut app = CoreApp {
        app,
        shared,
        grace: cfg.shutdown_grace,
        phase: Phase::Running,
        marked_done: false,
        deadline: Instant::ZERO,
        next_check: Instant::ZERO,
        shutdown: ShutdownStats::default(),
    };
    // `run` ends when `CoreApp` says it is done: after the shutdown, which `CoreApp` starts when `stop` is set.
    let never = AtomicBool::new(false);
    let queue = cfg.first_queue + core as u32;
    let mut control = cfg.control.as_ref().and_then(|c| {
        let c = ControlConfig { core, queue: Some(queue), interface: Some(cfg.ifname.clone()), ..c.clone() };
        // A stack that cannot be observed still serves: say so once and go on.
        ControlServer::bind(c).map_err(|e| eprintln!("xtcp: core {core}: no `xtcp stat` socket: {e}")).ok()
    });
    let run_stats = run_with(&mut stack, &mut dev, &mut app, &never, cfg.run, control.as_mut());
    app.shutdown.time_wait = stack.state_counts()
        [crate::tcp::State::ALL.iter().position(|&s| s == crate::tcp::State::TimeWait).unwrap_or(0)];
    let handoff_stats = dev.stats();
    let device = DeviceStats::of(&dev);
    let dev = dev.into_inner();
    CoreReport {
        core,
        queue: cfg.first_queue + core as u32,
        cpu,
        ephemeral_ports,
        counters: stack.counters().clone(),
        run: run_stats,
        handoff: handoff_stats,
        xsk: dev.inner().xsk_stats(),
        device,
        steering: QueueCounters::default(),
        shutdown: app.shutdown,
        app: app.app,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Serving; also after the application is done, until every core is (this core's queue may still receive
    /// frames for the others).
    Running,
    /// Our FINs are out; waiting for the connections to finish, up to the grace.
    Draining,
    /// This core is drained; serving hand-offs until every core is, or the grace runs out again.
    Drained,
    /// The loop may stop.
    Finished,
}

/// Wraps a core's application with the shutdown: the phases above.
struct CoreApp<'s, 'a, A> {
    app: A,
    shared: &'s Shared<'a>,
    grace: Duration,
    phase: Phase,
    marked_done: bool,
    deadline: Instant,
    next_check: Instant,
    shutdown: ShutdownStats,
}

impl<A: App> App for CoreApp<'_, '_, A> {
    fn start(&mut self, stack: &mut Stack, now: Instant) {
        self.app.start(stack, now);
    }

    fn on_event(&mut self, stack: &mut Stack, now: Instant, event: StackEvent) {
        self.app.on_event(stack, now, event);
    }

    fn on_tick(&mut self, stack: &mut Stack, now: Instant) {
        self.app.on_tick(stack, now);
        let shared = self.shared;
        match self.phase {
            Phase::Running => {
                if !self.marked_done && self.app.done() {
                    self.marked_done = true;
                    shared.done.fetch_add(1, Ordering::SeqCst);
                }
                if shared.stop.load(Ordering::Relaxed) || shared.done.load(Ordering::Relaxed) >= shared.cores {
                    let ids: Vec<_> = stack.connections().map(|(id, _)| id).collect();
                    for id in ids {
                        if stack.close(id).is_ok() {
                            self.shutdown.closed += 1;
                        }
                    }
                    self.phase = Phase::Draining;
                    self.deadline = now + self.grace;
                }
            }
            Phase::Draining => {
                if now < self.next_check {
                    return;
                }
                self.next_check = now + Duration::from_millis(1);
                if live_connections(stack) > 0 && now < self.deadline {
                    return;
                }
                let live: Vec<_> = stack
                    .connections()
                    .filter(|(_, c)| !matches!(c.state(), crate::tcp::State::TimeWait | crate::tcp::State::Closed))
                    .map(|(id, _)| id)
                    .collect();
                for id in live {
                    if stack.abort(id).is_ok() {
                        self.shutdown.aborted += 1;
                    }
                }
                shared.drained.fetch_add(1, Ordering::SeqCst);
                self.phase = Phase::Drained;
            }
            Phase::Drained => {
                // At least one poll has sent the resets since the last phase.
                if shared.drained.load(Ordering::Relaxed) >= shared.cores || now >= self.deadline + self.grace {
                    self.phase = Phase::Finished;
                }
            }
            Phase::Finished => {}
        }
    }

    fn done(&self) -> bool {
        self.phase == Phase::Finished
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_core_gets_its_own_pcap_file() {
        assert_eq!(pcap_path(Path::new("/tmp/run.pcap"), 3), PathBuf::from("/tmp/run-core3.pcap"));
        assert_eq!(pcap_path(Path::new("capture"), 0), PathBuf::from("capture-core0"));
    }

    #[test]
    fn the_cpu_plan_wraps_when_cores_outnumber_cpus() {
        let (plan, cpus) = cpu_plan(cpus_here() * 2 + 1);
        assert!(cpus >= 1);
        assert_eq!(plan.len(), cpus_here() * 2 + 1);
        if let Some(first) = plan[0] {
            assert_eq!(plan[cpus], Some(first), "core `cpus` wraps onto core 0's CPU");
        }
    }

    fn cpus_here() -> usize {
        core_affinity::get_core_ids().map_or(1, |ids| ids.len().max(1))
    }
}
