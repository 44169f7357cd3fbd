//! Initial sequence numbers per RFC 6528: `ISN = M + F(localip, localport, remoteip, remoteport, secretkey)`,
//! with M a clock ticking every 4 µs and F a keyed hash (SipHash-2-4). The key is handed in by the caller, so the
//! core holds no randomness of its own.

use core::hash::Hasher;
use siphasher::sip::SipHasher24;
use std::net::SocketAddrV4;

use crate::time::Instant;
use crate::wire::SeqNumber;

/// Makes ISNs and timestamp offsets from a secret key.
#[derive(Clone)]
pub struct IsnGenerator {
    key: [u8; 16],
}

impl core::fmt::Debug for IsnGenerator {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("IsnGenerator { key: <secret> }")
    }
}

impl IsnGenerator {
    /// A generator keyed with `key` (draw it from a seeded or a system random source).
    pub fn new(key: [u8; 16]) -> IsnGenerator {
        IsnGenerator { key }
    }

    fn hash(&self, domain: u8, local: SocketAddrV4, remote: SocketAddrV4) -> u64 {
        let mut h = SipHasher24::new_with_key(&self.key);
        h.write_u8(domain);
        h.write(&local.ip().octets());
        h.write_u16(local.port());
        h.write(&remote.ip().octets());
        h.write_u16(remote.port());
        h.finish()
    }

    /// The ISN for a connection from `local` to `remote` opened at `now`.
    pub fn isn(&self, local: SocketAddrV4, remote: SocketAddrV4, now: Instant) -> SeqNumber {
        let m = (now.total_micros() / 4) as u32;
        SeqNumber(m.wrapping_add(self.hash(0, local, remote) as u32))
    }

    /// A per-connection offset for TCP timestamps (RFC 7323 §5.4), stable for a 4-tuple so that timestamps of
    /// successive connections on one tuple still increase (RFC 6191 relies on that).
    pub fn timestamp_offset(&self, local: SocketAddrV4, remote: SocketAddrV4) -> u32 {
        self.hash(1, local, remote) as u32
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn ep(a: u8, port: u16) -> SocketAddrV4 {
        SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, a), port)
    }

    #[test]
    fn isn_depends_on_tuple_and_key_and_advances_every_4us() {
        let g = IsnGenerator::new([7; 16]);
        let t = Instant::from_secs(100);
        let a = g.isn(ep(1, 80), ep(2, 40000), t);
        assert_ne!(a, g.isn(ep(1, 80), ep(2, 40001), t));
        assert_ne!(a, IsnGenerator::new([8; 16]).isn(ep(1, 80), ep(2, 40000), t));
        assert_eq!(g.isn(ep(1, 80), ep(2, 40000), Instant::from_micros(100_000_000 + 400)).diff(a), 100);
    }
}
