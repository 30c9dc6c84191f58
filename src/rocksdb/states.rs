//! The RocksDB backend's states, as a component that owns them: one entry per state id (its description,
//! its column family, whether the job registered it, whether a failed migration broke it) and the names
//! that find them. The DB they live in is passed in: the rows are the DB's, the bookkeeping is this. Each
//! state's meta row in the `default` column family (`docs/formats.md`) is what a restore finds again.
//! Registration and schema migration: `migrate.rs`.

use std::collections::HashMap;

use rocksdb::ColumnFamily;

use crate::error::{Error, Result};
use crate::format::lsm_rows::{cf_name, decode_meta, meta_key};
use crate::keyed::backend::{StateId, StateKey};
use crate::keyed::checks::wrong_state;
use crate::keyed::ttl::{StateTtlConfig, TtlTimes};
use crate::rocksdb::db::Db;
use crate::rocksdb::ttl::RowExpiry;
use crate::snapshot::sizes::{KeyGroupSize, StateSize, StateSizes};
use crate::snapshot::state_meta::{StateKind, StateMeta};

/// Key-group ranges (key groups × states) whose approximate sizes a synchronous phase reads at most:
/// each is an index lookup in every SST file it overlaps, about 1.2-2.5 µs with 1M rows a state
/// (`docs/state-sizes.md`), so 1,024 cost about 1 ms; a subtask with more key groups reports per-state
/// figures only.
pub(crate) const MAX_KEY_GROUP_RANGES: usize = 1024;

/// One state of the backend.
pub(crate) struct LsmState {
    pub(crate) meta: StateMeta,
    /// Its column family; empty once the state is dropped (the id stays taken).
    pub(crate) cf: String,
    /// Whether the job registered it; a restored state is not until then (and may still migrate).
    pub(crate) registered: bool,
    /// A migration of its rows failed while writing: some rows are in the new encoding under the old meta
    /// row. The state refuses every access and the backend every snapshot; restore the backend again.
    pub(crate) broken: bool,
    /// Its TTL, once registered with one (`docs/ttl.md`; not stored: the descriptor brings it).
    pub(crate) ttl: Option<StateTtlConfig>,
}

/// The error of every access to a state whose migration failed while writing.
pub(crate) fn broken_state(name: &str) -> Error {
    Error::IllegalState(format!(
        "state `{name}` is unusable: migrating its rows to a new codec failed while writing, so some \
         rows are in each encoding; restore the backend from its checkpoint again"
    ))
}

/// Every state of one RocksDB backend.
pub(crate) struct LsmStates {
    states: Vec<LsmState>,
    by_name: HashMap<String, StateId>,
}

impl LsmStates {
    /// The states whose meta rows `db` holds (a restored or reopened DB), none registered yet.
    ///
    /// # Errors
    /// [`Error::Corrupt`] naming the DB for a meta row that does not decode or a state without its
    /// column family; [`Error::Local`] from RocksDB.
    pub(crate) fn load(db: &Db) -> Result<LsmStates> {
        let path = db.instance().db().display().to_string();
        let mut loaded = LsmStates {
            states: Vec::new(),
            by_name: HashMap::new(),
        };
        for value in db.meta_rows()? {
            let meta = decode_meta(&value, &path)?;
            let cf = cf_name(&meta.name);
            if db.cf(&cf).is_none() {
                return Err(Error::corrupt(
                    &path,
                    format!("state `{}` has no column family", meta.name),
                ));
            }
            loaded.push(meta, cf, false);
        }
        Ok(loaded)
    }

    pub(super) fn push(&mut self, meta: StateMeta, cf: String, registered: bool) -> StateId {
        let id = StateId(self.states.len() as u32);
        self.by_name.insert(meta.name.clone(), id);
        self.states.push(LsmState {
            meta,
            cf,
            registered,
            broken: false,
            ttl: None,
        });
        id
    }

    /// State `id`, dropped or not.
    pub(crate) fn get(&self, id: StateId) -> Option<&LsmState> {
        self.states.get(id.0 as usize)
    }

    /// The id of the live state `name`.
    pub(crate) fn find(&self, name: &str) -> Option<StateId> {
        self.by_name.get(name).copied()
    }

