//! Timer writes of one queue waiting for the DB, written as one sorted `WriteBatch`.

use rocksdb::{ColumnFamily, WriteBatch};

/// Writes waiting before a batch is full, at most.
const MAX_WRITES: usize = 64 << 10;

/// Bytes of rows waiting before a batch is full, at most (rows with large keys).
const MAX_BYTES: usize = 32 << 20;

/// Registrations (puts) and deletions of timer rows in the order made, the rows in one buffer: no
/// allocation per write, where a boxed row per write cost a tenth of a registration.
#[derive(Default)]
pub(super) struct PendingWrites {
    bytes: Vec<u8>,
    /// Each write's row as a range of `bytes`, and whether it is a put (else a deletion).
    writes: Vec<(usize, usize, bool)>,
}

impl PendingWrites {
    /// Whether no write waits.
    pub(super) fn is_empty(&self) -> bool {
        self.writes.is_empty()
    }

    /// Adds a put (`put`) or a deletion of `row`; whether the batch is now full ([`MAX_WRITES`] writes
    /// or [`MAX_BYTES`] bytes of rows).
    pub(super) fn push(&mut self, row: &[u8], put: bool) -> bool {
        let start = self.bytes.len();
        self.bytes.extend_from_slice(row);
        self.writes.push((start, self.bytes.len(), put));
        self.writes.len() >= MAX_WRITES || self.bytes.len() >= MAX_BYTES
    }

    /// Adds every write to `batch` (column family `cf`) sorted by row, and forgets them. The sort is
    /// stable: writes of one row keep their order, so the last one wins as it did when made. Sorted, the
    /// memtable takes them in key order (random inserts into its skip list dominated a profile).
    pub(super) fn drain_into(&mut self, cf: &ColumnFamily, batch: &mut WriteBatch) {
        let bytes = &self.bytes;
        self.writes
            .sort_by(|a, b| bytes[a.0..a.1].cmp(&bytes[b.0..b.1]));
        for &(start, end, put) in &self.writes {
            let row = &bytes[start..end];
            if put {
                batch.put_cf(cf, row, []);
            } else {
                batch.delete_cf(cf, row);
            }
        }
        self.writes.clear();
        self.bytes.clear();
    }
}
