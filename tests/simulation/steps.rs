//! The simulated engine's everyday steps: writes, triggers of checkpoints and savepoints, asynchronous
//! phases, acknowledgements, notifications, aborts, timeouts, late acknowledgements and sweeps.

use rand::Rng;
use statebackend::snapshot::SnapshotMetrics;
use statebackend::snapshot::layout::*;
use statebackend::*;

use crate::job::{OPS, owner};
use crate::sim::{Inflight, KEYS, MIN_AGE, Note, Part, SavedPoint, Sim, Step, TIMEOUT, violation};
use crate::store::CRASH_POINTS;

/// Whether checkpoint `id`'s metadata is in `storage`.
pub async fn metadata_exists(storage: &CheckpointStorage, id: u64) -> bool {
    use object_store::ObjectStoreExt;
    let path = storage.path(&format!("{}/{METADATA_FILE}", checkpoint_dir(id)));
    storage.object_store().head(&path).await.is_ok()
}

impl Sim {
    /// Writes random values of random keys of one operator, in the leader's tasks or (a fifth of the
    /// time) a zombie's.
    pub fn write(&mut self) -> Step {
        let zombies: Vec<usize> = self
            .timelines
            .keys()
            .copied()
            .filter(|n| *n != self.leader())
            .collect();
        let n = if !zombies.is_empty() && self.rng.random_bool(0.2) {
            zombies[self.rng.random_range(0..zombies.len())]
        } else {
            self.leader()
        };
        let op = self.rng.random_range(0..OPS.len());
        let count = self.rng.random_range(1..12);
        let writes: Vec<(u64, u64)> = (0..count)
            .map(|_| {
                (
                    self.rng.random_range(0..KEYS),
                    self.rng.random_range(0..1_000_000),
                )
            })
            .collect();
        let Some(timeline) = self.timelines.get_mut(&n) else {
            return Ok(());
        };
        for (key, value) in writes {
            self.event_ms += 1;
            let sub = owner(key, timeline.parallelism[op]);
            let task = timeline
                .tasks
                .iter_mut()
                .find(|t| t.op == op && t.subtask == sub)
                .expect("owner task");
            if let Err(e) = task.put(key, value, self.event_ms) {
                violation!("write of key {key} to {}-{sub} failed: {e}", OPS[op]);
            }
            timeline.model.insert((op, key), (value, self.event_ms));
        }
        Ok(())
    }

    /// The leader's LSM tasks compact their files fully (as RocksDB's background compaction would, at a
    /// moment the seed chooses).
    pub fn compact(&mut self) {
        for task in &self.main().tasks {
            task.compact();
        }
        self.count("compaction");
    }

    /// A coordinator triggers a checkpoint (or a savepoint into the target); its tasks take their
    /// synchronous phase.
    pub async fn trigger(&mut self, coordinator: usize, savepoint: bool) -> Step {
        let Some(mut coord) = self.coordinators[coordinator].take() else {
            return Ok(());
        };
        let target = self.target.clone();
        let result = if savepoint {
            self.crashable(coord.trigger_savepoint(&target)).await
        } else {
            self.crashable(coord.trigger()).await
        };
        self.coordinators[coordinator] = Some(coord);
        match result {
            Err(point) => {
                self.say(format!(
                    "coordinator #{coordinator} crashed in trigger at {point}"
                ));
                self.lose_coordinator(coordinator).await
            }
            Ok(Err(e)) if e.kind() == ErrorKind::Fenced => {
                self.say(format!("coordinator #{coordinator} is fenced: {e}"));
                self.fenced(coordinator).await
            }
            Ok(Err(e)) => {
                self.say(format!("trigger failed: {e}"));
                Ok(())
            }
            Ok(Ok(id)) => {
                let format = savepoint.then(|| {
                    if self.rng.random_bool(0.5) {
                        SavepointFormat::Canonical
                    } else {
                        SavepointFormat::Native
                    }
                });
                self.barrier(coordinator, id, format)
            }
        }
    }

