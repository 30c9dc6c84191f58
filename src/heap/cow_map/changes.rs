//! What changed in a [`CowMap`](super::CowMap) since a checkpoint: the change log of heap incremental
//! checkpoints (`docs/heap-incremental.md`).
//!
//! Every write appends one packed word, the key-group index in the top 16 bits and the low 48 bits of the
//! entry's map hash; every removal keeps the removed key and namespace with their full hash; an append
//! to a list that exists keeps the word with the list's length before it (a delta writes only the
//! elements after that length of a list that saw appends only), and a put or remove of a user key in a
//! map that exists keeps the word with the user key's bytes (a delta writes only those keys of a map
//! that saw such changes only). A checkpoint cuts the log into a *segment* tagged with its id; the
//! segments after the diff base are what the delta file of the next checkpoint writes, and a
//! confirmation that moves the base drops the segments up to it.
//!
//! Memory is bounded by the map's size: a log that reaches a quarter of the map's entries (at least
//! [`MIN_CAP`]) stops and marks the state *rewrite* (its next delta writes it whole), and so do segments
//! that pile up unconfirmed past the same bound or [`MAX_SEGMENTS`] (logged user keys: the cap's count
//! of copies of user keys the map holds or held). The cap also keeps the write path's
//! cost down in a high-churn interval (measured in `docs/heap-incremental.md`).

use std::num::NonZeroU64;
use std::sync::Arc;

/// Bits of the map hash a logged word keeps; the other 16 hold the key-group index (max parallelism is
/// at most 2^15). A lost bit only makes a collision, an unchanged entry written again, more likely.
pub(crate) const HASH_BITS: u32 = 48;
/// Mask of the hash bits of a logged word.
pub(crate) const HASH_MASK: u64 = (1 << HASH_BITS) - 1;
/// Smallest cap of a log, in changes: a small state is logged, not rewritten, for this many writes.
pub(crate) const MIN_CAP: usize = 4096;
/// Unconfirmed segments kept before they are collapsed into one rewrite.
pub(crate) const MAX_SEGMENTS: usize = 16;

/// The word logged for a write of the entry with map hash `hash` in key group `kg`.
#[inline]
pub(crate) fn word(kg: usize, hash: u64) -> u64 {
    ((kg as u64) << HASH_BITS) | (hash & HASH_MASK)
}

/// How a write of a value that exists is logged for heap incremental checkpoints.
pub(crate) enum Logged<'u, S> {
    /// The value is written whole by the next delta.
    Write,
    /// An append to a list: the value's length before it (`fn` of the value), after which the next
    /// delta writes the elements.
    Append(fn(&S) -> usize),
    /// A put or remove of the user key the function encodes in a map.
    Patch(&'u dyn Fn(&mut Vec<u8>)),
}

/// A removed entry: its key group index, full map hash, key and namespace (for its tombstone).
pub(crate) struct Removed<K, N> {
    pub(crate) kg: u32,
    pub(crate) hash: NonZeroU64,
    pub(crate) key: K,
    pub(crate) ns: N,
}

/// The changes between two checkpoints (one segment).
pub(crate) struct Changes<K, N> {
    /// The state must be written whole: the log overflowed, or the table is new.
    pub(crate) rewrite: bool,
    /// Words of written entries ([`word`]), unsorted, possibly repeated.
    pub(crate) written: Vec<u64>,
    /// Entries removed, in removal order.
    pub(crate) removed: Vec<Removed<K, N>>,
    /// Appends to existing lists, in order: the entry's word and the list's length (elements) before
    /// the append.
    pub(crate) appended: Vec<(u64, u32)>,
    /// Puts and removes of user keys in existing maps, in order: the entry's word and the user key's
    /// byte range `start..end` in `user_keys`.
    pub(crate) patched: Vec<(u64, u32, u32)>,
    /// The codec bytes of the user keys `patched` names, one after another.
    pub(crate) user_keys: Vec<u8>,
}

impl<K, N> Changes<K, N> {
    fn new(rewrite: bool) -> Self {
        Changes {
            rewrite,
            written: Vec::new(),
            removed: Vec::new(),
            appended: Vec::new(),
            patched: Vec::new(),
            user_keys: Vec::new(),
        }
    }

    fn len(&self) -> usize {
        self.written.len() + self.removed.len() + self.appended.len() + self.patched.len()
    }

    /// The codec bytes of the user key of `patched[i]`.
    pub(crate) fn user_key(&self, i: usize) -> &[u8] {
        let (_, start, end) = self.patched[i];
        &self.user_keys[start as usize..end as usize]
    }
}

/// What the log does with a write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Changes are not tracked (incremental checkpoints are off).
    Off,
    /// Writes and removals are logged.
    Logging,
    /// Nothing is logged until the next cut: the state is written whole by the next delta.
    Rewrite,
}

/// A map's change log and its unconfirmed segments.
pub(crate) struct ChangeTracker<K, N> {
    mode: Mode,
    log: Changes<K, N>,
    /// Changes logged before the log stops ([`MIN_CAP`] or a quarter of the entries at the last cut).
    cap: usize,
    /// Changes the log takes before it stops: `cap` less those logged since the last cut (one
    /// counter, so that a write checks one word).
    room: usize,
    /// Segments cut by checkpoints after the diff base, oldest first, with the checkpoint that cut them.
    segments: Vec<(u64, Arc<Changes<K, N>>)>,
}

