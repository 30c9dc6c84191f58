//! Incremental checkpoints of both backends: the diff against the last confirmed checkpoint, restore,
//! and one test per known pitfall (named after its bug).

#![allow(clippy::unwrap_used, reason = "tests fail loudly on unexpected errors")]

#[path = "../common/mod.rs"]
mod common;

mod heap;
mod heap_elements;
mod rocksdb;
