//! What a running xtcp does, for `xtcp stat`: connection states, counters, drops and the connection list, as
//! `ss -tan`, `ss -ti` and `netstat -s` show them for the kernel's stack (which, like tcpdump, sees nothing of the
//! frames XDP redirected to us).
//!
//! **Server side.** Each core's loop owns a [`ControlServer`]: a non-blocking Unix stream socket at
//! `<root>/<pid>/core<N>.sock`, the root being [`DEFAULT_ROOT`] unless the caller says otherwise. The directory is
//! made at [`ControlServer::bind`] and the socket and directory are removed when the server is dropped; directories
//! left by processes that died are removed by whoever finds them (the next server to bind, or [`discover`]). The
//! loop calls [`ControlServer::poll`] every turn; it returns at once unless the poll interval (10 ms) has passed, so
//! it costs one `accept` syscall per interval when nobody asks, never one per packet. Nothing is shared between
//! cores: each core answers for its own stack.
//!
//! **Protocol.** A client connects and writes one line of JSON, a [`Request`] (`{"connections":true}`), at most
//! [`REQUEST_BYTES_MAX`] bytes, within the request timeout (500 ms). The server answers one line of JSON, a
//! [`Snapshot`], and closes. Every step is non-blocking and bounded: at most [`ACCEPTS_PER_POLL`] new clients per
//! poll, at most `max_clients` at once, at most [`WRITE_BYTES_PER_POLL_MAX`] written per poll, and a client that
//! says nothing or reads too slowly is dropped when its timeout passes. The socket is made with the process's
//! umask (under the usual 022 only root, the user xtcp runs as, can connect) unless
//! [`ControlConfig::socket_mode`] says otherwise.
//!
//! **What a snapshot holds.** The stack's counters and drops by reason; the device's own drops by reason
//! ([`Snapshot::device_drops`]: an AF_XDP socket's full rings and empty pool, and the kernel's XDP_STATISTICS for
//! it), read only when a snapshot is made (one `getsockopt`), never per packet; and name/value statistics of the
//! stack, the device and the loop ([`Snapshot::device`]).
//!
//! **Client side.** [`discover`] lists the running instances under a root, [`query`] asks one core's socket,
//! [`query_all`] every core of every instance, and [`render`] / [`render_json`] print what came back.
//!
//! State names: the JSON and the states table use the RFC 9293 names of [`State::name`] (`ESTABLISHED`,
//! `TIME_WAIT`, as `netstat` spells most of them); the connection table is laid out like `ss -tan` and uses `ss`'s
//! names ([`ss_name`]: `ESTAB`, `TIME-WAIT`, `UNCONN` for CLOSED), so what people grep in `ss` output works on ours.

use core::time::Duration;
use std::fmt::Write as _;
use std::io::{self, Read, Write};
use std::net::SocketAddrV4;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};

use serde::de::{Deserializer, MapAccess, Visitor};
use serde::ser::{SerializeMap, Serializer};
use serde::{Deserialize, Serialize};

use super::{Counters, Drop, Stack};
use crate::nic::{DeviceStats, FrameDevice};
use crate::tcp::{Connection, State};
use crate::time::Instant;

/// Where instances put their sockets unless told otherwise: `/run/xtcp/<pid>/core<N>.sock`.
pub const DEFAULT_ROOT: &str = "/run/xtcp";

/// The version of the [`Snapshot`] format; a change that old clients would misread increments it.
pub const SNAPSHOT_VERSION: u32 = 1;

/// The longest request line accepted, newline included.
pub const REQUEST_BYTES_MAX: usize = 512;

/// The largest answer a client reads (a snapshot listing the whole default table of 65,536 connections is about
/// 25 MiB).
pub const RESPONSE_BYTES_MAX: usize = 64 << 20;

/// New clients accepted per poll.
pub const ACCEPTS_PER_POLL: usize = 4;

/// Bytes written to all clients together in one poll.
pub const WRITE_BYTES_PER_POLL_MAX: usize = 1 << 20;

/// Directory entries looked at when scanning a root or an instance's directory.
pub const DIR_ENTRIES_MAX: usize = 4096;

/// How long [`query`] waits before trying again to connect to a server whose backlog is full.
const CONNECT_RETRY_INTERVAL: Duration = Duration::from_millis(10);

/// Device statistics kept when reading a snapshot.
pub const DEVICE_VALUES_MAX: usize = 256;

/// Settings of one core's [`ControlServer`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ControlConfig {
    /// The directory holding one directory per running instance (default [`DEFAULT_ROOT`]).
    pub root: PathBuf,
    /// This loop's core index: the socket is `core<N>.sock`.
    pub core: usize,
    /// The interface served, reported in snapshots.
    pub interface: Option<String>,
    /// The interface queue served, reported in snapshots.
    pub queue: Option<u32>,
    /// Time between two looks at the socket (default 10 ms).
    pub poll_interval: Duration,
    /// A client must have sent its request within this time of being accepted (default 500 ms).
    pub request_timeout: Duration,
    /// A client must have read the whole answer within this time of the request (default 2 s).
    pub response_timeout: Duration,
    /// Clients served at once; more wait in the listen backlog (default 8).
    pub max_clients: usize,
    /// Connections listed in one snapshot; the rest are only counted (default 65,536).
    pub max_connections_listed: usize,
    /// Permission bits for the socket (`0o666` lets every local user run `xtcp stat`, as `ss` does); `None`
    /// (the default) keeps what the umask gives, which under 022 lets only the owner connect.
    pub socket_mode: Option<u32>,
}

impl ControlConfig {
    /// Defaults for core `core` under [`DEFAULT_ROOT`].
    pub fn new(core: usize) -> ControlConfig {
        ControlConfig {
            root: PathBuf::from(DEFAULT_ROOT),
            core,
            interface: None,
            queue: None,
            poll_interval: Duration::from_millis(10),
            request_timeout: Duration::from_millis(500),
            response_timeout: Duration::from_secs(2),
            max_clients: 8,
            max_connections_listed: 65536,
            socket_mode: None,
        }
    }
}

