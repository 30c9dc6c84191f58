//! Restoring a heap backend from keyed snapshot files, at the same or another parallelism.

use std::collections::HashMap;
use std::sync::Arc;

use crate::error::{Error, Result};
use crate::format::bytes::PutExt;
use crate::format::keyed_file::read as keyed_file;
use crate::format::keyed_file::read::check_key_group;
use crate::heap::backend::HeapKeyedStateBackend;
use crate::heap::chain::Base;
use crate::heap::checkpoints::HeapCheckpoints;
use crate::heap::config::HeapConfig;
use crate::heap::in_process::{InProcessRecovery, RetainedTables};
use crate::heap::rolling::{ChainFile, FrameBytes};
use crate::heap::states::StateTables;
use crate::heap::table::RawTable;
use crate::key_group::KeyGroupRange;
use crate::keyed::backend::StateKey;
use crate::keyed::identity::SubtaskIdentity;
use crate::snapshot::handle::{HandleFormat, KeyedStateHandle};
use crate::snapshot::restore_mode::RestoreMode;
use crate::snapshot::result::RestoreSources;
use crate::snapshot::state_meta::StateMeta;
use crate::snapshot_io::chain::{Chain, Seen};
use crate::snapshot_io::load::load_parts;
use crate::snapshot_io::loaded::LoadedFile;
use crate::snapshot_io::local_copy::LocalCopies;
use crate::storage::CheckpointStorage;

impl<K: StateKey> HeapKeyedStateBackend<K> {
    /// A backend of subtask `identity` holding the state of the key groups it owns from `handles` (the keyed state
    /// handles of all subtasks of the operator in one checkpoint, or those overlapping the owned range).
    /// Files are read in parallel; a file whose key groups are all owned is read whole and its CRC32
    /// checked, otherwise (a rescale) only the owned key groups are read (ranged reads on remote storage,
    /// each frame checked by its CRC32).
    ///
    /// Restored states are registered on first use by a descriptor with the same name, kind and codecs;
    /// states never registered are carried into the next snapshot unchanged. The backend then refuses
    /// snapshot ids up to the restored checkpoint's. With [`HeapConfig::incremental`], a
    /// [`RestoreMode::Claim`] restore of one chain of the same key groups continues it (the next
    /// checkpoint is a delta on it); any other restore starts a new chain with a full checkpoint.
    ///
    /// # Errors
    /// - [`Error::InvalidArgument`] if the handles are not one checkpoint's state of this operator with
    ///   this max parallelism covering the owned key groups once (see `docs/protocol.md`).
    /// - [`Error::NotFound`] naming the missing file; [`Error::Corrupt`] naming a corrupt or truncated file.
    /// - [`Error::IncompatibleSchema`] if the files describe a state differently (codecs of different
    ///   versions across subtasks): never a reason to fall back to an older checkpoint.
    pub async fn restore(
        identity: SubtaskIdentity,
        config: HeapConfig,
        storage: &CheckpointStorage,
        handles: &[KeyedStateHandle],
        mode: RestoreMode,
    ) -> Result<Self> {
        let sources = RestoreSources::default();
        Self::restore_reporting(identity, config, storage, handles, mode, sources).await
    }

