//! The TCP connection state machine of RFC 9293, sans-IO.
//!
//! A [`Connection`] is one transmission control block. It is driven by three inputs — a received segment
//! ([`Connection::process`]), a timer that came due ([`Connection::on_timer`]) and the application's calls
//! (`send`, `recv`, `close`, `abort`) — and produces two outputs: segments to send ([`Connection::poll_transmit`])
//! and events for the application ([`Connection::poll_event`]). It never reads a clock, makes a syscall or draws a
//! random number: `now` is a parameter and the ISN key is handed in.
//!
//! What happens to segments that find no connection — the LISTEN and CLOSED rules of RFC 9293 §3.10.7.1–2 — is
//! decided by [`listen_input`] and [`reset_for`], which the engine calls before a connection exists.

mod buffer;
mod congestion;
mod connection;
mod isn;
mod rtt;
mod sack;
pub mod syncookie;
#[cfg(test)]
mod tests;

pub use buffer::{Assembler, BufferPool, RecvBuffer, SendBuffer, MAX_BUFFER_BYTES, MAX_OOO_RANGES};
pub use congestion::{AckAction, Algorithm, Congestion, DUPACK_THRESHOLD};
pub use connection::{Compact, Connection, ConnectionStats};
pub use isn::IsnGenerator;
pub use rtt::RttEstimator;
pub use sack::{SackReporter, SackUpdate, Scoreboard, DUP_THRESH, MAX_RETRANSMITTED_RANGES, MAX_SACKED_RANGES};
pub use syncookie::{CookieOptions, SynCookies};

use core::fmt;
use core::time::Duration;

use crate::wire::{SeqNumber, TcpFlags, TcpOptions, TcpRepr};

/// The connection states of RFC 9293 §3.3.2, named as there and as `netstat` prints them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum State {
    /// No connection.
    Closed,
    /// Waiting for a connection request.
    Listen,
    /// SYN sent, waiting for a matching SYN.
    SynSent,
    /// SYN received and answered, waiting for the ACK of our SYN.
    SynReceived,
    /// Open: data flows both ways.
    Established,
    /// We closed; our FIN is not yet acknowledged.
    FinWait1,
    /// We closed, our FIN is acknowledged; waiting for the peer's FIN.
    FinWait2,
    /// Both closed at once; waiting for the ACK of our FIN.
    Closing,
    /// Both closed; waiting 2·MSL so that delayed segments die out.
    TimeWait,
    /// The peer closed; waiting for our application to close.
    CloseWait,
    /// The peer closed, then we did; waiting for the ACK of our FIN.
    LastAck,
}

impl State {
    /// All eleven states, in RFC order.
    pub const ALL: [State; 11] = [
        State::Closed,
        State::Listen,
        State::SynSent,
        State::SynReceived,
        State::Established,
        State::FinWait1,
        State::FinWait2,
        State::Closing,
        State::TimeWait,
        State::CloseWait,
        State::LastAck,
    ];

