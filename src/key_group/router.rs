//! Routing records to the subtask that owns their key, with the backend's own hash, so that an engine
//! hashes a record once on its way through the exchange and into state access.

use std::cell::RefCell;

use crate::codec::Codec;
use crate::error::Result;
use crate::key_group::{KeyGroupRange, key_group_for_hash, key_group_range_for_operator};

/// Where a key goes: its stable hash ([`Codec::stable_hash`], `xxh3_64` of its encoding), its key group
/// (`hash % max_parallelism`) and the subtask that owns that group at the router's parallelism.
///
/// Made by a [`KeyGroupRouter`]; an engine ships the hash (8 bytes) with a record across an exchange and
/// rebuilds the route on the other side with [`KeyGroupRouter::route_hash`], then hands it to
/// [`KeyedStateBackend::set_current_key_routed`](crate::KeyedStateBackend::set_current_key_routed), which
/// does not hash the key again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct KeyRoute {
    hash: u64,
    key_group: u32,
    subtask: u32,
    max_parallelism: u32,
}

impl KeyRoute {
    /// The key's stable hash.
    pub fn hash(&self) -> u64 {
        self.hash
    }
    /// The key's group.
    pub fn key_group(&self) -> u32 {
        self.key_group
    }
    /// The subtask that owns the key group at the router's parallelism.
    pub fn subtask(&self) -> u32 {
        self.subtask
    }
    /// The max parallelism the route was computed for.
    pub fn max_parallelism(&self) -> u32 {
        self.max_parallelism
    }
}

/// Routes keys to key groups and subtasks as the backends place them (Flink's `KeyGroupRangeAssignment`:
/// `assignToKeyGroup`, `computeOperatorIndexForKeyGroup`), for one max parallelism and parallelism.
/// Cheap to copy; share one per job or per exchange.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyGroupRouter {
    max_parallelism: u32,
    parallelism: u32,
}

thread_local! {
    /// Scratch for encoding keys whose codec hashes their encoding (strings, tuples).
    static SCRATCH: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

impl KeyGroupRouter {
    /// A router for `parallelism` subtasks of an operator with `max_parallelism` key groups.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`](crate::Error::InvalidArgument) if `max_parallelism` is not within
    /// `[1, 2^15]` or `parallelism` is 0 or above it.
    pub fn new(max_parallelism: u32, parallelism: u32) -> Result<Self> {
        key_group_range_for_operator(max_parallelism, parallelism, 0)?;
        Ok(KeyGroupRouter {
            max_parallelism,
            parallelism,
        })
    }

    /// Max parallelism (number of key groups).
    pub fn max_parallelism(&self) -> u32 {
        self.max_parallelism
    }

    /// Number of subtasks routed to.
    pub fn parallelism(&self) -> u32 {
        self.parallelism
    }

    /// The route of `key`: one hash of its encoding (no allocation for integer keys; strings and tuples
    /// are encoded into a per-thread buffer).
    #[inline]
    pub fn route<K: Codec>(&self, key: &K) -> KeyRoute {
        let hash = SCRATCH.with(|s| key.stable_hash(&mut s.borrow_mut()));
        self.route_hash(hash)
    }

    /// The route of a key whose stable hash is `hash` (as [`KeyRoute::hash`] gave it, possibly in another
    /// process).
    #[inline]
    pub fn route_hash(&self, hash: u64) -> KeyRoute {
        let key_group = key_group_for_hash(hash, self.max_parallelism);
        KeyRoute {
            hash,
            key_group,
            subtask: self.subtask_for_key_group(key_group),
            max_parallelism: self.max_parallelism,
        }
    }

    /// The subtask owning `key_group` (`kg * parallelism / max_parallelism`); a `key_group` at or above max
    /// parallelism is taken modulo it.
    #[inline]
    pub fn subtask_for_key_group(&self, key_group: u32) -> u32 {
        let kg = u64::from(key_group % self.max_parallelism);
        (kg * u64::from(self.parallelism) / u64::from(self.max_parallelism)) as u32
    }

    /// The key groups subtask `subtask` owns.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`](crate::Error::InvalidArgument) if `subtask >= parallelism`.
    pub fn key_groups_of(&self, subtask: u32) -> Result<KeyGroupRange> {
        key_group_range_for_operator(self.max_parallelism, self.parallelism, subtask)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::key_group::operator_index_for_key_group;

    #[test]
    fn routes_agree_with_the_key_group_functions_and_the_owned_ranges() {
        for (max_p, p) in [(128u32, 1u32), (128, 3), (1000, 7), (32768, 128)] {
            let router = KeyGroupRouter::new(max_p, p).unwrap();
            for i in 0..2_000u64 {
                let word = format!("w{i}");
                let route = router.route(&word);
                assert_eq!(
                    route.key_group(),
                    crate::key_group::assign_to_key_group(word.as_bytes(), max_p).unwrap()
                );
                assert_eq!(
                    route.subtask(),
                    operator_index_for_key_group(max_p, p, route.key_group()).unwrap()
                );
                assert!(
                    router
                        .key_groups_of(route.subtask())
                        .unwrap()
                        .contains(route.key_group())
                );
                assert_eq!(router.route_hash(route.hash()), route);
                let n = router.route(&i);
                assert_eq!(
                    n.hash(),
                    crate::key_group::stable_key_hash(&i.to_be_bytes())
                );
            }
        }
        assert!(KeyGroupRouter::new(128, 0).is_err());
        assert!(KeyGroupRouter::new(128, 129).is_err());
        assert!(KeyGroupRouter::new(0, 1).is_err());
    }
}
