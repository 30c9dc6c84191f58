//! Regression tests of defects that could lose a checkpoint, on what the backends check: the handle
//! sets a restore accepts, whole-file checksums, snapshot ids, notifications, and smaller defects found
//! with them (a failing upload's leftover, panicking public functions, silent truncation, tuple codec
//! ids). One per defect, named after it; the coordinator's are in `tests/completion/protocol.rs`.

use std::collections::BTreeMap;

use crate::common::faulty::{Fault, FaultyStore};
use crate::common::*;
use object_store::ObjectStoreExt;
use statebackend::heap::{HeapConfig, HeapKeyedStateBackend};
use statebackend::key_group::{
    UPPER_BOUND_MAX_PARALLELISM, assign_to_key_group, default_max_parallelism,
    operator_index_for_key_group,
};
use statebackend::snapshot::SnapshotKind;
use statebackend::*;

type Heap = HeapKeyedStateBackend<u64>;
const NS: VoidNamespace = VoidNamespace;

fn values(b: &mut Heap) -> BTreeMap<u64, u64> {
    read_all(b, &counts())
}

#[test]
fn restore_refuses_no_handles_half_the_handles_and_mixed_checkpoints() {
    runtime().block_on(async {
        let storage = CheckpointStorage::in_memory("coverage").unwrap();
        let mut coord = coordinator(&storage, 2, 2).await;
        let mut b: Vec<Heap> = (0..2)
            .map(|i| Heap::new(identity(128, 2, i), HeapConfig::default()).unwrap())
            .collect();
        for x in &mut b {
            fill(x, 0..300, 1);
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
        let cases: [(&str, Vec<KeyedStateHandle>); 3] = [
            ("no handles", vec![]),
            ("half the handles", vec![first[0].clone()]),
            ("two checkpoints", vec![first[0].clone(), second[1].clone()]),
        ];
        for (name, hs) in cases {
            let err = Heap::restore(
                identity(128, 1, 0),
                HeapConfig::default(),
                &storage,
                &hs,
                RestoreMode::Claim,
            )
            .await
            .map(|_| ())
            .unwrap_err();
            assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{name}: {err}");
        }
        let mut whole = Heap::restore(
            identity(128, 1, 0),
            HeapConfig::default(),
            &storage,
            &second,
            RestoreMode::Claim,
        )
        .await
        .unwrap();
        assert_eq!(values(&mut whole).len(), 300);
    });
}

#[test]
fn heap_restore_never_merges_states_of_different_operators() {
    runtime().block_on(async {
        let storage = CheckpointStorage::in_memory("operators").unwrap();
        let job = CoordinatorConfig {
            operators: vec![OperatorTasks::keyed("a", 1), OperatorTasks::keyed("b", 1)],
            ..CoordinatorConfig::default()
        };
        let mut coord = CheckpointCoordinator::open(storage.clone(), job)
            .await
            .unwrap();
        let op_identity = |op: &str| SubtaskIdentity::new(op, 128, 1, 0).unwrap();
        let (mut a, mut b) = (
            Heap::new(op_identity("a"), HeapConfig::default()).unwrap(),
            Heap::new(op_identity("b"), HeapConfig::default()).unwrap(),
        );
        fill(&mut a, 0..10, 1);
        fill(&mut b, 100..110, 2);
        let id = coord.trigger().await.unwrap();
        for (op, backend) in [("a", &mut a), ("b", &mut b)] {
            let result = backend.snapshot(id, &storage).unwrap().run().await.unwrap();
            let task = TaskStateSnapshot {
                operator_id: op.into(),
                keyed_state: Some(result.handle),
                ..Default::default()
            };
            coord.acknowledge(id, task, None).await.unwrap();
        }
        let meta = coord.store().latest().unwrap().clone();
        // Both operators' handles cover every key group: a restore of `a` must refuse `b`'s.
        let err = Heap::restore(
            op_identity("a"),
            HeapConfig::default(),
            &storage,
            &handles(&meta),
            RestoreMode::Claim,
        )
        .await
        .map(|_| ())
        .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{err}");
        let mut restored = Heap::restore(
            op_identity("a"),
            HeapConfig::default(),
            &storage,
            &meta.keyed_handles("a"),
            RestoreMode::Claim,
        )
        .await
        .unwrap();
        assert_eq!(values(&mut restored), (0..10).map(|k| (k, 1)).collect());
    });
}

#[test]
fn snapshot_refuses_an_id_it_already_used() {
    runtime().block_on(async {
        let storage = CheckpointStorage::in_memory("reuse").unwrap();
        let mut b = Heap::new(identity(128, 1, 0), HeapConfig::default()).unwrap();
        fill(&mut b, 0..10, 1);
        let first = b.snapshot(5, &storage).unwrap().run().await.unwrap();
        for id in [5, 4] {
            let err = b.snapshot(id, &storage).map(|_| ()).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::IllegalState, "{err}");
        }
        // A backend restored from checkpoint 5 continues above it.
        let mut r = Heap::restore(
            identity(128, 1, 0),
            HeapConfig::default(),
            &storage,
            &[first.handle],
            RestoreMode::Claim,
        )
        .await
        .unwrap();
        assert!(r.snapshot(5, &storage).is_err());
        assert!(r.snapshot(6, &storage).is_ok());
    });
}

