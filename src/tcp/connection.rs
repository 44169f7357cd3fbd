//! One transmission control block and its state machine (RFC 9293 §3.10).
//!
//! Field names follow the RFC (`snd_una`, `snd_nxt`, `rcv_nxt`, `snd_wl1`...). Input handling is split as the RFC
//! splits it: [`Connection::process`] dispatches to the SYN-SENT rules (§3.10.7.3) or to the rules of the other
//! states (§3.10.7.4), whose comments number the RFC's checks. Output is state-driven: processing sets what is
//! owed (an ACK, a SYN, data, a probe) and [`Connection::poll_transmit`] turns that into segments.

use core::time::Duration;
use std::net::SocketAddrV4;
use std::sync::Arc;

use super::buffer::{BufferPool, RecvBuffer, SendBuffer};
use super::congestion::{AckAction, Congestion, DUPACK_THRESHOLD};
use super::isn::IsnGenerator;
use super::rtt::RttEstimator;
use super::sack::{Scoreboard, MAX_REORDERING_SEGMENTS};
use super::{CloseReason, Config, Event, State, TimerKind};
use crate::time::Instant;
use crate::wire::{SeqNumber, TcpFlags, TcpOptions, TcpRepr};

mod compact;
pub use compact::Compact;

/// RFC 8985 §7.2's WCDelAckT: how long a peer may hold the ACK of a lone segment.
const WORST_CASE_DELAYED_ACK: Duration = Duration::from_millis(200);
/// The MSS assumed when the peer's SYN carries none (RFC 9293 §3.7.1).
const DEFAULT_PEER_MSS: usize = 536;
/// The smallest MSS a peer may ask for, as Linux's `tcp_min_snd_mss`: a tiny one would have us cut the send
/// buffer into a segment per few bytes, each costing a frame and an entry of state (CVE-2019-11479).
pub const MIN_PEER_MSS: usize = 48;
/// Bytes the timestamp option takes in every segment once negotiated (NOP, NOP, kind 8).
const TIMESTAMP_OPTION_LEN: usize = 12;
/// RFC 7323 §2.3: the shift count is at most 14.
const MAX_WINDOW_SCALE: u8 = 14;
/// How far (in the peer's timestamp ticks) a segment's TSval may lag TS.Recent before PAWS calls it old.
const PAWS_WINDOW_TICKS: i32 = 1;
/// The most duplicate ACKs owed between two calls of `poll_transmit` (one per out-of-order segment).
const MAX_DUP_ACKS_OWED: u8 = 64;
/// RFC 7323 §5.5: TS.Recent not updated for 24 days is invalid (Linux's TCP_PAWS_24DAYS). A peer's clock ticking
/// once a millisecond moves 2^31 ticks in 24.8 days, past which every segment of a connection idle that long would
/// look old to PAWS and be dropped.
const PAWS_IDLE_SECS: u32 = 24 * 24 * 60 * 60;

/// The mark of a timer that does not run.
const NO_DEADLINE: Instant = Instant::MAX;
/// The latest deadline a timer can have.
const LAST_DEADLINE: Instant = Instant::from_micros(u64::MAX - 1);

const EV_CONNECTED: u8 = 1;
const EV_READABLE: u8 = 2;
const EV_WRITABLE: u8 = 4;
const EV_PEER_CLOSED: u8 = 8;
const EV_CLOSED: u8 = 16;

/// `n` in a `u32` field: windows, MSS and byte counts that fit one (a window is at most 1 GiB, RFC 7323 §2.3), or
/// `u32::MAX`.
fn narrow(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// `d`, or the timer wheel's tick (1 ms) if shorter: a timer that re-arms itself when it fires (keep-alive) must not
/// come due again in the same tick, or one pass over the due timers would never end.
fn at_least_a_tick(d: Duration) -> Duration {
    d.max(Duration::from_millis(1))
}

/// `now` in whole seconds, wrapping every 136 years: enough to tell a 24-day idle (as Linux's ts_recent_stamp).
fn whole_secs(now: Instant) -> u32 {
    (now.total_micros() / 1_000_000) as u32
}

/// The window scale we offer with `cfg`: the least shift that lets the receive buffer be advertised.
pub(crate) fn window_scale_for(cfg: &Config) -> u8 {
    let mut shift = 0;
    while shift < MAX_WINDOW_SCALE && (cfg.recv_buffer_bytes >> shift) > 65535 {
        shift += 1;
    }
    shift
}

/// The window a SYN-ACK offers with `cfg` (never scaled, RFC 7323 §2.2): the empty receive buffer.
pub(crate) fn syn_ack_window(cfg: &Config) -> u16 {
    cfg.recv_buffer_bytes.clamp(1, 65535) as u16
}

/// What one connection counted over its life.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionStats {
    /// Segments handed to `process`.
    pub segs_in: u64,
    /// Segments produced by `poll_transmit`.
    pub segs_out: u64,
    /// Payload bytes accepted in order.
    pub bytes_in: u64,
    /// Payload bytes sent, retransmissions included.
    pub bytes_out: u64,
    /// Segments sent again (timeouts, fast retransmit, SYN and SYN-ACK resends).
    pub retransmits: u64,
    /// Retransmission timer expiries.
    pub rto_timeouts: u64,
    /// Fast retransmits (third duplicate ACK, or a partial ACK in recovery).
    pub fast_retransmits: u64,
    /// Duplicate ACKs received.
    pub dup_acks: u64,
    /// Segments that arrived out of order.
    pub ooo_segments: u64,
    /// Out-of-order segments dropped because the reassembly limit was reached.
    pub ooo_dropped: u64,
    /// Segments dropped by PAWS (RFC 7323 §5).
    pub paws_drops: u64,
    /// Segments outside the receive window, answered with an ACK.
    pub out_of_window: u64,
    /// Challenge ACKs sent (RFC 5961).
    pub challenge_acks: u64,
    /// Zero-window probes sent.
    pub window_probes: u64,
    /// Keep-alive probes sent.
    pub keepalive_probes: u64,
    /// Challenge or invalid-segment ACKs not sent because of the rate limit.
    pub acks_rate_limited: u64,
    /// SACK-based loss recoveries started (RFC 6675).
    pub sack_recoveries: u64,
    /// Retransmissions found lost again from SACK information and sent once more.
    pub lost_retransmissions: u64,
    /// Payload bytes not resent because the peer had SACKed them.
    pub sacked_bytes_skipped: u64,
    /// Tail loss probes sent (RFC 8985 §7).
    pub tail_loss_probes: u64,
    /// Probe timeouts in a SACK recovery after which unanswered retransmissions were sent again.
    pub recovery_probes: u64,
    /// D-SACK blocks received for data below SND.UNA: needless retransmissions (or network duplicates).
    pub dsacks_received: u64,
    /// SACK blocks ignored because they lay outside SND.UNA..SND.MAX or were malformed.
    pub sack_blocks_ignored: u64,
    /// SACKed ranges dropped because the scoreboard was full.
    pub sack_ranges_evicted: u64,
}

impl ConnectionStats {
    /// How many counters [`ConnectionStats::named`] lists.
    pub const NAMED_LEN: usize = 24;

    /// Every counter with its name, in declaration order: the rows of `xtcp stat`'s TCP table.
    pub fn named(&self) -> [(&'static str, u64); Self::NAMED_LEN] {
        [
            ("segs_in", self.segs_in),
            ("segs_out", self.segs_out),
            ("bytes_in", self.bytes_in),
            ("bytes_out", self.bytes_out),
            ("retransmits", self.retransmits),
            ("rto_timeouts", self.rto_timeouts),
            ("fast_retransmits", self.fast_retransmits),
            ("dup_acks", self.dup_acks),
            ("ooo_segments", self.ooo_segments),
            ("ooo_dropped", self.ooo_dropped),
            ("paws_drops", self.paws_drops),
            ("out_of_window", self.out_of_window),
            ("challenge_acks", self.challenge_acks),
            ("window_probes", self.window_probes),
            ("keepalive_probes", self.keepalive_probes),
            ("acks_rate_limited", self.acks_rate_limited),
            ("sack_recoveries", self.sack_recoveries),
            ("lost_retransmissions", self.lost_retransmissions),
            ("sacked_bytes_skipped", self.sacked_bytes_skipped),
            ("tail_loss_probes", self.tail_loss_probes),
            ("recovery_probes", self.recovery_probes),
            ("dsacks_received", self.dsacks_received),
            ("sack_blocks_ignored", self.sack_blocks_ignored),
            ("sack_ranges_evicted", self.sack_ranges_evicted),
        ]
    }

    /// Adds each of this connection's counters to `totals` (indexed like [`ConnectionStats::named`]).
    pub fn add_to(&self, totals: &mut [u64; Self::NAMED_LEN]) {
        for (t, (_, v)) in totals.iter_mut().zip(self.named()) {
            *t = t.saturating_add(v);
        }
    }
}

/// The counters every connection moves on every segment, kept inline.
#[derive(Debug, Default, Clone, Copy)]
struct Traffic {
    segs_in: u64,
    segs_out: u64,
    bytes_in: u64,
    bytes_out: u64,
}

impl Traffic {
    /// The whole [`ConnectionStats`]: these counts and, where there are any, the rare ones.
    fn with(self, rare: Option<&Rare>) -> ConnectionStats {
        let Traffic { segs_in, segs_out, bytes_in, bytes_out } = self;
        let rare = rare.map_or_else(ConnectionStats::default, |r| r.stats);
        ConnectionStats { segs_in, segs_out, bytes_in, bytes_out, ..rare }
    }
}

/// What only a connection that met loss, reordering, a closed window or a misbehaving peer needs: allocated by the
/// first such event (the first retransmission, duplicate ACK, out-of-order segment, challenge ACK, window of zero...)
/// and kept, as its counters are.
#[derive(Debug, Default, Clone)]
struct Rare {
    /// The rare counters ([`ConnectionStats`] less the segment and byte counts, which live in [`Traffic`]).
    stats: ConnectionStats,
    /// When the last rate-limited ACK (challenge, or for an invalid bare segment) went out.
    last_invalid_ack: Option<Instant>,
    /// Zero-window probes sent since the last acceptable ACK (Linux's icsk_probes_out): apart from the persist
    /// timer's backoff, which only an open window or new data acknowledged ends.
    probes_unanswered: u32,
    /// When an acceptable ACK last came while the peer's window was closed (and left it closed): while SND.WND is 0
    /// this is when the peer was last heard from.
    closed_window_heard: Option<Instant>,
}

/// Something owed to the peer that is not data: a probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Probe {
    /// One byte past the closed window (RFC 9293 §3.8.6.1).
    Window,
    /// `SEG.SEQ = SND.NXT - 1` with no data (RFC 1122 §4.2.3.6).
    Keepalive,
}

/// One TCP connection: the transmission control block of RFC 9293 §3.3.1 and its state machine.
///
/// # Memory
///
/// A table of connections holds many idle ones, so the struct keeps inline only what every connection needs (the
/// TCB's variables, the RTO estimator, the congestion window, the timer deadlines, the buffers' handles and the
/// segment and byte counts), in the narrowest type that holds it, and shares its settings through an `Arc`; the
/// test `an_idle_connection_fits_its_memory_budget` bounds `size_of::<Connection>()`. The buffers allocate only
/// while they hold data. What only loss, reordering or a misbehaving peer needs is boxed when first needed: the
/// SACK scoreboard and the reassembly ranges are freed once they hold nothing again (one allocation per episode,
/// never per segment); the rare counters and CUBIC's curve stay once made. In-order traffic allocates none of them.
/// An owner holding many idle connections keeps a quiescent one as a [`Compact`] record, half the size
/// ([`Connection::take_compact`], [`Connection::from_compact`]).
#[derive(Debug)]
pub struct Connection {
    /// Shared with the listener or stack that made the connection; a per-connection change (keep-alive) copies it.
    cfg: Arc<Config>,
    /// Nagle's algorithm is off (TCP_NODELAY): set per connection, so not in the shared `cfg`.
    nodelay: bool,
    state: State,
    local: SocketAddrV4,
    remote: SocketAddrV4,
    /// Opened by a listener (SYN_RECEIVED returns to LISTEN on RST) rather than by `connect`.
    passive: bool,

