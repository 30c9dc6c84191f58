//! The copy-on-write map behind every heap state (see `docs/design.md`, "Copy-on-write heap map").
//!
//! Shape: one [`KeyGroupMap`] per key group, shared with snapshots through an `Arc`. A key-group map is a
//! linear-hashing directory (Litwin, 1980) of pages; a page is an `Arc<[Slot]>` probed linearly, with the
//! entries stored inline in the slots. A lookup therefore touches the key-group pointer, one directory
//! element and the slots it probes: one likely cache miss where a SwissTable pays two (control byte, entry).
//!
//! Invariant: a snapshot holds `Arc`s to the key-group maps as they were when it was taken; every mutation
//! first makes the key-group map and then the page unique (copying them if a snapshot still holds them), so
//! a snapshot never sees a later write. The copy is shallow for a directory (page pointers) and one page of
//! entries otherwise. Reads never copy.
//!
//! Growth never rehashes more than one page at a time: an insert that takes the key group above
//! [`SPLIT_AT`] entries per page splits the next page in linear-hashing order, and a page whose slots are
//! more than 7/8 full doubles its own slots. Removal is backward-shift deletion, so there are no tombstones.

use std::num::NonZeroU64;
use std::sync::Arc;
use std::sync::atomic::{Ordering, fence};

pub(crate) use probe::Entry;
use probe::{MIN_SLOTS, Slot, find_in, home, place, remove_at, slots_for, stored_hash};

/// Average entries per page above which the next page of the key group splits.
pub(crate) const SPLIT_AT: usize = 64;

/// Mutable access to the value behind `arc`, copying it first if a snapshot still shares it.
///
/// Same result as `Arc::make_mut`, without its atomic compare-and-swap when the value is not shared: a
/// locked instruction per write drains the store buffer and stops the processor from running ahead into
/// the next records' cache misses (`benches/heap_ops.rs`, update: see `docs/design.md`). Always inlined:
/// a call per write when LLVM chose not to (`docs/heap-incremental.md`, "Lists and maps").
#[inline(always)]
#[allow(unsafe_code, reason = "measured: the doc comment, docs/design.md")]
fn unique<T: ?Sized>(arc: &mut Arc<T>, copy: impl FnOnce(&T) -> Arc<T>) -> &mut T {
    if Arc::strong_count(arc) != 1 {
        *arc = copy(arc);
    }
    // Pairs with the release decrement of the last other handle (a snapshot dropping its copy on another
    // thread), so that handle's reads happen before our writes; `Arc::get_mut` orders the same way.
    fence(Ordering::Acquire);
    // SAFETY: the strong count is 1 and the map never creates a `Weak` to its pages or key-group maps, nor
    // `CowArc` to its value (no `Arc::downgrade` in this module or below; the types and the field are
    // private), so `arc` is the only handle to the value. We hold `&mut arc`, so no other handle can be cloned from it while the returned borrow lives,
    // and the borrow is tied to `arc`'s. The pointer comes from `Arc::as_ptr`, valid while `arc` is.
    unsafe { &mut *Arc::as_ptr(arc).cast_mut() }
}

