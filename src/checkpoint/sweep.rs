//! The orphan sweep: deletes what crashed, failed, aborted or losing attempts left in storage
//! (`docs/protocol.md`, "The orphan sweep", invariant P8), and its read-only plan for an operator (`statectl gc
//! --dry-run`), which registers nothing and writes nothing (`docs/faults.md`).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::time::{Duration, SystemTime};

use crate::checkpoint::pending::Outcome;
use crate::checkpoint::pending::Outcomes;
use crate::checkpoint::store::CompletedCheckpointStore;
use crate::error::{ErrorKind, Result};
use crate::snapshot::layout::{
    JobPath, METADATA_FILE, PINNED_MARKER, PROBE_DIR, STATS_FILE, TRIGGER_MARKER,
};
use crate::storage::probe::store_now;
use crate::storage::{CheckpointStorage, ListedFile};

/// What an orphan sweep found and did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SweepReport {
    /// Files listed under `shared/`, `chk-*/` and `_probe/`, and staging files anywhere under the job root.
    pub listed: usize,
    /// Of those, referenced by a checkpoint, or part of one (its metadata and markers): kept.
    pub referenced: usize,
    /// Unreferenced, but younger than `min_age`, or possibly an upload of a checkpoint still pending, or
    /// the id watermark: kept.
    pub too_young: usize,
    /// Deleted (paths relative to the job root); for a plan, what a sweep would delete now.
    pub deleted: Vec<String>,
    /// Checkpoints whose metadata cannot be read (corrupt, or of a newer release). While there is one the
    /// sweep deletes nothing: such a checkpoint may reference any file.
    pub blocked_by_unreadable: Vec<u64>,
    /// A coordinator of a newer generation exists: this one deletes nothing (`docs/protocol.md`).
    pub fenced: bool,
    /// Incomplete multipart uploads aborted (older than `min_age` on the store's clock, or whose earlier
    /// abort had failed).
    pub uploads_aborted: usize,
    /// The clock file ages were measured on: the store's (a real sweep writes `_clock` and reads its
    /// `Last-Modified`) or the local one (a read-only plan may not write).
    pub store_clock: bool,
}

/// Where a listed file lives, for the sweep.
enum Place<'a> {
    Shared,
    Probe,
    Checkpoint { id: u64, name: &'a str },
    Other,
}

/// The sweep's view of [`JobPath`]: checkpoints, shared files and probes are its to collect; savepoints,
/// generation markers, lineage records, the clock probe and unknown files are not.
fn place(path: &str) -> Place<'_> {
    match JobPath::parse(path) {
        JobPath::Shared(_) => Place::Shared,
        JobPath::Protocol(p)
            if p.starts_with(PROBE_DIR) && p[PROBE_DIR.len()..].starts_with('/') =>
        {
            Place::Probe
        }
        JobPath::Checkpoint { id, name } => Place::Checkpoint { id, name },
        JobPath::Protocol(_) | JobPath::Savepoint { .. } | JobPath::Other => Place::Other,
    }
}

/// Whether the sweep looks at a listed file: checkpoints, shared files and probes, and staging files
/// anywhere (never anything's content: what a killed writer left, of a protocol file or a savepoint too).
fn is_swept(file: &ListedFile) -> bool {
    file.staging || !matches!(place(&file.path), Place::Other)
}

/// What the classification needs besides the listing.
struct Inputs<'a> {
    /// Paths any known or readable checkpoint references, and registered shared files.
    referenced: &'a HashSet<&'a str>,
    /// Checkpoints with readable metadata.
    complete: &'a BTreeSet<u64>,
    /// The highest `chk-<n>` directory: its `_trigger` is the id watermark.
    watermark: Option<u64>,
    /// Checkpoints pending at the classifying coordinator (none for a plan).
    pending: &'a BTreeSet<u64>,
    /// Unreferenced shared files seen by an earlier sweep, with the checkpoints pending then.
    candidates: &'a mut HashMap<String, Vec<u64>>,
    now: SystemTime,
    min_age: Duration,
}

