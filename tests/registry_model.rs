//! Random sequences of trigger / acknowledge / abort / restart / sweep with concurrent checkpoints on the
//! LSM backend, checked after every step: no file a retained checkpoint references is missing, a sweep in a
//! quiet moment leaves no unreferenced shared file, and a restore gives the model's state of its checkpoint.

#![cfg(feature = "rocksdb")]
#![allow(clippy::unwrap_used, reason = "tests fail loudly on unexpected errors")]

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::*;
use futures::TryStreamExt;
use object_store::ObjectStoreExt;
use proptest::prelude::*;
use statebackend::*;

const NS: VoidNamespace = VoidNamespace;
type Lsm = LsmKeyedStateBackend<u64>;

#[derive(Debug, Clone)]
enum Op {
    Write { first: u64, count: u64, value: u64 },
    Trigger,
    Ack(usize),
    Abort(usize),
    Restart,
    Sweep,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0..2_000u64, 1..400u64, any::<u64>()).prop_map(|(first, count, value)| Op::Write { first, count, value }),
        3 => Just(Op::Trigger),
        3 => (0..3usize).prop_map(Op::Ack),
        1 => (0..3usize).prop_map(Op::Abort),
        1 => Just(Op::Restart),
        1 => Just(Op::Sweep),
    ]
}

fn desc() -> ValueStateDescriptor<VoidNamespace, u64> {
    ValueStateDescriptor::new("v")
}

fn read_all(b: &mut Lsm) -> BTreeMap<u64, u64> {
    let s = b.value_state(&desc()).unwrap();
    let mut out = BTreeMap::new();
    for k in s.keys(b, &NS).unwrap() {
        b.set_current_key(k).unwrap();
        out.insert(k, s.value(b, &NS).unwrap().unwrap());
    }
    out
}

async fn open(storage: &CheckpointStorage) -> CheckpointCoordinator {
    CheckpointCoordinator::open(
        storage.clone(),
        CoordinatorConfig {
            expected_tasks: 1,
            retained_checkpoints: 2,
        },
    )
    .await
    .unwrap()
}

async fn shared_objects(storage: &CheckpointStorage) -> Vec<String> {
    let prefix = format!("{}/", storage.path("").as_ref().trim_end_matches('/'));
    storage
        .object_store()
        .list(Some(&storage.path(SHARED_DIR)))
        .map_ok(|m| m.location.to_string())
        .try_collect::<Vec<_>>()
        .await
        .unwrap()
        .into_iter()
        .filter_map(|p| p.strip_prefix(&prefix).map(str::to_string))
        .collect()
}

async fn check_retained(coord: &CheckpointCoordinator) {
    let storage = coord.storage();
    for meta in coord.store().checkpoints() {
        for f in meta.files() {
            let head = storage.object_store().head(&storage.path(&f.path)).await;
            let head = head.unwrap_or_else(|e| {
                panic!(
                    "chk-{} references missing {}: {e}",
                    meta.checkpoint_id, f.path
                )
            });
            assert_eq!(head.size, f.size_bytes);
        }
    }
}

async fn run(ops: Vec<Op>) {
    let storage = CheckpointStorage::in_memory("model").unwrap();
    let mut coord = open(&storage).await;
    let mut backend = lsm::<u64>(128, 1, 0);
    let mut model: BTreeMap<u64, u64> = BTreeMap::new();
    let mut at_checkpoint: BTreeMap<u64, BTreeMap<u64, u64>> = BTreeMap::new();
    let mut in_flight: Vec<(u64, SnapshotResult)> = Vec::new();
    let t0 = Instant::now();
    let mut clock = 0u64;
    for op in ops {
        match op {
            Op::Write {
                first,
                count,
                value,
            } => {
                let s = backend.value_state(&desc()).unwrap();
                for k in first..first + count {
                    backend.set_current_key(k).unwrap();
                    s.update(&mut backend, &NS, value).unwrap();
                    model.insert(k, value);
                }
            }
            Op::Trigger if in_flight.len() < 3 => {
                let id = coord.trigger();
                let result = backend.snapshot(id, &storage).unwrap().run().await.unwrap();
                at_checkpoint.insert(id, model.clone());
                in_flight.push((id, result));
            }
            Op::Trigger => {}
            Op::Ack(i) if i < in_flight.len() => {
                let (id, result) = in_flight.remove(i);
                let task = TaskStateSnapshot {
                    operator_id: "op".into(),
                    keyed_state: Some(result.handle),
                    ..Default::default()
                };
                match coord.acknowledge(id, task, Some(result.metrics)).await {
                    Ok(Some(stats)) => {
                        backend.notify_checkpoint_complete(id);
                        for old in stats.aborted_pending {
                            backend.notify_checkpoint_aborted(old);
                            in_flight.retain(|(p, _)| *p != old);
                        }
                    }
                    Ok(None) => unreachable!("one task per checkpoint"),
                    // Declined (reuses a file a concurrent checkpoint's GC deleted) or late (aborted).
                    Err(e) => {
                        assert_eq!(e.kind(), ErrorKind::IllegalState, "{e}");
                        backend.notify_checkpoint_aborted(id);
                    }
                }
            }
            Op::Abort(i) if i < in_flight.len() => {
                let (id, _) = in_flight.remove(i);
                coord.abort(id).await.unwrap();
                backend.notify_checkpoint_aborted(id);
            }
            Op::Ack(_) | Op::Abort(_) => {}
            Op::Restart => {
                // Failover: pending checkpoints are lost (their uploads become orphans), the backend
                // restores the latest completed checkpoint.
                in_flight.clear();
                drop(coord);
                coord = open(&storage).await;
                match coord.store().latest().cloned() {
                    Some(meta) => {
                        backend = Lsm::restore(
                            lsm_config(128, 1, 0),
                            &storage,
                            &handles(&meta),
                            RestoreMode::Claim,
                        )
                        .await
                        .unwrap();
                        model = at_checkpoint[&meta.checkpoint_id].clone();
                        assert_eq!(
                            read_all(&mut backend),
                            model,
                            "restore of chk-{}",
                            meta.checkpoint_id
                        );
                    }
                    None => {
                        backend = lsm::<u64>(128, 1, 0);
                        model.clear();
                    }
                }
            }
            Op::Sweep => {
                clock += 10;
                let r = coord
                    .sweep_orphans(Duration::from_secs(5), t0 + Duration::from_secs(clock))
                    .await
                    .unwrap();
                for path in &r.deleted {
                    assert!(
                        in_flight.iter().all(|(_, res)| res
                            .handle
                            .files
                            .iter()
                            .all(|f| &f.path != path)),
                        "the sweep deleted {path} of a checkpoint in flight"
                    );
                }
            }
        }
        check_retained(&coord).await;
    }
    // Quiet moment: nothing in flight. Two sweeps later, only referenced files remain in shared/.
    for (id, _) in in_flight.drain(..) {
        coord.abort(id).await.unwrap();
        backend.notify_checkpoint_aborted(id);
    }
    for step in 1..=2 {
        coord
            .sweep_orphans(
                Duration::from_secs(5),
                t0 + Duration::from_secs(clock + 10 * step),
            )
            .await
            .unwrap();
    }
    for path in shared_objects(&storage).await {
        assert!(
            coord.store().references(&path),
            "unreferenced {path} survived the sweeps"
        );
    }
    check_retained(&coord).await;
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]
    #[test]
    fn registry_invariants_hold_under_random_lifecycles(ops in proptest::collection::vec(op(), 1..40)) {
        runtime().block_on(run(ops));
    }
}
