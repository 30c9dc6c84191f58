//! Row access of the LSM backend: the column family of a state, the row key of the current key in a
//! namespace, and raw gets, puts, deletes and prefix scans (row layout: `docs/formats.md`).

use rocksdb::{ColumnFamily, WriteBatch};

use crate::error::Result;
use crate::format::lsm_rows::push_namespace;
use crate::keyed::backend::{StateId, StateKey};
use crate::keyed::checks::{no_current_key, wrong_state};
use crate::rocksdb::backend::RocksDbKeyedStateBackend;
use crate::rocksdb::db::db_error;

/// The error of every access to a state whose migration failed while writing.
pub(crate) fn broken_state(name: &str) -> crate::Error {
    crate::Error::IllegalState(format!(
        "state `{name}` is unusable: migrating its rows to a new codec failed while writing, so some          rows are in each encoding; restore the backend from its checkpoint again"
    ))
}

impl<K: StateKey> RocksDbKeyedStateBackend<K> {
    #[inline]
    pub(crate) fn cf(&self, id: StateId) -> Result<&ColumnFamily> {
        let state = self
            .states
            .get(id.0 as usize)
            .ok_or_else(|| wrong_state(id))?;
        if state.broken {
            return Err(broken_state(&state.meta.name));
        }
        self.db.cf(&state.cf).ok_or_else(|| wrong_state(id))
    }

    /// Row key of the current key in `ns` (plus `user_key` bytes for map rows) in the scratch buffer.
    #[inline]
    pub(crate) fn row_key<N: StateKey>(&self, ns: &N, scratch: &mut Vec<u8>) -> Result<()> {
        let current = self.current.as_ref().ok_or_else(no_current_key)?;
        scratch.clear();
        scratch.extend_from_slice(&current.prefix);
        push_namespace(scratch, |out| ns.encode(out));
        Ok(())
    }

    pub(crate) fn get_raw(
        &self,
        id: StateId,
        key: &[u8],
    ) -> Result<Option<rocksdb::DBPinnableSlice<'_>>> {
        let cf = self.cf(id)?;
        self.db.get(cf, key)
    }

    pub(crate) fn put_raw(&self, id: StateId, key: &[u8], value: &[u8]) -> Result<()> {
        let cf = self.cf(id)?;
        self.db.put(cf, key, value)
    }

    pub(crate) fn delete_raw(&self, id: StateId, key: &[u8]) -> Result<()> {
        let cf = self.cf(id)?;
        self.db.delete(cf, key)
    }

    /// Calls `f` on every row whose key starts with `prefix`, in key order, until it returns `false`.
    pub(crate) fn scan_prefix(
        &self,
        id: StateId,
        prefix: &[u8],
        mut f: impl FnMut(&[u8], &[u8]) -> Result<bool>,
    ) -> Result<()> {
        let cf = self.cf(id)?;
        let mut it = self.db.iter(cf);
        it.seek(prefix);
        while let (Some(k), Some(v)) = (it.key(), it.value()) {
            if !k.starts_with(prefix) || !f(k, v)? {
                break;
            }
            it.next();
        }
        it.status().map_err(|e| db_error("scan", e))
    }

    /// Deletes every row whose key starts with `prefix`.
    pub(crate) fn delete_prefix(&self, id: StateId, prefix: &[u8]) -> Result<()> {
        let cf = self.cf(id)?;
        let mut batch = WriteBatch::default();
        self.scan_prefix(id, prefix, |k, _| {
            batch.delete_cf(cf, k);
            Ok(true)
        })?;
        self.db.write(batch, "delete")
    }
}
