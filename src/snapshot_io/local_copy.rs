//! Local recovery: a copy of each of a backend's own checkpoints kept on local disk beside the upload,
//! read first by a restore on the same machine, and deleted in step with the checkpoints it copies (as
//! Flink's local recovery, `TaskLocalStateStore`; `docs/local-recovery.md`).
//!
//! Layout: `<root>/<job>/<backend id>/chk-<n>/<file name>`, where `<job>` is the checkpoint storage's job
//! root (`CheckpointStorage::job_root`), one directory per checkpoint of one backend, its files named by
//! [`local_file_name`]; every name is one escaped path component. A copy is written into
//! `<root>/<job>/<backend id>/.tmp-chk-<n>-<16 hex>/` and renamed into place when complete, so a
//! directory `chk-<n>` holds a whole checkpoint or is absent; its files are trusted only when their size
//! and CRC32 match the handle's.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::snapshot::handle::{KeyedStateHandle, StateFile};
use crate::storage::CheckpointStorage;
#[cfg(feature = "rocksdb")]
use crate::storage::transfer::{Transferred, copy_verified};

/// The name a file of a handle has inside a local copy: its RocksDB local name (`000012.sst`), or the
/// last component of its storage path for a keyed file.
pub(crate) fn local_file_name(file: &StateFile) -> &str {
    if file.local_name.is_empty() {
        file.path.rsplit('/').next().unwrap_or(&file.path)
    } else {
        &file.local_name
    }
}

/// A name usable as one path component: bytes outside `[A-Za-z0-9._-]` become `%XX`, and `.`/`..` are
/// escaped too (a backend id from a handle is data, never a path).
fn component(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for b in name.bytes() {
        if b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || (b == b'.' && name.len() > 2) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    if out.is_empty() {
        out.push_str("%0");
    }
    out
}

/// Why a local copy of a file was not used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum NotLocal {
    /// No copy of the file's checkpoint, or not of this file.
    Missing,
    /// A copy whose size or CRC32 differs from the handle, or that could not be read.
    Damaged(String),
}

impl std::fmt::Display for NotLocal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NotLocal::Missing => f.write_str("no local copy"),
            NotLocal::Damaged(why) => write!(f, "local copy damaged: {why}"),
        }
    }
}

/// The local copies of checkpoints under a local-recovery root: where a copy goes, which a restore may
/// read, and which a confirmation or an abort deletes. Cheap to clone (one path).
#[derive(Debug, Clone)]
pub(crate) struct LocalCopies {
    root: PathBuf,
}

impl LocalCopies {
    /// The copies under `root` (created when the first copy is written).
    pub(crate) fn new(root: PathBuf) -> Self {
        LocalCopies { root }
    }

    /// Directory of the copies of the job whose checkpoints go to `storage`.
    fn job_dir(&self, storage: &CheckpointStorage) -> PathBuf {
        self.root.join(component(&storage.job_root()))
    }

    /// Directory of the copy of checkpoint `checkpoint_id` of `backend_id` in `storage`.
    fn checkpoint_dir(
        &self,
        storage: &CheckpointStorage,
        backend_id: &str,
        checkpoint_id: u64,
    ) -> PathBuf {
        self.job_dir(storage)
            .join(component(backend_id))
            .join(format!("chk-{checkpoint_id}"))
    }

    /// A writer of the copy of checkpoint `checkpoint_id` of `backend_id`, whose files go to `storage`,
    /// into a new temporary directory.
    ///
    /// # Errors
    /// [`Error::Local`] if the directory cannot be created.
    pub(crate) fn writer(
        &self,
        storage: &CheckpointStorage,
        backend_id: &str,
        checkpoint_id: u64,
    ) -> Result<LocalCopyWriter> {
        let target = self.checkpoint_dir(storage, backend_id, checkpoint_id);
        let parent = target
            .parent()
            .ok_or_else(|| Error::local(target.display(), "no parent directory"))?;
        let tmp = parent.join(format!(
            ".tmp-chk-{checkpoint_id}-{:016x}",
            storage.next_id()
        ));
        std::fs::create_dir_all(&tmp).map_err(|e| Error::local(tmp.display(), e))?;
        Ok(LocalCopyWriter {
            tmp,
            target,
            published: false,
        })
    }

