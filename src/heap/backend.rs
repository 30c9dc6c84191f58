//! The heap keyed state backend (as Flink's `HeapKeyedStateBackend` with `CopyOnWriteStateMap`, but with a
//! synchronous phase that does not grow with the state: see `docs/design.md`).

use std::sync::Arc;
use std::time::Instant;

use crate::error::Result;
use crate::heap::bulk;
use crate::heap::checkpoints::HeapCheckpoints;
use crate::heap::config::HeapConfig;
use crate::heap::cow_map::Logged;
use crate::heap::cursor::{KeyCursor, access_error};
use crate::heap::in_process::InProcessRecovery;
use crate::heap::serde::{ListCell, MapCell};
use crate::heap::snapshot::SnapshotJob;
use crate::heap::states::StateTables;
use crate::heap::table::{CurrentKey, StateTable, entry_hash};
use crate::heap::timers::TimerTable;
use crate::heap::ttl::IncrementalCleanup;
use crate::key_group::KeyGroupRange;
use crate::key_group::router::KeyRoute;
use crate::keyed::backend::sealed::StateAccess;
use crate::keyed::backend::{KeyedStateBackend, PendingSnapshot, StateId, StateKey, StateValue};
use crate::keyed::identity::SubtaskIdentity;
use crate::keyed::ledger::SnapshotOf;
use crate::keyed::map_iter::MapEntries;
use crate::keyed::read_refresh::{apply_refreshes_keeping_key, at_record_edge};
use crate::keyed::timers::{Timer, TimerService, TimerServiceDescriptor};
use crate::keyed::ttl::{StateTtlConfig, TtlTimes};
use crate::snapshot::result::{RestoreSources, SavepointFormat};
use crate::snapshot::state_meta::StateKind;
use crate::snapshot_io::local_copy::LocalCopies;
use crate::storage::CheckpointStorage;

type TableRef<'a, K, N, S> = (&'a StateTable<K, N, S>, &'a CurrentKey<K>);
type TableMut<'a, K, N, S> = (&'a mut StateTable<K, N, S>, &'a CurrentKey<K>);
type TimersMut<'a, K, N> = (&'a mut TimerTable<K, N>, &'a CurrentKey<K>);

/// Keyed state kept in memory in copy-on-write maps, snapshotted as full keyed snapshot files.
pub struct HeapKeyedStateBackend<K> {
    identity: SubtaskIdentity,
    config: HeapConfig,
    /// Every state, by id and name.
    states: StateTables<K>,
    /// The current key, located.
    current: KeyCursor<K>,
    /// Identity in storage, the snapshot ledger, local copies, where the restore read from.
    checkpoints: HeapCheckpoints,
    /// The times TTL states expire against.
    ttl: TtlTimes,
    /// When expired entries are cleaned up between records.
    cleanup: IncrementalCleanup,
}

impl<K: StateKey> HeapKeyedStateBackend<K> {
    /// An empty backend of subtask `identity`.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`](crate::Error::InvalidArgument) if `config` is invalid (no restore thread, a frame size outside 1 to
    /// 2^30 bytes).
    pub fn new(identity: SubtaskIdentity, config: HeapConfig) -> Result<Self> {
        config.validate()?;
        let key_groups = identity.key_groups();
        Ok(HeapKeyedStateBackend {
            identity,
            cleanup: IncrementalCleanup::new(config.ttl_cleanup_slots_per_record),
            checkpoints: HeapCheckpoints::new(
                config.local_recovery_dir.clone().map(LocalCopies::new),
                config.chain_book(key_groups, None),
            ),
            states: StateTables::new(config.incremental),
            config,
            current: KeyCursor::new(),
            ttl: TtlTimes::default(),
        })
    }

    /// A backend restored (`heap/restore.rs`): `states` holds the restored records, `checkpoints` its
    /// backend id, the ids it refuses and where the restore read from.
    ///
    /// # Errors
    /// As [`HeapKeyedStateBackend::new`].
    pub(super) fn restored(
        identity: SubtaskIdentity,
        config: HeapConfig,
        states: StateTables<K>,
        checkpoints: HeapCheckpoints,
    ) -> Result<Self> {
        let mut backend = Self::new(identity, config)?;
        backend.states = states;
        backend.checkpoints = checkpoints;
        Ok(backend)
    }

