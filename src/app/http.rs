//! A small HTTP/1.1 server: a fixed body for GET and HEAD on any path, or a directory of static files (held in
//! memory, [`super::files`]; 404 for anything else), keep-alive and pipelining, `Connection: close`, and the errors
//! a server owes (400 bad request, 404 not found, 405 method, 411 length required, 413 body too large, 431 headers
//! too large).
//! Requests are parsed with httparse. What one connection may hold is bounded: its unparsed input, the answers
//! waiting to be sent (no request is parsed past 64 KiB of them; large bodies are sent by reference, not copied),
//! the requests it may make, and the time it may sit without moving a byte.

use core::time::Duration;
use std::io::Write as _;
use std::sync::Arc;

use super::files::StaticFiles;
use super::{has_token, App, Sockets};
use crate::engine::{ConnId, ConnMap, StackEvent};
use crate::time::Instant;

/// Settings of the HTTP server.
#[derive(Debug, Clone)]
pub struct HttpConfig {
    /// The listening port.
    pub port: u16,
    /// The body every GET receives when no `files` are served.
    pub body: Vec<u8>,
    /// Static files to serve instead of `body` (shared read-only by every core's server).
    pub files: Option<Arc<StaticFiles>>,
    /// The largest request head (request line and headers) accepted; larger gets 431.
    pub max_header_bytes: usize,
    /// The largest request body accepted (and skipped); larger gets 413.
    pub max_body_bytes: usize,
    /// Requests one connection may make; the last answer says `Connection: close`.
    pub max_requests_per_connection: u32,
    /// A connection that moves no byte either way for this long is closed: idle between requests, or stalled
    /// half-way through a request head or through reading its answers (slow-loris clients). `None`: never.
    pub idle_timeout: Option<Duration>,
}

impl HttpConfig {
    /// A server on `port` answering with `body`.
    pub fn new(port: u16, body: Vec<u8>) -> HttpConfig {
        HttpConfig {
            port,
            body,
            files: None,
            max_header_bytes: 8192,
            max_body_bytes: 1 << 20,
            max_requests_per_connection: 10_000,
            idle_timeout: Some(DEFAULT_IDLE_TIMEOUT),
        }
    }
}

/// What [`HttpConfig::new`] gives [`HttpConfig::idle_timeout`]: nginx's `client_header_timeout` and a little under
/// its `keepalive_timeout`.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// What the server counted.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct HttpStats {
    /// Requests answered with 200.
    pub ok: u64,
    /// Requests answered with an error status.
    pub errors: u64,
    /// Connections closed for moving nothing for [`HttpConfig::idle_timeout`].
    pub idle_closed: u64,
}

#[derive(Debug, Default)]
struct Session {
    /// Received bytes not yet parsed.
    input: Vec<u8>,
    /// Response bytes not yet sent: `output[sent..]`, then what is left of `body`.
    output: Vec<u8>,
    sent: usize,
    /// A body too large to copy into `output`, sent from where it lies, and the bytes of it already sent.
    body: Option<(Arc<[u8]>, usize)>,
    /// Request-body bytes still to skip.
    skip: usize,
    requests: u32,
    /// Close once the output is sent.
    closing: bool,
    /// When a byte last came in or went out (or the connection was accepted).
    active_at: Instant,
}

impl Session {
    /// True while the answers waiting to be sent are few enough to parse the next request: a client that sends
    /// requests and never reads the answers holds at most [`OUTPUT_BYTES`] (plus one answer) of ours, and the rest
    /// of its requests wait in the stack's receive buffer, whose window then closes on it.
    fn has_room(&self) -> bool {
        self.body.is_none() && self.output.len() - self.sent < OUTPUT_BYTES
    }

    /// True when every answer is sent (to the send buffer).
    fn sent_all(&self) -> bool {
        self.body.is_none() && self.sent == self.output.len()
    }

