//! The load generator behind `xtcp load`: many connections sending echo messages or HTTP requests to a server,
//! and a latency histogram of the answers.
//!
//! [`Load`] acts only through [`Sockets`], so the same workload runs on xtcp's stack and on kernel sockets. Two
//! ways to offer load:
//! - **closed loop** (`rate_per_sec: None`): every connection keeps `pipeline_depth` requests outstanding and sends
//!   the next as soon as one is answered;
//! - **open loop** (`rate_per_sec: Some(r)`): requests are scheduled at fixed intervals of `1/r` seconds across all
//!   connections, and latency is measured from the *scheduled* send time, not the actual one. This is wrk2's
//!   coordinated-omission correction: when the server stalls, the requests that should have gone out meanwhile
//!   wait, and their wait shows in the percentiles instead of vanishing.
//!
//! Latencies go into an HDR histogram (µs, 1 µs to 60 s, 3 significant digits). [`Report`] carries the histogram's
//! recorded buckets, so reports of several cores merge into true percentiles rather than averages of percentiles.
//!
//! Time comes only from the `now` the driver passes. In open loop the load must also be woken when its next
//! request is due: drivers that sleep ask [`Load::poll_at`].

use core::time::Duration;
use std::collections::VecDeque;
use std::fmt::Write as _;
use std::net::SocketAddrV4;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use super::{App, Sockets};
use crate::engine::{ConnId, ConnMap, StackEvent};
use crate::tcp::CloseReason;
use crate::time::Instant;

/// The most connections one [`Load`] keeps open (the stack's own table limit, `--max-connections`, bites first
/// unless raised).
pub const CONNECTIONS_MAX: u32 = 1 << 22;
/// The most requests one connection keeps outstanding.
pub const PIPELINE_DEPTH_MAX: u32 = 1024;
/// The largest echo message.
pub const MESSAGE_BYTES_MAX: u64 = 16 << 20;
/// The largest one-way transfer (`LoadMode::Send`), bytes: nothing is held for it, the pattern is sent in chunks.
pub const SEND_BYTES_MAX: u64 = 1 << 40;
/// The largest HTTP request head we build (request line and headers).
pub const REQUEST_BYTES_MAX: usize = 16 * 1024;
/// The largest HTTP response head we accept; a longer one is a bad response.
pub const RESPONSE_HEAD_BYTES_MAX: usize = 64 * 1024;
/// The most requests one run measures (`LoadLimit::Requests`).
pub const REQUESTS_MAX: u64 = u64::MAX / 2;
/// The highest open-loop rate, requests per second.
pub const RATE_PER_SEC_MAX: u64 = 100_000_000;
/// The longest latency the histogram tracks, in µs (60 s); longer ones are recorded as this.
pub const LATENCY_US_MAX: u64 = 60_000_000;
/// Significant decimal digits of the latency histogram.
pub const LATENCY_SIGFIG: u8 = 3;

/// Bytes read from a connection per `recv` call.
const RECV_CHUNK_BYTES: usize = 16 * 1024;
/// Bytes offered to `send` per call for echo messages.
const SEND_CHUNK_BYTES: usize = 16 * 1024;
// The echo check compares a whole read against the pattern buffer, which is one period plus a send chunk long.
const _: () = assert!(RECV_CHUNK_BYTES <= SEND_CHUNK_BYTES);
/// The echo pattern's period: byte `p` of a connection's stream is `p % 251` (a prime, so that messages of any
/// power-of-two length differ from each other).
const PATTERN_PERIOD: usize = 251;
/// Held connections (`hold`) in their handshake at once: the rest wait their turn, so that a million of them do
/// not all send their SYN in one burst.
const HOLD_OPENING_MAX: usize = 512;
/// Finished connections' state kept for reuse.
const SPARE_CONNS: usize = 1024;
/// A connection's input buffer larger than this is not kept for reuse.
const SPARE_INPUT_BYTES: usize = 64 * 1024;
/// Connections we closed and wait on for the peer's FIN, beyond the live ones; past this, closes become aborts.
const CLOSING_EXTRA_MAX: usize = 4096;
/// The longest wait for the peer's FIN after we closed before aborting.
const CLOSE_WAIT_MAX: Duration = Duration::from_secs(5);

/// What each request is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LoadMode {
    /// Send `message_bytes` of a recognizable pattern; the request completes when as many bytes came back, each
    /// checked.
    Echo {
        /// Bytes per message.
        message_bytes: u64,
    },
    /// One way: send `message_bytes` of the pattern on a new connection and close it; the request completes when
    /// the server (a discard server, `xtcp echo --discard`) closes in turn, having read it all. Bulk transfer.
    Send {
        /// Bytes per connection.
        message_bytes: u64,
    },
    /// An HTTP/1.1 request; it completes at the end of the response body.
    Http {
        /// The method, e.g. `GET` (a `HEAD` response has no body).
        method: String,
        /// The request target, e.g. `/`.
        path: String,
        /// The `Host` header.
        host: String,
        /// More headers, as (name, value).
        headers: Vec<(String, String)>,
        /// Reuse connections (`Connection: keep-alive`, pipelining allowed); false opens a new connection per
        /// request, which measures connections per second.
        keep_alive: bool,
    },
}

/// When the measured part of a run ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LoadLimit {
    /// Issue requests for this long after the warm-up.
    Duration {
        /// Milliseconds.
        duration_ms: u64,
    },
    /// Issue this many measured requests after the warm-up.
    Requests {
        /// Requests.
        requests: u64,
    },
}

/// Settings of a load run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoadConfig {
    /// The server.
    pub target: SocketAddrV4,
    /// Echo messages or HTTP requests.
    pub mode: LoadMode,
    /// Connections kept open (with `keep_alive: false`, connections in use at once).
    pub connections: u32,
    /// Requests each connection keeps outstanding (pipelining); 1 waits for each answer. In open loop, the most a
    /// connection takes before scheduled requests wait for a free one.
    pub pipeline_depth: u32,
    /// When the run ends.
    pub limit: LoadLimit,
    /// Time before measuring starts: requests scheduled in it are answered but counted apart.
    pub warmup_ms: u64,
    /// `None`: closed loop. `Some(r)`: open loop at `r` requests per second in total, latency measured from each
    /// request's scheduled time.
    pub rate_per_sec: Option<u64>,
    /// A request not answered this long after it was handed to its connection is a timeout; the connection is
    /// aborted and replaced. A one-way transfer (`LoadMode::Send`) times out this long after its last progress
    /// instead (bytes taken by the stack, which makes room as they are acknowledged), so that a long transfer that
    /// keeps moving is not cut.
    pub request_timeout_ms: u64,
    /// How many times connections lost to errors are replaced, in total; past it they are not.
    pub reconnects_max: u64,
    /// Connections opened first and then held idle (no requests) while the load runs on `connections`: what many
    /// open connections cost, in memory and in the rate of the busy ones. The load (and its warm-up) starts once
    /// they are all open; they are reset when it ends.
    #[serde(default)]
    pub hold: u32,
}

impl LoadConfig {
    /// A closed-loop echo run: one connection, 64-byte messages, depth 1, 1000 requests, no warm-up, 10 s timeout,
    /// 100 reconnects.
    pub fn new(target: SocketAddrV4) -> LoadConfig {
        LoadConfig {
            target,
            mode: LoadMode::Echo { message_bytes: 64 },
            connections: 1,
            pipeline_depth: 1,
            limit: LoadLimit::Requests { requests: 1000 },
            warmup_ms: 0,
            rate_per_sec: None,
            request_timeout_ms: 10_000,
            reconnects_max: 100,
            hold: 0,
        }
    }

    /// HTTP `GET path` with `Host: host`, keep-alive or not, no extra headers.
    pub fn http_get(path: &str, host: &str, keep_alive: bool) -> LoadMode {
        LoadMode::Http { method: "GET".into(), path: path.into(), host: host.into(), headers: Vec::new(), keep_alive }
    }
}

