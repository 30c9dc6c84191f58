//! Shared helpers of the integration tests: backend factories, the checkpoint cycle, restore, faults.

#![allow(clippy::unwrap_used, reason = "tests fail loudly on unexpected errors")]
#![allow(dead_code, reason = "each test binary uses part of the helpers")]

pub mod clocked;
pub mod faulty;

use statebackend::heap::{HeapConfig, HeapKeyedStateBackend};
use statebackend::key_group::{assign_to_key_group, operator_index_for_key_group};
use statebackend::rocksdb::RocksDbConfig;
#[cfg(feature = "rocksdb")]
use statebackend::rocksdb::RocksDbKeyedStateBackend;
use statebackend::*;

/// Opens a coordinator on `storage` for one operator `op` of `tasks` subtasks, retaining `retained`
/// checkpoints.
pub async fn coordinator(
    storage: &CheckpointStorage,
    retained: usize,
    tasks: usize,
) -> CheckpointCoordinator {
    CheckpointCoordinator::open(
        storage.clone(),
        CoordinatorConfig::single_operator("op", tasks as u32, retained),
    )
    .await
    .unwrap()
}

/// The acknowledgement of subtask `index` of operator `op` with `result`'s handle.
pub fn ack(index: u32, result: &SnapshotResult) -> TaskStateSnapshot {
    TaskStateSnapshot {
        operator_id: "op".into(),
        subtask_index: index,
        keyed_state: Some(result.handle.clone()),
        ..Default::default()
    }
}

/// The value state most tests use: `counts`, `u64` keys and values, void namespace.
pub fn counts() -> ValueStateDescriptor<VoidNamespace, u64> {
    ValueStateDescriptor::new("counts")
}

/// Sets every key of `keys` that `b` owns to `value` in [`counts`].
pub fn fill<B: KeyedStateBackend<u64>>(b: &mut B, keys: impl IntoIterator<Item = u64>, value: u64) {
    let s = b.value_state(&counts()).unwrap();
    for k in keys {
        if b.set_current_key(k).is_ok() {
            s.update(b, &VoidNamespace, value).unwrap();
        }
    }
}

/// Whether `path` (relative to the job root) exists in `storage`.
pub async fn exists(storage: &CheckpointStorage, path: &str) -> bool {
    use object_store::ObjectStoreExt;
    storage
        .object_store()
        .head(&storage.path(path))
        .await
        .is_ok()
}

/// Triggers a checkpoint and runs every backend's snapshot, without acknowledging.
pub async fn snapshot_all<B: KeyedStateBackend<u64>>(
    coord: &mut CheckpointCoordinator,
    backends: &mut [B],
) -> (u64, Vec<SnapshotResult>) {
    let id = coord.trigger().await.unwrap();
    let storage = coord.storage().clone();
    let mut results = Vec::new();
    for b in backends {
        results.push(b.snapshot(id, &storage).unwrap().run().await.unwrap());
    }
    (id, results)
}

/// A coordinator of operator `op` with `tasks` subtasks whose clock the test moves (it starts at the
/// system time, as the in-memory store stamps files).
pub async fn clocked(
    storage: &CheckpointStorage,
    retained: usize,
    tasks: u32,
) -> (CheckpointCoordinator, std::sync::Arc<ManualClock>) {
    let clock = std::sync::Arc::new(ManualClock::new(std::time::SystemTime::now()));
    let coord = CheckpointCoordinator::open_with_clock(
        storage.clone(),
        CoordinatorConfig::single_operator("op", tasks, retained),
        clock.clone(),
    )
    .await
    .unwrap();
    (coord, clock)
}

/// Every key and value of [`counts`].
pub fn read_counts<B: KeyedStateBackend<u64>>(b: &mut B) -> std::collections::BTreeMap<u64, u64> {
    read_all(b, &counts())
}

/// Every key and value of the value state `desc` (void namespace).
pub fn read_all<B: KeyedStateBackend<u64>>(
    b: &mut B,
    desc: &ValueStateDescriptor<VoidNamespace, u64>,
) -> std::collections::BTreeMap<u64, u64> {
    let s = b.value_state(desc).unwrap();
    let mut out = std::collections::BTreeMap::new();
    for k in s.keys_with_state(b, &VoidNamespace).unwrap() {
        b.set_current_key(k).unwrap();
        out.insert(k, s.value(b, &VoidNamespace).unwrap().unwrap());
    }
    out
}

