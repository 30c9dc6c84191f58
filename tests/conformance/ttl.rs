//! State TTL (`docs/ttl.md`): what every backend must do with a `ManualClock` — expiry exactly at the
//! last write plus the TTL on every kind of state and every read path built so far, event time moved only
//! by watermarks, the lax visibility, and the timestamps carried through checkpoints, restores at another
//! parallelism and canonical savepoints that switch the backend.

use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use crate::common::*;
use statebackend::keyed::{StateTtlConfig, TtlTime, TtlVisibility};
use statebackend::*;

type Ns = VoidNamespace;
const NS: VoidNamespace = VoidNamespace;

/// A clock at 1,000,000 ms, set as `b`'s clock.
fn manual_clock<B: KeyedStateBackend<u64>>(b: &mut B) -> Arc<ManualClock> {
    let clock = Arc::new(ManualClock::new(UNIX_EPOCH + Duration::from_secs(1_000)));
    b.set_clock(clock.clone());
    clock
}

/// Moves `clock` by `ms` and sets `key` current again (processing time is read per record).
fn tick<B: KeyedStateBackend<u64>>(b: &mut B, clock: &ManualClock, ms: u64, key: u64) {
    clock.advance(Duration::from_millis(ms));
    b.set_current_key(key).unwrap();
}

struct Sum;

impl AggregateFunction<u64, u64, u64> for Sum {
    fn create_accumulator(&self) -> u64 {
        0
    }
    fn add(&self, value: &u64, acc: &mut u64) {
        *acc += value;
    }
    fn get_result(&self, acc: &u64) -> u64 {
        *acc
    }
    fn merge(&self, a: u64, b: u64) -> u64 {
        a + b
    }
}

pub fn value_reducing_and_aggregating_expire<B: KeyedStateBackend<u64>>(b: &mut B) {
    let clock = manual_clock(b);
    let ttl = StateTtlConfig::new(100);
    let value = b
        .value_state(&ValueStateDescriptor::<Ns, u64>::new("v").with_ttl(ttl))
        .unwrap();
    let sum = b
        .reducing_state(&ReducingStateDescriptor::<Ns, u64>::new("r", |a, b| a + b).with_ttl(ttl))
        .unwrap();
    let agg = b
        .aggregating_state(&AggregatingStateDescriptor::new("a", Sum).with_ttl(ttl))
        .unwrap();
    b.set_current_key(1).unwrap();
    value.update(b, &NS, 10).unwrap();
    sum.add(b, &NS, 1).unwrap();
    agg.add(b, &NS, &1).unwrap();
    tick(b, &clock, 99, 1);
    assert_eq!(
        value.value(b, &NS).unwrap(),
        Some(10),
        "alive at ts + ttl - 1"
    );
    assert_eq!(sum.get(b, &NS).unwrap(), Some(1));
    // A write restarts the clock; a read does not.
    sum.add(b, &NS, 2).unwrap();
    tick(b, &clock, 1, 1);
    assert_eq!(value.value(b, &NS).unwrap(), None, "expired at ts + ttl");
    assert_eq!(agg.get(b, &NS).unwrap(), None);
    assert_eq!(
        sum.get(b, &NS).unwrap(),
        Some(3),
        "the add at +99 restarted it"
    );
    // An add after expiry starts from nothing, not from the expired accumulator.
    agg.add(b, &NS, &5).unwrap();
    assert_eq!(agg.get(b, &NS).unwrap(), Some(5));
    assert!(sum.add_first(b, &NS, 4).is_ok_and(|first| !first));
    tick(b, &clock, 100, 1);
    assert!(
        sum.add_first(b, &NS, 4).unwrap(),
        "expired: the next add is the first"
    );
    assert_eq!(sum.get(b, &NS).unwrap(), Some(4));
    value.update(b, &NS, 11).unwrap();
    assert_eq!(value.value(b, &NS).unwrap(), Some(11));
    value.clear(b, &NS).unwrap();
    assert_eq!(value.value(b, &NS).unwrap(), None);

    // Batches read the clock themselves (they set no current key).
    let keys = [2u64, 3, 4];
    value.update_batch(b, &NS, &keys, &[20, 30, 40]).unwrap();
    clock.advance(Duration::from_millis(60));
    b.set_current_key(3).unwrap();
    value.update(b, &NS, 31).unwrap();
    clock.advance(Duration::from_millis(40));
    let mut out = Vec::new();
    value.get_batch(b, &NS, &keys, &mut out).unwrap();
    assert_eq!(out, [None, Some(31), None]);
    value
        .modify_batch(b, &NS, &keys, |_, old| Some(old.map_or(0, |v| v + 1)))
        .unwrap();
    out.clear();
    value.get_batch(b, &NS, &keys, &mut out).unwrap();
    assert_eq!(
        out,
        [Some(0), Some(32), Some(0)],
        "expired values are None to f"
    );

    // Merging namespaces takes no expired source.
    let windows = b
        .reducing_state(&ReducingStateDescriptor::<u32, u64>::new("w", |a, b| a + b).with_ttl(ttl))
        .unwrap();
    b.set_current_key(5).unwrap();
    windows.add(b, &1, 100).unwrap();
    tick(b, &clock, 100, 5);
    windows.add(b, &2, 7).unwrap();
    windows.add(b, &3, 8).unwrap();
    windows.merge_namespaces(b, &3, &[1, 2]).unwrap();
    assert_eq!(windows.get(b, &3).unwrap(), Some(15));
}

