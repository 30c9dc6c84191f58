//! Streaming a keyed snapshot file to checkpoint storage while it is encoded: the encoder runs on a
//! blocking thread and hands chunks to the uploader through a bounded channel, so a snapshot never holds
//! the whole file in memory. Used by the heap backend's snapshots and the RocksDB backend's canonical
//! savepoints.

use crate::error::{Error, Result};
use crate::format::keyed_file::FileSummary;
use crate::storage::CheckpointStorage;

/// Chunks handed to the uploader are at least this large (bytes), except the last.
const CHUNK_BYTES: usize = 1 << 20;
/// Chunks in flight between encoder and uploader.
const CHUNKS_IN_FLIGHT: usize = 4;

/// Where an encoder puts the bytes of the file, in order (`KeyedFileWriter::take_output`).
pub(crate) struct ChunkSink {
    tx: tokio::sync::mpsc::Sender<Vec<u8>>,
    pending: Vec<u8>,
    /// A local copy written beside the upload (local recovery); dropped when a write to it fails, and
    /// then not kept.
    local: Option<std::fs::File>,
}

impl ChunkSink {
    /// Queues `bytes`; blocks while the uploader is [`CHUNKS_IN_FLIGHT`] chunks behind.
    ///
    /// # Errors
    /// [`Error::IllegalState`] once the upload has stopped (it failed): the encoder should stop too.
    pub(crate) fn push(&mut self, bytes: Vec<u8>) -> Result<()> {
        if self.pending.is_empty() {
            self.pending = bytes;
        } else {
            self.pending.extend_from_slice(&bytes);
        }
        if self.pending.len() >= CHUNK_BYTES {
            self.send()?;
        }
        Ok(())
    }

    fn send(&mut self) -> Result<()> {
        if let Some(file) = &mut self.local
            && let Err(e) = std::io::Write::write_all(file, &self.pending)
        {
            tracing::warn!(error = %e, "snapshot: the local copy could not be written; not kept");
            self.local = None;
        }
        self.tx
            .blocking_send(std::mem::take(&mut self.pending))
            .map_err(|_| Error::IllegalState("snapshot upload stopped".into()))
    }
}

/// Uploads the file `relative` (a path under `storage`'s job root) whose bytes `encode` produces on a
/// blocking thread; returns `encode`'s summary once the file is durable in storage, and whether every
/// byte also went into `local` (a local copy for local recovery, written on the encoder's thread; a
/// failed local write only stops the copy).
///
/// # Errors
/// The first error of the encoder or the upload; nothing of the file is left in storage then (a failed
/// upload is aborted and the path deleted, best effort).
pub(crate) async fn upload_keyed_file<F, T>(
    storage: &CheckpointStorage,
    relative: &str,
    local: Option<std::fs::File>,
    encode: F,
) -> Result<(T, bool)>
where
    F: FnOnce(&mut ChunkSink) -> Result<T> + Send + 'static,
    T: Send + 'static,
{
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<u8>>(CHUNKS_IN_FLIGHT);
    let encoder = tokio::task::spawn_blocking(move || {
        let mut sink = ChunkSink {
            tx,
            pending: Vec::new(),
            local,
        };
        let summary = encode(&mut sink)?;
        sink.send()?;
        Ok((summary, sink.local.is_some()))
    });
    let mut file = storage.writer(relative);
    let mut upload_error = None;
    while let Some(chunk) = rx.recv().await {
        if let Err(e) = file.write(chunk).await {
            upload_error = Some(e);
            break;
        }
    }
    // Dropping the receiver stops the encoder if the upload failed.
    drop(rx);
    let encoded: Result<(T, bool)> = encoder
        .await
        .map_err(|e| Error::IllegalState(format!("snapshot encoder panicked: {e}")))?;
    let summary = match (upload_error, encoded) {
        (None, Ok(summary)) => summary,
        (Some(e), _) | (None, Err(e)) => {
            file.abort().await;
            let _ = storage.delete(relative).await;
            return Err(e);
        }
    };
    if let Err(e) = file.finish().await {
        // The upload may have completed before the error: nothing of a failed snapshot stays.
        let _ = storage.delete(relative).await;
        return Err(e);
    }
    Ok(summary)
}

/// What a snapshot that wrote one keyed file (`relative`, private, uploaded by `checkpoint_id`) reports:
/// its handle of the key groups `key_groups` and its metrics.
#[allow(
    clippy::too_many_arguments,
    reason = "the handle's fields, named at the two call sites"
)]
pub(crate) fn keyed_file_result(
    backend_id: String,
    operator_id: String,
    checkpoint_id: u64,
    max_parallelism: u32,
    key_groups: crate::key_group::KeyGroupRange,
    relative: String,
    summary: FileSummary,
    sizes: crate::snapshot::sizes::StateSizes,
    sync_duration: std::time::Duration,
    async_duration: std::time::Duration,
) -> crate::snapshot::result::SnapshotResult {
    use crate::snapshot::handle::{FileScope, HandleFormat, KeyedStateHandle, StateFile};
    let handle = KeyedStateHandle {
        backend_id,
        operator_id,
        checkpoint_id,
        max_parallelism,
        key_groups,
        format: HandleFormat::KeyedFile,
        files: vec![StateFile {
            path: relative,
            scope: FileScope::Private,
            size_bytes: summary.size,
            crc32: summary.crc32,
            created_by: checkpoint_id,
            local_name: String::new(),
        }],
    };
    let metrics = crate::snapshot::result::SnapshotMetrics {
        sync_duration,
        async_duration,
        checkpointed_bytes: summary.size,
        full_bytes: summary.size,
        state_bytes: summary.raw_bytes,
        entries: summary.records,
        files_uploaded: 1,
        files_reused: 0,
        sizes,
    };
    crate::snapshot::result::SnapshotResult { handle, metrics }
}
