//! `KeyedStateBackend` and its primitives for [`StateBackend`]: every method forwards to the
//! backend inside,
//! generated from the one list of signatures below (`forward!`). A method added to the traits is
//! added
//! here as one line.

use super::*;
use crate::keyed::backend::sealed::StateAccess;
use crate::keyed::map_iter::MapEntries;
use crate::keyed::read_refresh::RefreshWrite;
use crate::keyed::timers::{Timer, TimerService, TimerServiceDescriptor};
use crate::keyed::ttl::{StateTtlConfig, TtlTimes};
use crate::keyed::ttl_refresh::Mark;
use crate::snapshot::state_meta::StateKind;

/// Forwarding methods from a list of `ref|mut name[generics](args) -> ret;` (`ref`: `&self`, `mut`:
/// `&mut self`; generics are names with at most one trait bound each): each becomes an `#[inline]`
/// method
/// that calls the same method, with every generic named, on the backend inside.
macro_rules! forward {
    ($(
        $recv:ident $name:ident $([$($g:ident $(: $b:ident)?),*])? ($($a:ident : $t:ty),*) $(-> $r:ty)?;
    )*) => {
        $(forward!(@one $recv $name [$($($g $(: $b)?),*)?] ($($a : $t),*) $(-> $r)?);)*
    };
    (@one ref $name:ident [$($g:ident $(: $b:ident)?),*] ($($a:ident : $t:ty),*) $(-> $r:ty)?) => {
        #[inline]
        fn $name<$($g $(: $b)?),*>(&self, $($a: $t),*) $(-> $r)? {
            on!(&self.inner, b => b.$name::<$($g),*>($($a),*))
        }
    };
    (@one mut $name:ident [$($g:ident $(: $b:ident)?),*] ($($a:ident : $t:ty),*) $(-> $r:ty)?) => {
        #[inline]
        fn $name<$($g $(: $b)?),*>(&mut self, $($a: $t),*) $(-> $r)? {
            on!(&mut self.inner, b => b.$name::<$($g),*>($($a),*))
        }
    };
}

impl<K: StateKey> StateAccess<K> for StateBackend<K> {
    // A read through this type queues its TTL restarts for the backend inside, which writes them at its
    // own record edges and snapshots (`keyed/ttl_refresh.rs`).
    fn queue_refresh<W: RefreshWrite<K>>(
        &self,
        write: W,
        state: StateId,
        marks: &[Mark<'_>],
        at: u64,
    ) {
        on!(&self.inner, b => b.queue_refresh(write, state, marks, at))
    }

    fn write_refreshes(&mut self) -> Result<()> {
        on!(&mut self.inner, b => b.write_refreshes())
    }

    forward! {
        ref value_get[N: StateKey, V: StateValue](state: StateId, ns: &N) -> Result<Option<V>>;
        mut value_put[N: StateKey, V: StateValue](state: StateId, ns: &N, value: V) -> Result<()>;
        mut value_modify[N: StateKey, V: StateValue](
            state: StateId,
            ns: &N,
            f: &mut dyn FnMut(Option<&V>) -> Option<V>
        ) -> Result<()>;
        mut value_clear[N: StateKey, V: StateValue](state: StateId, ns: &N) -> Result<()>;
        ref list_get[N: StateKey, V: StateValue](state: StateId, ns: &N) -> Result<Option<Vec<V>>>;
        mut list_add_all[N: StateKey, V: StateValue](
            state: StateId,
            ns: &N,
            values: Vec<V>
        ) -> Result<()>;
        mut list_update[N: StateKey, V: StateValue](
            state: StateId,
            ns: &N,
            values: Vec<V>
        ) -> Result<()>;
        mut list_clear[N: StateKey, V: StateValue](state: StateId, ns: &N) -> Result<()>;
        ref map_get[N: StateKey, UK: StateKey, V: StateValue](
            state: StateId,
            ns: &N,
            uk: &UK
        ) -> Result<Option<V>>;
        mut map_put[N: StateKey, UK: StateKey, V: StateValue](
            state: StateId,
            ns: &N,
            uk: UK,
            value: V
        ) -> Result<()>;
        mut map_remove[N: StateKey, UK: StateKey, V: StateValue](
            state: StateId,
            ns: &N,
            uk: &UK
        ) -> Result<()>;
        mut map_clear[N: StateKey, UK: StateKey, V: StateValue](
            state: StateId,
            ns: &N
        ) -> Result<()>;
        ref map_is_empty[N: StateKey, UK: StateKey, V: StateValue](
            state: StateId,
            ns: &N
        ) -> Result<bool>;
        mut map_put_all[N: StateKey, UK: StateKey, V: StateValue](
            state: StateId,
            ns: &N,
            entries: Vec<(UK, V)>
        ) -> Result<()>;
        mut map_retain[N: StateKey, UK: StateKey, V: StateValue](
            state: StateId,
            ns: &N,
            keep: &mut dyn FnMut(&UK, &V) -> bool
        ) -> Result<()>;
        ref value_get_batch[N: StateKey, V: StateValue](
            state: StateId,
            ns: &N,
            keys: &[K],
            out: &mut Vec<Option<V>>
        ) -> Result<()>;
        mut value_put_batch[N: StateKey, V: StateValue](
            state: StateId,
            ns: &N,
            keys: &[K],
            values: &[V]
        ) -> Result<()>;
        mut value_modify_batch[N: StateKey, V: StateValue](
            state: StateId,
            ns: &N,
            keys: &[K],
            f: &mut dyn FnMut(usize, Option<&V>) -> Option<V>
        ) -> Result<()>;
        mut timer_register[N: StateKey](state: StateId, ns: &N, timestamp: u64) -> Result<()>;
        mut timer_delete[N: StateKey](state: StateId, ns: &N, timestamp: u64) -> Result<()>;
        mut timer_next[N: StateKey](state: StateId) -> Result<Option<u64>>;
        mut timer_count[N: StateKey](state: StateId) -> Result<u64>;
        mut timer_pop_due[N: StateKey](state: StateId, time: u64) -> Result<Option<Timer<K, N>>>;
        mut register_state[N: StateKey, UK: StateKey, V: StateValue](
            name: &str,
            kind: StateKind,
            ttl: Option<StateTtlConfig>
        ) -> Result<StateId>;
        ref ttl_times() -> &TtlTimes;
        mut ttl_times_mut() -> &mut TtlTimes;
    }

    // A lifetime in the signature: written out.
    #[inline]
    fn map_iter<'a, N: StateKey, UK: StateKey, V: StateValue>(
        &'a self,
        state: StateId,
        ns: &N,
    ) -> Result<MapEntries<'a, UK, V>> {
        on!(&self.inner, b => b.map_iter::<N, UK, V>(state, ns))
    }
}

