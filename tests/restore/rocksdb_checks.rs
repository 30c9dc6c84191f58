//! The RocksDB backend's restore checks and settings: handle formats it refuses or converts, row format 1,
//! options of restored column families, memtables flushed by a native checkpoint, direct I/O.

#![cfg(feature = "rocksdb")]
use std::collections::BTreeMap;

use crate::common::*;
use statebackend::heap::{HeapConfig, HeapKeyedStateBackend};
use statebackend::rocksdb::{RocksDbConfig, RocksDbKeyedStateBackend};
use statebackend::snapshot::{HandleFormat, StateFile};
use statebackend::*;

const NS: VoidNamespace = VoidNamespace;
type Lsm = RocksDbKeyedStateBackend<u64>;

/// The RocksDB backend's native snapshot is refused by the heap restore with a typed error; the heap backend's
/// snapshot is canonical and restores on the RocksDB backend (it was refused before canonical restores), but a
/// handle set mixing both formats is refused.
#[test]
fn foreign_handle_formats_are_invalid_arguments() {
    runtime().block_on(async {
        let storage = CheckpointStorage::in_memory("foreign").unwrap();
        let mut coord = coordinator(&storage, 1, 1).await;
        let mut heap = vec![
            HeapKeyedStateBackend::<u64>::new(identity(128, 1, 0), HeapConfig::default()).unwrap(),
        ];
        fill(&mut heap[0], 0..20, 3);
        checkpoint(&mut coord, &mut heap).await;
        let meta = coord.store().latest().unwrap().clone();
        let mut restored = Lsm::restore(
            identity(128, 1, 0),
            lsm_config(),
            &storage,
            &handles(&meta),
            RestoreMode::Claim,
        )
        .await
        .unwrap();
        assert_eq!(read_counts(&mut restored).len(), 20);
        let mut mixed = handles(&meta);
        let mut other = mixed[0].clone();
        other.format = HandleFormat::RocksIncremental;
        mixed[0].key_groups = KeyGroupRange::new(0, 63).unwrap();
        other.key_groups = KeyGroupRange::new(64, 127).unwrap();
        mixed.push(other);
        let err = Lsm::restore(
            identity(128, 1, 0),
            lsm_config(),
            &storage,
            &mixed,
            RestoreMode::Claim,
        )
        .await
        .err()
        .unwrap();
        assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{err}");
        let mut lsm_b = vec![lsm::<u64>(128, 1, 0)];
        checkpoint(&mut coord, &mut lsm_b).await;
        let meta = coord.store().latest().unwrap().clone();
        let err = HeapKeyedStateBackend::<u64>::restore(
            identity(128, 1, 0),
            HeapConfig::default(),
            &storage,
            &handles(&meta),
            RestoreMode::Claim,
        )
        .await
        .err()
        .unwrap();
        assert_eq!(err.kind(), ErrorKind::InvalidArgument);
    });
}

/// Row format 2 (1-byte key groups up to max parallelism 128, varint lengths) changed the bytes of every
/// row: a checkpoint handle of row format 1 is refused by name, before anything is downloaded, and survives
/// a metadata round trip as what it is.
#[test]
fn row_format_1_checkpoints_are_refused_with_a_clear_error() {
    runtime().block_on(async {
        let storage = CheckpointStorage::in_memory("rows-v1").unwrap();
        let mut coord = coordinator(&storage, 1, 1).await;
        let mut b = vec![lsm::<u64>(128, 1, 0)];
        fill(&mut b[0], 0..50, 1);
        checkpoint(&mut coord, &mut b).await;
        let mut old = handles(coord.store().latest().unwrap());
        assert!(
            old.iter()
                .all(|h| h.format == HandleFormat::RocksIncremental)
        );
        for h in &mut old {
            h.format = HandleFormat::RocksIncrementalRowsV1;
        }
        let err = Lsm::restore(
            identity(128, 1, 0),
            lsm_config(),
            &storage,
            &old,
            RestoreMode::NoClaim,
        )
        .await
        .err()
        .unwrap();
        assert_eq!(err.kind(), ErrorKind::InvalidArgument);
        assert!(err.to_string().contains("row format 1"), "{err}");
    });
}

