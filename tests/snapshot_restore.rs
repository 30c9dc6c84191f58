//! Snapshot isolation, restore round trips (same and other parallelism) and the states that survive
//! without being registered.

#![allow(clippy::unwrap_used, reason = "tests fail loudly on unexpected errors")]

mod common;

use common::*;
use statebackend::*;

const NS: VoidNamespace = VoidNamespace;

fn counts() -> ValueStateDescriptor<VoidNamespace, u64> {
    ValueStateDescriptor::new("counts")
}

#[test]
fn writes_after_the_sync_phase_are_absent_and_writes_before_it_present() {
    let rt = runtime();
    rt.block_on(async {
        let storage = CheckpointStorage::in_memory("iso").unwrap();
        let mut b = HeapKeyedStateBackend::<u64>::new(config(128, 1, 0)).unwrap();
        let s = b.value_state(&counts()).unwrap();
        let l = b
            .list_state(&ListStateDescriptor::<VoidNamespace, u64>::new("list"))
            .unwrap();
        for k in 0..10_000 {
            b.set_current_key(k).unwrap();
            s.update(&mut b, &NS, 1).unwrap();
            l.add(&mut b, &NS, k).unwrap();
        }
        let pending = b.snapshot(1, &storage).unwrap();
        // While the asynchronous phase has not run yet, change everything.
        for k in 0..10_000 {
            b.set_current_key(k).unwrap();
            if k % 2 == 0 {
                s.clear(&mut b, &NS).unwrap();
            } else {
                s.update(&mut b, &NS, 2).unwrap();
            }
            l.add(&mut b, &NS, 99).unwrap();
        }
        for k in 10_000..20_000 {
            b.set_current_key(k).unwrap();
            s.update(&mut b, &NS, 3).unwrap();
        }
        let result = pending.run().await.unwrap();
        assert_eq!(result.metrics.entries, 20_000);
        let mut r =
            HeapKeyedStateBackend::<u64>::restore(config(128, 1, 0), &storage, &[result.handle])
                .await
                .unwrap();
        let s = r.value_state(&counts()).unwrap();
        let l = r
            .list_state(&ListStateDescriptor::<VoidNamespace, u64>::new("list"))
            .unwrap();
        for k in 0..20_000 {
            r.set_current_key(k).unwrap();
            let expected = (k < 10_000).then_some(1);
            assert_eq!(s.value(&r, &NS).unwrap(), expected, "key {k}");
            let list = l.get(&r, &NS).unwrap();
            assert_eq!(list, if k < 10_000 { vec![k] } else { vec![] });
        }
        // The live backend kept its own writes.
        b.set_current_key(1).unwrap();
        assert_eq!(s.value(&b, &NS).unwrap(), Some(2));
    });
}

fn fill(b: &mut HeapKeyedStateBackend<u64>, keys: impl Iterator<Item = u64>) {
    let s = b.value_state(&counts()).unwrap();
    let m = b
        .map_state(&MapStateDescriptor::<u64, String, u64>::new("map"))
        .unwrap();
    for k in keys {
        b.set_current_key(k).unwrap();
        s.update(b, &NS, k + 1).unwrap();
        m.put(b, &(k % 3), format!("u{k}"), k).unwrap();
    }
}

fn check(b: &mut HeapKeyedStateBackend<u64>, keys: impl Iterator<Item = u64>) -> usize {
    let s = b.value_state(&counts()).unwrap();
    let m = b
        .map_state(&MapStateDescriptor::<u64, String, u64>::new("map"))
        .unwrap();
    let mut n = 0;
    for k in keys {
        b.set_current_key(k).unwrap();
        assert_eq!(s.value(b, &NS).unwrap(), Some(k + 1));
        assert_eq!(m.get(b, &(k % 3), &format!("u{k}")).unwrap(), Some(k));
        n += 1;
    }
    n
}

