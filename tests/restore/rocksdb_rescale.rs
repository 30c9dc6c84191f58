//! The RocksDB backend restored at another parallelism from its native checkpoints: the other handles'
//! SST files are ingested as they are into the larger overlap's database (or, where they reach beyond
//! their key groups, their rows copied), then it is clipped to the owned key groups (`docs/lsm.md`,
//! "Restore").

#![cfg(feature = "rocksdb")]
use std::collections::BTreeMap;

use crate::common::*;
use statebackend::rocksdb::{RocksDbConfig, RocksDbKeyedStateBackend};
use statebackend::*;

const NS: VoidNamespace = VoidNamespace;
type Lsm = RocksDbKeyedStateBackend<u64>;

fn config(restore_threads: usize) -> RocksDbConfig {
    RocksDbConfig {
        restore_threads,
        ..lsm_config()
    }
}

/// Each handle gives only the key groups it was written for, even when its database holds others: two
/// databases that both hold every key group, one handle claiming the lower half of them and one the upper
/// half, restore to the lower half of the first and the upper half of the second. Before, the database
/// opened as the base was clipped to the owned range only and the other's rows were copied over the
/// whole owned range: rows of the first handle's database in the second's key groups survived, and the
/// second's rows replaced the first's in the first's own key groups.
#[test]
fn a_handle_gives_only_the_key_groups_it_claims_on_a_rescale() {
    runtime().block_on(async {
        let storage = CheckpointStorage::in_memory("claims").unwrap();
        // Subtask 0 of 1 owns every key group; the same checkpoint id for both, as one checkpoint.
        let (mut a, mut b) = (lsm::<u64>(128, 1, 0), lsm::<u64>(128, 1, 0));
        fill(&mut a, 0..400, 1);
        fill(&mut b, (0..400).step_by(2), 2);
        let mut lower = a.snapshot(1, &storage).unwrap().run().await.unwrap().handle;
        let mut upper = b.snapshot(1, &storage).unwrap().run().await.unwrap().handle;
        lower.key_groups = KeyGroupRange::new(0, 63).unwrap();
        upper.key_groups = KeyGroupRange::new(64, 127).unwrap();
        let expected: BTreeMap<u64, u64> = (0..400u64)
            .filter_map(|k| match owner(&k, 128, 2) {
                // Key groups 0..=63 are those of subtask 0 of 2.
                0 => Some((k, 1)),
                _ => (k % 2 == 0).then_some((k, 2)),
            })
            .collect();
        for handles in [
            vec![lower.clone(), upper.clone()],
            vec![upper.clone(), lower.clone()],
        ] {
            for threads in [1, 3] {
                let mut restored = Lsm::restore(
                    identity(128, 1, 0),
                    config(threads),
                    &storage,
                    &handles,
                    RestoreMode::NoClaim,
                )
                .await
                .unwrap();
                assert_eq!(read_counts(&mut restored), expected, "{threads} threads");
            }
        }
    });
}

/// Value, list (elements appended in two checkpoints: merge operands in the SST files) and map states
/// checkpointed at one parallelism restore at every other one with exactly their rows, on one restore
/// thread and on several (several SST files per column family, ingested together).
#[test]
fn rescales_keep_every_row_of_every_state() {
    runtime().block_on(async {
        let list = ListStateDescriptor::<VoidNamespace, u64>::new("events");
        let map = MapStateDescriptor::<VoidNamespace, u64, u64>::new("seen");
        for (from, to) in [(2u32, 3u32), (3, 2), (3, 1), (1, 4)] {
            let storage = CheckpointStorage::in_memory(&format!("rescale-{from}-{to}")).unwrap();
            let mut coord = coordinator(&storage, 1, from as usize).await;
            let mut backends: Vec<Lsm> = (0..from).map(|i| lsm(128, from, i)).collect();
            for round in 0..2u64 {
                for b in &mut backends {
                    fill(b, 0..3000, round + 10);
                    let (l, m) = (b.list_state(&list).unwrap(), b.map_state(&map).unwrap());
                    for k in 0..3000u64 {
                        if b.set_current_key(k).is_ok() {
                            l.add(b, &NS, k + round).unwrap();
                            m.put(b, &NS, round, k * 2).unwrap();
                        }
                    }
                }
                checkpoint(&mut coord, &mut backends).await;
            }
            let meta = coord.store().latest().unwrap().clone();
            for threads in [1, 3] {
                let (mut counts, mut lists, mut maps) = (BTreeMap::new(), 0usize, 0usize);
                for i in 0..to {
                    let mut b = Lsm::restore(
                        identity(128, to, i),
                        config(threads),
                        &storage,
                        &handles(&meta),
                        RestoreMode::NoClaim,
                    )
                    .await
                    .unwrap();
                    let (l, m) = (b.list_state(&list).unwrap(), b.map_state(&map).unwrap());
                    for k in 0..3000u64 {
                        if owner(&k, 128, to) != i as usize {
                            continue;
                        }
                        b.set_current_key(k).unwrap();
                        assert_eq!(l.get(&b, &NS).unwrap(), vec![k, k + 1], "key {k}");
                        lists += 1;
                        for round in 0..2u64 {
                            assert_eq!(m.get(&b, &NS, &round).unwrap(), Some(k * 2));
                        }
                        maps += 1;
                    }
                    for (k, v) in read_counts(&mut b) {
                        assert_eq!(owner(&k, 128, to), i as usize, "key {k} on subtask {i}");
                        assert!(counts.insert(k, v).is_none(), "key {k} twice");
                    }
                }
                let expected: BTreeMap<u64, u64> = (0..3000).map(|k| (k, 11)).collect();
                assert_eq!(counts, expected, "{from} -> {to}, {threads} threads");
                assert_eq!((lists, maps), (3000, 3000));
            }
        }
    });
}

