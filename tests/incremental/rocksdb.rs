//! The RocksDB backend's incremental checkpoints and restore, and one test per known pitfall of
//! incremental checkpoints (Flink's and RocksDB's public bugs, `docs/lsm.md`; named after its bug). Restore checks and settings: `lsm_restore_checks.rs`.

#![cfg(feature = "rocksdb")]
use std::collections::BTreeMap;

use crate::common::faulty::FaultyStore;
use crate::common::*;
use object_store::ObjectStoreExt;
use statebackend::checkpoint::Discarded;
use statebackend::rocksdb::RocksDbKeyedStateBackend;
use statebackend::snapshot::layout::*;
use statebackend::snapshot::{FileScope, StateFile};
use statebackend::*;

type Lsm = RocksDbKeyedStateBackend<u64>;

#[test]
fn only_new_sst_files_upload_and_reused_files_are_byte_identical() {
    runtime().block_on(async {
        let storage = CheckpointStorage::in_memory("incr").unwrap();
        let mut coord = coordinator(&storage, 2, 1).await;
        let mut b = vec![lsm::<u64>(128, 1, 0)];
        fill(&mut b[0], 0..20_000, 1);
        let s1 = checkpoint(&mut coord, &mut b).await;
        assert!(s1.files_uploaded >= 1);
        assert_eq!(s1.files_reused, 0, "the first checkpoint is full");
        let first = coord.store().latest().unwrap().clone();
        let first_shared: Vec<StateFile> = first.shared_files().cloned().collect();
        fill(&mut b[0], 0..200, 2); // 1% of the keys
        let s2 = checkpoint(&mut coord, &mut b).await;
        let second = coord.store().latest().unwrap().clone();
        let new_ssts: Vec<&StateFile> = second
            .shared_files()
            .filter(|f| f.created_by == 2)
            .collect();
        assert_eq!(new_ssts.len(), 1, "one new SST for the updated keys");
        assert_eq!(
            s2.files_reused as usize,
            first_shared.len(),
            "every old SST is a placeholder"
        );
        for old in &first_shared {
            let reused = second.shared_files().find(|f| f.path == old.path).unwrap();
            assert_eq!(
                reused, old,
                "a placeholder is the original handle, unchanged"
            );
        }
        let private: u64 = second
            .files()
            .filter(|f| f.scope == FileScope::Private)
            .map(|f| f.size_bytes)
            .sum();
        assert_eq!(
            s2.checkpointed_bytes,
            new_ssts.iter().map(|f| f.size_bytes).sum::<u64>() + private,
            "uploaded = new SSTs + MANIFEST"
        );
        // One PUT per new SST plus one: the OPTIONS file is shared and unchanged, CURRENT is written by
        // the restore.
        assert_eq!(
            s2.files_uploaded as usize,
            new_ssts.len() + 1,
            "{s2:?} {:?}",
            second
                .files()
                .map(|f| (&f.local_name, f.created_by))
                .collect::<Vec<_>>()
        );
        let names = |c: &CheckpointMetadata| -> Vec<(String, FileScope, u64)> {
            c.files()
                .map(|f| (f.local_name.clone(), f.scope, f.created_by))
                .collect()
        };
        for (name, scope, created_by) in names(&second) {
            assert_ne!(name, "CURRENT", "CURRENT is not uploaded");
            if name.starts_with("OPTIONS-") {
                assert_eq!(
                    (scope, created_by),
                    (FileScope::Shared, 1),
                    "OPTIONS reused"
                );
            }
            if name.starts_with("MANIFEST-") {
                assert_eq!((scope, created_by), (FileScope::Private, 2));
            }
        }
        assert!(
            names(&second)
                .iter()
                .any(|(n, _, _)| n.starts_with("OPTIONS-"))
        );
        assert!(s2.checkpointed_bytes < s2.full_bytes / 2, "{s2:?}");
        assert_retained_files_intact(&coord, true).await;
        // The local native checkpoint directories are gone.
        let local = b[0].instance_dir().join("checkpoints");
        assert_eq!(std::fs::read_dir(&local).unwrap().count(), 0);
        let mut restored = restore_lsm(&storage, &second, RestoreMode::Claim).await;
        let model: BTreeMap<u64, u64> = (0..20_000)
            .map(|k| (k, if k < 200 { 2 } else { 1 }))
            .collect();
        assert_eq!(read_counts(&mut restored), model);
    });
}

