//! The checkpoint coordinator: triggers checkpoints under durably reserved ids, collects one
//! acknowledgement per task, writes the metadata last and atomically, and hands completed checkpoints to
//! the store (as Flink's `CheckpointCoordinator`, for an engine embedding this crate). Every step's
//! behaviour when retried, duplicated, late or cut off is `docs/protocol.md`.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use bytes::Bytes;

use crate::checkpoint::fence::Fence;
use crate::checkpoint::handle::{CheckpointMetadata, SnapshotKind, TaskStateSnapshot};
use crate::checkpoint::pending::{
    Acknowledgement, CheckpointStats, CoordinatorConfig, Outcome, Outcomes, PendingCheckpoint,
    TaskKey,
};
use crate::checkpoint::store::{
    CancellationPolicy, CompletedCheckpointStore, RestoreMode, read_metadata,
};
use crate::checkpoint::validate::check_partition;
use crate::clock::{Clock, SystemClock, random_u64};
use crate::error::{Error, Result};
use crate::format::metadata;
use crate::keyed::backend::SnapshotMetrics;
use crate::storage::{
    CheckpointStorage, Created, METADATA_FILE, STATS_FILE, TRIGGER_MARKER, checkpoint_dir,
};

/// Ids tried by one `trigger` before it gives up (each one taken by another coordinator).
const MAX_RESERVE_ATTEMPTS: usize = 64;

/// Drives checkpoints of one job.
pub struct CheckpointCoordinator {
    pub(super) storage: CheckpointStorage,
    pub(super) store: CompletedCheckpointStore,
    config: CoordinatorConfig,
    pub(super) clock: Arc<dyn Clock>,
    /// Random identity of this coordinator instance, written into the id reservations it makes.
    instance: String,
    /// Its generation among the job's coordinators.
    pub(super) fence: Fence,
    /// A newer coordinator exists: this one triggers nothing more and deletes nothing.
    pub(super) fenced: bool,
    next_id: u64,
    pub(super) pending: BTreeMap<u64, PendingCheckpoint>,
    pub(super) outcomes: Outcomes,
    /// Unreferenced files a sweep saw while checkpoints were pending, with those checkpoints: one of them
    /// may be uploading the file (SlateDB #1758).
    pub(super) orphan_candidates: HashMap<String, Vec<u64>>,
    /// Where the savepoints this coordinator triggered are written, by id (bounded, newest kept): their
    /// clean-up after an abort or a late acknowledgement happens there.
    pub(super) savepoint_targets: BTreeMap<u64, CheckpointStorage>,
}

impl CheckpointCoordinator {
    /// Opens the job's checkpoint storage with the system clock; see
    /// [`CheckpointCoordinator::open_with_clock`].
    ///
    /// # Errors
    /// As [`CheckpointCoordinator::open_with_clock`].
    pub async fn open(storage: CheckpointStorage, config: CoordinatorConfig) -> Result<Self> {
        Self::open_with_clock(storage, config, Arc::new(SystemClock)).await
    }

    /// Opens the job's checkpoint storage: registers a coordinator generation above every earlier one
    /// (from then on older coordinators still running delete nothing: `docs/protocol.md`, "Fencing"),
    /// reads every checkpoint's metadata (the registry is rebuilt from it, FLINK-7268) and continues ids
    /// after the highest `chk-<n>` directory, so an id is never handed out twice. Nothing of a checkpoint
    /// is deleted: leftovers of crashed attempts are the orphan sweep's
    /// ([`CheckpointCoordinator::sweep_orphans`]), which alone can tell them from another coordinator's
    /// uploads in flight. `clock` gives checkpoint timestamps and the sweep's now.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for an invalid `config`; storage errors.
    pub async fn open_with_clock(
        storage: CheckpointStorage,
        config: CoordinatorConfig,
        clock: Arc<dyn Clock>,
    ) -> Result<Self> {
        config.validate()?;
        let instance = format!("{:016x}", random_u64());
        // The generation first, then the reading: a coordinator of an older generation that deletes after
        // this reading checks the fence between a checkpoint's metadata and its files, and stops.
        let fence = Fence::register(&storage, &instance).await?;
        let mut store =
            CompletedCheckpointStore::open(storage.clone(), config.retained_checkpoints).await?;
        store.set_fence(fence.clone());
        fence.retire_older().await;
        let next_id = storage
            .list_checkpoint_dirs()
            .await?
            .last()
            .map_or(1, |last| last + 1);
        Ok(CheckpointCoordinator {
            storage,
            store,
            config,
            clock,
            instance,
            fence,
            fenced: false,
            next_id,
            pending: BTreeMap::new(),
            outcomes: Outcomes::default(),
            orphan_candidates: HashMap::new(),
            savepoint_targets: BTreeMap::new(),
        })
    }

