//! The trait every keyed state backend implements.

use std::future::Future;
use std::hash::Hash;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use crate::clock::Clock;
use crate::codec::{Codec, VoidNamespace};
use crate::error::Result;
use crate::key_group::KeyGroupRange;
use crate::key_group::router::KeyRoute;
use crate::keyed::descriptor::{
    AggregatingStateDescriptor, ListStateDescriptor, MapStateDescriptor, ReducingStateDescriptor,
    ValueStateDescriptor,
};
use crate::keyed::map_iter::MapEntries;
use crate::keyed::read_refresh::{RefreshWrite, apply_refreshes_keeping_key};
use crate::keyed::state::{AggregatingState, ListState, MapState, ReducingState, ValueState};
use crate::keyed::timers::{Timer, TimerService, TimerServiceDescriptor};
use crate::keyed::ttl::{StateTtlConfig, TtlTimes};
use crate::keyed::ttl_refresh::Mark;
use crate::snapshot::result::{SavepointFormat, SnapshotResult};
use crate::snapshot::state_meta::StateKind;
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
/// state objects ([`ValueState`], [`ListState`], ...), which take the backend as an argument. The methods
/// here are Flink's level: keys, state registration, snapshots, notifications; the per-entry primitives the
/// state objects call are a sealed supertrait no other crate can name or call.
///
/// Sealed: implemented by this crate's backends only ([`crate::heap::HeapKeyedStateBackend`], the RocksDB
/// backend and [`crate::StateBackend`]), so that its primitives may change without breaking engines.
pub trait KeyedStateBackend<K: StateKey>: Send + sealed::StateAccess<K> + 'static {
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
    /// Makes `key` the current key, located by `route` (from a [`KeyGroupRouter`](crate::KeyGroupRouter)
    /// with this backend's max parallelism) instead of hashing the key again. `route` must be the key's:
    /// debug builds check it, release builds trust it (a wrong route files the state under another key
    /// group, where a rescale would lose it).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`](crate::Error::InvalidArgument) if the route's key group is not in this
    /// backend's range or was computed for another max parallelism.
    fn set_current_key_routed(&mut self, key: K, route: KeyRoute) -> Result<()> {
        let _ = route;
        self.set_current_key(key)
    }
    /// The current key, if one was set.
    fn current_key(&self) -> Option<&K>;
    /// Key group of the current key.
    fn current_key_group(&self) -> Option<u32>;

    /// Registers (or looks up) a value state (with TTL if the descriptor has one, `docs/ttl.md`).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`](crate::Error::InvalidArgument) if a state of that name exists with another
    /// kind or codecs, here or in the restored snapshot, or the TTL is 0 ms.
    fn value_state<N: StateKey, V: StateValue>(
        &mut self,
        descriptor: &ValueStateDescriptor<N, V>,
    ) -> Result<ValueState<N, V>> {
        let d = descriptor;
        let id = register::<K, Self, N, VoidNamespace, V>(self, &d.name, StateKind::Value, d.ttl)?;
        Ok(ValueState::new(id, d.ttl))
    }
    /// Registers (or looks up) a list state. Errors as [`KeyedStateBackend::value_state`].
    fn list_state<N: StateKey, V: StateValue>(
        &mut self,
        descriptor: &ListStateDescriptor<N, V>,
    ) -> Result<ListState<N, V>> {
        let d = descriptor;
        let id = register::<K, Self, N, VoidNamespace, V>(self, &d.name, StateKind::List, d.ttl)?;
        Ok(ListState::new(id, d.ttl))
    }
    /// Registers (or looks up) a map state. Errors as [`KeyedStateBackend::value_state`].
    fn map_state<N: StateKey, UK: StateKey, V: StateValue>(
        &mut self,
        descriptor: &MapStateDescriptor<N, UK, V>,
    ) -> Result<MapState<N, UK, V>> {
        let d = descriptor;
        let id = register::<K, Self, N, UK, V>(self, &d.name, StateKind::Map, d.ttl)?;
        Ok(MapState::new(id, d.ttl))
    }
    /// Registers (or looks up) a reducing state. Errors as [`KeyedStateBackend::value_state`].
    fn reducing_state<N: StateKey, V: StateValue>(
        &mut self,
        descriptor: &ReducingStateDescriptor<N, V>,
    ) -> Result<ReducingState<N, V>> {
        let d = descriptor;
        let kind = StateKind::Reducing;
        let id = register::<K, Self, N, VoidNamespace, V>(self, &d.name, kind, d.ttl)?;
        Ok(ReducingState::new(id, d.reduce.clone(), d.ttl))
    }
    /// Registers (or looks up) an aggregating state. Errors as [`KeyedStateBackend::value_state`].
    fn aggregating_state<N: StateKey, IN, ACC: StateValue, OUT>(
        &mut self,
        descriptor: &AggregatingStateDescriptor<N, IN, ACC, OUT>,
    ) -> Result<AggregatingState<N, IN, ACC, OUT>> {
        let d = descriptor;
        let kind = StateKind::Aggregating;
        let id = register::<K, Self, N, VoidNamespace, ACC>(self, &d.name, kind, d.ttl)?;
        Ok(AggregatingState::new(id, d.function.clone(), d.ttl))
    }

    /// Reads processing time for TTL states (`docs/ttl.md`) from `clock` from now on (the system clock
    /// until this is called): a component, as a checkpoint coordinator's clock.
    fn set_clock(&mut self, clock: Arc<dyn Clock>) {
        self.ttl_times_mut().set_clock(clock);
    }

    /// The event time of TTL states with [`TtlTime::EventTime`](crate::keyed::TtlTime::EventTime) moves to `watermark_ms` (the engine
    /// passes each watermark as it advances; a smaller one than before is ignored).
    fn set_ttl_watermark(&mut self, watermark_ms: u64) {
        self.ttl_times_mut().set_watermark(watermark_ms);
    }

    /// Registers (or looks up) a timer service (as Flink's `getInternalTimerService`): its event-time and
    /// processing-time timers are keyed state of this backend, in its snapshots and restores.
    ///
    /// # Errors
    /// As [`KeyedStateBackend::value_state`] (a restored service with another key or namespace codec is
    /// [`Error::IncompatibleSchema`](crate::Error::IncompatibleSchema)).
    fn timer_service<N: StateKey>(
        &mut self,
        descriptor: &TimerServiceDescriptor<N>,
    ) -> Result<TimerService<N>>;

    /// Keys that have state `state` in namespace `ns` (as Flink's `getKeys`), in no particular order.
    fn keys<N: StateKey>(&self, state: StateId, ns: &N) -> Result<Vec<K>>;

    /// Every `(key, namespace)` with state `state`, once each, in no particular order (as Flink's
    /// `getKeysAndNamespaces`).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`](crate::Error::InvalidArgument) if `N` is not the state's namespace type
    /// or the backend does not hold the state; decode errors of restored, unregistered state.
    fn keys_and_namespaces<N: StateKey>(&self, state: StateId) -> Result<Vec<(K, N)>>;

    /// Calls `f` with each key that has state `state` in namespace `ns` as the current key (as Flink's
    /// `applyToAllKeys`); `f` may read, change and clear any state of that key. The current key is the
    /// one before the call afterwards.
    ///
    /// # Errors
    /// Those of [`KeyedStateBackend::keys`] and the first error of `f`, which stops the walk.
    fn apply_to_all_keys<N: StateKey>(
        &mut self,
        state: StateId,
        ns: &N,
        f: &mut dyn FnMut(&mut Self, &K) -> Result<()>,
    ) -> Result<()>
    where
        Self: Sized,
    {
        let saved = self.current_key().cloned();
        let keys = self.keys(state, ns)?;
        let mut result = Ok(());
        for key in keys {
            result = self
                .set_current_key(key.clone())
                .and_then(|()| f(self, &key));
            if result.is_err() {
                break;
            }
        }
        if let Some(saved) = saved {
            self.set_current_key(saved)?;
        }
        result
    }

    /// Forgets the state named `name`, registered or restored: its entries go, its next snapshot does not
    /// carry it, and state objects of it answer `InvalidArgument`. The name can be registered again, as a
    /// new empty state (of any kind). Returns whether the state existed.
    ///
    /// # Errors
    /// [`Error::Local`](crate::Error::Local) if the RocksDB backend cannot drop its column family.
    fn drop_state(&mut self, name: &str) -> Result<bool>;

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

    /// Synchronous phase of a savepoint `savepoint_id` in `format`: like [`KeyedStateBackend::snapshot`],
    /// but every file goes to `savepoints/sp-<id>/` of `storage` (any storage: the user's target), private,
    /// and the savepoint never becomes an incremental base, whatever is later notified for its id. Its id
    /// comes from the same sequence as checkpoint ids and must exceed every id snapshotted before.
    ///
    /// # Errors
    /// As [`KeyedStateBackend::snapshot`].
    fn savepoint(
        &mut self,
        savepoint_id: u64,
        storage: &CheckpointStorage,
        format: SavepointFormat,
    ) -> Result<PendingSnapshot>;

    /// The checkpoint `checkpoint_id` completed (all tasks acknowledged, metadata written).
    fn notify_checkpoint_complete(&mut self, checkpoint_id: u64);
    /// The checkpoint `checkpoint_id` failed or timed out.
    fn notify_checkpoint_aborted(&mut self, checkpoint_id: u64);
}

