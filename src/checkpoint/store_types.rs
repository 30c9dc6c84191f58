//! Plain types of the completed-checkpoint store's API: restore modes and outcomes, cancellation
//! policies, registry figures, what adding a checkpoint did.

/// What adding a completed checkpoint did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AddOutcome {
    /// Checkpoints subsumed (their metadata is gone).
    pub subsumed: Vec<u64>,
    /// The shared-file registry afterwards.
    pub registry: RegistryStats,
    /// Problems of the clean-up after the checkpoint was added (a failed delete, a garbage collection
    /// held back by unreadable metadata or by a fence check that could not list the generations). The
    /// checkpoint is complete regardless; what was not deleted is retried at the next completion or left
    /// to the orphan sweep.
    pub warnings: Vec<String>,
    /// A coordinator of this newer generation exists: this store deleted nothing, and never will
    /// (`docs/protocol.md`, "Fencing").
    pub fenced: Option<u64>,
}

/// What happens to retained checkpoints when the job is cancelled (as Flink's
/// `ExternalizedCheckpointCleanup`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CancellationPolicy {
    /// Keep the retained checkpoints so the job can be resumed later.
    RetainOnCancellation,
    /// Delete all checkpoints of the job but the pinned ones, and every id reservation; generations and
    /// ids keep rising for the next job on this storage (`docs/faults.md`).
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

/// Registry figures after a change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RegistryStats {
    /// Shared files referenced by known checkpoints (retained, pinned, abandoned).
    pub files: usize,
    /// Their total size in bytes.
    pub bytes: u64,
    /// Shared files deleted by this change.
    pub deleted_files: usize,
}
