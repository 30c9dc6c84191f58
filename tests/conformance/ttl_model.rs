//! Property test of state TTL: random writes of value, list and map state and clock moves, interleaved
//! with checkpoints, restores at 1, 2 or 3 subtasks and canonical savepoints that switch the backend,
//! checked against a model of `(value, last write)` after every step: no read path (value, list, map
//! entries, keys with state) ever returns what has expired, and nothing live is lost. A second variant
//! has reads restart the TTL (`TtlUpdate::OnReadAndWrite`): there the model restamps what each read
//! returns, key listings (which restart nothing) are checked after every step, and the other read
//! paths only at some steps (reading everything every step would keep everything alive).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use crate::common::*;
use proptest::prelude::*;
use statebackend::keyed::{StateTtlConfig, TtlUpdate};
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
    /// Reads of one key: its value, list and map entries.
    Read {
        key: u64,
    },
    /// A batch read of values, with no current key set.
    BatchRead {
        keys: Vec<u64>,
    },
    /// Every read path of every key (after every step in the variant where reads do not restart).
    Observe,
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
        2 => (0..KEYS).prop_map(|key| Op::Read { key }),
        1 => proptest::collection::vec(0..KEYS, 1..4).prop_map(|keys| Op::BatchRead { keys }),
        1 => Just(Op::Observe),
    ]
}

/// Every write (and, if `on_read`, read) with its time (ms); what a read returns is what was written
/// less than `TTL_MS` ago.
#[derive(Default, Debug)]
struct Model {
    on_read: bool,
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

    /// What a read of `key`'s value, list and map at `now` returns (restamped if reads restart).
    fn read(&mut self, key: u64, now: u64) -> (Option<u32>, Vec<u32>, BTreeMap<u8, u32>) {
        let view = self.view(now);
        let value = view.values.get(&key).copied();
        let list = view.lists.get(&key).cloned().unwrap_or_default();
        let map: BTreeMap<u8, u32> = (view.maps.range((key, 0)..=(key, u8::MAX)))
            .map(|(&(_, uk), &x)| (uk, x))
            .collect();
        if self.on_read {
            self.restamp_value(key, now);
            if let Some(l) = self.lists.get_mut(&key) {
                l.retain(|e| live(e.1, now));
                l.iter_mut().for_each(|e| e.1 = now);
            }
            for (_, (_, at)) in self.maps.range_mut((key, 0)..=(key, u8::MAX)) {
                if live(*at, now) {
                    *at = now;
                }
            }
        }
        (value, list, map)
    }

    fn restamp_value(&mut self, key: u64, now: u64) {
        if let Some((_, at)) = self.values.get_mut(&key)
            && self.on_read
            && live(*at, now)
        {
            *at = now;
        }
    }

    /// Every read path of every key at `now`, restamped if reads restart.
    fn observe(&mut self, now: u64) -> View {
        let view = self.view(now);
        for key in 0..KEYS {
            self.read(key, now);
        }
        view
    }
}

type States = (
    ValueState<VoidNamespace, u32>,
    ListState<VoidNamespace, u32>,
    MapState<VoidNamespace, u8, u32>,
);

