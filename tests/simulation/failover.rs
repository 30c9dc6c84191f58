//! The simulated engine's disruptions: coordinator crashes and restarts, an old leader with its own
//! tasks beside a new one (split brain: two timelines) and its fencing, job failovers that restore the
//! latest checkpoint (CLAIM or NO_CLAIM), possibly at another parallelism, rollbacks to an older
//! checkpoint, and a newer release's metadata.

use rand::Rng;
use statebackend::checkpoint::CompletedCheckpointStore;
use statebackend::snapshot::layout::*;
use statebackend::*;

use crate::job::{OPS, Task};
use crate::sim::{Part, Sim, Step, Timeline, violation};

impl Sim {
    /// Coordinator `n` crashed: a zombie just dies (with its tasks), a leader is reopened from storage
    /// and its tasks keep running.
    pub async fn lose_coordinator(&mut self, n: usize) -> Step {
        self.coordinators[n] = None;
        if n == self.leader() {
            let timeline = self.timelines.remove(&n).expect("the leader's tasks");
            self.open_leader(timeline.parallelism).await;
            let leader = self.leader();
            self.timelines.insert(leader, timeline);
        } else {
            self.stop(n);
        }
        Ok(())
    }

    /// Coordinator `n` and its tasks are gone: what they had in flight goes with them.
    pub fn stop(&mut self, n: usize) {
        self.coordinators[n] = None;
        self.timelines.remove(&n);
        self.inflight.retain(|_, f| f.coordinator != n);
    }

    /// The leader restarts; tasks keep running (their acknowledgements of its checkpoints now arrive late).
    pub async fn restart_coordinator(&mut self) -> Step {
        let n = self.leader();
        self.lose_coordinator(n).await
    }

    /// Coordinator `n` found it is fenced: the engine stops it. A fenced leader (an operator forced a
    /// sweep, or a zombie of a zombie) means the job lost its coordinator: it fails over.
    pub async fn fenced(&mut self, n: usize) -> Step {
        match self.coordinators[n].as_ref() {
            Some(c) if c.is_fenced() => {}
            _ => return Ok(()),
        }
        self.count("coordinator fenced");
        if n == self.leader() {
            self.failover().await
        } else {
            self.stop(n);
            Ok(())
        }
    }

    /// An old leader keeps running with its own tasks beside a new one (a failover the old one did not
    /// notice): the new leader opens while the old one completes a checkpoint (or triggers one), both at
    /// once so that store delays interleave them (the old one's fence check may come before the new
    /// registration and its metadata after); then the new leader restores the latest checkpoint into new
    /// tasks, and both go on with their own timelines.
    pub async fn split_brain(&mut self) -> Step {
        if self.coordinators.iter().flatten().count() > 1 {
            return Ok(());
        }
        let old = self.leader();
        let parallelism = self.main().parallelism;
        let config = crate::job::job_config(parallelism, self.retained, self.coordinator_timeout);
        let last_ack = self.inflight.iter().find_map(|(id, f)| {
            let done = f
                .parts
                .iter()
                .filter(|p| matches!(p, Part::Done(_)))
                .count();
            let acked_or_done = f
                .parts
                .iter()
                .all(|p| matches!(p, Part::Done(_) | Part::Acked));
            (f.coordinator == old && f.savepoint.is_none() && done == 1 && acked_or_done)
                .then_some(*id)
        });
        let mut zombie = self.coordinators[old].take().expect("old leader");
        let mut zombie_completed = None;
        let (storage, clock) = (self.storage.clone(), self.clock.clone());
        let open = CheckpointCoordinator::open_with_clock(storage, config, clock);
        self.count("split brain");
        let opened = match last_ack {
            Some(id) => {
                let flight = self.inflight.get_mut(&id).expect("inflight");
                let i = flight
                    .parts
                    .iter()
                    .position(|p| matches!(p, Part::Done(_)))
                    .expect("one done");
                let Part::Done(result) = std::mem::replace(&mut flight.parts[i], Part::Acked)
                else {
                    unreachable!("a done part");
                };
                let generation = flight.generation;
                let ack = self
                    .timeline_of_generation(generation)
                    .expect("the old leader's tasks")
                    .tasks[i]
                    .ack(&result);
                let zombie_generation = zombie.generation();
                let (answer, opened) = tokio::join!(zombie.acknowledge(id, ack, None), open);
                self.coordinators[old] = Some(zombie);
                self.say(format!(
                    "split brain: the old leader's last acknowledgement of {id}: {answer:?}"
                ));
                if let Ok(Acknowledgement::Completed(stats)) = &answer {
                    self.count("zombie completed during split brain");
                    self.completed(old, id, zombie_generation, stats).await?;
                    zombie_completed = Some(id);
                } else if self.inflight.contains_key(&id) {
                    self.abort(id).await?;
                }
                opened
            }
            None => {
                let (triggered, opened) = tokio::join!(zombie.trigger(), open);
                self.coordinators[old] = Some(zombie);
                self.say(format!(
                    "split brain: the old leader's trigger: {triggered:?}"
                ));
                if let Ok(id) = triggered {
                    self.barrier(old, id, None)?;
                }
                opened
            }
        };
        match opened {
            Ok(c) => self.coordinators.push(Some(c)),
            // Faults made the new leader's open fail: open it the usual way.
            Err(_) => self.open_leader(parallelism).await,
        }
        if !self.restore_into_leader(RestoreMode::Claim, None).await? {
            let timeline = self.new_timeline(parallelism);
            let leader = self.leader();
            self.timelines.insert(leader, timeline);
        } else if let (Some(c), Some(restored)) = (zombie_completed, self.last_restored)
            && restored.0 < c
        {
            // The new leader listed the checkpoints before the zombie's metadata was there: its line
            // starts at `restored` and abandons `c` (never restored again). The line's newest
            // completed checkpoint is the restored one.
            self.count("zombie completion left behind by the new line");
            self.rolled_back.insert(c);
            if self.completed.is_some_and(|(id, _)| id == c) {
                self.completed = Some(restored);
            }
        }
        Ok(())
    }

