//! Writes the seed corpora of the fuzz targets from files the crate itself writes: heap snapshot files
//! (value, list and map states, compressed and not, one and several frames per key group), `_metadata`
//! files of completed checkpoints, and LSM row keys, list values and state meta information.
//! Usage: `seeds CORPUS_DIR` (creates `restore/`, `metadata/`, `lsm_rows/` inside).

use std::path::Path;

use object_store::ObjectStoreExt;
use statebackend::heap::{HeapConfig, HeapKeyedStateBackend};
use statebackend::operator::OperatorStateBackend;
use statebackend::snapshot::layout::*;
use statebackend::*;

fn write(dir: &Path, name: &str, bytes: &[u8]) {
    std::fs::create_dir_all(dir).expect("corpus dir");
    std::fs::write(dir.join(name), bytes).expect("seed file");
}

async fn read(storage: &CheckpointStorage, relative: &str) -> Vec<u8> {
    let get = storage
        .object_store()
        .get(&storage.path(relative))
        .await
        .expect("get");
    get.bytes().await.expect("bytes").to_vec()
}

async fn snapshots(corpus: &Path) -> Result<()> {
    for (n, (level, frame_bytes, keys)) in [
        (Some(1), 1 << 20, 40u64),
        (None, 1 << 20, 40),
        (Some(3), 64, 200),
        (None, 48, 10),
    ]
    .into_iter()
    .enumerate()
    {
        let storage = CheckpointStorage::in_memory("seeds")?;
        let config = HeapConfig {
            zstd_level: level,
            frame_bytes,
            ..HeapConfig::default()
        };
        let identity = SubtaskIdentity::new("op", 16, 1, 0)?;
        let mut b = HeapKeyedStateBackend::<u64>::new(identity, config)?;
        let v = b.value_state(&ValueStateDescriptor::<VoidNamespace, u64>::new("v"))?;
        let l = b.list_state(&ListStateDescriptor::<u64, u64>::new("l"))?;
        let m = b.map_state(&MapStateDescriptor::<VoidNamespace, u64, u64>::new("m"))?;
        for k in 0..keys {
            b.set_current_key(k)?;
            v.update(&mut b, &VoidNamespace, k * 7)?;
            l.add(&mut b, &(k % 3), k)?;
            m.put(&mut b, &VoidNamespace, k, k + 1)?;
        }
        let result = b.snapshot(1, &storage)?.run().await?;
        let bytes = read(&storage, &result.handle.files[0].path).await;
        write(&corpus.join("restore"), &format!("heap-{n}"), &bytes);
    }
    // Delta files of incremental chains (format version 2: rewritten states, tombstones), which the
    // target also restores as the delta of a chain.
    for (n, level) in [Some(1), None].into_iter().enumerate() {
        let storage = CheckpointStorage::in_memory("seeds")?;
        let config = HeapConfig {
            zstd_level: level,
            incremental: true,
            ..HeapConfig::default()
        };
        let mut b =
            HeapKeyedStateBackend::<u64>::new(SubtaskIdentity::new("op", 16, 1, 0)?, config)?;
        let v = b.value_state(&ValueStateDescriptor::<VoidNamespace, u64>::new("v"))?;
        let m = b.map_state(&MapStateDescriptor::<VoidNamespace, u64, u64>::new("m"))?;
        for k in 0..40u64 {
            b.set_current_key(k)?;
            v.update(&mut b, &VoidNamespace, k)?;
            m.put(&mut b, &VoidNamespace, k, k)?;
        }
        b.snapshot(1, &storage)?.run().await?;
        b.notify_checkpoint_complete(1);
        for k in 0..10u64 {
            b.set_current_key(k)?;
            if k % 2 == 0 {
                v.clear(&mut b, &VoidNamespace)?;
            } else {
                v.update(&mut b, &VoidNamespace, k + 100)?;
            }
            m.remove(&mut b, &VoidNamespace, &k)?;
        }
        b.drop_state("m")?;
        let l = b.list_state::<u64, u64>(&ListStateDescriptor::new("l"))?;
        b.set_current_key(1)?;
        l.add(&mut b, &0, 5)?;
        let result = b.snapshot(2, &storage)?.run().await?;
        let delta = result.handle.files.last().expect("a delta");
        let bytes = read(&storage, &delta.path).await;
        write(&corpus.join("restore"), &format!("heap-delta-{n}"), &bytes);
    }
    // Deltas of version 3 with append records and of version 4 with patch records too, on a full file
    // like the target's chain base (the same states and content): lists of 20 keys get one element
    // each, and in version 4 their maps a user key.
    for (n, (level, patches)) in [(Some(1), false), (None, false), (Some(1), true)]
        .into_iter()
        .enumerate()
    {
        let storage = CheckpointStorage::in_memory("seeds")?;
        let config = HeapConfig {
            zstd_level: level,
            incremental: true,
            ..HeapConfig::default()
        };
        let mut b =
            HeapKeyedStateBackend::<u64>::new(SubtaskIdentity::new("op", 16, 1, 0)?, config)?;
        let v = b.value_state(&ValueStateDescriptor::<VoidNamespace, u64>::new("v"))?;
        let l = b.list_state(&ListStateDescriptor::<u64, u64>::new("l"))?;
        let m = b.map_state(&MapStateDescriptor::<VoidNamespace, u64, u64>::new("m"))?;
        for k in 0..40u64 {
            b.set_current_key(k)?;
            v.update(&mut b, &VoidNamespace, k)?;
            l.add(&mut b, &(k % 3), k)?;
            m.put(&mut b, &VoidNamespace, k, k)?;
        }
        b.snapshot(1, &storage)?.run().await?;
        b.notify_checkpoint_complete(1);
        for k in 0..20u64 {
            b.set_current_key(k)?;
            l.add(&mut b, &(k % 3), k + 100)?;
            if patches {
                m.put(&mut b, &VoidNamespace, k + 100, k)?;
            }
        }
        let result = b.snapshot(2, &storage)?.run().await?;
        let delta = result.handle.files.last().expect("a delta");
        let bytes = read(&storage, &delta.path).await;
        write(&corpus.join("restore"), &format!("heap-append-delta-{n}"), &bytes);
    }
    Ok(())
}

