//! Restoring the LSM backend from canonical snapshots (keyed snapshot files, written by either backend):
//! records become rows, sorted per state, written into one SST per state and ingested
//! (`docs/savepoints.md`).

use rocksdb::{IngestExternalFileOptions, SstFileWriter};

use crate::error::{Error, Result};
use crate::format::bytes::Decoder;
use crate::format::keyed_file::load::{LoadedFile, check_key_group};
use crate::format::keyed_file::read as keyed_file;
use crate::keyed::backend::{StateId, StateKey};
use crate::keyed::descriptor::StateKind;

use crate::lsm::backend::{LsmKeyedStateBackend, db_error};
use crate::lsm::keys::{push_key_group, push_list_element, push_varint};

/// The rows of one state: keys and values in one buffer, sorted by key before they are written.
#[derive(Default)]
struct Rows {
    buf: Vec<u8>,
    items: Vec<Row>,
}

/// One row of [`Rows`]: the first 16 bytes of its key (zero-padded, big-endian), so that sorting compares
/// integers and reads the buffer only on ties (a row key of a `u64` key in the void namespace is 11
/// bytes: a sort by full keys spent a third of a restore in `memcmp`); where the row starts in the
/// buffer, its key and value lengths.
#[derive(Clone, Copy)]
struct Row {
    prefix: u128,
    start: usize,
    key_len: u32,
    value_len: u32,
}

impl Rows {
    fn push(&mut self, key: impl FnOnce(&mut Vec<u8>), value: impl FnOnce(&mut Vec<u8>)) {
        let start = self.buf.len();
        key(&mut self.buf);
        let key_len = self.buf.len() - start;
        let mut prefix = [0u8; 16];
        let n = key_len.min(16);
        prefix[..n].copy_from_slice(&self.buf[start..start + n]);
        value(&mut self.buf);
        let value_len = self.buf.len() - start - key_len;
        self.items.push(Row {
            prefix: u128::from_be_bytes(prefix),
            start,
            key_len: key_len as u32,
            value_len: value_len as u32,
        });
    }

    fn key(&self, row: Row) -> &[u8] {
        &self.buf[row.start..row.start + row.key_len as usize]
    }

    fn value(&self, row: Row) -> &[u8] {
        let at = row.start + row.key_len as usize;
        &self.buf[at..at + row.value_len as usize]
    }

    /// Sorts the rows by key: by prefix, then (on equal prefixes) by the whole key. A strictly smaller
    /// zero-padded prefix is a strictly smaller key, so the order is the keys' byte order.
    fn sort(&mut self) {
        let mut items = std::mem::take(&mut self.items);
        items.sort_unstable_by(|a, b| {
            a.prefix
                .cmp(&b.prefix)
                .then_with(|| self.key(*a).cmp(self.key(*b)))
        });
        self.items = items;
    }
}

/// The row key of `key` in `namespace` of key group `key_group`: `[key group][varint len][key][varint
/// len][namespace]` (`docs/formats.md`, "LSM backend rows").
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

impl<K: StateKey> LsmKeyedStateBackend<K> {
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
    pub(crate) fn import_canonical(&mut self, files: &[LoadedFile]) -> Result<()> {
        let max_parallelism = self.config.max_parallelism;
        let mut rows: Vec<(StateId, Rows)> = Vec::new();
        let mut path_of_state: Vec<String> = Vec::new();
        for file in files {
            let mut slots = Vec::with_capacity(file.header.states.len());
            for meta in &file.header.states {
                let id = self.register_restored(meta.clone())?;
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
        for (i, ((id, mut state_rows), path)) in rows.into_iter().zip(path_of_state).enumerate() {
            if state_rows.items.is_empty() {
                continue;
            }
            state_rows.sort();
            let items = std::mem::take(&mut state_rows.items);
            if items
                .windows(2)
                .any(|w| state_rows.key(w[0]) == state_rows.key(w[1]))
            {
                return Err(Error::corrupt(
                    &path,
                    format!(
                        "state `{}` has two records of the same key and namespace",
                        self.states[id.0 as usize].meta.name
                    ),
                ));
            }
            let sst = self.instance.path().join(format!("import-{i}.sst"));
            let sst_name = sst.display().to_string();
            let mut writer = SstFileWriter::create(&self.options);
            writer.open(&sst).map_err(|e| db_error(&sst_name, e))?;
            for item in items {
                writer
                    .put(state_rows.key(item), state_rows.value(item))
                    .map_err(|e| db_error(&sst_name, e))?;
            }
            writer.finish().map_err(|e| db_error(&sst_name, e))?;
            drop(state_rows);
            let cf_name = &self.states[id.0 as usize].cf;
            let cf = self.db.cf_handle(cf_name).ok_or_else(|| {
                Error::IllegalState(format!("column family {cf_name} is missing"))
            })?;
            let mut ingest = IngestExternalFileOptions::default();
            ingest.set_move_files(true);
            self.db
                .ingest_external_file_cf_opts(cf, &ingest, vec![&sst])
                .map_err(|e| db_error(&sst_name, e))?;
            // Moved into the DB (a hard link); the name outside it goes.
            if let Err(e) = std::fs::remove_file(&sst)
                && e.kind() != std::io::ErrorKind::NotFound
            {
                return Err(Error::local(sst_name, e));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::Rows;

    /// The prefix sort orders exactly as a sort by whole keys: keys of every length around 16 bytes,
    /// trailing zero bytes, keys that are prefixes of others, equal prefixes with different tails.
    #[test]
    fn prefix_sort_is_the_byte_order_of_whole_keys() {
        let mut keys: Vec<Vec<u8>> = Vec::new();
        let mut x = 0x2545_f491_4f6c_dd1du64;
        for len in 0..40usize {
            for _ in 0..25 {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                // Few distinct bytes, so that prefixes collide often.
                keys.push((0..len).map(|i| ((x >> (i % 60)) & 3) as u8).collect());
            }
        }
        keys.push(vec![1; 16]);
        keys.push([vec![1; 16], vec![0]].concat());
        keys.push([vec![1; 16], vec![0, 0]].concat());
        keys.push(vec![1; 15]);
        let mut rows = Rows::default();
        for (i, k) in keys.iter().enumerate() {
            rows.push(
                |o| o.extend_from_slice(k),
                |o| o.extend_from_slice(&i.to_le_bytes()),
            );
        }
        rows.sort();
        let sorted: Vec<&[u8]> = rows.items.iter().map(|r| rows.key(*r)).collect();
        let mut expected: Vec<&[u8]> = keys.iter().map(|k| k.as_slice()).collect();
        expected.sort();
        assert_eq!(sorted, expected);
        for r in &rows.items {
            let i = usize::from_le_bytes(rows.value(*r).try_into().unwrap());
            assert_eq!(rows.key(*r), keys[i].as_slice(), "each key keeps its value");
        }
    }
}