    /// Checkpoint (or savepoint) `id` of `coordinator`: ids never repeat; every task of its timeline
    /// snapshots.
    pub fn barrier(
        &mut self,
        coordinator: usize,
        id: u64,
        savepoint: Option<SavepointFormat>,
    ) -> Step {
        if !self.ids_handed_out.insert(id) {
            violation!("checkpoint id {id} handed out twice");
        }
        let (storage, target) = (self.storage.clone(), self.target.clone());
        let Some(timeline) = self.timelines.get_mut(&coordinator) else {
            return Ok(());
        };
        let parts = timeline
            .tasks
            .iter_mut()
            .map(|t| {
                let snapshot = match savepoint {
                    None => t.snapshot(id, &storage),
                    // The heap backend writes canonical savepoints only.
                    Some(format) if t.op == 1 => t.savepoint(id, &target, format),
                    Some(_) => t.savepoint(id, &target, SavepointFormat::Canonical),
                };
                match snapshot {
                    Ok(p) => Part::Pending(p),
                    Err(_) => Part::Failed,
                }
            })
            .collect();
        let (model, generation) = (timeline.model.clone(), timeline.generation);
        self.models.insert(id, model);
        self.barrier_ms.insert(id, self.event_ms);
        self.inflight.insert(
            id,
            Inflight {
                coordinator,
                generation,
                triggered: self.clock.now(),
                parts,
                savepoint,
            },
        );
        if savepoint.is_some() {
            self.count("savepoint triggered");
        }
        let what = if savepoint.is_some() {
            "savepoint"
        } else {
            "checkpoint"
        };
        self.say(format!("coordinator #{coordinator} triggered {what} {id}"));
        Ok(())
    }

    /// Advances the oldest checkpoint in flight (one time in four the newest, so later checkpoints
    /// overtake savepoints and older checkpoints): runs one pending asynchronous phase, or acknowledges
    /// one finished part (in random order).
    pub async fn progress(&mut self) -> Step {
        let newest = self.rng.random_bool(0.25);
        let next = if newest {
            self.inflight.iter().next_back()
        } else {
            self.inflight.iter().next()
        };
        let Some((&id, flight)) = next else {
            return Ok(());
        };
        let pending = flight.parts.iter().any(|p| matches!(p, Part::Pending(_)));
        if pending {
            self.run_async_of(Some(id)).await
        } else {
            self.acknowledge_of(Some(id)).await
        }
    }

    /// A random `(checkpoint, task)` whose part is `wanted`, of checkpoint `only` (or of any).
    fn pick_part(&mut self, only: Option<u64>, wanted: fn(&Part) -> bool) -> Option<(u64, usize)> {
        let parts: Vec<(u64, usize)> = self
            .inflight
            .iter()
            .filter(|(id, _)| only.is_none_or(|o| o == **id))
            .flat_map(|(id, f)| {
                f.parts
                    .iter()
                    .enumerate()
                    .filter(move |(_, p)| wanted(p))
                    .map(move |(i, _)| (*id, i))
            })
            .collect();
        if parts.is_empty() {
            return None;
        }
        Some(parts[self.rng.random_range(0..parts.len())])
    }

    /// Runs the asynchronous phase of one task of a checkpoint.
    pub async fn run_async(&mut self) -> Step {
        self.run_async_of(None).await
    }

    /// Runs one pending asynchronous phase of checkpoint `only` (or of any).
    async fn run_async_of(&mut self, only: Option<u64>) -> Step {
        let Some((id, i)) = self.pick_part(only, |p| matches!(p, Part::Pending(_))) else {
            return Ok(());
        };
        let flight = self.inflight.get_mut(&id).expect("inflight");
        let Part::Pending(p) = std::mem::replace(&mut flight.parts[i], Part::Failed) else {
            return Ok(());
        };
        match self.crashable(p.run()).await {
            Ok(Ok(result)) => {
                if let Some(f) = self.inflight.get_mut(&id) {
                    f.parts[i] = Part::Done(result);
                }
            }
            Ok(Err(e)) => {
                self.say(format!("async phase of {id} task {i} failed: {e}"));
                self.abort(id).await?;
            }
            Err(point) => {
                self.say(format!(
                    "task {i} crashed in the async phase of {id} at {point}"
                ));
                self.abort(id).await?;
            }
        }
        Ok(())
    }

