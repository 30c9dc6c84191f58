//! The typed side of reads that restart a TTL ([`TtlUpdate::OnReadAndWrite`], `keyed/ttl_refresh.rs`):
//! what a read queues and marks, how the backend holding the queue (the heap or RocksDB backend, also
//! behind the engine's `StateBackend`) applies it, and how a read path asks the marks whether an entry
//! expired by its stamp was kept alive by a read not written yet.

use std::marker::PhantomData;

use crate::error::Result;
use crate::keyed::backend::{KeyedStateBackend, StateId, StateKey, StateValue};
use crate::keyed::ttl::{Stamped, StateTtlConfig, TtlUpdate};
use crate::keyed::ttl_refresh::{Mark, ReadMarks};

/// Whether a read at `now` that returns an entry last written at `stamp` restarts its TTL (an entry
/// stamped `now` or later already is left alone).
#[inline]
pub(crate) fn restarts(ttl: &StateTtlConfig, stamp: u64, now: u64) -> bool {
    ttl.update == TtlUpdate::OnReadAndWrite && stamp < now
}

/// `s` stamped `at` (or later, if it was written later than the read that restarts it).
fn restamp<V: Clone>(s: &Stamped<V>, at: u64) -> Stamped<V> {
    Stamped {
        value: s.value.clone(),
        last_update_ms: s.last_update_ms.max(at),
    }
}

fn encoded<T: StateKey>(x: &T) -> Vec<u8> {
    let mut out = Vec::new();
    x.encode(&mut out);
    out
}

/// Applies the refreshes queued for `B` (each makes its key current; the caller sets the key it wants
/// next). Called at every record's edge of `B` when something is queued.
///
/// # Errors
/// The first error of a refresh's write; the refreshes after it are dropped (their entries then expire
/// as last written).
#[cold]
pub(crate) fn apply_refreshes<K: StateKey, B: KeyedStateBackend<K>>(backend: &mut B) -> Result<()> {
    let refreshes = backend.ttl_times().refreshes().take::<B>();
    let mut result = Ok(());
    for refresh in refreshes {
        result = refresh(backend);
        if result.is_err() {
            break;
        }
    }
    backend.ttl_times().refreshes().applied();
    result
}

/// As [`apply_refreshes`] where the current key must stay (before a write to a TTL state, a dropped
/// state, a snapshot): it is set back after.
///
/// # Errors
/// As [`apply_refreshes`].
pub(crate) fn apply_refreshes_keeping_key<K: StateKey, B: KeyedStateBackend<K>>(
    backend: &mut B,
) -> Result<()> {
    if !backend.ttl_times().refreshes().pending() {
        return Ok(());
    }
    let current = backend.current_key().cloned();
    let applied = apply_refreshes(backend);
    let restored = match current {
        Some(key) => backend.set_current_key(key),
        None => Ok(()),
    };
    applied.and(restored)
}

/// At a record's edge (a new current key) of `B`: what reads queued for `B` is written (one load when
/// nothing is queued).
///
/// # Errors
/// As [`apply_refreshes`].
#[inline]
pub(crate) fn at_record_edge<K: StateKey, B: KeyedStateBackend<K>>(backend: &mut B) -> Result<()> {
    if backend.ttl_times().refreshes().pending() {
        return apply_refreshes(backend);
    }
    Ok(())
}

/// Before a write to a TTL state: what reads queued is written first, so that no write meets a mark
/// (one load when nothing is queued).
///
/// # Errors
/// As [`apply_refreshes`].
#[inline]
pub(crate) fn settle<K: StateKey, B: KeyedStateBackend<K>>(backend: &mut B) -> Result<()> {
    if backend.ttl_times().refreshes().pending() {
        return backend.write_refreshes();
    }
    Ok(())
}

/// The marks a read path asks for one key and namespace of a state, if any read of it is queued.
pub(crate) struct ReadCheck {
    marks: ReadMarks,
    key: Vec<u8>,
    ns: Vec<u8>,
    cutoff: u64,
    ttl_ms: u64,
}

