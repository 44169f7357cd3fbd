use std::net::{Ipv4Addr, SocketAddrV4};

use super::*;
use crate::engine::{Stack, StackConfig, StackEvent};
use crate::nic::loopback::Loopback;
use crate::wire::{EtherType, EthernetAddress, EthernetFrame, EthernetRepr, IpProtocol, Ipv4Packet, Ipv4Repr};

#[test]
fn the_partition_gives_each_core_a_slice_and_names_every_ports_owner() {
    let p = PortPartition::new(32768..=60999, 2).unwrap();
    assert_eq!(p.range(0), 32768..=46883);
    assert_eq!(p.range(1), 46884..=60999);
    for core in 0..2 {
        for port in p.range(core) {
            assert_eq!(p.owner(port), Some(core));
        }
    }
    assert_eq!(p.owner(32767), None);
    assert_eq!(p.owner(7777), None);
    assert_eq!(p.owner(61000), None);

    // A remainder is left unused and owned by nobody.
    let p = PortPartition::new(1000..=1199, 3).unwrap();
    assert_eq!((p.range(0), p.range(2)), (1000..=1065, 1132..=1197));
    assert_eq!((p.owner(1197), p.owner(1198), p.owner(1199)), (Some(2), None, None));

    // The whole port space, and limits.
    let p = PortPartition::new(0..=65535, 1).unwrap();
    assert_eq!((p.range(0), p.owner(0), p.owner(65535)), (0..=65535, Some(0), Some(0)));
    assert!(PortPartition::new(32768..=60999, 0).is_err());
    assert!(PortPartition::new(100..=163, 2).is_err());
    assert!(PortPartition::new(100..=227, 2).is_ok());

    // Cores that only accept connections: no slices, no owners.
    let p = PortPartition::new(RangeInclusive::new(1, 0), 2).unwrap();
    assert_eq!(p.cores(), 2);
    assert!(p.range(0).is_empty() && p.range(1).is_empty());
    assert_eq!((p.owner(0), p.owner(7), p.owner(61000), p.owner(65535)), (None, None, None, None));
    assert!(PortPartition::new(RangeInclusive::new(1, 0), 0).is_err());
}

#[test]
fn core_seeds_differ_and_replay() {
    let seeds: Vec<u64> = (0..64).map(|c| core_seed(7, c)).collect();
    let mut sorted = seeds.clone();
    sorted.sort_unstable();
    sorted.dedup();
    assert_eq!(sorted.len(), 64);
    assert_eq!(core_seed(7, 3), seeds[3]);
    assert_ne!(core_seed(8, 3), seeds[3]);
}

/// An Ethernet/IPv4/TCP frame to `dst_port` with `payload` (checksums left zero: only the header peek reads it).
fn tcp_frame(dst_port: u16, payload: &[u8]) -> Vec<u8> {
    let mut frame = vec![0u8; 14 + 20 + 20 + payload.len()];
    let mut eth = EthernetFrame::new_unchecked(&mut frame[..]);
    EthernetRepr { src_addr: EthernetAddress([2; 6]), dst_addr: EthernetAddress([4; 6]), ethertype: EtherType::Ipv4 }
        .emit(&mut eth);
    let ip = Ipv4Repr {
        src_addr: Ipv4Addr::new(10, 0, 0, 2),
        dst_addr: Ipv4Addr::new(10, 0, 0, 1),
        protocol: IpProtocol::Tcp,
        payload_len: 20 + payload.len(),
        hop_limit: 64,
        dscp_ecn: 0,
        ident: 0,
        dont_frag: true,
    };
    ip.emit(&mut Ipv4Packet::new_unchecked(eth.payload_mut()));
    let tcp = &mut frame[34..];
    tcp[0..2].copy_from_slice(&40000u16.to_be_bytes());
    tcp[2..4].copy_from_slice(&dst_port.to_be_bytes());
    tcp[12] = 5 << 4;
    tcp[20..].copy_from_slice(payload);
    frame
}

#[test]
fn the_header_peek_finds_tcp_destination_ports_only() {
    let frame = tcp_frame(50000, b"x");
    assert_eq!(tcp_dst_port(&frame), Some(50000));
    assert_eq!(tcp_dst_port(&frame[..14 + 20 + 3]), None, "truncated TCP header");
    assert_eq!(tcp_dst_port(&frame[..10]), None);
    let mut arp = frame.clone();
    arp[12..14].copy_from_slice(&[0x08, 0x06]);
    assert_eq!(tcp_dst_port(&arp), None);
    let mut udp = frame.clone();
    udp[14 + 9] = 17;
    assert_eq!(tcp_dst_port(&udp), None);
    let mut fragment = frame.clone();
    fragment[14 + 7] = 1; // fragment offset 8
    assert_eq!(tcp_dst_port(&fragment), None);
    let mut options = tcp_frame(50000, &[0; 8]);
    options[14] = 0x47; // IHL 7: the ports move 8 bytes on
    options[14 + 28 + 2..14 + 28 + 4].copy_from_slice(&12345u16.to_be_bytes());
    assert_eq!(tcp_dst_port(&options), Some(12345));
}

