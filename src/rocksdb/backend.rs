//! The LSM keyed state backend: state in a RocksDB instance, one column family per state.

use std::collections::HashMap;
use std::sync::Arc;

use crate::codec::byte_migration;
use crate::error::{Error, Result};
use crate::format::lsm_rows::{cf_name, decode_meta, key_prefix, push_list_element, split_list};
use crate::key_group::router::KeyRoute;
use crate::key_group::{KeyGroupRange, locate_key};
use crate::keyed::backend::{KeyedStateBackend, PendingSnapshot, StateId, StateKey, StateValue};
use crate::keyed::descriptor::{
    AggregatingStateDescriptor, ListStateDescriptor, MapStateDescriptor, ReducingStateDescriptor,
    ValueStateDescriptor,
};
use crate::keyed::identity::SubtaskIdentity;
use crate::keyed::ledger::SnapshotLedger;
use crate::keyed::map_iter::MapEntries;
use crate::keyed::state::{AggregatingState, ListState, MapState, ReducingState, ValueState};
use crate::rocksdb::checkpointing::{DiffBase, PendingUploads};
use crate::rocksdb::config::RocksDbConfig;
use crate::rocksdb::db::Db;
use crate::rocksdb::instance::InstanceDir;
use crate::rocksdb::snapshot::SnapshotTarget;
use crate::snapshot::result::SavepointFormat;
use crate::snapshot::state_meta::{StateKind, StateMeta};
use crate::storage::CheckpointStorage;

pub(crate) struct LsmState {
    pub(crate) meta: StateMeta,
    pub(crate) cf: String,
    /// Whether the job registered it; a restored state is not until then (and may still migrate).
    pub(crate) registered: bool,
    /// A migration of its rows failed while writing: some rows are in the new encoding under the old meta
    /// row. The state refuses every access and the backend every snapshot; restore the backend again.
    pub(crate) broken: bool,
}

pub(crate) struct CurrentKey<K> {
    pub(crate) key: K,
    pub(crate) key_group: u32,
    /// `[key group][key len][key]`.
    pub(crate) prefix: Vec<u8>,
}

/// Keyed state in an embedded RocksDB instance, checkpointed incrementally (see `docs/lsm.md`).
pub struct RocksDbKeyedStateBackend<K> {
    pub(crate) identity: SubtaskIdentity,
    pub(crate) config: RocksDbConfig,
    /// Identity in storage (in handles and upload names), drawn from the storage's id source at the first
    /// snapshot or restore.
    pub(crate) backend_id: Option<String>,
    /// The RocksDB instance and its working directory.
    pub(crate) db: Db,
    pub(crate) states: Vec<LsmState>,
    pub(crate) by_name: HashMap<String, StateId>,
    pub(crate) current: Option<CurrentKey<K>>,
    pub(crate) key_scratch: Vec<u8>,
    pub(crate) pending: PendingUploads,
    pub(crate) base: Option<DiffBase>,
    /// Ids snapshotted, unconfirmed and confirmed.
    pub(crate) ledger: SnapshotLedger,
    /// Finished uploads that reused the base and were aborted since the last confirmed checkpoint.
    pub(crate) aborts_reusing_base: u32,
}

impl<K: StateKey> RocksDbKeyedStateBackend<K> {
    /// An empty backend of subtask `identity`, working in a new directory of its own inside
    /// `config.local_dir` (nothing else there is touched).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] if `config` is invalid; [`Error::Local`] if the directory or the DB cannot
    /// be created.
    pub fn new(identity: SubtaskIdentity, config: RocksDbConfig) -> Result<Self> {
        config.validate()?;
        let instance = InstanceDir::create(&identity, &config)?;
        Self::open_db(identity, config, None, instance)
    }

    /// Opens (or creates) the DB in the instance directory and loads the meta information of its states.
    pub(crate) fn open_db(
        identity: SubtaskIdentity,
        config: RocksDbConfig,
        backend_id: Option<String>,
        instance: InstanceDir,
    ) -> Result<Self> {
        let db = Db::open(&config, instance)?;
        let mut backend = RocksDbKeyedStateBackend {
            identity,
            config,
            backend_id,
            db,
            states: Vec::new(),
            by_name: HashMap::new(),
            current: None,
            key_scratch: Vec::with_capacity(64),
            pending: Arc::default(),
            base: None,
            ledger: SnapshotLedger::default(),
            aborts_reusing_base: 0,
        };
        backend.load_states()?;
        Ok(backend)
    }

