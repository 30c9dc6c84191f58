//! A keyed state backend chosen at run time: [`StateBackend`] is one type, heap or LSM inside, that an
//! engine holds in its operator struct; [`StateBackendConfig`] is the plain data that chooses it.
//!
//! Why an enum and not `Box<dyn KeyedStateBackend<K>>`: state access is generic over the namespace and value
//! types (monomorphized, so a `u64` counter costs no encoding on the heap backend), which makes the trait
//! not object-safe. The enum costs one well-predicted branch per access and keeps every method.

pub(crate) mod config;

use crate::error::Result;
use crate::heap::InProcessRecovery;
use crate::heap::backend::HeapKeyedStateBackend;
use crate::key_group::KeyGroupRange;
use crate::key_group::router::KeyRoute;
use crate::keyed::backend::{KeyedStateBackend, PendingSnapshot, StateId, StateKey, StateValue};
use crate::keyed::descriptor::{
    AggregatingStateDescriptor, ListStateDescriptor, MapStateDescriptor, ReducingStateDescriptor,
    ValueStateDescriptor,
};
use crate::keyed::identity::SubtaskIdentity;
use crate::keyed::state::{AggregatingState, ListState, MapState, ReducingState, ValueState};
use crate::rocksdb::MemoryBudget;
#[cfg(feature = "rocksdb")]
use crate::rocksdb::RocksDbKeyedStateBackend;
use crate::snapshot::handle::{CheckpointMetadata, KeyedStateHandle};
use crate::snapshot::restore_mode::RestoreMode;
use crate::snapshot::result::{RestoreSources, SavepointFormat};
use crate::storage::CheckpointStorage;
pub use config::{BackendKind, StateBackendConfig};

#[allow(
    clippy::large_enum_variant,
    reason = "one backend per subtask, held for the job's life: its size does not matter, and a box would \
              add a pointer hop to every state access"
)]
enum Inner<K> {
    Heap(HeapKeyedStateBackend<K>),
    #[cfg(feature = "rocksdb")]
    RocksDb(RocksDbKeyedStateBackend<K>),
}

/// A keyed state backend of the kind its [`StateBackendConfig`] names; implements
/// [`KeyedStateBackend`] by forwarding to the heap or RocksDB backend inside.
pub struct StateBackend<K> {
    inner: Inner<K>,
    kind: BackendKind,
}

/// Runs `$e` with `$b` bound to the backend inside `$self.inner`.
macro_rules! on {
    ($self:expr, $b:ident => $e:expr) => {
        match $self {
            Inner::Heap($b) => $e,
            #[cfg(feature = "rocksdb")]
            Inner::RocksDb($b) => $e,
        }
    };
}

#[cfg(not(feature = "rocksdb"))]
fn no_rocksdb() -> crate::Error {
    crate::Error::InvalidArgument(
        "the LSM backend needs the `rocksdb` cargo feature, which this build lacks".into(),
    )
}

impl<K: StateKey> StateBackend<K> {
    /// An empty backend of `config.kind` for subtask `identity`.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`](crate::Error::InvalidArgument) for invalid settings, or the RocksDB kind
    /// in a build without the `rocksdb` feature; [`Error::Local`](crate::Error::Local) if the RocksDB
    /// backend cannot create its directory or DB.
    pub fn new(identity: &SubtaskIdentity, config: &StateBackendConfig) -> Result<Self> {
        Self::new_in(identity, config, None)
    }

    /// As [`StateBackend::new`]; a RocksDB kind's memtables and blocks are counted against `budget`,
    /// shared with every backend the engine gives it to (`docs/engines.md`, "Memory"). The heap kind
    /// ignores it: its state is the process's heap.
    ///
    /// # Errors
    /// As [`StateBackend::new`].
    pub fn with_memory_budget(
        identity: &SubtaskIdentity,
        config: &StateBackendConfig,
        budget: &MemoryBudget,
    ) -> Result<Self> {
        Self::new_in(identity, config, Some(budget))
    }

    #[cfg_attr(not(feature = "rocksdb"), allow(unused_variables))]
    fn new_in(
        identity: &SubtaskIdentity,
        config: &StateBackendConfig,
        budget: Option<&MemoryBudget>,
    ) -> Result<Self> {
        let identity = identity.clone();
        let inner = match config.kind {
            BackendKind::Heap => {
                Inner::Heap(HeapKeyedStateBackend::new(identity, config.heap.clone())?)
            }
            #[cfg(feature = "rocksdb")]
            BackendKind::RocksDb => Inner::RocksDb(RocksDbKeyedStateBackend::create(
                identity,
                config.rocksdb.clone(),
                budget,
            )?),
            #[cfg(not(feature = "rocksdb"))]
            BackendKind::RocksDb => return Err(no_rocksdb()),
        };
        Ok(StateBackend {
            inner,
            kind: config.kind,
        })
    }

