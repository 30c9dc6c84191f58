//! What the coordinator answers (`docs/protocol.md`, "Acknowledgements are identified and idempotent"):
//! every normal protocol outcome is a value the engine acts on; errors are kept for what it must fix
//! (an acknowledgement of a task the job does not have) or retry (storage errors).

use std::time::Duration;

use crate::checkpoint::stats_file::StatsFile;
use crate::checkpoint::store::RegistryStats;
use crate::snapshot::result::SnapshotMetrics;
use crate::snapshot::sizes::{LARGEST_KEY_GROUPS, StateSizes};

/// What [`crate::CheckpointCoordinator::acknowledge`] did with an acknowledgement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Acknowledgement {
    /// Accepted; the checkpoint waits for `remaining` more tasks.
    Pending {
        /// Tasks that have not acknowledged yet.
        remaining: usize,
    },
    /// The same acknowledgement was already accepted (a retried message), or the checkpoint already
    /// completed with it: nothing changed, nothing was deleted.
    Duplicate,
    /// This acknowledgement completed the checkpoint: its metadata is durable. The engine must call
    /// `notify_checkpoint_complete` on every backend, and `notify_checkpoint_aborted` for each of
    /// [`CheckpointStats::aborted_pending`].
    ///
    /// If the coordinator is fenced afterwards ([`crate::CheckpointCoordinator::is_fenced`]; a clean-up
    /// warning says so), a newer leader opened while this metadata was written: its restore may have
    /// listed the checkpoints before, started its line at an older one, and so left this one behind (kept,
    /// never restored; `docs/faults.md`). Output this old leader commits for it may be replayed.
    Completed(Box<CheckpointStats>),
    /// This acknowledgement was the last one, and the checkpoint ended without completing: the engine
    /// must call `notify_checkpoint_aborted` on every backend.
    Declined(Declined),
    /// This acknowledgement was not taken; the checkpoint's fate was decided elsewhere (or the same
    /// task already acknowledged otherwise). What it uploaded is deleted where that is safe.
    Discarded(Discarded),
}

impl Acknowledgement {
    /// The stats if this acknowledgement completed the checkpoint.
    pub fn completed(self) -> Option<CheckpointStats> {
        match self {
            Acknowledgement::Completed(stats) => Some(*stats),
            _ => None,
        }
    }
}

/// Why a checkpoint whose every task acknowledged did not complete.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Declined {
    /// Its keyed state does not hold each key group exactly once (why). Its uploads are deleted.
    Inconsistent(String),
    /// It reuses shared files it may not: deleted, chosen for deletion (maybe deleted), or only of a
    /// pinned or abandoned checkpoint. Its uploads are deleted; a RocksDB backend that keeps being declined
    /// uploads everything again (`docs/protocol.md`).
    UnavailableFiles(Vec<String>),
    /// Another coordinator completed this id first; only own uploads the winner does not use are deleted.
    LostRace,
    /// A coordinator of a newer generation exists (`newer`): nothing was written or deleted, and this one
    /// triggers nothing more ([`crate::CheckpointCoordinator::is_fenced`]): stop it.
    Fenced {
        /// The newest generation found.
        newer: u64,
    },
    /// The coordinator generations could not be listed, so it could not be told whether this coordinator
    /// is still the newest: nothing was written or deleted (the orphan sweep collects the uploads);
    /// the next checkpoint tries again.
    FenceUnknown(String),
    /// A savepoint target already holds a savepoint of this id with other content: nothing was deleted.
    TargetTaken,
}

/// Why an acknowledgement was not taken.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Discarded {
    /// The checkpoint was aborted or declined before (a late acknowledgement): the task's own uploads that
    /// nothing references were deleted.
    Aborted,
    /// The task already acknowledged this checkpoint with other state: this one's own uploads were
    /// deleted, the accepted one stays.
    AlreadyAcknowledged,
    /// The checkpoint completed without this acknowledgement (another task of the same index answered):
    /// its own uploads were deleted.
    CompletedWithout,
    /// The checkpoint is unknown here (triggered before a restart, by another coordinator, or never), or
    /// its metadata write had an uncertain outcome: nothing was deleted; the orphan sweep collects what
    /// nothing references.
    Unknown,
}

