//! Reads that restart a TTL ([`TtlUpdate::OnReadAndWrite`](crate::keyed::TtlUpdate), `docs/ttl.md`).
//!
//! A read borrows the backend shared, so the new stamps of what it returned are written later, when the
//! backend is next borrowed mutably at one of these points: a new current key, a write to a TTL state, a
//! dropped state, a snapshot's synchronous phase. Until then the read is *marked*: its state, key,
//! namespace (and map user key) with the read's time. Every read path that finds a stored entry expired
//! by its stamp asks the marks before leaving it out (typed reads, batch reads, key listings), so time
//! moving on in between (the clock, a watermark) cannot make a value a read just kept alive disappear.
//! Marks stay true until they are applied: no write reaches a TTL state while some are queued (a write
//! applies them first), so what a mark names is still there, as the read left it.
//!
//! Each queued write (`keyed/read_refresh.rs`, `RefreshWrite`) is boxed for the backend that holds the
//! queue (the heap or RocksDB backend, also when read through the engine's `StateBackend`), which applies
//! it. The queue is behind a mutex locked only by such reads and on the paths above, and a flag checked
//! with one load.

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use parking_lot::Mutex;

use crate::error::Result;

/// A queued refresh, applied to the backend type `B` it was queued through.
pub(crate) type Refresh<B> = Box<dyn FnOnce(&mut B) -> Result<()> + Send>;

/// The reads of [`TtlUpdate::OnReadAndWrite`](crate::keyed::TtlUpdate) states whose new stamps are not
/// written yet: the writes, by backend type, and the marks of what they keep alive.
#[derive(Default)]
pub(crate) struct Refreshes {
    pending: AtomicBool,
    queue: Arc<Mutex<Queued>>,
}

#[derive(Default)]
struct Queued {
    writes: Vec<(TypeId, Box<dyn Any + Send>)>,
    /// `mark_key(state, key, namespace, user key)` -> the times of the first and the latest read (ms).
    marks: HashMap<Vec<u8>, ReadTimes>,
}

/// The first and the latest time (ms) a key, namespace (and map entry) was read since the queue was
/// last written.
type ReadTimes = (u64, u64);

/// The key of a mark: the state's index (4 bytes big-endian), the key's length (4 bytes big-endian) and
/// bytes, the namespace's length and bytes, then a map user key's bytes (none for a whole value or list,
/// or for "some entry of this map").
fn mark_key(state: u32, key: &[u8], ns: &[u8], uk: Option<&[u8]>, out: &mut Vec<u8>) {
    out.clear();
    out.extend_from_slice(&state.to_be_bytes());
    for part in [key, ns] {
        out.extend_from_slice(&(part.len() as u32).to_be_bytes());
        out.extend_from_slice(part);
    }
    if let Some(uk) = uk {
        out.push(1);
        out.extend_from_slice(uk);
    }
}

impl std::fmt::Debug for Refreshes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let queue = self.queue.lock();
        f.debug_struct("Refreshes")
            .field("writes", &queue.writes.len())
            .field("marks", &queue.marks.len())
            .finish()
    }
}

/// What a queued read keeps alive, as encoded bytes: a whole value or list (`uk: None`), and for a map
/// each entry it returned plus "some entry" of the map (`uk: None`, for key listings).
pub struct Mark<'a> {
    pub(crate) key: &'a [u8],
    pub(crate) ns: &'a [u8],
    pub(crate) uk: Option<&'a [u8]>,
}

impl Refreshes {
    /// Queues `refresh` for the backend type `B`, marking state `state`'s `marks` as read at `at_ms`.
    pub(crate) fn push<B: 'static>(
        &self,
        refresh: Refresh<B>,
        state: u32,
        marks: &[Mark<'_>],
        at_ms: u64,
    ) {
        let mut queue = self.queue.lock();
        queue.writes.push((TypeId::of::<B>(), Box::new(refresh)));
        let mut buf = Vec::new();
        for m in marks {
            mark_key(state, m.key, m.ns, m.uk, &mut buf);
            let (first, last) = queue.marks.entry(buf.clone()).or_insert((at_ms, at_ms));
            (*first, *last) = ((*first).min(at_ms), (*last).max(at_ms));
        }
        self.pending.store(true, Ordering::Release);
    }

    /// Whether anything is queued (one load).
    #[inline]
    pub(crate) fn pending(&self) -> bool {
        self.pending.load(Ordering::Acquire)
    }

    /// Whether any read is marked: queued, or being written (a lock: for paths that run rarely).
    pub(crate) fn marked(&self) -> bool {
        self.pending() || !self.queue.lock().marks.is_empty()
    }

    /// Takes the refreshes queued for `B`, leaving those of other backend types (nothing is pending
    /// once none is left, so that applying them does not start again). The marks stay until
    /// [`Refreshes::applied`].
    pub(crate) fn take<B: 'static>(&self) -> Vec<Refresh<B>> {
        let mut queue = self.queue.lock();
        let (mine, others): (Vec<_>, Vec<_>) = std::mem::take(&mut queue.writes)
            .into_iter()
            .partition(|(ty, _)| *ty == TypeId::of::<B>());
        queue.writes = others;
        self.pending
            .store(!queue.writes.is_empty(), Ordering::Release);
        mine.into_iter()
            .filter_map(|(_, r)| r.downcast::<Refresh<B>>().ok().map(|r| *r))
            .collect()
    }

    /// The refreshes taken were written (or failed, and are dropped): the marks go once nothing is
    /// queued any more.
    pub(crate) fn applied(&self) {
        let mut queue = self.queue.lock();
        if queue.writes.is_empty() {
            queue.marks.clear();
        }
    }

    /// The marks as RocksDB's compaction filter reads them, from its own threads.
    pub(crate) fn shared(&self) -> SharedMarks {
        SharedMarks(self.queue.clone())
    }

    /// The marks of state `state`, if any read is queued (one load otherwise).
    pub(crate) fn marks_of(&self, state: u32) -> Option<ReadMarks> {
        self.pending().then(|| ReadMarks {
            state,
            shared: self.shared(),
        })
    }
}

