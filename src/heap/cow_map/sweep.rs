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
    /// allows. Returns whether a round ended (the cursor went back to the first slot; the step stops
    /// there, so every round starts at the first slot), or the map is empty.
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
        let mut budget = slots;
        while budget > 0 {
            if map.len() == 0 {
                return true;
            }
            let (kg, page) = (self.kg, self.page);
            let page_slots = match map.page_at(kg, page) {
                At::PastGroups => {
                    // A round ends here, and the step with it: the next round starts at the first slot.
                    *self = SweepCursor::default();
                    return true;
                }
                At::PastPages => {
                    *self = SweepCursor {
                        kg: kg + 1,
                        ..SweepCursor::default()
                    };
                    budget -= 1;
                    continue;
                }
                At::Page(slots) => slots,
            };
            if self.slot >= page_slots.len() {
                self.page += 1;
                self.slot = 0;
                budget -= 1;
                continue;
            }
            // Read-only up to the first entry to change: most are kept, and a page a snapshot shares is
            // copied only for a change.
            let end = page_slots.len().min(self.slot + budget);
            let change = (self.slot..end).find_map(|i| match &page_slots[i] {
                Some(e) => match judge(&e.value) {
                    Sweep::Keep => None,
                    change => Some((i, change)),
                },
                None => None,
            });
            let Some((i, change)) = change else {
                budget -= end - self.slot;
                self.slot = end;
                continue;
            };
            budget -= i + 1 - self.slot;
            self.slot = i;
            match change {
                Sweep::Keep => self.slot += 1,
                Sweep::Replace(value) => {
                    map.replace_at_position(kg, page, i, value);
                    self.slot += 1;
                }
                // The cursor stays: the backward shift may have moved the next entry into this slot.
                Sweep::Remove => {
                    map.remove_at_position(kg, page, i);
                }
            }
        }
        map.len() == 0
    }
}
