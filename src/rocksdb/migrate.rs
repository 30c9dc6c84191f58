//! State registration of the RocksDB backend, and schema evolution of a restored state's rows: values
//! written by an older codec are rewritten in the registering codec's encoding when the state is first
//! registered after a restore (eagerly, as Flink's RocksDB backend migrates; `docs/savepoints.md`).

use rocksdb::WriteBatch;

use crate::codec::{ByteMigration, migration_failed, rewriting};
use crate::error::Result;
use crate::format::lsm_rows::{cf_name, encode_meta, meta_key, push_list_element, split_list};
use crate::keyed::backend::{StateId, StateKey, StateValue};
use crate::keyed::timers::{check_state_name, timers_not_a_state};
use crate::keyed::ttl::{Stamped, StateTtlConfig};
use crate::keyed::ttl_switch::{Plain, ReadStored, WithTtl};
use crate::rocksdb::db::Db;
use crate::rocksdb::rows::scan_prefix;
use crate::rocksdb::states::{LsmStates, broken_state};
use crate::snapshot::state_meta::{StateKind, StateMeta};

/// `(state name, stored value codec)` → the rewrite of a stored value (the registering codec's
/// [`crate::codec::byte_migration`], or TTL switched on or off: `keyed/ttl_switch.rs`).
pub(crate) type MigrationFor<'a> = &'a dyn Fn(&str, &str) -> Result<Option<ByteMigration>>;

/// Bytes of rewritten rows per write batch while migrating (bounds the memory a migration holds; small
/// in unit tests, so that a few thousand rows make several batches).
const MIGRATION_BATCH_BYTES: usize = if cfg!(test) { 64 << 10 } else { 4 << 20 };

impl LsmStates {
    /// Registers (or finds) state `name` of `kind` (not timers) whose values are `V`, stored as they are
    /// or, with `ttl`, as [`Stamped<V>`] (`docs/ttl.md`), as [`LsmStates::register`] does; the state
    /// keeps its TTL for key listings, canonical savepoints and compaction. A restored state whose TTL
    /// was switched on has its values stamped `restored_at_ms` (`keyed/ttl_switch.rs`); switched off,
    /// their stamps removed.
    ///
    /// # Errors
    /// As [`LsmStates::register`]; [`crate::Error::InvalidArgument`] for kind timers.
    pub(crate) fn register_kind<K: StateKey, N: StateKey, UK: StateKey, V: StateValue>(
        &mut self,
        db: &mut Db,
        name: &str,
        kind: StateKind,
        ttl: Option<StateTtlConfig>,
        restored_at_ms: u64,
    ) -> Result<StateId> {
        let mut meta = match ttl {
            None => StateMeta::new::<K, N, V>(name, kind),
            Some(_) => StateMeta::new::<K, N, Stamped<V>>(name, kind),
        };
        match kind {
            StateKind::Timers => return Err(timers_not_a_state(name)),
            StateKind::Map => meta.user_key_codec = UK::codec_id(),
            _ => {}
        }
        let id = match ttl {
            None => self.register(db, meta, &|state, stored| {
                Ok(<Plain as ReadStored<V>>::migration(state, stored, 0)?.map(rewriting))
            })?,
            Some(_) => self.register(db, meta, &|state, stored| {
                let m =
                    <WithTtl as ReadStored<Stamped<V>>>::migration(state, stored, restored_at_ms);
                Ok(m?.map(rewriting))
            })?,
        };
        self.get_mut(id).ttl = ttl;
        Ok(id)
    }

    /// Registers a state, or finds it: a state registered before must match `meta` exactly; a restored
    /// state not registered yet must match its kind and key, namespace and user key codecs, and its
    /// values are migrated (`migration`) if its value codec differs.
    ///
    /// # Errors
    /// [`crate::Error::IncompatibleSchema`] if the state cannot be read as `meta` says;
    /// [`crate::Error::Corrupt`] if a stored value does not migrate (nothing was rewritten then);
    /// [`crate::Error::Local`] from RocksDB (a write error while rewriting rows leaves the state
    /// unusable: every later access and snapshot is [`crate::Error::IllegalState`]).
    pub(crate) fn register(
        &mut self,
        db: &mut Db,
        meta: StateMeta,
        migration: MigrationFor,
    ) -> Result<StateId> {
        check_state_name(&meta)?;
        if let Some(id) = self.find(&meta.name) {
            let state = self.get_mut(id);
            if state.broken {
                return Err(broken_state(&meta.name));
            }
            if state.registered {
                meta.check_compatible(&state.meta)?;
                return Ok(id);
            }
            if meta.check_layout(&state.meta)? {
                let stored = state.meta.value_codec.clone();
                let rewrite = migration(&meta.name, &stored)?;
                if let Some(rewrite) = &rewrite {
                    // Reads only: a value that does not migrate fails here with nothing written.
                    self.check_rows(db, id, &meta, &stored, rewrite)?;
                }
                let written = match &rewrite {
                    Some(rewrite) => self.rewrite_rows(db, id, &meta, &stored, rewrite),
                    None => Ok(()),
                }
                .and_then(|()| put_meta(db, &meta));
                if let Err(e) = written {
                    // Some rows may be in the new encoding under the old meta row: nothing may read or
                    // snapshot the state any more.
                    if rewrite.is_some() {
                        self.get_mut(id).broken = true;
                    }
                    return Err(e);
                }
                self.get_mut(id).meta = meta;
            }
            self.get_mut(id).registered = true;
            return Ok(id);
        }
        self.create_state(db, meta, true)
    }