impl ReadCheck {
    /// For reads at `now` of `key` and `ns` of state `id`; `None` when no read is queued or
    /// nothing can have expired (one load in the common case).
    pub(crate) fn new<K: StateKey, B: KeyedStateBackend<K>, N: StateKey>(
        b: &B,
        id: StateId,
        key: Option<&K>,
        ns: &N,
        ttl: &StateTtlConfig,
        now: u64,
    ) -> Option<ReadCheck> {
        let refreshes = b.ttl_times().refreshes();
        if !refreshes.pending() {
            return None;
        }
        let cutoff = ttl.cutoff_at(now)?;
        let marks = refreshes.marks_of(id.0)?;
        Some(ReadCheck {
            marks,
            key: key.map(encoded).unwrap_or_default(),
            ns: encoded(ns),
            cutoff,
            ttl_ms: ttl.ttl_ms,
        })
    }

    /// Whether a queued read keeps an entry stamped `stamp` alive (`uk`: a map entry's user key).
    pub(crate) fn keeps<UK: StateKey>(&self, uk: Option<&UK>, stamp: u64) -> bool {
        let uk = uk.map(encoded);
        (self.marks).keeps(
            &self.key,
            &self.ns,
            uk.as_deref(),
            stamp,
            self.cutoff,
            self.ttl_ms,
        )
    }

    /// As [`ReadCheck::keeps`] for `key` instead of the key this check was made for (batch reads).
    pub(crate) fn keeps_key<K: StateKey>(&self, key: &K, stamp: u64) -> bool {
        (self.marks).keeps(
            &encoded(key),
            &self.ns,
            None,
            stamp,
            self.cutoff,
            self.ttl_ms,
        )
    }
}

/// The write a read that restarted entries queues: applied later to the backend type that holds the
/// queue (the backend inside the engine's `StateBackend`), generic over it.
pub trait RefreshWrite<K: StateKey>: Send + 'static {
    /// Writes the new stamps through `b`, setting the current key it needs.
    ///
    /// # Errors
    /// Those of the backend's primitives.
    fn write<B: KeyedStateBackend<K>>(self, b: &mut B) -> Result<()>;
}

/// Restamps the value of `key` in `ns` of state `id` (value, reducing and aggregating states).
struct ValueRefresh<K, N, V> {
    id: StateId,
    key: K,
    ns: N,
    at: u64,
    _value: PhantomData<fn() -> V>,
}

impl<K: StateKey, N: StateKey, V: StateValue> RefreshWrite<K> for ValueRefresh<K, N, V> {
    fn write<B: KeyedStateBackend<K>>(self, b: &mut B) -> Result<()> {
        b.set_current_key(self.key)?;
        let at = self.at;
        b.value_modify::<N, Stamped<V>>(self.id, &self.ns, &mut |old| old.map(|s| restamp(s, at)))
    }
}

/// Restamps the values of `keys` in `ns` of state `id` (a batch read).
struct BatchRefresh<K, N, V> {
    id: StateId,
    keys: Vec<K>,
    ns: N,
    at: u64,
    _value: PhantomData<fn() -> V>,
}

impl<K: StateKey, N: StateKey, V: StateValue> RefreshWrite<K> for BatchRefresh<K, N, V> {
    fn write<B: KeyedStateBackend<K>>(self, b: &mut B) -> Result<()> {
        let at = self.at;
        b.value_modify_batch::<N, Stamped<V>>(self.id, &self.ns, &self.keys, &mut |_, old| {
            old.map(|s| restamp(s, at))
        })
    }
}

/// Restamps the elements of a list alive at `at` and writes out the expired ones.
struct ListRefresh<K, N, V> {
    id: StateId,
    key: K,
    ns: N,
    ttl: StateTtlConfig,
    at: u64,
    _value: PhantomData<fn() -> V>,
}

impl<K: StateKey, N: StateKey, V: StateValue> RefreshWrite<K> for ListRefresh<K, N, V> {
    fn write<B: KeyedStateBackend<K>>(self, b: &mut B) -> Result<()> {
        b.set_current_key(self.key)?;
        let Some(list) = b.list_get::<N, Stamped<V>>(self.id, &self.ns)? else {
            return Ok(());
        };
        let kept: Vec<_> = (list.iter())
            .filter(|s| self.ttl.visible(s.last_update_ms, self.at))
            .map(|s| restamp(s, self.at))
            .collect();
        b.list_update(self.id, &self.ns, kept)
    }
}

/// Restamps the map entries `uks` (those still there).
struct MapRefresh<K, N, UK, V> {
    id: StateId,
    key: K,
    ns: N,
    uks: Vec<UK>,
    at: u64,
    _value: PhantomData<fn() -> V>,
}

