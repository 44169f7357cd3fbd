//! The engine (one core's stack) end to end over scripted devices and the simulated link: what happens to
//! segments that find no connection, the limits that bite, RFC 6191 reuse of a TIME_WAIT 4-tuple, and bad frames.

mod common;

use std::net::{Ipv4Addr, SocketAddrV4};

use common::{client_frame, scripted_server, sent_segments, syn, SERVER_IP};
use proptest::prelude::*;
use xtcp::engine::sim::SimWorld;
use xtcp::engine::{Drop, StackConfig, StackEvent, SynCookieMode};
use xtcp::nic::fault::Faults;
use xtcp::nic::sim::LinkConfig;
use xtcp::tcp::{Algorithm, CloseReason, State};
use xtcp::time::Instant;
use xtcp::wire::{EthernetAddress, SeqNumber, TcpFlags};

#[test]
fn connect_to_a_closed_port_is_refused_with_rst() {
    let mut world = common::world(common::configs(7), LinkConfig::default(), Faults::default(), 7);
    let id = world.stacks[0].connect(SocketAddrV4::new(SERVER_IP, 81)).unwrap();
    let mut reason = None;
    world.run(Instant::from_secs(10), |stacks, _| {
        while let Some(ev) = stacks[0].next_event() {
            if let StackEvent::Closed(c, r) = ev {
                assert_eq!(c, id);
                reason = Some(r);
            }
        }
        reason.is_some()
    });
    assert_eq!(reason, Some(CloseReason::Refused));
    assert_eq!(world.stacks[1].counters().rst_sent, 1);
    assert_eq!(world.stacks[1].counters().dropped(Drop::NoConnection), 1);
    assert_eq!(world.stacks[0].counters().conns_reset, 1);
}

#[test]
fn syn_to_a_closed_port_gets_rst_ack_and_a_bare_ack_gets_rst() {
    let (mut s, mut dev) = scripted_server(common::configs(1)[1].clone());
    let mut to_81 = syn(40000, 1000);
    to_81.dst_port = 81;
    dev.rx.push_back(client_frame(&to_81));
    let mut stray_ack = syn(40001, 5);
    stray_ack.flags = TcpFlags::ACK;
    stray_ack.ack_number = SeqNumber(777);
    dev.rx.push_back(client_frame(&stray_ack));
    s.poll(Instant::ZERO, &mut dev);
    let out = sent_segments(&dev.tx);
    // RFC 9293 §3.10.7.1: <SEQ=0><ACK=SEG.SEQ+SEG.LEN><CTL=RST,ACK>, then <SEQ=SEG.ACK><CTL=RST>.
    assert_eq!(out[0], (TcpFlags::RST | TcpFlags::ACK, 0, 1001, 40000));
    assert_eq!(out[1], (TcpFlags::RST, 777, 0, 40001));
}

#[test]
fn syn_backlog_limit_drops_and_counts_without_cookies() {
    let mut cfg = common::configs(2)[1].clone();
    cfg.syn_backlog = 2;
    cfg.syn_cookies = SynCookieMode::Never;
    let (mut s, mut dev) = scripted_server(cfg);
    for port in 0..5 {
        dev.rx.push_back(client_frame(&syn(41000 + port, 1)));
    }
    s.poll(Instant::ZERO, &mut dev);
    let synacks = sent_segments(&dev.tx).iter().filter(|s| s.0 == TcpFlags::SYN | TcpFlags::ACK).count();
    assert_eq!(synacks, 2);
    assert_eq!(s.counters().dropped(Drop::SynBacklogFull), 3);
    assert_eq!(s.state_counts()[3], 2, "two connections in SYN_RECEIVED");
}

#[test]
fn past_the_syn_backlog_syns_get_cookies_and_no_state() {
    let mut cfg = common::configs(2)[1].clone();
    cfg.syn_backlog = 2;
    let (mut s, mut dev) = scripted_server(cfg);
    for port in 0..5 {
        dev.rx.push_back(client_frame(&syn(41000 + port, 1)));
    }
    s.poll(Instant::ZERO, &mut dev);
    let synacks = sent_segments(&dev.tx).iter().filter(|s| s.0 == TcpFlags::SYN | TcpFlags::ACK).count();
    assert_eq!(synacks, 5, "two from the backlog, three with cookies");
    assert_eq!(s.counters().syn_cookies_sent, 3);
    assert_eq!(s.counters().dropped(Drop::SynBacklogFull), 0);
    assert_eq!((s.state_counts()[3], s.connection_count()), (2, 2), "only the backlog holds state");
}

/// Runs an echo of `bytes` over a fresh world whose server has `server` settings: the client sends, the server
/// echoes, both sides' bytes are checked. Returns the world and what the server's connection negotiated:
/// (window scales, SACK, timestamps).
fn echo_through(server: StackConfig, bytes: usize, faults: Faults, seed: u64) -> (SimWorld, (u8, u8), bool, bool) {
    let mut cfgs = common::configs(seed);
    cfgs[1] = server;
    let mut world = common::world(cfgs, LinkConfig::default(), faults, seed);
    let client = world.stacks[0].connect(common::server_addr()).unwrap();
    let data: Vec<u8> = (0..bytes).map(|i| (i % 251) as u8).collect();
    let (mut sent, mut got, mut echoed_back, mut back) = (0, Vec::new(), 0usize, Vec::new());
    let mut seen = None;
    let mut buf = vec![0u8; 65536];
    let done = world.run(Instant::from_secs(120), |stacks, _| {
        while let Some(ev) = stacks[1].next_event() {
            if let StackEvent::Accepted { conn, .. } = ev {
                let c = stacks[1].connection(conn).unwrap();
                seen = Some((conn, c.window_scales(), c.sack_enabled(), c.timestamps_enabled()));
            }
        }
        while stacks[0].next_event().is_some() {}
        if sent < data.len() {
            sent += stacks[0].send(client, &data[sent..]).unwrap_or(0);
        }
        if let Some((conn, ..)) = seen {
            loop {
                let n = stacks[1].recv(conn, &mut buf).unwrap_or(0);
                if n == 0 {
                    break;
                }
                got.extend_from_slice(&buf[..n]);
            }
            if echoed_back < got.len() {
                echoed_back += stacks[1].send(conn, &got[echoed_back..]).unwrap_or(0);
            }
        }
        let n = stacks[0].recv(client, &mut buf).unwrap_or(0);
        back.extend_from_slice(&buf[..n]);
        back.len() == bytes
    });
    assert!(done, "the echo did not finish");
    assert!(got == data && back == data, "bytes arrived intact both ways");
    let (_, scales, sack, ts) = seen.unwrap();
    (world, scales, sack, ts)
}

#[test]
fn a_cookie_connection_negotiates_like_a_backlog_one_and_carries_data() {
    let mut cfg = common::configs(21)[1].clone();
    cfg.syn_cookies = SynCookieMode::Always;
    // 2 MB each way with 2% loss: the window scale and SACK from the cookie are what make it go.
    let faults = Faults { loss_ppm: 20_000, ..Faults::default() };
    let (world, scales, sack, ts) = echo_through(cfg, 2 << 20, faults, 21);
    let c = world.stacks[1].counters();
    assert_eq!((c.syn_cookies_sent, c.syn_cookies_valid, c.syn_cookies_invalid), (1, 1, 0));
    let (_, plain_scales, plain_sack, plain_ts) = echo_through(common::configs(21)[1].clone(), 1000, faults, 21);
    assert_eq!((scales, sack, ts), (plain_scales, plain_sack, plain_ts), "the same options as without a cookie");
    assert!(scales.0 > 0 && sack && ts);
}