/// Mutable access to the slots of a page, copying them first if a snapshot still shares them.
///
/// A page stamped with the map's current `epoch` is unique without a look at its reference count, which
/// sits at the start of the page's allocation, on another cache line than the slot being written (one
/// more miss per write). Any other page goes through [`unique`] and is stamped.
///
/// Invariant: a page stamped with the current epoch has a strong count of 1. Stamps are set only on a new
/// page or after [`unique`]; page handles are cloned only when a shared key-group directory is copied,
/// and a directory is shared only with a snapshot, whose creation moves the epoch on (so every page it can
/// reach has an older stamp).
#[inline]
#[allow(unsafe_code, reason = "measured: the doc comment, docs/design.md")]
fn page_slots<K: Clone, N: Clone, S: Clone>(
    page: &mut Page<K, N, S>,
    epoch: u64,
) -> &mut [Slot<K, N, S>] {
    if page.epoch != epoch {
        unique(&mut page.slots, |slots| slots.iter().cloned().collect());
        page.epoch = epoch;
    }
    debug_assert_eq!(
        Arc::strong_count(&page.slots),
        1,
        "a page stamped with the current epoch is unique"
    );
    // SAFETY: by the invariant above the strong count is 1, and no `Weak` exists (see `unique`), so
    // `page.slots` is the only handle; we hold `&mut page`, so none can be cloned while the borrow lives.
    // Our own `unique` call (this epoch) made the acquire fence against other threads' releases, and no
    // other thread has had a handle since. The pointer comes from `Arc::as_ptr`, valid while the handle is.
    unsafe { &mut *Arc::as_ptr(&page.slots).cast_mut() }
}

/// Mutable access to a key-group map, copying its directory (page pointers) first if a snapshot still
/// shares it.
#[inline]
fn unique_group<K: Clone, N: Clone, S: Clone>(
    group: &mut Arc<KeyGroupMap<K, N, S>>,
) -> &mut KeyGroupMap<K, N, S> {
    unique(group, |g| Arc::new(g.clone()))
}

/// A page of a key-group map, with the number of entries in its slots.
#[derive(Clone)]
struct Page<K, N, S> {
    slots: Arc<[Slot<K, N, S>]>,
    entries: u32,
    /// Epoch of the map when this page was created or last found unique (see [`page_slots`]).
    epoch: u64,
}

impl<K, N, S> Page<K, N, S> {
    fn with_slots(slots: usize, epoch: u64) -> Self {
        Page {
            slots: (0..slots).map(|_| None).collect(),
            entries: 0,
            epoch,
        }
    }
}

/// All entries of one key group of one state: a linear-hashing directory of pages.
///
/// With `2^level + split` pages, a hash `h` lives in page `h mod 2^level`, or `h mod 2^(level+1)` if that
/// is below `split` (those pages are already split at this level).
#[derive(Clone)]
pub(crate) struct KeyGroupMap<K, N, S> {
    pages: Vec<Page<K, N, S>>,
    level: u32,
    split: usize,
    len: usize,
}

impl<K, N, S> KeyGroupMap<K, N, S> {
    fn new() -> Self {
        KeyGroupMap {
            pages: Vec::new(),
            level: 0,
            split: 0,
            len: 0,
        }
    }

    /// Number of the page that holds `hash`; 0 for an empty directory (which has no page 0).
    #[inline]
    fn page_no(&self, hash: u64) -> usize {
        let low = (1usize << self.level) - 1;
        let p = hash as usize & low;
        if p < self.split {
            hash as usize & (low << 1 | 1)
        } else {
            p
        }
    }

    /// Iterates every entry once.
    pub(crate) fn iter(&self) -> impl Iterator<Item = &Entry<K, N, S>> {
        self.pages.iter().flat_map(|p| p.slots.iter().flatten())
    }

    /// Number of entries.
    pub(crate) fn len(&self) -> usize {
        self.len
    }
}

impl<K: Eq, N: Eq, S> KeyGroupMap<K, N, S> {
    /// Whether `(key, ns)` with map hash `hash` (as the writer gave it) is in this key group.
    pub(crate) fn contains(&self, hash: NonZeroU64, key: &K, ns: &N) -> bool {
        self.find(hash, key, ns).is_some()
    }

    /// Calls `f` with every entry whose stored map hash has the low [`changes::HASH_BITS`] bits
    /// `hash48`: those a logged word ([`changes::word`]) names. The page is found by the low bits alone
    /// (a directory has fewer than 2^32 pages), the entries inside it by [`probe::for_each_with_hash_bits`].
    ///
    /// # Errors
    /// The first error of `f`, which then sees no further entry.
    pub(crate) fn try_for_each_with_hash_bits<E>(
        &self,
        hash48: u64,
        f: impl FnMut(&Entry<K, N, S>) -> Result<(), E>,
    ) -> Result<(), E> {
        match self.pages.get(self.page_no(hash48)) {
            Some(page) => probe::for_each_with_hash_bits(&page.slots, hash48, f),
            None => Ok(()),
        }
    }

