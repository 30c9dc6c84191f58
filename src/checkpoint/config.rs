//! What a coordinator knows of the job: its operators, which of them keep keyed state, and its
//! settings (plain data).

use std::collections::BTreeSet;
use std::time::Duration;

use crate::error::{Error, Result};
use crate::snapshot::handle::{CheckpointMetadata, TaskStateSnapshot};

/// One operator of the job: its id, how many subtasks acknowledge each checkpoint, and whether it keeps
/// keyed state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OperatorTasks {
    /// Operator identity, as in each [`TaskStateSnapshot::operator_id`].
    pub operator_id: String,
    /// Subtasks `0..parallelism` of the operator; each acknowledges every checkpoint once.
    pub parallelism: u32,
    /// The operator keeps keyed state: every subtask's acknowledgement carries a keyed state handle, and
    /// together they hold every key group (a keyed backend always writes one, empty or not). An
    /// operator with operator state only (a source's offsets) is not keyed.
    pub keyed: bool,
}

impl OperatorTasks {
    /// A keyed operator of `parallelism` subtasks.
    pub fn keyed(operator_id: impl Into<String>, parallelism: u32) -> Self {
        OperatorTasks {
            operator_id: operator_id.into(),
            parallelism,
            keyed: true,
        }
    }

    /// An operator without keyed state (operator state only, or none) of `parallelism` subtasks.
    pub fn without_keyed_state(operator_id: impl Into<String>, parallelism: u32) -> Self {
        OperatorTasks {
            keyed: false,
            ..OperatorTasks::keyed(operator_id, parallelism)
        }
    }
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
    /// Savepoints expire by it too (nothing else ends a savepoint but its own completion or abort).
    pub checkpoint_timeout: Duration,
    /// Accept a restore from a snapshot holding state of operators this job does not have, dropping that
    /// state (Flink's `allowNonRestoredState`, default false: such a restore is refused, so that renaming
    /// or removing an operator never loses its state silently).
    pub allow_non_restored_state: bool,
}

impl Default for CoordinatorConfig {
    /// No operators (add them), one retained checkpoint, the default timeout, non-restored state refused.
    fn default() -> Self {
        CoordinatorConfig {
            operators: Vec::new(),
            retained_checkpoints: 1,
            checkpoint_timeout: DEFAULT_CHECKPOINT_TIMEOUT,
            allow_non_restored_state: false,
        }
    }
}

impl CoordinatorConfig {
    /// A job of one keyed operator with `parallelism` subtasks and the default checkpoint timeout.
    pub fn single_operator(
        operator_id: impl Into<String>,
        parallelism: u32,
        retained_checkpoints: usize,
    ) -> Self {
        CoordinatorConfig {
            operators: vec![OperatorTasks::keyed(operator_id, parallelism)],
            retained_checkpoints,
            ..CoordinatorConfig::default()
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

    /// The operator `(operator_id)` if `subtask_index` is one of its subtasks.
    fn operator(&self, operator_id: &str, subtask_index: u32) -> Option<&OperatorTasks> {
        self.operators
            .iter()
            .find(|o| o.operator_id == operator_id && subtask_index < o.parallelism)
    }

    /// Checks that `task` is one of the job's tasks and carries keyed state exactly when its operator is
    /// keyed.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] naming what is wrong.
    pub(crate) fn check_task(&self, task: &TaskStateSnapshot) -> Result<()> {
        let Some(op) = self.operator(&task.operator_id, task.subtask_index) else {
            return Err(Error::InvalidArgument(format!(
                "subtask {} of operator `{}` is not a task of this job",
                task.subtask_index, task.operator_id
            )));
        };
        match (op.keyed, task.keyed_state.is_some()) {
            (true, false) => Err(Error::InvalidArgument(format!(
                "subtask {} of keyed operator `{}` acknowledged without keyed state (a keyed backend \
                 always writes a handle; an operator without keyed state is `OperatorTasks::without_keyed_state`)",
                task.subtask_index, task.operator_id
            ))),
            (false, true) => Err(Error::InvalidArgument(format!(
                "subtask {} of operator `{}` acknowledged keyed state, but the operator is configured \
                 without keyed state",
                task.subtask_index, task.operator_id
            ))),
            _ => Ok(()),
        }
    }

    /// Checks that this job can take the state of `snapshot`: every operator with state in it is one of
    /// the job's, unless [`CoordinatorConfig::allow_non_restored_state`] (as Flink's
    /// `StateAssignmentOperation` checks at restore).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] naming the operators whose state would be dropped.
    pub(crate) fn check_restorable(&self, snapshot: &CheckpointMetadata) -> Result<()> {
        if self.allow_non_restored_state {
            return Ok(());
        }
        let unknown: BTreeSet<&str> = snapshot
            .tasks
            .iter()
            .filter(|t| t.keyed_state.is_some() || !t.operator_state.is_empty())
            .map(|t| t.operator_id.as_str())
            .filter(|id| !self.operators.iter().any(|o| o.operator_id == *id))
            .collect();
        if unknown.is_empty() {
            return Ok(());
        }
        Err(Error::InvalidArgument(format!(
            "snapshot {} holds state of operator(s) {} that this job does not have; their state would be \
             dropped (set `allow_non_restored_state` to accept that)",
            snapshot.checkpoint_id,
            unknown.into_iter().collect::<Vec<_>>().join(", ")
        )))
    }
}
