//! A rescale's database built by importing (`docs/lsm.md`, "Restore"): each state's column family is
//! created at once from the SST files of every overlapping handle that can hold owned rows, each file at
//! its level with its sequence numbers (`rocksdb/import_db_files.rs`), and the
//! states' descriptions are written beside them. Nothing is rewritten or synced; the caller opens the
//! database and clips it to the owned key groups.

use std::path::{Path, PathBuf};

use rocksdb::DB;

use crate::error::{Error, Result};
use crate::format::lsm_rows::{cf_name, decode_meta, meta_key};
use crate::rocksdb::config::RocksDbConfig;
use crate::rocksdb::db::db_error;
use crate::rocksdb::db_files::SstFile;
use crate::rocksdb::import_db_files::import_column_family;
use crate::rocksdb::instance::remove_dir_if_exists;
use crate::rocksdb::options::{ColumnFamilyOptions, Memory, options_with};
use crate::rocksdb::restore::fetch::FilesByCf;
use crate::snapshot::handle::KeyedStateHandle;
use crate::snapshot::state_meta::StateMeta;

/// One state met in the handles: its description (as the first handle stored it) and the files of its
/// column family the restore needs, from every handle.
struct ImportedState {
    meta: StateMeta,
    stored: Box<[u8]>,
    files: Vec<SstFile>,
}

/// Builds the database of a rescale in the new directory `db_dir` from `handles`, whose files a
/// rescale's fetch put into `dirs` (one per handle) and listed in `listed` (`Fetch::overlapping`: the
/// files that can hold owned rows, by column family): each state's column family imported from those
/// files of every handle, the `default` column family holding the states' descriptions. Rows of key
/// groups the restore does not own come along; the caller clips them after opening the database.
/// `staging` is a scratch directory on the same file system (links are made there).
///
/// Returns `false`, with `db_dir` removed and the fetched files untouched, when RocksDB refuses an
/// import (files of two handles overlapping, a file without entries): the caller builds the database
/// another way then.
///
/// # Errors
/// - `unreadable` applied to the [`Error::Local`] naming a handle's directory if RocksDB cannot open it
///   (its files passed their checks: the caller names the checkpoint corrupt);
/// - [`Error::Corrupt`] naming the directory if a state's description is malformed;
/// - [`Error::InvalidArgument`] if two handles describe a state differently;
/// - [`Error::Local`] if the new database cannot be created or written.
#[allow(
    clippy::too_many_arguments,
    reason = "a restore step's inputs, each used once"
)]
pub(crate) fn import_handles(
    config: &RocksDbConfig,
    memory: &Memory,
    handles: &[&KeyedStateHandle],
    dirs: &[PathBuf],
    listed: Vec<FilesByCf>,
    db_dir: &Path,
    staging: &Path,
    unreadable: &(dyn Fn(Error, &KeyedStateHandle) -> Error + Sync),
) -> Result<bool> {
    let mut states: Vec<ImportedState> = Vec::new();
    for ((handle, dir), files) in handles.iter().zip(dirs).zip(listed) {
        gather(config, memory, dir, files, &mut states).map_err(|e| match e {
            Error::Local { .. } => unreadable(e, handle),
            other => other,
        })?;
    }
    remove_dir_if_exists(db_dir)?;
    let path = db_dir.display().to_string();
    let mut db = DB::open(&options_with(config, memory), db_dir).map_err(|e| db_error(&path, e))?;
    let cf_options = ColumnFamilyOptions::new(config, memory, None);
    for state in &states {
        let cf = cf_name(&state.meta.name);
        let mut options = cf_options.for_cf(&cf);
        // Nothing compacts before the clip; the backend opens the database with its own options.
        options.set_disable_auto_compactions(true);
        let files: Vec<&SstFile> = state.files.iter().collect();
        let created = if files.is_empty() {
            db.create_cf(&cf, &options).map_err(|e| e.to_string())
        } else {
            import_column_family(&db, &options, &cf, &files, staging)
        };
        if let Err(why) = created {
            tracing::warn!(
                column_family = %cf,
                %why,
                "rescale: RocksDB refused to import the handles' files; ingesting them or copying rows instead"
            );
            drop(db);
            remove_dir_if_exists(db_dir)?;
            remove_dir_if_exists(staging)?;
            return Ok(false);
        }
        db.put(meta_key(&state.meta.name), &state.stored)
            .map_err(|e| db_error(&path, e))?;
    }
    db.flush().map_err(|e| db_error(&path, e))?;
    Ok(true)
}

/// Adds to `states` the states the database in `dir` describes (its `default` column family, opened
/// read-only alone), each with its column family's files of `files`. Files of a column family without
/// a description (the `default` one) are left out: they hold no keyed rows.
///
/// # Errors
/// [`Error::Local`] naming `dir` if RocksDB cannot open or read it; as [`import_handles`] otherwise.
fn gather(
    config: &RocksDbConfig,
    memory: &Memory,
    dir: &Path,
    files: FilesByCf,
    states: &mut Vec<ImportedState>,
) -> Result<()> {
    let path = dir.display().to_string();
    let mut options = options_with(config, memory);
    // Only the `default` column family's files are read; RocksDB need not check the others'.
    options.set_paranoid_checks(false);
    let db = DB::open_for_read_only(&options, dir, false).map_err(|e| db_error(&path, e))?;
    let mut met = Vec::new();
    for item in db.prefix_iterator(b"meta:") {
        let (key, stored) = item.map_err(|e| db_error(&path, e))?;
        if !key.starts_with(b"meta:") {
            break;
        }
        let meta = decode_meta(&stored, &path)?;
        let index = match states.iter().position(|s| s.meta.name == meta.name) {
            Some(i) => {
                meta.check_compatible(&states[i].meta)?;
                i
            }
            None => {
                states.push(ImportedState {
                    meta,
                    stored,
                    files: Vec::new(),
                });
                states.len() - 1
            }
        };
        met.push(index);
    }
    for (cf, files) in files {
        if let Some(&i) = met.iter().find(|&&i| cf_name(&states[i].meta.name) == cf) {
            states[i].files.extend(files);
        }
    }
    Ok(())
}
