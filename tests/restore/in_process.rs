//! In-process recovery of the heap backend: a restore in the same process takes the frozen version the
//! checkpoint kept (no byte read from storage, no local file), stays isolated from the writes of the
//! backend it came from and of every other restore from it, holds what the file holds (TTL states swept
//! as the file left them, timers), and falls back to the files (saying why) for a rescale or a version
//! already dropped; a registration with other types takes the kept records as a file restore would; a
//! model of random writes checks every cycle.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::common::faulty::FaultyStore;
use crate::common::{checkpoint, coordinator, handles, identity};
use statebackend::heap::{HeapConfig, HeapKeyedStateBackend, InProcessRecovery};
use statebackend::keyed::{
    StateTtlConfig, TimeDomain, TimerServiceDescriptor, TtlTime, TtlVisibility,
};
use statebackend::snapshot::HandleFormat;
use statebackend::*;

const NS: VoidNamespace = VoidNamespace;
const MAX_P: u32 = 128;

type Heap = HeapKeyedStateBackend<u64>;

fn values() -> ValueStateDescriptor<VoidNamespace, u64> {
    ValueStateDescriptor::new("values")
}

fn lists() -> ListStateDescriptor<VoidNamespace, u64> {
    ListStateDescriptor::new("lists")
}

fn maps() -> MapStateDescriptor<VoidNamespace, u32, u64> {
    MapStateDescriptor::new("maps")
}

fn new_backends(parallelism: u32, recovery: &InProcessRecovery, incremental: bool) -> Vec<Heap> {
    (0..parallelism)
        .map(|i| {
            let config = HeapConfig {
                incremental,
                ..HeapConfig::default()
            };
            let mut b = Heap::new(identity(MAX_P, parallelism, i), config).unwrap();
            b.set_in_process_recovery(recovery);
            b
        })
        .collect()
}

/// Writes round `round` under every key of `keys` the backend owns: a value, a list element and a map
/// entry per key.
fn write(b: &mut Heap, keys: std::ops::Range<u64>, round: u64) {
    let (v, l, m) = (
        b.value_state(&values()).unwrap(),
        b.list_state(&lists()).unwrap(),
        b.map_state(&maps()).unwrap(),
    );
    for k in keys {
        if b.set_current_key(k).is_ok() {
            v.update(b, &NS, k * 10 + round).unwrap();
            l.add(b, &NS, round).unwrap();
            m.put(b, &NS, round as u32, k).unwrap();
        }
    }
}

/// Checks that every owned key of `keys` holds rounds `1..=round`; how many keys the backend owns.
fn check(b: &mut Heap, keys: std::ops::Range<u64>, round: u64) -> usize {
    let (v, l, m) = (
        b.value_state(&values()).unwrap(),
        b.list_state(&lists()).unwrap(),
        b.map_state(&maps()).unwrap(),
    );
    let mut owned = 0;
    for k in keys {
        if b.set_current_key(k).is_ok() {
            assert_eq!(v.value(b, &NS).unwrap(), Some(k * 10 + round), "key {k}");
            assert_eq!(l.get(b, &NS).unwrap(), (1..=round).collect::<Vec<_>>());
            for r in 1..=round {
                assert_eq!(m.get(b, &NS, &(r as u32)).unwrap(), Some(k), "key {k}");
            }
            assert_eq!(m.get(b, &NS, &(round as u32 + 1)).unwrap(), None);
            owned += 1;
        }
    }
    owned
}

struct Job {
    faulty: Arc<FaultyStore>,
    storage: CheckpointStorage,
    coordinator: CheckpointCoordinator,
    recovery: InProcessRecovery,
}

