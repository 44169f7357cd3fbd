//! Applications on top of the stack, and the interface they implement.
//!
//! An [`App`] is driven by whoever runs the stack — the per-core loop ([`crate::engine::run`]) over a real device,
//! or [`crate::engine::sim::SimWorld`] in tests. It is called for each [`StackEvent`] and once per loop turn, and
//! acts through the [`Stack`]'s calls (`listen`, `connect`, `send`, `recv`, `close`). Everything runs on the
//! stack's core: no locks, no channels.

pub mod demo;
pub mod echo;
pub mod http;

use crate::engine::{Stack, StackEvent};
use crate::time::Instant;

/// An application on one core's stack.
pub trait App {
    /// Called once before the first poll: listen, connect.
    fn start(&mut self, stack: &mut Stack, now: Instant);

    /// Called for every event, in order.
    fn on_event(&mut self, stack: &mut Stack, now: Instant, event: StackEvent);

    /// Called once per loop turn after the events (for applications that pace themselves).
    fn on_tick(&mut self, _stack: &mut Stack, _now: Instant) {}

    /// True when the application has finished and the loop may stop.
    fn done(&self) -> bool {
        false
    }
}

/// Hands every pending event of `stack` to `app`, then calls its tick. Returns how many events there were.
pub fn dispatch(stack: &mut Stack, now: Instant, app: &mut dyn App) -> usize {
    let mut n = 0;
    while let Some(ev) = stack.next_event() {
        app.on_event(stack, now, ev);
        n += 1;
    }
    app.on_tick(stack, now);
    n
}