/// What a client asks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Request {
    /// List every connection (as `ss -tan`), not only the counts.
    pub connections: bool,
}

/// What one core's control server itself did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ControlStats {
    /// Clients accepted.
    pub accepted: u64,
    /// Snapshots written out in full.
    pub answered: u64,
    /// Requests that were too long or not JSON of a [`Request`], or a client that closed without one.
    pub bad_requests: u64,
    /// Clients dropped for being too slow to ask or to read.
    pub timed_out: u64,
    /// Socket errors (accept, read or write).
    pub io_errors: u64,
}

/// One connection, as `ss -tan` and `ss -ti` show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConnectionInfo {
    /// Our end.
    pub local: SocketAddrV4,
    /// The peer's end.
    pub remote: SocketAddrV4,
    /// The RFC 9293 state, named in JSON as by [`State::name`].
    #[serde(serialize_with = "serialize_state", deserialize_with = "deserialize_state")]
    pub state: State,
    /// Received bytes the application has not read (ss's Recv-Q).
    pub recv_queue_bytes: u64,
    /// Bytes queued to send, unacknowledged ones included (ss's Send-Q).
    pub send_queue_bytes: u64,
    /// The smoothed round-trip time, once measured.
    pub srtt_us: Option<u64>,
    /// The round-trip time variation.
    pub rttvar_us: u64,
    /// The retransmission timeout, backoff included.
    pub rto_ms: u64,
    /// The sender's maximum segment size.
    pub mss_bytes: u64,
    /// The congestion window.
    pub cwnd_bytes: u64,
    /// The slow-start threshold, once it is finite (after the first loss).
    pub ssthresh_bytes: Option<u64>,
    /// The peer's advertised window.
    pub snd_wnd_bytes: u64,
    /// Payload bytes sent, retransmissions included.
    pub bytes_sent: u64,
    /// Payload bytes received in order.
    pub bytes_received: u64,
    /// Segments sent again.
    pub retransmits: u64,
}

impl ConnectionInfo {
    /// What `conn` shows.
    pub fn of(conn: &Connection) -> ConnectionInfo {
        let micros = |d: Duration| u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        let ssthresh = conn.congestion().ssthresh();
        ConnectionInfo {
            local: conn.local(),
            remote: conn.remote(),
            state: conn.state(),
            recv_queue_bytes: conn.recv_queue_len() as u64,
            send_queue_bytes: conn.send_queue_len() as u64,
            srtt_us: conn.rtt().srtt().map(micros),
            rttvar_us: micros(conn.rtt().rttvar()),
            rto_ms: u64::try_from(conn.rto().as_millis()).unwrap_or(u64::MAX),
            mss_bytes: conn.send_mss() as u64,
            cwnd_bytes: conn.congestion_window() as u64,
            // The initial threshold is "arbitrarily high" (RFC 5681 §3.1): half of usize::MAX.
            ssthresh_bytes: (ssthresh < usize::MAX / 4).then_some(ssthresh as u64),
            snd_wnd_bytes: conn.snd_wnd() as u64,
            bytes_sent: conn.stats().bytes_out,
            bytes_received: conn.stats().bytes_in,
            retransmits: conn.stats().retransmits,
        }
    }
}

/// Everything one core's stack shows at one moment: the answer to a [`Request`].
///
/// In JSON, `states` is an object from each of the 11 RFC 9293 state names to its count (in [`State::ALL`] order;
/// LISTEN counts listeners), `device_drops` and `device` objects from name to value, and `connections` is present
/// only when asked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    /// [`SNAPSHOT_VERSION`] of the server that made it.
    pub version: u32,
    /// The process.
    pub pid: u32,
    /// The core index of the loop that answered.
    pub core: usize,
    /// The interface served, if given.
    #[serde(default)]
    pub interface: Option<String>,
    /// The interface queue served, if given.
    #[serde(default)]
    pub queue: Option<u32>,
    /// Time since the control server's first poll (the loop's start).
    pub uptime_us: u64,
    /// The stack's counters.
    pub counters: Counters,
    /// Connections per state, indexed like [`State::ALL`]; LISTEN counts listeners.
    #[serde(serialize_with = "serialize_states", deserialize_with = "deserialize_states")]
    pub states: [u64; 11],
    /// The device's drops by reason, as [`DeviceStats::drops`] names them: on AF_XDP `tx_ring_full`,
    /// `tx_pool_empty`, `tx_too_long`, `fill_ring_full`, then the kernel's XDP_STATISTICS for the socket
    /// (`xdp_rx_ring_full`, `xdp_rx_fill_ring_empty_descs`, `xdp_rx_dropped`, `xdp_rx_invalid_descs`,
    /// `xdp_tx_invalid_descs`). Empty when the server was given no device.
    #[serde(default, serialize_with = "serialize_named", deserialize_with = "deserialize_named")]
    pub device_drops: Vec<(String, u64)>,
    /// Name and value pairs: the stack's gauges (`buffer_bytes`, `compact_conns`: connections kept compact), then
    /// the device's other statistics ([`DeviceStats::values`]: AF_XDP `tx_kicks`, `fill_wakeups`...), then what
    /// the loop adds (`loop_turns`, `loop_busy_turns`, `loop_sleeps`).
    #[serde(default, serialize_with = "serialize_named", deserialize_with = "deserialize_named")]
    pub device: Vec<(String, u64)>,
    /// Name and value pairs: every connection's counters summed over the stack's life ([`Stack::tcp_totals`]:
    /// `retransmits`, `rto_timeouts`, `dup_acks`, `ooo_segments`, `challenge_acks`...).
    #[serde(default, serialize_with = "serialize_named", deserialize_with = "deserialize_named")]
    pub tcp: Vec<(String, u64)>,
    /// The control server's own counts.
    #[serde(default)]
    pub control: ControlStats,
    /// Every connection in table-slot order, when asked for (up to the server's limit).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connections: Option<Vec<ConnectionInfo>>,
    /// Connections not listed because of the server's limit.
    #[serde(default)]
    pub connections_omitted: u64,
}