/// A configuration [`Load::new`] refuses.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LoadError {
    /// A number outside its limits: the message says the least allowed if it is below, the most if above.
    #[error("{}", out_of_range(name, *value, *min, *max, unit))]
    OutOfRange {
        /// The setting, named by the `xtcp load` flag that sets it (`--duration` for `LoadLimit::Duration`).
        name: &'static str,
        /// The unit of the numbers, as written after them (`ms`, ` bytes`), or nothing.
        unit: &'static str,
        /// Its value.
        value: u64,
        /// The smallest allowed.
        min: u64,
        /// The largest allowed.
        max: u64,
    },
    /// An HTTP method, path, host or header that would not make a valid request.
    #[error("invalid HTTP request: {0}")]
    BadRequest(String),
}

/// Errors by kind. Connection errors count once per connection; the requests they took with them count in
/// [`Report::failed`].
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorCounts {
    /// Connection refused (RST to our SYN).
    pub refused: u64,
    /// Connection reset by the peer.
    pub reset: u64,
    /// A request unanswered within the timeout, or the connection timed out in TCP.
    pub timeout: u64,
    /// An answer that was not what we asked for: wrong echo bytes, an unparsable or non-2xx HTTP response.
    pub bad_response: u64,
    /// `connect` failed at once (no free port, table full).
    pub connect: u64,
    /// The peer closed with requests outstanding (also those pipelined past an answer saying
    /// `Connection: close`).
    pub closed: u64,
}

impl ErrorCounts {
    /// All errors.
    pub fn total(&self) -> u64 {
        self.refused + self.reset + self.timeout + self.bad_response + self.connect + self.closed
    }

    fn add(&mut self, o: &ErrorCounts) {
        self.refused += o.refused;
        self.reset += o.reset;
        self.timeout += o.timeout;
        self.bad_response += o.bad_response;
        self.connect += o.connect;
        self.closed += o.closed;
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ErrorKind {
    Refused,
    Reset,
    Timeout,
    BadResponse,
    Connect,
    Closed,
}

/// Latency percentiles, in µs.
#[derive(Debug, Default, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LatencySummary {
    /// Latencies recorded.
    pub count: u64,
    /// Smallest.
    pub min_us: u64,
    /// Median.
    pub p50_us: u64,
    /// 90th percentile.
    pub p90_us: u64,
    /// 99th percentile.
    pub p99_us: u64,
    /// 99.9th percentile.
    pub p999_us: u64,
    /// Largest.
    pub max_us: u64,
    /// Mean.
    pub mean_us: f64,
}

impl LatencySummary {
    /// The summary of a histogram.
    pub fn of(h: &Histogram<u64>) -> LatencySummary {
        if h.is_empty() {
            return LatencySummary::default();
        }
        LatencySummary {
            count: h.len(),
            min_us: h.min(),
            p50_us: h.value_at_quantile(0.5),
            p90_us: h.value_at_quantile(0.9),
            p99_us: h.value_at_quantile(0.99),
            p999_us: h.value_at_quantile(0.999),
            max_us: h.max(),
            mean_us: h.mean(),
        }
    }
}

/// An empty latency histogram: µs, 1 µs to 60 s, 3 significant digits.
pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, LATENCY_US_MAX, LATENCY_SIGFIG).expect("constant histogram bounds are valid")
}

/// What a run measured. Serializes to JSON with serde; [`Report::merge`] adds the reports of several cores.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// Requests answered correctly after the warm-up (each one's latency is in the histogram).
    pub completed: u64,
    /// Requests after the warm-up that got no correct answer: bad responses, and those lost with their
    /// connection.
    pub failed: u64,
    /// Errors after the warm-up, by kind.
    pub errors: ErrorCounts,
    /// Requests answered correctly during the warm-up.
    pub warmup_completed: u64,
    /// Errors during the warm-up.
    pub warmup_errors: u64,
    /// Connections opened (`connect` accepted), warm-up included.
    pub connections_opened: u64,
    /// Bytes handed to the stack, warm-up included.
    pub bytes_sent: u64,
    /// Bytes read from the stack, warm-up included.
    pub bytes_received: u64,
    /// The measured time: from the end of the warm-up to the last answer (or the end of the duration).
    pub elapsed_us: u64,
    /// `completed` over `elapsed_us`.
    pub requests_per_sec: f64,
    /// Latency percentiles of the completed requests.
    pub latency: LatencySummary,
    /// Held connections (`hold`) open when the measured load started.
    #[serde(default)]
    pub held: u64,
    /// Held connections lost: not opened, or closed or reset by the peer while held.
    #[serde(default)]
    pub held_lost: u64,
    /// How long opening the held connections took, µs.
    #[serde(default)]
    pub hold_open_us: u64,
    /// The histogram's recorded buckets as (value µs, count): what [`Report::merge`] and [`Report::histogram`]
    /// rebuild the histogram from.
    pub latency_buckets: Vec<(u64, u64)>,
}

impl Report {
    /// A report of the given counters and histogram (`latency` and `latency_buckets` come from `histogram`).
    fn with_histogram(mut self, histogram: &Histogram<u64>) -> Report {
        self.latency = LatencySummary::of(histogram);
        self.latency_buckets = histogram.iter_recorded().map(|v| (v.value_iterated_to(), v.count_at_value())).collect();
        self.requests_per_sec = rate(self.completed, self.elapsed_us);
        self
    }

    /// The latency histogram, rebuilt from the buckets (same percentiles as the one recorded).
    pub fn histogram(&self) -> Histogram<u64> {
        let mut h = new_histogram();
        for &(value_us, count) in &self.latency_buckets {
            h.saturating_record_n(value_us, count);
        }
        h
    }

    /// Adds `other` (another core's report of the same run): counts sum, the histograms merge, elapsed is the
    /// longer of the two (the cores ran side by side), and the rate is the total over it.
    pub fn merge(&mut self, other: &Report) {
        let mut h = self.histogram();
        h.add(other.histogram()).expect("histograms of the same bounds add");
        self.completed += other.completed;
        self.failed += other.failed;
        self.errors.add(&other.errors);
        self.warmup_completed += other.warmup_completed;
        self.warmup_errors += other.warmup_errors;
        self.connections_opened += other.connections_opened;
        self.bytes_sent += other.bytes_sent;
        self.bytes_received += other.bytes_received;
        self.elapsed_us = self.elapsed_us.max(other.elapsed_us);
        self.held += other.held;
        self.held_lost += other.held_lost;
        self.hold_open_us = self.hold_open_us.max(other.hold_open_us);
        *self = self.clone().with_histogram(&h);
    }

    /// The report as pretty JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("a report serializes")
    }

    /// A short human summary.
    pub fn to_text(&self) -> String {
        let l = &self.latency;
        let mut s = String::new();
        let secs = self.elapsed_us as f64 / 1e6;
        let _ = writeln!(s, "{} requests in {secs:.3} s, {:.1} requests/s", self.completed, self.requests_per_sec);
        let _ = writeln!(
            s,
            "latency µs: p50 {} p90 {} p99 {} p99.9 {} max {} mean {:.1}",
            l.p50_us, l.p90_us, l.p99_us, l.p999_us, l.max_us, l.mean_us
        );
        let e = &self.errors;
        let _ = writeln!(
            s,
            "errors: {} (refused {}, reset {}, timeout {}, bad response {}, connect {}, closed {}); {} requests failed",
            e.total(),
            e.refused,
            e.reset,
            e.timeout,
            e.bad_response,
            e.connect,
            e.closed,
            self.failed
        );
        let _ = writeln!(
            s,
            "{} connections opened, {} bytes sent, {} received; warm-up: {} requests, {} errors",
            self.connections_opened, self.bytes_sent, self.bytes_received, self.warmup_completed, self.warmup_errors
        );
        if self.held + self.held_lost > 0 {
            let _ = writeln!(
                s,
                "held: {} connections idle throughout (opened in {:.3} s), {} lost",
                self.held,
                self.hold_open_us as f64 / 1e6,
                self.held_lost
            );
        }
        s
    }
}

