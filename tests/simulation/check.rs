//! The invariants of `docs/protocol.md`, checked against what storage really holds (the store without
//! faults):
//! - every checkpoint in storage (retained, pinned or abandoned) is readable, has every file it
//!   references with the recorded size and CRC32, and restores exactly to the model at its barrier
//!   (checked once per checkpoint: files are immutable and their bytes are checked every step; P3, P7);
//! - the latest checkpoint a coordinator reported complete, or a newer one, exists; a pinned one exists
//!   for ever; checkpoint ids never repeat (checked at each trigger; P1, P3, P7);
//! - a completed savepoint is never deleted (its metadata and files stay, and it restores to its model);
//!   what other jobs wrote into the savepoint target stays byte for byte (P9);
//! - no coordinator is fenced unless a newer generation exists; the latest restorable checkpoint is of
//!   the newest generation among them (never an older generation's once a newer one completed; P5, P6);
//! - after quiet time, a checkpoint still completes (no endless decline) and a sweep leaves no
//!   unreferenced file (P8).

use std::collections::BTreeSet;
use std::time::Duration;

use object_store::ObjectStoreExt;
use statebackend::checkpoint::CompletedCheckpointStore;
use statebackend::snapshot::StateFile;
use statebackend::snapshot::layout::*;
use statebackend::*;

use crate::job::{expected, restored_model};
use crate::sim::{MIN_AGE, Part, Sim, Step, violation};

/// The readable checkpoints in storage (retained, pinned, abandoned). Unreadable metadata must be one a
/// "newer release" wrote, and every file it referenced must still be there. Also checks the order of
/// generations.
async fn in_storage(sim: &Sim) -> Step<Vec<CheckpointMetadata>> {
    let store = match CompletedCheckpointStore::open(sim.truth.clone(), 1).await {
        Ok(s) => s,
        Err(e) => violation!("storage cannot be opened: {e}"),
    };
    for u in store.unreadable() {
        if !sim.newer.contains_key(&u.checkpoint_id) {
            violation!("unreadable metadata in storage: {u:?}");
        }
    }
    for (id, files) in &sim.newer {
        if !store.unreadable().iter().any(|u| u.checkpoint_id == *id) {
            violation!("the newer release's checkpoint {id} was deleted by this build");
        }
        for f in files {
            intact(&sim.truth, *id, f).await?;
        }
    }
    let restorable: Vec<&CheckpointMetadata> = store.checkpoints().chain(store.pinned()).collect();
    if let Some(latest) = store.latest()
        && let Some(newer) = restorable.iter().find(|c| c.generation > latest.generation)
    {
        violation!(
            "latest() is checkpoint {} of generation {}, though checkpoint {} of generation {} is \
             restorable",
            latest.checkpoint_id,
            latest.generation,
            newer.checkpoint_id,
            newer.generation
        );
    }
    Ok(store
        .checkpoints()
        .chain(store.pinned())
        .chain(store.abandoned())
        .cloned()
        .collect())
}

/// `f` of checkpoint `id` exists in `storage` with the recorded size and CRC32.
async fn intact(storage: &CheckpointStorage, id: u64, f: &StateFile) -> Step {
    let bytes = match storage.object_store().get(&storage.path(&f.path)).await {
        Ok(r) => r.bytes().await.expect("bytes"),
        Err(e) => violation!("snapshot {id} references {}, which is gone: {e}", f.path),
    };
    if bytes.len() as u64 != f.size_bytes || crc32fast::hash(&bytes) != f.crc32 {
        violation!("snapshot {id}: {} differs from its handle", f.path);
    }
    Ok(())
}

/// The invariants after every step.
pub async fn check(sim: &mut Sim) -> Step {
    let all = in_storage(sim).await?;
    let ids: BTreeSet<u64> = all
        .iter()
        .map(|m| m.checkpoint_id)
        .chain(sim.newer.keys().copied())
        .collect();
    if let Some((c, _)) = sim.completed
        && ids.range(c..).next().is_none()
    {
        violation!("checkpoint {c} completed, and neither it nor a newer one exists: {ids:?}");
    }
    for p in &sim.pinned {
        if !ids.contains(p) {
            violation!("pinned checkpoint {p} is gone");
        }
    }
    for meta in &all {
        let id = meta.checkpoint_id;
        for f in meta.files() {
            intact(&sim.truth, id, f).await?;
        }
        verify(sim, &sim.truth.clone(), meta).await?;
    }
    savepoints_stay(sim).await?;
    fences_are_real(sim).await
}

