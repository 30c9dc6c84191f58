//! The LSM backend's batch access (sorted `multi_get`, one `WriteBatch`), streamed map iteration and
//! whole-state operations (the trait methods in `backend.rs` forward here).

use rocksdb::WriteBatch;

use crate::error::{Error, Result};
use crate::format::lsm_rows::{meta_key, push_key_prefix, push_namespace, split_row_key};
use crate::key_group::router::KeyRoute;
use crate::key_group::{locate_hash, stable_key_hash};
use crate::keyed::backend::{StateId, StateKey, StateValue};
use crate::keyed::checks::{check_route, wrong_state};
use crate::keyed::map_iter::MapEntries;
use crate::rocksdb::backend::RocksDbKeyedStateBackend;
use crate::rocksdb::db::db_error;
use crate::rocksdb::import_rows::Rows;

/// Row keys of a batch in one buffer, and the batch positions in row-key order (what `multi_get` wants).
struct BatchRows {
    rows: Rows,
    sorted: Vec<usize>,
}

impl BatchRows {
    /// The row key of batch position `i`.
    fn row(&self, i: usize) -> &[u8] {
        self.rows.key_at(i)
    }
}

impl<K: StateKey> RocksDbKeyedStateBackend<K> {
    pub(crate) fn set_current_key_routed_impl(&mut self, key: K, route: KeyRoute) -> Result<()> {
        check_route(&route, self.identity.max_parallelism())?;
        let at = locate_hash(
            route.hash(),
            self.identity.max_parallelism(),
            self.identity.key_groups(),
        )?;
        // The row key needs the key's bytes; only the hash is saved.
        self.key_scratch.clear();
        key.encode(&mut self.key_scratch);
        debug_assert_eq!(
            stable_key_hash(&self.key_scratch),
            route.hash(),
            "the route is not the key's"
        );
        self.set_located(key, at.key_group);
        Ok(())
    }

    /// The row key of each key in `ns`, checked to be owned before anything is read or written.
    fn batch_rows<N: StateKey>(&self, keys: &[K], ns: &N) -> Result<BatchRows> {
        let mut bytes = Vec::new();
        let mut rows = Rows::with_capacity(keys.len(), keys.len() * 16);
        for key in keys {
            bytes.clear();
            key.encode(&mut bytes);
            let at = locate_hash(
                stable_key_hash(&bytes),
                self.identity.max_parallelism(),
                self.identity.key_groups(),
            )?;
            rows.push(
                |row| {
                    push_key_prefix(at.key_group, self.identity.max_parallelism(), &bytes, row);
                    push_namespace(row, |out| ns.encode(out));
                },
                |_| {},
            );
        }
        let sorted = rows.sorted_positions();
        Ok(BatchRows { rows, sorted })
    }

    /// The decoded values of `batch`'s rows, in batch order, read with one sorted `multi_get`.
    fn read_batch<V: StateValue>(
        &self,
        state: StateId,
        batch: &BatchRows,
    ) -> Result<Vec<Option<V>>> {
        let cf = self.cf(state)?;
        let found = self
            .db
            .multi_get(cf, batch.sorted.iter().map(|&i| batch.row(i)))?;
        let mut values: Vec<Option<V>> = Vec::with_capacity(batch.sorted.len());
        values.resize_with(batch.sorted.len(), || None);
        for (&i, got) in batch.sorted.iter().zip(found) {
            if let Some(bytes) = got {
                values[i] = Some(V::decode(&bytes)?);
            }
        }
        Ok(values)
    }

    pub(crate) fn value_get_batch_impl<N: StateKey, V: StateValue>(
        &self,
        state: StateId,
        ns: &N,
        keys: &[K],
        out: &mut Vec<Option<V>>,
    ) -> Result<()> {
        let batch = self.batch_rows(keys, ns)?;
        out.extend(self.read_batch::<V>(state, &batch)?);
        Ok(())
    }