    // Send sequence variables.
    iss: SeqNumber,
    snd_una: SeqNumber,
    snd_nxt: SeqNumber,
    /// The highest sequence number sent, plus one. `snd_nxt` goes back to `snd_una` after a timeout.
    snd_max: SeqNumber,
    /// The end of the last segment sent shorter than the MSS (Minshall's Nagle: another short one waits only while
    /// this one is unacknowledged).
    snd_sml: SeqNumber,
    snd_wnd: u32,
    snd_wl1: SeqNumber,
    snd_wl2: SeqNumber,
    snd_wscale: u8,
    /// Both SYNs carried the window scale option (RFC 7323 §2.2); otherwise neither side scales.
    window_scale_agreed: bool,
    max_snd_wnd: u32,
    /// Payload bytes per segment we send: the peer's MSS less the options we put in every segment.
    smss: u32,
    syn_acked: bool,

    // Receive sequence variables.
    irs: SeqNumber,
    rcv_nxt: SeqNumber,
    /// Right edge of the window last advertised: RCV.NXT + RCV.WND as the peer knows it.
    rcv_adv: SeqNumber,
    rcv_wscale: u8,
    /// Largest payload seen in one segment; "full-sized" for the delayed-ACK rule.
    rcv_mss: u32,

    // Selective acknowledgments (RFC 2018, RFC 6675).
    /// Both SYNs carried SACK-permitted.
    sack_enabled: bool,
    /// What the peer's SACK blocks said it holds above SND.UNA, and what this recovery resent: allocated when the
    /// peer first SACKs data in flight (or a recovery resends without SACK information), freed once it holds
    /// nothing again. Absent, it reads as [`Scoreboard::EMPTY`].
    scoreboard: Option<Box<Scoreboard>>,
    /// The reordering threshold the scoreboard learned from D-SACKs, kept here while none is allocated.
    reordering: u8,
    /// A duplicate segment to report as the first block of the next ACK (D-SACK, RFC 2883).
    dsack: Option<(SeqNumber, SeqNumber)>,
    /// The retransmission timer runs as a tail loss probe timeout (RFC 8985 §7.2), not as the RTO.
    tlp_armed: bool,
    /// A tail loss probe is owed.
    tlp_owed: bool,
    /// A probe went since SND.UNA last advanced: at most one per episode.
    tlp_sent: bool,

    // Timestamps (RFC 7323).
    ts_enabled: bool,
    ts_offset: u32,
    ts_recent: u32,
    /// When TS.Recent was last set, in whole seconds of `now` (wrapping): past [`PAWS_IDLE_SECS`] it is invalid.
    ts_recent_secs: u32,
    /// Our TSval when the retransmission timer last fired: an echo older than this spans a timeout.
    ts_at_rto: Option<u32>,
    last_ack_sent: SeqNumber,

    send_buf: SendBuffer,
    recv_buf: RecvBuffer,
    /// The application closed: a FIN follows the queued data.
    fin_queued: bool,
    fin_acked: bool,
    /// A FIN that arrived before data it follows; processed once RCV.NXT reaches it.
    peer_fin: Option<SeqNumber>,
    peer_fin_received: bool,

    rtt: RttEstimator,
    /// Karn's algorithm without timestamps: the sequence number being timed and when it was sent, [`NO_DEADLINE`]
    /// when nothing is (an `Option<(SeqNumber, Instant)>` would take eight bytes more; see `rtt_timing()`).
    rtt_timed: SeqNumber,
    rtt_sent_at: Instant,
    cc: Congestion,
    /// Consecutive retransmission timeouts without progress (saturating: a limit past 65,535 is never reached).
    retries: u16,
    /// Unanswered keep-alive probes, or zero-window probes since the window closed (the persist timer's backoff;
    /// unanswered ones are counted in [`Rare`]).
    probes: u32,

    /// Deadlines per [`TimerKind`], [`NO_DEADLINE`] where a timer does not run (an `Option<Instant>` would take
    /// twice the room).
    timers: [Instant; 5],
    ack_now: bool,
    /// Out-of-order segments that arrived since the last poll: each is owed its own duplicate ACK (RFC 5681
    /// §4.2), which `ack_now` alone would merge into one.
    dup_acks_owed: u8,
    unacked_bytes: u32,
    send_syn: bool,
    fast_retransmit: bool,
    probe: Option<Probe>,
    /// The persist timer fired while a small window was open: send what fits even if SWS avoidance would wait.
    override_sws: bool,
    /// An RST owed, with this sequence number (and no ACK).
    pending_rst: Option<SeqNumber>,
    /// The application was refused bytes; tell it when room opens.
    send_refused: bool,

    events: u8,
    close_reason: Option<CloseReason>,
    traffic: Traffic,
    rare: Option<Box<Rare>>,
}

/// Why `send` or `close` could not be done.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum UserError {
    /// The connection is closing or closed (RFC 9293 §3.10.2: "connection closing").
    #[error("connection closing")]
    Closing,
}

impl Connection {
    fn new(cfg: Arc<Config>, local: SocketAddrV4, remote: SocketAddrV4, iss: SeqNumber, ts_offset: u32) -> Connection {
        let rtt = RttEstimator::new(cfg.rto_initial, cfg.rto_min, cfg.rto_max);
        let rcv_wscale = window_scale_for(&cfg);
        let ts_len = if cfg.timestamps { TIMESTAMP_OPTION_LEN } else { 0 };
        let smss = (DEFAULT_PEER_MSS - ts_len).max(1);
        Connection {
            nodelay: !cfg.nagle,
            state: State::Closed,
            local,
            remote,
            passive: false,
            iss,
            snd_una: iss,
            snd_nxt: iss,
            snd_max: iss,
            snd_sml: iss,
            snd_wnd: 0,
            snd_wl1: SeqNumber(0),
            snd_wl2: iss,
            snd_wscale: 0,
            window_scale_agreed: false,
            max_snd_wnd: 0,
            smss: narrow(smss),
            syn_acked: false,
            irs: SeqNumber(0),
            rcv_nxt: SeqNumber(0),
            rcv_adv: SeqNumber(0),
            rcv_wscale: if cfg.window_scaling { rcv_wscale } else { 0 },
            rcv_mss: narrow(usize::from(cfg.mss).saturating_sub(ts_len).max(1)),
            sack_enabled: false,
            scoreboard: None,
            reordering: Scoreboard::EMPTY.reordering() as u8,
            dsack: None,
            tlp_armed: false,
            tlp_owed: false,
            tlp_sent: false,
            ts_enabled: false,
            ts_offset,
            ts_recent: 0,
            ts_recent_secs: 0,
            ts_at_rto: None,
            last_ack_sent: SeqNumber(0),
            send_buf: SendBuffer::new(cfg.send_buffer_bytes.max(1)),
            recv_buf: RecvBuffer::new(cfg.recv_buffer_bytes.max(1)),
            fin_queued: false,
            fin_acked: false,
            peer_fin: None,
            peer_fin_received: false,
            rtt,
            rtt_timed: iss,
            rtt_sent_at: NO_DEADLINE,
            cc: Congestion::with_algorithm(cfg.congestion, smss, cfg.initial_window_segments, iss),
            retries: 0,
            probes: 0,
            timers: [NO_DEADLINE; 5],
            ack_now: false,
            dup_acks_owed: 0,
            unacked_bytes: 0,
            send_syn: false,
            fast_retransmit: false,
            probe: None,
            override_sws: false,
            pending_rst: None,
            send_refused: false,
            events: 0,
            close_reason: None,
            traffic: Traffic::default(),
            rare: None,
            cfg,
        }
    }

    /// Active OPEN (RFC 9293 §3.10.1): a connection in SYN_SENT whose SYN goes out on the next
    /// [`Connection::poll_transmit`]. `cfg` is a [`Config`], or an `Arc<Config>` to share with other connections
    /// (as the engine does); so for [`Connection::accept`] and [`Connection::from_cookie`].
    pub fn connect(
        cfg: impl Into<Arc<Config>>,
        local: SocketAddrV4,
        remote: SocketAddrV4,
        isn: &IsnGenerator,
        now: Instant,
    ) -> Connection {
        let iss = isn.isn(local, remote, now);
        let mut c = Connection::new(cfg.into(), local, remote, iss, isn.timestamp_offset(local, remote));
        c.state = State::SynSent;
        c.send_syn = true;
        c
    }

    /// A listener's SYN (RFC 9293 §3.10.7.2, after [`super::listen_input`] said `Accept`): a connection in
    /// SYN_RECEIVED whose SYN-ACK goes out on the next [`Connection::poll_transmit`].
    pub fn accept(
        cfg: impl Into<Arc<Config>>,
        local: SocketAddrV4,
        remote: SocketAddrV4,
        syn: &TcpRepr<'_>,
        isn: &IsnGenerator,
        now: Instant,
    ) -> Connection {
        let iss = isn.isn(local, remote, now);
        let mut c = Connection::new(cfg.into(), local, remote, iss, isn.timestamp_offset(local, remote));
        c.passive = true;
        c.state = State::SynReceived;
        c.irs = syn.seq_number;
        c.rcv_nxt = syn.seq_number + 1;
        c.rcv_adv = c.rcv_nxt;
        c.last_ack_sent = c.rcv_nxt;
        c.negotiate(&syn.options, now);
        // The window in a SYN is never scaled (RFC 7323 §2.2).
        c.set_send_window(syn.seq_number, iss, usize::from(syn.window_len));
        c.send_syn = true;
        c.last_activity(now);
        c
    }

    /// The connection a valid SYN cookie stands for (see [`super::syncookie`]): `ack` completed a handshake whose
    /// SYN-ACK we sent without keeping state, and `opts` is what the cookie says the SYN negotiated. The
    /// connection is ESTABLISHED once `ack` is processed, as if it had waited in SYN_RECEIVED; any data or FIN
    /// `ack` carries is taken too.
    pub fn from_cookie(
        cfg: impl Into<Arc<Config>>,
        local: SocketAddrV4,
        remote: SocketAddrV4,
        ack: &TcpRepr<'_>,
        opts: super::syncookie::CookieOptions,
        isn: &IsnGenerator,
        now: Instant,
    ) -> Connection {
        let iss = ack.ack_number - 1;
        let irs = ack.seq_number - 1;
        let mut c = Connection::new(cfg.into(), local, remote, iss, isn.timestamp_offset(local, remote));
        c.passive = true;
        c.state = State::SynReceived;
        c.irs = irs;
        c.rcv_nxt = irs + 1;
        c.negotiate(
            &TcpOptions {
                mss: Some(opts.mss),
                window_scale: opts.window_scale,
                sack_permitted: opts.sack_permitted,
                timestamp: ack.options.timestamp.filter(|_| opts.timestamps).map(|(val, _)| (val, 0)),
                ..TcpOptions::default()
            },
            now,
        );
        // What the SYN-ACK did: SND.NXT past our SYN, the window it offered.
        c.snd_nxt = iss + 1;
        c.snd_max = c.snd_nxt;
        c.rcv_adv = c.rcv_nxt + usize::from(syn_ack_window(&c.cfg));
        c.last_ack_sent = c.rcv_nxt;
        c.last_activity(now);
        c.process(now, ack);
        c
    }

    // ----- Accessors -----

    /// Bytes of buffer memory this connection holds now (send and receive): none while idle.
    pub fn buffer_bytes(&self) -> usize {
        self.send_buf.allocated() + self.recv_buf.allocated()
    }

    /// Whether the data `seg` carries needs no more buffer memory than this connection holds now (already
    /// received, or filling a gap before out-of-order data): what the owner still takes when memory is short.
    pub fn takes_without_growing(&self, seg: &TcpRepr<'_>) -> bool {
        self.recv_buf.fits_allocated(self.rcv_nxt, seg.seq_number + usize::from(seg.flags.syn()), seg.payload.len())
    }

    /// The current state.
    pub fn state(&self) -> State {
        self.state
    }

    /// Our end.
    pub fn local(&self) -> SocketAddrV4 {
        self.local
    }

    /// The peer's end.
    pub fn remote(&self) -> SocketAddrV4 {
        self.remote
    }

    /// True when a listener opened the connection ([`Connection::accept`], [`Connection::from_cookie`]), false for
    /// [`Connection::connect`].
    pub fn is_passive(&self) -> bool {
        self.passive
    }

    /// The settings this connection was made with, keep-alive as last set ([`Connection::set_keepalive`]; Nagle's
    /// algorithm as set is [`Connection::nodelay`]).
    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// True when Nagle's algorithm is off ([`Connection::set_nodelay`], or `nagle: false` in the settings).
    pub fn nodelay(&self) -> bool {
        self.nodelay
    }