/// Registers state `name` of `kind` on `backend`, with `ttl` if any (then the backend watches the TTL's
/// time from now on: `TtlTimes::watch`).
///
/// # Errors
/// As [`KeyedStateBackend::value_state`].
fn register<K, B, N, UK, V>(
    backend: &mut B,
    name: &str,
    kind: StateKind,
    ttl: Option<StateTtlConfig>,
) -> Result<StateId>
where
    K: StateKey,
    B: KeyedStateBackend<K> + ?Sized,
    N: StateKey,
    UK: StateKey,
    V: StateValue,
{
    if let Some(ttl) = ttl {
        ttl.check(name)?;
    }
    let id = backend.register_state::<N, UK, V>(name, kind, ttl)?;
    if let Some(ttl) = ttl {
        backend.ttl_times_mut().watch(ttl.time);
    }
    Ok(id)
}

/// The seal of [`KeyedStateBackend`] and its primitives: a public trait in a private module, so no other
/// crate can name it, implement it or call its methods. The typed state objects ([`ValueState`],
/// [`ListState`], [`MapState`], ...) call these; engines use the state objects.
///
/// [`ValueState`]: crate::keyed::ValueState
/// [`ListState`]: crate::keyed::ListState
/// [`MapState`]: crate::keyed::MapState
pub(crate) mod sealed {
    use super::*;

