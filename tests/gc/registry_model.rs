//! Random sequences of trigger / acknowledge / abort / restart / sweep with concurrent checkpoints on the
//! RocksDB backend, checked after every step: no file a retained checkpoint references is missing, a sweep in a
//! quiet moment leaves no unreferenced shared file, and a restore gives the model's state of its checkpoint.

#![cfg(feature = "rocksdb")]
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use crate::common::*;
use proptest::prelude::*;
use statebackend::rocksdb::RocksDbKeyedStateBackend;
use statebackend::snapshot::layout::*;
use statebackend::*;

const NS: VoidNamespace = VoidNamespace;
type Lsm = RocksDbKeyedStateBackend<u64>;

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

async fn open(storage: &CheckpointStorage, clock: &Arc<ManualClock>) -> CheckpointCoordinator {
    CheckpointCoordinator::open_with_clock(
        storage.clone(),
        CoordinatorConfig::single_operator("op", 1, 2),
        clock.clone(),
    )
    .await
    .unwrap()
}

async fn run(ops: Vec<Op>) {
    // Ages are measured on the store's clock: the store's clock is the test's.
    let (storage, clock, _) = crate::common::clocked::clocked_storage("model");
    let mut coord = open(&storage, &clock).await;
    let mut backend = lsm::<u64>(128, 1, 0);
    let mut model: BTreeMap<u64, u64> = BTreeMap::new();
    let mut at_checkpoint: BTreeMap<u64, BTreeMap<u64, u64>> = BTreeMap::new();
    let mut in_flight: Vec<(u64, SnapshotResult)> = Vec::new();
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
                let id = coord.trigger().await.unwrap();
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
                    Ok(Acknowledgement::Completed(stats)) => {
                        backend.notify_checkpoint_complete(id);
                        for old in stats.aborted_pending {
                            backend.notify_checkpoint_aborted(old);
                            in_flight.retain(|(p, _)| *p != old);
                        }
                    }
                    Ok(other) => unreachable!("one task per checkpoint: {other:?}"),
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
                coord = open(&storage, &clock).await;
                match coord.store().latest().cloned() {
                    Some(meta) => {
                        backend = Lsm::restore(
                            identity(128, 1, 0),
                            lsm_config(),
                            &storage,
                            &handles(&meta),
                            RestoreMode::Claim,
                        )
                        .await
                        .unwrap();
                        model = at_checkpoint[&meta.checkpoint_id].clone();
                        assert_eq!(
                            read_all(&mut backend, &desc()),
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
                clock.advance(Duration::from_secs(10));
                let r = coord.sweep_orphans(Duration::from_secs(5)).await.unwrap();
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
        assert_retained_files_intact(&coord, false).await;
    }
    // Quiet moment: nothing in flight. After a sweep, only referenced files remain in shared/.
    for (id, _) in in_flight.drain(..) {
        coord.abort(id).await.unwrap();
        backend.notify_checkpoint_aborted(id);
    }
    clock.advance(Duration::from_secs(10));
    coord.sweep_orphans(Duration::from_secs(5)).await.unwrap();
    for path in objects(&storage, Some(SHARED_DIR)).await {
        assert!(
            coord.store().references(&path),
            "unreferenced {path} survived the sweeps"
        );
    }
    assert_retained_files_intact(&coord, false).await;
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]
    #[test]
    fn registry_invariants_hold_under_random_lifecycles(ops in proptest::collection::vec(op(), 1..40)) {
        runtime().block_on(run(ops));
    }
}
