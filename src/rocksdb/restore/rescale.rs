//! Restoring the RocksDB backend's native checkpoints at another parallelism (`docs/lsm.md`, "Restore"):
//! each handle's SST files that can hold owned rows are ingested as they are (hard links, sequence
//! numbers kept) into the restore's database, a new one or that of the handle with the largest overlap,
//! and the result is clipped to the owned key groups (whole SST files dropped, the rest behind range
//! tombstones). Where a column family's files reach beyond their handle's key groups or RocksDB refuses
//! them, its owned rows are copied into new SST files instead, several key-group runs at once, and
//! ingested. Rows are sorted by key group first (`docs/formats.md`, "RocksDB backend rows"), so a run of
//! key groups is one key range: nothing is sorted, nothing passes through a memtable, and nothing is
//! compacted to make room.

use std::path::{Path, PathBuf};

use rocksdb::{DB, ReadOptions, SstFileWriter};

use crate::error::{Error, Result};
use crate::format::lsm_rows::key_group_prefix;
use crate::key_group::KeyGroupRange;
use crate::rocksdb::config::RocksDbConfig;
use crate::rocksdb::db::{Db, db_error};
use crate::rocksdb::db_files::{SstFile, files_oldest_first};
use crate::rocksdb::restore::fetch::{bounds, needed, open_read_only};
use crate::rocksdb::states::LsmStates;
use crate::snapshot::handle::KeyedStateHandle;

/// An SST file written by a rescale is closed at this size (bytes) and the next one begun, as RocksDB's
/// own compactions cut theirs (`target_file_size_base`, 64 MiB by default): a later compaction of the
/// ingested rows rewrites a file at a time.
const FILE_BYTES: u64 = 64 << 20;

/// Beyond the last key-group prefix of any max parallelism (prefixes are at most 2 bytes, the first below
/// 0x80): the end of the range above the owned key groups.
const ABOVE_EVERY_ROW: &[u8] = &[0xff, 0xff, 0xff];

/// Removes every row outside the key groups `keep` from every state's column family of `db`
/// (FLINK-21321): SST files wholly outside are dropped, the rest is hidden by two range tombstones per
/// column family and goes at the next compaction.
///
/// # Errors
/// [`Error::Local`] if RocksDB fails to delete.
pub(crate) fn clip(
    db: &Db,
    states: &LsmStates,
    keep: KeyGroupRange,
    max_parallelism: u32,
) -> Result<()> {
    let max = key_group_prefix(max_parallelism, max_parallelism);
    let (start, end) = bounds(keep, max_parallelism).unwrap_or((max.clone(), max));
    for (_, state) in states.all() {
        let Some(cf) = db.cf(&state.cf) else {
            continue;
        };
        let ranges: [(&[u8], &[u8]); 2] = [(&[], &start), (&end, ABOVE_EVERY_ROW)];
        db.delete_ranges(cf, &ranges, "clipping a restored database")?;
    }
    Ok(())
}

/// Whether every keyed row and range tombstone of `db` lies within the key groups `range`: only then may
/// another database's files be ingested beside them before the clip (`take_key_groups`).
///
/// # Errors
/// [`Error::Local`] if RocksDB cannot list the files.
pub(crate) fn holds_only(db: &Db, range: KeyGroupRange, max_parallelism: u32) -> Result<bool> {
    match bounds(range, max_parallelism) {
        Some((start, end)) => db.keyed_files_within(&start, &end),
        None => Ok(false),
    }
}

/// One piece of a rescale's copying: the rows of key groups `[first, end)` of one column family.
struct Piece {
    cf: String,
    first: u32,
    end: u32,
}