    /// Runs every pending asynchronous phase of one checkpoint at once (delays reorder their calls).
    pub async fn run_all_async(&mut self) -> Step {
        let Some(&id) = self.inflight.keys().next() else {
            return Ok(());
        };
        self.run_all_async_of(id).await
    }

    /// The newest checkpoint in flight runs all its asynchronous phases and is acknowledged by every
    /// task at once: an incremental checkpoint is quick while a full savepoint triggered before it may
    /// still be uploading.
    pub async fn finish_newest(&mut self) -> Step {
        let Some(&id) = self.inflight.keys().next_back() else {
            return Ok(());
        };
        self.run_all_async_of(id).await?;
        for _ in 0..8 {
            let done = self
                .inflight
                .get(&id)
                .is_some_and(|f| f.parts.iter().any(|p| matches!(p, Part::Done(_))));
            if !done {
                break;
            }
            self.acknowledge_of(Some(id)).await?;
        }
        Ok(())
    }

    /// Runs every pending asynchronous phase of checkpoint `id` at once.
    async fn run_all_async_of(&mut self, id: u64) -> Step {
        let Some(flight) = self.inflight.get_mut(&id) else {
            return Ok(());
        };
        let mut runs = Vec::new();
        for (i, part) in flight.parts.iter_mut().enumerate() {
            if matches!(part, Part::Pending(_))
                && let Part::Pending(p) = std::mem::replace(part, Part::Failed)
            {
                runs.push(async move { (i, p.run().await) });
            }
        }
        let results = futures::future::join_all(runs).await;
        let mut failed = false;
        for (i, r) in results {
            match r {
                Ok(result) => {
                    if let Some(f) = self.inflight.get_mut(&id) {
                        f.parts[i] = Part::Done(result);
                    }
                }
                Err(_) => failed = true,
            }
        }
        if failed {
            self.abort(id).await?;
        }
        Ok(())
    }

    /// Acknowledges one finished part to the coordinator that triggered its checkpoint.
    pub async fn acknowledge(&mut self) -> Step {
        self.acknowledge_of(None).await
    }

    /// Acknowledges one finished part of checkpoint `only` (or of any).
    async fn acknowledge_of(&mut self, only: Option<u64>) -> Step {
        let Some((id, i)) = self.pick_part(only, |p| matches!(p, Part::Done(_))) else {
            return Ok(());
        };
        let flight = self.inflight.get_mut(&id).expect("inflight");
        let Part::Done(result) = std::mem::replace(&mut flight.parts[i], Part::Acked) else {
            return Ok(());
        };
        let (n, g) = (flight.coordinator, flight.generation);
        let Some(timeline) = self.timeline_of_generation(g) else {
            return Ok(());
        };
        let task = timeline.tasks[i].ack(&result);
        if result.handle.format == statebackend::snapshot::HandleFormat::KeyedChain
            && result.handle.files.len() > 1
        {
            self.count("heap delta acknowledged");
        }
        self.late.push((id, task.clone()));
        let metrics = Some(result.metrics);
        self.deliver_ack(n, id, task, metrics).await
    }