pub fn lists_and_maps_expire_per_element_and_entry<B: KeyedStateBackend<u64>>(b: &mut B) {
    let clock = manual_clock(b);
    let ttl = StateTtlConfig::new(100);
    let list = b
        .list_state(&ListStateDescriptor::<Ns, u32>::new("l").with_ttl(ttl))
        .unwrap();
    let map = b
        .map_state(&MapStateDescriptor::<Ns, u8, u32>::new("m").with_ttl(ttl))
        .unwrap();
    b.set_current_key(7).unwrap();
    list.add(b, &NS, 1).unwrap();
    map.put(b, &NS, 1, 10).unwrap();
    map.put(b, &NS, 9, 90).unwrap();
    tick(b, &clock, 50, 7);
    list.add_all(b, &NS, vec![2, 3]).unwrap();
    map.put_all(b, &NS, [(2, 20), (3, 30)]).unwrap();
    tick(b, &clock, 50, 7);
    assert_eq!(
        list.get(b, &NS).unwrap(),
        [2, 3],
        "the first element expired"
    );
    assert_eq!(map.get(b, &NS, &1).unwrap(), None);
    assert!(!map.contains(b, &NS, &1).unwrap() && map.contains(b, &NS, &2).unwrap());
    let mut entries = map.entries(b, &NS).unwrap();
    entries.sort_unstable();
    assert_eq!(entries, [(2, 20), (3, 30)]);
    let mut keys: Vec<u8> = map.keys(b, &NS).unwrap().map(Result::unwrap).collect();
    keys.sort_unstable();
    assert_eq!(keys, [2, 3]);
    assert_eq!(map.values(b, &NS).unwrap().count(), 2);
    assert!(!map.is_empty(b, &NS).unwrap());
    // Retain shows `keep` only live entries and removes the expired ones.
    let mut shown = Vec::new();
    map.retain(b, &NS, |uk, _| {
        shown.push(*uk);
        *uk != 3
    })
    .unwrap();
    shown.sort_unstable();
    assert_eq!(shown, [2, 3]);
    assert_eq!(map.entries(b, &NS).unwrap(), [(2, 20)]);
    tick(b, &clock, 50, 7);
    assert!(
        list.get(b, &NS).unwrap().is_empty(),
        "every element expired"
    );
    assert!(map.is_empty(b, &NS).unwrap(), "every entry expired");
    list.update(b, &NS, vec![4]).unwrap();
    assert_eq!(list.get(b, &NS).unwrap(), [4]);
    list.clear(b, &NS).unwrap();
    map.put(b, &NS, 5, 50).unwrap();
    map.remove(b, &NS, &5).unwrap();
    assert!(map.is_empty(b, &NS).unwrap());
    map.put(b, &NS, 6, 60).unwrap();
    map.clear(b, &NS).unwrap();
    assert!(map.entries(b, &NS).unwrap().is_empty());
}

