//! The orphan sweep: deletes what crashed, failed, aborted or losing attempts left in storage
//! (`docs/protocol.md`, "The orphan sweep").

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::time::Duration;

use crate::checkpoint::coordinator::CheckpointCoordinator;
use crate::checkpoint::pending::Outcome;
use crate::checkpoint::store::read_metadata;
use crate::error::{ErrorKind, Result};
use crate::storage::{
    ListedFile, METADATA_FILE, PINNED_MARKER, SHARED_DIR, STATS_FILE, TRIGGER_MARKER,
};

/// What an orphan sweep found and did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SweepReport {
    /// Files listed under `shared/` and `chk-*/`.
    pub listed: usize,
    /// Of those, referenced by a checkpoint, or part of one (its metadata and markers): kept.
    pub referenced: usize,
    /// Unreferenced, but younger than `min_age`, or possibly an upload of a checkpoint still pending, or
    /// the id watermark: kept.
    pub too_young: usize,
    /// Deleted (paths relative to the job root).
    pub deleted: Vec<String>,
    /// Checkpoints whose metadata cannot be read (corrupt, or of a newer release). While there is one the
    /// sweep deletes nothing: such a checkpoint may reference any file.
    pub blocked_by_unreadable: Vec<u64>,
    /// A coordinator of a newer generation exists: this one deletes nothing (`docs/protocol.md`).
    pub fenced: bool,
}

/// Where a listed file lives.
enum Place<'a> {
    Shared,
    Checkpoint { id: u64, name: &'a str },
    Other,
}

fn place(path: &str) -> Place<'_> {
    if path.starts_with(&format!("{SHARED_DIR}/")) {
        return Place::Shared;
    }
    let Some((dir, rest)) = path.split_once('/') else {
        return Place::Other;
    };
    match dir.strip_prefix("chk-").and_then(|n| n.parse().ok()) {
        Some(id) => Place::Checkpoint { id, name: rest },
        None => Place::Other,
    }
}

impl CheckpointCoordinator {
    /// Orphan sweep of `shared/` and the `chk-*` directories. Lists storage, then (after listing, so a
    /// checkpoint that completes meanwhile is seen with its files) reads the metadata of every checkpoint in
    /// storage, and deletes a listed file only if:
    /// - no readable checkpoint in storage references it, it is not the metadata or a marker of one, and
    ///   the registry does not hold it;
    /// - its `last_modified` is at least `min_age` before the clock's now (age from the store, so a
    ///   restarted coordinator's first sweep already collects old leftovers);
    /// - it is not in the directory of a checkpoint pending here, and, for a shared file, it was not first
    ///   seen unreferenced while a checkpoint still pending was pending (it may be that checkpoint's
    ///   upload, however long it runs: SlateDB #1758);
    /// - it is not the reservation marker of the highest checkpoint directory (the id watermark).
    ///
    /// `min_age` protects uploads of checkpoints this coordinator does not know of (another coordinator's,
    /// or one pending before a restart), so it must exceed the longest checkpoint. While any metadata in
    /// storage is unreadable, nothing is deleted ([`SweepReport::blocked_by_unreadable`]). `savepoints/` and
    /// anything else outside `shared/` and `chk-*` is never touched. On a local directory the sweep also
    /// lists the staging files (`<name>#<digits>`) that a process killed mid-write leaves, which
    /// `object_store`'s listing hides; they are never part of a checkpoint and go by the same age rule. Once a coordinator of a newer generation
    /// exists, nothing is deleted ([`SweepReport::fenced`]).
    ///
    /// # Errors
    /// Storage errors while listing, reading or deleting (what was classified before stays for the next
    /// sweep).
    pub async fn sweep_orphans(&mut self, min_age: Duration) -> Result<SweepReport> {
        self.sweep(min_age, true).await
    }

    /// What [`CheckpointCoordinator::sweep_orphans`] would delete now, deleting nothing: the report's
    /// `deleted` lists the files a sweep would delete (`statectl gc --dry-run`).
    ///
    /// # Errors
    /// Storage errors while listing or reading.
    pub async fn plan_orphan_sweep(&mut self, min_age: Duration) -> Result<SweepReport> {
        self.sweep(min_age, false).await
    }

