//! The checkpoint coordinator: triggers checkpoints under durably reserved ids, collects one
//! acknowledgement per task (`acknowledge.rs`), writes the metadata last and atomically, and hands
//! completed checkpoints to the store (as Flink's `CheckpointCoordinator`, for an engine embedding this
//! crate). Every step's behaviour when retried, duplicated, late or cut off is `docs/protocol.md`; the
//! faults of real stores, operators and zombie coordinators it answers are `docs/faults.md`.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use crate::checkpoint::config::CoordinatorConfig;
use crate::checkpoint::discard::Attempts;
use crate::checkpoint::fence::{Fence, FenceCheck, NewestGeneration};
use crate::checkpoint::lineage::{LineKind, LineRecord};
use crate::checkpoint::pending::{Outcome, Outcomes, PendingCheckpoint};
use crate::checkpoint::store::{CancellationPolicy, CompletedCheckpointStore};
use crate::checkpoint::sweep::{OrphanSweep, SweepPlan, SweepReport, delete_doomed};
use crate::clock::{Clock, SystemClock};
use crate::error::{Error, ErrorKind, Result};
use crate::snapshot::handle::CheckpointMetadata;
use crate::snapshot::layout::{TRIGGER_MARKER, checkpoint_dir};
use crate::snapshot::restore_mode::RestoreMode;
use crate::storage::probe::probe_conditional_create;
use crate::storage::{CheckpointStorage, Created};

/// Ids tried by one `trigger` before it gives up (each one taken by another coordinator).
const MAX_RESERVE_ATTEMPTS: usize = 64;

/// Drives checkpoints of one job.
pub struct CheckpointCoordinator {
    pub(super) storage: CheckpointStorage,
    pub(super) store: CompletedCheckpointStore,
    pub(super) config: CoordinatorConfig,
    pub(super) clock: Arc<dyn Clock>,
    /// Random identity of this coordinator instance, written into the id reservations it makes.
    pub(super) instance: String,
    /// Its generation among the job's coordinators (a restore registers a new one).
    pub(super) fence: Fence,
    /// The newer generation that fenced this coordinator: it triggers, writes and deletes nothing more.
    pub(super) fenced_by: Option<u64>,
    next_id: u64,
    pub(super) pending: BTreeMap<u64, PendingCheckpoint>,
    pub(super) outcomes: Outcomes,
    /// What the orphan sweep remembers between sweeps.
    pub(super) sweep: OrphanSweep,
    /// Where attempts write, and what an attempt that did not complete leaves, deleted.
    pub(super) attempts: Attempts,
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

    /// Opens the job's checkpoint storage: checks that the store honours create-if-absent (a probe object
    /// created twice), registers a coordinator generation above every earlier one (from then on older
    /// coordinators still running write and delete nothing: `docs/protocol.md`, "Fencing"), reads the
    /// job's lineage and every checkpoint's metadata (the registry is rebuilt from it, FLINK-7268) and
    /// continues ids after the highest `chk-<n>` directory and lineage record, so an id is never handed out
    /// twice. Nothing of a checkpoint is deleted: leftovers of crashed attempts are the orphan sweep's
    /// ([`CheckpointCoordinator::sweep_orphans`]), which alone can tell them from another coordinator's
    /// uploads in flight. `clock` gives checkpoint timestamps and timeouts; ids in names come from the
    /// storage's id source ([`CheckpointStorage::with_id_source`]).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for an invalid `config` or a store without working conditional create;
    /// storage errors.
    pub async fn open_with_clock(
        storage: CheckpointStorage,
        config: CoordinatorConfig,
        clock: Arc<dyn Clock>,
    ) -> Result<Self> {
        config.validate()?;
        let instance = format!("{:016x}", storage.next_id());
        probe_conditional_create(&storage).await?;
        // The generation first, then the reading: a coordinator of an older generation that deletes after
        // this reading checks the fence between a checkpoint's metadata and its files, and stops.
        let fence = Fence::register(&storage, &instance).await?;
        let mut store =
            CompletedCheckpointStore::open(storage.clone(), config.retained_checkpoints).await?;
        store.set_fence(fence.clone());
        fence.retire_older().await;
        let highest = storage.list_checkpoint_dirs().await?.last().copied();
        let next_id = highest.unwrap_or(0).max(store.id_floor()) + 1;
        let attempts = Attempts::new(storage.clone(), instance.clone());
        Ok(CheckpointCoordinator {
            storage,
            store,
            config,
            clock,
            instance,
            fence,
            fenced_by: None,
            next_id,
            pending: BTreeMap::new(),
            outcomes: Outcomes::default(),
            sweep: OrphanSweep::default(),
            attempts,
        })
    }

