//! The end of the asynchronous phase of a checkpoint of a heap incremental chain: the handle of the
//! base's files it still needs and the new ones, recorded for the confirmation that makes it the base,
//! or every new file deleted if the checkpoint was aborted meanwhile.

use std::time::{Duration, Instant};

use crate::error::Result;
use crate::format::keyed_file::FileSummary;
use crate::heap::chain::ChainUpload;
use crate::heap::rolling::ChainFile;
use crate::keyed::identity::SubtaskIdentity;
use crate::snapshot::handle::HandleFormat;
use crate::snapshot::result::SnapshotResult;
use crate::snapshot::sizes::StateSizes;
use crate::snapshot_io::local_copy::{LocalCopies, LocalCopyWriter};
use crate::storage::CheckpointStorage;

/// The finished uploads of the files of a checkpoint of an incremental chain, to become its result.
pub(crate) struct ChainDone<'a> {
    pub(crate) chain: ChainUpload,
    /// The files written, in order (one for a delta, one per slice for a full checkpoint).
    pub(crate) new: Vec<ChainFile>,
    /// Their summaries, in the same order.
    pub(crate) summaries: Vec<FileSummary>,
    pub(crate) storage: &'a CheckpointStorage,
    pub(crate) backend_id: String,
    pub(crate) identity: SubtaskIdentity,
    pub(crate) checkpoint_id: u64,
    pub(crate) sizes: StateSizes,
    /// The local copies, and the copy of the new files, written whole, not yet published.
    pub(crate) local: Option<(LocalCopies, LocalCopyWriter)>,
    pub(crate) sync_duration: Duration,
    pub(crate) started: Instant,
}

/// The result of a checkpoint of a chain: its handle lists the base's files it still needs (placeholders,
/// with the ids of the checkpoints that uploaded them) and the new files. A checkpoint aborted while it
/// uploaded deletes its files and fails; one that finished is recorded so that its confirmation makes it
/// the base.
///
/// # Errors
/// [`crate::Error::IllegalState`] for a checkpoint aborted during its asynchronous phase.
pub(crate) async fn chain_result(done: ChainDone<'_>) -> Result<SnapshotResult> {
    let ChainDone {
        chain,
        new,
        summaries,
        storage,
        backend_id,
        identity,
        checkpoint_id,
        sizes,
        local,
        sync_duration,
        started,
    } = done;
    let new_count = new.len();
    let mut files = chain.base;
    files.extend(new);
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
    let reused = files.len() - new_count;
    if aborted {
        // Nothing of an aborted checkpoint stays in storage (FLINK-30461), and it never becomes a base.
        for new in &files[reused..] {
            if let Err(e) = storage.delete(&new.file.path).await {
                tracing::warn!(path = %new.file.path, error = %e, "could not delete the upload of an aborted checkpoint; the orphan sweep will");
            }
        }
        return Err(crate::Error::IllegalState(format!(
            "checkpoint {checkpoint_id} was aborted during its asynchronous phase"
        )));
    }
    if let Some((copies, writer)) = local {
        // The base's files come from the base's local copy (hard links), so that the copy of this
        // checkpoint holds its whole chain. One missing there (the base's copy gone: it was restored
        // on another machine) is left out: a restore reads that file from checkpoint storage, the
        // others locally (each file is checked against the handle on its own).
        if let Some((base_id, base_backend)) = &chain.base_id {
            for f in files[..reused].iter().map(|f| &f.file) {
                let source = copies.copy_path(storage, base_backend, *base_id, f);
                let name = crate::snapshot_io::local_copy::local_file_name(f);
                if let Err(e) = writer.link_or_copy(&source, name) {
                    tracing::info!(checkpoint_id, path = %f.path, error = %e, "heap backend: a file of the chain is not in the local copy");
                }
            }
        }
        if let Err(e) = writer.publish() {
            tracing::warn!(checkpoint_id, error = %e, "heap backend: no local copy of this checkpoint");
        }
    }
    let full_bytes = files.iter().map(|f| f.file.size_bytes).sum();
    let files = files.into_iter().map(|f| f.file).collect();
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
        checkpointed_bytes: summaries.iter().map(|s| s.size).sum(),
        full_bytes,
        state_bytes: summaries.iter().map(|s| s.raw_bytes).sum(),
        entries: summaries.iter().map(|s| s.records).sum(),
        files_uploaded: new_count as u32,
        files_reused: reused as u32,
        sizes,
    };
    Ok(SnapshotResult { handle, metrics })
}