impl Snapshot {
    /// A snapshot of `stack` for this process at core 0 with no uptime (the server fills those in), with what
    /// `device` counts (its drops by reason, its statistics), `extra` as further device statistics and, when
    /// `connections_max` is given, up to that many connections listed.
    pub fn capture(
        stack: &Stack,
        device: &DeviceStats,
        extra: &[(&str, u64)],
        connections_max: Option<usize>,
    ) -> Snapshot {
        let mut states = [0; 11];
        for (n, c) in states.iter_mut().zip(stack.state_counts()) {
            *n = c as u64;
        }
        let mut omitted = 0;
        let connections = connections_max.map(|max| {
            let list: Vec<ConnectionInfo> =
                stack.connections().take(max).map(|(_, c)| ConnectionInfo::of(&c)).collect();
            omitted = stack.slots_in_use().saturating_sub(list.len()) as u64;
            list
        });
        Snapshot {
            version: SNAPSHOT_VERSION,
            pid: std::process::id(),
            core: 0,
            interface: None,
            queue: None,
            uptime_us: 0,
            counters: stack.counters().clone(),
            states,
            device_drops: device.drops.iter().map(|&(k, v)| (k.to_owned(), v)).collect(),
            device: [("buffer_bytes", stack.buffer_bytes()), ("compact_conns", stack.compact_count())]
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v as u64))
                .chain(device.values.iter().chain(extra).map(|&(k, v)| (k.to_owned(), v)))
                .collect(),
            tcp: stack.tcp_totals().iter().map(|&(k, v)| (k.to_owned(), v)).collect(),
            control: ControlStats::default(),
            connections,
            connections_omitted: omitted,
        }
    }

    /// The device's drops for `reason`, if it counts it.
    pub fn device_dropped(&self, reason: &str) -> Option<u64> {
        self.device_drops.iter().find(|(n, _)| n == reason).map(|&(_, v)| v)
    }

    /// The number of connections in `state` (listeners for LISTEN).
    pub fn state_count(&self, state: State) -> u64 {
        State::ALL.iter().position(|&s| s == state).map_or(0, |i| self.states[i])
    }
}

/// How `ss` names a state: `ESTAB`, `SYN-RECV`, `TIME-WAIT`, `UNCONN` for CLOSED...
pub fn ss_name(state: State) -> &'static str {
    match state {
        State::Closed => "UNCONN",
        State::Listen => "LISTEN",
        State::SynSent => "SYN-SENT",
        State::SynReceived => "SYN-RECV",
        State::Established => "ESTAB",
        State::FinWait1 => "FIN-WAIT-1",
        State::FinWait2 => "FIN-WAIT-2",
        State::Closing => "CLOSING",
        State::TimeWait => "TIME-WAIT",
        State::CloseWait => "CLOSE-WAIT",
        State::LastAck => "LAST-ACK",
    }
}

// ----- Server -----

#[derive(Debug)]
enum Phase {
    /// Reading the request line.
    Reading(Vec<u8>),
    /// Writing the answer; `sent` bytes of it are out.
    Writing { answer: Vec<u8>, sent: usize },
}

#[derive(Debug)]
struct Client {
    stream: UnixStream,
    phase: Phase,
    /// When this client is dropped if it has not finished its phase.
    deadline: Instant,
}

/// What became of a client after one step.
enum Step {
    Keep,
    Done,
    Bad,
    TimedOut,
    Failed,
}

/// One core's control socket. See the [module docs](self).
#[derive(Debug)]
pub struct ControlServer {
    cfg: ControlConfig,
    dir: PathBuf,
    path: PathBuf,
    listener: UnixListener,
    started: Option<Instant>,
    next_poll: Instant,
    clients: Vec<Client>,
    stats: ControlStats,
}