    /// The old leader is stopped with its tasks (a fence outside the crate: leader election).
    pub fn fence(&mut self) {
        let leader = self.leader();
        for n in 0..self.coordinators.len() {
            if n != leader && self.coordinators[n].is_some() {
                self.stop(n);
                self.say(format!("coordinator #{n} stopped"));
            }
        }
    }

    /// Job failover: every task and coordinator restarts; the new leader restores the latest checkpoint
    /// (CLAIM or NO_CLAIM), possibly at another parallelism.
    pub async fn failover(&mut self) -> Step {
        self.drop_everything();
        self.count("failover");
        let mut parallelism = self
            .timelines
            .values()
            .next()
            .map_or([1, 1], |t| t.parallelism);
        if self.rng.random_bool(0.3) {
            parallelism = [self.rng.random_range(1..=3), self.rng.random_range(1..=2)];
        }
        self.timelines.clear();
        self.open_leader(parallelism).await;
        // Now and then the job is started again from the user's newest savepoint instead (a redeploy).
        if !self.savepoints.is_empty() && self.rng.random_bool(0.2) {
            return self.restore_savepoint(parallelism).await;
        }
        let mode = if self.rng.random_bool(0.3) {
            RestoreMode::NoClaim
        } else {
            RestoreMode::Claim
        };
        let restored = self.restore_into_leader(mode, None).await?;
        if restored
            && let (Some((c, _)), Some((id, _))) = (self.completed, self.last_restored)
            && id < c
            && !self.rolled_back.contains(&c)
            && !self.newer.keys().any(|n| *n >= c)
        {
            violation!("a failover restored checkpoint {id}, yet checkpoint {c} completed");
        }
        if !restored {
            if let Some((c, _)) = self.completed
                && !self.newer.keys().any(|id| *id >= c)
                && !self.rolled_back.contains(&c)
            {
                violation!("no checkpoint to restore, yet checkpoint {c} completed");
            }
            let timeline = self.new_timeline(parallelism);
            let leader = self.leader();
            self.timelines.insert(leader, timeline);
            self.say("failover: no checkpoint, fresh start".into());
        }
        Ok(())
    }

