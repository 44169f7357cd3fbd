//! The kernel-socket stack (`xtcp::engine::kernel`) over loopback: the same `Echo` and `Http` applications that
//! run on xtcp, client applications against `std::net` peers, and the `Sockets` contract (refusal, reset, stale
//! handles, the bounded send buffer, the connection limit). No root needed.

use std::io::{ErrorKind, Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddrV4, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant as StdInstant};

use xtcp::app::echo::Echo;
use xtcp::app::http::{Http, HttpConfig};
use xtcp::app::{App, Sockets};
use xtcp::engine::kernel::{run_kernel, KernelConfig, KernelCounters, KernelStack};
use xtcp::engine::run::{RunOptions, RunStats};
use xtcp::engine::{ConnId, StackError, StackEvent};
use xtcp::tcp::CloseReason;
use xtcp::time::Instant;

/// The longest any test waits for its peer.
const TIMEOUT: Duration = Duration::from_secs(30);

/// A port nothing listens on now (bound with std and dropped).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn loopback_stack() -> KernelStack {
    KernelStack::new(KernelConfig::new(Ipv4Addr::LOCALHOST)).unwrap()
}

/// Bytes that differ from one position and one stream to the next, so a misplaced byte shows.
fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len).map(|i| (i as u64).wrapping_mul(2_654_435_761).wrapping_add(u64::from(seed)).to_le_bytes()[1]).collect()
}

/// A stack and its application in a thread, until `stop` or the application is done.
struct Runner<A> {
    stop: Arc<AtomicBool>,
    handle: JoinHandle<(KernelStack, A, RunStats)>,
}

impl<A: App<KernelStack> + Send + 'static> Runner<A> {
    fn spawn(mut stack: KernelStack, mut app: A) -> Runner<A> {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let handle = thread::spawn(move || {
            let stats = run_kernel(&mut stack, &mut app, &flag, RunOptions::default());
            (stack, app, stats)
        });
        Runner { stop, handle }
    }

    /// Stops the loop now and takes back the stack and the application.
    fn stop(self) -> (KernelStack, A, RunStats) {
        self.stop.store(true, Ordering::Relaxed);
        self.handle.join().expect("the loop thread panicked")
    }

    /// Waits for the application to finish (at most `TIMEOUT`), then stops the loop.
    fn wait(self) -> (KernelStack, A, RunStats) {
        let deadline = StdInstant::now() + TIMEOUT;
        while !self.handle.is_finished() && StdInstant::now() < deadline {
            thread::sleep(Duration::from_millis(5));
        }
        self.stop()
    }
}

/// Connects to `port`, writes `data` from a second thread while reading the echo, and returns what came back
/// before the server closed.
fn echo_through(port: u16, data: Vec<u8>) -> Vec<u8> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream.set_read_timeout(Some(TIMEOUT)).unwrap();
    let mut writer = stream.try_clone().unwrap();
    let expected = data.len();
    let sender = thread::spawn(move || {
        writer.write_all(&data).unwrap();
        writer.shutdown(Shutdown::Write).unwrap();
    });
    let mut got = Vec::with_capacity(expected);
    stream.read_to_end(&mut got).unwrap();
    sender.join().unwrap();
    got
}

#[test]
fn echo_serves_concurrent_clients_byte_exact() {
    let port = free_port();
    let mut stack = loopback_stack();
    // Listening before the loop starts lets the clients connect at once (Echo's own listen then finds it taken).
    stack.listen(port).unwrap();
    let runner = Runner::spawn(stack, Echo::new(port));
    let sizes = [1usize, 1000, 65_537, 300_001, 1 << 20, 4 << 20];
    let clients: Vec<_> = sizes
        .iter()
        .enumerate()
        .map(|(i, &len)| {
            thread::spawn(move || {
                let data = pattern(len, i as u8);
                let got = echo_through(port, data.clone());
                assert_eq!(got.len(), len, "client {i}: echoed length");
                assert!(got == data, "client {i}: echoed bytes differ");
            })
        })
        .collect();
    for c in clients {
        c.join().unwrap();
    }
    let (stack, echo, stats) = runner.stop();
    assert_eq!(echo.accepted, sizes.len() as u64);
    let c = *stack.counters();
    assert_eq!(c.accepted, sizes.len() as u64);
    // Each client saw the server's FIN only after the server had read its own: every connection closed in order.
    assert_eq!(c.closed_normal, sizes.len() as u64);
    assert_eq!(stack.connections(), 0);
    assert_eq!((c.resets, c.aborts, c.events_dropped), (0, 0, 0));
    assert!(stats.busy_turns > 0);
}

