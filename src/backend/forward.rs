//! `KeyedStateBackend` for [`StateBackend`]: every method forwards to the backend inside.

use super::*;
use crate::keyed::backend::sealed::StateAccess;
use crate::keyed::map_iter::MapEntries;

impl<K: StateKey> StateAccess<K> for StateBackend<K> {
    #[inline]
    fn value_get<N: StateKey, V: StateValue>(&self, state: StateId, ns: &N) -> Result<Option<V>> {
        on!(&self.inner, b => b.value_get::<N, V>(state, ns))
    }

    #[inline]
    fn value_put<N: StateKey, V: StateValue>(
        &mut self,
        state: StateId,
        ns: &N,
        value: V,
    ) -> Result<()> {
        on!(&mut self.inner, b => b.value_put::<N, V>(state, ns, value))
    }

    #[inline]
    fn value_modify<N: StateKey, V: StateValue>(
        &mut self,
        state: StateId,
        ns: &N,
        f: &mut dyn FnMut(Option<&V>) -> Option<V>,
    ) -> Result<()> {
        on!(&mut self.inner, b => b.value_modify::<N, V>(state, ns, f))
    }

    #[inline]
    fn value_clear<N: StateKey, V: StateValue>(&mut self, state: StateId, ns: &N) -> Result<()> {
        on!(&mut self.inner, b => b.value_clear::<N, V>(state, ns))
    }

    #[inline]
    fn list_get<N: StateKey, V: StateValue>(
        &self,
        state: StateId,
        ns: &N,
    ) -> Result<Option<Vec<V>>> {
        on!(&self.inner, b => b.list_get::<N, V>(state, ns))
    }

    #[inline]
    fn list_add_all<N: StateKey, V: StateValue>(
        &mut self,
        state: StateId,
        ns: &N,
        values: Vec<V>,
    ) -> Result<()> {
        on!(&mut self.inner, b => b.list_add_all::<N, V>(state, ns, values))
    }

    #[inline]
    fn list_update<N: StateKey, V: StateValue>(
        &mut self,
        state: StateId,
        ns: &N,
        values: Vec<V>,
    ) -> Result<()> {
        on!(&mut self.inner, b => b.list_update::<N, V>(state, ns, values))
    }

    #[inline]
    fn list_clear<N: StateKey, V: StateValue>(&mut self, state: StateId, ns: &N) -> Result<()> {
        on!(&mut self.inner, b => b.list_clear::<N, V>(state, ns))
    }

    #[inline]
    fn map_get<N: StateKey, UK: StateKey, V: StateValue>(
        &self,
        state: StateId,
        ns: &N,
        uk: &UK,
    ) -> Result<Option<V>> {
        on!(&self.inner, b => b.map_get::<N, UK, V>(state, ns, uk))
    }

    #[inline]
    fn map_put<N: StateKey, UK: StateKey, V: StateValue>(
        &mut self,
        state: StateId,
        ns: &N,
        uk: UK,
        value: V,
    ) -> Result<()> {
        on!(&mut self.inner, b => b.map_put::<N, UK, V>(state, ns, uk, value))
    }

    #[inline]
    fn map_remove<N: StateKey, UK: StateKey, V: StateValue>(
        &mut self,
        state: StateId,
        ns: &N,
        uk: &UK,
    ) -> Result<()> {
        on!(&mut self.inner, b => b.map_remove::<N, UK, V>(state, ns, uk))
    }

    #[inline]
    fn map_clear<N: StateKey, UK: StateKey, V: StateValue>(
        &mut self,
        state: StateId,
        ns: &N,
    ) -> Result<()> {
        on!(&mut self.inner, b => b.map_clear::<N, UK, V>(state, ns))
    }

    #[inline]
    fn map_iter<'a, N: StateKey, UK: StateKey, V: StateValue>(
        &'a self,
        state: StateId,
        ns: &N,
    ) -> Result<MapEntries<'a, UK, V>> {
        on!(&self.inner, b => b.map_iter::<N, UK, V>(state, ns))
    }

    #[inline]
    fn map_is_empty<N: StateKey, UK: StateKey, V: StateValue>(
        &self,
        state: StateId,
        ns: &N,
    ) -> Result<bool> {
        on!(&self.inner, b => b.map_is_empty::<N, UK, V>(state, ns))
    }

    #[inline]
    fn map_put_all<N: StateKey, UK: StateKey, V: StateValue>(
        &mut self,
        state: StateId,
        ns: &N,
        entries: Vec<(UK, V)>,
    ) -> Result<()> {
        on!(&mut self.inner, b => b.map_put_all::<N, UK, V>(state, ns, entries))
    }

    #[inline]
    fn map_retain<N: StateKey, UK: StateKey, V: StateValue>(
        &mut self,
        state: StateId,
        ns: &N,
        keep: &mut dyn FnMut(&UK, &V) -> bool,
    ) -> Result<()> {
        on!(&mut self.inner, b => b.map_retain::<N, UK, V>(state, ns, keep))
    }

    #[inline]
    fn value_get_batch<N: StateKey, V: StateValue>(
        &self,
        state: StateId,
        ns: &N,
        keys: &[K],
        out: &mut Vec<Option<V>>,
    ) -> Result<()> {
        on!(&self.inner, b => b.value_get_batch::<N, V>(state, ns, keys, out))
    }

    #[inline]
    fn value_put_batch<N: StateKey, V: StateValue>(
        &mut self,
        state: StateId,
        ns: &N,
        keys: &[K],
        values: &[V],
    ) -> Result<()> {
        on!(&mut self.inner, b => b.value_put_batch::<N, V>(state, ns, keys, values))
    }

    #[inline]
    fn value_modify_batch<N: StateKey, V: StateValue>(
        &mut self,
        state: StateId,
        ns: &N,
        keys: &[K],
        f: &mut dyn FnMut(usize, Option<&V>) -> Option<V>,
    ) -> Result<()> {
        on!(&mut self.inner, b => b.value_modify_batch::<N, V>(state, ns, keys, f))
    }
}

