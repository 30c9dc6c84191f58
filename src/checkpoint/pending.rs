//! The checkpoints a coordinator has in flight, how the ones it triggered ended, and the aborts it has
//! not reported yet (`docs/protocol.md`, "Acknowledgements are identified and idempotent").

use std::collections::BTreeMap;

use crate::snapshot::handle::TaskStateSnapshot;
use crate::snapshot::result::SnapshotMetrics;
use crate::storage::CheckpointStorage;

/// A task: operator id and subtask index.
pub(crate) type TaskKey = (String, u32);

/// A triggered checkpoint waiting for acknowledgements: at most one per task.
pub(crate) struct PendingCheckpoint {
    pub(crate) timestamp_ms: u64,
    pub(crate) acks: BTreeMap<TaskKey, (TaskStateSnapshot, Option<SnapshotMetrics>)>,
    /// A savepoint into this storage (`docs/savepoints.md`), or a checkpoint (`None`).
    pub(crate) savepoint: Option<CheckpointStorage>,
}

/// How a checkpoint this coordinator triggered ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// Its metadata is durable.
    Completed,
    /// Aborted or declined: it has no metadata, and no other writer can write one under its id.
    Aborted,
    /// Another writer's metadata was found under its id (a lost race): until that metadata is read, the
    /// directory is read again by every refresh and sweep, never taken as empty.
    LostRace,
    /// Its metadata write failed in a way that may have taken effect: it may exist.
    Uncertain,
}

/// Outcomes of the most recent checkpoints (a bounded memory: older late acknowledgements are treated as
/// unknown, which deletes nothing), and the ids aborted by the coordinator on its own that the engine has
/// not been told of yet.
#[derive(Debug, Default)]
pub(crate) struct Outcomes {
    map: BTreeMap<u64, Outcome>,
    unreported: Vec<u64>,
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

    /// Whether checkpoint `id` is known to have no metadata by another writer: this coordinator
    /// completed it (and knows it) or aborted it (and its reservation keeps others off the id).
    pub(crate) fn settled(&self, id: u64) -> bool {
        matches!(self.get(id), Some(Outcome::Completed | Outcome::Aborted))
    }

    /// Remembers that the coordinator aborted `id` on its own (a timeout, a completion of a newer one):
    /// the engine is told at the next completion or by `take_aborted`.
    pub(crate) fn unreported_abort(&mut self, id: u64) {
        if !self.unreported.contains(&id) {
            self.unreported.push(id);
        }
    }

    /// The unreported aborts, ascending; they count as reported from now on.
    pub(crate) fn take_unreported(&mut self) -> Vec<u64> {
        let mut ids = std::mem::take(&mut self.unreported);
        ids.sort_unstable();
        ids
    }
}
