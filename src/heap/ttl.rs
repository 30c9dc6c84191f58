//! TTL states on the heap backend (`docs/ttl.md`): their tables hold [`Stamped`] values (value, list
//! elements, map values), and their serdes add what snapshots and key listings need: whether a stored
//! value still has a part written after a cutoff, and its encoding without the expired parts.

use std::sync::Arc;

use crate::codec::Codec;
use crate::format::bytes::PutExt;
use crate::heap::cow_map::sweep::Sweep;
use crate::heap::serde::{
    ListCell, MapCell, TtlSerde, ValueSerde, list_serde, map_serde, value_serde,
};
use crate::keyed::backend::{StateKey, StateValue};
use crate::keyed::ttl::{Stamped, StateTtlConfig};
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
            true => Sweep::Keep,
            false => Sweep::Remove,
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
            match live.clone().count() {
                0 => Sweep::Remove,
                n if n == list.len() => Sweep::Keep,
                _ => Sweep::Replace(Arc::new(live.cloned().collect())),
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
            match live.clone().count() {
                0 => Sweep::Remove,
                n if n == map.len() => Sweep::Keep,
                _ => Sweep::Replace(Arc::new(
                    live.map(|(k, s)| (k.clone(), s.clone())).collect(),
                )),
            }
        },
    );
    map_serde::<UK, Stamped<V>, WithTtl>().with_ttl(ttl)
}

/// Records between two incremental cleanup steps: the cleanup of [`HeapConfig::ttl_cleanup_slots_per_record`]
/// is done in steps of this many records' worth, so that a record pays one counter and a branch, and a
/// step walks its slots in order (sequential memory, no per-record call).
///
/// [`HeapConfig::ttl_cleanup_slots_per_record`]: crate::heap::HeapConfig::ttl_cleanup_slots_per_record
pub(crate) const CLEANUP_EVERY_RECORDS: u32 = 1 << 10;

/// When the heap backend cleans up expired entries incrementally (as Flink's `cleanupIncrementally` with
/// cleanup for every record): a count of records, and the slots a step visits per record counted. Off
/// until a state with TTL is registered, or if the setting is 0.
#[derive(Debug, Clone, Copy)]
pub(crate) struct IncrementalCleanup {
    slots_per_record: usize,
    records: u32,
    active: bool,
}

impl IncrementalCleanup {
    /// Cleanup of `slots_per_record` slots of each TTL state per record, once a TTL state exists.
    pub(crate) fn new(slots_per_record: usize) -> Self {
        IncrementalCleanup {
            slots_per_record,
            records: 0,
            active: false,
        }
    }

    /// A state with TTL was registered: cleanup runs from now on (unless its setting is 0).
    pub(crate) fn activate(&mut self) {
        self.active = self.slots_per_record > 0;
    }

    /// `records` more records (a new current key, or the keys of a batch): the slots to clean now, once
    /// [`CLEANUP_EVERY_RECORDS`] have gathered.
    #[inline]
    pub(crate) fn on_records(&mut self, records: usize) -> Option<usize> {
        if !self.active {
            return None;
        }
        let records = u32::try_from(records).unwrap_or(u32::MAX);
        self.records = self.records.saturating_add(records);
        if self.records < CLEANUP_EVERY_RECORDS {
            return None;
        }
        let due = std::mem::take(&mut self.records) as usize;
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
