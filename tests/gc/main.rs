//! Subsumption and garbage collection: the shared-file registry, discards and the orphan sweep, driven
//! through the coordinator with hand-made handles and with random schedules against a model.

#![allow(clippy::unwrap_used, reason = "tests fail loudly on unexpected errors")]

#[path = "../common/mod.rs"]
mod common;

mod registry;
mod registry_model;
