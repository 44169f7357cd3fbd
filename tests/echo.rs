//! The echo server (`xtcp::app::echo`) over the lossy simulated link, and the real-clock loop over loopback.

mod common;

use std::net::SocketAddrV4;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use rand::{Rng, RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use xtcp::app::echo::Echo;
use xtcp::app::{dispatch, App};
use xtcp::engine::run::{run, RunOptions};
use xtcp::engine::{ConnId, Stack, StackConfig, StackEvent};
use xtcp::nic::fault::Faults;
use xtcp::nic::loopback::Loopback;
use xtcp::nic::sim::LinkConfig;
use xtcp::tcp::CloseReason;
use xtcp::time::Instant;

/// A client that sends each connection's bytes, reads the echo and closes once all of it is back.
struct Client {
    target: SocketAddrV4,
    payloads: Vec<Vec<u8>>,
    conns: Vec<(ConnId, usize, Vec<u8>, Option<CloseReason>)>,
    buf: Vec<u8>,
}

impl Client {
    fn new(target: SocketAddrV4, payloads: Vec<Vec<u8>>) -> Client {
        Client { target, payloads, conns: Vec::new(), buf: vec![0; 8192] }
    }

    fn pump(&mut self, stack: &mut Stack, id: ConnId) {
        let Some(i) = self.conns.iter().position(|c| c.0 == id) else { return };
        let (_, sent, got, _) = &mut self.conns[i];
        let data = &self.payloads[i];
        if *sent < data.len() {
            *sent += stack.send(id, &data[*sent..]).unwrap_or(0);
        }
        loop {
            let n = stack.recv(id, &mut self.buf).unwrap_or(0);
            if n == 0 {
                break;
            }
            got.extend_from_slice(&self.buf[..n]);
        }
        if got.len() == data.len() {
            let _ = stack.close(id);
        }
    }
}

impl App for Client {
    fn start(&mut self, stack: &mut Stack, _now: Instant) {
        for _ in 0..self.payloads.len() {
            let id = stack.connect(self.target).expect("connect");
            self.conns.push((id, 0, Vec::new(), None));
        }
    }

    fn on_event(&mut self, stack: &mut Stack, _now: Instant, event: StackEvent) {
        match event {
            StackEvent::Connected(c) | StackEvent::Readable(c) | StackEvent::Writable(c) => self.pump(stack, c),
            StackEvent::PeerClosed(c) => self.pump(stack, c),
            StackEvent::Closed(c, reason) => {
                if let Some(conn) = self.conns.iter_mut().find(|x| x.0 == c) {
                    conn.3 = Some(reason);
                }
            }
            StackEvent::Accepted { .. } => {}
        }
    }

    fn done(&self) -> bool {
        self.conns.iter().all(|c| c.3.is_some())
    }
}

/// Echo on one side, the client on the other, under the seed's faults.
fn echo_run(seed: u64) -> Result<(), String> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let faults = Faults {
        loss_ppm: rng.gen_range(0..=50_000),
        reorder_ppm: rng.gen_range(0..=50_000),
        reorder_delay_max: Duration::from_micros(500),
        duplicate_ppm: rng.gen_range(0..=10_000),
        ..Faults::default()
    };
    let payloads: Vec<Vec<u8>> = (0..rng.gen_range(1..=4))
        .map(|_| {
            let mut v = vec![0; rng.gen_range(1..=100_000)];
            rng.fill_bytes(&mut v);
            v
        })
        .collect();
    let mut world = common::world(common::configs(seed), LinkConfig::default(), faults, seed);
    let server = world.stacks[1].config().ip;
    let mut client = Client::new(SocketAddrV4::new(server, 7), payloads.clone());
    let mut echo = Echo::new(7);
    let now = world.now();
    echo.start(&mut world.stacks[1], now);
    client.start(&mut world.stacks[0], now);
    let finished = world.run(Instant::from_secs(600), |stacks, now| {
        dispatch(&mut stacks[1], now, &mut echo);
        dispatch(&mut stacks[0], now, &mut client);
        client.done() && stacks.iter().all(|s| s.slots_in_use() == 0)
    });
    for (i, c) in client.conns.iter().enumerate() {
        if c.2 != payloads[i] {
            return Err(format!("connection {i}: {} of {} bytes came back intact", c.2.len(), payloads[i].len()));
        }
        if c.3 != Some(CloseReason::Normal) {
            return Err(format!("connection {i} closed with {:?}", c.3));
        }
    }
    if !finished {
        return Err("did not finish".into());
    }
    if echo.accepted != payloads.len() as u64 {
        return Err(format!("echo accepted {} connections", echo.accepted));
    }
    Ok(())
}

