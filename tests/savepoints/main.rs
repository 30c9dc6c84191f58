//! Savepoints: canonical savepoints written and restored by either backend, the bytes a rescaled restore
//! reads, and schema evolution across a savepoint.

#![allow(clippy::unwrap_used, reason = "tests fail loudly on unexpected errors")]

#[path = "../common/mod.rs"]
mod common;

mod canonical;
mod reads;
mod schema_evolution;
