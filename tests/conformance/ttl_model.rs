//! Property test of state TTL: random writes of value, list and map state and clock moves, interleaved
//! with checkpoints, restores at 1, 2 or 3 subtasks and canonical savepoints that switch the backend,
//! checked against a model of `(value, last write)` after every step: no read path (value, list, map
//! entries, keys with state) ever returns what has expired, and nothing live is lost.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use crate::common::*;
use proptest::prelude::*;
use statebackend::keyed::StateTtlConfig;
use statebackend::*;

const MAX_P: u32 = 32;
const TTL_MS: u64 = 100;
const KEYS: u64 = 24;

#[derive(Debug, Clone)]
enum Op {
    Put {
        key: u64,
        value: u32,
    },
    Clear {
        key: u64,
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
    /// The clock moves on (ms).
    Advance {
        ms: u64,
    },
    /// A checkpoint (or a canonical savepoint, which switches the backend), restored at `parallelism`.
    Restore {
        parallelism: u32,
        savepoint: bool,
    },
}

fn op() -> impl Strategy<Value = Op> {
    let key = 0..KEYS;
    prop_oneof![
        4 => (key.clone(), any::<u32>()).prop_map(|(key, value)| Op::Put { key, value }),
        1 => key.clone().prop_map(|key| Op::Clear { key }),
        3 => (key.clone(), any::<u32>()).prop_map(|(key, value)| Op::ListAdd { key, value }),
        3 => (key.clone(), 0u8..3, any::<u32>()).prop_map(|(key, uk, value)| Op::MapPut { key, uk, value }),
        1 => (key, 0u8..3).prop_map(|(key, uk)| Op::MapRemove { key, uk }),
        3 => (1u64..=60).prop_map(|ms| Op::Advance { ms }),
        1 => (1u32..=3, any::<bool>()).prop_map(|(parallelism, savepoint)| Op::Restore { parallelism, savepoint }),
    ]
}

/// Every write with its time (ms); what a read returns is what was written less than `TTL_MS` ago.
#[derive(Default, Debug)]
struct Model {
    values: BTreeMap<u64, (u32, u64)>,
    lists: BTreeMap<u64, Vec<(u32, u64)>>,
    maps: BTreeMap<(u64, u8), (u32, u64)>,
}

fn live(at: u64, now: u64) -> bool {
    at + TTL_MS > now
}

/// What every read path must answer at `now`.
#[derive(Debug, PartialEq, Default)]
struct View {
    values: BTreeMap<u64, u32>,
    lists: BTreeMap<u64, Vec<u32>>,
    maps: BTreeMap<(u64, u8), u32>,
    keys: [BTreeSet<u64>; 3],
}

impl Model {
    fn view(&self, now: u64) -> View {
        let mut v = View::default();
        for (&k, &(x, at)) in &self.values {
            if live(at, now) {
                v.values.insert(k, x);
                v.keys[0].insert(k);
            }
        }
        for (&k, list) in &self.lists {
            let l: Vec<u32> = list
                .iter()
                .filter(|e| live(e.1, now))
                .map(|e| e.0)
                .collect();
            if !l.is_empty() {
                v.lists.insert(k, l);
                v.keys[1].insert(k);
            }
        }
        for (&(k, uk), &(x, at)) in &self.maps {
            if live(at, now) {
                v.maps.insert((k, uk), x);
                v.keys[2].insert(k);
            }
        }
        v
    }
}

type States = (
    ValueState<VoidNamespace, u32>,
    ListState<VoidNamespace, u32>,
    MapState<VoidNamespace, u8, u32>,
);

fn states(b: &mut StateBackend<u64>) -> States {
    let ttl = StateTtlConfig::new(TTL_MS);
    (
        b.value_state(&ValueStateDescriptor::new("v").with_ttl(ttl))
            .unwrap(),
        b.list_state(&ListStateDescriptor::new("l").with_ttl(ttl))
            .unwrap(),
        b.map_state(&MapStateDescriptor::new("m").with_ttl(ttl))
            .unwrap(),
    )
}

struct Job {
    kind: BackendKind,
    dir: tempfile::TempDir,
    clock: Arc<ManualClock>,
    storage: CheckpointStorage,
    backends: Vec<StateBackend<u64>>,
    next_id: u64,
}

impl Job {
    fn now(&self) -> u64 {
        self.clock.now_ms()
    }

    fn owner(&self, key: u64) -> usize {
        owner(&key, MAX_P, self.backends.len() as u32)
    }

