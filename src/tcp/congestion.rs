//! Congestion control: slow start and congestion avoidance (RFC 5681) with NewReno fast recovery (RFC 6582).
//!
//! The connection tells this module what happened (bytes newly acknowledged, duplicate ACKs, a timeout); the
//! module keeps `cwnd`, `ssthresh` and the recovery point and says when to retransmit.

use crate::wire::SeqNumber;

/// What the connection should do after an ACK was fed in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AckAction {
    /// Nothing beyond sending new data as the window allows.
    None,
    /// Retransmit the first unacknowledged segment now (third duplicate ACK, or a partial ACK in recovery).
    Retransmit,
}

/// NewReno state.
#[derive(Debug, Clone, Copy)]
pub struct NewReno {
    cwnd: usize,
    ssthresh: usize,
    smss: usize,
    dupacks: u32,
    /// The highest sequence number sent when recovery began (RFC 6582 `recover`).
    recover: SeqNumber,
    in_recovery: bool,
    /// Bytes acknowledged in congestion avoidance not yet turned into window growth.
    avoidance_acked: usize,
}

/// Duplicate ACKs that trigger fast retransmit (RFC 5681 §3.2).
pub const DUPACK_THRESHOLD: u32 = 3;

impl NewReno {
    /// Initial window per RFC 6928: min(10·SMSS, max(2·SMSS, 14600)), `initial_segments` replacing 10.
    pub fn new(smss: usize, initial_segments: usize, iss: SeqNumber) -> NewReno {
        let smss = smss.max(1);
        let cwnd = (initial_segments * smss).min((2 * smss).max(14600)).max(smss);
        NewReno {
            cwnd,
            ssthresh: usize::MAX / 2,
            smss,
            dupacks: 0,
            recover: iss,
            in_recovery: false,
            avoidance_acked: 0,
        }
    }

    /// The congestion window in bytes.
    pub fn window(&self) -> usize {
        self.cwnd
    }

    /// The slow-start threshold in bytes.
    pub fn ssthresh(&self) -> usize {
        self.ssthresh
    }

    /// True between fast retransmit and the full ACK that ends recovery.
    pub fn in_recovery(&self) -> bool {
        self.in_recovery
    }

    /// Updates the sender MSS once negotiated; the initial window follows it if nothing was sent yet.
    pub fn set_mss(&mut self, smss: usize, initial_segments: usize) {
        self.smss = smss.max(1);
        self.cwnd = (initial_segments * self.smss).min((2 * self.smss).max(14600)).max(self.smss);
    }

    /// An ACK that advanced SND.UNA by `acked` bytes of sequence space to `ack`, with `flight` bytes outstanding
    /// before it.
    pub fn on_new_ack(&mut self, ack: SeqNumber, acked: usize, flight: usize) -> AckAction {
        self.dupacks = 0;
        if self.in_recovery {
            if ack.diff(self.recover) >= 0 {
                // Full acknowledgment (RFC 6582 §3.2 step 3, option 1): deflate the window to
                // min(ssthresh, max(FlightSize, SMSS) + SMSS), FlightSize being what is still outstanding.
                let flight_after = flight.saturating_sub(acked);
                self.cwnd = self.ssthresh.min(flight_after.max(self.smss) + self.smss);
                self.in_recovery = false;
                return AckAction::None;
            }
            // Partial acknowledgment (step 4): retransmit the next hole, deflate by the amount acknowledged.
            self.cwnd = self.cwnd.saturating_sub(acked);
            if acked >= self.smss {
                self.cwnd += self.smss;
            }
            self.cwnd = self.cwnd.max(self.smss);
            return AckAction::Retransmit;
        }
        if self.cwnd < self.ssthresh {
            // Slow start with appropriate byte counting, L = 1 SMSS (RFC 5681 §3.1, RFC 3465).
            self.cwnd += acked.min(self.smss);
        } else {
            // Congestion avoidance: one SMSS per window's worth of acknowledged bytes.
            self.avoidance_acked += acked;
            if self.avoidance_acked >= self.cwnd {
                self.avoidance_acked -= self.cwnd;
                self.cwnd += self.smss;
            }
        }
        AckAction::None
    }