pub fn event_time_visibility_and_registration<B: KeyedStateBackend<u64>>(b: &mut B) {
    let clock = manual_clock(b);
    let event = StateTtlConfig {
        time: TtlTime::EventTime,
        ..StateTtlConfig::new(1_000)
    };
    let lax = StateTtlConfig {
        visibility: TtlVisibility::ReturnExpiredIfNotCleanedUp,
        ..StateTtlConfig::new(10)
    };
    let by_watermark = b
        .value_state(&ValueStateDescriptor::<Ns, u64>::new("e").with_ttl(event))
        .unwrap();
    let shown = b
        .value_state(&ValueStateDescriptor::<Ns, u64>::new("lax").with_ttl(lax))
        .unwrap();
    b.set_ttl_watermark(5_000);
    b.set_current_key(1).unwrap();
    by_watermark.update(b, &NS, 1).unwrap();
    shown.update(b, &NS, 2).unwrap();
    tick(b, &clock, 1_000_000, 1);
    assert_eq!(
        by_watermark.value(b, &NS).unwrap(),
        Some(1),
        "processing time does not move it"
    );
    assert_eq!(
        shown.value(b, &NS).unwrap(),
        Some(2),
        "expired, returned until cleaned up"
    );
    b.set_ttl_watermark(5_999);
    assert_eq!(by_watermark.value(b, &NS).unwrap(), Some(1));
    b.set_ttl_watermark(6_000);
    assert_eq!(by_watermark.value(b, &NS).unwrap(), None);
    b.set_ttl_watermark(10);
    assert_eq!(
        by_watermark.value(b, &NS).unwrap(),
        None,
        "watermarks do not go back"
    );

    // TTL 0 is refused; a TTL state and a plain one of the same name are different states.
    let zero = ValueStateDescriptor::<Ns, u64>::new("z").with_ttl(StateTtlConfig::new(0));
    assert!(matches!(
        b.value_state(&zero),
        Err(Error::InvalidArgument(_))
    ));
    assert!(
        b.value_state(&ValueStateDescriptor::<Ns, u64>::new("e"))
            .is_err()
    );
    let again = ValueStateDescriptor::<Ns, u64>::new("e").with_ttl(StateTtlConfig::new(5));
    assert!(
        b.value_state(&again).is_ok(),
        "another ttl_ms is the same state"
    );
}

const MAX_P: u32 = 128;

/// Value `key * 10` for keys `0..n`, written `at` ms apart in two halves: keys below n/2 first.
fn fill_halves(b: &mut StateBackend<u64>, clock: &ManualClock, s: &ValueState<Ns, u64>, n: u64) {
    for key in 0..n {
        if key == n / 2 {
            clock.advance(Duration::from_millis(500));
        }
        if b.key_group_range().contains(key_group(key)) {
            b.set_current_key(key).unwrap();
            s.update(b, &NS, key * 10).unwrap();
        }
    }
}

fn key_group(key: u64) -> u32 {
    statebackend::key_group::assign_to_key_group(&key.to_be_bytes(), MAX_P).unwrap()
}

/// The live values of keys `0..n` over `backends`, read with `clock` at its time.
fn live(backends: &mut [StateBackend<u64>], ttl: StateTtlConfig, n: u64) -> Vec<u64> {
    let mut out = Vec::new();
    for b in backends.iter_mut() {
        let s = b
            .value_state(&ValueStateDescriptor::<Ns, u64>::new("v").with_ttl(ttl))
            .unwrap();
        let range = b.key_group_range();
        for key in (0..n).filter(|&k| range.contains(key_group(k))) {
            b.set_current_key(key).unwrap();
            out.extend(s.value(b, &NS).unwrap());
        }
    }
    out.sort_unstable();
    out
}