    /// Appends an answer's body: copied after its head when small, else kept by reference.
    fn push_body(&mut self, body: &Arc<[u8]>) {
        if body.len() <= INLINE_BODY_BYTES {
            self.output.extend_from_slice(body);
        } else {
            self.body = Some((Arc::clone(body), 0));
        }
    }
}

/// The HTTP server application.
#[derive(Debug)]
pub struct Http {
    cfg: HttpConfig,
    /// The fixed body, shared by the answers too large to copy it.
    body: Arc<[u8]>,
    /// The whole answer to a GET of the fixed body, built once (the head alone when the body is too large to copy
    /// into each answer): keep-alive, and closing.
    canned: [Vec<u8>; 2],
    sessions: ConnMap<Session>,
    /// Sessions of closed connections, emptied but keeping their buffers, for the next ones (at most
    /// [`SPARE_SESSIONS`]): a connection per request then costs no allocation here.
    spare: Vec<Session>,
    /// When to look for idle sessions next.
    sweep_at: Instant,
    /// The idle sessions found by a sweep (kept for its capacity).
    idle: Vec<ConnId>,
    /// Counters.
    pub stats: HttpStats,
}

const MAX_HEADERS: usize = 64;
/// Sessions kept for reuse.
const SPARE_SESSIONS: usize = 1024;
/// A session's buffers larger than this are not kept for reuse.
const SPARE_BUFFER_BYTES: usize = 64 * 1024;
/// The most one read takes.
const READ_BYTES: usize = 16 * 1024;
/// Answers waiting to be sent past which no further request is parsed (see [`Session::has_room`]).
const OUTPUT_BYTES: usize = 64 * 1024;
/// Bodies up to this size are copied into the session's output; larger ones are sent from where they lie.
const INLINE_BODY_BYTES: usize = 16 * 1024;
/// How often the sessions are looked over for idle ones.
const SWEEP_EVERY: Duration = Duration::from_secs(1);

impl Http {
    /// A server with `cfg`.
    pub fn new(mut cfg: HttpConfig) -> Http {
        // Held once, here (the config's copy is let go).
        let body: Arc<[u8]> = std::mem::take(&mut cfg.body).into();
        let canned = [false, true].map(|close| {
            let mut out = Vec::new();
            head(&mut out, 200, "OK", "text/plain", body.len(), close);
            if body.len() <= INLINE_BODY_BYTES {
                out.extend_from_slice(&body);
            }
            out
        });
        Http {
            cfg,
            body,
            canned,
            sessions: ConnMap::default(),
            spare: Vec::new(),
            sweep_at: Instant::ZERO,
            idle: Vec::new(),
            stats: HttpStats::default(),
        }
    }

    /// Sessions held: connections accepted and not yet closed by us or gone.
    pub fn sessions(&self) -> usize {
        self.sessions.len()
    }

    /// Bytes the sessions hold: requests read and not yet parsed, answers not yet sent (bodies sent by reference
    /// not counted).
    pub fn pending_bytes(&self) -> usize {
        self.sessions.values().map(|s| s.input.len() + s.output.len() - s.sent).sum()
    }

    /// Reads, answers and sends on `conn` as far as the buffers both ways allow.
    fn pump<S: Sockets + ?Sized>(&mut self, stack: &mut S, conn: ConnId, now: Instant) {
        let Some(session) = self.sessions.get_mut(&conn) else {
            // Closed by us, its session let go (see `retire`): what else comes is dropped, so the connection can
            // finish.
            stack.drop_received(conn);
            return;
        };
        // Read while there is room to hold what comes in (the header limit plus one read) and to answer it.
        let input_bytes = self.cfg.max_header_bytes.saturating_add(READ_BYTES);
        let server = Server { cfg: &self.cfg, body: &self.body, canned: &self.canned };
        loop {
            let mut moved = 0;
            while session.input.len() < input_bytes && session.has_room() {
                // Requests are taken where they lie in the stack's receive buffer (on xtcp; no copy before this
                // one).
                let n = stack
                    .recv_with(conn, READ_BYTES, &mut |mut data| {
                        let n = data.len();
                        if session.closing {
                            // Answered for the last time: what else comes is dropped, so the connection can finish.
                            return n;
                        }
                        let skipped = session.skip.min(data.len());
                        session.skip -= skipped;
                        data = &data[skipped..];
                        session.input.extend_from_slice(data);
                        server.answer(session, &mut self.stats);
                        n
                    })
                    .unwrap_or(0);
                if n == 0 {
                    break;
                }
                moved += n;
            }
            // Requests read earlier that waited for the answers before them to go out.
            server.answer(session, &mut self.stats);
            let held_back = !session.has_room();
            let (sent, done) = flush(stack, conn, session);
            if moved + sent > 0 {
                session.active_at = now;
            }
            if done {
                self.retire(conn);
                return;
            }
            // Sending made room for answers held back: parse on (every turn sends something, or stops).
            if !held_back || sent == 0 {
                return;
            }
        }
    }

