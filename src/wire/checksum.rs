//! The internet checksum (RFC 1071), the IPv4 pseudo-header (RFC 9293 §3.1) and incremental update (RFC 1624).
//!
//! Sums here are one's complement sums of big-endian 16-bit words, *not* complemented: [`data`],
//! [`pseudo_header`] and [`combine`] return partial sums that add up, and [`checksum`] (or `!sum`) gives the value
//! written in a header. A header verifies when the sum over it, checksum field included, is `0xffff`.

use std::net::Ipv4Addr;

/// Folds a wide one's complement accumulator to 16 bits with end-around carry.
pub const fn fold(mut acc: u64) -> u16 {
    while acc > 0xffff {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    acc as u16
}

/// The one's complement sum of `bytes` as big-endian 16-bit words, not complemented.
///
/// An odd trailing byte is the high byte of a last word padded with zero (RFC 1071 §4.1), so the sum of a slice
/// of odd length only combines with others when it is the last piece.
///
/// 32-bit words are added, in native byte order, into four independent 64-bit accumulators (deferred carries,
/// RFC 1071 §2 (C)): a u64 cannot overflow from u32 additions before 2^32 of them, far beyond any buffer here,
/// and the four sums have no dependency between them, so the processor adds them in parallel. Since 2^16 ≡ 1
/// modulo 0xffff, folding gives the same 16-bit sum as adding the words one by one, and the sum is independent of
/// byte order up to one final swap (RFC 1071 §2 (A), (B)).
pub fn data(bytes: &[u8]) -> u16 {
    #[inline(always)]
    fn word(b: &[u8], at: usize) -> u64 {
        u64::from(u32::from_ne_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]]))
    }
    let mut acc = [0u64; 4];
    let mut chunks = bytes.chunks_exact(16);
    for c in &mut chunks {
        acc[0] += word(c, 0);
        acc[1] += word(c, 4);
        acc[2] += word(c, 8);
        acc[3] += word(c, 12);
    }
    let rest = chunks.remainder();
    if !rest.is_empty() {
        // Zero padding at the end is exactly the odd-byte rule, and harmless for whole words.
        let mut tail = [0u8; 16];
        tail[..rest.len()].copy_from_slice(rest);
        for (i, a) in acc.iter_mut().enumerate() {
            *a += word(&tail, 4 * i);
        }
    }
    let sum = (acc[0] >> 32) + (acc[0] & 0xffff_ffff) + (acc[1] >> 32) + (acc[1] & 0xffff_ffff);
    let sum = sum + (acc[2] >> 32) + (acc[2] & 0xffff_ffff) + (acc[3] >> 32) + (acc[3] & 0xffff_ffff);
    // Words were read in native order; on a little-endian machine the folded sum has its bytes swapped.
    u16::from_be(fold(sum))
}

/// The checksum of `bytes` as written in a header: the complement of [`data`].
pub fn checksum(bytes: &[u8]) -> u16 {
    !data(bytes)
}

/// Adds partial sums (from [`data`], [`pseudo_header`]...) with end-around carry.
pub fn combine(sums: &[u16]) -> u16 {
    fold(sums.iter().fold(0u64, |acc, &s| acc + u64::from(s)))
}

/// The partial sum of the IPv4 pseudo-header of a TCP or UDP segment: source and destination addresses, zero,
/// protocol, and the segment length (header plus data) in bytes.
pub fn pseudo_header(src: Ipv4Addr, dst: Ipv4Addr, protocol: u8, length: u32) -> u16 {
    let src = u32::from(src);
    let dst = u32::from(dst);
    let acc = u64::from(src >> 16)
        + u64::from(src & 0xffff)
        + u64::from(dst >> 16)
        + u64::from(dst & 0xffff)
        + u64::from(protocol)
        + u64::from(length >> 16)
        + u64::from(length & 0xffff);
    fold(acc)
}

