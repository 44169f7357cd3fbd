//! One core's protocol host: parses frames, finds the connection, runs the TCP state machine, emits replies,
//! drives the timer wheel and keeps the counters.
//!
//! A [`Stack`] owns one shard of the connection table and one timer wheel. It does no I/O of its own: each call to
//! [`Stack::poll`] is handed the current time and a [`FrameDevice`], so the same code runs over the simulated link
//! and over AF_XDP. The application talks to it through [`ConnId`] handles and [`StackEvent`]s.

pub mod control;
mod counters;
pub mod kernel;
pub mod rss;
pub mod run;
pub mod shard;
pub mod sim;

pub use counters::{Counters, Drop};

use core::time::Duration;
use std::collections::{HashMap, VecDeque};

use hashbrown::HashTable;
use std::hash::{BuildHasher, Hash, Hasher};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::ops::RangeInclusive;
use std::sync::Arc;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use siphasher::sip::SipHasher13;

use crate::nic::{FrameDevice, Transmit};
use crate::tcp::{
    self, BufferPool, CloseReason, Compact, Connection, ConnectionStats, Event, IsnGenerator, ListenAction, State,
    SynCookies, TimerKind,
};
use crate::time::Instant;
use crate::timer::{TimerHandle, TimerWheel};
use crate::wire::{
    ArpOperation, ArpPacket, ArpRepr, EtherType, EthernetAddress, EthernetFrame, EthernetRepr, IpProtocol, Ipv4Packet,
    Ipv4Repr, TcpFlags, TcpPacket, TcpRepr,
};

/// Settings of one stack, fixed at start.
#[derive(Debug, Clone)]
pub struct StackConfig {
    /// Our MAC address.
    pub mac: EthernetAddress,
    /// Our IPv4 address: the first of ours, the one ARP requests come from.
    pub ip: Ipv4Addr,
    /// More addresses of ours (aliases on the interface), so active opens can hold more than one address's
    /// ephemeral range of connections to one server. Frames to any of them are ours; with `ip` at most
    /// [`MAX_LOCAL_ADDRESSES`] count, and the rest (and repeats) are ignored.
    pub extra_ips: Vec<Ipv4Addr>,
    /// Settings for every connection.
    pub tcp: tcp::Config,
    /// Connection table limit, TIME_WAIT included.
    pub max_connections: usize,
    /// Half-open (SYN_RECEIVED) connections allowed per listener.
    pub syn_backlog: usize,
    /// When SYNs are answered with SYN cookies instead of half-open connections.
    pub syn_cookies: SynCookieMode,
    /// Connections kept in TIME_WAIT; past this, one that would enter TIME_WAIT closes at once (counted in
    /// [`Counters::time_wait_limited`]), as Linux does past `tcp_max_tw_buckets`.
    pub max_time_wait: usize,
    /// Bytes of send and receive buffers all connections may hold together (buffers are allocated only while they
    /// hold data). At the limit, arriving data is dropped (counted as [`Drop::MemoryFull`]) and the peer sends it
    /// again later; the segment's ACK still counts, so acknowledged data frees memory.
    pub max_buffer_bytes: usize,
    /// Listening ports allowed.
    pub max_listeners: usize,
    /// Source ports for active opens; empty for a stack that only accepts (its `connect` fails with
    /// [`StackError::NoPort`]).
    pub ephemeral_ports: RangeInclusive<u16>,
    /// Which of those an active open may use (the multi-core engine keeps replies on the opening core's queue
    /// with it); `None` allows all.
    pub port_filter: Option<PortFilter>,
    /// Frames taken from the device per poll.
    pub rx_batch: usize,
    /// Verify IPv4 and TCP checksums of received frames.
    pub verify_checksums: bool,
    /// Answer ARP for our address and resolve neighbours with ARP (the simulator); off where the kernel keeps ARP.
    pub arp: bool,
    /// Neighbour cache entries kept.
    pub max_neighbors: usize,
    /// Send every frame to this MAC address (a router, or an odd set-up), whatever the neighbour table or the
    /// received frames say.
    pub next_hop_mac: Option<EthernetAddress>,
    /// Application events queued before the oldest are dropped (and counted).
    pub max_events: usize,
    /// Seed for every random choice of this stack (ISN key, ephemeral ports, table hashing).
    pub seed: u64,
    /// The key of ISNs and timestamp offsets (RFC 6528, RFC 7323 §5.4) when it must outlive this stack, else drawn
    /// from `seed`. Processes that share it (and the engine's clock, counted from boot) give a 4-tuple's
    /// successive connections rising sequence numbers and timestamps whichever process opens them, so a peer
    /// holding the tuple in TIME_WAIT lets the next one in (RFC 6191), as it does for the kernel's.
    pub isn_key: Option<[u8; 16]>,
    /// How long a connection stays quiescent (see [`Connection::compactable`]) before the stack keeps it as a
    /// compact record instead ("hibernation": about a quarter of the memory); `None` never compacts. Anything that
    /// touches the connection wakes it first.
    pub compact_after: Option<Duration>,
}

impl StackConfig {
    /// Defaults for a stack at `mac`/`ip`, seeded with `seed`.
    pub fn new(mac: EthernetAddress, ip: Ipv4Addr, seed: u64) -> StackConfig {
        StackConfig {
            mac,
            ip,
            extra_ips: Vec::new(),
            tcp: tcp::Config::default(),
            max_connections: 65536,
            syn_backlog: 1024,
            syn_cookies: SynCookieMode::WhenFull,
            max_time_wait: 32768,
            max_buffer_bytes: 1 << 30,
            max_listeners: 64,
            ephemeral_ports: 32768..=60999,
            port_filter: None,
            rx_batch: 64,
            verify_checksums: true,
            arp: true,
            max_neighbors: 1024,
            next_hop_mac: None,
            max_events: 65536,
            seed,
            isn_key: None,
            compact_after: Some(Duration::from_millis(100)),
        }
    }

    /// Our addresses: `ip` first, then `extra_ips` without repeats, at most [`MAX_LOCAL_ADDRESSES`].
    pub fn local_addresses(&self) -> Vec<Ipv4Addr> {
        let mut all = Vec::with_capacity(MAX_LOCAL_ADDRESSES.min(1 + self.extra_ips.len()));
        for &ip in std::iter::once(&self.ip).chain(&self.extra_ips) {
            if all.len() < MAX_LOCAL_ADDRESSES && !all.contains(&ip) {
                all.push(ip);
            }
        }
        all
    }
}

/// When a listener answers a SYN with a SYN cookie (see [`tcp::syncookie`]) rather than a half-open connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SynCookieMode {
    /// Never: SYNs past the backlog are dropped (counted as [`Drop::SynBacklogFull`]).
    Never,
    /// When the listener's SYN backlog is full — a flood, or a burst of real clients (Linux's default).
    #[default]
    WhenFull,
    /// For every SYN: no half-open state at all (tests, and hosts under constant attack).
    Always,
}

/// The most local addresses a [`Stack`] holds (`ip` and `extra_ips` of [`StackConfig`] together); the steering
/// program steers as many (`XTCP_MAX_ADDRS`).
pub const MAX_LOCAL_ADDRESSES: usize = 64;

/// Says whether an active open from `local` to `remote` may use `local`'s port: called by [`Stack::connect`] for
/// each candidate port, never per packet.
#[derive(Clone)]
pub struct PortFilter(pub Arc<dyn Fn(SocketAddrV4, SocketAddrV4) -> bool + Send + Sync>);

impl core::fmt::Debug for PortFilter {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("PortFilter(..)")
    }
}

/// A map keyed by connection handle, for applications: hashed with FxHash, not the standard SipHash. Handles are
/// the stack's own slot numbers and generations, which no peer chooses, so there is no flooding to guard against,
/// and SipHash cost the load generator a sixth of its own time at 64 connections (several look-ups an answer).
pub type ConnMap<V> = std::collections::HashMap<ConnId, V, rustc_hash::FxBuildHasher>;

/// A set of connection handles, hashed as [`ConnMap`].
pub type ConnSet = std::collections::HashSet<ConnId, rustc_hash::FxBuildHasher>;

/// A handle on one connection of a [`Stack`]. Stale once the connection is gone: calls then fail with
/// [`StackError::NoConnection`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId {
    index: u32,
    generation: u32,
}

impl ConnId {
    /// The table slot, stable while the connection lives (for display).
    pub fn slot(self) -> u32 {
        self.index
    }

    /// A handle made by another [`crate::app::Sockets`] implementation (the kernel-socket one) from its own slot
    /// index and generation.
    pub fn from_parts(index: u32, generation: u32) -> ConnId {
        ConnId { index, generation }
    }
}

/// What the application hears from the stack.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StackEvent {
    /// A connection made by a listener reached ESTABLISHED.
    Accepted {
        /// The new connection.
        conn: ConnId,
        /// The listening port it came in on.
        port: u16,
    },
    /// An active open reached ESTABLISHED.
    Connected(ConnId),
    /// Data can be read.
    Readable(ConnId),
    /// Room opened in the send buffer.
    Writable(ConnId),
    /// The peer closed its side: after the buffered data, the stream ends.
    PeerClosed(ConnId),
    /// The connection is gone; its [`ConnId`] is stale from now on.
    Closed(ConnId, CloseReason),
}

