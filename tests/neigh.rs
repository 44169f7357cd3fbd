//! The kernel's neighbour table over netlink (`xtcp::nic::neigh`), in network namespaces the test makes.

use std::net::Ipv4Addr;
use std::process::Command;
use std::time::Duration;

use nix::sched::{setns, CloneFlags};
use xtcp::nic::neigh::Neighbors;
use xtcp::wire::EthernetAddress;

/// Two namespaces joined by a veth pair, removed on drop (also when the test fails).
struct NetnsPair {
    a: String,
    b: String,
    if_a: String,
    ip_a: Ipv4Addr,
    ip_b: Ipv4Addr,
}

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("ip runs");
    assert!(out.status.success(), "ip {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

impl NetnsPair {
    fn new(tag: &str) -> NetnsPair {
        let id = std::process::id() % 10_000;
        let pair = NetnsPair {
            a: format!("xtcp-{tag}-a-{id}"),
            b: format!("xtcp-{tag}-b-{id}"),
            if_a: format!("xn{tag}a{id}"),
            ip_a: Ipv4Addr::new(10, 203, (id % 250) as u8, 1),
            ip_b: Ipv4Addr::new(10, 203, (id % 250) as u8, 2),
        };
        ip(&["netns", "add", &pair.a]);
        ip(&["netns", "add", &pair.b]);
        let if_b = format!("xn{tag}b{id}");
        ip(&["link", "add", &pair.if_a, "netns", &pair.a, "type", "veth", "peer", "name", &if_b, "netns", &pair.b]);
        ip(&["-n", &pair.a, "addr", "add", &format!("{}/24", pair.ip_a), "dev", &pair.if_a]);
        ip(&["-n", &pair.b, "addr", "add", &format!("{}/24", pair.ip_b), "dev", &if_b]);
        ip(&["-n", &pair.a, "link", "set", &pair.if_a, "up"]);
        ip(&["-n", &pair.b, "link", "set", &if_b, "up"]);
        pair
    }

    fn mac_b(&self) -> EthernetAddress {
        let out = Command::new("ip").args(["-n", &self.b, "-o", "link"]).output().unwrap();
        let text = String::from_utf8(out.stdout).unwrap();
        let line = text.lines().find(|l| l.contains("link/ether")).expect("b has an ethernet link");
        let mac = line.split("link/ether ").nth(1).unwrap().split_whitespace().next().unwrap();
        let bytes: Vec<u8> = mac.split(':').map(|h| u8::from_str_radix(h, 16).unwrap()).collect();
        EthernetAddress::from_bytes(&bytes).unwrap()
    }

    /// Runs `f` on a thread that has entered namespace `a`.
    fn in_a<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        let path = format!("/var/run/netns/{}", self.a);
        std::thread::scope(|s| {
            s.spawn(|| {
                let ns = std::fs::File::open(&path).expect("namespace file");
                setns(ns, CloneFlags::CLONE_NEWNET).expect("setns");
                f()
            })
            .join()
            .unwrap()
        })
    }
}

impl Drop for NetnsPair {
    fn drop(&mut self) {
        for ns in [&self.a, &self.b] {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

#[test]
#[ignore = "needs root: run scripts/test.sh"]
fn a_missing_neighbour_is_resolved_by_the_kernel_and_read_back() {
    let pair = NetnsPair::new("nb");
    let expected = pair.mac_b();
    let (before, resolved, listed) = pair.in_a(|| {
        let ifindex = nix::net::if_::if_nametoindex(pair.if_a.as_str()).expect("ifindex");
        let mut n = Neighbors::open().expect("netlink");
        let before = n.lookup(ifindex, pair.ip_b).unwrap();
        let resolved = n.resolve(ifindex, pair.ip_b, Duration::from_secs(3)).unwrap();
        let listed = n.dump().unwrap().iter().any(|e| e.ip == pair.ip_b && e.ifindex == ifindex);
        assert_eq!(n.interface_addresses(ifindex).unwrap(), [pair.ip_a], "the interface's own address");
        (before, resolved, listed)
    });
    assert_eq!(before, None, "a fresh namespace has no entry yet");
    assert_eq!(resolved, Some(expected));
    assert!(listed);
}

#[test]
#[ignore = "needs root: run scripts/test.sh"]
fn an_absent_host_is_not_resolved() {
    let pair = NetnsPair::new("nx");
    let ghost = Ipv4Addr::new(pair.ip_a.octets()[0], pair.ip_a.octets()[1], pair.ip_a.octets()[2], 77);
    let resolved = pair.in_a(|| {
        let ifindex = nix::net::if_::if_nametoindex(pair.if_a.as_str()).expect("ifindex");
        Neighbors::open().unwrap().resolve(ifindex, ghost, Duration::from_millis(500)).unwrap()
    });
    assert_eq!(resolved, None);
}
