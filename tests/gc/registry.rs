//! The shared-file registry and its garbage collection, driven through the coordinator with hand-made
//! state handles (no backend needed), one test per known pitfall of shared-state registries and garbage
//! collectors (Flink's and SlateDB's public bugs, `docs/lsm.md`; named after its bug).

use std::sync::Arc;
use std::time::Duration;

use crate::common::{coordinator, exists, runtime};
use object_store::ObjectStoreExt;
use statebackend::key_group::key_group_range_for_operator;
use statebackend::snapshot::{FileScope, HandleFormat, StateFile};
use statebackend::*;

async fn upload(storage: &CheckpointStorage, path: &str) {
    storage
        .object_store()
        .put(
            &storage.path(path),
            bytes::Bytes::from(path.to_string()).into(),
        )
        .await
        .unwrap();
}

/// A task of `subtask` of 2 in checkpoint `id` referencing shared files `(path, created_by)`.
fn task(subtask: u32, id: u64, files: &[(&str, u64)]) -> TaskStateSnapshot {
    task_of(2, subtask, id, files)
}

/// A task of `subtask` of `parallelism` in checkpoint `id` referencing shared files `(path, created_by)`.
fn task_of(parallelism: u32, subtask: u32, id: u64, files: &[(&str, u64)]) -> TaskStateSnapshot {
    TaskStateSnapshot {
        operator_id: "op".into(),
        subtask_index: subtask,
        keyed_state: Some(KeyedStateHandle {
            backend_id: format!("b{subtask}"),
            operator_id: "op".into(),
            checkpoint_id: id,
            max_parallelism: 8,
            key_groups: key_group_range_for_operator(8, parallelism, subtask).unwrap(),
            format: HandleFormat::RocksIncremental,
            files: files
                .iter()
                .map(|(path, created_by)| StateFile {
                    path: (*path).into(),
                    scope: FileScope::Shared,
                    size_bytes: path.len() as u64,
                    crc32: crc32fast::hash(path.as_bytes()),
                    created_by: *created_by,
                    local_name: path.rsplit('-').next().unwrap().into(),
                })
                .collect(),
        }),
        ..Default::default()
    }
}

/// Completes checkpoint `id` with one task, uploading the files it creates.
async fn complete(coord: &mut CheckpointCoordinator, files: &[(&str, u64)]) -> CheckpointStats {
    let id = coord.trigger().await.unwrap();
    for (path, created_by) in files {
        if *created_by == id {
            upload(coord.storage(), path).await;
        }
    }
    coord
        .acknowledge(id, task_of(1, 0, id, files), None)
        .await
        .unwrap()
        .completed()
        .unwrap()
}

/// A coordinator of one task whose clock the test moves; the clock starts at the store's time.
/// A coordinator on `storage` (a [`crate::common::clocked::ClockedStore`]'s) with the store's clock.
async fn clocked(storage: &CheckpointStorage, clock: &Arc<ManualClock>) -> CheckpointCoordinator {
    let clock = clock.clone();
    // Checkpoints here may run longer than the sweeps' `min_age` (10 min), so the checkpoint timeout is
    // longer still: a sweep must spare a slow checkpoint's uploads for as long as it is allowed to run.
    let mut config = CoordinatorConfig::single_operator("op", 1, 1);
    config.checkpoint_timeout = Duration::from_secs(3600);
    CheckpointCoordinator::open_with_clock(storage.clone(), config, clock)
        .await
        .unwrap()
}

#[test]
fn subsumption_deletes_only_files_no_retained_checkpoint_uses() {
    runtime().block_on(async {
        let storage = CheckpointStorage::in_memory("gc").unwrap();
        let mut coord = coordinator(&storage, 1, 1).await;
        complete(&mut coord, &[("shared/a-1.sst", 1), ("shared/b-1.sst", 1)]).await;
        let stats = complete(&mut coord, &[("shared/a-1.sst", 1), ("shared/c-2.sst", 2)]).await;
        assert_eq!(stats.subsumed, vec![1]);
        assert_eq!(stats.registry.files, 2);
        assert_eq!(stats.registry.deleted_files, 1);
        assert!(
            exists(&storage, "shared/a-1.sst").await,
            "still used by checkpoint 2"
        );
        assert!(!exists(&storage, "shared/b-1.sst").await, "used by nobody");
        assert!(exists(&storage, "shared/c-2.sst").await);
    });
}

