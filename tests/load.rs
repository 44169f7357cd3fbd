//! The load generator (`xtcp::app::load`) on stack 0 against the echo and HTTP servers on stack 1, over the
//! simulated link in virtual time.

mod common;

use std::cell::Cell;
use std::net::SocketAddrV4;
use std::rc::Rc;
use std::time::Duration;

use xtcp::app::echo::Echo;
use xtcp::app::http::{Http, HttpConfig};
use xtcp::app::load::{Load, LoadConfig, LoadLimit, LoadMode, Report};
use xtcp::app::{dispatch, App};
use xtcp::engine::sim::SimWorld;
use xtcp::engine::Stack;
use xtcp::nic::fault::{FaultConfig, FaultInjector};
use xtcp::nic::sim::{LinkConfig, SimLink, SimPort};
use xtcp::nic::{FrameDevice, Transmit};
use xtcp::time::Instant;

const ECHO_PORT: u16 = 7;
const HTTP_PORT: u16 = 8080;
/// The simulated link's one-way latency: a request's round trip takes at least twice this.
const LATENCY: Duration = Duration::from_micros(50);

/// What the test changes in the client's device while the world runs.
#[derive(Default)]
struct Control {
    /// When the load generator next wants a turn (`Load::poll_at`): the world's clock must stop there.
    wake_at: Cell<Option<Instant>>,
    /// Drop every frame both ways.
    partitioned: Cell<bool>,
}

/// The client's device: a fault injector whose partition the test flips, and whose `poll_at` also wakes the
/// world for the load generator's schedule (the simulator otherwise only stops at frames and stack timers).
struct ClientDevice {
    inner: FaultInjector<SimPort>,
    ctl: Rc<Control>,
}

impl ClientDevice {
    fn sync(&mut self) {
        self.inner.set_partitioned(self.ctl.partitioned.get());
    }
}

impl Transmit for ClientDevice {
    fn transmit(&mut self, now: Instant, len: usize, fill: &mut dyn FnMut(&mut [u8])) -> bool {
        self.sync();
        self.inner.transmit(now, len, fill)
    }
}

impl FrameDevice for ClientDevice {
    fn receive(&mut self, now: Instant, budget: usize, handler: &mut dyn FnMut(&[u8], &mut dyn Transmit)) -> usize {
        self.sync();
        self.inner.receive(now, budget, handler)
    }

    fn flush(&mut self, now: Instant) {
        self.inner.flush(now)
    }

    fn max_frame_len(&self) -> usize {
        self.inner.max_frame_len()
    }

    fn poll_at(&self) -> Option<Instant> {
        [self.inner.poll_at(), self.ctl.wake_at.get()].into_iter().flatten().min()
    }
}

/// A client (0) and server (1) world; the server listens on nothing yet.
fn world(seed: u64) -> (SimWorld, Rc<Control>) {
    world_over(LinkConfig { latency: LATENCY, ..LinkConfig::default() }, seed)
}

/// [`world`] over a link of the given settings.
fn world_over(link: LinkConfig, seed: u64) -> (SimWorld, Rc<Control>) {
    let (pa, pb) = SimLink::pair(link);
    let ctl = Rc::new(Control::default());
    let client = ClientDevice { inner: FaultInjector::new(pa, FaultConfig::default(), seed), ctl: ctl.clone() };
    let server = FaultInjector::new(pb, FaultConfig::default(), seed ^ 1);
    let [ca, cb] = common::configs(seed);
    let mut a = Stack::new(ca, Instant::ZERO);
    let mut b = Stack::new(cb, Instant::ZERO);
    a.add_neighbor(common::SERVER_IP, common::SERVER_MAC);
    b.add_neighbor(common::CLIENT_IP, common::CLIENT_MAC);
    (SimWorld::new([a, b], [Box::new(client), Box::new(server)], Instant::ZERO), ctl)
}

