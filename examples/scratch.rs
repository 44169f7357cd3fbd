use std::net::{Ipv4Addr, SocketAddrV4};
use xtcp::engine::sim::SimWorld;
use xtcp::engine::{Stack, StackConfig, StackEvent};
use xtcp::nic::sim::{LinkConfig, SimLink};
use xtcp::nic::trace::{Direction, Tracer};
use xtcp::time::Instant;
use xtcp::wire::EthernetAddress;
fn main() {
    let (pa, pb) = SimLink::pair(LinkConfig::default());
    let ca = StackConfig::new(EthernetAddress([2, 0, 0, 0, 0, 1]), Ipv4Addr::new(10, 0, 0, 1), 1);
    let cb = StackConfig::new(EthernetAddress([2, 0, 0, 0, 0, 2]), Ipv4Addr::new(10, 0, 0, 2), 2);
    let mut a = Stack::new(ca, Instant::ZERO);
    let mut b = Stack::new(cb, Instant::ZERO);
    a.add_neighbor(Ipv4Addr::new(10, 0, 0, 2), EthernetAddress([2, 0, 0, 0, 0, 2]));
    b.add_neighbor(Ipv4Addr::new(10, 0, 0, 1), EthernetAddress([2, 0, 0, 0, 0, 1]));
    b.listen(80).unwrap();
    let id = a.connect(SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 2), 80)).unwrap();
    let ta = Tracer::new(pa, |now: Instant, d: Direction, f: &[u8]| {
        if d == Direction::Tx {
            println!("{now} A {}", xtcp::app::demo::describe_frame(f).unwrap_or_default())
        }
    });
    let tb = Tracer::new(pb, |now: Instant, d: Direction, f: &[u8]| {
        if d == Direction::Tx {
            println!("{now} B {}", xtcp::app::demo::describe_frame(f).unwrap_or_default())
        }
    });
    let mut w = SimWorld::new([a, b], [Box::new(ta), Box::new(tb)], Instant::ZERO);
    let mut steps = 0;
    let mut sent = false;
    let ok = w.run(Instant::from_secs(200), |s: &mut [Stack; 2], now| {
        steps += 1;
        if steps > 2000 {
            println!("too many steps at {now}: next {:?}", (s[0].poll_at(), s[1].poll_at()));
            return true;
        }
        for i in 0..2 {
            while let Some(e) = s[i].next_event() {
                println!("{now} ev{i} {e:?}");
                if let StackEvent::Connected(c) = e {
                    let n = s[0].send(c, &vec![7u8; 48 * 1024]).unwrap();
                    println!("queued {n}");
                    sent = true;
                    s[0].close(c).unwrap();
                }
                if let StackEvent::PeerClosed(c) = e {
                    if i == 1 {
                        s[1].close(c).unwrap();
                    }
                }
            }
        }
        let mut buf = [0u8; 16384];
        for i in 0..2 {
            for (cid, _) in s[i].connections().map(|(a, b)| (a, b.state())).collect::<Vec<_>>() {
                let mut guard = 0;
                loop {
                    let n = s[i].recv(cid, &mut buf).unwrap_or(0);
                    if n == 0 {
                        break;
                    }
                    guard += 1;
                    if guard > 100 {
                        let c = s[i].connection(cid).unwrap();
                        println!("recv loop! n={n} state={} queue={}", c.state(), c.recv_queue_len());
                        std::process::exit(1);
                    }
                }
            }
        }
        let _ = id;
        sent && s.iter().all(|x| x.connection_count() == 0)
    });
    println!("ok={ok} now={} steps={steps}", w.now());
}