/// Reads one HTTP response (head and `Content-Length` body) from `stream`, keeping what follows in `rest`.
fn read_response(stream: &mut TcpStream, rest: &mut Vec<u8>) -> (String, Vec<u8>) {
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = rest.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = stream.read(&mut chunk).unwrap();
        assert!(n > 0, "connection closed inside a response head");
        rest.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8(rest[..head_end].to_vec()).unwrap();
    let len: usize =
        head.lines().find_map(|l| l.strip_prefix("Content-Length: ")).expect("Content-Length").trim().parse().unwrap();
    while rest.len() < head_end + len {
        let n = stream.read(&mut chunk).unwrap();
        assert!(n > 0, "connection closed inside a response body");
        rest.extend_from_slice(&chunk[..n]);
    }
    let body = rest[head_end..head_end + len].to_vec();
    rest.drain(..head_end + len);
    (head, body)
}

#[test]
fn http_answers_keep_alive_pair_and_connection_close() {
    let port = free_port();
    let body = b"hello from the kernel stack".to_vec();
    let mut stack = loopback_stack();
    stack.listen(port).unwrap();
    let runner = Runner::spawn(stack, Http::new(HttpConfig::new(port, body.clone())));

    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(TIMEOUT)).unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: t\r\n\r\nGET /two HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
    let mut rest = Vec::new();
    for _ in 0..2 {
        let (head, got) = read_response(&mut s, &mut rest);
        assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
        assert!(head.contains("Connection: keep-alive\r\n"), "{head}");
        assert_eq!(got, body);
    }
    s.write_all(b"GET /last HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").unwrap();
    let (head, got) = read_response(&mut s, &mut rest);
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
    assert!(head.contains("Connection: close\r\n"), "{head}");
    assert_eq!(got, body);
    // Then the server's FIN, and nothing after the answer.
    s.read_to_end(&mut rest).unwrap();
    assert!(rest.is_empty(), "bytes after the last response: {rest:?}");
    drop(s);

    let (stack, http, _) = runner.stop();
    assert_eq!(http.stats.ok, 3);
    assert_eq!(http.stats.errors, 0);
    assert_eq!(stack.counters().accepted, 1);
}

/// A client application: connects, sends `data` (checking the send contract on every call), reads the echo back,
/// closes once all of it is back, and records the connection's events.
struct EchoClient {
    target: SocketAddrV4,
    data: Vec<u8>,
    id: Option<ConnId>,
    sent: usize,
    got: Vec<u8>,
    buf: Vec<u8>,
    closing: bool,
    /// Every event but `Readable` and `Writable`.
    log: Vec<StackEvent>,
    closed: Option<CloseReason>,
}

impl EchoClient {
    fn new(target: SocketAddrV4, data: Vec<u8>) -> EchoClient {
        EchoClient {
            target,
            data,
            id: None,
            sent: 0,
            got: Vec::new(),
            buf: vec![0; 16 * 1024],
            closing: false,
            log: Vec::new(),
            closed: None,
        }
    }

    fn pump(&mut self, stack: &mut KernelStack, id: ConnId) {
        if self.sent < self.data.len() {
            let offered = &self.data[self.sent..];
            let room = stack.send_capacity(id);
            let n = stack.send(id, offered).unwrap();
            assert_eq!(n, offered.len().min(room), "send takes what send_capacity said");
            self.sent += n;
        }
        loop {
            let n = stack.recv(id, &mut self.buf).unwrap();
            if n == 0 {
                break;
            }
            self.got.extend_from_slice(&self.buf[..n]);
        }
        if self.got.len() == self.data.len() && !self.closing {
            self.closing = true;
            stack.close(id).unwrap();
            assert_eq!(stack.close(id), Err(StackError::Closing));
            assert_eq!(stack.send(id, b"late"), Err(StackError::Closing));
        }
    }
}

impl App<KernelStack> for EchoClient {
    fn start(&mut self, stack: &mut KernelStack, _now: Instant) {
        self.id = Some(stack.connect(self.target).unwrap());
    }

    fn on_event(&mut self, stack: &mut KernelStack, _now: Instant, event: StackEvent) {
        match event {
            StackEvent::Readable(c) | StackEvent::Writable(c) => self.pump(stack, c),
            StackEvent::Connected(c) => {
                self.log.push(event);
                stack.set_nodelay(c, true).unwrap();
                self.pump(stack, c);
            }
            StackEvent::PeerClosed(c) => {
                self.log.push(event);
                self.pump(stack, c);
            }
            StackEvent::Closed(_, reason) => {
                self.log.push(event);
                self.closed = Some(reason);
            }
            StackEvent::Accepted { .. } => self.log.push(event),
        }
    }

    fn done(&self) -> bool {
        self.closed.is_some()
    }
}

