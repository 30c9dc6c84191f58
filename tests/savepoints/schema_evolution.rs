//! Schema evolution (`docs/savepoints.md`, "Schema evolution"): state written with version 1 of a value
//! codec is restored by version 2, which declares a migration, on both backends, from checkpoints and from
//! canonical savepoints, for every state kind; an incompatible change is an error naming the state, and a
//! value that does not migrate leaves the restored state as it was.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::common::{backend_config, backend_kinds, identity};
use statebackend::codec::{Migration, WrittenCodec};
use statebackend::key_group::assign_to_key_group;
use statebackend::operator::OperatorStateBackend;
use statebackend::*;

/// Version 1 of a user type: a count, `u32` big-endian.
#[derive(Debug, Clone, PartialEq)]
struct EventV1 {
    count: u32,
}

impl Codec for EventV1 {
    const ID: &'static str = "test.event";
    fn encode(&self, out: &mut Vec<u8>) {
        self.count.encode(out);
    }
    fn decode(bytes: &[u8]) -> Result<Self> {
        Ok(EventV1 {
            count: u32::decode(bytes)?,
        })
    }
}

/// Version 2: the count widened to `u64` and a label added (`u64` big-endian, then UTF-8).
#[derive(Debug, Clone, PartialEq)]
struct EventV2 {
    count: u64,
    label: String,
}

impl EventV2 {
    fn from_v1(v1: &EventV1) -> Self {
        EventV2 {
            count: u64::from(v1.count),
            label: format!("was-v1-{}", v1.count),
        }
    }
}

impl Codec for EventV2 {
    const ID: &'static str = "test.event";
    const VERSION: u32 = 2;
    fn encode(&self, out: &mut Vec<u8>) {
        self.count.encode(out);
        out.extend_from_slice(self.label.as_bytes());
    }
    fn decode(bytes: &[u8]) -> Result<Self> {
        if bytes.len() < 8 {
            return Err(Error::InvalidArgument("short event".into()));
        }
        Ok(EventV2 {
            count: u64::decode(&bytes[..8])?,
            label: String::decode(&bytes[8..])?,
        })
    }
    fn migration_from(written: &WrittenCodec<'_>) -> Option<Migration<Self>> {
        (*written == WrittenCodec::parse("test.event")).then(|| -> Migration<Self> {
            Arc::new(|b| Ok(EventV2::from_v1(&EventV1::decode(b)?)))
        })
    }
}

/// Version 3 reads version 2 but not version 1: restoring a version 1 state is incompatible.
#[derive(Debug, Clone, PartialEq)]
struct EventV3(EventV2);

impl Codec for EventV3 {
    const ID: &'static str = "test.event";
    const VERSION: u32 = 3;
    fn encode(&self, out: &mut Vec<u8>) {
        self.0.encode(out);
    }
    fn decode(bytes: &[u8]) -> Result<Self> {
        EventV2::decode(bytes).map(EventV3)
    }
    fn migration_from(written: &WrittenCodec<'_>) -> Option<Migration<Self>> {
        (written.id == "test.event" && written.version == 2)
            .then(|| -> Migration<Self> { Arc::new(|b| EventV2::decode(b).map(EventV3)) })
    }
}

/// Version 2 whose migration refuses odd counts: a value that does not migrate.
#[derive(Debug, Clone, PartialEq)]
struct PickyV2(EventV2);

impl Codec for PickyV2 {
    const ID: &'static str = "test.event";
    const VERSION: u32 = 2;
    fn encode(&self, out: &mut Vec<u8>) {
        self.0.encode(out);
    }
    fn decode(bytes: &[u8]) -> Result<Self> {
        EventV2::decode(bytes).map(PickyV2)
    }
    fn migration_from(written: &WrittenCodec<'_>) -> Option<Migration<Self>> {
        (written.version == 1).then(|| -> Migration<Self> {
            Arc::new(|b| {
                let v1 = EventV1::decode(b)?;
                if v1.count % 2 == 1 {
                    return Err(Error::InvalidArgument(format!("odd count {}", v1.count)));
                }
                Ok(PickyV2(EventV2::from_v1(&v1)))
            })
        })
    }
}