    /// Why the connection closed, once it has.
    pub fn close_reason(&self) -> Option<CloseReason> {
        self.close_reason
    }

    /// Counters.
    pub fn stats(&self) -> ConnectionStats {
        self.traffic.with(self.rare.as_deref())
    }

    /// The initial send sequence number.
    pub fn iss(&self) -> SeqNumber {
        self.iss
    }

    /// The initial receive sequence number (valid once the peer's SYN arrived).
    pub fn irs(&self) -> SeqNumber {
        self.irs
    }

    /// SND.UNA: the oldest unacknowledged sequence number.
    pub fn snd_una(&self) -> SeqNumber {
        self.snd_una
    }

    /// SND.NXT: the next sequence number to send.
    pub fn snd_nxt(&self) -> SeqNumber {
        self.snd_nxt
    }

    /// RCV.NXT: the next sequence number expected.
    pub fn rcv_nxt(&self) -> SeqNumber {
        self.rcv_nxt
    }

    /// SND.WND: the peer's window in bytes, scaled.
    pub fn snd_wnd(&self) -> usize {
        self.snd_wnd as usize
    }

    /// The payload bytes per segment we send (negotiated MSS less per-segment options).
    pub fn send_mss(&self) -> usize {
        self.smss as usize
    }

    /// Window scale shifts in use: (ours, applied to what we advertise; the peer's, applied to what it does).
    pub fn window_scales(&self) -> (u8, u8) {
        (self.rcv_wscale, self.snd_wscale)
    }

    /// True when selective acknowledgments were negotiated (both SYNs carried SACK-permitted).
    pub fn sack_enabled(&self) -> bool {
        self.sack_enabled
    }

    /// The sender's SACK scoreboard (an empty one while nothing is SACKed).
    pub fn scoreboard(&self) -> &Scoreboard {
        self.scoreboard.as_deref().unwrap_or(&Scoreboard::EMPTY)
    }

    /// True while the SACK scoreboard is allocated (see [`Connection::scoreboard`]): only while it holds something.
    pub fn holds_scoreboard(&self) -> bool {
        self.scoreboard.is_some()
    }

    /// True while reassembly state is allocated: only while out-of-order data is held.
    pub fn holds_reassembly_state(&self) -> bool {
        self.recv_buf.holds_reassembly_state()
    }

    /// The reordering threshold in segments: DupThresh, raised by needless retransmissions (see
    /// [`Scoreboard::reordering`]).
    pub fn reordering(&self) -> usize {
        self.scoreboard.as_ref().map_or(usize::from(self.reordering), |sb| sb.reordering())
    }

    /// True when timestamps were negotiated.
    pub fn timestamps_enabled(&self) -> bool {
        self.ts_enabled
    }

    /// The congestion window in bytes.
    pub fn congestion_window(&self) -> usize {
        self.cc.window()
    }

    /// The congestion control state.
    pub fn congestion(&self) -> &Congestion {
        &self.cc
    }

    /// The round-trip estimator.
    pub fn rtt(&self) -> &RttEstimator {
        &self.rtt
    }

    /// The retransmission timeout now, backoff included (the estimator's, within the settings' bounds).
    pub fn rto(&self) -> Duration {
        self.rtt.rto(self.cfg.rto_max)
    }

    /// Bytes queued for sending and not yet acknowledged.
    pub fn send_queue_len(&self) -> usize {
        self.send_buf.len()
    }

    /// Room in the send buffer.
    pub fn send_capacity(&self) -> usize {
        self.send_buf.free()
    }

    /// In-order bytes waiting to be read.
    pub fn recv_queue_len(&self) -> usize {
        self.recv_buf.len()
    }

    /// The out-of-order ranges held for reassembly.
    pub fn out_of_order_ranges(&self) -> &[(SeqNumber, SeqNumber)] {
        self.recv_buf.out_of_order().ranges()
    }

    /// True once the peer's FIN was processed: after the buffered bytes, the stream ends.
    pub fn peer_closed(&self) -> bool {
        self.peer_fin_received
    }

    /// The deadline of one timer, if it runs.
    pub fn timer(&self, kind: TimerKind) -> Option<Instant> {
        Some(self.timers[kind as usize]).filter(|&t| t != NO_DEADLINE)
    }

    /// The earliest timer deadline.
    pub fn poll_at(&self) -> Option<Instant> {
        self.timers.iter().copied().min().filter(|&t| t != NO_DEADLINE)
    }

    /// Whether the connection is over and its `Closed` event waits to be polled: what it still owes (an RST, an
    /// ACK) must go out before its owner lets it go.
    pub fn closed_event_pending(&self) -> bool {
        self.events & EV_CLOSED != 0
    }

    /// Whether a segment is owed right now (an ACK, a SYN, a probe, a reset, or sendable data is not decided here:
    /// [`Connection::poll_transmit`] decides; this is a cheap hint for the engine's dirty list).
    pub fn wants_transmit(&self) -> bool {
        self.ack_now
            || self.dup_acks_owed > 0
            || self.send_syn
            || self.fast_retransmit
            || self.tlp_owed
            || self.probe.is_some()
            || self.pending_rst.is_some()
    }

    // ----- Application calls (RFC 9293 §3.10.2–3.10.5) -----

    /// SEND: queues as much of `data` as fits in the send buffer and returns how much. Allowed before the
    /// connection is established (the data waits) and in CLOSE_WAIT.
    pub fn send(&mut self, data: &[u8]) -> Result<usize, UserError> {
        self.send_pooled(data, &mut BufferPool::none())
    }

    /// [`Connection::send`], a buffer that was empty taking its memory from `pool`.
    pub fn send_pooled(&mut self, data: &[u8], pool: &mut BufferPool) -> Result<usize, UserError> {
        match self.state {
            State::SynSent | State::SynReceived | State::Established | State::CloseWait if !self.fin_queued => {
                let n = self.send_buf.enqueue(data, pool);
                // Refused bytes, or a buffer now full: the application will want to hear when room opens, even if
                // it stops offering bytes while there is none (a `Writable` event follows the next ACK that frees some).
                if n < data.len() || self.send_buf.free() == 0 {
                    self.send_refused = true;
                }
                Ok(n)
            }
            _ => Err(UserError::Closing),
        }
    }

    /// RECEIVE: copies out up to `buf.len()` in-order bytes. Returns 0 when none wait (check
    /// [`Connection::peer_closed`] for end of stream).
    pub fn recv(&mut self, buf: &mut [u8]) -> usize {
        self.recv_pooled(buf, &mut BufferPool::none())
    }

    /// [`Connection::recv`], a buffer that empties giving its memory to `pool`.
    pub fn recv_pooled(&mut self, buf: &mut [u8], pool: &mut BufferPool) -> usize {
        let n = self.recv_buf.read(buf, pool);
        if n > 0 {
            self.after_read();
        }
        n
    }

    /// The longest contiguous run of unread bytes, to read without copying; follow with
    /// [`Connection::recv_consume`].
    pub fn recv_peek(&self) -> &[u8] {
        self.recv_buf.peek()
    }

    /// Drops `n` bytes after [`Connection::recv_peek`].
    pub fn recv_consume(&mut self, n: usize) {
        self.recv_consume_pooled(n, &mut BufferPool::none());
    }

    /// [`Connection::recv_consume`], a buffer that empties giving its memory to `pool`.
    pub fn recv_consume_pooled(&mut self, n: usize, pool: &mut BufferPool) {
        self.recv_buf.consume(n, pool);
        if n > 0 {
            self.after_read();
        }
    }

    /// CLOSE (RFC 9293 §3.10.4): no more data from us. The FIN follows the queued data.
    pub fn close(&mut self) -> Result<(), UserError> {
        match self.state {
            State::Closed | State::Listen => Err(UserError::Closing),
            State::SynSent => {
                self.enter_closed(CloseReason::Aborted);
                Ok(())
            }
            // Queued for processing after entering ESTABLISHED.
            State::SynReceived if !self.fin_queued => {
                self.fin_queued = true;
                Ok(())
            }
            State::Established => {
                self.fin_queued = true;
                self.state = State::FinWait1;
                Ok(())
            }
            State::CloseWait => {
                self.fin_queued = true;
                self.state = State::LastAck;
                Ok(())
            }
            _ => Err(UserError::Closing),
        }
    }

    /// Ends TIME_WAIT at once (the owner's TIME_WAIT population is at its limit): CLOSED, as if 2·MSL had
    /// passed. Does nothing in any other state.
    pub fn skip_time_wait(&mut self) {
        if self.state == State::TimeWait {
            self.enter_closed(CloseReason::Normal);
        }
    }

    /// ABORT (RFC 9293 §3.10.5): drops everything and, in a state where the peer has a connection, sends RST.
    pub fn abort(&mut self) {
        if matches!(
            self.state,
            State::SynReceived | State::Established | State::FinWait1 | State::FinWait2 | State::CloseWait
        ) {
            self.pending_rst = Some(self.acceptable_seq());
        }
        if self.state != State::Closed {
            self.enter_closed(CloseReason::Aborted);
        }
    }

    /// Turns keep-alive on or off for this connection.
    pub fn set_keepalive(&mut self, keepalive: Option<super::Keepalive>, now: Instant) {
        if self.cfg.keepalive != keepalive {
            Arc::make_mut(&mut self.cfg).keepalive = keepalive;
        }
        self.probes = 0;
        self.last_activity(now);
    }

    /// Turns Nagle's algorithm off (`true`, TCP_NODELAY) or on.
    pub fn set_nodelay(&mut self, nodelay: bool) {
        self.nodelay = nodelay;
    }

    /// The next event for the application, each pending one once.
    pub fn poll_event(&mut self) -> Option<Event> {
        for (bit, ev) in [
            (EV_CONNECTED, Event::Connected),
            (EV_READABLE, Event::Readable),
            (EV_WRITABLE, Event::Writable),
            (EV_PEER_CLOSED, Event::PeerClosed),
        ] {
            if self.events & bit != 0 {
                self.events &= !bit;
                return Some(ev);
            }
        }
        if self.events & EV_CLOSED != 0 {
            self.events &= !EV_CLOSED;
            return Some(Event::Closed(self.close_reason.unwrap_or(CloseReason::Normal)));
        }
        None
    }

    /// RFC 6191: may a SYN for this 4-tuple end this TIME_WAIT connection and open a new one? Yes when its
    /// timestamp is newer than the last one seen, or as new with a sequence number past RCV.NXT, or, without
    /// timestamps, when its sequence number is past RCV.NXT.
    pub fn accepts_reopen(&self, syn: &TcpRepr<'_>) -> bool {
        if self.state != State::TimeWait || !syn.flags.syn() || syn.flags.ack() || syn.flags.rst() {
            return false;
        }
        let newer_seq = syn.seq_number.diff(self.rcv_nxt) > 0;
        match (self.ts_enabled, syn.options.timestamp) {
            // RFC 6191 §2: a later timestamp, or the same one (a peer reconnecting within its clock's tick, a
            // millisecond for Linux and for us) with a later sequence number.
            (true, Some((tsval, _))) => {
                let newer_ts = tsval.wrapping_sub(self.ts_recent) as i32;
                newer_ts > 0 || (newer_ts == 0 && newer_seq)
            }
            _ => newer_seq,
        }
    }

    // ----- Input -----

    /// SEGMENT ARRIVES (RFC 9293 §3.10.7): one segment for this connection's 4-tuple, already checksummed.
    pub fn process(&mut self, now: Instant, seg: &TcpRepr<'_>) {
        self.process_pooled(now, seg, &mut BufferPool::none());
    }

    /// [`Connection::process`], buffers taking memory from `pool` and giving it back there: the data a segment
    /// brings, and the send buffer its ACK empties.
    pub fn process_pooled(&mut self, now: Instant, seg: &TcpRepr<'_>, pool: &mut BufferPool) {
        self.traffic.segs_in += 1;
        match self.state {
            State::Closed | State::Listen => {}
            State::SynSent => self.process_syn_sent(now, seg),
            _ => self.process_other(now, seg, pool),
        }
        self.release_idle_scoreboard();
    }

