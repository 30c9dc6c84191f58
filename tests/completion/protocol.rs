//! Regression tests of defects that could lose a checkpoint: one per defect, named after it, on the
//! coordinator (`docs/protocol.md`). The backends' checks are in `tests/restore/checks.rs`, the
//! RocksDB backend's in `tests/completion/rocksdb_protocol.rs`; the simulation that finds these defects again is
//! `tests/simulation/`.

use std::time::Duration;

use crate::common::faulty::{Fault, FaultyStore};
use crate::common::*;
use object_store::ObjectStoreExt;
use statebackend::checkpoint::{CompletedCheckpointStore, Discarded};
use statebackend::heap::{HeapConfig, HeapKeyedStateBackend};
use statebackend::snapshot::layout::*;
use statebackend::snapshot::{FileScope, HandleFormat, SnapshotKind, StateFile};
use statebackend::*;

type Heap = HeapKeyedStateBackend<u64>;

fn values(b: &mut Heap) -> std::collections::BTreeMap<u64, u64> {
    read_all(b, &counts())
}

#[test]
fn retried_acknowledgement_never_deletes_a_completed_checkpoint() {
    runtime().block_on(async {
        let storage = CheckpointStorage::in_memory("retried").unwrap();
        let mut coord = coordinator(&storage, 2, 1).await;
        let mut b = vec![Heap::new(identity(128, 1, 0), HeapConfig::default()).unwrap()];
        fill(&mut b[0], 0..500, 1);
        let (id, results) = snapshot_all(&mut coord, &mut b).await;
        let first = coord.acknowledge(id, ack(0, &results[0]), None).await;
        assert!(
            matches!(first, Ok(Acknowledgement::Completed(_))),
            "{first:?}"
        );
        // The engine retries the RPC: the same acknowledgement again, then once more later.
        for _ in 0..2 {
            let again = coord.acknowledge(id, ack(0, &results[0]), None).await;
            assert_eq!(again.unwrap(), Acknowledgement::Duplicate);
        }
        assert_retained_files_intact(&coord, true).await;
        let meta = coord.store().get(id).unwrap().clone();
        let mut r = restore::<u64>(&storage, &meta, 128, 1).await.unwrap();
        assert_eq!(values(&mut r[0]).len(), 500);
        // Still a duplicate after the checkpoint was subsumed: nothing is deleted.
        checkpoint(&mut coord, &mut b).await;
        checkpoint(&mut coord, &mut b).await;
        let late = coord.acknowledge(id, ack(0, &results[0]), None).await;
        assert_eq!(late.unwrap(), Acknowledgement::Duplicate);
        assert_retained_files_intact(&coord, true).await;
    });
}

#[test]
fn duplicate_acknowledgement_never_stands_in_for_another_subtask() {
    runtime().block_on(async {
        let storage = CheckpointStorage::in_memory("dup").unwrap();
        let mut coord = coordinator(&storage, 1, 2).await;
        let mut b: Vec<Heap> = (0..2)
            .map(|i| Heap::new(identity(128, 2, i), HeapConfig::default()).unwrap())
            .collect();
        for x in &mut b {
            fill(x, 0..200, 7);
        }
        let (id, results) = snapshot_all(&mut coord, &mut b).await;
        let first = coord.acknowledge(id, ack(0, &results[0]), None).await;
        assert_eq!(first.unwrap(), Acknowledgement::Pending { remaining: 1 });
        let twice = coord.acknowledge(id, ack(0, &results[0]), None).await;
        assert_eq!(twice.unwrap(), Acknowledgement::Duplicate);
        assert_eq!(coord.pending(), vec![id], "subtask 1 has not acknowledged");
        assert!(coord.store().latest().is_none());
        let last = coord.acknowledge(id, ack(1, &results[1]), None).await;
        assert!(
            matches!(last, Ok(Acknowledgement::Completed(_))),
            "{last:?}"
        );
    });
}

