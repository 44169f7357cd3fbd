//! The kernel-socket stack: the same [`Sockets`] calls over ordinary Linux TCP sockets, with epoll (through mio)
//! in place of the AF_XDP rings, so `--stack kernel` runs the very same application code and one tool measures
//! both stacks with the same workload.
//!
//! [`KernelStack`] keeps xtcp's semantics where the kernel's differ:
//! - Connections live in a slab with generation numbers. When a connection ends its socket is dropped and
//!   [`StackEvent::Closed`] queued; once the application takes that event the slot is freed and the handle fails
//!   with [`StackError::NoConnection`] (until then it behaves as a closed connection). The mio token of a connection is its slab index; listeners have tokens of their
//!   own above [`LISTENER_TOKEN_BASE`].
//! - Each connection has a bounded user-space send buffer ([`KernelConfig::send_buffer_bytes`]), so
//!   [`Sockets::send_capacity`] means what it means on xtcp: `send` writes straight to the socket when nothing is
//!   pending, keeps the rest, and flushes it when the socket is writable again. A send that leaves the buffer full
//!   (or takes fewer bytes than offered) arms one [`StackEvent::Writable`], as on xtcp.
//! - [`StackEvent::PeerClosed`] comes once when the peer's end of stream is reached; [`StackEvent::Closed`] with
//!   [`CloseReason::Normal`] once our FIN is sent and the peer's is read. Errors end connections as xtcp's
//!   reasons: `ECONNREFUSED` → [`CloseReason::Refused`], `ECONNRESET`/`EPIPE` → [`CloseReason::Reset`],
//!   `ETIMEDOUT` → [`CloseReason::TimedOut`].
//!
//! Everything is non-blocking and edge-triggered; [`run_kernel`] is the loop, shaped as [`super::run::run`].

use std::collections::VecDeque;
use std::io::{self, IoSlice, Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddr, SocketAddrV4};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};
use socket2::{Domain, Protocol, SockRef, Socket, Type};

use super::run::{Clock, RunOptions, RunStats};
use super::{ConnId, StackError, StackEvent};
use crate::app::{dispatch, App, Sockets};
use crate::tcp::{Algorithm, CloseReason};

/// Tokens at and above this belong to listeners (listener `i` has `LISTENER_TOKEN_BASE + i`); below it, a token is
/// a connection's slab index. It also bounds [`KernelConfig::max_connections`].
pub const LISTENER_TOKEN_BASE: usize = 1 << 30;

/// Listening ports one stack may have.
pub const MAX_LISTENERS: usize = 64;

/// Source addresses one stack may spread its active opens over ([`KernelConfig::sources`]); the same limit as
/// xtcp's [`crate::engine::MAX_LOCAL_ADDRESSES`].
pub const MAX_SOURCES: usize = crate::engine::MAX_LOCAL_ADDRESSES;

/// Readiness events taken from epoll per poll.
const POLL_BATCH_EVENTS: usize = 1024;

/// Send-buffer capacity a freed slot keeps for the next connection (the rest is given back).
const RETAINED_SEND_BUFFER_BYTES: usize = 64 * 1024;
/// The most one `recv_with` reads from a socket.
const RECV_WITH_BYTES: usize = 64 * 1024;

/// Linux's `EINPROGRESS`: a non-blocking connect under way (std names it only in an unstable `ErrorKind`, and libc
/// is a dependency of the `afxdp` feature alone).
const EINPROGRESS: i32 = 115;

/// How often the connections are looked over for a FIN_WAIT_2 wait past its bound.
const FIN_WAIT_SWEEP_EVERY: Duration = Duration::from_secs(1);

/// Settings of a kernel-socket stack, fixed at start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelConfig {
    /// The address listeners bind to and connections are made from (`0.0.0.0`: any, as the kernel chooses).
    pub ip: Ipv4Addr,
    /// Source addresses for active opens, taken in turn (round-robin); one with no free port passes the open to
    /// the next. Empty: every connection comes from `ip`. At most [`MAX_SOURCES`].
    ///
    /// Each connection binds its source before connecting, and socket2 0.5 has no `IP_BIND_ADDRESS_NO_PORT`: so
    /// the kernel picks the port at bind time, without knowing the server, and a port bound on an address is
    /// taken for every destination. Each address therefore holds at most as many connections as
    /// `ip_local_port_range` has ports (28,232 by default), to all servers together; N addresses hold N times that.
    pub sources: Vec<Ipv4Addr>,
    /// Open connections allowed (accepted and connected together); at most [`LISTENER_TOKEN_BASE`].
    pub max_connections: usize,
    /// The user-space send buffer of each connection: what [`Sockets::send_capacity`] counts down from.
    pub send_buffer_bytes: usize,
    /// The listen(2) backlog of each listener; also the most connections accepted per listener per readiness event.
    pub backlog: u32,
    /// Application events queued before the oldest are dropped (and counted).
    pub max_events: usize,
    /// Congestion control, set with `TCP_CONGESTION` on every listener (accepted connections inherit it) and
    /// every active open: NewReno as Linux's `reno`, CUBIC as its `cubic`. `None`: the system's default
    /// (`net.ipv4.tcp_congestion_control`). [`KernelStack::new`] checks that the kernel lets this process set it.
    pub congestion: Option<Algorithm>,
    /// How long a connection we closed may wait for the peer's FIN while the peer sends nothing; then it ends as
    /// timed out and the socket is let go. Linux bounds FIN_WAIT_2 only for sockets no process holds
    /// (`tcp_fin_timeout`), and this stack holds each until its `Closed`: without this bound a peer that never
    /// closes would keep a descriptor forever. `None`: wait as long as the peer does. As xtcp's own
    /// `fin_wait_2_timeout`.
    pub fin_wait_2_timeout: Option<Duration>,
}

impl KernelConfig {
    /// Defaults for a stack on `ip`: 65,536 connections, 256 KiB send buffers, a backlog of 1024, 65,536 events,
    /// the system's congestion control, 60 s for the peer's FIN.
    pub fn new(ip: Ipv4Addr) -> KernelConfig {
        KernelConfig {
            ip,
            sources: Vec::new(),
            max_connections: 65536,
            send_buffer_bytes: 256 * 1024,
            backlog: 1024,
            max_events: 65536,
            congestion: None,
            fin_wait_2_timeout: Some(Duration::from_secs(60)),
        }
    }
}

