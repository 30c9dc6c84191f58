//! Regression tests of the production fault model on the backends (`docs/faults.md`): a diff base that
//! does not belong to the job's line, and codec versions that differ across subtasks. The coordinator's
//! share is `tests/completion/faults.rs`.

use crate::common::*;
use statebackend::heap::{HeapConfig, HeapKeyedStateBackend};
#[cfg(feature = "rocksdb")]
use statebackend::rocksdb::RocksDbKeyedStateBackend;
use statebackend::*;

#[cfg(feature = "rocksdb")]
type Lsm = RocksDbKeyedStateBackend<u64>;

/// A NO_CLAIM restore followed by a CLAIM failover before the first checkpoint kept the pinned snapshot's
/// files as the RocksDB backend's diff base for ever: the job's checkpoints depended on files it does not own.
/// The coordinator never lets a checkpoint reuse a pinned checkpoint's files, and a backend whose base
/// came from a restore drops it at the first such decline.
#[cfg(feature = "rocksdb")]
#[test]
fn pinned_checkpoint_files_are_never_the_base_after_a_claim_failover() {
    runtime().block_on(async {
        let storage = CheckpointStorage::in_memory("pinned").unwrap();
        let mut coord = coordinator(&storage, 1, 1).await;
        let mut b = lsm::<u64>(128, 1, 0);
        fill(&mut b, 0..2_000, 1);
        checkpoint(&mut coord, std::slice::from_mut(&mut b)).await;
        drop(coord);
        // A new job starts from checkpoint 1 in NO_CLAIM mode and fails before its first checkpoint.
        let mut coord = coordinator(&storage, 1, 1).await;
        let meta = coord.store().get(1).unwrap().clone();
        coord
            .restored_from(&meta, RestoreMode::NoClaim)
            .await
            .unwrap();
        let pinned: Vec<String> = meta.shared_files().map(|f| f.path.clone()).collect();
        drop(coord);
        // Its failover restores the pinned checkpoint in CLAIM mode (an engine that does not ask the store
        // for the mode): the backend takes the pinned files as its base.
        let mut coord = coordinator(&storage, 1, 1).await;
        assert_eq!(
            coord.store().restore_mode(1, RestoreMode::Claim),
            RestoreMode::NoClaim
        );
        let mut r = restore_lsm(&storage, &meta, RestoreMode::Claim).await;
        coord
            .restored_from(&meta, RestoreMode::Claim)
            .await
            .unwrap();
        fill(&mut r, 0..10, 2);
        let id = coord.trigger().await.unwrap();
        let result = r.snapshot(id, &storage).unwrap().run().await.unwrap();
        let answer = coord.acknowledge(id, ack(0, &result), None).await.unwrap();
        assert!(
            matches!(
                answer,
                Acknowledgement::Declined(Declined::UnavailableFiles(_))
            ),
            "{answer:?}"
        );
        r.notify_checkpoint_aborted(id);
        // The next checkpoint uploads everything and completes.
        let stats = checkpoint(&mut coord, std::slice::from_mut(&mut r)).await;
        assert_eq!(stats.files_reused, 0, "{stats:?}");
        let latest = coord.store().latest().unwrap();
        assert!(latest.files().all(|f| !pinned.contains(&f.path)));
        assert!(coord.store().pinned().iter().any(|p| p.checkpoint_id == 1));
    });
}

/// A CLAIM restore from another storage seeded the RocksDB backend's diff base with the source's paths, so
/// its checkpoints in its own storage reused files that are not there and were declined until the third
/// abort. A base is reused only in the storage it lives in.
#[cfg(feature = "rocksdb")]
#[test]
fn claim_from_another_storage_uploads_everything() {
    runtime().block_on(async {
        let source = CheckpointStorage::in_memory("source").unwrap();
        let mut old = coordinator(&source, 1, 1).await;
        let mut b = lsm::<u64>(128, 1, 0);
        fill(&mut b, 0..2_000, 1);
        checkpoint(&mut old, std::slice::from_mut(&mut b)).await;
        let meta = old.store().latest().unwrap().clone();
        let storage = CheckpointStorage::in_memory("job").unwrap();
        let mut coord = coordinator(&storage, 1, 1).await;
        let mut r: Lsm = restore_lsm(&source, &meta, RestoreMode::Claim).await;
        coord
            .restored_from(&meta, RestoreMode::Claim)
            .await
            .unwrap();
        fill(&mut r, 0..10, 2);
        let stats = checkpoint(&mut coord, std::slice::from_mut(&mut r)).await;
        assert_eq!(stats.files_reused, 0, "{stats:?}");
        assert_retained_files_intact(&coord, true).await;
        // Back in the storage it lives in, a base is reused as before.
        fill(&mut r, 0..10, 3);
        let stats = checkpoint(&mut coord, std::slice::from_mut(&mut r)).await;
        assert!(stats.files_reused > 0, "{stats:?}");
    });
}

/// Subtasks whose files describe a state with different codec versions (a partly upgraded job) made a
/// restore fail with `Corrupt`, so `restore_latest` fell back to an older checkpoint in silence. It is
/// `IncompatibleSchema`, which never falls back.
#[test]
fn mixed_codec_versions_across_subtasks_are_incompatible_not_corrupt() {
    runtime().block_on(async {
        let storage = CheckpointStorage::in_memory("mixed").unwrap();
        let mut coord = coordinator(&storage, 2, 2).await;
        let mut b: Vec<HeapKeyedStateBackend<u64>> = (0..2)
            .map(|i| {
                HeapKeyedStateBackend::new(identity(128, 2, i), HeapConfig::default()).unwrap()
            })
            .collect();
        for x in &mut b {
            fill(x, 0..100, 1);
        }
        checkpoint(&mut coord, &mut b).await;
        // Subtask 1 runs a newer release whose value type is `u32`.
        let mut newer = vec![
            HeapKeyedStateBackend::<u64>::new(identity(128, 2, 0), HeapConfig::default()).unwrap(),
            HeapKeyedStateBackend::<u64>::new(identity(128, 2, 1), HeapConfig::default()).unwrap(),
        ];
        fill(&mut newer[0], 0..100, 2);
        let other = ValueStateDescriptor::<VoidNamespace, u32>::new("counts");
        let s = newer[1].value_state(&other).unwrap();
        for k in 0..100u64 {
            if newer[1].set_current_key(k).is_ok() {
                s.update(&mut newer[1], &VoidNamespace, 3).unwrap();
            }
        }
        checkpoint(&mut coord, &mut newer).await;
        let err = coord
            .store()
            .restore_latest(|meta| {
                let storage = storage.clone();
                async move { restore::<u64>(&storage, &meta, 128, 1).await }
            })
            .await
            .map(|_| ())
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{err}");
        assert!(matches!(err, Error::IncompatibleSchema { .. }), "{err}");
    });
}