#[test]
fn restore_checks_the_whole_file_crc32_on_remote_stores() {
    runtime().block_on(async {
        let storage = CheckpointStorage::in_memory("crc").unwrap();
        let plain = HeapConfig {
            zstd_level: None,
            ..HeapConfig::default()
        };
        let mut b = Heap::new(identity(128, 1, 0), plain.clone()).unwrap();
        fill(&mut b, 0..100, 1);
        let one = b.snapshot(1, &storage).unwrap().run().await.unwrap();
        fill(&mut b, 0..100, 2);
        let two = b.snapshot(2, &storage).unwrap().run().await.unwrap();
        let (f1, f2) = (&one.handle.files[0], &two.handle.files[0]);
        assert_eq!(f1.size_bytes, f2.size_bytes, "same keys, same sizes");
        // The second snapshot's bytes stand where the first handle's file was: every frame is valid.
        let bytes = storage
            .object_store()
            .get(&storage.path(&f2.path))
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        storage
            .object_store()
            .put(&storage.path(&f1.path), bytes.into())
            .await
            .unwrap();
        let mut handle = one.handle.clone();
        handle.checkpoint_id = 1;
        let err = Heap::restore(
            identity(128, 1, 0),
            plain,
            &storage,
            &[handle],
            RestoreMode::Claim,
        )
        .await
        .map(|_| ())
        .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Corrupt, "{err}");
        assert!(err.to_string().contains(&f1.path), "{err}");
    });
}

#[test]
fn notifications_for_unknown_or_aborted_checkpoints_are_ignored() {
    runtime().block_on(async {
        let storage = CheckpointStorage::in_memory("notify").unwrap();
        let mut b = Heap::new(identity(128, 1, 0), HeapConfig::default()).unwrap();
        b.notify_checkpoint_complete(42);
        assert_eq!(b.last_completed_checkpoint(), None, "never snapshotted");
        let _ = b.snapshot(1, &storage).unwrap().run().await.unwrap();
        b.notify_checkpoint_aborted(1);
        b.notify_checkpoint_complete(1);
        assert_eq!(b.last_completed_checkpoint(), None, "aborted");
        let _ = b.snapshot(2, &storage).unwrap().run().await.unwrap();
        b.notify_checkpoint_complete(2);
        b.notify_checkpoint_complete(2);
        assert_eq!(b.last_completed_checkpoint(), Some(2));
    });
}

#[test]
fn failing_finish_leaves_no_file() {
    runtime().block_on(async {
        let faulty = FaultyStore::new();
        let storage = CheckpointStorage::new(faulty.clone(), "finish").unwrap();
        let mut b = Heap::new(identity(128, 1, 0), HeapConfig::default()).unwrap();
        fill(&mut b, 0..100, 1);
        // The upload of the snapshot file takes effect, then reports an error.
        faulty.arm(".keyed", Fault::FailWriteAfterEffect);
        let err = b
            .snapshot(1, &storage)
            .unwrap()
            .run()
            .await
            .map(|_| ())
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Storage);
        assert!(objects(&storage, None).await.is_empty());
    });
}

#[test]
fn public_functions_return_errors_instead_of_panicking() {
    assert!(operator_index_for_key_group(0, 1, 0).is_err());
    assert!(operator_index_for_key_group(128, 0, 0).is_err());
    assert!(operator_index_for_key_group(128, 2, 128).is_err());
    assert_eq!(operator_index_for_key_group(128, 2, 127).unwrap(), 1);
    assert!(assign_to_key_group(b"k", 0).is_err());
    assert_eq!(
        default_max_parallelism(u32::MAX),
        UPPER_BOUND_MAX_PARALLELISM
    );
    assert_eq!(
        default_max_parallelism(u32::MAX / 2 + 7),
        UPPER_BOUND_MAX_PARALLELISM
    );
    let huge = HeapConfig {
        frame_bytes: usize::MAX,
        ..HeapConfig::default()
    };
    let err = Heap::new(identity(128, 1, 0), huge)
        .map(|_| ())
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidArgument);
}

#[test]
fn metadata_blob_over_4_gib_is_an_error_not_a_truncation() {
    // Zeroed allocations are mapped lazily: this costs no memory until written, and nothing writes it.
    let blob = vec![0u8; (1 << 32) + 1];
    let meta = CheckpointMetadata {
        checkpoint_id: 1,
        timestamp_ms: 0,
        kind: SnapshotKind::Checkpoint,
        generation: 1,
        tasks: vec![TaskStateSnapshot {
            operator_id: "op".into(),
            operator_state: [("offsets".to_string(), blob)].into(),
            ..Default::default()
        }],
    };
    let err = statebackend::format::encode_metadata(&meta).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidArgument);
    assert!(err.to_string().contains("operator state value"), "{err}");
}

#[test]
fn tuple_states_restore_only_with_the_same_tuple_types() {
    runtime().block_on(async {
        let storage = CheckpointStorage::in_memory("pairs").unwrap();
        let mut b = Heap::new(identity(128, 1, 0), HeapConfig::default()).unwrap();
        let pairs = ValueStateDescriptor::<VoidNamespace, (u64, u64)>::new("pairs");
        let s = b.value_state(&pairs).unwrap();
        b.set_current_key(1).unwrap();
        s.update(&mut b, &NS, (3, 4)).unwrap();
        let result = b.snapshot(1, &storage).unwrap().run().await.unwrap();
        let mut r = Heap::restore(
            identity(128, 1, 0),
            HeapConfig::default(),
            &storage,
            &[result.handle],
            RestoreMode::Claim,
        )
        .await
        .unwrap();
        let signed = ValueStateDescriptor::<VoidNamespace, (i64, i64)>::new("pairs");
        let err = r.value_state(&signed).map(|_| ()).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{err}");
        let s = r.value_state(&pairs).unwrap();
        r.set_current_key(1).unwrap();
        assert_eq!(s.value(&r, &NS).unwrap(), Some((3, 4)));
    });
}
