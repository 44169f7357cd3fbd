//! `xtcp reflect`: the raw AF_XDP ceiling, with no TCP at all (issue 8, benchmark a).
//!
//! The reflector steers TCP frames for its address and `--port` into an AF_XDP socket and sends each one straight
//! back with the Ethernet addresses, IPv4 addresses and TCP ports swapped (the checksums stay valid: they are sums,
//! and swapping reorders their terms). With `--ping ADDR:PORT` it is the client instead: it keeps `--in-flight`
//! 64-byte frames on the wire to a reflector, sends a new one for each that comes back, and reports frames per
//! second and round-trip percentiles. With `--ping ADDR:PORT --stream` it streams frames one way as fast as the
//! rings take them; the reflector counts them instead of bouncing them, and answers the client's report requests
//! with its count, so the client reports the frames per second that arrived. Whatever xtcp's TCP costs comes on
//! top of these numbers.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use xtcp::nic::afxdp::{self, BindMode, Steering, XskConfig, XskDevice};
use xtcp::nic::neigh::Neighbors;
use xtcp::nic::{FrameDevice, Transmit};
use xtcp::time::Instant;
use xtcp::wire::checksum;

use crate::cli::{duration_in, is_root, number_in, stop_on_signals};

/// The `xtcp reflect` arguments.
#[derive(Debug, Clone, clap::Args)]
pub struct ReflectArgs {
    /// The interface (AF_XDP, queue 0).
    #[arg(long, value_name = "IFACE")]
    pub iface: String,
    /// The TCP port whose frames are steered to us (the reflector's, or the client's source port).
    #[arg(long, default_value_t = 9000, value_parser = number_in::<u16>(1, u16::MAX.into()))]
    pub port: u16,
    /// Be the client: ping-pong frames with the reflector at ADDR:PORT.
    #[arg(long, value_name = "ADDR:PORT")]
    pub ping: Option<SocketAddrV4>,
    /// Client: frames kept in flight.
    #[arg(long, default_value_t = 1, value_parser = number_in::<u32>(1, 1024))]
    pub in_flight: u32,
    /// Client: stream frames one way as fast as they go (the reflector counts them) instead of ping-ponging.
    #[arg(long, requires = "ping", conflicts_with = "in_flight")]
    pub stream: bool,
    /// Client, --stream: bytes per frame, Ethernet header included (1514 is a full frame on a 1500-byte MTU).
    #[arg(long, default_value_t = 64, requires = "stream",
          value_parser = number_in::<u16>(FRAME_LEN as u64, 9014))]
    pub frame_bytes: u16,
    /// Client: how long to measure (after a 0.5 s warm-up; at least 1ms).
    #[arg(long, default_value = "5s", value_parser = duration_in(Duration::from_millis(1), Duration::MAX))]
    pub duration: Duration,
    /// Client: print the result as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Ethernet + IPv4 + TCP headers, then a payload carrying the send time: 64 bytes on the wire (without FCS).
const FRAME_LEN: usize = 64;
const TIME_AT: usize = 54;
/// The payload byte after the time says what the frame is: a ping (0, bounced), a streamed frame (counted), a
/// report request (answered with the count) or a report.
const KIND_AT: usize = 62;
const PING: u8 = 0;
const STREAMED: u8 = 1;
const REPORT_REQUEST: u8 = 2;
const REPORT: u8 = 3;
/// A report carries the count of streamed frames here; report frames are `REPORT_LEN` bytes.
const COUNT_AT: usize = 64;
const REPORT_LEN: usize = 72;
/// A report request not answered in this long is sent again (the reflector's rx ring may have been full).
const REPORT_RETRY: Duration = Duration::from_millis(10);
/// How long the client waits for the last report after streaming.
const REPORT_WAIT: Duration = Duration::from_secs(1);
/// When nothing has come back for this long, the frames in flight are taken as lost and replaced (long enough
/// that a frame delayed in a busy machine's softirq is not counted twice).
const LOST_AFTER: Duration = Duration::from_millis(100);
const WARMUP: Duration = Duration::from_millis(500);

