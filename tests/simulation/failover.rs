//! The simulated engine's disruptions: coordinator crashes and restarts, an old leader beside a new one
//! (split brain) and its fencing, and job failovers that restore the latest checkpoint (CLAIM or
//! NO_CLAIM), possibly at another parallelism.

use rand::Rng;
use statebackend::*;

use crate::job::{OPS, Task};
use crate::sim::{Part, Sim, Step, violation};

impl Sim {
    /// The coordinator `n` crashed: a zombie just dies, a leader is reopened from storage.
    pub async fn lose_coordinator(&mut self, n: usize) -> Step {
        self.coordinators[n] = None;
        if n == self.leader() {
            self.open_leader().await;
        }
        Ok(())
    }

    /// The leader restarts; tasks keep running (their acknowledgements of its checkpoints now arrive late).
    pub async fn restart_coordinator(&mut self) -> Step {
        let n = self.leader();
        self.coordinators[n] = None;
        self.open_leader().await;
        Ok(())
    }

    /// An old leader keeps running beside a new one (a failover); it is fenced later.
    pub async fn split_brain(&mut self) -> Step {
        if self.coordinators.iter().flatten().count() > 1 {
            return Ok(());
        }
        self.open_leader().await;
        // Both trigger at once: the race for an id.
        let n = self.leader();
        let (mut old, mut new) = (
            self.coordinators[n - 1].take().expect("old leader"),
            self.coordinators[n].take().expect("new leader"),
        );
        let (a, b) = tokio::join!(old.trigger(), new.trigger());
        self.coordinators[n - 1] = Some(old);
        self.coordinators[n] = Some(new);
        self.say(format!("split brain: triggers {a:?} and {b:?}"));
        self.count("split brain");
        let mut ids: Vec<(usize, u64)> = [(n - 1, a), (n, b)]
            .into_iter()
            .filter_map(|(c, r)| r.ok().map(|id| (c, id)))
            .collect();
        ids.sort_by_key(|(_, id)| *id);
        for (c, id) in ids {
            self.barrier(c, id)?;
        }
        Ok(())
    }

    /// The old leader is fenced (stopped).
    pub fn fence(&mut self) {
        let leader = self.leader();
        for (n, c) in self.coordinators.iter_mut().enumerate() {
            if n != leader && c.take().is_some() {
                self.log.push(format!("coordinator #{n} fenced"));
            }
        }
    }

    /// Job failover: tasks and coordinator restart, restore the latest checkpoint (CLAIM or NO_CLAIM),
    /// possibly at another parallelism.
    pub async fn failover(&mut self) -> Step {
        for (id, flight) in std::mem::take(&mut self.inflight) {
            for (i, part) in flight.parts.into_iter().enumerate() {
                if let (Part::Done(result), Some(task)) = (part, self.tasks.get(i)) {
                    self.late.push((id, task.ack(&result)));
                }
            }
        }
        self.notes.clear();
        for c in &mut self.coordinators {
            *c = None;
        }
        self.count("failover");
        if self.rng.random_bool(0.3) {
            self.parallelism = [self.rng.random_range(1..=3), self.rng.random_range(1..=2)];
        }
        self.open_leader().await;
        let mode = if self.rng.random_bool(0.3) {
            RestoreMode::NoClaim
        } else {
            RestoreMode::Claim
        };
        for attempt in 0..6 {
            if attempt == 5 {
                self.store.set_faults(None);
            }
            let restored = self.restore_all(mode).await;
            self.store.set_faults(Some(self.faults));
            match restored {
                Ok(true) => return Ok(()),
                Ok(false) => {}
                Err(v) => return Err(v),
            }
        }
        violation!("restore failed without faults")
    }

