//! What the coordinator knows of the job's tasks and of each checkpoint it triggered, and what it answers
//! (`docs/protocol.md`, "Acknowledgements are identified and idempotent").

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use crate::checkpoint::handle::TaskStateSnapshot;
use crate::checkpoint::store::RegistryStats;
use crate::error::{Error, Result};
use crate::keyed::backend::SnapshotMetrics;

/// One operator of the job: its id and how many subtasks acknowledge each checkpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OperatorTasks {
    /// Operator identity, as in each [`TaskStateSnapshot::operator_id`].
    pub operator_id: String,
    /// Subtasks `0..parallelism` of the operator; each acknowledges every checkpoint once.
    pub parallelism: u32,
}

/// Flink's default checkpoint timeout (`execution.checkpointing.timeout`): 10 minutes.
pub const DEFAULT_CHECKPOINT_TIMEOUT: Duration = Duration::from_secs(600);

/// Settings of a coordinator (plain data).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CoordinatorConfig {
    /// The job's operators; a checkpoint completes when every subtask of every operator acknowledged it.
    pub operators: Vec<OperatorTasks>,
    /// Completed checkpoints to keep (Flink's `state.checkpoints.num-retained`, default 1).
    pub retained_checkpoints: usize,
    /// A checkpoint not complete this long after its trigger (by the coordinator's clock) is aborted, as
    /// Flink's `execution.checkpointing.timeout` ([`DEFAULT_CHECKPOINT_TIMEOUT`], 10 minutes): at the next
    /// [`crate::CheckpointCoordinator::trigger`], acknowledgement, or
    /// [`crate::CheckpointCoordinator::abort_expired`]. The orphan sweep's `min_age` should exceed it.
    pub checkpoint_timeout: Duration,
}

impl CoordinatorConfig {
    /// A job of one operator with `parallelism` subtasks and the default checkpoint timeout.
    pub fn single_operator(
        operator_id: impl Into<String>,
        parallelism: u32,
        retained_checkpoints: usize,
    ) -> Self {
        CoordinatorConfig {
            operators: vec![OperatorTasks {
                operator_id: operator_id.into(),
                parallelism,
            }],
            retained_checkpoints,
            checkpoint_timeout: DEFAULT_CHECKPOINT_TIMEOUT,
        }
    }

    /// Checks the settings.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for no operators, a repeated operator id, a parallelism of 0, no
    /// retained checkpoints, or a checkpoint timeout of 0.
    pub(crate) fn validate(&self) -> Result<()> {
        if self.operators.is_empty() {
            return Err(Error::InvalidArgument(
                "a checkpoint needs at least one task: the job has no operators".into(),
            ));
        }
        let mut seen = BTreeSet::new();
        for op in &self.operators {
            if !seen.insert(op.operator_id.as_str()) {
                return Err(Error::InvalidArgument(format!(
                    "operator `{}` is listed twice",
                    op.operator_id
                )));
            }
            if op.parallelism == 0 {
                return Err(Error::InvalidArgument(format!(
                    "operator `{}` has parallelism 0",
                    op.operator_id
                )));
            }
        }
        if self.retained_checkpoints == 0 {
            return Err(Error::InvalidArgument(
                "at least one checkpoint must be retained".into(),
            ));
        }
        if self.checkpoint_timeout.is_zero() {
            return Err(Error::InvalidArgument(
                "a checkpoint timeout of 0 would abort every checkpoint".into(),
            ));
        }
        Ok(())
    }

    /// Tasks that acknowledge each checkpoint.
    pub(crate) fn expected_tasks(&self) -> usize {
        self.operators.iter().map(|o| o.parallelism as usize).sum()
    }

    /// Whether `(operator_id, subtask_index)` is a task of the job.
    pub(crate) fn has_task(&self, operator_id: &str, subtask_index: u32) -> bool {
        self.operators
            .iter()
            .any(|o| o.operator_id == operator_id && subtask_index < o.parallelism)
    }
}

/// What [`crate::CheckpointCoordinator::acknowledge`] did with an acknowledgement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Acknowledgement {
    /// Accepted; the checkpoint waits for `remaining` more tasks.
    Pending {
        /// Tasks that have not acknowledged yet.
        remaining: usize,
    },
    /// The same acknowledgement was already accepted (a retried message), or the checkpoint already
    /// completed with it: nothing changed, nothing was deleted.
    Duplicate,
    /// This acknowledgement completed the checkpoint: its metadata is durable. The engine must call
    /// `notify_checkpoint_complete` on every backend, and `notify_checkpoint_aborted` for each of
    /// [`CheckpointStats::aborted_pending`].
    Completed(Box<CheckpointStats>),
}

impl Acknowledgement {
    /// The stats if this acknowledgement completed the checkpoint.
    pub fn completed(self) -> Option<CheckpointStats> {
        match self {
            Acknowledgement::Completed(stats) => Some(*stats),
            _ => None,
        }
    }
}

