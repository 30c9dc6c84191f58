//! Reading a completed checkpoint's metadata: for the store, and for a task that restores or confirms away
//! from the coordinator (read-only).

use bytes::Bytes;

use crate::checkpoint::handle::CheckpointMetadata;
use crate::error::{ErrorKind, Result};
use crate::format::metadata;
use crate::storage::{CheckpointStorage, METADATA_FILE, checkpoint_dir, savepoint_dir};

impl CheckpointStorage {
    /// The metadata of completed checkpoint `id`, read from storage (for a task that restores on its own,
    /// away from the coordinator; read-only).
    ///
    /// # Errors
    /// [`Error::NotFound`](crate::Error::NotFound) if the checkpoint has no `_metadata` (never completed,
    /// or deleted); [`Error::Corrupt`](crate::Error::Corrupt) if it does not decode; storage errors.
    pub async fn read_checkpoint_metadata(&self, id: u64) -> Result<CheckpointMetadata> {
        read_metadata(self, id).await
    }

    /// The metadata of completed savepoint `id` in this storage (`savepoints/sp-<id>/_metadata`, as
    /// [`CheckpointCoordinator::trigger_savepoint`](crate::CheckpointCoordinator::trigger_savepoint) writes
    /// it): its handles restore either backend (canonical) or the LSM backend (native), in
    /// [`RestoreMode::NoClaim`](crate::RestoreMode) unless the user hands the savepoint over.
    ///
    /// # Errors
    /// As [`CheckpointStorage::read_checkpoint_metadata`].
    pub async fn read_savepoint_metadata(&self, id: u64) -> Result<CheckpointMetadata> {
        let relative = format!("{}/{METADATA_FILE}", savepoint_dir(id));
        let bytes: Bytes = self.read(&relative).await?;
        metadata::decode(&bytes, self.path(&relative).as_ref())
    }

    /// Whether checkpoint `id` has completed: its `_metadata` exists (a task's hint that it may confirm
    /// its snapshot, when its engine has no channel back from the coordinator; read-only).
    ///
    /// # Errors
    /// Storage errors other than absence.
    pub async fn checkpoint_completed(&self, id: u64) -> Result<bool> {
        match self
            .head(&format!("{}/{METADATA_FILE}", checkpoint_dir(id)))
            .await
        {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e),
        }
    }
}

/// Reads and decodes the metadata of checkpoint `id`.
pub(crate) async fn read_metadata(
    storage: &CheckpointStorage,
    id: u64,
) -> Result<CheckpointMetadata> {
    let relative = format!("{}/{METADATA_FILE}", checkpoint_dir(id));
    let bytes: Bytes = storage.read(&relative).await?;
    metadata::decode(&bytes, storage.path(&relative).as_ref())
}
