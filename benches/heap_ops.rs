//! Heap backend value get and update against two baselines with the same keys, in the same run:
//! `hashbrown::HashMap` with its default hasher (foldhash: fast, not DoS-resistant) and
//! `std::collections::HashMap` with its default hasher (SipHash-1-3, randomly keyed).
//!
//! 1,000,000 `u64` keys with `u64` values. `*_1M` groups access all 1,000,000 keys per iteration in a
//! shuffled order (memory-bound, as Flink's workload); `*_hot10k` groups repeat the same 10,000 keys (the
//! baseline's working set then fits in L2, so they expose our extra indirections).
//! The heap backend's figures include what a keyed operator really pays per record: `set_current_key`
//! (encode the key, xxh3 hash, key group) and the state access. "after snapshot" runs the updates while a
//! snapshot holds the previous version (copy-on-write active). `value_update_*` is read-modify-write
//! (`value` then `update` on our side, one `get_mut` on the baseline's); `value_put_existing_*` is
//! `ValueState::update` alone against `insert` over an existing key.

#![allow(missing_docs, reason = "criterion macros generate undocumented items")]

use std::hint::black_box;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use rand::SeedableRng;
use rand::seq::SliceRandom;
use statebackend::heap::{HeapConfig, HeapKeyedStateBackend};
use statebackend::*;

const KEYS: u64 = 1_000_000;
const BATCH: usize = 10_000;

fn shuffled() -> Vec<u64> {
    let mut keys: Vec<u64> = (0..KEYS).collect();
    keys.shuffle(&mut rand::rngs::StdRng::seed_from_u64(7));
    keys
}

fn heap_backend(keys: &[u64]) -> (HeapKeyedStateBackend<u64>, ValueState<VoidNamespace, u64>) {
    let identity = SubtaskIdentity::new("bench", 128, 1, 0).expect("identity");
    let mut b = HeapKeyedStateBackend::new(identity, HeapConfig::default()).expect("backend");
    let s = b
        .value_state(&ValueStateDescriptor::new("v"))
        .expect("state");
    for &k in keys {
        b.set_current_key(k).expect("key");
        s.update(&mut b, &VoidNamespace, k).expect("update");
    }
    (b, s)
}

/// What a keyed operator does to count a record: read the key's value, write it back plus one.
fn increment(
    backend: &mut HeapKeyedStateBackend<u64>,
    state: &ValueState<VoidNamespace, u64>,
    k: u64,
) {
    backend.set_current_key(k).expect("key");
    let v = state
        .value(backend, &VoidNamespace)
        .expect("get")
        .unwrap_or(0);
    state
        .update(backend, &VoidNamespace, v + 1)
        .expect("update");
}

