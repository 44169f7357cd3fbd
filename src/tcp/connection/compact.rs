//! The compact record of a quiescent connection ("hibernation"): what an idle connection can differ in, packed,
//! so that an owner holding many idle connections keeps each in far fewer bytes than a [`Connection`].
//!
//! A connection is quiescent when nothing can happen to it but a segment from the peer, an application call or its
//! one timer: ESTABLISHED, CLOSE_WAIT, FIN_WAIT_2 or TIME_WAIT, everything sent acknowledged, no buffer allocated,
//! no SACK scoreboard, nothing owed to the peer or the application, and no timer running but keep-alive and the
//! close timer (of FIN_WAIT_2 and TIME_WAIT). Everything else a [`Connection`] holds is then at the value
//! [`Connection::new`] gave it, or follows from what the record keeps; [`Connection::from_compact`] rebuilds the
//! connection exactly (its `Debug` form is the same). A value that does not fit its narrow field here makes the
//! connection not compactable rather than be rounded.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::Arc;

use super::{Connection, ConnectionStats, Rare, Traffic, NO_DEADLINE};
use crate::tcp::buffer::{RecvBuffer, SendBuffer};
use crate::tcp::congestion::{Congestion, CubicCurve};
use crate::tcp::rtt::RttEstimator;
use crate::tcp::{Algorithm, Config, State, TimerKind};
use crate::time::Instant;
use crate::wire::SeqNumber;

const PASSIVE: u16 = 1;
const NODELAY: u16 = 1 << 1;
const WINDOW_SCALE_AGREED: u16 = 1 << 2;
const SYN_ACKED: u16 = 1 << 3;
const SACK_ENABLED: u16 = 1 << 4;
const TS_ENABLED: u16 = 1 << 5;
const FIN_QUEUED: u16 = 1 << 6;
const FIN_ACKED: u16 = 1 << 7;
const PEER_FIN_RECEIVED: u16 = 1 << 8;
const TLP_SENT: u16 = 1 << 9;
const SEND_REFUSED: u16 = 1 << 10;
const CUBIC: u16 = 1 << 11;
/// `ts_at_rto` is `Some`.
const TS_AT_RTO: u16 = 1 << 12;
/// `peer_fin` is `Some`.
const PEER_FIN: u16 = 1 << 13;

/// The estimator a record with these values rebuilds: its RTO worked out from them and the settings.
fn rebuilt_rtt(cfg: &Config, srtt: u64, rttvar: u64, backoff: u32) -> RttEstimator {
    RttEstimator::from_samples(srtt, rttvar, backoff, cfg.rto_initial, cfg.rto_min, cfg.rto_max)
}

/// The boxed parts a connection may have made — its rare counters, CUBIC's curve — behind one pointer in its
/// record: most connections have neither.
#[derive(Debug, Clone)]
struct Extra {
    rare: Option<Box<Rare>>,
    cubic: Option<Box<CubicCurve>>,
}

/// A quiescent [`Connection`] (see [`Connection::compactable`]), packed. Made by [`Connection::compact`] or
/// [`Connection::into_compact`], turned back by [`Connection::from_compact`].
#[derive(Debug, Clone)]
pub struct Compact {
    cfg: Arc<Config>,
    extra: Option<Box<Extra>>,
    /// Payload bytes in and out.
    bytes: [u64; 2],
    /// Segments in and out (a connection past 2³² of either is not compacted).
    segs: [u32; 2],
    /// The RTT estimator's SRTT and RTTVAR in nanoseconds, exact (its RTO follows from them and the settings); a
    /// connection whose either is 2³² ns (4.3 s) or more is not compacted.
    rtt_nanos: [u32; 2],
    /// The deadlines of the two timers that may run, keep-alive's and the close timer's (FIN_WAIT_2, TIME_WAIT),
    /// [`NO_DEADLINE`] where one does not. (Keep-alive's may outlive ESTABLISHED: it fires to no effect.)
    deadlines: [Instant; 2],
    local_ip: u32,
    remote_ip: u32,
    iss: u32,
    /// SND.UNA, which is SND.NXT and SND.MAX too.
    snd_una: u32,
    snd_sml: u32,
    snd_wnd: u32,
    snd_wl1: u32,
    snd_wl2: u32,
    max_snd_wnd: u32,
    irs: u32,
    /// RCV.NXT, which is also the last ACK sent.
    rcv_nxt: u32,
    rcv_adv: u32,
    ts_offset: u32,
    ts_recent: u32,
    ts_recent_secs: u32,
    ts_at_rto: u32,
    peer_fin: u32,
    rtt_timed: u32,
    cwnd: u32,
    ssthresh: u32,
    recover: u32,
    avoidance_acked: u32,
    local_port: u16,
    remote_port: u16,
    smss: u16,
    rcv_mss: u16,
    flags: u16,
    state: u8,
    snd_wscale: u8,
    rcv_wscale: u8,
    reordering: u8,
    probes: u8,
    backoff: u8,
}