/// Sums counts; the accumulator is the evolving type.
struct Total;
impl AggregateFunction<u32, EventV1, u32> for Total {
    fn create_accumulator(&self) -> EventV1 {
        EventV1 { count: 0 }
    }
    fn add(&self, value: &u32, acc: &mut EventV1) {
        acc.count += value;
    }
    fn get_result(&self, acc: &EventV1) -> u32 {
        acc.count
    }
    fn merge(&self, a: EventV1, b: EventV1) -> EventV1 {
        EventV1 {
            count: a.count + b.count,
        }
    }
}
struct TotalV2;
impl AggregateFunction<u64, EventV2, u64> for TotalV2 {
    fn create_accumulator(&self) -> EventV2 {
        EventV2 {
            count: 0,
            label: String::new(),
        }
    }
    fn add(&self, value: &u64, acc: &mut EventV2) {
        acc.count += value;
    }
    fn get_result(&self, acc: &EventV2) -> u64 {
        acc.count
    }
    fn merge(&self, a: EventV2, b: EventV2) -> EventV2 {
        EventV2 {
            count: a.count + b.count,
            label: a.label,
        }
    }
}

fn sum_v1(a: &EventV1, b: &EventV1) -> EventV1 {
    EventV1 {
        count: a.count + b.count,
    }
}
fn sum_v2(a: &EventV2, b: &EventV2) -> EventV2 {
    EventV2 {
        count: a.count + b.count,
        label: a.label.clone(),
    }
}

const KEYS: u64 = 300;

/// Version 1 state of every kind: for key `k` in namespace `k % 3`: value `k`, list `[k, k+1]`, map
/// `{"a": k, "b": 2k}`, reducing `k + 1` (added as `k` and `1`), aggregating `3k` (void namespace).
fn write_v1<B: KeyedStateBackend<u64>>(b: &mut B) {
    let v = b
        .value_state(&ValueStateDescriptor::<u32, EventV1>::new("v"))
        .unwrap();
    let l = b
        .list_state(&ListStateDescriptor::<u32, EventV1>::new("l"))
        .unwrap();
    let m = b
        .map_state(&MapStateDescriptor::<u32, String, EventV1>::new("m"))
        .unwrap();
    let r = b
        .reducing_state(&ReducingStateDescriptor::<u32, EventV1>::new("r", sum_v1))
        .unwrap();
    let a = b
        .aggregating_state(&AggregatingStateDescriptor::<VoidNamespace, _, _, _>::new(
            "a", Total,
        ))
        .unwrap();
    let e = |count: u64| EventV1 {
        count: count as u32,
    };
    for k in 0..KEYS {
        b.set_current_key(k).unwrap();
        let ns = (k % 3) as u32;
        v.update(b, &ns, e(k)).unwrap();
        l.add(b, &ns, e(k)).unwrap();
        l.add(b, &ns, e(k + 1)).unwrap();
        m.put(b, &ns, "a".into(), e(k)).unwrap();
        m.put(b, &ns, "b".into(), e(2 * k)).unwrap();
        r.add(b, &ns, e(k)).unwrap();
        r.add(b, &ns, e(1)).unwrap();
        a.add(b, &VoidNamespace, &(3 * k as u32)).unwrap();
    }
}

/// What version 2 reads of [`write_v1`]'s state (every value migrated), key by key.
type Seen = BTreeMap<
    u64,
    (
        EventV2,
        Vec<EventV2>,
        BTreeMap<String, EventV2>,
        EventV2,
        u64,
    ),
>;

fn read_v2<B: KeyedStateBackend<u64>>(b: &mut B) -> Seen {
    let v = b
        .value_state(&ValueStateDescriptor::<u32, EventV2>::new("v"))
        .unwrap();
    let l = b
        .list_state(&ListStateDescriptor::<u32, EventV2>::new("l"))
        .unwrap();
    let m = b
        .map_state(&MapStateDescriptor::<u32, String, EventV2>::new("m"))
        .unwrap();
    let r = b
        .reducing_state(&ReducingStateDescriptor::<u32, EventV2>::new("r", sum_v2))
        .unwrap();
    let a = b
        .aggregating_state(&AggregatingStateDescriptor::<VoidNamespace, _, _, _>::new(
            "a", TotalV2,
        ))
        .unwrap();
    let mut seen = Seen::new();
    for k in 0..KEYS {
        if b.set_current_key(k).is_err() {
            continue; // another subtask's key
        }
        let ns = (k % 3) as u32;
        let Some(value) = v.value(b, &ns).unwrap() else {
            continue;
        };
        seen.insert(
            k,
            (
                value,
                l.get(b, &ns).unwrap(),
                m.entries(b, &ns).unwrap().into_iter().collect(),
                r.get(b, &ns).unwrap().unwrap(),
                a.get(b, &VoidNamespace).unwrap().unwrap(),
            ),
        );
    }
    seen
}

