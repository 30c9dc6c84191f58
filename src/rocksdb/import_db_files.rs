//! Importing other RocksDB databases' own SST files as a new column family, each file at its level with
//! its sequence numbers, hard-linked, not rewritten, not synced (RocksDB's `CreateColumnFamilyWithImport`,
//! the way FLINK-31238 rescales). A rescale builds its database this way (`docs/lsm.md`, "Restore").
//!
//! The `rocksdb` crate does not wrap the import, so the call goes through RocksDB's C API
//! (`librocksdb-sys`, the same build the crate links).

use std::ffi::{CStr, CString};
use std::os::raw::c_char;
use std::os::unix::ffi::OsStrExt;

use librocksdb_sys as ffi;
use rocksdb::{AsRawPtr, DB, Options};

use crate::rocksdb::db_files::{SstFile, taken_error};

/// The name of RocksDB's default comparator (bytewise), the one every database here uses.
const BYTEWISE: &CStr = c"leveldb.BytewiseComparator";

/// Creates the column family `name` in `db`, with `options`, holding `files` at their levels with their
/// sequence numbers: RocksDB's `CreateColumnFamilyWithImport` (the way FLINK-31238 rescales). The files
/// may come from several databases (as [`files_oldest_first`](crate::rocksdb::db_files::files_oldest_first) lists them, for column families of these
/// options), as long as files of different databases hold disjoint key ranges: RocksDB orders level 0 by
/// sequence number and checks that no two files of a deeper level overlap. Each file is hard-linked
/// into the new directory `staging` first and the link moved into `db`, so the files stay where they are;
/// `staging` is removed afterwards. Unlike an ingestion, an import does not sync the files it links
/// (a restore's downloads need no sync: a crash restores again from the checkpoint).
///
/// # Errors
/// RocksDB's message if it refuses (files of one level overlapping, a file without entries, an unreadable
/// file; `db` then has no column family `name`), or the message of a failed link or directory
/// operation.
pub(crate) fn import_column_family(
    db: &DB,
    options: &Options,
    name: &str,
    files: &[&SstFile],
    staging: &std::path::Path,
) -> Result<(), String> {
    let failed = |what: &std::path::Path, e: std::io::Error| format!("{}: {e}", what.display());
    if staging.exists() {
        std::fs::remove_dir_all(staging).map_err(|e| failed(staging, e))?;
    }
    std::fs::create_dir_all(staging).map_err(|e| failed(staging, e))?;
    let mut links = Vec::with_capacity(files.len());
    for (i, f) in files.iter().enumerate() {
        let link = format!("{i:06}.sst");
        std::fs::hard_link(&f.path, staging.join(&link)).map_err(|e| failed(&f.path, e))?;
        links.push(CString::new(link).map_err(|e| e.to_string())?);
    }
    let c = |text: &[u8]| CString::new(text).map_err(|e| format!("a name holds a NUL byte: {e}"));
    let (name, dir) = (c(name.as_bytes())?, c(staging.as_os_str().as_bytes())?);
    let imported = import(db, options, &name, &dir, files, &links);
    std::fs::remove_dir_all(staging).map_err(|e| failed(staging, e))?;
    imported
}

/// Frees RocksDB's import options and files metadata when dropped.
struct ImportArguments {
    options: *mut ffi::rocksdb_import_column_family_options_t,
    metadata: *mut ffi::rocksdb_export_import_files_metadata_t,
}

impl Drop for ImportArguments {
    #[allow(
        unsafe_code,
        reason = "RocksDB's C API: the crate does not wrap column family import"
    )]
    fn drop(&mut self) {
        // SAFETY: each pointer came from its `_create` function, is not null (checked before the guard
        // is built), and is destroyed once, here.
        unsafe {
            ffi::rocksdb_import_column_family_options_destroy(self.options);
            ffi::rocksdb_export_import_files_metadata_destroy(self.metadata);
        }
    }
}

