//! Heap incremental checkpoints against full ones, same state, same churn, same sitting:
//! `SB_HI_KEYS` `u64` keys (default 1M) with random `u64` values in one value state, storage in memory. Each
//! measured iteration first writes 1% of the keys (untimed; uniform, or Zipf with exponent 1 over the key
//! space), then takes one checkpoint (synchronous + asynchronous phase) and confirms it:
//! - `heap_checkpoint_1pct/full`: `HeapConfig::incremental` off, every checkpoint writes every entry;
//! - `heap_checkpoint_1pct/incremental_uniform`, `.../incremental_zipf`: incremental on, chains of up to
//!   10 files (rolling materialization: after the first, every checkpoint is a delta, and from the
//!   third on each also rewrites one slice of 15 of the 128 key groups whole);
//! - `heap_restore/full`, `heap_restore/chain_of_10`: restore of 1M keys from one full checkpoint, and
//!   from a chain after 10 checkpoints of 1% churn (the last slice file of the first checkpoint, the
//!   first delta and 8 deltas with slices);
//! - `heap_checkpoint_elements/...`: `SB_HI_ELEMENT_KEYS` keys (default 20,000), each with a list of 100
//!   `u64` elements or a map of 100 `u32 -> u64` user keys, incremental on; each iteration gives 1% of
//!   the keys one element (`list_append`: `ListState::add`, an append record; `list_update`: the same
//!   list set whole, a whole record) or one user key (`map_put`: `MapState::put`, a patch record;
//!   `map_put_all`: `put_all` of that one user key, which writes the map whole), then checkpoints.
//!
//! It then prints, per variant, the median bytes uploaded by a delta and its synchronous and
//! asynchronous phases, and the bytes stored while a checkpoint uploads (the previous checkpoint's
//! files, retained, and the new ones) over the full size, median and largest. Run: `cargo bench --bench
//! heap_incremental`. Targets (`docs/heap-incremental.md`): stored bytes at most 2x the full size;
//! a delta at 1% churn of 1M keys ≤ 200 KB, synchronous phase ≤ 1 ms, asynchronous ≤ 10 ms; restore of a
//! chain of 10 ≤ 1.3× the full restore.

#![allow(missing_docs, reason = "criterion macros generate undocumented items")]
#![allow(clippy::unwrap_used, reason = "a bench fails loudly")]

use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, Zipf};
use statebackend::heap::{HeapConfig, HeapKeyedStateBackend};
use statebackend::*;

const NS: VoidNamespace = VoidNamespace;