impl Default for KernelConfig {
    fn default() -> KernelConfig {
        KernelConfig::new(Ipv4Addr::UNSPECIFIED)
    }
}

/// What a kernel-socket stack counts. Every limit has a counter that grows when it bites.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct KernelCounters {
    /// Connections accepted by a listener.
    pub accepted: u64,
    /// Active opens that completed.
    pub connected: u64,
    /// Active opens the peer refused (`ECONNREFUSED`).
    pub refused: u64,
    /// Connections reset by the peer or broken (`ECONNRESET`, `EPIPE`, ...).
    pub resets: u64,
    /// Connections that timed out (`ETIMEDOUT`, host or network unreachable).
    pub timeouts: u64,
    /// Connections our application aborted (RST sent).
    pub aborts: u64,
    /// Connections that closed in order.
    pub closed_normal: u64,
    /// Times a listener stopped accepting because `max_connections` were open (the rest wait in its backlog).
    pub accept_limit_hits: u64,
    /// accept(2) failures other than "nothing waiting" (out of descriptors, ...); the listener retries later.
    pub accept_errors: u64,
    /// Active opens refused because `max_connections` were open.
    pub table_full: u64,
    /// `listen` calls refused: the port was taken, [`MAX_LISTENERS`] were reached, or the socket calls failed.
    pub listen_errors: u64,
    /// Sends that left a connection's send buffer full.
    pub send_buffer_full: u64,
    /// Application events dropped because `max_events` were queued.
    pub events_dropped: u64,
    /// epoll waits that failed (other than by a signal).
    pub poll_errors: u64,
    /// Connections we closed that ended because the peer sent nothing, its FIN included, for
    /// [`KernelConfig::fin_wait_2_timeout`] (also counted in `timeouts`).
    pub fin_wait_timeouts: u64,
}

impl KernelCounters {
    /// Every counter with its name, in display order (for tables; JSON has the same names through serde).
    pub fn named(&self) -> [(&'static str, u64); 15] {
        [
            ("accepted", self.accepted),
            ("connected", self.connected),
            ("refused", self.refused),
            ("resets", self.resets),
            ("timeouts", self.timeouts),
            ("aborts", self.aborts),
            ("closed_normal", self.closed_normal),
            ("accept_limit_hits", self.accept_limit_hits),
            ("accept_errors", self.accept_errors),
            ("table_full", self.table_full),
            ("listen_errors", self.listen_errors),
            ("send_buffer_full", self.send_buffer_full),
            ("events_dropped", self.events_dropped),
            ("poll_errors", self.poll_errors),
            ("fin_wait_timeouts", self.fin_wait_timeouts),
        ]
    }
}

/// The soft limit on open files of this process (`ulimit -n`), read from `/proc/self/limits`; `None` if
/// unlimited or unreadable. Each connection and listener takes one descriptor, so a `max_connections` above this
/// is reached as accept and connect errors: callers compare and tell the user to raise the limit.
pub fn open_files_limit() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line["Max open files".len()..].split_whitespace().next()?.parse().ok()
}

/// One open connection.
#[derive(Debug)]
struct Conn {
    stream: TcpStream,
    /// The non-blocking connect has not completed yet.
    connecting: bool,
    /// The application called `close`: our FIN goes once the send buffer is flushed.
    close_requested: bool,
    /// shutdown(Write) is done: our FIN is on its way.
    write_shut: bool,
    /// When our FIN went, or (after it) the peer last sent something: the start of the FIN_WAIT_2 wait.
    quiet_since: Option<std::time::Instant>,
    /// epoll said the peer closed its side (the FIN may still sit behind unread data).
    peer_fin_seen: bool,
    /// The peer's end of stream was read and `PeerClosed` queued.
    read_eof: bool,
    /// A send filled the send buffer: one `Writable` is owed when room opens.
    want_writable: bool,
    /// Bytes read from the socket that `recv_with`'s reader left: later reads take them first.
    unread: VecDeque<u8>,
}

/// A slab entry: the connection, if any, and what outlives it.
#[derive(Debug, Default)]
struct Slot {
    generation: u32,
    /// The connection's user-space send buffer (its allocation is kept for the next connection, up to a bound).
    pending: VecDeque<u8>,
    conn: Option<Conn>,
    /// The socket is gone and `Closed` is queued: the handle stays valid (as a closed connection) until the
    /// application takes that event, then the slot is freed.
    closed: bool,
}

/// When a listener that left connections in its backlog accepts again (edge-triggered: no new event comes for
/// them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Retry {
    /// Nothing waits.
    No,
    /// The per-call batch ran out: at the next poll.
    Now,
    /// The connection limit or the descriptor limit stopped it: once a connection is freed.
    OnFree,
}

#[derive(Debug)]
struct Listener {
    socket: TcpListener,
    port: u16,
    retry: Retry,
}

/// What epoll said about one token.
#[derive(Debug, Clone, Copy)]
struct Readiness {
    readable: bool,
    writable: bool,
    error: bool,
    read_closed: bool,
}

/// The kernel-socket stack: one epoll instance, a slab of connections and the listeners, all non-blocking.
#[derive(Debug)]
pub struct KernelStack {
    cfg: KernelConfig,
    poll: Poll,
    /// Readiness events of the last wait (kept between polls: no allocation per poll).
    ready: Events,
    /// When [`KernelStack::end_quiet_fin_waits`] looks over the connections next.
    fin_wait_sweep_at: std::time::Instant,
    slots: Vec<Slot>,
    free: Vec<u32>,
    /// Slots in use (open connections, and closed ones whose `Closed` is not taken yet).
    live: usize,
    /// A slot or a descriptor was freed since listeners last retried.
    freed: bool,
    /// Connections owed a `Writable` because a send took fewer bytes than offered while the socket had room; it is
    /// queued at the next poll if the buffer still has room then (at most one entry per connection).
    owed_writable: Vec<ConnId>,
    listeners: Vec<Listener>,
    /// The source address (index into `cfg.sources`) the next active open tries first.
    next_source: usize,
    events: VecDeque<StackEvent>,
    counters: KernelCounters,
    /// Where `recv_with` reads a socket's bytes before handing them over.
    scratch: Box<[u8]>,
}

