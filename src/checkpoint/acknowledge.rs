//! Acknowledgements at the coordinator and the completion point of a checkpoint (`docs/protocol.md`,
//! "Acknowledgements are identified and idempotent" and "Completion point": invariants P2, P3, P4).

use bytes::Bytes;

use crate::checkpoint::answers::{Acknowledgement, CheckpointStats, Declined, Discarded};
use crate::checkpoint::coordinator::CheckpointCoordinator;
use crate::checkpoint::fence::FenceCheck;
use crate::checkpoint::pending::{Outcome, TaskKey};
use crate::error::{Error, Result};
use crate::format::metadata;
use crate::snapshot::handle::{CheckpointMetadata, FileScope, SnapshotKind, TaskStateSnapshot};
use crate::snapshot::layout::{METADATA_FILE, STATS_FILE, checkpoint_dir, savepoint_dir};
use crate::snapshot::result::SnapshotMetrics;
use crate::snapshot::validate::check_partition;
use crate::storage::{CheckpointStorage, Created};

impl CheckpointCoordinator {
    /// Task `task` (its operator id and subtask index) finished its part of `checkpoint_id`. When every
    /// task of the job acknowledged, the checkpoint is checked, the fence checked, its metadata written
    /// (create-if-absent), and it completes. Every normal outcome is an [`Acknowledgement`]: `Pending`,
    /// `Duplicate` (a repeat of an accepted acknowledgement, which changes nothing), `Completed`,
    /// `Declined` (the checkpoint ended without completing) or `Discarded` (this acknowledgement was not
    /// taken). Checkpoints found expired meanwhile are aborted and reported later
    /// ([`CheckpointCoordinator::take_aborted`]).
    ///
    /// # Errors
    /// - [`Error::InvalidArgument`]: the task is not one of the job's, carries keyed state its operator
    ///   does not keep (or none where it must), or its handle names another checkpoint or operator.
    ///   Nothing is deleted.
    /// - Storage errors while writing the metadata: the outcome is uncertain and nothing is deleted
    ///   (`docs/protocol.md`, "Completion point"); the engine notifies nothing for this checkpoint.
    pub async fn acknowledge(
        &mut self,
        checkpoint_id: u64,
        task: TaskStateSnapshot,
        metrics: Option<SnapshotMetrics>,
    ) -> Result<Acknowledgement> {
        self.config.check_task(&task)?;
        if let Some(h) = &task.keyed_state
            && (h.checkpoint_id != checkpoint_id || h.operator_id != task.operator_id)
        {
            return Err(Error::InvalidArgument(format!(
                "acknowledgement of checkpoint {checkpoint_id} by operator `{}` carries a state handle of \
                 checkpoint {} of operator `{}`",
                task.operator_id, h.checkpoint_id, h.operator_id
            )));
        }
        let key: TaskKey = (task.operator_id.clone(), task.subtask_index);
        let expected = self.config.expected_tasks();
        // An acknowledgement after the timeout finds its checkpoint aborted (a late acknowledgement).
        self.expire_overdue().await;
        let Some(pending) = self.pending.get_mut(&checkpoint_id) else {
            return Ok(self.late_acknowledgement(checkpoint_id, task).await);
        };
        if let Some((accepted, _)) = pending.acks.get(&key) {
            if *accepted == task {
                return Ok(Acknowledgement::Duplicate);
            }
            let accepted = accepted.clone();
            let _ = self
                .attempts
                .discard_own_uploads(
                    self.store.referenced_paths(),
                    checkpoint_id,
                    [&task],
                    Some(&accepted),
                )
                .await;
            return Ok(Acknowledgement::Discarded(Discarded::AlreadyAcknowledged));
        }
        pending.acks.insert(key, (task, metrics));
        if pending.acks.len() < expected {
            return Ok(Acknowledgement::Pending {
                remaining: expected - pending.acks.len(),
            });
        }
        self.complete(checkpoint_id).await
    }

