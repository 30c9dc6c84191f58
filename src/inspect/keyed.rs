//! A canonical (keyed-file) snapshot's content, for `statectl inspect` and `dump`: the states its header
//! names, its records, and how many each state holds, read with the checks a restore makes.

use crate::error::{Error, Result};
use crate::key_group::KeyGroupRange;
use crate::snapshot::{HandleFormat, KeyedStateHandle, StateMeta};
use crate::snapshot_io::load::{load_handle, read_header};
use crate::storage::CheckpointStorage;

/// The states a canonical (keyed-file) handle's file holds, with their kinds and codec ids, as its
/// header names them (`statectl inspect`). Reads the footer and the header only.
///
/// # Errors
/// [`Error::InvalidArgument`] for a handle of another format (a native
/// LSM snapshot names its states inside RocksDB's files); [`Error::NotFound`]
/// or [`Error::Corrupt`] naming the file.
pub async fn keyed_file_states(
    storage: &CheckpointStorage,
    handle: &KeyedStateHandle,
) -> Result<Vec<StateMeta>> {
    let file = match (handle.format, handle.files.as_slice()) {
        (HandleFormat::KeyedFile, [file]) => file,
        // A chain's states are its newest file's.
        (HandleFormat::KeyedChain, [.., newest]) => newest,
        _ => {
            return Err(Error::InvalidArgument(format!(
                "backend {}'s handle is {:?} with {} files, not one keyed file",
                handle.backend_id,
                handle.format,
                handle.files.len()
            )));
        }
    };
    Ok(read_header(storage, &file.path).await?.states)
}

/// One record of a canonical snapshot: the codec bytes of a key, its namespace and its value, as
/// `docs/formats.md` ("Record") lays them out (a list's or map's value holds its elements or entries).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyedRecord {
    /// Index of the record's state in the states returned with it.
    pub state: usize,
    /// The key group the record is stored in.
    pub key_group: u32,
    /// The key's codec bytes.
    pub key: Vec<u8>,
    /// The namespace's codec bytes.
    pub namespace: Vec<u8>,
    /// The value's bytes.
    pub value: Vec<u8>,
}

/// The states and records of a canonical (keyed-file) handle's file, of every key group it holds or of
/// `key_group` only (a ranged read of that group's frames), with the file checks a restore makes (size,
/// CRC32s, footer, index, header); for `statectl dump`.
///
/// # Errors
/// As [`keyed_file_states`], and [`Error::Corrupt`] for a
/// frame or record that does not decode; [`Error::InvalidArgument`]
/// if `key_group` is outside the handle's range.
pub async fn keyed_file_records(
    storage: &CheckpointStorage,
    handle: &KeyedStateHandle,
    key_group: Option<u32>,
) -> Result<(Vec<StateMeta>, Vec<KeyedRecord>)> {
    let range = match key_group {
        Some(g) if handle.key_groups.contains(g) => KeyGroupRange::new(g, g)?,
        Some(g) => {
            return Err(Error::InvalidArgument(format!(
                "key group {g} is not in the handle's range {}",
                handle.key_groups
            )));
        }
        None => handle.key_groups,
    };
    let loaded = load_handle(storage, handle, range, "dump", None, 1).await?;
    let mut records = Vec::new();
    for (key_group, bytes) in &loaded.groups {
        for r in crate::format::keyed_file::read::records(bytes, &loaded.path) {
            let r = r?;
            if r.state as usize >= loaded.header.states.len() {
                return Err(Error::corrupt(
                    &loaded.path,
                    format!("record of unknown state {}", r.state),
                ));
            }
            records.push(KeyedRecord {
                state: r.state as usize,
                key_group: *key_group,
                key: r.key.to_vec(),
                namespace: r.namespace.to_vec(),
                value: r.value.to_vec(),
            });
        }
    }
    Ok((loaded.header.states, records))
}

/// The states of a canonical (keyed-file) handle and how many records each holds (entries: one per key
/// and namespace; a list or map counts once), read `KEY_GROUPS_PER_READ` key groups at a time so that
/// memory stays a fraction of the file; with the checks of [`keyed_file_records`].
///
/// # Errors
/// As [`keyed_file_records`].
pub async fn keyed_file_entry_counts(
    storage: &CheckpointStorage,
    handle: &KeyedStateHandle,
) -> Result<(Vec<StateMeta>, Vec<u64>)> {
    const KEY_GROUPS_PER_READ: u32 = 8;
    let range = handle.key_groups;
    let mut states = Vec::new();
    let mut counts: Vec<u64> = Vec::new();
    let mut from = range.start();
    while let Some(last) = range.end().filter(|end| from <= *end) {
        let to = last.min(from.saturating_add(KEY_GROUPS_PER_READ - 1));
        let part = KeyGroupRange::new(from, to)?;
        let loaded = load_handle(storage, handle, part, "inspect", None, 1).await?;
        counts.resize(loaded.header.states.len(), 0);
        for (_, bytes) in &loaded.groups {
            for r in crate::format::keyed_file::read::records(bytes, &loaded.path) {
                let state = r?.state as usize;
                let count = counts.get_mut(state).ok_or_else(|| {
                    Error::corrupt(&loaded.path, format!("record of unknown state {state}"))
                })?;
                *count += 1;
            }
        }
        states = loaded.header.states;
        if to == last {
            break;
        }
        from = to + 1;
    }
    if states.is_empty() {
        states = keyed_file_states(storage, handle).await?;
        counts = vec![0; states.len()];
    }
    Ok((states, counts))
}
