//! The heap backend's timers of one timer service and time domain (`docs/timers.md`): per owned key group a
//! [`TimerGroup`] behind an `Arc`, copied on the first write after a snapshot froze it, so the synchronous
//! phase clones one `Arc` per key group whatever the number of timers (Flink's heap timers copy the whole
//! queue there); across key groups an ordered index of each group's earliest timestamp, as Flink's
//! `KeyGroupPartitionedPriorityQueue` keeps a heap of the key groups' heads.

mod group;

use std::any::Any;

use crate::error::{Error, Result};
use crate::format::keyed_file::KeyedFileWriter;
use crate::heap::cow_map::CowArc;
use crate::heap::delta::Cut;
use crate::heap::frozen::FrozenTable;
use crate::heap::table::{ErasedTable, RawTable, RetainedTable};
use crate::keyed::backend::StateKey;
use crate::keyed::heads::KeyGroupHeads;
use crate::keyed::ttl::TtlTimes;
use crate::keyed::ttl_refresh::ReadMarks;
use crate::snapshot::state_meta::StateMeta;

pub(crate) use group::Slot;
use group::TimerGroup;

/// A timer taken off the queue and its key-group index.
pub(crate) struct Popped<K, N> {
    pub(crate) kg_index: usize,
    pub(crate) slot: Slot<K, N>,
}

/// The timers of one service and domain.
pub(crate) struct TimerTable<K, N> {
    meta: StateMeta,
    groups: Vec<CowArc<TimerGroup<K, N>>>,
    /// Each key group's earliest copy's timestamp: at most its earliest timer's (checked when it comes
    /// first).
    heads: KeyGroupHeads,
}

impl<K: StateKey, N: StateKey> TimerTable<K, N> {
    /// No timers, `groups` key groups.
    pub(crate) fn new(meta: StateMeta, groups: usize) -> Self {
        TimerTable {
            meta,
            groups: (0..groups)
                .map(|_| CowArc::new(TimerGroup::new()))
                .collect(),
            heads: KeyGroupHeads::new(groups),
        }
    }

    /// The timers of `raw`'s records (written by either backend: key, namespace, timestamp as 8 bytes
    /// big-endian), `groups` key groups, built on up to `threads` threads (whole key groups each).
    ///
    /// # Errors
    /// [`Error::Corrupt`] for a record whose key or namespace does not decode, whose value is not 8
    /// bytes, or whose key group is outside the range.
    pub(crate) fn restored(
        meta: StateMeta,
        groups: usize,
        raw: &RawTable,
        threads: usize,
    ) -> Result<Self> {
        let mut table = TimerTable::new(meta, groups);
        let name = &table.meta.name;
        let build = |chunk: &[(usize, Vec<u8>)]| -> Result<Vec<(usize, TimerGroup<K, N>)>> {
            chunk
                .iter()
                .map(|(kg, bytes)| Ok((*kg, TimerGroup::restored(name, *kg, bytes)?)))
                .collect()
        };
        let threads = threads.clamp(1, raw.groups.len().max(1));
        let per = raw.groups.len().div_ceil(threads).max(1);
        let chunks: Vec<&[(usize, Vec<u8>)]> = raw.groups.chunks(per).collect();
        for built in crate::parallel::run_each(chunks, |_, chunk| build(chunk)) {
            for (kg, group) in built? {
                let slot = table.groups.get_mut(kg).ok_or_else(|| {
                    Error::corrupt("<restored timers>", "key group outside the restored range")
                })?;
                *slot = CowArc::new(group);
                table.heads.set(kg, table.groups[kg].first_ts());
            }
        }
        Ok(table)
    }

    /// Adds timer `(key, ns, ts)` of key group `kg` (key hash `hash`); one already there stays one.
    #[inline]
    pub(crate) fn register(&mut self, kg: usize, key_hash: u64, key: &K, ns: &N, ts: u64) {
        self.groups[kg].make_mut().insert(key_hash, key, ns, ts);
        if self.heads.get(kg).is_none_or(|h| ts < h) {
            self.heads.set(kg, Some(ts));
        }
    }

    /// Removes timer `(key, ns, ts)` of key group `kg`, if there. The key group's head stays: a bound
    /// at most its earliest timer's, checked when it comes first.
    #[inline]
    pub(crate) fn delete(&mut self, kg: usize, key_hash: u64, key: &K, ns: &N, ts: u64) {
        self.groups[kg].make_mut().remove(key_hash, key, ns, ts);
    }

