//! Incremental TTL cleanup on the heap backend (`docs/ttl.md`): between records, expired values, list
//! elements and map entries leave memory, a bounded number of map slots per record; a snapshot taken
//! before keeps them; 0 slots per record turns it off.

use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use statebackend::heap::{HeapConfig, HeapKeyedStateBackend};
use statebackend::keyed::{StateTtlConfig, TtlVisibility};
use statebackend::*;

use crate::common::*;

type Ns = VoidNamespace;
const NS: VoidNamespace = VoidNamespace;
const KEYS: u64 = 20_000;

struct Setup {
    backend: HeapKeyedStateBackend<u64>,
    clock: Arc<ManualClock>,
    value: ValueState<Ns, u64>,
    list: ListState<Ns, u64>,
    map: MapState<Ns, u32, u64>,
}

/// Reads return expired entries until cleanup removes them, so what a read returns is what is stored.
fn ttl() -> StateTtlConfig {
    StateTtlConfig {
        visibility: TtlVisibility::ReturnExpiredIfNotCleanedUp,
        ..StateTtlConfig::new(1_000)
    }
}

/// `KEYS` keys written at t: a value, a list element and a map entry each; the odd keys again at t + 600
/// (a second list element and map entry), so that at t + 1,000 the even keys' state has all expired and
/// the odd keys' half of it.
fn setup(slots_per_record: usize) -> Setup {
    let config = HeapConfig {
        ttl_cleanup_slots_per_record: slots_per_record,
        ..HeapConfig::default()
    };
    let mut backend = HeapKeyedStateBackend::new(identity(128, 1, 0), config).unwrap();
    let clock = Arc::new(ManualClock::new(UNIX_EPOCH + Duration::from_secs(1_000)));
    backend.set_clock(clock.clone());
    let value = (backend.value_state(&ValueStateDescriptor::new("value").with_ttl(ttl()))).unwrap();
    let list = (backend.list_state(&ListStateDescriptor::new("list").with_ttl(ttl()))).unwrap();
    let map = (backend.map_state(&MapStateDescriptor::new("map").with_ttl(ttl()))).unwrap();
    let mut s = Setup {
        backend,
        clock,
        value,
        list,
        map,
    };
    for round in 0..2 {
        for key in (0..KEYS).filter(|k| round == 0 || k % 2 == 1) {
            let b = &mut s.backend;
            b.set_current_key(key).unwrap();
            s.value.update(b, &NS, key).unwrap();
            s.list.add(b, &NS, key + round).unwrap();
            s.map.put(b, &NS, round as u32, key).unwrap();
        }
        s.clock.advance(Duration::from_millis(600));
    }
    s
}

/// Processes `records` records on keys beyond the written ones (they read and write nothing).
fn idle_records(b: &mut HeapKeyedStateBackend<u64>, records: u64) {
    for i in 0..records {
        b.set_current_key(KEYS + i).unwrap();
    }
}

#[test]
fn incremental_cleanup_removes_expired_values_list_elements_and_map_entries_between_records() {
    let mut s = setup(HeapConfig::default().ttl_cleanup_slots_per_record);
    // t + 1,200: the first writes (t) expired, the second (t + 600) live.
    assert_eq!(s.backend.total_entries(), 3 * KEYS as usize);
    // A snapshot taken now keeps its view; cleanup runs while its asynchronous phase is pending.
    let storage = CheckpointStorage::in_memory("cleanup").unwrap();
    let pending = s.backend.snapshot(1, &storage).unwrap();
    // 60,000 entries in maps at most 7/8 full: at 8 slots per record a round takes under 24k records.
    idle_records(&mut s.backend, 30_000);
    // The even keys' value, list and map are gone; the odd keys keep all three, with one list element
    // and one map entry left.
    assert_eq!(s.backend.total_entries(), 3 * (KEYS / 2) as usize);
    for key in [0, 1, 2, 3, KEYS - 2, KEYS - 1] {
        let b = &mut s.backend;
        b.set_current_key(key).unwrap();
        let odd = key % 2 == 1;
        assert_eq!(s.value.value(b, &NS).unwrap(), odd.then_some(key), "{key}");
        assert_eq!(
            s.list.get(b, &NS).unwrap(),
            if odd { vec![key + 1] } else { vec![] },
            "{key}"
        );
        let entries = s.map.entries(b, &NS).unwrap();
        assert_eq!(entries, if odd { vec![(1, key)] } else { vec![] }, "{key}");
    }
    // The snapshot, written out after the cleanup ran on the live maps, restores what was live when it
    // was taken.
    let rt = runtime();
    let handle = rt.block_on(pending.run()).unwrap().handle;
    let mut r = rt
        .block_on(HeapKeyedStateBackend::<u64>::restore(
            identity(128, 1, 0),
            HeapConfig::default(),
            &storage,
            &[handle],
            RestoreMode::NoClaim,
        ))
        .unwrap();
    r.set_clock(s.clock.clone());
    let list = r.list_state(&ListStateDescriptor::<Ns, u64>::new("list").with_ttl(ttl()));
    let list = list.unwrap();
    for key in 0..KEYS {
        r.set_current_key(key).unwrap();
        let expected = if key % 2 == 1 { vec![key + 1] } else { vec![] };
        assert_eq!(list.get(&r, &NS).unwrap(), expected, "{key}");
    }
}

#[test]
fn no_cleanup_with_zero_slots_per_record() {
    let mut s = setup(0);
    idle_records(&mut s.backend, 30_000);
    assert_eq!(s.backend.total_entries(), 3 * KEYS as usize);
    let b = &mut s.backend;
    b.set_current_key(0).unwrap();
    assert_eq!(
        s.value.value(b, &NS).unwrap(),
        Some(0),
        "expired, not cleaned up"
    );
}