/// Checkpoints do not upload RocksDB's CURRENT: a restore writes it from the handle's one MANIFEST. A handle
/// without CURRENT that lists no MANIFEST, or two, is a `Corrupt` error naming the count, never a guess.
#[test]
fn current_is_written_from_the_one_manifest_or_the_handle_is_corrupt() {
    runtime().block_on(async {
        let storage = CheckpointStorage::in_memory("current").unwrap();
        let mut coord = coordinator(&storage, 1, 1).await;
        let mut b = vec![lsm::<u64>(128, 1, 0)];
        fill(&mut b[0], 0..50, 1);
        checkpoint(&mut coord, &mut b).await;
        let good = handles(coord.store().latest().unwrap());
        let names: Vec<&str> = good[0]
            .files
            .iter()
            .map(|f| f.local_name.as_str())
            .collect();
        assert!(!names.contains(&"CURRENT"), "{names:?}");
        let mut restored = Lsm::restore(
            identity(128, 1, 0),
            lsm_config(),
            &storage,
            &good,
            RestoreMode::NoClaim,
        )
        .await
        .unwrap();
        assert_eq!(read_counts(&mut restored).len(), 50);
        let manifest = good[0]
            .files
            .iter()
            .find(|f| f.local_name.starts_with("MANIFEST-"))
            .unwrap()
            .clone();
        let mut none = good.clone();
        none[0]
            .files
            .retain(|f| !f.local_name.starts_with("MANIFEST-"));
        let mut two = good.clone();
        two[0].files.push(StateFile {
            local_name: "MANIFEST-999999".into(),
            ..manifest
        });
        for (handles, count) in [(none, 0), (two, 2)] {
            let err = Lsm::restore(
                identity(128, 1, 0),
                lsm_config(),
                &storage,
                &handles,
                RestoreMode::NoClaim,
            )
            .await
            .err()
            .unwrap();
            assert_eq!(err.kind(), ErrorKind::Corrupt, "{err}");
            assert!(
                err.to_string().contains(&format!("lists {count} MANIFEST")),
                "{err}"
            );
        }
    });
}

/// Found while benchmarking: `DB::open_cf` gives every column family RocksDB's default options, so a restored
/// DB lost the list merge operator (and bloom filters and the block cache). List elements appended in
/// several checkpoints are unmerged operands in the SST files; reading them needs the operator, on a plain
/// restore and on a rescale (which reads the other handles read-only).
#[test]
fn restored_column_families_keep_the_backend_options() {
    runtime().block_on(async {
        let storage = CheckpointStorage::in_memory("merge").unwrap();
        let mut coord = coordinator(&storage, 3, 1).await;
        let mut b = vec![lsm::<u64>(128, 1, 0)];
        let desc = ListStateDescriptor::<VoidNamespace, u64>::new("events");
        let list = b[0].list_state(&desc).unwrap();
        for round in 0..3u64 {
            for k in 0..300u64 {
                b[0].set_current_key(k).unwrap();
                list.add(&mut b[0], &NS, round).unwrap();
            }
            checkpoint(&mut coord, &mut b).await;
        }
        let meta = coord.store().latest().unwrap().clone();
        for parallelism in [1, 2] {
            // A new job in other storage: NO_CLAIM (CLAIM would reuse files its registry does not hold, and
            // the coordinator would decline the checkpoint).
            let mut coord2 = coordinator(
                &CheckpointStorage::in_memory("merge2").unwrap(),
                1,
                parallelism as usize,
            )
            .await;
            // Its ids continue after the restored checkpoint's (as Flink's checkpoint id counter).
            coord2
                .restored_from(&meta, RestoreMode::NoClaim)
                .await
                .unwrap();
            let mut restored = Vec::new();
            for i in 0..parallelism {
                let mut r = Lsm::restore(
                    identity(128, parallelism, i),
                    lsm_config(),
                    &storage,
                    &handles(&meta),
                    RestoreMode::NoClaim,
                )
                .await
                .unwrap();
                let list = r.list_state(&desc).unwrap();
                for k in (0..300u64).filter(|k| owner(k, 128, parallelism) == i as usize) {
                    r.set_current_key(k).unwrap();
                    assert_eq!(
                        list.get(&r, &NS).unwrap(),
                        vec![0, 1, 2],
                        "key {k} at parallelism {parallelism}"
                    );
                    list.add(&mut r, &NS, 3).unwrap();
                    assert_eq!(list.get(&r, &NS).unwrap(), vec![0, 1, 2, 3]);
                }
                restored.push(r);
            }
            checkpoint(&mut coord2, &mut restored).await;
        }
    });
}