    pub(crate) fn value_put_batch_impl<N: StateKey, V: StateValue>(
        &mut self,
        state: StateId,
        ns: &N,
        keys: &[K],
        values: &[V],
    ) -> Result<()> {
        crate::keyed::state_ops::check_lengths(keys.len(), values.len())?;
        let batch = self.batch_rows(keys, ns)?;
        let cf = self.cf(state)?;
        let mut write = WriteBatch::default();
        let mut value_bytes = Vec::new();
        // Row-key order (equal rows by position, so the last value of a repeated key is written last and
        // wins): the memtable's skip list inserts sorted keys cheaply.
        for &i in &batch.sorted {
            value_bytes.clear();
            values[i].encode(&mut value_bytes);
            write.put_cf(cf, batch.row(i), &value_bytes);
        }
        self.db.write(write, "write batch")
    }

    pub(crate) fn value_modify_batch_impl<N: StateKey, V: StateValue>(
        &mut self,
        state: StateId,
        ns: &N,
        keys: &[K],
        f: &mut dyn FnMut(usize, Option<&V>) -> Option<V>,
    ) -> Result<()> {
        let batch = self.batch_rows(keys, ns)?;
        let mut values = self.read_batch::<V>(state, &batch)?;
        // A key twice in the batch: every position of a row works on the value of its first position
        // (`sorted` orders equal rows by position).
        let mut first: Vec<usize> = (0..keys.len()).collect();
        for pair in batch.sorted.windows(2) {
            if batch.row(pair[0]) == batch.row(pair[1]) {
                first[pair[1]] = first[pair[0]];
            }
        }
        let existed: Vec<bool> = values.iter().map(Option::is_some).collect();
        let mut touched = vec![false; keys.len()];
        for (i, &at) in first.iter().enumerate() {
            values[at] = f(i, values[at].as_ref());
            touched[at] = true;
        }
        let cf = self.cf(state)?;
        let mut write = WriteBatch::default();
        let mut value_bytes = Vec::new();
        for &i in &batch.sorted {
            if !touched[i] {
                continue;
            }
            match &values[i] {
                Some(v) => {
                    value_bytes.clear();
                    v.encode(&mut value_bytes);
                    write.put_cf(cf, batch.row(i), &value_bytes);
                }
                None if existed[i] => write.delete_cf(cf, batch.row(i)),
                None => {}
            }
        }
        self.db.write(write, "write batch")
    }