    /// RFC 9293 §3.10.7.3.
    fn process_syn_sent(&mut self, now: Instant, seg: &TcpRepr<'_>) {
        let flags = seg.flags;
        // First, check the ACK bit.
        if flags.ack() && (seg.ack_number.diff(self.iss) <= 0 || seg.ack_number.diff(self.snd_max) > 0) {
            if !flags.rst() {
                self.pending_rst = Some(seg.ack_number);
            }
            return;
        }
        // Second, the RST bit: only with an acceptable ACK (RFC 5961 §3.2 leaves SYN-SENT as RFC 793 had it).
        if flags.rst() {
            if flags.ack() {
                self.enter_closed(CloseReason::Refused);
            }
            return;
        }
        // Fourth, the SYN bit.
        if !flags.syn() {
            return;
        }
        self.irs = seg.seq_number;
        self.rcv_nxt = seg.seq_number + 1;
        self.last_ack_sent = self.rcv_nxt;
        self.negotiate(&seg.options, now);
        self.last_activity(now);
        if flags.ack() {
            // Our SYN is acknowledged: ESTABLISHED.
            self.rtt_sample_on_ack(now, seg);
            self.snd_una = seg.ack_number;
            self.syn_acked = true;
            self.set_send_window(seg.seq_number, seg.ack_number, usize::from(seg.window_len));
            self.heard_from_peer(now);
            self.rcv_adv = self.rcv_nxt + self.recv_buf.free().min(65535);
            self.retries = 0;
            self.rtt.reset_backoff();
            self.set_timer(TimerKind::Retransmit, None);
            self.enter_established(now);
            self.ack_now = true;
        } else {
            // Simultaneous open: SYN_RECEIVED, and our SYN goes again as a SYN-ACK with the same ISS.
            self.state = State::SynReceived;
            self.snd_nxt = self.iss;
            self.set_send_window(seg.seq_number, self.iss, usize::from(seg.window_len));
            self.send_syn = true;
        }
    }

    /// RFC 9293 §3.10.7.4, for SYN_RECEIVED and the synchronized states.
    fn process_other(&mut self, now: Instant, seg: &TcpRepr<'_>, pool: &mut BufferPool) {
        let mut seq = seg.seq_number;
        let mut flags = seg.flags;
        let mut payload = seg.payload;

        if self.state == State::SynReceived && flags.syn() && seq == self.irs {
            if !flags.ack() {
                // The peer did not get our SYN-ACK and sent its SYN again.
                self.send_syn = true;
                return;
            }
            // Simultaneous open: the peer's SYN-ACK. Its SYN octet is old; trim it and go on with the ACK.
            seq += 1;
            flags = TcpFlags(flags.0 & !TcpFlags::SYN.0);
        }

        // PAWS (RFC 7323 §5.3): a timestamp older than TS.Recent marks an old duplicate. One tick of tolerance, as
        // Linux's TCP_PAWS_WINDOW: a segment reordered across a clock tick is not old, and dropping it would turn
        // reordering into loss. A TS.Recent idle for 24 days judges nothing (§5.5).
        if self.ts_enabled && !flags.rst() && self.ts_recent_valid(now) {
            if let Some((tsval, _)) = seg.options.timestamp {
                if (tsval.wrapping_sub(self.ts_recent) as i32) < -PAWS_WINDOW_TICKS {
                    self.stats_mut().paws_drops += 1;
                    self.ack_invalid(now, seg);
                    return;
                }
            }
        }

        // First, check the sequence number.
        let seg_len = payload.len() + usize::from(flags.syn()) + usize::from(flags.fin());
        if !self.acceptable(seq, seg_len, !payload.is_empty()) {
            if !flags.rst() {
                self.stats_mut().out_of_window += 1;
                self.note_duplicate(seq, payload.len());
                self.ack_invalid(now, seg);
                if self.state == State::TimeWait && flags.fin() {
                    // A retransmitted FIN: our last ACK was lost. Re-ACK it and restart 2·MSL.
                    self.set_timer(TimerKind::Close, Some(now + self.cfg.msl * 2));
                }
            }
            return;
        }

        // Second, the RST bit (RFC 5961 §3.2): only an exact match resets; in-window otherwise gets a challenge.
        if flags.rst() {
            if seq != self.rcv_nxt {
                self.challenge_ack(now);
                return;
            }
            let reason = match self.state {
                State::SynReceived if self.passive => CloseReason::ReturnedToListen,
                State::SynReceived => CloseReason::Refused,
                State::Closing | State::LastAck | State::TimeWait => CloseReason::Normal,
                _ => CloseReason::Reset,
            };
            self.enter_closed(reason);
            return;
        }

        // Fourth, the SYN bit (RFC 9293 §3.10.7.4). In SYN_RECEIVED from a passive OPEN it returns the connection
        // to LISTEN; in a synchronized state, TIME_WAIT included, it gets a challenge ACK (RFC 5961 §4). A SYN
        // that may reopen a TIME_WAIT connection (RFC 6191) is the engine's to recognise with `accepts_reopen`
        // before it gets here.
        if flags.syn() {
            if self.state == State::SynReceived && self.passive {
                // Not the peer's SYN repeated (handled above): "return this connection to the LISTEN state".
                self.enter_closed(CloseReason::ReturnedToListen);
            } else {
                self.challenge_ack(now);
            }
            return;
        }

        // Fifth, the ACK field.
        if !flags.ack() {
            return;
        }
        if self.state == State::SynReceived {
            if seg.ack_number.diff(self.snd_una) > 0 && seg.ack_number.diff(self.snd_max) <= 0 {
                self.enter_established(now);
                self.set_send_window(seq, seg.ack_number, usize::from(seg.window_len) << self.snd_wscale);
            } else {
                self.pending_rst = Some(seg.ack_number);
                return;
            }
        }
        self.last_activity(now);
        if self.state != State::TimeWait && !self.process_ack(now, seq, seg, pool) {
            return;
        }
        // TS.Recent follows segments that start at or before the last ACK we sent (RFC 7323 §4.3), and only once
        // their ACK is acceptable: a blind segment in the window with a made-up ACK and a TSval far ahead would
        // otherwise carry TS.Recent past the peer's clock, and PAWS would drop every real segment after it (Linux
        // calls tcp_replace_ts_recent only after tcp_ack accepted the ACK). One invalid for its age (§5.5) is
        // replaced whatever the TSval, as Linux's tcp_paws_check allows.
        if self.ts_enabled {
            if let Some((tsval, _)) = seg.options.timestamp {
                let newer = (tsval.wrapping_sub(self.ts_recent) as i32) >= 0 || !self.ts_recent_valid(now);
                if seq.diff(self.last_ack_sent) <= 0 && newer {
                    self.set_ts_recent(tsval, now);
                }
            }
        }

        // Seventh, the segment text (URG, the sixth, is not supported: RFC 6093 lets data flow as normal).
        let mut fin = flags.fin();
        if seq.diff(self.rcv_nxt) < 0 {
            let skip = self.rcv_nxt - seq;
            self.note_duplicate(seq, skip.min(payload.len()));
            payload = payload.get(skip..).unwrap_or(&[]);
            seq = self.rcv_nxt;
        }
        let room = (self.rcv_adv - self.rcv_nxt).min(self.recv_buf.free());
        let limit = (seq - self.rcv_nxt) + payload.len();
        if limit > room {
            let keep = room.saturating_sub(seq - self.rcv_nxt);
            payload = &payload[..keep.min(payload.len())];
            fin = false;
        }
        if !payload.is_empty() {
            match self.state {
                State::Established | State::FinWait1 | State::FinWait2 => self.receive_data(now, seq, payload, pool),
                // After the peer's FIN no more data can be valid.
                _ => {}
            }
        }

        // Eighth, the FIN bit.
        if fin {
            self.receive_fin(now, seq + payload.len());
        } else if let Some(fin_seq) = self.peer_fin {
            if fin_seq == self.rcv_nxt {
                self.receive_fin(now, fin_seq);
            }
        }
    }

    /// The acceptability test of RFC 9293 §3.10.7.4 (the table of four cases).
    fn acceptable(&self, seq: SeqNumber, seg_len: usize, has_data: bool) -> bool {
        let wnd = self.rcv_adv - self.rcv_nxt;
        let in_window = |s: SeqNumber| s.diff(self.rcv_nxt) >= 0 && s.diff(self.rcv_nxt + wnd) < 0;
        match (seg_len, wnd) {
            (0, 0) => seq == self.rcv_nxt,
            (0, _) => in_window(seq),
            // A bare FIN at RCV.NXT needs no buffer space: take it even with a zero window, as Linux does.
            (1, 0) => seq == self.rcv_nxt && !has_data,
            (_, 0) => false,
            (_, _) => in_window(seq) || in_window(seq + (seg_len - 1)),
        }
    }

    /// The ACK processing of ESTABLISHED and its neighbours. Returns false when the segment is to be dropped.
    fn process_ack(&mut self, now: Instant, seq: SeqNumber, seg: &TcpRepr<'_>, pool: &mut BufferPool) -> bool {
        let ack = seg.ack_number;
        if ack.diff(self.snd_max) > 0 {
            // Acknowledges something not yet sent: send an ACK, drop the segment.
            self.ack_invalid(now, seg);
            return false;
        }
        // RFC 5961 §5.2: an ACK too far in the past is answered with a challenge. Too far is more than MAX.SND.WND
        // back, or, as Linux also bounds it (by bytes_acked), before our first byte: on a young connection the
        // window is wide while little was sent, and a blind injector's ACK from far before the ISN would pass.
        // (Past 2 GiB sent, the distance from the ISN wraps; the window alone bounds it then.)
        let sent =
            if self.traffic.bytes_out < 1 << 31 { (self.snd_una - self.iss).saturating_sub(1) } else { usize::MAX };
        let oldest = self.snd_una - self.max_snd_wnd().max(1).min(sent);
        if ack.diff(oldest) < 0 {
            self.challenge_ack(now);
            return false;
        }
        let wnd = usize::from(seg.window_len) << self.snd_wscale;
        let flight = self.snd_max - self.snd_una;
        // RFC 2883 §4: a first block below the cumulative ACK reports a duplicate, here one of our retransmissions
        // (or a duplicate the network made).
        if let Some(&(_, right)) = seg.options.sack_blocks.as_slice().first() {
            if self.sack_enabled && right.diff(ack) <= 0 && right.diff(self.snd_una - self.max_snd_wnd().max(1)) > 0 {
                self.stats_mut().dsacks_received += 1;
                match self.scoreboard.as_mut() {
                    Some(sb) => sb.needless_retransmission(),
                    None => self.reordering = (self.reordering + 1).min(MAX_REORDERING_SEGMENTS as u8),
                }
            }
        }
        // RFC 6675 `Update()`: blocks outside the new SND.UNA..SND.MAX are ignored.
        let newly_sacked = if self.sack_enabled && !seg.options.sack_blocks.is_empty() {
            self.sack_update(&seg.options.sack_blocks, self.snd_una.max(ack))
        } else {
            0
        };
        if ack.diff(self.snd_una) > 0 {
            self.on_new_ack(now, seg, flight, pool);
        } else if ack == self.snd_una
            && flight > 0
            // Against a closed window the only thing outstanding is a window probe, and its answers say the
            // window is still closed, not that something was lost.
            && self.snd_wnd() > 0
            && seg.payload.is_empty()
            && !seg.flags.fin()
            && wnd == self.snd_wnd()
        {
            // A duplicate ACK (RFC 5681 §2).
            self.stats_mut().dup_acks += 1;
            if self.sack_enabled {
                self.cc.count_duplicate_ack();
            } else if self.cc.on_duplicate_ack(ack, flight, self.snd_max) == AckAction::Retransmit {
                self.fast_retransmit = true;
                self.stats_mut().fast_retransmits += 1;
            }
        } else if ack == self.snd_una && flight > 0 && newly_sacked > 0 {
            // RFC 6675 §2: an ACK that SACKs new data is a duplicate ACK even when it carries data or a new window
            // (the peer's data flows too, and its ACKs ride on it).
            self.stats_mut().dup_acks += 1;
            self.cc.count_duplicate_ack();
        }
        if self.sack_enabled {
            if newly_sacked > 0 && self.cc.in_sack_recovery() {
                // The peer is receiving: another reordering timeout may follow this one.
                self.tlp_sent = false;
            }
            self.sack_loss_detection(newly_sacked);
        }
        self.update_send_window(seq, ack, wnd);
        self.heard_from_peer(now);
        if self.fin_acked {
            match self.state {
                State::FinWait1 => {
                    self.state = State::FinWait2;
                    let limit = self.cfg.fin_wait_2_timeout.map(|t| now + t);
                    self.set_timer(TimerKind::Close, limit);
                }
                State::Closing => self.enter_time_wait(now),
                State::LastAck => {
                    self.enter_closed(CloseReason::Normal);
                    return false;
                }
                _ => {}
            }
        }
        true
    }

