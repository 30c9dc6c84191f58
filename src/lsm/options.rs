//! Settings of the LSM backend and the RocksDB options it runs with.

use std::path::PathBuf;

use rocksdb::{BlockBasedOptions, Cache, DBCompressionType, MergeOperands, Options};

use crate::error::{Error, Result};
use crate::key_group::{KeyGroupRange, key_group_range_for_operator};
use crate::keyed::checks::validate_subtask;

/// Settings of an LSM backend (plain data; units in the names).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LsmBackendConfig {
    /// Operator identity; part of file names, so ASCII letters, digits, `-` and `_` only.
    pub operator_id: String,
    /// Index of this subtask.
    pub subtask_index: u32,
    /// Max parallelism of the job (number of key groups, at most 2^15), fixed for the job's life.
    pub max_parallelism: u32,
    /// Key groups this backend owns.
    pub key_groups: KeyGroupRange,
    /// Local directory in which the backend creates a working directory of its own,
    /// `<operator>-<subtask>-<random>` (its DB, native checkpoints, restore downloads), and removes that
    /// one when dropped, as Flink does. Nothing else in `local_dir` is touched, so several backends (and
    /// anything else) can share it. It should be on a local disk.
    pub local_dir: PathBuf,
    /// Files uploaded or downloaded at the same time (Flink's `state.backend.rocksdb.checkpoint.transfer.
    /// thread.num`, default 4).
    pub transfer_concurrency: usize,
    /// Size of the LRU block cache in bytes (default 64 MiB).
    pub block_cache_bytes: usize,
    /// Size of one memtable in bytes (RocksDB's `write_buffer_size`; default 16 MiB: a smaller memtable
    /// makes the flush in a checkpoint's synchronous phase short, `benches/flink_workload.rs`).
    pub write_buffer_bytes: usize,
    /// Write flushed and compacted SST files with `O_DIRECT` (RocksDB's
    /// `use_direct_io_for_flush_and_compaction`; default `true`). It halves the memtable flush of a
    /// checkpoint's synchronous phase on this machine (`benches/incremental.rs`: median 47 → 31 ms at 1% churn
    /// of a 0.55 GB DB; `benches/flink_workload.rs` checkpoint 1: 83 → 39 ms), because the kernel no longer
    /// copies every byte into the page cache. Used on Linux only, and only when `local_dir` accepts
    /// `O_DIRECT` (checked when the DB opens; a file system that refuses it gets buffered writes and a
    /// warning, never a failing flush).
    pub direct_io: bool,
    /// Let RocksDB compact in the background (default `true`). With `false` SST files only accumulate
    /// in level 0 until the application compacts: for bulk loads, and for tests and simulations that need
    /// the set of SST files to depend on the writes alone, not on background timing.
    pub auto_compaction: bool,
    /// Threads, the calling one included, that sort the rows of a canonical snapshot and write them into
    /// SST files on restore (key-group ranges split among them), at least 1. Default: the machine's
    /// available parallelism, at most 4.
    pub restore_threads: usize,
}

impl LsmBackendConfig {
    /// Config of subtask `subtask_index` of `parallelism`, owning the key groups Flink's formula gives it,
    /// working in `local_dir`.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for an impossible parallelism or operator id.
    pub fn for_subtask(
        operator_id: &str,
        max_parallelism: u32,
        parallelism: u32,
        subtask_index: u32,
        local_dir: impl Into<PathBuf>,
    ) -> Result<Self> {
        let config = LsmBackendConfig {
            operator_id: operator_id.to_string(),
            subtask_index,
            max_parallelism,
            key_groups: key_group_range_for_operator(max_parallelism, parallelism, subtask_index)?,
            local_dir: local_dir.into(),
            transfer_concurrency: 4,
            block_cache_bytes: 64 << 20,
            write_buffer_bytes: 16 << 20,
            direct_io: true,
            auto_compaction: true,
            restore_threads: crate::parallel::default_restore_threads(),
        };
        config.validate()?;
        Ok(config)
    }

    pub(crate) fn validate(&self) -> Result<()> {
        validate_subtask(&self.operator_id, self.max_parallelism, self.key_groups)?;
        if self.restore_threads == 0 {
            return Err(Error::InvalidArgument(
                "restore_threads is 0; at least 1 writes".into(),
            ));
        }
        if self.transfer_concurrency == 0 {
            return Err(Error::InvalidArgument(
                "transfer_concurrency must be positive".into(),
            ));
        }
        Ok(())
    }
}

/// Name of the merge operator that appends list elements.
pub(crate) const LIST_MERGE_OPERATOR: &str = "sb-list-append";

/// Concatenates list encodings (each element is length-prefixed, so concatenation is list append).
fn list_append(_key: &[u8], existing: Option<&[u8]>, operands: &MergeOperands) -> Option<Vec<u8>> {
    let extra: usize = operands.iter().map(<[u8]>::len).sum();
    let mut out = Vec::with_capacity(existing.map_or(0, <[u8]>::len) + extra);
    if let Some(existing) = existing {
        out.extend_from_slice(existing);
    }
    for operand in operands {
        out.extend_from_slice(operand);
    }
    Some(out)
}

