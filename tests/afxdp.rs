//! The AF_XDP path over veth, against the real Linux stack. Needs root: `scripts/test.sh` runs these.
//!
//! Each test makes its own pair of network namespaces with `scripts/netns.sh` (names derived from the test and
//! this process's id) and removes them when it ends, failing or not. The xtcp side runs in a child process — this
//! test binary again, under `ip netns exec`, told what to do by `XTCP_AFXDP_CHILD` — so it sees its namespace's
//! interfaces and sysfs, and so the parent can kill it. The fixtures are in `tests/common_afxdp/`; the interop
//! matrix against the kernel's TCP (nc, curl, teardowns, impairment, round trips) is `tests/interop.rs`.
#![cfg(all(feature = "afxdp", target_os = "linux"))]

mod common_afxdp;

use std::collections::HashMap;
use std::io::Write;
use std::net::Ipv4Addr;
use std::process::Command;
use std::time::{Duration, Instant as StdInstant};

use common_afxdp::{child_env, child_role, has_xdp, run, wait_until, Netns};

use xtcp::engine::{ConnId, Stack, StackConfig, StackEvent};
use xtcp::nic::afxdp::{self, BindMode, Steering, XskConfig, XskDevice};
use xtcp::time::Instant;

const ECHO_PORT: u16 = 7777;

// ----- (a) The program leaves with the process -----

/// The child: attach the steering program, say so, then end as `XTCP_AFXDP_CHILD` says.
#[test]
#[ignore = "needs root: run scripts/test.sh"]
fn child_attach() {
    let Some(role) = child_role() else { return };
    let ip: Ipv4Addr = child_env("XTCP_IP").parse().unwrap();
    let steering = Steering::load_and_attach(&child_env("XTCP_IF"), &[ip], [ECHO_PORT]).expect("attach");
    println!("ATTACHED {}", steering.ifindex().unwrap());
    std::io::stdout().flush().unwrap();
    match role.as_str() {
        "panic" => panic!("the child panics with the program attached (on purpose)"),
        "return" => {
            std::thread::sleep(Duration::from_millis(300));
            std::mem::forget(steering); // not even a destructor: only the process's end closes the link
        }
        _ => std::thread::sleep(Duration::from_secs(60)), // killed long before
    }
}

#[test]
#[ignore = "needs root: run scripts/test.sh"]
fn xdp_program_is_gone_after_any_exit() {
    if child_role().is_some() {
        return;
    }
    let ns = Netns::up("a");
    for how in ["SIGKILL", "SIGINT", "panic", "return"] {
        assert!(!has_xdp(&ns.xtcp_link()), "an XDP program is attached before the child starts");
        let mut child = ns.spawn_child("child_attach", if how.starts_with("SIG") { "sleep" } else { how });
        child.expect_line("ATTACHED", Duration::from_secs(20));
        let link = ns.xtcp_link();
        assert!(has_xdp(&link), "{how}: no XDP program while the child holds the link:\n{link}");
        if let Some(signal) = how.strip_prefix("SIG") {
            run(Command::new("kill").args([&format!("-{signal}"), &child.child.id().to_string()]));
        }
        let status = child.wait(Duration::from_secs(20));
        println!("{how}: child ended with {status}");
        assert!(
            wait_until(Duration::from_secs(5), || !has_xdp(&ns.xtcp_link())),
            "{how}: the XDP program is still attached after the child ended:\n{}",
            ns.xtcp_link()
        );
    }
}

// ----- Bind modes: zero-copy can be forced, and veth refuses it -----

