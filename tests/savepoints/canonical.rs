//! Canonical savepoints (`docs/savepoints.md`): written by either backend, restored by either backend at
//! any parallelism, every state kind and namespace checked against a model; self-contained (restorable with
//! every checkpoint gone); never an incremental base.

use std::collections::BTreeMap;

use crate::common::{backend_config, backend_kinds, identity};
use statebackend::checkpoint::Discarded;
use statebackend::key_group::assign_to_key_group;
use statebackend::snapshot::{FileScope, HandleFormat, SnapshotKind};
use statebackend::*;

struct Avg;
impl AggregateFunction<u64, (u64, u64), f64> for Avg {
    fn create_accumulator(&self) -> (u64, u64) {
        (0, 0)
    }
    fn add(&self, value: &u64, acc: &mut (u64, u64)) {
        acc.0 += value;
        acc.1 += 1;
    }
    fn get_result(&self, acc: &(u64, u64)) -> f64 {
        acc.0 as f64 / acc.1 as f64
    }
    fn merge(&self, a: (u64, u64), b: (u64, u64)) -> (u64, u64) {
        (a.0 + b.0, a.1 + b.1)
    }
}

/// The state of every kind the tests use, by `(key, namespace)`.
#[derive(Debug, Default, Clone, PartialEq)]
struct Model {
    values: BTreeMap<(u64, u32), u64>,
    lists: BTreeMap<(u64, u32), Vec<String>>,
    maps: BTreeMap<(u64, u32), BTreeMap<String, u64>>,
    sums: BTreeMap<(u64, u32), u64>,
    /// Aggregating state in the void namespace: (sum, count) per key.
    avgs: BTreeMap<u64, (u64, u64)>,
}

impl Model {
    /// The part of the model whose keys `owns` accepts.
    fn owned(&self, owns: impl Fn(u64) -> bool) -> Model {
        Model {
            values: filter(&self.values, |k| owns(k.0)),
            lists: filter(&self.lists, |k| owns(k.0)),
            maps: filter(&self.maps, |k| owns(k.0)),
            sums: filter(&self.sums, |k| owns(k.0)),
            avgs: filter(&self.avgs, |k| owns(*k)),
        }
    }

    fn merge(&mut self, other: Model) {
        self.values.extend(other.values);
        self.lists.extend(other.lists);
        self.maps.extend(other.maps);
        self.sums.extend(other.sums);
        self.avgs.extend(other.avgs);
    }
}