impl ControlServer {
    /// Makes `<root>/<pid>/` if needed and listens at `core<N>.sock` in it. First removes the directories of
    /// processes that are gone, and a socket file of ours that nobody answers on (left by an earlier process with
    /// our pid). Fails with `AddrInUse` if a server of this process already answers for this core.
    pub fn bind(cfg: ControlConfig) -> io::Result<ControlServer> {
        remove_stale(&cfg.root);
        let dir = cfg.root.join(std::process::id().to_string());
        std::fs::create_dir_all(&dir)?;
        let path = dir.join(format!("core{}.sock", cfg.core));
        if std::fs::symlink_metadata(&path).is_ok() {
            if UnixStream::connect(&path).is_ok() {
                return Err(io::Error::new(
                    io::ErrorKind::AddrInUse,
                    format!("a control server already answers at {}", path.display()),
                ));
            }
            std::fs::remove_file(&path)?;
        }
        let listener = match UnixListener::bind(&path) {
            // Another core of this process (or a cleaner) removed the directory as it emptied: make it again, once.
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                std::fs::create_dir_all(&dir)?;
                UnixListener::bind(&path)?
            }
            r => r?,
        };
        listener.set_nonblocking(true)?;
        if let Some(mode) = cfg.socket_mode {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode))?;
        }
        let max_clients = cfg.max_clients;
        Ok(ControlServer {
            cfg,
            dir,
            path,
            listener,
            started: None,
            next_poll: Instant::ZERO,
            clients: Vec::with_capacity(max_clients),
            stats: ControlStats::default(),
        })
    }

    /// The socket's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The settings.
    pub fn config(&self) -> &ControlConfig {
        &self.cfg
    }

    /// What this server did so far.
    pub fn stats(&self) -> ControlStats {
        self.stats
    }

    /// Clients being served now.
    pub fn clients(&self) -> usize {
        self.clients.len()
    }

    /// Serves the socket if the poll interval has passed since the last look, else returns at once. Accepts up to
    /// [`ACCEPTS_PER_POLL`] clients, reads requests, answers with a [`Snapshot`] of `stack` carrying what `device`
    /// counts ([`FrameDevice::device_stats`], read once per poll that makes a snapshot) and `extra` as device
    /// statistics, and drops clients whose time is up. Never blocks. Returns the snapshots finished.
    pub fn poll(
        &mut self,
        now: Instant,
        stack: &Stack,
        device: Option<&dyn FrameDevice>,
        extra: &[(&str, u64)],
    ) -> usize {
        let started = *self.started.get_or_insert(now);
        if now < self.next_poll {
            return 0;
        }
        self.next_poll = now + self.cfg.poll_interval;
        self.accept(now);
        let mut budget = WRITE_BYTES_PER_POLL_MAX;
        let mut finished = 0;
        // The device is asked (a syscall on AF_XDP) only when a request came in, once for all of them.
        let mut device_stats = None;
        let mut capture = |connections_max: Option<usize>| {
            let stats = device_stats.get_or_insert_with(|| device.map(DeviceStats::of).unwrap_or_default());
            Snapshot::capture(stack, stats, extra, connections_max)
        };
        let mut i = 0;
        while i < self.clients.len() {
            let step = self.step(i, now, started, &mut capture, &mut budget);
            match step {
                Step::Keep => {
                    i += 1;
                    continue;
                }
                Step::Done => {
                    self.stats.answered += 1;
                    finished += 1;
                }
                Step::Bad => self.stats.bad_requests += 1,
                Step::TimedOut => self.stats.timed_out += 1,
                Step::Failed => self.stats.io_errors += 1,
            }
            // Closing the stream tells the client the answer is complete (or that it gets none).
            self.clients.swap_remove(i);
        }
        finished
    }

    fn accept(&mut self, now: Instant) {
        for _ in 0..ACCEPTS_PER_POLL {
            if self.clients.len() >= self.cfg.max_clients {
                return;
            }
            match self.listener.accept() {
                Ok((stream, _)) => {
                    self.stats.accepted += 1;
                    if stream.set_nonblocking(true).is_err() {
                        self.stats.io_errors += 1;
                        continue;
                    }
                    self.clients.push(Client {
                        stream,
                        phase: Phase::Reading(Vec::with_capacity(REQUEST_BYTES_MAX)),
                        deadline: now + self.cfg.request_timeout,
                    });
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => {
                    self.stats.io_errors += 1;
                    return;
                }
            }
        }
    }

    /// Moves client `i` on: reads its request, answers it with a snapshot from `capture(connections_max)`, writes
    /// the answer out.
    fn step(
        &mut self,
        i: usize,
        now: Instant,
        started: Instant,
        capture: &mut dyn FnMut(Option<usize>) -> Snapshot,
        budget: &mut usize,
    ) -> Step {
        let client = &mut self.clients[i];
        if let Phase::Reading(buf) = &mut client.phase {
            let request = match read_request(&mut client.stream, buf) {
                Ok(Some(line)) => line,
                Ok(None) if now >= client.deadline => return Step::TimedOut,
                Ok(None) => return Step::Keep,
                Err(e) if e.kind() == io::ErrorKind::InvalidData => return Step::Bad,
                Err(_) => return Step::Failed,
            };
            let Ok(request) = serde_json::from_slice::<Request>(&request) else { return Step::Bad };
            let mut snap = capture(request.connections.then_some(self.cfg.max_connections_listed));
            snap.core = self.cfg.core;
            snap.interface.clone_from(&self.cfg.interface);
            snap.queue = self.cfg.queue;
            snap.uptime_us = (now - started).as_micros().try_into().unwrap_or(u64::MAX);
            snap.control = self.stats;
            let mut answer = match serde_json::to_vec(&snap) {
                Ok(a) => a,
                Err(_) => return Step::Failed,
            };
            answer.push(b'\n');
            client.phase = Phase::Writing { answer, sent: 0 };
            client.deadline = now + self.cfg.response_timeout;
        }
        let Phase::Writing { answer, sent } = &mut client.phase else { return Step::Keep };
        while *sent < answer.len() && *budget > 0 {
            let end = answer.len().min(*sent + *budget);
            match client.stream.write(&answer[*sent..end]) {
                Ok(0) => return Step::Failed,
                Ok(n) => {
                    *sent += n;
                    *budget -= n;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(_) => return Step::Failed,
            }
        }
        if *sent == answer.len() {
            Step::Done
        } else if now >= client.deadline {
            Step::TimedOut
        } else {
            Step::Keep
        }
    }
}

impl core::ops::Drop for ControlServer {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
        // Fails while other cores of this process still have their sockets there; the last one removes it.
        let _ = std::fs::remove_dir(&self.dir);
    }
}

/// Reads what the client sent so far into `buf`. `Ok(Some(line))` once a line (or everything before the client
/// shut its side) is in, `Ok(None)` while more may come, `InvalidData` for a request too long or empty.
fn read_request(stream: &mut UnixStream, buf: &mut Vec<u8>) -> io::Result<Option<Vec<u8>>> {
    let mut chunk = [0u8; REQUEST_BYTES_MAX];
    loop {
        let room = REQUEST_BYTES_MAX - buf.len();
        if room == 0 {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "request too long"));
        }
        match stream.read(&mut chunk[..room]) {
            Ok(0) if buf.iter().all(u8::is_ascii_whitespace) => {
                return Err(io::Error::new(io::ErrorKind::InvalidData, "no request"))
            }
            Ok(0) => return Ok(Some(std::mem::take(buf))),
            Ok(n) => {
                buf.extend_from_slice(&chunk[..n]);
                if let Some(end) = buf.iter().position(|&b| b == b'\n') {
                    buf.truncate(end);
                    return Ok(Some(std::mem::take(buf)));
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(None),
            Err(e) => return Err(e),
        }
    }
}

// ----- Client -----

/// One running xtcp process found under a root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instance {
    /// Its process id.
    pub pid: u32,
    /// Its directory, `<root>/<pid>`.
    pub dir: PathBuf,
    /// Its cores' sockets, by core index, in order.
    pub cores: Vec<(usize, PathBuf)>,
}

