//! What a state object knows of its state: its id in the backend and its TTL. The one place that decides
//! what the backend stores for a state object's values: `V` as it is, or `Stamped<V>` (the value and
//! the time of its last write, `docs/ttl.md`) for a state with TTL, whose reads leave out what expired.

use std::sync::Arc;

use parking_lot::Mutex;

use crate::error::Result;
use crate::keyed::backend::{KeyedStateBackend, StateId, StateKey, StateValue};
use crate::keyed::map_iter::MapEntries;
use crate::keyed::ttl::{Stamped, StateTtlConfig, TtlTime, TtlUpdate};

/// A registered state's id and TTL, with typed reads and writes through a backend's primitives.
#[derive(Debug, Clone, Copy)]
pub(crate) struct StateRef {
    pub(crate) id: StateId,
    ttl: Option<StateTtlConfig>,
}

/// Now in `time` (ms) on `backend`: processing time as sampled when the current key was set, or read
/// from the clock again if `fresh` (batch calls).
#[inline]
fn now<K: StateKey, B: KeyedStateBackend<K>>(time: TtlTime, backend: &B, fresh: bool) -> u64 {
    backend.ttl_times().now_ms(time, fresh)
}

/// Whether a read at `now` that returns an entry last written at `stamp` restarts its TTL
/// ([`TtlUpdate::OnReadAndWrite`]; an entry stamped `now` already is left alone).
#[inline]
fn refreshes(ttl: &StateTtlConfig, stamp: u64, now: u64) -> bool {
    ttl.update == TtlUpdate::OnReadAndWrite && stamp < now && ttl.visible(stamp, now)
}

/// `s` stamped `at` (or later, if it was written later than the read that refreshes it).
fn restamp<V: Clone>(s: &Stamped<V>, at: u64) -> Stamped<V> {
    Stamped {
        value: s.value.clone(),
        last_update_ms: s.last_update_ms.max(at),
    }
}

/// Queues `write` for the next record's edge (`keyed/ttl_refresh.rs`), with the current key of now made
/// current again and `ns`.
fn refresh_at_key<K, B, N>(
    b: &B,
    ns: &N,
    write: impl FnOnce(&mut B, &N) -> Result<()> + Send + 'static,
) where
    K: StateKey,
    B: KeyedStateBackend<K>,
    N: StateKey,
{
    let Some(key) = b.current_key().cloned() else {
        return;
    };
    let ns = ns.clone();
    b.ttl_times()
        .refreshes()
        .push::<B>(Box::new(move |b: &mut B| {
            b.set_current_key(key)?;
            write(b, &ns)
        }));
}

/// Applies the refreshes queued through `B` (each makes its key current; the caller sets the key it
/// wants next, or restores it). Called at every record's edge of `B` when something is queued.
///
/// # Errors
/// The first error of a refresh's write; the refreshes after it are dropped (their values then expire
/// as last written).
#[cold]
pub(crate) fn apply_refreshes<K: StateKey, B: KeyedStateBackend<K>>(backend: &mut B) -> Result<()> {
    let refreshes = backend.ttl_times().refreshes().take::<B>();
    for refresh in refreshes {
        refresh(backend)?;
    }
    Ok(())
}

/// As [`apply_refreshes`] before a snapshot's synchronous phase: the current key is set back after.
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
    apply_refreshes(backend)?;
    match current {
        Some(key) => backend.set_current_key(key),
        None => Ok(()),
    }
}

/// Stamps every value of `values` with `now_ms`.
fn stamp_all<V>(ttl: &StateTtlConfig, values: Vec<V>, now_ms: u64) -> Vec<Stamped<V>> {
    values.into_iter().map(|v| ttl.stamp(v, now_ms)).collect()
}

impl StateRef {
    pub(crate) fn new(id: StateId, ttl: Option<StateTtlConfig>) -> Self {
        StateRef { id, ttl }
    }

