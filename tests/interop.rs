//! Interop with the Linux kernel's TCP over veth: xtcp on AF_XDP in one namespace, the kernel's own stack (nc,
//! curl, Python sockets, a Rust `std::net` client) in another. Needs root: `scripts/test.sh` runs these.
//!
//! Every test makes its own namespaces with `scripts/netns.sh` (names derived from the test's tag and this
//! process's id, removed on drop even when the test fails) and sends traffic only inside them. The xtcp side is a
//! child process — this test binary again under `ip netns exec`, `XTCP_AFXDP_CHILD` naming its role, played by
//! [`child_xtcp`] — running an [`App`] through [`engine::run`] on an `XskDevice`, optionally inside a
//! `FaultInjector`. The tests run one at a time (they share two cores; the round-trip measurement needs them quiet).
//!
//! What is covered, and the numbers, are in `docs/interop.md`.
#![cfg(all(feature = "afxdp", target_os = "linux"))]

mod common_afxdp;

use std::collections::VecDeque;
use std::fs::File;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddrV4, TcpListener, TcpStream};
use std::sync::atomic::AtomicBool;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant as StdInstant};

use common_afxdp::{
    child_env, child_role, field, has_xdp, open_xtcp, run_text, serve_kernel_echo, ChildGuard, Netns, Tcpdump, TempDir,
};
use xtcp::app::echo::Echo;
use xtcp::app::http::{Http, HttpConfig};
use xtcp::app::App;
use xtcp::engine::run::{run as run_loop, RunOptions};
use xtcp::engine::{self, ConnId, Stack, StackEvent};
use xtcp::nic::afxdp;
use xtcp::nic::fault::{FaultConfig, FaultInjector, Faults, PPM};
use xtcp::nic::neigh::Neighbors;
use xtcp::tcp::{CloseReason, State};
use xtcp::time::Instant;

const ECHO_PORT: u16 = 7777;
const HTTP_PORT: u16 = 8080;
/// The kernel's echo server in the xtcp-client test, and a port nobody listens on.
const KERNEL_ECHO_PORT: u16 = 9000;
const CLOSED_PORT: u16 = 9001;
/// A port in xtcp's ephemeral range: steered to xtcp, but with no listener and no connection there.
const XTCP_CLOSED_PORT: u16 = 40000;
const MIB: usize = 1 << 20;

/// The tests of this binary run one at a time.
fn serial() -> MutexGuard<'static, ()> {
    static SERIAL: Mutex<()> = Mutex::new(());
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

// ----- The xtcp side (children) -----

/// Wraps an application: prints `CLOSED` for each closed connection and `STATES` whenever xtcp's per-state
/// connection counts change (sampled every 5 ms), and is done after `XTCP_CONNS` connections closed.
struct Observer<A> {
    app: A,
    closed: u64,
    wanted: u64,
    states: [usize; 11],
    next_sample: Instant,
}

impl<A: App> App for Observer<A> {
    fn start(&mut self, stack: &mut Stack, now: Instant) {
        self.app.start(stack, now);
    }

    fn on_event(&mut self, stack: &mut Stack, now: Instant, event: StackEvent) {
        if let StackEvent::Closed(_, reason) = event {
            self.closed += 1;
            println!("CLOSED {reason:?} closed={}", self.closed);
        }
        self.app.on_event(stack, now, event);
    }

    fn on_tick(&mut self, stack: &mut Stack, now: Instant) {
        self.app.on_tick(stack, now);
        if now >= self.next_sample {
            if std::env::var_os("XTCP_DEBUG").is_some()
                && now.total_millis() / 1000 != self.next_sample.total_millis() / 1000
            {
                for (id, c) in stack.connections() {
                    println!(
                        "CONN {} {:?} una={:?} nxt={:?} snd_wnd={} sendq={} send_cap={} recvq={} cwnd={} peer_closed={}",
                        id.slot(), c.state(), c.snd_una(), c.snd_nxt(), c.snd_wnd(), c.send_queue_len(),
                        c.send_capacity(), c.recv_queue_len(), c.congestion_window(), c.peer_closed()
                    );
                }
            }
            self.next_sample = now + Duration::from_millis(5);
            let states = stack.state_counts();
            if states != self.states {
                self.states = states;
                let words: Vec<String> = State::ALL
                    .iter()
                    .zip(states)
                    .filter(|&(_, n)| n > 0)
                    .map(|(s, n)| format!("{}={n}", s.name()))
                    .collect();
                println!("STATES {}", words.join(" "));
            }
        }
    }

    fn done(&self) -> bool {
        self.closed >= self.wanted || self.app.done()
    }
}

/// Accepts, sends one byte `c`, and closes `after` later, whatever the peer does meanwhile.
struct CloseSoon {
    port: u16,
    after: Duration,
    due: Vec<(ConnId, Instant)>,
    buf: [u8; 512],
}

impl App for CloseSoon {
    fn start(&mut self, stack: &mut Stack, _now: Instant) {
        stack.listen(self.port).unwrap();
    }

    fn on_event(&mut self, stack: &mut Stack, now: Instant, event: StackEvent) {
        match event {
            StackEvent::Accepted { conn, .. } => {
                stack.send(conn, b"c").unwrap();
                self.due.push((conn, now + self.after));
            }
            StackEvent::Readable(c) | StackEvent::PeerClosed(c) => {
                while stack.recv(c, &mut self.buf).unwrap_or(0) > 0 {}
            }
            _ => {}
        }
    }

    fn on_tick(&mut self, stack: &mut Stack, now: Instant) {
        self.due.retain(|&(conn, at)| {
            if at <= now {
                let _ = stack.close(conn);
            }
            at > now
        });
    }
}

/// Bytes of a transfer: a fixed pseudo-random sequence (an LCG), so both ends can check them.
fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len)
        .map(|_| {
            x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
            (x >> 56) as u8
        })
        .collect()
}

