//! Asynchronous phase of a heap snapshot: encode the frozen tables key group by key group on a blocking
//! thread and stream the file to checkpoint storage at the same time.

use std::time::{Duration, Instant};

use crate::error::Result;
use crate::format::keyed_file::{FileHeader, FileSummary, KeyedFileWriter, WriterOptions};
use crate::heap::chain::ChainUpload;
use crate::heap::config::HeapConfig;
use crate::heap::frozen::FrozenTable;
use crate::heap::in_process::KeepVersion;
use crate::keyed::backend::PendingSnapshot;
use crate::keyed::identity::SubtaskIdentity;
use crate::snapshot::handle::{FileScope, HandleFormat, StateFile};
use crate::snapshot::layout::{SHARED_DIR, checkpoint_dir, savepoint_dir};
use crate::snapshot::result::SnapshotResult;
use crate::snapshot::sizes::{SizeTally, StateSizes};
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
    /// For a checkpoint of an incremental chain: the base's files (a delta) or none (a full file), and
    /// the bookkeeping of uploads in flight. `None`: one private full file.
    pub(crate) chain: Option<ChainUpload>,
    /// In-process recovery: keeps the frozen version under the handle the upload produced.
    pub(crate) keep: Option<KeepVersion>,
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

/// Object-store path of a file of a heap incremental chain written by checkpoint `checkpoint_id` of
/// backend `backend_id`: `shared/<backend id>-<n>-<16 hex random>.keyed`, shared because later
/// checkpoints of the chain reference it.
fn chain_file_name(backend_id: &str, checkpoint_id: u64, storage: &CheckpointStorage) -> String {
    format!(
        "{SHARED_DIR}/{backend_id}-{checkpoint_id}-{:016x}.keyed",
        storage.next_id()
    )
}

impl SnapshotJob {
    /// The snapshot whose synchronous phase began at `started` and froze `self`: its asynchronous phase
    /// writes to `storage`.
    pub(crate) fn start(
        mut self,
        storage: &CheckpointStorage,
        started: Instant,
    ) -> PendingSnapshot {
        let sync_duration = started.elapsed();
        let keep = self.keep.take();
        let checkpoint_id = self.checkpoint_id;
        let run = self.run(storage.clone(), sync_duration);
        PendingSnapshot::new(checkpoint_id, sync_duration, async move {
            let result = run.await?;
            if let Some(keep) = keep {
                keep(result.handle.clone());
            }
            Ok(result)
        })
    }

    async fn run(
        mut self,
        storage: CheckpointStorage,
        sync_duration: Duration,
    ) -> Result<SnapshotResult> {
        let started = Instant::now();
        let chain = self.chain.take();
        let relative = match &chain {
            Some(_) => chain_file_name(&self.backend_id, self.checkpoint_id, &storage),
            None => {
                snapshot_file_name(&self.identity, self.checkpoint_id, self.savepoint, &storage)
            }
        };
        let (checkpoint_id, identity, backend_id) = (
            self.checkpoint_id,
            self.identity.clone(),
            self.backend_id.clone(),
        );
        let delta = chain.as_ref().is_some_and(|c| c.base_id.is_some());
        let copies = self.local.clone();
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
        let uploaded = upload_keyed_file(&storage, &relative, file, move |sink| {
            self.encode(sink, delta)
        })
        .await;
        let ((summary, sizes), copied) = match (uploaded, &chain) {
            (Ok(done), _) => done,
            (Err(e), Some(chain)) => {
                chain.pending.lock().remove(&checkpoint_id);
                return Err(e);
            }
            (Err(e), None) => return Err(e),
        };
        if let Some(chain) = chain {
            let new = StateFile {
                path: relative,
                scope: FileScope::Shared,
                size_bytes: summary.size,
                crc32: summary.crc32,
                created_by: checkpoint_id,
                local_name: String::new(),
            };
            return chain_result(ChainDone {
                chain,
                new,
                storage: &storage,
                backend_id,
                identity,
                checkpoint_id,
                summary,
                sizes,
                local: copies.zip(writer.filter(|_| copied)),
                sync_duration,
                started,
            })
            .await;
        }
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
            sizes,
            sync_duration,
            started.elapsed(),
        ))
    }

    /// Encodes the whole file into `sink` (a delta file if `delta`: each table's changes, or the
    /// table whole where it rewrites); releases each key group once written. Returns the file's summary
    /// and each state's and key group's size (a delta's states not written whole: estimates).
    fn encode(mut self, sink: &mut ChunkSink, delta: bool) -> Result<(FileSummary, StateSizes)> {
        let rewrite = delta.then(|| {
            (0..self.frozen.len() as u32)
                .filter(|&i| self.frozen[i as usize].rewrites())
                .collect()
        });
        let appends = delta && self.frozen.iter().any(|t| t.appends());
        let patches = delta && self.frozen.iter().any(|t| t.patches());
        let header = FileHeader {
            max_parallelism: self.identity.max_parallelism(),
            key_groups: self.identity.key_groups(),
            states: std::mem::take(&mut self.states),
            rewrite,
            appends,
            patches,
        };
        let options = WriterOptions {
            zstd_level: self.config.zstd_level,
            frame_bytes: self.config.frame_bytes,
        };
        let mut writer = KeyedFileWriter::new(&header, options)?;
        let mut tally = SizeTally::new(header.states.iter().map(|s| s.name.as_str()));
        for (kg_index, key_group) in self.identity.key_groups().iter().enumerate() {
            writer.begin_key_group(key_group)?;
            for (state, table) in self.frozen.iter_mut().enumerate() {
                let estimate = table.estimate_group(kg_index);
                table.write_group(kg_index, state as u32, &mut writer)?;
                match estimate {
                    Some(estimate) => {
                        tally.add_estimate(key_group, state, writer.counts(), estimate)
                    }
                    None => tally.add(key_group, state, writer.counts()),
                }
            }
            writer.end_key_group()?;
            sink.push(writer.take_output())?;
        }
        let (last, summary) = writer.finish()?;
        sink.push(last)?;
        Ok((summary, tally.finish()))
    }
}

