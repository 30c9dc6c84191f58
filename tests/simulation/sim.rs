//! One seeded run: an engine (coordinators, their task sets, notifications, failovers, an operator)
//! driven by a random schedule over the fault-injecting store, with the invariants of `check.rs` after
//! every step.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use statebackend::ids::SeededIds;
use statebackend::snapshot::StateFile;
use statebackend::*;

use crate::job::{Model, OPS, Task, job_config};
use crate::store::{CRASH_POINTS, CrashAt, FaultRates, SimStore};

/// Orphan sweep's minimum age.
pub const MIN_AGE: Duration = Duration::from_secs(600);
/// The engine aborts a checkpoint pending longer than this (it must be below `MIN_AGE`).
pub const TIMEOUT: Duration = Duration::from_secs(300);
/// Keys per operator.
pub const KEYS: u64 = 48;
/// Retained checkpoints: 1 (Flink's default) or 2, by seed.
pub const MAX_RETAINED: usize = 2;

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

/// A checkpoint (or savepoint) the engine has in flight.
pub struct Inflight {
    /// Coordinator incarnation that triggered it.
    pub coordinator: usize,
    /// Task generation whose tasks snapshotted it.
    pub generation: u64,
    pub triggered: SystemTime,
    pub parts: Vec<Part>,
    /// A savepoint, and in which format the LSM tasks write it.
    pub savepoint: Option<SavepointFormat>,
}

/// A notification on its way to a task: checkpoint id, task generation, task index.
#[derive(Debug, Clone, Copy)]
pub enum Note {
    Complete(u64, u64, usize),
    Aborted(u64, u64, usize),
}

/// One set of the job's tasks writing their own state, and the model of that state: the leader's, or a
/// zombie coordinator's (whose tasks go on writing their own timeline).
pub struct Timeline {
    pub tasks: Vec<Task>,
    pub model: Model,
    pub parallelism: [u32; 2],
    /// Task generation: notifications and acknowledgements of older ones are late.
    pub generation: u64,
}

/// What a completed savepoint must stay: its metadata (and so its files; its model is at its id).
pub struct SavedPoint {
    pub meta: CheckpointMetadata,
}