/// The synchronous phase relies on `create_checkpoint` flushing every column family (it took 0.5 s tails when
/// a flush of our own came first, `benches/incremental.rs`): after a snapshot no memtable may hold an entry,
/// in any column family, and the checkpoint restores every write made before it.
#[test]
fn native_checkpoint_flushes_every_memtable() {
    runtime().block_on(async {
        let storage = CheckpointStorage::in_memory("flush").unwrap();
        let mut coord = coordinator(&storage, 2, 1).await;
        let mut b = vec![lsm::<u64>(128, 1, 0)];
        let other = ValueStateDescriptor::<VoidNamespace, u64>::new("other");
        let s = b[0].value_state(&other).unwrap();
        fill(&mut b[0], 0..500, 7);
        for k in 0..100u64 {
            b[0].set_current_key(k).unwrap();
            s.update(&mut b[0], &NS, k).unwrap();
        }
        let unflushed = |b: &Lsm| -> u64 {
            [
                "rocksdb.num-entries-active-mem-table",
                "rocksdb.num-entries-imm-mem-tables",
            ]
            .iter()
            .map(|p| b.aggregated_int_property(p).unwrap().unwrap())
            .sum()
        };
        assert!(unflushed(&b[0]) >= 600, "the writes start in memtables");
        checkpoint(&mut coord, &mut b).await;
        assert_eq!(
            unflushed(&b[0]),
            0,
            "a memtable kept entries after the snapshot"
        );
        let meta = coord.store().latest().unwrap().clone();
        let mut r = restore_lsm(&storage, &meta, RestoreMode::NoClaim).await;
        assert_eq!(read_counts(&mut r), (0..500).map(|k| (k, 7)).collect());
        assert_eq!(
            read_all(&mut r, &other),
            (0..100u64).map(|k| (k, k)).collect::<BTreeMap<_, _>>()
        );
    });
}

/// `RocksDbConfig::direct_io` reaches RocksDB (its OPTIONS file records what the DB runs with), and turning
/// it off gives buffered flushes.
#[test]
fn direct_io_setting_reaches_rocksdb() {
    for direct_io in [true, false] {
        let config = RocksDbConfig {
            direct_io,
            ..lsm_config()
        };
        let b = Lsm::new(identity(128, 1, 0), config).unwrap();
        let db_dir = b.instance_dir().join("db");
        let options = std::fs::read_dir(&db_dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| {
                p.file_name()
                    .unwrap()
                    .to_string_lossy()
                    .starts_with("OPTIONS-")
            })
            .max()
            .unwrap();
        let text = std::fs::read_to_string(options).unwrap();
        // Linux with a file system that takes O_DIRECT (every one this suite runs on) uses it when asked.
        let expected = direct_io && cfg!(target_os = "linux");
        assert!(
            text.contains(&format!(
                "use_direct_io_for_flush_and_compaction={expected}"
            )),
            "direct_io = {direct_io}"
        );
        drop(b);
    }
}

/// A canonical restore over the row count from which the RocksDB backend sorts and writes SST files on
/// several threads (a key-group range each): every thread count restores the same state, value and map
/// rows alike, at max parallelism 128 (1-byte key-group prefix) and 1024 (2 bytes).
#[test]
fn canonical_restore_writes_ssts_on_several_threads_with_the_same_rows() {
    runtime().block_on(async {
        for max_parallelism in [128, 1024] {
            let storage = CheckpointStorage::in_memory("sst-threads").unwrap();
            let mut heap = HeapKeyedStateBackend::<u64>::new(
                identity(max_parallelism, 1, 0),
                HeapConfig::default(),
            )
            .unwrap();
            let s = heap.value_state(&counts()).unwrap();
            let m = heap
                .map_state(&MapStateDescriptor::<VoidNamespace, u32, u64>::new("map"))
                .unwrap();
            const KEYS: u64 = 70_000;
            for k in 0..KEYS {
                heap.set_current_key(k).unwrap();
                s.update(&mut heap, &NS, k + 1).unwrap();
                m.put(&mut heap, &NS, (k % 3) as u32, k).unwrap();
                m.put(&mut heap, &NS, 7, k * 2).unwrap();
            }
            let handle = heap
                .snapshot(1, &storage)
                .unwrap()
                .run()
                .await
                .unwrap()
                .handle;
            for threads in [1, 3] {
                let config = RocksDbConfig {
                    restore_threads: threads,
                    ..lsm_config()
                };
                let what = format!("max parallelism {max_parallelism}, {threads} threads");
                let mut r = Lsm::restore(
                    identity(max_parallelism, 1, 0),
                    config,
                    &storage,
                    std::slice::from_ref(&handle),
                    RestoreMode::NoClaim,
                )
                .await
                .unwrap();
                let counts = read_counts(&mut r);
                assert_eq!(counts.len(), KEYS as usize, "{what}");
                assert!(counts.iter().all(|(k, v)| *v == k + 1), "{what}");
                let m = r
                    .map_state(&MapStateDescriptor::<VoidNamespace, u32, u64>::new("map"))
                    .unwrap();
                for k in (0..KEYS).step_by(97) {
                    r.set_current_key(k).unwrap();
                    let mut entries = m.entries(&r, &NS).unwrap();
                    entries.sort();
                    let mut expected = vec![((k % 3) as u32, k), (7, k * 2)];
                    expected.sort();
                    assert_eq!(entries, expected, "{what}, key {k}");
                }
            }
        }
    });
}
