//! Ingesting another RocksDB database's own SST files into a column family, sequence numbers kept and
//! the files hard-linked, not rewritten (RocksDB's `allow_db_generated_files` with `link_files`, RocksDB
//! 9.x and later). A rescale takes another subtask's key groups this way when it cannot import them
//! (`rocksdb/import_db_files.rs`, `docs/lsm.md`, "Restore").
//!
//! The `rocksdb` crate wraps ingestion but not these two options, so the options and the call go
//! through RocksDB's C API (`librocksdb-sys`, the same build the crate links).
//!
//! RocksDB's rules for such files (its `IngestExternalFileOptions::allow_db_generated_files`): they may
//! overlap each other, older before newer (deepest level first, level 0 oldest first), but none may
//! overlap a row or range tombstone already in the column family, nor its memtable; RocksDB refuses the
//! whole ingestion then (`InvalidArgument`), leaving the column family unchanged. The sequence numbers
//! are the other database's: the target's last sequence number moves up to theirs, so what is written
//! after (a rescale's range tombstones) is newer than every ingested row.

use std::ffi::CString;
use std::os::raw::c_char;
use std::os::unix::ffi::OsStrExt;

use librocksdb_sys as ffi;
use rocksdb::{AsColumnFamilyRef, AsRawPtr, ColumnFamily, DB};

use crate::rocksdb::db_files::{SstFile, taken_error};

/// Frees RocksDB's ingestion options when dropped.
struct IngestOptions(*mut ffi::rocksdb_ingestexternalfileoptions_t);

impl Drop for IngestOptions {
    #[allow(
        unsafe_code,
        reason = "RocksDB's C API: the crate does not wrap these options"
    )]
    fn drop(&mut self) {
        // SAFETY: the pointer came from `rocksdb_ingestexternalfileoptions_create`, is not null, and is
        // destroyed once, here.
        unsafe { ffi::rocksdb_ingestexternalfileoptions_destroy(self.0) }
    }
}