    async fn sweep(&mut self, min_age: Duration, delete: bool) -> Result<SweepReport> {
        if self.fenced || !self.fence.holds().await? {
            self.fenced = true;
            return Ok(SweepReport {
                fenced: true,
                ..SweepReport::default()
            });
        }
        self.fence.retire_older().await;
        let now = self.clock.now();
        let listed: Vec<ListedFile> = self
            .storage
            .list_all()
            .await?
            .into_iter()
            .filter(|f| !matches!(place(&f.path), Place::Other))
            .collect();
        let mut report = SweepReport {
            listed: listed.len(),
            ..SweepReport::default()
        };
        // Checkpoints this coordinator knows whose metadata the listing does not have were deleted by
        // another coordinator: they protect nothing any more. (One completed after the listing is new to
        // this coordinator, never among those.)
        let listed_metadata: BTreeSet<u64> = listed
            .iter()
            .filter_map(|f| match place(&f.path) {
                Place::Checkpoint { id, name } if name == METADATA_FILE => Some(id),
                _ => None,
            })
            .collect();
        self.store
            .forget_missing(|id| listed_metadata.contains(&id));
        // After the listing: what is a checkpoint, and what do checkpoints reference.
        let dirs = self.storage.list_checkpoint_dirs().await?;
        let watermark = dirs.last().copied();
        let mut complete: BTreeSet<u64> = BTreeSet::new();
        let mut unreadable: Vec<u64> = self
            .store
            .unreadable()
            .iter()
            .map(|u| u.checkpoint_id)
            .collect();
        let mut found = Vec::new();
        for &id in &dirs {
            if self.store.get(id).is_some() {
                complete.insert(id);
                continue;
            }
            if self.pending.contains_key(&id) || self.outcomes.get(id) == Some(Outcome::Aborted) {
                continue;
            }
            match read_metadata(&self.storage, id).await {
                Ok(meta) if meta.checkpoint_id == id => {
                    complete.insert(id);
                    found.push(meta);
                }
                Ok(_) => unreadable.push(id),
                Err(e) if e.kind() == ErrorKind::NotFound => {}
                Err(e) if e.kind() == ErrorKind::Corrupt => unreadable.push(id),
                Err(e) => return Err(e),
            }
        }
        for meta in found {
            // A checkpoint another coordinator (or an uncertain completion of ours) wrote: protect it.
            if self.outcomes.get(meta.checkpoint_id) == Some(Outcome::Uncertain) {
                self.outcomes.set(meta.checkpoint_id, Outcome::Completed);
            }
            self.store.add_foreign(meta);
        }
        if !unreadable.is_empty() {
            unreadable.sort_unstable();
            unreadable.dedup();
            tracing::warn!(
                ?unreadable,
                "orphan sweep skipped: unreadable checkpoint metadata"
            );
            report.blocked_by_unreadable = unreadable;
            return Ok(report);
        }
        let referenced: HashSet<&str> = self.store.referenced_paths();
        let pending_now: Vec<u64> = self.pending.keys().copied().collect();
        let mut candidates: HashMap<String, Vec<u64>> = HashMap::new();
        let mut doomed = Vec::new();
        for file in &listed {
            let shared = matches!(place(&file.path), Place::Shared);
            let part_of_checkpoint = match place(&file.path) {
                Place::Checkpoint { id, name } => {
                    let marker =
                        [METADATA_FILE, PINNED_MARKER, TRIGGER_MARKER, STATS_FILE].contains(&name);
                    if marker && complete.contains(&id) {
                        true
                    } else if self.pending.contains_key(&id)
                        || (name == TRIGGER_MARKER && Some(id) == watermark)
                    {
                        // In flight here, or the id watermark.
                        report.too_young += 1;
                        continue;
                    } else {
                        false
                    }
                }
                Place::Shared => false,
                Place::Other => continue,
            };
            if part_of_checkpoint || referenced.contains(file.path.as_str()) {
                report.referenced += 1;
                continue;
            }
            // A file in `chk-<n>/` belongs to checkpoint n (not pending, checked above); a shared file may
            // be an upload of any checkpoint pending when it was first seen.
            let pending_then = match self.orphan_candidates.remove(&file.path) {
                Some(then) => then,
                None if shared => pending_now.clone(),
                None => Vec::new(),
            };
            let uploader_gone = pending_then.iter().all(|id| !self.pending.contains_key(id));
            let old_enough = now
                .duration_since(file.last_modified)
                .is_ok_and(|age| age >= min_age);
            if old_enough && uploader_gone {
                doomed.push(file);
            } else {
                report.too_young += 1;
                candidates.insert(file.path.clone(), pending_then);
            }
        }
        self.orphan_candidates = candidates;
        // Once more right before deleting: the classification took a while.
        if !self.fence.holds().await? {
            self.fenced = true;
            report.fenced = true;
            report.too_young += doomed.len();
            return Ok(report);
        }
        // Metadata-less directories' files go in any order; nothing here is a checkpoint's metadata.
        let mut by_dir: BTreeMap<bool, Vec<&ListedFile>> = BTreeMap::new();
        for file in doomed {
            by_dir
                .entry(file.path.ends_with(TRIGGER_MARKER))
                .or_default()
                .push(file);
        }
        if !delete {
            report.deleted = by_dir
                .into_values()
                .flatten()
                .map(|f| f.path.clone())
                .collect();
            return Ok(report);
        }
        // Markers last: a crash mid-sweep leaves a directory's reservation while its files go.
        for file in by_dir.into_values().flatten() {
            tracing::info!(path = %file.path, staging = file.staging, "orphan sweep: deleting an unreferenced file");
            self.storage.delete_listed(file).await?;
            report.deleted.push(file.path.clone());
        }
        Ok(report)
    }
}
