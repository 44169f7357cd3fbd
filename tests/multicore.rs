//! The multi-core engine over veth with two queues (`scripts/netns.sh up NAME --queues 2`): xtcp's
//! `engine::shard::run_cores` on two pinned cores in one namespace, the kernel's TCP in the other. Needs root:
//! `scripts/test.sh` runs these.
//!
//! As in `tests/interop.rs`, xtcp's side is this test binary re-run as a child inside its namespace
//! (`XTCP_AFXDP_CHILD` names the role, played by [`child_multicore`]), and so is the kernel side (a Rust `std::net`
//! client or echo server in the kernel's namespace). The children print one `CORE` line per core; the tests read
//! them. What is measured, and why, is in `docs/multicore.md`.
#![cfg(all(feature = "afxdp", target_os = "linux"))]

mod common_afxdp;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddrV4, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant as StdInstant};

use common_afxdp::{child_env, child_role, field, serve_kernel_echo, ChildGuard, Netns};
use xtcp::app::echo::Echo;
use xtcp::app::{App, Sockets};
use xtcp::engine::shard::{run_cores_with, CoreInfo, CoreReport, CoresConfig, Hooks, WrapDevice};
use xtcp::engine::{ConnId, Stack, StackConfig, StackEvent};
use xtcp::nic::afxdp::{self, XskDevice};
use xtcp::nic::FrameDevice;
use xtcp::time::Instant;
use xtcp::wire::EthernetAddress;

const ECHO_PORT: u16 = 7777;
const KERNEL_ECHO_PORT: u16 = 9000;

/// The tests of this binary run one at a time (two CPUs).
fn serial() -> MutexGuard<'static, ()> {
    static SERIAL: Mutex<()> = Mutex::new(());
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// Bytes of connection `i`: a length from 1 to 1400 and a pseudo-random pattern, so both ends can check them.
fn pattern(i: u64) -> Vec<u8> {
    let len = 1 + (i.wrapping_mul(7919) % 1400) as usize;
    let mut x = i.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len)
        .map(|_| {
            x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
            (x >> 56) as u8
        })
        .collect()
}

// ----- The xtcp side (children) -----

/// Counts the connections of a core's application that closed, for the child's stop condition.
struct Counted<A> {
    app: A,
    closed: Arc<AtomicU64>,
}

impl<A: App> App for Counted<A> {
    fn start(&mut self, stack: &mut Stack, now: Instant) {
        self.app.start(stack, now);
    }

    fn on_event(&mut self, stack: &mut Stack, now: Instant, event: StackEvent) {
        if let StackEvent::Closed(..) = event {
            self.closed.fetch_add(1, Ordering::Relaxed);
        }
        self.app.on_event(stack, now, event);
    }

    fn on_tick(&mut self, stack: &mut Stack, now: Instant) {
        self.app.on_tick(stack, now);
    }

    fn done(&self) -> bool {
        self.app.done()
    }
}

/// The stack settings of a child: the interface's MAC, `XTCP_IP`, the kernel keeps ARP.
fn xtcp_config() -> CoresConfig {
    let ifname = child_env("XTCP_IF");
    let ip: Ipv4Addr = child_env("XTCP_IP").parse().unwrap();
    let mac = afxdp::interface_mac(&ifname).expect("interface MAC");
    let mut stack = StackConfig::new(mac, ip, 7);
    stack.arp = false;
    let mut cfg = CoresConfig::new(&ifname, stack);
    let peer_ip: Ipv4Addr = child_env("XTCP_PEER_IP").parse().unwrap();
    let peer_mac: Vec<u8> = child_env("XTCP_PEER_MAC").split(':').map(|h| u8::from_str_radix(h, 16).unwrap()).collect();
    cfg.neighbors.push((peer_ip, EthernetAddress::from_bytes(&peer_mac).unwrap()));
    cfg.shutdown_grace = Duration::from_secs(1);
    // `XTCP_FIRST_QUEUE=1` with `netns.sh --queues 3 --xps-rxqs`: two cores on queues 1 and 2.
    cfg.first_queue = std::env::var("XTCP_FIRST_QUEUE").map_or(0, |v| v.parse().unwrap());
    cfg
}

