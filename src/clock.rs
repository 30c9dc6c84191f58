//! Wall-clock time as an injected component: the system clock in production, a manual clock in tests and
//! simulations.

use std::fmt;
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

    /// [`Clock::now_ms`], possibly up to a few milliseconds behind (the kernel's timer tick), read cheaply
    /// enough to sample once per record: the processing time of state TTL (`docs/ttl.md`). The default
    /// is [`Clock::now_ms`]; the system clock reads Linux's `CLOCK_REALTIME_COARSE`.
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

    /// `CLOCK_REALTIME_COARSE` on Linux (a vDSO read of the last tick, no timestamp counter and none of
    /// `SystemTime`'s arithmetic: per record, TTL with [`Clock::now_ms`] took 2.2x the time of the same
    /// work without TTL on the heap backend); [`Clock::now_ms`] elsewhere.
    #[inline]
    fn now_ms_coarse(&self) -> u64 {
        #[cfg(target_os = "linux")]
        {
            let t = rustix::time::clock_gettime(rustix::time::ClockId::RealtimeCoarse);
            // Before the epoch (a negative second) reads 0, as `now_ms`; `tv_nsec` is below 10^9.
            let (secs, nanos) = (u64::try_from(t.tv_sec), u64::try_from(t.tv_nsec));
            secs.map_or(0, |s| {
                s.saturating_mul(1_000) + nanos.unwrap_or(0) / 1_000_000
            })
        }
        #[cfg(not(target_os = "linux"))]
        {
            self.now_ms()
        }
    }
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
    fn the_system_clocks_coarse_reading_is_within_a_tick_of_its_exact_one() {
        let before = SystemClock.now_ms();
        let coarse = SystemClock.now_ms_coarse();
        let after = SystemClock.now_ms();
        // A tick is at most 10 ms (Linux's slowest timer, HZ=100); a coarse read lags, never leads.
        assert!(
            coarse + 10 >= before && coarse <= after,
            "{before} {coarse} {after}"
        );
    }
}
