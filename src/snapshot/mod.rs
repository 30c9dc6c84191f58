//! The checkpoint vocabulary as plain data, below formats, storage and both sides of the protocol: state
//! handles and metadata, what a snapshot produced, the restore mode, what a snapshot records of each state,
//! and the checks of a handle set, and where each file lives (`docs/architecture.md`).

pub(crate) mod handle;
pub mod layout;
pub(crate) mod restore_mode;
pub(crate) mod result;
pub(crate) mod sizes;
pub(crate) mod state_meta;
pub(crate) mod validate;

pub use handle::{
    CheckpointMetadata, FileScope, HandleFormat, KeyedStateHandle, SnapshotKind, StateFile,
    TaskStateSnapshot,
};
pub use restore_mode::RestoreMode;
pub use result::{RestoreSources, SavepointFormat, SnapshotMetrics, SnapshotResult};
pub use sizes::{KeyGroupSize, LARGEST_KEY_GROUPS, StateSize, StateSizes};
pub use state_meta::{StateKind, StateMeta};
