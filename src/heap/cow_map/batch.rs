//! The copy-on-write map's side of batch access (`heap/bulk.rs`): prefetching a key's directory element
//! and home slot ahead of its lookup, and a lookup in a page found in advance.

use super::{CowMap, Slot, find_in, home, stored_hash};

impl<K: Eq, N: Eq, S> CowMap<K, N, S> {
    /// Asks the CPU to fetch the home slot of `hash` in key group `kg` into the cache (batch access
    /// issues it for keys ahead of the one it looks up, so their cache misses overlap). Reads the key
    /// group's directory, which is small and usually cached; never blocks on the slot itself.
    #[inline]
    pub(crate) fn prefetch(&self, kg: usize, hash: u64) {
        let hash = stored_hash(hash).get();
        let Some(group) = self.groups.get(kg) else {
            return;
        };
        if let Some(page) = group.pages.get(group.page_no(hash)) {
            let slot = page
                .slots
                .as_ptr()
                .wrapping_add(home(hash, page.slots.len()));
            prefetch_slot(slot);
        }
    }

    /// Asks the CPU to fetch the directory element (page pointer) of `hash` in key group `kg`: the first
    /// of a lookup's two dependent misses on a map larger than the cache. Returns the page's number for
    /// [`CowMap::prefetch_page`], the second stage of a batch lookup, issued a few keys later.
    #[inline]
    pub(crate) fn prefetch_directory(&self, kg: usize, hash: u64) -> usize {
        match self.groups.get(kg) {
            Some(group) => {
                let p = group.page_no(stored_hash(hash).get());
                crate::heap::prefetch::prefetch_read(group.pages.as_ptr().wrapping_add(p));
                p
            }
            None => usize::MAX,
        }
    }

    /// Page `p` of key group `kg` (as [`CowMap::prefetch_directory`] numbered it), with the home slot of
    /// `hash` prefetched: the second stage of a batch lookup, [`PageRef::get`] the third. Reads the
    /// directory element, which the first stage fetched. The map must not have changed in between.
    #[inline]
    pub(crate) fn prefetch_page(&self, kg: usize, p: usize, hash: u64) -> PageRef<'_, K, N, S> {
        let page = self.groups.get(kg).and_then(|g| g.pages.get(p));
        match page {
            Some(page) => {
                let slot = page
                    .slots
                    .as_ptr()
                    .wrapping_add(home(stored_hash(hash).get(), page.slots.len()));
                prefetch_slot(slot);
                PageRef(&page.slots)
            }
            None => PageRef::EMPTY,
        }
    }
}

/// Prefetches the cache line of `slot` and the next one: a slot that is not a divisor of 64 bytes (24 for
/// `u64` keys and values) often straddles two lines, and a probe that goes on past the home slot reads
/// the next line. With one line prefetched, `perf annotate` put most of the batch get's stalls on the
/// value and the second probed slot (docs/engines.md).
#[inline(always)]
fn prefetch_slot<T>(slot: *const T) {
    crate::heap::prefetch::prefetch_read(slot);
    crate::heap::prefetch::prefetch_read(slot.cast::<u8>().wrapping_add(64));
}

/// The slots of one page, found by [`CowMap::prefetch_page`]: a lookup that has already walked the key
/// group's directory.
pub(crate) struct PageRef<'a, K, N, S>(&'a [Slot<K, N, S>]);

impl<K, N, S> Clone for PageRef<'_, K, N, S> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<K, N, S> Copy for PageRef<'_, K, N, S> {}

impl<'a, K: Eq, N: Eq, S> PageRef<'a, K, N, S> {
    /// No page: every lookup misses.
    pub(crate) const EMPTY: Self = PageRef(&[]);

    /// The value of `(key, ns)` of map hash `hash` in this page, as [`CowMap::get`] finds it.
    #[inline]
    pub(crate) fn get(self, hash: u64, key: &K, ns: &N) -> Option<&'a S> {
        // No page (a key group without entries has none): `find_in` needs at least one slot.
        if self.0.is_empty() {
            return None;
        }
        find_in(self.0, stored_hash(hash), key, ns).map(|(_, e)| &e.value)
    }
}