#[test]
fn unknown_task_is_an_error_that_deletes_nothing() {
    runtime().block_on(async {
        let storage = CheckpointStorage::in_memory("unknown").unwrap();
        let mut coord = coordinator(&storage, 1, 1).await;
        let mut b = vec![Heap::new(identity(128, 1, 0), HeapConfig::default()).unwrap()];
        fill(&mut b[0], 0..50, 1);
        let (id, results) = snapshot_all(&mut coord, &mut b).await;
        let before = objects(&storage, None).await;
        let mut wrong_subtask = ack(0, &results[0]);
        wrong_subtask.subtask_index = 3;
        let mut wrong_operator = ack(0, &results[0]);
        wrong_operator.operator_id = "other".into();
        let mut wrong_checkpoint = ack(0, &results[0]);
        wrong_checkpoint.keyed_state.as_mut().unwrap().checkpoint_id = id + 1;
        for task in [wrong_subtask, wrong_operator, wrong_checkpoint] {
            let err = coord.acknowledge(id, task, None).await.unwrap_err();
            assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{err}");
        }
        // A checkpoint id this coordinator never triggered (a restart in between).
        let mut unknown = ack(0, &results[0]);
        unknown.keyed_state.as_mut().unwrap().checkpoint_id = id + 7;
        let answer = coord.acknowledge(id + 7, unknown, None).await.unwrap();
        assert_eq!(answer, Acknowledgement::Discarded(Discarded::Unknown));
        assert_eq!(objects(&storage, None).await, before, "nothing was deleted");
        let done = coord.acknowledge(id, ack(0, &results[0]), None).await;
        assert!(matches!(done, Ok(Acknowledgement::Completed(_))));
    });
}

#[test]
fn no_claim_checkpoint_survives_the_next_restart_and_is_restored_again() {
    runtime().block_on(async {
        let storage = CheckpointStorage::in_memory("noclaim").unwrap();
        let mut coord = coordinator(&storage, 1, 1).await;
        let mut b = vec![Heap::new(identity(128, 1, 0), HeapConfig::default()).unwrap()];
        fill(&mut b[0], 0..100, 3);
        checkpoint(&mut coord, &mut b).await;
        drop(coord);
        // A new job is started from checkpoint 1 in NO_CLAIM mode; it fails before its first checkpoint.
        let mut coord = coordinator(&storage, 1, 1).await;
        let meta = coord.store().get(1).unwrap().clone();
        coord
            .restored_from(&meta, RestoreMode::NoClaim)
            .await
            .unwrap();
        drop(coord);
        let (mut coord, clock) = clocked(&storage, 1, 1).await;
        assert!(exists(&storage, "chk-1/_metadata").await);
        assert!(exists(&storage, &format!("chk-1/{PINNED_MARKER}")).await);
        // The failover restores the pinned checkpoint again (as Flink), in the job's mode: a CLAIM
        // restore would continue its chain, and the coordinator refuses a checkpoint that references a
        // NO_CLAIM checkpoint's files.
        let outcome = coord
            .store()
            .restore_latest(|meta| {
                let storage = storage.clone();
                async move {
                    restore_in_mode::<u64>(&storage, &meta, 128, 1, RestoreMode::NoClaim).await
                }
            })
            .await
            .unwrap();
        assert_eq!(outcome.checkpoint_id, 1);
        // Later checkpoints, their subsumption and a sweep leave it alone.
        let mut restored = outcome.value;
        fill(&mut restored[0], 0..10, 4);
        checkpoint(&mut coord, &mut restored).await;
        checkpoint(&mut coord, &mut restored).await;
        clock.advance(Duration::from_secs(3600));
        coord.sweep_orphans(Duration::from_secs(60)).await.unwrap();
        let pinned = coord.store().get(1).unwrap().clone();
        let mut again = restore::<u64>(&storage, &pinned, 128, 1).await.unwrap();
        assert_eq!(values(&mut again[0]), (0..100).map(|k| (k, 3)).collect());
    });
}

