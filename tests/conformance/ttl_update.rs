//! `TtlUpdate::OnReadAndWrite` (`docs/ttl.md`): a read that returns an entry restarts its TTL, on every
//! backend and every read path: value (and reducing) `get`, `get_batch`, list `get` (its live elements),
//! map `get`, `contains` and iteration (the entries returned); `is_empty` and entries not returned do not
//! restart. The new stamps are written at the next record's edge, so they also reach snapshots.

use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use statebackend::keyed::{StateTtlConfig, TtlTime, TtlUpdate};
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

/// Found by the TTL model test with reads that restart: a read's new stamps wait for the next record's
/// edge, and time moving before it (the clock; a watermark) made key listings, batch reads and reads
/// of the same key again judge what the read kept alive by the old stamps and leave it out.
/// (Processing time is sampled per record, so only listings and batch reads see the clock move before
/// the next record; the watermark moves for every read.)
#[test]
fn what_a_read_kept_alive_stays_on_every_read_path_when_time_moves_before_the_next_record() {
    for kind in backend_kinds() {
        let dir = tempfile::tempdir().unwrap();
        let config = backend_config(kind, dir.path());
        let mut b = StateBackend::<u64>::new(&identity(128, 1, 0), &config).unwrap();
        let clock = Arc::new(ManualClock::new(UNIX_EPOCH + Duration::from_secs(1_000)));
        b.set_clock(clock.clone());
        let ttl = on_read();
        let event = StateTtlConfig {
            time: TtlTime::EventTime,
            ..on_read()
        };
        let value = b
            .value_state(&ValueStateDescriptor::<Ns, u32>::new("v").with_ttl(ttl))
            .unwrap();
        let list = b
            .list_state(&ListStateDescriptor::<Ns, u32>::new("l").with_ttl(ttl))
            .unwrap();
        let map = b
            .map_state(&MapStateDescriptor::<Ns, u8, u32>::new("m").with_ttl(ttl))
            .unwrap();
        let late = b
            .value_state(&ValueStateDescriptor::<Ns, u32>::new("e").with_ttl(event))
            .unwrap();
        let late_map = b
            .map_state(&MapStateDescriptor::<Ns, u8, u32>::new("em").with_ttl(event))
            .unwrap();
        b.set_ttl_watermark(1);
        b.set_current_key(1).unwrap();
        value.update(&mut b, &NS, 10).unwrap();
        list.add(&mut b, &NS, 1).unwrap();
        map.put(&mut b, &NS, 1, 10).unwrap();
        late.update(&mut b, &NS, 7).unwrap();
        late_map.put(&mut b, &NS, 1, 10).unwrap();
        late_map.put(&mut b, &NS, 2, 20).unwrap();
        // At 90 (clock and watermark) the value, the list, the map entry and the event-time value and
        // map entry 1 are read, which restarts them.
        tick(&mut b, &clock, 90, 1);
        b.set_ttl_watermark(91);
        assert_eq!(value.value(&b, &NS).unwrap(), Some(10));
        assert_eq!(list.get(&b, &NS).unwrap(), [1]);
        assert_eq!(map.get(&b, &NS, &1).unwrap(), Some(10));
        assert_eq!(late.value(&b, &NS).unwrap(), Some(7));
        assert_eq!(late_map.get(&b, &NS, &1).unwrap(), Some(10));
        // Time moves on with no record edge: at 150 only what was not read has expired.
        clock.advance(Duration::from_millis(60));
        b.set_ttl_watermark(150);
        for (id, what) in [
            (value.id(), "value"),
            (list.id(), "list"),
            (map.id(), "map"),
        ] {
            assert_eq!(b.keys(id, &NS).unwrap(), [1], "{kind}: {what} listed");
            let all: Vec<(u64, Ns)> = b.keys_and_namespaces(id).unwrap();
            assert_eq!(all, [(1, NS)], "{kind}: {what}");
        }
        let mut batch = Vec::new();
        value.get_batch(&b, &NS, &[1], &mut batch).unwrap();
        assert_eq!(batch, [Some(10)], "{kind}: batch read");
        assert_eq!(late.value(&b, &NS).unwrap(), Some(7), "{kind}: watermark");
        assert_eq!(late_map.get(&b, &NS, &1).unwrap(), Some(10), "{kind}");
        assert_eq!(late_map.get(&b, &NS, &2).unwrap(), None, "{kind}");
        assert_eq!(late_map.entries(&b, &NS).unwrap(), [(1, 10)], "{kind}");
        assert!(!late_map.is_empty(&b, &NS).unwrap(), "{kind}");
        assert_eq!(b.keys(late_map.id(), &NS).unwrap(), [1], "{kind}");
        // A write to the map writes the queued stamps first: entry 1 lives on, entry 2 stays expired.
        late_map.put(&mut b, &NS, 3, 30).unwrap();
        let mut entries = late_map.entries(&b, &NS).unwrap();
        entries.sort_unstable();
        assert_eq!(entries, [(1, 10), (3, 30)], "{kind}");
        // Nothing read at 150 or later outlives 250 (the list and the map were last read at 90).
        tick(&mut b, &clock, 100, 1);
        b.set_ttl_watermark(250);
        assert_eq!(value.value(&b, &NS).unwrap(), None, "{kind}");
        assert_eq!(late.value(&b, &NS).unwrap(), None, "{kind}");
        assert!(b.keys(list.id(), &NS).unwrap().is_empty(), "{kind}");
        assert!(b.keys(map.id(), &NS).unwrap().is_empty(), "{kind}");
    }
}