async fn metadata(corpus: &Path) -> Result<()> {
    let storage = CheckpointStorage::in_memory("seeds")?;
    let mut coord = CheckpointCoordinator::open(
        storage.clone(),
        CoordinatorConfig::single_operator("op", 2, 3),
    )
    .await?;
    let mut backends = [
        HeapKeyedStateBackend::<u64>::new(
            SubtaskIdentity::new("op", 16, 2, 0)?,
            HeapConfig::default(),
        )?,
        HeapKeyedStateBackend::<u64>::new(
            SubtaskIdentity::new("op", 16, 2, 1)?,
            HeapConfig::default(),
        )?,
    ];
    for round in 0..2u64 {
        let id = coord.trigger().await?;
        for (i, b) in backends.iter_mut().enumerate() {
            let result = b.snapshot(id, &storage)?.run().await?;
            let mut task = TaskStateSnapshot {
                operator_id: "op".into(),
                subtask_index: i as u32,
                keyed_state: Some(result.handle),
                ..Default::default()
            };
            task.operator_state
                .insert("offset".into(), round.to_le_bytes().to_vec());
            // Operator state of each kind (`docs/formats.md`, "Operator state blobs").
            let mut state = OperatorStateBackend::new();
            let offsets = state.list_state::<u64>("offsets")?;
            offsets.update(&mut state, &[round, 10 + i as u64])?;
            state
                .union_list_state::<u32>("seen")?
                .add(&mut state, &(i as u32))?;
            let rules = state.broadcast_state::<String, u64>("rules")?;
            rules.put(&mut state, &"limit".to_string(), &100)?;
            task.operator_state.extend(state.snapshot());
            coord.acknowledge(id, task, Some(result.metrics)).await?;
        }
        let bytes = read(&storage, &format!("chk-{id}/{METADATA_FILE}")).await;
        write(&corpus.join("metadata"), &format!("metadata-{id}"), &bytes);
    }
    Ok(())
}

fn lsm_rows(corpus: &Path) {
    let dir = corpus.join("lsm_rows");
    // Row keys: key group, varint key length, key, varint namespace length, namespace.
    write(&dir, "row-1", &[3, 8, 0, 0, 0, 0, 0, 0, 0, 42, 0]);
    write(&dir, "row-2", &[0x01, 0x02, 2, b'a', b'b', 1, 7, 9, 9]);
    write(&dir, "row-long", &[5, 0x80, 0x01, 1, 2, 3]);
    // A list value: varint length + bytes per element.
    write(&dir, "list", &[2, 1, 2, 0, 3, 7, 7, 7]);
}

fn main() {
    let corpus = std::env::args().nth(1).expect("usage: seeds CORPUS_DIR");
    let corpus = Path::new(&corpus);
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    rt.block_on(async {
        snapshots(corpus).await.expect("snapshot seeds");
        metadata(corpus).await.expect("metadata seeds");
    });
    lsm_rows(corpus);
}