#[test]
fn a_stacks_tcp_totals_sum_its_connections_counters_and_keep_them_when_they_are_gone() {
    let total = |s: &xtcp::engine::Stack, name: &str| s.tcp_totals().iter().find(|(n, _)| *n == name).unwrap().1;
    let live = |s: &xtcp::engine::Stack, f: fn(&xtcp::tcp::ConnectionStats) -> u64| -> u64 {
        s.connections().map(|(_, c)| f(&c.stats())).sum()
    };
    // 256 KiB each way through 3% loss: retransmissions on both sides.
    let faults = Faults { loss_ppm: 30_000, ..Faults::default() };
    let (mut world, ..) = echo_through(common::configs(26)[1].clone(), 256 << 10, faults, 26);
    let mut before = Vec::new();
    for s in &world.stacks {
        assert_eq!(s.connection_count(), 1);
        assert!(total(s, "retransmits") > 0, "3% loss makes retransmissions");
        assert_eq!(total(s, "retransmits"), live(s, |c| c.retransmits));
        assert_eq!(total(s, "dup_acks"), live(s, |c| c.dup_acks));
        assert_eq!(total(s, "bytes_in"), 256 << 10);
        assert_eq!(s.tcp_totals().len(), xtcp::tcp::ConnectionStats::NAMED_LEN);
        before.push(s.tcp_totals());
    }
    // Both close; once the connections are gone (the server's after TIME_WAIT) their counters stay in the totals,
    // with only the teardown's few segments (and, through the loss, their resends) added.
    world.run(world.now() + core::time::Duration::from_secs(150), |stacks, _| {
        for s in stacks.iter_mut() {
            while s.next_event().is_some() {}
            let conns: Vec<_> = s.connections().map(|(id, _)| id).collect();
            for c in conns {
                let _ = s.close(c);
            }
        }
        stacks.iter().all(|s| s.connection_count() == 0)
    });
    for (s, before) in world.stacks.iter().zip(before) {
        assert_eq!(s.connection_count(), 0);
        for ((name, now), (_, then)) in s.tcp_totals().iter().zip(before) {
            match *name {
                "bytes_in" | "bytes_out" => assert_eq!(*now, then, "{name}"),
                _ => assert!(*now >= then && *now <= then + 8, "{name}: {then} then, {now} now"),
            }
        }
    }
}

#[test]
fn a_cookie_connection_without_timestamps_still_works() {
    let mut cfgs = common::configs(22);
    cfgs[0].tcp.timestamps = false;
    cfgs[1].syn_cookies = SynCookieMode::Always;
    let mut world = common::world(cfgs, LinkConfig::default(), Faults::default(), 22);
    let client = world.stacks[0].connect(common::server_addr()).unwrap();
    let mut accepted = None;
    world.run(Instant::from_secs(5), |stacks, _| {
        while let Some(ev) = stacks[1].next_event() {
            if let StackEvent::Accepted { conn, .. } = ev {
                accepted = Some(conn);
                stacks[1].send(conn, b"hello").unwrap();
            }
        }
        stacks[0].connection(client).unwrap().recv_queue_len() == 5
    });
    let conn = world.stacks[1].connection(accepted.expect("accepted")).unwrap();
    assert_eq!((conn.window_scales(), conn.sack_enabled(), conn.timestamps_enabled()), ((0, 0), false, false));
    assert_eq!(conn.send_mss(), 1460, "the peer's MSS, rounded down to the cookie's table");
    assert_eq!(world.stacks[1].counters().syn_cookies_valid, 1);
}

#[test]
fn an_ack_with_no_cookie_of_ours_gets_rst_and_is_counted() {
    let mut cfg = common::configs(23)[1].clone();
    cfg.syn_cookies = SynCookieMode::Always;
    let (mut s, mut dev) = scripted_server(cfg);
    let mut forged = syn(40001, 5);
    forged.flags = TcpFlags::ACK;
    forged.ack_number = SeqNumber(777);
    dev.rx.push_back(client_frame(&forged));
    s.poll(Instant::ZERO, &mut dev);
    assert_eq!(sent_segments(&dev.tx), [(TcpFlags::RST, 777, 0, 40001)]);
    assert_eq!((s.counters().syn_cookies_invalid, s.connection_count()), (1, 0));
}

/// Completes a cookie handshake from the client's `port` on the scripted server `s`: the SYN, then an ACK of the
/// SYN-ACK's cookie carrying `data`. Returns the server's ISS.
fn cookie_handshake(s: &mut xtcp::engine::Stack, dev: &mut common::Script, port: u16, data: &'static [u8]) -> u32 {
    dev.tx.clear();
    dev.rx.push_back(client_frame(&syn(port, 1000)));
    s.poll(Instant::ZERO, dev);
    let (flags, iss, ..) = sent_segments(&dev.tx)[0];
    assert_eq!(flags, TcpFlags::SYN | TcpFlags::ACK);
    let mut ack = syn(port, 1001);
    ack.flags = if data.is_empty() { TcpFlags::ACK } else { TcpFlags::ACK | TcpFlags::PSH };
    ack.ack_number = SeqNumber(iss.wrapping_add(1));
    ack.options.mss = None;
    ack.payload = data;
    dev.rx.push_back(client_frame(&ack));
    s.poll(Instant::ZERO, dev);
    iss
}

#[test]
fn a_cookie_ack_carrying_data_is_held_to_the_buffer_limit() {
    let mut cfg = common::configs(28)[1].clone();
    cfg.syn_cookies = SynCookieMode::Always;
    cfg.max_buffer_bytes = 1;
    let (mut s, mut dev) = scripted_server(cfg);
    // One connection takes the memory: its data waits unread.
    let iss = cookie_handshake(&mut s, &mut dev, 46000, b"");
    let mut data = syn(46000, 1001);
    data.flags = TcpFlags::ACK | TcpFlags::PSH;
    data.ack_number = SeqNumber(iss.wrapping_add(1));
    data.options.mss = None;
    data.payload = &[7; 100];
    dev.rx.push_back(client_frame(&data));
    s.poll(Instant::ZERO, &mut dev);
    let held = s.buffer_bytes();
    assert!(held >= 1, "the first connection holds its data");
    assert_eq!(s.counters().dropped(Drop::MemoryFull), 0);
    // A second cookie handshake whose ACK carries 100 bytes: the connection is made, the data is not taken.
    cookie_handshake(&mut s, &mut dev, 46001, &[9; 100]);
    let c = s.counters();
    assert_eq!((c.syn_cookies_valid, s.connection_count()), (2, 2), "{c:?}");
    assert_eq!(c.dropped(Drop::MemoryFull), 1, "{c:?}");
    assert_eq!(s.buffer_bytes(), held);
    let second = s.connections().find(|(_, c)| c.remote().port() == 46001).unwrap().1;
    assert_eq!((second.state(), second.recv_queue_len(), second.rcv_nxt()), (State::Established, 0, SeqNumber(1001)));
}

#[test]
fn past_the_time_wait_limit_connections_close_at_once() {
    let mut cfgs = common::configs(24);
    cfgs[1].max_time_wait = 2;
    let mut world = common::world(cfgs, LinkConfig::default(), Faults::default(), 24);
    // Five connections, the server closing first each time: it would hold five in TIME_WAIT.
    for _ in 0..5 {
        world.stacks[0].connect(common::server_addr()).unwrap();
    }
    let done = world.run(Instant::from_secs(10), |stacks, _| {
        server_closes_first(stacks);
        stacks[0].connection_count() == 0 && stacks[1].state_counts()[3..8].iter().sum::<usize>() == 0
    });
    assert!(done, "the connections did not close");
    assert_eq!(world.stacks[1].state_counts()[8], 2, "two in TIME_WAIT");
    assert_eq!(world.stacks[1].counters().time_wait_limited, 3);
    assert_eq!(world.stacks[1].counters().conns_closed, 3, "the three past the limit closed normally");
    // When those two end, the room is back.
    world.run(Instant::from_secs(100), |stacks, _| stacks[1].connection_count() == 0);
    assert_eq!((world.stacks[1].connection_count(), world.stacks[1].slots_in_use()), (0, 0));
}

#[test]
fn connection_table_limit_drops_and_counts() {
    let mut cfg = common::configs(3)[1].clone();
    cfg.max_connections = 3;
    let (mut s, mut dev) = scripted_server(cfg);
    for port in 0..5 {
        dev.rx.push_back(client_frame(&syn(42000 + port, 1)));
    }
    s.poll(Instant::ZERO, &mut dev);
    assert_eq!(s.connection_count(), 3);
    assert_eq!(s.counters().dropped(Drop::TableFull), 2);
}

