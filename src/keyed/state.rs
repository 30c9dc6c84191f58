//! Typed state objects (as Flink's `ValueState`, `ListState`, `MapState`, `ReducingState`,
//! `AggregatingState`). Each is a cheap, clonable reference to a registered state; its methods act on the
//! backend's current key and the given namespace.

use std::marker::PhantomData;

/// Marks the types a descriptor or state object stands for without owning them.
type Types<T> = PhantomData<fn() -> T>;
use std::sync::Arc;

use crate::error::Result;
use crate::keyed::backend::{KeyedStateBackend, StateId, StateKey, StateValue};
use crate::keyed::descriptor::{AggregateFunction, ReduceFn};
use crate::keyed::map_iter::MapEntries;
use crate::keyed::ttl::StateTtlConfig;
use crate::keyed::typed::StateRef;

/// `keys_with_state()`, `keys_and_namespaces()` and `id()`, the same for every state object.
macro_rules! common_methods {
    () => {
        /// Keys with state in namespace `ns` (as Flink's `getKeys`), in no particular order.
        ///
        /// # Errors
        /// [`Error::InvalidArgument`](crate::Error::InvalidArgument) if the backend does not hold this state.
        pub fn keys_with_state<K: StateKey, B: KeyedStateBackend<K>>(
            &self,
            backend: &B,
            ns: &N,
        ) -> Result<Vec<K>> {
            backend.keys(self.at.id, ns)
        }

        /// Every `(key, namespace)` with state (as Flink's `getKeysAndNamespaces`), in no particular order.
        ///
        /// # Errors
        /// As [`KeyedStateBackend::keys_and_namespaces`].
        pub fn keys_and_namespaces<K: StateKey, B: KeyedStateBackend<K>>(
            &self,
            backend: &B,
        ) -> Result<Vec<(K, N)>> {
            backend.keys_and_namespaces(self.at.id)
        }

        /// The id of this state in its backend (for [`KeyedStateBackend::keys`]).
        pub fn id(&self) -> StateId {
            self.at.id
        }
    };
}

/// A single value per key and namespace.
pub struct ValueState<N, V> {
    pub(crate) at: StateRef,
    _types: Types<(N, V)>,
}

impl<N, V> Clone for ValueState<N, V> {
    fn clone(&self) -> Self {
        ValueState {
            at: self.at,
            _types: PhantomData,
        }
    }
}

impl<N: StateKey, V: StateValue> ValueState<N, V> {
    pub(crate) fn new(id: StateId, ttl: Option<StateTtlConfig>) -> Self {
        ValueState {
            at: StateRef::new(id, ttl),
            _types: PhantomData,
        }
    }

    /// The value of the current key, `None` if unset.
    ///
    /// # Errors
    /// [`Error::IllegalState`](crate::Error::IllegalState) without a current key.
    #[inline]
    pub fn value<K: StateKey, B: KeyedStateBackend<K>>(
        &self,
        backend: &B,
        ns: &N,
    ) -> Result<Option<V>> {
        self.at.get(backend, ns)
    }

    /// Sets the value of the current key. Errors as [`ValueState::value`].
    #[inline]
    pub fn update<K: StateKey, B: KeyedStateBackend<K>>(
        &self,
        backend: &mut B,
        ns: &N,
        value: V,
    ) -> Result<()> {
        self.at.put(backend, ns, value)
    }

    /// Removes the value of the current key. Errors as [`ValueState::value`].
    pub fn clear<K: StateKey, B: KeyedStateBackend<K>>(
        &self,
        backend: &mut B,
        ns: &N,
    ) -> Result<()> {
        self.at.clear::<K, B, N, V>(backend, ns)
    }

    common_methods!();
}

/// A list of values per key and namespace. An empty list is the same as no list.
pub struct ListState<N, V> {
    pub(crate) at: StateRef,
    _types: Types<(N, V)>,
}

impl<N, V> Clone for ListState<N, V> {
    fn clone(&self) -> Self {
        ListState {
            at: self.at,
            _types: PhantomData,
        }
    }
}

