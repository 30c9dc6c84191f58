//! Heap state tables: the typed copy-on-write table of a registered state, the raw table of a restored
//! state not yet registered, and their frozen views for the asynchronous phase.

use std::any::Any;
use std::hash::BuildHasher;
use std::sync::Arc;

use crate::error::Result;
use crate::format::keyed_file::KeyedFileWriter;
use crate::heap::cow_map::{CowMap, CowSnapshot};
use crate::heap::delta::{Cut, FrozenChanges};
use crate::heap::frozen::{FrozenStateTable, FrozenTable};
use crate::heap::serde::{TtlSerde, ValueSerde};
use crate::heap::ttl::TtlSweep;
use crate::keyed::backend::StateKey;
use crate::keyed::ttl::TtlTimes;
use crate::keyed::ttl_refresh::ReadMarks;
use crate::snapshot::state_meta::StateMeta;

/// The current key of a heap backend, located: its stable hash, key group and index in the owned range.
pub(crate) struct CurrentKey<K> {
    pub(crate) key: K,
    pub(crate) key_hash: u64,
    pub(crate) key_group: u32,
    pub(crate) kg_index: usize,
}

/// Map hash of `(key, namespace)` from the key's stable hash (`xxh3_64`, well mixed in every bit).
///
/// The key group takes the low bits of the key's hash (`hash % max_parallelism`), so every key of a key
/// group shares them; the map of a key group uses the low bits for its directory and bits 32.. inside a
/// page. Rotating by 16 gives it xxh3 bits that the key group did not use (max parallelism is at most
/// 2^15). The namespace's hash is mixed in by `xor`; for `VoidNamespace` it is a constant. No multiply:
/// the per-record path counts instructions (`benches/heap_ops.rs`).
#[inline]
pub(crate) fn entry_hash<N: std::hash::Hash>(key_hash: u64, ns: &N) -> u64 {
    mix_entry_hash(key_hash, namespace_hash(ns))
}

/// The namespace's part of [`entry_hash`] (a batch in one namespace computes it once).
#[inline]
pub(crate) fn namespace_hash<N: std::hash::Hash>(ns: &N) -> u64 {
    foldhash::fast::FixedState::with_seed(0).hash_one(ns)
}

/// [`entry_hash`] from the key's stable hash and [`namespace_hash`].
#[inline]
pub(crate) fn mix_entry_hash(key_hash: u64, namespace_hash: u64) -> u64 {
    (key_hash ^ namespace_hash).rotate_right(16)
}

/// A state table whose types are erased, as the backend keeps them.
///
/// The backend finds the typed table of a state handle by upcasting to `dyn Any` and downcasting: one
/// virtual call (`type_id`) per state access.
pub(crate) trait ErasedTable<K>: Any + Send {
    fn meta(&self) -> &StateMeta;
    /// Synchronous phase: a frozen view, O(key groups); with TTL, the view leaves out what expired at
    /// `times`' now (`docs/ttl.md`). `cut` says whether the change log is cut and what the view writes:
    /// the whole table or its changes since the diff base (`heap/delta.rs`).
    fn freeze(&mut self, times: &TtlTimes, cut: Cut) -> Box<dyn FrozenTable>;
    /// The diff base of incremental checkpoints moved to checkpoint `base_id`: changes logged up to it
    /// are dropped. Nothing for a table that logs no changes.
    fn changes_base_moved(&mut self, base_id: u64) {
        let _ = base_id;
    }
    /// Entries in the table.
    fn len(&self) -> usize;
    /// Keys with an entry in namespace `ns` (with TTL, one a read returns at `times`' now, or one a
    /// queued read in `marks` keeps alive); `None` if `ns` is not this table's namespace type.
    fn keys_in_namespace(
        &self,
        ns: &dyn Any,
        times: &TtlTimes,
        marks: Option<&ReadMarks>,
    ) -> Option<Vec<K>>;
    /// Appends every `(key, namespace)` to `out`, a `Vec<(K, N)>` (with TTL, those a read returns at
    /// `times`' now, or kept alive by a queued read in `marks`); false if `N` is not this table's
    /// namespace type (or the table is raw: the backend decodes those).
    fn keys_and_namespaces(
        &self,
        out: &mut dyn Any,
        times: &TtlTimes,
        marks: Option<&ReadMarks>,
    ) -> bool;
    /// Whether the state was dropped ([`DroppedTable`]).
    fn is_dropped(&self) -> bool {
        false
    }
    /// Incremental TTL cleanup (`docs/ttl.md`): visits up to `slots` slots of the map from where the last
    /// call stopped, removing entries, list elements and map entries that expired at `times`' now.
    /// Nothing for a state without TTL.
    fn clean_expired(&mut self, slots: usize, times: &TtlTimes) {
        let _ = (slots, times);
    }
    /// Synchronous phase of a checkpoint with in-process recovery (`heap/in_process.rs`), right after
    /// [`ErasedTable::freeze`]: a second frozen version, kept for a restore in the process, O(key
    /// groups), with TTL the cutoff that freeze wrote at (what the file leaves out, the restore sweeps
    /// out); `None` if the table has none to keep.
    fn retain(&mut self) -> Option<Box<dyn RetainedTable<K>>> {
        None
    }
}

