//! Regression tests of defects that could lose a checkpoint, on the RocksDB backend: one per defect,
//! named after it (`docs/protocol.md`). The coordinator's and the heap backend's are in
//! `tests/completion/protocol.rs`.

#![cfg(feature = "rocksdb")]
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::common::faulty::{Fault, FaultyStore};
use crate::common::*;
use statebackend::rocksdb::{RocksDbConfig, RocksDbKeyedStateBackend};
use statebackend::snapshot::FileScope;
use statebackend::*;

type Lsm = RocksDbKeyedStateBackend<u64>;

fn values(b: &mut Lsm) -> BTreeMap<u64, u64> {
    read_all(b, &counts())
}

/// Compacts every column family into as few files as possible (rewriting overlapping ones).
fn compact_all(b: &Lsm) {
    b.compact().expect("compaction");
}

/// Shared files `result` uploaded itself.
fn new_shared(result: &SnapshotResult) -> Vec<String> {
    result
        .handle
        .files
        .iter()
        .filter(|f| f.scope == FileScope::Shared && f.created_by == result.handle.checkpoint_id)
        .map(|f| f.path.clone())
        .collect()
}

#[test]
fn lsm_retried_acknowledgement_never_deletes_new_ssts() {
    runtime().block_on(async {
        let storage = CheckpointStorage::in_memory("lsm-retried").unwrap();
        let mut coord = coordinator(&storage, 1, 1).await;
        let mut b = lsm::<u64>(128, 1, 0);
        fill(&mut b, 0..2_000, 1);
        let id = coord.trigger().await.unwrap();
        let result = b.snapshot(id, &storage).unwrap().run().await.unwrap();
        let done = coord.acknowledge(id, ack(0, &result), None).await;
        assert!(matches!(done, Ok(Acknowledgement::Completed(_))));
        b.notify_checkpoint_complete(id);
        let again = coord.acknowledge(id, ack(0, &result), None).await;
        assert_eq!(again.unwrap(), Acknowledgement::Duplicate);
        for path in new_shared(&result) {
            assert!(exists(&storage, &path).await, "{path}");
        }
        assert_retained_files_intact(&coord, true).await;
        // The next checkpoint reuses those files and completes.
        fill(&mut b, 0..10, 2);
        let stats = checkpoint(&mut coord, std::slice::from_mut(&mut b)).await;
        assert!(stats.files_reused >= 1, "{stats:?}");
    });
}

#[test]
fn lsm_backend_never_deletes_the_directory_it_is_given() {
    runtime().block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let precious = dir.path().join("engine-state.db");
        std::fs::write(&precious, b"not the backend's").unwrap();
        let config = RocksDbConfig {
            local_dir: dir.path().into(),
            ..RocksDbConfig::default()
        };
        let storage = CheckpointStorage::in_memory("own-dir").unwrap();
        let mut coord = coordinator(&storage, 1, 1).await;
        let mut b = Lsm::new(identity(128, 1, 0), config.clone()).unwrap();
        let mut second = Lsm::new(identity(128, 1, 0), config.clone()).unwrap();
        assert_ne!(b.instance_dir(), second.instance_dir());
        assert!(b.instance_dir().starts_with(dir.path()));
        fill(&mut b, 0..100, 1);
        fill(&mut second, 0..100, 2);
        checkpoint(&mut coord, std::slice::from_mut(&mut b)).await;
        let meta = coord.store().latest().unwrap().clone();
        let restored = Lsm::restore(
            identity(128, 1, 0),
            config,
            &storage,
            &handles(&meta),
            RestoreMode::Claim,
        )
        .await
        .unwrap();
        let instances = [
            b.instance_dir().to_path_buf(),
            restored.instance_dir().to_path_buf(),
        ];
        drop(b);
        drop(restored);
        assert!(
            instances.iter().all(|d| !d.exists()),
            "each removes its own"
        );
        assert_eq!(std::fs::read(&precious).unwrap(), b"not the backend's");
        assert_eq!(
            values(&mut second).len(),
            100,
            "a sibling backend is untouched"
        );
    });
}

