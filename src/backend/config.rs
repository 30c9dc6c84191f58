//! The settings of a keyed state backend chosen at run time: plain data an engine fills from its own
//! configuration (flags, a file), with units in the names.

use std::path::PathBuf;
use std::str::FromStr;

use crate::error::{Error, Result};
use crate::heap::backend::HeapBackendConfig;
use crate::key_group::key_group_range_for_operator;

/// Which keyed state backend to build (as Flink's `state.backend.type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub enum BackendKind {
    /// [`HeapKeyedStateBackend`](crate::HeapKeyedStateBackend): state in copy-on-write maps in memory,
    /// full snapshots (Flink's `hashmap`).
    #[default]
    Heap,
    /// `LsmKeyedStateBackend`: state in an embedded RocksDB, incremental snapshots (Flink's `rocksdb`).
    /// Needs the `rocksdb` cargo feature (on by default).
    Lsm,
}

impl BackendKind {
    /// The name [`FromStr`] reads: `heap` or `lsm`.
    pub fn name(self) -> &'static str {
        match self {
            BackendKind::Heap => "heap",
            BackendKind::Lsm => "lsm",
        }
    }
}

impl std::fmt::Display for BackendKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for BackendKind {
    type Err = Error;

    /// `heap` (or Flink's `hashmap`), `lsm` (or `rocksdb`), case-insensitive.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for any other name.
    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "heap" | "hashmap" => Ok(BackendKind::Heap),
            "lsm" | "rocksdb" => Ok(BackendKind::Lsm),
            _ => Err(Error::InvalidArgument(format!(
                "unknown state backend `{s}` (heap, hashmap, lsm or rocksdb)"
            ))),
        }
    }
}

/// Settings of one subtask's keyed state backend, of either kind (plain data; build it with struct update
/// syntax from [`StateBackendConfig::default`]).
///
/// ```
/// use statebackend::{BackendKind, StateBackendConfig};
/// let config = StateBackendConfig {
///     kind: BackendKind::Heap,
///     operator_id: "counter".into(),
///     max_parallelism: 128,
///     parallelism: 4,
///     subtask_index: 1,
///     ..StateBackendConfig::default()
/// };
/// assert_eq!(config.key_groups()?.start(), 32);
/// # Ok::<(), statebackend::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateBackendConfig {
    /// Heap or LSM (default heap).
    pub kind: BackendKind,
    /// Operator identity, stable across job versions; part of file names, so ASCII letters, digits, `-`
    /// and `_` only (default `operator`).
    pub operator_id: String,
    /// Max parallelism of the job (number of key groups, 1 to 2^15), fixed for the job's life (default 128,
    /// Flink's lower bound of `default_max_parallelism`).
    pub max_parallelism: u32,
    /// Subtasks of the operator now (default 1). Restoring at another parallelism rescales.
    pub parallelism: u32,
    /// Index of this subtask, below `parallelism` (default 0). It owns the key groups Flink's
    /// `computeKeyGroupRangeForOperatorIndex` gives it.
    pub subtask_index: u32,
    /// LSM: directory in which the backend creates a working directory of its own (default the system's
    /// temporary directory). Should be a local disk.
    pub local_dir: PathBuf,
    /// Heap: zstd level of snapshot frames; `None` stores them uncompressed (default `Some(1)`).
    pub heap_zstd_level: Option<i32>,
    /// Heap: uncompressed bytes per snapshot frame, 1 to 2^30 (default 1 MiB).
    pub heap_frame_bytes: usize,
    /// Threads that turn restored canonical records into state, at least 1 (default the available
    /// parallelism, at most 4): heap, decoding a state when it is registered
    /// ([`HeapBackendConfig::restore_threads`]); LSM, sorting rows and writing SST files.
    pub restore_threads: usize,
    /// LSM: files uploaded or downloaded at the same time (default 4).
    pub lsm_transfer_concurrency: usize,
    /// LSM: RocksDB block cache in bytes (default 64 MiB).
    pub lsm_block_cache_bytes: usize,
    /// LSM: one memtable in bytes (default 16 MiB).
    pub lsm_write_buffer_bytes: usize,
    /// LSM: flush and compact with `O_DIRECT` where the file system allows it (default true).
    pub lsm_direct_io: bool,
    /// LSM: background compaction (default true).
    pub lsm_auto_compaction: bool,
}

