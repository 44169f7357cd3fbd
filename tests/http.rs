//! The HTTP/1.1 server (`xtcp::app::http`) over the simulated link: pipelining, keep-alive and close, errors.

mod common;

use std::net::SocketAddrV4;
use std::sync::Arc;

use xtcp::app::files::{FileLimits, StaticFiles};
use xtcp::app::http::{Http, HttpConfig};
use xtcp::app::{dispatch, App};
use xtcp::engine::StackEvent;
use xtcp::nic::fault::Faults;
use xtcp::nic::sim::LinkConfig;
use xtcp::time::Instant;

#[derive(Debug, PartialEq)]
struct Response {
    status: u16,
    connection: String,
    content_length: usize,
    body: Vec<u8>,
}

/// Sends `request` (all of it, at once) and returns the responses read until the server closed.
fn exchange(cfg: HttpConfig, request: &[u8], head_only: &[bool]) -> (Vec<Response>, Http) {
    let mut world = common::world(common::configs(11), LinkConfig::default(), Faults::default(), 11);
    let mut http = Http::new(cfg.clone());
    let now = world.now();
    http.start(&mut world.stacks[1], now);
    let conn = world.stacks[0].connect(SocketAddrV4::new(common::SERVER_IP, cfg.port)).unwrap();
    let mut sent = 0;
    let mut received = Vec::new();
    let mut closed = false;
    let mut buf = vec![0; 65536];
    world.run(Instant::from_secs(30), |stacks, now| {
        dispatch(&mut stacks[1], now, &mut http);
        while let Some(ev) = stacks[0].next_event() {
            match ev {
                StackEvent::PeerClosed(_) => {
                    let _ = stacks[0].close(conn);
                }
                StackEvent::Closed(..) => closed = true,
                _ => {}
            }
        }
        if sent < request.len() {
            sent += stacks[0].send(conn, &request[sent..]).unwrap_or(0);
        }
        loop {
            let n = stacks[0].recv(conn, &mut buf).unwrap_or(0);
            if n == 0 {
                break;
            }
            received.extend_from_slice(&buf[..n]);
        }
        closed
    });
    assert!(closed, "the server never closed: {:?}", String::from_utf8_lossy(&received));
    // The server closed first and holds TIME_WAIT for a minute or two, but not the session and its buffers.
    assert_eq!(world.stacks[1].state_counts()[8], 1, "the server's side in TIME_WAIT");
    assert_eq!(http.sessions(), 0, "a session held through TIME_WAIT");
    // The server's side goes through TIME_WAIT and must then be gone, unread requests or not.
    world.run(Instant::from_secs(120), |stacks, now| {
        dispatch(&mut stacks[1], now, &mut http);
        stacks[1].slots_in_use() == 0
    });
    assert_eq!(world.stacks[1].slots_in_use(), 0, "the server kept a connection");
    (parse_responses(&received, head_only), http)
}

fn parse_responses(mut bytes: &[u8], head_only: &[bool]) -> Vec<Response> {
    let mut out = Vec::new();
    while !bytes.is_empty() {
        let mut headers = [httparse::EMPTY_HEADER; 16];
        let mut res = httparse::Response::new(&mut headers);
        let httparse::Status::Complete(n) = res.parse(bytes).expect("a valid response") else {
            panic!("a truncated response: {:?}", String::from_utf8_lossy(bytes));
        };
        let get = |name: &str| {
            res.headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case(name))
                .map(|h| String::from_utf8_lossy(h.value).to_string())
                .unwrap_or_default()
        };
        let content_length: usize = get("content-length").parse().unwrap();
        let body_len = if head_only.get(out.len()).copied().unwrap_or(false) { 0 } else { content_length };
        out.push(Response {
            status: res.code.unwrap(),
            connection: get("connection"),
            content_length,
            body: bytes[n..n + body_len].to_vec(),
        });
        bytes = &bytes[n + body_len..];
    }
    out
}

#[test]
fn pipelined_requests_are_answered_in_order_and_connection_close_is_honoured() {
    let cfg = HttpConfig::new(80, b"hello from xtcp\n".to_vec());
    let request = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n\
                    HEAD /a HTTP/1.1\r\nHost: x\r\n\r\n\
                    POST /b HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello\
                    GET /c HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n\
                    GET /never HTTP/1.1\r\nHost: x\r\n\r\n";
    let (responses, http) = exchange(cfg, request, &[false, true, false, false]);
    let summary: Vec<(u16, &str, usize, usize)> =
        responses.iter().map(|r| (r.status, r.connection.as_str(), r.content_length, r.body.len())).collect();
    assert_eq!(
        summary,
        [(200, "keep-alive", 16, 16), (200, "keep-alive", 16, 0), (405, "keep-alive", 0, 0), (200, "close", 16, 16)]
    );
    assert_eq!(responses[0].body, b"hello from xtcp\n");
    assert_eq!((http.stats.ok, http.stats.errors), (3, 1));
}

