//! The heap backend's timers of one timer service and time domain (`docs/timers.md`): per owned key group
//! an ordered set behind an `Arc`, copied on the first write after a snapshot froze it, so the synchronous
//! phase clones one `Arc` per key group whatever the number of timers (Flink's heap timers copy the whole
//! queue there); across key groups an ordered index of each group's earliest timestamp, as Flink's
//! `KeyGroupPartitionedPriorityQueue` keeps a heap of the key groups' heads.

use std::any::Any;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use crate::error::{Error, Result};
use crate::format::keyed_file::KeyedFileWriter;
use crate::heap::table::{ErasedTable, FrozenTable, RawTable, group_records};
use crate::key_group::stable_key_hash;
use crate::keyed::backend::StateKey;
use crate::snapshot::state_meta::StateMeta;

/// Where a timer sorts in its key group: timestamp (ms), the key's stable hash, and a number telling apart
/// timers of equal timestamp and key hash (another namespace, or a hash collision). Keys need no order of
/// their own, and a fired timer carries its key's hash, so making its key current hashes nothing.
type Slot = (u64, u64, u32);

/// One key group's timers.
type Group<K, N> = BTreeMap<Slot, (K, N)>;

/// A timer taken off the queue: its key-group index, key hash, key, namespace and timestamp.
pub(crate) struct Popped<K, N> {
    pub(crate) kg_index: usize,
    pub(crate) key_hash: u64,
    pub(crate) key: K,
    pub(crate) namespace: N,
    pub(crate) timestamp: u64,
}

/// The timers of one service and domain.
pub(crate) struct TimerTable<K, N> {
    meta: StateMeta,
    groups: Vec<Arc<Group<K, N>>>,
    /// `(earliest timestamp, key-group index)` of every key group with timers.
    heads: BTreeSet<(u64, usize)>,
    len: usize,
}

impl<K: StateKey, N: StateKey> TimerTable<K, N> {
    /// No timers, `groups` key groups.
    pub(crate) fn new(meta: StateMeta, groups: usize) -> Self {
        TimerTable {
            meta,
            groups: (0..groups).map(|_| Arc::new(BTreeMap::new())).collect(),
            heads: BTreeSet::new(),
            len: 0,
        }
    }

    /// The timers of `raw`'s records (written by either backend: key, namespace, timestamp as 8 bytes
    /// big-endian), `groups` key groups.
    ///
    /// # Errors
    /// [`Error::Corrupt`] for a record whose key or namespace does not decode or whose value is not 8
    /// bytes.
    pub(crate) fn restored(meta: StateMeta, groups: usize, raw: &RawTable) -> Result<Self> {
        let mut table = TimerTable::new(meta, groups);
        for (kg, bytes) in raw.groups.iter() {
            let mut timers = Vec::new();
            for record in group_records(*kg, bytes) {
                let (_, k, n, v) = record?;
                let ts: [u8; 8] = v.try_into().map_err(|_| {
                    Error::corrupt(
                        "<restored timers>",
                        format!(
                            "a timer of `{}` has a {}-byte timestamp",
                            table.meta.name,
                            v.len()
                        ),
                    )
                })?;
                timers.push((
                    u64::from_be_bytes(ts),
                    stable_key_hash(k),
                    K::decode(k)?,
                    N::decode(n)?,
                ));
            }
            // Sorted, equal timers once, numbered within equal (timestamp, key hash): then built in one
            // pass from the sorted run.
            timers.sort_unstable_by_key(|t| (t.0, t.1));
            let mut group: Vec<(Slot, (K, N))> = Vec::with_capacity(timers.len());
            for (ts, hash, key, ns) in timers {
                let mut dup = 0;
                let mut seen = false;
                for (slot, (k, n)) in group.iter().rev() {
                    if (slot.0, slot.1) != (ts, hash) {
                        break;
                    }
                    seen |= *k == key && *n == ns;
                    dup = dup.max(slot.2 + 1);
                }
                if !seen {
                    group.push(((ts, hash, dup), (key, ns)));
                }
            }
            let slot = table.groups.get_mut(*kg).ok_or_else(|| {
                Error::corrupt("<restored timers>", "key group outside the restored range")
            })?;
            table.len += group.len();
            *slot = Arc::new(group.into_iter().collect());
            if let Some(head) = table.head(*kg) {
                table.heads.insert((head, *kg));
            }
        }
        Ok(table)
    }