/// One echo transfer of the xtcp client.
struct Transfer {
    id: ConnId,
    data: Vec<u8>,
    sent: usize,
    received: usize,
    first_mismatch: Option<usize>,
    fin_sent: bool,
    started: StdInstant,
}

/// The xtcp client: for each size, connects to the kernel's echo server, sends that many bytes, half-closes,
/// checks the echo byte for byte until the server's FIN; then connects to a closed port and reports how that ended.
struct EchoClient {
    peer: SocketAddrV4,
    sizes: VecDeque<usize>,
    current: Option<Transfer>,
    refused: Option<ConnId>,
    finished: bool,
    buf: Box<[u8]>,
}

impl EchoClient {
    fn next(&mut self, stack: &mut Stack) {
        match self.sizes.pop_front() {
            Some(n) => {
                let id = stack.connect(self.peer).expect("connect");
                let data = pattern(n, n as u64);
                self.current = Some(Transfer {
                    id,
                    data,
                    sent: 0,
                    received: 0,
                    first_mismatch: None,
                    fin_sent: false,
                    started: StdInstant::now(),
                });
            }
            None => {
                let closed = SocketAddrV4::new(*self.peer.ip(), CLOSED_PORT);
                self.refused = Some(stack.connect(closed).expect("connect to the closed port"));
            }
        }
    }

    fn pump(&mut self, stack: &mut Stack) {
        let Some(t) = self.current.as_mut() else { return };
        while t.sent < t.data.len() {
            let n = stack.send(t.id, &t.data[t.sent..]).unwrap_or(0);
            if n == 0 {
                break;
            }
            t.sent += n;
        }
        if t.sent == t.data.len() && !t.fin_sent {
            t.fin_sent = stack.close(t.id).is_ok();
        }
        loop {
            let n = stack.recv(t.id, &mut self.buf).unwrap_or(0);
            if n == 0 {
                break;
            }
            let got = &self.buf[..n];
            let want = t.data.get(t.received..(t.received + n).min(t.data.len())).unwrap_or(&[]);
            if t.first_mismatch.is_none() && got != want {
                t.first_mismatch = Some(t.received + got.iter().zip(want).take_while(|(a, b)| a == b).count());
            }
            t.received += n;
        }
    }

    fn report(&mut self, stack: &mut Stack, how: &str) {
        let t = self.current.take().expect("a transfer");
        let ok = how == "eof" && t.received == t.data.len() && t.first_mismatch.is_none();
        println!(
            "TRANSFER size={} received={} mismatch_at={:?} end={how} ok={ok} secs={:.2}",
            t.data.len(),
            t.received,
            t.first_mismatch,
            t.started.elapsed().as_secs_f64()
        );
        self.next(stack);
    }
}

impl App for EchoClient {
    fn start(&mut self, stack: &mut Stack, _now: Instant) {
        self.next(stack);
    }

    fn on_event(&mut self, stack: &mut Stack, _now: Instant, event: StackEvent) {
        let current = self.current.as_ref().map(|t| t.id);
        match event {
            StackEvent::Connected(id) | StackEvent::Readable(id) | StackEvent::Writable(id) if Some(id) == current => {
                self.pump(stack)
            }
            // The server's FIN after the echo: this transfer is over (our side lingers in TIME_WAIT).
            StackEvent::PeerClosed(id) if Some(id) == current => {
                self.pump(stack);
                self.report(stack, "eof");
            }
            StackEvent::Closed(id, reason) if Some(id) == current => self.report(stack, &format!("{reason:?}")),
            StackEvent::Closed(id, reason) if Some(id) == self.refused => {
                println!("CLOSED_PORT reason={reason:?}");
                self.finished = true;
            }
            _ => {}
        }
    }

    fn done(&self) -> bool {
        self.finished
    }
}

/// The faults `XTCP_FAULTS` asks for: `impair` (5% loss, 25% reordering, 1% duplication, 0.1% corruption, both
/// ways) or `delay_tx_ms=N` (every frame xtcp sends held N ms, in order).
fn faults_from_env() -> Option<FaultConfig> {
    let spec = std::env::var("XTCP_FAULTS").ok()?;
    if spec == "impair" {
        return Some(FaultConfig::both(Faults {
            loss_ppm: PPM / 20,
            reorder_ppm: PPM / 4,
            reorder_delay_max: Duration::from_millis(1),
            duplicate_ppm: PPM / 100,
            corrupt_ppm: PPM / 1000,
            // One bit: every such corruption is one the Internet checksum catches, as TCP must. With more, two flips
            // of one bit position in opposite directions cancel in the sum, and about one frame per 50 MiB would
            // reach the application through any TCP (and fail the sha256 comparison).
            corrupt_bits_max: 1,
            ..Faults::NONE
        }));
    }
    let ms: u64 = spec.strip_prefix("delay_tx_ms=").and_then(|v| v.parse().ok()).expect("XTCP_FAULTS");
    Some(FaultConfig { tx: Faults { delay: Duration::from_millis(ms), ..Faults::NONE }, ..FaultConfig::NONE })
}