    /// A duplicate ACK (RFC 5681 §2's definition, checked by the caller) with `flight` bytes outstanding and
    /// `snd_max` the highest sequence number sent.
    pub fn on_duplicate_ack(&mut self, ack: SeqNumber, flight: usize, snd_max: SeqNumber) -> AckAction {
        self.dupacks = self.dupacks.saturating_add(1);
        if self.in_recovery {
            // Fast recovery: each further duplicate means a segment left the network (RFC 6582 §3.2 step 5).
            self.cwnd += self.smss;
            return AckAction::None;
        }
        // RFC 6582 §3.2 step 2: only enter recovery when the ACK covers more than the previous recovery point,
        // so duplicates caused by retransmissions of an earlier episode do not start another.
        if self.dupacks == DUPACK_THRESHOLD && ack.diff(self.recover) > 0 {
            self.ssthresh = (flight / 2).max(2 * self.smss);
            self.recover = snd_max;
            self.cwnd = self.ssthresh + 3 * self.smss;
            self.in_recovery = true;
            return AckAction::Retransmit;
        }
        AckAction::None
    }

    /// The retransmission timer expired (RFC 5681 §3.1 equation 4): one segment's window, recovery abandoned.
    pub fn on_timeout(&mut self, flight: usize, snd_max: SeqNumber) {
        self.ssthresh = (flight / 2).max(2 * self.smss);
        self.cwnd = self.smss;
        self.dupacks = 0;
        self.in_recovery = false;
        self.recover = snd_max;
        self.avoidance_acked = 0;
    }

    /// Duplicate ACKs counted since the last new ACK.
    pub fn dupacks(&self) -> u32 {
        self.dupacks
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn initial_window_follows_rfc6928() {
        assert_eq!(NewReno::new(1460, 10, SeqNumber(0)).window(), 14600);
        assert_eq!(NewReno::new(9000, 10, SeqNumber(0)).window(), 18000);
    }

    #[test]
    fn slow_start_then_avoidance() {
        let mut c = NewReno::new(1000, 2, SeqNumber(0));
        c.ssthresh = 4000;
        c.on_new_ack(SeqNumber(1000), 1000, 2000);
        c.on_new_ack(SeqNumber(2000), 1000, 2000);
        assert_eq!(c.window(), 4000);
        for i in 0..4 {
            c.on_new_ack(SeqNumber(3000 + i * 1000), 1000, 4000);
        }
        assert_eq!(c.window(), 5000, "one SMSS after a whole window was acknowledged");
    }

    #[test]
    fn third_duplicate_ack_retransmits_and_full_ack_ends_recovery() {
        let mut c = NewReno::new(1000, 10, SeqNumber(0));
        let una = SeqNumber(1);
        assert_eq!(c.on_duplicate_ack(una, 10_000, SeqNumber(10_001)), AckAction::None);
        assert_eq!(c.on_duplicate_ack(una, 10_000, SeqNumber(10_001)), AckAction::None);
        assert_eq!(c.on_duplicate_ack(una, 10_000, SeqNumber(10_001)), AckAction::Retransmit);
        assert!(c.in_recovery());
        assert_eq!(c.ssthresh(), 5000);
        assert_eq!(c.window(), 8000);
        c.on_duplicate_ack(una, 10_000, SeqNumber(10_001));
        assert_eq!(c.window(), 9000);
        assert_eq!(c.on_new_ack(SeqNumber(3001), 3000, 10_000), AckAction::Retransmit, "partial ACK");
        assert!(c.in_recovery());
        assert_eq!(c.on_new_ack(SeqNumber(10_001), 7000, 7000), AckAction::None);
        assert!(!c.in_recovery());
        assert_eq!(c.window(), 2000, "min(ssthresh, max(flight after the ACK, SMSS) + SMSS)");
    }

    #[test]
    fn timeout_collapses_window_to_one_segment() {
        let mut c = NewReno::new(1000, 10, SeqNumber(0));
        c.on_timeout(8000, SeqNumber(8001));
        assert_eq!(c.window(), 1000);
        assert_eq!(c.ssthresh(), 4000);
    }
}
