//! Checkpoint storage over `object_store`: reads, writes, lists and deletes of a job's files under its
//! root, with the local directory's durability behind the same calls. Where each file lives:
//! [`crate::snapshot::layout`].

mod durable;
mod file;
mod local_read;
pub(crate) mod probe;
#[cfg(feature = "aws")]
mod s3_uploads;
mod staging;
#[cfg(feature = "rocksdb")]
pub(crate) mod transfer;
mod uploads;
mod url;

use std::sync::Arc;

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};

use crate::error::{Error, ErrorKind, Result};
use crate::format::metadata;
use crate::ids::IdSource;
use crate::snapshot::handle::CheckpointMetadata;
use crate::snapshot::layout::{
    METADATA_FILE, SAVEPOINT_DIR, checkpoint_dir, checkpoint_dir_id, savepoint_dir,
    savepoint_dir_id,
};

use durable::LocalDir;
pub(crate) use file::{AbortQueue, FileWriter, RangeSource};
pub use uploads::IncompleteUpload;
use uploads::Multipart;
pub use url::StorageConfig;

/// Checkpoint storage of one job: an object store and the job's root path in it.
///
/// Cheap to clone; all clones share the store.
#[derive(Clone, Debug)]
pub struct CheckpointStorage {
    store: Arc<dyn ObjectStore>,
    root: Path,
    /// Set for a local directory: the special cases of one (memory maps, kernel copies, fsync).
    local: Option<LocalDir>,
    /// Where the ids in object names come from (random by default).
    ids: Arc<dyn IdSource>,
    /// Multipart uploads whose abort failed, retried later.
    aborts: AbortQueue,
    /// Lists and aborts incomplete multipart uploads, where the store can (S3).
    uploads: Multipart,
    /// The location's identity when it has one beyond this object (a local directory's path, a cloud
    /// URL): two storages of one location then compare equal in [`CheckpointStorage::same_location`].
    location: Option<String>,
}

impl CheckpointStorage {
    /// The next id for a name no other writer produces (from the storage's id source).
    pub(crate) fn next_id(&self) -> u64 {
        self.ids.next_id()
    }

    /// A new backend identity `<operator>-<subtask>-<16 hex>`, the hex from the storage's id source.
    pub(crate) fn new_backend_id(&self, operator_id: &str, subtask_index: u32) -> String {
        format!("{operator_id}-{subtask_index}-{:016x}", self.next_id())
    }

    /// Whether `other` is the same job root of the same store: the same object, or two handles of one
    /// local directory or cloud location. A diff base uploaded to one storage is reused only in the same.
    pub fn same_location(&self, other: &CheckpointStorage) -> bool {
        let same_store = Arc::ptr_eq(&self.store, &other.store)
            || (self.location.is_some() && self.location == other.location);
        same_store && self.root == other.root
    }

    /// Sets the location's identity (a cloud URL); see [`CheckpointStorage::same_location`].
    pub(crate) fn set_location(&mut self, location: String) {
        self.location = Some(location);
    }

    /// Multipart uploads whose abort failed and waits for a retry.
    pub(crate) fn aborts(&self) -> &AbortQueue {
        &self.aborts
    }

    /// The underlying object store.
    pub fn object_store(&self) -> &Arc<dyn ObjectStore> {
        &self.store
    }

    /// The job root in the object store (`<prefix>/<job id>`), as text: names the job in local recovery's
    /// directory (`docs/local-recovery.md`).
    pub(crate) fn job_root(&self) -> String {
        self.root.to_string()
    }

    /// Object-store path of `relative` (a path below the job root).
    pub fn path(&self, relative: &str) -> Path {
        Path::from(format!("{}/{relative}", self.root))
    }