#[test]
fn echo_returns_every_byte_over_a_lossy_reordering_link() {
    let failures: Vec<String> = (0..200).filter_map(|s| echo_run(s).err().map(|e| format!("seed {s}: {e}"))).collect();
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Echo server and client as one application on one stack.
struct Both(Echo, Client);

impl App for Both {
    fn start(&mut self, stack: &mut Stack, now: Instant) {
        self.0.start(stack, now);
        self.1.start(stack, now);
    }

    fn on_event(&mut self, stack: &mut Stack, now: Instant, event: StackEvent) {
        // The client's connections are the ones it opened; everything else is the server's.
        let client_owns = |id: ConnId| self.1.conns.iter().any(|c| c.0 == id);
        let mine = match event {
            StackEvent::Connected(c)
            | StackEvent::Readable(c)
            | StackEvent::Writable(c)
            | StackEvent::PeerClosed(c)
            | StackEvent::Closed(c, _) => client_owns(c),
            StackEvent::Accepted { .. } => false,
        };
        if mine {
            self.1.on_event(stack, now, event)
        } else {
            self.0.on_event(stack, now, event)
        }
    }

    fn done(&self) -> bool {
        self.1.done()
    }
}

/// Opens one connection in `start` and notes what it was opened with: the time `start` was given and the ISS.
#[derive(Default)]
struct OpensInStart {
    opened: Option<(Instant, SocketAddrV4, SocketAddrV4, u32)>,
}

impl App for OpensInStart {
    fn start(&mut self, stack: &mut Stack, now: Instant) {
        let id = stack.connect(SocketAddrV4::new(common::SERVER_IP, 9)).unwrap();
        let c = stack.connection(id).unwrap();
        self.opened = Some((now, c.local(), c.remote(), c.iss().0));
    }

    fn on_event(&mut self, _: &mut Stack, _: Instant, _: StackEvent) {}

    fn done(&self) -> bool {
        self.opened.is_some()
    }
}

/// A connection opened in `App::start` is opened at the clock's time, not at the stack's zero: its ISS (RFC 6528's
/// clock part) and its timers count from the time the application was given.
#[test]
fn a_connection_opened_in_start_takes_the_clocks_time() {
    let key = [7; 16];
    let mut cfg = StackConfig::new(common::SERVER_MAC, common::SERVER_IP, 43);
    cfg.isn_key = Some(key);
    let mut stack = Stack::new(cfg, Instant::ZERO);
    stack.add_neighbor(common::SERVER_IP, common::SERVER_MAC);
    let mut dev = Loopback::new(64, 1514);
    let mut app = OpensInStart::default();
    run(&mut stack, &mut dev, &mut app, &AtomicBool::new(false), RunOptions::default());
    let (now, local, remote, iss) = app.opened.unwrap();
    assert!(now > Instant::ZERO);
    assert_eq!(iss, xtcp::tcp::IsnGenerator::new(key).isn(local, remote, now).0);
    assert!(stack.poll_at().is_some_and(|t| t >= now), "the SYN's timer counts from {now}: {:?}", stack.poll_at());
}

#[test]
fn run_loop_with_a_real_clock_echoes_over_loopback() {
    let mut cfg = StackConfig::new(common::SERVER_MAC, common::SERVER_IP, 42);
    // The client closes first and must wait out TIME_WAIT before the test can see it finish.
    cfg.tcp.msl = Duration::from_millis(100);
    let mut stack = Stack::new(cfg, Instant::ZERO);
    stack.add_neighbor(common::SERVER_IP, common::SERVER_MAC);
    let mut dev = Loopback::new(4096, 1514);
    let mut rng = ChaCha8Rng::seed_from_u64(42);
    let payloads: Vec<Vec<u8>> = (0..3)
        .map(|_| {
            let mut v = vec![0; 300_000];
            rng.fill_bytes(&mut v);
            v
        })
        .collect();
    let mut app = Both(Echo::new(7), Client::new(SocketAddrV4::new(common::SERVER_IP, 7), payloads.clone()));
    let stop = AtomicBool::new(false);
    let stats = std::thread::scope(|s| {
        // A watchdog: the loop must finish on its own well before this.
        let watchdog = s.spawn(|| {
            let deadline = std::time::Instant::now() + Duration::from_secs(60);
            while std::time::Instant::now() < deadline && !stop.load(std::sync::atomic::Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(10));
            }
            stop.store(true, std::sync::atomic::Ordering::Relaxed);
        });
        let stats = run(&mut stack, &mut dev, &mut app, &stop, RunOptions::default());
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        watchdog.join().unwrap();
        stats
    });
    let states: Vec<String> = stack
        .connections()
        .map(|(_, c)| {
            format!(
                "{}:{} {} una={} nxt={} wnd={} sendq={} recvq={} timers={:?}",
                c.local().port(),
                c.remote().port(),
                c.state(),
                c.snd_una(),
                c.snd_nxt(),
                c.snd_wnd(),
                c.send_queue_len(),
                c.recv_queue_len(),
                c.poll_at()
            )
        })
        .collect();
    let progress: Vec<(usize, usize)> = app.1.conns.iter().map(|c| (c.1, c.2.len())).collect();
    assert!(
        app.done(),
        "the loop stopped before the client finished: {stats:?}\n{states:#?}\nsent/echoed {progress:?}\n{:?}",
        stack.counters()
    );
    for (i, c) in app.1.conns.iter().enumerate() {
        assert_eq!(c.2.len(), payloads[i].len());
        assert!(c.2 == payloads[i], "connection {i} came back corrupted");
        assert_eq!(c.3, Some(CloseReason::Normal));
    }
    assert!(stats.busy_turns > 0);
}

