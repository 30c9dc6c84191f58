//! Settings of the heap backend (plain data, units in the names).

use std::path::PathBuf;

use crate::error::{Error, Result};
use crate::format::keyed_file::{DEFAULT_FRAME_BYTES, DEFAULT_ZSTD_LEVEL, MAX_FRAME_RAW_LEN};
use crate::heap::chain::{Base, ChainBook};
use crate::key_group::KeyGroupRange;

/// Settings of a heap backend; its identity is a [`SubtaskIdentity`](crate::SubtaskIdentity) of its own.
///
/// ```
/// use statebackend::heap::HeapConfig;
/// let config = HeapConfig { zstd_level: None, ..HeapConfig::default() };
/// assert_eq!(config.frame_bytes, 1 << 20);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeapConfig {
    /// zstd level of snapshot frames; `None` stores them uncompressed. Default `Some(1)`.
    pub zstd_level: Option<i32>,
    /// Uncompressed bytes per snapshot frame, 1 to 2^30 (the format's frame limit). Default 1 MiB.
    pub frame_bytes: usize,
    /// Threads, the calling one included, that restore: they decompress a restored file's key groups
    /// and split its records by state (a file under 1 MiB uses one), visit a chain's key groups, and
    /// decode a restored state into the map when the job registers it (a state under 1 MiB of records
    /// uses one); key groups are split among them. At least 1. Default: the machine's available
    /// parallelism, at most 4.
    pub restore_threads: usize,
    /// Incremental TTL cleanup (`docs/ttl.md`; Flink's `cleanupIncrementally`): slots of the map of every
    /// state with TTL checked per record (a new current key; a batch counts its keys), in steps every
    /// 1,024 records, removing what expired. A slot holds one entry or none (maps are at most 7/8 full);
    /// at the default 8, a state of `n` entries is walked once in about `n / 6` records. 0 turns it off:
    /// expired entries then stay in memory until a write of their key replaces them, or a
    /// snapshot and restore leaves them out. Default 8.
    pub ttl_cleanup_slots_per_record: usize,
    /// Local recovery (`docs/local-recovery.md`; Flink's `execution.state-recovery.from-local`, off by
    /// default there too): with a directory, the asynchronous phase also writes each checkpoint's file
    /// under it, deleted once a later checkpoint of the backend is confirmed or the checkpoint is
    /// aborted; a restore on this machine reads the file from there when its size and CRC32 match the
    /// handle, and from checkpoint storage otherwise (reported by `restore_sources`). Give every backend
    /// of a machine the same directory, one that outlives the process. Default `None` (off).
    pub local_recovery_dir: Option<PathBuf>,
    /// Incremental checkpoints (`docs/heap-incremental.md`; as Flink's `execution.checkpointing.incremental`
    /// for its RocksDB backend): each checkpoint after a confirmed one writes only the entries written or
    /// removed since, as a delta file on top of the confirmed checkpoint's files (a chain of shared files
    /// the registry counts). Writes then log their entry's hash (a bounded log per state). Savepoints
    /// stay full and canonical. Default `true`; `false` makes every checkpoint one full private file
    /// (canonical, so that the RocksDB backend restores it too).
    pub incremental: bool,
    /// Files a chain of incremental checkpoints holds at most (a restore reads at most this many per
    /// subtask). Rolling materialization (`docs/heap-incremental.md`) cuts the key groups into
    /// `max_chain_files - 1` slices: a full checkpoint writes a file per slice, and every delta after
    /// the first also rewrites one slice whole, so that the oldest files leave the chain and no
    /// checkpoint after the first is full; at 1 every checkpoint is one full file, at 2 every other
    /// delta rewrites every key group. At least 1; default 10.
    pub max_chain_files: usize,
}

impl Default for HeapConfig {
    fn default() -> Self {
        HeapConfig {
            zstd_level: Some(DEFAULT_ZSTD_LEVEL),
            frame_bytes: DEFAULT_FRAME_BYTES,
            restore_threads: crate::parallel::default_restore_threads(),
            ttl_cleanup_slots_per_record: 8,
            local_recovery_dir: None,
            incremental: true,
            max_chain_files: 10,
        }
    }
}

impl HeapConfig {
    /// The chain bookkeeping of a backend with these settings on `base` (a CLAIM restore's chain) of the key groups `key_groups`:
    /// `Some` with incremental checkpoints on.
    pub(crate) fn chain_book(
        &self,
        key_groups: KeyGroupRange,
        base: Option<Base>,
    ) -> Option<ChainBook> {
        self.incremental
            .then(|| ChainBook::new(self.max_chain_files, key_groups, base))
    }

    /// # Errors
    /// [`Error::InvalidArgument`] for no restore thread, a frame size outside 1 to 2^30 bytes or a chain
    /// of no file.
    pub(crate) fn validate(&self) -> Result<()> {
        if self.restore_threads == 0 {
            return Err(Error::InvalidArgument(
                "restore_threads is 0; at least 1 decodes".into(),
            ));
        }
        if self.max_chain_files == 0 {
            return Err(Error::InvalidArgument(
                "max_chain_files is 0; a chain holds at least one file".into(),
            ));
        }
        let limit = MAX_FRAME_RAW_LEN as usize;
        if self.frame_bytes == 0 || self.frame_bytes > limit {
            return Err(Error::InvalidArgument(format!(
                "frame_bytes {} is not within [1, {limit}]",
                self.frame_bytes
            )));
        }
        Ok(())
    }
}
