//! The runtime-chosen `StateBackend` through checkpoint and restore, for both kinds: dropped states stay
//! dropped, restored states can be dropped before they are registered, rescaling works through
//! `restore_checkpoint`, and map state and namespaces survive the cycle.

use crate::common::{backend_config, backend_kinds, identity};
use statebackend::*;

const NS: VoidNamespace = VoidNamespace;

#[test]
fn dropped_states_stay_dropped_through_checkpoint_restore_and_rescale() {
    crate::common::runtime().block_on(async {
        for kind in backend_kinds() {
            let dir = tempfile::tempdir().unwrap();
            let storage = CheckpointStorage::in_memory("job").unwrap();
            let mut coordinator = crate::common::coordinator(&storage, 2, 1).await;
            let mut b: StateBackend<u64> =
                StateBackend::new(&identity(128, 1, 0), &backend_config(kind, dir.path())).unwrap();
            assert_eq!(b.kind(), kind);
            let keep = b
                .value_state(&ValueStateDescriptor::<VoidNamespace, u64>::new("keep"))
                .unwrap();
            let gone = b
                .value_state(&ValueStateDescriptor::<VoidNamespace, u64>::new("gone"))
                .unwrap();
            let later = b
                .value_state(&ValueStateDescriptor::<VoidNamespace, u64>::new("later"))
                .unwrap();
            let windows = b
                .map_state(&MapStateDescriptor::<u32, String, u64>::new("windows"))
                .unwrap();
            for k in 0..300u64 {
                b.set_current_key(k).unwrap();
                keep.update(&mut b, &NS, k).unwrap();
                gone.update(&mut b, &NS, k).unwrap();
                later.update(&mut b, &NS, k).unwrap();
                windows
                    .put_all(
                        &mut b,
                        &((k % 3) as u32),
                        [(format!("w{k}"), k), ("x".into(), 1)],
                    )
                    .unwrap();
            }
            assert!(b.drop_state("gone").unwrap());
            let meta = {
                crate::common::checkpoint(&mut coordinator, std::slice::from_mut(&mut b)).await;
                coordinator.store().latest().unwrap().clone()
            };

            // Same parallelism: "gone" is not restored; "later" is restored, then dropped unregistered.
            let mut r = StateBackend::<u64>::restore_checkpoint(
                &identity(128, 1, 0),
                &backend_config(kind, dir.path()),
                &storage,
                &meta,
                RestoreMode::Claim,
            )
            .await
            .unwrap();
            let mut names = r.state_names();
            names.sort();
            assert_eq!(names, ["keep", "later", "windows"], "{kind}");
            assert!(
                r.drop_state("later").unwrap(),
                "{kind}: a restored, unregistered state"
            );
            assert_eq!(r.state_names().len(), 2);
            let keep = r
                .value_state(&ValueStateDescriptor::<VoidNamespace, u64>::new("keep"))
                .unwrap();
            let gone = r
                .value_state(&ValueStateDescriptor::<VoidNamespace, u64>::new("gone"))
                .unwrap();
            r.set_current_key(42).unwrap();
            assert_eq!(keep.value(&r, &NS).unwrap(), Some(42));
            assert_eq!(
                gone.value(&r, &NS).unwrap(),
                None,
                "{kind}: a dropped state comes back empty"
            );
            crate::common::checkpoint(&mut coordinator, std::slice::from_mut(&mut r)).await;
            let meta = coordinator.store().latest().unwrap().clone();

            // Rescale to 2: every key's state is in its new owner, the dropped states nowhere.
            for index in 0..2 {
                let mut part = StateBackend::<u64>::restore_checkpoint(
                    &identity(128, 2, index),
                    &backend_config(kind, dir.path()),
                    &storage,
                    &meta,
                    RestoreMode::NoClaim,
                )
                .await
                .unwrap();
                let mut names = part.state_names();
                names.sort();
                assert_eq!(names, ["gone", "keep", "windows"], "{kind}");
                let keep = part
                    .value_state(&ValueStateDescriptor::<VoidNamespace, u64>::new("keep"))
                    .unwrap();
                let windows = part
                    .map_state(&MapStateDescriptor::<u32, String, u64>::new("windows"))
                    .unwrap();
                let range = part.key_group_range();
                let router = KeyGroupRouter::new(128, 2).unwrap();
                let mut owned = 0;
                for k in 0..300u64 {
                    let route = router.route(&k);
                    if !range.contains(route.key_group()) {
                        continue;
                    }
                    owned += 1;
                    assert_eq!(route.subtask(), index);
                    part.set_current_key_routed(k, route).unwrap();
                    assert_eq!(keep.value(&part, &NS).unwrap(), Some(k));
                    let mut entries: Vec<_> = windows
                        .iter(&part, &((k % 3) as u32))
                        .unwrap()
                        .map(Result::unwrap)
                        .collect();
                    entries.sort();
                    assert_eq!(entries, [(format!("w{k}"), k), ("x".to_string(), 1)]);
                }
                let pairs = windows.keys_and_namespaces(&part).unwrap();
                assert_eq!(
                    pairs.len(),
                    owned,
                    "{kind}: one namespace per key, owned keys only"
                );
            }
        }
    });
}