impl<K: StateKey> KeyedStateBackend<K> for StateBackend<K> {
    forward! {
        ref max_parallelism() -> u32;
        ref key_group_range() -> KeyGroupRange;
        mut set_current_key(key: K) -> Result<()>;
        mut set_current_key_routed(key: K, route: KeyRoute) -> Result<()>;
        ref current_key() -> Option<&K>;
        ref current_key_group() -> Option<u32>;
        mut value_state[N: StateKey, V: StateValue](
            descriptor: &ValueStateDescriptor<N, V>
        ) -> Result<ValueState<N, V>>;
        mut list_state[N: StateKey, V: StateValue](
            descriptor: &ListStateDescriptor<N, V>
        ) -> Result<ListState<N, V>>;
        mut map_state[N: StateKey, UK: StateKey, V: StateValue](
            descriptor: &MapStateDescriptor<N, UK, V>
        ) -> Result<MapState<N, UK, V>>;
        mut reducing_state[N: StateKey, V: StateValue](
            descriptor: &ReducingStateDescriptor<N, V>
        ) -> Result<ReducingState<N, V>>;
        mut aggregating_state[N: StateKey, IN, ACC: StateValue, OUT](
            descriptor: &AggregatingStateDescriptor<N, IN, ACC, OUT>
        ) -> Result<AggregatingState<N, IN, ACC, OUT>>;
        mut timer_service[N: StateKey](
            descriptor: &TimerServiceDescriptor<N>
        ) -> Result<TimerService<N>>;
        ref keys[N: StateKey](state: StateId, ns: &N) -> Result<Vec<K>>;
        ref keys_and_namespaces[N: StateKey](state: StateId) -> Result<Vec<(K, N)>>;
        mut drop_state(name: &str) -> Result<bool>;
        mut snapshot(checkpoint_id: u64, storage: &CheckpointStorage) -> Result<PendingSnapshot>;
        mut savepoint(
            savepoint_id: u64,
            storage: &CheckpointStorage,
            format: SavepointFormat
        ) -> Result<PendingSnapshot>;
        mut notify_checkpoint_complete(checkpoint_id: u64);
        mut notify_checkpoint_aborted(checkpoint_id: u64);
    }
}
