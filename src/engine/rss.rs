//! Receive-side scaling as a NIC does it: the Toeplitz hash of a frame's addresses and ports, and the indirection
//! table that turns the hash into an rx queue.
//!
//! The multi-core engine uses it for active opens on a NIC with RSS: a core chooses a source port for which the
//! NIC's hash of the *reply* (source = the peer, destination = us) lands on its own queue, as Seastar's `connect`
//! does, so replies need no hand-off ([`super::shard`], `docs/multicore.md`). The hash is the one in Microsoft's
//! "Verifying the RSS Hash Calculation" (the test vectors below come from there); the key and table are the NIC's
//! (`ethtool -x IFACE` shows them; [`Rss::parse_ethtool`] reads that output).

use std::net::SocketAddrV4;

/// The Toeplitz key the Microsoft RSS specification verifies against (also many NICs' default).
pub const MICROSOFT_KEY: [u8; 40] = [
    0x6d, 0x5a, 0x56, 0xda, 0x25, 0x5b, 0x0e, 0xc2, 0x41, 0x67, 0x25, 0x3d, 0x43, 0xa3, 0x8f, 0xb0, 0xd0, 0xca, 0x2b,
    0xcb, 0xae, 0x7b, 0x30, 0xb4, 0x77, 0xcb, 0x2d, 0xa3, 0x80, 0x30, 0xf2, 0x0c, 0x6a, 0x42, 0xb7, 0x3b, 0xbe, 0xac,
    0x01, 0xfa,
];

/// The longest key accepted, in bytes (NICs use 40 or 52).
pub const MAX_KEY_BYTES: usize = 64;
/// The largest indirection table accepted.
pub const MAX_TABLE_ENTRIES: usize = 4096;

/// The Toeplitz hash of `input` under `key`: for every set bit of the input, XOR in the 32 key bits starting at
/// that bit's position. `key` must be at least 4 bytes longer than `input`; missing key bits count as zero.
pub fn toeplitz(key: &[u8], input: &[u8]) -> u32 {
    let key_bit = |i: usize| -> u32 { key.get(i / 8).map_or(0, |b| u32::from(b >> (7 - i % 8) & 1)) };
    let mut window: u32 = (0..32).fold(0, |w, i| w << 1 | key_bit(i));
    let mut hash = 0;
    for (byte_index, &byte) in input.iter().enumerate() {
        for bit in 0..8 {
            if byte & (0x80 >> bit) != 0 {
                hash ^= window;
            }
            window = window << 1 | key_bit(byte_index * 8 + bit + 32);
        }
    }
    hash
}

/// The RSS input of an IPv4/TCP segment: source address, destination address, source port, destination port, all
/// in network byte order.
pub fn ipv4_tcp_input(src: SocketAddrV4, dst: SocketAddrV4) -> [u8; 12] {
    let mut input = [0u8; 12];
    input[0..4].copy_from_slice(&src.ip().octets());
    input[4..8].copy_from_slice(&dst.ip().octets());
    input[8..10].copy_from_slice(&src.port().to_be_bytes());
    input[10..12].copy_from_slice(&dst.port().to_be_bytes());
    input
}

/// A NIC's RSS setting: its Toeplitz key and its indirection table (entry `hash % len` is the rx queue).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rss {
    key: Vec<u8>,
    table: Vec<u32>,
}

/// Why an [`Rss`] could not be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RssError {
    /// The key is shorter than 16 or longer than [`MAX_KEY_BYTES`] bytes.
    #[error("an RSS key of {0} bytes (16 to 64)")]
    Key(usize),
    /// The table is empty or longer than [`MAX_TABLE_ENTRIES`].
    #[error("an RSS indirection table of {0} entries (1 to 4096)")]
    Table(usize),
    /// `ethtool -x` output without a key or a table.
    #[error("no {0} in the ethtool -x output")]
    Missing(&'static str),
}

impl Rss {
    /// RSS with `key` and indirection `table`.
    pub fn new(key: &[u8], table: Vec<u32>) -> Result<Rss, RssError> {
        if !(16..=MAX_KEY_BYTES).contains(&key.len()) {
            return Err(RssError::Key(key.len()));
        }
        if table.is_empty() || table.len() > MAX_TABLE_ENTRIES {
            return Err(RssError::Table(table.len()));
        }
        Ok(Rss { key: key.to_vec(), table })
    }

    /// The rx queue a hash selects.
    pub fn queue_of_hash(&self, hash: u32) -> u32 {
        self.table[hash as usize % self.table.len()]
    }

    /// The rx queue of an IPv4/TCP segment from `src` to `dst`.
    pub fn queue(&self, src: SocketAddrV4, dst: SocketAddrV4) -> u32 {
        self.queue_of_hash(toeplitz(&self.key, &ipv4_tcp_input(src, dst)))
    }

    /// The rx queue the replies of a connection from `local` to `remote` arrive on.
    pub fn reply_queue(&self, local: SocketAddrV4, remote: SocketAddrV4) -> u32 {
        self.queue(remote, local)
    }