/// Runs the reflector or, with `--ping`, the client.
pub fn run(args: &ReflectArgs) -> Result<(), String> {
    if !is_root() {
        return Err("AF_XDP and XDP need root — run `sudo xtcp reflect ...`".into());
    }
    let ifindex = afxdp::interface_index(&args.iface)
        .map_err(|_| format!("no interface named {:?} — `ip -br link` lists them", args.iface))?;
    let mut neighbors = Neighbors::open().map_err(|e| format!("opening netlink: {e}"))?;
    let ip = *neighbors
        .interface_addresses(ifindex)
        .map_err(|e| format!("reading {}'s addresses: {e}", args.iface))?
        .first()
        .ok_or_else(|| format!("{} has no IPv4 address — add one with `ip addr add`", args.iface))?;
    let steering = Steering::load_and_attach(&args.iface, &[ip], [args.port]).map_err(|e| e.to_string())?;
    let cfg = XskConfig { mode: BindMode::Auto, ..XskConfig::DEFAULT };
    let mut dev = XskDevice::open(&args.iface, &cfg, &steering).map_err(|e| e.to_string())?;
    let stop = stop_on_signals()?;
    match args.ping {
        None => {
            println!(
                "xtcp reflect: serving {ip}:{} on {} ({:?} mode); Ctrl-C stops",
                args.port,
                args.iface,
                dev.mode()
            );
            let (n, streamed) = reflect(&mut dev, &stop);
            println!("xtcp reflect: {n} frames reflected, {streamed} streamed frames counted");
            Ok(())
        }
        Some(peer) => {
            let mac = afxdp::interface_mac(&args.iface).map_err(|e| format!("reading the MAC: {e}"))?;
            let peer_mac = neighbors
                .resolve(ifindex, *peer.ip(), Duration::from_secs(3))
                .map_err(|e| format!("resolving {}'s MAC: {e}", peer.ip()))?
                .ok_or_else(|| format!("{} did not answer ARP on {}", peer.ip(), args.iface))?;
            let ends = Ends {
                src_mac: mac.0,
                dst_mac: peer_mac.0,
                src: ip,
                dst: *peer.ip(),
                sport: args.port,
                dport: peer.port(),
            };
            if args.stream && usize::from(args.frame_bytes) > dev.max_frame_len() {
                return Err(format!(
                    "--frame-bytes {}: {} carries at most {} — choose a smaller frame",
                    args.frame_bytes,
                    args.iface,
                    dev.max_frame_len()
                ));
            }
            if args.stream {
                let r = stream(&mut dev, &ends, usize::from(args.frame_bytes), args.duration, &stop);
                if args.json {
                    println!("{}", serde_json::to_string_pretty(&r).expect("a report serializes"));
                } else {
                    println!(
                        "streaming {}-byte frames: {:.0} frames/s arrived ({:.2} Gbit/s), {:.0} frames/s sent",
                        r.frame_bytes, r.frames_per_sec, r.gbit_per_sec, r.sent_per_sec
                    );
                }
                if r.frames == 0 {
                    return Err(format!("the reflector counted no frame — is `xtcp reflect` serving {peer}?"));
                }
                return Ok(());
            }
            let template = frame(&ends, FRAME_LEN, PING);
            let r = ping(&mut dev, &template, args.in_flight, args.duration, &stop);
            if args.json {
                println!("{}", serde_json::to_string_pretty(&r).expect("a report serializes"));
            } else {
                println!(
                    "{} frames in flight: {:.0} frames/s; round trip µs p50 {} p99 {}; {} frames lost",
                    r.in_flight, r.frames_per_sec, r.p50_us, r.p99_us, r.lost
                );
            }
            if r.frames == 0 {
                return Err(format!("no frame came back — is `xtcp reflect` serving {peer}?"));
            }
            Ok(())
        }
    }
}

