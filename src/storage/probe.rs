//! What a store really does, measured instead of assumed (`docs/faults.md`): whether it refuses to create
//! an object that exists (some S3-compatible servers ignore `If-None-Match: *` and overwrite, which would
//! void every create-if-absent guarantee of the protocol), and what time its own clock shows (file ages
//! are compared on the store's clock, not on the clock of whoever runs the sweep).

use std::time::SystemTime;

use bytes::Bytes;
use object_store::{ObjectStoreExt, PutMode, PutOptions, PutPayload};

use super::CheckpointStorage;
use crate::error::{Error, Result};
use crate::snapshot::layout::{CLOCK_FILE, PROBE_DIR};

/// Checks that the store refuses to create an object that exists: creates a new probe object twice
/// with `PutMode::Create` and expects the second to be refused, then deletes the probe.
///
/// # Errors
/// [`Error::InvalidArgument`] if the store lacks conditional create or overwrote the probe (the
/// protocol cannot run on it: ids, generations and metadata rely on create-if-absent); storage errors
/// (the probe may then be left for the orphan sweep).
pub(crate) async fn probe_conditional_create(storage: &CheckpointStorage) -> Result<()> {
    let relative = format!("{PROBE_DIR}/{:016x}", storage.next_id());
    let path = storage.path(&relative);
    let create = || PutOptions {
        mode: PutMode::Create,
        ..Default::default()
    };
    let first = storage
        .object_store()
        .put_opts(&path, PutPayload::from_static(b"probe 1\n"), create())
        .await;
    match first {
        Ok(_) => {}
        Err(object_store::Error::NotImplemented { .. }) => {
            return Err(no_conditional_create(storage, "has no conditional create"));
        }
        Err(e) => return Err(Error::storage(&path, e)),
    }
    let second = storage
        .object_store()
        .put_opts(&path, PutPayload::from_static(b"probe 2\n"), create())
        .await;
    let verdict = match second {
        Err(
            object_store::Error::AlreadyExists { .. } | object_store::Error::Precondition { .. },
        ) => Ok(()),
        Ok(_) => Err(no_conditional_create(
            storage,
            "overwrote an existing object although asked to create it only if absent \
             (`If-None-Match: *` ignored)",
        )),
        Err(e) => Err(Error::storage(&path, e)),
    };
    if let Err(e) = storage.delete(&relative).await {
        tracing::warn!(path = %path, error = %e, "could not delete a probe object; the orphan sweep will");
    }
    verdict
}

fn no_conditional_create(storage: &CheckpointStorage, what: &str) -> Error {
    Error::InvalidArgument(format!(
        "checkpoint storage {} {what}; checkpoint ids, coordinator generations and metadata need \
         create-if-absent (`PutMode::Create`, `If-None-Match: *` on S3): use a store that honours it",
        storage.object_store()
    ))
}

/// The store's current time: overwrites [`CLOCK_FILE`] and reads its `Last-Modified` back.
///
/// # Errors
/// Storage errors.
pub(crate) async fn store_now(storage: &CheckpointStorage) -> Result<SystemTime> {
    let path = storage.path(CLOCK_FILE);
    storage
        .object_store()
        .put(
            &path,
            PutPayload::from(Bytes::from_static(b"clock probe\n")),
        )
        .await
        .map_err(|e| Error::storage(&path, e))?;
    let meta = storage
        .object_store()
        .head(&path)
        .await
        .map_err(|e| Error::storage(&path, e))?;
    Ok(meta.last_modified.into())
}