/// The child: force zero-copy (veth has none), then force copy.
#[test]
#[ignore = "needs root: run scripts/test.sh"]
fn child_bind_modes() {
    if child_role().is_none() {
        return;
    }
    let ifname = child_env("XTCP_IF");
    let ip: Ipv4Addr = child_env("XTCP_IP").parse().unwrap();
    let steering = Steering::load_and_attach(&ifname, &[ip], [ECHO_PORT]).expect("attach");
    let zc = XskConfig { mode: BindMode::ZeroCopy, ..XskConfig::DEFAULT };
    match XskDevice::open(&ifname, &zc, &steering) {
        Ok(dev) => println!("ZC_OK {:?}", dev.mode()),
        Err(e) => println!("ZC_ERR {e}"),
    }
    let copy = XskConfig { mode: BindMode::Copy, ..XskConfig::DEFAULT };
    let dev = XskDevice::open(&ifname, &copy, &steering).expect("copy mode works everywhere");
    println!("COPY_OK {:?} tx_budget={}", dev.mode(), dev.tx_budget_frames());
    // The queue binds again right after its socket closes (the kernel lets the old one go in deferred work).
    drop(dev);
    let mut reopened = 0;
    for _ in 0..10 {
        match XskDevice::open(&ifname, &copy, &steering) {
            Ok(dev) => {
                reopened += 1;
                drop(dev);
            }
            Err(e) => println!("REOPEN_ERR {e}"),
        }
    }
    println!("REOPENED {reopened}");
}

#[test]
#[ignore = "needs root: run scripts/test.sh"]
fn forced_zero_copy_fails_on_veth_and_forced_copy_works() {
    if child_role().is_some() {
        return;
    }
    let ns = Netns::up("m");
    let mut child = ns.spawn_child("child_bind_modes", "modes");
    let zc = child.expect_line("ZC_", Duration::from_secs(20));
    assert!(
        zc.starts_with("ZC_ERR") && zc.contains("os error 95"),
        "veth should refuse zero-copy with EOPNOTSUPP: {zc}"
    );
    let copy = child.expect_line("COPY_OK", Duration::from_secs(20));
    assert!(copy.contains("Copy"), "{copy}");
    let reopened = child.expect_line("REOPEN", Duration::from_secs(60));
    assert_eq!(reopened, "REOPENED 10", "a queue whose socket just closed would not bind again");
    assert!(child.wait(Duration::from_secs(20)).success());
}

// ----- (b) Steering: an xtcp echo server answers the kernel's TCP, the kernel still answers ping -----

/// The echo application's per-connection state.
#[derive(Default)]
struct EchoConn {
    unsent: Vec<u8>,
    peer_closed: bool,
    closing: bool,
}

/// Sends what waits, reads what came, sends it back; closes once the peer has and all is echoed.
fn echo_step(stack: &mut Stack, id: ConnId, c: &mut EchoConn, buf: &mut [u8]) {
    loop {
        if !c.unsent.is_empty() {
            let n = stack.send(id, &c.unsent).unwrap_or(0);
            c.unsent.drain(..n);
            if !c.unsent.is_empty() {
                break; // send buffer full: wait for Writable
            }
        }
        match stack.recv(id, buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => c.unsent.extend_from_slice(&buf[..n]),
        }
    }
    if c.peer_closed && c.unsent.is_empty() && !c.closing {
        c.closing = true;
        let _ = stack.close(id);
    }
}