    /// Tells the coordinator the job was restored from checkpoint `checkpoint_id` in `mode`. Ids continue
    /// above it (as Flink sets its checkpoint id counter after a restore; restored backends refuse
    /// snapshot ids up to it). With [`RestoreMode::NoClaim`] a checkpoint in this job's storage is pinned:
    /// it and its files are never deleted by the job (FLINK-26985), and it stays restorable. With
    /// [`RestoreMode::Claim`] nothing else changes. A checkpoint of another job's storage is never touched.
    ///
    /// # Errors
    /// Storage errors while writing the pin marker.
    pub async fn restored_from(&mut self, checkpoint_id: u64, mode: RestoreMode) -> Result<()> {
        self.next_id = self.next_id.max(checkpoint_id.saturating_add(1));
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

    /// The settings the coordinator runs with.
    pub fn config(&self) -> &CoordinatorConfig {
        &self.config
    }

    /// Whether a coordinator of a newer generation exists (found by a completion or a sweep): this one
    /// then triggers no more checkpoints and deletes nothing; the engine should stop it.
    pub fn is_fenced(&self) -> bool {
        self.fenced
    }

    /// Ids of checkpoints triggered but neither completed nor aborted, ascending.
    pub fn pending(&self) -> Vec<u64> {
        self.pending.keys().copied().collect()
    }

    /// Starts a checkpoint (the engine injects its barrier) and returns its id.
    ///
    /// The id is reserved durably first: it is above every `chk-<n>` directory in storage, and
    /// `chk-<id>/_trigger` is created if absent, naming this coordinator. An id another coordinator
    /// reserved is skipped, and an id whose reservation failed is never handed out by this instance
    /// either, so ids never repeat, across restarts and between two coordinators of one job.
    ///
    /// # Errors
    /// [`Error::IllegalState`] once the coordinator is fenced ([`CheckpointCoordinator::is_fenced`]);
    /// storage errors while listing or reserving (a failed reservation skips its id; calling again tries
    /// the next one);
    /// [`Error::IllegalState`] if 64 consecutive ids were taken by other coordinators.
    pub async fn trigger(&mut self) -> Result<u64> {
        self.reserve(None).await
    }

    /// Reserves the next id (see [`CheckpointCoordinator::trigger`]) for a checkpoint, or for a savepoint
    /// into `savepoint_target`, and makes it pending.
    pub(super) async fn reserve(
        &mut self,
        savepoint_target: Option<CheckpointStorage>,
    ) -> Result<u64> {
        if self.fenced {
            return Err(Error::IllegalState(format!(
                "a newer coordinator of this job exists (this one is generation {}): stop this one",
                self.fence.generation()
            )));
        }
        self.abort_expired().await;
        // A reservation protects an id only while its marker exists, and subsumption deletes a
        // checkpoint's directory with it: never go below the highest directory in storage (the id
        // watermark, which nothing deletes), or a coordinator that fell behind (an old leader) would
        // reserve an id again (found by the simulation, seed 367).
        if let Some(highest) = self.storage.list_checkpoint_dirs().await?.last() {
            self.next_id = self.next_id.max(highest + 1);
        }
        for _ in 0..MAX_RESERVE_ATTEMPTS {
            let id = self.next_id;
            self.next_id += 1;
            let marker = format!("{}/{TRIGGER_MARKER}", checkpoint_dir(id));
            let content = Bytes::from(format!(
                "checkpoint {id} reserved by coordinator {}\n",
                self.instance
            ));
            match self.storage.put_if_absent(&marker, content).await? {
                Created::Yes => {
                    if let Some(target) = &savepoint_target {
                        self.remember_savepoint_target(id, target.clone());
                    }
                    self.pending.insert(
                        id,
                        PendingCheckpoint {
                            timestamp_ms: self.clock.now_ms(),
                            acks: BTreeMap::new(),
                            savepoint: savepoint_target,
                        },
                    );
                    return Ok(id);
                }
                Created::Conflict => {
                    tracing::warn!(
                        checkpoint_id = id,
                        "checkpoint id reserved by another coordinator; trying the next one"
                    );
                }
            }
        }
        Err(Error::IllegalState(format!(
            "{MAX_RESERVE_ATTEMPTS} consecutive checkpoint ids were reserved by other coordinators of \
             this job"
        )))
    }

    /// Task `task` (its operator id and subtask index) finished its part of `checkpoint_id`. When every
    /// task of the job acknowledged, the checkpoint is checked, its metadata written (create-if-absent),
    /// and it completes. See [`Acknowledgement`] for the answers; a repeat of an accepted acknowledgement
    /// is [`Acknowledgement::Duplicate`] and changes nothing.
    ///
    /// # Errors
    /// - [`Error::InvalidArgument`]: the task is not one of the job's, or its handle names another
    ///   checkpoint or operator. Nothing is deleted.
    /// - [`Error::IllegalState`]: the task already acknowledged with other content, or the checkpoint was
    ///   aborted, declined, lost the race for its metadata, or is unknown. Only the late task's own
    ///   uploads that nothing references are deleted (none for an unknown checkpoint).
    /// - [`Error::IllegalState`] when the checkpoint is declined at completion (its keyed state does not
    ///   partition the key groups, or it reuses shared files that were deleted): its own uploads are
    ///   deleted.
    /// - Storage errors while writing the metadata: the outcome is uncertain and nothing is deleted
    ///   (`docs/protocol.md`, "Completion point").
    pub async fn acknowledge(
        &mut self,
        checkpoint_id: u64,
        task: TaskStateSnapshot,
        metrics: Option<SnapshotMetrics>,
    ) -> Result<Acknowledgement> {
        if !self.config.has_task(&task.operator_id, task.subtask_index) {
            return Err(Error::InvalidArgument(format!(
                "subtask {} of operator `{}` is not a task of this job",
                task.subtask_index, task.operator_id
            )));
        }
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
        self.abort_expired().await;
        let Some(pending) = self.pending.get_mut(&checkpoint_id) else {
            return self.late_acknowledgement(checkpoint_id, task).await;
        };
        if let Some((accepted, _)) = pending.acks.get(&key) {
            if *accepted == task {
                return Ok(Acknowledgement::Duplicate);
            }
            let accepted = accepted.clone();
            let _ = self
                .discard_own_uploads(checkpoint_id, [&task], Some(&accepted))
                .await;
            return Err(Error::IllegalState(format!(
                "subtask {} of operator `{}` already acknowledged checkpoint {checkpoint_id} with other \
                 state; the second acknowledgement was refused",
                task.subtask_index, task.operator_id
            )));
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
    ) -> Result<Acknowledgement> {
        if let Some(meta) = self.store.get(checkpoint_id) {
            if meta.task(&task.operator_id, task.subtask_index) == Some(&task) {
                return Ok(Acknowledgement::Duplicate);
            }
            let _ = self.discard_own_uploads(checkpoint_id, [&task], None).await;
            return Err(Error::IllegalState(format!(
                "checkpoint {checkpoint_id} completed without this acknowledgement of subtask {} of \
                 operator `{}`; its state was discarded",
                task.subtask_index, task.operator_id
            )));
        }
        match self.outcomes.get(checkpoint_id) {
            // Completed and since subsumed: whatever it was, nothing of it may be deleted here.
            Some(Outcome::Completed) => Ok(Acknowledgement::Duplicate),
            Some(Outcome::Aborted) => {
                let _ = self.discard_own_uploads(checkpoint_id, [&task], None).await;
                Err(Error::IllegalState(format!(
                    "checkpoint {checkpoint_id} was aborted; the late state of subtask {} of operator `{}` \
                     was discarded",
                    task.subtask_index, task.operator_id
                )))
            }
            Some(Outcome::Uncertain) => Err(Error::IllegalState(format!(
                "checkpoint {checkpoint_id} is no longer pending (its metadata write failed); nothing was \
                 deleted"
            ))),
            None => Err(Error::IllegalState(format!(
                "checkpoint {checkpoint_id} is unknown to this coordinator (triggered before a restart, or \
                 never); nothing was deleted, the orphan sweep collects what it left"
            ))),
        }
    }

    /// Every task acknowledged `checkpoint_id`: check it, write its metadata, add it to the store.
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
            tasks,
        };
        if let Some(target) = pending.savepoint {
            return self.complete_savepoint(meta, target, &all_metrics).await;
        }
        let bytes = match self.check_completion(&meta) {
            Ok(bytes) => bytes,
            Err(e) => {
                tracing::warn!(checkpoint_id, error = %e, "declining checkpoint");
                self.outcomes.set(checkpoint_id, Outcome::Aborted);
                let _ = self
                    .discard_own_uploads(checkpoint_id, &meta.tasks, None)
                    .await;
                let _ = self.discard_private_dir(checkpoint_id).await;
                return Err(e);
            }
        };
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
            Ok(Created::Conflict) => Err(self.lost_race(meta).await),
            Err(e) => {
                tracing::warn!(checkpoint_id, error = %e, "metadata write failed; the checkpoint may exist, nothing is deleted");
                self.outcomes.set(checkpoint_id, Outcome::Uncertain);
                Err(e)
            }
        }
    }

    /// Each operator's keyed state handles in `meta` partition its key groups (checkpoints and savepoints).
    pub(super) fn check_partitions(&self, meta: &CheckpointMetadata) -> Result<()> {
        for op in &self.config.operators {
            let handles: Vec<_> = meta
                .tasks
                .iter()
                .filter(|t| t.operator_id == op.operator_id)
                .filter_map(|t| t.keyed_state.as_ref())
                .collect();
            check_partition(&op.operator_id, &handles)?;
        }
        Ok(())
    }

    /// The checks before a checkpoint may complete; returns its encoded metadata.
    fn check_completion(&self, meta: &CheckpointMetadata) -> Result<Bytes> {
        self.check_partitions(meta)?;
        self.store.check_references(meta)?;
        metadata::encode(meta).map(Bytes::from).map_err(|e| {
            Error::IllegalState(format!(
                "checkpoint {} cannot be written: {e}",
                meta.checkpoint_id
            ))
        })
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
        match self.store.add(meta.clone(), own).await {
            Ok(added) => {
                if added.fenced {
                    self.fenced = true;
                    stats.cleanup_warnings.push(format!(
                        "a newer coordinator of this job exists: this one (generation {}) deletes nothing \
                         and triggers no more checkpoints",
                        self.fence.generation()
                    ));
                }
                stats.subsumed = added.subsumed;
                stats.registry = added.registry;
                stats.cleanup_warnings.extend(added.warnings);
            }
            Err(e) => {
                // Not newer than the latest retained one: it exists all the same, so it is protected.
                stats.cleanup_warnings.push(format!(
                    "checkpoint {checkpoint_id} kept out of retention: {e}"
                ));
                self.store.add_foreign(meta);
            }
        }
        let older: Vec<u64> = self
            .pending
            .range(..checkpoint_id)
            .map(|(id, _)| *id)
            .collect();
        for id in &older {
            if let Err(e) = self.abort(*id).await {
                stats.cleanup_warnings.push(format!(
                    "older pending checkpoint {id} aborted, its files left for the orphan sweep: {e}"
                ));
            }
        }
        stats.aborted_pending = older;
        for warning in &stats.cleanup_warnings {
            tracing::warn!(checkpoint_id, warning = %warning, "clean-up after a completed checkpoint");
        }
        stats
    }

    /// Another writer created `_metadata` of `meta`'s checkpoint first: protect the winner, delete only
    /// what this coordinator's tasks uploaded that the winner does not use.
    async fn lost_race(&mut self, meta: CheckpointMetadata) -> Error {
        let checkpoint_id = meta.checkpoint_id;
        self.outcomes.set(checkpoint_id, Outcome::Aborted);
        match read_metadata(&self.storage, checkpoint_id).await {
            Ok(winner) if winner.checkpoint_id == checkpoint_id => {
                self.store.add_foreign(winner);
                let _ = self
                    .discard_own_uploads(checkpoint_id, &meta.tasks, None)
                    .await;
            }
            // Without the winner's file list nothing may be deleted.
            _ => {}
        }
        Error::IllegalState(format!(
            "another coordinator completed checkpoint {checkpoint_id} first; this one deleted only its own \
             uploads"
        ))
    }

    /// Aborts a pending checkpoint (a subtask failed or declined, or it timed out): deletes what its tasks
    /// uploaded and its private files, keeping its id reservation. The engine must then call
    /// `notify_checkpoint_aborted` on every backend. Aborting a checkpoint that is not pending does
    /// nothing (a completed one can never be aborted).
    ///
    /// # Errors
    /// Storage errors while deleting; the checkpoint is aborted regardless and what was not deleted is left
    /// to the orphan sweep.
    pub async fn abort(&mut self, checkpoint_id: u64) -> Result<()> {
        let Some(pending) = self.pending.remove(&checkpoint_id) else {
            return Ok(());
        };
        self.outcomes.set(checkpoint_id, Outcome::Aborted);
        let tasks: Vec<TaskStateSnapshot> = pending.acks.into_values().map(|(t, _)| t).collect();
        let uploads = self.discard_own_uploads(checkpoint_id, &tasks, None).await;
        let private = self.discard_private_dir(checkpoint_id).await;
        uploads.and(private)
    }

    /// Aborts every pending checkpoint triggered at least [`CoordinatorConfig::checkpoint_timeout`] ago by
    /// the coordinator's clock, as Flink's checkpoint canceller, and returns their ids, ascending. The
    /// engine should tell its backends (`notify_checkpoint_aborted`) and may drop their asynchronous
    /// phases; acknowledgements that still arrive are late ones. `trigger` and `acknowledge` call this
    /// first, so an engine that never calls it still never waits on an expired checkpoint; calling it on a
    /// timer frees an expired checkpoint's files without waiting for the next trigger.
    ///
    /// Clean-up errors are logged, not returned: the abort itself is in memory and final, and the orphan
    /// sweep deletes what a failed clean-up left.
    pub async fn abort_expired(&mut self) -> Vec<u64> {
        let now_ms = self.clock.now_ms();
        let timeout_ms =
            u64::try_from(self.config.checkpoint_timeout.as_millis()).unwrap_or(u64::MAX);
        let expired: Vec<u64> = self
            .pending
            .iter()
            .filter(|(_, p)| now_ms.saturating_sub(p.timestamp_ms) >= timeout_ms)
            .map(|(id, _)| *id)
            .collect();
        for &id in &expired {
            tracing::warn!(
                checkpoint_id = id,
                timeout_ms,
                "checkpoint expired before it completed: aborted"
            );
            if let Err(e) = self.abort(id).await {
                tracing::warn!(checkpoint_id = id, error = %e, "clean-up of an expired checkpoint failed; the orphan sweep will delete what it left");
            }
        }
        expired
    }

    /// Stops the coordinator with the job: aborts pending checkpoints, then keeps or deletes the job's
    /// completed ones. With [`CancellationPolicy::DeleteOnCancellation`] the directories of the
    /// checkpoints this coordinator aborted go too, reservations and its generation marker included (the
    /// job's life ends).
    ///
    /// # Errors
    /// Storage errors while deleting.
    pub async fn shutdown(mut self, policy: CancellationPolicy) -> Result<()> {
        let mut first_error = None;
        for id in self.pending() {
            if let Err(e) = self.abort(id).await {
                first_error.get_or_insert(e);
            }
        }
        if policy == CancellationPolicy::DeleteOnCancellation {
            let reserved: Vec<u64> = self
                .storage
                .list_checkpoint_dirs()
                .await?
                .into_iter()
                .filter(|id| self.outcomes.get(*id) == Some(Outcome::Aborted))
                .collect();
            for id in reserved {
                if let Err(e) = self.storage.delete_dir(&checkpoint_dir(id)).await {
                    first_error.get_or_insert(e);
                }
            }
        }
        self.store.shutdown(policy).await?;
        if policy == CancellationPolicy::DeleteOnCancellation {
            // The job's life ends: its generation marker goes too.
            self.fence.retire().await?;
        }
        first_error.map_or(Ok(()), Err)
    }
}