/// Runs `app` on xtcp (steering `ports`) until it is done, inside the faults `XTCP_FAULTS` names if any.
fn serve(app: impl App, ports: &[u16]) {
    let wanted = std::env::var("XTCP_CONNS").ok().and_then(|v| v.parse().ok()).unwrap_or(u64::MAX);
    let (mut stack, dev, steering) = open_xtcp(ports, 7);
    let mut app = Observer { app, closed: 0, wanted, states: [0; 11], next_sample: Instant::ZERO };
    let stop = AtomicBool::new(false);
    // XTCP_BUSY_POLL_US changes how long the loop spins before it sleeps (for measuring by hand).
    let mut opts = RunOptions::default();
    if let Some(us) = std::env::var("XTCP_BUSY_POLL_US").ok().and_then(|v| v.parse().ok()) {
        opts.busy_poll = Duration::from_micros(us);
    }
    println!("READY mode={:?}", dev.mode());
    let stats = match faults_from_env() {
        Some(cfg) => {
            let seed = 0x5eed;
            println!("FAULT_SEED {seed}");
            let mut dev = FaultInjector::new(dev, cfg, seed);
            let stats = run_loop(&mut stack, &mut dev, &mut app, &stop, opts);
            let f = dev.stats();
            println!(
                "FAULTS lost={} reordered={} duplicated={} corrupted={} held_overflow={}",
                f.rx.lost + f.tx.lost,
                f.rx.reordered + f.tx.reordered,
                f.rx.duplicated + f.tx.duplicated,
                f.rx.corrupted + f.tx.corrupted,
                f.rx.held_overflow + f.tx.held_overflow
            );
            println!("XSK {:?}", dev.inner().stats());
            stats
        }
        None => {
            let mut dev = dev;
            let stats = run_loop(&mut stack, &mut dev, &mut app, &stop, opts);
            println!("XSK {:?}", dev.stats());
            stats
        }
    };
    let c = stack.counters();
    println!(
        "STACK rx_frames={} tx_frames={} rst_sent={} drops={} bad_checksum={} run={stats:?}",
        c.rx_frames,
        c.tx_frames,
        c.rst_sent,
        c.total_drops(),
        c.dropped(engine::Drop::BadChecksum)
    );
    println!("COUNTERS {:?}", steering.total_counters().unwrap());
}

/// The xtcp client's side: learns the kernel peer's MAC over netlink, then runs [`EchoClient`].
fn xtcp_client() {
    let ifname = child_env("XTCP_IF");
    let peer_ip: Ipv4Addr = child_env("XTCP_PEER_IP").parse().unwrap();
    let sizes: VecDeque<usize> = child_env("XTCP_SIZES").split(',').map(|s| s.parse().unwrap()).collect();
    let (mut stack, mut dev, _steering) = open_xtcp(&[], 11);
    let ifindex = afxdp::interface_index(&ifname).unwrap();
    let mut neighbors = Neighbors::open().expect("netlink");
    let before = neighbors.lookup(ifindex, peer_ip).expect("neighbour dump");
    let mac = neighbors.resolve(ifindex, peer_ip, Duration::from_secs(3)).expect("netlink").expect("resolved");
    println!("NEIGH before={} mac={mac}", before.map_or("none".to_owned(), |m| m.to_string()));
    stack.add_neighbor(peer_ip, mac);
    let mut app = EchoClient {
        peer: SocketAddrV4::new(peer_ip, KERNEL_ECHO_PORT),
        sizes,
        current: None,
        refused: None,
        finished: false,
        buf: vec![0; 64 * 1024].into_boxed_slice(),
    };
    run_loop(&mut stack, &mut dev, &mut app, &AtomicBool::new(false), RunOptions::default());
    println!("CLIENT DONE");
}

/// A kernel-socket echo server (std::net, one thread per connection, TCP_NODELAY) on `XTCP_PORT`.
fn kernel_echo_server() {
    let ip = child_env("XTCP_IP");
    let listener = TcpListener::bind(format!("{ip}:{}", child_env("XTCP_PORT"))).expect("bind");
    serve_kernel_echo(listener);
}

/// One connection, 64-byte messages, one in flight: round trips for `XTCP_SECS`; prints the rate and latencies.
fn round_trip_client() {
    let addr = child_env("XTCP_ADDR");
    let secs: f64 = child_env("XTCP_SECS").parse().unwrap();
    let mut s = TcpStream::connect(&addr).expect("connect");
    s.set_nodelay(true).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut msg = [0u8; 64];
    let mut back = [0u8; 64];
    let mut rtts_ns: Vec<u64> = Vec::with_capacity(1 << 20);
    let t0 = StdInstant::now();
    let mut i = 0u64;
    while t0.elapsed().as_secs_f64() < secs {
        msg[..8].copy_from_slice(&i.to_le_bytes());
        let t = StdInstant::now();
        s.write_all(&msg).unwrap();
        s.read_exact(&mut back).unwrap();
        rtts_ns.push(t.elapsed().as_nanos() as u64);
        assert_eq!(back, msg, "round trip {i}: the echo differs");
        i += 1;
    }
    let elapsed = t0.elapsed().as_secs_f64();
    rtts_ns.sort_unstable();
    let pct = |p: f64| rtts_ns[((rtts_ns.len() - 1) as f64 * p) as usize] as f64 / 1000.0;
    println!(
        "RTT n={} per_sec={:.0} p50_us={:.1} p99_us={:.1} max_us={:.1}",
        rtts_ns.len(),
        rtts_ns.len() as f64 / elapsed,
        pct(0.5),
        pct(0.99),
        pct(1.0)
    );
}

/// Every child role of this file: `echo`, `http`, `close-soon`, `client` (xtcp's side); `kernel-echo`,
/// `rtt-client` (kernel sockets, run in whichever namespace the test picks).
#[test]
#[ignore = "needs root: run scripts/test.sh"]
fn child_xtcp() {
    let Some(role) = child_role() else { return };
    match role.as_str() {
        "echo" => serve(Echo::new(ECHO_PORT), &[ECHO_PORT]),
        "http" => serve(Http::new(HttpConfig::new(HTTP_PORT, page())), &[HTTP_PORT]),
        "close-soon" => serve(
            CloseSoon { port: ECHO_PORT, after: Duration::from_millis(100), due: Vec::new(), buf: [0; 512] },
            &[ECHO_PORT],
        ),
        "client" => xtcp_client(),
        "kernel-echo" => kernel_echo_server(),
        "rtt-client" => round_trip_client(),
        other => panic!("unknown child role {other}"),
    }
}

// ----- The kernel side -----