#[test]
fn completed_checkpoint_is_never_reported_as_failed() {
    runtime().block_on(async {
        let faulty = FaultyStore::new();
        let storage = CheckpointStorage::new(faulty.clone(), "failed-gc").unwrap();
        let mut coord = coordinator(&storage, 1, 1).await;
        let mut b = vec![Heap::new(identity(128, 1, 0), HeapConfig::default()).unwrap()];
        fill(&mut b[0], 0..100, 1);
        checkpoint(&mut coord, &mut b).await;
        // Subsuming checkpoint 1 fails: checkpoint 2 is complete all the same.
        faulty.arm("chk-1/", Fault::FailDelete);
        fill(&mut b[0], 0..100, 2);
        let stats = checkpoint(&mut coord, &mut b).await;
        assert_eq!(stats.checkpoint_id, 2);
        assert!(stats.subsumed.is_empty());
        assert!(
            stats
                .cleanup_warnings
                .iter()
                .any(|w| w.contains("checkpoint 1")),
            "{stats:?}"
        );
        // Still retained (its metadata could not be deleted), still whole.
        assert!(coord.store().get(1).is_some());
        assert_retained_files_intact(&coord, true).await;
        faulty.heal();
        let stats = checkpoint(&mut coord, &mut b).await;
        assert_eq!(stats.subsumed, vec![1, 2]);
        // The same for a delete reported as done that did nothing (a lost delete of the metadata).
        faulty.arm("chk-3/_metadata", Fault::LoseDelete);
        let stats = checkpoint(&mut coord, &mut b).await;
        assert!(stats.subsumed.is_empty(), "{stats:?}");
        assert_retained_files_intact(&coord, true).await;
        let meta = coord.store().get(3).unwrap().clone();
        let mut r = restore::<u64>(&storage, &meta, 128, 1).await.unwrap();
        assert_eq!(values(&mut r[0]).get(&5), Some(&2));
    });
}

/// Opens a store of `storage` (retaining 1) and completes checkpoint `id` of one task whose handle lists
/// shared files `(path, created_by)`, uploading those it creates.
async fn complete_shared(
    coord: &mut CheckpointCoordinator,
    files: &[(&str, u64)],
) -> CheckpointStats {
    let id = coord.trigger().await.unwrap();
    ack_shared(coord, id, files)
        .await
        .completed()
        .expect("completed")
}

/// Acknowledges checkpoint `id` of `coord` with one handle of the shared `files` (`created_by == id` are
/// written first).
async fn ack_shared(
    coord: &mut CheckpointCoordinator,
    id: u64,
    files: &[(&str, u64)],
) -> Acknowledgement {
    let storage = coord.storage().clone();
    for (path, created_by) in files {
        if *created_by == id {
            storage
                .object_store()
                .put(
                    &storage.path(path),
                    bytes::Bytes::from_static(b"sst").into(),
                )
                .await
                .unwrap();
        }
    }
    let handle = KeyedStateHandle {
        backend_id: "b".into(),
        operator_id: "op".into(),
        checkpoint_id: id,
        max_parallelism: 8,
        key_groups: KeyGroupRange::all(8).unwrap(),
        format: HandleFormat::RocksIncremental,
        files: files
            .iter()
            .map(|(path, created_by)| StateFile {
                path: (*path).into(),
                scope: FileScope::Shared,
                size_bytes: 3,
                crc32: crc32fast::hash(b"sst"),
                created_by: *created_by,
                local_name: "000001.sst".into(),
            })
            .collect(),
    };
    let task = TaskStateSnapshot {
        operator_id: "op".into(),
        keyed_state: Some(handle),
        ..Default::default()
    };
    coord.acknowledge(id, task, None).await.unwrap()
}