fn filter<K: Ord + Clone, V: Clone>(
    m: &BTreeMap<K, V>,
    keep: impl Fn(&K) -> bool,
) -> BTreeMap<K, V> {
    m.iter()
        .filter(|(k, _)| keep(k))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

struct States {
    v: ValueState<u32, u64>,
    l: ListState<u32, String>,
    m: MapState<u32, String, u64>,
    r: ReducingState<u32, u64>,
    a: AggregatingState<VoidNamespace, u64, (u64, u64), f64>,
}

fn states<B: KeyedStateBackend<u64>>(b: &mut B) -> States {
    States {
        v: b.value_state(&ValueStateDescriptor::new("v")).unwrap(),
        l: b.list_state(&ListStateDescriptor::new("l")).unwrap(),
        m: b.map_state(&MapStateDescriptor::new("m")).unwrap(),
        r: b.reducing_state(&ReducingStateDescriptor::new("r", |a: &u64, b: &u64| a + b))
            .unwrap(),
        a: b.aggregating_state(&AggregatingStateDescriptor::new("a", Avg))
            .unwrap(),
    }
}

/// A xorshift stream: the same operations in every run.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// `ops` random operations on keys below 400 that `b` owns, mirrored in `model`.
fn apply<B: KeyedStateBackend<u64>>(b: &mut B, model: &mut Model, rng: &mut Rng, ops: usize) {
    let s = states(b);
    for _ in 0..ops {
        let key = rng.next() % 400;
        if b.set_current_key(key).is_err() {
            continue;
        }
        let ns = (rng.next() % 3) as u32;
        let x = rng.next() % 1000;
        match rng.next() % 7 {
            0 => {
                s.v.update(b, &ns, x).unwrap();
                model.values.insert((key, ns), x);
            }
            1 => {
                s.l.add(b, &ns, format!("e{x}")).unwrap();
                model
                    .lists
                    .entry((key, ns))
                    .or_default()
                    .push(format!("e{x}"));
            }
            2 => {
                s.m.put(b, &ns, format!("u{}", x % 10), x).unwrap();
                model
                    .maps
                    .entry((key, ns))
                    .or_default()
                    .insert(format!("u{}", x % 10), x);
            }
            3 => {
                s.r.add(b, &ns, x).unwrap();
                *model.sums.entry((key, ns)).or_default() += x;
            }
            4 => {
                s.a.add(b, &VoidNamespace, &x).unwrap();
                let e = model.avgs.entry(key).or_default();
                e.0 += x;
                e.1 += 1;
            }
            5 => {
                s.v.clear(b, &ns).unwrap();
                model.values.remove(&(key, ns));
                s.m.remove(b, &ns, &format!("u{}", x % 10)).unwrap();
                if let Some(m) = model.maps.get_mut(&(key, ns)) {
                    m.remove(&format!("u{}", x % 10));
                    if m.is_empty() {
                        model.maps.remove(&(key, ns));
                    }
                }
            }
            _ => {
                s.l.clear(b, &ns).unwrap();
                model.lists.remove(&(key, ns));
            }
        }
    }
}

/// Everything `b` holds of the five states.
fn observe<B: KeyedStateBackend<u64>>(b: &mut B) -> Model {
    let s = states(b);
    let mut out = Model::default();
    for (k, ns) in s.v.keys_and_namespaces(b).unwrap() {
        b.set_current_key(k).unwrap();
        out.values
            .insert((k, ns), s.v.value(b, &ns).unwrap().unwrap());
    }
    for (k, ns) in s.l.keys_and_namespaces(b).unwrap() {
        b.set_current_key(k).unwrap();
        let list = s.l.get(b, &ns).unwrap();
        if !list.is_empty() {
            out.lists.insert((k, ns), list);
        }
    }
    for (k, ns) in s.m.keys_and_namespaces(b).unwrap() {
        b.set_current_key(k).unwrap();
        let entries: BTreeMap<String, u64> = s.m.entries(b, &ns).unwrap().into_iter().collect();
        if !entries.is_empty() {
            out.maps.insert((k, ns), entries);
        }
    }
    for (k, ns) in s.r.keys_and_namespaces(b).unwrap() {
        b.set_current_key(k).unwrap();
        out.sums.insert((k, ns), s.r.get(b, &ns).unwrap().unwrap());
    }
    let avg_id = s.a.id();
    for (k, _) in b.keys_and_namespaces::<VoidNamespace>(avg_id).unwrap() {
        b.set_current_key(k).unwrap();
        let acc = b
            .value_get::<VoidNamespace, (u64, u64)>(avg_id, &VoidNamespace)
            .unwrap();
        out.avgs.insert(k, acc.unwrap());
    }
    out
}

/// Canonical savepoint `id` of every backend into `storage`: the handles.
async fn savepoint_all(
    backends: &mut [StateBackend<u64>],
    id: u64,
    storage: &CheckpointStorage,
) -> Vec<KeyedStateHandle> {
    let mut handles = Vec::new();
    for b in backends {
        let pending = b
            .savepoint(id, storage, SavepointFormat::Canonical)
            .unwrap();
        let result = pending.run().await.unwrap();
        assert_eq!(result.handle.format, HandleFormat::KeyedFile);
        assert!(
            result
                .handle
                .files
                .iter()
                .all(|f| f.path.starts_with(&format!("savepoints/sp-{id}/"))
                    && f.scope == FileScope::Private),
            "a savepoint's files are its own: {:?}",
            result.handle.files
        );
        handles.push(result.handle);
    }
    handles
}

/// `p` backends of `kind` restored from `handles`, each checked against its share of `model`.
async fn restore_all(
    kind: BackendKind,
    p: u32,
    dir: &std::path::Path,
    storage: &CheckpointStorage,
    handles: &[KeyedStateHandle],
    model: &Model,
) -> Vec<StateBackend<u64>> {
    let mut out = Vec::new();
    let mut union = Model::default();
    for i in 0..p {
        let cfg = backend_config(kind, dir);
        let mut b = StateBackend::<u64>::restore(
            &identity(128, p, i),
            &cfg,
            storage,
            handles,
            RestoreMode::NoClaim,
        )
        .await
        .unwrap_or_else(|e| panic!("restore of subtask {i} of {p} on {kind:?}: {e}"));
        let range = b.key_group_range();
        let seen = observe(&mut b);
        let owns = |k: u64| range.contains(assign_to_key_group(&k.to_be_bytes(), 128).unwrap());
        assert_eq!(
            seen,
            model.owned(owns),
            "subtask {i} of {p} on {kind:?} holds exactly its share"
        );
        union.merge(seen);
        out.push(b);
    }
    assert_eq!(&union, model, "the subtasks together hold everything");
    out
}

#[test]
fn heap_lsm_heap_round_trip_keeps_every_state_kind_and_namespace() {
    crate::common::runtime().block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let storage = CheckpointStorage::in_memory("job").unwrap();
        let kinds = backend_kinds();
        let other = *kinds.last().unwrap();
        let mut model = Model::default();
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let mut heap = vec![
            StateBackend::new(
                &identity(128, 1, 0),
                &backend_config(BackendKind::Heap, dir.path()),
            )
            .unwrap(),
        ];
        apply(&mut heap[0], &mut model, &mut rng, 3000);
        assert!(!model.lists.is_empty() && !model.maps.is_empty() && !model.avgs.is_empty());
        let handles = savepoint_all(&mut heap, 1, &storage).await;
        let mut there = restore_all(other, 1, dir.path(), &storage, &handles, &model).await;
        apply(&mut there[0], &mut model, &mut rng, 1000);
        let handles = savepoint_all(&mut there, 2, &storage).await;
        let back = restore_all(BackendKind::Heap, 1, dir.path(), &storage, &handles, &model).await;
        assert_eq!(back.len(), 1);
    });
}

