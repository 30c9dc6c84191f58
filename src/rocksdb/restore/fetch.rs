//! Fetching a RocksDB native checkpoint's files for a restore (`docs/lsm.md`, "Restore"): every file of a
//! handle, or, for a rescale, only the SST files that can hold the owned key groups.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use futures::StreamExt;
use rocksdb::DB;

use crate::error::{Error, Result};
use crate::format::lsm_rows::key_group_prefix;
use crate::key_group::KeyGroupRange;
use crate::rocksdb::config::RocksDbConfig;
use crate::rocksdb::db::db_error;
use crate::rocksdb::db_files::{SstFile, files_oldest_first};
use crate::rocksdb::instance::remove_dir_if_exists;
use crate::rocksdb::options::{ColumnFamilyOptions, Memory, options_with};
use crate::rocksdb::snapshot::upload::CURRENT;
use crate::snapshot::handle::{KeyedStateHandle, StateFile};
use crate::snapshot::result::RestoreSources;
use crate::snapshot_io::local_copy::{LocalCopies, NotLocal};
use crate::storage::CheckpointStorage;
use crate::storage::transfer::{Transferred, download_file};

fn io_error(path: &Path, e: std::io::Error) -> Error {
    Error::local(path.display().to_string(), e)
}

/// Where a restore takes a handle's files from: checkpoint storage, or the local copies of local
/// recovery first when there are any.
pub(crate) struct Fetch<'a> {
    pub(crate) storage: &'a CheckpointStorage,
    pub(crate) concurrency: usize,
    pub(crate) local: Option<&'a LocalCopies>,
}