/// Runs `load` against `server` until it is done (virtual time, at most `limit`), calling `at` at every instant.
/// Returns whether the load finished.
fn drive(
    world: &mut SimWorld,
    ctl: &Control,
    load: &mut Load,
    server: &mut dyn App<Stack>,
    limit: Instant,
    mut at: impl FnMut(Instant, &Control),
) -> bool {
    let now = world.now();
    server.start(&mut world.stacks[1], now);
    App::<Stack>::start(load, &mut world.stacks[0], now);
    world.run(limit, |stacks, now| {
        at(now, ctl);
        dispatch(&mut stacks[1], now, server);
        dispatch(&mut stacks[0], now, load);
        ctl.wake_at.set(load.poll_at());
        App::<Stack>::done(load)
    })
}

fn echo_config(connections: u32, depth: u32, requests: u64, message_bytes: u64) -> LoadConfig {
    LoadConfig {
        mode: LoadMode::Echo { message_bytes },
        connections,
        pipeline_depth: depth,
        limit: LoadLimit::Requests { requests },
        ..LoadConfig::new(SocketAddrV4::new(common::SERVER_IP, ECHO_PORT))
    }
}

/// Runs `cfg` against an echo server; returns the report, the load (for its histogram) and the world.
fn run_echo(cfg: LoadConfig, seed: u64) -> (Report, Load, SimWorld) {
    let (mut w, ctl) = world(seed);
    let mut load = Load::new(cfg).unwrap();
    let mut echo = Echo::new(ECHO_PORT);
    let finished = drive(&mut w, &ctl, &mut load, &mut echo, Instant::from_secs(600), |_, _| {});
    assert!(finished, "the load did not finish: {:?}", load.report());
    (load.report(), load, w)
}

#[test]
fn echo_closed_loop_completes_every_request_and_closes_in_order() {
    let (r, load, mut w) = run_echo(echo_config(4, 1, 500, 100), 1);
    assert_eq!(r.completed, 500, "{}", r.to_text());
    assert_eq!(r.errors.total(), 0, "{}", r.to_text());
    assert_eq!(r.failed, 0);
    assert_eq!(r.connections_opened, 4);
    assert_eq!(load.histogram().len(), 500);
    assert_eq!(r.latency.count, 500);
    assert_eq!(r.bytes_sent, 500 * 100);
    assert_eq!(r.bytes_received, 500 * 100);
    // Nothing comes back faster than the link's round trip.
    let rtt_us = 2 * LATENCY.as_micros() as u64;
    assert!(r.latency.min_us >= rtt_us, "min {} µs below the {rtt_us} µs round trip", r.latency.min_us);
    assert!(r.latency.p50_us <= r.latency.p99_us && r.latency.p99_us <= r.latency.max_us);
    assert!(r.elapsed_us > 0 && r.requests_per_sec > 0.0);
    // Every connection closed in order: both stacks empty out with no RST.
    let finished = w.run(Instant::from_secs(600), |stacks, _| stacks.iter().all(|s| s.slots_in_use() == 0));
    assert!(finished);
    for s in &w.stacks {
        assert_eq!(s.counters().rst_sent, 0);
        assert_eq!(s.counters().conns_aborted, 0);
        assert_eq!(s.counters().conns_reset, 0);
    }
}

#[test]
fn large_echo_messages_come_back_checked() {
    // Messages larger than the send buffer: each goes out in pieces as ACKs free room.
    let (r, _, _) = run_echo(echo_config(2, 2, 20, 300_000), 2);
    assert_eq!(r.completed, 20, "{}", r.to_text());
    assert_eq!(r.errors.total(), 0);
    assert_eq!(r.bytes_received, 20 * 300_000);
}

#[test]
fn pipeline_depth_raises_throughput() {
    let (shallow, _, _) = run_echo(echo_config(1, 1, 2000, 64), 3);
    let (deep, _, _) = run_echo(echo_config(1, 16, 2000, 64), 3);
    assert_eq!(shallow.completed, 2000);
    assert_eq!(deep.completed, 2000);
    assert!(
        deep.requests_per_sec > 4.0 * shallow.requests_per_sec,
        "depth 16: {:.0}/s, depth 1: {:.0}/s",
        deep.requests_per_sec,
        shallow.requests_per_sec
    );
}

