//! Timers (`docs/timers.md`) on both backends, the workload Flink's timer figures were measured on: 1M
//! timers, one per `u64` key, void namespace, random timestamps in [0, 2^40) ms; register all, checkpoint,
//! delete 10%, fire the rest in time order, restore and fire all. Max parallelism 128, one subtask.
//!
//! Criterion groups (throughput in timers): `timers_register_1M`, `timers_delete_100k`, `timers_fire_900k`
//! (in calls of at most 10,000, as an engine between barriers), `timers_sync_phase_1M` (the synchronous
//! phase of a checkpoint of 1M new timers), `timers_restore_1M` (restore, register the service, first
//! `next_timer`). Printed once per backend: checkpoint bytes per timer and the duration of that
//! checkpoint's asynchronous phase, and for RocksDB the fire rate of
//! each of 10 rounds of register 1M / fire 1M (tombstones of fired timers must not slow later rounds).
//! `TIMERS_BENCH_10M=1` adds the heap's synchronous phase at 10M timers, `TIMERS_BENCH_ROUNDS=n` runs n
//! rounds on RocksDB; `TIMERS_BENCH_FIGURES=0` leaves
//! out the printed figures (for profiling one group).

#![allow(missing_docs, reason = "criterion macros generate undocumented items")]
#![allow(
    clippy::unwrap_used,
    reason = "a bench fails loudly on unexpected errors"
)]

use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use statebackend::keyed::{Fired, TimeDomain, TimerService, TimerServiceDescriptor};
use statebackend::*;

/// Timers of the workload: 1M under `cargo bench`, 10,000 when `cargo test` runs the bench once.
fn timers_n() -> u64 {
    if measuring() { 1_000_000 } else { 10_000 }
}

/// Whether this is `cargo bench` (which passes `--bench`) rather than `cargo test` checking that the bench
/// runs.
fn measuring() -> bool {
    std::env::args().any(|a| a == "--bench")
}

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

fn kinds() -> Vec<(BackendKind, &'static str)> {
    let mut kinds = vec![(BackendKind::Heap, "heap")];
    if cfg!(feature = "rocksdb") {
        kinds.push((BackendKind::RocksDb, "rocksdb"));
    }
    kinds
}

