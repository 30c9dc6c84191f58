//! Snapshot isolation, restore round trips (same and other parallelism) and the states that survive
//! without being registered.

use crate::common::*;
use statebackend::codec::{Migration, WrittenCodec};
use statebackend::heap::{HeapConfig, HeapKeyedStateBackend};
use statebackend::key_group::assign_to_key_group;
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
        let mut b =
            HeapKeyedStateBackend::<u64>::new(identity(128, 1, 0), HeapConfig::default()).unwrap();
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
        let mut r = HeapKeyedStateBackend::<u64>::restore(
            identity(128, 1, 0),
            HeapConfig::default(),
            &storage,
            &[result.handle],
            RestoreMode::Claim,
        )
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
        let mut one = vec![
            HeapKeyedStateBackend::<u64>::new(identity(max_p, 1, 0), HeapConfig::default())
                .unwrap(),
        ];
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
        let mut b =
            HeapKeyedStateBackend::<u64>::new(identity(128, 1, 0), HeapConfig::default()).unwrap();
        fill(&mut b, 0..10);
        let result = b.snapshot(1, &storage).unwrap().run().await.unwrap();
        let err = HeapKeyedStateBackend::<u64>::restore(
            identity(256, 1, 0),
            HeapConfig::default(),
            &storage,
            &[result.handle],
            RestoreMode::Claim,
        )
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
            &StorageConfig {
                fsync: false,
                ..StorageConfig::default()
            },
        )
        .unwrap();
        let mut b =
            HeapKeyedStateBackend::<u64>::new(identity(128, 1, 0), HeapConfig::default()).unwrap();
        fill(&mut b, 0..1_000);
        let first = b.snapshot(1, &storage).unwrap().run().await.unwrap();
        // The next run registers only the map state, then snapshots.
        let mut r = HeapKeyedStateBackend::<u64>::restore(
            identity(128, 1, 0),
            HeapConfig::default(),
            &storage,
            &[first.handle],
            RestoreMode::Claim,
        )
        .await
        .unwrap();
        let s = r.value_state(&counts()).unwrap();
        r.set_current_key(5).unwrap();
        assert_eq!(s.keys_with_state(&r, &NS).unwrap().len(), 1_000);
        let handle = r.snapshot(2, &storage).unwrap().run().await.unwrap().handle;
        let mut r2 = HeapKeyedStateBackend::<u64>::restore(
            identity(128, 1, 0),
            HeapConfig::default(),
            &storage,
            &[handle],
            RestoreMode::Claim,
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
        let mut b =
            HeapKeyedStateBackend::<u64>::new(identity(128, 1, 0), HeapConfig::default()).unwrap();
        fill(&mut b, 0..10);
        let result = b.snapshot(1, &storage).unwrap().run().await.unwrap();
        let mut r = HeapKeyedStateBackend::<u64>::restore(
            identity(128, 1, 0),
            HeapConfig::default(),
            &storage,
            &[result.handle],
            RestoreMode::Claim,
        )
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

/// A state over the 1 MiB from which registration decodes on several threads: every thread count gives
/// the same map as one thread (values, lists, and the entry count), and a value whose migration fails
/// on a worker thread fails the registration cleanly (the state stays restorable as written).
#[test]
fn registration_decodes_on_several_threads_with_the_same_result() {
    let rt = runtime();
    rt.block_on(async {
        let storage = CheckpointStorage::in_memory("threads").unwrap();
        let mut b =
            HeapKeyedStateBackend::<u64>::new(identity(128, 1, 0), HeapConfig::default()).unwrap();
        let s = b.value_state(&counts()).unwrap();
        let l = b
            .list_state(&ListStateDescriptor::<u32, String>::new("names"))
            .unwrap();
        const KEYS: u64 = 60_000;
        for k in 0..KEYS {
            b.set_current_key(k).unwrap();
            s.update(&mut b, &NS, k * 3).unwrap();
            l.add(&mut b, &((k % 5) as u32), format!("name-{k}-{}", k * 7))
                .unwrap();
        }
        let result = b.snapshot(1, &storage).unwrap().run().await.unwrap();
        assert!(
            result.metrics.state_bytes > 2 << 20,
            "the states are over the threshold: {} bytes",
            result.metrics.state_bytes
        );
        for threads in [1, 2, 3, 8] {
            let cfg = HeapConfig {
                restore_threads: threads,
                ..HeapConfig::default()
            };
            let mut r = HeapKeyedStateBackend::<u64>::restore(
                identity(128, 1, 0),
                cfg,
                &storage,
                std::slice::from_ref(&result.handle),
                RestoreMode::Claim,
            )
            .await
            .unwrap();
            let s = r.value_state(&counts()).unwrap();
            let l = r
                .list_state(&ListStateDescriptor::<u32, String>::new("names"))
                .unwrap();
            assert_eq!(r.total_entries(), 2 * KEYS as usize, "{threads} threads");
            for k in 0..KEYS {
                r.set_current_key(k).unwrap();
                assert_eq!(s.value(&r, &NS).unwrap(), Some(k * 3), "{threads} threads");
                assert_eq!(
                    l.get(&r, &((k % 5) as u32)).unwrap(),
                    vec![format!("name-{k}-{}", k * 7)],
                    "{threads} threads"
                );
            }
        }
        // A migration that fails on one key near the end of the key-group range (a worker's share).
        let cfg = HeapConfig {
            restore_threads: 4,
            ..HeapConfig::default()
        };
        let mut r = HeapKeyedStateBackend::<u64>::restore(
            identity(128, 1, 0),
            cfg,
            &storage,
            &[result.handle],
            RestoreMode::Claim,
        )
        .await
        .unwrap();
        let bad = (0..KEYS)
            .max_by_key(|k| assign_to_key_group(&k.to_be_bytes(), 128).unwrap())
            .unwrap();
        REFUSED.store(bad * 3, std::sync::atomic::Ordering::Relaxed);
        let err = r
            .value_state(&ValueStateDescriptor::<VoidNamespace, Refusing>::new(
                "counts",
            ))
            .map(|_| ())
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Corrupt, "{err}");
        assert!(
            err.to_string().contains(&format!("refused {}", bad * 3)),
            "{err}"
        );
        let s = r.value_state(&counts()).unwrap();
        r.set_current_key(bad).unwrap();
        assert_eq!(s.value(&r, &NS).unwrap(), Some(bad * 3));
    });
}

/// `u64` at version 2, whose migration from version 1 (`u64:be`) refuses one value: `REFUSED`.
#[derive(Debug, Clone, PartialEq)]
struct Refusing(u64);

static REFUSED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(u64::MAX);

impl Codec for Refusing {
    const ID: &'static str = "u64:be";
    const VERSION: u32 = 2;
    fn encode(&self, out: &mut Vec<u8>) {
        self.0.encode(out);
    }
    fn decode(bytes: &[u8]) -> Result<Self> {
        u64::decode(bytes).map(Refusing)
    }
    fn migration_from(written: &WrittenCodec<'_>) -> Option<Migration<Self>> {
        (written.id == "u64:be" && written.version == 1).then(|| -> Migration<Self> {
            std::sync::Arc::new(|b| {
                let v = u64::decode(b)?;
                if v == REFUSED.load(std::sync::atomic::Ordering::Relaxed) {
                    return Err(Error::InvalidArgument(format!("refused {v}")));
                }
                Ok(Refusing(v))
            })
        })
    }
}
