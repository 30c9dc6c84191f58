//! The heap backend's incremental checkpoints through a real coordinator and its shared-file registry:
//! a delta holds only what changed since the confirmed checkpoint, the chain is bounded, an unconfirmed
//! checkpoint is never a base, savepoints stay full, and every restore (same range or rescaled) equals
//! the state at the checkpoint.

use std::collections::BTreeMap;

use crate::common::*;
use statebackend::heap::{HeapConfig, HeapKeyedStateBackend};
use statebackend::snapshot::{FileScope, HandleFormat, SnapshotKind};
use statebackend::*;

type Heap = HeapKeyedStateBackend<u64>;

fn incremental(max_chain_files: usize) -> HeapConfig {
    HeapConfig {
        incremental: true,
        max_chain_files,
        ..HeapConfig::default()
    }
}

fn heaps(parallelism: u32, config: &HeapConfig) -> Vec<Heap> {
    (0..parallelism)
        .map(|i| Heap::new(identity(128, parallelism, i), config.clone()).unwrap())
        .collect()
}

/// Every `counts` value of `backends` together.
fn all_counts(backends: &mut [Heap]) -> BTreeMap<u64, u64> {
    backends.iter_mut().flat_map(read_counts).collect()
}

/// Removes `keys` from `counts` on whichever backend owns each.
fn remove(backends: &mut [Heap], keys: impl IntoIterator<Item = u64> + Clone) {
    for b in backends.iter_mut() {
        let s = b.value_state(&counts()).unwrap();
        for k in keys.clone() {
            if b.set_current_key(k).is_ok() {
                s.clear(b, &VoidNamespace).unwrap();
            }
        }
    }
}

async fn restore_at(
    storage: &CheckpointStorage,
    meta: &CheckpointMetadata,
    parallelism: u32,
    config: &HeapConfig,
) -> Vec<Heap> {
    let handles = handles(meta);
    let mut out = Vec::new();
    for i in 0..parallelism {
        out.push(
            Heap::restore(
                identity(128, parallelism, i),
                config.clone(),
                storage,
                &handles,
                RestoreMode::Claim,
            )
            .await
            .unwrap(),
        );
    }
    out
}

#[test]
fn a_delta_uploads_only_the_changed_entries_and_restores_at_any_parallelism() {
    runtime().block_on(async {
        let storage = CheckpointStorage::in_memory("heap-incr").unwrap();
        let config = incremental(10);
        let mut coord = coordinator(&storage, 1, 2).await;
        let mut b = heaps(2, &config);
        for b in b.iter_mut() {
            fill(b, 0..20_000, 1);
        }
        let s1 = checkpoint(&mut coord, &mut b).await;
        assert_eq!(s1.files_reused, 0, "the first checkpoint is full");
        for b in b.iter_mut() {
            fill(b, 0..200, 2); // 1% of the keys
        }
        remove(&mut b, 19_900..20_000);
        let s2 = checkpoint(&mut coord, &mut b).await;
        assert_eq!(s2.files_uploaded, 2, "one delta per subtask");
        assert_eq!(
            s2.files_reused, 2,
            "each delta is on its subtask's full file"
        );
        // 300 of 20,000 entries changed: their records are under 2% of the state's bytes (compressed, the
        // full file's equal values shrink more than the delta's).
        assert!(
            s2.state_bytes * 50 < s1.state_bytes
                && s2.checkpointed_bytes * 5 < s1.checkpointed_bytes,
            "a 1.5% change uploads a fraction: {s2:?} after {s1:?}"
        );
        let meta = coord.store().latest().unwrap().clone();
        for h in handles(&meta) {
            assert_eq!(h.format, HandleFormat::KeyedChain);
            assert_eq!(h.files.len(), 2);
            assert!(h.files.iter().all(|f| f.scope == FileScope::Shared));
            assert_eq!(h.files[0].created_by, 1, "the full file is a placeholder");
        }
        // The subsumed checkpoint 1 is gone; the files checkpoint 2 still uses are not.
        assert_retained_files_intact(&coord, true).await;
        let expected = all_counts(&mut b);
        assert_eq!(expected.len(), 19_900);
        for parallelism in [1, 2, 3] {
            let mut restored = restore_at(&storage, &meta, parallelism, &config).await;
            assert_eq!(
                all_counts(&mut restored),
                expected,
                "at parallelism {parallelism}"
            );
        }
    });
}

#[test]
fn chains_stop_at_their_limit_and_the_next_checkpoint_is_full() {
    runtime().block_on(async {
        let storage = CheckpointStorage::in_memory("heap-chain").unwrap();
        let config = incremental(3);
        let mut coord = coordinator(&storage, 1, 1).await;
        let mut b = heaps(1, &config);
        fill(&mut b[0], 0..5_000, 0);
        let mut lengths = Vec::new();
        for round in 1..=7u64 {
            fill(&mut b[0], round * 10..round * 10 + 10, round);
            checkpoint(&mut coord, &mut b).await;
            let meta = coord.store().latest().unwrap().clone();
            lengths.push(handles(&meta)[0].files.len());
            assert_retained_files_intact(&coord, true).await;
            let mut restored = restore_at(&storage, &meta, 1, &config).await;
            assert_eq!(
                all_counts(&mut restored),
                all_counts(&mut b),
                "round {round}"
            );
        }
        assert_eq!(lengths, vec![1, 2, 3, 1, 2, 3, 1]);
    });
}

#[test]
fn an_unconfirmed_checkpoint_is_never_a_base_and_its_changes_go_into_the_next_delta() {
    runtime().block_on(async {
        let storage = CheckpointStorage::in_memory("heap-unconfirmed").unwrap();
        let config = incremental(10);
        let mut b = heaps(1, &config);
        fill(&mut b[0], 0..1_000, 1);
        let first = b[0].snapshot(1, &storage).unwrap().run().await.unwrap();
        b[0].notify_checkpoint_complete(1);
        fill(&mut b[0], 0..10, 2);
        // Checkpoint 2 is never confirmed (declined, or its notification lost).
        let second = b[0].snapshot(2, &storage).unwrap().run().await.unwrap();
        assert_eq!(second.handle.files.len(), 2);
        fill(&mut b[0], 500..510, 3);
        let savepoint = b[0]
            .savepoint(3, &storage, SavepointFormat::Canonical)
            .unwrap()
            .run()
            .await
            .unwrap();
        assert_eq!(
            savepoint.handle.format,
            HandleFormat::KeyedFile,
            "savepoints stay full and canonical"
        );
        fill(&mut b[0], 900..910, 4);
        let fourth = b[0].snapshot(4, &storage).unwrap().run().await.unwrap();
        assert_eq!(fourth.handle.files.len(), 2, "a delta on checkpoint 1");
        assert_eq!(fourth.handle.files[0], first.handle.files[0]);
        let meta = CheckpointMetadata {
            checkpoint_id: 4,
            timestamp_ms: 0,
            kind: SnapshotKind::Checkpoint,
            generation: 1,
            tasks: vec![TaskStateSnapshot::keyed("op", 0, fourth.handle)],
        };
        let mut restored = restore_at(&storage, &meta, 1, &config).await;
        let got = all_counts(&mut restored);
        assert_eq!(got, all_counts(&mut b));
        assert_eq!(got[&5], 2, "checkpoint 2's change is in the delta of 4");
        assert_eq!(got[&505], 3, "the change before the savepoint too");
        assert_eq!(got[&905], 4);
    });
}