impl<K, N, UK, V> RefreshWrite<K> for MapRefresh<K, N, UK, V>
where
    K: StateKey,
    N: StateKey,
    UK: StateKey,
    V: StateValue,
{
    fn write<B: KeyedStateBackend<K>>(self, b: &mut B) -> Result<()> {
        b.set_current_key(self.key)?;
        for uk in self.uks {
            if let Some(s) = b.map_get::<N, UK, Stamped<V>>(self.id, &self.ns, &uk)? {
                b.map_put(self.id, &self.ns, uk, restamp(&s, self.at))?;
            }
        }
        Ok(())
    }
}

/// Queues the write `make` builds for the current key of `b` (nothing without one), marking the whole
/// value, list or "some entry" of the map under that key and `ns` of state `id`, and the map entries
/// `uks` (encoded user keys), as read at `at`.
fn queue<K, B, N, W>(
    b: &B,
    id: StateId,
    ns: &N,
    uks: &[Vec<u8>],
    at: u64,
    make: impl FnOnce(K) -> W,
) where
    K: StateKey,
    B: KeyedStateBackend<K>,
    N: StateKey,
    W: RefreshWrite<K>,
{
    let Some(key) = b.current_key() else {
        return;
    };
    let (key_bytes, ns_bytes) = (encoded(key), encoded(ns));
    let marks: Vec<Mark<'_>> = std::iter::once(None)
        .chain(uks.iter().map(|u| Some(u.as_slice())))
        .map(|uk| Mark {
            key: &key_bytes,
            ns: &ns_bytes,
            uk,
        })
        .collect();
    b.queue_refresh(make(key.clone()), id, &marks, at);
}

/// A value read at `at` restarts: the current key's value in `ns` of state `id`.
pub(crate) fn queue_value<K, B, N, V>(b: &B, id: StateId, ns: &N, at: u64)
where
    K: StateKey,
    B: KeyedStateBackend<K>,
    N: StateKey,
    V: StateValue,
{
    queue(b, id, ns, &[], at, |key| ValueRefresh::<K, N, V> {
        id,
        key,
        ns: ns.clone(),
        at,
        _value: PhantomData,
    });
}

/// The values of `keys` a batch read at `at` returned restart.
pub(crate) fn queue_batch<K, B, N, V>(b: &B, id: StateId, ns: &N, keys: Vec<K>, at: u64)
where
    K: StateKey,
    B: KeyedStateBackend<K>,
    N: StateKey,
    V: StateValue,
{
    let encoded_keys: Vec<Vec<u8>> = keys.iter().map(encoded).collect();
    let ns_bytes = encoded(ns);
    let marks: Vec<Mark<'_>> = (encoded_keys.iter())
        .map(|k| Mark {
            key: k,
            ns: &ns_bytes,
            uk: None,
        })
        .collect();
    let write = BatchRefresh::<K, N, V> {
        id,
        keys,
        ns: ns.clone(),
        at,
        _value: PhantomData,
    };
    b.queue_refresh(write, id, &marks, at);
}

/// A list read at `at` restarts: its elements alive then are stamped `at`, the expired ones written out.
pub(crate) fn queue_list<K, B, N, V>(b: &B, id: StateId, ttl: StateTtlConfig, ns: &N, at: u64)
where
    K: StateKey,
    B: KeyedStateBackend<K>,
    N: StateKey,
    V: StateValue,
{
    queue(b, id, ns, &[], at, |key| ListRefresh::<K, N, V> {
        id,
        key,
        ns: ns.clone(),
        ttl,
        at,
        _value: PhantomData,
    });
}

/// The map entries `uks` a read at `at` returned restart (those still there when it is written).
pub(crate) fn queue_map<K, B, N, UK, V>(b: &B, id: StateId, ns: &N, uks: Vec<UK>, at: u64)
where
    K: StateKey,
    B: KeyedStateBackend<K>,
    N: StateKey,
    UK: StateKey,
    V: StateValue,
{
    let marked: Vec<Vec<u8>> = uks.iter().map(encoded).collect();
    queue(b, id, ns, &marked, at, |key| MapRefresh::<K, N, UK, V> {
        id,
        key,
        ns: ns.clone(),
        uks,
        at,
        _value: PhantomData,
    });
}