/// Classifies `listed`: returns the files to delete, fills the report's counts and keeps the new
/// candidates in `inputs.candidates`.
fn classify<'f>(
    listed: &'f [ListedFile],
    inputs: Inputs<'_>,
    report: &mut SweepReport,
) -> Vec<&'f ListedFile> {
    let mut next_candidates: HashMap<String, Vec<u64>> = HashMap::new();
    let mut doomed = Vec::new();
    let pending_now: Vec<u64> = inputs.pending.iter().copied().collect();
    for file in listed {
        let shared = matches!(place(&file.path), Place::Shared);
        let part_of_checkpoint = match place(&file.path) {
            Place::Checkpoint { id, name } => {
                let marker =
                    [METADATA_FILE, PINNED_MARKER, TRIGGER_MARKER, STATS_FILE].contains(&name);
                if marker && inputs.complete.contains(&id) {
                    true
                } else if inputs.pending.contains(&id)
                    || (name == TRIGGER_MARKER && Some(id) == inputs.watermark)
                {
                    // In flight here, or the id watermark.
                    report.too_young += 1;
                    continue;
                } else {
                    false
                }
            }
            Place::Shared | Place::Probe => false,
            // Listed here only as a staging file (`is_swept`): it goes by the age rule.
            Place::Other => false,
        };
        if part_of_checkpoint || inputs.referenced.contains(file.path.as_str()) {
            report.referenced += 1;
            continue;
        }
        // A file in `chk-<n>/` belongs to checkpoint n (not pending, checked above); a shared file may
        // be an upload of any checkpoint pending when it was first seen.
        let pending_then = match inputs.candidates.remove(&file.path) {
            Some(then) => then,
            None if shared => pending_now.clone(),
            None => Vec::new(),
        };
        let uploader_gone = pending_then.iter().all(|id| !inputs.pending.contains(id));
        let old_enough = inputs
            .now
            .duration_since(file.last_modified)
            .is_ok_and(|age| age >= inputs.min_age);
        if old_enough && uploader_gone {
            doomed.push(file);
        } else {
            report.too_young += 1;
            next_candidates.insert(file.path.clone(), pending_then);
        }
    }
    *inputs.candidates = next_candidates;
    // Markers last: a crash mid-sweep leaves a directory's reservation while its files go.
    doomed.sort_by_key(|f| f.path.ends_with(TRIGGER_MARKER));
    doomed
}

/// Metadata of the checkpoint directories `dirs` not in `skip`: readable ones, and ids of unreadable ones.
async fn read_all(
    storage: &CheckpointStorage,
    dirs: &[u64],
    skip: impl Fn(u64) -> bool,
) -> Result<(Vec<crate::CheckpointMetadata>, Vec<u64>)> {
    let (mut found, mut unreadable) = (Vec::new(), Vec::new());
    for &id in dirs.iter().filter(|id| !skip(**id)) {
        match storage.read_checkpoint_metadata(id).await {
            Ok(meta) if meta.checkpoint_id == id => found.push(meta),
            Ok(_) => unreadable.push(id),
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(e) if e.kind() == ErrorKind::Corrupt => unreadable.push(id),
            Err(e) => return Err(e),
        }
    }
    Ok((found, unreadable))
}

/// What an orphan sweep of the job's `storage` would delete now, read-only: nothing is registered,
/// written or deleted, so it is safe against a live job (`statectl gc --dry-run`). Files of
/// checkpoints in flight are not known to it (no coordinator's pending list), so a file counts only
/// by its age; ages are measured on `now` (the local clock: a plan may not write the clock probe).
///
/// # Errors
/// Storage errors while listing or reading.
pub async fn plan_orphan_sweep(
    storage: &CheckpointStorage,
    min_age: Duration,
    now: SystemTime,
) -> Result<SweepReport> {
    let listed: Vec<ListedFile> = storage
        .list_all()
        .await?
        .into_iter()
        .filter(is_swept)
        .collect();
    let dirs = storage.list_checkpoint_dirs().await?;
    let (found, unreadable) = read_all(storage, &dirs, |_| false).await?;
    let mut report = SweepReport {
        listed: listed.len(),
        ..SweepReport::default()
    };
    if !unreadable.is_empty() {
        report.blocked_by_unreadable = unreadable;
        return Ok(report);
    }
    let referenced: HashSet<&str> = found
        .iter()
        .flat_map(|m| m.files())
        .map(|f| f.path.as_str())
        .collect();
    let complete: BTreeSet<u64> = found.iter().map(|m| m.checkpoint_id).collect();
    let doomed = classify(
        &listed,
        Inputs {
            referenced: &referenced,
            complete: &complete,
            watermark: dirs.last().copied(),
            pending: &BTreeSet::new(),
            candidates: &mut HashMap::new(),
            now,
            min_age,
        },
        &mut report,
    );
    report.deleted = doomed.into_iter().map(|f| f.path.clone()).collect();
    Ok(report)
}

/// The orphan sweep's memory between sweeps, as a component that owns it: unreferenced files first seen
/// while checkpoints were pending, with those checkpoints (one of them may be uploading the file, SlateDB
/// #1758).
#[derive(Default)]
pub(crate) struct OrphanSweep {
    candidates: HashMap<String, Vec<u64>>,
}

