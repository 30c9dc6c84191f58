//! Local recovery (`docs/local-recovery.md`): a same-range restore of the latest checkpoint read from the
//! local copies against the same restore read from checkpoint storage, for both backends, in one run.
//! Checkpoint storage is an object store behind a wrapper that counts the bytes it returns
//! (`tests/common/faulty.rs`): in memory by default, so "remote" is every byte through `object_store`'s
//! API without a network; with `STATEBACKEND_TEST_S3_URL` (and `--features aws`; `.
//! scripts/s3-test-server.sh` starts a server and sets it) the S3 server. After the timings the bench
//! prints the bytes each restore read from storage and where its files came from.
//!
//! - `rocksdb_restore/{remote,local}`: `SB_LR_KEYS` keys (default 1M; 5M is about 1 GB of SSTs) of
//!   200-byte incompressible values, two checkpoints, restore of the second into a new backend.
//! - `heap_restore/{remote,local,in_process}`: 1M `u64` keys, the same; `in_process` takes the version the
//!   checkpoint kept in memory (`heap::InProcessRecovery`) after the backend that wrote it is dropped.
//!
//! Each timed restore ends with the state registered (the heap kind decodes its records then), so the
//! state is usable.
//!
//! Run: `cargo bench --bench local_recovery`. Targets: local restores read 0 bytes from checkpoint
//! storage; a 1 GB RocksDB state reopened from its local copy in at most 2 s; a heap restore of 1M keys
//! in the process in at most 1 ms.

#![allow(missing_docs, reason = "criterion macros generate undocumented items")]
#![allow(clippy::unwrap_used, reason = "a bench fails loudly")]

#[path = "../tests/common/faulty.rs"]
#[allow(dead_code, reason = "the bench counts bytes; it injects no fault")]
mod faulty;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use rand::{Rng, SeedableRng};
use statebackend::heap::InProcessRecovery;
use statebackend::rocksdb::RocksDbConfig;
use statebackend::*;

const NS: VoidNamespace = VoidNamespace;

