//! Loading the steering program, configuring it, and attaching it as a BPF link.

use std::fmt;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, BorrowedFd};

use libbpf_rs::{Link, MapCore, MapFlags, MapHandle, Object, ObjectBuilder};

use super::shared::{
    xtcp_config, xtcp_counters, XTCP_CONFIG_KEY, XTCP_MAP_CONFIG, XTCP_MAP_COUNTERS, XTCP_MAP_XSKS, XTCP_MAX_ADDRS,
    XTCP_MAX_QUEUES, XTCP_PORT_WORDS, XTCP_PORT_WORD_BITS, XTCP_PROG_STEER,
};
use super::{AfXdpError, Result, PROGRAM_OBJECT};

/// What the steering program did with one rx queue's frames, summed over CPUs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct QueueCounters {
    /// Frames handed to the queue's AF_XDP socket.
    pub redirected: u64,
    /// Frames that were not ours (another protocol, address or port), passed to the kernel.
    pub passed: u64,
    /// Frames with short or malformed headers, passed to the kernel.
    pub parse_errors: u64,
    /// Frames that were ours but found no socket in the XSKMAP at their queue, passed to the kernel.
    pub no_socket: u64,
}

impl From<xtcp_counters> for QueueCounters {
    fn from(c: xtcp_counters) -> QueueCounters {
        QueueCounters {
            redirected: c.redirected,
            passed: c.passed,
            parse_errors: c.parse_errors,
            no_socket: c.no_socket,
        }
    }
}

impl core::ops::AddAssign for QueueCounters {
    fn add_assign(&mut self, o: QueueCounters) {
        self.redirected += o.redirected;
        self.passed += o.passed;
        self.parse_errors += o.parse_errors;
        self.no_socket += o.no_socket;
    }
}

/// The loaded steering program, its maps, and (once attached) its link to an interface.
///
/// Dropping it detaches the program; so does the end of the process in any way, since the link is a file
/// descriptor, not a pinned object.
pub struct Steering {
    config: Box<xtcp_config>,
    config_map: MapHandle,
    counters_map: MapHandle,
    xsks_map: MapHandle,
    link: Option<(u32, Link)>,
    // Declared last: the maps above hold their own descriptors, the object owns the program.
    object: Object,
}

impl fmt::Debug for Steering {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Steering")
            .field("addresses", &self.addresses())
            .field("ports", &self.ports().count())
            .field("ifindex", &self.link.as_ref().map(|(i, _)| *i))
            .finish_non_exhaustive()
    }
}

fn bpf(what: &'static str) -> impl FnOnce(libbpf_rs::Error) -> AfXdpError {
    move |source| AfXdpError::Bpf { what, source }
}