#[test]
fn half_open_connections_time_out_and_free_everything() {
    let (mut s, mut dev) = scripted_server(common::configs(4)[1].clone());
    dev.rx.push_back(client_frame(&syn(43000, 1)));
    s.poll(Instant::ZERO, &mut dev);
    assert_eq!(s.connection_count(), 1);
    // Nobody answers the SYN-ACK: it is retransmitted with backoff, then the connection goes back to LISTEN.
    let mut now = Instant::ZERO;
    while let Some(t) = s.poll_at() {
        now = t.max(now);
        s.poll(now, &mut dev);
        assert!(now < Instant::from_secs(600), "the half-open connection never went away");
    }
    let synacks = sent_segments(&dev.tx).iter().filter(|s| s.0 == TcpFlags::SYN | TcpFlags::ACK).count();
    assert_eq!(synacks, 1 + 6, "the first SYN-ACK and syn_retries resends");
    assert_eq!((s.connection_count(), s.slots_in_use(), s.pending_timers()), (0, 0, 0));
    assert!(s.next_event().is_none(), "a connection the application never saw closes without a word");
}

/// A world seeded with `seed` whose one connection the server closed first: the server holds it in TIME_WAIT, the
/// client has let go of it. Returns the world and the client's port.
fn server_in_time_wait(seed: u64) -> (SimWorld, u16) {
    let mut world = common::world(common::configs(seed), LinkConfig::default(), Faults::default(), seed);
    let client = world.stacks[0].connect(common::server_addr()).unwrap();
    let client_port = world.stacks[0].connection(client).unwrap().local().port();
    world.run(Instant::from_secs(5), |stacks, _| {
        server_closes_first(stacks);
        stacks[1].state_counts()[8] == 1 && stacks[0].connection_count() == 0
    });
    (world, client_port)
}

/// One turn of an application pair where the server closes each connection as soon as it is accepted (so it
/// holds TIME_WAIT) and the client closes when the server did.
fn server_closes_first(stacks: &mut [xtcp::engine::Stack; 2]) {
    while let Some(ev) = stacks[1].next_event() {
        if let StackEvent::Accepted { conn, .. } = ev {
            stacks[1].close(conn).unwrap();
        }
    }
    while let Some(ev) = stacks[0].next_event() {
        if let StackEvent::PeerClosed(c) = ev {
            stacks[0].close(c).unwrap();
        }
    }
}

#[test]
fn new_syn_takes_over_a_time_wait_tuple_with_a_higher_sequence_number() {
    // The server closes first, so the server holds TIME_WAIT; then a SYN for the same 4-tuple arrives.
    let mut world = common::world(common::configs(5), LinkConfig::default(), Faults::default(), 5);
    let client = world.stacks[0].connect(common::server_addr()).unwrap();
    let client_port = world.stacks[0].connection(client).unwrap().local().port();
    let mut server_rcv_nxt = None;
    let done = world.run(Instant::from_secs(5), |stacks, _| {
        server_closes_first(stacks);
        let tw = stacks[1].connections().find(|(_, c)| c.state() == State::TimeWait).map(|(_, c)| c.rcv_nxt());
        server_rcv_nxt = tw;
        tw.is_some() && stacks[0].connection_count() == 0
    });
    assert!(done, "the server did not reach TIME_WAIT");
    let rcv_nxt = server_rcv_nxt.unwrap();
    let mut reopen = syn(client_port, rcv_nxt.0.wrapping_add(100_000));
    reopen.options.timestamp = None;
    let frame = client_frame(&reopen);
    let now = world.now();
    world.devices[0].transmit(now, frame.len(), &mut |buf| buf.copy_from_slice(&frame));
    // The client stack has no such connection: it answers the new SYN-ACK with RST, which is how we see it came.
    let answered = world.run(now + std::time::Duration::from_secs(1), |stacks, _| stacks[0].counters().rst_sent >= 1);
    assert!(answered, "no SYN-ACK came back for the new SYN");
    assert_eq!(world.stacks[1].counters().time_wait_reopened, 1);
    assert_eq!(world.stacks[1].counters().time_wait_refused, 0);
    let mut closed = Vec::new();
    while let Some(ev) = world.stacks[1].next_event() {
        if let StackEvent::Closed(_, reason) = ev {
            closed.push(reason);
        }
    }
    assert_eq!(closed, [CloseReason::Normal], "the TIME_WAIT incarnation's application hears that it ended");
}

#[test]
fn old_syn_for_a_time_wait_tuple_does_not_reopen_it() {
    let (mut world, client_port) = server_in_time_wait(6);
    let irs = world.stacks[1].connections().next().map(|(_, c)| c.irs()).unwrap();
    let mut old = syn(client_port, irs.0);
    old.options.timestamp = None;
    let frame = client_frame(&old);
    let now = world.now();
    world.devices[0].transmit(now, frame.len(), &mut |buf| buf.copy_from_slice(&frame));
    world.settle();
    world.advance(Instant::from_secs(10));
    world.settle();
    assert_eq!(world.stacks[1].counters().time_wait_reopened, 0);
    assert_eq!(world.stacks[1].counters().time_wait_refused, 1);
    assert_eq!(world.stacks[1].state_counts()[8], 1, "still in TIME_WAIT: {:?}", world.stacks[1].state_counts());
}

/// Linux reopens a TIME_WAIT 4-tuple for a SYN only when a listener takes it (`tcp_v4_rcv`, `TCP_TW_SYN`); with
/// none, the TIME_WAIT socket stays and answers the SYN with an ACK. Here the client closed first and holds
/// TIME_WAIT on its ephemeral port, where nothing listens, and the server's side sends a SYN past RCV.NXT.
#[test]
fn a_syn_to_a_time_wait_port_with_no_listener_is_acked_and_the_time_wait_stays() {
    let mut world = common::world(common::configs(15), LinkConfig::default(), Faults::default(), 15);
    let client = world.stacks[0].connect(common::server_addr()).unwrap();
    let client_port = world.stacks[0].connection(client).unwrap().local().port();
    let done = world.run(Instant::from_secs(5), |stacks, _| {
        while let Some(ev) = stacks[0].next_event() {
            if let StackEvent::Connected(c) = ev {
                stacks[0].close(c).unwrap();
            }
        }
        while let Some(ev) = stacks[1].next_event() {
            if let StackEvent::PeerClosed(c) = ev {
                stacks[1].close(c).unwrap();
            }
        }
        stacks[0].state_counts()[8] == 1 && stacks[1].connection_count() == 0
    });
    assert!(done, "the client did not reach TIME_WAIT");
    let rcv_nxt = world.stacks[0].connections().next().map(|(_, c)| c.rcv_nxt()).unwrap();
    let mut reopen = syn(common::PORT, rcv_nxt.0.wrapping_add(100_000));
    reopen.dst_port = client_port;
    reopen.options.timestamp = None;
    let later = world.now() + std::time::Duration::from_secs(1);
    let (mut dev, stack) = (common::Script::default(), &mut world.stacks[0]);
    assert!(stack.connections().next().unwrap().1.accepts_reopen(&reopen), "RFC 6191 alone would take it");
    dev.rx.push_back(common::server_frame(&reopen));
    stack.poll(later, &mut dev);
    let c = stack.counters();
    assert_eq!((c.time_wait_reopened, c.time_wait_refused, c.rst_sent), (0, 1, 0), "{c:?}");
    assert_eq!(c.dropped(Drop::NoConnection), 0);
    assert_eq!(stack.state_counts()[8], 1, "still in TIME_WAIT");
    let out = sent_segments(&dev.tx);
    let acked =
        matches!(out[..], [(f, _, ack, port)] if f == TcpFlags::ACK && ack == rcv_nxt.0 && port == common::PORT);
    assert!(acked, "one ACK of RCV.NXT: {out:?}");
}

