//! Heap snapshot phases. Synchronous phase at 100k, 1M and 10M entries (it must not grow with the state);
//! asynchronous phase throughput (uncompressed state bytes per second) into a local directory, with and
//! without fsync, and the raw encoding rate without storage.

#![allow(missing_docs, reason = "criterion macros generate undocumented items")]

use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use statebackend::heap::{HeapConfig, HeapKeyedStateBackend};
use statebackend::*;

fn filled(entries: u64) -> HeapKeyedStateBackend<u64> {
    let identity = SubtaskIdentity::new("bench", 128, 1, 0).expect("identity");
    let mut b = HeapKeyedStateBackend::new(identity, HeapConfig::default()).expect("backend");
    let s = b
        .value_state(&ValueStateDescriptor::<VoidNamespace, u64>::new("v"))
        .expect("state");
    for k in 0..entries {
        b.set_current_key(k).expect("key");
        s.update(&mut b, &VoidNamespace, k).expect("update");
    }
    b
}

fn sync_phase(c: &mut Criterion) {
    let storage = CheckpointStorage::in_memory("bench").expect("storage");
    let mut g = c.benchmark_group("sync_phase");
    for entries in [100_000u64, 1_000_000, 10_000_000] {
        let mut b = filled(entries);
        let mut id = 0;
        g.bench_function(format!("{entries}_entries"), |bench| {
            // Dropping the pending snapshot (releasing the frozen version) is not part of the sync phase.
            // Checkpoint ids never repeat: each snapshot takes the next one.
            bench.iter_with_large_drop(|| {
                id += 1;
                b.snapshot(id, &storage).expect("snapshot")
            })
        });
    }
    g.finish();
}

fn async_phase(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("rt");
    let mut b = filled(1_000_000);
    let dir = tempfile::tempdir().expect("dir");
    // Checkpoint ids never repeat: every snapshot of `b` takes the next one.
    let mut id = 1;
    let probe = rt
        .block_on(
            b.snapshot(id, &CheckpointStorage::in_memory("probe").expect("s"))
                .expect("s")
                .run(),
        )
        .expect("probe");
    let mut g = c.benchmark_group("async_phase_1M_entries");
    g.sample_size(10);
    g.throughput(Throughput::Bytes(probe.metrics.state_bytes));
    for (name, fsync) in [("local_dir", false), ("local_dir_fsync", true)] {
        let storage = CheckpointStorage::local(
            dir.path(),
            name,
            &StorageConfig {
                fsync,
                ..StorageConfig::default()
            },
        )
        .expect("storage");
        g.bench_function(name, |bench| {
            bench.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    id += 1;
                    let pending = b.snapshot(id, &storage).expect("snapshot");
                    let start = Instant::now();
                    rt.block_on(pending.run()).expect("async phase");
                    total += start.elapsed();
                }
                total
            })
        });
    }
    let memory = CheckpointStorage::in_memory("mem").expect("storage");
    g.bench_function("in_memory", |bench| {
        bench.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                id += 1;
                let pending = b.snapshot(id, &memory).expect("snapshot");
                let start = Instant::now();
                rt.block_on(pending.run()).expect("async phase");
                total += start.elapsed();
            }
            total
        })
    });
    g.finish();
}

criterion_group!(benches, sync_phase, async_phase);
criterion_main!(benches);