    /// Registers a state read from a snapshot during restore: created unregistered (so that the job's
    /// registration may still migrate it), or checked to equal the same state of another snapshot.
    ///
    /// # Errors
    /// [`crate::Error::IncompatibleSchema`] if two snapshots describe the state differently;
    /// [`crate::Error::Local`] from RocksDB.
    pub(crate) fn register_restored(&mut self, db: &mut Db, meta: StateMeta) -> Result<StateId> {
        if let Some(id) = self.find(&meta.name) {
            meta.check_compatible(&self.get_mut(id).meta)?;
            return Ok(id);
        }
        self.create_state(db, meta, false)
    }

    fn create_state(&mut self, db: &mut Db, meta: StateMeta, registered: bool) -> Result<StateId> {
        let cf = cf_name(&meta.name);
        db.create_cf(&cf)?;
        put_meta(db, &meta)?;
        Ok(self.push(meta, cf, registered))
    }

    /// Reads every value of state `id` through `rewrite`, writing nothing: a value that does not migrate
    /// fails the registration with the rows untouched.
    fn check_rows(
        &self,
        db: &Db,
        id: StateId,
        meta: &StateMeta,
        stored: &str,
        rewrite: &ByteMigration,
    ) -> Result<()> {
        let fail = |e| migration_failed(&meta.name, stored, &meta.value_codec, e);
        let mut value = Vec::new();
        scan_prefix(db, self.cf(db, id)?, &[], |_, v| {
            rewrite_value(meta.kind, v, rewrite, &mut value).map_err(fail)?;
            Ok(true)
        })
    }

    /// Rewrites every row of state `id` through `rewrite`, in write batches of
    /// [`MIGRATION_BATCH_BYTES`]. Not atomic: a write error leaves some rows rewritten (the caller then
    /// marks the state unusable).
    fn rewrite_rows(
        &self,
        db: &Db,
        id: StateId,
        meta: &StateMeta,
        stored: &str,
        rewrite: &ByteMigration,
    ) -> Result<()> {
        let fail = |e| migration_failed(&meta.name, stored, &meta.value_codec, e);
        let mut value = Vec::new();
        let mut rows = 0u64;
        let cf = self.cf(db, id)?;
        let mut batch = WriteBatch::default();
        let mut batches = 0usize;
        let write = |batch: WriteBatch, batches: &mut usize| {
            *batches += 1;
            #[cfg(test)]
            if tests::FAIL_BATCH.with(|f| f.get()) == *batches {
                return Err(crate::Error::local("migrate", "injected write error"));
            }
            db.write(batch, "migrate")
        };
        scan_prefix(db, cf, &[], |k, v| {
            rewrite_value(meta.kind, v, rewrite, &mut value).map_err(fail)?;
            batch.put_cf(cf, k, &value);
            rows += 1;
            if batch.size_in_bytes() >= MIGRATION_BATCH_BYTES {
                write(std::mem::take(&mut batch), &mut batches)?;
            }
            Ok(true)
        })?;
        write(batch, &mut batches)?;
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

/// Writes a state's meta row (`docs/formats.md`, "RocksDB backend rows").
fn put_meta(db: &Db, meta: &StateMeta) -> Result<()> {
    db.set_meta(&meta_key(&meta.name), Some(&encode_meta(meta)))
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

#[cfg(test)]
mod tests {
    use std::cell::Cell;

    use crate::rocksdb::{RocksDbConfig, RocksDbKeyedStateBackend};
    use crate::*;

    thread_local! {
        /// The migration write batch (1-based) that fails with an injected RocksDB write error; 0: none.
        pub(super) static FAIL_BATCH: Cell<usize> = const { Cell::new(0) };
    }

    fn identity() -> SubtaskIdentity {
        SubtaskIdentity::new("op", 128, 1, 0).unwrap()
    }

    fn config(dir: &std::path::Path) -> RocksDbConfig {
        RocksDbConfig {
            local_dir: dir.into(),
            ..RocksDbConfig::default()
        }
    }

    /// A schema migration that failed on a RocksDB write error part-way left thousands of rows rewritten
    /// in the new encoding under the old meta row: reads returned wrong values and a checkpoint kept them.
    /// Now the state refuses every access and the backend every snapshot until it is restored again.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn failed_migration_write_leaves_the_state_refusing_reads_and_snapshots() {
        let dir = tempfile::tempdir().unwrap();
        let storage = CheckpointStorage::in_memory("migrate").unwrap();
        let old = ValueStateDescriptor::<VoidNamespace, u32>::new("v");
        let mut a = RocksDbKeyedStateBackend::<u64>::new(identity(), config(dir.path())).unwrap();
        let s = a.value_state(&old).unwrap();
        for k in 0..24_000u64 {
            a.set_current_key(k).unwrap();
            s.update(&mut a, &VoidNamespace, k as u32).unwrap();
        }
        let handle = a.snapshot(1, &storage).unwrap().run().await.unwrap().handle;
        let mut b = RocksDbKeyedStateBackend::<u64>::restore(
            identity(),
            config(dir.path()),
            &storage,
            &[handle],
            RestoreMode::NoClaim,
        )
        .await
        .unwrap();
        FAIL_BATCH.with(|f| f.set(3));
        let new = ValueStateDescriptor::<VoidNamespace, u64>::new("v");
        let err = b.value_state(&new).err().expect("the injected write error");
        FAIL_BATCH.with(|f| f.set(0));
        assert_eq!(err.kind(), ErrorKind::Storage, "{err}");
        // Neither the old nor the new registration reads anything, and no snapshot is taken.
        for attempt in [b.value_state(&new).err(), b.value_state(&old).err()] {
            let e = attempt.expect("refused");
            assert!(e.to_string().contains("unusable"), "{e}");
        }
        let refused = b.snapshot(2, &storage).err().expect("snapshot refused");
        assert!(refused.to_string().contains("unusable"), "{refused}");
    }
}