impl<N: StateKey, V: StateValue> ListState<N, V> {
    pub(crate) fn new(id: StateId, ttl: Option<StateTtlConfig>) -> Self {
        ListState {
            at: StateRef::new(id, ttl),
            _types: PhantomData,
        }
    }

    /// The list of the current key (empty if none).
    ///
    /// # Errors
    /// [`Error::IllegalState`](crate::Error::IllegalState) without a current key.
    pub fn get<K: StateKey, B: KeyedStateBackend<K>>(&self, backend: &B, ns: &N) -> Result<Vec<V>> {
        Ok(self.at.list_get(backend, ns)?.unwrap_or_default())
    }

    /// Appends `value`. Errors as [`ListState::get`].
    pub fn add<K: StateKey, B: KeyedStateBackend<K>>(
        &self,
        backend: &mut B,
        ns: &N,
        value: V,
    ) -> Result<()> {
        self.at.list_add_all(backend, ns, vec![value])
    }

    /// Appends all `values`. Errors as [`ListState::get`].
    pub fn add_all<K: StateKey, B: KeyedStateBackend<K>>(
        &self,
        backend: &mut B,
        ns: &N,
        values: Vec<V>,
    ) -> Result<()> {
        self.at.list_add_all(backend, ns, values)
    }

    /// Replaces the list with `values`. Errors as [`ListState::get`].
    pub fn update<K: StateKey, B: KeyedStateBackend<K>>(
        &self,
        backend: &mut B,
        ns: &N,
        values: Vec<V>,
    ) -> Result<()> {
        self.at.list_update(backend, ns, values)
    }

    /// Removes the list. Errors as [`ListState::get`].
    pub fn clear<K: StateKey, B: KeyedStateBackend<K>>(
        &self,
        backend: &mut B,
        ns: &N,
    ) -> Result<()> {
        self.at.list_clear::<K, B, N, V>(backend, ns)
    }

    common_methods!();
}

/// A map from user keys `UK` to values `V` per key and namespace.
pub struct MapState<N, UK, V> {
    pub(crate) at: StateRef,
    _types: Types<(N, UK, V)>,
}

impl<N, UK, V> Clone for MapState<N, UK, V> {
    fn clone(&self) -> Self {
        MapState {
            at: self.at,
            _types: PhantomData,
        }
    }
}

impl<N: StateKey, UK: StateKey, V: StateValue> MapState<N, UK, V> {
    pub(crate) fn new(id: StateId, ttl: Option<StateTtlConfig>) -> Self {
        MapState {
            at: StateRef::new(id, ttl),
            _types: PhantomData,
        }
    }

    /// The value of `uk` under the current key.
    ///
    /// # Errors
    /// [`Error::IllegalState`](crate::Error::IllegalState) without a current key.
    pub fn get<K: StateKey, B: KeyedStateBackend<K>>(
        &self,
        backend: &B,
        ns: &N,
        uk: &UK,
    ) -> Result<Option<V>> {
        self.at.map_get(backend, ns, uk)
    }

    /// Whether `uk` is present. Errors as [`MapState::get`].
    pub fn contains<K: StateKey, B: KeyedStateBackend<K>>(
        &self,
        backend: &B,
        ns: &N,
        uk: &UK,
    ) -> Result<bool> {
        Ok(self.get(backend, ns, uk)?.is_some())
    }

    /// Sets `uk` to `value`. Errors as [`MapState::get`].
    pub fn put<K: StateKey, B: KeyedStateBackend<K>>(
        &self,
        backend: &mut B,
        ns: &N,
        uk: UK,
        value: V,
    ) -> Result<()> {
        self.at.map_put(backend, ns, uk, value)
    }

    /// Removes `uk`. Errors as [`MapState::get`].
    pub fn remove<K: StateKey, B: KeyedStateBackend<K>>(
        &self,
        backend: &mut B,
        ns: &N,
        uk: &UK,
    ) -> Result<()> {
        self.at.map_remove::<K, B, N, UK, V>(backend, ns, uk)
    }