/// RocksDB's compaction filter runs beside the backend, with the clock read afresh: a compaction
/// between a read that restarted entries and the next record's edge keeps what the read kept alive
/// (a value, map entries, list elements), so the new stamps written at the edge find their rows; what
/// no read kept alive it removes. (Expired values are returned until cleaned up here, so a read shows
/// whether the compaction removed a row.)
#[cfg(feature = "rocksdb")]
#[test]
fn a_compaction_before_the_next_record_keeps_what_a_read_restarted() {
    let mut b = lsm::<u64>(128, 1, 0);
    let clock = Arc::new(ManualClock::new(UNIX_EPOCH + Duration::from_secs(1_000)));
    b.set_clock(clock.clone());
    let ttl = StateTtlConfig {
        visibility: statebackend::keyed::TtlVisibility::ReturnExpiredIfNotCleanedUp,
        ..on_read()
    };
    let value = b
        .value_state(&ValueStateDescriptor::<Ns, u32>::new("v").with_ttl(ttl))
        .unwrap();
    let list = b
        .list_state(&ListStateDescriptor::<Ns, u32>::new("l").with_ttl(ttl))
        .unwrap();
    let map = b
        .map_state(&MapStateDescriptor::<Ns, u8, u32>::new("m").with_ttl(ttl))
        .unwrap();
    for key in [1, 2] {
        b.set_current_key(key).unwrap();
        value.update(&mut b, &NS, 10).unwrap();
        list.update(&mut b, &NS, vec![1, 2]).unwrap();
        map.put(&mut b, &NS, 1, 10).unwrap();
        map.put(&mut b, &NS, 2, 20).unwrap();
    }
    b.compact().unwrap();
    // At 90 key 1's value, list and map entry 1 are read; key 2 is not.
    tick(&mut b, &clock, 90, 1);
    assert_eq!(value.value(&b, &NS).unwrap(), Some(10));
    assert_eq!(list.get(&b, &NS).unwrap(), [1, 2]);
    assert_eq!(map.get(&b, &NS, &1).unwrap(), Some(10));
    clock.advance(Duration::from_millis(60));
    b.compact().unwrap();
    // At 150, past the next edge: key 1's read entries were kept (and live until 190), the rest removed.
    b.set_current_key(1).unwrap();
    assert_eq!(value.value(&b, &NS).unwrap(), Some(10));
    assert_eq!(list.get(&b, &NS).unwrap(), [1, 2]);
    assert_eq!(map.entries(&b, &NS).unwrap(), [(1, 10)]);
    b.set_current_key(2).unwrap();
    assert_eq!(value.value(&b, &NS).unwrap(), None);
    assert!(list.get(&b, &NS).unwrap().is_empty());
    assert!(map.is_empty(&b, &NS).unwrap());
}

/// A write to a TTL state first writes what reads queued: a read's marks say what it kept alive only
/// while nothing changed it since. Here the map entry a read kept alive is removed before the next
/// record; the key's other entry expired, so the key is no longer listed.
#[test]
fn removing_what_a_read_kept_alive_leaves_nothing_kept_alive() {
    for kind in backend_kinds() {
        let dir = tempfile::tempdir().unwrap();
        let config = backend_config(kind, dir.path());
        let mut b = StateBackend::<u64>::new(&identity(128, 1, 0), &config).unwrap();
        let clock = Arc::new(ManualClock::new(UNIX_EPOCH + Duration::from_secs(1_000)));
        b.set_clock(clock.clone());
        let map = b
            .map_state(&MapStateDescriptor::<Ns, u8, u32>::new("m").with_ttl(on_read()))
            .unwrap();
        b.set_current_key(1).unwrap();
        map.put(&mut b, &NS, 1, 10).unwrap();
        tick(&mut b, &clock, 50, 1);
        map.put(&mut b, &NS, 2, 20).unwrap();
        tick(&mut b, &clock, 60, 1);
        assert_eq!(map.entries(&b, &NS).unwrap(), [(2, 20)], "{kind}");
        map.remove(&mut b, &NS, &2).unwrap();
        assert!(b.keys(map.id(), &NS).unwrap().is_empty(), "{kind}");
        assert!(map.is_empty(&b, &NS).unwrap(), "{kind}");
    }
}

/// The heap's incremental cleanup runs at record edges, and writing a queue of restarts sets current
/// keys (edges) and counts a batch's keys: it must not remove what the reads being written kept alive
/// (a batch read of every key restarts them; the clock then passes their first stamps; the next record
/// writes the new stamps, walking the whole map for cleanup as it goes).
#[test]
fn heap_cleanup_while_restarts_are_written_keeps_what_they_restart() {
    let config = statebackend::heap::HeapConfig {
        ttl_cleanup_slots_per_record: 1 << 20,
        ..Default::default()
    };
    let mut b =
        statebackend::heap::HeapKeyedStateBackend::<u64>::new(identity(128, 1, 0), config).unwrap();
    let clock = Arc::new(ManualClock::new(UNIX_EPOCH + Duration::from_secs(1_000)));
    b.set_clock(clock.clone());
    let value = b
        .value_state(&ValueStateDescriptor::<Ns, u64>::new("v").with_ttl(on_read()))
        .unwrap();
    let keys: Vec<u64> = (0..5_000).collect();
    for &key in &keys {
        b.set_current_key(key).unwrap();
        value.update(&mut b, &NS, key).unwrap();
    }
    clock.advance(Duration::from_millis(90));
    let mut read = Vec::new();
    value.get_batch(&b, &NS, &keys, &mut read).unwrap();
    assert!(read.iter().all(Option::is_some));
    clock.advance(Duration::from_millis(60));
    for &key in &keys {
        b.set_current_key(key).unwrap();
        assert_eq!(value.value(&b, &NS).unwrap(), Some(key), "key {key} at 150");
    }
}