fn http_run(mode: LoadMode, connections: u32, depth: u32, requests: u64, body_bytes: usize) -> (Report, Http) {
    let (mut w, ctl) = world(4);
    let cfg = LoadConfig {
        mode,
        connections,
        pipeline_depth: depth,
        limit: LoadLimit::Requests { requests },
        ..LoadConfig::new(SocketAddrV4::new(common::SERVER_IP, HTTP_PORT))
    };
    let mut load = Load::new(cfg).unwrap();
    let mut http = Http::new(HttpConfig::new(HTTP_PORT, vec![b'x'; body_bytes]));
    let finished = drive(&mut w, &ctl, &mut load, &mut http, Instant::from_secs(600), |_, _| {});
    assert!(finished, "the load did not finish: {}", load.report().to_text());
    (load.report(), http)
}

/// The length of the server's answer to a GET.
fn response_bytes(body_bytes: usize, connection: &str) -> u64 {
    let head = format!(
        "HTTP/1.1 200 OK\r\nServer: xtcp\r\nContent-Type: text/plain\r\nContent-Length: {body_bytes}\r\n\
         Connection: {connection}\r\n\r\n"
    );
    (head.len() + body_bytes) as u64
}

#[test]
fn http_keep_alive_with_pipelining_gets_every_response_whole() {
    let (r, http) = http_run(LoadConfig::http_get("/", "server", true), 4, 3, 300, 1000);
    assert_eq!(r.completed, 300, "{}", r.to_text());
    assert_eq!(r.errors.total(), 0, "{}", r.to_text());
    assert_eq!(http.stats.ok, 300);
    assert_eq!(http.stats.errors, 0);
    assert_eq!(r.connections_opened, 4);
    assert_eq!(r.bytes_received, 300 * response_bytes(1000, "keep-alive"));
}

#[test]
fn http_without_keep_alive_opens_a_connection_per_request() {
    let (r, http) = http_run(LoadConfig::http_get("/index.html", "server", false), 4, 1, 100, 200);
    assert_eq!(r.completed, 100, "{}", r.to_text());
    assert_eq!(r.errors.total(), 0, "{}", r.to_text());
    assert_eq!(http.stats.ok, 100);
    assert_eq!(r.connections_opened, 100);
    assert_eq!(r.bytes_received, 100 * response_bytes(200, "close"));
}

#[test]
fn http_error_statuses_are_bad_responses() {
    let mode = LoadMode::Http {
        method: "DELETE".into(),
        path: "/".into(),
        host: "server".into(),
        headers: vec![("X-Test".into(), "1".into())],
        keep_alive: true,
    };
    let (r, http) = http_run(mode, 2, 1, 50, 10);
    assert_eq!(http.stats.errors, 50);
    assert_eq!(r.completed, 0);
    assert_eq!(r.failed, 50);
    assert_eq!(r.errors.bad_response, 50);
    assert_eq!(r.latency.count, 0);
}

#[test]
fn a_refused_port_counts_refused_and_reconnects_are_bounded() {
    let (mut w, ctl) = world(5);
    let cfg = LoadConfig { connections: 2, reconnects_max: 3, ..echo_config(2, 1, 100, 64) };
    let mut load = Load::new(cfg).unwrap();
    // The echo server listens on another port.
    let mut echo = Echo::new(ECHO_PORT + 1);
    let finished = drive(&mut w, &ctl, &mut load, &mut echo, Instant::from_secs(60), |_, _| {});
    assert!(finished, "the load did not give up: {}", load.report().to_text());
    let r = load.report();
    // Two connections, then three replacements, all refused.
    assert_eq!(r.errors.refused, 5, "{}", r.to_text());
    assert_eq!(r.errors.total(), 5);
    assert_eq!(r.connections_opened, 5);
    assert_eq!(r.completed, 0);
}