    /// Sends an acknowledgement to coordinator `n` and acts on the answer as an engine does.
    pub async fn deliver_ack(
        &mut self,
        n: usize,
        id: u64,
        task: TaskStateSnapshot,
        metrics: Option<SnapshotMetrics>,
    ) -> Step {
        let Some(mut coord) = self.coordinators[n].take() else {
            return Ok(());
        };
        let written_before = self.store.metadata_written(id);
        let generation = coord.generation();
        // The last acknowledgement runs the completion: its crash points are the completion's.
        let last = self.inflight.get(&id).is_some_and(|f| {
            f.coordinator == n && f.parts.iter().all(|p| matches!(p, Part::Acked))
        });
        // Subsumption happens in about a quarter of the completions: its step is drawn more often.
        let points: &[&str] = if last {
            &[
                "metadata", "stats", "register", "subsume", "subsume", "subsume", "delete",
            ]
        } else {
            &CRASH_POINTS
        };
        let answer = self
            .crashable_among(points, coord.acknowledge(id, task, metrics))
            .await;
        self.coordinators[n] = Some(coord);
        match answer {
            Err(point) => {
                self.say(format!(
                    "coordinator #{n} crashed acknowledging {id} at {point}"
                ));
                self.lose_coordinator(n).await?;
            }
            Ok(Ok(Acknowledgement::Completed(stats))) => {
                self.completed(n, id, generation, &stats).await?
            }
            Ok(Ok(Acknowledgement::Declined(why))) => {
                self.count(match &why {
                    Declined::UnavailableFiles(_) => "declined (unavailable files)",
                    Declined::LostRace => "lost the metadata race",
                    Declined::Fenced { .. } => "declined (fenced)",
                    Declined::FenceUnknown(_) => "declined (fence unknown)",
                    Declined::TargetTaken => "declined (savepoint target taken)",
                    _ => "declined (inconsistent)",
                });
                self.say(format!("ack {id} to #{n}: declined {why:?}"));
                if self.inflight.contains_key(&id) {
                    self.abort(id).await?;
                }
                if matches!(why, Declined::Fenced { .. }) {
                    self.fenced(n).await?;
                }
            }
            Ok(Ok(other)) => {
                if other == Acknowledgement::Duplicate {
                    self.count("duplicate ack");
                } else if matches!(other, Acknowledgement::Discarded(_)) {
                    self.count("ack discarded");
                }
                self.say(format!("ack {id} to #{n}: {other:?}"));
            }
            Ok(Err(e)) => {
                // This acknowledgement's completion wrote the metadata: the checkpoint exists, and no
                // error may say otherwise.
                if !written_before
                    && self.store.metadata_written(id)
                    && metadata_exists(&self.truth, id).await
                {
                    violation!(
                        "checkpoint {id} is complete (its metadata was written) but was reported as failed: {e}"
                    );
                }
                self.count(if e.kind() == ErrorKind::Storage {
                    "metadata write failed"
                } else {
                    "ack refused"
                });
                self.say(format!("ack {id} to #{n} failed: {e}"));
                if self.inflight.contains_key(&id) {
                    self.abort(id).await?;
                }
            }
        }
        Ok(())
    }

    /// Checkpoint or savepoint `id` completed at coordinator `n` (of `generation`): notify, and remember
    /// what must stay.
    pub async fn completed(
        &mut self,
        n: usize,
        id: u64,
        generation: u64,
        stats: &CheckpointStats,
    ) -> Step {
        // Durations are left out of the log: they are the only thing a replay does not repeat.
        self.say(format!(
            "{id} completed by #{n}: uploaded {} B in {} files, reused {}, subsumed {:?}, aborted {:?}, \
             registry {:?}, warnings {:?}",
            stats.checkpointed_bytes,
            stats.files_uploaded,
            stats.files_reused,
            stats.subsumed,
            stats.aborted_pending,
            stats.registry,
            stats.cleanup_warnings
        ));
        let flight = self.inflight.remove(&id);
        let savepoint = flight.as_ref().is_some_and(|f| f.savepoint.is_some());
        if !savepoint
            && self.inflight.range(..id).any(|(_, f)| {
                f.savepoint.is_some()
                    && Some(f.coordinator) == flight.as_ref().map(|f| f.coordinator)
            })
        {
            self.count("checkpoint completed before an older savepoint");
        }
        if savepoint {
            self.count("savepoint completed");
            let meta = match self.target_truth.read_savepoint_metadata(id).await {
                Ok(meta) => meta,
                Err(e) => violation!("savepoint {id} completed but its metadata is not there: {e}"),
            };
            self.savepoints.insert(id, SavedPoint { meta });
        } else {
            self.count("completed");
            if !stats.subsumed.is_empty() {
                self.count("subsumed");
            }
            if stats.files_reused > 0 {
                self.count("incremental");
            }
            if !stats.cleanup_warnings.is_empty() {
                self.count("cleanup warning");
            }
            self.completed = Some(
                self.completed
                    .map_or((id, generation), |c| c.max((id, generation))),
            );
        }
        for old in &stats.aborted_pending {
            // A completion never aborts a savepoint; the checkpoint timeout may, and an abort it made in
            // the same acknowledgement is reported with this completion (seed 9935 took that for the
            // completion's doing).
            let now = self.clock.now();
            if self.inflight.get(old).is_some_and(|f| {
                f.savepoint.is_some()
                    && now.duration_since(f.triggered).unwrap_or_default()
                        < self.coordinator_timeout
            }) {
                violation!("the completion of {id} aborted savepoint {old}");
            }
            self.aborted.insert(*old);
            if let Some(f) = self.inflight.remove(old) {
                self.notify_generation(f.generation, |g, t| Note::Aborted(*old, g, t));
            }
        }
        if let Some(f) = flight {
            self.notify_generation(f.generation, |g, t| Note::Complete(id, g, t));
        }
        Ok(())
    }