    /// [`HeapKeyedStateBackend::restore`], adding to `sources` (where the state was not found first).
    async fn restore_reporting(
        identity: SubtaskIdentity,
        config: HeapConfig,
        storage: &CheckpointStorage,
        handles: &[KeyedStateHandle],
        mode: RestoreMode,
        mut sources: RestoreSources,
    ) -> Result<Self> {
        config.validate()?;
        let backend_id = storage.new_backend_id(identity.operator_id(), identity.subtask_index());
        let range = identity.key_groups();
        let relevant = crate::snapshot::validate::restore_handles(
            identity.operator_id(),
            identity.max_parallelism(),
            range,
            handles,
        )?;
        let continued = continued_chain(mode, &relevant, range).cloned();
        let local = config.local_recovery_dir.clone().map(LocalCopies::new);
        let threads = config.restore_threads;
        let loads = relevant
            .into_iter()
            .map(|h| load_parts(storage, h, range, "heap", local.as_ref(), threads));
        let loaded = futures::future::try_join_all(loads).await?;
        for file in loaded.iter().flatten() {
            sources.merge(&file.sources);
        }
        let continued = continued.map(|h| restored_base(h, &loaded[0], storage));
        let mut raw = RawStates::default();
        for parts in loaded {
            let [file] = parts.as_slice() else {
                // A chain: its live records visited newest file first, runs of key groups on threads.
                let chain = Chain::new(&parts)?;
                let header = chain.header();
                let slots = raw.slots(&header.states, chain.path())?;
                let groups: Vec<_> = chain.groups().enumerate().collect();
                let runs = crate::parallel::runs_by_weight(groups, threads, |(_, (_, b))| *b);
                let split = crate::parallel::run_each(runs, |_, run| {
                    chain_by_state(&chain, run, &slots, range, header.max_parallelism)
                });
                for run in split {
                    for (slot, kg_index, bytes, len) in run? {
                        raw.add_group(slot, kg_index, bytes, len);
                    }
                }
                continue;
            };
            let slots = raw.slots(&file.header.states, &file.path)?;
            let file = parts.into_iter().next().expect("one file");
            let runs = crate::parallel::runs_by_weight(file.groups, threads, |(_, b)| b.len());
            let (path, max_parallelism) = (&file.path, file.header.max_parallelism);
            let split = crate::parallel::run_each(runs, |_, run| {
                split_by_state(run, &slots, range, max_parallelism, path)
            });
            for run in split {
                for (slot, kg_index, bytes, len) in run? {
                    raw.add_group(slot, kg_index, bytes, len);
                }
            }
        }
        let mut states = StateTables::new(config.incremental);
        for table in raw.into_tables() {
            states.add_restored(table);
        }
        let restored_from = handles.first().map(|h| h.checkpoint_id);
        let chain = config.chain_book(range, continued);
        let checkpoints =
            HeapCheckpoints::restored(backend_id, restored_from, local, sources, chain);
        HeapKeyedStateBackend::restored(identity, config, states, checkpoints)
    }
}

impl<K: StateKey> HeapKeyedStateBackend<K> {
    /// [`HeapKeyedStateBackend::restore`], taking the state from `recovery` when it keeps the frozen
    /// version that produced the handle of the owned key groups (in-process recovery,
    /// `docs/local-recovery.md`): no file is read, the maps are the kept ones, copied page by page as
    /// the restored backend writes them, O(states x key groups) (a TTL state whose snapshot left
    /// something out is swept once, O(its entries)); the first checkpoint after it is full (no
    /// incremental chain continues on files this restore did not read). Otherwise the files are read as
    /// `restore` reads them and the reason is one of `restore_sources().fallbacks`. Either way the
    /// restored backend keeps its own checkpoints in `recovery`.
    ///
    /// # Errors
    /// As [`HeapKeyedStateBackend::restore`].
    pub async fn restore_in_process(
        identity: SubtaskIdentity,
        config: HeapConfig,
        storage: &CheckpointStorage,
        handles: &[KeyedStateHandle],
        mode: RestoreMode,
        recovery: &InProcessRecovery,
    ) -> Result<Self> {
        let mut backend = match kept_version::<K>(&identity, storage, handles, recovery) {
            Ok((handle, kept)) => {
                config.validate()?;
                // Never a continued chain: this restore read none of the chain's files, so the next
                // checkpoint is full and references nothing it did not write (a file damaged or gone
                // since would otherwise break every later checkpoint of the chain).
                let states = StateTables::from_memory(&kept, config.incremental);
                let sources = RestoreSources {
                    in_process: 1,
                    ..RestoreSources::default()
                };
                let checkpoints = HeapCheckpoints::restored(
                    storage.new_backend_id(identity.operator_id(), identity.subtask_index()),
                    Some(handle.checkpoint_id),
                    config.local_recovery_dir.clone().map(LocalCopies::new),
                    sources,
                    config.chain_book(identity.key_groups(), None),
                );
                HeapKeyedStateBackend::restored(identity, config, states, checkpoints)?
            }
            Err(why) => {
                let mut sources = RestoreSources::default();
                if let Some(h) = handles.first() {
                    sources.not_in_process(h.checkpoint_id, why);
                }
                Self::restore_reporting(identity, config, storage, handles, mode, sources).await?
            }
        };
        backend.set_in_process_recovery(recovery);
        Ok(backend)
    }
}

