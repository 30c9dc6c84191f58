//! The SST files of an open RocksDB database, listed by column family with what ingesting or importing
//! them into another database needs: level, key range and sequence numbers (`rocksdb/ingest_db_files.rs`).
//!
//! The `rocksdb` crate's `live_files` leaves out the sequence numbers, so the list comes from RocksDB's
//! C API (`rocksdb_livefiles`, its `GetLiveFilesMetaData`).

use std::ffi::CStr;
use std::os::raw::c_char;
use std::path::{Path, PathBuf};

use librocksdb_sys as ffi;
use rocksdb::{AsRawPtr, DB};

/// One SST file of a database: where it is, its level, the first and last user keys it covers (rows and
/// range tombstones alike; `None` where RocksDB gave no key), and what RocksDB's metadata says of it.
pub(crate) struct SstFile {
    pub(crate) path: PathBuf,
    level: i32,
    first_key: Option<Vec<u8>>,
    last_key: Option<Vec<u8>>,
    /// Size in bytes.
    pub(crate) size: u64,
    /// The smallest and largest sequence numbers of its entries.
    pub(crate) seqnos: (u64, u64),
    /// Entries (puts, merges, deletes) and of those the deletes.
    pub(crate) entries: u64,
    pub(crate) deletions: u64,
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
/// A message if RocksDB gives no list.
pub(crate) fn files_oldest_first(
    db: &DB,
    dir: &Path,
) -> Result<Vec<(String, Vec<SstFile>)>, String> {
    let mut live = live_files(db, dir)?;
    // RocksDB lists a column family's files level by level, level 0 newest first; reversed, the deepest
    // level comes first and level 0 oldest first. The stable sort keeps that order inside a level.
    live.reverse();
    live.sort_by_key(|(_, f)| std::cmp::Reverse(f.level));
    let mut by_cf: Vec<(String, Vec<SstFile>)> = Vec::new();
    for (name, file) in live {
        match by_cf.iter_mut().find(|(cf, _)| *cf == name) {
            Some((_, files)) => files.push(file),
            None => by_cf.push((name, vec![file])),
        }
    }
    Ok(by_cf)
}

/// Frees RocksDB's list of live files when dropped.
struct LiveFiles(*const ffi::rocksdb_livefiles_t);

impl Drop for LiveFiles {
    #[allow(
        unsafe_code,
        reason = "RocksDB's C API: the crate gives no sequence numbers"
    )]
    fn drop(&mut self) {
        // SAFETY: the pointer came from `rocksdb_livefiles`, is not null, and is destroyed once, here.
        unsafe { ffi::rocksdb_livefiles_destroy(self.0) }
    }
}

/// Every SST file of `db` with its column family's name, in RocksDB's order.
#[allow(
    unsafe_code,
    reason = "RocksDB's C API: the crate gives no sequence numbers"
)]
fn live_files(db: &DB, dir: &Path) -> Result<Vec<(String, SstFile)>, String> {
    // SAFETY: `db` is open for the call; RocksDB returns a list it allocated, owned by the guard.
    let list = LiveFiles(unsafe { ffi::rocksdb_livefiles(db.as_raw_ptr()) });
    if list.0.is_null() {
        return Err("RocksDB listed no live files".to_string());
    }
    // SAFETY: `list.0` is a live list.
    let count = unsafe { ffi::rocksdb_livefiles_count(list.0) };
    let mut files = Vec::with_capacity(usize::try_from(count).unwrap_or_default());
    for i in 0..count {
        // SAFETY: `i` is below the list's count; the strings and keys returned point into the list,
        // which outlives this iteration, and are copied before it ends. Names are NUL-terminated;
        // keys come with their lengths.
        let (cf, name, file) = unsafe {
            let text = |p: *const std::os::raw::c_char| {
                if p.is_null() {
                    String::new()
                } else {
                    CStr::from_ptr(p).to_string_lossy().into_owned()
                }
            };
            let key = |p: *const std::os::raw::c_char, len: usize| {
                (!p.is_null()).then(|| std::slice::from_raw_parts(p.cast::<u8>(), len).to_vec())
            };
            let (mut first_len, mut last_len) = (0usize, 0usize);
            let first = ffi::rocksdb_livefiles_smallestkey(list.0, i, &mut first_len);
            let last = ffi::rocksdb_livefiles_largestkey(list.0, i, &mut last_len);
            (
                text(ffi::rocksdb_livefiles_column_family_name(list.0, i)),
                text(ffi::rocksdb_livefiles_name(list.0, i)),
                SstFile {
                    path: PathBuf::new(),
                    level: ffi::rocksdb_livefiles_level(list.0, i),
                    first_key: key(first, first_len),
                    last_key: key(last, last_len),
                    size: ffi::rocksdb_livefiles_size(list.0, i) as u64,
                    seqnos: (
                        ffi::rocksdb_livefiles_smallest_seqno(list.0, i),
                        ffi::rocksdb_livefiles_largest_seqno(list.0, i),
                    ),
                    entries: ffi::rocksdb_livefiles_entries(list.0, i),
                    deletions: ffi::rocksdb_livefiles_deletions(list.0, i),
                },
            )
        };
        let path = dir.join(name.trim_start_matches('/'));
        files.push((cf, SstFile { path, ..file }));
    }
    Ok(files)
}