/// The reason a connection ends with, from the error that ended it.
fn close_reason(err: &io::Error) -> CloseReason {
    match err.kind() {
        io::ErrorKind::ConnectionRefused => CloseReason::Refused,
        // xtcp does not act on ICMP: an unreachable peer is one whose SYNs go unanswered.
        io::ErrorKind::TimedOut | io::ErrorKind::HostUnreachable | io::ErrorKind::NetworkUnreachable => {
            CloseReason::TimedOut
        }
        _ => CloseReason::Reset,
    }
}

fn invalid(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, what.to_string())
}

/// The name Linux gives `algorithm` in `TCP_CONGESTION`.
fn kernel_congestion_name(algorithm: Algorithm) -> &'static str {
    match algorithm {
        Algorithm::NewReno => "reno",
        Algorithm::Cubic => "cubic",
    }
}

/// Sets `socket`'s congestion control to `algorithm`, if one is chosen.
fn set_congestion(socket: &Socket, algorithm: Option<Algorithm>) -> io::Result<()> {
    match algorithm {
        Some(a) => socket.set_tcp_congestion(kernel_congestion_name(a).as_bytes()),
        None => Ok(()),
    }
}

impl KernelStack {
    /// A stack with `cfg`: makes the epoll instance. Fails if the limits are out of range, the kernel refuses the
    /// congestion control (not built or loaded, or not in `net.ipv4.tcp_allowed_congestion_control` for a process
    /// without CAP_NET_ADMIN), or epoll cannot be made.
    pub fn new(cfg: KernelConfig) -> io::Result<KernelStack> {
        if cfg.max_connections == 0 || cfg.max_connections > LISTENER_TOKEN_BASE {
            return Err(invalid("max_connections must be between 1 and 2^30"));
        }
        if cfg.send_buffer_bytes == 0 || cfg.max_events == 0 || cfg.backlog == 0 {
            return Err(invalid("send_buffer_bytes, max_events and backlog must be at least 1"));
        }
        if cfg.sources.len() > MAX_SOURCES {
            return Err(invalid("at most MAX_SOURCES (64) source addresses"));
        }
        if let Some(a) = cfg.congestion {
            let probe = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP))?;
            set_congestion(&probe, Some(a)).map_err(|e| {
                let name = kernel_congestion_name(a);
                io::Error::new(
                    e.kind(),
                    format!(
                        "the kernel refuses TCP congestion control {name:?} ({e}): see \
                         net.ipv4.tcp_available_congestion_control and tcp_allowed_congestion_control"
                    ),
                )
            })?;
        }
        Ok(KernelStack {
            poll: Poll::new()?,
            ready: Events::with_capacity(POLL_BATCH_EVENTS),
            fin_wait_sweep_at: std::time::Instant::now(),
            slots: Vec::new(),
            free: Vec::new(),
            live: 0,
            freed: false,
            owed_writable: Vec::new(),
            listeners: Vec::new(),
            next_source: 0,
            events: VecDeque::with_capacity(cfg.max_events.min(4096)),
            counters: KernelCounters::default(),
            scratch: vec![0; RECV_WITH_BYTES].into_boxed_slice(),
            cfg,
        })
    }

    /// The settings.
    pub fn config(&self) -> &KernelConfig {
        &self.cfg
    }

    /// What the stack counted so far.
    pub fn counters(&self) -> &KernelCounters {
        &self.counters
    }

    /// Connections held: connecting, established, closing, or closed with their `Closed` event not yet taken.
    pub fn connections(&self) -> usize {
        self.live
    }

    /// Whether application events wait for [`Sockets::next_event`].
    pub fn has_events(&self) -> bool {
        !self.events.is_empty()
    }

    /// Opens a connection to `remote` from `local` (port chosen by the kernel; `0.0.0.0`: address too), so a load
    /// generator can spread connections over many source addresses. [`StackEvent::Connected`] or
    /// [`StackEvent::Closed`] follows. Fails with [`StackError::TableFull`] at `max_connections` (or when the
    /// kernel has no descriptor left, or refuses the congestion control) and [`StackError::NoPort`] when `local`
    /// has no free port or is not ours.
    pub fn connect_from(&mut self, local: Ipv4Addr, remote: SocketAddrV4) -> Result<ConnId, StackError> {
        if self.live >= self.cfg.max_connections {
            self.counters.table_full += 1;
            return Err(StackError::TableFull);
        }
        let socket = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP)).map_err(|_| StackError::TableFull)?;
        socket.set_nonblocking(true).map_err(|_| StackError::TableFull)?;
        set_congestion(&socket, self.cfg.congestion).map_err(|_| StackError::TableFull)?;
        if !local.is_unspecified() {
            socket.bind(&SocketAddrV4::new(local, 0).into()).map_err(|_| StackError::NoPort)?;
        }
        let failed = match socket.connect(&remote.into()) {
            Ok(()) => None,
            Err(e) if e.raw_os_error() == Some(EINPROGRESS) => None,
            Err(e) if matches!(e.kind(), io::ErrorKind::AddrInUse | io::ErrorKind::AddrNotAvailable) => {
                return Err(StackError::NoPort);
            }
            // Refused or unreachable at once: the handle exists and its `Closed` follows, as on xtcp.
            Err(e) => Some(close_reason(&e)),
        };
        let index = self.insert(TcpStream::from_std(socket.into()), true)?;
        let id = self.id_of(index);
        if let Some(reason) = failed {
            self.fail(index, reason);
        }
        Ok(id)
    }

    /// Waits up to `timeout` (`None`: until something happens) for readiness, handles it — accepting, completing
    /// connects, flushing send buffers, queueing events — and returns how many readiness events and accepts there
    /// were. Does not wait when application events are already queued.
    pub fn poll(&mut self, timeout: Option<Duration>) -> io::Result<usize> {
        let mut work = self.retry_backlogged() + self.pay_owed_writable();
        let timeout = if work > 0 || !self.events.is_empty() { Some(Duration::ZERO) } else { timeout };
        // The events buffer leaves `self` while its entries are handled (an empty `Events` allocates nothing).
        let mut ready = std::mem::replace(&mut self.ready, Events::with_capacity(0));
        let waited = self.poll.poll(&mut ready, timeout);
        if waited.is_ok() {
            for ev in ready.iter() {
                work += 1;
                let r = Readiness {
                    readable: ev.is_readable(),
                    writable: ev.is_writable(),
                    error: ev.is_error(),
                    read_closed: ev.is_read_closed(),
                };
                let token = ev.token().0;
                if token >= LISTENER_TOKEN_BASE {
                    work += self.accept_all(token - LISTENER_TOKEN_BASE);
                } else {
                    self.on_ready(token, r);
                }
            }
        }
        self.ready = ready;
        self.end_quiet_fin_waits();
        match waited {
            Ok(()) => Ok(work + self.retry_backlogged()),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(work),
            Err(e) => {
                self.counters.poll_errors += 1;
                Err(e)
            }
        }
    }

    /// Ends, as timed out, the connections whose FIN_WAIT_2 wait passed [`KernelConfig::fin_wait_2_timeout`]
    /// with nothing from the peer. Looks once a second, over the slab (a bound that is seconds late is still one).
    fn end_quiet_fin_waits(&mut self) {
        let Some(limit) = self.cfg.fin_wait_2_timeout else { return };
        let now = std::time::Instant::now();
        if now < self.fin_wait_sweep_at {
            return;
        }
        self.fin_wait_sweep_at = now + FIN_WAIT_SWEEP_EVERY;
        for index in 0..self.slots.len() {
            let quiet = self.conn(index).filter(|c| !c.peer_fin_seen).and_then(|c| c.quiet_since);
            let quiet = quiet.is_some_and(|t| now.duration_since(t) >= limit);
            if quiet {
                self.counters.fin_wait_timeouts += 1;
                self.finish(index, CloseReason::TimedOut);
            }
        }
    }

    // ----- The slab -----

    fn id_of(&self, index: usize) -> ConnId {
        // Indexes stay below `LISTENER_TOKEN_BASE` (2^30), so they fit in a u32.
        ConnId::from_parts(index as u32, self.slots[index].generation)
    }

    /// The slab index of a handle that is not stale (its connection may be closed, `Closed` not yet taken).
    fn index_of(&self, id: ConnId) -> Result<usize, StackError> {
        let index = id.slot() as usize;
        match self.slots.get(index) {
            Some(slot)
                if (slot.conn.is_some() || slot.closed) && ConnId::from_parts(id.slot(), slot.generation) == id =>
            {
                Ok(index)
            }
            _ => Err(StackError::NoConnection),
        }
    }

    /// The slab index of a handle whose connection is open; [`StackError::Closing`] if it closed already.
    fn open_index_of(&self, id: ConnId) -> Result<usize, StackError> {
        let index = self.index_of(id)?;
        if self.slots[index].conn.is_some() {
            Ok(index)
        } else {
            Err(StackError::Closing)
        }
    }

    fn conn(&self, index: usize) -> Option<&Conn> {
        self.slots.get(index).and_then(|s| s.conn.as_ref())
    }

    fn conn_mut(&mut self, index: usize) -> Option<&mut Conn> {
        self.slots.get_mut(index).and_then(|s| s.conn.as_mut())
    }

    /// Registers `stream` and gives it a slot.
    fn insert(&mut self, mut stream: TcpStream, connecting: bool) -> Result<usize, StackError> {
        let index = match self.free.pop() {
            Some(i) => i as usize,
            None if self.slots.len() < self.cfg.max_connections => {
                self.slots.push(Slot::default());
                self.slots.len() - 1
            }
            None => {
                self.counters.table_full += 1;
                return Err(StackError::TableFull);
            }
        };
        if self.poll.registry().register(&mut stream, Token(index), Interest::READABLE | Interest::WRITABLE).is_err() {
            self.free.push(index as u32);
            return Err(StackError::TableFull);
        }
        self.slots[index].closed = false;
        self.slots[index].conn = Some(Conn {
            stream,
            connecting,
            close_requested: false,
            write_shut: false,
            quiet_since: None,
            peer_fin_seen: false,
            read_eof: false,
            want_writable: false,
            unread: VecDeque::new(),
        });
        self.live += 1;
        Ok(index)
    }

    /// Drops the socket in `index` (closing the descriptor) and marks the slot closed; it is freed when the
    /// application takes the `Closed` event.
    fn drop_socket(&mut self, index: usize) {
        let slot = &mut self.slots[index];
        if let Some(mut conn) = slot.conn.take() {
            let _ = self.poll.registry().deregister(&mut conn.stream);
            self.freed = true;
            slot.closed = true;
            slot.pending.clear();
            slot.pending.shrink_to(RETAINED_SEND_BUFFER_BYTES);
        }
    }

    /// Frees the slot of a closed connection whose `Closed` event was taken (or dropped): the handle goes stale.
    fn free_slot(&mut self, id: ConnId) {
        let index = id.slot() as usize;
        if let Some(slot) = self.slots.get_mut(index) {
            if slot.closed && ConnId::from_parts(id.slot(), slot.generation) == id {
                slot.closed = false;
                slot.generation = slot.generation.wrapping_add(1);
                self.free.push(id.slot());
                self.live -= 1;
                self.freed = true;
            }
        }
    }

    fn push_event(&mut self, ev: StackEvent) {
        if self.events.len() >= self.cfg.max_events {
            if let Some(StackEvent::Closed(id, _)) = self.events.pop_front() {
                self.free_slot(id);
            }
            self.counters.events_dropped += 1;
        }
        self.events.push_back(ev);
    }

    /// Queues the `Writable` events owed since the last poll, for connections that still have room.
    fn pay_owed_writable(&mut self) -> usize {
        let cap = self.cfg.send_buffer_bytes;
        let mut owed = std::mem::take(&mut self.owed_writable);
        let mut paid = 0;
        for &id in &owed {
            let Ok(index) = self.index_of(id) else { continue };
            let slot = &mut self.slots[index];
            let Some(conn) = slot.conn.as_mut() else { continue };
            if conn.want_writable && slot.pending.len() < cap {
                conn.want_writable = false;
                self.push_event(StackEvent::Writable(id));
                paid += 1;
            }
        }
        owed.clear();
        self.owed_writable = owed;
        paid
    }

    /// Ends the connection in `index` with `reason`: counts it, queues `Closed`, drops the socket.
    fn finish(&mut self, index: usize, reason: CloseReason) {
        let id = self.id_of(index);
        let c = &mut self.counters;
        match reason {
            CloseReason::Normal => c.closed_normal += 1,
            CloseReason::Refused => c.refused += 1,
            CloseReason::TimedOut => c.timeouts += 1,
            CloseReason::Aborted => c.aborts += 1,
            CloseReason::Reset | CloseReason::ReturnedToListen => c.resets += 1,
        }
        self.drop_socket(index);
        self.push_event(StackEvent::Closed(id, reason));
    }

    /// Ends the connection in `index` on an error.
    fn fail(&mut self, index: usize, reason: CloseReason) {
        self.finish(index, reason);
    }

    // ----- Readiness -----

    /// Accepts what waits on listener `li`, up to the connection limit and `backlog` per call. Returns how many.
    fn accept_all(&mut self, li: usize) -> usize {
        let mut accepted = 0;
        let batch = self.cfg.backlog as usize;
        let Some(port) = self.listeners.get(li).map(|l| l.port) else { return 0 };
        let mut retry = Retry::Now;
        while accepted < batch {
            if self.live >= self.cfg.max_connections {
                self.counters.accept_limit_hits += 1;
                retry = Retry::OnFree;
                break;
            }
            match self.listeners[li].socket.accept() {
                Ok((stream, _peer)) => match self.insert(stream, false) {
                    Ok(index) => {
                        accepted += 1;
                        self.counters.accepted += 1;
                        let conn = self.id_of(index);
                        self.push_event(StackEvent::Accepted { conn, port });
                    }
                    Err(_) => self.counters.accept_errors += 1,
                },
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    retry = Retry::No;
                    break;
                }
                // A connection reset before we took it: take the next.
                Err(e) if matches!(e.kind(), io::ErrorKind::Interrupted | io::ErrorKind::ConnectionAborted) => {}
                // Out of descriptors (or memory): wait for one to be freed.
                Err(_) => {
                    self.counters.accept_errors += 1;
                    retry = Retry::OnFree;
                    break;
                }
            }
        }
        self.listeners[li].retry = retry;
        accepted
    }

    /// Accepts on listeners that left connections waiting, if they may go on now.
    fn retry_backlogged(&mut self) -> usize {
        let freed = std::mem::take(&mut self.freed);
        let mut accepted = 0;
        for li in 0..self.listeners.len() {
            let go = match self.listeners[li].retry {
                Retry::No => false,
                Retry::Now => true,
                Retry::OnFree => freed && self.live < self.cfg.max_connections,
            };
            if go {
                accepted += self.accept_all(li);
            }
        }
        accepted
    }

    fn on_ready(&mut self, index: usize, r: Readiness) {
        let Some(conn) = self.conn(index) else { return };
        if conn.connecting && !self.complete_connect(index) {
            return;
        }
        if r.error {
            let Some(conn) = self.conn(index) else { return };
            if let Ok(Some(e)) = conn.stream.take_error() {
                self.fail(index, close_reason(&e));
                return;
            }
        }
        if r.writable && !self.flush(index) {
            return;
        }
        if r.readable || r.read_closed {
            self.on_readable(index, r.read_closed);
        }
    }

    /// Checks whether a connect finished; returns true if the connection is now established.
    fn complete_connect(&mut self, index: usize) -> bool {
        let Some(conn) = self.conn(index) else { return false };
        let outcome = match conn.stream.take_error() {
            Ok(Some(e)) | Err(e) => Err(e),
            Ok(None) => conn.stream.peer_addr().map(|_| ()),
        };
        match outcome {
            Ok(()) => {
                if let Some(conn) = self.conn_mut(index) {
                    conn.connecting = false;
                }
                self.counters.connected += 1;
                let id = self.id_of(index);
                self.push_event(StackEvent::Connected(id));
                // What the application sent or closed while connecting goes now.
                self.flush(index)
            }
            Err(e) if e.kind() == io::ErrorKind::NotConnected => false,
            Err(e) => {
                self.fail(index, close_reason(&e));
                false
            }
        }
    }

    /// Writes what the send buffer holds until the socket is full, owes `Writable` if room opened for a sender
    /// that filled it, and sends our FIN once a requested close has nothing left to send. Returns false if the
    /// connection is gone.
    fn flush(&mut self, index: usize) -> bool {
        let cap = self.cfg.send_buffer_bytes;
        let slot = &mut self.slots[index];
        let Some(conn) = slot.conn.as_mut() else { return false };
        if conn.connecting {
            return true;
        }
        let mut error = None;
        while !slot.pending.is_empty() {
            let (a, b) = slot.pending.as_slices();
            match conn.stream.write_vectored(&[IoSlice::new(a), IoSlice::new(b)]) {
                Ok(0) => break,
                Ok(n) => {
                    slot.pending.drain(..n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    error = Some(e);
                    break;
                }
            }
        }
        if let Some(e) = error {
            self.fail(index, close_reason(&e));
            return false;
        }
        let writable = conn.want_writable && slot.pending.len() < cap;
        if writable {
            conn.want_writable = false;
            let id = self.id_of(index);
            self.push_event(StackEvent::Writable(id));
        }
        self.settle(index)
    }

    /// Sends our FIN when a requested close has nothing left to send, and ends the connection once both
    /// directions are closed. Returns false if the connection is gone.
    fn settle(&mut self, index: usize) -> bool {
        let slot = &mut self.slots[index];
        let Some(conn) = slot.conn.as_mut() else { return false };
        if !conn.connecting && conn.close_requested && !conn.write_shut && slot.pending.is_empty() {
            match conn.stream.shutdown(Shutdown::Write) {
                Ok(()) => {
                    conn.write_shut = true;
                    conn.quiet_since = self.cfg.fin_wait_2_timeout.map(|_| std::time::Instant::now());
                }
                // The peer reset the connection before our FIN could go.
                Err(e) if e.kind() == io::ErrorKind::NotConnected => {
                    self.fail(index, CloseReason::Reset);
                    return false;
                }
                Err(e) => {
                    self.fail(index, close_reason(&e));
                    return false;
                }
            }
        }
        if conn.write_shut && conn.read_eof {
            self.finish(index, CloseReason::Normal);
            return false;
        }
        true
    }

    /// Data or the peer's FIN arrived: `Readable`, or `PeerClosed` when nothing is left before the end of stream.
    fn on_readable(&mut self, index: usize, read_closed: bool) {
        let Some(conn) = self.conn_mut(index) else { return };
        if conn.connecting || conn.read_eof {
            return;
        }
        if conn.quiet_since.is_some() {
            // The peer still sends: a half-closed connection in use, not one waiting on a peer that went away.
            conn.quiet_since = Some(std::time::Instant::now());
        }
        if read_closed {
            conn.peer_fin_seen = true;
            // One syscall on the closing event only: an application that never reads still hears `PeerClosed`.
            let mut probe = [0u8; 1];
            match conn.stream.peek(&mut probe) {
                Ok(0) => {
                    self.end_of_stream(index);
                    return;
                }
                Ok(_) => {}
                Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted) => {}
                Err(e) => {
                    self.fail(index, close_reason(&e));
                    return;
                }
            }
        }
        let id = self.id_of(index);
        self.push_event(StackEvent::Readable(id));
    }

    /// The peer's end of stream was reached: `PeerClosed` once, and the connection ends if our side is closed.
    fn end_of_stream(&mut self, index: usize) {
        let Some(conn) = self.conn_mut(index) else { return };
        conn.read_eof = true;
        conn.peer_fin_seen = true;
        let id = self.id_of(index);
        self.push_event(StackEvent::PeerClosed(id));
        self.settle(index);
    }
}

