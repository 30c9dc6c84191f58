//! The LSM keyed state backend: state in a RocksDB instance, one column family per state.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Instant;

use parking_lot::Mutex;
use rocksdb::{Cache, ColumnFamily, DB, Options, ReadOptions, WriteBatch, WriteOptions};

use crate::checkpoint::handle::StateFile;
use crate::error::{Error, Result};
use crate::keyed::backend::{KeyedStateBackend, PendingSnapshot, StateId, StateKey, StateValue};
use crate::keyed::descriptor::{
    AggregatingStateDescriptor, ListStateDescriptor, MapStateDescriptor, ReducingStateDescriptor,
    StateKind, StateMeta, ValueStateDescriptor,
};
use crate::keyed::key_group::{KeyGroupRange, locate_key};
use crate::keyed::state::{AggregatingState, ListState, MapState, ReducingState, ValueState};
use crate::lsm::keys::{
    cf_name, decode_meta, encode_meta, key_prefix, meta_key, push_list_element, push_namespace,
    split_list, split_row_key,
};
use crate::lsm::options::{LsmBackendConfig, cf_descriptors, lsm_db_options};
use crate::lsm::snapshot::{SnapshotTarget, UploadGuard, UploadJob};
use crate::storage::CheckpointStorage;

/// Aborted checkpoints in a row that reused the diff base after which the backend rebases.
const REBASE_AFTER_ABORTS: u32 = 3;

/// Unresolved checkpoints an LSM backend remembers.
const MAX_PENDING_UPLOADS: usize = 64;

/// Converts a RocksDB error.
pub(crate) fn db_error(what: impl std::fmt::Display, e: rocksdb::Error) -> Error {
    Error::local(what.to_string(), e)
}

pub(crate) struct LsmState {
    pub(crate) meta: StateMeta,
    pub(crate) cf: String,
}

struct CurrentKey<K> {
    key: K,
    key_group: u32,
    /// `[key group][key len][key]`.
    prefix: Vec<u8>,
}

/// Files of a checkpoint's asynchronous phase, by local SST name; `None` while it runs.
#[derive(Default)]
pub(crate) struct PendingUpload {
    pub(crate) aborted: bool,
    pub(crate) shared: Option<HashMap<String, StateFile>>,
    /// Whether the upload reused files of the diff base (set when it finished).
    pub(crate) reused_base: bool,
}

/// Checkpoints whose asynchronous phase ran or runs, not yet confirmed or aborted. Shared with the
/// asynchronous phases.
pub(crate) type PendingUploads = Arc<Mutex<BTreeMap<u64, PendingUpload>>>;

/// The diff base: the shared files of the last confirmed checkpoint, by local SST name.
#[derive(Debug, Clone, Default)]
pub(crate) struct DiffBase {
    pub(crate) checkpoint_id: u64,
    pub(crate) shared: HashMap<String, StateFile>,
}

/// Keyed state in an embedded RocksDB instance, checkpointed incrementally (see `docs/lsm.md`).
pub struct LsmKeyedStateBackend<K> {
    pub(crate) config: LsmBackendConfig,
    pub(crate) backend_id: String,
    pub(crate) db: DB,
    pub(crate) options: Options,
    pub(crate) _cache: Cache,
    pub(crate) states: Vec<LsmState>,
    pub(crate) by_name: HashMap<String, StateId>,
    current: Option<CurrentKey<K>>,
    key_scratch: Vec<u8>,
    pub(crate) write_options: WriteOptions,
    read_options: ReadOptions,
    pub(crate) pending: PendingUploads,
    pub(crate) base: Option<DiffBase>,
    last_completed_checkpoint: Option<u64>,
    /// The highest id snapshotted or restored from: a snapshot id must exceed it.
    pub(crate) last_snapshot_id: Option<u64>,
    /// Finished uploads that reused the base and were aborted since the last confirmed checkpoint.
    aborts_reusing_base: u32,
    /// Declared last: fields drop in order, so the DB is closed before its directory is removed.
    pub(crate) instance: InstanceDir,
}

/// The backend's own working directory inside `LsmBackendConfig::local_dir`, created new and removed when
/// the backend is dropped (as Flink disposes a RocksDB instance directory): local state is disposable,
/// checkpoints are what lasts. Nothing else in `local_dir` is ever touched.
pub(crate) struct InstanceDir(std::path::PathBuf);