    /// The job restarts from its newest completed savepoint (in the target, NO_CLAIM): a new line that
    /// abandons every checkpoint of the older generations.
    async fn restore_savepoint(&mut self, parallelism: [u32; 2]) -> Step {
        let (&id, saved) = self.savepoints.iter().next_back().expect("a savepoint");
        let meta = saved.meta.clone();
        let (target, dir) = (self.target.clone(), self.dir.path().to_path_buf());
        let mut tasks = None;
        for attempt in 0..6 {
            if attempt == 5 {
                self.store.set_faults(None);
            }
            let mut restored = Vec::new();
            let mut failed = None;
            for (op, name) in OPS.iter().enumerate() {
                let handles = meta.keyed_handles(name);
                for i in 0..parallelism[op] {
                    let p = parallelism[op];
                    match Task::restore(op, p, i, &dir, &target, &handles, RestoreMode::NoClaim)
                        .await
                    {
                        Ok(t) => restored.push(t),
                        Err(e) => failed = Some(e),
                    }
                }
            }
            self.faults_back();
            match failed {
                None => {
                    tasks = Some(restored);
                    break;
                }
                Some(e) if e.kind() == ErrorKind::Storage && attempt < 5 => {}
                Some(e) => violation!("savepoint {id} does not restore: {e}"),
            }
        }
        let n = self.leader();
        for attempt in 0..6 {
            if attempt == 5 {
                self.store.set_faults(None);
            }
            let coord = self.coordinators[n].as_mut().expect("leader");
            let told = coord.restored_from(&meta, RestoreMode::NoClaim).await;
            self.faults_back();
            match told {
                Ok(()) => break,
                Err(e) if attempt == 5 => violation!("restored_from failed without faults: {e}"),
                Err(_) => {}
            }
        }
        self.generations += 1;
        let model = self.models.get(&id).cloned().unwrap_or_default();
        let timeline = Timeline {
            tasks: tasks.expect("restored"),
            model,
            parallelism,
            generation: self.generations,
        };
        self.timelines.insert(n, timeline);
        // Every checkpoint in storage is of an older line now: a failover never restores one again.
        let older: Vec<u64> = self
            .models
            .keys()
            .copied()
            .filter(|c| !self.savepoints.contains_key(c))
            .collect();
        self.rolled_back.extend(older);
        self.count("restored from a savepoint");
        self.say(format!(
            "restored savepoint {id} at {parallelism:?} into #{n}"
        ));
        Ok(())
    }

    /// Acknowledgements of finished parts become late; notifications and coordinators go.
    fn drop_everything(&mut self) {
        for (id, flight) in std::mem::take(&mut self.inflight) {
            let generation = flight.generation;
            for (i, part) in flight.parts.into_iter().enumerate() {
                if let (Part::Done(result), Some(task)) = (
                    part,
                    self.timeline_of_generation(generation)
                        .and_then(|t| t.tasks.get(i)),
                ) {
                    let ack = task.ack(&result);
                    self.late.push((id, ack));
                }
            }
        }
        self.notes.clear();
        for c in &mut self.coordinators {
            *c = None;
        }
    }

    /// The operator rolls the job back to an older checkpoint than the latest (as the job's new
    /// coordinator reads storage): the job restarts from it, and checkpoints above it are left behind for
    /// good. Without an older one it is a plain failover.
    pub async fn rollback(&mut self) -> Step {
        self.drop_everything();
        let parallelism = self.main().parallelism;
        self.timelines.clear();
        self.open_leader(parallelism).await;
        let leader = self.leader();
        let store = self.coordinators[leader].as_ref().expect("leader").store();
        let restorable: Vec<u64> = store
            .checkpoints()
            .chain(store.pinned())
            .map(|c| c.checkpoint_id)
            .collect();
        let latest = store.latest().map_or(0, |c| c.checkpoint_id);
        let older: Vec<u64> = restorable
            .iter()
            .copied()
            .filter(|id| *id < latest)
            .collect();
        let to = (!older.is_empty()).then(|| older[self.rng.random_range(0..older.len())]);
        if !self.restore_into_leader(RestoreMode::Claim, to).await? {
            let timeline = self.new_timeline(parallelism);
            self.timelines.insert(leader, timeline);
            return Ok(());
        }
        if let Some(to) = to {
            self.rolled_back
                .extend(restorable.into_iter().filter(|id| *id > to));
            self.count("rollback");
        }
        Ok(())
    }

    /// Restores the leader's tasks from the latest restorable checkpoint (or from `only`), tells the
    /// coordinator, and gives the leader that timeline; false if there is nothing to restore.
    async fn restore_into_leader(&mut self, mode: RestoreMode, only: Option<u64>) -> Step<bool> {
        for attempt in 0..6 {
            if attempt == 5 {
                self.store.set_faults(None);
            }
            let restored = self.restore_attempt(mode, only).await;
            self.faults_back();
            match restored {
                Ok(Some(done)) => return Ok(done),
                Ok(None) => {}
                Err(v) => return Err(v),
            }
        }
        violation!("restore failed without faults")
    }

