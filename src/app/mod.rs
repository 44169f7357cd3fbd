//! Applications on top of the stack, and the interface they implement.
//!
//! An [`App`] is driven by whoever runs a stack — the per-core loop ([`crate::engine::run`]) over a real device,
//! [`crate::engine::sim::SimWorld`] in tests, or the kernel-socket loop for `--stack kernel` — and acts through
//! the [`Sockets`] calls (`listen`, `connect`, `send`, `recv`, `close`). An application written against `Sockets`
//! alone runs unchanged on xtcp and on the kernel's TCP, so one tool measures both stacks with the same workload.
//! Everything runs on the stack's core: no locks, no channels.

pub mod demo;
pub mod echo;
pub mod files;
pub mod http;
pub mod load;

use std::net::SocketAddrV4;

use crate::engine::{ConnId, Stack, StackError, StackEvent};
use crate::time::Instant;

/// What an application may ask of a TCP stack: xtcp's [`Stack`], or ordinary kernel sockets.
///
/// The contract both keep:
/// - `send` takes at most [`Sockets::send_capacity`] bytes and never fewer when that many are offered; a send that
///   leaves the buffer full arms [`StackEvent::Writable`], which comes when room opens.
/// - `recv` returns 0 when nothing is waiting; [`StackEvent::Readable`] comes when more arrives.
/// - [`StackEvent::PeerClosed`] comes once the peer's FIN is reached; [`StackEvent::Closed`] once the connection is
///   gone, after which its [`ConnId`] is stale.
pub trait Sockets {
    /// Accepts connections on `port`.
    fn listen(&mut self, port: u16) -> Result<(), StackError>;
    /// Opens a connection to `remote`; [`StackEvent::Connected`] or [`StackEvent::Closed`] follows.
    fn connect(&mut self, remote: SocketAddrV4) -> Result<ConnId, StackError>;
    /// Queues bytes for sending; returns how many were taken.
    fn send(&mut self, id: ConnId, data: &[u8]) -> Result<usize, StackError>;
    /// Reads received bytes into `buf`; 0 when none wait.
    fn recv(&mut self, id: ConnId, buf: &mut [u8]) -> Result<usize, StackError>;
    /// Reads received bytes where they lie: `read` gets a run of at most `max` unread bytes and returns how many it
    /// consumed (the rest stay for the next read). Returns that count; 0 when none wait. On xtcp the run is the
    /// connection's receive buffer itself (no copy); the kernel's stack copies it out of the socket first.
    fn recv_with(&mut self, id: ConnId, max: usize, read: &mut dyn FnMut(&[u8]) -> usize) -> Result<usize, StackError>;
    /// Closes our side (FIN after the queued data); the connection stays readable.
    fn close(&mut self, id: ConnId) -> Result<(), StackError>;
    /// The application is done with the handle: freed if it closed in order, aborted otherwise.
    fn release(&mut self, id: ConnId) -> Result<(), StackError>;
    /// Reads and drops everything waiting on `id`, in place where the stack can; returns how many bytes.
    fn drop_received(&mut self, id: ConnId) -> u64 {
        let mut dropped = 0;
        while let Ok(n @ 1..) = self.recv_with(id, usize::MAX, &mut |data| data.len()) {
            dropped += n as u64;
        }
        dropped
    }
    /// Aborts the connection (RST).
    fn abort(&mut self, id: ConnId) -> Result<(), StackError>;
    /// Bytes `send` would take now; 0 for a stale handle.
    fn send_capacity(&self, id: ConnId) -> usize;
    /// Sends small segments at once (no Nagle), as `TCP_NODELAY`.
    fn set_nodelay(&mut self, id: ConnId, nodelay: bool) -> Result<(), StackError>;
    /// The next event for the application.
    fn next_event(&mut self) -> Option<StackEvent>;
}

impl Sockets for Stack {
    fn listen(&mut self, port: u16) -> Result<(), StackError> {
        Stack::listen(self, port)
    }
    fn connect(&mut self, remote: SocketAddrV4) -> Result<ConnId, StackError> {
        Stack::connect(self, remote)
    }
    fn send(&mut self, id: ConnId, data: &[u8]) -> Result<usize, StackError> {
        Stack::send(self, id, data)
    }
    fn recv(&mut self, id: ConnId, buf: &mut [u8]) -> Result<usize, StackError> {
        Stack::recv(self, id, buf)
    }
    fn recv_with(&mut self, id: ConnId, max: usize, read: &mut dyn FnMut(&[u8]) -> usize) -> Result<usize, StackError> {
        Stack::recv_with(self, id, max, read)
    }
    fn close(&mut self, id: ConnId) -> Result<(), StackError> {
        Stack::close(self, id)
    }
    fn release(&mut self, id: ConnId) -> Result<(), StackError> {
        Stack::release(self, id)
    }
    fn abort(&mut self, id: ConnId) -> Result<(), StackError> {
        Stack::abort(self, id)
    }
    fn send_capacity(&self, id: ConnId) -> usize {
        self.connection(id).map_or(0, |c| c.send_capacity())
    }
    fn set_nodelay(&mut self, id: ConnId, nodelay: bool) -> Result<(), StackError> {
        self.connection_mut(id)?.set_nodelay(nodelay);
        Ok(())
    }
    fn next_event(&mut self) -> Option<StackEvent> {
        Stack::next_event(self)
    }
}

/// An application on one core's stack. `S` is the stack it runs on: xtcp's [`Stack`] by default; applications
/// that need only [`Sockets`] implement `App<S>` for every `S` and run on the kernel too.
pub trait App<S: ?Sized = Stack> {
    /// Called once before the first poll: listen, connect.
    fn start(&mut self, stack: &mut S, now: Instant);

    /// Called for every event, in order.
    fn on_event(&mut self, stack: &mut S, now: Instant, event: StackEvent);

    /// Called once per loop turn after the events (for applications that pace themselves).
    fn on_tick(&mut self, _stack: &mut S, _now: Instant) {}

    /// True when the application has finished and the loop may stop.
    fn done(&self) -> bool {
        false
    }
}

/// Whether an HTTP header value holds `token` as one of its comma-separated elements, ignoring ASCII case (RFC 9110
/// §7.6.1), with no allocation: the server's and the load generator's reading of `Connection`.
fn has_token(value: &[u8], token: &[u8]) -> bool {
    value.split(|&b| b == b',').any(|t| t.trim_ascii().eq_ignore_ascii_case(token))
}

/// Hands every pending event of `stack` to `app`, then calls its tick. Returns how many events there were.
pub fn dispatch<S: Sockets + ?Sized>(stack: &mut S, now: Instant, app: &mut dyn App<S>) -> usize {
    let mut n = 0;
    while let Some(ev) = stack.next_event() {
        app.on_event(stack, now, ev);
        n += 1;
    }
    app.on_tick(stack, now);
    n
}