    /// Keeps a frozen version of each checkpoint from now on in `recovery`, shared by the process's heap
    /// backends, for [`HeapKeyedStateBackend::restore_in_process`] (`docs/local-recovery.md`,
    /// "In-process recovery"). Memory: each page written since the last confirmed checkpoint is held
    /// twice; writes pay about one page copy per page written in a checkpoint interval.
    pub fn set_in_process_recovery(&mut self, recovery: &InProcessRecovery) {
        self.checkpoints.set_in_process(recovery.clone());
    }

    /// The settings this backend runs with.
    pub fn config(&self) -> &HeapConfig {
        &self.config
    }

    /// The subtask this backend keeps state for.
    pub fn identity(&self) -> &SubtaskIdentity {
        &self.identity
    }

    /// Identity of this backend instance in its state handles, `<operator>-<subtask>-<16 hex>`: drawn
    /// from the checkpoint storage's id source at the first snapshot or restore (`None` before).
    pub fn backend_id(&self) -> Option<&str> {
        self.checkpoints.backend_id()
    }

    /// Where the restore that made this backend read its files: local copies (local recovery,
    /// [`HeapConfig::local_recovery_dir`]) or checkpoint storage, and why a local copy was not used.
    /// All zero for a backend that was not restored.
    pub fn restore_sources(&self) -> &RestoreSources {
        self.checkpoints.restore_sources()
    }

    /// Entries (key, namespace pairs) of all states together.
    pub fn total_entries(&self) -> usize {
        self.states.total_entries()
    }

    /// Names of all states, registered or restored.
    pub fn state_names(&self) -> Vec<String> {
        self.states.names()
    }

    /// The last checkpoint confirmed by [`KeyedStateBackend::notify_checkpoint_complete`].
    pub fn last_completed_checkpoint(&self) -> Option<u64> {
        self.checkpoints.last_completed()
    }

    /// The synchronous phase of a checkpoint or a savepoint: freezes every live state, O(key groups).
    fn sync_phase(
        &mut self,
        checkpoint_id: u64,
        storage: &CheckpointStorage,
        of: SnapshotOf,
    ) -> Result<PendingSnapshot> {
        let start = Instant::now();
        let begun = self
            .checkpoints
            .begin(checkpoint_id, of, storage, &self.identity)?;
        let (states, frozen) = self.states.freeze(&self.ttl, begun.cut);
        let keep = self.states.keep_version(begun.keep);
        let job = SnapshotJob {
            checkpoint_id,
            states,
            frozen,
            config: self.config.clone(),
            identity: self.identity.clone(),
            backend_id: begun.backend_id,
            savepoint: of == SnapshotOf::Savepoint,
            local: begun.local,
            chain: begun.chain,
            keep,
        };
        Ok(job.start(storage, start))
    }

    /// The typed table of `id`, without needing a current key.
    #[inline]
    fn typed<N: StateKey, S: 'static>(&self, id: StateId) -> Result<&StateTable<K, N, S>> {
        self.states.typed(id).ok_or_else(|| access_error(true, id))
    }

    /// The typed table of `id` and the current key.
    #[inline]
    fn table<N: StateKey, S: 'static>(&self, id: StateId) -> Result<TableRef<'_, K, N, S>> {
        self.current.with(self.states.typed(id), id)
    }

    /// The typed table of `id`, to write, and the current key.
    #[inline]
    fn table_mut<N: StateKey, S: 'static>(&mut self, id: StateId) -> Result<TableMut<'_, K, N, S>> {
        self.current.with(self.states.typed_mut(id), id)
    }

    /// The timers of `id` and the current key.
    #[inline]
    fn timers_at_key<N: StateKey>(&mut self, id: StateId) -> Result<TimersMut<'_, K, N>> {
        self.current.with(self.states.timers_mut(id), id)
    }

    /// The timers of `id`, without needing a current key.
    #[inline]
    fn timers<N: StateKey>(&mut self, id: StateId) -> Result<&mut TimerTable<K, N>> {
        self.states
            .timers_mut(id)
            .ok_or_else(|| access_error(true, id))
    }
}

impl<K: StateKey> StateAccess<K> for HeapKeyedStateBackend<K> {
    #[inline]
    fn value_get<N: StateKey, V: StateValue>(&self, state: StateId, ns: &N) -> Result<Option<V>> {
        let (t, c) = self.table::<N, V>(state)?;
        Ok(t.map
            .get(c.kg_index, entry_hash(c.key_hash, ns), &c.key, ns)
            .cloned())
    }