/// The child: an xtcp echo server on the AF_XDP device, until `XTCP_ECHO_CONNS` connections have closed.
#[test]
#[ignore = "needs root: run scripts/test.sh"]
fn child_echo() {
    let Some(role) = child_role() else { return };
    let ifname = child_env("XTCP_IF");
    let ip: Ipv4Addr = child_env("XTCP_IP").parse().unwrap();
    let conns_wanted: usize = role.strip_prefix("echo:").and_then(|n| n.parse().ok()).unwrap_or(1);
    let t0 = StdInstant::now();
    let clock = || Instant::from_micros(t0.elapsed().as_micros() as u64);

    let mac = afxdp::interface_mac(&ifname).expect("interface MAC");
    let mut cfg = StackConfig::new(mac, ip, 7);
    cfg.arp = false; // the kernel keeps ARP for the address it shares with us
    let ephemeral = cfg.ephemeral_ports.clone();
    let mut steering = Steering::load_and_attach(&ifname, &[ip], [ECHO_PORT]).expect("attach the steering program");
    steering.allow_ports(ephemeral).expect("steer the ephemeral ports");
    let xsk_cfg = XskConfig { mode: BindMode::Auto, ..XskConfig::DEFAULT };
    let mut dev = XskDevice::open(&ifname, &xsk_cfg, &steering).expect("open the AF_XDP socket");
    let mut stack = Stack::new(cfg, clock());
    stack.listen(ECHO_PORT).unwrap();
    println!("READY mode={:?} tx_budget={}", dev.mode(), dev.tx_budget_frames());
    std::io::stdout().flush().unwrap();

    let mut conns: HashMap<ConnId, EchoConn> = HashMap::new();
    let mut closed = 0;
    let mut buf = vec![0u8; 64 * 1024];
    let deadline = t0 + Duration::from_secs(60);
    while closed < conns_wanted {
        assert!(StdInstant::now() < deadline, "echo child: timed out; {:?}", stack.counters());
        let received = stack.poll(clock(), &mut dev);
        let mut touched = Vec::new();
        while let Some(ev) = stack.next_event() {
            match ev {
                StackEvent::Accepted { conn, .. } => {
                    conns.insert(conn, EchoConn::default());
                }
                StackEvent::Readable(id) | StackEvent::Writable(id) => touched.push(id),
                StackEvent::PeerClosed(id) => {
                    if let Some(c) = conns.get_mut(&id) {
                        c.peer_closed = true;
                    }
                    touched.push(id);
                }
                StackEvent::Closed(id, reason) => {
                    println!("CLOSED {reason:?}");
                    conns.remove(&id);
                    closed += 1;
                }
                StackEvent::Connected(_) => {}
            }
        }
        for id in touched {
            if let Some(c) = conns.get_mut(&id) {
                echo_step(&mut stack, id, c, &mut buf);
            }
        }
        if received == 0 && stack.poll_at().is_none_or(|t| t > clock()) {
            let _ = dev.wait_rx(1);
        }
    }
    // Let the last ACKs out.
    for _ in 0..10 {
        stack.poll(clock(), &mut dev);
    }
    let c = steering.total_counters().unwrap();
    println!(
        "COUNTERS redirected={} passed={} parse_errors={} no_socket={}",
        c.redirected, c.passed, c.parse_errors, c.no_socket
    );
    println!("XSK {:?}", dev.stats());
    println!("STACK {:?}", stack.counters());
}

/// A kernel TCP client (Python sockets) that sends `len` patterned bytes, half-closes, reads the echo to EOF and
/// checks it byte for byte.
const ECHO_CLIENT: &str = r#"
import socket, sys, threading
ip, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
data = bytes((i * 7 + i // 251) & 0xff for i in range(n))
s = socket.create_connection((ip, port), timeout=20)
got = bytearray()
def reader():
    while True:
        b = s.recv(65536)
        if not b:
            break
        got.extend(b)
t = threading.Thread(target=reader)
t.start()
s.sendall(data)
s.shutdown(socket.SHUT_WR)
t.join(30)
s.close()
assert bytes(got) == data, f"echo mismatch: sent {len(data)} got {len(got)}"
print("ECHO OK", len(got))
"#;

#[test]
#[ignore = "needs root: run scripts/test.sh"]
fn kernel_client_gets_its_echo_from_xtcp_over_af_xdp() {
    if child_role().is_some() {
        return;
    }
    let ns = Netns::up("e");
    let sizes = [1usize, 1000, 1 << 20];
    let mut child = ns.spawn_child("child_echo", &format!("echo:{}", sizes.len()));
    let ready = child.expect_line("READY", Duration::from_secs(20));
    assert!(has_xdp(&ns.xtcp_link()), "the steering program is not attached");

    // ICMP (and the ARP before it) pass to the kernel, which owns the same address.
    let ping = run(ns.in_kernel_ns("ping").args(["-c", "2", "-i", "0.2", "-W", "2", ns.var("IP_XTCP")]));
    assert!(String::from_utf8_lossy(&ping.stdout).contains("2 received"), "ping failed");

    // A port xtcp does not listen on is not steered: the kernel behind the same address refuses it itself.
    let refused = r#"
import socket, sys
try:
    socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=5)
    print("CONNECTED")
except ConnectionRefusedError:
    print("REFUSED")
"#;
    let other_port = (ECHO_PORT + 1).to_string();
    let out = run(ns.in_kernel_ns("python3").args(["-c", refused, ns.var("IP_XTCP"), &other_port]));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "REFUSED");

    for n in sizes {
        let out = run(ns.in_kernel_ns("python3").args([
            "-c",
            ECHO_CLIENT,
            ns.var("IP_XTCP"),
            &ECHO_PORT.to_string(),
            &n.to_string(),
        ]));
        let text = String::from_utf8_lossy(&out.stdout);
        assert_eq!(text.trim(), format!("ECHO OK {n}"), "{ready}");
    }
    let counters = child.expect_line("COUNTERS", Duration::from_secs(20));
    let status = child.wait(Duration::from_secs(20));
    assert!(status.success(), "the echo child failed: {status}");
    let field = |name: &str| common_afxdp::field(&counters, name);
    assert!(field("redirected") > 0, "nothing was redirected: {counters}");
    assert!(field("passed") > 0, "nothing passed to the kernel (ARP, ICMP, the other port): {counters}");
    let stack = child.expect_line("STACK", Duration::from_secs(5));
    assert!(stack.contains("rst_sent: 0,"), "xtcp saw the unsteered port's SYN: {stack}");
}