pub struct Sim {
    pub rng: StdRng,
    pub clock: Arc<ManualClock>,
    pub store: Arc<SimStore>,
    /// The job's storage through the faulty store.
    pub storage: CheckpointStorage,
    /// The same storage without faults: what is really there.
    pub truth: CheckpointStorage,
    /// The savepoint target (another prefix of the same store), faulty and true; other jobs write there.
    pub target: CheckpointStorage,
    pub target_truth: CheckpointStorage,
    pub dir: tempfile::TempDir,
    pub faults: FaultRates,
    pub crash_rate: f64,
    /// Completed checkpoints the job retains.
    pub retained: usize,
    /// The coordinators' own checkpoint timeout: in half of the seeds shorter than the engine's
    /// (`TIMEOUT`), so the coordinator expires checkpoints itself (found by `trigger` or `acknowledge`)
    /// and the engine learns of them only from its reports.
    pub coordinator_timeout: Duration,
    /// Quiet time: no faults any more, whatever a step does.
    pub quiet: bool,
    /// Coordinators by incarnation; the last is the leader, an older one still `Some` a zombie.
    pub coordinators: Vec<Option<CheckpointCoordinator>>,
    /// Each live coordinator's task set, by incarnation.
    pub timelines: BTreeMap<usize, Timeline>,
    /// Task generations handed out.
    pub generations: u64,
    /// The model at each checkpoint's (or savepoint's) barrier.
    pub models: BTreeMap<u64, Model>,
    /// Event time: writes so far (TTL state expires in it, `job::TTL_MS`).
    pub event_ms: u64,
    /// The event time at each checkpoint's (or savepoint's) barrier.
    pub barrier_ms: BTreeMap<u64, u64>,
    pub inflight: BTreeMap<u64, Inflight>,
    pub notes: Vec<Note>,
    /// Acknowledgements to deliver again or late (retries, dead generations).
    pub late: Vec<(u64, TaskStateSnapshot)>,
    pub ids_handed_out: HashSet<u64>,
    /// Highest id a coordinator reported completed, with that coordinator's generation.
    pub completed: Option<(u64, u64)>,
    /// Checkpoints pinned by a NO_CLAIM restore: they exist for ever.
    pub pinned: BTreeSet<u64>,
    /// Checkpoints "rewritten by a newer release" (metadata of an unknown version), with the files they
    /// referenced: this build must keep them all.
    pub newer: BTreeMap<u64, Vec<StateFile>>,
    /// Checkpoints the engine aborted (notified as such).
    pub aborted: BTreeSet<u64>,
    pub verified: BTreeSet<u64>,
    /// Completed savepoints: never deleted but by the user.
    pub savepoints: BTreeMap<u64, SavedPoint>,
    /// Objects other jobs (and conversions) wrote into the savepoint target, with their bytes.
    pub foreign: BTreeMap<String, Vec<u8>>,
    /// Checkpoints a rollback left behind (or a new leader's line, for a zombie's completion it did not
    /// see): a failover never restores one.
    pub rolled_back: BTreeSet<u64>,
    /// The checkpoint the last restore took, with the generation that wrote it.
    pub last_restored: Option<(u64, u64)>,
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
        // Every name in storage comes from the seed: a seed replays byte for byte.
        let ids = Arc::new(SeededIds::new(seed));
        let storage = CheckpointStorage::new(store.clone(), "job")
            .expect("storage")
            .with_id_source(ids.clone());
        let truth = CheckpointStorage::new(store.inner(), "job").expect("storage");
        let target_prefix = object_store::path::Path::from("target");
        let target = CheckpointStorage::with_prefix(store.clone(), &target_prefix, "job")
            .expect("target")
            .with_id_source(ids.clone());
        let target_truth =
            CheckpointStorage::with_prefix(store.inner(), &target_prefix, "job").expect("target");
        let faults = FaultRates {
            fail: rng.random_range(0.0..0.06),
            fail_after_effect: rng.random_range(0.0..0.04),
            land_later: rng.random_range(0.0..0.02),
            lose_delete: rng.random_range(0.0..0.06),
            delay: 0.2,
            fail_list: rng.random_range(0.0..0.05),
        };
        // The store's clock is up to a minimum age off the coordinators' (an operator's laptop is too).
        store.set_skew(rng.random_range(-(MIN_AGE.as_secs() as i64)..=MIN_AGE.as_secs() as i64));
        let crash_rate = rng.random_range(0.05..0.2);
        let retained = rng.random_range(1..=MAX_RETAINED);
        let coordinator_timeout = if rng.random_bool(0.5) {
            Duration::from_secs(200)
        } else {
            Duration::from_secs(86_400)
        };
        // The RocksDB backends' directories on tmpfs where there is one: RocksDB syncs every file it closes,
        // which on a disk is most of a seed's time and proves nothing here.
        let shm = std::path::Path::new("/dev/shm");
        let builder = tempfile::Builder::new().prefix("sb-sim-").clone();
        let dir = if shm.is_dir() {
            builder.tempdir_in(shm)
        } else {
            builder.tempdir()
        }
        .expect("dir");
        // Local recovery in odd seeds (by parity, so the schedules stay as they were): restores read the
        // local copies, checked against the handles; even seeds read storage with its faults.
        if !seed.is_multiple_of(2) {
            std::fs::create_dir(dir.path().join(crate::job::LOCAL_RECOVERY_DIR))
                .expect("recovery dir");
        }
        // Heap incremental checkpoints by the seed's second bit, independent of local recovery.
        if (seed / 2) % 2 == 1 {
            std::fs::create_dir(dir.path().join(crate::job::HEAP_INCREMENTAL_MARK))
                .expect("heap incremental mark");
        }
        // In-process recovery of the heap backends by the third bit, independent of both.
        if (seed / 4) % 2 == 1 {
            std::fs::create_dir(dir.path().join(crate::job::IN_PROCESS_MARK))
                .expect("in-process mark");
        }
        Sim {
            rng,
            clock,
            store,
            storage,
            truth,
            target,
            target_truth,
            dir,
            faults,
            crash_rate,
            retained,
            coordinator_timeout,
            quiet: false,
            coordinators: Vec::new(),
            timelines: BTreeMap::new(),
            generations: 0,
            models: BTreeMap::new(),
            event_ms: 0,
            barrier_ms: BTreeMap::new(),
            inflight: BTreeMap::new(),
            notes: Vec::new(),
            late: Vec::new(),
            ids_handed_out: HashSet::new(),
            completed: None,
            pinned: BTreeSet::new(),
            newer: BTreeMap::new(),
            aborted: BTreeSet::new(),
            verified: BTreeSet::new(),
            savepoints: BTreeMap::new(),
            foreign: BTreeMap::new(),
            rolled_back: BTreeSet::new(),
            last_restored: None,
            crash_points: BTreeMap::new(),
            events: BTreeMap::new(),
            log: Vec::new(),
        }
    }

    /// Starts the job: one seed in twenty runs on a store that ignores conditional create, which `open`
    /// must refuse (then the operator fixes the store).
    pub async fn start(&mut self) -> Step {
        if self.rng.random_bool(0.05) {
            self.store.set_ignore_create(true);
            let opened = CheckpointCoordinator::open_with_clock(
                self.storage.clone(),
                job_config([1, 1], self.retained, self.coordinator_timeout),
                self.clock.clone(),
            )
            .await;
            self.store.set_ignore_create(false);
            match opened {
                Err(e) if e.kind() == ErrorKind::InvalidArgument => {
                    self.count("store without conditional create refused");
                    self.say(format!("open refused a store that overwrites: {e}"));
                }
                Err(e) => self.say(format!("open on a store that overwrites failed: {e}")),
                Ok(_) => violation!("a store that ignores If-None-Match was accepted"),
            }
        }
        let parallelism = [self.rng.random_range(1..=3), self.rng.random_range(1..=2)];
        self.open_leader(parallelism).await;
        let timeline = self.new_timeline(parallelism);
        let leader = self.leader();
        self.timelines.insert(leader, timeline);
        Ok(())
    }

    /// Appends a line to the log, with the temporary directory's path and the RocksDB backends' instance
    /// directory names in it blanked (the operating system's random names: all else follows the seed).
    pub fn say(&mut self, line: String) {
        let dir = self.dir.path().display().to_string();
        let mut out = String::with_capacity(line.len());
        let mut rest = line.as_str();
        while let Some(at) = rest.find(&dir) {
            out.push_str(&rest[..at]);
            out.push_str("<dir>/<instance>");
            rest = &rest[at + dir.len()..];
            // The instance directory's name: the next path component.
            if let Some(after) = rest.strip_prefix('/') {
                let end = after.find('/').unwrap_or(after.len());
                rest = &after[end..];
            }
        }
        out.push_str(rest);
        self.log.push(out);
    }

    /// Counts an event.
    pub fn count(&mut self, event: &'static str) {
        *self.events.entry(event).or_default() += 1;
    }

    /// Faults again after a step that needed none (not in quiet time).
    pub fn faults_back(&self) {
        if !self.quiet {
            self.store.set_faults(Some(self.faults));
        }
    }

    pub fn leader(&self) -> usize {
        self.coordinators.len() - 1
    }

    /// The leader's timeline.
    pub fn main(&mut self) -> &mut Timeline {
        let leader = self.leader();
        self.timelines
            .get_mut(&leader)
            .expect("the leader has tasks")
    }

    /// The timeline whose task generation is `g`.
    pub fn timeline_of_generation(&mut self, g: u64) -> Option<&mut Timeline> {
        self.timelines.values_mut().find(|t| t.generation == g)
    }

    /// Opens a new leader for tasks of `parallelism` (faults may make `open` fail: it is retried, then
    /// opened without faults).
    pub async fn open_leader(&mut self, parallelism: [u32; 2]) {
        let config = job_config(parallelism, self.retained, self.coordinator_timeout);
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
            self.faults_back();
            if let Ok(c) = opened {
                self.coordinators.push(Some(c));
                let n = self.leader();
                self.say(format!("open coordinator #{n} {parallelism:?}"));
                return;
            }
        }
        unreachable!("open without faults succeeds");
    }

    /// Empty tasks for `parallelism` in a new task generation.
    pub fn new_timeline(&mut self, parallelism: [u32; 2]) -> Timeline {
        self.generations += 1;
        let mut tasks = Vec::new();
        for (op, &p) in parallelism.iter().enumerate().take(OPS.len()) {
            for i in 0..p {
                tasks.push(Task::new(op, p, i, self.dir.path()));
            }
        }
        Timeline {
            tasks,
            model: Model::new(),
            parallelism,
            generation: self.generations,
        }
    }

    /// Runs `fut`, crashing it at a random store call with the seed's crash rate (the future is dropped
    /// there: a crash at an await point). `Err(point)` if it crashed.
    pub async fn crashable<T>(
        &mut self,
        fut: impl Future<Output = T>,
    ) -> std::result::Result<T, &'static str> {
        self.crashable_among(&CRASH_POINTS, fut).await
    }

    /// [`Sim::crashable`] whose named crash points are drawn from `points` (the steps the operation is
    /// expected to reach) and, when `points` is not every step, always at one of them: a completing
    /// acknowledgement crashes at a step of the completion protocol.
    pub async fn crashable_among<T>(
        &mut self,
        points: &[&'static str],
        fut: impl Future<Output = T>,
    ) -> std::result::Result<T, &'static str> {
        let armed = self.rng.random_bool(self.crash_rate);
        let signal = if armed {
            // At one of the first ten store calls, or at the first call of a named protocol step (a
            // completion reads every checkpoint directory it does not know before it subsumes, so its late
            // steps lie far in).
            let by_call = points == CRASH_POINTS.as_slice() && self.rng.random_bool(0.5);
            let at = if by_call {
                CrashAt::Call(self.rng.random_range(1..=10))
            } else {
                CrashAt::Point(points[self.rng.random_range(0..points.len())])
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