    #[inline]
    fn value_put<N: StateKey, V: StateValue>(
        &mut self,
        state: StateId,
        ns: &N,
        value: V,
    ) -> Result<()> {
        let (t, c) = self.table_mut::<N, V>(state)?;
        t.map
            .insert(c.kg_index, entry_hash(c.key_hash, ns), &c.key, ns, value);
        Ok(())
    }

    fn value_modify<N: StateKey, V: StateValue>(
        &mut self,
        state: StateId,
        ns: &N,
        f: &mut dyn FnMut(Option<&V>) -> Option<V>,
    ) -> Result<()> {
        let (t, c) = self.table_mut::<N, V>(state)?;
        t.map
            .modify(c.kg_index, entry_hash(c.key_hash, ns), &c.key, ns, f);
        Ok(())
    }

    fn value_clear<N: StateKey, V: StateValue>(&mut self, state: StateId, ns: &N) -> Result<()> {
        let (t, c) = self.table_mut::<N, V>(state)?;
        t.map
            .remove(c.kg_index, entry_hash(c.key_hash, ns), &c.key, ns);
        Ok(())
    }

    fn list_get<N: StateKey, V: StateValue>(
        &self,
        state: StateId,
        ns: &N,
    ) -> Result<Option<Vec<V>>> {
        let (t, c) = self.table::<N, ListCell<V>>(state)?;
        Ok(t.map
            .get(c.kg_index, entry_hash(c.key_hash, ns), &c.key, ns)
            .map(|l| l.as_ref().clone()))
    }

    fn list_add_all<N: StateKey, V: StateValue>(
        &mut self,
        state: StateId,
        ns: &N,
        values: Vec<V>,
    ) -> Result<()> {
        if values.is_empty() {
            return Ok(());
        }
        let (t, c) = self.table_mut::<N, ListCell<V>>(state)?;
        let hash = entry_hash(c.key_hash, ns);
        let append = Logged::Append(|l: &ListCell<V>| l.len());
        let list =
            (t.map).get_or_insert_logged(c.kg_index, hash, &c.key, ns, Default::default, append);
        Arc::make_mut(list).extend(values);
        Ok(())
    }

    fn list_update<N: StateKey, V: StateValue>(
        &mut self,
        state: StateId,
        ns: &N,
        values: Vec<V>,
    ) -> Result<()> {
        let (t, c) = self.table_mut::<N, ListCell<V>>(state)?;
        let hash = entry_hash(c.key_hash, ns);
        if values.is_empty() {
            t.map.remove(c.kg_index, hash, &c.key, ns);
        } else {
            t.map.insert(c.kg_index, hash, &c.key, ns, Arc::new(values));
        }
        Ok(())
    }

    fn list_clear<N: StateKey, V: StateValue>(&mut self, state: StateId, ns: &N) -> Result<()> {
        let (t, c) = self.table_mut::<N, ListCell<V>>(state)?;
        t.map
            .remove(c.kg_index, entry_hash(c.key_hash, ns), &c.key, ns);
        Ok(())
    }

    fn map_get<N: StateKey, UK: StateKey, V: StateValue>(
        &self,
        state: StateId,
        ns: &N,
        uk: &UK,
    ) -> Result<Option<V>> {
        let (t, c) = self.table::<N, MapCell<UK, V>>(state)?;
        Ok(t.map
            .get(c.kg_index, entry_hash(c.key_hash, ns), &c.key, ns)
            .and_then(|m| m.get(uk).cloned()))
    }

    fn map_put<N: StateKey, UK: StateKey, V: StateValue>(
        &mut self,
        state: StateId,
        ns: &N,
        uk: UK,
        value: V,
    ) -> Result<()> {
        let (t, c) = self.table_mut::<N, MapCell<UK, V>>(state)?;
        bulk::map_put(t, c, ns, uk, value);
        Ok(())
    }

    fn map_remove<N: StateKey, UK: StateKey, V: StateValue>(
        &mut self,
        state: StateId,
        ns: &N,
        uk: &UK,
    ) -> Result<()> {
        let (t, c) = self.table_mut::<N, MapCell<UK, V>>(state)?;
        bulk::map_remove(t, c, ns, uk);
        Ok(())
    }