    /// `(page, slot)` of `(key, ns)`.
    #[inline]
    fn find(&self, hash: NonZeroU64, key: &K, ns: &N) -> Option<(usize, usize)> {
        let p = self.page_no(hash.get());
        find_in(&self.pages.get(p)?.slots, hash, key, ns).map(|(i, _)| (p, i))
    }
}

/// Methods that write take the map's current `epoch`: pages they create are stamped with it.
impl<K: Clone, N: Clone, S: Clone> KeyGroupMap<K, N, S> {
    /// Moves (or, from a page a snapshot shares, copies) the entries of `page` into fresh pages.
    fn redistribute(
        mut page: Page<K, N, S>,
        mut target: impl FnMut(&Entry<K, N, S>) -> usize,
        pages: &mut [Page<K, N, S>],
        epoch: u64,
    ) {
        let mut put = |e: Entry<K, N, S>| {
            let page = &mut pages[target(&e)];
            place(page_slots(page, epoch), e);
            page.entries += 1;
        };
        match Arc::get_mut(&mut page.slots) {
            Some(slots) => slots.iter_mut().filter_map(Option::take).for_each(&mut put),
            None => page.slots.iter().flatten().cloned().for_each(&mut put),
        }
    }

    /// Splits the next page in linear-hashing order (or creates the first page).
    fn split_next(&mut self, epoch: u64) {
        if self.pages.is_empty() {
            self.pages.push(Page::with_slots(MIN_SLOTS, epoch));
            return;
        }
        let s = self.split;
        let bit = 1u64 << self.level;
        let old = std::mem::replace(&mut self.pages[s], Page::with_slots(0, epoch));
        let (mut low, mut high) = (0, 0);
        for e in old.slots.iter().flatten() {
            if e.hash.get() & bit == 0 {
                low += 1;
            } else {
                high += 1;
            }
        }
        self.pages[s] = Page::with_slots(slots_for(2 * low), epoch);
        self.pages
            .push(Page::with_slots(slots_for(2 * high), epoch));
        let high_no = self.pages.len() - 1;
        Self::redistribute(
            old,
            |e| if e.hash.get() & bit == 0 { s } else { high_no },
            &mut self.pages,
            epoch,
        );
        self.split += 1;
        if self.split == 1 << self.level {
            self.level += 1;
            self.split = 0;
        }
    }

    /// Doubles the slots of page `p` (it is about to pass 7/8 full).
    fn grow_page(&mut self, p: usize, epoch: u64) {
        let slots =
            slots_for(self.pages[p].entries as usize + 1).max(2 * self.pages[p].slots.len());
        let old = std::mem::replace(&mut self.pages[p], Page::with_slots(slots, epoch));
        Self::redistribute(old, |_| p, &mut self.pages, epoch);
    }

    /// Inserts an entry known to be absent; returns its `(page, slot)`.
    fn insert_new(&mut self, entry: Entry<K, N, S>, epoch: u64) -> (usize, usize) {
        self.len += 1;
        if self.len > self.pages.len() * SPLIT_AT || self.pages.is_empty() {
            self.split_next(epoch);
        }
        let p = self.page_no(entry.hash.get());
        if (self.pages[p].entries as usize + 1) * 8 > self.pages[p].slots.len() * 7 {
            self.grow_page(p, epoch);
        }
        let page = &mut self.pages[p];
        page.entries += 1;
        (p, place(page_slots(page, epoch), entry))
    }
}