    /// RFC 6675 §5: after the scoreboard changed, start a recovery when DupThresh duplicate ACKs came or the
    /// first unacknowledged byte counts as lost, and find retransmissions lost again.
    fn sack_loss_detection(&mut self, newly_sacked: usize) {
        if self.snd_una == self.snd_max {
            return;
        }
        if self.tlp_sent && newly_sacked > 0 && !self.cc.in_recovery() {
            // RFC 8985 §7.4: the probe's ACK runs RACK. Data SACKed now went out after the holes below it by at
            // least the probe timeout, more than a round trip and a reordering window: those holes are lost.
            if let Some(sb) = self.scoreboard.as_mut() {
                sb.mark_lost_below_highest_sack(self.snd_una);
            }
        }
        if self.cc.in_sack_recovery() {
            let smss = self.send_mss();
            let found = self.scoreboard.as_mut().map_or(0, |sb| sb.detect_lost_retransmissions(smss));
            if found > 0 {
                self.stats_mut().lost_retransmissions += found as u64;
            }
            return;
        }
        let lost = self.scoreboard().is_lost(self.snd_una, self.snd_una, self.send_mss());
        // Only once what a timeout resent has gone out again (SND.NXT back at SND.MAX): before, `pipe` would count
        // bytes not yet resent as in flight, and the go-back-N resend is still under way.
        if (lost || self.cc.dupacks() >= DUPACK_THRESHOLD) && self.snd_nxt == self.snd_max {
            let in_timeout_window = self.snd_una.diff(self.cc.recovery_point()) <= 0;
            if in_timeout_window && !lost {
                // Duplicates from the resend after a timeout say nothing new (RFC 6582 §3.2 step 2's caution).
                return;
            }
            self.cc.enter_sack_recovery(self.snd_una, self.snd_max - self.snd_una, self.snd_max);
            self.clear_retransmitted();
            self.stats_mut().sack_recoveries += 1;
            self.stats_mut().fast_retransmits += 1;
            // RFC 6675 §5 step 4.3: the first segment goes now, whatever `pipe` says.
            self.fast_retransmit = true;
        }
    }

    /// RFC 6675 `Update()` with the blocks of one ACK, SND.UNA being `snd_una`: returns the bytes newly SACKed. The
    /// scoreboard is allocated only when a block names data in flight.
    fn sack_update(&mut self, blocks: &crate::wire::SackBlocks, snd_una: SeqNumber) -> usize {
        let snd_max = self.snd_max;
        let in_flight = |&(l, r): &(SeqNumber, SeqNumber)| Scoreboard::block_in_flight(l, r, snd_una, snd_max);
        let update = if self.scoreboard.is_some() || blocks.as_slice().iter().any(in_flight) {
            self.scoreboard_mut().update(blocks, snd_una, snd_max)
        } else {
            super::SackUpdate { ignored: u32::from(blocks.len), ..Default::default() }
        };
        if update.ignored > 0 {
            self.stats_mut().sack_blocks_ignored += u64::from(update.ignored);
        }
        if update.evicted > 0 {
            self.stats_mut().sack_ranges_evicted += u64::from(update.evicted);
        }
        update.newly_sacked
    }

    /// The scoreboard, allocated (with the reordering threshold learned so far) if it was not.
    fn scoreboard_mut(&mut self) -> &mut Scoreboard {
        let reordering = usize::from(self.reordering);
        self.scoreboard.get_or_insert_with(|| Box::new(Scoreboard::with_reordering(reordering)))
    }

    /// Forgets the retransmission records and the time-based loss mark (a recovery began or ended).
    fn clear_retransmitted(&mut self) {
        if let Some(sb) = self.scoreboard.as_mut() {
            sb.clear_retransmitted();
        }
    }

    /// Frees the scoreboard once it holds nothing for the current flight, keeping what it learned.
    fn release_idle_scoreboard(&mut self) {
        if let Some(sb) = self.scoreboard.as_ref().filter(|sb| sb.is_idle()) {
            self.reordering = sb.reordering() as u8;
            self.scoreboard = None;
        }
    }

    fn on_new_ack(&mut self, now: Instant, seg: &TcpRepr<'_>, flight: usize, pool: &mut BufferPool) {
        let ack = seg.ack_number;
        let acked = ack - self.snd_una;
        let mut data_acked = acked;
        let data_end = self.data_start() + self.send_buf.len();
        if !self.syn_acked {
            self.syn_acked = true;
            data_acked -= 1;
        }
        if self.fin_queued && !self.fin_acked && ack == data_end + 1 {
            self.fin_acked = true;
            data_acked -= 1;
        }
        self.rtt_sample_on_ack(now, seg);
        self.send_buf.consume(data_acked, pool);
        self.snd_una = ack;
        if let Some(sb) = self.scoreboard.as_mut() {
            sb.acked(ack);
        }
        if self.snd_nxt.diff(ack) < 0 {
            self.snd_nxt = ack;
        }
        self.retries = 0;
        self.probes = 0;
        self.rtt.reset_backoff();
        let srtt = self.rtt.srtt().unwrap_or(self.cfg.rto_initial);
        let was_sack_recovery = self.cc.in_sack_recovery();
        if self.cc.on_new_ack(now, srtt, ack, acked, flight) == AckAction::Retransmit {
            self.fast_retransmit = true;
            self.stats_mut().fast_retransmits += 1;
        }
        if was_sack_recovery && !self.cc.in_recovery() {
            self.clear_retransmitted();
        }
        // RFC 6298 §5.2–5.3: stop the timer when everything is acknowledged, restart it otherwise (as a tail loss
        // probe timeout where one may go).
        self.tlp_sent = false;
        self.arm_retransmit_timer(now);
        if self.send_refused && data_acked > 0 {
            self.send_refused = false;
            self.events |= EV_WRITABLE;
        }
    }

    /// May a tail loss probe be scheduled (RFC 8985 §7.2)? With SACK, outside recovery and timeout resends, data
    /// outstanding, and no probe yet since SND.UNA last moved.
    fn tlp_eligible(&self) -> bool {
        !self.cc.in_recovery() && self.snd_nxt == self.snd_max && self.probe_eligible()
    }

    /// May the retransmission timer run as a probe timeout: a tail loss probe outside recovery, or inside a SACK
    /// recovery RACK's reordering timeout (RFC 8985 §6.2), after which retransmissions still unanswered count as
    /// lost again.
    fn probe_timer_eligible(&self) -> bool {
        self.tlp_eligible() || (self.cc.in_sack_recovery() && self.probe_eligible())
    }

    fn probe_eligible(&self) -> bool {
        self.sack_enabled
            && !self.tlp_sent
            && self.retries == 0
            && self.snd_una != self.snd_max
            && matches!(
                self.state,
                State::Established | State::CloseWait | State::FinWait1 | State::Closing | State::LastAck
            )
    }

    /// The probe timeout (RFC 8985 §7.2): 2·SRTT, plus the worst-case delayed-ACK time when one segment is out
    /// (WCDelAckT, 200 ms, or ours if longer: Linux may hold the ACK of a lone segment, a FIN above all, that long,
    /// and a probe before it would resend what arrived), at least 10 ms, never past the RTO.
    fn probe_timeout(&self) -> Duration {
        let Some(srtt) = self.rtt.srtt() else { return self.rto() };
        let mut pto = srtt * 2;
        if self.snd_max - self.snd_una <= self.send_mss() {
            pto += self.cfg.delayed_ack.max(WORST_CASE_DELAYED_ACK);
        }
        pto.max(Duration::from_millis(10)).min(self.rto())
    }

    /// Restarts the retransmission timer: none when nothing is outstanding, a probe timeout where a tail loss probe
    /// may go, the RTO otherwise.
    fn arm_retransmit_timer(&mut self, now: Instant) {
        self.tlp_armed = false;
        if self.snd_una == self.snd_max {
            self.set_timer(TimerKind::Retransmit, None);
        } else if self.probe_timer_eligible() {
            self.tlp_armed = true;
            self.set_timer(TimerKind::Retransmit, Some(now + self.probe_timeout()));
        } else {
            self.set_timer(TimerKind::Retransmit, Some(now + self.rto()));
        }
    }

    /// An acceptable ACK came: the peer is there. Its probes are answered (Linux's tcp_ack clears icsk_probes_out on
    /// every one), and, while its window stays closed, when it was heard is noted for the retransmission timer.
    fn heard_from_peer(&mut self, now: Instant) {
        if self.snd_wnd == 0 {
            let rare = self.rare_mut();
            rare.probes_unanswered = 0;
            rare.closed_window_heard = Some(now);
        } else if let Some(rare) = self.rare.as_deref_mut() {
            rare.probes_unanswered = 0;
        }
    }

    /// Whether, its window closed, the peer was heard from at or after `since`.
    fn heard_with_closed_window_since(&self, since: Instant) -> bool {
        self.rare.as_deref().and_then(|r| r.closed_window_heard).is_some_and(|t| t >= since)
    }

    /// SND.WND and its guards SND.WL1, SND.WL2 (RFC 9293 §3.10.7.4, fifth check).
    fn update_send_window(&mut self, seq: SeqNumber, ack: SeqNumber, wnd: usize) {
        if self.snd_wl1.diff(seq) < 0 || (self.snd_wl1 == seq && self.snd_wl2.diff(ack) <= 0) {
            self.set_send_window(seq, ack, wnd);
        }
    }

    fn set_send_window(&mut self, seq: SeqNumber, ack: SeqNumber, wnd: usize) {
        self.snd_wnd = narrow(wnd);
        self.snd_wl1 = seq;
        self.snd_wl2 = ack;
        self.max_snd_wnd = self.max_snd_wnd.max(narrow(wnd));
        if wnd > 0 {
            self.set_timer(TimerKind::Persist, None);
            self.probes = 0;
        }
    }

    /// `len` bytes from `seq` arrived that we already had: with SACK, the next ACK reports them first (D-SACK,
    /// RFC 2883 §4), so that the sender can tell a needless retransmission (Linux then undoes its window reduction
    /// and raises its reordering threshold). Only data within a buffer's length of RCV.NXT: older is garbage.
    fn note_duplicate(&mut self, seq: SeqNumber, len: usize) {
        let end = seq + len;
        if self.sack_enabled && len > 0 && end.diff(self.rcv_nxt) <= 0 && self.rcv_nxt - seq <= self.recv_buf.capacity()
        {
            self.dsack = Some((seq, end));
        }
    }

    fn receive_data(&mut self, now: Instant, seq: SeqNumber, data: &[u8], pool: &mut BufferPool) {
        let end = seq + data.len();
        if self.sack_enabled
            && self.recv_buf.out_of_order().ranges().iter().any(|r| seq.diff(r.0) >= 0 && end.diff(r.1) <= 0)
        {
            // All of it is held already, out of order: a duplicate too (RFC 2883 §4, example 3).
            self.dsack = Some((seq, end));
        }
        let had_gap = !self.recv_buf.out_of_order().is_empty();
        let Some(next) = self.recv_buf.write(self.rcv_nxt, seq, data, pool) else {
            self.stats_mut().ooo_dropped += 1;
            self.ack_now = true;
            return;
        };
        self.rcv_mss = self.rcv_mss.max(narrow(data.len()));
        if seq != self.rcv_nxt {
            // Out of order: a duplicate ACK at once tells the sender about the hole (RFC 5681 §4.2), one for each
            // such segment even when several arrive before the next poll, or fast retransmit never triggers.
            self.stats_mut().ooo_segments += 1;
            self.ack_now = true;
            self.dup_acks_owed = (self.dup_acks_owed + 1).min(MAX_DUP_ACKS_OWED);
            return;
        }
        self.traffic.bytes_in += (next - self.rcv_nxt) as u64;
        self.rcv_nxt = next;
        // Duplicates of the old RCV.NXT not sent yet would now carry the new one and mislead the sender.
        self.dup_acks_owed = 0;
        self.events |= EV_READABLE;
        self.unacked_bytes = self.unacked_bytes.saturating_add(narrow(data.len()));
        // Filling a hole is acknowledged at once; otherwise every second full-sized segment, or on the timer.
        if had_gap || self.unacked_bytes as usize >= 2 * self.rcv_mss() {
            self.ack_now = true;
        } else if self.timer(TimerKind::DelayedAck).is_none() {
            self.set_timer(TimerKind::DelayedAck, Some(now + self.cfg.delayed_ack));
        }
    }

