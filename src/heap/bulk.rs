//! The heap backend's batch access, map streaming and whole-state operations (the trait methods in
//! `backend.rs` forward here).

use std::any::Any;
use std::sync::Arc;

use crate::error::Result;
use crate::heap::backend::{HeapKeyedStateBackend, access_error};
use crate::heap::cow_map::PageRef;
use crate::heap::table::{
    DroppedTable, ErasedTable, MapCell, RawTable, StateTable, entry_hash, mix_entry_hash,
    namespace_hash,
};
use crate::key_group::locate_hash;
use crate::key_group::router::KeyRoute;
use crate::keyed::backend::{StateId, StateKey, StateValue};
use crate::keyed::checks::{check_route, wrong_state};
use crate::keyed::map_iter::MapEntries;

/// How far ahead of the key being looked up a batch prefetches its slot: enough misses in flight to
/// cover memory latency, few enough that the prefetched lines are still cached when used. The directory
/// element (page pointer) the slot's address depends on is prefetched twice as far ahead.
const PREFETCH_AHEAD: usize = 16;
/// Locations a batch get keeps between locating a key and looking it up (a power of two above
/// `2 * PREFETCH_AHEAD`).
const RING: usize = 64;

impl<K: StateKey> HeapKeyedStateBackend<K> {
    pub(crate) fn set_current_key_routed_impl(&mut self, key: K, route: KeyRoute) -> Result<()> {
        check_route(&route, self.identity.max_parallelism())?;
        debug_assert_eq!(
            route.hash(),
            key.stable_hash(&mut self.key_buf),
            "the route is not the key's"
        );
        self.set_located(key, route.hash())
    }