/// A std echo server for one connection: echoes until the client's FIN, then closes.
fn std_echo_server() -> (SocketAddrV4, JoinHandle<usize>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let handle = thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        s.set_read_timeout(Some(TIMEOUT)).unwrap();
        let mut buf = vec![0; 64 * 1024];
        let mut total = 0;
        loop {
            let n = s.read(&mut buf).unwrap();
            if n == 0 {
                return total;
            }
            s.write_all(&buf[..n]).unwrap();
            total += n;
        }
    });
    (SocketAddrV4::new(Ipv4Addr::LOCALHOST, port), handle)
}

#[test]
fn client_app_connects_echoes_and_closes_in_order() {
    let (target, server) = std_echo_server();
    let data = pattern(3 << 20, 7);
    let runner = Runner::spawn(loopback_stack(), EchoClient::new(target, data.clone()));
    let (stack, client, _) = runner.wait();
    assert_eq!(server.join().unwrap(), data.len());
    assert!(client.got == data, "echoed bytes differ ({} of {} back)", client.got.len(), data.len());
    let id = client.id.unwrap();
    assert_eq!(
        client.log,
        vec![StackEvent::Connected(id), StackEvent::PeerClosed(id), StackEvent::Closed(id, CloseReason::Normal)]
    );
    let c = stack.counters();
    assert_eq!((c.connected, c.closed_normal, c.resets), (1, 1, 0));
    assert_eq!(stack.connections(), 0);
}

/// Connects to a closed port `attempts` times, one after the other, checking the handles of the closed ones.
struct RefusedClient {
    target: SocketAddrV4,
    attempts: usize,
    ids: Vec<ConnId>,
    log: Vec<StackEvent>,
}

impl App<KernelStack> for RefusedClient {
    fn start(&mut self, stack: &mut KernelStack, _now: Instant) {
        let id = stack.connect(self.target).unwrap();
        self.ids.push(id);
    }

    fn on_event(&mut self, stack: &mut KernelStack, _now: Instant, event: StackEvent) {
        self.log.push(event);
        let StackEvent::Closed(old, _) = event else { return };
        // The handle is stale at once: every call fails and nothing is writable.
        assert_eq!(stack.send(old, b"x"), Err(StackError::NoConnection));
        assert_eq!(stack.recv(old, &mut [0; 8]), Err(StackError::NoConnection));
        assert_eq!(stack.close(old), Err(StackError::NoConnection));
        assert_eq!(stack.release(old), Err(StackError::NoConnection));
        assert_eq!(stack.abort(old), Err(StackError::NoConnection));
        assert_eq!(stack.set_nodelay(old, true), Err(StackError::NoConnection));
        assert_eq!(stack.send_capacity(old), 0);
        if self.ids.len() < self.attempts {
            let new = stack.connect(self.target).unwrap();
            // The slot is reused under a new generation: the old handle stays stale.
            assert_eq!(new.slot(), old.slot());
            assert_ne!(new, old);
            assert_eq!(stack.send_capacity(new), stack.config().send_buffer_bytes);
            assert_eq!(stack.send(old, b"x"), Err(StackError::NoConnection));
            self.ids.push(new);
        }
    }

    fn done(&self) -> bool {
        self.log.len() >= self.attempts
    }
}

#[test]
fn connect_to_closed_port_is_refused_and_handles_go_stale() {
    let target = SocketAddrV4::new(Ipv4Addr::LOCALHOST, free_port());
    let app = RefusedClient { target, attempts: 3, ids: Vec::new(), log: Vec::new() };
    let (stack, app, _) = Runner::spawn(loopback_stack(), app).wait();
    let expected: Vec<_> = app.ids.iter().map(|&id| StackEvent::Closed(id, CloseReason::Refused)).collect();
    assert_eq!(app.ids.len(), 3);
    assert_eq!(app.log, expected);
    let c = stack.counters();
    assert_eq!((c.refused, c.connected), (3, 0));
    assert_eq!(stack.connections(), 0);
}

/// Connects, and aborts once the server's greeting arrives.
#[derive(Default)]
struct Aborter {
    target: Option<SocketAddrV4>,
    id: Option<ConnId>,
    greeting: Vec<u8>,
    log: Vec<StackEvent>,
}

impl App<KernelStack> for Aborter {
    fn start(&mut self, stack: &mut KernelStack, _now: Instant) {
        self.id = Some(stack.connect(self.target.unwrap()).unwrap());
    }

