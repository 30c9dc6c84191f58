//! The LSM keyed state backend: state in a RocksDB instance, one column family per state.

use rocksdb::{ColumnFamily, DBPinnableSlice};

use crate::error::Result;
use crate::format::lsm_rows::{encode_list, split_list};
use crate::key_group::KeyGroupRange;
use crate::key_group::router::KeyRoute;
use crate::keyed::backend::sealed::StateAccess;
use crate::keyed::backend::{KeyedStateBackend, PendingSnapshot, StateId, StateKey, StateValue};
use crate::keyed::identity::SubtaskIdentity;
use crate::keyed::map_iter::MapEntries;
use crate::keyed::read_refresh::{apply_refreshes_keeping_key, at_record_edge};
use crate::keyed::timers::{
    TimeDomain, Timer, TimerService, TimerServiceDescriptor, timer_state_meta,
};
use crate::keyed::ttl::{StateTtlConfig, TtlTimes};
use crate::rocksdb::bulk;
use crate::rocksdb::config::RocksDbConfig;
use crate::rocksdb::current::CurrentKeyPrefix;
use crate::rocksdb::db::Db;
use crate::rocksdb::instance::InstanceDir;
use crate::rocksdb::memory::MemoryBudget;
use crate::rocksdb::options::Memory;
use crate::rocksdb::rows::delete_prefix;
use crate::rocksdb::snapshot::upload::SnapshotTarget;
use crate::rocksdb::snapshot::{Checkpoints, SnapshotSource};
use crate::rocksdb::states::LsmStates;
use crate::rocksdb::timers::TimerQueues;
use crate::rocksdb::ttl::{ListedRows, TtlFilters};
use crate::snapshot::result::{RestoreSources, SavepointFormat};
use crate::snapshot::state_meta::StateKind;
use crate::snapshot_io::local_copy::LocalCopies;
use crate::storage::CheckpointStorage;

/// Keyed state in an embedded RocksDB instance, checkpointed incrementally (see `docs/lsm.md`).
pub struct RocksDbKeyedStateBackend<K> {
    pub(super) identity: SubtaskIdentity,
    pub(super) config: RocksDbConfig,
    /// The RocksDB instance and its working directory.
    pub(super) db: Db,
    /// Every state, by id and name.
    pub(super) states: LsmStates,
    /// The current key and its row prefix.
    pub(super) current: CurrentKeyPrefix<K>,
    /// Snapshot ids, uploads in flight and the diff base.
    pub(super) checkpoints: Checkpoints,
    /// The cached heads of the timer queues.
    pub(super) timers: TimerQueues,
    /// The times TTL states expire against.
    pub(super) ttl: TtlTimes,
    /// Each column family's TTL, for its compaction filter.
    pub(super) filters: TtlFilters,
}

impl<K: StateKey> RocksDbKeyedStateBackend<K> {
    /// Opens (or creates) the DB in the instance directory and loads the meta information of its states;
    /// with `paused`, its column families do not compact until the DB's `resume_compactions`
    /// (`Db::open`).
    pub(crate) fn open_db(
        identity: SubtaskIdentity,
        config: RocksDbConfig,
        instance: InstanceDir,
        budget: Option<&MemoryBudget>,
        paused: bool,
    ) -> Result<Self> {
        let ttl = TtlTimes::default();
        let filters = TtlFilters::new(&ttl, identity.max_parallelism());
        let memory = Memory::of(&config, budget);
        let db = Db::open(&config, instance, filters.clone(), memory, paused)?;
        let states = LsmStates::load(&db)?;
        let timers = TimerQueues::new(&identity);
        let checkpoints = Checkpoints::new(config.local_recovery_dir.clone().map(LocalCopies::new));
        Ok(RocksDbKeyedStateBackend {
            identity,
            config,
            db,
            states,
            current: CurrentKeyPrefix::new(),
            checkpoints,
            timers,
            ttl,
            filters,
        })
    }

    /// The settings this backend runs with.
    pub fn config(&self) -> &RocksDbConfig {
        &self.config
    }

    /// The subtask this backend keeps state for.
    pub fn identity(&self) -> &SubtaskIdentity {
        &self.identity
    }

