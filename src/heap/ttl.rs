//! TTL states on the heap backend (`docs/ttl.md`): their tables hold [`Stamped`] values (value, list
//! elements, map values), and their serdes add what snapshots and key listings need: whether a stored
//! value still has a part written after a cutoff, and its encoding without the expired parts.

use std::sync::Arc;

use crate::codec::Codec;
use crate::format::bytes::PutExt;
use crate::heap::cow_map::CowMap;
use crate::heap::cow_map::sweep::{Sweep, SweepCursor};
use crate::heap::serde::{
    ListCell, MapCell, TtlSerde, ValueSerde, list_serde, map_serde, value_serde,
};
use crate::keyed::backend::{StateKey, StateValue};
use crate::keyed::ttl::{EXACT_READ_EVERY, Stamped, StateTtlConfig};
use crate::keyed::ttl_switch::WithTtl;

/// Serde of a value, reducing or aggregating state with TTL: [`Stamped`] values.
pub(crate) fn ttl_value_serde<V: Codec + 'static>(
    config: StateTtlConfig,
) -> ValueSerde<Stamped<V>> {
    let ttl = TtlSerde::new(
        config,
        |s: &Stamped<V>, cutoff| s.last_update_ms > cutoff,
        |s, cutoff, out| {
            let live = s.last_update_ms > cutoff;
            if live {
                s.encode(out);
            }
            live
        },
        |s, cutoff| match s.last_update_ms > cutoff {
            true => (Sweep::Keep, s.last_update_ms),
            false => (Sweep::Remove, u64::MAX),
        },
    );
    value_serde::<Stamped<V>, WithTtl>().with_ttl(ttl)
}

/// Serde of a list state with TTL: each element [`Stamped`].
pub(crate) fn ttl_list_serde<V: StateValue>(
    config: StateTtlConfig,
) -> ValueSerde<ListCell<Stamped<V>>> {
    let ttl = TtlSerde::new(
        config,
        |list: &ListCell<Stamped<V>>, cutoff| list.iter().any(|s| s.last_update_ms > cutoff),
        |list, cutoff, out| {
            let live = list.iter().filter(|s| s.last_update_ms > cutoff);
            let count = live.clone().count();
            if count > 0 {
                // As `list_serde`: the count, then each element length-prefixed.
                out.put_u32(u32::try_from(count).unwrap_or(u32::MAX));
                for s in live {
                    out.put_len_prefixed(|b| s.encode(b));
                }
            }
            count > 0
        },
        |list, cutoff| {
            let live = list.iter().filter(|s| s.last_update_ms > cutoff);
            let oldest = live.clone().map(|s| s.last_update_ms).min();
            match (live.clone().count(), oldest) {
                (_, None) => (Sweep::Remove, u64::MAX),
                (n, Some(oldest)) if n == list.len() => (Sweep::Keep, oldest),
                (_, Some(oldest)) => (Sweep::Replace(Arc::new(live.cloned().collect())), oldest),
            }
        },
    );
    list_serde::<Stamped<V>, WithTtl>().with_ttl(ttl)
}

/// Serde of a map state with TTL: each entry's value [`Stamped`].
pub(crate) fn ttl_map_serde<UK: StateKey, V: StateValue>(
    config: StateTtlConfig,
) -> ValueSerde<MapCell<UK, Stamped<V>>> {
    let ttl = TtlSerde::new(
        config,
        |map: &MapCell<UK, Stamped<V>>, cutoff| map.values().any(|s| s.last_update_ms > cutoff),
        |map, cutoff, out| {
            let live = map.iter().filter(|(_, s)| s.last_update_ms > cutoff);
            let count = live.clone().count();
            if count > 0 {
                // As `map_serde`: the count, then each entry's user key and value length-prefixed.
                out.put_u32(u32::try_from(count).unwrap_or(u32::MAX));
                for (k, s) in live {
                    out.put_len_prefixed(|b| k.encode(b));
                    out.put_len_prefixed(|b| s.encode(b));
                }
            }
            count > 0
        },
        |map, cutoff| {
            let live = map.iter().filter(|(_, s)| s.last_update_ms > cutoff);
            let oldest = live.clone().map(|(_, s)| s.last_update_ms).min();
            match (live.clone().count(), oldest) {
                (_, None) => (Sweep::Remove, u64::MAX),
                (n, Some(oldest)) if n == map.len() => (Sweep::Keep, oldest),
                (_, Some(oldest)) => {
                    let kept = live.map(|(k, s)| (k.clone(), s.clone())).collect();
                    (Sweep::Replace(Arc::new(kept)), oldest)
                }
            }
        },
    );
    map_serde::<UK, Stamped<V>, WithTtl>().with_ttl(ttl)
}

/// A TTL state's incremental cleanup (`docs/ttl.md`): where its walk over the map is, and when a walk is
/// worth doing. A round that ends knows the oldest stamp it kept; entries written since it began carry
/// its start time or later (time does not go back: the clock is taken to be monotonic, watermarks are);
/// so until the cutoff passes the older of the two nothing can have expired, and steps do nothing (a
/// state whose entries all live pays no walk; one with entries expiring all the time is walked on).
#[derive(Debug, Default)]
pub(crate) struct TtlSweep {
    cursor: SweepCursor,
    /// The cutoff (ms) from which something may have expired.
    due_ms: u64,
    /// The oldest stamp (ms) the current round kept so far.
    round_oldest_ms: Option<u64>,
    /// The time (ms, `cutoff + ttl_ms`) the current round began at.
    round_start_ms: Option<u64>,
}