/// Why an application call failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum StackError {
    /// The handle is stale or never existed.
    #[error("no such connection")]
    NoConnection,
    /// The connection is closing (RFC 9293 "connection closing").
    #[error("connection closing")]
    Closing,
    /// The connection table is full.
    #[error("connection table full")]
    TableFull,
    /// Every ephemeral port to that peer is in use.
    #[error("no free ephemeral port")]
    NoPort,
    /// The port already has a listener, or the listener limit is reached.
    #[error("port in use or too many listeners")]
    ListenerExists,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FourTuple {
    local_ip: Ipv4Addr,
    local_port: u16,
    remote: SocketAddrV4,
}

impl FourTuple {
    fn of(local: SocketAddrV4, remote: SocketAddrV4) -> FourTuple {
        FourTuple { local_ip: *local.ip(), local_port: local.port(), remote }
    }

    fn local(&self) -> SocketAddrV4 {
        SocketAddrV4::new(self.local_ip, self.local_port)
    }
}

/// Twelve bytes in two writes: the addresses as one u64, the ports as one u32 (the derived hash would write each
/// address as a length-prefixed byte slice).
impl Hash for FourTuple {
    fn hash<H: Hasher>(&self, h: &mut H) {
        h.write_u64(u64::from(u32::from(self.local_ip)) << 32 | u64::from(u32::from(*self.remote.ip())));
        h.write_u32(u32::from(self.local_port) << 16 | u32::from(self.remote.port()));
    }
}

/// SipHash-1-3 keyed from the stack's seed: deterministic for replay, not predictable by a peer choosing 4-tuples.
#[derive(Debug, Clone, Copy)]
struct KeyedHasher {
    k0: u64,
    k1: u64,
}

impl BuildHasher for KeyedHasher {
    type Hasher = SipHasher13;
    fn build_hasher(&self) -> SipHasher13 {
        SipHasher13::new_with_keys(self.k0, self.k1)
    }
}

/// One slot of the connection slab: a generation, so stale handles are told apart, and what it holds.
#[derive(Debug)]
struct Slot {
    generation: u32,
    body: Body,
}

#[derive(Debug)]
enum Body {
    Free,
    /// A connection as it runs.
    Live(Box<Entry>),
    /// A quiescent connection kept compact (see [`StackConfig::compact_after`]).
    Idle(Box<IdleEntry>),
}

impl Body {
    /// Adds the connection's counters, if it holds one, to `totals` (see [`Stack::tcp_totals`]).
    fn add_stats_to(&self, totals: &mut [u64; ConnectionStats::NAMED_LEN]) {
        match self {
            Body::Live(e) => e.conn.stats().add_to(totals),
            Body::Idle(r) => r.conn.stats().add_to(totals),
            Body::Free => {}
        }
    }
}

impl Slot {
    fn live(&self) -> Option<&Entry> {
        match &self.body {
            Body::Live(e) => Some(e),
            _ => None,
        }
    }

    fn live_mut(&mut self) -> Option<&mut Entry> {
        match &mut self.body {
            Body::Live(e) => Some(e),
            _ => None,
        }
    }
}

#[derive(Debug)]
struct Entry {
    /// The connection, whose addresses are the entry's 4-tuple (see [`Entry::tuple`]).
    conn: Connection,
    /// Where this connection's frames go: the SYN's sender for a passive open, the neighbour table for an active
    /// one (looked up again while unknown).
    peer_mac: Option<EthernetAddress>,
    /// The one wheel entry, for the connection's earliest deadline, and the ms it was filed at.
    timer: Option<(TimerHandle, u64)>,
    /// When the connection last took input, a timer or an application call, in ms of the stack's clock
    /// (wrapping): what the compaction sweep looks at.
    active_ms: u32,
    /// On the dirty list (owes a transmit after an application call).
    dirty: bool,
    /// Counted in its listener's SYN backlog.
    half_open: bool,
    /// Counted in the stack's TIME_WAIT population.
    time_wait: bool,
    /// The connection's buffer memory as last counted in the stack's total (two buffers of at most
    /// [`tcp::MAX_BUFFER_BYTES`] each: a u32 holds it).
    buffer_bytes: u32,
    /// Closed in order while the application still had bytes to read: the entry stays (out of the table, with no
    /// timers) until they are read, and the `Closed` event waits for that.
    closed_unread: Option<CloseReason>,
}

/// A compacted connection and what of its [`Entry`] is not at rest (a quiescent connection is not dirty, half
/// open or closed, and holds no buffer). Its wheel entry is filed at its earliest deadline exactly.
#[derive(Debug)]
struct IdleEntry {
    conn: Compact,
    peer_mac: Option<EthernetAddress>,
    timer: Option<TimerHandle>,
    time_wait: bool,
}

/// The 4-tuple of the connection in slot `index`, live or compact.
fn slot_tuple(slots: &[Slot], index: u32) -> Option<FourTuple> {
    match &slots.get(index as usize)?.body {
        Body::Live(e) => Some(e.tuple()),
        Body::Idle(r) => Some(FourTuple::of(r.conn.local(), r.conn.remote())),
        Body::Free => None,
    }
}

impl Entry {
    /// The 4-tuple the table files the connection under.
    fn tuple(&self) -> FourTuple {
        FourTuple::of(self.conn.local(), self.conn.remote())
    }

    /// The listening port, for a passive open.
    fn listener(&self) -> Option<u16> {
        self.conn.is_passive().then(|| self.conn.local().port())
    }
}

#[derive(Debug)]
struct Listener {
    half_open: usize,
    /// Settings for the connections this listener makes, shared with each of them.
    tcp: Arc<tcp::Config>,
}

/// One core's TCP/IP stack. See the [module docs](self).
#[derive(Debug)]
pub struct Stack {
    cfg: StackConfig,
    /// `cfg.tcp`, shared by the connections made with it.
    tcp: Arc<tcp::Config>,
    /// `cfg`'s addresses, primary first (see [`StackConfig::local_addresses`]).
    local_ips: Vec<Ipv4Addr>,
    /// The address the next active open tries first (round-robin over `local_ips`).
    next_local: usize,
    /// Moves past every ephemeral port taken (see [`Stack::free_port`]).
    next_port: u32,
    /// Inside [`Stack::receive`]: transmissions that segments cause wait for [`Stack::flush`].
    in_receive: bool,
    isn: IsnGenerator,
    cookies: SynCookies,
    /// When the last SYN cookie went out: ACKs to a listener are checked for cookies only for a while after.
    cookie_sent_at: Option<Instant>,
    /// Connections in TIME_WAIT.
    time_wait: usize,
    /// Buffer memory held by all connections.
    buffer_bytes: usize,
    slots: Vec<Slot>,
    free: Vec<u32>,
    /// Boxes of entries no longer live, kept for the next connection (at most [`ENTRY_POOL_MAX`]): the boxes are
    /// the point, so that opening or waking a connection does not allocate.
    #[allow(clippy::vec_box)]
    entry_pool: Vec<Box<Entry>>,
    /// The counters of connections gone from the table, summed (see [`Stack::tcp_totals`]).
    finished_stats: [u64; ConnectionStats::NAMED_LEN],
    /// Where the compaction sweep looks next, and how many slots it owes.
    sweep_cursor: usize,
    sweep_pace: SweepPace,
    /// Connections kept compact now.
    idle: usize,
    /// 4-tuple → slot index. Only the index is kept (4 bytes a bucket, where a tuple and an index take 16): a probe
    /// reads the tuple back from the slot it names, which the segment's processing reads next anyway. A million
    /// connections cost 8 MB of buckets rather than 32.
    table: HashTable<u32>,
    /// Hashes the table's tuples (and the ephemeral ports' per-destination offsets).
    hasher: KeyedHasher,
    listeners: HashMap<u16, Listener>,
    neighbors: HashMap<Ipv4Addr, EthernetAddress, KeyedHasher>,
    wheel: TimerWheel<u32>,
    events: VecDeque<StackEvent>,
    dirty: Vec<u32>,
    /// Buffer blocks that emptied, for the next connection that queues a small message (see [`BufferPool`]).
    pool: BufferPool,
    counters: Counters,
    now: Instant,
}

