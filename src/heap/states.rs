//! The heap backend's states, as a component that owns them: one table per state by id (a typed
//! [`StateTable`] once the job registers it, a [`RawTable`] of restored records until then, a
//! [`DroppedTable`] after `drop_state`, so that ids stay valid), and the names that find them. Registration
//! with its schema checks and migration, typed lookup, and the synchronous phase's freeze live here.

use std::any::Any;
use std::collections::HashMap;

use crate::error::{Error, Result};
use crate::heap::decode::decode_raw;
use crate::heap::delta::Cut;
use crate::heap::frozen::FrozenTable;
use crate::heap::in_process::{InProcessRecovery, KeepVersion, RetainedTables, to_raw};
use crate::heap::serde::{ListCell, MapCell, ValueSerde, list_serde, map_serde, value_serde};
use crate::heap::table::{DroppedTable, ErasedTable, RawTable, StateTable};
use crate::heap::timers::TimerTable;
use crate::heap::ttl::{ttl_list_serde, ttl_map_serde, ttl_value_serde};
use crate::keyed::backend::{StateId, StateKey, StateValue};
use crate::keyed::checks::wrong_state;
use crate::keyed::timers::{
    TimeDomain, TimerService, check_state_name, timer_state_meta, timers_not_a_state,
};
use crate::keyed::ttl::{Stamped, StateTtlConfig, TtlTimes};
use crate::keyed::ttl_switch::Plain;
use crate::snapshot::state_meta::{StateKind, StateMeta};

/// The serdes of a value, a list and a map state whose values are `S`.
pub(crate) type KindSerdes<UK, S> = (
    ValueSerde<S>,
    ValueSerde<ListCell<S>>,
    ValueSerde<MapCell<UK, S>>,
);

/// Every state of one heap backend.
pub(crate) struct StateTables<K> {
    tables: Vec<Box<dyn ErasedTable<K>>>,
    by_name: HashMap<String, StateId>,
    /// Whether new tables log their changes (incremental checkpoints).
    track_changes: bool,
    /// Ids of typed tables a restore took from memory (in-process recovery) that no descriptor has
    /// registered yet: a registration that does not fit them takes their records instead.
    from_memory: Vec<u32>,
}

impl<K: StateKey> StateTables<K> {
    /// No states; tables registered later log their changes if `track_changes` (incremental
    /// checkpoints).
    pub(crate) fn new(track_changes: bool) -> Self {
        StateTables {
            tables: Vec::new(),
            by_name: HashMap::new(),
            track_changes,
            from_memory: Vec::new(),
        }
    }

    /// The states of a restore from memory (in-process recovery): each kept table restored, typed
    /// tables marked as not registered yet.
    pub(crate) fn from_memory(kept: &RetainedTables<K>, track_changes: bool) -> Self {
        let mut states = StateTables::new(track_changes);
        for kept in &kept.0 {
            let table = kept.restore(track_changes);
            let id = states.tables.len() as u32;
            if !(table.as_ref() as &dyn Any).is::<RawTable>() {
                states.from_memory.push(id);
            }
            states
                .by_name
                .insert(table.meta().name.clone(), StateId(id));
            states.tables.push(table);
        }
        states
    }

    /// The first registration of table `id` if a restore took it from memory: kept as it is if `fits`
    /// (the same Rust types and codecs), else replaced by its records, exactly those its checkpoint's
    /// file holds, so that the registration goes on as after a restore from the file (migration, TTL
    /// switched on or off).
    ///
    /// # Errors
    /// Those of writing the records (`in_process::to_raw`).
    fn first_registration(
        &mut self,
        id: StateId,
        groups: usize,
        fits: impl FnOnce(&dyn ErasedTable<K>) -> bool,
    ) -> Result<()> {
        let Some(at) = self.from_memory.iter().position(|&i| i == id.0) else {
            return Ok(());
        };
        self.from_memory.swap_remove(at);
        let existing = &mut self.tables[id.0 as usize];
        if !fits(existing.as_ref()) {
            *existing = Box::new(to_raw(existing.as_mut(), groups)?);
        }
        Ok(())
    }

    /// Synchronous phase of a checkpoint with in-process recovery (`keep`: where, under which job root):
    /// a second frozen version of every live state, to be kept under the handle the upload produces;
    /// `None` without in-process recovery or if a state cannot be kept (`ErasedTable::retain`).
    pub(crate) fn keep_version(
        &mut self,
        keep: Option<(InProcessRecovery, String)>,
    ) -> Option<KeepVersion> {
        let (recovery, job) = keep?;
        let kept = self
            .tables
            .iter_mut()
            .filter(|t| !t.is_dropped())
            .map(|t| t.retain())
            .collect::<Option<Vec<_>>>()?;
        let tables = RetainedTables(kept);
        Some(Box::new(move |handle| {
            recovery.publish(job, handle, tables)
        }))
    }

