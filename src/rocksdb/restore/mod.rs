//! Opening the RocksDB backend: empty (`new`, `with_memory_budget`, here), or restored from its native
//! incremental checkpoints (here) or from canonical snapshot files (`import`, sorting rows into SST files
//! in `import_rows`), at the same or another parallelism (`docs/lsm.md`, "Restore").

pub(crate) mod import;
pub(crate) mod import_rows;
pub(crate) mod rescale;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use futures::StreamExt;

use crate::error::{Error, Result};
use crate::keyed::backend::StateKey;
use crate::keyed::identity::SubtaskIdentity;
use crate::rocksdb::backend::RocksDbKeyedStateBackend;
use crate::rocksdb::config::RocksDbConfig;
use crate::rocksdb::instance::{InstanceDir, remove_dir_if_exists};
use crate::rocksdb::memory::MemoryBudget;
use crate::rocksdb::restore::import::import_canonical;
use crate::rocksdb::snapshot::Checkpoints;
use crate::rocksdb::snapshot::upload::CURRENT;
use crate::rocksdb::snapshot::upload::DiffBase;
use crate::snapshot::handle::{FileScope, HandleFormat, KeyedStateHandle};
use crate::snapshot::restore_mode::RestoreMode;
use crate::snapshot::result::RestoreSources;
use crate::snapshot_io::load::load_handle;
use crate::snapshot_io::local_copy::{LocalCopies, NotLocal};
use crate::storage::CheckpointStorage;
use crate::storage::transfer::{Transferred, download_file};

fn io_error(path: &Path, e: std::io::Error) -> Error {
    Error::local(path.display().to_string(), e)
}

/// Puts every file of `handle` into the new directory `dir`, in parallel, checking sizes and CRC32s:
/// from its local copy when `local` has an intact one (local recovery), else downloaded. Returns where
/// each came from.
async fn download(
    storage: &CheckpointStorage,
    handle: &KeyedStateHandle,
    dir: &Path,
    concurrency: usize,
    local: Option<&LocalCopies>,
) -> Result<RestoreSources> {
    remove_dir_if_exists(dir)?;
    std::fs::create_dir_all(dir).map_err(|e| io_error(dir, e))?;
    let mut seen = std::collections::HashSet::new();
    for f in &handle.files {
        let ok = !f.local_name.is_empty()
            && !f.local_name.contains(['/', '\\'])
            && f.local_name != "."
            && f.local_name != ".."
            && seen.insert(f.local_name.as_str());
        if !ok {
            return Err(Error::corrupt(
                storage.path(&f.path),
                format!(
                    "bad or repeated local file name `{}` in the handle",
                    f.local_name
                ),
            ));
        }
    }
    let results: Vec<Result<(bool, Option<NotLocal>)>> = futures::stream::iter(&handle.files)
        .map(|f| async move {
            let expected = Transferred {
                size_bytes: f.size_bytes,
                crc32: f.crc32,
            };
            // SSTs are immutable in RocksDB too: a hard link is safe. Other files are copied (RocksDB
            // appends to a MANIFEST it opens).
            let link = f.local_name.ends_with(".sst");
            let target = dir.join(&f.local_name);
            let fallback = match local {
                None => None,
                Some(local) => {
                    let (copy, to) = (local.file(storage, handle, f), target.clone());
                    let found = tokio::task::spawn_blocking(move || copy.restore_to(&to, link))
                        .await
                        .map_err(|e| Error::local(target.display(), e))?;
                    match found {
                        Ok(()) => return Ok((true, None)),
                        Err(why) => Some(why),
                    }
                }
            };
            download_file(storage, &f.path, &target, expected, link).await?;
            Ok((false, fallback))
        })
        .buffer_unordered(concurrency)
        .collect()
        .await;
    if !handle.files.iter().any(|f| f.local_name == CURRENT) {
        write_current(storage, handle, dir)?;
    }
    let mut sources = RestoreSources::default();
    for (r, f) in results.into_iter().zip(&handle.files) {
        let (was_local, fallback) = r?;
        if was_local {
            sources.local(f.size_bytes);
        } else {
            sources.remote(f.size_bytes);
        }
        if let Some(why) = fallback {
            sources.fell_back(&f.path, why);
        }
    }
    Ok(sources)
}

/// Writes RocksDB's `CURRENT` file into `dir`, naming the one MANIFEST of `handle`: checkpoints do not
/// upload it (`rocksdb/snapshot/upload.rs`); those written before list it, and keep theirs.
///
/// # Errors
/// [`Error::Corrupt`] naming the handle's first file if the handle lists no MANIFEST or several;
/// [`Error::Local`] if the file cannot be written.
fn write_current(storage: &CheckpointStorage, handle: &KeyedStateHandle, dir: &Path) -> Result<()> {
    let manifests: Vec<&str> = (handle.files.iter())
        .map(|f| f.local_name.as_str())
        .filter(|name| name.starts_with("MANIFEST-"))
        .collect();
    let [manifest] = manifests.as_slice() else {
        let path = handle
            .files
            .first()
            .map_or(String::new(), |f| storage.path(&f.path).to_string());
        return Err(Error::corrupt(
            path,
            format!(
                "a native checkpoint without CURRENT lists {} MANIFEST files, not one (backend {}, \
                 checkpoint {})",
                manifests.len(),
                handle.backend_id,
                handle.checkpoint_id
            ),
        ));
    };
    let path = dir.join(CURRENT);
    std::fs::write(&path, format!("{manifest}\n")).map_err(|e| io_error(&path, e))
}

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
        Self::open_db(identity, config, instance, budget)
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
            let mut backend = Self::open_db(identity, config, instance, budget)?;
            backend.checkpoints =
                Checkpoints::restored(id, restored_id, None, local, RestoreSources::default());
            return Ok(backend);
        };
        let db_dir = instance.db();
        let local = config.local_recovery_dir.clone().map(LocalCopies::new);
        // Every handle's files at once: the first into the database directory, the others beside it.
        let dirs: Vec<PathBuf> = std::iter::once(db_dir.clone())
            .chain((0..rest.len()).map(|i| instance.path().join(format!("restore-{i}"))))
            .collect();
        let downloads = overlapping.iter().zip(&dirs).map(|(handle, dir)| {
            download(
                storage,
                handle,
                dir,
                config.transfer_concurrency,
                local.as_ref(),
            )
        });
        let mut sources = RestoreSources::default();
        for downloaded in futures::future::try_join_all(downloads).await? {
            sources.merge(&downloaded);
        }
        let keep_identity =
            mode == RestoreMode::Claim && rest.is_empty() && first.key_groups == owned;
        let backend_id = if keep_identity {
            first.backend_id.clone()
        } else {
            storage.new_backend_id(identity.operator_id(), identity.subtask_index())
        };
        let max_parallelism = identity.max_parallelism();
        let mut backend = Self::open_db(identity, config.clone(), instance, budget)
            .map_err(|e| corrupt_if_db(e, storage, first))?;
        if first.key_groups != owned {
            // Each handle gives only the key groups it was written for.
            let keep = owned.intersection(&first.key_groups);
            rescale::clip(&backend.db, &backend.states, keep, max_parallelism)?;
        }
        for (other, dir) in rest.iter().zip(&dirs[1..]) {
            let taken = rescale::take_key_groups(
                &mut backend.states,
                &mut backend.db,
                &config,
                dir,
                owned.intersection(&other.key_groups),
                max_parallelism,
                &|e| corrupt_if_db(e, storage, other),
            );
            remove_dir_if_exists(dir)?;
            taken?;
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
        let mut backend = Self::open_db(identity, config, instance, budget)?;
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
