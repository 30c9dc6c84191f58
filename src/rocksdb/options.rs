//! The RocksDB options the backend runs with.

use rocksdb::{
    BlockBasedIndexType, BlockBasedOptions, Cache, DBCompactionStyle, DBCompressionType,
    MergeOperands, Options,
};

use crate::format::lsm_rows::CF_PREFIX;
use crate::keyed::timers::TIMER_STATE_PREFIX;
use crate::rocksdb::config::RocksDbConfig;
use crate::rocksdb::memory::MemoryBudget;
use crate::rocksdb::ttl::TtlFilters;

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
///   [`RocksDbConfig::direct_io`];
/// - LZ4 compression on every level (cheap to compress and decompress);
/// - level compaction with `level_compaction_dynamic_level_bytes`, `max_background_jobs = 2` (this
///   crate targets small task managers; RocksDB's default is 2 as well);
/// - `bytes_per_sync = 1 MiB`: SST writes are synced as they go, so the memtable flush of a checkpoint's
///   synchronous phase does not end in one long sync (figures in `docs/lsm.md`);
/// - block-based tables with 16 KiB blocks, a shared LRU cache of `block_cache_bytes` for data blocks
///   (index and filter blocks stay in the table readers), and a 10 bits/key bloom filter on whole keys
///   (point reads are the common case), in the SSTs and in every memtable (2% of its bytes) — except in
///   timer column families (states `_timer/...`, only ever read by iterators), which have none;
/// - the list merge operator `sb-list-append` (harmless on column families without lists);
/// - background compaction unless `auto_compaction` is off.
///
/// Under a [`MemoryBudget`] (see [`Memory`]) the cache is the budget's, memtables are charged to it by
/// its write-buffer manager, and index and filter blocks live in the cache too: partitioned (a get reads
/// one small partition, not a whole SST's filter), level 0's and the top-level index pinned there.
#[cfg_attr(not(feature = "internals"), allow(dead_code))]
pub fn lsm_db_options(config: &RocksDbConfig) -> (Options, Cache) {
    let memory = Memory::of(config, None);
    (options(config, &memory, true), memory.cache().clone())
}

/// Where a DB's memory comes from: a block cache of its own (`RocksDbConfig::block_cache_bytes`,
/// memtables uncounted) or a [`MemoryBudget`] shared with other backends. Cloning shares the cache.
#[derive(Clone)]
pub(crate) enum Memory {
    Own(Cache),
    Budget(MemoryBudget),
}

impl Memory {
    /// The budget's memory if there is one, else a new cache of `config.block_cache_bytes`.
    pub(crate) fn of(config: &RocksDbConfig, budget: Option<&MemoryBudget>) -> Memory {
        match budget {
            Some(budget) => Memory::Budget(budget.clone()),
            None => Memory::Own(Cache::new_lru_cache(config.block_cache_bytes)),
        }
    }

    /// The block cache.
    pub(crate) fn cache(&self) -> &Cache {
        match self {
            Memory::Own(cache) => cache,
            Memory::Budget(budget) => budget.cache(),
        }
    }

    /// The budget, if the memory is one.
    pub(crate) fn budget(&self) -> Option<&MemoryBudget> {
        match self {
            Memory::Own(_) => None,
            Memory::Budget(budget) => Some(budget),
        }
    }
}

/// The DB options of [`lsm_db_options`] with `memory` (a budget's or a cache of the DB's own).
pub(crate) fn options_with(config: &RocksDbConfig, memory: &Memory) -> Options {
    options(config, memory, true)
}