impl InstanceDir {
    /// Creates `<local_dir>/<operator>-<subtask>-<random>`; a name that exists already is never reused.
    pub(crate) fn create(config: &LsmBackendConfig) -> Result<Self> {
        std::fs::create_dir_all(&config.local_dir)
            .map_err(|e| Error::local(config.local_dir.display(), e))?;
        let dir = tempfile::Builder::new()
            .prefix(&format!("{}-{}-", config.operator_id, config.subtask_index))
            .rand_bytes(12)
            .tempdir_in(&config.local_dir)
            .map_err(|e| Error::local(config.local_dir.display(), e))?
            .keep();
        Ok(InstanceDir(dir))
    }

    pub(crate) fn path(&self) -> &std::path::Path {
        &self.0
    }

    /// The DB's directory.
    pub(crate) fn db(&self) -> std::path::PathBuf {
        self.0.join("db")
    }

    /// Where the native checkpoint of `checkpoint_id` is taken.
    pub(crate) fn checkpoint(&self, checkpoint_id: u64) -> std::path::PathBuf {
        self.0
            .join("checkpoints")
            .join(format!("chk-{checkpoint_id}"))
    }
}

impl Drop for InstanceDir {
    fn drop(&mut self) {
        if let Err(e) = remove_dir_if_exists(&self.0) {
            tracing::warn!(dir = %self.0.display(), error = %e, "could not remove the local state directory");
        }
    }
}

fn no_current_key() -> Error {
    Error::IllegalState("no current key: call set_current_key first".into())
}

fn wrong_state(id: StateId) -> Error {
    Error::InvalidArgument(format!("state {} is not registered in this backend", id.0))
}

pub(crate) fn new_backend_id(config: &LsmBackendConfig) -> String {
    format!(
        "{}-{}-{:016x}",
        config.operator_id,
        config.subtask_index,
        crate::clock::random_u64()
    )
}

impl<K: StateKey> LsmKeyedStateBackend<K> {
    /// An empty backend, working in a new directory of its own inside `config.local_dir` (nothing else
    /// there is touched).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] if `config` is invalid; [`Error::Local`] if the directory or the DB cannot
    /// be created.
    pub fn new(config: LsmBackendConfig) -> Result<Self> {
        config.validate()?;
        let instance = InstanceDir::create(&config)?;
        let backend_id = new_backend_id(&config);
        Self::open_db(config, backend_id, instance)
    }

    /// Opens (or creates) the DB in the instance directory and loads the meta information of its states.
    pub(crate) fn open_db(
        config: LsmBackendConfig,
        backend_id: String,
        instance: InstanceDir,
    ) -> Result<Self> {
        let dir = instance.db();
        std::fs::create_dir_all(&dir).map_err(|e| Error::local(dir.display().to_string(), e))?;
        let (options, cache) = lsm_db_options(&config);
        let cfs = if dir.join("CURRENT").exists() {
            DB::list_cf(&options, &dir).map_err(|e| db_error(dir.display(), e))?
        } else {
            vec!["default".to_string()]
        };
        let db = DB::open_cf_descriptors(&options, &dir, cf_descriptors(&cfs, &options))
            .map_err(|e| db_error(dir.display(), e))?;
        let mut backend = LsmKeyedStateBackend {
            config,
            backend_id,
            db,
            options,
            _cache: cache,
            states: Vec::new(),
            by_name: HashMap::new(),
            current: None,
            key_scratch: Vec::with_capacity(64),
            write_options: {
                let mut w = WriteOptions::default();
                w.disable_wal(true);
                w
            },
            read_options: ReadOptions::default(),
            pending: Arc::default(),
            base: None,
            last_completed_checkpoint: None,
            last_snapshot_id: None,
            aborts_reusing_base: 0,
            instance,
        };
        backend.load_states()?;
        Ok(backend)
    }

    fn load_states(&mut self) -> Result<()> {
        let path = self.instance.db().display().to_string();
        let mut metas = Vec::new();
        for item in self.db.prefix_iterator(b"meta:") {
            let (key, value) = item.map_err(|e| db_error(&path, e))?;
            if !key.starts_with(b"meta:") {
                break;
            }
            metas.push(decode_meta(&value, &path)?);
        }
        for meta in metas {
            let cf = cf_name(&meta.name);
            if self.db.cf_handle(&cf).is_none() {
                return Err(Error::corrupt(
                    &path,
                    format!("state `{}` has no column family", meta.name),
                ));
            }
            let id = StateId(self.states.len() as u32);
            self.by_name.insert(meta.name.clone(), id);
            self.states.push(LsmState { meta, cf });
        }
        Ok(())
    }