    fn map_iter<'a, N: StateKey, UK: StateKey, V: StateValue>(
        &'a self,
        state: StateId,
        ns: &N,
    ) -> Result<MapEntries<'a, UK, V>> {
        Ok(bulk::map_iter(self.table::<N, MapCell<UK, V>>(state)?, ns))
    }

    fn map_is_empty<N: StateKey, UK: StateKey, V: StateValue>(
        &self,
        state: StateId,
        ns: &N,
    ) -> Result<bool> {
        Ok(bulk::map_is_empty(
            self.table::<N, MapCell<UK, V>>(state)?,
            ns,
        ))
    }

    fn map_put_all<N: StateKey, UK: StateKey, V: StateValue>(
        &mut self,
        state: StateId,
        ns: &N,
        entries: Vec<(UK, V)>,
    ) -> Result<()> {
        let (t, c) = self.table_mut::<N, MapCell<UK, V>>(state)?;
        bulk::map_put_all(t, c, ns, entries);
        Ok(())
    }

    fn map_retain<N: StateKey, UK: StateKey, V: StateValue>(
        &mut self,
        state: StateId,
        ns: &N,
        keep: &mut dyn FnMut(&UK, &V) -> bool,
    ) -> Result<()> {
        let (t, c) = self.table_mut::<N, MapCell<UK, V>>(state)?;
        bulk::map_retain(t, c, ns, keep);
        Ok(())
    }

    fn map_clear<N: StateKey, UK: StateKey, V: StateValue>(
        &mut self,
        state: StateId,
        ns: &N,
    ) -> Result<()> {
        let (t, c) = self.table_mut::<N, MapCell<UK, V>>(state)?;
        t.map
            .remove(c.kg_index, entry_hash(c.key_hash, ns), &c.key, ns);
        Ok(())
    }

    fn value_get_batch<N: StateKey, V: StateValue>(
        &self,
        state: StateId,
        ns: &N,
        keys: &[K],
        out: &mut Vec<Option<V>>,
    ) -> Result<()> {
        bulk::value_get_batch(self.typed::<N, V>(state)?, &self.identity, ns, keys, out)
    }

    fn value_put_batch<N: StateKey, V: StateValue>(
        &mut self,
        state: StateId,
        ns: &N,
        keys: &[K],
        values: &[V],
    ) -> Result<()> {
        self.records(keys.len());
        let table = self.states.typed_mut::<N, V>(state);
        let table = table.ok_or_else(|| access_error(true, state))?;
        bulk::value_put_batch(table, &self.identity, ns, keys, values)
    }

    fn value_modify_batch<N: StateKey, V: StateValue>(
        &mut self,
        state: StateId,
        ns: &N,
        keys: &[K],
        f: &mut dyn FnMut(usize, Option<&V>) -> Option<V>,
    ) -> Result<()> {
        self.records(keys.len());
        let table = self.states.typed_mut::<N, V>(state);
        let table = table.ok_or_else(|| access_error(true, state))?;
        bulk::value_modify_batch(table, &self.identity, ns, keys, f)
    }

    fn register_state<N: StateKey, UK: StateKey, V: StateValue>(
        &mut self,
        name: &str,
        kind: StateKind,
        ttl: Option<StateTtlConfig>,
    ) -> Result<StateId> {
        let groups = self.identity.key_groups().len() as usize;
        let threads = self.config.restore_threads;
        let ttl = ttl.map(|ttl| (ttl, ttl.restored_at(&self.ttl)));
        let id = (self.states).register_kind::<N, UK, V>(name, kind, ttl, groups, threads)?;
        if ttl.is_some() && self.cleanup.activate() {
            self.ttl.count_records();
        }
        Ok(id)
    }

    fn ttl_times(&self) -> &TtlTimes {
        &self.ttl
    }

    fn ttl_times_mut(&mut self) -> &mut TtlTimes {
        &mut self.ttl
    }

    #[inline]
    fn timer_register<N: StateKey>(&mut self, state: StateId, ns: &N, ts: u64) -> Result<()> {
        let (t, c) = self.timers_at_key::<N>(state)?;
        t.register(c.kg_index, c.key_hash, &c.key, ns, ts);
        Ok(())
    }

    fn timer_delete<N: StateKey>(&mut self, state: StateId, ns: &N, ts: u64) -> Result<()> {
        let (t, c) = self.timers_at_key::<N>(state)?;
        t.delete(c.kg_index, c.key_hash, &c.key, ns, ts);
        Ok(())
    }

    fn timer_next<N: StateKey>(&mut self, state: StateId) -> Result<Option<u64>> {
        Ok(self.timers::<N>(state)?.next())
    }

    fn timer_count<N: StateKey>(&mut self, state: StateId) -> Result<u64> {
        Ok(self.timers::<N>(state)?.count() as u64)
    }

    #[inline]
    fn timer_pop_due<N: StateKey>(
        &mut self,
        state: StateId,
        time: u64,
    ) -> Result<Option<Timer<K, N>>> {
        let Some(p) = self.timers::<N>(state)?.pop_due(time) else {
            return Ok(None);
        };
        let slot = p.slot;
        (self.current).set_known(slot.key.clone(), slot.key_hash, p.kg_index, &self.identity);
        Ok(Some(Timer {
            key: slot.key,
            namespace: slot.ns,
            timestamp: slot.ts,
        }))
    }
}