    fn receive_fin(&mut self, now: Instant, fin_seq: SeqNumber) {
        if fin_seq != self.rcv_nxt {
            // Data before the FIN is missing: remember where the stream ends.
            if fin_seq.diff(self.rcv_nxt) > 0 {
                self.peer_fin = Some(fin_seq);
            }
            self.ack_now = true;
            return;
        }
        self.peer_fin = None;
        self.rcv_nxt += 1;
        self.ack_now = true;
        if !self.peer_fin_received {
            self.peer_fin_received = true;
            self.events |= EV_PEER_CLOSED;
        }
        match self.state {
            State::SynReceived | State::Established => self.state = State::CloseWait,
            State::FinWait1 => self.state = State::Closing,
            State::FinWait2 | State::TimeWait => self.enter_time_wait(now),
            _ => {}
        }
    }

    // ----- Timers -----

    /// A timer came due. A stale call (the deadline moved later or was cleared since the engine scheduled it)
    /// does nothing: the engine re-reads [`Connection::timer`] afterwards.
    pub fn on_timer(&mut self, now: Instant, kind: TimerKind) {
        match self.timer(kind) {
            Some(deadline) if deadline <= now => self.set_timer(kind, None),
            _ => return,
        }
        match kind {
            TimerKind::Retransmit if self.tlp_armed => {
                // RFC 8985 §7.3: the probe timeout, not the RTO. One probe, then the RTO runs.
                self.tlp_armed = false;
                if self.cc.in_sack_recovery() && self.probe_eligible() {
                    // RFC 8985 §6.2–6.3 in the small: what was resent a whole probe timeout ago and is still not
                    // acknowledged is lost again, and so is everything below the highest SACK; the first hole goes
                    // at once.
                    if let Some(sb) = self.scoreboard.as_mut() {
                        sb.mark_lost_below_highest_sack(self.snd_una);
                    }
                    self.fast_retransmit = true;
                    self.tlp_sent = true;
                    self.stats_mut().recovery_probes += 1;
                } else if self.tlp_eligible() {
                    self.tlp_owed = true;
                    self.tlp_sent = true;
                }
                self.set_timer(TimerKind::Retransmit, Some(now + self.rto()));
            }
            TimerKind::Retransmit => {
                self.ts_at_rto = Some(self.ts_now(now));
                self.on_retransmit_timeout(now);
            }
            TimerKind::Persist => {
                if self.snd_wnd == 0 {
                    // RFC 1122 §4.2.2.17: probing goes on for as long as the peer answers; one that stopped
                    // answering (gone, or the path to it) is given up after `data_retries` unanswered probes, as
                    // Linux's tcp_probe_timer gives up after tcp_retries2. Without this a peer that closed its
                    // window and vanished held the connection, and its send buffer, for ever.
                    let limit = self.cfg.data_retries;
                    let rare = self.rare_mut();
                    if rare.probes_unanswered >= limit {
                        self.enter_closed(CloseReason::TimedOut);
                        return;
                    }
                    rare.probes_unanswered += 1;
                }
                self.probe = Some(Probe::Window);
                self.probes = self.probes.saturating_add(1);
            }
            TimerKind::DelayedAck => self.ack_now = true,
            TimerKind::Keepalive => self.on_keepalive_timeout(now),
            TimerKind::Close => self.enter_closed(if self.state == State::TimeWait {
                CloseReason::Normal
            } else {
                CloseReason::TimedOut
            }),
        }
    }

    fn on_retransmit_timeout(&mut self, now: Instant) {
        let mut counted = true;
        match self.state {
            State::SynSent | State::SynReceived => {
                if u32::from(self.retries) >= self.cfg.syn_retries {
                    let reason = if self.passive { CloseReason::ReturnedToListen } else { CloseReason::TimedOut };
                    self.enter_closed(reason);
                    return;
                }
                self.snd_nxt = self.iss;
                self.send_syn = true;
            }
            State::Established | State::FinWait1 | State::Closing | State::CloseWait | State::LastAck => {
                if self.snd_una == self.snd_max {
                    return;
                }
                if u32::from(self.retries) >= self.cfg.data_retries {
                    self.enter_closed(CloseReason::TimedOut);
                    return;
                }
                // Against a closed window a resend is a window probe (a bare FIN, say, that an old Linux drops
                // for want of room and answers with its window still 0): while the peer answers it is there, and,
                // as Linux's tcp_retransmit_timer, the timeout is not counted against `data_retries`. Silent for
                // `rto_max`, it is counted again.
                counted = !(self.snd_wnd == 0 && self.heard_with_closed_window_since(now - self.cfg.rto_max));
                // RFC 5681 §3.1: one segment's window; go back to SND.UNA and resend from there. RFC 6675 §5.1 (and
                // RFC 2018 §8, in case the peer reneged): the scoreboard starts again; SACK blocks that come with
                // the ACKs of the resend refill it, and what they name is skipped.
                self.cc.on_timeout(self.snd_max - self.snd_una, self.snd_max);
                self.snd_nxt = self.snd_una;
                if let Some(sb) = self.scoreboard.take() {
                    self.reordering = sb.reordering() as u8;
                }
                self.fast_retransmit = false;
            }
            _ => return,
        }
        self.stats_mut().rto_timeouts += 1;
        if counted {
            self.retries = self.retries.saturating_add(1);
        }
        self.rtt.back_off();
        self.set_rtt_timing(None);
        // RFC 6298 (5.6): the timer starts again now, with the backed-off RTO, not only once the resend goes out.
        // The sending code arms it only after a segment was handed over; when the device refused the resend
        // (ring full), nothing else would ever call again, and the connection hung with no timer at all — a
        // half-open one holding its table slot and backlog place for good (found by the `stack` fuzz target).
        self.set_timer(TimerKind::Retransmit, Some(now + self.rto()));
    }

    fn on_keepalive_timeout(&mut self, now: Instant) {
        let Some(ka) = self.cfg.keepalive else { return };
        if !matches!(self.state, State::Established | State::CloseWait) {
            return;
        }
        if self.snd_una != self.snd_max || !self.send_buf.is_empty() {
            // Data in flight: the retransmission timer watches the peer.
            self.set_timer(TimerKind::Keepalive, Some(now + at_least_a_tick(ka.idle)));
            return;
        }
        if self.probes >= ka.probes {
            self.enter_closed(CloseReason::TimedOut);
            return;
        }
        self.probes += 1;
        self.probe = Some(Probe::Keepalive);
        self.set_timer(TimerKind::Keepalive, Some(now + at_least_a_tick(ka.interval)));
    }

    // ----- Output -----

