//! The asynchronous phase of a heap delta: per key group, the entries the change log names, written from
//! the frozen version, a list that saw appends only as an append record of its new elements, a map
//! that saw user-key puts and removes only as a patch record of those user keys, and a tombstone for
//! every removed entry that the frozen version does not hold (`docs/heap-incremental.md`,
//! `docs/formats.md`, "Delta files").

use std::sync::Arc;

use crate::error::Result;
use crate::format::keyed_file::KeyedFileWriter;
use crate::heap::cow_map::changes::{HASH_BITS, HASH_MASK, Removed, word};
use crate::heap::cow_map::{Changes, Entry, KeyGroupMap};
use crate::keyed::backend::StateKey;

/// How a synchronous phase freezes a table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Cut {
    /// A savepoint, or a checkpoint with incremental checkpoints off: every entry is written and the
    /// change log is left alone.
    Untracked,
    /// A full checkpoint `id` of an incremental chain: every entry is written; the change log is cut.
    Full(u64),
    /// A delta checkpoint `id`: the change log is cut and the changes since the diff base are written.
    Delta(u64),
}

impl Cut {
    /// The checkpoint that cuts the change log, if any.
    pub(crate) fn checkpoint(self) -> Option<u64> {
        match self {
            Cut::Untracked => None,
            Cut::Full(id) | Cut::Delta(id) => Some(id),
        }
    }
}

/// What a delta writes of an entry.
#[derive(Clone, Copy)]
pub(crate) enum Part<'k> {
    /// The whole value.
    Whole,
    /// A list's elements from this position on (an append record).
    Tail(usize),
    /// A map's values of these user keys, codec bytes, sorted, the ones it lacks as removed (a patch
    /// record).
    UserKeys(&'k [&'k [u8]]),
}

/// The changes a delta writes of one table: the segments since the diff base, merged and grouped by key
/// group once, on the asynchronous phase's thread.
pub(crate) struct FrozenChanges<K, N> {
    segments: Vec<Arc<Changes<K, N>>>,
    /// Logged words, sorted and without repeats (key-group index in the top bits).
    words: Vec<u64>,
    /// `(key-group index, segment, position)` of every removal, sorted by key group.
    removed: Vec<(u32, u32, u32)>,
    /// Words of entries that saw appends only, sorted, each with the list's length at the diff base.
    appended: Vec<(u64, u32)>,
    /// `(word, segment, position)` of the user-key changes of entries that saw such changes only,
    /// sorted by word and user key, each user key once.
    patched: Vec<(u64, u32, u32)>,
    /// Whether appends and user-key changes may be written as append and patch records (a list or map
    /// without TTL); if not, such an entry is written whole.
    element_records: bool,
    prepared: bool,
}

impl<K: StateKey, N: StateKey> FrozenChanges<K, N> {
    /// The changes of `segments` (oldest first), or `None` if one of them asks for the state whole. With
    /// `element_records`, a list entry that saw appends only is written as an append record, a map
    /// entry that saw user-key puts and removes only as a patch record.
    pub(crate) fn new(segments: Vec<Arc<Changes<K, N>>>, element_records: bool) -> Option<Self> {
        if segments.iter().any(|s| s.rewrite) {
            return None;
        }
        Some(FrozenChanges {
            segments,
            words: Vec::new(),
            removed: Vec::new(),
            appended: Vec::new(),
            patched: Vec::new(),
            element_records,
            prepared: false,
        })
    }

    /// Whether the file may get append records of these changes.
    pub(crate) fn appends(&self) -> bool {
        self.element_records && self.segments.iter().any(|s| !s.appended.is_empty())
    }

    /// Whether the file may get patch records of these changes.
    pub(crate) fn patches(&self) -> bool {
        self.element_records && self.segments.iter().any(|s| !s.patched.is_empty())
    }

    fn prepare(&mut self) {
        if self.prepared {
            return;
        }
        self.prepared = true;
        let words: usize = self.segments.iter().map(|s| s.written.len()).sum();
        self.words.reserve_exact(words);
        for (si, s) in self.segments.iter().enumerate() {
            self.words.extend_from_slice(&s.written);
            if self.element_records {
                self.appended.extend_from_slice(&s.appended);
                let patched = s.patched.iter().enumerate();
                (self.patched).extend(patched.map(|(pi, p)| (p.0, si as u32, pi as u32)));
            } else {
                self.words.extend(s.appended.iter().map(|(w, _)| w));
                self.words.extend(s.patched.iter().map(|(w, _, _)| w));
            }
        }
        self.words.sort_unstable();
        self.words.dedup();
        // A list's length at the base is the one logged first, the smallest: appends only lengthen it.
        self.appended.sort_unstable();
        self.appended.dedup_by_key(|(w, _)| *w);
        let segments = &self.segments;
        let user_key = |&(_, si, pi): &(u64, u32, u32)| segments[si as usize].user_key(pi as usize);
        self.patched
            .sort_unstable_by(|a, b| a.0.cmp(&b.0).then_with(|| user_key(a).cmp(user_key(b))));
        self.patched
            .dedup_by(|a, b| a.0 == b.0 && user_key(a) == user_key(b));
        // An entry also written or removed since the base is written whole (or gets its tombstone).
        let mut removed: Vec<u64> = (self.segments.iter())
            .flat_map(|s| s.removed.iter().map(|r| word(r.kg as usize, r.hash.get())))
            .collect();
        removed.sort_unstable();
        let words = &self.words;
        let element =
            |w: &u64| words.binary_search(w).is_err() && removed.binary_search(w).is_err();
        self.appended.retain(|(w, _)| element(w));
        self.patched.retain(|(w, _, _)| element(w));
        for (si, s) in self.segments.iter().enumerate() {
            for (ri, r) in s.removed.iter().enumerate() {
                self.removed.push((r.kg, si as u32, ri as u32));
            }
        }
        // Stable: a key removed twice keeps its order (either tombstone says the same).
        self.removed.sort_by_key(|(kg, _, _)| *kg);
    }