    /// Identity of this backend instance in its state handles and upload names,
    /// `<operator>-<subtask>-<16 hex>`: drawn from the checkpoint storage's id source at the first snapshot
    /// or restore, kept by a CLAIM restore of the same key groups (`None` before).
    pub fn backend_id(&self) -> Option<&str> {
        self.checkpoints.backend_id()
    }

    /// Where the restore that made this backend read its files: local copies (local recovery,
    /// [`RocksDbConfig::local_recovery_dir`]) or checkpoint storage, and why a local copy was not used.
    /// All zero for a backend that was not restored.
    pub fn restore_sources(&self) -> &RestoreSources {
        self.checkpoints.restore_sources()
    }

    /// Names of all states, registered or restored.
    pub fn state_names(&self) -> Vec<String> {
        self.states.names()
    }

    /// Entries of all states, as RocksDB estimates them (`rocksdb.estimate-num-keys`; map entries count one
    /// each).
    pub fn estimated_entries(&self) -> u64 {
        self.states.estimated_entries(&self.db)
    }

    /// The backend's own working directory inside `config().local_dir` (removed when it is dropped).
    pub fn instance_dir(&self) -> &std::path::Path {
        self.db.instance().path()
    }

    /// The underlying RocksDB instance, for this crate's benches (raw-RocksDB baselines); not part of the
    /// public API (`internals` feature).
    #[cfg(feature = "internals")]
    #[doc(hidden)]
    pub fn db(&self) -> &rocksdb::DB {
        self.db.raw()
    }

    /// The last checkpoint confirmed by [`KeyedStateBackend::notify_checkpoint_complete`].
    pub fn last_completed_checkpoint(&self) -> Option<u64> {
        self.checkpoints.last_completed()
    }

    /// Checkpoint whose files are the current diff base, if any.
    pub fn diff_base_checkpoint(&self) -> Option<u64> {
        self.checkpoints.diff_base()
    }

    /// The synchronous phase of a checkpoint or savepoint of `target`.
    fn snapshot_to(
        &mut self,
        checkpoint_id: u64,
        storage: &CheckpointStorage,
        target: SnapshotTarget,
    ) -> Result<PendingSnapshot> {
        // Timer writes still pending belong to this snapshot.
        let (db, states) = (&self.db, &self.states);
        self.timers.flush_all(db, |id| states.timer_cf(db, id))?;
        let source = SnapshotSource {
            db: &self.db,
            states: &self.states,
            identity: &self.identity,
            config: &self.config,
            ttl: &self.ttl,
        };
        self.checkpoints
            .sync_phase(source, checkpoint_id, storage, target)
    }

    /// The column family of state `id`.
    #[inline]
    pub(crate) fn cf(&self, id: StateId) -> Result<&ColumnFamily> {
        self.states.cf(&self.db, id)
    }

    /// Row key of the current key in `ns`, in a new buffer (map rows append the user key).
    #[inline]
    fn new_row_key<N: StateKey>(&self, ns: &N) -> Result<Vec<u8>> {
        let mut key = Vec::with_capacity(64);
        self.current.row_key(ns, &mut key)?;
        Ok(key)
    }

    #[inline]
    fn get_raw(&self, id: StateId, key: &[u8]) -> Result<Option<DBPinnableSlice<'_>>> {
        self.db.get(self.cf(id)?, key)
    }

    #[inline]
    fn put_raw(&self, id: StateId, key: &[u8], value: &[u8]) -> Result<()> {
        self.db.put(self.cf(id)?, key, value)
    }

    #[inline]
    fn delete_raw(&self, id: StateId, key: &[u8]) -> Result<()> {
        self.db.delete(self.cf(id)?, key)
    }

    /// Which rows of state `id` a key listing counts now (`rocksdb/ttl.rs`): `None` for all.
    fn listed_rows(&self, id: StateId) -> Option<ListedRows> {
        let state = self.states.get(id)?;
        ListedRows::at(id, state.meta.kind, state.ttl, &self.ttl)
    }

    /// Flushes the memtables and compacts every column family over its whole key range (RocksDB's
    /// `CompactRange`, which flushes first): settles the DB for reads, and drops what compaction drops.
    /// Takes as long as rewriting the DB; processing waits.
    ///
    /// # Errors
    /// [`Error::Local`](crate::Error::Local) naming the DB directory if a flush fails.
    pub fn compact(&self) -> Result<()> {
        self.db.compact(&self.states.column_families())
    }

    /// A RocksDB integer property (such as `rocksdb.num-entries-active-mem-table` or
    /// `rocksdb.estimate-live-data-size`) summed over every column family, as RocksDB's
    /// `GetAggregatedIntProperty`; `None` if RocksDB does not know the property.
    ///
    /// # Errors
    /// [`Error::Local`](crate::Error::Local) naming the DB directory if RocksDB fails to read it.
    pub fn aggregated_int_property(&self, property: &str) -> Result<Option<u64>> {
        self.db
            .int_property(&self.states.column_families(), property)
    }
}