#[test]
fn timestamps_survive_checkpoints_rescales_savepoint_switches_and_a_changed_ttl() {
    let rt = runtime();
    rt.block_on(async {
        for kind in backend_kinds() {
            for canonical in [false, true] {
                let dir = tempfile::tempdir().unwrap();
                let storage = CheckpointStorage::in_memory("ttl").unwrap();
                let clock = Arc::new(ManualClock::new(UNIX_EPOCH + Duration::from_secs(1_000)));
                let config = backend_config(kind, dir.path());
                let one = identity(MAX_P, 1, 0);
                let mut b = StateBackend::<u64>::new(&one, &config).unwrap();
                b.set_clock(clock.clone());
                let ttl = StateTtlConfig::new(1_000);
                let s = b
                    .value_state(&ValueStateDescriptor::new("v").with_ttl(ttl))
                    .unwrap();
                fill_halves(&mut b, &clock, &s, 40);
                let pending = if canonical {
                    b.savepoint(1, &storage, SavepointFormat::Canonical)
                } else {
                    b.snapshot(1, &storage)
                };
                let handle = pending.unwrap().run().await.unwrap().handle;
                drop(b);
                // The other backend when the savepoint is canonical; two subtasks.
                let restored_kind = if canonical { switched(kind) } else { kind };
                let config = backend_config(restored_kind, dir.path());
                let mut backends = Vec::new();
                for index in 0..2 {
                    let id = identity(MAX_P, 2, index);
                    let handles = [handle.clone()];
                    let mut r = StateBackend::restore(
                        &id,
                        &config,
                        &storage,
                        &handles,
                        RestoreMode::NoClaim,
                    )
                    .await
                    .unwrap();
                    r.set_clock(clock.clone());
                    backends.push(r);
                }
                let all: Vec<u64> = (0..40).map(|k| k * 10).collect();
                assert_eq!(
                    live(&mut backends, ttl, 40),
                    all,
                    "{kind} -> {restored_kind}"
                );
                // Written at t and t + 500: at t + 1,000 the first half expired.
                clock.advance(Duration::from_millis(500));
                assert_eq!(
                    live(&mut backends, ttl, 40),
                    all[20..],
                    "{kind} -> {restored_kind}"
                );
                // A TTL changed on restore applies to the restored timestamps at once.
                let longer = StateTtlConfig::new(5_000);
                assert_eq!(
                    live(&mut backends, longer, 40),
                    all,
                    "{kind} -> {restored_kind}"
                );
            }
        }
    });
}

pub fn key_listings_leave_out_keys_whose_state_expired<B: KeyedStateBackend<u64>>(b: &mut B) {
    let clock = manual_clock(b);
    let ttl = StateTtlConfig::new(100);
    let lax = StateTtlConfig {
        visibility: TtlVisibility::ReturnExpiredIfNotCleanedUp,
        ..ttl
    };
    let value = b
        .value_state(&ValueStateDescriptor::<Ns, u64>::new("v").with_ttl(ttl))
        .unwrap();
    let list = b
        .list_state(&ListStateDescriptor::<Ns, u64>::new("l").with_ttl(ttl))
        .unwrap();
    let map = b
        .map_state(&MapStateDescriptor::<Ns, u8, u64>::new("m").with_ttl(ttl))
        .unwrap();
    let shown = b
        .value_state(&ValueStateDescriptor::<Ns, u64>::new("lax").with_ttl(lax))
        .unwrap();
    for key in 1..=4u64 {
        b.set_current_key(key).unwrap();
        value.update(b, &NS, key).unwrap();
        list.add(b, &NS, key).unwrap();
        map.put(b, &NS, 1, key).unwrap();
        shown.update(b, &NS, key).unwrap();
    }
    clock.advance(Duration::from_millis(50));
    for key in 3..=4u64 {
        b.set_current_key(key).unwrap();
        value.update(b, &NS, key).unwrap();
        list.add(b, &NS, key).unwrap();
        // Key 3's map keeps its expired entry beside a live one: the key still has state.
        map.put(b, &NS, if key == 3 { 2 } else { 1 }, key).unwrap();
    }
    clock.advance(Duration::from_millis(50));
    let sorted = |mut keys: Vec<u64>| {
        keys.sort_unstable();
        keys
    };
    assert_eq!(sorted(value.keys_with_state(b, &NS).unwrap()), [3, 4]);
    assert_eq!(sorted(list.keys_with_state(b, &NS).unwrap()), [3, 4]);
    assert_eq!(sorted(map.keys_with_state(b, &NS).unwrap()), [3, 4]);
    let pairs: Vec<(u64, Ns)> = value.keys_and_namespaces(b).unwrap();
    assert_eq!(sorted(pairs.into_iter().map(|(k, _)| k).collect()), [3, 4]);
    let pairs: Vec<(u64, Ns)> = map.keys_and_namespaces(b).unwrap();
    assert_eq!(pairs.len(), 2);
    let mut visited = Vec::new();
    b.apply_to_all_keys(list.id(), &NS, &mut |_, key| {
        visited.push(*key);
        Ok(())
    })
    .unwrap();
    assert_eq!(sorted(visited), [3, 4]);
    assert_eq!(
        sorted(shown.keys_with_state(b, &NS).unwrap()),
        [1, 2, 3, 4],
        "expired but returned until cleaned up"
    );
}

