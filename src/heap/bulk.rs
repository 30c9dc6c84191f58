//! The heap backend's batch access and map streaming, as functions of a state's table (and the subtask's
//! identity, which says where keys are, or the current key): the trait methods in `backend.rs` find the
//! table and call them.

use std::sync::Arc;

use crate::error::Result;
use crate::heap::cow_map::{Logged, PageRef};
use crate::heap::serde::MapCell;
use crate::heap::table::{CurrentKey, StateTable, entry_hash, mix_entry_hash, namespace_hash};
use crate::key_group::locate_hash;
use crate::keyed::backend::{StateKey, StateValue};
use crate::keyed::identity::SubtaskIdentity;
use crate::keyed::map_iter::MapEntries;

/// How far ahead of the key being looked up a batch prefetches its slot: enough misses in flight to
/// cover memory latency, few enough that the prefetched lines are still cached when used. The directory
/// element (page pointer) the slot's address depends on is prefetched twice as far ahead.
const PREFETCH_AHEAD: usize = 16;
/// Locations a batch get keeps between locating a key and looking it up (a power of two above
/// `2 * PREFETCH_AHEAD`).
const RING: usize = 64;

/// `(map hash, key-group index)` of each key in `ns`; fails before anything is done if one is not
/// owned.
fn locate_batch<K: StateKey, N: StateKey>(
    identity: &SubtaskIdentity,
    keys: &[K],
    ns: &N,
) -> Result<Vec<(u64, usize)>> {
    let mut scratch = Vec::new();
    let ns_hash = namespace_hash(ns);
    let mut at = Vec::with_capacity(keys.len());
    for k in keys {
        at.push(locate_one(identity, k, ns_hash, &mut scratch)?);
    }
    Ok(at)
}

/// `(map hash, key-group index)` of `key` in the namespace of hash `ns_hash`.
#[inline]
fn locate_one<K: StateKey>(
    identity: &SubtaskIdentity,
    key: &K,
    ns_hash: u64,
    scratch: &mut Vec<u8>,
) -> Result<(u64, usize)> {
    let at = locate_hash(
        key.stable_hash(scratch),
        identity.max_parallelism(),
        identity.key_groups(),
    )?;
    Ok((mix_entry_hash(at.hash, ns_hash), at.index))
}

/// The values of `keys` in `ns`, appended to `out` in order; nothing is appended if a key is not owned.
///
/// # Errors
/// [`Error::InvalidArgument`](crate::Error::InvalidArgument) for a key outside `identity`'s key groups.
pub(crate) fn value_get_batch<K: StateKey, N: StateKey, V: StateValue>(
    table: &StateTable<K, N, V>,
    identity: &SubtaskIdentity,
    ns: &N,
    keys: &[K],
    out: &mut Vec<Option<V>>,
) -> Result<()> {
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
        let (hash, kg) = locate_one(identity, key, ns_hash, &mut scratch)?;
        located[j % RING] = (hash, kg, table.map.prefetch_directory(kg, hash));
    }
    for j in 0..PREFETCH_AHEAD.min(keys.len()) {
        let (hash, kg, p) = located[j];
        paged[j] = (hash, table.map.prefetch_page(kg, p, hash));
    }
    for (i, key) in keys.iter().enumerate() {
        if let Some(ahead) = keys.get(i + 2 * PREFETCH_AHEAD) {
            match locate_one(identity, ahead, ns_hash, &mut scratch) {
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

/// Writes `values[i]` for `keys[i]` in `ns`; nothing is written if a key is not owned.
///
/// # Errors
/// [`Error::InvalidArgument`](crate::Error::InvalidArgument) for lengths that differ or a key outside
/// `identity`'s key groups.
pub(crate) fn value_put_batch<K: StateKey, N: StateKey, V: StateValue>(
    table: &mut StateTable<K, N, V>,
    identity: &SubtaskIdentity,
    ns: &N,
    keys: &[K],
    values: &[V],
) -> Result<()> {
    crate::keyed::state_ops::check_lengths(keys.len(), values.len())?;
    // On the heap a blind write costs what a read-modify-write does: one lookup.
    value_modify_batch(table, identity, ns, keys, &mut |i, _| {
        Some(values[i].clone())
    })
}

/// Replaces the value of `keys[i]` in `ns` by `f(i, old)` (`None` removes it); nothing changes if a key
/// is not owned.
///
/// # Errors
/// [`Error::InvalidArgument`](crate::Error::InvalidArgument) for a key outside `identity`'s key groups.
pub(crate) fn value_modify_batch<K: StateKey, N: StateKey, V: StateValue>(
    table: &mut StateTable<K, N, V>,
    identity: &SubtaskIdentity,
    ns: &N,
    keys: &[K],
    f: &mut dyn FnMut(usize, Option<&V>) -> Option<V>,
) -> Result<()> {
    let at = locate_batch(identity, keys, ns)?;
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

/// A map state's table with the current key.
type MapTable<'a, K, N, UK, V> = (&'a StateTable<K, N, MapCell<UK, V>>, &'a CurrentKey<K>);

/// The map cell of the current key in `ns`, if any.
fn map_cell<'a, K: StateKey, N: StateKey, UK: StateKey, V: StateValue>(
    (t, c): MapTable<'a, K, N, UK, V>,
    ns: &N,
) -> Option<&'a MapCell<UK, V>> {
    t.map
        .get(c.kg_index, entry_hash(c.key_hash, ns), &c.key, ns)
}

/// The entries of the current key's map in `ns`.
pub(crate) fn map_iter<'a, K: StateKey, N: StateKey, UK: StateKey, V: StateValue>(
    table: MapTable<'a, K, N, UK, V>,
    ns: &N,
) -> MapEntries<'a, UK, V> {
    match map_cell(table, ns) {
        Some(map) => MapEntries::new(map.iter().map(|(k, v)| Ok((k.clone(), v.clone())))),
        None => MapEntries::empty(),
    }
}

