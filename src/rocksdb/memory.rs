//! One memory budget for every RocksDB backend of a process (`docs/engines.md`, "Memory"): a block cache
//! of the budget's size, to which a write-buffer manager charges every memtable, so that memtables, data
//! blocks and (under a budget) index and filter blocks are counted against one limit, as Flink bounds the
//! RocksDB instances of a slot by its managed memory (FLINK-14484). Compiled in every build, so that an
//! engine's code has one shape; without the `rocksdb` feature a budget holds its settings only.

#[cfg(feature = "rocksdb")]
use rocksdb::{Cache, WriteBufferManager};

use crate::error::{Error, Result};

/// Settings of a [`MemoryBudget`], plain data.
///
/// ```
/// use statebackend::rocksdb::MemoryBudgetConfig;
/// let config = MemoryBudgetConfig { total_bytes: 512 << 20, ..MemoryBudgetConfig::default() };
/// assert_eq!(config.write_buffer_percent, 50);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryBudgetConfig {
    /// Bytes the RocksDB backends sharing the budget may use together for memtables, data, index and
    /// filter blocks (default 512 MiB). Not counted: RocksDB's table readers' own small objects, iterators'
    /// pinned blocks, and the process's heap outside RocksDB.
    pub total_bytes: usize,
    /// Percent of `total_bytes` the memtables of all backends may fill before RocksDB flushes (RocksDB's
    /// write-buffer manager: a write to a backend past it flushes that backend's largest memtable), 1 to
    /// 90; default 50, Flink's `state.backend.rocksdb.memory.write-buffer-ratio`. Writes never stall and
    /// never fail for memory (SPARK-44878): a stalling manager deadlocked here when an idle backend held
    /// the memtables, since only the stalled backend's own memtables are flushed
    /// (`tests/restore/memory_budget.rs`).
    pub write_buffer_percent: u8,
    /// Keep every SST's index and filter blocks whole and pinned in the cache (charged to the budget, never
    /// evicted while the SST lives) instead of partitioned with only level 0's and the top level pinned;
    /// default `false`. Point reads are faster (`flink_workload` gets +60%, 10M compacted keys +45%,
    /// `docs/engines.md`), but the pinned blocks grow with the state, about 1.5 bytes a key, and are not
    /// bounded by `total_bytes`: only for states whose keys' index and filters fit the budget many times
    /// over. Whole blocks that are not pinned were tried too and thrash the cache (1 ms a get).
    pub pin_index_and_filters: bool,
}

impl Default for MemoryBudgetConfig {
    fn default() -> Self {
        MemoryBudgetConfig {
            total_bytes: 512 << 20,
            write_buffer_percent: 50,
            pin_index_and_filters: false,
        }
    }
}

/// One memory budget shared by the RocksDB backends of a process: the engine creates it once and passes it
/// to every backend it creates or restores
/// ([`RocksDbKeyedStateBackend::with_memory_budget`](crate::rocksdb::RocksDbKeyedStateBackend::with_memory_budget),
/// [`StateBackend::with_memory_budget`](crate::StateBackend::with_memory_budget)). Cloning shares it.
///
/// Inside: one LRU block cache of `total_bytes` and one write-buffer manager whose memtables are charged
/// to that cache (RocksDB's `WriteBufferManager` with a cache). Backends under a budget keep index and
/// filter blocks in the cache too, partitioned so that a get reads a small partition, with level 0's and
/// the top-level index pinned. The cache's capacity is not strict: a block that does not fit evicts
/// others, a read never fails for memory.
#[derive(Clone)]
pub struct MemoryBudget {
    #[cfg(feature = "rocksdb")]
    cache: Cache,
    #[cfg(feature = "rocksdb")]
    write_buffers: WriteBufferManager,
    config: MemoryBudgetConfig,
}

impl std::fmt::Debug for MemoryBudget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryBudget")
            .field("config", &self.config)
            .field("usage_bytes", &self.usage_bytes())
            .finish()
    }
}

impl MemoryBudget {
    /// A budget of `config`.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] if `total_bytes` is under 16 MiB or `write_buffer_percent` outside 1 to
    /// 90.
    pub fn new(config: MemoryBudgetConfig) -> Result<Self> {
        if config.total_bytes < 16 << 20 {
            return Err(Error::InvalidArgument(format!(
                "memory budget of {} bytes; at least 16 MiB",
                config.total_bytes
            )));
        }
        if !(1..=90).contains(&config.write_buffer_percent) {
            return Err(Error::InvalidArgument(format!(
                "write_buffer_percent {}; 1 to 90",
                config.write_buffer_percent
            )));
        }
        #[cfg(feature = "rocksdb")]
        {
            let cache = Cache::new_lru_cache(config.total_bytes);
            let write_bytes = config.total_bytes / 100 * usize::from(config.write_buffer_percent);
            // No stall (see `write_buffer_percent`): past its share a write flushes its own backend's
            // largest memtable.
            let write_buffers = WriteBufferManager::new_write_buffer_manager_with_cache(
                write_bytes,
                false,
                cache.clone(),
            );
            Ok(MemoryBudget {
                cache,
                write_buffers,
                config,
            })
        }
        #[cfg(not(feature = "rocksdb"))]
        Ok(MemoryBudget { config })
    }

    /// The settings it was made with.
    pub fn config(&self) -> MemoryBudgetConfig {
        self.config
    }

    /// Bytes charged to the budget now: cached blocks and memtables of every backend sharing it (0
    /// without the `rocksdb` feature).
    pub fn usage_bytes(&self) -> usize {
        #[cfg(feature = "rocksdb")]
        return self.cache.get_usage();
        #[cfg(not(feature = "rocksdb"))]
        0
    }

    /// Bytes of memtables (of every backend sharing it) now (0 without the `rocksdb` feature).
    pub fn memtable_bytes(&self) -> usize {
        #[cfg(feature = "rocksdb")]
        return self.write_buffers.get_usage();
        #[cfg(not(feature = "rocksdb"))]
        0
    }

    /// The block cache every backend under the budget uses.
    #[cfg(feature = "rocksdb")]
    pub(crate) fn cache(&self) -> &Cache {
        &self.cache
    }

    /// The write-buffer manager every backend under the budget uses.
    #[cfg(feature = "rocksdb")]
    pub(crate) fn write_buffers(&self) -> &WriteBufferManager {
        &self.write_buffers
    }
}