/// The states a connection may be compacted in, by the index `Compact::state` keeps.
const STATES: [State; 4] = [State::Established, State::CloseWait, State::FinWait2, State::TimeWait];

impl Compact {
    /// The connection's counters, as [`Connection::stats`] gives them.
    pub fn stats(&self) -> ConnectionStats {
        let ([bytes_in, bytes_out], [segs_in, segs_out]) = (self.bytes, self.segs);
        let traffic = Traffic { segs_in: segs_in.into(), segs_out: segs_out.into(), bytes_in, bytes_out };
        traffic.with(self.extra.as_ref().and_then(|e| e.rare.as_deref()))
    }

    /// The connection's state.
    pub fn state(&self) -> State {
        STATES[usize::from(self.state)]
    }

    /// Our end.
    pub fn local(&self) -> SocketAddrV4 {
        SocketAddrV4::new(Ipv4Addr::from(self.local_ip), self.local_port)
    }

    /// The peer's end.
    pub fn remote(&self) -> SocketAddrV4 {
        SocketAddrV4::new(Ipv4Addr::from(self.remote_ip), self.remote_port)
    }

    /// True when a listener opened the connection.
    pub fn is_passive(&self) -> bool {
        self.flags & PASSIVE != 0
    }

    /// The connection's earliest deadline, as [`Connection::poll_at`] would say.
    pub fn poll_at(&self) -> Option<Instant> {
        self.deadlines.iter().copied().min().filter(|&t| t != NO_DEADLINE)
    }
}

impl Connection {
    /// True when the connection is quiescent and every value it holds fits a [`Compact`] record: ESTABLISHED,
    /// CLOSE_WAIT, FIN_WAIT_2 or TIME_WAIT, everything sent acknowledged, no buffer allocated, no SACK scoreboard,
    /// nothing owed to the peer or the application, no timer running but keep-alive and the close timer.
    pub fn compactable(&self) -> bool {
        let cfg = &self.cfg;
        let state_ok = STATES.contains(&self.state);
        let timers_ok =
            [TimerKind::Retransmit, TimerKind::Persist, TimerKind::DelayedAck].iter().all(|&kind| !self.runs(kind));
        let flight_ok = self.snd_una == self.snd_nxt && self.snd_nxt == self.snd_max;
        let buffers_ok = self.send_buf.is_pristine(cfg.send_buffer_bytes.max(1))
            && self.recv_buf.is_pristine(cfg.recv_buffer_bytes.max(1));
        let nothing_owed = !self.ack_now
            && self.dup_acks_owed == 0
            && self.unacked_bytes == 0
            && !self.send_syn
            && !self.fast_retransmit
            && !self.tlp_armed
            && !self.tlp_owed
            && self.probe.is_none()
            && !self.override_sws
            && self.pending_rst.is_none()
            && self.dsack.is_none()
            && self.events == 0
            && self.close_reason.is_none()
            && self.last_ack_sent == self.rcv_nxt;
        let fits = self.traffic.segs_in <= u64::from(u32::MAX)
            && self.traffic.segs_out <= u64::from(u32::MAX)
            && self.smss <= u32::from(u16::MAX)
            && self.rcv_mss <= u32::from(u16::MAX)
            && self.probes <= u32::from(u8::MAX)
            && self.rtt.backoff() <= u32::from(u8::MAX)
            && {
                let (srtt, rttvar, _, _) = self.rtt.parts();
                srtt <= u64::from(u32::MAX) && rttvar <= u64::from(u32::MAX)
            }
            && self.cc.is_quiescent(self.smss)
            // No timeout since the last ACK of new data (which is all of it): the record keeps no count.
            && self.retries == 0
            // Nothing is being timed (all sent is acknowledged, so only an ACK lost on the way could leave it), and
            // the RTO is what SRTT, RTTVAR and the settings give: the record keeps neither.
            && self.rtt_sent_at == NO_DEADLINE
            && {
                let (srtt, rttvar, _, backoff) = self.rtt.parts();
                rebuilt_rtt(&self.cfg, srtt, rttvar, backoff).parts() == self.rtt.parts()
            };
        state_ok && timers_ok && flight_ok && buffers_ok && nothing_owed && fits && self.scoreboard.is_none()
    }

