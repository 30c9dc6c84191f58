//! Batch access (`ValueState::get_batch`, `modify_batch`, `update_batch`) against per-key access on the
//! same backend and, for the heap backend, `hashbrown::HashMap` (default hasher, foldhash) per-key loops,
//! all in the same run.
//!
//! 1,000,000 `u64` keys with `u64` values, read in a shuffled order in batches of 1,024 keys (an Arrow
//! record batch). Heap groups: `get_1M` (hashbrown `get` loop, per-key `set_current_key` + `value`,
//! `get_batch`) and `rmw_1M` (hashbrown `get_mut` += 1, per-key `value` + `update`, `modify_batch` += 1).
//! LSM groups (`--features rocksdb`): `lsm_get_1M` (per-key vs batch get of all keys of a 1M-key DB) and
//! `lsm_insert_1M` (per-key `update` vs `update_batch` of 1M fresh keys into an empty DB).
//!
//! Address translation is a large part of the heap figures: run with
//! `GLIBC_TUNABLES=glibc.malloc.hugetlb=1` to measure both maps in transparent huge pages (docs/engines.md).

#![allow(missing_docs, reason = "criterion macros generate undocumented items")]

use std::hint::black_box;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use rand::SeedableRng;
use rand::seq::SliceRandom;
use statebackend::*;

const KEYS: u64 = 1_000_000;
const BATCH: usize = 1_024;
const NS: VoidNamespace = VoidNamespace;

fn shuffled(seed: u64) -> Vec<u64> {
    let mut keys: Vec<u64> = (0..KEYS).collect();
    keys.shuffle(&mut rand::rngs::StdRng::seed_from_u64(seed));
    keys
}

fn filled(
    kind: BackendKind,
    dir: &std::path::Path,
    keys: &[u64],
) -> (StateBackend<u64>, ValueState<VoidNamespace, u64>) {
    let identity = SubtaskIdentity::new("bench", 128, 1, 0).expect("identity");
    let config = StateBackendConfig {
        kind,
        rocksdb: rocksdb::RocksDbConfig {
            local_dir: dir.to_path_buf(),
            ..Default::default()
        },
        ..StateBackendConfig::default()
    };
    let mut b = StateBackend::new(&identity, &config).expect("backend");
    let s = b
        .value_state(&ValueStateDescriptor::new("v"))
        .expect("state");
    for chunk in keys.chunks(BATCH) {
        s.update_batch(&mut b, &NS, chunk, chunk).expect("fill");
    }
    // A settled DB for the LSM reads: everything flushed and compacted, so that no background compaction
    // competes with the measurement and both sides read the same SST levels.
    #[cfg(feature = "rocksdb")]
    if let Some(lsm) = b.as_rocksdb() {
        lsm.compact().expect("compaction");
    }
    (b, s)
}

