//! Timer wheel benchmarks at one million entries.
//!
//! - `schedule_1m`: fill an empty (warm) wheel with 1M timers.
//! - `cancel_1m`: cancel 1M pending timers, in the order they were scheduled.
//! - `expire_1m_tick_1ms`: advance one millisecond at a time until all 1M have fired.
//! - `expire_1m_one_jump`: one advance past the last deadline fires all 1M.
//! - `schedule_cancel_with_1m_pending`: schedule one timer and cancel it while 1M others are pending.
//!
//! Deadlines are uniform over the next 10 minutes (levels 0 to 3 of the wheel). The wheel is reused, so its free
//! list is in the order the last round fired, as after churn: slab accesses are scattered over a 40 MB slab, and
//! the bulk numbers are mostly cache misses. In the steady-state case the one free entry stays hot.
//!
//! Throughput is reported in timers, so `1000 / (Melem/s)` is nanoseconds per timer. Run with
//! `cargo bench --bench timer`; `-- --test` runs each once.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, SamplingMode, Throughput};
use xtcp::timer::{TimerHandle, TimerWheel};

/// Timers per bulk measurement.
const TIMERS: usize = 1_000_000;
/// Deadlines fall in `now + 1 ..= now + SPREAD_MS`.
const SPREAD_MS: u64 = 600_000;

/// The engine's value: (connection slot, timer kind).
type Value = (u32, u8);

/// Pseudo-random deadline offsets, the same on every run (splitmix64).
fn offsets_ms(count: usize) -> Vec<u64> {
    let mut state = 0x5EED_u64;
    (0..count)
        .map(|_| {
            state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            1 + (z ^ (z >> 31)) % SPREAD_MS
        })
        .collect()
}

/// Schedules one timer per offset, relative to the wheel's time, recording handles.
fn fill(wheel: &mut TimerWheel<Value>, offsets_ms: &[u64], handles: &mut Vec<TimerHandle>) {
    let now_ms = wheel.now_ms();
    handles.clear();
    for (i, &offset_ms) in offsets_ms.iter().enumerate() {
        let value = (i as u32, (i % 5) as u8);
        handles.push(wheel.schedule(now_ms + offset_ms, value).expect("capacity"));
    }
}

/// Advances past every deadline, counting what fired.
fn drain_all(wheel: &mut TimerWheel<Value>) -> usize {
    let end_ms = wheel.now_ms() + SPREAD_MS;
    wheel.advance(end_ms, |value, _| {
        black_box(value);
    })
}

/// A wheel with every slab entry touched once, so that measurements do not include first-touch page faults.
fn warm_wheel(offsets_ms: &[u64], handles: &mut Vec<TimerHandle>) -> TimerWheel<Value> {
    let mut wheel = TimerWheel::new(TIMERS, 0);
    fill(&mut wheel, offsets_ms, handles);
    assert_eq!(drain_all(&mut wheel), TIMERS);
    wheel
}

fn bulk(c: &mut Criterion) {
    let offsets_ms = offsets_ms(TIMERS);
    let mut handles = Vec::with_capacity(TIMERS);
    let mut wheel = warm_wheel(&offsets_ms, &mut handles);

    let mut group = c.benchmark_group("timer_wheel");
    group
        .sample_size(10)
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(4))
        .throughput(Throughput::Elements(TIMERS as u64));

    group.bench_function("schedule_1m", |b| {
        b.iter_custom(|iters| {
            let mut timed = Duration::ZERO;
            for _ in 0..iters {
                let start = Instant::now();
                fill(&mut wheel, &offsets_ms, &mut handles);
                timed += start.elapsed();
                assert_eq!(drain_all(&mut wheel), TIMERS);
            }
            timed
        })
    });

    group.bench_function("cancel_1m", |b| {
        b.iter_custom(|iters| {
            let mut timed = Duration::ZERO;
            for _ in 0..iters {
                fill(&mut wheel, &offsets_ms, &mut handles);
                let start = Instant::now();
                for &handle in &handles {
                    black_box(wheel.cancel(handle));
                }
                timed += start.elapsed();
                assert!(wheel.is_empty());
            }
            timed
        })
    });

    group.bench_function("expire_1m_tick_1ms", |b| {
        b.iter_custom(|iters| {
            let mut timed = Duration::ZERO;
            for _ in 0..iters {
                fill(&mut wheel, &offsets_ms, &mut handles);
                let start = Instant::now();
                let mut fired = 0;
                for now_ms in wheel.now_ms()..=wheel.now_ms() + SPREAD_MS {
                    fired += wheel.advance(now_ms, |value, _| {
                        black_box(value);
                    });
                }
                timed += start.elapsed();
                assert_eq!(fired, TIMERS);
            }
            timed
        })
    });

    group.bench_function("expire_1m_one_jump", |b| {
        b.iter_custom(|iters| {
            let mut timed = Duration::ZERO;
            for _ in 0..iters {
                fill(&mut wheel, &offsets_ms, &mut handles);
                let start = Instant::now();
                let fired = drain_all(&mut wheel);
                timed += start.elapsed();
                assert_eq!(fired, TIMERS);
            }
            timed
        })
    });
    group.finish();
}

fn steady_state(c: &mut Criterion) {
    let offsets_ms = offsets_ms(TIMERS);
    let mut handles = Vec::with_capacity(TIMERS);
    let mut wheel = warm_wheel(&offsets_ms, &mut handles);
    // One entry free for the timer being measured.
    fill(&mut wheel, &offsets_ms[1..], &mut handles);
    let now_ms = wheel.now_ms();

    let mut group = c.benchmark_group("timer_wheel");
    group
        .sample_size(30)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3))
        .throughput(Throughput::Elements(1));
    group.bench_function("schedule_cancel_with_1m_pending", |b| {
        let mut i = 0;
        b.iter(|| {
            i = (i + 1) % TIMERS;
            let handle = wheel.schedule(now_ms + offsets_ms[i], (i as u32, 0)).expect("one free");
            black_box(wheel.cancel(handle))
        })
    });
    group.finish();
    assert_eq!(wheel.len(), TIMERS - 1);
}

criterion_group!(benches, bulk, steady_state);
criterion_main!(benches);