impl Stack {
    /// A stack with `cfg`, its clock starting at `now`. Allocates the table, wheel and queues up front.
    pub fn new(cfg: StackConfig, now: Instant) -> Stack {
        let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed);
        // Drawn even when a key is handed in, so that the hash keys stay as they were for a seed.
        let drawn: [u8; 16] = rng.gen();
        let isn = IsnGenerator::new(cfg.isn_key.unwrap_or(drawn));
        let hasher = KeyedHasher { k0: rng.gen(), k1: rng.gen() };
        // A generator of its own, so that the main one's draws (ports...) stay as they were for a seed.
        let cookies = SynCookies::new(ChaCha8Rng::seed_from_u64(cfg.seed ^ COOKIE_SEED_SALT).gen());
        let max = cfg.max_connections;
        Stack {
            tcp: Arc::new(cfg.tcp),
            local_ips: cfg.local_addresses(),
            next_local: 0,
            next_port: 0,
            in_receive: false,
            isn,
            cookies,
            cookie_sent_at: None,
            time_wait: 0,
            buffer_bytes: 0,
            slots: Vec::with_capacity(max),
            free: Vec::new(),
            entry_pool: Vec::new(),
            finished_stats: [0; ConnectionStats::NAMED_LEN],
            sweep_cursor: 0,
            sweep_pace: SweepPace::default(),
            idle: 0,
            table: HashTable::with_capacity(max),
            hasher,
            listeners: HashMap::new(),
            neighbors: HashMap::with_capacity_and_hasher(cfg.max_neighbors, hasher),
            wheel: TimerWheel::new(max, now.total_millis()),
            events: VecDeque::with_capacity(cfg.max_events.min(65536)),
            dirty: Vec::with_capacity(max),
            pool: BufferPool::new(BUFFER_POOL_BYTES),
            counters: Counters::default(),
            now,
            cfg,
        }
    }

    /// Moves the stack's clock on to `now` (never back) without polling, for a stack made before its loop read
    /// the clock: [`run::run`] calls it before [`crate::app::App::start`], so that what the application opens
    /// there takes its ISN (RFC 6528's clock part), timestamps and timers from the loop's clock, not from the
    /// time the stack was made with (often [`Instant::ZERO`]). Timers already due run at the next poll.
    pub fn advance_to(&mut self, now: Instant) {
        self.now = self.now.max(now);
        if self.wheel.is_empty() {
            // Nothing can fire: the wheel moves on too, so that the first deadlines are filed from the new time
            // and `poll_at` does not report a bound from long before it.
            let _ = self.wheel.poll_expired(self.now.total_millis());
        }
    }

    /// Bytes of send and receive buffers held by all connections (see [`StackConfig::max_buffer_bytes`]).
    pub fn buffer_bytes(&self) -> usize {
        self.buffer_bytes
    }

    /// The settings.
    pub fn config(&self) -> &StackConfig {
        &self.cfg
    }

    /// Our addresses, the primary ([`StackConfig::ip`]) first.
    pub fn local_addresses(&self) -> &[Ipv4Addr] {
        &self.local_ips
    }

    /// The counters.
    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    /// Connections in the table, TIME_WAIT included.
    pub fn connection_count(&self) -> usize {
        self.table.len()
    }

    /// Table slots in use: the connections plus closed ones whose data the application has not read yet.
    pub fn slots_in_use(&self) -> usize {
        self.slots.len() - self.free.len()
    }

    /// Connections kept as compact records now (see [`StackConfig::compact_after`]).
    pub fn compact_count(&self) -> usize {
        self.idle
    }

    /// Every connection's counters ([`ConnectionStats`]) summed over the stack's life — those gone from the table
    /// and those in it, compact ones included — as `netstat -s` sums the kernel's: retransmissions, timeouts,
    /// duplicate ACKs, out-of-order segments, challenge ACKs... One look at each slot; no connection is woken.
    pub fn tcp_totals(&self) -> [(&'static str, u64); ConnectionStats::NAMED_LEN] {
        let mut totals = self.finished_stats;
        for slot in &self.slots {
            slot.body.add_stats_to(&mut totals);
        }
        let mut named = ConnectionStats::default().named();
        for ((_, v), t) in named.iter_mut().zip(totals) {
            *v = t;
        }
        named
    }

    /// Pending timer-wheel entries (zero once every connection is gone).
    pub fn pending_timers(&self) -> usize {
        self.wheel.len()
    }

    /// How many connections are in each state, indexed like [`State::ALL`]; LISTEN counts listeners.
    pub fn state_counts(&self) -> [usize; 11] {
        let mut counts = [0; 11];
        for s in &self.slots {
            let state = match &s.body {
                Body::Free => continue,
                Body::Live(e) => e.conn.state(),
                Body::Idle(i) => i.conn.state(),
            };
            counts[state_index(state)] += 1;
        }
        counts[state_index(State::Listen)] = self.listeners.len();
        counts
    }

    /// Every connection, in table-slot order (a compacted one rebuilt for the look, not woken).
    pub fn connections(&self) -> impl Iterator<Item = (ConnId, ConnRef<'_>)> {
        self.slots
            .iter()
            .enumerate()
            .filter_map(|(i, s)| ConnRef::of(s).map(|c| (ConnId { index: i as u32, generation: s.generation }, c)))
    }

    /// Adds or replaces a neighbour's MAC address (a static entry, or a next hop given on the command line).
    pub fn add_neighbor(&mut self, ip: Ipv4Addr, mac: EthernetAddress) {
        if self.neighbors.len() < self.cfg.max_neighbors || self.neighbors.contains_key(&ip) {
            self.neighbors.insert(ip, mac);
        }
    }

    // ----- Application calls -----

    /// Accepts connections on `port`, with the stack's TCP settings.
    pub fn listen(&mut self, port: u16) -> Result<(), StackError> {
        self.listen_with(port, self.cfg.tcp)
    }

    /// Accepts connections on `port`, giving them `tcp` settings (congestion control, buffers, timers...).
    pub fn listen_with(&mut self, port: u16, tcp: tcp::Config) -> Result<(), StackError> {
        if self.listeners.contains_key(&port) || self.listeners.len() >= self.cfg.max_listeners {
            return Err(StackError::ListenerExists);
        }
        let tcp = self.shared_config(tcp);
        self.listeners.insert(port, Listener { half_open: 0, tcp });
        Ok(())
    }

    /// Opens a connection to `remote` from an ephemeral port; its SYN goes out on the next [`Stack::poll`].
    pub fn connect(&mut self, remote: SocketAddrV4) -> Result<ConnId, StackError> {
        self.connect_with(remote, self.cfg.tcp)
    }

    /// As [`Stack::connect`], with `tcp` settings for this connection.
    pub fn connect_with(&mut self, remote: SocketAddrV4, tcp: tcp::Config) -> Result<ConnId, StackError> {
        if self.table.len() >= self.cfg.max_connections {
            self.counters.table_full += 1;
            return Err(StackError::TableFull);
        }
        // Round-robin over our addresses; one whose ports to `remote` are all taken passes the turn to the next.
        let count = self.local_ips.len();
        let first = self.next_local;
        let (ip, port) = (0..count)
            .find_map(|k| {
                let ip = self.local_ips[(first + k) % count];
                self.free_port(ip, remote).map(|port| {
                    self.next_local = (first + k + 1) % count;
                    (ip, port)
                })
            })
            .ok_or(StackError::NoPort)?;
        let local = SocketAddrV4::new(ip, port);
        let conn = Connection::connect(self.shared_config(tcp), local, remote, &self.isn, self.now);
        let peer_mac = self.cfg.next_hop_mac.or_else(|| self.neighbors.get(remote.ip()).copied());
        let id = self.insert(conn, peer_mac);
        self.mark_dirty(id.index);
        Ok(id)
    }

    /// `tcp` to hand to connections: the stack's own copy when they are the same settings, else a new one.
    fn shared_config(&self, tcp: tcp::Config) -> Arc<tcp::Config> {
        if tcp == *self.tcp {
            Arc::clone(&self.tcp)
        } else {
            Arc::new(tcp)
        }
    }

    /// The settings for connections to `port`: its listener's, or the stack's.
    fn listener_config(&self, port: u16) -> Arc<tcp::Config> {
        Arc::clone(self.listeners.get(&port).map_or(&self.tcp, |l| &l.tcp))
    }

    /// A free ephemeral port on `ip` towards `remote`, as RFC 6056 §3.3.3 picks one ("simple hash-based", what
    /// Linux does): from a secret offset per destination plus a counter that moves past every port taken, the first
    /// that no listener or connection holds and the port filter allows. Successive connections to one destination
    /// walk the range in turn, so a port comes back to it only after the others had theirs. That matters when the
    /// peer closed first and holds the last connection on the port in TIME_WAIT: it lets a new SYN in only with a
    /// later timestamp or sequence number (RFC 6191), which a port taken again within the same millisecond may
    /// not have — its SYN would be answered with an ACK and wait a second to be resent.
    fn free_port(&mut self, ip: Ipv4Addr, remote: SocketAddrV4) -> Option<u16> {
        if self.cfg.ephemeral_ports.is_empty() {
            return None;
        }
        let (lo, hi) = (*self.cfg.ephemeral_ports.start(), *self.cfg.ephemeral_ports.end());
        let span = u32::from(hi.saturating_sub(lo)) + 1;
        let offset = self.hasher.hash_one((ip, remote)) as u32;
        let start = offset.wrapping_add(self.next_port) % span;
        let port = |i: u32| lo + ((start + i) % span) as u16;
        let taken = (0..span).find(|&i| {
            let p = port(i);
            !self.listeners.contains_key(&p)
                && self.lookup(&FourTuple { local_ip: ip, local_port: p, remote }).is_none()
                && self.cfg.port_filter.as_ref().is_none_or(|f| (f.0)(SocketAddrV4::new(ip, p), remote))
        })?;
        self.next_port = self.next_port.wrapping_add(taken + 1);
        Some(port(taken))
    }

    /// Queues bytes for sending; returns how many fit.
    pub fn send(&mut self, id: ConnId, data: &[u8]) -> Result<usize, StackError> {
        let (e, pool) = self.entry_and_pool(id)?;
        let n = e.conn.send_pooled(data, pool).map_err(|_| StackError::Closing)?;
        if n > 0 {
            self.account_buffers(id.index);
            self.mark_dirty(id.index);
        }
        Ok(n)
    }

    /// Reads received bytes; 0 when none wait. A connection that closed in order stays readable until its last
    /// byte is read; then its `Closed` event follows.
    pub fn recv(&mut self, id: ConnId, buf: &mut [u8]) -> Result<usize, StackError> {
        let (e, pool) = self.entry_and_pool(id)?;
        let n = e.conn.recv_pooled(buf, pool);
        self.after_recv(id)?;
        Ok(n)
    }

    /// Reads received bytes in place, with no copy: `read` is handed the longest contiguous run of unread bytes
    /// (at most `max`) as it lies in the connection's receive buffer, and returns how many of them it consumed; the
    /// rest stay for the next read. Returns the bytes consumed, 0 when none wait. The buffer is a ring, so what
    /// waits may take two calls.
    pub fn recv_with(
        &mut self,
        id: ConnId,
        max: usize,
        read: &mut dyn FnMut(&[u8]) -> usize,
    ) -> Result<usize, StackError> {
        let (e, pool) = self.entry_and_pool(id)?;
        let data = e.conn.recv_peek();
        let data = &data[..data.len().min(max)];
        if data.is_empty() {
            return Ok(0);
        }
        let n = read(data).min(data.len());
        e.conn.recv_consume_pooled(n, pool);
        self.after_recv(id)?;
        Ok(n)
    }

    /// After the application read: buffer accounting, the `Closed` of a connection read to its end, and the window
    /// update the read may owe.
    fn after_recv(&mut self, id: ConnId) -> Result<(), StackError> {
        self.account_buffers(id.index);
        let e = self.entry_mut(id)?;
        if let Some(reason) = e.closed_unread {
            if e.conn.recv_queue_len() == 0 {
                self.push_event(StackEvent::Closed(id, reason));
                self.free_slot(id.index);
            }
        } else if e.conn.wants_transmit() {
            self.mark_dirty(id.index);
        }
        Ok(())
    }

    /// Closes our side (FIN after the queued data).
    pub fn close(&mut self, id: ConnId) -> Result<(), StackError> {
        let e = self.entry_mut(id)?;
        e.conn.close().map_err(|_| StackError::Closing)?;
        self.mark_dirty(id.index);
        Ok(())
    }

    /// The application is done with this handle: a connection that closed in order but still held unread bytes
    /// is freed now (its `Closed` event follows), and a live one is aborted as by [`Stack::abort`].
    pub fn release(&mut self, id: ConnId) -> Result<(), StackError> {
        let e = self.entry_mut(id)?;
        match e.closed_unread {
            Some(reason) => {
                self.push_event(StackEvent::Closed(id, reason));
                self.free_slot(id.index);
                Ok(())
            }
            None => self.abort(id),
        }
    }

    /// Aborts the connection (RST where the peer has one).
    pub fn abort(&mut self, id: ConnId) -> Result<(), StackError> {
        let e = self.entry_mut(id)?;
        e.conn.abort();
        self.mark_dirty(id.index);
        Ok(())
    }

    /// The connection behind a handle, to look at: a compacted one is rebuilt for the look, not woken.
    pub fn connection(&self, id: ConnId) -> Result<ConnRef<'_>, StackError> {
        match self.slots.get(id.index as usize) {
            Some(s) if s.generation == id.generation => ConnRef::of(s).ok_or(StackError::NoConnection),
            _ => Err(StackError::NoConnection),
        }
    }

    /// Mutable access to a connection, for settings such as keep-alive and no-delay.
    pub fn connection_mut(&mut self, id: ConnId) -> Result<&mut Connection, StackError> {
        self.entry_mut(id)?;
        self.mark_dirty(id.index);
        Ok(&mut self.entry_mut(id)?.conn)
    }

    /// The next event for the application.
    pub fn next_event(&mut self) -> Option<StackEvent> {
        let ev = self.events.pop_front();
        if self.events.is_empty() {
            // Back to the front of the ring (`clear` resets it, `pop_front` does not): taken one or two a turn,
            // events would walk the whole allocation, room for 65,536 of them, and land on a cold cache line
            // every few.
            self.events.clear();
        }
        ev
    }

    /// When [`Stack::poll`] next has work without new frames: now if transmits are owed, else the earliest timer
    /// (possibly a little early: the wheel reports a lower bound).
    pub fn poll_at(&self) -> Option<Instant> {
        if !self.dirty.is_empty() {
            return Some(self.now);
        }
        self.wheel.next_deadline().map(Instant::from_millis)
    }

    // ----- The loop body -----

    /// One turn of the loop: take a batch of frames from `dev`, run due timers, send what the segments and
    /// application calls owe, flush. Returns the number of frames received. ([`Stack::receive`] and
    /// [`Stack::flush`] are its halves, for a loop that runs the application in between.)
    pub fn poll(&mut self, now: Instant, dev: &mut dyn FrameDevice) -> usize {
        let received = self.receive(now, dev);
        self.flush(now, dev);
        received
    }

    /// The first half of [`Stack::poll`], for a loop that runs the application between the halves
    /// ([`run::run`] does): takes a batch of frames and runs the timers that are due. What the received segments
    /// make their connections owe waits for [`Stack::flush`], so that an ACK rides on the answer or the FIN the
    /// application queues in its turn instead of going ahead in a frame of its own.
    pub fn receive(&mut self, now: Instant, dev: &mut dyn FrameDevice) -> usize {
        self.now = self.now.max(now);
        let now = self.now;
        // Whatever the application queued outside a turn goes first.
        self.flush_dirty(dev);
        let budget = self.cfg.rx_batch;
        self.in_receive = true;
        let received = dev.receive(now, budget, &mut |frame, tx| self.handle_frame(now, frame, tx));
        self.in_receive = false;
        self.run_timers(now, dev);
        self.sweep(now);
        received
    }

    /// The second half of [`Stack::poll`]: sends what connections owe — ACKs of the segments received, what the
    /// application queued — and hands the batch to the device.
    pub fn flush(&mut self, now: Instant, dev: &mut dyn FrameDevice) {
        self.now = self.now.max(now);
        self.flush_dirty(dev);
        dev.flush(self.now);
    }

    fn flush_dirty(&mut self, tx: &mut dyn Transmit) {
        while let Some(index) = self.dirty.pop() {
            if let Some(e) = self.slots[index as usize].live_mut() {
                e.dirty = false;
            }
            self.after_activity(index, tx);
        }
    }

    /// Runs the connections whose wheel entry is due: each timer kind whose deadline has come (a stale entry, whose
    /// deadlines all moved later, runs none), then [`Stack::sync_timers`] files the next deadline.
    fn run_timers(&mut self, now: Instant, tx: &mut dyn Transmit) {
        while let Some(expired) = self.wheel.poll_expired(now.total_millis()) {
            let index = expired.value;
            self.wake(index);
            let Some(e) = self.slots[index as usize].live_mut() else { continue };
            e.timer = None;
            for kind in TimerKind::ALL {
                if e.conn.timer(kind).is_some_and(|t| t <= now) {
                    e.conn.on_timer(now, kind);
                }
            }
            self.after_activity(index, tx);
        }
    }

    fn handle_frame(&mut self, now: Instant, frame: &[u8], tx: &mut dyn Transmit) {
        self.counters.rx_frames += 1;
        let Ok(eth) = EthernetFrame::new_checked(frame) else {
            return self.counters.drop(Drop::Malformed);
        };
        let Ok(eth_repr) = EthernetRepr::parse(&eth) else {
            return self.counters.drop(Drop::Malformed);
        };
        if eth_repr.dst_addr != self.cfg.mac && !eth_repr.dst_addr.is_broadcast() {
            return self.counters.drop(Drop::NotForUs);
        }
        // IEEE 802: a source address is never a group address; a reply to one would reach a whole group.
        if eth_repr.src_addr.is_multicast() {
            return self.counters.drop(Drop::Malformed);
        }
        match eth_repr.ethertype {
            // Broadcast is for ARP. Linux takes TCP only in frames sent to its own MAC (`tcp_v4_rcv` drops
            // `pkt_type != PACKET_HOST`): a SYN broadcast to a segment is answered by no host on it.
            EtherType::Ipv4 if eth_repr.dst_addr != self.cfg.mac => self.counters.drop(Drop::NotForUs),
            EtherType::Ipv4 => self.handle_ipv4(now, eth_repr.src_addr, eth.payload(), tx),
            EtherType::Arp if self.cfg.arp => self.handle_arp(now, eth.payload(), tx),
            _ => self.counters.drop(Drop::Unsupported),
        }
    }

    fn handle_arp(&mut self, now: Instant, bytes: &[u8], tx: &mut dyn Transmit) {
        let Ok(repr) = ArpPacket::new_checked(bytes).and_then(|p| ArpRepr::parse(&p)) else {
            return self.counters.drop(Drop::Malformed);
        };
        let ArpRepr::EthernetIpv4 {
            operation, source_hardware_addr, source_protocol_addr, target_protocol_addr, ..
        } = repr;
        if !self.local_ips.contains(&target_protocol_addr) {
            return self.counters.drop(Drop::NotForUs);
        }
        self.counters.arp_in += 1;
        self.add_neighbor(source_protocol_addr, source_hardware_addr);
        if operation == ArpOperation::Request {
            let reply = ArpRepr::EthernetIpv4 {
                operation: ArpOperation::Reply,
                source_hardware_addr: self.cfg.mac,
                source_protocol_addr: target_protocol_addr,
                target_hardware_addr: source_hardware_addr,
                target_protocol_addr: source_protocol_addr,
            };
            self.emit_arp(now, source_hardware_addr, &reply, tx);
        }
    }

    fn emit_arp(&mut self, now: Instant, dst: EthernetAddress, arp: &ArpRepr, tx: &mut dyn Transmit) {
        let eth = EthernetRepr { src_addr: self.cfg.mac, dst_addr: dst, ethertype: EtherType::Arp };
        let len = ETHERNET_HEADER_LEN + arp.buffer_len();
        let sent = tx.transmit(now, len, &mut |buf| {
            let mut frame = EthernetFrame::new_unchecked(&mut *buf);
            eth.emit(&mut frame);
            arp.emit(&mut ArpPacket::new_unchecked(frame.payload_mut()));
        });
        if sent {
            self.counters.tx_frames += 1;
        } else {
            self.counters.drop(Drop::TxFull);
        }
    }

    fn handle_ipv4(&mut self, now: Instant, src_mac: EthernetAddress, bytes: &[u8], tx: &mut dyn Transmit) {
        let ip = match Ipv4Packet::new_checked(bytes) {
            Ok(ip) => ip,
            Err(e) => return self.counters.drop_wire(e),
        };
        let ip_repr = match Ipv4Repr::parse(&ip) {
            Ok(r) => r,
            // Parse verifies the header checksum (a failure counts as BadChecksum); with verification off, only a
            // checksum error is forgiven.
            Err(crate::wire::Error::Checksum) if !self.cfg.verify_checksums => match parse_unverified(&ip) {
                Some(r) => r,
                None => return self.counters.drop(Drop::Malformed),
            },
            Err(e) => return self.counters.drop_wire(e),
        };
        // The primary address is compared first: a single-address stack pays one comparison, as before.
        if ip_repr.dst_addr != self.cfg.ip && !self.local_ips[1..].contains(&ip_repr.dst_addr) {
            return self.counters.drop(Drop::NotForUs);
        }
        if self.martian_source(ip_repr.src_addr, src_mac) {
            return self.counters.drop(Drop::Malformed);
        }
        if ip_repr.protocol != IpProtocol::Tcp {
            return self.counters.drop(Drop::Unsupported);
        }
        let payload = ip.payload();
        let tcp = match TcpPacket::new_checked(payload) {
            Ok(t) => t,
            Err(e) => return self.counters.drop_wire(e),
        };
        let verify = self.cfg.verify_checksums;
        let seg = match TcpRepr::parse(&tcp, ip_repr.src_addr, ip_repr.dst_addr, verify) {
            Ok(s) => s,
            // Refused over its options (a failed signature scan)? Linux runs that scan only after it has turned a
            // segment for a TIME_WAIT socket aside, so such a segment is read without it — unless it is a SYN
            // that reopens the 4-tuple, which goes on to the listener and the scan.
            Err(e @ (crate::wire::Error::Malformed | crate::wire::Error::Unsupported)) => {
                match TcpRepr::parse_unscanned(&tcp, ip_repr.src_addr, ip_repr.dst_addr, verify) {
                    Ok(seg) if self.meets_time_wait(ip_repr.src_addr, ip_repr.dst_addr, &seg) => seg,
                    _ => return self.counters.drop_wire(e),
                }
            }
            Err(e) => return self.counters.drop_wire(e),
        };
        self.counters.tcp_in += 1;
        if seg.options.malformed {
            self.counters.malformed_options += 1;
        }
        self.handle_tcp(now, ip_repr.src_addr, ip_repr.dst_addr, src_mac, &seg, tx);
    }

    /// Whether `src`, the source of a frame from `src_mac`, is one no host sends from, which Linux drops as a
    /// martian (`ip_route_input_slow`, `fib_validate_source`): "this network" (0/8), multicast, reserved and
    /// limited broadcast (224/4 and above) always; loopback (127/8) and our own addresses unless the frame is one
    /// of ours come back over a loopback device, where the stack talks to itself. An answer to a martian would go
    /// to nobody, to a group or to ourselves. (Ports of 0 the TCP parser refuses.)
    fn martian_source(&self, src: Ipv4Addr, src_mac: EthernetAddress) -> bool {
        let [first, ..] = src.octets();
        first == 0 || first >= 224 || ((first == 127 || self.local_ips.contains(&src)) && src_mac != self.cfg.mac)
    }

    /// Whether `seg` from `src` to `dst` is for a connection in TIME_WAIT that does not take it as a reopening SYN.
    fn meets_time_wait(&self, src: Ipv4Addr, dst: Ipv4Addr, seg: &TcpRepr<'_>) -> bool {
        let tuple = FourTuple { local_ip: dst, local_port: seg.dst_port, remote: SocketAddrV4::new(src, seg.src_port) };
        self.lookup(&tuple)
            .and_then(|i| self.connection(ConnId { index: i, generation: self.slots[i as usize].generation }).ok())
            .is_some_and(|c| c.state() == State::TimeWait && !reopens(&c, seg, &self.listeners))
    }

    /// `src_mac` is the frame's sender: where replies go when the neighbour table does not say (see
    /// [`Stack::reply_mac`]).
    fn handle_tcp(
        &mut self,
        now: Instant,
        src: Ipv4Addr,
        dst: Ipv4Addr,
        src_mac: EthernetAddress,
        seg: &TcpRepr<'_>,
        tx: &mut dyn Transmit,
    ) {
        let tuple = FourTuple { local_ip: dst, local_port: seg.dst_port, remote: SocketAddrV4::new(src, seg.src_port) };
        if let Some(index) = self.lookup(&tuple) {
            self.wake(index);
            let memory_full = self.memory_full(seg);
            let e = self.slots[index as usize].live_mut().expect("table points at a connection");
            let time_wait = e.conn.state() == State::TimeWait;
            if !(time_wait && reopens(&e.conn, seg, &self.listeners)) {
                if time_wait && seg.flags.syn() && !seg.flags.ack() && !seg.flags.rst() {
                    self.counters.time_wait_refused += 1;
                }
                if memory_full && !e.conn.takes_without_growing(seg) {
                    // No memory for more data: take the rest of the segment (its ACK frees memory), as if the
                    // data and what follows it (a FIN) had been lost. Data that fits what the connection holds
                    // still goes in — above all a gap before out-of-order data, whose arrival frees memory.
                    self.counters.drop(Drop::MemoryFull);
                    e.conn.process_pooled(now, &without_data(seg), &mut self.pool);
                } else {
                    e.conn.process_pooled(now, seg, &mut self.pool);
                }
                self.after_segment(index, tx);
                return;
            }
            // RFC 6191: a new incarnation takes over the TIME_WAIT 4-tuple.
            self.counters.time_wait_reopened += 1;
            self.counters.count_close(CloseReason::Normal);
            let id = ConnId { index, generation: self.slots[index as usize].generation };
            self.push_event(StackEvent::Closed(id, CloseReason::Normal));
            self.free_slot(index);
        }
        if !self.listeners.contains_key(&seg.dst_port) {
            self.counters.drop(Drop::NoConnection);
            if let Some(rst) = tcp::reset_for(seg) {
                self.counters.rst_sent += 1;
                let dst_mac = self.reply_mac(src, src_mac);
                self.emit_tcp(now, tuple.local_ip, tuple.remote, dst_mac, &rst, tx);
            }
            return;
        }
        match tcp::listen_input(seg) {
            ListenAction::Drop => self.counters.drop(Drop::NoConnection),
            ListenAction::Reset(rst) => {
                if self.cookies_in_use(now) {
                    match self.cookies.check(tuple.local(), tuple.remote, seg, now) {
                        Some(opts) => return self.accept_cookie(now, tuple, src_mac, seg, opts, tx),
                        None => self.counters.syn_cookies_invalid += 1,
                    }
                }
                // Found no connection, as a segment to a closed port: a drop, whatever the RST.
                self.counters.drop(Drop::NoConnection);
                self.counters.rst_sent += 1;
                let dst_mac = self.reply_mac(src, src_mac);
                self.emit_tcp(now, tuple.local_ip, tuple.remote, dst_mac, &rst, tx);
            }
            ListenAction::Accept => {
                let backlog_full =
                    self.listeners.get(&seg.dst_port).is_some_and(|l| l.half_open >= self.cfg.syn_backlog);
                let cookie = match self.cfg.syn_cookies {
                    SynCookieMode::Never => false,
                    SynCookieMode::WhenFull => backlog_full,
                    SynCookieMode::Always => true,
                };
                if cookie {
                    let tcp = self.listener_config(seg.dst_port);
                    let syn_ack = self.cookies.syn_ack(&tcp, tuple.local(), tuple.remote, seg, &self.isn, now);
                    self.counters.syn_cookies_sent += 1;
                    self.cookie_sent_at = Some(now);
                    let dst_mac = self.reply_mac(src, src_mac);
                    return self.emit_tcp(now, tuple.local_ip, tuple.remote, dst_mac, &syn_ack, tx);
                }
                if backlog_full {
                    return self.counters.drop(Drop::SynBacklogFull);
                }
                if self.table.len() >= self.cfg.max_connections {
                    self.counters.table_full += 1;
                    return self.counters.drop(Drop::TableFull);
                }
                let local = tuple.local();
                let tcp = self.listener_config(seg.dst_port);
                let conn = Connection::accept(tcp, local, tuple.remote, seg, &self.isn, now);
                let id = self.insert(conn, Some(self.reply_mac(src, src_mac)));
                self.after_activity(id.index, tx);
            }
        }
    }

    /// Whether `seg` brings data while the connections' buffers hold [`StackConfig::max_buffer_bytes`]: data that
    /// would need more memory is to be dropped (see [`without_data`]).
    fn memory_full(&self, seg: &TcpRepr<'_>) -> bool {
        self.buffer_bytes >= self.cfg.max_buffer_bytes && !seg.payload.is_empty()
    }

    /// Whether an ACK to a listener may return a cookie of ours: always in [`SynCookieMode::Always`], else while
    /// a cookie sent lately could still be valid. Outside those times a stray ACK costs no hash.
    fn cookies_in_use(&self, now: Instant) -> bool {
        let valid_for = core::time::Duration::from_secs(tcp::syncookie::PERIOD_SECS * u64::from(MAX_COOKIE_PERIODS));
        self.cfg.syn_cookies == SynCookieMode::Always || self.cookie_sent_at.is_some_and(|t| now < t + valid_for)
    }

    /// The connection an ACK returning a valid SYN cookie stands for: ESTABLISHED at once, accepted like one from
    /// the backlog.
    fn accept_cookie(
        &mut self,
        now: Instant,
        tuple: FourTuple,
        src_mac: EthernetAddress,
        seg: &TcpRepr<'_>,
        opts: tcp::CookieOptions,
        tx: &mut dyn Transmit,
    ) {
        if self.table.len() >= self.cfg.max_connections {
            self.counters.table_full += 1;
            return self.counters.drop(Drop::TableFull);
        }
        self.counters.syn_cookies_valid += 1;
        let tcp = self.listener_config(seg.dst_port);
        // The new connection holds nothing, so data in the ACK would grow a buffer: held to the limit as on an
        // established connection, it is dropped (the peer sends it again) while the handshake completes.
        let bare;
        let seg = if self.memory_full(seg) {
            self.counters.drop(Drop::MemoryFull);
            bare = without_data(seg);
            &bare
        } else {
            seg
        };
        let conn = Connection::from_cookie(tcp, tuple.local(), tuple.remote, seg, opts, &self.isn, now);
        let mac = self.reply_mac(*tuple.remote.ip(), src_mac);
        let id = self.insert(conn, Some(mac));
        self.after_activity(id.index, tx);
    }

    /// After a connection took input or a timer: send what it owes, move its timers, pass its events on, and
    /// free it once closed.
    /// After a segment for an existing connection. Inside [`Stack::receive`] what it owes waits on the dirty
    /// list for [`Stack::flush`], after the application's turn; its events go to the application now. A
    /// connection that is over sends at once: the engine lets it go when its `Closed` event is taken.
    fn after_segment(&mut self, index: u32, tx: &mut dyn Transmit) {
        let over = self.slots[index as usize].live().is_none_or(|e| e.conn.closed_event_pending());
        if !self.in_receive || over {
            return self.after_activity(index, tx);
        }
        self.sync_timers(index);
        self.account_buffers(index);
        self.drain_events(index);
        self.mark_dirty(index);
    }

    fn after_activity(&mut self, index: u32, tx: &mut dyn Transmit) {
        let Some(e) = self.slots[index as usize].live_mut() else { return };
        let FourTuple { local_ip, remote, .. } = e.tuple();
        let mac = self.cfg.mac;
        if e.peer_mac.is_none() {
            e.peer_mac = self.neighbors.get(remote.ip()).copied();
        }
        let dst_mac = e.peer_mac;
        let counters = &mut self.counters;
        let now = self.now;
        let mut unresolved = false;
        e.conn.poll_transmit(now, &mut |seg| match dst_mac {
            Some(dst) => {
                if emit_tcp_frame(tx, now, mac, dst, local_ip, *remote.ip(), seg) {
                    counters.tx_frames += 1;
                    counters.tcp_out += 1;
                    true
                } else {
                    counters.drop(Drop::TxFull);
                    false
                }
            }
            None => {
                // No MAC for the peer: the segment is lost like on a wire; the retransmission timer tries again.
                counters.drop(Drop::NoNeighbor);
                unresolved = true;
                true
            }
        });
        if unresolved && self.cfg.arp {
            self.request_arp(now, local_ip, *remote.ip(), tx);
        }
        let Some(e) = self.slots[index as usize].live_mut() else { return };
        if e.conn.state() == State::TimeWait && !e.time_wait {
            if self.time_wait < self.cfg.max_time_wait {
                e.time_wait = true;
                self.time_wait += 1;
            } else {
                // Past the limit the last ACK has gone out; the 4-tuple is free at once (RFC 6191 reopening
                // aside, what TIME_WAIT guards against is a stale duplicate segment, rare next to running out).
                self.counters.time_wait_limited += 1;
                e.conn.skip_time_wait();
            }
        }
        self.sync_timers(index);
        self.account_buffers(index);
        self.drain_events(index);
    }

    /// Brings the stack's buffer total up to date with the connection's.
    fn account_buffers(&mut self, index: u32) {
        let Some(e) = self.slots[index as usize].live_mut() else { return };
        let now = e.conn.buffer_bytes();
        self.buffer_bytes = self.buffer_bytes - e.buffer_bytes as usize + now;
        e.buffer_bytes = u32::try_from(now).expect("two buffers of at most MAX_BUFFER_BYTES");
    }

    /// Asks for `ip`'s MAC from `local_ip`, the address of the connection that needs it.
    fn request_arp(&mut self, now: Instant, local_ip: Ipv4Addr, ip: Ipv4Addr, tx: &mut dyn Transmit) {
        let req = ArpRepr::EthernetIpv4 {
            operation: ArpOperation::Request,
            source_hardware_addr: self.cfg.mac,
            source_protocol_addr: local_ip,
            target_hardware_addr: EthernetAddress([0; 6]),
            target_protocol_addr: ip,
        };
        self.emit_arp(now, EthernetAddress::BROADCAST, &req, tx);
    }

    /// Keeps one wheel entry per connection, for its earliest deadline. A deadline that moved later keeps the old
    /// entry, which re-arms when it fires (most restarts of the retransmission timer cost nothing); one that moved
    /// earlier is rescheduled.
    fn sync_timers(&mut self, index: u32) {
        let Some(e) = self.slots[index as usize].live_mut() else { return };
        e.active_ms = self.now.total_millis() as u32;
        let want = e.conn.poll_at().map(|t| t.total_micros().div_ceil(1000));
        match (want, e.timer) {
            (None, None) => {}
            (None, Some((handle, _))) => {
                self.wheel.cancel(handle);
                e.timer = None;
            }
            (Some(ms), None) => match self.wheel.schedule(ms, index) {
                Ok(handle) => e.timer = Some((handle, ms)),
                Err(_) => self.counters.timer_wheel_full += 1,
            },
            (Some(ms), Some((handle, at))) if ms < at => {
                if self.wheel.reschedule(handle, ms) {
                    e.timer = Some((handle, ms));
                }
            }
            (Some(_), Some(_)) => {}
        }
    }

    fn drain_events(&mut self, index: u32) {
        let generation = self.slots[index as usize].generation;
        let id = ConnId { index, generation };
        let mut closed = None;
        loop {
            let Some(e) = self.slots[index as usize].live_mut() else { return };
            let Some(ev) = e.conn.poll_event() else { break };
            let out = match ev {
                Event::Connected => {
                    if e.half_open {
                        e.half_open = false;
                        if let Some(l) = e.listener().and_then(|p| self.listeners.get_mut(&p)) {
                            l.half_open = l.half_open.saturating_sub(1);
                        }
                    }
                    match e.listener() {
                        Some(port) => StackEvent::Accepted { conn: id, port },
                        None => StackEvent::Connected(id),
                    }
                }
                Event::Readable => StackEvent::Readable(id),
                Event::Writable => StackEvent::Writable(id),
                Event::PeerClosed => StackEvent::PeerClosed(id),
                Event::Closed(reason) => {
                    self.counters.count_close(reason);
                    closed = Some(reason);
                    break;
                }
            };
            self.push_event(out);
        }
        let Some(reason) = closed else { return };
        self.remove_from_table(index);
        let unread = self.slots[index as usize].live().is_some_and(|e| e.conn.recv_queue_len() > 0);
        if reason == CloseReason::Normal && unread {
            if let Some(e) = self.slots[index as usize].live_mut() {
                e.closed_unread = Some(reason);
            }
            return;
        }
        // A connection that never reached the application (reset in SYN_RECEIVED) closes without a word.
        if reason != CloseReason::ReturnedToListen {
            self.push_event(StackEvent::Closed(id, reason));
        }
        self.free_slot(index);
    }

    fn push_event(&mut self, ev: StackEvent) {
        if self.events.len() >= self.cfg.max_events {
            self.events.pop_front();
            self.counters.events_dropped += 1;
        }
        self.events.push_back(ev);
    }

    /// Files `conn` under its 4-tuple (a passive one counted in its listener's backlog while half-open).
    fn insert(&mut self, conn: Connection, peer_mac: Option<EthernetAddress>) -> ConnId {
        let mut entry = Entry {
            conn,
            peer_mac,
            timer: None,
            active_ms: self.now.total_millis() as u32,
            dirty: false,
            half_open: false,
            time_wait: false,
            buffer_bytes: 0,
            closed_unread: None,
        };
        let (tuple, listener) = (entry.tuple(), entry.listener());
        entry.half_open = entry.conn.state() == State::SynReceived && listener.is_some();
        if entry.half_open {
            if let Some(l) = listener.and_then(|p| self.listeners.get_mut(&p)) {
                l.half_open += 1;
            }
        }
        let body = Body::Live(self.boxed(entry));
        let index = match self.free.pop() {
            Some(i) => {
                self.slots[i as usize].body = body;
                i
            }
            None => {
                self.slots.push(Slot { generation: 0, body });
                (self.slots.len() - 1) as u32
            }
        };
        let hash = self.hasher.hash_one(tuple);
        let (slots, hasher) = (&self.slots, self.hasher);
        self.table.insert_unique(hash, index, |&i| slot_tuple(slots, i).map_or(0, |t| hasher.hash_one(t)));
        self.counters.conns_opened += 1;
        ConnId { index, generation: self.slots[index as usize].generation }
    }

    /// Takes a connection out of the 4-tuple table, the timer wheel and its listener's backlog; the slot stays.
    fn remove_from_table(&mut self, index: u32) {
        self.wake(index);
        let Some(e) = self.slots[index as usize].live_mut() else { return };
        if let Some((handle, _)) = e.timer.take() {
            self.wheel.cancel(handle);
        }
        if e.half_open {
            e.half_open = false;
            if let Some(l) = e.listener().and_then(|p| self.listeners.get_mut(&p)) {
                l.half_open = l.half_open.saturating_sub(1);
            }
        }
        if e.time_wait {
            e.time_wait = false;
            self.time_wait -= 1;
        }
        let hash = self.hasher.hash_one(e.tuple());
        if let Ok(found) = self.table.find_entry(hash, |&i| i == index) {
            found.remove();
        }
    }

    /// The slot filed under `tuple`.
    fn lookup(&self, tuple: &FourTuple) -> Option<u32> {
        let slots = &self.slots;
        self.table.find(self.hasher.hash_one(tuple), |&i| slot_tuple(slots, i).as_ref() == Some(tuple)).copied()
    }

    /// Frees the slot; handles to it go stale.
    fn free_slot(&mut self, index: u32) {
        self.remove_from_table(index);
        let slot = &mut self.slots[index as usize];
        let body = core::mem::replace(&mut slot.body, Body::Free);
        body.add_stats_to(&mut self.finished_stats);
        if let Body::Live(e) = body {
            self.buffer_bytes -= e.buffer_bytes as usize;
            slot.generation = slot.generation.wrapping_add(1);
            self.free.push(index);
            // A box whose connection still holds buffers is let go, so that the pool holds no buffer memory.
            if self.entry_pool.len() < ENTRY_POOL_MAX && e.buffer_bytes == 0 {
                self.entry_pool.push(e);
            }
        }
    }

    /// The entry behind a handle, woken if it was compact.
    fn entry_mut(&mut self, id: ConnId) -> Result<&mut Entry, StackError> {
        self.entry_and_pool(id).map(|(e, _)| e)
    }

    /// As [`Stack::entry_mut`], with the buffer pool beside it for the connection's calls.
    fn entry_and_pool(&mut self, id: ConnId) -> Result<(&mut Entry, &mut BufferPool), StackError> {
        match self.slots.get(id.index as usize) {
            Some(s) if s.generation == id.generation => {}
            _ => return Err(StackError::NoConnection),
        }
        self.wake(id.index);
        let e = self.slots[id.index as usize].live_mut().ok_or(StackError::NoConnection)?;
        Ok((e, &mut self.pool))
    }

    /// `entry` in a box, from the pool when one is there.
    fn boxed(&mut self, entry: Entry) -> Box<Entry> {
        match self.entry_pool.pop() {
            Some(mut b) => {
                *b = entry;
                b
            }
            None => Box::new(entry),
        }
    }

    /// Makes a compacted connection live again (anything that touches it calls this first); does nothing to any
    /// other slot.
    fn wake(&mut self, index: u32) {
        let slot = &mut self.slots[index as usize];
        if !matches!(slot.body, Body::Idle(_)) {
            return;
        }
        let Body::Idle(idle) = core::mem::replace(&mut slot.body, Body::Free) else { return };
        let IdleEntry { conn, peer_mac, timer, time_wait } = *idle;
        let conn = Connection::from_compact(conn);
        let filed_ms = conn.poll_at().map_or(0, |t| t.total_micros().div_ceil(1000));
        let entry = Entry {
            conn,
            peer_mac,
            timer: timer.map(|handle| (handle, filed_ms)),
            active_ms: self.now.total_millis() as u32,
            dirty: false,
            half_open: false,
            time_wait,
            buffer_bytes: 0,
            closed_unread: None,
        };
        self.slots[index as usize].body = Body::Live(self.boxed(entry));
        self.idle -= 1;
        self.counters.conns_woken += 1;
    }

    /// Compacts the connections among the next slots that have been quiescent for
    /// [`StackConfig::compact_after`]: one look per slot, no allocation but the compact record's (and, for a
    /// connection that made rare counters or CUBIC's curve, the small box that holds the two together). Paced by
    /// the clock, not by the turn: every slot is looked at once per [`SWEEP_PERIOD_US`], in slices of at most
    /// [`SWEEP_SLOTS_MAX`], so a busy loop with few connections does not spend its turns looking at them again.
    fn sweep(&mut self, now: Instant) {
        let Some(after) = self.cfg.compact_after else { return };
        let len = self.slots.len();
        let n = self.sweep_pace.slots(now, len);
        if n == 0 {
            return;
        }
        let after_ms = u32::try_from(after.as_millis()).unwrap_or(u32::MAX);
        let now_ms = now.total_millis() as u32;
        for _ in 0..n {
            if self.sweep_cursor >= len {
                self.sweep_cursor = 0;
            }
            let index = self.sweep_cursor;
            self.sweep_cursor += 1;
            let Body::Live(e) = &mut self.slots[index].body else { continue };
            let at_rest = !e.dirty && !e.half_open && e.closed_unread.is_none() && e.buffer_bytes == 0;
            if !at_rest || now_ms.wrapping_sub(e.active_ms) < after_ms {
                continue;
            }
            if !e.conn.compactable() {
                continue;
            }
            // A lazy wheel entry filed before the deadline moved later would wake the record for nothing: it is
            // filed at the deadline itself (which is how waking knows when it was filed).
            let want = e.conn.poll_at().map(|t| t.total_micros().div_ceil(1000));
            let timer = match (want, e.timer) {
                (None, None) => None,
                (Some(ms), Some((handle, at))) if ms == at || self.wheel.reschedule(handle, ms) => Some(handle),
                // A timer the wheel had no room for: the connection stays as it is.
                _ => continue,
            };
            e.timer = timer.zip(want);
            let Some(conn) = e.conn.take_compact() else { continue };
            let idle = Box::new(IdleEntry { conn, peer_mac: e.peer_mac, timer, time_wait: e.time_wait });
            if let Body::Live(husk) = core::mem::replace(&mut self.slots[index].body, Body::Idle(idle)) {
                if self.entry_pool.len() < ENTRY_POOL_MAX {
                    self.entry_pool.push(husk);
                }
            }
            self.idle += 1;
            self.counters.conns_compacted += 1;
        }
    }

    fn mark_dirty(&mut self, index: u32) {
        if let Some(e) = self.slots.get_mut(index as usize).and_then(|s| s.live_mut()) {
            if !e.dirty {
                e.dirty = true;
                self.dirty.push(index);
            }
        }
    }

    /// Where to send to `ip`, having received from `frame_mac`: a known neighbour entry (static, or a next hop given
    /// on the command line) wins; otherwise the frame's sender (the kernel keeps ARP on the AF_XDP path, and the
    /// frame is how a passive open learns the peer's MAC). Looked up once per connection, not per frame. (The
    /// Ethernet header is covered by the wire's FCS, not by any checksum of ours: trusting a configured entry over
    /// the frame also keeps a header corrupted in a simulation from steering a connection astray.)
    fn reply_mac(&self, ip: Ipv4Addr, frame_mac: EthernetAddress) -> EthernetAddress {
        self.cfg.next_hop_mac.or_else(|| self.neighbors.get(&ip).copied()).unwrap_or(frame_mac)
    }

    fn emit_tcp(
        &mut self,
        now: Instant,
        local_ip: Ipv4Addr,
        remote: SocketAddrV4,
        dst: EthernetAddress,
        seg: &TcpRepr<'_>,
        tx: &mut dyn Transmit,
    ) {
        if emit_tcp_frame(tx, now, self.cfg.mac, dst, local_ip, *remote.ip(), seg) {
            self.counters.tx_frames += 1;
            self.counters.tcp_out += 1;
        } else {
            self.counters.drop(Drop::TxFull);
        }
    }
}