    pub(crate) fn map_iter_impl<'a, N: StateKey, UK: StateKey, V: StateValue>(
        &'a self,
        state: StateId,
        ns: &N,
    ) -> Result<MapEntries<'a, UK, V>> {
        let mut prefix = Vec::with_capacity(64);
        self.row_key(ns, &mut prefix)?;
        let cf = self.cf(state)?;
        let mut it = self.db.iter(cf);
        it.seek(&prefix);
        let mut done = false;
        Ok(MapEntries::new(std::iter::from_fn(move || {
            if done {
                return None;
            }
            match (it.key(), it.value()) {
                (Some(k), Some(v)) if k.starts_with(&prefix) => {
                    let entry =
                        UK::decode(&k[prefix.len()..]).and_then(|uk| Ok((uk, V::decode(v)?)));
                    it.next();
                    Some(entry)
                }
                _ => {
                    done = true;
                    it.status().err().map(|e| Err(db_error("map iteration", e)))
                }
            }
        })))
    }

    pub(crate) fn map_is_empty_impl<N: StateKey>(&self, state: StateId, ns: &N) -> Result<bool> {
        let mut prefix = Vec::with_capacity(64);
        self.row_key(ns, &mut prefix)?;
        let mut empty = true;
        self.scan_prefix(state, &prefix, |_, _| {
            empty = false;
            Ok(false)
        })?;
        Ok(empty)
    }

    pub(crate) fn map_put_all_impl<N: StateKey, UK: StateKey, V: StateValue>(
        &mut self,
        state: StateId,
        ns: &N,
        entries: Vec<(UK, V)>,
    ) -> Result<()> {
        let mut prefix = Vec::with_capacity(64);
        self.row_key(ns, &mut prefix)?;
        let cf = self.cf(state)?;
        let mut write = WriteBatch::default();
        let (mut row, mut value) = (Vec::new(), Vec::new());
        for (uk, v) in entries {
            row.clear();
            row.extend_from_slice(&prefix);
            uk.encode(&mut row);
            value.clear();
            v.encode(&mut value);
            write.put_cf(cf, &row, &value);
        }
        self.db.write(write, "write batch")
    }

    pub(crate) fn map_retain_impl<N: StateKey, UK: StateKey, V: StateValue>(
        &mut self,
        state: StateId,
        ns: &N,
        keep: &mut dyn FnMut(&UK, &V) -> bool,
    ) -> Result<()> {
        let mut prefix = Vec::with_capacity(64);
        self.row_key(ns, &mut prefix)?;
        let cf = self.cf(state)?;
        let mut write = WriteBatch::default();
        self.scan_prefix(state, &prefix, |k, v| {
            let (uk, value) = (UK::decode(&k[prefix.len()..])?, V::decode(v)?);
            if !keep(&uk, &value) {
                write.delete_cf(cf, k);
            }
            Ok(true)
        })?;
        self.db.write(write, "write batch")
    }

    pub(crate) fn keys_impl<N: StateKey>(&self, state: StateId, ns: &N) -> Result<Vec<K>> {
        self.check_namespace::<N>(state)?;
        let mut want = Vec::new();
        ns.encode(&mut want);
        let mut out = Vec::new();
        let mut last: Vec<u8> = Vec::new();
        let mut first = true;
        let owned = self.identity.key_groups();
        self.scan_prefix(state, &[], |k, _| {
            let row = split_row_key(k, self.identity.max_parallelism())?;
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

    /// Entries of all states, as RocksDB estimates them (`rocksdb.estimate-num-keys`; map entries count one
    /// each).
    pub fn estimated_entries(&self) -> u64 {
        self.states
            .iter()
            .filter(|s| !s.cf.is_empty())
            .filter_map(|s| {
                let names = [s.cf.as_str()];
                self.db
                    .int_property(&names, "rocksdb.estimate-num-keys")
                    .ok()
                    .flatten()
            })
            .sum()
    }

    pub(crate) fn keys_and_namespaces_impl<N: StateKey>(
        &self,
        state: StateId,
    ) -> Result<Vec<(K, N)>> {
        self.check_namespace::<N>(state)?;
        let owned = self.identity.key_groups();
        let mut out = Vec::new();
        // Rows of one (key, namespace) are adjacent (map rows differ only in their user key).
        let mut last: Option<(Vec<u8>, Vec<u8>)> = None;
        self.scan_prefix(state, &[], |k, _| {
            let row = split_row_key(k, self.identity.max_parallelism())?;
            if !owned.contains(row.key_group) {
                return Ok(true);
            }
            if last
                .as_ref()
                .is_some_and(|(lk, ln)| lk == row.key && ln == row.namespace)
            {
                return Ok(true);
            }
            out.push((K::decode(row.key)?, N::decode(row.namespace)?));
            last = Some((row.key.to_vec(), row.namespace.to_vec()));
            Ok(true)
        })?;
        Ok(out)
    }

    pub(crate) fn drop_state_impl(&mut self, name: &str) -> Result<bool> {
        let Some(id) = self.by_name.remove(name) else {
            return Ok(false);
        };
        let cf = std::mem::take(&mut self.states[id.0 as usize].cf);
        self.db.set_meta(&meta_key(name), None)?;
        self.db.drop_cf(&cf)?;
        Ok(true)
    }

    /// A state id used with a namespace type chosen by the caller (`keys`, `keys_and_namespaces`) must
    /// name the state's own namespace codec: bytes of one type can decode as another.
    pub(crate) fn check_namespace<N: StateKey>(&self, state: StateId) -> Result<()> {
        let meta = &self
            .states
            .get(state.0 as usize)
            .ok_or_else(|| wrong_state(state))?
            .meta;
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