/// Linux turns a segment for a TIME_WAIT socket aside before its signature scan (`tcp_v4_rcv` goes to
/// `do_time_wait` first), so one carrying a TCP-MD5 option is still answered there; only a SYN that reopens the
/// 4-tuple goes on to the listener and the scan, and is dropped. So does xtcp.
#[test]
fn a_signed_segment_for_a_time_wait_connection_is_answered_as_linux_answers_it() {
    use xtcp::wire::{TcpFlags, TcpOptions, TcpPacket};
    let (mut world, client_port) = server_in_time_wait(14);
    let (rcv_nxt, snd_nxt) = world.stacks[1].connections().next().map(|(_, c)| (c.rcv_nxt(), c.snd_nxt())).unwrap();
    // NOP, NOP and an 18-byte TCP-MD5 option: what the signature scan refuses (xtcp holds no key).
    let md5: Vec<u8> = [1, 1, 19, 18].into_iter().chain([0xab; 16]).collect();
    let signed = |mut seg: xtcp::wire::TcpRepr<'static>| {
        seg.options = TcpOptions::default();
        seg.payload = &[];
        let mut frame = client_frame(&seg);
        frame.extend_from_slice(&md5);
        let mut ip = xtcp::wire::Ipv4Packet::new_unchecked(&mut frame[14..]);
        ip.set_total_len(ip.total_len() + md5.len() as u16);
        ip.fill_checksum();
        let mut tcp = TcpPacket::new_unchecked(&mut frame[34..]);
        tcp.set_header_len(20 + md5.len());
        tcp.fill_checksum(common::CLIENT_IP, SERVER_IP);
        frame
    };
    // A SYN that would reopen the 4-tuple, signed: it goes on to the scan, which drops it; TIME_WAIT stays.
    let before = world.stacks[1].counters().clone();
    let frame = signed(syn(client_port, rcv_nxt.0.wrapping_add(100_000)));
    let now = world.now();
    world.devices[0].transmit(now, frame.len(), &mut |buf| buf.copy_from_slice(&frame));
    world.pass(now + std::time::Duration::from_millis(100), std::time::Duration::from_millis(1));
    let after = world.stacks[1].counters().clone();
    assert_eq!(after.dropped(Drop::Unsupported), before.dropped(Drop::Unsupported) + 1, "{after:?}");
    assert_eq!((after.time_wait_reopened, after.tx_frames), (0, before.tx_frames), "{after:?}");
    assert_eq!(world.stacks[1].state_counts()[8], 1, "still in TIME_WAIT");
    // The client's FIN again, as if the server's last ACK had been lost: TIME_WAIT answers it with an ACK, past
    // the half second that limits such answers (Linux's `tcp_invalid_ratelimit`).
    world.pass(world.now() + std::time::Duration::from_secs(1), std::time::Duration::from_millis(10));
    let mut fin = syn(client_port, (rcv_nxt - 1).0);
    fin.flags = TcpFlags(TcpFlags::FIN.0 | TcpFlags::ACK.0);
    fin.ack_number = snd_nxt;
    let before = world.stacks[1].counters().clone();
    let frame = signed(fin);
    let now = world.now();
    world.devices[0].transmit(now, frame.len(), &mut |buf| buf.copy_from_slice(&frame));
    world.pass(now + std::time::Duration::from_millis(100), std::time::Duration::from_millis(1));
    let after = world.stacks[1].counters().clone();
    assert_eq!(after.dropped(Drop::Unsupported), before.dropped(Drop::Unsupported), "read without the scan: {after:?}");
    assert_eq!(after.tx_frames, before.tx_frames + 1, "the FIN is acknowledged again: {after:?}");
}

/// A SYN from the client's `port` whose option area is `options` (a multiple of 4 bytes) as written.
fn syn_with_raw_options(port: u16, options: &[u8]) -> Vec<u8> {
    use xtcp::wire::{TcpOptions, TcpPacket};
    let mut seg = syn(port, 1);
    seg.options = TcpOptions::default();
    seg.payload = options;
    let mut frame = client_frame(&seg);
    let mut tcp = TcpPacket::new_unchecked(&mut frame[34..]);
    tcp.set_header_len(20 + options.len());
    tcp.fill_checksum(common::CLIENT_IP, SERVER_IP);
    frame
}

/// As Linux (`tcp_parse_options`), a SYN whose options end in a malformed one is answered with the options read
/// before it, and counted; one signed with TCP-MD5 is dropped, as Linux drops it holding no key.
#[test]
fn a_syn_with_a_malformed_option_is_taken_with_the_options_before_it_and_counted() {
    use xtcp::wire::{EthernetFrame, Ipv4Packet, TcpOptions, TcpPacket};
    let (mut s, mut dev) = scripted_server(common::configs(13)[1].clone());
    // MSS 1000, NOP, window scale 7, NOP NOP, then timestamps of length 10 with two bytes left.
    dev.rx.push_back(syn_with_raw_options(45000, &[2, 4, 3, 0xe8, 1, 3, 3, 7, 1, 1, 8, 10]));
    s.poll(Instant::ZERO, &mut dev);
    assert_eq!(sent_segments(&dev.tx), [(TcpFlags::SYN | TcpFlags::ACK, sent_segments(&dev.tx)[0].1, 2, 45000)]);
    let ip = Ipv4Packet::new_checked(EthernetFrame::new_checked(&dev.tx[0][..]).unwrap().payload()).unwrap();
    let syn_ack = TcpOptions::parse(TcpPacket::new_checked(ip.payload()).unwrap().options()).unwrap();
    assert!(syn_ack.window_scale.is_some(), "the window scale before the bad option was read: {syn_ack:?}");
    assert_eq!(syn_ack.timestamp, None, "the timestamps were not: {syn_ack:?}");
    let c = s.counters();
    assert_eq!((c.tcp_in, c.malformed_options, c.total_drops()), (1, 1, 0));
    // An MD5 signature (kind 19, 18 bytes) and NOP NOP: no answer, a drop.
    dev.tx.clear();
    let mut signed = vec![19, 18];
    signed.extend_from_slice(&[0xaa; 16]);
    signed.extend_from_slice(&[1, 1]);
    dev.rx.push_back(syn_with_raw_options(45001, &signed));
    s.poll(Instant::ZERO, &mut dev);
    assert!(dev.tx.is_empty(), "a signed SYN is not answered");
    assert_eq!(s.counters().dropped(Drop::Unsupported), 1);
    assert_eq!(s.counters().malformed_options, 1);
}

/// Linux answers TCP only in frames addressed to its own MAC (`tcp_v4_rcv` drops `pkt_type != PACKET_HOST`)
/// and from sources a host can have (`fib_validate_source`: no martians). Neither is answered here; each is a drop.
#[test]
fn tcp_in_a_broadcast_frame_or_from_a_martian_source_is_dropped_unanswered() {
    use common::{tcp_frame, CLIENT_IP, CLIENT_MAC, SERVER_MAC};
    let (mut s, mut dev) = scripted_server(common::configs(29)[1].clone());
    let group = EthernetAddress([0x01, 0x00, 0x5e, 0, 0, 1]);
    let from = |mac, ip: [u8; 4]| (mac, Ipv4Addr::from(ip));
    let frames = [
        // A SYN in a link-layer broadcast frame, and in a multicast one.
        tcp_frame((CLIENT_MAC, CLIENT_IP), (EthernetAddress::BROADCAST, SERVER_IP), &syn(47000, 1)),
        tcp_frame((CLIENT_MAC, CLIENT_IP), (group, SERVER_IP), &syn(47001, 1)),
        // From a group MAC, which no frame may come from.
        tcp_frame((group, CLIENT_IP), (SERVER_MAC, SERVER_IP), &syn(47002, 1)),
        tcp_frame((EthernetAddress::BROADCAST, CLIENT_IP), (SERVER_MAC, SERVER_IP), &syn(47003, 1)),
        // Martian sources: loopback, "this network", multicast, reserved, limited broadcast, our own address.
        tcp_frame(from(CLIENT_MAC, [127, 0, 0, 1]), (SERVER_MAC, SERVER_IP), &syn(47004, 1)),
        tcp_frame(from(CLIENT_MAC, [0, 1, 2, 3]), (SERVER_MAC, SERVER_IP), &syn(47005, 1)),
        tcp_frame(from(CLIENT_MAC, [224, 0, 0, 1]), (SERVER_MAC, SERVER_IP), &syn(47006, 1)),
        tcp_frame(from(CLIENT_MAC, [240, 0, 0, 1]), (SERVER_MAC, SERVER_IP), &syn(47007, 1)),
        tcp_frame(from(CLIENT_MAC, [255, 255, 255, 255]), (SERVER_MAC, SERVER_IP), &syn(47008, 1)),
        tcp_frame((CLIENT_MAC, SERVER_IP), (SERVER_MAC, SERVER_IP), &syn(47009, 1)),
    ];
    let n = frames.len() as u64;
    dev.rx.extend(frames);
    s.poll(Instant::ZERO, &mut dev);
    assert_eq!(sent_segments(&dev.tx), [], "nothing answered");
    let c = s.counters();
    assert_eq!((c.rx_frames, c.tcp_in, s.connection_count()), (n, 0, 0), "{c:?}");
    assert_eq!((c.dropped(Drop::NotForUs), c.dropped(Drop::Malformed)), (2, n - 2), "{c:?}");
    // The same SYN from the client, to our MAC, is answered.
    dev.rx.push_back(client_frame(&syn(47010, 1)));
    s.poll(Instant::ZERO, &mut dev);
    assert_eq!(sent_segments(&dev.tx).len(), 1);
}