/// Figures of one completed checkpoint, summed over its subtasks (durations: the slowest subtask).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckpointStats {
    /// Checkpoint id.
    pub checkpoint_id: u64,
    /// Longest synchronous phase of a subtask.
    pub sync_duration: Duration,
    /// Longest asynchronous phase of a subtask.
    pub async_duration: Duration,
    /// Bytes uploaded by this checkpoint.
    pub checkpointed_bytes: u64,
    /// Bytes of all files the checkpoint references.
    pub full_bytes: u64,
    /// Uncompressed state bytes written.
    pub state_bytes: u64,
    /// Files uploaded.
    pub files_uploaded: u32,
    /// Files reused from earlier checkpoints.
    pub files_reused: u32,
    /// Entries and bytes per state and bytes per key group, summed over the subtasks
    /// (`docs/state-sizes.md`); exact only where every subtask's figure is.
    pub sizes: StateSizes,
    /// Checkpoints subsumed by this one.
    pub subsumed: Vec<u64>,
    /// Checkpoints this coordinator aborted on its own and had not reported yet: older pending
    /// checkpoints aborted because this one completed (as Flink's coordinator does; never a savepoint),
    /// and checkpoints found expired by `trigger` or `acknowledge`. The engine must call
    /// `notify_checkpoint_aborted` for each on every backend.
    pub aborted_pending: Vec<u64>,
    /// The shared-file registry after the subsumption.
    pub registry: RegistryStats,
    /// Problems of the clean-up after the checkpoint completed (deletes that failed or were held back).
    /// The checkpoint is complete regardless; leftovers are retried or swept.
    pub cleanup_warnings: Vec<String>,
}

impl CheckpointStats {
    /// The content of a checkpoint's `_stats` file (`docs/formats.md`; [`StatsFile`]): key groups, the
    /// largest only.
    pub(crate) fn to_stats_file(&self) -> bytes::Bytes {
        let mut sizes = self.sizes.clone();
        sizes.keep_largest_key_groups(LARGEST_KEY_GROUPS);
        StatsFile {
            checkpoint_id: self.checkpoint_id,
            sync_duration: self.sync_duration,
            async_duration: self.async_duration,
            state_bytes: self.state_bytes,
            sizes,
        }
        .encode()
    }

    /// Sums the subtasks' metrics of checkpoint `checkpoint_id`.
    pub(crate) fn from_metrics<'a>(
        checkpoint_id: u64,
        metrics: impl Iterator<Item = &'a SnapshotMetrics> + Clone,
    ) -> Self {
        let m = metrics;
        CheckpointStats {
            checkpoint_id,
            sync_duration: m.clone().map(|m| m.sync_duration).max().unwrap_or_default(),
            async_duration: m
                .clone()
                .map(|m| m.async_duration)
                .max()
                .unwrap_or_default(),
            checkpointed_bytes: m.clone().map(|m| m.checkpointed_bytes).sum(),
            full_bytes: m.clone().map(|m| m.full_bytes).sum(),
            state_bytes: m.clone().map(|m| m.state_bytes).sum(),
            files_uploaded: m.clone().map(|m| m.files_uploaded).sum(),
            files_reused: m.clone().map(|m| m.files_reused).sum(),
            sizes: m.fold(StateSizes::default(), |mut sum, m| {
                sum.merge(&m.sizes);
                sum
            }),
            subsumed: Vec::new(),
            aborted_pending: Vec::new(),
            registry: RegistryStats::default(),
            cleanup_warnings: Vec::new(),
        }
    }
}
