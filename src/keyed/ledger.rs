//! What a backend knows of its own snapshots, kept the same way by both backends: the highest id it
//! snapshotted or was restored from (ids never repeat), the checkpoints it snapshotted that were neither
//! confirmed nor aborted yet, and the last one confirmed. Notifications are hints (`docs/protocol.md`, invariant P10):
//! the ledger ignores what it cannot match.

use std::collections::BTreeSet;

use crate::error::{Error, Result};

/// Unconfirmed checkpoints remembered: snapshots never confirmed (lost notifications) are forgotten oldest
/// first beyond this, and a late confirmation of one is then ignored.
const MAX_UNCONFIRMED: usize = 64;

/// Whether a snapshot is of a checkpoint (confirmed or aborted later) or a savepoint (never either).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SnapshotOf {
    Checkpoint,
    Savepoint,
}

/// One backend's record of its snapshots.
#[derive(Debug, Default)]
pub(crate) struct SnapshotLedger {
    /// The highest id snapshotted or restored from: a snapshot id must exceed it.
    last_snapshot_id: Option<u64>,
    /// Checkpoints snapshotted and neither confirmed nor aborted, at most [`MAX_UNCONFIRMED`].
    unconfirmed: BTreeSet<u64>,
    /// The highest checkpoint confirmed.
    last_completed: Option<u64>,
}

impl SnapshotLedger {
    /// The ledger of a backend restored from checkpoint (or savepoint) `restored`: ids up to it are
    /// refused.
    pub(crate) fn restored(restored: Option<u64>) -> SnapshotLedger {
        SnapshotLedger {
            last_snapshot_id: restored,
            ..SnapshotLedger::default()
        }
    }

    /// Records the synchronous phase of snapshot `id`.
    ///
    /// # Errors
    /// [`Error::IllegalState`] naming both ids if `id` does not exceed every id snapshotted or restored
    /// from (a repeated id would make two snapshots answer to one checkpoint); nothing is recorded then.
    pub(crate) fn begin(&mut self, id: u64, of: SnapshotOf) -> Result<()> {
        if let Some(last) = self.last_snapshot_id.filter(|last| id <= *last) {
            return Err(Error::IllegalState(format!(
                "snapshot for checkpoint {id} refused: this backend already snapshotted or was restored \
                 from checkpoint {last}, and ids never repeat"
            )));
        }
        self.last_snapshot_id = Some(id);
        if of == SnapshotOf::Checkpoint {
            self.unconfirmed.insert(id);
            while self.unconfirmed.len() > MAX_UNCONFIRMED {
                self.unconfirmed.pop_first();
            }
        }
        Ok(())
    }

    /// Confirms checkpoint `id` if this backend snapshotted it and it was neither confirmed, aborted nor
    /// forgotten: older unconfirmed ones are subsumed. Whether it was.
    pub(crate) fn confirm(&mut self, id: u64) -> bool {
        if !self.unconfirmed.contains(&id) {
            return false;
        }
        self.completed(id);
        true
    }

    /// Records checkpoint `id` as confirmed, the backend having checked that it may be (the RocksDB
    /// backend: its upload finished and was not aborted); older unconfirmed ones are subsumed.
    pub(crate) fn completed(&mut self, id: u64) {
        self.unconfirmed.retain(|u| *u > id);
        self.last_completed = Some(self.last_completed.map_or(id, |c| c.max(id)));
    }

    /// Forgets checkpoint `id` (aborted).
    pub(crate) fn abort(&mut self, id: u64) {
        self.unconfirmed.remove(&id);
    }

    /// The highest checkpoint confirmed.
    pub(crate) fn last_completed(&self) -> Option<u64> {
        self.last_completed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_never_repeat_and_a_refused_id_records_nothing() {
        let mut ledger = SnapshotLedger::restored(Some(5));
        assert!(matches!(
            ledger.begin(5, SnapshotOf::Checkpoint),
            Err(Error::IllegalState(_))
        ));
        ledger.begin(6, SnapshotOf::Savepoint).unwrap();
        assert!(ledger.begin(6, SnapshotOf::Checkpoint).is_err());
        ledger.begin(7, SnapshotOf::Checkpoint).unwrap();
        assert!(!ledger.confirm(6), "a savepoint is never confirmed");
        assert!(ledger.confirm(7));
        assert_eq!(ledger.last_completed(), Some(7));
    }

    #[test]
    fn confirmation_subsumes_older_and_ignores_aborted_and_forgotten() {
        let mut ledger = SnapshotLedger::default();
        for id in 1..=3 {
            ledger.begin(id, SnapshotOf::Checkpoint).unwrap();
        }
        ledger.abort(3);
        assert!(!ledger.confirm(3), "aborted");
        assert!(ledger.confirm(2));
        assert!(!ledger.confirm(1), "subsumed by 2");
        assert_eq!(ledger.last_completed(), Some(2));
        for id in 10..(10 + MAX_UNCONFIRMED as u64 + 1) {
            ledger.begin(id, SnapshotOf::Checkpoint).unwrap();
        }
        assert!(!ledger.confirm(10), "forgotten, oldest first");
        assert!(ledger.confirm(11));
    }
}