/// The compaction sweep looks at every slot once in this many microseconds, so a connection is compacted at most
/// this long after [`StackConfig::compact_after`] has passed.
const SWEEP_PERIOD_US: u64 = 25_000;
/// The most slots the sweep looks at in one [`Stack::receive`] (a million connections in turns of 2 µs take about
/// 80 a turn).
const SWEEP_SLOTS_MAX: usize = 256;

/// How many slots the compaction sweep owes: slot-microseconds accrue at the table's length per microsecond, and
/// each [`SWEEP_PERIOD_US`] of them is one slot to look at. A turn of 2 µs over 4,500 slots owes about a third of
/// one, where a fixed count per turn had the loop look at each slot every 70 turns.
#[derive(Debug, Default, Clone, Copy)]
struct SweepPace {
    at: Instant,
    credit: u64,
}

impl SweepPace {
    /// The slots to look at now, among `len`: at most [`SWEEP_SLOTS_MAX`] and `len` (a loop back from a long
    /// sleep does not owe more).
    fn slots(&mut self, now: Instant, len: usize) -> usize {
        let elapsed = now.total_micros().saturating_sub(self.at.total_micros());
        self.at = self.at.max(now);
        let cap = SWEEP_SLOTS_MAX.min(len) as u64 * SWEEP_PERIOD_US;
        self.credit = self.credit.saturating_add((len as u64).saturating_mul(elapsed)).min(cap);
        let n = self.credit / SWEEP_PERIOD_US;
        self.credit -= n * SWEEP_PERIOD_US;
        n as usize
    }
}

