//! Checkpoint lifecycle: retention and subsumption, abort, ids, cancellation policies, storage failures,
//! corrupt and missing files, and the fallback to the previous checkpoint.

use std::sync::Arc;
use std::time::Duration;

use crate::common::faulty::FaultyStore;
use crate::common::*;
use object_store::{ObjectStore, ObjectStoreExt};
use statebackend::checkpoint::CancellationPolicy;
use statebackend::checkpoint::CompletedCheckpointStore;
use statebackend::checkpoint::Discarded;
use statebackend::checkpoint::RestoreOutcome;
use statebackend::heap::HeapKeyedStateBackend;
use statebackend::snapshot::FileScope;
use statebackend::snapshot::HandleFormat;
use statebackend::snapshot::StateFile;
use statebackend::snapshot::layout::*;
use statebackend::*;

const NS: VoidNamespace = VoidNamespace;

fn counts() -> ValueStateDescriptor<VoidNamespace, u64> {
    ValueStateDescriptor::new("counts")
}

fn write_round(b: &mut HeapKeyedStateBackend<u64>, round: u64) {
    let s = b.value_state(&counts()).unwrap();
    for k in 0..2_000 {
        b.set_current_key(k).unwrap();
        s.update(b, &NS, round).unwrap();
    }
}

fn value_of(b: &mut HeapKeyedStateBackend<u64>, key: u64) -> Option<u64> {
    let s = b.value_state(&counts()).unwrap();
    b.set_current_key(key).unwrap();
    s.value(b, &NS).unwrap()
}

/// Every object of the store but the coordinators' generation markers (`_coordinators/`), sorted.
async fn files(store: &Arc<dyn ObjectStore>) -> Vec<String> {
    use futures::TryStreamExt;
    let mut v: Vec<String> = store
        .list(None)
        .map_ok(|m| m.location.to_string())
        .try_collect::<Vec<String>>()
        .await
        .unwrap()
        .into_iter()
        .filter(|p| !p.contains(&format!("/{COORDINATORS_DIR}/")))
        .collect();
    v.sort();
    v
}

async fn setup(
    storage: &CheckpointStorage,
    retained: usize,
) -> (CheckpointCoordinator, Vec<HeapKeyedStateBackend<u64>>) {
    let coordinator = CheckpointCoordinator::open(
        storage.clone(),
        CoordinatorConfig::single_operator("op", 1, retained),
    )
    .await
    .unwrap();
    (
        coordinator,
        vec![HeapKeyedStateBackend::<u64>::new(identity(128, 1, 0), full_files()).unwrap()],
    )
}

#[test]
fn retains_the_last_n_and_deletes_subsumed_checkpoints() {
    runtime().block_on(async {
        let storage = CheckpointStorage::in_memory("retain").unwrap();
        let (mut c, mut b) = setup(&storage, 2).await;
        for round in 1..=4 {
            write_round(&mut b[0], round);
            let stats = checkpoint(&mut c, &mut b).await;
            assert_eq!(stats.checkpoint_id, round);
            assert!(stats.full_bytes > 0 && stats.checkpointed_bytes == stats.full_bytes);
            assert_eq!(
                stats.subsumed,
                if round > 2 { vec![round - 2] } else { vec![] }
            );
        }
        let ids: Vec<u64> = c.store().checkpoints().map(|m| m.checkpoint_id).collect();
        assert_eq!(ids, vec![3, 4]);
        let all = files(storage.object_store()).await;
        assert!(
            all.iter()
                .all(|f| f.contains("chk-3/") || f.contains("chk-4/")),
            "{all:?}"
        );
        assert_eq!(
            all.len(),
            8,
            "metadata, id reservation, phase durations (`_stats`) and one keyed file per retained \
             checkpoint: {all:?}"
        );

        // A reopened store finds the same checkpoints (derived from storage, not memory).
        let store = CompletedCheckpointStore::open(storage.clone(), 2)
            .await
            .unwrap();
        assert_eq!(store.latest().unwrap().checkpoint_id, 4);
        let mut r = restore::<u64>(&storage, store.latest().unwrap(), 128, 1)
            .await
            .unwrap();
        assert_eq!(value_of(&mut r[0], 7), Some(4));
    });
}

