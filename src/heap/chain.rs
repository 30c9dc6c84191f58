//! The heap backend's side of incremental checkpoints (`docs/heap-incremental.md`): the diff base (the
//! chain of files of the last checkpoint this backend confirmed), the uploads in flight, and what
//! confirmations and aborts do to them. The rules are the RocksDB backend's (`docs/protocol.md`,
//! "Backends: notifications are hints, restore validates"): only a confirmed checkpoint whose upload
//! finished here becomes the base, a savepoint never does, and an abort of a delta drops the base when it
//! may be stale (a rebase: the next checkpoint is full).

use std::collections::BTreeMap;
use std::sync::Arc;

use parking_lot::Mutex;

use crate::heap::delta::Cut;
use crate::heap::rolling::{ChainFile, NewFile, Plan, Rotation};
use crate::storage::CheckpointStorage;

/// Aborted deltas in a row after which the backend rebases.
const REBASE_AFTER_ABORTS: u32 = 3;
/// Unresolved checkpoints remembered; older ones are forgotten (their confirmation is then ignored).
const MAX_PENDING: usize = 64;

/// A checkpoint of the chain whose asynchronous phase runs or ran, neither confirmed nor aborted yet.
pub(crate) struct PendingChain {
    /// Aborted while its upload ran: the upload deletes its files and fails.
    pub(crate) aborted: bool,
    /// The chain of the finished upload, oldest file first: what the checkpoint's handle lists.
    pub(crate) files: Option<Vec<ChainFile>>,
    /// Whether it is a delta (it reuses the base's files).
    pub(crate) delta: bool,
    /// Where its files are.
    pub(crate) storage: CheckpointStorage,
}

/// The chains in flight, shared with their asynchronous phases.
pub(crate) type PendingChains = Arc<Mutex<BTreeMap<u64, PendingChain>>>;

/// The diff base: the files of the last checkpoint this backend confirmed, or of the checkpoint a CLAIM
/// restore of the same key groups read.
#[derive(Clone)]
pub(crate) struct Base {
    checkpoint_id: u64,
    files: Vec<ChainFile>,
    storage: CheckpointStorage,
    /// The backend whose local copies hold the base's files (local recovery): this one, or the one
    /// that wrote the restored checkpoint.
    backend_id: String,
    /// Confirmed by this backend; `false` for a restored base, which the first abort of a delta drops.
    confirmed: bool,
}

impl Base {
    /// The base of a backend restored in CLAIM mode from `files`, the chain of checkpoint
    /// `checkpoint_id` that backend `backend_id` wrote to `storage`.
    pub(crate) fn restored(
        checkpoint_id: u64,
        files: Vec<ChainFile>,
        storage: CheckpointStorage,
        backend_id: String,
    ) -> Self {
        Base {
            checkpoint_id,
            files,
            storage,
            backend_id,
            confirmed: false,
        }
    }
}

/// What the asynchronous phase of a checkpoint of a chain needs.
pub(crate) struct ChainUpload {
    /// The base's files the new file is appended to (empty for a full checkpoint): all but those
    /// every key group of which a newer file, or the new one, holds whole.
    pub(crate) base: Vec<ChainFile>,
    /// The files to write: a delta (with the slice of rolling materialization it holds whole, maybe
    /// none), or the files of a full checkpoint.
    pub(crate) files: Vec<NewFile>,
    /// The base's checkpoint and the backend that wrote its local copies (`None` for a full
    /// checkpoint).
    pub(crate) base_id: Option<(u64, String)>,
    pub(crate) pending: PendingChains,
}

/// The chain bookkeeping of one heap backend with incremental checkpoints on.
pub(crate) struct ChainBook {
    /// What the next checkpoint writes: a full file, or a delta with which slice.
    rotation: Rotation,
    base: Option<Base>,
    pending: PendingChains,
    aborts_reusing_base: u32,
}

impl ChainBook {
    /// Chains of at most `max_files` files (at least 1) of the key groups `key_groups` on `base`;
    /// without one the first checkpoint is full.
    pub(crate) fn new(
        max_files: usize,
        key_groups: crate::key_group::KeyGroupRange,
        base: Option<Base>,
    ) -> Self {
        ChainBook {
            rotation: Rotation::new(key_groups, max_files),
            base,
            pending: PendingChains::default(),
            aborts_reusing_base: 0,
        }
    }

