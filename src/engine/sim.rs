//! Two stacks joined by a simulated link, on a virtual clock: the world the simulation tests and
//! `xtcp demo --sim` run in.
//!
//! Each stack polls its own device (a [`crate::nic::sim::SimPort`], usually wrapped in a fault injector and a pcap
//! tap). Time jumps straight to the next thing that can happen — a frame becoming deliverable or a timer — so
//! two minutes of TIME_WAIT cost nothing.

use core::time::Duration;

use super::Stack;
use crate::nic::FrameDevice;
use crate::time::Instant;

/// Polls at one instant before the world is declared stuck (a livelock guard; real runs settle in a few).
const MAX_POLLS_PER_INSTANT: usize = 10_000;

/// Application turns given to an idle world before it is declared stuck.
const IDLE_APP_TURNS: usize = 1000;

/// Two stacks, their devices and the clock.
pub struct SimWorld {
    now: Instant,
    /// The two stacks: index 0 and 1.
    pub stacks: [Stack; 2],
    /// Each stack's device.
    pub devices: [Box<dyn FrameDevice>; 2],
}

impl core::fmt::Debug for SimWorld {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("SimWorld").field("now", &self.now).field("stacks", &self.stacks).finish_non_exhaustive()
    }
}

impl SimWorld {
    /// A world at time `now`.
    pub fn new(stacks: [Stack; 2], devices: [Box<dyn FrameDevice>; 2], now: Instant) -> SimWorld {
        SimWorld { now, stacks, devices }
    }

    /// The virtual time.
    pub fn now(&self) -> Instant {
        self.now
    }

    /// Polls both stacks until nothing more happens at this instant. Returns false if the world is stuck (it kept
    /// producing work without time passing).
    pub fn settle(&mut self) -> bool {
        for _ in 0..MAX_POLLS_PER_INSTANT {
            let mut frames = 0;
            for i in 0..2 {
                frames += self.stacks[i].poll(self.now, self.devices[i].as_mut());
            }
            let owed = self.stacks.iter().any(|s| s.poll_at().is_some_and(|t| t <= self.now));
            if frames == 0 && !owed {
                return true;
            }
        }
        false
    }

    /// The next instant at which anything can happen, or `None` when nothing is pending anywhere.
    pub fn next_event(&self) -> Option<Instant> {
        let stacks = self.stacks.iter().filter_map(|s| s.poll_at());
        let devices = self.devices.iter().filter_map(|d| d.poll_at());
        stacks.chain(devices).min()
    }

    /// Moves the clock to the next event (at least 1 µs on, so that timer lower bounds cannot stall it), but
    /// not past `limit`. Returns false when nothing is pending before `limit`.
    pub fn advance(&mut self, limit: Instant) -> bool {
        let Some(next) = self.next_event() else {
            return false;
        };
        if next > limit {
            self.now = limit;
            return false;
        }
        self.now = next.max(self.now + Duration::from_micros(1));
        true
    }

    /// Lets time pass until `until`, polling both stacks at every event and at least every `step` between, as a
    /// real loop keeps polling while idle (the stacks' housekeeping, such as compacting idle connections, runs in
    /// their polls).
    pub fn pass(&mut self, until: Instant, step: Duration) {
        while self.now < until {
            let next = self.next_event().map_or(until, |t| t.min(until));
            self.now = next.min(self.now + step).max(self.now + Duration::from_micros(1));
            self.settle();
        }
    }

    /// Runs until `app` says it is done or `limit` is reached. `app` is called at every instant with the stacks
    /// and the time, to read events and make calls. Returns true when `app` finished.
    pub fn run(&mut self, limit: Instant, mut app: impl FnMut(&mut [Stack; 2], Instant) -> bool) -> bool {
        loop {
            if app(&mut self.stacks, self.now) {
                return true;
            }
            if !self.settle() {
                return false;
            }
            if app(&mut self.stacks, self.now) {
                return true;
            }
            if self.now >= limit {
                return app(&mut self.stacks, self.now);
            }
            if !self.advance(limit) {
                // Nothing pending in the network: only the application can still act (read what waits, send,
                // close). Give it a bounded number of turns to make work before calling the world stuck.
                let mut woke = false;
                for _ in 0..IDLE_APP_TURNS {
                    if app(&mut self.stacks, self.now) {
                        return true;
                    }
                    if self.stacks.iter().any(|s| s.poll_at().is_some()) {
                        woke = true;
                        break;
                    }
                }
                if !woke {
                    return false;
                }
            }
        }
    }
}
