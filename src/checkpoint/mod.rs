//! The checkpoint lifecycle: handles, the coordinator, the completed-checkpoint store, the job's lineage,
//! the orphan sweep and the validation of handle sets (`docs/protocol.md`, `docs/faults.md`).

mod acknowledge;
pub(crate) mod answers;
pub(crate) mod config;
pub(crate) mod coordinator;
mod discard;
pub(crate) mod fence;
mod known;
pub(crate) mod lineage;
pub(crate) mod pending;
pub(crate) mod read;
pub(crate) mod registry;
mod savepoint;
pub(crate) mod store;
mod store_types;
pub(crate) mod sweep;