    fn on_event(&mut self, stack: &mut KernelStack, _now: Instant, event: StackEvent) {
        match event {
            StackEvent::Readable(c) => {
                let mut buf = [0u8; 64];
                let n = stack.recv(c, &mut buf).unwrap();
                self.greeting.extend_from_slice(&buf[..n]);
                if n > 0 {
                    stack.abort(c).unwrap();
                    // Gone, but the handle holds until `Closed` is taken: a closed connection, not a stale one.
                    assert_eq!(stack.abort(c), Ok(()));
                    assert_eq!(stack.send(c, b"x"), Err(StackError::Closing));
                    assert_eq!(stack.recv(c, &mut buf), Ok(0));
                    assert_eq!(stack.send_capacity(c), 0);
                }
            }
            StackEvent::Writable(_) => {}
            StackEvent::Closed(c, _) => {
                assert_eq!(stack.abort(c), Err(StackError::NoConnection));
                self.log.push(event);
            }
            other => self.log.push(other),
        }
    }

    fn done(&self) -> bool {
        self.log.iter().any(|e| matches!(e, StackEvent::Closed(..)))
    }
}

#[test]
fn abort_resets_the_peer() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let target = SocketAddrV4::new(Ipv4Addr::LOCALHOST, listener.local_addr().unwrap().port());
    let peer = thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        s.set_read_timeout(Some(TIMEOUT)).unwrap();
        s.write_all(b"hello").unwrap();
        let mut buf = [0u8; 16];
        s.read(&mut buf).map_err(|e| e.kind())
    });
    let app = Aborter { target: Some(target), ..Aborter::default() };
    let (stack, app, _) = Runner::spawn(loopback_stack(), app).wait();
    assert_eq!(peer.join().unwrap(), Err(ErrorKind::ConnectionReset));
    let id = app.id.unwrap();
    assert_eq!(app.greeting, b"hello");
    assert_eq!(app.log, vec![StackEvent::Connected(id), StackEvent::Closed(id, CloseReason::Aborted)]);
    assert_eq!(stack.counters().aborts, 1);
    assert_eq!(stack.connections(), 0);
}

/// Reads a connection a few bytes at a time, mixing `recv_with` (taking at most 7 of what it is handed) and `recv`,
/// so that `recv_with` leaves bytes behind that later reads must return first.
#[derive(Default)]
struct Nibbler {
    target: Option<SocketAddrV4>,
    got: Vec<u8>,
    reads: u64,
    closed: Option<CloseReason>,
}

impl Nibbler {
    fn drain<S: Sockets + ?Sized>(&mut self, stack: &mut S, id: ConnId) {
        loop {
            self.reads += 1;
            let n = if self.reads % 5 == 0 {
                let mut buf = [0u8; 13];
                let n = stack.recv(id, &mut buf).unwrap();
                self.got.extend_from_slice(&buf[..n]);
                n
            } else {
                let got = &mut self.got;
                stack
                    .recv_with(id, 1000, &mut |data| {
                        assert!(!data.is_empty() && data.len() <= 1000);
                        let take = data.len().min(7);
                        got.extend_from_slice(&data[..take]);
                        take
                    })
                    .unwrap()
            };
            if n == 0 {
                return;
            }
        }
    }
}

impl App<KernelStack> for Nibbler {
    fn start(&mut self, stack: &mut KernelStack, _now: Instant) {
        stack.connect(self.target.unwrap()).unwrap();
    }

    fn on_event(&mut self, stack: &mut KernelStack, _now: Instant, event: StackEvent) {
        match event {
            StackEvent::Readable(c) => self.drain(stack, c),
            StackEvent::PeerClosed(c) => {
                self.drain(stack, c);
                stack.close(c).unwrap();
            }
            StackEvent::Closed(_, reason) => self.closed = Some(reason),
            _ => {}
        }
    }

    fn done(&self) -> bool {
        self.closed.is_some()
    }
}

#[test]
fn recv_with_keeps_what_its_reader_leaves_for_the_next_read() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let target = SocketAddrV4::new(Ipv4Addr::LOCALHOST, listener.local_addr().unwrap().port());
    let data = pattern(200_000, 9);
    let sent = data.clone();
    let peer = thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        s.write_all(&sent).unwrap();
        s.shutdown(Shutdown::Write).unwrap();
        let mut rest = Vec::new();
        s.read_to_end(&mut rest).unwrap();
    });
    let (_, app, _) = Runner::spawn(loopback_stack(), Nibbler { target: Some(target), ..Nibbler::default() }).wait();
    peer.join().unwrap();
    assert_eq!(app.closed, Some(CloseReason::Normal));
    assert_eq!(app.got.len(), data.len());
    assert!(app.got == data, "bytes out of order or lost");
    // Every recv_with took at most 7 bytes and every recv 13: the reads were many, and leftovers were kept.
    assert!(app.reads > (data.len() / 13) as u64);
}

const CHUNK_BYTES: usize = 100_000;

/// Sends `data` to a peer that reads only once told to: fills the send buffer, then waits for `Writable`.
struct Filler {
    target: SocketAddrV4,
    data: Vec<u8>,
    sent: usize,
    /// Set when a send left the buffer full: the peer may start reading.
    full: Arc<AtomicBool>,
    writables: u32,
    closed: Option<CloseReason>,
}