/// The one handle of the owned key groups among `handles` and the version `recovery` keeps of it, or why
/// there is none to take.
fn kept_version<'h, K: StateKey>(
    identity: &SubtaskIdentity,
    storage: &CheckpointStorage,
    handles: &'h [KeyedStateHandle],
    recovery: &InProcessRecovery,
) -> std::result::Result<(&'h KeyedStateHandle, Arc<RetainedTables<K>>), &'static str> {
    let range = identity.key_groups();
    let relevant = crate::snapshot::validate::restore_handles(
        identity.operator_id(),
        identity.max_parallelism(),
        range,
        handles,
    )
    .map_err(|_| "the handles do not restore this subtask as they are")?;
    let [handle] = relevant.as_slice() else {
        return Err("a rescale: the owned key groups are in several handles");
    };
    if handle.key_groups != range {
        return Err("a rescale: the handle holds other key groups too");
    }
    let kept = recovery.find::<K>(&storage.job_root(), handle)?;
    Ok((handle, kept))
}

/// With incremental checkpoints, a CLAIM restore of one chain of the same key groups continues it: the
/// next checkpoint is a delta on the restored files (as the RocksDB backend's). Otherwise (NO_CLAIM:
/// nothing restored may be referenced; a rescale; full files) the first checkpoint is full and names only
/// files of its own.
fn continued_chain<'h>(
    mode: RestoreMode,
    relevant: &[&'h KeyedStateHandle],
    range: KeyGroupRange,
) -> Option<&'h KeyedStateHandle> {
    match (mode, relevant) {
        (RestoreMode::Claim, [h])
            if h.key_groups == range && h.format == HandleFormat::KeyedChain =>
        {
            Some(h)
        }
        _ => None,
    }
}

/// The diff base of a restore that continues the chain of `handle`, whose files `loaded` holds (all key
/// groups, oldest first): each file's whole range from its header, and the bytes of its frames of whole
/// key groups and of changes estimated as its size split in the shares of their decoded record bytes.
fn restored_base(
    handle: KeyedStateHandle,
    loaded: &[LoadedFile],
    storage: &CheckpointStorage,
) -> Base {
    let files = (handle.files.iter().zip(loaded))
        .map(|(file, part)| {
            let whole = part.header.whole_range();
            let total: u64 = part.groups.iter().map(|(_, b)| b.len() as u64).sum();
            let of_whole: u64 = (part.groups.iter())
                .filter(|(kg, _)| whole.contains(*kg))
                .map(|(_, b)| b.len() as u64)
                .sum();
            let share = |raw: u64| match total {
                0 => 0,
                _ => (u128::from(file.size_bytes) * u128::from(raw) / u128::from(total)) as u64,
            };
            ChainFile {
                file: file.clone(),
                whole,
                bytes: FrameBytes {
                    whole: share(of_whole),
                    changes: share(total - of_whole),
                },
            }
        })
        .collect();
    Base::restored(
        handle.checkpoint_id,
        files,
        storage.clone(),
        handle.backend_id,
    )
}

