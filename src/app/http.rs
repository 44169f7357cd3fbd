//! A small HTTP/1.1 server: a fixed body for GET and HEAD on any path, or a directory of static files (held in
//! memory, [`super::files`]; 404 for anything else), keep-alive and pipelining, `Connection: close`, and the errors
//! a server owes (400 bad request, 404 not found, 405 method, 411 length required, 413 body too large, 431 headers
//! too large).
//! Requests are parsed with httparse; each connection's input is bounded, as is the number of requests it may make.

use std::io::Write as _;
use std::sync::Arc;

use super::files::StaticFiles;
use super::{App, Sockets};
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
        }
    }
}

/// What the server counted.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct HttpStats {
    /// Requests answered with 200.
    pub ok: u64,
    /// Requests answered with an error status.
    pub errors: u64,
}

#[derive(Debug, Default)]
struct Session {
    /// Received bytes not yet parsed.
    input: Vec<u8>,
    /// Response bytes the send buffer had no room for yet.
    output: Vec<u8>,
    /// Request-body bytes still to skip.
    skip: usize,
    requests: u32,
    /// Close once `output` is sent.
    closing: bool,
}

/// The HTTP server application.
#[derive(Debug)]
pub struct Http {
    cfg: HttpConfig,
    /// The whole answer to a GET of the fixed body, built once: keep-alive, and closing.
    canned: [Vec<u8>; 2],
    sessions: ConnMap<Session>,
    /// Sessions of closed connections, emptied but keeping their buffers, for the next ones (at most
    /// [`SPARE_SESSIONS`]): a connection per request then costs no allocation here.
    spare: Vec<Session>,
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

impl Http {
    /// A server with `cfg`.
    pub fn new(cfg: HttpConfig) -> Http {
        let canned = [false, true].map(|close| {
            let mut out = Vec::with_capacity(256 + cfg.body.len());
            head(&mut out, 200, "OK", "text/plain", cfg.body.len(), close);
            out.extend_from_slice(&cfg.body);
            out
        });
        Http { cfg, canned, sessions: ConnMap::default(), spare: Vec::new(), stats: HttpStats::default() }
    }

    /// Sessions held: connections accepted and not yet closed by us or gone.
    pub fn sessions(&self) -> usize {
        self.sessions.len()
    }

