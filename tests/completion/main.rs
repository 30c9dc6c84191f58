//! Completion of checkpoints and what can go wrong on the way: the protocol's defects (one test each, named
//! after it) on the coordinator and the RocksDB backend, the lifecycle (retention, abort, ids, cancellation,
//! fallback), and the production fault model (`docs/faults.md`).

#![allow(clippy::unwrap_used, reason = "tests fail loudly on unexpected errors")]

#[path = "../common/mod.rs"]
mod common;

mod faults;
mod lifecycle;
mod protocol;
mod rocksdb_faults;
mod rocksdb_protocol;
