//! SYN cookies: answering a SYN without keeping state, so that a flood of spoofed SYNs cannot fill the SYN backlog
//! and lock out real clients (RFC 4987 §3.6; the scheme Linux uses, with a keyed hash of our own).
//!
//! The SYN-ACK's sequence number is the cookie:
//!
//! ```text
//!  31      27 26  24 23                                   0
//! +----------+------+--------------------------------------+
//! | t mod 32 | MSS  |  SipHash(key, 4-tuple, peer ISN, t,  |
//! |          | index|          MSS index, options)         |
//! +----------+------+--------------------------------------+
//! ```
//!
//! where `t` counts 64-second periods. The peer's ACK returns it as `SEG.ACK - 1`; the hash proves we made it (an
//! off-path guess succeeds once in 2^24) and `t` bounds its age to [`MAX_AGE_PERIODS`] periods. What the SYN
//! negotiated and a cookie cannot hold is carried in the low six bits of our TSval, which the peer echoes in every
//! TSecr: the window scale it offered (four bits, 15 for none) and SACK-permitted (one bit). The hash covers those
//! bits too, so an ACK that alters them fails the check. Without timestamps a cookie connection has no window
//! scaling and no SACK — the price of holding no state, as in Linux.

use core::hash::Hasher;
use siphasher::sip::SipHasher24;
use std::net::SocketAddrV4;

use super::connection::{syn_ack_window, window_scale_for};
use super::{Config, IsnGenerator};
use crate::time::Instant;
use crate::wire::{SeqNumber, TcpFlags, TcpOptions, TcpRepr};

/// The MSS values a cookie can say, in increasing order: the peer's MSS is rounded down to one of them.
pub const MSS_TABLE: [u16; 8] = [536, 1024, 1200, 1300, 1380, 1440, 1460, 8960];
/// Seconds per cookie period.
pub const PERIOD_SECS: u64 = 64;
/// A cookie older than this many periods (two to three minutes) is refused.
pub const MAX_AGE_PERIODS: u32 = 2;

/// Option bits carried in the TSval: the peer's window scale (15 = none).
const OPT_WSCALE_MASK: u32 = 0x0f;
const OPT_WSCALE_NONE: u32 = 0x0f;
/// SACK-permitted agreed.
const OPT_SACK: u32 = 0x10;
/// Always set, so that an echo of zero is never a valid option word.
const OPT_MARK: u32 = 0x20;
const OPT_BITS: u32 = 0x3f;
/// What the hash sees for "no timestamps": outside the six bits, so no TSecr can match it.
const OPT_NO_TIMESTAMPS: u32 = 0x40;

/// What a valid cookie says the SYN negotiated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CookieOptions {
    /// The peer's MSS, rounded down to [`MSS_TABLE`].
    pub mss: u16,
    /// The peer's window scale, when both sides scale.
    pub window_scale: Option<u8>,
    /// Both sides agreed to SACK.
    pub sack_permitted: bool,
    /// Both sides use timestamps.
    pub timestamps: bool,
}

/// Makes and checks SYN cookies with a secret key.
#[derive(Clone)]
pub struct SynCookies {
    key: [u8; 16],
}

impl core::fmt::Debug for SynCookies {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("SynCookies { key: <secret> }")
    }
}

impl SynCookies {
    /// Cookies keyed with `key` (draw it from a seeded or a system random source).
    pub fn new(key: [u8; 16]) -> SynCookies {
        SynCookies { key }
    }

    fn hash(&self, t: u32, local: SocketAddrV4, remote: SocketAddrV4, peer_isn: SeqNumber, mss: u32, opts: u32) -> u32 {
        let mut h = SipHasher24::new_with_key(&self.key);
        h.write(&local.ip().octets());
        h.write_u16(local.port());
        h.write(&remote.ip().octets());
        h.write_u16(remote.port());
        h.write_u32(peer_isn.0);
        h.write_u32(t);
        h.write_u32(mss << 8 | opts);
        h.finish() as u32
    }

    /// The SYN-ACK that answers `syn` (to `local` from `remote`) with a cookie, offering what a connection with
    /// `cfg` would offer, its TSval on the clock `isn` gives that 4-tuple.
    pub fn syn_ack(
        &self,
        cfg: &Config,
        local: SocketAddrV4,
        remote: SocketAddrV4,
        syn: &TcpRepr<'_>,
        isn: &IsnGenerator,
        now: Instant,
    ) -> TcpRepr<'static> {
        let peer_mss = syn.options.mss.unwrap_or(MSS_TABLE[0]);
        let mss_index = MSS_TABLE.iter().rposition(|&m| m <= peer_mss).unwrap_or(0) as u32;
        let timestamps = cfg.timestamps && syn.options.timestamp.is_some();
        let window_scale = (timestamps && cfg.window_scaling).then_some(syn.options.window_scale).flatten();
        let sack = timestamps && cfg.sack && syn.options.sack_permitted;
        let opts = if timestamps {
            let ws = window_scale.map_or(OPT_WSCALE_NONE, |s| u32::from(s.min(14)));
            ws | if sack { OPT_SACK } else { 0 } | OPT_MARK
        } else {
            OPT_NO_TIMESTAMPS
        };
        let t = period(now);
        let hash = self.hash(t, local, remote, syn.seq_number, mss_index, opts);
        let cookie = (t & 0x1f) << 27 | mss_index << 24 | (hash & 0x00ff_ffff);

