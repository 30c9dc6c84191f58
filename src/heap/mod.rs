//! The heap state backend: copy-on-write maps in memory, snapshots as keyed snapshot files (full, or
//! incremental chains of a full file and deltas).

pub(crate) mod backend;
mod bulk;
mod chain;
mod chain_result;
mod checkpoints;
pub(crate) mod config;
pub(crate) mod cow_map;
mod cursor;
mod decode;
mod delta;
mod frozen;
mod in_process;
mod prefetch;
mod restore;
mod rolling;
mod serde;
mod snapshot;
mod states;
pub(crate) mod table;
mod timers;
mod ttl;

pub use backend::HeapKeyedStateBackend;
pub use config::HeapConfig;
pub use in_process::InProcessRecovery;