impl TtlSweep {
    /// Up to `slots` slots of `map`, removing and pruning what `ttl` says expired at `cutoff`, if
    /// anything can have.
    pub(crate) fn step<K: Eq + Clone, N: Eq + Clone, S: Clone>(
        &mut self,
        map: &mut CowMap<K, N, S>,
        slots: usize,
        ttl: &TtlSerde<S>,
        cutoff: u64,
    ) {
        if cutoff < self.due_ms {
            return;
        }
        let now = cutoff.saturating_add(ttl.ttl_ms());
        self.round_start_ms.get_or_insert(now);
        let mut oldest = self.round_oldest_ms.unwrap_or(u64::MAX);
        let ended = self.cursor.step(map, slots, |value| {
            let (sweep, kept) = ttl.prune(value, cutoff);
            oldest = oldest.min(kept);
            sweep
        });
        self.round_oldest_ms = Some(oldest);
        if ended {
            let start = self.round_start_ms.take().unwrap_or(now);
            self.due_ms = oldest.min(start);
            self.round_oldest_ms = None;
        }
    }
}

/// When the heap backend cleans up expired entries incrementally (as Flink's `cleanupIncrementally` with
/// cleanup for every record): every 1,024th record (counted by the backend's `TtlTimes`, which also moves
/// the system clock's tick to an exact reading on them) a step walks `slots_per_record` slots for each of
/// them; batch calls count their keys here. Off until a state with TTL is registered, or if the setting
/// is 0.
#[derive(Debug, Clone, Copy)]
pub(crate) struct IncrementalCleanup {
    slots_per_record: usize,
    /// Keys of batch calls since their last step.
    batched: usize,
    active: bool,
}

impl IncrementalCleanup {
    /// Cleanup of `slots_per_record` slots of each TTL state per record, once a TTL state exists.
    pub(crate) fn new(slots_per_record: usize) -> Self {
        IncrementalCleanup {
            slots_per_record,
            batched: 0,
            active: false,
        }
    }

    /// A state with TTL was registered: cleanup runs from now on (unless its setting is 0); true if it
    /// does (the backend then has its records counted).
    pub(crate) fn activate(&mut self) -> bool {
        self.active = self.slots_per_record > 0;
        self.active
    }

    /// The slots to clean at a 1,024th record.
    #[inline]
    pub(crate) fn due(&self) -> Option<usize> {
        self.active
            .then(|| (EXACT_READ_EVERY as usize).saturating_mul(self.slots_per_record))
    }

    /// `keys` more keys of a batch call: the slots to clean now, once 1,024 have gathered.
    #[inline]
    pub(crate) fn on_batch(&mut self, keys: usize) -> Option<usize> {
        if !self.active {
            return None;
        }
        self.batched = self.batched.saturating_add(keys);
        if self.batched < EXACT_READ_EVERY as usize {
            return None;
        }
        let due = std::mem::take(&mut self.batched);
        Some(due.saturating_mul(self.slots_per_record))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stamped(value: u32, last_update_ms: u64) -> Stamped<u32> {
        Stamped {
            value,
            last_update_ms,
        }
    }

    #[test]
    fn live_parts_encode_as_the_plain_serde_would_encode_them_alone() {
        let config = StateTtlConfig::new(10);
        let list: ListCell<Stamped<u32>> =
            Arc::new(vec![stamped(1, 5), stamped(2, 20), stamped(3, 7)]);
        let serde = ttl_list_serde::<u32>(config);
        let ttl = serde.ttl.unwrap();
        let (mut live, mut alone) = (Vec::new(), Vec::new());
        assert!(ttl.encode_live(&list, 6, &mut live));
        (serde.encode)(&Arc::new(vec![stamped(2, 20), stamped(3, 7)]), &mut alone);
        assert_eq!(live, alone);
        assert!(ttl.live(&list, 19) && !ttl.live(&list, 20));
        live.clear();
        assert!(!ttl.encode_live(&list, 20, &mut live) && live.is_empty());

        let serde = ttl_map_serde::<u8, u32>(config);
        let ttl = serde.ttl.unwrap();
        let map: MapCell<u8, Stamped<u32>> = Arc::new(
            [(1, stamped(1, 5)), (2, stamped(2, 20))]
                .into_iter()
                .collect(),
        );
        let (mut live, mut alone) = (Vec::new(), Vec::new());
        assert!(ttl.encode_live(&map, 5, &mut live));
        (serde.encode)(
            &Arc::new([(2, stamped(2, 20))].into_iter().collect()),
            &mut alone,
        );
        assert_eq!(live, alone);

        let serde = ttl_value_serde::<u32>(config);
        let ttl = serde.ttl.unwrap();
        let mut out = Vec::new();
        assert!(!ttl.encode_live(&stamped(4, 9), 9, &mut out) && out.is_empty());
        assert!(ttl.encode_live(&stamped(4, 10), 9, &mut out));
        assert_eq!(out, [0, 0, 0, 0, 0, 0, 0, 10, 0, 0, 0, 4]);
    }
}