/// Bounces every TCP frame back until `stop`, except streamed frames, which it counts, and report requests, which
/// it answers with that count. Returns (frames bounced, streamed frames counted).
fn reflect(dev: &mut XskDevice, stop: &AtomicBool) -> (u64, u64) {
    let (mut frames, mut streamed) = (0u64, 0u64);
    let mut idle = 0u32;
    while !stop.load(Ordering::Relaxed) {
        let got = dev.receive(Instant::ZERO, 64, &mut |rx: &[u8], tx: &mut dyn Transmit| {
            let tcp = rx.len() >= TIME_AT && rx[12..14] == [0x08, 0x00] && rx[23] == 6;
            if !tcp {
                return;
            }
            match rx.get(KIND_AT) {
                Some(&STREAMED) => streamed += 1,
                Some(&REPORT_REQUEST) if rx.len() >= REPORT_LEN => {
                    let _ = tx.transmit(Instant::ZERO, rx.len(), &mut |out: &mut [u8]| {
                        swap(rx, out);
                        out[KIND_AT] = REPORT;
                        out[COUNT_AT..COUNT_AT + 8].copy_from_slice(&streamed.to_be_bytes());
                        fix_tcp_checksum(out);
                    });
                }
                _ => {
                    if tx.transmit(Instant::ZERO, rx.len(), &mut |out: &mut [u8]| swap(rx, out)) {
                        frames += 1;
                    }
                }
            }
        });
        dev.flush(Instant::ZERO);
        idle = if got == 0 { idle + 1 } else { 0 };
        if idle > 1_000_000 {
            // Idle for a while: wait in poll(2) rather than spin forever (a frame wakes us).
            let _ = dev.wait_rx(100);
        }
    }
    (frames, streamed)
}

/// `rx` with source and destination swapped at each layer, into `out`.
fn swap(rx: &[u8], out: &mut [u8]) {
    out.copy_from_slice(rx);
    let ihl = usize::from(rx[14] & 0x0f) * 4;
    out[0..6].copy_from_slice(&rx[6..12]);
    out[6..12].copy_from_slice(&rx[0..6]);
    out[26..30].copy_from_slice(&rx[30..34]);
    out[30..34].copy_from_slice(&rx[26..30]);
    let tcp = 14 + ihl;
    if rx.len() >= tcp + 4 {
        out[tcp..tcp + 2].copy_from_slice(&rx[tcp + 2..tcp + 4]);
        out[tcp + 2..tcp + 4].copy_from_slice(&rx[tcp..tcp + 2]);
    }
}

/// The client's and the reflector's addresses.
struct Ends {
    src_mac: [u8; 6],
    dst_mac: [u8; 6],
    src: Ipv4Addr,
    dst: Ipv4Addr,
    sport: u16,
    dport: u16,
}

/// A `len`-byte TCP frame of `kind` (ACK flag, no options) from us to the reflector, checksums filled in.
fn frame(e: &Ends, len: usize, kind: u8) -> Vec<u8> {
    let mut f = vec![0u8; len];
    f[0..6].copy_from_slice(&e.dst_mac);
    f[6..12].copy_from_slice(&e.src_mac);
    f[12..14].copy_from_slice(&[0x08, 0x00]);
    let ip_len = (len - 14) as u16;
    f[14] = 0x45;
    f[16..18].copy_from_slice(&ip_len.to_be_bytes());
    f[20] = 0x40; // DF
    f[22] = 64;
    f[23] = 6;
    f[26..30].copy_from_slice(&e.src.octets());
    f[30..34].copy_from_slice(&e.dst.octets());
    let ip_sum = checksum::checksum(&f[14..34]);
    f[24..26].copy_from_slice(&ip_sum.to_be_bytes());
    f[34..36].copy_from_slice(&e.sport.to_be_bytes());
    f[36..38].copy_from_slice(&e.dport.to_be_bytes());
    f[46] = 5 << 4;
    f[47] = 0x10; // ACK
    f[48..50].copy_from_slice(&0xffffu16.to_be_bytes());
    f[KIND_AT] = kind;
    fix_tcp_checksum(&mut f);
    f
}

