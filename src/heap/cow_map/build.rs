//! Building one key group's map apart from the [`CowMap`] (restore decodes key groups on several threads,
//! `heap/restore.rs`), with its directory sized for the entries it will hold.

#[cfg(doc)]
use super::CowMap;
use super::{Entry, KeyGroupMap, Page, SPLIT_AT, slots_for, stored_hash};

/// The map of one key group under construction; [`CowMap::install`] puts it in place.
pub(crate) struct GroupBuilder<K, N, S> {
    group: KeyGroupMap<K, N, S>,
    epoch: u64,
}

impl<K: Eq + Clone, N: Eq + Clone, S: Clone> GroupBuilder<K, N, S> {
    /// An empty key-group map for `expected` entries of a map at `epoch` ([`CowMap::epoch`]): as many
    /// pages as `expected` entries make without a split (linear hashing at its level and split pointer
    /// for that page count), each with the slots its share needs, so that a restore neither splits nor
    /// grows pages while it inserts (more entries than expected only split and grow as usual).
    pub(crate) fn new(expected: usize, epoch: u64) -> Self {
        let mut group = KeyGroupMap::new();
        if expected > 0 {
            let pages = expected.div_ceil(SPLIT_AT);
            let level = pages.ilog2();
            let split = pages - (1 << level);
            // Pages below `split` and from `2^level` on cover 1 / 2^(level+1) of the hashes each; the
            // others 1 / 2^level.
            let (small, large) = (expected >> (level + 1), expected >> level);
            group.pages = (0..pages)
                .map(|p| {
                    let share = if p < split || p >= 1 << level {
                        small
                    } else {
                        large
                    };
                    Page::with_slots(slots_for(share + share / 4 + 1), epoch)
                })
                .collect();
            group.level = level;
            group.split = split;
        }
        GroupBuilder { group, epoch }
    }

    /// Sets `(key, ns)` of map hash `hash` to `value` (a later record of the same key and namespace
    /// replaces an earlier one, as [`CowMap::insert`] does).
    pub(crate) fn insert(&mut self, hash: u64, key: K, ns: N, value: S) {
        let hash = stored_hash(hash);
        match self.group.find(hash, &key, &ns) {
            Some((p, i)) => {
                let slots = super::page_slots(&mut self.group.pages[p], self.epoch);
                if let Some(e) = &mut slots[i] {
                    e.value = value;
                }
            }
            None => {
                let entry = Entry {
                    hash,
                    key,
                    ns,
                    value,
                };
                self.group.insert_new(entry, self.epoch);
            }
        }
    }
}

impl<K, N, S> GroupBuilder<K, N, S> {
    /// The built map and the epoch it was built for ([`CowMap::install`] checks it).
    pub(super) fn finish(self) -> (KeyGroupMap<K, N, S>, u64) {
        (self.group, self.epoch)
    }
}