/// Two subtasks writing rounds 1 and 2 of keys 0..1000, each checkpointed and confirmed, and a round 3
/// written after the second checkpoint; the backends are then dropped (the task failed).
async fn failed_job(incremental: bool) -> Job {
    let faulty = FaultyStore::new();
    let storage = CheckpointStorage::new(faulty.clone(), "in-process").unwrap();
    let mut coordinator = coordinator(&storage, 2, 2).await;
    let recovery = InProcessRecovery::new();
    let mut backends = new_backends(2, &recovery, incremental);
    for round in 1..=2 {
        for b in &mut backends {
            write(b, 0..1_000, round);
        }
        checkpoint(&mut coordinator, &mut backends).await;
    }
    for b in &mut backends {
        write(b, 0..1_000, 3);
    }
    Job {
        faulty,
        storage,
        coordinator,
        recovery,
    }
}

async fn restore(job: &Job, parallelism: u32, index: u32, handles: &[KeyedStateHandle]) -> Heap {
    Heap::restore_in_process(
        identity(MAX_P, parallelism, index),
        HeapConfig::default(),
        &job.storage,
        handles,
        RestoreMode::Claim,
        &job.recovery,
    )
    .await
    .unwrap()
}

/// Subtask 0 of 1 restored from `handle` with in-process recovery `recovery` (NO_CLAIM).
async fn restore_one(
    storage: &CheckpointStorage,
    handle: &KeyedStateHandle,
    recovery: &InProcessRecovery,
) -> Heap {
    Heap::restore_in_process(
        identity(MAX_P, 1, 0),
        HeapConfig::default(),
        storage,
        std::slice::from_ref(handle),
        RestoreMode::NoClaim,
        recovery,
    )
    .await
    .unwrap()
}

#[test]
fn a_restore_in_the_process_reads_no_file_and_is_isolated_from_every_other_writer() {
    crate::common::runtime().block_on(async {
        for incremental in [false, true] {
            let job = failed_job(incremental).await;
            // The second checkpoint's versions; the first's went when the second was confirmed.
            assert_eq!(job.recovery.len(), 2, "incremental {incremental}");
            let latest = handles(job.coordinator.store().latest().unwrap());
            job.faulty.take_bytes_read();
            let mut restored = Vec::new();
            for i in 0..2 {
                restored.push(restore(&job, 2, i, &latest).await);
            }
            assert_eq!(job.faulty.take_bytes_read(), 0, "bytes read from storage");
            let mut owned = 0;
            for b in &mut restored {
                let sources = b.restore_sources().clone();
                assert_eq!(sources.in_process, 1, "{sources:?}");
                assert_eq!(sources.remote_files + sources.local_files, 0, "{sources:?}");
                assert!(sources.fallbacks.is_empty(), "{sources:?}");
                // Round 3 came after the checkpoint: not in it.
                owned += check(b, 0..1_000, 2);
            }
            assert_eq!(owned, 1_000);

            // The restored backend writes round 3 again, over pages it shares with the kept version;
            // a second restore from the same handles still gets the checkpoint.
            write(&mut restored[0], 0..1_000, 3);
            let mut again = restore(&job, 2, 0, &latest).await;
            assert_eq!(again.restore_sources().in_process, 1);
            check(&mut again, 0..1_000, 2);
            check(&mut restored[0], 0..1_000, 3);
            // And what the second restore writes does not reach the first.
            write(&mut again, 0..1_000, 4);
            check(&mut restored[0], 0..1_000, 3);
        }
    });
}

#[test]
fn a_restored_backend_checkpoints_and_its_confirmation_drops_the_older_versions() {
    crate::common::runtime().block_on(async {
        let mut job = failed_job(true).await;
        let latest = handles(job.coordinator.store().latest().unwrap());
        let mut restored = vec![
            restore(&job, 2, 0, &latest).await,
            restore(&job, 2, 1, &latest).await,
        ];
        for b in &mut restored {
            write(b, 0..1_000, 3);
        }
        checkpoint(&mut job.coordinator, &mut restored).await;
        // Only the restored backends' third checkpoint is kept now.
        assert_eq!(job.recovery.len(), 2);
        drop(restored);
        let latest = handles(job.coordinator.store().latest().unwrap());
        job.faulty.take_bytes_read();
        let mut owned = 0;
        for i in 0..2 {
            let mut b = restore(&job, 2, i, &latest).await;
            assert_eq!(b.restore_sources().in_process, 1);
            owned += check(&mut b, 0..1_000, 3);
        }
        assert_eq!(owned, 1_000);
        assert_eq!(job.faulty.take_bytes_read(), 0);
        job.recovery.clear();
        assert!(job.recovery.is_empty());
        let b = restore(&job, 2, 0, &latest).await;
        assert_eq!(b.restore_sources().in_process, 0);
        assert!(b.restore_sources().remote_files >= 1);
    });
}

