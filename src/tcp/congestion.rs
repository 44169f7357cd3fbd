//! Congestion control: slow start and congestion avoidance (RFC 5681) with NewReno fast recovery (RFC 6582),
//! and CUBIC (RFC 9438) as the other choice of window growth.
//!
//! The connection tells this module what happened (bytes newly acknowledged, duplicate ACKs, a timeout); the
//! module keeps `cwnd`, `ssthresh` and the recovery point and says when to retransmit. Both algorithms share the
//! loss recovery (fast retransmit, NewReno's partial and full ACKs); they differ in how much the window shrinks on
//! loss (β = 0.5 for NewReno, 0.7 for CUBIC) and how it grows in congestion avoidance.

use core::time::Duration;

use crate::time::Instant;
use crate::wire::SeqNumber;

/// Which congestion control a connection uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Algorithm {
    /// RFC 5681 growth, halving on loss.
    #[default]
    NewReno,
    /// RFC 9438: cubic growth around the window of the last loss, β = 0.7, with the Reno-friendly region.
    Cubic,
}

/// RFC 9438 §4.6: β_cubic.
const CUBIC_BETA: f64 = 0.7;
/// RFC 9438 §5: C.
const CUBIC_C: f64 = 0.4;

/// CUBIC's curve, as a compact record holds it.
pub(crate) type CubicCurve = Cubic;

/// CUBIC's state (RFC 9438 §4), windows in segments, time in seconds.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Cubic {
    /// W_max: the window just before the last reduction.
    w_max: f64,
    /// K: the time from the epoch's start until the window is back at W_max.
    k: f64,
    /// When the current congestion-avoidance epoch began.
    epoch_start: Option<Instant>,
    /// The window at the start of the epoch (the cubic curve's origin when the window is already past W_max).
    origin: f64,
    /// W_est: the window standard Reno would have (RFC 9438 §4.3).
    w_est: f64,
}

impl Cubic {
    /// A congestion event with a window of `cwnd` segments: remember W_max, with fast convergence (§4.7).
    fn on_loss(&mut self, cwnd: f64) {
        self.w_max = if cwnd < self.w_max { cwnd * (1.0 + CUBIC_BETA) / 2.0 } else { cwnd };
        self.epoch_start = None;
    }

    /// The window, in segments, for an ACK of `acked` segments at `now` with a window of `cwnd`; `rtt` is the
    /// smoothed round-trip time.
    fn grow(&mut self, now: Instant, rtt: Duration, cwnd: f64, acked: f64) -> f64 {
        let start = *self.epoch_start.get_or_insert_with(|| {
            if cwnd < self.w_max {
                self.k = ((self.w_max - cwnd) / CUBIC_C).cbrt();
                self.origin = self.w_max;
            } else {
                self.k = 0.0;
                self.origin = cwnd;
            }
            self.w_est = cwnd;
            now
        });
        let t = (now - start).as_secs_f64();
        // W_cubic(t + RTT), the target one round trip ahead (§4.2), kept within [cwnd, 1.5·cwnd].
        let target = (self.origin + CUBIC_C * (t + rtt.as_secs_f64() - self.k).powi(3)).clamp(cwnd, 1.5 * cwnd);
        // The Reno-friendly estimate grows by α per window of ACKed segments (§4.3).
        let alpha = 3.0 * (1.0 - CUBIC_BETA) / (1.0 + CUBIC_BETA);
        self.w_est += alpha * acked / cwnd;
        let w_cubic_now = self.origin + CUBIC_C * (t - self.k).powi(3);
        if w_cubic_now < self.w_est {
            self.w_est.max(cwnd)
        } else {
            cwnd + (target - cwnd) / cwnd * acked
        }
    }
}

/// What the connection should do after an ACK was fed in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AckAction {
    /// Nothing beyond sending new data as the window allows.
    None,
    /// Retransmit the first unacknowledged segment now (third duplicate ACK, or a partial ACK in recovery).
    Retransmit,
}