fn bench(c: &mut Criterion) {
    let keys = shuffled();
    let probe: Vec<u64> = keys.iter().rev().take(BATCH).copied().collect();
    let mut map: hashbrown::HashMap<u64, u64> = hashbrown::HashMap::new();
    let mut std_map: std::collections::HashMap<u64, u64> = std::collections::HashMap::new();
    for &k in &keys {
        map.insert(k, k);
        std_map.insert(k, k);
    }
    let (mut backend, state) = heap_backend(&keys);

    let all: Vec<u64> = {
        let mut k = keys.clone();
        k.shuffle(&mut rand::rngs::StdRng::seed_from_u64(8));
        k
    };
    for (suffix, probe) in [("1M", &all), ("hot10k", &probe)] {
        let mut g = c.benchmark_group(format!("value_get_{suffix}"));
        g.throughput(Throughput::Elements(probe.len() as u64));
        g.sample_size(10);
        g.bench_function("hashbrown", |b| {
            b.iter(|| {
                let mut sum = 0u64;
                for k in probe {
                    sum = sum.wrapping_add(*map.get(k).expect("present"));
                }
                black_box(sum)
            })
        });
        g.bench_function("std_hashmap", |b| {
            b.iter(|| {
                let mut sum = 0u64;
                for k in probe {
                    sum = sum.wrapping_add(*std_map.get(k).expect("present"));
                }
                black_box(sum)
            })
        });
        g.bench_function("heap_backend", |b| {
            b.iter(|| {
                let mut sum = 0u64;
                for &k in probe {
                    backend.set_current_key(k).expect("key");
                    sum = sum.wrapping_add(
                        state
                            .value(&backend, &VoidNamespace)
                            .expect("get")
                            .expect("present"),
                    );
                }
                black_box(sum)
            })
        });
        g.finish();

        let mut g = c.benchmark_group(format!("value_update_{suffix}"));
        g.throughput(Throughput::Elements(probe.len() as u64));
        g.sample_size(10);
        g.bench_function("hashbrown", |b| {
            b.iter(|| {
                for &k in probe {
                    *map.get_mut(&k).expect("present") += 1;
                }
            })
        });
        g.bench_function("std_hashmap", |b| {
            b.iter(|| {
                for &k in probe {
                    *std_map.get_mut(&k).expect("present") += 1;
                }
            })
        });
        g.bench_function("heap_backend", |b| {
            b.iter(|| {
                for &k in probe {
                    increment(&mut backend, &state, k);
                }
            })
        });
        g.finish();

        // `ValueState::update` alone: a put over an existing key, against the baseline's insert over an
        // existing key. (`value_update_*` above is read-modify-write: our get and put, two lookups,
        // against the baseline's single `get_mut`.)
        let mut g = c.benchmark_group(format!("value_put_existing_{suffix}"));
        g.throughput(Throughput::Elements(probe.len() as u64));
        g.sample_size(10);
        g.bench_function("hashbrown", |b| {
            b.iter(|| {
                for &k in probe {
                    black_box(map.insert(k, k + 1));
                }
            })
        });
        g.bench_function("std_hashmap", |b| {
            b.iter(|| {
                for &k in probe {
                    black_box(std_map.insert(k, k + 1));
                }
            })
        });
        g.bench_function("heap_backend", |b| {
            b.iter(|| {
                for &k in probe {
                    backend.set_current_key(k).expect("key");
                    state
                        .update(&mut backend, &VoidNamespace, k + 1)
                        .expect("update");
                }
            })
        });
        g.finish();
    }
    let mut g = c.benchmark_group("value_update_hot10k_cow");
    g.throughput(Throughput::Elements(BATCH as u64));
    g.sample_size(10);
    // Updates right after a snapshot: every first touch of a page copies it (copy-on-write).
    let storage = CheckpointStorage::in_memory("bench").expect("storage");
    let mut checkpoint_id = 0;
    g.bench_function("heap_backend_after_snapshot", |b| {
        b.iter_custom(|iters| {
            let mut total = std::time::Duration::ZERO;
            for _ in 0..iters {
                checkpoint_id += 1;
                let pending = backend.snapshot(checkpoint_id, &storage).expect("snapshot");
                let start = std::time::Instant::now();
                for &k in &probe {
                    increment(&mut backend, &state, k);
                }
                total += start.elapsed();
                drop(pending);
            }
            total
        })
    });
    g.finish();

    let mut g = c.benchmark_group("value_put_new");
    g.throughput(Throughput::Elements(BATCH as u64));
    g.bench_function("hashbrown", |b| {
        b.iter_batched(
            hashbrown::HashMap::<u64, u64>::new,
            |mut m| {
                for &k in &probe {
                    m.insert(k, k);
                }
                m
            },
            BatchSize::SmallInput,
        )
    });
    g.bench_function("std_hashmap", |b| {
        b.iter_batched(
            std::collections::HashMap::<u64, u64>::new,
            |mut m| {
                for &k in &probe {
                    m.insert(k, k);
                }
                m
            },
            BatchSize::SmallInput,
        )
    });
    g.bench_function("heap_backend", |b| {
        b.iter_batched(
            || heap_backend(&[]),
            |(mut be, s)| {
                for &k in &probe {
                    be.set_current_key(k).expect("key");
                    s.update(&mut be, &VoidNamespace, k).expect("update");
                }
                be
            },
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