/// Frames received on a device: a handler that copies them out.
fn receive_all(dev: &mut dyn FrameDevice) -> Vec<Vec<u8>> {
    let mut got = Vec::new();
    dev.receive(Instant::ZERO, 64, &mut |frame, _tx| got.push(frame.to_vec()));
    got
}

fn put(dev: &mut Loopback, frame: &[u8]) {
    assert!(dev.transmit(Instant::ZERO, frame.len(), &mut |buf| buf.copy_from_slice(frame)));
}

#[test]
fn frames_for_another_cores_ports_reach_that_core_intact_and_are_counted() {
    let partition = PortPartition::new(32768..=60999, 2).unwrap();
    let handoff = Handoff::new(partition, 4, 2048);
    let mut core0 = handoff.device(0, Loopback::new(16, 2048));
    let mut core1 = handoff.device(1, Loopback::new(16, 2048));
    let mine = tcp_frame(33000, b"core 0's");
    let theirs = tcp_frame(50000, b"core 1's, arrived on queue 0");
    let listener = tcp_frame(7777, b"a listening port: stays");
    for f in [&mine, &theirs, &listener] {
        put(core0.inner_mut(), f);
    }
    assert_eq!(core1.poll_at(), None);
    assert_eq!(receive_all(&mut core0), vec![mine.clone(), listener.clone()]);
    assert_eq!(core0.stats(), HandoffStats { handed_out: 1, ..HandoffStats::default() });
    assert_eq!(handoff.pending(1), 1);
    assert_eq!(core1.poll_at(), Some(Instant::ZERO), "a waiting hand-off wakes the owner's loop");
    assert_eq!(receive_all(&mut core1), vec![theirs.clone()]);
    assert_eq!(core1.stats(), HandoffStats { handed_in: 1, ..HandoffStats::default() });
    assert_eq!(handoff.pending(1), 0);

    // A full inbox drops, counted; its buffers come back once the owner has polled.
    for _ in 0..6 {
        put(core0.inner_mut(), &theirs);
    }
    assert!(receive_all(&mut core0).is_empty());
    assert_eq!((core0.stats().handed_out, core0.stats().handoff_dropped), (5, 2));
    assert_eq!(receive_all(&mut core1).len(), 4);
    put(core0.inner_mut(), &theirs);
    receive_all(&mut core0);
    assert_eq!(receive_all(&mut core1), vec![theirs]);
    // Too long for the hand-off buffers: dropped, counted.
    let small = Handoff::new(PortPartition::new(32768..=60999, 2).unwrap(), 4, 64);
    let mut c0 = small.device(0, Loopback::new(16, 2048));
    put(c0.inner_mut(), &tcp_frame(50000, &[7; 100]));
    receive_all(&mut c0);
    assert_eq!(c0.stats().handoff_dropped, 1);
}

/// The fragments of a datagram for core 1's port, all arriving on core 0's queue (fragments carry no ports after
/// the first, so a NIC hashes them by address alone): reassembled on core 0, inside the hand-off, and handed to
/// core 1 as the one frame they were cut from.
#[test]
fn fragments_are_reassembled_before_the_hand_off_routes_them() {
    use crate::nic::defrag::{Defrag, DefragConfig};
    let handoff = Handoff::new(PortPartition::new(32768..=60999, 2).unwrap(), 4, 2048);
    let wrap = || Defrag::new(Loopback::new(16, 2048), DefragConfig::default());
    let (mut core0, mut core1) = (handoff.device(0, wrap()), handoff.device(1, wrap()));
    let mut whole = tcp_frame(50000, &[9; 40]);
    let mut ip = Ipv4Packet::new_unchecked(&mut whole[14..]);
    ip.set_ident(0x1234);
    ip.set_dont_frag(false);
    ip.fill_checksum();
    // 60 bytes of TCP header and data, cut after 24.
    for (offset, end, more) in [(0, 24, true), (24, 60, false)] {
        let mut piece = whole[..34].to_vec();
        piece.extend_from_slice(&whole[34 + offset..34 + end]);
        let mut ip = Ipv4Packet::new_unchecked(&mut piece[14..]);
        ip.set_total_len((20 + end - offset) as u16);
        ip.set_more_frags(more);
        ip.set_frag_offset(offset as u16);
        ip.fill_checksum();
        put(core0.inner_mut().inner_mut(), &piece);
    }
    assert!(receive_all(&mut core0).is_empty());
    assert_eq!(core0.stats().handed_out, 1, "one frame crossed, not two fragments");
    assert_eq!(receive_all(&mut core1), vec![whole]);
    assert_eq!(core0.inner().stats().reassembled, 1);
}

