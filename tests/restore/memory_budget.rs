//! One memory budget shared by RocksDB backends: memtables charged to it, writes past it stall and never
//! fail, every value read back, and a restore under the budget.

#![cfg(feature = "rocksdb")]

use crate::common::*;
use statebackend::rocksdb::{MemoryBudget, MemoryBudgetConfig, RocksDbKeyedStateBackend};
use statebackend::*;

type Lsm = RocksDbKeyedStateBackend<u64>;

/// Two backends, two states each, write 6x a 16 MiB budget of 1 KiB values, one backend after the other:
/// no write fails or hangs, the memtables are charged to the budget, the checkpoint's flush brings them
/// back under the memtables' share, and every value reads back after a restore under the same budget.
/// Found a hang: with RocksDB's stalling write-buffer manager the second backend's first writes waited
/// forever, the idle first backend holding the memtables (a stalled writer flushes only its own).
#[test]
fn a_budget_never_hangs_or_fails_a_write_while_another_backend_holds_the_memtables() {
    let budget = MemoryBudget::new(MemoryBudgetConfig {
        total_bytes: 16 << 20,
        write_buffer_percent: 50,
        ..MemoryBudgetConfig::default()
    })
    .unwrap();
    let mut backends: Vec<Lsm> = (0..2)
        .map(|i| Lsm::with_memory_budget(identity(128, 2, i), lsm_config(), &budget).unwrap())
        .collect();
    let descriptors: Vec<ValueStateDescriptor<VoidNamespace, Vec<u8>>> = ["a", "b"]
        .iter()
        .map(|n| ValueStateDescriptor::new(*n))
        .collect();
    let value = |k: u64| -> Vec<u8> { k.to_le_bytes().repeat(128) };
    let keys = 48_000u64;
    let mut peak_memtables = 0;
    for b in &mut backends {
        let states: Vec<_> = descriptors
            .iter()
            .map(|d| b.value_state(d).unwrap())
            .collect();
        for k in 0..keys {
            if b.set_current_key(k).is_err() {
                continue; // another subtask's key group
            }
            for s in &states {
                s.update(b, &VoidNamespace, value(k)).unwrap();
            }
            if k % 1_000 == 0 {
                peak_memtables = peak_memtables.max(budget.memtable_bytes());
            }
        }
    }
    // Not a bound: without stalls, writes may run ahead of the flushes they start.
    eprintln!("peak memtables of both backends: {peak_memtables} bytes");
    assert!(peak_memtables > 0, "memtables are charged to the budget");
    assert!(budget.usage_bytes() > 0);
    let storage = CheckpointStorage::in_memory("budget").unwrap();
    runtime().block_on(async {
        let mut coord = coordinator(&storage, 1, 2).await;
        checkpoint(&mut coord, &mut backends).await;
        // The synchronous phase flushed every memtable: what stays charged is their empty arenas.
        assert!(
            budget.memtable_bytes() <= 8 << 20,
            "{} bytes of memtables after the flush",
            budget.memtable_bytes()
        );
        drop(backends);
        let meta = coord.store().latest().unwrap().clone();
        let mut restored = Lsm::restore_with_memory_budget(
            identity(128, 1, 0),
            lsm_config(),
            &budget,
            &storage,
            &handles(&meta),
            RestoreMode::NoClaim,
        )
        .await
        .unwrap();
        for d in &descriptors {
            let s = restored.value_state(d).unwrap();
            for k in 0..keys {
                restored.set_current_key(k).unwrap();
                assert_eq!(s.value(&restored, &VoidNamespace).unwrap(), Some(value(k)));
            }
        }
    });
    assert!(budget.usage_bytes() > 0, "reads cache blocks in the budget");
}

/// With `pin_index_and_filters`, every SST's whole index and filter blocks are pinned in the budget's
/// cache once read: reads find every value, present or absent, and the cache's pinned bytes exceed those
/// of the default (partitioned, only the top level pinned) by about the blocks' size.
#[test]
fn pinned_index_and_filters_read_every_value_and_stay_pinned_in_the_budget() {
    let pinned_after_reads = |pin: bool| -> u64 {
        let budget = MemoryBudget::new(MemoryBudgetConfig {
            total_bytes: 32 << 20,
            pin_index_and_filters: pin,
            ..MemoryBudgetConfig::default()
        })
        .unwrap();
        let mut b = Lsm::with_memory_budget(identity(128, 1, 0), lsm_config(), &budget).unwrap();
        let s = b
            .value_state(&ValueStateDescriptor::<VoidNamespace, u64>::new("v"))
            .unwrap();
        let keys = 100_000u64;
        for k in 0..keys {
            b.set_current_key(k).unwrap();
            s.update(&mut b, &VoidNamespace, k * 3).unwrap();
        }
        b.compact().unwrap();
        for k in 0..keys + 1_000 {
            b.set_current_key(k).unwrap();
            let expected = (k < keys).then_some(k * 3);
            assert_eq!(
                s.value(&b, &VoidNamespace).unwrap(),
                expected,
                "key {k}, pinned {pin}"
            );
        }
        // One cache for every column family: the sum over them is a multiple of the cache's figure.
        let families = 2; // the state's and `default`
        b.aggregated_int_property("rocksdb.block-cache-pinned-usage")
            .unwrap()
            .unwrap()
            / families
    };
    let (partitioned, pinned) = (pinned_after_reads(false), pinned_after_reads(true));
    eprintln!(
        "pinned in the cache: {partitioned} bytes partitioned, {pinned} bytes with whole blocks pinned"
    );
    // 100,000 keys: a filter block of about 125 KB (10 bits a key) and the index block.
    assert!(
        pinned >= partitioned + (100 << 10),
        "{partitioned} against {pinned}"
    );
}

/// A budget under 16 MiB, or memtables given 0% or over 90% of it, is an `InvalidArgument`.
#[test]
fn unworkable_budgets_are_refused() {
    for (total_bytes, write_buffer_percent) in [(1 << 20, 50), (64 << 20, 0), (64 << 20, 91)] {
        let err = MemoryBudget::new(MemoryBudgetConfig {
            total_bytes,
            write_buffer_percent,
            ..MemoryBudgetConfig::default()
        })
        .err()
        .unwrap();
        assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{err}");
    }
}
