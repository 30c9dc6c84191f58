//! What people and other jobs do to a running job's storage: `statectl gc` (a read-only plan, or a real
//! sweep, forced or not) against the live coordinator, and other jobs (a re-created job, a
//! `statectl savepoint convert`) writing savepoints into the job's savepoint target.

use rand::Rng;
use statebackend::snapshot::layout::*;
use statebackend::*;

use crate::sim::{MIN_AGE, Sim, Step, violation};

/// Every object below `storage`'s job root with its bytes, in order.
pub async fn contents(storage: &CheckpointStorage) -> Vec<(String, Vec<u8>)> {
    use futures::TryStreamExt;
    use object_store::ObjectStoreExt;
    let root = storage.path("");
    let mut paths: Vec<object_store::path::Path> = storage
        .object_store()
        .list(Some(&root))
        .map_ok(|m| m.location)
        .try_collect()
        .await
        .expect("list");
    paths.sort();
    let mut out = Vec::with_capacity(paths.len());
    for p in paths {
        let bytes = storage
            .object_store()
            .get(&p)
            .await
            .expect("get")
            .bytes()
            .await
            .expect("bytes");
        out.push((p.to_string(), bytes.to_vec()));
    }
    out
}

impl Sim {
    /// An operator runs `statectl gc` on the live job: a dry run must change no byte and fence nobody; a
    /// real run must refuse while the job's newest generation has not shut down, unless forced (the live
    /// leader is then fenced, and the engine fails over).
    pub async fn gc(&mut self) -> Step {
        if self.rng.random_bool(0.5) {
            let before = contents(&self.truth).await;
            let plan = statebackend::checkpoint::plan_orphan_sweep(
                &self.storage,
                MIN_AGE,
                self.clock.now(),
            )
            .await;
            if contents(&self.truth).await != before {
                violation!("statectl gc --dry-run changed storage");
            }
            self.count("gc dry run");
            self.say(format!(
                "gc --dry-run would delete {:?}",
                plan.map(|p| p.deleted)
            ));
            return Ok(());
        }
        let force = self.rng.random_bool(0.3);
        let live = matches!(
            statebackend::checkpoint::NewestGeneration::read(&self.truth).await,
            Ok(Some(newest)) if !newest.closed
        );
        let (storage, clock) = (self.storage.clone(), self.clock.clone());
        let swept = self
            .crashable(statebackend::checkpoint::collect_garbage(
                &storage, MIN_AGE, force, clock,
            ))
            .await;
        match swept {
            Err(point) => self.say(format!("gc crashed at {point}")),
            Ok(Err(e)) if e.kind() == ErrorKind::IllegalState && live && !force => {
                self.count("gc refused a live job");
                self.say(format!("gc refused: {e}"));
            }
            Ok(Err(e)) => self.say(format!("gc failed: {e}")),
            Ok(Ok(report)) => {
                if live && !force {
                    violation!("gc swept a live job without --force: {report:?}");
                }
                self.count(if force { "gc forced" } else { "gc" });
                self.say(format!("gc (force {force}) deleted {:?}", report.deleted));
            }
        }
        Ok(())
    }

    /// Another job writes a savepoint into the job's savepoint target near the ids in use: an older
    /// release's (no reservation, only after checking that no `_metadata` is there) or a conversion's
    /// (reserved first). Neither may ever be deleted by this job.
    pub async fn other_job(&mut self) -> Step {
        use object_store::ObjectStoreExt;
        let base = self.ids_handed_out.iter().max().copied().unwrap_or(0);
        let id = base.saturating_sub(1).max(1) + self.rng.random_range(0..4);
        let dir = savepoint_dir(id);
        let target = self.target_truth.clone();
        let mut written = Vec::new();
        if self.rng.random_bool(0.5) {
            let metadata = format!("{dir}/{METADATA_FILE}");
            if target
                .object_store()
                .head(&target.path(&metadata))
                .await
                .is_ok()
            {
                return Ok(());
            }
            written.push((
                format!("{dir}/other-0-0000000000000001.keyed"),
                b"another job".to_vec(),
            ));
            written.push((metadata, b"another job's savepoint metadata".to_vec()));
            self.count("other job's savepoint in the target");
        } else {
            let owner = format!(
                "savepoint {id} reserved by conversion {}\n",
                self.foreign.len()
            );
            match statebackend::checkpoint::reserve_savepoint_id(&target, id, &owner).await {
                Ok(true) => {}
                _ => return Ok(()),
            }
            written.push((format!("{dir}/{TRIGGER_MARKER}"), owner.into_bytes()));
            written.push((
                format!("{dir}/op-0-0000000000000002.keyed"),
                b"converted".to_vec(),
            ));
            written.push((
                format!("{dir}/{METADATA_FILE}"),
                b"a converted savepoint's metadata".to_vec(),
            ));
            self.count("converted savepoint in the target");
        }
        for (path, bytes) in written {
            let full = target.path(&path);
            if !path.ends_with(TRIGGER_MARKER) {
                target
                    .object_store()
                    .put(&full, bytes.clone().into())
                    .await
                    .expect("put");
            }
            self.foreign.insert(full.to_string(), bytes);
        }
        self.say(format!("another writer's savepoint {id} in the target"));
        Ok(())
    }
}
