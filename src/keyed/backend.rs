//! The trait every keyed state backend implements.

use std::future::Future;
use std::hash::Hash;
use std::pin::Pin;
use std::time::Duration;

use crate::checkpoint::handle::KeyedStateHandle;
use crate::codec::Codec;
use crate::error::Result;
use crate::keyed::descriptor::{
    AggregatingStateDescriptor, ListStateDescriptor, MapStateDescriptor, ReducingStateDescriptor,
    ValueStateDescriptor,
};
use crate::keyed::key_group::KeyGroupRange;
use crate::keyed::state::{AggregatingState, ListState, MapState, ReducingState, ValueState};
use crate::storage::CheckpointStorage;

/// Types usable as keys, namespaces and map user keys.
pub trait StateKey: Codec + Hash + Eq + Clone + Send + Sync + 'static {}
impl<T: Codec + Hash + Eq + Clone + Send + Sync + 'static> StateKey for T {}

/// Types usable as state values (and list elements, map values, accumulators).
pub trait StateValue: Codec + Clone + Send + Sync + 'static {}
impl<T: Codec + Clone + Send + Sync + 'static> StateValue for T {}

/// Index of a registered state inside its backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct StateId(pub(crate) u32);

/// Measurements of one snapshot of one backend.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SnapshotMetrics {
    /// Time the synchronous phase blocked processing.
    pub sync_duration: Duration,
    /// Time of the asynchronous phase (encode and upload).
    pub async_duration: Duration,
    /// Bytes this snapshot uploaded ("checkpointed size").
    pub checkpointed_bytes: u64,
    /// Bytes of all files the snapshot references ("full size").
    pub full_bytes: u64,
    /// Uncompressed bytes of state records written.
    pub state_bytes: u64,
    /// Entries written (one per key and namespace of each state).
    pub entries: u64,
    /// Files uploaded by this snapshot.
    pub files_uploaded: u32,
    /// Files reused from earlier checkpoints (placeholders).
    pub files_reused: u32,
}

/// The outcome of a snapshot's asynchronous phase.
#[derive(Debug, Clone)]
pub struct SnapshotResult {
    /// What was written; goes into the checkpoint's metadata.
    pub handle: KeyedStateHandle,
    /// How long it took and how much it wrote.
    pub metrics: SnapshotMetrics,
}

/// A snapshot whose synchronous phase is done; [`PendingSnapshot::run`] is its asynchronous phase.
///
/// Dropping it without running cancels the snapshot (nothing was written yet).
pub struct PendingSnapshot {
    checkpoint_id: u64,
    sync_duration: Duration,
    future: Pin<Box<dyn Future<Output = Result<SnapshotResult>> + Send>>,
}

impl PendingSnapshot {
    pub(crate) fn new(
        checkpoint_id: u64,
        sync_duration: Duration,
        future: impl Future<Output = Result<SnapshotResult>> + Send + 'static,
    ) -> Self {
        PendingSnapshot {
            checkpoint_id,
            sync_duration,
            future: Box::pin(future),
        }
    }

    /// The checkpoint this snapshot belongs to.
    pub fn checkpoint_id(&self) -> u64 {
        self.checkpoint_id
    }

    /// How long the synchronous phase took.
    pub fn sync_duration(&self) -> Duration {
        self.sync_duration
    }

    /// Runs the asynchronous phase: writes the frozen state to checkpoint storage while the backend keeps
    /// processing. Must run inside a tokio runtime (CPU-heavy encoding goes to `spawn_blocking`).
    ///
    /// # Errors
    /// Storage errors; on error nothing of this snapshot is left in storage.
    pub async fn run(self) -> Result<SnapshotResult> {
        self.future.await
    }
}

/// A keyed state backend for keys of type `K` (as Flink's `KeyedStateBackend`).
///
/// Access is single-threaded, like an operator's: `set_current_key`, then read and write states through the
/// state objects, which take the backend as an argument. The primitive methods below are what the state
/// objects call; engines use the state objects ([`ValueState`], [`ListState`], ...).
pub trait KeyedStateBackend<K: StateKey>: Send {
    /// Max parallelism of the job (number of key groups).
    fn max_parallelism(&self) -> u32;
    /// Key groups this backend owns.
    fn key_group_range(&self) -> KeyGroupRange;

    /// Makes `key` the current key for state access.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`](crate::Error::InvalidArgument) if the key's group is not in this backend's
    /// key-group range (the record was routed to the wrong subtask).
    fn set_current_key(&mut self, key: K) -> Result<()>;
    /// The current key, if one was set.
    fn current_key(&self) -> Option<&K>;
    /// Key group of the current key.
    fn current_key_group(&self) -> Option<u32>;

