//! Restore: snapshot isolation and round trips at the same and another parallelism, the handle sets a
//! restore accepts and refuses, the RocksDB backend's restore checks, and the run-time-chosen backend through
//! checkpoint and restore, and local recovery on both backends.

#![allow(clippy::unwrap_used, reason = "tests fail loudly on unexpected errors")]

#[path = "../common/mod.rs"]
mod common;

mod checks;
mod chosen_backend;
mod in_process;
mod local_recovery;
mod memory_budget;
mod rocksdb_checks;
mod rocksdb_rescale;
mod round_trips;