#[test]
fn abort_deletes_what_the_checkpoint_wrote_and_ids_are_never_reused() {
    runtime().block_on(async {
        let storage = CheckpointStorage::in_memory("abort").unwrap();
        let (mut c, mut b) = setup(&storage, 1).await;
        write_round(&mut b[0], 1);
        checkpoint(&mut c, &mut b).await;
        let id = c.trigger().await.unwrap();
        let result = b[0].snapshot(id, &storage).unwrap().run().await.unwrap();
        c.abort(id).await.unwrap();
        b[0].notify_checkpoint_aborted(id);
        let left: Vec<String> = files(storage.object_store())
            .await
            .into_iter()
            .filter(|f| f.contains(&format!("chk-{id}/")))
            .collect();
        assert_eq!(
            left,
            vec![format!("abort/chk-{id}/{TRIGGER_MARKER}")],
            "only the id reservation stays"
        );
        // A late acknowledgement of the aborted checkpoint is refused and its file discarded.
        let late = TaskStateSnapshot {
            operator_id: "op".into(),
            keyed_state: Some(result.handle),
            ..Default::default()
        };
        assert_eq!(
            c.acknowledge(id, late, None).await.unwrap(),
            Acknowledgement::Discarded(Discarded::Aborted)
        );
        assert_eq!(c.store().latest().unwrap().checkpoint_id, 1);
        // A new coordinator continues after the highest id ever used, even one that never completed.
        let id3 = c.trigger().await.unwrap();
        let _ = b[0].snapshot(id3, &storage).unwrap().run().await.unwrap();
        drop(c);
        let clock = Arc::new(ManualClock::new(std::time::SystemTime::now()));
        let mut c2 = CheckpointCoordinator::open_with_clock(
            storage.clone(),
            CoordinatorConfig::single_operator("op", 1, 1),
            clock.clone(),
        )
        .await
        .unwrap();
        assert_eq!(c2.trigger().await.unwrap(), id3 + 1);
        // What the crashed attempt left is the orphan sweep's once it is older than the minimum age (on
        // the store's clock: none here).
        clock.advance(Duration::from_secs(60));
        let swept = c2.sweep_orphans(Duration::ZERO).await.unwrap();
        assert!(
            swept
                .deleted
                .iter()
                .any(|p| p.starts_with(&format!("chk-{id3}/"))),
            "{swept:?}"
        );
        assert!(
            files(storage.object_store())
                .await
                .iter()
                .all(|f| !f.contains(&format!("chk-{id3}/"))),
            "incomplete checkpoint swept"
        );
    });
}

#[test]
fn cancellation_retains_or_deletes() {
    runtime().block_on(async {
        for (policy, left) in [
            // The checkpoint's metadata, its reservation, its `_stats` and its state file; the aborted
            // one's reservation.
            (CancellationPolicy::RetainOnCancellation, 5),
            // The lineage record of the cancellation (ids and generations keep rising for the next job).
            (CancellationPolicy::DeleteOnCancellation, 1),
        ] {
            let storage = CheckpointStorage::in_memory("cancel").unwrap();
            let (mut c, mut b) = setup(&storage, 1).await;
            write_round(&mut b[0], 1);
            checkpoint(&mut c, &mut b).await;
            let _pending = c.trigger().await.unwrap();
            c.shutdown(policy).await.unwrap();
            assert_eq!(
                files(storage.object_store()).await.len(),
                left,
                "{policy:?}"
            );
        }
    });
}