/// True while process `pid` exists.
pub fn pid_alive(pid: u32) -> bool {
    pid == std::process::id() || Path::new("/proc").join(pid.to_string()).exists()
}

/// The running instances under `root` (usually [`DEFAULT_ROOT`]), by pid. Directories of processes that are gone
/// are skipped and removed (best effort: it takes the rights to); a root that does not exist holds none.
pub fn discover(root: &Path) -> Vec<Instance> {
    remove_stale(root);
    let mut found: Vec<Instance> = pid_dirs(root)
        .into_iter()
        .filter(|&(pid, _)| pid_alive(pid))
        .map(|(pid, dir)| {
            let cores = core_sockets(&dir);
            Instance { pid, dir, cores }
        })
        .filter(|i| !i.cores.is_empty())
        .collect();
    found.sort_by_key(|i| i.pid);
    found
}

/// Asks the socket at `path` for a snapshot, with the connection list if `connections`; fails with `TimedOut`
/// when the whole exchange takes longer than `timeout`, with `InvalidData` for an answer that is not a snapshot
/// or longer than [`RESPONSE_BYTES_MAX`].
pub fn query(path: &Path, connections: bool, timeout: Duration) -> io::Result<Snapshot> {
    let deadline = std::time::Instant::now() + timeout;
    let remaining = || {
        deadline
            .checked_duration_since(std::time::Instant::now())
            .filter(|d| !d.is_zero())
            .ok_or_else(|| io::Error::new(io::ErrorKind::TimedOut, "no answer in time"))
    };
    let mut stream = connect_within(path, deadline)?;
    stream.set_write_timeout(Some(remaining()?))?;
    let mut line = serde_json::to_vec(&Request { connections }).map_err(io::Error::other)?;
    line.push(b'\n');
    stream.write_all(&line)?;
    let mut answer = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        stream.set_read_timeout(Some(remaining()?))?;
        match stream.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => {
                if answer.len() + n > RESPONSE_BYTES_MAX {
                    return Err(io::Error::new(io::ErrorKind::InvalidData, "answer too long"));
                }
                answer.extend_from_slice(&chunk[..n]);
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {
                return Err(io::Error::new(io::ErrorKind::TimedOut, "no answer in time"))
            }
            Err(e) => return Err(e),
        }
    }
    serde_json::from_slice(&answer).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