/// Every frame the stack does not use ends in a drop reason: an ACK to a listener that finds no connection (as
/// one to a closed port does), and an ARP packet for an address not ours.
#[test]
fn an_ack_to_a_listener_and_arp_for_another_address_count_as_drops() {
    let (mut s, mut dev) = scripted_server(common::configs(30)[1].clone());
    let mut stray_ack = syn(48000, 5);
    stray_ack.flags = TcpFlags::ACK;
    stray_ack.ack_number = SeqNumber(777);
    dev.rx.push_back(client_frame(&stray_ack));
    s.poll(Instant::ZERO, &mut dev);
    let c = s.counters();
    assert_eq!((c.rst_sent, c.dropped(Drop::NoConnection)), (1, 1), "{c:?}");
    // An ARP request, broadcast, for 10.0.0.99.
    let mut arp = seed_frames().remove(2);
    let at = arp.len() - 4;
    arp[at..].copy_from_slice(&[10, 0, 0, 99]);
    dev.rx.push_back(arp);
    dev.tx.clear();
    s.poll(Instant::ZERO, &mut dev);
    assert!(dev.tx.is_empty(), "not answered");
    let c = s.counters();
    assert_eq!((c.arp_in, c.dropped(Drop::NotForUs)), (0, 1), "{c:?}");
}

/// A valid SYN, a data segment and an ARP request, to mutate.
fn seed_frames() -> Vec<Vec<u8>> {
    let mut data = syn(44000, 10);
    data.flags = TcpFlags::ACK | TcpFlags::PSH;
    data.payload = b"GET / HTTP/1.1\r\n\r\n";
    let mut arp = vec![0xff; 6];
    arp.extend_from_slice(&common::CLIENT_MAC.0);
    arp.extend_from_slice(&[0x08, 0x06, 0, 1, 8, 0, 6, 4, 0, 1]);
    arp.extend_from_slice(&common::CLIENT_MAC.0);
    arp.extend_from_slice(&common::CLIENT_IP.octets());
    arp.extend_from_slice(&[0; 6]);
    arp.extend_from_slice(&SERVER_IP.octets());
    vec![client_frame(&syn(44000, 1)), client_frame(&data), arp]
}

#[derive(Debug, Clone)]
enum Input {
    Random(Vec<u8>),
    Mutated { which: usize, flips: Vec<(usize, u8)>, cut: Option<usize> },
    Advance(u64),
}

fn input() -> impl Strategy<Value = Input> {
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..200).prop_map(Input::Random),
        (0usize..3, prop::collection::vec((any::<usize>(), any::<u8>()), 0..6), prop::option::of(any::<usize>()))
            .prop_map(|(which, flips, cut)| Input::Mutated { which, flips, cut }),
        (0u64..5_000_000).prop_map(Input::Advance),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, failure_persistence: None, ..ProptestConfig::default() })]

    /// Random bytes and mutated real frames, with time passing, never panic the stack, and every frame is
    /// counted: as a TCP segment, an ARP packet or a drop by reason.
    #[test]
    fn random_and_mutated_frames_never_panic_and_are_counted(inputs in prop::collection::vec(input(), 1..60)) {
        let (mut s, mut dev) = scripted_server(common::configs(9)[1].clone());
        let seeds = seed_frames();
        let mut now = Instant::ZERO;
        let mut fed = 0u64;
        for inp in inputs {
            match inp {
                Input::Random(bytes) => dev.rx.push_back(bytes),
                Input::Mutated { which, flips, cut } => {
                    let mut f = seeds[which].clone();
                    for (at, x) in flips {
                        let i = at % f.len();
                        f[i] ^= x;
                    }
                    if let Some(c) = cut {
                        f.truncate(c % (f.len() + 1));
                    }
                    dev.rx.push_back(f);
                }
                Input::Advance(us) => now += std::time::Duration::from_micros(us),
            }
            fed += dev.rx.len() as u64;
            s.poll(now, &mut dev);
            let c = s.counters();
            prop_assert_eq!(c.rx_frames, fed);
            // Exactly once: used as TCP or ARP, or dropped before that for a reason of its own (the drops that
            // come after TCP input, such as no connection, count segments already in `tcp_in`).
            let rx_drops: u64 = [Drop::Malformed, Drop::BadChecksum, Drop::Fragment, Drop::NotForUs, Drop::Unsupported]
                .into_iter()
                .map(|d| c.dropped(d))
                .sum();
            prop_assert_eq!(c.rx_frames, c.tcp_in + c.arp_in + rx_drops, "a frame counted other than once: {:?}", c);
        }
    }
}

#[test]
fn congestion_control_is_chosen_per_listener_and_per_client() {
    let mut world = common::world(common::configs(8), LinkConfig::default(), Faults::default(), 8);
    let cubic = xtcp::tcp::Config { congestion: Algorithm::Cubic, ..Default::default() };
    world.stacks[1].listen_with(8080, cubic).unwrap();
    let to_cubic = world.stacks[0].connect(SocketAddrV4::new(SERVER_IP, 8080)).unwrap();
    let to_reno = world.stacks[0].connect(common::server_addr()).unwrap();
    let cubic_client = world.stacks[0].connect_with(common::server_addr(), cubic).unwrap();
    let mut accepted = Vec::new();
    world.run(Instant::from_secs(5), |stacks, _| {
        while let Some(ev) = stacks[1].next_event() {
            if let StackEvent::Accepted { conn, port } = ev {
                accepted.push((port, stacks[1].connection(conn).unwrap().congestion().algorithm()));
            }
        }
        accepted.len() == 3
    });
    accepted.sort_by_key(|a| (a.0, a.1 == Algorithm::Cubic));
    assert_eq!(accepted, [(80, Algorithm::NewReno), (80, Algorithm::NewReno), (8080, Algorithm::Cubic)]);
    let algo = |id| world.stacks[0].connection(id).unwrap().congestion().algorithm();
    assert_eq!(
        (algo(to_cubic), algo(to_reno), algo(cubic_client)),
        (Algorithm::NewReno, Algorithm::NewReno, Algorithm::Cubic)
    );
}

/// `StackConfig::tcp` is what `listen` and `connect` give every connection (what `--congestion` sets).
#[test]
fn a_stacks_tcp_settings_choose_the_congestion_control_of_listen_and_connect() {
    let (reno, cubic) = (Algorithm::NewReno, Algorithm::Cubic);
    for (client_cc, server_cc) in [(cubic, reno), (reno, cubic), (cubic, cubic)] {
        let mut cfgs = common::configs(9);
        cfgs[0].tcp.congestion = client_cc;
        cfgs[1].tcp.congestion = server_cc;
        let mut world = common::world(cfgs, LinkConfig::default(), Faults::default(), 9);
        let client = world.stacks[0].connect(common::server_addr()).unwrap();
        let mut accepted = None;
        world.run(Instant::from_secs(5), |stacks, _| {
            while let Some(ev) = stacks[1].next_event() {
                if let StackEvent::Accepted { conn, .. } = ev {
                    accepted = Some(stacks[1].connection(conn).unwrap().congestion().algorithm());
                }
            }
            accepted.is_some()
        });
        assert_eq!(accepted, Some(server_cc), "the listener's default");
        assert_eq!(world.stacks[0].connection(client).unwrap().congestion().algorithm(), client_cc);
    }
}