#[test]
fn a_failed_upload_fails_the_checkpoint_and_keeps_the_previous_one() {
    runtime().block_on(async {
        let faulty = FaultyStore::new();
        let storage = CheckpointStorage::new(faulty.clone(), "faults").unwrap();
        let (mut c, mut b) = setup(&storage, 1).await;
        write_round(&mut b[0], 1);
        checkpoint(&mut c, &mut b).await;

        // The state file of checkpoint 2 cannot be written.
        write_round(&mut b[0], 2);
        let id = c.trigger().await.unwrap();
        faulty.fail_writes_to("chk-2/");
        let err = b[0]
            .snapshot(id, &storage)
            .unwrap()
            .run()
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Storage);
        assert!(err.to_string().contains("chk-2"), "{err}");
        c.abort(id).await.unwrap();
        faulty.heal();

        // The metadata of checkpoint 3 cannot be written: the checkpoint never completes.
        faulty.fail_writes_to("chk-3/_metadata");
        let id = c.trigger().await.unwrap();
        let result = b[0].snapshot(id, &storage).unwrap().run().await.unwrap();
        let task = TaskStateSnapshot {
            operator_id: "op".into(),
            keyed_state: Some(result.handle),
            ..Default::default()
        };
        assert_eq!(
            c.acknowledge(id, task, None).await.unwrap_err().kind(),
            ErrorKind::Storage
        );
        faulty.heal();

        assert_eq!(c.store().latest().unwrap().checkpoint_id, 1);
        // Checkpoint 2 is aborted: only its reservation stays. Checkpoint 3's metadata write failed and
        // may have taken effect: nothing of it is deleted (docs/protocol.md, "Completion point"), its
        // files are the orphan sweep's if its metadata never appears.
        c.abort(2).await.unwrap();
        let all = files(storage.object_store()).await;
        assert!(
            all.iter().all(|f| f.contains("chk-1/")
                || f.ends_with(&format!("chk-2/{TRIGGER_MARKER}"))
                || f.contains("chk-3/")),
            "failed checkpoints left files: {all:?}"
        );
        assert!(
            all.iter().any(|f| f.contains("chk-3/op-0-")),
            "the state file of an uncertain completion is kept: {all:?}"
        );
        let mut r = restore::<u64>(&storage, c.store().latest().unwrap(), 128, 1)
            .await
            .unwrap();
        assert_eq!(value_of(&mut r[0], 1), Some(1));
    });
}

/// Two retained checkpoints; returns the storage and the keyed file path of the latest.
async fn two_checkpoints(dir: &std::path::Path) -> (CheckpointStorage, object_store::path::Path) {
    let storage = CheckpointStorage::local(
        dir,
        "corrupt",
        &StorageConfig {
            fsync: false,
            ..StorageConfig::default()
        },
    )
    .unwrap();
    let (mut c, mut b) = setup(&storage, 2).await;
    for round in 1..=2 {
        write_round(&mut b[0], round);
        checkpoint(&mut c, &mut b).await;
    }
    let latest = c.store().latest().unwrap();
    let file = latest.tasks[0].keyed_state.as_ref().unwrap().files[0]
        .path
        .clone();
    (storage.clone(), storage.path(&file))
}

async fn restore_latest(
    storage: &CheckpointStorage,
) -> Result<RestoreOutcome<Vec<HeapKeyedStateBackend<u64>>>> {
    let store = CompletedCheckpointStore::open(storage.clone(), 2).await?;
    store
        .restore_latest(|meta| async move { restore::<u64>(storage, &meta, 128, 1).await })
        .await
}