impl<K: StateKey> StateAccess<K> for RocksDbKeyedStateBackend<K> {
    #[inline]
    fn value_get<N: StateKey, V: StateValue>(&self, state: StateId, ns: &N) -> Result<Option<V>> {
        let key = self.new_row_key(ns)?;
        match self.get_raw(state, &key)? {
            Some(bytes) => V::decode(&bytes).map(Some),
            None => Ok(None),
        }
    }

    #[inline]
    fn value_put<N: StateKey, V: StateValue>(
        &mut self,
        state: StateId,
        ns: &N,
        value: V,
    ) -> Result<()> {
        let mut key = self.current.take_buffer();
        self.current.row_key(ns, &mut key)?;
        let at = key.len();
        value.encode(&mut key);
        let result = self.put_raw(state, &key[..at], &key[at..]);
        self.current.give_back(key);
        result
    }

    fn value_modify<N: StateKey, V: StateValue>(
        &mut self,
        state: StateId,
        ns: &N,
        f: &mut dyn FnMut(Option<&V>) -> Option<V>,
    ) -> Result<()> {
        let mut key = self.current.take_buffer();
        self.current.row_key(ns, &mut key)?;
        let old = match self.get_raw(state, &key)? {
            Some(bytes) => Some(V::decode(&bytes)?),
            None => None,
        };
        let result = match f(old.as_ref()) {
            Some(new) => {
                let at = key.len();
                new.encode(&mut key);
                self.put_raw(state, &key[..at], &key[at..])
            }
            None if old.is_some() => self.delete_raw(state, &key),
            None => Ok(()),
        };
        self.current.give_back(key);
        result
    }

    fn value_clear<N: StateKey, V: StateValue>(&mut self, state: StateId, ns: &N) -> Result<()> {
        let key = self.new_row_key(ns)?;
        self.delete_raw(state, &key)
    }

    fn list_get<N: StateKey, V: StateValue>(
        &self,
        state: StateId,
        ns: &N,
    ) -> Result<Option<Vec<V>>> {
        let key = self.new_row_key(ns)?;
        let Some(bytes) = self.get_raw(state, &key)? else {
            return Ok(None);
        };
        let values = split_list(&bytes)?
            .into_iter()
            .map(V::decode)
            .collect::<Result<Vec<V>>>()?;
        Ok((!values.is_empty()).then_some(values))
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
        let key = self.new_row_key(ns)?;
        self.db.merge(self.cf(state)?, &key, &encode_list(&values))
    }

    fn list_update<N: StateKey, V: StateValue>(
        &mut self,
        state: StateId,
        ns: &N,
        values: Vec<V>,
    ) -> Result<()> {
        let key = self.new_row_key(ns)?;
        if values.is_empty() {
            return self.delete_raw(state, &key);
        }
        self.put_raw(state, &key, &encode_list(&values))
    }

    fn list_clear<N: StateKey, V: StateValue>(&mut self, state: StateId, ns: &N) -> Result<()> {
        let key = self.new_row_key(ns)?;
        self.delete_raw(state, &key)
    }

    fn map_get<N: StateKey, UK: StateKey, V: StateValue>(
        &self,
        state: StateId,
        ns: &N,
        uk: &UK,
    ) -> Result<Option<V>> {
        let mut key = self.new_row_key(ns)?;
        uk.encode(&mut key);
        match self.get_raw(state, &key)? {
            Some(bytes) => V::decode(&bytes).map(Some),
            None => Ok(None),
        }
    }