    /// The settings this backend runs with.
    pub fn config(&self) -> &LsmBackendConfig {
        &self.config
    }

    /// Identity of this backend instance (recorded in its state handles and upload names).
    pub fn backend_id(&self) -> &str {
        &self.backend_id
    }

    /// Names of all states, registered or restored.
    pub fn state_names(&self) -> Vec<String> {
        self.states.iter().map(|s| s.meta.name.clone()).collect()
    }

    /// The last checkpoint confirmed by [`KeyedStateBackend::notify_checkpoint_complete`].
    pub fn last_completed_checkpoint(&self) -> Option<u64> {
        self.last_completed_checkpoint
    }

    /// The backend's own working directory inside `config().local_dir` (removed when it is dropped).
    pub fn instance_dir(&self) -> &std::path::Path {
        self.instance.path()
    }

    /// Checkpoint whose files are the current diff base, if any.
    pub fn diff_base_checkpoint(&self) -> Option<u64> {
        self.base.as_ref().map(|b| b.checkpoint_id)
    }

    /// The underlying RocksDB instance (read-only use: properties, statistics).
    pub fn db(&self) -> &DB {
        &self.db
    }

    /// Takes a native savepoint: like a checkpoint, but every file is uploaded (self-contained, private,
    /// under `savepoints/sp-<id>/`) and it never becomes the diff base (FLINK-23949), whatever the engine
    /// later notifies for `savepoint_id`.
    ///
    /// # Errors
    /// As [`KeyedStateBackend::snapshot`].
    pub fn savepoint(
        &mut self,
        savepoint_id: u64,
        storage: &CheckpointStorage,
    ) -> Result<PendingSnapshot> {
        self.snapshot_to(savepoint_id, storage, SnapshotTarget::Savepoint)
    }

