//! Restoring a heap backend from keyed snapshot files, at the same or another parallelism.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use crate::checkpoint::handle::{HandleFormat, KeyedStateHandle};
use crate::error::{Error, Result};
use crate::format::bytes::PutExt;
use crate::format::keyed_file::read::{self as keyed_file, HEADER_PREFIX};
use crate::format::keyed_file::{FOOTER_LEN, FileHeader};
use crate::heap::backend::{HeapBackendConfig, HeapKeyedStateBackend};
use crate::heap::table::RawTable;
use crate::keyed::backend::{StateId, StateKey};
use crate::keyed::key_group::{KeyGroupRange, key_group_for_hash, stable_key_hash};
use crate::storage::{CheckpointStorage, RangeSource};

/// The key groups of one file that a restore needs, decoded to raw record bytes.
struct LoadedFile {
    path: String,
    header: FileHeader,
    groups: Vec<(u32, Vec<u8>)>,
}

impl<K: StateKey> HeapKeyedStateBackend<K> {
    /// A backend for `config` holding the state of the key groups it owns from `handles` (the keyed state
    /// handles of all subtasks of the operator in one checkpoint, or those overlapping the owned range).
    /// Files are read in parallel; a file whose key groups are all owned is read whole and its CRC32
    /// checked, otherwise (a rescale) only the owned key groups are read (ranged reads on remote storage,
    /// each frame checked by its CRC32).
    ///
    /// Restored states are registered on first use by a descriptor with the same name, kind and codecs;
    /// states never registered are carried into the next snapshot unchanged. The backend then refuses
    /// snapshot ids up to the restored checkpoint's.
    ///
    /// # Errors
    /// - [`Error::InvalidArgument`] if the handles are not one checkpoint's state of this operator with
    ///   this max parallelism covering the owned key groups once (see `docs/protocol.md`).
    /// - [`Error::NotFound`] naming the missing file; [`Error::Corrupt`] naming a corrupt or truncated file.
    pub async fn restore(
        config: HeapBackendConfig,
        storage: &CheckpointStorage,
        handles: &[KeyedStateHandle],
    ) -> Result<Self> {
        let mut backend = HeapKeyedStateBackend::new(config)?;
        let range = backend.config.key_groups;
        let relevant = crate::checkpoint::validate::restore_handles(
            &backend.config.operator_id,
            backend.config.max_parallelism,
            range,
            handles,
        )?;
        backend.last_snapshot_id = handles.first().map(|h| h.checkpoint_id);
        let loads = relevant.into_iter().map(|h| load_handle(storage, h, range));
        let loaded = futures::future::try_join_all(loads).await?;

        // Per state, record bytes per key-group index, only for key groups that have records: a header
        // may name many states, and a dense vector per state and key group would let a small file
        // allocate states x key groups before any record is read.
        let mut raw: Vec<(
            crate::keyed::descriptor::StateMeta,
            BTreeMap<usize, Vec<u8>>,
            usize,
        )> = Vec::new();
        let mut by_name: HashMap<String, usize> = HashMap::new();
        for file in &loaded {
            let mut slots = Vec::with_capacity(file.header.states.len());
            for meta in &file.header.states {
                let slot = *by_name.entry(meta.name.clone()).or_insert_with(|| {
                    raw.push((meta.clone(), BTreeMap::new(), 0));
                    raw.len() - 1
                });
                if raw[slot].0 != *meta {
                    return Err(Error::corrupt(
                        &file.path,
                        format!(
                            "state `{}` is described differently than in another file of the same checkpoint",
                            meta.name
                        ),
                    ));
                }
                slots.push(slot);
            }
            for (key_group, bytes) in &file.groups {
                let kg_index = range.index_of(*key_group).ok_or_else(|| {
                    Error::corrupt(&file.path, "key group outside the restore range")
                })?;
                for record in keyed_file::records(bytes, &file.path) {
                    let r = record?;
                    let slot = *slots.get(r.state as usize).ok_or_else(|| {
                        Error::corrupt(&file.path, format!("record of unknown state {}", r.state))
                    })?;
                    let actual =
                        key_group_for_hash(stable_key_hash(r.key), file.header.max_parallelism);
                    if actual != *key_group {
                        return Err(Error::corrupt(
                            &file.path,
                            format!(
                                "a key of key group {actual} is stored in key group {key_group}"
                            ),
                        ));
                    }
                    let (_, groups, len) = &mut raw[slot];
                    let out = groups.entry(kg_index).or_default();
                    out.put_bytes(r.key);
                    out.put_bytes(r.namespace);
                    out.put_bytes(r.value);
                    *len += 1;
                }
            }
        }
        for (meta, groups, len) in raw {
            let id = StateId(backend.tables.len() as u32);
            backend.by_name.insert(meta.name.clone(), id);
            backend.tables.push(Box::new(RawTable {
                meta,
                groups: Arc::new(groups.into_iter().collect()),
                len,
            }));
        }
        Ok(backend)
    }
}