        let mut options = TcpOptions { mss: Some(cfg.mss), ..TcpOptions::default() };
        if timestamps {
            options.window_scale = window_scale.map(|_| window_scale_for(cfg));
            options.sack_permitted = sack;
            // The option bits replace the clock's low bits, stepping back a period if that would run ahead of the
            // clock: our later TSvals must not be older than this one (the peer's PAWS).
            let clock = (now.total_millis() as u32).wrapping_add(isn.timestamp_offset(local, remote));
            let mut tsval = (clock & !OPT_BITS) | opts;
            if (tsval.wrapping_sub(clock) as i32) > 0 {
                tsval = tsval.wrapping_sub(OPT_BITS + 1);
            }
            options.timestamp = Some((tsval, syn.options.timestamp.map_or(0, |(v, _)| v)));
        }
        TcpRepr {
            src_port: local.port(),
            dst_port: remote.port(),
            seq_number: SeqNumber(cookie),
            ack_number: syn.seq_number + 1,
            flags: TcpFlags::SYN | TcpFlags::ACK,
            window_len: syn_ack_window(cfg),
            urgent_pointer: 0,
            options,
            payload: &[],
        }
    }

    /// What the SYN negotiated, when `ack` (to `local` from `remote`) returns a cookie of ours that is at most
    /// [`MAX_AGE_PERIODS`] old; `None` for anything else.
    pub fn check(
        &self,
        local: SocketAddrV4,
        remote: SocketAddrV4,
        ack: &TcpRepr<'_>,
        now: Instant,
    ) -> Option<CookieOptions> {
        let flags = ack.flags;
        if !flags.ack() || flags.syn() || flags.rst() {
            return None;
        }
        let cookie = ack.ack_number.0.wrapping_sub(1);
        let peer_isn = SeqNumber(ack.seq_number.0.wrapping_sub(1));
        let now_t = period(now);
        let age = now_t.wrapping_sub(cookie >> 27) & 0x1f;
        if age > MAX_AGE_PERIODS {
            return None;
        }
        let t = now_t.wrapping_sub(age);
        let mss_index = cookie >> 24 & 0x7;
        let opts = ack.options.timestamp.map_or(OPT_NO_TIMESTAMPS, |(_, ecr)| ecr & OPT_BITS);
        if opts != OPT_NO_TIMESTAMPS && opts & OPT_MARK == 0 {
            return None;
        }
        if self.hash(t, local, remote, peer_isn, mss_index, opts) & 0x00ff_ffff != cookie & 0x00ff_ffff {
            return None;
        }
        let timestamps = opts != OPT_NO_TIMESTAMPS;
        let ws = opts & OPT_WSCALE_MASK;
        Some(CookieOptions {
            mss: MSS_TABLE[mss_index as usize],
            window_scale: (timestamps && ws != OPT_WSCALE_NONE).then_some(ws as u8),
            sack_permitted: timestamps && opts & OPT_SACK != 0,
            timestamps,
        })
    }
}