    fn snapshot_to(
        &mut self,
        checkpoint_id: u64,
        storage: &CheckpointStorage,
        target: SnapshotTarget,
    ) -> Result<PendingSnapshot> {
        let start = Instant::now();
        crate::heap::backend::check_snapshot_id(checkpoint_id, self.last_snapshot_id)?;
        self.last_snapshot_id = Some(checkpoint_id);
        let local = self.instance.checkpoint(checkpoint_id);
        remove_dir_if_exists(&local)?;
        if let Some(parent) = local.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|e| Error::local(parent.display().to_string(), e))?;
        }
        // The WAL is off, so every memtable must be flushed for the native checkpoint to hold all state.
        // `create_checkpoint` does that itself: the `rocksdb` crate passes `log_size_for_flush = 0`, which
        // means "always flush every column family". A flush of our own before it would be a second wait for
        // RocksDB's stall condition (an empty flush still waits while one more L0 file would stall writes),
        // which made 0.5 s tails in `benches/incremental.rs`.
        self.native_checkpoint(&local)?;
        if !self.memtables_empty() {
            // Should `create_checkpoint` ever skip its flush (facebook/rocksdb#14193 is about its
            // threshold), flush explicitly and take the native checkpoint again.
            tracing::warn!(
                checkpoint_id,
                "the native checkpoint left memtables unflushed; flushing and taking it again"
            );
            let cfs = self.column_families();
            let mut flush = rocksdb::FlushOptions::default();
            flush.set_wait(true);
            self.db
                .flush_cfs_opt(&cfs, &flush)
                .map_err(|e| db_error("flush before checkpoint", e))?;
            remove_dir_if_exists(&local)?;
            self.native_checkpoint(&local)?;
        }
        let base = match target {
            SnapshotTarget::Checkpoint => {
                let mut pending = self.pending.lock();
                pending.insert(checkpoint_id, PendingUpload::default());
                // Bounded: uploads never confirmed nor aborted (lost notifications) are forgotten oldest
                // first; a late confirmation of one is then ignored and the base stays older (still
                // registered, or the next decline rebases).
                while pending.len() > MAX_PENDING_UPLOADS {
                    pending.pop_first();
                }
                drop(pending);
                self.base.clone()
            }
            SnapshotTarget::Savepoint => None,
        };
        let sync_duration = start.elapsed();
        let guard = UploadGuard {
            dir: local.clone(),
            pending: (target == SnapshotTarget::Checkpoint)
                .then(|| (self.pending.clone(), checkpoint_id)),
        };
        let job = UploadJob {
            checkpoint_id,
            target,
            local_dir: local,
            _guard: guard,
            base,
            pending: self.pending.clone(),
            storage: storage.clone(),
            backend_id: self.backend_id.clone(),
            operator_id: self.config.operator_id.clone(),
            subtask_index: self.config.subtask_index,
            max_parallelism: self.config.max_parallelism,
            key_groups: self.config.key_groups,
            concurrency: self.config.transfer_concurrency,
            entries: self.estimated_entries(),
        };
        Ok(PendingSnapshot::new(
            checkpoint_id,
            sync_duration,
            job.run(sync_duration),
        ))
    }

    /// A native RocksDB checkpoint (hard links of the SSTs, copies of the other files) into `dir`, which must
    /// not exist.
    fn native_checkpoint(&self, dir: &std::path::Path) -> Result<()> {
        rocksdb::checkpoint::Checkpoint::new(&self.db)
            .and_then(|c| c.create_checkpoint(dir))
            .map_err(|e| db_error(dir.display(), e))
    }

    /// Every column family: one per state, and `default` (state meta information).
    fn column_families(&self) -> Vec<&ColumnFamily> {
        let mut cfs: Vec<&ColumnFamily> = self
            .states
            .iter()
            .filter_map(|s| self.db.cf_handle(&s.cf))
            .collect();
        cfs.extend(self.db.cf_handle("default"));
        cfs
    }

    /// Whether no column family has an entry in a memtable (active or immutable), so that the SST files
    /// hold all state. A property RocksDB cannot give counts as not empty.
    pub(crate) fn memtables_empty(&self) -> bool {
        self.column_families().into_iter().all(|cf| {
            [
                "rocksdb.num-entries-active-mem-table",
                "rocksdb.num-entries-imm-mem-tables",
            ]
            .iter()
            .all(|p| self.db.property_int_value_cf(cf, *p).ok().flatten() == Some(0))
        })
    }

    /// Entries of all states, as RocksDB estimates them (`rocksdb.estimate-num-keys`; map entries count one
    /// each).
    pub fn estimated_entries(&self) -> u64 {
        self.states
            .iter()
            .filter_map(|s| self.db.cf_handle(&s.cf))
            .filter_map(|cf| {
                self.db
                    .property_int_value_cf(cf, "rocksdb.estimate-num-keys")
                    .ok()
                    .flatten()
            })
            .sum()
    }

    pub(crate) fn register(&mut self, meta: StateMeta) -> Result<StateId> {
        if let Some(&id) = self.by_name.get(&meta.name) {
            meta.check_compatible(&self.states[id.0 as usize].meta)?;
            return Ok(id);
        }
        let cf = cf_name(&meta.name);
        self.db
            .create_cf(&cf, &self.options)
            .map_err(|e| db_error(format!("column family {cf}"), e))?;
        self.db
            .put_opt(
                meta_key(&meta.name),
                encode_meta(&meta),
                &self.write_options,
            )
            .map_err(|e| db_error("state meta", e))?;
        let id = StateId(self.states.len() as u32);
        self.by_name.insert(meta.name.clone(), id);
        self.states.push(LsmState { meta, cf });
        Ok(id)
    }

    #[inline]
    fn cf(&self, id: StateId) -> Result<&ColumnFamily> {
        let state = self
            .states
            .get(id.0 as usize)
            .ok_or_else(|| wrong_state(id))?;
        self.db.cf_handle(&state.cf).ok_or_else(|| wrong_state(id))
    }

    /// Row key of the current key in `ns` (plus `user_key` bytes for map rows) in the scratch buffer.
    #[inline]
    fn row_key<N: StateKey>(&self, ns: &N, scratch: &mut Vec<u8>) -> Result<()> {
        let current = self.current.as_ref().ok_or_else(no_current_key)?;
        scratch.clear();
        scratch.extend_from_slice(&current.prefix);
        push_namespace(scratch, |out| ns.encode(out));
        Ok(())
    }

    fn get_raw(&self, id: StateId, key: &[u8]) -> Result<Option<rocksdb::DBPinnableSlice<'_>>> {
        let cf = self.cf(id)?;
        self.db
            .get_pinned_cf_opt(cf, key, &self.read_options)
            .map_err(|e| db_error("get", e))
    }

    fn put_raw(&self, id: StateId, key: &[u8], value: &[u8]) -> Result<()> {
        let cf = self.cf(id)?;
        self.db
            .put_cf_opt(cf, key, value, &self.write_options)
            .map_err(|e| db_error("put", e))
    }

    fn delete_raw(&self, id: StateId, key: &[u8]) -> Result<()> {
        let cf = self.cf(id)?;
        self.db
            .delete_cf_opt(cf, key, &self.write_options)
            .map_err(|e| db_error("delete", e))
    }

    /// Calls `f` on every row whose key starts with `prefix`, in key order, until it returns `false`.
    fn scan_prefix(
        &self,
        id: StateId,
        prefix: &[u8],
        mut f: impl FnMut(&[u8], &[u8]) -> Result<bool>,
    ) -> Result<()> {
        let cf = self.cf(id)?;
        let mut it = self.db.raw_iterator_cf(cf);
        it.seek(prefix);
        while let (Some(k), Some(v)) = (it.key(), it.value()) {
            if !k.starts_with(prefix) || !f(k, v)? {
                break;
            }
            it.next();
        }
        it.status().map_err(|e| db_error("scan", e))
    }

    /// Deletes every row whose key starts with `prefix`.
    fn delete_prefix(&self, id: StateId, prefix: &[u8]) -> Result<()> {
        let cf = self.cf(id)?;
        let mut batch = WriteBatch::default();
        self.scan_prefix(id, prefix, |k, _| {
            batch.delete_cf(cf, k);
            Ok(true)
        })?;
        self.db
            .write_opt(batch, &self.write_options)
            .map_err(|e| db_error("delete", e))
    }
}

