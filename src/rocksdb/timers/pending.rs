//! Timer writes of one queue waiting for the DB, written as one sorted `WriteBatch`.

use rocksdb::{ColumnFamily, WriteBatch};

/// Writes waiting before a batch is full, at most.
const MAX_WRITES: usize = 64 << 10;

/// Bytes of rows waiting before a batch is full, at most (rows with large keys).
const MAX_BYTES: usize = 32 << 20;

/// Bytes a write adds to a `WriteBatch` besides its row, at most: the record's tag, the column family id
/// and the key and value lengths (varints; RocksDB's `WriteBatch` record layout).
const RECORD_OVERHEAD: usize = 1 + 5 + 5 + 1;

/// One waiting write: its row is `bytes[start..end]`.
struct Write {
    /// The row's first 16 bytes, big-endian, zero-padded: rows compare as their prefixes do unless the
    /// prefixes are equal (one integer comparison instead of a `memcmp` call for nearly every pair).
    prefix: u128,
    start: usize,
    end: usize,
    /// A put (registration), else a deletion.
    put: bool,
}

/// Registrations (puts) and deletions of timer rows in the order made, the rows in one buffer: no
/// allocation per write, where a boxed row per write cost a tenth of a registration.
#[derive(Default)]
pub(super) struct PendingWrites {
    bytes: Vec<u8>,
    writes: Vec<Write>,
}

impl PendingWrites {
    /// Whether no write waits.
    pub(super) fn is_empty(&self) -> bool {
        self.writes.is_empty()
    }

    /// Adds a put (`put`) or a deletion of `row`; whether the batch is now full ([`MAX_WRITES`] writes
    /// or [`MAX_BYTES`] bytes of rows).
    pub(super) fn push(&mut self, row: &[u8], put: bool) -> bool {
        let mut prefix = [0u8; 16];
        let n = row.len().min(16);
        prefix[..n].copy_from_slice(&row[..n]);
        let start = self.bytes.len();
        self.bytes.extend_from_slice(row);
        self.writes.push(Write {
            prefix: u128::from_be_bytes(prefix),
            start,
            end: self.bytes.len(),
            put,
        });
        self.writes.len() >= MAX_WRITES || self.bytes.len() >= MAX_BYTES
    }

    /// Adds every write to `batch` (column family `cf`) sorted by row, and forgets them. Sorted, the
    /// memtable takes them in key order (random inserts into its skip list dominated a profile).
    pub(super) fn drain_into(&mut self, cf: &ColumnFamily, batch: &mut WriteBatch) {
        self.drain(|row, put| {
            if put {
                batch.put_cf(cf, row, []);
            } else {
                batch.delete_cf(cf, row);
            }
        });
    }

    /// Passes every write to `write` (the row, whether a put) sorted by row, and forgets them. The sort is
    /// stable: writes of one row keep their order, so the last one wins as it did when made.
    fn drain(&mut self, mut write: impl FnMut(&[u8], bool)) {
        let bytes = &self.bytes;
        let row = |w: &Write| &bytes[w.start..w.end];
        self.writes
            .sort_by(|a, b| a.prefix.cmp(&b.prefix).then_with(|| row(a).cmp(row(b))));
        for w in &self.writes {
            write(row(w), w.put);
        }
        self.writes.clear();
        self.bytes.clear();
    }

    /// The bytes a `WriteBatch` of the waiting writes takes, at most (to size it once).
    pub(super) fn batch_bytes(&self) -> usize {
        self.bytes.len() + self.writes.len() * RECORD_OVERHEAD
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Rows sharing their 16-byte prefix, rows that are prefixes of others (zero-padded alike) and
    /// several writes of one row come out in byte order, the writes of one row in the order made.
    #[test]
    fn rows_sharing_a_prefix_sort_by_their_bytes_and_writes_of_a_row_keep_their_order() {
        let long = |tail: &[u8]| [&[7u8; 16][..], tail].concat();
        let made: Vec<(Vec<u8>, bool)> = vec![
            (long(&[2]), true),
            (vec![7, 7], true),
            (long(&[1, 9]), true),
            (vec![7, 7, 0], true),
            (long(&[2]), false),
            (long(&[]), true),
            (vec![7, 7], false),
            (long(&[1]), true),
            (long(&[2]), true),
        ];
        let mut pending = PendingWrites::default();
        for (row, put) in &made {
            assert!(!pending.push(row, *put));
        }
        let mut out = Vec::new();
        pending.drain(|row, put| out.push((row.to_vec(), put)));
        let mut expected = made.clone();
        expected.sort_by(|a, b| a.0.cmp(&b.0));
        assert_eq!(out, expected);
        assert!(pending.is_empty());
    }
}