impl Fetch<'_> {
    /// Puts every file of `handle` into the new directory `dir`, in parallel, checking sizes and CRC32s:
    /// from its local copy when there is an intact one (local recovery), else downloaded. Returns where
    /// each came from.
    ///
    /// # Errors
    /// [`Error::Corrupt`] for a bad or repeated local name, a size or CRC32 mismatch, or a handle without
    /// CURRENT naming no or several MANIFESTs; [`Error::NotFound`] for a missing file; [`Error::Local`]
    /// or [`Error::Storage`] for other failures.
    pub(crate) async fn all(
        &self,
        handle: &KeyedStateHandle,
        dir: &Path,
    ) -> Result<RestoreSources> {
        self.files_in_new_dir(handle, dir, |_| true).await
    }

    /// As [`Fetch::all`], the files `wanted` picks only, CURRENT written when the handle has none.
    async fn files_in_new_dir(
        &self,
        handle: &KeyedStateHandle,
        dir: &Path,
        wanted: impl Fn(&StateFile) -> bool,
    ) -> Result<RestoreSources> {
        remove_dir_if_exists(dir)?;
        std::fs::create_dir_all(dir).map_err(|e| io_error(dir, e))?;
        check_local_names(self.storage, handle)?;
        let sources = self.files(handle, dir, wanted).await?;
        if !handle.files.iter().any(|f| f.local_name == CURRENT) {
            write_current(self.storage, handle, dir)?;
        }
        Ok(sources)
    }

    /// The files of `handle` that `wanted` picks, into `dir` (which exists).
    async fn files(
        &self,
        handle: &KeyedStateHandle,
        dir: &Path,
        wanted: impl Fn(&StateFile) -> bool,
    ) -> Result<RestoreSources> {
        let picked = handle.files.iter().filter(|f| wanted(f));
        self.each(picked.map(|f| (handle, dir, f)).collect()).await
    }

    /// Each file `(handle, dir, file)` of `picked` into its `dir` (which exists), largest first (the
    /// last to start is a small one), at most `concurrency` at a time.
    async fn each(
        &self,
        mut picked: Vec<(&KeyedStateHandle, &Path, &StateFile)>,
    ) -> Result<RestoreSources> {
        picked.sort_by_key(|(_, _, f)| std::cmp::Reverse(f.size_bytes));
        let results: Vec<Result<(bool, Option<NotLocal>)>> = futures::stream::iter(&picked)
            .map(|&(handle, dir, f)| async move {
                let expected = Transferred {
                    size_bytes: f.size_bytes,
                    crc32: f.crc32,
                };
                // SSTs are immutable in RocksDB too: a hard link is safe. Other files are copied
                // (RocksDB appends to a MANIFEST it opens).
                let link = f.local_name.ends_with(".sst");
                let target = dir.join(&f.local_name);
                let fallback = match self.local {
                    None => None,
                    Some(local) => {
                        let (copy, to) = (local.file(self.storage, handle, f), target.clone());
                        let found = tokio::task::spawn_blocking(move || copy.restore_to(&to, link))
                            .await
                            .map_err(|e| Error::local(target.display(), e))?;
                        match found {
                            Ok(()) => return Ok((true, None)),
                            Err(why) => Some(why),
                        }
                    }
                };
                download_file(self.storage, &f.path, &target, expected, link).await?;
                Ok((false, fallback))
            })
            .buffer_unordered(self.concurrency)
            .collect()
            .await;
        let mut sources = RestoreSources::default();
        for (r, (_, _, f)) in results.into_iter().zip(&picked) {
            let (was_local, fallback) = r?;
            if was_local {
                sources.local(f.size_bytes);
            } else {
                sources.remote(f.size_bytes);
            }
            if let Some(why) = fallback {
                sources.fell_back(&f.path, why);
            }
        }
        Ok(sources)
    }

    /// For a rescale of `handles` to the key groups `owned`: puts into `dirs` (one per handle, new) only
    /// the files that can hold owned rows, when every handle's database keeps its rows and range
    /// tombstones within the key groups it claims. First each handle's MANIFEST and OPTIONS come, and
    /// its database opens read-only without its SST files to list them with their key ranges
    /// (`paranoid_checks` off); then come the SST files of the `default` column family (the states'
    /// descriptions), every level-0 file, and the deeper files whose key range meets the owned key
    /// groups the handle claims. Returns where the files came from and, per handle, the files fetched
    /// by column family (as [`files_oldest_first`] lists them); `None` (and removes `dirs`) when some
    /// database reaches beyond its key groups (range tombstones of an earlier rescale not compacted
    /// away yet): every file is needed then.
    ///
    /// # Errors
    /// As [`Fetch::all`]; `unreadable` applied to [`Error::Local`] if RocksDB cannot list a handle's
    /// files.
    pub(crate) async fn overlapping(
        &self,
        config: &RocksDbConfig,
        memory: &Memory,
        handles: &[&KeyedStateHandle],
        dirs: &[PathBuf],
        owned: KeyGroupRange,
        unreadable: &(dyn Fn(Error, &KeyedStateHandle) -> Error + Sync),
    ) -> Result<Option<(RestoreSources, Vec<FilesByCf>)>> {
        let skeletons = handles.iter().zip(dirs).map(|(handle, dir)| {
            self.files_in_new_dir(handle, dir, |f| !f.local_name.ends_with(".sst"))
        });
        let mut sources = RestoreSources::default();
        for fetched in futures::future::try_join_all(skeletons).await? {
            sources.merge(&fetched);
        }
        let mut listed: Vec<FilesByCf> = Vec::with_capacity(handles.len());
        for (handle, dir) in handles.iter().zip(dirs) {
            let files =
                list_without_files(config, memory, dir).map_err(|e| unreadable(e, handle))?;
            match needed_files(files, handle.key_groups, owned, handle.max_parallelism) {
                Some(needed) => listed.push(needed),
                None => {
                    for dir in dirs {
                        remove_dir_if_exists(dir)?;
                    }
                    return Ok(None);
                }
            }
        }
        let mut picked = Vec::new();
        for ((handle, dir), files) in handles.iter().zip(dirs).zip(&listed) {
            let names: HashSet<String> = files
                .iter()
                .flat_map(|(_, f)| f)
                .map(SstFile::local_name)
                .collect();
            let files = handle
                .files
                .iter()
                .filter(|f| names.contains(&f.local_name));
            picked.extend(files.map(|f| (*handle, dir.as_path(), f)));
        }
        sources.merge(&self.each(picked).await?);
        Ok(Some((sources, listed)))
    }
}

/// A database's SST files by column family, as [`files_oldest_first`] lists them.
pub(crate) type FilesByCf = Vec<(String, Vec<SstFile>)>;

/// The row keys `[start, end)` of the key groups of `range`; `None` for an empty range.
pub(crate) fn bounds(range: KeyGroupRange, max_parallelism: u32) -> Option<(Vec<u8>, Vec<u8>)> {
    let end = range.end()?;
    Some((
        key_group_prefix(range.start(), max_parallelism),
        key_group_prefix(end + 1, max_parallelism),
    ))
}

/// Every file of the database in `dir` (MANIFEST, OPTIONS and CURRENT there, its SST files perhaps
/// not), by column family, from its MANIFEST.
///
/// # Errors
/// [`Error::Local`] naming `dir` if RocksDB cannot open the database or list its files.
fn list_without_files(config: &RocksDbConfig, memory: &Memory, dir: &Path) -> Result<FilesByCf> {
    let db = open_read_only(config, memory, dir).map_err(|e| db_error(dir.display(), e))?;
    files_oldest_first(&db, dir).map_err(|message| Error::local(dir.display(), message))
}