/// Prints one `CORE` line per core.
fn print_cores<A>(cores: &[CoreReport<A>], app_words: impl Fn(&A) -> String) {
    for c in cores {
        println!(
            "CORE {} queue={} cpu={} ports={}-{} conns_opened={} rx_frames={} tx_frames={} handed_out={} handed_in={} \
             handoff_dropped={} strays={} redirected={} rst_sent={} drops={} closed={} aborted={} sleeps={} {}",
            c.core,
            c.queue,
            c.cpu.map_or(-1, |c| c as i64),
            c.ephemeral_ports.start(),
            c.ephemeral_ports.end(),
            c.counters.conns_opened,
            c.counters.rx_frames,
            c.counters.tx_frames,
            c.handoff.handed_out,
            c.handoff.handed_in,
            c.handoff.handoff_dropped,
            c.handoff.strays_passed,
            c.steering.redirected,
            c.counters.rst_sent,
            c.counters.total_drops(),
            c.shutdown.closed,
            c.shutdown.aborted,
            c.run.sleeps,
            app_words(&c.app)
        );
    }
}

/// Echo on every core until `XTCP_CONNS` connections closed in all.
fn serve_echo() {
    let wanted: u64 = std::env::var("XTCP_CONNS").map_or(u64::MAX, |v| v.parse().unwrap());
    let stop_file = std::env::var("XTCP_STOP_FILE").ok();
    let mut cfg = xtcp_config();
    cfg.ports = vec![ECHO_PORT];
    cfg.cores = std::env::var("XTCP_CORES").ok().map(|v| v.parse().unwrap());
    cfg.pcap = std::env::var("XTCP_PCAP").ok().map(Into::into);
    let closed = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let watcher = {
        let (closed, stop) = (closed.clone(), stop.clone());
        std::thread::spawn(move || {
            let deadline = StdInstant::now() + Duration::from_secs(100);
            while closed.load(Ordering::Relaxed) < wanted
                && StdInstant::now() < deadline
                && !stop_file.as_ref().is_some_and(|f| std::path::Path::new(f).exists())
            {
                std::thread::sleep(Duration::from_millis(10));
            }
            stop.store(true, Ordering::SeqCst);
        })
    };
    let make = |_core| Counted { app: Echo::new(ECHO_PORT), closed: closed.clone() };
    let ready = |cores: &[CoreInfo], cpus: usize| println!("READY cores={} cpus={cpus}", cores.len());
    let hooks = Hooks { ready: Some(&ready), ..Hooks::default() };
    let report = run_cores_with(&cfg, make, &hooks, &stop).expect("run the cores");
    watcher.join().unwrap();
    print_cores(&report.cores, |a| format!("accepted={}", a.app.accepted));
    println!("DONE cpus={}", report.cpus);
}

/// One echo exchange of [`Client`].
struct Exchange {
    index: u64,
    data: Vec<u8>,
    sent: usize,
    received: usize,
    shut: bool,
}

/// xtcp's client on one core: `total` connections to `peer`, at most `parallel` at once; each sends its
/// [`pattern`], half-closes, and checks the echo byte for byte until the server's FIN.
struct Client {
    peer: SocketAddrV4,
    core: u64,
    cores: u64,
    next: u64,
    total: u64,
    parallel: usize,
    live: HashMap<ConnId, Exchange>,
    ok: u64,
    bad: u64,
    failed: u64,
    buf: Box<[u8]>,
}

impl Client {
    fn open_more(&mut self, stack: &mut Stack) {
        while self.live.len() < self.parallel && self.next < self.total {
            // Connection numbers interleave over the cores so that every core's patterns differ.
            let index = self.next * self.cores + self.core;
            self.next += 1;
            match stack.connect(self.peer) {
                Ok(id) => {
                    let _ = Sockets::set_nodelay(stack, id, true);
                    self.live.insert(id, Exchange { index, data: pattern(index), sent: 0, received: 0, shut: false });
                }
                Err(_) => self.failed += 1,
            }
        }
    }

