//! RocksDB backend value get / update / put-new against raw `rocksdb` calls in the same run, with the same
//! options (`lsm_db_options`, WAL off), a column family each, the same key and value sizes (11-byte keys:
//! the backend's row format 2, `[kg u8][len 8][i64 key][ns len 0]`, 8-byte values) and the same key order.
//!
//! Run: `cargo bench --bench lsm_ops`. Target: the backend ≤ 1.3× the raw calls' time per op.

#![allow(missing_docs, reason = "criterion macros generate undocumented items")]

use ::rocksdb::{DB, WriteOptions};
use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use rand::SeedableRng;
use rand::seq::SliceRandom;
use statebackend::key_group::assign_to_key_group;
use statebackend::rocksdb::{RocksDbConfig, RocksDbKeyedStateBackend, lsm_db_options};
use statebackend::*;

const KEYS: i64 = 1_000_000;
const NS: VoidNamespace = VoidNamespace;

/// The raw baseline: a DB with the backend's options and one column family.
struct Raw {
    db: DB,
    write: WriteOptions,
    _cache: ::rocksdb::Cache,
    _dir: tempfile::TempDir,
}

/// The very row key the backend writes for an i64 key in the void namespace (same bytes, so the same
/// order in the memtable and the SSTs).
fn raw_key(k: i64) -> [u8; 11] {
    let mut encoded = Vec::with_capacity(8);
    k.encode(&mut encoded);
    let mut key = [0u8; 11];
    key[0] = assign_to_key_group(&encoded, 128).expect("max parallelism 128") as u8;
    key[1] = 8;
    key[2..10].copy_from_slice(&encoded);
    key
}

impl Raw {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("dir");
        // The backend's defaults (`RocksDbConfig::default`).
        let config = RocksDbConfig {
            local_dir: dir.path().into(),
            ..RocksDbConfig::default()
        };
        let (opts, cache) = lsm_db_options(&config);
        let db = DB::open_cf_descriptors(&opts, dir.path(), same_options(&opts)).expect("open");
        let mut write = WriteOptions::default();
        write.disable_wal(true);
        Raw {
            db,
            write,
            _cache: cache,
            _dir: dir,
        }
    }
    fn put(&self, key: &[u8; 11], v: i64) {
        let cf = self.db.cf_handle("s:value").expect("cf");
        self.db
            .put_cf_opt(cf, key, v.to_be_bytes(), &self.write)
            .expect("put");
    }
    fn get(&self, key: &[u8; 11]) -> Option<i64> {
        let cf = self.db.cf_handle("s:value").expect("cf");
        self.db
            .get_pinned_cf(cf, key)
            .expect("get")
            .map(|v| i64::from_be_bytes(v.as_ref().try_into().expect("8 bytes")))
    }
    fn flush(&self) {
        let cf = self.db.cf_handle("s:value").expect("cf");
        self.db.flush_cf(cf).expect("flush");
    }
}

fn backend() -> (
    RocksDbKeyedStateBackend<i64>,
    ValueState<VoidNamespace, i64>,
    tempfile::TempDir,
) {
    let dir = tempfile::tempdir().expect("dir");
    let identity = SubtaskIdentity::new("bench", 128, 1, 0).expect("identity");
    let config = RocksDbConfig {
        local_dir: dir.path().join("b"),
        ..RocksDbConfig::default()
    };
    let mut b = RocksDbKeyedStateBackend::new(identity, config).expect("backend");
    let s = b
        .value_state(&ValueStateDescriptor::<VoidNamespace, i64>::new("value"))
        .expect("state");
    (b, s, dir)
}

fn shuffled(seed: u64) -> Vec<i64> {
    let mut keys: Vec<i64> = (0..KEYS).collect();
    keys.shuffle(&mut rand::rngs::StdRng::seed_from_u64(seed));
    keys
}

fn bench(c: &mut Criterion) {
    let raw = Raw::new();
    let (mut b, s, _dir) = backend();
    for k in shuffled(1) {
        raw.put(&raw_key(k), k);
        b.set_current_key(k).expect("key");
        s.update(&mut b, &NS, k).expect("put");
    }
    // Both from SST files, as a state larger than memory would be, and compacted into the same shape so
    // that neither side pays for the other's pending compactions.
    raw.flush();
    b.compact().expect("compaction");
    let raw_cf = raw.db.cf_handle("s:value").expect("cf");
    raw.db
        .compact_range_cf(raw_cf, None::<&[u8]>, None::<&[u8]>);
    let keys = shuffled(2);
    // The baseline gets its keys ready-made: its time is RocksDB's alone.
    let raw_keys: Vec<[u8; 11]> = keys.iter().map(|&k| raw_key(k)).collect();
    for (name, db) in [("rocksdb", &raw.db), ("lsm_backend", b.db())] {
        let cf = db.cf_handle("s:value").expect("cf");
        let p = |k: &str| {
            db.property_value_cf(cf, k)
                .ok()
                .flatten()
                .unwrap_or_default()
        };
        eprintln!(
            "{name}: L0 files {}, cache capacity {}, usage {}, sst bytes {}",
            p("rocksdb.num-files-at-level0"),
            p("rocksdb.block-cache-capacity"),
            p("rocksdb.block-cache-usage"),
            p("rocksdb.total-sst-files-size")
        );
    }

    let mut g = c.benchmark_group("lsm_value_get_1M");
    let mut i = 0;
    g.bench_function("rocksdb", |bench| {
        bench.iter(|| {
            i = (i + 1) % keys.len();
            raw.get(&raw_keys[i])
        })
    });
    g.bench_function("lsm_backend", |bench| {
        bench.iter(|| {
            i = (i + 1) % keys.len();
            b.set_current_key(keys[i]).expect("key");
            s.value(&b, &NS).expect("get")
        })
    });
    g.finish();

    let mut g = c.benchmark_group("lsm_value_update_1M");
    g.bench_function("rocksdb", |bench| {
        bench.iter(|| {
            i = (i + 1) % keys.len();
            let v = raw.get(&raw_keys[i]).unwrap_or(0);
            raw.put(&raw_keys[i], v + 1);
        })
    });
    g.bench_function("lsm_backend", |bench| {
        bench.iter(|| {
            i = (i + 1) % keys.len();
            b.set_current_key(keys[i]).expect("key");
            let v = s.value(&b, &NS).expect("get").unwrap_or(0);
            s.update(&mut b, &NS, v + 1).expect("put");
        })
    });
    g.finish();

    let mut g = c.benchmark_group("lsm_value_put_new");
    let mut next_raw = KEYS;
    g.bench_function("rocksdb", |bench| {
        bench.iter_batched(
            || {
                next_raw += 1;
                (raw_key(next_raw), next_raw)
            },
            |(key, k)| raw.put(&key, k),
            BatchSize::SmallInput,
        )
    });
    let mut next = KEYS;
    g.bench_function("lsm_backend", |bench| {
        bench.iter_batched(
            || {
                next += 1;
                next
            },
            |k| {
                b.set_current_key(k).expect("key");
                s.update(&mut b, &NS, k).expect("put");
            },
            BatchSize::SmallInput,
        )
    });
    g.finish();
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