#[test]
fn a_claim_restore_of_a_chain_from_memory_starts_a_new_chain() {
    crate::common::runtime().block_on(async {
        let mut job = failed_job(true).await;
        let latest = handles(job.coordinator.store().latest().unwrap());
        assert!(latest.iter().all(|h| h.format == HandleFormat::KeyedChain));
        let config = HeapConfig {
            incremental: true,
            ..HeapConfig::default()
        };
        let mut restored = Vec::new();
        for i in 0..2 {
            let b = Heap::restore_in_process(
                identity(MAX_P, 2, i),
                config.clone(),
                &job.storage,
                &latest,
                RestoreMode::Claim,
                &job.recovery,
            )
            .await
            .unwrap();
            assert_eq!(b.restore_sources().in_process, 1);
            restored.push(b);
        }
        // The first checkpoint names no file of the restored chain: a new full checkpoint each (a file
        // per slice of rolling materialization).
        write(&mut restored[0], 0..1_000, 3);
        write(&mut restored[1], 0..1_000, 3);
        checkpoint(&mut job.coordinator, &mut restored).await;
        let first = handles(job.coordinator.store().latest().unwrap());
        let old: Vec<_> = latest
            .iter()
            .flat_map(|h| &h.files)
            .map(|f| &f.path)
            .collect();
        for h in &first {
            assert!(
                h.files.iter().all(|f| f.created_by == h.checkpoint_id),
                "{h:?}"
            );
            assert!(h.files.iter().all(|f| !old.contains(&&f.path)));
        }
        // The next one is a delta on it.
        write(&mut restored[0], 0..1_000, 4);
        checkpoint(&mut job.coordinator, &mut restored).await;
        let second = handles(job.coordinator.store().latest().unwrap());
        let delta_on_first = |h: &KeyedStateHandle| {
            let (placeholders, new) = h.files.split_at(h.files.len() - 1);
            new[0].created_by == h.checkpoint_id
                && placeholders
                    .iter()
                    .all(|f| first.iter().any(|g| g.files.contains(f)))
        };
        assert!(second.iter().all(delta_on_first), "{second:?}");
    });
}

#[test]
fn a_rescale_or_a_dropped_version_restores_from_the_files_and_says_why() {
    crate::common::runtime().block_on(async {
        let job = failed_job(false).await;
        let latest = handles(job.coordinator.store().latest().unwrap());
        let mut owned = 0;
        for i in 0..3 {
            let mut b = restore(&job, 3, i, &latest).await;
            let sources = b.restore_sources().clone();
            assert_eq!(sources.in_process, 0, "{sources:?}");
            assert!(sources.remote_files >= 1, "{sources:?}");
            assert!(
                sources.fallbacks.iter().any(|f| f.contains("a rescale")),
                "{sources:?}"
            );
            owned += check(&mut b, 0..1_000, 2);
            // The restored backend keeps its own checkpoints in the process.
            let storage = job.storage.clone();
            let result = b
                .snapshot(9 + u64::from(i), &storage)
                .unwrap()
                .run()
                .await
                .unwrap();
            assert!(result.metrics.entries > 0);
        }
        assert_eq!(owned, 1_000);
        assert_eq!(
            job.recovery.len(),
            5,
            "two of checkpoint 2, three of the rescaled backends"
        );

        // A handle whose version this recovery never kept reads its file.
        let other = CheckpointStorage::new(job.faulty.clone(), "in-process").unwrap();
        let mut b = Heap::restore_in_process(
            identity(MAX_P, 2, 0),
            HeapConfig::default(),
            &other,
            &latest,
            RestoreMode::NoClaim,
            &InProcessRecovery::new(),
        )
        .await
        .unwrap();
        assert_eq!(b.restore_sources().in_process, 0);
        assert!(
            b.restore_sources()
                .fallbacks
                .iter()
                .any(|f| f.contains("no in-process copy")),
            "{:?}",
            b.restore_sources()
        );
        check(&mut b, 0..1_000, 2);
    });
}

