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
                let restored_kind = match (canonical, kind) {
                    (true, BackendKind::Heap) if backend_kinds().len() > 1 => BackendKind::RocksDb,
                    (true, _) => BackendKind::Heap,
                    (false, k) => k,
                };
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
                // Registered without TTL, the stored `ttl(u64:be)` values do not read as `u64`.
                let plain = ValueStateDescriptor::<Ns, u64>::new("v");
                let (id, handles) = (identity(MAX_P, 1, 0), [handle.clone()]);
                let mut fresh: StateBackend<u64> =
                    StateBackend::restore(&id, &config, &storage, &handles, RestoreMode::NoClaim)
                        .await
                        .unwrap();
                let err = fresh.value_state(&plain).err();
                assert!(
                    matches!(err, Some(Error::IncompatibleSchema { .. })),
                    "{kind} -> {restored_kind}: {err:?}"
                );
            }
        }
    });
}
