//! Reading a NIC's RSS setting (Toeplitz key and indirection table) with the ethtool ioctl `ETHTOOL_GRSSH`, what
//! `ethtool -x IFACE` shows. The multi-core engine uses it to choose source ports whose replies land on the opening
//! core's queue (`crate::engine::rss`).

use std::io;

/// `SIOCETHTOOL`, the ethtool ioctl request.
const SIOCETHTOOL: libc::c_ulong = 0x8946;
/// `ETHTOOL_GRSSH`: get the RSS hash key, indirection table and hash function.
const ETHTOOL_GRSSH: u32 = 0x46;
/// `ETH_RSS_HASH_TOP`: the Toeplitz hash function's bit in `hfunc`.
const ETH_RSS_HASH_TOP: u8 = 1;
/// Bytes of `struct ethtool_rxfh` before its `rss_config` array.
const RXFH_HEADER_BYTES: usize = 24;
/// Limits on what a driver may report (the engine's own limits are tighter).
const MAX_INDIR_ENTRIES: u32 = 1 << 16;
const MAX_KEY_BYTES: u32 = 1024;

/// `struct ifreq` with `ifr_data`: the interface name and a pointer to the ethtool command.
#[repr(C)]
struct IfReqData {
    name: [libc::c_char; libc::IFNAMSIZ],
    data: *mut libc::c_void,
    _pad: [u8; 16],
}

/// The RSS setting of a NIC: its Toeplitz key and indirection table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NicRss {
    /// The hash key.
    pub key: Vec<u8>,
    /// Entry `hash % len` is the rx queue.
    pub table: Vec<u32>,
}

/// Reads the RSS key and indirection table of the interface `ifname` (in this network namespace). Fails with
/// `Unsupported` where the driver has no RSS (veth, loopback) or hashes with something other than Toeplitz.
pub fn read_rss(ifname: &str) -> io::Result<NicRss> {
    let name = ifname.as_bytes();
    if name.is_empty() || name.len() >= libc::IFNAMSIZ || name.contains(&0) {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("bad interface name {ifname:?}")));
    }
    // SAFETY: socket(2) with constant arguments; the descriptor is checked and closed by OwnedFd.
    let raw = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if raw < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `raw` is a descriptor we just opened and own alone.
    let sock = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(raw) };
    let fd = std::os::fd::AsRawFd::as_raw_fd(&sock);

    // First call: sizes only (indir_size and key_size 0 ask the driver for them).
    let mut header = [0u32; RXFH_HEADER_BYTES / 4];
    header[0] = ETHTOOL_GRSSH;
    ethtool(fd, name, header.as_mut_ptr().cast())?;
    let (indir_size, key_size) = (header[2], header[3]);
    if indir_size == 0 || indir_size > MAX_INDIR_ENTRIES || key_size == 0 || key_size > MAX_KEY_BYTES {
        return Err(io::Error::new(io::ErrorKind::Unsupported, "no RSS indirection table or key"));
    }
    // Second call: header, then indir_size u32 entries, then key_size bytes.
    let words = RXFH_HEADER_BYTES / 4 + indir_size as usize + (key_size as usize).div_ceil(4);
    let mut buf = vec![0u32; words];
    buf[0] = ETHTOOL_GRSSH;
    buf[2] = indir_size;
    buf[3] = key_size;
    ethtool(fd, name, buf.as_mut_ptr().cast())?;
    let hfunc = buf[4].to_ne_bytes()[0];
    if hfunc != 0 && hfunc & ETH_RSS_HASH_TOP == 0 {
        return Err(io::Error::new(io::ErrorKind::Unsupported, format!("RSS hash function {hfunc:#x}, not Toeplitz")));
    }
    let first = RXFH_HEADER_BYTES / 4;
    let table = buf[first..first + indir_size as usize].to_vec();
    let key: Vec<u8> =
        buf[first + indir_size as usize..].iter().flat_map(|w| w.to_ne_bytes()).take(key_size as usize).collect();
    Ok(NicRss { key, table })
}

/// One `SIOCETHTOOL` call on `fd` for the interface `name` with the command at `data`.
fn ethtool(fd: libc::c_int, name: &[u8], data: *mut libc::c_void) -> io::Result<()> {
    let mut req = IfReqData { name: [0; libc::IFNAMSIZ], data, _pad: [0; 16] };
    for (dst, &b) in req.name.iter_mut().zip(name) {
        *dst = b as libc::c_char;
    }
    // SAFETY: `req` is a live, NUL-terminated ifreq (the name is shorter than IFNAMSIZ, checked by the caller)
    // whose `data` points at a buffer the caller sized for the command: the header alone for the size query, and
    // header + indir_size entries + key_size bytes for the full one, as ETHTOOL_GRSSH writes.
    let rc = unsafe { libc::ioctl(fd, SIOCETHTOOL as _, &mut req as *mut IfReqData) };
    if rc < 0 {
        let e = io::Error::last_os_error();
        return Err(match e.raw_os_error() {
            Some(libc::EOPNOTSUPP) => io::Error::new(io::ErrorKind::Unsupported, "the driver has no RSS"),
            _ => e,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_request_layout_matches_the_kernels() {
        assert_eq!(core::mem::size_of::<IfReqData>(), core::mem::size_of::<libc::ifreq>());
    }

    #[test]
    fn loopback_has_no_rss_and_bad_names_are_refused() {
        assert!(read_rss("lo").is_err());
        assert_eq!(read_rss("").unwrap_err().kind(), io::ErrorKind::InvalidInput);
        assert_eq!(read_rss("a-name-far-too-long").unwrap_err().kind(), io::ErrorKind::InvalidInput);
    }
}