#[test]
fn claim_restore_stays_incremental_and_no_claim_restore_is_full() {
    runtime().block_on(async {
        let storage = CheckpointStorage::in_memory("modes").unwrap();
        let mut coord = coordinator(&storage, 3, 1).await;
        let mut b = vec![lsm::<u64>(128, 1, 0)];
        fill(&mut b[0], 0..10_000, 1);
        checkpoint(&mut coord, &mut b).await;
        let meta = coord.store().latest().unwrap().clone();
        let mut claimed = vec![restore_lsm(&storage, &meta, RestoreMode::Claim).await];
        assert_eq!(claimed[0].backend_id(), b[0].backend_id());
        fill(&mut claimed[0], 0..10, 3);
        let s = checkpoint(&mut coord, &mut claimed).await;
        assert!(
            s.files_reused >= 1,
            "CLAIM: the restored SSTs are reused: {s:?}"
        );
        let mut fresh = vec![restore_lsm(&storage, &meta, RestoreMode::NoClaim).await];
        assert_ne!(fresh[0].backend_id(), b[0].backend_id());
        fill(&mut fresh[0], 0..10, 4);
        let s = checkpoint(&mut coord, &mut fresh).await;
        assert_eq!(
            s.files_reused, 0,
            "NO_CLAIM: the first checkpoint is full: {s:?}"
        );
        assert_retained_files_intact(&coord, true).await;
    });
}

#[test]
fn rescale_one_to_two_and_two_to_one_clips_key_groups() {
    runtime().block_on(async {
        let storage = CheckpointStorage::in_memory("rescale").unwrap();
        let mut coord = coordinator(&storage, 3, 1).await;
        let mut one = vec![lsm::<u64>(128, 1, 0)];
        fill(&mut one[0], 0..5_000, 7);
        checkpoint(&mut coord, &mut one).await;
        let meta = coord.store().latest().unwrap().clone();
        let mut two = Vec::new();
        for i in 0..2 {
            let mut b = Lsm::restore(
                identity(128, 2, i),
                lsm_config(),
                &storage,
                &handles(&meta),
                RestoreMode::Claim,
            )
            .await
            .unwrap();
            let got = read_counts(&mut b);
            assert!(
                got.keys().all(|k| owner(k, 128, 2) == i as usize),
                "only owned keys survive"
            );
            assert_eq!(
                got.len(),
                (0..5_000u64)
                    .filter(|k| owner(k, 128, 2) == i as usize)
                    .count()
            );
            two.push(b);
        }
        for b in &mut two {
            fill(b, 5_000..6_000, 8);
        }
        let mut coord2 = coordinator(&storage, 3, 2).await;
        checkpoint(&mut coord2, &mut two).await;
        let meta2 = coord2.store().latest().unwrap().clone();
        let mut back = restore_lsm(&storage, &meta2, RestoreMode::Claim).await;
        let expected: BTreeMap<u64, u64> = (0..6_000)
            .map(|k| (k, if k < 5_000 { 7 } else { 8 }))
            .collect();
        assert_eq!(read_counts(&mut back), expected);
    });
}

