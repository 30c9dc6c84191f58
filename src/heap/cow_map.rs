//! The copy-on-write map behind every heap state: one extendible-hash directory of pages per key group,
//! shared with snapshots through `Arc` (see `docs/design.md`, "Copy-on-write heap map").
//!
//! Invariant: a snapshot holds `Arc`s to the key-group maps as they were when it was taken; every mutation
//! goes through `Arc::make_mut`, so a map or page still held by a snapshot is copied (shallowly: pointers
//! for a directory, at most [`PAGE_CAPACITY`] entries for a page) before it changes. Reads never copy.

use std::sync::Arc;

use hashbrown::HashTable;
use hashbrown::hash_table::Entry as TableEntry;

/// Entries per page before it splits: the load limit of a 128-bucket hashbrown table.
pub(crate) const PAGE_CAPACITY: usize = 112;
/// The directory indexes pages with hash bits `DIR_SHIFT..`; hashbrown uses the low bits (bucket) and the
/// top 7 bits (tag), so none of the three correlate.
const DIR_SHIFT: u32 = 16;
/// Largest directory depth (2^20 slots per key group); pages beyond it grow instead of splitting.
const MAX_DEPTH: u8 = 20;

/// One mapping `(key, namespace) -> value` with its map hash.
#[derive(Clone, Debug)]
pub(crate) struct Entry<K, N, S> {
    pub(crate) hash: u64,
    pub(crate) key: K,
    pub(crate) ns: N,
    pub(crate) value: S,
}

#[derive(Clone)]
struct Page<K, N, S> {
    /// Number of hash bits shared by all entries of this page.
    local_depth: u8,
    table: HashTable<Entry<K, N, S>>,
}

impl<K, N, S> Page<K, N, S> {
    fn new(local_depth: u8, capacity: usize) -> Self {
        Page {
            local_depth,
            table: HashTable::with_capacity(capacity),
        }
    }
}

/// All entries of one key group of one state.
#[derive(Clone)]
pub(crate) struct KeyGroupMap<K, N, S> {
    global_depth: u8,
    /// `2^global_depth` slots, each the number of a page in `pages`; a page of local depth `d` fills the
    /// `2^(global_depth - d)` slots whose low `d` bits equal its own.
    slots: Vec<u32>,
    /// Each page exactly once, so that an `Arc` count above one always means "shared with a snapshot".
    pages: Vec<Arc<Page<K, N, S>>>,
    len: usize,
}

#[inline]
fn dir_index(hash: u64, depth: u8) -> usize {
    ((hash >> DIR_SHIFT) as usize) & ((1usize << depth) - 1)
}

impl<K, N, S> KeyGroupMap<K, N, S> {
    fn new() -> Self {
        KeyGroupMap {
            global_depth: 0,
            slots: vec![0],
            pages: vec![Arc::new(Page::new(0, 0))],
            len: 0,
        }
    }

    /// Number of the page that holds `hash`.
    #[inline]
    fn page_no(&self, hash: u64) -> usize {
        self.slots[dir_index(hash, self.global_depth)] as usize
    }

    #[inline]
    fn page(&self, hash: u64) -> &Page<K, N, S> {
        &self.pages[self.page_no(hash)]
    }

    /// Iterates every entry once.
    pub(crate) fn iter(&self) -> impl Iterator<Item = &Entry<K, N, S>> {
        self.pages.iter().flat_map(|page| page.table.iter())
    }
}

impl<K: Clone, N: Clone, S: Clone> KeyGroupMap<K, N, S> {
    /// Splits the page that holds `hash` on its next hash bit, doubling the directory if needed.
    fn split(&mut self, hash: u64) {
        let page_no = self.page_no(hash);
        let depth = self.pages[page_no].local_depth;
        if depth >= MAX_DEPTH {
            return;
        }
        if depth == self.global_depth {
            self.slots.extend_from_within(..);
            self.global_depth += 1;
        }
        let old = std::mem::replace(&mut self.pages[page_no], Arc::new(Page::new(depth, 0)));
        let bit = 1u64 << (DIR_SHIFT + u32::from(depth));
        let mut low = Page::new(depth + 1, old.table.len());
        let mut high = Page::new(depth + 1, old.table.len());
        let mut place = |e: Entry<K, N, S>| {
            let page = if e.hash & bit == 0 {
                &mut low
            } else {
                &mut high
            };
            page.table.insert_unique(e.hash, e, |e| e.hash);
        };
        match Arc::try_unwrap(old) {
            // Not shared with a snapshot: move the entries.
            Ok(page) => page.table.into_iter().for_each(&mut place),
            // Still part of a snapshot: copy them, the snapshot keeps the old page.
            Err(shared) => shared.table.iter().cloned().for_each(&mut place),
        }
        self.pages[page_no] = Arc::new(low);
        let high_no = self.pages.len() as u32;
        self.pages.push(Arc::new(high));
        let stride = 1usize << depth;
        let base = dir_index(hash, depth);
        for slot in (base..self.slots.len()).step_by(stride) {
            if slot & stride != 0 {
                self.slots[slot] = high_no;
            }
        }
    }
}