    fn map_put<N: StateKey, UK: StateKey, V: StateValue>(
        &mut self,
        state: StateId,
        ns: &N,
        uk: UK,
        value: V,
    ) -> Result<()> {
        let mut key = self.new_row_key(ns)?;
        uk.encode(&mut key);
        let mut bytes = Vec::new();
        value.encode(&mut bytes);
        self.put_raw(state, &key, &bytes)
    }

    fn map_remove<N: StateKey, UK: StateKey, V: StateValue>(
        &mut self,
        state: StateId,
        ns: &N,
        uk: &UK,
    ) -> Result<()> {
        let mut key = self.new_row_key(ns)?;
        uk.encode(&mut key);
        self.delete_raw(state, &key)
    }

    fn map_iter<'a, N: StateKey, UK: StateKey, V: StateValue>(
        &'a self,
        state: StateId,
        ns: &N,
    ) -> Result<MapEntries<'a, UK, V>> {
        let prefix = self.new_row_key(ns)?;
        Ok(bulk::map_iter(&self.db, self.cf(state)?, prefix))
    }

    fn map_is_empty<N: StateKey, UK: StateKey, V: StateValue>(
        &self,
        state: StateId,
        ns: &N,
    ) -> Result<bool> {
        let prefix = self.new_row_key(ns)?;
        bulk::map_is_empty(&self.db, self.cf(state)?, &prefix)
    }

    fn map_put_all<N: StateKey, UK: StateKey, V: StateValue>(
        &mut self,
        state: StateId,
        ns: &N,
        entries: Vec<(UK, V)>,
    ) -> Result<()> {
        let prefix = self.new_row_key(ns)?;
        bulk::map_put_all(&self.db, self.cf(state)?, &prefix, entries)
    }

    fn map_retain<N: StateKey, UK: StateKey, V: StateValue>(
        &mut self,
        state: StateId,
        ns: &N,
        keep: &mut dyn FnMut(&UK, &V) -> bool,
    ) -> Result<()> {
        let prefix = self.new_row_key(ns)?;
        bulk::map_retain(&self.db, self.cf(state)?, &prefix, keep)
    }

    fn map_clear<N: StateKey, UK: StateKey, V: StateValue>(
        &mut self,
        state: StateId,
        ns: &N,
    ) -> Result<()> {
        let prefix = self.new_row_key(ns)?;
        delete_prefix(&self.db, self.cf(state)?, &prefix)
    }

    fn value_get_batch<N: StateKey, V: StateValue>(
        &self,
        state: StateId,
        ns: &N,
        keys: &[K],
        out: &mut Vec<Option<V>>,
    ) -> Result<()> {
        bulk::value_get_batch(&self.db, self.cf(state)?, &self.identity, ns, keys, out)
    }

    fn value_put_batch<N: StateKey, V: StateValue>(
        &mut self,
        state: StateId,
        ns: &N,
        keys: &[K],
        values: &[V],
    ) -> Result<()> {
        bulk::value_put_batch(&self.db, self.cf(state)?, &self.identity, ns, keys, values)
    }

    fn value_modify_batch<N: StateKey, V: StateValue>(
        &mut self,
        state: StateId,
        ns: &N,
        keys: &[K],
        f: &mut dyn FnMut(usize, Option<&V>) -> Option<V>,
    ) -> Result<()> {
        bulk::value_modify_batch(&self.db, self.cf(state)?, &self.identity, ns, keys, f)
    }

    fn register_state<N: StateKey, UK: StateKey, V: StateValue>(
        &mut self,
        name: &str,
        kind: StateKind,
        ttl: Option<StateTtlConfig>,
    ) -> Result<StateId> {
        let at = ttl.map_or(0, |ttl| ttl.restored_at(&self.ttl));
        let db = &mut self.db;
        let id = (self.states).register_kind::<K, N, UK, V>(db, name, kind, ttl, at)?;
        let cf = &self.states.get_mut(id).cf;
        self.filters.set(cf, id, kind, ttl);
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
        let cf = self.states.timer_cf_later(&self.db, state)?;
        let current = &mut self.current;
        (self.timers).write(&self.db, &cf, state, current, ns, ts, true)
    }

    fn timer_delete<N: StateKey>(&mut self, state: StateId, ns: &N, ts: u64) -> Result<()> {
        let cf = self.states.timer_cf_later(&self.db, state)?;
        let current = &mut self.current;
        (self.timers).write(&self.db, &cf, state, current, ns, ts, false)
    }

    fn timer_next<N: StateKey>(&mut self, state: StateId) -> Result<Option<u64>> {
        let cf = self.states.timer_cf_later(&self.db, state)?;
        self.timers.next(&self.db, &cf, state)
    }

    fn timer_count<N: StateKey>(&mut self, state: StateId) -> Result<u64> {
        let cf = self.states.timer_cf(&self.db, state)?;
        self.timers.count(&self.db, cf, state)
    }

    #[inline]
    fn timer_pop_due<N: StateKey>(
        &mut self,
        id: StateId,
        time: u64,
    ) -> Result<Option<Timer<K, N>>> {
        let cf = self.states.timer_cf_later(&self.db, id)?;
        (self.timers).pop_due(&self.db, &cf, id, time, &mut self.current)
    }
}