fn open_loop(rate_per_sec: u64, duration_ms: u64, warmup_ms: u64) -> LoadConfig {
    LoadConfig {
        rate_per_sec: Some(rate_per_sec),
        limit: LoadLimit::Duration { duration_ms },
        warmup_ms,
        ..echo_config(4, 1, 1, 64)
    }
}

#[test]
fn open_loop_completes_rate_times_duration_requests() {
    let (r, _, _) = run_echo(open_loop(2000, 1000, 200), 6);
    assert_eq!(r.errors.total(), 0, "{}", r.to_text());
    // Requests are scheduled every 500 µs: 2000 in the measured second, 400 in the warm-up.
    assert!((1990..=2010).contains(&r.completed), "{}", r.to_text());
    assert!((390..=410).contains(&r.warmup_completed), "{}", r.to_text());
    assert!((0.99..=1.02).contains(&(r.elapsed_us as f64 / 1e6)), "{}", r.to_text());
    assert!((1950.0..=2050.0).contains(&r.requests_per_sec), "{}", r.to_text());
    // An idle server answers in a round trip or so.
    assert!(r.latency.p99_us < 1000, "{}", r.to_text());
}

/// Runs `cfg` against an echo server with the link cut from 500 to 600 ms.
fn run_with_stall(cfg: LoadConfig) -> Report {
    run_with_stall_at(cfg, Instant::from_millis(500)..Instant::from_millis(600))
}

fn run_with_stall_at(cfg: LoadConfig, stall: core::ops::Range<Instant>) -> Report {
    let (mut w, ctl) = world(7);
    let mut load = Load::new(cfg).unwrap();
    let mut echo = Echo::new(ECHO_PORT);
    let finished = drive(&mut w, &ctl, &mut load, &mut echo, Instant::from_secs(600), |now, ctl| {
        ctl.partitioned.set(stall.contains(&now));
    });
    assert!(finished, "the load did not finish: {}", load.report().to_text());
    load.report()
}

#[test]
fn a_stall_shows_in_the_open_loop_percentiles() {
    let open = run_with_stall(open_loop(1000, 2000, 0));
    assert_eq!(open.errors.total(), 0, "{}", open.to_text());
    assert!((1990..=2010).contains(&open.completed), "{}", open.to_text());
    // The requests scheduled during the 100 ms cut (and the retransmission timeout after it, ≥ 200 ms) wait,
    // and their wait counts from when they should have gone: well over 1% of the requests see most of it.
    assert!(open.latency.max_us >= 100_000, "{}", open.to_text());
    assert!(open.latency.p99_us >= 50_000, "{}", open.to_text());

    // The same stall in closed loop: only the few requests in flight see it, and the percentiles hide it. This is
    // the coordinated omission the open loop corrects.
    let closed =
        run_with_stall(LoadConfig { limit: LoadLimit::Duration { duration_ms: 2000 }, ..echo_config(2, 1, 1, 64) });
    assert!(closed.latency.max_us >= 100_000, "{}", closed.to_text());
    assert!(closed.latency.p99_us < 1000, "{}", closed.to_text());
}

/// A cut across the end of the window: the requests scheduled in its last 50 ms find every connection waiting and
/// queue. They are still owed — sent when answers free a connection, their latency counted from their scheduled
/// time — not dropped because the clock passed the end while they waited (which made the count depend on the
/// machine's speed, and hid the very latencies the open loop is there to show).
#[test]
fn requests_due_when_the_window_closes_are_still_sent_and_timed_from_their_schedule() {
    let open = run_with_stall_at(open_loop(1000, 2000, 0), Instant::from_millis(1950)..Instant::from_millis(2100));
    assert_eq!(open.errors.total(), 0, "{}", open.to_text());
    assert!((1990..=2010).contains(&open.completed), "{}", open.to_text());
    assert!(open.latency.max_us >= 100_000, "{}", open.to_text());
}

