//! The heap backend's incremental checkpoints through a real coordinator and its shared-file registry:
//! a delta holds only what changed since the confirmed checkpoint, the chain is bounded, an unconfirmed
//! checkpoint is never a base, savepoints stay full, and every restore (same range or rescaled) equals
//! the state at the checkpoint.

use std::collections::BTreeMap;

use crate::common::*;
use statebackend::heap::{HeapConfig, HeapKeyedStateBackend};
use statebackend::snapshot::{FileScope, HandleFormat, SnapshotKind};
use statebackend::*;

pub(crate) type Heap = HeapKeyedStateBackend<u64>;

pub(crate) fn incremental(max_chain_files: usize) -> HeapConfig {
    HeapConfig {
        incremental: true,
        max_chain_files,
        ..HeapConfig::default()
    }
}

/// The checkpoints that wrote the files `h` lists, ascending, each once: `[id]` for a full checkpoint
/// (one file per slice of rolling materialization), its base's and `id` for a delta.
pub(crate) fn writers(h: &KeyedStateHandle) -> Vec<u64> {
    let mut ids: Vec<u64> = h.files.iter().map(|f| f.created_by).collect();
    ids.sort_unstable();
    ids.dedup();
    ids
}

/// Whether `h` is a delta of checkpoint `id`: one new file, the rest placeholders of earlier ones.
fn one_new_file(h: &KeyedStateHandle, id: u64) -> bool {
    let new = h.files.iter().filter(|f| f.created_by == id).count();
    new == 1 && h.files.last().is_some_and(|f| f.created_by == id) && h.files.len() > 1
}