/// A copy-on-write map from `(key, namespace)` to `S`, partitioned by key group.
///
/// Key groups are addressed by their index inside the backend's key-group range (`0..groups`); `hash` is
/// the caller's map hash of `(key, namespace)` and must be the same for equal pairs.
pub(crate) struct CowMap<K, N, S> {
    groups: Vec<Arc<KeyGroupMap<K, N, S>>>,
    len: usize,
}

impl<K, N, S> CowMap<K, N, S>
where
    K: Eq + Clone,
    N: Eq + Clone,
    S: Clone,
{
    /// An empty map of `groups` key groups.
    pub(crate) fn new(groups: usize) -> Self {
        CowMap {
            groups: (0..groups).map(|_| Arc::new(KeyGroupMap::new())).collect(),
            len: 0,
        }
    }

    /// Number of entries.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Number of key groups.
    pub(crate) fn groups(&self) -> usize {
        self.groups.len()
    }

    /// The value of `(key, ns)` in key group `kg`.
    #[inline]
    pub(crate) fn get(&self, kg: usize, hash: u64, key: &K, ns: &N) -> Option<&S> {
        self.groups[kg]
            .page(hash)
            .table
            .find(hash, |e| e.hash == hash && e.key == *key && e.ns == *ns)
            .map(|e| &e.value)
    }

    /// Mutable access to the value of `(key, ns)`; copies shared structure only if the entry exists.
    #[inline]
    pub(crate) fn get_mut(&mut self, kg: usize, hash: u64, key: &K, ns: &N) -> Option<&mut S> {
        let eq = |e: &Entry<K, N, S>| e.hash == hash && e.key == *key && e.ns == *ns;
        self.groups[kg].page(hash).table.find(hash, eq)?;
        let group = Arc::make_mut(&mut self.groups[kg]);
        let page_no = group.page_no(hash);
        Arc::make_mut(&mut group.pages[page_no])
            .table
            .find_mut(hash, eq)
            .map(|e| &mut e.value)
    }

    /// The value of `(key, ns)`, inserting `make()` first if absent.
    #[inline]
    pub(crate) fn get_or_insert_with(
        &mut self,
        kg: usize,
        hash: u64,
        key: &K,
        ns: &N,
        make: impl FnOnce() -> S,
    ) -> &mut S {
        let eq = |e: &Entry<K, N, S>| e.hash == hash && e.key == *key && e.ns == *ns;
        let group = Arc::make_mut(&mut self.groups[kg]);
        let full = group.page(hash).table.len() >= PAGE_CAPACITY;
        if full && group.page(hash).table.find(hash, eq).is_none() {
            group.split(hash);
        }
        let page_no = group.page_no(hash);
        let page = Arc::make_mut(&mut group.pages[page_no]);
        match page.table.entry(hash, eq, |e| e.hash) {
            TableEntry::Occupied(o) => &mut o.into_mut().value,
            TableEntry::Vacant(v) => {
                group.len += 1;
                self.len += 1;
                let entry = Entry {
                    hash,
                    key: key.clone(),
                    ns: ns.clone(),
                    value: make(),
                };
                &mut v.insert(entry).into_mut().value
            }
        }
    }

    /// Sets `(key, ns)` to `value`; returns the previous value.
    #[inline]
    pub(crate) fn insert(&mut self, kg: usize, hash: u64, key: &K, ns: &N, value: S) -> Option<S> {
        let mut fresh = Some(value);
        let slot = self.get_or_insert_with(kg, hash, key, ns, || {
            fresh.take().expect("make is called at most once")
        });
        fresh.map(|value| std::mem::replace(slot, value))
    }

    /// Removes `(key, ns)`; copies shared structure only if the entry exists.
    pub(crate) fn remove(&mut self, kg: usize, hash: u64, key: &K, ns: &N) -> Option<S> {
        let eq = |e: &Entry<K, N, S>| e.hash == hash && e.key == *key && e.ns == *ns;
        self.groups[kg].page(hash).table.find(hash, eq)?;
        let group = Arc::make_mut(&mut self.groups[kg]);
        let page_no = group.page_no(hash);
        let page = Arc::make_mut(&mut group.pages[page_no]);
        let removed = page.table.find_entry(hash, eq).ok()?.remove().0;
        group.len -= 1;
        self.len -= 1;
        Some(removed.value)
    }

    /// Entries of key group `kg`.
    pub(crate) fn iter_group(&self, kg: usize) -> impl Iterator<Item = &Entry<K, N, S>> {
        self.groups[kg].iter()
    }

    /// Freezes the current version: O(key groups) pointer copies, no entry is copied or serialized.
    pub(crate) fn snapshot(&self) -> CowSnapshot<K, N, S> {
        CowSnapshot {
            groups: self.groups.iter().map(|g| Some(Arc::clone(g))).collect(),
        }
    }
}

