//! Durability of directory entries on a local-directory storage with fsync: new directories and deletes
//! that must be ordered (`docs/protocol.md`, "Local storage durability", invariant P11). Every other store makes an
//! operation durable before it returns, so these are no-ops there.

use std::path::{Path as LocalPath, PathBuf as LocalPathBuf};
use std::sync::Arc;

use object_store::local::LocalFileSystem;
use object_store::path::Path;

use crate::error::{Error, Result};

/// Directory syncs and creations performed, for the tests that pin their order (`cfg(test)` only).
#[cfg(test)]
pub(crate) static EVENTS: parking_lot::Mutex<Vec<String>> = parking_lot::Mutex::new(Vec::new());

/// Records `event` on `path` for the tests (nothing outside `cfg(test)`).
#[cfg(test)]
pub(crate) fn record(event: &str, path: &LocalPath) {
    EVENTS.lock().push(format!("{event} {}", path.display()));
}

/// Records `event` on `path` for the tests (nothing outside `cfg(test)`).
#[cfg(not(test))]
#[inline]
pub(crate) fn record(_event: &str, _path: &LocalPath) {}

/// Syncs the directory `dir` (its entries become durable).
pub(crate) fn sync_dir(dir: &LocalPath) -> Result<()> {
    record("sync", dir);
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::local(dir.display(), e))
}

/// Creates `dir` and its missing parents; with `fsync`, syncs every new directory and the first existing
/// ancestor, whose entry list changed (as object_store's local store does for its own writes).
///
/// A relative `dir` is taken from the current directory. (Its ancestors must be named, not derived
/// with `Path::parent`: the parent of `checkpoints` is the empty path, which cannot be opened to sync.)
pub(crate) fn create_dirs(dir: &LocalPath, fsync: bool) -> Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    let dir = &std::path::absolute(dir).map_err(|e| Error::local(dir.display(), e))?;
    let mut first_existing = dir.as_path();
    while !first_existing.is_dir() {
        match first_existing.parent() {
            Some(parent) => first_existing = parent,
            None => break,
        }
    }
    std::fs::create_dir_all(dir).map_err(|e| Error::local(dir.display(), e))?;
    record("create", dir);
    if fsync {
        let mut current = Some(dir.as_path());
        while let Some(d) = current {
            sync_dir(d)?;
            if d == first_existing {
                break;
            }
            current = d.parent();
        }
    }
    Ok(())
}

/// A local-directory store's file system: the one seam where checkpoint storage treats a local directory
/// apart from other stores (memory-mapped reads, kernel copies, the staging files a killed writer leaves,
/// and fsync of files and directory entries).
#[derive(Debug, Clone)]
pub(crate) struct LocalDir {
    fs: Arc<LocalFileSystem>,
    fsync: bool,
}

impl LocalDir {
    pub(crate) fn new(fs: Arc<LocalFileSystem>, fsync: bool) -> Self {
        LocalDir { fs, fsync }
    }

    /// The file system the store writes through.
    pub(crate) fn fs(&self) -> &LocalFileSystem {
        &self.fs
    }

    /// Whether files and directory entries are synced before they count as written.
    #[cfg_attr(not(feature = "rocksdb"), allow(dead_code))]
    pub(crate) fn fsync(&self) -> bool {
        self.fsync
    }

    /// Where the object `path` is on disk.
    ///
    /// # Errors
    /// [`Error::Storage`] for a path the file system cannot name.
    pub(crate) fn file(&self, path: &Path) -> Result<LocalPathBuf> {
        self.fs
            .path_to_filesystem(path)
            .map_err(|e| Error::storage(path, e))
    }

    /// Syncs the directory of object prefix `path` (`shown` in errors) when files are synced; a directory
    /// that does not exist (nothing was ever written there) is not an error.
    ///
    /// # Errors
    /// [`Error::Local`] if the sync fails.
    pub(crate) async fn sync_dir(&self, path: &Path, shown: &str) -> Result<()> {
        if !self.fsync {
            return Ok(());
        }
        let dir = self.file(path)?;
        tokio::task::spawn_blocking(move || if dir.is_dir() { sync_dir(&dir) } else { Ok(()) })
            .await
            .map_err(|e| Error::local(shown, e))?
    }
}