    /// The value (a value, reduced value or accumulator) of the current key in `ns`.
    #[inline]
    pub(crate) fn get<K: StateKey, B: KeyedStateBackend<K>, N: StateKey, V: StateValue>(
        &self,
        b: &B,
        ns: &N,
    ) -> Result<Option<V>> {
        let Some(ttl) = &self.ttl else {
            return b.value_get(self.id, ns);
        };
        let now = now(ttl.time, b, false);
        let stored = b.value_get::<N, Stamped<V>>(self.id, ns)?;
        if let Some(s) = &stored
            && refreshes(ttl, s.last_update_ms, now)
        {
            let id = self.id;
            refresh_at_key(b, ns, move |b: &mut B, ns| {
                b.value_modify::<N, Stamped<V>>(id, ns, &mut |old| old.map(|s| restamp(s, now)))
            });
        }
        Ok(ttl.read(stored, now))
    }

    #[inline]
    pub(crate) fn put<K: StateKey, B: KeyedStateBackend<K>, N: StateKey, V: StateValue>(
        &self,
        b: &mut B,
        ns: &N,
        value: V,
    ) -> Result<()> {
        let Some(ttl) = &self.ttl else {
            return b.value_put(self.id, ns, value);
        };
        let now = now(ttl.time, b, false);
        b.value_put(self.id, ns, ttl.stamp(value, now))
    }

    /// Replaces the value with `f(old)` (removes it on `None`); an expired value is `None` to `f`
    /// (unless the TTL returns expired values) and what `f` returns is stamped now.
    pub(crate) fn modify<K: StateKey, B: KeyedStateBackend<K>, N: StateKey, V: StateValue>(
        &self,
        b: &mut B,
        ns: &N,
        f: &mut dyn FnMut(Option<&V>) -> Option<V>,
    ) -> Result<()> {
        let Some(ttl) = self.ttl else {
            return b.value_modify(self.id, ns, f);
        };
        let now = now(ttl.time, b, false);
        b.value_modify::<N, Stamped<V>>(self.id, ns, &mut |old| {
            f(ttl.read_ref(old, now)).map(|v| ttl.stamp(v, now))
        })
    }

    pub(crate) fn clear<K: StateKey, B: KeyedStateBackend<K>, N: StateKey, V: StateValue>(
        &self,
        b: &mut B,
        ns: &N,
    ) -> Result<()> {
        match self.ttl {
            None => b.value_clear::<N, V>(self.id, ns),
            Some(_) => b.value_clear::<N, Stamped<V>>(self.id, ns),
        }
    }

    /// The values of `keys` in `ns`, appended to `out` (processing time read once for the batch).
    pub(crate) fn get_batch<K: StateKey, B: KeyedStateBackend<K>, N: StateKey, V: StateValue>(
        &self,
        b: &B,
        ns: &N,
        keys: &[K],
        out: &mut Vec<Option<V>>,
    ) -> Result<()> {
        let Some(ttl) = &self.ttl else {
            return b.value_get_batch(self.id, ns, keys, out);
        };
        let now = now(ttl.time, b, true);
        let mut stored = Vec::with_capacity(keys.len());
        b.value_get_batch::<N, Stamped<V>>(self.id, ns, keys, &mut stored)?;
        let read: Vec<K> = (keys.iter().zip(&stored))
            .filter(|(_, s)| {
                s.as_ref()
                    .is_some_and(|s| refreshes(ttl, s.last_update_ms, now))
            })
            .map(|(k, _)| k.clone())
            .collect();
        if !read.is_empty() {
            let (id, ns) = (self.id, ns.clone());
            b.ttl_times()
                .refreshes()
                .push::<B>(Box::new(move |b: &mut B| {
                    b.value_modify_batch::<N, Stamped<V>>(id, &ns, &read, &mut |_, old| {
                        old.map(|s| restamp(s, now))
                    })
                }));
        }
        out.extend(stored.into_iter().map(|s| ttl.read(s, now)));
        Ok(())
    }

