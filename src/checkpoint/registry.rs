//! The shared-file registry: which known checkpoints use each shared file, which files a new checkpoint
//! may reuse, and which files were chosen for deletion (as Flink's `SharedStateRegistryImpl`, keyed by
//! physical path; see `docs/lsm.md` and `docs/faults.md`).
//!
//! The registry is derived state: [`SharedFileRegistry::rebuild`] recomputes it from the metadata of the
//! checkpoints the store knows, and the store does so whenever that set changes and when it opens
//! (FLINK-7268). Only the **doomed** set (files chosen for deletion whose delete has not been confirmed)
//! is not derived: a delete may take effect and still fail, so such a file is never reusable again, even
//! while its delete is retried.

use std::collections::{BTreeMap, BTreeSet};

use crate::checkpoint::store_types::SkippedCheckpoint;
use crate::snapshot::handle::CheckpointMetadata;
use crate::storage::CheckpointStorage;

/// What the registry knows of one shared file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SharedFileEntry {
    /// Checkpoint that uploaded the file.
    pub created_by: u64,
    /// Highest known checkpoint that references the file.
    pub last_used: u64,
    /// Size in bytes.
    pub size_bytes: u64,
    /// Referenced by a checkpoint the job never deletes (pinned by a NO_CLAIM restore).
    pub pinned: bool,
    /// Referenced by a retained checkpoint of the job's line: a new checkpoint may reuse it. Files only
    /// pinned or abandoned checkpoints reference are kept but never reused (a NO_CLAIM restore's first
    /// checkpoint is full; an abandoned line is going away).
    pub reusable: bool,
}

/// The role of a checkpoint the registry is built from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Use {
    /// Retained on the job's line: its files are reusable.
    Retained,
    /// Pinned: kept for ever, not reusable.
    Pinned,
    /// Abandoned: kept until subsumed, not reusable.
    Abandoned,
}

/// Shared files of the known checkpoints, keyed by their path relative to the job root.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SharedFileRegistry {
    files: BTreeMap<String, SharedFileEntry>,
    /// Chosen for deletion, delete not confirmed yet: path and size in bytes.
    doomed: BTreeMap<String, u64>,
}

impl SharedFileRegistry {
    /// Recomputes the registry from `checkpoints` and their roles, keeping the doomed set: a doomed file
    /// stays doomed until its delete is confirmed, even if a known checkpoint references it again (only
    /// another coordinator's checkpoint can), since it may already be gone.
    pub(crate) fn rebuild<'a>(
        &mut self,
        checkpoints: impl IntoIterator<Item = (&'a CheckpointMetadata, Use)>,
    ) {
        let mut files: BTreeMap<String, SharedFileEntry> = BTreeMap::new();
        for (checkpoint, role) in checkpoints {
            let id = checkpoint.checkpoint_id;
            for file in checkpoint.shared_files() {
                let entry = files.entry(file.path.clone()).or_insert(SharedFileEntry {
                    created_by: file.created_by,
                    last_used: id,
                    size_bytes: file.size_bytes,
                    pinned: false,
                    reusable: false,
                });
                entry.last_used = entry.last_used.max(id);
                entry.created_by = entry.created_by.min(file.created_by);
                entry.pinned |= role == Use::Pinned;
                entry.reusable |= role == Use::Retained;
            }
        }
        self.files = files;
    }

    /// The files that `next` (a rebuilt registry) no longer references: no known checkpoint uses them.
    pub(crate) fn dropped_by(&self, next: &SharedFileRegistry) -> Vec<(String, u64)> {
        self.files
            .iter()
            .filter(|(path, _)| !next.files.contains_key(*path))
            .map(|(path, e)| (path.clone(), e.size_bytes))
            .collect()
    }

    /// Marks files chosen for deletion: from now on no checkpoint may reuse them, whatever their delete
    /// answers.
    pub(crate) fn doom(&mut self, files: impl IntoIterator<Item = (String, u64)>) {
        self.doomed.extend(files);
    }

    /// The delete of `path` succeeded (or found nothing): it leaves the doomed set.
    pub(crate) fn deleted(&mut self, path: &str) {
        self.doomed.remove(path);
    }

    /// Files chosen for deletion whose delete has not been confirmed yet: never reused, deleted again at
    /// the next completion.
    pub fn doomed(&self) -> Vec<String> {
        self.doomed.keys().cloned().collect()
    }