/// A copy-on-write map from `(key, namespace)` to `S`, partitioned by key group.
///
/// Key groups are addressed by their index inside the backend's key-group range (`0..groups`); `hash` is
/// the caller's map hash of `(key, namespace)`, which must be equal for equal pairs and well mixed in every
/// bit (the directory uses the low bits, the pages bits 32..).
pub(crate) struct CowMap<K, N, S> {
    groups: Vec<Arc<KeyGroupMap<K, N, S>>>,
    len: usize,
    /// Number of snapshots taken so far.
    epoch: u64,
    /// What changed since the checkpoints (heap incremental checkpoints); off unless turned on.
    changes: ChangeTracker<K, N>,
}

impl<K, N, S> CowMap<K, N, S>
where
    K: Eq + Clone,
    N: Eq + Clone,
    S: Clone,
{
    /// An empty map of `groups` key groups; they share one empty key-group map until first written.
    pub(crate) fn new(groups: usize) -> Self {
        let empty = Arc::new(KeyGroupMap::new());
        CowMap {
            groups: vec![empty; groups],
            len: 0,
            epoch: 0,
            changes: ChangeTracker::off(),
        }
    }

    /// Tracks changes from now on (heap incremental checkpoints): the first delta writes the map whole.
    pub(crate) fn track_changes(&mut self) {
        self.changes.start();
    }

    /// The map is exactly the diff base's state (a CLAIM restore, unchanged codecs): logs without a rewrite.
    pub(crate) fn changes_continue_from_base(&mut self) {
        self.changes.continue_from_base(self.len);
    }

    /// A checkpoint's synchronous phase, with changes tracked: the segments a delta against the diff base
    /// writes, the new one (changes since the last checkpoint) last. Empty when changes are not tracked.
    pub(crate) fn cut_changes(&mut self, checkpoint_id: u64) -> Vec<Arc<Changes<K, N>>> {
        self.changes.cut(checkpoint_id, self.len)
    }

    /// The diff base moved to checkpoint `base_id`: changes up to it are forgotten.
    pub(crate) fn changes_base_moved(&mut self, base_id: u64) {
        self.changes.base_moved(base_id);
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
        let hash = stored_hash(hash);
        let group = &self.groups[kg];
        let page = group.pages.get(group.page_no(hash.get()))?;
        find_in(&page.slots, hash, key, ns).map(|(_, e)| &e.value)
    }

    /// Mutable access to the value of `(key, ns)`, the write logged as `how` says; copies shared
    /// structure only if the entry exists.
    #[inline]
    pub(crate) fn get_mut(
        &mut self,
        kg: usize,
        hash: u64,
        key: &K,
        ns: &N,
        how: Logged<'_, S>,
    ) -> Option<&mut S> {
        let stored = stored_hash(hash);
        let (p, i) = self.groups[kg].find(stored, key, ns)?;
        self.log_write(kg, stored.get(), Some((p, i)), how);
        let group = unique_group(&mut self.groups[kg]);
        page_slots(&mut group.pages[p], self.epoch)[i]
            .as_mut()
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
        self.get_or_insert_logged(kg, hash, key, ns, make, Logged::Write)
    }

    /// [`CowMap::get_or_insert_with`], a value that exists logged as `how` says (a new one as a write).
    #[inline]
    pub(crate) fn get_or_insert_logged(
        &mut self,
        kg: usize,
        hash: u64,
        key: &K,
        ns: &N,
        make: impl FnOnce() -> S,
        how: Logged<'_, S>,
    ) -> &mut S {
        let hash = stored_hash(hash);
        let found = self.groups[kg].find(hash, key, ns);
        self.log_write(kg, hash.get(), found, how);
        let group = unique_group(&mut self.groups[kg]);
        let (p, i) = found.unwrap_or_else(|| {
            self.len += 1;
            let entry = Entry {
                hash,
                key: key.clone(),
                ns: ns.clone(),
                value: make(),
            };
            group.insert_new(entry, self.epoch)
        });
        match &mut page_slots(&mut group.pages[p], self.epoch)[i] {
            Some(e) => &mut e.value,
            None => unreachable!("slot {i} of page {p} was just found or filled"),
        }
    }

    /// Logs a write of the entry with stored hash `hash` at `found` (`(page, slot)`, `None` if new).
    #[inline]
    fn log_write(
        &mut self,
        kg: usize,
        hash: u64,
        found: Option<(usize, usize)>,
        how: Logged<'_, S>,
    ) {
        let value = |(p, i): (usize, usize)| self.groups[kg].pages[p].slots[i].as_ref();
        match how {
            // The write path of every other state: nothing read.
            Logged::Write => self.changes.written(kg, hash),
            Logged::Append(len) => match found.filter(|_| self.changes.logging()).and_then(value) {
                Some(e) => {
                    let before = len(&e.value);
                    self.changes.appended(kg, hash, before);
                }
                None => self.changes.written(kg, hash),
            },
            Logged::Patch(user_key) if found.is_some() => self.changes.patched(kg, hash, user_key),
            Logged::Patch(_) => self.changes.written(kg, hash),
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

    /// Read-modify-write of `(key, ns)` with one lookup: `f` gets the current value and returns the new
    /// one, or `None` to remove the entry. Copies shared structure only if something is written.
    /// Inlined into batch loops, so the lookup overlaps the next keys' prefetches (`benches/batch.rs`).
    #[inline]
    pub(crate) fn modify(
        &mut self,
        kg: usize,
        hash: u64,
        key: &K,
        ns: &N,
        f: impl FnOnce(Option<&S>) -> Option<S>,
    ) {
        let hash = stored_hash(hash);
        let Some((p, i)) = self.groups[kg].find(hash, key, ns) else {
            if let Some(value) = f(None) {
                self.changes.written(kg, hash.get());
                self.len += 1;
                let entry = Entry {
                    hash,
                    key: key.clone(),
                    ns: ns.clone(),
                    value,
                };
                unique_group(&mut self.groups[kg]).insert_new(entry, self.epoch);
            }
            return;
        };
        let group = unique_group(&mut self.groups[kg]);
        let page = &mut group.pages[p];
        let slots = page_slots(page, self.epoch);
        let Some(entry) = &mut slots[i] else { return };
        match f(Some(&entry.value)) {
            Some(value) => {
                entry.value = value;
                self.changes.written(kg, hash.get());
            }
            None => {
                if let Some(removed) = remove_at(slots, i) {
                    self.changes.removed(kg, hash, removed.key, removed.ns);
                }
                page.entries -= 1;
                group.len -= 1;
                self.len -= 1;
            }
        }
    }

    /// Removes `(key, ns)`; copies shared structure only if the entry exists.
    pub(crate) fn remove(&mut self, kg: usize, hash: u64, key: &K, ns: &N) -> Option<S> {
        let (p, i) = self.groups[kg].find(stored_hash(hash), key, ns)?;
        self.remove_at_position(kg, p, i)
    }

    /// The slots of page `page` of key group `kg` (for a walk over the map, `sweep.rs`).
    pub(crate) fn page_at(&self, kg: usize, page: usize) -> At<'_, K, N, S> {
        let Some(group) = self.groups.get(kg) else {
            return At::PastGroups;
        };
        match group.pages.get(page) {
            None => At::PastPages,
            Some(p) => At::Page(&p.slots),
        }
    }

    /// Removes the entry at `(kg, page, slot)` (found by a lookup or [`CowMap::page_at`]) by backward shift,
    /// copying shared structure first; returns its value.
    #[inline]
    pub(crate) fn remove_at_position(&mut self, kg: usize, page: usize, slot: usize) -> Option<S> {
        let group = unique_group(&mut self.groups[kg]);
        let page = &mut group.pages[page];
        let removed = remove_at(page_slots(page, self.epoch), slot)?;
        page.entries -= 1;
        group.len -= 1;
        self.len -= 1;
        self.changes
            .removed(kg, removed.hash, removed.key, removed.ns);
        Some(removed.value)
    }

    /// Replaces the value at `(kg, page, slot)` found by [`CowMap::page_at`]; copies shared structure first.
    pub(crate) fn replace_at_position(&mut self, kg: usize, page: usize, slot: usize, value: S) {
        let group = unique_group(&mut self.groups[kg]);
        if let Some(e) = &mut page_slots(&mut group.pages[page], self.epoch)[slot] {
            e.value = value;
            self.changes.written(kg, e.hash.get());
        }
    }

    /// Entries of key group `kg`.
    pub(crate) fn iter_group(&self, kg: usize) -> impl Iterator<Item = &Entry<K, N, S>> {
        self.groups[kg].iter()
    }

    /// Freezes the current version: O(key groups) pointer copies, no entry is copied or serialized. Moves
    /// the epoch on, so every page is checked for sharing before its next write.
    pub(crate) fn snapshot(&mut self) -> CowSnapshot<K, N, S> {
        self.epoch += 1;
        CowSnapshot::new(
            self.groups.iter().map(|g| Some(Arc::clone(g))).collect(),
            self.epoch,
        )
    }

    /// A map holding what `snapshot` holds (in-process recovery): O(key groups) pointer copies, the
    /// snapshot left as it is. Its first write to a page copies it, so neither sees the other's writes;
    /// a key group already taken out of the snapshot is empty. Changes are not tracked.
    pub(crate) fn from_snapshot(snapshot: &CowSnapshot<K, N, S>) -> Self {
        let empty = Arc::new(KeyGroupMap::new());
        let groups: Vec<_> = snapshot
            .groups()
            .iter()
            .map(|g| g.as_ref().map_or_else(|| Arc::clone(&empty), Arc::clone))
            .collect();
        CowMap {
            len: groups.iter().map(|g| g.len).sum(),
            groups,
            // Every page the snapshot reaches was stamped before the snapshot moved its map's epoch on
            // to `snapshot.epoch`, so none carries this map's stamp: each is checked before a write.
            epoch: snapshot.epoch(),
            changes: ChangeTracker::off(),
        }
    }
}

/// What a position `(kg, page)` of a [`CowMap`] holds ([`CowMap::page_at`]): a key group past the last
/// one, a page past the key group's last one, or a page's slots.
pub(crate) enum At<'a, K, N, S> {
    PastGroups,
    PastPages,
    Page(&'a [Option<Entry<K, N, S>>]),
}

impl<K, N, S> CowMap<K, N, S> {
    /// Number of snapshots taken so far: what a [`GroupBuilder`](build::GroupBuilder) for this map is stamped with.
    pub(crate) fn epoch(&self) -> u64 {
        self.epoch
    }

    /// Puts a built key-group map in place of key group `kg`'s, which must be empty (a restore installs
    /// each group once, into a new map).
    ///
    /// # Panics
    /// If `kg` is not a key group of this map; in debug builds, if its map is not empty.
    pub(crate) fn install(&mut self, kg: usize, built: build::GroupBuilder<K, N, S>) {
        debug_assert_eq!(self.groups[kg].len, 0, "a key group is installed once");
        let (group, epoch) = built.finish();
        debug_assert_eq!(epoch, self.epoch, "built for this map's epoch");
        self.len += group.len;
        self.groups[kg] = Arc::new(group);
    }
}

mod batch;
mod build;
pub(crate) mod changes;
mod cow_arc;
mod frozen;
mod probe;
pub(crate) mod sweep;

pub(crate) use batch::PageRef;
pub(crate) use build::GroupBuilder;
pub(crate) use changes::{ChangeTracker, Changes, Logged};
pub(crate) use cow_arc::CowArc;
pub(crate) use frozen::CowSnapshot;
#[cfg(test)]
mod tests;