fn states(b: &mut StateBackend<u64>, on_read: bool) -> States {
    let update = match on_read {
        true => TtlUpdate::OnReadAndWrite,
        false => TtlUpdate::OnCreateAndWrite,
    };
    let ttl = StateTtlConfig {
        update,
        ..StateTtlConfig::new(TTL_MS)
    };
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
    on_read: bool,
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
        let (v, l, m) = states(b, self.on_read);
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

    /// Keys with state in each of the three states, as the backends list them now.
    fn listed(&mut self) -> [BTreeSet<u64>; 3] {
        let mut keys: [BTreeSet<u64>; 3] = Default::default();
        for b in &mut self.backends {
            let (v, l, m) = states(b, self.on_read);
            for (i, id) in [v.id(), l.id(), m.id()].into_iter().enumerate() {
                keys[i].extend(b.keys(id, &VoidNamespace).unwrap());
                let pairs: Vec<(u64, VoidNamespace)> = b.keys_and_namespaces(id).unwrap();
                let listed: BTreeSet<u64> =
                    b.keys(id, &VoidNamespace).unwrap().into_iter().collect();
                assert_eq!(
                    pairs.into_iter().map(|p| p.0).collect::<BTreeSet<_>>(),
                    listed
                );
            }
        }
        keys
    }

    /// What one key's value, list and map entries read now.
    fn read(&mut self, key: u64) -> (Option<u32>, Vec<u32>, BTreeMap<u8, u32>) {
        let i = self.owner(key);
        let on_read = self.on_read;
        let b = &mut self.backends[i];
        let (v, l, m) = states(b, on_read);
        b.set_current_key(key).unwrap();
        let ns = VoidNamespace;
        let value = v.value(b, &ns).unwrap();
        let list = l.get(b, &ns).unwrap();
        let map = m.entries(b, &ns).unwrap().into_iter().collect();
        (value, list, map)
    }

    /// Values of `keys` by batch reads, one per owning backend, with no current key set for them.
    fn batch_read(&mut self, keys: &[u64]) -> BTreeMap<u64, Option<u32>> {
        let mut out = BTreeMap::new();
        let parallelism = self.backends.len() as u32;
        for (i, b) in self.backends.iter_mut().enumerate() {
            let (v, _, _) = states(b, self.on_read);
            let mine: Vec<u64> = (keys.iter().copied())
                .filter(|k| owner(k, MAX_P, parallelism) == i)
                .collect();
            let mut values = Vec::new();
            v.get_batch(b, &VoidNamespace, &mine, &mut values).unwrap();
            out.extend(mine.into_iter().zip(values));
        }
        out
    }

    /// What the backends answer on every read path now.
    fn observe(&mut self) -> View {
        let mut view = View::default();
        let ns = VoidNamespace;
        view.keys = self.listed();
        for b in &mut self.backends {
            let (v, l, m) = states(b, self.on_read);
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

/// Runs `ops` from a backend of the kind `start_on_rocksdb` picks, checking the backends against the model
/// after every step (reads restart the TTL if `on_read`).
fn run(ops: &[Op], start_on_rocksdb: bool, on_read: bool) -> Result<(), TestCaseError> {
    let rt = runtime();
    rt.block_on(async {
        let kinds = backend_kinds();
        let kind = if start_on_rocksdb {
            *kinds.last().unwrap()
        } else {
            BackendKind::Heap
        };
        let dir = tempfile::tempdir().unwrap();
        let clock = Arc::new(ManualClock::new(UNIX_EPOCH + Duration::from_secs(1_000)));
        let mut first =
            StateBackend::new(&identity(MAX_P, 1, 0), &backend_config(kind, dir.path())).unwrap();
        first.set_clock(clock.clone());
        let mut job = Job {
            kind,
            dir,
            clock,
            storage: CheckpointStorage::in_memory("ttl-model").unwrap(),
            backends: vec![first],
            next_id: 0,
            on_read,
        };
        let mut model = Model {
            on_read,
            ..Model::default()
        };
        for op in ops {
            let now = job.now();
            match op {
                Op::Advance { ms } => job.clock.advance(Duration::from_millis(*ms)),
                Op::Restore {
                    parallelism,
                    savepoint,
                } => job.restore(*parallelism, *savepoint).await,
                Op::Read { key } => {
                    let (value, list, map) = model.read(*key, now);
                    prop_assert_eq!(job.read(*key), (value, list, map), "{:?}", op);
                }
                Op::BatchRead { keys } => {
                    let expected: BTreeMap<u64, Option<u32>> = (keys.iter())
                        .map(|&k| (k, model.view(now).values.get(&k).copied()))
                        .collect();
                    keys.iter().for_each(|&k| model.restamp_value(k, now));
                    prop_assert_eq!(job.batch_read(keys), expected, "{:?}", op);
                }
                Op::Observe => {
                    let expected = model.observe(now);
                    prop_assert_eq!(job.observe(), expected, "{:?}", op);
                }
                _ => job.apply(&mut model, op),
            }
            let now = job.now();
            if on_read {
                prop_assert_eq!(job.listed(), model.view(now).keys, "after {:?}", op);
            } else {
                prop_assert_eq!(job.observe(), model.view(now), "after {:?}", op);
            }
        }
        Ok(())
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]
    #[test]
    fn no_read_path_returns_expired_state_through_restores_and_switches(
        ops in proptest::collection::vec(op(), 1..150),
        start_on_rocksdb in any::<bool>(),
    ) {
        run(&ops, start_on_rocksdb, false)?;
    }

    #[test]
    fn reads_that_restart_the_ttl_keep_exactly_what_they_returned_alive_on_every_read_path(
        ops in proptest::collection::vec(op(), 1..150),
        start_on_rocksdb in any::<bool>(),
    ) {
        run(&ops, start_on_rocksdb, true)?;
    }
}
