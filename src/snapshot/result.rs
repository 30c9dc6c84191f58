//! What one backend's snapshot produced: its handle and measurements, and the savepoint formats.

use std::time::Duration;

use crate::snapshot::handle::KeyedStateHandle;

/// Measurements of one snapshot of one backend.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SnapshotMetrics {
    /// Time the synchronous phase blocked processing.
    pub sync_duration: Duration,
    /// Time of the asynchronous phase (encode and upload).
    pub async_duration: Duration,
    /// Bytes this snapshot uploaded ("checkpointed size").
    pub checkpointed_bytes: u64,
    /// Bytes of all files the snapshot references ("full size").
    pub full_bytes: u64,
    /// Uncompressed bytes of state records written.
    pub state_bytes: u64,
    /// Entries written (one per key and namespace of each state).
    pub entries: u64,
    /// Files uploaded by this snapshot.
    pub files_uploaded: u32,
    /// Files reused from earlier checkpoints (placeholders).
    pub files_reused: u32,
}

/// The outcome of a snapshot's asynchronous phase.
#[derive(Debug, Clone)]
pub struct SnapshotResult {
    /// What was written; goes into the checkpoint's metadata.
    pub handle: KeyedStateHandle,
    /// How long it took and how much it wrote.
    pub metrics: SnapshotMetrics,
}

/// The format of a savepoint (`docs/savepoints.md`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SavepointFormat {
    /// One keyed snapshot file per subtask (`docs/formats.md`, "Keyed snapshot file"): both backends write
    /// it and restore it, at any parallelism. Handle format [`HandleFormat::KeyedFile`](crate::snapshot::HandleFormat).
    #[default]
    Canonical,
    /// The backend's own format, every file private: for the RocksDB backend the files of a native RocksDB
    /// checkpoint (faster to write and restore, restorable by the RocksDB backend only); for the heap backend
    /// the same as [`SavepointFormat::Canonical`].
    Native,
}