/// Whether reads at `(first, last)` keep an entry stamped `stamp` alive against `cutoff`: the first read
/// saw it alive, each later one saw it alive by the stamp the one before gives it (nothing is written in
/// between), and the latest read's time is after the cutoff.
fn kept((first, last): ReadTimes, stamp: u64, cutoff: u64, ttl_ms: u64) -> bool {
    last > cutoff && stamp.saturating_add(ttl_ms) > first
}

/// The marks of the queued reads of a backend, for other threads (RocksDB's compaction filter).
#[derive(Clone)]
pub(crate) struct SharedMarks(Arc<Mutex<Queued>>);

impl std::fmt::Debug for SharedMarks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("SharedMarks").finish()
    }
}

impl SharedMarks {
    /// The times of the first and the latest queued read of `entry` of state `state` (a lock, and a
    /// lookup while any mark is there).
    fn read_at(&self, state: u32, entry: Mark<'_>) -> Option<ReadTimes> {
        let queue = self.0.lock();
        if queue.marks.is_empty() {
            return None;
        }
        let mut buf = Vec::with_capacity(12 + entry.key.len() + entry.ns.len());
        mark_key(state, entry.key, entry.ns, entry.uk, &mut buf);
        queue.marks.get(&buf).copied()
    }

    /// Whether queued reads keep the entry `entry` of state `state` stamped `stamp` alive against
    /// `cutoff` (see [`kept`]): asked of each expired row a compaction meets, and by [`ReadMarks`].
    pub(crate) fn keeps(
        &self,
        state: u32,
        entry: Mark<'_>,
        stamp: u64,
        cutoff: u64,
        ttl_ms: u64,
    ) -> bool {
        (self.read_at(state, entry)).is_some_and(|t| kept(t, stamp, cutoff, ttl_ms))
    }
}

/// The queued reads of one state, as a read path asks them (each question a lookup in the shared
/// marks).
#[derive(Debug)]
pub(crate) struct ReadMarks {
    state: u32,
    shared: SharedMarks,
}

impl ReadMarks {
    /// The times (ms) of the first and the latest queued read of `key` and `ns` (with `uk`: of that map
    /// entry; without: of the value, the list, or some entry of the map).
    pub(crate) fn read_at(&self, key: &[u8], ns: &[u8], uk: Option<&[u8]>) -> Option<ReadTimes> {
        (self.shared).read_at(self.state, Mark { key, ns, uk })
    }

    /// Whether queued reads keep the entry at `key`/`ns`/`uk` alive against `cutoff` (ms: an entry
    /// stamped at or before it has expired), given its stored stamp `stamp` (see [`kept`]).
    pub(crate) fn keeps(
        &self,
        key: &[u8],
        ns: &[u8],
        uk: Option<&[u8]>,
        stamp: u64,
        cutoff: u64,
        ttl_ms: u64,
    ) -> bool {
        (self.shared).keeps(self.state, Mark { key, ns, uk }, stamp, cutoff, ttl_ms)
    }

    /// Whether a queued read of `key`/`ns` keeps something of it alive against `cutoff` (key listings:
    /// a read marks only what it returned, and nothing changed it since).
    pub(crate) fn keeps_some(&self, key: &[u8], ns: &[u8], cutoff: u64) -> bool {
        self.read_at(key, ns, None)
            .is_some_and(|(_, last)| last > cutoff)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marks_are_per_state_key_namespace_and_user_key_and_go_once_all_is_applied() {
        let r = Refreshes::default();
        assert!(!r.pending() && r.marks_of(1).is_none());
        let m = |key, uk| Mark { key, ns: b"n", uk };
        r.push::<u8>(
            Box::new(|_| Ok(())),
            1,
            &[m(b"k", None), m(b"k", Some(b"u"))],
            50,
        );
        r.push::<u16>(Box::new(|_| Ok(())), 1, &[m(b"k", None)], 40);
        let marks = r.marks_of(1).unwrap();
        assert_eq!(marks.read_at(b"k", b"n", None), Some((40, 50)));
        assert_eq!(marks.read_at(b"k", b"n", Some(b"u")), Some((50, 50)));
        assert_eq!(marks.read_at(b"k", b"n", Some(b"v")), None);
        assert_eq!(marks.read_at(b"kn", b"", None), None);
        assert_eq!(r.marks_of(2).unwrap().read_at(b"k", b"n", None), None);
        // Stamped 10 with a TTL of 100: read alive at 40 and 50, kept alive until 150 (cutoff 50).
        assert!(marks.keeps(b"k", b"n", None, 10, 49, 100));
        assert!(!marks.keeps(b"k", b"n", None, 10, 50, 100));
        assert!(marks.keeps_some(b"k", b"n", 49));
        // Stamped -70: expired at the first read, so no read kept it alive.
        assert!(!marks.keeps(b"k", b"n", None, 0, 49, 30));
        assert_eq!(r.take::<u8>().len(), 1);
        r.applied();
        assert!(
            r.pending(),
            "a refresh of another backend type is still queued"
        );
        assert_eq!(r.take::<u16>().len(), 1);
        r.applied();
        assert!(!r.pending() && r.marks_of(1).is_none());
    }
}