    fn pump(&mut self, stack: &mut Stack, id: ConnId) {
        let Some(x) = self.live.get_mut(&id) else { return };
        if x.sent < x.data.len() {
            x.sent += stack.send(id, &x.data[x.sent..]).unwrap_or(0);
        }
        if x.sent == x.data.len() && !x.shut {
            x.shut = stack.close(id).is_ok();
        }
        loop {
            let n = stack.recv(id, &mut self.buf).unwrap_or(0);
            if n == 0 {
                break;
            }
            let end = (x.received + n).min(x.data.len());
            if x.received + n > x.data.len() || self.buf[..end - x.received] != x.data[x.received..end] {
                x.received = usize::MAX / 2; // marks the exchange bad
            } else {
                x.received += n;
            }
        }
    }
}

impl App for Client {
    fn start(&mut self, stack: &mut Stack, _now: Instant) {
        self.open_more(stack);
    }

    fn on_event(&mut self, stack: &mut Stack, _now: Instant, event: StackEvent) {
        match event {
            StackEvent::Connected(id) | StackEvent::Writable(id) | StackEvent::Readable(id) => self.pump(stack, id),
            // The server's FIN ends the exchange: our side goes on to TIME_WAIT, which the stack keeps.
            StackEvent::PeerClosed(id) => {
                self.pump(stack, id);
                if let Some(x) = self.live.remove(&id) {
                    if x.received == x.data.len() {
                        self.ok += 1;
                    } else {
                        println!("BAD exchange {} received {} of {}", x.index, x.received, x.data.len());
                        self.bad += 1;
                    }
                }
                self.open_more(stack);
            }
            StackEvent::Closed(id, reason) => {
                if let Some(x) = self.live.remove(&id) {
                    println!("FAILED exchange {} {reason:?}", x.index);
                    self.failed += 1;
                }
                self.open_more(stack);
            }
            StackEvent::Accepted { .. } => {}
        }
    }

    fn done(&self) -> bool {
        self.next >= self.total && self.live.is_empty()
    }
}

/// xtcp's client on every core: `XTCP_CONNS` connections in all to the kernel's echo server.
fn client() {
    let total: u64 = child_env("XTCP_CONNS").parse().unwrap();
    let cfg = xtcp_config();
    let peer_ip: Ipv4Addr = child_env("XTCP_PEER_IP").parse().unwrap();
    let cores = xtcp::engine::shard::core_count(&cfg).unwrap() as u64;
    let stop = AtomicBool::new(false);
    println!("READY");
    let t0 = StdInstant::now();
    let make = |core: usize| Client {
        peer: SocketAddrV4::new(peer_ip, KERNEL_ECHO_PORT),
        core: core as u64,
        cores,
        next: 0,
        total: total / cores + u64::from((core as u64) < total % cores),
        parallel: 32,
        live: HashMap::new(),
        ok: 0,
        bad: 0,
        failed: 0,
        buf: vec![0; 4096].into_boxed_slice(),
    };
    // XTCP_WRAP: each core's socket goes through the device-wrapper hook (here, boxed as it is).
    let wrap = |core: usize, xsk: XskDevice| -> Box<dyn FrameDevice> {
        println!("WRAPPED core={core} queue={}", xsk.queue());
        Box::new(xsk)
    };
    let hooks = Hooks { wrap: std::env::var_os("XTCP_WRAP").map(|_| &wrap as &WrapDevice), ..Hooks::default() };
    let report = run_cores_with(&cfg, make, &hooks, &stop).expect("run the cores");
    let secs = t0.elapsed().as_secs_f64();
    print_cores(&report.cores, |a| format!("ok={} bad={} failed={}", a.ok, a.bad, a.failed));
    println!("DONE cpus={} secs={secs:.2}", report.cpus);
}

/// A kernel echo server (std::net, a thread per connection) on `XTCP_PEER_IP`:`KERNEL_ECHO_PORT`.
fn kernel_echo_server() {
    let listener = TcpListener::bind((child_env("XTCP_PEER_IP").as_str(), KERNEL_ECHO_PORT)).expect("bind");
    serve_kernel_echo(listener);
}

