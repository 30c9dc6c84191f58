//! Asynchronous phase of a heap snapshot: encode the frozen tables key group by key group on a blocking
//! thread and stream the file to checkpoint storage at the same time.

use std::time::{Duration, Instant};

use crate::error::Result;
use crate::format::keyed_file::{FileHeader, FileSummary, KeyedFileWriter, WriterOptions};
use crate::heap::chain::ChainUpload;
use crate::heap::chain_result::{ChainDone, chain_result};
use crate::heap::config::HeapConfig;
use crate::heap::frozen::FrozenTable;
use crate::heap::in_process::KeepVersion;
use crate::heap::rolling::{ChainFile, FrameBytes, NewFile};
use crate::key_group::KeyGroupRange;
use crate::keyed::backend::PendingSnapshot;
use crate::keyed::identity::SubtaskIdentity;
use crate::snapshot::handle::{FileScope, StateFile};
use crate::snapshot::layout::{SHARED_DIR, checkpoint_dir, savepoint_dir};
use crate::snapshot::result::SnapshotResult;
use crate::snapshot::sizes::SizeTally;
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
        let (checkpoint_id, identity, backend_id) = (
            self.checkpoint_id,
            self.identity.clone(),
            self.backend_id.clone(),
        );
        let kinds = chain
            .as_ref()
            .map_or_else(|| vec![NewFile::Full], |c| c.files.clone());
        let copies = self.local.clone();
        let mut local = self.local.take().and_then(|local| {
            (local.writer(&storage, &backend_id, checkpoint_id))
                .inspect_err(|e| warn_no_local_copy(checkpoint_id, e))
                .ok()
        });
        let mut tally = SizeTally::new(self.states.iter().map(|s| s.name.as_str()));
        let mut written: Vec<(String, FileSummary, FrameBytes, NewFile)> = Vec::new();
        let mut job = self;
        for kind in kinds {
            let relative = match &chain {
                Some(_) => chain_file_name(&backend_id, checkpoint_id, &storage),
                None => snapshot_file_name(&identity, checkpoint_id, job.savepoint, &storage),
            };
            let file = local.as_ref().and_then(|writer| {
                let path = writer.path_for(relative.rsplit('/').next().unwrap_or(&relative));
                (std::fs::File::create(&path))
                    .map_err(|e| crate::Error::local(path.display(), e))
                    .inspect_err(|e| warn_no_local_copy(checkpoint_id, e))
                    .ok()
            });
            let uploaded = upload_keyed_file(&storage, &relative, file, move |sink| {
                let encoded = job.encode(sink, kind, &mut tally)?;
                Ok((encoded, job, tally))
            })
            .await;
            let (((summary, bytes), back, back_tally), copied) = match uploaded {
                Ok(done) => done,
                Err(e) => {
                    if let Some(chain) = &chain {
                        chain.pending.lock().remove(&checkpoint_id);
                    }
                    // Files written before this one: no handle lists them.
                    for (path, ..) in &written {
                        if let Err(e) = storage.delete(path).await {
                            tracing::warn!(path = %path, error = %e, "could not delete the upload of a failed checkpoint; the orphan sweep will");
                        }
                    }
                    return Err(e);
                }
            };
            (job, tally) = (back, back_tally);
            if !copied {
                local = None;
            }
            written.push((relative, summary, bytes, kind));
        }
        let sizes = tally.finish();
        if let Some(chain) = chain {
            let range = identity.key_groups();
            let new = (written.iter())
                .map(|(path, summary, bytes, kind)| ChainFile {
                    file: StateFile {
                        path: path.clone(),
                        scope: FileScope::Shared,
                        size_bytes: summary.size,
                        crc32: summary.crc32,
                        created_by: checkpoint_id,
                        local_name: String::new(),
                    },
                    whole: kind.whole(range),
                    bytes: *bytes,
                })
                .collect();
            let summaries = written.iter().map(|(_, s, ..)| *s).collect();
            return chain_result(ChainDone {
                chain,
                new,
                summaries,
                storage: &storage,
                backend_id,
                identity,
                checkpoint_id,
                sizes,
                local: copies.zip(local),
                sync_duration,
                started,
            })
            .await;
        }
        if let Some(writer) = local
            && let Err(e) = writer.publish()
        {
            warn_no_local_copy(checkpoint_id, &e);
        }
        let Some((relative, summary, ..)) = written.pop() else {
            return Err(crate::Error::IllegalState(
                "a snapshot wrote no file".into(),
            ));
        };
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

    /// Encodes file `kind` into `sink`, crediting `tally` with each state's and key group's size (a
    /// delta's states not written whole: estimates): a full file of every key group, a delta file
    /// (each table's changes, or the table whole where it rewrites, and every table whole in the key
    /// groups of its whole range), or a slice of a full checkpoint (every table whole in the slice's
    /// key groups, no other). Releases each key group once written. Returns the file's summary and the
    /// bytes of its frames.
    fn encode(
        &mut self,
        sink: &mut ChunkSink,
        kind: NewFile,
        tally: &mut SizeTally,
    ) -> Result<(FileSummary, FrameBytes)> {
        let range = self.identity.key_groups();
        let rewrites = || {
            (0..self.frozen.len() as u32)
                .filter(|&i| self.frozen[i as usize].rewrites())
                .collect()
        };
        let delta = matches!(kind, NewFile::Delta(_));
        let (rewrite, written) = match kind {
            NewFile::Full => (None, range),
            NewFile::Delta(_) => (Some(rewrites()), range),
            NewFile::Slice(slice) => (Some(Vec::new()), slice),
        };
        let header = FileHeader {
            max_parallelism: self.identity.max_parallelism(),
            key_groups: range,
            states: self.states.clone(),
            rewrite,
            appends: delta && self.frozen.iter().any(|t| t.appends()),
            patches: delta && self.frozen.iter().any(|t| t.patches()),
            whole: match kind {
                NewFile::Full => KeyGroupRange::EMPTY,
                NewFile::Delta(whole) | NewFile::Slice(whole) => whole,
            },
        };
        let whole = header.whole_range();
        let options = WriterOptions {
            zstd_level: self.config.zstd_level,
            frame_bytes: self.config.frame_bytes,
        };
        let mut writer = KeyedFileWriter::new(&header, options)?;
        tally.new_file();
        let mut bytes = FrameBytes::default();
        for key_group in written.iter() {
            let Some(kg_index) = range.index_of(key_group) else {
                continue;
            };
            let is_whole = whole.contains(key_group);
            let before = writer.written();
            writer.begin_key_group(key_group)?;
            for (state, table) in self.frozen.iter_mut().enumerate() {
                let estimate = match is_whole {
                    true => None,
                    false => table.estimate_group(kg_index),
                };
                table.write_group(kg_index, state as u32, is_whole, &mut writer)?;
                match estimate {
                    Some(estimate) => {
                        tally.add_estimate(key_group, state, writer.counts(), estimate)
                    }
                    None => tally.add(key_group, state, writer.counts()),
                }
            }
            writer.end_key_group()?;
            let group_bytes = writer.written() - before;
            match is_whole {
                true => bytes.whole += group_bytes,
                false => bytes.changes += group_bytes,
            }
            sink.push(writer.take_output())?;
        }
        let (last, summary) = writer.finish()?;
        sink.push(last)?;
        Ok((summary, bytes))
    }
}

/// Logs that checkpoint `checkpoint_id` keeps no local copy, and why.
fn warn_no_local_copy(checkpoint_id: u64, error: &crate::Error) {
    tracing::warn!(checkpoint_id, error = %error, "heap backend: no local copy of this checkpoint");
}
