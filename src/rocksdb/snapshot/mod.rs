//! The RocksDB backend's snapshots: the synchronous phase and the checkpoint bookkeeping (here), the
//! incremental upload (`upload`) and the canonical export (`canonical`). Its side of the checkpoint
//! protocol: the synchronous phase (a native RocksDB checkpoint), the uploads in flight, the diff base,
//! and what completion and abort notifications do to them (`docs/lsm.md`, `docs/protocol.md`).

pub(crate) mod canonical;
pub(crate) mod upload;

use std::time::Instant;

use crate::error::{Error, Result};
use crate::keyed::backend::PendingSnapshot;
use crate::keyed::identity::SubtaskIdentity;
use crate::keyed::ledger::{SnapshotLedger, SnapshotOf};
use crate::keyed::ttl::TtlTimes;
use crate::rocksdb::config::RocksDbConfig;
use crate::rocksdb::db::Db;
use crate::rocksdb::instance::remove_dir_if_exists;
use crate::rocksdb::snapshot::canonical::CanonicalExport;
use crate::rocksdb::snapshot::upload::{
    DiffBase, PendingUpload, PendingUploads, SnapshotTarget, UploadGuard, UploadJob,
};
use crate::rocksdb::states::{LsmStates, broken_state};
use crate::snapshot::result::RestoreSources;
use crate::snapshot_io::local_copy::LocalCopies;
use crate::storage::CheckpointStorage;

/// Aborted checkpoints in a row that reused the diff base after which the backend rebases.
const REBASE_AFTER_ABORTS: u32 = 3;

/// Unresolved checkpoints a RocksDB backend remembers.
const MAX_PENDING_UPLOADS: usize = 64;

/// What the synchronous phase reads of the backend besides its checkpoint bookkeeping.
pub(crate) struct SnapshotSource<'a> {
    pub(crate) db: &'a Db,
    pub(crate) states: &'a LsmStates,
    pub(crate) identity: &'a SubtaskIdentity,
    pub(crate) config: &'a RocksDbConfig,
    /// The times TTL states expire against (a canonical savepoint leaves out what expired).
    pub(crate) ttl: &'a TtlTimes,
}

/// The backend's checkpoint bookkeeping, as a component that owns it: the snapshot ledger, the uploads in
/// flight (shared with their asynchronous phases), the diff base and the aborts that reused it, the
/// backend's identity in storage, the local copies of local recovery and where the restore read from.
#[derive(Default)]
pub(crate) struct Checkpoints {
    /// The backend's identity in storage (in handles and upload names), drawn from the storage's id
    /// source at the first snapshot or restore.
    backend_id: Option<String>,
    ledger: SnapshotLedger,
    pending: PendingUploads,
    base: Option<DiffBase>,
    /// Finished uploads that reused the base and were aborted since the last confirmed checkpoint.
    aborts_reusing_base: u32,
    /// Local recovery's copies of this backend's checkpoints, when it is on.
    local: Option<LocalCopies>,
    /// Where the restore that made this backend read its files (empty for a new backend).
    restore_sources: RestoreSources,
}

impl Checkpoints {
    /// The bookkeeping of a new backend keeping local copies in `local` (local recovery), if given.
    pub(crate) fn new(local: Option<LocalCopies>) -> Self {
        Checkpoints {
            local,
            ..Checkpoints::default()
        }
    }

    /// The bookkeeping of a backend restored as `backend_id` from checkpoint (or savepoint) `restored`,
    /// with the diff base a CLAIM restore of the same key groups keeps (unconfirmed: dropped at the first
    /// abort that reused it), its local copies and where the restore read from.
    pub(crate) fn restored(
        backend_id: String,
        restored: Option<u64>,
        base: Option<DiffBase>,
        local: Option<LocalCopies>,
        restore_sources: RestoreSources,
    ) -> Self {
        Checkpoints {
            backend_id: Some(backend_id),
            ledger: SnapshotLedger::restored(restored),
            base,
            local,
            restore_sources,
            ..Checkpoints::default()
        }
    }

    /// The backend's identity in storage (`None` before its first snapshot or restore).
    pub(crate) fn backend_id(&self) -> Option<&str> {
        self.backend_id.as_deref()
    }

    /// Where the restore that made this backend read its files.
    pub(crate) fn restore_sources(&self) -> &RestoreSources {
        &self.restore_sources
    }

    /// The last checkpoint confirmed.
    pub(crate) fn last_completed(&self) -> Option<u64> {
        self.ledger.last_completed()
    }

    /// Checkpoint whose files are the current diff base, if any.
    pub(crate) fn diff_base(&self) -> Option<u64> {
        self.base.as_ref().map(|b| b.checkpoint_id)
    }

