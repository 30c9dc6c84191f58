//! Incremental checkpoints of the RocksDB backend against RocksDB's `BackupEngine` (which also shares SST files
//! across backups) on the same data and the same churn, both into a local directory with fsync:
//! - `incremental_checkpoint_1pct`: after updating 1% of the keys (untimed), one checkpoint (sync + async
//!   phase) vs `create_new_backup_flush`;
//! - `restore`: the latest checkpoint into a fresh directory, DB opened, vs `restore_from_latest_backup` +
//!   open.
//!
//! Then it prints, over the measured checkpoints, bytes uploaded / bytes of the new SST files and the sync
//! phase's duration. DB size: `SB_INCR_KEYS` keys (default 2.5M) of 200-byte incompressible values
//! (about 0.5 GB; `SB_INCR_KEYS=5000000` gives about 1 GiB).
//!
//! Run: `cargo bench --bench incremental`. Targets: uploaded ≤ 1.1× new SST bytes; checkpoint ≤
//! 1.2× BackupEngine; sync phase ≤ 50 ms; restore ≤ 1.2× BackupEngine.

#![allow(missing_docs, reason = "criterion macros generate undocumented items")]

use std::cell::RefCell;
use std::time::{Duration, Instant};

use ::rocksdb::backup::{BackupEngine, BackupEngineOptions, RestoreOptions};
use ::rocksdb::{DB, Env, WriteOptions};
use criterion::{Criterion, criterion_group, criterion_main};
use rand::{Rng, SeedableRng};
use statebackend::rocksdb::{RocksDbConfig, RocksDbKeyedStateBackend, lsm_db_options};
use statebackend::snapshot::FileScope;
use statebackend::*;

const NS: VoidNamespace = VoidNamespace;
const VALUE_BYTES: usize = 200;