    /// The compact record of this connection when it is [`Connection::compactable`]; the boxed rare parts (its
    /// rare counters, CUBIC's curve) are copied. See [`Connection::into_compact`] to move them instead.
    pub fn compact(&self) -> Option<Compact> {
        self.compactable().then(|| self.pack(self.rare.clone(), self.cc.cubic_curve().map(|c| Box::new(*c))))
    }

    /// The compact record of this connection, moving its boxed parts into it (one allocation to hold them, when it
    /// has any); the connection itself back when it is not [`Connection::compactable`].
    // Handing the connection back by value moves it, as taking it did.
    #[allow(clippy::result_large_err)]
    pub fn into_compact(mut self) -> Result<Compact, Connection> {
        self.take_compact().ok_or(self)
    }

    /// The compact record of this connection when it is [`Connection::compactable`], its boxed parts moved into
    /// it: what is left here is a husk, without its rare counters, only to be dropped or overwritten (an owner
    /// that keeps the allocation holding a connection for reuse). Does nothing and returns `None` otherwise.
    pub fn take_compact(&mut self) -> Option<Compact> {
        if !self.compactable() {
            return None;
        }
        let (rare, cubic) = (self.rare.take(), self.cc.take_cubic_curve());
        Some(self.pack(rare, cubic))
    }

    fn runs(&self, kind: TimerKind) -> bool {
        self.timers[kind as usize] != NO_DEADLINE
    }

    /// Packs a compactable connection.
    fn pack(&self, rare: Option<Box<Rare>>, cubic: Option<Box<CubicCurve>>) -> Compact {
        let bit = |on: bool, flag: u16| if on { flag } else { 0 };
        let flags = bit(self.passive, PASSIVE)
            | bit(self.nodelay, NODELAY)
            | bit(self.window_scale_agreed, WINDOW_SCALE_AGREED)
            | bit(self.syn_acked, SYN_ACKED)
            | bit(self.sack_enabled, SACK_ENABLED)
            | bit(self.ts_enabled, TS_ENABLED)
            | bit(self.fin_queued, FIN_QUEUED)
            | bit(self.fin_acked, FIN_ACKED)
            | bit(self.peer_fin_received, PEER_FIN_RECEIVED)
            | bit(self.tlp_sent, TLP_SENT)
            | bit(self.send_refused, SEND_REFUSED)
            | bit(self.cc.algorithm() == Algorithm::Cubic, CUBIC)
            | bit(self.ts_at_rto.is_some(), TS_AT_RTO)
            | bit(self.peer_fin.is_some(), PEER_FIN);
        let (srtt, rttvar, _, backoff) = self.rtt.parts();
        let (cwnd, ssthresh, recover, avoidance_acked) = self.cc.parts();
        let extra = if rare.is_some() || cubic.is_some() { Some(Box::new(Extra { rare, cubic })) } else { None };
        Compact {
            cfg: Arc::clone(&self.cfg),
            extra,
            bytes: [self.traffic.bytes_in, self.traffic.bytes_out],
            segs: [self.traffic.segs_in as u32, self.traffic.segs_out as u32],
            // Checked by `compactable`.
            rtt_nanos: [srtt as u32, rttvar as u32],
            deadlines: [self.timers[TimerKind::Keepalive as usize], self.timers[TimerKind::Close as usize]],
            local_ip: u32::from(*self.local.ip()),
            remote_ip: u32::from(*self.remote.ip()),
            iss: self.iss.0,
            snd_una: self.snd_una.0,
            snd_sml: self.snd_sml.0,
            snd_wnd: self.snd_wnd,
            snd_wl1: self.snd_wl1.0,
            snd_wl2: self.snd_wl2.0,
            max_snd_wnd: self.max_snd_wnd,
            irs: self.irs.0,
            rcv_nxt: self.rcv_nxt.0,
            rcv_adv: self.rcv_adv.0,
            ts_offset: self.ts_offset,
            ts_recent: self.ts_recent,
            ts_recent_secs: self.ts_recent_secs,
            ts_at_rto: self.ts_at_rto.unwrap_or(0),
            peer_fin: self.peer_fin.map_or(0, |s| s.0),
            rtt_timed: self.rtt_timed.0,
            cwnd,
            ssthresh,
            recover: recover.0,
            avoidance_acked,
            local_port: self.local.port(),
            remote_port: self.remote.port(),
            // Checked by `compactable`.
            smss: self.smss as u16,
            rcv_mss: self.rcv_mss as u16,
            flags,
            state: STATES.iter().position(|&s| s == self.state).unwrap_or(0) as u8,
            snd_wscale: self.snd_wscale,
            rcv_wscale: self.rcv_wscale,
            reordering: self.reordering,
            probes: self.probes as u8,
            backoff: backoff as u8,
        }
    }