impl Default for StateBackendConfig {
    fn default() -> Self {
        StateBackendConfig {
            kind: BackendKind::Heap,
            operator_id: "operator".into(),
            max_parallelism: 128,
            parallelism: 1,
            subtask_index: 0,
            local_dir: std::env::temp_dir(),
            heap_zstd_level: Some(1),
            heap_frame_bytes: 1 << 20,
            restore_threads: crate::parallel::default_restore_threads(),
            lsm_transfer_concurrency: 4,
            lsm_block_cache_bytes: 64 << 20,
            lsm_write_buffer_bytes: 16 << 20,
            lsm_direct_io: true,
            lsm_auto_compaction: true,
        }
    }
}

impl StateBackendConfig {
    /// The key groups this subtask owns.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for an impossible max parallelism, parallelism or subtask index.
    pub fn key_groups(&self) -> Result<crate::KeyGroupRange> {
        key_group_range_for_operator(self.max_parallelism, self.parallelism, self.subtask_index)
    }

    /// The same settings for subtask `subtask_index` of `parallelism` (a task of an engine builds its
    /// own from the job's).
    pub fn for_subtask(&self, parallelism: u32, subtask_index: u32) -> Self {
        StateBackendConfig {
            parallelism,
            subtask_index,
            ..self.clone()
        }
    }

    /// The heap backend's settings.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for an impossible parallelism, operator id or frame size.
    pub fn heap_config(&self) -> Result<HeapBackendConfig> {
        let mut config = HeapBackendConfig::for_subtask(
            &self.operator_id,
            self.max_parallelism,
            self.parallelism,
            self.subtask_index,
        )?;
        config.zstd_level = self.heap_zstd_level;
        config.frame_bytes = self.heap_frame_bytes;
        config.restore_threads = self.restore_threads;
        config.validate()?;
        Ok(config)
    }

    /// The LSM backend's settings.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for an impossible parallelism or operator id, or no transfer concurrency.
    #[cfg(feature = "rocksdb")]
    pub fn lsm_config(&self) -> Result<crate::LsmBackendConfig> {
        let mut config = crate::LsmBackendConfig::for_subtask(
            &self.operator_id,
            self.max_parallelism,
            self.parallelism,
            self.subtask_index,
            &self.local_dir,
        )?;
        config.transfer_concurrency = self.lsm_transfer_concurrency;
        config.block_cache_bytes = self.lsm_block_cache_bytes;
        config.write_buffer_bytes = self.lsm_write_buffer_bytes;
        config.direct_io = self.lsm_direct_io;
        config.auto_compaction = self.lsm_auto_compaction;
        config.restore_threads = self.restore_threads;
        config.validate()?;
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_parse_by_our_and_flinks_names() {
        for (name, kind) in [
            ("heap", BackendKind::Heap),
            ("HashMap", BackendKind::Heap),
            ("lsm", BackendKind::Lsm),
            ("rocksdb", BackendKind::Lsm),
        ] {
            assert_eq!(name.parse::<BackendKind>().unwrap(), kind);
        }
        assert!("memory".parse::<BackendKind>().is_err());
        assert_eq!(
            BackendKind::Lsm.to_string().parse::<BackendKind>().unwrap(),
            BackendKind::Lsm
        );
    }

    #[test]
    fn bad_settings_are_refused_with_a_typed_error() {
        let bad = [
            StateBackendConfig {
                subtask_index: 1,
                ..Default::default()
            },
            StateBackendConfig {
                max_parallelism: 0,
                ..Default::default()
            },
            StateBackendConfig {
                operator_id: "a/b".into(),
                ..Default::default()
            },
            StateBackendConfig {
                heap_frame_bytes: 0,
                ..Default::default()
            },
        ];
        for config in bad {
            assert!(matches!(
                config.heap_config(),
                Err(Error::InvalidArgument(_))
            ));
        }
        let ok = StateBackendConfig::default().for_subtask(3, 2);
        assert_eq!(
            ok.heap_config().unwrap().key_groups,
            ok.key_groups().unwrap()
        );
    }
}