#[test]
fn merged_reports_sum_counts_and_merge_histograms() {
    let (a, load_a, _) = run_echo(echo_config(2, 1, 300, 64), 8);
    let (b, load_b, _) = run_echo(echo_config(2, 8, 500, 4000), 9);
    let mut merged = a.clone();
    merged.merge(&b);
    assert_eq!(merged.completed, 800);
    assert_eq!(merged.connections_opened, a.connections_opened + b.connections_opened);
    assert_eq!(merged.bytes_received, a.bytes_received + b.bytes_received);
    assert_eq!(merged.elapsed_us, a.elapsed_us.max(b.elapsed_us));
    // The merged percentiles are those of both histograms added, not averages of the two reports'.
    let mut both = load_a.histogram().clone();
    both.add(load_b.histogram()).unwrap();
    assert_eq!(merged.latency.count, 800);
    assert_eq!(merged.latency.p50_us, both.value_at_quantile(0.5));
    assert_eq!(merged.latency.p99_us, both.value_at_quantile(0.99));
    assert_eq!(merged.latency.max_us, both.max());
    assert_eq!(merged.latency.min_us, a.latency.min_us.min(b.latency.min_us));
    // Through JSON and back, nothing is lost (the mean to within float printing: JSON's shortest decimal need not
    // parse back to the same last bit).
    let mut back: Report = serde_json::from_str(&merged.to_json()).unwrap();
    assert!((back.latency.mean_us - merged.latency.mean_us).abs() < 1e-9);
    back.latency.mean_us = merged.latency.mean_us;
    assert_eq!(back, merged);
    assert!(merged.to_text().contains("800 requests"));
}

/// An echo server that gets one byte wrong in every read it sends back.
struct CorruptEcho {
    buf: Vec<u8>,
}

impl App for CorruptEcho {
    fn start(&mut self, stack: &mut Stack, _now: Instant) {
        stack.listen(ECHO_PORT).unwrap();
    }

    fn on_event(&mut self, stack: &mut Stack, _now: Instant, event: xtcp::engine::StackEvent) {
        use xtcp::engine::StackEvent;
        match event {
            StackEvent::Readable(c) | StackEvent::PeerClosed(c) => {
                let n = stack.recv(c, &mut self.buf).unwrap_or(0);
                if n > 0 {
                    self.buf[n - 1] ^= 0x80;
                    let _ = stack.send(c, &self.buf[..n]);
                }
                if matches!(event, StackEvent::PeerClosed(_)) {
                    let _ = stack.close(c);
                }
            }
            _ => {}
        }
    }
}

fn send_config(connections: u32, requests: u64, message_bytes: u64) -> LoadConfig {
    LoadConfig {
        mode: LoadMode::Send { message_bytes },
        connections,
        limit: LoadLimit::Requests { requests },
        ..LoadConfig::new(SocketAddrV4::new(common::SERVER_IP, ECHO_PORT))
    }
}

#[test]
fn one_way_sends_complete_when_the_discard_server_has_read_everything() {
    // Three transfers of 1 MiB (many times the send buffer), one connection each, two at a time.
    let (mut w, ctl) = world(11);
    let mut load = Load::new(send_config(2, 3, 1 << 20)).unwrap();
    let mut server = Echo::discard(ECHO_PORT);
    let finished = drive(&mut w, &ctl, &mut load, &mut server, Instant::from_secs(600), |_, _| {});
    assert!(finished, "{}", load.report().to_text());
    let r = load.report();
    assert_eq!((r.completed, r.failed, r.errors.total()), (3, 0, 0), "{}", r.to_text());
    // One connection per transfer (a spare one may open while the last transfer is being issued; it closes unused).
    assert!((3..=4).contains(&r.connections_opened), "{}", r.to_text());
    assert_eq!(r.bytes_sent, 3 << 20);
    assert_eq!(r.bytes_received, 0);
    // Completion waited for the server to read it all: every byte sent was discarded by then.
    assert_eq!(server.discarded, 3 << 20);
    assert_eq!(server.accepted, r.connections_opened);
    // A transfer takes at least the bytes' time on the simulated link's window of round trips, never zero.
    assert!(r.latency.min_us >= 2 * LATENCY.as_micros() as u64, "{}", r.to_text());
    // Both ends closed in order.
    let finished = w.run(Instant::from_secs(600), |stacks, _| stacks.iter().all(|s| s.slots_in_use() == 0));
    assert!(finished);
    for s in &w.stacks {
        assert_eq!(s.counters().rst_sent, 0);
    }
}