/// Boxes of finished entries kept for new connections.
const ENTRY_POOL_MAX: usize = 1024;
/// Bytes of emptied buffer blocks (512 B to 4 KiB) kept for connections that queue a small message: enough for the
/// blocks hundreds of connections exchanging small messages give back and take again within one turn.
const BUFFER_POOL_BYTES: usize = 1 << 20;

/// A connection to look at, from [`Stack::connection`] or [`Stack::connections`]: derefs to the [`Connection`]
/// (borrowed when live, rebuilt from its compact record when compacted, which this does not wake).
#[derive(Debug)]
pub enum ConnRef<'a> {
    /// A live connection.
    Live(&'a Connection),
    /// A compacted connection, rebuilt.
    Rebuilt(Box<Connection>),
}

impl<'a> ConnRef<'a> {
    fn of(slot: &'a Slot) -> Option<ConnRef<'a>> {
        match &slot.body {
            Body::Free => None,
            Body::Live(e) => Some(ConnRef::Live(&e.conn)),
            Body::Idle(i) => Some(ConnRef::Rebuilt(Box::new(Connection::from_compact(i.conn.clone())))),
        }
    }
}

impl core::ops::Deref for ConnRef<'_> {
    type Target = Connection;
    fn deref(&self) -> &Connection {
        match self {
            ConnRef::Live(c) => c,
            ConnRef::Rebuilt(c) => c,
        }
    }
}