    /// Tells the coordinator the job was restored from `snapshot` (a checkpoint of this storage, or a
    /// savepoint or checkpoint from elsewhere) in `mode`. A restore starts a new line of the job
    /// (`docs/faults.md`): the coordinator aborts what it has pending (reported by
    /// [`CheckpointCoordinator::take_aborted`]), registers a new generation and writes a lineage record
    /// durably before it returns, so that
    /// - ids continue above the snapshot's, also after a restart (restored backends refuse ids up to it);
    /// - checkpoints of older generations above it (all of them, for a snapshot from elsewhere) are
    ///   abandoned: never restored again (a rollback survives the next failover), subsumed at the next
    ///   completion;
    /// - with [`RestoreMode::NoClaim`], a checkpoint of this storage is pinned: it and its files are never
    ///   deleted by the job (FLINK-26985), nothing reuses its files, and it stays restorable. A pinned
    ///   checkpoint stays pinned when restored again in CLAIM mode.
    ///
    /// The line is recorded before anything else (`docs/protocol.md`, invariant P6).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] if `snapshot` holds state of operators this job does not have (unless
    /// [`CoordinatorConfig::allow_non_restored_state`]); [`Error::Fenced`]; storage errors (calling again
    /// is safe).
    pub async fn restored_from(
        &mut self,
        snapshot: &CheckpointMetadata,
        mode: RestoreMode,
    ) -> Result<()> {
        self.config.check_restorable(snapshot)?;
        self.check_fence().await?;
        let id = snapshot.checkpoint_id;
        for pending in self.pending() {
            self.expire(pending).await;
        }
        self.fence.advance().await?;
        self.fence.retire_older().await;
        let in_storage = self.store.get(id) == Some(snapshot);
        let kind = if in_storage {
            LineKind::Checkpoint
        } else {
            LineKind::External
        };
        self.store
            .record_line(LineRecord {
                generation: self.fence.generation(),
                checkpoint_id: id,
                kind,
            })
            .await?;
        self.next_id = self.next_id.max(id.saturating_add(1));
        if mode == RestoreMode::NoClaim && in_storage {
            self.store.pin(id).await?;
        }
        Ok(())
    }

