//! The RocksDB keyed state backend, with incremental checkpoints (as Flink's
//! `EmbeddedRocksDBStateBackend` with `RocksIncrementalSnapshotStrategy`). Design: `docs/lsm.md`.
//!
//! Its settings, [`RocksDbConfig`], are plain data compiled in every build; the backend itself needs the
//! `rocksdb` cargo feature (on by default).

#[cfg(feature = "rocksdb")]
mod backend;
#[cfg(feature = "rocksdb")]
mod bulk;
mod config;
#[cfg(feature = "rocksdb")]
mod current;
#[cfg(feature = "rocksdb")]
mod db;
#[cfg(feature = "rocksdb")]
mod db_files;
#[cfg(feature = "rocksdb")]
mod import_db_files;
#[cfg(feature = "rocksdb")]
mod ingest_db_files;
#[cfg(feature = "rocksdb")]
mod instance;
mod memory;
#[cfg(feature = "rocksdb")]
mod migrate;
#[cfg(feature = "rocksdb")]
mod options;
#[cfg(feature = "rocksdb")]
mod restore;
#[cfg(feature = "rocksdb")]
mod rows;
#[cfg(feature = "rocksdb")]
mod snapshot;
#[cfg(feature = "rocksdb")]
mod states;
#[cfg(feature = "rocksdb")]
mod timers;
#[cfg(feature = "rocksdb")]
mod ttl;

#[cfg(feature = "rocksdb")]
pub use backend::RocksDbKeyedStateBackend;
pub use config::RocksDbConfig;
pub use memory::{MemoryBudget, MemoryBudgetConfig};
/// The RocksDB options of every column family and of the DB, for this crate's benches (raw-RocksDB
/// baselines with the backend's options); not part of the public API (`internals` feature).
#[cfg(all(feature = "rocksdb", feature = "internals"))]
#[doc(hidden)]
pub use options::lsm_db_options;