#[test]
fn garbage_collection_never_deletes_what_unreadable_metadata_may_reference() {
    runtime().block_on(async {
        let storage = CheckpointStorage::in_memory("unreadable").unwrap();
        let mut coord = coordinator(&storage, 2, 1).await;
        complete_shared(&mut coord, &[("shared/a-1.sst", 1)]).await;
        complete_shared(&mut coord, &[("shared/a-1.sst", 1), ("shared/b-2.sst", 2)]).await;
        drop(coord);
        // A newer release rewrote checkpoint 2's metadata in a format version this build cannot read;
        // then the binary was rolled back.
        let path = storage.path("chk-2/_metadata");
        let mut bytes = storage
            .object_store()
            .get(&path)
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap()
            .to_vec();
        bytes[8..10].copy_from_slice(&99u16.to_le_bytes());
        storage
            .object_store()
            .put(&path, bytes.into())
            .await
            .unwrap();
        let (mut coord, clock) = clocked(&storage, 1, 1).await;
        assert_eq!(coord.store().unreadable()[0].checkpoint_id, 2);
        // Checkpoint 3 subsumes checkpoint 1, whose file `a` checkpoint 2 may still use.
        let stats = complete_shared(&mut coord, &[("shared/c-3.sst", 3)]).await;
        assert_eq!(stats.subsumed, vec![1]);
        assert!(
            stats.cleanup_warnings.iter().any(|w| w.contains("chk-2")),
            "{stats:?}"
        );
        clock.advance(Duration::from_secs(3600));
        let sweep = coord.sweep_orphans(Duration::from_secs(60)).await.unwrap();
        assert_eq!(sweep.blocked_by_unreadable, vec![2]);
        assert!(sweep.deleted.is_empty());
        for path in ["shared/a-1.sst", "shared/b-2.sst", "chk-2/_metadata"] {
            assert!(exists(&storage, path).await, "{path} was deleted");
        }
    });
}

/// Found by the simulation (seed 575): an old leader still running completed a checkpoint after a new
/// leader had opened, subsumed checkpoint 1 and deleted its shared file; the new leader, which had read
/// checkpoint 1 as retained, completed a checkpoint reusing that file. An old leader now writes and
/// deletes nothing once a newer coordinator exists: it checks the fence before `_metadata` too.
#[test]
fn simulation_575_old_leader_never_deletes_what_a_new_leader_read() {
    runtime().block_on(async {
        let storage = CheckpointStorage::in_memory("fenced").unwrap();
        let mut old_leader = coordinator(&storage, 1, 1).await;
        complete_shared(&mut old_leader, &[("shared/a-1.sst", 1)]).await;
        let id = old_leader.trigger().await.unwrap();
        let mut new_leader = coordinator(&storage, 1, 1).await;
        let answer = ack_shared(&mut old_leader, id, &[("shared/b-2.sst", 2)]).await;
        assert!(
            matches!(
                answer,
                Acknowledgement::Declined(Declined::Fenced { newer: 2 })
            ),
            "{answer:?}"
        );
        assert!(old_leader.is_fenced());
        assert!(!exists(&storage, &format!("chk-{id}/_metadata")).await);
        assert!(exists(&storage, "shared/a-1.sst").await);
        assert!(exists(&storage, "chk-1/_metadata").await);
        let err = old_leader.trigger().await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Fenced);
        // The new leader's task still has checkpoint 1 as its base.
        let stats = complete_shared(
            &mut new_leader,
            &[("shared/a-1.sst", 1), ("shared/c-3.sst", 3)],
        )
        .await;
        assert_eq!(stats.checkpoint_id, 3);
        assert!(exists(&storage, "shared/a-1.sst").await);
        assert!(exists(&storage, "chk-3/_metadata").await);
        let sweep = old_leader.sweep_orphans(Duration::ZERO).await.unwrap();
        assert!(sweep.fenced && sweep.deleted.is_empty(), "{sweep:?}");
    });
}

