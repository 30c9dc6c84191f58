//! The completed-checkpoint store: which checkpoints exist, the latest one, retention of the last N and
//! subsumption of older ones (as Flink's `CompletedCheckpointStore`).

use std::collections::VecDeque;
use std::future::Future;

use bytes::Bytes;

use crate::checkpoint::handle::CheckpointMetadata;
use crate::checkpoint::registry::SharedFileRegistry;
use crate::error::{Error, ErrorKind, Result};
use crate::format::metadata;
use crate::storage::{CheckpointStorage, METADATA_FILE, PINNED_MARKER, checkpoint_dir};

/// What happens to retained checkpoints when the job is cancelled (as Flink's
/// `ExternalizedCheckpointCleanup`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CancellationPolicy {
    /// Keep the retained checkpoints so the job can be resumed later.
    RetainOnCancellation,
    /// Delete all checkpoints of the job.
    DeleteOnCancellation,
}

/// A checkpoint that could not be used, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SkippedCheckpoint {
    /// Its id.
    pub checkpoint_id: u64,
    /// The error that made it unusable (names the file).
    pub reason: String,
}

/// Result of restoring from the latest usable checkpoint.
#[derive(Debug)]
pub struct RestoreOutcome<T> {
    /// What the restore function produced.
    pub value: T,
    /// The checkpoint it was produced from.
    pub checkpoint_id: u64,
    /// Newer checkpoints that were unreadable and skipped, newest first.
    pub skipped: Vec<SkippedCheckpoint>,
}

/// How a job takes over the checkpoint it was restored from (as Flink's `RestoreMode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RestoreMode {
    /// The job owns the restored checkpoint: later checkpoints reuse its files, and it is subsumed and
    /// deleted like any of the job's own checkpoints. Requires the checkpoint to be in the job's storage.
    Claim,
    /// The job never deletes the restored checkpoint nor any file of it; its first checkpoint is full
    /// (FLINK-26985). In the job's own storage the checkpoint is pinned (`_pinned` marker).
    #[default]
    NoClaim,
}

/// Registry figures after a change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RegistryStats {
    /// Shared files referenced by retained (or pinned) checkpoints.
    pub files: usize,
    /// Their total size in bytes.
    pub bytes: u64,
    /// Shared files deleted by this change.
    pub deleted_files: usize,
}

/// Completed checkpoints of one job, oldest first, and the registry of the shared files they use.
pub struct CompletedCheckpointStore {
    storage: CheckpointStorage,
    retained: usize,
    checkpoints: VecDeque<CheckpointMetadata>,
    pinned: Vec<CheckpointMetadata>,
    unreadable: Vec<SkippedCheckpoint>,
    registry: SharedFileRegistry,
}

impl CompletedCheckpointStore {
    /// Opens the store, reading the metadata of every checkpoint in storage. Checkpoints whose metadata is
    /// corrupt are reported by [`CompletedCheckpointStore::unreadable`], never deleted.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] if `retained` is 0; storage errors other than corrupt metadata.
    pub async fn open(storage: CheckpointStorage, retained: usize) -> Result<Self> {
        if retained == 0 {
            return Err(Error::InvalidArgument(
                "at least one checkpoint must be retained".into(),
            ));
        }
        let mut checkpoints = VecDeque::new();
        let mut pinned = Vec::new();
        let mut unreadable = Vec::new();
        for id in storage.list_checkpoint_dirs().await? {
            match read_metadata(&storage, id).await {
                Ok(meta) if meta.checkpoint_id == id => {
                    if is_pinned(&storage, id).await? {
                        pinned.push(meta);
                    } else {
                        checkpoints.push_back(meta);
                    }
                }
                Ok(meta) => unreadable.push(SkippedCheckpoint {
                    checkpoint_id: id,
                    reason: format!(
                        "metadata of chk-{id} names checkpoint {}",
                        meta.checkpoint_id
                    ),
                }),
                Err(e) if e.kind() == ErrorKind::NotFound => {} // incomplete: no metadata yet
                Err(e) if e.kind() == ErrorKind::Corrupt => {
                    tracing::warn!(checkpoint_id = id, error = %e, "unreadable checkpoint metadata");
                    unreadable.push(SkippedCheckpoint {
                        checkpoint_id: id,
                        reason: e.to_string(),
                    });
                }
                Err(e) => return Err(e),
            }
        }
        let registry = SharedFileRegistry::rebuild(&checkpoints, &pinned);
        Ok(CompletedCheckpointStore {
            storage,
            retained,
            checkpoints,
            pinned,
            unreadable,
            registry,
        })
    }