    /// Closes the connections that moved nothing for the idle timeout: in order when nothing is half-way (idle
    /// between requests), else with a reset (a request head or its answers stuck half-way).
    fn sweep<S: Sockets + ?Sized>(&mut self, stack: &mut S, now: Instant) {
        let Some(timeout) = self.cfg.idle_timeout else { return };
        if now < self.sweep_at {
            return;
        }
        self.sweep_at = now + SWEEP_EVERY;
        self.idle.clear();
        self.idle.extend(
            self.sessions.iter().filter(|(_, s)| now.saturating_since(s.active_at) >= timeout).map(|(&c, _)| c),
        );
        for i in 0..self.idle.len() {
            let conn = self.idle[i];
            let quiet = self.sessions.get(&conn).is_some_and(|s| s.input.is_empty() && s.sent_all());
            if quiet {
                let _ = stack.close(conn);
            } else {
                let _ = stack.abort(conn);
            }
            self.stats.idle_closed += 1;
            self.retire(conn);
        }
    }

    /// Lets the session of a connection we have closed go at once rather than at its `Closed` event, which comes
    /// only when the connection is gone — after TIME_WAIT, when we closed first — so that the sessions held, and
    /// the buffers they keep, stay as few as the connections open; its buffers go to the spare sessions.
    fn retire(&mut self, conn: ConnId) {
        let Some(mut s) = self.sessions.remove(&conn) else { return };
        if self.spare.len() < SPARE_SESSIONS && s.input.capacity().max(s.output.capacity()) <= SPARE_BUFFER_BYTES {
            s.input.clear();
            s.output.clear();
            self.spare.push(Session { input: s.input, output: s.output, ..Session::default() });
        }
    }
}

/// What answering needs of the server, borrowed apart from its sessions.
struct Server<'a> {
    cfg: &'a HttpConfig,
    body: &'a Arc<[u8]>,
    canned: &'a [Vec<u8>; 2],
}

/// The request methods we answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Method {
    Get,
    Head,
    Other,
}

/// What a request's headers say, checked as RFC 9112 asks.
struct RequestHead {
    keep_alive: bool,
    body_len: usize,
    /// A `Transfer-Encoding` was given (we take no chunked request bodies).
    transfer_encoding: bool,
}

impl RequestHead {
    /// Reads the headers; `None` for a request owed a 400 (RFC 9112 §3.2, §6.3): an HTTP/1.1 request without
    /// exactly one `Host`, or a `Content-Length` that is not digits or disagrees with another — the ambiguity
    /// request smuggling lives on. Every `Connection` header counts.
    fn read(req: &httparse::Request<'_, '_>) -> Option<RequestHead> {
        let (mut close, mut keep_alive, mut hosts, mut length, mut transfer_encoding) = (false, false, 0, None, false);
        for h in req.headers.iter() {
            if h.name.eq_ignore_ascii_case("connection") {
                close |= has_token(h.value, b"close");
                keep_alive |= has_token(h.value, b"keep-alive");
            } else if h.name.eq_ignore_ascii_case("host") {
                hosts += 1;
            } else if h.name.eq_ignore_ascii_case("content-length") {
                // A list of equal values may stand for one (RFC 9110 §8.6).
                for v in h.value.split(|&b| b == b',') {
                    let n = decimal(v.trim_ascii())?;
                    if length.is_some_and(|l| l != n) {
                        return None;
                    }
                    length = Some(n);
                }
            } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
                transfer_encoding = true;
            }
        }
        let version_11 = req.version == Some(1);
        if hosts > 1 || (version_11 && hosts == 0) {
            return None;
        }
        Some(RequestHead {
            keep_alive: !close && (keep_alive || version_11),
            body_len: length.unwrap_or(0),
            transfer_encoding,
        })
    }
}