    /// Checks that this job can take the state of `snapshot` before anything is restored from it: every
    /// operator with state in it is one of the job's, unless
    /// [`CoordinatorConfig::allow_non_restored_state`] (Flink refuses such a restore the same way, so
    /// that a renamed or removed operator never loses its state silently).
    /// [`CheckpointCoordinator::restored_from`] checks it again.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] naming the operators whose state would be dropped.
    pub fn check_restorable(&self, snapshot: &CheckpointMetadata) -> Result<()> {
        self.config.check_restorable(snapshot)
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

    /// This coordinator's generation (it changes when a restore starts a new line).
    pub fn generation(&self) -> u64 {
        self.fence.generation()
    }

    /// Whether a coordinator of a newer generation exists (found by a trigger, a completion or a sweep):
    /// this one then triggers, writes and deletes nothing more; the engine should stop it. A check that
    /// could not list the generations never fences.
    pub fn is_fenced(&self) -> bool {
        self.fenced_by.is_some()
    }

    /// Ids of checkpoints and savepoints triggered but neither completed nor aborted, ascending.
    pub fn pending(&self) -> Vec<u64> {
        self.pending.keys().copied().collect()
    }

    /// Checkpoints this coordinator aborted on its own (timeouts found by `trigger` or `acknowledge`,
    /// older pending checkpoints at a completion, what a restore found pending) that were not reported
    /// yet, ascending; they count as reported from now on. The engine calls `notify_checkpoint_aborted`
    /// for each on every backend. A completion reports them too ([`crate::CheckpointStats::aborted_pending`]).
    pub fn take_aborted(&mut self) -> Vec<u64> {
        self.outcomes.take_unreported()
    }

    /// `Ok` while no newer generation exists; remembers a fence.
    ///
    /// # Errors
    /// [`Error::Fenced`]; a storage error if the generations cannot be listed (nothing changes).
    pub(super) async fn check_fence(&mut self) -> Result<()> {
        if let Some(newer) = self.fenced_by {
            return Err(self.fence.fenced_error(newer));
        }
        match self.fence.check().await {
            FenceCheck::Holds => Ok(()),
            FenceCheck::Fenced { newer } => {
                self.fenced_by = Some(newer);
                Err(self.fence.fenced_error(newer))
            }
            FenceCheck::Unknown(e) => Err(e),
        }
    }

    /// Starts a checkpoint (the engine injects its barrier) and returns its id.
    ///
    /// First the fence: a coordinator of an older generation triggers nothing. Then the id is reserved
    /// durably: it is above every `chk-<n>` directory in storage and every lineage record, and
    /// `chk-<id>/_trigger` is created if absent, naming this coordinator. An id another coordinator reserved
    /// is skipped, and an id whose reservation failed is never handed out by this instance either, so ids
    /// never repeat, across restarts and between two coordinators of one job. Checkpoints found expired
    /// meanwhile are aborted and reported by [`CheckpointCoordinator::take_aborted`].
    ///
    /// Ids never repeat (`docs/protocol.md`, invariant P1).
    ///
    /// # Errors
    /// [`Error::Fenced`] once a newer coordinator exists; storage errors while checking the fence, listing
    /// or reserving (a failed reservation skips its id; calling again tries the next one);
    /// [`Error::IllegalState`] if 64 consecutive ids were taken by other coordinators.
    pub async fn trigger(&mut self) -> Result<u64> {
        self.reserve(None).await
    }

    /// Reserves the next id (see [`CheckpointCoordinator::trigger`]) for a checkpoint, or for a savepoint
    /// into `savepoint_target` (then also in the target), and makes it pending.
    pub(super) async fn reserve(
        &mut self,
        savepoint_target: Option<CheckpointStorage>,
    ) -> Result<u64> {
        self.check_fence().await?;
        self.expire_overdue().await;
        // A reservation protects an id only while its marker exists, and subsumption deletes a
        // checkpoint's directory with it: never go below the highest directory in storage (the id
        // watermark, which nothing deletes), or a coordinator that fell behind (an old leader) would
        // reserve an id again (found by the simulation, seed 367).
        if let Some(highest) = self.storage.list_checkpoint_dirs().await?.last() {
            self.next_id = self.next_id.max(highest + 1);
        }
        self.next_id = self.next_id.max(self.store.id_floor() + 1);
        for _ in 0..MAX_RESERVE_ATTEMPTS {
            let id = self.next_id;
            self.next_id += 1;
            let marker = format!("{}/{TRIGGER_MARKER}", checkpoint_dir(id));
            let content = Bytes::from(format!(
                "checkpoint {id} reserved by coordinator {}\n",
                self.instance
            ));
            match self.storage.put_if_absent(&marker, content).await? {
                Created::Yes => {}
                Created::Conflict => {
                    tracing::warn!(
                        checkpoint_id = id,
                        "checkpoint id reserved by another coordinator; trying the next one"
                    );
                    continue;
                }
            }
            if let Some(target) = &savepoint_target {
                // The id is ours in the job's storage from here on: if the target refuses it, it is an
                // aborted checkpoint's, never handed out again.
                match self.attempts.reserve_savepoint(target, id).await {
                    Ok(true) => {}
                    Ok(false) => {
                        self.outcomes.set(id, Outcome::Aborted);
                        continue;
                    }
                    Err(e) => {
                        self.outcomes.set(id, Outcome::Aborted);
                        return Err(e);
                    }
                }
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
        Err(Error::IllegalState(format!(
            "{MAX_RESERVE_ATTEMPTS} consecutive checkpoint ids were reserved by other coordinators of \
             this job"
        )))
    }

    /// Triggers a savepoint into `target` (any storage: the job's own or the user's directory or bucket)
    /// and returns its id, from the same sequence as checkpoint ids. The id is reserved in the job's
    /// storage as a checkpoint's is, and in `target` (`savepoints/sp-<id>/_trigger`): an id some other
    /// writer holds in `target` (another job's savepoint, a converted one) is skipped. The engine injects a
    /// barrier for it as for a checkpoint; each task calls
    /// [`KeyedStateBackend::savepoint`](crate::KeyedStateBackend::savepoint) with `target` and acknowledges
    /// with [`CheckpointCoordinator::acknowledge`]. When the last task acknowledges, the coordinator writes
    /// `savepoints/sp-<id>/_metadata` into `target` (kind [`SnapshotKind::Savepoint`](crate::snapshot::SnapshotKind::Savepoint), create-if-absent).
    /// A completed savepoint is not added to the store: no checkpoint subsumes it, and the job never
    /// deletes it. A checkpoint completing first does not abort it; its own abort or the checkpoint timeout
    /// does, and deletes only what this attempt put in `target`.
    ///
    /// # Errors
    /// As [`CheckpointCoordinator::trigger`].
    pub async fn trigger_savepoint(&mut self, target: &CheckpointStorage) -> Result<u64> {
        self.reserve(Some(target.clone())).await
    }

    /// Orphan sweep of `shared/`, the `chk-*` directories and `_probe/`. Checks the fence, measures the
    /// store's clock (overwrites `_clock`, reads its `Last-Modified`), lists storage, then (after listing,
    /// so a checkpoint that completes meanwhile is seen with its files) reads the metadata of every
    /// checkpoint in storage, and deletes a listed file only if:
    /// - no readable checkpoint in storage references it, it is not the metadata or a marker of one, and
    ///   the registry does not hold it;
    /// - its `last_modified` is at least `min_age` before the store's now (one clock: the coordinator's
    ///   may be minutes off, `docs/faults.md`);
    /// - it is not in the directory of a checkpoint pending here, and, for a shared file, it was not first
    ///   seen unreferenced while a checkpoint still pending was pending (it may be that checkpoint's
    ///   upload, however long it runs: SlateDB #1758);
    /// - it is not the reservation marker of the highest checkpoint directory (the id watermark).
    ///
    /// It also retries aborts of multipart uploads that failed before, and, where the store lists
    /// incomplete multipart uploads (S3), aborts those under the job's prefix older than `min_age`.
    ///
    /// `min_age` protects uploads of checkpoints this coordinator does not know of (another coordinator's,
    /// or one pending before a restart), so it must exceed the longest checkpoint. While any metadata in
    /// storage is unreadable, nothing is deleted ([`SweepReport::blocked_by_unreadable`]). `savepoints/`
    /// and anything else outside `shared/`, `chk-*` and `_probe/` is never touched, but for staging files:
    /// on a local directory the sweep also lists the staging files (`<name>#<digits>`) that a process
    /// killed mid-write leaves anywhere under the job root, which `object_store`'s listing hides; they are
    /// never part of anything and go by the same age rule. Once a coordinator of a newer generation
    /// exists, nothing is deleted ([`SweepReport::fenced`]).
    ///
    /// # Errors
    /// Storage errors while checking the fence, measuring the clock, listing, reading or deleting (what
    /// was classified before stays for the next sweep; nothing is fenced by a failed check).
    pub async fn sweep_orphans(&mut self, min_age: Duration) -> Result<SweepReport> {
        if let Err(e) = self.check_fence().await {
            if e.kind() == ErrorKind::Fenced {
                return Ok(SweepReport {
                    fenced: true,
                    ..SweepReport::default()
                });
            }
            return Err(e);
        }
        self.fence.retire_older().await;
        let pending: BTreeSet<u64> = self.pending.keys().copied().collect();
        let plan = self
            .sweep
            .plan(
                &self.storage,
                &mut self.store,
                &pending,
                &mut self.outcomes,
                min_age,
            )
            .await?;
        let SweepPlan { mut report, doomed } = plan;
        let Some(doomed) = doomed else {
            // An unreadable checkpoint blocks every deletion.
            return Ok(report);
        };
        // Once more right before deleting: the classification took a while.
        if let Err(e) = self.check_fence().await {
            report.too_young += doomed.len();
            if e.kind() == ErrorKind::Fenced {
                report.fenced = true;
                return Ok(report);
            }
            return Err(e);
        }
        delete_doomed(&self.storage, &doomed, &mut report).await?;
        Ok(report)
    }

    /// Aborts a pending checkpoint or savepoint (a subtask failed or declined, or it timed out): deletes
    /// what its tasks uploaded and its private files, keeping its id reservation (a savepoint's files are
    /// deleted only while its reservation in the target is this coordinator's). The engine must then call
    /// `notify_checkpoint_aborted` on every backend. Aborting a checkpoint that is not pending does nothing
    /// (a completed one can never be aborted).
    ///
    /// # Errors
    /// Storage errors while deleting; the checkpoint is aborted regardless and what was not deleted is left
    /// to the orphan sweep.
    pub async fn abort(&mut self, checkpoint_id: u64) -> Result<()> {
        let Some(pending) = self.pending.remove(&checkpoint_id) else {
            return Ok(());
        };
        self.outcomes.set(checkpoint_id, Outcome::Aborted);
        let tasks: Vec<_> = pending.acks.into_values().map(|(t, _)| t).collect();
        let uploads = self
            .attempts
            .discard_own_uploads(self.store.referenced_paths(), checkpoint_id, &tasks, None)
            .await;
        let private = self.attempts.discard_private_dir(checkpoint_id).await;
        uploads.and(private)
    }

    /// Aborts `checkpoint_id` on the coordinator's own account; the engine is told later
    /// ([`CheckpointCoordinator::take_aborted`], [`crate::CheckpointStats::aborted_pending`]).
    pub(super) async fn expire(&mut self, checkpoint_id: u64) {
        if !self.pending.contains_key(&checkpoint_id) {
            return;
        }
        if let Err(e) = self.abort(checkpoint_id).await {
            tracing::warn!(checkpoint_id, error = %e, "clean-up of an aborted checkpoint failed; the orphan sweep will delete what it left");
        }
        self.outcomes.unreported_abort(checkpoint_id);
    }

    /// Pending checkpoints (and savepoints) triggered at least the checkpoint timeout ago.
    fn overdue(&self) -> Vec<u64> {
        let now_ms = self.clock.now_ms();
        let timeout_ms =
            u64::try_from(self.config.checkpoint_timeout.as_millis()).unwrap_or(u64::MAX);
        self.pending
            .iter()
            .filter(|(_, p)| now_ms.saturating_sub(p.timestamp_ms) >= timeout_ms)
            .map(|(id, _)| *id)
            .collect()
    }

    /// Aborts the overdue checkpoints as unreported aborts.
    pub(super) async fn expire_overdue(&mut self) {
        for id in self.overdue() {
            tracing::warn!(
                checkpoint_id = id,
                "checkpoint expired before it completed: aborted"
            );
            self.expire(id).await;
        }
    }

    /// Aborts every pending checkpoint and savepoint triggered at least
    /// [`CoordinatorConfig::checkpoint_timeout`] ago by the coordinator's clock, as Flink's checkpoint
    /// canceller, and returns their ids, ascending, together with every other abort not reported yet
    /// ([`CheckpointCoordinator::take_aborted`]). The engine should tell its backends
    /// (`notify_checkpoint_aborted`) and may drop their asynchronous phases; acknowledgements that still
    /// arrive are late ones. `trigger` and `acknowledge` expire checkpoints too, so an engine that never
    /// calls this still never waits on an expired checkpoint; calling it on a timer frees an expired
    /// checkpoint's files without waiting for the next trigger.
    ///
    /// Clean-up errors are logged, not returned: the abort itself is in memory and final, and the orphan
    /// sweep deletes what a failed clean-up left.
    pub async fn abort_expired(&mut self) -> Vec<u64> {
        self.expire_overdue().await;
        self.outcomes.take_unreported()
    }

    /// Stops the coordinator with the job: aborts pending checkpoints, marks its generation shut down
    /// (`_coordinators/<g>.closed`: `statectl gc` may then sweep), and keeps or deletes the job's
    /// checkpoints. With [`CancellationPolicy::DeleteOnCancellation`] the job's life in this storage ends:
    /// a lineage record of the cancellation keeps generations and ids rising for the next job, then every
    /// checkpoint but the pinned ones and every id reservation (of any coordinator) is deleted, and the
    /// older lineage records. What stays: the generation markers of this coordinator and the record.
    ///
    /// # Errors
    /// [`Error::Fenced`] (a newer coordinator exists: nothing is deleted); storage errors while checking,
    /// recording or deleting (what is left is abandoned: never restored).
    pub async fn shutdown(mut self, policy: CancellationPolicy) -> Result<()> {
        let mut first_error = None;
        for id in self.pending() {
            if let Err(e) = self.abort(id).await {
                first_error.get_or_insert(e);
            }
        }
        if policy == CancellationPolicy::DeleteOnCancellation {
            self.check_fence().await?;
            let dirs = self.storage.list_checkpoint_dirs().await?;
            let highest = dirs
                .last()
                .copied()
                .unwrap_or(0)
                .max(self.next_id.saturating_sub(1))
                .max(self.store.id_floor());
            let record = LineRecord {
                generation: self.fence.generation(),
                checkpoint_id: highest,
                kind: LineKind::Cancelled,
            };
            self.store.record_line(record).await?;
            if let Err(e) = self.store.delete_all().await {
                first_error.get_or_insert(e);
            }
            let kept: Vec<u64> = self.store.known_ids().into_iter().collect();
            for id in dirs.into_iter().filter(|id| !kept.contains(id)) {
                if let Err(e) = self.storage.delete_dir(&checkpoint_dir(id)).await {
                    first_error.get_or_insert(e);
                }
            }
            self.store.retire_lineage_but(record).await;
        }
        self.fence.close().await?;
        first_error.map_or(Ok(()), Err)
    }
}

/// The orphan sweep of the stopped job in `storage`, as an operator runs it (`statectl gc`): refuses while the job's
/// newest coordinator generation has not shut down (a job that may be running, whose uploads in flight
/// nobody here knows), unless `force` (a job that crashed). It then opens a coordinator (its generation
/// fences any coordinator that is in fact still running), sweeps
/// ([`CheckpointCoordinator::sweep_orphans`]) and shuts it down again, retaining every checkpoint, so
/// that the job counts as stopped afterwards.
///
/// # Errors
/// [`Error::IllegalState`](crate::Error::IllegalState) naming the live generation; storage errors.
pub async fn collect_garbage(
    storage: &CheckpointStorage,
    min_age: Duration,
    force: bool,
    clock: std::sync::Arc<dyn crate::Clock>,
) -> Result<SweepReport> {
    if let Some(newest) = NewestGeneration::read(storage).await?
        && !newest.closed
        && !force
    {
        return Err(crate::Error::IllegalState(format!(
            "coordinator generation {} of this job has not shut down: the job may be running, and its \
             uploads in flight are not known here. Stop the job first, or force the sweep if it \
             crashed (a coordinator that is in fact running is then fenced); a dry run is always safe",
            newest.generation
        )));
    }
    // Every checkpoint in storage is read and protected whatever the retained count; opening deletes
    // nothing.
    let mut coordinator = CheckpointCoordinator::open_with_clock(
        storage.clone(),
        crate::CoordinatorConfig::single_operator("gc", 1, usize::MAX),
        clock,
    )
    .await?;
    let swept = coordinator.sweep_orphans(min_age).await;
    let closed = coordinator
        .shutdown(CancellationPolicy::RetainOnCancellation)
        .await;
    let report = swept?;
    closed?;
    Ok(report)
}
