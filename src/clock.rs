//! Wall-clock time as an injected component: the system clock in production, a manual clock in tests and
//! simulations (STYLE.md habit 7: time comes from an injected clock).

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
}

/// The operating system's clock ([`SystemTime::now`]).
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> SystemTime {
        SystemTime::now()
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

/// A source of 64-bit ids for names no other writer may produce: upload names, backend and coordinator
/// instance ids, probe objects. Injected through [`crate::CheckpointStorage::with_id_source`], so that a
/// simulation draws every name from its seed and replays exactly.
pub trait IdSource: Send + Sync + fmt::Debug {
    /// The next id. Ids of one source must not repeat within a job's storage.
    fn next_id(&self) -> u64;
}

/// Ids from the operating system's random generator (`getrandom`): the default.
#[derive(Debug, Clone, Copy, Default)]
pub struct RandomIds;

impl IdSource for RandomIds {
    fn next_id(&self) -> u64 {
        random_u64()
    }
}

/// Ids from a seed (splitmix64 of a counter): the same seed gives the same ids in the same order. For
/// tests and simulations only: two processes with one seed would produce the same names.
#[derive(Debug, Default)]
pub struct SeededIds {
    state: std::sync::atomic::AtomicU64,
}

impl SeededIds {
    /// A source whose ids follow from `seed`.
    pub fn new(seed: u64) -> Self {
        SeededIds {
            state: std::sync::atomic::AtomicU64::new(seed),
        }
    }
}

impl IdSource for SeededIds {
    fn next_id(&self) -> u64 {
        let n = self
            .state
            .fetch_add(0x9e37_79b9_7f4a_7c15, std::sync::atomic::Ordering::Relaxed);
        crate::heap::table::fmix64(n.wrapping_add(0x9e37_79b9_7f4a_7c15))
    }
}

/// 64 random bits for names no other writer can produce (upload names, backend and coordinator ids), from
/// the operating system's generator (`getrandom`). Should the OS generator fail, the time, the process id
/// and a process-wide counter are mixed instead, which still never repeats within one process.
pub(crate) fn random_u64() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    getrandom::u64().unwrap_or_else(|_| {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        let count = COUNTER.fetch_add(1, Ordering::Relaxed);
        crate::heap::table::fmix64(nanos ^ u64::from(std::process::id()).rotate_left(32) ^ count)
    })
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
    }

    #[test]
    fn seeded_ids_replay_and_do_not_repeat() {
        let (a, b) = (SeededIds::new(7), SeededIds::new(7));
        let first: Vec<u64> = (0..1000).map(|_| a.next_id()).collect();
        let again: Vec<u64> = (0..1000).map(|_| b.next_id()).collect();
        assert_eq!(first, again);
        let distinct: std::collections::HashSet<&u64> = first.iter().collect();
        assert_eq!(distinct.len(), 1000);
        assert_ne!(SeededIds::new(8).next_id(), first[0]);
    }

    #[test]
    fn random_ids_differ() {
        let ids: std::collections::HashSet<u64> = (0..1000).map(|_| random_u64()).collect();
        assert_eq!(ids.len(), 1000);
    }
}
