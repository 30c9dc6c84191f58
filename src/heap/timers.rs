//! The heap backend's timers of one timer service and time domain (`docs/timers.md`): per owned key group a
//! [`TimerGroup`] behind an `Arc`, copied on the first write after a snapshot froze it, so the synchronous
//! phase clones one `Arc` per key group whatever the number of timers (Flink's heap timers copy the whole
//! queue there); across key groups an ordered index of each group's earliest timestamp, as Flink's
//! `KeyGroupPartitionedPriorityQueue` keeps a heap of the key groups' heads.

use std::any::Any;
use std::cmp::{Ordering, Reverse};
use std::collections::{BinaryHeap, VecDeque};

use hashbrown::HashTable;

use crate::error::{Error, Result};
use crate::format::keyed_file::KeyedFileWriter;
use crate::heap::cow_map::CowArc;
use crate::heap::table::{ErasedTable, FrozenTable, RawTable, group_records, namespace_hash};
use crate::key_group::stable_key_hash;
use crate::keyed::backend::StateKey;
use crate::keyed::heads::KeyGroupHeads;
use crate::snapshot::state_meta::StateMeta;

/// One timer: its timestamp (ms), its key's stable hash (kept so that making a fired timer's key current
/// hashes nothing), key and namespace. Ordered by timestamp, then key hash only: timers of equal
/// timestamp and key hash are interchangeable for the order, and copies of one timer are equal.
#[derive(Clone)]
pub(crate) struct Slot<K, N> {
    pub(crate) ts: u64,
    pub(crate) key_hash: u64,
    pub(crate) key: K,
    pub(crate) ns: N,
}

impl<K, N> Slot<K, N> {
    fn order(&self) -> (u64, u64) {
        (self.ts, self.key_hash)
    }
}

impl<K: PartialEq, N: PartialEq> Slot<K, N> {
    /// Whether this is timer `(key, ns, ts)`.
    #[inline]
    fn is(&self, key: &K, ns: &N, ts: u64) -> bool {
        self.ts == ts && self.key == *key && self.ns == *ns
    }
}

impl<K, N> PartialEq for Slot<K, N> {
    fn eq(&self, other: &Self) -> bool {
        self.order() == other.order()
    }
}
impl<K, N> Eq for Slot<K, N> {}
impl<K, N> PartialOrd for Slot<K, N> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl<K, N> Ord for Slot<K, N> {
    fn cmp(&self, other: &Self) -> Ordering {
        self.order().cmp(&other.order())
    }
}

/// Hash of a timer in its key group's set: the key's stable hash, the namespace's and the timestamp.
#[inline]
fn timer_hash<N: std::hash::Hash>(key_hash: u64, ns: &N, ts: u64) -> u64 {
    (key_hash ^ namespace_hash(ns).rotate_left(21))
        .wrapping_add(ts.wrapping_mul(0x9e37_79b9_7f4a_7c15))
}

/// One key group's timers. The set holds each timer once (set semantics; what snapshots write); the order
/// is a sorted run popped from the front, a binary heap, and an unsorted buffer of the timers added since
/// the order was last asked for. Registering costs a set insert and an append (a heap push, whose sift
/// reads far into the heap, cost twice as much); the first question about the order settles the buffer:
/// into the heap while it is small, else sorted and merged into the run, so firing mostly pops the run in
/// order. Deleting removes from the set only: the run, the heap and the buffer may hold copies of timers
/// no longer in the set (or twice), which are dropped when they come first, and the run is rebuilt from
/// the set when copies outnumber timers twice over.
#[derive(Clone)]
pub(crate) struct TimerGroup<K, N> {
    set: HashTable<Slot<K, N>>,
    run: VecDeque<Slot<K, N>>,
    recent: BinaryHeap<Reverse<Slot<K, N>>>,
    /// Timers added since the order was last asked for, unsorted.
    fresh: Vec<Slot<K, N>>,
    /// The least timestamp in `fresh` (`u64::MAX` when empty).
    fresh_min: u64,
    /// Copies at the front of the run whose set entries were looked up ahead of their turn ([`WARM_AHEAD`]
    /// at a time): independent lookups overlap their cache misses, where one lookup per fired timer
    /// waited for memory each time.
    warmed: usize,
}

/// Copies of the run whose set entries a firing looks up ahead (only due ones).
const WARM_AHEAD: usize = 32;

impl<K: StateKey, N: StateKey> TimerGroup<K, N> {
    fn new() -> Self {
        TimerGroup {
            set: HashTable::new(),
            run: VecDeque::new(),
            recent: BinaryHeap::new(),
            fresh: Vec::new(),
            fresh_min: u64::MAX,
            warmed: 0,
        }
    }

