//! Opening the RocksDB backend: empty (`new`, `with_memory_budget`, here), or restored from its native
//! incremental checkpoints (here) or from canonical snapshot files (`import`, sorting rows into SST files
//! in `import_rows`), at the same or another parallelism (`docs/lsm.md`, "Restore").

pub(crate) mod fetch;
pub(crate) mod import;
pub(crate) mod import_handles;
pub(crate) mod import_rows;
pub(crate) mod rescale;

use std::collections::HashMap;
use std::path::PathBuf;

use crate::error::{Error, Result};
use crate::keyed::backend::StateKey;
use crate::keyed::identity::SubtaskIdentity;
use crate::rocksdb::backend::RocksDbKeyedStateBackend;
use crate::rocksdb::config::RocksDbConfig;
use crate::rocksdb::instance::{InstanceDir, remove_dir_if_exists};
use crate::rocksdb::memory::MemoryBudget;
use crate::rocksdb::options::Memory;
use crate::rocksdb::restore::fetch::Fetch;
use crate::rocksdb::restore::import::import_canonical;
use crate::rocksdb::restore::import_handles::import_handles;
use crate::rocksdb::snapshot::Checkpoints;
use crate::rocksdb::snapshot::upload::DiffBase;
use crate::snapshot::handle::{FileScope, HandleFormat, KeyedStateHandle};
use crate::snapshot::restore_mode::RestoreMode;
use crate::snapshot::result::RestoreSources;
use crate::snapshot_io::load::load_handle;
use crate::snapshot_io::local_copy::LocalCopies;
use crate::storage::CheckpointStorage;

impl<K: StateKey> RocksDbKeyedStateBackend<K> {
    /// An empty backend of subtask `identity`, working in a new directory of its own inside
    /// `config.local_dir` (nothing else there is touched).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] if `config` is invalid;
    /// [`Error::Local`] if the directory or the DB cannot
    /// be created.
    pub fn new(identity: SubtaskIdentity, config: RocksDbConfig) -> Result<Self> {
        Self::create(identity, config, None)
    }

    /// As [`RocksDbKeyedStateBackend::new`], with its memtables and blocks counted against `budget`,
    /// shared with the other backends the engine gives it to (`config.block_cache_bytes` is then unused).
    ///
    /// # Errors
    /// As [`RocksDbKeyedStateBackend::new`].
    pub fn with_memory_budget(
        identity: SubtaskIdentity,
        config: RocksDbConfig,
        budget: &MemoryBudget,
    ) -> Result<Self> {
        Self::create(identity, config, Some(budget))
    }

    /// [`RocksDbKeyedStateBackend::new`], under `budget` if given (the run-time-chosen backend's path).
    pub(crate) fn create(
        identity: SubtaskIdentity,
        config: RocksDbConfig,
        budget: Option<&MemoryBudget>,
    ) -> Result<Self> {
        config.validate()?;
        let instance = InstanceDir::create(&identity, &config)?;
        Self::open_db(identity, config, instance, budget, false)
    }

    /// Restores a backend from the keyed state handles of a checkpoint (all subtasks' handles, or those
    /// that overlap `config.key_groups`), keeping only the owned key groups.
    ///
    /// With one overlapping handle of exactly the owned range and [`RestoreMode::Claim`], the backend keeps the
    /// handle's backend id and reuses its files, so the next checkpoint stays incremental. Otherwise (NO_CLAIM
    /// or a rescale) the next checkpoint uploads every file.
    ///
    /// The backend works in a new directory of its own inside `config.local_dir` and refuses snapshot ids
    /// up to the restored checkpoint's.
    ///
    /// # Errors
    /// - [`Error::InvalidArgument`] if the handles are not one checkpoint's state of this operator with this
    ///   max parallelism covering the owned key groups once (`docs/protocol.md`), or not LSM handles.
    /// - [`Error::NotFound`] if a file is missing; [`Error::Corrupt`] naming the file if its size or CRC32
    ///   differs from the handle, or if RocksDB cannot open the downloaded files.
    /// - [`Error::Storage`] for other storage or local errors.
    ///
    /// On error the local directory may hold partial downloads; the checkpoint itself is never modified.
    pub async fn restore(
        identity: SubtaskIdentity,
        config: RocksDbConfig,
        storage: &CheckpointStorage,
        handles: &[KeyedStateHandle],
        mode: RestoreMode,
    ) -> Result<Self> {
        Self::restore_in(identity, config, None, storage, handles, mode).await
    }

