//! Rescale of the RocksDB backend (`docs/lsm.md`, "Restore"): a job of 2 subtasks checkpoints
//! `SB_RESCALE_KEYS` keys (default 5M; 200-byte incompressible values, about 1 GB of SST files in all),
//! then, in one run:
//!
//! - `rocksdb_rescale/same_range`: subtask 0 of 2 restored at parallelism 2 (one handle, no clipping);
//! - `rocksdb_rescale/2_to_3`: subtask 1 of 3 restored from the same checkpoint, the slowest subtask of a
//!   rescale to 3: it overlaps both handles, fetches the SST files of each that can hold its key groups,
//!   imports them as they are into a new database, one column family per state, and clips it with
//!   `delete_range` (`docs/lsm.md`, "Restore").
//!
//! Each iteration writes its files into the page cache unsynced, and its database starts compacting as
//! soon as it opens (its backend is dropped after the timing). Without more, the kernel's writeback of
//! earlier iterations' files lands in later iterations, unevenly (2 -> 3 over same range: 1.2x to 2.1x
//! in four runs): `settle` writes everything back before each timed restore (`sync`, untimed).
//!
//! Checkpoint storage is in memory, so both read the same bytes through `object_store` without a network.
//! Target: `2_to_3` at most 1.3 times `same_range`. Run: `cargo bench --bench rescale`.

#![allow(missing_docs, reason = "criterion macros generate undocumented items")]
#![allow(clippy::unwrap_used, reason = "a bench fails loudly")]

use std::path::Path;
use std::time::Duration;

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use rand::{Rng, SeedableRng};
use statebackend::rocksdb::RocksDbConfig;
use statebackend::*;

const NS: VoidNamespace = VoidNamespace;
const MAX_PARALLELISM: u32 = 128;

/// `SB_RESCALE_KEYS`, else 5M under `cargo bench`; `cargo test --all-targets` runs this bench once
/// without `--bench` in a debug build, where 20,000 keys check that it works.
fn keys() -> u64 {
    let measuring = std::env::args().any(|a| a == "--bench");
    std::env::var("SB_RESCALE_KEYS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if measuring { 5_000_000 } else { 20_000 })
}

fn config(work: &Path) -> StateBackendConfig {
    StateBackendConfig {
        kind: BackendKind::RocksDb,
        rocksdb: RocksDbConfig {
            local_dir: work.to_path_buf(),
            direct_io: false,
            ..RocksDbConfig::default()
        },
        ..StateBackendConfig::default()
    }
}

/// Checkpoint 1 of a job of 2 subtasks holding `keys` keys, each in the subtask its key group routes to.
fn job(
    rt: &tokio::runtime::Runtime,
    keys: u64,
    work: &Path,
) -> (CheckpointStorage, CheckpointMetadata) {
    rt.block_on(async {
        let storage = CheckpointStorage::in_memory("rescale").unwrap();
        let mut coordinator = CheckpointCoordinator::open(
            storage.clone(),
            CoordinatorConfig::single_operator("op", 2, 1),
        )
        .await
        .unwrap();
        let router = KeyGroupRouter::new(MAX_PARALLELISM, 2).unwrap();
        let desc = ValueStateDescriptor::<VoidNamespace, Vec<u8>>::new("v");
        let id = coordinator.trigger().await.unwrap();
        for subtask in 0..2 {
            let identity = SubtaskIdentity::new("op", MAX_PARALLELISM, 2, subtask).unwrap();
            let mut b: StateBackend<u64> = StateBackend::new(&identity, &config(work)).unwrap();
            let s = b.value_state(&desc).unwrap();
            let mut rng = rand::rngs::StdRng::seed_from_u64(u64::from(subtask));
            for k in (0..keys).filter(|k| router.route(k).subtask() == subtask) {
                let mut v = vec![0u8; 200];
                rng.fill(v.as_mut_slice());
                b.set_current_key(k).unwrap();
                s.update(&mut b, &NS, v).unwrap();
            }
            let result = b.snapshot(id, &storage).unwrap().run().await.unwrap();
            coordinator
                .acknowledge(
                    id,
                    TaskStateSnapshot::keyed("op", subtask, result.handle),
                    Some(result.metrics),
                )
                .await
                .unwrap();
        }
        let latest = coordinator.store().latest().unwrap().clone();
        (storage, latest)
    })
}

/// Before each timed restore (untimed): the earlier iterations' writes, downloads and the restored
/// databases' first compactions, are written back (`sync`), so that no iteration pays the kernel's
/// writeback of another's files.
fn settle() {
    let synced = std::process::Command::new("sync").status();
    assert!(matches!(&synced, Ok(s) if s.success()), "sync: {synced:?}");
}

fn bench_rescale(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let work = tempfile::tempdir().unwrap();
    let (storage, latest) = job(&rt, keys(), work.path());
    let mut group = c.benchmark_group("rocksdb_rescale");
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(30));
    for (label, parallelism, subtask) in [("same_range", 2, 0), ("2_to_3", 3, 1)] {
        let identity = SubtaskIdentity::new("op", MAX_PARALLELISM, parallelism, subtask).unwrap();
        let mut restored_keys = 0u64;
        group.bench_function(label, |b| {
            b.iter_batched(
                settle,
                |()| {
                    rt.block_on(StateBackend::<u64>::restore_checkpoint(
                        &identity,
                        &config(work.path()),
                        &storage,
                        &latest,
                        RestoreMode::NoClaim,
                    ))
                    .unwrap()
                },
                BatchSize::PerIteration,
            );
        });
        // Checked once after the timings: every owned key is there with its value.
        let mut restored: StateBackend<u64> = rt
            .block_on(StateBackend::restore_checkpoint(
                &identity,
                &config(work.path()),
                &storage,
                &latest,
                RestoreMode::NoClaim,
            ))
            .unwrap();
        let s = restored
            .value_state(&ValueStateDescriptor::<VoidNamespace, Vec<u8>>::new("v"))
            .unwrap();
        let router = KeyGroupRouter::new(MAX_PARALLELISM, parallelism).unwrap();
        for k in (0..keys()).filter(|k| router.route(k).subtask() == subtask) {
            restored.set_current_key(k).unwrap();
            assert_eq!(s.value(&restored, &NS).unwrap().map(|v| v.len()), Some(200));
            restored_keys += 1;
        }
        println!("{label}: subtask {subtask} of {parallelism} holds {restored_keys} keys");
    }
    group.finish();
}

criterion_group!(benches, bench_rescale);
criterion_main!(benches);