/// What stays of a dropped state: its id answers `InvalidArgument`, snapshots skip it.
pub(crate) struct DroppedTable(pub(crate) StateMeta);

impl<K: StateKey> ErasedTable<K> for DroppedTable {
    fn meta(&self) -> &StateMeta {
        &self.0
    }
    fn freeze(&mut self, _times: &TtlTimes, _cut: Cut) -> Box<dyn FrozenTable> {
        Box::new(FrozenRawTable(Arc::new(Vec::new()), true))
    }
    fn len(&self) -> usize {
        0
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
    fn is_dropped(&self) -> bool {
        true
    }
}

/// The typed table of a registered state: `(key, namespace) -> S`.
pub(crate) struct StateTable<K, N, S> {
    pub(crate) meta: StateMeta,
    pub(crate) map: CowMap<K, N, S>,
    pub(crate) serde: ValueSerde<S>,
    /// Where incremental TTL cleanup goes on, and when it is due.
    sweep: TtlSweep,
    /// With TTL: the cutoff the last synchronous phase froze the table at, if anything had expired.
    frozen_cutoff: Option<u64>,
}

impl<K: StateKey, N: StateKey, S: Clone + Send + Sync + 'static> StateTable<K, N, S> {
    /// An empty table of `groups` key groups; with `track_changes` (incremental checkpoints), its map logs
    /// changes and its first delta writes it whole.
    pub(crate) fn new(
        meta: StateMeta,
        groups: usize,
        serde: ValueSerde<S>,
        track_changes: bool,
    ) -> Self {
        let mut map = CowMap::new(groups);
        if track_changes {
            map.track_changes();
        }
        StateTable::with_map(meta, map, serde)
    }

    /// A table of `map` (a restore in the process, `heap/in_process.rs`).
    pub(crate) fn with_map(meta: StateMeta, map: CowMap<K, N, S>, serde: ValueSerde<S>) -> Self {
        StateTable {
            meta,
            map,
            serde,
            sweep: TtlSweep::default(),
            frozen_cutoff: None,
        }
    }
}

