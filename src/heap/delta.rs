//! The asynchronous phase of a heap delta: per key group, the entries the change log names, written from
//! the frozen version, and a tombstone for every removed entry that the frozen version does not hold
//! (`docs/heap-incremental.md`, `docs/formats.md`, "Delta files").

use std::sync::Arc;

use crate::error::Result;
use crate::format::keyed_file::KeyedFileWriter;
use crate::heap::cow_map::changes::{HASH_BITS, HASH_MASK, Removed};
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

/// The changes a delta writes of one table: the segments since the diff base, merged and grouped by key
/// group once, on the asynchronous phase's thread.
pub(crate) struct FrozenChanges<K, N> {
    segments: Vec<Arc<Changes<K, N>>>,
    /// Logged words, sorted and without repeats (key-group index in the top bits).
    words: Vec<u64>,
    /// `(key-group index, segment, position)` of every removal, sorted by key group.
    removed: Vec<(u32, u32, u32)>,
    prepared: bool,
}

impl<K: StateKey, N: StateKey> FrozenChanges<K, N> {
    /// The changes of `segments` (oldest first), or `None` if one of them asks for the state whole.
    pub(crate) fn new(segments: Vec<Arc<Changes<K, N>>>) -> Option<Self> {
        if segments.iter().any(|s| s.rewrite) {
            return None;
        }
        Some(FrozenChanges {
            segments,
            words: Vec::new(),
            removed: Vec::new(),
            prepared: false,
        })
    }

    fn prepare(&mut self) {
        if self.prepared {
            return;
        }
        self.prepared = true;
        let words: usize = self.segments.iter().map(|s| s.written.len()).sum();
        self.words.reserve_exact(words);
        for s in &self.segments {
            self.words.extend_from_slice(&s.written);
        }
        self.words.sort_unstable();
        self.words.dedup();
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
    /// tombstone for every removed `(key, namespace)` that `group` does not hold.
    pub(crate) fn write_group<S>(
        &mut self,
        kg_index: usize,
        group: Option<&KeyGroupMap<K, N, S>>,
        state: u32,
        writer: &mut KeyedFileWriter,
        mut write: impl FnMut(&Entry<K, N, S>, &mut KeyedFileWriter) -> Result<bool>,
    ) -> Result<()> {
        self.prepare();
        let kg = kg_index as u64;
        let lo = self.words.partition_point(|w| w >> HASH_BITS < kg);
        let hi = self.words.partition_point(|w| w >> HASH_BITS <= kg);
        if let Some(group) = group {
            for &w in &self.words[lo..hi] {
                group.try_for_each_with_hash_bits(w & HASH_MASK, |e| {
                    if !write(e, writer)? {
                        writer.add_tombstone(state, |b| e.key.encode(b), |b| e.ns.encode(b))?;
                    }
                    Ok(())
                })?;
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