    /// One restore attempt: `Ok(None)` if it failed on a storage error (retried).
    async fn restore_attempt(
        &mut self,
        mode: RestoreMode,
        only: Option<u64>,
    ) -> Step<Option<bool>> {
        let n = self.leader();
        let parallelism = self
            .timelines
            .get(&n)
            .map_or_else(|| self.parallelism_of_new_leader(), |t| t.parallelism);
        let coord = self.coordinators[n].as_ref().expect("leader");
        if coord.store().latest().is_none() {
            return Ok(Some(false));
        }
        let (storage, dir) = (self.storage.clone(), self.dir.path().to_path_buf());
        let outcome = coord
            .store()
            .restore_latest(|meta| {
                let (storage, dir) = (storage.clone(), dir.clone());
                async move {
                    if only.is_some_and(|o| o != meta.checkpoint_id) {
                        return Err(Error::NotFound {
                            path: "not the checkpoint the operator chose".into(),
                        });
                    }
                    let mut tasks = Vec::new();
                    for (op, name) in OPS.iter().enumerate() {
                        let handles = meta.keyed_handles(name);
                        for i in 0..parallelism[op] {
                            let p = parallelism[op];
                            tasks.push(
                                Task::failover(op, p, i, &dir, &storage, &handles, mode).await?,
                            );
                        }
                    }
                    Ok((tasks, meta))
                }
            })
            .await;
        let outcome = match outcome {
            Ok(o) => o,
            Err(e) if e.kind() == ErrorKind::Storage => {
                self.say(format!("restore failed: {e}"));
                return Ok(None);
            }
            Err(e) => violation!("restore of the latest checkpoint failed: {e}"),
        };
        if outcome.skipped.iter().any(|s| {
            !self.newer.contains_key(&s.checkpoint_id) && only.is_none_or(|o| o == s.checkpoint_id)
        }) {
            violation!("restore skipped broken checkpoints: {:?}", outcome.skipped);
        }
        let id = outcome.checkpoint_id;
        if only.is_none() && self.rolled_back.contains(&id) {
            violation!("a failover restored checkpoint {id}, which a rollback left behind");
        }
        let Some(model) = self.models.get(&id).cloned() else {
            violation!("restored checkpoint {id} was never triggered");
        };
        let (tasks, meta) = outcome.value;
        let sources: Vec<_> = tasks.iter().map(|t| t.restore_sources()).collect();
        if sources.iter().any(|s| s.local_files > 0) {
            self.count("restore read local copies");
        }
        if sources.iter().any(|s| s.in_process > 0) {
            self.count("restore took in-process copies");
        }
        let in_process_miss = |line: &String| line.starts_with("in-process copy of checkpoint");
        if sources
            .iter()
            .any(|s| s.fallbacks.iter().any(in_process_miss))
        {
            self.count("restore read files past the in-process copies");
        }
        if sources
            .iter()
            .any(|s| !s.fallbacks.iter().all(in_process_miss))
        {
            self.count("restore fell back past a local copy");
        }
        self.generations += 1;
        let timeline = Timeline {
            tasks,
            model,
            parallelism,
            generation: self.generations,
        };
        self.timelines.insert(n, timeline);
        self.say(format!(
            "restored {id} ({mode:?}) at {parallelism:?} into #{n}"
        ));
        self.count(if mode == RestoreMode::NoClaim {
            "restored NO_CLAIM"
        } else {
            "restored CLAIM"
        });
        // The engine tells the coordinator, retrying a storage error: the new line must be durable.
        for attempt in 0..6 {
            if attempt == 5 {
                self.store.set_faults(None);
            }
            let coord = self.coordinators[n].as_mut().expect("leader");
            let told = coord.restored_from(&meta, mode).await;
            self.faults_back();
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
        self.last_restored = Some((id, meta.generation));
        Ok(Some(true))
    }

    /// The parallelism a leader without tasks restores at (the one it was opened for).
    fn parallelism_of_new_leader(&self) -> [u32; 2] {
        let n = self.leader();
        let config = self.coordinators[n].as_ref().expect("leader").config();
        let p = |op: &str| {
            config
                .operators
                .iter()
                .find(|o| o.operator_id == op)
                .map_or(1, |o| o.parallelism)
        };
        [p(OPS[0]), p(OPS[1])]
    }

    /// A newer release rewrote a checkpoint's metadata in a format this build cannot read, and the job
    /// was rolled back to this build (its coordinator reopens; an old leader is stopped first). This build
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