/// Two lineages of one subtask share a base: `stale` keeps running (a task the engine has not fenced yet)
/// while `successor`, restored from the same checkpoint in CLAIM mode, compacts and completes a checkpoint
/// that subsumes the base's files. Every checkpoint of `stale` now reuses deleted files and is declined.
async fn stale_lineage() -> (CheckpointStorage, CheckpointCoordinator, Lsm) {
    let storage = CheckpointStorage::in_memory("rebase").unwrap();
    let mut coord = coordinator(&storage, 1, 1).await;
    let mut stale = lsm::<u64>(128, 1, 0);
    fill(&mut stale, 0..2_000, 1);
    checkpoint(&mut coord, std::slice::from_mut(&mut stale)).await;
    let meta = coord.store().latest().unwrap().clone();
    let mut successor = restore_lsm(&storage, &meta, RestoreMode::Claim).await;
    // Every key rewritten and merged: none of the base's files survives in the successor.
    fill(&mut successor, 0..2_000, 5);
    compact_all(&successor);
    checkpoint(&mut coord, std::slice::from_mut(&mut successor)).await;
    assert_eq!(stale.diff_base_checkpoint(), Some(1));
    (storage, coord, stale)
}

/// Snapshots `b` for a new checkpoint and acknowledges it: declined, the abort notified.
async fn declined(coord: &mut CheckpointCoordinator, b: &mut Lsm) {
    let storage = coord.storage().clone();
    let id = coord.trigger().await.unwrap();
    let r = b.snapshot(id, &storage).unwrap().run().await.unwrap();
    let answer = coord.acknowledge(id, ack(0, &r), None).await.unwrap();
    assert!(
        matches!(
            answer,
            Acknowledgement::Declined(Declined::UnavailableFiles(_))
        ),
        "{answer:?}"
    );
    b.notify_checkpoint_aborted(id);
}

#[test]
fn repeatedly_declined_checkpoint_rebases_instead_of_declining_forever() {
    runtime().block_on(async {
        let (storage, mut coord, mut stale) = stale_lineage().await;
        for _ in 0..2 {
            declined(&mut coord, &mut stale).await;
            assert_eq!(
                stale.diff_base_checkpoint(),
                Some(1),
                "one abort keeps the base"
            );
        }
        declined(&mut coord, &mut stale).await;
        assert_eq!(stale.diff_base_checkpoint(), None, "rebased after three");
        let stats = checkpoint(&mut coord, std::slice::from_mut(&mut stale)).await;
        assert_eq!(stats.files_reused, 0, "{stats:?}");
        assert_retained_files_intact(&coord, true).await;
        let meta = coord.store().latest().unwrap().clone();
        let mut r = restore_lsm(&storage, &meta, RestoreMode::Claim).await;
        assert_eq!(values(&mut r).len(), 2_000);
    });
}

#[test]
fn lost_notification_rebases_at_the_next_decline() {
    runtime().block_on(async {
        let (storage, mut coord, mut stale) = stale_lineage().await;
        // A checkpoint of `stale` uploads; what becomes of it never reaches the backend.
        fill(&mut stale, 0..10, 2);
        let id = coord.trigger().await.unwrap();
        let r = stale.snapshot(id, &storage).unwrap().run().await.unwrap();
        let _ = coord.acknowledge(id, ack(0, &r), None).await;
        // It reuses the deleted files too and is declined, and that abort notification is lost: the next
        // decline finds an older upload never resolved, so the base cannot be trusted.
        declined(&mut coord, &mut stale).await;
        assert_eq!(stale.diff_base_checkpoint(), None);
        let stats = checkpoint(&mut coord, std::slice::from_mut(&mut stale)).await;
        assert_eq!(stats.files_reused, 0, "{stats:?}");
    });
}