/// Keys 0..n of states "v", "l", "m" written at t and t + 500 (keys below n/2 first), on `b`'s clock.
fn fill_three(b: &mut StateBackend<u64>, clock: &ManualClock, ttl: StateTtlConfig, n: u64) {
    let (v, l, m) = three(b, ttl);
    for key in 0..n {
        if key == n / 2 {
            clock.advance(Duration::from_millis(500));
        }
        b.set_current_key(key).unwrap();
        v.update(b, &NS, key).unwrap();
        l.add_all(b, &NS, vec![key, key + 1]).unwrap();
        m.put(b, &NS, 7, key).unwrap();
    }
    // Lists and maps of the first half get a live part: only their expired parts go.
    b.set_current_key(0).unwrap();
    l.add(b, &NS, 1_000).unwrap();
    m.put(b, &NS, 8, 1_000).unwrap();
}

type Three = (
    ValueState<Ns, u64>,
    ListState<Ns, u64>,
    MapState<Ns, u8, u64>,
);

fn three(b: &mut StateBackend<u64>, ttl: StateTtlConfig) -> Three {
    (
        b.value_state(&ValueStateDescriptor::new("v").with_ttl(ttl))
            .unwrap(),
        b.list_state(&ListStateDescriptor::new("l").with_ttl(ttl))
            .unwrap(),
        b.map_state(&MapStateDescriptor::new("m").with_ttl(ttl))
            .unwrap(),
    )
}

#[test]
fn full_snapshots_and_canonical_savepoints_leave_out_what_expired() {
    let rt = runtime();
    rt.block_on(async {
        let n = 40;
        for kind in backend_kinds() {
            // A RocksDB checkpoint is its SST files as they are (cleanup there is compaction's).
            let formats: &[bool] = match kind {
                BackendKind::Heap => &[false, true],
                BackendKind::RocksDb => &[true],
            };
            for &canonical in formats {
                let dir = tempfile::tempdir().unwrap();
                let storage = CheckpointStorage::in_memory("ttl").unwrap();
                let clock = Arc::new(ManualClock::new(UNIX_EPOCH + Duration::from_secs(1_000)));
                let config = backend_config(kind, dir.path());
                let mut b = StateBackend::<u64>::new(&identity(MAX_P, 1, 0), &config).unwrap();
                b.set_clock(clock.clone());
                // Expired values are returned until cleaned up: what a restore reads is what was written.
                let lax = StateTtlConfig {
                    visibility: TtlVisibility::ReturnExpiredIfNotCleanedUp,
                    ..StateTtlConfig::new(1_000)
                };
                fill_three(&mut b, &clock, lax, n);
                clock.advance(Duration::from_millis(500));
                let pending = if canonical {
                    b.savepoint(1, &storage, SavepointFormat::Canonical)
                } else {
                    b.snapshot(1, &storage)
                };
                let handle = pending.unwrap().run().await.unwrap().handle;
                let handles = [handle];
                let id = identity(MAX_P, 1, 0);
                let mut r: StateBackend<u64> =
                    StateBackend::restore(&id, &config, &storage, &handles, RestoreMode::NoClaim)
                        .await
                        .unwrap();
                r.set_clock(clock.clone());
                let (v, l, m) = three(&mut r, lax);
                let what = format!("{kind}, canonical {canonical}");
                for key in 0..n {
                    r.set_current_key(key).unwrap();
                    let expired = key < n / 2;
                    let value = v.value(&r, &NS).unwrap();
                    assert_eq!(value, (!expired).then_some(key), "{what}: key {key}");
                    let mut list = l.get(&r, &NS).unwrap();
                    let mut entries = m.entries(&r, &NS).unwrap();
                    entries.sort_unstable();
                    match (key, expired) {
                        (0, _) => {
                            assert_eq!(list, [1_000], "{what}");
                            assert_eq!(entries, [(8, 1_000)], "{what}");
                        }
                        (_, true) => {
                            assert!(list.is_empty() && entries.is_empty(), "{what}: key {key}")
                        }
                        (_, false) => {
                            list.sort_unstable();
                            assert_eq!(list, [key, key + 1], "{what}");
                            assert_eq!(entries, [(7, key)], "{what}");
                        }
                    }
                }
            }
        }
    });
}