/// FLINK-29913: two subtasks upload files with the same local name in the same checkpoint. Keyed by
/// physical path, neither hides the other, and dropping one subtask's reference does not delete the
/// other's file.
#[test]
fn flink_29913_registry_is_keyed_by_physical_path() {
    runtime().block_on(async {
        let storage = CheckpointStorage::in_memory("f29913").unwrap();
        let mut coord = coordinator(&storage, 1, 2).await;
        let id = coord.trigger().await.unwrap();
        upload(&storage, "shared/b0-000009.sst").await;
        upload(&storage, "shared/b1-000009.sst").await;
        coord
            .acknowledge(id, task(0, id, &[("shared/b0-000009.sst", id)]), None)
            .await
            .unwrap();
        coord
            .acknowledge(id, task(1, id, &[("shared/b1-000009.sst", id)]), None)
            .await
            .unwrap();
        assert_eq!(coord.store().registry().len(), 2);
        // Next checkpoint: subtask 0 compacted its file away, subtask 1 still uses its own.
        let id2 = coord.trigger().await.unwrap();
        upload(&storage, "shared/b0-000012.sst").await;
        coord
            .acknowledge(id2, task(0, id2, &[("shared/b0-000012.sst", id2)]), None)
            .await
            .unwrap();
        coord
            .acknowledge(id2, task(1, id2, &[("shared/b1-000009.sst", id)]), None)
            .await
            .unwrap();
        assert!(!exists(&storage, "shared/b0-000009.sst").await);
        assert!(
            exists(&storage, "shared/b1-000009.sst").await,
            "the same local name of another subtask stays"
        );
    });
}

/// FLINK-24611: aborting a checkpoint that reused files must not delete them (no reference counts that an
/// abort decrements).
#[test]
fn flink_24611_abort_never_deletes_reused_files() {
    runtime().block_on(async {
        let storage = CheckpointStorage::in_memory("f24611").unwrap();
        let mut coord = coordinator(&storage, 1, 2).await;
        let id = coord.trigger().await.unwrap();
        upload(&storage, "shared/a-1.sst").await;
        coord
            .acknowledge(id, task(0, id, &[("shared/a-1.sst", id)]), None)
            .await
            .unwrap();
        coord.acknowledge(id, task(1, id, &[]), None).await.unwrap();
        let id2 = coord.trigger().await.unwrap();
        upload(&storage, "shared/b-2.sst").await;
        coord
            .acknowledge(
                id2,
                task(0, id2, &[("shared/a-1.sst", id), ("shared/b-2.sst", id2)]),
                None,
            )
            .await
            .unwrap();
        coord.abort(id2).await.unwrap();
        assert!(
            exists(&storage, "shared/a-1.sst").await,
            "reused by the aborted checkpoint, owned by 1"
        );
        assert!(
            !exists(&storage, "shared/b-2.sst").await,
            "uploaded by the aborted checkpoint"
        );
        complete_two(&mut coord, &[("shared/a-1.sst", id)]).await;
        assert!(exists(&storage, "shared/a-1.sst").await);
    });
}

async fn complete_two(coord: &mut CheckpointCoordinator, files: &[(&str, u64)]) {
    let id = coord.trigger().await.unwrap();
    coord
        .acknowledge(id, task(0, id, files), None)
        .await
        .unwrap();
    coord
        .acknowledge(id, task(1, id, &[]), None)
        .await
        .unwrap()
        .completed()
        .unwrap();
}

