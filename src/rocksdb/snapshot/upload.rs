//! The asynchronous phase of an LSM checkpoint: diff the native checkpoint's SST files against the diff
//! base, upload the new ones under unique names, reuse the others as placeholders (`docs/lsm.md`).

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use parking_lot::Mutex;

use crate::error::{Error, Result};
use crate::key_group::KeyGroupRange;
use crate::rocksdb::instance::remove_dir_if_exists;
use crate::snapshot::handle::{FileScope, HandleFormat, KeyedStateHandle, StateFile};
use crate::snapshot::layout::{SAVEPOINT_DIR, SHARED_DIR, checkpoint_dir};
use crate::snapshot::result::SavepointFormat;
use crate::snapshot::result::{SnapshotMetrics, SnapshotResult};
use crate::snapshot::sizes::StateSizes;
use crate::snapshot_io::local_copy::LocalCopies;
use crate::storage::CheckpointStorage;
use crate::storage::transfer::upload_file;

/// Files of a checkpoint's asynchronous phase, by local SST name; `None` while it runs.
pub(crate) struct PendingUpload {
    pub(crate) aborted: bool,
    pub(crate) shared: Option<HashMap<String, StateFile>>,
    /// Whether the upload reused files of the diff base (set when it finished).
    pub(crate) reused_base: bool,
    /// Where it uploads: the storage its files live in if it becomes the base.
    pub(crate) storage: CheckpointStorage,
}

/// Checkpoints whose asynchronous phase ran or runs, not yet confirmed or aborted. Shared with the
/// asynchronous phases.
pub(crate) type PendingUploads = Arc<Mutex<BTreeMap<u64, PendingUpload>>>;

/// The diff base: the shared files of the last confirmed checkpoint, by local SST name.
#[derive(Debug, Clone)]
pub(crate) struct DiffBase {
    pub(crate) checkpoint_id: u64,
    pub(crate) shared: HashMap<String, StateFile>,
    /// The storage the files live in: a checkpoint into another storage reuses none of them (a CLAIM
    /// restore from another job's storage, say).
    pub(crate) storage: CheckpointStorage,
    /// Confirmed by a completion notification of this backend's own upload; a base seeded by a restore
    /// is not, and is dropped at the first abort of a checkpoint that reused it (it may be a pinned
    /// checkpoint's, whose files the coordinator never lets a checkpoint reuse).
    pub(crate) confirmed: bool,
}

/// RocksDB's file naming the current MANIFEST, which a checkpoint does not upload
/// (`rocksdb/restore/mod.rs` writes it from the handle's MANIFEST).
pub(crate) const CURRENT: &str = "CURRENT";

/// Whether a native checkpoint's file is shared (uploaded once under a unique name and reused by later
/// checkpoints while its local name and size stay): SSTs, immutable in RocksDB, and OPTIONS files,
/// which RocksDB writes once under a new number whenever the options change (on open, on a new column
/// family) and never modifies. The MANIFEST grows with every flush: private, uploaded every time.
pub(crate) fn is_shared_kind(local_name: &str) -> bool {
    local_name.ends_with(".sst") || local_name.starts_with("OPTIONS-")
}

/// Where a snapshot goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SnapshotTarget {
    /// An incremental checkpoint: SSTs shared, diffed against the base.
    Checkpoint,
    /// A native savepoint: every file uploaded, private, never a base.
    Savepoint,
    /// A canonical savepoint: the rows re-encoded as one keyed snapshot file (`rocksdb/snapshot/canonical.rs`), never a
    /// base.
    CanonicalSavepoint,
}

impl SnapshotTarget {
    /// The target of a savepoint in `format`.
    pub(crate) fn savepoint(format: SavepointFormat) -> Self {
        match format {
            SavepointFormat::Canonical => SnapshotTarget::CanonicalSavepoint,
            SavepointFormat::Native => SnapshotTarget::Savepoint,
        }
    }
}

/// Everything the asynchronous phase needs; owns no reference to the DB.
pub(crate) struct UploadJob {
    pub(crate) checkpoint_id: u64,
    pub(crate) target: SnapshotTarget,
    /// The native checkpoint directory (hard links), removed when the job ends or is dropped.
    pub(crate) local_dir: PathBuf,
    /// Cleans up when the job ends, however it ends (also when its `PendingSnapshot` is dropped).
    pub(crate) _guard: UploadGuard,
    pub(crate) base: Option<DiffBase>,
    pub(crate) pending: PendingUploads,
    pub(crate) storage: CheckpointStorage,
    pub(crate) backend_id: String,
    pub(crate) operator_id: String,
    pub(crate) subtask_index: u32,
    pub(crate) max_parallelism: u32,
    pub(crate) key_groups: KeyGroupRange,
    pub(crate) concurrency: usize,
    /// Each state's and key group's size, as RocksDB estimated them in the synchronous phase.
    pub(crate) sizes: StateSizes,
    /// Where to keep a local copy of the checkpoint (local recovery), if anywhere.
    pub(crate) local: Option<LocalCopies>,
}

