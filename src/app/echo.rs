//! The echo server: every byte received goes back, and the connection closes after the peer's does.

use std::collections::HashSet;

use super::{App, Sockets};
use crate::engine::{ConnId, StackEvent};
use crate::time::Instant;

/// Echoes on one port.
#[derive(Debug)]
pub struct Echo {
    port: u16,
    buf: Box<[u8]>,
    /// Connections whose peer closed: we close once everything received has been echoed.
    draining: HashSet<ConnId>,
    /// Connections accepted so far.
    pub accepted: u64,
}

impl Echo {
    /// An echo server for `port`.
    pub fn new(port: u16) -> Echo {
        Echo { port, buf: vec![0; 64 * 1024].into_boxed_slice(), draining: HashSet::new(), accepted: 0 }
    }

    /// Moves as much as the send buffer takes from the receive side to the send side.
    fn pump<S: Sockets + ?Sized>(&mut self, stack: &mut S, conn: ConnId) {
        let drained = loop {
            let room = stack.send_capacity(conn).min(self.buf.len());
            if room == 0 {
                // A full send buffer stops the loop with bytes perhaps still waiting: the send that filled it armed
                // `Writable`, which brings us back when the peer's ACKs free room.
                break false;
            }
            let n = stack.recv(conn, &mut self.buf[..room]).unwrap_or(0);
            if n == 0 {
                break true;
            }
            let _ = stack.send(conn, &self.buf[..n]);
        };
        if drained && self.draining.remove(&conn) {
            let _ = stack.close(conn);
        }
    }
}

impl<S: Sockets + ?Sized> App<S> for Echo {
    fn start(&mut self, stack: &mut S, _now: Instant) {
        let _ = stack.listen(self.port);
    }

    fn on_event(&mut self, stack: &mut S, _now: Instant, event: StackEvent) {
        match event {
            StackEvent::Accepted { .. } => self.accepted += 1,
            StackEvent::Readable(c) | StackEvent::Writable(c) => self.pump(stack, c),
            StackEvent::PeerClosed(c) => {
                self.draining.insert(c);
                self.pump(stack, c);
            }
            StackEvent::Closed(c, _) => {
                self.draining.remove(&c);
            }
            StackEvent::Connected(_) => {}
        }
    }
}