    /// An acknowledgement of a checkpoint that is not pending (`docs/protocol.md`, table).
    async fn late_acknowledgement(
        &mut self,
        checkpoint_id: u64,
        task: TaskStateSnapshot,
    ) -> Acknowledgement {
        if let Some(meta) = self.store.get(checkpoint_id) {
            if meta.task(&task.operator_id, task.subtask_index) == Some(&task) {
                return Acknowledgement::Duplicate;
            }
            let _ = self
                .attempts
                .discard_own_uploads(self.store.referenced_paths(), checkpoint_id, [&task], None)
                .await;
            return Acknowledgement::Discarded(Discarded::CompletedWithout);
        }
        match self.outcomes.get(checkpoint_id) {
            // Completed and since subsumed: whatever it was, nothing of it may be deleted here.
            Some(Outcome::Completed) => Acknowledgement::Duplicate,
            Some(Outcome::Aborted) => {
                let _ = self
                    .attempts
                    .discard_own_uploads(
                        self.store.referenced_paths(),
                        checkpoint_id,
                        [&task],
                        None,
                    )
                    .await;
                Acknowledgement::Discarded(Discarded::Aborted)
            }
            // Another writer's metadata, or maybe ours: nothing may be deleted.
            Some(Outcome::LostRace | Outcome::Uncertain) | None => {
                Acknowledgement::Discarded(Discarded::Unknown)
            }
        }
    }

    /// Every task acknowledged `checkpoint_id`: check it, check the fence, write its metadata, add it to
    /// the store.
    async fn complete(&mut self, checkpoint_id: u64) -> Result<Acknowledgement> {
        let Some(pending) = self.pending.remove(&checkpoint_id) else {
            return Err(Error::IllegalState(format!(
                "checkpoint {checkpoint_id} is not pending"
            )));
        };
        let mut tasks = Vec::with_capacity(pending.acks.len());
        let mut all_metrics = Vec::new();
        for (_, (task, metrics)) in pending.acks {
            tasks.push(task);
            all_metrics.extend(metrics);
        }
        let meta = CheckpointMetadata {
            checkpoint_id,
            timestamp_ms: pending.timestamp_ms,
            kind: if pending.savepoint.is_some() {
                SnapshotKind::Savepoint
            } else {
                SnapshotKind::Checkpoint
            },
            generation: self.fence.generation(),
            tasks,
        };
        if let Some(target) = pending.savepoint {
            return self.complete_savepoint(meta, target, &all_metrics).await;
        }
        let bytes = match self.check_completion(&meta) {
            Ok(bytes) => bytes,
            Err(declined) => {
                tracing::warn!(checkpoint_id, ?declined, "declining checkpoint");
                self.outcomes.set(checkpoint_id, Outcome::Aborted);
                let _ = self
                    .attempts
                    .discard_own_uploads(
                        self.store.referenced_paths(),
                        checkpoint_id,
                        &meta.tasks,
                        None,
                    )
                    .await;
                let _ = self.attempts.discard_private_dir(checkpoint_id).await;
                return Ok(Acknowledgement::Declined(declined));
            }
        };
        if let Some(declined) = self.fence_before_writing(checkpoint_id).await {
            return Ok(Acknowledgement::Declined(declined));
        }
        let relative = format!("{}/{METADATA_FILE}", checkpoint_dir(checkpoint_id));
        let written = match self.storage.put_if_absent(&relative, bytes.clone()).await {
            Ok(created) => Ok(created),
            // The write may have taken effect: read back before deciding anything.
            Err(e) => match self.storage.read(&relative).await {
                Ok(found) if found == bytes => Ok(Created::Yes),
                Ok(_) => Ok(Created::Conflict),
                Err(_) => Err(e),
            },
        };
        match written {
            Ok(Created::Yes) => Ok(Acknowledgement::Completed(Box::new(
                self.completed(meta, &all_metrics).await,
            ))),
            Ok(Created::Conflict) => Ok(self.lost_race(meta).await),
            Err(e) => {
                tracing::warn!(checkpoint_id, error = %e, "metadata write failed; the checkpoint may exist, nothing is deleted");
                self.outcomes.set(checkpoint_id, Outcome::Uncertain);
                Err(e)
            }
        }
    }

    /// The fence check right before a completion writes: `None` if the metadata may be written; else the
    /// checkpoint is declined and nothing is written or deleted (the sweep collects its uploads).
    pub(super) async fn fence_before_writing(&mut self, checkpoint_id: u64) -> Option<Declined> {
        let declined = match self.fence.check().await {
            FenceCheck::Holds => return None,
            FenceCheck::Fenced { newer } => {
                self.fenced_by = Some(newer);
                Declined::Fenced { newer }
            }
            FenceCheck::Unknown(e) => Declined::FenceUnknown(e.to_string()),
        };
        tracing::warn!(checkpoint_id, ?declined, "not writing the metadata");
        self.outcomes.set(checkpoint_id, Outcome::Aborted);
        Some(declined)
    }