/// A 4 MiB one-way send over a 20 Mbit/s link (1.7 s) with a 500 ms timeout and no reconnects, to a discard
/// server: the world, its control, the load and the server.
fn slow_send(seed: u64) -> (SimWorld, Rc<Control>, Load, Echo) {
    let link = LinkConfig { latency: LATENCY, rate_bits_per_sec: Some(20_000_000), ..LinkConfig::default() };
    let (w, ctl) = world_over(link, seed);
    let cfg = LoadConfig { request_timeout_ms: 500, reconnects_max: 0, ..send_config(1, 1, 4 << 20) };
    (w, ctl, Load::new(cfg).unwrap(), Echo::discard(ECHO_PORT))
}

#[test]
fn a_one_way_send_longer_than_the_timeout_completes_while_it_makes_progress() {
    // 4 MiB over 20 Mbit/s takes 1.7 s, more than three times the 500 ms timeout; the 256 KiB send buffer drains
    // in about 0.1 s, so the wait for the server's FIN after ours is well within it.
    let (mut w, ctl, mut load, mut server) = slow_send(13);
    let finished = drive(&mut w, &ctl, &mut load, &mut server, Instant::from_secs(60), |_, _| {});
    assert!(finished, "{}", load.report().to_text());
    let r = load.report();
    assert_eq!((r.completed, r.failed, r.errors.total()), (1, 0, 0), "{}", r.to_text());
    assert_eq!(server.discarded, 4 << 20);
    assert!(r.latency.min_us > 1_500_000, "{}", r.to_text());
}

#[test]
fn a_one_way_send_that_stops_moving_times_out_from_its_last_progress() {
    // The link goes down for good at 1 s, halfway through a 4 MiB transfer that has moved all along.
    let (mut w, ctl, mut load, mut server) = slow_send(14);
    let finished = drive(&mut w, &ctl, &mut load, &mut server, Instant::from_secs(60), |now, ctl| {
        ctl.partitioned.set(now >= Instant::from_secs(1));
    });
    assert!(finished, "{}", load.report().to_text());
    let r = load.report();
    assert_eq!((r.completed, r.failed, r.errors.timeout), (0, 1, 1), "{}", r.to_text());
    // The last bytes went into the send buffer shortly before the cut: timed out half a second after that (plus
    // one scan step, a sixteenth of the timeout), not half a second after the transfer began.
    assert!(w.now() > Instant::from_millis(1400) && w.now() < Instant::from_millis(1600), "at {}", w.now());
}

#[test]
fn a_server_that_answers_a_one_way_send_is_a_bad_response() {
    // An echo server sends the bytes back: a discard server never says anything.
    let (mut w, ctl) = world(12);
    let mut load = Load::new(LoadConfig { reconnects_max: 2, ..send_config(1, 5, 4096) }).unwrap();
    let mut server = Echo::new(ECHO_PORT);
    let finished = drive(&mut w, &ctl, &mut load, &mut server, Instant::from_secs(60), |_, _| {});
    assert!(finished, "{}", load.report().to_text());
    let r = load.report();
    assert_eq!(r.errors.bad_response, 3, "{}", r.to_text());
    assert_eq!(r.completed, 0);
}

