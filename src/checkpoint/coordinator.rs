//! The checkpoint coordinator: triggers checkpoints, collects the subtasks' acknowledgements, writes the
//! metadata last and atomically, and hands completed checkpoints to the store (as Flink's
//! `CheckpointCoordinator`, for an engine embedding this crate).

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;

use crate::checkpoint::handle::{CheckpointMetadata, SnapshotKind, TaskStateSnapshot};
use crate::checkpoint::store::{
    CancellationPolicy, CompletedCheckpointStore, RegistryStats, RestoreMode, discard,
};
use crate::error::{Error, Result};
use crate::format::metadata;
use crate::keyed::backend::SnapshotMetrics;
use crate::storage::{CheckpointStorage, METADATA_FILE, SHARED_DIR, checkpoint_dir};

/// Settings of a coordinator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CoordinatorConfig {
    /// Subtasks that must acknowledge each checkpoint.
    pub expected_tasks: usize,
    /// Completed checkpoints to keep (Flink's `state.checkpoints.num-retained`, default 1).
    pub retained_checkpoints: usize,
}

/// Figures of one completed checkpoint, summed over its subtasks (durations: the slowest subtask).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckpointStats {
    /// Checkpoint id.
    pub checkpoint_id: u64,
    /// Longest synchronous phase of a subtask.
    pub sync_duration: Duration,
    /// Longest asynchronous phase of a subtask.
    pub async_duration: Duration,
    /// Bytes uploaded by this checkpoint.
    pub checkpointed_bytes: u64,
    /// Bytes of all files the checkpoint references.
    pub full_bytes: u64,
    /// Uncompressed state bytes written.
    pub state_bytes: u64,
    /// Files uploaded.
    pub files_uploaded: u32,
    /// Files reused from earlier checkpoints.
    pub files_reused: u32,
    /// Checkpoints subsumed by this one.
    pub subsumed: Vec<u64>,
    /// Older pending checkpoints aborted because this one completed (as Flink's coordinator does); the
    /// engine must call `notify_checkpoint_aborted` for each on every backend.
    pub aborted_pending: Vec<u64>,
    /// The shared-file registry after the subsumption.
    pub registry: RegistryStats,
}

/// What an orphan sweep found and did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SweepReport {
    /// Files listed under `shared/`.
    pub listed: usize,
    /// Of those, referenced by a retained or pinned checkpoint (kept).
    pub referenced: usize,
    /// Unreferenced, but not for `min_age` yet or possibly uploaded by a checkpoint still pending (kept).
    pub too_young: usize,
    /// Unreferenced for at least `min_age`: deleted (paths relative to the job root).
    pub deleted: Vec<String>,
}

struct Pending {
    timestamp_ms: u64,
    tasks: Vec<TaskStateSnapshot>,
    metrics: Vec<SnapshotMetrics>,
}

/// Drives checkpoints of one job.
pub struct CheckpointCoordinator {
    storage: CheckpointStorage,
    store: CompletedCheckpointStore,
    config: CoordinatorConfig,
    next_id: u64,
    pending: BTreeMap<u64, Pending>,
    /// Shared files seen unreferenced by a sweep: when they were first seen so (SlateDB #204), and the
    /// checkpoints pending at that moment (one of them may be uploading the file).
    orphan_candidates: HashMap<String, (Instant, Vec<u64>)>,
}

impl CheckpointCoordinator {
    /// Opens the job's checkpoint storage. Checkpoint ids continue after the highest one ever started in
    /// storage, so an id is never reused; directories of checkpoints that never completed (no metadata) are
    /// deleted, as nothing can be in flight before the coordinator starts.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for zero expected tasks or retained checkpoints; storage errors.
    pub async fn open(storage: CheckpointStorage, config: CoordinatorConfig) -> Result<Self> {
        if config.expected_tasks == 0 {
            return Err(Error::InvalidArgument(
                "a checkpoint needs at least one task".into(),
            ));
        }
        let store =
            CompletedCheckpointStore::open(storage.clone(), config.retained_checkpoints).await?;
        let dirs = storage.list_checkpoint_dirs().await?;
        for id in &dirs {
            let known = store.get(*id).is_some()
                || store.unreadable().iter().any(|u| u.checkpoint_id == *id);
            if !known {
                tracing::info!(
                    checkpoint_id = id,
                    "deleting files of a checkpoint that never completed"
                );
                storage.delete_dir(&checkpoint_dir(*id)).await?;
            }
        }
        let next_id = dirs.last().map_or(1, |last| last + 1);
        Ok(CheckpointCoordinator {
            storage,
            store,
            config,
            next_id,
            pending: BTreeMap::new(),
            orphan_candidates: HashMap::new(),
        })
    }

