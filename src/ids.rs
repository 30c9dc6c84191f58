//! Ids for names no other writer may produce, as an injected component: random in production, from a
//! seed in tests and simulations (which then replay byte for byte).

use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

/// murmur3's 64-bit finalizer (Appleby, MurmurHash3 `fmix64`): a bijection that spreads every input bit
/// over the output. Mixes the seeded ids here and the heap map's hashes.
#[inline]
pub(crate) fn fmix64(mut h: u64) -> u64 {
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
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
        fmix64(n.wrapping_add(0x9e37_79b9_7f4a_7c15))
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
        fmix64(nanos ^ u64::from(std::process::id()).rotate_left(32) ^ count)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

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
