//! How a job takes over the snapshot it restores.

/// How a job takes over the checkpoint it was restored from (as Flink's `RestoreMode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RestoreMode {
    /// The job owns the restored checkpoint: later checkpoints reuse its files, and it is subsumed and
    /// deleted like any of the job's own checkpoints. Requires the checkpoint to be in the job's storage.
    Claim,
    /// The job never deletes the restored checkpoint nor any file of it; its first checkpoint is full
    /// (FLINK-26985). In the job's own storage the checkpoint is pinned (`_pinned` marker) and stays
    /// restorable, so a failover before the job's first new checkpoint restores it again.
    #[default]
    NoClaim,
}