/// A file of the native checkpoint and what to do with it.
enum Plan {
    Reuse(StateFile),
    Upload {
        local: PathBuf,
        local_name: String,
        remote: String,
        scope: FileScope,
    },
}

/// Removes the native checkpoint directory (its SSTs are hard links) and, unless the upload finished, the
/// checkpoint's pending entry, when the asynchronous phase ends or its future is dropped before that (a
/// cancelled `PendingSnapshot` leaks neither).
pub(crate) struct UploadGuard {
    pub(crate) dir: PathBuf,
    pub(crate) pending: Option<(PendingUploads, u64)>,
}

impl Drop for UploadGuard {
    fn drop(&mut self) {
        if let Err(e) = remove_dir_if_exists(&self.dir) {
            tracing::warn!(dir = %self.dir.display(), error = %e, "could not remove a native checkpoint directory");
        }
        if let Some((pending, id)) = &self.pending {
            let mut pending = pending.lock();
            if pending.get(id).is_some_and(|p| p.shared.is_none()) {
                pending.remove(id);
            }
        }
    }
}

impl UploadJob {
    pub(crate) async fn run(self, sync_duration: Duration) -> Result<SnapshotResult> {
        self.run_inner(sync_duration).await
    }

    /// Keeps the native checkpoint's `files` as the checkpoint's local copy (hard links, or copies across
    /// file systems), published whole or not at all. A failure is logged, never the checkpoint's: local
    /// recovery is an optimization, checkpoint storage holds the checkpoint.
    async fn keep_local(&self, local: &LocalCopies, files: &[StateFile]) {
        let (local, dir, checkpoint_id) =
            (local.clone(), self.local_dir.clone(), self.checkpoint_id);
        let (backend_id, storage) = (self.backend_id.clone(), self.storage.clone());
        let names: Vec<String> = files.iter().map(|f| f.local_name.clone()).collect();
        let kept = tokio::task::spawn_blocking(move || {
            let writer = local.writer(&storage, &backend_id, checkpoint_id)?;
            for name in &names {
                writer.link_or_copy(&dir.join(name), name)?;
            }
            writer.publish()
        })
        .await;
        match kept {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::warn!(checkpoint_id, error = %e, "lsm backend: no local copy of this checkpoint")
            }
            Err(e) => {
                tracing::warn!(checkpoint_id, error = %e, "lsm backend: no local copy of this checkpoint")
            }
        }
    }

    fn plan(&self) -> Result<Vec<Plan>> {
        let read_dir = std::fs::read_dir(&self.local_dir)
            .map_err(|e| Error::local(self.local_dir.display().to_string(), e))?;
        let nonce = self.storage.next_id();
        let mut entries = Vec::new();
        for entry in read_dir {
            entries.push(entry.map_err(|e| Error::local(self.local_dir.display().to_string(), e))?);
        }
        // In name order: the uploads happen in an order that depends on the files alone.
        entries.sort_by_key(|e| e.file_name());
        let mut plans = Vec::new();
        for entry in entries {
            let local_name = entry.file_name().to_string_lossy().into_owned();
            if local_name == CURRENT {
                // One line naming the MANIFEST, which the handle lists: a restore writes it (one PUT
                // less per checkpoint).
                continue;
            }
            let size = entry.metadata().map(|m| m.len()).unwrap_or(u64::MAX);
            if size == 0 && local_name.ends_with(".log") {
                // The write-ahead log is off: the checkpoint's log file is empty, and RocksDB opens
                // without it (nothing to replay). One PUT less per checkpoint.
                continue;
            }
            let shared = is_shared_kind(&local_name);
            if shared
                && self.target == SnapshotTarget::Checkpoint
                && let Some(reused) = self
                    .base
                    .as_ref()
                    .and_then(|b| b.shared.get(&local_name))
                    .filter(|f| f.size_bytes == size)
            {
                plans.push(Plan::Reuse(reused.clone()));
                continue;
            }
            let (remote, scope) = match (self.target, shared) {
                (SnapshotTarget::Checkpoint, true) => (
                    format!(
                        "{SHARED_DIR}/{}-{}-{nonce:016x}-{local_name}",
                        self.backend_id, self.checkpoint_id
                    ),
                    FileScope::Shared,
                ),
                (SnapshotTarget::Checkpoint, false) => (
                    format!(
                        "{}/{}-{}-{nonce:016x}/{local_name}",
                        checkpoint_dir(self.checkpoint_id),
                        self.operator_id,
                        self.subtask_index
                    ),
                    FileScope::Private,
                ),
                (SnapshotTarget::Savepoint | SnapshotTarget::CanonicalSavepoint, _) => (
                    format!(
                        "{SAVEPOINT_DIR}/sp-{}/{}-{}-{nonce:016x}/{local_name}",
                        self.checkpoint_id, self.operator_id, self.subtask_index
                    ),
                    FileScope::Private,
                ),
            };
            plans.push(Plan::Upload {
                local: entry.path(),
                local_name,
                remote,
                scope,
            });
        }
        Ok(plans)
    }

    async fn run_inner(self, sync_duration: Duration) -> Result<SnapshotResult> {
        let started = Instant::now();
        let plans = match self.plan() {
            Ok(plans) => plans,
            Err(e) => {
                self.pending.lock().remove(&self.checkpoint_id);
                return Err(e);
            }
        };
        let mut files = Vec::with_capacity(plans.len());
        let mut uploads = Vec::new();
        for plan in plans {
            match plan {
                Plan::Reuse(file) => files.push(file),
                Plan::Upload {
                    local,
                    local_name,
                    remote,
                    scope,
                } => uploads.push((local, local_name, remote, scope)),
            }
        }
        let files_reused = files.len() as u32;
        let checkpoint_id = self.checkpoint_id;
        let storage = &self.storage;
        let results: Vec<Result<StateFile>> = futures::stream::iter(uploads)
            .map(|(local, local_name, remote, scope)| async move {
                let t = upload_file(storage, &local, &remote).await?;
                Ok(StateFile {
                    path: remote,
                    scope,
                    size_bytes: t.size_bytes,
                    crc32: t.crc32,
                    created_by: checkpoint_id,
                    local_name,
                })
            })
            .buffer_unordered(self.concurrency)
            .collect()
            .await;
        let mut uploaded = Vec::with_capacity(results.len());
        let mut first_error = None;
        for r in results {
            match r {
                Ok(f) => uploaded.push(f),
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        let aborted = self
            .pending
            .lock()
            .get(&checkpoint_id)
            .is_some_and(|p| p.aborted);
        if first_error.is_some() || aborted {
            // Nothing of a failed or aborted checkpoint stays in storage (FLINK-30461), and it never
            // becomes a diff base.
            self.pending.lock().remove(&checkpoint_id);
            for f in &uploaded {
                if let Err(e) = self.storage.delete(&f.path).await {
                    tracing::warn!(path = %f.path, error = %e, "could not delete an upload of a failed checkpoint; the orphan sweep will");
                }
            }
            return Err(first_error.unwrap_or_else(|| {
                Error::IllegalState(format!(
                    "checkpoint {checkpoint_id} was aborted during its asynchronous phase"
                ))
            }));
        }
        let checkpointed_bytes: u64 = uploaded.iter().map(|f| f.size_bytes).sum();
        let files_uploaded = uploaded.len() as u32;
        files.extend(uploaded);
        files.sort_by(|a, b| a.local_name.cmp(&b.local_name));
        if let Some(local) = &self.local {
            self.keep_local(local, &files).await;
        }
        if self.target == SnapshotTarget::Checkpoint {
            let shared: HashMap<String, StateFile> = files
                .iter()
                .filter(|f| f.scope == FileScope::Shared)
                .map(|f| (f.local_name.clone(), f.clone()))
                .collect();
            if let Some(p) = self.pending.lock().get_mut(&checkpoint_id) {
                p.shared = Some(shared);
                p.reused_base = files_reused > 0;
            }
        }
        let full_bytes: u64 = files.iter().map(|f| f.size_bytes).sum();
        let handle = KeyedStateHandle {
            backend_id: self.backend_id.clone(),
            operator_id: self.operator_id.clone(),
            checkpoint_id,
            max_parallelism: self.max_parallelism,
            key_groups: self.key_groups,
            format: HandleFormat::RocksIncremental,
            files,
        };
        let metrics = SnapshotMetrics {
            sync_duration,
            async_duration: started.elapsed(),
            checkpointed_bytes,
            full_bytes,
            state_bytes: full_bytes,
            entries: self.sizes.states.iter().map(|s| s.entries).sum(),
            files_uploaded,
            files_reused,
            sizes: self.sizes,
        };
        tracing::debug!(checkpoint_id, ?metrics, "lsm snapshot written");
        Ok(SnapshotResult { handle, metrics })
    }
}