    /// Registers (or looks up) a value state.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`](crate::Error::InvalidArgument) if a state of that name exists with another
    /// kind or codecs, here or in the restored snapshot.
    fn value_state<N: StateKey, V: StateValue>(
        &mut self,
        descriptor: &ValueStateDescriptor<N, V>,
    ) -> Result<ValueState<N, V>>;
    /// Registers (or looks up) a list state. Errors as [`KeyedStateBackend::value_state`].
    fn list_state<N: StateKey, V: StateValue>(
        &mut self,
        descriptor: &ListStateDescriptor<N, V>,
    ) -> Result<ListState<N, V>>;
    /// Registers (or looks up) a map state. Errors as [`KeyedStateBackend::value_state`].
    fn map_state<N: StateKey, UK: StateKey, V: StateValue>(
        &mut self,
        descriptor: &MapStateDescriptor<N, UK, V>,
    ) -> Result<MapState<N, UK, V>>;
    /// Registers (or looks up) a reducing state. Errors as [`KeyedStateBackend::value_state`].
    fn reducing_state<N: StateKey, V: StateValue>(
        &mut self,
        descriptor: &ReducingStateDescriptor<N, V>,
    ) -> Result<ReducingState<N, V>>;
    /// Registers (or looks up) an aggregating state. Errors as [`KeyedStateBackend::value_state`].
    fn aggregating_state<N: StateKey, IN, ACC: StateValue, OUT>(
        &mut self,
        descriptor: &AggregatingStateDescriptor<N, IN, ACC, OUT>,
    ) -> Result<AggregatingState<N, IN, ACC, OUT>>;

    /// Primitive: value of the current key in `ns`.
    fn value_get<N: StateKey, V: StateValue>(&self, state: StateId, ns: &N) -> Result<Option<V>>;
    /// Primitive: sets the value of the current key in `ns`.
    fn value_put<N: StateKey, V: StateValue>(
        &mut self,
        state: StateId,
        ns: &N,
        value: V,
    ) -> Result<()>;
    /// Primitive: replaces the value with `f(old)` (removes it if `f` returns `None`) in one lookup.
    fn value_modify<N: StateKey, V: StateValue>(
        &mut self,
        state: StateId,
        ns: &N,
        f: &mut dyn FnMut(Option<&V>) -> Option<V>,
    ) -> Result<()>;
    /// Primitive: removes the value of the current key in `ns`.
    fn value_clear<N: StateKey, V: StateValue>(&mut self, state: StateId, ns: &N) -> Result<()>;

    /// Primitive: the list of the current key in `ns` (`None` if empty).
    fn list_get<N: StateKey, V: StateValue>(
        &self,
        state: StateId,
        ns: &N,
    ) -> Result<Option<Vec<V>>>;
    /// Primitive: appends `values` to the list.
    fn list_add_all<N: StateKey, V: StateValue>(
        &mut self,
        state: StateId,
        ns: &N,
        values: Vec<V>,
    ) -> Result<()>;
    /// Primitive: replaces the list (an empty `values` clears it).
    fn list_update<N: StateKey, V: StateValue>(
        &mut self,
        state: StateId,
        ns: &N,
        values: Vec<V>,
    ) -> Result<()>;
    /// Primitive: removes the list.
    fn list_clear<N: StateKey, V: StateValue>(&mut self, state: StateId, ns: &N) -> Result<()>;

    /// Primitive: the value of user key `uk`.
    fn map_get<N: StateKey, UK: StateKey, V: StateValue>(
        &self,
        state: StateId,
        ns: &N,
        uk: &UK,
    ) -> Result<Option<V>>;
    /// Primitive: sets user key `uk` to `value`.
    fn map_put<N: StateKey, UK: StateKey, V: StateValue>(
        &mut self,
        state: StateId,
        ns: &N,
        uk: UK,
        value: V,
    ) -> Result<()>;
    /// Primitive: removes user key `uk`.
    fn map_remove<N: StateKey, UK: StateKey, V: StateValue>(
        &mut self,
        state: StateId,
        ns: &N,
        uk: &UK,
    ) -> Result<()>;
    /// Primitive: all entries of the map (in no particular order).
    fn map_entries<N: StateKey, UK: StateKey, V: StateValue>(
        &self,
        state: StateId,
        ns: &N,
    ) -> Result<Vec<(UK, V)>>;
    /// Primitive: removes the whole map.
    fn map_clear<N: StateKey, UK: StateKey, V: StateValue>(
        &mut self,
        state: StateId,
        ns: &N,
    ) -> Result<()>;

    /// Keys that have state `state` in namespace `ns` (as Flink's `getKeys`), in no particular order.
    fn keys<N: StateKey>(&self, state: StateId, ns: &N) -> Result<Vec<K>>;

    /// Synchronous phase of a snapshot for `checkpoint_id`: freezes the state and returns its asynchronous
    /// phase, which writes to `storage`.
    ///
    /// # Errors
    /// [`Error::IllegalState`](crate::Error::IllegalState) if the backend cannot snapshot now.
    fn snapshot(
        &mut self,
        checkpoint_id: u64,
        storage: &CheckpointStorage,
    ) -> Result<PendingSnapshot>;

    /// The checkpoint `checkpoint_id` completed (all tasks acknowledged, metadata written).
    fn notify_checkpoint_complete(&mut self, checkpoint_id: u64);
    /// The checkpoint `checkpoint_id` failed or timed out.
    fn notify_checkpoint_aborted(&mut self, checkpoint_id: u64);
}