    /// Adds the restored records of a state no descriptor registered yet.
    pub(crate) fn add_restored(&mut self, table: RawTable) {
        let id = StateId(self.tables.len() as u32);
        self.by_name.insert(table.meta.name.clone(), id);
        self.tables.push(Box::new(table));
    }

    /// The id of the state `meta` describes, with a table of `groups` key groups: a new one, the one
    /// already registered with the same types, or a restored one decoded now (on `restore_threads`
    /// threads, through the codec's migration if the stored encoding is older, or TTL was switched on or
    /// off: values stored without a stamp are stamped `restored_at_ms`, `keyed/ttl_switch.rs`).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] or [`Error::IncompatibleSchema`] if the state exists with another kind,
    /// other Rust types or an encoding the codec cannot read; decode errors of restored records.
    pub(crate) fn register<N: StateKey, S: Clone + Send + Sync + 'static>(
        &mut self,
        meta: StateMeta,
        serde: ValueSerde<S>,
        groups: usize,
        restore_threads: usize,
        restored_at_ms: u64,
    ) -> Result<StateId> {
        check_state_name(&meta)?;
        let Some(&id) = self.by_name.get(&meta.name) else {
            let id = StateId(self.tables.len() as u32);
            self.tables.push(Box::new(StateTable::<K, N, S>::new(
                meta.clone(),
                groups,
                serde,
                self.track_changes,
            )));
            self.by_name.insert(meta.name, id);
            return Ok(id);
        };
        self.first_registration(id, groups, |t| {
            (t as &dyn Any)
                .downcast_ref::<StateTable<K, N, S>>()
                .is_some_and(|t| t.meta == meta)
        })?;
        let existing = &mut self.tables[id.0 as usize];
        if let Some(table) =
            (existing.as_mut() as &mut dyn Any).downcast_mut::<StateTable<K, N, S>>()
        {
            meta.check_compatible(&table.meta)?;
            // The latest registration's TTL applies (another `ttl_ms` is the same state).
            table.serde = serde;
            return Ok(id);
        }
        let existing = &self.tables[id.0 as usize];
        let migrate = meta.check_layout(existing.meta())?;
        let Some(raw) = (existing.as_ref() as &dyn Any).downcast_ref::<RawTable>() else {
            meta.check_compatible(existing.meta())?;
            return Err(Error::InvalidArgument(format!(
                "state `{}` is registered with other Rust types",
                meta.name
            )));
        };
        // Schema evolution: values written by an older codec are read through its migration, here, once
        // (`docs/savepoints.md`); the table then holds the new type and snapshots the new encoding.
        let stored = &raw.meta.value_codec;
        let migration = if migrate {
            (serde.migration)(&meta.name, stored, restored_at_ms)?
        } else {
            None
        };
        // Records with the codecs they were written with are exactly the restored chain's: a delta on it
        // logs this table's changes from here. Migrated ones are rewritten whole by the next delta.
        let unchanged = meta == raw.meta;
        let mut table = StateTable::<K, N, S>::new(meta, groups, serde, self.track_changes);
        decode_raw(raw, &mut table, migration.as_ref(), restore_threads)?;
        if unchanged {
            table.map.changes_continue_from_base();
        }
        self.tables[id.0 as usize] = Box::new(table);
        Ok(id)
    }

    /// The id of state `name` of `kind` (not timers) whose values are `V`, stored as they are or, with
    /// `ttl` (its setting and the restore time values stored without TTL are stamped with), as
    /// [`Stamped<V>`] (`heap/ttl.rs`), registered as [`StateTables::register`] with the serde of its
    /// kind's table (map user keys `UK`).
    ///
    /// # Errors
    /// As [`StateTables::register`]; [`Error::InvalidArgument`] for kind timers.
    pub(crate) fn register_kind<N: StateKey, UK: StateKey, V: StateValue>(
        &mut self,
        name: &str,
        kind: StateKind,
        ttl: Option<(StateTtlConfig, u64)>,
        groups: usize,
        restore_threads: usize,
    ) -> Result<StateId> {
        let Some((ttl, at)) = ttl else {
            let serdes = (
                value_serde::<V, Plain>(),
                list_serde::<V, Plain>(),
                map_serde::<UK, V, Plain>(),
            );
            return self.register_as::<N, UK, V>(name, kind, serdes, groups, (restore_threads, 0));
        };
        // Values stored with their last write's time.
        let serdes = (
            ttl_value_serde(ttl),
            ttl_list_serde(ttl),
            ttl_map_serde(ttl),
        );
        self.register_as::<N, UK, Stamped<V>>(name, kind, serdes, groups, (restore_threads, at))
    }

    /// [`StateTables::register_kind`] with the serdes of values stored as `S`; `(threads, at)`: the
    /// restore threads and the restore time.
    fn register_as<N: StateKey, UK: StateKey, S: StateValue>(
        &mut self,
        name: &str,
        kind: StateKind,
        (value, list, map): KindSerdes<UK, S>,
        groups: usize,
        (threads, at): (usize, u64),
    ) -> Result<StateId> {
        let mut meta = StateMeta::new::<K, N, S>(name, kind);
        match kind {
            StateKind::Value | StateKind::Reducing | StateKind::Aggregating => {
                self.register::<N, S>(meta, value, groups, threads, at)
            }
            StateKind::List => self.register::<N, ListCell<S>>(meta, list, groups, threads, at),
            StateKind::Map => {
                meta.user_key_codec = UK::codec_id();
                self.register::<N, MapCell<UK, S>>(meta, map, groups, threads, at)
            }
            StateKind::Timers => Err(timers_not_a_state(name)),
        }
    }

    /// The id of the timers `meta` describes (kind [`crate::snapshot::StateKind::Timers`]), with `groups`
    /// key groups: new, already registered, or restored and decoded now (on `restore_threads` threads).
    ///
    /// # Errors
    /// [`Error::IncompatibleSchema`] or [`Error::InvalidArgument`] if a state of that name has another
    /// kind, codecs or Rust types; decode errors of restored timers.
    pub(crate) fn register_timers<N: StateKey>(
        &mut self,
        meta: StateMeta,
        groups: usize,
        restore_threads: usize,
    ) -> Result<StateId> {
        let Some(&id) = self.by_name.get(&meta.name) else {
            let id = StateId(self.tables.len() as u32);
            self.by_name.insert(meta.name.clone(), id);
            self.tables
                .push(Box::new(TimerTable::<K, N>::new(meta, groups)));
            return Ok(id);
        };
        self.first_registration(id, groups, |t| {
            (t as &dyn Any).is::<TimerTable<K, N>>() && *t.meta() == meta
        })?;
        let existing = &self.tables[id.0 as usize];
        meta.check_compatible(existing.meta())?;
        if (existing.as_ref() as &dyn Any).is::<TimerTable<K, N>>() {
            return Ok(id);
        }
        let Some(raw) = (existing.as_ref() as &dyn Any).downcast_ref::<RawTable>() else {
            return Err(Error::InvalidArgument(format!(
                "timers `{}` are registered with other Rust types",
                meta.name
            )));
        };
        let table = TimerTable::<K, N>::restored(meta, groups, raw, restore_threads)?;
        self.tables[id.0 as usize] = Box::new(table);
        Ok(id)
    }

    /// The timer service `name` of namespace `N`: its event-time and processing-time timers, registered
    /// as [`StateTables::register_timers`] registers them.
    ///
    /// # Errors
    /// As [`StateTables::register_timers`].
    pub(crate) fn timer_service<N: StateKey>(
        &mut self,
        name: &str,
        groups: usize,
        restore_threads: usize,
    ) -> Result<TimerService<N>> {
        let mut id = |domain| {
            let meta = timer_state_meta::<K, N>(name, domain);
            self.register_timers::<N>(meta, groups, restore_threads)
        };
        Ok(TimerService::new(
            id(TimeDomain::EventTime)?,
            id(TimeDomain::ProcessingTime)?,
        ))
    }

    /// Incremental TTL cleanup: up to `slots` slots of every state with TTL (`ErasedTable::clean_expired`);
    /// out of line, as it runs once every 1,024 records. Skipped while reads of `OnReadAndWrite` states
    /// are marked (`keyed/ttl_refresh.rs`): it could remove an entry such a read kept alive before its
    /// new stamp is written (as the queue is applied, each write sets a current key: a record edge).
    #[cold]
    #[inline(never)]
    pub(crate) fn clean_expired(&mut self, slots: usize, times: &TtlTimes) {
        if times.refreshes().marked() {
            return;
        }
        for table in &mut self.tables {
            table.clean_expired(slots, times);
        }
    }

    /// The timers of `id` if they hold these types.
    #[inline]
    pub(crate) fn timers_mut<N: StateKey>(&mut self, id: StateId) -> Option<&mut TimerTable<K, N>> {
        self.tables
            .get_mut(id.0 as usize)
            .and_then(|t| (t.as_mut() as &mut dyn Any).downcast_mut())
    }

    /// The table of `id` if it holds these types.
    #[inline]
    pub(crate) fn typed<N: StateKey, S: 'static>(
        &self,
        id: StateId,
    ) -> Option<&StateTable<K, N, S>> {
        self.tables
            .get(id.0 as usize)
            .and_then(|t| (t.as_ref() as &dyn Any).downcast_ref())
    }

    /// The table of `id` if it holds these types.
    #[inline]
    pub(crate) fn typed_mut<N: StateKey, S: 'static>(
        &mut self,
        id: StateId,
    ) -> Option<&mut StateTable<K, N, S>> {
        self.tables
            .get_mut(id.0 as usize)
            .and_then(|t| (t.as_mut() as &mut dyn Any).downcast_mut())
    }

    fn table(&self, id: StateId) -> Result<&dyn ErasedTable<K>> {
        self.tables
            .get(id.0 as usize)
            .map(|t| t.as_ref())
            .ok_or_else(|| wrong_state(id))
    }

    /// Keys with an entry in namespace `ns` of state `id`, registered or still restored records (of a
    /// registered TTL state, those a read returns at `times`' now).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] if `id` is not a state or `N` not its namespace type; decode errors of
    /// restored records.
    pub(crate) fn keys<N: StateKey>(
        &self,
        id: StateId,
        ns: &N,
        times: &TtlTimes,
    ) -> Result<Vec<K>> {
        let table = self.table(id)?;
        let marks = times.refreshes().marks_of(id.0);
        if let Some(keys) = table.keys_in_namespace(ns, times, marks.as_ref()) {
            return Ok(keys);
        }
        let raw = (table as &dyn Any)
            .downcast_ref::<RawTable>()
            .ok_or_else(|| wrong_state(id))?;
        let mut want = Vec::new();
        ns.encode(&mut want);
        raw.records()
            .filter(|r| {
                r.as_ref()
                    .map_or(true, |(_, _, n, _)| *n == want.as_slice())
            })
            .map(|r| r.and_then(|(_, k, _, _)| K::decode(k)))
            .collect()
    }

    /// Every (key, namespace) pair of state `id`, registered or still restored records (TTL as
    /// [`StateTables::keys`]).
    ///
    /// # Errors
    /// As [`StateTables::keys`].
    pub(crate) fn keys_and_namespaces<N: StateKey>(
        &self,
        id: StateId,
        times: &TtlTimes,
    ) -> Result<Vec<(K, N)>> {
        let table = self.table(id)?;
        let mut out: Vec<(K, N)> = Vec::new();
        let marks = times.refreshes().marks_of(id.0);
        if table.keys_and_namespaces(&mut out, times, marks.as_ref()) {
            return Ok(out);
        }
        let raw = (table as &dyn Any)
            .downcast_ref::<RawTable>()
            .ok_or_else(|| wrong_state(id))?;
        raw.records()
            .map(|r| r.and_then(|(_, k, n, _)| Ok((K::decode(k)?, N::decode(n)?))))
            .collect()
    }

    /// Drops state `name` (its id stays taken, refusing every access); whether it existed.
    pub(crate) fn drop_state(&mut self, name: &str) -> bool {
        let Some(id) = self.by_name.remove(name) else {
            return false;
        };
        let table = &mut self.tables[id.0 as usize];
        let meta = table.meta().clone();
        *table = Box::new(DroppedTable(meta));
        true
    }

    /// Names of all live states, registered or restored.
    pub(crate) fn names(&self) -> Vec<String> {
        self.live().map(|t| t.meta().name.clone()).collect()
    }

    /// Entries (key, namespace pairs) of all states together.
    pub(crate) fn total_entries(&self) -> usize {
        self.tables.iter().map(|t| t.len()).sum()
    }

    fn live(&self) -> impl Iterator<Item = &Box<dyn ErasedTable<K>>> + Clone {
        self.tables.iter().filter(|t| !t.is_dropped())
    }

    /// The synchronous phase: every live state's description and a frozen view of its table, in the same
    /// order; O(states x key groups), whatever the number of entries. TTL states are frozen with the
    /// cutoff of `times`' now: their snapshot leaves out what expired. `cut` as
    /// [`ErasedTable::freeze`].
    pub(crate) fn freeze(
        &mut self,
        times: &TtlTimes,
        cut: Cut,
    ) -> (Vec<StateMeta>, Vec<Box<dyn FrozenTable>>) {
        let metas = self.live().map(|t| t.meta().clone()).collect();
        let frozen = self
            .tables
            .iter_mut()
            .filter(|t| !t.is_dropped())
            .map(|t| t.freeze(times, cut))
            .collect();
        (metas, frozen)
    }

    /// The diff base of incremental checkpoints moved to checkpoint `base_id`.
    pub(crate) fn changes_base_moved(&mut self, base_id: u64) {
        for t in &mut self.tables {
            t.changes_base_moved(base_id);
        }
    }
}
