//! Canonical savepoints (`docs/savepoints.md`): write and restore throughput in bytes of uncompressed state
//! per second (the records' bytes, `SnapshotMetrics::state_bytes`), for the heap and the RocksDB backend, into
//! and from a local directory; and the heap -> LSM switch end to end (savepoint of a heap backend, restore
//! on the RocksDB backend).
//!
//! 1,000,000 `u64` keys with a 16-byte value each (`(u64, u64)`), void namespace; 10,000,000 keys too with
//! `SAVEPOINT_BENCH_10M=1` (minutes per group). Groups: `savepoint_write_<n>` and
//! `savepoint_restore_<n>` (heap, lsm; a restore ends when the state is registered again, which is when
//! the heap backend decodes the restored records into its map), `switch_heap_to_lsm_<n>`.

#![allow(missing_docs, reason = "criterion macros generate undocumented items")]

use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use statebackend::snapshot::layout::*;
use statebackend::*;

fn config(kind: BackendKind, dir: &std::path::Path) -> StateBackendConfig {
    StateBackendConfig {
        kind,
        rocksdb: rocksdb::RocksDbConfig {
            local_dir: dir.to_path_buf(),
            ..Default::default()
        },
        ..StateBackendConfig::default()
    }
}

fn identity() -> SubtaskIdentity {
    SubtaskIdentity::new("bench", 128, 1, 0).expect("identity")
}

fn filled(kind: BackendKind, dir: &std::path::Path, keys: u64) -> StateBackend<u64> {
    let mut b = StateBackend::new(&identity(), &config(kind, dir)).expect("backend");
    let s = b
        .value_state(&ValueStateDescriptor::<VoidNamespace, (u64, u64)>::new("v"))
        .expect("state");
    let all: Vec<u64> = (0..keys).collect();
    for chunk in all.chunks(4096) {
        let values: Vec<(u64, u64)> = chunk.iter().map(|k| (*k, k ^ 0x5555)).collect();
        s.update_batch(&mut b, &VoidNamespace, chunk, &values)
            .expect("fill");
    }
    b
}

/// Removes a savepoint's directory from the local storage under `root`.
fn remove_savepoint(root: &std::path::Path, id: u64) {
    let _ = std::fs::remove_dir_all(root.join("bench-job").join(savepoint_dir(id)));
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("rt");
    let mut sizes = vec![1_000_000u64];
    if std::env::var_os("SAVEPOINT_BENCH_10M").is_some() {
        sizes.push(10_000_000);
    }
    let mut kinds = vec![BackendKind::Heap];
    if cfg!(feature = "rocksdb") {
        kinds.push(BackendKind::RocksDb);
    }
    for keys in sizes {
        let label = if keys >= 10_000_000 { "10M" } else { "1M" };
        let dir = tempfile::tempdir().expect("dir");
        let root = dir.path().join("storage");
        let storage =
            CheckpointStorage::local(&root, "bench-job", &StorageConfig::default()).expect("s");
        let mut id = 0u64;
        // One canonical savepoint per kind, kept for the restore groups.
        let mut kept = Vec::new();
        let mut raw_bytes = 0;
        let mut backends = Vec::new();
        for &kind in &kinds {
            let mut b = filled(kind, dir.path(), keys);
            id += 1;
            let result = rt
                .block_on(
                    b.savepoint(id, &storage, SavepointFormat::Canonical)
                        .expect("savepoint")
                        .run(),
                )
                .expect("savepoint");
            raw_bytes = result.metrics.state_bytes;
            kept.push((kind, vec![result.handle]));
            backends.push((kind, b));
        }

        let mut g = c.benchmark_group(format!("savepoint_write_{label}"));
        g.throughput(Throughput::Bytes(raw_bytes));
        g.sample_size(10);
        for (kind, b) in &mut backends {
            g.bench_function(kind.to_string(), |bench| {
                bench.iter_custom(|iters| {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        id += 1;
                        let started = Instant::now();
                        let result = rt
                            .block_on(
                                b.savepoint(id, &storage, SavepointFormat::Canonical)
                                    .expect("savepoint")
                                    .run(),
                            )
                            .expect("savepoint");
                        total += started.elapsed();
                        assert_eq!(result.metrics.state_bytes, raw_bytes);
                        remove_savepoint(&root, id);
                    }
                    total
                })
            });
        }
        g.finish();
        drop(backends);

        let mut g = c.benchmark_group(format!("savepoint_restore_{label}"));
        g.throughput(Throughput::Bytes(raw_bytes));
        g.sample_size(10);
        // Both kinds restore the heap backend's savepoint (the same records as the RocksDB backend's).
        let handles = kept[0].1.clone();
        for &kind in &kinds {
            g.bench_function(kind.to_string(), |bench| {
                bench.iter_custom(|iters| {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        let started = Instant::now();
                        let mut b = rt
                            .block_on(StateBackend::<u64>::restore(
                                &identity(),
                                &config(kind, dir.path()),
                                &storage,
                                &handles,
                                RestoreMode::NoClaim,
                            ))
                            .expect("restore");
                        // Registering the state is part of a restore: the heap backend decodes the
                        // restored records into its map then.
                        b.value_state(&ValueStateDescriptor::<VoidNamespace, (u64, u64)>::new("v"))
                            .expect("state");
                        total += started.elapsed();
                        drop(b);
                    }
                    total
                })
            });
        }
        g.finish();

        if kinds.contains(&BackendKind::RocksDb) {
            let mut g = c.benchmark_group(format!("switch_heap_to_lsm_{label}"));
            g.throughput(Throughput::Bytes(raw_bytes));
            g.sample_size(10);
            let mut heap = filled(BackendKind::Heap, dir.path(), keys);
            g.bench_function("savepoint_then_restore", |bench| {
                bench.iter_custom(|iters| {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        id += 1;
                        let started = Instant::now();
                        let handle = rt
                            .block_on(
                                heap.savepoint(id, &storage, SavepointFormat::Canonical)
                                    .expect("savepoint")
                                    .run(),
                            )
                            .expect("savepoint")
                            .handle;
                        let lsm = rt
                            .block_on(StateBackend::<u64>::restore(
                                &identity(),
                                &config(BackendKind::RocksDb, dir.path()),
                                &storage,
                                &[handle],
                                RestoreMode::NoClaim,
                            ))
                            .expect("restore");
                        let mut lsm = lsm;
                        lsm.value_state(&ValueStateDescriptor::<VoidNamespace, (u64, u64)>::new(
                            "v",
                        ))
                        .expect("state");
                        total += started.elapsed();
                        drop(lsm);
                        remove_savepoint(&root, id);
                    }
                    total
                })
            });
            g.finish();
        }
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