/// A kernel client: `XTCP_CONNS` connections to `XTCP_ADDR` from `XTCP_THREADS` threads; each sends its [`pattern`],
/// half-closes and reads the echo to EOF. Prints `KCLIENT ok=N bad=N`.
fn kernel_client() {
    let addr: SocketAddrV4 = child_env("XTCP_ADDR").parse().unwrap();
    let total: u64 = child_env("XTCP_CONNS").parse().unwrap();
    let threads: u64 = child_env("XTCP_THREADS").parse().unwrap();
    let next = Arc::new(AtomicU64::new(0));
    let (ok, bad) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let t0 = StdInstant::now();
    let workers: Vec<_> = (0..threads)
        .map(|_| {
            let (next, ok, bad) = (next.clone(), ok.clone(), bad.clone());
            std::thread::spawn(move || loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= total {
                    break;
                }
                let data = pattern(i);
                let result = (|| -> std::io::Result<Vec<u8>> {
                    let mut s = TcpStream::connect_timeout(&addr.into(), Duration::from_secs(5))?;
                    s.set_read_timeout(Some(Duration::from_secs(10)))?;
                    s.write_all(&data)?;
                    s.shutdown(Shutdown::Write)?;
                    let mut got = Vec::new();
                    s.read_to_end(&mut got)?;
                    Ok(got)
                })();
                match result {
                    Ok(got) if got == data => ok.fetch_add(1, Ordering::Relaxed),
                    other => {
                        println!("KBAD {i}: {:?}", other.map(|g| g.len()));
                        bad.fetch_add(1, Ordering::Relaxed)
                    }
                };
            })
        })
        .collect();
    for w in workers {
        w.join().unwrap();
    }
    println!(
        "KCLIENT ok={} bad={} secs={:.2}",
        ok.load(Ordering::Relaxed),
        bad.load(Ordering::Relaxed),
        t0.elapsed().as_secs_f64()
    );
}

/// A kernel client that opens `XTCP_CONNS` connections to `XTCP_ADDR`, has one echo on each, and holds them open
/// (`HELD n`); then waits for the server to close each (`EOFS n` of them ended by a FIN within 10 s).
fn kernel_holder() {
    let addr: SocketAddrV4 = child_env("XTCP_ADDR").parse().unwrap();
    let total: usize = child_env("XTCP_CONNS").parse().unwrap();
    let mut streams = Vec::new();
    for i in 0..total {
        let mut s = TcpStream::connect(addr).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let msg = format!("hold {i}");
        s.write_all(msg.as_bytes()).unwrap();
        let mut back = vec![0u8; msg.len()];
        s.read_exact(&mut back).unwrap();
        assert_eq!(back, msg.as_bytes());
        streams.push(s);
    }
    println!("HELD {}", streams.len());
    // XTCP_GO_FILE: once it exists, one more echo on every connection (`ROUND2 ok=N`).
    if let Ok(go) = std::env::var("XTCP_GO_FILE") {
        let deadline = StdInstant::now() + Duration::from_secs(30);
        while !std::path::Path::new(&go).exists() && StdInstant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        let mut ok = 0;
        for (i, s) in streams.iter_mut().enumerate() {
            let msg = format!("again {i}");
            let mut back = vec![0u8; msg.len()];
            if s.write_all(msg.as_bytes()).is_ok() && s.read_exact(&mut back).is_ok() && back == msg.as_bytes() {
                ok += 1;
            }
        }
        println!("ROUND2 ok={ok}");
    }
    let mut eofs = 0;
    for mut s in streams {
        let mut buf = [0u8; 64];
        if let Ok(0) = s.read(&mut buf) {
            eofs += 1;
        }
    }
    println!("EOFS {eofs}");
}