    fn load_states(&mut self) -> Result<()> {
        let path = self.db.instance().db().display().to_string();
        let mut metas = Vec::new();
        for value in self.db.meta_rows()? {
            metas.push(decode_meta(&value, &path)?);
        }
        for meta in metas {
            let cf = cf_name(&meta.name);
            if self.db.cf(&cf).is_none() {
                return Err(Error::corrupt(
                    &path,
                    format!("state `{}` has no column family", meta.name),
                ));
            }
            let id = StateId(self.states.len() as u32);
            self.by_name.insert(meta.name.clone(), id);
            self.states.push(LsmState {
                meta,
                cf,
                registered: false,
                broken: false,
            });
        }
        Ok(())
    }

    /// Makes `key` the current key in `key_group`; `key_scratch` holds its encoding.
    #[inline]
    pub(crate) fn set_located(&mut self, key: K, key_group: u32) {
        let mut prefix = match self.current.take() {
            Some(c) => c.prefix,
            None => Vec::with_capacity(64),
        };
        key_prefix(
            key_group,
            self.identity.max_parallelism(),
            &self.key_scratch,
            &mut prefix,
        );
        self.current = Some(CurrentKey {
            key,
            key_group,
            prefix,
        });
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
        self.backend_id.as_deref()
    }

    /// Names of all states, registered or restored.
    pub fn state_names(&self) -> Vec<String> {
        // A dropped state keeps its place (its id must stay invalid) with no column family.
        self.states
            .iter()
            .filter(|s| !s.cf.is_empty())
            .map(|s| s.meta.name.clone())
            .collect()
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

    /// Names of the column families: one per live state, and `default` (state meta information).
    pub(crate) fn column_families(&self) -> Vec<&str> {
        let live = self.states.iter().filter(|s| !s.cf.is_empty());
        live.map(|s| s.cf.as_str()).chain(["default"]).collect()
    }

    /// Flushes the memtables and compacts every column family over its whole key range (RocksDB's
    /// `CompactRange`, which flushes first): settles the DB for reads, and drops what compaction drops.
    /// Takes as long as rewriting the DB; processing waits.
    ///
    /// # Errors
    /// [`Error::Local`] naming the DB directory if a flush fails.
    pub fn compact(&self) -> Result<()> {
        self.db.compact(&self.column_families())
    }

    /// A RocksDB integer property (such as `rocksdb.num-entries-active-mem-table` or
    /// `rocksdb.estimate-live-data-size`) summed over every column family, as RocksDB's
    /// `GetAggregatedIntProperty`; `None` if RocksDB does not know the property.
    ///
    /// # Errors
    /// [`Error::Local`] naming the DB directory if RocksDB fails to read it.
    pub fn aggregated_int_property(&self, property: &str) -> Result<Option<u64>> {
        self.db.int_property(&self.column_families(), property)
    }
}

impl<K: StateKey> crate::keyed::backend::sealed::Sealed for RocksDbKeyedStateBackend<K> {}

impl<K: StateKey> KeyedStateBackend<K> for RocksDbKeyedStateBackend<K> {
    fn max_parallelism(&self) -> u32 {
        self.identity.max_parallelism()
    }

    fn key_group_range(&self) -> KeyGroupRange {
        self.identity.key_groups()
    }

    #[inline]
    fn set_current_key(&mut self, key: K) -> Result<()> {
        let key_group = locate_key(
            &key,
            &mut self.key_scratch,
            self.identity.max_parallelism(),
            self.identity.key_groups(),
        )?
        .key_group;
        self.set_located(key, key_group);
        Ok(())
    }

    #[inline]
    fn set_current_key_routed(&mut self, key: K, route: KeyRoute) -> Result<()> {
        self.set_current_key_routed_impl(key, route)
    }

    fn current_key(&self) -> Option<&K> {
        self.current.as_ref().map(|c| &c.key)
    }

    fn current_key_group(&self) -> Option<u32> {
        self.current.as_ref().map(|c| c.key_group)
    }

    fn value_state<N: StateKey, V: StateValue>(
        &mut self,
        d: &ValueStateDescriptor<N, V>,
    ) -> Result<ValueState<N, V>> {
        let meta = StateMeta::new::<K, N, V>(&d.name, StateKind::Value);
        Ok(ValueState::new(self.register(meta, byte_migration::<V>)?))
    }

