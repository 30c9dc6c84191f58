//! A rescale's database built by importing (`docs/lsm.md`, "Restore"): each state's column family is
//! created at once from the SST files of every overlapping handle that can hold owned rows, each file at
//! its level with its sequence numbers (`rocksdb/import_db_files.rs`), and the
//! states' descriptions are written beside them. Nothing is rewritten or synced; the caller opens the
//! database and clips it to the owned key groups.

use std::path::{Path, PathBuf};

use rocksdb::DB;

use crate::error::{Error, Result};
use crate::format::lsm_rows::{cf_name, decode_meta, meta_key};
use crate::key_group::KeyGroupRange;
use crate::rocksdb::config::RocksDbConfig;
use crate::rocksdb::db::db_error;
use crate::rocksdb::db_files::{SstFile, files_oldest_first};
use crate::rocksdb::import_db_files::import_column_family;
use crate::rocksdb::instance::remove_dir_if_exists;
use crate::rocksdb::options::{ColumnFamilyOptions, Memory, options_with};
use crate::rocksdb::restore::fetch::{bounds, needed, open_read_only};
use crate::snapshot::handle::KeyedStateHandle;
use crate::snapshot::state_meta::StateMeta;

/// One state met in the handles: its description (as the first handle stored it) and the files of its
/// column family the restore needs, from every handle.
struct ImportedState {
    meta: StateMeta,
    stored: Box<[u8]>,
    files: Vec<SstFile>,
}

/// Builds the database of a rescale to the key groups `owned` in the new directory `db_dir` from
/// `handles`, whose files a rescale's fetch put into `dirs` (one per handle, `Fetch::overlapping`):
/// each state's column family imported from the files of every handle that can hold owned rows, the
/// `default` column family holding the states' descriptions. Rows of key groups beyond `owned` come
/// along; the caller clips them after opening the database. `staging` is a scratch directory on the
/// same file system (links are made there).
///
/// Returns `false`, with `db_dir` removed and the fetched files untouched, when a handle's file reaches
/// beyond the key groups it claims or RocksDB refuses an import (files of two handles overlapping, a
/// file without entries): the caller builds the database another way then.
///
/// # Errors
/// - `unreadable` applied to the [`Error::Local`] naming a handle's directory if RocksDB cannot open it
///   or list its files (its files passed their checks: the caller names the checkpoint corrupt);
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
    owned: KeyGroupRange,
    db_dir: &Path,
    staging: &Path,
    unreadable: &(dyn Fn(Error, &KeyedStateHandle) -> Error + Sync),
) -> Result<bool> {
    let mut states: Vec<ImportedState> = Vec::new();
    for (handle, dir) in handles.iter().zip(dirs) {
        if !gather(config, memory, handle, dir, owned, &mut states).map_err(|e| match e {
            Error::Local { .. } => unreadable(e, handle),
            other => other,
        })? {
            return Ok(false);
        }
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

/// Adds to `states` the states `handle` describes in the database in `dir` and the files of theirs
/// a restore of `owned` needs (`fetch::needed`). Returns `false` if such a file reaches beyond the key
/// groups the handle claims.
///
/// # Errors
/// [`Error::Local`] naming `dir` if RocksDB cannot open or read it; as [`import_handles`] otherwise.
fn gather(
    config: &RocksDbConfig,
    memory: &Memory,
    handle: &KeyedStateHandle,
    dir: &Path,
    owned: KeyGroupRange,
    states: &mut Vec<ImportedState>,
) -> Result<bool> {
    let (claimed, max_parallelism) = (handle.key_groups, handle.max_parallelism);
    let Some((start, end)) = bounds(claimed, max_parallelism) else {
        return Ok(false);
    };
    let path = dir.display().to_string();
    let db = open_read_only(config, memory, dir).map_err(|e| db_error(&path, e))?;
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
    let listed = files_oldest_first(&db, dir).map_err(|message| Error::local(&path, message))?;
    for (cf, files) in listed {
        // A column family without a description (the `default` one) holds no keyed rows.
        let Some(&i) = met.iter().find(|&&i| cf_name(&states[i].meta.name) == cf) else {
            continue;
        };
        for f in files {
            if !needed(&f, claimed, owned, max_parallelism) {
                continue;
            }
            if !f.within(&start, &end) {
                return Ok(false);
            }
            states[i].files.push(f);
        }
    }
    Ok(true)
}
