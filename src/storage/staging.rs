//! Staging files of a local checkpoint directory: `object_store`'s local store writes `<name>#<digits>` and
//! renames it into place, so a process killed mid-write leaves the staging file. The store's own listing
//! hides such names (they are not valid object paths), so the orphan sweep finds them here, by walking the
//! directory, and deletes them with the file system.

use std::path::{Path as FsPath, PathBuf};
use std::time::SystemTime;

use object_store::path::Path;

use super::local_read::local_error;
use crate::error::Result;

/// A staging file: path relative to the job root (with its `#<digits>` suffix), size in bytes, and when it
/// was last written.
pub(super) struct StagingFile {
    pub(super) relative: String,
    pub(super) size_bytes: u64,
    pub(super) last_modified: SystemTime,
}

/// Whether a file name is a staging name: `<name>#<one or more digits>`, as `object_store`'s local store
/// writes (and its listing skips).
pub(super) fn is_staging_name(name: &str) -> bool {
    name.rsplit_once('#')
        .is_some_and(|(_, suffix)| !suffix.is_empty() && suffix.bytes().all(|b| b.is_ascii_digit()))
}

/// Every staging file below `root` (the job root's directory). A missing `root` has none.
///
/// # Errors
/// [`crate::Error::Storage`] naming `job_root` if a directory cannot be read.
pub(super) fn list(root: &FsPath, job_root: &Path) -> Result<Vec<StagingFile>> {
    let mut out = Vec::new();
    let mut dirs: Vec<PathBuf> = vec![root.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        let entries = match std::fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(local_error(job_root, e)),
        };
        for entry in entries {
            let entry = entry.map_err(|e| local_error(job_root, e))?;
            let meta = match entry.metadata() {
                Ok(meta) => meta,
                // Renamed into place or deleted since the directory was read.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(local_error(job_root, e)),
            };
            let path = entry.path();
            if meta.is_dir() {
                dirs.push(path);
                continue;
            }
            let is_staging = path
                .file_name()
                .and_then(|n| n.to_str())
                .is_some_and(is_staging_name);
            let relative = path
                .strip_prefix(root)
                .ok()
                .and_then(|r| r.to_str())
                .map(|r| r.replace(std::path::MAIN_SEPARATOR, "/"));
            if let (true, Some(relative)) = (is_staging, relative) {
                out.push(StagingFile {
                    relative,
                    size_bytes: meta.len(),
                    last_modified: meta.modified().map_err(|e| local_error(job_root, e))?,
                });
            }
        }
    }
    Ok(out)
}

/// Deletes one staging file; one already gone is fine (idempotent).
///
/// # Errors
/// [`crate::Error::Storage`] naming the file.
pub(super) fn delete(file: &FsPath, path: &Path) -> Result<()> {
    match std::fs::remove_file(file) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(local_error(path, e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn staging_names_are_a_hash_and_digits_only() {
        assert!(is_staging_name("word-counter-0-ab12.keyed#1"));
        assert!(is_staging_name("000123.sst#4294967296"));
        assert!(!is_staging_name("_metadata"));
        assert!(!is_staging_name("a#"));
        assert!(!is_staging_name("a#1b"));
        assert!(!is_staging_name("a#b#"));
    }
}