/// A kernel client (Python sockets): sends N random bytes from one thread while another reads the echo, half-closes,
/// reads to EOF, and compares. Gives up after DEADLINE seconds.
const PY_ECHO_CLIENT: &str = r#"
import hashlib, os, socket, sys, threading, time
ip, port, n, deadline = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
data = os.urandom(n)
t0 = time.time()
s = socket.create_connection((ip, port), timeout=deadline)
s.settimeout(deadline)
got = bytearray()
def reader():
    while True:
        b = s.recv(1 << 18)
        if not b:
            break
        got.extend(b)
t = threading.Thread(target=reader)
t.start()
s.sendall(data)
s.shutdown(socket.SHUT_WR)
t.join(deadline)
s.close()
secs = time.time() - t0
same = bytes(got) == data
print(f"ECHO {'OK' if same else 'BAD'} {len(got)} sha256={hashlib.sha256(got).hexdigest()[:16]} "
      f"want={hashlib.sha256(data).hexdigest()[:16]} secs={secs:.2f}")
"#;

/// Connects to a port; prints REFUSED or CONNECTED.
const PY_CONNECT: &str = r#"
import socket, sys
try:
    socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=5)
    print("CONNECTED")
except ConnectionRefusedError:
    print("REFUSED")
"#;

/// The kernel's echo server for the xtcp client (socketserver, a thread per connection).
const PY_ECHO_SERVER: &str = r#"
import socketserver, sys
class Echo(socketserver.BaseRequestHandler):
    def handle(self):
        while True:
            b = self.request.recv(1 << 18)
            if not b:
                break
            self.request.sendall(b)
class Server(socketserver.ThreadingTCPServer):
    allow_reuse_address = True
    daemon_threads = True
server = Server((sys.argv[1], int(sys.argv[2])), Echo)
print("LISTENING", flush=True)
server.serve_forever()
"#;

fn page() -> Vec<u8> {
    let mut body = b"<html><body><h1>hello from xtcp</h1>\n".to_vec();
    for i in 0..2000 {
        body.extend_from_slice(format!("<p>line {i} of a page served over AF_XDP</p>\n").as_bytes());
    }
    body.extend_from_slice(b"</body></html>\n");
    body
}

/// Runs the Python echo client against `ip:port` with `n` bytes; returns its report line.
fn python_echo(ns: &Netns, ip: &str, port: u16, n: usize, deadline_secs: u32) -> String {
    let out = run_text(ns.in_kernel_ns("python3").args([
        "-c",
        PY_ECHO_CLIENT,
        ip,
        &port.to_string(),
        &n.to_string(),
        &deadline_secs.to_string(),
    ]));
    assert!(out.starts_with(&format!("ECHO OK {n} ")), "python echo of {n} bytes: {out}");
    out
}

/// `nc -N` in the kernel's namespace, stdin from a file of `n` pattern bytes, stdout to a file; compares the two.
fn nc_echo(ns: &Netns, tmp: &TempDir, ip: &str, port: u16, n: usize) {
    let data = pattern(n, 0xc0ffee + n as u64);
    let (inp, outp) = (tmp.path(&format!("nc-in-{n}")), tmp.path(&format!("nc-out-{n}")));
    std::fs::write(&inp, &data).unwrap();
    let t = StdInstant::now();
    let status = ns
        .in_kernel_ns("nc")
        .args(["-N", "-w", "30", ip, &port.to_string()])
        .stdin(File::open(&inp).unwrap())
        .stdout(File::create(&outp).unwrap())
        .status()
        .expect("run nc");
    assert!(status.success(), "nc with {n} bytes: {status}");
    let back = std::fs::read(&outp).unwrap();
    assert_eq!(back.len(), n, "nc got {} of {n} bytes back", back.len());
    assert!(back == data, "nc: the echo of {n} bytes differs");
    println!("nc: {n} bytes echoed byte for byte in {:.2} s", t.elapsed().as_secs_f64());
}

/// (src is xtcp, flags) of each TCP line of a tcpdump text capture.
fn flags(lines: &[String], xtcp_ip: &str) -> Vec<(bool, String)> {
    let xtcp_prefix = format!("{xtcp_ip}.");
    lines
        .iter()
        .filter_map(|l| {
            let src = l.split(" IP ").nth(1)?.split(" > ").next()?;
            let f = l.split("Flags [").nth(1)?.split(']').next()?;
            Some((src.starts_with(&xtcp_prefix), f.to_owned()))
        })
        .collect()
}

/// The capture as `x:S.`/`k:F.` words, for messages.
fn show(seq: &[(bool, String)]) -> String {
    seq.iter().map(|(x, f)| format!("{}:{f}", if *x { 'x' } else { 'k' })).collect::<Vec<_>>().join(" ")
}

/// The capture from the first FIN on, push flags dropped and repeats of the same segment kind (a window update
/// after a plain ACK) counted once: the teardown as the seed note writes it.
fn teardown(got: &[(bool, String)]) -> Vec<(bool, String)> {
    let first_fin = got.iter().position(|(_, f)| f.contains('F')).unwrap_or(got.len());
    let mut out: Vec<(bool, String)> = got[first_fin..].iter().map(|(x, f)| (*x, f.replace('P', ""))).collect();
    out.dedup();
    out
}

fn seq(words: &[(bool, &str)]) -> Vec<(bool, String)> {
    words.iter().map(|&(x, f)| (x, f.to_owned())).collect()
}

/// Lines of `ss -tan` in the kernel's namespace that mention `addr` (`ip:port`).
fn ss_lines(ns: &Netns, addr: &str) -> Vec<String> {
    let out = run_text(ns.in_kernel_ns("ss").args(["-tan"]));
    out.lines().filter(|l| l.contains(addr)).map(str::to_owned).collect()
}

// ----- 1. xtcp's echo server, kernel clients -----