/// The restored records of every state, gathered from the files of a restore: per state, record bytes per
/// key-group index, only for key groups that have records (a header may name many states, and a dense
/// vector per state and key group would let a small file allocate states x key groups before any record
/// is read).
/// `(key-group index, record bytes)` of one state, as a [`RawTable`] holds them.
type GroupRecords = Vec<(usize, Vec<u8>)>;

#[derive(Default)]
struct RawStates {
    /// Per state: its description, `(key-group index, record bytes)` in arrival order (sorted by index
    /// at the end), and its record count.
    states: Vec<(StateMeta, GroupRecords, usize)>,
    by_name: HashMap<String, usize>,
}

impl RawStates {
    /// The slot of each state of a file's header (`metas`, of the file at `path`), added if new.
    ///
    /// # Errors
    /// [`Error::IncompatibleSchema`] if a state was described with other codecs by another file.
    fn slots(&mut self, metas: &[StateMeta], path: &str) -> Result<Vec<usize>> {
        let mut slots = Vec::with_capacity(metas.len());
        for meta in metas {
            let slot = *self.by_name.entry(meta.name.clone()).or_insert_with(|| {
                self.states.push((meta.clone(), Vec::new(), 0));
                self.states.len() - 1
            });
            if self.states[slot].0 != *meta {
                // Every file is intact (its checksums held): the subtasks wrote the state with
                // different codecs (a partly upgraded job). Not a corrupt file, so a restore never
                // falls back over it to an older checkpoint.
                self.states[slot]
                    .0
                    .check_compatible(meta)
                    .map_err(|e| match e {
                        Error::IncompatibleSchema { state, reason } => Error::IncompatibleSchema {
                            state,
                            reason: format!(
                                "{reason} in another file of the same checkpoint ({path})"
                            ),
                        },
                        other => other,
                    })?;
            }
            slots.push(slot);
        }
        Ok(slots)
    }

    /// Adds `len` records of state `slot` in key group `kg_index`, as a keyed file holds them.
    fn add_group(&mut self, slot: usize, kg_index: usize, bytes: Vec<u8>, len: usize) {
        let (_, groups, count) = &mut self.states[slot];
        groups.push((kg_index, bytes));
        *count += len;
    }

    /// One raw table per state, in the order the states were first seen.
    fn into_tables(self) -> impl Iterator<Item = RawTable> {
        self.states.into_iter().map(|(meta, mut groups, len)| {
            // Ascending by key-group index, one entry per index (files arrive in any order, and a key
            // group split between two runs of arrival is joined).
            groups.sort_by_key(|(kg, _)| *kg);
            let mut joined: GroupRecords = Vec::with_capacity(groups.len());
            for (kg, bytes) in groups {
                match joined.last_mut() {
                    Some((last, into)) if *last == kg => into.extend_from_slice(&bytes),
                    _ => joined.push((kg, bytes)),
                }
            }
            RawTable {
                meta,
                groups: Arc::new(joined),
                len,
            }
        })
    }
}

/// A state's records of one key group: `(state slot, key-group index, records as the file holds them,
/// record count)`.
type StateGroup = (usize, usize, Vec<u8>, usize);