    /// Each operator's keyed state handles in `meta` partition its key groups (checkpoints and savepoints).
    pub(super) fn check_partitions(&self, meta: &CheckpointMetadata) -> Result<(), Declined> {
        for op in &self.config.operators {
            let handles: Vec<_> = meta
                .tasks
                .iter()
                .filter(|t| t.operator_id == op.operator_id)
                .filter_map(|t| t.keyed_state.as_ref())
                .collect();
            if op.keyed && handles.is_empty() {
                return Err(Declined::Inconsistent(format!(
                    "keyed operator `{}` has no keyed state in checkpoint {}",
                    op.operator_id, meta.checkpoint_id
                )));
            }
            check_partition(&op.operator_id, &handles)
                .map_err(|e| Declined::Inconsistent(e.to_string()))?;
        }
        Ok(())
    }

    /// The checks before a checkpoint may complete; returns its encoded metadata.
    fn check_completion(&self, meta: &CheckpointMetadata) -> Result<Bytes, Declined> {
        self.check_partitions(meta)?;
        let unavailable = self.store.unavailable_files(meta);
        if !unavailable.is_empty() {
            return Err(Declined::UnavailableFiles(unavailable));
        }
        metadata::encode(meta)
            .map(Bytes::from)
            .map_err(|e| Declined::Inconsistent(e.to_string()))
    }

    /// The metadata of `meta` is durable: the checkpoint is complete, whatever happens next.
    async fn completed(
        &mut self,
        meta: CheckpointMetadata,
        metrics: &[SnapshotMetrics],
    ) -> CheckpointStats {
        let checkpoint_id = meta.checkpoint_id;
        self.outcomes.set(checkpoint_id, Outcome::Completed);
        let mut stats = CheckpointStats::from_metrics(checkpoint_id, metrics.iter());
        let dir = checkpoint_dir(checkpoint_id);
        if !metrics.is_empty()
            && let Err(e) = self
                .storage
                .put_if_absent(&format!("{dir}/{STATS_FILE}"), stats.to_stats_file())
                .await
        {
            stats
                .cleanup_warnings
                .push(format!("writing {dir}/{STATS_FILE} failed: {e}"));
        }
        if let Err(e) = self.storage.sync_local_dir(&dir).await {
            stats
                .cleanup_warnings
                .push(format!("syncing {dir} failed: {e}"));
        }
        let (pending, outcomes) = (&self.pending, &self.outcomes);
        let own = |n: u64| pending.contains_key(&n) || outcomes.settled(n);
        let added = self.store.add(meta, own).await;
        if let Some(newer) = added.fenced {
            self.fenced_by = Some(newer);
            stats.cleanup_warnings.push(format!(
                "a newer coordinator of this job exists (generation {newer}): this one (generation {}) \
                 deletes nothing and triggers no more checkpoints",
                self.fence.generation()
            ));
        }
        stats.subsumed = added.subsumed;
        stats.registry = added.registry;
        stats.cleanup_warnings.extend(added.warnings);
        // Older pending checkpoints are aborted, as Flink's coordinator does; savepoints are not
        // checkpoints and are never subsumed (they end by completion, abort or timeout).
        let older: Vec<u64> = self
            .pending
            .range(..checkpoint_id)
            .filter(|(_, p)| p.savepoint.is_none())
            .map(|(id, _)| *id)
            .collect();
        for id in older {
            self.expire(id).await;
        }
        stats.aborted_pending = self.outcomes.take_unreported();
        for warning in &stats.cleanup_warnings {
            tracing::warn!(checkpoint_id, warning = %warning, "clean-up after a completed checkpoint");
        }
        stats
    }