#[test]
#[ignore = "needs root: run scripts/test.sh"]
fn nc_and_python_clients_get_exact_echoes_from_xtcp_up_to_16_mib() {
    if child_role().is_some() {
        return;
    }
    let _serial = serial();
    let ns = Netns::up("ie");
    let tmp = TempDir::new("ie");
    let ip = ns.var("IP_XTCP").to_owned();
    let sizes = [1, 64 * 1024, MIB, 16 * MIB];
    let mut child = ns.spawn_child_in("NS_XTCP", "child_xtcp", "echo", &[("XTCP_CONNS", "8".into())]);
    child.expect_line("READY", Duration::from_secs(20));
    // A port steered to xtcp where nothing listens: xtcp itself answers the SYN with RST (rst_sent below).
    let port = XTCP_CLOSED_PORT.to_string();
    assert_eq!(run_text(ns.in_kernel_ns("python3").args(["-c", PY_CONNECT, &ip, &port])), "REFUSED");
    for n in sizes {
        nc_echo(&ns, &tmp, &ip, ECHO_PORT, n);
        println!("python: {}", python_echo(&ns, &ip, ECHO_PORT, n, 60));
    }
    let stack = child.expect_line("STACK", Duration::from_secs(20));
    assert!(child.wait(Duration::from_secs(10)).success(), "the echo child failed");
    assert!(field(&stack, "rst_sent") >= 1, "xtcp sent no RST for the closed port: {stack}");
    assert_eq!(field(&stack, "bad_checksum"), 0, "{stack}");
}

// ----- 2. xtcp's client, the kernel's echo server -----

#[test]
#[ignore = "needs root: run scripts/test.sh"]
fn xtcp_client_learns_the_peer_mac_over_netlink_gets_exact_echoes_and_is_refused_by_a_closed_port() {
    if child_role().is_some() {
        return;
    }
    let _serial = serial();
    let ns = Netns::up("ic");
    let peer_ip = ns.var("IP_KERNEL").to_owned();
    let mut cmd = ns.in_kernel_ns("python3");
    cmd.args(["-c", PY_ECHO_SERVER, &peer_ip, &KERNEL_ECHO_PORT.to_string()]);
    let server = ChildGuard::spawn(cmd);
    server.expect_line("LISTENING", Duration::from_secs(10));
    let sizes = [1, 64 * 1024, MIB, 16 * MIB];
    let list = sizes.map(|n| n.to_string()).join(",");
    let mut child = ns.spawn_child_in("NS_XTCP", "child_xtcp", "client", &[("XTCP_SIZES", list)]);
    let neigh = child.expect_line("NEIGH", Duration::from_secs(20));
    assert!(neigh.contains("before=none"), "the kernel's table knew the peer before we asked: {neigh}");
    assert!(neigh.ends_with(&format!("mac={}", ns.var("MAC_KERNEL"))), "{neigh} vs {}", ns.var("MAC_KERNEL"));
    for n in sizes {
        let line = child.expect_line("TRANSFER", Duration::from_secs(60));
        assert!(
            line.starts_with(&format!("TRANSFER size={n} received={n} mismatch_at=None end=eof ok=true")),
            "{line}"
        );
    }
    let refused = child.expect_line("CLOSED_PORT", Duration::from_secs(20));
    assert_eq!(refused, format!("CLOSED_PORT reason={:?}", CloseReason::Refused));
    child.expect_line("CLIENT DONE", Duration::from_secs(10));
    assert!(child.wait(Duration::from_secs(10)).success(), "the client child failed");
}

// ----- 3. curl against xtcp's HTTP server -----

#[test]
#[ignore = "needs root: run scripts/test.sh"]
fn curl_fetches_a_page_from_xtcps_http_server() {
    if child_role().is_some() {
        return;
    }
    let _serial = serial();
    let ns = Netns::up("ih");
    let tmp = TempDir::new("ih");
    let child = ns.spawn_child_in("NS_XTCP", "child_xtcp", "http", &[]);
    child.expect_line("READY", Duration::from_secs(20));
    let body = tmp.path("body");
    let url = format!("http://{}:{HTTP_PORT}/index.html", ns.var("IP_XTCP"));
    let out = run_text(ns.in_kernel_ns("curl").args([
        "-sS",
        "--max-time",
        "20",
        "-o",
        body.to_str().unwrap(),
        "-w",
        "%{http_code} %{size_download}",
        &url,
    ]));
    let page = page();
    assert_eq!(out, format!("200 {}", page.len()), "curl said: {out}");
    assert!(std::fs::read(&body).unwrap() == page, "the body differs from the page");
    // Two requests on one kept-alive connection: the second makes no new connection.
    let null = "/dev/null";
    let args = ["-sS", "--max-time", "20", "-o", null, "-o", null, "-w", "%{http_code} %{num_connects}\n", &url, &url];
    assert_eq!(run_text(ns.in_kernel_ns("curl").args(args)), "200 1\n200 0");
    let head = run_text(ns.in_kernel_ns("curl").args(["-sS", "--max-time", "20", "-I", &url]));
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(head.contains(&format!("ontent-Length: {}", page.len())), "{head}");
}

// ----- 4. Teardowns, seen by tcpdump and ss on the kernel's side and by xtcp's state counts -----

/// Starts tcpdump on the kernel's veth for `port`.
fn capture(ns: &Netns, tmp: &TempDir, port: u16) -> Tcpdump {
    Tcpdump::start(ns.var("NS_KERNEL"), ns.var("IF_KERNEL"), &format!("tcp port {port}"), tmp.path("capture.txt"))
}

/// The longest a teardown's last segment may take to show in the capture.
const CAPTURE_TIMEOUT: Duration = Duration::from_secs(5);

