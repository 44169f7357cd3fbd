//! `xtcp stat`'s library (`xtcp::engine::control`): control servers over the stacks of a simulated world and of the
//! real-clock loop, queried through their Unix sockets, rendered like `ss -tan`.

mod common;

use std::io::{Read, Write};
use std::net::SocketAddrV4;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use xtcp::app::App;
use xtcp::engine::control::{
    discover, query, query_all, render, render_json, ConnectionInfo, ControlConfig, ControlServer, Snapshot,
};
use xtcp::engine::run::{run_with, RunOptions};
use xtcp::engine::sim::SimWorld;
use xtcp::engine::{ConnId, Stack, StackConfig, StackEvent};
use xtcp::nic::fault::Faults;
use xtcp::nic::loopback::Loopback;
use xtcp::nic::sim::LinkConfig;
use xtcp::nic::{DeviceStats, Transmit};
use xtcp::tcp::State;
use xtcp::time::Instant;

/// A directory of its own for one test, removed when dropped.
struct TempRoot(PathBuf);

impl TempRoot {
    fn new(name: &str) -> TempRoot {
        let dir = std::env::temp_dir().join(format!("xtcp-stat-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempRoot(dir)
    }

    fn config(&self, core: usize) -> ControlConfig {
        ControlConfig { root: self.0.clone(), ..ControlConfig::new(core) }
    }
}

impl Drop for TempRoot {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Runs `client` on a thread while polling each server over its stack, on a virtual clock that moves 10 ms per
/// turn (a real millisecond passes between turns), until the client is done; at most 10 s of real time.
fn serve_while<T: Send>(
    servers: &mut [(&mut ControlServer, &Stack)],
    now: &mut Instant,
    client: impl FnOnce() -> T + Send,
) -> T {
    std::thread::scope(|s| {
        let handle = s.spawn(client);
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !handle.is_finished() {
            assert!(std::time::Instant::now() < deadline, "the client did not finish");
            for (server, stack) in servers.iter_mut() {
                let before = std::time::Instant::now();
                server.poll(*now, stack, None, &[("pool_empty", 3)]);
                assert!(before.elapsed() < Duration::from_secs(1), "a poll blocked");
            }
            *now += Duration::from_millis(10);
            std::thread::sleep(Duration::from_millis(1));
        }
        handle.join().unwrap()
    })
}

/// Client (stack 0) and server (stack 1) with three connections: one closed by the client (held in TIME_WAIT on the
/// client, gone on the server), two left ESTABLISHED, one of which holds 100 bytes the server has not read.
fn world_with_connections() -> SimWorld {
    let mut world = common::world(common::configs(11), LinkConfig::default(), Faults::default(), 11);
    let ids: Vec<ConnId> = (0..3).map(|_| world.stacks[0].connect(common::server_addr()).unwrap()).collect();
    let mut connected = 0;
    let mut sent = false;
    let mut closed = false;
    let finished = world.run(Instant::from_secs(30), |stacks, _| {
        while let Some(ev) = stacks[0].next_event() {
            if let StackEvent::Connected(_) = ev {
                connected += 1;
            }
        }
        while let Some(ev) = stacks[1].next_event() {
            if let StackEvent::PeerClosed(c) = ev {
                stacks[1].close(c).unwrap();
            }
        }
        if connected == 3 && !sent {
            assert_eq!(stacks[0].send(ids[1], &[7; 100]).unwrap(), 100);
            stacks[0].close(ids[0]).unwrap();
            sent = true;
        }
        if sent {
            closed = stacks[0].connection(ids[0]).is_ok_and(|c| c.state() == State::TimeWait)
                && stacks[1].connection_count() == 2
                && stacks[1].connections().any(|(_, c)| c.recv_queue_len() == 100)
                && stacks[0].connections().all(|(_, c)| c.send_queue_len() == 0);
        }
        closed
    });
    assert!(finished && closed, "the world did not reach the wanted states");
    world
}

fn counts(stack: &Stack) -> [u64; 11] {
    stack.state_counts().map(|c| c as u64)
}

#[test]
fn snapshots_over_the_socket_match_the_stacks_and_render_like_ss() {
    let root = TempRoot::new("snapshot");
    let world = world_with_connections();
    let [client, server] = &world.stacks;
    let mut control = [ControlServer::bind(root.config(0)).unwrap(), ControlServer::bind(root.config(1)).unwrap()];
    let paths: Vec<PathBuf> = control.iter().map(|c| c.path().to_owned()).collect();
    let [c0, c1] = &mut control;
    let mut now = Instant::from_secs(1);
    let mut servers = [(c0, client), (c1, server)];
    let snaps: Vec<Snapshot> = serve_while(&mut servers, &mut now, || {
        paths.iter().map(|p| query(p, true, Duration::from_secs(5)).unwrap()).collect()
    });

    for (snap, (core, stack)) in snaps.iter().zip([(0, client), (1, server)]) {
        assert_eq!(snap.pid, std::process::id());
        assert_eq!(snap.core, core);
        assert_eq!(snap.states, counts(stack));
        assert_eq!(&snap.counters, stack.counters());
        let buffers = ("buffer_bytes".to_owned(), stack.buffer_bytes() as u64);
        let compact = ("compact_conns".to_owned(), stack.compact_count() as u64);
        assert_eq!(snap.device, vec![buffers, compact, ("pool_empty".to_owned(), 3)]);
        assert!(snap.device_drops.is_empty(), "the servers were given no device");
        let listed = snap.connections.as_ref().expect("connections were asked for");
        let expected: Vec<ConnectionInfo> = stack.connections().map(|(_, c)| ConnectionInfo::of(&c)).collect();
        assert_eq!(listed, &expected);
        for (info, (_, conn)) in listed.iter().zip(stack.connections()) {
            assert_eq!((info.local, info.remote, info.state), (conn.local(), conn.remote(), conn.state()));
            assert_eq!(info.recv_queue_bytes, conn.recv_queue_len() as u64);
            assert_eq!(info.send_queue_bytes, conn.send_queue_len() as u64);
            assert!(info.srtt_us.is_some(), "the handshake measured a round trip");
        }
        assert_eq!(snap.connections_omitted, 0);
    }
    let (c, s) = (&snaps[0], &snaps[1]);
    assert_eq!((c.state_count(State::TimeWait), c.state_count(State::Established)), (1, 2));
    assert_eq!(
        (s.state_count(State::Listen), s.state_count(State::Established), s.state_count(State::TimeWait)),
        (1, 2, 0)
    );
    let unread = s.connections.as_ref().unwrap().iter().filter(|i| i.recv_queue_bytes == 100).count();
    assert_eq!(unread, 1);
    let remote = SocketAddrV4::new(common::CLIENT_IP, 0);
    assert!(s.connections.as_ref().unwrap().iter().all(|i| i.remote.ip() == remote.ip()));

    // The states table: all 11 states, a total and one column per core.
    let text = render(&snaps, true);
    for state in State::ALL {
        assert!(text.lines().any(|l| l.starts_with(state.name())), "{} missing:\n{text}", state.name());
    }
    let row = |name: &str| -> Vec<String> {
        let line = text
            .lines()
            .find(|l| l.split_whitespace().next() == Some(name))
            .unwrap_or_else(|| panic!("{name}:\n{text}"));
        line.split_whitespace().skip(1).map(str::to_owned).collect()
    };
    assert_eq!(row("TIME_WAIT"), ["1", "1", "0"], "{text}");
    assert_eq!(row("ESTABLISHED"), ["4", "2", "2"], "{text}");
    assert_eq!(row("LISTEN"), ["1", "0", "1"], "{text}");
    let frames = client.counters().rx_frames + server.counters().rx_frames;
    assert_eq!(row("rx_frames")[0], frames.to_string(), "{text}");
    assert_eq!(row("pool_empty"), ["6", "3", "3"], "{text}");
    assert!(text.lines().any(|l| l.starts_with("total")), "drops have a total row:\n{text}");
    // The ss -tan table: ss's names, Recv-Q then Send-Q, local then peer.
    assert!(text.lines().any(|l| l.starts_with("State") && l.contains("Recv-Q") && l.contains("Peer Address:Port")));
    let estab: Vec<&str> = text.lines().filter(|l| l.starts_with("ESTAB ")).collect();
    assert_eq!(estab.len(), 4, "{text}");
    let tw: Vec<&str> = text.lines().filter(|l| l.starts_with("TIME-WAIT ")).collect();
    assert_eq!(tw.len(), 1, "{text}");
    assert!(tw[0].contains(&format!("{}:{}", common::SERVER_IP, common::PORT)), "{text}");
    assert!(estab.iter().any(|l| l.split_whitespace().nth(1) == Some("100")), "Recv-Q 100:\n{text}");
    assert!(text.contains("rto:") && text.contains("cwnd:"), "ss -ti lines:\n{text}");
    // Without connections: no connection table.
    assert!(!render(&snaps, false).contains("Recv-Q"));

    // A listing limit: the rest are counted, and the table says so.
    let capped = Snapshot::capture(client, &DeviceStats::default(), &[], Some(1));
    assert_eq!((capped.connections.as_ref().map(Vec::len), capped.connections_omitted), (Some(1), 2));
    assert!(render(&[capped], true).contains("(2 more connections not listed"));

    let back: Vec<Snapshot> = serde_json::from_str(&render_json(&snaps)).unwrap();
    assert_eq!(back, snaps);
    let json: serde_json::Value = serde_json::from_str(&render_json(&snaps)).unwrap();
    assert_eq!(json[0]["states"]["TIME_WAIT"], 1);
    // Slot order: the client's first connection, the one it closed, comes first.
    assert_eq!(json[0]["connections"][0]["state"], "TIME_WAIT");

    // Counts only, and both cores found by discovery.
    let instances = discover(&root.0);
    assert_eq!(instances.len(), 1);
    assert_eq!(instances[0].pid, std::process::id());
    assert_eq!(instances[0].cores.iter().map(|c| c.0).collect::<Vec<_>>(), [0, 1]);
    let [c0, c1] = &mut control;
    let mut servers = [(c0, client), (c1, server)];
    let (all, failures) = serve_while(&mut servers, &mut now, || query_all(&root.0, false, Duration::from_secs(5)));
    assert!(failures.is_empty(), "{failures:?}");
    assert_eq!(all.len(), 2);
    assert!(all.iter().all(|s| s.connections.is_none()));
    assert_eq!(all[1].states, counts(server));
    assert!(all[1].uptime_us > 0);
    assert_eq!(control[1].stats().answered, 2);
}

#[test]
fn a_silent_client_does_not_stall_the_server_and_is_dropped() {
    let root = TempRoot::new("silent");
    let stack = Stack::new(common::configs(3)[1].clone(), Instant::ZERO);
    let cfg = ControlConfig { request_timeout: Duration::from_millis(200), ..root.config(0) };
    let mut server = ControlServer::bind(cfg).unwrap();
    let path = server.path().to_owned();
    let mut silent = UnixStream::connect(&path).unwrap();
    silent.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut now = Instant::ZERO;
    // The silent client is accepted first; a client that asks is answered meanwhile.
    server.poll(now, &stack, None, &[]);
    assert_eq!(server.clients(), 1);
    now += Duration::from_millis(10);
    let snap = serve_while(&mut [(&mut server, &stack)], &mut now, || query(&path, false, Duration::from_secs(5)));
    assert_eq!(snap.unwrap().states, counts(&stack));
    // Once its 200 ms (of loop time) are up, the silent one is dropped: it reads end of stream.
    for _ in 0..30 {
        now += Duration::from_millis(10);
        server.poll(now, &stack, None, &[]);
    }
    let mut buf = [0u8; 16];
    assert_eq!(silent.read(&mut buf).unwrap(), 0);
    assert_eq!(server.clients(), 0);
    let stats = server.stats();
    assert_eq!((stats.accepted, stats.answered, stats.timed_out), (2, 1, 1));
}

#[test]
fn bad_and_oversized_requests_are_refused_and_counted() {
    let root = TempRoot::new("bad");
    let stack = Stack::new(common::configs(4)[1].clone(), Instant::ZERO);
    let mut server = ControlServer::bind(root.config(0)).unwrap();
    let path = server.path().to_owned();
    let send = |bytes: Vec<u8>| {
        let path = path.clone();
        move || {
            let mut s = UnixStream::connect(&path).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            // The server may close before taking all of an oversized request.
            let _ = s.write_all(&bytes);
            let mut answer = Vec::new();
            let _ = s.read_to_end(&mut answer);
            answer
        }
    };
    let mut now = Instant::ZERO;
    let answer = serve_while(&mut [(&mut server, &stack)], &mut now, send(b"not json\n".to_vec()));
    assert!(answer.is_empty());
    let answer = serve_while(&mut [(&mut server, &stack)], &mut now, send(vec![b' '; 4096]));
    assert!(answer.is_empty());
    // A request without a newline, ended by the client shutting its side, is fine.
    let path2 = server.path().to_owned();
    let answer = serve_while(&mut [(&mut server, &stack)], &mut now, move || {
        let mut s = UnixStream::connect(&path2).unwrap();
        s.write_all(br#"{"connections": true}"#).unwrap();
        s.shutdown(std::net::Shutdown::Write).unwrap();
        let mut answer = Vec::new();
        s.read_to_end(&mut answer).unwrap();
        answer
    });
    let snap: Snapshot = serde_json::from_slice(&answer).unwrap();
    assert_eq!(snap.connections, Some(Vec::new()));
    assert_eq!((server.stats().bad_requests, server.stats().answered), (2, 1));
}

#[test]
fn socket_and_directory_are_removed_on_drop() {
    let root = TempRoot::new("drop");
    let core0 = ControlServer::bind(root.config(0)).unwrap();
    let core1 = ControlServer::bind(ControlConfig { socket_mode: Some(0o666), ..root.config(1) }).unwrap();
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(core1.path()).unwrap().permissions().mode() & 0o777, 0o666);
    let dir = root.0.join(std::process::id().to_string());
    assert!(core0.path().starts_with(&dir) && core0.path().exists() && core1.path().exists());
    let err = ControlServer::bind(root.config(1)).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::AddrInUse);
    assert!(core1.path().exists(), "a failed bind leaves the live socket alone");
    let (p0, p1) = (core0.path().to_owned(), core1.path().to_owned());
    drop(core0);
    assert!(!p0.exists());
    assert!(dir.exists(), "core 1 still lives there");
    drop(core1);
    assert!(!p1.exists());
    assert!(!dir.exists());
    assert!(discover(&root.0).is_empty());
}

#[test]
fn a_socket_file_nobody_answers_on_is_replaced() {
    let root = TempRoot::new("leftover");
    let dir = root.0.join(std::process::id().to_string());
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("core2.sock"), b"left by an earlier process with our pid").unwrap();
    let server = ControlServer::bind(root.config(2)).unwrap();
    assert!(UnixStream::connect(server.path()).is_ok());
}

/// The pid of a process that has exited.
fn dead_pid() -> u32 {
    let mut child = std::process::Command::new("true").spawn().unwrap();
    let pid = child.id();
    child.wait().unwrap();
    pid
}

#[test]
fn discover_skips_and_removes_the_directories_of_dead_pids() {
    let root = TempRoot::new("discover");
    let pid = dead_pid();
    let stale = root.0.join(pid.to_string());
    std::fs::create_dir_all(&stale).unwrap();
    std::fs::write(stale.join("core0.sock"), b"").unwrap();
    let other = root.0.join("not-a-pid");
    std::fs::create_dir_all(&other).unwrap();
    assert!(Path::new(&format!("/proc/{}", std::process::id())).exists(), "needs /proc");
    let live = ControlServer::bind(root.config(3));
    // Binding already cleaned up; make the stale directory again to see discovery do it too.
    assert!(!stale.exists());
    std::fs::create_dir_all(&stale).unwrap();
    std::fs::write(stale.join("core0.sock"), b"").unwrap();
    let live = live.unwrap();
    let found = discover(&root.0);
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].pid, std::process::id());
    assert_eq!(found[0].cores, vec![(3, live.path().to_owned())]);
    assert!(!stale.exists(), "the dead pid's directory is removed");
    assert!(other.exists(), "what is not ours is left alone");
    assert!(discover(&root.0.join("missing")).is_empty());
}

