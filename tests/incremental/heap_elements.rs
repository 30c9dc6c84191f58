//! List and map state in heap incremental checkpoints: a list that saw appends only since the confirmed
//! checkpoint is uploaded as its new elements (an append record), a map that saw user-key puts and
//! removes only as those user keys (a patch record), and every restore of the chain, at any
//! parallelism, puts the lists and maps back whole.

use std::collections::BTreeMap;

use crate::common::*;
use crate::heap::{Heap, heaps, incremental, restore_at, writers};
use statebackend::*;

fn events() -> ListStateDescriptor<VoidNamespace, u64> {
    ListStateDescriptor::new("events")
}

/// Appends `values` to the list of every key of `keys` on whichever backend owns it.
fn append(backends: &mut [Heap], keys: impl IntoIterator<Item = u64> + Clone, values: &[u64]) {
    for b in backends.iter_mut() {
        let s = b.list_state(&events()).unwrap();
        for k in keys.clone() {
            if b.set_current_key(k).is_ok() {
                s.add_all(b, &VoidNamespace, values.to_vec()).unwrap();
            }
        }
    }
}

/// Every list of `backends`, by key.
fn lists(backends: &mut [Heap]) -> BTreeMap<u64, Vec<u64>> {
    let mut out = BTreeMap::new();
    for b in backends.iter_mut() {
        let s = b.list_state(&events()).unwrap();
        for k in 0..2_000 {
            if b.set_current_key(k).is_ok() {
                let list = s.get(b, &VoidNamespace).unwrap();
                if !list.is_empty() {
                    out.insert(k, list);
                }
            }
        }
    }
    out
}

/// `restored` equals `expected`; a failure names the first key that differs, not 2,000 lists.
fn assert_same(
    restored: &BTreeMap<u64, Vec<u64>>,
    expected: &BTreeMap<u64, Vec<u64>>,
    parallelism: u32,
) {
    let keys = restored.keys().chain(expected.keys());
    if let Some(k) = keys.copied().find(|k| restored.get(k) != expected.get(k)) {
        panic!(
            "at parallelism {parallelism}, key {k}: restored {:?}, expected {:?}",
            restored.get(&k),
            expected.get(&k)
        );
    }
}

#[test]
fn a_list_that_saw_appends_only_uploads_its_new_elements_and_restores_whole_at_any_parallelism() {
    runtime().block_on(async {
        let storage = CheckpointStorage::in_memory("heap-lists").unwrap();
        let config = incremental(10);
        let mut coord = coordinator(&storage, 1, 2).await;
        let mut b = heaps(2, &config);
        let fifty: Vec<u64> = (0..50).collect();
        append(&mut b, 0..2_000, &fifty);
        let s1 = checkpoint(&mut coord, &mut b).await;
        // 10% of the lists get one element: whole lists would be a tenth of the state, their new
        // elements are about 1/150 of it (a record of 50 elements is ~630 bytes, of one ~40).
        append(&mut b, 0..200, &[1_000]);
        let s2 = checkpoint(&mut coord, &mut b).await;
        assert!(
            s2.state_bytes * 100 < s1.state_bytes,
            "appends upload their elements only: {s2:?} after {s1:?}"
        );
        // Appends on top of appends, a list replaced, one cleared, one created: a chain of three files
        // whose restore merges records of every kind.
        append(&mut b, 100..300, &[2_000, 2_001]);
        for backend in b.iter_mut() {
            let s = backend.list_state(&events()).unwrap();
            for (k, update) in [(150, Some(vec![7])), (160, None)] {
                if backend.set_current_key(k).is_ok() {
                    match update {
                        Some(v) => s.update(backend, &VoidNamespace, v).unwrap(),
                        None => s.clear(backend, &VoidNamespace).unwrap(),
                    }
                }
            }
        }
        append(&mut b, [150, 160, 1_999], &[3_000]);
        checkpoint(&mut coord, &mut b).await;
        let meta = coord.store().latest().unwrap().clone();
        assert!(handles(&meta).iter().all(|h| writers(h) == [1, 2, 3]));
        let expected = lists(&mut b);
        assert_eq!(expected[&0], [fifty.clone(), vec![1_000]].concat());
        assert_eq!(expected[&150], vec![7, 3_000]);
        assert_eq!(expected[&160], vec![3_000]);
        assert_eq!(expected[&250], [fifty.clone(), vec![2_000, 2_001]].concat());
        assert_eq!(expected[&1_999], [fifty, vec![3_000]].concat());
        // Parallelism 2 last: its CLAIM restore continues the chain, and checkpoint 3, subsumed, loses
        // the files the continued chain no longer lists.
        for parallelism in [1, 3, 2] {
            let mut restored = restore_at(&storage, &meta, parallelism, &config).await;
            assert_same(&lists(&mut restored), &expected, parallelism);
            // A CLAIM restore at the same parallelism continues the chain: appends after it too.
            if parallelism == 2 {
                append(&mut restored, 0..10, &[4_000]);
                let s4 = checkpoint(&mut coord, &mut restored).await;
                assert_eq!(s4.files_uploaded, 2, "one delta per subtask");
                let meta = coord.store().latest().unwrap().clone();
                let mut again = restore_at(&storage, &meta, 3, &config).await;
                assert_same(&lists(&mut again), &lists(&mut restored), 3);
            }
        }
    });
}