/// [`read_v2`] of the state [`write_v1`] writes, for the keys `owns` accepts.
fn expected(owns: impl Fn(u64) -> bool) -> Seen {
    let e = |count: u64| {
        EventV2::from_v1(&EventV1 {
            count: count as u32,
        })
    };
    (0..KEYS)
        .filter(|k| owns(*k))
        .map(|k| {
            let map = [("a".to_string(), e(k)), ("b".to_string(), e(2 * k))];
            // The reducing state holds one value: k + 1 written by version 1, migrated as a whole.
            (k, (e(k), vec![e(k), e(k + 1)], map.into(), e(k + 1), 3 * k))
        })
        .collect()
}

/// A checkpoint (`savepoint: false`) or canonical savepoint of `b` with id `id`: its handle.
async fn snapshot(
    b: &mut StateBackend<u64>,
    id: u64,
    storage: &CheckpointStorage,
    savepoint: bool,
) -> KeyedStateHandle {
    let pending = if savepoint {
        b.savepoint(id, storage, SavepointFormat::Canonical)
    } else {
        b.snapshot(id, storage)
    };
    pending.unwrap().run().await.unwrap().handle
}

async fn restore(
    kind: BackendKind,
    p: u32,
    i: u32,
    dir: &std::path::Path,
    storage: &CheckpointStorage,
    handles: &[KeyedStateHandle],
) -> StateBackend<u64> {
    StateBackend::<u64>::restore(
        &identity(128, p, i),
        &backend_config(kind, dir),
        storage,
        handles,
        RestoreMode::NoClaim,
    )
    .await
    .unwrap()
}

fn owned_by(b: &StateBackend<u64>) -> impl Fn(u64) -> bool {
    let range = b.key_group_range();
    move |k: u64| range.contains(assign_to_key_group(&k.to_be_bytes(), 128).unwrap())
}

/// Every pair of backends, from a checkpoint (same backend) and from a canonical savepoint (any), at
/// parallelism 1 → 2: version 2 reads every value of every kind migrated; its next snapshot is in the
/// version 2 encoding, which version 2 restores as is and version 1 refuses.
#[test]
fn version_two_migrates_every_state_kind_from_checkpoints_and_savepoints_on_both_backends() {
    crate::common::runtime().block_on(async {
        for from in backend_kinds() {
            for to in backend_kinds() {
                for savepoint in [false, true] {
                    if !savepoint && from != to {
                        continue;
                    }
                    let what = format!("{from:?} -> {to:?}, savepoint: {savepoint}");
                    let dir = tempfile::tempdir().unwrap();
                    let storage = CheckpointStorage::in_memory("job").unwrap();
                    let mut b =
                        StateBackend::new(&identity(128, 1, 0), &backend_config(from, dir.path()))
                            .unwrap();
                    write_v1(&mut b);
                    let handles = [snapshot(&mut b, 1, &storage, savepoint).await];
                    let mut union = Seen::new();
                    for i in 0..2 {
                        let mut r = restore(to, 2, i, dir.path(), &storage, &handles).await;
                        let seen = read_v2(&mut r);
                        assert_eq!(seen, expected(owned_by(&r)), "{what}, subtask {i}");
                        union.extend(seen);

                        // Written again in version 2: restored as is, refused by version 1.
                        let again = [snapshot(&mut r, 2, &storage, savepoint).await];
                        let mut r2 = restore(to, 2, i, dir.path(), &storage, &again).await;
                        assert_eq!(read_v2(&mut r2), expected(owned_by(&r2)), "{what}");
                        let mut r3 = restore(to, 2, i, dir.path(), &storage, &again).await;
                        let err = r3
                            .value_state(&ValueStateDescriptor::<u32, EventV1>::new("v"))
                            .map(|_| ())
                            .unwrap_err();
                        assert!(
                            matches!(&err, Error::IncompatibleSchema { state, .. } if state == "v"),
                            "{what}: {err}"
                        );
                    }
                    assert_eq!(union, expected(|_| true), "{what}: both subtasks hold all");
                }
            }
        }
    });
}