/// Listens on port 7 and connects to itself once, holding the connection open.
struct Hold {
    target: SocketAddrV4,
}

impl App for Hold {
    fn start(&mut self, stack: &mut Stack, _now: Instant) {
        stack.listen(self.target.port()).unwrap();
        stack.connect(self.target).unwrap();
    }

    fn on_event(&mut self, _stack: &mut Stack, _now: Instant, _event: StackEvent) {}
}

#[test]
fn run_with_answers_queries_while_the_loop_runs_over_loopback() {
    let root = TempRoot::new("run");
    let mut stack = Stack::new(StackConfig::new(common::SERVER_MAC, common::SERVER_IP, 5), Instant::ZERO);
    stack.add_neighbor(common::SERVER_IP, common::SERVER_MAC);
    let mut dev = Loopback::new(256, 1514);
    // One frame too long for the device: a drop it counts, which the snapshots must carry.
    assert!(!dev.transmit(Instant::ZERO, 1515, &mut |_| {}));
    let mut app = Hold { target: SocketAddrV4::new(common::SERVER_IP, 7) };
    let cfg = ControlConfig { interface: Some("lo-test".to_owned()), queue: Some(0), ..root.config(0) };
    let mut server = ControlServer::bind(cfg).unwrap();
    let path = server.path().to_owned();
    let stop = AtomicBool::new(false);
    let snap = std::thread::scope(|s| {
        let stack = &mut stack;
        let looping = s.spawn(|| run_with(stack, &mut dev, &mut app, &stop, RunOptions::default(), Some(&mut server)));
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        let mut last = None;
        while std::time::Instant::now() < deadline {
            let snap = query(&path, true, Duration::from_secs(5)).unwrap();
            let done = snap.state_count(State::Established) == 2;
            last = Some(snap);
            if done {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        stop.store(true, Ordering::Relaxed);
        let stats = looping.join().unwrap();
        assert!(stats.turns > 0);
        last.unwrap()
    });
    assert_eq!(snap.state_count(State::Established), 2, "{snap:?}");
    assert_eq!(snap.state_count(State::Listen), 1);
    assert_eq!((snap.interface.as_deref(), snap.queue), (Some("lo-test"), Some(0)));
    let conns = snap.connections.as_ref().unwrap();
    assert_eq!(conns.len(), 2);
    assert!(conns.iter().any(|c| c.local.port() == 7) && conns.iter().any(|c| c.remote.port() == 7));
    let turns = snap.device.iter().find(|(n, _)| n == "loop_turns").map(|&(_, v)| v);
    assert!(turns.is_some_and(|t| t > 0), "{:?}", snap.device);
    // The device's drops by reason, read from it as the snapshot was made, and printed under the stack's drops.
    assert_eq!(snap.device_drops, [("tx_ring_full".to_owned(), 0), ("tx_too_long".to_owned(), 1)]);
    let text = render(std::slice::from_ref(&snap), false);
    let row = text.lines().find(|l| l.starts_with("tx_too_long")).unwrap_or_else(|| panic!("{text}"));
    assert_eq!(row.split_whitespace().skip(1).collect::<Vec<_>>(), ["1", "1"], "{text}");
    assert!(text.contains("DEVICE_DROP"), "{text}");
    assert!(snap.uptime_us > 0);
    assert!(snap.counters.rx_frames >= 3, "the handshake went round the loopback");
    assert_eq!(stack.state_counts()[4], 2);
    drop(server);
    assert!(!path.exists());
}

#[test]
fn a_client_that_asks_and_does_not_read_is_dropped_when_its_time_is_up() {
    let root = TempRoot::new("slow");
    let stack = Stack::new(common::configs(6)[1].clone(), Instant::ZERO);
    let cfg = ControlConfig { response_timeout: Duration::from_millis(100), ..root.config(0) };
    let mut server = ControlServer::bind(cfg).unwrap();
    // An answer of a few MB: more than a Unix socket's buffer holds.
    let names: Vec<String> = (0..200_000).map(|i| format!("device_value_{i}")).collect();
    let extra: Vec<(&str, u64)> = names.iter().map(|n| (n.as_str(), u64::MAX)).collect();
    let mut slow = UnixStream::connect(server.path()).unwrap();
    slow.write_all(b"{\"connections\": false}\n").unwrap();
    let mut now = Instant::ZERO;
    for _ in 0..30 {
        let before = std::time::Instant::now();
        server.poll(now, &stack, None, &extra);
        assert!(before.elapsed() < Duration::from_secs(2), "a poll blocked on the slow client");
        now += Duration::from_millis(10);
    }
    let stats = server.stats();
    assert_eq!((stats.accepted, stats.answered, stats.timed_out, server.clients()), (1, 0, 1, 0));
    // What it reads now is cut short: not a snapshot.
    slow.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut partial = Vec::new();
    let _ = slow.read_to_end(&mut partial);
    assert!(!partial.is_empty(), "the server wrote what the socket took");
    assert!(serde_json::from_slice::<Snapshot>(&partial).is_err());
}

#[test]
fn query_gives_up_in_time_on_a_server_that_never_answers_or_never_accepts() {
    let root = TempRoot::new("stuck");
    // A server that is never polled: the connection is made, the answer never comes.
    let server = ControlServer::bind(root.config(0)).unwrap();
    let err = query(server.path(), false, Duration::from_millis(200)).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::TimedOut);
    // A listener whose backlog is full: connecting itself would wait for ever.
    let path = root.0.join("full.sock");
    let listener = socket2::Socket::new(socket2::Domain::UNIX, socket2::Type::STREAM, None).unwrap();
    listener.bind(&socket2::SockAddr::unix(&path).unwrap()).unwrap();
    listener.listen(0).unwrap();
    let mut held = Vec::new();
    let mut full = false;
    for _ in 0..16 {
        let s = socket2::Socket::new(socket2::Domain::UNIX, socket2::Type::STREAM, None).unwrap();
        s.set_nonblocking(true).unwrap();
        if s.connect(&socket2::SockAddr::unix(&path).unwrap()).is_err() {
            full = true;
            break;
        }
        held.push(s);
    }
    assert!(full, "the backlog never filled");
    let asking = std::thread::spawn(move || query(&path, false, Duration::from_millis(200)));
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !asking.is_finished() {
        assert!(std::time::Instant::now() < deadline, "query blocked on a full backlog");
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(asking.join().unwrap().unwrap_err().kind(), std::io::ErrorKind::TimedOut);
    drop(held);
}

#[test]
fn query_all_removes_sockets_nobody_listens_on() {
    let root = TempRoot::new("orphan");
    let live = ControlServer::bind(root.config(0)).unwrap();
    // A socket file whose listener is gone, in a directory whose pid is alive (as after pid reuse).
    let orphan = live.path().with_file_name("core5.sock");
    drop(std::os::unix::net::UnixListener::bind(&orphan).unwrap());
    assert!(orphan.exists());
    let mut live = live;
    let stack = Stack::new(common::configs(8)[1].clone(), Instant::ZERO);
    let mut now = Instant::ZERO;
    let (snaps, failures) =
        serve_while(&mut [(&mut live, &stack)], &mut now, || query_all(&root.0, false, Duration::from_secs(5)));
    assert!(failures.is_empty(), "{failures:?}");
    assert_eq!(snaps.len(), 1);
    assert!(!orphan.exists());
    assert!(live.path().exists(), "the directory stays while a live socket is in it");
}
