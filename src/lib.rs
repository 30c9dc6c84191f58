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
//! // One subtask's backend, heap or LSM as the settings say (`StateBackendConfig` is plain data).
//! let config = StateBackendConfig { operator_id: "sessions".into(), ..StateBackendConfig::default() };
//! let mut backend: StateBackend<String> = StateBackend::new(&config)?;
//! // Per user: events per session window (the namespace is the window's start, ms).
//! let events = backend.reducing_state(&ReducingStateDescriptor::<u64, u64>::new("events", |a, b| a + b))?;
//! backend.set_current_key("alice".to_string())?;
//! events.add(&mut backend, &1_000, 3)?;
//! events.add(&mut backend, &1_500, 2)?;
//! // The two sessions merge (as Flink's session windows): 1_500 folds into 1_000.
//! events.merge_namespaces(&mut backend, &1_000, &[1_500])?;
//! assert_eq!(events.get(&backend, &1_000)?, Some(5));
//! assert_eq!(events.keys_and_namespaces(&backend)?, vec![("alice".to_string(), 1_000)]);
//!
//! // A checkpoint: the synchronous phase freezes, the asynchronous phase writes.
//! let storage = CheckpointStorage::in_memory("sessions-job")?;
//! let mut coordinator =
//!     CheckpointCoordinator::open(storage.clone(), CoordinatorConfig::single_operator("sessions", 1, 2)).await?;
//! let id = coordinator.trigger().await?;
//! let result = backend.snapshot(id, &storage)?.run().await?;
//! let ack = coordinator.acknowledge(id, TaskStateSnapshot::keyed("sessions", 0, result.handle), None).await?;
//! assert!(matches!(ack, Acknowledgement::Completed(_)));
//! backend.notify_checkpoint_complete(id);
//!
//! // Restore a fresh backend from the latest completed checkpoint.
//! let latest = coordinator.store().latest().expect("one checkpoint").clone();
//! let mut restored = StateBackend::<String>::restore_checkpoint(&config, &storage, &latest, RestoreMode::Claim).await?;
//! let events = restored.reducing_state(&ReducingStateDescriptor::<u64, u64>::new("events", |a, b| a + b))?;
//! restored.set_current_key("alice".to_string())?;
//! assert_eq!(events.get(&restored, &1_000)?, Some(5));
//! # Ok(())
//! # }
//! ```

/// The README's examples, compiled and run as doctests.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;

mod backend;
mod checkpoint;
mod clock;
mod codec;
mod codec_text;
mod error;
mod format;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
mod heap;
mod ids;
mod key_group;
mod keyed;
#[cfg(feature = "rocksdb")]
mod lsm;
mod operator;
mod parallel;
mod snapshot;
mod storage;

pub use backend::{BackendKind, StateBackend, StateBackendConfig};
pub use checkpoint::answers::{Acknowledgement, CheckpointStats, Declined, Discarded};
pub use checkpoint::config::{CoordinatorConfig, DEFAULT_CHECKPOINT_TIMEOUT, OperatorTasks};
pub use checkpoint::coordinator::CheckpointCoordinator;
pub use checkpoint::fence::NewestGeneration;
pub use checkpoint::read::{KeyedRecord, SnapshotLocation};
pub use checkpoint::registry::{SharedFileEntry, SharedFileRegistry};
pub use checkpoint::store::{
    AddOutcome, CancellationPolicy, CompletedCheckpointStore, RegistryStats, RestoreOutcome,
    SkippedCheckpoint,
};
pub use checkpoint::sweep::SweepReport;
pub use clock::{Clock, ManualClock, SystemClock};
pub use codec::{
    Codec, Migration, SchemaCompatibility, VoidNamespace, WrittenCodec, schema_compatibility,
    versioned_id,
};
pub use codec_text::{describe_encoded, hex_bytes};
pub use error::{Error, ErrorKind, Result};
pub use heap::backend::{HeapBackendConfig, HeapKeyedStateBackend};
pub use ids::{IdSource, RandomIds, SeededIds};
pub use key_group::{
    KeyGroupRange, UPPER_BOUND_MAX_PARALLELISM, assign_to_key_group, default_max_parallelism,
    key_group_range_for_operator, operator_index_for_key_group, stable_key_hash,
};
pub use keyed::backend::{KeyedStateBackend, PendingSnapshot, StateId, StateKey, StateValue};
pub use keyed::descriptor::{
    AggregateFunction, AggregatingStateDescriptor, ListStateDescriptor, MapStateDescriptor,
    ReduceFn, ReducingStateDescriptor, ValueStateDescriptor,
};
pub use keyed::map_iter::MapEntries;
pub use keyed::router::{KeyGroupRouter, KeyRoute};
pub use keyed::state::{AggregatingState, ListState, MapState, ReducingState, ValueState};
#[cfg(feature = "rocksdb")]
pub use lsm::{LsmBackendConfig, LsmKeyedStateBackend, lsm_db_options};
pub use operator::{
    BroadcastState, OPERATOR_STATE_PREFIX, OperatorListState, OperatorStateBackend, Redistribution,
};
pub use snapshot::handle::{
    CheckpointMetadata, FileScope, HandleFormat, KeyedStateHandle, SnapshotKind, StateFile,
    TaskStateSnapshot,
};
pub use snapshot::layout;
pub use snapshot::restore_mode::RestoreMode;
pub use snapshot::result::{SavepointFormat, SnapshotMetrics, SnapshotResult};
pub use snapshot::state_meta::{StateKind, StateMeta};
pub use storage::{CheckpointStorage, IncompleteUpload, StorageSettings};
