//! An incremental walk over a [`CowMap`] that removes or rewrites entries as it goes, a bounded number of
//! slots per step (the heap backend's incremental TTL cleanup, `docs/ttl.md`; as Flink's
//! `CopyOnWriteStateMap` incremental visitor). Like every write it copies only the key-group directory and
//! the page it changes, and only if a snapshot still shares them (`CowMap::remove_at_position`,
//! `CowMap::replace_at_position`).

use super::{At, CowMap};

/// What a sweep does with a value.
pub(crate) enum Sweep<S> {
    /// Leave it as it is.
    Keep,
    /// Remove the entry.
    Remove,
    /// Replace the value (a list or map with some parts removed).
    Replace(S),
}

/// Where a sweep goes on: key group, page, slot. Positions that no longer exist (pages split since, a
/// map of fewer key groups) move on to the next key group or back to the first.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SweepCursor {
    kg: usize,
    page: usize,
    slot: usize,
}

impl SweepCursor {
    /// Visits up to `slots` slots of `map` from this cursor on (an empty slot counts, as does moving past
    /// an empty key group), asking `judge` about each entry, and stays after the last slot visited.
    /// Entries moved by a removal (backward shift) are visited where they land; a split page may have
    /// some of its entries visited twice or not until the next round, as any incremental cleanup
    /// allows. Returns whether a round ended (the cursor went back to the first key group), or the map
    /// is empty.
    pub(crate) fn step<K, N, S>(
        &mut self,
        map: &mut CowMap<K, N, S>,
        slots: usize,
        mut judge: impl FnMut(&S) -> Sweep<S>,
    ) -> bool
    where
        K: Eq + Clone,
        N: Eq + Clone,
        S: Clone,
    {
        let mut round_ended = false;
        for _ in 0..slots {
            if map.len() == 0 {
                return true;
            }
            let (kg, page, slot) = (self.kg, self.page, self.slot);
            let verdict = match map.at(kg, page, slot) {
                At::PastGroups => {
                    *self = SweepCursor::default();
                    round_ended = true;
                    continue;
                }
                At::PastPages => {
                    *self = SweepCursor {
                        kg: kg + 1,
                        ..SweepCursor::default()
                    };
                    continue;
                }
                At::PastSlots => {
                    self.page += 1;
                    self.slot = 0;
                    continue;
                }
                At::Empty => Sweep::Keep,
                At::Value(value) => judge(value),
            };
            match verdict {
                Sweep::Keep => self.slot += 1,
                Sweep::Replace(value) => {
                    map.replace_at_position(kg, page, slot, value);
                    self.slot += 1;
                }
                // The cursor stays: the backward shift may have moved the next entry into this slot.
                Sweep::Remove => {
                    map.remove_at_position(kg, page, slot);
                }
            }
        }
        round_ended || map.len() == 0
    }
}