#[test]
fn rescale_matrix_through_canonical_savepoints_across_backends() {
    crate::common::runtime().block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let mut id = 0;
        for (from_p, to_p) in [(1u32, 3u32), (3, 2), (4, 1)] {
            for from in backend_kinds() {
                for to in backend_kinds() {
                    id += 1;
                    let storage = CheckpointStorage::in_memory("job").unwrap();
                    let mut model = Model::default();
                    let mut rng = Rng(0x2545_f491_4f6c_dd1d ^ id);
                    let mut backends: Vec<_> = (0..from_p)
                        .map(|i| {
                            StateBackend::new(
                                &identity(128, from_p, i),
                                &backend_config(from, dir.path()),
                            )
                            .unwrap()
                        })
                        .collect();
                    for b in &mut backends {
                        apply(b, &mut model, &mut rng, 2000);
                    }
                    let handles = savepoint_all(&mut backends, id, &storage).await;
                    drop(backends);
                    restore_all(to, to_p, dir.path(), &storage, &handles, &model).await;
                }
            }
        }
    });
}

#[test]
fn a_canonical_savepoint_stays_restorable_after_every_checkpoint_is_deleted() {
    crate::common::runtime().block_on(async {
        for kind in backend_kinds() {
            let dir = tempfile::tempdir().unwrap();
            let storage = CheckpointStorage::in_memory("job").unwrap();
            let mut model = Model::default();
            let mut rng = Rng(77);
            let mut b = vec![
                StateBackend::new(&identity(128, 1, 0), &backend_config(kind, dir.path())).unwrap(),
            ];
            for id in 1..=3 {
                apply(&mut b[0], &mut model, &mut rng, 500);
                b[0].snapshot(id, &storage).unwrap().run().await.unwrap();
                b[0].notify_checkpoint_complete(id);
            }
            let handles = savepoint_all(&mut b, 4, &storage).await;
            // A completion notified for the savepoint's id must not make it a base.
            b[0].notify_checkpoint_complete(4);
            apply(&mut b[0], &mut model.clone(), &mut rng, 10);
            let next = b[0].snapshot(5, &storage).unwrap().run().await.unwrap();
            assert!(
                next.handle
                    .files
                    .iter()
                    .all(|f| !f.path.starts_with("savepoints/")),
                "a checkpoint after a savepoint reuses none of its files ({kind:?})"
            );
            for path in crate::common::objects(&storage, None).await {
                if !path.starts_with("savepoints/") {
                    use object_store::ObjectStoreExt;
                    storage
                        .object_store()
                        .delete(&storage.path(&path))
                        .await
                        .unwrap();
                }
            }
            for to in backend_kinds() {
                restore_all(to, 2, dir.path(), &storage, &handles, &model).await;
            }
        }
    });
}