/// FLINK-25395: the diff base is the last *confirmed* checkpoint. Checkpoint 2 uploads and is then aborted
/// (its files deleted); checkpoint 3 must not reference any of them.
#[test]
fn flink_25395_unconfirmed_checkpoint_is_never_the_diff_base() {
    runtime().block_on(async {
        let storage = CheckpointStorage::in_memory("f25395").unwrap();
        let mut coord = coordinator(&storage, 1, 1).await;
        let mut b = vec![lsm::<u64>(128, 1, 0)];
        fill(&mut b[0], 0..5_000, 1);
        checkpoint(&mut coord, &mut b).await;
        fill(&mut b[0], 0..100, 2);
        let id2 = coord.trigger().await.unwrap();
        let result2 = b[0].snapshot(id2, &storage).unwrap().run().await.unwrap();
        let created_by_2: Vec<String> = result2
            .handle
            .files
            .iter()
            .filter(|f| f.created_by == id2 && f.scope == FileScope::Shared)
            .map(|f| f.path.clone())
            .collect();
        assert!(!created_by_2.is_empty());
        let task = TaskStateSnapshot {
            operator_id: "op".into(),
            keyed_state: Some(result2.handle),
            ..Default::default()
        };
        // The task acknowledged, but another task failed: the checkpoint is aborted.
        coord.abort(id2).await.unwrap();
        b[0].notify_checkpoint_aborted(id2);
        let late = coord.acknowledge(id2, task, None).await;
        assert_eq!(
            late.unwrap(),
            Acknowledgement::Discarded(Discarded::Aborted)
        );
        assert_eq!(b[0].diff_base_checkpoint(), Some(1));
        fill(&mut b[0], 100..200, 3);
        checkpoint(&mut coord, &mut b).await;
        let third = coord.store().latest().unwrap();
        assert!(third.files().all(|f| !created_by_2.contains(&f.path)));
        assert_retained_files_intact(&coord, true).await;
        let all = objects(&storage, None).await;
        assert!(
            created_by_2.iter().all(|p| !all.contains(p)),
            "the aborted uploads are deleted"
        );
    });
}

/// FLINK-23949: a savepoint's completion must not move the diff base; checkpoints after it stay
/// restorable when the savepoint is deleted.
#[test]
fn flink_23949_savepoint_never_moves_the_diff_base() {
    runtime().block_on(async {
        let storage = CheckpointStorage::in_memory("f23949").unwrap();
        let mut coord = coordinator(&storage, 2, 1).await;
        let mut b = vec![lsm::<u64>(128, 1, 0)];
        fill(&mut b[0], 0..5_000, 1);
        checkpoint(&mut coord, &mut b).await;
        fill(&mut b[0], 0..100, 2);
        // Savepoints take their ids from the same counter as checkpoints (as Flink).
        let sp_id = coord.trigger().await.unwrap();
        let sp = b[0]
            .savepoint(sp_id, &storage, SavepointFormat::Native)
            .unwrap()
            .run()
            .await
            .unwrap();
        assert_eq!(sp.metrics.files_reused, 0, "a savepoint is self-contained");
        assert!(
            sp.handle
                .files
                .iter()
                .all(|f| f.scope == FileScope::Private && f.path.starts_with("savepoints/"))
        );
        b[0].notify_checkpoint_complete(sp_id);
        assert_eq!(b[0].diff_base_checkpoint(), Some(1));
        storage
            .object_store()
            .delete(&storage.path(&sp.handle.files[0].path))
            .await
            .unwrap();
        for f in &sp.handle.files {
            let _ = storage.object_store().delete(&storage.path(&f.path)).await;
        }
        fill(&mut b[0], 100..200, 3);
        checkpoint(&mut coord, &mut b).await;
        assert_retained_files_intact(&coord, true).await;
        let latest = coord.store().latest().unwrap().clone();
        let mut restored = restore_lsm(&storage, &latest, RestoreMode::Claim).await;
        let got = read_counts(&mut restored);
        assert_eq!((got[&0], got[&150], got[&4_000]), (2, 3, 1));
    });
}