/// Stops `dump` once its teardown (see [`teardown`]) holds as many segments as `tail`, the one expected — its last
/// segment is then captured, however late tcpdump got to it — or after [`CAPTURE_TIMEOUT`]; returns the capture's
/// segments.
fn stop_after_teardown(dump: Tcpdump, xtcp_ip: &str, tail: &[(bool, String)]) -> Vec<(bool, String)> {
    let lines = dump.stop_when(CAPTURE_TIMEOUT, |l| teardown(&flags(l, xtcp_ip)).len() >= tail.len());
    flags(&lines, xtcp_ip)
}

/// The kernel closes first: it half-closes after its echo; xtcp's echo server closes after it.
const PY_KERNEL_CLOSES_FIRST: &str = r#"
import socket, subprocess, sys, time
s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=10)
s.sendall(b"hello")
got = b""
while len(got) < 5:
    got += s.recv(5)
s.shutdown(socket.SHUT_WR)
while s.recv(100):
    pass
s.close()
time.sleep(0.2)
print(got.decode())
"#;

#[test]
#[ignore = "needs root: run scripts/test.sh"]
fn teardown_kernel_closes_first_kernel_holds_time_wait() {
    if child_role().is_some() {
        return;
    }
    let _serial = serial();
    let ns = Netns::up("tk");
    let tmp = TempDir::new("tk");
    let child = ns.spawn_child_in("NS_XTCP", "child_xtcp", "echo", &[]);
    child.expect_line("READY", Duration::from_secs(20));
    let dump = capture(&ns, &tmp, ECHO_PORT);
    let ip = ns.var("IP_XTCP").to_owned();
    let out = run_text(ns.in_kernel_ns("python3").args(["-c", PY_KERNEL_CLOSES_FIRST, &ip, &ECHO_PORT.to_string()]));
    assert_eq!(out, "hello");
    let ss = ss_lines(&ns, &format!("{ip}:{ECHO_PORT}"));
    // The echo server closes in the same turn that hears the kernel's FIN, so the ACK of that FIN rides on xtcp's
    // own (as Linux's does when its application closes at once): FIN, FIN-ACK, ACK. The kernel goes from
    // FIN_WAIT_1 straight to TIME_WAIT.
    let tail = seq(&[(false, "F."), (true, "F."), (false, ".")]);
    let got = stop_after_teardown(dump, &ip, &tail);
    println!("tcpdump: {}\nss: {ss:?}", show(&got));
    assert!(got.len() >= 7, "{}", show(&got));
    assert_eq!(got[..3], seq(&[(false, "S"), (true, "S."), (false, ".")]), "handshake: {}", show(&got));
    assert_eq!(teardown(&got), tail, "teardown: {}", show(&got));
    assert!(ss.len() == 1 && ss[0].starts_with("TIME-WAIT"), "the kernel should hold TIME_WAIT: {ss:?}");
    child.expect_line("CLOSED Normal", Duration::from_secs(5));
}

/// xtcp closes first: the request says `Connection: close`; the kernel reads to EOF, shows its socket, closes.
const PY_XTCP_CLOSES_FIRST: &str = r#"
import socket, subprocess, sys, time
ip, port = sys.argv[1], int(sys.argv[2])
def ss():
    out = subprocess.run(["ss", "-tan"], capture_output=True, text=True).stdout
    return [l for l in out.splitlines() if f"{ip}:{port}" in l]
s = socket.create_connection((ip, port), timeout=10)
s.sendall(b"GET / HTTP/1.1\r\nHost: xtcp\r\nConnection: close\r\n\r\n")
data = b""
while True:
    b = s.recv(65536)
    if not b:
        break
    data += b
time.sleep(0.1)
print("AFTER_EOF", ss())
s.close()
time.sleep(0.2)
print("AFTER_CLOSE", ss())
print("STATUS", data.split(b"\r\n")[0].decode())
"#;

#[test]
#[ignore = "needs root: run scripts/test.sh"]
fn teardown_xtcp_closes_first_kernel_goes_close_wait_last_ack_and_xtcp_holds_time_wait() {
    if child_role().is_some() {
        return;
    }
    let _serial = serial();
    let ns = Netns::up("tx");
    let tmp = TempDir::new("tx");
    let child = ns.spawn_child_in("NS_XTCP", "child_xtcp", "http", &[]);
    child.expect_line("READY", Duration::from_secs(20));
    let dump = capture(&ns, &tmp, HTTP_PORT);
    let ip = ns.var("IP_XTCP").to_owned();
    let out = run_text(ns.in_kernel_ns("python3").args(["-c", PY_XTCP_CLOSES_FIRST, &ip, &HTTP_PORT.to_string()]));
    // xtcp's FIN rides on the last segment of the answer (`FP.`).
    let tail = seq(&[(true, "F."), (false, "."), (false, "F."), (true, ".")]);
    let got = stop_after_teardown(dump, &ip, &tail);
    println!("tcpdump: {}\npython: {out}", show(&got));
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines[0].starts_with("AFTER_EOF ['CLOSE-WAIT"), "the kernel should sit in CLOSE_WAIT: {out}");
    assert_eq!(lines[1], "AFTER_CLOSE []", "LAST_ACK should end with xtcp's ACK, leaving nothing: {out}");
    assert_eq!(lines[2], "STATUS HTTP/1.1 200 OK");
    assert_eq!(got[..3], seq(&[(false, "S"), (true, "S."), (false, ".")]), "handshake: {}", show(&got));
    assert_eq!(teardown(&got), tail, "teardown: {}", show(&got));
    // xtcp's own view: the connection it closed first waits in TIME_WAIT.
    child.expect_where("TIME_WAIT in xtcp's states", Duration::from_secs(5), |l| {
        l.starts_with("STATES") && l.contains("TIME_WAIT=1")
    });
}