#[test]
fn rescale_one_to_two_and_two_to_one() {
    let rt = runtime();
    rt.block_on(async {
        let storage = CheckpointStorage::in_memory("rescale").unwrap();
        let mut coordinator = CheckpointCoordinator::open(
            storage.clone(),
            CoordinatorConfig::single_operator("op", 1, 3),
        )
        .await
        .unwrap();
        let max_p = 128;
        let mut one = vec![HeapKeyedStateBackend::<u64>::new(config(max_p, 1, 0)).unwrap()];
        fill(&mut one[0], 0..5_000);
        checkpoint(&mut coordinator, &mut one).await;
        let meta = coordinator.store().latest().unwrap().clone();

        // 1 -> 2: each subtask gets exactly its keys.
        let mut two = restore::<u64>(&storage, &meta, max_p, 2).await.unwrap();
        let mut seen = 0;
        for (i, b) in two.iter_mut().enumerate() {
            let mine: Vec<u64> = (0..5_000).filter(|k| owner(k, max_p, 2) == i).collect();
            assert!(!mine.is_empty());
            seen += check(b, mine.into_iter());
            let s = b.value_state(&counts()).unwrap();
            assert_eq!(
                s.keys_with_state(b, &NS).unwrap().len(),
                b.total_entries() / 2,
                "only owned keys were restored"
            );
        }
        assert_eq!(seen, 5_000);

        // 2 -> 1: write more on both subtasks, checkpoint with two tasks, restore into one.
        for (i, b) in two.iter_mut().enumerate() {
            fill(b, (5_000..6_000).filter(|k| owner(k, max_p, 2) == i));
        }
        let mut coordinator2 = CheckpointCoordinator::open(
            storage.clone(),
            CoordinatorConfig::single_operator("op", 2, 3),
        )
        .await
        .unwrap();
        checkpoint(&mut coordinator2, &mut two).await;
        let meta = coordinator2.store().latest().unwrap().clone();
        assert_eq!(meta.tasks.len(), 2);
        let mut back = restore::<u64>(&storage, &meta, max_p, 1).await.unwrap();
        assert_eq!(check(&mut back[0], 0..6_000), 6_000);
        assert_eq!(back[0].total_entries(), 12_000);
    });
}

#[test]
fn restore_into_a_different_max_parallelism_is_refused() {
    let rt = runtime();
    rt.block_on(async {
        let storage = CheckpointStorage::in_memory("maxp").unwrap();
        let mut b = HeapKeyedStateBackend::<u64>::new(config(128, 1, 0)).unwrap();
        fill(&mut b, 0..10);
        let result = b.snapshot(1, &storage).unwrap().run().await.unwrap();
        let err =
            HeapKeyedStateBackend::<u64>::restore(config(256, 1, 0), &storage, &[result.handle])
                .await
                .map(|_| ())
                .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidArgument);
    });
}

#[test]
fn unregistered_restored_state_survives_the_next_snapshot() {
    let rt = runtime();
    rt.block_on(async {
        let storage = CheckpointStorage::local(
            tempfile::tempdir().unwrap().keep(),
            "carry",
            &StorageSettings {
                fsync: false,
                ..StorageSettings::default()
            },
        )
        .unwrap();
        let mut b = HeapKeyedStateBackend::<u64>::new(config(128, 1, 0)).unwrap();
        fill(&mut b, 0..1_000);
        let first = b.snapshot(1, &storage).unwrap().run().await.unwrap();
        // The next run registers only the map state, then snapshots.
        let mut r =
            HeapKeyedStateBackend::<u64>::restore(config(128, 1, 0), &storage, &[first.handle])
                .await
                .unwrap();
        let s = r.value_state(&counts()).unwrap();
        r.set_current_key(5).unwrap();
        assert_eq!(s.keys_with_state(&r, &NS).unwrap().len(), 1_000);
        let mut r2 = HeapKeyedStateBackend::<u64>::restore(
            config(128, 1, 0),
            &storage,
            &[r.snapshot(2, &storage).unwrap().run().await.unwrap().handle],
        )
        .await
        .unwrap();
        // Neither state was registered in r2's source for "map": it came through as raw records.
        assert_eq!(check(&mut r2, 0..1_000), 1_000);
    });
}

#[test]
fn restoring_with_another_codec_is_refused() {
    let rt = runtime();
    rt.block_on(async {
        let storage = CheckpointStorage::in_memory("codec").unwrap();
        let mut b = HeapKeyedStateBackend::<u64>::new(config(128, 1, 0)).unwrap();
        fill(&mut b, 0..10);
        let result = b.snapshot(1, &storage).unwrap().run().await.unwrap();
        let mut r =
            HeapKeyedStateBackend::<u64>::restore(config(128, 1, 0), &storage, &[result.handle])
                .await
                .unwrap();
        let err = r
            .value_state(&ValueStateDescriptor::<VoidNamespace, String>::new(
                "counts",
            ))
            .map(|_| ())
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidArgument);
        assert!(err.to_string().contains("value codec"), "{err}");
    });
}
