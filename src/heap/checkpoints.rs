//! The heap backend's checkpoint bookkeeping, as a component that owns it: its identity in storage, the
//! snapshot ledger, the local copies of local recovery, and where its restore read from.

use crate::error::Result;
use crate::keyed::identity::SubtaskIdentity;
use crate::keyed::ledger::{SnapshotLedger, SnapshotOf};
use crate::snapshot::result::RestoreSources;
use crate::snapshot_io::local_copy::LocalCopies;
use crate::storage::CheckpointStorage;

/// What a heap backend knows of its snapshots besides the frozen state.
#[derive(Debug, Default)]
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
}

impl HeapCheckpoints {
    /// The bookkeeping of a new backend keeping local copies in `local`, if given.
    pub(crate) fn new(local: Option<LocalCopies>) -> Self {
        HeapCheckpoints {
            local,
            ..HeapCheckpoints::default()
        }
    }

    /// The bookkeeping of a backend restored from checkpoint `restored_from` as `backend_id`, with its
    /// local copies and where the restore read from.
    pub(crate) fn restored(
        backend_id: String,
        restored_from: Option<u64>,
        local: Option<LocalCopies>,
        restore_sources: RestoreSources,
    ) -> Self {
        HeapCheckpoints {
            backend_id: Some(backend_id),
            ledger: SnapshotLedger::restored(restored_from),
            local,
            storage: None,
            restore_sources,
        }
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

    /// Records the synchronous phase of snapshot `checkpoint_id` of `identity`: returns the backend id
    /// (drawn from `storage` at the first snapshot) and, for a checkpoint with local recovery on, where
    /// its local copy goes.
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
    ) -> Result<(String, Option<LocalCopies>)> {
        self.ledger.begin(checkpoint_id, of)?;
        let backend_id = self.backend_id.get_or_insert_with(|| {
            storage.new_backend_id(identity.operator_id(), identity.subtask_index())
        });
        let local = self.local.clone().filter(|_| of == SnapshotOf::Checkpoint);
        if local.is_some() {
            self.storage = Some(storage.clone());
        }
        Ok((backend_id.clone(), local))
    }

    /// `notify_checkpoint_complete`: confirms a snapshot of this backend that was not aborted (a hint:
    /// anything else is ignored) and deletes the job's local copies of earlier checkpoints.
    pub(crate) fn confirmed(&mut self, checkpoint_id: u64) {
        if !self.ledger.confirm(checkpoint_id) {
            tracing::debug!(
                checkpoint_id,
                "heap backend: completion of a checkpoint it has no unconfirmed snapshot of, ignored"
            );
            return;
        }
        if let (Some(local), Some(storage)) = (&self.local, &self.storage) {
            local.confirmed(storage, checkpoint_id);
        }
    }

    /// `notify_checkpoint_aborted`: heap snapshots are full and private, so only the ledger and the
    /// checkpoint's local copy are touched.
    pub(crate) fn aborted(&mut self, checkpoint_id: u64) {
        self.ledger.abort(checkpoint_id);
        if let (Some(local), Some(backend_id), Some(storage)) =
            (&self.local, &self.backend_id, &self.storage)
        {
            local.aborted(storage, backend_id, checkpoint_id);
        }
        tracing::debug!(checkpoint_id, "heap backend: checkpoint aborted");
    }
}