/// Mixed into the seed for the SYN cookie key's generator.
const COOKIE_SEED_SALT: u64 = 0x5359_4e43_4f4f_4b49;
/// Periods a cookie stays valid, one more than its checked age to cover the period it was made in.
const MAX_COOKIE_PERIODS: u32 = tcp::syncookie::MAX_AGE_PERIODS + 1;

const ETHERNET_HEADER_LEN: usize = 14;
const IPV4_HEADER_LEN: usize = 20;

/// Writes Ethernet, IPv4 and TCP headers and the payload straight into the device's frame.
fn emit_tcp_frame(
    tx: &mut dyn Transmit,
    now: Instant,
    src_mac: EthernetAddress,
    dst_mac: EthernetAddress,
    src: Ipv4Addr,
    dst: Ipv4Addr,
    seg: &TcpRepr<'_>,
) -> bool {
    let tcp_len = seg.buffer_len();
    let ip = Ipv4Repr {
        src_addr: src,
        dst_addr: dst,
        protocol: IpProtocol::Tcp,
        payload_len: tcp_len,
        hop_limit: 64,
        dscp_ecn: 0,
        ident: 0,
        dont_frag: true,
    };
    let eth = EthernetRepr { src_addr: src_mac, dst_addr: dst_mac, ethertype: EtherType::Ipv4 };
    let len = ETHERNET_HEADER_LEN + IPV4_HEADER_LEN + tcp_len;
    tx.transmit(now, len, &mut |buf| {
        let mut frame = EthernetFrame::new_unchecked(&mut *buf);
        eth.emit(&mut frame);
        let mut packet = Ipv4Packet::new_unchecked(frame.payload_mut());
        ip.emit(&mut packet);
        seg.emit(&mut TcpPacket::new_unchecked(packet.payload_mut()), src, dst);
    })
}