    /// Queues a notification of every task of task generation `g`.
    pub fn notify_generation(&mut self, g: u64, note: impl Fn(u64, usize) -> Note) {
        let Some(tasks) = self.timeline_of_generation(g).map(|t| t.tasks.len()) else {
            return;
        };
        for t in 0..tasks {
            self.notes.push(note(g, t));
        }
    }

    /// The engine aborts checkpoint `id` (a task failed, or it timed out).
    pub async fn abort(&mut self, id: u64) -> Step {
        let Some(flight) = self.inflight.remove(&id) else {
            return Ok(());
        };
        let n = flight.coordinator;
        if let Some(mut coord) = self.coordinators[n].take() {
            let aborted = self.crashable(coord.abort(id)).await;
            self.coordinators[n] = Some(coord);
            match aborted {
                Err(point) => {
                    self.say(format!("coordinator #{n} crashed aborting {id} at {point}"));
                    self.lose_coordinator(n).await?;
                }
                Ok(r) => self.say(format!("abort {id} at #{n}: {r:?}")),
            }
        }
        self.aborted.insert(id);
        self.notify_generation(flight.generation, |g, t| Note::Aborted(id, g, t));
        Ok(())
    }

    /// The engine asks every live coordinator for the checkpoints it aborted on its own
    /// (`take_aborted`) and tells their tasks. Then every checkpoint in flight at a live, unfenced
    /// coordinator must still be pending there: one that ended without a report would leave its tasks
    /// waiting and the RocksDB backend rebasing.
    pub fn reported_aborts(&mut self) -> Step {
        for n in 0..self.coordinators.len() {
            let Some(coord) = self.coordinators[n].as_mut() else {
                continue;
            };
            let reported = coord.take_aborted();
            let pending = coord.pending();
            let fenced = coord.is_fenced();
            for id in reported {
                let Some(flight) = self.inflight.remove(&id) else {
                    continue;
                };
                self.say(format!("coordinator #{n} reported the abort of {id}"));
                self.count("abort reported by the coordinator");
                self.aborted.insert(id);
                self.notify_generation(flight.generation, |g, t| Note::Aborted(id, g, t));
            }
            if fenced {
                continue;
            }
            if let Some(id) = self
                .inflight
                .iter()
                .find(|(id, f)| f.coordinator == n && !pending.contains(id))
                .map(|(id, _)| *id)
            {
                violation!("checkpoint {id} ended at coordinator #{n} without a report");
            }
        }
        Ok(())
    }