    /// Reads the output of `ethtool -x IFACE`: the indirection table's rows (`  0:  0 1 2 3 ...`) and the
    /// `RSS hash key:` line (`6d:5a:...`).
    pub fn parse_ethtool(text: &str) -> Result<Rss, RssError> {
        let mut table = Vec::new();
        let mut key = None;
        let mut lines = text.lines();
        while let Some(line) = lines.next() {
            let line = line.trim();
            if line.starts_with("RSS hash key") {
                let hex = lines.next().ok_or(RssError::Missing("key"))?.trim();
                let bytes: Option<Vec<u8>> = hex.split(':').map(|h| u8::from_str_radix(h, 16).ok()).collect();
                key = Some(bytes.ok_or(RssError::Missing("key"))?);
            } else if let Some((index, rest)) = line.split_once(':') {
                if index.trim().parse::<usize>().is_ok() && key.is_none() {
                    for q in rest.split_whitespace() {
                        table.push(q.parse().map_err(|_| RssError::Missing("table"))?);
                        if table.len() > MAX_TABLE_ENTRIES {
                            return Err(RssError::Table(table.len()));
                        }
                    }
                }
            }
        }
        let key = key.ok_or(RssError::Missing("key"))?;
        if table.is_empty() {
            return Err(RssError::Missing("table"));
        }
        Rss::new(&key, table)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddrV4 {
        s.parse().unwrap()
    }

    /// Microsoft's verification suite, IPv4: (destination, source, hash of the addresses, hash with the ports).
    const VECTORS: [(&str, &str, u32, u32); 5] = [
        ("161.142.100.80:1766", "66.9.149.187:2794", 0x323e_8fc2, 0x51cc_c178),
        ("65.69.140.83:4739", "199.92.111.2:14230", 0xd718_262a, 0xc626_b0ea),
        ("12.22.207.184:38024", "24.19.198.95:12898", 0xd2d0_a5de, 0x5c2b_394a),
        ("209.142.163.6:2217", "38.27.205.30:48228", 0x8298_9176, 0xafc7_327f),
        ("202.188.127.2:1303", "153.39.163.191:44251", 0x5d18_09c5, 0x10e8_28a2),
    ];

    #[test]
    fn toeplitz_matches_the_microsoft_verification_vectors() {
        for (dst, src, ip_hash, tcp_hash) in VECTORS {
            let input = ipv4_tcp_input(addr(src), addr(dst));
            assert_eq!(toeplitz(&MICROSOFT_KEY, &input[..8]), ip_hash, "{src} -> {dst}, addresses only");
            assert_eq!(toeplitz(&MICROSOFT_KEY, &input), tcp_hash, "{src} -> {dst}, with ports");
        }
    }

    #[test]
    fn the_table_maps_hashes_to_queues_and_reply_queue_hashes_the_reply() {
        let rss = Rss::new(&MICROSOFT_KEY, vec![0, 1, 2, 3]).unwrap();
        assert_eq!(rss.queue_of_hash(0x51cc_c178), 0x51cc_c178 % 4);
        let (local, remote) = (addr("161.142.100.80:1766"), addr("66.9.149.187:2794"));
        assert_eq!(rss.reply_queue(local, remote), 0x51cc_c178 % 4);
        // Over many source ports every queue is hit, roughly evenly.
        let mut counts = [0u32; 4];
        for port in 32768..36864u16 {
            counts[rss.reply_queue(SocketAddrV4::new(*local.ip(), port), remote) as usize] += 1;
        }
        assert!(counts.iter().all(|&c| (800..1250).contains(&c)), "{counts:?}");
        assert!(Rss::new(&MICROSOFT_KEY[..8], vec![0]).is_err());
        assert!(Rss::new(&MICROSOFT_KEY, vec![]).is_err());
    }

    #[test]
    fn ethtool_x_output_is_read() {
        let text = "RX flow hash indirection table for eth0 with 2 RX ring(s):\n\
                    \x20   0:      0     1     0     1     0     1     0     1\n\
                    \x20   8:      0     1     0     1     0     1     0     1\n\
                    RSS hash key:\n\
                    6d:5a:56:da:25:5b:0e:c2:41:67:25:3d:43:a3:8f:b0:d0:ca:2b:cb:ae:7b:30:b4:77:cb:2d:a3:80:30:f2:0c:\
                    6a:42:b7:3b:be:ac:01:fa\n\
                    RSS hash function:\n    toeplitz: on\n    xor: off\n";
        let rss = Rss::parse_ethtool(text).unwrap();
        assert_eq!(rss, Rss::new(&MICROSOFT_KEY, [0, 1].repeat(8)).unwrap());
        assert_eq!(Rss::parse_ethtool("RSS hash key:\nzz\n"), Err(RssError::Missing("key")));
        assert_eq!(Rss::parse_ethtool("nothing"), Err(RssError::Missing("key")));
    }
}