impl<K: StateKey, N: StateKey, S: Clone + Send + Sync + 'static> ErasedTable<K>
    for StateTable<K, N, S>
{
    fn meta(&self) -> &StateMeta {
        &self.meta
    }
    fn freeze(&mut self, times: &TtlTimes, cut: Cut) -> Box<dyn FrozenTable> {
        let ttl = self
            .serde
            .ttl
            .and_then(|t| Some((t, t.cutoff(times, false)?)));
        let segments = cut
            .checkpoint()
            .map(|id| self.map.cut_changes(id))
            .unwrap_or_default();
        // Append and patch records of a list or map without TTL only: with TTL, a full write leaves out
        // the elements and user keys expired by then, which the ones a delta leaves alone would not be.
        let serde = &self.serde;
        let element_records =
            (serde.encode_tail.is_some() || serde.encode_patch.is_some()) && serde.ttl.is_none();
        let delta = match cut {
            Cut::Delta(_) => FrozenChanges::new(segments, element_records),
            Cut::Untracked | Cut::Full(_) => None,
        };
        self.frozen_cutoff = ttl.map(|(_, cutoff)| cutoff);
        Box::new(FrozenStateTable::new(
            self.map.snapshot(),
            self.serde,
            ttl,
            delta,
        ))
    }
    fn changes_base_moved(&mut self, base_id: u64) {
        self.map.changes_base_moved(base_id);
    }
    fn len(&self) -> usize {
        self.map.len()
    }
    fn keys_in_namespace(
        &self,
        ns: &dyn Any,
        times: &TtlTimes,
        marks: Option<&ReadMarks>,
    ) -> Option<Vec<K>> {
        let ns = ns.downcast_ref::<N>()?;
        let live = self.read_filter(times, marks);
        Some(
            (0..self.map.groups())
                .flat_map(|g| self.map.iter_group(g))
                .filter(|e| e.ns == *ns && live(&e.key, &e.ns, &e.value))
                .map(|e| e.key.clone())
                .collect(),
        )
    }
    fn keys_and_namespaces(
        &self,
        out: &mut dyn Any,
        times: &TtlTimes,
        marks: Option<&ReadMarks>,
    ) -> bool {
        let Some(out) = out.downcast_mut::<Vec<(K, N)>>() else {
            return false;
        };
        let live = self.read_filter(times, marks);
        out.extend(
            (0..self.map.groups())
                .flat_map(|g| self.map.iter_group(g))
                .filter(|e| live(&e.key, &e.ns, &e.value))
                .map(|e| (e.key.clone(), e.ns.clone())),
        );
        true
    }
    fn retain(&mut self) -> Option<Box<dyn RetainedTable<K>>> {
        // What the last freeze left out of the file, the restore sweeps out.
        let ttl = self.serde.ttl.zip(self.frozen_cutoff);
        Some(Box::new(RetainedState {
            meta: self.meta.clone(),
            snapshot: self.map.snapshot(),
            serde: self.serde,
            ttl,
        }))
    }
    fn clean_expired(&mut self, slots: usize, times: &TtlTimes) {
        let Some(ttl) = self.serde.ttl else { return };
        let Some(cutoff) = ttl.cutoff(times, false) else {
            return;
        };
        (self.sweep).step(&mut self.map, slots, &ttl, cutoff);
    }
}

impl<K: StateKey, N: StateKey, S: Clone + Send + Sync + 'static> StateTable<K, N, S> {
    /// Whether a read at `times`' now returns (some of) the stored value of a key and namespace, or a
    /// queued read in `marks` keeps some of it alive: always without TTL.
    fn read_filter<'m>(
        &self,
        times: &TtlTimes,
        marks: Option<&'m ReadMarks>,
    ) -> impl Fn(&K, &N, &S) -> bool + 'm {
        let ttl = self
            .serde
            .ttl
            .and_then(|t| Some((t, t.cutoff(times, true)?)));
        move |key, ns, value| {
            ttl.is_none_or(|(t, cutoff)| {
                t.live(value, cutoff)
                    || marks.is_some_and(|m| {
                        let (mut k, mut n) = (Vec::new(), Vec::new());
                        key.encode(&mut k);
                        ns.encode(&mut n);
                        m.keeps_some(&k, &n, cutoff)
                    })
            })
        }
    }
}

/// One restored record: key-group index, key, namespace and value bytes.
pub(crate) type RawRecord<'a> = (usize, &'a [u8], &'a [u8], &'a [u8]);

/// Records of a restored state that the job has not registered yet: `(key-group index, records)` for the
/// key groups that have records, ascending by index; the records are exactly as a keyed snapshot file
/// holds them (`u32 state, u32 len + key, u32 len + namespace, u32 len + value`, `docs/formats.md`), so
/// that a key group of one state is taken over from the file's decoded frames without a copy. The state
/// word is the restored file's numbering and is ignored here.
pub(crate) struct RawTable {
    pub(crate) meta: StateMeta,
    pub(crate) groups: Arc<Vec<(usize, Vec<u8>)>>,
    pub(crate) len: usize,
}

impl RawTable {
    /// Iterates `(kg_index, key, namespace, value)` of every record.
    pub(crate) fn records(&self) -> impl Iterator<Item = Result<RawRecord<'_>>> {
        self.groups
            .iter()
            .flat_map(|(kg, bytes)| group_records(*kg, bytes))
    }
}

/// Iterates the records of one key group's bytes of a [`RawTable`].
pub(crate) fn group_records(
    kg: usize,
    bytes: &[u8],
) -> impl Iterator<Item = Result<RawRecord<'_>>> {
    crate::format::keyed_file::read::records(bytes, "<restored records>")
        .map(move |r| r.map(|r| (kg, r.key, r.namespace, r.value)))
}