/// Reads and checks one handle's file; decodes the key groups in `range`.
async fn load_handle(
    storage: &CheckpointStorage,
    handle: &KeyedStateHandle,
    range: KeyGroupRange,
) -> Result<LoadedFile> {
    if handle.format != HandleFormat::KeyedFile {
        return Err(Error::InvalidArgument(format!(
            "the heap backend restores keyed-file snapshots; backend {} wrote {:?} (restore it with the \
             backend that wrote it)",
            handle.backend_id, handle.format
        )));
    }
    let [file] = handle.files.as_slice() else {
        return Err(Error::InvalidArgument(format!(
            "a keyed-file handle has exactly one file, backend {} lists {}",
            handle.backend_id,
            handle.files.len()
        )));
    };
    // A file this restore needs whole is read whole, so that its CRC32 is checked on every store.
    let whole = handle.key_groups.intersection(&range) == handle.key_groups;
    let source = if whole {
        RangeSource::Bytes {
            bytes: storage.read(&file.path).await?,
            path: storage.path(&file.path),
        }
    } else {
        storage.open(&file.path).await?
    };
    let path = source.path().to_string();
    if source.len() != file.size_bytes {
        return Err(Error::corrupt(
            &path,
            format!(
                "file has {} bytes, its handle says {}: truncated or replaced",
                source.len(),
                file.size_bytes
            ),
        ));
    }
    if let RangeSource::Bytes { bytes, .. } = &source
        && crc32fast::hash(bytes) != file.crc32
    {
        return Err(Error::corrupt(
            &path,
            "file checksum does not match its handle",
        ));
    }
    let len = source.len();
    if len < HEADER_PREFIX + FOOTER_LEN as u64 {
        return Err(Error::corrupt(
            &path,
            format!("truncated: {len} bytes is shorter than any snapshot file"),
        ));
    }
    let footer_bytes = source
        .read(len.saturating_sub(FOOTER_LEN as u64)..len)
        .await?;
    let footer = keyed_file::parse_footer(&footer_bytes, len, &path)?;
    let index_bytes = source
        .read(footer.index_offset..footer.index_offset + footer.index_len)
        .await?;
    let index = keyed_file::parse_index(&index_bytes, &footer, &path)?;
    let prefix = source.read(0..HEADER_PREFIX.min(len)).await?;
    let header_len = keyed_file::header_len(&prefix, &footer, &path)?;
    let header = keyed_file::parse_header(&source.read(0..header_len).await?, &path)?;
    if header.max_parallelism != handle.max_parallelism || header.key_groups != handle.key_groups {
        return Err(Error::corrupt(
            &path,
            format!(
                "file holds key groups {} of max parallelism {}, its handle says {} of {}",
                header.key_groups,
                header.max_parallelism,
                handle.key_groups,
                handle.max_parallelism
            ),
        ));
    }
    let wanted: Vec<_> = index
        .iter()
        .filter(|e| range.contains(e.key_group))
        .filter(|e| header.key_groups.contains(e.key_group) && e.offset >= header_len)
        .copied()
        .collect();
    if wanted.len() != index.iter().filter(|e| range.contains(e.key_group)).count() {
        return Err(Error::corrupt(
            &path,
            "index lists a key group outside the file's range or inside its header",
        ));
    }
    let ranges: Vec<_> = wanted.iter().map(|e| e.offset..e.offset + e.len).collect();
    let blocks = source.read_many(&ranges).await?;
    let decode_path = path.clone();
    let groups = tokio::task::spawn_blocking(move || {
        wanted
            .iter()
            .zip(blocks)
            .map(|(e, bytes)| {
                Ok((
                    e.key_group,
                    keyed_file::decode_frames(&bytes, e.offset, &decode_path)?,
                ))
            })
            .collect::<Result<Vec<_>>>()
    })
    .await
    .map_err(|e| Error::IllegalState(format!("restore decoder panicked: {e}")))??;
    Ok(LoadedFile {
        path,
        header,
        groups,
    })
}