    /// Another writer created `_metadata` of `meta`'s checkpoint first: protect the winner, delete only
    /// what this coordinator's tasks uploaded that the winner does not use. If the winner cannot be read
    /// now, nothing is deleted and its directory is read again by every refresh and sweep.
    async fn lost_race(&mut self, meta: CheckpointMetadata) -> Acknowledgement {
        let checkpoint_id = meta.checkpoint_id;
        self.outcomes.set(checkpoint_id, Outcome::LostRace);
        if let Ok(winner) = self.storage.read_checkpoint_metadata(checkpoint_id).await
            && winner.checkpoint_id == checkpoint_id
        {
            self.store.adopt(winner);
            self.outcomes.set(checkpoint_id, Outcome::Aborted);
            let _ = self
                .attempts
                .discard_own_uploads(
                    self.store.referenced_paths(),
                    checkpoint_id,
                    &meta.tasks,
                    None,
                )
                .await;
        }
        Acknowledgement::Declined(Declined::LostRace)
    }

    /// Every task acknowledged savepoint `meta`: check it, check the fence, write its metadata into
    /// `target`.
    pub(super) async fn complete_savepoint(
        &mut self,
        meta: CheckpointMetadata,
        target: CheckpointStorage,
        metrics: &[SnapshotMetrics],
    ) -> Result<Acknowledgement> {
        let savepoint_id = meta.checkpoint_id;
        debug_assert_eq!(meta.kind, SnapshotKind::Savepoint);
        let bytes = match self.check_savepoint(&meta) {
            Ok(bytes) => bytes,
            Err(declined) => {
                tracing::warn!(savepoint_id, ?declined, "declining savepoint");
                self.outcomes.set(savepoint_id, Outcome::Aborted);
                let _ = self.attempts.discard_private_dir(savepoint_id).await;
                return Ok(Acknowledgement::Declined(declined));
            }
        };
        if let Some(declined) = self.fence_before_writing(savepoint_id).await {
            return Ok(Acknowledgement::Declined(declined));
        }
        let relative = format!("{}/{METADATA_FILE}", savepoint_dir(savepoint_id));
        let written = match target.put_if_absent(&relative, bytes.clone()).await {
            Ok(created) => Ok(created),
            // The write may have taken effect: read back before deciding anything.
            Err(e) => match target.read(&relative).await {
                Ok(found) if found == bytes => Ok(Created::Yes),
                Ok(_) => Ok(Created::Conflict),
                Err(_) => Err(e),
            },
        };
        match written {
            Ok(Created::Yes) => {
                self.outcomes.set(savepoint_id, Outcome::Completed);
                let mut stats = CheckpointStats::from_metrics(savepoint_id, metrics.iter());
                let dir = savepoint_dir(savepoint_id);
                if let Err(e) = target.sync_local_dir(&dir).await {
                    stats
                        .cleanup_warnings
                        .push(format!("syncing {dir} failed: {e}"));
                }
                stats.aborted_pending = self.outcomes.take_unreported();
                Ok(Acknowledgement::Completed(Box::new(stats)))
            }
            Ok(Created::Conflict) => {
                // The id is reserved in the target, so another writer's metadata here was written without
                // a reservation (another job's savepoint): nothing of it may be deleted.
                self.outcomes.set(savepoint_id, Outcome::Aborted);
                Ok(Acknowledgement::Declined(Declined::TargetTaken))
            }
            Err(e) => {
                tracing::warn!(savepoint_id, error = %e, "savepoint metadata write failed; it may exist, nothing is deleted");
                self.outcomes.set(savepoint_id, Outcome::Uncertain);
                Err(e)
            }
        }
    }

    /// A savepoint's keyed state partitions each operator's key groups, and every file is its own: private,
    /// uploaded by it, under `savepoints/sp-<id>/` (self-contained). Returns the encoded metadata.
    fn check_savepoint(&self, meta: &CheckpointMetadata) -> Result<Bytes, Declined> {
        self.check_partitions(meta)?;
        let dir = format!("{}/", savepoint_dir(meta.checkpoint_id));
        if let Some(f) = meta.files().find(|f| {
            f.scope != FileScope::Private
                || f.created_by != meta.checkpoint_id
                || !f.path.starts_with(&dir)
        }) {
            return Err(Declined::Inconsistent(format!(
                "savepoint {} refers to {} ({:?}, uploaded by {}): a savepoint holds only private files \
                 of its own directory (was the snapshot taken with `savepoint`?)",
                meta.checkpoint_id, f.path, f.scope, f.created_by
            )));
        }
        metadata::encode(meta).map(Bytes::from).map_err(|e| {
            Declined::Inconsistent(format!(
                "savepoint {} cannot be written: {e}",
                meta.checkpoint_id
            ))
        })
    }
}