#[test]
fn corrupt_truncated_and_missing_files_are_typed_errors_and_restore_falls_back() {
    runtime().block_on(async {
        type Damage = fn(Vec<u8>) -> Option<Vec<u8>>;
        let cases: [(&str, Damage, ErrorKind); 4] = [
            (
                "flipped byte",
                |mut b| {
                    let i = b.len() / 2;
                    b[i] ^= 0xff;
                    Some(b)
                },
                ErrorKind::Corrupt,
            ),
            (
                "truncated",
                |mut b| {
                    b.truncate(b.len() - 10);
                    Some(b)
                },
                ErrorKind::Corrupt,
            ),
            (
                "wrong magic",
                |mut b| {
                    b[0] = b'X';
                    let n = b.len();
                    b[n - 1] = b'X';
                    Some(b)
                },
                ErrorKind::Corrupt,
            ),
            ("missing", |_| None, ErrorKind::NotFound),
        ];
        for (name, damage, kind) in cases {
            let dir = tempfile::tempdir().unwrap();
            let (storage, file) = two_checkpoints(dir.path()).await;
            let store = storage.object_store();
            let bytes = store
                .get(&file)
                .await
                .unwrap()
                .bytes()
                .await
                .unwrap()
                .to_vec();
            match damage(bytes) {
                Some(b) => {
                    store.put(&file, b.into()).await.unwrap();
                }
                None => store.delete(&file).await.unwrap(),
            }
            let meta = CompletedCheckpointStore::open(storage.clone(), 2)
                .await
                .unwrap()
                .latest()
                .unwrap()
                .clone();
            let err = restore::<u64>(&storage, &meta, 128, 1)
                .await
                .map(|_| ())
                .unwrap_err();
            assert_eq!(err.kind(), kind, "{name}: {err}");
            assert!(
                err.to_string().contains(file.as_ref()),
                "{name}: error must name the file: {err}"
            );

            let outcome = restore_latest(&storage).await.unwrap();
            assert_eq!(
                outcome.checkpoint_id, 1,
                "{name}: falls back to the previous checkpoint"
            );
            assert_eq!(outcome.skipped.len(), 1);
            assert_eq!(outcome.skipped[0].checkpoint_id, 2);
            let mut b = outcome.value;
            assert_eq!(value_of(&mut b[0], 3), Some(1));
            // The bad checkpoint was reported, not deleted.
            assert!(
                CompletedCheckpointStore::open(storage.clone(), 2)
                    .await
                    .unwrap()
                    .get(2)
                    .is_some()
            );
        }
    });
}

#[test]
fn corrupt_metadata_is_skipped_and_never_deleted() {
    runtime().block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let (storage, state_file) = two_checkpoints(dir.path()).await;
        let meta_path = storage.path("chk-2/_metadata");
        storage
            .object_store()
            .put(&meta_path, b"garbage".to_vec().into())
            .await
            .unwrap();
        let store = CompletedCheckpointStore::open(storage.clone(), 2)
            .await
            .unwrap();
        assert_eq!(store.latest().unwrap().checkpoint_id, 1);
        assert_eq!(store.unreadable().len(), 1);
        let outcome = restore_latest(&storage).await.unwrap();
        assert_eq!(outcome.checkpoint_id, 1);
        assert_eq!(outcome.skipped[0].checkpoint_id, 2);
        // Opening a coordinator must not delete the unreadable checkpoint's files either.
        let _c = CheckpointCoordinator::open(
            storage.clone(),
            CoordinatorConfig::single_operator("op", 1, 2),
        )
        .await
        .unwrap();
        assert!(storage.object_store().head(&state_file).await.is_ok());
    });
}

#[test]
fn directory_where_metadata_should_be_is_an_unreadable_checkpoint_not_a_failed_open() {
    runtime().block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let (storage, state_file) = two_checkpoints(dir.path()).await;
        let meta = dir.path().join("corrupt/chk-2/_metadata");
        std::fs::remove_file(&meta).unwrap();
        std::fs::create_dir(&meta).unwrap();
        let outcome = restore_latest(&storage).await.unwrap();
        assert_eq!(outcome.checkpoint_id, 1);
        assert_eq!(outcome.skipped[0].checkpoint_id, 2);
        assert!(
            outcome.skipped[0].reason.contains("directory"),
            "{}",
            outcome.skipped[0].reason
        );
        let _c = CheckpointCoordinator::open(
            storage.clone(),
            CoordinatorConfig::single_operator("op", 1, 2),
        )
        .await
        .unwrap();
        assert!(storage.object_store().head(&state_file).await.is_ok());
    });
}

#[test]
fn no_restorable_checkpoint_is_a_not_found_error_listing_the_reasons() {
    runtime().block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let (storage, _) = two_checkpoints(dir.path()).await;
        let store = CompletedCheckpointStore::open(storage.clone(), 2)
            .await
            .unwrap();
        for meta in store.checkpoints() {
            for f in meta.files() {
                storage
                    .object_store()
                    .delete(&storage.path(&f.path))
                    .await
                    .unwrap();
            }
        }
        let err = restore_latest(&storage).await.map(|_| ()).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::NotFound);
        assert!(
            err.to_string().contains("chk-1") && err.to_string().contains("chk-2"),
            "{err}"
        );
    });
}

