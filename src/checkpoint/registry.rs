//! The shared-file registry: which retained checkpoints use each shared file, and which files nobody uses
//! any more (as Flink's `SharedStateRegistryImpl`, keyed by physical path; see `docs/lsm.md`).
//!
//! The registry is derived state: [`SharedFileRegistry::rebuild`] recomputes it from the retained
//! checkpoints' metadata, and the completed-checkpoint store does so every time it opens (FLINK-7268).

use std::collections::{BTreeMap, BTreeSet};

use crate::checkpoint::handle::CheckpointMetadata;

/// What the registry knows of one shared file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SharedFileEntry {
    /// Checkpoint that uploaded the file.
    pub created_by: u64,
    /// Highest registered checkpoint that references the file.
    pub last_used: u64,
    /// Size in bytes.
    pub size_bytes: u64,
    /// Referenced by a checkpoint the job must never delete: pinned (restored in NO_CLAIM mode) or foreign
    /// (found in storage, written by another coordinator). Never deleted.
    pub pinned: bool,
}

/// Shared files of the retained checkpoints, keyed by their path relative to the job root.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SharedFileRegistry {
    files: BTreeMap<String, SharedFileEntry>,
}

impl SharedFileRegistry {
    /// Recomputes the registry from the retained checkpoints and the protected ones (pinned or foreign:
    /// their files are never deleted).
    pub fn rebuild<'a>(
        retained: impl IntoIterator<Item = &'a CheckpointMetadata>,
        pinned: impl IntoIterator<Item = &'a CheckpointMetadata>,
    ) -> Self {
        let mut registry = SharedFileRegistry::default();
        for checkpoint in retained {
            registry.register(checkpoint);
        }
        for checkpoint in pinned {
            registry.register(checkpoint);
            for file in checkpoint.shared_files() {
                if let Some(entry) = registry.files.get_mut(&file.path) {
                    entry.pinned = true;
                }
            }
        }
        registry
    }

    /// Registers the shared files of a completed checkpoint: new files are added, reused ones get
    /// `last_used` raised to the checkpoint's id.
    pub fn register(&mut self, checkpoint: &CheckpointMetadata) {
        let id = checkpoint.checkpoint_id;
        for file in checkpoint.shared_files() {
            let entry = self
                .files
                .entry(file.path.clone())
                .or_insert(SharedFileEntry {
                    created_by: file.created_by,
                    last_used: id,
                    size_bytes: file.size_bytes,
                    pinned: false,
                });
            entry.last_used = entry.last_used.max(id);
            entry.created_by = entry.created_by.min(file.created_by);
        }
    }

    /// Shared files `checkpoint` reuses (did not create itself) that the registry no longer holds: a
    /// checkpoint referencing them must not complete.
    pub fn missing_reused_files<'a>(&self, checkpoint: &'a CheckpointMetadata) -> Vec<&'a str> {
        checkpoint
            .shared_files()
            .filter(|f| f.created_by != checkpoint.checkpoint_id)
            .filter(|f| !self.files.contains_key(&f.path))
            .map(|f| f.path.as_str())
            .collect()
    }

    /// The files no retained checkpoint uses: `last_used` below `lowest_retained` (the lowest retained
    /// checkpoint id), unless pinned. The caller deletes each and then calls
    /// [`SharedFileRegistry::unregister`]: a file leaves the registry only once its delete succeeded.
    pub fn unused(&self, lowest_retained: u64) -> Vec<String> {
        self.files
            .iter()
            .filter(|(_, e)| e.last_used < lowest_retained && !e.pinned)
            .map(|(path, _)| path.clone())
            .collect()
    }

    /// Removes `path` (its delete from storage succeeded).
    pub fn unregister(&mut self, path: &str) {
        self.files.remove(path);
    }

    /// The entry of `path`, if registered.
    pub fn get(&self, path: &str) -> Option<&SharedFileEntry> {
        self.files.get(path)
    }

    /// Whether `path` is referenced by a retained or pinned checkpoint.
    pub fn contains(&self, path: &str) -> bool {
        self.files.contains_key(path)
    }

    /// Paths of all registered files, in order.
    pub(crate) fn iter_paths(&self) -> impl Iterator<Item = &str> {
        self.files.keys().map(String::as_str)
    }

    /// Paths of all registered files.
    pub fn paths(&self) -> BTreeSet<String> {
        self.files.keys().cloned().collect()
    }

    /// Number of registered files.
    pub fn len(&self) -> usize {
        self.files.len()
    }

    /// Whether no file is registered.
    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }

    /// Total bytes of registered files.
    pub fn total_bytes(&self) -> u64 {
        self.files.values().map(|e| e.size_bytes).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checkpoint::handle::{
        FileScope, HandleFormat, KeyedStateHandle, SnapshotKind, StateFile, TaskStateSnapshot,
    };
    use crate::keyed::key_group::KeyGroupRange;

    fn checkpoint(id: u64, files: &[(&str, u64)]) -> CheckpointMetadata {
        CheckpointMetadata {
            checkpoint_id: id,
            timestamp_ms: 0,
            kind: SnapshotKind::Checkpoint,
            tasks: vec![TaskStateSnapshot {
                operator_id: "op".into(),
                subtask_index: 0,
                keyed_state: Some(KeyedStateHandle {
                    backend_id: "b".into(),
                    operator_id: "op".into(),
                    checkpoint_id: id,
                    max_parallelism: 8,
                    key_groups: KeyGroupRange::all(8).unwrap(),
                    format: HandleFormat::RocksIncremental,
                    files: files
                        .iter()
                        .map(|(path, created_by)| StateFile {
                            path: (*path).into(),
                            scope: FileScope::Shared,
                            size_bytes: 10,
                            crc32: 0,
                            created_by: *created_by,
                            local_name: String::new(),
                        })
                        .collect(),
                }),
                operator_state: BTreeMap::new(),
            }],
        }
    }

    #[test]
    fn last_used_decides_and_reuse_keeps_files() {
        let mut r = SharedFileRegistry::default();
        r.register(&checkpoint(1, &[("a", 1), ("b", 1)]));
        r.register(&checkpoint(2, &[("a", 1), ("c", 2)]));
        assert_eq!(r.unused(2), vec!["b".to_string()]);
        assert!(
            r.contains("b"),
            "unused files stay registered until their delete succeeded"
        );
        r.unregister("b");
        assert!(r.contains("a") && r.contains("c") && !r.contains("b"));
        assert_eq!(r.get("a").unwrap().last_used, 2);
        assert_eq!(r.get("a").unwrap().created_by, 1);
        assert_eq!(r.total_bytes(), 20);
    }

    #[test]
    fn pinned_files_survive_and_missing_reuse_is_reported() {
        let pinned = checkpoint(1, &[("a", 1)]);
        let retained = checkpoint(3, &[("c", 3)]);
        let r = SharedFileRegistry::rebuild([&retained], [&pinned]);
        assert!(r.unused(3).is_empty());
        let reuses_gone = checkpoint(4, &[("b", 2), ("c", 3), ("d", 4)]);
        assert_eq!(r.missing_reused_files(&reuses_gone), vec!["b"]);
    }
}