    /// The state primitives every backend implements: reads and writes of one state's entry under the
    /// current key and a namespace, and their batch forms.
    pub trait StateAccess<K: StateKey> {
        /// Primitive: value of the current key in `ns`.
        fn value_get<N: StateKey, V: StateValue>(
            &self,
            state: StateId,
            ns: &N,
        ) -> Result<Option<V>>;
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
        fn value_clear<N: StateKey, V: StateValue>(&mut self, state: StateId, ns: &N)
        -> Result<()>;

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
        /// All entries of the map (in no particular order), collected from [`StateAccess::map_iter`].
        fn map_entries<N: StateKey, UK: StateKey, V: StateValue>(
            &self,
            state: StateId,
            ns: &N,
        ) -> Result<Vec<(UK, V)>> {
            self.map_iter::<N, UK, V>(state, ns)?.collect()
        }
        /// Primitive: removes the whole map.
        fn map_clear<N: StateKey, UK: StateKey, V: StateValue>(
            &mut self,
            state: StateId,
            ns: &N,
        ) -> Result<()>;

        /// Primitive: the entries of the map, streamed (a RocksDB iterator on LSM; no copy of the map on heap),
        /// in no particular order.
        fn map_iter<'a, N: StateKey, UK: StateKey, V: StateValue>(
            &'a self,
            state: StateId,
            ns: &N,
        ) -> Result<MapEntries<'a, UK, V>>;
        /// Primitive: whether the map is empty, without reading it.
        fn map_is_empty<N: StateKey, UK: StateKey, V: StateValue>(
            &self,
            state: StateId,
            ns: &N,
        ) -> Result<bool>;
        /// Primitive: sets every `(uk, value)` of `entries` (later ones win), in one write.
        fn map_put_all<N: StateKey, UK: StateKey, V: StateValue>(
            &mut self,
            state: StateId,
            ns: &N,
            entries: Vec<(UK, V)>,
        ) -> Result<()>;
        /// Primitive: keeps only the entries for which `keep` answers true (removal while iterating).
        fn map_retain<N: StateKey, UK: StateKey, V: StateValue>(
            &mut self,
            state: StateId,
            ns: &N,
            keep: &mut dyn FnMut(&UK, &V) -> bool,
        ) -> Result<()>;

        /// Batch primitive: the values of `keys` in `ns`, appended to `out` in the order of `keys` (`out` is
        /// not cleared). Does not change the current key. The heap backend prefetches the slots of keys ahead
        /// in the batch; the RocksDB backend reads with one sorted `multi_get`.
        ///
        /// # Errors
        /// [`Error::InvalidArgument`](crate::Error::InvalidArgument) if a key's group is not owned (nothing
        /// is appended then) or the state is not a value state of `N`, `V`.
        fn value_get_batch<N: StateKey, V: StateValue>(
            &self,
            state: StateId,
            ns: &N,
            keys: &[K],
            out: &mut Vec<Option<V>>,
        ) -> Result<()>;

