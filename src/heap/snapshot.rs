//! Asynchronous phase of a heap snapshot: encode the frozen tables key group by key group on a blocking
//! thread and stream the file to checkpoint storage at the same time.

use std::time::{Duration, Instant};

use crate::error::Result;
use crate::format::keyed_file::{FileHeader, FileSummary, KeyedFileWriter, WriterOptions};
use crate::heap::config::HeapConfig;
use crate::heap::table::FrozenTable;
use crate::keyed::backend::PendingSnapshot;
use crate::keyed::identity::SubtaskIdentity;
use crate::snapshot::layout::{checkpoint_dir, savepoint_dir};
use crate::snapshot::result::SnapshotResult;
use crate::snapshot::state_meta::StateMeta;
use crate::snapshot_io::local_copy::LocalCopies;
use crate::snapshot_io::upload::{ChunkSink, keyed_file_result, upload_keyed_file};
use crate::storage::CheckpointStorage;

/// Everything the asynchronous phase needs, frozen by the synchronous phase.
pub(crate) struct SnapshotJob {
    pub(crate) checkpoint_id: u64,
    pub(crate) states: Vec<StateMeta>,
    pub(crate) frozen: Vec<Box<dyn FrozenTable>>,
    pub(crate) config: HeapConfig,
    pub(crate) identity: SubtaskIdentity,
    pub(crate) backend_id: String,
    /// A savepoint (`savepoints/sp-<id>/`) rather than a checkpoint (`chk-<id>/`).
    pub(crate) savepoint: bool,
    /// Where to keep a local copy of the checkpoint's file (local recovery), if anywhere.
    pub(crate) local: Option<LocalCopies>,
}

/// Object-store path (relative to the job root) of a heap snapshot file:
/// `chk-<n>/<operator>-<subtask>-<16 hex random>.keyed` (`savepoints/sp-<n>/...` for a savepoint), a name
/// no other writer produces (a second snapshot under the same id, another coordinator's task), so no write
/// can replace another's file.
pub(crate) fn snapshot_file_name(
    identity: &SubtaskIdentity,
    checkpoint_id: u64,
    savepoint: bool,
    storage: &CheckpointStorage,
) -> String {
    let dir = if savepoint {
        savepoint_dir(checkpoint_id)
    } else {
        checkpoint_dir(checkpoint_id)
    };
    format!(
        "{dir}/{}-{}-{:016x}.keyed",
        identity.operator_id(),
        identity.subtask_index(),
        storage.next_id()
    )
}

impl SnapshotJob {
    /// The snapshot whose synchronous phase began at `started` and froze `self`: its asynchronous phase
    /// writes to `storage`.
    pub(crate) fn start(self, storage: &CheckpointStorage, started: Instant) -> PendingSnapshot {
        let sync_duration = started.elapsed();
        PendingSnapshot::new(
            self.checkpoint_id,
            sync_duration,
            self.run(storage.clone(), sync_duration),
        )
    }

    async fn run(
        mut self,
        storage: CheckpointStorage,
        sync_duration: Duration,
    ) -> Result<SnapshotResult> {
        let started = Instant::now();
        let relative =
            snapshot_file_name(&self.identity, self.checkpoint_id, self.savepoint, &storage);
        let (checkpoint_id, identity, backend_id) = (
            self.checkpoint_id,
            self.identity.clone(),
            self.backend_id.clone(),
        );
        let copy = self.local.take().and_then(|local| {
            let name = relative.rsplit('/').next().unwrap_or(&relative);
            let opened = local
                .writer(&storage, &backend_id, checkpoint_id)
                .and_then(|writer| {
                    let path = writer.path_for(name);
                    let file = std::fs::File::create(&path)
                        .map_err(|e| crate::Error::local(path.display(), e))?;
                    Ok((writer, file))
                });
            opened
                .inspect_err(|e| {
                    tracing::warn!(checkpoint_id, error = %e, "heap backend: no local copy of this checkpoint")
                })
                .ok()
        });
        let (writer, file) = copy.unzip();
        let (summary, copied) =
            upload_keyed_file(&storage, &relative, file, move |sink| self.encode(sink)).await?;
        if let Some(writer) = writer.filter(|_| copied)
            && let Err(e) = writer.publish()
        {
            tracing::warn!(checkpoint_id, error = %e, "heap backend: no local copy of this checkpoint");
        }
        Ok(keyed_file_result(
            backend_id,
            identity.operator_id().to_string(),
            checkpoint_id,
            identity.max_parallelism(),
            identity.key_groups(),
            relative,
            summary,
            sync_duration,
            started.elapsed(),
        ))
    }

    /// Encodes the whole file into `sink`; releases each key group once written.
    fn encode(mut self, sink: &mut ChunkSink) -> Result<FileSummary> {
        let header = FileHeader {
            max_parallelism: self.identity.max_parallelism(),
            key_groups: self.identity.key_groups(),
            states: std::mem::take(&mut self.states),
        };
        let options = WriterOptions {
            zstd_level: self.config.zstd_level,
            frame_bytes: self.config.frame_bytes,
        };
        let mut writer = KeyedFileWriter::new(&header, options)?;
        for (kg_index, key_group) in self.identity.key_groups().iter().enumerate() {
            writer.begin_key_group(key_group)?;
            for (state, table) in self.frozen.iter_mut().enumerate() {
                table.write_group(kg_index, state as u32, &mut writer)?;
            }
            writer.end_key_group()?;
            sink.push(writer.take_output())?;
        }
        let (last, summary) = writer.finish()?;
        sink.push(last)?;
        Ok(summary)
    }
}