/// A finished upload of a file of an incremental chain, to become the checkpoint's result.
struct ChainDone<'a> {
    chain: ChainUpload,
    new: StateFile,
    storage: &'a CheckpointStorage,
    backend_id: String,
    identity: SubtaskIdentity,
    checkpoint_id: u64,
    summary: FileSummary,
    sizes: StateSizes,
    /// The local copies, and the copy of the new file, written whole, not yet published.
    local: Option<(LocalCopies, crate::snapshot_io::local_copy::LocalCopyWriter)>,
    sync_duration: Duration,
    started: Instant,
}

/// The result of a checkpoint of a chain: its handle lists the base's files (placeholders, with the ids of
/// the checkpoints that uploaded them) and the new file. A checkpoint aborted while it uploaded deletes
/// its file and fails; one that finished is recorded so that its confirmation makes it the base.
async fn chain_result(done: ChainDone<'_>) -> Result<SnapshotResult> {
    let ChainDone {
        chain,
        new,
        storage,
        backend_id,
        identity,
        checkpoint_id,
        summary,
        sizes,
        local,
        sync_duration,
        started,
    } = done;
    let mut files = chain.base;
    files.push(new);
    let aborted = {
        let mut pending = chain.pending.lock();
        match pending.get_mut(&checkpoint_id) {
            Some(p) if p.aborted => {
                pending.remove(&checkpoint_id);
                true
            }
            Some(p) => {
                p.files = Some(files.clone());
                false
            }
            // Forgotten (too many unresolved): its confirmation will be ignored, the handle is valid.
            None => false,
        }
    };
    let new = files.last().expect("the new file was just pushed");
    if aborted {
        // Nothing of an aborted checkpoint stays in storage (FLINK-30461), and it never becomes a base.
        if let Err(e) = storage.delete(&new.path).await {
            tracing::warn!(path = %new.path, error = %e, "could not delete the upload of an aborted checkpoint; the orphan sweep will");
        }
        return Err(crate::Error::IllegalState(format!(
            "checkpoint {checkpoint_id} was aborted during its asynchronous phase"
        )));
    }
    if let Some((copies, writer)) = local {
        // The base's files come from the base's local copy (hard links), so that the copy of this
        // checkpoint holds its whole chain; one missing fails only this copy.
        let linked = match &chain.base_id {
            Some((base_id, base_backend)) => files[..files.len() - 1].iter().try_for_each(|f| {
                let source = copies.copy_path(storage, base_backend, *base_id, f);
                writer.link_or_copy(&source, crate::snapshot_io::local_copy::local_file_name(f))
            }),
            None => Ok(()),
        };
        if let Err(e) = linked.and_then(|()| writer.publish()) {
            tracing::warn!(checkpoint_id, error = %e, "heap backend: no local copy of this checkpoint");
        }
    }
    let full_bytes = files.iter().map(|f| f.size_bytes).sum();
    let files_reused = files.len() as u32 - 1;
    let handle = crate::snapshot::handle::KeyedStateHandle {
        backend_id,
        operator_id: identity.operator_id().to_string(),
        checkpoint_id,
        max_parallelism: identity.max_parallelism(),
        key_groups: identity.key_groups(),
        format: HandleFormat::KeyedChain,
        files,
    };
    let metrics = crate::snapshot::result::SnapshotMetrics {
        sync_duration,
        async_duration: started.elapsed(),
        checkpointed_bytes: summary.size,
        full_bytes,
        state_bytes: summary.raw_bytes,
        entries: summary.records,
        files_uploaded: 1,
        files_reused,
        sizes,
    };
    Ok(SnapshotResult { handle, metrics })
}