        /// Batch primitive: sets `keys[i]` to `values[i]` in `ns` without reading (a blind write; the LSM
        /// backend writes one `WriteBatch` in row-key order). Does not change the current key.
        ///
        /// # Errors
        /// As [`StateAccess::value_get_batch`]; [`Error::InvalidArgument`](crate::Error::InvalidArgument)
        /// if the slices differ in length. On error nothing is changed.
        fn value_put_batch<N: StateKey, V: StateValue>(
            &mut self,
            state: StateId,
            ns: &N,
            keys: &[K],
            values: &[V],
        ) -> Result<()>;

        /// Batch primitive: replaces the value of each `keys[i]` in `ns` with `f(i, old)` (removes it on
        /// `None`), in the order of `keys`, with one lookup per key (a key twice in the batch sees its first
        /// result). Does not change the current key. The RocksDB backend reads with one `multi_get` and writes one
        /// `WriteBatch`.
        ///
        /// # Errors
        /// As [`StateAccess::value_get_batch`]; on an unowned key nothing is changed.
        fn value_modify_batch<N: StateKey, V: StateValue>(
            &mut self,
            state: StateId,
            ns: &N,
            keys: &[K],
            f: &mut dyn FnMut(usize, Option<&V>) -> Option<V>,
        ) -> Result<()>;

        /// Registration primitive: the state `name` of `kind` (not timers), its values `V` (a value,
        /// reduced value or accumulator; a list's elements; a map's values under user keys `UK`, which
        /// the other kinds ignore), stored as they are, or with `ttl` as [`Stamped<V>`](crate::keyed::Stamped) (`docs/ttl.md`:
        /// the backend then knows how they expire, for key listings and cleanup).
        ///
        /// # Errors
        /// As [`KeyedStateBackend::value_state`].
        fn register_state<N: StateKey, UK: StateKey, V: StateValue>(
            &mut self,
            name: &str,
            kind: StateKind,
            ttl: Option<StateTtlConfig>,
        ) -> Result<StateId>;
        /// TTL primitive: the times TTL states expire against.
        fn ttl_times(&self) -> &TtlTimes;
        /// TTL primitive: the times TTL states expire against, to change.
        fn ttl_times_mut(&mut self) -> &mut TtlTimes;
        /// TTL primitive: queues `write` of a read that restarted entries (`OnReadAndWrite`,
        /// `keyed/ttl_refresh.rs`) with `marks` of what it kept alive, read at `at` (ms), for the backend
        /// that holds the queue to apply at its next record edge, write to a TTL state or snapshot (the
        /// engine's `StateBackend` hands it to the backend inside).
        fn queue_refresh<W: RefreshWrite<K>>(
            &self,
            write: W,
            state: StateId,
            marks: &[Mark<'_>],
            at: u64,
        ) where
            Self: KeyedStateBackend<K> + Sized,
        {
            let refresh = Box::new(move |b: &mut Self| write.write(b));
            (self.ttl_times().refreshes()).push::<Self>(refresh, state.0, marks, at);
        }

        /// TTL primitive: writes what reads queued through [`StateAccess::queue_refresh`], keeping the
        /// current key (before a write to a TTL state).
        ///
        /// # Errors
        /// The first error of a queued write.
        fn write_refreshes(&mut self) -> Result<()>
        where
            Self: KeyedStateBackend<K> + Sized,
        {
            apply_refreshes_keeping_key(self)
        }

        /// Timer primitive: adds the current key's timer `(ns, timestamp)` to the timers `state` (a set).
        fn timer_register<N: StateKey>(
            &mut self,
            state: StateId,
            ns: &N,
            timestamp: u64,
        ) -> Result<()>;
        /// Timer primitive: removes the current key's timer `(ns, timestamp)`, if present.
        fn timer_delete<N: StateKey>(
            &mut self,
            state: StateId,
            ns: &N,
            timestamp: u64,
        ) -> Result<()>;
        /// Timer primitive: the earliest timestamp of `state`'s timers.
        fn timer_next<N: StateKey>(&mut self, state: StateId) -> Result<Option<u64>>;
        /// Timer primitive: how many timers `state` holds.
        fn timer_count<N: StateKey>(&mut self, state: StateId) -> Result<u64>;
        /// Timer primitive: removes the earliest timer with a timestamp up to `time` and makes its key
        /// the current key; `None` if there is none.
        fn timer_pop_due<N: StateKey>(
            &mut self,
            state: StateId,
            time: u64,
        ) -> Result<Option<Timer<K, N>>>;
    }
}