/// The records of a run of one file's decoded key groups (`(key group, records)`), split by state (the
/// file's state `i` is slot `slots[i]`) and checked: every record of a known state and in the key group
/// its key hashes to. A key group holding one state's records alone (the common case) is taken over as it
/// is; one holding several states' is copied into a buffer per state.
///
/// # Errors
/// [`Error::Corrupt`] naming `path` for a record that does not parse, of an unknown state or in another
/// key group than its key's, or a key group outside `range`.
fn split_by_state(
    run: Vec<(u32, Vec<u8>)>,
    slots: &[usize],
    range: KeyGroupRange,
    max_parallelism: u32,
    path: &str,
) -> Result<Vec<StateGroup>> {
    let mut out = Vec::with_capacity(run.len());
    // Per file state: its records in the key group at hand.
    let mut counts = vec![0usize; slots.len()];
    for (key_group, bytes) in run {
        let kg_index = range
            .index_of(key_group)
            .ok_or_else(|| Error::corrupt(path, "key group outside the restore range"))?;
        counts.fill(0);
        let (mut first, mut distinct) = (0u32, 0usize);
        for record in keyed_file::records(&bytes, path) {
            let r = record?;
            let count = counts.get_mut(r.state as usize).ok_or_else(|| {
                Error::corrupt(path, format!("record of unknown state {}", r.state))
            })?;
            check_key_group(r.key, max_parallelism, key_group, path)?;
            if *count == 0 {
                distinct += 1;
                if distinct == 1 {
                    first = r.state;
                }
            }
            *count += 1;
        }
        if distinct == 1 {
            let slot = slots[first as usize];
            out.push((slot, kg_index, bytes, counts[first as usize]));
            continue;
        }
        let mut per_state: Vec<(u32, Vec<u8>)> = Vec::with_capacity(distinct);
        let mut at = 0;
        for record in keyed_file::records(&bytes, path) {
            let r = record?;
            let len = 16 + r.key.len() + r.namespace.len() + r.value.len();
            let into = match per_state.iter().position(|(s, _)| *s == r.state) {
                Some(i) => &mut per_state[i].1,
                None => {
                    per_state.push((r.state, Vec::new()));
                    &mut per_state.last_mut().expect("pushed above").1
                }
            };
            into.extend_from_slice(&bytes[at..at + len]);
            at += len;
        }
        for (state, records) in per_state {
            out.push((
                slots[state as usize],
                kg_index,
                records,
                counts[state as usize],
            ));
        }
    }
    Ok(out)
}

/// The live records of a run of a chain's key groups (`(position in `[`Chain::groups`]`, (key group,
/// bytes))`), per state (the newest file's state `i` is slot `slots[i]`) and checked as
/// [`split_by_state`] checks a file's; each record copied as its file holds it.
///
/// # Errors
/// As [`Chain::visit_group`] and [`split_by_state`].
fn chain_by_state(
    chain: &Chain<'_>,
    run: Vec<(usize, (u32, usize))>,
    slots: &[usize],
    range: KeyGroupRange,
    max_parallelism: u32,
) -> Result<Vec<StateGroup>> {
    let path = chain.path();
    let mut out = Vec::with_capacity(run.len());
    let mut seen = Seen::default();
    for (group, (key_group, bytes)) in run {
        let kg_index = range
            .index_of(key_group)
            .ok_or_else(|| Error::corrupt(path, "key group outside the restore range"))?;
        // Per state of the newest file: its records of this key group and their count.
        let mut per_state: Vec<(u32, Vec<u8>, usize)> = Vec::new();
        chain.visit_group(group, &mut seen, |state, r, record| {
            check_key_group(r.key, max_parallelism, key_group, path)?;
            let i = match per_state.iter().position(|(s, _, _)| *s == state) {
                Some(i) => i,
                None => {
                    // The first state of a key group is usually its only one: room for all its bytes.
                    let room = if per_state.is_empty() { bytes } else { 0 };
                    per_state.push((state, Vec::with_capacity(room), 0));
                    per_state.len() - 1
                }
            };
            let (_, into, len) = &mut per_state[i];
            match record {
                Some(record) => into.extend_from_slice(record),
                // A list merged from append records: the record as a file would hold it.
                None => {
                    into.put_u32(r.state);
                    into.put_bytes(r.key);
                    into.put_bytes(r.namespace);
                    into.put_bytes(r.value);
                }
            }
            *len += 1;
            Ok(())
        })?;
        for (state, records, len) in per_state {
            out.push((slots[state as usize], kg_index, records, len));
        }
    }
    Ok(out)
}
