//! The simulated engine's everyday steps: writes, triggers, asynchronous phases, acknowledgements,
//! notifications, aborts, timeouts, late acknowledgements and sweeps.

use rand::Rng;
use statebackend::*;

use crate::job::{OPS, owner};
use crate::sim::{Inflight, KEYS, MIN_AGE, Note, Part, Sim, Step, TIMEOUT, violation};

/// Whether checkpoint `id`'s metadata is in `storage`.
pub async fn metadata_exists(storage: &CheckpointStorage, id: u64) -> bool {
    use object_store::ObjectStoreExt;
    let path = storage.path(&format!("{}/{METADATA_FILE}", checkpoint_dir(id)));
    storage.object_store().head(&path).await.is_ok()
}

impl Sim {
    /// Writes random values of random keys of one operator.
    pub fn write(&mut self) -> Step {
        let op = self.rng.random_range(0..OPS.len());
        let n = self.rng.random_range(1..12);
        for _ in 0..n {
            let key = self.rng.random_range(0..KEYS);
            let value = self.rng.random_range(0..1_000_000);
            let sub = owner(key, self.parallelism[op]);
            let task = self
                .tasks
                .iter_mut()
                .find(|t| t.op == op && t.subtask == sub)
                .expect("owner task");
            if let Err(e) = task.put(key, value) {
                violation!("write of key {key} to {}-{sub} failed: {e}", OPS[op]);
            }
            self.model.insert((op, key), value);
        }
        Ok(())
    }

    /// A coordinator triggers a checkpoint; every task takes its synchronous phase.
    pub async fn trigger(&mut self, coordinator: usize) -> Step {
        let Some(mut coord) = self.coordinators[coordinator].take() else {
            return Ok(());
        };
        let result = self.crashable(coord.trigger()).await;
        match result {
            Err(point) => {
                self.say(format!(
                    "coordinator #{coordinator} crashed in trigger at {point}"
                ));
                drop(coord);
                return self.lose_coordinator(coordinator).await;
            }
            Ok(Err(e)) => self.say(format!("trigger failed: {e}")),
            Ok(Ok(id)) => {
                self.coordinators[coordinator] = Some(coord);
                return self.barrier(coordinator, id);
            }
        }
        self.coordinators[coordinator] = Some(coord);
        Ok(())
    }

    /// Checkpoint `id` of `coordinator`: ids never repeat; every task snapshots.
    pub fn barrier(&mut self, coordinator: usize, id: u64) -> Step {
        if !self.ids.insert(id) {
            violation!("checkpoint id {id} handed out twice");
        }
        let storage = self.storage.clone();
        let parts = self
            .tasks
            .iter_mut()
            .map(|t| match t.snapshot(id, &storage) {
                Ok(p) => Part::Pending(p),
                Err(_) => Part::Failed,
            })
            .collect();
        self.models.insert(id, self.model.clone());
        self.inflight.insert(
            id,
            Inflight {
                coordinator,
                generation: self.generation,
                triggered: self.clock.now(),
                parts,
            },
        );
        self.say(format!("coordinator #{coordinator} triggered {id}"));
        Ok(())
    }

    /// Advances the oldest checkpoint in flight: runs one pending asynchronous phase, or acknowledges one
    /// finished part (in random order).
    pub async fn progress(&mut self) -> Step {
        let Some((&id, flight)) = self.inflight.iter().next() else {
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
        let flight = self.inflight.get_mut(&id).expect("inflight");
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
        let n = flight.coordinator;
        let task = self.tasks[i].ack(&result);
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
        let answer = self.crashable(coord.acknowledge(id, task, metrics)).await;
        self.coordinators[n] = Some(coord);
        match answer {
            Err(point) => {
                self.say(format!(
                    "coordinator #{n} crashed acknowledging {id} at {point}"
                ));
                self.lose_coordinator(n).await?;
            }
            Ok(Ok(Acknowledgement::Completed(stats))) => {
                self.say(format!("{id} completed by #{n}: {stats:?}"));
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
                self.completed = Some(self.completed.map_or(id, |c| c.max(id)));
                let generation = self.inflight.remove(&id).map(|f| f.generation);
                for old in &stats.aborted_pending {
                    self.aborted.insert(*old);
                    self.inflight.remove(old);
                    self.notify_all(|g, t| Note::Aborted(*old, g, t));
                }
                if let Some(g) = generation {
                    self.notify_generation(g, |g, t| Note::Complete(id, g, t));
                }
            }
            Ok(Ok(other)) => {
                if other == Acknowledgement::Duplicate {
                    self.count("duplicate ack");
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
                let text = e.to_string();
                self.count(if text.contains("no retained checkpoint holds") {
                    "declined (reused deleted files)"
                } else if text.contains("another coordinator completed") {
                    "lost the metadata race"
                } else if e.kind() == ErrorKind::Storage {
                    "metadata write failed"
                } else {
                    "ack refused"
                });
                self.say(format!("ack {id} to #{n} refused: {e}"));
                if self.inflight.contains_key(&id) {
                    self.abort(id).await?;
                }
            }
        }
        Ok(())
    }

    /// Queues a notification of every current task.
    pub fn notify_all(&mut self, note: impl Fn(u64, usize) -> Note) {
        let g = self.generation;
        self.notify_generation(g, note);
    }

    fn notify_generation(&mut self, g: u64, note: impl Fn(u64, usize) -> Note) {
        if g != self.generation {
            return;
        }
        for t in 0..self.tasks.len() {
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

    /// Delivers, duplicates or loses one notification; now and then the engine sends a wrong one: the
    /// completion of a checkpoint that was aborted or never existed.
    pub fn notify(&mut self) {
        if self.rng.random_bool(0.05) && !self.tasks.is_empty() {
            let aborted: Vec<u64> = self.aborted.iter().copied().collect();
            let id = if !aborted.is_empty() && self.rng.random_bool(0.7) {
                aborted[self.rng.random_range(0..aborted.len())]
            } else {
                self.ids.iter().max().copied().unwrap_or(0) + self.rng.random_range(1..5)
            };
            let t = self.rng.random_range(0..self.tasks.len());
            self.count("wrong notification");
            self.say(format!("wrong notification: {id} completed, to task {t}"));
            self.tasks[t].notify_complete(id);
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
        match note {
            Note::Complete(id, g, t) if g == self.generation => self.tasks[t].notify_complete(id),
            Note::Aborted(id, g, t) if g == self.generation => self.tasks[t].notify_aborted(id),
            _ => {}
        }
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
