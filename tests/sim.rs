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
use xtcp::tcp::{CloseReason, State};
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
    seed: u64,
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
        let conns = rng.gen_range(1..=3);
        let sizes = (0..conns).map(|_| [rng.gen_range(0..=48 * 1024), rng.gen_range(0..=48 * 1024)]).collect();
        Scenario { seed, faults, latency, sizes }
    }
}

fn run(seed: u64) -> Result<(), String> {
    let sc = Scenario::new(seed);
    let link = LinkConfig { latency: sc.latency, ..LinkConfig::default() };
    let mut world = common::world(common::configs(seed), link, sc.faults, seed);
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
    let mut failure: Option<String> = None;
    let limit = Instant::from_secs(3600);
    let finished = world.run(limit, |stacks: &mut [Stack; 2], _now| {
        for side in 0..2 {
            while let Some(ev) = stacks[side].next_event() {
                let (id, what) = match ev {
                    StackEvent::Accepted { conn, .. } => {
                        let port = stacks[side].connection(conn).unwrap().remote().port();
                        let Some(&i) = by_client_port.get(&port) else {
                            failure = Some(format!("accepted an unknown connection from port {port}"));
                            return true;
                        };
                        conns[i].ends[side].id = Some(conn);
                        continue;
                    }
                    StackEvent::Connected(id) => (id, None),
                    StackEvent::Readable(id) | StackEvent::Writable(id) => (id, None),
                    StackEvent::PeerClosed(id) => (id, Some(None)),
                    StackEvent::Closed(id, reason) => (id, Some(Some(reason))),
                };
                let Some(c) = conns.iter_mut().find(|c| c.ends[side].id == Some(id)) else { continue };
                match what {
                    Some(None) => c.ends[side].peer_closed = true,
                    Some(Some(reason)) => c.ends[side].closed = Some(reason),
                    None => {}
                }
            }
            for c in conns.iter_mut() {
                let end = &mut c.ends[side];
                let Some(id) = end.id else { continue };
                if end.closed.is_some() {
                    continue;
                }
                loop {
                    let n = stacks[side].recv(id, &mut buf).unwrap_or(0);
                    if n == 0 {
                        break;
                    }
                    c.flows[1 - side].received.extend_from_slice(&buf[..n]);
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
        all_closed && stacks.iter().all(|s| s.connection_count() == 0)
    });
    if let Some(f) = failure {
        return Err(f);
    }
    for (i, c) in conns.iter().enumerate() {
        for side in 0..2 {
            let flow = &c.flows[side];
            if flow.received != flow.data {
                let first_bad = flow.received.iter().zip(&flow.data).position(|(a, b)| a != b);
                return Err(format!(
                    "conn {i} direction {side}: received {} of {} bytes, first difference at {first_bad:?}",
                    flow.received.len(),
                    flow.data.len()
                ));
            }
            if c.ends[side].closed != Some(CloseReason::Normal) {
                return Err(format!("conn {i} side {side} closed with {:?}", c.ends[side].closed));
            }
        }
    }
    if !finished {
        let states: Vec<_> =
            world.stacks.iter().map(|s| s.connections().map(|(_, c)| c.state()).collect::<Vec<State>>()).collect();
        return Err(format!("did not finish by {limit}: states {states:?}"));
    }
    for (i, s) in world.stacks.iter().enumerate() {
        if s.connection_count() != 0 || s.pending_timers() != 0 {
            return Err(format!(
                "stack {i} leaked {} connections and {} timers",
                s.connection_count(),
                s.pending_timers()
            ));
        }
    }
    Ok(())
}

fn check(seed: u64) -> Result<(), String> {
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
        if let Err(e) = check(seed) {
            panic!("seed {seed}: {e}");
        }
        return;
    }
    let seeds: u64 = std::env::var("XTCP_SIM_SEEDS").ok().and_then(|s| s.parse().ok()).unwrap_or(1000);
    let started = std::time::Instant::now();
    let failures: Vec<String> =
        (0..seeds).filter_map(|seed| check(seed).err().map(|e| format!("seed {seed}: {e}"))).collect();
    eprintln!("{seeds} seeded runs in {:.1?}", started.elapsed());
    assert!(
        failures.is_empty(),
        "{} of {seeds} runs failed (replay one with XTCP_SIM_SEED=<seed> cargo test --test sim):\n{}",
        failures.len(),
        failures.join("\n")
    );
}
