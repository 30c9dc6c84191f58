//! The completed-checkpoint store: which checkpoints exist, their roles on the job's line, the latest
//! one, retention of the last N and subsumption of older ones (as Flink's `CompletedCheckpointStore`).
//! Its deletion rules are `docs/protocol.md`, "Subsumption and garbage collection" (invariant P7), and
//! `docs/faults.md`.

use std::collections::{BTreeSet, HashSet};
use std::future::Future;

use bytes::Bytes;

use crate::checkpoint::fence::{Fence, FenceCheck};
use crate::checkpoint::known::KnownCheckpoints;
use crate::checkpoint::lineage::{LineRecord, Lineage};
use crate::checkpoint::registry::{SharedFileRegistry, Use};
use crate::error::{Error, ErrorKind, Result};
use crate::snapshot::handle::CheckpointMetadata;
use crate::snapshot::layout::{METADATA_FILE, PINNED_MARKER, checkpoint_dir};
use crate::storage::CheckpointStorage;

pub use crate::checkpoint::store_types::{
    AddOutcome, CancellationPolicy, RegistryStats, RestoreOutcome, SkippedCheckpoint,
};
pub use crate::snapshot::restore_mode::RestoreMode;

/// Completed checkpoints of one job in its storage, and the registry of the shared files they use.
pub struct CompletedCheckpointStore {
    storage: CheckpointStorage,
    retained: usize,
    known: KnownCheckpoints,
    unreadable: Vec<SkippedCheckpoint>,
    lineage: Lineage,
    /// The owning coordinator's generation: deletes only while no newer coordinator exists.
    fence: Option<Fence>,
}

/// Whether deletes may go ahead now.
enum MayDelete {
    Yes,
    /// A newer coordinator exists (this generation): nothing is deleted, ever again.
    Fenced(u64),
    /// Could not tell (a listing failed): nothing is deleted now; retried at the next completion.
    Postponed,
}

impl CompletedCheckpointStore {
    /// Opens the store, reading the job's lineage records and the metadata of every checkpoint in
    /// storage. Checkpoints whose metadata is corrupt or of an unknown version are reported by
    /// [`CompletedCheckpointStore::unreadable`], never deleted, and hold back every shared-file delete while
    /// they exist (they may reference any file).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] if `retained` is 0; storage errors other than corrupt metadata.
    pub async fn open(storage: CheckpointStorage, retained: usize) -> Result<Self> {
        if retained == 0 {
            return Err(Error::InvalidArgument(
                "at least one checkpoint must be retained".into(),
            ));
        }
        let lineage = Lineage::load(&storage).await?;
        let mut store = CompletedCheckpointStore {
            storage,
            retained,
            known: KnownCheckpoints::default(),
            unreadable: Vec::new(),
            lineage,
            fence: None,
        };
        for id in store.storage.list_checkpoint_dirs().await? {
            match store.load(id).await? {
                Loaded::Readable(meta) => {
                    let pinned = is_pinned(&store.storage, id).await?;
                    store.known.insert(*meta, pinned);
                }
                Loaded::Unreadable(skipped) => store.unreadable.push(skipped),
                Loaded::Absent => {}
            }
        }
        store.known.rebuild_registry(&store.lineage);
        Ok(store)
    }

