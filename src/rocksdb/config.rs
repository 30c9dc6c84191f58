//! Settings of the RocksDB backend (plain data, units in the names). Compiled without the `rocksdb`
//! feature too, so the run-time config has one shape in every build.

use std::path::PathBuf;

use crate::error::{Error, Result};

/// Settings of a RocksDB backend; its identity is a [`SubtaskIdentity`](crate::SubtaskIdentity) of its own.
/// Measurements behind the defaults: `docs/lsm.md`.
///
/// ```
/// use statebackend::rocksdb::RocksDbConfig;
/// let config = RocksDbConfig { local_dir: "/mnt/ssd".into(), ..RocksDbConfig::default() };
/// assert_eq!(config.write_buffer_bytes, 16 << 20);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RocksDbConfig {
    /// Local directory in which the backend creates a working directory of its own,
    /// `<operator>-<subtask>-<random>` (its DB, native checkpoints, restore downloads), and removes that
    /// one when dropped, as Flink does. Nothing else in `local_dir` is touched, so several backends (and
    /// anything else) can share it. It should be on a local disk. Default: the system's temporary
    /// directory.
    pub local_dir: PathBuf,
    /// Files uploaded or downloaded at the same time, at least 1 (Flink's
    /// `state.backend.rocksdb.checkpoint.transfer.thread.num`, default 4).
    pub transfer_concurrency: usize,
    /// Size of the LRU block cache in bytes (default 64 MiB).
    pub block_cache_bytes: usize,
    /// Size of one memtable in bytes (RocksDB's `write_buffer_size`; default 16 MiB: a smaller memtable
    /// makes the flush in a checkpoint's synchronous phase short).
    pub write_buffer_bytes: usize,
    /// Write flushed and compacted SST files with `O_DIRECT` (RocksDB's
    /// `use_direct_io_for_flush_and_compaction`; default `true`): the memtable flush of the synchronous
    /// phase no longer copies every byte into the page cache. Used on Linux only, and only when
    /// `local_dir` accepts `O_DIRECT` (checked when the DB opens; a file system that refuses it gets
    /// buffered writes and a warning, never a failing flush).
    pub direct_io: bool,
    /// Let RocksDB compact in the background (default `true`). With `false` SST files only accumulate
    /// in level 0 until the application compacts: for bulk loads, and for tests and simulations that need
    /// the set of SST files to depend on the writes alone, not on background timing.
    pub auto_compaction: bool,
    /// Threads, the calling one included, that sort the rows of a canonical snapshot and write them into
    /// SST files on restore (key-group ranges split among them), at least 1. Default: the machine's
    /// available parallelism, at most 4.
    pub restore_threads: usize,
    /// Compact timer column families with RocksDB's universal (tiered) compaction rather than the
    /// level compaction of keyed states (default `true`). A timer queue is fired by iterators, whose cost
    /// grows with the sorted runs they merge; universal compaction bounds those runs without rewriting
    /// every timer when a new level-0 file arrives (timer rows are key group first with random
    /// timestamps, so each new file overlaps all others). Measured in `docs/timers.md`: the firing rate
    /// of ten rounds of register / fire stays nearer round 1's, the synchronous phase of a checkpoint of
    /// 1M timers is steadier, and incremental checkpoints upload no more. Either setting restores
    /// checkpoints written with the other.
    pub universal_timer_compaction: bool,
    /// Local recovery (`docs/local-recovery.md`; Flink's `execution.state-recovery.from-local`, off by
    /// default there too): with a directory, each checkpoint's files are also kept under it (hard links
    /// to the native checkpoint's files, so no byte is written twice on one file system), deleted once a
    /// later checkpoint of the backend is confirmed or the checkpoint is aborted; a restore on this
    /// machine reads a file from there when its size and CRC32 match the handle, and from checkpoint
    /// storage otherwise (reported by `restore_sources`). Give every backend of a machine the same
    /// directory, one that outlives the process (not `local_dir`'s working directories); it should be on
    /// the file system of `local_dir`. Default `None` (off).
    pub local_recovery_dir: Option<PathBuf>,
}

impl Default for RocksDbConfig {
    fn default() -> Self {
        RocksDbConfig {
            local_dir: std::env::temp_dir(),
            transfer_concurrency: 4,
            block_cache_bytes: 64 << 20,
            write_buffer_bytes: 16 << 20,
            direct_io: true,
            auto_compaction: true,
            restore_threads: crate::parallel::default_restore_threads(),
            universal_timer_compaction: true,
            local_recovery_dir: None,
        }
    }
}

impl RocksDbConfig {
    /// # Errors
    /// [`Error::InvalidArgument`] for no restore thread or no transfer concurrency.
    #[cfg_attr(not(feature = "rocksdb"), allow(dead_code))]
    pub(crate) fn validate(&self) -> Result<()> {
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