/// Rescales in a row (2 -> 3 -> 2 -> 1 -> 3) with overwrites and deletions between them keep exactly the
/// model. The first takes the other subtask's SST files as they are; later ones meet files holding the
/// range tombstones of the rescale before (until a compaction drops them), which reach beyond the key
/// groups their handle claims, so those column families' rows are copied instead: both ways give the
/// same rows.
#[test]
fn rescales_in_a_row_keep_the_model_whether_files_are_ingested_or_rows_copied() {
    runtime().block_on(async {
        let mut model: BTreeMap<u64, u64> = BTreeMap::new();
        let mut parallelism = 2u32;
        let mut backends: Vec<Lsm> = (0..parallelism).map(|i| lsm(128, parallelism, i)).collect();
        let storage = CheckpointStorage::in_memory("in-a-row").unwrap();
        for (stage, next) in [3u32, 2, 1, 3].into_iter().enumerate() {
            let (stage, from) = (stage as u64, stage as u64 * 500);
            for b in &mut backends {
                fill(b, from..from + 2000, stage + 1);
                let s = b.value_state(&counts()).unwrap();
                for k in (0..3000u64).step_by(7 + stage as usize) {
                    if b.set_current_key(k).is_ok() {
                        s.clear(b, &NS).unwrap();
                    }
                }
            }
            model.extend((from..from + 2000).map(|k| (k, stage + 1)));
            for k in (0..3000u64).step_by(7 + stage as usize) {
                model.remove(&k);
            }
            // The job's storage; a coordinator of each parallelism in turn, ids going on.
            let mut coord = coordinator(&storage, 1, parallelism as usize).await;
            checkpoint(&mut coord, &mut backends).await;
            let meta = coord.store().latest().unwrap().clone();
            backends.clear();
            let mut seen = BTreeMap::new();
            for i in 0..next {
                let mut b = Lsm::restore(
                    identity(128, next, i),
                    config(2),
                    &storage,
                    &handles(&meta),
                    RestoreMode::NoClaim,
                )
                .await
                .unwrap();
                for (k, v) in read_counts(&mut b) {
                    assert_eq!(owner(&k, 128, next), i as usize, "key {k} on subtask {i}");
                    assert!(seen.insert(k, v).is_none(), "key {k} twice");
                }
                backends.push(b);
            }
            assert_eq!(seen, model, "after the rescale {parallelism} -> {next}");
            parallelism = next;
        }
    });
}

/// A rescaled database compacts by itself once clipped: the restore opens it with automatic compactions
/// off (so that the clip's writes never wait behind the level-0 files several handles brought) and
/// must turn them on again. Two databases whose state has three level-0 files each (one per checkpoint,
/// below RocksDB's trigger of 4) rescale into one whose state has six; it must come back below the
/// trigger. The `default` column family (the states' descriptions) holds one level-0 file throughout.
#[test]
fn a_rescaled_database_compacts_once_clipped() {
    runtime().block_on(async {
        let storage = CheckpointStorage::in_memory("compacts").unwrap();
        let mut handles = Vec::new();
        for subtask in 0..2 {
            let mut b: Lsm = lsm(128, 2, subtask);
            let mut last = None;
            for id in 1..=3u64 {
                fill(&mut b, (id * 1000)..(id * 1000 + 500), id);
                last = Some(
                    b.snapshot(id, &storage)
                        .unwrap()
                        .run()
                        .await
                        .unwrap()
                        .handle,
                );
            }
            let level0 = b.aggregated_int_property("rocksdb.num-files-at-level0");
            assert_eq!(
                level0.unwrap(),
                Some(3 + 1),
                "subtask {subtask} before the rescale"
            );
            handles.push(last.unwrap());
        }
        let restored = Lsm::restore(
            identity(128, 1, 0),
            config(1),
            &storage,
            &handles,
            RestoreMode::NoClaim,
        )
        .await
        .unwrap();
        let level0 = || {
            (restored.aggregated_int_property("rocksdb.num-files-at-level0"))
                .unwrap()
                .unwrap()
        };
        // A bound on the wait, not a timing: RocksDB compacts six small files in milliseconds.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while level0() > 3 + 1 && std::time::Instant::now() < deadline {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        assert!(
            level0() <= 3 + 1,
            "{} level-0 files a minute after the restore",
            level0()
        );
    });
}