/// `XTCP_THREADS` kernel connections to `XTCP_ADDR`, each sending 64-byte messages one at a time and reading the
/// echo for `XTCP_SECS`. Prints `RATE per_sec=N n=N n_min=N` (`n_min`: the fewest echoes on one connection); any
/// failed or wrong echo panics.
fn kernel_rate_client() {
    let addr: SocketAddrV4 = child_env("XTCP_ADDR").parse().unwrap();
    let threads: usize = child_env("XTCP_THREADS").parse().unwrap();
    let secs: f64 = child_env("XTCP_SECS").parse().unwrap();
    let barrier = Arc::new(std::sync::Barrier::new(threads));
    let t0 = StdInstant::now();
    let workers: Vec<_> = (0..threads)
        .map(|_| {
            let barrier = barrier.clone();
            std::thread::spawn(move || -> (u64, f64) {
                let mut s = TcpStream::connect(addr).expect("connect");
                s.set_nodelay(true).unwrap();
                s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                barrier.wait();
                let (mut msg, mut back) = ([7u8; 64], [0u8; 64]);
                let start = StdInstant::now();
                let mut n = 0u64;
                while start.elapsed().as_secs_f64() < secs {
                    msg[..8].copy_from_slice(&n.to_le_bytes());
                    s.write_all(&msg).unwrap();
                    s.read_exact(&mut back).unwrap();
                    assert_eq!(back, msg);
                    n += 1;
                }
                (n, start.elapsed().as_secs_f64())
            })
        })
        .collect();
    let results: Vec<(u64, f64)> = workers.into_iter().map(|w| w.join().unwrap()).collect();
    let n: u64 = results.iter().map(|r| r.0).sum();
    let n_min = results.iter().map(|r| r.0).min().unwrap_or(0);
    let secs = results.iter().map(|r| r.1).fold(0.0, f64::max);
    println!(
        "RATE per_sec={:.0} n={n} n_min={n_min} secs={secs:.2} wall={:.2}",
        n as f64 / secs,
        t0.elapsed().as_secs_f64()
    );
}

/// Every child role of this file: `echo`, `client` (xtcp's side); `kernel-echo`, `kernel-client`, `kernel-holder`,
/// `kernel-rate` (the kernel's).
#[test]
#[ignore = "needs root: run scripts/test.sh"]
fn child_multicore() {
    let Some(role) = child_role() else { return };
    match role.as_str() {
        "echo" => serve_echo(),
        "client" => client(),
        "kernel-echo" => kernel_echo_server(),
        "kernel-client" => kernel_client(),
        "kernel-holder" => kernel_holder(),
        "kernel-rate" => kernel_rate_client(),
        other => panic!("unknown child role {other}"),
    }
}

// ----- The tests -----

/// The `CORE` lines of a child, in core order, once it printed `DONE`.
fn core_lines(child: &ChildGuard, cores: usize, timeout: Duration) -> (Vec<String>, String) {
    let mut lines = Vec::new();
    for _ in 0..cores {
        lines.push(child.expect_line("CORE", timeout));
    }
    let done = child.expect_line("DONE", timeout);
    (lines, done)
}

fn sum(lines: &[String], name: &str) -> u64 {
    lines.iter().map(|l| field(l, name)).sum()
}

#[test]
#[ignore = "needs root: run scripts/test.sh"]
fn kernel_clients_1000_connections_spread_over_both_cores_and_all_echoed() {
    if child_role().is_some() {
        return;
    }
    let _serial = serial();
    // A kernel socket picks its queue from a random per-socket hash: the SYNs spread over both queues.
    let ns = Netns::up_with("mk", &["--queues", "2"]);
    let conns = 1000;
    let mut xtcp = ns.spawn_child_in("NS_XTCP", "child_multicore", "echo", &[("XTCP_CONNS", conns.to_string())]);
    xtcp.expect_line("READY", Duration::from_secs(20));
    let addr = format!("{}:{ECHO_PORT}", ns.var("IP_XTCP"));
    let env = [("XTCP_ADDR", addr), ("XTCP_CONNS", conns.to_string()), ("XTCP_THREADS", "8".to_owned())];
    let mut kernel = ns.spawn_child_in("NS_KERNEL", "child_multicore", "kernel-client", &env);
    let k = kernel.expect_line("KCLIENT", Duration::from_secs(90));
    assert!(kernel.wait(Duration::from_secs(10)).success());
    let (cores, _) = core_lines(&xtcp, 2, Duration::from_secs(30));
    assert!(xtcp.wait(Duration::from_secs(10)).success(), "the xtcp child failed");
    assert_eq!(field(&k, "ok"), conns, "{k}");
    assert_eq!(field(&k, "bad"), 0, "{k}");
    let accepted: Vec<u64> = cores.iter().map(|l| field(l, "accepted")).collect();
    assert_eq!(accepted.iter().sum::<u64>(), conns, "{cores:?}");
    assert!(accepted.iter().all(|&a| a > 0), "a core accepted nothing: {accepted:?}");
    // Passive opens stay on their SYN's queue: no segment found a core without its connection (none was reset).
    assert_eq!(sum(&cores, "rst_sent"), 0, "{cores:?}");
    assert_eq!(sum(&cores, "aborted"), 0, "{cores:?}");
    println!("accepted per core: {accepted:?}");
}