/// What a sweep's classification decided: the report so far, and the files to delete (`None` when an
/// unreadable checkpoint blocks every deletion).
pub(crate) struct SweepPlan {
    pub(crate) report: SweepReport,
    pub(crate) doomed: Option<Vec<ListedFile>>,
}

impl OrphanSweep {
    /// Lists `storage`, reads every checkpoint directory `store` does not know (adopting what it finds,
    /// and settling `outcomes` of uncertain writes and lost races), and classifies the listed files
    /// (`CheckpointCoordinator::sweep_orphans` says by which rules); deletes nothing.
    ///
    /// # Errors
    /// Storage errors while measuring the clock, listing or reading.
    pub(crate) async fn plan(
        &mut self,
        storage: &CheckpointStorage,
        store: &mut CompletedCheckpointStore,
        pending: &BTreeSet<u64>,
        outcomes: &mut Outcomes,
        min_age: Duration,
    ) -> Result<SweepPlan> {
        let mut report = SweepReport {
            uploads_aborted: storage.aborts().retry().await,
            store_clock: true,
            ..SweepReport::default()
        };
        let now = store_now(storage).await?;
        report.uploads_aborted += storage.abort_stale_uploads(min_age, now).await?;
        let listed: Vec<ListedFile> = storage
            .list_all()
            .await?
            .into_iter()
            .filter(is_swept)
            .collect();
        report.listed = listed.len();
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
        store.forget_missing(|id| listed_metadata.contains(&id));
        // After the listing: what is a checkpoint, and what do checkpoints reference. Every directory
        // neither known, pending nor aborted here is read (a lost race's or an uncertain write's too).
        let dirs = storage.list_checkpoint_dirs().await?;
        let (found, mut unreadable) = {
            let (known, outcomes) = (&*store, &*outcomes);
            read_all(storage, &dirs, |id| {
                known.get(id).is_some()
                    || pending.contains(&id)
                    || outcomes.get(id) == Some(Outcome::Aborted)
            })
            .await?
        };
        unreadable.extend(store.unreadable().iter().map(|u| u.checkpoint_id));
        let mut complete: BTreeSet<u64> = dirs
            .iter()
            .copied()
            .filter(|id| store.get(*id).is_some())
            .collect();
        for meta in found {
            // Another coordinator's checkpoint, or a landed write of ours: adopt and protect it.
            complete.insert(meta.checkpoint_id);
            if matches!(
                outcomes.get(meta.checkpoint_id),
                Some(Outcome::Uncertain | Outcome::LostRace)
            ) {
                let landed = outcomes.get(meta.checkpoint_id) == Some(Outcome::Uncertain);
                outcomes.set(
                    meta.checkpoint_id,
                    if landed {
                        Outcome::Completed
                    } else {
                        Outcome::Aborted
                    },
                );
            }
            store.adopt(meta);
        }
        if !unreadable.is_empty() {
            unreadable.sort_unstable();
            unreadable.dedup();
            tracing::warn!(
                ?unreadable,
                "orphan sweep skipped: unreadable checkpoint metadata"
            );
            report.blocked_by_unreadable = unreadable;
            return Ok(SweepPlan {
                report,
                doomed: None,
            });
        }
        let referenced: HashSet<&str> = store.referenced_paths();
        let doomed = classify(
            &listed,
            Inputs {
                referenced: &referenced,
                complete: &complete,
                watermark: dirs.last().copied(),
                pending,
                candidates: &mut self.candidates,
                now,
                min_age,
            },
            &mut report,
        );
        let doomed: Vec<ListedFile> = doomed.into_iter().cloned().collect();
        Ok(SweepPlan {
            report,
            doomed: Some(doomed),
        })
    }
}

/// Deletes the files a [`SweepPlan`] doomed, reservation markers last (a directory's marker is the id
/// watermark while anything of it is left), each named in `report.deleted`.
///
/// # Errors
/// Storage errors while deleting (what is left stays for the next sweep).
pub(crate) async fn delete_doomed(
    storage: &CheckpointStorage,
    doomed: &[ListedFile],
    report: &mut SweepReport,
) -> Result<()> {
    let by_dir: BTreeMap<bool, Vec<&ListedFile>> =
        doomed.iter().fold(BTreeMap::new(), |mut m, f| {
            m.entry(f.path.ends_with(TRIGGER_MARKER))
                .or_insert_with(Vec::new)
                .push(f);
            m
        });
    for file in by_dir.into_values().flatten() {
        tracing::info!(path = %file.path, staging = file.staging, "orphan sweep: deleting an unreferenced file");
        storage.delete_listed(file).await?;
        report.deleted.push(file.path.clone());
    }
    Ok(())
}
