//! Property test: random operations on value, list and map state, interleaved with checkpoints and
//! restores at parallelism 1 or 2, checked against a `BTreeMap` model after every restore.

use std::collections::BTreeMap;

use crate::common::*;
use proptest::prelude::*;
use statebackend::heap::{HeapConfig, HeapKeyedStateBackend};
use statebackend::key_group::assign_to_key_group;
use statebackend::*;

pub(crate) const MAX_P: u32 = 32;

#[derive(Debug, Clone)]
pub(crate) enum Op {
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
    /// Snapshot, then write more before the asynchronous phase runs, then restore at `parallelism`.
    CheckpointRestore {
        parallelism: u32,
        writes_during_async: u8,
    },
}

pub(crate) fn op() -> impl Strategy<Value = Op> {
    let key = 0u64..64;
    prop_oneof![
        4 => (key.clone(), 0u8..3, any::<u32>()).prop_map(|(key, ns, value)| Op::Put { key, ns, value }),
        1 => (key.clone(), 0u8..3).prop_map(|(key, ns)| Op::Clear { key, ns }),
        2 => (key.clone(), any::<u32>()).prop_map(|(key, value)| Op::ListAdd { key, value }),
        2 => (key.clone(), 0u8..4, any::<u32>()).prop_map(|(key, uk, value)| Op::MapPut { key, uk, value }),
        1 => (key, 0u8..4).prop_map(|(key, uk)| Op::MapRemove { key, uk }),
        1 => (1u32..=2, 0u8..20).prop_map(|(parallelism, writes_during_async)| Op::CheckpointRestore { parallelism, writes_during_async }),
    ]
}

#[derive(Default, Clone, PartialEq, Debug)]
pub(crate) struct Model {
    values: BTreeMap<(u64, u8), u32>,
    pub(crate) lists: BTreeMap<u64, Vec<u32>>,
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

pub(crate) fn apply(backends: &mut [HeapKeyedStateBackend<u64>], model: &mut Model, op: &Op) {
    let p = backends.len() as u32;
    let key = match op {
        Op::Put { key, .. }
        | Op::Clear { key, .. }
        | Op::ListAdd { key, .. }
        | Op::MapPut { key, .. }
        | Op::MapRemove { key, .. } => *key,
        Op::CheckpointRestore { .. } => return,
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
        Op::CheckpointRestore { .. } => unreachable!(),
    }
}

pub(crate) fn observe(backends: &mut [HeapKeyedStateBackend<u64>]) -> Model {
    let mut m = Model::default();
    let v = VoidNamespace;
    for b in backends.iter_mut() {
        let s = states(b);
        for key in 0..64u64 {
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

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]
    #[test]
    fn checkpoint_restore_cycles_match_the_model(ops in proptest::collection::vec(op(), 1..200)) {
        let rt = runtime();
        rt.block_on(async {
            let storage = CheckpointStorage::in_memory("model").unwrap();
            // Every checkpoint is also kept locally; every other restore reads the local copies (and
            // must read nothing from storage), the others find them gone (another machine) and read
            // storage.
            let local_dir = tempfile::tempdir().unwrap();
            let with_local = HeapConfig { local_recovery_dir: Some(local_dir.path().to_path_buf()), ..HeapConfig::default() };
            let mut backends = vec![HeapKeyedStateBackend::<u64>::new(identity(MAX_P, 1, 0), with_local.clone()).unwrap()];
            let mut model = Model::default();
            for (i, op) in ops.iter().enumerate() {
                let Op::CheckpointRestore { parallelism, writes_during_async } = *op else {
                    apply(&mut backends, &mut model, op);
                    continue;
                };
                let id = i as u64 + 1;
                let pending: Vec<_> = backends.iter_mut().map(|b| b.snapshot(id, &storage).unwrap()).collect();
                let frozen = model.clone();
                // Writes after the synchronous phase must not reach the snapshot.
                let mut scratch = model.clone();
                for k in 0..u64::from(writes_during_async) {
                    apply(&mut backends, &mut scratch, &Op::Put { key: k, ns: 0, value: 7 });
                    apply(&mut backends, &mut scratch, &Op::ListAdd { key: k, value: 7 });
                }
                let mut handles = Vec::new();
                let mut sizes = statebackend::snapshot::StateSizes::default();
                for p in pending {
                    let result = p.run().await.unwrap();
                    sizes.merge(&result.metrics.sizes);
                    handles.push(result.handle);
                }
                // The entries summed over the subtasks are the frozen model's, exactly (a state no
                // operation registered yet is in no snapshot); their bytes are exact in a full
                // checkpoint, and may be estimated in a delta of an incremental chain.
                let full = handles.iter().flat_map(|h| &h.files).all(|f| f.created_by == id);
                let entries = |name: &str| {
                    sizes.state(name).map_or((0, true), |s| (s.entries, s.exact || !full))
                };
                prop_assert_eq!(entries("value"), (frozen.values.len() as u64, true));
                prop_assert_eq!(entries("list"), (frozen.lists.len() as u64, true));
                let map_keys = frozen.maps.keys().map(|(k, _)| k).collect::<std::collections::BTreeSet<_>>();
                prop_assert_eq!(entries("map"), (map_keys.len() as u64, true));
                backends = Vec::new();
                let local = id.is_multiple_of(2);
                if !local {
                    for entry in std::fs::read_dir(local_dir.path()).unwrap() {
                        std::fs::remove_dir_all(entry.unwrap().path()).unwrap();
                    }
                }
                for idx in 0..parallelism {
                    let restored = HeapKeyedStateBackend::restore(identity(MAX_P, parallelism, idx), with_local.clone(), &storage, &handles, RestoreMode::Claim).await.unwrap();
                    let sources = restored.restore_sources();
                    // With local copies, every file this checkpoint wrote is read locally; a chain's
                    // earlier files only when the copy of their checkpoint was still there to link them
                    // from (it is gone after a restore "on another machine").
                    let new_files: Vec<&str> = handles.iter().flat_map(|h| &h.files).filter(|f| f.created_by == id).map(|f| f.path.as_str()).collect();
                    let new_remote = sources.fallbacks.iter().filter(|why| new_files.iter().any(|p| why.starts_with(p))).count();
                    match local {
                        true => prop_assert_eq!(new_remote, 0, "{:?}", sources),
                        false => prop_assert_eq!(sources.local_files, 0, "{:?}", sources),
                    }
                    prop_assert_eq!(sources.fallbacks.len() as u32, sources.remote_files, "{:?}", sources);
                    backends.push(restored);
                }
                prop_assert_eq!(&observe(&mut backends), &frozen);
                model = frozen;
            }
            prop_assert_eq!(observe(&mut backends), model);
            Ok(())
        })?;
    }
}