/// Recomputes the TCP checksum of a frame built by [`frame`] (a 20-byte IPv4 header).
fn fix_tcp_checksum(out: &mut [u8]) {
    out[50..52].fill(0);
    let src = Ipv4Addr::new(out[26], out[27], out[28], out[29]);
    let dst = Ipv4Addr::new(out[30], out[31], out[32], out[33]);
    let seg = (out.len() - 34) as u32;
    let sum = checksum::combine(&[checksum::pseudo_header(src, dst, 6, seg), checksum::data(&out[34..])]);
    out[50..52].copy_from_slice(&(!sum).to_be_bytes());
}

/// Writes the send time into the template's payload and fixes the TCP checksum.
fn stamp(template: &[u8], out: &mut [u8], sent_us: u64) {
    out.copy_from_slice(template);
    out[TIME_AT..TIME_AT + 8].copy_from_slice(&sent_us.to_be_bytes());
    fix_tcp_checksum(out);
}

/// What the client measured.
#[derive(Debug, serde::Serialize)]
struct PingReport {
    in_flight: u32,
    frames: u64,
    elapsed_us: u64,
    frames_per_sec: f64,
    p50_us: u64,
    p90_us: u64,
    p99_us: u64,
    lost: u64,
}

fn ping(dev: &mut XskDevice, template: &[u8], in_flight: u32, duration: Duration, stop: &AtomicBool) -> PingReport {
    let epoch = std::time::Instant::now();
    let now_us = || epoch.elapsed().as_micros() as u64;
    let mut hist = xtcp::app::load::new_histogram();
    let (mut frames, mut lost, mut outstanding) = (0u64, 0u64, 0u32);
    let mut measuring_since: Option<u64> = None;
    let mut last_rx = 0u64;
    let end_us = (WARMUP + duration).as_micros() as u64;
    loop {
        let t = now_us();
        if t >= end_us || stop.load(Ordering::Relaxed) {
            break;
        }
        if measuring_since.is_none() && t >= WARMUP.as_micros() as u64 {
            measuring_since = Some(t);
            hist.reset();
            frames = 0;
            lost = 0;
        }
        if outstanding > 0 && t.saturating_sub(last_rx) > LOST_AFTER.as_micros() as u64 {
            lost += u64::from(outstanding);
            outstanding = 0;
        }
        while outstanding < in_flight {
            if !dev.transmit(Instant::ZERO, FRAME_LEN, &mut |out: &mut [u8]| stamp(template, out, t)) {
                break;
            }
            outstanding += 1;
            last_rx = t;
        }
        dev.flush(Instant::ZERO);
        let got = dev.receive(Instant::ZERO, 64, &mut |rx: &[u8], _tx: &mut dyn Transmit| {
            if rx.len() >= TIME_AT + 8 {
                let back = now_us();
                let sent = u64::from_be_bytes(rx[TIME_AT..TIME_AT + 8].try_into().expect("8 bytes"));
                let _ = hist.record(back.saturating_sub(sent).max(1));
                frames += 1;
            }
        });
        if got > 0 {
            outstanding = outstanding.saturating_sub(got as u32);
            last_rx = t;
        }
    }
    let elapsed_us = measuring_since.map_or(0, |s| now_us().saturating_sub(s)).max(1);
    PingReport {
        in_flight,
        frames,
        elapsed_us,
        frames_per_sec: frames as f64 * 1e6 / elapsed_us as f64,
        p50_us: hist.value_at_quantile(0.5),
        p90_us: hist.value_at_quantile(0.9),
        p99_us: hist.value_at_quantile(0.99),
        lost,
    }
}

