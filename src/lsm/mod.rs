//! The LSM keyed state backend on RocksDB, with incremental checkpoints (as Flink's
//! `EmbeddedRocksDBStateBackend` with `RocksIncrementalSnapshotStrategy`). Design: `docs/lsm.md`.

mod backend;
mod bulk;
mod canonical;
mod checkpointing;
mod import;
mod import_rows;
mod instance;
mod migrate;
mod options;
mod restore;
mod rows;
mod snapshot;

pub use backend::LsmKeyedStateBackend;
pub use options::{LsmBackendConfig, lsm_db_options};