/// Both close at once: xtcp sends `c` and closes 100 ms after accepting, and its frames reach the wire 200 ms late
/// (a fault-injector delay on its transmit side), so the kernel — which closes as soon as `c` arrives — sends its
/// FIN before xtcp's FIN reaches it, and xtcp's FIN is sent before the kernel's reaches xtcp.
const PY_CLOSE_ON_BYTE: &str = r#"
import socket, subprocess, sys, time
ip, port = sys.argv[1], int(sys.argv[2])
s = socket.create_connection((ip, port), timeout=10)
assert s.recv(1) == b"c"
s.shutdown(socket.SHUT_WR)
while s.recv(100):
    pass
s.close()
time.sleep(0.5)
out = subprocess.run(["ss", "-tan"], capture_output=True, text=True).stdout
print([l.split()[0] for l in out.splitlines() if f"{ip}:{port}" in l])
"#;

#[test]
#[ignore = "needs root: run scripts/test.sh"]
fn teardown_simultaneous_close_both_sides_pass_closing_to_time_wait() {
    if child_role().is_some() {
        return;
    }
    let _serial = serial();
    let ns = Netns::up("ts");
    let tmp = TempDir::new("ts");
    let env = [("XTCP_FAULTS", "delay_tx_ms=200".to_owned())];
    let child = ns.spawn_child_in("NS_XTCP", "child_xtcp", "close-soon", &env);
    child.expect_line("READY", Duration::from_secs(20));
    let dump = capture(&ns, &tmp, ECHO_PORT);
    let ip = ns.var("IP_XTCP").to_owned();
    let out = run_text(ns.in_kernel_ns("python3").args(["-c", PY_CLOSE_ON_BYTE, &ip, &ECHO_PORT.to_string()]));
    // Each FIN crosses the other: the kernel's FIN, xtcp's FIN (not yet acknowledging the kernel's), then each
    // side's ACK of the other's FIN.
    let tail = seq(&[(false, "F."), (true, "F."), (false, "."), (true, ".")]);
    let got = stop_after_teardown(dump, &ip, &tail);
    println!("tcpdump: {}\nss: {out}", show(&got));
    assert_eq!(out, "['TIME-WAIT']", "the kernel should end in TIME_WAIT");
    assert_eq!(got[..3], seq(&[(false, "S"), (true, "S."), (false, ".")]), "handshake: {}", show(&got));
    assert_eq!(teardown(&got), tail, "teardown: {}", show(&got));
    child.expect_where("CLOSING in xtcp's states", Duration::from_secs(5), |l| l.contains("CLOSING=1"));
    child.expect_where("TIME_WAIT in xtcp's states", Duration::from_secs(5), |l| l.contains("TIME_WAIT=1"));
}

// ----- 5. Impairment: megabytes each way through loss, reordering, duplication and corruption -----

/// Bytes each way through each impaired path: 64 MiB. With SACK on both sides (RFC 6675 recovery, tail loss probes,
/// an adapting reordering threshold) the middle namespace moves about 4.4 MB/s each way (~15 s) and the fault
/// injector about 2.3 MB/s (~26–32 s); without SACK these were 300 and 120 KB/s. See docs/interop.md.
const FAULT_INJECTOR_BYTES: usize = 64 * MIB;
const MIDDLE_BYTES: usize = 64 * MIB;
/// What the Python client allows itself (the test's bound on time).
const IMPAIRED_DEADLINE_SECS: u32 = 170;

#[test]
#[ignore = "needs root: run scripts/test.sh"]
fn echo_64_mib_each_way_through_xtcps_fault_injector() {
    if child_role().is_some() {
        return;
    }
    let _serial = serial();
    let ns = Netns::up("fa");
    let env = [("XTCP_FAULTS", "impair".to_owned()), ("XTCP_CONNS", "1".to_owned())];
    let mut child = ns.spawn_child_in("NS_XTCP", "child_xtcp", "echo", &env);
    child.expect_line("READY", Duration::from_secs(20));
    let seed = child.expect_line("FAULT_SEED", Duration::from_secs(5));
    let t = StdInstant::now();
    let ip = ns.var("IP_XTCP").to_owned();
    let out = python_echo(&ns, &ip, ECHO_PORT, FAULT_INJECTOR_BYTES, IMPAIRED_DEADLINE_SECS);
    println!("through the fault injector ({seed}): {out} in {:.1} s", t.elapsed().as_secs_f64());
    let faults = child.expect_line("FAULTS", Duration::from_secs(30));
    let stack = child.expect_line("STACK", Duration::from_secs(5));
    assert!(child.wait(Duration::from_secs(10)).success(), "the echo child failed");
    for what in ["lost", "reordered", "duplicated", "corrupted"] {
        assert!(field(&faults, what) > 0, "no frame was {what}: {faults}");
    }
    // Corrupted frames that reached xtcp died at its checksum check.
    assert!(field(&stack, "bad_checksum") > 0, "{stack}");
}

#[test]
#[ignore = "needs root: run scripts/test.sh"]
fn echo_64_mib_each_way_through_a_lossy_duplicating_middle_namespace() {
    if child_role().is_some() {
        return;
    }
    let _serial = serial();
    // 5% loss and 1% duplication in each direction, on the wire between the two stacks.
    let ns = Netns::up_with("fm", &["--middle", "--loss", "50", "--dup", "10"]);
    let mut child = ns.spawn_child_in("NS_XTCP", "child_xtcp", "echo", &[("XTCP_CONNS", "1".to_owned())]);
    child.expect_line("READY", Duration::from_secs(20));
    let t = StdInstant::now();
    let ip = ns.var("IP_XTCP").to_owned();
    let out = python_echo(&ns, &ip, ECHO_PORT, MIDDLE_BYTES, IMPAIRED_DEADLINE_SECS);
    println!("through the middle namespace: {out} in {:.1} s", t.elapsed().as_secs_f64());
    child.expect_line("STACK", Duration::from_secs(30));
    assert!(child.wait(Duration::from_secs(10)).success(), "the echo child failed");
    let rules = run_text(ns.in_ns("NS_MIDDLE", "nft").args(["list", "table", "netdev", "xtcp_impair"]));
    println!("{rules}");
    let counts: Vec<u64> = rules
        .lines()
        .filter_map(|l| l.split("counter packets ").nth(1)?.split_whitespace().next()?.parse().ok())
        .collect();
    assert_eq!(counts.len(), 4, "two drop and two dup rules: {rules}");
    assert!(counts.iter().all(|&n| n > 0), "every rule should have fired: {counts:?}");
}