    /// All entries, collected, in no particular order. Errors as [`MapState::get`].
    pub fn entries<K: StateKey, B: KeyedStateBackend<K>>(
        &self,
        backend: &B,
        ns: &N,
    ) -> Result<Vec<(UK, V)>> {
        self.at.map_iter(backend, ns)?.collect()
    }

    /// The entries, streamed as they are read ([`MapEntries`]), in no particular order. Errors as
    /// [`MapState::get`].
    pub fn iter<'a, K: StateKey, B: KeyedStateBackend<K>>(
        &self,
        backend: &'a B,
        ns: &N,
    ) -> Result<MapEntries<'a, UK, V>> {
        self.at.map_iter(backend, ns)
    }

    /// The user keys, streamed. Errors as [`MapState::get`].
    pub fn keys<'a, K: StateKey, B: KeyedStateBackend<K>>(
        &self,
        backend: &'a B,
        ns: &N,
    ) -> Result<impl Iterator<Item = Result<UK>> + 'a> {
        Ok(self.iter(backend, ns)?.keys())
    }

    /// The values, streamed. Errors as [`MapState::get`].
    pub fn values<'a, K: StateKey, B: KeyedStateBackend<K>>(
        &self,
        backend: &'a B,
        ns: &N,
    ) -> Result<impl Iterator<Item = Result<V>> + 'a> {
        Ok(self.iter(backend, ns)?.values())
    }

    /// Sets every entry of `entries` (later ones win) in one write. Errors as [`MapState::get`].
    pub fn put_all<K: StateKey, B: KeyedStateBackend<K>>(
        &self,
        backend: &mut B,
        ns: &N,
        entries: impl IntoIterator<Item = (UK, V)>,
    ) -> Result<()> {
        self.at
            .map_put_all(backend, ns, entries.into_iter().collect())
    }

    /// Keeps only the entries for which `keep` answers true: Flink's removal through the entry iterator.
    /// Errors as [`MapState::get`].
    pub fn retain<K: StateKey, B: KeyedStateBackend<K>>(
        &self,
        backend: &mut B,
        ns: &N,
        mut keep: impl FnMut(&UK, &V) -> bool,
    ) -> Result<()> {
        self.at.map_retain(backend, ns, &mut keep)
    }

    /// Whether the map is empty, without reading its entries. Errors as [`MapState::get`].
    pub fn is_empty<K: StateKey, B: KeyedStateBackend<K>>(
        &self,
        backend: &B,
        ns: &N,
    ) -> Result<bool> {
        self.at.map_is_empty::<K, B, N, UK, V>(backend, ns)
    }

    /// Removes the whole map. Errors as [`MapState::get`].
    pub fn clear<K: StateKey, B: KeyedStateBackend<K>>(
        &self,
        backend: &mut B,
        ns: &N,
    ) -> Result<()> {
        self.at.map_clear::<K, B, N, UK, V>(backend, ns)
    }

    common_methods!();
}

/// A value combined with every added value by a reduce function.
pub struct ReducingState<N, V> {
    pub(crate) at: StateRef,
    pub(crate) reduce: ReduceFn<V>,
    _types: Types<N>,
}

impl<N, V> Clone for ReducingState<N, V> {
    fn clone(&self) -> Self {
        ReducingState {
            at: self.at,
            reduce: self.reduce.clone(),
            _types: PhantomData,
        }
    }
}

impl<N: StateKey, V: StateValue> ReducingState<N, V> {
    pub(crate) fn new(id: StateId, reduce: ReduceFn<V>, ttl: Option<StateTtlConfig>) -> Self {
        ReducingState {
            at: StateRef::new(id, ttl),
            reduce,
            _types: PhantomData,
        }
    }

    /// The reduced value of the current key.
    ///
    /// # Errors
    /// [`Error::IllegalState`](crate::Error::IllegalState) without a current key.
    pub fn get<K: StateKey, B: KeyedStateBackend<K>>(
        &self,
        backend: &B,
        ns: &N,
    ) -> Result<Option<V>> {
        self.at.get(backend, ns)
    }