impl<K, N> ChangeTracker<K, N> {
    /// A tracker that logs nothing ([`ChangeTracker::start`] turns it on).
    pub(crate) fn off() -> Self {
        ChangeTracker {
            mode: Mode::Off,
            log: Changes::new(false),
            cap: MIN_CAP,
            room: MIN_CAP,
            segments: Vec::new(),
        }
    }

    /// Turns tracking on for a new table: its first delta writes it whole (nothing of it is in the diff
    /// base, or the base holds another table of the same name, dropped or migrated since).
    pub(crate) fn start(&mut self) {
        self.mode = Mode::Rewrite;
        self.log.rewrite = true;
    }

    /// Logs from now on without rewriting first, for a new table whose `entries` entries are exactly
    /// what the diff base holds of its state (decoded from a CLAIM restore's records with unchanged
    /// codecs). Nothing if tracking is off.
    pub(crate) fn continue_from_base(&mut self, entries: usize) {
        if self.mode == Mode::Off {
            return;
        }
        self.mode = Mode::Logging;
        self.log.rewrite = false;
        self.cap = (entries / 4).max(MIN_CAP);
        self.room = self.cap;
    }

    /// Takes room for one change; at none, the log stops ([`ChangeTracker::overflow`]) and false.
    #[inline]
    fn take_room(&mut self) -> bool {
        if self.room == 0 {
            self.overflow();
            return false;
        }
        self.room -= 1;
        true
    }

    /// Logs a write of the entry with map hash `hash` in key group `kg`.
    #[inline]
    pub(crate) fn written(&mut self, kg: usize, hash: u64) {
        if self.mode == Mode::Logging && self.take_room() {
            self.log.written.push(word(kg, hash));
        }
    }

    /// Logs the removal of `(key, ns)` with map hash `hash` from key group `kg`.
    #[inline]
    pub(crate) fn removed(&mut self, kg: usize, hash: NonZeroU64, key: K, ns: N) {
        if self.mode == Mode::Logging && self.take_room() {
            self.log.removed.push(Removed {
                kg: kg as u32,
                hash,
                key,
                ns,
            });
        }
    }

    /// Whether writes are logged now (an append asks before it measures the list).
    #[inline]
    pub(crate) fn logging(&self) -> bool {
        self.mode == Mode::Logging
    }

    /// Logs an append to the list of the entry with map hash `hash` in key group `kg`, which held
    /// `len_before` elements before it; a list too long for the log's `u32` is logged as a write.
    #[inline]
    pub(crate) fn appended(&mut self, kg: usize, hash: u64, len_before: usize) {
        match u32::try_from(len_before) {
            Ok(len) if self.mode == Mode::Logging && self.take_room() => {
                self.log.appended.push((word(kg, hash), len));
            }
            Ok(_) => {}
            Err(_) => self.written(kg, hash),
        }
    }

    /// Logs a put or remove of the user key that `user_key` encodes in the map of the entry with map hash
    /// `hash` in key group `kg`; past 4 GiB of logged user keys the state is rewritten.
    #[inline]
    pub(crate) fn patched(&mut self, kg: usize, hash: u64, user_key: &dyn Fn(&mut Vec<u8>)) {
        if self.mode == Mode::Logging && self.take_room() {
            let keys = &mut self.log.user_keys;
            let start = keys.len();
            user_key(keys);
            match (u32::try_from(start), u32::try_from(keys.len())) {
                (Ok(start), Ok(end)) => self.log.patched.push((word(kg, hash), start, end)),
                _ => self.overflow(),
            }
        }
    }

    #[cold]
    fn overflow(&mut self) {
        self.mode = Mode::Rewrite;
        self.log = Changes::new(true);
    }

    /// A checkpoint's synchronous phase: the log becomes segment `checkpoint_id` and a new log starts,
    /// capped at a quarter of `entries`. Returns every unconfirmed segment, oldest first: what a delta
    /// against the diff base writes. Nothing when tracking is off.
    pub(crate) fn cut(&mut self, checkpoint_id: u64, entries: usize) -> Vec<Arc<Changes<K, N>>> {
        if self.mode == Mode::Off {
            return Vec::new();
        }
        let segment = std::mem::replace(&mut self.log, Changes::new(false));
        self.segments.push((checkpoint_id, Arc::new(segment)));
        self.mode = Mode::Logging;
        self.cap = (entries / 4).max(MIN_CAP);
        self.room = self.cap;
        let held: usize = self.segments.iter().map(|(_, s)| s.len()).sum();
        if self.segments.len() > MAX_SEGMENTS || held > self.cap {
            // Confirmations stopped coming (or churn is high): one rewrite replaces them all, so memory
            // stays bounded while the base does not move.
            self.segments = vec![(checkpoint_id, Arc::new(Changes::new(true)))];
        }
        self.segments.iter().map(|(_, s)| Arc::clone(s)).collect()
    }

    /// The diff base moved to checkpoint `base_id`: the segments it holds are dropped.
    pub(crate) fn base_moved(&mut self, base_id: u64) {
        self.segments.retain(|(id, _)| *id > base_id);
    }
}