    /// Tells the coordinator the job was restored from its own checkpoint `checkpoint_id` in `mode`.
    /// With [`RestoreMode::NoClaim`] the checkpoint is pinned: it and its files are never deleted by the
    /// job (FLINK-26985). With [`RestoreMode::Claim`] nothing changes: the job owns it already.
    ///
    /// # Errors
    /// Storage errors while writing the pin marker.
    pub async fn restored_from(&mut self, checkpoint_id: u64, mode: RestoreMode) -> Result<()> {
        if mode == RestoreMode::NoClaim {
            self.store.pin(checkpoint_id).await?;
        }
        Ok(())
    }

    /// The completed-checkpoint store.
    pub fn store(&self) -> &CompletedCheckpointStore {
        &self.store
    }

    /// The checkpoint storage.
    pub fn storage(&self) -> &CheckpointStorage {
        &self.storage
    }

    /// Ids of checkpoints triggered but neither completed nor aborted.
    pub fn pending(&self) -> Vec<u64> {
        self.pending.keys().copied().collect()
    }

    /// Starts checkpoint `n` (the engine injects barrier `n`); returns its id.
    pub fn trigger(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        let timestamp_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        self.pending.insert(
            id,
            Pending {
                timestamp_ms,
                tasks: Vec::new(),
                metrics: Vec::new(),
            },
        );
        id
    }

    /// A subtask finished its part of `checkpoint_id`. When the last expected subtask acknowledged, the
    /// metadata is written (create-if-absent) and the checkpoint completes: its stats are returned, and the
    /// engine must then call `notify_checkpoint_complete` on every backend.
    ///
    /// # Errors
    /// [`Error::IllegalState`] for an unknown (aborted, subsumed) checkpoint: the task's files are deleted.
    /// Storage errors while writing the metadata: the checkpoint is aborted and its files deleted.
    pub async fn acknowledge(
        &mut self,
        checkpoint_id: u64,
        task: TaskStateSnapshot,
        metrics: Option<SnapshotMetrics>,
    ) -> Result<Option<CheckpointStats>> {
        let Some(pending) = self.pending.get_mut(&checkpoint_id) else {
            for file in task.keyed_state.iter().flat_map(|h| &h.files) {
                if file.created_by == checkpoint_id {
                    self.storage.delete(&file.path).await?;
                }
            }
            return Err(Error::IllegalState(format!(
                "checkpoint {checkpoint_id} is not pending (aborted or unknown); the late state was discarded"
            )));
        };
        pending.tasks.push(task);
        pending.metrics.extend(metrics);
        if pending.tasks.len() < self.config.expected_tasks {
            return Ok(None);
        }
        let Some(pending) = self.pending.remove(&checkpoint_id) else {
            return Ok(None);
        };
        let meta = CheckpointMetadata {
            checkpoint_id,
            timestamp_ms: pending.timestamp_ms,
            kind: SnapshotKind::Checkpoint,
            tasks: pending.tasks,
        };
        if let Err(e) = self.store.check_references(&meta) {
            tracing::warn!(checkpoint_id, error = %e, "declining checkpoint");
            self.discard_uploads(checkpoint_id, &meta.tasks).await?;
            return Err(e);
        }
        let relative = format!("{}/{METADATA_FILE}", checkpoint_dir(checkpoint_id));
        if let Err(e) = self
            .storage
            .put_if_absent(&relative, Bytes::from(metadata::encode(&meta)))
            .await
        {
            // Never completed: delete what it wrote (its metadata may or may not exist).
            let _ = self.discard_uploads(checkpoint_id, &meta.tasks).await;
            return Err(e);
        }
        let (subsumed, registry) = self.store.add(meta).await?;
        let older: Vec<u64> = self
            .pending
            .range(..checkpoint_id)
            .map(|(id, _)| *id)
            .collect();
        for id in &older {
            self.abort(*id).await?;
        }
        let m = &pending.metrics;
        Ok(Some(CheckpointStats {
            checkpoint_id,
            sync_duration: m.iter().map(|m| m.sync_duration).max().unwrap_or_default(),
            async_duration: m.iter().map(|m| m.async_duration).max().unwrap_or_default(),
            checkpointed_bytes: m.iter().map(|m| m.checkpointed_bytes).sum(),
            full_bytes: m.iter().map(|m| m.full_bytes).sum(),
            state_bytes: m.iter().map(|m| m.state_bytes).sum(),
            files_uploaded: m.iter().map(|m| m.files_uploaded).sum(),
            files_reused: m.iter().map(|m| m.files_reused).sum(),
            subsumed,
            aborted_pending: older,
            registry,
        }))
    }