/// Connects without blocking past `deadline`: a plain connect to a Unix socket whose listen backlog is full (a
/// loop that stopped accepting) would wait until the loop accepts, which may be never.
fn connect_within(path: &Path, deadline: std::time::Instant) -> io::Result<UnixStream> {
    let addr = socket2::SockAddr::unix(path)?;
    loop {
        let socket = socket2::Socket::new(socket2::Domain::UNIX, socket2::Type::STREAM, None)?;
        socket.set_nonblocking(true)?;
        match socket.connect(&addr) {
            Ok(()) => {
                socket.set_nonblocking(false)?;
                return Ok(socket.into());
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                if std::time::Instant::now() >= deadline {
                    return Err(io::Error::new(io::ErrorKind::TimedOut, "the server is not accepting (backlog full)"));
                }
                std::thread::sleep(CONNECT_RETRY_INTERVAL);
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// Asks every core of every instance under `root`, each within `timeout`: the snapshots that came back, by pid and
/// core, and the sockets that failed with why. A socket nobody listens on any more (its process died and the pid
/// went to another process) is no instance: it is removed, with its directory once empty, and not reported.
pub fn query_all(root: &Path, connections: bool, timeout: Duration) -> (Vec<Snapshot>, Vec<(PathBuf, io::Error)>) {
    let mut snapshots = Vec::new();
    let mut failures = Vec::new();
    for instance in discover(root) {
        for (_, path) in instance.cores {
            match query(&path, connections, timeout) {
                Ok(s) => snapshots.push(s),
                Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                    let _ = std::fs::remove_file(&path);
                }
                Err(e) => failures.push((path, e)),
            }
        }
        let _ = std::fs::remove_dir(&instance.dir);
    }
    (snapshots, failures)
}

/// Numeric directories under `root`: (pid, path).
fn pid_dirs(root: &Path) -> Vec<(u32, PathBuf)> {
    let Ok(entries) = std::fs::read_dir(root) else { return Vec::new() };
    entries
        .take(DIR_ENTRIES_MAX)
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .filter_map(|e| Some((e.file_name().to_str()?.parse::<u32>().ok()?, e.path())))
        .collect()
}

/// The `core<N>.sock` entries of an instance's directory, by core index.
fn core_sockets(dir: &Path) -> Vec<(usize, PathBuf)> {
    let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
    let mut cores: Vec<(usize, PathBuf)> = entries
        .take(DIR_ENTRIES_MAX)
        .filter_map(Result::ok)
        .filter_map(|e| {
            let name = e.file_name();
            let core = name.to_str()?.strip_prefix("core")?.strip_suffix(".sock")?.parse::<usize>().ok()?;
            Some((core, e.path()))
        })
        .collect();
    cores.sort();
    cores
}

/// Removes the directories (and their core sockets, nothing else) of processes that are gone.
fn remove_stale(root: &Path) {
    for (pid, dir) in pid_dirs(root) {
        if pid_alive(pid) {
            continue;
        }
        for (_, path) in core_sockets(&dir) {
            let _ = std::fs::remove_file(path);
        }
        let _ = std::fs::remove_dir(&dir);
    }
}

// ----- Rendering -----

/// The snapshots as pretty JSON: an array, one object per core.
pub fn render_json(snapshots: &[Snapshot]) -> String {
    serde_json::to_string_pretty(snapshots).unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))
}

/// The snapshots as tables for people: a header line per core; connections per state (all 11, summed and per
/// core); the counters, the connections' summed TCP counters and the drops by reason that are not zero, with
/// totals; the device's drops by reason (every one it counts: a zero says that ring never overflowed); the device
/// statistics; and with `show_connections`, the connections laid out like `ss -tan`, each followed by an
/// `ss -ti`-style line (rto and rtt in ms, cwnd and ssthresh in segments, as `ss` prints them).
pub fn render(snapshots: &[Snapshot], show_connections: bool) -> String {
    let mut out = String::new();
    if snapshots.is_empty() {
        out.push_str("no running xtcp answered\n");
        return out;
    }
    let one_pid = snapshots.iter().all(|s| s.pid == snapshots[0].pid);
    let columns: Vec<String> = snapshots
        .iter()
        .map(|s| if one_pid { format!("core{}", s.core) } else { format!("{}/core{}", s.pid, s.core) })
        .collect();
    for s in snapshots {
        let _ = write!(out, "pid {} core {}", s.pid, s.core);
        if let Some(iface) = &s.interface {
            let _ = write!(out, " {iface}");
        }
        if let Some(q) = s.queue {
            let _ = write!(out, " queue {q}");
        }
        let _ = writeln!(out, " up {}.{:03} s", s.uptime_us / 1_000_000, s.uptime_us / 1000 % 1000);
    }

    out.push('\n');
    let states: Vec<(String, Vec<u64>)> = State::ALL
        .iter()
        .enumerate()
        .map(|(i, st)| (st.name().to_owned(), snapshots.iter().map(|s| s.states[i]).collect()))
        .collect();
    table(&mut out, "STATE", &columns, &states);

    let counters: Vec<(String, Vec<u64>)> = (0..Counters::NAMED_LEN)
        .map(|i| {
            let name = snapshots[0].counters.named()[i].0.to_owned();
            (name, snapshots.iter().map(|s| s.counters.named()[i].1).collect::<Vec<u64>>())
        })
        .filter(|(_, v)| v.iter().any(|&x| x > 0))
        .collect();
    if !counters.is_empty() {
        out.push('\n');
        table(&mut out, "COUNTER", &columns, &counters);
    }

    let tcp: Vec<_> = named_rows(snapshots, |s| &s.tcp).into_iter().filter(|(_, v)| v.iter().any(|&x| x > 0)).collect();
    if !tcp.is_empty() {
        out.push('\n');
        table(&mut out, "TCP", &columns, &tcp);
    }

    out.push('\n');
    let mut drops: Vec<(String, Vec<u64>)> = Drop::ALL
        .iter()
        .enumerate()
        .map(|(i, d)| (d.name().to_owned(), snapshots.iter().map(|s| s.counters.drops[i]).collect::<Vec<u64>>()))
        .filter(|(_, v)| v.iter().any(|&x| x > 0))
        .collect();
    drops.push(("total".to_owned(), snapshots.iter().map(|s| s.counters.total_drops()).collect()));
    table(&mut out, "DROP", &columns, &drops);

    // Not added to the total above: the device's refusals to send are in the stack's tx_full already.
    let device_drops = named_rows(snapshots, |s| &s.device_drops);
    if !device_drops.is_empty() {
        out.push('\n');
        table(&mut out, "DEVICE_DROP", &columns, &device_drops);
    }

    let device = named_rows(snapshots, |s| &s.device);
    if !device.is_empty() {
        out.push('\n');
        table(&mut out, "DEVICE", &columns, &device);
    }

    if show_connections {
        out.push('\n');
        render_connections(&mut out, snapshots, one_pid);
    }
    out
}

/// One row per name any snapshot has in `pairs`, in the order first met, with each snapshot's value (0 where it
/// has none).
fn named_rows(snapshots: &[Snapshot], pairs: impl Fn(&Snapshot) -> &Vec<(String, u64)>) -> Vec<(String, Vec<u64>)> {
    let mut names: Vec<&str> = Vec::new();
    for (name, _) in snapshots.iter().flat_map(&pairs) {
        if !names.contains(&name.as_str()) {
            names.push(name);
        }
    }
    names
        .iter()
        .map(|&name| {
            let values =
                snapshots.iter().map(|s| pairs(s).iter().find(|(n, _)| n == name).map_or(0, |&(_, v)| v)).collect();
            (name.to_owned(), values)
        })
        .collect()
}

/// A table: the name column, a total column, then one column per snapshot.
fn table(out: &mut String, title: &str, columns: &[String], rows: &[(String, Vec<u64>)]) {
    let name_width = rows.iter().map(|r| r.0.len()).chain([title.len()]).max().unwrap_or(0);
    let totals: Vec<u64> = rows.iter().map(|r| r.1.iter().fold(0u64, |a, &b| a.saturating_add(b))).collect();
    let width = |header: &str, values: &mut dyn Iterator<Item = u64>| {
        values.map(|v| v.to_string().len()).chain([header.len()]).max().unwrap_or(0)
    };
    let total_width = width("total", &mut totals.iter().copied());
    let widths: Vec<usize> =
        columns.iter().enumerate().map(|(c, h)| width(h, &mut rows.iter().map(|r| r.1[c]))).collect();
    let _ = write!(out, "{title:<name_width$}  {:>total_width$}", "total");
    for (h, w) in columns.iter().zip(&widths) {
        let _ = write!(out, "  {h:>w$}");
    }
    out.push('\n');
    for ((name, values), total) in rows.iter().zip(&totals) {
        let _ = write!(out, "{name:<name_width$}  {total:>total_width$}");
        for (v, w) in values.iter().zip(&widths) {
            let _ = write!(out, "  {v:>w$}");
        }
        out.push('\n');
    }
}

fn render_connections(out: &mut String, snapshots: &[Snapshot], one_pid: bool) {
    let mut rows: Vec<[String; 6]> = Vec::new();
    let mut infos: Vec<String> = Vec::new();
    for s in snapshots {
        let core = if one_pid { s.core.to_string() } else { format!("{}/{}", s.pid, s.core) };
        for c in s.connections.iter().flatten() {
            rows.push([
                ss_name(c.state).to_owned(),
                c.recv_queue_bytes.to_string(),
                c.send_queue_bytes.to_string(),
                c.local.to_string(),
                c.remote.to_string(),
                core.clone(),
            ]);
            infos.push(ss_info(c));
        }
    }
    let headers = ["State", "Recv-Q", "Send-Q", "Local Address:Port", "Peer Address:Port", "Core"];
    let mut widths = headers.map(str::len);
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.len());
        }
    }
    let line = |out: &mut String, cells: [&str; 6]| {
        let [w0, w1, w2, w3, w4, _] = widths;
        let [state, recv, send, local, peer, core] = cells;
        let _ = writeln!(out, "{state:<w0$} {recv:<w1$} {send:<w2$} {local:>w3$} {peer:>w4$} {core}");
    };
    line(out, headers);
    for (row, info) in rows.iter().zip(&infos) {
        line(out, [&row[0], &row[1], &row[2], &row[3], &row[4], &row[5]]);
        let _ = writeln!(out, "\t {info}");
    }
    let omitted: u64 = snapshots.iter().map(|s| s.connections_omitted).sum();
    if omitted > 0 {
        let _ = writeln!(out, "({omitted} more connections not listed: the server's limit)");
    }
    if snapshots.iter().any(|s| s.connections.is_none()) {
        let _ = writeln!(out, "(some cores did not list their connections)");
    }
}