#[test]
fn http_1_0_closes_after_one_response_unless_keep_alive_is_asked() {
    let cfg = HttpConfig::new(80, b"x".to_vec());
    let (responses, _) = exchange(cfg.clone(), b"GET / HTTP/1.0\r\n\r\nGET / HTTP/1.0\r\n\r\n", &[]);
    assert_eq!(responses.len(), 1);
    assert_eq!(responses[0].connection, "close");
    let (responses, _) = exchange(cfg, b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\nGET / HTTP/1.0\r\n\r\n", &[]);
    assert_eq!(responses.iter().map(|r| r.connection.as_str()).collect::<Vec<_>>(), ["keep-alive", "close"]);
}

#[test]
fn connection_header_tokens_are_matched_whole_and_in_any_case() {
    let cfg = HttpConfig::new(80, b"x".to_vec());
    let connections = |request: &[u8]| {
        let (responses, _) = exchange(cfg.clone(), request, &[]);
        responses.into_iter().map(|r| r.connection).collect::<Vec<_>>()
    };
    // A list of tokens in odd case, keep-alive among them.
    assert_eq!(
        connections(b"GET / HTTP/1.0\r\nConnection: Upgrade , KEEP-Alive\r\n\r\nGET / HTTP/1.0\r\n\r\n"),
        ["keep-alive", "close"]
    );
    // "Close" in capitals closes; a token that merely contains "close" does not.
    assert_eq!(
        connections(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: Close\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n"),
        ["close"]
    );
    assert_eq!(
        connections(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: x-closed\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"),
        ["keep-alive", "close"]
    );
}

#[test]
fn oversized_headers_get_431_and_garbage_gets_400() {
    let cfg = HttpConfig::new(80, b"x".to_vec());
    let mut big = b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: ".to_vec();
    big.extend(std::iter::repeat_n(b'a', 20_000));
    big.extend_from_slice(b"\r\n\r\n");
    let (responses, _) = exchange(cfg.clone(), &big, &[]);
    assert_eq!(responses.iter().map(|r| (r.status, r.connection.as_str())).collect::<Vec<_>>(), [(431, "close")]);
    let (responses, _) = exchange(cfg.clone(), b"\x01\x02 not http\r\n\r\n", &[]);
    assert_eq!(responses.iter().map(|r| (r.status, r.connection.as_str())).collect::<Vec<_>>(), [(400, "close")]);
    // 64 header lines are read; one more is too many.
    let with_headers = |n: usize| {
        let mut req = b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n".to_vec();
        for i in 2..n {
            req.extend_from_slice(format!("X-H{i}: v\r\n").as_bytes());
        }
        req.extend_from_slice(b"\r\n");
        exchange(cfg.clone(), &req, &[]).0.iter().map(|r| r.status).collect::<Vec<_>>()
    };
    assert_eq!((with_headers(64), with_headers(65)), (vec![200], vec![431]));
}

#[test]
fn a_body_over_the_limit_gets_413_and_requests_per_connection_are_bounded() {
    let mut cfg = HttpConfig::new(80, b"x".to_vec());
    cfg.max_body_bytes = 10;
    let (responses, _) =
        exchange(cfg.clone(), b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 11\r\n\r\nhello world", &[]);
    assert_eq!(responses.iter().map(|r| r.status).collect::<Vec<_>>(), [413]);
    cfg.max_requests_per_connection = 2;
    let three = b"GET / HTTP/1.1\r\nHost: x\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n";
    let (responses, _) = exchange(cfg, three, &[]);
    assert_eq!(responses.iter().map(|r| r.connection.as_str()).collect::<Vec<_>>(), ["keep-alive", "close"]);
}

#[test]
fn a_directory_is_served_from_memory_with_404_for_anything_outside_it() {
    let root = std::env::temp_dir().join(format!("xtcp-http-files-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(root.join("docs")).unwrap();
    std::fs::write(root.join("index.html"), b"<p>index</p>").unwrap();
    std::fs::write(root.join("docs/notes.txt"), b"notes").unwrap();
    let files = StaticFiles::load(&root, FileLimits::default()).unwrap();
    std::fs::remove_dir_all(&root).unwrap();
    let mut cfg = HttpConfig::new(80, b"the fixed body is not served".to_vec());
    cfg.files = Some(Arc::new(files));
    let request = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n\
                    HEAD /docs/notes.txt HTTP/1.1\r\nHost: x\r\n\r\n\
                    GET /docs/notes.txt?v=2 HTTP/1.1\r\nHost: x\r\n\r\n\
                    GET /missing HTTP/1.1\r\nHost: x\r\n\r\n\
                    GET /docs/../../etc/passwd HTTP/1.1\r\nHost: x\r\n\r\n\
                    GET /%2e%2e/index.html HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    let (responses, http) = exchange(cfg, request, &[false, true]);
    let summary: Vec<(u16, usize, &[u8])> =
        responses.iter().map(|r| (r.status, r.content_length, r.body.as_slice())).collect();
    assert_eq!(
        summary,
        [
            (200, 12, &b"<p>index</p>"[..]),
            (200, 5, &b""[..]),
            (200, 5, &b"notes"[..]),
            (404, 0, &b""[..]),
            (404, 0, &b""[..]),
            (404, 0, &b""[..]),
        ]
    );
    assert_eq!(responses[5].connection, "close");
    assert_eq!((http.stats.ok, http.stats.errors), (3, 3));
}

#[test]
fn ambiguous_request_heads_get_400_as_rfc_9112_asks() {
    let cfg = HttpConfig::new(80, b"x".to_vec());
    let status = |request: &[u8]| exchange(cfg.clone(), request, &[]).0.iter().map(|r| r.status).collect::<Vec<_>>();
    // Two lengths that disagree: a proxy that reads the other one would see a different next request.
    assert_eq!(status(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nContent-Length: 5\r\n\r\nhello"), [400]);
    assert_eq!(status(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5, 6\r\n\r\nhello!"), [400]);
    // Digits only: no sign, no space inside.
    assert_eq!(status(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: +5\r\n\r\nhello"), [400]);
    assert_eq!(status(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5 5\r\n\r\nhello"), [400]);
    // HTTP/1.1 needs exactly one Host; HTTP/1.0 may go without.
    assert_eq!(status(b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n"), [400]);
    assert_eq!(status(b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\nConnection: close\r\n\r\n"), [400]);
    assert_eq!(status(b"GET / HTTP/1.0\r\n\r\n"), [200]);
    // Repeats of one length are one length; a length too large to hold is too large, not garbage.
    assert_eq!(
        status(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 5, 5\r\nConnection: close\r\n\r\nhello"),
        [405]
    );
    assert_eq!(status(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999999999999999\r\n\r\n"), [413]);
    // Every Connection header counts.
    let (responses, _) = exchange(
        cfg.clone(),
        b"GET / HTTP/1.1\r\nHost: x\r\nConnection: keep-alive\r\nConnection: close\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n",
        &[],
    );
    assert_eq!(responses.iter().map(|r| (r.status, r.connection.as_str())).collect::<Vec<_>>(), [(200, "close")]);
}

/// A client connected to an [`Http`] on the server side of a simulated world, which sends `request` and reads
/// only when told to.
struct Client {
    world: xtcp::engine::sim::SimWorld,
    http: Http,
    conn: xtcp::engine::ConnId,
    received: Vec<u8>,
    closed: Option<xtcp::tcp::CloseReason>,
}

impl Client {
    fn new(cfg: HttpConfig) -> Client {
        let mut world = common::world(common::configs(12), LinkConfig::default(), Faults::default(), 12);
        let mut http = Http::new(cfg.clone());
        let now = world.now();
        http.start(&mut world.stacks[1], now);
        let conn = world.stacks[0].connect(SocketAddrV4::new(common::SERVER_IP, cfg.port)).unwrap();
        Client { world, http, conn, received: Vec::new(), closed: None }
    }

    /// Runs for `secs` of virtual time, sending what is left of `request` and reading only if `read`.
    fn run(&mut self, secs: u64, request: &[u8], sent: &mut usize, read: bool) {
        let (http, conn, received, closed) = (&mut self.http, self.conn, &mut self.received, &mut self.closed);
        let until = self.world.now() + core::time::Duration::from_secs(secs);
        let mut buf = vec![0; 65536];
        while self.world.now() < until {
            let step = self.world.now() + core::time::Duration::from_millis(100);
            self.world.run(step, |stacks, now| {
                dispatch(&mut stacks[1], now, http);
                while let Some(ev) = stacks[0].next_event() {
                    if let StackEvent::Closed(_, reason) = ev {
                        *closed = Some(reason);
                    }
                }
                if *sent < request.len() {
                    *sent += stacks[0].send(conn, &request[*sent..]).unwrap_or(0);
                }
                if read {
                    while let Ok(n @ 1..) = stacks[0].recv(conn, &mut buf) {
                        received.extend_from_slice(&buf[..n]);
                    }
                }
                false
            });
            // Idle in between, as a real loop is: the server's ticks run.
            self.world.pass(step, core::time::Duration::from_millis(100));
        }
    }
}

#[test]
fn a_client_that_never_reads_holds_a_bounded_backlog_of_answers() {
    let body = vec![b'b'; 600];
    let mut cfg = HttpConfig::new(80, body.clone());
    cfg.idle_timeout = None;
    cfg.max_requests_per_connection = 100_000;
    let mut request = Vec::new();
    for _ in 0..40_000 {
        request.extend_from_slice(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    }
    let mut client = Client::new(cfg);
    let mut sent = 0;
    client.run(2, &request, &mut sent, false);
    // Answers stop where our own output bound and the two stacks' buffers are full; the requests wait in the
    // server's receive buffer and then the client's send buffer.
    let answered = client.http.stats.ok;
    let held = client.http.pending_bytes();
    assert!(answered > 0 && answered < 2_000, "{answered} of 40,000 answered to a client that reads none");
    // At most: answers up to the output bound plus one, requests up to the header limit plus one read.
    let bound = (64 * 1024 + 1024) + (8192 + 16 * 1024);
    assert!(held <= bound, "{held} bytes held for one client");
    assert!(sent < request.len(), "the server took every request: no back-pressure ({answered} answered, {held} held)");
    // Once the client reads, every request is answered, in full and in order.
    client.run(10, &request, &mut sent, true);
    assert_eq!((sent, client.http.stats.ok), (request.len(), 40_000));
    let responses = parse_responses(&client.received, &[]);
    assert_eq!(responses.len(), 40_000);
    assert!(responses.iter().all(|r| r.status == 200 && r.body == body));
}

#[test]
fn large_bodies_are_sent_from_where_they_lie_and_arrive_whole() {
    let body: Vec<u8> = (0..3 << 20).map(|i: u32| (i % 251) as u8).collect();
    let mut cfg = HttpConfig::new(80, body.clone());
    cfg.idle_timeout = None;
    let request = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n\
                    HEAD / HTTP/1.1\r\nHost: x\r\n\r\n\
                    GET / HTTP/1.1\r\nHost: x\r\n\r\n\
                    GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    let mut client = Client::new(cfg);
    let mut sent = 0;
    client.run(1, request, &mut sent, false);
    assert!(client.http.pending_bytes() < 64 * 1024, "a body copied into the output");
    client.run(20, request, &mut sent, true);
    let responses = parse_responses(&client.received, &[false, true]);
    let summary: Vec<(u16, usize, bool)> =
        responses.iter().map(|r| (r.status, r.content_length, r.body == body)).collect();
    assert_eq!(summary, [(200, 3 << 20, true), (200, 3 << 20, false), (200, 3 << 20, true), (200, 3 << 20, true)]);
    assert_eq!(responses[3].connection, "close");
}

#[test]
fn connections_that_move_nothing_for_the_idle_timeout_are_closed() {
    let mut cfg = HttpConfig::new(80, b"x".to_vec());
    cfg.idle_timeout = Some(core::time::Duration::from_secs(10));
    // Idle between requests: closed in order.
    let mut client = Client::new(cfg.clone());
    let mut sent = 0;
    let request = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n";
    client.run(8, request, &mut sent, true);
    assert_eq!((client.http.stats.ok, client.http.sessions(), client.closed), (1, 1, None));
    client.run(5, request, &mut sent, true);
    assert_eq!((client.http.sessions(), client.http.stats.idle_closed), (0, 1));
    assert!(client.world.stacks[0].state_counts()[9] == 1, "the client did not see a FIN (CLOSE_WAIT)");
    // Stuck half-way through a request head (slow loris): reset.
    let mut client = Client::new(cfg);
    let mut sent = 0;
    client.run(15, b"GET / HTTP/1.1\r\nHost:", &mut sent, true);
    assert_eq!((client.http.sessions(), client.http.stats.idle_closed), (0, 1));
    assert_eq!(client.closed, Some(xtcp::tcp::CloseReason::Reset));
}