#[test]
fn an_aborted_checkpoint_keeps_no_version() {
    crate::common::runtime().block_on(async {
        let storage =
            CheckpointStorage::new(Arc::new(object_store::memory::InMemory::new()), "abort")
                .unwrap();
        let recovery = InProcessRecovery::new();
        let mut b = new_backends(1, &recovery, false).remove(0);
        write(&mut b, 0..100, 1);
        let result = b.snapshot(1, &storage).unwrap().run().await.unwrap();
        assert_eq!(recovery.len(), 1);
        b.notify_checkpoint_aborted(1);
        assert!(recovery.is_empty());
        // A version kept after a later checkpoint of the job was confirmed is dropped at once.
        let late = b.snapshot(2, &storage).unwrap();
        let third = b.snapshot(3, &storage).unwrap().run().await.unwrap();
        b.notify_checkpoint_complete(3);
        assert_eq!(recovery.len(), 1);
        late.run().await.unwrap();
        assert_eq!(
            recovery.len(),
            1,
            "checkpoint 2 finished after 3 was confirmed"
        );
        let kept = restore_one(&storage, &result.handle, &recovery).await;
        assert_eq!(
            kept.restore_sources().in_process,
            0,
            "checkpoint 1 was aborted"
        );
        let kept = restore_one(&storage, &third.handle, &recovery).await;
        assert_eq!(kept.restore_sources().in_process, 1);
    });
}

fn event_ttl(ttl_ms: u64) -> StateTtlConfig {
    let mut ttl = StateTtlConfig::new(ttl_ms);
    ttl.time = TtlTime::EventTime;
    // Expired values a read would return until cleaned up: what the restore left shows.
    ttl.visibility = TtlVisibility::ReturnExpiredIfNotCleanedUp;
    ttl
}

/// Every value, list and map of keys 0..200 and the timers of a backend with the TTL states and timers
/// of `ttl_states_and_timers_restore_in_the_process_as_their_file_holds_them`.
type Observed = (
    Vec<(u64, Option<u64>, Vec<u64>, Vec<(u32, u64)>)>,
    u64,
    Option<u64>,
);

fn observe_ttl(b: &mut Heap) -> Observed {
    let v = b.value_state(&values().with_ttl(event_ttl(100))).unwrap();
    let l = b.list_state(&lists().with_ttl(event_ttl(100))).unwrap();
    let m = b.map_state(&maps().with_ttl(event_ttl(100))).unwrap();
    let t = b
        .timer_service(&TimerServiceDescriptor::<VoidNamespace>::new("t"))
        .unwrap();
    let mut out = Vec::new();
    for k in 0..200 {
        b.set_current_key(k).unwrap();
        let mut entries: Vec<(u32, u64)> = m.entries(b, &NS).unwrap();
        entries.sort_unstable();
        out.push((k, v.value(b, &NS).unwrap(), l.get(b, &NS).unwrap(), entries));
    }
    let len = t.len(b, TimeDomain::EventTime).unwrap();
    let next = t.next_timer(b, TimeDomain::EventTime).unwrap();
    (out, len, next)
}

