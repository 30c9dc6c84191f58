//! The completed-checkpoint store: which checkpoints exist, the latest one, retention of the last N and
//! subsumption of older ones (as Flink's `CompletedCheckpointStore`). Its deletion rules are
//! `docs/protocol.md`, "Subsumption and garbage collection".

use std::collections::{BTreeSet, HashSet, VecDeque};
use std::future::Future;

use bytes::Bytes;

use crate::checkpoint::fence::Fence;
use crate::checkpoint::handle::CheckpointMetadata;
use crate::checkpoint::registry::SharedFileRegistry;
use crate::error::{Error, ErrorKind, Result};
use crate::storage::{CheckpointStorage, METADATA_FILE, PINNED_MARKER, checkpoint_dir};

pub(crate) use crate::checkpoint::read::read_metadata;
pub use crate::checkpoint::store_types::{
    CancellationPolicy, RegistryStats, RestoreMode, RestoreOutcome, SkippedCheckpoint,
};

/// What adding a completed checkpoint did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AddOutcome {
    /// Checkpoints subsumed (their metadata is gone).
    pub subsumed: Vec<u64>,
    /// The shared-file registry afterwards.
    pub registry: RegistryStats,
    /// Problems of the clean-up after the checkpoint was added (a failed delete, a garbage collection
    /// held back by unreadable metadata). The checkpoint is complete regardless; what was not deleted is
    /// retried at the next completion or left to the orphan sweep.
    pub warnings: Vec<String>,
    /// A coordinator of a newer generation exists: this store deleted nothing, and never will
    /// (`docs/protocol.md`, "Fencing").
    pub fenced: bool,
}

/// Completed checkpoints of one job, oldest first, and the registry of the shared files they use.
pub struct CompletedCheckpointStore {
    storage: CheckpointStorage,
    retained: usize,
    /// The job's own retained checkpoints, oldest first.
    checkpoints: VecDeque<CheckpointMetadata>,
    /// Restored in NO_CLAIM mode: restorable, never subsumed or deleted.
    pinned: Vec<CheckpointMetadata>,
    /// Found in storage after `open` (another coordinator's, or a completion whose outcome was uncertain):
    /// restorable, their files protected, never deleted by this store.
    foreign: Vec<CheckpointMetadata>,
    unreadable: Vec<SkippedCheckpoint>,
    registry: SharedFileRegistry,
    /// The owning coordinator's generation: deletes only while no newer coordinator exists.
    fence: Option<Fence>,
}

impl CompletedCheckpointStore {
    /// Opens the store, reading the metadata of every checkpoint in storage. Checkpoints whose metadata is
    /// corrupt or of an unknown version are reported by [`CompletedCheckpointStore::unreadable`], never
    /// deleted, and hold back every shared-file delete while they exist (they may reference any file).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] if `retained` is 0; storage errors other than corrupt metadata.
    pub async fn open(storage: CheckpointStorage, retained: usize) -> Result<Self> {
        if retained == 0 {
            return Err(Error::InvalidArgument(
                "at least one checkpoint must be retained".into(),
            ));
        }
        let mut store = CompletedCheckpointStore {
            storage,
            retained,
            checkpoints: VecDeque::new(),
            pinned: Vec::new(),
            foreign: Vec::new(),
            unreadable: Vec::new(),
            registry: SharedFileRegistry::default(),
            fence: None,
        };
        for id in store.storage.list_checkpoint_dirs().await? {
            match store.load(id).await? {
                Loaded::Readable(meta) => {
                    if is_pinned(&store.storage, id).await? {
                        store.pinned.push(*meta);
                    } else {
                        store.checkpoints.push_back(*meta);
                    }
                }
                Loaded::Unreadable(skipped) => store.unreadable.push(skipped),
                Loaded::Absent => {}
            }
        }
        store.rebuild_registry();
        Ok(store)
    }

    /// Reads the metadata of checkpoint `id`.
    async fn load(&self, id: u64) -> Result<Loaded> {
        match read_metadata(&self.storage, id).await {
            Ok(meta) if meta.checkpoint_id == id => Ok(Loaded::Readable(Box::new(meta))),
            Ok(meta) => Ok(Loaded::Unreadable(SkippedCheckpoint {
                checkpoint_id: id,
                reason: format!(
                    "metadata of chk-{id} names checkpoint {}",
                    meta.checkpoint_id
                ),
            })),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(Loaded::Absent),
            Err(e) if e.kind() == ErrorKind::Corrupt => {
                tracing::warn!(checkpoint_id = id, error = %e, "unreadable checkpoint metadata");
                Ok(Loaded::Unreadable(SkippedCheckpoint {
                    checkpoint_id: id,
                    reason: e.to_string(),
                }))
            }
            Err(e) => Err(e),
        }
    }

