//! State handles: the small, serializable descriptions of what a snapshot wrote (as Flink's
//! `KeyedStateHandle` / `StreamStateHandle`), and the checkpoint metadata that collects them.

use std::collections::BTreeMap;

use crate::key_group::KeyGroupRange;

/// Whether a file belongs to one checkpoint or may be shared by several.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FileScope {
    /// Exclusive to the checkpoint that wrote it; deleted with that checkpoint.
    Private,
    /// May be referenced by later checkpoints (incremental); deleted when no retained checkpoint uses it.
    Shared,
}

/// One file a state handle refers to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateFile {
    /// Object-store path relative to the job's root directory (e.g. `chk-7/op-0-kg-0-127.keyed`).
    pub path: String,
    /// Private or shared.
    pub scope: FileScope,
    /// Size in bytes.
    pub size_bytes: u64,
    /// CRC32 (IEEE, as crc32fast) of the whole file.
    pub crc32: u32,
    /// Checkpoint that uploaded the file (a placeholder of a later checkpoint keeps the original id).
    pub created_by: u64,
    /// Name the file has in the backend's local directory (e.g. RocksDB's `000012.sst`); empty when the
    /// format does not need one (keyed files). Never an identity: only `path` is; two backends, or one
    /// backend after a restore, reuse local names (`docs/lsm.md`, FLINK-29913).
    pub local_name: String,
}

/// How the files of a [`KeyedStateHandle`] are to be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum HandleFormat {
    /// One keyed snapshot file (`docs/formats.md`): a full snapshot of the heap backend (incremental
    /// checkpoints off), or a canonical savepoint of either backend. Tag 0.
    KeyedFile,
    /// The files of a native RocksDB checkpoint of the RocksDB backend, each with its local name: shared SST
    /// and OPTIONS files (uploaded once, reused by later checkpoints while unchanged) and the private
    /// MANIFEST; a restore writes RocksDB's CURRENT from the MANIFEST's name (handles written before also
    /// list CURRENT, an empty log and a private OPTIONS). Its rows are in LSM row format 2
    /// (`docs/formats.md`, "RocksDB backend rows"). Tag 2.
    RocksIncremental,
    /// A native RocksDB checkpoint in LSM row format 1 (2-byte key groups, `u32` lengths), written before
    /// row format 2. Known so that a restore can say why it refuses it ([`crate::Error::InvalidArgument`]);
    /// no version of this crate that writes format 2 reads it. Tag 1.
    RocksIncrementalRowsV1,
    /// A chain of keyed snapshot files of the heap backend's incremental checkpoints
    /// (`docs/heap-incremental.md`): a full file first (format version 1, canonical), then delta files
    /// (format version 2), oldest first, every file shared; the state is the full file's with each delta
    /// applied in order. Tag 3.
    KeyedChain,
}

impl HandleFormat {
    pub(crate) fn tag(self) -> u8 {
        match self {
            HandleFormat::KeyedFile => 0,
            HandleFormat::RocksIncrementalRowsV1 => 1,
            HandleFormat::RocksIncremental => 2,
            HandleFormat::KeyedChain => 3,
        }
    }
    pub(crate) fn from_tag(tag: u8) -> Option<Self> {
        match tag {
            0 => Some(HandleFormat::KeyedFile),
            1 => Some(HandleFormat::RocksIncrementalRowsV1),
            2 => Some(HandleFormat::RocksIncremental),
            3 => Some(HandleFormat::KeyedChain),
            _ => None,
        }
    }
}

/// What one keyed state backend wrote for one checkpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyedStateHandle {
    /// Identity of the backend instance that wrote it (stable across its checkpoints).
    pub backend_id: String,
    /// Operator whose state this is; a restore accepts only handles of its own operator.
    pub operator_id: String,
    /// Checkpoint this handle belongs to.
    pub checkpoint_id: u64,
    /// Max parallelism of the job (fixed for its life).
    pub max_parallelism: u32,
    /// Key groups whose state the files hold.
    pub key_groups: KeyGroupRange,
    /// How to read the files.
    pub format: HandleFormat,
    /// The files, private and shared.
    pub files: Vec<StateFile>,
}