    fn list_state<N: StateKey, V: StateValue>(
        &mut self,
        d: &ListStateDescriptor<N, V>,
    ) -> Result<ListState<N, V>> {
        let meta = StateMeta::new::<K, N, V>(&d.name, StateKind::List);
        Ok(ListState::new(self.register(meta, byte_migration::<V>)?))
    }

    fn map_state<N: StateKey, UK: StateKey, V: StateValue>(
        &mut self,
        d: &MapStateDescriptor<N, UK, V>,
    ) -> Result<MapState<N, UK, V>> {
        let mut meta = StateMeta::new::<K, N, V>(&d.name, StateKind::Map);
        meta.user_key_codec = UK::codec_id();
        Ok(MapState::new(self.register(meta, byte_migration::<V>)?))
    }

    fn reducing_state<N: StateKey, V: StateValue>(
        &mut self,
        d: &ReducingStateDescriptor<N, V>,
    ) -> Result<ReducingState<N, V>> {
        let meta = StateMeta::new::<K, N, V>(&d.name, StateKind::Reducing);
        Ok(ReducingState::new(
            self.register(meta, byte_migration::<V>)?,
            d.reduce.clone(),
        ))
    }

    fn aggregating_state<N: StateKey, IN, ACC: StateValue, OUT>(
        &mut self,
        d: &AggregatingStateDescriptor<N, IN, ACC, OUT>,
    ) -> Result<AggregatingState<N, IN, ACC, OUT>> {
        let meta = StateMeta::new::<K, N, ACC>(&d.name, StateKind::Aggregating);
        Ok(AggregatingState::new(
            self.register(meta, byte_migration::<ACC>)?,
            d.function.clone(),
        ))
    }

    #[inline]
    fn value_get<N: StateKey, V: StateValue>(&self, state: StateId, ns: &N) -> Result<Option<V>> {
        let mut key = Vec::with_capacity(64);
        self.row_key(ns, &mut key)?;
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
        let mut key = std::mem::take(&mut self.key_scratch);
        self.row_key(ns, &mut key)?;
        let at = key.len();
        value.encode(&mut key);
        let result = self.put_raw(state, &key[..at], &key[at..]);
        self.key_scratch = key;
        result
    }

    fn value_modify<N: StateKey, V: StateValue>(
        &mut self,
        state: StateId,
        ns: &N,
        f: &mut dyn FnMut(Option<&V>) -> Option<V>,
    ) -> Result<()> {
        let mut key = std::mem::take(&mut self.key_scratch);
        self.row_key(ns, &mut key)?;
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
        self.key_scratch = key;
        result
    }

    fn value_clear<N: StateKey, V: StateValue>(&mut self, state: StateId, ns: &N) -> Result<()> {
        let mut key = Vec::with_capacity(64);
        self.row_key(ns, &mut key)?;
        self.delete_raw(state, &key)
    }

    fn list_get<N: StateKey, V: StateValue>(
        &self,
        state: StateId,
        ns: &N,
    ) -> Result<Option<Vec<V>>> {
        let mut key = Vec::with_capacity(64);
        self.row_key(ns, &mut key)?;
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
        let mut key = Vec::with_capacity(64);
        self.row_key(ns, &mut key)?;
        let mut operand = Vec::new();
        let mut element = Vec::new();
        for v in &values {
            element.clear();
            v.encode(&mut element);
            push_list_element(&element, &mut operand);
        }
        let cf = self.cf(state)?;
        self.db.merge(cf, &key, &operand)
    }

    fn list_update<N: StateKey, V: StateValue>(
        &mut self,
        state: StateId,
        ns: &N,
        values: Vec<V>,
    ) -> Result<()> {
        let mut key = Vec::with_capacity(64);
        self.row_key(ns, &mut key)?;
        if values.is_empty() {
            return self.delete_raw(state, &key);
        }
        let mut value = Vec::new();
        let mut element = Vec::new();
        for v in &values {
            element.clear();
            v.encode(&mut element);
            push_list_element(&element, &mut value);
        }
        self.put_raw(state, &key, &value)
    }

    fn list_clear<N: StateKey, V: StateValue>(&mut self, state: StateId, ns: &N) -> Result<()> {
        let mut key = Vec::with_capacity(64);
        self.row_key(ns, &mut key)?;
        self.delete_raw(state, &key)
    }

