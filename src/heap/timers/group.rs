//! One key group's timers on the heap backend (`docs/timers.md`): a log of registrations and deletions
//! resolved by sorting, with no set of the timers to look up on every write.

use std::cmp::{Ordering, Reverse};
use std::collections::{BinaryHeap, VecDeque};

use hashbrown::HashTable;

use crate::error::{Error, Result};
use crate::heap::table::{group_records, namespace_hash};
use crate::key_group::stable_key_hash;
use crate::keyed::backend::StateKey;

/// One timer: its timestamp (ms), its key's stable hash (kept so that making a fired timer's key current
/// hashes nothing), key and namespace. Ordered by timestamp, then key hash only: copies of one timer are
/// equal, and so are distinct timers of equal timestamp and key hash (a *tie*: one key's timers in two
/// namespaces, or two keys whose hashes collide), which [`TimerGroup`] tells apart where it matters.
#[derive(Clone)]
pub(crate) struct Slot<K, N> {
    pub(crate) ts: u64,
    pub(crate) key_hash: u64,
    pub(crate) key: K,
    pub(crate) ns: N,
}

impl<K, N> Slot<K, N> {
    #[inline]
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

    /// Whether `other` is a copy of the same timer.
    #[inline]
    fn same(&self, other: &Self) -> bool {
        self.is(&other.key, &other.ns, other.ts)
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

/// Hash of a timer in its key group's set of deleted timers: the key's stable hash, the namespace's and
/// the timestamp.
#[inline]
fn timer_hash<N: std::hash::Hash>(key_hash: u64, ns: &N, ts: u64) -> u64 {
    (key_hash ^ namespace_hash(ns).rotate_left(21))
        .wrapping_add(ts.wrapping_mul(0x9e37_79b9_7f4a_7c15))
}

/// The buffer and the deleted set are merged into the run when either reaches this many entries or the
/// run's length, whichever is more: memory stays within about twice the timers plus this, and each
/// merge's cost is paid for by as many writes.
const MERGE_AT: usize = 4096;

/// One key group's timers, kept as a log resolved by sorting rather than a set looked up on every write
/// (a random probe into megabytes per registration, deletion and firing cost most of each):
///
/// - `run`: a sorted run, each timer once, popped from the front;
/// - `recent`: a binary heap of copies added since the last merge, while they are few;
/// - `fresh`: copies registered since the order was last read, unsorted (a registration is an append);
/// - `gone`: timers deleted since the last merge (a deletion is an insert here, a table of thousands at
///   most, not a probe into all timers);
/// - `front`: the earliest timer once checked: its only copy, not deleted.
///
/// A timer is held when a copy of it is in `front`, `run`, `recent` or `fresh` and it is not in `gone`;
/// registering twice adds a second copy, which the merge collapses. Reading the order settles `fresh`:
/// onto the heap while the heap and it are small beside the run, else everything is merged into one run
/// (sorted, copies collapsed, `gone` applied and emptied), so the work per write is amortized O(log n)
/// and a firing mostly pops a sorted run. Before the earliest copy becomes `front`, the other copies
/// with its order are gathered, so the extra copies and deleted timers are dropped there.
#[derive(Clone)]
pub(crate) struct TimerGroup<K, N> {
    run: VecDeque<Slot<K, N>>,
    recent: BinaryHeap<Reverse<Slot<K, N>>>,
    fresh: Vec<Slot<K, N>>,
    /// The least timestamp in `fresh` (`u64::MAX` when empty).
    fresh_min: u64,
    gone: HashTable<Slot<K, N>>,
    front: Option<Slot<K, N>>,
}

impl<K: StateKey, N: StateKey> TimerGroup<K, N> {
    /// No timers.
    pub(crate) fn new() -> Self {
        TimerGroup {
            run: VecDeque::new(),
            recent: BinaryHeap::new(),
            fresh: Vec::new(),
            fresh_min: u64::MAX,
            gone: HashTable::new(),
            front: None,
        }
    }

    /// Key group `kg`'s timers from its restored records (`bytes`, of state `name`): sorted unless the
    /// file already holds them in order (this backend writes them so), equal timers once.
    ///
    /// # Errors
    /// [`Error::Corrupt`] for a record whose key or namespace does not decode or whose value is not 8
    /// bytes.
    pub(crate) fn restored(name: &str, kg: usize, bytes: &[u8]) -> Result<Self> {
        let mut slots = Vec::new();
        for record in group_records(kg, bytes) {
            let (_, k, n, v) = record?;
            let ts: [u8; 8] = v.try_into().map_err(|_| {
                Error::corrupt(
                    "<restored timers>",
                    format!("a timer of `{name}` has a {}-byte timestamp", v.len()),
                )
            })?;
            slots.push(Slot {
                ts: u64::from_be_bytes(ts),
                key_hash: stable_key_hash(k),
                key: K::decode(k)?,
                ns: N::decode(n)?,
            });
        }
        if !slots.is_sorted() {
            slots.sort_unstable();
        }
        let mut group = TimerGroup::new();
        let mut run = Vec::with_capacity(slots.len());
        // A file holds each timer once, but nothing here relies on it.
        merge_collapsed(slots, Vec::new(), |_| false, &mut run);
        group.run = run.into();
        Ok(group)
    }

    fn hash_of(slot: &Slot<K, N>) -> u64 {
        timer_hash(slot.key_hash, &slot.ns, slot.ts)
    }

    /// Adds timer `(key, ns, ts)` of a key with stable hash `key_hash` (a second copy if it is there: the
    /// next merge collapses them).
    #[inline]
    pub(crate) fn insert(&mut self, key_hash: u64, key: &K, ns: &N, ts: u64) {
        if self.front.as_ref().is_some_and(|f| f.is(key, ns, ts)) {
            return;
        }
        if !self.gone.is_empty() {
            let hash = timer_hash(key_hash, ns, ts);
            if let Ok(entry) = self.gone.find_entry(hash, |s| s.is(key, ns, ts)) {
                entry.remove();
            }
        }
        self.fresh_min = self.fresh_min.min(ts);
        self.fresh.push(Slot {
            ts,
            key_hash,
            key: key.clone(),
            ns: ns.clone(),
        });
        if self.fresh.len() >= MERGE_AT.max(self.run.len()) {
            self.merge();
        }
    }

    /// Removes timer `(key, ns, ts)` if it is there.
    #[inline]
    pub(crate) fn remove(&mut self, key_hash: u64, key: &K, ns: &N, ts: u64) {
        if self.front.as_ref().is_some_and(|f| f.is(key, ns, ts)) {
            // The front is the timer's only copy.
            self.front = None;
            return;
        }
        let hash = timer_hash(key_hash, ns, ts);
        if self.gone.find(hash, |s| s.is(key, ns, ts)).is_some() {
            return;
        }
        let slot = Slot {
            ts,
            key_hash,
            key: key.clone(),
            ns: ns.clone(),
        };
        self.gone.insert_unique(hash, slot, Self::hash_of);
        if self.gone.len() >= MERGE_AT.max(self.run.len()) {
            self.merge();
        }
    }

    /// Everything merged into the run: sorted, each timer once, deleted ones dropped; `gone` emptied.
    fn merge(&mut self) {
        let mut added = std::mem::take(&mut self.fresh);
        added.extend(self.front.take());
        added.extend(
            std::mem::take(&mut self.recent)
                .into_vec()
                .into_iter()
                .map(|Reverse(s)| s),
        );
        added.sort_unstable();
        let gone = std::mem::take(&mut self.gone);
        let mut merged = Vec::with_capacity(self.run.len() + added.len());
        let deleted = |s: &Slot<K, N>| {
            !gone.is_empty() && gone.find(Self::hash_of(s), |g| g.same(s)).is_some()
        };
        merge_collapsed(std::mem::take(&mut self.run), added, deleted, &mut merged);
        self.run = merged.into();
        self.fresh_min = u64::MAX;
    }

    /// Settles the buffer before the order is read: onto the heap while the heap and the buffer hold at
    /// most an eighth of the run, else everything merged (amortized O(log n) per timer).
    fn settle(&mut self) {
        if self.fresh.is_empty() {
            return;
        }
        let recent = self.recent.len() + self.fresh.len();
        if recent <= 64 || recent * 8 <= self.run.len() {
            self.fresh_min = u64::MAX;
            let fresh = std::mem::take(&mut self.fresh);
            self.recent.extend(fresh.into_iter().map(Reverse));
        } else {
            self.merge();
        }
    }

    /// Whether nothing needs resolving: no buffer, heap or deleted timers, so the run and the front are
    /// exactly the timers.
    pub(crate) fn is_clean(&self) -> bool {
        self.fresh.is_empty() && self.recent.is_empty() && self.gone.is_empty()
    }

    /// The earliest copy's timestamp, unchecked (it may be a deleted timer's).
    pub(crate) fn first_ts(&self) -> Option<u64> {
        let run = self.run.front().map_or(u64::MAX, |s| s.ts);
        let recent = self.recent.peek().map_or(u64::MAX, |Reverse(s)| s.ts);
        let front = self.front.as_ref().map_or(u64::MAX, |s| s.ts);
        let least = run.min(recent).min(self.fresh_min).min(front);
        let any = self.front.is_some()
            || !self.run.is_empty()
            || !self.recent.is_empty()
            || !self.fresh.is_empty();
        any.then_some(least)
    }

    /// The earliest timer's timestamp, made the front: the buffer settled, and the copies of its order
    /// gathered so that extra copies and deleted timers are dropped.
    pub(crate) fn head(&mut self) -> Option<u64> {
        self.settle();
        loop {
            let run = self.run.front().map(Slot::order);
            let recent = self.recent.peek().map(|Reverse(s)| s.order());
            let next = match (run, recent) {
                (Some(r), Some(h)) => Some(r.min(h)),
                (r, h) => r.or(h),
            };
            if let Some(front) = &self.front {
                // Copies of the front do not exist (registering it again adds none), so a copy of equal
                // order is another timer, which may wait.
                if next.is_none_or(|o| front.order() <= o) {
                    return Some(front.ts);
                }
                let front = self.front.take();
                self.recent.extend(front.map(Reverse));
                continue;
            }
            let order = next?;
            let first = if run == Some(order) {
                self.run.pop_front()
            } else {
                self.recent.pop().map(|Reverse(s)| s)
            }?;
            let tied = self.run.front().is_some_and(|s| s.order() == order)
                || self
                    .recent
                    .peek()
                    .is_some_and(|Reverse(s)| s.order() == order);
            if !tied {
                if !self.forget(&first) {
                    self.front = Some(first);
                    return Some(order.0);
                }
                continue;
            }
            self.gather(first, order);
        }
    }

    /// Whether `slot` was deleted (it is then forgotten: no other copy of it remains).
    fn forget(&mut self, slot: &Slot<K, N>) -> bool {
        if self.gone.is_empty() {
            return false;
        }
        let found = self.gone.find_entry(Self::hash_of(slot), |g| g.same(slot));
        found.map(|entry| entry.remove()).is_ok()
    }

    /// With the buffer settled, takes every copy of order `order` (`first` and those at the front of the
    /// run and the heap): each distinct timer not deleted becomes the front or goes back on the heap once.
    #[cold]
    fn gather(&mut self, first: Slot<K, N>, order: (u64, u64)) {
        let mut copies = vec![first];
        while self.run.front().is_some_and(|s| s.order() == order) {
            copies.extend(self.run.pop_front());
        }
        while self
            .recent
            .peek()
            .is_some_and(|Reverse(s)| s.order() == order)
        {
            copies.extend(self.recent.pop().map(|Reverse(s)| s));
        }
        let mut distinct: Vec<Slot<K, N>> = Vec::with_capacity(copies.len());
        for slot in copies {
            if !distinct.iter().any(|d| d.same(&slot)) {
                distinct.push(slot);
            }
        }
        // Every copy of these timers was gathered, so a deleted one is forgotten entirely.
        distinct.retain(|s| !self.forget(s));
        self.front = distinct.pop();
        self.recent.extend(distinct.into_iter().map(Reverse));
    }

    /// Removes and returns the earliest timer.
    pub(crate) fn pop(&mut self) -> Option<Slot<K, N>> {
        self.head()?;
        self.front.take()
    }

    /// Timers held, exact (everything merged first unless already clean).
    pub(crate) fn count(&mut self) -> usize {
        if !self.is_clean() {
            self.merge();
        }
        self.run.len() + usize::from(self.front.is_some())
    }

    /// Timers held, exact, without changing the group (a sort aside unless clean).
    pub(crate) fn held(&self) -> usize {
        if self.is_clean() {
            self.run.len() + usize::from(self.front.is_some())
        } else {
            self.sorted().len()
        }
    }

    /// The timers held, in firing order (timestamp, key hash), each once, without changing the group (a
    /// frozen copy's, in the asynchronous phase).
    pub(crate) fn sorted(&self) -> Vec<&Slot<K, N>> {
        let mut added: Vec<&Slot<K, N>> = (self.fresh.iter())
            .chain(self.recent.iter().map(|Reverse(s)| s))
            .chain(self.front.iter())
            .collect();
        added.sort_unstable();
        let gone = &self.gone;
        let deleted = |s: &&Slot<K, N>| {
            !gone.is_empty() && gone.find(Self::hash_of(s), |g| g.same(s)).is_some()
        };
        let mut out = Vec::with_capacity(self.run.len() + added.len());
        merge_collapsed(self.run.iter(), added, deleted, &mut out);
        out
    }
}

/// Merges the sorted `run` and the sorted `added` into `out`, each timer once (copies of one timer have
/// equal order, so they meet within a block of equal order, checked against the block's timers so far),
/// leaving out those `deleted` says. `run` first on equal order.
fn merge_collapsed<K, N, T>(
    run: impl IntoIterator<Item = T>,
    added: Vec<T>,
    deleted: impl Fn(&T) -> bool,
    out: &mut Vec<T>,
) where
    K: PartialEq,
    N: PartialEq,
    T: std::borrow::Borrow<Slot<K, N>>,
{
    let mut run = run.into_iter().peekable();
    let mut added = added.into_iter().peekable();
    // Where the block of `out`'s last order begins.
    let mut block = 0;
    loop {
        let from_run = match (run.peek(), added.peek()) {
            (Some(r), Some(a)) => r.borrow() <= a.borrow(),
            (Some(_), None) => true,
            (None, Some(_)) => false,
            (None, None) => break,
        };
        let Some(next) = (if from_run { run.next() } else { added.next() }) else {
            break;
        };
        let slot = next.borrow();
        match out.last() {
            Some(last) if last.borrow().order() == slot.order() => {
                if out[block..].iter().any(|s| s.borrow().same(slot)) {
                    continue;
                }
            }
            _ => block = out.len(),
        }
        if !deleted(&next) {
            out.push(next);
        }
    }
}
