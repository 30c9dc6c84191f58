//! The RocksDB backend's batch access (sorted `multi_get`, one `WriteBatch`), streamed map iteration and
//! whole-state scans, as functions of a state's column family (and the subtask's identity, which says
//! where keys are, or the current key's row prefix): the trait methods in `backend.rs` find the column
//! family and call them.

use rocksdb::{ColumnFamily, WriteBatch};

use crate::error::Result;
use crate::format::lsm_rows::{push_key_prefix, push_namespace, split_row_key};
use crate::key_group::{locate_hash, stable_key_hash};
use crate::keyed::backend::{StateKey, StateValue};
use crate::keyed::identity::SubtaskIdentity;
use crate::keyed::map_iter::MapEntries;
use crate::rocksdb::db::{Db, db_error};
use crate::rocksdb::restore::import_rows::Rows;
use crate::rocksdb::rows::scan_prefix;
use crate::rocksdb::ttl::ListedRows;

/// Row keys of a batch in one buffer, and the batch positions in row-key order (what `multi_get` wants).
struct BatchRows {
    rows: Rows,
    sorted: Vec<usize>,
}

impl BatchRows {
    /// The row key of batch position `i`.
    fn row(&self, i: usize) -> &[u8] {
        self.rows.key_at(i)
    }
}

/// The row key of each key in `ns`, checked to be owned before anything is read or written.
fn batch_rows<K: StateKey, N: StateKey>(
    identity: &SubtaskIdentity,
    keys: &[K],
    ns: &N,
) -> Result<BatchRows> {
    let mut bytes = Vec::new();
    let mut rows = Rows::with_capacity(keys.len(), keys.len() * 16);
    for key in keys {
        bytes.clear();
        key.encode(&mut bytes);
        let at = locate_hash(
            stable_key_hash(&bytes),
            identity.max_parallelism(),
            identity.key_groups(),
        )?;
        rows.push(
            |row| {
                push_key_prefix(at.key_group, identity.max_parallelism(), &bytes, row);
                push_namespace(row, |out| ns.encode(out));
            },
            |_| {},
        );
    }
    let sorted = rows.sorted_positions();
    Ok(BatchRows { rows, sorted })
}

/// The decoded values of `batch`'s rows, in batch order, read with one sorted `multi_get`.
fn read_batch<V: StateValue>(
    db: &Db,
    cf: &ColumnFamily,
    batch: &BatchRows,
) -> Result<Vec<Option<V>>> {
    let found = db.multi_get(cf, batch.sorted.iter().map(|&i| batch.row(i)))?;
    let mut values: Vec<Option<V>> = Vec::with_capacity(batch.sorted.len());
    values.resize_with(batch.sorted.len(), || None);
    for (&i, got) in batch.sorted.iter().zip(found) {
        if let Some(bytes) = got {
            values[i] = Some(V::decode(&bytes)?);
        }
    }
    Ok(values)
}

/// The values of `keys` in `ns`, appended to `out` in order (one sorted `multi_get`); nothing is appended
/// if a key is not owned.
///
/// # Errors
/// [`Error::InvalidArgument`](crate::Error::InvalidArgument) for a key outside `identity`'s key groups;
/// decode and RocksDB errors.
pub(crate) fn value_get_batch<K: StateKey, N: StateKey, V: StateValue>(
    db: &Db,
    cf: &ColumnFamily,
    identity: &SubtaskIdentity,
    ns: &N,
    keys: &[K],
    out: &mut Vec<Option<V>>,
) -> Result<()> {
    let batch = batch_rows(identity, keys, ns)?;
    out.extend(read_batch::<V>(db, cf, &batch)?);
    Ok(())
}