    /// Creates `relative` with `bytes` atomically (`PutMode::Create`).
    ///
    /// A retried create may find its own earlier success: an existing object is read and compared, and
    /// only other content is a [`Created::Conflict`] (`docs/protocol.md`, "Completion point").
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] if the store does not support conditional create; storage errors, after
    /// which the write may or may not have taken effect.
    pub(crate) async fn put_if_absent(&self, relative: &str, bytes: Bytes) -> Result<Created> {
        let path = self.path(relative);
        let opts = PutOptions {
            mode: PutMode::Create,
            ..Default::default()
        };
        match self
            .store
            .put_opts(&path, PutPayload::from_bytes(bytes.clone()), opts)
            .await
        {
            Ok(_) => Ok(Created::Yes),
            Err(object_store::Error::AlreadyExists { .. }) => {
                if self.read(relative).await? == bytes {
                    Ok(Created::Yes)
                } else {
                    Ok(Created::Conflict)
                }
            }
            Err(object_store::Error::NotImplemented { .. }) => {
                Err(Error::InvalidArgument(format!(
                    "checkpoint storage {} cannot create an object only if it is absent (conditional \
                 create, `If-None-Match: *` on S3), which checkpoint ids and metadata need; enable it \
                 on the store",
                    self.store
                )))
            }
            Err(e) => Err(Error::storage(&path, e)),
        }
    }

    /// Streams a new file to `relative` (one put below 8 MiB, a multipart upload above, aborted unless it
    /// completes).
    pub(crate) fn writer(&self, relative: &str) -> FileWriter {
        FileWriter::new(self.store.clone(), self.path(relative), self.aborts.clone())
    }

    /// The whole content of `relative` (memory-mapped for a local directory).
    pub(crate) async fn read(&self, relative: &str) -> Result<Bytes> {
        let path = self.path(relative);
        if let Some(local) = &self.local {
            return local_read::map_file(local.fs(), &path);
        }
        let result = self
            .store
            .get(&path)
            .await
            .map_err(|e| Error::storage(&path, e))?;
        result.bytes().await.map_err(|e| Error::storage(&path, e))
    }

    /// A source for range reads of `relative`: a memory map for a local directory, ranged requests otherwise.
    pub(crate) async fn open(&self, relative: &str) -> Result<RangeSource> {
        let path = self.path(relative);
        if self.local.is_some() {
            let bytes = self.read(relative).await?;
            return Ok(RangeSource::Bytes { bytes, path });
        }
        let meta = self
            .store
            .head(&path)
            .await
            .map_err(|e| Error::storage(&path, e))?;
        Ok(RangeSource::Remote {
            store: self.store.clone(),
            len: meta.size,
            path,
        })
    }

    /// Succeeds if `relative` exists.
    ///
    /// # Errors
    /// [`Error::NotFound`] if it does not; other storage errors.
    pub(crate) async fn head(&self, relative: &str) -> Result<()> {
        let path = self.path(relative);
        self.store
            .head(&path)
            .await
            .map(|_| ())
            .map_err(|e| Error::storage(&path, e))
    }

    /// Files below the directory `relative`: their paths relative to the job root, sizes in bytes and
    /// last-modified times, in no particular order.
    pub(crate) async fn list_files(&self, relative: &str) -> Result<Vec<ListedFile>> {
        let prefix = self.path(relative);
        let root = self.root.as_ref().len() + 1;
        let metas: Vec<object_store::ObjectMeta> = self
            .store
            .list(Some(&prefix))
            .try_collect()
            .await
            .map_err(|e| Error::storage(&prefix, e))?;
        Ok(metas
            .into_iter()
            .filter_map(|m| {
                let full = m.location.as_ref();
                Some(ListedFile {
                    path: full.get(root..)?.to_string(),
                    size_bytes: m.size,
                    last_modified: m.last_modified.into(),
                    staging: false,
                })
            })
            .collect())
    }

    /// Deletes `relative`; a missing file is not an error.
    pub(crate) async fn delete(&self, relative: &str) -> Result<()> {
        let path = self.path(relative);
        self.note_delete(&path);
        match self.store.delete(&path).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(Error::storage(&path, e)),
        }
    }

    /// Deletes `relative` and, on a local directory with fsync, syncs its directory, so that the delete is
    /// durable before anything that must follow it (a checkpoint's files after its `_metadata`).
    pub(crate) async fn delete_durably(&self, relative: &str) -> Result<()> {
        self.delete(relative).await?;
        self.sync_parent(relative).await
    }

    /// [`CheckpointStorage::delete_durably`], then checks that the object is really gone: a store that
    /// acknowledged a delete it did not perform (a lost delete) is reported, never assumed.
    ///
    /// # Errors
    /// [`Error::IllegalState`] naming the object if it still exists; storage errors.
    pub(crate) async fn delete_confirmed(&self, relative: &str) -> Result<()> {
        self.delete_durably(relative).await?;
        match self.head(relative).await {
            Err(e) if e.kind() == crate::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e),
            Ok(()) => Err(Error::IllegalState(format!(
                "`{}` still exists after the store acknowledged its delete",
                self.path(relative)
            ))),
        }
    }

    /// Deletes every file below the directory `relative` except those named in `keep` (file names
    /// directly inside it, e.g. the `_trigger` marker).
    pub(crate) async fn delete_dir_except(&self, relative: &str, keep: &[&str]) -> Result<()> {
        let kept: Vec<String> = keep.iter().map(|k| format!("{relative}/{k}")).collect();
        for file in self.list_files(relative).await? {
            if !kept.contains(&file.path) {
                self.delete(&file.path).await?;
            }
        }
        Ok(())
    }

    /// Deletes every file below the directory `relative`.
    pub(crate) async fn delete_dir(&self, relative: &str) -> Result<()> {
        let prefix = self.path(relative);
        let listed: Vec<Path> = self
            .store
            .list(Some(&prefix))
            .map_ok(|m| m.location)
            .try_collect()
            .await
            .map_err(|e| Error::storage(&prefix, e))?;
        listed.iter().for_each(|p| self.note_delete(p));
        let locations = futures::stream::iter(listed.into_iter().map(Ok)).boxed();
        let mut deleted = self.store.delete_stream(locations);
        while let Some(result) = deleted.next().await {
            match result {
                Ok(_) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(Error::storage(&prefix, e)),
            }
        }
        Ok(())
    }

    /// The local directory's special cases, for a local-directory storage (the RocksDB backend's file
    /// transfers).
    #[cfg_attr(not(feature = "rocksdb"), allow(dead_code))]
    pub(crate) fn local_dir(&self) -> Option<&LocalDir> {
        self.local.as_ref()
    }

    /// Syncs the directory of `relative` (a file below the job root) on a local directory with fsync; does
    /// nothing on other stores.
    ///
    /// # Errors
    /// [`Error::Local`] if the sync fails.
    pub(crate) async fn sync_parent(&self, relative: &str) -> Result<()> {
        let dir = relative.rsplit_once('/').map_or("", |(dir, _)| dir);
        self.sync_local_dir(dir).await
    }

    /// Syncs the directory `relative` below the job root (`""`: the job root) on a local directory with
    /// fsync. A directory that does not exist (nothing was ever written there) is not an error.
    ///
    /// # Errors
    /// [`Error::Local`] if the sync fails.
    pub(crate) async fn sync_local_dir(&self, relative: &str) -> Result<()> {
        let Some(local) = &self.local else {
            return Ok(());
        };
        let path = if relative.is_empty() {
            self.root.clone()
        } else {
            self.path(relative)
        };
        local.sync_dir(&path, relative).await
    }

    /// Aborts the incomplete multipart uploads under the job's root started at least `min_age` before
    /// `now` (the store's clock), where the store can list them; returns how many. Younger ones may be
    /// uploads in flight.
    ///
    /// # Errors
    /// Storage errors while listing or aborting.
    pub(crate) async fn abort_stale_uploads(
        &self,
        min_age: std::time::Duration,
        now: std::time::SystemTime,
    ) -> Result<usize> {
        self.uploads.abort_stale(&self.root, min_age, now).await
    }

    /// Incomplete multipart uploads under the job's root, where the store can list them (S3); `None`
    /// where it cannot (give the bucket a lifecycle rule that aborts them, `docs/protocol.md`).
    ///
    /// # Errors
    /// Storage errors while listing.
    pub async fn incomplete_uploads(&self) -> Result<Option<Vec<IncompleteUpload>>> {
        self.uploads.incomplete(&self.root).await
    }

    /// Notes a delete in the durability tests' event log (`cfg(test)` only).
    #[cfg_attr(not(test), inline(always))]
    fn note_delete(&self, path: &Path) {
        #[cfg(test)]
        if let Some(local) = &self.local
            && let Ok(file) = local.file(path)
        {
            durable::record("delete", &file);
        }
        #[cfg(not(test))]
        let _ = path;
    }

    /// Every file under the job root (paths relative to it), in no particular order. For a local directory
    /// this includes the staging files (`<name>#<digits>`) that a process killed mid-write left, which the
    /// store's own listing hides ([`ListedFile::staging`]).
    pub(crate) async fn list_all(&self) -> Result<Vec<ListedFile>> {
        let root = self.root.as_ref().len() + 1;
        let metas: Vec<object_store::ObjectMeta> = self
            .store
            .list(Some(&self.root))
            .try_collect()
            .await
            .map_err(|e| Error::storage(&self.root, e))?;
        let mut files: Vec<ListedFile> = metas
            .into_iter()
            .filter_map(|m| {
                Some(ListedFile {
                    path: m.location.as_ref().get(root..)?.to_string(),
                    size_bytes: m.size,
                    last_modified: m.last_modified.into(),
                    staging: false,
                })
            })
            .collect();
        if let Some(local) = &self.local {
            let dir = local.file(&self.root)?;
            files.extend(
                staging::list(&dir, &self.root)?
                    .into_iter()
                    .map(|f| ListedFile {
                        path: f.relative,
                        size_bytes: f.size_bytes,
                        last_modified: f.last_modified,
                        staging: true,
                    }),
            );
        }
        Ok(files)
    }

    /// Deletes a file [`CheckpointStorage::list_all`] listed, a staging file included (which the store
    /// itself refuses to name). Idempotent.
    ///
    /// # Errors
    /// Storage errors.
    pub(crate) async fn delete_listed(&self, file: &ListedFile) -> Result<()> {
        match (&self.local, file.staging) {
            (Some(local), true) => {
                // The store refuses staging names as object paths: map the job root, then append.
                let root = local.file(&self.root)?;
                let path = self.path(&file.path);
                self.note_delete(&path);
                staging::delete(&root.join(&file.path), &path)
            }
            _ => {
                // The listed name as it is: `path()` would percent-encode characters such as `#` that a
                // foreign writer's name may hold, and the delete would miss the object.
                let path = Path::parse(format!("{}/{}", self.root, file.path))
                    .unwrap_or_else(|_| self.path(&file.path));
                self.note_delete(&path);
                match self.store.delete(&path).await {
                    Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
                    Err(e) => Err(Error::storage(&path, e)),
                }
            }
        }
    }

    /// Ids of the directories `savepoints/sp-<n>` under the job root, ascending (with or without
    /// metadata).
    ///
    /// # Errors
    /// Storage errors while listing.
    pub async fn list_savepoint_dirs(&self) -> Result<Vec<u64>> {
        let dir = Path::from(format!("{}/{SAVEPOINT_DIR}", self.root));
        let listing = self
            .store
            .list_with_delimiter(Some(&dir))
            .await
            .map_err(|e| Error::storage(&dir, e))?;
        let mut ids: Vec<u64> = listing
            .common_prefixes
            .iter()
            .filter_map(|p| savepoint_dir_id(p.filename()?))
            .collect();
        ids.sort_unstable();
        Ok(ids)
    }

    /// Ids of the directories `chk-<n>` under the job root, ascending (with or without metadata).
    ///
    /// # Errors
    /// Storage errors while listing.
    pub async fn list_checkpoint_dirs(&self) -> Result<Vec<u64>> {
        let listing = self
            .store
            .list_with_delimiter(Some(&self.root))
            .await
            .map_err(|e| Error::storage(&self.root, e))?;
        let mut ids: Vec<u64> = listing
            .common_prefixes
            .iter()
            .filter_map(|p| checkpoint_dir_id(p.filename()?))
            .collect();
        ids.sort_unstable();
        Ok(ids)
    }
}