/// Writes `chk-<id>/_metadata` of another writer that completed checkpoint `id` with `result` (a race
/// for the metadata that reservations and fencing leave only to a writer outside the protocol).
pub(crate) async fn foreign_metadata(
    storage: &CheckpointStorage,
    id: u64,
    result: &SnapshotResult,
) {
    let meta = CheckpointMetadata {
        checkpoint_id: id,
        timestamp_ms: 0,
        kind: SnapshotKind::Checkpoint,
        generation: 99,
        tasks: vec![ack(0, result)],
    };
    storage
        .object_store()
        .put(
            &storage.path(&format!("chk-{id}/_metadata")),
            bytes::Bytes::from(statebackend::format::encode_metadata(&meta).unwrap()).into(),
        )
        .await
        .unwrap();
}

#[test]
fn losing_coordinator_deletes_only_its_own_uploads() {
    runtime().block_on(async {
        let storage = CheckpointStorage::in_memory("race").unwrap();
        let mut loser = coordinator(&storage, 1, 1).await;
        let id = loser.trigger().await.unwrap();
        let mut w = Heap::new(identity(128, 1, 0), HeapConfig::default()).unwrap();
        let mut l = Heap::new(identity(128, 1, 0), HeapConfig::default()).unwrap();
        fill(&mut w, 0..100, 1);
        fill(&mut l, 0..100, 2);
        let won = w.snapshot(id, &storage).unwrap().run().await.unwrap();
        let lost = l.snapshot(id, &storage).unwrap().run().await.unwrap();
        assert_ne!(
            won.handle.files[0].path, lost.handle.files[0].path,
            "private files have names no other writer produces"
        );
        foreign_metadata(&storage, id, &won).await;
        let answer = loser.acknowledge(id, ack(0, &lost), None).await.unwrap();
        assert_eq!(answer, Acknowledgement::Declined(Declined::LostRace));
        assert!(exists(&storage, &format!("chk-{id}/_metadata")).await);
        assert!(exists(&storage, &won.handle.files[0].path).await);
        assert!(!exists(&storage, &lost.handle.files[0].path).await);
        let meta = CompletedCheckpointStore::open(storage.clone(), 1)
            .await
            .unwrap()
            .get(id)
            .unwrap()
            .clone();
        let mut r = restore::<u64>(&storage, &meta, 128, 1).await.unwrap();
        assert_eq!(values(&mut r[0]).get(&7), Some(&1), "the winner's state");
    });
}

#[test]
fn two_coordinators_never_get_the_same_id() {
    runtime().block_on(async {
        let storage = CheckpointStorage::in_memory("ids").unwrap();
        let mut old_leader = coordinator(&storage, 1, 1).await;
        let a = old_leader.trigger().await.unwrap();
        let mut new_leader = coordinator(&storage, 1, 1).await;
        let b = new_leader.trigger().await.unwrap();
        assert_eq!((a, b), (1, 2));
        // The old leader checks the fence before it reserves anything.
        let c = old_leader.trigger().await.unwrap_err();
        assert_eq!(c.kind(), ErrorKind::Fenced);
    });
}

/// Found by the simulation (seed 367): a new leader subsumed checkpoint 2, deleting its directory with its
/// reservation, and the old leader, still running with 2 as its next id, reserved it again. (An old leader
/// is now fenced before it reserves; the listing still keeps any coordinator whose next id fell behind
/// above every directory in storage: here another writer's directories appear while it runs.)
#[test]
fn simulation_367_old_leader_never_reuses_a_subsumed_id() {
    runtime().block_on(async {
        let storage = CheckpointStorage::in_memory("stale-ids").unwrap();
        let mut behind = coordinator(&storage, 1, 1).await;
        for id in 1..=3u64 {
            storage
                .object_store()
                .put(
                    &storage.path(&format!("chk-{id}/{TRIGGER_MARKER}")),
                    bytes::Bytes::from_static(b"another writer").into(),
                )
                .await
                .unwrap();
        }
        storage
            .object_store()
            .delete(&storage.path(&format!("chk-1/{TRIGGER_MARKER}")))
            .await
            .unwrap();
        let id = behind.trigger().await.unwrap();
        assert_eq!(id, 4, "above every checkpoint in storage");
    });
}

