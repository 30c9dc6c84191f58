//! One seeded run: an engine (coordinators, tasks, notifications, failovers) driven by a random schedule
//! over the fault-injecting store, with the invariants of `check.rs` after every step.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use statebackend::*;

use crate::job::{Model, OPS, Task, job_config};
use crate::store::{CRASH_POINTS, CrashAt, FaultRates, SimStore};

/// Orphan sweep's minimum age.
pub const MIN_AGE: Duration = Duration::from_secs(600);
/// The engine aborts a checkpoint pending longer than this (it must be below `MIN_AGE`).
pub const TIMEOUT: Duration = Duration::from_secs(300);
/// Keys per operator.
pub const KEYS: u64 = 48;
/// Retained checkpoints.
pub const RETAINED: usize = 2;

/// An invariant that did not hold, or the harness found the protocol stuck.
#[derive(Debug)]
pub struct Violation(pub String);

pub type Step<T = ()> = std::result::Result<T, Violation>;

macro_rules! violation {
    ($($arg:tt)*) => { return Err($crate::sim::Violation(format!($($arg)*))) };
}
pub(crate) use violation;

/// A task's part of a checkpoint.
pub enum Part {
    /// Synchronous phase done; asynchronous phase not run.
    Pending(PendingSnapshot),
    /// Asynchronous phase done, not acknowledged yet.
    Done(SnapshotResult),
    /// Acknowledged.
    Acked,
    /// Refused, failed or cut off.
    Failed,
}

/// A checkpoint the engine has in flight.
pub struct Inflight {
    /// Coordinator incarnation that triggered it.
    pub coordinator: usize,
    pub generation: u64,
    pub triggered: SystemTime,
    pub parts: Vec<Part>,
}

/// A notification on its way to a task.
#[derive(Debug, Clone, Copy)]
pub enum Note {
    Complete(u64, u64, usize),
    Aborted(u64, u64, usize),
}

pub struct Sim {
    pub rng: StdRng,
    pub clock: Arc<ManualClock>,
    pub store: Arc<SimStore>,
    /// The job's storage through the faulty store.
    pub storage: CheckpointStorage,
    /// The same storage without faults: what is really there.
    pub truth: CheckpointStorage,
    pub dir: tempfile::TempDir,
    pub faults: FaultRates,
    pub crash_rate: f64,
    pub parallelism: [u32; 2],
    /// Coordinators by incarnation; the last is the leader, an older one still `Some` a zombie.
    pub coordinators: Vec<Option<CheckpointCoordinator>>,
    pub tasks: Vec<Task>,
    pub generation: u64,
    pub model: Model,
    /// The model at each checkpoint's barrier.
    pub models: BTreeMap<u64, Model>,
    pub inflight: BTreeMap<u64, Inflight>,
    pub notes: Vec<Note>,
    /// Acknowledgements to deliver again or late (retries, dead generations).
    pub late: Vec<(u64, TaskStateSnapshot)>,
    pub ids: HashSet<u64>,
    /// Highest id a coordinator reported completed.
    pub completed: Option<u64>,
    /// Checkpoints pinned by a NO_CLAIM restore: they exist for ever.
    pub pinned: BTreeSet<u64>,
    /// Checkpoints "rewritten by a newer release" (metadata of an unknown version), with the files they
    /// referenced: this build must keep them all.
    pub newer: BTreeMap<u64, Vec<StateFile>>,
    /// Checkpoints the engine aborted (notified as such).
    pub aborted: BTreeSet<u64>,
    pub verified: BTreeSet<u64>,
    pub crash_points: BTreeMap<&'static str, u32>,
    /// How often each kind of event happened (what the schedules exercise).
    pub events: BTreeMap<&'static str, u32>,
    pub log: Vec<String>,
}