impl KeyedStateHandle {
    /// Bytes of all files this handle references ("full size").
    pub fn full_size_bytes(&self) -> u64 {
        self.files.iter().map(|f| f.size_bytes).sum()
    }

    /// Bytes this checkpoint uploaded itself ("checkpointed size"): files created by it.
    pub fn checkpointed_size_bytes(&self) -> u64 {
        self.files
            .iter()
            .filter(|f| f.created_by == self.checkpoint_id)
            .map(|f| f.size_bytes)
            .sum()
    }
}

/// Everything one subtask of one operator contributed to a checkpoint.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TaskStateSnapshot {
    /// Operator identity (stable across job versions).
    pub operator_id: String,
    /// Index of the subtask that wrote it.
    pub subtask_index: u32,
    /// Keyed state, if the operator has any.
    pub keyed_state: Option<KeyedStateHandle>,
    /// Small named blobs of non-keyed operator state (e.g. a source offset), stored inline.
    pub operator_state: BTreeMap<String, Vec<u8>>,
}

impl TaskStateSnapshot {
    /// The acknowledgement of subtask `subtask_index` of `operator_id` with keyed state `handle` and no
    /// operator state.
    pub fn keyed(operator_id: &str, subtask_index: u32, handle: KeyedStateHandle) -> Self {
        TaskStateSnapshot {
            operator_id: operator_id.to_string(),
            subtask_index,
            keyed_state: Some(handle),
            operator_state: BTreeMap::new(),
        }
    }
}

/// Checkpoint or savepoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SnapshotKind {
    /// Taken by the system; owned and cleaned up by it.
    Checkpoint,
    /// Taken by the user; self-contained, never deleted by the system.
    Savepoint,
}

/// Contents of a checkpoint's `_metadata` file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckpointMetadata {
    /// Checkpoint id, increasing within a job.
    pub checkpoint_id: u64,
    /// Wall-clock time the checkpoint was triggered, ms since the Unix epoch.
    pub timestamp_ms: u64,
    /// Checkpoint or savepoint.
    pub kind: SnapshotKind,
    /// Generation of the coordinator that wrote it (`docs/protocol.md`, "Fencing"); 0 when unknown
    /// (metadata of format versions 1 to 3). Checkpoints are ordered by `(generation, checkpoint_id)`:
    /// an old leader's checkpoint never outranks a newer leader's.
    pub generation: u64,
    /// One entry per acknowledging subtask.
    pub tasks: Vec<TaskStateSnapshot>,
}

impl CheckpointMetadata {
    /// Every shared file the checkpoint references.
    pub fn shared_files(&self) -> impl Iterator<Item = &StateFile> {
        self.files().filter(|f| f.scope == FileScope::Shared)
    }

    /// The acknowledgement of task `(operator_id, subtask_index)`, if it is part of the checkpoint.
    pub fn task(&self, operator_id: &str, subtask_index: u32) -> Option<&TaskStateSnapshot> {
        self.tasks
            .iter()
            .find(|t| t.operator_id == operator_id && t.subtask_index == subtask_index)
    }

    /// The keyed state handles of `operator_id`.
    pub fn keyed_handles(&self, operator_id: &str) -> Vec<KeyedStateHandle> {
        self.tasks
            .iter()
            .filter(|t| t.operator_id == operator_id)
            .filter_map(|t| t.keyed_state.clone())
            .collect()
    }

    /// The order of checkpoints from oldest to newest: by generation, then id.
    pub fn recency(&self) -> (u64, u64) {
        (self.generation, self.checkpoint_id)
    }

    /// Every file the checkpoint references.
    pub fn files(&self) -> impl Iterator<Item = &StateFile> {
        self.tasks
            .iter()
            .filter_map(|t| t.keyed_state.as_ref())
            .flat_map(|h| h.files.iter())
    }
}