    /// The earliest timestamp: the first head, checked (the key group's earliest timer is brought to its
    /// front and the key group refiled until the first head is exact).
    #[inline]
    pub(crate) fn next(&mut self) -> Option<u64> {
        loop {
            let (ts, kg) = self.heads.first()?;
            let head = self.groups[kg].make_mut().head();
            if head == Some(ts) {
                return head;
            }
            self.heads.replace_first(head);
        }
    }

    /// Timers held, exact: key groups with writes not yet resolved are merged first (O(n) then).
    pub(crate) fn count(&mut self) -> usize {
        let count = |g: &mut CowArc<TimerGroup<K, N>>| {
            if g.is_clean() {
                g.held()
            } else {
                g.make_mut().count()
            }
        };
        self.groups.iter_mut().map(count).sum()
    }

    /// Removes and returns the earliest timer if its timestamp is at most `time`.
    #[inline]
    pub(crate) fn pop_due(&mut self, time: u64) -> Option<Popped<K, N>> {
        if self.next()? > time {
            return None;
        }
        let (_, kg) = self.heads.first()?;
        let group = self.groups[kg].make_mut();
        let slot = group.pop()?;
        let head = group.first_ts();
        self.heads.replace_first(head);
        Some(Popped { kg_index: kg, slot })
    }
}

impl<K: StateKey, N: StateKey> ErasedTable<K> for TimerTable<K, N> {
    fn meta(&self) -> &StateMeta {
        &self.meta
    }
    /// Timers are written whole by every snapshot, deltas included (they replace the earlier files').
    fn freeze(&mut self, _times: &TtlTimes, _cut: Cut) -> Box<dyn FrozenTable> {
        Box::new(FrozenTimers(self.groups.clone()))
    }
    /// Exact, without changing the table: key groups with unresolved writes are sorted aside.
    fn len(&self) -> usize {
        self.groups.iter().map(|g| g.held()).sum()
    }
    fn keys_in_namespace(
        &self,
        _ns: &dyn Any,
        _times: &TtlTimes,
        _marks: Option<&ReadMarks>,
    ) -> Option<Vec<K>> {
        None
    }
    fn keys_and_namespaces(
        &self,
        _out: &mut dyn Any,
        _times: &TtlTimes,
        _marks: Option<&ReadMarks>,
    ) -> bool {
        false
    }
    fn retain(&mut self) -> Option<Box<dyn RetainedTable<K>>> {
        Some(Box::new(RetainedTimers {
            meta: self.meta.clone(),
            groups: self.groups.clone(),
        }))
    }
}

/// The timers a checkpoint kept for a restore in the process: the key groups, shared until written.
struct RetainedTimers<K, N> {
    meta: StateMeta,
    groups: Vec<CowArc<TimerGroup<K, N>>>,
}

impl<K: StateKey, N: StateKey> RetainedTable<K> for RetainedTimers<K, N> {
    fn restore(&self, _track_changes: bool) -> Box<dyn ErasedTable<K>> {
        let mut heads = KeyGroupHeads::new(self.groups.len());
        for (kg, group) in self.groups.iter().enumerate() {
            heads.set(kg, group.first_ts());
        }
        Box::new(TimerTable {
            meta: self.meta.clone(),
            groups: self.groups.clone(),
            heads,
        })
    }
}

/// The timers a synchronous phase froze: the key groups, shared until the backend writes to them.
struct FrozenTimers<K, N>(Vec<CowArc<TimerGroup<K, N>>>);

