//! The invariants, checked against what storage really holds (the store without faults):
//! - every checkpoint in storage (retained or pinned) is readable, has every file it references with the
//!   recorded size and CRC32, and restores exactly to the model at its barrier (checked once per
//!   checkpoint: files are immutable and their bytes are checked every step);
//! - the latest checkpoint a coordinator reported complete, or a newer one, exists; a pinned one exists
//!   for ever; checkpoint ids never repeat (checked at each trigger);
//! - after quiet time, a checkpoint still completes (no endless decline) and a sweep leaves no
//!   unreferenced file.

use std::collections::BTreeSet;
use std::time::Duration;

use object_store::ObjectStoreExt;
use statebackend::*;

use crate::job::restored_model;
use crate::sim::{MIN_AGE, Note, Part, Sim, Step, violation};

/// The readable checkpoints in storage (retained and pinned). Unreadable metadata must be one a "newer
/// release" wrote, and every file it referenced must still be there.
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
            intact(sim, *id, f).await?;
        }
    }
    Ok(store.checkpoints().chain(store.pinned()).cloned().collect())
}

/// `f` of checkpoint `id` exists with the recorded size and CRC32.
async fn intact(sim: &Sim, id: u64, f: &StateFile) -> Step {
    let bytes = match sim.truth.object_store().get(&sim.truth.path(&f.path)).await {
        Ok(r) => r.bytes().await.expect("bytes"),
        Err(e) => violation!("checkpoint {id} references {}, which is gone: {e}", f.path),
    };
    if bytes.len() as u64 != f.size_bytes || crc32fast::hash(&bytes) != f.crc32 {
        violation!("checkpoint {id}: {} differs from its handle", f.path);
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
    if let Some(c) = sim.completed
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
            intact(sim, id, f).await?;
        }
        if sim.verified.contains(&id) {
            continue;
        }
        let Some(model) = sim.models.get(&id) else {
            violation!("checkpoint {id} in storage was never triggered");
        };
        match restored_model(&sim.truth, meta, sim.dir.path()).await {
            Ok(restored) if &restored == model => {
                sim.verified.insert(id);
            }
            Ok(restored) => {
                let diff: Vec<_> = model
                    .iter()
                    .filter(|(k, v)| restored.get(k) != Some(v))
                    .take(5)
                    .collect();
                violation!(
                    "checkpoint {id} restores {} entries, the model has {}; first differences {diff:?}",
                    restored.len(),
                    model.len()
                );
            }
            Err(e) => violation!("checkpoint {id} does not restore: {e}"),
        }
    }
    Ok(())
}

/// Quiet time: no faults, no crashes, the old leader fenced, every notification delivered. A checkpoint
/// must then complete, and a sweep must leave only what checkpoints reference.
pub async fn quiet(sim: &mut Sim) -> Step {
    sim.store.set_faults(None);
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
        sim.trigger(leader).await?;
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
    sim.log.push(format!("quiet sweep: {report:?}"));
    if sim.newer.is_empty() {
        leftovers(sim).await?;
    } else if !report.deleted.is_empty() {
        violation!("the quiet sweep deleted files while metadata is unreadable: {report:?}");
    }
    check(sim).await
}

fn deliver_all(sim: &mut Sim) {
    for note in std::mem::take(&mut sim.notes) {
        match note {
            Note::Complete(id, g, t) if g == sim.generation => sim.tasks[t].notify_complete(id),
            Note::Aborted(id, g, t) if g == sim.generation => sim.tasks[t].notify_aborted(id),
            _ => {}
        }
    }
}

/// After quiet time and a sweep: every file is referenced by a checkpoint, is its metadata or marker, or
/// is the id watermark.
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
        .list(None)
        .map_ok(|m| m.location.to_string())
        .try_collect()
        .await
        .expect("list");
    let dir_of =
        |p: &str| -> Option<u64> { p.strip_prefix("chk-")?.split('/').next()?.parse().ok() };
    let newest_generation = files
        .iter()
        .filter_map(|f| f.strip_prefix(&prefix))
        .filter(|f| f.starts_with(&format!("{COORDINATORS_DIR}/")))
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
        // The leader's generation marker; older ones are retired.
        if rel.starts_with(&format!("{COORDINATORS_DIR}/")) && rel == newest_generation {
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