/// The options of [`lsm_db_options`] with `memory`, with bloom filters or without.
fn options(config: &RocksDbConfig, memory: &Memory, blooms: bool) -> Options {
    let mut table = BlockBasedOptions::default();
    table.set_block_cache(memory.cache());
    table.set_block_size(16 << 10);
    // Without a budget, index and filter blocks stay in the table readers, outside the cache: a filter
    // block of a large SST is hundreds of KB, larger than one shard of a 64-shard LRU cache, and was read
    // and checksummed again on nearly every get (`benches/lsm_ops.rs`: 190 µs per get with them in the
    // cache, see docs/lsm.md). A budget must count them: partitioned, so a get reads one partition of
    // about a block, with level 0's and the top level pinned in the cache.
    if blooms {
        table.set_bloom_filter(10.0, false);
    }
    match memory.budget().map(|b| b.config().pin_index_and_filters) {
        None => {}
        Some(false) => {
            table.set_index_type(BlockBasedIndexType::TwoLevelIndexSearch);
            table.set_partition_filters(true);
            table.set_cache_index_and_filter_blocks(true);
            table.set_pin_l0_filter_and_index_blocks_in_cache(true);
            table.set_pin_top_level_index_and_filter(true);
        }
        // Whole blocks must be pinned: left evictable, a large SST's filter block was read again on
        // nearly every get (1 ms a get on 10M compacted keys, `docs/engines.md`).
        Some(true) => {
            table.set_cache_index_and_filter_blocks(true);
            table.set_unpartitioned_pinning_tier(rocksdb::BlockBasedTablePinningTier::All);
        }
    }
    let mut opts = Options::default();
    if let Some(budget) = memory.budget() {
        opts.set_write_buffer_manager(budget.write_buffers());
        // A memtable is charged in arena blocks (RocksDB's default: an eighth of `write_buffer_size`,
        // 2 MiB): with one per column family of every backend, a small budget would be full of barely
        // used blocks. A 64th of the memtables' share, between 64 KiB and the default.
        let share =
            budget.config().total_bytes / 100 * usize::from(budget.config().write_buffer_percent);
        let arena = (share / 64).clamp(64 << 10, (config.write_buffer_bytes / 8).max(64 << 10));
        opts.set_arena_block_size(arena);
    }
    opts.create_if_missing(true);
    opts.create_missing_column_families(true);
    opts.set_write_buffer_size(config.write_buffer_bytes);
    opts.set_max_write_buffer_number(3);
    // A whole-key bloom filter per memtable (2% of its bytes): a key lives in one memtable or SST only,
    // so most point reads would otherwise walk every memtable's skip list to find nothing.
    if blooms {
        opts.set_memtable_prefix_bloom_ratio(0.02);
        opts.set_memtable_whole_key_filtering(true);
    }
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
    opts
}

/// The options of timer column families: [`options`] without bloom filters, with universal compaction
/// (RocksDB's default universal options) if [`RocksDbConfig::universal_timer_compaction`].
fn timer_options(config: &RocksDbConfig, memory: &Memory) -> Options {
    let mut opts = options(config, memory, false);
    if config.universal_timer_compaction {
        opts.set_compaction_style(DBCompactionStyle::Universal);
    }
    opts
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

/// The options of each column family: keyed states' as [`lsm_db_options`]; timer column families (the
/// states `_timer/...`, `docs/timers.md`) the same without bloom filters, in memtables and SSTs (a timer
/// column family is only ever read by iterators, never by a point read, and hashing every registered row
/// into the memtable's filter was a tenth of a registration, `benches/timers.rs`), and with universal
/// compaction unless [`RocksDbConfig::universal_timer_compaction`] is off.
pub(crate) struct ColumnFamilyOptions {
    states: Options,
    timers: Options,
    /// The TTL compaction filters of a backend's own DB (`rocksdb/ttl.rs`); `None` for the read-only
    /// opens of a restore or an export, which never compact.
    filters: Option<TtlFilters>,
}

impl ColumnFamilyOptions {
    /// The options for `config`, sharing `memory` (the DB's block cache, or its budget); keyed states'
    /// column families with the TTL compaction filter of `filters`, if given.
    pub(crate) fn new(
        config: &RocksDbConfig,
        memory: &Memory,
        filters: Option<TtlFilters>,
    ) -> ColumnFamilyOptions {
        ColumnFamilyOptions {
            states: options(config, memory, true),
            timers: timer_options(config, memory),
            filters,
        }
    }

    /// The options column family `name` is created or opened with: [`ColumnFamilyOptions::of`], and for
    /// a keyed state the TTL compaction filter (it keeps every row while the state has no TTL).
    pub(crate) fn for_cf(&self, name: &str) -> Options {
        let mut options = self.of(name).clone();
        let keyed_state = name
            .strip_prefix(CF_PREFIX)
            .is_some_and(|state| !state.starts_with(TIMER_STATE_PREFIX));
        if let Some(filters) = self.filters.as_ref().filter(|_| keyed_state) {
            options.set_compaction_filter_factory(filters.factory(name));
        }
        options
    }

    /// The options of column family `name`.
    pub(crate) fn of(&self, name: &str) -> &Options {
        let timers = name
            .strip_prefix(CF_PREFIX)
            .is_some_and(|state| state.starts_with(TIMER_STATE_PREFIX));
        if timers { &self.timers } else { &self.states }
    }

    /// Column family descriptors for `names`, each with its options (RocksDB's `open_cf` would give every
    /// column family default options: no merge operator, no bloom filter, another cache).
    pub(crate) fn descriptors(&self, names: &[String]) -> Vec<rocksdb::ColumnFamilyDescriptor> {
        names
            .iter()
            .map(|n| rocksdb::ColumnFamilyDescriptor::new(n, self.for_cf(n)))
            .collect()
    }
}