pub(crate) fn remove_dir_if_exists(dir: &std::path::Path) -> Result<()> {
    match std::fs::remove_dir_all(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::local(dir.display().to_string(), e)),
    }
}

impl<K: StateKey> KeyedStateBackend<K> for LsmKeyedStateBackend<K> {
    fn max_parallelism(&self) -> u32 {
        self.config.max_parallelism
    }

    fn key_group_range(&self) -> KeyGroupRange {
        self.config.key_groups
    }

    #[inline]
    fn set_current_key(&mut self, key: K) -> Result<()> {
        let key_group = locate_key(
            &key,
            &mut self.key_scratch,
            self.config.max_parallelism,
            self.config.key_groups,
        )?
        .key_group;
        let mut prefix = match self.current.take() {
            Some(c) => c.prefix,
            None => Vec::with_capacity(64),
        };
        key_prefix(
            key_group,
            self.config.max_parallelism,
            &self.key_scratch,
            &mut prefix,
        );
        self.current = Some(CurrentKey {
            key,
            key_group,
            prefix,
        });
        Ok(())
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
        Ok(ValueState::new(self.register(meta)?))
    }

    fn list_state<N: StateKey, V: StateValue>(
        &mut self,
        d: &ListStateDescriptor<N, V>,
    ) -> Result<ListState<N, V>> {
        let meta = StateMeta::new::<K, N, V>(&d.name, StateKind::List);
        Ok(ListState::new(self.register(meta)?))
    }

    fn map_state<N: StateKey, UK: StateKey, V: StateValue>(
        &mut self,
        d: &MapStateDescriptor<N, UK, V>,
    ) -> Result<MapState<N, UK, V>> {
        let mut meta = StateMeta::new::<K, N, V>(&d.name, StateKind::Map);
        meta.user_key_codec = UK::codec_id();
        Ok(MapState::new(self.register(meta)?))
    }

    fn reducing_state<N: StateKey, V: StateValue>(
        &mut self,
        d: &ReducingStateDescriptor<N, V>,
    ) -> Result<ReducingState<N, V>> {
        let meta = StateMeta::new::<K, N, V>(&d.name, StateKind::Reducing);
        Ok(ReducingState::new(self.register(meta)?, d.reduce.clone()))
    }