#[test]
fn open_never_hands_out_an_id_again_after_a_crash() {
    runtime().block_on(async {
        let storage = CheckpointStorage::in_memory("crash-ids").unwrap();
        let mut coord = coordinator(&storage, 1, 1).await;
        let id = coord.trigger().await.unwrap();
        // The coordinator crashes before any task wrote a file.
        drop(coord);
        let mut coord = coordinator(&storage, 1, 1).await;
        assert_eq!(coord.trigger().await.unwrap(), id + 1);
        // Aborting the highest id keeps its reservation: the watermark survives the next crash too.
        let next = coord.trigger().await.unwrap();
        coord.abort(next).await.unwrap();
        drop(coord);
        let mut coord = coordinator(&storage, 1, 1).await;
        assert_eq!(coord.trigger().await.unwrap(), next + 1);
    });
}

#[test]
fn heap_snapshot_files_of_aborted_checkpoints_are_swept() {
    runtime().block_on(async {
        let storage = CheckpointStorage::in_memory("sweep-heap").unwrap();
        let (mut coord, _) = clocked(&storage, 1, 1).await;
        let mut b = vec![Heap::new(identity(128, 1, 0), full_files()).unwrap()];
        fill(&mut b[0], 0..100, 1);
        checkpoint(&mut coord, &mut b).await;
        let (id, results) = snapshot_all(&mut coord, &mut b).await;
        // The coordinator crashes before the acknowledgement: nobody aborts checkpoint `id`.
        drop(coord);
        let (mut coord, _) = clocked(&storage, 1, 1).await;
        let orphan = results[0].handle.files[0].path.clone();
        // Ages are measured on the store's clock: a minute is not over yet, then no minimum age.
        let young = coord.sweep_orphans(Duration::from_secs(60)).await.unwrap();
        assert!(young.deleted.is_empty() && young.store_clock, "{young:?}");
        let sweep = coord.sweep_orphans(Duration::ZERO).await.unwrap();
        assert_eq!(sweep.deleted, vec![orphan], "{sweep:?}");
        // The reservation of the highest id is the watermark and stays.
        assert!(exists(&storage, &format!("chk-{id}/{TRIGGER_MARKER}")).await);
        assert_retained_files_intact(&coord, true).await;
    });
}

#[test]
fn staging_files_of_a_killed_write_and_odd_names_are_swept_from_a_local_directory() {
    runtime().block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let storage = CheckpointStorage::local(
            dir.path(),
            "staging",
            &StorageConfig {
                fsync: false,
                ..StorageConfig::default()
            },
        )
        .unwrap();
        let (mut coord, clock) = clocked(&storage, 1, 1).await;
        let mut b = vec![Heap::new(identity(128, 1, 0), HeapConfig::default()).unwrap()];
        fill(&mut b[0], 0..100, 1);
        checkpoint(&mut coord, &mut b).await;
        // What object_store's local store leaves when the process dies between its write and its rename:
        // `<name>#<digits>`, hidden from its own listing.
        let root = dir.path().join("staging");
        let id = coord.store().latest().unwrap().checkpoint_id;
        let left = [
            format!("shared/0123.sst#{}", 17),
            format!("chk-{id}/op-0-0123456789abcdef.keyed#3"),
            format!("chk-{}/op-0-fedcba9876543210.keyed#12", id + 1),
        ];
        std::fs::create_dir_all(root.join("shared")).unwrap();
        std::fs::create_dir_all(root.join(format!("chk-{}", id + 1))).unwrap();
        for f in &left {
            std::fs::write(root.join(f), vec![7u8; 4096]).unwrap();
        }
        // Not a staging name: a suffix with other characters is an ordinary (unreferenced) object.
        std::fs::write(root.join("shared/notes#v2"), b"x").unwrap();
        let young = coord.sweep_orphans(Duration::from_secs(60)).await.unwrap();
        assert!(young.deleted.is_empty(), "{young:?}");
        // The coordinator's clock running ahead changes nothing: ages are on the store's clock.
        clock.advance(Duration::from_secs(600));
        let skewed = coord.sweep_orphans(Duration::from_secs(60)).await.unwrap();
        assert!(skewed.deleted.is_empty(), "{skewed:?}");
        let sweep = coord.sweep_orphans(Duration::ZERO).await.unwrap();
        let mut deleted = sweep.deleted.clone();
        deleted.sort();
        let mut expected: Vec<String> = left.to_vec();
        expected.push("shared/notes#v2".into());
        expected.sort();
        assert_eq!(deleted, expected, "{sweep:?}");
        for f in &left {
            assert!(!root.join(f).exists(), "{f} stayed");
        }
        assert!(
            !root.join("shared/notes#v2").exists(),
            "an odd name reported deleted but kept"
        );
        assert_retained_files_intact(&coord, true).await;
        // A second sweep finds nothing more (idempotent).
        let again = coord.sweep_orphans(Duration::from_secs(60)).await.unwrap();
        assert!(again.deleted.is_empty(), "{again:?}");
    });
}