impl<K: StateKey> ErasedTable<K> for RawTable {
    fn meta(&self) -> &StateMeta {
        &self.meta
    }
    /// Raw records of a state not registered since the restore pass through as they are (their TTL,
    /// if any, is only known once the state is registered).
    fn freeze(&mut self, _times: &TtlTimes, cut: Cut) -> Box<dyn FrozenTable> {
        // Unchanged since the restore, whose first checkpoint is full: a delta has nothing of it.
        Box::new(FrozenRawTable(
            self.groups.clone(),
            !matches!(cut, Cut::Delta(_)),
        ))
    }
    fn len(&self) -> usize {
        self.len
    }
    fn keys_in_namespace(
        &self,
        _ns: &dyn Any,
        _times: &TtlTimes,
        _marks: Option<&ReadMarks>,
    ) -> Option<Vec<K>> {
        // Raw records need the namespace's codec; the backend answers for them (it knows `N`).
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
        Some(Box::new(RetainedRaw(RawTable {
            meta: self.meta.clone(),
            groups: Arc::clone(&self.groups),
            len: self.len,
        })))
    }
}

/// Restored records frozen as they are, and whether they are written (a full write) or not (a delta:
/// they did not change, so only the key groups of its whole range are written).
struct FrozenRawTable(Arc<Vec<(usize, Vec<u8>)>>, bool);

impl FrozenTable for FrozenRawTable {
    fn rewrites(&self) -> bool {
        self.1
    }
    fn write_group(
        &mut self,
        kg_index: usize,
        state: u32,
        whole: bool,
        writer: &mut KeyedFileWriter,
    ) -> Result<()> {
        if !self.1 && !whole {
            return Ok(());
        }
        let Ok(at) = self.0.binary_search_by_key(&kg_index, |(kg, _)| *kg) else {
            return Ok(());
        };
        for record in group_records(kg_index, &self.0[at].1) {
            let (_, k, n, v) = record?;
            writer.add_record(
                state,
                |b| b.extend_from_slice(k),
                |b| b.extend_from_slice(n),
                |b| b.extend_from_slice(v),
            )?;
        }
        Ok(())
    }
}

/// One state's frozen version, kept for a restore in the process.
pub(crate) trait RetainedTable<K>: Send + Sync {
    /// A table holding the version for a restored backend (the version stays as it is); with
    /// `track_changes` its change log starts as after a restore of the same records from a file.
    fn restore(&self, track_changes: bool) -> Box<dyn ErasedTable<K>>;
}

/// A registered state's frozen map.
pub(crate) struct RetainedState<K, N, S> {
    meta: StateMeta,
    snapshot: CowSnapshot<K, N, S>,
    serde: ValueSerde<S>,
    /// With TTL and something expired at the synchronous phase: the cutoff the snapshot wrote at.
    ttl: Option<(TtlSerde<S>, u64)>,
}

impl<K: StateKey, N: StateKey, S: Clone + Send + Sync + 'static> RetainedTable<K>
    for RetainedState<K, N, S>
{
    fn restore(&self, track_changes: bool) -> Box<dyn ErasedTable<K>> {
        let mut map = CowMap::from_snapshot(&self.snapshot);
        if let Some((ttl, cutoff)) = &self.ttl {
            // What the checkpoint's file leaves out goes: entries, list elements and map entries that
            // expired at its cutoff (one round over the map, O(entries), copying the pages it changes).
            TtlSweep::default().step(&mut map, usize::MAX, ttl, *cutoff);
        }
        if track_changes {
            // The map holds exactly its checkpoint's records, as a map decoded from the file with
            // unchanged codecs does.
            map.track_changes();
            map.changes_continue_from_base();
        }
        Box::new(StateTable::with_map(self.meta.clone(), map, self.serde))
    }
}

/// A restored state's records that the job had not registered yet.
pub(crate) struct RetainedRaw(pub(crate) RawTable);

impl<K: StateKey> RetainedTable<K> for RetainedRaw {
    fn restore(&self, _track_changes: bool) -> Box<dyn ErasedTable<K>> {
        Box::new(RawTable {
            meta: self.0.meta.clone(),
            groups: Arc::clone(&self.0.groups),
            len: self.0.len,
        })
    }
}