    fn rebuild_registry(&mut self) {
        self.registry =
            SharedFileRegistry::rebuild(&self.checkpoints, self.pinned.iter().chain(&self.foreign));
    }

    /// Makes deletes conditional on `fence` (the owning coordinator's generation) still holding.
    pub(crate) fn set_fence(&mut self, fence: Fence) {
        self.fence = Some(fence);
    }

    /// Whether this store may delete: no coordinator of a newer generation exists. A failed check counts as
    /// a no (reported in `warnings`).
    async fn may_delete(&self, warnings: &mut Vec<String>) -> bool {
        let Some(fence) = &self.fence else {
            return true;
        };
        match fence.holds().await {
            Ok(holds) => holds,
            Err(e) => {
                warnings.push(format!(
                    "deletes postponed: the coordinator generations cannot be listed: {e}"
                ));
                false
            }
        }
    }

    /// The shared-file registry of the retained, pinned and foreign checkpoints.
    pub fn registry(&self) -> &SharedFileRegistry {
        &self.registry
    }

    /// Checkpoints pinned by a NO_CLAIM restore: never subsumed or deleted by the job.
    pub fn pinned(&self) -> &[CheckpointMetadata] {
        &self.pinned
    }

    /// Checkpoints found in storage after the store opened (written by another coordinator, or by this
    /// one when a completion's outcome was uncertain): restorable and protected, never deleted here.
    pub fn foreign(&self) -> &[CheckpointMetadata] {
        &self.foreign
    }

    /// Whether the shared file `path` (relative to the job root) is referenced by a retained, pinned or
    /// foreign checkpoint.
    pub fn references(&self, path: &str) -> bool {
        self.registry.contains(path)
    }

    /// Every file (private and shared) a checkpoint this store knows references, and every registered
    /// shared file.
    pub(crate) fn referenced_paths(&self) -> HashSet<&str> {
        let mut paths: HashSet<&str> = self
            .known()
            .flat_map(|c| c.files())
            .map(|f| f.path.as_str())
            .collect();
        paths.extend(self.registry.iter_paths());
        paths
    }

    /// Ids of every checkpoint this store knows of, readable or not.
    pub(crate) fn known_ids(&self) -> BTreeSet<u64> {
        self.known()
            .map(|c| c.checkpoint_id)
            .chain(self.unreadable.iter().map(|u| u.checkpoint_id))
            .collect()
    }

    /// Retained, pinned and foreign checkpoints.
    fn known(&self) -> impl Iterator<Item = &CheckpointMetadata> {
        self.checkpoints
            .iter()
            .chain(&self.pinned)
            .chain(&self.foreign)
    }

    /// Checks that `checkpoint` can complete: every shared file it reuses is still registered.
    ///
    /// # Errors
    /// [`Error::IllegalState`] naming the missing files (a concurrent checkpoint built on an older base
    /// referenced files that were deleted meanwhile); the checkpoint must be declined.
    pub fn check_references(&self, checkpoint: &CheckpointMetadata) -> Result<()> {
        let missing = self.registry.missing_reused_files(checkpoint);
        if missing.is_empty() {
            return Ok(());
        }
        Err(Error::IllegalState(format!(
            "checkpoint {} reuses shared files no retained checkpoint holds any more: {}",
            checkpoint.checkpoint_id,
            missing.join(", ")
        )))
    }

    /// Pins checkpoint `checkpoint_id` (a NO_CLAIM restore from the job's own storage): writes its
    /// `_pinned` marker and takes it out of retention, so neither it nor any of its files is ever deleted
    /// by the job; it stays restorable. Pinning an unknown or already pinned checkpoint does nothing.
    ///
    /// # Errors
    /// Storage errors while writing the marker (the checkpoint stays retained).
    pub async fn pin(&mut self, checkpoint_id: u64) -> Result<()> {
        let Some(pos) = self
            .checkpoints
            .iter()
            .position(|c| c.checkpoint_id == checkpoint_id)
        else {
            return Ok(());
        };
        let marker = format!("{}/{PINNED_MARKER}", checkpoint_dir(checkpoint_id));
        self.storage
            .put_if_absent(
                &marker,
                Bytes::from_static(b"pinned by a NO_CLAIM restore\n"),
            )
            .await?;
        if let Some(meta) = self.checkpoints.remove(pos) {
            self.pinned.push(meta);
        }
        self.rebuild_registry();
        Ok(())
    }