    fn pump<S: Sockets + ?Sized>(&mut self, stack: &mut S, conn: ConnId) {
        let Some(session) = self.sessions.get_mut(&conn) else {
            // Closed by us, its session let go (see `retire`): what else comes is dropped, so the connection can
            // finish.
            while stack.recv_with(conn, READ_BYTES, &mut |data| data.len()).unwrap_or(0) > 0 {}
            return;
        };
        // Read while there is room to hold what came in (the bound is the header limit plus one read).
        // Requests are taken where they lie in the stack's receive buffer (on xtcp; no copy before this one).
        while session.input.len() < self.cfg.max_header_bytes + READ_BYTES {
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
                    answer(&self.cfg, &self.canned, session, &mut self.stats);
                    n
                })
                .unwrap_or(0);
            if n == 0 {
                break;
            }
        }
        if flush(stack, conn, session) {
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

/// Whether a header value holds `token` as one of its comma-separated elements, ignoring ASCII case (RFC 9110
/// §7.6.1), with no allocation.
fn has_token(value: &[u8], token: &[u8]) -> bool {
    value.split(|&b| b == b',').any(|t| t.trim_ascii().eq_ignore_ascii_case(token))
}

/// The request methods we answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Method {
    Get,
    Head,
    Other,
}

/// Parses and answers every complete request in the session's input.
fn answer(cfg: &HttpConfig, canned: &[Vec<u8>; 2], s: &mut Session, stats: &mut HttpStats) {
    while !s.closing && !s.input.is_empty() && s.skip == 0 {
        // Left uninitialized for httparse to fill: 64 headers are 2 KiB to clear per request otherwise.
        let mut headers = [const { core::mem::MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
        let mut req = httparse::Request::new(&mut []);
        let head_len = match req.parse_with_uninit_headers(&s.input, &mut headers) {
            Ok(httparse::Status::Complete(n)) => n,
            Ok(httparse::Status::Partial) => {
                if s.input.len() > cfg.max_header_bytes {
                    respond(s, 431, "Request Header Fields Too Large", b"", false, true, stats);
                }
                return;
            }
            Err(httparse::Error::TooManyHeaders) => {
                respond(s, 431, "Request Header Fields Too Large", b"", false, true, stats);
                return;
            }
            Err(_) => {
                respond(s, 400, "Bad Request", b"", false, true, stats);
                return;
            }
        };
        if head_len > cfg.max_header_bytes {
            respond(s, 431, "Request Header Fields Too Large", b"", false, true, stats);
            return;
        }
        let version_11 = req.version == Some(1);
        let header = |name: &str| req.headers.iter().find(|h| h.name.eq_ignore_ascii_case(name)).map(|h| h.value);
        let keep_alive = match header("connection") {
            Some(v) if has_token(v, b"close") => false,
            Some(v) if has_token(v, b"keep-alive") => true,
            _ => version_11,
        };
        let length = |v: &[u8]| core::str::from_utf8(v).ok().and_then(|v| v.trim().parse::<usize>().ok());
        let body_len = match header("content-length").map(length) {
            None => 0,
            Some(Some(n)) => n,
            Some(None) => {
                respond(s, 400, "Bad Request", b"", false, true, stats);
                return;
            }
        };
        if header("transfer-encoding").is_some() {
            // Chunked request bodies are not supported: refuse rather than lose sync with the stream.
            respond(s, 411, "Length Required", b"", false, true, stats);
            return;
        }
        let method = match req.method {
            Some("GET") => Method::Get,
            Some("HEAD") => Method::Head,
            _ => Method::Other,
        };
        let files = cfg.files.as_deref();
        let file = files.map(|f| f.get(req.path.unwrap_or("")));
        s.input.drain(..head_len);
        if body_len > cfg.max_body_bytes {
            respond(s, 413, "Content Too Large", b"", false, true, stats);
            return;
        }
        // Skip the request body: what is buffered now, and the rest as it arrives.
        let buffered = body_len.min(s.input.len());
        s.input.drain(..buffered);
        s.skip = body_len - buffered;
        s.requests += 1;
        let last = !keep_alive || s.requests >= cfg.max_requests_per_connection;
        let head_only = method == Method::Head;
        match (method, file) {
            (Method::Get, None) => {
                // The common case: the answer built once.
                stats.ok += 1;
                s.output.extend_from_slice(&canned[usize::from(last)]);
                if last {
                    s.closing = true;
                    s.input.clear();
                }
            }
            (Method::Head, None) => respond(s, 200, "OK", &cfg.body, head_only, last, stats),
            (Method::Get | Method::Head, Some(Some(f))) => {
                respond_typed(s, 200, "OK", f.content_type, &f.body, head_only, last, stats)
            }
            (Method::Get | Method::Head, Some(None)) => respond(s, 404, "Not Found", b"", head_only, last, stats),
            (Method::Other, _) => respond(s, 405, "Method Not Allowed", b"", false, last, stats),
        }
    }
}

fn respond(s: &mut Session, code: u16, reason: &str, body: &[u8], head_only: bool, close: bool, stats: &mut HttpStats) {
    respond_typed(s, code, reason, "text/plain", body, head_only, close, stats)
}

#[allow(clippy::too_many_arguments)]
fn respond_typed(
    s: &mut Session,
    code: u16,
    reason: &str,
    content_type: &str,
    body: &[u8],
    head_only: bool,
    close: bool,
    stats: &mut HttpStats,
) {
    if code == 200 {
        stats.ok += 1;
    } else {
        stats.errors += 1;
    }
    head(&mut s.output, code, reason, content_type, body.len(), close);
    if !head_only {
        s.output.extend_from_slice(body);
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

/// Sends what the send buffer takes; closes once a closing session has sent everything, and then says so.
fn flush<S: Sockets + ?Sized>(stack: &mut S, conn: ConnId, s: &mut Session) -> bool {
    if !s.output.is_empty() {
        let n = stack.send(conn, &s.output).unwrap_or(0);
        s.output.drain(..n);
    }
    if s.output.is_empty() && s.closing {
        let _ = stack.close(conn);
        return true;
    }
    false
}

impl<S: Sockets + ?Sized> App<S> for Http {
    fn start(&mut self, stack: &mut S, _now: Instant) {
        let _ = stack.listen(self.cfg.port);
    }

    fn on_event(&mut self, stack: &mut S, _now: Instant, event: StackEvent) {
        match event {
            StackEvent::Accepted { conn, .. } => {
                let session = self.spare.pop().unwrap_or_default();
                self.sessions.insert(conn, session);
                self.pump(stack, conn);
            }
            StackEvent::Readable(c) | StackEvent::Writable(c) => self.pump(stack, c),
            StackEvent::PeerClosed(c) => {
                self.pump(stack, c);
                if let Some(s) = self.sessions.get_mut(&c) {
                    s.closing = true;
                    if flush(stack, c, s) {
                        self.retire(c);
                    }
                }
            }
            StackEvent::Closed(c, _) => self.retire(c),
            StackEvent::Connected(_) => {}
        }
    }
}
