//! The savepoint lifecycle at the coordinator (`docs/savepoints.md`): triggered at a barrier like a
//! checkpoint, under an id of the same sequence, its files and metadata in a target storage of the user's
//! choosing; it never enters the completed-checkpoint store, so it is never subsumed, never an incremental
//! base and never deleted by the job.

use bytes::Bytes;

use crate::checkpoint::coordinator::CheckpointCoordinator;
use crate::checkpoint::handle::{CheckpointMetadata, FileScope, SnapshotKind};
use crate::checkpoint::pending::{Acknowledgement, CheckpointStats, Outcome};
use crate::error::{Error, Result};
use crate::format::metadata;
use crate::keyed::backend::SnapshotMetrics;
use crate::storage::{CheckpointStorage, Created, METADATA_FILE, savepoint_dir};

impl CheckpointCoordinator {
    /// Triggers a savepoint into `target` (any storage: the job's own or the user's directory or bucket)
    /// and returns its id, from the same sequence as checkpoint ids (reserved the same way, so it never
    /// repeats). The engine injects a barrier for it as for a checkpoint; each task calls
    /// [`KeyedStateBackend::savepoint`](crate::KeyedStateBackend::savepoint) with `target` and acknowledges
    /// with [`CheckpointCoordinator::acknowledge`]. When the last task acknowledges, the coordinator writes
    /// `savepoints/sp-<id>/_metadata` into `target` (kind [`SnapshotKind::Savepoint`], create-if-absent).
    /// A completed savepoint is not added to the store: no checkpoint subsumes it, and the job never
    /// deletes it. Aborting one (or a timeout) deletes its directory in `target`, which has no metadata yet.
    ///
    /// # Errors
    /// As [`CheckpointCoordinator::trigger`].
    pub async fn trigger_savepoint(&mut self, target: &CheckpointStorage) -> Result<u64> {
        self.reserve(Some(target.clone())).await
    }

    /// Every task acknowledged savepoint `meta`: check it, write its metadata into `target`.
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
            Err(e) => {
                tracing::warn!(savepoint_id, error = %e, "declining savepoint");
                self.outcomes.set(savepoint_id, Outcome::Aborted);
                let _ = self.discard_private_dir(savepoint_id).await;
                return Err(e);
            }
        };
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
                Ok(Acknowledgement::Completed(Box::new(stats)))
            }
            Ok(Created::Conflict) => {
                // Ids never repeat, so another writer's metadata here means the target holds another
                // job's savepoint under this id: nothing of it may be deleted.
                self.outcomes.set(savepoint_id, Outcome::Aborted);
                Err(Error::IllegalState(format!(
                    "the target already holds a savepoint {savepoint_id} with other content (another \
                     job's?); nothing was deleted"
                )))
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
    fn check_savepoint(&self, meta: &CheckpointMetadata) -> Result<Bytes> {
        self.check_partitions(meta)?;
        let dir = format!("{}/", savepoint_dir(meta.checkpoint_id));
        if let Some(f) = meta.files().find(|f| {
            f.scope != FileScope::Private
                || f.created_by != meta.checkpoint_id
                || !f.path.starts_with(&dir)
        }) {
            return Err(Error::IllegalState(format!(
                "savepoint {} refers to {} ({:?}, uploaded by {}): a savepoint holds only private files \
                 of its own directory (was the snapshot taken with `savepoint`?)",
                meta.checkpoint_id, f.path, f.scope, f.created_by
            )));
        }
        metadata::encode(meta).map(Bytes::from).map_err(|e| {
            Error::IllegalState(format!(
                "savepoint {} cannot be written: {e}",
                meta.checkpoint_id
            ))
        })
    }
}