/// Two stacks sharing one "wire" whose frames all arrive at core 0 (a NIC steering everything to one queue):
/// core 1's connection still works, every frame for it crossing by hand-off, with the echo exact.
#[test]
fn a_connection_of_core_1_whose_replies_all_land_on_core_0_completes_through_the_hand_off() {
    let partition = PortPartition::new(32768..=60999, 2).unwrap();
    let handoff = Handoff::new(partition.clone(), 64, 2048);
    let server_mac = EthernetAddress([2, 0, 0, 0, 0, 1]);
    let client_mac = EthernetAddress([2, 0, 0, 0, 0, 2]);
    let (server_ip, client_ip) = (Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(10, 0, 0, 2));

    // The peer: one stack on its own loopback-like pipe; the "wire" is two Loopbacks we move frames between.
    let mut peer = Stack::new(StackConfig::new(server_mac, server_ip, 1), Instant::ZERO);
    peer.listen(7).unwrap();
    let mut cores: Vec<Stack> = (0..2)
        .map(|c| {
            let mut cfg = StackConfig::new(client_mac, client_ip, core_seed(1, c));
            cfg.ephemeral_ports = partition.range(c);
            let mut s = Stack::new(cfg, Instant::ZERO);
            s.add_neighbor(server_ip, server_mac);
            s
        })
        .collect();
    peer.add_neighbor(client_ip, client_mac);
    let mut peer_dev = Loopback::new(256, 2048);
    let mut devs = [handoff.device(0, Loopback::new(256, 2048)), handoff.device(1, Loopback::new(256, 2048))];
    let conn = cores[1].connect(SocketAddrV4::new(server_ip, 7)).unwrap();
    let message = b"handed over, byte for byte".repeat(40);
    let (mut sent, mut echoed, mut back) = (0, Vec::new(), Vec::new());
    let mut buf = [0u8; 4096];
    for step in 0..2000u64 {
        let now = Instant::from_millis(step);
        // Each device's transmissions: cores -> peer, peer -> core 0's queue always.
        for (c, dev) in devs.iter_mut().enumerate() {
            cores[c].poll(now, dev);
            let mut out = Vec::new();
            dev.inner_mut().receive(now, 256, &mut |f, _| out.push(f.to_vec()));
            for f in out {
                put(&mut peer_dev, &f);
            }
        }
        let mut to_peer = Vec::new();
        peer_dev.receive(now, 256, &mut |f, _| to_peer.push(f.to_vec()));
        let mut wire = Loopback::new(256, 2048);
        for f in &to_peer {
            put(&mut wire, f);
        }
        peer.poll(now, &mut wire);
        let mut replies = Vec::new();
        wire.receive(now, 256, &mut |f, _| replies.push(f.to_vec()));
        for f in replies {
            put(devs[0].inner_mut(), &f);
        }
        while let Some(ev) = peer.next_event() {
            if let StackEvent::Readable(id) = ev {
                let n = peer.recv(id, &mut buf).unwrap();
                echoed.extend_from_slice(&buf[..n]);
                peer.send(id, &buf[..n]).unwrap();
            }
        }
        while cores[1].next_event().is_some() {}
        if sent < message.len() {
            sent += cores[1].send(conn, &message[sent..]).unwrap_or(0);
        }
        loop {
            let n = cores[1].recv(conn, &mut buf).unwrap_or(0);
            if n == 0 {
                break;
            }
            back.extend_from_slice(&buf[..n]);
        }
        if back.len() == message.len() {
            break;
        }
    }
    assert_eq!(echoed, message);
    assert_eq!(back, message, "the echo came back exact");
    assert!(devs[0].stats().handed_out > 0);
    assert_eq!(devs[0].stats().handed_out, devs[1].stats().handed_in);
    assert_eq!(cores[0].counters().rx_frames, 0, "core 0's stack saw none of core 1's frames");
    assert_eq!(devs[0].stats().handoff_dropped, 0);
}