/// FLINK-26985: a checkpoint restored in NO_CLAIM mode is pinned: neither it nor its files are deleted
/// when later checkpoints subsume it, also after the coordinator restarts. In CLAIM mode it is subsumed.
#[test]
fn flink_26985_no_claim_never_deletes_the_restored_checkpoint() {
    runtime().block_on(async {
        for mode in [RestoreMode::NoClaim, RestoreMode::Claim] {
            let storage = CheckpointStorage::in_memory("f26985").unwrap();
            let mut coord = coordinator(&storage, 1, 1).await;
            complete(&mut coord, &[("shared/a-1.sst", 1)]).await;
            drop(coord);
            let mut coord = coordinator(&storage, 1, 1).await;
            let meta = coord.store().get(1).unwrap().clone();
            coord.restored_from(&meta, mode).await.unwrap();
            // The first checkpoint after a NO_CLAIM restore is full: it never references the old files.
            complete(&mut coord, &[("shared/b-2.sst", 2)]).await;
            complete(&mut coord, &[("shared/c-3.sst", 3)]).await;
            let kept = mode == RestoreMode::NoClaim;
            assert_eq!(exists(&storage, "shared/a-1.sst").await, kept, "{mode:?}");
            assert_eq!(exists(&storage, "chk-1/_metadata").await, kept, "{mode:?}");
            assert!(!exists(&storage, "shared/b-2.sst").await);
            let coord = coordinator(&storage, 1, 1).await;
            assert_eq!(coord.store().pinned().len(), usize::from(kept));
            assert_eq!(coord.store().references("shared/a-1.sst"), kept);
        }
    });
}

/// FLINK-7268: the registry is rebuilt from the retained checkpoints when the coordinator opens, so GC
/// after a restart deletes exactly what no retained checkpoint uses.
#[test]
fn flink_7268_registry_is_rebuilt_on_open() {
    runtime().block_on(async {
        let storage = CheckpointStorage::in_memory("f7268").unwrap();
        let mut coord = coordinator(&storage, 2, 1).await;
        complete(&mut coord, &[("shared/a-1.sst", 1), ("shared/b-1.sst", 1)]).await;
        complete(&mut coord, &[("shared/a-1.sst", 1), ("shared/c-2.sst", 2)]).await;
        let before = coord.store().registry().clone();
        drop(coord);
        let mut coord = coordinator(&storage, 2, 1).await;
        assert_eq!(coord.store().registry(), &before);
        complete(&mut coord, &[("shared/a-1.sst", 1), ("shared/d-3.sst", 3)]).await;
        // Checkpoint 1 is subsumed: b is used by nobody, a by 3, c by 2.
        assert!(!exists(&storage, "shared/b-1.sst").await);
        for path in ["shared/a-1.sst", "shared/c-2.sst", "shared/d-3.sst"] {
            assert!(exists(&storage, path).await, "{path}");
        }
    });
}

/// Concurrent checkpoints: checkpoint 3 was built on base 1 and reuses a file that checkpoint 2's
/// completion (retain 1) deleted. It is declined, never completed with a dangling reference.
#[test]
fn concurrent_checkpoint_reusing_a_deleted_file_is_declined() {
    runtime().block_on(async {
        let storage = CheckpointStorage::in_memory("concurrent").unwrap();
        let mut coord = coordinator(&storage, 1, 1).await;
        complete(&mut coord, &[("shared/a-1.sst", 1)]).await;
        let id2 = coord.trigger().await.unwrap();
        let id3 = coord.trigger().await.unwrap();
        upload(&storage, "shared/b-2.sst").await;
        upload(&storage, "shared/c-3.sst").await;
        coord
            .acknowledge(id2, task_of(1, 0, id2, &[("shared/b-2.sst", id2)]), None)
            .await
            .unwrap();
        assert!(!exists(&storage, "shared/a-1.sst").await);
        let answer = coord
            .acknowledge(
                id3,
                task_of(1, 0, id3, &[("shared/a-1.sst", 1), ("shared/c-3.sst", id3)]),
                None,
            )
            .await
            .unwrap();
        assert_eq!(
            answer,
            Acknowledgement::Declined(Declined::UnavailableFiles(vec!["shared/a-1.sst".into()]))
        );
        assert!(
            !exists(&storage, "shared/c-3.sst").await,
            "the declined checkpoint's uploads are deleted"
        );
        assert_eq!(coord.store().latest().unwrap().checkpoint_id, id2);
    });
}

/// A completed checkpoint aborts the older pending ones (as Flink), and says so.
#[test]
fn completion_aborts_older_pending_checkpoints() {
    runtime().block_on(async {
        let storage = CheckpointStorage::in_memory("older").unwrap();
        let mut coord = coordinator(&storage, 1, 1).await;
        let old = coord.trigger().await.unwrap();
        let stats = complete(&mut coord, &[("shared/a-2.sst", 2)]).await;
        assert_eq!(stats.aborted_pending, vec![old]);
        assert!(coord.pending().is_empty());
    });
}