fn attributes() -> MapStateDescriptor<VoidNamespace, u32, u64> {
    MapStateDescriptor::new("attributes")
}

/// Runs `f` with the map state on the backend that owns each key of `keys`.
fn with_maps(
    backends: &mut [Heap],
    keys: impl IntoIterator<Item = u64> + Clone,
    mut f: impl FnMut(&mut Heap, &MapState<VoidNamespace, u32, u64>, u64),
) {
    for b in backends.iter_mut() {
        let s = b.map_state(&attributes()).unwrap();
        for k in keys.clone() {
            if b.set_current_key(k).is_ok() {
                f(b, &s, k);
            }
        }
    }
}

/// Every map of `backends`, by key.
fn maps(backends: &mut [Heap]) -> BTreeMap<u64, BTreeMap<u32, u64>> {
    let mut out = BTreeMap::new();
    with_maps(backends, 0..2_000, |b, s, k| {
        let map: BTreeMap<u32, u64> = s.entries(b, &VoidNamespace).unwrap().into_iter().collect();
        if !map.is_empty() {
            out.insert(k, map);
        }
    });
    out
}

#[test]
fn a_map_that_saw_user_key_changes_only_uploads_those_keys_and_restores_whole_at_any_parallelism() {
    runtime().block_on(async {
        let storage = CheckpointStorage::in_memory("heap-maps").unwrap();
        let config = incremental(10);
        let mut coord = coordinator(&storage, 1, 2).await;
        let mut b = heaps(2, &config);
        with_maps(&mut b, 0..2_000, |b, s, k| {
            for uk in 0..50 {
                s.put(b, &VoidNamespace, uk, k * 100 + u64::from(uk))
                    .unwrap();
            }
        });
        let s1 = checkpoint(&mut coord, &mut b).await;
        // 10% of the maps get one user key changed and one new: a patch of two entries each.
        with_maps(&mut b, 0..200, |b, s, k| {
            s.put(b, &VoidNamespace, 7, k).unwrap();
            s.put(b, &VoidNamespace, 1_000, k).unwrap();
        });
        let s2 = checkpoint(&mut coord, &mut b).await;
        assert!(
            s2.state_bytes * 100 < s1.state_bytes,
            "user-key changes upload those keys only: {s2:?} after {s1:?}"
        );
        // Patches on patches, user keys removed (one map down to nothing), a map cleared and written
        // anew, one put whole: a chain of three files whose restore merges records of every kind.
        with_maps(&mut b, 100..300, |b, s, k| {
            s.remove(b, &VoidNamespace, &7).unwrap();
            s.put(b, &VoidNamespace, 2_000, k).unwrap();
        });
        with_maps(&mut b, [150], |b, s, _| {
            for uk in (0..50).chain([1_000, 2_000]) {
                s.remove(b, &VoidNamespace, &uk).unwrap();
            }
        });
        with_maps(&mut b, [160], |b, s, _| {
            s.clear(b, &VoidNamespace).unwrap();
            s.put(b, &VoidNamespace, 3, 3).unwrap();
        });
        with_maps(&mut b, [170], |b, s, _| {
            s.put_all(b, &VoidNamespace, vec![(4, 4), (5, 5)]).unwrap();
        });
        checkpoint(&mut coord, &mut b).await;
        let meta = coord.store().latest().unwrap().clone();
        assert!(handles(&meta).iter().all(|h| writers(h) == [1, 2, 3]));
        let expected = maps(&mut b);
        assert!(
            !expected.contains_key(&150),
            "a map whose user keys were all removed is gone"
        );
        assert_eq!(expected[&160], BTreeMap::from([(3, 3)]));
        assert_eq!(expected[&250].get(&7), None);
        assert_eq!(expected[&250].get(&2_000), Some(&250));
        assert_eq!(expected[&50][&7], 50);
        assert_eq!(expected[&50].len(), 51);
        for parallelism in [1, 2, 3] {
            let mut restored = restore_at(&storage, &meta, parallelism, &config).await;
            let restored = maps(&mut restored);
            let differs = (0..2_000).find(|k| restored.get(k) != expected.get(k));
            assert_eq!(differs, None, "at parallelism {parallelism}");
        }
    });
}