/// Outcome of [`CheckpointStorage::put_if_absent`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Created {
    /// The object now holds the bytes (written now, or by an earlier attempt of the same write).
    Yes,
    /// The object exists with other content: another writer created it first.
    Conflict,
}

/// One file found by [`CheckpointStorage::list_files`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ListedFile {
    /// Path relative to the job root.
    pub(crate) path: String,
    /// Size in bytes.
    pub(crate) size_bytes: u64,
    /// When the store last wrote it.
    pub(crate) last_modified: std::time::SystemTime,
    /// A staging file of a local directory (`<name>#<digits>`): never part of a checkpoint; delete it
    /// with [`CheckpointStorage::delete_listed`].
    pub(crate) staging: bool,
}

impl CheckpointStorage {
    /// The metadata of completed checkpoint `id`, read from storage (for a task that restores on its own,
    /// away from the coordinator; read-only).
    ///
    /// # Errors
    /// [`Error::NotFound`] if the checkpoint has no `_metadata` (never completed,
    /// or deleted); [`Error::Corrupt`] if it does not decode; storage errors.
    pub async fn read_checkpoint_metadata(&self, id: u64) -> Result<CheckpointMetadata> {
        let relative = format!("{}/{METADATA_FILE}", checkpoint_dir(id));
        let bytes: Bytes = self.read(&relative).await?;
        metadata::decode(&bytes, self.path(&relative).as_ref())
    }

    /// The metadata of completed savepoint `id` in this storage (`savepoints/sp-<id>/_metadata`, as
    /// [`CheckpointCoordinator::trigger_savepoint`](crate::checkpoint::CheckpointCoordinator::trigger_savepoint) writes
    /// it): its handles restore either backend (canonical) or the RocksDB backend (native), in
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