/// SlateDB #1758 and #204: the orphan sweep never deletes an upload of a checkpoint still in flight,
/// classifies before deleting, and does delete real orphans once they are old enough. Age comes from the
/// store's `last_modified` (`docs/protocol.md`, "The orphan sweep"), so a restarted coordinator's first sweep already
/// collects an old leftover. (#204's concern, a file re-referenced just after it became unreferenced, cannot
/// arise here: a checkpoint reusing a file the registry no longer holds is declined.)
#[test]
fn slatedb_1758_204_orphan_sweep_spares_in_flight_uploads() {
    runtime().block_on(async {
        let (storage, clock, _) = crate::common::clocked::clocked_storage("sweep");
        let mut coord = clocked(&storage, &clock).await;
        complete(&mut coord, &[("shared/a-1.sst", 1)]).await;
        upload(&storage, "shared/orphan-0.sst").await; // left by a crashed attempt
        let min_age = Duration::from_secs(600);
        let r = coord.sweep_orphans(min_age).await.unwrap();
        // chk-1/_metadata, chk-1/_trigger and shared/a-1.sst are a checkpoint's; the orphan is young.
        assert_eq!(
            (r.listed, r.referenced, r.too_young, r.deleted.len()),
            (4, 3, 1, 0),
            "{r:?}"
        );
        // A slow checkpoint uploads now; its file is unreferenced until it completes.
        let id = coord.trigger().await.unwrap();
        upload(&storage, "shared/inflight-2.sst").await;
        clock.advance(min_age + Duration::from_secs(1));
        let r = coord.sweep_orphans(min_age).await.unwrap();
        assert_eq!(r.deleted, vec!["shared/orphan-0.sst".to_string()]);
        assert!(
            exists(&storage, "shared/inflight-2.sst").await,
            "first seen unreferenced while its checkpoint is pending"
        );
        coord
            .acknowledge(
                id,
                task_of(1, 0, id, &[("shared/inflight-2.sst", id)]),
                None,
            )
            .await
            .unwrap();
        clock.advance(min_age * 2);
        let r = coord.sweep_orphans(min_age).await.unwrap();
        assert!(r.deleted.is_empty(), "{r:?}");
        assert!(exists(&storage, "shared/inflight-2.sst").await);
        // A restarted coordinator knows nothing in memory; the store says how old a leftover is.
        upload(&storage, "shared/orphan-9.sst").await;
        let mut coord = clocked(&storage, &clock).await;
        let r = coord.sweep_orphans(min_age).await.unwrap();
        assert!(r.deleted.is_empty(), "just written: {r:?}");
        clock.advance(min_age + Duration::from_secs(1));
        let r = coord.sweep_orphans(min_age).await.unwrap();
        assert_eq!(r.deleted, vec!["shared/orphan-9.sst".to_string()]);
    });
}

/// Found by `registry_model`: a checkpoint in flight longer than `min_age` had its uploads swept. A file
/// first seen unreferenced while a checkpoint was pending stays until that checkpoint completes or aborts.
#[test]
fn registry_model_sweep_spares_uploads_of_a_checkpoint_pending_longer_than_min_age() {
    runtime().block_on(async {
        let (storage, clock, _) = crate::common::clocked::clocked_storage("slow");
        let mut coord = clocked(&storage, &clock).await;
        let id = coord.trigger().await.unwrap();
        upload(&storage, "shared/slow-1.sst").await;
        for _ in 0..3 {
            clock.advance(Duration::from_secs(100));
            let r = coord.sweep_orphans(Duration::from_secs(1)).await.unwrap();
            assert!(r.deleted.is_empty(), "{r:?}");
        }
        coord.abort(id).await.unwrap();
        upload(&storage, "shared/slow-1.sst").await; // a late upload after the abort
        clock.advance(Duration::from_secs(100));
        let r = coord.sweep_orphans(Duration::from_secs(1)).await.unwrap();
        assert_eq!(r.deleted, vec!["shared/slow-1.sst".to_string()]);
    });
}
