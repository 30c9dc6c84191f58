//! Property test of heap incremental checkpoints: random writes (values, list appends, map puts and
//! removes, `drop_state`) interleaved with checkpoints that are confirmed, aborted after or during their
//! asynchronous phase, or completed without the backends hearing of it (a lost notification), and restores
//! at 1, 2 or 3 subtasks. Storage keeps only what the coordinator would: completing a checkpoint deletes
//! every file it does not reference (the older checkpoint is subsumed), aborting one deletes the files it
//! uploaded. Every restore reads the latest completed checkpoint and must equal the `BTreeMap` model as
//! frozen at that checkpoint's synchronous phase.

use std::collections::{BTreeMap, BTreeSet};

use crate::common::*;
use object_store::ObjectStoreExt;
use proptest::prelude::*;
use statebackend::heap::{HeapConfig, HeapKeyedStateBackend};
use statebackend::key_group::assign_to_key_group;
use statebackend::*;

const MAX_P: u32 = 32;
const KEYS: u64 = 48;

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
    Put {
        key: u64,
        ns: u8,
        value: u32,
    },
    Clear {
        key: u64,
        ns: u8,
    },
    ListAdd {
        key: u64,
        value: u32,
    },
    MapPut {
        key: u64,
        uk: u8,
        value: u32,
    },
    MapRemove {
        key: u64,
        uk: u8,
    },
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
    let key = 0u64..KEYS;
    let outcome = prop_oneof![
        5 => Just(Outcome::Confirmed),
        1 => Just(Outcome::AbortedAfter),
        1 => Just(Outcome::AbortedDuring),
        1 => Just(Outcome::Lost),
    ];
    prop_oneof![
        6 => (key.clone(), 0u8..3, any::<u32>()).prop_map(|(key, ns, value)| Op::Put { key, ns, value }),
        2 => (key.clone(), 0u8..3).prop_map(|(key, ns)| Op::Clear { key, ns }),
        2 => (key.clone(), any::<u32>()).prop_map(|(key, value)| Op::ListAdd { key, value }),
        2 => (key.clone(), 0u8..4, any::<u32>()).prop_map(|(key, uk, value)| Op::MapPut { key, uk, value }),
        1 => (key, 0u8..4).prop_map(|(key, uk)| Op::MapRemove { key, uk }),
        1 => Just(Op::DropList),
        4 => (outcome, 0u8..8).prop_map(|(outcome, writes_during_async)| Op::Checkpoint { outcome, writes_during_async }),
        1 => (1u32..=3).prop_map(|parallelism| Op::Restore { parallelism }),
    ]
}

#[derive(Default, Clone, PartialEq, Debug)]
struct Model {
    values: BTreeMap<(u64, u8), u32>,
    lists: BTreeMap<u64, Vec<u32>>,
    maps: BTreeMap<(u64, u8), u32>,
}

struct States {
    value: ValueState<u8, u32>,
    list: ListState<VoidNamespace, u32>,
    map: MapState<VoidNamespace, u8, u32>,
}

fn states(b: &mut HeapKeyedStateBackend<u64>) -> States {
    States {
        value: b.value_state(&ValueStateDescriptor::new("value")).unwrap(),
        list: b.list_state(&ListStateDescriptor::new("list")).unwrap(),
        map: b.map_state(&MapStateDescriptor::new("map")).unwrap(),
    }
}

fn apply(backends: &mut [HeapKeyedStateBackend<u64>], model: &mut Model, op: &Op) {
    let p = backends.len() as u32;
    let key = match op {
        Op::Put { key, .. }
        | Op::Clear { key, .. }
        | Op::ListAdd { key, .. }
        | Op::MapPut { key, .. }
        | Op::MapRemove { key, .. } => *key,
        Op::DropList => {
            for b in backends.iter_mut() {
                b.drop_state("list").unwrap();
            }
            model.lists.clear();
            return;
        }
        Op::Checkpoint { .. } | Op::Restore { .. } => return,
    };
    let b = &mut backends[owner(&key, MAX_P, p)];
    let s = states(b);
    b.set_current_key(key).unwrap();
    let v = VoidNamespace;
    match *op {
        Op::Put { ns, value, .. } => {
            s.value.update(b, &ns, value).unwrap();
            model.values.insert((key, ns), value);
        }
        Op::Clear { ns, .. } => {
            s.value.clear(b, &ns).unwrap();
            model.values.remove(&(key, ns));
        }
        Op::ListAdd { value, .. } => {
            s.list.add(b, &v, value).unwrap();
            model.lists.entry(key).or_default().push(value);
        }
        Op::MapPut { uk, value, .. } => {
            s.map.put(b, &v, uk, value).unwrap();
            model.maps.insert((key, uk), value);
        }
        Op::MapRemove { uk, .. } => {
            s.map.remove(b, &v, &uk).unwrap();
            model.maps.remove(&(key, uk));
        }
        _ => unreachable!(),
    }
}

fn observe(backends: &mut [HeapKeyedStateBackend<u64>]) -> Model {
    let mut m = Model::default();
    let v = VoidNamespace;
    for b in backends.iter_mut() {
        let s = states(b);
        for key in 0..KEYS {
            if !b
                .key_group_range()
                .contains(assign_to_key_group(&key.to_be_bytes(), MAX_P).unwrap())
            {
                continue;
            }
            b.set_current_key(key).unwrap();
            for ns in 0..3u8 {
                if let Some(x) = s.value.value(b, &ns).unwrap() {
                    m.values.insert((key, ns), x);
                }
            }
            let list = s.list.get(b, &v).unwrap();
            if !list.is_empty() {
                m.lists.insert(key, list);
            }
            for (uk, x) in s.map.entries(b, &v).unwrap() {
                m.maps.insert((key, uk), x);
            }
        }
    }
    m
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
                            apply(&mut backends, &mut model, &Op::Put { key: k, ns: 1, value: 9 });
                            apply(&mut backends, &mut model, &Op::MapRemove { key: k, uk: 1 });
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
                    _ => apply(&mut backends, &mut model, op),
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
