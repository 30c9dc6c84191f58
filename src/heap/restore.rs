//! Restoring a heap backend from keyed snapshot files, at the same or another parallelism.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use crate::error::{Error, Result};
use crate::format::bytes::PutExt;
use crate::format::keyed_file::read as keyed_file;
use crate::format::keyed_file::read::check_key_group;
use crate::heap::backend::HeapKeyedStateBackend;
use crate::heap::checkpoints::HeapCheckpoints;
use crate::heap::config::HeapConfig;
use crate::heap::states::StateTables;
use crate::heap::table::RawTable;
use crate::keyed::backend::StateKey;
use crate::keyed::identity::SubtaskIdentity;
use crate::snapshot::handle::KeyedStateHandle;
use crate::snapshot::restore_mode::RestoreMode;
use crate::snapshot::result::RestoreSources;
use crate::snapshot_io::load::load_handle;
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
    /// snapshot ids up to the restored checkpoint's.
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
        // The first checkpoint after a restore is full and names only files of its own (a new chain with
        // incremental checkpoints): the restored files are never referenced again, so `Claim` and
        // `NoClaim` restore alike (the coordinator's mode decides who may delete them).
        let _ = mode;
        config.validate()?;
        let backend_id = storage.new_backend_id(identity.operator_id(), identity.subtask_index());
        let range = identity.key_groups();
        let relevant = crate::snapshot::validate::restore_handles(
            identity.operator_id(),
            identity.max_parallelism(),
            range,
            handles,
        )?;
        let local = config.local_recovery_dir.clone().map(LocalCopies::new);
        let loads = relevant
            .into_iter()
            .map(|h| load_handle(storage, h, range, "heap", local.as_ref(), true));
        let loaded = futures::future::try_join_all(loads).await?;
        let mut sources = RestoreSources::default();
        for file in &loaded {
            sources.merge(&file.sources);
        }

        // Per state, record bytes per key-group index, only for key groups that have records: a header
        // may name many states, and a dense vector per state and key group would let a small file
        // allocate states x key groups before any record is read.
        let mut raw: Vec<(
            crate::snapshot::state_meta::StateMeta,
            BTreeMap<usize, Vec<u8>>,
            usize,
        )> = Vec::new();
        let mut by_name: HashMap<String, usize> = HashMap::new();
        for file in &loaded {
            let mut slots = Vec::with_capacity(file.header.states.len());
            for meta in &file.header.states {
                let slot = *by_name.entry(meta.name.clone()).or_insert_with(|| {
                    raw.push((meta.clone(), BTreeMap::new(), 0));
                    raw.len() - 1
                });
                if raw[slot].0 != *meta {
                    // Every file is intact (its checksums held): the subtasks wrote the state with
                    // different codecs (a partly upgraded job). Not a corrupt file, so a restore never
                    // falls back over it to an older checkpoint.
                    raw[slot].0.check_compatible(meta).map_err(|e| match e {
                        Error::IncompatibleSchema { state, reason } => Error::IncompatibleSchema {
                            state,
                            reason: format!(
                                "{reason} in another file of the same checkpoint ({})",
                                file.path
                            ),
                        },
                        other => other,
                    })?;
                }
                slots.push(slot);
            }
            for (key_group, bytes) in &file.groups {
                let kg_index = range.index_of(*key_group).ok_or_else(|| {
                    Error::corrupt(&file.path, "key group outside the restore range")
                })?;
                for record in keyed_file::records(bytes, &file.path) {
                    let r = record?;
                    let slot = *slots.get(r.state as usize).ok_or_else(|| {
                        Error::corrupt(&file.path, format!("record of unknown state {}", r.state))
                    })?;
                    check_key_group(r.key, file.header.max_parallelism, *key_group, &file.path)?;
                    let (_, groups, len) = &mut raw[slot];
                    let out = groups.entry(kg_index).or_default();
                    out.put_bytes(r.key);
                    out.put_bytes(r.namespace);
                    out.put_bytes(r.value);
                    *len += 1;
                }
            }
        }
        let mut states = StateTables::new(config.incremental);
        for (meta, groups, len) in raw {
            states.add_restored(RawTable {
                meta,
                groups: Arc::new(groups.into_iter().collect()),
                len,
            });
        }
        let restored_from = handles.first().map(|h| h.checkpoint_id);
        let chain = config.chain_book();
        let checkpoints =
            HeapCheckpoints::restored(backend_id, restored_from, local, sources, chain);
        HeapKeyedStateBackend::restored(identity, config, states, checkpoints)
    }
}