/// Ingests `files` (SST files a RocksDB database wrote, in [`files_oldest_first`](crate::rocksdb::db_files::files_oldest_first)'s order) into `cf` of
/// `db` as they are: hard links (copies where a link fails), their sequence numbers kept, no flush, no
/// snapshot consistency (nothing reads `db` yet). All or nothing.
///
/// # Errors
/// RocksDB's message if it refuses (a file overlaps data already in `cf`, or cannot be read or linked);
/// `cf` is then unchanged.
pub(crate) fn ingest_db_files(
    db: &DB,
    cf: &ColumnFamily,
    files: &[&SstFile],
) -> Result<(), String> {
    if files.is_empty() {
        return Ok(());
    }
    let paths = files
        .iter()
        .map(|f| CString::new(f.path.as_os_str().as_bytes()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("a file name holds a NUL byte: {e}"))?;
    let pointers: Vec<*const c_char> = paths.iter().map(|p| p.as_ptr()).collect();
    ingest(db, cf, &pointers)
}

#[allow(
    unsafe_code,
    reason = "RocksDB's C API: the crate does not wrap these options"
)]
fn ingest(db: &DB, cf: &ColumnFamily, files: &[*const c_char]) -> Result<(), String> {
    // SAFETY: creating options has no precondition; the guard destroys them once.
    let options = IngestOptions(unsafe { ffi::rocksdb_ingestexternalfileoptions_create() });
    if options.0.is_null() {
        return Err("RocksDB could not allocate ingestion options".to_string());
    }
    // SAFETY: `options.0` is a live options object owned by the guard; the setters only store flags.
    unsafe {
        ffi::rocksdb_ingestexternalfileoptions_set_link_files(options.0, 1);
        ffi::rocksdb_ingestexternalfileoptions_set_allow_db_generated_files(options.0, 1);
        ffi::rocksdb_ingestexternalfileoptions_set_snapshot_consistency(options.0, 0);
        ffi::rocksdb_ingestexternalfileoptions_set_allow_global_seqno(options.0, 0);
        ffi::rocksdb_ingestexternalfileoptions_set_allow_blocking_flush(options.0, 0);
    }
    let mut error: *mut c_char = std::ptr::null_mut();
    // SAFETY: `db` and `cf` are live for the call (borrowed; the column family handle belongs to `db`),
    // `files` holds `files.len()` pointers to NUL-terminated strings that outlive the call (the caller's
    // `CString`s), `options.0` is live, and `error` is a valid out-pointer RocksDB sets to a string it
    // allocated, or leaves null.
    unsafe {
        ffi::rocksdb_ingest_external_file_cf(
            db.as_raw_ptr(),
            cf.inner(),
            files.as_ptr(),
            files.len(),
            options.0,
            &mut error,
        );
    }
    taken_error(error)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests fail loudly")]

    use super::*;
    use crate::rocksdb::db_files::files_oldest_first;
    use crate::rocksdb::db_files::test_dbs::{expected, key, open, source, value};

    /// Files of every level ingested as they are keep each key's newest version, so the order is
    /// right; the target's sequence numbers move past theirs, so a range tombstone written after the
    /// ingestion hides ingested rows; the target's own rows stay.
    #[test]
    fn files_of_every_level_keep_the_newest_version_and_later_writes_win() {
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let from = source(a.path());
        let files = files_oldest_first(&from, a.path()).unwrap();
        let (_, ssts) = files.iter().find(|(cf, _)| cf == "s").unwrap();
        assert_eq!(
            ssts.len(),
            4,
            "one bottom-level file and three level-0 files"
        );
        assert!(ssts.iter().all(|f| f.within(b"a", b"b")));
        assert!(!ssts.iter().all(|f| f.within(b"a0500", b"b")));
        let to = open(b.path());
        let cf = to.cf_handle("s").unwrap();
        for i in 0..10 {
            to.put_cf(cf, key("b", i), b"own").unwrap();
        }
        to.flush_cf(cf).unwrap();
        ingest_db_files(&to, cf, &ssts.iter().collect::<Vec<_>>()).unwrap();
        drop(from);
        for i in 0..1000 {
            assert_eq!(value(&to, &key("a", i)).as_deref(), expected(i), "key {i}");
        }
        assert_eq!(value(&to, &key("b", 3)).as_deref(), Some(&b"own"[..]));
        to.delete_range_cf(cf, key("a", 0), key("a", 50)).unwrap();
        assert_eq!(value(&to, &key("a", 49)), None);
        assert_eq!(value(&to, &key("a", 50)).as_deref(), Some(&b"v3"[..]));
        to.compact_range_cf(cf, None::<&[u8]>, None::<&[u8]>);
        assert_eq!(value(&to, &key("a", 49)), None);
        assert_eq!(value(&to, &key("a", 600)).as_deref(), Some(&b"v1"[..]));
    }

    /// Files overlapping a row already in the column family are refused as a whole, and the column
    /// family is unchanged.
    #[test]
    fn files_overlapping_the_target_are_refused_and_change_nothing() {
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let from = source(a.path());
        let files = files_oldest_first(&from, a.path()).unwrap();
        let (_, ssts) = files.iter().find(|(cf, _)| cf == "s").unwrap();
        let to = open(b.path());
        let cf = to.cf_handle("s").unwrap();
        to.put_cf(cf, key("a", 500), b"mine").unwrap();
        to.flush_cf(cf).unwrap();
        let refused = ingest_db_files(&to, cf, &ssts.iter().collect::<Vec<_>>()).unwrap_err();
        assert!(refused.contains("overlap"), "{refused}");
        assert_eq!(value(&to, &key("a", 500)).as_deref(), Some(&b"mine"[..]));
        assert_eq!(value(&to, &key("a", 1)), None);
    }
}