/// An incompatible change (no migration; a changed key or namespace codec; another kind) is an
/// `IncompatibleSchema` error naming the state and what differs, and rewrites nothing: the same restored
/// backend then registers the state with version 2 and reads every value.
#[test]
fn an_incompatible_change_is_an_error_naming_the_state_and_leaves_it_restorable() {
    crate::common::runtime().block_on(async {
        for kind in backend_kinds() {
            let dir = tempfile::tempdir().unwrap();
            let storage = CheckpointStorage::in_memory("job").unwrap();
            let mut b =
                StateBackend::new(&identity(128, 1, 0), &backend_config(kind, dir.path())).unwrap();
            write_v1(&mut b);
            let handles = [snapshot(&mut b, 1, &storage, false).await];
            let mut r = restore(kind, 1, 0, dir.path(), &storage, &handles).await;

            let no_migration = r
                .value_state(&ValueStateDescriptor::<u32, EventV3>::new("v"))
                .map(|_| ())
                .unwrap_err();
            let namespace = r
                .value_state(&ValueStateDescriptor::<u64, EventV2>::new("v"))
                .map(|_| ())
                .unwrap_err();
            let other_kind = r
                .list_state(&ListStateDescriptor::<u32, EventV2>::new("v"))
                .map(|_| ())
                .unwrap_err();
            let user_key = r
                .map_state(&MapStateDescriptor::<u32, Vec<u8>, EventV2>::new("m"))
                .map(|_| ())
                .unwrap_err();
            for (err, names) in [
                (&no_migration, ["test.event@v3", "test.event`"]),
                (&namespace, ["namespace codec", "u64:be"]),
                (&other_kind, ["kind", "List"]),
                (&user_key, ["user key codec", "bytes"]),
            ] {
                assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{kind:?}: {err}");
                assert!(
                    matches!(err, Error::IncompatibleSchema { .. }),
                    "{kind:?}: {err}"
                );
                let text = err.to_string();
                assert!(
                    names.iter().all(|n| text.contains(n)) && text.contains("state `"),
                    "{kind:?}: {text}"
                );
            }
            assert_eq!(read_v2(&mut r), expected(|_| true), "{kind:?}");
        }
    });
}

/// A value whose migration fails fails the registration with a `Corrupt` error naming the state, and
/// leaves every stored value as it was (the RocksDB backend reads all before it rewrites any): version 1
/// still reads them all.
#[test]
fn a_value_that_does_not_migrate_fails_the_registration_and_rewrites_nothing() {
    crate::common::runtime().block_on(async {
        for kind in backend_kinds() {
            let dir = tempfile::tempdir().unwrap();
            let storage = CheckpointStorage::in_memory("job").unwrap();
            let mut b =
                StateBackend::new(&identity(128, 1, 0), &backend_config(kind, dir.path())).unwrap();
            write_v1(&mut b);
            let handles = [snapshot(&mut b, 1, &storage, false).await];
            let mut r = restore(kind, 1, 0, dir.path(), &storage, &handles).await;
            let err = r
                .value_state(&ValueStateDescriptor::<u32, PickyV2>::new("v"))
                .map(|_| ())
                .unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Corrupt, "{kind:?}: {err}");
            let text = err.to_string();
            assert!(
                text.contains("state `v`") && text.contains("odd count"),
                "{kind:?}: {text}"
            );
            let v = r
                .value_state(&ValueStateDescriptor::<u32, EventV1>::new("v"))
                .unwrap();
            for k in 0..KEYS {
                r.set_current_key(k).unwrap();
                let got = v.value(&r, &((k % 3) as u32)).unwrap();
                assert_eq!(got, Some(EventV1 { count: k as u32 }), "{kind:?} key {k}");
            }
        }
    });
}

