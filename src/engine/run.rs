//! The loop one core runs: poll the device, hand events to the application, and when there is nothing to do,
//! spin a little and then sleep in growing steps until the next timer or the next frame — busy under load, quiet
//! when idle.

use core::sync::atomic::{AtomicBool, Ordering};
use core::time::Duration;

use super::control::ControlServer;
use super::Stack;
use crate::app::{dispatch, App};
use crate::nic::FrameDevice;
use crate::time::Instant;

/// The real clock: microseconds since the machine booted (CLOCK_MONOTONIC's epoch), so that every xtcp process of
/// one boot reads the same time. The only clock read in xtcp's engine.
///
/// A shared epoch matters to the peer: ISNs (RFC 6528's M) and TCP timestamps advance with this clock, so a new
/// process that reuses a 4-tuple left in TIME_WAIT by an earlier one sends a later timestamp and sequence number,
/// and the peer lets it reopen the tuple (RFC 6191). Counted from each process's start, they would go back.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    origin: std::time::Instant,
    /// Microseconds since boot at `origin`.
    origin_micros: u64,
}

impl Clock {
    /// The clock, reading the monotonic clock once for its epoch.
    pub fn new() -> Clock {
        let origin = std::time::Instant::now();
        Clock { origin, origin_micros: monotonic_micros() }
    }

    /// The time since boot.
    pub fn now(&self) -> Instant {
        let elapsed = u64::try_from(self.origin.elapsed().as_micros()).unwrap_or(u64::MAX);
        Instant::from_micros(self.origin_micros.saturating_add(elapsed))
    }
}

/// CLOCK_MONOTONIC in microseconds (the clock `std::time::Instant` reads on Linux, whose epoch it keeps to itself);
/// zero where there is none.
#[allow(unsafe_code)]
fn monotonic_micros() -> u64 {
    #[cfg(target_os = "linux")]
    {
        let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
        // SAFETY: `ts` is a valid, writable timespec; CLOCK_MONOTONIC always exists on Linux.
        if unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) } == 0 {
            return (ts.tv_sec as u64).saturating_mul(1_000_000).saturating_add(ts.tv_nsec as u64 / 1000);
        }
    }
    0
}

impl Default for Clock {
    fn default() -> Clock {
        Clock::new()
    }
}

/// How the loop waits when idle.
///
/// After each turn that found work the loop keeps polling for a window, then sleeps. The window adapts to the
/// traffic: twice the last gap between turns with work, decaying by an eighth per such turn, never under
/// `busy_poll` nor over `busy_poll_max`. So a server answering a request every half millisecond polls through the
/// gaps and answers as fast as a pure busy-poller (a sleeping vCPU takes 100 µs and more to wake), while one
/// whose traffic stopped sleeps after `busy_poll_max` at most.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunOptions {
    /// The shortest polling window after the last frame or event (default 200 µs).
    pub busy_poll: Duration,
    /// The longest the window grows to when work comes at intervals (default 2 ms).
    pub busy_poll_max: Duration,
    /// The longest single sleep when idle (default 1 ms); sleeps grow from 1 µs up to this. A device with
    /// something to wait on ends a sleep as soon as a frame arrives (see [`FrameDevice::wait`]).
    pub max_sleep: Duration,
}

impl Default for RunOptions {
    fn default() -> RunOptions {
        RunOptions {
            busy_poll: Duration::from_micros(200),
            busy_poll_max: Duration::from_millis(2),
            max_sleep: Duration::from_millis(1),
        }
    }
}

/// What one run did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct RunStats {
    /// Loop turns.
    pub turns: u64,
    /// Turns that found frames or events.
    pub busy_turns: u64,
    /// Sleeps taken.
    pub sleeps: u64,
}

/// Runs `app` on `stack` over `dev` until the application is done or `stop` is set.
pub fn run(
    stack: &mut Stack,
    dev: &mut dyn FrameDevice,
    app: &mut dyn App,
    stop: &AtomicBool,
    opts: RunOptions,
) -> RunStats {
    run_with(stack, dev, app, stop, opts, None)
}

/// As [`run`], also answering `xtcp stat` on `control`: the loop hands it the stack and the device every turn, and
/// it looks at its socket once per its poll interval (see [`ControlServer::poll`]). Snapshots carry the device's
/// drops by reason and statistics ([`FrameDevice::device_stats`], read only when a snapshot is made) and the loop's
/// own statistics as device values `loop_turns`, `loop_busy_turns` and `loop_sleeps`.
pub fn run_with(
    stack: &mut Stack,
    dev: &mut dyn FrameDevice,
    app: &mut dyn App,
    stop: &AtomicBool,
    opts: RunOptions,
    mut control: Option<&mut ControlServer>,
) -> RunStats {
    let clock = Clock::new();
    let mut stats = RunStats::default();
    let now = clock.now();
    // The stack was made before this clock was read (at `Instant::ZERO`, as `run_cores` makes it): what `start`
    // opens is opened now.
    stack.advance_to(now);
    app.start(stack, now);
    let mut last_work = clock.now();
    let mut window = opts.busy_poll;
    let mut sleep = Duration::ZERO;
    while !stop.load(Ordering::Relaxed) && !app.done() {
        stats.turns += 1;
        let now = clock.now();
        let frames = stack.receive(now, dev);
        let events = dispatch(stack, now, app);
        // ACKs owed to what came in ride on what the application queued in its turn.
        stack.flush(now, dev);
        if let Some(server) = control.as_deref_mut() {
            let extra =
                [("loop_turns", stats.turns), ("loop_busy_turns", stats.busy_turns), ("loop_sleeps", stats.sleeps)];
            server.poll(now, stack, Some(&*dev), &extra);
        }
        if frames > 0 || events > 0 {
            stats.busy_turns += 1;
            let gap = now - last_work;
            window = (gap * 2).max(window - window / 8).min(opts.busy_poll_max).max(opts.busy_poll);
            last_work = now;
            sleep = Duration::ZERO;
            continue;
        }
        let next = [stack.poll_at(), dev.poll_at()].into_iter().flatten().min();
        if next.is_some_and(|t| t <= now) {
            // Owed now (the application queued data, a timer is due): the answer to what goes out is the next
            // work, so the window starts again.
            last_work = now;
            core::hint::spin_loop();
            continue;
        }
        if now - last_work < window {
            core::hint::spin_loop();
            continue;
        }
        sleep = (sleep * 2).clamp(Duration::from_micros(1), opts.max_sleep);
        if let Some(t) = next {
            sleep = sleep.min(t - now);
        }
        stats.sleeps += 1;
        dev.wait(sleep);
    }
    stats
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clocks_made_at_different_times_read_the_same_time_since_boot() {
        let first = Clock::new();
        std::thread::sleep(Duration::from_millis(30));
        let second = Clock::new();
        let (a, b) = (first.now(), second.now());
        let gap = a.total_micros().abs_diff(b.total_micros());
        assert!(gap < 10_000, "two clocks differ by {gap} µs");
        assert!(b.total_micros() >= 30_000, "{b:?} is not counted from boot");
    }
}