/// A frozen version of a [`CowMap`], independent of later writes; `Send` if the entries are.
pub(crate) struct CowSnapshot<K, N, S> {
    groups: Vec<Option<Arc<KeyGroupMap<K, N, S>>>>,
}

impl<K, N, S> CowSnapshot<K, N, S> {
    /// Takes key group `kg` out of the snapshot; dropping it releases pages that writers copied away from.
    pub(crate) fn take_group(&mut self, kg: usize) -> Option<Arc<KeyGroupMap<K, N, S>>> {
        self.groups.get_mut(kg)?.take()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn h(k: u64) -> u64 {
        // A well-mixed hash (murmur3 fmix64), as the heap backend uses.
        crate::heap::table::fmix64(k)
    }

    #[test]
    fn model_check_with_splits_and_snapshots() {
        let mut map: CowMap<u64, u32, u64> = CowMap::new(3);
        let mut model: BTreeMap<(usize, u64, u32), u64> = BTreeMap::new();
        let mut snapshots = Vec::new();
        let mut x = 7u64;
        for step in 0..40_000u64 {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let key = (x >> 33) % 3000;
            let ns = ((x >> 20) % 3) as u32;
            let kg = (key % 3) as usize;
            let hash = h(key ^ u64::from(ns) << 40);
            match (x >> 60) % 4 {
                0 => {
                    assert_eq!(
                        map.remove(kg, hash, &key, &ns),
                        model.remove(&(kg, key, ns))
                    );
                }
                1 => {
                    if let Some(v) = map.get_mut(kg, hash, &key, &ns) {
                        *v += 1;
                    }
                    if let Some(v) = model.get_mut(&(kg, key, ns)) {
                        *v += 1;
                    }
                }
                _ => {
                    assert_eq!(
                        map.insert(kg, hash, &key, &ns, step),
                        model.insert((kg, key, ns), step)
                    );
                }
            }
            assert_eq!(map.get(kg, hash, &key, &ns), model.get(&(kg, key, ns)));
            if step % 5000 == 0 {
                snapshots.push((map.snapshot(), model.clone()));
            }
        }
        assert_eq!(map.len(), model.len());
        let mut all: Vec<_> = (0..3)
            .flat_map(|g| map.iter_group(g).map(move |e| ((g, e.key, e.ns), e.value)))
            .collect();
        all.sort();
        assert_eq!(all, model.into_iter().collect::<Vec<_>>());
        // Every snapshot still shows exactly the state at the moment it was taken.
        for (mut snap, frozen) in snapshots {
            let mut seen: Vec<_> = (0..3)
                .flat_map(|g| {
                    let group = snap.take_group(g).unwrap();
                    group
                        .iter()
                        .map(|e| ((g, e.key, e.ns), e.value))
                        .collect::<Vec<_>>()
                })
                .collect();
            seen.sort();
            assert_eq!(seen, frozen.into_iter().collect::<Vec<_>>());
        }
    }
}
