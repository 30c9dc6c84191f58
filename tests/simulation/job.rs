//! The simulated job: two operators, `counter` on the heap backend and `window` on the RocksDB backend, each a
//! value state `v: u64 -> u64` and its copy `e` with an event-time TTL, and the `BTreeMap` model of both.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use statebackend::heap::{HeapConfig, HeapKeyedStateBackend, InProcessRecovery};
use statebackend::key_group::{assign_to_key_group, operator_index_for_key_group};
use statebackend::keyed::{Fired, StateTtlConfig, TimeDomain, TimerServiceDescriptor, TtlTime};
use statebackend::rocksdb::RocksDbConfig;
#[cfg(feature = "rocksdb")]
use statebackend::rocksdb::RocksDbKeyedStateBackend;
use statebackend::snapshot::{HandleFormat, SnapshotKind};
use statebackend::*;

/// Max parallelism of the job.
pub const MAX_P: u32 = 16;
/// Operators, by index: heap, then LSM.
pub const OPS: [&str; 2] = ["counter", "window"];

/// The model: `(operator index, key) -> (value, event time of its write)`.
pub type Model = BTreeMap<(usize, u64), (u64, u64)>;

/// What a snapshot restores: `(operator index, key) -> value` of `v`, and of `e` as read at the
/// snapshot's event time.
pub type Restored = (BTreeMap<(usize, u64), u64>, BTreeMap<(usize, u64), u64>);

/// Event time (the simulation's count of writes) an entry of `e` lives after its write.
pub const TTL_MS: u64 = 60;

/// The model's view of a snapshot taken at event time `at`: every value, and those of `e` not expired.
pub fn expected(model: &Model, at: u64) -> Restored {
    let values = model.iter().map(|(k, (v, _))| (*k, *v)).collect();
    let live = model
        .iter()
        .filter(|(_, (_, written))| written + TTL_MS > at)
        .map(|(k, (v, _))| (*k, *v))
        .collect();
    (values, live)
}

fn desc() -> ValueStateDescriptor<VoidNamespace, u64> {
    ValueStateDescriptor::new("v")
}

/// `v`'s copy with an event-time TTL: written with `v`, read at a snapshot's event time, it must hold what
/// the model says is live then (heap snapshots and RocksDB compactions leave expired entries out).
fn ttl_desc() -> ValueStateDescriptor<VoidNamespace, u64> {
    let ttl = StateTtlConfig {
        time: TtlTime::EventTime,
        ..StateTtlConfig::new(TTL_MS)
    };
    ValueStateDescriptor::new("e").with_ttl(ttl)
}

/// Every key has one event-time timer, at its value: the timers mirror the state, so every check of a
/// restored snapshot checks both.
fn timers() -> TimerServiceDescriptor<VoidNamespace> {
    TimerServiceDescriptor::new("t")
}

/// One subtask's backend.
pub enum Backend {
    Heap(Box<HeapKeyedStateBackend<u64>>),
    Lsm(Box<RocksDbKeyedStateBackend<u64>>),
}

/// Runs `$e` with `$b` bound to the concrete backend.
macro_rules! on {
    ($backend:expr, $b:ident => $e:expr) => {
        match $backend {
            Backend::Heap($b) => $e,
            Backend::Lsm($b) => $e,
        }
    };
}

/// One subtask of an operator in one generation of the job (a failover starts a new one).
pub struct Task {
    pub op: usize,
    pub subtask: u32,
    pub backend: Backend,
}

/// Local recovery's directory in the simulation's directory `dir`, where the seed turned it on (half the
/// seeds create it, `Sim::new`): restores then read local copies first, and the others read storage with
/// its faults.
fn local_recovery(dir: &Path) -> Option<std::path::PathBuf> {
    let recovery = dir.join(LOCAL_RECOVERY_DIR);
    recovery.is_dir().then_some(recovery)
}

/// Name of local recovery's directory in a simulation's directory.
pub const LOCAL_RECOVERY_DIR: &str = "recovery";