fn heap(c: &mut Criterion) {
    let keys = shuffled(7);
    let probe = shuffled(8);
    let mut map: hashbrown::HashMap<u64, u64> = hashbrown::HashMap::new();
    for &k in &keys {
        map.insert(k, k);
    }
    let dir = tempfile::tempdir().expect("dir");
    let (mut b, s) = filled(BackendKind::Heap, dir.path(), &keys);

    let mut g = c.benchmark_group("get_1M");
    g.throughput(Throughput::Elements(KEYS));
    g.sample_size(10);
    g.bench_function("hashbrown_get", |bench| {
        bench.iter(|| {
            let mut sum = 0u64;
            for k in &probe {
                sum = sum.wrapping_add(*map.get(k).expect("present"));
            }
            black_box(sum)
        })
    });
    g.bench_function("heap_per_key", |bench| {
        bench.iter(|| {
            let mut sum = 0u64;
            for &k in &probe {
                b.set_current_key(k).expect("key");
                sum = sum.wrapping_add(s.value(&b, &NS).expect("get").expect("present"));
            }
            black_box(sum)
        })
    });
    let mut out = Vec::with_capacity(BATCH);
    g.bench_function("heap_batch", |bench| {
        bench.iter(|| {
            let mut sum = 0u64;
            for chunk in probe.chunks(BATCH) {
                out.clear();
                s.get_batch(&b, &NS, chunk, &mut out).expect("batch");
                sum = out
                    .iter()
                    .fold(sum, |a, v| a.wrapping_add(v.expect("present")));
            }
            black_box(sum)
        })
    });
    g.finish();

    let mut g = c.benchmark_group("rmw_1M");
    g.throughput(Throughput::Elements(KEYS));
    g.sample_size(10);
    g.bench_function("hashbrown_get_mut", |bench| {
        bench.iter(|| {
            for k in &probe {
                *map.get_mut(k).expect("present") += 1;
            }
        })
    });
    g.bench_function("heap_per_key", |bench| {
        bench.iter(|| {
            for &k in &probe {
                b.set_current_key(k).expect("key");
                let v = s.value(&b, &NS).expect("get").unwrap_or(0);
                s.update(&mut b, &NS, v + 1).expect("update");
            }
        })
    });
    g.bench_function("heap_batch", |bench| {
        bench.iter(|| {
            for chunk in probe.chunks(BATCH) {
                s.modify_batch(&mut b, &NS, chunk, |_, v| Some(v.map_or(1, |v| v + 1)))
                    .expect("batch");
            }
        })
    });
    g.finish();
}

fn lsm(c: &mut Criterion) {
    if !cfg!(feature = "rocksdb") {
        return;
    }
    let keys = shuffled(7);
    let probe = shuffled(8);
    let dir = tempfile::tempdir().expect("dir");
    // Filled on first use: a run filtered to other groups does not build the 1M-key DB.
    let mut db = None;
    let mut g = c.benchmark_group("lsm_get_1M");
    g.throughput(Throughput::Elements(KEYS));
    g.sample_size(10);
    g.bench_function("per_key", |bench| {
        let (b, s) = db.get_or_insert_with(|| filled(BackendKind::RocksDb, dir.path(), &keys));
        bench.iter(|| {
            let mut sum = 0u64;
            for &k in &probe {
                b.set_current_key(k).expect("key");
                sum = sum.wrapping_add(s.value(b, &NS).expect("get").expect("present"));
            }
            black_box(sum)
        })
    });
    let mut out = Vec::with_capacity(BATCH);
    g.bench_function("batch", |bench| {
        let (b, s) = db.get_or_insert_with(|| filled(BackendKind::RocksDb, dir.path(), &keys));
        bench.iter(|| {
            let mut sum = 0u64;
            for chunk in probe.chunks(BATCH) {
                out.clear();
                s.get_batch(b, &NS, chunk, &mut out).expect("batch");
                sum = out
                    .iter()
                    .fold(sum, |a, v| a.wrapping_add(v.expect("present")));
            }
            black_box(sum)
        })
    });
    g.finish();
    drop(db);

    let mut g = c.benchmark_group("lsm_insert_1M");
    g.throughput(Throughput::Elements(KEYS));
    g.sample_size(10);
    let empty = || {
        let dir = tempfile::tempdir().expect("dir");
        let (b, s) = filled(BackendKind::RocksDb, dir.path(), &[]);
        (b, s, dir)
    };
    g.bench_function("per_key", |bench| {
        bench.iter_batched(
            empty,
            |(mut b, s, dir)| {
                for &k in &keys {
                    b.set_current_key(k).expect("key");
                    s.update(&mut b, &NS, k).expect("update");
                }
                (b, dir)
            },
            BatchSize::PerIteration,
        )
    });
    g.bench_function("batch", |bench| {
        bench.iter_batched(
            empty,
            |(mut b, s, dir)| {
                for chunk in keys.chunks(BATCH) {
                    s.update_batch(&mut b, &NS, chunk, chunk).expect("batch");
                }
                (b, dir)
            },
            BatchSize::PerIteration,
        )
    });
    g.finish();
}

criterion_group!(benches, heap, lsm);
criterion_main!(benches);
