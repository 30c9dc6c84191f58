//! Who a keyed state backend keeps state for: one subtask of one operator (as the operator identifier,
//! number of key groups and key-group range of Flink's `KeyedStateBackendParameters`). Identity, not
//! settings: it names files and decides which key groups a restore reads, so it is validated once, here.

use crate::error::{Error, Result};
use crate::key_group::{KeyGroupRange, key_group_range_for_operator};

/// Subtask `subtask_index` of `parallelism` of operator `operator_id`, in a job of `max_parallelism` key
/// groups; it owns the key groups Flink's `computeKeyGroupRangeForOperatorIndex` gives it.
///
/// ```
/// use statebackend::SubtaskIdentity;
/// let identity = SubtaskIdentity::new("counter", 128, 4, 1)?;
/// assert_eq!(identity.key_groups().start(), 32);
/// assert_eq!(identity.for_subtask(2, 1)?.key_groups().start(), 64);
/// # Ok::<(), statebackend::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SubtaskIdentity {
    operator_id: String,
    max_parallelism: u32,
    parallelism: u32,
    subtask_index: u32,
    key_groups: KeyGroupRange,
}

impl SubtaskIdentity {
    /// The identity of subtask `subtask_index` (below `parallelism`) of `operator_id`.
    ///
    /// `operator_id` is stable across job versions and part of file names: non-empty ASCII letters,
    /// digits, `-` and `_`. `max_parallelism` (1 to 2^15) is fixed for the job's life; restoring at
    /// another `parallelism` rescales.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] naming the bad operator id, max parallelism, parallelism or index.
    pub fn new(
        operator_id: impl Into<String>,
        max_parallelism: u32,
        parallelism: u32,
        subtask_index: u32,
    ) -> Result<Self> {
        let operator_id = operator_id.into();
        check_operator_id(&operator_id)?;
        let key_groups = key_group_range_for_operator(max_parallelism, parallelism, subtask_index)?;
        Ok(SubtaskIdentity {
            operator_id,
            max_parallelism,
            parallelism,
            subtask_index,
            key_groups,
        })
    }

    /// The same operator's subtask `subtask_index` of `parallelism` (an engine's task builds its own from
    /// the job's).
    ///
    /// # Errors
    /// As [`SubtaskIdentity::new`].
    pub fn for_subtask(&self, parallelism: u32, subtask_index: u32) -> Result<Self> {
        SubtaskIdentity::new(
            self.operator_id.clone(),
            self.max_parallelism,
            parallelism,
            subtask_index,
        )
    }

    /// The operator's id.
    pub fn operator_id(&self) -> &str {
        &self.operator_id
    }

    /// Number of key groups of the job.
    pub fn max_parallelism(&self) -> u32 {
        self.max_parallelism
    }

    /// Subtasks of the operator.
    pub fn parallelism(&self) -> u32 {
        self.parallelism
    }

    /// This subtask's index, below [`SubtaskIdentity::parallelism`].
    pub fn subtask_index(&self) -> u32 {
        self.subtask_index
    }

    /// The key groups this subtask owns.
    pub fn key_groups(&self) -> KeyGroupRange {
        self.key_groups
    }
}

/// An operator id names files: non-empty ASCII letters, digits, `-` and `_`.
///
/// # Errors
/// [`Error::InvalidArgument`] naming the id.
pub(crate) fn check_operator_id(operator_id: &str) -> Result<()> {
    let ok = !operator_id.is_empty()
        && operator_id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidArgument(format!(
            "operator id `{operator_id}` must be non-empty ASCII letters, digits, `-` or `_`"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_identities_are_refused_with_a_typed_error() {
        for bad in [
            SubtaskIdentity::new("", 128, 1, 0),
            SubtaskIdentity::new("a/b", 128, 1, 0),
            SubtaskIdentity::new("op", 0, 1, 0),
            SubtaskIdentity::new("op", 128, 0, 0),
            SubtaskIdentity::new("op", 128, 2, 2),
            SubtaskIdentity::new("op", 4, 8, 0),
        ] {
            assert!(matches!(bad, Err(Error::InvalidArgument(_))), "{bad:?}");
        }
    }

    #[test]
    fn key_groups_are_flinks_ranges() {
        let one = SubtaskIdentity::new("op", 128, 3, 2).unwrap();
        assert_eq!(
            one.key_groups(),
            key_group_range_for_operator(128, 3, 2).unwrap()
        );
        assert_eq!(
            one.for_subtask(1, 0).unwrap().key_groups(),
            KeyGroupRange::all(128).unwrap()
        );
    }
}