#[cfg(feature = "rocksdb")]
#[test]
fn the_heap_backend_refuses_a_native_lsm_savepoint_and_the_lsm_backend_restores_it() {
    crate::common::runtime().block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let storage = CheckpointStorage::in_memory("job").unwrap();
        let mut model = Model::default();
        let mut lsm = StateBackend::new(
            &identity(128, 1, 0),
            &backend_config(BackendKind::RocksDb, dir.path()),
        )
        .unwrap();
        apply(&mut lsm, &mut model, &mut Rng(5), 800);
        let native = lsm
            .savepoint(1, &storage, SavepointFormat::Native)
            .unwrap()
            .run()
            .await
            .unwrap()
            .handle;
        assert_eq!(native.format, HandleFormat::RocksIncremental);
        let handles = [native];
        let err = StateBackend::<u64>::restore(
            &identity(128, 1, 0),
            &backend_config(BackendKind::Heap, dir.path()),
            &storage,
            &handles,
            RestoreMode::NoClaim,
        )
        .await
        .err()
        .unwrap();
        assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{err}");
        assert!(err.to_string().contains("canonical"), "{err}");
        restore_all(
            BackendKind::RocksDb,
            1,
            dir.path(),
            &storage,
            &handles,
            &model,
        )
        .await;
    });
}

/// Savepoint `id` of every backend into `target`, acknowledged to `coordinator`: the last answer.
async fn savepoint_through(
    coordinator: &mut CheckpointCoordinator,
    backends: &mut [StateBackend<u64>],
    id: u64,
    target: &CheckpointStorage,
    format: SavepointFormat,
) -> Acknowledgement {
    let mut last = None;
    for (i, b) in backends.iter_mut().enumerate() {
        let result = b
            .savepoint(id, target, format)
            .unwrap()
            .run()
            .await
            .unwrap();
        let task = TaskStateSnapshot::keyed("op", i as u32, result.handle);
        last = Some(coordinator.acknowledge(id, task, None).await.unwrap());
    }
    last.unwrap()
}

#[test]
fn a_savepoint_completes_in_its_target_and_no_checkpoint_subsumes_or_deletes_it() {
    crate::common::runtime().block_on(async {
        for kind in backend_kinds() {
            for format in [SavepointFormat::Canonical, SavepointFormat::Native] {
                let dir = tempfile::tempdir().unwrap();
                let storage = CheckpointStorage::in_memory("job").unwrap();
                let target = CheckpointStorage::local(
                    dir.path().join("savepoints-of-the-user"),
                    "job",
                    &StorageConfig::default(),
                )
                .unwrap();
                let mut coordinator = crate::common::coordinator(&storage, 1, 2).await;
                let mut model = Model::default();
                let mut rng = Rng(31);
                let mut b: Vec<_> = (0..2)
                    .map(|i| {
                        StateBackend::new(&identity(128, 2, i), &backend_config(kind, dir.path()))
                            .unwrap()
                    })
                    .collect();
                let checkpoint =
                    async |b: &mut [StateBackend<u64>], c: &mut CheckpointCoordinator| {
                        let (id, results) = crate::common::snapshot_all(c, b).await;
                        for (i, r) in results.iter().enumerate() {
                            c.acknowledge(id, crate::common::ack(i as u32, r), None)
                                .await
                                .unwrap();
                        }
                        for x in b.iter_mut() {
                            x.notify_checkpoint_complete(id);
                        }
                        id
                    };
                for x in &mut b {
                    apply(x, &mut model, &mut rng, 400);
                }
                checkpoint(&mut b, &mut coordinator).await;
                let sp = coordinator.trigger_savepoint(&target).await.unwrap();
                let answer = savepoint_through(&mut coordinator, &mut b, sp, &target, format).await;
                assert!(
                    matches!(answer, Acknowledgement::Completed(_)),
                    "{answer:?}"
                );
                for x in &mut b {
                    // What an engine does on completion; the savepoint must not become a base.
                    x.notify_checkpoint_complete(sp);
                }
                let at_savepoint = model.clone();
                for _ in 0..3 {
                    for x in &mut b {
                        apply(x, &mut model, &mut rng, 100);
                    }
                    let id = checkpoint(&mut b, &mut coordinator).await;
                    assert!(id > sp, "ids continue above the savepoint's");
                }
                assert!(
                    coordinator
                        .store()
                        .checkpoints()
                        .all(|c| c.checkpoint_id != sp)
                );
                coordinator
                    .sweep_orphans(std::time::Duration::ZERO)
                    .await
                    .unwrap();
                let meta = target.read_savepoint_metadata(sp).await.unwrap();
                assert_eq!(meta.kind, SnapshotKind::Savepoint);
                assert!(
                    storage.read_savepoint_metadata(sp).await.is_err(),
                    "written to the target only"
                );
                crate::common::assert_retained_files_intact(&coordinator, true).await;
                let handles = meta.keyed_handles("op");
                let restore_kinds =
                    if format == SavepointFormat::Native && kind == BackendKind::RocksDb {
                        vec![BackendKind::RocksDb]
                    } else {
                        backend_kinds()
                    };
                for to in restore_kinds {
                    restore_all(to, 3, dir.path(), &target, &handles, &at_savepoint).await;
                }
            }
        }
    });
}

