//! State sizes at a checkpoint (`docs/state-sizes.md`): every backend names each state with its entries
//! and bytes and each key group's bytes; the heap's figures are exact, RocksDB's estimates close to them.

use super::*;
use statebackend::snapshot::StateSizes;

const VALUES: u64 = 2_000;
const LISTS: u64 = 500;
const MAPS: u64 = 300;
const MAP_ENTRIES: u64 = 4;

/// Writes `VALUES` values, `LISTS` lists of 3 elements and `MAPS` maps of `MAP_ENTRIES` entries, then
/// checkpoints (and for `canonical`, a canonical savepoint: exact on every backend) and checks the sizes.
pub(crate) fn sizes_at_a_checkpoint<B: KeyedStateBackend<u64>>(b: &mut B, canonical: bool) {
    let v = b
        .value_state(&ValueStateDescriptor::<Ns, u64>::new("v"))
        .unwrap();
    let l = b
        .list_state(&ListStateDescriptor::<Ns, u32>::new("l"))
        .unwrap();
    let m = b
        .map_state(&MapStateDescriptor::<Ns, u64, u64>::new("m"))
        .unwrap();
    for key in 0..VALUES {
        b.set_current_key(key).unwrap();
        v.update(b, &NS, key).unwrap();
        if key < LISTS {
            l.update(b, &NS, vec![1, 2, 3]).unwrap();
        }
        if key < MAPS {
            for uk in 0..MAP_ENTRIES {
                m.put(b, &NS, uk, key).unwrap();
            }
        }
    }
    let storage = CheckpointStorage::in_memory("sizes").unwrap();
    let result = common::runtime().block_on(async {
        let pending = if canonical {
            b.savepoint(1, &storage, SavepointFormat::Canonical)
        } else {
            b.snapshot(1, &storage)
        };
        pending.unwrap().run().await.unwrap()
    });
    let sizes: &StateSizes = &result.metrics.sizes;
    let names: Vec<&str> = sizes.states.iter().map(|s| s.name.as_str()).collect();
    for name in ["v", "l", "m"] {
        assert!(names.contains(&name), "{name} is missing from {names:?}");
    }
    let entries = |name: &str| sizes.state(name).unwrap().entries;
    let range = b.key_group_range();
    assert!(
        sizes
            .key_groups
            .windows(2)
            .all(|w| w[0].key_group < w[1].key_group),
        "key groups ascend"
    );
    assert!(sizes.key_groups.iter().all(|g| range.contains(g.key_group)));
    let state_bytes: u64 = sizes.states.iter().map(|s| s.bytes).sum();
    let group_bytes: u64 = sizes.key_groups.iter().map(|g| g.bytes).sum();
    if sizes.states.iter().all(|s| s.exact) {
        // Exact: a list or map counts once per key, and the bytes are the records written.
        assert_eq!(
            (entries("v"), entries("l"), entries("m")),
            (VALUES, LISTS, MAPS)
        );
        assert_eq!(state_bytes, result.metrics.state_bytes);
        assert_eq!(group_bytes, result.metrics.state_bytes);
        assert!(sizes.key_groups.iter().all(|g| g.exact));
        // Every key group of the range holds some of the 2,000 keys.
        assert_eq!(sizes.key_groups.len() as u32, range.len());
    } else {
        // RocksDB's estimates after the synchronous phase's flush: rows in SST files, a map once per user
        // key, each list one row (written whole).
        assert!(sizes.states.iter().all(|s| !s.exact && s.bytes > 0));
        assert_eq!(
            (entries("v"), entries("l"), entries("m")),
            (VALUES, LISTS, MAPS * MAP_ENTRIES),
            "estimate-num-keys of insert-only column families in one flushed file each"
        );
        // Approximations by data block: the key groups' sum is near the states' live data.
        assert!(sizes.key_groups.iter().all(|g| !g.exact));
        assert!(
            group_bytes * 2 > state_bytes && group_bytes < state_bytes * 2,
            "key groups {group_bytes} B against states {state_bytes} B"
        );
    }
}

/// Key-group figures cost an index lookup per key group and state in RocksDB's synchronous phase: a
/// subtask with more than 1,024 of them reports per-state figures only.
#[cfg(feature = "rocksdb")]
#[test]
fn a_rocksdb_subtask_with_many_key_groups_reports_per_state_figures_only() {
    for (max_parallelism, key_group_figures) in [(1024, true), (2048, false)] {
        let mut b = common::lsm::<u64>(max_parallelism, 1, 0);
        let v = b
            .value_state(&ValueStateDescriptor::<Ns, u64>::new("v"))
            .unwrap();
        for key in 0..VALUES {
            b.set_current_key(key).unwrap();
            v.update(&mut b, &NS, key).unwrap();
        }
        let storage = CheckpointStorage::in_memory("sizes").unwrap();
        let result = common::runtime()
            .block_on(b.snapshot(1, &storage).unwrap().run())
            .unwrap();
        let sizes = &result.metrics.sizes;
        assert_eq!(sizes.state("v").map(|s| s.entries), Some(VALUES));
        assert_eq!(
            !sizes.key_groups.is_empty(),
            key_group_figures,
            "max parallelism {max_parallelism}"
        );
    }
}
