//! The job's line: durable records of where a generation of the job continued from (`docs/faults.md`, "A
//! restore starts a new line"). A record is an empty-named fact, `_lineage/<generation>-<id>-<kind>` (20
//! digits each, created if absent), so that one listing reads them all:
//! - ids continue above every record's id, across restarts (Flink persists its checkpoint id counter for
//!   the same reason);
//! - a checkpoint of an older generation than a record's, above the record's id (any id, for a restore
//!   from outside this storage or a cancellation), is **abandoned**: kept with its files, never restorable,
//!   subsumed at the next completion. A rollback thus survives the next failover, and a zombie's checkpoint
//!   completed after a restore never becomes the job's latest.

use bytes::Bytes;

use crate::error::Result;
use crate::snapshot::layout::LINEAGE_DIR;
use crate::storage::{CheckpointStorage, Created};

/// Where a generation's line continues from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum LineKind {
    /// Restored from checkpoint `id` of this storage: older generations' checkpoints up to `id` stay.
    Checkpoint,
    /// Restored from a snapshot outside this storage (a savepoint, another job's checkpoint): every
    /// older generation's checkpoint is abandoned.
    External,
    /// The job was cancelled and its checkpoints deleted: ids continue above `id`, nothing older is the
    /// job's any more.
    Cancelled,
}

impl LineKind {
    fn name(self) -> &'static str {
        match self {
            LineKind::Checkpoint => "checkpoint",
            LineKind::External => "external",
            LineKind::Cancelled => "cancelled",
        }
    }

    fn parse(name: &str) -> Option<Self> {
        [
            LineKind::Checkpoint,
            LineKind::External,
            LineKind::Cancelled,
        ]
        .into_iter()
        .find(|k| k.name() == name)
    }
}

/// One lineage record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct LineRecord {
    pub(crate) generation: u64,
    pub(crate) checkpoint_id: u64,
    pub(crate) kind: LineKind,
}

impl LineRecord {
    fn path(&self) -> String {
        format!(
            "{LINEAGE_DIR}/{:020}-{:020}-{}",
            self.generation,
            self.checkpoint_id,
            self.kind.name()
        )
    }

    fn parse(path: &str) -> Option<Self> {
        let name = path.strip_prefix(LINEAGE_DIR)?.strip_prefix('/')?;
        let mut parts = name.splitn(3, '-');
        let (g, id, kind) = (parts.next()?, parts.next()?, parts.next()?);
        let number = |s: &str| (s.len() == 20).then(|| s.parse::<u64>().ok()).flatten();
        Some(LineRecord {
            generation: number(g)?,
            checkpoint_id: number(id)?,
            kind: LineKind::parse(kind)?,
        })
    }

    /// Whether this record abandons a checkpoint of `generation` and `checkpoint_id`.
    fn abandons(&self, generation: u64, checkpoint_id: u64) -> bool {
        generation < self.generation
            && (self.kind != LineKind::Checkpoint || checkpoint_id > self.checkpoint_id)
    }
}

/// The lineage records of a job's storage.
#[derive(Debug, Clone, Default)]
pub(crate) struct Lineage {
    records: Vec<LineRecord>,
}

impl Lineage {
    /// Reads every record.
    ///
    /// # Errors
    /// Storage errors while listing.
    pub(crate) async fn load(storage: &CheckpointStorage) -> Result<Lineage> {
        let mut records: Vec<LineRecord> = storage
            .list_files(LINEAGE_DIR)
            .await?
            .iter()
            .filter_map(|f| LineRecord::parse(&f.path))
            .collect();
        records.sort_unstable();
        Ok(Lineage { records })
    }

    /// Writes `record` durably (create-if-absent) and adds it.
    ///
    /// # Errors
    /// Storage errors (the record may or may not exist; writing it again is safe).
    pub(crate) async fn record(
        &mut self,
        storage: &CheckpointStorage,
        record: LineRecord,
    ) -> Result<()> {
        let text = format!(
            "generation {} continues from {} {}\n",
            record.generation,
            record.kind.name(),
            record.checkpoint_id
        );
        // The name is the record: a second writer of the same name wrote the same fact.
        let _: Created = storage
            .put_if_absent(&record.path(), Bytes::from(text))
            .await?;
        if !self.records.contains(&record) {
            self.records.push(record);
            self.records.sort_unstable();
        }
        Ok(())
    }

    /// Deletes every record but `keep` (after a cancellation, whose record abandons everything older);
    /// best effort.
    pub(crate) async fn retire_all_but(&mut self, storage: &CheckpointStorage, keep: LineRecord) {
        let mut kept = Vec::new();
        for r in std::mem::take(&mut self.records) {
            if r == keep || storage.delete(&r.path()).await.is_err() {
                kept.push(r);
            }
        }
        self.records = kept;
    }

    /// Whether a checkpoint of `generation` and `checkpoint_id` is abandoned by some record.
    pub(crate) fn abandons(&self, generation: u64, checkpoint_id: u64) -> bool {
        self.records
            .iter()
            .any(|r| r.abandons(generation, checkpoint_id))
    }

    /// The highest id any record names: ids continue above it.
    pub(crate) fn id_floor(&self) -> u64 {
        self.records
            .iter()
            .map(|r| r.checkpoint_id)
            .max()
            .unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_name_themselves_and_abandon_older_generations_above_their_id() {
        let r = LineRecord {
            generation: 3,
            checkpoint_id: 5,
            kind: LineKind::Checkpoint,
        };
        assert_eq!(LineRecord::parse(&r.path()), Some(r));
        assert!(r.abandons(2, 6) && r.abandons(0, 9));
        assert!(!r.abandons(2, 5) && !r.abandons(3, 9) && !r.abandons(4, 9));
        let external = LineRecord {
            kind: LineKind::External,
            ..r
        };
        assert!(external.abandons(2, 1) && !external.abandons(3, 1));
        assert_eq!(LineRecord::parse("_lineage/3-5-checkpoint"), None);
    }
}