    pub(crate) fn put_batch<K: StateKey, B: KeyedStateBackend<K>, N: StateKey, V: StateValue>(
        &self,
        b: &mut B,
        ns: &N,
        keys: &[K],
        values: &[V],
    ) -> Result<()> {
        let Some(ttl) = &self.ttl else {
            return b.value_put_batch(self.id, ns, keys, values);
        };
        let now = now(ttl.time, b, true);
        let stamped = stamp_all(ttl, values.to_vec(), now);
        b.value_put_batch(self.id, ns, keys, &stamped)
    }

    /// As [`StateRef::modify`] for each of `keys`, `f` given the key's index.
    pub(crate) fn modify_batch<K: StateKey, B: KeyedStateBackend<K>, N: StateKey, V: StateValue>(
        &self,
        b: &mut B,
        ns: &N,
        keys: &[K],
        f: &mut dyn FnMut(usize, Option<&V>) -> Option<V>,
    ) -> Result<()> {
        let Some(ttl) = self.ttl else {
            return b.value_modify_batch(self.id, ns, keys, f);
        };
        let now = now(ttl.time, b, true);
        b.value_modify_batch::<N, Stamped<V>>(self.id, ns, keys, &mut |i, old| {
            f(i, ttl.read_ref(old, now)).map(|v| ttl.stamp(v, now))
        })
    }

    /// The list of the current key in `ns` without its expired elements (`None` if none is left).
    pub(crate) fn list_get<K: StateKey, B: KeyedStateBackend<K>, N: StateKey, V: StateValue>(
        &self,
        b: &B,
        ns: &N,
    ) -> Result<Option<Vec<V>>> {
        let Some(ttl) = &self.ttl else {
            return b.list_get(self.id, ns);
        };
        let now = now(ttl.time, b, false);
        let Some(stored) = b.list_get::<N, Stamped<V>>(self.id, ns)? else {
            return Ok(None);
        };
        if stored.iter().any(|s| refreshes(ttl, s.last_update_ms, now)) {
            let (id, ttl) = (self.id, *ttl);
            refresh_at_key(b, ns, move |b: &mut B, ns| {
                let Some(list) = b.list_get::<N, Stamped<V>>(id, ns)? else {
                    return Ok(());
                };
                // What the read returned, stamped with its time; what had expired is written out.
                let kept: Vec<_> = (list.iter())
                    .filter(|s| ttl.visible(s.last_update_ms, now))
                    .map(|s| restamp(s, now))
                    .collect();
                b.list_update(id, ns, kept)
            });
        }
        let live: Vec<V> = stored
            .into_iter()
            .filter_map(|s| ttl.read(Some(s), now))
            .collect();
        Ok((!live.is_empty()).then_some(live))
    }

    pub(crate) fn list_add_all<K: StateKey, B: KeyedStateBackend<K>, N: StateKey, V: StateValue>(
        &self,
        b: &mut B,
        ns: &N,
        values: Vec<V>,
    ) -> Result<()> {
        let Some(ttl) = &self.ttl else {
            return b.list_add_all(self.id, ns, values);
        };
        let now = now(ttl.time, b, false);
        b.list_add_all(self.id, ns, stamp_all(ttl, values, now))
    }

    pub(crate) fn list_update<K: StateKey, B: KeyedStateBackend<K>, N: StateKey, V: StateValue>(
        &self,
        b: &mut B,
        ns: &N,
        values: Vec<V>,
    ) -> Result<()> {
        let Some(ttl) = &self.ttl else {
            return b.list_update(self.id, ns, values);
        };
        let now = now(ttl.time, b, false);
        b.list_update(self.id, ns, stamp_all(ttl, values, now))
    }

    pub(crate) fn list_clear<K: StateKey, B: KeyedStateBackend<K>, N: StateKey, V: StateValue>(
        &self,
        b: &mut B,
        ns: &N,
    ) -> Result<()> {
        match self.ttl {
            None => b.list_clear::<N, V>(self.id, ns),
            Some(_) => b.list_clear::<N, Stamped<V>>(self.id, ns),
        }
    }
}