    /// The name as RFC 9293 and `netstat` write it: `SYN_SENT`, `TIME_WAIT`...
    pub fn name(self) -> &'static str {
        match self {
            State::Closed => "CLOSED",
            State::Listen => "LISTEN",
            State::SynSent => "SYN_SENT",
            State::SynReceived => "SYN_RECEIVED",
            State::Established => "ESTABLISHED",
            State::FinWait1 => "FIN_WAIT_1",
            State::FinWait2 => "FIN_WAIT_2",
            State::Closing => "CLOSING",
            State::TimeWait => "TIME_WAIT",
            State::CloseWait => "CLOSE_WAIT",
            State::LastAck => "LAST_ACK",
        }
    }

    /// The synchronized states (RFC 9293 §3.5.2): both ISNs are known.
    pub fn is_synchronized(self) -> bool {
        !matches!(self, State::Closed | State::Listen | State::SynSent | State::SynReceived)
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The timers a connection runs. The engine keeps at most one timer-wheel entry per kind per connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TimerKind {
    /// Retransmission of SYN, SYN-ACK, data or FIN (RFC 6298).
    Retransmit,
    /// Zero-window probing (RFC 9293 §3.8.6.1).
    Persist,
    /// The delayed ACK (RFC 9293 §3.8.6.3, RFC 5681 §4.2).
    DelayedAck,
    /// Keep-alive probing (RFC 1122 §4.2.3.6).
    Keepalive,
    /// TIME_WAIT's 2·MSL, and the FIN_WAIT_2 limit: when it fires the connection is gone.
    Close,
}

impl TimerKind {
    /// Every kind, in a fixed order (the index of each is `kind as usize`).
    pub const ALL: [TimerKind; 5] =
        [TimerKind::Retransmit, TimerKind::Persist, TimerKind::DelayedAck, TimerKind::Keepalive, TimerKind::Close];
}

/// Why a connection reached CLOSED.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CloseReason {
    /// The orderly close finished (after TIME_WAIT, or LAST_ACK's FIN acknowledged).
    Normal,
    /// The peer sent an acceptable RST in a synchronized state.
    Reset,
    /// The peer answered our SYN with RST: connection refused.
    Refused,
    /// Retransmissions or keep-alive probes went unanswered.
    TimedOut,
    /// Our application aborted it (we sent RST).
    Aborted,
    /// A passively opened connection was reset in SYN_RECEIVED; the listener goes on listening.
    ReturnedToListen,
}

/// Something the application should know. Several may be pending; [`Connection::poll_event`] yields each once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Event {
    /// The connection reached ESTABLISHED.
    Connected,
    /// New in-order data can be read.
    Readable,
    /// Room opened in the send buffer after it had refused bytes or been filled.
    Writable,
    /// The peer's FIN arrived: after the buffered data, the stream ends.
    PeerClosed,
    /// The connection reached CLOSED; it may be dropped.
    Closed(CloseReason),
}

/// Keep-alive settings (RFC 1122 §4.2.3.6). Off by default, as RFC 1122 requires; on per connection or for all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Keepalive {
    /// Idle time before the first probe (default 7200 s).
    pub idle: Duration,
    /// Time between unanswered probes (default 75 s).
    pub interval: Duration,
    /// Unanswered probes after which the connection is dropped (default 9).
    pub probes: u32,
}

impl Default for Keepalive {
    fn default() -> Keepalive {
        Keepalive { idle: Duration::from_secs(7200), interval: Duration::from_secs(75), probes: 9 }
    }
}

