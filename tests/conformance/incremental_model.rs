//! Property test of heap incremental checkpoints: random writes (values, list appends, map puts and
//! removes, `drop_state`) interleaved with checkpoints that are confirmed, aborted after or during their
//! asynchronous phase, or completed without the backends hearing of it (a lost notification), and restores
//! at 1, 2 or 3 subtasks. Storage keeps only what the coordinator would: completing a checkpoint deletes
//! every file it does not reference (the older checkpoint is subsumed), aborting one deletes the files it
//! uploaded. Every restore reads the latest completed checkpoint and must equal the `BTreeMap` model as
//! frozen at that checkpoint's synchronous phase.

use std::collections::BTreeSet;

use crate::common::*;
use crate::model::{self, MAX_P, Model, apply, observe};
use object_store::ObjectStoreExt;
use proptest::prelude::*;
use statebackend::heap::{HeapConfig, HeapKeyedStateBackend};
use statebackend::*;

#[derive(Debug, Clone, Copy)]
enum Outcome {
    Confirmed,
    AbortedAfter,
    AbortedDuring,
    /// Completed by the coordinator; the backends never heard of it.
    Lost,
}

#[derive(Debug, Clone)]
enum Op {
    /// A write of `model.rs` (value put or clear, list append, map put or remove).
    Write(model::Op),
    DropList,
    Checkpoint {
        outcome: Outcome,
        writes_during_async: u8,
    },
    Restore {
        parallelism: u32,
    },
}

fn op() -> impl Strategy<Value = Op> {
    let outcome = prop_oneof![
        5 => Just(Outcome::Confirmed),
        1 => Just(Outcome::AbortedAfter),
        1 => Just(Outcome::AbortedDuring),
        1 => Just(Outcome::Lost),
    ];
    let write = model::op()
        .prop_filter("writes only", |op| {
            !matches!(op, model::Op::CheckpointRestore { .. })
        })
        .prop_map(Op::Write);
    prop_oneof![
        13 => write,
        1 => Just(Op::DropList),
        4 => (outcome, 0u8..8).prop_map(|(outcome, writes_during_async)| Op::Checkpoint { outcome, writes_during_async }),
        1 => (1u32..=3).prop_map(|parallelism| Op::Restore { parallelism }),
    ]
}

/// `drop_state("list")` on every backend.
fn drop_list(backends: &mut [HeapKeyedStateBackend<u64>], model: &mut Model) {
    for b in backends.iter_mut() {
        b.drop_state("list").unwrap();
    }
    model.lists.clear();
}

/// 4,000 keys of a state the model does not check, written before the first checkpoint: the full
/// file outweighs a few deltas, so chains reach their limit of 4 files and a list or map entry can
/// gather append or patch records in several deltas.
fn ballast(b: &mut HeapKeyedStateBackend<u64>) {
    let s = b
        .value_state(&ValueStateDescriptor::<VoidNamespace, u64>::new("ballast"))
        .unwrap();
    for k in 1_000..5_000u64 {
        b.set_current_key(k).unwrap();
        s.update(b, &VoidNamespace, k).unwrap();
    }
}

async fn delete(storage: &CheckpointStorage, paths: impl IntoIterator<Item = String>) {
    for p in paths {
        storage
            .object_store()
            .delete(&storage.path(&p))
            .await
            .unwrap();
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]
    #[test]
    fn incremental_checkpoint_chains_match_the_model(ops in proptest::collection::vec(op(), 1..250)) {
        let rt = runtime();
        rt.block_on(async {
            let storage = CheckpointStorage::in_memory("incremental-model").unwrap();
            let config = HeapConfig { incremental: true, max_chain_files: 4, ..HeapConfig::default() };
            let mut backends = vec![HeapKeyedStateBackend::<u64>::new(identity(MAX_P, 1, 0), config.clone()).unwrap()];
            ballast(&mut backends[0]);
            let mut model = Model::default();
            // The latest completed checkpoint: its handles and the model at its synchronous phase.
            let mut completed: Option<(Vec<KeyedStateHandle>, Model)> = None;
            for (i, op) in ops.iter().enumerate() {
                let id = i as u64 + 1;
                match *op {
                    Op::Checkpoint { outcome, writes_during_async } => {
                        let before = objects(&storage, Some("shared")).await;
                        let pending: Vec<_> = backends.iter_mut().map(|b| b.snapshot(id, &storage).unwrap()).collect();
                        let frozen = model.clone();
                        for k in 0..u64::from(writes_during_async) {
                            apply(&mut backends, &mut model, &model::Op::Put { key: k, ns: 1, value: 9 });
                            apply(&mut backends, &mut model, &model::Op::MapRemove { key: k, uk: 1 });
                        }
                        if let Outcome::AbortedDuring = outcome {
                            for b in backends.iter_mut() {
                                b.notify_checkpoint_aborted(id);
                            }
                            for p in pending {
                                let e = p.run().await.unwrap_err();
                                prop_assert_eq!(e.kind(), ErrorKind::IllegalState, "{}", e);
                            }
                            prop_assert_eq!(objects(&storage, Some("shared")).await, before, "an aborted upload stayed");
                            continue;
                        }
                        let mut handles = Vec::new();
                        for p in pending {
                            let result = p.run().await.unwrap();
                            prop_assert_eq!(result.handle.format, statebackend::snapshot::HandleFormat::KeyedChain);
                            prop_assert!(result.handle.files.len() <= 4);
                            handles.push(result.handle);
                        }
                        match outcome {
                            Outcome::AbortedAfter => {
                                for b in backends.iter_mut() {
                                    b.notify_checkpoint_aborted(id);
                                }
                                let created: Vec<_> = handles.iter().flat_map(|h| &h.files).filter(|f| f.created_by == id).map(|f| f.path.clone()).collect();
                                delete(&storage, created).await;
                            }
                            Outcome::Confirmed | Outcome::Lost => {
                                // Subsumption: what the new checkpoint does not reference goes.
                                let kept: BTreeSet<_> = handles.iter().flat_map(|h| &h.files).map(|f| f.path.clone()).collect();
                                let stale = objects(&storage, Some("shared")).await.into_iter().filter(|p| !kept.contains(p));
                                delete(&storage, stale.collect::<Vec<_>>()).await;
                                if let Outcome::Confirmed = outcome {
                                    for b in backends.iter_mut() {
                                        b.notify_checkpoint_complete(id);
                                    }
                                }
                                completed = Some((handles, frozen));
                            }
                            Outcome::AbortedDuring => unreachable!(),
                        }
                    }
                    Op::Restore { parallelism } => {
                        let Some((handles, frozen)) = &completed else { continue };
                        backends = Vec::new();
                        for idx in 0..parallelism {
                            backends.push(HeapKeyedStateBackend::restore(identity(MAX_P, parallelism, idx), config.clone(), &storage, handles, RestoreMode::Claim).await.unwrap());
                        }
                        prop_assert_eq!(&observe(&mut backends), frozen);
                        model = frozen.clone();
                    }
                    Op::Write(ref write) => apply(&mut backends, &mut model, write),
                    Op::DropList => drop_list(&mut backends, &mut model),
                }
            }
            prop_assert_eq!(&observe(&mut backends), &model);
            if let Some((handles, frozen)) = &completed {
                let mut restored = vec![HeapKeyedStateBackend::restore(identity(MAX_P, 1, 0), config.clone(), &storage, handles, RestoreMode::Claim).await.unwrap()];
                prop_assert_eq!(&observe(&mut restored), frozen);
            }
            Ok(())
        })?;
    }
}
