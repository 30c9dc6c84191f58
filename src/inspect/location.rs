//! Where one checkpoint or savepoint lives, parsed from its directory's path or URL.

use crate::error::{Error, Result};
use crate::snapshot::handle::{CheckpointMetadata, SnapshotKind};
use crate::snapshot::layout::SAVEPOINT_DIR;
use crate::storage::{CheckpointStorage, StorageConfig};

/// Where one checkpoint or savepoint lives, from its directory's path or URL (see
/// [`SnapshotLocation::parse`]).
#[derive(Debug, Clone)]
pub struct SnapshotLocation {
    /// The storage of the job the snapshot belongs to (its root is the directory above `chk-<n>` or
    /// `savepoints/`).
    pub storage: CheckpointStorage,
    /// Checkpoint (`chk-<n>`) or savepoint (`savepoints/sp-<n>`).
    pub kind: SnapshotKind,
    /// Its id `n`.
    pub id: u64,
}

impl SnapshotLocation {
    /// Parses the directory of one snapshot, as a local path or URL (`file://`, `s3://`, ...):
    /// `<root>/<job>/chk-<n>` or `<root>/<job>/savepoints/sp-<n>` (a trailing `/` is allowed), and opens
    /// the job's storage there (`CheckpointStorage::from_url(<root>, <job>)`).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] naming `dir` if it does not end in one of
    /// the two forms, or if the storage cannot be opened (as [`CheckpointStorage::from_url`]).
    pub fn parse(dir: &str, settings: &StorageConfig) -> Result<Self> {
        let invalid = || {
            Error::InvalidArgument(format!(
                "`{dir}` is not a checkpoint or savepoint directory (<root>/<job>/chk-<n> or \
                 <root>/<job>/{SAVEPOINT_DIR}/sp-<n>)"
            ))
        };
        let trimmed = dir.trim_end_matches('/');
        let (parent, last) = trimmed.rsplit_once('/').ok_or_else(invalid)?;
        let (kind, id, job_root) = if let Some(n) = last.strip_prefix("chk-") {
            (SnapshotKind::Checkpoint, n, parent)
        } else if let Some(n) = last.strip_prefix("sp-") {
            let (job_root, dir_name) = parent.rsplit_once('/').ok_or_else(invalid)?;
            if dir_name != SAVEPOINT_DIR {
                return Err(invalid());
            }
            (SnapshotKind::Savepoint, n, job_root)
        } else {
            return Err(invalid());
        };
        let id: u64 = id.parse().map_err(|_| invalid())?;
        let (root, job) = match job_root.rsplit_once('/') {
            Some((root, job)) if !job.is_empty() => (if root.is_empty() { "/" } else { root }, job),
            None if !job_root.is_empty() => (".", job_root),
            _ => return Err(invalid()),
        };
        // `s3://bucket/chk-1` would leave the root `s3:/`: the job must be below the bucket.
        if root.ends_with(':') || root.ends_with(":/") {
            return Err(invalid());
        }
        Ok(SnapshotLocation {
            storage: CheckpointStorage::from_url(root, job, settings)?,
            kind,
            id,
        })
    }

    /// The snapshot's metadata.
    ///
    /// # Errors
    /// As [`CheckpointStorage::read_checkpoint_metadata`].
    pub async fn read_metadata(&self) -> Result<CheckpointMetadata> {
        match self.kind {
            SnapshotKind::Checkpoint => self.storage.read_checkpoint_metadata(self.id).await,
            SnapshotKind::Savepoint => self.storage.read_savepoint_metadata(self.id).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;

    #[test]
    fn snapshot_directories_parse_and_other_paths_are_refused() {
        let settings = StorageConfig::default();
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().display().to_string();
        let at = SnapshotLocation::parse(&format!("{base}/job/chk-12/"), &settings).unwrap();
        assert_eq!((at.kind, at.id), (SnapshotKind::Checkpoint, 12));
        std::fs::create_dir_all(dir.path().join("job")).unwrap();
        std::fs::write(dir.path().join("job/probe"), b"here").unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let read = rt.block_on(at.storage.read("probe")).unwrap();
        assert_eq!(
            &read[..],
            b"here",
            "the storage is rooted at the job's directory"
        );
        let at =
            SnapshotLocation::parse(&format!("{base}/job/savepoints/sp-3"), &settings).unwrap();
        assert_eq!((at.kind, at.id), (SnapshotKind::Savepoint, 3));
        let at = SnapshotLocation::parse("memory:///root/job/chk-1", &settings).unwrap();
        assert_eq!((at.kind, at.id), (SnapshotKind::Checkpoint, 1));
        for bad in [
            "chk-1",
            "/job/chk-x",
            "/job/other/sp-1",
            "/job/savepoints/cp-1",
            "memory://bucket/chk-1",
            "",
        ] {
            let err = SnapshotLocation::parse(bad, &settings).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{bad}: {err}");
        }
    }
}