    /// Combines `value` into the stored value (or stores it if none). Errors as [`ReducingState::get`].
    pub fn add<K: StateKey, B: KeyedStateBackend<K>>(
        &self,
        backend: &mut B,
        ns: &N,
        value: V,
    ) -> Result<()> {
        let mut value = Some(value);
        self.at.modify::<K, B, N, V>(backend, ns, &mut |old| {
            let added = value.take()?;
            Some(match old {
                Some(old) => (self.reduce)(old, &added),
                None => added,
            })
        })
    }

    /// As [`ReducingState::add`], and whether the state held no value before: the first value of this key
    /// and namespace (an engine registers a window's timer then, without a read of its own before every
    /// add). Errors as [`ReducingState::get`].
    pub fn add_first<K: StateKey, B: KeyedStateBackend<K>>(
        &self,
        backend: &mut B,
        ns: &N,
        value: V,
    ) -> Result<bool> {
        let mut value = Some(value);
        let mut first = false;
        self.at.modify::<K, B, N, V>(backend, ns, &mut |old| {
            let added = value.take()?;
            first = old.is_none();
            Some(match old {
                Some(old) => (self.reduce)(old, &added),
                None => added,
            })
        })?;
        Ok(first)
    }

    /// Removes the value. Errors as [`ReducingState::get`].
    pub fn clear<K: StateKey, B: KeyedStateBackend<K>>(
        &self,
        backend: &mut B,
        ns: &N,
    ) -> Result<()> {
        self.at.clear::<K, B, N, V>(backend, ns)
    }

    common_methods!();
}

/// An accumulator folded by an [`AggregateFunction`]; reads give the function's result.
pub struct AggregatingState<N, IN, ACC, OUT> {
    pub(crate) at: StateRef,
    pub(crate) function: Arc<dyn AggregateFunction<IN, ACC, OUT>>,
    _types: Types<N>,
}

impl<N, IN, ACC, OUT> Clone for AggregatingState<N, IN, ACC, OUT> {
    fn clone(&self) -> Self {
        AggregatingState {
            at: self.at,
            function: self.function.clone(),
            _types: PhantomData,
        }
    }
}

impl<N: StateKey, IN, ACC: StateValue, OUT> AggregatingState<N, IN, ACC, OUT> {
    pub(crate) fn new(
        id: StateId,
        function: Arc<dyn AggregateFunction<IN, ACC, OUT>>,
        ttl: Option<StateTtlConfig>,
    ) -> Self {
        AggregatingState {
            at: StateRef::new(id, ttl),
            function,
            _types: PhantomData,
        }
    }

    /// The aggregate of the current key, `None` if nothing was added.
    ///
    /// # Errors
    /// [`Error::IllegalState`](crate::Error::IllegalState) without a current key.
    pub fn get<K: StateKey, B: KeyedStateBackend<K>>(
        &self,
        backend: &B,
        ns: &N,
    ) -> Result<Option<OUT>> {
        Ok(self
            .at
            .get::<K, B, N, ACC>(backend, ns)?
            .map(|acc| self.function.get_result(&acc)))
    }

    /// Folds `value` into the accumulator. Errors as [`AggregatingState::get`].
    pub fn add<K: StateKey, B: KeyedStateBackend<K>>(
        &self,
        backend: &mut B,
        ns: &N,
        value: &IN,
    ) -> Result<()> {
        self.at.modify::<K, B, N, ACC>(backend, ns, &mut |old| {
            let mut acc = old
                .cloned()
                .unwrap_or_else(|| self.function.create_accumulator());
            self.function.add(value, &mut acc);
            Some(acc)
        })
    }

    /// Removes the accumulator. Errors as [`AggregatingState::get`].
    pub fn clear<K: StateKey, B: KeyedStateBackend<K>>(
        &self,
        backend: &mut B,
        ns: &N,
    ) -> Result<()> {
        self.at.clear::<K, B, N, ACC>(backend, ns)
    }

    common_methods!();
}