    /// The job's own retained checkpoints, oldest first (pinned and foreign ones are not among them).
    pub fn checkpoints(&self) -> impl DoubleEndedIterator<Item = &CheckpointMetadata> {
        self.checkpoints.iter()
    }

    /// The newest restorable checkpoint: retained, pinned (a NO_CLAIM restore is restored again after a
    /// failover, as Flink does) or foreign.
    pub fn latest(&self) -> Option<&CheckpointMetadata> {
        self.known().max_by_key(|c| c.checkpoint_id)
    }

    /// A retained, pinned or foreign checkpoint by id.
    pub fn get(&self, checkpoint_id: u64) -> Option<&CheckpointMetadata> {
        self.known().find(|c| c.checkpoint_id == checkpoint_id)
    }

    /// Checkpoints whose metadata could not be read (corrupt, or of a newer release).
    pub fn unreadable(&self) -> &[SkippedCheckpoint] {
        &self.unreadable
    }

    /// How many checkpoints are retained.
    pub fn retained(&self) -> usize {
        self.retained
    }

    /// The storage the store reads.
    pub fn storage(&self) -> &CheckpointStorage {
        &self.storage
    }

    /// Reads checkpoints that appeared in storage since the store opened (`docs/protocol.md`, step 1 of
    /// subsumption): every `chk-<n>` directory whose id is neither known here nor `own(n)` (a checkpoint the
    /// caller knows has no metadata: one it has pending or aborted) is read; readable metadata becomes a
    /// foreign checkpoint, unreadable metadata holds back shared-file deletes.
    ///
    /// # Errors
    /// Storage errors while listing or reading.
    pub(crate) async fn refresh(&mut self, own: impl Fn(u64) -> bool) -> Result<()> {
        let known = self.known_ids();
        let mut changed = false;
        for id in self.storage.list_checkpoint_dirs().await? {
            if known.contains(&id) || own(id) {
                continue;
            }
            match self.load(id).await? {
                Loaded::Readable(meta) => {
                    tracing::warn!(
                        checkpoint_id = id,
                        "found a checkpoint another coordinator completed; its files are protected"
                    );
                    self.foreign.push(*meta);
                    changed = true;
                }
                Loaded::Unreadable(skipped) => self.unreadable.push(skipped),
                Loaded::Absent => {}
            }
        }
        if changed {
            self.foreign.sort_by_key(|c| c.checkpoint_id);
            self.rebuild_registry();
        }
        Ok(())
    }

    /// Forgets the checkpoints whose metadata is no longer in storage (`exists(id)` is false for them):
    /// another coordinator subsumed or aborted them, so they are no checkpoints any more and their files
    /// need no protection from this store. Used by the orphan sweep with the ids its listing found.
    pub(crate) fn forget_missing(&mut self, exists: impl Fn(u64) -> bool) {
        let before = self.checkpoints.len() + self.pinned.len() + self.foreign.len();
        self.checkpoints.retain(|c| exists(c.checkpoint_id));
        self.pinned.retain(|c| exists(c.checkpoint_id));
        self.foreign.retain(|c| exists(c.checkpoint_id));
        if self.checkpoints.len() + self.pinned.len() + self.foreign.len() != before {
            tracing::warn!("checkpoints this coordinator knew were deleted by another one");
            self.rebuild_registry();
        }
    }

    /// Protects a checkpoint known to exist in storage (the winner of a race for its metadata).
    pub(crate) fn add_foreign(&mut self, checkpoint: CheckpointMetadata) {
        if self.get(checkpoint.checkpoint_id).is_none() {
            self.foreign.push(checkpoint);
            self.foreign.sort_by_key(|c| c.checkpoint_id);
            self.rebuild_registry();
        }
    }