/// xtcp's client on two cores against the kernel's echo server in `ns`; returns the `CORE` lines.
/// `first_queue` is core 0's queue; `wrap` sends each core's socket through the device-wrapper hook.
fn xtcp_clients(ns: &Netns, conns: u64, first_queue: u32, wrap: bool) -> Vec<String> {
    let server = ns.spawn_child_in("NS_KERNEL", "child_multicore", "kernel-echo", &[]);
    server.expect_line("READY", Duration::from_secs(20));
    let mut env = vec![("XTCP_CONNS", conns.to_string()), ("XTCP_FIRST_QUEUE", first_queue.to_string())];
    if wrap {
        env.push(("XTCP_WRAP", "1".to_owned()));
    }
    let mut xtcp = ns.spawn_child_in("NS_XTCP", "child_multicore", "client", &env);
    if wrap {
        let mut wrapped: Vec<String> = (0..2).map(|_| xtcp.expect_line("WRAPPED", Duration::from_secs(20))).collect();
        wrapped.sort();
        assert_eq!(wrapped, ["WRAPPED core=0 queue=0", "WRAPPED core=1 queue=1"]);
    }
    let (cores, done) = core_lines(&xtcp, 2, Duration::from_secs(90));
    assert!(xtcp.wait(Duration::from_secs(10)).success(), "the xtcp child failed");
    println!("{done}");
    assert_eq!(sum(&cores, "ok"), conns, "{cores:?}");
    assert_eq!(sum(&cores, "bad"), 0, "{cores:?}");
    assert_eq!(sum(&cores, "failed"), 0, "{cores:?}");
    assert!(cores.iter().all(|l| field(l, "conns_opened") > 0), "a core opened nothing: {cores:?}");
    assert_eq!(sum(&cores, "handoff_dropped"), 0, "{cores:?}");
    cores
}

#[test]
#[ignore = "needs root: run scripts/test.sh"]
fn xtcp_client_1000_connections_from_both_cores_with_no_hand_offs() {
    if child_role().is_some() {
        return;
    }
    let _serial = serial();
    // Three queues, xtcp on 1 and 2, and XPS on the kernel's end so it answers on the queue it heard from
    // (`scripts/netns.sh`, `docs/multicore.md`: veth records tx queue Q as rx queue Q-1, and queue 0 as none).
    let ns = Netns::up_with("mc", &["--queues", "3", "--xps-rxqs"]);
    let cores = xtcp_clients(&ns, 1000, 1, false);
    assert_eq!(sum(&cores, "handed_out"), 0, "replies came back on another core's queue: {cores:?}");
}

#[test]
#[ignore = "needs root: run scripts/test.sh"]
fn replies_on_the_wrong_queue_are_handed_to_their_core_and_echo_intact() {
    if child_role().is_some() {
        return;
    }
    let _serial = serial();
    // Without XPS the kernel picks each connection's queue from a random per-socket hash: about half the replies
    // land on the other core's queue.
    let ns = Netns::up_with("mm", &["--queues", "2"]);
    let cores = xtcp_clients(&ns, 300, 0, true);
    let (out, inn) = (sum(&cores, "handed_out"), sum(&cores, "handed_in"));
    println!("handed out {out}, in {inn}");
    assert!(out > 0, "no frame needed a hand-off: {cores:?}");
    assert_eq!(out, inn, "every frame handed out was taken in: {cores:?}");
}