impl Steering {
    /// Loads the program into the kernel and sets it to steer TCP segments for any of `ips` (the stack's address
    /// and its aliases, at most `XTCP_MAX_ADDRS`; repeats count once) and `ports` (add more with
    /// [`Steering::allow_port`]). Nothing is attached yet. Needs CAP_BPF and CAP_NET_ADMIN (root).
    pub fn load(ips: &[Ipv4Addr], ports: impl IntoIterator<Item = u16>) -> Result<Steering> {
        let mut config = Box::new(empty_config());
        set_addresses(&mut config, ips)?;
        let open = ObjectBuilder::default().open_memory(PROGRAM_OBJECT).map_err(bpf("open the XDP object"))?;
        let object = open.load().map_err(bpf("load the XDP program (is this root?)"))?;
        let handle = |name: &'static str| -> Result<MapHandle> {
            let map = object.maps().find(|m| m.name() == name).ok_or(AfXdpError::Missing(name))?;
            MapHandle::try_from(&map).map_err(bpf("duplicate a map descriptor"))
        };
        let mut steering = Steering {
            config,
            config_map: handle(XTCP_MAP_CONFIG)?,
            counters_map: handle(XTCP_MAP_COUNTERS)?,
            xsks_map: handle(XTCP_MAP_XSKS)?,
            link: None,
            object,
        };
        if !steering.object.progs().any(|p| p.name() == XTCP_PROG_STEER) {
            return Err(AfXdpError::Missing(XTCP_PROG_STEER));
        }
        for port in ports {
            set_bit(&mut steering.config, port, true);
        }
        steering.write_config()?;
        Ok(steering)
    }

    /// Attaches the program to the interface with index `ifindex` as a BPF link (native XDP where the driver has
    /// it). Fails if another program is attached there, or if this one already is.
    pub fn attach(&mut self, ifindex: u32) -> Result<()> {
        if self.link.is_some() {
            return Err(AfXdpError::Config("the steering program is already attached".into()));
        }
        let prog = self
            .object
            .progs_mut()
            .find(|p| p.name() == XTCP_PROG_STEER)
            .ok_or(AfXdpError::Missing(XTCP_PROG_STEER))?;
        let ifindex_i32 = i32::try_from(ifindex).map_err(|_| AfXdpError::Config(format!("ifindex {ifindex}")))?;
        let link = prog.attach_xdp(ifindex_i32).map_err(bpf("attach the XDP program"))?;
        self.link = Some((ifindex, link));
        Ok(())
    }

    /// [`Steering::load`], then [`Steering::attach`] to the interface named `ifname`.
    pub fn load_and_attach(ifname: &str, ips: &[Ipv4Addr], ports: impl IntoIterator<Item = u16>) -> Result<Steering> {
        let ifindex =
            super::interface_index(ifname).map_err(|source| AfXdpError::Io { what: "find the interface", source })?;
        let mut s = Steering::load(ips, ports)?;
        s.attach(ifindex)?;
        Ok(s)
    }

    /// Detaches the program (dropping does the same).
    pub fn detach(&mut self) {
        self.link = None;
    }

    /// The interface the program is attached to.
    pub fn ifindex(&self) -> Option<u32> {
        self.link.as_ref().map(|(i, _)| *i)
    }

    /// The addresses steered, the primary first.
    pub fn addresses(&self) -> Vec<Ipv4Addr> {
        let count = (self.config.addr_count as usize).min(self.config.addrs_be.len());
        self.config.addrs_be[..count].iter().map(|a| Ipv4Addr::from(a.to_ne_bytes())).collect()
    }

    /// The TCP destination ports steered, ascending.
    pub fn ports(&self) -> impl Iterator<Item = u16> + '_ {
        (0..=u16::MAX).filter(|&p| get_bit(&self.config, p))
    }

    /// Starts steering segments for TCP port `port` (a new listener).
    pub fn allow_port(&mut self, port: u16) -> Result<()> {
        self.allow_ports(port..=port)
    }

    /// Starts steering a range of TCP ports (the stack's ephemeral range).
    pub fn allow_ports(&mut self, ports: core::ops::RangeInclusive<u16>) -> Result<()> {
        for p in ports {
            set_bit(&mut self.config, p, true);
        }
        self.write_config()
    }

    /// Stops steering segments for `port`: the kernel gets them again.
    pub fn deny_port(&mut self, port: u16) -> Result<()> {
        set_bit(&mut self.config, port, false);
        self.write_config()
    }

    /// Puts the AF_XDP socket `fd` into the XSKMAP at rx queue `queue`, replacing any socket there.
    pub fn register_socket(&self, queue: u32, fd: BorrowedFd<'_>) -> Result<()> {
        if queue >= XTCP_MAX_QUEUES {
            return Err(AfXdpError::Config(format!("queue {queue} is beyond XTCP_MAX_QUEUES ({XTCP_MAX_QUEUES})")));
        }
        let raw = u32::try_from(fd.as_raw_fd()).map_err(|_| AfXdpError::Config("negative fd".into()))?;
        self.xsks_map
            .update(&queue.to_ne_bytes(), &raw.to_ne_bytes(), MapFlags::ANY)
            .map_err(bpf("put the socket into the XSKMAP"))
    }

    /// Takes the socket at `queue` out of the XSKMAP: its frames pass to the kernel again.
    pub fn unregister_socket(&self, queue: u32) -> Result<()> {
        match self.xsks_map.delete(&queue.to_ne_bytes()) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == libbpf_rs::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(AfXdpError::Bpf { what: "take the socket out of the XSKMAP", source: e }),
        }
    }

    /// The program's counters for rx queue `queue`, summed over CPUs.
    pub fn counters(&self, queue: u32) -> Result<QueueCounters> {
        let per_cpu = self
            .counters_map
            .lookup_percpu(&queue.to_ne_bytes(), MapFlags::ANY)
            .map_err(bpf("read the counters"))?
            .unwrap_or_default();
        let mut sum = QueueCounters::default();
        for bytes in per_cpu {
            if bytes.len() != core::mem::size_of::<xtcp_counters>() {
                return Err(AfXdpError::Config(format!("counter value of {} bytes", bytes.len())));
            }
            // SAFETY: `bytes` holds exactly size_of::<xtcp_counters>() bytes (checked above), the struct is
            // repr(C) of u64 fields only, so every bit pattern is valid, and read_unaligned needs no alignment.
            let c: xtcp_counters = unsafe { core::ptr::read_unaligned(bytes.as_ptr().cast()) };
            sum += c.into();
        }
        Ok(sum)
    }

    /// Runs the program once in the kernel on `frame` (`BPF_PROG_TEST_RUN`), as if it had arrived on rx queue 0 of
    /// the namespace's loopback, attached or not: its XDP action (`XDP_PASS` where it would redirect to an empty
    /// XSKMAP slot). Its counters and fragment memory change as for a received frame. Needs root.
    pub fn test_run(&mut self, frame: &[u8]) -> Result<u32> {
        let prog = self
            .object
            .progs_mut()
            .find(|p| p.name() == XTCP_PROG_STEER)
            .ok_or(AfXdpError::Missing(XTCP_PROG_STEER))?;
        let input = libbpf_rs::ProgramInput { data_in: Some(frame), ..Default::default() };
        prog.test_run(input).map(|out| out.return_value).map_err(bpf("run the XDP program on a test frame"))
    }

    /// The counters of every queue, summed.
    pub fn total_counters(&self) -> Result<QueueCounters> {
        let mut sum = QueueCounters::default();
        for q in 0..XTCP_MAX_QUEUES {
            sum += self.counters(q)?;
        }
        Ok(sum)
    }

    fn write_config(&self) -> Result<()> {
        let cfg: &xtcp_config = &self.config;
        // SAFETY: xtcp_config is repr(C) of u32 and u64 fields with no padding (bindgen's layout test fixes its size
        // at 8 + 4 * XTCP_MAX_ADDRS + 8 * XTCP_PORT_WORDS, with XTCP_MAX_ADDRS even), so all size_of bytes are initialised; the slice borrows `cfg` only for the
        // update below.
        let bytes = unsafe {
            core::slice::from_raw_parts((cfg as *const xtcp_config).cast::<u8>(), core::mem::size_of::<xtcp_config>())
        };
        self.config_map
            .update(&XTCP_CONFIG_KEY.to_ne_bytes(), bytes, MapFlags::ANY)
            .map_err(bpf("write the steering config"))
    }
}