    fn map_get<N: StateKey, UK: StateKey, V: StateValue>(
        &self,
        state: StateId,
        ns: &N,
        uk: &UK,
    ) -> Result<Option<V>> {
        let mut key = Vec::with_capacity(64);
        self.row_key(ns, &mut key)?;
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
        let mut key = Vec::with_capacity(64);
        self.row_key(ns, &mut key)?;
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
        let mut key = Vec::with_capacity(64);
        self.row_key(ns, &mut key)?;
        uk.encode(&mut key);
        self.delete_raw(state, &key)
    }

    fn map_iter<'a, N: StateKey, UK: StateKey, V: StateValue>(
        &'a self,
        state: StateId,
        ns: &N,
    ) -> Result<MapEntries<'a, UK, V>> {
        self.map_iter_impl(state, ns)
    }

    fn map_is_empty<N: StateKey, UK: StateKey, V: StateValue>(
        &self,
        state: StateId,
        ns: &N,
    ) -> Result<bool> {
        self.map_is_empty_impl(state, ns)
    }

    fn map_put_all<N: StateKey, UK: StateKey, V: StateValue>(
        &mut self,
        state: StateId,
        ns: &N,
        entries: Vec<(UK, V)>,
    ) -> Result<()> {
        self.map_put_all_impl(state, ns, entries)
    }

    fn map_retain<N: StateKey, UK: StateKey, V: StateValue>(
        &mut self,
        state: StateId,
        ns: &N,
        keep: &mut dyn FnMut(&UK, &V) -> bool,
    ) -> Result<()> {
        self.map_retain_impl(state, ns, keep)
    }

    fn map_clear<N: StateKey, UK: StateKey, V: StateValue>(
        &mut self,
        state: StateId,
        ns: &N,
    ) -> Result<()> {
        let mut prefix = Vec::with_capacity(64);
        self.row_key(ns, &mut prefix)?;
        self.delete_prefix(state, &prefix)
    }

    fn keys<N: StateKey>(&self, state: StateId, ns: &N) -> Result<Vec<K>> {
        self.keys_impl(state, ns)
    }

    fn keys_and_namespaces<N: StateKey>(&self, state: StateId) -> Result<Vec<(K, N)>> {
        self.keys_and_namespaces_impl(state)
    }

    fn drop_state(&mut self, name: &str) -> Result<bool> {
        self.drop_state_impl(name)
    }

    fn value_get_batch<N: StateKey, V: StateValue>(
        &self,
        state: StateId,
        ns: &N,
        keys: &[K],
        out: &mut Vec<Option<V>>,
    ) -> Result<()> {
        self.value_get_batch_impl(state, ns, keys, out)
    }

    fn value_put_batch<N: StateKey, V: StateValue>(
        &mut self,
        state: StateId,
        ns: &N,
        keys: &[K],
        values: &[V],
    ) -> Result<()> {
        self.value_put_batch_impl(state, ns, keys, values)
    }

    fn value_modify_batch<N: StateKey, V: StateValue>(
        &mut self,
        state: StateId,
        ns: &N,
        keys: &[K],
        f: &mut dyn FnMut(usize, Option<&V>) -> Option<V>,
    ) -> Result<()> {
        self.value_modify_batch_impl(state, ns, keys, f)
    }

    fn snapshot(
        &mut self,
        checkpoint_id: u64,
        storage: &CheckpointStorage,
    ) -> Result<PendingSnapshot> {
        self.snapshot_to(checkpoint_id, storage, SnapshotTarget::Checkpoint)
    }

    fn savepoint(
        &mut self,
        savepoint_id: u64,
        storage: &CheckpointStorage,
        format: SavepointFormat,
    ) -> Result<PendingSnapshot> {
        let target = match format {
            SavepointFormat::Canonical => SnapshotTarget::CanonicalSavepoint,
            SavepointFormat::Native => SnapshotTarget::Savepoint,
        };
        self.snapshot_to(savepoint_id, storage, target)
    }

    fn notify_checkpoint_complete(&mut self, checkpoint_id: u64) {
        self.checkpoint_confirmed(checkpoint_id);
    }

    fn notify_checkpoint_aborted(&mut self, checkpoint_id: u64) {
        self.checkpoint_aborted(checkpoint_id);
    }
}