fn rate(count: u64, elapsed_us: u64) -> f64 {
    if elapsed_us == 0 {
        0.0
    } else {
        count as f64 * 1e6 / elapsed_us as f64
    }
}

/// A request handed to a connection, not yet answered.
#[derive(Debug, Clone, Copy)]
struct Request {
    /// When it should have been sent (open loop) or was issued (closed loop): latency counts from here.
    scheduled: Instant,
    /// When it was handed to the connection: the timeout counts from here (one-way transfers: from the later of
    /// this and the connection's last progress).
    issued: Instant,
    /// After the warm-up.
    measured: bool,
}

/// The HTTP response parser's place in the stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum HttpRx {
    /// Reading a response head.
    Head,
    /// Reading `left` body bytes of a response.
    Body { left: u64, status: u16, close: bool },
    /// Reading a body that ends with the connection.
    UntilClose { status: u16 },
}

/// A response fully read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct HttpDone {
    status: u16,
    close: bool,
}

#[derive(Debug)]
struct Conn {
    /// When `connect` was called: the handshake times out like a request.
    opened_at: Instant,
    /// Connected (handshake done).
    open: bool,
    /// Requests sent or queued, oldest first (at most `pipeline_depth`).
    outstanding: VecDeque<Request>,
    /// Bytes of requests queued on this connection (a stream position).
    queued_bytes: u64,
    /// Bytes handed to the stack.
    sent_bytes: u64,
    /// Echo: bytes received so far (a stream position, checked against the pattern).
    received_bytes: u64,
    /// HTTP: unparsed input.
    input: Vec<u8>,
    http: HttpRx,
    /// No more requests go on this connection (keep-alive off, or the server said `Connection: close`).
    last_request_sent: bool,
    /// Listed in `Load::idle`.
    in_idle: bool,
    /// Send: everything went and we closed our side.
    fin_sent: bool,
    /// When the stack last took bytes of ours (room it made as the peer acknowledged earlier ones).
    progressed_at: Instant,
}

impl Conn {
    fn new(opened_at: Instant) -> Conn {
        Conn {
            opened_at,
            open: false,
            outstanding: VecDeque::new(),
            queued_bytes: 0,
            sent_bytes: 0,
            received_bytes: 0,
            input: Vec::new(),
            http: HttpRx::Head,
            last_request_sent: false,
            in_idle: false,
            fin_sent: false,
            progressed_at: opened_at,
        }
    }
}

/// A connection we closed, waiting for the peer's FIN.
#[derive(Debug, Clone, Copy)]
struct Closing {
    deadline: Instant,
}

/// The load generator application. See the module documentation.
#[derive(Debug)]
pub struct Load {
    cfg: LoadConfig,
    /// HTTP: the request bytes. Echo: the pattern, `PATTERN_PERIOD + SEND_CHUNK_BYTES` long.
    template: Vec<u8>,
    /// Bytes per request on the wire.
    request_bytes: u64,
    /// The answer to a `HEAD` request has no body.
    head_request: bool,
    keep_alive: bool,
    conns: ConnMap<Conn>,
    closing: ConnMap<Closing>,
    /// Open loop: connections that may take another request (entries may be stale; checked when taken).
    idle: VecDeque<ConnId>,
    /// Connections wanted open: `connections`, less those lost once the reconnects ran out.
    slots_wanted: usize,
    reconnects_used: u64,
    started: Option<Instant>,
    measure_start: Instant,
    /// Open loop: requests scheduled so far (request `k` is due at `started + k / rate`).
    next_scheduled: u64,
    /// Measured requests issued so far.
    measured_issued: u64,
    /// No more requests will be issued; set at the instant it became true.
    issue_end: Option<Instant>,
    last_completion: Instant,
    last_now: Instant,
    next_timeout_scan: Instant,
    /// Open loop: due requests wait for a connection with room.
    blocked: bool,
    /// The connections idle when issuing ended were closed.
    end_swept: bool,
    histogram: Histogram<u64>,
    report: Report,
    http_done: Vec<HttpDone>,
    /// Held connections (`hold`), true once connected.
    held: ConnMap<bool>,
    /// Held connections connected now.
    held_open: usize,
    /// Held connections wanted: `hold`, less those that could not be opened.
    hold_wanted: usize,
    hold_started: Instant,
    /// Connection state kept for reuse ([`Load::recycle`]).
    spare: Vec<Conn>,
}

