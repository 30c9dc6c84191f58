//! The completed-checkpoint store: which checkpoints exist, the latest one, retention of the last N and
//! subsumption of older ones (as Flink's `CompletedCheckpointStore`).

use std::collections::VecDeque;
use std::future::Future;

use bytes::Bytes;

use crate::checkpoint::handle::CheckpointMetadata;
use crate::error::{Error, ErrorKind, Result};
use crate::format::metadata;
use crate::storage::{CheckpointStorage, METADATA_FILE, checkpoint_dir};

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

/// Completed checkpoints of one job, oldest first.
pub struct CompletedCheckpointStore {
    storage: CheckpointStorage,
    retained: usize,
    checkpoints: VecDeque<CheckpointMetadata>,
    unreadable: Vec<SkippedCheckpoint>,
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
        let mut unreadable = Vec::new();
        for id in storage.list_checkpoint_dirs().await? {
            match read_metadata(&storage, id).await {
                Ok(meta) if meta.checkpoint_id == id => checkpoints.push_back(meta),
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
        Ok(CompletedCheckpointStore {
            storage,
            retained,
            checkpoints,
            unreadable,
        })
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

    /// Adds a completed checkpoint (its metadata is already written) and subsumes the oldest ones beyond
    /// the retained count. Returns the ids of the subsumed checkpoints.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] if the id is not above the latest; storage errors while deleting (the
    /// store is consistent either way: a subsumed checkpoint's metadata is deleted before its files).
    pub async fn add(&mut self, checkpoint: CheckpointMetadata) -> Result<Vec<u64>> {
        if self
            .latest()
            .is_some_and(|l| l.checkpoint_id >= checkpoint.checkpoint_id)
        {
            return Err(Error::InvalidArgument(format!(
                "checkpoint {} is not newer than the latest completed one",
                checkpoint.checkpoint_id
            )));
        }
        self.checkpoints.push_back(checkpoint);
        let mut subsumed = Vec::new();
        while self.checkpoints.len() > self.retained {
            let Some(oldest) = self.checkpoints.pop_front() else {
                break;
            };
            discard(&self.storage, oldest.checkpoint_id).await?;
            subsumed.push(oldest.checkpoint_id);
        }
        Ok(subsumed)
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

/// Deletes checkpoint `id`: its metadata first (so it stops being a checkpoint), then its private files.
/// A crash in between leaves only unreferenced files behind, never metadata pointing at deleted files.
pub(crate) async fn discard(storage: &CheckpointStorage, id: u64) -> Result<()> {
    let dir = checkpoint_dir(id);
    storage.delete(&format!("{dir}/{METADATA_FILE}")).await?;
    storage.delete_dir(&dir).await
}