    fn apply(&mut self, model: &mut Model, op: &Op) {
        let now = self.now();
        let key = match *op {
            Op::Put { key, .. }
            | Op::Clear { key }
            | Op::ListAdd { key, .. }
            | Op::MapPut { key, .. }
            | Op::MapRemove { key, .. } => key,
            _ => unreachable!(),
        };
        let i = self.owner(key);
        let b = &mut self.backends[i];
        let (v, l, m) = states(b);
        let ns = VoidNamespace;
        b.set_current_key(key).unwrap();
        match *op {
            Op::Put { value, .. } => {
                v.update(b, &ns, value).unwrap();
                model.values.insert(key, (value, now));
            }
            Op::Clear { .. } => {
                v.clear(b, &ns).unwrap();
                model.values.remove(&key);
            }
            Op::ListAdd { value, .. } => {
                l.add(b, &ns, value).unwrap();
                model.lists.entry(key).or_default().push((value, now));
            }
            Op::MapPut { uk, value, .. } => {
                m.put(b, &ns, uk, value).unwrap();
                model.maps.insert((key, uk), (value, now));
            }
            Op::MapRemove { uk, .. } => {
                m.remove(b, &ns, &uk).unwrap();
                model.maps.remove(&(key, uk));
            }
            _ => unreachable!(),
        }
    }

    /// What the backends answer on every read path now.
    fn observe(&mut self) -> View {
        let mut view = View::default();
        let ns = VoidNamespace;
        for b in &mut self.backends {
            let (v, l, m) = states(b);
            for (i, keys) in [v.id(), l.id(), m.id()].into_iter().enumerate() {
                view.keys[i].extend(b.keys(keys, &ns).unwrap());
            }
            let range = b.key_group_range();
            let owned = (0..KEYS).filter(|k| {
                range.contains(
                    statebackend::key_group::assign_to_key_group(&k.to_be_bytes(), MAX_P).unwrap(),
                )
            });
            for key in owned {
                b.set_current_key(key).unwrap();
                if let Some(x) = v.value(b, &ns).unwrap() {
                    view.values.insert(key, x);
                }
                let list = l.get(b, &ns).unwrap();
                if !list.is_empty() {
                    view.lists.insert(key, list);
                }
                for (uk, x) in m.entries(b, &ns).unwrap() {
                    view.maps.insert((key, uk), x);
                }
                assert_eq!(m.is_empty(b, &ns).unwrap(), !view.keys[2].contains(&key));
            }
        }
        view
    }

    async fn restore(&mut self, parallelism: u32, savepoint: bool) {
        self.next_id += 1;
        if savepoint {
            self.kind = switched(self.kind);
        }
        let config = backend_config(self.kind, self.dir.path());
        let (storage, id) = (self.storage.clone(), self.next_id);
        let backends = &mut self.backends;
        snapshot_and_restore(
            backends,
            &storage,
            id,
            savepoint,
            &config,
            MAX_P,
            parallelism,
        )
        .await;
        for b in backends {
            b.set_clock(self.clock.clone());
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]
    #[test]
    fn no_read_path_returns_expired_state_through_restores_and_switches(
        ops in proptest::collection::vec(op(), 1..150),
        start_on_rocksdb in any::<bool>(),
    ) {
        let rt = runtime();
        rt.block_on(async {
            let kinds = backend_kinds();
            let kind = if start_on_rocksdb { *kinds.last().unwrap() } else { BackendKind::Heap };
            let dir = tempfile::tempdir().unwrap();
            let clock = Arc::new(ManualClock::new(UNIX_EPOCH + Duration::from_secs(1_000)));
            let mut first = StateBackend::new(&identity(MAX_P, 1, 0), &backend_config(kind, dir.path())).unwrap();
            first.set_clock(clock.clone());
            let mut job = Job {
                kind,
                dir,
                clock,
                storage: CheckpointStorage::in_memory("ttl-model").unwrap(),
                backends: vec![first],
                next_id: 0,
            };
            let mut model = Model::default();
            for op in &ops {
                match *op {
                    Op::Advance { ms } => job.clock.advance(Duration::from_millis(ms)),
                    Op::Restore { parallelism, savepoint } => job.restore(parallelism, savepoint).await,
                    _ => job.apply(&mut model, op),
                }
                let now = job.now();
                prop_assert_eq!(job.observe(), model.view(now), "after {:?}", op);
            }
            Ok(())
        })?;
    }
}