fn keys() -> u64 {
    std::env::var("SB_HI_KEYS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000)
}

#[derive(Clone, Copy)]
enum Churn {
    Uniform,
    Zipf,
}

struct Job {
    backend: HeapKeyedStateBackend<u64>,
    state: ValueState<VoidNamespace, u64>,
    storage: CheckpointStorage,
    next_id: u64,
    rng: rand::rngs::StdRng,
    zipf: Zipf<f64>,
    /// (bytes uploaded, full checkpoint, sync phase, async phase, bytes stored while it uploaded) per
    /// measured checkpoint.
    stats: Vec<(u64, bool, Duration, Duration, u64)>,
    last: Option<KeyedStateHandle>,
    /// Bytes of the latest full checkpoint (the live full size: the state's size does not change).
    full_bytes: u64,
}

impl Job {
    fn new(incremental: bool) -> Self {
        let config = HeapConfig {
            incremental,
            ..HeapConfig::default()
        };
        let identity = SubtaskIdentity::new("op", 128, 1, 0).unwrap();
        let mut backend = HeapKeyedStateBackend::new(identity, config).unwrap();
        let state = backend
            .value_state(&ValueStateDescriptor::<VoidNamespace, u64>::new("v"))
            .unwrap();
        // Random values from the start, as the churn writes them: the full size stays the same all run.
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        for k in 0..keys() {
            backend.set_current_key(k).unwrap();
            state.update(&mut backend, &NS, rng.random()).unwrap();
        }
        Job {
            backend,
            state,
            storage: CheckpointStorage::in_memory("heap-incremental").unwrap(),
            next_id: 1,
            rng,
            zipf: Zipf::new(keys() as f64, 1.0).unwrap(),
            stats: Vec::new(),
            last: None,
            full_bytes: 0,
        }
    }

    fn churn(&mut self, churn: Churn) {
        for _ in 0..keys() / 100 {
            let k = match churn {
                Churn::Uniform => self.rng.random_range(0..keys()),
                Churn::Zipf => self.zipf.sample(&mut self.rng) as u64 - 1,
            };
            self.backend.set_current_key(k).unwrap();
            let v: u64 = self.rng.random();
            self.state.update(&mut self.backend, &NS, v).unwrap();
        }
    }

    /// One checkpoint, confirmed; returns its duration (both phases).
    fn checkpoint(&mut self, rt: &tokio::runtime::Runtime) -> Duration {
        let (took, result) = checkpoint(&mut self.backend, &self.storage, &mut self.next_id, rt);
        let m = &result.metrics;
        let full = m.files_reused == 0;
        if full {
            self.full_bytes = m.checkpointed_bytes;
        }
        // While it uploaded, storage held the retained checkpoint (the previous one, every checkpoint
        // confirmed) and the new files: each file once.
        let mut stored: std::collections::BTreeMap<&str, u64> = std::collections::BTreeMap::new();
        for f in self
            .last
            .iter()
            .flat_map(|h| &h.files)
            .chain(&result.handle.files)
        {
            stored.insert(&f.path, f.size_bytes);
        }
        let stored = stored.values().sum();
        self.stats.push((
            m.checkpointed_bytes,
            full,
            m.sync_duration,
            m.async_duration,
            stored,
        ));
        self.last = Some(result.handle);
        took
    }
}

/// How `heap_checkpoint_elements` writes its state.
#[derive(Clone, Copy)]
enum Elements {
    ListAppend,
    ListUpdate,
    MapPut,
    MapPutAll,
}

/// A job with one list or map state of 100 elements or user keys per key, incremental checkpoints on.
struct ElementJob {
    backend: HeapKeyedStateBackend<u64>,
    list: ListState<VoidNamespace, u64>,
    map: MapState<VoidNamespace, u32, u64>,
    storage: CheckpointStorage,
    next_id: u64,
    rng: rand::rngs::StdRng,
    /// Bytes uploaded by each measured checkpoint.
    uploaded: Vec<u64>,
}

fn element_keys() -> u64 {
    std::env::var("SB_HI_ELEMENT_KEYS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000)
}

impl ElementJob {
    fn new(kind: Elements) -> Self {
        let config = HeapConfig {
            incremental: true,
            ..HeapConfig::default()
        };
        let identity = SubtaskIdentity::new("op", 128, 1, 0).unwrap();
        let mut backend = HeapKeyedStateBackend::new(identity, config).unwrap();
        let list = backend.list_state(&ListStateDescriptor::new("l")).unwrap();
        let map = backend.map_state(&MapStateDescriptor::new("m")).unwrap();
        for k in 0..element_keys() {
            backend.set_current_key(k).unwrap();
            match kind {
                Elements::ListAppend | Elements::ListUpdate => {
                    list.update(&mut backend, &NS, (0..100).collect()).unwrap()
                }
                Elements::MapPut | Elements::MapPutAll => map
                    .put_all(&mut backend, &NS, (0..100).map(|u| (u, k)))
                    .unwrap(),
            }
        }
        ElementJob {
            backend,
            list,
            map,
            storage: CheckpointStorage::in_memory("heap-elements").unwrap(),
            next_id: 1,
            rng: rand::rngs::StdRng::seed_from_u64(11),
            uploaded: Vec::new(),
        }
    }

    /// 1% of the keys get one element or user key, written as `kind` says.
    fn churn(&mut self, kind: Elements) {
        for _ in 0..element_keys() / 100 {
            let k = self.rng.random_range(0..element_keys());
            let v: u64 = self.rng.random();
            let b = &mut self.backend;
            b.set_current_key(k).unwrap();
            match kind {
                Elements::ListAppend => self.list.add(b, &NS, v).unwrap(),
                Elements::ListUpdate => {
                    let mut list = self.list.get(b, &NS).unwrap();
                    list.push(v);
                    self.list.update(b, &NS, list).unwrap();
                }
                Elements::MapPut => self.map.put(b, &NS, (v % 200) as u32, v).unwrap(),
                Elements::MapPutAll => self
                    .map
                    .put_all(b, &NS, vec![((v % 200) as u32, v)])
                    .unwrap(),
            }
        }
    }

    /// One checkpoint, confirmed; returns its duration (both phases).
    fn checkpoint(&mut self, rt: &tokio::runtime::Runtime) -> Duration {
        let (took, result) = checkpoint(&mut self.backend, &self.storage, &mut self.next_id, rt);
        if result.metrics.files_reused > 0 {
            self.uploaded.push(result.metrics.checkpointed_bytes);
        }
        took
    }
}

/// Checkpoint `next_id` of `backend` into `storage` (both phases), confirmed; the next id is counted on.
/// Returns its duration and result.
fn checkpoint(
    backend: &mut HeapKeyedStateBackend<u64>,
    storage: &CheckpointStorage,
    next_id: &mut u64,
    rt: &tokio::runtime::Runtime,
) -> (Duration, SnapshotResult) {
    let id = *next_id;
    *next_id += 1;
    let started = Instant::now();
    let pending = backend.snapshot(id, storage).unwrap();
    let result = rt.block_on(pending.run()).unwrap();
    let took = started.elapsed();
    backend.notify_checkpoint_complete(id);
    (took, result)
}

fn median<T: Copy + Ord>(mut v: Vec<T>) -> Option<T> {
    v.sort();
    v.get(v.len() / 2).copied()
}

fn report(name: &str, job: &Job) {
    let deltas: Vec<_> = job.stats.iter().filter(|s| !s.1).collect();
    let full: Vec<_> = job.stats.iter().filter(|s| s.1).collect();
    let stored = |s: &(u64, bool, Duration, Duration, u64)| s.4 * 100 / job.full_bytes.max(1);
    eprintln!(
        "heap_incremental {name}: {} checkpoints ({} deltas); median delta {:?} bytes, sync {:?}, async {:?}; \
         median full {:?} bytes, async {:?}; stored while a checkpoint uploads / full size: median {:?}%, \
         max {:?}% (full size {} bytes)",
        job.stats.len(),
        deltas.len(),
        median(deltas.iter().map(|s| s.0).collect()),
        median(deltas.iter().map(|s| s.2).collect()),
        median(deltas.iter().map(|s| s.3).collect()),
        median(full.iter().map(|s| s.0).collect()),
        median(full.iter().map(|s| s.3).collect()),
        median(job.stats.iter().map(stored).collect()),
        job.stats.iter().map(stored).max(),
        job.full_bytes,
    );
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut g = c.benchmark_group("heap_checkpoint_1pct");
    g.sample_size(20);
    for (name, incremental, churn) in [
        ("full", false, Churn::Uniform),
        ("incremental_uniform", true, Churn::Uniform),
        ("incremental_zipf", true, Churn::Zipf),
    ] {
        let mut job = Job::new(incremental);
        job.checkpoint(&rt);
        job.stats.clear();
        g.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    job.churn(churn);
                    total += job.checkpoint(&rt);
                }
                total
            })
        });
        report(name, &job);
    }
    g.finish();

    let mut g = c.benchmark_group("heap_restore");
    g.sample_size(10);
    let mut full = Job::new(false);
    full.checkpoint(&rt);
    let mut chain = Job::new(true);
    chain.checkpoint(&rt);
    for _ in 0..9 {
        chain.churn(Churn::Uniform);
        chain.checkpoint(&rt);
    }
    // A chain in rotation: files of every slice, and the deltas since.
    assert!(chain.last.as_ref().unwrap().files.len() <= 10);
    for (name, job) in [("full", &full), ("chain_of_10", &chain)] {
        let handles = vec![job.last.clone().unwrap()];
        g.bench_function(name, |b| {
            b.iter(|| {
                let identity = SubtaskIdentity::new("op", 128, 1, 0).unwrap();
                let mut restored = rt
                    .block_on(HeapKeyedStateBackend::<u64>::restore(
                        identity,
                        HeapConfig::default(),
                        &job.storage,
                        &handles,
                        RestoreMode::Claim,
                    ))
                    .unwrap();
                // Registering decodes the restored records into the map, as a job's first access does.
                restored
                    .value_state(&ValueStateDescriptor::<VoidNamespace, u64>::new("v"))
                    .unwrap();
                restored
            })
        });
    }
    g.finish();

    let mut g = c.benchmark_group("heap_checkpoint_elements");
    g.sample_size(20);
    for (name, kind) in [
        ("list_append", Elements::ListAppend),
        ("list_update", Elements::ListUpdate),
        ("map_put", Elements::MapPut),
        ("map_put_all", Elements::MapPutAll),
    ] {
        let mut job = ElementJob::new(kind);
        job.checkpoint(&rt);
        g.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    job.churn(kind);
                    total += job.checkpoint(&rt);
                }
                total
            })
        });
        eprintln!(
            "heap_incremental elements {name}: {} deltas, median {:?} bytes uploaded",
            job.uploaded.len(),
            median(job.uploaded.clone()),
        );
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