    /// The connection a [`Compact`] record stands for, exactly as it was compacted.
    pub fn from_compact(c: Compact) -> Connection {
        let flag = |f: u16| c.flags & f != 0;
        let cfg = c.cfg;
        let algorithm = if flag(CUBIC) { Algorithm::Cubic } else { Algorithm::NewReno };
        let mut timers = [NO_DEADLINE; 5];
        [timers[TimerKind::Keepalive as usize], timers[TimerKind::Close as usize]] = c.deadlines;
        let snd_una = SeqNumber(c.snd_una);
        let [srtt, rttvar] = c.rtt_nanos.map(u64::from);
        let rtt = rebuilt_rtt(&cfg, srtt, rttvar, u32::from(c.backoff));
        let (rare, cubic) = c.extra.map_or((None, None), |e| (e.rare, e.cubic));
        Connection {
            nodelay: flag(NODELAY),
            state: STATES[usize::from(c.state)],
            local: SocketAddrV4::new(Ipv4Addr::from(c.local_ip), c.local_port),
            remote: SocketAddrV4::new(Ipv4Addr::from(c.remote_ip), c.remote_port),
            passive: flag(PASSIVE),
            iss: SeqNumber(c.iss),
            snd_una,
            snd_nxt: snd_una,
            snd_max: snd_una,
            snd_sml: SeqNumber(c.snd_sml),
            snd_wnd: c.snd_wnd,
            snd_wl1: SeqNumber(c.snd_wl1),
            snd_wl2: SeqNumber(c.snd_wl2),
            snd_wscale: c.snd_wscale,
            window_scale_agreed: flag(WINDOW_SCALE_AGREED),
            max_snd_wnd: c.max_snd_wnd,
            smss: u32::from(c.smss),
            syn_acked: flag(SYN_ACKED),
            irs: SeqNumber(c.irs),
            rcv_nxt: SeqNumber(c.rcv_nxt),
            rcv_adv: SeqNumber(c.rcv_adv),
            rcv_wscale: c.rcv_wscale,
            rcv_mss: u32::from(c.rcv_mss),
            sack_enabled: flag(SACK_ENABLED),
            scoreboard: None,
            reordering: c.reordering,
            dsack: None,
            tlp_armed: false,
            tlp_owed: false,
            tlp_sent: flag(TLP_SENT),
            ts_enabled: flag(TS_ENABLED),
            ts_offset: c.ts_offset,
            ts_recent: c.ts_recent,
            ts_recent_secs: c.ts_recent_secs,
            ts_at_rto: flag(TS_AT_RTO).then_some(c.ts_at_rto),
            last_ack_sent: SeqNumber(c.rcv_nxt),
            send_buf: SendBuffer::new(cfg.send_buffer_bytes.max(1)),
            recv_buf: RecvBuffer::new(cfg.recv_buffer_bytes.max(1)),
            fin_queued: flag(FIN_QUEUED),
            fin_acked: flag(FIN_ACKED),
            peer_fin: flag(PEER_FIN).then_some(SeqNumber(c.peer_fin)),
            peer_fin_received: flag(PEER_FIN_RECEIVED),
            rtt,
            rtt_timed: SeqNumber(c.rtt_timed),
            rtt_sent_at: NO_DEADLINE,
            cc: Congestion::from_parts(
                algorithm,
                cubic,
                (c.cwnd, c.ssthresh, SeqNumber(c.recover), c.avoidance_acked),
                u32::from(c.smss),
            ),
            retries: 0,
            probes: u32::from(c.probes),
            timers,
            ack_now: false,
            dup_acks_owed: 0,
            unacked_bytes: 0,
            send_syn: false,
            fast_retransmit: false,
            probe: None,
            override_sws: false,
            pending_rst: None,
            send_refused: flag(SEND_REFUSED),
            events: 0,
            close_reason: None,
            traffic: Traffic {
                segs_in: u64::from(c.segs[0]),
                segs_out: u64::from(c.segs[1]),
                bytes_in: c.bytes[0],
                bytes_out: c.bytes[1],
            },
            rare,
            cfg,
        }
    }
}
