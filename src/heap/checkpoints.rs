//! The heap backend's checkpoint bookkeeping, as a component that owns it: its identity in storage, the
//! snapshot ledger, the chain of incremental checkpoints, the local copies of local recovery, and where
//! its restore read from.

use crate::error::Result;
use crate::heap::chain::{ChainBook, ChainUpload};
use crate::heap::delta::Cut;
use crate::heap::in_process::InProcessRecovery;
use crate::keyed::identity::SubtaskIdentity;
use crate::keyed::ledger::{SnapshotLedger, SnapshotOf};
use crate::snapshot::result::RestoreSources;
use crate::snapshot_io::local_copy::LocalCopies;
use crate::storage::CheckpointStorage;

/// What a heap backend knows of its snapshots besides the frozen state.
#[derive(Default)]
pub(crate) struct HeapCheckpoints {
    /// Identity in storage, drawn from the storage's id source at the first snapshot or restore.
    backend_id: Option<String>,
    /// Ids snapshotted, unconfirmed and confirmed.
    ledger: SnapshotLedger,
    /// Local recovery's copies of this backend's checkpoints, when it is on.
    local: Option<LocalCopies>,
    /// The storage the last checkpoint went to: where the copies a confirmation deletes belong.
    storage: Option<CheckpointStorage>,
    /// Where the restore that made this backend read its files (empty for a new backend).
    restore_sources: RestoreSources,
    /// The diff base and uploads of incremental checkpoints, when they are on.
    chain: Option<ChainBook>,
    /// In-process recovery's kept versions, when the engine gave them.
    in_process: Option<InProcessRecovery>,
}

/// What the synchronous phase of a snapshot learns from the bookkeeping.
pub(crate) struct Begun {
    /// The backend's identity in storage.
    pub(crate) backend_id: String,
    /// Where the checkpoint's local copy goes (local recovery), if anywhere.
    pub(crate) local: Option<LocalCopies>,
    /// How the tables are cut: untracked (a savepoint, or incremental checkpoints off), full or delta.
    pub(crate) cut: Cut,
    /// For a checkpoint of a chain: the base's files and the uploads in flight.
    pub(crate) chain: Option<ChainUpload>,
    /// For a checkpoint with in-process recovery: where its frozen version is kept, and the job root
    /// it is kept under.
    pub(crate) keep: Option<(InProcessRecovery, String)>,
}

impl HeapCheckpoints {
    /// The bookkeeping of a new backend keeping local copies in `local`, if given, and chains of
    /// incremental checkpoints in `chain`, if given.
    pub(crate) fn new(local: Option<LocalCopies>, chain: Option<ChainBook>) -> Self {
        HeapCheckpoints {
            local,
            chain,
            ..HeapCheckpoints::default()
        }
    }

    /// The bookkeeping of a backend restored from checkpoint `restored_from` as `backend_id`, with its
    /// local copies, where the restore read from and its chain bookkeeping (no base: the first
    /// checkpoint after a restore is full, so nothing of the restored files is referenced again).
    pub(crate) fn restored(
        backend_id: String,
        restored_from: Option<u64>,
        local: Option<LocalCopies>,
        restore_sources: RestoreSources,
        chain: Option<ChainBook>,
    ) -> Self {
        HeapCheckpoints {
            backend_id: Some(backend_id),
            ledger: SnapshotLedger::restored(restored_from),
            local,
            storage: None,
            restore_sources,
            chain,
            in_process: None,
        }
    }

    /// Keeps a frozen version of every checkpoint from now on in `recovery` (in-process recovery).
    pub(crate) fn set_in_process(&mut self, recovery: InProcessRecovery) {
        self.in_process = Some(recovery);
    }

    /// Identity in storage (`None` before the first snapshot or restore).
    pub(crate) fn backend_id(&self) -> Option<&str> {
        self.backend_id.as_deref()
    }