/// FLINK-30461: a checkpoint aborted while its asynchronous phase runs leaves no upload behind.
#[test]
fn flink_30461_abort_during_the_async_phase_deletes_its_uploads() {
    runtime().block_on(async {
        let storage = CheckpointStorage::in_memory("f30461").unwrap();
        let mut coord = coordinator(&storage, 1, 1).await;
        let mut b = vec![lsm::<u64>(128, 1, 0)];
        fill(&mut b[0], 0..5_000, 1);
        checkpoint(&mut coord, &mut b).await;
        let before = objects(&storage, None).await;
        fill(&mut b[0], 0..100, 2);
        let id = coord.trigger().await.unwrap();
        let pending = b[0].snapshot(id, &storage).unwrap();
        b[0].notify_checkpoint_aborted(id);
        coord.abort(id).await.unwrap();
        let err = pending.run().await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::IllegalState);
        let mut expected = before.clone();
        expected.push(format!("chk-{id}/{TRIGGER_MARKER}"));
        expected.sort();
        assert_eq!(
            objects(&storage, None).await,
            expected,
            "nothing of the aborted checkpoint remains but its id reservation"
        );
        assert_eq!(b[0].diff_base_checkpoint(), Some(1));
    });
}

/// A failing upload fails the asynchronous phase, deletes what it uploaded, keeps the previous
/// checkpoint and the diff base, and the next checkpoint works.
#[test]
fn failed_upload_deletes_partial_uploads_and_keeps_the_base() {
    runtime().block_on(async {
        let faulty = FaultyStore::new();
        let storage = CheckpointStorage::new(faulty.clone(), "faults").unwrap();
        let mut coord = coordinator(&storage, 1, 1).await;
        let mut b = vec![lsm::<u64>(128, 1, 0)];
        fill(&mut b[0], 0..5_000, 1);
        checkpoint(&mut coord, &mut b).await;
        let before = objects(&storage, None).await;
        fill(&mut b[0], 0..100, 2);
        faulty.fail_writes_to("MANIFEST");
        let id = coord.trigger().await.unwrap();
        let err = b[0]
            .snapshot(id, &storage)
            .unwrap()
            .run()
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Storage);
        coord.abort(id).await.unwrap();
        b[0].notify_checkpoint_aborted(id);
        let reserved = format!("chk-{id}/{TRIGGER_MARKER}");
        let mut expected = before.clone();
        expected.push(reserved);
        expected.sort();
        assert_eq!(objects(&storage, None).await, expected);
        faulty.heal();
        let s = checkpoint(&mut coord, &mut b).await;
        assert!(s.files_reused >= 1);
        assert_retained_files_intact(&coord, true).await;
    });
}

/// SPARK-43404 family: after a restore from an older checkpoint, RocksDB reuses file numbers of files that
/// a later (discarded) run uploaded. Same local name, different content: it must upload under a new name,
/// and the restored state must be the new one.
#[test]
fn spark_43404_reused_file_numbers_never_pass_for_uploaded_files() {
    runtime().block_on(async {
        let storage = CheckpointStorage::in_memory("spark").unwrap();
        let mut coord = coordinator(&storage, 20, 1).await;
        let mut b = vec![lsm::<u64>(128, 1, 0)];
        fill(&mut b[0], 0..3_000, 1);
        checkpoint(&mut coord, &mut b).await;
        let first = coord.store().latest().unwrap().clone();
        let mut run1: BTreeMap<String, StateFile> = BTreeMap::new();
        for round in 0..10 {
            fill(&mut b[0], round * 100..3_000, 2);
            checkpoint(&mut coord, &mut b).await;
            let meta = coord.store().latest().unwrap();
            run1.extend(
                meta.shared_files()
                    .filter(|f| f.created_by > 1)
                    .map(|f| (f.local_name.clone(), f.clone())),
            );
        }
        // Fall back to checkpoint 1 (say the later ones were lost) and write other data.
        let mut again = vec![restore_lsm(&storage, &first, RestoreMode::Claim).await];
        let mut clashes = 0;
        for round in 0..4 {
            fill(&mut again[0], round * 100..3_000, 3);
            checkpoint(&mut coord, &mut again).await;
            let meta = coord.store().latest().unwrap();
            for new in meta
                .shared_files()
                .filter(|f| f.created_by == meta.checkpoint_id)
            {
                if let Some(old) = run1.get(&new.local_name) {
                    clashes += 1;
                    assert_ne!(
                        new.path, old.path,
                        "same local name, different file: a new unique upload"
                    );
                }
            }
        }
        assert!(
            clashes > 0,
            "the restored DB reuses file numbers of the discarded run"
        );
        let latest = coord.store().latest().unwrap().clone();
        let mut restored = restore_lsm(&storage, &latest, RestoreMode::Claim).await;
        let got = read_counts(&mut restored);
        assert_eq!(got.len(), 3_000);
        assert!(got.values().all(|v| *v == 3), "only the new run's data");
        assert_retained_files_intact(&coord, true).await;
    });
}

