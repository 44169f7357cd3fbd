//! The echo server: every byte received goes back, and the connection closes after the peer's does.

use std::collections::HashSet;

use super::App;
use crate::engine::{ConnId, Stack, StackEvent};
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
    fn pump(&mut self, stack: &mut Stack, conn: ConnId) {
        loop {
            let room = stack.connection(conn).map_or(0, |c| c.send_capacity()).min(self.buf.len());
            let n = if room == 0 { 0 } else { stack.recv(conn, &mut self.buf[..room]).unwrap_or(0) };
            if n == 0 {
                break;
            }
            let _ = stack.send(conn, &self.buf[..n]);
        }
        // A full send buffer stops the loop with bytes still waiting: the send that filled it armed `Writable`, which
        // brings us back when the peer's ACKs free room.
        let drained = stack.connection(conn).map_or(true, |c| c.recv_queue_len() == 0);
        if drained && self.draining.remove(&conn) {
            let _ = stack.close(conn);
        }
    }
}

impl App for Echo {
    fn start(&mut self, stack: &mut Stack, _now: Instant) {
        let _ = stack.listen(self.port);
    }

    fn on_event(&mut self, stack: &mut Stack, _now: Instant, event: StackEvent) {
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