/// The map accesses of [`StateRef`].
impl StateRef {
    pub(crate) fn map_get<K, B, N, UK, V>(&self, b: &B, ns: &N, uk: &UK) -> Result<Option<V>>
    where
        K: StateKey,
        B: KeyedStateBackend<K>,
        N: StateKey,
        UK: StateKey,
        V: StateValue,
    {
        let Some(ttl) = &self.ttl else {
            return b.map_get(self.id, ns, uk);
        };
        let now = now(ttl.time, b, false);
        let stored = b.map_get::<N, UK, Stamped<V>>(self.id, ns, uk)?;
        if let Some(s) = &stored
            && refreshes(ttl, s.last_update_ms, now)
        {
            let (id, uk) = (self.id, uk.clone());
            refresh_at_key(b, ns, move |b: &mut B, ns| {
                refresh_entries::<K, B, N, UK, V>(b, id, ns, vec![uk], now)
            });
        }
        Ok(ttl.read(stored, now))
    }

    pub(crate) fn map_put<K, B, N, UK, V>(&self, b: &mut B, ns: &N, uk: UK, value: V) -> Result<()>
    where
        K: StateKey,
        B: KeyedStateBackend<K>,
        N: StateKey,
        UK: StateKey,
        V: StateValue,
    {
        let Some(ttl) = &self.ttl else {
            return b.map_put(self.id, ns, uk, value);
        };
        let now = now(ttl.time, b, false);
        b.map_put(self.id, ns, uk, ttl.stamp(value, now))
    }

    pub(crate) fn map_remove<K, B, N, UK, V>(&self, b: &mut B, ns: &N, uk: &UK) -> Result<()>
    where
        K: StateKey,
        B: KeyedStateBackend<K>,
        N: StateKey,
        UK: StateKey,
        V: StateValue,
    {
        match self.ttl {
            None => b.map_remove::<N, UK, V>(self.id, ns, uk),
            Some(_) => b.map_remove::<N, UK, Stamped<V>>(self.id, ns, uk),
        }
    }