/// The cookie period `now` falls in.
fn period(now: Instant) -> u32 {
    (now.total_millis() / 1000 / PERIOD_SECS) as u32
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn ep(a: u8, port: u16) -> SocketAddrV4 {
        SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, a), port)
    }

    fn syn(opts: TcpOptions) -> TcpRepr<'static> {
        TcpRepr {
            src_port: 40000,
            dst_port: 80,
            seq_number: SeqNumber(0xdead_beef),
            ack_number: SeqNumber(0),
            flags: TcpFlags::SYN,
            window_len: 64240,
            urgent_pointer: 0,
            options: opts,
            payload: &[],
        }
    }

    /// The peer's ACK of `syn_ack`, echoing its TSval when it has one.
    fn ack_of(syn: &TcpRepr<'_>, syn_ack: &TcpRepr<'_>) -> TcpRepr<'static> {
        let mut options = TcpOptions::default();
        if let Some((val, _)) = syn_ack.options.timestamp {
            options.timestamp = Some((12345, val));
        }
        TcpRepr {
            src_port: syn.src_port,
            dst_port: syn.dst_port,
            seq_number: syn.seq_number + 1,
            ack_number: syn_ack.seq_number + 1,
            flags: TcpFlags::ACK,
            window_len: 502,
            urgent_pointer: 0,
            options,
            payload: &[],
        }
    }

    fn linux_syn_options() -> TcpOptions {
        TcpOptions {
            mss: Some(1460),
            window_scale: Some(7),
            sack_permitted: true,
            timestamp: Some((777, 0)),
            ..TcpOptions::default()
        }
    }

    #[test]
    fn a_cookie_carries_mss_window_scale_and_sack_through_the_timestamp() {
        let c = SynCookies::new([3; 16]);
        let isn = IsnGenerator::new([4; 16]);
        let cfg = Config::default();
        let now = Instant::from_secs(1_000_000);
        let s = syn(linux_syn_options());
        let sa = c.syn_ack(&cfg, ep(1, 80), ep(2, 40000), &s, &isn, now);
        assert_eq!(sa.flags, TcpFlags::SYN | TcpFlags::ACK);
        assert_eq!(sa.ack_number, s.seq_number + 1);
        assert_eq!(sa.options.mss, Some(cfg.mss));
        assert!(sa.options.sack_permitted && sa.options.window_scale.is_some());
        let (tsval, tsecr) = sa.options.timestamp.unwrap();
        assert_eq!(tsecr, 777);
        // Never ahead of the connection's clock.
        let clock = (now.total_millis() as u32).wrapping_add(isn.timestamp_offset(ep(1, 80), ep(2, 40000)));
        assert!((clock.wrapping_sub(tsval) as i32) >= 0 && clock.wrapping_sub(tsval) < 64);

        let got = c.check(ep(1, 80), ep(2, 40000), &ack_of(&s, &sa), now + core::time::Duration::from_secs(5));
        assert_eq!(
            got,
            Some(CookieOptions { mss: 1460, window_scale: Some(7), sack_permitted: true, timestamps: true })
        );
    }

    #[test]
    fn without_timestamps_a_cookie_gives_up_window_scale_and_sack() {
        let c = SynCookies::new([3; 16]);
        let isn = IsnGenerator::new([4; 16]);
        let now = Instant::from_secs(50);
        let s = syn(TcpOptions { mss: Some(1400), window_scale: Some(7), sack_permitted: true, ..Default::default() });
        let sa = c.syn_ack(&Config::default(), ep(1, 80), ep(2, 40000), &s, &isn, now);
        assert_eq!((sa.options.window_scale, sa.options.sack_permitted, sa.options.timestamp), (None, false, None));
        let got = c.check(ep(1, 80), ep(2, 40000), &ack_of(&s, &sa), now).unwrap();
        assert_eq!(got, CookieOptions { mss: 1380, window_scale: None, sack_permitted: false, timestamps: false });
    }

    #[test]
    fn forged_stale_or_altered_acks_fail() {
        let c = SynCookies::new([3; 16]);
        let isn = IsnGenerator::new([4; 16]);
        let now = Instant::from_secs(1_000_000);
        let s = syn(linux_syn_options());
        let sa = c.syn_ack(&Config::default(), ep(1, 80), ep(2, 40000), &s, &isn, now);
        let ack = ack_of(&s, &sa);
        assert!(c.check(ep(1, 80), ep(2, 40000), &ack, now).is_some());
        // Another key, another 4-tuple, another peer ISN.
        assert!(SynCookies::new([9; 16]).check(ep(1, 80), ep(2, 40000), &ack, now).is_none());
        assert!(c.check(ep(1, 80), ep(2, 40001), &ack, now).is_none());
        assert!(c.check(ep(1, 80), ep(2, 40000), &TcpRepr { seq_number: ack.seq_number + 1, ..ack }, now).is_none());
        // Option bits altered in the echo (SACK off, or window scale changed).
        let (val, ecr) = ack.options.timestamp.unwrap();
        for ecr in [ecr ^ OPT_SACK, ecr ^ 1, ecr & !OPT_BITS] {
            let mut altered = ack;
            altered.options.timestamp = Some((val, ecr));
            assert!(c.check(ep(1, 80), ep(2, 40000), &altered, now).is_none());
        }
        // The timestamp dropped from the ACK.
        let mut bare = ack;
        bare.options.timestamp = None;
        assert!(c.check(ep(1, 80), ep(2, 40000), &bare, now).is_none());
        // Not a bare ACK.
        assert!(c
            .check(ep(1, 80), ep(2, 40000), &TcpRepr { flags: TcpFlags::ACK | TcpFlags::RST, ..ack }, now)
            .is_none());
        // Valid for two more periods, not three.
        let period = core::time::Duration::from_secs(PERIOD_SECS);
        assert!(c.check(ep(1, 80), ep(2, 40000), &ack, now + period * 2).is_some());
        assert!(c.check(ep(1, 80), ep(2, 40000), &ack, now + period * 3).is_none());
    }

    #[test]
    fn blind_guesses_almost_never_pass() {
        let c = SynCookies::new([5; 16]);
        let now = Instant::from_secs(1000);
        let mut passed = 0;
        for i in 0..200_000u32 {
            let ack = TcpRepr {
                src_port: 40000,
                dst_port: 80,
                seq_number: SeqNumber(i.wrapping_mul(2_654_435_761)),
                ack_number: SeqNumber(i.wrapping_mul(40_503).wrapping_add(i << 20)),
                flags: TcpFlags::ACK,
                window_len: 100,
                urgent_pointer: 0,
                options: TcpOptions::default(),
                payload: &[],
            };
            passed += usize::from(c.check(ep(1, 80), ep(2, 40000), &ack, now).is_some());
        }
        // About 200000 * 3/32 / 2^24 ≈ 0.001 expected.
        assert!(passed <= 1, "{passed} guesses passed");
    }
}