/// Name of the marker in a simulation's directory that turns the heap backends' incremental checkpoints on
/// (half the seeds, by the second bit of the seed, `Sim::new`).
pub const HEAP_INCREMENTAL_MARK: &str = "heap-incremental";

/// Name of the marker in a simulation's directory that gives the heap backends in-process recovery (a
/// quarter of the seeds, by the third bit of the seed, `Sim::new`): a failover then takes the heap
/// subtasks' state from the versions their checkpoints kept in memory where the handle matches.
pub const IN_PROCESS_MARK: &str = "in-process";

/// Every simulation's in-process recovery, by its directory: one component per simulated process.
static IN_PROCESS: std::sync::OnceLock<
    std::sync::Mutex<std::collections::HashMap<std::path::PathBuf, InProcessRecovery>>,
> = std::sync::OnceLock::new();

/// The heap backends' in-process recovery of the simulation in `dir`, if its seed turned it on.
pub fn in_process(dir: &Path) -> Option<InProcessRecovery> {
    if !dir.join(IN_PROCESS_MARK).is_dir() {
        return None;
    }
    let mut all = IN_PROCESS.get_or_init(Default::default).lock().unwrap();
    Some(all.entry(dir.to_path_buf()).or_default().clone())
}

/// Drops the versions the simulation in `dir` kept (it ended).
pub fn forget_in_process(dir: &Path) {
    if let Some(all) = IN_PROCESS.get() {
        all.lock().unwrap().remove(dir);
    }
}

/// Settings of a subtask's heap backend: local recovery and incremental checkpoints (chains of at most 3
/// files: two slices, so that rolling materialization drops files at every other checkpoint) as the seed
/// chose.
fn heap_config(dir: &Path) -> HeapConfig {
    HeapConfig {
        local_recovery_dir: local_recovery(dir),
        incremental: dir.join(HEAP_INCREMENTAL_MARK).is_dir(),
        max_chain_files: 3,
        ..HeapConfig::default()
    }
}

/// Settings of a subtask's RocksDB backend: small, no background compaction (the SST files then depend on the
/// writes alone, so a seed replays), one transfer at a time (ordered store calls), local recovery as the
/// seed chose.
pub fn lsm_config(local_dir: &Path) -> RocksDbConfig {
    RocksDbConfig {
        local_dir: local_dir.into(),
        transfer_concurrency: 1,
        block_cache_bytes: 1 << 20,
        write_buffer_bytes: 1 << 20,
        direct_io: false,
        auto_compaction: false,
        local_recovery_dir: local_recovery(local_dir),
        ..RocksDbConfig::default()
    }
}

/// Subtask `subtask` of `parallelism` of operator `op` (an index of `OPS`).
pub fn identity(op: usize, parallelism: u32, subtask: u32) -> SubtaskIdentity {
    SubtaskIdentity::new(OPS[op], MAX_P, parallelism, subtask).expect("identity")
}

/// The subtask of `parallelism` owning `key`.
pub fn owner(key: u64, parallelism: u32) -> u32 {
    let mut bytes = Vec::new();
    key.encode(&mut bytes);
    let kg = assign_to_key_group(&bytes, MAX_P).expect("max parallelism");
    operator_index_for_key_group(MAX_P, parallelism, kg).expect("key group")
}

impl Task {
    /// Where this subtask's restore read its files (local copies in seeds with local recovery).
    pub fn restore_sources(&self) -> statebackend::snapshot::RestoreSources {
        on!(&self.backend, b => b.restore_sources().clone())
    }

    /// A new, empty subtask.
    pub fn new(op: usize, parallelism: u32, subtask: u32, dir: &Path) -> Self {
        let backend = match op {
            0 => {
                let mut heap =
                    HeapKeyedStateBackend::new(identity(0, parallelism, subtask), heap_config(dir))
                        .expect("heap");
                if let Some(recovery) = in_process(dir) {
                    heap.set_in_process_recovery(&recovery);
                }
                Backend::Heap(Box::new(heap))
            }
            _ => Backend::Lsm(Box::new(
                RocksDbKeyedStateBackend::new(identity(1, parallelism, subtask), lsm_config(dir))
                    .expect("lsm"),
            )),
        };
        Task {
            op,
            subtask,
            backend,
        }
    }

