//! What a state object knows of its state: its id in the backend and its TTL. The one place that decides
//! what the backend stores for a state object's values: `V` as it is, or `Stamped<V>` (the value and
//! the time of its last write, `docs/ttl.md`) for a state with TTL, whose reads leave out what expired.

use crate::error::Result;
use crate::keyed::backend::{KeyedStateBackend, StateId, StateKey, StateValue};
use crate::keyed::map_iter::MapEntries;
use crate::keyed::read_refresh::{
    ReadCheck, queue_batch, queue_list, queue_map, queue_value, restarts, settle,
};
use crate::keyed::ttl::{Stamped, StateTtlConfig, TtlTime, TtlUpdate, TtlVisibility};

/// A registered state's id and TTL, with typed reads and writes through a backend's primitives.
#[derive(Debug, Clone, Copy)]
pub(crate) struct StateRef {
    pub(crate) id: StateId,
    ttl: Option<StateTtlConfig>,
    /// What a read of one value must do, known at registration (the hot read path's one branch).
    reads: Reads,
}

/// How [`StateRef::get`] reads: as it is stored, or judged against a TTL; in the common TTL case (an
/// expired value is never returned, reads restart nothing) a live value needs no more than its stamp.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reads {
    Plain,
    Ttl,
    TtlOther,
}

/// Now in `time` (ms) on `backend` (`TtlTimes::now_ms`).
#[inline]
fn now<K: StateKey, B: KeyedStateBackend<K>>(time: TtlTime, backend: &B) -> u64 {
    backend.ttl_times().now_ms(time)
}

/// Stamps every value of `values` with `now_ms`.
fn stamp_all<V>(ttl: &StateTtlConfig, values: Vec<V>, now_ms: u64) -> Vec<Stamped<V>> {
    values.into_iter().map(|v| ttl.stamp(v, now_ms)).collect()
}

impl StateRef {
    pub(crate) fn new(id: StateId, ttl: Option<StateTtlConfig>) -> Self {
        let reads = match ttl {
            None => Reads::Plain,
            Some(t)
                if t.update == TtlUpdate::OnCreateAndWrite
                    && t.visibility == TtlVisibility::NeverReturnExpired =>
            {
                Reads::Ttl
            }
            Some(_) => Reads::TtlOther,
        };
        StateRef { id, ttl, reads }
    }

    /// The value (a value, reduced value or accumulator) of the current key in `ns`.
    #[inline]
    pub(crate) fn get<K: StateKey, B: KeyedStateBackend<K>, N: StateKey, V: StateValue>(
        &self,
        b: &B,
        ns: &N,
    ) -> Result<Option<V>> {
        if self.reads == Reads::Plain {
            return b.value_get(self.id, ns);
        }
        let Some(ttl) = &self.ttl else {
            return b.value_get(self.id, ns);
        };
        let now = now(ttl.time, b);
        let Some(s) = b.value_get::<N, Stamped<V>>(self.id, ns)? else {
            return Ok(None);
        };
        // The common case inline: live, and the read restarts nothing.
        if self.reads == Reads::Ttl && !ttl.expired(s.last_update_ms, now) {
            return Ok(Some(s.value));
        }
        Ok(self.get_rest::<K, B, N, V>(b, ns, s, now))
    }

    /// [`StateRef::get`] of a value that expired by its stamp (a queued read may keep it alive) or whose
    /// read restarts it, out of line.
    #[cold]
    #[inline(never)]
    fn get_rest<K: StateKey, B: KeyedStateBackend<K>, N: StateKey, V: StateValue>(
        &self,
        b: &B,
        ns: &N,
        s: Stamped<V>,
        now: u64,
    ) -> Option<V> {
        if !self.returns(b, ns, None::<&()>, s.last_update_ms, now) {
            return None;
        }
        if self
            .ttl
            .is_some_and(|ttl| restarts(&ttl, s.last_update_ms, now))
        {
            queue_value::<K, B, N, V>(b, self.id, ns, now);
        }
        Some(s.value)
    }

    /// Whether a read at `now` returns an entry stamped `stamp` of the current key, `ns` and `uk`: not
    /// expired, or kept alive by a queued read (`keyed/ttl_refresh.rs`).
    #[inline]
    fn returns<K: StateKey, B: KeyedStateBackend<K>, N: StateKey, UK: StateKey>(
        &self,
        b: &B,
        ns: &N,
        uk: Option<&UK>,
        stamp: u64,
        now: u64,
    ) -> bool {
        let Some(ttl) = &self.ttl else { return true };
        ttl.visible(stamp, now) || self.kept(b, ttl, ns, uk, stamp, now)
    }

