//! The settings of a keyed state backend chosen at run time: plain data an engine fills from its own
//! configuration (flags, a file), with units in the names; each kind's settings written once, in its own
//! module, and nested here.

use std::str::FromStr;

#[cfg(doc)]
use crate::SubtaskIdentity;
use crate::error::{Error, Result};
use crate::heap::config::HeapConfig;
use crate::rocksdb::RocksDbConfig;

/// Which keyed state backend to build (as Flink's `state.backend.type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub enum BackendKind {
    /// [`HeapKeyedStateBackend`](crate::heap::HeapKeyedStateBackend): state in copy-on-write maps in memory,
    /// full snapshots (Flink's `hashmap`).
    #[default]
    Heap,
    /// `RocksDbKeyedStateBackend`: state in an embedded RocksDB (an LSM tree), incremental snapshots (Flink's
    /// `rocksdb`).
    /// Needs the `rocksdb` cargo feature (on by default).
    RocksDb,
}

impl BackendKind {
    /// The name [`FromStr`] reads: `heap` or `rocksdb` (Flink's `state.backend.type` values but `hashmap`).
    pub fn name(self) -> &'static str {
        match self {
            BackendKind::Heap => "heap",
            BackendKind::RocksDb => "rocksdb",
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

    /// `heap` (or Flink's `hashmap`), `rocksdb` (or `lsm`), case-insensitive.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for any other name.
    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "heap" | "hashmap" => Ok(BackendKind::Heap),
            "rocksdb" | "lsm" => Ok(BackendKind::RocksDb),
            _ => Err(Error::InvalidArgument(format!(
                "unknown state backend `{s}` (heap, hashmap, rocksdb or lsm)"
            ))),
        }
    }
}

/// Settings of one subtask's keyed state backend, of either kind (plain data: build it with struct update
/// syntax from [`StateBackendConfig::default`]). Who the subtask is, its [`SubtaskIdentity`], is given
/// beside it (as Flink keeps a backend's parameters apart from its configuration).
///
/// ```
/// use statebackend::{BackendKind, StateBackendConfig, rocksdb::RocksDbConfig};
/// let config = StateBackendConfig {
///     kind: BackendKind::RocksDb,
///     rocksdb: RocksDbConfig { local_dir: "/mnt/ssd".into(), ..RocksDbConfig::default() },
///     ..StateBackendConfig::default()
/// };
/// assert_eq!(config.heap.frame_bytes, 1 << 20);
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct StateBackendConfig {
    /// Heap or RocksDB (default heap).
    pub kind: BackendKind,
    /// Settings the heap kind runs with.
    pub heap: HeapConfig,
    /// Settings the RocksDB kind runs with.
    pub rocksdb: RocksDbConfig,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_parse_by_our_and_flinks_names() {
        for (name, kind) in [
            ("heap", BackendKind::Heap),
            ("HashMap", BackendKind::Heap),
            ("lsm", BackendKind::RocksDb),
            ("rocksdb", BackendKind::RocksDb),
        ] {
            assert_eq!(name.parse::<BackendKind>().unwrap(), kind);
        }
        assert!("memory".parse::<BackendKind>().is_err());
        assert_eq!(
            BackendKind::RocksDb
                .to_string()
                .parse::<BackendKind>()
                .unwrap(),
            BackendKind::RocksDb
        );
    }
}
