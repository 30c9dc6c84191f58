//! Stop-with-savepoint (`--stop-with-savepoint DIR`) and restore from a savepoint (`--from-savepoint`):
//! canonical savepoints, so the job may come back on the other backend and at another parallelism.

use std::time::Instant;

use statebackend::inspect::SnapshotLocation;
use statebackend::{
    Acknowledgement, CheckpointMetadata, CheckpointStorage, KeyedStateBackend, RestoreMode,
    SavepointFormat, StateBackend, StateBackendConfig, StorageConfig, SubtaskIdentity,
    TaskStateSnapshot,
};

use crate::task::Task;
use crate::{Job, OFFSET_STATE, OPERATOR};

/// The source offset a checkpoint or savepoint stored (subtask 0's operator state).
pub(crate) fn stored_offset(meta: &CheckpointMetadata) -> statebackend::Result<u64> {
    meta.tasks
        .iter()
        .find_map(|t| t.operator_state.get(OFFSET_STATE))
        .and_then(|b| <[u8; 8]>::try_from(b.as_slice()).ok())
        .map(u64::from_le_bytes)
        .ok_or_else(|| {
            statebackend::Error::InvalidArgument(format!(
                "{:?} {} has no source offset",
                meta.kind, meta.checkpoint_id
            ))
        })
}

impl Job {
    /// Takes a canonical savepoint of `task` at source offset `offset` into the checkpoint root `dir`
    /// (the savepoint lands in `dir/<job>/savepoints/sp-<id>`) through the coordinator; returns that
    /// directory. A failed savepoint is aborted (its directory deleted) and its error returned.
    pub(crate) fn stop_with_savepoint(
        &mut self,
        task: &mut Task,
        offset: u64,
        dir: &str,
    ) -> statebackend::Result<String> {
        let target =
            CheckpointStorage::from_url(dir, &self.args.job_id, &StorageConfig::default())?;
        let id = self
            .rt
            .block_on(self.coordinator.trigger_savepoint(&target))?;
        let mut results = Vec::new();
        for b in &mut task.backends {
            let pending = b.savepoint(id, &target, SavepointFormat::Canonical)?;
            results.push(self.rt.block_on(pending.run()));
        }
        if results.iter().any(Result::is_err) {
            self.rt.block_on(self.coordinator.abort(id))?;
            return results
                .into_iter()
                .find_map(Result::err)
                .map_or(Ok(String::new()), Err);
        }
        let mut completed = false;
        for (i, r) in results.into_iter().enumerate() {
            let r = r?;
            let mut state = TaskStateSnapshot::keyed(OPERATOR, i as u32, r.handle);
            if i == 0 {
                state
                    .operator_state
                    .insert(OFFSET_STATE.into(), offset.to_le_bytes().to_vec());
            }
            let answer =
                self.rt
                    .block_on(self.coordinator.acknowledge(id, state, Some(r.metrics)))?;
            completed |= matches!(answer, Acknowledgement::Completed(_));
        }
        if !completed {
            return Err(statebackend::Error::IllegalState(format!(
                "savepoint {id} did not complete"
            )));
        }
        Ok(format!(
            "{}/{}/savepoints/sp-{id}",
            dir.trim_end_matches('/'),
            self.args.job_id
        ))
    }

    /// Backends of `subtasks` (with `config`) restored from the savepoint (or checkpoint) directory `dir` in NO_CLAIM
    /// mode, and the source offset it stored. Ids of the job's own checkpoints continue above its id.
    pub(crate) fn restore_from_savepoint(
        &mut self,
        dir: &str,
        subtasks: &[SubtaskIdentity],
        config: &StateBackendConfig,
        attempt: u32,
    ) -> statebackend::Result<(Vec<StateBackend<String>>, u64)> {
        let started = Instant::now();
        let at = SnapshotLocation::parse(dir, &StorageConfig::default())?;
        let meta = self.rt.block_on(at.read_metadata())?;
        // Refused before anything is restored if the savepoint holds state of operators this job lacks.
        self.coordinator.check_restorable(&meta)?;
        let offset = stored_offset(&meta)?;
        let mut backends = Vec::with_capacity(subtasks.len());
        for identity in subtasks {
            backends.push(self.rt.block_on(StateBackend::restore_checkpoint(
                identity,
                config,
                &at.storage,
                &meta,
                RestoreMode::NoClaim,
            ))?);
        }
        self.rt
            .block_on(self.coordinator.restored_from(&meta, RestoreMode::NoClaim))?;
        self.restores.push(format!(
            "attempt {attempt}: restored {:?} {} from {dir} on the {} backend at parallelism {} in {:.1} ms, source offset {offset}",
            meta.kind,
            at.id,
            self.args.backend,
            subtasks.len(),
            started.elapsed().as_secs_f64() * 1e3,
        ));
        Ok((backends, offset))
    }
}