    /// Key group `kg`'s timers from its restored records (`bytes`, of state `name`): sorted once, equal
    /// timers once, the set built from the run.
    fn restored(name: &str, kg: usize, bytes: &[u8]) -> Result<Self> {
        let mut run = Vec::new();
        for record in group_records(kg, bytes) {
            let (_, k, n, v) = record?;
            let ts: [u8; 8] = v.try_into().map_err(|_| {
                Error::corrupt(
                    "<restored timers>",
                    format!("a timer of `{name}` has a {}-byte timestamp", v.len()),
                )
            })?;
            run.push(Slot {
                ts: u64::from_be_bytes(ts),
                key_hash: stable_key_hash(k),
                key: K::decode(k)?,
                ns: N::decode(n)?,
            });
        }
        run.sort_unstable();
        let mut group = TimerGroup::new();
        group.set.reserve(run.len(), Self::hash_of);
        let mut kept: Vec<Slot<K, N>> = Vec::with_capacity(run.len());
        for slot in run {
            // Equal timers are adjacent (same timestamp and key hash): a file holds each once, but
            // nothing here relies on it.
            let twice = kept
                .iter()
                .rev()
                .take_while(|k| k.order() == slot.order())
                .any(|k| k.key == slot.key && k.ns == slot.ns);
            if !twice {
                group
                    .set
                    .insert_unique(Self::hash_of(&slot), slot.clone(), Self::hash_of);
                kept.push(slot);
            }
        }
        group.run = kept.into();
        Ok(group)
    }

    fn hash_of(slot: &Slot<K, N>) -> u64 {
        timer_hash(slot.key_hash, &slot.ns, slot.ts)
    }

    /// Adds timer `(key, ns, ts)` of a key with stable hash `key_hash`; whether it was new (the key and
    /// namespace are cloned only then).
    fn insert(&mut self, key_hash: u64, key: &K, ns: &N, ts: u64) -> bool {
        let hash = timer_hash(key_hash, ns, ts);
        if self.set.find(hash, |s| s.is(key, ns, ts)).is_some() {
            return false;
        }
        let slot = Slot {
            ts,
            key_hash,
            key: key.clone(),
            ns: ns.clone(),
        };
        self.set.insert_unique(hash, slot.clone(), Self::hash_of);
        self.fresh_min = self.fresh_min.min(ts);
        self.fresh.push(slot);
        true
    }

    /// Removes a timer from the set; whether it was there.
    fn remove(&mut self, key_hash: u64, key: &K, ns: &N, ts: u64) -> bool {
        let hash = timer_hash(key_hash, ns, ts);
        let Ok(entry) = self.set.find_entry(hash, |s| s.is(key, ns, ts)) else {
            return false;
        };
        entry.remove();
        if self.copies() > 2 * self.set.len() + 64 {
            self.rebuild();
        }
        true
    }

    /// The run rebuilt from the set, no copies, the heap empty.
    fn rebuild(&mut self) {
        let mut all: Vec<Slot<K, N>> = self.set.iter().cloned().collect();
        all.sort_unstable();
        self.run = all.into();
        self.recent.clear();
        self.fresh.clear();
        self.fresh_min = u64::MAX;
        self.warmed = 0;
    }

    /// Looks up the set entries of the run's next copies due at `time`, at most [`WARM_AHEAD`] (results
    /// unused: the lookups bring their memory in together, so the pops that follow find it cached).
    fn warm(&mut self, time: u64) {
        let mut warmed = 0;
        for slot in self
            .run
            .iter()
            .take(WARM_AHEAD)
            .take_while(|s| s.ts <= time)
        {
            let same = |s: &Slot<K, N>| s.is(&slot.key, &slot.ns, slot.ts);
            std::hint::black_box(self.set.find(Self::hash_of(slot), same));
            warmed += 1;
        }
        self.warmed = warmed.max(1);
    }

    /// Copies of timers held in the run, the heap and the buffer.
    fn copies(&self) -> usize {
        self.run.len() + self.recent.len() + self.fresh.len()
    }