/// Takes the rows of the key groups `take` (`owned` and those `handle` claims) of every state of the
/// RocksDB database in `dir` (`handle`'s files, downloaded; opened read-only) into `db`, which holds none
/// of them. Each state is registered (created, or checked against the state of the same name). When the
/// files of its column family that can hold rows of `take` (`fetch::needed`) lie within the key groups
/// `claimed` (`handle`'s), they are ingested into `db` as they are (hard links, sequence numbers kept:
/// `rocksdb/ingest_db_files.rs`), rows of the handle's other key groups with them: the caller clips `db`
/// to its key groups afterwards. Where a file reaches beyond `claimed` (range tombstones an earlier
/// rescale wrote and no compaction has dropped yet, say) or RocksDB refuses the files (they overlap what
/// `db` holds), that state's rows of `take` are copied instead, in key order into SST files beside `dir`
/// on up to `config.restore_threads` threads, one run of key groups each, and ingested. The copies are
/// removed whether or not this succeeds.
///
/// # Errors
/// `unreadable` applied to the [`Error::Local`] naming `dir` if RocksDB cannot open or read it (its files
/// passed their checks, so the caller names the checkpoint corrupt); [`Error::Local`] naming the files if
/// they cannot be written or ingested (a local fault, such as a full disk, not the checkpoint's);
/// [`Error::Corrupt`] naming `dir` if a state's column family is missing or its description is malformed;
/// [`Error::InvalidArgument`] if a state is described differently than a registered one.
pub(crate) fn take_key_groups(
    states: &mut LsmStates,
    db: &mut Db,
    config: &RocksDbConfig,
    dir: &Path,
    handle: &KeyedStateHandle,
    owned: KeyGroupRange,
    unreadable: &(dyn Fn(Error) -> Error + Sync),
) -> Result<()> {
    let (claimed, max_parallelism) = (handle.key_groups, handle.max_parallelism);
    let take = owned.intersection(&claimed);
    let threads = config.restore_threads.max(1);
    if take.is_empty() {
        return Ok(());
    }
    let path = dir.display().to_string();
    let other =
        open_read_only(config, db.memory(), dir).map_err(|e| unreadable(db_error(&path, e)))?;
    let files = files_oldest_first(&other, dir).map_err(|m| unreadable(Error::local(&path, m)))?;
    let (claimed_start, claimed_end) = bounds(claimed, max_parallelism).unwrap_or_default();
    let mut pieces = Vec::new();
    for item in other.prefix_iterator(b"meta:") {
        let (key, value) = item.map_err(|e| unreadable(db_error(&path, e)))?;
        if !key.starts_with(b"meta:") {
            break;
        }
        let meta = crate::format::lsm_rows::decode_meta(&value, &path)?;
        let id = states.register_restored(db, meta)?;
        let cf = states.get(id).map(|s| s.cf.clone()).unwrap_or_default();
        let (Some(_), Some(target)) = (other.cf_handle(&cf), db.cf(&cf)) else {
            return Err(Error::corrupt(
                &path,
                format!("column family {cf} is missing"),
            ));
        };
        let Some((_, all)) = files.iter().find(|(name, _)| *name == cf) else {
            // No file: a checkpoint holds every row in SST files, so the state has none.
            continue;
        };
        // Only the files that can hold rows of `take` (a rescale may have fetched no other).
        let ssts: Vec<&SstFile> = (all.iter())
            .filter(|f| needed(f, claimed, owned, max_parallelism))
            .collect();
        let why = if ssts.iter().all(|f| f.within(&claimed_start, &claimed_end)) {
            match db.ingest_db_files(target, &ssts) {
                Ok(()) => continue,
                Err(why) => why,
            }
        } else {
            // Rows or range tombstones beyond the key groups the handle claims (an earlier rescale's
            // tombstones, say) would come in with the files and cover what is not theirs.
            "a file reaches beyond the key groups the handle claims".to_string()
        };
        tracing::warn!(
            dir = %path,
            column_family = %cf,
            %why,
            "rescale: copying a state's rows instead of ingesting its files"
        );
        // Runs of about equal numbers of key groups: keys hash uniformly over them.
        let parts = (threads as u32).min(take.len());
        for p in 0..parts {
            let first = take.start() + take.len() * p / parts;
            let end = take.start() + take.len() * (p + 1) / parts;
            pieces.push(Piece {
                cf: cf.clone(),
                first,
                end,
            });
        }
    }
    if pieces.is_empty() {
        return Ok(());
    }
    let out = dir.with_extension("ssts");
    crate::rocksdb::instance::remove_dir_if_exists(&out)?;
    std::fs::create_dir_all(&out).map_err(|e| Error::local(out.display().to_string(), e))?;
    // Each column family's pieces are of one size: dealt out in turn, every thread gets as much.
    let mut runs: Vec<Vec<Piece>> = (0..threads).map(|_| Vec::new()).collect();
    for (i, piece) in pieces.into_iter().enumerate() {
        runs[i % threads].push(piece);
    }
    runs.retain(|run| !run.is_empty());
    let db_now: &Db = db;
    let written = crate::parallel::run_each(runs, |n, run| {
        let mut files = Vec::new();
        for (i, piece) in run.iter().enumerate() {
            let stem = out.join(format!("{n}-{i}"));
            let options = db_now.cf_options(&piece.cf);
            let ssts = write_piece(&other, piece, max_parallelism, options, &stem, unreadable)?;
            files.push((piece.cf.clone(), ssts));
        }
        Ok::<_, Error>(files)
    });
    let ingested = (|| {
        let mut by_cf: Vec<(String, Vec<PathBuf>)> = Vec::new();
        for run in written {
            for (cf, ssts) in run? {
                match by_cf.iter_mut().find(|(c, _)| *c == cf) {
                    Some((_, all)) => all.extend(ssts),
                    None => by_cf.push((cf, ssts)),
                }
            }
        }
        for (cf, ssts) in &by_cf {
            let Some(handle) = db.cf(cf) else { continue };
            if !ssts.is_empty() {
                db.ingest(handle, ssts)?;
            }
        }
        Ok(())
    })();
    drop(other);
    crate::rocksdb::instance::remove_dir_if_exists(&out)?;
    ingested
}