    /// The last checkpoint confirmed.
    pub(crate) fn last_completed(&self) -> Option<u64> {
        self.ledger.last_completed()
    }

    /// Where the restore that made this backend read its files.
    pub(crate) fn restore_sources(&self) -> &RestoreSources {
        &self.restore_sources
    }

    /// Records the synchronous phase of snapshot `checkpoint_id` of `identity`: the backend id (drawn
    /// from `storage` at the first snapshot), for a checkpoint with local recovery on where its local copy
    /// goes, and with incremental checkpoints on whether it is full or a delta.
    ///
    /// # Errors
    /// [`Error::IllegalState`](crate::Error::IllegalState) if the id does not exceed every id
    /// snapshotted or restored from.
    pub(crate) fn begin(
        &mut self,
        checkpoint_id: u64,
        of: SnapshotOf,
        storage: &CheckpointStorage,
        identity: &SubtaskIdentity,
    ) -> Result<Begun> {
        self.ledger.begin(checkpoint_id, of)?;
        let backend_id = self.backend_id.get_or_insert_with(|| {
            storage.new_backend_id(identity.operator_id(), identity.subtask_index())
        });
        let local = self.local.clone().filter(|_| of == SnapshotOf::Checkpoint);
        let keep = (self.in_process.clone())
            .filter(|_| of == SnapshotOf::Checkpoint)
            .map(|r| (r, storage.job_root()));
        if local.is_some() || keep.is_some() {
            self.storage = Some(storage.clone());
        }
        let (cut, chain) = match (&mut self.chain, of) {
            (Some(book), SnapshotOf::Checkpoint) => {
                let (cut, upload) = book.begin(checkpoint_id, storage);
                (cut, Some(upload))
            }
            _ => (Cut::Untracked, None),
        };
        Ok(Begun {
            backend_id: backend_id.clone(),
            local,
            cut,
            chain,
            keep,
        })
    }

    /// `notify_checkpoint_complete`: confirms a snapshot of this backend that was not aborted (a hint:
    /// anything else is ignored) and deletes the job's local copies of earlier checkpoints. Returns the
    /// checkpoint if it became the diff base of incremental checkpoints (the tables then drop the changes
    /// it holds).
    pub(crate) fn confirmed(&mut self, checkpoint_id: u64) -> Option<u64> {
        if !self.ledger.confirm(checkpoint_id) {
            tracing::debug!(
                checkpoint_id,
                "heap backend: completion of a checkpoint it has no unconfirmed snapshot of, ignored"
            );
            return None;
        }
        if let (Some(local), Some(storage)) = (&self.local, &self.storage) {
            local.confirmed(storage, checkpoint_id);
        }
        if let (Some(kept), Some(storage)) = (&self.in_process, &self.storage) {
            kept.confirmed(&storage.job_root(), checkpoint_id);
        }
        let backend_id = self.backend_id.as_deref()?;
        self.chain.as_mut()?.confirmed(checkpoint_id, backend_id)
    }

    /// `notify_checkpoint_aborted`: the ledger, the chain bookkeeping (a running upload deletes its file;
    /// a stale base is dropped) and the checkpoint's local copy.
    pub(crate) fn aborted(&mut self, checkpoint_id: u64) {
        self.ledger.abort(checkpoint_id);
        if let Some(book) = &mut self.chain {
            book.aborted(checkpoint_id);
        }
        if let (Some(local), Some(backend_id), Some(storage)) =
            (&self.local, &self.backend_id, &self.storage)
        {
            local.aborted(storage, backend_id, checkpoint_id);
        }
        if let (Some(kept), Some(backend_id), Some(storage)) =
            (&self.in_process, &self.backend_id, &self.storage)
        {
            kept.aborted(&storage.job_root(), backend_id, checkpoint_id);
        }
        tracing::debug!(checkpoint_id, "heap backend: checkpoint aborted");
    }
}