/// Writes `values[i]` for `keys[i]` in `ns`, in one write batch; nothing is written if a key is not owned.
///
/// # Errors
/// [`Error::InvalidArgument`](crate::Error::InvalidArgument) for lengths that differ or a key outside
/// `identity`'s key groups; RocksDB errors.
pub(crate) fn value_put_batch<K: StateKey, N: StateKey, V: StateValue>(
    db: &Db,
    cf: &ColumnFamily,
    identity: &SubtaskIdentity,
    ns: &N,
    keys: &[K],
    values: &[V],
) -> Result<()> {
    crate::keyed::state_ops::check_lengths(keys.len(), values.len())?;
    let batch = batch_rows(identity, keys, ns)?;
    let mut write = WriteBatch::default();
    let mut value_bytes = Vec::new();
    // Row-key order (equal rows by position, so the last value of a repeated key is written last and
    // wins): the memtable's skip list inserts sorted keys cheaply.
    for &i in &batch.sorted {
        value_bytes.clear();
        values[i].encode(&mut value_bytes);
        write.put_cf(cf, batch.row(i), &value_bytes);
    }
    db.write(write, "write batch")
}

/// Replaces the value of `keys[i]` in `ns` by `f(i, old)` (`None` removes it): one sorted read, one write
/// batch; nothing changes if a key is not owned.
///
/// # Errors
/// [`Error::InvalidArgument`](crate::Error::InvalidArgument) for a key outside `identity`'s key groups;
/// decode and RocksDB errors.
pub(crate) fn value_modify_batch<K: StateKey, N: StateKey, V: StateValue>(
    db: &Db,
    cf: &ColumnFamily,
    identity: &SubtaskIdentity,
    ns: &N,
    keys: &[K],
    f: &mut dyn FnMut(usize, Option<&V>) -> Option<V>,
) -> Result<()> {
    let batch = batch_rows(identity, keys, ns)?;
    let mut values = read_batch::<V>(db, cf, &batch)?;
    // A key twice in the batch: every position of a row works on the value of its first position
    // (`sorted` orders equal rows by position).
    let mut first: Vec<usize> = (0..keys.len()).collect();
    for pair in batch.sorted.windows(2) {
        if batch.row(pair[0]) == batch.row(pair[1]) {
            first[pair[1]] = first[pair[0]];
        }
    }
    let existed: Vec<bool> = values.iter().map(Option::is_some).collect();
    let mut touched = vec![false; keys.len()];
    for (i, &at) in first.iter().enumerate() {
        values[at] = f(i, values[at].as_ref());
        touched[at] = true;
    }
    let mut write = WriteBatch::default();
    let mut value_bytes = Vec::new();
    for &i in &batch.sorted {
        if !touched[i] {
            continue;
        }
        match &values[i] {
            Some(v) => {
                value_bytes.clear();
                v.encode(&mut value_bytes);
                write.put_cf(cf, batch.row(i), &value_bytes);
            }
            None if existed[i] => write.delete_cf(cf, batch.row(i)),
            None => {}
        }
    }
    db.write(write, "write batch")
}

/// The entries of the map whose rows start with `prefix` (the current key's row key in a namespace),
/// streamed from a RocksDB iterator.
pub(crate) fn map_iter<'a, UK: StateKey, V: StateValue>(
    db: &'a Db,
    cf: &'a ColumnFamily,
    prefix: Vec<u8>,
) -> MapEntries<'a, UK, V> {
    let mut it = db.iter(cf);
    it.seek(&prefix);
    let mut done = false;
    MapEntries::new(std::iter::from_fn(move || {
        if done {
            return None;
        }
        match (it.key(), it.value()) {
            (Some(k), Some(v)) if k.starts_with(&prefix) => {
                let entry = UK::decode(&k[prefix.len()..]).and_then(|uk| Ok((uk, V::decode(v)?)));
                it.next();
                Some(entry)
            }
            _ => {
                done = true;
                it.status().err().map(|e| Err(db_error("map iteration", e)))
            }
        }
    }))
}

/// Whether no row starts with `prefix`.
///
/// # Errors
/// RocksDB errors.
pub(crate) fn map_is_empty(db: &Db, cf: &ColumnFamily, prefix: &[u8]) -> Result<bool> {
    let mut empty = true;
    scan_prefix(db, cf, prefix, |_, _| {
        empty = false;
        Ok(false)
    })?;
    Ok(empty)
}

