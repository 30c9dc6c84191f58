//! The counting operator: one `StateBackend` per subtask (heap or LSM, chosen at run time by a flag), the
//! word counts in a `ValueState<u64>` per word, records routed to their subtask by a `KeyGroupRouter`.
//! With `--ttl-ms`, the counts have an event-time TTL: a word's count expires once event time (each line's
//! source offset) has moved that far past its last occurrence, and its next occurrence counts from 1.

use std::collections::BTreeMap;

use statebackend::keyed::{StateTtlConfig, TtlTime};
use statebackend::{
    KeyGroupRouter, KeyedStateBackend, StateBackend, ValueState, ValueStateDescriptor,
    VoidNamespace,
};

/// The running operator: one backend per subtask.
pub(crate) struct Task {
    pub(crate) backends: Vec<StateBackend<String>>,
    pub(crate) counts: Vec<ValueState<VoidNamespace, u64>>,
    router: KeyGroupRouter,
    ttl_ms: Option<u64>,
}

/// The counts' descriptor, with an event-time TTL of `ttl_ms` if given.
pub(crate) fn descriptor(ttl_ms: Option<u64>) -> ValueStateDescriptor<VoidNamespace, u64> {
    let d = ValueStateDescriptor::new("word-count");
    match ttl_ms {
        Some(ms) => d.with_ttl(StateTtlConfig {
            time: TtlTime::EventTime,
            ..StateTtlConfig::new(ms)
        }),
        None => d,
    }
}

impl Task {
    pub(crate) fn new(
        mut backends: Vec<StateBackend<String>>,
        router: KeyGroupRouter,
        ttl_ms: Option<u64>,
    ) -> statebackend::Result<Self> {
        let counts = backends
            .iter_mut()
            .map(|b| b.value_state(&descriptor(ttl_ms)))
            .collect::<statebackend::Result<_>>()?;
        Ok(Task {
            backends,
            counts,
            router,
            ttl_ms,
        })
    }

    /// Event time moves to `ms` (the watermark of every subtask; only with a TTL).
    pub(crate) fn set_event_time(&mut self, ms: u64) {
        if self.ttl_ms.is_some() {
            for b in &mut self.backends {
                b.set_ttl_watermark(ms);
            }
        }
    }

    /// Counts one word in the subtask that owns it; the word is hashed once, for routing and state.
    pub(crate) fn count(&mut self, word: String) -> statebackend::Result<()> {
        let route = self.router.route(&word);
        let i = route.subtask() as usize;
        let (b, counts) = (&mut self.backends[i], &self.counts[i]);
        b.set_current_key_routed(word, route)?;
        let n = counts.value(b, &VoidNamespace)?.unwrap_or(0);
        counts.update(b, &VoidNamespace, n + 1)
    }

    pub(crate) fn results(&mut self) -> statebackend::Result<BTreeMap<String, u64>> {
        let mut out = BTreeMap::new();
        for (b, counts) in self.backends.iter().zip(&self.counts) {
            let words = counts.keys_with_state(b, &VoidNamespace)?;
            let mut values = Vec::with_capacity(words.len());
            counts.get_batch(b, &VoidNamespace, &words, &mut values)?;
            out.extend(
                words
                    .into_iter()
                    .zip(values.into_iter().map(Option::unwrap_or_default)),
            );
        }
        Ok(out)
    }

    /// Entries of all subtasks (heap: exact; LSM: RocksDB's estimate).
    pub(crate) fn entries(&self) -> u64 {
        self.backends
            .iter()
            .map(|b| {
                #[cfg(feature = "rocksdb")]
                if let Some(lsm) = b.as_rocksdb() {
                    return lsm.estimated_entries();
                }
                b.as_heap().map_or(0, |h| h.total_entries() as u64)
            })
            .sum()
    }
}