#[test]
fn a_closed_connection_keeps_unread_bytes_until_read_or_released() {
    let mut world = common::world(common::configs(12), LinkConfig::default(), Faults::default(), 12);
    let client = world.stacks[0].connect(common::server_addr()).unwrap();
    let mut server = None;
    // The client sends and closes; the server closes on PeerClosed without reading.
    world.run(Instant::from_secs(5), |stacks, _| {
        while let Some(ev) = stacks[0].next_event() {
            if let StackEvent::Connected(c) = ev {
                stacks[0].send(c, b"unread").unwrap();
                stacks[0].close(c).unwrap();
            }
        }
        while let Some(ev) = stacks[1].next_event() {
            match ev {
                StackEvent::Accepted { conn, .. } => server = Some(conn),
                StackEvent::PeerClosed(c) => stacks[1].close(c).unwrap(),
                _ => {}
            }
        }
        stacks[1].connection_count() == 0 && server.is_some()
    });
    let server = server.unwrap();
    assert_eq!(world.stacks[1].slots_in_use(), 1, "closed, but its bytes wait for the application");
    assert_eq!(world.stacks[1].connection(server).unwrap().state(), State::Closed);
    let mut buf = [0u8; 3];
    assert_eq!(world.stacks[1].recv(server, &mut buf), Ok(3));
    assert_eq!(&buf, b"unr");
    world.stacks[1].release(server).unwrap();
    assert_eq!(world.stacks[1].slots_in_use(), 0);
    assert_eq!(world.stacks[1].next_event(), Some(StackEvent::Closed(server, CloseReason::Normal)));
    assert!(world.stacks[1].connection(server).is_err(), "the handle is stale");
    let _ = client;
}

#[test]
fn a_fixed_next_hop_mac_takes_every_frame() {
    let router = xtcp::wire::EthernetAddress([0x02, 0xee, 0, 0, 0, 1]);
    let mut cfg = common::configs(13)[1].clone();
    cfg.next_hop_mac = Some(router);
    let (mut s, mut dev) = scripted_server(cfg);
    dev.rx.push_back(client_frame(&syn(45000, 1)));
    let mut to_81 = syn(45001, 1);
    to_81.dst_port = 81;
    dev.rx.push_back(client_frame(&to_81));
    s.poll(Instant::ZERO, &mut dev);
    assert_eq!(dev.tx.len(), 2, "a SYN-ACK and an RST");
    for frame in &dev.tx {
        assert_eq!(&frame[..6], &router.0, "sent to the next hop, not the sender");
    }
}

/// The client's second address, and the server's.
const CLIENT_ALIAS: std::net::Ipv4Addr = std::net::Ipv4Addr::new(10, 0, 0, 11);
const SERVER_ALIAS: std::net::Ipv4Addr = std::net::Ipv4Addr::new(10, 0, 0, 12);

#[test]
fn connections_from_two_addresses_with_the_same_port_to_one_server_are_distinct() {
    let [mut client, mut server] = common::configs(11);
    client.extra_ips = vec![CLIENT_ALIAS];
    client.ephemeral_ports = 40000..=40000;
    server.extra_ips = vec![SERVER_ALIAS];
    let mut world = common::world([client, server], LinkConfig::default(), Faults::default(), 11);
    // The server's alias is in no neighbour table: the client asks for it with ARP, and the server answers for it.
    let remote = SocketAddrV4::new(SERVER_ALIAS, common::PORT);
    let a = world.stacks[0].connect(remote).unwrap();
    let b = world.stacks[0].connect(remote).unwrap();
    assert_eq!(world.stacks[0].connect(remote), Err(xtcp::engine::StackError::NoPort), "one port on each address");
    let locals = [a, b].map(|id| world.stacks[0].connection(id).unwrap().local());
    assert_eq!(locals, [SocketAddrV4::new(common::CLIENT_IP, 40000), SocketAddrV4::new(CLIENT_ALIAS, 40000)]);
    let mut connected = 0;
    let mut received = std::collections::HashMap::new();
    let done = world.run(Instant::from_secs(10), |stacks, _| {
        while let Some(ev) = stacks[0].next_event() {
            if let StackEvent::Connected(id) = ev {
                connected += 1;
                let byte = if id == a { b"a" } else { b"b" };
                stacks[0].send(id, byte).unwrap();
            }
        }
        while let Some(ev) = stacks[1].next_event() {
            if let StackEvent::Readable(id) = ev {
                let mut buf = [0u8; 8];
                let n = stacks[1].recv(id, &mut buf).unwrap();
                let conn = stacks[1].connection(id).unwrap();
                received.insert(conn.remote(), (conn.local(), buf[..n].to_vec()));
            }
        }
        connected == 2 && received.len() == 2
    });
    assert!(done, "connected {connected}, received {received:?}");
    assert_eq!(received[&locals[0]], (remote, b"a".to_vec()));
    assert_eq!(received[&locals[1]], (remote, b"b".to_vec()));
    assert_eq!(world.stacks[0].connection_count(), 2);
    assert_eq!(world.stacks[1].connection_count(), 2);
    assert!(world.stacks[1].counters().arp_in > 0, "the client resolved the server's alias with ARP");
}

#[test]
fn a_frame_to_an_address_not_ours_is_dropped_and_one_to_an_alias_is_answered_from_it() {
    let mut cfg = common::configs(12)[1].clone();
    cfg.extra_ips = vec![SERVER_ALIAS];
    let (mut s, mut dev) = scripted_server(cfg);
    assert_eq!(s.local_addresses(), [SERVER_IP, SERVER_ALIAS]);
    dev.rx.push_back(common::client_frame_to(std::net::Ipv4Addr::new(10, 0, 0, 99), &syn(44000, 1)));
    s.poll(Instant::ZERO, &mut dev);
    assert_eq!(s.counters().dropped(Drop::NotForUs), 1);
    assert!(dev.tx.is_empty(), "nothing answers a frame for someone else");
    dev.rx.push_back(common::client_frame_to(SERVER_ALIAS, &syn(44000, 1)));
    s.poll(Instant::ZERO, &mut dev);
    assert_eq!(sent_segments(&dev.tx), [(TcpFlags::SYN | TcpFlags::ACK, sent_segments(&dev.tx)[0].1, 2, 44000)]);
    let ip = xtcp::wire::Ipv4Packet::new_checked(&dev.tx[0][14..]).unwrap();
    assert_eq!(ip.src_addr(), SERVER_ALIAS, "the SYN-ACK comes from the address the SYN went to");
    let (_, conn) = s.connections().next().unwrap();
    assert_eq!(conn.local(), SocketAddrV4::new(SERVER_ALIAS, common::PORT));
}

#[test]
fn an_address_with_no_free_port_to_a_peer_passes_the_open_to_the_next() {
    let mut cfg = common::configs(13)[0].clone();
    cfg.extra_ips = vec![CLIENT_ALIAS, CLIENT_ALIAS, common::CLIENT_IP];
    cfg.ephemeral_ports = 40000..=40000;
    let mut s = xtcp::engine::Stack::new(cfg, Instant::ZERO);
    assert_eq!(s.local_addresses(), [common::CLIENT_IP, CLIENT_ALIAS], "repeats count once");
    let (r, r2) = (common::server_addr(), SocketAddrV4::new(SERVER_IP, 81));
    let local = |s: &mut xtcp::engine::Stack, remote| {
        let id = s.connect(remote)?;
        Ok::<_, xtcp::engine::StackError>(*s.connection(id).unwrap().local().ip())
    };
    // Round-robin: R from the first address, R2 from the second; the turn is the first's again, but its one port
    // to R is taken, so the open moves on to the second.
    assert_eq!(local(&mut s, r), Ok(common::CLIENT_IP));
    assert_eq!(local(&mut s, r2), Ok(CLIENT_ALIAS));
    assert_eq!(local(&mut s, r), Ok(CLIENT_ALIAS));
    assert_eq!(local(&mut s, r), Err(xtcp::engine::StackError::NoPort));
    assert_eq!(local(&mut s, r2), Ok(common::CLIENT_IP));
    assert_eq!(s.connection_count(), 4);
}

#[test]
fn extra_addresses_are_bounded() {
    let mut cfg = common::configs(14)[0].clone();
    cfg.extra_ips = (0..200u32).map(|i| std::net::Ipv4Addr::from(0x0a01_0000 + i)).collect();
    assert_eq!(cfg.local_addresses().len(), xtcp::engine::MAX_LOCAL_ADDRESSES);
    assert_eq!(cfg.local_addresses()[0], common::CLIENT_IP);
}