#[test]
fn a_client_that_stops_reading_for_a_while_still_gets_every_byte_back() {
    // Both directions fill up: the echo's receive buffer, then its send buffer, then the client's. The client then
    // drains; its window updates must reach an echo whose own window is closed (zero-window probes in flight).
    let mut world = common::world(common::configs(21), LinkConfig::default(), Faults::default(), 21);
    let mut echo = Echo::new(7);
    let now = world.now();
    echo.start(&mut world.stacks[1], now);
    let conn = world.stacks[0].connect(SocketAddrV4::new(common::SERVER_IP, 7)).unwrap();
    let mut data = vec![0u8; 1 << 20];
    ChaCha8Rng::seed_from_u64(21).fill_bytes(&mut data);
    let (mut sent, mut got, mut buf) = (0, Vec::new(), vec![0u8; 65536]);
    let finished = world.run(Instant::from_secs(120), |stacks, now| {
        dispatch(&mut stacks[1], now, &mut echo);
        while stacks[0].next_event().is_some() {}
        if sent < data.len() {
            sent += stacks[0].send(conn, &data[sent..]).unwrap_or(0);
        }
        if now >= Instant::from_secs(1) {
            loop {
                let n = stacks[0].recv(conn, &mut buf).unwrap_or(0);
                if n == 0 {
                    break;
                }
                got.extend_from_slice(&buf[..n]);
            }
        }
        got.len() == data.len()
    });
    assert!(finished, "stalled: {} of {} bytes came back", got.len(), data.len());
    assert!(got == data);
    // The windows did close: the echo probed the client's (and maybe the client the echo's).
    let probes: u64 =
        world.stacks.iter().map(|s| s.tcp_totals().iter().find(|t| t.0 == "window_probes").unwrap().1).sum();
    assert!(probes > 0, "no zero-window probe: the windows never closed");
}
