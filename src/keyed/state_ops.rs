//! Batch access and namespace merging of the typed state objects (the single-key methods are in
//! `state.rs`).

use crate::error::Result;
use crate::keyed::backend::{KeyedStateBackend, StateKey, StateValue};
use crate::keyed::state::{AggregatingState, ListState, ReducingState, ValueState};

impl<N: StateKey, V: StateValue> ValueState<N, V> {
    /// The values of `keys` in `ns`, appended to `out` in the order of `keys` (for vectorized engines:
    /// one call per record batch). Does not change the current key.
    ///
    /// # Errors
    /// As the backend's batch get: a key whose group is not owned fails the whole batch.
    pub fn get_batch<K: StateKey, B: KeyedStateBackend<K>>(
        &self,
        backend: &B,
        ns: &N,
        keys: &[K],
        out: &mut Vec<Option<V>>,
    ) -> Result<()> {
        self.at.get_batch(backend, ns, keys, out)
    }

    /// Sets `keys[i]` to `values[i]` in `ns`. Does not change the current key.
    ///
    /// # Errors
    /// As [`ValueState::get_batch`]; [`Error::InvalidArgument`](crate::Error::InvalidArgument) if the
    /// slices differ in length.
    pub fn update_batch<K: StateKey, B: KeyedStateBackend<K>>(
        &self,
        backend: &mut B,
        ns: &N,
        keys: &[K],
        values: &[V],
    ) -> Result<()> {
        self.at.put_batch(backend, ns, keys, values)
    }

    /// Replaces the value of each `keys[i]` with `f(i, old)` (removes it on `None`): read-modify-write
    /// in one lookup per key. Does not change the current key. Errors as [`ValueState::get_batch`].
    pub fn modify_batch<K: StateKey, B: KeyedStateBackend<K>>(
        &self,
        backend: &mut B,
        ns: &N,
        keys: &[K],
        mut f: impl FnMut(usize, Option<&V>) -> Option<V>,
    ) -> Result<()> {
        self.at.modify_batch(backend, ns, keys, &mut f)
    }
}

pub(crate) fn check_lengths(keys: usize, values: usize) -> Result<()> {
    if keys != values {
        return Err(crate::Error::InvalidArgument(format!(
            "a batch of {keys} keys with {values} values"
        )));
    }
    Ok(())
}

impl<N: StateKey, V: StateValue> ReducingState<N, V> {
    /// Adds `values[i]` to the reduced value of `keys[i]` in `ns`. Does not change the current key.
    ///
    /// # Errors
    /// As [`ValueState::update_batch`].
    pub fn add_batch<K: StateKey, B: KeyedStateBackend<K>>(
        &self,
        backend: &mut B,
        ns: &N,
        keys: &[K],
        values: &[V],
    ) -> Result<()> {
        check_lengths(keys.len(), values.len())?;
        self.at
            .modify_batch::<K, B, N, V>(backend, ns, keys, &mut |i, old| {
                Some(match old {
                    Some(old) => (self.reduce)(old, &values[i]),
                    None => values[i].clone(),
                })
            })
    }

    /// The reduced values of `keys` in `ns`, appended to `out`. Errors as [`ValueState::get_batch`].
    pub fn get_batch<K: StateKey, B: KeyedStateBackend<K>>(
        &self,
        backend: &B,
        ns: &N,
        keys: &[K],
        out: &mut Vec<Option<V>>,
    ) -> Result<()> {
        self.at.get_batch(backend, ns, keys, out)
    }

    /// Reduces the values of the current key in `sources` into `target` and clears the sources (as
    /// Flink's `mergeNamespaces`: session windows merging). A source equal to `target` is skipped.
    ///
    /// # Errors
    /// [`Error::IllegalState`](crate::Error::IllegalState) without a current key.
    pub fn merge_namespaces<K: StateKey, B: KeyedStateBackend<K>>(
        &self,
        backend: &mut B,
        target: &N,
        sources: &[N],
    ) -> Result<()> {
        for source in sources.iter().filter(|s| *s != target) {
            if let Some(value) = self.at.get::<K, B, N, V>(backend, source)? {
                self.at.clear::<K, B, N, V>(backend, source)?;
                self.add(backend, target, value)?;
            }
        }
        Ok(())
    }
}