    /// A backend of `config.kind` for subtask `identity` restored from `handles` (the keyed state handles
    /// of the operator in one checkpoint; those of other subtasks are read only where they overlap the
    /// owned key groups, so this rescales). With [`RestoreMode::Claim`] and the same key groups the
    /// RocksDB kind's next checkpoint stays incremental, and so does the heap kind's with incremental
    /// checkpoints on (`HeapConfig::incremental`); after `NoClaim` the first checkpoint is full.
    ///
    /// # Errors
    /// As [`HeapKeyedStateBackend::restore`] and `RocksDbKeyedStateBackend::restore`: invalid handles
    /// (another operator, checkpoint or max parallelism; key groups missing or covered twice; handles the
    /// kind cannot read, such as RocksDB files for the heap kind) are `InvalidArgument`; missing or corrupt
    /// files are `NotFound` / `Corrupt` naming the file. The checkpoint is never modified.
    pub async fn restore(
        identity: &SubtaskIdentity,
        config: &StateBackendConfig,
        storage: &CheckpointStorage,
        handles: &[KeyedStateHandle],
        mode: RestoreMode,
    ) -> Result<Self> {
        Self::restore_in(identity, config, None, storage, handles, mode).await
    }

    /// As [`StateBackend::restore`], with `budget` as [`StateBackend::with_memory_budget`].
    ///
    /// # Errors
    /// As [`StateBackend::restore`].
    pub async fn restore_with_memory_budget(
        identity: &SubtaskIdentity,
        config: &StateBackendConfig,
        budget: &MemoryBudget,
        storage: &CheckpointStorage,
        handles: &[KeyedStateHandle],
        mode: RestoreMode,
    ) -> Result<Self> {
        Self::restore_in(identity, config, Some(budget), storage, handles, mode).await
    }

    #[cfg_attr(not(feature = "rocksdb"), allow(unused_variables))]
    async fn restore_in(
        identity: &SubtaskIdentity,
        config: &StateBackendConfig,
        budget: Option<&MemoryBudget>,
        storage: &CheckpointStorage,
        handles: &[KeyedStateHandle],
        mode: RestoreMode,
    ) -> Result<Self> {
        let identity = identity.clone();
        let inner = match config.kind {
            BackendKind::Heap => Inner::Heap(
                HeapKeyedStateBackend::restore(
                    identity,
                    config.heap.clone(),
                    storage,
                    handles,
                    mode,
                )
                .await?,
            ),
            #[cfg(feature = "rocksdb")]
            BackendKind::RocksDb => Inner::RocksDb(
                RocksDbKeyedStateBackend::restore_in(
                    identity,
                    config.rocksdb.clone(),
                    budget,
                    storage,
                    handles,
                    mode,
                )
                .await?,
            ),
            #[cfg(not(feature = "rocksdb"))]
            BackendKind::RocksDb => return Err(no_rocksdb()),
        };
        Ok(StateBackend {
            inner,
            kind: config.kind,
        })
    }

    /// [`StateBackend::restore`] from the handles of `identity`'s operator in `checkpoint`; an operator
    /// without keyed state in it (new in this job version) starts empty.
    ///
    /// # Errors
    /// As [`StateBackend::restore`].
    pub async fn restore_checkpoint(
        identity: &SubtaskIdentity,
        config: &StateBackendConfig,
        storage: &CheckpointStorage,
        checkpoint: &CheckpointMetadata,
        mode: RestoreMode,
    ) -> Result<Self> {
        Self::restore_checkpoint_in(identity, config, None, storage, checkpoint, mode).await
    }

    /// As [`StateBackend::restore_checkpoint`], with `budget` as [`StateBackend::with_memory_budget`].
    ///
    /// # Errors
    /// As [`StateBackend::restore`].
    pub async fn restore_checkpoint_with_memory_budget(
        identity: &SubtaskIdentity,
        config: &StateBackendConfig,
        budget: &MemoryBudget,
        storage: &CheckpointStorage,
        checkpoint: &CheckpointMetadata,
        mode: RestoreMode,
    ) -> Result<Self> {
        Self::restore_checkpoint_in(identity, config, Some(budget), storage, checkpoint, mode).await
    }

