//! Bytes as a heap snapshot file, with every checksum the structure lets one find repaired (header, frames,
//! index, and the whole-file CRC32 in its handle), so that mutations of valid files reach the decoders:
//! restore must succeed or fail with a typed error, never panic; whatever restores must be readable through
//! a registered state. The bytes are restored as a full file, and as the delta of an incremental chain on
//! a valid full file (`docs/heap-incremental.md`). Run with `-rss_limit_mb=2048` (`fuzz/run.sh`): restore allocates at most 1,024
//! times the bytes it reads.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use object_store::ObjectStoreExt;
use statebackend::heap::HeapKeyedStateBackend;
use statebackend::snapshot::{FileScope, HandleFormat, StateFile};
use statebackend::*;

/// A valid full file (format version 1) of an incremental chain of operator `op`, max parallelism 16, with
/// value, list and map states, and its CRC32: the base the fuzzed bytes are a delta on.
fn chain_base() -> &'static (Vec<u8>, u32) {
    static BASE: OnceLock<(Vec<u8>, u32)> = OnceLock::new();
    BASE.get_or_init(|| {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        rt.block_on(async {
            let storage = CheckpointStorage::in_memory("fuzz-base").expect("storage");
            let config = heap::HeapConfig {
                incremental: true,
                ..heap::HeapConfig::default()
            };
            let identity = SubtaskIdentity::new("op", 16, 1, 0).expect("identity");
            let mut b = HeapKeyedStateBackend::<u64>::new(identity, config).expect("backend");
            let v = b
                .value_state(&ValueStateDescriptor::<VoidNamespace, u64>::new("v"))
                .expect("v");
            let l = b
                .list_state(&ListStateDescriptor::<u64, u64>::new("l"))
                .expect("l");
            let m = b
                .map_state(&MapStateDescriptor::<VoidNamespace, u64, u64>::new("m"))
                .expect("m");
            for k in 0..40u64 {
                b.set_current_key(k).expect("key");
                v.update(&mut b, &VoidNamespace, k).expect("v");
                l.add(&mut b, &(k % 3), k).expect("l");
                m.put(&mut b, &VoidNamespace, k, k).expect("m");
            }
            let result = b
                .snapshot(1, &storage)
                .expect("sync")
                .run()
                .await
                .expect("async");
            let file = &result.handle.files[0];
            let bytes = storage
                .object_store()
                .get(&storage.path(&file.path))
                .await
                .expect("get")
                .bytes()
                .await
                .expect("bytes")
                .to_vec();
            (bytes, file.crc32)
        })
    })
}

fuzz_target!(|data: &[u8]| {
    let base = chain_base();
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let storage = CheckpointStorage::in_memory("fuzz").expect("storage");
        let path = "chk-1/op-0.keyed";
        let mut bytes = data.to_vec();
        let crc32 = statebackend::fuzzing::repair_keyed_file(&mut bytes);
        storage
            .object_store()
            .put(&storage.path(path), bytes.into())
            .await
            .expect("put");
        let handle = KeyedStateHandle {
            backend_id: "fuzz".into(),
            operator_id: "op".into(),
            checkpoint_id: 1,
            max_parallelism: 16,
            key_groups: KeyGroupRange::new(0, 15).expect("range"),
            format: HandleFormat::KeyedFile,
            files: vec![StateFile {
                path: path.into(),
                scope: FileScope::Private,
                size_bytes: data.len() as u64,
                crc32,
                created_by: 1,
                local_name: String::new(),
            }],
        };
        // The same bytes as the delta of a chain on a valid full file.
        storage
            .object_store()
            .put(&storage.path("shared/base.keyed"), base.0.clone().into())
            .await
            .expect("put");
        let file = |path: &str, size: usize, crc32: u32, created_by: u64| StateFile {
            path: path.into(),
            scope: FileScope::Shared,
            size_bytes: size as u64,
            crc32,
            created_by,
            local_name: String::new(),
        };
        let chain = KeyedStateHandle {
            format: HandleFormat::KeyedChain,
            checkpoint_id: 2,
            files: vec![
                file("shared/base.keyed", base.0.len(), base.1, 1),
                file(path, data.len(), crc32, 2),
            ],
            ..handle.clone()
        };
        // A whole restore reads the whole file (and checks its CRC32); a rescaled one reads some key groups
        // by range: attack both paths, for the file alone and as a chain's delta.
        for ((p, i), handle) in [(1, 0), (2, 1)]
            .into_iter()
            .flat_map(|at| [(at, &handle), (at, &chain)])
        {
            let identity = SubtaskIdentity::new("op", 16, p, i).expect("identity");
            let handles = [handle.clone()];
            let restored = HeapKeyedStateBackend::<u64>::restore(
                identity,
                heap::HeapConfig::default(),
                &storage,
                &handles,
                RestoreMode::NoClaim,
            );
            match restored.await {
                Ok(mut b) => {
                    if let Ok(s) =
                        b.value_state(&ValueStateDescriptor::<VoidNamespace, u64>::new("v"))
                    {
                        let _ = s.keys_with_state(&b, &VoidNamespace);
                        let _ = s.keys_and_namespaces(&b);
                    }
                }
                Err(e) => assert!(matches!(
                    e.kind(),
                    ErrorKind::Corrupt | ErrorKind::InvalidArgument
                )),
            }
        }
    });
});