#[test]
fn checkpoint_timeout_aborts_a_checkpoint_that_takes_too_long_and_the_next_completes() {
    runtime().block_on(async {
        let storage = CheckpointStorage::in_memory("timeout").unwrap();
        let clock = std::sync::Arc::new(ManualClock::new(std::time::SystemTime::now()));
        let mut job = CoordinatorConfig::single_operator("op", 2, 1);
        job.checkpoint_timeout = Duration::from_secs(60);
        let mut coord = CheckpointCoordinator::open_with_clock(storage.clone(), job, clock.clone())
            .await
            .unwrap();
        let mut b = vec![
            Heap::new(identity(128, 2, 0), full_files()).unwrap(),
            Heap::new(identity(128, 2, 1), full_files()).unwrap(),
        ];
        fill(&mut b[0], 0..100, 1);
        fill(&mut b[1], 0..100, 1);
        checkpoint(&mut coord, &mut b).await;
        // Subtask 0 acknowledges in time; subtask 1's asynchronous phase takes 61 s.
        let (id, results) = snapshot_all(&mut coord, &mut b).await;
        let ack0 = coord
            .acknowledge(id, ack(0, &results[0]), None)
            .await
            .unwrap();
        assert_eq!(ack0, Acknowledgement::Pending { remaining: 1 });
        clock.advance(Duration::from_secs(61));
        let late = coord.acknowledge(id, ack(1, &results[1]), None).await;
        assert_eq!(
            late.unwrap(),
            Acknowledgement::Discarded(Discarded::Aborted)
        );
        assert!(coord.pending().is_empty());
        // The expiry the acknowledgement found is reported, once (backends must be told).
        assert_eq!(coord.take_aborted(), vec![id]);
        assert_eq!(coord.take_aborted(), Vec::<u64>::new());
        // Both subtasks' uploads went with the abort, without a restart or a sweep.
        for r in &results {
            assert!(!exists(&storage, &r.handle.files[0].path).await);
        }
        // A trigger also expires what is pending: the engine never waits on an expired checkpoint.
        let (stuck, _) = snapshot_all(&mut coord, &mut b).await;
        clock.advance(Duration::from_secs(60));
        assert_eq!(coord.abort_expired().await, vec![stuck]);
        assert_eq!(coord.abort_expired().await, Vec::<u64>::new());
        let (stuck, _) = snapshot_all(&mut coord, &mut b).await;
        clock.advance(Duration::from_secs(120));
        let next = checkpoint(&mut coord, &mut b).await;
        assert!(next.checkpoint_id > stuck);
        assert!(coord.pending().is_empty());
        assert_retained_files_intact(&coord, true).await;
    });
}