    /// Deletes the doomed files through `storage`, each leaving the doomed set once its delete succeeded
    /// (a failed one stays doomed, never reusable, and is retried); nothing while `blocked_by` names
    /// checkpoints whose metadata cannot be read (they may reference anything). Returns how many were
    /// deleted; what was kept goes into `warnings`.
    pub(crate) async fn delete_doomed(
        &mut self,
        storage: &CheckpointStorage,
        blocked_by: &[SkippedCheckpoint],
        warnings: &mut Vec<String>,
    ) -> usize {
        let doomed = self.to_delete();
        if doomed.is_empty() {
            return 0;
        }
        if !blocked_by.is_empty() {
            let ids: Vec<String> = blocked_by
                .iter()
                .map(|u| format!("chk-{}", u.checkpoint_id))
                .collect();
            warnings.push(format!(
                "{} unused shared files kept: the metadata of {} cannot be read and may reference them",
                doomed.len(),
                ids.join(", ")
            ));
            return 0;
        }
        let mut deleted = 0;
        for path in &doomed {
            match storage.delete(path).await {
                Ok(()) => {
                    tracing::debug!(path = %path, "deleted a shared file no known checkpoint uses");
                    self.deleted(path);
                    deleted += 1;
                }
                // Maybe deleted: it stays doomed (never reusable) and is retried.
                Err(e) => warnings.push(format!(
                    "unused shared file {path} not deleted (retried at the next completion): {e}"
                )),
            }
        }
        deleted
    }

    /// Doomed files no known checkpoint references: their delete is (re)tried. A doomed file that a
    /// known checkpoint references again is kept (and still never reused).
    pub(crate) fn to_delete(&self) -> Vec<String> {
        self.doomed
            .keys()
            .filter(|p| !self.files.contains_key(*p))
            .cloned()
            .collect()
    }

    /// Shared files `checkpoint` reuses (did not upload itself) that it may not: not referenced by a
    /// retained checkpoint of the job's line, or chosen for deletion. A checkpoint referencing them must
    /// not complete.
    pub fn unavailable_reused_files<'a>(&self, checkpoint: &'a CheckpointMetadata) -> Vec<&'a str> {
        checkpoint
            .shared_files()
            .filter(|f| f.created_by != checkpoint.checkpoint_id)
            .filter(|f| {
                self.doomed.contains_key(&f.path)
                    || !self.files.get(&f.path).is_some_and(|e| e.reusable)
            })
            .map(|f| f.path.as_str())
            .collect()
    }

    /// The entry of `path`, if registered.
    pub fn get(&self, path: &str) -> Option<&SharedFileEntry> {
        self.files.get(path)
    }

    /// Whether `path` is referenced by a known checkpoint.
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
    use crate::key_group::KeyGroupRange;
    use crate::snapshot::handle::{
        FileScope, HandleFormat, KeyedStateHandle, SnapshotKind, StateFile, TaskStateSnapshot,
    };

    fn checkpoint(id: u64, files: &[(&str, u64)]) -> CheckpointMetadata {
        CheckpointMetadata {
            checkpoint_id: id,
            timestamp_ms: 0,
            kind: SnapshotKind::Checkpoint,
            generation: 1,
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
    fn dropped_files_are_doomed_and_never_reusable_again() {
        let (c1, c2) = (
            checkpoint(1, &[("a", 1), ("b", 1)]),
            checkpoint(2, &[("a", 1), ("c", 2)]),
        );
        let mut r = SharedFileRegistry::default();
        r.rebuild([(&c1, Use::Retained), (&c2, Use::Retained)]);
        assert_eq!(r.get("a").unwrap().last_used, 2);
        let mut next = r.clone();
        next.rebuild([(&c2, Use::Retained)]);
        let dropped = r.dropped_by(&next);
        assert_eq!(dropped, vec![("b".to_string(), 10)]);
        next.doom(dropped);
        // The delete of `b` failed (or took effect and reported an error): a checkpoint built on a stale
        // base that reuses `b` is refused all the same.
        let stale = checkpoint(3, &[("a", 1), ("b", 1), ("d", 3)]);
        assert_eq!(next.unavailable_reused_files(&stale), vec!["b"]);
        next.deleted("b");
        assert_eq!(next.unavailable_reused_files(&stale), vec!["b"]);
        assert!(next.doomed().is_empty());
    }

    #[test]
    fn pinned_and_abandoned_files_are_kept_but_never_reused() {
        let pinned = checkpoint(1, &[("a", 1)]);
        let abandoned = checkpoint(2, &[("b", 2)]);
        let retained = checkpoint(3, &[("c", 3)]);
        let mut r = SharedFileRegistry::default();
        r.rebuild([
            (&pinned, Use::Pinned),
            (&abandoned, Use::Abandoned),
            (&retained, Use::Retained),
        ]);
        assert!(r.get("a").unwrap().pinned && r.contains("b"));
        let next = checkpoint(4, &[("a", 1), ("b", 2), ("c", 3), ("d", 4)]);
        assert_eq!(r.unavailable_reused_files(&next), vec!["a", "b"]);
    }
}