/// Per-connection settings, fixed when the connection is made. Connections made with the same settings share one
/// copy (an `Arc`, see [`Connection::connect`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Config {
    /// The MSS we announce: the most payload we accept in one segment (default 1460, for a 1500-byte MTU).
    pub mss: u16,
    /// Send buffer limit in bytes (default 256 KiB; at most [`MAX_BUFFER_BYTES`]).
    pub send_buffer_bytes: usize,
    /// Receive buffer limit in bytes; the receive window never exceeds it (default 256 KiB; at most
    /// [`MAX_BUFFER_BYTES`]).
    pub recv_buffer_bytes: usize,
    /// Offer window scaling (RFC 7323 §2); default on.
    pub window_scaling: bool,
    /// Offer timestamps (RFC 7323 §3) and so PAWS; default on.
    pub timestamps: bool,
    /// Offer selective acknowledgments (RFC 2018) and, when the peer agrees, recover from loss with them
    /// (RFC 6675); default on.
    pub sack: bool,
    /// First RTO before any sample (RFC 6298: 1 s).
    pub rto_initial: Duration,
    /// Lower bound of the RTO (default 200 ms, as Linux; RFC 6298 suggests 1 s).
    pub rto_min: Duration,
    /// Upper bound of the RTO (default 60 s).
    pub rto_max: Duration,
    /// SYN (or SYN-ACK) retransmissions before giving up (default 6, as Linux).
    pub syn_retries: u32,
    /// Data retransmissions of one segment before giving up (default 15, as Linux's tcp_retries2).
    pub data_retries: u32,
    /// The delayed-ACK timeout (default 40 ms; RFC 9293 requires under 0.5 s).
    pub delayed_ack: Duration,
    /// Nagle's algorithm (RFC 896); default on. Off is TCP_NODELAY.
    pub nagle: bool,
    /// Initial congestion window in segments (RFC 6928: 10).
    pub initial_window_segments: usize,
    /// Congestion control: NewReno (default) or CUBIC.
    pub congestion: Algorithm,
    /// The least time between two ACKs sent for invalid bare segments or as challenges (RFC 5961 §7; default
    /// 500 ms, Linux's tcp_invalid_ratelimit). Segments that carry data are always acknowledged.
    pub invalid_ack_interval: Duration,
    /// Keep-alive, when wanted.
    pub keepalive: Option<Keepalive>,
    /// The maximum segment lifetime; TIME_WAIT lasts twice this (default 30 s).
    pub msl: Duration,
    /// How long FIN_WAIT_2 may go without hearing from the peer before the connection is dropped (default 60 s,
    /// as Linux's tcp_fin_timeout); every segment from the peer restarts it. `None` waits forever.
    pub fin_wait_2_timeout: Option<Duration>,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            mss: 1460,
            send_buffer_bytes: 256 * 1024,
            recv_buffer_bytes: 256 * 1024,
            window_scaling: true,
            timestamps: true,
            sack: true,
            rto_initial: Duration::from_secs(1),
            rto_min: Duration::from_millis(200),
            rto_max: Duration::from_secs(60),
            syn_retries: 6,
            data_retries: 15,
            delayed_ack: Duration::from_millis(40),
            nagle: true,
            initial_window_segments: 10,
            congestion: Algorithm::NewReno,
            invalid_ack_interval: Duration::from_millis(500),
            keepalive: None,
            msl: Duration::from_secs(30),
            fin_wait_2_timeout: Some(Duration::from_secs(60)),
        }
    }
}

/// What to do with a segment addressed to a listening port that matches no connection (RFC 9293 §3.10.7.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListenAction {
    /// Drop it silently (an RST, or a segment with neither SYN nor ACK).
    Drop,
    /// Answer with this RST (an ACK to a listener is from an old or forged connection).
    Reset(TcpRepr<'static>),
    /// A SYN: make a connection with [`Connection::accept`].
    Accept,
}

/// The LISTEN state's rules for a segment that matches no connection.
pub fn listen_input(seg: &TcpRepr<'_>) -> ListenAction {
    if seg.flags.rst() {
        return ListenAction::Drop;
    }
    if seg.flags.ack() {
        return match reset_for(seg) {
            Some(rst) => ListenAction::Reset(rst),
            None => ListenAction::Drop,
        };
    }
    if seg.flags.syn() && !seg.flags.fin() {
        return ListenAction::Accept;
    }
    ListenAction::Drop
}

/// The RST that answers a segment arriving for no connection (RFC 9293 §3.10.7.1): `<SEQ=SEG.ACK><CTL=RST>` if
/// it carried an ACK, otherwise `<SEQ=0><ACK=SEG.SEQ+SEG.LEN><CTL=RST,ACK>`. `None` for an incoming RST, which is
/// never answered.
pub fn reset_for(seg: &TcpRepr<'_>) -> Option<TcpRepr<'static>> {
    if seg.flags.rst() {
        return None;
    }
    let (seq_number, ack_number, flags) = if seg.flags.ack() {
        (seg.ack_number, SeqNumber(0), TcpFlags::RST)
    } else {
        (SeqNumber(0), seg.seq_number + seg.segment_len(), TcpFlags::RST | TcpFlags::ACK)
    };
    Some(TcpRepr {
        src_port: seg.dst_port,
        dst_port: seg.src_port,
        seq_number,
        ack_number,
        flags,
        window_len: 0,
        urgent_pointer: 0,
        options: TcpOptions::default(),
        payload: &[],
    })
}