    /// The synchronous phase of checkpoint `checkpoint_id` into `storage`: how the tables are cut (a full
    /// checkpoint when there is no base, it lives in another storage, or [`Rotation::plan`] says so; a
    /// delta otherwise), and what the upload needs.
    pub(crate) fn begin(
        &mut self,
        checkpoint_id: u64,
        storage: &CheckpointStorage,
    ) -> (Cut, ChainUpload) {
        if self
            .base
            .as_ref()
            .is_some_and(|b| !b.storage.same_location(storage))
        {
            tracing::info!(
                checkpoint_id,
                "heap backend: the diff base lives in another storage; this checkpoint is full"
            );
            self.base = None;
        }
        let plan = match &self.base {
            Some(b) => self.rotation.plan(&b.files),
            None => Plan::Full,
        };
        let (cut, files, new, base_id) = match (plan, &self.base) {
            (Plan::Delta { kept, whole }, Some(b)) => (
                Cut::Delta(checkpoint_id),
                kept,
                vec![NewFile::Delta(whole)],
                Some((b.checkpoint_id, b.backend_id.clone())),
            ),
            _ => (
                Cut::Full(checkpoint_id),
                Vec::new(),
                self.rotation.full_files(),
                None,
            ),
        };
        let mut pending = self.pending.lock();
        pending.insert(
            checkpoint_id,
            PendingChain {
                aborted: false,
                files: None,
                delta: base_id.is_some(),
                storage: storage.clone(),
            },
        );
        while pending.len() > MAX_PENDING {
            pending.pop_first();
        }
        drop(pending);
        let upload = ChainUpload {
            base: files,
            files: new,
            base_id,
            pending: self.pending.clone(),
        };
        (cut, upload)
    }

    /// `notify_checkpoint_complete`: the checkpoint of `backend_id` becomes the base if its upload
    /// finished here and it was not aborted; returns the new base's id (the tables then drop their
    /// changes up to it).
    pub(crate) fn confirmed(&mut self, checkpoint_id: u64, backend_id: &str) -> Option<u64> {
        let mut pending = self.pending.lock();
        let finished = pending
            .get(&checkpoint_id)
            .is_some_and(|p| !p.aborted && p.files.is_some());
        if !finished {
            return None;
        }
        let p = pending.remove(&checkpoint_id)?;
        pending.retain(|id, _| *id > checkpoint_id);
        drop(pending);
        if self
            .base
            .as_ref()
            .is_some_and(|b| b.checkpoint_id >= checkpoint_id)
        {
            return None;
        }
        self.base = Some(Base {
            checkpoint_id,
            files: p.files?,
            storage: p.storage,
            backend_id: backend_id.to_string(),
            confirmed: true,
        });
        self.aborts_reusing_base = 0;
        Some(checkpoint_id)
    }

    /// `notify_checkpoint_aborted`: a running upload is flagged (it deletes its file and fails); a
    /// finished delta is forgotten and the base dropped when it may be stale, as the RocksDB backend's
    /// rebase: an older finished upload is still unresolved (a lost notification), the base came from a
    /// restore and was never confirmed here, or this is the third aborted delta in a row.
    pub(crate) fn aborted(&mut self, checkpoint_id: u64) {
        let mut pending = self.pending.lock();
        let Some(p) = pending.get_mut(&checkpoint_id) else {
            return;
        };
        if p.files.is_none() {
            p.aborted = true;
            return;
        }
        let delta = p.delta;
        pending.remove(&checkpoint_id);
        let base_id = self.base.as_ref().map(|b| b.checkpoint_id);
        let lost_notification = pending.iter().any(|(id, u)| {
            *id < checkpoint_id && u.files.is_some() && base_id.is_none_or(|b| *id > b)
        });
        drop(pending);
        if delta {
            self.aborts_reusing_base += 1;
        }
        let restored_base = self.base.as_ref().is_some_and(|b| !b.confirmed);
        if delta
            && (lost_notification
                || restored_base
                || self.aborts_reusing_base >= REBASE_AFTER_ABORTS)
        {
            tracing::info!(
                checkpoint_id,
                lost_notification,
                aborts = self.aborts_reusing_base,
                "heap backend: the diff base may be stale; the next checkpoint is full"
            );
            self.base = None;
            self.aborts_reusing_base = 0;
        }
    }
}