/// Paths (relative to the job root) of the job's objects below `dir` (`None`: all), sorted.
pub async fn objects(storage: &CheckpointStorage, dir: Option<&str>) -> Vec<String> {
    use futures::TryStreamExt;
    let prefix = format!("{}/", storage.path("").as_ref().trim_end_matches('/'));
    let listed = dir.map(|d| storage.path(d));
    let mut v: Vec<String> = storage
        .object_store()
        .list(listed.as_ref())
        .map_ok(|m| m.location.to_string())
        .try_collect::<Vec<_>>()
        .await
        .unwrap()
        .into_iter()
        .filter_map(|p| p.strip_prefix(&prefix).map(str::to_string))
        .collect();
    v.sort();
    v
}

/// Every file referenced by a retained checkpoint exists with the recorded size (and, with `verify_crc`,
/// the recorded CRC32).
pub async fn assert_retained_files_intact(coordinator: &CheckpointCoordinator, verify_crc: bool) {
    use object_store::ObjectStoreExt;
    let storage = coordinator.storage();
    for meta in coordinator.store().checkpoints() {
        for f in meta.files() {
            let get = storage.object_store().get(&storage.path(&f.path)).await;
            let get = get.unwrap_or_else(|e| {
                panic!(
                    "chk-{} references missing {}: {e}",
                    meta.checkpoint_id, f.path
                )
            });
            assert_eq!(get.meta.size, f.size_bytes, "{}", f.path);
            if verify_crc {
                let bytes = get.bytes().await.unwrap();
                assert_eq!(crc32fast::hash(&bytes), f.crc32, "{}", f.path);
            }
        }
    }
}

/// A multi-threaded runtime for tests that drive async phases from synchronous code.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

/// The backends this build has: heap, and LSM with the `rocksdb` feature.
pub fn backend_kinds() -> Vec<BackendKind> {
    let mut kinds = vec![BackendKind::Heap];
    if cfg!(feature = "rocksdb") {
        kinds.push(BackendKind::RocksDb);
    }
    kinds
}

/// Settings of `kind` working in `dir`, buffered I/O (temporary directories may refuse `O_DIRECT`).
pub fn backend_config(kind: BackendKind, dir: &std::path::Path) -> StateBackendConfig {
    StateBackendConfig {
        kind,
        rocksdb: RocksDbConfig {
            local_dir: dir.to_path_buf(),
            direct_io: false,
            ..RocksDbConfig::default()
        },
        ..StateBackendConfig::default()
    }
}

/// Heap settings whose every checkpoint is one full private keyed file under `chk-<n>/` (incremental
/// checkpoints off): for tests of what becomes of a checkpoint's own files.
pub fn full_files() -> HeapConfig {
    HeapConfig {
        incremental: false,
        ..HeapConfig::default()
    }
}

/// Subtask `index` of `parallelism` of operator `op`.
pub fn identity(max_parallelism: u32, parallelism: u32, index: u32) -> SubtaskIdentity {
    SubtaskIdentity::new("op", max_parallelism, parallelism, index).expect("identity")
}

/// Settings of a RocksDB backend working in the system's temporary directory (each backend creates and
/// removes a directory of its own there).
pub fn lsm_config() -> RocksDbConfig {
    RocksDbConfig {
        local_dir: std::env::temp_dir().join("statebackend-tests"),
        ..RocksDbConfig::default()
    }
}

/// A new RocksDB backend of subtask `index` of `parallelism`.
#[cfg(feature = "rocksdb")]
pub fn lsm<K: StateKey>(
    max_parallelism: u32,
    parallelism: u32,
    index: u32,
) -> RocksDbKeyedStateBackend<K> {
    RocksDbKeyedStateBackend::new(identity(max_parallelism, parallelism, index), lsm_config())
        .expect("lsm backend")
}

/// Snapshots every backend into checkpoint `id` and completes it through the coordinator.
pub async fn checkpoint<K: StateKey, B: KeyedStateBackend<K>>(
    coordinator: &mut CheckpointCoordinator,
    backends: &mut [B],
) -> CheckpointStats {
    let id = coordinator.trigger().await.expect("trigger");
    let storage = coordinator.storage().clone();
    let pending: Vec<_> = backends
        .iter_mut()
        .map(|b| b.snapshot(id, &storage).expect("sync phase"))
        .collect();
    let mut stats = None;
    for (i, p) in pending.into_iter().enumerate() {
        let result = p.run().await.expect("async phase");
        let task = TaskStateSnapshot {
            operator_id: "op".into(),
            subtask_index: i as u32,
            keyed_state: Some(result.handle),
            ..Default::default()
        };
        stats = coordinator
            .acknowledge(id, task, Some(result.metrics))
            .await
            .expect("acknowledge")
            .completed();
    }
    backends
        .iter_mut()
        .for_each(|b| b.notify_checkpoint_complete(id));
    stats.expect("the last acknowledgement completes the checkpoint")
}