    /// As [`RocksDbKeyedStateBackend::restore`], the restored backend's memtables and blocks counted against
    /// `budget` (as [`RocksDbKeyedStateBackend::with_memory_budget`]).
    ///
    /// # Errors
    /// As [`RocksDbKeyedStateBackend::restore`].
    pub async fn restore_with_memory_budget(
        identity: SubtaskIdentity,
        config: RocksDbConfig,
        budget: &MemoryBudget,
        storage: &CheckpointStorage,
        handles: &[KeyedStateHandle],
        mode: RestoreMode,
    ) -> Result<Self> {
        Self::restore_in(identity, config, Some(budget), storage, handles, mode).await
    }

    /// [`RocksDbKeyedStateBackend::restore`], under `budget` if given (the run-time-chosen backend's path).
    pub(crate) async fn restore_in(
        identity: SubtaskIdentity,
        config: RocksDbConfig,
        budget: Option<&MemoryBudget>,
        storage: &CheckpointStorage,
        handles: &[KeyedStateHandle],
        mode: RestoreMode,
    ) -> Result<Self> {
        config.validate()?;
        let owned = identity.key_groups();
        // Checked before anything is downloaded; the largest overlap first: it becomes the DB, the others
        // are copied in (FLINK-21321).
        let overlapping = crate::snapshot::validate::restore_handles(
            identity.operator_id(),
            identity.max_parallelism(),
            owned,
            handles,
        )?;
        // Keyed files, or heap chains merged into the records of one (both canonical records).
        if !overlapping.is_empty()
            && overlapping
                .iter()
                .all(|h| matches!(h.format, HandleFormat::KeyedFile | HandleFormat::KeyedChain))
        {
            return Self::restore_canonical(
                identity,
                config,
                budget,
                storage,
                &overlapping,
                handles,
            )
            .await;
        }
        for h in &overlapping {
            if h.format == HandleFormat::RocksIncrementalRowsV1 {
                return Err(Error::InvalidArgument(format!(
                    "backend {} wrote checkpoint {} in LSM row format 1; this version reads row format {} \
                     only (restore it with the version that wrote it and take a savepoint)",
                    h.backend_id,
                    h.checkpoint_id,
                    crate::format::lsm_rows::ROW_FORMAT
                )));
            }
            if h.format != HandleFormat::RocksIncremental {
                return Err(Error::InvalidArgument(format!(
                    "the LSM backend restores its own incremental snapshots; backend {} wrote {:?}",
                    h.backend_id, h.format
                )));
            }
        }
        let restored_id = handles.first().map(|h| h.checkpoint_id);
        let instance = InstanceDir::create(&identity, &config)?;
        let Some((first, rest)) = overlapping.split_first() else {
            let id = storage.new_backend_id(identity.operator_id(), identity.subtask_index());
            let local = config.local_recovery_dir.clone().map(LocalCopies::new);
            let mut backend = Self::open_db(identity, config, instance, budget, false)?;
            backend.checkpoints =
                Checkpoints::restored(id, restored_id, None, local, RestoreSources::default());
            return Ok(backend);
        };
        let db_dir = instance.db();
        let local = config.local_recovery_dir.clone().map(LocalCopies::new);
        let fetch = Fetch {
            storage,
            concurrency: config.transfer_concurrency,
            local: local.as_ref(),
        };
        let rescaled = first.key_groups != owned || !rest.is_empty();
        let unreadable = |e, h: &KeyedStateHandle| corrupt_if_db(e, storage, h);
        let restore_dirs: Vec<PathBuf> = (0..overlapping.len())
            .map(|i| instance.path().join(format!("restore-{i}")))
            .collect();
        // A rescale fetches only the files that can hold owned rows, a directory per handle, and
        // builds a new database of them. Otherwise, or when a database reaches beyond the key groups
        // its handle claims, the first handle's files become the database and the others' are fetched
        // whole beside it.
        let partial = if rescaled {
            let memory = Memory::of(&config, budget);
            let dirs = &restore_dirs;
            let fetched =
                (fetch.overlapping(&config, &memory, &overlapping, dirs, owned, &unreadable))
                    .await?;
            fetched.map(|(sources, listed)| (sources, listed, memory))
        } else {
            None
        };
        let (sources, base, takes) = match partial {
            Some((sources, listed, memory)) => {
                // Every handle's needed files imported at once; if RocksDB refuses, a new database
                // takes each handle's files or rows in turn.
                let staging = instance.path().join("import");
                let imported = import_handles(
                    &config,
                    &memory,
                    &overlapping,
                    &restore_dirs,
                    listed,
                    &db_dir,
                    &staging,
                    &unreadable,
                )?;
                let takes: Vec<_> = if imported {
                    for dir in &restore_dirs {
                        remove_dir_if_exists(dir)?;
                    }
                    Vec::new()
                } else {
                    overlapping.iter().copied().zip(&restore_dirs).collect()
                };
                (sources, None, takes)
            }
            None => {
                let dirs = std::iter::once(&db_dir).chain(&restore_dirs);
                let fetches = overlapping
                    .iter()
                    .zip(dirs)
                    .map(|(h, dir)| fetch.all(h, dir));
                let mut sources = RestoreSources::default();
                for fetched in futures::future::try_join_all(fetches).await? {
                    sources.merge(&fetched);
                }
                let takes: Vec<_> = rest.iter().copied().zip(&restore_dirs).collect();
                (sources, Some(first), takes)
            }
        };
        let keep_identity =
            mode == RestoreMode::Claim && rest.is_empty() && first.key_groups == owned;
        let backend_id = if keep_identity {
            first.backend_id.clone()
        } else {
            storage.new_backend_id(identity.operator_id(), identity.subtask_index())
        };
        let max_parallelism = identity.max_parallelism();
        // A rescaled database compacts once clipped (`Db::open`).
        let mut backend = Self::open_db(identity, config.clone(), instance, budget, rescaled)
            .map_err(|e| match base {
                Some(first) => corrupt_if_db(e, storage, first),
                None => e,
            })?;
        if let Some(first) = base
            && rescaled
            && !rescale::holds_only(&backend.db, first.key_groups, max_parallelism)?
        {
            // Rows beyond the key groups its handle claims (hidden by an earlier rescale's range
            // tombstones, say): clipped first, so that no copied row lands under them.
            let keep = owned.intersection(&first.key_groups);
            rescale::clip(&backend.db, &backend.states, keep, max_parallelism)?;
        }
        for (other, dir) in takes {
            let taken = rescale::take_key_groups(
                &mut backend.states,
                &mut backend.db,
                &config,
                dir,
                other,
                owned,
                &|e| corrupt_if_db(e, storage, other),
            );
            remove_dir_if_exists(dir)?;
            taken?;
        }
        if rescaled {
            // Last: the other handles' files came in whole, with their other key groups, and RocksDB
            // ingests another database's files only where nothing (no range tombstone either) is yet.
            rescale::clip(&backend.db, &backend.states, owned, max_parallelism)?;
            backend.db.resume_compactions()?;
        }
        let base = keep_identity.then(|| DiffBase {
            checkpoint_id: first.checkpoint_id,
            storage: storage.clone(),
            confirmed: false,
            shared: first
                .files
                .iter()
                .filter(|f| f.scope == FileScope::Shared)
                .map(|f| (f.local_name.clone(), f.clone()))
                .collect::<HashMap<_, _>>(),
        });
        backend.checkpoints = Checkpoints::restored(backend_id, restored_id, base, local, sources);
        tracing::info!(
            dir = %db_dir.display(),
            handles = overlapping.len(),
            incremental = keep_identity,
            "lsm backend restored"
        );
        Ok(backend)
    }