#[allow(
    unsafe_code,
    reason = "RocksDB's C API: the crate does not wrap column family import"
)]
fn import(
    db: &DB,
    options: &Options,
    name: &CStr,
    dir: &CStr,
    files: &[&SstFile],
    links: &[CString],
) -> Result<(), String> {
    // SAFETY: creating options and metadata has no precondition.
    let (import_options, metadata) = unsafe {
        (
            ffi::rocksdb_import_column_family_options_create(),
            ffi::rocksdb_export_import_files_metadata_create(),
        )
    };
    if import_options.is_null() || metadata.is_null() {
        // SAFETY: whichever is not null came from its `_create` and is destroyed once.
        unsafe {
            if !import_options.is_null() {
                ffi::rocksdb_import_column_family_options_destroy(import_options);
            }
            if !metadata.is_null() {
                ffi::rocksdb_export_import_files_metadata_destroy(metadata);
            }
        }
        return Err("RocksDB could not allocate import arguments".to_string());
    }
    let arguments = ImportArguments {
        options: import_options,
        metadata,
    };
    // SAFETY: the list and each file description are created here and handed over at once (`_add`
    // takes the file description, `_set_files` the list); the strings passed are NUL-terminated and
    // copied by the setters; `arguments` holds live objects.
    unsafe {
        let list = ffi::rocksdb_livefiles_create();
        for (f, link) in files.iter().zip(links) {
            let file = ffi::rocksdb_livefile_create();
            ffi::rocksdb_livefile_set_column_family_name(file, name.as_ptr());
            ffi::rocksdb_livefile_set_level(file, f.level());
            ffi::rocksdb_livefile_set_name(file, link.as_ptr());
            ffi::rocksdb_livefile_set_directory(file, dir.as_ptr());
            ffi::rocksdb_livefile_set_size(file, usize::try_from(f.size).unwrap_or(0));
            ffi::rocksdb_livefile_set_smallest_seqno(file, f.seqnos.0);
            ffi::rocksdb_livefile_set_largest_seqno(file, f.seqnos.1);
            ffi::rocksdb_livefile_set_num_entries(file, f.entries);
            ffi::rocksdb_livefile_set_num_deletions(file, f.deletions);
            ffi::rocksdb_livefiles_add(list, file);
        }
        ffi::rocksdb_export_import_files_metadata_set_db_comparator_name(
            arguments.metadata,
            BYTEWISE.as_ptr(),
        );
        ffi::rocksdb_export_import_files_metadata_set_files(arguments.metadata, list);
        // Hard links, not copies: the links in `staging` move into the database.
        ffi::rocksdb_import_column_family_options_set_move_files(arguments.options, 1);
    }
    let mut error: *mut c_char = std::ptr::null_mut();
    // SAFETY: `db` and `options` are live for the call (borrowed), `name` is NUL-terminated, the
    // arguments are live, and `error` is a valid out-pointer RocksDB sets to a string it allocated, or
    // leaves null. The column family handle RocksDB returns is destroyed at once: the column family
    // stays in the database, which the caller reopens to use it.
    unsafe {
        let handle = ffi::rocksdb_create_column_family_with_import(
            db.as_raw_ptr(),
            options.as_raw_ptr(),
            name.as_ptr(),
            arguments.options,
            arguments.metadata,
            &mut error,
        );
        if !handle.is_null() {
            ffi::rocksdb_column_family_handle_destroy(handle);
        }
    }
    taken_error(error)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests fail loudly")]

    use rocksdb::ColumnFamilyDescriptor;

    use super::*;
    use crate::rocksdb::db_files::files_oldest_first;
    use crate::rocksdb::db_files::test_dbs::{expected, key, source_of, value};

    /// The files of column family `s` of each of `sources` (the database in each of `dirs`).
    fn state_files(sources: &[DB], dirs: &[tempfile::TempDir]) -> Vec<Vec<SstFile>> {
        (sources.iter().zip(dirs))
            .map(|(db, dir)| files_oldest_first(db, dir.path()).unwrap())
            .map(|listed| listed.into_iter().find(|(cf, _)| cf == "s").unwrap().1)
            .collect()
    }

    /// Two databases' files of every level (sequence numbers overlapping, key ranges disjoint) imported
    /// as one new column family keep each key's newest version once the database is reopened; the
    /// files stay where they were; a range tombstone written after hides imported rows, before and after
    /// a compaction.
    #[test]
    fn files_of_two_databases_import_as_one_column_family() {
        let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
        let sources = [
            source_of(dirs[0].path(), "a"),
            source_of(dirs[1].path(), "b"),
        ];
        let listed = state_files(&sources, &dirs);
        let ssts: Vec<&SstFile> = listed.iter().flatten().collect();
        assert_eq!(ssts.len(), 8, "four files of each database");
        assert!(ssts.iter().any(|f| f.level() > 0 && f.seqnos.1 > 0));
        let mut options = Options::default();
        options.create_if_missing(true);
        let target = dirs[2].path().join("db");
        let staging = dirs[2].path().join("staging");
        {
            let to = DB::open(&options, &target).unwrap();
            import_column_family(&to, &Options::default(), "s", &ssts, &staging).unwrap();
        }
        assert!(!staging.exists());
        assert!(
            ssts.iter().all(|f| f.path.exists()),
            "the sources keep their files"
        );
        drop(sources);
        let cfs = vec![ColumnFamilyDescriptor::new("s", Options::default())];
        let to = DB::open_cf_descriptors(&options, &target, cfs).unwrap();
        for prefix in ["a", "b"] {
            for i in 0..1000 {
                let got = value(&to, &key(prefix, i));
                assert_eq!(got.as_deref(), expected(i), "key {prefix}{i}");
            }
        }
        let cf = to.cf_handle("s").unwrap();
        to.delete_range_cf(cf, key("a", 500), key("b", 50)).unwrap();
        for _ in 0..2 {
            assert_eq!(value(&to, &key("a", 600)), None);
            assert_eq!(value(&to, &key("b", 49)), None);
            assert_eq!(value(&to, &key("b", 50)).as_deref(), Some(&b"v3"[..]));
            assert_eq!(value(&to, &key("a", 499)).as_deref(), Some(&b"v2"[..]));
            to.compact_range_cf(cf, None::<&[u8]>, None::<&[u8]>);
        }
    }

    /// Two databases' files of the same keys overlap at the bottom level: RocksDB refuses to import
    /// them, creates no column family, and the files stay where they were.
    #[test]
    fn overlapping_files_of_two_databases_are_refused_and_create_nothing() {
        let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
        let sources = [
            source_of(dirs[0].path(), "a"),
            source_of(dirs[1].path(), "a"),
        ];
        let listed = state_files(&sources, &dirs);
        let ssts: Vec<&SstFile> = listed.iter().flatten().collect();
        let mut options = Options::default();
        options.create_if_missing(true);
        let target = dirs[2].path().join("db");
        let staging = dirs[2].path().join("staging");
        let to = DB::open(&options, &target).unwrap();
        let refused = import_column_family(&to, &Options::default(), "s", &ssts, &staging);
        assert!(refused.is_err(), "{refused:?}");
        assert!(!staging.exists());
        assert!(ssts.iter().all(|f| f.path.exists()));
        drop(to);
        let cfs = DB::list_cf(&options, &target).unwrap();
        assert_eq!(cfs, vec!["default".to_string()]);
    }
}
