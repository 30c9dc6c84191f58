//! The checkpoint lifecycle, the coordinator side: the coordinator, its answers, the completed-checkpoint
//! store, the shared-file registry, the job's lineage and fencing, and the orphan sweep
//! (`docs/protocol.md`, `docs/faults.md`).

mod acknowledge;
pub(crate) mod answers;
pub(crate) mod config;
pub(crate) mod coordinator;
mod discard;
pub(crate) mod fence;
mod known;
pub(crate) mod lineage;
pub(crate) mod pending;
pub(crate) mod registry;
mod savepoint;
pub(crate) mod stats_file;
pub(crate) mod store;
mod store_types;
pub(crate) mod sweep;

pub use answers::{Acknowledgement, CheckpointStats, Declined, Discarded};
pub use config::{CoordinatorConfig, DEFAULT_CHECKPOINT_TIMEOUT, OperatorTasks};
pub use coordinator::CheckpointCoordinator;
pub use coordinator::collect_garbage;
pub use fence::NewestGeneration;
pub use registry::{SharedFileEntry, SharedFileRegistry};
pub use savepoint::{delete_own_savepoint_dir, reserve_savepoint_id};
pub use stats_file::StatsFile;
pub use store::{
    AddOutcome, CancellationPolicy, CompletedCheckpointStore, RegistryStats, RestoreOutcome,
    SkippedCheckpoint,
};
pub use sweep::{SweepReport, plan_orphan_sweep};