/// The built-in integers widen: a `u32` value state restores as `u64`, an `i16` list as `i64`, on both
/// backends; narrowing (`u64` → `u32`) is incompatible.
#[test]
fn built_in_integers_widen_on_restore_and_never_narrow() {
    crate::common::runtime().block_on(async {
        for kind in backend_kinds() {
            let dir = tempfile::tempdir().unwrap();
            let storage = CheckpointStorage::in_memory("job").unwrap();
            let mut b =
                StateBackend::new(&identity(128, 1, 0), &backend_config(kind, dir.path())).unwrap();
            let v = b
                .value_state(&ValueStateDescriptor::<VoidNamespace, u32>::new("n"))
                .unwrap();
            let l = b
                .list_state(&ListStateDescriptor::<VoidNamespace, i16>::new("l"))
                .unwrap();
            for k in 0..100u64 {
                b.set_current_key(k).unwrap();
                v.update(&mut b, &VoidNamespace, k as u32 * 1000).unwrap();
                l.add(&mut b, &VoidNamespace, -(k as i16)).unwrap();
            }
            let handles = [snapshot(&mut b, 1, &storage, false).await];
            let mut r = restore(kind, 1, 0, dir.path(), &storage, &handles).await;
            let v = r
                .value_state(&ValueStateDescriptor::<VoidNamespace, u64>::new("n"))
                .unwrap();
            let l = r
                .list_state(&ListStateDescriptor::<VoidNamespace, i64>::new("l"))
                .unwrap();
            for k in 0..100u64 {
                r.set_current_key(k).unwrap();
                assert_eq!(v.value(&r, &VoidNamespace).unwrap(), Some(k * 1000));
                assert_eq!(l.get(&r, &VoidNamespace).unwrap(), vec![-(k as i64)]);
            }
            let handles = [snapshot(&mut r, 2, &storage, false).await];
            let mut narrow = restore(kind, 1, 0, dir.path(), &storage, &handles).await;
            let err = narrow
                .value_state(&ValueStateDescriptor::<VoidNamespace, u32>::new("n"))
                .map(|_| ())
                .unwrap_err();
            assert!(
                matches!(&err, Error::IncompatibleSchema { state, .. } if state == "n"),
                "{kind:?}: {err}"
            );
        }
    });
}

/// Operator state migrates too: list elements and broadcast values through the registering codec's
/// migration; a broadcast state's key codec never changes.
#[test]
fn operator_list_and_broadcast_values_migrate_and_keys_do_not() {
    let mut ops = OperatorStateBackend::new();
    let list = ops.list_state::<EventV1>("offsets").unwrap();
    list.update(&mut ops, &[EventV1 { count: 4 }, EventV1 { count: 7 }])
        .unwrap();
    let rules = ops.broadcast_state::<String, u32>("rules").unwrap();
    rules.put(&mut ops, &"x".to_string(), &9).unwrap();
    let task = TaskStateSnapshot {
        operator_id: "op".into(),
        subtask_index: 0,
        operator_state: ops.snapshot(),
        ..Default::default()
    };
    let restored = OperatorStateBackend::restore("op", 0, 1, &[task]).unwrap();

    let mut r = restored.clone();
    let list = r.list_state::<EventV2>("offsets").unwrap();
    assert_eq!(
        list.get(&r).unwrap(),
        vec![
            EventV2::from_v1(&EventV1 { count: 4 }),
            EventV2::from_v1(&EventV1 { count: 7 })
        ]
    );
    let rules = r.broadcast_state::<String, u64>("rules").unwrap();
    assert_eq!(rules.entries(&r).unwrap(), vec![("x".to_string(), 9)]);

    let mut r = restored.clone();
    let err = r
        .broadcast_state::<Vec<u8>, u64>("rules")
        .map(|_| ())
        .unwrap_err();
    assert!(
        matches!(&err, Error::IncompatibleSchema { state, .. } if state == "rules"),
        "{err}"
    );
    let err = r.list_state::<PickyV2>("offsets").map(|_| ()).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Corrupt, "{err}");
    let list = r.list_state::<EventV1>("offsets").unwrap();
    assert_eq!(
        list.get(&r).unwrap().len(),
        2,
        "a failed migration rewrites nothing"
    );
}