    /// One restore attempt; `Ok(false)` if it failed on a storage error (retried).
    async fn restore_all(&mut self, mode: RestoreMode) -> Step<bool> {
        self.generation += 1;
        let n = self.leader();
        let coord = self.coordinators[n].as_ref().expect("leader");
        if coord.store().latest().is_none() {
            // Only checkpoints this build cannot read (a newer release's) may stand in for a completed one.
            if let Some(c) = self.completed
                && !self.newer.keys().any(|id| *id >= c)
            {
                violation!("no checkpoint to restore, yet checkpoint {c} completed");
            }
            self.new_tasks();
            self.say("failover: no checkpoint, fresh start".into());
            return Ok(true);
        }
        let (storage, dir, parallelism) = (
            self.storage.clone(),
            self.dir.path().to_path_buf(),
            self.parallelism,
        );
        let outcome = coord
            .store()
            .restore_latest(|meta| {
                let (storage, dir) = (storage.clone(), dir.clone());
                async move {
                    let mut tasks = Vec::new();
                    for (op, name) in OPS.iter().enumerate() {
                        let handles = meta.keyed_handles(name);
                        for i in 0..parallelism[op] {
                            let p = parallelism[op];
                            tasks.push(
                                Task::restore(op, p, i, &dir, &storage, &handles, mode).await?,
                            );
                        }
                    }
                    Ok(tasks)
                }
            })
            .await;
        let outcome = match outcome {
            Ok(o) => o,
            Err(e) if e.kind() == ErrorKind::Storage => {
                self.say(format!("restore failed: {e}"));
                return Ok(false);
            }
            Err(e) => violation!("restore of the latest checkpoint failed: {e}"),
        };
        if outcome
            .skipped
            .iter()
            .any(|s| !self.newer.contains_key(&s.checkpoint_id))
        {
            violation!("restore skipped broken checkpoints: {:?}", outcome.skipped);
        }
        let id = outcome.checkpoint_id;
        let Some(model) = self.models.get(&id).cloned() else {
            violation!("restored checkpoint {id} was never triggered");
        };
        self.tasks = outcome.value;
        self.model = model;
        self.say(format!(
            "failover: restored {id} ({mode:?}) at {parallelism:?}"
        ));
        self.count(if mode == RestoreMode::NoClaim {
            "restored NO_CLAIM"
        } else {
            "restored CLAIM"
        });
        // The engine tells the coordinator (retrying a storage error: the new line must be durable).
        let coord = self.coordinators[n].as_mut().expect("leader");
        let meta = coord
            .store()
            .get(id)
            .cloned()
            .expect("restored from the store");
        for attempt in 0..6 {
            if attempt == 5 {
                self.store.set_faults(None);
            }
            let coord = self.coordinators[n].as_mut().expect("leader");
            let told = coord.restored_from(&meta, mode).await;
            self.store.set_faults(Some(self.faults));
            match told {
                Ok(()) => break,
                Err(e) if attempt == 5 => violation!("restored_from failed without faults: {e}"),
                Err(_) => {}
            }
        }
        let coord = self.coordinators[n].as_mut().expect("leader");
        if coord.store().pinned().iter().any(|p| p.checkpoint_id == id) {
            self.pinned.insert(id);
        }
        Ok(true)
    }

    /// A newer release rewrote a checkpoint's metadata in a format this build cannot read, and the job
    /// was rolled back to this build (its coordinator reopens; an old leader is fenced first). This build
    /// must then keep everything that checkpoint may reference.
    pub async fn newer_release(&mut self) -> Step {
        use object_store::ObjectStoreExt;
        let Ok(store) = CompletedCheckpointStore::open(self.truth.clone(), 1).await else {
            return Ok(());
        };
        let candidates: Vec<CheckpointMetadata> =
            store.checkpoints().chain(store.pinned()).cloned().collect();
        if candidates.is_empty() {
            return Ok(());
        }
        let meta = &candidates[self.rng.random_range(0..candidates.len())];
        let id = meta.checkpoint_id;
        let path = self
            .truth
            .path(&format!("{}/{METADATA_FILE}", checkpoint_dir(id)));
        let inner = self.truth.object_store();
        let mut bytes = inner
            .get(&path)
            .await
            .expect("metadata")
            .bytes()
            .await
            .expect("bytes")
            .to_vec();
        bytes[8..10].copy_from_slice(&99u16.to_le_bytes());
        inner.put(&path, bytes.into()).await.expect("rewrite");
        self.newer.insert(id, meta.files().cloned().collect());
        self.count("newer-release metadata");
        self.say(format!(
            "checkpoint {id} rewritten by a newer release; rolled back"
        ));
        self.fence();
        self.restart_coordinator().await
    }
}
