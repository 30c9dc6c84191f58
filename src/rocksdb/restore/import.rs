//! Restoring the RocksDB backend from canonical snapshots (keyed snapshot files, written by either backend):
//! records become rows, sorted per state, written into SST files and ingested (`docs/savepoints.md`;
//! sorting and writing: `import_rows.rs`).

use crate::error::{Error, Result};
use crate::format::bytes::Decoder;
use crate::format::keyed_file::read as keyed_file;
use crate::format::keyed_file::read::check_key_group;
use crate::keyed::backend::StateId;
use crate::keyed::checks::wrong_state;
use crate::snapshot::state_meta::StateKind;
use crate::snapshot_io::load::LoadedFile;

use crate::format::lsm_rows::{push_key_group, push_list_element, push_varint};
use crate::rocksdb::db::Db;
use crate::rocksdb::restore::import_rows::{Rows, SortError, write_sorted};
use crate::rocksdb::states::LsmStates;

/// The row key of `key` in `namespace` of key group `key_group`: `[key group][varint len][key][varint
/// len][namespace]` (`docs/formats.md`, "RocksDB backend rows").
fn push_row_prefix(
    out: &mut Vec<u8>,
    key_group: u32,
    max_parallelism: u32,
    key: &[u8],
    namespace: &[u8],
) {
    push_key_group(key_group, max_parallelism, out);
    push_varint(key.len() as u32, out);
    out.extend_from_slice(key);
    push_varint(namespace.len() as u32, out);
    out.extend_from_slice(namespace);
}

/// Writes the records of `files` (the owned key groups of canonical snapshot files) into this backend,
/// which must hold no rows of their states: each file's states are registered (created, or checked
/// against a state of the same name), every record's key checked against its key group, and each
/// state's rows ingested as one SST file.
///
/// # Errors
/// [`Error::Corrupt`] naming the file for a record of an unknown state, a key in the wrong key group,
/// a malformed list or map value, or two records of the same key, namespace (and user key);
/// [`Error::InvalidArgument`] if a state is described differently than a registered one;
/// [`Error::Local`] if RocksDB cannot write or ingest the files.
pub(crate) fn import_canonical(
    states: &mut LsmStates,
    db: &mut Db,
    files: &[LoadedFile],
    max_parallelism: u32,
    restore_threads: usize,
) -> Result<()> {
    let mut rows: Vec<(StateId, Rows)> = Vec::new();
    let mut path_of_state: Vec<String> = Vec::new();
    for file in files {
        let mut slots = Vec::with_capacity(file.header.states.len());
        for meta in &file.header.states {
            let id = states.register_restored(db, meta.clone())?;
            let slot = match rows.iter().position(|(s, _)| *s == id) {
                Some(slot) => slot,
                None => {
                    rows.push((id, Rows::default()));
                    path_of_state.push(file.path.clone());
                    rows.len() - 1
                }
            };
            slots.push((slot, meta.kind));
        }
        for (key_group, bytes) in &file.groups {
            for record in keyed_file::records(bytes, &file.path) {
                let r = record?;
                let &(slot, kind) = slots.get(r.state as usize).ok_or_else(|| {
                    Error::corrupt(&file.path, format!("record of unknown state {}", r.state))
                })?;
                check_key_group(r.key, file.header.max_parallelism, *key_group, &file.path)?;
                let out = &mut rows[slot].1;
                let prefix = |o: &mut Vec<u8>| {
                    push_row_prefix(o, *key_group, max_parallelism, r.key, r.namespace)
                };
                match kind {
                    StateKind::Timers => {
                        let ts: [u8; 8] = r.value.try_into().map_err(|_| {
                            Error::corrupt(
                                &file.path,
                                format!("a timer with a {}-byte timestamp", r.value.len()),
                            )
                        })?;
                        out.push(
                            |o| {
                                push_key_group(*key_group, max_parallelism, o);
                                o.extend_from_slice(&ts);
                                push_varint(r.key.len() as u32, o);
                                o.extend_from_slice(r.key);
                                o.extend_from_slice(r.namespace);
                            },
                            |_| {},
                        );
                    }
                    StateKind::Value | StateKind::Reducing | StateKind::Aggregating => {
                        out.push(prefix, |o| o.extend_from_slice(r.value));
                    }
                    StateKind::List => {
                        let mut d = Decoder::new(r.value, 0, &file.path);
                        let count = d.count("list elements", 4)?;
                        let mut elements = Vec::with_capacity(count);
                        for _ in 0..count {
                            elements.push(d.bytes("list element")?);
                        }
                        d.finish("list value")?;
                        if !elements.is_empty() {
                            out.push(prefix, |o| {
                                for e in elements {
                                    push_list_element(e, o);
                                }
                            });
                        }
                    }
                    StateKind::Map => {
                        let mut d = Decoder::new(r.value, 0, &file.path);
                        let count = d.count("map entries", 8)?;
                        for _ in 0..count {
                            let user_key = d.bytes("map user key")?;
                            let value = d.bytes("map value")?;
                            out.push(
                                |o| {
                                    prefix(o);
                                    o.extend_from_slice(user_key);
                                },
                                |o| o.extend_from_slice(value),
                            );
                        }
                        d.finish("map value")?;
                    }
                }
            }
        }
    }
    for (i, ((id, state_rows), path)) in rows.into_iter().zip(path_of_state).enumerate() {
        if state_rows.items.is_empty() {
            continue;
        }
        let state = states.get(id).ok_or_else(|| wrong_state(id))?;
        let name = &state.meta.name;
        let ssts = write_sorted(
            state_rows,
            db.cf_options(&state.cf),
            &db.instance().path().join(format!("import-{i}")),
            max_parallelism,
            restore_threads,
        )
        .map_err(|e| match e {
            SortError::Duplicate => Error::corrupt(
                &path,
                format!("state `{name}` has two records of the same key and namespace"),
            ),
            SortError::Other(e) => e,
        })?;
        let cf_name = &state.cf;
        let cf = db
            .cf(cf_name)
            .ok_or_else(|| Error::IllegalState(format!("column family {cf_name} is missing")))?;
        db.ingest(cf, &ssts)?;
        // Moved into the DB (hard links); the names outside it go.
        for sst in &ssts {
            if let Err(e) = std::fs::remove_file(sst)
                && e.kind() != std::io::ErrorKind::NotFound
            {
                return Err(Error::local(sst.display(), e));
            }
        }
    }
    Ok(())
}
