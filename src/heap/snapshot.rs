//! Asynchronous phase of a heap snapshot: encode the frozen tables key group by key group on a blocking
//! thread and stream the file to checkpoint storage at the same time.

use std::time::{Duration, Instant};

use crate::checkpoint::handle::{FileScope, HandleFormat, KeyedStateHandle, StateFile};
use crate::error::{Error, Result};
use crate::format::keyed_file::{FileHeader, FileSummary, KeyedFileWriter, WriterOptions};
use crate::heap::backend::HeapBackendConfig;
use crate::heap::table::FrozenTable;
use crate::keyed::backend::{SnapshotMetrics, SnapshotResult};
use crate::keyed::descriptor::StateMeta;
use crate::storage::{CheckpointStorage, checkpoint_dir};

/// Chunks handed to the uploader are at least this large (bytes), except the last.
const CHUNK_BYTES: usize = 1 << 20;
/// Chunks in flight between encoder and uploader.
const CHUNKS_IN_FLIGHT: usize = 4;

/// Everything the asynchronous phase needs, frozen by the synchronous phase.
pub(crate) struct SnapshotJob {
    pub(crate) checkpoint_id: u64,
    pub(crate) states: Vec<StateMeta>,
    pub(crate) frozen: Vec<Box<dyn FrozenTable>>,
    pub(crate) config: HeapBackendConfig,
    pub(crate) backend_id: String,
}

/// Object-store path (relative to the job root) of a heap snapshot file:
/// `chk-<n>/<operator>-<subtask>-<16 hex random>.keyed`, a name no other writer produces (a second
/// snapshot under the same id, another coordinator's task), so no write can replace another's file.
pub(crate) fn snapshot_file_name(config: &HeapBackendConfig, checkpoint_id: u64) -> String {
    format!(
        "{}/{}-{}-{:016x}.keyed",
        checkpoint_dir(checkpoint_id),
        config.operator_id,
        config.subtask_index,
        crate::clock::random_u64()
    )
}

impl SnapshotJob {
    pub(crate) async fn run(
        self,
        storage: CheckpointStorage,
        sync_duration: Duration,
    ) -> Result<SnapshotResult> {
        let started = Instant::now();
        let relative = snapshot_file_name(&self.config, self.checkpoint_id);
        let (checkpoint_id, config, backend_id) = (
            self.checkpoint_id,
            self.config.clone(),
            self.backend_id.clone(),
        );
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<u8>>(CHUNKS_IN_FLIGHT);
        let encoder = tokio::task::spawn_blocking(move || self.encode(tx));
        let mut file = storage.writer(&relative);
        let mut upload_error = None;
        while let Some(chunk) = rx.recv().await {
            if let Err(e) = file.write(chunk).await {
                upload_error = Some(e);
                break;
            }
        }
        // Dropping the receiver stops the encoder if the upload failed.
        drop(rx);
        let encoded = encoder
            .await
            .map_err(|e| Error::IllegalState(format!("snapshot encoder panicked: {e}")))?;
        let summary = match (upload_error, encoded) {
            (None, Ok(summary)) => summary,
            (Some(e), _) | (None, Err(e)) => {
                file.abort().await;
                let _ = storage.delete(&relative).await;
                return Err(e);
            }
        };
        if let Err(e) = file.finish().await {
            // The upload may have completed before the error: nothing of a failed snapshot stays.
            let _ = storage.delete(&relative).await;
            return Err(e);
        }
        let handle = KeyedStateHandle {
            backend_id,
            operator_id: config.operator_id.clone(),
            checkpoint_id,
            max_parallelism: config.max_parallelism,
            key_groups: config.key_groups,
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
        let metrics = SnapshotMetrics {
            sync_duration,
            async_duration: started.elapsed(),
            checkpointed_bytes: summary.size,
            full_bytes: summary.size,
            state_bytes: summary.raw_bytes,
            entries: summary.records,
            files_uploaded: 1,
            files_reused: 0,
        };
        Ok(SnapshotResult { handle, metrics })
    }

    /// Encodes the whole file, sending chunks to `tx`; releases each key group once written.
    fn encode(mut self, tx: tokio::sync::mpsc::Sender<Vec<u8>>) -> Result<FileSummary> {
        let header = FileHeader {
            max_parallelism: self.config.max_parallelism,
            key_groups: self.config.key_groups,
            states: std::mem::take(&mut self.states),
        };
        let options = WriterOptions {
            zstd_level: self.config.zstd_level,
            frame_bytes: self.config.frame_bytes,
        };
        let mut writer = KeyedFileWriter::new(&header, options)?;
        let cancelled = || Error::IllegalState("snapshot upload stopped".into());
        let mut pending = Vec::new();
        for (kg_index, key_group) in self.config.key_groups.iter().enumerate() {
            writer.begin_key_group(key_group)?;
            for (state, table) in self.frozen.iter_mut().enumerate() {
                table.write_group(kg_index, state as u32, &mut writer)?;
            }
            writer.end_key_group()?;
            pending.extend(writer.take_output());
            if pending.len() >= CHUNK_BYTES {
                tx.blocking_send(std::mem::take(&mut pending))
                    .map_err(|_| cancelled())?;
            }
        }
        let (last, summary) = writer.finish()?;
        pending.extend(last);
        tx.blocking_send(pending).map_err(|_| cancelled())?;
        Ok(summary)
    }
}
