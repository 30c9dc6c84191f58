//! The savepoint lifecycle at the coordinator (`docs/savepoints.md`): triggered at a barrier like a
//! checkpoint, under an id of the same sequence reserved in the job's storage and in the target storage
//! of the user's choosing, where its files and metadata go; it never enters the completed-checkpoint
//! store, so it is never subsumed, never an incremental base and never deleted by the job. A checkpoint
//! completing first does not end it (`docs/faults.md`, "Savepoints are not checkpoints").

use bytes::Bytes;

use crate::checkpoint::answers::{Acknowledgement, CheckpointStats, Declined};
use crate::checkpoint::coordinator::CheckpointCoordinator;
use crate::checkpoint::pending::Outcome;
use crate::error::{Error, ErrorKind, Result};
use crate::format::metadata;
use crate::snapshot::handle::{CheckpointMetadata, FileScope, SnapshotKind};
use crate::snapshot::layout::{METADATA_FILE, TRIGGER_MARKER, savepoint_dir};
use crate::snapshot::result::SnapshotMetrics;
use crate::storage::{CheckpointStorage, Created};

/// Reserves savepoint id `id` in `storage` (the target) for `owner` (a line naming the writer, unique
/// to it): creates `savepoints/sp-<id>/_trigger` if absent with `owner` as content, and checks that no
/// savepoint is in the directory already (one written by a writer that does not reserve). Returns
/// whether the id is now this owner's; an id taken by another writer is left alone. A retry of a
/// reservation that took effect finds its own content and succeeds.
///
/// # Errors
/// Storage errors (the reservation may have taken effect; it only ever keeps others off the id).
pub async fn reserve_savepoint_id(
    storage: &CheckpointStorage,
    id: u64,
    owner: &str,
) -> Result<bool> {
    let dir = savepoint_dir(id);
    let marker = format!("{dir}/{TRIGGER_MARKER}");
    match storage
        .put_if_absent(&marker, Bytes::from(owner.to_string()))
        .await?
    {
        Created::Conflict => Ok(false),
        Created::Yes => match storage.head(&format!("{dir}/{METADATA_FILE}")).await {
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(true),
            Err(e) => Err(e),
            // A savepoint written without a reservation: the id is taken. The marker is this call's
            // (the conditional create made it and the owner names this caller alone), so it goes:
            // another writer's savepoint directory keeps exactly what it held. A failed delete
            // leaves a marker that only keeps the id taken, which it is anyway.
            Ok(()) => {
                if let Err(e) = storage.delete(&marker).await {
                    tracing::warn!(%marker, error = %e, "could not delete a reservation in a taken savepoint directory");
                }
                Ok(false)
            }
        },
    }
}

/// Deletes what a savepoint attempt that did not complete put in `savepoints/sp-<id>/` of
/// `storage` (the target): every file of the directory, the reservation last, but only while the
/// reservation is `owner`'s, and never a directory holding a `_metadata`. Returns whether the
/// directory was `owner`'s.
///
/// # Errors
/// [`Error::IllegalState`] if the directory holds a `_metadata` (nothing is deleted); storage errors.
pub async fn delete_own_savepoint_dir(
    storage: &CheckpointStorage,
    id: u64,
    owner: &str,
) -> Result<bool> {
    let dir = savepoint_dir(id);
    let marker = format!("{dir}/{TRIGGER_MARKER}");
    match storage.read(&marker).await {
        Ok(content) if content == owner.as_bytes() => {}
        // Not ours: only what acknowledgements named was ours to delete.
        Ok(_) => return Ok(false),
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(e),
    }
    let files = storage.list_files(&dir).await?;
    if files
        .iter()
        .any(|f| f.path.ends_with(&format!("/{METADATA_FILE}")))
    {
        return Err(Error::IllegalState(format!(
            "{dir} holds a `_metadata`; nothing of it is deleted"
        )));
    }
    for f in files.iter().filter(|f| f.path != marker) {
        storage.delete(&f.path).await?;
    }
    storage.delete(&marker).await?;
    Ok(true)
}

impl CheckpointCoordinator {
    /// Triggers a savepoint into `target` (any storage: the job's own or the user's directory or bucket)
    /// and returns its id, from the same sequence as checkpoint ids. The id is reserved in the job's
    /// storage as a checkpoint's is, and in `target` (`savepoints/sp-<id>/_trigger`): an id some other
    /// writer holds in `target` (another job's savepoint, a converted one) is skipped. The engine injects a
    /// barrier for it as for a checkpoint; each task calls
    /// [`KeyedStateBackend::savepoint`](crate::KeyedStateBackend::savepoint) with `target` and acknowledges
    /// with [`CheckpointCoordinator::acknowledge`]. When the last task acknowledges, the coordinator writes
    /// `savepoints/sp-<id>/_metadata` into `target` (kind [`SnapshotKind::Savepoint`], create-if-absent).
    /// A completed savepoint is not added to the store: no checkpoint subsumes it, and the job never
    /// deletes it. A checkpoint completing first does not abort it; its own abort or the checkpoint timeout
    /// does, and deletes only what this attempt put in `target`.
    ///
    /// # Errors
    /// As [`CheckpointCoordinator::trigger`].
    pub async fn trigger_savepoint(&mut self, target: &CheckpointStorage) -> Result<u64> {
        self.reserve(Some(target.clone())).await
    }

    /// The content of this coordinator's reservation of savepoint `id` in a target.
    pub(super) fn savepoint_owner(&self, id: u64) -> String {
        format!(
            "savepoint {id} reserved by coordinator {} of job {}\n",
            self.instance,
            self.storage.path("")
        )
    }

    /// Reserves savepoint `id` in `target` for this coordinator.
    pub(super) async fn reserve_in_target(
        &self,
        target: &CheckpointStorage,
        id: u64,
    ) -> Result<bool> {
        let reserved = reserve_savepoint_id(target, id, &self.savepoint_owner(id)).await?;
        if !reserved {
            tracing::warn!(
                savepoint_id = id,
                "the savepoint target holds this id already; trying the next one"
            );
        }
        Ok(reserved)
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
                let _ = self.discard_private_dir(savepoint_id).await;
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