#[test]
fn wrong_echo_bytes_are_bad_responses_and_the_connection_is_replaced() {
    let (mut w, ctl) = world(10);
    let cfg = LoadConfig { reconnects_max: 4, ..echo_config(1, 1, 100, 32) };
    let mut load = Load::new(cfg).unwrap();
    let mut server = CorruptEcho { buf: vec![0; 4096] };
    let finished = drive(&mut w, &ctl, &mut load, &mut server, Instant::from_secs(60), |_, _| {});
    assert!(finished, "{}", load.report().to_text());
    let r = load.report();
    // Each connection's first answer is wrong: the connection is dropped and replaced until the reconnects end.
    assert_eq!(r.errors.bad_response, 5, "{}", r.to_text());
    assert_eq!(r.connections_opened, 5);
    assert_eq!(r.completed, 0);
    assert_eq!(r.failed, 5);
}

#[test]
fn unanswered_requests_time_out_and_replacements_are_bounded() {
    let (mut w, ctl) = world(11);
    let cfg = LoadConfig { request_timeout_ms: 100, reconnects_max: 2, ..echo_config(1, 1, 100, 64) };
    let mut load = Load::new(cfg).unwrap();
    let mut echo = Echo::new(ECHO_PORT);
    // The link goes down for good at 10 ms: the request in flight then and the connects after it time out.
    let finished = drive(&mut w, &ctl, &mut load, &mut echo, Instant::from_secs(60), |now, ctl| {
        ctl.partitioned.set(now >= Instant::from_millis(10));
    });
    assert!(finished, "{}", load.report().to_text());
    let r = load.report();
    assert_eq!(r.errors.timeout, 3, "{}", r.to_text());
    assert_eq!(r.errors.total(), 3, "{}", r.to_text());
    assert_eq!(r.connections_opened, 3);
    assert_eq!(r.failed, 1);
    assert!(r.completed > 10 && r.completed < 100, "{}", r.to_text());
    assert_eq!(load.histogram().len(), r.completed);
    // Timed out within the timeout plus one scan step (a sixteenth of it) of the stall.
    assert!(w.now() < Instant::from_millis(10 + 3 * 107 + 10), "finished at {}", w.now());
}

/// The load and an echo server as one application on one stack, events routed by owner.
struct LoadAndEcho(Load, Echo);

impl App for LoadAndEcho {
    fn start(&mut self, stack: &mut Stack, now: Instant) {
        self.1.start(stack, now);
        self.0.start(stack, now);
    }

    fn on_event(&mut self, stack: &mut Stack, now: Instant, event: xtcp::engine::StackEvent) {
        use xtcp::engine::StackEvent;
        let load = match event {
            StackEvent::Connected(c)
            | StackEvent::Readable(c)
            | StackEvent::Writable(c)
            | StackEvent::PeerClosed(c)
            | StackEvent::Closed(c, _) => self.0.owns(c),
            StackEvent::Accepted { .. } => false,
        };
        if load {
            self.0.on_event(stack, now, event)
        } else {
            self.1.on_event(stack, now, event)
        }
    }

    fn on_tick(&mut self, stack: &mut Stack, now: Instant) {
        self.0.on_tick(stack, now);
    }

    fn done(&self) -> bool {
        App::<Stack>::done(&self.0)
    }
}

