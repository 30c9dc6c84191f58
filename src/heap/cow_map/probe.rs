//! Probing inside one page of a [`CowMap`](super::CowMap): where a hash's run starts, lookup, Robin Hood
//! insertion (Celis, 1986) and backward-shift deletion (Knuth), over a page's slots. Free functions on a
//! slot slice; the page and its copy-on-write live in `mod.rs`.

use std::num::NonZeroU64;

use super::changes::{HASH_BITS, HASH_MASK};

/// One mapping `(key, namespace) -> value` with its map hash.
#[derive(Clone, Debug)]
pub(crate) struct Entry<K, N, S> {
    /// The map hash; never zero so that an empty slot (`None`) costs no extra byte.
    pub(crate) hash: NonZeroU64,
    pub(crate) key: K,
    pub(crate) ns: N,
    pub(crate) value: S,
}

/// A page slot: empty or one entry.
pub(super) type Slot<K, N, S> = Option<Entry<K, N, S>>;

/// Slots of the smallest page (a power of two).
pub(super) const MIN_SLOTS: usize = 8;

/// The stored form of a map hash: zero becomes `u64::MAX`, so equal hashes stay equal.
#[inline]
pub(super) fn stored_hash(hash: u64) -> NonZeroU64 {
    NonZeroU64::new(hash).unwrap_or(NonZeroU64::MAX)
}

/// First slot to probe for `hash` in a page of `slots` slots (a power of two). Uses bits 32.., which the
/// directory (low bits, at most 2^32 pages) never uses.
#[inline]
pub(super) fn home(hash: u64, slots: usize) -> usize {
    (hash >> 32) as usize & (slots - 1)
}

/// Calls `f` with every entry of `slots` whose stored map hash has the low [`HASH_BITS`] bits `hash48`.
/// The probe run from the home slot holds them all (Robin Hood placement leaves no empty slot between
/// an entry and its home), and the home slot depends on bits 32..48 only while the page has at most
/// 2^16 slots; a larger page is scanned whole.
///
/// # Errors
/// The first error of `f`, which then sees no further entry.
pub(super) fn for_each_with_hash_bits<K, N, S, E>(
    slots: &[Slot<K, N, S>],
    hash48: u64,
    mut f: impl FnMut(&Entry<K, N, S>) -> Result<(), E>,
) -> Result<(), E> {
    let matches = |e: &Entry<K, N, S>| e.hash.get() & HASH_MASK == hash48;
    if slots.len() > 1 << (HASH_BITS - 32) {
        return slots
            .iter()
            .flatten()
            .filter(|e| matches(e))
            .try_for_each(f);
    }
    let mask = slots.len() - 1;
    let mut i = home(hash48, slots.len());
    for _ in 0..slots.len() {
        let Some(e) = &slots[i] else { break };
        if matches(e) {
            f(e)?;
        }
        i = (i + 1) & mask;
    }
    Ok(())
}

/// Slots for a page that will hold `entries`: a power of two, at most 3/4 full.
pub(super) fn slots_for(entries: usize) -> usize {
    (entries * 4 / 3 + 1).next_power_of_two().max(MIN_SLOTS)
}

/// Slot of `(key, ns)` in `slots` and its entry, or `None`: a walk of the probe run from the home slot,
/// which most entries occupy, so that check comes first in straight-line code. Pages always keep an empty
/// slot, and the walk is bounded by the page size in any case.
///
/// (Comparing the first four slots of the run branch-free, SwissTable style, measured slower here: it
/// touches more cache lines per lookup. Choosing between the home slot and the next one branch-free with
/// `select_unpredictable` measured no faster at 1M keys and slower at 10k, see `docs/design.md`.)
#[inline]
pub(super) fn find_in<'a, K: Eq, N: Eq, S>(
    slots: &'a [Slot<K, N, S>],
    hash: NonZeroU64,
    key: &K,
    ns: &N,
) -> Option<(usize, &'a Entry<K, N, S>)> {
    let mask = slots.len().wrapping_sub(1);
    let mut i = home(hash.get(), slots.len());
    match slots.get(i) {
        Some(Some(e)) if e.hash == hash && e.key == *key && e.ns == *ns => return Some((i, e)),
        Some(None) | None => return None,
        Some(Some(_)) => i = (i + 1) & mask,
    }
    for _ in 1..slots.len() {
        match slots.get(i)? {
            None => return None,
            Some(e) if e.hash == hash && e.key == *key && e.ns == *ns => return Some((i, e)),
            Some(_) => i = (i + 1) & mask,
        }
    }
    None
}

/// Puts `entry` into its probe run, Robin Hood style (Celis, 1986): walking from its home slot, it takes
/// the place of the first resident that is closer to its own home, which then moves on in its place.
/// Displacements stay even, so the entries inserted last (into fuller pages) are not the ones that sit
/// far from home. Returns the slot `entry` ended in. The caller guarantees a free slot.
#[inline]
pub(super) fn place<K, N, S>(slots: &mut [Slot<K, N, S>], mut entry: Entry<K, N, S>) -> usize {
    let mask = slots.len() - 1;
    let mut i = home(entry.hash.get(), slots.len());
    let mut displacement = 0;
    let mut landed = None;
    loop {
        match &mut slots[i] {
            None => {
                slots[i] = Some(entry);
                return landed.unwrap_or(i);
            }
            Some(resident) => {
                let theirs = i.wrapping_sub(home(resident.hash.get(), mask + 1)) & mask;
                if theirs < displacement {
                    std::mem::swap(resident, &mut entry);
                    landed.get_or_insert(i);
                    displacement = theirs;
                }
            }
        }
        i = (i + 1) & mask;
        displacement += 1;
    }
}

/// Removes the entry in slot `i` by backward-shift deletion (Knuth, TAOCP vol. 3, algorithm 6.4R): later
/// entries of the same probe run move back, so lookups never need tombstones.
pub(super) fn remove_at<K, N, S>(slots: &mut [Slot<K, N, S>], i: usize) -> Option<Entry<K, N, S>> {
    let mask = slots.len() - 1;
    let removed = slots[i].take();
    let mut hole = i;
    let mut j = i;
    loop {
        j = (j + 1) & mask;
        let Some(e) = &slots[j] else { break };
        let its_home = home(e.hash.get(), slots.len());
        // The entry at `j` may fill the hole unless its home lies cyclically in (hole, j].
        if (j.wrapping_sub(its_home) & mask) >= (j.wrapping_sub(hole) & mask) {
            slots[hole] = slots[j].take();
            hole = j;
        }
    }
    removed
}