    /// Produces every segment owed now, in order, handing each to `emit`. `emit` returns false when the device
    /// has no room; what was not sent stays owed and goes out on a later call.
    pub fn poll_transmit(&mut self, now: Instant, emit: &mut dyn FnMut(&TcpRepr<'_>) -> bool) {
        if let Some(seq) = self.pending_rst {
            if !emit(&self.rst_segment(seq)) {
                return;
            }
            self.traffic.segs_out += 1;
            self.pending_rst = None;
        }
        match self.state {
            State::Closed | State::Listen => {}
            State::SynSent | State::SynReceived => {
                if self.send_syn {
                    self.emit_syn(now, emit);
                } else if self.ack_now && self.state == State::SynReceived {
                    let _ = self.emit_segment(now, self.acceptable_seq(), TcpFlags::ACK, 0, false, emit);
                }
            }
            State::TimeWait => {
                if self.ack_now {
                    let _ = self.emit_segment(now, self.acceptable_seq(), TcpFlags::ACK, 0, false, emit);
                }
            }
            _ => self.transmit_synchronized(now, emit),
        }
    }

    fn emit_syn(&mut self, now: Instant, emit: &mut dyn FnMut(&TcpRepr<'_>) -> bool) -> bool {
        let mut repr = self.header(now, self.iss, TcpFlags::SYN);
        let passive_reply = self.state == State::SynReceived;
        if passive_reply {
            repr.flags |= TcpFlags::ACK;
            repr.ack_number = self.rcv_nxt;
        }
        repr.window_len = self.recv_buf.free().min(65535) as u16;
        repr.options.mss = Some(self.cfg.mss);
        // Offer what we want; in a SYN-ACK only what the peer's SYN offered too (RFC 7323 §1.3).
        let offer_ws = self.cfg.window_scaling && (!passive_reply || self.window_scale_agreed);
        repr.options.window_scale = offer_ws.then_some(self.rcv_wscale);
        let offer_ts = self.cfg.timestamps && (!passive_reply || self.ts_enabled);
        repr.options.sack_permitted = self.cfg.sack && (!passive_reply || self.sack_enabled);
        if offer_ts {
            repr.options.timestamp = Some((self.ts_now(now), if passive_reply { self.ts_recent } else { 0 }));
        }
        if !emit(&repr) {
            return false;
        }
        self.traffic.segs_out += 1;
        if self.snd_max != self.iss {
            // Sent again (on a timeout, or because the peer's SYN came again): Karn's algorithm forbids timing it.
            self.stats_mut().retransmits += 1;
            self.set_rtt_timing(None);
        } else if self.retries == 0 {
            self.set_rtt_timing(Some((self.iss, now)));
        }
        if passive_reply {
            self.rcv_adv = self.rcv_nxt + usize::from(repr.window_len);
            self.sent_ack();
        }
        self.send_syn = false;
        self.snd_nxt = self.iss + 1;
        self.snd_max = self.snd_max.max(self.snd_nxt);
        if self.timer(TimerKind::Retransmit).is_none() {
            self.set_timer(TimerKind::Retransmit, Some(now + self.rto()));
        }
        true
    }

    fn transmit_synchronized(&mut self, now: Instant, emit: &mut dyn FnMut(&TcpRepr<'_>) -> bool) {
        if self.cc.in_sack_recovery() {
            if !self.transmit_sack_recovery(now, emit) {
                return;
            }
        } else if self.fast_retransmit {
            // Only what was sent before: new data beyond SND.MAX is not a retransmission and is for the windows
            // to allow (and SND.NXT must never pass SND.MAX).
            let sent = self.snd_max - self.snd_una;
            let len = self.send_mss().min(self.send_buf.len()).min(sent);
            let Some(used) = self.emit_segment(now, self.snd_una, TcpFlags::ACK, len, true, emit) else {
                return;
            };
            self.stats_mut().retransmits += 1;
            self.fast_retransmit = false;
            let end = self.snd_una + used;
            // Karn: the ACK of a retransmitted segment cannot be told from the ACK of its first copy.
            if let Some((timed, _)) = self.rtt_timing() {
                if timed.diff(end) < 0 {
                    self.set_rtt_timing(None);
                }
            }
            if self.snd_nxt.diff(end) < 0 {
                self.snd_nxt = end;
            }
        }
        if self.tlp_owed && !self.send_tail_loss_probe(now, emit) {
            return;
        }
        match self.probe {
            Some(Probe::Window) if self.snd_wnd() == 0 => {
                // One byte past the closed window, without advancing SND.NXT: if the peer takes it, its ACK moves
                // SND.UNA past SND.NXT and sending resumes from there.
                let unsent = self.send_buf.len().saturating_sub(self.snd_nxt - self.data_start());
                if unsent > 0 {
                    let seq = self.snd_nxt;
                    if self.emit_segment(now, seq, TcpFlags::ACK, 1, false, emit).is_none() {
                        return;
                    }
                    self.snd_max = self.snd_max.max(seq + 1);
                    self.stats_mut().window_probes += 1;
                }
                self.probe = None;
            }
            Some(Probe::Window) => {
                self.override_sws = true;
                self.probe = None;
            }
            Some(Probe::Keepalive) => {
                // RFC 1122 §4.2.3.6: SEG.SEQ = SND.NXT - 1 (nothing is in flight: SND.UNA - 1, as Linux sends), an
                // old number the peer must answer with an ACK.
                if self.emit_segment(now, self.snd_una - 1, TcpFlags::ACK, 0, false, emit).is_none() {
                    return;
                }
                self.stats_mut().keepalive_probes += 1;
                self.probe = None;
            }
            None => {}
        }
        while let Some((len, fin)) = self.next_segment(now) {
            let mut flags = TcpFlags::ACK;
            if fin {
                flags |= TcpFlags::FIN;
            }
            if len > 0 {
                flags |= TcpFlags::PSH;
            }
            let seq = self.snd_nxt;
            let retransmission = seq.diff(self.snd_max) < 0;
            let Some(used) = self.emit_segment(now, seq, flags, len, false, emit) else {
                return;
            };
            self.override_sws = false;
            if retransmission {
                self.stats_mut().retransmits += 1;
            } else if self.rtt_timing().is_none() && !self.ts_enabled && self.retries == 0 {
                self.set_rtt_timing(Some((seq, now)));
            }
            self.snd_nxt = seq + used;
            self.snd_max = self.snd_max.max(self.snd_nxt);
            if used < self.send_mss() && used > 0 {
                self.snd_sml = self.snd_nxt;
            }
            if !retransmission && self.tlp_eligible() {
                // RFC 8985 §7.2: new data restarts the probe timeout.
                self.arm_retransmit_timer(now);
            } else if self.timer(TimerKind::Retransmit).is_none() {
                self.set_timer(TimerKind::Retransmit, Some(now + self.rto()));
            }
        }
        // A bare ACK carries the highest sequence number sent, not SND.NXT: after a timeout SND.NXT goes back
        // to SND.UNA, and an ACK numbered below the peer's RCV.NXT would be unacceptable to it (and answered
        // with an ACK numbered below ours: an ACK war).
        // A data segment may have carried the ACK already, but only a segment without data counts as a
        // duplicate ACK at the sender.
        let acks = if self.ack_now { self.dup_acks_owed.max(1) } else { self.dup_acks_owed };
        for _ in 0..acks {
            if self.emit_segment(now, self.acceptable_seq(), TcpFlags::ACK, 0, false, emit).is_none() {
                return;
            }
            self.dup_acks_owed = self.dup_acks_owed.saturating_sub(1);
        }
    }

    /// RFC 8985 §7.3: the probe is a new segment if the peer's window takes one (whatever cwnd says), otherwise the
    /// last segment sent again. Returns false when `emit` had no room.
    fn send_tail_loss_probe(&mut self, now: Instant, emit: &mut dyn FnMut(&TcpRepr<'_>) -> bool) -> bool {
        if self.snd_una == self.snd_max {
            self.tlp_owed = false;
            return true;
        }
        let data_start = self.data_start();
        let data_end = data_start + self.send_buf.len();
        let unsent = self.send_buf.len().saturating_sub(self.snd_nxt - data_start);
        let room = self.snd_wnd().saturating_sub(self.snd_nxt - self.snd_una);
        let (seq, len) = if unsent > 0 && room > 0 {
            (self.snd_nxt, unsent.min(room).min(self.send_mss()))
        } else {
            let start = data_start.max(data_end - self.send_mss().min(data_end - data_start));
            let start = if start.diff(self.snd_una) < 0 { self.snd_una } else { start };
            let len = if data_end.diff(start) > 0 { data_end - start } else { 0 };
            (start, len)
        };
        let Some(used) = self.emit_segment(now, seq, TcpFlags::ACK, len, true, emit) else {
            return false;
        };
        self.tlp_owed = false;
        self.stats_mut().tail_loss_probes += 1;
        let end = seq + used;
        if end.diff(self.snd_max) > 0 {
            self.snd_nxt = end;
            self.snd_max = end;
            self.arm_retransmit_timer(now);
        } else {
            self.stats_mut().retransmits += 1;
            self.set_rtt_timing(None);
        }
        true
    }

    /// RFC 6675 §5 step (C): while `cwnd − pipe` leaves a segment's room (or the recovery's first retransmission is
    /// owed), resend what `NextSeg` rule 1 names: lost data not resent yet in this recovery, lowest first. New data
    /// (rule 2) follows in the ordinary loop, limited by `pipe`. Returns false when `emit` had no room.
    fn transmit_sack_recovery(&mut self, now: Instant, emit: &mut dyn FnMut(&TcpRepr<'_>) -> bool) -> bool {
        loop {
            let pipe = self.scoreboard().pipe(self.snd_una, self.snd_max, self.send_mss());
            if !self.fast_retransmit && self.cc.window() < pipe + self.send_mss() {
                return true;
            }
            if !self.scoreboard().can_retransmit() {
                self.fast_retransmit = false;
                return true;
            }
            let next = self.scoreboard().next_lost(self.snd_una, self.snd_max, self.send_mss());
            let (start, len) = match next {
                Some(hole) => hole,
                // Step 4.3 with DupThresh duplicates but nothing yet counted lost: the first unacknowledged segment.
                None if self.fast_retransmit => {
                    let end = self.scoreboard().next_sacked_after(self.snd_una).unwrap_or(self.snd_max);
                    (self.snd_una, (end - self.snd_una).min(self.send_mss()))
                }
                None => return true,
            };
            // Only bytes of the send buffer (a FIN that is the last thing sent rides along when it fits).
            let data_end = self.data_start() + self.send_buf.len();
            let len = if data_end.diff(start) > 0 { len.min(data_end - start) } else { 0 };
            let Some(used) = self.emit_segment(now, start, TcpFlags::ACK, len, true, emit) else {
                return false;
            };
            self.fast_retransmit = false;
            if used == 0 {
                return true;
            }
            let end = start + used;
            let snd_max = self.snd_max;
            self.scoreboard_mut().retransmitted(start, end, snd_max);
            self.stats_mut().retransmits += 1;
            // The reordering timeout runs from the latest retransmission.
            if self.probe_timer_eligible() {
                self.arm_retransmit_timer(now);
            }
            // Karn: the ACK of a retransmitted segment cannot be told from the ACK of its first copy.
            if let Some((timed, _)) = self.rtt_timing() {
                if timed.diff(end) < 0 {
                    self.set_rtt_timing(None);
                }
            }
        }
    }

    /// The next new segment the windows, Nagle and sender SWS avoidance (RFC 9293 §3.8.6.2.1) allow: its payload
    /// length and whether it carries the FIN. Arms the persist timer when a zero window blocks data.
    fn next_segment(&mut self, now: Instant) -> Option<(usize, bool)> {
        // Resending after a timeout: what the peer has SACKed since is not sent again.
        while self.snd_nxt.diff(self.snd_max) < 0 {
            let Some(end) = self.scoreboard().sacked_end(self.snd_nxt) else { break };
            self.stats_mut().sacked_bytes_skipped += (end - self.snd_nxt) as u64;
            self.snd_nxt = end;
        }
        let data_end = self.data_start() + self.send_buf.len();
        let offset = self.snd_nxt - self.data_start();
        let unsent = self.send_buf.len().saturating_sub(offset);
        // Once the FIN is acknowledged SND.UNA (and so `data_end`) has moved past it: nothing is pending.
        let fin_pending = self.fin_queued && !self.fin_acked && self.snd_nxt.diff(data_end) <= 0;
        if unsent == 0 {
            return fin_pending.then_some((0, true));
        }
        let flight = self.snd_nxt - self.snd_una;
        // The congestion window counts what is in the network: in a SACK recovery RFC 6675's `pipe`; otherwise
        // what was sent less what the peer SACKed (nothing, unless a timeout's resend is skipping SACKed data).
        let in_network = if self.cc.in_sack_recovery() {
            self.scoreboard().pipe(self.snd_una, self.snd_max, self.send_mss())
        } else {
            flight - self.scoreboard().sacked_between(self.snd_una, self.snd_nxt)
        };
        let usable = self.snd_wnd().saturating_sub(flight).min(self.cc.window().saturating_sub(in_network));
        let mut len = unsent.min(self.send_mss()).min(usable);
        // A resend stops where SACKed data begins.
        if self.snd_nxt.diff(self.snd_max) < 0 {
            if let Some(next) = self.scoreboard().next_sacked_after(self.snd_nxt) {
                len = len.min(next - self.snd_nxt);
            }
        }
        if len == 0 {
            if self.snd_wnd() == 0 && flight == 0 && self.timer(TimerKind::Persist).is_none() {
                let backoff = self.rto().saturating_mul(1 << self.probes.min(16)).min(self.cfg.rto_max);
                self.set_timer(TimerKind::Persist, Some(now + backoff));
            }
            return None;
        }
        let all = len == unsent;
        // Nagle as Minshall refined it (and Linux does): a short segment waits only while an earlier short one is
        // unacknowledged, not behind full ones — else the tail of a write can wait for the peer's delayed ACK of an
        // odd last full segment.
        let short_in_flight = self.snd_sml.diff(self.snd_una) > 0;
        let send = len == self.send_mss()
            || self.snd_nxt.diff(self.snd_max) < 0
            || (all && (flight == 0 || self.nodelay || self.fin_queued || !short_in_flight))
            || (self.max_snd_wnd() > 0 && len >= self.max_snd_wnd() / 2)
            || self.override_sws;
        if !send {
            // Nothing in flight means no ACK will come to release this: the persist timer is the override timeout
            // of RFC 9293 §3.8.6.2.1.
            if flight == 0 && self.timer(TimerKind::Persist).is_none() {
                self.set_timer(TimerKind::Persist, Some(now + self.rto()));
            }
            return None;
        }
        // The ring may wrap: the segment then ends at the wrap and the rest follows in the next one.
        let len = self.send_buf.peek(offset, len).len();
        let fin = fin_pending && self.snd_nxt + len == data_end;
        Some((len, fin))
    }

    /// Sends one segment starting at `seq` with up to `len` bytes of queued data; with `fin_if_last` the FIN is
    /// added when the data reaches it. Returns the sequence space the segment took, or `None` when `emit` had no
    /// room.
    fn emit_segment(
        &mut self,
        now: Instant,
        seq: SeqNumber,
        flags: TcpFlags,
        len: usize,
        fin_if_last: bool,
        emit: &mut dyn FnMut(&TcpRepr<'_>) -> bool,
    ) -> Option<usize> {
        let mut repr = self.header(now, seq, flags);
        repr.ack_number = self.rcv_nxt;
        repr.window_len = self.advertise_window();
        let data_start = self.data_start();
        let data_end = data_start + self.send_buf.len();
        if len > 0 && seq.diff(data_start) >= 0 {
            // SACK blocks take room the MSS left for data (as Linux's tcp_current_mss): the segment shrinks.
            let base = if self.ts_enabled { TIMESTAMP_OPTION_LEN } else { 0 };
            let extra = repr.options.buffer_len().saturating_sub(base);
            let len =
                if len + extra > self.send_mss() { self.send_mss().saturating_sub(extra).max(1).min(len) } else { len };
            repr.payload = self.send_buf.peek(seq - data_start, len);
        }
        if repr.flags.fin() && seq + repr.payload.len() != data_end {
            // The payload shrank (for SACK blocks): the FIN waits for the segment that ends the data.
            repr.flags = TcpFlags(repr.flags.0 & !TcpFlags::FIN.0);
        }
        if fin_if_last
            && self.fin_queued
            && !self.fin_acked
            && seq + repr.payload.len() == data_end
            && seq.diff(data_end) <= 0
        {
            repr.flags |= TcpFlags::FIN;
        }
        if !emit(&repr) {
            return None;
        }
        let used = repr.segment_len();
        self.traffic.segs_out += 1;
        self.traffic.bytes_out += repr.payload.len() as u64;
        self.sent_ack();
        Some(used)
    }

    /// A segment carrying our ACK left: nothing more is owed for what arrived so far.
    fn sent_ack(&mut self) {
        self.dsack = None;
        self.ack_now = false;
        self.unacked_bytes = 0;
        self.last_ack_sent = self.rcv_nxt;
        self.set_timer(TimerKind::DelayedAck, None);
    }

    fn header(&self, now: Instant, seq: SeqNumber, flags: TcpFlags) -> TcpRepr<'static> {
        let mut options = TcpOptions::default();
        if self.ts_enabled {
            options.timestamp = Some((self.ts_now(now), self.ts_recent));
        }
        // RFC 2018 §4: every ACK carries SACK blocks while out-of-order data is held; three fit beside timestamps,
        // four without.
        if self.sack_enabled && self.state.is_synchronized() {
            let max = if self.ts_enabled { 3 } else { 4 };
            // A D-SACK block goes first, then the ordinary ones (RFC 2883 §4).
            if let Some((left, right)) = self.dsack {
                options.sack_blocks.push(left, right);
            }
            let held = self.recv_buf.sack_blocks(max - usize::from(options.sack_blocks.len));
            for &(left, right) in held.as_slice() {
                options.sack_blocks.push(left, right);
            }
        }
        TcpRepr {
            src_port: self.local.port(),
            dst_port: self.remote.port(),
            seq_number: seq,
            ack_number: SeqNumber(0),
            flags,
            window_len: 0,
            urgent_pointer: 0,
            options,
            payload: &[],
        }
    }

    fn rst_segment(&self, seq: SeqNumber) -> TcpRepr<'static> {
        TcpRepr {
            src_port: self.local.port(),
            dst_port: self.remote.port(),
            seq_number: seq,
            ack_number: SeqNumber(0),
            flags: TcpFlags::RST,
            window_len: 0,
            urgent_pointer: 0,
            options: TcpOptions::default(),
            payload: &[],
        }
    }

    /// The window field to send, with receiver SWS avoidance (RFC 9293 §3.8.6.2.2): the right edge moves only by a
    /// meaningful amount and never moves left.
    fn advertise_window(&mut self) -> u16 {
        let free = self.recv_buf.free();
        let current = self.rcv_adv - self.rcv_nxt;
        let grow = free >= current + self.window_step();
        let wnd = if grow { free } else { current };
        let wnd = wnd.min(65535usize << self.rcv_wscale);
        let unit = 1usize << self.rcv_wscale;
        // Growing rounds down. Keeping the old edge rounds up so that scaling does not shrink it, but never past
        // the free buffer rounded up to one unit: rounding up again on every ACK would otherwise carry the
        // promised edge further past the end of the buffer each time. Where the two conflict the edge retracts by
        // less than one unit, which RFC 7323 Appendix F accepts.
        let field = if grow { wnd / unit } else { wnd.div_ceil(unit).min(free.div_ceil(unit)) }.min(65535);
        let edge = self.rcv_nxt + field * unit;
        self.rcv_adv = self.rcv_adv.max(edge);
        field as u16
    }

    /// After the application read: if the window we could offer has at least doubled, say so now.
    fn after_read(&mut self) {
        if !self.state.is_synchronized() || self.peer_fin_received {
            return;
        }
        let current = self.rcv_adv - self.rcv_nxt;
        let free = self.recv_buf.free();
        if free >= 2 * current && free - current >= self.window_step() {
            self.ack_now = true;
        }
    }

    /// How much room must open before the right edge moves (receiver SWS avoidance, RFC 9293 §3.8.6.2.2):
    /// min(RCV.BUFF / 2, MSS).
    fn window_step(&self) -> usize {
        (self.recv_buf.capacity() / 2).min(self.rcv_mss()).max(1)
    }

    // ----- Helpers -----

    /// The sequence number for a segment without data (a bare ACK, an RST): one the peer will accept.
    ///
    /// Not SND.NXT, which goes back to SND.UNA after a timeout: an ACK numbered below the peer's RCV.NXT is
    /// unacceptable to it, and is answered with an ACK numbered below ours — an ACK war. SND.MAX, the highest number
    /// sent, unless that lies past the peer's window: against a closed window only RCV.NXT itself is acceptable
    /// (RFC 9293 §3.10.7.4), and a zero-window probe may have moved SND.MAX one byte past what the peer took. Then
    /// the window's right edge, SND.UNA + SND.WND (what Linux's tcp_acceptable_seq does).
    fn acceptable_seq(&self) -> SeqNumber {
        let window_end = self.snd_una + self.snd_wnd();
        if self.snd_max.diff(window_end) <= 0 {
            self.snd_max
        } else {
            window_end
        }
    }

    /// The sequence number of the first data byte in the send buffer.
    fn data_start(&self) -> SeqNumber {
        if self.syn_acked {
            self.snd_una
        } else {
            self.iss + 1
        }
    }

    fn ts_now(&self, now: Instant) -> u32 {
        (now.total_millis() as u32).wrapping_add(self.ts_offset)
    }

    /// TS.Recent is `tsval`, set at `now`.
    fn set_ts_recent(&mut self, tsval: u32, now: Instant) {
        self.ts_recent = tsval;
        self.ts_recent_secs = whole_secs(now);
    }

    /// Whether TS.Recent may still judge segments at `now`: it was set less than 24 days ago (RFC 7323 §5.5).
    fn ts_recent_valid(&self, now: Instant) -> bool {
        whole_secs(now).wrapping_sub(self.ts_recent_secs) < PAWS_IDLE_SECS
    }

    /// Option negotiation from the peer's SYN (RFC 9293 §3.7.1 MSS, RFC 7323 window scale and timestamps), at `now`.
    fn negotiate(&mut self, opts: &TcpOptions, now: Instant) {
        match (self.cfg.window_scaling, opts.window_scale) {
            (true, Some(shift)) => {
                self.snd_wscale = shift.min(MAX_WINDOW_SCALE);
                self.window_scale_agreed = true;
            }
            _ => {
                self.snd_wscale = 0;
                self.rcv_wscale = 0;
                self.window_scale_agreed = false;
            }
        }
        self.ts_enabled = self.cfg.timestamps && opts.timestamp.is_some();
        self.sack_enabled = self.cfg.sack && opts.sack_permitted;
        if let Some((tsval, _)) = opts.timestamp {
            self.set_ts_recent(tsval, now);
        }
        let peer_mss = opts.mss.map_or(DEFAULT_PEER_MSS, usize::from).max(MIN_PEER_MSS);
        let ts_len = if self.ts_enabled { TIMESTAMP_OPTION_LEN } else { 0 };
        self.smss = narrow(peer_mss.min(usize::from(self.cfg.mss)).saturating_sub(ts_len).max(1));
        self.rcv_mss = narrow(usize::from(self.cfg.mss).saturating_sub(ts_len).max(1));
        self.cc.set_mss(self.send_mss(), self.cfg.initial_window_segments);
    }

    fn rtt_sample_on_ack(&mut self, now: Instant, seg: &TcpRepr<'_>) {
        // The segment Karn's algorithm times is acknowledged: the timing ends whichever way the sample is taken.
        // (With timestamps it would otherwise stay set from the SYN on, and an ACK without them would measure the
        // whole connection's age.)
        let karn = self.rtt_timing().filter(|&(timed, _)| seg.ack_number.diff(timed) > 0);
        if karn.is_some() {
            self.set_rtt_timing(None);
        }
        if self.ts_enabled {
            if let Some((_, tsecr)) = seg.options.timestamp {
                // Karn's rule for timestamps: a receiver that got a duplicate echoes the TS.Recent of an earlier
                // transmission (RFC 7323 §4.3 leaves it alone), so an echo from before our last timeout would
                // measure the timeout, not the path.
                let spans_timeout = self.ts_at_rto.is_some_and(|t| (tsecr.wrapping_sub(t) as i32) < 0);
                if tsecr != 0 && !spans_timeout {
                    let ms = self.ts_now(now).wrapping_sub(tsecr);
                    if (ms as i32) >= 0 {
                        self.rtt.sample(Duration::from_millis(u64::from(ms)), self.cfg.rto_min, self.cfg.rto_max);
                        return;
                    }
                }
            }
        }
        if let Some((_, sent_at)) = karn {
            self.rtt.sample(now - sent_at, self.cfg.rto_min, self.cfg.rto_max);
        }
    }

    fn challenge_ack(&mut self, now: Instant) {
        if self.invalid_ack_allowed(now) {
            self.stats_mut().challenge_acks += 1;
            self.ack_now = true;
        }
    }

    /// The ACK owed for a segment that was not acceptable. One that carries data or a FIN is always answered (it
    /// cannot be part of an ACK loop, and its sender needs to hear); a bare one is answered at most once per
    /// `invalid_ack_interval`, so that a peer stuck in an ACK war, or a blind attacker, gets little back
    /// (Linux's tcp_invalid_ratelimit).
    fn ack_invalid(&mut self, now: Instant, seg: &TcpRepr<'_>) {
        let carries = !seg.flags.syn() && (!seg.payload.is_empty() || seg.flags.fin());
        if carries || self.invalid_ack_allowed(now) {
            self.ack_now = true;
        }
    }

    /// RFC 5961 §7's rate limit, per connection: true (and the time noted) when a bare invalid-segment ACK or a
    /// challenge ACK may go now.
    fn invalid_ack_allowed(&mut self, now: Instant) -> bool {
        let interval = self.cfg.invalid_ack_interval;
        let rare = self.rare_mut();
        match rare.last_invalid_ack {
            Some(t) if now - t < interval => {
                rare.stats.acks_rate_limited += 1;
                false
            }
            _ => {
                rare.last_invalid_ack = Some(now);
                true
            }
        }
    }

    fn enter_established(&mut self, now: Instant) {
        self.state = State::Established;
        self.events |= EV_CONNECTED;
        if self.send_buf.is_empty() {
            self.send_refused = false;
        }
        if self.fin_queued {
            self.state = State::FinWait1;
        }
        self.last_activity(now);
    }

    fn enter_time_wait(&mut self, now: Instant) {
        self.state = State::TimeWait;
        self.dup_acks_owed = 0;
        self.timers = [NO_DEADLINE; 5];
        self.set_timer(TimerKind::Close, Some(now + self.cfg.msl.saturating_mul(2)));
    }

    fn enter_closed(&mut self, reason: CloseReason) {
        self.state = State::Closed;
        self.timers = [NO_DEADLINE; 5];
        self.close_reason = Some(reason);
        self.events |= EV_CLOSED;
        self.ack_now = false;
        self.dup_acks_owed = 0;
        self.send_syn = false;
        self.fast_retransmit = false;
        self.probe = None;
    }

    /// Any segment from the peer, or the start of the connection: the keep-alive idle time starts again. Only
    /// where probing applies (ESTABLISHED, CLOSE_WAIT): elsewhere the timer could only fire to no effect, and
    /// TIME_WAIT must run nothing but its 2·MSL.
    fn last_activity(&mut self, now: Instant) {
        // FIN_WAIT_2's limit is an idle limit: a peer that still sends (data, probes, ACKs) keeps a half-closed
        // connection alive however long it lasts; one that went silent does not hold it forever.
        if self.state == State::FinWait2 {
            if let Some(t) = self.cfg.fin_wait_2_timeout {
                self.set_timer(TimerKind::Close, Some(now + t));
            }
        }
        if let Some(ka) = self.cfg.keepalive {
            if matches!(self.state, State::Established | State::CloseWait) {
                self.probes = 0;
                self.set_timer(TimerKind::Keepalive, Some(now + at_least_a_tick(ka.idle)));
            }
        }
    }

    /// Karn's algorithm without timestamps: the sequence number being timed and when it was sent.
    fn rtt_timing(&self) -> Option<(SeqNumber, Instant)> {
        (self.rtt_sent_at != NO_DEADLINE).then_some((self.rtt_timed, self.rtt_sent_at))
    }

    /// Starts timing (a segment sent at the end of time is not timed) or stops it.
    fn set_rtt_timing(&mut self, timing: Option<(SeqNumber, Instant)>) {
        (self.rtt_timed, self.rtt_sent_at) = timing.unwrap_or((self.rtt_timed, NO_DEADLINE));
    }

    /// SND.WND's high-water mark: the largest window the peer offered.
    fn max_snd_wnd(&self) -> usize {
        self.max_snd_wnd as usize
    }

    /// Largest payload seen in one segment.
    fn rcv_mss(&self) -> usize {
        self.rcv_mss as usize
    }

    /// The rare counters, allocated on the first count.
    fn stats_mut(&mut self) -> &mut ConnectionStats {
        &mut self.rare_mut().stats
    }

    /// The rare parts, allocated on first need.
    fn rare_mut(&mut self) -> &mut Rare {
        self.rare.get_or_insert_with(Box::default)
    }

    fn set_timer(&mut self, kind: TimerKind, deadline: Option<Instant>) {
        // A deadline at the end of time (a saturated sum) runs a microsecond earlier, to stay told from none.
        self.timers[kind as usize] = deadline.map_or(NO_DEADLINE, |t| t.min(LAST_DEADLINE));
    }
}
