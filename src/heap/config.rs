//! Settings of the heap backend.

use crate::error::{Error, Result};
use crate::key_group::{KeyGroupRange, key_group_range_for_operator};
use crate::keyed::checks::validate_subtask;

/// Settings of a heap backend (plain data).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeapBackendConfig {
    /// Operator identity; part of snapshot file names, so letters, digits, `-` and `_` only.
    pub operator_id: String,
    /// Index of this subtask.
    pub subtask_index: u32,
    /// Max parallelism of the job (number of key groups), fixed for the job's life.
    pub max_parallelism: u32,
    /// Key groups this backend owns.
    pub key_groups: KeyGroupRange,
    /// zstd level of snapshot frames; `None` stores them uncompressed. Default `Some(1)`.
    pub zstd_level: Option<i32>,
    /// Uncompressed bytes per snapshot frame, 1 to 2^30 (the format's frame limit). Default 1 MiB.
    pub frame_bytes: usize,
    /// Threads, the calling one included, that decode a restored state into the map when the job
    /// registers it, key groups split among them (a state under 1 MiB of records uses one), at least 1.
    /// Default: the machine's available parallelism, at most 4.
    pub restore_threads: usize,
}

impl HeapBackendConfig {
    /// Config of subtask `subtask_index` of `parallelism`, owning the key groups Flink's formula gives it.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for an impossible parallelism or operator id.
    pub fn for_subtask(
        operator_id: &str,
        max_parallelism: u32,
        parallelism: u32,
        subtask_index: u32,
    ) -> Result<Self> {
        let config = HeapBackendConfig {
            operator_id: operator_id.to_string(),
            subtask_index,
            max_parallelism,
            key_groups: key_group_range_for_operator(max_parallelism, parallelism, subtask_index)?,
            zstd_level: Some(1),
            frame_bytes: 1 << 20,
            restore_threads: crate::parallel::default_restore_threads(),
        };
        config.validate()?;
        Ok(config)
    }

    pub(crate) fn validate(&self) -> Result<()> {
        validate_subtask(&self.operator_id, self.max_parallelism, self.key_groups)?;
        if self.restore_threads == 0 {
            return Err(Error::InvalidArgument(
                "restore_threads is 0; at least 1 decodes".into(),
            ));
        }
        let limit = crate::format::keyed_file::MAX_FRAME_RAW_LEN as usize;
        if self.frame_bytes == 0 || self.frame_bytes > limit {
            return Err(Error::InvalidArgument(format!(
                "frame_bytes {} is not within [1, {limit}]",
                self.frame_bytes
            )));
        }
        Ok(())
    }
}