    /// Checkpoints pending longer than the timeout are aborted (before the sweep could take their files).
    pub async fn timeouts(&mut self) -> Step {
        let now = self.clock.now();
        let late: Vec<u64> = self
            .inflight
            .iter()
            .filter(|(_, f)| now.duration_since(f.triggered).unwrap_or_default() >= TIMEOUT)
            .map(|(id, _)| *id)
            .collect();
        for id in late {
            self.say(format!("checkpoint {id} timed out"));
            self.abort(id).await?;
        }
        Ok(())
    }

    /// Delivers one notification to the task of its generation.
    pub fn deliver(&mut self, note: Note) {
        let (id, g, t, complete) = match note {
            Note::Complete(id, g, t) => (id, g, t, true),
            Note::Aborted(id, g, t) => (id, g, t, false),
        };
        if let Some(task) = self
            .timeline_of_generation(g)
            .and_then(|timeline| timeline.tasks.get_mut(t))
        {
            if complete {
                task.notify_complete(id);
            } else {
                task.notify_aborted(id);
            }
        }
    }

    /// Delivers, duplicates or loses one notification; now and then the engine sends a wrong one: the
    /// completion of a checkpoint that was aborted or never existed.
    pub fn notify(&mut self) {
        if self.rng.random_bool(0.05) {
            let aborted: Vec<u64> = self.aborted.iter().copied().collect();
            let id = if !aborted.is_empty() && self.rng.random_bool(0.7) {
                aborted[self.rng.random_range(0..aborted.len())]
            } else {
                self.ids_handed_out.iter().max().copied().unwrap_or(0) + self.rng.random_range(1..5)
            };
            let tasks = self.main().tasks.len();
            let t = self.rng.random_range(0..tasks);
            self.count("wrong notification");
            self.say(format!("wrong notification: {id} completed, to task {t}"));
            self.main().tasks[t].notify_complete(id);
            return;
        }
        if self.notes.is_empty() {
            return;
        }
        let i = self.rng.random_range(0..self.notes.len());
        let roll: f64 = self.rng.random();
        let note = if roll < 0.15 {
            self.notes.remove(i);
            self.count("notification lost");
            self.say("a notification is lost".into());
            return;
        } else if roll < 0.3 {
            self.notes[i]
        } else {
            self.notes.remove(i)
        };
        self.deliver(note);
    }

    /// Sends again an acknowledgement sent before, or one of a task that no longer runs.
    pub async fn late_ack(&mut self) -> Step {
        if self.late.is_empty() {
            return Ok(());
        }
        let (id, task) = self.late[self.rng.random_range(0..self.late.len())].clone();
        let n = self.leader();
        self.say(format!("late acknowledgement of {id} to #{n}"));
        self.count("late or repeated ack");
        self.deliver_ack(n, id, task, None).await
    }

    pub async fn sweep(&mut self) -> Step {
        let n = self.leader();
        let Some(mut coord) = self.coordinators[n].take() else {
            return Ok(());
        };
        let swept = self.crashable(coord.sweep_orphans(MIN_AGE)).await;
        self.coordinators[n] = Some(coord);
        match swept {
            Err(point) => {
                self.say(format!("coordinator #{n} crashed sweeping at {point}"));
                self.lose_coordinator(n).await?;
            }
            Ok(Ok(report)) => {
                if !report.deleted.is_empty() {
                    self.count("sweep deleted");
                }
                if report.fenced {
                    self.say(format!("sweep: coordinator #{n} is fenced"));
                    return self.fenced(n).await;
                }
                let expected: Vec<u64> = self.newer.keys().copied().collect();
                if report.blocked_by_unreadable != expected && !report.deleted.is_empty() {
                    violation!(
                        "sweep deleted files while metadata {expected:?} is unreadable: {report:?}"
                    );
                }
                if !report
                    .blocked_by_unreadable
                    .iter()
                    .all(|id| self.newer.contains_key(id))
                {
                    violation!("sweep blocked by metadata nobody made unreadable: {report:?}");
                }
                self.say(format!("sweep deleted {:?}", report.deleted));
            }
            Ok(Err(e)) => self.say(format!("sweep failed: {e}")),
        }
        Ok(())
    }
}