/// `seg` as if its data, and the FIN that follows the data, had been lost: what is taken of a segment whose data
/// finds no memory. Its ACK, window and options still count (the ACK frees memory).
fn without_data<'a>(seg: &TcpRepr<'a>) -> TcpRepr<'a> {
    let mut bare = *seg;
    bare.payload = &[];
    bare.flags = TcpFlags(bare.flags.0 & !TcpFlags::FIN.0);
    bare
}

/// Whether `seg` ends the TIME_WAIT connection `conn` for a new incarnation: RFC 6191 says it may
/// ([`Connection::accepts_reopen`]) and one of `listeners` is on its port to take it. Linux reopens only then
/// (`tcp_v4_rcv`, `TCP_TW_SYN`); with no listener the SYN stays with TIME_WAIT, which answers it with an ACK,
/// instead of ending the connection only to find nobody to hand the SYN to and answer RST. (Asked only in
/// TIME_WAIT: no listener look-up per segment.)
fn reopens(conn: &Connection, seg: &TcpRepr<'_>, listeners: &HashMap<u16, Listener>) -> bool {
    conn.accepts_reopen(seg) && listeners.contains_key(&seg.dst_port)
}

/// An IPv4 header whose checksum is not to be verified (a peer that leaves it to offload).
fn parse_unverified<T: AsRef<[u8]> + ?Sized>(ip: &Ipv4Packet<&T>) -> Option<Ipv4Repr> {
    if ip.more_frags() || ip.frag_offset() != 0 {
        return None;
    }
    Some(Ipv4Repr {
        src_addr: ip.src_addr(),
        dst_addr: ip.dst_addr(),
        protocol: ip.protocol(),
        payload_len: ip.payload().len(),
        hop_limit: ip.hop_limit(),
        dscp_ecn: ip.dscp_ecn(),
        ident: ip.ident(),
        dont_frag: ip.dont_frag(),
    })
}