#[test]
fn ttl_states_and_timers_restore_in_the_process_as_their_file_holds_them() {
    crate::common::runtime().block_on(async {
        let storage =
            CheckpointStorage::new(Arc::new(object_store::memory::InMemory::new()), "ttl").unwrap();
        let recovery = InProcessRecovery::new();
        let mut b = new_backends(1, &recovery, false).remove(0);
        let v = b.value_state(&values().with_ttl(event_ttl(100))).unwrap();
        let l = b.list_state(&lists().with_ttl(event_ttl(100))).unwrap();
        let m = b.map_state(&maps().with_ttl(event_ttl(100))).unwrap();
        let t = b
            .timer_service(&TimerServiceDescriptor::<VoidNamespace>::new("t"))
            .unwrap();
        // Key k written at event time k % 120 (values, a list element, a map entry), and again at time
        // 110 for every third key (a second list element and map entry): at watermark 150 the cutoff
        // is 50, so some entries expired whole and some lists and maps in part.
        for k in 0..200u64 {
            b.set_ttl_watermark(k % 120);
            b.set_current_key(k).unwrap();
            v.update(&mut b, &NS, k).unwrap();
            l.add(&mut b, &NS, k).unwrap();
            m.put(&mut b, &NS, 1, k).unwrap();
            t.register_event_time(&mut b, &NS, 1_000 + k).unwrap();
        }
        b.set_ttl_watermark(110);
        for k in (0..200u64).step_by(3) {
            b.set_current_key(k).unwrap();
            l.add(&mut b, &NS, k + 1).unwrap();
            m.put(&mut b, &NS, 2, k + 1).unwrap();
        }
        b.set_ttl_watermark(150);
        let result = b.snapshot(1, &storage).unwrap().run().await.unwrap();
        b.notify_checkpoint_complete(1);
        assert_eq!(recovery.len(), 1, "TTL states and timers are kept");
        drop(b);
        let restore = |recovery: InProcessRecovery| {
            let (storage, handle) = (storage.clone(), result.handle.clone());
            async move {
                let mut r = Heap::restore_in_process(
                    identity(MAX_P, 1, 0),
                    HeapConfig::default(),
                    &storage,
                    &[handle],
                    RestoreMode::NoClaim,
                    &recovery,
                )
                .await
                .unwrap();
                r.set_ttl_watermark(150);
                r
            }
        };
        let mut in_process = restore(recovery.clone()).await;
        assert_eq!(in_process.restore_sources().in_process, 1);
        let mut from_file = restore(InProcessRecovery::new()).await;
        assert_eq!(from_file.restore_sources().in_process, 0);
        let (kept, file) = (observe_ttl(&mut in_process), observe_ttl(&mut from_file));
        assert_eq!(kept, file);
        // The checkpoint left something out: the comparison saw expired entries and elements.
        assert!(file.0.iter().any(|(_, v, _, _)| v.is_none()));
        assert!(
            file.0
                .iter()
                .any(|(_, _, l, _)| l.len() == 1 && l[0] % 3 == 1)
        );
        assert_eq!(file.1, 200);
    });
}

#[test]
fn a_registration_with_another_type_or_ttl_takes_the_kept_records_as_a_file_restore_does() {
    crate::common::runtime().block_on(async {
        let job = failed_job(true).await;
        let latest = handles(job.coordinator.store().latest().unwrap());
        let mut b = restore(&job, 2, 0, &latest).await;
        assert_eq!(b.restore_sources().in_process, 1);
        // TTL switched on: the values are stamped with the restore time, as after a file restore.
        let with_ttl = values().with_ttl(StateTtlConfig::new(3_600_000));
        let v = b.value_state(&with_ttl).unwrap();
        let mut owned = 0;
        for k in 0..1_000 {
            if b.set_current_key(k).is_ok() {
                assert_eq!(v.value(&b, &NS).unwrap(), Some(k * 10 + 2));
                owned += 1;
            }
        }
        assert!(owned > 0);
        // A state never registered is carried into the next checkpoint as it was kept.
        let result = b.snapshot(10, &job.storage).unwrap().run().await.unwrap();
        let mut from_file = Heap::restore(
            identity(MAX_P, 2, 0),
            HeapConfig::default(),
            &job.storage,
            &[result.handle],
            RestoreMode::NoClaim,
        )
        .await
        .unwrap();
        let l = from_file.list_state(&lists()).unwrap();
        for k in 0..1_000 {
            if from_file.set_current_key(k).is_ok() {
                assert_eq!(l.get(&from_file, &NS).unwrap(), vec![1, 2]);
            }
        }
    });
}