#[test]
fn buffer_memory_is_held_only_while_data_waits_and_is_bounded() {
    let mut cfgs = common::configs(25);
    cfgs[1].max_buffer_bytes = 8192;
    let mut world = common::world(cfgs, LinkConfig::default(), Faults::default(), 25);
    let client = world.stacks[0].connect(common::server_addr()).unwrap();
    let data: Vec<u8> = (0..200_000u32).map(|i| (i % 241) as u8).collect();
    let (mut sent, mut got, mut server, mut peak) = (0, Vec::new(), None, 0);
    let mut next_read = Instant::ZERO;
    let mut buf = vec![0u8; 1000];
    let done = world.run(Instant::from_secs(60), |stacks, now| {
        while let Some(ev) = stacks[1].next_event() {
            if let StackEvent::Accepted { conn, .. } = ev {
                server = Some(conn);
            }
        }
        while stacks[0].next_event().is_some() {}
        if sent < data.len() {
            sent += stacks[0].send(client, &data[sent..]).unwrap_or(0);
        }
        peak = peak.max(stacks[1].buffer_bytes());
        // A slow reader: every 5 ms at most, so data piles up against the limit — until all is sent (the world
        // stops when nothing is pending, and the reader's next turn is not something it waits for).
        if let Some(conn) = server.filter(|_| now >= next_read || sent == data.len()) {
            loop {
                let n = stacks[1].recv(conn, &mut buf).unwrap_or(0);
                if n == 0 {
                    break;
                }
                got.extend_from_slice(&buf[..n]);
            }
            next_read = now + std::time::Duration::from_millis(5);
        }
        got.len() == data.len()
    });
    assert!(done, "the data did not all arrive: {} of {} at {}", got.len(), data.len(), world.now());
    assert!(got == data, "intact, in order");
    assert!(world.stacks[1].counters().dropped(Drop::MemoryFull) > 0, "the limit bit");
    // The growth that crosses the limit may at most double the one connection's buffer.
    assert!(peak <= 2 * 8192, "peak {peak}");
    world.run(world.now() + std::time::Duration::from_secs(1), |_, _| false);
    let idle = (world.stacks[0].buffer_bytes(), world.stacks[1].buffer_bytes());
    assert_eq!(idle, (0, 0), "idle connections hold no buffers");
}

#[test]
fn successive_connections_to_one_server_take_the_ephemeral_ports_in_turn() {
    // A port freed at once (here by an abort) is not taken again until the rest of the range has been: the peer may
    // hold its last connection in TIME_WAIT, and a SYN on it within the same millisecond could not reopen it.
    let mut cfgs = common::configs(27);
    cfgs[0].ephemeral_ports = 40000..=40009;
    let mut world = common::world(cfgs, LinkConfig::default(), Faults::default(), 27);
    let mut ports = Vec::new();
    for _ in 0..21 {
        let id = world.stacks[0].connect(common::server_addr()).unwrap();
        ports.push(world.stacks[0].connection(id).unwrap().local().port());
        world.settle();
        world.stacks[0].abort(id).unwrap();
        world.settle();
        while world.stacks[0].next_event().is_some() {}
        assert_eq!(world.stacks[0].connection_count(), 0, "the port is free again");
    }
    let mut first_lap = ports[..10].to_vec();
    first_lap.sort_unstable();
    assert_eq!(first_lap, (40000..=40009).collect::<Vec<u16>>(), "{ports:?}");
    assert_eq!(ports[..10], ports[10..20], "the second lap follows the first");
    assert_eq!(ports[20], ports[0]);
    // Other destinations start elsewhere in the range (RFC 6056 §3.3.3: the offset is secret per destination).
    let stack = &mut world.stacks[0];
    let starts: Vec<u16> = (0..4u8)
        .map(|k| {
            let remote = SocketAddrV4::new(Ipv4Addr::new(10, 9, 9, k + 1), 8443);
            stack.add_neighbor(*remote.ip(), EthernetAddress([2, 0, 0, 0, 0, 3]));
            let id = stack.connect(remote).unwrap();
            stack.connection(id).unwrap().local().port()
        })
        .collect();
    assert!(starts.windows(2).any(|w| w[1] != w[0] + 1), "{starts:?}");
}

#[test]
fn a_client_reusing_its_port_at_once_reopens_the_servers_time_wait() {
    // One source port: every new connection meets the server's TIME_WAIT from the one before (the server closes
    // first), a few hundred microseconds after it began.
    let mut cfgs = common::configs(26);
    cfgs[0].ephemeral_ports = 40000..=40000;
    let mut world = common::world(cfgs, LinkConfig::default(), Faults::default(), 26);
    let mut done = 0;
    let mut current = Some(world.stacks[0].connect(common::server_addr()).unwrap());
    let ok = world.run(Instant::from_secs(5), |stacks, _| {
        while let Some(ev) = stacks[1].next_event() {
            if let StackEvent::Accepted { conn, .. } = ev {
                stacks[1].close(conn).unwrap();
            }
        }
        while let Some(ev) = stacks[0].next_event() {
            match ev {
                StackEvent::PeerClosed(c) => stacks[0].close(c).unwrap(),
                StackEvent::Closed(c, reason) if Some(c) == current => {
                    assert_eq!(reason, CloseReason::Normal);
                    done += 1;
                    current = (done < 20).then(|| stacks[0].connect(common::server_addr()).unwrap());
                }
                _ => {}
            }
        }
        done == 20
    });
    assert!(ok, "{done} of 20 connections done by {}", world.now());
    assert_eq!(world.stacks[1].counters().time_wait_reopened, 19);
    assert!(world.now() < Instant::from_millis(500), "no SYN waited for a retransmission: {}", world.now());
}