#[test]
fn an_aborted_savepoint_leaves_nothing_in_its_target_and_a_late_acknowledgement_cleans_up_there() {
    crate::common::runtime().block_on(async {
        for kind in backend_kinds() {
            let dir = tempfile::tempdir().unwrap();
            let storage = CheckpointStorage::in_memory("job").unwrap();
            let target = CheckpointStorage::in_memory("target").unwrap();
            let mut coordinator = crate::common::coordinator(&storage, 1, 2).await;
            let mut b: Vec<_> = (0..2)
                .map(|i| {
                    StateBackend::new(&identity(128, 2, i), &backend_config(kind, dir.path()))
                        .unwrap()
                })
                .collect();
            for x in &mut b {
                apply(x, &mut Model::default(), &mut Rng(3), 300);
            }
            let sp = coordinator.trigger_savepoint(&target).await.unwrap();
            let first = b[0]
                .savepoint(sp, &target, SavepointFormat::Canonical)
                .unwrap()
                .run()
                .await
                .unwrap();
            let answer = coordinator
                .acknowledge(sp, TaskStateSnapshot::keyed("op", 0, first.handle), None)
                .await
                .unwrap();
            assert!(matches!(answer, Acknowledgement::Pending { remaining: 1 }));
            coordinator.abort(sp).await.unwrap();
            assert!(
                crate::common::objects(&target, None).await.is_empty(),
                "the aborted savepoint's directory is gone from the target ({kind:?})"
            );
            // The other task's upload ends after the abort.
            let late = b[1]
                .savepoint(sp, &target, SavepointFormat::Canonical)
                .unwrap()
                .run()
                .await
                .unwrap();
            assert_eq!(
                crate::common::objects(&target, None).await,
                vec![late.handle.files[0].path.clone()]
            );
            let answer = coordinator
                .acknowledge(sp, TaskStateSnapshot::keyed("op", 1, late.handle), None)
                .await
                .unwrap();
            assert_eq!(answer, Acknowledgement::Discarded(Discarded::Aborted));
            assert!(
                crate::common::objects(&target, None).await.is_empty(),
                "late upload deleted"
            );
        }
    });
}

#[test]
fn checkpoint_handles_are_declined_as_a_savepoint() {
    crate::common::runtime().block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let storage = CheckpointStorage::in_memory("job").unwrap();
        let mut coordinator = crate::common::coordinator(&storage, 1, 1).await;
        let mut b =
            StateBackend::new(&identity(128, 1, 0), &backend_config(BackendKind::Heap, dir.path())).unwrap();
        apply(&mut b, &mut Model::default(), &mut Rng(9), 100);
        let sp = coordinator.trigger_savepoint(&storage).await.unwrap();
        let result = b.snapshot(sp, &storage).unwrap().run().await.unwrap();
        let answer = coordinator
            .acknowledge(sp, crate::common::ack(0, &result), None)
            .await
            .unwrap();
        assert!(
            matches!(&answer, Acknowledgement::Declined(Declined::Inconsistent(why)) if why.contains("savepoint")),
            "{answer:?}"
        );
        assert!(storage.read_savepoint_metadata(sp).await.is_err());
    });
}
