//! What one backend's snapshot produced: its handle and measurements, and the savepoint formats.

use std::time::Duration;

use crate::snapshot::handle::KeyedStateHandle;
use crate::snapshot::sizes::StateSizes;

/// Measurements of one snapshot of one backend.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
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
    /// Entries and bytes per state and bytes per key group (`docs/state-sizes.md`): exact on the heap
    /// backend's full snapshots, RocksDB's estimates on the RocksDB backend, empty for a heap delta.
    pub sizes: StateSizes,
}

/// The outcome of a snapshot's asynchronous phase.
#[derive(Debug, Clone)]
pub struct SnapshotResult {
    /// What was written; goes into the checkpoint's metadata.
    pub handle: KeyedStateHandle,
    /// How long it took and how much it wrote.
    pub metrics: SnapshotMetrics,
}

/// Where a restore read its state from: local copies (local recovery) or checkpoint storage, and why a
/// local copy it looked for was not used. A backend reports it after its restore
/// (`StateBackend::restore_sources`); without local recovery every file is remote and nothing falls back.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RestoreSources {
    /// Files read from local copies.
    pub local_files: u32,
    /// Bytes of those files.
    pub local_bytes: u64,
    /// Files read from checkpoint storage.
    pub remote_files: u32,
    /// Bytes read from checkpoint storage (the whole file, or the owned key groups' ranges of a keyed
    /// file another subtask wrote).
    pub remote_bytes: u64,
    /// With local recovery on: each file whose local copy was missing or damaged (size or CRC32 not the
    /// handle's), with the reason; each was read from checkpoint storage instead.
    pub fallbacks: Vec<String>,
    /// Handles whose state a heap backend took from memory (in-process recovery,
    /// `heap::InProcessRecovery`): no file of theirs was read.
    pub in_process: u32,
}

impl RestoreSources {
    /// Counts a file read locally.
    pub(crate) fn local(&mut self, bytes: u64) {
        self.local_files += 1;
        self.local_bytes += bytes;
    }

    /// Counts a file read from checkpoint storage.
    pub(crate) fn remote(&mut self, bytes: u64) {
        self.remote_files += 1;
        self.remote_bytes += bytes;
    }

    /// Records that the file at storage path `path` was read from checkpoint storage because its local
    /// copy was not usable (`why`), and logs it.
    pub(crate) fn fell_back(&mut self, path: &str, why: impl std::fmt::Display) {
        let line = format!("{path}: {why}");
        tracing::warn!(%line, "restore: read from checkpoint storage instead of the local copy");
        self.fallbacks.push(line);
    }

    /// Records that a heap restore read its files because the in-process copy of checkpoint
    /// `checkpoint_id` could not be taken (`why`: a rescale, a version already dropped), and logs it at
    /// debug level: unlike a damaged local copy, this is expected.
    pub(crate) fn not_in_process(&mut self, checkpoint_id: u64, why: &str) {
        let line = format!("in-process copy of checkpoint {checkpoint_id}: {why}");
        tracing::debug!(%line, "restore: read the files instead of the in-process copy");
        self.fallbacks.push(line);
    }

    /// Adds the counts and fallbacks of `other` (another file, or another subtask's restore).
    pub fn merge(&mut self, other: &RestoreSources) {
        self.local_files += other.local_files;
        self.local_bytes += other.local_bytes;
        self.remote_files += other.remote_files;
        self.remote_bytes += other.remote_bytes;
        self.fallbacks.extend(other.fallbacks.iter().cloned());
        self.in_process += other.in_process;
    }
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
