//! `TtlUpdate::OnReadAndWrite` (`docs/ttl.md`): a read that returns an entry restarts its TTL, on every
//! backend and every read path: value (and reducing) `get`, `get_batch`, list `get` (its live elements),
//! map `get`, `contains` and iteration (the entries returned); `is_empty` and entries not returned do not
//! restart. The new stamps are written at the next record's edge, so they also reach snapshots.

use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use statebackend::keyed::{StateTtlConfig, TtlUpdate};
use statebackend::*;

use crate::common::*;

type Ns = VoidNamespace;
const NS: VoidNamespace = VoidNamespace;

fn on_read() -> StateTtlConfig {
    StateTtlConfig {
        update: TtlUpdate::OnReadAndWrite,
        ..StateTtlConfig::new(100)
    }
}

/// Moves `clock` by `ms` and starts a record of `key`.
fn tick<B: KeyedStateBackend<u64>>(b: &mut B, clock: &ManualClock, ms: u64, key: u64) {
    clock.advance(Duration::from_millis(ms));
    b.set_current_key(key).unwrap();
}

pub fn reads_restart_the_ttl<B: KeyedStateBackend<u64>>(b: &mut B) {
    let clock = Arc::new(ManualClock::new(UNIX_EPOCH + Duration::from_secs(1_000)));
    b.set_clock(clock.clone());
    let ttl = on_read();
    let value = b
        .value_state(&ValueStateDescriptor::<Ns, u32>::new("v").with_ttl(ttl))
        .unwrap();
    let plain = b
        .value_state(&ValueStateDescriptor::<Ns, u32>::new("w").with_ttl(StateTtlConfig::new(100)))
        .unwrap();
    let list = b
        .list_state(&ListStateDescriptor::<Ns, u32>::new("l").with_ttl(ttl))
        .unwrap();
    let map = b
        .map_state(&MapStateDescriptor::<Ns, u8, u32>::new("m").with_ttl(ttl))
        .unwrap();
    // t = 0: key 1 gets a value, a list of two and a map of three; key 2 a value.
    b.set_current_key(2).unwrap();
    value.update(b, &NS, 20).unwrap();
    b.set_current_key(1).unwrap();
    value.update(b, &NS, 10).unwrap();
    plain.update(b, &NS, 11).unwrap();
    list.add_all(b, &NS, vec![1, 2]).unwrap();
    map.put_all(b, &NS, [(1, 10), (2, 20), (3, 30)]).unwrap();
    // t = 60: one list element more; reads of the value, the list, map entry 1 (get) and 2 (contains),
    // and of key 2's value by a batch read.
    tick(b, &clock, 60, 1);
    list.add(b, &NS, 3).unwrap();
    assert_eq!(value.value(b, &NS).unwrap(), Some(10));
    assert_eq!(plain.value(b, &NS).unwrap(), Some(11));
    assert_eq!(list.get(b, &NS).unwrap(), [1, 2, 3]);
    assert_eq!(map.get(b, &NS, &1).unwrap(), Some(10));
    assert!(map.contains(b, &NS, &2).unwrap());
    assert!(!map.is_empty(b, &NS).unwrap(), "is_empty restarts nothing");
    let mut batch = Vec::new();
    value.get_batch(b, &NS, &[2, 3], &mut batch).unwrap();
    assert_eq!(batch, [Some(20), None]);
    // t = 120: what was read at 60 lives until 160; the OnCreateAndWrite value and map entry 3 expired.
    tick(b, &clock, 60, 1);
    assert_eq!(value.value(b, &NS).unwrap(), Some(10));
    assert_eq!(
        plain.value(b, &NS).unwrap(),
        None,
        "a plain TTL is not restarted"
    );
    assert_eq!(list.get(b, &NS).unwrap(), [1, 2, 3]);
    let mut entries = map.entries(b, &NS).unwrap();
    entries.sort_unstable();
    assert_eq!(entries, [(1, 10), (2, 20)], "entry 3 was not read");
    b.set_current_key(2).unwrap();
    assert_eq!(
        value.value(b, &NS).unwrap(),
        Some(20),
        "restarted by the batch read"
    );
    // Each read at 120 restarted again: at 219 all live, at 220 all expired.
    tick(b, &clock, 99, 1);
    assert_eq!(value.value(b, &NS).unwrap(), Some(10));
    tick(b, &clock, 101, 1);
    assert_eq!(value.value(b, &NS).unwrap(), None);
    assert!(list.get(b, &NS).unwrap().is_empty());
    assert!(map.is_empty(b, &NS).unwrap());
    // A reducing state's `get` restarts it the same way.
    let sum = b
        .reducing_state(&ReducingStateDescriptor::<Ns, u64>::new("r", |a, b| a + b).with_ttl(ttl))
        .unwrap();
    b.set_current_key(5).unwrap();
    sum.add(b, &NS, 1).unwrap();
    tick(b, &clock, 90, 5);
    assert_eq!(sum.get(b, &NS).unwrap(), Some(1));
    tick(b, &clock, 90, 5);
    assert_eq!(
        sum.get(b, &NS).unwrap(),
        Some(1),
        "restarted by the read at 90"
    );
    sum.add(b, &NS, 2).unwrap();
    assert_eq!(sum.get(b, &NS).unwrap(), Some(3));
}

/// A read queued for the next record's edge, then a snapshot before any: the snapshot applies the refresh
/// first, so the restored value lives a TTL from the read (through the engine's `StateBackend`, whose
/// reads queue refreshes of its own type).
#[test]
fn a_snapshot_right_after_a_read_carries_the_restarted_ttl() {
    let rt = runtime();
    rt.block_on(async {
        for kind in backend_kinds() {
            let dir = tempfile::tempdir().unwrap();
            let storage = CheckpointStorage::in_memory("on-read").unwrap();
            let clock = Arc::new(ManualClock::new(UNIX_EPOCH + Duration::from_secs(1_000)));
            let config = backend_config(kind, dir.path());
            let id = identity(128, 1, 0);
            let mut b = StateBackend::<u64>::new(&id, &config).unwrap();
            b.set_clock(clock.clone());
            let d = ValueStateDescriptor::<Ns, u32>::new("v").with_ttl(on_read());
            let value = b.value_state(&d).unwrap();
            b.set_current_key(1).unwrap();
            value.update(&mut b, &NS, 10).unwrap();
            tick(&mut b, &clock, 60, 1);
            assert_eq!(value.value(&b, &NS).unwrap(), Some(10));
            let handle = b.snapshot(1, &storage).unwrap().run().await.unwrap().handle;
            assert_eq!(
                b.current_key(),
                Some(&1),
                "the snapshot keeps the current key"
            );
            drop(b);
            let mut r =
                StateBackend::restore(&id, &config, &storage, &[handle], RestoreMode::NoClaim)
                    .await
                    .unwrap();
            r.set_clock(clock.clone());
            let value = r.value_state(&d).unwrap();
            // t = 150: written at 0, read at 60.
            tick(&mut r, &clock, 90, 1);
            assert_eq!(value.value(&r, &NS).unwrap(), Some(10), "{kind}");
        }
    });
}