fn keys() -> u64 {
    std::env::var("SB_INCR_KEYS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2_500_000)
}

fn value(rng: &mut rand::rngs::StdRng) -> Vec<u8> {
    let mut v = vec![0u8; VALUE_BYTES];
    rng.fill(v.as_mut_slice());
    v
}

/// Our side: backend, its state, storage, next checkpoint id, and what each checkpoint did.
struct Ours {
    backend: RocksDbKeyedStateBackend<u64>,
    state: ValueState<VoidNamespace, Vec<u8>>,
    storage: CheckpointStorage,
    next_id: u64,
    last: Option<KeyedStateHandle>,
    /// (uploaded bytes, bytes of new SSTs, sync phase) per measured checkpoint.
    stats: Vec<(u64, u64, Duration)>,
}

/// The peer: a DB with the same options and a backup engine.
struct Peer {
    db: DB,
    write: WriteOptions,
    engine: BackupEngine,
    backup_dir: std::path::PathBuf,
    _cache: ::rocksdb::Cache,
}

fn churn_ours(o: &mut Ours, rng: &mut rand::rngs::StdRng, n: u64) {
    for _ in 0..n / 100 {
        let k = rng.random_range(0..n);
        o.backend.set_current_key(k).expect("key");
        o.state
            .update(&mut o.backend, &NS, value(rng))
            .expect("put");
    }
}

fn churn_peer(p: &Peer, rng: &mut rand::rngs::StdRng, n: u64) {
    let cf = p.db.cf_handle("s:value").expect("cf");
    for _ in 0..n / 100 {
        let k = rng.random_range(0..n);
        p.db.put_cf_opt(cf, k.to_be_bytes(), value(rng), &p.write)
            .expect("put");
    }
}

fn checkpoint(rt: &tokio::runtime::Runtime, o: &mut Ours) -> Duration {
    let id = o.next_id;
    o.next_id += 1;
    let t = Instant::now();
    let pending = o.backend.snapshot(id, &o.storage).expect("sync");
    let result = rt.block_on(pending.run()).expect("async");
    let elapsed = t.elapsed();
    o.backend.notify_checkpoint_complete(id);
    let new_sst: u64 = result
        .handle
        .files
        .iter()
        .filter(|f| f.created_by == id && f.scope == FileScope::Shared)
        .map(|f| f.size_bytes)
        .sum();
    o.stats.push((
        result.metrics.checkpointed_bytes,
        new_sst,
        result.metrics.sync_duration,
    ));
    o.last = Some(result.handle);
    elapsed
}

fn bench(c: &mut Criterion) {
    let n = keys();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("rt");
    let dir = tempfile::tempdir().expect("dir");
    let identity = SubtaskIdentity::new("incr", 128, 1, 0).expect("identity");
    let config = RocksDbConfig {
        local_dir: dir.path().join("ours"),
        ..RocksDbConfig::default()
    };
    let peer_config = RocksDbConfig {
        local_dir: dir.path().join("peer"),
        ..config.clone()
    };
    let mut backend = RocksDbKeyedStateBackend::new(identity, config).expect("backend");
    let state = backend
        .value_state(&ValueStateDescriptor::<VoidNamespace, Vec<u8>>::new(
            "value",
        ))
        .expect("state");
    let storage = CheckpointStorage::local(
        dir.path().join("checkpoints"),
        "job",
        &StorageConfig::default(),
    )
    .expect("storage");
    let mut ours = Ours {
        backend,
        state,
        storage,
        next_id: 1,
        last: None,
        stats: Vec::new(),
    };
    let (opts, cache) = lsm_db_options(&peer_config);
    let db = DB::open_cf_descriptors(&opts, dir.path().join("peer"), same_options(&opts))
        .expect("peer db");
    let backup_dir = dir.path().join("backups");
    let engine = BackupEngine::open(
        &BackupEngineOptions::new(&backup_dir).expect("backup options"),
        &Env::new().expect("env"),
    )
    .expect("backup engine");
    let mut write = WriteOptions::default();
    write.disable_wal(true);
    let peer = Peer {
        db,
        write,
        engine,
        backup_dir,
        _cache: cache,
    };
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let t = Instant::now();
    {
        let cf = peer.db.cf_handle("s:value").expect("cf");
        for k in 0..n {
            let v = value(&mut rng);
            peer.db
                .put_cf_opt(cf, k.to_be_bytes(), &v, &peer.write)
                .expect("put");
            ours.backend.set_current_key(k).expect("key");
            ours.state.update(&mut ours.backend, &NS, v).expect("put");
        }
    }
    let first = checkpoint(&rt, &mut ours);
    let peer = RefCell::new(peer);
    {
        let mut p = peer.borrow_mut();
        let Peer { db, engine, .. } = &mut *p;
        engine
            .create_new_backup_flush(db, true)
            .expect("first backup");
    }
    let full = ours.stats[0];
    println!(
        "incremental: loaded {n} keys in {:.1} s; first (full) checkpoint: {:.0} MB in {:.1} s",
        t.elapsed().as_secs_f64(),
        full.0 as f64 / 1e6,
        first.as_secs_f64()
    );
    ours.stats.clear();

    let mut g = c.benchmark_group("incremental_checkpoint_1pct");
    g.sample_size(10);
    let mut rng_ours = rand::rngs::StdRng::seed_from_u64(11);
    g.bench_function("lsm_backend", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                churn_ours(&mut ours, &mut rng_ours, n);
                total += checkpoint(&rt, &mut ours);
            }
            total
        })
    });
    let mut rng_peer = rand::rngs::StdRng::seed_from_u64(11);
    g.bench_function("backup_engine", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            let mut p = peer.borrow_mut();
            for _ in 0..iters {
                churn_peer(&p, &mut rng_peer, n);
                let Peer { db, engine, .. } = &mut *p;
                let t = Instant::now();
                engine.create_new_backup_flush(db, true).expect("backup");
                total += t.elapsed();
                engine.purge_old_backups(2).expect("purge");
            }
            total
        })
    });
    g.finish();

    let mut g = c.benchmark_group("restore");
    g.sample_size(10);
    let handle = ours.last.clone().expect("a checkpoint");
    let mut round = 0;
    g.bench_function("lsm_backend", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                round += 1;
                let identity = SubtaskIdentity::new("incr", 128, 1, 0).expect("identity");
                let config = RocksDbConfig {
                    local_dir: dir.path().join(format!("r{round}")),
                    ..RocksDbConfig::default()
                };
                let t = Instant::now();
                let restored = rt
                    .block_on(RocksDbKeyedStateBackend::<u64>::restore(
                        identity,
                        config,
                        &ours.storage,
                        std::slice::from_ref(&handle),
                        RestoreMode::Claim,
                    ))
                    .expect("restore");
                total += t.elapsed();
                drop(restored);
            }
            total
        })
    });
    g.bench_function("backup_engine", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            let mut p = peer.borrow_mut();
            for _ in 0..iters {
                round += 1;
                let target = dir.path().join(format!("r{round}"));
                let t = Instant::now();
                p.engine
                    .restore_from_latest_backup(&target, &target, &RestoreOptions::default())
                    .expect("restore");
                let (opts, _cache) = lsm_db_options(&peer_config);
                let db =
                    DB::open_cf_descriptors(&opts, &target, same_options(&opts)).expect("open");
                total += t.elapsed();
                drop(db);
                let _ = std::fs::remove_dir_all(&target);
            }
            total
        })
    });
    g.finish();

    let uploaded: u64 = ours.stats.iter().map(|s| s.0).sum();
    let new_sst: u64 = ours.stats.iter().map(|s| s.1).sum();
    let mut syncs: Vec<Duration> = ours.stats.iter().map(|s| s.2).collect();
    syncs.sort();
    println!(
        "incremental: {} checkpoints after 1% churn: uploaded {:.1} MB for {:.1} MB of new SST files \
         ({:.3}x); sync phase median {:.1} ms, max {:.1} ms; backups kept in {}",
        ours.stats.len(),
        uploaded as f64 / 1e6,
        new_sst as f64 / 1e6,
        uploaded as f64 / new_sst.max(1) as f64,
        syncs
            .get(syncs.len() / 2)
            .map_or(0.0, |d| d.as_secs_f64() * 1e3),
        syncs.last().map_or(0.0, |d| d.as_secs_f64() * 1e3),
        peer.borrow().backup_dir.display()
    );
    println!(
        "incremental: sync phases (ms, sorted): {:?}",
        syncs
            .iter()
            .map(|d| (d.as_secs_f64() * 1e3).round())
            .collect::<Vec<_>>()
    );
}

criterion_group!(benches, bench);
criterion_main!(benches);

/// The two column families with the backend's options (`DB::open_cf` would give them defaults).
fn same_options(opts: &::rocksdb::Options) -> Vec<::rocksdb::ColumnFamilyDescriptor> {
    ["default", "s:value"]
        .into_iter()
        .map(|n| ::rocksdb::ColumnFamilyDescriptor::new(n, opts.clone()))
        .collect()
}
