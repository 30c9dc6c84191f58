//! Ingesting another RocksDB database's own SST files into a column family, sequence numbers kept and
//! the files hard-linked, not rewritten (RocksDB's `allow_db_generated_files` with `link_files`, RocksDB
//! 9.x and later). A rescale takes another subtask's key groups this way (`docs/lsm.md`, "Restore").
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

use std::ffi::{CStr, CString};
use std::os::raw::c_char;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use librocksdb_sys as ffi;
use rocksdb::{AsColumnFamilyRef, AsRawPtr, ColumnFamily, DB};

/// One SST file of a database: where it is and the first and last user keys it covers (rows and range
/// tombstones alike; `None` where RocksDB gave no key).
pub(crate) struct SstFile {
    pub(crate) path: PathBuf,
    level: i32,
    first_key: Option<Vec<u8>>,
    last_key: Option<Vec<u8>>,
}

impl SstFile {
    /// The file's name (RocksDB's, e.g. `000012.sst`).
    pub(crate) fn local_name(&self) -> String {
        self.path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    }

    /// The LSM level the file is in (0 for a flush's output).
    pub(crate) fn level(&self) -> i32 {
        self.level
    }

    /// Whether the file's key range meets `[start, end)` (a file without keys is taken to).
    pub(crate) fn meets(&self, start: &[u8], end: &[u8]) -> bool {
        match (&self.first_key, &self.last_key) {
            (Some(first), Some(last)) => first.as_slice() < end && last.as_slice() >= start,
            _ => true,
        }
    }

    /// Whether every row and range tombstone of the file lies in `[start, end)`.
    pub(crate) fn within(&self, start: &[u8], end: &[u8]) -> bool {
        match (&self.first_key, &self.last_key) {
            (Some(first), Some(last)) => first.as_slice() >= start && last.as_slice() < end,
            _ => false,
        }
    }
}

/// The SST files of each column family of `db` (whose directory is `dir`), in the order RocksDB must
/// ingest them: deepest level first, level 0 oldest first (as RocksDB lists each level's files, level 0
/// newest first, reversed). Column families without files are left out.
///
/// # Errors
/// RocksDB's error if it cannot list the live files.
pub(crate) fn files_oldest_first(
    db: &DB,
    dir: &Path,
) -> Result<Vec<(String, Vec<SstFile>)>, rocksdb::Error> {
    let mut live = db.live_files()?;
    // RocksDB lists a column family's files level by level, level 0 newest first; reversed, the deepest
    // level comes first and level 0 oldest first. The stable sort keeps that order inside a level.
    live.reverse();
    live.sort_by_key(|f| std::cmp::Reverse(f.level));
    let mut by_cf: Vec<(String, Vec<SstFile>)> = Vec::new();
    for f in live {
        let file = SstFile {
            path: dir.join(f.name.trim_start_matches('/')),
            level: f.level,
            first_key: f.start_key,
            last_key: f.end_key,
        };
        match by_cf.iter_mut().find(|(cf, _)| *cf == f.column_family_name) {
            Some((_, files)) => files.push(file),
            None => by_cf.push((f.column_family_name, vec![file])),
        }
    }
    Ok(by_cf)
}

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

/// Ingests `files` (SST files a RocksDB database wrote, in [`files_oldest_first`]'s order) into `cf` of
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
    if error.is_null() {
        return Ok(());
    }
    // SAFETY: RocksDB set `error` to a NUL-terminated string allocated with malloc; it is read once and
    // freed with RocksDB's own `rocksdb_free`.
    let message = unsafe {
        let message = CStr::from_ptr(error).to_string_lossy().into_owned();
        ffi::rocksdb_free(error.cast());
        message
    };
    Err(message)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests fail loudly")]

    use super::*;
    use rocksdb::{ColumnFamilyDescriptor, Options};

    fn open(dir: &Path) -> DB {
        let mut options = Options::default();
        options.create_if_missing(true);
        options.create_missing_column_families(true);
        let cf = ColumnFamilyDescriptor::new("s", Options::default());
        DB::open_cf_descriptors(&options, dir, vec![cf]).unwrap()
    }

    fn key(prefix: &str, i: u32) -> Vec<u8> {
        format!("{prefix}{i:04}").into_bytes()
    }

    fn value(db: &DB, k: &[u8]) -> Option<Vec<u8>> {
        db.get_cf(db.cf_handle("s").unwrap(), k).unwrap()
    }

    /// A source database with every level of a column family in use: a bottom-level file, then three
    /// level-0 files overwriting ever fewer keys and deleting one.
    fn source(dir: &Path) -> DB {
        let db = open(dir);
        let cf = db.cf_handle("s").unwrap();
        for i in 0..1000 {
            db.put_cf(cf, key("a", i), b"v1").unwrap();
        }
        db.flush_cf(cf).unwrap();
        db.compact_range_cf(cf, None::<&[u8]>, None::<&[u8]>);
        for (n, newer) in [(500, b"v2"), (100, b"v3")] {
            for i in 0..n {
                db.put_cf(cf, key("a", i), newer).unwrap();
            }
            db.flush_cf(cf).unwrap();
        }
        db.delete_cf(cf, key("a", 990)).unwrap();
        db.flush_cf(cf).unwrap();
        db
    }

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
            let expected: Option<&[u8]> = match i {
                990 => None,
                0..100 => Some(b"v3"),
                100..500 => Some(b"v2"),
                _ => Some(b"v1"),
            };
            assert_eq!(value(&to, &key("a", i)).as_deref(), expected, "key {i}");
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

    /// The basis of fetching only some of a checkpoint's files: a copy of a database's MANIFEST,
    /// OPTIONS and CURRENT with one of its SST files opens read-only when RocksDB is told not to check
    /// every file (`paranoid_checks` off); it lists every file with its key range, and the rows of the
    /// file present read back.
    #[test]
    fn a_database_without_some_of_its_files_opens_read_only_and_lists_them_all() {
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let db = open(a.path());
        let cf = db.cf_handle("s").unwrap();
        for (prefix, n) in [("a", 100), ("b", 100)] {
            for i in 0..n {
                db.put_cf(cf, key(prefix, i), prefix.as_bytes()).unwrap();
            }
            db.flush_cf(cf).unwrap();
        }
        let all = files_oldest_first(&db, a.path()).unwrap();
        drop(db);
        let (_, ssts) = all.iter().find(|(cf, _)| cf == "s").unwrap();
        let keep = ssts.iter().find(|f| f.within(b"b", b"c")).unwrap();
        for entry in std::fs::read_dir(a.path()).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            let copy = name.starts_with("MANIFEST")
                || name.starts_with("OPTIONS")
                || name == "CURRENT"
                || path == keep.path;
            if copy {
                std::fs::copy(&path, b.path().join(&name)).unwrap();
            }
        }
        let mut options = Options::default();
        options.set_paranoid_checks(false);
        let cfs = vec![ColumnFamilyDescriptor::new("s", Options::default())];
        let partial = DB::open_cf_descriptors_read_only(&options, b.path(), cfs, false).unwrap();
        let listed = files_oldest_first(&partial, b.path()).unwrap();
        let (_, listed) = listed.iter().find(|(cf, _)| cf == "s").unwrap();
        assert_eq!(listed.len(), 2);
        assert_eq!(listed.iter().filter(|f| f.within(b"a", b"b")).count(), 1);
        let cf = partial.cf_handle("s").unwrap();
        assert_eq!(
            partial.get_cf(cf, key("b", 7)).unwrap().as_deref(),
            Some(&b"b"[..])
        );
    }
}