/// The RocksDB options of every column family and of the DB for `config` (the raw-RocksDB baselines of
/// `benches/lsm_ops.rs` and `benches/incremental.rs` use the same function):
/// - `create_if_missing`, `create_missing_column_families`;
/// - WAL is disabled on every write (the backend's `WriteOptions`), durability comes from checkpoints,
///   and the synchronous phase flushes the memtables before the native checkpoint;
/// - `write_buffer_size = write_buffer_bytes` (default 16 MiB), at most 3 memtables per column family;
/// - `use_direct_io_for_flush_and_compaction` when `config.direct_io` is set and
///   `local_dir` (created if missing) accepts `O_DIRECT` — see
///   [`LsmBackendConfig::direct_io`];
/// - LZ4 compression on every level (cheap to compress and decompress);
/// - level compaction with `level_compaction_dynamic_level_bytes`, `max_background_jobs = 2` (this
///   crate targets small task managers; RocksDB's default is 2 as well);
/// - `bytes_per_sync = 1 MiB`: SST writes are synced as they go, so the memtable flush of a checkpoint's
///   synchronous phase does not end in one long sync (`benches/incremental.rs`: sync phase max 376 ms
///   without it, 45 ms with it, at 1% churn of a 0.55 GB DB);
/// - block-based tables with 16 KiB blocks, a shared LRU cache of `block_cache_bytes` for data blocks
///   (index and filter blocks stay in the table readers), and a 10 bits/key bloom filter on whole keys
///   (point reads are the common case);
/// - the list merge operator `sb-list-append` (harmless on column families without lists);
/// - background compaction unless `auto_compaction` is off.
pub fn lsm_db_options(config: &LsmBackendConfig) -> (Options, Cache) {
    let cache = Cache::new_lru_cache(config.block_cache_bytes);
    let mut table = BlockBasedOptions::default();
    table.set_block_cache(&cache);
    table.set_block_size(16 << 10);
    // Index and filter blocks stay in the table readers, outside the cache: a filter block of a large SST
    // is hundreds of KB, larger than one shard of a 64-shard LRU cache, and was read and checksummed again
    // on nearly every get (`benches/lsm_ops.rs`: 190 µs per get with them in the cache, see docs/lsm.md).
    table.set_bloom_filter(10.0, false);
    let mut opts = Options::default();
    opts.create_if_missing(true);
    opts.create_missing_column_families(true);
    opts.set_write_buffer_size(config.write_buffer_bytes);
    opts.set_max_write_buffer_number(3);
    // A whole-key bloom filter per memtable (2% of its bytes): a key lives in one memtable or SST only,
    // so most point reads would otherwise walk every memtable's skip list to find nothing.
    opts.set_memtable_prefix_bloom_ratio(0.02);
    opts.set_memtable_whole_key_filtering(true);
    opts.set_compression_type(DBCompressionType::Lz4);
    opts.set_level_compaction_dynamic_level_bytes(true);
    opts.set_max_background_jobs(2);
    opts.set_bytes_per_sync(1 << 20);
    opts.set_disable_auto_compactions(!config.auto_compaction);
    if config.direct_io {
        let _ = std::fs::create_dir_all(&config.local_dir);
        if supports_direct_io(&config.local_dir) {
            opts.set_use_direct_io_for_flush_and_compaction(true);
        } else {
            tracing::warn!(dir = %config.local_dir.display(), "O_DIRECT is not supported here; flushes and compactions use buffered writes");
        }
    }
    opts.set_block_based_table_factory(&table);
    opts.set_merge_operator_associative(LIST_MERGE_OPERATOR, list_append);
    (opts, cache)
}

/// Whether a file in `dir` can be created with `O_DIRECT` (Linux only; `false` elsewhere). Some file
/// systems refuse the flag (`EINVAL`; tmpfs before Linux 6.6, some FUSE and network file systems), and
/// RocksDB would then fail every flush with an I/O error and stop writing. The probe file
/// (`.sb-direct-io-probe-<random>`, created new so that no existing file is touched) is removed again.
pub(crate) fn supports_direct_io(dir: &std::path::Path) -> bool {
    #[cfg(target_os = "linux")]
    {
        use std::os::unix::fs::OpenOptionsExt;
        let probe = dir.join(format!(
            ".sb-direct-io-probe-{:016x}",
            crate::ids::random_u64()
        ));
        let ok = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .custom_flags(libc::O_DIRECT)
            .open(&probe)
            .is_ok();
        // Also after a failed open: some file systems create the file before refusing the flag. The name
        // is ours alone, so removing it is always safe.
        let _ = std::fs::remove_file(&probe);
        ok
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = dir;
        false
    }
}

/// Column family descriptors for `names`, each with `options` (RocksDB's `open_cf` would give every column
/// family default options: no merge operator, no bloom filter, another cache).
pub(crate) fn cf_descriptors(
    names: &[String],
    options: &Options,
) -> Vec<rocksdb::ColumnFamilyDescriptor> {
    names
        .iter()
        .map(|n| rocksdb::ColumnFamilyDescriptor::new(n, options.clone()))
        .collect()
}