/// A heap checkpoint is in the canonical format (`docs/savepoints.md`): the RocksDB backend restores it. An
/// LSM checkpoint is native: the heap backend refuses it with a clear error. (Before canonical restores,
/// this test expected the first to be refused too.)
#[test]
fn a_heap_checkpoint_restores_as_lsm_and_an_lsm_checkpoint_as_heap_is_a_clear_error() {
    if !cfg!(feature = "rocksdb") {
        return;
    }
    crate::common::runtime().block_on(async {
        for (from, to) in [
            (BackendKind::Heap, BackendKind::RocksDb),
            (BackendKind::RocksDb, BackendKind::Heap),
        ] {
            let dir = tempfile::tempdir().unwrap();
            let storage = CheckpointStorage::in_memory("job").unwrap();
            let mut coordinator = crate::common::coordinator(&storage, 1, 1).await;
            let mut b: StateBackend<u64> =
                StateBackend::new(&identity(128, 1, 0), &backend_config(from, dir.path())).unwrap();
            crate::common::fill(&mut b, 0..10, 1);
            crate::common::checkpoint(&mut coordinator, std::slice::from_mut(&mut b)).await;
            let meta = coordinator.store().latest().unwrap().clone();
            let restored = StateBackend::<u64>::restore_checkpoint(
                &identity(128, 1, 0),
                &backend_config(to, dir.path()),
                &storage,
                &meta,
                RestoreMode::NoClaim,
            )
            .await;
            match from {
                BackendKind::Heap => {
                    let mut r = restored.unwrap();
                    let all = crate::common::read_all(&mut r, &crate::common::counts());
                    assert_eq!(all, (0..10).map(|k| (k, 1)).collect());
                }
                _ => {
                    let err = restored.err().unwrap();
                    assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{err}");
                    assert!(err.to_string().contains("canonical"), "{err}");
                }
            }
        }
    });
}

/// Batch writes, map `retain`/`put_all` and `drop_state` after a snapshot's synchronous phase must not reach
/// that snapshot (the heap backend's copy-on-write, the RocksDB backend's native checkpoint), on both kinds.
#[test]
fn changes_after_the_synchronous_phase_stay_out_of_the_snapshot() {
    crate::common::runtime().block_on(async {
        for kind in backend_kinds() {
            let dir = tempfile::tempdir().unwrap();
            let storage = CheckpointStorage::in_memory("job").unwrap();
            let mut coordinator = crate::common::coordinator(&storage, 2, 1).await;
            let mut b: StateBackend<u64> =
                StateBackend::new(&identity(128, 1, 0), &backend_config(kind, dir.path())).unwrap();
            let v = b
                .value_state(&ValueStateDescriptor::<VoidNamespace, u64>::new("v"))
                .unwrap();
            let m = b
                .map_state(&MapStateDescriptor::<VoidNamespace, u32, u32>::new("m"))
                .unwrap();
            let doomed = b
                .value_state(&ValueStateDescriptor::<VoidNamespace, u64>::new("doomed"))
                .unwrap();
            let keys: Vec<u64> = (0..5_000).collect();
            v.update_batch(&mut b, &NS, &keys, &keys).unwrap();
            b.set_current_key(7).unwrap();
            m.put_all(&mut b, &NS, (0..100u32).map(|i| (i, i))).unwrap();
            doomed.update(&mut b, &NS, 1).unwrap();

            let id = coordinator.trigger().await.unwrap();
            let pending = b.snapshot(id, &storage).unwrap();
            // After the synchronous phase, before the asynchronous one runs.
            v.modify_batch(&mut b, &NS, &keys, |_, old| old.map(|o| o + 1_000_000))
                .unwrap();
            v.update_batch(&mut b, &NS, &[1_000_000], &[1]).unwrap();
            b.set_current_key(7).unwrap();
            m.retain(&mut b, &NS, |k, _| *k < 10).unwrap();
            m.put_all(&mut b, &NS, [(500, 500)]).unwrap();
            assert!(b.drop_state("doomed").unwrap());
            let result = pending.run().await.unwrap();
            coordinator
                .acknowledge(id, TaskStateSnapshot::keyed("op", 0, result.handle), None)
                .await
                .unwrap();
            let meta = coordinator.store().latest().unwrap().clone();

            let mut r = StateBackend::<u64>::restore_checkpoint(
                &identity(128, 1, 0),
                &backend_config(kind, dir.path()),
                &storage,
                &meta,
                RestoreMode::NoClaim,
            )
            .await
            .unwrap();
            let v = r
                .value_state(&ValueStateDescriptor::<VoidNamespace, u64>::new("v"))
                .unwrap();
            let mut got = Vec::new();
            v.get_batch(&r, &NS, &keys, &mut got).unwrap();
            assert!(
                got.iter().zip(&keys).all(|(g, k)| *g == Some(*k)),
                "{kind}: values of the snapshot's moment"
            );
            let mut extra = Vec::new();
            v.get_batch(&r, &NS, &[1_000_000], &mut extra).unwrap();
            assert_eq!(extra, [None], "{kind}");
            let m = r
                .map_state(&MapStateDescriptor::<VoidNamespace, u32, u32>::new("m"))
                .unwrap();
            r.set_current_key(7).unwrap();
            let mut entries: Vec<_> = m.iter(&r, &NS).unwrap().map(Result::unwrap).collect();
            entries.sort();
            assert_eq!(
                entries,
                (0..100u32).map(|i| (i, i)).collect::<Vec<_>>(),
                "{kind}"
            );
            let doomed = r
                .value_state(&ValueStateDescriptor::<VoidNamespace, u64>::new("doomed"))
                .unwrap();
            assert_eq!(
                doomed.value(&r, &NS).unwrap(),
                Some(1),
                "{kind}: dropped after the snapshot"
            );
        }
    });
}