    /// A new backend holding the owned key groups of canonical snapshot files (`docs/savepoints.md`); its
    /// first checkpoint is a full one.
    async fn restore_canonical(
        identity: SubtaskIdentity,
        config: RocksDbConfig,
        budget: Option<&MemoryBudget>,
        storage: &CheckpointStorage,
        overlapping: &[&KeyedStateHandle],
        handles: &[KeyedStateHandle],
    ) -> Result<Self> {
        let owned = identity.key_groups();
        let local = config.local_recovery_dir.clone().map(LocalCopies::new);
        let loads = overlapping.iter().map(|h| {
            load_handle(
                storage,
                h,
                owned,
                "LSM",
                local.as_ref(),
                config.restore_threads,
            )
        });
        let loaded = futures::future::try_join_all(loads).await?;
        let mut sources = RestoreSources::default();
        for file in &loaded {
            sources.merge(&file.sources);
        }
        let instance = InstanceDir::create(&identity, &config)?;
        let id = storage.new_backend_id(identity.operator_id(), identity.subtask_index());
        let mut backend = Self::open_db(identity, config, instance, budget, false)?;
        backend.checkpoints = Checkpoints::restored(
            id,
            handles.first().map(|h| h.checkpoint_id),
            None,
            local,
            sources,
        );
        import_canonical(
            &mut backend.states,
            &mut backend.db,
            &loaded,
            backend.identity.max_parallelism(),
            backend.config.restore_threads,
        )?;
        tracing::info!(
            handles = overlapping.len(),
            "lsm backend restored from canonical snapshots"
        );
        Ok(backend)
    }
}

/// RocksDB refusing downloaded files that passed their CRC checks means the checkpoint is unusable.
fn corrupt_if_db(e: Error, storage: &CheckpointStorage, handle: &KeyedStateHandle) -> Error {
    match e {
        Error::Local { path, message } => Error::corrupt(
            storage.path(handle.files.first().map_or("", |f| f.path.as_str())),
            format!("RocksDB cannot open the restored files ({path}): {message}"),
        ),
        other => other,
    }
}
