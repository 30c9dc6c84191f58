//! The savepoint lifecycle at the coordinator (`docs/savepoints.md`): triggered at a barrier like a
//! checkpoint, under an id of the same sequence reserved in the job's storage and in the target storage
//! of the user's choosing, where its files and metadata go; it never enters the completed-checkpoint
//! store, so it is never subsumed, never an incremental base and never deleted by the job (`docs/protocol.md`
//! invariant P9). A checkpoint
//! completing first does not end it (`docs/faults.md`, "Savepoints are not checkpoints").

use bytes::Bytes;

use crate::error::{Error, ErrorKind, Result};
use crate::snapshot::layout::{METADATA_FILE, TRIGGER_MARKER, savepoint_dir};
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
