//! What a state object knows of its state: its id in the backend and its TTL. The one place that decides
//! what the backend stores for a state object's values: `V` as it is, or `Stamped<V>` (the value and
//! the time of its last write, `docs/ttl.md`) for a state with TTL, whose reads leave out what expired.

use crate::error::Result;
use crate::keyed::backend::{KeyedStateBackend, StateId, StateKey, StateValue};
use crate::keyed::map_iter::MapEntries;
use crate::keyed::ttl::{Stamped, StateTtlConfig, TtlTime};

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
        Ok(ttl.read(b.value_get::<N, Stamped<V>>(self.id, ns)?, now))
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
        Ok(ttl.read(b.map_get::<N, UK, Stamped<V>>(self.id, ns, uk)?, now))
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
        let Some(ttl) = self.ttl else {
            return b.map_iter(self.id, ns);
        };
        let now = now(ttl.time, b, false);
        let stored = b.map_iter::<N, UK, Stamped<V>>(self.id, ns)?;
        Ok(MapEntries::new(stored.filter_map(
            move |entry| match entry {
                Ok((uk, s)) => ttl.read(Some(s), now).map(|v| Ok((uk, v))),
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
        match self.map_iter::<K, B, N, UK, V>(b, ns)?.next() {
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