    /// Where the local copy of `file` in checkpoint `checkpoint_id` of backend `backend_id` (whose
    /// checkpoints go to `storage`) would be.
    pub(crate) fn copy_path(
        &self,
        storage: &CheckpointStorage,
        backend_id: &str,
        checkpoint_id: u64,
        file: &StateFile,
    ) -> PathBuf {
        self.checkpoint_dir(storage, backend_id, checkpoint_id)
            .join(component(local_file_name(file)))
    }

    /// Where the local copy of `file` of `handle`, read from `storage`, would be, and what it must hold.
    pub(crate) fn file(
        &self,
        storage: &CheckpointStorage,
        handle: &KeyedStateHandle,
        file: &StateFile,
    ) -> LocalFile {
        LocalFile {
            path: self
                .checkpoint_dir(storage, &handle.backend_id, handle.checkpoint_id)
                .join(component(local_file_name(file))),
            size_bytes: file.size_bytes,
            crc32: file.crc32,
        }
    }

    /// Checkpoint `checkpoint_id` of the job whose checkpoints go to `storage` was confirmed: every copy
    /// of an earlier checkpoint of that job is deleted, whichever backend wrote it (subsumed, never
    /// confirmed, or left by a backend that died: a failover restores under a new backend id, the heap
    /// backend always), with abandoned temporary directories and backend directories left empty.
    /// Checkpoint ids never repeat within a job and grow along its line, so no later restore of the job
    /// asks for those (a fallback to an older retained checkpoint reads storage). Best effort: a failure
    /// is logged, never returned (a copy left behind is only disk space; a restore checks every byte).
    pub(crate) fn confirmed(&self, storage: &CheckpointStorage, checkpoint_id: u64) {
        let Ok(backends) = std::fs::read_dir(self.job_dir(storage)) else {
            return;
        };
        for backend in backends.flatten() {
            let dir = backend.path();
            let Ok(copies) = std::fs::read_dir(&dir) else {
                continue;
            };
            for copy in copies.flatten() {
                let name = copy.file_name();
                if name
                    .to_str()
                    .and_then(copy_id)
                    .is_some_and(|id| id < checkpoint_id)
                {
                    remove_logged(&copy.path());
                }
            }
            // Fails, as it should, while the directory holds anything.
            let _ = std::fs::remove_dir(&dir);
        }
    }

    /// Checkpoint `checkpoint_id` of `backend_id` (its files in `storage`) was aborted: its copy is
    /// deleted (best effort, as [`LocalCopies::confirmed`]).
    pub(crate) fn aborted(
        &self,
        storage: &CheckpointStorage,
        backend_id: &str,
        checkpoint_id: u64,
    ) {
        remove_logged(&self.checkpoint_dir(storage, backend_id, checkpoint_id));
    }
}

/// The local copy of one file of a handle: its path (which may not exist) and the size and CRC32 the
/// handle gives it. Owned, so a blocking thread can check it.
#[derive(Debug, Clone)]
pub(crate) struct LocalFile {
    path: PathBuf,
    size_bytes: u64,
    crc32: u32,
}

impl LocalFile {
    /// Puts the copy at the new path `target` (a hard link when `hard_link` is set and both are on one
    /// file system, else a copy), checked against the handle's size and CRC32 (the whole file read
    /// once); nothing is left at `target` when it is not used.
    #[cfg(feature = "rocksdb")]
    pub(crate) fn restore_to(
        &self,
        target: &Path,
        hard_link: bool,
    ) -> std::result::Result<(), NotLocal> {
        let expected = Transferred {
            size_bytes: self.size_bytes,
            crc32: self.crc32,
        };
        copy_verified(
            &self.path,
            target,
            expected,
            hard_link,
            &self.path.display(),
        )
        .map_err(|e| {
            let _ = std::fs::remove_file(target);
            match e {
                Error::NotFound { .. } => NotLocal::Missing,
                other => NotLocal::Damaged(other.to_string()),
            }
        })
    }