    /// The map's entries without the expired ones, streamed.
    pub(crate) fn map_iter<'a, K, B, N, UK, V>(
        &self,
        b: &'a B,
        ns: &N,
    ) -> Result<MapEntries<'a, UK, V>>
    where
        K: StateKey,
        B: KeyedStateBackend<K>,
        N: StateKey,
        UK: StateKey,
        V: StateValue,
    {
        self.map_entries::<K, B, N, UK, V>(b, ns, true)
    }

    /// [`StateRef::map_iter`]; `refresh`: whether the entries returned restart their TTL (under
    /// [`TtlUpdate::OnReadAndWrite`]: queued as they are returned, written at the next record's edge).
    fn map_entries<'a, K, B, N, UK, V>(
        &self,
        b: &'a B,
        ns: &N,
        refresh: bool,
    ) -> Result<MapEntries<'a, UK, V>>
    where
        K: StateKey,
        B: KeyedStateBackend<K>,
        N: StateKey,
        UK: StateKey,
        V: StateValue,
    {
        let Some(ttl) = self.ttl else {
            return b.map_iter(self.id, ns);
        };
        let now = now(ttl.time, b, false);
        let stored = b.map_iter::<N, UK, Stamped<V>>(self.id, ns)?;
        // The user keys of the entries returned that a read restarts, written back at the next edge.
        let read: Option<Arc<Mutex<Vec<UK>>>> =
            (refresh && ttl.update == TtlUpdate::OnReadAndWrite).then(Default::default);
        if let Some(read) = &read {
            let (id, read) = (self.id, read.clone());
            refresh_at_key(b, ns, move |b: &mut B, ns| {
                let uks = std::mem::take(&mut *read.lock());
                refresh_entries::<K, B, N, UK, V>(b, id, ns, uks, now)
            });
        }
        Ok(MapEntries::new(stored.filter_map(
            move |entry| match entry {
                Ok((uk, s)) => {
                    if let Some(read) = &read
                        && refreshes(&ttl, s.last_update_ms, now)
                    {
                        read.lock().push(uk.clone());
                    }
                    ttl.read(Some(s), now).map(|v| Ok((uk, v)))
                }
                Err(e) => Some(Err(e)),
            },
        )))
    }

    pub(crate) fn map_put_all<K, B, N, UK, V>(
        &self,
        b: &mut B,
        ns: &N,
        entries: Vec<(UK, V)>,
    ) -> Result<()>
    where
        K: StateKey,
        B: KeyedStateBackend<K>,
        N: StateKey,
        UK: StateKey,
        V: StateValue,
    {
        let Some(ttl) = &self.ttl else {
            return b.map_put_all(self.id, ns, entries);
        };
        let now = now(ttl.time, b, false);
        let stamped = entries
            .into_iter()
            .map(|(uk, v)| (uk, ttl.stamp(v, now)))
            .collect();
        b.map_put_all(self.id, ns, stamped)
    }

    /// Keeps the entries `keep` answers true for; with TTL, an expired entry `keep` is not shown (under
    /// [`NeverReturnExpired`](crate::keyed::TtlVisibility::NeverReturnExpired)) is removed.
    pub(crate) fn map_retain<K, B, N, UK, V>(
        &self,
        b: &mut B,
        ns: &N,
        keep: &mut dyn FnMut(&UK, &V) -> bool,
    ) -> Result<()>
    where
        K: StateKey,
        B: KeyedStateBackend<K>,
        N: StateKey,
        UK: StateKey,
        V: StateValue,
    {
        let Some(ttl) = self.ttl else {
            return b.map_retain(self.id, ns, keep);
        };
        let now = now(ttl.time, b, false);
        b.map_retain::<N, UK, Stamped<V>>(self.id, ns, &mut |uk, s| {
            ttl.read_ref(Some(s), now).is_some_and(|v| keep(uk, v))
        })
    }

    /// Whether the map has no entry a read returns (with TTL, every entry expired counts as empty).
    pub(crate) fn map_is_empty<K, B, N, UK, V>(&self, b: &B, ns: &N) -> Result<bool>
    where
        K: StateKey,
        B: KeyedStateBackend<K>,
        N: StateKey,
        UK: StateKey,
        V: StateValue,
    {
        if self.ttl.is_none() {
            return b.map_is_empty::<N, UK, V>(self.id, ns);
        }
        match self.map_entries::<K, B, N, UK, V>(b, ns, false)?.next() {
            None => Ok(true),
            Some(entry) => entry.map(|_| false),
        }
    }

    pub(crate) fn map_clear<K, B, N, UK, V>(&self, b: &mut B, ns: &N) -> Result<()>
    where
        K: StateKey,
        B: KeyedStateBackend<K>,
        N: StateKey,
        UK: StateKey,
        V: StateValue,
    {
        match self.ttl {
            None => b.map_clear::<N, UK, V>(self.id, ns),
            Some(_) => b.map_clear::<N, UK, Stamped<V>>(self.id, ns),
        }
    }
}

/// Stamps the entries `uks` of a map state with `at` (those still there), for a read that restarted them.
fn refresh_entries<K, B, N, UK, V>(
    b: &mut B,
    id: StateId,
    ns: &N,
    uks: Vec<UK>,
    at: u64,
) -> Result<()>
where
    K: StateKey,
    B: KeyedStateBackend<K>,
    N: StateKey,
    UK: StateKey,
    V: StateValue,
{
    for uk in uks {
        if let Some(s) = b.map_get::<N, UK, Stamped<V>>(id, ns, &uk)? {
            b.map_put(id, ns, uk, restamp(&s, at))?;
        }
    }
    Ok(())
}