/// Found by `cargo fuzz run restore`: an empty snapshot file on in-memory storage gave a storage error (an
/// empty range request) instead of `Corrupt`.
#[test]
fn fuzz_empty_snapshot_file_is_corrupt_not_a_storage_error() {
    runtime().block_on(async {
        let storage = CheckpointStorage::in_memory("empty").unwrap();
        let path = "chk-1/op-0.keyed";
        storage
            .object_store()
            .put(&storage.path(path), Vec::<u8>::new().into())
            .await
            .unwrap();
        let handle = KeyedStateHandle {
            backend_id: "b".into(),
            operator_id: "op".into(),
            checkpoint_id: 1,
            max_parallelism: 128,
            key_groups: KeyGroupRange::new(0, 127).unwrap(),
            format: HandleFormat::KeyedFile,
            files: vec![StateFile {
                path: path.into(),
                scope: FileScope::Private,
                size_bytes: 0,
                crc32: 0,
                created_by: 1,
                local_name: String::new(),
            }],
        };
        let err = HeapKeyedStateBackend::<u64>::restore(
            identity(128, 1, 0),
            full_files(),
            &storage,
            &[handle],
            RestoreMode::Claim,
        )
        .await
        .map(|_| ())
        .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Corrupt, "{err}");
        assert!(err.to_string().contains("chk-1/op-0.keyed"), "{err}");
    });
}

/// Found by the kill loop in CI: a process killed while writing one of the protocol's own files (the
/// sweep's `_clock` probe, a generation marker, a lineage record) left `<name>#<digits>` outside `shared/`
/// and `chk-*/`, where the sweep neither counted nor deleted anything, so it stayed for good.
#[test]
fn kill_loop_staging_file_of_a_protocol_write_is_swept() {
    runtime().block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let config = StorageConfig {
            fsync: false,
            ..StorageConfig::default()
        };
        let storage = CheckpointStorage::local(dir.path(), "protocol-staging", &config).unwrap();
        let (mut coord, _clock) = clocked(&storage, 1, 1).await;
        let mut b = vec![HeapKeyedStateBackend::new(identity(128, 1, 0), full_files()).unwrap()];
        fill(&mut b[0], 0..100, 1);
        checkpoint(&mut coord, &mut b).await;
        let root = dir.path().join("protocol-staging");
        let left = [
            format!("{CLOCK_FILE}#2"),
            format!("{COORDINATORS_DIR}/7#1"),
            format!("{LINEAGE_DIR}/00000000000000000003#14"),
            format!("{SAVEPOINT_DIR}/sp-9/op-0-0123456789abcdef.keyed#5"),
        ];
        for f in &left {
            let path = root.join(f);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, vec![7u8; 64]).unwrap();
        }
        // Young: kept (a live writer may be about to rename it), and counted as such.
        let young = coord.sweep_orphans(Duration::from_secs(60)).await.unwrap();
        assert!(young.deleted.is_empty(), "{young:?}");
        assert!(young.too_young >= left.len(), "{young:?}");
        let sweep = coord.sweep_orphans(Duration::ZERO).await.unwrap();
        let mut deleted = sweep.deleted.clone();
        deleted.sort();
        let mut expected = left.to_vec();
        expected.sort();
        assert_eq!(deleted, expected, "{sweep:?}");
        for f in &left {
            assert!(!root.join(f).exists(), "{f} stayed");
        }
        // The protocol's own files are untouched, and the checkpoint restores.
        assert!(
            root.join(COORDINATORS_DIR)
                .read_dir()
                .unwrap()
                .next()
                .is_some()
        );
        assert_retained_files_intact(&coord, true).await;
        let again = coord.sweep_orphans(Duration::ZERO).await.unwrap();
        assert!(again.deleted.is_empty(), "{again:?}");
    });
}