    pub(super) fn get_mut(&mut self, id: StateId) -> &mut LsmState {
        &mut self.states[id.0 as usize]
    }

    /// Every state, by id, dropped ones included (with an empty column family name).
    pub(crate) fn all(&self) -> impl Iterator<Item = (StateId, &LsmState)> {
        let ids = (0..).map(StateId);
        ids.zip(&self.states)
    }

    /// The column family of state `id` in `db`.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for an id this backend did not register;
    /// [`Error::IllegalState`] for a state a failed migration broke.
    #[inline]
    pub(crate) fn cf<'d>(&self, db: &'d Db, id: StateId) -> Result<&'d ColumnFamily> {
        let state = self.get(id).ok_or_else(|| wrong_state(id))?;
        if state.broken {
            return Err(broken_state(&state.meta.name));
        }
        db.cf(&state.cf).ok_or_else(|| wrong_state(id))
    }

    /// Registers (or finds) the event-time and processing-time timers of a timer service, described by
    /// `event` and `processing` (kind [`StateKind::Timers`]).
    ///
    /// # Errors
    /// As [`LsmStates::register`] (a timestamp's encoding never changes: nothing migrates).
    pub(crate) fn register_timers(
        &mut self,
        db: &mut Db,
        event: StateMeta,
        processing: StateMeta,
    ) -> Result<(StateId, StateId)> {
        let event = self.register(db, event, &|_, _| Ok(None))?;
        Ok((event, self.register(db, processing, &|_, _| Ok(None))?))
    }

    /// The column family of the timers `id` in `db`.
    ///
    /// # Errors
    /// As [`LsmStates::cf`]; [`Error::InvalidArgument`] if `id` is a state of another kind.
    #[inline]
    pub(crate) fn timer_cf<'d>(&self, db: &'d Db, id: StateId) -> Result<&'d ColumnFamily> {
        self.check_timers(id)?;
        self.cf(db, id)
    }

    /// The column family of the timers `id` in `db`, to look up only when needed (by name, a string-keyed
    /// map: too slow for every fired timer): `id` is checked now, the returned closure looks it up.
    ///
    /// # Errors
    /// As [`LsmStates::timer_cf`], returned now, except for a column family missing from `db`, which the
    /// closure returns.
    #[inline]
    pub(crate) fn timer_cf_later<'a, 'd>(
        &'a self,
        db: &'d Db,
        id: StateId,
    ) -> Result<impl Fn() -> Result<&'d ColumnFamily> + 'a>
    where
        'd: 'a,
    {
        self.check_timers(id)?;
        Ok(move || self.cf(db, id))
    }

    /// Whether `id` is timers whose column family [`LsmStates::timer_cf`] can look up.
    ///
    /// # Errors
    /// As [`LsmStates::timer_cf`], but for a column family missing from `db`.
    #[inline]
    fn check_timers(&self, id: StateId) -> Result<()> {
        match self.get(id) {
            Some(state) if state.meta.kind == StateKind::Timers && state.broken => {
                Err(broken_state(&state.meta.name))
            }
            Some(state) if state.meta.kind == StateKind::Timers => Ok(()),
            _ => Err(wrong_state(id)),
        }
    }

    /// A state a failed migration broke, if any (no snapshot may be taken then).
    pub(crate) fn broken(&self) -> Option<&LsmState> {
        self.states.iter().find(|s| s.broken)
    }

    /// Names of all live states, registered or restored.
    pub(crate) fn names(&self) -> Vec<String> {
        self.live().map(|s| s.meta.name.clone()).collect()
    }

    /// Descriptions of all live states, in id order.
    pub(crate) fn metas(&self) -> Vec<StateMeta> {
        self.live().map(|s| s.meta.clone()).collect()
    }

    /// What expired at `times`' now, for the states of [`LsmStates::metas`] in their order (`None`: a
    /// state without TTL, or nothing expired yet): a canonical savepoint leaves those rows out.
    pub(crate) fn expiries(&self, times: &TtlTimes) -> Vec<Option<RowExpiry>> {
        self.live()
            .map(|s| RowExpiry::at(s.meta.kind, s.ttl, times, false))
            .collect()
    }

    fn live(&self) -> impl Iterator<Item = &LsmState> {
        self.states.iter().filter(|s| !s.cf.is_empty())
    }

    /// Names of the column families: one per live state, and `default` (state meta information).
    pub(crate) fn column_families(&self) -> Vec<&str> {
        let live = self.live().map(|s| s.cf.as_str());
        live.chain(["default"]).collect()
    }

    /// Each live state's entries and bytes and each key group's bytes of `key_groups` (max parallelism
    /// `max_parallelism`), as RocksDB estimates them (`docs/state-sizes.md`): per state
    /// `rocksdb.estimate-num-keys` (a map counts once per user key) and `rocksdb.live-sst-files-size`,
    /// per key group `GetApproximateSizes` over the key group's rows summed over the states, left out
    /// when key groups × states exceed [`MAX_KEY_GROUP_RANGES`]. SST files only: the caller flushed the
    /// memtables. A property RocksDB cannot give counts 0.
    pub(crate) fn sizes(
        &self,
        db: &Db,
        key_groups: crate::key_group::KeyGroupRange,
        max_parallelism: u32,
    ) -> StateSizes {
        use crate::format::lsm_rows::key_group_prefix;
        let per_key_group = key_groups.len() as usize * self.live().count() <= MAX_KEY_GROUP_RANGES;
        let ranges: Vec<(Vec<u8>, Vec<u8>)> = key_groups
            .iter()
            .filter(|_| per_key_group)
            .map(|g| {
                (
                    key_group_prefix(g, max_parallelism),
                    key_group_prefix(g + 1, max_parallelism),
                )
            })
            .collect();
        let mut group_bytes = vec![0u64; ranges.len()];
        let mut states = Vec::new();
        for s in self.live() {
            let names = [s.cf.as_str()];
            let property = |p: &str| db.int_property(&names, p).ok().flatten().unwrap_or(0);
            states.push(StateSize {
                name: s.meta.name.clone(),
                entries: property("rocksdb.estimate-num-keys"),
                bytes: property("rocksdb.live-sst-files-size"),
                exact: false,
            });
            if let Some(cf) = db.cf(&s.cf).filter(|_| per_key_group) {
                for (sum, bytes) in group_bytes
                    .iter_mut()
                    .zip(db.approximate_sizes(cf, &ranges))
                {
                    *sum += bytes;
                }
            }
        }
        let key_groups = key_groups
            .iter()
            .zip(group_bytes)
            .filter(|&(_, bytes)| bytes > 0)
            .map(|(key_group, bytes)| KeyGroupSize {
                key_group,
                bytes,
                exact: false,
            })
            .collect();
        StateSizes { states, key_groups }
    }

    /// Entries of all states, as RocksDB estimates them (`rocksdb.estimate-num-keys`; map entries count one
    /// each).
    pub(crate) fn estimated_entries(&self, db: &Db) -> u64 {
        self.live()
            .filter_map(|s| {
                let names = [s.cf.as_str()];
                db.int_property(&names, "rocksdb.estimate-num-keys")
                    .ok()
                    .flatten()
            })
            .sum()
    }

    /// Drops state `name`: its meta row and column family go, its id stays taken. Whether it existed.
    ///
    /// # Errors
    /// [`Error::Local`] from RocksDB.
    pub(crate) fn drop_state(&mut self, db: &mut Db, name: &str) -> Result<bool> {
        let Some(id) = self.by_name.remove(name) else {
            return Ok(false);
        };
        let cf = std::mem::take(&mut self.states[id.0 as usize].cf);
        db.set_meta(&meta_key(name), None)?;
        db.drop_cf(&cf)?;
        Ok(true)
    }

    /// A state id used with a namespace type chosen by the caller (`keys`, `keys_and_namespaces`) must
    /// name the state's own namespace codec: bytes of one type can decode as another.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] naming both codecs, or for an unknown id.
    pub(crate) fn check_namespace<N: StateKey>(&self, id: StateId) -> Result<()> {
        let meta = &self.get(id).ok_or_else(|| wrong_state(id))?.meta;
        if meta.namespace_codec != N::codec_id() {
            return Err(Error::InvalidArgument(format!(
                "state `{}` has namespaces of codec {}, not {}",
                meta.name,
                meta.namespace_codec,
                N::codec_id()
            )));
        }
        Ok(())
    }
}