/// An RocksDB backend of subtask 0 of 1 (operator `op`, max parallelism 128) restored from `meta` in `mode`.
#[cfg(feature = "rocksdb")]
pub async fn restore_lsm(
    storage: &CheckpointStorage,
    meta: &CheckpointMetadata,
    mode: RestoreMode,
) -> RocksDbKeyedStateBackend<u64> {
    RocksDbKeyedStateBackend::restore(
        identity(128, 1, 0),
        lsm_config(),
        storage,
        &handles(meta),
        mode,
    )
    .await
    .unwrap()
}

/// Keyed state handles of a checkpoint.
pub fn handles(meta: &CheckpointMetadata) -> Vec<KeyedStateHandle> {
    meta.tasks
        .iter()
        .filter_map(|t| t.keyed_state.clone())
        .collect()
}

/// Restores `parallelism` backends from checkpoint metadata (CLAIM).
pub async fn restore<K: StateKey>(
    storage: &CheckpointStorage,
    meta: &CheckpointMetadata,
    max_parallelism: u32,
    parallelism: u32,
) -> Result<Vec<HeapKeyedStateBackend<K>>> {
    restore_in_mode(
        storage,
        meta,
        max_parallelism,
        parallelism,
        RestoreMode::Claim,
    )
    .await
}

/// Restores `parallelism` backends from checkpoint metadata in `mode`.
pub async fn restore_in_mode<K: StateKey>(
    storage: &CheckpointStorage,
    meta: &CheckpointMetadata,
    max_parallelism: u32,
    parallelism: u32,
    mode: RestoreMode,
) -> Result<Vec<HeapKeyedStateBackend<K>>> {
    let handles = handles(meta);
    let mut out = Vec::new();
    for i in 0..parallelism {
        out.push(
            HeapKeyedStateBackend::restore(
                identity(max_parallelism, parallelism, i),
                HeapConfig::default(),
                storage,
                &handles,
                mode,
            )
            .await?,
        );
    }
    Ok(out)
}

/// The subtask of `parallelism` that owns `key`.
pub fn owner<K: Codec>(key: &K, max_parallelism: u32, parallelism: u32) -> usize {
    let mut bytes = Vec::new();
    key.encode(&mut bytes);
    operator_index_for_key_group(
        max_parallelism,
        parallelism,
        assign_to_key_group(&bytes, max_parallelism).unwrap(),
    )
    .unwrap() as usize
}

/// Takes checkpoint `id` (or, with `savepoint`, a canonical savepoint) of every one of `backends` into
/// `storage`, then replaces them with `parallelism` subtasks of max parallelism `max_parallelism` restored
/// from it (NO_CLAIM) with `config`, which may name the other backend kind (a canonical savepoint switches).
pub async fn snapshot_and_restore(
    backends: &mut Vec<StateBackend<u64>>,
    storage: &CheckpointStorage,
    id: u64,
    savepoint: bool,
    config: &StateBackendConfig,
    max_parallelism: u32,
    parallelism: u32,
) {
    let pending: Vec<_> = backends
        .iter_mut()
        .map(|b| {
            if savepoint {
                b.savepoint(id, storage, SavepointFormat::Canonical)
            } else {
                b.snapshot(id, storage)
            }
            .unwrap()
        })
        .collect();
    let mut handles = Vec::new();
    for p in pending {
        handles.push(p.run().await.unwrap().handle);
    }
    backends.clear();
    for index in 0..parallelism {
        let identity = identity(max_parallelism, parallelism, index);
        let b = StateBackend::restore(&identity, config, storage, &handles, RestoreMode::NoClaim)
            .await
            .unwrap();
        backends.push(b);
    }
}

/// The kind a canonical savepoint of a `kind` backend switches to: the other one, or the heap when this
/// build has no RocksDB.
pub fn switched(kind: BackendKind) -> BackendKind {
    match kind {
        BackendKind::Heap if backend_kinds().len() > 1 => BackendKind::RocksDb,
        _ => BackendKind::Heap,
    }
}