/// Congestion control state of one connection.
#[derive(Debug, Clone)]
pub struct Congestion {
    algorithm: Algorithm,
    /// CUBIC's curve: allocated when a CUBIC connection first grows in congestion avoidance or first loses, so that
    /// NewReno connections and those still in slow start carry none.
    cubic: Option<Box<Cubic>>,
    // Byte counts in u32s (a window is at most 1 GiB, RFC 7323 §2.3), read and written as usize through
    // `window()`, `set_cwnd()`... which saturate: the struct is in every connection.
    cwnd: u32,
    /// [`INFINITE_SSTHRESH`] until the first congestion event.
    ssthresh: u32,
    smss: u32,
    dupacks: u32,
    /// The highest sequence number sent when recovery began (RFC 6582 `recover`); outside recovery, once the ACKs
    /// pass it, one below SND.UNA.
    recover: SeqNumber,
    in_recovery: bool,
    /// The recovery is RFC 6675's: the connection sends by `pipe` and its scoreboard; ACKs neither inflate nor
    /// deflate the window.
    sack_recovery: bool,
    /// Bytes acknowledged in congestion avoidance not yet turned into window growth.
    avoidance_acked: u32,
}

/// The stored ssthresh before any congestion event, read as usize::MAX / 2: "arbitrarily high" (RFC 5681 §3.1).
const INFINITE_SSTHRESH: u32 = u32::MAX;