/// Writes the rows of `piece` in `other` into SST files `<stem>-<i>.sst` of at most about
/// [`FILE_BYTES`] each, made with `options` (the target column family's); returns them in key order
/// (none if the key groups hold no row); a failed read of `other` goes through `unreadable`.
fn write_piece(
    other: &DB,
    piece: &Piece,
    max_parallelism: u32,
    options: &rocksdb::Options,
    stem: &Path,
    unreadable: &(dyn Fn(Error) -> Error + Sync),
) -> Result<Vec<PathBuf>> {
    let cf = other
        .cf_handle(&piece.cf)
        .ok_or_else(|| Error::corrupt(stem.display(), format!("no column family {}", piece.cf)))?;
    let start = key_group_prefix(piece.first, max_parallelism);
    let mut read = ReadOptions::default();
    read.set_iterate_upper_bound(key_group_prefix(piece.end, max_parallelism));
    // Read once, in order: keep the shared block cache for the rows the job will read.
    read.fill_cache(false);
    read.set_readahead_size(2 << 20);
    let mut it = other.raw_iterator_cf_opt(cf, read);
    it.seek(&start);
    let mut files: Vec<PathBuf> = Vec::new();
    let mut writer: Option<SstFileWriter> = None;
    while let (Some(k), Some(v)) = (it.key(), it.value()) {
        let w = match &mut writer {
            Some(w) => w,
            None => {
                let sst = PathBuf::from(format!("{}-{}.sst", stem.display(), files.len()));
                let w = writer.insert(SstFileWriter::create(options));
                w.open(&sst).map_err(|e| db_error(sst.display(), e))?;
                files.push(sst);
                w
            }
        };
        w.put(k, v).map_err(|e| db_error(stem.display(), e))?;
        if w.file_size() >= FILE_BYTES {
            w.finish().map_err(|e| db_error(stem.display(), e))?;
            writer = None;
        }
        it.next();
    }
    it.status()
        .map_err(|e| unreadable(db_error(stem.display(), e)))?;
    if let Some(mut w) = writer {
        w.finish().map_err(|e| db_error(stem.display(), e))?;
    }
    Ok(files)
}