/// Figures of one completed checkpoint, summed over its subtasks (durations: the slowest subtask).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckpointStats {
    /// Checkpoint id.
    pub checkpoint_id: u64,
    /// Longest synchronous phase of a subtask.
    pub sync_duration: Duration,
    /// Longest asynchronous phase of a subtask.
    pub async_duration: Duration,
    /// Bytes uploaded by this checkpoint.
    pub checkpointed_bytes: u64,
    /// Bytes of all files the checkpoint references.
    pub full_bytes: u64,
    /// Uncompressed state bytes written.
    pub state_bytes: u64,
    /// Files uploaded.
    pub files_uploaded: u32,
    /// Files reused from earlier checkpoints.
    pub files_reused: u32,
    /// Checkpoints subsumed by this one.
    pub subsumed: Vec<u64>,
    /// Older pending checkpoints aborted because this one completed (as Flink's coordinator does); the
    /// engine must call `notify_checkpoint_aborted` for each on every backend.
    pub aborted_pending: Vec<u64>,
    /// The shared-file registry after the subsumption.
    pub registry: RegistryStats,
    /// Problems of the clean-up after the checkpoint completed (deletes that failed or were held back).
    /// The checkpoint is complete regardless; leftovers are retried or swept.
    pub cleanup_warnings: Vec<String>,
}

impl CheckpointStats {
    /// The content of a checkpoint's `_stats` file (`docs/formats.md`): ASCII `key value` lines.
    pub(crate) fn to_stats_file(&self) -> bytes::Bytes {
        bytes::Bytes::from(format!(
            "statebackend-stats 1\ncheckpoint {}\nsync_us {}\nasync_us {}\nstate_bytes {}\n",
            self.checkpoint_id,
            self.sync_duration.as_micros(),
            self.async_duration.as_micros(),
            self.state_bytes
        ))
    }

    /// Durations `(sync, async)` and state bytes from the content of a `_stats` file, if it is one of
    /// version 1 for `checkpoint_id` (anything else, e.g. of a newer release: `None`).
    pub fn parse_stats_file(bytes: &[u8], checkpoint_id: u64) -> Option<(Duration, Duration, u64)> {
        let text = std::str::from_utf8(bytes).ok()?;
        let mut lines = text.lines();
        if lines.next()? != "statebackend-stats 1" {
            return None;
        }
        let mut fields = std::collections::HashMap::new();
        for line in lines {
            let (k, v) = line.split_once(' ')?;
            fields.insert(k, v.parse::<u64>().ok()?);
        }
        if fields.get("checkpoint") != Some(&checkpoint_id) {
            return None;
        }
        Some((
            Duration::from_micros(*fields.get("sync_us")?),
            Duration::from_micros(*fields.get("async_us")?),
            *fields.get("state_bytes")?,
        ))
    }

    /// Sums the subtasks' metrics of checkpoint `checkpoint_id`.
    pub(crate) fn from_metrics<'a>(
        checkpoint_id: u64,
        metrics: impl Iterator<Item = &'a SnapshotMetrics> + Clone,
    ) -> Self {
        let m = metrics;
        CheckpointStats {
            checkpoint_id,
            sync_duration: m.clone().map(|m| m.sync_duration).max().unwrap_or_default(),
            async_duration: m
                .clone()
                .map(|m| m.async_duration)
                .max()
                .unwrap_or_default(),
            checkpointed_bytes: m.clone().map(|m| m.checkpointed_bytes).sum(),
            full_bytes: m.clone().map(|m| m.full_bytes).sum(),
            state_bytes: m.clone().map(|m| m.state_bytes).sum(),
            files_uploaded: m.clone().map(|m| m.files_uploaded).sum(),
            files_reused: m.map(|m| m.files_reused).sum(),
            subsumed: Vec::new(),
            aborted_pending: Vec::new(),
            registry: RegistryStats::default(),
            cleanup_warnings: Vec::new(),
        }
    }
}

/// A task: operator id and subtask index.
pub(crate) type TaskKey = (String, u32);

/// A triggered checkpoint waiting for acknowledgements: at most one per task.
pub(crate) struct PendingCheckpoint {
    pub(crate) timestamp_ms: u64,
    pub(crate) acks: BTreeMap<TaskKey, (TaskStateSnapshot, Option<SnapshotMetrics>)>,
    /// A savepoint into this storage (`docs/savepoints.md`), or a checkpoint (`None`).
    pub(crate) savepoint: Option<crate::storage::CheckpointStorage>,
}

/// How a checkpoint this coordinator triggered ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// Its metadata is durable.
    Completed,
    /// Aborted, declined or lost the race for its metadata: it has no metadata of its own.
    Aborted,
    /// Its metadata write failed in a way that may have taken effect: it may exist.
    Uncertain,
}

/// Outcomes of the most recent checkpoints (a bounded memory: older late acknowledgements are treated as
/// unknown, which deletes nothing).
#[derive(Debug, Default)]
pub(crate) struct Outcomes {
    map: BTreeMap<u64, Outcome>,
}

/// Outcomes remembered.
const REMEMBERED_OUTCOMES: usize = 4096;

impl Outcomes {
    pub(crate) fn set(&mut self, id: u64, outcome: Outcome) {
        self.map.insert(id, outcome);
        while self.map.len() > REMEMBERED_OUTCOMES {
            self.map.pop_first();
        }
    }

    pub(crate) fn get(&self, id: u64) -> Option<Outcome> {
        self.map.get(&id).copied()
    }

    /// Whether checkpoint `id` is known to have no metadata written by another writer: this coordinator
    /// completed or aborted it itself.
    pub(crate) fn settled(&self, id: u64) -> bool {
        matches!(self.get(id), Some(Outcome::Completed | Outcome::Aborted))
    }
}
