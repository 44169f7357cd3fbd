//! The echo server: every byte received goes back, and the connection closes after the peer's does. As a discard
//! server (RFC 863) it reads and drops instead: the receiving end of a one-way bulk transfer.

use super::{App, Sockets};
use crate::engine::{ConnId, ConnSet, StackEvent};
use crate::time::Instant;

/// Echoes on one port.
#[derive(Debug)]
pub struct Echo {
    port: u16,
    buf: Box<[u8]>,
    /// Drop what arrives instead of sending it back.
    discard: bool,
    /// Connections whose peer closed: we close once everything received has been echoed.
    draining: ConnSet,
    /// Connections accepted so far.
    pub accepted: u64,
    /// Discard server: bytes read and dropped so far.
    pub discarded: u64,
}

impl Echo {
    /// An echo server for `port`.
    pub fn new(port: u16) -> Echo {
        Echo {
            port,
            buf: vec![0; 64 * 1024].into_boxed_slice(),
            discard: false,
            draining: ConnSet::default(),
            accepted: 0,
            discarded: 0,
        }
    }

    /// A discard server for `port` (RFC 863): what arrives is read and dropped, and the connection closes after
    /// the peer's does — so the peer's seeing our FIN means everything it sent was read.
    pub fn discard(port: u16) -> Echo {
        Echo { discard: true, ..Echo::new(port) }
    }

    /// Moves as much as the send buffer takes from the receive side to the send side (or drops it all).
    fn pump<S: Sockets + ?Sized>(&mut self, stack: &mut S, conn: ConnId) {
        let drained = if self.discard {
            // On xtcp the bytes are dropped where they lie, never copied.
            self.discarded += stack.drop_received(conn);
            true
        } else {
            self.echo(stack, conn)
        };
        // Most connections are not draining: no hash lookup for them.
        if drained && !self.draining.is_empty() && self.draining.remove(&conn) {
            let _ = stack.close(conn);
        }
    }

    /// Echoes what the send buffer takes; true when nothing is left to read.
    fn echo<S: Sockets + ?Sized>(&mut self, stack: &mut S, conn: ConnId) -> bool {
        loop {
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