    /// Settles the buffer before the order is read: the heap and the buffer merged into the run once they
    /// hold more than an eighth of it (amortized O(1) per timer), else the buffer pushed onto the heap.
    fn settle(&mut self) {
        if self.fresh.is_empty() {
            return;
        }
        self.fresh_min = u64::MAX;
        let recent = self.recent.len() + self.fresh.len();
        if recent <= 64 || recent * 8 <= self.run.len() {
            let fresh = std::mem::take(&mut self.fresh);
            self.recent.extend(fresh.into_iter().map(Reverse));
            return;
        }
        let mut added: Vec<Slot<K, N>> = std::mem::take(&mut self.fresh);
        added.extend(
            std::mem::take(&mut self.recent)
                .into_vec()
                .into_iter()
                .map(|Reverse(s)| s),
        );
        added.sort_unstable();
        let mut merged = Vec::with_capacity(self.run.len() + added.len());
        let mut run = std::mem::take(&mut self.run).into_iter().peekable();
        let mut added = added.into_iter().peekable();
        loop {
            let from_run = match (run.peek(), added.peek()) {
                (Some(r), Some(a)) => r <= a,
                (Some(_), None) => true,
                (None, Some(_)) => false,
                (None, None) => break,
            };
            let next = if from_run { run.next() } else { added.next() };
            merged.extend(next);
        }
        self.run = merged.into();
        self.warmed = 0;
    }

    /// Whether the earliest copy is in the run rather than the heap (the buffer settled).
    fn first_in_run(&self) -> Option<bool> {
        match (self.run.front(), self.recent.peek()) {
            (Some(r), Some(Reverse(h))) => Some(r <= h),
            (Some(_), None) => Some(true),
            (None, Some(_)) => Some(false),
            (None, None) => None,
        }
    }

    /// Whether every copy is a distinct timer of the set (no copy of a removed timer, none twice).
    fn clean(&self) -> bool {
        self.copies() == self.set.len()
    }

    /// The earliest copy's timestamp, unchecked (it may be a removed timer's).
    fn first_ts(&self) -> Option<u64> {
        let run = self.run.front().map_or(u64::MAX, |s| s.ts);
        let recent = self.recent.peek().map_or(u64::MAX, |Reverse(s)| s.ts);
        let least = run.min(recent).min(self.fresh_min);
        (self.copies() > 0).then_some(least)
    }

    /// The earliest timer's timestamp; copies of removed timers that come first are dropped.
    fn head(&mut self) -> Option<u64> {
        self.settle();
        loop {
            if self.clean() {
                return self.first_ts();
            }
            let in_run = self.first_in_run()?;
            let first = if in_run {
                self.run.front()?
            } else {
                &self.recent.peek()?.0
            };
            let hash = Self::hash_of(first);
            let same = |s: &Slot<K, N>| s.is(&first.key, &first.ns, first.ts);
            if self.set.find(hash, same).is_some() {
                return Some(first.ts);
            }
            if in_run {
                self.warmed = self.warmed.saturating_sub(1);
                self.run.pop_front();
            } else {
                self.recent.pop();
            }
        }
    }

    /// Removes and returns the earliest timer (the caller fires timers due at `time`: those are warmed).
    fn pop(&mut self, time: u64) -> Option<Slot<K, N>> {
        self.settle();
        loop {
            let first = if self.first_in_run()? {
                self.warmed = self.warmed.saturating_sub(1);
                self.run.pop_front()?
            } else {
                self.recent.pop()?.0
            };
            let hash = Self::hash_of(&first);
            let same = |s: &Slot<K, N>| s.is(&first.key, &first.ns, first.ts);
            if let Ok(entry) = self.set.find_entry(hash, same) {
                entry.remove();
                if self.warmed == 0 {
                    self.warm(time);
                }
                return Some(first);
            }
        }
    }
}

/// A timer taken off the queue and its key-group index.
pub(crate) struct Popped<K, N> {
    pub(crate) kg_index: usize,
    pub(crate) slot: Slot<K, N>,
}