/// The timestamp of key `k`'s timer: xorshift of the key, below 2^40 ms (about 35 years).
fn ts(k: u64, round: u64) -> u64 {
    let mut x =
        (k + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ round.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x ^= x >> 31;
    x ^= x << 17;
    x & ((1 << 40) - 1)
}

fn service(b: &mut StateBackend<u64>) -> TimerService<VoidNamespace> {
    b.timer_service(&TimerServiceDescriptor::new("bench"))
        .expect("service")
}

fn register(b: &mut StateBackend<u64>, keys: std::ops::Range<u64>, round: u64) {
    let svc = service(b);
    for k in keys {
        b.set_current_key(k).expect("key");
        svc.register_event_time(b, &VoidNamespace, ts(k, round))
            .expect("register");
    }
}

fn filled(kind: BackendKind, dir: &std::path::Path, n: u64) -> StateBackend<u64> {
    let mut b = StateBackend::new(&identity(), &config(kind, dir)).expect("backend");
    register(&mut b, 0..n, 0);
    b
}

/// Fires every timer up to `time` in calls of at most 10,000; how many fired.
fn fire_all(b: &mut StateBackend<u64>, time: u64) -> u64 {
    let svc = service(b);
    let mut fired = 0u64;
    loop {
        let more = svc
            .fire_event_time(b, time, 10_000, |_, _| {
                fired += 1;
                Ok(())
            })
            .expect("fire");
        if more == Fired::Done {
            return fired;
        }
    }
}

/// Rounds of register / fire on RocksDB: 10, or `TIMERS_BENCH_ROUNDS` (at least 10) to see where the
/// rate settles.
fn rounds() -> u64 {
    let asked = std::env::var("TIMERS_BENCH_ROUNDS").ok();
    asked.and_then(|r| r.parse().ok()).unwrap_or(10).max(10)
}

/// Whether the printed figures run (under `cargo bench`, not with `TIMERS_BENCH_FIGURES=0`).
fn figures() -> bool {
    measuring() && std::env::var("TIMERS_BENCH_FIGURES").map_or(true, |v| v != "0")
}

fn bench(c: &mut Criterion) {
    #[allow(
        non_snake_case,
        reason = "the workload's size, named as the docs name it"
    )]
    let N = timers_n();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("rt");
    let tmp = tempfile::tempdir().expect("tmp");

    let mut group = c.benchmark_group("timers_register_1M");
    group.sample_size(10).throughput(Throughput::Elements(N));
    for (kind, name) in kinds() {
        group.bench_function(name, |bench| {
            bench.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let mut b = StateBackend::new(&identity(), &config(kind, tmp.path())).unwrap();
                    let start = Instant::now();
                    register(&mut b, 0..N, 0);
                    total += start.elapsed();
                }
                total
            })
        });
    }
    group.finish();

    let mut group = c.benchmark_group("timers_delete_100k");
    group
        .sample_size(10)
        .throughput(Throughput::Elements(N / 10));
    for (kind, name) in kinds() {
        group.bench_function(name, |bench| {
            bench.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let mut b = filled(kind, tmp.path(), N);
                    let svc = service(&mut b);
                    let start = Instant::now();
                    for k in (0..N).step_by(10) {
                        b.set_current_key(k).unwrap();
                        svc.delete(&mut b, TimeDomain::EventTime, &VoidNamespace, ts(k, 0))
                            .unwrap();
                    }
                    total += start.elapsed();
                }
                total
            })
        });
    }
    group.finish();

    let mut group = c.benchmark_group("timers_fire_900k");
    group
        .sample_size(10)
        .throughput(Throughput::Elements(N - N / 10));
    for (kind, name) in kinds() {
        group.bench_function(name, |bench| {
            bench.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let mut b = filled(kind, tmp.path(), N);
                    let svc = service(&mut b);
                    for k in (0..N).step_by(10) {
                        b.set_current_key(k).unwrap();
                        svc.delete(&mut b, TimeDomain::EventTime, &VoidNamespace, ts(k, 0))
                            .unwrap();
                    }
                    let start = Instant::now();
                    let fired = fire_all(&mut b, u64::MAX);
                    total += start.elapsed();
                    assert_eq!(fired, N - N / 10);
                }
                total
            })
        });
    }
    group.finish();

    let storage = CheckpointStorage::local(
        tmp.path().join("checkpoints"),
        "bench-job",
        &StorageConfig::default(),
    )
    .unwrap();
    let mut sizes = vec![N];
    if std::env::var_os("TIMERS_BENCH_10M").is_some() {
        sizes.push(10 * N);
    }
    let mut group = c.benchmark_group("timers_sync_phase");
    group.sample_size(10);
    let mut id = 0u64;
    for (kind, name) in kinds() {
        for &n in &sizes {
            if n > N && kind != BackendKind::Heap {
                continue;
            }
            let mut b: Option<StateBackend<u64>> = None;
            let mut first = true;
            group.bench_function(BenchmarkId::new(name, n), |bench| {
                bench.iter_custom(|iters| {
                    let b = b.get_or_insert_with(|| filled(kind, tmp.path(), n));
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        // New timers in every checkpoint (RocksDB: a memtable to flush, as Flink's 1M).
                        if kind != BackendKind::Heap && !first {
                            register(b, 0..n, id + 1);
                        }
                        first = false;
                        id += 1;
                        let start = Instant::now();
                        let pending = b.snapshot(id, &storage).unwrap();
                        total += start.elapsed();
                        let result = rt.block_on(pending.run()).unwrap();
                        let _ = result;
                    }
                    total
                })
            });
        }
    }
    group.finish();

    // Checkpoint bytes per timer, and the restore group, from one checkpoint per backend.
    let mut group = c.benchmark_group("timers_restore_1M");
    group.sample_size(10).throughput(Throughput::Elements(N));
    for (kind, name) in kinds() {
        if !figures() {
            continue;
        }
        let mut b = filled(kind, tmp.path(), N);
        id += 1;
        let pending = b.snapshot(id, &storage).unwrap();
        let started = Instant::now();
        let result = rt.block_on(pending.run()).unwrap();
        let async_ms = started.elapsed().as_secs_f64() * 1e3;
        eprintln!(
            "timers {name}: checkpoint of {N} timers: {} bytes, {:.2} B/timer (full {} bytes), asynchronous phase {async_ms:.1} ms",
            result.metrics.checkpointed_bytes,
            result.metrics.checkpointed_bytes as f64 / N as f64,
            result.metrics.full_bytes,
        );
        drop(b);
        let handles = vec![result.handle];
        group.bench_function(name, |bench| {
            bench.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let start = Instant::now();
                    let mut b = rt
                        .block_on(StateBackend::restore(
                            &identity(),
                            &config(kind, tmp.path()),
                            &storage,
                            &handles,
                            RestoreMode::NoClaim,
                        ))
                        .unwrap();
                    let svc = service(&mut b);
                    let next = svc.next_timer(&mut b, TimeDomain::EventTime).unwrap();
                    total += start.elapsed();
                    assert!(next.is_some());
                }
                total
            })
        });
    }
    group.finish();

    // Rounds on RocksDB: the fire rate of round 10 against round 1.
    for (kind, name) in kinds() {
        if kind == BackendKind::Heap || !figures() {
            continue;
        }
        let mut b = StateBackend::new(&identity(), &config(kind, tmp.path())).unwrap();
        let mut rates = Vec::new();
        for round in 0..rounds() {
            register(&mut b, 0..N, round + 100);
            let start = Instant::now();
            let fired = fire_all(&mut b, u64::MAX);
            assert_eq!(fired, N);
            rates.push(N as f64 / start.elapsed().as_secs_f64() / 1e6);
        }
        let shown: Vec<String> = rates.iter().map(|r| format!("{r:.2}")).collect();
        eprintln!(
            "timers {name}: {} rounds of register 1M / fire 1M, fire M/s per round: [{}]; round 10 / round 1 = {:.2}",
            rates.len(),
            shown.join(", "),
            rates[9] / rates[0]
        );
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