/// One random write of the model test.
fn random_write(b: &mut Heap, model: &mut BTreeMap<u64, (u64, Vec<u64>)>, rng: &mut u64) {
    let next = |rng: &mut u64| {
        *rng ^= *rng << 13;
        *rng ^= *rng >> 7;
        *rng ^= *rng << 17;
        *rng
    };
    let (v, l) = (
        b.value_state(&values()).unwrap(),
        b.list_state(&lists()).unwrap(),
    );
    let key = next(rng) % 500;
    b.set_current_key(key).unwrap();
    match next(rng) % 4 {
        0 => {
            v.clear(b, &NS).unwrap();
            l.clear(b, &NS).unwrap();
            model.remove(&key);
        }
        1 => {
            let x = next(rng) % 1_000;
            l.add(b, &NS, x).unwrap();
            model.entry(key).or_insert((u64::MAX, Vec::new())).1.push(x);
            if model[&key].0 == u64::MAX {
                v.update(b, &NS, 0).unwrap();
                model.get_mut(&key).unwrap().0 = 0;
            }
        }
        _ => {
            let x = next(rng) % 1_000;
            v.update(b, &NS, x).unwrap();
            model.entry(key).or_insert((0, Vec::new())).0 = x;
        }
    }
}

fn observe(b: &mut Heap) -> BTreeMap<u64, (u64, Vec<u64>)> {
    let (v, l) = (
        b.value_state(&values()).unwrap(),
        b.list_state(&lists()).unwrap(),
    );
    let mut out = BTreeMap::new();
    for k in v.keys_with_state(b, &NS).unwrap() {
        b.set_current_key(k).unwrap();
        let value = v.value(b, &NS).unwrap().unwrap();
        out.insert(k, (value, l.get(b, &NS).unwrap()));
    }
    out
}

#[test]
fn random_writes_checkpoints_and_in_process_restores_match_a_model() {
    crate::common::runtime().block_on(async {
        for (seed, incremental) in [
            (0x9e37_79b9_7f4a_7c15_u64, false),
            (0x2545_f491_4f6c_dd1d, true),
        ] {
            let storage =
                CheckpointStorage::new(Arc::new(object_store::memory::InMemory::new()), "model")
                    .unwrap();
            let mut coordinator = coordinator(&storage, 1, 1).await;
            let recovery = InProcessRecovery::new();
            let mut backends = new_backends(1, &recovery, incremental);
            let (mut rng, mut model) = (seed, BTreeMap::new());
            for cycle in 0..20 {
                for _ in 0..200 {
                    random_write(&mut backends[0], &mut model, &mut rng);
                }
                checkpoint(&mut coordinator, &mut backends).await;
                let at_checkpoint = model.clone();
                // Writes after the checkpoint are lost with the task.
                for _ in 0..100 {
                    random_write(&mut backends[0], &mut model, &mut rng);
                }
                if cycle % 3 == 2 {
                    let latest = handles(coordinator.store().latest().unwrap());
                    let config = HeapConfig {
                        incremental,
                        ..HeapConfig::default()
                    };
                    let mut b = Heap::restore_in_process(
                        identity(MAX_P, 1, 0),
                        config,
                        &storage,
                        &latest,
                        RestoreMode::Claim,
                        &recovery,
                    )
                    .await
                    .unwrap();
                    assert_eq!(b.restore_sources().in_process, 1, "cycle {cycle}");
                    assert_eq!(observe(&mut b), at_checkpoint, "cycle {cycle}");
                    backends = vec![b];
                    model = at_checkpoint;
                } else {
                    assert_eq!(observe(&mut backends[0]), model, "cycle {cycle}");
                }
            }
        }
    });
}