impl Sim {
    pub async fn new(seed: u64) -> Self {
        let mut rng = StdRng::seed_from_u64(seed);
        let clock = Arc::new(ManualClock::new(
            SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000),
        ));
        let store = SimStore::new(seed, clock.clone());
        let storage = CheckpointStorage::new(store.clone(), "job").expect("storage");
        let truth = CheckpointStorage::new(store.inner(), "job").expect("storage");
        let parallelism = [rng.random_range(1..=3), rng.random_range(1..=2)];
        let faults = FaultRates {
            fail: rng.random_range(0.0..0.06),
            fail_after_effect: rng.random_range(0.0..0.04),
            lose_delete: rng.random_range(0.0..0.06),
            delay: 0.2,
        };
        let crash_rate = rng.random_range(0.05..0.2);
        let dir = tempfile::Builder::new()
            .prefix("sb-sim-")
            .tempdir()
            .expect("dir");
        let mut sim = Sim {
            rng,
            clock,
            store,
            storage,
            truth,
            dir,
            faults,
            crash_rate,
            parallelism,
            coordinators: Vec::new(),
            tasks: Vec::new(),
            generation: 0,
            model: Model::new(),
            models: BTreeMap::new(),
            inflight: BTreeMap::new(),
            notes: Vec::new(),
            late: Vec::new(),
            ids: HashSet::new(),
            completed: None,
            pinned: BTreeSet::new(),
            newer: BTreeMap::new(),
            aborted: BTreeSet::new(),
            verified: BTreeSet::new(),
            crash_points: BTreeMap::new(),
            events: BTreeMap::new(),
            log: Vec::new(),
        };
        sim.open_leader().await;
        sim.new_tasks();
        sim
    }

    pub fn say(&mut self, line: String) {
        self.log.push(line);
    }

    /// Counts an event.
    pub fn count(&mut self, event: &'static str) {
        *self.events.entry(event).or_default() += 1;
    }

    pub fn leader(&self) -> usize {
        self.coordinators.len() - 1
    }

    /// Opens a new leader (faults may make `open` fail: it is retried, then opened without faults).
    pub async fn open_leader(&mut self) {
        let config = job_config(self.parallelism, RETAINED);
        for attempt in 0..6 {
            if attempt == 5 {
                self.store.set_faults(None);
            }
            let opened = CheckpointCoordinator::open_with_clock(
                self.storage.clone(),
                config.clone(),
                self.clock.clone(),
            )
            .await;
            self.store.set_faults(Some(self.faults));
            if let Ok(c) = opened {
                self.coordinators.push(Some(c));
                let n = self.leader();
                self.say(format!("open coordinator #{n} {:?}", self.parallelism));
                return;
            }
        }
        unreachable!("open without faults succeeds");
    }

    /// Empty tasks for the current parallelism in a new generation.
    pub fn new_tasks(&mut self) {
        self.generation += 1;
        self.tasks.clear();
        for op in 0..OPS.len() {
            for i in 0..self.parallelism[op] {
                let t = Task::new(op, self.parallelism[op], i, self.dir.path());
                self.tasks.push(t);
            }
        }
        self.model.clear();
    }

    /// Runs `fut`, crashing it at a random store call with the seed's crash rate (the future is dropped
    /// there: a crash at an await point). `Err(point)` if it crashed.
    pub async fn crashable<T>(
        &mut self,
        fut: impl Future<Output = T>,
    ) -> std::result::Result<T, &'static str> {
        let armed = self.rng.random_bool(self.crash_rate);
        let signal = if armed {
            // At one of the first ten store calls, or at the first call of a named protocol step (a
            // completion reads every checkpoint directory it does not know before it subsumes, so its late
            // steps lie far in).
            let at = if self.rng.random_bool(0.5) {
                CrashAt::Call(self.rng.random_range(1..=10))
            } else {
                CrashAt::Point(CRASH_POINTS[self.rng.random_range(0..CRASH_POINTS.len())])
            };
            let after_effect = self.rng.random_bool(0.5);
            Some(self.store.arm_crash(at, after_effect))
        } else {
            None
        };
        let out = match signal {
            Some(signal) => {
                tokio::pin!(fut);
                tokio::select! {
                    biased;
                    _ = signal.notified() => None,
                    r = &mut fut => Some(r),
                }
            }
            None => Some(fut.await),
        };
        let point = self.store.disarm();
        match (out, point) {
            (Some(r), _) => Ok(r),
            (None, point) => {
                let point = point.unwrap_or("?");
                *self.crash_points.entry(point).or_default() += 1;
                Err(point)
            }
        }
    }
}