// ----- (c) Fragments: the steering program's memory of xtcp's datagrams, run in the kernel on test frames -----

/// An Ethernet/IPv4 frame carrying TCP `payload` from 10.77.0.2 to 10.77.0.1 with identification `id` and the flags
/// and offset field `frag` (checksums left zero: the steering program reads none).
fn ipv4_fragment(id: u16, frag: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = vec![2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2, 0x08, 0x00];
    let total = (20 + payload.len()) as u16;
    f.extend_from_slice(&[0x45, 0, (total >> 8) as u8, total as u8, (id >> 8) as u8, id as u8]);
    f.extend_from_slice(&[(frag >> 8) as u8, frag as u8, 64, 6, 0, 0, 10, 77, 0, 2, 10, 77, 0, 1]);
    f.extend_from_slice(payload);
    f
}

/// A first fragment (more fragments, offset 0) to TCP port `port`: 24 bytes of a SYN's header.
fn first_fragment(id: u16, port: u16) -> Vec<u8> {
    let mut tcp = [0u8; 24];
    tcp[..4].copy_from_slice(&[0x9f, 0xa7, (port >> 8) as u8, port as u8]);
    tcp[12] = 6 << 4;
    tcp[13] = 0x02;
    ipv4_fragment(id, 0x2000, &tcp)
}

#[test]
#[ignore = "needs root: run scripts/test.sh"]
fn a_kernel_datagram_that_reuses_an_id_of_xtcps_keeps_its_later_fragments() {
    if child_role().is_some() {
        return;
    }
    // Loaded, not attached: BPF_PROG_TEST_RUN runs it on each frame (no traffic), as if on rx queue 0, where no
    // socket sits, so "ours" shows as `no_socket` (and XDP_PASS) and "the kernel's" as `passed`.
    let mut steering = Steering::load(&[Ipv4Addr::new(10, 77, 0, 1)], [ECHO_PORT]).expect("load");
    let later = ipv4_fragment(0x4242, 24 / 8, b"fragment");
    let mut step = |frame: &[u8]| {
        assert_eq!(steering.test_run(frame).expect("test run"), 2, "XDP_PASS");
        let c = steering.counters(0).unwrap();
        (c.no_socket, c.passed)
    };
    assert_eq!(step(&first_fragment(0x4242, ECHO_PORT)), (1, 0), "xtcp's first fragment");
    assert_eq!(step(&later), (2, 0), "its later fragment follows it");
    // The ID wraps: a datagram of the kernel's (port 22) with the same source, destination and ID.
    assert_eq!(step(&first_fragment(0x4242, 22)), (2, 1), "the kernel's first fragment");
    assert_eq!(step(&later), (2, 2), "its later fragment goes to the kernel too, not to xtcp");
    assert_eq!(step(&ipv4_fragment(0x4343, 24 / 8, b"fragment")), (2, 3), "a datagram never seen: the kernel's");
    // xtcp's again under the same ID: remembered again.
    assert_eq!(step(&first_fragment(0x4242, ECHO_PORT)), (3, 3));
    assert_eq!(step(&later), (4, 3));
}