    fn aggregating_state<N: StateKey, IN, ACC: StateValue, OUT>(
        &mut self,
        d: &AggregatingStateDescriptor<N, IN, ACC, OUT>,
    ) -> Result<AggregatingState<N, IN, ACC, OUT>> {
        let meta = StateMeta::new::<K, N, ACC>(&d.name, StateKind::Aggregating);
        Ok(AggregatingState::new(
            self.register(meta)?,
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
        self.db
            .merge_cf_opt(cf, &key, &operand, &self.write_options)
            .map_err(|e| db_error("merge", e))
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

    fn map_entries<N: StateKey, UK: StateKey, V: StateValue>(
        &self,
        state: StateId,
        ns: &N,
    ) -> Result<Vec<(UK, V)>> {
        let mut prefix = Vec::with_capacity(64);
        self.row_key(ns, &mut prefix)?;
        let mut out = Vec::new();
        self.scan_prefix(state, &prefix, |k, v| {
            out.push((UK::decode(&k[prefix.len()..])?, V::decode(v)?));
            Ok(true)
        })?;
        Ok(out)
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
        let mut want = Vec::new();
        ns.encode(&mut want);
        let mut out = Vec::new();
        let mut last: Vec<u8> = Vec::new();
        let mut first = true;
        let owned = self.config.key_groups;
        self.scan_prefix(state, &[], |k, _| {
            let row = split_row_key(k, self.config.max_parallelism)?;
            let wanted = row.namespace == want.as_slice() && owned.contains(row.key_group);
            if wanted && (first || row.key != last.as_slice()) {
                first = false;
                last.clear();
                last.extend_from_slice(row.key);
                out.push(K::decode(row.key)?);
            }
            Ok(true)
        })?;
        Ok(out)
    }

    fn snapshot(
        &mut self,
        checkpoint_id: u64,
        storage: &CheckpointStorage,
    ) -> Result<PendingSnapshot> {
        self.snapshot_to(checkpoint_id, storage, SnapshotTarget::Checkpoint)
    }

    fn notify_checkpoint_complete(&mut self, checkpoint_id: u64) {
        let mut pending = self.pending.lock();
        // A hint (`docs/protocol.md`): only a checkpoint whose upload this backend finished and that was
        // not aborted can be confirmed and become the base; a savepoint is never in `pending`
        // (FLINK-23949), an unconfirmed upload never is the base (FLINK-25395), and an unknown or aborted
        // id changes nothing.
        let Some(PendingUpload {
            shared: Some(_),
            aborted: false,
            ..
        }) = pending.get(&checkpoint_id)
        else {
            tracing::debug!(
                checkpoint_id,
                "lsm backend: completion of a checkpoint without a finished upload here, ignored"
            );
            return;
        };
        let Some(PendingUpload {
            shared: Some(shared),
            ..
        }) = pending.remove(&checkpoint_id)
        else {
            return;
        };
        if self
            .base
            .as_ref()
            .is_none_or(|b| b.checkpoint_id < checkpoint_id)
        {
            self.base = Some(DiffBase {
                checkpoint_id,
                shared,
            });
        }
        self.last_completed_checkpoint = Some(
            self.last_completed_checkpoint
                .map_or(checkpoint_id, |c| c.max(checkpoint_id)),
        );
        self.aborts_reusing_base = 0;
        // Older pending checkpoints are subsumed by this one.
        pending.retain(|id, _| *id > checkpoint_id);
    }

    fn notify_checkpoint_aborted(&mut self, checkpoint_id: u64) {
        let mut pending = self.pending.lock();
        match pending.get_mut(&checkpoint_id) {
            // Still uploading: the asynchronous phase sees the flag, deletes its uploads and fails.
            Some(p) if p.shared.is_none() => p.aborted = true,
            // Finished: its files were handed to the coordinator, which deletes them on abort.
            Some(p) => {
                let reused_base = p.reused_base;
                pending.remove(&checkpoint_id);
                // The base may be stale: an older finished upload that was never confirmed nor aborted
                // means a notification was lost (that checkpoint may have completed and subsumed the base's,
                // and this one been declined for reusing its deleted files); and checkpoints that keep
                // being aborted while reusing the base may be declined for it (another backend of the same
                // lineage, a restored successor, may have moved on). The backend cannot prove the base is
                // still registered, so the next checkpoint uploads every file (a rebase) instead of being
                // declined forever. One ordinary abort keeps the base: a full upload after every abort
                // would slow the next checkpoint of a large state down when checkpoints already struggle.
                let base_id = self.base.as_ref().map(|b| b.checkpoint_id);
                let lost_notification = pending.iter().any(|(id, u)| {
                    *id < checkpoint_id && u.shared.is_some() && base_id.is_none_or(|b| *id > b)
                });
                if reused_base {
                    self.aborts_reusing_base += 1;
                }
                let rebase = reused_base
                    && (lost_notification || self.aborts_reusing_base >= REBASE_AFTER_ABORTS);
                if rebase && self.base.is_some() {
                    tracing::info!(
                        checkpoint_id,
                        lost_notification,
                        aborts = self.aborts_reusing_base,
                        "lsm backend: the diff base may be stale; the next checkpoint uploads every file"
                    );
                    self.base = None;
                    self.aborts_reusing_base = 0;
                }
            }
            None => {}
        }
    }
}