    /// A subtask of a failover restored from `handles` (of its operator) in `mode`: as
    /// [`Task::restore`], the heap backend from its in-process copy where the seed keeps them and the
    /// handle matches.
    pub async fn failover(
        op: usize,
        parallelism: u32,
        subtask: u32,
        dir: &Path,
        storage: &CheckpointStorage,
        handles: &[KeyedStateHandle],
        mode: RestoreMode,
    ) -> Result<Self> {
        let Some(recovery) = in_process(dir).filter(|_| op == 0) else {
            return Self::restore(op, parallelism, subtask, dir, storage, handles, mode).await;
        };
        let heap = HeapKeyedStateBackend::restore_in_process(
            identity(0, parallelism, subtask),
            heap_config(dir),
            storage,
            handles,
            mode,
            &recovery,
        )
        .await?;
        Ok(Task {
            op,
            subtask,
            backend: Backend::Heap(Box::new(heap)),
        })
    }

    /// A subtask restored from `handles` (of its operator) in `mode`.
    pub async fn restore(
        op: usize,
        parallelism: u32,
        subtask: u32,
        dir: &Path,
        storage: &CheckpointStorage,
        handles: &[KeyedStateHandle],
        mode: RestoreMode,
    ) -> Result<Self> {
        let backend = match op {
            0 => Backend::Heap(Box::new(
                HeapKeyedStateBackend::restore(
                    identity(0, parallelism, subtask),
                    heap_config(dir),
                    storage,
                    handles,
                    mode,
                )
                .await?,
            )),
            _ => Backend::Lsm(Box::new(
                RocksDbKeyedStateBackend::restore(
                    identity(1, parallelism, subtask),
                    lsm_config(dir),
                    storage,
                    handles,
                    mode,
                )
                .await?,
            )),
        };
        Ok(Task {
            op,
            subtask,
            backend,
        })
    }

    /// Writes `key`'s value at event time `now` (the TTL watermark moves there first).
    pub fn put(&mut self, key: u64, value: u64, now: u64) -> Result<()> {
        on!(&mut self.backend, b => {
            let s = b.value_state(&desc())?;
            let e = b.value_state(&ttl_desc())?;
            let t = b.timer_service(&timers())?;
            b.set_ttl_watermark(now);
            b.set_current_key(key)?;
            e.update(&mut **b, &VoidNamespace, value)?;
            if let Some(old) = s.value(&**b, &VoidNamespace)? {
                t.delete(&mut **b, TimeDomain::EventTime, &VoidNamespace, old)?;
            }
            t.register_event_time(&mut **b, &VoidNamespace, value)?;
            s.update(&mut **b, &VoidNamespace, value)
        })
    }

    /// Every key and value of `v`, checked against the timers (which it fires, in calls of 7: a restored
    /// copy's only), and of `e` read at event time `at`.
    ///
    /// # Errors
    /// [`Error::IllegalState`] if the timers are not one per key at its value.
    pub fn read_all(&mut self, at: u64) -> Result<(BTreeMap<u64, u64>, BTreeMap<u64, u64>)> {
        on!(&mut self.backend, b => {
            let s = b.value_state(&desc())?;
            let e = b.value_state(&ttl_desc())?;
            b.set_ttl_watermark(at);
            let mut live = BTreeMap::new();
            for k in e.keys_with_state(&**b, &VoidNamespace)? {
                b.set_current_key(k)?;
                if let Some(v) = e.value(&**b, &VoidNamespace)? {
                    live.insert(k, v);
                }
            }
            let mut out = BTreeMap::new();
            for k in s.keys_with_state(&**b, &VoidNamespace)? {
                b.set_current_key(k)?;
                if let Some(v) = s.value(&**b, &VoidNamespace)? {
                    out.insert(k, v);
                }
            }
            let t = b.timer_service(&timers())?;
            let mut fired = BTreeMap::new();
            let mut last = 0;
            loop {
                let more = t.fire_event_time(&mut **b, u64::MAX, 7, |_, timer| {
                    if timer.timestamp < last || fired.insert(timer.key, timer.timestamp).is_some() {
                        return Err(Error::IllegalState(format!("timer {timer:?} out of order or twice")));
                    }
                    last = timer.timestamp;
                    Ok(())
                })?;
                if more == Fired::Done {
                    break;
                }
            }
            if fired != out {
                return Err(Error::IllegalState(format!(
                    "{} timers for {} keys: the timers do not mirror the state",
                    fired.len(),
                    out.len()
                )));
            }
            Ok((out, live))
        })
    }