#[test]
#[ignore = "needs root: run scripts/test.sh"]
fn stop_closes_every_cores_connections_with_a_fin() {
    if child_role().is_some() {
        return;
    }
    let _serial = serial();
    let ns = Netns::up_with("ms", &["--queues", "2"]);
    let tmp = common_afxdp::TempDir::new("ms");
    let stop_file = tmp.path("stop");
    let pcap = tmp.path("ms.pcap");
    let env = [("XTCP_STOP_FILE", stop_file.display().to_string()), ("XTCP_PCAP", pcap.display().to_string())];
    let mut xtcp = ns.spawn_child_in("NS_XTCP", "child_multicore", "echo", &env);
    xtcp.expect_line("READY", Duration::from_secs(20));
    let env = [("XTCP_ADDR", format!("{}:{ECHO_PORT}", ns.var("IP_XTCP"))), ("XTCP_CONNS", "40".to_owned())];
    let mut kernel = ns.spawn_child_in("NS_KERNEL", "child_multicore", "kernel-holder", &env);
    kernel.expect_line("HELD 40", Duration::from_secs(20));
    std::fs::write(&stop_file, b"").unwrap();
    let eofs = kernel.expect_line("EOFS", Duration::from_secs(20));
    assert!(kernel.wait(Duration::from_secs(10)).success());
    let (cores, _) = core_lines(&xtcp, 2, Duration::from_secs(20));
    assert!(xtcp.wait(Duration::from_secs(10)).success(), "the xtcp child failed");
    assert_eq!(eofs, "EOFS 40", "every held connection ended with xtcp's FIN");
    assert_eq!(sum(&cores, "closed"), 40, "{cores:?}");
    assert!(cores.iter().all(|l| field(l, "closed") > 0), "both cores held connections: {cores:?}");
    assert_eq!(sum(&cores, "aborted"), 0, "{cores:?}");
    // Each core recorded its own frames: its SYNs, echoes and FINs (pcap: a 24-byte file header, then records).
    for (core, line) in cores.iter().enumerate() {
        let path = tmp.path(&format!("ms-core{core}.pcap"));
        let len = std::fs::metadata(&path).map_or(0, |m| m.len());
        let frames = field(line, "rx_frames") + field(line, "tx_frames");
        assert!(len > 24 + frames * 16 + frames * 54, "{} holds {len} bytes for {frames} frames", path.display());
    }
}

/// How many times the two-core run of [`echo_transactions_per_second_one_core_and_two`] is made when every
/// connection landed on one queue. The kernel's side picks each connection's queue from a random per-socket hash, so
/// with 8 connections that happens in 2 runs of 256; such a run measured one core, not two, and is made again with
/// new connections. Three in a row: about 1 in 2 million.
const SPREAD_RUNS: usize = 3;

/// One run of [`echo_transactions_per_second_one_core_and_two`]: xtcp's echo on `cores` cores (veth with as many
/// queues), `threads` kernel connections for `secs`. Returns the client's `RATE` line and each core's accepted
/// connections, once both sides ended without error, every connection was accepted, and each made at least one
/// echo.
fn echo_rate_run(cores: usize, threads: u64, secs: &str) -> (String, Vec<u64>) {
    let ns = Netns::up_with("mr", &["--queues", &cores.to_string()]);
    let env = [("XTCP_CONNS", threads.to_string()), ("XTCP_CORES", cores.to_string())];
    let mut xtcp = ns.spawn_child_in("NS_XTCP", "child_multicore", "echo", &env);
    xtcp.expect_line("READY", Duration::from_secs(20));
    let env = [
        ("XTCP_ADDR", format!("{}:{ECHO_PORT}", ns.var("IP_XTCP"))),
        ("XTCP_THREADS", threads.to_string()),
        ("XTCP_SECS", secs.to_owned()),
    ];
    let mut kernel = ns.spawn_child_in("NS_KERNEL", "child_multicore", "kernel-rate", &env);
    let rate = kernel.expect_line("RATE", Duration::from_secs(60));
    assert!(kernel.wait(Duration::from_secs(10)).success(), "the kernel client failed: {rate}");
    let (core_lines, _) = core_lines(&xtcp, cores, Duration::from_secs(20));
    assert!(xtcp.wait(Duration::from_secs(10)).success(), "the xtcp child failed");
    let accepted: Vec<u64> = core_lines.iter().map(|l| field(l, "accepted")).collect();
    assert_eq!(accepted.iter().sum::<u64>(), threads, "every connection accepted: {core_lines:?}");
    assert!(field(&rate, "n") > 0, "{cores} core(s): no echo measured: {rate}");
    assert!(field(&rate, "n_min") > 0, "{cores} core(s): a connection made no echo: {rate}");
    assert_eq!(sum(&core_lines, "aborted"), 0, "{core_lines:?}");
    (rate, accepted)
}