    /// The shared-file registry of the retained and pinned checkpoints.
    pub fn registry(&self) -> &SharedFileRegistry {
        &self.registry
    }

    /// Checkpoints pinned by a NO_CLAIM restore: never subsumed or deleted by the job.
    pub fn pinned(&self) -> &[CheckpointMetadata] {
        &self.pinned
    }

    /// Whether the shared file `path` (relative to the job root) is referenced by a retained or pinned
    /// checkpoint.
    pub fn references(&self, path: &str) -> bool {
        self.registry.contains(path)
    }

    /// Checks that `checkpoint` can complete: every shared file it reuses is still registered.
    ///
    /// # Errors
    /// [`Error::IllegalState`] naming the missing files (a concurrent checkpoint built on an older base
    /// referenced files that were deleted meanwhile); the checkpoint must be declined.
    pub fn check_references(&self, checkpoint: &CheckpointMetadata) -> Result<()> {
        let missing = self.registry.missing_reused_files(checkpoint);
        if missing.is_empty() {
            return Ok(());
        }
        Err(Error::IllegalState(format!(
            "checkpoint {} reuses shared files no retained checkpoint holds any more: {}",
            checkpoint.checkpoint_id,
            missing.join(", ")
        )))
    }

    /// Pins checkpoint `checkpoint_id` (a NO_CLAIM restore from the job's own storage): writes its
    /// `_pinned` marker and takes it out of retention, so neither it nor any of its files is ever deleted
    /// by the job. Pinning an unknown or already pinned checkpoint does nothing.
    ///
    /// # Errors
    /// Storage errors while writing the marker.
    pub async fn pin(&mut self, checkpoint_id: u64) -> Result<()> {
        let Some(pos) = self
            .checkpoints
            .iter()
            .position(|c| c.checkpoint_id == checkpoint_id)
        else {
            return Ok(());
        };
        let marker = format!("{}/{PINNED_MARKER}", checkpoint_dir(checkpoint_id));
        self.storage
            .put_if_absent(
                &marker,
                Bytes::from_static(b"pinned by a NO_CLAIM restore\n"),
            )
            .await?;
        if let Some(meta) = self.checkpoints.remove(pos) {
            self.pinned.push(meta);
        }
        self.registry = SharedFileRegistry::rebuild(&self.checkpoints, &self.pinned);
        Ok(())
    }

    /// The retained checkpoints, oldest first.
    pub fn checkpoints(&self) -> impl DoubleEndedIterator<Item = &CheckpointMetadata> {
        self.checkpoints.iter()
    }

    /// The latest completed checkpoint.
    pub fn latest(&self) -> Option<&CheckpointMetadata> {
        self.checkpoints.back()
    }

    /// A retained checkpoint by id.
    pub fn get(&self, checkpoint_id: u64) -> Option<&CheckpointMetadata> {
        self.checkpoints
            .iter()
            .find(|c| c.checkpoint_id == checkpoint_id)
    }

    /// Checkpoints found at open whose metadata could not be read.
    pub fn unreadable(&self) -> &[SkippedCheckpoint] {
        &self.unreadable
    }

    /// How many checkpoints are retained.
    pub fn retained(&self) -> usize {
        self.retained
    }

    /// The storage the store reads.
    pub fn storage(&self) -> &CheckpointStorage {
        &self.storage
    }

    /// Adds a completed checkpoint (its metadata is already written), registers its shared files and
    /// subsumes the oldest ones beyond the retained count: metadata first, then private files, then the
    /// shared files no retained checkpoint uses. Returns the ids of the subsumed checkpoints and the
    /// registry's figures afterwards.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] if the id is not above the latest; storage errors while deleting (the
    /// store is consistent either way: a subsumed checkpoint's metadata is deleted before its files, and a
    /// shared file left behind is an orphan for [`crate::CheckpointCoordinator::sweep_orphans`]).
    pub async fn add(
        &mut self,
        checkpoint: CheckpointMetadata,
    ) -> Result<(Vec<u64>, RegistryStats)> {
        if self
            .latest()
            .is_some_and(|l| l.checkpoint_id >= checkpoint.checkpoint_id)
        {
            return Err(Error::InvalidArgument(format!(
                "checkpoint {} is not newer than the latest completed one",
                checkpoint.checkpoint_id
            )));
        }
        self.registry.register(&checkpoint);
        self.checkpoints.push_back(checkpoint);
        let mut subsumed = Vec::new();
        while self.checkpoints.len() > self.retained {
            let Some(oldest) = self.checkpoints.pop_front() else {
                break;
            };
            discard(&self.storage, oldest.checkpoint_id).await?;
            subsumed.push(oldest.checkpoint_id);
        }
        let deleted_files = self.delete_unused_shared_files().await?;
        Ok((subsumed, self.registry_stats(deleted_files)))
    }