/// What the streaming client measured.
#[derive(Debug, serde::Serialize)]
struct StreamReport {
    frame_bytes: usize,
    /// Frames the reflector counted between the two reports.
    frames: u64,
    /// Frames we sent in that time.
    sent: u64,
    elapsed_us: u64,
    /// Frames per second that arrived: the headline.
    frames_per_sec: f64,
    sent_per_sec: f64,
    /// `frames_per_sec` in Gbit/s of Ethernet frames (headers included, no preamble or FCS).
    gbit_per_sec: f64,
}

/// A report from the reflector: its count when our request of `asked_us` reached it.
#[derive(Debug, Clone, Copy)]
struct Count {
    asked_us: u64,
    count: u64,
    sent_then: u64,
}

/// Streams `frame_bytes`-byte frames at the reflector for `duration` after the warm-up, asking for its count at
/// both ends of the measured part.
fn stream(dev: &mut XskDevice, ends: &Ends, frame_bytes: usize, duration: Duration, stop: &AtomicBool) -> StreamReport {
    let epoch = std::time::Instant::now();
    let now_us = || epoch.elapsed().as_micros() as u64;
    let data = frame(ends, frame_bytes, STREAMED);
    let request = frame(ends, REPORT_LEN, REPORT_REQUEST);
    let (start_us, end_us) = (WARMUP.as_micros() as u64, (WARMUP + duration).as_micros() as u64);
    let mut sent = 0u64;
    // Requests sent and not answered yet: (asked at, frames we had sent by then).
    let mut asked: Vec<(u64, u64)> = Vec::new();
    let (mut first, mut last) = (None::<Count>, None::<Count>);
    loop {
        let t = now_us();
        let streaming = t < end_us && !stop.load(Ordering::Relaxed);
        if !streaming && (last.is_some() || t >= end_us + REPORT_WAIT.as_micros() as u64) {
            break;
        }
        if streaming {
            for _ in 0..64 {
                if !dev.transmit(Instant::ZERO, frame_bytes, &mut |out: &mut [u8]| out.copy_from_slice(&data)) {
                    break;
                }
                sent += 1;
            }
        }
        // A count at the start of the measured part, another once streaming ends; asked again if unanswered.
        let want = if streaming { t >= start_us && first.is_none() } else { last.is_none() };
        let due = asked.last().is_none_or(|&(at, _)| t.saturating_sub(at) >= REPORT_RETRY.as_micros() as u64);
        if want && due && dev.transmit(Instant::ZERO, REPORT_LEN, &mut |out: &mut [u8]| stamp(&request, out, t)) {
            asked.push((t, sent));
        }
        dev.flush(Instant::ZERO);
        dev.receive(Instant::ZERO, 64, &mut |rx: &[u8], _tx: &mut dyn Transmit| {
            if rx.len() < REPORT_LEN || rx[KIND_AT] != REPORT {
                return;
            }
            let at = u64::from_be_bytes(rx[TIME_AT..TIME_AT + 8].try_into().expect("8 bytes"));
            let count = u64::from_be_bytes(rx[COUNT_AT..COUNT_AT + 8].try_into().expect("8 bytes"));
            let Some(&(asked_us, sent_then)) = asked.iter().find(|&&(a, _)| a == at) else { return };
            let c = Count { asked_us, count, sent_then };
            if asked_us >= end_us || stop.load(Ordering::Relaxed) && first.is_some() {
                last = Some(c);
            } else if first.is_none() {
                first = Some(c);
            }
            asked.clear();
        });
    }
    let (frames, sent, elapsed_us) = match (first, last) {
        (Some(a), Some(b)) => {
            (b.count.saturating_sub(a.count), b.sent_then - a.sent_then, b.asked_us.saturating_sub(a.asked_us).max(1))
        }
        _ => (0, 0, 1),
    };
    let per_sec = |n: u64| n as f64 * 1e6 / elapsed_us as f64;
    StreamReport {
        frame_bytes,
        frames,
        sent,
        elapsed_us,
        frames_per_sec: per_sec(frames),
        sent_per_sec: per_sec(sent),
        gbit_per_sec: per_sec(frames) * frame_bytes as f64 * 8.0 / 1e9,
    }
}