#[test]
fn failed_shared_delete_keeps_the_file_registered_and_the_next_checkpoint_completes() {
    runtime().block_on(async {
        let faulty = FaultyStore::new();
        let storage = CheckpointStorage::new(faulty.clone(), "gc-fails").unwrap();
        let mut coord = coordinator(&storage, 1, 1).await;
        let mut b = lsm::<u64>(128, 1, 0);
        fill(&mut b, 0..2_000, 1);
        checkpoint(&mut coord, std::slice::from_mut(&mut b)).await;
        let first: Vec<String> = coord
            .store()
            .latest()
            .unwrap()
            .shared_files()
            .map(|f| f.path.clone())
            .collect();
        // Checkpoint 2 replaces every file (every key rewritten, then a full compaction merges all);
        // deleting the old ones fails.
        fill(&mut b, 0..2_000, 2);
        compact_all(&b);
        faulty.arm("shared/", Fault::FailDelete);
        let stats = checkpoint(&mut coord, std::slice::from_mut(&mut b)).await;
        assert_eq!(
            stats.subsumed,
            vec![1],
            "complete, and checkpoint 1 subsumed"
        );
        assert!(!stats.cleanup_warnings.is_empty(), "{stats:?}");
        let second: Vec<String> = coord
            .store()
            .latest()
            .unwrap()
            .shared_files()
            .map(|f| f.path.clone())
            .collect();
        let unused: Vec<&String> = first.iter().filter(|p| !second.contains(p)).collect();
        assert!(
            !unused.is_empty(),
            "the compaction rewrote the state's files"
        );
        // No checkpoint uses them any more, and their delete failed (perhaps after it took effect):
        // chosen for deletion, never reusable, the delete retried at the next completion.
        let doomed = coord.store().registry().doomed();
        for path in &unused {
            assert!(
                doomed.contains(path) && !coord.store().references(path),
                "{path} is not doomed: {doomed:?}"
            );
        }
        faulty.heal();
        let stats = checkpoint(&mut coord, std::slice::from_mut(&mut b)).await;
        assert!(
            stats.registry.deleted_files >= unused.len(),
            "retried: {stats:?}"
        );
        for path in unused {
            assert!(!exists(&storage, path).await, "{path}");
        }
        assert_retained_files_intact(&coord, true).await;
    });
}

#[test]
fn lsm_notifications_for_unknown_or_aborted_checkpoints_are_ignored() {
    runtime().block_on(async {
        let storage = CheckpointStorage::in_memory("lsm-notify").unwrap();
        let mut coord = coordinator(&storage, 3, 1).await;
        let mut b = lsm::<u64>(128, 1, 0);
        fill(&mut b, 0..1_000, 1);
        checkpoint(&mut coord, std::slice::from_mut(&mut b)).await;
        assert_eq!(b.diff_base_checkpoint(), Some(1));
        // A finished upload of checkpoint 2 waits for its completion.
        fill(&mut b, 0..10, 2);
        let id2 = coord.trigger().await.unwrap();
        let r2 = b.snapshot(id2, &storage).unwrap().run().await.unwrap();
        // A completion of a checkpoint this backend never snapshotted changes nothing.
        b.notify_checkpoint_complete(id2 + 40);
        assert_eq!(b.diff_base_checkpoint(), Some(1));
        coord.acknowledge(id2, ack(0, &r2), None).await.unwrap();
        b.notify_checkpoint_complete(id2);
        assert_eq!(
            b.diff_base_checkpoint(),
            Some(id2),
            "checkpoint 2 stayed pending"
        );
        // An aborted checkpoint never becomes the base, whatever is notified later.
        fill(&mut b, 0..10, 3);
        let id3 = coord.trigger().await.unwrap();
        let _r3 = b.snapshot(id3, &storage).unwrap().run().await.unwrap();
        coord.abort(id3).await.unwrap();
        b.notify_checkpoint_aborted(id3);
        b.notify_checkpoint_complete(id3);
        assert_eq!(b.diff_base_checkpoint(), Some(id2));
        let stats = checkpoint(&mut coord, std::slice::from_mut(&mut b)).await;
        assert!(
            stats.files_reused >= 1,
            "still incremental on base 2: {stats:?}"
        );
        assert_retained_files_intact(&coord, true).await;
    });
}

