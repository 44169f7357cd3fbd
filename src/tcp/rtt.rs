//! The retransmission timeout estimator of RFC 6298, with Karn's algorithm left to the caller (it only feeds
//! samples from segments that were not retransmitted, or from timestamps, RFC 7323 §4).

use core::time::Duration;

/// Clock granularity G of RFC 6298 §2, in nanoseconds: the engine's timer wheel ticks in milliseconds.
const GRANULARITY_NANOS: u64 = 1_000_000;
/// `srtt_nanos` before the first sample.
const NO_SAMPLE: u64 = u64::MAX;

/// SRTT, RTTVAR and the current RTO with its exponential backoff.
///
/// Kept in whole nanoseconds (what [`Duration`] arithmetic keeps too, so the results are the same to the
/// nanosecond) in a `u64` each, half the size of a `Duration`, and the RTO's bounds are the owner's to pass in
/// (they are settings, the same for every connection made with them): every connection holds one estimator. Times
/// past 584 years saturate.
#[derive(Debug, Clone, Copy)]
pub struct RttEstimator {
    /// SRTT, or [`NO_SAMPLE`].
    srtt_nanos: u64,
    rttvar_nanos: u64,
    /// The RTO before backoff, within the bounds.
    rto_nanos: u64,
    backoff: u32,
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// RFC 6298 §2.3: SRTT + max(G, 4·RTTVAR), within `[min, max]`.
fn rto_nanos(srtt_nanos: u64, rttvar_nanos: u64, min: Duration, max: Duration) -> u64 {
    let rto = srtt_nanos.saturating_add(GRANULARITY_NANOS.max(rttvar_nanos.saturating_mul(4)));
    rto.clamp(nanos(min), nanos(max))
}

impl RttEstimator {
    /// Before any sample the RTO is `initial` (RFC 6298 §2.1: 1 s), clamped to `[min, max]`.
    pub fn new(initial: Duration, min: Duration, max: Duration) -> RttEstimator {
        RttEstimator { srtt_nanos: NO_SAMPLE, rttvar_nanos: 0, rto_nanos: nanos(initial.clamp(min, max)), backoff: 0 }
    }

    /// SRTT (`u64::MAX` before a sample), RTTVAR and the RTO before backoff in nanoseconds, and the backoff: the
    /// whole state, for a compact record.
    pub(crate) fn parts(&self) -> (u64, u64, u64, u32) {
        (self.srtt_nanos, self.rttvar_nanos, self.rto_nanos, self.backoff)
    }

    /// The estimator with this SRTT, RTTVAR and backoff, its RTO worked out as [`RttEstimator::new`] and
    /// [`RttEstimator::sample`] work it out (so a compact record need not keep it: the two agree unless the bounds
    /// changed since the last sample, which the record's maker checks).
    pub(crate) fn from_samples(
        srtt_nanos: u64,
        rttvar_nanos: u64,
        backoff: u32,
        initial: Duration,
        min: Duration,
        max: Duration,
    ) -> RttEstimator {
        let rto_nanos = if srtt_nanos == NO_SAMPLE {
            nanos(initial.clamp(min, max))
        } else {
            rto_nanos(srtt_nanos, rttvar_nanos, min, max)
        };
        RttEstimator { srtt_nanos, rttvar_nanos, rto_nanos, backoff }
    }

    /// Folds in one round-trip sample (RFC 6298 §2.2–2.3), the RTO kept within `[min, max]`, and clears the backoff
    /// (§5.7's reset on new data).
    pub fn sample(&mut self, r: Duration, min: Duration, max: Duration) {
        // A sample of u64::MAX nanoseconds (584 years) would read as "no sample": one less keeps it a sample.
        let r = nanos(r).min(NO_SAMPLE - 1);
        if self.srtt_nanos == NO_SAMPLE {
            self.srtt_nanos = r;
            self.rttvar_nanos = r / 2;
        } else {
            let srtt = self.srtt_nanos;
            let delta = srtt.abs_diff(r);
            self.rttvar_nanos = self.rttvar_nanos.saturating_mul(3).saturating_add(delta) / 4;
            self.srtt_nanos = (srtt.saturating_mul(7).saturating_add(r) / 8).min(NO_SAMPLE - 1);
        }
        self.rto_nanos = rto_nanos(self.srtt_nanos, self.rttvar_nanos, min, max);
        self.backoff = 0;
    }

    /// Doubles the timeout after a retransmission timer expiry (RFC 6298 §5.5), up to the maximum.
    pub fn back_off(&mut self) {
        self.backoff = self.backoff.saturating_add(1);
    }

    /// Clears the backoff without a new sample (a new ACK after a retransmission, RFC 6298 §5.7's spirit).
    pub fn reset_backoff(&mut self) {
        self.backoff = 0;
    }

    /// The current timeout including backoff, at most `max`.
    pub fn rto(&self, max: Duration) -> Duration {
        let shift = self.backoff.min(16);
        Duration::from_nanos(self.rto_nanos.saturating_mul(1 << shift).min(nanos(max)))
    }

    /// The smoothed round-trip time, once measured.
    pub fn srtt(&self) -> Option<Duration> {
        (self.srtt_nanos != NO_SAMPLE).then(|| Duration::from_nanos(self.srtt_nanos))
    }

    /// The round-trip variation.
    pub fn rttvar(&self) -> Duration {
        Duration::from_nanos(self.rttvar_nanos)
    }

    /// How many times in a row the timer has backed off.
    pub fn backoff(&self) -> u32 {
        self.backoff
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// The bounds of most tests: 1 ms to 60 s.
    const MIN: Duration = Duration::from_millis(1);
    const MAX: Duration = Duration::from_secs(60);

    #[test]
    fn first_sample_sets_srtt_and_half_variance() {
        let mut e = RttEstimator::new(ms(1000), MIN, MAX);
        assert_eq!(e.rto(MAX), ms(1000));
        e.sample(ms(100), MIN, MAX);
        assert_eq!(e.srtt(), Some(ms(100)));
        assert_eq!(e.rttvar(), ms(50));
        assert_eq!(e.rto(MAX), ms(300));
    }

    #[test]
    fn later_samples_follow_rfc6298_gains() {
        let mut e = RttEstimator::new(ms(1000), MIN, MAX);
        e.sample(ms(100), MIN, MAX);
        e.sample(ms(200), MIN, MAX);
        // RTTVAR = 3/4*50 + 1/4*|100-200| = 62.5; SRTT = 7/8*100 + 1/8*200 = 112.5
        assert_eq!(e.rttvar(), Duration::from_micros(62_500));
        assert_eq!(e.srtt(), Some(Duration::from_micros(112_500)));
        assert_eq!(e.rto(MAX), Duration::from_micros(362_500));
    }

    #[test]
    fn backoff_doubles_until_the_maximum_and_a_sample_clears_it() {
        let mut e = RttEstimator::new(ms(1000), ms(200), ms(5000));
        e.back_off();
        assert_eq!(e.rto(ms(5000)), ms(2000));
        e.back_off();
        e.back_off();
        assert_eq!(e.rto(ms(5000)), ms(5000));
        e.sample(ms(10), ms(200), ms(5000));
        assert_eq!(e.rto(ms(5000)), ms(200), "clamped to the minimum, backoff cleared");
    }
}