/// The timers of one service and domain.
pub(crate) struct TimerTable<K, N> {
    meta: StateMeta,
    groups: Vec<CowArc<TimerGroup<K, N>>>,
    /// Each key group's earliest copy's timestamp: exact where a key group is clean, else at most the
    /// earliest timer's (checked when it comes first).
    heads: KeyGroupHeads,
    len: usize,
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
            len: 0,
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
                table.len += group.set.len();
                *slot = CowArc::new(group);
                table.rehead(kg);
            }
        }
        Ok(table)
    }

    /// Files key group `kg` under its earliest copy's timestamp.
    fn rehead(&mut self, kg: usize) {
        self.heads.set(kg, self.groups[kg].first_ts());
    }

    /// Adds timer `(key, ns, ts)` of key group `kg` (key hash `hash`); one already there stays one.
    #[inline]
    pub(crate) fn register(&mut self, kg: usize, key_hash: u64, key: &K, ns: &N, ts: u64) {
        if !self.groups[kg].make_mut().insert(key_hash, key, ns, ts) {
            return;
        }
        self.len += 1;
        if self.heads.get(kg).is_none_or(|h| ts < h) {
            self.heads.set(kg, Some(ts));
        }
    }

    /// Removes timer `(key, ns, ts)` of key group `kg`, if there.
    #[inline]
    pub(crate) fn delete(&mut self, kg: usize, key_hash: u64, key: &K, ns: &N, ts: u64) {
        if !self.groups[kg].make_mut().remove(key_hash, key, ns, ts) {
            return;
        }
        self.len -= 1;
        // A rebuilt run may start later: the head is refiled (a removed timer's copy still in front is
        // checked when it comes first).
        self.rehead(kg);
    }

    /// The earliest timestamp: the first head, checked (a removed timer's copy in front is dropped and
    /// its key group refiled until the first head is a timer's).
    pub(crate) fn next(&mut self) -> Option<u64> {
        loop {
            let (ts, kg) = self.heads.first()?;
            let head = self.groups[kg].make_mut().head();
            if head == Some(ts) {
                return head;
            }
            self.heads.set(kg, head);
        }
    }

    /// Timers held.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Removes and returns the earliest timer if its timestamp is at most `time`.
    #[inline]
    pub(crate) fn pop_due(&mut self, time: u64) -> Option<Popped<K, N>> {
        if self.next()? > time {
            return None;
        }
        let (_, kg) = self.heads.first()?;
        let group = self.groups[kg].make_mut();
        let slot = group.pop(time)?;
        let head = group.first_ts();
        self.heads.set(kg, head);
        self.len -= 1;
        Some(Popped { kg_index: kg, slot })
    }
}

impl<K: StateKey, N: StateKey> ErasedTable<K> for TimerTable<K, N> {
    fn meta(&self) -> &StateMeta {
        &self.meta
    }
    fn freeze(&mut self) -> Box<dyn FrozenTable> {
        Box::new(FrozenTimers(self.groups.clone()))
    }
    fn len(&self) -> usize {
        self.len
    }
    fn keys_in_namespace(&self, _ns: &dyn Any) -> Option<Vec<K>> {
        None
    }
    fn keys_and_namespaces(&self, _out: &mut dyn Any) -> bool {
        false
    }
}

/// The timers a synchronous phase froze: the key groups, shared until the backend writes to them.
struct FrozenTimers<K, N>(Vec<CowArc<TimerGroup<K, N>>>);

impl<K: StateKey, N: StateKey> FrozenTable for FrozenTimers<K, N> {
    fn write_group(
        &mut self,
        kg_index: usize,
        state: u32,
        writer: &mut KeyedFileWriter,
    ) -> Result<()> {
        let group = std::mem::replace(&mut self.0[kg_index], CowArc::new(TimerGroup::new()));
        // In timer order (timestamp, key hash): sorting here, in the asynchronous phase, leaves a restore
        // of this backend an already sorted run (its sort then only checks the order).
        let mut slots: Vec<&Slot<K, N>> = group.set.iter().collect();
        slots.sort_unstable_by_key(|s| s.order());
        for slot in slots {
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
    use crate::snapshot::state_meta::StateKind;
    use std::collections::BTreeSet;

    /// Random registrations, deletions, peeks and firings, with snapshots freezing the key groups now
    /// and then, against a sorted set: enough timers per key group to pass every path (the buffer settled
    /// into the heap and merged into the run, rebuilds after deletions, lookups warmed ahead).
    #[test]
    fn the_table_matches_a_sorted_set_through_merges_rebuilds_and_frozen_copies() {
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
            (
                (key % groups as u64) as usize,
                stable_key_hash(&key.to_be_bytes()),
            )
        };
        let mut time = 0;
        for step in 0..60_000 {
            let key = next() % 3_000;
            let (kg, hash) = at(key);
            let ns = (next() % 2) as u32;
            let ts = time + next() % 20_000;
            match next() % 16 {
                0..=8 => {
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
                13 => frozen.push(table.freeze()),
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
                // Most timers deleted at once: copies outnumber timers, the runs are rebuilt.
                let doomed: Vec<_> = model.iter().filter(|t| t.1 % 4 != 0).copied().collect();
                for (ts, key, ns) in doomed {
                    let (kg, hash) = at(key);
                    table.delete(kg, hash, &key, &ns, ts);
                    model.remove(&(ts, key, ns));
                }
            }
            assert_eq!(table.len(), model.len(), "step {step}");
            if frozen.len() > 3 {
                frozen.remove(0);
            }
        }
        assert!(
            model.len() > 1_000,
            "too few timers held to reach the merges"
        );
    }
}
