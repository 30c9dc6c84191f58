//! The counting operator: one keyed state backend per subtask (heap or RocksDB, chosen by a flag), the
//! word counts in a `ValueState<u64>` per word, and how each subtask's backend is created or restored.

use std::collections::BTreeMap;

use statebackend::Codec;
use statebackend::{
    CheckpointStorage, HeapBackendConfig, HeapKeyedStateBackend, KeyedStateBackend, ValueState,
    ValueStateDescriptor, VoidNamespace, operator_index_for_key_group, stable_key_hash,
};
#[cfg(feature = "rocksdb")]
use statebackend::{LsmBackendConfig, LsmKeyedStateBackend, RestoreMode};

/// One subtask's keyed state backend (boxed: the two differ much in size).
pub(crate) enum Backend {
    Heap(Box<HeapKeyedStateBackend<String>>),
    #[cfg(feature = "rocksdb")]
    Lsm(Box<LsmKeyedStateBackend<String>>),
}

/// Runs `$e` with `$x` bound to the concrete backend inside `$b`.
macro_rules! on {
    ($b:expr, $x:ident => $e:expr) => {
        match $b {
            Backend::Heap(boxed) => {
                let $x = &mut **boxed;
                $e
            }
            #[cfg(feature = "rocksdb")]
            Backend::Lsm(boxed) => {
                let $x = &mut **boxed;
                $e
            }
        }
    };
}

impl Backend {
    /// Entries (heap: exact; rocksdb: RocksDB's estimate).
    pub(crate) fn entries(&self) -> u64 {
        match self {
            Backend::Heap(b) => b.total_entries() as u64,
            #[cfg(feature = "rocksdb")]
            Backend::Lsm(b) => b.estimated_entries(),
        }
    }
}

/// The running operator: one backend per subtask.
pub(crate) struct Task {
    pub(crate) parallelism: u32,
    pub(crate) max_parallelism: u32,
    pub(crate) backends: Vec<Backend>,
    pub(crate) counts: Vec<ValueState<VoidNamespace, u64>>,
}

pub(crate) fn descriptor() -> ValueStateDescriptor<VoidNamespace, u64> {
    ValueStateDescriptor::new("word-count")
}

impl Task {
    pub(crate) fn new(
        backends: Vec<Backend>,
        parallelism: u32,
        max_parallelism: u32,
    ) -> statebackend::Result<Self> {
        let mut task = Task {
            parallelism,
            max_parallelism,
            backends,
            counts: Vec::new(),
        };
        for b in &mut task.backends {
            task.counts.push(on!(b, x => x.value_state(&descriptor()))?);
        }
        Ok(task)
    }

    pub(crate) fn count(&mut self, word: String) -> statebackend::Result<()> {
        let mut key_bytes = Vec::with_capacity(word.len());
        word.encode(&mut key_bytes);
        let kg = (stable_key_hash(&key_bytes) % u64::from(self.max_parallelism)) as u32;
        let i = operator_index_for_key_group(self.max_parallelism, self.parallelism, kg)? as usize;
        let counts = &self.counts[i];
        on!(&mut self.backends[i], b => {
            b.set_current_key(word)?;
            let n = counts.value(b, &VoidNamespace)?.unwrap_or(0);
            counts.update(b, &VoidNamespace, n + 1)
        })
    }

    pub(crate) fn results(&mut self) -> statebackend::Result<BTreeMap<String, u64>> {
        let mut out = BTreeMap::new();
        for (b, counts) in self.backends.iter_mut().zip(&self.counts) {
            on!(b, b => {
                for word in b.keys(counts.id(), &VoidNamespace)? {
                    b.set_current_key(word.clone())?;
                    out.insert(word, counts.value(b, &VoidNamespace)?.unwrap_or(0));
                }
            });
        }
        Ok(out)
    }
}

/// Settings of one subtask's backend.
#[derive(Clone)]
pub(crate) enum BackendConfig {
    Heap(HeapBackendConfig),
    #[cfg(feature = "rocksdb")]
    Lsm(LsmBackendConfig),
}

impl BackendConfig {
    pub(crate) fn create(self) -> statebackend::Result<Backend> {
        Ok(match self {
            BackendConfig::Heap(c) => Backend::Heap(Box::new(HeapKeyedStateBackend::new(c)?)),
            #[cfg(feature = "rocksdb")]
            BackendConfig::Lsm(c) => Backend::Lsm(Box::new(LsmKeyedStateBackend::new(c)?)),
        })
    }

    pub(crate) async fn restore(
        self,
        storage: &CheckpointStorage,
        handles: &[statebackend::KeyedStateHandle],
    ) -> statebackend::Result<Backend> {
        Ok(match self {
            BackendConfig::Heap(c) => Backend::Heap(Box::new(
                HeapKeyedStateBackend::restore(c, storage, handles).await?,
            )),
            // A failover resumes the job's own checkpoints: CLAIM, so checkpoints stay incremental.
            #[cfg(feature = "rocksdb")]
            BackendConfig::Lsm(c) => Backend::Lsm(Box::new(
                LsmKeyedStateBackend::restore(c, storage, handles, RestoreMode::Claim).await?,
            )),
        })
    }
}