pub(crate) fn heaps(parallelism: u32, config: &HeapConfig) -> Vec<Heap> {
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

pub(crate) async fn restore_at(
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
            s2.files_reused, s1.files_uploaded,
            "each delta is on its subtask's full checkpoint's files"
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
            assert!(one_new_file(&h, 2), "{h:?}");
            assert_eq!(
                writers(&h),
                [1, 2],
                "the full checkpoint's files are placeholders"
            );
            assert!(h.files.iter().all(|f| f.scope == FileScope::Shared));
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

/// Chains of at most 3 files: a full checkpoint writes a file per slice (two slices), the first delta
/// none, and every later delta one slice in rotation, so that the chain drops its oldest files and no
/// checkpoint after the first is full.
#[test]
fn chains_stay_within_their_limit_and_rotate_slices_instead_of_writing_a_full_checkpoint_again() {
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
            let h = &handles(&meta)[0];
            lengths.push(h.files.len());
            assert!(round == 1 || one_new_file(h, round), "round {round}: {h:?}");
            assert_retained_files_intact(&coord, true).await;
            // One checkpoint retained: storage holds exactly its chain. A file the chain left is
            // deleted once the checkpoint that listed it is subsumed.
            let mut listed: Vec<String> = h.files.iter().map(|f| f.path.clone()).collect();
            listed.sort();
            assert_eq!(
                objects(&storage, Some("shared")).await,
                listed,
                "round {round}"
            );
            let mut restored = restore_at(&storage, &meta, 1, &config).await;
            assert_eq!(
                all_counts(&mut restored),
                all_counts(&mut b),
                "round {round}"
            );
        }
        // Slices of 64 key groups: [P0 P1], [P0 P1 D2], [P1 D2 S3], [S3 S4], [S4 S5], ...
        assert_eq!(lengths, vec![2, 3, 3, 2, 2, 2, 2]);
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
        assert!(one_new_file(&second.handle, 2));
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
        assert!(one_new_file(&fourth.handle, 4), "a delta");
        let placeholders = &fourth.handle.files[..fourth.handle.files.len() - 1];
        assert_eq!(placeholders, first.handle.files, "on checkpoint 1");
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

#[test]
fn a_claim_restore_of_the_same_key_groups_continues_the_chain_and_no_claim_or_a_rescale_starts_anew()
 {
    runtime().block_on(async {
        let storage = CheckpointStorage::in_memory("heap-continue").unwrap();
        let config = incremental(10);
        let mut b = heaps(1, &config);
        fill(&mut b[0], 0..5_000, 1);
        let first = b[0].snapshot(1, &storage).unwrap().run().await.unwrap();
        b[0].notify_checkpoint_complete(1);
        fill(&mut b[0], 0..50, 2);
        let second = b[0].snapshot(2, &storage).unwrap().run().await.unwrap();
        let meta = CheckpointMetadata {
            checkpoint_id: 2,
            timestamp_ms: 0,
            kind: SnapshotKind::Checkpoint,
            generation: 1,
            tasks: vec![TaskStateSnapshot::keyed("op", 0, second.handle.clone())],
        };
        let expected = all_counts(&mut b);
        drop(b);

        // CLAIM, same key groups: the state is registered (decoded) before the next write, and the next
        // checkpoint is a delta on the restored chain holding only the new change.
        let mut claimed = restore_at(&storage, &meta, 1, &config).await;
        assert_eq!(all_counts(&mut claimed), expected);
        fill(&mut claimed[0], 100..110, 3);
        let third = claimed[0]
            .snapshot(3, &storage)
            .unwrap()
            .run()
            .await
            .unwrap();
        assert!(
            one_new_file(&third.handle, 3),
            "the restored chain plus a delta"
        );
        assert_eq!(writers(&third.handle), [1, 2, 3]);
        let placeholders = &third.handle.files[..third.handle.files.len() - 1];
        assert!(
            placeholders.iter().all(|f| second.handle.files.contains(f)),
            "the restored chain's files, less those the new slice replaces"
        );
        // The 10 changed entries and one slice of 128 / 9 key groups (about 600 of the 5,000 entries)
        // written whole.
        assert!(
            (10..1_000).contains(&third.metrics.entries),
            "the changes and a slice only: {:?}",
            third.metrics
        );
        let third_meta = CheckpointMetadata {
            checkpoint_id: 3,
            tasks: vec![TaskStateSnapshot::keyed("op", 0, third.handle.clone())],
            ..meta.clone()
        };
        let mut again = restore_at(&storage, &third_meta, 1, &config).await;
        assert_eq!(all_counts(&mut again), all_counts(&mut claimed));
        // An abort of a delta on a restored base drops it: the next checkpoint is full.
        claimed[0].notify_checkpoint_aborted(3);
        let fourth = claimed[0]
            .snapshot(4, &storage)
            .unwrap()
            .run()
            .await
            .unwrap();
        assert_eq!(
            writers(&fourth.handle),
            [4],
            "rebased after an abort on a restored base"
        );

        // NO_CLAIM: nothing restored may be referenced.
        let handles = handles(&meta);
        let mut no_claim = Heap::restore(
            identity(128, 1, 0),
            config.clone(),
            &storage,
            &handles,
            RestoreMode::NoClaim,
        )
        .await
        .unwrap();
        fill(&mut no_claim, 0..1, 5);
        let after_no_claim = no_claim.snapshot(5, &storage).unwrap().run().await.unwrap();
        assert_eq!(writers(&after_no_claim.handle), [5], "a full checkpoint");
        assert!(
            after_no_claim
                .handle
                .files
                .iter()
                .all(|f| f.created_by == 5 && f.path != first.handle.files[0].path)
        );

        // A rescale: each new subtask starts a chain of its own.
        let mut rescaled = restore_at(&storage, &meta, 2, &config).await;
        for (i, b) in rescaled.iter_mut().enumerate() {
            let r = b.snapshot(6, &storage).unwrap().run().await.unwrap();
            assert_eq!(writers(&r.handle), [6], "subtask {i}: a full checkpoint");
        }
    });
}

/// TTL in a delta: an entry written since the base whose TTL expired by the synchronous phase gets a
/// tombstone, entries the base holds expire on their own, and nothing expired or overwritten comes back.
#[test]
fn a_delta_of_a_state_with_ttl_restores_what_was_live_at_its_synchronous_phase() {
    use statebackend::keyed::StateTtlConfig;
    use std::sync::Arc;
    use std::time::{Duration, UNIX_EPOCH};
    runtime().block_on(async {
        let storage = CheckpointStorage::in_memory("heap-ttl-delta").unwrap();
        let config = incremental(10);
        let clock = Arc::new(ManualClock::new(UNIX_EPOCH + Duration::from_secs(1_000)));
        let mut b = Heap::new(identity(128, 1, 0), config.clone()).unwrap();
        b.set_clock(clock.clone());
        let d = ValueStateDescriptor::<VoidNamespace, u64>::new("ttl")
            .with_ttl(StateTtlConfig::new(100));
        let s = b.value_state(&d).unwrap();
        let put = |b: &mut Heap, k: u64, v: u64| {
            b.set_current_key(k).unwrap();
            s.update(b, &VoidNamespace, v).unwrap();
        };
        for k in 0..100 {
            put(&mut b, k, 1);
        }
        b.snapshot(1, &storage).unwrap().run().await.unwrap();
        b.notify_checkpoint_complete(1);
        put(&mut b, 200, 2); // written since the base, expired by checkpoint 2
        put(&mut b, 5, 2); // overwritten, expired by checkpoint 2 as is the base's value
        clock.advance(Duration::from_millis(60));
        for k in 10..20 {
            put(&mut b, k, 3); // live at checkpoint 2
        }
        b.set_current_key(15).unwrap();
        s.clear(&mut b, &VoidNamespace).unwrap();
        clock.advance(Duration::from_millis(60));
        let second = b.snapshot(2, &storage).unwrap().run().await.unwrap();
        assert!(one_new_file(&second.handle, 2), "a delta");
        assert_eq!(
            second.metrics.entries, 12,
            "9 live upserts, tombstones for the expired 200 and 5 and the cleared 15"
        );
        let meta = CheckpointMetadata {
            checkpoint_id: 2,
            timestamp_ms: 0,
            kind: SnapshotKind::Checkpoint,
            generation: 1,
            tasks: vec![TaskStateSnapshot::keyed("op", 0, second.handle)],
        };
        let mut restored = restore_at(&storage, &meta, 1, &config).await;
        let r = &mut restored[0];
        r.set_clock(clock.clone());
        let rs = r.value_state(&d).unwrap();
        let mut live = BTreeMap::new();
        for k in (0..100).chain([200]) {
            r.set_current_key(k).unwrap();
            if let Some(v) = rs.value(r, &VoidNamespace).unwrap() {
                live.insert(k, v);
            }
        }
        let expected: BTreeMap<u64, u64> = (10..20).filter(|k| *k != 15).map(|k| (k, 3)).collect();
        assert_eq!(live, expected);
    });
}

/// A delta writes only what changed, yet reports every state's size: the states it writes whole exactly,
/// the others estimated (entries exact, bytes from a sample), close to what a full snapshot of the same
/// state counts.
#[test]
fn a_delta_reports_every_states_size_entries_exact_and_bytes_estimated() {
    runtime().block_on(async {
        let storage = CheckpointStorage::in_memory("heap-sizes").unwrap();
        let config = incremental(10);
        let mut coord = coordinator(&storage, 1, 1).await;
        let mut b = heaps(1, &config);
        let events = ListStateDescriptor::<VoidNamespace, u64>::new("events");
        fill(&mut b[0], 0..20_000, 1);
        let list = b[0].list_state(&events).unwrap();
        for k in 0..5_000u64 {
            b[0].set_current_key(k).unwrap();
            list.update(&mut b[0], &VoidNamespace, (0..1 + k % 10).collect())
                .unwrap();
        }
        checkpoint(&mut coord, &mut b).await;
        fill(&mut b[0], 0..200, 2);
        // Registered after the base: the delta writes it whole, so its figures are exact.
        let late = b[0]
            .value_state(&ValueStateDescriptor::<VoidNamespace, u64>::new("late"))
            .unwrap();
        for k in 0..300u64 {
            b[0].set_current_key(k).unwrap();
            late.update(&mut b[0], &VoidNamespace, k).unwrap();
        }
        let id = coord.trigger().await.unwrap();
        let delta = b[0].snapshot(id, &storage).unwrap().run().await.unwrap();
        assert!(one_new_file(&delta.handle, id), "a delta");
        let full = b[0]
            .savepoint(id + 1, &storage, SavepointFormat::Canonical)
            .unwrap()
            .run()
            .await
            .unwrap();
        let (estimated, exact) = (&delta.metrics.sizes, &full.metrics.sizes);
        for (name, within_percent) in [("counts", 1), ("events", 20), ("late", 0)] {
            let (e, x) = (estimated.state(name).unwrap(), exact.state(name).unwrap());
            assert_eq!(e.entries, x.entries, "{name}: entries are exact");
            assert_eq!(
                e.exact,
                name == "late",
                "{name}: exact only when written whole"
            );
            let off = e.bytes.abs_diff(x.bytes) * 100;
            assert!(
                off <= x.bytes * within_percent,
                "{name}: {} bytes against {}",
                e.bytes,
                x.bytes
            );
        }
        assert_eq!(estimated.key_groups.len(), exact.key_groups.len());
        assert!(estimated.key_groups.iter().all(|g| !g.exact));
    });
}

/// A full checkpoint of a chain is a file per slice: when one of them fails to upload, the checkpoint
/// fails, the slices already uploaded are deleted (no handle lists them), and the next checkpoint
/// completes.
#[test]
fn a_failed_slice_upload_deletes_the_slices_already_uploaded() {
    use crate::common::faulty::FaultyStore;
    use std::sync::Arc;
    runtime().block_on(async {
        let seeded = |store: Arc<FaultyStore>| {
            CheckpointStorage::new(store, "slices")
                .unwrap()
                .with_id_source(Arc::new(statebackend::ids::SeededIds::new(5)))
        };
        let job = || {
            let mut b = heaps(1, &incremental(10));
            fill(&mut b[0], 0..5_000, 1);
            b
        };
        // The same seed names the same files: learn the fourth slice file's name.
        let first = {
            let storage = seeded(FaultyStore::new());
            let mut b = job();
            b[0].snapshot(1, &storage)
                .unwrap()
                .run()
                .await
                .unwrap()
                .handle
        };
        assert_eq!(first.files.len(), 9, "9 slices of 128 key groups");
        let fourth = first.files[3].path.rsplit('-').next().unwrap().to_string();
        let faulty = FaultyStore::new();
        faulty.fail_writes_to(&fourth);
        let storage = seeded(faulty.clone());
        let mut b = job();
        let failed = b[0].snapshot(1, &storage).unwrap().run().await;
        assert!(failed.is_err(), "{failed:?}");
        assert_eq!(
            objects(&storage, Some("shared")).await,
            Vec::<String>::new(),
            "the three slices uploaded before the failure are deleted"
        );
        faulty.heal();
        let next = b[0].snapshot(2, &storage).unwrap().run().await.unwrap();
        assert_eq!(writers(&next.handle), [2], "a full checkpoint of its own");
        assert_eq!(next.handle.files.len(), 9);
    });
}