/// Restores `meta` (once) and compares it with the model at its barrier.
async fn verify(sim: &mut Sim, storage: &CheckpointStorage, meta: &CheckpointMetadata) -> Step {
    let id = meta.checkpoint_id;
    if sim.verified.contains(&id) {
        return Ok(());
    }
    let Some(model) = sim.models.get(&id) else {
        violation!("snapshot {id} in storage was never triggered");
    };
    let at = sim.barrier_ms.get(&id).copied().unwrap_or_default();
    let (values, live) = expected(model, at);
    match restored_model(storage, meta, sim.dir.path(), at).await {
        Ok(restored) if restored.0 == values && restored.1 == live => {
            sim.verified.insert(id);
            Ok(())
        }
        Ok((restored, restored_live)) => {
            let diff: Vec<_> = values
                .iter()
                .filter(|(k, v)| restored.get(k) != Some(v))
                .take(5)
                .collect();
            let diff_live: Vec<_> = (live.iter())
                .filter(|(k, v)| restored_live.get(k) != Some(v))
                .chain(restored_live.iter().filter(|(k, _)| !live.contains_key(k)))
                .take(5)
                .collect();
            violation!(
                "snapshot {id} restores {} entries and {} live TTL entries at event time {at}, the \
                 model has {} and {}; first differences {diff:?}, TTL state {diff_live:?}",
                restored.len(),
                restored_live.len(),
                values.len(),
                live.len()
            );
        }
        Err(e) => violation!("snapshot {id} does not restore: {e}"),
    }
}

/// Completed savepoints are never deleted (by this job: the user alone deletes them) and restore to
/// their model; other writers' objects in the target stay byte for byte.
async fn savepoints_stay(sim: &mut Sim) -> Step {
    let target = sim.target_truth.clone();
    let ids: Vec<u64> = sim.savepoints.keys().copied().collect();
    for id in ids {
        let meta = match target.read_savepoint_metadata(id).await {
            Ok(m) => m,
            Err(e) => violation!("completed savepoint {id} is gone: {e}"),
        };
        if meta != sim.savepoints[&id].meta {
            violation!("completed savepoint {id}'s metadata changed");
        }
        for f in meta.files() {
            intact(&target, id, f).await?;
        }
        verify(sim, &target, &meta).await?;
    }
    for (path, bytes) in &sim.foreign {
        let path = object_store::path::Path::from(path.as_str());
        match target.object_store().get(&path).await {
            Ok(r) => {
                if r.bytes().await.expect("bytes").as_ref() != bytes.as_slice() {
                    violation!("{path}, another writer's, was overwritten");
                }
            }
            Err(e) => violation!("{path}, another writer's, was deleted: {e}"),
        }
    }
    Ok(())
}

/// A coordinator is fenced only if a newer generation exists.
async fn fences_are_real(sim: &Sim) -> Step {
    let newest = match statebackend::checkpoint::NewestGeneration::read(&sim.truth).await {
        Ok(n) => n.map_or(0, |n| n.generation),
        Err(e) => violation!("generations cannot be listed without faults: {e}"),
    };
    for (n, c) in sim.coordinators.iter().enumerate() {
        if let Some(c) = c
            && c.is_fenced()
            && newest <= c.generation()
        {
            violation!(
                "coordinator #{n} (generation {}) is fenced, but no newer generation exists",
                c.generation()
            );
        }
    }
    Ok(())
}

/// Quiet time: no faults, no crashes, zombies stopped, every notification delivered, late writes landed.
/// A checkpoint must then complete, and a sweep must leave only what checkpoints reference.
pub async fn quiet(sim: &mut Sim) -> Step {
    sim.quiet = true;
    sim.store.set_faults(None);
    sim.store.land_delayed().await;
    sim.crash_rate = 0.0;
    sim.fence();
    let ids: Vec<u64> = sim.inflight.keys().copied().collect();
    for id in ids {
        sim.abort(id).await?;
    }
    deliver_all(sim);
    let mut completed = false;
    for _ in 0..8 {
        let before = sim.completed;
        let leader = sim.leader();
        sim.trigger(leader, false).await?;
        while sim
            .inflight
            .values()
            .any(|f| f.parts.iter().any(|p| matches!(p, Part::Pending(_))))
        {
            sim.run_async().await?;
        }
        while sim
            .inflight
            .values()
            .any(|f| f.parts.iter().any(|p| matches!(p, Part::Done(_))))
        {
            sim.acknowledge().await?;
        }
        let ids: Vec<u64> = sim.inflight.keys().copied().collect();
        for id in ids {
            sim.abort(id).await?;
        }
        deliver_all(sim);
        if sim.completed != before {
            completed = true;
            break;
        }
    }
    if !completed {
        violation!("no checkpoint completes in quiet time (declined for ever?)");
    }
    sim.clock.advance(MIN_AGE + Duration::from_secs(1));
    let leader = sim.leader();
    let coord = sim.coordinators[leader].as_mut().expect("leader");
    let report = match coord.sweep_orphans(MIN_AGE).await {
        Ok(r) => r,
        Err(e) => violation!("the quiet sweep failed: {e}"),
    };
    sim.say(format!("quiet sweep: {report:?}"));
    if sim.newer.is_empty() {
        leftovers(sim).await?;
    } else if !report.deleted.is_empty() {
        violation!("the quiet sweep deleted files while metadata is unreadable: {report:?}");
    }
    retention(sim).await?;
    check(sim).await
}

