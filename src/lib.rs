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
//! The root holds what that embedding uses (below); the rest lives in named modules: [`keyed`] (the state
//! API in full), [`heap`] and [`rocksdb`] (the concrete backends and their settings), [`checkpoint`] (the
//! coordinator side), [`snapshot`] (handles, metadata, and [`snapshot::layout`], where every file lives),
//! [`storage`], [`key_group`] (the key-group math and the router), [`operator`] (operator state),
//! [`codec`], [`format`](mod@crate::format) (the `_metadata` codec), [`clock`], [`ids`] and [`inspect`]
//! (reading storage, for `statectl`). Layers and routes: `docs/architecture.md`.
//!
//! ```
//! use statebackend::*;
//!
//! # #[tokio::main(flavor = "multi_thread", worker_threads = 2)]
//! # async fn main() -> statebackend::Result<()> {
//! // One subtask's backend: who it is (subtask 0 of 1 of operator `sessions`, 128 key groups), and its
//! // settings, heap or RocksDB (`StateBackendConfig` is plain data).
//! let identity = SubtaskIdentity::new("sessions", 128, 1, 0)?;
//! let config = StateBackendConfig::default();
//! let mut backend: StateBackend<String> = StateBackend::new(&identity, &config)?;
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
//! let mut restored =
//!     StateBackend::<String>::restore_checkpoint(&identity, &config, &storage, &latest, RestoreMode::Claim).await?;
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
pub mod checkpoint;
pub mod clock;
pub mod codec;
mod codec_text;
mod error;
pub mod format;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
pub mod heap;
pub mod ids;
pub mod inspect;
pub mod key_group;
pub mod keyed;
pub mod operator;
mod parallel;
pub mod rocksdb;
pub mod snapshot;
mod snapshot_io;
pub mod storage;

// The engine path (the README's embedding); everything else lives in the named modules above.
pub use backend::{BackendKind, StateBackend, StateBackendConfig};
pub use checkpoint::{
    Acknowledgement, CheckpointCoordinator, CheckpointStats, CoordinatorConfig, Declined,
    OperatorTasks,
};
pub use clock::{Clock, ManualClock, SystemClock};
pub use codec::{Codec, VoidNamespace};
pub use error::{Error, ErrorKind, Result};
pub use ids::IdSource;
pub use key_group::{KeyGroupRange, KeyGroupRouter};
pub use keyed::{
    AggregateFunction, AggregatingState, AggregatingStateDescriptor, KeyedStateBackend, ListState,
    ListStateDescriptor, MapState, MapStateDescriptor, PendingSnapshot, ReducingState,
    ReducingStateDescriptor, StateKey, StateValue, SubtaskIdentity, ValueState,
    ValueStateDescriptor,
};
pub use snapshot::{
    CheckpointMetadata, KeyedStateHandle, RestoreMode, SavepointFormat, SnapshotResult,
    TaskStateSnapshot,
};
pub use storage::{CheckpointStorage, StorageConfig};