impl Load {
    /// A load generator with `cfg`, checked against the limits.
    pub fn new(cfg: LoadConfig) -> Result<Load, LoadError> {
        check("--connections", "", cfg.connections.into(), 1, CONNECTIONS_MAX.into())?;
        check("--pipeline", "", cfg.pipeline_depth.into(), 1, PIPELINE_DEPTH_MAX.into())?;
        check("--timeout", "ms", cfg.request_timeout_ms, 1, LATENCY_US_MAX / 1000)?;
        if let Some(r) = cfg.rate_per_sec {
            check("--rate", "", r, 1, RATE_PER_SEC_MAX)?;
        }
        match cfg.limit {
            LoadLimit::Duration { duration_ms } => check("--duration", "ms", duration_ms, 1, u64::MAX / 2000)?,
            LoadLimit::Requests { requests } => check("--requests", "", requests, 1, REQUESTS_MAX)?,
        }
        check("--warmup", "ms", cfg.warmup_ms, 0, u64::MAX / 2000)?;
        check("--hold", "", cfg.hold.into(), 0, CONNECTIONS_MAX.into())?;
        let (template, request_bytes, head_request, keep_alive) = match &cfg.mode {
            LoadMode::Echo { message_bytes } => {
                check("--message-bytes", " bytes", *message_bytes, 1, MESSAGE_BYTES_MAX)?;
                (pattern(), *message_bytes, false, true)
            }
            LoadMode::Send { message_bytes } => {
                check("--message-bytes", " bytes", *message_bytes, 1, SEND_BYTES_MAX)?;
                (pattern(), *message_bytes, false, false)
            }
            LoadMode::Http { method, path, host, headers, keep_alive } => {
                let req = http_request(method, path, host, headers, *keep_alive)?;
                let len = req.len() as u64;
                (req, len, method.eq_ignore_ascii_case("HEAD"), *keep_alive)
            }
        };
        let cfg_hold = cfg.hold as usize;
        Ok(Load {
            slots_wanted: cfg.connections as usize,
            cfg,
            template,
            request_bytes,
            head_request,
            keep_alive,
            conns: ConnMap::default(),
            closing: ConnMap::default(),
            idle: VecDeque::new(),
            reconnects_used: 0,
            started: None,
            measure_start: Instant::ZERO,
            next_scheduled: 0,
            measured_issued: 0,
            issue_end: None,
            last_completion: Instant::ZERO,
            last_now: Instant::ZERO,
            next_timeout_scan: Instant::ZERO,
            blocked: false,
            end_swept: false,
            histogram: new_histogram(),
            report: Report::default(),
            http_done: Vec::new(),
            held: ConnMap::with_capacity_and_hasher(cfg_hold, Default::default()),
            held_open: 0,
            hold_wanted: cfg_hold,
            hold_started: Instant::ZERO,
            spare: Vec::new(),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &LoadConfig {
        &self.cfg
    }

    /// The latency histogram of the measured requests (µs).
    pub fn histogram(&self) -> &Histogram<u64> {
        &self.histogram
    }

    /// What was measured so far (final once [`App::done`] says so).
    pub fn report(&self) -> Report {
        let end = match self.issue_end {
            Some(end) => end.max(self.last_completion),
            None => self.last_now,
        };
        let mut r = self.report.clone();
        r.elapsed_us = end.saturating_since(self.measure_start).as_micros() as u64;
        r.with_histogram(&self.histogram)
    }

    /// Connections open or opening now.
    pub fn connections(&self) -> usize {
        self.conns.len()
    }

    /// Whether `id` is one of this load's connections (open, opening or closing): for a driver that shares one
    /// stack between the load and a server and routes events by owner.
    pub fn owns(&self, id: ConnId) -> bool {
        self.conns.contains_key(&id) || self.closing.contains_key(&id)
    }

    /// The next instant the load has something to do without a stack event: the next open-loop request or a
    /// timeout check. `None` when only events can move it on. Drivers that sleep wake it by then.
    pub fn poll_at(&self) -> Option<Instant> {
        if self.finished() {
            return None;
        }
        let mut next = None::<Instant>;
        let mut earliest = |t: Instant| next = Some(next.map_or(t, |n| n.min(t)));
        if self.issue_end.is_none() {
            if let (Some(rate), Some(start)) = (self.cfg.rate_per_sec, self.started) {
                if !self.blocked {
                    earliest(scheduled_at(start, self.next_scheduled, rate));
                }
            }
            if self.conns.len() < self.slots_wanted {
                // A connect that failed is retried.
                earliest(self.last_now + Duration::from_millis(1));
            }
            if let LoadLimit::Duration { duration_ms } = self.cfg.limit {
                earliest(self.measure_start + Duration::from_millis(duration_ms));
            }
        }
        if !self.conns.is_empty() || !self.closing.is_empty() {
            earliest(self.next_timeout_scan);
        }
        next
    }

    fn finished(&self) -> bool {
        self.started.is_some()
            && self.issue_end.is_some()
            && self.conns.is_empty()
            && self.closing.is_empty()
            && self.held.is_empty()
    }

    fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.cfg.request_timeout_ms)
    }

    /// Whether a request scheduled at `at` may still be issued; marks the end of issuing when not.
    fn may_issue(&mut self, at: Instant, now: Instant) -> bool {
        if self.issue_end.is_some() {
            return false;
        }
        let more = match self.cfg.limit {
            LoadLimit::Duration { duration_ms } => at < self.measure_start + Duration::from_millis(duration_ms),
            LoadLimit::Requests { requests } => at < self.measure_start || self.measured_issued < requests,
        };
        if !more {
            self.issue_end = Some(now);
        }
        more
    }

    /// Counts an error of a connection at `now`: the warm-up's or the measured part's, by the time.
    fn error(&mut self, kind: ErrorKind, now: Instant) {
        self.count_error(kind, now >= self.measure_start);
    }

    /// Counts an error in the measured part of the run or, if not `measured`, in the warm-up's.
    fn count_error(&mut self, kind: ErrorKind, measured: bool) {
        if !measured {
            self.report.warmup_errors += 1;
            return;
        }
        let e = &mut self.report.errors;
        *match kind {
            ErrorKind::Refused => &mut e.refused,
            ErrorKind::Reset => &mut e.reset,
            ErrorKind::Timeout => &mut e.timeout,
            ErrorKind::BadResponse => &mut e.bad_response,
            ErrorKind::Connect => &mut e.connect,
            ErrorKind::Closed => &mut e.closed,
        } += 1;
    }

    /// Uses up one reconnect, or gives the connection's slot up when none are left.
    fn lose_slot(&mut self) {
        if self.reconnects_used < self.cfg.reconnects_max {
            self.reconnects_used += 1;
        } else {
            self.slots_wanted = self.slots_wanted.saturating_sub(1);
        }
    }

    /// Keeps a finished connection's state, emptied but with its buffers, for the next connection (at most
    /// [`SPARE_CONNS`]): a connection per request then costs no allocation here.
    fn recycle(&mut self, mut c: Conn) {
        if self.spare.len() >= SPARE_CONNS || c.input.capacity() > SPARE_INPUT_BYTES {
            return;
        }
        c.outstanding.clear();
        c.input.clear();
        let (outstanding, input) = (c.outstanding, c.input);
        self.spare.push(Conn { outstanding, input, ..Conn::new(Instant::ZERO) });
    }

    /// The hold phase: held connections are opening and the load proper (which sets `started`) waits for them.
    fn holding(&self) -> bool {
        self.started.is_none()
    }

    /// Starts the load proper: the warm-up, then the measured part.
    fn begin<S: Sockets + ?Sized>(&mut self, stack: &mut S, now: Instant) {
        if self.cfg.hold > 0 {
            self.report.held = self.held_open as u64;
            self.report.hold_open_us = now.saturating_since(self.hold_started).as_micros() as u64;
        }
        self.started = Some(now);
        self.measure_start = now + Duration::from_millis(self.cfg.warmup_ms);
        self.top_up(stack, now);
    }

    /// The hold phase: opens held connections, at most [`HOLD_OPENING_MAX`] in their handshake at once, and starts
    /// the load once all are open (or lost).
    fn open_held<S: Sockets + ?Sized>(&mut self, stack: &mut S, now: Instant) {
        while self.held.len() < self.hold_wanted && self.held.len() - self.held_open < HOLD_OPENING_MAX {
            match stack.connect(self.cfg.target) {
                Ok(id) => {
                    self.report.connections_opened += 1;
                    self.held.insert(id, false);
                }
                Err(_) => {
                    // No port, table full: this one is not held, and the load goes on without it.
                    self.hold_wanted -= 1;
                    self.report.held_lost += 1;
                }
            }
        }
        if self.held_open >= self.hold_wanted {
            self.begin(stack, now);
        }
    }

    /// Handles `event` if it is a held connection's; false if it is not.
    fn held_event<S: Sockets + ?Sized>(&mut self, stack: &mut S, now: Instant, event: &StackEvent) -> bool {
        let id = match *event {
            StackEvent::Connected(id)
            | StackEvent::Readable(id)
            | StackEvent::Writable(id)
            | StackEvent::PeerClosed(id)
            | StackEvent::Closed(id, _) => id,
            StackEvent::Accepted { .. } => return false,
        };
        let Some(&open) = self.held.get(&id) else { return false };
        match *event {
            StackEvent::Connected(_) => {
                self.held.insert(id, true);
                self.held_open += 1;
                if self.holding() {
                    self.open_held(stack, now);
                }
            }
            StackEvent::Readable(_) => {
                // Nothing was asked: drop whatever comes.
                self.report.bytes_received += stack.drop_received(id);
            }
            StackEvent::PeerClosed(_) | StackEvent::Closed(..) => {
                self.held.remove(&id);
                self.report.held_lost += 1;
                if open {
                    self.held_open -= 1;
                }
                if matches!(event, StackEvent::PeerClosed(_)) {
                    let _ = stack.abort(id);
                }
                if self.holding() {
                    self.hold_wanted -= 1;
                    self.open_held(stack, now);
                }
            }
            StackEvent::Writable(_) | StackEvent::Accepted { .. } => {}
        }
        true
    }

    /// Opens connections until `slots_wanted` are open, while requests remain.
    fn top_up<S: Sockets + ?Sized>(&mut self, stack: &mut S, now: Instant) {
        while self.issue_end.is_none() && self.conns.len() < self.slots_wanted {
            match stack.connect(self.cfg.target) {
                Ok(id) => {
                    self.report.connections_opened += 1;
                    let c = match self.spare.pop() {
                        Some(mut c) => {
                            c.opened_at = now;
                            c
                        }
                        None => Conn::new(now),
                    };
                    self.conns.insert(id, c);
                }
                Err(_) => {
                    // No port, table full: an error like any other, which uses a reconnect so this cannot spin.
                    self.error(ErrorKind::Connect, now);
                    self.lose_slot();
                    break;
                }
            }
        }
    }

    /// Queues one request on `id`, scheduled at `scheduled`.
    fn issue(&mut self, id: ConnId, scheduled: Instant, now: Instant) {
        let measured = scheduled >= self.measure_start;
        if measured {
            self.measured_issued += 1;
            if let LoadLimit::Requests { requests } = self.cfg.limit {
                if self.measured_issued >= requests {
                    // The last one: no new connections from now on.
                    self.issue_end = Some(now);
                }
            }
        }
        let keep_alive = self.keep_alive;
        let Some(c) = self.conns.get_mut(&id) else { return };
        c.outstanding.push_back(Request { scheduled, issued: now, measured });
        c.queued_bytes += self.request_bytes;
        if !keep_alive {
            c.last_request_sent = true;
        }
    }

    fn can_take(&self, id: ConnId) -> bool {
        self.conns
            .get(&id)
            .is_some_and(|c| c.open && !c.last_request_sent && c.outstanding.len() < self.cfg.pipeline_depth as usize)
    }

    /// Gives a connection with room what it may take: in closed loop new requests now, in open loop a place in
    /// the idle queue.
    fn refill(&mut self, id: ConnId, now: Instant) {
        if self.cfg.rate_per_sec.is_some() {
            if self.can_take(id) {
                if let Some(c) = self.conns.get_mut(&id) {
                    if !c.in_idle {
                        c.in_idle = true;
                        self.idle.push_back(id);
                    }
                }
            }
            return;
        }
        while self.can_take(id) && self.may_issue(now, now) {
            self.issue(id, now, now);
        }
    }

    /// Open loop: hands every due request to a connection with room, in schedule order.
    fn schedule<S: Sockets + ?Sized>(&mut self, stack: &mut S, now: Instant) {
        let (Some(rate), Some(start)) = (self.cfg.rate_per_sec, self.started) else { return };
        self.blocked = false;
        loop {
            let at = scheduled_at(start, self.next_scheduled, rate);
            if at > now || !self.may_issue(at, now) {
                return;
            }
            let id = loop {
                let Some(id) = self.idle.pop_front() else {
                    // Due requests wait for a connection with room; an answer or a connect frees one.
                    self.blocked = true;
                    return;
                };
                if let Some(c) = self.conns.get_mut(&id) {
                    c.in_idle = false;
                }
                if self.can_take(id) {
                    break id;
                }
            };
            self.issue(id, at, now);
            self.next_scheduled += 1;
            self.flush(stack, id, now);
            // Still room: back to the end of the queue, so that requests spread over the connections.
            self.refill(id, now);
        }
    }

    /// Hands the stack what it takes of the connection's queued request bytes.
    fn flush<S: Sockets + ?Sized>(&mut self, stack: &mut S, id: ConnId, now: Instant) {
        let Some(c) = self.conns.get_mut(&id) else { return };
        while c.open && c.sent_bytes < c.queued_bytes {
            let left = c.queued_bytes - c.sent_bytes;
            let chunk = match self.cfg.mode {
                LoadMode::Echo { .. } | LoadMode::Send { .. } => {
                    let off = (c.sent_bytes % PATTERN_PERIOD as u64) as usize;
                    let n = left.min(SEND_CHUNK_BYTES as u64) as usize;
                    &self.template[off..off + n]
                }
                LoadMode::Http { .. } => {
                    let off = (c.sent_bytes % self.request_bytes) as usize;
                    let n = left.min((self.template.len() - off) as u64) as usize;
                    &self.template[off..off + n]
                }
            };
            let n = stack.send(id, chunk).unwrap_or(0);
            if n > 0 {
                c.progressed_at = now;
            }
            c.sent_bytes += n as u64;
            self.report.bytes_sent += n as u64;
            if n < chunk.len() {
                // The send buffer is full: `Writable` brings us back.
                break;
            }
        }
        if let LoadMode::Send { .. } = self.cfg.mode {
            // All of it handed over: our FIN follows it, and the server's FIN says it read everything.
            if c.open && !c.fin_sent && c.last_request_sent && c.sent_bytes == c.queued_bytes {
                c.fin_sent = stack.close(id).is_ok();
            }
        }
    }

    /// Records an answered request.
    fn complete(&mut self, req: Request, ok: bool, now: Instant) {
        if !req.measured {
            if ok {
                self.report.warmup_completed += 1;
            }
            return;
        }
        self.last_completion = self.last_completion.max(now);
        if ok {
            self.report.completed += 1;
            let latency_us = now.saturating_since(req.scheduled).as_micros() as u64;
            self.histogram.saturating_record(latency_us.min(LATENCY_US_MAX));
        } else {
            self.report.failed += 1;
        }
    }

    /// Drops a connection after an error: counts it, fails its requests, aborts it if it still lives, and uses a
    /// reconnect so that its slot is opened again.
    fn fail<S: Sockets + ?Sized>(&mut self, stack: &mut S, id: ConnId, kind: ErrorKind, abort: bool, now: Instant) {
        let Some(mut c) = self.conns.remove(&id) else { return };
        self.error(kind, now);
        for req in c.outstanding.drain(..) {
            if req.measured {
                self.report.failed += 1;
                self.last_completion = self.last_completion.max(now);
            }
        }
        self.recycle(c);
        if abort {
            let _ = stack.abort(id);
        }
        self.lose_slot();
    }

    /// Reads everything waiting on `id` and completes what it answers.
    fn read<S: Sockets + ?Sized>(&mut self, stack: &mut S, id: ConnId, now: Instant) {
        if self.closing.contains_key(&id) {
            // Closed by us: what still comes is read and dropped (in place), so the connection can finish.
            self.report.bytes_received += stack.drop_received(id);
            return;
        }
        let mut any = false;
        loop {
            if !self.conns.contains_key(&id) {
                return;
            }
            // Answers are checked where they lie in the stack's receive buffer (no copy on xtcp).
            let mut ok = true;
            let n = stack
                .recv_with(id, RECV_CHUNK_BYTES, &mut |data| {
                    ok = match self.cfg.mode {
                        LoadMode::Echo { .. } => self.echo_input(id, data, now),
                        LoadMode::Http { .. } => self.http_input(id, data, now),
                        // A discard server says nothing.
                        LoadMode::Send { .. } => false,
                    };
                    data.len()
                })
                .unwrap_or(0);
            if n == 0 {
                break;
            }
            any = true;
            self.report.bytes_received += n as u64;
            if !ok {
                self.fail(stack, id, ErrorKind::BadResponse, true, now);
                return;
            }
        }
        if any {
            self.after_answers(stack, id, now);
        }
    }

    /// Checks echoed bytes and completes the messages they finish. False on wrong bytes or more bytes than were
    /// sent.
    fn echo_input(&mut self, id: ConnId, data: &[u8], now: Instant) -> bool {
        let n = data.len();
        let msg = self.request_bytes;
        let Some(c) = self.conns.get_mut(&id) else { return false };
        let off = (c.received_bytes % PATTERN_PERIOD as u64) as usize;
        let mut ok = c.received_bytes + n as u64 <= c.sent_bytes;
        // `template` is one period longer than a read (`RECV_CHUNK_BYTES`), so every read has its expected bytes there.
        ok &= data == &self.template[off..off + n];
        let before = c.received_bytes;
        c.received_bytes += n as u64;
        let finished = c.received_bytes / msg - before / msg;
        for _ in 0..finished {
            let Some(req) = self.conns.get_mut(&id).and_then(|c| c.outstanding.pop_front()) else { break };
            self.complete(req, ok, now);
        }
        ok
    }

    /// Parses response bytes and completes the responses they finish. False on a response that
    /// cannot be parsed or answers nothing we asked.
    fn http_input(&mut self, id: ConnId, data: &[u8], now: Instant) -> bool {
        let Some(c) = self.conns.get_mut(&id) else { return false };
        self.http_done.clear();
        c.input.extend_from_slice(data);
        let ok = parse_responses(c, self.head_request, &mut self.http_done);
        for i in 0..self.http_done.len() {
            let done = self.http_done[i];
            let Some(c) = self.conns.get_mut(&id) else { return false };
            let Some(req) = c.outstanding.pop_front() else { return false };
            if done.close {
                c.last_request_sent = true;
            }
            let good = (200..300).contains(&done.status);
            self.complete(req, good, now);
            if !good {
                // The request's own part of the run: a warm-up request answered after the warm-up is the warm-up's,
                // as `complete` counts it.
                self.count_error(ErrorKind::BadResponse, req.measured);
            }
        }
        ok
    }

    /// After answers: more requests in, bytes out, and the connection closed once it has nothing more to do.
    fn after_answers<S: Sockets + ?Sized>(&mut self, stack: &mut S, id: ConnId, now: Instant) {
        self.refill(id, now);
        if self.cfg.rate_per_sec.is_some() {
            self.schedule(stack, now);
        }
        self.flush(stack, id, now);
        self.maybe_close(stack, id, now);
    }

    /// Closes a connection with nothing outstanding that will get no more requests.
    fn maybe_close<S: Sockets + ?Sized>(&mut self, stack: &mut S, id: ConnId, now: Instant) {
        let Some(c) = self.conns.get(&id) else { return };
        let retired = c.last_request_sent || self.issue_end.is_some();
        if !c.outstanding.is_empty() || !retired {
            return;
        }
        if let Some(c) = self.conns.remove(&id) {
            self.recycle(c);
        }
        if self.closing.len() >= self.cfg.connections as usize + CLOSING_EXTRA_MAX {
            let _ = stack.abort(id);
            return;
        }
        let _ = stack.close(id);
        let deadline = now + self.request_timeout().min(CLOSE_WAIT_MAX);
        self.closing.insert(id, Closing { deadline });
    }

    /// Every so often: requests past their timeout, closes the peer never answered, and the end of issuing.
    fn check_timeouts<S: Sockets + ?Sized>(&mut self, stack: &mut S, now: Instant) {
        if now < self.next_timeout_scan {
            return;
        }
        // A scan per sixteenth of the timeout (at least 1 ms apart): timeouts fire up to 6% late, and the scan
        // costs one look per connection that often rather than every turn.
        let step = (self.request_timeout() / 16).max(Duration::from_millis(1));
        self.next_timeout_scan = now + step;
        let timeout = self.request_timeout();
        // A one-way transfer is one request that may take many round trips: it waits from its last progress.
        let by_progress = matches!(self.cfg.mode, LoadMode::Send { .. });
        let late: Vec<ConnId> = self
            .conns
            .iter()
            .filter(|(_, c)| {
                let since = c.outstanding.front().map_or(if c.open { None } else { Some(c.opened_at) }, |r| {
                    Some(if by_progress { r.issued.max(c.progressed_at) } else { r.issued })
                });
                since.is_some_and(|t| now.saturating_since(t) >= timeout)
            })
            .map(|(&id, _)| id)
            .collect();
        for id in late {
            self.fail(stack, id, ErrorKind::Timeout, true, now);
        }
        let stale: Vec<ConnId> = self.closing.iter().filter(|(_, c)| c.deadline <= now).map(|(&id, _)| id).collect();
        for id in stale {
            self.closing.remove(&id);
            let _ = stack.abort(id);
        }
    }
}

fn check(name: &'static str, unit: &'static str, value: u64, min: u64, max: u64) -> Result<(), LoadError> {
    if (min..=max).contains(&value) {
        Ok(())
    } else {
        Err(LoadError::OutOfRange { name, unit, value, min, max })
    }
}

/// The message of [`LoadError::OutOfRange`]: the bound that `value` is past.
fn out_of_range(name: &str, value: u64, min: u64, max: u64, unit: &str) -> String {
    if value < min {
        format!("{name} must be at least {min}{unit}, got {value}{unit}")
    } else {
        format!("{name} must be at most {max}{unit}, got {value}{unit}")
    }
}

/// The bytes echo and send messages repeat, `PATTERN_PERIOD + SEND_CHUNK_BYTES` long: every chunk sent, and every
/// read checked, starts somewhere in its first period.
fn pattern() -> Vec<u8> {
    (0..PATTERN_PERIOD + SEND_CHUNK_BYTES).map(|i| (i % PATTERN_PERIOD) as u8).collect()
}

/// When open-loop request `k` is due.
fn scheduled_at(start: Instant, k: u64, rate_per_sec: u64) -> Instant {
    let us = u128::from(k) * 1_000_000 / u128::from(rate_per_sec);
    start + Duration::from_micros(u64::try_from(us).unwrap_or(u64::MAX))
}

/// The bytes of one HTTP request.
fn http_request(
    method: &str,
    path: &str,
    host: &str,
    headers: &[(String, String)],
    keep_alive: bool,
) -> Result<Vec<u8>, LoadError> {
    let token =
        |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_graphic() && !b"()<>@,;:\\\"/[]?={}".contains(&b));
    let visible = |s: &str| s.bytes().all(|b| b == b' ' || b == b'\t' || b.is_ascii_graphic());
    if !token(method) {
        return Err(LoadError::BadRequest(format!("method {method:?}")));
    }
    if path.is_empty() || !path.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(LoadError::BadRequest(format!("path {path:?}")));
    }
    if !visible(host) {
        return Err(LoadError::BadRequest(format!("host {host:?}")));
    }
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {host}\r\n");
    for (name, value) in headers {
        if !token(name) || !visible(value) {
            return Err(LoadError::BadRequest(format!("header {name:?}: {value:?}")));
        }
        if name.eq_ignore_ascii_case("connection") || name.eq_ignore_ascii_case("host") {
            return Err(LoadError::BadRequest(format!("header {name} is set by the load generator")));
        }
        let _ = write!(req, "{name}: {value}\r\n");
    }
    let connection = if keep_alive { "keep-alive" } else { "close" };
    let _ = write!(req, "Connection: {connection}\r\n\r\n");
    if req.len() > REQUEST_BYTES_MAX {
        return Err(LoadError::BadRequest(format!("{} bytes, more than {REQUEST_BYTES_MAX}", req.len())));
    }
    Ok(req.into_bytes())
}