impl<K: StateKey> HeapKeyedStateBackend<K> {
    /// A record's edge (a new current key): records are counted, and every 1,024th record a step
    /// of incremental TTL cleanup runs (`HeapConfig::ttl_cleanup_slots_per_record`;
    /// `StateTables::clean_expired`, out of line).
    #[inline]
    fn next_record(&mut self) {
        if self.ttl.on_new_key()
            && let Some(slots) = self.cleanup.due()
        {
            self.states.clean_expired(slots, &self.ttl);
        }
    }

    /// `n` keys of a batch call, for incremental TTL cleanup.
    #[inline]
    fn records(&mut self, n: usize) {
        if let Some(slots) = self.cleanup.on_batch(n) {
            self.states.clean_expired(slots, &self.ttl);
        }
    }
}

impl<K: StateKey> KeyedStateBackend<K> for HeapKeyedStateBackend<K> {
    fn max_parallelism(&self) -> u32 {
        self.identity.max_parallelism()
    }

    fn key_group_range(&self) -> KeyGroupRange {
        self.identity.key_groups()
    }

    #[inline]
    fn set_current_key(&mut self, key: K) -> Result<()> {
        at_record_edge(self)?;
        self.next_record();
        self.current.set(key, &self.identity)
    }

    #[inline]
    fn set_current_key_routed(&mut self, key: K, route: KeyRoute) -> Result<()> {
        at_record_edge(self)?;
        self.next_record();
        self.current.set_routed(key, route, &self.identity)
    }

    fn current_key(&self) -> Option<&K> {
        self.current.get().map(|c| &c.key)
    }

    fn current_key_group(&self) -> Option<u32> {
        self.current.get().map(|c| c.key_group)
    }

    fn timer_service<N: StateKey>(
        &mut self,
        d: &TimerServiceDescriptor<N>,
    ) -> Result<TimerService<N>> {
        let groups = self.identity.key_groups().len() as usize;
        (self.states).timer_service(&d.name, groups, self.config.restore_threads)
    }

    fn keys<N: StateKey>(&self, state: StateId, ns: &N) -> Result<Vec<K>> {
        self.states.keys(state, ns, &self.ttl)
    }

    fn keys_and_namespaces<N: StateKey>(&self, state: StateId) -> Result<Vec<(K, N)>> {
        self.states.keys_and_namespaces(state, &self.ttl)
    }

    fn drop_state(&mut self, name: &str) -> Result<bool> {
        apply_refreshes_keeping_key(self)?;
        Ok(self.states.drop_state(name))
    }

    fn snapshot(
        &mut self,
        checkpoint_id: u64,
        storage: &CheckpointStorage,
    ) -> Result<PendingSnapshot> {
        apply_refreshes_keeping_key(self)?;
        self.sync_phase(checkpoint_id, storage, SnapshotOf::Checkpoint)
    }

    fn savepoint(
        &mut self,
        savepoint_id: u64,
        storage: &CheckpointStorage,
        _format: SavepointFormat,
    ) -> Result<PendingSnapshot> {
        // The heap backend's native format is the canonical one.
        apply_refreshes_keeping_key(self)?;
        self.sync_phase(savepoint_id, storage, SnapshotOf::Savepoint)
    }

    fn notify_checkpoint_complete(&mut self, checkpoint_id: u64) {
        if let Some(base) = self.checkpoints.confirmed(checkpoint_id) {
            self.states.changes_base_moved(base);
        }
    }

    fn notify_checkpoint_aborted(&mut self, checkpoint_id: u64) {
        self.checkpoints.aborted(checkpoint_id);
    }
}