#[test]
fn dropped_pending_snapshot_removes_its_hard_link_directory() {
    runtime().block_on(async {
        let storage = CheckpointStorage::in_memory("drop").unwrap();
        let mut b = lsm::<u64>(128, 1, 0);
        fill(&mut b, 0..1_000, 1);
        let local = b.instance_dir().join("checkpoints").join("chk-1");
        let pending = b.snapshot(1, &storage).unwrap();
        assert!(
            local.exists(),
            "the native checkpoint is there until the upload"
        );
        drop(pending);
        assert!(
            !local.exists(),
            "a cancelled snapshot leaves no hard links behind"
        );
        // Nor a pending entry: its completion cannot make it the base.
        b.notify_checkpoint_complete(1);
        assert_eq!(b.diff_base_checkpoint(), None);
    });
}

#[test]
fn lsm_restore_checks_coverage_operator_and_checkpoint() {
    runtime().block_on(async {
        let storage = CheckpointStorage::in_memory("lsm-coverage").unwrap();
        let mut coord = coordinator(&storage, 2, 2).await;
        let mut b = vec![lsm::<u64>(128, 2, 0), lsm::<u64>(128, 2, 1)];
        for x in &mut b {
            fill(x, 0..400, 1);
        }
        checkpoint(&mut coord, &mut b).await;
        checkpoint(&mut coord, &mut b).await;
        let ids: Vec<u64> = coord
            .store()
            .checkpoints()
            .map(|m| m.checkpoint_id)
            .collect();
        let first = handles(coord.store().get(ids[0]).unwrap());
        let second = handles(coord.store().get(ids[1]).unwrap());
        let mut other_operator = second.clone();
        other_operator[1].operator_id = "elsewhere".into();
        let cases: [(&str, Vec<KeyedStateHandle>); 4] = [
            ("no handles", vec![]),
            ("half the handles", vec![second[0].clone()]),
            ("two checkpoints", vec![first[0].clone(), second[1].clone()]),
            ("another operator", other_operator),
        ];
        for (name, hs) in cases {
            let err = Lsm::restore(
                identity(128, 1, 0),
                lsm_config(),
                &storage,
                &hs,
                RestoreMode::Claim,
            )
            .await
            .map(|_| ())
            .unwrap_err();
            assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{name}: {err}");
        }
        let mut whole = Lsm::restore(
            identity(128, 1, 0),
            lsm_config(),
            &storage,
            &second,
            RestoreMode::Claim,
        )
        .await
        .unwrap();
        assert_eq!(values(&mut whole).len(), 400);
    });
}