const RESPONSE_HEADERS_MAX: usize = 64;

/// Whether the `Connection` headers list `option` (see [`super::has_token`]): `Connection: Keep-Alive, Upgrade`
/// has `keep-alive` and `X-Not-Close` has no `close`.
fn connection_has(headers: &[httparse::Header<'_>], option: &str) -> bool {
    headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case("connection"))
        .any(|h| super::has_token(h.value, option.as_bytes()))
}

/// Parses the responses in `c.input`, pushing each one fully read to `out`. False when the input is not HTTP.
fn parse_responses(c: &mut Conn, head_request: bool, out: &mut Vec<HttpDone>) -> bool {
    let mut pos = 0;
    let ok = loop {
        match c.http {
            HttpRx::Body { left, status, close } => {
                let take = left.min((c.input.len() - pos) as u64);
                pos += take as usize;
                if take < left {
                    c.http = HttpRx::Body { left: left - take, status, close };
                    break true;
                }
                out.push(HttpDone { status, close });
                c.http = HttpRx::Head;
            }
            HttpRx::UntilClose { .. } => {
                pos = c.input.len();
                break true;
            }
            HttpRx::Head => {
                if pos == c.input.len() {
                    break true;
                }
                let mut headers = [httparse::EMPTY_HEADER; RESPONSE_HEADERS_MAX];
                let mut resp = httparse::Response::new(&mut headers);
                let head_len = match resp.parse(&c.input[pos..]) {
                    Ok(httparse::Status::Complete(n)) => n,
                    Ok(httparse::Status::Partial) => break c.input.len() - pos <= RESPONSE_HEAD_BYTES_MAX,
                    Err(_) => break false,
                };
                pos += head_len;
                let status = resp.code.unwrap_or(0);
                let header = |name: &str| resp.headers.iter().find(|h| h.name.eq_ignore_ascii_case(name));
                // RFC 9112, section 9.3: HTTP/1.1 persists unless `Connection: close`; HTTP/1.0 only with
                // `Connection: keep-alive`.
                let close = if resp.version == Some(0) {
                    !connection_has(resp.headers, "keep-alive")
                } else {
                    connection_has(resp.headers, "close")
                };
                if (100..200).contains(&status) {
                    // An interim response (100 Continue): the real one follows.
                    continue;
                }
                if header("transfer-encoding").is_some() {
                    // Chunked bodies are not supported: better a bad response than losing sync with the stream.
                    break false;
                }
                let length = match header("content-length") {
                    None => None,
                    Some(h) => match std::str::from_utf8(h.value).ok().and_then(|v| v.trim().parse::<u64>().ok()) {
                        Some(n) => Some(n),
                        None => break false,
                    },
                };
                let no_body = head_request || status == 204 || status == 304;
                c.http = match (no_body, length) {
                    (true, _) => HttpRx::Body { left: 0, status, close },
                    (false, Some(n)) => HttpRx::Body { left: n, status, close },
                    (false, None) => HttpRx::UntilClose { status },
                };
            }
        }
    };
    c.input.drain(..pos);
    ok
}