    /// Adds a completed checkpoint (its metadata is already durable), registers its shared files and
    /// subsumes the oldest ones beyond the retained count (`docs/protocol.md`): before deleting, checkpoints
    /// that appeared in storage are read (`own` as in `CompletedCheckpointStore::refresh`); a subsumed
    /// checkpoint's metadata is deleted and confirmed gone before its private files; a shared file no
    /// retained checkpoint uses is unregistered only once its delete succeeded, and none is deleted while
    /// any metadata in storage is unreadable. Nothing is deleted once a coordinator of a newer generation
    /// exists (checked before, and again between a subsumed checkpoint's metadata and its files). Failures
    /// of this clean-up are warnings, never errors: the checkpoint is complete.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] if the id is not above the latest retained one (nothing changed).
    pub async fn add(
        &mut self,
        checkpoint: CheckpointMetadata,
        own: impl Fn(u64) -> bool,
    ) -> Result<AddOutcome> {
        if self
            .checkpoints
            .back()
            .is_some_and(|l| l.checkpoint_id >= checkpoint.checkpoint_id)
        {
            return Err(Error::InvalidArgument(format!(
                "checkpoint {} is not newer than the latest completed one",
                checkpoint.checkpoint_id
            )));
        }
        let id = checkpoint.checkpoint_id;
        self.registry.register(&checkpoint);
        self.checkpoints.push_back(checkpoint);
        let mut outcome = AddOutcome::default();
        if let Err(e) = self.refresh(|n| n == id || own(n)).await {
            // Without knowing what else is in storage, nothing may be deleted.
            outcome.warnings.push(format!(
                "subsumption postponed: could not list the checkpoints in storage: {e}"
            ));
            outcome.registry = self.registry_stats(0);
            return Ok(outcome);
        }
        if !self.may_delete(&mut outcome.warnings).await {
            outcome.fenced = true;
            outcome.registry = self.registry_stats(0);
            return Ok(outcome);
        }
        self.subsume(&mut outcome).await;
        let deleted = if outcome.fenced {
            0
        } else {
            self.delete_unused_shared_files(&mut outcome.warnings).await
        };
        outcome.registry = self.registry_stats(deleted);
        Ok(outcome)
    }

    /// Subsumes the oldest retained checkpoints beyond the retained count.
    async fn subsume(&mut self, outcome: &mut AddOutcome) {
        while self.checkpoints.len() > self.retained {
            let Some(oldest) = self.checkpoints.front() else {
                break;
            };
            let id = oldest.checkpoint_id;
            let dir = checkpoint_dir(id);
            let metadata = format!("{dir}/{METADATA_FILE}");
            if let Err(e) = self.storage.delete_confirmed(&metadata).await {
                // Still a checkpoint: it stays retained, its files registered.
                outcome.warnings.push(format!(
                    "checkpoint {id} could not be subsumed (retried at the next completion): {e}"
                ));
                break;
            }
            self.checkpoints.pop_front();
            outcome.subsumed.push(id);
            // Checked again with the metadata gone: a coordinator that opened before read this
            // checkpoint as retained and may reuse its files; they stay (registered) if one did.
            if !self.may_delete(&mut outcome.warnings).await {
                outcome.fenced = true;
                return;
            }
            if let Err(e) = self.storage.delete_dir(&dir).await {
                outcome.warnings.push(format!(
                    "private files of subsumed checkpoint {id} left for the orphan sweep: {e}"
                ));
            }
        }
    }

    fn registry_stats(&self, deleted_files: usize) -> RegistryStats {
        RegistryStats {
            files: self.registry.len(),
            bytes: self.registry.total_bytes(),
            deleted_files,
        }
    }

    /// Deletes the shared files whose last use is below the lowest retained checkpoint, unregistering
    /// each once its delete succeeded; nothing while metadata in storage is unreadable. Returns how many
    /// were deleted.
    async fn delete_unused_shared_files(&mut self, warnings: &mut Vec<String>) -> usize {
        let lowest = self
            .checkpoints
            .front()
            .map_or(u64::MAX, |c| c.checkpoint_id);
        let unused = self.registry.unused(lowest);
        if unused.is_empty() {
            return 0;
        }
        if !self.unreadable.is_empty() {
            let ids: Vec<String> = self
                .unreadable
                .iter()
                .map(|u| format!("chk-{}", u.checkpoint_id))
                .collect();
            warnings.push(format!(
                "{} unused shared files kept: the metadata of {} cannot be read and may reference them",
                unused.len(),
                ids.join(", ")
            ));
            return 0;
        }
        let mut deleted = 0;
        for path in &unused {
            match self.storage.delete(path).await {
                Ok(()) => {
                    tracing::debug!(path = %path, "deleted a shared file no retained checkpoint uses");
                    self.registry.unregister(path);
                    deleted += 1;
                }
                Err(e) => warnings.push(format!(
                    "unused shared file {path} not deleted (retried at the next completion): {e}"
                )),
            }
        }
        deleted
    }

