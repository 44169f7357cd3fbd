//! Seeded simulation: two xtcp stacks over a lossy, reordering, duplicating, corrupting link.
//!
//! Each seed picks the link's faults, the number of connections and how many bytes flow each way; every byte must
//! arrive in order exactly once, both sides must end CLOSED (through TIME_WAIT on the side that closed first) and
//! no connection or timer may be left. A failing seed is printed; `XTCP_SIM_SEED=<n> cargo test --test sim`
//! replays it alone, `XTCP_SIM_SEEDS=<n>` changes how many run.

mod common;

use std::collections::HashMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::Duration;

use rand::{Rng, RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use xtcp::engine::{ConnId, Stack, StackEvent};
use xtcp::nic::fault::Faults;
use xtcp::nic::sim::LinkConfig;
use xtcp::tcp::{Algorithm, CloseReason};
use xtcp::time::Instant;

/// One direction of one connection: what must be sent and what has been.
#[derive(Debug, Default)]
struct Flow {
    data: Vec<u8>,
    sent: usize,
    received: Vec<u8>,
}

#[derive(Debug, Default)]
struct End {
    id: Option<ConnId>,
    connected: bool,
    /// Turns in a row in which this end did not read.
    skipped: u32,
    /// (segments sent, retransmits, out-of-order segments received), as last seen.
    stats: (u64, u64, u64),
    closed: Option<CloseReason>,
    close_called: bool,
    peer_closed: bool,
}

/// One logical connection: client end (stack 0) and server end (stack 1).
#[derive(Debug, Default)]
struct Conn {
    ends: [End; 2],
    /// `flows[i]` is what stack `i` sends.
    flows: [Flow; 2],
}

struct Scenario {
    tcp: [xtcp::tcp::Config; 2],
    /// Per mille of the application's turns in which a side does not read (a slow reader: zero windows).
    skip_read_per_mille: [u32; 2],
    /// The most a side reads in one turn.
    read_chunk: [usize; 2],
    faults: Faults,
    latency: Duration,
    sizes: Vec<[usize; 2]>,
}

impl Scenario {
    fn new(seed: u64) -> Scenario {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let faults = Faults {
            loss_ppm: rng.gen_range(0..=100_000),
            duplicate_ppm: rng.gen_range(0..=20_000),
            corrupt_ppm: rng.gen_range(0..=10_000),
            corrupt_bits_max: 1,
            reorder_ppm: rng.gen_range(0..=100_000),
            reorder_delay_max: Duration::from_micros(rng.gen_range(1..=3000)),
            ..Faults::default()
        };
        let latency = Duration::from_micros(rng.gen_range(10..=2000));
        let mut tcp = [xtcp::tcp::Config::default(); 2];
        for cfg in tcp.iter_mut() {
            cfg.recv_buffer_bytes = 1 << rng.gen_range(11..=18);
            cfg.send_buffer_bytes = 1 << rng.gen_range(11..=18);
            cfg.mss = rng.gen_range(536..=1460);
            cfg.window_scaling = rng.gen_bool(0.8);
            cfg.timestamps = rng.gen_bool(0.8);
            cfg.nagle = rng.gen_bool(0.5);
            cfg.congestion = if rng.gen_bool(0.5) { Algorithm::Cubic } else { Algorithm::NewReno };
            // SACK is used only when both sides offer it: some runs mix, some run without.
            cfg.sack = rng.gen_bool(0.7);
            // FIN_WAIT_2's idle limit (60 s of silence from the peer) is policy, tested on its own in
            // src/tcp/tests.rs: with up to 10% loss here, two backed-off retransmissions of the peer lost in a row
            // (24 s, then 48 s apart) look like 72 s of silence, and the limit would end a connection that is alive.
            cfg.fin_wait_2_timeout = None;
        }
        let skip_read_per_mille = [rng.gen_range(0..=900), rng.gen_range(0..=900)];
        let read_chunk = [rng.gen_range(1..=16 * 1024), rng.gen_range(1..=16 * 1024)];
        let conns = rng.gen_range(1..=3);
        let sizes = (0..conns).map(|_| [rng.gen_range(0..=48 * 1024), rng.gen_range(0..=48 * 1024)]).collect();
        Scenario { tcp, skip_read_per_mille, read_chunk, faults, latency, sizes }
    }
}

/// What one run exercised, summed over all runs to show the faults really bit.
#[derive(Debug, Default, Clone, Copy)]
struct Tally {
    bytes: u64,
    segments: u64,
    retransmits: u64,
    ooo_segments: u64,
    dropped_frames: u64,
}

fn run(seed: u64) -> Result<Tally, String> {
    let sc = Scenario::new(seed);
    let link = LinkConfig { latency: sc.latency, ..LinkConfig::default() };
    let mut cfgs = common::configs(seed);
    for (cfg, tcp) in cfgs.iter_mut().zip(sc.tcp) {
        cfg.tcp = tcp;
    }
    let mut world = common::world(cfgs, link, sc.faults, seed);
    let mut app_rng = ChaCha8Rng::seed_from_u64(seed ^ 0xA99);
    let mut data_rng = ChaCha8Rng::seed_from_u64(seed ^ 0xDA7A);
    let mut conns: Vec<Conn> = sc
        .sizes
        .iter()
        .map(|&[up, down]| {
            let mut c = Conn::default();
            for (flow, n) in c.flows.iter_mut().zip([up, down]) {
                flow.data = vec![0; n];
                data_rng.fill_bytes(&mut flow.data);
            }
            c
        })
        .collect();
    for c in conns.iter_mut() {
        let id = world.stacks[0].connect(common::server_addr()).map_err(|e| format!("connect: {e}"))?;
        c.ends[0].id = Some(id);
    }
    // Server connections are matched to logical ones by the client's port.
    let mut by_client_port: HashMap<u16, usize> = HashMap::new();
    for (i, c) in conns.iter().enumerate() {
        let port = world.stacks[0].connection(c.ends[0].id.unwrap()).unwrap().local().port();
        by_client_port.insert(port, i);
    }
    let mut buf = vec![0u8; 16 * 1024];
    let mut tally = Tally::default();
    let mut failure: Option<String> = None;
    let limit = Instant::from_secs(3600);
    let finished = world.run(limit, |stacks: &mut [Stack; 2], _now| {
        for side in 0..2 {
            while let Some(ev) = stacks[side].next_event() {
                let (id, apply): (ConnId, fn(&mut End, StackEvent)) = match ev {
                    StackEvent::Accepted { conn, .. } => {
                        let port = stacks[side].connection(conn).unwrap().remote().port();
                        let Some(&i) = by_client_port.get(&port) else {
                            failure = Some(format!("accepted an unknown connection from port {port}"));
                            return true;
                        };
                        conns[i].ends[side].id = Some(conn);
                        (conn, |e, _| e.connected = true)
                    }
                    StackEvent::Connected(id) => (id, |e, _| e.connected = true),
                    StackEvent::Readable(id) | StackEvent::Writable(id) => (id, |_, _| {}),
                    StackEvent::PeerClosed(id) => (id, |e, _| e.peer_closed = true),
                    StackEvent::Closed(id, _) => (id, |e, ev| {
                        if let StackEvent::Closed(_, reason) = ev {
                            e.closed = Some(reason);
                        }
                    }),
                };
                if let Some(c) = conns.iter_mut().find(|c| c.ends[side].id == Some(id)) {
                    apply(&mut c.ends[side], ev);
                }
            }
            for c in conns.iter_mut() {
                let end = &mut c.ends[side];
                let Some(id) = end.id else { continue };
                if let Ok(conn) = stacks[side].connection(id) {
                    // The last look before the connection goes; its counters only grow.
                    let st = conn.stats();
                    end.stats = (st.segs_out, st.retransmits, st.ooo_segments);
                }
                if end.closed.is_some() || !end.connected {
                    continue;
                }
                // A slow reader skips turns, but not more than a few in a row: it only gets turns when the
                // network has something happening, and a reader that waits for a zero window to reopen on its own
                // would wait forever.
                let reads = end.skipped >= 3 || app_rng.gen_range(0..1000) >= sc.skip_read_per_mille[side];
                end.skipped = if reads { 0 } else { end.skipped + 1 };
                if reads {
                    loop {
                        let n = stacks[side].recv(id, &mut buf[..sc.read_chunk[side]]).unwrap_or(0);
                        c.flows[1 - side].received.extend_from_slice(&buf[..n]);
                        if n == 0 {
                            break;
                        }
                    }
                }
                let flow = &mut c.flows[side];
                if flow.sent < flow.data.len() {
                    if let Ok(n) = stacks[side].send(id, &flow.data[flow.sent..]) {
                        flow.sent += n;
                    }
                }
                if flow.sent == flow.data.len() && !end.close_called {
                    end.close_called = stacks[side].close(id).is_ok();
                }
            }
        }
        let all_closed = conns.iter().all(|c| c.ends.iter().all(|e| e.closed.is_some()));
        all_closed && stacks.iter().all(|s| s.slots_in_use() == 0)
    });
    if let Some(f) = failure {
        return Err(f);
    }
    if !finished {
        let states: Vec<Vec<String>> = world
            .stacks
            .iter()
            .map(|s| {
                s.connections()
                    .map(|(_, c)| {
                        format!(
                            "{} una={} nxt={} rcv_nxt={} wnd={} sendq={} recvq={} timers={:?}",
                            c.state(),
                            c.snd_una(),
                            c.snd_nxt(),
                            c.rcv_nxt(),
                            c.snd_wnd(),
                            c.send_queue_len(),
                            c.recv_queue_len(),
                            c.poll_at()
                        )
                    })
                    .collect()
            })
            .collect();
        let ends: Vec<_> = conns
            .iter()
            .map(|c| (c.ends[0].closed, c.ends[1].closed, c.flows[0].received.len(), c.flows[1].received.len()))
            .collect();
        return Err(format!(
            "did not finish by {limit}: states {states:?}, ends {ends:?}, counters {:?} {:?}",
            world.stacks[0].counters(),
            world.stacks[1].counters()
        ));
    }
    for (i, c) in conns.iter().enumerate() {
        for side in 0..2 {
            let flow = &c.flows[side];
            if flow.received != flow.data {
                let first_bad = flow.received.iter().zip(&flow.data).position(|(a, b)| a != b);
                return Err(format!(
                    "conn {i} direction {side}: received {} of {} bytes, first difference at {first_bad:?}; ends {:?}",
                    flow.received.len(),
                    flow.data.len(),
                    c.ends
                ));
            }
            if c.ends[side].closed != Some(CloseReason::Normal) {
                return Err(format!("conn {i} side {side} closed with {:?}", c.ends[side].closed));
            }
        }
    }
    for (i, s) in world.stacks.iter().enumerate() {
        if s.connection_count() != 0 || s.slots_in_use() != 0 || s.pending_timers() != 0 {
            return Err(format!(
                "stack {i} leaked {} connections and {} timers",
                s.connection_count(),
                s.pending_timers()
            ));
        }
    }
    for c in &conns {
        tally.bytes += (c.flows[0].data.len() + c.flows[1].data.len()) as u64;
        for e in &c.ends {
            tally.segments += e.stats.0;
            tally.retransmits += e.stats.1;
            tally.ooo_segments += e.stats.2;
        }
    }
    tally.dropped_frames = world.stacks.iter().map(|s| s.counters().total_drops()).sum();
    Ok(tally)
}

fn check(seed: u64) -> Result<Tally, String> {
    match catch_unwind(AssertUnwindSafe(|| run(seed))) {
        Ok(r) => r,
        Err(p) => Err(format!(
            "panicked: {}",
            p.downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default()
        )),
    }
}

#[test]
fn seeded_runs_deliver_every_byte_once_in_order_and_close_cleanly() {
    if let Ok(seed) = std::env::var("XTCP_SIM_SEED") {
        let seed: u64 = seed.parse().expect("XTCP_SIM_SEED must be a number");
        match check(seed) {
            Ok(t) => eprintln!("seed {seed}: {t:?}"),
            Err(e) => panic!("seed {seed}: {e}"),
        }
        return;
    }
    let seeds: u64 = std::env::var("XTCP_SIM_SEEDS").ok().and_then(|s| s.parse().ok()).unwrap_or(1000);
    let started = std::time::Instant::now();
    let mut total = Tally::default();
    let mut failures = Vec::new();
    let mut slowest: Vec<(std::time::Duration, u64)> = Vec::new();
    for seed in 0..seeds {
        let t0 = std::time::Instant::now();
        let result = check(seed);
        slowest.push((t0.elapsed(), seed));
        match result {
            Ok(t) => {
                total.bytes += t.bytes;
                total.segments += t.segments;
                total.retransmits += t.retransmits;
                total.ooo_segments += t.ooo_segments;
                total.dropped_frames += t.dropped_frames;
            }
            Err(e) => failures.push(format!("seed {seed}: {e}")),
        }
    }
    slowest.sort_unstable_by(|a, b| b.cmp(a));
    slowest.truncate(5);
    eprintln!("{seeds} seeded runs in {:.1?}: {total:?}; slowest {slowest:?}", started.elapsed());
    assert!(
        failures.is_empty(),
        "{} of {seeds} runs failed (replay one with XTCP_SIM_SEED=<seed> cargo test --test sim):\n{}",
        failures.len(),
        failures.join("\n")
    );
    // The faults bit: frames were lost and reordered, and the stacks recovered by retransmitting. (A fault
    // injector that stopped acting would leave every run on a clean link, passing for nothing.)
    if seeds >= 100 {
        assert!(total.retransmits > 0 && total.ooo_segments > 0 && total.dropped_frames > 0, "{total:?}");
    }
}

/// The interop test's impairment (5% loss, 25% reordering up to 1 ms, 1% duplication, 0.1% corruption), applied to
/// what each side sends; but one bit per corrupted frame, not up to three. The Internet checksum misses two flips
/// of the same bit position in opposite directions (about 3% of two-bit corruptions): over megabytes some get
/// through, as they would through any TCP, and the comparison would fail for the checksum's sake, not ours.
fn impaired() -> Faults {
    Faults {
        loss_ppm: 50_000,
        reorder_ppm: 250_000,
        reorder_delay_max: Duration::from_millis(1),
        duplicate_ppm: 10_000,
        corrupt_ppm: 1_000,
        corrupt_bits_max: 1,
        ..Faults::NONE
    }
}

/// What one bulk transfer measured: bytes each way, the virtual time it took, and the senders' counters.
#[derive(Debug)]
struct Bulk {
    bytes_each_way: usize,
    virtual_secs: f64,
    retransmits: u64,
    rto_timeouts: u64,
    /// Each side's connection counters at the end.
    stats: [xtcp::tcp::ConnectionStats; 2],
}

impl Bulk {
    /// Bytes per virtual second, each way.
    fn rate(&self) -> f64 {
        self.bytes_each_way as f64 / self.virtual_secs
    }
}

/// One connection moving `bytes` each way at once between two xtcp stacks (256 KiB buffers) through `faults`,
/// as the interop echo does; every byte must arrive intact. `tcp` is both sides' TCP settings.
fn bulk(tcp: xtcp::tcp::Config, faults: Faults, bytes: usize, seed: u64) -> Bulk {
    let mut cfgs = common::configs(seed);
    for cfg in cfgs.iter_mut() {
        cfg.tcp = tcp;
    }
    // A 1 Gbit/s link, so that a sender that resends needlessly pays for it in time.
    let link = LinkConfig { rate_bits_per_sec: Some(1_000_000_000), ..LinkConfig::default() };
    let mut world = common::world(cfgs, link, faults, seed);
    let mut data_rng = ChaCha8Rng::seed_from_u64(seed);
    let mut data = [vec![0u8; bytes], vec![0u8; bytes]];
    data_rng.fill_bytes(&mut data[0]);
    data_rng.fill_bytes(&mut data[1]);
    let mut ids: [Option<ConnId>; 2] = [Some(world.stacks[0].connect(common::server_addr()).unwrap()), None];
    let mut sent = [0usize; 2];
    let mut got = [Vec::with_capacity(bytes), Vec::with_capacity(bytes)];
    let mut counters = [xtcp::tcp::ConnectionStats::default(); 2];
    let mut buf = vec![0u8; 64 * 1024];
    let finished = world.run(Instant::from_secs(3600), |stacks: &mut [Stack; 2], _now| {
        for side in 0..2 {
            while let Some(ev) = stacks[side].next_event() {
                if let StackEvent::Accepted { conn, .. } = ev {
                    ids[side] = Some(conn);
                }
            }
            let Some(id) = ids[side] else { continue };
            let Ok(conn) = stacks[side].connection(id) else { continue };
            counters[side] = conn.stats();
            loop {
                let n = stacks[side].recv(id, &mut buf).unwrap_or(0);
                got[1 - side].extend_from_slice(&buf[..n]);
                if n == 0 {
                    break;
                }
            }
            if sent[side] < bytes {
                sent[side] += stacks[side].send(id, &data[side][sent[side]..]).unwrap_or(0);
            }
        }
        got.iter().all(|g| g.len() >= bytes)
    });
    assert!(finished, "seed {seed}: moved only {} and {} of {bytes} bytes", got[0].len(), got[1].len());
    for side in 0..2 {
        assert_eq!(got[side].len(), bytes, "seed {seed}: direction {side}: bytes delivered twice");
        let diffs: Vec<usize> = (0..bytes).filter(|&i| got[side][i] != data[side][i]).take(8).collect();
        let xor: Vec<u8> = diffs.iter().map(|&i| got[side][i] ^ data[side][i]).collect();
        assert!(
            diffs.is_empty(),
            "seed {seed}: direction {side}: the bytes arrived changed at {diffs:?} (xor {xor:?})"
        );
    }
    Bulk {
        bytes_each_way: bytes,
        virtual_secs: world.now().total_micros() as f64 / 1e6,
        retransmits: counters[0].retransmits + counters[1].retransmits,
        rto_timeouts: counters[0].rto_timeouts + counters[1].rto_timeouts,
        stats: counters,
    }
}

/// Throughput under the interop impairment, in virtual time (the simulator's clock: no wall-clock dependence), with
/// SACK off and on. Without SACK recovery waits for 200 ms timeouts; with it, and its probes, it should not.
/// `XTCP_SIM_VERBOSE=1` prints both sides' counters.
#[test]
fn bulk_transfer_through_5_percent_loss_both_ways() {
    let bytes = 4 << 20;
    let mut rate = [0.0f64; 2];
    let mut timeouts = [0u64; 2];
    for seed in 1..=3 {
        for (i, sack) in [false, true].into_iter().enumerate() {
            let r = bulk(xtcp::tcp::Config { sack, ..xtcp::tcp::Config::default() }, impaired(), bytes, seed);
            eprintln!(
                "seed {seed}, sack {sack}: {bytes} B each way in {:.2} virtual s = {:.0} B/s each way; {} retransmits, \
                 {} timeouts",
                r.virtual_secs,
                r.rate(),
                r.retransmits,
                r.rto_timeouts
            );
            if std::env::var_os("XTCP_SIM_VERBOSE").is_some() {
                eprintln!("{:?}\n{:?}", r.stats[0], r.stats[1]);
            }
            rate[i] += r.rate() / 3.0;
            timeouts[i] += r.rto_timeouts;
        }
    }
    eprintln!("mean B/s each way: without SACK {:.0}, with SACK {:.0}", rate[0], rate[1]);
    assert!(rate[1] > 4.0 * rate[0], "SACK recovery should beat timeouts: {rate:?}");
    assert!(timeouts[1] * 5 < timeouts[0], "timeouts without and with SACK: {timeouts:?}");
}