impl<S: Sockets + ?Sized> App<S> for Load {
    fn start(&mut self, stack: &mut S, now: Instant) {
        self.last_now = now;
        self.next_timeout_scan = now;
        if self.hold_wanted > 0 {
            self.hold_started = now;
            self.open_held(stack, now);
        } else {
            self.begin(stack, now);
        }
    }

    fn on_event(&mut self, stack: &mut S, now: Instant, event: StackEvent) {
        self.last_now = now;
        if !self.held.is_empty() && self.held_event(stack, now, &event) {
            return;
        }
        match event {
            StackEvent::Connected(id) => {
                let Some(c) = self.conns.get_mut(&id) else { return };
                c.open = true;
                let _ = stack.set_nodelay(id, true);
                self.after_answers(stack, id, now);
            }
            StackEvent::Readable(id) => self.read(stack, id, now),
            StackEvent::Writable(id) => self.flush(stack, id, now),
            StackEvent::PeerClosed(id) => {
                self.read(stack, id, now);
                if self.closing.remove(&id).is_some() {
                    // Both sides closed in order: the stack finishes the connection on its own.
                    return;
                }
                let Some(c) = self.conns.get_mut(&id) else { return };
                if c.fin_sent {
                    // Send: the server closed after our FIN, so it read everything we sent.
                    if let Some(mut c) = self.conns.remove(&id) {
                        if let Some(req) = c.outstanding.pop_front() {
                            self.complete(req, true, now);
                        }
                        self.recycle(c);
                    }
                    self.top_up(stack, now);
                    return;
                }
                if let HttpRx::UntilClose { status } = c.http {
                    c.http = HttpRx::Head;
                    c.last_request_sent = true;
                    if let Some(req) = c.outstanding.pop_front() {
                        let good = (200..300).contains(&status);
                        self.complete(req, good, now);
                        if !good {
                            self.count_error(ErrorKind::BadResponse, req.measured);
                        }
                    }
                }
                let Some(c) = self.conns.get_mut(&id) else { return };
                if c.outstanding.is_empty() {
                    // The server is done with this connection (keep-alive off, or its limit): close ours; a new
                    // one takes its place if requests remain.
                    c.last_request_sent = true;
                    self.maybe_close(stack, id, now);
                } else {
                    self.fail(stack, id, ErrorKind::Closed, false, now);
                    let _ = stack.close(id);
                    self.closing.insert(id, Closing { deadline: now + CLOSE_WAIT_MAX });
                }
            }
            StackEvent::Closed(id, reason) => {
                self.closing.remove(&id);
                if !self.conns.contains_key(&id) {
                    return;
                }
                let kind = match reason {
                    CloseReason::Refused => ErrorKind::Refused,
                    CloseReason::Reset => ErrorKind::Reset,
                    CloseReason::TimedOut => ErrorKind::Timeout,
                    CloseReason::Normal | CloseReason::Aborted | CloseReason::ReturnedToListen => ErrorKind::Closed,
                };
                self.fail(stack, id, kind, false, now);
            }
            // Not ours: we never listen (an application sharing the stack may).
            StackEvent::Accepted { .. } => {}
        }
    }

