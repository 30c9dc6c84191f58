//! Wall-clock time as an injected component: the system clock in production, a manual clock in tests and
//! simulations.

use std::fmt;
use std::sync::Once;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use parking_lot::Mutex;

/// A source of wall-clock time. Checkpoint timestamps and the orphan sweep's file ages come from it.
pub trait Clock: Send + Sync + fmt::Debug {
    /// The current time.
    fn now(&self) -> SystemTime;

    /// The current time in milliseconds since the Unix epoch (0 before the epoch).
    fn now_ms(&self) -> u64 {
        self.now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    }

    /// [`Clock::now_ms`], possibly a few milliseconds behind, read cheaply enough for every access to a
    /// state with processing-time TTL (`docs/ttl.md`). The default is [`Clock::now_ms`]; the system clock
    /// answers from a clock thread (see [`SystemClock`]).
    fn now_ms_coarse(&self) -> u64 {
        self.now_ms()
    }
}

/// The operating system's clock ([`SystemTime::now`]).
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> SystemTime {
        SystemTime::now()
    }

    /// The time the process's clock thread (`statebackend-clock`, started by the first call) stored at
    /// its last tick, once a millisecond: one relaxed atomic load. Reading the OS clock per record cost
    /// far more than the read itself, between random memory accesses (`benches/ttl.rs`, heap get with
    /// processing-time TTL: 1.5x without, the clock read where a tick's load costs nothing measurable).
    /// Never earlier than a reading before (a wall clock set back holds it until it catches up); behind by
    /// a millisecond, or by as long as the thread is not scheduled (a backend with a processing-time TTL
    /// state moves it to an exact reading every 1,024 records). If the thread cannot start, it is
    /// [`Clock::now_ms`].
    #[inline]
    fn now_ms_coarse(&self) -> u64 {
        ticked_ms()
    }
}

/// Milliseconds since the epoch at the clock thread's last tick.
static TICKED_MS: AtomicU64 = AtomicU64::new(0);
/// Starts the clock thread once.
static TICKER: Once = Once::new();
/// Whether the clock thread runs.
static TICKING: AtomicBool = AtomicBool::new(false);

/// Starts the clock thread if no one has; returns whether it runs (`false` if it could not start: then
/// [`last_tick_ms`] moves only by [`advance_tick`]).
pub(crate) fn start_ticking() -> bool {
    TICKER.call_once(|| {
        TICKED_MS.store(SystemClock.now_ms(), Ordering::Relaxed);
        let started = std::thread::Builder::new()
            .name("statebackend-clock".into())
            .spawn(|| {
                loop {
                    std::thread::sleep(Duration::from_millis(1));
                    TICKED_MS.fetch_max(SystemClock.now_ms(), Ordering::Relaxed);
                }
            });
        TICKING.store(started.is_ok(), Ordering::Relaxed);
    });
    TICKING.load(Ordering::Relaxed)
}

/// [`SystemClock::now_ms_coarse`]: the last tick, after starting the clock thread on the first call; the
/// OS clock if the thread could not start.
#[inline]
fn ticked_ms() -> u64 {
    if start_ticking() {
        last_tick_ms()
    } else {
        SystemClock.now_ms()
    }
}

/// The clock thread's last tick (ms since the epoch), one relaxed load and nothing else: for a caller
/// that saw [`start_ticking`] answer `true`. Inlined into every access to a processing-time TTL state,
/// where one more check (whether the thread runs) or a copy sampled per record cost a heap TTL write a
/// measurable part of its time (`docs/ttl.md`).
#[inline]
pub(crate) fn last_tick_ms() -> u64 {
    TICKED_MS.load(Ordering::Relaxed)
}

/// Moves the tick forward to `exact_ms`, an exact reading of the system clock a caller took (never back):
/// bounds how far the tick can lag when the clock thread is not scheduled.
pub(crate) fn advance_tick(exact_ms: u64) {
    TICKED_MS.fetch_max(exact_ms, Ordering::Relaxed);
}

/// A clock that moves only when told to (tests, deterministic simulation).
#[derive(Debug)]
pub struct ManualClock {
    now: Mutex<SystemTime>,
}

impl ManualClock {
    /// A clock standing at `start`.
    pub fn new(start: SystemTime) -> Self {
        ManualClock {
            now: Mutex::new(start),
        }
    }

    /// Moves the clock forward by `by`.
    pub fn advance(&self, by: Duration) {
        let mut now = self.now.lock();
        *now += by;
    }

    /// Sets the clock to `to` (which may be earlier: wall clocks jump).
    pub fn set(&self, to: SystemTime) {
        *self.now.lock() = to;
    }
}

impl Clock for ManualClock {
    fn now(&self) -> SystemTime {
        *self.now.lock()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manual_clock_moves_only_when_told() {
        let start = UNIX_EPOCH + Duration::from_secs(1_000);
        let clock = ManualClock::new(start);
        assert_eq!(clock.now(), start);
        clock.advance(Duration::from_millis(1_500));
        assert_eq!(clock.now_ms(), 1_001_500);
        clock.set(start);
        assert_eq!(clock.now(), start);
        assert_eq!(
            clock.now_ms_coarse(),
            1_000_000,
            "exact unless a clock says otherwise"
        );
    }

    #[test]
    fn the_system_clocks_coarse_reading_follows_the_clock_and_never_leads_it() {
        let first = SystemClock.now_ms_coarse();
        assert!(first <= SystemClock.now_ms());
        // The clock thread ticks: the reading moves on (within 10 s, however loaded the machine).
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while SystemClock.now_ms_coarse() <= first {
            assert!(
                std::time::Instant::now() < deadline,
                "the clock thread never ticked"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        let coarse = SystemClock.now_ms_coarse();
        let after = SystemClock.now_ms();
        assert!(coarse <= after, "{coarse} leads {after}");
    }
}