/// The database of a downloaded handle in `dir`, read-only, with every column family it has. RocksDB
/// does not check that every SST file it lists is there (`paranoid_checks` off): a rescale fetches only
/// some, and every file fetched passed its size and CRC32 checks already.
///
/// # Errors
/// RocksDB's error if it cannot open the database.
pub(crate) fn open_read_only(
    config: &RocksDbConfig,
    memory: &Memory,
    dir: &Path,
) -> std::result::Result<DB, rocksdb::Error> {
    let mut options = options_with(config, memory);
    options.set_paranoid_checks(false);
    let cf_options = ColumnFamilyOptions::new(config, memory, None);
    let cfs = DB::list_cf(&options, dir)?;
    DB::open_cf_descriptors_read_only(&options, dir, cf_options.descriptors(&cfs), false)
}

/// Whether a restore of `owned` from a handle claiming `claimed` needs `file` of a keyed state's column
/// family: every level-0 file (a copy of rows reads them all), and deeper files whose key range meets
/// the owned key groups the handle claims.
pub(crate) fn needed(
    file: &SstFile,
    claimed: KeyGroupRange,
    owned: KeyGroupRange,
    max_parallelism: u32,
) -> bool {
    match bounds(owned.intersection(&claimed), max_parallelism) {
        Some((start, end)) => file.level() == 0 || file.meets(&start, &end),
        None => false,
    }
}

/// The SST files a restore of `owned` needs of `files`, a handle's database claiming `claimed`: all of
/// the `default` column family and the [`needed`] ones of the others, by column family; `None` if a
/// keyed state's file reaches beyond `claimed`.
fn needed_files(
    files: FilesByCf,
    claimed: KeyGroupRange,
    owned: KeyGroupRange,
    max_parallelism: u32,
) -> Option<FilesByCf> {
    let (start, end) = bounds(claimed, max_parallelism)?;
    let mut picked = Vec::with_capacity(files.len());
    for (cf, files) in files {
        let keyed = cf != "default";
        if keyed && files.iter().any(|f| !f.within(&start, &end)) {
            return None;
        }
        let files = files
            .into_iter()
            .filter(|f| !keyed || needed(f, claimed, owned, max_parallelism));
        picked.push((cf, files.collect()));
    }
    Some(picked)
}

/// Fails unless every local name of `handle` is a plain file name, once.
fn check_local_names(storage: &CheckpointStorage, handle: &KeyedStateHandle) -> Result<()> {
    let mut seen = HashSet::new();
    for f in &handle.files {
        let ok = !f.local_name.is_empty()
            && !f.local_name.contains(['/', '\\'])
            && f.local_name != "."
            && f.local_name != ".."
            && seen.insert(f.local_name.as_str());
        if !ok {
            return Err(Error::corrupt(
                storage.path(&f.path),
                format!(
                    "bad or repeated local file name `{}` in the handle",
                    f.local_name
                ),
            ));
        }
    }
    Ok(())
}

/// Writes RocksDB's `CURRENT` file into `dir`, naming the one MANIFEST of `handle`: checkpoints do not
/// upload it (`rocksdb/snapshot/upload.rs`); those written before list it, and keep theirs.
///
/// # Errors
/// [`Error::Corrupt`] naming the handle's first file if the handle lists no MANIFEST or several;
/// [`Error::Local`] if the file cannot be written.
fn write_current(storage: &CheckpointStorage, handle: &KeyedStateHandle, dir: &Path) -> Result<()> {
    let manifests: Vec<&str> = (handle.files.iter())
        .map(|f| f.local_name.as_str())
        .filter(|name| name.starts_with("MANIFEST-"))
        .collect();
    let [manifest] = manifests.as_slice() else {
        let path = handle
            .files
            .first()
            .map_or(String::new(), |f| storage.path(&f.path).to_string());
        return Err(Error::corrupt(
            path,
            format!(
                "a native checkpoint without CURRENT lists {} MANIFEST files, not one (backend {}, \
                 checkpoint {})",
                manifests.len(),
                handle.backend_id,
                handle.checkpoint_id
            ),
        ));
    };
    let path = dir.join(CURRENT);
    std::fs::write(&path, format!("{manifest}\n")).map_err(|e| io_error(&path, e))
}