fn state_index(s: State) -> usize {
    State::ALL.iter().position(|&x| x == s).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Slots a pace owes over `turns` turns of `turn_us` each, starting at `start`.
    fn swept(pace: &mut SweepPace, start: Instant, len: usize, turn_us: u64, turns: u64) -> usize {
        (1..=turns).map(|t| pace.slots(start + Duration::from_micros(t * turn_us), len)).sum()
    }

    #[test]
    fn the_sweep_looks_at_every_slot_once_a_period_however_fast_the_loop_turns() {
        let start = Instant::from_secs(10);
        for (len, turn_us) in [(4_500, 2), (4_500, 50), (1_000_000, 2), (1, 1)] {
            let mut pace = SweepPace { at: start, credit: 0 };
            let turns = SWEEP_PERIOD_US / turn_us;
            let n = swept(&mut pace, start, len, turn_us, turns);
            assert!(n.abs_diff(len) <= 1, "{len} slots, {turn_us} µs turns: {n} looked at in a period");
        }
        // A fast loop over a small table looks at a slot only every few turns.
        let mut pace = SweepPace { at: start, credit: 0 };
        let busy = (1..=100).filter(|&t| pace.slots(start + Duration::from_micros(2 * t), 4_500) > 0).count();
        assert!((30..=42).contains(&busy), "{busy} of 100 turns swept");
    }

    #[test]
    fn a_loop_back_from_a_long_sleep_sweeps_at_most_a_slice() {
        let mut pace = SweepPace::default();
        assert_eq!(pace.slots(Instant::from_secs(3_600), 1_000_000), SWEEP_SLOTS_MAX);
        assert_eq!(pace.slots(Instant::from_secs(3_600), 1_000_000), 0, "nothing more owed in the same microsecond");
        assert_eq!(pace.slots(Instant::from_secs(7_200), 10), 10, "never more than the table");
        assert_eq!(pace.slots(Instant::from_secs(7_200), 0), 0);
        // A clock read that went backwards owes nothing, and the pace does not go back with it.
        assert_eq!(pace.slots(Instant::from_secs(7_000), 1_000_000), 0);
        assert_eq!(pace.slots(Instant::from_secs(7_200) + Duration::from_micros(1), 1_000_000), 40);
    }

    /// A table slot is a generation and a pointer to what it holds: a live entry (the connection, whose own budget
    /// `tcp::tests` states, and the engine's bookkeeping: one wheel handle and the deadline it was filed at, the
    /// neighbour's MAC, the last activity, a few flags and the buffer count) or a compacted one. The 4-tuple and
    /// listener port are read from the connection, not kept twice. A change that grows one past its bound should
    /// find the room elsewhere rather than raise it.
    #[test]
    fn a_table_slot_fits_its_memory_budget() {
        let size = core::mem::size_of::<Slot>();
        assert!(size <= 24, "size_of::<Slot>() is {size} bytes, over its budget of 24");
        let own = core::mem::size_of::<Entry>() - core::mem::size_of::<Connection>();
        assert!(own <= 40, "the engine's own bookkeeping per connection is {own} bytes, over its budget of 40");
    }

    /// What an idle connection costs once compacted: its slot, the boxed compact record with the engine's few
    /// fields beside it, and its bucket in the 4-tuple table (the slot index and hashbrown's control byte; the
    /// load factor and the allocator's rounding come on top). 184 bytes is the most glibc's malloc serves from a
    /// 192-byte block (8 bytes of header, 16-byte steps): 8 more would take a 208-byte one.
    #[test]
    fn a_compacted_connection_fits_its_memory_budget() {
        let idle = core::mem::size_of::<IdleEntry>();
        assert!(idle <= 184, "size_of::<IdleEntry>() is {idle} bytes, over its budget of 184");
        let total = core::mem::size_of::<Slot>() + idle + core::mem::size_of::<u32>() + 1;
        assert!(total <= 213, "an idle connection takes {total} bytes, over its budget of 213");
    }

    /// The 4-tuple table holds slot indices only: with room for 2^20 connections it takes about 10 bytes for each
    /// (a 4-byte bucket and a control byte, at most 8/7 of the buckets in use), where keeping the tuples took 34.
    #[test]
    fn the_connection_table_keeps_indices_not_tuples() {
        let max = 1 << 20;
        let mut cfg = StackConfig::new(EthernetAddress([2, 0, 0, 0, 0, 1]), Ipv4Addr::new(10, 0, 0, 1), 1);
        cfg.max_connections = max;
        let stack = Stack::new(cfg, Instant::ZERO);
        let per = stack.table.allocation_size() / max;
        assert!(per <= 12, "the table takes {per} bytes per connection it has room for");
    }
}