/// After quiet time's completion: what the job keeps is at most the retained count of its own line,
/// pinned checkpoints and a newer release's; checkpoints it adopted or abandoned were subsumed.
async fn retention(sim: &Sim) -> Step {
    let store = match CompletedCheckpointStore::open(sim.truth.clone(), 1).await {
        Ok(s) => s,
        Err(e) => violation!("storage cannot be opened: {e}"),
    };
    let retained: Vec<u64> = store.checkpoints().map(|c| c.checkpoint_id).collect();
    let abandoned: Vec<u64> = store
        .abandoned()
        .iter()
        .filter(|c| !sim.pinned.contains(&c.checkpoint_id))
        .map(|c| c.checkpoint_id)
        .collect();
    if retained.len() > sim.retained || !abandoned.is_empty() {
        violation!(
            "after quiet time storage keeps checkpoints {retained:?} (retained {}) and abandoned \
             {abandoned:?}",
            sim.retained
        );
    }
    Ok(())
}

fn deliver_all(sim: &mut Sim) {
    for note in std::mem::take(&mut sim.notes) {
        sim.deliver(note);
    }
}

/// After quiet time and a sweep: every file is referenced by a checkpoint, is its metadata or marker, or
/// is the id watermark, a generation marker of the leader, a lineage record or the clock probe.
async fn leftovers(sim: &Sim) -> Step {
    use futures::TryStreamExt;
    let all = in_storage(sim).await?;
    let referenced: BTreeSet<&str> = all
        .iter()
        .flat_map(|m| m.files())
        .map(|f| f.path.as_str())
        .collect();
    let complete: BTreeSet<u64> = all.iter().map(|m| m.checkpoint_id).collect();
    let root = sim.truth.path("");
    let prefix = format!("{}/", root.as_ref().trim_end_matches('/'));
    let files: Vec<String> = sim
        .truth
        .object_store()
        .list(Some(&root))
        .map_ok(|m| m.location.to_string())
        .try_collect()
        .await
        .expect("list");
    let dir_of =
        |p: &str| -> Option<u64> { p.strip_prefix("chk-")?.split('/').next()?.parse().ok() };
    let newest_generation = files
        .iter()
        .filter_map(|f| f.strip_prefix(&prefix))
        .filter(|f| f.starts_with(&format!("{COORDINATORS_DIR}/")) && !f.ends_with(".closed"))
        .max()
        .unwrap_or("")
        .to_string();
    let watermark = files
        .iter()
        .filter_map(|f| dir_of(f.strip_prefix(&prefix)?))
        .max();
    for f in &files {
        let Some(rel) = f.strip_prefix(&prefix) else {
            violation!("{f} is outside the job's directory");
        };
        if referenced.contains(rel) {
            continue;
        }
        let name = rel.rsplit('/').next().unwrap_or("");
        let dir = dir_of(rel);
        let marker = [METADATA_FILE, PINNED_MARKER, TRIGGER_MARKER, STATS_FILE].contains(&name);
        if marker && dir.is_some_and(|d| complete.contains(&d)) {
            continue;
        }
        if name == TRIGGER_MARKER && dir == watermark {
            continue;
        }
        // The leader's generation marker (and its `.closed` if an operator's sweep closed one); older
        // ones are retired.
        if rel.starts_with(&format!("{COORDINATORS_DIR}/")) && rel.starts_with(&newest_generation) {
            continue;
        }
        // The job's lineage records and the sweep's clock probe stay by design.
        if rel.starts_with(&format!("{LINEAGE_DIR}/")) || rel == CLOCK_FILE {
            continue;
        }
        violation!("{rel} is left after quiet time and a sweep");
    }
    Ok(())
}
