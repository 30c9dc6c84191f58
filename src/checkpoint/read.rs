//! Reading a completed checkpoint's metadata: for the store, and for a task that restores or confirms away
//! from the coordinator (read-only).

use bytes::Bytes;

use crate::error::{Error, ErrorKind, Result};
use crate::format::metadata;
use crate::snapshot::handle::{CheckpointMetadata, SnapshotKind};
use crate::snapshot::layout::{METADATA_FILE, SAVEPOINT_DIR, checkpoint_dir, savepoint_dir};
use crate::storage::{CheckpointStorage, StorageConfig};

impl CheckpointStorage {
    /// The metadata of completed checkpoint `id`, read from storage (for a task that restores on its own,
    /// away from the coordinator; read-only).
    ///
    /// # Errors
    /// [`Error::NotFound`] if the checkpoint has no `_metadata` (never completed,
    /// or deleted); [`Error::Corrupt`] if it does not decode; storage errors.
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

impl CheckpointStorage {
    /// The states a canonical (keyed-file) handle's file holds, with their kinds and codec ids, as its
    /// header names them (`statectl inspect`). Reads the footer and the header only.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for a handle of another format (a native
    /// LSM snapshot names its states inside RocksDB's files); [`Error::NotFound`]
    /// or [`Error::Corrupt`] naming the file.
    pub async fn keyed_file_states(
        &self,
        handle: &crate::KeyedStateHandle,
    ) -> Result<Vec<crate::snapshot::StateMeta>> {
        let file = match (handle.format, handle.files.as_slice()) {
            (crate::snapshot::HandleFormat::KeyedFile, [file]) => file,
            _ => {
                return Err(Error::InvalidArgument(format!(
                    "backend {}'s handle is {:?} with {} files, not one keyed file",
                    handle.backend_id,
                    handle.format,
                    handle.files.len()
                )));
            }
        };
        Ok(crate::snapshot_io::load::read_header(self, &file.path)
            .await?
            .states)
    }
}

/// One record of a canonical snapshot: the codec bytes of a key, its namespace and its value, as
/// `docs/formats.md` ("Record") lays them out (a list's or map's value holds its elements or entries).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyedRecord {
    /// Index of the record's state in the states returned with it.
    pub state: usize,
    /// The key group the record is stored in.
    pub key_group: u32,
    /// The key's codec bytes.
    pub key: Vec<u8>,
    /// The namespace's codec bytes.
    pub namespace: Vec<u8>,
    /// The value's bytes.
    pub value: Vec<u8>,
}

impl CheckpointStorage {
    /// The states and records of a canonical (keyed-file) handle's file, of every key group it holds or of
    /// `key_group` only (a ranged read of that group's frames), with the file checks a restore makes (size,
    /// CRC32s, footer, index, header); for `statectl dump`.
    ///
    /// # Errors
    /// As [`CheckpointStorage::keyed_file_states`], and [`Error::Corrupt`] for a
    /// frame or record that does not decode; [`Error::InvalidArgument`]
    /// if `key_group` is outside the handle's range.
    pub async fn keyed_file_records(
        &self,
        handle: &crate::KeyedStateHandle,
        key_group: Option<u32>,
    ) -> Result<(Vec<crate::snapshot::StateMeta>, Vec<KeyedRecord>)> {
        let range = match key_group {
            Some(g) if handle.key_groups.contains(g) => crate::KeyGroupRange::new(g, g)?,
            Some(g) => {
                return Err(Error::InvalidArgument(format!(
                    "key group {g} is not in the handle's range {}",
                    handle.key_groups
                )));
            }
            None => handle.key_groups,
        };
        let loaded = crate::snapshot_io::load::load_handle(self, handle, range, "dump").await?;
        let mut records = Vec::new();
        for (key_group, bytes) in &loaded.groups {
            for r in crate::format::keyed_file::read::records(bytes, &loaded.path) {
                let r = r?;
                if r.state as usize >= loaded.header.states.len() {
                    return Err(Error::corrupt(
                        &loaded.path,
                        format!("record of unknown state {}", r.state),
                    ));
                }
                records.push(KeyedRecord {
                    state: r.state as usize,
                    key_group: *key_group,
                    key: r.key.to_vec(),
                    namespace: r.namespace.to_vec(),
                    value: r.value.to_vec(),
                });
            }
        }
        Ok((loaded.header.states, records))
    }
}

impl CheckpointStorage {
    /// The states of a canonical (keyed-file) handle and how many records each holds (entries: one per key
    /// and namespace; a list or map counts once), read `KEY_GROUPS_PER_READ` key groups at a time so that
    /// memory stays a fraction of the file; with the checks of [`CheckpointStorage::keyed_file_records`].
    ///
    /// # Errors
    /// As [`CheckpointStorage::keyed_file_records`].
    pub async fn keyed_file_entry_counts(
        &self,
        handle: &crate::KeyedStateHandle,
    ) -> Result<(Vec<crate::snapshot::StateMeta>, Vec<u64>)> {
        const KEY_GROUPS_PER_READ: u32 = 8;
        let range = handle.key_groups;
        let mut states = Vec::new();
        let mut counts: Vec<u64> = Vec::new();
        let mut from = range.start();
        while let Some(last) = range.end().filter(|end| from <= *end) {
            let to = last.min(from.saturating_add(KEY_GROUPS_PER_READ - 1));
            let part = crate::KeyGroupRange::new(from, to)?;
            let loaded =
                crate::snapshot_io::load::load_handle(self, handle, part, "inspect").await?;
            counts.resize(loaded.header.states.len(), 0);
            for (_, bytes) in &loaded.groups {
                for r in crate::format::keyed_file::read::records(bytes, &loaded.path) {
                    let state = r?.state as usize;
                    let count = counts.get_mut(state).ok_or_else(|| {
                        Error::corrupt(&loaded.path, format!("record of unknown state {state}"))
                    })?;
                    *count += 1;
                }
            }
            states = loaded.header.states;
            if to == last {
                break;
            }
            from = to + 1;
        }
        if states.is_empty() {
            states = self.keyed_file_states(handle).await?;
            counts = vec![0; states.len()];
        }
        Ok((states, counts))
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