#[test]
fn no_claim_lsm_checkpoint_files_survive_restarts_subsumption_and_sweeps() {
    runtime().block_on(async {
        let storage = CheckpointStorage::in_memory("lsm-noclaim").unwrap();
        let mut coord = coordinator(&storage, 1, 1).await;
        let mut b = lsm::<u64>(128, 1, 0);
        fill(&mut b, 0..1_000, 1);
        checkpoint(&mut coord, std::slice::from_mut(&mut b)).await;
        drop(coord);
        let clock = Arc::new(ManualClock::new(SystemTime::now()));
        let open = || {
            CheckpointCoordinator::open_with_clock(
                storage.clone(),
                CoordinatorConfig::single_operator("op", 1, 1),
                clock.clone(),
            )
        };
        let mut coord = open().await.unwrap();
        let meta = coord.store().get(1).unwrap().clone();
        coord
            .restored_from(&meta, RestoreMode::NoClaim)
            .await
            .unwrap();
        let mut r = restore_lsm(&storage, &meta, RestoreMode::NoClaim).await;
        drop(coord);
        let mut coord = open().await.unwrap();
        fill(&mut r, 0..10, 2);
        let stats = checkpoint(&mut coord, std::slice::from_mut(&mut r)).await;
        assert_eq!(
            stats.files_reused, 0,
            "NO_CLAIM: the first checkpoint is full"
        );
        checkpoint(&mut coord, std::slice::from_mut(&mut r)).await;
        clock.advance(Duration::from_secs(3600));
        coord.sweep_orphans(Duration::from_secs(60)).await.unwrap();
        drop(coord);
        let coord = open().await.unwrap();
        assert_eq!(coord.store().pinned().len(), 1);
        for f in meta.files() {
            assert!(exists(&storage, &f.path).await, "{}", f.path);
        }
        let mut again = restore_lsm(&storage, &meta, RestoreMode::NoClaim).await;
        assert_eq!(values(&mut again).get(&3), Some(&1));
    });
}

#[test]
fn dead_instances_directories_are_removed_by_the_next_backend_and_live_ones_kept() {
    let dir = tempfile::tempdir().unwrap();
    let config = RocksDbConfig {
        local_dir: dir.path().into(),
        ..RocksDbConfig::default()
    };
    let live = Lsm::new(identity(128, 1, 0), config.clone()).unwrap();
    let lock = |d: &std::path::Path| d.join("statebackend-instance.lock");
    // A backend in another process: `flock` holds the lock of an instance directory, as a running
    // backend does; then the process is killed with SIGKILL.
    let killed = dir.path().join("op-3-killedinstance");
    std::fs::create_dir_all(killed.join("db")).unwrap();
    std::fs::write(killed.join("db/000012.sst"), vec![1u8; 1 << 16]).unwrap();
    std::fs::write(lock(&killed), b"pid 4242\n").unwrap();
    // `-o`: only `flock` itself holds the lock, not the command it runs (which the kill leaves behind).
    let mut holder = std::process::Command::new("flock")
        .arg("-o")
        .arg(lock(&killed))
        .args(["sleep", "30"])
        .spawn()
        .expect("flock (util-linux)");
    // Until the holder has the lock, it is not a live instance yet: wait for it.
    for _ in 0..200 {
        let f = std::fs::File::options()
            .write(true)
            .open(lock(&killed))
            .unwrap();
        match f.try_lock() {
            Err(std::fs::TryLockError::WouldBlock) => break,
            _ => std::thread::sleep(std::time::Duration::from_millis(10)),
        }
    }
    let foreign = dir.path().join("op-0-notaninstance");
    std::fs::create_dir_all(&foreign).unwrap();
    std::fs::write(foreign.join("data"), b"someone else's").unwrap();
    // While the other process lives, its directory is locked: a second backend leaves it.
    let second = Lsm::new(identity(128, 1, 0), config.clone()).unwrap();
    assert!(killed.exists(), "a live instance's directory was removed");
    holder.kill().unwrap();
    holder.wait().unwrap();
    // After the kill, the next backend removes it; live and foreign directories stay.
    let third = Lsm::new(identity(128, 1, 0), config).unwrap();
    assert!(!killed.exists(), "a dead instance's directory stayed");
    for d in [
        live.instance_dir(),
        second.instance_dir(),
        third.instance_dir(),
    ] {
        assert!(d.exists());
        let f = std::fs::File::options().write(true).open(lock(d)).unwrap();
        assert!(
            matches!(f.try_lock(), Err(std::fs::TryLockError::WouldBlock)),
            "a live backend's directory is not locked"
        );
    }
    assert_eq!(
        std::fs::read(foreign.join("data")).unwrap(),
        b"someone else's"
    );
}
