//! Regression tests of the production fault model (`docs/faults.md`): what real object stores, operators
//! and zombie coordinators do that the first simulation did not model. Each test is named after the
//! property it protects and fails with its fix reverted; the backends' share is in `tests/completion/rocksdb_faults.rs`.

use std::time::Duration;

use crate::common::faulty::{Fault, FaultyStore};
use crate::common::*;
use object_store::ObjectStoreExt;
use statebackend::checkpoint::CancellationPolicy;
use statebackend::heap::{HeapConfig, HeapKeyedStateBackend};
use statebackend::snapshot::layout::*;
use statebackend::snapshot::{FileScope, HandleFormat, SnapshotKind, StateFile};
use statebackend::*;

type Heap = HeapKeyedStateBackend<u64>;

/// Writes the shared `files` that checkpoint `id` uploads itself (`created_by == id`) and acknowledges
/// `id` with one handle of all `files` (subtask 0 of operator `op`).
async fn ack_files(
    coord: &mut CheckpointCoordinator,
    id: u64,
    files: &[(&str, u64)],
) -> Acknowledgement {
    let storage = coord.storage().clone();
    for (path, created_by) in files {
        if *created_by == id {
            put(&storage, path, b"sst").await;
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
    coord
        .acknowledge(id, TaskStateSnapshot::keyed("op", 0, handle), None)
        .await
        .unwrap()
}

async fn complete_files(
    coord: &mut CheckpointCoordinator,
    files: &[(&str, u64)],
) -> CheckpointStats {
    let id = coord.trigger().await.unwrap();
    ack_files(coord, id, files)
        .await
        .completed()
        .expect("completed")
}

async fn put(storage: &CheckpointStorage, path: &str, bytes: &'static [u8]) {
    storage
        .object_store()
        .put(&storage.path(path), bytes::Bytes::from_static(bytes).into())
        .await
        .unwrap();
}

/// A checkpoint's metadata as another writer would put it (a zombie's, or one of a job this coordinator
/// does not know): generation `generation`, the heap state of `result`.
async fn write_metadata(
    storage: &CheckpointStorage,
    id: u64,
    generation: u64,
    result: &SnapshotResult,
) {
    let meta = CheckpointMetadata {
        checkpoint_id: id,
        timestamp_ms: 0,
        kind: SnapshotKind::Checkpoint,
        generation,
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

/// Every object below the job root with its bytes.
async fn contents(storage: &CheckpointStorage) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    for path in objects(storage, None).await {
        let bytes = storage
            .object_store()
            .get(&storage.path(&path))
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        out.push((path, bytes.to_vec()));
    }
    out
}

/// S3's bulk delete can time out after it took effect; `object_store` does not retry it and reports an
/// error. The file stayed registered, and a checkpoint on a stale base reused the deleted file and
/// completed: every later checkpoint inherited a dangling reference.
#[test]
fn ambiguous_shared_delete_never_lets_a_checkpoint_reuse_the_file() {
    runtime().block_on(async {
        let faulty = FaultyStore::new();
        let storage = CheckpointStorage::new(faulty.clone(), "ambiguous").unwrap();
        let mut coord = coordinator(&storage, 1, 1).await;
        complete_files(&mut coord, &[("shared/a-1.sst", 1)]).await;
        faulty.arm("shared/a-1.sst", Fault::DeleteThenFail);
        let stats = complete_files(&mut coord, &[("shared/b-2.sst", 2)]).await;
        assert_eq!(stats.subsumed, vec![1]);
        assert!(!stats.cleanup_warnings.is_empty(), "{stats:?}");
        assert!(
            !exists(&storage, "shared/a-1.sst").await,
            "the delete took effect"
        );
        faulty.heal();
        // A task whose completion notification of 2 comes late still builds on checkpoint 1.
        let stale = coord.trigger().await.unwrap();
        let answer = ack_files(
            &mut coord,
            stale,
            &[("shared/a-1.sst", 1), ("shared/c-3.sst", stale)],
        )
        .await;
        assert_eq!(
            answer,
            Acknowledgement::Declined(Declined::UnavailableFiles(vec!["shared/a-1.sst".into()]))
        );
        assert_eq!(coord.store().latest().unwrap().checkpoint_id, 2);
        assert_retained_files_intact(&coord, true).await;
    });
}

/// One failed listing of `_coordinators/` made `may_delete` answer "a newer generation exists": the only
/// coordinator was fenced for ever, never triggered again and never subsumed.
#[test]
fn failed_listing_of_generations_never_fences() {
    runtime().block_on(async {
        let faulty = FaultyStore::new();
        let storage = CheckpointStorage::new(faulty.clone(), "listing").unwrap();
        let mut coord = coordinator(&storage, 1, 1).await;
        complete_files(&mut coord, &[("shared/a-1.sst", 1)]).await;
        let id = coord.trigger().await.unwrap();
        faulty.arm(COORDINATORS_DIR, Fault::FailList);
        // "Could not check" declines this one completion (nothing written, nothing deleted) ...
        let answer = ack_files(&mut coord, id, &[("shared/b-2.sst", 2)]).await;
        assert!(
            matches!(answer, Acknowledgement::Declined(Declined::FenceUnknown(_))),
            "{answer:?}"
        );
        // ... and refuses a trigger with a storage error, but never fences.
        assert_eq!(
            coord.trigger().await.unwrap_err().kind(),
            ErrorKind::Storage
        );
        assert!(!coord.is_fenced());
        faulty.heal();
        let stats = complete_files(&mut coord, &[("shared/c-3.sst", 3)]).await;
        assert_eq!(stats.subsumed, vec![1], "{stats:?}");
        assert!(!coord.is_fenced());
    });
}

/// A savepoint in progress was aborted, its directory deleted, whenever a checkpoint triggered after it
/// completed first: with periodic checkpoints a savepoint might never complete.
#[test]
fn savepoint_survives_a_later_checkpoint_completing_first() {
    runtime().block_on(async {
        let storage = CheckpointStorage::in_memory("job").unwrap();
        let target = CheckpointStorage::in_memory("job").unwrap();
        let mut coord = coordinator(&storage, 1, 1).await;
        let mut b = vec![Heap::new(identity(128, 1, 0), HeapConfig::default()).unwrap()];
        fill(&mut b[0], 0..100, 1);
        let sp = coord.trigger_savepoint(&target).await.unwrap();
        let written = b[0]
            .savepoint(sp, &target, SavepointFormat::Canonical)
            .unwrap()
            .run()
            .await
            .unwrap();
        let stats = checkpoint(&mut coord, &mut b).await;
        assert!(stats.aborted_pending.is_empty(), "{stats:?}");
        assert_eq!(coord.pending(), vec![sp]);
        let answer = coord.acknowledge(sp, ack(0, &written), None).await.unwrap();
        assert!(
            matches!(answer, Acknowledgement::Completed(_)),
            "{answer:?}"
        );
        assert!(target.read_savepoint_metadata(sp).await.is_ok());
    });
}

/// Aborting a savepoint deleted the whole `savepoints/sp-<n>/`, also another savepoint of that id in the
/// target (another job's, a re-created job's, or one `statectl savepoint convert` wrote): the id is now
/// reserved in the target too, and an abort deletes only a directory whose reservation is its own.
#[test]
fn savepoint_abort_never_deletes_another_savepoint_of_that_id() {
    runtime().block_on(async {
        let storage = CheckpointStorage::in_memory("job").unwrap();
        let target = CheckpointStorage::in_memory("job").unwrap();
        // The target holds savepoint 1 of another job (written without a reservation, by an older
        // release) and a reservation of id 2 by someone else.
        put(
            &target,
            "savepoints/sp-1/_metadata",
            b"another job's savepoint",
        )
        .await;
        put(
            &target,
            "savepoints/sp-1/op-0-0000000000000001.keyed",
            b"state",
        )
        .await;
        put(
            &target,
            "savepoints/sp-2/_trigger",
            b"savepoint 2 reserved by someone else\n",
        )
        .await;
        let before = contents(&target).await;
        let mut coord = coordinator(&storage, 1, 1).await;
        let sp = coord.trigger_savepoint(&target).await.unwrap();
        assert_eq!(sp, 3, "ids taken in the target are skipped");
        let mut b = Heap::new(identity(128, 1, 0), HeapConfig::default()).unwrap();
        fill(&mut b, 0..10, 1);
        let written = b
            .savepoint(sp, &target, SavepointFormat::Canonical)
            .unwrap()
            .run()
            .await
            .unwrap();
        assert!(written.handle.files[0].path.starts_with("savepoints/sp-3/"));
        coord.abort(sp).await.unwrap();
        assert_eq!(
            contents(&target).await,
            before,
            "only this attempt's files went"
        );
        // The job's next checkpoint id is above the savepoint's: ids are one sequence.
        assert!(coord.trigger().await.unwrap() > sp);
    });
}

/// A zombie coordinator kept triggering and completing until it happened to look at the fence, and its
/// checkpoint could get a higher id than the new leader's and become `latest()`: a failover then restored
/// the zombie's timeline. Checkpoints are ordered by (generation, id).
#[test]
fn latest_is_never_an_older_generation_once_a_newer_one_completed() {
    runtime().block_on(async {
        let storage = CheckpointStorage::in_memory("zombie").unwrap();
        let mut zombie = coordinator(&storage, 2, 1).await;
        let mut z = vec![Heap::new(identity(128, 1, 0), HeapConfig::default()).unwrap()];
        fill(&mut z[0], 0..10, 1);
        checkpoint(&mut zombie, &mut z).await;
        let mut leader = coordinator(&storage, 2, 1).await;
        let mut l = vec![Heap::new(identity(128, 1, 0), HeapConfig::default()).unwrap()];
        fill(&mut l[0], 0..10, 2);
        let mine = checkpoint(&mut leader, &mut l).await.checkpoint_id;
        // The zombie checked the fence just before the leader registered, then reserved the next id
        // above the leader's and completed it: a higher id than the leader's, an older generation.
        let late = mine + 1;
        put(&storage, &format!("chk-{late}/_trigger"), b"zombie").await;
        fill(&mut z[0], 0..10, 9);
        let zombie_state = z[0].snapshot(late, &storage).unwrap().run().await.unwrap();
        write_metadata(&storage, late, zombie.generation(), &zombie_state).await;
        // The leader (after a sweep reads storage) and a restarted coordinator both pick the leader's.
        leader
            .sweep_orphans(Duration::from_secs(3600))
            .await
            .unwrap();
        assert!(leader.store().get(late).is_some(), "found and protected");
        assert_eq!(leader.store().latest().unwrap().checkpoint_id, mine);
        let reopened = coordinator(&storage, 2, 1).await;
        assert_eq!(reopened.store().latest().unwrap().checkpoint_id, mine);
    });
}

/// After `restored_from(1)` with checkpoint 2 in storage, the next failover restored checkpoint 2 again:
/// a rollback was undone. Checkpoints above the restored one are abandoned: kept, never restored,
/// subsumed at the next completion.
#[test]
fn rollback_survives_a_failover() {
    runtime().block_on(async {
        let storage = CheckpointStorage::in_memory("rollback").unwrap();
        let mut coord = coordinator(&storage, 3, 1).await;
        let mut b = vec![Heap::new(identity(128, 1, 0), HeapConfig::default()).unwrap()];
        fill(&mut b[0], 0..10, 1);
        checkpoint(&mut coord, &mut b).await;
        fill(&mut b[0], 0..10, 2);
        checkpoint(&mut coord, &mut b).await;
        drop(coord);
        // The operator rolls the job back to checkpoint 1.
        let mut coord = coordinator(&storage, 3, 1).await;
        let first = coord.store().get(1).unwrap().clone();
        let restored = restore::<u64>(&storage, &first, 128, 1).await.unwrap();
        coord
            .restored_from(&first, RestoreMode::Claim)
            .await
            .unwrap();
        assert_eq!(coord.store().latest().unwrap().checkpoint_id, 1);
        drop((coord, restored));
        // A failover before the rolled-back job's first checkpoint restores the rollback's line.
        let mut coord = coordinator(&storage, 3, 1).await;
        assert_eq!(coord.store().latest().unwrap().checkpoint_id, 1);
        assert_eq!(
            coord
                .store()
                .abandoned()
                .iter()
                .map(|c| c.checkpoint_id)
                .collect::<Vec<_>>(),
            vec![2]
        );
        assert!(
            exists(&storage, "chk-2/_metadata").await,
            "kept until a completion"
        );
        let mut b = restore::<u64>(&storage, &coord.store().get(1).unwrap().clone(), 128, 1)
            .await
            .unwrap();
        assert_eq!(read_counts(&mut b[0]).get(&3), Some(&1));
        let meta = coord.store().get(1).unwrap().clone();
        coord
            .restored_from(&meta, RestoreMode::Claim)
            .await
            .unwrap();
        let stats = checkpoint(&mut coord, &mut b).await;
        assert!(stats.subsumed.contains(&2), "{stats:?}");
        assert!(!exists(&storage, "chk-2/_metadata").await);
    });
}

/// `restored_from(n)` was not durable: a coordinator restart before the first trigger handed out ids
/// below `n`, which the restored backends refuse.
#[test]
fn restored_from_is_durable_across_a_restart() {
    runtime().block_on(async {
        let storage = CheckpointStorage::in_memory("durable").unwrap();
        let savepoints = CheckpointStorage::in_memory("elsewhere").unwrap();
        let mut other = coordinator(&savepoints, 1, 1).await;
        let mut b = vec![Heap::new(identity(128, 1, 0), HeapConfig::default()).unwrap()];
        fill(&mut b[0], 0..10, 1);
        for _ in 0..5 {
            checkpoint(&mut other, &mut b).await;
        }
        let external = other.store().latest().unwrap().clone();
        let mut coord = coordinator(&storage, 1, 1).await;
        coord
            .restored_from(&external, RestoreMode::NoClaim)
            .await
            .unwrap();
        drop(coord);
        let mut coord = coordinator(&storage, 1, 1).await;
        assert!(coord.trigger().await.unwrap() > external.checkpoint_id);
    });
}

/// The state of an operator missing from the new job was dropped silently, and a keyed operator whose
/// tasks all acknowledged without keyed state completed a checkpoint. As Flink, such a restore is refused
/// unless `allow_non_restored_state`, and a keyed operator's task must acknowledge keyed state.
#[test]
fn state_of_a_missing_operator_is_never_dropped_silently() {
    runtime().block_on(async {
        let storage = CheckpointStorage::in_memory("operators").unwrap();
        let mut old_job = coordinator(&storage, 1, 1).await;
        let mut b = vec![Heap::new(identity(128, 1, 0), HeapConfig::default()).unwrap()];
        fill(&mut b[0], 0..10, 1);
        checkpoint(&mut old_job, &mut b).await;
        let meta = old_job.store().latest().unwrap().clone();
        drop(old_job);
        // The new job version renamed operator `op` to `counter`.
        let renamed = CoordinatorConfig::single_operator("counter", 1, 1);
        let mut coord = CheckpointCoordinator::open(storage.clone(), renamed.clone())
            .await
            .unwrap();
        assert_eq!(
            coord.check_restorable(&meta).unwrap_err().kind(),
            ErrorKind::InvalidArgument
        );
        let refused = coord
            .restored_from(&meta, RestoreMode::Claim)
            .await
            .unwrap_err();
        assert!(
            refused.to_string().contains("`op`") || refused.to_string().contains("op"),
            "{refused}"
        );
        let allowed = CoordinatorConfig {
            allow_non_restored_state: true,
            ..renamed
        };
        let mut coord = CheckpointCoordinator::open(storage.clone(), allowed)
            .await
            .unwrap();
        coord
            .restored_from(&meta, RestoreMode::Claim)
            .await
            .unwrap();
        // A keyed operator acknowledging without keyed state.
        let id = coord.trigger().await.unwrap();
        let empty = TaskStateSnapshot {
            operator_id: "counter".into(),
            ..Default::default()
        };
        let err = coord.acknowledge(id, empty, None).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{err}");
        assert_eq!(coord.pending(), vec![id], "nothing completed");
    });
}

/// A lost race whose winner's `_metadata` could not be read (here: a newer release wrote it) left the
/// winner unprotected: its outcome was "aborted", which the sweep never read again, and the sweep deleted
/// the winner's metadata.
#[test]
fn lost_race_with_an_unreadable_winner_keeps_the_winner() {
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
        // The winner's metadata, in a format version this build cannot read.
        let mut bytes = statebackend::format::encode_metadata(&CheckpointMetadata {
            checkpoint_id: id,
            timestamp_ms: 0,
            kind: SnapshotKind::Checkpoint,
            generation: 99,
            tasks: vec![ack(0, &won)],
        })
        .unwrap();
        bytes[8..10].copy_from_slice(&99u16.to_le_bytes());
        let path = format!("chk-{id}/_metadata");
        storage
            .object_store()
            .put(&storage.path(&path), bytes::Bytes::from(bytes).into())
            .await
            .unwrap();
        let answer = loser.acknowledge(id, ack(0, &lost), None).await.unwrap();
        assert_eq!(answer, Acknowledgement::Declined(Declined::LostRace));
        let sweep = loser.sweep_orphans(Duration::ZERO).await.unwrap();
        assert_eq!(sweep.blocked_by_unreadable, vec![id], "{sweep:?}");
        assert!(exists(&storage, &path).await, "{sweep:?}");
        assert!(
            exists(&storage, &won.handle.files[0].path).await,
            "{sweep:?}"
        );
    });
}

/// Checkpoints another coordinator of the job completed, adopted when found, were never subsumed by the
/// coordinator that adopted them: their files stayed until a restart.
#[test]
fn adopted_checkpoints_are_subsumed() {
    runtime().block_on(async {
        let storage = CheckpointStorage::in_memory("adopted").unwrap();
        let mut coord = coordinator(&storage, 1, 1).await;
        let mut b = vec![Heap::new(identity(128, 1, 0), HeapConfig::default()).unwrap()];
        fill(&mut b[0], 0..10, 1);
        checkpoint(&mut coord, &mut b).await;
        // An older coordinator's checkpoint lands (its write was in flight).
        let mut old = Heap::new(identity(128, 1, 0), HeapConfig::default()).unwrap();
        fill(&mut old, 0..10, 7);
        put(&storage, "chk-9/_trigger", b"older").await;
        let written = old.snapshot(9, &storage).unwrap().run().await.unwrap();
        write_metadata(&storage, 9, 0, &written).await;
        let stats = checkpoint(&mut coord, &mut b).await;
        assert!(
            stats.subsumed.contains(&9) && stats.subsumed.contains(&1),
            "{stats:?}"
        );
        assert!(!exists(&storage, "chk-9/_metadata").await);
        assert!(!exists(&storage, &written.handle.files[0].path).await);
        assert_retained_files_intact(&coord, true).await;
    });
}

/// `trigger` and `acknowledge` expired checkpoints and dropped their ids: backends were never told (an LSM
/// backend then rebased to a needless full upload).
#[test]
fn expiries_found_by_trigger_and_acknowledge_are_reported() {
    runtime().block_on(async {
        let (storage, clock, _) = crate::common::clocked::clocked_storage("expiry");
        let mut config = CoordinatorConfig::single_operator("op", 1, 1);
        config.checkpoint_timeout = Duration::from_secs(60);
        let mut coord =
            CheckpointCoordinator::open_with_clock(storage.clone(), config, clock.clone())
                .await
                .unwrap();
        let mut b = vec![Heap::new(identity(128, 1, 0), HeapConfig::default()).unwrap()];
        fill(&mut b[0], 0..10, 1);
        let stuck = coord.trigger().await.unwrap();
        clock.advance(Duration::from_secs(61));
        let stats = checkpoint(&mut coord, &mut b).await;
        assert_eq!(
            stats.aborted_pending,
            vec![stuck],
            "reported at the next completion"
        );
        let again = coord.trigger().await.unwrap();
        clock.advance(Duration::from_secs(61));
        let next = coord.trigger().await.unwrap();
        assert_eq!(coord.take_aborted(), vec![again], "or when the engine asks");
        assert_eq!(coord.take_aborted(), Vec::<u64>::new(), "once");
        coord.abort(next).await.unwrap();
    });
}

/// Cancellation with delete removed the generation markers and the id watermark: the next job on that
/// storage was generation 1 again and reused id 1, and a zombie of the old job (also generation 1) could
/// complete, "subsume checkpoint 1" and delete the new job's checkpoint. An earlier coordinator's id
/// reservation also stayed for ever.
#[test]
fn cancellation_keeps_generations_and_ids_rising() {
    runtime().block_on(async {
        let storage = CheckpointStorage::in_memory("cancel").unwrap();
        let mut zombie = coordinator(&storage, 1, 1).await;
        let mut z = vec![Heap::new(identity(128, 1, 0), HeapConfig::default()).unwrap()];
        fill(&mut z[0], 0..10, 1);
        checkpoint(&mut zombie, &mut z).await;
        let zombie_id = zombie.trigger().await.unwrap();
        let mut job = coordinator(&storage, 1, 1).await;
        let mut b = vec![Heap::new(identity(128, 1, 0), HeapConfig::default()).unwrap()];
        fill(&mut b[0], 0..10, 2);
        checkpoint(&mut job, &mut b).await;
        let highest = checkpoint(&mut job, &mut b).await.checkpoint_id;
        let generation = job.generation();
        job.shutdown(CancellationPolicy::DeleteOnCancellation)
            .await
            .unwrap();
        let left = objects(&storage, None).await;
        assert!(
            left.iter()
                .all(|p| p.starts_with("_coordinators/") || p.starts_with("_lineage/")),
            "a cancelled job leaves only its generation and lineage records: {left:?}"
        );
        let mut next = coordinator(&storage, 1, 1).await;
        assert!(next.generation() > generation);
        let mut n = vec![Heap::new(identity(128, 1, 0), HeapConfig::default()).unwrap()];
        fill(&mut n[0], 0..10, 3);
        let first = checkpoint(&mut next, &mut n).await.checkpoint_id;
        assert!(first > highest && first > zombie_id);
        // The zombie's checkpoint never completes and deletes nothing.
        let result = z[0]
            .snapshot(zombie_id, &storage)
            .unwrap()
            .run()
            .await
            .unwrap();
        let answer = zombie
            .acknowledge(zombie_id, ack(0, &result), None)
            .await
            .unwrap();
        assert!(
            matches!(answer, Acknowledgement::Declined(Declined::Fenced { .. })),
            "{answer:?}"
        );
        assert!(exists(&storage, &format!("chk-{first}/_metadata")).await);
        assert_retained_files_intact(&next, true).await;
    });
}

/// The sweep compared the coordinator's clock with the store's `Last-Modified`: a coordinator (or an
/// operator's laptop) whose clock runs ahead deleted files younger than `min_age`. Ages are measured on the
/// store's clock.
#[test]
fn sweep_ages_files_on_the_store_clock() {
    runtime().block_on(async {
        let (storage, clock, store) = crate::common::clocked::clocked_storage("skew");
        let mut coord = CheckpointCoordinator::open_with_clock(
            storage.clone(),
            CoordinatorConfig::single_operator("op", 1, 1),
            clock.clone(),
        )
        .await
        .unwrap();
        let min_age = Duration::from_secs(600);
        // The store's clock is two minimum ages behind the coordinator's.
        store.set_skew(-1200);
        put(&storage, "shared/upload-in-flight.sst", b"sst").await;
        let report = coord.sweep_orphans(min_age).await.unwrap();
        assert!(
            report.deleted.is_empty() && report.store_clock,
            "{report:?}"
        );
        assert!(exists(&storage, "shared/upload-in-flight.sst").await);
        clock.advance(min_age + Duration::from_secs(1));
        let report = coord.sweep_orphans(min_age).await.unwrap();
        assert_eq!(
            report.deleted,
            vec!["shared/upload-in-flight.sst".to_string()]
        );
    });
}

/// A store that ignores `If-None-Match: *` (some older S3-compatible servers) silently voided every
/// create-if-absent guarantee: ids, generations and metadata. `open` probes it and refuses.
#[test]
fn store_that_ignores_conditional_create_is_refused() {
    runtime().block_on(async {
        let faulty = FaultyStore::new();
        faulty.arm("", Fault::IgnoreCreate);
        let storage = CheckpointStorage::new(faulty.clone(), "overwrites").unwrap();
        let err = CheckpointCoordinator::open(
            storage.clone(),
            CoordinatorConfig::single_operator("op", 1, 1),
        )
        .await
        .map(|_| ())
        .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{err}");
        assert!(err.to_string().contains("If-None-Match"), "{err}");
        assert!(
            objects(&storage, None).await.is_empty(),
            "{:?}",
            objects(&storage, None).await
        );
    });
}

/// `statectl gc`, even `--dry-run`, registered a generation and so fenced a running job for good. A dry
/// run changes no byte; a real run refuses while the job's newest generation has not shut down.
#[cfg(feature = "cli")]
#[test]
fn gc_dry_run_changes_no_byte_and_gc_refuses_a_live_job() {
    let dir = tempfile::tempdir().unwrap();
    let settings = StorageConfig::default();
    let storage = CheckpointStorage::local(dir.path(), "job", &settings).unwrap();
    let rt = runtime();
    let mut coord = rt.block_on(coordinator(&storage, 1, 1));
    let mut b = vec![Heap::new(identity(128, 1, 0), HeapConfig::default()).unwrap()];
    fill(&mut b[0], 0..10, 1);
    rt.block_on(checkpoint(&mut coord, &mut b));
    rt.block_on(put(&storage, "shared/leftover.sst", b"old"));
    let before = rt.block_on(contents(&storage));
    let url = dir.path().join("job");
    let statectl = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_statectl"))
            .args(args)
            .output()
            .unwrap()
    };
    let url = url.to_str().unwrap();
    let dry = statectl(&["gc", url, "--dry-run", "--min-age", "0s"]);
    assert!(dry.status.success(), "{dry:?}");
    assert!(
        String::from_utf8_lossy(&dry.stdout).contains("would delete shared/leftover.sst"),
        "{dry:?}"
    );
    assert_eq!(
        rt.block_on(contents(&storage)),
        before,
        "a dry run changes no byte"
    );
    let live = statectl(&["gc", url, "--min-age", "0s"]);
    assert!(!live.status.success(), "{live:?}");
    assert!(
        String::from_utf8_lossy(&live.stderr).contains("--force"),
        "{live:?}"
    );
    assert_eq!(rt.block_on(contents(&storage)), before);
    // The running job noticed nothing.
    assert!(!coord.is_fenced());
    rt.block_on(checkpoint(&mut coord, &mut b));
    // Once it shut down, gc sweeps.
    rt.block_on(coord.shutdown(CancellationPolicy::RetainOnCancellation))
        .unwrap();
    let real = statectl(&["gc", url, "--min-age", "0s"]);
    assert!(real.status.success(), "{real:?}");
    assert!(!rt.block_on(exists(&storage, "shared/leftover.sst")));
}