/// `Ok` if RocksDB left `error` null, else its message (the string freed).
#[allow(
    unsafe_code,
    reason = "RocksDB's C API: its error strings are freed with its own allocator"
)]
pub(crate) fn taken_error(error: *mut c_char) -> Result<(), String> {
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

/// Small databases for the tests of ingestion, import and listing.
#[cfg(test)]
pub(crate) mod test_dbs {
    #![allow(clippy::unwrap_used, reason = "tests fail loudly")]

    use std::path::Path;

    use rocksdb::{ColumnFamilyDescriptor, DB, Options};

    /// A database in `dir` with the column family `s`, default options.
    pub(crate) fn open(dir: &Path) -> DB {
        let mut options = Options::default();
        options.create_if_missing(true);
        options.create_missing_column_families(true);
        let cf = ColumnFamilyDescriptor::new("s", Options::default());
        DB::open_cf_descriptors(&options, dir, vec![cf]).unwrap()
    }

    /// Key `i` under `prefix`: the prefix, then `i` in 4 decimal digits.
    pub(crate) fn key(prefix: &str, i: u32) -> Vec<u8> {
        format!("{prefix}{i:04}").into_bytes()
    }

    /// The value of `k` in the column family `s`.
    pub(crate) fn value(db: &DB, k: &[u8]) -> Option<Vec<u8>> {
        db.get_cf(db.cf_handle("s").unwrap(), k).unwrap()
    }

    /// A source database with every level of a column family in use: a bottom-level file, then three
    /// level-0 files overwriting ever fewer keys and deleting one.
    pub(crate) fn source(dir: &Path) -> DB {
        source_of(dir, "a")
    }

    /// As [`source`], keys starting with `prefix`.
    pub(crate) fn source_of(dir: &Path, prefix: &str) -> DB {
        let db = open(dir);
        let cf = db.cf_handle("s").unwrap();
        for i in 0..1000 {
            db.put_cf(cf, key(prefix, i), b"v1").unwrap();
        }
        db.flush_cf(cf).unwrap();
        db.compact_range_cf(cf, None::<&[u8]>, None::<&[u8]>);
        for (n, newer) in [(500, b"v2"), (100, b"v3")] {
            for i in 0..n {
                db.put_cf(cf, key(prefix, i), newer).unwrap();
            }
            db.flush_cf(cf).unwrap();
        }
        db.delete_cf(cf, key(prefix, 990)).unwrap();
        db.flush_cf(cf).unwrap();
        db
    }

    /// The value [`source_of`] leaves under key `i`.
    pub(crate) fn expected(i: u32) -> Option<&'static [u8]> {
        match i {
            990 => None,
            0..100 => Some(b"v3"),
            100..500 => Some(b"v2"),
            _ => Some(b"v1"),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests fail loudly")]

    use rocksdb::{ColumnFamilyDescriptor, Options};

    use super::test_dbs::{key, open};
    use super::*;

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
