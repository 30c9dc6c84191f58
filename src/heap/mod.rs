//! The heap state backend: copy-on-write maps in memory, full snapshots as keyed snapshot files.

pub(crate) mod backend;
mod bulk;
mod checkpoints;
pub(crate) mod config;
pub(crate) mod cow_map;
mod cursor;
mod decode;
mod prefetch;
mod restore;
mod serde;
mod snapshot;
mod states;
pub(crate) mod table;
mod timers;
mod ttl;

pub use backend::HeapKeyedStateBackend;
pub use config::HeapConfig;