    /// The earliest timestamp of key group `kg`.
    fn head(&self, kg: usize) -> Option<u64> {
        self.groups[kg].first_key_value().map(|(slot, _)| slot.0)
    }

    /// The slot of `(key, ns, ts)` in key group `kg` if the timer is there, else the number a new one
    /// takes.
    fn find(
        &self,
        kg: usize,
        hash: u64,
        key: &K,
        ns: &N,
        ts: u64,
    ) -> std::result::Result<Slot, u32> {
        let mut next = 0;
        for (slot, (k, n)) in self.groups[kg].range((ts, hash, 0)..=(ts, hash, u32::MAX)) {
            if k == key && n == ns {
                return Ok(*slot);
            }
            next = slot.2 + 1;
        }
        Err(next)
    }

    /// Moves key group `kg`'s entry in the head index from `old` to its head now.
    fn rehead(&mut self, kg: usize, old: Option<u64>) {
        let new = self.head(kg);
        if new != old {
            if let Some(old) = old {
                self.heads.remove(&(old, kg));
            }
            if let Some(new) = new {
                self.heads.insert((new, kg));
            }
        }
    }

    /// Adds timer `(key, ns, ts)` of key group `kg` (key hash `hash`); one already there stays one.
    pub(crate) fn register(&mut self, kg: usize, hash: u64, key: &K, ns: &N, ts: u64) {
        let Err(dup) = self.find(kg, hash, key, ns, ts) else {
            return;
        };
        let old = self.head(kg);
        Arc::make_mut(&mut self.groups[kg]).insert((ts, hash, dup), (key.clone(), ns.clone()));
        self.len += 1;
        if old.is_none_or(|h| ts < h) {
            self.rehead(kg, old);
        }
    }

    /// Removes timer `(key, ns, ts)` of key group `kg`, if there.
    pub(crate) fn delete(&mut self, kg: usize, hash: u64, key: &K, ns: &N, ts: u64) {
        let Ok(slot) = self.find(kg, hash, key, ns, ts) else {
            return;
        };
        let old = self.head(kg);
        Arc::make_mut(&mut self.groups[kg]).remove(&slot);
        self.len -= 1;
        self.rehead(kg, old);
    }

    /// The earliest timestamp.
    pub(crate) fn next(&self) -> Option<u64> {
        self.heads.first().map(|(ts, _)| *ts)
    }

    /// Timers held.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Removes and returns the earliest timer if its timestamp is at most `time`.
    pub(crate) fn pop_due(&mut self, time: u64) -> Option<Popped<K, N>> {
        let &(ts, kg) = self.heads.first()?;
        if ts > time {
            return None;
        }
        self.heads.pop_first();
        let ((timestamp, key_hash, _), (key, namespace)) =
            Arc::make_mut(&mut self.groups[kg]).pop_first()?;
        self.len -= 1;
        if let Some(head) = self.head(kg) {
            self.heads.insert((head, kg));
        }
        Some(Popped {
            kg_index: kg,
            key_hash,
            key,
            namespace,
            timestamp,
        })
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

/// The timers a synchronous phase froze: the key groups' sets, shared until the backend writes to them.
struct FrozenTimers<K, N>(Vec<Arc<Group<K, N>>>);

impl<K: StateKey, N: StateKey> FrozenTable for FrozenTimers<K, N> {
    fn write_group(
        &mut self,
        kg_index: usize,
        state: u32,
        writer: &mut KeyedFileWriter,
    ) -> Result<()> {
        let group = std::mem::take(&mut self.0[kg_index]);
        for ((ts, _, _), (key, ns)) in group.iter() {
            writer.add_record(
                state,
                |b| key.encode(b),
                |b| ns.encode(b),
                |b| b.extend_from_slice(&ts.to_be_bytes()),
            )?;
        }
        Ok(())
    }
}