/// Puts `entries` into the map whose rows start with `prefix`, in one write batch.
///
/// # Errors
/// RocksDB errors.
pub(crate) fn map_put_all<UK: StateKey, V: StateValue>(
    db: &Db,
    cf: &ColumnFamily,
    prefix: &[u8],
    entries: Vec<(UK, V)>,
) -> Result<()> {
    let mut write = WriteBatch::default();
    let (mut row, mut value) = (Vec::new(), Vec::new());
    for (uk, v) in entries {
        row.clear();
        row.extend_from_slice(prefix);
        uk.encode(&mut row);
        value.clear();
        v.encode(&mut value);
        write.put_cf(cf, &row, &value);
    }
    db.write(write, "write batch")
}

/// Keeps the entries of the map whose rows start with `prefix` for which `keep` holds (one write batch
/// deletes the others).
///
/// # Errors
/// Decode and RocksDB errors.
pub(crate) fn map_retain<UK: StateKey, V: StateValue>(
    db: &Db,
    cf: &ColumnFamily,
    prefix: &[u8],
    keep: &mut dyn FnMut(&UK, &V) -> bool,
) -> Result<()> {
    let mut write = WriteBatch::default();
    scan_prefix(db, cf, prefix, |k, v| {
        let (uk, value) = (UK::decode(&k[prefix.len()..])?, V::decode(v)?);
        if !keep(&uk, &value) {
            write.delete_cf(cf, k);
        }
        Ok(true)
    })?;
    db.write(write, "write batch")
}

/// The owned keys with a row (a live one, given the state's `expiry`) in namespace `ns`, in row order
/// (the caller checked `N` is the state's namespace type).
///
/// # Errors
/// Decode and RocksDB errors.
pub(crate) fn keys<K: StateKey, N: StateKey>(
    db: &Db,
    cf: &ColumnFamily,
    identity: &SubtaskIdentity,
    ns: &N,
    rows: Option<&ListedRows>,
) -> Result<Vec<K>> {
    let mut want = Vec::new();
    ns.encode(&mut want);
    let mut out = Vec::new();
    let mut last: Vec<u8> = Vec::new();
    let mut first = true;
    let owned = identity.key_groups();
    scan_prefix(db, cf, &[], |k, v| {
        let row = split_row_key(k, identity.max_parallelism())?;
        let wanted = row.namespace == want.as_slice()
            && owned.contains(row.key_group)
            && rows.is_none_or(|r| r.live(row.key, row.namespace, v));
        if wanted && (first || row.key != last.as_slice()) {
            first = false;
            last.clear();
            last.extend_from_slice(row.key);
            out.push(K::decode(row.key)?);
        }
        Ok(true)
    })?;
    Ok(out)
}

/// Every owned (key, namespace) pair with a row (a live one, given the state's `expiry`), in row order
/// (the caller checked `N`).
///
/// # Errors
/// Decode and RocksDB errors.
pub(crate) fn keys_and_namespaces<K: StateKey, N: StateKey>(
    db: &Db,
    cf: &ColumnFamily,
    identity: &SubtaskIdentity,
    rows: Option<&ListedRows>,
) -> Result<Vec<(K, N)>> {
    let owned = identity.key_groups();
    let mut out = Vec::new();
    // Rows of one (key, namespace) are adjacent (map rows differ only in their user key).
    let mut last: Option<(Vec<u8>, Vec<u8>)> = None;
    scan_prefix(db, cf, &[], |k, v| {
        let row = split_row_key(k, identity.max_parallelism())?;
        let live = || rows.is_none_or(|r| r.live(row.key, row.namespace, v));
        if !owned.contains(row.key_group) || !live() {
            return Ok(true);
        }
        if last
            .as_ref()
            .is_some_and(|(lk, ln)| lk == row.key && ln == row.namespace)
        {
            return Ok(true);
        }
        out.push((K::decode(row.key)?, N::decode(row.namespace)?));
        last = Some((row.key.to_vec(), row.namespace.to_vec()));
        Ok(true)
    })?;
    Ok(out)
}