impl Filler {
    fn pump(&mut self, stack: &mut KernelStack, id: ConnId) {
        while self.sent < self.data.len() {
            let want = &self.data[self.sent..(self.sent + CHUNK_BYTES).min(self.data.len())];
            let room = stack.send_capacity(id);
            let n = stack.send(id, want).unwrap();
            assert_eq!(n, want.len().min(room));
            self.sent += n;
            if stack.send_capacity(id) == 0 {
                // Full: nothing more is taken until `Writable`.
                assert_eq!(stack.send(id, b"more"), Ok(0));
                self.full.store(true, Ordering::Relaxed);
                return;
            }
        }
        let _ = stack.close(id);
    }
}

impl App<KernelStack> for Filler {
    fn start(&mut self, stack: &mut KernelStack, _now: Instant) {
        stack.connect(self.target).unwrap();
    }

    fn on_event(&mut self, stack: &mut KernelStack, _now: Instant, event: StackEvent) {
        match event {
            StackEvent::Connected(c) => self.pump(stack, c),
            StackEvent::Writable(c) => {
                self.writables += 1;
                // (After our close the capacity is 0: a last send that filled the buffer still earns its Writable.)
                assert!(self.sent == self.data.len() || stack.send_capacity(c) > 0, "Writable with a full buffer");
                self.pump(stack, c);
            }
            StackEvent::PeerClosed(c) => {
                let _ = stack.recv(c, &mut [0; 8]);
            }
            StackEvent::Closed(_, reason) => self.closed = Some(reason),
            _ => {}
        }
    }

    fn done(&self) -> bool {
        self.closed.is_some()
    }
}

#[test]
fn full_send_buffer_arms_writable_and_every_byte_arrives() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let target = SocketAddrV4::new(Ipv4Addr::LOCALHOST, listener.local_addr().unwrap().port());
    let full = Arc::new(AtomicBool::new(false));
    let told = Arc::clone(&full);
    let data = pattern(24 << 20, 3);
    let peer = thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        let deadline = StdInstant::now() + TIMEOUT;
        while !told.load(Ordering::Relaxed) && StdInstant::now() < deadline {
            thread::sleep(Duration::from_millis(1));
        }
        s.set_read_timeout(Some(TIMEOUT)).unwrap();
        let mut got = Vec::new();
        s.read_to_end(&mut got).unwrap();
        got
    });
    let cfg = KernelConfig { send_buffer_bytes: 64 * 1024, ..KernelConfig::new(Ipv4Addr::LOCALHOST) };
    let app = Filler { target, data: data.clone(), sent: 0, full, writables: 0, closed: None };
    let (stack, app, _) = Runner::spawn(KernelStack::new(cfg).unwrap(), app).wait();
    let got = peer.join().unwrap();
    assert_eq!(got.len(), data.len());
    assert!(got == data, "bytes differ");
    assert!(app.writables >= 1);
    assert_eq!(app.closed, Some(CloseReason::Normal));
    let c: KernelCounters = *stack.counters();
    assert!(c.send_buffer_full >= 1);
}

#[test]
fn connection_limit_leaves_the_next_in_the_backlog_until_room() {
    let port = free_port();
    let cfg = KernelConfig { max_connections: 1, ..KernelConfig::new(Ipv4Addr::LOCALHOST) };
    let mut stack = KernelStack::new(cfg).unwrap();
    stack.listen(port).unwrap();
    let runner = Runner::spawn(stack, Echo::new(port));

    let mut first = TcpStream::connect(("127.0.0.1", port)).unwrap();
    first.set_read_timeout(Some(TIMEOUT)).unwrap();
    first.write_all(b"a").unwrap();
    let mut one = [0u8; 1];
    first.read_exact(&mut one).unwrap();
    assert_eq!(&one, b"a");

    // The kernel completes the second handshake, but the stack does not take it while the first is open.
    let mut second = TcpStream::connect(("127.0.0.1", port)).unwrap();
    second.write_all(b"b").unwrap();
    second.set_read_timeout(Some(Duration::from_millis(300))).unwrap();
    let early = second.read(&mut one).map_err(|e| e.kind());
    assert!(matches!(early, Err(ErrorKind::WouldBlock | ErrorKind::TimedOut)), "{early:?}");

    first.shutdown(Shutdown::Write).unwrap();
    let mut rest = Vec::new();
    first.read_to_end(&mut rest).unwrap();
    assert!(rest.is_empty());

    second.set_read_timeout(Some(TIMEOUT)).unwrap();
    second.read_exact(&mut one).unwrap();
    assert_eq!(&one, b"b");
    second.shutdown(Shutdown::Write).unwrap();
    second.read_to_end(&mut rest).unwrap();

    let (stack, echo, _) = runner.stop();
    assert_eq!(echo.accepted, 2);
    let c = stack.counters();
    assert_eq!(c.accepted, 2);
    assert!(c.accept_limit_hits >= 1);
}