impl<K: StateKey, N: StateKey> FrozenTable for FrozenTimers<K, N> {
    fn write_group(
        &mut self,
        kg_index: usize,
        state: u32,
        _whole: bool,
        writer: &mut KeyedFileWriter,
    ) -> Result<()> {
        // Timers are written whole in every file.
        let group = std::mem::replace(&mut self.0[kg_index], CowArc::new(TimerGroup::new()));
        // In timer order (timestamp, key hash), each once: resolving the log here, in the asynchronous
        // phase, leaves a restore an already sorted run (its sort then only checks the order).
        for slot in group.sorted() {
            writer.add_record(
                state,
                |b| slot.key.encode(b),
                |b| slot.ns.encode(b),
                |b| b.extend_from_slice(&slot.ts.to_be_bytes()),
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::key_group::stable_key_hash;
    use crate::snapshot::state_meta::StateKind;
    use std::collections::BTreeSet;

    /// Random registrations (often of timers already there), deletions, peeks and firings, with snapshots
    /// freezing the key groups now and then, against a sorted set: enough timers per key group to pass
    /// every path (the buffer settled onto the heap and merged into the run, merges forced by the buffer's
    /// or the deleted set's size, ties of one key's timers in two namespaces). With `weak_hash` fifty key
    /// hashes are shared by 3,000 keys, so distinct timers of equal order are everywhere.
    fn matches_the_model(weak_hash: bool) {
        let groups = 4;
        let meta = StateMeta::new::<u64, u32, u64>("_timer/t/event", StateKind::Timers);
        let mut table = TimerTable::<u64, u32>::new(meta, groups);
        let mut model: BTreeSet<(u64, u64, u32)> = BTreeSet::new();
        let mut frozen = Vec::new();
        let mut x = 0x2545_f491_4f6c_dd1d_u64;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        // Key group and stable hash of a key (its group chosen by the test, not the router).
        let at = |key: u64| {
            let hashed = if weak_hash { key % 50 } else { key };
            (
                (key % groups as u64) as usize,
                stable_key_hash(&hashed.to_be_bytes()),
            )
        };
        let mut time = 0;
        for step in 0..60_000 {
            let key = next() % 3_000;
            let (kg, hash) = at(key);
            let ns = (next() % 2) as u32;
            let ts = time + next() % 20_000;
            match next() % 16 {
                0..=6 => {
                    table.register(kg, hash, &key, &ns, ts);
                    model.insert((ts, key, ns));
                }
                7 | 8 => {
                    // A timer that may be there, or was deleted: registered again.
                    let (ts, key, ns) = match model.iter().nth((next() % 64) as usize) {
                        Some(t) if next() % 2 == 0 => *t,
                        _ => (time + (ts % 40), key, ns),
                    };
                    let (kg, hash) = at(key);
                    table.register(kg, hash, &key, &ns, ts);
                    model.insert((ts, key, ns));
                }
                9..=11 => {
                    // Mostly a timer that exists.
                    let (ts, key, ns) = match model.iter().nth((next() % 64) as usize) {
                        Some(t) if next() % 4 != 0 => *t,
                        _ => (ts, key, ns),
                    };
                    let (kg, hash) = at(key);
                    table.delete(kg, hash, &key, &ns, ts);
                    model.remove(&(ts, key, ns));
                }
                12 => assert_eq!(table.next(), model.first().map(|t| t.0), "step {step}"),
                13 => frozen.push((table.groups.clone(), model.clone())),
                _ => {
                    time += next() % 40;
                    // In timestamp order; equal timestamps in any order.
                    let mut fired = Vec::new();
                    while let Some(p) = table.pop_due(time) {
                        assert!(fired.last().is_none_or(|&(t, _, _)| t <= p.slot.ts));
                        fired.push((p.slot.ts, p.slot.key, p.slot.ns));
                    }
                    fired.sort_unstable();
                    let later = model.split_off(&(time + 1, 0, 0));
                    let due: Vec<_> = std::mem::replace(&mut model, later).into_iter().collect();
                    assert_eq!(fired, due, "step {step}");
                }
            }
            if step % 10_000 == 5_000 {
                // Most timers deleted at once: the deleted set outgrows the run and forces a merge.
                let doomed: Vec<_> = model.iter().filter(|t| t.1 % 4 != 0).copied().collect();
                for (ts, key, ns) in doomed {
                    let (kg, hash) = at(key);
                    table.delete(kg, hash, &key, &ns, ts);
                    model.remove(&(ts, key, ns));
                }
            }
            if step % 97 == 0 {
                assert_eq!(table.count(), model.len(), "step {step}");
            }
            if frozen.len() > 3 {
                // A frozen copy still holds what the table held when it was frozen (what the asynchronous
                // phase writes).
                let (groups, then) = frozen.remove(0);
                let written: BTreeSet<(u64, u64, u32)> = (groups.iter())
                    .flat_map(|g| g.sorted())
                    .map(|s| (s.ts, s.key, s.ns))
                    .collect();
                assert_eq!(written, then, "step {step}");
            }
        }
        assert!(
            model.len() > 1_000,
            "too few timers held to reach the merges"
        );
    }

    #[test]
    fn the_table_matches_a_sorted_set_through_merges_ties_and_frozen_copies() {
        matches_the_model(false);
    }

    #[test]
    fn colliding_key_hashes_neither_lose_nor_duplicate_timers() {
        matches_the_model(true);
    }
}