    /// A full manual compaction of an LSM task's column families (deterministic: one thread, the same
    /// input files): the next checkpoint uploads the merged files and no longer references the old ones.
    pub fn compact(&self) {
        if let Backend::Lsm(b) = &self.backend {
            b.compact().expect("compaction");
        }
    }

    pub fn snapshot(&mut self, id: u64, storage: &CheckpointStorage) -> Result<PendingSnapshot> {
        on!(&mut self.backend, b => b.snapshot(id, storage))
    }

    pub fn savepoint(
        &mut self,
        id: u64,
        target: &CheckpointStorage,
        format: SavepointFormat,
    ) -> Result<PendingSnapshot> {
        on!(&mut self.backend, b => b.savepoint(id, target, format))
    }

    pub fn notify_complete(&mut self, id: u64) {
        on!(&mut self.backend, b => b.notify_checkpoint_complete(id))
    }

    pub fn notify_aborted(&mut self, id: u64) {
        on!(&mut self.backend, b => b.notify_checkpoint_aborted(id))
    }

    /// The acknowledgement of this task with `result`.
    pub fn ack(&self, result: &SnapshotResult) -> TaskStateSnapshot {
        TaskStateSnapshot {
            operator_id: OPS[self.op].into(),
            subtask_index: self.subtask,
            keyed_state: Some(result.handle.clone()),
            ..Default::default()
        }
    }
}

/// The coordinator settings of a job with these parallelisms.
pub fn job_config(
    parallelism: [u32; 2],
    retained: usize,
    checkpoint_timeout: Duration,
) -> CoordinatorConfig {
    CoordinatorConfig {
        operators: OPS
            .iter()
            .zip(parallelism)
            .map(|(op, p)| OperatorTasks::keyed(*op, p))
            .collect(),
        retained_checkpoints: retained,
        checkpoint_timeout,
        allow_non_restored_state: false,
    }
}

/// The state of checkpoint (or savepoint) `meta` restored at parallelism 1, `e` read at event time `at`.
/// A canonical savepoint of the LSM operator is restored on the heap backend (either backend reads it).
pub async fn restored_model(
    storage: &CheckpointStorage,
    meta: &CheckpointMetadata,
    dir: &Path,
    at: u64,
) -> Result<Restored> {
    let (mut model, mut live) = Restored::default();
    for (op, name) in OPS.iter().enumerate() {
        let handles = meta.keyed_handles(name);
        let canonical = handles.iter().all(|h| h.format == HandleFormat::KeyedFile);
        let mut task = if op == 1 && canonical && meta.kind == SnapshotKind::Savepoint {
            Task {
                op,
                subtask: 0,
                backend: Backend::Heap(Box::new(
                    HeapKeyedStateBackend::restore(
                        identity(1, 1, 0),
                        HeapConfig::default(),
                        storage,
                        &handles,
                        RestoreMode::NoClaim,
                    )
                    .await?,
                )),
            }
        } else {
            Task::restore(op, 1, 0, dir, storage, &handles, RestoreMode::NoClaim).await?
        };
        let (values, ttl_values) = task.read_all(at)?;
        model.extend(values.into_iter().map(|(k, v)| ((op, k), v)));
        live.extend(ttl_values.into_iter().map(|(k, v)| ((op, k), v)));
    }
    Ok((model, live))
}