    /// Whether a queued read keeps an expired entry alive (out of line: only when something expired).
    #[cold]
    fn kept<K: StateKey, B: KeyedStateBackend<K>, N: StateKey, UK: StateKey>(
        &self,
        b: &B,
        ttl: &StateTtlConfig,
        ns: &N,
        uk: Option<&UK>,
        stamp: u64,
        now: u64,
    ) -> bool {
        ReadCheck::new(b, self.id, b.current_key(), ns, ttl, now)
            .is_some_and(|c| c.keeps(uk, stamp))
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
        settle(b)?;
        let now = now(ttl.time, b);
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
        settle(b)?;
        let now = now(ttl.time, b);
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
            Some(_) => {
                settle(b)?;
                b.value_clear::<N, Stamped<V>>(self.id, ns)
            }
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
        let now = now(ttl.time, b);
        let mut stored = Vec::with_capacity(keys.len());
        b.value_get_batch::<N, Stamped<V>>(self.id, ns, keys, &mut stored)?;
        let check = ReadCheck::new(b, self.id, None::<&K>, ns, ttl, now);
        let mut read = Vec::new();
        for (key, s) in keys.iter().zip(stored) {
            let s = s.filter(|s| {
                ttl.visible(s.last_update_ms, now)
                    || check
                        .as_ref()
                        .is_some_and(|c| c.keeps_key(key, s.last_update_ms))
            });
            if let Some(s) = &s
                && restarts(ttl, s.last_update_ms, now)
            {
                read.push(key.clone());
            }
            out.push(s.map(|s| s.value));
        }
        if !read.is_empty() {
            queue_batch::<K, B, N, V>(b, self.id, ns, read, now);
        }
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
        settle(b)?;
        let now = now(ttl.time, b);
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
        settle(b)?;
        let now = now(ttl.time, b);
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
        let now = now(ttl.time, b);
        let Some(stored) = b.list_get::<N, Stamped<V>>(self.id, ns)? else {
            return Ok(None);
        };
        let mut restart = false;
        // Marks are asked only once an element expired by its stamp, and looked up once for the list.
        let mut check: Option<Option<ReadCheck>> = None;
        let live: Vec<V> = stored
            .into_iter()
            .filter(|s| {
                ttl.visible(s.last_update_ms, now)
                    || (check.get_or_insert_with(|| {
                        ReadCheck::new(b, self.id, b.current_key(), ns, ttl, now)
                    }))
                    .as_ref()
                    .is_some_and(|c| c.keeps(None::<&()>, s.last_update_ms))
            })
            .map(|s| {
                restart |= restarts(ttl, s.last_update_ms, now);
                s.value
            })
            .collect();
        if restart {
            queue_list::<K, B, N, V>(b, self.id, *ttl, ns, now);
        }
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
        settle(b)?;
        let now = now(ttl.time, b);
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
        settle(b)?;
        let now = now(ttl.time, b);
        b.list_update(self.id, ns, stamp_all(ttl, values, now))
    }

    pub(crate) fn list_clear<K: StateKey, B: KeyedStateBackend<K>, N: StateKey, V: StateValue>(
        &self,
        b: &mut B,
        ns: &N,
    ) -> Result<()> {
        match self.ttl {
            None => b.list_clear::<N, V>(self.id, ns),
            Some(_) => {
                settle(b)?;
                b.list_clear::<N, Stamped<V>>(self.id, ns)
            }
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
        let now = now(ttl.time, b);
        let Some(s) = b.map_get::<N, UK, Stamped<V>>(self.id, ns, uk)? else {
            return Ok(None);
        };
        if !self.returns(b, ns, Some(uk), s.last_update_ms, now) {
            return Ok(None);
        }
        if restarts(ttl, s.last_update_ms, now) {
            queue_map::<K, B, N, UK, V>(b, self.id, ns, vec![uk.clone()], now);
        }
        Ok(Some(s.value))
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
        settle(b)?;
        let now = now(ttl.time, b);
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
            Some(_) => {
                settle(b)?;
                b.map_remove::<N, UK, Stamped<V>>(self.id, ns, uk)
            }
        }
    }

    /// The map's entries without the expired ones, streamed (read in full first when the read restarts
    /// them, [`TtlUpdate::OnReadAndWrite`]).
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

    /// [`StateRef::map_iter`]; `restart`: whether the read restarts what it returns (not for
    /// `is_empty`).
    fn map_entries<'a, K, B, N, UK, V>(
        &self,
        b: &'a B,
        ns: &N,
        restart: bool,
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
        let now = now(ttl.time, b);
        let stored = b.map_iter::<N, UK, Stamped<V>>(self.id, ns)?;
        let check = ReadCheck::new(b, self.id, b.current_key(), ns, &ttl, now);
        let returns = move |uk: &UK, s: &Stamped<V>| {
            ttl.visible(s.last_update_ms, now)
                || check
                    .as_ref()
                    .is_some_and(|c| c.keeps(Some(uk), s.last_update_ms))
        };
        if ttl.update == TtlUpdate::OnReadAndWrite && restart {
            // A read restarts every entry it returns: the live entries are read in full here, so that
            // all of them are marked (an iteration the caller stops early restarts them all too).
            let mut live = Vec::new();
            for entry in stored {
                let (uk, s) = entry?;
                if returns(&uk, &s) {
                    live.push((uk, s));
                }
            }
            let restarted: Vec<UK> = (live.iter())
                .filter(|(_, s)| restarts(&ttl, s.last_update_ms, now))
                .map(|(uk, _)| uk.clone())
                .collect();
            if !restarted.is_empty() {
                queue_map::<K, B, N, UK, V>(b, self.id, ns, restarted, now);
            }
            return Ok(MapEntries::new(
                live.into_iter().map(|(uk, s)| Ok((uk, s.value))),
            ));
        }
        Ok(MapEntries::new(stored.filter_map(
            move |entry| match entry {
                Ok((uk, s)) => returns(&uk, &s).then(|| Ok((uk, s.value))),
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
        settle(b)?;
        let now = now(ttl.time, b);
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
        settle(b)?;
        let now = now(ttl.time, b);
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
            Some(_) => {
                settle(b)?;
                b.map_clear::<N, UK, Stamped<V>>(self.id, ns)
            }
        }
    }
}