    async fn restore_checkpoint_in(
        identity: &SubtaskIdentity,
        config: &StateBackendConfig,
        budget: Option<&MemoryBudget>,
        storage: &CheckpointStorage,
        checkpoint: &CheckpointMetadata,
        mode: RestoreMode,
    ) -> Result<Self> {
        let handles = checkpoint.keyed_handles(identity.operator_id());
        if handles.is_empty() {
            return Self::new_in(identity, config, budget);
        }
        Self::restore_in(identity, config, budget, storage, &handles, mode).await
    }

    /// As [`StateBackend::restore`]; the heap kind takes the state from `recovery` when it keeps the
    /// frozen version that produced the owned key groups' handle, and keeps its own checkpoints there
    /// ([`HeapKeyedStateBackend::restore_in_process`], `docs/local-recovery.md`). The RocksDB kind
    /// restores as [`StateBackend::restore`] does (its local copy is what a restart on the machine
    /// reads).
    ///
    /// # Errors
    /// As [`StateBackend::restore`].
    pub async fn restore_in_process(
        identity: &SubtaskIdentity,
        config: &StateBackendConfig,
        storage: &CheckpointStorage,
        handles: &[KeyedStateHandle],
        mode: RestoreMode,
        recovery: &InProcessRecovery,
    ) -> Result<Self> {
        if config.kind != BackendKind::Heap {
            return Self::restore_in(identity, config, None, storage, handles, mode).await;
        }
        let heap = HeapKeyedStateBackend::restore_in_process(
            identity.clone(),
            config.heap.clone(),
            storage,
            handles,
            mode,
            recovery,
        )
        .await?;
        Ok(heap.into())
    }

    /// The heap kind keeps a frozen version of each checkpoint from now on in `recovery`
    /// ([`HeapKeyedStateBackend::set_in_process_recovery`]); the RocksDB kind ignores it.
    pub fn set_in_process_recovery(&mut self, recovery: &InProcessRecovery) {
        match &mut self.inner {
            Inner::Heap(b) => b.set_in_process_recovery(recovery),
            #[cfg(feature = "rocksdb")]
            Inner::RocksDb(_) => {}
        }
    }

    /// The kind inside.
    pub fn kind(&self) -> BackendKind {
        self.kind
    }

    /// Identity of the backend instance in its state handles (`None` before its first snapshot or
    /// restore).
    pub fn backend_id(&self) -> Option<&str> {
        on!(&self.inner, b => b.backend_id())
    }

    /// Names of all states, registered or restored.
    pub fn state_names(&self) -> Vec<String> {
        on!(&self.inner, b => b.state_names())
    }

    /// Where the restore that made this backend read its files: local copies (local recovery, the
    /// `local_recovery_dir` of its kind's settings) or checkpoint storage, and each local copy that was
    /// missing or damaged and read from storage instead. All zero for a backend that was not restored.
    pub fn restore_sources(&self) -> &RestoreSources {
        on!(&self.inner, b => b.restore_sources())
    }

    /// The last checkpoint confirmed by [`KeyedStateBackend::notify_checkpoint_complete`].
    pub fn last_completed_checkpoint(&self) -> Option<u64> {
        on!(&self.inner, b => b.last_completed_checkpoint())
    }

    /// The heap backend inside, if the kind is heap.
    pub fn as_heap(&self) -> Option<&HeapKeyedStateBackend<K>> {
        match &self.inner {
            Inner::Heap(b) => Some(b),
            #[cfg(feature = "rocksdb")]
            Inner::RocksDb(_) => None,
        }
    }

    /// The RocksDB backend inside, if the kind is LSM.
    #[cfg(feature = "rocksdb")]
    pub fn as_rocksdb(&self) -> Option<&RocksDbKeyedStateBackend<K>> {
        match &self.inner {
            Inner::RocksDb(b) => Some(b),
            Inner::Heap(_) => None,
        }
    }
}

impl<K: StateKey> From<HeapKeyedStateBackend<K>> for StateBackend<K> {
    fn from(backend: HeapKeyedStateBackend<K>) -> Self {
        StateBackend {
            inner: Inner::Heap(backend),
            kind: BackendKind::Heap,
        }
    }
}

#[cfg(feature = "rocksdb")]
impl<K: StateKey> From<RocksDbKeyedStateBackend<K>> for StateBackend<K> {
    fn from(backend: RocksDbKeyedStateBackend<K>) -> Self {
        StateBackend {
            inner: Inner::RocksDb(backend),
            kind: BackendKind::RocksDb,
        }
    }
}

mod forward;