fn lsm_keys() -> u64 {
    std::env::var("SB_LR_KEYS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000)
}

fn config(kind: BackendKind, work: &Path, local: Option<&Path>) -> StateBackendConfig {
    let mut config = StateBackendConfig {
        kind,
        rocksdb: RocksDbConfig {
            local_dir: work.to_path_buf(),
            direct_io: false,
            ..RocksDbConfig::default()
        },
        ..StateBackendConfig::default()
    };
    config.heap.local_recovery_dir = local.map(Path::to_path_buf);
    config.rocksdb.local_recovery_dir = local.map(Path::to_path_buf);
    config
}

/// A job of one subtask of `kind` with `keys` keys written twice, checkpointed after each round; its
/// storage, the counting store under it and the latest checkpoint.
struct Job {
    store: Arc<faulty::FaultyStore>,
    storage: CheckpointStorage,
    latest: CheckpointMetadata,
}

/// Checkpoint storage of a new job behind a byte-counting wrapper: the S3 server of
/// `STATEBACKEND_TEST_S3_URL` (`s3://bucket/prefix`) if set, else memory.
fn counted_storage() -> (Arc<faulty::FaultyStore>, CheckpointStorage) {
    let Ok(url) = std::env::var("STATEBACKEND_TEST_S3_URL") else {
        let store = faulty::FaultyStore::new();
        return (
            store.clone(),
            CheckpointStorage::new(store, "local-recovery").unwrap(),
        );
    };
    // A job id no earlier run used: buckets outlive runs.
    let job = format!(
        "local-recovery-{}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    );
    let s3 = CheckpointStorage::from_url(&url, &job, &StorageConfig::default())
        .expect("an s3:// URL needs `--features aws` and the AWS_* variables");
    let store = faulty::FaultyStore::over(s3.object_store().clone());
    let prefix = url
        .strip_prefix("s3://")
        .and_then(|rest| rest.split_once('/'))
        .map_or("", |(_, prefix)| prefix);
    let storage = CheckpointStorage::with_prefix(
        store.clone(),
        &object_store::path::Path::from(prefix),
        &job,
    )
    .unwrap();
    (store, storage)
}

fn job(
    rt: &tokio::runtime::Runtime,
    kind: BackendKind,
    keys: u64,
    work: &Path,
    local: &Path,
    recovery: &InProcessRecovery,
) -> Job {
    rt.block_on(async {
        let (store, storage) = counted_storage();
        let mut coordinator = CheckpointCoordinator::open(
            storage.clone(),
            CoordinatorConfig::single_operator("op", 1, 1),
        )
        .await
        .unwrap();
        let identity = SubtaskIdentity::new("op", 128, 1, 0).unwrap();
        let mut b: StateBackend<u64> =
            StateBackend::new(&identity, &config(kind, work, Some(local))).unwrap();
        b.set_in_process_recovery(recovery);
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        for round in 0..2u64 {
            if kind == BackendKind::RocksDb {
                let s = b
                    .value_state(&ValueStateDescriptor::<VoidNamespace, Vec<u8>>::new("v"))
                    .unwrap();
                // The second round rewrites 1% of the keys.
                let step = if round == 0 { 1 } else { 100 };
                for k in (0..keys).step_by(step) {
                    let mut v = vec![0u8; 200];
                    rng.fill(v.as_mut_slice());
                    b.set_current_key(k).unwrap();
                    s.update(&mut b, &NS, v).unwrap();
                }
            } else {
                let s = b
                    .value_state(&ValueStateDescriptor::<VoidNamespace, u64>::new("v"))
                    .unwrap();
                for k in 0..keys {
                    b.set_current_key(k).unwrap();
                    s.update(&mut b, &NS, k + round).unwrap();
                }
            }
            let id = coordinator.trigger().await.unwrap();
            let result = b.snapshot(id, &storage).unwrap().run().await.unwrap();
            coordinator
                .acknowledge(
                    id,
                    TaskStateSnapshot::keyed("op", 0, result.handle),
                    Some(result.metrics),
                )
                .await
                .unwrap();
            b.notify_checkpoint_complete(id);
        }
        Job {
            store,
            storage,
            latest: coordinator.store().latest().unwrap().clone(),
        }
    })
}

/// Where a restore of the bench reads the checkpoint from.
#[derive(Clone, Copy)]
enum Source<'a> {
    Storage,
    Local(&'a Path),
    InProcess(&'a InProcessRecovery),
}

fn restore(
    rt: &tokio::runtime::Runtime,
    job: &Job,
    kind: BackendKind,
    work: &Path,
    from: Source<'_>,
) -> StateBackend<u64> {
    let identity = SubtaskIdentity::new("op", 128, 1, 0).unwrap();
    // NO_CLAIM: a local restore leaves the copies it read for the next iteration.
    let mode = RestoreMode::NoClaim;
    let restored = match from {
        Source::Storage => rt.block_on(StateBackend::restore_checkpoint(
            &identity,
            &config(kind, work, None),
            &job.storage,
            &job.latest,
            mode,
        )),
        Source::Local(local) => rt.block_on(StateBackend::restore_checkpoint(
            &identity,
            &config(kind, work, Some(local)),
            &job.storage,
            &job.latest,
            mode,
        )),
        Source::InProcess(recovery) => rt.block_on(StateBackend::restore_in_process(
            &identity,
            &config(kind, work, None),
            &job.storage,
            &job.latest.keyed_handles("op"),
            mode,
            recovery,
        )),
    };
    restored.unwrap()
}

fn bench_kind(c: &mut Criterion, kind: BackendKind, keys: u64, samples: usize) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (work, local) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let recovery = InProcessRecovery::new();
    let job = job(&rt, kind, keys, work.path(), local.path(), &recovery);
    let name = format!("{kind}_restore");
    let mut group = c.benchmark_group(&name);
    group.sample_size(samples);
    group.measurement_time(Duration::from_secs(20));
    let mut report = Vec::new();
    let mut sources = vec![
        ("remote", Source::Storage),
        ("local", Source::Local(local.path())),
    ];
    if kind == BackendKind::Heap {
        sources.push(("in_process", Source::InProcess(&recovery)));
    }
    for (label, from) in sources {
        job.store.take_bytes_read();
        let mut runs = 0u64;
        let mut last_sources = None;
        group.bench_function(label, |b| {
            b.iter_batched(
                || (),
                |()| {
                    let mut restored = restore(&rt, &job, kind, work.path(), from);
                    // Registering the state decodes the heap kind's restored records: the state is
                    // usable from here.
                    if kind == BackendKind::Heap {
                        let desc = ValueStateDescriptor::<VoidNamespace, u64>::new("v");
                        restored.value_state(&desc).unwrap();
                    } else {
                        let desc = ValueStateDescriptor::<VoidNamespace, Vec<u8>>::new("v");
                        restored.value_state(&desc).unwrap();
                    }
                    runs += 1;
                    last_sources = Some(restored.restore_sources().clone());
                    restored
                },
                // The restored backend (a RocksDB instance directory) is dropped outside the timing.
                BatchSize::PerIteration,
            )
        });
        let read = job.store.take_bytes_read();
        report.push((label, read / runs.max(1), last_sources));
    }
    group.finish();
    for (label, read, sources) in report {
        println!(
            "{name}/{label}: {read} bytes read from checkpoint storage per restore; {sources:?}"
        );
    }
}

fn local_recovery(c: &mut Criterion) {
    bench_kind(c, BackendKind::Heap, 1_000_000, 10);
    if cfg!(feature = "rocksdb") {
        bench_kind(c, BackendKind::RocksDb, lsm_keys(), 10);
    }
}

criterion_group!(benches, local_recovery);
criterion_main!(benches);