    /// The copy's bytes, if it exists with the handle's size and CRC32.
    pub(crate) fn read(&self) -> std::result::Result<Vec<u8>, NotLocal> {
        let path = self.path.display();
        let bytes = match std::fs::read(&self.path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(NotLocal::Missing),
            Err(e) => return Err(NotLocal::Damaged(format!("{path}: {e}"))),
        };
        if bytes.len() as u64 != self.size_bytes {
            return Err(NotLocal::Damaged(format!(
                "{path}: {} bytes, the handle says {}",
                bytes.len(),
                self.size_bytes
            )));
        }
        let crc = crc32fast::hash(&bytes);
        if crc != self.crc32 {
            return Err(NotLocal::Damaged(format!(
                "{path}: CRC32 {crc:08x}, the handle says {:08x}",
                self.crc32
            )));
        }
        Ok(bytes)
    }
}

/// The checkpoint id of a copy's directory name, `chk-<n>` or `.tmp-chk-<n>-<nonce>`.
fn copy_id(name: &str) -> Option<u64> {
    if let Some(id) = name.strip_prefix("chk-") {
        return id.parse().ok();
    }
    let rest = name.strip_prefix(".tmp-chk-")?;
    rest.split('-').next()?.parse().ok()
}

fn remove_logged(dir: &Path) {
    match std::fs::remove_dir_all(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => {
            tracing::warn!(dir = %dir.display(), error = %e, "could not delete a local copy of a checkpoint");
        }
    }
}

/// One local copy being written: files go into a temporary directory, which [`LocalCopyWriter::publish`]
/// renames into place; dropped unpublished, it deletes what it wrote.
#[derive(Debug)]
pub(crate) struct LocalCopyWriter {
    tmp: PathBuf,
    target: PathBuf,
    published: bool,
}

impl LocalCopyWriter {
    /// Path of the copy's file for `file` of the handle, to be created by the caller.
    pub(crate) fn path_for(&self, name: &str) -> PathBuf {
        self.tmp.join(component(name))
    }

    /// Adds the local file `source` as `name`: a hard link when both are on one file system (the source
    /// is immutable: an SST of a native checkpoint, a file of a heap chain's earlier copy), otherwise a
    /// copy.
    ///
    /// # Errors
    /// [`Error::Local`] if neither works.
    pub(crate) fn link_or_copy(&self, source: &Path, name: &str) -> Result<()> {
        let to = self.path_for(name);
        if std::fs::hard_link(source, &to).is_ok() {
            return Ok(());
        }
        std::fs::copy(source, &to).map(|_| ()).map_err(|e| {
            // No partial file stays behind (a restore would refuse it by its size anyway).
            let _ = std::fs::remove_file(&to);
            Error::local(to.display(), e)
        })
    }

    /// Moves the complete copy into place (replacing an older copy of the same checkpoint, which a
    /// restore would not trust anyway unless it matched).
    ///
    /// # Errors
    /// [`Error::Local`] if the rename fails; the temporary directory is deleted then.
    pub(crate) fn publish(mut self) -> Result<()> {
        if self.target.exists() {
            remove_logged(&self.target);
        }
        std::fs::rename(&self.tmp, &self.target)
            .map_err(|e| Error::local(self.target.display(), e))?;
        self.published = true;
        Ok(())
    }
}

impl Drop for LocalCopyWriter {
    fn drop(&mut self) {
        if !self.published {
            remove_logged(&self.tmp);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn components_never_leave_their_directory() {
        assert_eq!(component("op-1-00ff"), "op-1-00ff");
        assert_eq!(component("a/b"), "a%2Fb");
        assert_eq!(component(".."), "%2E%2E");
        assert_eq!(component("."), "%2E");
        assert_eq!(component(""), "%0");
        assert_eq!(component("000012.sst"), "000012.sst");
    }

    #[test]
    fn copy_ids_are_read_from_final_and_temporary_names() {
        assert_eq!(copy_id("chk-12"), Some(12));
        assert_eq!(copy_id(".tmp-chk-7-00000000000000ff"), Some(7));
        assert_eq!(copy_id("chk-x"), None);
        assert_eq!(copy_id("other"), None);
    }
}