/// An `ss -ti` style line: rto and rtt in ms, mss in bytes, cwnd and ssthresh in segments.
fn ss_info(c: &ConnectionInfo) -> String {
    let mss = c.mss_bytes.max(1);
    let mut s = format!("rto:{}", c.rto_ms);
    if let Some(srtt) = c.srtt_us {
        let _ = write!(s, " rtt:{}/{}", millis(srtt), millis(c.rttvar_us));
    }
    let _ = write!(s, " mss:{} cwnd:{}", c.mss_bytes, c.cwnd_bytes / mss);
    if let Some(ssthresh) = c.ssthresh_bytes {
        let _ = write!(s, " ssthresh:{}", ssthresh / mss);
    }
    let _ = write!(
        s,
        " bytes_sent:{} bytes_received:{} retrans:{} snd_wnd:{}",
        c.bytes_sent, c.bytes_received, c.retransmits, c.snd_wnd_bytes
    );
    s
}

/// Microseconds as milliseconds with three decimals, as `ss` prints rtt.
fn millis(us: u64) -> String {
    format!("{}.{:03}", us / 1000, us % 1000)
}

// ----- JSON helpers -----

fn serialize_state<S: Serializer>(state: &State, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(state.name())
}

fn deserialize_state<'de, D: Deserializer<'de>>(d: D) -> Result<State, D::Error> {
    let name = String::deserialize(d)?;
    State::ALL
        .into_iter()
        .find(|s| s.name() == name)
        .ok_or_else(|| serde::de::Error::custom(format!("unknown state {name:?}")))
}

fn serialize_states<S: Serializer>(states: &[u64; 11], s: S) -> Result<S::Ok, S::Error> {
    let mut map = s.serialize_map(Some(states.len()))?;
    for (state, count) in State::ALL.iter().zip(states) {
        map.serialize_entry(state.name(), count)?;
    }
    map.end()
}

fn deserialize_states<'de, D: Deserializer<'de>>(d: D) -> Result<[u64; 11], D::Error> {
    let named = deserialize_named(d)?;
    let mut states = [0; 11];
    for (name, count) in named {
        if let Some(i) = State::ALL.iter().position(|s| s.name() == name) {
            states[i] = count;
        }
    }
    Ok(states)
}

fn serialize_named<S: Serializer>(pairs: &[(String, u64)], s: S) -> Result<S::Ok, S::Error> {
    let mut map = s.serialize_map(Some(pairs.len()))?;
    for (name, value) in pairs {
        map.serialize_entry(name, value)?;
    }
    map.end()
}