/// Releases every connection on its first bytes, while it is live: the peer gets a reset.
#[derive(Default)]
struct Releaser {
    log: Vec<StackEvent>,
}

impl App<KernelStack> for Releaser {
    fn start(&mut self, _stack: &mut KernelStack, _now: Instant) {}

    fn on_event(&mut self, stack: &mut KernelStack, _now: Instant, event: StackEvent) {
        match event {
            StackEvent::Readable(c) => {
                stack.release(c).unwrap();
                // Released already: a second release changes nothing until `Closed` is taken.
                assert_eq!(stack.release(c), Ok(()));
            }
            StackEvent::Writable(_) => {}
            StackEvent::Closed(c, _) => {
                assert_eq!(stack.release(c), Err(StackError::NoConnection));
                self.log.push(event);
            }
            other => self.log.push(other),
        }
    }
}

#[test]
fn release_of_a_live_connection_aborts_it() {
    let port = free_port();
    let mut stack = loopback_stack();
    stack.listen(port).unwrap();
    let runner = Runner::spawn(stack, Releaser::default());
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(TIMEOUT)).unwrap();
    s.write_all(b"hello?").unwrap();
    let mut buf = [0u8; 8];
    assert_eq!(s.read(&mut buf).map_err(|e| e.kind()), Err(ErrorKind::ConnectionReset));
    let (stack, app, _) = runner.stop();
    assert!(matches!(
        app.log.as_slice(),
        [StackEvent::Accepted { conn: a, port: p }, StackEvent::Closed(b, CloseReason::Aborted)] if a == b && *p == port
    ));
    assert_eq!(stack.counters().aborts, 1);
}

#[test]
fn idle_loop_waits_in_epoll_and_stops_on_the_flag() {
    let port = free_port();
    let runner = Runner::spawn(loopback_stack(), Echo::new(port));
    thread::sleep(Duration::from_millis(200));
    let (stack, echo, stats) = runner.stop();
    assert_eq!(echo.accepted, 0);
    assert_eq!(stack.counters().listen_errors, 0, "Echo's listen in start failed");
    // 200 µs of spinning, then 1 ms waits: a loop that never blocked would have made millions of turns.
    assert!(stats.sleeps >= 5, "{stats:?}");
    assert!(stats.turns < 200_000, "{stats:?}");
}

#[test]
fn event_queue_limit_drops_the_oldest_and_counts() {
    let port = free_port();
    let cfg = KernelConfig { max_events: 2, ..KernelConfig::new(Ipv4Addr::LOCALHOST) };
    let mut stack = KernelStack::new(cfg).unwrap();
    stack.listen(port).unwrap();
    let clients: Vec<_> = (0..3).map(|_| TcpStream::connect(("127.0.0.1", port)).unwrap()).collect();
    let deadline = StdInstant::now() + TIMEOUT;
    while stack.counters().accepted < 3 && StdInstant::now() < deadline {
        stack.poll(Some(Duration::from_millis(10))).unwrap();
    }
    assert_eq!(stack.counters().accepted, 3);
    assert_eq!(stack.counters().events_dropped, 1);
    let mut kept = Vec::new();
    while let Some(ev) = stack.next_event() {
        kept.push(ev);
    }
    // The first connection's `Accepted` was dropped; the two later ones remain, in order.
    assert!(
        matches!(kept.as_slice(), [StackEvent::Accepted { conn: a, .. }, StackEvent::Accepted { conn: b, .. }] if a.slot() == 1 && b.slot() == 2),
        "{kept:?}"
    );
    drop(clients);
}

#[test]
fn connect_from_binds_the_source_address() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let target = SocketAddrV4::new(Ipv4Addr::LOCALHOST, listener.local_addr().unwrap().port());
    let mut stack = loopback_stack();
    let source = Ipv4Addr::new(127, 0, 0, 2);
    let id = stack.connect_from(source, target).unwrap();
    let (_peer, from) = listener.accept().unwrap();
    assert_eq!(from.ip(), source);
    let deadline = StdInstant::now() + TIMEOUT;
    let mut events = Vec::new();
    while events.is_empty() && StdInstant::now() < deadline {
        stack.poll(Some(Duration::from_millis(10))).unwrap();
        events.extend(std::iter::from_fn(|| stack.next_event()));
    }
    assert_eq!(events, vec![StackEvent::Connected(id)]);
    // An address that is not ours cannot be bound.
    assert_eq!(stack.connect_from(Ipv4Addr::new(192, 0, 2, 1), target), Err(StackError::NoPort));
}

