//! The checkpoint lifecycle: handles, the coordinator and the completed-checkpoint store.

pub(crate) mod coordinator;
pub(crate) mod handle;
pub(crate) mod registry;
pub(crate) mod store;