/// An object from name to number, in the order written; at most [`DEVICE_VALUES_MAX`] entries are kept.
fn deserialize_named<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<(String, u64)>, D::Error> {
    struct NamedVisitor;
    impl<'de> Visitor<'de> for NamedVisitor {
        type Value = Vec<(String, u64)>;
        fn expecting(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
            f.write_str("an object from name to number")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Vec<(String, u64)>, A::Error> {
            let mut pairs = Vec::new();
            while let Some(pair) = map.next_entry::<String, u64>()? {
                if pairs.len() < DEVICE_VALUES_MAX {
                    pairs.push(pair);
                }
            }
            Ok(pairs)
        }
    }
    d.deserialize_map(NamedVisitor)
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;
    use crate::engine::StackConfig;
    use crate::wire::EthernetAddress;

    fn snapshot(pid: u32, core: usize) -> Snapshot {
        let mut states = [0; 11];
        states[4] = 2 + core as u64;
        let mut counters = Counters { rx_frames: 10, ..Counters::default() };
        counters.drop(Drop::BadChecksum);
        Snapshot {
            version: SNAPSHOT_VERSION,
            pid,
            core,
            interface: Some("eth0".to_owned()),
            queue: Some(core as u32),
            uptime_us: 1_234_567,
            counters,
            states,
            device_drops: vec![("tx_pool_empty".to_owned(), 0), ("xdp_rx_ring_full".to_owned(), 7 + core as u64)],
            device: vec![("ring_full".to_owned(), 5)],
            tcp: vec![("dup_acks".to_owned(), 0), ("retransmits".to_owned(), core as u64)],
            control: ControlStats::default(),
            connections: None,
            connections_omitted: 0,
        }
    }

    #[test]
    fn a_capture_carries_the_devices_drops_and_puts_its_statistics_between_the_stacks_and_the_loops() {
        let mac = EthernetAddress([2, 0, 0, 0, 0, 1]);
        let stack = Stack::new(StackConfig::new(mac, Ipv4Addr::new(10, 0, 0, 1), 1), Instant::ZERO);
        let device =
            DeviceStats { drops: vec![("tx_pool_empty", 2), ("xdp_rx_ring_full", 0)], values: vec![("tx_kicks", 5)] };
        let snap = Snapshot::capture(&stack, &device, &[("loop_turns", 9)], None);
        let names: Vec<&str> = snap.device.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["buffer_bytes", "compact_conns", "tx_kicks", "loop_turns"]);
        assert_eq!(snap.device_drops, [("tx_pool_empty".to_owned(), 2), ("xdp_rx_ring_full".to_owned(), 0)]);
        assert_eq!(snap.device_dropped("tx_pool_empty"), Some(2));
        let text = render(&[snap], false);
        assert!(text.contains("DEVICE_DROP"), "{text}");
        let row = text.lines().find(|l| l.starts_with("xdp_rx_ring_full")).unwrap_or_else(|| panic!("{text}"));
        assert_eq!(row.split_whitespace().collect::<Vec<_>>(), ["xdp_rx_ring_full", "0", "0"], "zeros are shown");
        // No device: no table.
        let bare = Snapshot::capture(&stack, &DeviceStats::default(), &[], None);
        assert!(!render(&[bare], false).contains("DEVICE_DROP"));
    }

    #[test]
    fn ss_names_are_those_ss_prints() {
        let names: Vec<&str> = State::ALL.iter().map(|&s| ss_name(s)).collect();
        assert_eq!(
            names,
            [
                "UNCONN",
                "LISTEN",
                "SYN-SENT",
                "SYN-RECV",
                "ESTAB",
                "FIN-WAIT-1",
                "FIN-WAIT-2",
                "CLOSING",
                "TIME-WAIT",
                "CLOSE-WAIT",
                "LAST-ACK"
            ]
        );
    }

    #[test]
    fn render_labels_cores_of_several_processes_and_shows_only_non_zero_counters() {
        let text = render(&[snapshot(100, 0), snapshot(200, 1)], false);
        assert!(text.contains("pid 100 core 0 eth0 queue 0 up 1.234 s"), "{text}");
        let header = text.lines().find(|l| l.starts_with("STATE")).unwrap();
        assert_eq!(header.split_whitespace().collect::<Vec<_>>(), ["STATE", "total", "100/core0", "200/core1"]);
        let row = |name: &str| {
            let line = text.lines().find(|l| l.split_whitespace().next() == Some(name)).unwrap();
            line.split_whitespace().skip(1).map(str::to_owned).collect::<Vec<_>>()
        };
        assert_eq!(row("ESTABLISHED"), ["5", "2", "3"]);
        assert_eq!(row("rx_frames"), ["20", "10", "10"]);
        assert_eq!(row("bad_checksum"), ["2", "1", "1"]);
        assert_eq!(row("total"), ["2", "1", "1"]);
        assert_eq!(row("ring_full"), ["10", "5", "5"]);
        assert!(!text.contains("tx_frames") && !text.contains("malformed"), "zero rows are left out:\n{text}");
        // The device's drops by reason, every one it counts, in their own table after the stack's: not in its total.
        let section = |title: &str| -> Vec<String> {
            let start = text.lines().position(|l| l.split_whitespace().next() == Some(title)).unwrap();
            text.lines().skip(start + 1).take_while(|l| !l.is_empty()).map(str::to_owned).collect()
        };
        let drop_rows = section("DROP");
        let device_rows = section("DEVICE_DROP");
        assert_eq!(drop_rows.len(), 2, "bad_checksum and total:\n{text}");
        assert_eq!(device_rows.len(), 2, "{text}");
        assert_eq!(row("tx_pool_empty"), ["0", "0", "0"]);
        assert_eq!(row("xdp_rx_ring_full"), ["15", "7", "8"]);
        let order: Vec<&str> = text.lines().filter_map(|l| l.split_whitespace().next()).collect();
        let at = |t: &str| order.iter().position(|&w| w == t).unwrap();
        assert!(at("DROP") < at("DEVICE_DROP") && at("DEVICE_DROP") < at("DEVICE"), "{text}");
        // The connections' TCP counters: non-zero rows only, between the stack's counters and its drops.
        assert_eq!(section("TCP").len(), 1, "{text}");
        assert_eq!(row("retransmits"), ["1", "0", "1"]);
        assert!(!text.contains("dup_acks"), "{text}");
        assert!(at("COUNTER") < at("TCP") && at("TCP") < at("DROP"), "{text}");
        assert_eq!(render(&[], false), "no running xtcp answered\n");
    }

    #[test]
    fn snapshot_json_names_states_and_reads_back() {
        let snap = snapshot(1, 0);
        let json = serde_json::to_value(&snap).unwrap();
        let states: Vec<&str> = json["states"].as_object().unwrap().keys().map(String::as_str).collect();
        let mut expected: Vec<&str> = State::ALL.iter().map(|s| s.name()).collect();
        expected.sort_unstable();
        let mut sorted = states.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, expected);
        assert_eq!(json["states"]["ESTABLISHED"], 2);
        assert_eq!(json["device"]["ring_full"], 5);
        assert_eq!(json["device_drops"]["xdp_rx_ring_full"], 7);
        assert_eq!(json["device_drops"]["tx_pool_empty"], 0);
        assert_eq!(snap.device_dropped("xdp_rx_ring_full"), Some(7));
        assert_eq!(snap.device_dropped("nonsense"), None);
        assert!(json.get("connections").is_none(), "absent unless asked for");
        let back: Snapshot = serde_json::from_value(json.clone()).unwrap();
        assert_eq!(back, snap);
        // A snapshot from an xtcp that knew no device drops reads as one without any.
        let mut old = json;
        old.as_object_mut().unwrap().remove("device_drops");
        let back: Snapshot = serde_json::from_value(old).unwrap();
        assert!(back.device_drops.is_empty());
        let bad = r#"{"local":"1.2.3.4:5","remote":"1.2.3.4:6","state":"NOPE"}"#;
        assert!(serde_json::from_str::<ConnectionInfo>(bad).is_err());
    }
}
