//! Prefix scans and deletes over a state's rows (row layout: `docs/formats.md`).

use rocksdb::{ColumnFamily, WriteBatch};

use crate::error::Result;
use crate::rocksdb::db::{Db, db_error};

/// Calls `f` on every row of `cf` whose key starts with `prefix`, in key order, until it returns `false`.
///
/// # Errors
/// What `f` returns; [`crate::Error::Local`] if RocksDB fails the scan.
pub(crate) fn scan_prefix(
    db: &Db,
    cf: &ColumnFamily,
    prefix: &[u8],
    mut f: impl FnMut(&[u8], &[u8]) -> Result<bool>,
) -> Result<()> {
    let mut it = db.iter(cf);
    it.seek(prefix);
    while let (Some(k), Some(v)) = (it.key(), it.value()) {
        if !k.starts_with(prefix) || !f(k, v)? {
            break;
        }
        it.next();
    }
    it.status().map_err(|e| db_error("scan", e))
}

/// Deletes every row of `cf` whose key starts with `prefix`, in one write batch.
///
/// # Errors
/// [`crate::Error::Local`] from RocksDB.
pub(crate) fn delete_prefix(db: &Db, cf: &ColumnFamily, prefix: &[u8]) -> Result<()> {
    let mut batch = WriteBatch::default();
    scan_prefix(db, cf, prefix, |k, _| {
        batch.delete_cf(cf, k);
        Ok(true)
    })?;
    db.write(batch, "delete")
}