    fn registry_stats(&self, deleted_files: usize) -> RegistryStats {
        RegistryStats {
            files: self.registry.len(),
            bytes: self.registry.total_bytes(),
            deleted_files,
        }
    }

    /// Deletes the shared files whose last use is below the lowest retained checkpoint.
    async fn delete_unused_shared_files(&mut self) -> Result<usize> {
        let lowest = self
            .checkpoints
            .front()
            .map_or(u64::MAX, |c| c.checkpoint_id);
        let unused = self.registry.unregister_unused(lowest);
        for path in &unused {
            tracing::debug!(path = %path, "deleting a shared file no retained checkpoint uses");
            self.storage.delete(path).await?;
        }
        Ok(unused.len())
    }

    /// Runs `restore` on the latest checkpoint; if it fails because a file is corrupt or missing, falls back
    /// to the previous retained checkpoint, and so on. Skipped checkpoints are logged and reported.
    ///
    /// # Errors
    /// The first error that is not about a corrupt or missing file; [`Error::NotFound`] if no retained
    /// checkpoint could be restored (the message lists why each failed).
    pub async fn restore_latest<T, F, Fut>(&self, mut restore: F) -> Result<RestoreOutcome<T>>
    where
        F: FnMut(CheckpointMetadata) -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        let mut skipped: Vec<SkippedCheckpoint> = self.unreadable.iter().rev().cloned().collect();
        for checkpoint in self.checkpoints.iter().rev() {
            let id = checkpoint.checkpoint_id;
            match restore(checkpoint.clone()).await {
                Ok(value) => {
                    skipped.retain(|s| s.checkpoint_id > id);
                    return Ok(RestoreOutcome {
                        value,
                        checkpoint_id: id,
                        skipped,
                    });
                }
                Err(e) if matches!(e.kind(), ErrorKind::Corrupt | ErrorKind::NotFound) => {
                    tracing::warn!(checkpoint_id = id, error = %e, "checkpoint unreadable, falling back to the previous one");
                    skipped.push(SkippedCheckpoint {
                        checkpoint_id: id,
                        reason: e.to_string(),
                    });
                }
                Err(e) => return Err(e),
            }
        }
        let reasons: Vec<String> = skipped
            .iter()
            .map(|s| format!("chk-{}: {}", s.checkpoint_id, s.reason))
            .collect();
        Err(Error::NotFound {
            path: format!(
                "{} (no restorable checkpoint; {})",
                self.storage.path(""),
                reasons.join("; ")
            ),
        })
    }

    /// Ends the store's life with the job: keeps or deletes the retained checkpoints.
    ///
    /// # Errors
    /// Storage errors while deleting.
    pub async fn shutdown(mut self, policy: CancellationPolicy) -> Result<()> {
        if policy == CancellationPolicy::DeleteOnCancellation {
            while let Some(oldest) = self.checkpoints.pop_front() {
                discard(&self.storage, oldest.checkpoint_id).await?;
            }
            self.delete_unused_shared_files().await?;
        }
        Ok(())
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

async fn is_pinned(storage: &CheckpointStorage, id: u64) -> Result<bool> {
    let marker = format!("{}/{PINNED_MARKER}", checkpoint_dir(id));
    match storage.head(&marker).await {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

/// Deletes checkpoint `id`: its metadata first (so it stops being a checkpoint), then its private files.
/// A crash in between leaves only unreferenced files behind, never metadata pointing at deleted files.
pub(crate) async fn discard(storage: &CheckpointStorage, id: u64) -> Result<()> {
    let dir = checkpoint_dir(id);
    storage.delete(&format!("{dir}/{METADATA_FILE}")).await?;
    storage.delete_dir(&dir).await
}