/// The lists and maps the property test below expects, by key.
type ElementModel = (BTreeMap<u64, Vec<u64>>, BTreeMap<u64, BTreeMap<u32, u64>>);

/// A write of the property test below, on one of 8 keys.
#[derive(Debug, Clone)]
enum ElementOp {
    Append(u64, u64),
    Put(u64, u32, u64),
    Remove(u64, u32),
    Checkpoint,
}

fn element_op() -> impl proptest::strategy::Strategy<Value = ElementOp> {
    use proptest::prelude::*;
    prop_oneof![
        3 => (0..8u64, any::<u64>()).prop_map(|(k, v)| ElementOp::Append(k, v)),
        3 => (0..8u64, 0..3u32, any::<u64>()).prop_map(|(k, u, v)| ElementOp::Put(k, u, v)),
        2 => (0..8u64, 0..3u32).prop_map(|(k, u)| ElementOp::Remove(k, u)),
        2 => Just(ElementOp::Checkpoint),
    ]
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig { cases: 48, ..Default::default() })]
    /// Few keys changed in many deltas (4,000 ballast keys keep every checkpoint a delta up to the
    /// chain's limit): a restore of the last checkpoint, at 1 or 2 subtasks, equals the model of lists and
    /// maps as the checkpoint froze them.
    #[test]
    fn appends_and_patches_over_many_deltas_restore_as_the_model(
        ops in proptest::collection::vec(element_op(), 1..120),
        parallelism in 1u32..=2,
    ) {
        runtime().block_on(async {
            let storage = CheckpointStorage::in_memory("heap-elements-model").unwrap();
            let config = incremental(10);
            let mut coord = coordinator(&storage, 1, 1).await;
            let mut b = heaps(1, &config);
            fill(&mut b[0], 1_000..5_000, 1);
            let mut model = ElementModel::default();
            let mut frozen = None;
            for op in &ops {
                let backend = &mut b[0];
                match *op {
                    ElementOp::Append(k, v) => {
                        let s = backend.list_state(&events()).unwrap();
                        backend.set_current_key(k).unwrap();
                        s.add(backend, &VoidNamespace, v).unwrap();
                        model.0.entry(k).or_default().push(v);
                    }
                    ElementOp::Put(k, u, v) => with_maps(&mut b, [k], |b, s, _| {
                        s.put(b, &VoidNamespace, u, v).unwrap();
                        model.1.entry(k).or_default().insert(u, v);
                    }),
                    ElementOp::Remove(k, u) => with_maps(&mut b, [k], |b, s, _| {
                        s.remove(b, &VoidNamespace, &u).unwrap();
                        if let Some(m) = model.1.get_mut(&k) {
                            m.remove(&u);
                            if m.is_empty() {
                                model.1.remove(&k);
                            }
                        }
                    }),
                    ElementOp::Checkpoint => {
                        checkpoint(&mut coord, &mut b).await;
                        frozen = Some(model.clone());
                    }
                }
            }
            let Some(frozen) = frozen else { return Ok(()) };
            let meta = coord.store().latest().unwrap().clone();
            let mut restored = restore_at(&storage, &meta, parallelism, &config).await;
            let lists: BTreeMap<u64, Vec<u64>> = lists(&mut restored).into_iter().filter(|(k, _)| *k < 8).collect();
            let maps: BTreeMap<u64, BTreeMap<u32, u64>> = maps(&mut restored).into_iter().filter(|(k, _)| *k < 8).collect();
            proptest::prop_assert_eq!((lists, maps), frozen);
            Ok(())
        })?;
    }
}