impl Sockets for KernelStack {
    /// Listens on `ip:port` with `SO_REUSEADDR`. Fails with [`StackError::ListenerExists`] if this stack listens
    /// there already, [`MAX_LISTENERS`] are open, or the kernel refuses (the port is taken).
    fn listen(&mut self, port: u16) -> Result<(), StackError> {
        if self.listeners.iter().any(|l| l.port == port) || self.listeners.len() >= MAX_LISTENERS {
            self.counters.listen_errors += 1;
            return Err(StackError::ListenerExists);
        }
        let addr = SocketAddr::V4(SocketAddrV4::new(self.cfg.ip, port));
        let backlog = i32::try_from(self.cfg.backlog).unwrap_or(i32::MAX);
        let made = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP)).and_then(|s| {
            s.set_reuse_address(true)?;
            s.set_nonblocking(true)?;
            set_congestion(&s, self.cfg.congestion)?;
            s.bind(&addr.into())?;
            s.listen(backlog)?;
            Ok(s)
        });
        let Ok(socket) = made else {
            self.counters.listen_errors += 1;
            return Err(StackError::ListenerExists);
        };
        let mut socket = TcpListener::from_std(socket.into());
        let token = Token(LISTENER_TOKEN_BASE + self.listeners.len());
        if self.poll.registry().register(&mut socket, token, Interest::READABLE).is_err() {
            self.counters.listen_errors += 1;
            return Err(StackError::ListenerExists);
        }
        self.listeners.push(Listener { socket, port, retry: Retry::No });
        Ok(())
    }

    /// Connects from the next of [`KernelConfig::sources`] in turn, moving on while one has no free port (see
    /// [`KernelStack::connect_from`]); from [`KernelConfig::ip`] when there are none.
    fn connect(&mut self, remote: SocketAddrV4) -> Result<ConnId, StackError> {
        let count = self.cfg.sources.len();
        if count == 0 {
            return self.connect_from(self.cfg.ip, remote);
        }
        let first = self.next_source;
        for k in 0..count {
            match self.connect_from(self.cfg.sources[(first + k) % count], remote) {
                Err(StackError::NoPort) => continue,
                done => {
                    self.next_source = (first + k + 1) % count;
                    return done;
                }
            }
        }
        Err(StackError::NoPort)
    }

    /// Takes at most [`Sockets::send_capacity`] bytes: straight to the socket while nothing is pending, the rest
    /// into the send buffer. A send that takes fewer bytes than offered or leaves the buffer full is followed by one
    /// `Writable` (when the socket drains, or at the next poll if it took everything). A socket error ends the
    /// connection (its `Closed` is queued); on a closed connection, or after `close`, fails with
    /// [`StackError::Closing`].
    fn send(&mut self, id: ConnId, data: &[u8]) -> Result<usize, StackError> {
        let index = self.open_index_of(id)?;
        let cap = self.cfg.send_buffer_bytes;
        let slot = &mut self.slots[index];
        let Some(conn) = slot.conn.as_mut() else { return Err(StackError::Closing) };
        if conn.close_requested {
            return Err(StackError::Closing);
        }
        let offered = data.len();
        let data = &data[..offered.min(cap - slot.pending.len())];
        let mut written = 0;
        if slot.pending.is_empty() && !conn.connecting {
            while written < data.len() {
                match conn.stream.write(&data[written..]) {
                    Ok(0) => break,
                    Ok(n) => written += n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => {
                        self.fail(index, close_reason(&e));
                        return Err(StackError::Closing);
                    }
                }
            }
        }
        slot.pending.extend(&data[written..]);
        let full = slot.pending.len() >= cap;
        if full {
            self.counters.send_buffer_full += 1;
        }
        if (full || data.len() < offered) && !conn.want_writable {
            // Fewer bytes taken than offered, or none left to take: `Writable` follows, as on xtcp — when the
            // socket drains, or at the next poll if it took everything (room is open already).
            conn.want_writable = true;
            if slot.pending.is_empty() {
                self.owed_writable.push(id);
            }
        }
        Ok(data.len())
    }

    /// Reads from the socket: 0 when nothing waits. Reading the end of stream queues `PeerClosed` (once) and
    /// returns 0; a socket error ends the connection (its `Closed` is queued) and returns 0.
    fn recv(&mut self, id: ConnId, buf: &mut [u8]) -> Result<usize, StackError> {
        let index = self.index_of(id)?;
        let Some(conn) = self.conn_mut(index) else { return Ok(0) };
        if !conn.unread.is_empty() {
            return Ok(io::Read::read(&mut conn.unread, buf).unwrap_or(0));
        }
        if conn.connecting || conn.read_eof || buf.is_empty() {
            return Ok(0);
        }
        loop {
            match conn.stream.read(buf) {
                Ok(0) => {
                    self.end_of_stream(index);
                    return Ok(0);
                }
                Ok(n) => return Ok(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(0),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    self.fail(index, close_reason(&e));
                    return Ok(0);
                }
            }
        }
    }

    /// One read of the socket into the scratch buffer, handed to `read`; what it leaves is kept for the next read
    /// (a copy, as with `recv`: the kernel's bytes cannot be read in place).
    fn recv_with(&mut self, id: ConnId, max: usize, read: &mut dyn FnMut(&[u8]) -> usize) -> Result<usize, StackError> {
        let index = self.index_of(id)?;
        let Some(conn) = self.conn_mut(index) else { return Ok(0) };
        if !conn.unread.is_empty() {
            let run = conn.unread.as_slices().0;
            let run = &run[..run.len().min(max)];
            let n = read(run).min(run.len());
            conn.unread.drain(..n);
            return Ok(n);
        }
        let mut scratch = std::mem::take(&mut self.scratch);
        let want = max.min(scratch.len());
        let result = match self.recv(id, &mut scratch[..want]) {
            Ok(got) if got > 0 => {
                let n = read(&scratch[..got]).min(got);
                if let Some(conn) = self.conn_mut(index).filter(|_| n < got) {
                    conn.unread.extend(&scratch[n..got]);
                }
                Ok(n)
            }
            other => other,
        };
        self.scratch = scratch;
        result
    }

    /// Half-closes: our FIN goes (shutdown(Write)) once the send buffer is flushed; the connection stays readable.
    /// A second `close` fails with [`StackError::Closing`].
    fn close(&mut self, id: ConnId) -> Result<(), StackError> {
        let index = self.open_index_of(id)?;
        let Some(conn) = self.conn_mut(index) else { return Err(StackError::Closing) };
        if conn.close_requested {
            return Err(StackError::Closing);
        }
        conn.close_requested = true;
        self.settle(index);
        Ok(())
    }

    /// Frees a connection whose both sides closed (our FIN sent, the peer's received, even if unread: the kernel
    /// then resets, as close(2) does with unread bytes) with `Closed(id, Normal)`; aborts any other.
    fn release(&mut self, id: ConnId) -> Result<(), StackError> {
        let index = self.index_of(id)?;
        match self.conn(index) {
            // Closed already: its `Closed` is queued.
            None => Ok(()),
            Some(c) if c.write_shut && c.peer_fin_seen => {
                self.finish(index, CloseReason::Normal);
                Ok(())
            }
            Some(_) => self.abort(id),
        }
    }

    /// Resets the connection (`SO_LINGER` 0, then close) and queues `Closed(id, Aborted)`; nothing if it closed
    /// already.
    fn abort(&mut self, id: ConnId) -> Result<(), StackError> {
        let index = self.index_of(id)?;
        let Some(conn) = self.conn(index) else { return Ok(()) };
        let _ = SockRef::from(&conn.stream).set_linger(Some(Duration::ZERO));
        self.finish(index, CloseReason::Aborted);
        Ok(())
    }

    /// `send_buffer_bytes` minus what waits in the send buffer; 0 for a stale handle or after `close`.
    fn send_capacity(&self, id: ConnId) -> usize {
        let Ok(index) = self.index_of(id) else { return 0 };
        let slot = &self.slots[index];
        match &slot.conn {
            Some(c) if !c.close_requested => self.cfg.send_buffer_bytes - slot.pending.len(),
            _ => 0,
        }
    }

    /// Sets `TCP_NODELAY`.
    fn set_nodelay(&mut self, id: ConnId, nodelay: bool) -> Result<(), StackError> {
        let index = self.open_index_of(id)?;
        let Some(conn) = self.conn(index) else { return Err(StackError::Closing) };
        conn.stream.set_nodelay(nodelay).map_err(|_| StackError::Closing)
    }

    /// The next event; taking a `Closed` frees its connection's slot, and the handle is stale from then on.
    fn next_event(&mut self) -> Option<StackEvent> {
        let ev = self.events.pop_front();
        if self.events.is_empty() {
            // Back to the front of the ring, as `Stack::next_event` does: the same application code costs the same.
            self.events.clear();
        }
        if let Some(StackEvent::Closed(id, _)) = ev {
            self.free_slot(id);
        }
        ev
    }
}