// ----- 6. Round trips per second: xtcp against the kernel's own stack, same veth, same client -----

/// How long each side is measured.
const ROUND_TRIP_SECS: &str = "3";

/// Where the round-trip client and the server run when the machine has two CPUs or more: on different ones, as a
/// kernel-bypass stack owns its core. Unpinned, the numbers depend on where the scheduler puts them (a kernel client
/// and server that share a CPU skip the cross-CPU wake-up and run ten times faster than on two).
fn client_cpu() -> Option<usize> {
    (std::thread::available_parallelism().map_or(1, |n| n.get()) >= 2).then_some(0)
}

fn server_cpu() -> Option<usize> {
    client_cpu().map(|_| 1)
}

/// Runs the round-trip client in the kernel's namespace against `addr`; returns its `RTT` line, once the client
/// ended without error (every echo came back whole: it panics otherwise) and measured round trips at a rate above 0.
fn round_trips(ns: &Netns, addr: &str) -> String {
    let env = [("XTCP_ADDR", addr.to_owned()), ("XTCP_SECS", ROUND_TRIP_SECS.to_owned())];
    let mut client = ns.spawn_child_on("NS_KERNEL", client_cpu(), "child_xtcp", "rtt-client", &env);
    let line = client.expect_line("RTT", Duration::from_secs(30));
    assert!(client.wait(Duration::from_secs(10)).success(), "the round-trip client failed: {line}");
    assert!(field(&line, "n") > 0, "no round trip measured against {addr}: {line}");
    assert!(field(&line, "per_sec") > 0, "no rate measured against {addr}: {line}");
    line
}

/// Prints echo round trips per second over one connection with 64-byte messages: the same kernel client against
/// xtcp's Echo over AF_XDP, then against a kernel echo server in xtcp's namespace on the same veth. It asserts what
/// makes the two figures comparable, never a speed: both runs measured round trips at a rate above 0, every echo came
/// back whole, and xtcp's side ended its connection normally, having reset nothing.
#[test]
#[ignore = "needs root: run scripts/test.sh"]
fn round_trips_per_second_xtcp_vs_kernel_one_connection_64_bytes() {
    if child_role().is_some() {
        return;
    }
    let _serial = serial();
    let ns = Netns::up("rt");
    let ip = ns.var("IP_XTCP").to_owned();
    let (xtcp, xsk, stack) = {
        let mut env = vec![("XTCP_CONNS", "1".to_owned())];
        if let Ok(us) = std::env::var("XTCP_BUSY_POLL_US") {
            env.push(("XTCP_BUSY_POLL_US", us));
        }
        let mut child = ns.spawn_child_on("NS_XTCP", server_cpu(), "child_xtcp", "echo", &env);
        child.expect_line("READY", Duration::from_secs(20));
        let rtt = round_trips(&ns, &format!("{ip}:{ECHO_PORT}"));
        let closed = child.expect_line("CLOSED", Duration::from_secs(10));
        let xsk = child.expect_line("XSK", Duration::from_secs(10));
        let stack = child.expect_line("STACK", Duration::from_secs(10));
        assert!(child.wait(Duration::from_secs(10)).success(), "the echo child failed");
        assert!(closed.starts_with("CLOSED Normal"), "xtcp's connection should end in an orderly close: {closed}");
        assert_eq!(field(&stack, "rst_sent"), 0, "{stack}");
        (rtt, xsk, stack)
    }; // xtcp's child has ended, and its XDP program with it
    assert!(common_afxdp::wait_until(Duration::from_secs(5), || !has_xdp(&ns.xtcp_link())));
    let kernel = {
        let port = ECHO_PORT + 1;
        let env = [("XTCP_PORT", port.to_string())];
        let child = ns.spawn_child_on("NS_XTCP", server_cpu(), "child_xtcp", "kernel-echo", &env);
        child.expect_line("READY", Duration::from_secs(20));
        round_trips(&ns, &format!("{ip}:{port}"))
    };
    let rate = |l: &str| field(l, "per_sec") as f64;
    let p50 = |l: &str| -> f64 { l.split("p50_us=").nth(1).and_then(|v| v.split(' ').next()?.parse().ok()).unwrap() };
    println!("echo round trips, one connection, 64-byte messages, {ROUND_TRIP_SECS} s each, client on CPU {:?}, server on CPU {:?}:", client_cpu(), server_cpu());
    println!("  xtcp (AF_XDP copy mode): {:>8.0}/s  p50 {:>6.1} us   [{xtcp}]", rate(&xtcp), p50(&xtcp));
    println!("  kernel (same veth):      {:>8.0}/s  p50 {:>6.1} us   [{kernel}]", rate(&kernel), p50(&kernel));
    println!("  xtcp / kernel: {:.2}", rate(&xtcp) / rate(&kernel));
    // Where xtcp's time goes: a copy-mode sendto per transmit batch, and the loop's idle sleeps.
    let n = field(&xtcp, "n") as f64;
    let kicks = xsk.split("tx_kicks: ").nth(1).and_then(|v| v.split(',').next()?.parse::<f64>().ok()).unwrap();
    let sleeps = stack.split("sleeps: ").nth(1).and_then(|v| v.split(' ').next()?.parse::<f64>().ok()).unwrap();
    println!("  xtcp per round trip: {:.2} sendto kicks, {:.2} loop sleeps", kicks / n, sleeps / n);
}