#[test]
fn open_loop_paces_itself_in_the_real_clock_loop() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use xtcp::engine::run::{run, RunOptions};
    use xtcp::engine::StackConfig;
    use xtcp::nic::loopback::Loopback;

    let mut cfg = StackConfig::new(common::SERVER_MAC, common::SERVER_IP, 12);
    // The load closes first; TIME_WAIT is the stack's business and does not hold the run up, but keep it short.
    cfg.tcp.msl = Duration::from_millis(100);
    let mut stack = Stack::new(cfg, Instant::ZERO);
    stack.add_neighbor(common::SERVER_IP, common::SERVER_MAC);
    let mut dev = Loopback::new(4096, 1514);
    let load = Load::new(LoadConfig { warmup_ms: 50, ..open_loop(2000, 300, 0) }).unwrap();
    let mut app = LoadAndEcho(load, Echo::new(ECHO_PORT));
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        // A watchdog: the run must end on its own well before this.
        let watchdog = s.spawn(|| {
            let deadline = std::time::Instant::now() + Duration::from_secs(60);
            while std::time::Instant::now() < deadline && !stop.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(10));
            }
            stop.store(true, Ordering::Relaxed);
        });
        run(&mut stack, &mut dev, &mut app, &stop, RunOptions::default());
        stop.store(true, Ordering::Relaxed);
        watchdog.join().unwrap();
    });
    let r = app.0.report();
    assert!(App::<Stack>::done(&app.0), "the run was stopped: {}", r.to_text());
    assert_eq!(r.errors.total(), 0, "{}", r.to_text());
    // However fast the machine, the schedule decides the count: a request every 500 µs for 300 ms, after 50 ms
    // of warm-up.
    assert!((599..=601).contains(&r.completed), "{}", r.to_text());
    assert!((99..=101).contains(&r.warmup_completed), "{}", r.to_text());
    assert!(r.elapsed_us >= 300_000, "{}", r.to_text());
    assert_eq!(r.latency.count, r.completed);
}

#[test]
fn held_connections_open_first_stay_idle_while_the_load_runs_and_are_reset_at_the_end() {
    // More held connections than may handshake at once (512), so the pacing is exercised.
    const HOLD: u32 = 2000;
    let (mut w, ctl) = world(11);
    let mut load = Load::new(LoadConfig { hold: HOLD, ..echo_config(4, 1, 500, 100) }).unwrap();
    let mut echo = Echo::new(ECHO_PORT);
    let now = w.now();
    echo.start(&mut w.stacks[1], now);
    App::<Stack>::start(&mut load, &mut w.stacks[0], now);
    // The server's table while answers come: every held connection is there the whole time.
    let mut fewest_while_measuring = usize::MAX;
    let finished = w.run(Instant::from_secs(600), |stacks, now| {
        dispatch(&mut stacks[1], now, &mut echo);
        dispatch(&mut stacks[0], now, &mut load);
        ctl.wake_at.set(load.poll_at());
        let r = load.report();
        if r.completed > 0 && r.completed < 500 {
            fewest_while_measuring = fewest_while_measuring.min(stacks[1].connection_count());
        }
        App::<Stack>::done(&load)
    });
    let r = load.report();
    assert!(finished, "the load did not finish: {}", r.to_text());
    assert_eq!((r.held, r.held_lost), (u64::from(HOLD), 0), "{}", r.to_text());
    assert!(r.hold_open_us > 0);
    assert_eq!(r.completed, 500, "{}", r.to_text());
    assert_eq!(r.errors.total(), 0, "{}", r.to_text());
    assert_eq!(r.connections_opened, u64::from(HOLD) + 4);
    assert_eq!(fewest_while_measuring, HOLD as usize + 4, "held connections were not all open while measuring");
    // Held connections carried nothing: only the requests' bytes went out.
    assert_eq!((r.bytes_sent, r.bytes_received), (500 * 100, 500 * 100));
    // Paced handshakes never overflowed the server's SYN backlog (1024): no SYN cookies were needed.
    assert_eq!(w.stacks[1].counters().syn_cookies_sent, 0);
    // At the end the held connections were reset and both tables empty out.
    let emptied = w.run(Instant::from_secs(1200), |stacks, _| stacks.iter().all(|s| s.slots_in_use() == 0));
    assert!(emptied, "connections left: {} and {}", w.stacks[0].slots_in_use(), w.stacks[1].slots_in_use());
    assert!(w.stacks[1].counters().conns_reset >= u64::from(HOLD), "{:?}", w.stacks[1].counters());
}