/// A server that reads everything and records its connections' events, done after `want_closed` closes.
struct Recorder {
    want_closed: usize,
    log: Vec<StackEvent>,
    closed: usize,
}

impl App<KernelStack> for Recorder {
    fn start(&mut self, _stack: &mut KernelStack, _now: Instant) {}

    fn on_event(&mut self, stack: &mut KernelStack, _now: Instant, event: StackEvent) {
        match event {
            StackEvent::Readable(c) => while stack.recv(c, &mut [0; 512]).unwrap_or(0) > 0 {},
            StackEvent::Writable(_) => {}
            StackEvent::PeerClosed(c) => {
                self.log.push(event);
                let _ = stack.close(c);
            }
            StackEvent::Closed(..) => {
                self.closed += 1;
                self.log.push(event);
            }
            other => self.log.push(other),
        }
    }

    fn done(&self) -> bool {
        self.closed >= self.want_closed
    }
}

#[test]
fn peer_reset_ends_the_connection_with_reset() {
    let port = free_port();
    let mut stack = loopback_stack();
    stack.listen(port).unwrap();
    let runner = Runner::spawn(stack, Recorder { want_closed: 1, log: Vec::new(), closed: 0 });
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.write_all(b"data, then a reset").unwrap();
    socket2::SockRef::from(&s).set_linger(Some(Duration::ZERO)).unwrap();
    drop(s);
    let (stack, app, _) = runner.wait();
    assert!(
        matches!(app.log.as_slice(), [StackEvent::Accepted { conn: a, .. }, StackEvent::Closed(b, CloseReason::Reset)] if a == b),
        "{:?}",
        app.log
    );
    assert_eq!(stack.counters().resets, 1);
    assert_eq!(stack.connections(), 0);
}

#[test]
fn slots_are_reused_under_new_generations() {
    let port = free_port();
    let cfg = KernelConfig { max_connections: 4, ..KernelConfig::new(Ipv4Addr::LOCALHOST) };
    let mut stack = KernelStack::new(cfg).unwrap();
    stack.listen(port).unwrap();
    let rounds = 40;
    let runner = Runner::spawn(stack, Recorder { want_closed: rounds, log: Vec::new(), closed: 0 });
    for i in 0..rounds {
        let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.set_read_timeout(Some(TIMEOUT)).unwrap();
        s.write_all(format!("connection {i}").as_bytes()).unwrap();
        s.shutdown(Shutdown::Write).unwrap();
        // The server closes after our FIN: end of stream here, then the connection is gone on both sides.
        let mut rest = Vec::new();
        s.read_to_end(&mut rest).unwrap();
        assert!(rest.is_empty());
    }
    let (stack, app, _) = runner.wait();
    let accepted: Vec<ConnId> = app
        .log
        .iter()
        .filter_map(|e| if let StackEvent::Accepted { conn, .. } = e { Some(*conn) } else { None })
        .collect();
    assert_eq!(accepted.len(), rounds);
    // Never more than four slots, and every handle distinct.
    assert!(accepted.iter().all(|id| id.slot() < 4));
    let mut distinct = accepted.clone();
    distinct.sort();
    distinct.dedup();
    assert_eq!(distinct.len(), rounds);
    let normal = app.log.iter().filter(|e| matches!(e, StackEvent::Closed(_, CloseReason::Normal))).count();
    assert_eq!(normal, rounds);
    assert_eq!(stack.counters().closed_normal, rounds as u64);
    assert_eq!(stack.connections(), 0);
}

#[test]
fn http_sends_bodies_larger_than_the_send_buffer() {
    let port = free_port();
    let body = pattern((1 << 20) + 3, 9);
    let cfg = KernelConfig { send_buffer_bytes: 32 * 1024, ..KernelConfig::new(Ipv4Addr::LOCALHOST) };
    let mut stack = KernelStack::new(cfg).unwrap();
    stack.listen(port).unwrap();
    let runner = Runner::spawn(stack, Http::new(HttpConfig::new(port, body.clone())));
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(TIMEOUT)).unwrap();
    s.write_all(b"GET /a HTTP/1.1\r\nHost: t\r\n\r\nGET /b HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").unwrap();
    let mut rest = Vec::new();
    for last in [false, true] {
        let (head, got) = read_response(&mut s, &mut rest);
        assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
        assert_eq!(head.contains("Connection: close\r\n"), last, "{head}");
        assert!(got == body, "body differs");
    }
    s.read_to_end(&mut rest).unwrap();
    assert!(rest.is_empty());
    let (stack, http, _) = runner.stop();
    assert_eq!(http.stats.ok, 2);
    assert_eq!(stack.counters().accepted, 1);
}