    /// Reads the metadata of checkpoint `id`.
    async fn load(&self, id: u64) -> Result<Loaded> {
        match self.storage.read_checkpoint_metadata(id).await {
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

    /// Makes deletes conditional on `fence` (the owning coordinator's generation) still holding.
    pub(crate) fn set_fence(&mut self, fence: Fence) {
        self.fence = Some(fence);
    }

    /// Whether this store may delete now: no coordinator of a newer generation exists. A failed check
    /// postpones (a warning in `warnings`), it never fences.
    async fn may_delete(&self, warnings: &mut Vec<String>) -> MayDelete {
        let Some(fence) = &self.fence else {
            return MayDelete::Yes;
        };
        match fence.check().await {
            FenceCheck::Holds => MayDelete::Yes,
            FenceCheck::Fenced { newer } => MayDelete::Fenced(newer),
            FenceCheck::Unknown(e) => {
                warnings.push(format!(
                    "deletes postponed: the coordinator generations could not be listed: {e}"
                ));
                MayDelete::Postponed
            }
        }
    }

    /// The shared-file registry of the known checkpoints.
    pub fn registry(&self) -> &SharedFileRegistry {
        self.known.registry()
    }

    /// Checkpoints pinned by a NO_CLAIM restore: never subsumed or deleted by the job.
    pub fn pinned(&self) -> Vec<&CheckpointMetadata> {
        self.known.with_role(Use::Pinned, &self.lineage)
    }

    /// Checkpoints a restore abandoned (`docs/faults.md`): kept with their files, never restored, subsumed
    /// at the next completion.
    pub fn abandoned(&self) -> Vec<&CheckpointMetadata> {
        self.known.with_role(Use::Abandoned, &self.lineage)
    }

    /// Whether the shared file `path` (relative to the job root) is referenced by a known checkpoint.
    pub fn references(&self, path: &str) -> bool {
        self.known.registry().contains(path)
    }

    /// Every file (private and shared) a known checkpoint references, and every registered shared file.
    pub(crate) fn referenced_paths(&self) -> HashSet<&str> {
        let mut paths: HashSet<&str> = self
            .known
            .all()
            .flat_map(|c| c.files())
            .map(|f| f.path.as_str())
            .collect();
        paths.extend(self.known.registry().iter_paths());
        paths
    }

    /// Ids of every checkpoint this store knows of, readable or not.
    pub(crate) fn known_ids(&self) -> BTreeSet<u64> {
        self.known
            .all()
            .map(|c| c.checkpoint_id)
            .chain(self.unreadable.iter().map(|u| u.checkpoint_id))
            .collect()
    }

    /// Checks that `checkpoint` can complete: every shared file it reuses is referenced by a retained
    /// checkpoint of the job's line and was not chosen for deletion.
    ///
    /// # Errors
    /// [`Error::IllegalState`] naming the files; the checkpoint must be declined.
    pub fn check_references(&self, checkpoint: &CheckpointMetadata) -> Result<()> {
        let unavailable = self.known.registry().unavailable_reused_files(checkpoint);
        if unavailable.is_empty() {
            return Ok(());
        }
        Err(Error::IllegalState(format!(
            "checkpoint {} reuses shared files no retained checkpoint holds (deleted, chosen for deletion, \
             or only of a pinned or abandoned checkpoint): {}",
            checkpoint.checkpoint_id,
            unavailable.join(", ")
        )))
    }

    /// Shared files `checkpoint` reuses that it may not (see [`CompletedCheckpointStore::check_references`]).
    pub(crate) fn unavailable_files(&self, checkpoint: &CheckpointMetadata) -> Vec<String> {
        self.known
            .registry()
            .unavailable_reused_files(checkpoint)
            .into_iter()
            .map(str::to_string)
            .collect()
    }

    /// Pins checkpoint `checkpoint_id` (a NO_CLAIM restore from the job's own storage): writes its
    /// `_pinned` marker, so neither it nor any of its files is ever deleted by the job and no checkpoint
    /// reuses its files; it stays restorable. Pinning an unknown or already pinned checkpoint does
    /// nothing.
    ///
    /// # Errors
    /// Storage errors while writing the marker (the checkpoint stays retained).
    pub async fn pin(&mut self, checkpoint_id: u64) -> Result<()> {
        if !self.known.contains(checkpoint_id) {
            return Ok(());
        }
        let marker = format!("{}/{PINNED_MARKER}", checkpoint_dir(checkpoint_id));
        self.storage
            .put_if_absent(
                &marker,
                Bytes::from_static(b"pinned by a NO_CLAIM restore\n"),
            )
            .await?;
        self.known.pin(checkpoint_id);
        self.known.rebuild_registry(&self.lineage);
        Ok(())
    }

    /// Whether a restore of checkpoint `checkpoint_id` may claim it ([`RestoreMode::Claim`]): it is known
    /// here and not pinned (a pinned checkpoint's files are never the job's to reuse or delete, so its
    /// restore is always NO_CLAIM, as Flink keeps "first checkpoint full" across failovers).
    pub fn claimable(&self, checkpoint_id: u64) -> bool {
        self.known.contains(checkpoint_id) && !self.known.is_pinned(checkpoint_id)
    }

    /// [`RestoreMode`] a restore of `checkpoint_id` should use when `wanted` is asked for: `wanted`, or
    /// NO_CLAIM when the checkpoint is not claimable ([`CompletedCheckpointStore::claimable`]).
    pub fn restore_mode(&self, checkpoint_id: u64, wanted: RestoreMode) -> RestoreMode {
        if wanted == RestoreMode::Claim && self.claimable(checkpoint_id) {
            RestoreMode::Claim
        } else {
            RestoreMode::NoClaim
        }
    }

    /// Writes a lineage record (`docs/faults.md`) and applies it: checkpoints it abandons stop being
    /// restorable and are subsumed at the next completion.
    ///
    /// # Errors
    /// Storage errors while writing the record (nothing changed).
    pub(crate) async fn record_line(&mut self, record: LineRecord) -> Result<()> {
        self.lineage.record(&self.storage, record).await?;
        self.known.rebuild_registry(&self.lineage);
        Ok(())
    }

    /// The highest id the lineage records name: ids continue above it.
    pub(crate) fn id_floor(&self) -> u64 {
        self.lineage.id_floor()
    }

    /// The job's retained checkpoints on its line, oldest first by `(generation, id)` (pinned and
    /// abandoned ones are not among them).
    pub fn checkpoints(&self) -> impl DoubleEndedIterator<Item = &CheckpointMetadata> {
        self.known
            .with_role(Use::Retained, &self.lineage)
            .into_iter()
    }

    /// The newest restorable checkpoint by `(generation, id)`: retained or pinned (a NO_CLAIM restore is
    /// restored again after a failover, as Flink does), never abandoned, and never an older generation's
    /// while a newer generation's exists.
    pub fn latest(&self) -> Option<&CheckpointMetadata> {
        self.known.restorable(&self.lineage).into_iter().next()
    }

    /// A known checkpoint by id (any role).
    pub fn get(&self, checkpoint_id: u64) -> Option<&CheckpointMetadata> {
        self.known.get(checkpoint_id)
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
    /// caller knows has no metadata: one pending or aborted by it) is read; readable metadata is adopted
    /// (another coordinator's checkpoint, or a completion of ours whose outcome was uncertain), unreadable
    /// metadata holds back shared-file deletes.
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
                        generation = meta.generation,
                        "found a checkpoint another coordinator completed; adopted, its files protected"
                    );
                    let pinned = is_pinned(&self.storage, id).await?;
                    self.known.insert(*meta, pinned);
                    changed = true;
                }
                Loaded::Unreadable(skipped) => self.unreadable.push(skipped),
                Loaded::Absent => {}
            }
        }
        if changed {
            self.known.rebuild_registry(&self.lineage);
        }
        Ok(())
    }

    /// Forgets the checkpoints whose metadata is no longer in storage (`exists(id)` is false for them):
    /// another coordinator subsumed or aborted them. Used by the orphan sweep with the ids its listing
    /// found. Their files are not doomed here: the sweep decides what goes.
    pub(crate) fn forget_missing(&mut self, exists: impl Fn(u64) -> bool) {
        if self.known.retain(exists) {
            tracing::warn!("checkpoints this coordinator knew were deleted by another one");
            self.known.rebuild_registry(&self.lineage);
        }
    }

    /// Protects a checkpoint known to exist in storage (the winner of a race for its metadata).
    pub(crate) fn adopt(&mut self, checkpoint: CheckpointMetadata) {
        if !self.known.contains(checkpoint.checkpoint_id) {
            self.known.insert(checkpoint, false);
            self.known.rebuild_registry(&self.lineage);
        }
    }

    /// Adds a completed checkpoint (its metadata is already durable), registers its shared files and
    /// subsumes what is beyond retention (`docs/protocol.md`): before deleting, checkpoints that appeared
    /// in storage are read (`own` as in `CompletedCheckpointStore::refresh`); a subsumed checkpoint's
    /// metadata is deleted and confirmed gone before its private files; shared files no known checkpoint
    /// uses any more are doomed (never reusable again) and deleted, leaving the doomed set only once a
    /// delete succeeded; none is deleted while any metadata in storage is unreadable. Nothing is deleted
    /// once a coordinator of a newer generation exists (checked before, and again between a subsumed
    /// checkpoint's metadata and its files), nor while that cannot be checked (postponed). Failures of this
    /// clean-up are warnings, never errors: the checkpoint is complete.
    pub async fn add(
        &mut self,
        checkpoint: CheckpointMetadata,
        own: impl Fn(u64) -> bool,
    ) -> AddOutcome {
        let id = checkpoint.checkpoint_id;
        self.known.insert(checkpoint, false);
        self.known.rebuild_registry(&self.lineage);
        let mut outcome = AddOutcome::default();
        if let Err(e) = self.refresh(|n| n == id || own(n)).await {
            // Without knowing what else is in storage, nothing may be deleted.
            outcome.warnings.push(format!(
                "subsumption postponed: could not list the checkpoints in storage: {e}"
            ));
            outcome.registry = self.registry_stats(0);
            return outcome;
        }
        match self.may_delete(&mut outcome.warnings).await {
            MayDelete::Yes => {}
            MayDelete::Fenced(newer) => {
                outcome.fenced = Some(newer);
                outcome.registry = self.registry_stats(0);
                return outcome;
            }
            MayDelete::Postponed => {
                outcome.registry = self.registry_stats(0);
                return outcome;
            }
        }
        self.subsume(&mut outcome).await;
        let deleted = if outcome.fenced.is_some() {
            0
        } else {
            self.delete_doomed(&mut outcome.warnings).await
        };
        outcome.registry = self.registry_stats(deleted);
        outcome
    }

    /// Subsumes the abandoned checkpoints and the retained ones beyond the retained count.
    async fn subsume(&mut self, outcome: &mut AddOutcome) {
        for id in self.known.to_subsume(self.retained, &self.lineage) {
            let dir = checkpoint_dir(id);
            let metadata = format!("{dir}/{METADATA_FILE}");
            if let Err(e) = self.storage.delete_confirmed(&metadata).await {
                // Still a checkpoint: it stays known, its files registered.
                outcome.warnings.push(format!(
                    "checkpoint {id} could not be subsumed (retried at the next completion): {e}"
                ));
                break;
            }
            self.known.remove(id);
            let dropped = self.known.rebuild_registry(&self.lineage);
            // Chosen for deletion from now on, whatever happens next.
            self.known.registry_mut().doom(dropped);
            outcome.subsumed.push(id);
            // Checked again with the metadata gone: a coordinator that opened before read this
            // checkpoint as retained and may reuse its files.
            match self.may_delete(&mut outcome.warnings).await {
                MayDelete::Yes => {}
                MayDelete::Fenced(newer) => {
                    outcome.fenced = Some(newer);
                    return;
                }
                MayDelete::Postponed => return,
            }
            if let Err(e) = self.storage.delete_dir(&dir).await {
                outcome.warnings.push(format!(
                    "private files of subsumed checkpoint {id} left for the orphan sweep: {e}"
                ));
            }
        }
    }

    fn registry_stats(&self, deleted_files: usize) -> RegistryStats {
        let registry = self.known.registry();
        RegistryStats {
            files: registry.len(),
            bytes: registry.total_bytes(),
            deleted_files,
        }
    }

    /// Deletes the doomed shared files (`SharedFileRegistry::delete_doomed`); returns how many.
    async fn delete_doomed(&mut self, warnings: &mut Vec<String>) -> usize {
        let blocked_by = &self.unreadable;
        self.known
            .registry_mut()
            .delete_doomed(&self.storage, blocked_by, warnings)
            .await
    }

    /// Runs `restore` on the newest restorable checkpoint by `(generation, id)` (retained or pinned, never
    /// abandoned); if it fails because a file is corrupt or missing, falls back to the next older one, and
    /// so on. Skipped checkpoints are logged and reported. Restore a pinned checkpoint in NO_CLAIM mode
    /// ([`CompletedCheckpointStore::restore_mode`]).
    ///
    /// # Errors
    /// The first error that is not about a corrupt or missing file (an incompatible schema, say);
    /// [`Error::NotFound`] if no checkpoint could be restored (the message lists why each failed).
    pub async fn restore_latest<T, F, Fut>(&self, mut restore: F) -> Result<RestoreOutcome<T>>
    where
        F: FnMut(CheckpointMetadata) -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        let mut skipped: Vec<SkippedCheckpoint> = self.unreadable.iter().rev().cloned().collect();
        for checkpoint in self.known.restorable(&self.lineage) {
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

    /// Ends the job's life in its storage (`CancellationPolicy::DeleteOnCancellation`): every checkpoint
    /// but the pinned ones is deleted, metadata first, then the shared files nothing kept references.
    /// The caller has written the lineage record of the cancellation (which abandons them all) and checked
    /// the fence.
    ///
    /// # Errors
    /// Storage errors while deleting (what is left is abandoned: never restored, deleted by a later
    /// cancellation or collected by the orphan sweep).
    pub(crate) async fn delete_all(&mut self) -> Result<()> {
        let ids: Vec<u64> = self
            .known
            .all()
            .map(|c| c.checkpoint_id)
            .filter(|id| !self.known.is_pinned(*id))
            .collect();
        for id in ids {
            discard(&self.storage, id).await?;
            self.known.remove(id);
            let dropped = self.known.rebuild_registry(&self.lineage);
            self.known.registry_mut().doom(dropped);
        }
        let mut warnings = Vec::new();
        self.delete_doomed(&mut warnings).await;
        match warnings.into_iter().next() {
            Some(first) => Err(Error::IllegalState(first)),
            None => Ok(()),
        }
    }

    /// Deletes every lineage record but `keep` (a cancellation's, which abandons everything older).
    pub(crate) async fn retire_lineage_but(&mut self, keep: LineRecord) {
        self.lineage.retire_all_but(&self.storage, keep).await;
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
