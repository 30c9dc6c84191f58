//! A rescaled restore from a canonical savepoint reads little more than the bytes of the key groups it
//! owns (target: at most 1.2 times): the index and header, then ranged reads of its key groups.

use std::sync::Arc;

use crate::common::faulty::FaultyStore;
use crate::common::{backend_config, identity};
use statebackend::key_group::assign_to_key_group;
use statebackend::*;

#[test]
fn a_rescaled_restore_reads_at_most_1_2_times_the_bytes_of_its_key_groups() {
    crate::common::runtime().block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let store = FaultyStore::new();
        let storage = CheckpointStorage::new(store.clone() as Arc<dyn object_store::ObjectStore>, "job")
            .unwrap();
        const KEYS: u64 = 200_000;
        let mut b = StateBackend::<u64>::new(&identity(128, 1, 0), &backend_config(BackendKind::Heap, dir.path())).unwrap();
        let s = b
            .value_state(&ValueStateDescriptor::<VoidNamespace, (u64, u64)>::new("v"))
            .unwrap();
        let keys: Vec<u64> = (0..KEYS).collect();
        let values: Vec<(u64, u64)> = keys.iter().map(|k| (*k, k.wrapping_mul(31))).collect();
        s.update_batch(&mut b, &VoidNamespace, &keys, &values).unwrap();
        let handle = b
            .savepoint(1, &storage, SavepointFormat::Canonical)
            .unwrap()
            .run()
            .await
            .unwrap()
            .handle;
        let file_bytes = handle.full_size_bytes();
        let handles = [handle];
        let mut kinds = vec![BackendKind::Heap];
        if cfg!(feature = "rocksdb") {
            kinds.push(BackendKind::RocksDb);
        }
        for kind in kinds {
            for p in [2u32, 3, 4] {
                for i in 0..p {
                    store.take_bytes_read();
                    let r = StateBackend::<u64>::restore(
                        &identity(128, p, i), &backend_config(kind, dir.path()),
                        &storage,
                        &handles,
                        RestoreMode::NoClaim,
                    )
                    .await
                    .unwrap();
                    let read = store.take_bytes_read();
                    // The owned share of the file: its keys' share of all keys (records are the same size).
                    let range = r.key_group_range();
                    let owned = keys
                        .iter()
                        .filter(|k| {
                            range.contains(assign_to_key_group(&k.to_be_bytes(), 128).unwrap())
                        })
                        .count() as f64;
                    let share = file_bytes as f64 * owned / KEYS as f64;
                    let ratio = read as f64 / share;
                    println!("{kind:?} subtask {i} of {p}: read {read} B for a share of {share:.0} B: {ratio:.3}x");
                    assert!(
                        ratio <= 1.2,
                        "{kind:?} subtask {i} of {p} read {read} bytes for {share:.0} bytes of its key groups"
                    );
                }
            }
        }
    });
}