    /// Aborts a pending checkpoint (a subtask failed, or it timed out): deletes what it wrote. The engine
    /// must then call `notify_checkpoint_aborted` on every backend.
    ///
    /// # Errors
    /// Storage errors while deleting.
    pub async fn abort(&mut self, checkpoint_id: u64) -> Result<()> {
        if let Some(pending) = self.pending.remove(&checkpoint_id) {
            self.discard_uploads(checkpoint_id, &pending.tasks).await?;
        }
        Ok(())
    }

    /// Deletes what an incomplete checkpoint wrote: its directory and the shared files its acknowledged
    /// tasks uploaded (FLINK-30461). Files it reused belong to other checkpoints and stay.
    async fn discard_uploads(&self, checkpoint_id: u64, tasks: &[TaskStateSnapshot]) -> Result<()> {
        discard(&self.storage, checkpoint_id).await?;
        for file in tasks
            .iter()
            .filter_map(|t| t.keyed_state.as_ref())
            .flat_map(|h| &h.files)
        {
            if file.created_by == checkpoint_id && !self.store.references(&file.path) {
                self.storage.delete(&file.path).await?;
            }
        }
        Ok(())
    }

    /// Orphan sweep of `shared/`: lists it, then (after listing, so an upload that completes meanwhile is
    /// seen as referenced or young) classifies every file; deletes only files that no retained or pinned
    /// checkpoint references, that were already unreferenced at a sweep at least `min_age` before `now`, and
    /// for which no checkpoint that was pending at that sweep is still pending (it could be uploading the
    /// file: SlateDB #1758). Age counts from when a file was first seen unreferenced, not from when it was
    /// written (SlateDB #204). `min_age` protects uploads this coordinator does not know of (another
    /// coordinator's, or of a checkpoint not yet triggered here), so it should exceed the longest
    /// checkpoint. A restarted coordinator starts with no candidates: its first sweep deletes nothing.
    /// `now` comes from the caller (an injected clock in tests).
    ///
    /// # Errors
    /// Storage errors while listing or deleting (files classified before the error stay candidates).
    pub async fn sweep_orphans(&mut self, min_age: Duration, now: Instant) -> Result<SweepReport> {
        let listed = self.storage.list_files(SHARED_DIR).await?;
        let mut report = SweepReport {
            listed: listed.len(),
            ..SweepReport::default()
        };
        let mut doomed = Vec::new();
        let mut candidates = HashMap::new();
        for file in listed {
            if self.store.references(&file.path) {
                report.referenced += 1;
                continue;
            }
            let (since, pending_then) = self
                .orphan_candidates
                .remove(&file.path)
                .unwrap_or_else(|| (now, self.pending.keys().copied().collect()));
            let old_enough = now.saturating_duration_since(since) >= min_age && since != now;
            let uploader_gone = pending_then.iter().all(|id| !self.pending.contains_key(id));
            if old_enough && uploader_gone {
                doomed.push(file.path);
            } else {
                report.too_young += 1;
                candidates.insert(file.path, (since, pending_then));
            }
        }
        self.orphan_candidates = candidates;
        for path in doomed {
            tracing::info!(path = %path, "orphan sweep: deleting an unreferenced shared file");
            self.storage.delete(&path).await?;
            report.deleted.push(path);
        }
        Ok(report)
    }

    /// Stops the coordinator with the job: aborts pending checkpoints, then keeps or deletes completed ones.
    ///
    /// # Errors
    /// Storage errors while deleting.
    pub async fn shutdown(mut self, policy: CancellationPolicy) -> Result<()> {
        for id in self.pending() {
            self.abort(id).await?;
        }
        self.store.shutdown(policy).await
    }
}