    /// Runs `restore` on the newest restorable checkpoint (retained, pinned or foreign); if it fails
    /// because a file is corrupt or missing, falls back to the next older one, and so on. Skipped
    /// checkpoints are logged and reported.
    ///
    /// # Errors
    /// The first error that is not about a corrupt or missing file; [`Error::NotFound`] if no checkpoint
    /// could be restored (the message lists why each failed).
    pub async fn restore_latest<T, F, Fut>(&self, mut restore: F) -> Result<RestoreOutcome<T>>
    where
        F: FnMut(CheckpointMetadata) -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        let mut skipped: Vec<SkippedCheckpoint> = self.unreadable.iter().rev().cloned().collect();
        let mut candidates: Vec<&CheckpointMetadata> = self.known().collect();
        candidates.sort_by_key(|c| std::cmp::Reverse(c.checkpoint_id));
        for checkpoint in candidates {
            let id = checkpoint.checkpoint_id;
            match restore(checkpoint.clone()).await {
                Ok(value) => {
                    skipped.retain(|s| s.checkpoint_id > id);
                    return Ok(RestoreOutcome {
                        value,
                        checkpoint_id: id,
                        skipped,
                    });
                }
                Err(e) if matches!(e.kind(), ErrorKind::Corrupt | ErrorKind::NotFound) => {
                    tracing::warn!(checkpoint_id = id, error = %e, "checkpoint unreadable, falling back to the previous one");
                    skipped.push(SkippedCheckpoint {
                        checkpoint_id: id,
                        reason: e.to_string(),
                    });
                }
                Err(e) => return Err(e),
            }
        }
        skipped.sort_by_key(|s| std::cmp::Reverse(s.checkpoint_id));
        let reasons: Vec<String> = skipped
            .iter()
            .map(|s| format!("chk-{}: {}", s.checkpoint_id, s.reason))
            .collect();
        Err(Error::NotFound {
            path: format!(
                "{} (no restorable checkpoint; {})",
                self.storage.path(""),
                if reasons.is_empty() {
                    "the job has no completed checkpoint".to_string()
                } else {
                    reasons.join("; ")
                }
            ),
        })
    }

    /// Ends the store's life with the job: keeps or deletes the job's own retained checkpoints (pinned and
    /// foreign ones are never deleted).
    ///
    /// # Errors
    /// Storage errors while deleting; [`Error::IllegalState`] if a newer coordinator exists (nothing is
    /// deleted).
    pub async fn shutdown(mut self, policy: CancellationPolicy) -> Result<()> {
        if policy == CancellationPolicy::DeleteOnCancellation {
            let mut warnings = Vec::new();
            if !self.may_delete(&mut warnings).await {
                return Err(Error::IllegalState(format!(
                    "a newer coordinator of this job exists; this one deletes nothing {}",
                    warnings.join("; ")
                )));
            }
            while let Some(oldest) = self.checkpoints.front() {
                discard(&self.storage, oldest.checkpoint_id).await?;
                self.checkpoints.pop_front();
            }
            let mut warnings = Vec::new();
            self.delete_unused_shared_files(&mut warnings).await;
            if let Some(first) = warnings.into_iter().next() {
                return Err(Error::IllegalState(first));
            }
        }
        Ok(())
    }
}

/// The metadata of one checkpoint directory.
enum Loaded {
    Readable(Box<CheckpointMetadata>),
    Unreadable(SkippedCheckpoint),
    /// No `_metadata`: the checkpoint never completed (or is still pending).
    Absent,
}

async fn is_pinned(storage: &CheckpointStorage, id: u64) -> Result<bool> {
    let marker = format!("{}/{PINNED_MARKER}", checkpoint_dir(id));
    match storage.head(&marker).await {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

/// Deletes checkpoint `id`: its metadata first, durably and confirmed gone (so it stops being a checkpoint
/// before anything it references goes), then every other file of its directory. A crash in between leaves
/// only unreferenced files behind, never metadata pointing at deleted files.
pub(crate) async fn discard(storage: &CheckpointStorage, id: u64) -> Result<()> {
    let dir = checkpoint_dir(id);
    storage
        .delete_confirmed(&format!("{dir}/{METADATA_FILE}"))
        .await?;
    storage.delete_dir(&dir).await
}