#[test]
fn echo_serves_a_hundred_connections_at_once() {
    let port = free_port();
    let mut stack = loopback_stack();
    stack.listen(port).unwrap();
    let runner = Runner::spawn(stack, Echo::new(port));
    let clients: Vec<_> = (0..100u8)
        .map(|i| {
            thread::spawn(move || {
                let data = pattern(20_000 + usize::from(i), i);
                assert!(echo_through(port, data.clone()) == data, "client {i}");
            })
        })
        .collect();
    for c in clients {
        c.join().unwrap();
    }
    let (stack, echo, _) = runner.stop();
    assert_eq!(echo.accepted, 100);
    let c = stack.counters();
    assert_eq!((c.accepted, c.closed_normal, c.resets), (100, 100, 0));
    assert_eq!(stack.connections(), 0);
}

#[test]
fn connect_takes_the_sources_in_turn_and_skips_one_it_cannot_bind() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let target = SocketAddrV4::new(Ipv4Addr::LOCALHOST, listener.local_addr().unwrap().port());
    let (a, b) = (Ipv4Addr::new(127, 0, 0, 2), Ipv4Addr::new(127, 0, 0, 3));
    // 192.0.2.1 is no address of this host: its bind fails and the open goes on to the next source.
    let sources = vec![a, Ipv4Addr::new(192, 0, 2, 1), b];
    let mut stack = KernelStack::new(KernelConfig { sources, ..KernelConfig::new(Ipv4Addr::LOCALHOST) }).unwrap();
    let mut ids = Vec::new();
    let mut peers = Vec::new();
    for _ in 0..4 {
        ids.push(stack.connect(target).unwrap());
        peers.push(listener.accept().unwrap());
    }
    assert_eq!(peers.iter().map(|(_, from)| from.ip()).collect::<Vec<_>>(), [a, b, a, b]);
    let deadline = StdInstant::now() + TIMEOUT;
    let mut connected = Vec::new();
    while connected.len() < 4 && StdInstant::now() < deadline {
        stack.poll(Some(Duration::from_millis(10))).unwrap();
        connected.extend(std::iter::from_fn(|| stack.next_event()));
    }
    assert_eq!(connected, ids.iter().map(|&id| StackEvent::Connected(id)).collect::<Vec<_>>());
    // With no source it can bind, the open fails as having no port.
    let mut lost = KernelStack::new(KernelConfig {
        sources: vec![Ipv4Addr::new(192, 0, 2, 1)],
        ..KernelConfig::new(Ipv4Addr::LOCALHOST)
    })
    .unwrap();
    assert_eq!(lost.connect(target), Err(StackError::NoPort));
}

#[test]
fn a_peer_that_never_closes_is_let_go_after_the_fin_wait_bound() {
    let port = free_port();
    let cfg =
        KernelConfig { fin_wait_2_timeout: Some(Duration::from_secs(1)), ..KernelConfig::new(Ipv4Addr::LOCALHOST) };
    let mut stack = KernelStack::new(cfg).unwrap();
    stack.listen(port).unwrap();
    // Two peers that never close: one sends nothing after our FIN, one keeps sending for a while.
    let quiet = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let mut talker = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let mut conns = Vec::new();
    let start = std::time::Instant::now();
    let mut ended = Vec::new();
    let mut buf = [0u8; 64];
    while ended.len() < 2 && start.elapsed() < TIMEOUT {
        stack.poll(Some(Duration::from_millis(20))).unwrap();
        while let Some(ev) = stack.next_event() {
            match ev {
                StackEvent::Accepted { conn, .. } => {
                    stack.close(conn).unwrap();
                    conns.push(conn);
                }
                StackEvent::Readable(c) => while let Ok(1..) = stack.recv(c, &mut buf) {},
                StackEvent::Closed(c, reason) => ended.push((c, reason, start.elapsed())),
                _ => {}
            }
        }
        if start.elapsed() < Duration::from_secs(5) {
            let _ = talker.write_all(b"still here");
        }
    }
    assert_eq!(ended.len(), 2, "a connection waited for its peer's FIN past the bound: {ended:?}");
    assert!(ended.iter().all(|e| e.1 == CloseReason::TimedOut), "{ended:?}");
    // The quiet one goes within the bound and the sweep's second; the talker only a second after it fell silent.
    let at = |c| ended.iter().find(|e| e.0 == c).unwrap().2;
    assert!(at(conns[0]) >= Duration::from_secs(1) && at(conns[0]) < Duration::from_secs(5), "{ended:?}");
    assert!(at(conns[1]) >= Duration::from_secs(6), "{ended:?}");
    assert_eq!(stack.counters().fin_wait_timeouts, 2);
    drop(quiet);
}
