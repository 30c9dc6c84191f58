//! The conformance suite: semantics every keyed state backend must have. Each check is generic over
//! `KeyedStateBackend`; the `backends!` list at the bottom runs it against every backend. `model.rs` checks
//! random operations against a `BTreeMap` model through checkpoints and restores.

#![allow(clippy::unwrap_used, reason = "tests fail loudly on unexpected errors")]

#[path = "../common/mod.rs"]
mod common;
mod incremental_model;
mod model;
mod sizes;
mod timers;
mod ttl;
mod ttl_cleanup;
mod ttl_model;
mod ttl_switch;
mod ttl_update;

use statebackend::heap::{HeapConfig, HeapKeyedStateBackend};
use statebackend::key_group::assign_to_key_group;
use statebackend::*;

mod api;
use api::*;

type Ns = VoidNamespace;
const NS: VoidNamespace = VoidNamespace;

struct Sum;
impl AggregateFunction<u64, (u64, u64), f64> for Sum {
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

fn value_state_semantics<B: KeyedStateBackend<u64>>(b: &mut B) {
    let s = b
        .value_state(&ValueStateDescriptor::<Ns, String>::new("v"))
        .unwrap();
    assert_eq!(
        s.value(b, &NS).unwrap_err().kind(),
        ErrorKind::IllegalState,
        "no current key yet"
    );
    b.set_current_key(1).unwrap();
    assert_eq!(s.value(b, &NS).unwrap(), None);
    s.update(b, &NS, "a".into()).unwrap();
    b.set_current_key(2).unwrap();
    assert_eq!(s.value(b, &NS).unwrap(), None, "values are per key");
    s.update(b, &NS, "b".into()).unwrap();
    b.set_current_key(1).unwrap();
    assert_eq!(s.value(b, &NS).unwrap().as_deref(), Some("a"));
    s.update(b, &NS, "c".into()).unwrap();
    assert_eq!(s.value(b, &NS).unwrap().as_deref(), Some("c"));
    s.clear(b, &NS).unwrap();
    assert_eq!(s.value(b, &NS).unwrap(), None);
    let mut keys = s.keys_with_state(b, &NS).unwrap();
    keys.sort();
    assert_eq!(keys, vec![2]);
}

fn namespaces_are_isolated<B: KeyedStateBackend<u64>>(b: &mut B) {
    let s = b
        .value_state(&ValueStateDescriptor::<u64, u64>::new("windowed"))
        .unwrap();
    b.set_current_key(7).unwrap();
    s.update(b, &100, 1).unwrap();
    s.update(b, &200, 2).unwrap();
    assert_eq!(s.value(b, &100).unwrap(), Some(1));
    assert_eq!(s.value(b, &200).unwrap(), Some(2));
    s.clear(b, &100).unwrap();
    assert_eq!(s.value(b, &100).unwrap(), None);
    assert_eq!(s.value(b, &200).unwrap(), Some(2));
    assert_eq!(s.keys_with_state(b, &200).unwrap(), vec![7]);
    assert!(s.keys_with_state(b, &100).unwrap().is_empty());
}

fn list_state_semantics<B: KeyedStateBackend<u64>>(b: &mut B) {
    let s = b
        .list_state(&ListStateDescriptor::<Ns, i32>::new("l"))
        .unwrap();
    b.set_current_key(3).unwrap();
    assert!(s.get(b, &NS).unwrap().is_empty());
    s.add(b, &NS, 1).unwrap();
    s.add_all(b, &NS, vec![2, 3]).unwrap();
    assert_eq!(s.get(b, &NS).unwrap(), vec![1, 2, 3]);
    s.update(b, &NS, vec![9]).unwrap();
    assert_eq!(s.get(b, &NS).unwrap(), vec![9]);
    s.update(b, &NS, vec![]).unwrap();
    assert!(s.get(b, &NS).unwrap().is_empty());
    assert!(
        s.keys_with_state(b, &NS).unwrap().is_empty(),
        "an empty list is no list"
    );
    s.add(b, &NS, 5).unwrap();
    s.clear(b, &NS).unwrap();
    assert!(s.get(b, &NS).unwrap().is_empty());
}

fn map_state_semantics<B: KeyedStateBackend<u64>>(b: &mut B) {
    let s = b
        .map_state(&MapStateDescriptor::<Ns, String, u64>::new("m"))
        .unwrap();
    b.set_current_key(4).unwrap();
    assert!(s.is_empty(b, &NS).unwrap());
    s.put(b, &NS, "x".into(), 1).unwrap();
    s.put(b, &NS, "y".into(), 2).unwrap();
    s.put(b, &NS, "x".into(), 3).unwrap();
    assert_eq!(s.get(b, &NS, &"x".to_string()).unwrap(), Some(3));
    assert!(s.contains(b, &NS, &"y".to_string()).unwrap());
    let mut entries = s.entries(b, &NS).unwrap();
    entries.sort();
    assert_eq!(entries, vec![("x".to_string(), 3), ("y".to_string(), 2)]);
    s.remove(b, &NS, &"x".to_string()).unwrap();
    s.remove(b, &NS, &"absent".to_string()).unwrap();
    assert_eq!(s.get(b, &NS, &"x".to_string()).unwrap(), None);
    b.set_current_key(5).unwrap();
    assert!(s.is_empty(b, &NS).unwrap(), "maps are per key");
    b.set_current_key(4).unwrap();
    s.remove(b, &NS, &"y".to_string()).unwrap();
    assert!(
        s.keys_with_state(b, &NS).unwrap().is_empty(),
        "an empty map is no map"
    );
    s.put(b, &NS, "z".into(), 1).unwrap();
    s.clear(b, &NS).unwrap();
    assert!(s.is_empty(b, &NS).unwrap());
}

fn reducing_and_aggregating_semantics<B: KeyedStateBackend<u64>>(b: &mut B) {
    let r = b
        .reducing_state(&ReducingStateDescriptor::<Ns, u64>::new("max", |a, b| {
            *a.max(b)
        }))
        .unwrap();
    let a = b
        .aggregating_state(&AggregatingStateDescriptor::<Ns, u64, (u64, u64), f64>::new("avg", Sum))
        .unwrap();
    b.set_current_key(6).unwrap();
    assert_eq!(r.get(b, &NS).unwrap(), None);
    assert_eq!(a.get(b, &NS).unwrap(), None);
    for v in [3, 9, 4] {
        r.add(b, &NS, v).unwrap();
        a.add(b, &NS, &v).unwrap();
    }
    assert_eq!(r.get(b, &NS).unwrap(), Some(9));
    assert_eq!(a.get(b, &NS).unwrap(), Some(16.0 / 3.0));
    r.clear(b, &NS).unwrap();
    a.clear(b, &NS).unwrap();
    assert_eq!(r.get(b, &NS).unwrap(), None);
    assert_eq!(a.get(b, &NS).unwrap(), None);
    // `add_first` says which add found the state empty: the first, and the first after a clear.
    let firsts: Vec<bool> = [5, 2, 7]
        .into_iter()
        .map(|v| r.add_first(b, &NS, v).unwrap())
        .collect();
    assert_eq!(firsts, [true, false, false]);
    assert_eq!(r.get(b, &NS).unwrap(), Some(7));
    r.clear(b, &NS).unwrap();
    assert!(r.add_first(b, &NS, 1).unwrap());
    assert_eq!(r.get(b, &NS).unwrap(), Some(1));
}

fn registration_rules<B: KeyedStateBackend<u64>>(b: &mut B) {
    let first = b
        .value_state(&ValueStateDescriptor::<Ns, u64>::new("same"))
        .unwrap();
    let again = b
        .value_state(&ValueStateDescriptor::<Ns, u64>::new("same"))
        .unwrap();
    assert_eq!(
        first.id(),
        again.id(),
        "registering twice gives the same state"
    );
    let err = b
        .list_state(&ListStateDescriptor::<Ns, u64>::new("same"))
        .map(|_| ())
        .unwrap_err();
    assert_eq!(
        err.kind(),
        ErrorKind::InvalidArgument,
        "another kind under the same name"
    );
    let err = b
        .value_state(&ValueStateDescriptor::<Ns, String>::new("same"))
        .map(|_| ())
        .unwrap_err();
    assert_eq!(
        err.kind(),
        ErrorKind::InvalidArgument,
        "another codec under the same name"
    );
}

fn keys_outside_the_range_are_rejected<B: KeyedStateBackend<u64>>(b: &mut B) {
    let range = b.key_group_range();
    let outside = (0u64..10_000)
        .find(|k| {
            !range.contains(assign_to_key_group(&k.to_be_bytes(), b.max_parallelism()).unwrap())
        })
        .expect("a key of another subtask");
    assert_eq!(
        b.set_current_key(outside).unwrap_err().kind(),
        ErrorKind::InvalidArgument
    );
}

fn many_keys_grow_and_stay_correct<B: KeyedStateBackend<u64>>(b: &mut B) {
    let s = b
        .value_state(&ValueStateDescriptor::<Ns, u64>::new("many"))
        .unwrap();
    for k in 0..50_000u64 {
        b.set_current_key(k).unwrap();
        s.update(b, &NS, k * 2).unwrap();
    }
    for k in (0..50_000u64).step_by(7) {
        b.set_current_key(k).unwrap();
        assert_eq!(s.value(b, &NS).unwrap(), Some(k * 2));
    }
    assert_eq!(s.keys_with_state(b, &NS).unwrap().len(), 50_000);
}

macro_rules! conformance {
    ($backend:ident, $make:expr, $make_half:expr) => {
        mod $backend {
            use super::*;
            #[test]
            fn value_state() {
                value_state_semantics(&mut $make);
            }
            #[test]
            fn namespaces() {
                namespaces_are_isolated(&mut $make);
            }
            #[test]
            fn list_state() {
                list_state_semantics(&mut $make);
            }
            #[test]
            fn map_state() {
                map_state_semantics(&mut $make);
            }
            #[test]
            fn reducing_and_aggregating() {
                reducing_and_aggregating_semantics(&mut $make);
            }
            #[test]
            fn registration() {
                registration_rules(&mut $make);
            }
            #[test]
            fn key_range() {
                keys_outside_the_range_are_rejected(&mut $make_half);
            }
            #[test]
            fn many_keys() {
                many_keys_grow_and_stay_correct(&mut $make);
            }
            #[test]
            fn map_streaming() {
                map_streaming_and_bulk_updates(&mut $make);
            }
            #[test]
            fn keys_and_namespaces() {
                keys_and_namespaces_and_apply_to_all_keys(&mut $make);
            }
            #[test]
            fn merge_namespaces() {
                merging_namespaces(&mut $make);
            }
            #[test]
            fn drop_state() {
                dropping_a_state(&mut $make);
            }
            #[test]
            fn batches() {
                batches_agree_with_single_key_access(&mut $make);
            }
            #[test]
            fn batches_unowned() {
                batches_with_an_unowned_key_change_nothing(&mut $make_half);
            }
            #[test]
            fn routed_keys() {
                routed_keys_land_where_hashed_keys_do(&mut $make);
            }
            #[test]
            fn timers() {
                timers::timer_semantics(&mut $make);
            }
            #[test]
            fn many_timers() {
                timers::many_timers_fire_in_order(&mut $make);
            }
            #[test]
            fn ttl_values() {
                ttl::value_reducing_and_aggregating_expire(&mut $make);
            }
            #[test]
            fn ttl_lists_and_maps() {
                ttl::lists_and_maps_expire_per_element_and_entry(&mut $make);
            }
            #[test]
            fn ttl_key_listings() {
                ttl::key_listings_leave_out_keys_whose_state_expired(&mut $make);
            }
            #[test]
            fn ttl_event_time() {
                ttl::event_time_visibility_and_registration(&mut $make);
            }
            #[test]
            fn ttl_on_read_and_write() {
                ttl_update::reads_restart_the_ttl(&mut $make);
            }
            #[test]
            fn state_sizes() {
                sizes::sizes_at_a_checkpoint(&mut $make, false);
            }
            #[test]
            fn state_sizes_canonical() {
                sizes::sizes_at_a_checkpoint(&mut $make, true);
            }
        }
    };
}

conformance!(
    heap,
    HeapKeyedStateBackend::<u64>::new(common::identity(128, 1, 0), HeapConfig::default()).unwrap(),
    HeapKeyedStateBackend::<u64>::new(common::identity(128, 2, 0), HeapConfig::default()).unwrap()
);

/// Heap settings with incremental checkpoints on (chains of at most 3 files).
fn heap_incremental() -> HeapConfig {
    HeapConfig {
        incremental: true,
        max_chain_files: 3,
        ..HeapConfig::default()
    }
}

conformance!(
    heap_incremental,
    HeapKeyedStateBackend::<u64>::new(common::identity(128, 1, 0), heap_incremental()).unwrap(),
    HeapKeyedStateBackend::<u64>::new(common::identity(128, 2, 0), heap_incremental()).unwrap()
);

#[cfg(feature = "rocksdb")]
conformance!(
    lsm,
    common::lsm::<u64>(128, 1, 0),
    common::lsm::<u64>(128, 2, 0)
);

/// The runtime-chosen backend type, heap inside.
fn chosen(kind: BackendKind, parallelism: u32, dir: &std::path::Path) -> StateBackend<u64> {
    let identity = SubtaskIdentity::new("conformance", 128, parallelism, 0).unwrap();
    StateBackend::new(&identity, &common::backend_config(kind, dir)).unwrap()
}

conformance!(
    chosen_heap,
    chosen(BackendKind::Heap, 1, &std::env::temp_dir()),
    chosen(BackendKind::Heap, 2, &std::env::temp_dir())
);

#[cfg(feature = "rocksdb")]
conformance!(
    chosen_lsm,
    chosen(BackendKind::RocksDb, 1, &std::env::temp_dir()),
    chosen(BackendKind::RocksDb, 2, &std::env::temp_dir())
);