#[test]
fn with_rss_each_core_opens_only_from_ports_whose_replies_the_nic_gives_its_queue() {
    use crate::engine::rss::{Rss, MICROSOFT_KEY};
    use crate::engine::PortFilter;
    let rss = Rss::new(&MICROSOFT_KEY, (0..128).map(|i| i % 4).collect()).unwrap();
    let partition = PortPartition::new(32768..=60999, 4).unwrap();
    let ip = Ipv4Addr::new(10, 0, 0, 1);
    let remote = SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 2), 80);
    for core in 0..4u32 {
        let mut cfg = StackConfig::new(EthernetAddress([2; 6]), ip, core_seed(3, core as usize));
        cfg.ephemeral_ports = partition.range(core as usize);
        let filter_rss = rss.clone();
        cfg.port_filter = Some(PortFilter(std::sync::Arc::new(move |l, r| filter_rss.reply_queue(l, r) == core)));
        let mut stack = Stack::new(cfg, Instant::ZERO);
        for _ in 0..200 {
            let id = stack.connect(remote).unwrap();
            let local = stack.connection(id).unwrap().local();
            assert_eq!(rss.reply_queue(local, remote), core, "port {}", local.port());
            assert_eq!(partition.owner(local.port()), Some(core as usize));
        }
    }
}

/// A passive connection of core 0 whose segments, after the SYN, all arrive on core 1's queue (a flow that moved,
/// as after a peer re-hashes): core 1's stack has no such connection and would reset it; its RST is held back and
/// each segment passed on to core 0, which completes the echo exactly. No RST reaches the peer.
#[test]
fn segments_of_a_passive_connection_that_moved_queue_are_passed_to_the_core_that_has_it() {
    let partition = PortPartition::new(32768..=60999, 2).unwrap();
    let handoff = Handoff::new(partition, 64, 2048);
    let server_mac = EthernetAddress([2, 0, 0, 0, 0, 1]);
    let client_mac = EthernetAddress([2, 0, 0, 0, 0, 2]);
    let (server_ip, client_ip) = (Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(10, 0, 0, 2));
    let mut cores: Vec<Stack> = (0..2)
        .map(|c| {
            let mut s = Stack::new(StackConfig::new(server_mac, server_ip, core_seed(5, c)), Instant::ZERO);
            s.listen(7).unwrap();
            s
        })
        .collect();
    let mut devs = [handoff.device(0, Loopback::new(256, 2048)), handoff.device(1, Loopback::new(256, 2048))];
    let mut peer = Stack::new(StackConfig::new(client_mac, client_ip, 9), Instant::ZERO);
    peer.add_neighbor(server_ip, server_mac);
    let conn = peer.connect(SocketAddrV4::new(server_ip, 7)).unwrap();
    let message = b"moved, and still mine ".repeat(60);
    let (mut sent, mut back, mut rst_seen, mut frames_seen) = (0, Vec::new(), 0, 0);
    let mut buf = [0u8; 4096];
    for step in 0..2000u64 {
        let now = Instant::from_millis(step);
        let mut wire = Loopback::new(256, 2048);
        peer.poll(now, &mut wire);
        let mut from_peer = Vec::new();
        wire.receive(now, 256, &mut |f, _| from_peer.push(f.to_vec()));
        for f in from_peer {
            // The SYN lands on core 0; everything after it on core 1.
            let queue = usize::from(frames_seen > 0);
            frames_seen += 1;
            put(devs[queue].inner_mut(), &f);
        }
        let mut to_peer = Vec::new();
        for (c, dev) in devs.iter_mut().enumerate() {
            cores[c].poll(now, dev);
            while let Some(ev) = cores[c].next_event() {
                if let StackEvent::Readable(id) = ev {
                    let n = cores[c].recv(id, &mut buf).unwrap();
                    cores[c].send(id, &buf[..n]).unwrap();
                }
            }
            // The loopback holds what the core sent; it goes to the peer.
            dev.inner_mut().receive(now, 256, &mut |f, _| to_peer.push(f.to_vec()));
        }
        let mut wire = Loopback::new(256, 2048);
        for f in &to_peer {
            rst_seen += usize::from(f[47] & 0x04 != 0);
            put(&mut wire, f);
        }
        peer.poll(now, &mut wire);
        while peer.next_event().is_some() {}
        if sent < message.len() {
            sent += peer.send(conn, &message[sent..]).unwrap_or(0);
        }
        loop {
            let n = peer.recv(conn, &mut buf).unwrap_or(0);
            if n == 0 {
                break;
            }
            back.extend_from_slice(&buf[..n]);
        }
        if back.len() == message.len() {
            break;
        }
    }
    assert_eq!(back, message, "the echo came back exact");
    assert_eq!(rst_seen, 0, "no RST reached the peer");
    assert!(devs[1].stats().strays_passed > 0);
    assert_eq!(cores[0].counters().conns_opened, 1);
    assert_eq!(cores[1].connection_count(), 0);
    assert_eq!(devs[1].stats().handoff_dropped, 0);
}