/// `n` in a u32 field, saturating.
fn narrow(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// Duplicate ACKs that trigger fast retransmit (RFC 5681 §3.2).
pub const DUPACK_THRESHOLD: u32 = 3;

impl Congestion {
    /// NewReno with the initial window of RFC 6928: min(10·SMSS, max(2·SMSS, 14600)), `initial_segments`
    /// replacing 10.
    pub fn new(smss: usize, initial_segments: usize, iss: SeqNumber) -> Congestion {
        Congestion::with_algorithm(Algorithm::NewReno, smss, initial_segments, iss)
    }

    /// As [`Congestion::new`], with the algorithm chosen.
    pub fn with_algorithm(algorithm: Algorithm, smss: usize, initial_segments: usize, iss: SeqNumber) -> Congestion {
        let smss = smss.max(1);
        let cwnd = (initial_segments * smss).min((2 * smss).max(14600)).max(smss);
        Congestion {
            algorithm,
            cubic: None,
            cwnd: narrow(cwnd),
            ssthresh: INFINITE_SSTHRESH,
            smss: narrow(smss),
            dupacks: 0,
            recover: iss,
            in_recovery: false,
            sack_recovery: false,
            avoidance_acked: 0,
        }
    }

    // ----- The compact record of a quiescent connection (see `connection::compact`) -----

    /// Nothing in recovery and no duplicate ACK counted, with `smss` the connection's: what a compact record
    /// leaves out is at its resting value.
    pub(crate) fn is_quiescent(&self, smss: u32) -> bool {
        !self.in_recovery && !self.sack_recovery && self.dupacks == 0 && self.smss == smss
    }

    /// cwnd, ssthresh, the recovery point and the bytes acknowledged in congestion avoidance.
    pub(crate) fn parts(&self) -> (u32, u32, SeqNumber, u32) {
        (self.cwnd, self.ssthresh, self.recover, self.avoidance_acked)
    }

    /// CUBIC's curve, if made.
    pub(crate) fn cubic_curve(&self) -> Option<&CubicCurve> {
        self.cubic.as_deref()
    }

    /// Moves CUBIC's curve out.
    pub(crate) fn take_cubic_curve(&mut self) -> Option<Box<CubicCurve>> {
        self.cubic.take()
    }

    /// A quiescent state from its [`Congestion::parts`].
    pub(crate) fn from_parts(
        algorithm: Algorithm,
        cubic: Option<Box<CubicCurve>>,
        (cwnd, ssthresh, recover, avoidance_acked): (u32, u32, SeqNumber, u32),
        smss: u32,
    ) -> Congestion {
        Congestion {
            algorithm,
            cubic,
            cwnd,
            ssthresh,
            smss,
            dupacks: 0,
            recover,
            in_recovery: false,
            sack_recovery: false,
            avoidance_acked,
        }
    }

    /// The algorithm in use.
    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    /// The congestion window in bytes.
    pub fn window(&self) -> usize {
        self.cwnd as usize
    }

    /// The slow-start threshold in bytes.
    pub fn ssthresh(&self) -> usize {
        if self.ssthresh == INFINITE_SSTHRESH {
            usize::MAX / 2
        } else {
            self.ssthresh as usize
        }
    }

    fn mss(&self) -> usize {
        self.smss as usize
    }

    fn set_cwnd(&mut self, cwnd: usize) {
        self.cwnd = narrow(cwnd);
    }

    fn set_ssthresh(&mut self, ssthresh: usize) {
        self.ssthresh = narrow(ssthresh);
    }

    /// True between fast retransmit and the full ACK that ends recovery.
    pub fn in_recovery(&self) -> bool {
        self.in_recovery
    }

    /// True in an RFC 6675 (SACK) recovery.
    pub fn in_sack_recovery(&self) -> bool {
        self.in_recovery && self.sack_recovery
    }

    /// The recovery point: SND.MAX when the last recovery or timeout began (RFC 6582 `recover`, RFC 6675
    /// `RecoveryPoint`), or, once the ACKs have passed that, one below the latest.
    pub fn recovery_point(&self) -> SeqNumber {
        self.recover
    }

    /// Starts an RFC 6675 loss recovery (§5 step 4) with SND.UNA at `ack`, `flight` bytes outstanding and `snd_max`
    /// the highest sequence number sent. ssthresh and cwnd drop to β·FlightSize, unless the window of an earlier
    /// reduction (a timeout's) is still being repaired (`ack` not past the recovery point): then data the timeout
    /// resent was lost again, and it is recovered without a second reduction (RFC 6675 §5.1 would wait for another
    /// timeout; Linux's loss state does the same).
    pub fn enter_sack_recovery(&mut self, ack: SeqNumber, flight: usize, snd_max: SeqNumber) {
        if ack.diff(self.recover) > 0 {
            let ssthresh = self.reduced(flight);
            self.set_ssthresh(ssthresh);
            self.set_cwnd(ssthresh);
            self.recover = snd_max;
        }
        self.in_recovery = true;
        self.sack_recovery = true;
        self.avoidance_acked = 0;
    }

    /// Updates the sender MSS once negotiated; the initial window follows it if nothing was sent yet.
    pub fn set_mss(&mut self, smss: usize, initial_segments: usize) {
        let smss = smss.max(1);
        self.smss = narrow(smss);
        self.set_cwnd((initial_segments * smss).min((2 * smss).max(14600)).max(smss));
    }

    /// An ACK that advanced SND.UNA by `acked` bytes of sequence space to `ack`, with `flight` bytes outstanding
    /// before it; `now` and the smoothed RTT drive CUBIC's curve.
    pub fn on_new_ack(
        &mut self,
        now: Instant,
        srtt: Duration,
        ack: SeqNumber,
        acked: usize,
        flight: usize,
    ) -> AckAction {
        self.dupacks = 0;
        if self.in_recovery && self.sack_recovery {
            // RFC 6675 §5: recovery ends when the ACK covers the recovery point; until then `pipe` governs.
            if ack.diff(self.recover) >= 0 {
                self.set_cwnd(self.window().min(self.ssthresh()).max(self.mss()));
                self.in_recovery = false;
                self.sack_recovery = false;
            }
            return AckAction::None;
        }
        if self.in_recovery {
            if ack.diff(self.recover) >= 0 {
                // Full acknowledgment (RFC 6582 §3.2 step 3, option 1): deflate the window to
                // min(ssthresh, max(FlightSize, SMSS) + SMSS), FlightSize being what is still outstanding.
                let flight_after = flight.saturating_sub(acked);
                self.set_cwnd(self.ssthresh().min(flight_after.max(self.mss()) + self.mss()));
                self.in_recovery = false;
                return AckAction::None;
            }
            // Partial acknowledgment (step 4): retransmit the next hole, deflate by the amount acknowledged.
            let mut cwnd = self.window().saturating_sub(acked);
            if acked >= self.mss() {
                cwnd += self.mss();
            }
            self.set_cwnd(cwnd.max(self.mss()));
            return AckAction::Retransmit;
        }
        // Outside recovery `recover` only answers "does this ACK cover more than the last recovery point?" (RFC 6582
        // §3.2 step 2, RFC 6675 §5's RecoveryPoint), and once the ACK is past it the answer stays yes. Left behind, it
        // would fall 2^31 behind SND.UNA after 2 GiB sent without loss, the comparison would wrap, and fast
        // retransmit, the window cut of a SACK recovery and the end of that recovery would all be lost. Kept one
        // below the latest ACK, it gives the same answers and cannot age.
        if ack.diff(self.recover) > 0 {
            self.recover = ack - 1;
        }
        if self.window() < self.ssthresh() {
            // Slow start with appropriate byte counting, L = 1 SMSS (RFC 5681 §3.1, RFC 3465).
            self.set_cwnd(self.window() + acked.min(self.mss()));
        } else if self.algorithm == Algorithm::Cubic {
            let (mss, window) = (self.mss() as f64, self.window());
            let cubic = self.cubic.get_or_insert_with(Box::default);
            let cwnd = cubic.grow(now, srtt, window as f64 / mss, acked as f64 / mss);
            self.set_cwnd(((cwnd * mss) as usize).max(window));
        } else {
            // Congestion avoidance: one SMSS per window's worth of acknowledged bytes.
            let mut avoidance_acked = self.avoidance_acked as usize + acked;
            if avoidance_acked >= self.window() {
                avoidance_acked -= self.window();
                self.set_cwnd(self.window() + self.mss());
            }
            self.avoidance_acked = narrow(avoidance_acked);
        }
        AckAction::None
    }

    /// A duplicate ACK (RFC 5681 §2's definition, checked by the caller) with `flight` bytes outstanding and
    /// `snd_max` the highest sequence number sent.
    pub fn on_duplicate_ack(&mut self, ack: SeqNumber, flight: usize, snd_max: SeqNumber) -> AckAction {
        self.dupacks = self.dupacks.saturating_add(1);
        if self.in_recovery && self.sack_recovery {
            return AckAction::None;
        }
        if self.in_recovery {
            // Fast recovery: each further duplicate means a segment left the network (RFC 6582 §3.2 step 5).
            self.set_cwnd(self.window() + self.mss());
            return AckAction::None;
        }
        // RFC 6582 §3.2 step 2: only enter recovery when the ACK covers more than the previous recovery point,
        // so duplicates caused by retransmissions of an earlier episode do not start another.
        if self.dupacks == DUPACK_THRESHOLD && ack.diff(self.recover) > 0 {
            let ssthresh = self.reduced(flight);
            self.set_ssthresh(ssthresh);
            self.recover = snd_max;
            self.set_cwnd(ssthresh + 3 * self.mss());
            self.in_recovery = true;
            return AckAction::Retransmit;
        }
        AckAction::None
    }

    /// The retransmission timer expired (RFC 5681 §3.1 equation 4): one segment's window, recovery abandoned.
    pub fn on_timeout(&mut self, flight: usize, snd_max: SeqNumber) {
        let ssthresh = self.reduced(flight);
        self.set_ssthresh(ssthresh);
        self.cwnd = self.smss;
        self.dupacks = 0;
        self.in_recovery = false;
        self.sack_recovery = false;
        self.recover = snd_max;
        self.avoidance_acked = 0;
    }

    /// The slow-start threshold after a congestion event with `flight` bytes outstanding: β·FlightSize, at least
    /// two segments (RFC 5681 §3.1 equation 4; RFC 9438 §4.6).
    fn reduced(&mut self, flight: usize) -> usize {
        let ssthresh = match self.algorithm {
            Algorithm::NewReno => flight / 2,
            Algorithm::Cubic => {
                let w = self.window() as f64 / self.mss() as f64;
                self.cubic.get_or_insert_with(Box::default).on_loss(w);
                (flight as f64 * CUBIC_BETA) as usize
            }
        };
        ssthresh.max(2 * self.mss())
    }

    /// Duplicate ACKs counted since the last new ACK.
    pub fn dupacks(&self) -> u32 {
        self.dupacks
    }

    /// Counts a duplicate ACK without acting on it (a SACK connection decides recovery from its scoreboard).
    pub fn count_duplicate_ack(&mut self) -> u32 {
        self.dupacks = self.dupacks.saturating_add(1);
        self.dupacks
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn initial_window_follows_rfc6928() {
        assert_eq!(Congestion::new(1460, 10, SeqNumber(0)).window(), 14600);
        assert_eq!(Congestion::new(9000, 10, SeqNumber(0)).window(), 18000);
    }

    #[test]
    fn slow_start_then_avoidance() {
        let mut c = Congestion::new(1000, 2, SeqNumber(0));
        c.set_ssthresh(4000);
        c.on_new_ack(Instant::ZERO, Duration::ZERO, SeqNumber(1000), 1000, 2000);
        c.on_new_ack(Instant::ZERO, Duration::ZERO, SeqNumber(2000), 1000, 2000);
        assert_eq!(c.window(), 4000);
        for i in 0..4 {
            c.on_new_ack(Instant::ZERO, Duration::ZERO, SeqNumber(3000 + i * 1000), 1000, 4000);
        }
        assert_eq!(c.window(), 5000, "one SMSS after a whole window was acknowledged");
    }

    #[test]
    fn third_duplicate_ack_retransmits_and_full_ack_ends_recovery() {
        let mut c = Congestion::new(1000, 10, SeqNumber(0));
        let una = SeqNumber(1);
        assert_eq!(c.on_duplicate_ack(una, 10_000, SeqNumber(10_001)), AckAction::None);
        assert_eq!(c.on_duplicate_ack(una, 10_000, SeqNumber(10_001)), AckAction::None);
        assert_eq!(c.on_duplicate_ack(una, 10_000, SeqNumber(10_001)), AckAction::Retransmit);
        assert!(c.in_recovery());
        assert_eq!(c.ssthresh(), 5000);
        assert_eq!(c.window(), 8000);
        c.on_duplicate_ack(una, 10_000, SeqNumber(10_001));
        assert_eq!(c.window(), 9000);
        assert_eq!(
            c.on_new_ack(Instant::ZERO, Duration::ZERO, SeqNumber(3001), 3000, 10_000),
            AckAction::Retransmit,
            "partial ACK"
        );
        assert!(c.in_recovery());
        assert_eq!(c.on_new_ack(Instant::ZERO, Duration::ZERO, SeqNumber(10_001), 7000, 7000), AckAction::None);
        assert!(!c.in_recovery());
        assert_eq!(c.window(), 2000, "min(ssthresh, max(flight after the ACK, SMSS) + SMSS)");
    }

    #[test]
    fn sack_recovery_reduces_once_and_ends_at_the_recovery_point() {
        let mut c = Congestion::new(1000, 10, SeqNumber(0));
        c.enter_sack_recovery(SeqNumber(1), 10_000, SeqNumber(10_001));
        assert!(c.in_sack_recovery());
        assert_eq!((c.ssthresh(), c.window()), (5000, 5000), "cwnd = ssthresh, no inflation");
        assert_eq!(c.on_duplicate_ack(SeqNumber(1), 10_000, SeqNumber(10_001)), AckAction::None);
        assert_eq!(c.window(), 5000);
        assert_eq!(
            c.on_new_ack(Instant::ZERO, Duration::ZERO, SeqNumber(3001), 3000, 10_000),
            AckAction::None,
            "a partial ACK: the scoreboard, not NewReno, picks what to resend"
        );
        assert_eq!(c.window(), 5000);
        c.on_new_ack(Instant::ZERO, Duration::ZERO, SeqNumber(10_001), 7000, 7000);
        assert!(!c.in_recovery());
        assert_eq!(c.window(), 5000);
        // After a timeout, a loss found before the timeout's window is repaired does not reduce again.
        c.on_timeout(8000, SeqNumber(18_001));
        assert_eq!((c.ssthresh(), c.window()), (4000, 1000));
        c.enter_sack_recovery(SeqNumber(12_001), 6000, SeqNumber(18_001));
        assert!(c.in_sack_recovery());
        assert_eq!((c.ssthresh(), c.window()), (4000, 1000));
        assert_eq!(c.recovery_point(), SeqNumber(18_001));
    }

    /// Past 2 GiB acknowledged without loss an ISN-old `recover` would lie more than 2^31 behind SND.UNA, where the
    /// wrapping comparison calls it ahead: no fast retransmit, no SACK window cut, a recovery that never ends.
    #[test]
    fn recover_follows_the_acks_so_loss_after_gigabytes_is_still_recovered() {
        for algorithm in [Algorithm::NewReno, Algorithm::Cubic] {
            let mut c = Congestion::with_algorithm(algorithm, 1000, 10, SeqNumber(0));
            let mut una = SeqNumber(1);
            for _ in 0..3 {
                una += 1 << 30;
                c.on_new_ack(Instant::ZERO, Duration::ZERO, una, 1 << 30, 1 << 30);
            }
            let snd_max = una + 10_000;

            let mut reno = c.clone();
            assert_eq!(reno.on_duplicate_ack(una, 10_000, snd_max), AckAction::None);
            assert_eq!(reno.on_duplicate_ack(una, 10_000, snd_max), AckAction::None);
            assert_eq!(reno.on_duplicate_ack(una, 10_000, snd_max), AckAction::Retransmit, "{algorithm:?}");
            assert!(reno.in_recovery());
            reno.on_new_ack(Instant::ZERO, Duration::ZERO, snd_max, 10_000, 10_000);
            assert!(!reno.in_recovery(), "{algorithm:?}: the full ACK ends recovery");

            let mut sack = c.clone();
            let before = sack.window();
            sack.enter_sack_recovery(una, 10_000, snd_max);
            assert!(sack.in_sack_recovery());
            assert!(sack.window() < before, "{algorithm:?}: the window is cut ({} of {before})", sack.window());
            assert_eq!(sack.recovery_point(), snd_max);
            sack.on_new_ack(Instant::ZERO, Duration::ZERO, una + 3000, 3000, 10_000);
            assert!(sack.in_sack_recovery(), "{algorithm:?}: a partial ACK does not end it");
            sack.on_new_ack(Instant::ZERO, Duration::ZERO, snd_max, 7000, 7000);
            assert!(!sack.in_recovery(), "{algorithm:?}: an ACK of SND.MAX ends it");
        }
    }

    #[test]
    fn timeout_collapses_window_to_one_segment() {
        let mut c = Congestion::new(1000, 10, SeqNumber(0));
        c.on_timeout(8000, SeqNumber(8001));
        assert_eq!(c.window(), 1000);
        assert_eq!(c.ssthresh(), 4000);
    }

    /// A CUBIC connection that just lost at a window of `w_max` segments of 1000 bytes, now at β·W_max in
    /// congestion avoidance.
    fn cubic_after_loss(w_max: usize) -> Congestion {
        let mut c = Congestion::with_algorithm(Algorithm::Cubic, 1000, 10, SeqNumber(0));
        c.set_cwnd(w_max * 1000);
        let ssthresh = c.reduced(w_max * 1000);
        c.set_ssthresh(ssthresh);
        c.set_cwnd(ssthresh);
        c
    }

    /// ACKs a whole window every `rtt` until `until`; returns (time, cwnd in segments) once per round trip.
    fn ack_clock(c: &mut Congestion, from: Instant, until: Instant, rtt: Duration) -> Vec<(f64, f64)> {
        let mut now = from;
        let mut seq = SeqNumber(1);
        let mut trace = Vec::new();
        while now < until {
            let segments = c.window() / 1000;
            for _ in 0..segments {
                seq += 1000;
                c.on_new_ack(now, rtt, seq, 1000, c.window());
            }
            trace.push(((now - from).as_secs_f64(), c.window() as f64 / 1000.0));
            now += rtt;
        }
        trace
    }

    #[test]
    fn cubic_reduces_the_window_by_beta_0_7() {
        let c = cubic_after_loss(100);
        assert_eq!(c.ssthresh(), 70_000);
        assert_eq!(c.cubic.as_ref().unwrap().w_max, 100.0);
        let mut r = Congestion::new(1000, 10, SeqNumber(0));
        assert_eq!(r.reduced(100_000), 50_000, "NewReno halves");
    }

    #[test]
    fn cubic_regains_w_max_near_k_and_then_probes_beyond() {
        let mut c = cubic_after_loss(100);
        // K = cbrt(W_max (1 - β) / C) = cbrt(100 · 0.3 / 0.4) ≈ 4.22 s.
        let k = (100.0f64 * 0.3 / 0.4).cbrt();
        // A long round trip, so that the cubic curve leads the Reno-friendly estimate (which grows per RTT).
        let rtt = Duration::from_millis(100);
        let start = Instant::from_secs(1);
        let trace = ack_clock(&mut c, start, start + Duration::from_secs_f64(2.0 * k), rtt);
        let at = |t: f64| trace.iter().find(|(x, _)| *x >= t).map(|&(_, w)| w).unwrap();
        // Concave below W_max: fast at first, flattening towards W_max, never above it before K.
        assert!(at(0.5 * k) > 85.0 && at(0.5 * k) < 100.0, "half-way: {}", at(0.5 * k));
        assert!(trace.iter().filter(|(t, _)| *t < k - 0.1).all(|&(_, w)| w <= 100.5));
        assert!((at(k) - 100.0).abs() < 2.0, "at K: {}", at(k));
        // Convex above it: probing for more.
        assert!(at(2.0 * k - 0.1) > 120.0, "at 2K: {}", at(2.0 * k - 0.1));
    }

    #[test]
    fn cubic_fast_convergence_lowers_w_max_when_losses_come_sooner() {
        let mut c = cubic_after_loss(100);
        c.set_cwnd(80_000);
        c.reduced(80_000);
        assert_eq!(c.cubic.as_ref().unwrap().w_max, 80.0 * 1.7 / 2.0);
    }

    #[test]
    fn cubic_follows_the_reno_friendly_estimate_on_short_round_trips() {
        // With a short RTT the cubic curve grows slowly per round trip; W_est, growing by
        // α = 3(1 - β)/(1 + β) ≈ 0.53 segments per RTT (RFC 9438 §4.3), leads and CUBIC follows it.
        let mut c = cubic_after_loss(10);
        let rtt = Duration::from_millis(1);
        let start = Instant::from_secs(1);
        let trace = ack_clock(&mut c, start, start + Duration::from_millis(200), rtt);
        let per_rtt = (trace.last().unwrap().1 - trace[0].1) / (trace.len() - 1) as f64;
        let alpha = 3.0 * (1.0 - CUBIC_BETA) / (1.0 + CUBIC_BETA);
        assert!((per_rtt - alpha).abs() < 0.05, "{per_rtt} segments per RTT, α = {alpha}");
    }
}
