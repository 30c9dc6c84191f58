//! State registration of the LSM backend, and schema evolution of a restored state's rows: values
//! written by an older codec are rewritten in the registering codec's encoding when the state is first
//! registered after a restore (eagerly, as Flink's RocksDB backend migrates; `docs/savepoints.md`).

use rocksdb::WriteBatch;

use crate::codec::{ByteMigration, migration_failed};
use crate::error::Result;
use crate::keyed::backend::{StateId, StateKey};
use crate::keyed::descriptor::{StateKind, StateMeta};
use crate::lsm::backend::{LsmKeyedStateBackend, LsmState, db_error};
use crate::lsm::keys::{cf_name, encode_meta, meta_key, push_list_element, split_list};

/// `(state name, stored value codec)` → the rewrite of a stored value (the registering codec's
/// [`crate::codec::byte_migration`]).
pub(crate) type MigrationFor = fn(&str, &str) -> Result<Option<ByteMigration>>;

/// Bytes of rewritten rows per write batch while migrating (bounds the memory a migration holds).
const MIGRATION_BATCH_BYTES: usize = 4 << 20;

impl<K: StateKey> LsmKeyedStateBackend<K> {
    /// Registers a state, or finds it: a state registered before must match `meta` exactly; a restored
    /// state not registered yet must match its kind and key, namespace and user key codecs, and its
    /// values are migrated (`migration`) if its value codec differs.
    ///
    /// # Errors
    /// [`crate::Error::IncompatibleSchema`] if the state cannot be read as `meta` says;
    /// [`crate::Error::Corrupt`] if a stored value does not migrate (nothing was rewritten then);
    /// [`crate::Error::Local`] from RocksDB.
    pub(crate) fn register(&mut self, meta: StateMeta, migration: MigrationFor) -> Result<StateId> {
        if let Some(&id) = self.by_name.get(&meta.name) {
            let state = &self.states[id.0 as usize];
            if state.registered {
                meta.check_compatible(&state.meta)?;
                return Ok(id);
            }
            if meta.check_layout(&state.meta)? {
                let stored = state.meta.value_codec.clone();
                if let Some(rewrite) = migration(&meta.name, &stored)? {
                    self.migrate_rows(id, &meta, &stored, &rewrite)?;
                }
                self.put_meta(&meta)?;
                self.states[id.0 as usize].meta = meta;
            }
            self.states[id.0 as usize].registered = true;
            return Ok(id);
        }
        self.create_state(meta, true)
    }

    /// Registers a state read from a snapshot during restore: created unregistered (so that the job's
    /// registration may still migrate it), or checked to equal the same state of another snapshot.
    ///
    /// # Errors
    /// [`crate::Error::IncompatibleSchema`] if two snapshots describe the state differently;
    /// [`crate::Error::Local`] from RocksDB.
    pub(crate) fn register_restored(&mut self, meta: StateMeta) -> Result<StateId> {
        if let Some(&id) = self.by_name.get(&meta.name) {
            meta.check_compatible(&self.states[id.0 as usize].meta)?;
            return Ok(id);
        }
        self.create_state(meta, false)
    }

    /// Writes a state's meta row (`docs/formats.md`, "LSM backend rows").
    fn put_meta(&self, meta: &StateMeta) -> Result<()> {
        self.db
            .put_opt(meta_key(&meta.name), encode_meta(meta), &self.write_options)
            .map_err(|e| db_error("state meta", e))
    }

    fn create_state(&mut self, meta: StateMeta, registered: bool) -> Result<StateId> {
        let cf = cf_name(&meta.name);
        self.db
            .create_cf(&cf, &self.options)
            .map_err(|e| db_error(format!("column family {cf}"), e))?;
        self.put_meta(&meta)?;
        let id = StateId(self.states.len() as u32);
        self.by_name.insert(meta.name.clone(), id);
        self.states.push(LsmState {
            meta,
            cf,
            registered,
        });
        Ok(id)
    }

    /// Rewrites every row of state `id` through `rewrite`: a first pass reads every value through it and
    /// writes nothing, so a value that does not migrate fails the registration with the rows untouched;
    /// the second pass writes the rewritten rows in batches of [`MIGRATION_BATCH_BYTES`].
    fn migrate_rows(
        &self,
        id: StateId,
        meta: &StateMeta,
        stored: &str,
        rewrite: &ByteMigration,
    ) -> Result<()> {
        let fail = |e| migration_failed(&meta.name, stored, &meta.value_codec, e);
        let mut value = Vec::new();
        let mut rows = 0u64;
        self.scan_prefix(id, &[], |_, v| {
            rewrite_value(meta.kind, v, rewrite, &mut value).map_err(fail)?;
            rows += 1;
            Ok(true)
        })?;
        let cf = self.cf(id)?;
        let mut batch = WriteBatch::default();
        self.scan_prefix(id, &[], |k, v| {
            rewrite_value(meta.kind, v, rewrite, &mut value).map_err(fail)?;
            batch.put_cf(cf, k, &value);
            if batch.size_in_bytes() >= MIGRATION_BATCH_BYTES {
                let full = std::mem::take(&mut batch);
                self.db
                    .write_opt(full, &self.write_options)
                    .map_err(|e| db_error("migrate", e))?;
            }
            Ok(true)
        })?;
        self.db
            .write_opt(batch, &self.write_options)
            .map_err(|e| db_error("migrate", e))?;
        tracing::info!(
            state = %meta.name,
            from = stored,
            to = %meta.value_codec,
            rows,
            "state migrated to a new value codec"
        );
        Ok(())
    }
}

/// The row value `v` of a state of `kind` with every value rewritten: a list row's elements one by one,
/// any other row whole (a map row is one user key's value).
fn rewrite_value(
    kind: StateKind,
    v: &[u8],
    rewrite: &ByteMigration,
    out: &mut Vec<u8>,
) -> Result<()> {
    out.clear();
    if kind != StateKind::List {
        return rewrite(v, out);
    }
    let mut element = Vec::new();
    for e in split_list(v)? {
        element.clear();
        rewrite(e, &mut element)?;
        push_list_element(&element, out);
    }
    Ok(())
}