impl<K: StateKey> KeyedStateBackend<K> for StateBackend<K> {
    #[inline]
    fn max_parallelism(&self) -> u32 {
        on!(&self.inner, b => b.max_parallelism())
    }

    #[inline]
    fn key_group_range(&self) -> KeyGroupRange {
        on!(&self.inner, b => b.key_group_range())
    }

    #[inline]
    fn set_current_key(&mut self, key: K) -> Result<()> {
        on!(&mut self.inner, b => b.set_current_key(key))
    }

    #[inline]
    fn set_current_key_routed(&mut self, key: K, route: KeyRoute) -> Result<()> {
        on!(&mut self.inner, b => b.set_current_key_routed(key, route))
    }

    #[inline]
    fn current_key(&self) -> Option<&K> {
        on!(&self.inner, b => b.current_key())
    }

    #[inline]
    fn current_key_group(&self) -> Option<u32> {
        on!(&self.inner, b => b.current_key_group())
    }

    #[inline]
    fn value_state<N: StateKey, V: StateValue>(
        &mut self,
        descriptor: &ValueStateDescriptor<N, V>,
    ) -> Result<ValueState<N, V>> {
        on!(&mut self.inner, b => b.value_state::<N, V>(descriptor))
    }

    #[inline]
    fn list_state<N: StateKey, V: StateValue>(
        &mut self,
        descriptor: &ListStateDescriptor<N, V>,
    ) -> Result<ListState<N, V>> {
        on!(&mut self.inner, b => b.list_state::<N, V>(descriptor))
    }

    #[inline]
    fn map_state<N: StateKey, UK: StateKey, V: StateValue>(
        &mut self,
        descriptor: &MapStateDescriptor<N, UK, V>,
    ) -> Result<MapState<N, UK, V>> {
        on!(&mut self.inner, b => b.map_state::<N, UK, V>(descriptor))
    }

    #[inline]
    fn reducing_state<N: StateKey, V: StateValue>(
        &mut self,
        descriptor: &ReducingStateDescriptor<N, V>,
    ) -> Result<ReducingState<N, V>> {
        on!(&mut self.inner, b => b.reducing_state::<N, V>(descriptor))
    }

    #[inline]
    fn aggregating_state<N: StateKey, IN, ACC: StateValue, OUT>(
        &mut self,
        descriptor: &AggregatingStateDescriptor<N, IN, ACC, OUT>,
    ) -> Result<AggregatingState<N, IN, ACC, OUT>> {
        on!(&mut self.inner, b => b.aggregating_state::<N, IN, ACC, OUT>(descriptor))
    }

    #[inline]
    fn keys<N: StateKey>(&self, state: StateId, ns: &N) -> Result<Vec<K>> {
        on!(&self.inner, b => b.keys::<N>(state, ns))
    }

    #[inline]
    fn keys_and_namespaces<N: StateKey>(&self, state: StateId) -> Result<Vec<(K, N)>> {
        on!(&self.inner, b => b.keys_and_namespaces::<N>(state))
    }

    #[inline]
    fn drop_state(&mut self, name: &str) -> Result<bool> {
        on!(&mut self.inner, b => b.drop_state(name))
    }

    #[inline]
    fn snapshot(
        &mut self,
        checkpoint_id: u64,
        storage: &CheckpointStorage,
    ) -> Result<PendingSnapshot> {
        on!(&mut self.inner, b => b.snapshot(checkpoint_id, storage))
    }

    #[inline]
    fn savepoint(
        &mut self,
        savepoint_id: u64,
        storage: &CheckpointStorage,
        format: SavepointFormat,
    ) -> Result<PendingSnapshot> {
        on!(&mut self.inner, b => b.savepoint(savepoint_id, storage, format))
    }

    #[inline]
    fn notify_checkpoint_complete(&mut self, checkpoint_id: u64) {
        on!(&mut self.inner, b => b.notify_checkpoint_complete(checkpoint_id))
    }

    #[inline]
    fn notify_checkpoint_aborted(&mut self, checkpoint_id: u64) {
        on!(&mut self.inner, b => b.notify_checkpoint_aborted(checkpoint_id))
    }
}