    fn on_tick(&mut self, stack: &mut S, now: Instant) {
        self.last_now = now;
        if self.started.is_none() {
            return;
        }
        if let LoadLimit::Duration { duration_ms } = self.cfg.limit {
            let mut end = self.measure_start + Duration::from_millis(duration_ms);
            if self.cfg.rate_per_sec.is_some() {
                // Open loop: a request scheduled before the end is still owed while it waits for a connection with
                // room (its latency counts from its scheduled time), so the schedule ends issuing (`may_issue`);
                // the clock does only a request timeout later, should no connection ever free up.
                end += self.request_timeout();
            }
            if self.issue_end.is_none() && now >= end {
                self.issue_end = Some(now);
            }
        }
        self.check_timeouts(stack, now);
        self.top_up(stack, now);
        if self.cfg.rate_per_sec.is_some() {
            self.schedule(stack, now);
        }
        if self.slots_wanted == 0 && self.issue_end.is_none() {
            // Every connection lost and no reconnects left: nothing more can be sent.
            self.issue_end = Some(now);
        }
        if self.issue_end.is_some() && !self.end_swept {
            // Once, when issuing ends: connections with nothing outstanding close now; the others close as their
            // last answers come.
            self.end_swept = true;
            let idle: Vec<ConnId> =
                self.conns.iter().filter(|(_, c)| c.outstanding.is_empty()).map(|(&id, _)| id).collect();
            for id in idle {
                if self.conns.get(&id).is_some_and(|c| c.open) {
                    self.maybe_close(stack, id, now);
                } else {
                    // Still connecting with nothing to send: not needed any more.
                    if let Some(c) = self.conns.remove(&id) {
                        self.recycle(c);
                    }
                    let _ = stack.abort(id);
                }
            }
        }
        if self.issue_end.is_some() && self.conns.is_empty() && !self.held.is_empty() {
            // The last answer is in: held connections are reset (a million graceful closes would only fill
            // TIME_WAIT).
            for (id, _) in self.held.drain() {
                let _ = stack.abort(id);
            }
            self.held_open = 0;
        }
    }