/// The new checksum after one 16-bit word of the covered data changes from `old_word` to `new_word`
/// (RFC 1624 eqn. 3: `HC' = ~(~HC + ~m + m')`), without summing the data again.
///
/// The result equals a full recomputation except when the new data is all zeros, where this gives `0x0000` and
/// the full sum `0xffff`: the two zeros of one's complement, both of which verify.
pub fn update(old_checksum: u16, old_word: u16, new_word: u16) -> u16 {
    !fold(u64::from(!old_checksum) + u64::from(!old_word) + u64::from(new_word))
}

/// [`update`] for a 32-bit field (an address, a sequence number) that lies on a 16-bit boundary.
pub fn update_u32(old_checksum: u16, old_value: u32, new_value: u32) -> u16 {
    let c = update(old_checksum, (old_value >> 16) as u16, (new_value >> 16) as u16);
    update(c, old_value as u16, new_value as u16)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A plain word-by-word reference implementation of RFC 1071, to check the fast one and test vectors.
    pub(crate) fn reference_sum(bytes: &[u8]) -> u16 {
        let mut acc: u32 = 0;
        let mut i = 0;
        while i < bytes.len() {
            let hi = u32::from(bytes[i]) << 8;
            let lo = if i + 1 < bytes.len() { u32::from(bytes[i + 1]) } else { 0 };
            acc += hi | lo;
            acc = (acc & 0xffff) + (acc >> 16);
            i += 2;
        }
        acc as u16
    }

    /// The reference sum of a TCP segment with its pseudo-header, built byte by byte.
    pub(crate) fn reference_tcp_sum(src: Ipv4Addr, dst: Ipv4Addr, segment: &[u8]) -> u16 {
        let mut bytes = Vec::new();
        bytes.extend_from_slice(&src.octets());
        bytes.extend_from_slice(&dst.octets());
        bytes.push(0);
        bytes.push(6);
        bytes.extend_from_slice(&(segment.len() as u16).to_be_bytes());
        bytes.extend_from_slice(segment);
        reference_sum(&bytes)
    }

    #[test]
    fn rfc1071_example() {
        // RFC 1071 §3: the words 0001 f203 f4f5 f6f7 sum to 2ddf0, folded ddf2.
        let bytes = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(data(&bytes), 0xddf2);
        assert_eq!(reference_sum(&bytes), 0xddf2);
        assert_eq!(checksum(&bytes), 0x220d);
        // Appending the checksum makes the whole verify.
        let mut with = bytes.to_vec();
        with.extend_from_slice(&0x220du16.to_be_bytes());
        assert_eq!(data(&with), 0xffff);
    }

    #[test]
    fn odd_length_pads_the_last_byte_low() {
        assert_eq!(data(&[0xab]), 0xab00);
        assert_eq!(data(&[0x00, 0x01, 0xf2]), 0xf201);
        assert_eq!(data(&[]), 0);
        assert_eq!(checksum(&[]), 0xffff);
        // Nine bytes: one 8-byte chunk and an odd tail.
        let bytes = [0xff; 9];
        assert_eq!(data(&bytes), reference_sum(&bytes));
    }

    #[test]
    fn ipv4_header_vector() {
        // The IPv4 header of a real Linux SYN (tests in tcp.rs): checksum 0xed12 in bytes 10..12.
        let header = [
            0x45, 0x00, 0x00, 0x3c, 0x39, 0xa7, 0x40, 0x00, 0x40, 0x06, 0xed, 0x12, 0x0a, 0x00, 0x00, 0x01, 0x0a, 0x00,
            0x00, 0x02,
        ];
        assert_eq!(data(&header), 0xffff);
        let mut zeroed = header;
        zeroed[10] = 0;
        zeroed[11] = 0;
        assert_eq!(checksum(&zeroed), 0xed12);
    }

    #[test]
    fn pseudo_header_matches_bytes() {
        let src = Ipv4Addr::new(10, 0, 0, 1);
        let dst = Ipv4Addr::new(192, 168, 255, 254);
        let bytes = [10, 0, 0, 1, 192, 168, 255, 254, 0, 6, 0x05, 0xdc];
        assert_eq!(pseudo_header(src, dst, 6, 1500), reference_sum(&bytes));
        // With a segment: pseudo-header and data sums combine into the byte-by-byte sum.
        let segment = [0xa0, 0xd4, 0x00, 0x50, 0x4e];
        let sum = combine(&[pseudo_header(src, dst, 6, segment.len() as u32), data(&segment)]);
        assert_eq!(sum, reference_tcp_sum(src, dst, &segment));
    }

    #[test]
    fn combine_adds_with_end_around_carry() {
        assert_eq!(combine(&[]), 0);
        assert_eq!(combine(&[0xffff, 0x0001]), 0x0001);
        assert_eq!(combine(&[0x8000, 0x8000]), 0x0001);
        assert_eq!(fold(0x2ddf0), 0xddf2);
        assert_eq!(fold(u64::MAX), 0xffff);
    }

    #[test]
    fn incremental_ttl_decrement() {
        // A router decrements TTL: the word at offset 8 holds TTL and protocol.
        let mut header = [
            0x45, 0x00, 0x00, 0x3c, 0x39, 0xa7, 0x40, 0x00, 0x40, 0x06, 0xed, 0x12, 0x0a, 0x00, 0x00, 0x01, 0x0a, 0x00,
            0x00, 0x02,
        ];
        let old = u16::from_be_bytes([header[8], header[9]]);
        header[8] -= 1;
        let new = u16::from_be_bytes([header[8], header[9]]);
        let c = update(0xed12, old, new);
        header[10..12].copy_from_slice(&c.to_be_bytes());
        assert_eq!(data(&header), 0xffff);
        header[10] = 0;
        header[11] = 0;
        assert_eq!(checksum(&header), c);
    }

    proptest! {
        #[test]
        fn fast_sum_equals_reference(bytes in proptest::collection::vec(any::<u8>(), 0..2000)) {
            prop_assert_eq!(data(&bytes), reference_sum(&bytes));
        }

        #[test]
        fn sums_of_even_pieces_combine(a in proptest::collection::vec(any::<u8>(), 0..300),
                                       b in proptest::collection::vec(any::<u8>(), 0..300)) {
            let mut a = a;
            if a.len() % 2 == 1 {
                a.pop();
            }
            let whole: Vec<u8> = a.iter().chain(b.iter()).copied().collect();
            prop_assert_eq!(combine(&[data(&a), data(&b)]), data(&whole));
        }

        #[test]
        fn incremental_update_equals_recomputation(
            words in proptest::collection::vec(any::<u16>(), 1..64),
            index in any::<prop::sample::Index>(),
            new_word in any::<u16>(),
        ) {
            let i = index.index(words.len());
            let bytes = |w: &[u16]| w.iter().flat_map(|x| x.to_be_bytes()).collect::<Vec<u8>>();
            let old_checksum = checksum(&bytes(&words));
            let mut changed = words.clone();
            changed[i] = new_word;
            let incremental = update(old_checksum, words[i], new_word);
            let full = checksum(&bytes(&changed));
            if changed.iter().any(|&w| w != 0) {
                prop_assert_eq!(incremental, full);
            } else {
                // All zeros: +0 and -0 are the same number in one's complement.
                prop_assert_eq!(fold(u64::from(incremental) + 1), fold(u64::from(full) + 1));
            }
            // Written into the data, the updated checksum verifies.
            let mut with = bytes(&changed);
            with.extend_from_slice(&incremental.to_be_bytes());
            prop_assert_eq!(data(&with), 0xffff);
        }

        #[test]
        fn incremental_u32_update_equals_recomputation(
            prefix in proptest::collection::vec(any::<u16>(), 1..16),
            old in any::<u32>(),
            new in any::<u32>(),
        ) {
            let mut bytes: Vec<u8> = prefix.iter().flat_map(|x| x.to_be_bytes()).collect();
            let at = bytes.len();
            bytes.extend_from_slice(&old.to_be_bytes());
            let old_checksum = checksum(&bytes);
            bytes[at..].copy_from_slice(&new.to_be_bytes());
            let c = update_u32(old_checksum, old, new);
            bytes.extend_from_slice(&c.to_be_bytes());
            prop_assert_eq!(data(&bytes), 0xffff);
        }
    }
}