    /// Writes the changes of key group `kg_index` as records of state `state`: every entry of `group` (the
    /// frozen version, `None` if the key group is empty) whose hash a word names, through `write` (which
    /// returns false when it wrote nothing, an entry whose TTL expired: it gets a tombstone), and a
    /// tombstone for every removed `(key, namespace)` that `group` does not hold. An entry that saw only
    /// appends or only user-key changes, and shares its hash bits with no other entry of the key group,
    /// is written as its [`Part::Tail`] or [`Part::UserKeys`]; else whole.
    pub(crate) fn write_group<S>(
        &mut self,
        kg_index: usize,
        group: Option<&KeyGroupMap<K, N, S>>,
        state: u32,
        writer: &mut KeyedFileWriter,
        mut write: impl FnMut(&Entry<K, N, S>, Part<'_>, &mut KeyedFileWriter) -> Result<bool>,
    ) -> Result<()> {
        self.prepare();
        let kg = kg_index as u64;
        let mut put = |e: &Entry<K, N, S>, part: Part<'_>, writer: &mut KeyedFileWriter| {
            if !write(e, part, writer)? {
                writer.add_tombstone(state, |b| e.key.encode(b), |b| e.ns.encode(b))?;
            }
            Ok(())
        };
        let in_group = |w: u64| w >> HASH_BITS == kg;
        if let Some(group) = group {
            let lo = self.words.partition_point(|w| w >> HASH_BITS < kg);
            let words = self.words[lo..].iter().take_while(|&&w| in_group(w));
            for &w in words {
                group
                    .try_for_each_with_hash_bits(w & HASH_MASK, |e| put(e, Part::Whole, writer))?;
            }
            let lo = self.appended.partition_point(|(w, _)| w >> HASH_BITS < kg);
            let appended = self.appended[lo..].iter().take_while(|(w, _)| in_group(*w));
            for &(w, from) in appended {
                let part = match only_entry(group, w) {
                    true => Part::Tail(from as usize),
                    false => Part::Whole,
                };
                group.try_for_each_with_hash_bits(w & HASH_MASK, |e| put(e, part, writer))?;
            }
            let lo = self
                .patched
                .partition_point(|(w, _, _)| w >> HASH_BITS < kg);
            let mut patched = self.patched[lo..]
                .iter()
                .take_while(|(w, _, _)| in_group(*w));
            let mut keys: Vec<&[u8]> = Vec::new();
            let mut next = patched.next();
            while let Some(&(w, _, _)) = next {
                keys.clear();
                while let Some(&(_, si, pi)) = next.filter(|p| p.0 == w) {
                    keys.push(self.segments[si as usize].user_key(pi as usize));
                    next = patched.next();
                }
                let part = match only_entry(group, w) {
                    true => Part::UserKeys(&keys),
                    false => Part::Whole,
                };
                group.try_for_each_with_hash_bits(w & HASH_MASK, |e| put(e, part, writer))?;
            }
        }
        let lo = self.removed.partition_point(|r| (r.0 as usize) < kg_index);
        let hi = self.removed.partition_point(|r| (r.0 as usize) <= kg_index);
        for &(_, si, ri) in &self.removed[lo..hi] {
            let Removed { hash, key, ns, .. } = &self.segments[si as usize].removed[ri as usize];
            if group.is_none_or(|g| !g.contains(*hash, key, ns)) {
                writer.add_tombstone(state, |b| key.encode(b), |b| ns.encode(b))?;
            }
        }
        Ok(())
    }
}

/// Whether exactly one entry of `group` has the hash bits of word `w`: otherwise which one the log
/// meant is unknown, and all of them are written whole.
fn only_entry<K: Eq, N: Eq, S>(group: &KeyGroupMap<K, N, S>, w: u64) -> bool {
    let mut matching = 0;
    let _ = group.try_for_each_with_hash_bits(w & HASH_MASK, |_| {
        matching += 1;
        Ok::<_, ()>(())
    });
    matching == 1
}