#[cfg(feature = "rocksdb")]
#[test]
fn rocksdb_compaction_removes_expired_rows() {
    let mut b = lsm::<u64>(MAX_P, 1, 0);
    let clock = manual_clock(&mut b);
    // Expired values are returned until cleaned up: a read shows whether compaction removed a row.
    let lax = StateTtlConfig {
        visibility: TtlVisibility::ReturnExpiredIfNotCleanedUp,
        ..StateTtlConfig::new(1_000)
    };
    let v = b
        .value_state(&ValueStateDescriptor::<Ns, u64>::new("v").with_ttl(lax))
        .unwrap();
    let l = b
        .list_state(&ListStateDescriptor::<Ns, u64>::new("l").with_ttl(lax))
        .unwrap();
    let m = b
        .map_state(&MapStateDescriptor::<Ns, u8, u64>::new("m").with_ttl(lax))
        .unwrap();
    let plain = b
        .value_state(&ValueStateDescriptor::<Ns, u64>::new("plain"))
        .unwrap();
    let n = 4_000u64;
    for key in 0..n {
        if key == n / 2 {
            clock.advance(Duration::from_millis(500));
        }
        b.set_current_key(key).unwrap();
        v.update(&mut b, &NS, key).unwrap();
        l.update(&mut b, &NS, vec![key]).unwrap();
        m.put(&mut b, &NS, 1, key).unwrap();
        plain.update(&mut b, &NS, key).unwrap();
    }
    // Key 0's list gets a live element: compaction keeps it and drops the expired one.
    b.set_current_key(0).unwrap();
    l.add(&mut b, &NS, 7).unwrap();
    let sst = |b: &statebackend::rocksdb::RocksDbKeyedStateBackend<u64>| {
        b.compact().unwrap();
        b.aggregated_int_property("rocksdb.total-sst-files-size")
            .unwrap()
            .unwrap()
    };
    let before = sst(&b);
    clock.advance(Duration::from_millis(500));
    let after = sst(&b);
    for key in 0..n {
        b.set_current_key(key).unwrap();
        let expired = key < n / 2;
        assert_eq!(
            v.value(&b, &NS).unwrap(),
            (!expired).then_some(key),
            "key {key}"
        );
        assert_eq!(
            m.get(&b, &NS, &1).unwrap(),
            (!expired).then_some(key),
            "key {key}"
        );
        let list = l.get(&b, &NS).unwrap();
        match key {
            0 => assert_eq!(list, [7]),
            _ if expired => assert!(list.is_empty(), "key {key}"),
            _ => assert_eq!(list, [key]),
        }
        assert_eq!(plain.value(&b, &NS).unwrap(), Some(key), "no TTL: kept");
    }
    // Three TTL states lost half their rows; the plain state kept all of its.
    assert!(after < before * 8 / 10, "{before} -> {after} bytes");
}