/// Idle connections are compacted after `compact_after` on both stacks, looked at without waking, and woken by
/// every use: data both ways arrives intact, keep-alive probes are answered, TIME_WAIT still refuses and reopens
/// (RFC 6191) and still ends after 2·MSL.
#[test]
fn idle_connections_are_compacted_and_woken_by_every_use() {
    use std::time::Duration;
    use xtcp::tcp::Keepalive;
    const N: usize = 40;
    let step = Duration::from_millis(1);
    let mut world = common::world(common::configs(41), LinkConfig::default(), Faults::default(), 41);
    let ka = Some(Keepalive { idle: Duration::from_secs(20), interval: Duration::from_secs(5), probes: 3 });
    let tcp = xtcp::tcp::Config { keepalive: ka, ..world.stacks[0].config().tcp };
    let clients: Vec<_> = (0..N).map(|_| world.stacks[0].connect_with(common::server_addr(), tcp).unwrap()).collect();
    let mut servers = Vec::new();
    let mut got = vec![Vec::new(); N];
    // Each client says its number; the server answers with the same bytes.
    let echo = |stacks: &mut [xtcp::engine::Stack; 2], servers: &mut Vec<_>, got: &mut Vec<Vec<u8>>, tag: &str| {
        while let Some(ev) = stacks[1].next_event() {
            match ev {
                StackEvent::Accepted { conn, .. } => servers.push(conn),
                StackEvent::Readable(conn) => {
                    let mut buf = [0; 64];
                    let n = stacks[1].recv(conn, &mut buf).unwrap();
                    stacks[1].send(conn, &buf[..n]).unwrap();
                }
                _ => {}
            }
        }
        while let Some(ev) = stacks[0].next_event() {
            if let StackEvent::Readable(conn) = ev {
                let i = clients.iter().position(|&c| c == conn).unwrap();
                let mut buf = [0; 64];
                let n = stacks[0].recv(conn, &mut buf).unwrap();
                got[i].extend_from_slice(&buf[..n]);
            }
        }
        got.iter().enumerate().all(|(i, g)| g == format!("{tag} {i}").as_bytes())
    };
    for (i, &c) in clients.iter().enumerate() {
        world.stacks[0].send(c, format!("hello {i}").as_bytes()).unwrap();
    }
    assert!(world.run(Instant::from_secs(1), |stacks, _| echo(stacks, &mut servers, &mut got, "hello")));
    assert_eq!(servers.len(), N);

    // Quiet for more than `compact_after` (1 s by default): every connection on both sides is compacted.
    world.pass(world.now() + Duration::from_secs(2), step);
    for s in &world.stacks {
        assert_eq!((s.compact_count(), s.counters().conns_compacted as usize), (N, N));
        assert_eq!((s.connection_count(), s.slots_in_use(), s.counters().conns_woken), (N, N, 0));
        assert_eq!(s.state_counts()[state_index(State::Established)], N);
        // The TCP totals read the compact records' counters as they are: the same as the rebuilt connections'.
        let rebuilt: u64 = s.connections().map(|(_, c)| c.stats().segs_in + c.stats().bytes_out).sum();
        let totals = s.tcp_totals();
        let total = |name: &str| totals.iter().find(|(n, _)| *n == name).unwrap().1;
        assert!(rebuilt > 0);
        assert_eq!(total("segs_in") + total("bytes_out"), rebuilt);
        assert_eq!(s.counters().conns_woken, 0, "reading the totals wakes nothing");
    }
    // Looking does not wake.
    let c0 = world.stacks[0].connection(clients[0]).unwrap();
    assert_eq!((c0.state(), c0.send_queue_len(), c0.config().keepalive), (State::Established, 0, ka));
    assert_eq!(world.stacks[0].connections().filter(|(_, c)| c.state() == State::Established).count(), N);
    assert_eq!(world.stacks[0].counters().conns_woken, 0);

    // Keep-alive: the client's timer wakes it, its probe wakes the server, whose answer keeps both alive.
    world.pass(Instant::from_secs(30), step);
    for s in &world.stacks {
        assert_eq!(s.counters().conns_woken as usize, N, "each woken once by the probe");
        assert_eq!(s.compact_count(), N, "and compacted again");
    }
    for &c in &clients {
        let conn = world.stacks[0].connection(c).unwrap();
        assert_eq!((conn.state(), conn.stats().keepalive_probes), (State::Established, 1));
    }

    // Data both ways on every connection: woken by the application's send and by the segment.
    let got = &mut vec![Vec::new(); N];
    for (i, &c) in clients.iter().enumerate() {
        world.stacks[0].send(c, format!("again {i}").as_bytes()).unwrap();
    }
    assert!(world.run(world.now() + Duration::from_secs(1), |stacks, _| echo(stacks, &mut servers, got, "again")));
    for s in &world.stacks {
        assert_eq!(s.counters().conns_woken as usize, 2 * N);
        assert_eq!(s.compact_count(), 0);
    }

    // The server closes first and holds TIME_WAIT; compacted there, it still counts in TIME_WAIT.
    for &c in &servers {
        world.stacks[1].close(c).unwrap();
    }
    let closed = world.run(world.now() + Duration::from_secs(1), |stacks, _| {
        while let Some(ev) = stacks[0].next_event() {
            if let StackEvent::PeerClosed(c) = ev {
                stacks[0].close(c).unwrap();
            }
        }
        while stacks[1].next_event().is_some() {}
        stacks[0].connection_count() == 0
    });
    assert!(closed);
    world.pass(world.now() + Duration::from_secs(2), step);
    let s = &world.stacks[1];
    assert_eq!((s.compact_count(), s.state_counts()[state_index(State::TimeWait)]), (N, N));
    let woken = s.counters().conns_woken;

    // An old SYN for a compacted TIME_WAIT tuple is refused (and the client stack's RST to the challenge ACK then
    // ends that TIME_WAIT, compacted or not); a newer SYN for another reopens it.
    let tuples: Vec<_> = s.connections().map(|(_, c)| (c.remote().port(), c.irs(), c.rcv_nxt())).take(2).collect();
    let mut old = syn(tuples[0].0, tuples[0].1 .0);
    old.options.timestamp = None;
    let mut newer = syn(tuples[1].0, tuples[1].2 .0.wrapping_add(100_000));
    newer.options.timestamp = None;
    for seg in [old, newer] {
        let frame = client_frame(&seg);
        let now = world.now();
        world.devices[0].transmit(now, frame.len(), &mut |buf| buf.copy_from_slice(&frame));
        world.pass(now + Duration::from_millis(100), step);
    }
    let s = &world.stacks[1];
    assert_eq!((s.counters().time_wait_refused, s.counters().time_wait_reopened), (1, 1));
    assert_eq!(s.counters().conns_woken, woken + 2, "each SYN woke its TIME_WAIT connection");
    assert_eq!(s.state_counts()[state_index(State::TimeWait)], N - 2);

    // 2·MSL later every TIME_WAIT has ended, compacted or not, and nothing is left.
    world.run(world.now() + Duration::from_secs(120), |stacks, _| {
        while stacks[1].next_event().is_some() {}
        while stacks[0].next_event().is_some() {}
        stacks[1].state_counts()[state_index(State::TimeWait)] == 0
    });
    world.pass(world.now() + Duration::from_secs(5), step);
    let s = &world.stacks[1];
    assert_eq!(s.state_counts()[state_index(State::TimeWait)], 0);
    assert_eq!(s.counters().conns_woken as usize, woken as usize + N, "each woken once more by its 2MSL timer");
    assert_eq!(s.compact_count(), 0);
}

#[test]
fn compaction_can_be_turned_off() {
    let mut cfgs = common::configs(42);
    for c in &mut cfgs {
        c.compact_after = None;
    }
    let mut world = common::world(cfgs, LinkConfig::default(), Faults::default(), 42);
    world.stacks[0].connect(common::server_addr()).unwrap();
    assert!(world.run(Instant::from_secs(1), |stacks, _| stacks[1].connection_count() == 1
        && stacks[0].state_counts()[state_index(State::Established)] == 1));
    world.pass(Instant::from_secs(10), std::time::Duration::from_millis(1));
    for s in &world.stacks {
        assert_eq!((s.compact_count(), s.counters().conns_compacted, s.connection_count()), (0, 0, 1));
    }
}

fn state_index(s: State) -> usize {
    State::ALL.iter().position(|&x| x == s).unwrap()
}

#[test]
fn recv_with_reads_in_place_across_the_ring_wrap_and_keeps_what_it_leaves() {
    let mut world = common::world(common::configs(13), LinkConfig::default(), Faults::default(), 13);
    let data: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    let client = world.stacks[0].connect(common::server_addr()).unwrap();
    let (mut sent, mut got, mut runs, mut longest) = (0usize, Vec::new(), 0u64, 0usize);
    let done = world.run(Instant::from_secs(60), |stacks, _| {
        while stacks[0].next_event().is_some() {}
        while sent < data.len() {
            match stacks[0].send(client, &data[sent..]) {
                Ok(n @ 1..) => sent += n,
                _ => break,
            }
        }
        while let Some(ev) = stacks[1].next_event() {
            if let StackEvent::Readable(c) = ev {
                // Take at most 1000 bytes of each run handed over, so runs end mid-buffer and the ring wraps.
                while let Ok(n @ 1..) = stacks[1].recv_with(c, 4096, &mut |run| {
                    assert!(run.len() <= 4096);
                    longest = longest.max(run.len());
                    let take = run.len().min(1000);
                    got.extend_from_slice(&run[..take]);
                    take
                }) {
                    assert!(n <= 1000);
                    runs += 1;
                }
            }
        }
        got.len() == data.len()
    });
    assert!(done, "{} of {} bytes", got.len(), data.len());
    assert!(got == data, "bytes out of order or lost");
    assert!(runs >= 300 && longest > 1000, "{runs} runs, the longest {longest}");
    // Reading in place opened the window like `recv`: everything sent is acknowledged.
    let acked = world
        .run(Instant::from_secs(70), |stacks, _| stacks[0].connection(client).is_ok_and(|c| c.send_queue_len() == 0));
    assert!(acked);
}

#[test]
fn a_stack_with_no_ephemeral_ports_opens_nothing_and_still_accepts() {
    let mut cfg = common::configs(14)[1].clone();
    cfg.ephemeral_ports = std::ops::RangeInclusive::new(1, 0);
    let (mut s, mut dev) = scripted_server(cfg);
    assert_eq!(s.connect(SocketAddrV4::new(common::CLIENT_IP, 80)), Err(xtcp::engine::StackError::NoPort));
    assert_eq!(s.connection_count(), 0);
    dev.rx.push_back(common::client_frame_to(SERVER_IP, &syn(44000, 1)));
    s.poll(Instant::ZERO, &mut dev);
    assert_eq!(sent_segments(&dev.tx)[0].0, TcpFlags::SYN | TcpFlags::ACK, "the listener still answers");
}