    /// Records snapshot `checkpoint_id` of `target` before anything is taken.
    ///
    /// # Errors
    /// [`Error::IllegalState`] if the id does not exceed every id snapshotted or restored from.
    fn begin(&mut self, checkpoint_id: u64, target: SnapshotTarget) -> Result<()> {
        let of = match target {
            SnapshotTarget::Checkpoint => SnapshotOf::Checkpoint,
            SnapshotTarget::Savepoint | SnapshotTarget::CanonicalSavepoint => SnapshotOf::Savepoint,
        };
        self.ledger.begin(checkpoint_id, of)
    }

    /// The synchronous phase of snapshot `checkpoint_id` ([`Checkpoints::begin`] recorded it): a native
    /// checkpoint of `source.db`, and the asynchronous phase that uploads it (incrementally against the
    /// diff base for a checkpoint, whole for a savepoint, re-encoded for a canonical savepoint).
    ///
    /// # Errors
    /// [`Error::Local`] if the native checkpoint cannot be taken.
    pub(crate) fn sync_phase(
        &mut self,
        source: SnapshotSource<'_>,
        checkpoint_id: u64,
        storage: &CheckpointStorage,
        target: SnapshotTarget,
    ) -> Result<PendingSnapshot> {
        let start = Instant::now();
        let SnapshotSource {
            db,
            states,
            identity,
            config,
            ttl,
        } = source;
        if let Some(broken) = states.broken() {
            return Err(broken_state(&broken.meta.name));
        }
        self.begin(checkpoint_id, target)?;
        let backend_id = self
            .backend_id
            .get_or_insert_with(|| {
                storage.new_backend_id(identity.operator_id(), identity.subtask_index())
            })
            .clone();
        let local = db.instance().checkpoint(checkpoint_id);
        remove_dir_if_exists(&local)?;
        if let Some(parent) = local.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|e| Error::local(parent.display().to_string(), e))?;
        }
        // The WAL is off, so every memtable must be flushed for the native checkpoint to hold all state.
        // `create_checkpoint` does that itself: the `rocksdb` crate passes `log_size_for_flush = 0`, which
        // means "always flush every column family". A flush of our own before it would be a second wait for
        // RocksDB's stall condition (an empty flush still waits while one more L0 file would stall writes),
        // which made 0.5 s tails in `benches/incremental.rs`.
        db.native_checkpoint(&local)?;
        if !db.memtables_empty(&states.column_families()) {
            // Should `create_checkpoint` ever skip its flush (facebook/rocksdb#14193 is about its
            // threshold), flush explicitly and take the native checkpoint again.
            tracing::warn!(
                checkpoint_id,
                "the native checkpoint left memtables unflushed; flushing and taking it again"
            );
            db.flush(&states.column_families())?;
            remove_dir_if_exists(&local)?;
            db.native_checkpoint(&local)?;
        }
        let base = match target {
            SnapshotTarget::Checkpoint => {
                let mut pending = self.pending.lock();
                pending.insert(
                    checkpoint_id,
                    PendingUpload {
                        aborted: false,
                        shared: None,
                        reused_base: false,
                        storage: storage.clone(),
                    },
                );
                // Bounded: uploads never confirmed nor aborted (lost notifications) are forgotten oldest
                // first; a late confirmation of one is then ignored and the base stays older (still
                // registered, or the next decline rebases).
                while pending.len() > MAX_PENDING_UPLOADS {
                    pending.pop_first();
                }
                drop(pending);
                if self
                    .base
                    .as_ref()
                    .is_some_and(|b| !b.storage.same_location(storage))
                {
                    tracing::info!(
                        checkpoint_id,
                        "lsm backend: the diff base lives in another storage; this checkpoint uploads every file"
                    );
                    self.base = None;
                }
                self.base.clone()
            }
            SnapshotTarget::Savepoint | SnapshotTarget::CanonicalSavepoint => None,
        };
        // Each state's size, read while the memtables are empty (a canonical export counts its records).
        let sizes = match target {
            SnapshotTarget::CanonicalSavepoint => Default::default(),
            _ => states.sizes(db, identity.key_groups(), identity.max_parallelism()),
        };
        let sync_duration = start.elapsed();
        let guard = UploadGuard {
            dir: local.clone(),
            pending: (target == SnapshotTarget::Checkpoint)
                .then(|| (self.pending.clone(), checkpoint_id)),
        };
        if target == SnapshotTarget::CanonicalSavepoint {
            let export = CanonicalExport {
                savepoint_id: checkpoint_id,
                local_dir: local,
                _guard: guard,
                storage: storage.clone(),
                backend_id: backend_id.clone(),
                config: config.clone(),
                memory: db.memory().clone(),
                identity: identity.clone(),
                // Live states only: dropped ones have no column family any more.
                states: states.metas(),
                expiries: states.expiries(ttl),
            };
            return Ok(PendingSnapshot::new(
                checkpoint_id,
                sync_duration,
                export.run(sync_duration),
            ));
        }
        let job = UploadJob {
            checkpoint_id,
            target,
            local_dir: local,
            _guard: guard,
            base,
            pending: self.pending.clone(),
            storage: storage.clone(),
            backend_id: backend_id.clone(),
            operator_id: identity.operator_id().to_string(),
            subtask_index: identity.subtask_index(),
            max_parallelism: identity.max_parallelism(),
            key_groups: identity.key_groups(),
            concurrency: config.transfer_concurrency,
            sizes,
            local: self
                .local
                .clone()
                .filter(|_| target == SnapshotTarget::Checkpoint),
        };
        Ok(PendingSnapshot::new(
            checkpoint_id,
            sync_duration,
            job.run(sync_duration),
        ))
    }

    /// `notify_checkpoint_complete`: the checkpoint becomes the diff base if this backend finished its
    /// upload and it was not aborted, and the job's local copies of earlier checkpoints are deleted;
    /// anything else is ignored (a hint, `docs/protocol.md`).
    pub(crate) fn confirmed(&mut self, checkpoint_id: u64) {
        let mut pending = self.pending.lock();
        // A hint (`docs/protocol.md`): only a checkpoint whose upload this backend finished and that was
        // not aborted can be confirmed and become the base; a savepoint is never in `pending`
        // (FLINK-23949), an unconfirmed upload never is the base (FLINK-25395), and an unknown or aborted
        // id changes nothing.
        let Some(PendingUpload {
            shared: Some(_),
            aborted: false,
            ..
        }) = pending.get(&checkpoint_id)
        else {
            tracing::debug!(
                checkpoint_id,
                "lsm backend: completion of a checkpoint without a finished upload here, ignored"
            );
            return;
        };
        let Some(PendingUpload {
            shared: Some(shared),
            storage,
            ..
        }) = pending.remove(&checkpoint_id)
        else {
            return;
        };
        if let Some(local) = &self.local {
            local.confirmed(&storage, checkpoint_id);
        }
        if self
            .base
            .as_ref()
            .is_none_or(|b| b.checkpoint_id < checkpoint_id)
        {
            self.base = Some(DiffBase {
                checkpoint_id,
                shared,
                storage,
                confirmed: true,
            });
        }
        self.ledger.completed(checkpoint_id);
        self.aborts_reusing_base = 0;
        // Older pending checkpoints are subsumed by this one.
        pending.retain(|id, _| *id > checkpoint_id);
    }

    /// `notify_checkpoint_aborted`: a running upload is flagged (it deletes
    /// what it uploaded); a finished one is forgotten, and the base dropped when it may be stale (a
    /// rebase, `docs/protocol.md`); its local copy is deleted.
    pub(crate) fn aborted(&mut self, checkpoint_id: u64) {
        self.ledger.abort(checkpoint_id);
        let mut pending = self.pending.lock();
        if let (Some(local), Some(backend_id), Some(p)) =
            (&self.local, &self.backend_id, pending.get(&checkpoint_id))
        {
            local.aborted(&p.storage, backend_id, checkpoint_id);
        }
        match pending.get_mut(&checkpoint_id) {
            // Still uploading: the asynchronous phase sees the flag, deletes its uploads and fails.
            Some(p) if p.shared.is_none() => p.aborted = true,
            // Finished: its files were handed to the coordinator, which deletes them on abort.
            Some(p) => {
                let reused_base = p.reused_base;
                pending.remove(&checkpoint_id);
                // The base may be stale: an older finished upload that was never confirmed nor aborted
                // means a notification was lost (that checkpoint may have completed and subsumed the base's,
                // and this one been declined for reusing its deleted files); and checkpoints that keep
                // being aborted while reusing the base may be declined for it (another backend of the same
                // lineage, a restored successor, may have moved on). The backend cannot prove the base is
                // still registered, so the next checkpoint uploads every file (a rebase) instead of being
                // declined forever. One ordinary abort keeps the base: a full upload after every abort
                // would slow the next checkpoint of a large state down when checkpoints already struggle.
                let base_id = self.base.as_ref().map(|b| b.checkpoint_id);
                let lost_notification = pending.iter().any(|(id, u)| {
                    *id < checkpoint_id && u.shared.is_some() && base_id.is_none_or(|b| *id > b)
                });
                if reused_base {
                    self.aborts_reusing_base += 1;
                }
                let restored_base = self.base.as_ref().is_some_and(|b| !b.confirmed);
                let rebase = reused_base
                    && (lost_notification
                        || restored_base
                        || self.aborts_reusing_base >= REBASE_AFTER_ABORTS);
                if rebase && self.base.is_some() {
                    tracing::info!(
                        checkpoint_id,
                        lost_notification,
                        aborts = self.aborts_reusing_base,
                        "lsm backend: the diff base may be stale; the next checkpoint uploads every file"
                    );
                    self.base = None;
                    self.aborts_reusing_base = 0;
                }
            }
            None => {}
        }
    }
}