/// Runs `app` on `stack` until the application is done or `stop` is set: the loop of [`super::run::run`] over
/// epoll. Each turn polls without waiting and dispatches events; when idle it keeps polling for `opts.busy_poll`,
/// then waits in epoll for at most `opts.max_sleep`, so `stop` and `on_tick` pacing keep working.
pub fn run_kernel(
    stack: &mut KernelStack,
    app: &mut dyn App<KernelStack>,
    stop: &AtomicBool,
    opts: RunOptions,
) -> RunStats {
    let clock = Clock::new();
    let mut stats = RunStats::default();
    app.start(stack, clock.now());
    let mut last_work = clock.now();
    while !stop.load(Ordering::Relaxed) && !app.done() {
        stats.turns += 1;
        let now = clock.now();
        let ready = stack.poll(Some(Duration::ZERO)).unwrap_or(0);
        let events = dispatch(stack, now, app);
        if ready > 0 || events > 0 {
            stats.busy_turns += 1;
            last_work = now;
            continue;
        }
        if now - last_work < opts.busy_poll {
            core::hint::spin_loop();
            continue;
        }
        stats.sleeps += 1;
        // What the wait finds is dispatched next turn (a wait that failed is counted; the turn goes on).
        let _ = stack.poll(Some(opts.max_sleep));
    }
    stats
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_map_to_close_reasons() {
        let of = |kind| close_reason(&io::Error::from(kind));
        assert_eq!(of(io::ErrorKind::ConnectionRefused), CloseReason::Refused);
        assert_eq!(of(io::ErrorKind::ConnectionReset), CloseReason::Reset);
        assert_eq!(of(io::ErrorKind::BrokenPipe), CloseReason::Reset);
        assert_eq!(of(io::ErrorKind::TimedOut), CloseReason::TimedOut);
        assert_eq!(of(io::ErrorKind::HostUnreachable), CloseReason::TimedOut);
        assert_eq!(io::Error::from_raw_os_error(EINPROGRESS).raw_os_error(), Some(115));
    }

    #[test]
    fn limits_out_of_range_are_refused() {
        let ok = KernelConfig::new(Ipv4Addr::LOCALHOST);
        assert!(KernelStack::new(ok.clone()).is_ok());
        for bad in [
            KernelConfig { max_connections: 0, ..ok.clone() },
            KernelConfig { max_connections: LISTENER_TOKEN_BASE + 1, ..ok.clone() },
            KernelConfig { send_buffer_bytes: 0, ..ok.clone() },
            KernelConfig { max_events: 0, ..ok.clone() },
            KernelConfig { backlog: 0, ..ok.clone() },
            KernelConfig { sources: vec![Ipv4Addr::LOCALHOST; MAX_SOURCES + 1], ..ok.clone() },
        ] {
            assert_eq!(KernelStack::new(bad).unwrap_err().kind(), io::ErrorKind::InvalidInput);
        }
    }

    #[test]
    fn stale_and_unknown_handles_fail() {
        let mut stack = KernelStack::new(KernelConfig::new(Ipv4Addr::LOCALHOST)).unwrap();
        let id = ConnId::from_parts(3, 0);
        assert_eq!(stack.send(id, b"x"), Err(StackError::NoConnection));
        assert_eq!(stack.recv(id, &mut [0; 4]), Err(StackError::NoConnection));
        assert_eq!(stack.close(id), Err(StackError::NoConnection));
        assert_eq!(stack.abort(id), Err(StackError::NoConnection));
        assert_eq!(stack.release(id), Err(StackError::NoConnection));
        assert_eq!(stack.set_nodelay(id, true), Err(StackError::NoConnection));
        assert_eq!(stack.send_capacity(id), 0);
        assert_eq!(stack.next_event(), None);
    }

    #[test]
    fn counters_are_named_as_serialized() {
        let c = KernelCounters { accepted: 1, poll_errors: 2, ..KernelCounters::default() };
        let json = serde_json::to_value(c).unwrap();
        let named = c.named();
        assert_eq!(json.as_object().unwrap().len(), named.len());
        for (name, value) in named {
            assert_eq!(json[name], value, "{name}");
        }
    }

    #[test]
    fn open_files_limit_is_read() {
        // Linux always lists it; "unlimited" is the only value that does not parse.
        let limits = std::fs::read_to_string("/proc/self/limits").unwrap();
        let unlimited = limits.lines().any(|l| l.starts_with("Max open files") && l.contains("unlimited"));
        assert_eq!(open_files_limit().is_none(), unlimited);
        assert!(open_files_limit().is_none_or(|n| n > 0));
    }

    /// What Linux's `TCP_CONGESTION` says connection `id` uses (socket2 returns the whole, NUL-padded buffer).
    fn kernel_congestion(stack: &KernelStack, id: ConnId) -> String {
        let index = stack.open_index_of(id).unwrap();
        let conn = stack.slots[index].conn.as_ref().unwrap();
        let name = SockRef::from(&conn.stream).tcp_congestion().unwrap();
        String::from_utf8(name).unwrap().trim_end_matches('\0').to_owned()
    }

    #[test]
    fn the_chosen_congestion_control_is_what_accepted_and_opened_connections_use() {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let remote = SocketAddrV4::new(Ipv4Addr::LOCALHOST, port);
        let (reno, cubic) = (Algorithm::NewReno, Algorithm::Cubic);
        // Each side the other's opposite: the listener's choice reaches the accepted connection.
        for (server_cc, client_cc) in [(cubic, reno), (reno, cubic), (reno, reno)] {
            let cfg = |cc| KernelConfig { congestion: Some(cc), ..KernelConfig::new(Ipv4Addr::LOCALHOST) };
            let (server, client) = (KernelStack::new(cfg(server_cc)), KernelStack::new(cfg(client_cc)));
            let (mut server, mut client) = match (server, client) {
                (Ok(s), Ok(c)) => (s, c),
                // Without CAP_NET_ADMIN only net.ipv4.tcp_allowed_congestion_control may be set; reno always may.
                (Err(e), _) | (_, Err(e)) => {
                    assert_eq!(e.kind(), io::ErrorKind::PermissionDenied, "{e}");
                    assert!(e.to_string().contains("\"cubic\"") && e.to_string().contains("allowed"), "{e}");
                    continue;
                }
            };
            server.listen(port).unwrap();
            let opened = client.connect(remote).unwrap();
            let mut accepted = None;
            let deadline = std::time::Instant::now() + Duration::from_secs(5);
            while accepted.is_none() && std::time::Instant::now() < deadline {
                server.poll(Some(Duration::from_millis(10))).unwrap();
                client.poll(Some(Duration::ZERO)).unwrap();
                while let Some(ev) = server.next_event() {
                    if let StackEvent::Accepted { conn, .. } = ev {
                        accepted = Some(conn);
                    }
                }
            }
            let name = |a| kernel_congestion_name(a).to_owned();
            assert_eq!(kernel_congestion(&server, accepted.expect("accepted")), name(server_cc));
            assert_eq!(kernel_congestion(&client, opened), name(client_cc));
        }
    }

    #[test]
    fn listener_limits_are_counted() {
        let mut stack = KernelStack::new(KernelConfig::new(Ipv4Addr::LOCALHOST)).unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        stack.listen(port).unwrap();
        assert_eq!(stack.listen(port), Err(StackError::ListenerExists));
        assert_eq!(stack.counters().listen_errors, 1);
    }
}