/// Restore checks every downloaded file's size and CRC32 and names the bad file; a missing file is
/// NotFound; `restore_latest` then falls back to the previous checkpoint.
#[test]
fn corrupt_or_missing_sst_is_a_typed_error_and_restore_falls_back() {
    corrupt_or_missing_sst(CheckpointStorage::in_memory("corrupt").unwrap());
}

/// The same from a local directory, where restore hard-links SSTs and still verifies their CRC32.
#[test]
fn corrupt_or_missing_sst_in_a_local_directory_is_caught_despite_hard_links() {
    let dir = tempfile::tempdir().unwrap();
    corrupt_or_missing_sst(
        CheckpointStorage::local(
            dir.path(),
            "corrupt",
            &StorageConfig {
                fsync: false,
                ..StorageConfig::default()
            },
        )
        .unwrap(),
    );
}

fn corrupt_or_missing_sst(storage: CheckpointStorage) {
    runtime().block_on(async {
        let mut coord = coordinator(&storage, 2, 1).await;
        let mut b = vec![lsm::<u64>(128, 1, 0)];
        fill(&mut b[0], 0..3_000, 1);
        checkpoint(&mut coord, &mut b).await;
        fill(&mut b[0], 0..3_000, 2);
        checkpoint(&mut coord, &mut b).await;
        let latest = coord.store().latest().unwrap().clone();
        let victim = latest
            .shared_files()
            .find(|f| f.created_by == 2)
            .unwrap()
            .clone();
        let path = storage.path(&victim.path);
        let mut bytes = storage
            .object_store()
            .get(&path)
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap()
            .to_vec();
        let mid = bytes.len() / 2;
        bytes[mid] ^= 0x40;
        storage
            .object_store()
            .put(&path, bytes.into())
            .await
            .unwrap();
        let err = Lsm::restore(
            identity(128, 1, 0),
            lsm_config(),
            &storage,
            &handles(&latest),
            RestoreMode::Claim,
        )
        .await
        .err()
        .unwrap();
        assert_eq!(err.kind(), ErrorKind::Corrupt);
        assert!(err.to_string().contains(&victim.path), "{err}");
        let outcome = coord
            .store()
            .restore_latest(|meta| {
                let storage = storage.clone();
                async move {
                    Lsm::restore(
                        identity(128, 1, 0),
                        lsm_config(),
                        &storage,
                        &handles(&meta),
                        RestoreMode::Claim,
                    )
                    .await
                }
            })
            .await
            .unwrap();
        assert_eq!(outcome.checkpoint_id, 1);
        assert_eq!(outcome.skipped.len(), 1);
        let mut restored = outcome.value;
        assert!(read_counts(&mut restored).values().all(|v| *v == 1));
        storage.object_store().delete(&path).await.unwrap();
        let err = Lsm::restore(
            identity(128, 1, 0),
            lsm_config(),
            &storage,
            &handles(&latest),
            RestoreMode::Claim,
        )
        .await
        .err()
        .unwrap();
        assert_eq!(err.kind(), ErrorKind::NotFound);
    });
}