    fn done(&self) -> bool {
        self.finished()
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;

    fn target() -> SocketAddrV4 {
        SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 2), 80)
    }

    /// A report of `n` latencies of `value_us` each, over one second.
    fn report_of(value_us: u64, n: u64) -> Report {
        let mut load = Load::new(LoadConfig::new(target())).unwrap();
        load.histogram.record_n(value_us, n).unwrap();
        load.report.completed = n;
        load.issue_end = Some(Instant::from_secs(1));
        load.report()
    }

    #[test]
    fn merge_gives_true_percentiles_not_averages() {
        let mut a = report_of(100, 100);
        let b = report_of(10_000, 300);
        assert_eq!(a.latency.p50_us, 100);
        a.merge(&b);
        assert_eq!(a.completed, 400);
        assert_eq!(a.latency.count, 400);
        // Three quarters of all requests took 10 ms: the median is 10 ms, not the 5 ms mean of the two medians.
        assert_eq!(a.latency.p50_us, a.histogram().highest_equivalent(10_000));
        assert_eq!(a.latency.min_us, 100);
        assert_eq!(a.elapsed_us, 1_000_000);
        assert!((a.requests_per_sec - 400.0).abs() < 1e-9);
        assert!((a.latency.mean_us - (100.0 * 100.0 + 300.0 * 10_000.0) / 400.0).abs() < 20.0);
    }

    #[test]
    fn configs_outside_the_limits_are_refused() {
        let bad = |cfg: LoadConfig| Load::new(cfg).unwrap_err();
        let base = LoadConfig::new(target());
        // Each names the flag that sets it and the bound it is past.
        let said = |cfg: LoadConfig| bad(cfg).to_string();
        assert_eq!(said(LoadConfig { connections: 0, ..base.clone() }), "--connections must be at least 1, got 0");
        assert_eq!(
            said(LoadConfig { pipeline_depth: PIPELINE_DEPTH_MAX + 1, ..base.clone() }),
            "--pipeline must be at most 1024, got 1025"
        );
        assert_eq!(said(LoadConfig { rate_per_sec: Some(0), ..base.clone() }), "--rate must be at least 1, got 0");
        assert_eq!(
            said(LoadConfig { request_timeout_ms: 0, ..base.clone() }),
            "--timeout must be at least 1ms, got 0ms"
        );
        assert_eq!(
            said(LoadConfig { request_timeout_ms: 60_001, ..base.clone() }),
            "--timeout must be at most 60000ms, got 60001ms"
        );
        assert_eq!(
            said(LoadConfig { limit: LoadLimit::Duration { duration_ms: 0 }, ..base.clone() }),
            "--duration must be at least 1ms, got 0ms"
        );
        assert_eq!(
            said(LoadConfig { limit: LoadLimit::Requests { requests: 0 }, ..base.clone() }),
            "--requests must be at least 1, got 0"
        );
        assert_eq!(
            said(LoadConfig { mode: LoadMode::Echo { message_bytes: MESSAGE_BYTES_MAX + 1 }, ..base.clone() }),
            "--message-bytes must be at most 16777216 bytes, got 16777217 bytes"
        );
        assert!(matches!(
            bad(LoadConfig { mode: LoadMode::Echo { message_bytes: 0 }, ..base.clone() }),
            LoadError::OutOfRange { name: "--message-bytes", .. }
        ));
        let http = |path: &str, headers: Vec<(String, String)>| LoadConfig {
            mode: LoadMode::Http {
                method: "GET".into(),
                path: path.into(),
                host: "h".into(),
                headers,
                keep_alive: true,
            },
            ..base.clone()
        };
        assert!(matches!(bad(http("/a b", vec![])), LoadError::BadRequest(_)));
        assert!(matches!(bad(http("/", vec![("X".into(), "1\r\nEvil: 1".into())])), LoadError::BadRequest(_)));
        assert!(matches!(bad(http("/", vec![("Connection".into(), "close".into())])), LoadError::BadRequest(_)));
        assert!(Load::new(http("/", vec![("X-A".into(), "b c".into())])).is_ok());
    }

    #[test]
    fn config_round_trips_through_json() {
        let cfg = LoadConfig {
            mode: LoadConfig::http_get("/", "h", false),
            rate_per_sec: Some(1000),
            limit: LoadLimit::Duration { duration_ms: 5000 },
            ..LoadConfig::new(target())
        };
        let json = serde_json::to_string(&cfg).unwrap();
        assert!(json.contains("\"10.0.0.2:80\""), "{json}");
        assert_eq!(serde_json::from_str::<LoadConfig>(&json).unwrap(), cfg);
    }

    #[test]
    fn http_request_bytes() {
        let req = http_request("GET", "/x", "h:80", &[("Accept".into(), "*/*".into())], false).unwrap();
        assert_eq!(req, b"GET /x HTTP/1.1\r\nHost: h:80\r\nAccept: */*\r\nConnection: close\r\n\r\n");
    }

    fn feed(c: &mut Conn, head_request: bool, bytes: &[u8]) -> (bool, Vec<HttpDone>) {
        let mut out = Vec::new();
        c.input.extend_from_slice(bytes);
        let ok = parse_responses(c, head_request, &mut out);
        (ok, out)
    }

    #[test]
    fn responses_split_anywhere_parse_the_same() {
        let two = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhelloHTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\
                    Connection: close\r\n\r\n";
        for split in 0..two.len() {
            let mut c = Conn::new(Instant::ZERO);
            let (ok1, mut done) = feed(&mut c, false, &two[..split]);
            let (ok2, rest) = feed(&mut c, false, &two[split..]);
            done.extend(rest);
            assert!(ok1 && ok2, "split at {split}");
            assert_eq!(
                done,
                [HttpDone { status: 200, close: false }, HttpDone { status: 404, close: true }],
                "split at {split}"
            );
            assert!(c.input.is_empty());
            assert_eq!(c.http, HttpRx::Head);
        }
    }

    #[test]
    fn response_bodies_by_kind() {
        // HEAD: the Content-Length describes a body that is not sent.
        let mut c = Conn::new(Instant::ZERO);
        let (ok, done) = feed(&mut c, true, b"HTTP/1.1 200 OK\r\nContent-Length: 99\r\n\r\n");
        assert!(ok);
        assert_eq!(done, [HttpDone { status: 200, close: false }]);
        // An interim 100 Continue answers nothing.
        let mut c = Conn::new(Instant::ZERO);
        let (ok, done) = feed(&mut c, false, b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n");
        assert!(ok);
        assert_eq!(done, [HttpDone { status: 204, close: false }]);
        // No length: the body runs to the end of the connection.
        let mut c = Conn::new(Instant::ZERO);
        let (ok, done) = feed(&mut c, false, b"HTTP/1.0 200 OK\r\n\r\nsome body");
        assert!(ok && done.is_empty());
        assert_eq!(c.http, HttpRx::UntilClose { status: 200 });
        // Chunked, garbage and an endless head are refused.
        let mut c = Conn::new(Instant::ZERO);
        assert!(!feed(&mut c, false, b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n").0);
        let mut c = Conn::new(Instant::ZERO);
        assert!(!feed(&mut c, false, b"SSH-2.0-OpenSSH\r\n\r\n").0);
        let mut c = Conn::new(Instant::ZERO);
        assert!(!feed(&mut c, false, b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n").0);
        let mut c = Conn::new(Instant::ZERO);
        assert!(feed(&mut c, false, b"HTTP/1.1 200 OK\r\nX: ").0);
        assert!(!feed(&mut c, false, &vec![b'a'; RESPONSE_HEAD_BYTES_MAX]).0);
    }

    #[test]
    fn connection_options_are_whole_tokens_and_http_1_0_closes_only_without_keep_alive() {
        let close_of = |head: &[u8]| {
            let mut c = Conn::new(Instant::ZERO);
            let (ok, done) = feed(&mut c, false, head);
            assert!(ok, "{}", String::from_utf8_lossy(head));
            assert_eq!(done.len(), 1, "{}", String::from_utf8_lossy(head));
            done[0].close
        };
        assert!(close_of(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"));
        assert!(close_of(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: Upgrade, CLOSE\r\n\r\n"));
        assert!(close_of(b"HTTP/1.1 200 OK\r\nConnection: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"));
        // A token that merely contains "close" is another option.
        assert!(!close_of(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: x-not-close\r\n\r\n"));
        assert!(!close_of(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: closed\r\n\r\n"));
        assert!(!close_of(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nX-Close: close\r\n\r\n"));
        // HTTP/1.0 closes unless it says keep-alive.
        assert!(close_of(b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n"));
        assert!(!close_of(b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\nConnection: Keep-Alive\r\n\r\n"));
        assert!(!close_of(b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\nConnection:  keep-alive , foo\r\n\r\n"));
        assert!(close_of(b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\nConnection: keep-alive-ish\r\n\r\n"));
    }

    #[test]
    fn a_warm_up_request_answered_badly_after_the_warm_up_is_the_warm_ups_error() {
        let cfg =
            LoadConfig { mode: LoadConfig::http_get("/", "h", true), warmup_ms: 100, ..LoadConfig::new(target()) };
        let mut load = Load::new(cfg).unwrap();
        load.measure_start = Instant::from_millis(100);
        let (warm, measured) = (ConnId::from_parts(1, 0), ConnId::from_parts(2, 0));
        for (id, at, is_measured) in [(warm, 50, false), (measured, 150, true)] {
            let mut c = Conn::new(Instant::ZERO);
            c.open = true;
            let at = Instant::from_millis(at);
            c.outstanding.push_back(Request { scheduled: at, issued: at, measured: is_measured });
            load.conns.insert(id, c);
        }
        // Both answered with a 404 after the warm-up ended.
        let now = Instant::from_millis(200);
        let answer = b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n";
        assert!(load.http_input(warm, answer, now));
        assert!(load.http_input(measured, answer, now));
        let r = load.report;
        assert_eq!((r.failed, r.errors.bad_response, r.warmup_errors), (1, 1, 1), "{r:?}");
        assert_eq!(r.errors.total(), r.failed, "every measured error is a measured failure: {r:?}");
    }

    #[test]
    fn open_loop_schedule_is_exact() {
        let start = Instant::from_secs(1);
        assert_eq!(scheduled_at(start, 0, 3), start);
        assert_eq!(scheduled_at(start, 1, 3), start + Duration::from_micros(333_333));
        assert_eq!(scheduled_at(start, 3, 3), start + Duration::from_secs(1));
        assert_eq!(scheduled_at(start, 3_000_000, 3_000_000), start + Duration::from_secs(1));
    }
}