#[cfg(test)]
mod tests {
    use object_store::ObjectStoreExt;

    use super::*;
    use crate::storage::CheckpointStorage;

    /// The events on paths below `dir`, with `dir` cut off.
    fn events_below(dir: &LocalPath) -> Vec<String> {
        let prefix = dir.display().to_string();
        EVENTS
            .lock()
            .iter()
            .filter(|e| e.contains(&prefix))
            .map(|e| e.replace(&prefix, ""))
            .collect()
    }

    /// The README's main command failed on a fresh clone: the default checkpoint directory `checkpoints`
    /// (relative, no `./`) has the parent `""`, whose sync failed, so the first run stopped with "cannot
    /// create checkpoint directory" and only the second one ran.
    #[test]
    fn relative_checkpoint_directories_are_created_in_every_form() {
        let base = tempfile::Builder::new()
            .prefix("sb-relative-")
            .tempdir_in(".")
            .unwrap();
        let name = base
            .path()
            .file_name()
            .unwrap()
            .to_str()
            .unwrap()
            .to_string();
        // Directories made directly in the working directory (whose parent is `""`), removed at the end.
        struct Remove(Vec<String>);
        impl Drop for Remove {
            fn drop(&mut self) {
                for dir in &self.0 {
                    let _ = std::fs::remove_dir_all(dir);
                }
            }
        }
        let _remove = Remove(vec![format!("{name}-top"), format!("{name}-a")]);
        for dir in [
            format!("{name}-top"),
            format!("{name}-a/b"),
            format!("{name}/checkpoints"),
            format!("{name}/a/b"),
            format!("./{name}/dot"),
            format!("{name}/x/../up"),
        ] {
            let storage = CheckpointStorage::local(&dir, "job", &crate::StorageConfig::default())
                .unwrap_or_else(|e| panic!("{dir}: {e}"));
            let rt = tokio::runtime::Builder::new_current_thread()
                .build()
                .unwrap();
            rt.block_on(storage.put_if_absent("chk-1/_trigger", bytes::Bytes::from_static(b"x")))
                .unwrap();
            assert!(
                std::path::Path::new(&dir)
                    .join("job/chk-1/_trigger")
                    .is_file(),
                "{dir}"
            );
        }
    }

    /// Regression: local storage never fsynced the parents of new directories nor the job root, and deletes
    /// were not ordered by fsync (a crash could keep a checkpoint's `_metadata` while its files were gone).
    #[tokio::test]
    async fn local_storage_syncs_new_directories_and_orders_deletes() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("a").join("b");
        let storage =
            CheckpointStorage::local(&root, "job", &crate::StorageConfig::default()).unwrap();
        assert_eq!(
            events_below(dir.path()),
            ["create /a/b", "sync /a/b", "sync /a", "sync "],
            "every new directory and the first existing one are synced"
        );
        for file in ["chk-1/_metadata", "chk-1/op-0.keyed"] {
            storage
                .object_store()
                .put(&storage.path(file), bytes::Bytes::from_static(b"x").into())
                .await
                .unwrap();
        }
        // As a checkpoint's discard does it: the metadata confirmed gone, then the directory.
        storage.delete_confirmed("chk-1/_metadata").await.unwrap();
        storage.delete_dir("chk-1").await.unwrap();
        let deletes: Vec<String> = events_below(dir.path())
            .into_iter()
            .skip(4)
            .filter(|e| !e.starts_with("sync /a/b/job/chk-1/"))
            .collect();
        assert_eq!(
            deletes,
            [
                "delete /a/b/job/chk-1/_metadata",
                "sync /a/b/job/chk-1",
                "delete /a/b/job/chk-1/op-0.keyed",
            ],
            "the metadata's delete is durable before the files go"
        );
    }
}
