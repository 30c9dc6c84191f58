//! # statebackend
//!
//! Keyed operator state and checkpoints for Rust stream-processing engines, in the manner of Apache
//! Flink's state backends: value, list, map, reducing and aggregating state under a current key and a
//! namespace; keys partitioned into **key groups** so state can be restored at another parallelism; a
//! copy-on-write **heap backend** whose synchronous snapshot phase only freezes a version; **checkpoint
//! storage** on `object_store` (local directory, in-memory, S3/GCS/Azure); and a checkpoint lifecycle
//! (trigger, acknowledge, complete, abort, subsume, restore with fallback) whose every step is safe to
//! retry, to see twice or late, and to be cut off by a crash (`docs/protocol.md`).
//!
//! ```
//! use statebackend::*;
//!
//! # #[tokio::main(flavor = "multi_thread", worker_threads = 2)]
//! # async fn main() -> statebackend::Result<()> {
//! let storage = CheckpointStorage::in_memory("wordcount")?;
//! let config = HeapBackendConfig::for_subtask("counter", 128, 1, 0)?;
//! let mut backend: HeapKeyedStateBackend<String> = HeapKeyedStateBackend::new(config.clone())?;
//! let counts = backend.value_state(&ValueStateDescriptor::<VoidNamespace, u64>::new("count"))?;
//!
//! for word in ["to", "be", "or", "not", "to", "be"] {
//!     backend.set_current_key(word.to_string())?;
//!     let n = counts.value(&backend, &VoidNamespace)?.unwrap_or(0);
//!     counts.update(&mut backend, &VoidNamespace, n + 1)?;
//! }
//!
//! // Checkpoint: the synchronous phase freezes, the asynchronous phase writes.
//! let mut coordinator = CheckpointCoordinator::open(
//!     storage.clone(),
//!     CoordinatorConfig::single_operator("counter", 1, 2),
//! ).await?;
//! let id = coordinator.trigger().await?;
//! let pending = backend.snapshot(id, &storage)?;
//! let result = pending.run().await?;
//! let task = TaskStateSnapshot {
//!     operator_id: "counter".into(),
//!     subtask_index: 0,
//!     keyed_state: Some(result.handle),
//!     ..Default::default()
//! };
//! let ack = coordinator.acknowledge(id, task, Some(result.metrics)).await?;
//! assert!(matches!(ack, Acknowledgement::Completed(_)));
//! backend.notify_checkpoint_complete(id);
//!
//! // Restore a fresh backend from the latest completed checkpoint.
//! let latest = coordinator.store().latest().expect("one checkpoint").clone();
//! let handles = latest.keyed_handles("counter");
//! let mut restored = HeapKeyedStateBackend::<String>::restore(config, &storage, &handles).await?;
//! let counts = restored.value_state(&ValueStateDescriptor::<VoidNamespace, u64>::new("count"))?;
//! restored.set_current_key("to".to_string())?;
//! assert_eq!(counts.value(&restored, &VoidNamespace)?, Some(2));
//! # Ok(())
//! # }
//! ```

mod backend;
mod checkpoint;
mod clock;
mod codec;
mod error;
mod format;
mod heap;
mod keyed;
#[cfg(feature = "rocksdb")]
mod lsm;
// The LSM row decoders without RocksDB, for the fuzz target.
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
#[cfg(all(feature = "fuzzing", not(feature = "rocksdb")))]
#[path = "lsm/keys.rs"]
#[allow(dead_code, reason = "only the decoders and their encoders are fuzzed")]
mod lsm_keys;
mod storage;

pub use backend::{BackendKind, StateBackend, StateBackendConfig};
pub use checkpoint::coordinator::CheckpointCoordinator;
pub use checkpoint::fence::COORDINATORS_DIR;
pub use checkpoint::handle::{
    CheckpointMetadata, FileScope, HandleFormat, KeyedStateHandle, SnapshotKind, StateFile,
    TaskStateSnapshot,
};
pub use checkpoint::pending::{
    Acknowledgement, CheckpointStats, CoordinatorConfig, DEFAULT_CHECKPOINT_TIMEOUT, OperatorTasks,
};
pub use checkpoint::registry::{SharedFileEntry, SharedFileRegistry};
pub use checkpoint::store::{
    AddOutcome, CancellationPolicy, CompletedCheckpointStore, RegistryStats, RestoreMode,
    RestoreOutcome, SkippedCheckpoint,
};
pub use checkpoint::sweep::SweepReport;
pub use clock::{Clock, ManualClock, SystemClock};
pub use codec::{Codec, VoidNamespace};
pub use error::{Error, ErrorKind, Result};
pub use heap::backend::{HeapBackendConfig, HeapKeyedStateBackend};
pub use keyed::backend::{
    KeyedStateBackend, PendingSnapshot, SnapshotMetrics, SnapshotResult, StateId, StateKey,
    StateValue,
};
pub use keyed::descriptor::{
    AggregateFunction, AggregatingStateDescriptor, ListStateDescriptor, MapStateDescriptor,
    ReduceFn, ReducingStateDescriptor, StateKind, StateMeta, ValueStateDescriptor,
};
pub use keyed::key_group::{
    KeyGroupRange, UPPER_BOUND_MAX_PARALLELISM, assign_to_key_group, default_max_parallelism,
    key_group_range_for_operator, operator_index_for_key_group, stable_key_hash,
};
pub use keyed::map_iter::MapEntries;
pub use keyed::router::{KeyGroupRouter, KeyRoute};
pub use keyed::state::{AggregatingState, ListState, MapState, ReducingState, ValueState};
#[cfg(feature = "rocksdb")]
pub use lsm::{LsmBackendConfig, LsmKeyedStateBackend, lsm_db_options};
pub use storage::{
    CheckpointStorage, METADATA_FILE, PINNED_MARKER, SAVEPOINT_DIR, SHARED_DIR, StorageSettings,
    TRIGGER_MARKER, checkpoint_dir,
};
