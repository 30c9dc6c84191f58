//! Bytes as a heap snapshot file, with every checksum the structure lets one find repaired (header, frames,
//! index, and the whole-file CRC32 in its handle), so that mutations of valid files reach the decoders:
//! restore must succeed or fail with a typed error, never panic; whatever restores must be readable through
//! a registered state. Run with `-rss_limit_mb=2048` (`fuzz/run.sh`): restore allocates at most 1,024
//! times the bytes it reads.
#![no_main]

use libfuzzer_sys::fuzz_target;
use object_store::ObjectStoreExt;
use statebackend::heap::HeapKeyedStateBackend;
use statebackend::snapshot::{FileScope, HandleFormat, StateFile};
use statebackend::*;

fuzz_target!(|data: &[u8]| {
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
        // A whole restore reads the whole file (and checks its CRC32); a rescaled one reads some key groups
        // by range: attack both paths.
        for (p, i) in [(1, 0), (2, 1)] {
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