/// Prints echo transactions per second — 64-byte messages, one in flight per connection, 8 kernel connections —
/// against xtcp's echo on one core (veth with one queue) and on two (two queues). It asserts what makes the two
/// figures comparable, never a speed: each run measured echoes on every connection, and in the two-core run each
/// core accepted connections.
#[test]
#[ignore = "needs root: run scripts/test.sh"]
fn echo_transactions_per_second_one_core_and_two() {
    if child_role().is_some() {
        return;
    }
    let _serial = serial();
    let secs = std::env::var("XTCP_SECS").unwrap_or_else(|_| "3".to_owned());
    let threads: u64 = std::env::var("XTCP_THREADS").map_or(8, |v| v.parse().expect("XTCP_THREADS: a number"));
    assert!(threads >= 2, "XTCP_THREADS={threads}: two cores need two connections or more");
    let mut lines = Vec::new();
    for cores in [1usize, 2] {
        let mut runs = 1;
        let (rate, accepted) = loop {
            let (rate, accepted) = echo_rate_run(cores, threads, &secs);
            if accepted.iter().all(|&a| a > 0) || runs == SPREAD_RUNS {
                break (rate, accepted);
            }
            println!("{cores} cores: every connection on one queue, accepted per core {accepted:?}: once more");
            runs += 1;
        };
        assert!(
            accepted.iter().all(|&a| a > 0),
            "{cores} cores: a core accepted no connection in {SPREAD_RUNS} runs: {accepted:?}"
        );
        lines.push(format!("{cores} core(s): {rate}  accepted per core {accepted:?}"));
    }
    println!("echo transactions/s, {threads} kernel connections, 64-byte messages, {secs} s:");
    for l in lines {
        println!("  {l}");
    }
}

#[test]
#[ignore = "needs root: run scripts/test.sh"]
fn kernel_flows_that_move_queue_mid_connection_are_passed_to_their_core_not_reset() {
    if child_role().is_some() {
        return;
    }
    let _serial = serial();
    let ns = Netns::up_with("mv", &["--queues", "2"]);
    let tmp = common_afxdp::TempDir::new("mv");
    let (stop_file, go_file) = (tmp.path("stop"), tmp.path("go"));
    let env = [("XTCP_STOP_FILE", stop_file.display().to_string())];
    let mut xtcp = ns.spawn_child_in("NS_XTCP", "child_multicore", "echo", &env);
    xtcp.expect_line("READY", Duration::from_secs(20));
    let env = [
        ("XTCP_ADDR", format!("{}:{ECHO_PORT}", ns.var("IP_XTCP"))),
        ("XTCP_CONNS", "40".to_owned()),
        ("XTCP_GO_FILE", go_file.display().to_string()),
    ];
    let mut kernel = ns.spawn_child_in("NS_KERNEL", "child_multicore", "kernel-holder", &env);
    kernel.expect_line("HELD 40", Duration::from_secs(20));
    // Every CPU of the kernel's side now transmits on queue 1 (XPS by CPU): each idle connection re-picks its queue
    // on its next segment, so core 0's connections move to core 1's queue.
    let script =
        format!("printf '%x' $(( (1 << $(nproc)) - 1 )) > /sys/class/net/{}/queues/tx-1/xps_cpus", ns.var("IF_KERNEL"));
    common_afxdp::run(ns.in_kernel_ns("sh").args(["-c", &script]));
    std::fs::write(&go_file, b"").unwrap();
    let round2 = kernel.expect_line("ROUND2", Duration::from_secs(30));
    std::fs::write(&stop_file, b"").unwrap();
    let eofs = kernel.expect_line("EOFS", Duration::from_secs(20));
    assert!(kernel.wait(Duration::from_secs(10)).success());
    let (cores, _) = core_lines(&xtcp, 2, Duration::from_secs(20));
    assert!(xtcp.wait(Duration::from_secs(10)).success(), "the xtcp child failed");
    assert_eq!(round2, "ROUND2 ok=40", "every connection still echoed after its flow moved");
    assert_eq!(eofs, "EOFS 40");
    let moved = field(&cores[0], "accepted");
    assert!(moved > 0, "core 0 had connections to move: {cores:?}");
    assert!(field(&cores[1], "strays") > 0, "core 1 passed the moved segments on: {cores:?}");
    assert_eq!(sum(&cores, "aborted"), 0, "{cores:?}");
}