impl<K: StateKey> KeyedStateBackend<K> for RocksDbKeyedStateBackend<K> {
    fn max_parallelism(&self) -> u32 {
        self.identity.max_parallelism()
    }

    fn key_group_range(&self) -> KeyGroupRange {
        self.identity.key_groups()
    }

    #[inline]
    fn set_current_key(&mut self, key: K) -> Result<()> {
        at_record_edge(self)?;
        let _ = self.ttl.on_new_key();
        self.current.set(key, &self.identity)
    }

    #[inline]
    fn set_current_key_routed(&mut self, key: K, route: KeyRoute) -> Result<()> {
        at_record_edge(self)?;
        let _ = self.ttl.on_new_key();
        self.current.set_routed(key, route, &self.identity)
    }

    fn current_key(&self) -> Option<&K> {
        self.current.key()
    }

    fn current_key_group(&self) -> Option<u32> {
        self.current.key_group()
    }

    fn timer_service<N: StateKey>(
        &mut self,
        d: &TimerServiceDescriptor<N>,
    ) -> Result<TimerService<N>> {
        let [event, processing] = [TimeDomain::EventTime, TimeDomain::ProcessingTime]
            .map(|domain| timer_state_meta::<K, N>(&d.name, domain));
        let (event, processing) = self
            .states
            .register_timers(&mut self.db, event, processing)?;
        Ok(TimerService::new(event, processing))
    }

    fn keys<N: StateKey>(&self, state: StateId, ns: &N) -> Result<Vec<K>> {
        self.states.check_namespace::<N>(state)?;
        let rows = self.listed_rows(state);
        bulk::keys(&self.db, self.cf(state)?, &self.identity, ns, rows.as_ref())
    }

    fn keys_and_namespaces<N: StateKey>(&self, state: StateId) -> Result<Vec<(K, N)>> {
        self.states.check_namespace::<N>(state)?;
        let rows = self.listed_rows(state);
        bulk::keys_and_namespaces(&self.db, self.cf(state)?, &self.identity, rows.as_ref())
    }

    fn drop_state(&mut self, name: &str) -> Result<bool> {
        apply_refreshes_keeping_key(self)?;
        if let Some(id) = self.states.find(name) {
            self.timers.forget(id);
            if let Some(state) = self.states.get(id) {
                self.filters.set(&state.cf, id, state.meta.kind, None);
            }
        }
        self.states.drop_state(&mut self.db, name)
    }

    fn snapshot(
        &mut self,
        checkpoint_id: u64,
        storage: &CheckpointStorage,
    ) -> Result<PendingSnapshot> {
        apply_refreshes_keeping_key(self)?;
        self.snapshot_to(checkpoint_id, storage, SnapshotTarget::Checkpoint)
    }

    fn savepoint(
        &mut self,
        savepoint_id: u64,
        storage: &CheckpointStorage,
        format: SavepointFormat,
    ) -> Result<PendingSnapshot> {
        apply_refreshes_keeping_key(self)?;
        self.snapshot_to(savepoint_id, storage, SnapshotTarget::savepoint(format))
    }

    fn notify_checkpoint_complete(&mut self, checkpoint_id: u64) {
        self.checkpoints.confirmed(checkpoint_id);
    }

    fn notify_checkpoint_aborted(&mut self, checkpoint_id: u64) {
        self.checkpoints.aborted(checkpoint_id);
    }
}