/// Steers nothing: no address, no ports.
fn empty_config() -> xtcp_config {
    xtcp_config {
        addr_count: 0,
        reserved: 0,
        addrs_be: [0; XTCP_MAX_ADDRS as usize],
        ports: [0; XTCP_PORT_WORDS as usize],
    }
}

/// Puts `ips` (without repeats) into the address array; more than `XTCP_MAX_ADDRS` is an error.
fn set_addresses(cfg: &mut xtcp_config, ips: &[Ipv4Addr]) -> Result<()> {
    let mut count = 0;
    for ip in ips {
        let be = u32::from_ne_bytes(ip.octets());
        if cfg.addrs_be[..count].contains(&be) {
            continue;
        }
        if count == cfg.addrs_be.len() {
            return Err(AfXdpError::Config(format!("more than {XTCP_MAX_ADDRS} addresses to steer")));
        }
        cfg.addrs_be[count] = be;
        count += 1;
    }
    cfg.addr_count = count as u32;
    Ok(())
}

fn set_bit(cfg: &mut xtcp_config, port: u16, on: bool) {
    let (word, bit) = (usize::from(port) / XTCP_PORT_WORD_BITS as usize, u32::from(port) % XTCP_PORT_WORD_BITS);
    if on {
        cfg.ports[word] |= 1 << bit;
    } else {
        cfg.ports[word] &= !(1 << bit);
    }
}

fn get_bit(cfg: &xtcp_config, port: u16) -> bool {
    let (word, bit) = (usize::from(port) / XTCP_PORT_WORD_BITS as usize, u32::from(port) % XTCP_PORT_WORD_BITS);
    cfg.ports[word] >> bit & 1 == 1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_bits_round_trip() {
        let mut cfg = empty_config();
        for p in [0u16, 1, 63, 64, 7777, 32768, 65535] {
            assert!(!get_bit(&cfg, p));
            set_bit(&mut cfg, p, true);
            assert!(get_bit(&cfg, p));
        }
        set_bit(&mut cfg, 64, false);
        assert!(!get_bit(&cfg, 64) && get_bit(&cfg, 63));
        assert_eq!(cfg.ports[0], 1 | 1 << 1 | 1 << 63);
    }

    #[test]
    fn addresses_are_stored_as_on_the_wire_without_repeats_and_bounded() {
        let mut cfg = empty_config();
        let (a, b) = (Ipv4Addr::new(10, 77, 1, 2), Ipv4Addr::new(10, 77, 1, 10));
        set_addresses(&mut cfg, &[a, b, a]).unwrap();
        assert_eq!(cfg.addr_count, 2);
        assert_eq!(cfg.addrs_be[0].to_ne_bytes(), [10, 77, 1, 2], "network byte order in memory");
        assert_eq!(cfg.addrs_be[1].to_ne_bytes(), [10, 77, 1, 10]);
        let many: Vec<Ipv4Addr> = (0..=XTCP_MAX_ADDRS).map(|i| Ipv4Addr::from(0x0a00_0000 + i)).collect();
        assert!(set_addresses(&mut cfg, &many[..XTCP_MAX_ADDRS as usize]).is_ok());
        assert!(set_addresses(&mut cfg, &many).is_err());
        assert_eq!(XTCP_MAX_ADDRS as usize, crate::engine::MAX_LOCAL_ADDRESSES, "one limit on both sides");
    }
}