/// A `Content-Length` value: ASCII digits only (no sign, no space), saturating rather than wrapping, so that a
/// huge one is merely too large (413).
fn decimal(v: &[u8]) -> Option<usize> {
    if v.is_empty() || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(v.iter().fold(0usize, |n, &d| n.saturating_mul(10).saturating_add(usize::from(d - b'0'))))
}

impl Server<'_> {
    /// Parses and answers the complete requests in the session's input while there is room for the answers.
    fn answer(&self, s: &mut Session, stats: &mut HttpStats) {
        while !s.closing && !s.input.is_empty() && s.skip == 0 && s.has_room() {
            if s.sent > 0 {
                // Less than OUTPUT_BYTES is left to send: moved to the front, the output stays within its bound.
                s.output.drain(..s.sent);
                s.sent = 0;
            }
            // Left uninitialized for httparse to fill: 64 headers are 2 KiB to clear per request otherwise.
            let mut headers = [const { core::mem::MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
            let mut req = httparse::Request::new(&mut []);
            let head_len = match req.parse_with_uninit_headers(&s.input, &mut headers) {
                Ok(httparse::Status::Complete(n)) => n,
                Ok(httparse::Status::Partial) => {
                    if s.input.len() > self.cfg.max_header_bytes {
                        respond(s, stats, 431, "Request Header Fields Too Large", None, false, true);
                    }
                    return;
                }
                Err(httparse::Error::TooManyHeaders) => {
                    respond(s, stats, 431, "Request Header Fields Too Large", None, false, true);
                    return;
                }
                Err(_) => {
                    respond(s, stats, 400, "Bad Request", None, false, true);
                    return;
                }
            };
            if head_len > self.cfg.max_header_bytes {
                respond(s, stats, 431, "Request Header Fields Too Large", None, false, true);
                return;
            }
            let Some(h) = RequestHead::read(&req) else {
                respond(s, stats, 400, "Bad Request", None, false, true);
                return;
            };
            if h.transfer_encoding {
                // Chunked request bodies are not supported: refuse rather than lose sync with the stream.
                respond(s, stats, 411, "Length Required", None, false, true);
                return;
            }
            let method = match req.method {
                Some("GET") => Method::Get,
                Some("HEAD") => Method::Head,
                _ => Method::Other,
            };
            let files = self.cfg.files.as_deref();
            let file = files.map(|f| f.get(req.path.unwrap_or("")));
            s.input.drain(..head_len);
            if h.body_len > self.cfg.max_body_bytes {
                respond(s, stats, 413, "Content Too Large", None, false, true);
                return;
            }
            // Skip the request body: what is buffered now, and the rest as it arrives.
            let buffered = h.body_len.min(s.input.len());
            s.input.drain(..buffered);
            s.skip = h.body_len - buffered;
            s.requests += 1;
            let last = !h.keep_alive || s.requests >= self.cfg.max_requests_per_connection;
            let head_only = method == Method::Head;
            match (method, file) {
                (Method::Get, None) => {
                    // The common case: the answer built once.
                    stats.ok += 1;
                    s.output.extend_from_slice(&self.canned[usize::from(last)]);
                    if self.body.len() > INLINE_BODY_BYTES {
                        s.push_body(self.body);
                    }
                    if last {
                        s.closing = true;
                        s.input.clear();
                    }
                }
                (Method::Head, None) => respond(s, stats, 200, "OK", Some(("text/plain", self.body)), true, last),
                (Method::Get | Method::Head, Some(Some(f))) => {
                    respond(s, stats, 200, "OK", Some((f.content_type, &f.body)), head_only, last)
                }
                (Method::Get | Method::Head, Some(None)) => respond(s, stats, 404, "Not Found", None, head_only, last),
                (Method::Other, _) => respond(s, stats, 405, "Method Not Allowed", None, false, last),
            }
        }
    }
}

/// Appends an answer: its head, then its body (of this content type) unless `head_only`; with `close`, the last.
fn respond(
    s: &mut Session,
    stats: &mut HttpStats,
    code: u16,
    reason: &str,
    body: Option<(&str, &Arc<[u8]>)>,
    head_only: bool,
    close: bool,
) {
    if code == 200 {
        stats.ok += 1;
    } else {
        stats.errors += 1;
    }
    let (content_type, len) = body.map_or(("text/plain", 0), |(t, b)| (t, b.len()));
    head(&mut s.output, code, reason, content_type, len, close);
    if let Some((_, body)) = body.filter(|_| !head_only) {
        s.push_body(body);
    }
    if close {
        s.closing = true;
        s.input.clear();
    }
}

/// Appends a response head to `out` (written in place: no allocation beyond `out`'s growth).
fn head(out: &mut Vec<u8>, code: u16, reason: &str, content_type: &str, body_len: usize, close: bool) {
    let connection = if close { "close" } else { "keep-alive" };
    let allow = if code == 405 { "Allow: GET, HEAD\r\n" } else { "" };
    let _ = write!(
        out,
        "HTTP/1.1 {code} {reason}\r\nServer: xtcp\r\nContent-Type: {content_type}\r\nContent-Length: {body_len}\r\n\
         {allow}Connection: {connection}\r\n\r\n"
    );
}

/// Sends what the send buffer takes, the output and then the body; once a closing session has sent everything,
/// closes. Returns the bytes sent and whether it closed.
fn flush<S: Sockets + ?Sized>(stack: &mut S, conn: ConnId, s: &mut Session) -> (usize, bool) {
    let mut sent = 0;
    if s.sent < s.output.len() {
        let n = stack.send(conn, &s.output[s.sent..]).unwrap_or(0);
        s.sent += n;
        sent += n;
        if s.sent == s.output.len() {
            s.output.clear();
            s.sent = 0;
        }
    }
    if s.output.is_empty() {
        if let Some((body, at)) = &mut s.body {
            let n = stack.send(conn, &body[*at..]).unwrap_or(0);
            *at += n;
            sent += n;
            if *at == body.len() {
                s.body = None;
            }
        }
    }
    if s.closing && s.sent_all() {
        let _ = stack.close(conn);
        return (sent, true);
    }
    (sent, false)
}

impl<S: Sockets + ?Sized> App<S> for Http {
    fn start(&mut self, stack: &mut S, now: Instant) {
        let _ = stack.listen(self.cfg.port);
        self.sweep_at = now + SWEEP_EVERY;
    }

    fn on_event(&mut self, stack: &mut S, now: Instant, event: StackEvent) {
        match event {
            StackEvent::Accepted { conn, .. } => {
                let session = Session { active_at: now, ..self.spare.pop().unwrap_or_default() };
                self.sessions.insert(conn, session);
                self.pump(stack, conn, now);
            }
            StackEvent::Readable(c) | StackEvent::Writable(c) => self.pump(stack, c, now),
            StackEvent::PeerClosed(c) => {
                self.pump(stack, c, now);
                if let Some(s) = self.sessions.get_mut(&c) {
                    s.closing = true;
                    if flush(stack, c, s).1 {
                        self.retire(c);
                    }
                }
            }
            StackEvent::Closed(c, _) => self.retire(c),
            StackEvent::Connected(_) => {}
        }
    }

    fn on_tick(&mut self, stack: &mut S, now: Instant) {
        self.sweep(stack, now);
    }
}