    /// The typed table of `id`, without needing a current key.
    #[inline]
    fn typed<N: StateKey, S: 'static>(&self, id: StateId) -> Result<&StateTable<K, N, S>> {
        self.tables
            .get(id.0 as usize)
            .and_then(|t| (t.as_ref() as &dyn Any).downcast_ref())
            .ok_or_else(|| access_error(true, id))
    }

    #[inline]
    fn typed_mut<N: StateKey, S: 'static>(
        &mut self,
        id: StateId,
    ) -> Result<&mut StateTable<K, N, S>> {
        self.tables
            .get_mut(id.0 as usize)
            .and_then(|t| (t.as_mut() as &mut dyn Any).downcast_mut())
            .ok_or_else(|| access_error(true, id))
    }

    /// `(map hash, key-group index)` of each key in `ns`; fails before anything is done if one is not
    /// owned.
    fn locate_batch<N: StateKey>(&self, keys: &[K], ns: &N) -> Result<Vec<(u64, usize)>> {
        let mut scratch = Vec::new();
        let ns_hash = namespace_hash(ns);
        let mut at = Vec::with_capacity(keys.len());
        for k in keys {
            at.push(self.locate_one(k, ns_hash, &mut scratch)?);
        }
        Ok(at)
    }

    /// `(map hash, key-group index)` of `key` in the namespace of hash `ns_hash`.
    #[inline]
    fn locate_one(&self, key: &K, ns_hash: u64, scratch: &mut Vec<u8>) -> Result<(u64, usize)> {
        let at = locate_hash(
            key.stable_hash(scratch),
            self.identity.max_parallelism(),
            self.identity.key_groups(),
        )?;
        Ok((mix_entry_hash(at.hash, ns_hash), at.index))
    }

    pub(crate) fn value_get_batch_impl<N: StateKey, V: StateValue>(
        &self,
        state: StateId,
        ns: &N,
        keys: &[K],
        out: &mut Vec<Option<V>>,
    ) -> Result<()> {
        let table = self.typed::<N, V>(state)?;
        let (ns_hash, mut scratch) = (namespace_hash(ns), Vec::new());
        let before = out.len();
        out.reserve(keys.len());
        // One pass in three stages: key i + 2 * PREFETCH_AHEAD is located and its directory element
        // prefetched; key i + PREFETCH_AHEAD's page is read from the directory (cached by now) and its
        // home slot prefetched; key i is looked up in its page. Locations and pages in between wait in
        // rings.
        let mut located = [(0u64, 0usize, 0usize); RING];
        let mut paged = [(0u64, PageRef::EMPTY); RING];
        for (j, key) in keys.iter().enumerate().take(2 * PREFETCH_AHEAD) {
            let (hash, kg) = self.locate_one(key, ns_hash, &mut scratch)?;
            located[j % RING] = (hash, kg, table.map.prefetch_directory(kg, hash));
        }
        for j in 0..PREFETCH_AHEAD.min(keys.len()) {
            let (hash, kg, p) = located[j];
            paged[j] = (hash, table.map.prefetch_page(kg, p, hash));
        }
        for (i, key) in keys.iter().enumerate() {
            if let Some(ahead) = keys.get(i + 2 * PREFETCH_AHEAD) {
                match self.locate_one(ahead, ns_hash, &mut scratch) {
                    Ok((hash, kg)) => {
                        let p = table.map.prefetch_directory(kg, hash);
                        located[(i + 2 * PREFETCH_AHEAD) % RING] = (hash, kg, p);
                    }
                    Err(e) => {
                        out.truncate(before);
                        return Err(e);
                    }
                }
            }
            if i + PREFETCH_AHEAD < keys.len() {
                let at = (i + PREFETCH_AHEAD) % RING;
                let (hash, kg, p) = located[at];
                paged[at] = (hash, table.map.prefetch_page(kg, p, hash));
            }
            let (hash, page) = paged[i % RING];
            out.push(page.get(hash, key, ns).cloned());
        }
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
        // On the heap a blind write costs what a read-modify-write does: one lookup.
        self.value_modify_batch_impl::<N, V>(state, ns, keys, &mut |i, _| Some(values[i].clone()))
    }

    pub(crate) fn value_modify_batch_impl<N: StateKey, V: StateValue>(
        &mut self,
        state: StateId,
        ns: &N,
        keys: &[K],
        f: &mut dyn FnMut(usize, Option<&V>) -> Option<V>,
    ) -> Result<()> {
        let at = self.locate_batch(keys, ns)?;
        let table = self.typed_mut::<N, V>(state)?;
        for &(hash, kg) in at.iter().take(2 * PREFETCH_AHEAD) {
            let _ = table.map.prefetch_directory(kg, hash);
        }
        for &(hash, kg) in at.iter().take(PREFETCH_AHEAD) {
            table.map.prefetch(kg, hash);
        }
        for (i, key) in keys.iter().enumerate() {
            if let Some(&(hash, kg)) = at.get(i + 2 * PREFETCH_AHEAD) {
                let _ = table.map.prefetch_directory(kg, hash);
            }
            if let Some(&(hash, kg)) = at.get(i + PREFETCH_AHEAD) {
                table.map.prefetch(kg, hash);
            }
            let (hash, kg) = at[i];
            table.map.modify(kg, hash, key, ns, |old| f(i, old));
        }
        Ok(())
    }

    /// The map cell of the current key in `ns`, if any.
    fn map_cell<N: StateKey, UK: StateKey, V: StateValue>(
        &self,
        state: StateId,
        ns: &N,
    ) -> Result<Option<&MapCell<UK, V>>> {
        let (t, c) = self.table::<N, MapCell<UK, V>>(state)?;
        Ok(t.map
            .get(c.kg_index, entry_hash(c.key_hash, ns), &c.key, ns))
    }

    pub(crate) fn map_iter_impl<'a, N: StateKey, UK: StateKey, V: StateValue>(
        &'a self,
        state: StateId,
        ns: &N,
    ) -> Result<MapEntries<'a, UK, V>> {
        Ok(match self.map_cell::<N, UK, V>(state, ns)? {
            Some(map) => MapEntries::new(map.iter().map(|(k, v)| Ok((k.clone(), v.clone())))),
            None => MapEntries::empty(),
        })
    }

    pub(crate) fn map_is_empty_impl<N: StateKey, UK: StateKey, V: StateValue>(
        &self,
        state: StateId,
        ns: &N,
    ) -> Result<bool> {
        Ok(self
            .map_cell::<N, UK, V>(state, ns)?
            .is_none_or(|m| m.is_empty()))
    }

    pub(crate) fn map_put_all_impl<N: StateKey, UK: StateKey, V: StateValue>(
        &mut self,
        state: StateId,
        ns: &N,
        entries: Vec<(UK, V)>,
    ) -> Result<()> {
        if entries.is_empty() {
            return Ok(());
        }
        let (t, c) = self.table_mut::<N, MapCell<UK, V>>(state)?;
        let hash = entry_hash(c.key_hash, ns);
        let map = t
            .map
            .get_or_insert_with(c.kg_index, hash, &c.key, ns, Default::default);
        Arc::make_mut(map).extend(entries);
        Ok(())
    }

    pub(crate) fn map_retain_impl<N: StateKey, UK: StateKey, V: StateValue>(
        &mut self,
        state: StateId,
        ns: &N,
        keep: &mut dyn FnMut(&UK, &V) -> bool,
    ) -> Result<()> {
        // Decided on the shared map first, so a map a snapshot holds is copied only if something goes.
        let Some(map) = self.map_cell::<N, UK, V>(state, ns)? else {
            return Ok(());
        };
        let gone: Vec<UK> = map
            .iter()
            .filter(|(k, v)| !keep(k, v))
            .map(|(k, _)| k.clone())
            .collect();
        if gone.is_empty() {
            return Ok(());
        }
        let all = gone.len() == map.len();
        let (t, c) = self.table_mut::<N, MapCell<UK, V>>(state)?;
        let hash = entry_hash(c.key_hash, ns);
        if all {
            t.map.remove(c.kg_index, hash, &c.key, ns);
        } else if let Some(map) = t.map.get_mut(c.kg_index, hash, &c.key, ns) {
            let map = Arc::make_mut(map);
            for k in &gone {
                map.remove(k);
            }
        }
        Ok(())
    }

    pub(crate) fn keys_and_namespaces_impl<N: StateKey>(
        &self,
        state: StateId,
    ) -> Result<Vec<(K, N)>> {
        let table = self
            .tables
            .get(state.0 as usize)
            .ok_or_else(|| wrong_state(state))?;
        let mut out: Vec<(K, N)> = Vec::new();
        if table.keys_and_namespaces(&mut out) {
            return Ok(out);
        }
        let Some(raw) = (table.as_ref() as &dyn Any).downcast_ref::<RawTable>() else {
            return Err(wrong_state(state));
        };
        raw.records()
            .map(|r| r.and_then(|(_, k, n, _)| Ok((K::decode(k)?, N::decode(n)?))))
            .collect()
    }

    pub(crate) fn drop_state_impl(&mut self, name: &str) -> Result<bool> {
        let Some(id) = self.by_name.remove(name) else {
            return Ok(false);
        };
        let table: &mut Box<dyn ErasedTable<K>> = &mut self.tables[id.0 as usize];
        let meta = table.meta().clone();
        *table = Box::new(DroppedTable(meta));
        Ok(true)
    }
}