/// Whether the current key's map in `ns` has no entry.
pub(crate) fn map_is_empty<K: StateKey, N: StateKey, UK: StateKey, V: StateValue>(
    table: MapTable<'_, K, N, UK, V>,
    ns: &N,
) -> bool {
    map_cell(table, ns).is_none_or(|m| m.is_empty())
}

/// Puts `uk -> value` into the current key's map in `ns`; in a map that exists, logged as a change of
/// that user key alone (a delta writes only the user keys that changed).
pub(crate) fn map_put<K: StateKey, N: StateKey, UK: StateKey, V: StateValue>(
    t: &mut StateTable<K, N, MapCell<UK, V>>,
    c: &CurrentKey<K>,
    ns: &N,
    uk: UK,
    value: V,
) {
    let hash = entry_hash(c.key_hash, ns);
    let patch = Logged::Patch(&|b: &mut Vec<u8>| uk.encode(b));
    let map = (t.map).get_or_insert_logged(c.kg_index, hash, &c.key, ns, Default::default, patch);
    Arc::make_mut(map).insert(uk, value);
}

/// Removes `uk` from the current key's map in `ns`, and the map's entry with its last user key; else
/// logged as a change of that user key alone.
pub(crate) fn map_remove<K: StateKey, N: StateKey, UK: StateKey, V: StateValue>(
    t: &mut StateTable<K, N, MapCell<UK, V>>,
    c: &CurrentKey<K>,
    ns: &N,
    uk: &UK,
) {
    let hash = entry_hash(c.key_hash, ns);
    let Some(map) = t.map.get(c.kg_index, hash, &c.key, ns) else {
        return;
    };
    if !map.contains_key(uk) {
        return;
    }
    if map.len() == 1 {
        t.map.remove(c.kg_index, hash, &c.key, ns);
        return;
    }
    let patch = Logged::Patch(&|b: &mut Vec<u8>| uk.encode(b));
    if let Some(map) = t.map.get_mut(c.kg_index, hash, &c.key, ns, patch) {
        Arc::make_mut(map).remove(uk);
    }
}

/// Puts `entries` into the current key's map in `ns`.
pub(crate) fn map_put_all<K: StateKey, N: StateKey, UK: StateKey, V: StateValue>(
    t: &mut StateTable<K, N, MapCell<UK, V>>,
    c: &CurrentKey<K>,
    ns: &N,
    entries: Vec<(UK, V)>,
) {
    if entries.is_empty() {
        return;
    }
    let hash = entry_hash(c.key_hash, ns);
    let map = t
        .map
        .get_or_insert_with(c.kg_index, hash, &c.key, ns, Default::default);
    Arc::make_mut(map).extend(entries);
}

/// Keeps the entries of the current key's map in `ns` for which `keep` holds.
pub(crate) fn map_retain<K: StateKey, N: StateKey, UK: StateKey, V: StateValue>(
    t: &mut StateTable<K, N, MapCell<UK, V>>,
    c: &CurrentKey<K>,
    ns: &N,
    keep: &mut dyn FnMut(&UK, &V) -> bool,
) {
    // Decided on the shared map first, so a map a snapshot holds is copied only if something goes.
    let Some(map) = map_cell((&*t, c), ns) else {
        return;
    };
    let gone: Vec<UK> = map
        .iter()
        .filter(|(k, v)| !keep(k, v))
        .map(|(k, _)| k.clone())
        .collect();
    if gone.is_empty() {
        return;
    }
    let all = gone.len() == map.len();
    let hash = entry_hash(c.key_hash, ns);
    if all {
        t.map.remove(c.kg_index, hash, &c.key, ns);
    } else if let Some(map) = t.map.get_mut(c.kg_index, hash, &c.key, ns, Logged::Write) {
        let map = Arc::make_mut(map);
        for k in &gone {
            map.remove(k);
        }
    }
}