impl<N: StateKey, IN, ACC: StateValue, OUT> AggregatingState<N, IN, ACC, OUT> {
    /// Folds `values[i]` into the accumulator of `keys[i]` in `ns`. Does not change the current key.
    ///
    /// # Errors
    /// As [`ValueState::update_batch`].
    pub fn add_batch<K: StateKey, B: KeyedStateBackend<K>>(
        &self,
        backend: &mut B,
        ns: &N,
        keys: &[K],
        values: &[IN],
    ) -> Result<()> {
        check_lengths(keys.len(), values.len())?;
        self.at
            .modify_batch::<K, B, N, ACC>(backend, ns, keys, &mut |i, old| {
                let mut acc = old
                    .cloned()
                    .unwrap_or_else(|| self.function.create_accumulator());
                self.function.add(&values[i], &mut acc);
                Some(acc)
            })
    }

    /// The results of `keys` in `ns`, appended to `out`. Errors as [`ValueState::get_batch`].
    pub fn get_batch<K: StateKey, B: KeyedStateBackend<K>>(
        &self,
        backend: &B,
        ns: &N,
        keys: &[K],
        out: &mut Vec<Option<OUT>>,
    ) -> Result<()> {
        let mut accs = Vec::with_capacity(keys.len());
        self.at
            .get_batch::<K, B, N, ACC>(backend, ns, keys, &mut accs)?;
        out.extend(
            accs.into_iter()
                .map(|acc| acc.map(|acc| self.function.get_result(&acc))),
        );
        Ok(())
    }

    /// Merges the accumulators of the current key in `sources` into `target` with
    /// [`AggregateFunction::merge`](crate::AggregateFunction::merge) and clears the sources (as Flink's
    /// `mergeNamespaces`). A source equal to `target` is skipped.
    ///
    /// # Errors
    /// [`Error::IllegalState`](crate::Error::IllegalState) without a current key.
    pub fn merge_namespaces<K: StateKey, B: KeyedStateBackend<K>>(
        &self,
        backend: &mut B,
        target: &N,
        sources: &[N],
    ) -> Result<()> {
        let mut merged: Option<ACC> = self.at.get(backend, target)?;
        let mut changed = false;
        for source in sources.iter().filter(|s| *s != target) {
            if let Some(acc) = self.at.get::<K, B, N, ACC>(backend, source)? {
                self.at.clear::<K, B, N, ACC>(backend, source)?;
                merged = Some(match merged {
                    Some(m) => self.function.merge(m, acc),
                    None => acc,
                });
                changed = true;
            }
        }
        match merged {
            Some(acc) if changed => self.at.put(backend, target, acc),
            _ => Ok(()),
        }
    }
}

impl<N: StateKey, V: StateValue> ListState<N, V> {
    /// Appends the lists of the current key in `sources` to the list in `target` (in the order of
    /// `sources`) and clears them (as Flink's `mergeNamespaces`). A source equal to `target` is skipped.
    ///
    /// # Errors
    /// [`Error::IllegalState`](crate::Error::IllegalState) without a current key.
    pub fn merge_namespaces<K: StateKey, B: KeyedStateBackend<K>>(
        &self,
        backend: &mut B,
        target: &N,
        sources: &[N],
    ) -> Result<()> {
        for source in sources.iter().filter(|s| *s != target) {
            if let Some(values) = self.at.list_get::<K, B, N, V>(backend, source)? {
                self.at.list_clear::<K, B, N, V>(backend, source)?;
                self.at.list_add_all(backend, target, values)?;
            }
        }
        Ok(())
    }
}
